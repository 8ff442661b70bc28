//! One wake-up for many queued items.
//!
//! The logic thread takes work from several queues (upcalls from every
//! gateway worker, commits from the writer). Blocking on the queues
//! themselves costs a wake-up — a futex call and usually a context switch —
//! for every item: under load the worker and the logic thread ping-pong
//! once per frame. Instead, producers put items on channels nobody blocks
//! on (a `try_send` then costs no syscall) and [`Bell::ring`] once per
//! batch: a worker once per turn of its event loop, the writer once per
//! commit. The consumer drains every queue and [`Doorbell::wait`]s only
//! when all are empty. A ring that comes between the drain and the wait is
//! not lost: the wait returns at once.

use std::time::Duration;

use crossbeam_utils::sync::{Parker, Unparker};

/// The consumer's side: waits for a ring.
pub struct Doorbell {
    parker: Parker,
}

/// A producer's side: rings. Cheap to clone; ringing a doorbell nobody
/// waits at is an atomic swap, no syscall.
#[derive(Clone)]
pub struct Bell {
    unparker: Unparker,
}

impl Doorbell {
    pub fn new() -> Doorbell {
        Doorbell {
            parker: Parker::new(),
        }
    }

    pub fn bell(&self) -> Bell {
        Bell {
            unparker: self.parker.unparker().clone(),
        }
    }

    /// Returns after a ring (at once if one came since the last wait), or
    /// after `timeout`. May return early: callers re-check their queues.
    pub fn wait(&self, timeout: Duration) {
        self.parker.park_timeout(timeout);
    }
}

impl Default for Doorbell {
    fn default() -> Self {
        Doorbell::new()
    }
}

impl Bell {
    pub fn ring(&self) {
        self.unparker.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_ring_before_the_wait_is_not_lost() {
        let doorbell = Doorbell::new();
        doorbell.bell().ring();
        let started = Instant::now();
        doorbell.wait(Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_ring_from_another_thread_ends_the_wait() {
        let doorbell = Doorbell::new();
        let bell = doorbell.bell();
        let ringer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            bell.ring();
        });
        let started = Instant::now();
        doorbell.wait(Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(30));
        ringer.join().unwrap();
    }
}
