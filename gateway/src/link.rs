//! The gateway's end of the link to the logic tier.
//!
//! Up: a worker hands [`Upcall`]s to an [`Uplink`] without ever blocking; a
//! full queue means the logic tier is overloaded, and the request is answered
//! UNAVAILABLE on the spot. Down: the logic tier holds a [`Mailboxes`] (our
//! [`Downlink`]) and drops [`Downcall`]s into the owning worker's queue;
//! its `flush` wakes each worker that got something, at most once per
//! drain: under load many downcalls share one wake-up syscall.
//!
//! This file is the in-process implementation over `crossbeam-channel`; a
//! link across a socket implements the same two traits, carrying the calls
//! in their wire form (`protocol::link::wire`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use protocol::link::{Downcall, Downlink, Upcall};
use runtime::doorbell::Bell;

/// Why an upcall could not be handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UplinkError {
    #[error("the logic tier's queue is full")]
    Full,
    #[error("the logic tier is gone")]
    Disconnected,
}

/// How a worker reaches the logic tier.
pub trait Uplink: Send + Sync {
    /// Hands over `call` without blocking (and without waking the logic
    /// tier: see `flush`).
    fn send(&self, call: Upcall) -> Result<(), UplinkError>;
    /// Wakes the logic tier for everything sent since the last flush. A
    /// worker flushes once per turn of its event loop: one wake-up for all
    /// the frames of a turn, not one per frame.
    fn flush(&self);
    /// Upcalls waiting, for the metrics.
    fn depth(&self) -> usize;
}

/// The in-process uplink: the logic tier's bounded upcall queue and the
/// bell of its doorbell (`runtime/src/doorbell.rs`).
pub struct LocalUplink {
    /// `None` once dropped (see `Drop`).
    queue: Option<Sender<Upcall>>,
    bell: Bell,
    /// Something was sent since the last flush.
    unrung: AtomicBool,
}

impl LocalUplink {
    pub fn new(queue: Sender<Upcall>, bell: Bell) -> LocalUplink {
        LocalUplink {
            queue: Some(queue),
            bell,
            unrung: AtomicBool::new(false),
        }
    }
}

impl Uplink for LocalUplink {
    fn send(&self, call: Upcall) -> Result<(), UplinkError> {
        let Some(queue) = &self.queue else {
            return Err(UplinkError::Disconnected);
        };
        queue.try_send(call).map_err(|e| match e {
            TrySendError::Full(_) => UplinkError::Full,
            TrySendError::Disconnected(_) => UplinkError::Disconnected,
        })?;
        self.unrung.store(true, Ordering::Release);
        Ok(())
    }

    fn flush(&self) {
        if self.unrung.swap(false, Ordering::AcqRel) {
            self.bell.ring();
        }
    }

    fn depth(&self) -> usize {
        self.queue.as_ref().map_or(0, Sender::len)
    }
}

impl Drop for LocalUplink {
    /// Closes this end of the queue, then rings, so the logic tier sees at
    /// once that a gateway is gone.
    fn drop(&mut self) {
        drop(self.queue.take());
        self.bell.ring();
    }
}

/// Wakes one worker's poll, coalescing wake-ups between drains.
pub struct Wake {
    waker: mio::Waker,
    /// True from the first wake after a drain until the next drain: further
    /// senders skip the syscall because a wake-up is already on its way.
    pending: AtomicBool,
}

impl Wake {
    pub fn new(waker: mio::Waker) -> Wake {
        Wake {
            waker,
            pending: AtomicBool::new(false),
        }
    }

    /// Call after queueing something for the worker.
    pub fn wake(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake worker: {e}");
            }
        }
    }

    /// The worker calls this *before* draining its queues, so that anything
    /// queued after the drain began wakes it again.
    pub fn reset(&self) {
        self.pending.store(false, Ordering::SeqCst);
    }
}

/// The queues into one worker: what the logic tier sends it.
pub struct Mailbox {
    pub downcalls: Sender<Downcall>,
    pub wake: Arc<Wake>,
    /// Sent something since the last flush.
    pub unwoken: AtomicBool,
}

/// Every worker's mailbox: the in-process [`Downlink`] the logic tier holds.
#[derive(Clone)]
pub struct Mailboxes {
    /// The gateway whose workers these are (`SessionId::gateway`).
    gateway: u32,
    workers: Arc<Vec<Mailbox>>,
}

impl Mailboxes {
    pub fn new(gateway: u32, workers: Vec<Mailbox>) -> Mailboxes {
        Mailboxes {
            gateway,
            workers: Arc::new(workers),
        }
    }

    /// Downcalls waiting per worker, for the metrics.
    pub fn depths(&self) -> Vec<usize> {
        self.workers.iter().map(|w| w.downcalls.len()).collect()
    }
}

impl Downlink for Mailboxes {
    fn send(&self, call: Downcall) {
        let session = call.session();
        let mailbox = match self.workers.get(session.worker()) {
            Some(mailbox) if session.gateway == self.gateway => mailbox,
            _ => {
                log::warn!("downcall for a session not of this gateway: {session:?}");
                return;
            }
        };
        // Unbounded: the logic tier must never block on a worker. A session
        // that cannot keep up is closed by its worker instead.
        if mailbox.downcalls.send(call).is_ok() {
            mailbox.unwoken.store(true, Ordering::Release);
        }
    }

    fn flush(&self) {
        for mailbox in self.workers.iter() {
            if mailbox.unwoken.swap(false, Ordering::AcqRel) {
                mailbox.wake.wake();
            }
        }
    }
}

/// A worker's receiving ends.
pub struct Inbox {
    pub downcalls: Receiver<Downcall>,
    pub wake: Arc<Wake>,
}
