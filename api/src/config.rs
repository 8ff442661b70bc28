//! `[api]`: the business HTTP API's section of the configuration file.

use std::net::SocketAddr;

use runtime::config::{Invalid, positive, socket_addr};
use serde::{Deserialize, Serialize};

/// The environment variable that adds API keys (comma-separated, each
/// `name:secret` or a bare secret).
pub const KEYS_ENV: &str = "IM_API_KEYS";

/// `[api]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Where business backends connect. Loopback by default; empty turns
    /// the API off.
    pub listen: String,
    /// API keys, each `name:secret` (the name labels metrics and logs) or a
    /// bare secret (named by its position). `IM_API_KEYS` and `keys_file`
    /// add to these. With no key at all every request is refused (401).
    pub keys: Vec<String>,
    /// A file of keys, one per line (`#` starts a comment). Empty: none.
    pub keys_file: String,
    /// The account system messages come from when a send names no sender;
    /// 0: every send must name its sender.
    pub system_uid: u64,
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Requests per second each key may make (a batch send counts one per
    /// recipient)...
    pub requests_per_sec: u32,
    /// ...with bursts up to this many. Beyond: 429.
    pub burst: u32,
    /// A request the logic tier has not answered in this long gets 503.
    pub timeout_ms: u64,
    /// Threads of the HTTP runtime (the API and the admin port share it):
    /// 1, the default, runs everything on one thread; more, a work-stealing
    /// pool of that many.
    pub threads: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:9200".into(),
            keys: Vec::new(),
            keys_file: String::new(),
            system_uid: 0,
            max_body_bytes: 1 << 20,
            requests_per_sec: 2_000,
            burst: 4_000,
            timeout_ms: 10_000,
            threads: 1,
        }
    }
}

impl ApiConfig {
    /// Every check, the keys included (`--check-config`).
    pub fn validate(&self) -> Result<(), Invalid> {
        self.check_settings()?;
        crate::keys::ApiKeys::load(self)?;
        Ok(())
    }

    /// The checks of everything but the keys (which loading them checks).
    pub fn check_settings(&self) -> Result<(), Invalid> {
        self.addr()?;
        positive(&[
            ("api.max_body_bytes", self.max_body_bytes as u64),
            ("api.requests_per_sec", u64::from(self.requests_per_sec)),
            ("api.burst", u64::from(self.burst)),
            ("api.timeout_ms", self.timeout_ms),
            ("api.threads", self.threads as u64),
        ])
    }

    /// The address to serve on, `None` when the API is off.
    pub fn addr(&self) -> Result<Option<SocketAddr>, Invalid> {
        match self.listen.as_str() {
            "" => Ok(None),
            addr => socket_addr("api.listen", addr).map(Some),
        }
    }

    /// `IM_API_KEYS` adds to the file's keys.
    pub fn apply_env(&mut self) {
        if let Ok(keys) = std::env::var(KEYS_ENV) {
            self.keys.extend(
                keys.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned),
            );
        }
    }
}
