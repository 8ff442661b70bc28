//! When to try again: exponential backoff with full jitter, per
//! notification, and a gate for the receiver as a whole.
//!
//! Full jitter (each wait drawn uniformly below its bound) spreads the
//! retries of notifications that failed together, so a receiver coming
//! back is not hit by the whole backlog in the same instant. The gate
//! stops the outbox from trying every notification against a receiver
//! that is down: after a few failures in a row only one probe at a time
//! goes out, on its own backoff, until one succeeds.

use std::time::{Duration, Instant};

/// Consecutive failures after which the receiver counts as down.
const DOWN_AFTER: u32 = 3;

/// Exponential bounds, `first` doubling up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The bound of the wait after the `attempt`th failure (1-based).
    pub fn bound(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }

    /// A wait drawn uniformly in [0, bound(attempt)].
    pub fn wait(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let bound = self.bound(attempt).as_micros() as u64;
        Duration::from_micros(rng.below(bound + 1))
    }
}

/// A small fast generator for jitter (xorshift64*), seeded from the OS;
/// nothing secret depends on it.
pub struct Rng(u64);

impl Default for Rng {
    fn default() -> Rng {
        let mut seed = [0u8; 8];
        // A clock-based seed is good enough for jitter if the OS refuses.
        if getrandom::fill(&mut seed).is_err() {
            seed = (runtime::clock::unix_ms() | 1).to_le_bytes();
        }
        Rng(u64::from_le_bytes(seed) | 1)
    }
}

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, n) (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Whether the receiver is taking deliveries.
#[derive(Default)]
pub struct Gate {
    failures: u32,
    /// While down: when the next probe may go.
    probe_at: Option<Instant>,
}

impl Gate {
    pub fn is_down(&self) -> bool {
        self.probe_at.is_some()
    }

    /// How many deliveries may be in flight now, of `senders`.
    pub fn allowed(&self, senders: usize, now: Instant) -> usize {
        match self.probe_at {
            None => senders,
            Some(at) if now >= at => 1,
            Some(_) => 0,
        }
    }

    /// When a probe is next allowed, while down.
    pub fn next_probe(&self) -> Option<Instant> {
        self.probe_at
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.probe_at = None;
    }

    pub fn failed(&mut self, backoff: &Backoff, rng: &mut Rng, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= DOWN_AFTER {
            let wait = backoff.wait(self.failures - DOWN_AFTER + 1, rng);
            self.probe_at = Some(now + wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_double_up_to_the_cap() {
        let backoff = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let bounds: Vec<u64> = (1..=6)
            .map(|a| backoff.bound(a).as_millis() as u64)
            .collect();
        assert_eq!(bounds, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.bound(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jittered_waits_stay_under_their_bound_and_spread() {
        let backoff = Backoff {
            first: Duration::from_millis(1000),
            max: Duration::from_secs(1),
        };
        let mut rng = Rng::default();
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let wait = backoff.wait(1, &mut rng);
            assert!(wait <= Duration::from_secs(1));
            buckets[(wait.as_millis() as usize / 100).min(9)] += 1;
        }
        // Uniform: each tenth holds about 1,000.
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }

    #[test]
    fn the_gate_closes_after_failures_in_a_row_and_opens_on_a_success() {
        let backoff = Backoff {
            first: Duration::from_secs(60),
            max: Duration::from_secs(60),
        };
        let mut rng = Rng::default();
        let mut gate = Gate::default();
        let now = Instant::now();
        for _ in 0..DOWN_AFTER - 1 {
            gate.failed(&backoff, &mut rng, now);
        }
        assert_eq!(gate.allowed(4, now), 4);
        gate.failed(&backoff, &mut rng, now);
        assert!(gate.is_down());
        assert_eq!(gate.allowed(4, now + Duration::from_secs(61)), 1);
        gate.succeeded();
        assert_eq!(gate.allowed(4, now), 4);
    }
}
