//! The messages between the gateway and the logic tier.
//!
//! The gateway owns connections and knows nothing of storage; the logic tier
//! owns users, messages and devices and knows nothing of sockets. They meet
//! here. In one process these travel as Rust values over `crossbeam-channel`;
//! [`wire`] gives them their protobuf form (`proto/link.proto`) for a link
//! that crosses a socket. Either way the logic tier addresses a connection by
//! its [`SessionId`] and never holds a socket.
//!
//! ```text
//!  gateway worker ──Upcall──▶ logic      (login, request, push ack, closed)
//!  gateway worker ◀─Downcall── logic     (login accepted, frame, close)
//! ```

pub mod wire;

use bytes::Bytes;

use crate::pb::{Frame, LoginReq};

/// One client connection, as the logic tier sees it.
///
/// `slot` is reused by the gateway once a connection closes, so `serial`
/// (unique per connection for the life of the gateway process) tells a
/// current session from a stale address: a `Downcall` for a closed session is
/// dropped, never delivered to its slot's next occupant. `gateway` tells the
/// gateways sharing one logic tier apart, and one run of a gateway from the
/// next.
///
/// Sixteen bytes: the logic tier keeps one or two per online device, so the
/// worker lives in the serial's top bits rather than in a field of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    /// Which gateway process owns the connection: a random id the gateway
    /// picks at start (a gateway's restart is a new gateway).
    pub gateway: u32,
    /// The connection's slot in its worker's slab.
    pub slot: u32,
    /// Unique per connection within one gateway process; the top 16 bits
    /// are the worker (event loop) that owns it (see [`SessionId::worker`]).
    pub serial: u64,
}

impl SessionId {
    const WORKER_SHIFT: u32 = 48;

    /// The first serial a worker hands out; each connection takes the next.
    pub fn first_serial(worker: u16) -> u64 {
        u64::from(worker) << Self::WORKER_SHIFT
    }

    /// Which gateway worker thread (event loop) owns the connection.
    pub fn worker(&self) -> usize {
        (self.serial >> Self::WORKER_SHIFT) as usize
    }
}

impl std::fmt::Display for SessionId {
    /// `gateway.worker.slot.serial`, the gateway in hex: for logs and the
    /// presence directory.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:08x}.{}.{}.{}",
            self.gateway,
            self.worker(),
            self.slot,
            self.serial
        )
    }
}

/// What a gateway worker tells the logic tier.
#[derive(Debug, Clone, PartialEq)]
pub enum Upcall {
    /// A well-formed `LoginReq` (device_id already checked) on a connection
    /// that is not logged in. Answer with `LoginAccepted` or `Close`.
    Login {
        session: SessionId,
        req_id: u64,
        login: LoginReq,
    },
    /// A request from a logged-in session; answer with a `Frame` carrying
    /// the same `req_id`.
    Request {
        session: SessionId,
        uid: u64,
        frame: Frame,
    },
    /// The client acknowledged a push.
    PushAck {
        session: SessionId,
        uid: u64,
        msg_id: u64,
    },
    /// The connection is gone. Sent for every session that sent a `Login`,
    /// whether or not it was accepted; `uid` is the uid it logged in as, or
    /// was logging in as (the logic tier finds the session by it: a login
    /// accepted just before the close is forgotten too). `None` only from
    /// gateways older than that.
    Closed {
        session: SessionId,
        uid: Option<u64>,
    },
    /// Every session of this gateway is gone at once: its link died (the
    /// logic tier's end of the link says so) or it is going away.
    GatewayGone { gateway: u32 },
    /// A session accepted over an earlier link, registered again on a new
    /// one (the logic node was replaced, or the link blipped) so that its
    /// client stays connected. Answer with a `SyncHint` frame or `Close`.
    Resume {
        session: SessionId,
        registration: Registration,
    },
}

/// What a gateway keeps of a session the logic tier accepted: enough to
/// register it again with a logic node that does not know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub uid: u64,
    pub device_id: String,
    /// `pb::Platform` as its wire number.
    pub platform: i32,
    /// When its token was issued (Unix ms): a revocation since still applies.
    pub token_issued_ms: u64,
}

/// What the logic tier tells a gateway worker about one of its sessions.
#[derive(Debug, Clone, PartialEq)]
pub enum Downcall {
    /// The login was verified: the session now belongs to `uid`. The
    /// gateway answers `req_id` with `LoginResp` (it knows its heartbeat).
    LoginAccepted {
        session: SessionId,
        uid: u64,
        req_id: u64,
    },
    /// Write one encoded frame (length prefix included) to the session.
    Frame { session: SessionId, frame: Bytes },
    /// Write `last` (a Kick or an Error), if any, then close the session.
    Close {
        session: SessionId,
        last: Option<Bytes>,
    },
}

impl Upcall {
    /// The session the call is about (`None`: it is about a whole gateway).
    pub fn session(&self) -> Option<SessionId> {
        match self {
            Upcall::Login { session, .. }
            | Upcall::Request { session, .. }
            | Upcall::PushAck { session, .. }
            | Upcall::Closed { session, .. }
            | Upcall::Resume { session, .. } => Some(*session),
            Upcall::GatewayGone { .. } => None,
        }
    }
}

impl Downcall {
    pub fn session(&self) -> SessionId {
        match self {
            Downcall::LoginAccepted { session, .. }
            | Downcall::Frame { session, .. }
            | Downcall::Close { session, .. } => *session,
        }
    }
}

/// How the logic tier reaches the gateway workers. Sending never blocks: a
/// worker that falls behind is the gateway's problem (it sheds slow
/// sessions), never the logic tier's.
pub trait Downlink: Send + Sync {
    /// Queues `call` for its worker, which may not look before `flush`.
    fn send(&self, call: Downcall);
    /// Wakes every worker sent something since its last wake-up. Whoever
    /// sends flushes when it has sent what it has for now (the pipeline
    /// once per batch of work, a reader once per answer): one wake-up per
    /// batch, where waking per downcall made the worker preempt the sender
    /// once per frame.
    fn flush(&self);
}
