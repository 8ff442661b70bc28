//! The configuration file: one TOML file for every role, every field with a
//! default, every section checked by the tier it configures.
//!
//! Precedence, lowest to highest: built-in defaults, the file given with
//! `--config`, environment variables (`IM_AUTH_SECRET`, `IM_REDIS_URL`,
//! `IM_LINK_SECRET`, `IM_API_KEYS`),
//! command-line flags (`--listen`, `--data-dir`). `--print-config` prints
//! the result; `--check-config` runs [`Config::validate`], which refuses
//! every value start-up would refuse (what only a running database can say,
//! such as whether it is up, is found at start). `config/im.example.toml`
//! documents every field.

use std::path::Path;

use api::ApiConfig;
use api::queue::QueueConfig;
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
    pub api: ApiConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub logic: LogicConfig,
    pub redis: RedisConfig,
    pub link: LinkConfig,
    pub queue: QueueConfig,
}

/// `[link]`: gateways and the logic tier as separate processes
/// (`im-gateway`, `im-logic serve`); the all-in-one `im-server` ignores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkConfig {
    /// `im-logic serve`: where gateways connect.
    pub listen: String,
    /// `im-gateway`: the logic tier's link addresses, tried in turn.
    pub logic: Vec<String>,
    /// The secret both ends prove they hold (HMAC challenge in the
    /// handshake). Empty: the environment variable `IM_LINK_SECRET`. Both
    /// split roles refuse to start without one.
    pub secret: String,
    /// Each end sends a heartbeat after this long with nothing to send...
    pub heartbeat_secs: u64,
    /// ...and declares the other dead after this long without a frame.
    pub dead_after_secs: u64,
    /// Calls waiting for the link, each way. A gateway's full queue answers
    /// clients UNAVAILABLE; a logic node's full queue to a gateway drops
    /// that gateway's link (its clients reconnect and sync).
    pub queue_capacity: usize,
    /// A gateway reconnects after 100 ms, doubling up to this, jittered.
    pub reconnect_max_ms: u64,
    /// How long a gateway keeps its logged-in sessions open while it has no
    /// link: a link back within this (to the same logic node or a standby
    /// that took over) registers them again and they never notice but for
    /// a SyncHint; after it they are kicked and log in again. 0: kicked at
    /// once.
    pub keep_sessions_secs: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            listen: "127.0.0.1:7100".into(),
            logic: Vec::new(),
            secret: String::new(),
            heartbeat_secs: 1,
            dead_after_secs: 5,
            queue_capacity: 65_536,
            reconnect_max_ms: 2_000,
            keep_sessions_secs: 30,
        }
    }
}

/// The environment variable that overrides `link.secret`.
pub const LINK_SECRET_ENV: &str = "IM_LINK_SECRET";

impl LinkConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if !self.listen.is_empty() {
            socket_addr("link.listen", &self.listen)?;
        }
        self.logic_addrs()?;
        runtime::config::positive(&[
            ("link.heartbeat_secs", self.heartbeat_secs),
            ("link.queue_capacity", self.queue_capacity as u64),
            ("link.reconnect_max_ms", self.reconnect_max_ms),
        ])?;
        if self.dead_after_secs <= self.heartbeat_secs {
            return Err(Invalid::new(
                "link.dead_after_secs",
                "must be longer than link.heartbeat_secs",
            ));
        }
        Ok(())
    }

    pub fn logic_addrs(&self) -> Result<Vec<std::net::SocketAddr>, Invalid> {
        self.logic
            .iter()
            .map(|addr| socket_addr("link.logic", addr))
            .collect()
    }

    /// The secret, which a split role must have.
    pub fn required_secret(&self) -> Result<&[u8], Invalid> {
        match self.secret.as_bytes() {
            [] => Err(Invalid::new(
                "link.secret",
                format!(
                    "is empty: give the gateways and the logic tier one secret (or {LINK_SECRET_ENV})"
                ),
            )),
            secret => Ok(secret),
        }
    }

    fn apply_env(&mut self) {
        runtime::config::secret_from_env(LINK_SECRET_ENV, &mut self.secret);
    }
}

/// `[admin]`: the HTTP port for `/metrics`, `/healthz` and `/readyz`.
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
        config.link.apply_env();
        config.api.apply_env();
        config.logic.webhook.apply_env();
        config.queue.apply_env();
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
        self.api.validate()?;
        self.auth.validate()?;
        self.storage.validate()?;
        self.logic.validate()?;
        self.redis.validate()?;
        self.link.validate()?;
        self.queue.validate()?;
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
        let keys = shown.api.keys.iter_mut();
        for secret in [
            &mut shown.auth.secret,
            &mut shown.auth.previous_secret,
            &mut shown.link.secret,
        ]
        .into_iter()
        .chain(keys)
        {
            if !secret.is_empty() {
                *secret = match secret.split_once(':') {
                    Some((name, _)) => format!("{name}:<set, not shown>"),
                    None => "<set, not shown>".into(),
                };
            }
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
    fn printing_hides_every_secret_and_keeps_key_names() {
        let mut config = Config::default();
        config.auth.secret = "auth-secret-value".into();
        config.auth.previous_secret = "old-secret-value".into();
        config.link.secret = "link-secret-value".into();
        config.api.keys = vec![
            "billing:api-secret-value-1".into(),
            "bare-secret-value-2".into(),
        ];
        let shown = config.printable().unwrap();
        assert!(!shown.contains("secret-value"), "{shown}");
        assert!(shown.contains("billing:<set, not shown>"), "{shown}");
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
