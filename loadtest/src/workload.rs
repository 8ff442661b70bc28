//! Workload generation, apart from connections: a seeded RNG and the
//! fixed-rate schedule.
//!
//! At a fixed rate every message has an *intended* send time, and latency
//! is measured from it, not from when the message actually left: a server
//! that stalls for a second is charged for every message that should have
//! gone out during that second (no coordinated omission).

use std::time::Duration;

/// splitmix64: small, fast, and the same sequence for the same seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// When one sender's messages are due.
pub enum Schedule {
    /// As fast as the window of unacked messages allows.
    Window,
    /// One message every `interval`, starting at `phase` (so senders of the
    /// same rate do not all fire in the same microsecond).
    Fixed { interval: Duration, phase: Duration },
}

impl Schedule {
    /// `per_sender_rate` messages per second, or the window if 0.
    pub fn new(per_sender_rate: f64, rng: &mut Rng) -> Schedule {
        if per_sender_rate <= 0.0 {
            return Schedule::Window;
        }
        let interval = Duration::from_secs_f64(1.0 / per_sender_rate);
        let phase = Duration::from_nanos(rng.below(interval.as_nanos().max(1) as u64));
        Schedule::Fixed { interval, phase }
    }

    /// The intended send time of message `n` (0-based), from the test's
    /// start; `None` in window mode (send when the window has room).
    pub fn due(&self, n: u64) -> Option<Duration> {
        match self {
            Schedule::Window => None,
            Schedule::Fixed { interval, phase } => Some(*phase + interval.mul_f64(n as f64)),
        }
    }

    /// How many messages are due before `end` (`None` in window mode): a
    /// fixed-rate run sends all of them, however late, so a slow machine
    /// shows as lateness rather than as fewer messages.
    pub fn due_before(&self, end: Duration) -> Option<u64> {
        match self {
            Schedule::Window => None,
            Schedule::Fixed { interval, phase } => Some(if end <= *phase {
                0
            } else {
                ((end - *phase)
                    .as_nanos()
                    .div_ceil(interval.as_nanos().max(1))) as u64
            }),
        }
    }
}

/// The payload of a load-test message: when it was meant to leave and which
/// message of its pair it is, then padding up to the requested size.
pub fn payload(intended_ns: u64, counter: u64, size: usize) -> Vec<u8> {
    let mut content = Vec::with_capacity(size.max(16));
    content.extend_from_slice(&intended_ns.to_be_bytes());
    content.extend_from_slice(&counter.to_be_bytes());
    content.resize(size.max(16), b'.');
    content
}

/// (intended send time in ns since the start, counter) from a payload.
pub fn parse_payload(content: &[u8]) -> Option<(u64, u64)> {
    let intended = u64::from_be_bytes(content.get(..8)?.try_into().ok()?);
    let counter = u64::from_be_bytes(content.get(8..16)?.try_into().ok()?);
    Some((intended, counter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, {
            let mut r = Rng::new(8);
            (0..5).map(|_| r.next_u64()).collect::<Vec<_>>()
        });
    }

    #[test]
    fn fixed_schedule_spaces_messages_evenly() {
        let schedule = Schedule::new(100.0, &mut Rng::new(1));
        let first = schedule.due(0).unwrap();
        assert!(first < Duration::from_millis(10));
        assert_eq!(schedule.due(100).unwrap() - first, Duration::from_secs(1));
        assert!(Schedule::new(0.0, &mut Rng::new(1)).due(5).is_none());
    }

    #[test]
    fn due_before_counts_exactly_the_messages_scheduled_in_time() {
        for seed in 0..20 {
            let schedule = Schedule::new(100.0, &mut Rng::new(seed));
            let end = Duration::from_secs(2);
            let n = schedule.due_before(end).unwrap();
            assert_eq!(n, 200);
            assert!(schedule.due(n - 1).unwrap() < end);
            assert!(schedule.due(n).unwrap() >= end);
        }
        let schedule = Schedule::new(1.0, &mut Rng::new(3));
        assert_eq!(schedule.due_before(Duration::ZERO), Some(0));
        assert_eq!(Schedule::Window.due_before(Duration::from_secs(1)), None);
    }

    #[test]
    fn payload_round_trips_and_pads() {
        let p = payload(123, 45, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(parse_payload(&p), Some((123, 45)));
        assert_eq!(parse_payload(b"short"), None);
    }
}
