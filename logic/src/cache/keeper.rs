//! The keeper thread: the presence directory in Redis, and bringing Redis
//! back into use after the breaker opened.
//!
//! **Presence.** `<prefix>online:{uid}` is a hash of the user's online
//! devices, field `device_id`, value a JSON [`PresenceEntry`]: which node
//! and gateway address holds the device's connection, since when, and
//! until when the entry holds. The pipeline tells the keeper about every
//! login and close (it never waits on Redis itself); the keeper writes the
//! entry and sets the key's expiry, and rewrites all of its node's entries
//! every third of `presence_ttl_secs`. A node that dies stops refreshing,
//! so its entries expire on their own: readers ignore entries past
//! `expires_ms`, and the key itself expires when nobody refreshes it.
//! A clean shutdown removes the node's entries at once.
//!
//! **Recovery.** While the breaker is open the keeper probes Redis every
//! `breaker_open_ms`. When a probe answers, it deletes every cache entry
//! under the key prefix (presence excepted, which it rewrites), because
//! updates were skipped while Redis was out of use, and only then closes
//! the breaker. The same happens at start.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redis::{Connection, RedisResult};
use serde::{Deserialize, Serialize};

use crate::cache::link::{RedisLink, Shared};
use crate::cache::online_key;
use crate::metrics::Gauge;
use crate::presence::{Device, GatewayAddrs};
use runtime::clock::unix_secs;

/// What the pipeline tells the keeper.
#[derive(Debug, Clone)]
pub enum PresenceEvent {
    Online { uid: u64, device: Device },
    Offline { uid: u64, device_id: String },
}

/// One device's entry in `<prefix>online:{uid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// The logic node (`logic.node_id`) that holds the session.
    pub node: u64,
    /// The client address of the gateway the device is connected to.
    pub gateway: String,
    /// When that gateway started (Unix ms). A restarted gateway is a new
    /// one (new id, new epoch): its devices' entries replace the old ones,
    /// and the old run's entries were removed when its link ended.
    #[serde(default)]
    pub gateway_epoch_ms: u64,
    /// The session: gateway id (hex).worker.slot.serial. A restarted
    /// gateway has a new id, and its devices' entries replace the old ones.
    pub session: String,
    pub platform: i32,
    pub login_ms: u64,
    /// The entry is stale after this (its node stopped refreshing it).
    pub expires_ms: u64,
}

pub struct Keeper {
    link: RedisLink,
    node_id: u64,
    gateways: Arc<GatewayAddrs>,
    /// This node's online devices, to refresh their entries.
    devices: HashMap<u64, HashMap<String, Device>>,
    last_probe: Instant,
    last_refresh: Instant,
}

/// Starts the keeper. Its first probe runs before this returns, so a
/// reachable Redis is in use from the first request.
pub fn start(
    shared: Arc<Shared>,
    node_id: u64,
    gateways: Arc<GatewayAddrs>,
) -> std::io::Result<(Sender<PresenceEvent>, JoinHandle<()>)> {
    let (events_tx, events) = crossbeam_channel::unbounded();
    let mut keeper = Keeper {
        link: RedisLink::new(shared),
        node_id,
        gateways,
        devices: HashMap::new(),
        last_probe: Instant::now(),
        last_refresh: Instant::now(),
    };
    keeper.probe();
    let thread = thread::Builder::new()
        .name("im-redis-keeper".into())
        .spawn(move || keeper.run(events))?;
    Ok((events_tx, thread))
}

impl Keeper {
    fn config(&self) -> &crate::config::RedisConfig {
        &self.link.shared().config
    }

