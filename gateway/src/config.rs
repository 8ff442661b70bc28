//! Configuration: one TOML file, every field with a default.
//!
//! Precedence, lowest to highest: built-in defaults, the file given with
//! `--config`, environment variables (`IM_AUTH_SECRET`, `IM_REDIS_URL`), command-line flags
//! (`--listen`, `--data-dir`). `im-gateway --print-config` prints the result.
//! `config/im.example.toml` documents every field.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The whole file: the gateway's sections and the logic tier's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub admin: AdminConfig,
    pub auth: logic::config::AuthConfig,
    pub storage: logic::config::StorageConfig,
    pub logic: logic::config::LogicConfig,
    pub redis: logic::config::RedisConfig,
}

/// `[gateway]`: the connection tier.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address clients connect to.
    pub listen: String,
    /// Pending-connection queue of the listening socket (capped by the
    /// kernel's net.core.somaxconn). A reconnect storm needs it deep.
    pub listen_backlog: u32,
    /// Event-loop threads; 0 means half the cores (at least one): the
    /// logic pipeline and the storage writer need the other half.
    pub workers: usize,
    /// Connections beyond this are refused with UNAVAILABLE.
    pub max_connections: usize,
    /// Largest frame body in either direction, in bytes.
    pub max_frame: usize,
    /// A connection must log in within this many seconds.
    pub login_timeout_secs: u64,
    /// Told to clients at login; a client silent for twice this is closed.
    pub heartbeat_secs: u32,
    /// A session whose unsent outbound bytes exceed this is closed as a slow
    /// consumer (its messages wait for sync).
    pub max_outbound_bytes: usize,
    /// Inbound frames per second a connection may send (PushAck exempt)...
    pub inbound_frames_per_sec: u32,
    /// ...with bursts up to this many. Beyond: RATE_LIMITED; twice beyond: closed.
    pub inbound_burst: u32,
    /// Connections accepted per wake of the listener before it hands them out.
    pub accept_batch: usize,
    /// On SIGTERM, how long to flush queued frames before closing regardless.
    pub shutdown_grace_secs: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "0.0.0.0:7000".into(),
            listen_backlog: 4096,
            workers: 0,
            max_connections: 1_000_000,
            max_frame: protocol::DEFAULT_MAX_FRAME,
            login_timeout_secs: 10,
            heartbeat_secs: 30,
            max_outbound_bytes: 512 * 1024,
            inbound_frames_per_sec: 1000,
            inbound_burst: 2000,
            accept_batch: 256,
            shutdown_grace_secs: 5,
        }
    }
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
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
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
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.display().to_string(),
                    source,
                })?
            }
        };
        config.auth.apply_env();
        config.redis.apply_env();
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.gateway.validate()?;
        if !self.admin.listen.is_empty() {
            parse_addr("admin.listen", &self.admin.listen)?;
        }
        self.logic
            .validate()
            .map_err(|(field, reason)| ConfigError::Invalid { field, reason })?;
        self.redis
            .validate()
            .map_err(|(field, reason)| ConfigError::Invalid { field, reason })?;
        // A message, with its envelope, must fit in one frame.
        if self.logic.max_content_bytes + 1024 > self.gateway.max_frame {
            return Err(invalid(
                "logic.max_content_bytes",
                "must be at least 1024 bytes below gateway.max_frame",
            ));
        }
        Ok(())
    }
}

impl GatewayConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_addr("gateway.listen", &self.listen)?;
        let positive = [
            ("gateway.max_connections", self.max_connections as u64),
            ("gateway.login_timeout_secs", self.login_timeout_secs),
            ("gateway.heartbeat_secs", self.heartbeat_secs as u64),
            (
                "gateway.inbound_frames_per_sec",
                self.inbound_frames_per_sec as u64,
            ),
            ("gateway.inbound_burst", self.inbound_burst as u64),
            ("gateway.accept_batch", self.accept_batch as u64),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if !(64..=u32::MAX as usize).contains(&self.max_frame) {
            return Err(invalid(
                "gateway.max_frame",
                "must be 64 to 4294967295 bytes",
            ));
        }
        if self.max_outbound_bytes < self.max_frame {
            return Err(invalid(
                "gateway.max_outbound_bytes",
                "must hold at least one frame of max_frame bytes",
            ));
        }
        Ok(())
    }

    /// Worker threads to run: the configured number, or half the cores.
    /// On 2 cores, 1 worker delivered 95,700 and 99,500 msg/s where 2
    /// delivered 79,600 and 92,900 (docs/benchmarks.md).
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        }
    }
}

fn invalid(field: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

pub fn parse_addr(field: &'static str, addr: &str) -> Result<SocketAddr, ConfigError> {
    addr.parse().map_err(|e| ConfigError::Invalid {
        field,
        reason: format!("{addr:?} is not an ip:port address ({e})"),
    })
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
        let config: Config = toml::from_str("[gateway]\nheartbeat_secs = 5\n").unwrap();
        assert_eq!(config.gateway.heartbeat_secs, 5);
        assert_eq!(config.gateway.max_frame, 65_536);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("[gateway]\nlisten_port = 1\n").is_err());
        let mut config = Config::default();
        config.gateway.listen = "localhost".into();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid {
                field: "gateway.listen",
                ..
            })
        ));
        let mut config = Config::default();
        config.gateway.max_outbound_bytes = 10;
        assert!(config.validate().is_err());
    }
}
