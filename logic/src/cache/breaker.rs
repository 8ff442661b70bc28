//! The circuit breaker in front of Redis.
//!
//! Closed: every thread uses Redis. The first failed call opens it, and from
//! then on nobody waits for a Redis timeout: readers answer from storage,
//! the writer skips its cache updates. While it is open only the keeper
//! thread touches Redis, with one probe every `breaker_open_ms`; when a
//! probe succeeds the keeper flushes the cache entries (they missed the
//! updates skipped meanwhile) and closes it again. See `keeper.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug)]
pub struct Breaker {
    closed: AtomicBool,
    /// How many times it closed: a connection made before the last close
    /// may be to a Redis that has since died, and is replaced.
    epoch: AtomicU64,
}

impl Breaker {
    /// A breaker starts open: the keeper's first probe closes it.
    pub fn new_open() -> Breaker {
        Breaker {
            closed: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Opens the breaker. True if this call opened it (log it once).
    pub fn trip(&self) -> bool {
        self.closed.swap(false, Ordering::AcqRel)
    }

    pub fn close(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.closed.store(true, Ordering::Release);
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_once_and_closes() {
        let breaker = Breaker::new_open();
        assert!(!breaker.is_closed());
        assert!(!breaker.trip(), "already open");
        breaker.close();
        assert!(breaker.is_closed());
        assert_eq!(breaker.epoch(), 1);
        assert!(breaker.trip());
        assert!(!breaker.trip());
        assert!(!breaker.is_closed());
    }
}