    fn run(&mut self, events: Receiver<PresenceEvent>) {
        let tick = Duration::from_millis(100);
        loop {
            match events.recv_timeout(tick) {
                Ok(event) => self.on_event(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let closed = self.link.shared().breaker.is_closed();
            let open_for = Duration::from_millis(self.config().breaker_open_ms);
            let refresh_every = Duration::from_secs(self.config().presence_ttl_secs) / 3;
            if !closed && self.last_probe.elapsed() >= open_for {
                self.probe();
            } else if closed && self.last_refresh.elapsed() >= refresh_every {
                self.refresh_all();
            }
        }
        self.remove_all();
        log::debug!("redis keeper stopped");
    }

    fn on_event(&mut self, event: PresenceEvent) {
        match event {
            PresenceEvent::Online { uid, device } => {
                let devices = self.devices.entry(uid).or_default();
                devices.insert(device.device_id.clone(), device);
                self.write(&[uid]);
            }
            PresenceEvent::Offline { uid, device_id } => {
                if let Some(devices) = self.devices.get_mut(&uid) {
                    devices.remove(&device_id);
                    if devices.is_empty() {
                        self.devices.remove(&uid);
                    }
                }
                let key = online_key(&self.config().key_prefix, uid);
                self.link.call(|c| {
                    redis::cmd("HDEL")
                        .arg(&key)
                        .arg(&device_id)
                        .query::<()>(c.conn)
                });
            }
        }
    }

    /// Writes the entries of these users' devices on this node, with fresh expiry.
    fn write(&mut self, uids: &[u64]) {
        let ttl_secs = self.config().presence_ttl_secs;
        let expires_ms = (unix_secs() + ttl_secs) * 1000;
        let prefix = self.config().key_prefix.clone();
        let mut pipe = redis::pipe();
        let mut written = 0;
        for uid in uids {
            let Some(devices) = self.devices.get(uid) else {
                continue;
            };
            written += 1;
            let key = online_key(&prefix, *uid);
            let hset = pipe.cmd("HSET").arg(&key);
            for device in devices.values() {
                let gateway = self.gateways.get(device.session.gateway);
                let entry = PresenceEntry {
                    node: self.node_id,
                    gateway: gateway.client_addr,
                    gateway_epoch_ms: gateway.epoch_ms,
                    session: device.session.to_string(),
                    platform: device.platform,
                    login_ms: device.login_ms,
                    expires_ms,
                };
                let json = serde_json::to_string(&entry).unwrap_or_default();
                hset.arg(&device.device_id).arg(json);
            }
            hset.ignore();
            pipe.expire(&key, ttl_secs as i64).ignore();
        }
        if written > 0 {
            self.link.call(|c| pipe.query::<()>(c.conn));
        }
    }

    /// Rewrites every entry of this node, a thousand users per round trip.
    fn refresh_all(&mut self) {
        self.last_refresh = Instant::now();
        let uids: Vec<u64> = self.devices.keys().copied().collect();
        for chunk in uids.chunks(1000) {
            self.write(chunk);
        }
    }

    /// A clean stop: this node's devices are offline now, not at expiry.
    fn remove_all(&mut self) {
        let prefix = self.config().key_prefix.clone();
        let devices = std::mem::take(&mut self.devices);
        if devices.is_empty() {
            // Nothing to remove: an empty pipeline is an error to Redis,
            // which would be logged as a Redis failure at every clean stop.
            return;
        }
        let mut pipe = redis::pipe();
        for (uid, devices) in &devices {
            let hdel = pipe.cmd("HDEL").arg(online_key(&prefix, *uid));
            for device_id in devices.keys() {
                hdel.arg(device_id);
            }
            hdel.ignore();
        }
        self.link.call(|c| pipe.query::<()>(c.conn));
    }

    /// Tries Redis; if it answers, flushes the caches and closes the breaker.
    fn probe(&mut self) {
        self.last_probe = Instant::now();
        let prefix = self.config().key_prefix.clone();
        let result = self.link.call_anyway(|c| {
            redis::cmd("PING").query::<()>(c.conn)?;
            flush_caches(c.conn, &prefix)
        });
        let shared = self.link.shared();
        match result {
            Ok(flushed) => {
                shared.breaker.close();
                shared.metrics.set(Gauge::RedisUp, 1);
                log::info!(
                    "redis in use at {}: {flushed} cache entries flushed, they rebuild from storage",
                    shared.config.url
                );
                self.refresh_all();
            }
            Err(e) => log::debug!("redis still unavailable: {e}"),
        }
    }
}

/// Deletes every cache entry under `prefix` (not the presence entries).
/// Returns how many.
pub fn flush_caches(conn: &mut Connection, prefix: &str) -> RedisResult<usize> {
    let pattern = format!("{}*", glob_escape(prefix));
    let presence = format!("{prefix}online:");
    let mut cursor: u64 = 0;
    let mut flushed = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)?;
        let doomed: Vec<&String> = keys.iter().filter(|k| !k.starts_with(&presence)).collect();
        if !doomed.is_empty() {
            redis::cmd("UNLINK").arg(&doomed).query::<()>(conn)?;
            flushed += doomed.len();
        }
        if next == 0 {
            return Ok(flushed);
        }
        cursor = next;
    }
}

/// `s` as a SCAN pattern matching itself literally.
fn glob_escape(s: &str) -> String {
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escape_makes_patterns_literal() {
        assert_eq!(glob_escape("im:"), "im:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
