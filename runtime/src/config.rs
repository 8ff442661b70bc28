//! The error a configuration section's check returns. Each tier validates
//! its own sections; the binary that reads the whole file wraps this in its
//! own error, so every refusal names the field the operator must fix.

/// A value the server would refuse to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct Invalid {
    /// `section.field`, as written in the TOML file.
    pub field: &'static str,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Invalid {
        Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// A secret the environment gives: `var`, when set and not empty, wins
/// over the file's `value`.
pub fn secret_from_env(var: &str, value: &mut String) {
    if let Ok(secret) = std::env::var(var) {
        if !secret.is_empty() {
            *value = secret;
        }
    }
}

/// Refuses the first of `fields` that is zero.
pub fn positive(fields: &[(&'static str, u64)]) -> Result<(), Invalid> {
    match fields.iter().find(|(_, value)| *value == 0) {
        Some((field, _)) => Err(Invalid::new(field, "must be at least 1")),
        None => Ok(()),
    }
}

/// Parses an `ip:port` address.
pub fn socket_addr(field: &'static str, addr: &str) -> Result<std::net::SocketAddr, Invalid> {
    addr.parse()
        .map_err(|e| Invalid::new(field, format!("{addr:?} is not an ip:port address ({e})")))
}

/// Warns (in the log) when a file holding a secret can be read by anyone
/// but its owner; returns the warning. Checked at start for the auth
/// secret, the API keys and the TLS private key.
pub fn warn_if_exposed(path: &std::path::Path, what: &str) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            let warning = format!(
                "{what} {} is readable by others (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            );
            log::warn!("{warning}");
            return Some(warning);
        }
    }
    None
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_secret_readable_by_others_is_warned_about() {
        let path = std::env::temp_dir().join(format!("im-secret-mode-{}", std::process::id()));
        std::fs::write(&path, "s").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = warn_if_exposed(&path, "the auth secret").expect("a warning");
        assert!(warning.contains("mode 644"), "{warning}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(warn_if_exposed(&path, "the auth secret"), None);
        let _ = std::fs::remove_file(&path);
    }
}
