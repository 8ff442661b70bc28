//! A token bucket: the gateway limits each connection's inbound frames with
//! one, the logic tier each user's messages.
//!
//! Time is a parameter (milliseconds on the caller's clock). Refused
//! requests still cost a token, so a client that keeps sending while refused
//! sinks into debt and, past `-burst`, is judged abusive.

/// A token bucket.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    /// Frames that may be sent now; negative while the client is over its rate.
    tokens: f32,
    last_ms: u64,
}

/// The limiter's verdict on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Over the rate: refuse this frame with RATE_LIMITED.
    Limited,
    /// So far over the rate for so long that the connection should go.
    Abusive,
}

impl TokenBucket {
    pub fn full(burst: u32, now_ms: u64) -> TokenBucket {
        TokenBucket {
            tokens: burst as f32,
            last_ms: now_ms,
        }
    }

    /// Takes `n` tokens at `now_ms` if the bucket holds them, none if not
    /// (a refusal here costs nothing: for callers that are not clients,
    /// such as an API key asking for a batch).
    pub fn take_all_or_none(&mut self, now_ms: u64, n: u32, rate: u32, burst: u32) -> bool {
        self.refill(now_ms, rate, burst);
        if self.tokens >= n as f32 {
            self.tokens -= n as f32;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, now_ms: u64, rate: u32, burst: u32) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = now_ms;
        self.tokens = (self.tokens + elapsed as f32 * rate as f32 / 1000.0).min(burst as f32);
    }

    /// Takes one token at `now_ms`, refilling at `rate` per second up to `burst`.
    /// Refused frames still cost a token, so a client that keeps sending
    /// while refused sinks to `-burst` and is cut off.
    pub fn take(&mut self, now_ms: u64, rate: u32, burst: u32) -> Admit {
        self.refill(now_ms, rate, burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Admit::Yes
        } else if self.tokens > -(burst as f32) {
            Admit::Limited
        } else {
            Admit::Abusive
        }
    }
}

/// Events counted in fixed windows: "at most `limit` per `window_ms`".
/// For failures (failed logins), where a refused attempt must cost nothing
/// and a budget per minute reads better than a rate per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedWindow {
    start_ms: u64,
    count: u32,
}

impl FixedWindow {
    /// Whether fewer than `limit` events were counted in the window that
    /// holds `now_ms` (a window that ended counts nothing).
    pub fn allows(&self, now_ms: u64, window_ms: u64, limit: u32) -> bool {
        now_ms.saturating_sub(self.start_ms) >= window_ms || self.count < limit
    }

    /// Counts one event at `now_ms`, starting a new window if the last ended.
    pub fn count(&mut self, now_ms: u64, window_ms: u64) {
        if now_ms.saturating_sub(self.start_ms) >= window_ms {
            *self = FixedWindow {
                start_ms: now_ms,
                count: 0,
            };
        }
        self.count = self.count.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut bucket = TokenBucket::full(3, 0);
        assert_eq!(bucket.take(0, 10, 3), Admit::Yes);
        assert_eq!(bucket.take(0, 10, 3), Admit::Yes);
        assert_eq!(bucket.take(0, 10, 3), Admit::Yes);
        assert_eq!(bucket.take(0, 10, 3), Admit::Limited);
        // 10 per second: 100 ms later one more frame is allowed (the debt of
        // the refused one is paid back first).
        assert_eq!(bucket.take(200, 10, 3), Admit::Yes);
    }

    #[test]
    fn sustained_abuse_is_detected() {
        let mut bucket = TokenBucket::full(5, 0);
        let verdicts: Vec<Admit> = (0..20).map(|_| bucket.take(0, 1, 5)).collect();
        assert_eq!(verdicts[..5], [Admit::Yes; 5]);
        assert!(verdicts[5..9].iter().all(|v| *v == Admit::Limited));
        assert_eq!(verdicts[10], Admit::Abusive);
    }

    #[test]
    fn all_or_none_takes_a_batch_only_when_it_fits() {
        let mut bucket = TokenBucket::full(10, 0);
        assert!(bucket.take_all_or_none(0, 8, 10, 10));
        assert!(!bucket.take_all_or_none(0, 3, 10, 10));
        assert!(bucket.take_all_or_none(0, 2, 10, 10));
        assert!(!bucket.take_all_or_none(99, 1, 10, 10));
        assert!(bucket.take_all_or_none(100, 1, 10, 10));
    }

    #[test]
    fn a_fixed_window_allows_its_budget_then_resets() {
        let mut window = FixedWindow::default();
        for t in 0..3 {
            assert!(window.allows(1_000 + t, 60_000, 3));
            window.count(1_000 + t, 60_000);
        }
        assert!(!window.allows(30_000, 60_000, 3));
        assert!(window.allows(61_000, 60_000, 3), "a new window");
        window.count(61_000, 60_000);
        assert!(window.allows(61_001, 60_000, 3));
    }
}
