//! The logic tier's sections of the configuration file: `[auth]`,
//! `[storage]` and `[logic]`. The file as a whole is read by the binary
//! (see the gateway crate's `config.rs`).

use serde::{Deserialize, Serialize};

/// `[auth]`: login tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The HMAC secret tokens are signed with. Empty: the environment
    /// variable `IM_AUTH_SECRET`, else a random secret generated once into
    /// `<data_dir>/auth.secret`. There is no setting that accepts unsigned logins.
    pub secret: String,
    /// Lifetime of tokens minted by `im-gateway token` unless `--ttl` says otherwise.
    pub token_ttl_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secret: String::new(),
            token_ttl_secs: 7 * 24 * 3600,
        }
    }
}

/// The environment variable that overrides `auth.secret`.
pub const SECRET_ENV: &str = "IM_AUTH_SECRET";

impl AuthConfig {
    /// `IM_AUTH_SECRET`, when set and not empty, wins over the file.
    pub fn apply_env(&mut self) {
        if let Ok(secret) = std::env::var(SECRET_ENV) {
            if !secret.is_empty() {
                self.secret = secret;
            }
        }
    }
}

/// `[storage]`: where messages live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// "sqlite" (embedded, the default) or "mysql".
    pub backend: String,
    /// Where the embedded store and the generated secret live.
    pub data_dir: String,
    /// One URL per MySQL shard, in shard order (backend = "mysql").
    pub mysql_urls: Vec<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: "sqlite".into(),
            data_dir: "data".into(),
            mysql_urls: Vec::new(),
        }
    }
}

/// `[logic]`: the messaging pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogicConfig {
    /// Upcalls that may wait for the logic tier before gateways answer
    /// UNAVAILABLE.
    pub queue_capacity: usize,
}

impl Default for LogicConfig {
    fn default() -> Self {
        LogicConfig {
            queue_capacity: 65_536,
        }
    }
}

impl LogicConfig {
    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.queue_capacity == 0 {
            return Err(("logic.queue_capacity", "must be at least 1".into()));
        }
        Ok(())
    }
}
