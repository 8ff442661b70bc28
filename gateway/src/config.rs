//! `[gateway]`: the connection tier's section of the configuration file.
//! The file as a whole is read by the binary that runs the tier (the
//! `server` crate); this section's check is here, beside what it configures.

use std::net::SocketAddr;

use runtime::config::{Invalid, positive, socket_addr};
use serde::{Deserialize, Serialize};

/// Most event-loop threads: a session's serial names its worker in 16 bits
/// (`protocol::link::SessionId`), and far fewer than that make sense.
pub const MAX_WORKERS: usize = 1024;

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
    /// New connections per second from one IP address (accept time; over:
    /// one RATE_LIMITED frame, then closed); 0, the default, no limit.
    /// Clients behind one NAT share it.
    pub connections_per_sec_per_ip: u32,
    /// ...with bursts up to this many.
    pub connection_burst_per_ip: u32,
    /// Failed logins per minute from one IP address; past it, logins from
    /// there are refused RATE_LIMITED, unverified, for the rest of the
    /// minute (logins already on their way to the logic tier when the
    /// budget runs out still count). 0: no limit.
    pub failed_logins_per_min_per_ip: u32,
    /// Connections accepted per wake of the listener before it hands them out.
    pub accept_batch: usize,
    /// On SIGTERM, how long to flush queued frames before closing regardless.
    pub shutdown_grace_secs: u64,
    /// `[gateway.tls]`: the native protocol inside TLS, on a port of its own.
    pub tls: TlsConfig,
    /// `[gateway.websocket]`: the protocol over WebSocket, for browsers.
    pub websocket: WebSocketConfig,
}

/// `[gateway.websocket]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Where WebSocket clients connect. Empty: no WebSocket listener.
    pub listen: String,
    /// The request path of the upgrade.
    pub path: String,
    /// wss: WebSocket inside TLS, with `[gateway.tls]`'s certificate.
    pub tls: bool,
    /// Origins a browser page may connect from (`https://chat.example.com`);
    /// empty: any. Clients that send no Origin (not browsers) are let in.
    pub origins: Vec<String>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            // On by default beside the TCP port: the web is where a newcomer
            // tries a chat server first (clients/web).
            listen: "0.0.0.0:7001".into(),
            path: "/im".into(),
            tls: false,
            origins: Vec::new(),
        }
    }
}

/// `[gateway.tls]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Where TLS clients connect. Empty: no TLS listener.
    pub listen: String,
    /// PEM certificate chain and private key. Both empty with a TLS
    /// listener: a self-signed pair is made in the data dir (for trying it
    /// out; its path and fingerprint are logged).
    pub cert: String,
    pub key: String,
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
            connections_per_sec_per_ip: 0,
            connection_burst_per_ip: 200,
            failed_logins_per_min_per_ip: 100,
            accept_batch: 256,
            shutdown_grace_secs: 5,
            tls: TlsConfig::default(),
            websocket: WebSocketConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// The per-address limits (`abuse.rs`).
    pub fn source_policy(&self) -> crate::abuse::SourcePolicy {
        crate::abuse::SourcePolicy {
            connections_per_sec: self.connections_per_sec_per_ip,
            connection_burst: self.connection_burst_per_ip,
            failed_logins_per_min: self.failed_logins_per_min_per_ip,
        }
    }

    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.connections_per_sec_per_ip > 0 && self.connection_burst_per_ip == 0 {
            return Err(Invalid::new(
                "gateway.connection_burst_per_ip",
                "must be at least 1 when gateway.connections_per_sec_per_ip is set",
            ));
        }
        if !self.listen.is_empty() {
            self.listen_addr()?;
        }
        if !self.tls.listen.is_empty() {
            socket_addr("gateway.tls.listen", &self.tls.listen)?;
        }
        if !self.websocket.listen.is_empty() {
            socket_addr("gateway.websocket.listen", &self.websocket.listen)?;
            if !self.websocket.path.starts_with('/') {
                return Err(Invalid::new("gateway.websocket.path", "must start with /"));
            }
        }
        if self.listen.is_empty() && self.tls.listen.is_empty() && self.websocket.listen.is_empty()
        {
            return Err(Invalid::new(
                "gateway.listen",
                "is empty and so are gateway.tls.listen and gateway.websocket.listen: clients need somewhere to connect",
            ));
        }
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            return Err(Invalid::new(
                "gateway.tls.key",
                "give both gateway.tls.cert and gateway.tls.key, or neither",
            ));
        }
        positive(&[
            ("gateway.max_connections", self.max_connections as u64),
            ("gateway.login_timeout_secs", self.login_timeout_secs),
            ("gateway.heartbeat_secs", self.heartbeat_secs as u64),
            (
                "gateway.inbound_frames_per_sec",
                self.inbound_frames_per_sec as u64,
            ),
            ("gateway.inbound_burst", self.inbound_burst as u64),
            ("gateway.accept_batch", self.accept_batch as u64),
        ])?;
        if self.workers > MAX_WORKERS {
            return Err(Invalid::new(
                "gateway.workers",
                format!("must be 0 (half the cores) to {MAX_WORKERS}"),
            ));
        }
        if !(64..=u32::MAX as usize).contains(&self.max_frame) {
            return Err(Invalid::new(
                "gateway.max_frame",
                "must be 64 to 4294967295 bytes",
            ));
        }
        if self.max_outbound_bytes < self.max_frame {
            return Err(Invalid::new(
                "gateway.max_outbound_bytes",
                "must hold at least one frame of max_frame bytes",
            ));
        }
        Ok(())
    }

    /// Whether a listener runs TLS (the TLS port, or wss), and so needs the
    /// certificate.
    pub fn needs_tls(&self) -> bool {
        !self.tls.listen.is_empty() || (!self.websocket.listen.is_empty() && self.websocket.tls)
    }

    /// The client address to listen on.
    pub fn listen_addr(&self) -> Result<SocketAddr, Invalid> {
        socket_addr("gateway.listen", &self.listen)
    }

    /// Worker threads to run: the configured number, or half the cores (on
    /// two cores one worker delivers more than two: docs/benchmarks.md).
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        GatewayConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let refused = |tweak: fn(&mut GatewayConfig)| {
            let mut config = GatewayConfig::default();
            tweak(&mut config);
            config.validate().unwrap_err().field
        };
        assert_eq!(refused(|c| c.listen = "localhost".into()), "gateway.listen");
        assert_eq!(
            refused(|c| c.max_outbound_bytes = 10),
            "gateway.max_outbound_bytes"
        );
        assert_eq!(refused(|c| c.max_frame = 10), "gateway.max_frame");
        assert_eq!(refused(|c| c.heartbeat_secs = 0), "gateway.heartbeat_secs");
    }
}
