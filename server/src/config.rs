//! The configuration file: one TOML file for every role, every field with a
//! default, every section checked by the tier it configures.
//!
//! Precedence, lowest to highest: built-in defaults, the file given with
//! `--config`, environment variables (`IM_AUTH_SECRET`, `IM_REDIS_URL`),
//! command-line flags (`--listen`, `--data-dir`). `--print-config` prints
//! the result; `--check-config` runs [`Config::validate`], which refuses
//! every value start-up would refuse (what only a running database can say,
//! such as whether it is up, is found at start). `config/im.example.toml`
//! documents every field.

use std::path::Path;

use gateway::GatewayConfig;
use logic::config::{AuthConfig, LogicConfig, RedisConfig, StorageConfig};
use runtime::config::{Invalid, socket_addr};
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub admin: AdminConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub logic: LogicConfig,
    pub redis: RedisConfig,
}

/// `[admin]`: the HTTP port for `/metrics` and `/healthz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Loopback by default; empty turns the admin port off.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9100".into(),
        }
    }
}

impl AdminConfig {
    /// The address to serve on, `None` when the port is off.
    pub fn addr(&self) -> Result<Option<std::net::SocketAddr>, Invalid> {
        match self.listen.as_str() {
            "" => Ok(None),
            addr => socket_addr("admin.listen", addr).map(Some),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

impl Config {
    /// Reads `path` (defaults for anything it leaves out), then applies the
    /// environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Config::parse(&text).map_err(|source| ConfigError::Parse {
                    path: path.display().to_string(),
                    source,
                })?
            }
        };
        config.auth.apply_env();
        config.redis.apply_env();
        Ok(config)
    }

    /// The file's text as a configuration (not yet validated).
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Every section's check, then what spans sections.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.gateway.validate()?;
        self.admin.addr()?;
        self.auth.validate()?;
        self.storage.validate()?;
        self.logic.validate()?;
        self.redis.validate()?;
        // A message, with its envelope, must fit in one frame.
        if self.logic.max_content_bytes + 1024 > self.gateway.max_frame {
            return Err(Invalid::new(
                "logic.max_content_bytes",
                "must be at least 1024 bytes below gateway.max_frame",
            ));
        }
        Ok(())
    }

    /// The configuration as `--print-config` shows it: the secret hidden.
    pub fn printable(&self) -> Result<String, toml::ser::Error> {
        let mut shown = self.clone();
        if !shown.auth.secret.is_empty() {
            shown.auth.secret = "<set, not shown>".into();
        }
        toml::to_string(&shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn a_partial_file_keeps_defaults_for_the_rest() {
        let config = Config::parse("[gateway]\nheartbeat_secs = 5\n").unwrap();
        assert_eq!(config.gateway.heartbeat_secs, 5);
        assert_eq!(config.gateway.max_frame, 65_536);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(Config::parse("[gateway]\nlisten_port = 1\n").is_err());
        let mut config = Config::default();
        config.gateway.listen = "localhost".into();
        assert_eq!(config.validate().unwrap_err().field, "gateway.listen");
        let mut config = Config::default();
        config.gateway.max_outbound_bytes = 10;
        assert!(config.validate().is_err());
    }
}
