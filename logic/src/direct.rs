//! Direct calls: requests made inside the process (by the HTTP API) rather
//! than by a client through a gateway.
//!
//! A direct request travels a client's path. It becomes the
//! `Upcall::Request` of a session of the reserved gateway id
//! [`DIRECT_GATEWAY`] (no gateway picks it), the pipeline handles it like
//! any other (validation, dedup, seq, durable commit, fan-out, offline
//! hook), and its answer leaves as the `Downcall::Frame` any session gets:
//! the [`Routed`] downlink hands the answers of direct sessions to their
//! waiting callers instead of a gateway. One difference, on purpose: a
//! direct send skips the per-user rate limit (the API limits each key).
//!
//! What no client may ask (who is online, close a user's devices) are
//! [`DirectCall::Presence`] and [`DirectCall::Kick`], answered by the
//! pipeline from the presence it owns; the outbox's removals are
//! [`DirectCall::NoticesDone`], a write nobody waits for.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use protocol::link::{Downcall, Downlink, SessionId};
use protocol::{Body, Frame, FrameCodec};
use runtime::doorbell::Bell;

use crate::auth::Authenticator;
use crate::presence::{Device, GatewayAddr, GatewayAddrs};
use crate::store::Notice;

/// The gateway id of direct sessions; gateways pick any other.
pub const DIRECT_GATEWAY: u32 = 0;

/// The direct session of writes nobody waits for: its answers are dropped.
pub const UNANSWERED: SessionId = SessionId {
    gateway: DIRECT_GATEWAY,
    slot: 0,
    serial: 0,
};

/// Why a direct request got no answer from the tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unanswered {
    /// The pipeline's queue is full: retry later.
    #[error("the logic tier is busy")]
    Busy,
    /// The tier is stopping or stopped.
    #[error("the logic tier is stopping")]
    Stopped,
    /// The answer was not a frame of the protocol (a bug, logged).
    #[error("the logic tier answered with an undecodable frame")]
    Garbled,
}

/// Called once with a request's answer: the response body, or an error
/// body (`Body::Error`) as a client would get it. Runs on a logic thread,
/// so it must only hand the answer on.
pub type Answer = Box<dyn FnOnce(Result<Body, Unanswered>) + Send>;

/// One user's online devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPresence {
    pub uid: u64,
    pub devices: Vec<Device>,
}

/// What the pipeline takes from the direct queue.
pub enum DirectCall {
    /// A request as `uid`, from the direct session `session`.
    Request {
        session: SessionId,
        uid: u64,
        frame: Frame,
    },
    /// Who of `uids` is online, on which devices.
    Presence {
        uids: Vec<u64>,
        reply: Box<dyn FnOnce(Vec<UserPresence>) + Send>,
    },
    /// Close `uid`'s device `device_id` (every device when `None`) after a
    /// Kick frame with `reason`; the reply gets how many were closed.
    Kick {
        uid: u64,
        device_id: Option<String>,
        reason: String,
        reply: Box<dyn FnOnce(usize) + Send>,
    },
    /// Take these delivered (or expired) notices out of the outbox.
    NoticesDone { notices: Vec<Notice> },
}

/// The requests waiting for their answers, by their session's serial.
#[derive(Default)]
struct Waiting {
    answers: Mutex<HashMap<u64, Answer>>,
    next_serial: AtomicU64,
}

impl Waiting {
    fn insert(&self, answer: Answer) -> u64 {
        // From 1: serial 0 is [`UNANSWERED`]'s.
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed) + 1;
        self.answers.lock().insert(serial, answer);
        serial
    }

    fn take(&self, serial: u64) -> Option<Answer> {
        self.answers.lock().remove(&serial)
    }
}

/// The tier's downlink: direct sessions' answers to their callers, every
/// other downcall to the gateways.
pub struct Routed {
    waiting: Arc<Waiting>,
    gateways: Arc<dyn Downlink>,
    codec: FrameCodec,
}

impl Downlink for Routed {
    fn send(&self, call: Downcall) {
        let session = call.session();
        if session.gateway != DIRECT_GATEWAY {
            return self.gateways.send(call);
        }
        let Some(answer) = self.waiting.take(session.serial) else {
            return; // cancelled: its caller stopped waiting
        };
        let result = match call {
            Downcall::Frame { frame, .. } => {
                match self.codec.decode(&mut BytesMut::from(&frame[..])) {
                    Ok(Some(Frame {
                        body: Some(body), ..
                    })) => Ok(body),
                    other => {
                        log::error!("a direct answer did not decode: {other:?}");
                        Err(Unanswered::Garbled)
                    }
                }
            }
            // A direct session never logs in and is never closed by the
            // tier; were it, its caller learns that no answer comes.
            Downcall::LoginAccepted { .. } | Downcall::Close { .. } => Err(Unanswered::Garbled),
        };
        answer(result);
    }

