//! When to try again: exponential backoff with full jitter per
//! notification (`runtime::backoff`), and a gate for the receiver as a
//! whole.
//!
//! Full jitter (each wait drawn uniformly below its bound) spreads the
//! retries of notifications that failed together, so a receiver coming
//! back is not hit by the whole backlog in the same instant. The gate
//! stops the outbox from trying every notification against a receiver
//! that is down: after a few failures in a row only one probe at a time
//! goes out, on its own backoff, until one succeeds.

use std::time::Instant;

pub use runtime::backoff::{Backoff, Rng};

/// Consecutive failures after which the receiver counts as down.
const DOWN_AFTER: u32 = 3;

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
    use std::time::Duration;

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
