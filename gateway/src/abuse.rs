//! Limits by source address, shared by the listener and every worker:
//! new connections per second (at accept time) and failed logins per
//! minute (a source past its budget has its logins refused with
//! RATE_LIMITED, unverified, until the minute ends). The logic tier limits
//! failed logins per uid (`logic/src/requests/login.rs`).
//!
//! Both are per IP address, so clients behind one NAT share them: the
//! accept rate is off by default, the failure budget generous.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use parking_lot::Mutex;
use runtime::rate::{Admit, FixedWindow, TokenBucket};

/// Addresses tracked before the tables are forgotten (which only grants
/// every source a fresh budget).
const MAX_SOURCES: usize = 100_000;

const MINUTE_MS: u64 = 60_000;

/// The limits, from `[gateway]`.
#[derive(Debug, Clone, Copy)]
pub struct SourcePolicy {
    /// New connections per second per address; 0: no limit.
    pub connections_per_sec: u32,
    pub connection_burst: u32,
    /// Failed logins per minute per address; 0: no limit.
    pub failed_logins_per_min: u32,
}

pub struct SourceLimits {
    policy: SourcePolicy,
    epoch: Instant,
    accepts: Mutex<HashMap<IpAddr, TokenBucket>>,
    failures: Mutex<HashMap<IpAddr, FixedWindow>>,
}

impl SourceLimits {
    pub fn new(policy: SourcePolicy) -> SourceLimits {
        SourceLimits {
            policy,
            epoch: Instant::now(),
            accepts: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a new connection from `ip` may be accepted.
    pub fn admit_connection(&self, ip: IpAddr) -> bool {
        let (rate, burst) = (
            self.policy.connections_per_sec,
            self.policy.connection_burst,
        );
        if rate == 0 {
            return true;
        }
        let now = self.now_ms();
        let mut accepts = self.accepts.lock();
        if accepts.len() > MAX_SOURCES {
            accepts.clear();
        }
        let bucket = accepts
            .entry(ip)
            .or_insert_with(|| TokenBucket::full(burst, now));
        bucket.take(now, rate, burst) == Admit::Yes
    }

    /// Whether `ip` may still try to log in this minute.
    pub fn login_allowed(&self, ip: IpAddr) -> bool {
        let limit = self.policy.failed_logins_per_min;
        limit == 0
            || self
                .failures
                .lock()
                .get(&ip)
                .is_none_or(|w| w.allows(self.now_ms(), MINUTE_MS, limit))
    }

    /// A login from `ip` was refused.
    pub fn login_failed(&self, ip: IpAddr) {
        if self.policy.failed_logins_per_min == 0 {
            return;
        }
        let now = self.now_ms();
        let mut failures = self.failures.lock();
        if failures.len() > MAX_SOURCES {
            failures.clear();
        }
        failures.entry(ip).or_default().count(now, MINUTE_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_budgets() {
        let limits = SourceLimits::new(SourcePolicy {
            connections_per_sec: 1,
            connection_burst: 2,
            failed_logins_per_min: 2,
        });
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        assert!(limits.admit_connection(a) && limits.admit_connection(a));
        assert!(!limits.admit_connection(a));
        assert!(limits.admit_connection(b));
        limits.login_failed(a);
        assert!(limits.login_allowed(a));
        limits.login_failed(a);
        assert!(!limits.login_allowed(a));
        assert!(limits.login_allowed(b));
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = SourceLimits::new(SourcePolicy {
            connections_per_sec: 0,
            connection_burst: 0,
            failed_logins_per_min: 0,
        });
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..1000 {
            assert!(limits.admit_connection(a));
            limits.login_failed(a);
        }
        assert!(limits.login_allowed(a));
    }
}
