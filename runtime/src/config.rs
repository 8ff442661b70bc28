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