    fn flush(&self) {
        self.gateways.flush();
    }
}

/// A handle on the tier for callers inside the process; clones share it.
#[derive(Clone)]
pub struct Direct {
    calls: Sender<DirectCall>,
    bell: Bell,
    waiting: Arc<Waiting>,
    gateways: Arc<GatewayAddrs>,
    auth: Arc<Authenticator>,
}

/// A request on its way; [`Direct::cancel`] forgets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending(u64);

/// The pieces [`crate::tier::start`] wires: the handle, the pipeline's end
/// of its queue, and the downlink that routes answers.
pub(crate) struct Wiring {
    pub direct: Direct,
    pub calls: Receiver<DirectCall>,
    pub downlink: Arc<dyn Downlink>,
}

impl Direct {
    pub(crate) fn wire(
        capacity: usize,
        bell: Bell,
        gateways: Arc<dyn Downlink>,
        addrs: Arc<GatewayAddrs>,
        auth: Arc<Authenticator>,
        max_frame: usize,
    ) -> Wiring {
        let (tx, calls) = crossbeam_channel::bounded(capacity);
        let waiting = Arc::new(Waiting::default());
        let downlink = Arc::new(Routed {
            waiting: waiting.clone(),
            gateways,
            codec: FrameCodec::new(max_frame),
        });
        Wiring {
            direct: Direct {
                calls: tx,
                bell,
                waiting,
                gateways: addrs,
                auth,
            },
            calls,
            downlink,
        }
    }

    /// Sends `body` as a request of `uid`; `answer` is called once with
    /// the answer, or with why none will come.
    pub fn request(&self, uid: u64, body: Body, answer: Answer) -> Pending {
        let serial = self.waiting.insert(answer);
        let session = SessionId {
            gateway: DIRECT_GATEWAY,
            slot: 0,
            serial,
        };
        let frame = Frame {
            req_id: serial,
            body: Some(body),
        };
        if let Err(e) = self.call(DirectCall::Request {
            session,
            uid,
            frame,
        }) {
            if let Some(answer) = self.waiting.take(serial) {
                answer(Err(e));
            }
        }
        Pending(serial)
    }

    /// Forgets a request whose caller stopped waiting; its answer, if it
    /// still comes, is dropped.
    pub fn cancel(&self, pending: Pending) {
        self.waiting.take(pending.0);
    }

    /// Asks who of `uids` is online; `reply` is dropped unanswered if the
    /// tier is busy or stopping.
    pub fn presence(
        &self,
        uids: Vec<u64>,
        reply: Box<dyn FnOnce(Vec<UserPresence>) + Send>,
    ) -> Result<(), Unanswered> {
        self.call(DirectCall::Presence { uids, reply })
    }

    /// Closes a user's device, or all of them, with a Kick frame.
    pub fn kick(
        &self,
        uid: u64,
        device_id: Option<String>,
        reason: String,
        reply: Box<dyn FnOnce(usize) + Send>,
    ) -> Result<(), Unanswered> {
        self.call(DirectCall::Kick {
            uid,
            device_id,
            reason,
            reply,
        })
    }

    /// Takes delivered notices out of the outbox (a write; if it fails,
    /// the outbox finds them again).
    pub fn notices_done(&self, notices: Vec<Notice>) -> Result<(), Unanswered> {
        self.call(DirectCall::NoticesDone { notices })
    }

    /// A login token for `uid` that expires at `expires_unix_secs`.
    pub fn mint_token(&self, uid: u64, expires_unix_secs: u64) -> String {
        self.auth.mint_until(uid, expires_unix_secs)
    }

    /// Where a gateway's clients connect, and when it started.
    pub fn gateway(&self, gateway: u32) -> GatewayAddr {
        self.gateways.get(gateway)
    }

    fn call(&self, call: DirectCall) -> Result<(), Unanswered> {
        match self.calls.try_send(call) {
            Ok(()) => {
                self.bell.ring();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(Unanswered::Busy),
            Err(TrySendError::Disconnected(_)) => Err(Unanswered::Stopped),
        }
    }
}
