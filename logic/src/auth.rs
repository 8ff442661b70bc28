//! Login verification: the HMAC token of `protocol::token`, checked against
//! the deployment's secret.
//!
//! The secret comes from `auth.secret`, else `IM_AUTH_SECRET`, else a file
//! `<data_dir>/auth.secret` generated with 32 random bytes on first start
//! (mode 0600, its path logged), so a newcomer's quickstart is signed too.
//! `im-server token` reads the same secret to mint tokens.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use protocol::token::{self, TokenError};
use runtime::clock::unix_secs;

use crate::config::AuthConfig;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read or create the secret file {path}: {source}")]
    SecretFile { path: PathBuf, source: io::Error },
    #[error("the secret file {0} is empty")]
    EmptySecretFile(PathBuf),
    #[error("cannot generate a random secret: {0}")]
    Random(String),
}

/// Verifies tokens with the secret (and, during a rollover, the previous
/// one); mints with the secret.
#[derive(Clone)]
pub struct Authenticator {
    secret: Vec<u8>,
    previous: Option<Vec<u8>>,
}

impl Authenticator {
    pub fn new(secret: impl Into<Vec<u8>>) -> Authenticator {
        Authenticator {
            secret: secret.into(),
            previous: None,
        }
    }

    /// Also accepts tokens signed with `previous` (a secret being rotated out).
    pub fn with_previous(mut self, previous: impl Into<Vec<u8>>) -> Authenticator {
        self.previous = Some(previous.into());
        self
    }

    /// The configured secret, or the data dir's secret file (created if
    /// absent); with `auth.previous_secret` if set.
    pub fn from_config(config: &AuthConfig, data_dir: &Path) -> Result<Authenticator, AuthError> {
        let current = Self::current(config, data_dir)?;
        Ok(match config.previous_secret.as_str() {
            "" => current,
            previous => current.with_previous(previous.as_bytes()),
        })
    }

    fn current(config: &AuthConfig, data_dir: &Path) -> Result<Authenticator, AuthError> {
        if !config.secret.is_empty() {
            return Ok(Authenticator::new(config.secret.as_bytes()));
        }
        let secret = secret_file(&data_dir.join("auth.secret"), "auth secret")?;
        Ok(Authenticator::new(secret.into_bytes()))
    }

    pub fn verify(&self, token: &str, uid: u64, now_unix_secs: u64) -> Result<(), TokenError> {
        let result = token::verify(&self.secret, token, uid, now_unix_secs);
        match (&result, &self.previous) {
            (Err(TokenError::BadSignature), Some(previous)) => {
                token::verify(previous, token, uid, now_unix_secs)
            }
            _ => result,
        }
    }

    pub fn mint(&self, uid: u64, ttl_secs: u64) -> String {
        self.mint_until(uid, unix_secs() + ttl_secs)
    }

    /// A token for `uid` that expires at `expires_unix_secs`.
    pub fn mint_until(&self, uid: u64, expires_unix_secs: u64) -> String {
        token::mint(&self.secret, uid, expires_unix_secs)
    }
}

/// The secret in `path`, or a new one (32 random bytes, in hex) written
/// there readable by its owner only, logged as a new `what`. Also the
/// business API's generated key (`api` crate).
pub fn secret_file(path: &Path, what: &str) -> Result<String, AuthError> {
    let file_error = |source| AuthError::SecretFile {
        path: path.to_owned(),
        source,
    };
    runtime::config::warn_if_exposed(path, what);
    match fs::read_to_string(path) {
        Ok(secret) => match secret.trim() {
            "" => Err(AuthError::EmptySecretFile(path.to_owned())),
            secret => Ok(secret.to_owned()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw).map_err(|e| AuthError::Random(e.to_string()))?;
            let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(file_error)?;
            }
            write_private(path, &secret).map_err(file_error)?;
            log::info!("generated a new {what} in {}", path.display());
            Ok(secret)
        }
        Err(e) => Err(file_error(e)),
    }
}

/// Creates `path` readable by its owner only.
fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_is_kept_and_reused() {
        let dir = std::env::temp_dir().join(format!("im-auth-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = Authenticator::from_config(&AuthConfig::default(), &dir).unwrap();
        let token = first.mint(7, 60);
        let second = Authenticator::from_config(&AuthConfig::default(), &dir).unwrap();
        assert_eq!(second.verify(&token, 7, unix_secs()), Ok(()));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn configured_secret_wins() {
        let config = AuthConfig {
            secret: "s3cret".into(),
            ..AuthConfig::default()
        };
        let auth = Authenticator::from_config(&config, Path::new("/nonexistent")).unwrap();
        let token = protocol::token::mint(b"s3cret", 1, unix_secs() + 10);
        assert_eq!(auth.verify(&token, 1, unix_secs()), Ok(()));
    }

    #[test]
    fn during_a_rollover_both_secrets_verify_and_the_new_one_mints() {
        let config = AuthConfig {
            secret: "new-secret".into(),
            previous_secret: "old-secret".into(),
            ..AuthConfig::default()
        };
        let auth = Authenticator::from_config(&config, Path::new("/nonexistent")).unwrap();
        let now = unix_secs();
        let old = protocol::token::mint(b"old-secret", 1, now + 10);
        assert_eq!(auth.verify(&old, 1, now), Ok(()));
        let minted = auth.mint(1, 10);
        assert_eq!(
            protocol::token::verify(b"new-secret", &minted, 1, now),
            Ok(())
        );
        let forged = protocol::token::mint(b"other", 1, now + 10);
        assert_eq!(auth.verify(&forged, 1, now), Err(TokenError::BadSignature));
        // After the rollover the old secret is gone.
        let after = Authenticator::new("new-secret");
        assert_eq!(after.verify(&old, 1, now), Err(TokenError::BadSignature));
    }
}
