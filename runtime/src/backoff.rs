//! Exponential backoff with jitter, for everything that retries: the
//! outbox's deliveries, a gateway's reconnects to the logic tier.
//!
//! Jitter spreads the retries of many clients that failed together, so
//! that whatever they wait for is not hit by all of them in the same
//! instant when it comes back.

use std::time::Duration;

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

    /// Full jitter: a wait drawn uniformly in [0, bound(attempt)].
    pub fn wait(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let bound = self.bound(attempt).as_micros() as u64;
        Duration::from_micros(rng.below(bound + 1))
    }

    /// A wait drawn uniformly in [bound/2, bound]: never much shorter than
    /// the bound (for reconnects that must not spin), still spread.
    pub fn wait_from_half(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let bound = self.bound(attempt).as_micros() as u64;
        Duration::from_micros(bound / 2 + rng.below(bound / 2 + 1))
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
            seed = (crate::clock::unix_ms() | 1).to_le_bytes();
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
    fn waits_from_half_stay_between_half_and_all_of_their_bound() {
        let backoff = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_millis(800),
        };
        let mut rng = Rng::default();
        for attempt in 1..10 {
            let bound = backoff.bound(attempt);
            let wait = backoff.wait_from_half(attempt, &mut rng);
            assert!(wait >= bound / 2 && wait <= bound, "{wait:?} of {bound:?}");
        }
    }
}
