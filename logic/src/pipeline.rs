//! The pipeline thread: the logic tier's front door.
//!
//! ```text
//!  Upcall ──▶ requests/<kind>.rs: validate, filter, rate-limit, dedup
//!               │                                                     │
//!               │ reads (history, sync, conversations, profiles)      │ writes (send, read, delete, profile)
//!               ▼                                                     ▼
//!        reader threads ──Downcall──▶ client              group commit (commit.rs, sequencer.rs)
//!                                                                     │ Committed
//!                                                                     ▼
//!                               requests/<kind>.rs: the answer, then push, ReadNotice,
//!                               offline hook, and the ack timer for every push
//! ```
//!
//! This thread owns presence, the recent-id cache, the rate limits and the
//! ack tracker; it never touches storage, so it never waits on a disk.
//! Responses to writes are sent only when the commit is reported durable.
//! What each request does lives in its file under `requests/`; this file
//! is the loop and what every request shares: tickets, the hand-offs to the
//! writer and the readers, and the ways to answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use protocol::body::error_frame;
use protocol::link::{Downcall, Downlink, SessionId, Upcall};
use protocol::{Body, ErrorCode, Frame, FrameCodec};
use runtime::config::Invalid;
use runtime::rate::TokenBucket;

use crate::acks::{AckPolicy, AckTracker, Due};
use crate::auth::Authenticator;
use crate::cache::keeper::PresenceEvent;
use crate::commit::{Committed, WriteJob};
use crate::config::LogicConfig;
use crate::dedup::RecentIds;
use crate::filter::ContentFilter;
use crate::metrics::{Counter, Gauge, LogicMetrics};
use crate::offline::OfflineNotifier;
use crate::presence::Presence;
use crate::reader::ReadJob;
use crate::requests::ReadQuery;
use crate::sequencer::WriteOp;
use crate::tier::Inbox;

/// Most upcalls the pipeline handles before it looks at commits and timers
/// again.
const UPCALLS_PER_ROUND: usize = 256;

/// Who to answer when a request is done.
pub struct Ticket {
    pub session: SessionId,
    pub req_id: u64,
    pub uid: u64,
    /// For sends: the client_msg_id, to settle the recent-id entry.
    pub client_msg_id: Option<String>,
}

pub struct Pipeline {
    pub(crate) auth: Authenticator,
    pub(crate) codec: FrameCodec,
    pub(crate) presence: Presence,
    /// The Redis presence directory's keeper, when Redis is configured.
    pub(crate) directory: Option<Sender<PresenceEvent>>,
    pub(crate) downlink: Arc<dyn Downlink>,
    /// To the writer; dropped at shutdown so the writer can finish.
    pub(crate) writes: Option<Sender<WriteJob<Ticket>>>,
    pub(crate) reads: Sender<ReadJob>,
    pub(crate) recent: RecentIds<Ticket>,
    pub(crate) filter: ContentFilter,
    /// Per-user send rate limits.
    pub(crate) limits: HashMap<u64, TokenBucket>,
    pub(crate) acks: AckTracker,
    pub(crate) offline: Arc<dyn OfflineNotifier>,
    pub(crate) config: LogicConfig,
    /// The ack timers' and rate limits' clock starts here.
    epoch: Instant,
    pub(crate) metrics: Arc<LogicMetrics>,
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &LogicConfig,
        max_frame: usize,
        auth: Authenticator,
        directory: Option<Sender<PresenceEvent>>,
        downlink: Arc<dyn Downlink>,
        writes: Sender<WriteJob<Ticket>>,
        reads: Sender<ReadJob>,
        offline: Arc<dyn OfflineNotifier>,
        metrics: Arc<LogicMetrics>,
    ) -> Result<Pipeline, Invalid> {
        Ok(Pipeline {
            auth,
            codec: FrameCodec::new(max_frame),
            presence: Presence::default(),
            directory,
            downlink,
            writes: Some(writes),
            reads,
            recent: RecentIds::new(config.recent_ids),
            filter: ContentFilter::new(&config.content_filter)
                .map_err(|e| Invalid::new("logic.content_filter", e))?,
            limits: HashMap::new(),
            acks: AckTracker::new(
                AckPolicy {
                    first_resend: Duration::from_millis(config.push_resend_first_ms),
                    second_resend: Duration::from_millis(config.push_resend_second_ms),
                    close_after: Duration::from_millis(config.push_close_ms),
                },
                0,
            ),
            offline,
            config: config.clone(),
            epoch: Instant::now(),
            metrics,
        })
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Runs until every gateway is gone, then lets the writer finish.
    pub fn run(&mut self, inbox: Inbox, committed: Receiver<Committed<Ticket>>) {
        let mut due = Vec::new();
        loop {
            // Drain what is queued, commits first (their answers are what
            // clients wait for), upcalls up to a round's worth so commits
            // and timers keep their turn under a flood.
            let mut idle = true;
            while let Ok(done) = committed.try_recv() {
                self.on_committed(done);
                idle = false;
            }
            // The answers and pushes go out before the upcalls are looked at.
            self.downlink.flush();
            let mut gateway_gone = false;
            for _ in 0..UPCALLS_PER_ROUND {
                match inbox.upcalls.try_recv() {
                    Ok(call) => {
                        self.handle(call);
                        idle = false;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        gateway_gone = true;
                        break;
                    }
                }
            }
            self.expire_acks(&mut due);
            self.downlink.flush();
            self.metrics
                .set(Gauge::OnlineUsers, self.presence.online_users());
            self.metrics.set(Gauge::PendingPushes, self.acks.pending());
            self.metrics.set(Gauge::RecentIds, self.recent.len());
            if gateway_gone {
                break;
            }
            if idle {
                let now = self.now_ms();
                let wait = self
                    .acks
                    .next_deadline()
                    .map_or(Duration::from_secs(1), |at| {
                        Duration::from_millis(at.saturating_sub(now))
                    });
                inbox.doorbell.wait(wait);
            }
        }
        // Every gateway is gone. Let the writer finish what it was given, so
        // nothing accepted is left uncommitted.
        self.writes = None;
        for done in committed {
            self.on_committed(done);
            self.downlink.flush();
        }
        log::debug!("logic pipeline stopped");
    }

    /// One upcall from a gateway.
    pub fn handle(&mut self, call: Upcall) {
        match call {
            Upcall::Login {
                session,
                req_id,
                login,
            } => self.login(session, req_id, login),
            Upcall::Closed { session, .. } => {
                if let Some((uid, device)) = self.presence.logout(session) {
                    self.tell_directory(|| PresenceEvent::Offline {
                        uid,
                        device_id: device.device_id,
                    });
                }
            }
            Upcall::PushAck {
                session, msg_id, ..
            } => self.acks.acked(session, msg_id),
            Upcall::Request {
                session,
                uid,
                frame,
            } => {
                let ticket = Ticket {
                    session,
                    req_id: frame.req_id,
                    uid,
                    client_msg_id: None,
                };
                match frame.body {
                    Some(body) => self.request(ticket, body),
                    None => self.fail(&ticket, ErrorCode::BadFrame, "frame has no body"),
                }
            }
        }
    }

    /// Hands a validated write to the group-commit thread; it is answered
    /// when the commit is durable (`on_committed`).
    pub(crate) fn write(&mut self, ticket: Ticket, op: WriteOp) {
        let Some(writes) = &self.writes else {
            return self.fail(&ticket, ErrorCode::Unavailable, "shutting down");
        };
        if let Err(e) = writes.try_send(WriteJob { op, ticket }) {
            let job = match e {
                TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
            };
            self.settle_failed(&job.ticket);
            self.fail(
                &job.ticket,
                ErrorCode::Unavailable,
                "storage busy, retry later",
            );
        }
    }

    /// Hands a validated read to the reader threads, which answer it.
    pub(crate) fn read(&mut self, ticket: Ticket, query: ReadQuery) {
        let job = ReadJob {
            session: ticket.session,
            req_id: ticket.req_id,
            uid: ticket.uid,
            query,
        };
        if self.reads.try_send(job).is_err() {
            self.fail(&ticket, ErrorCode::Unavailable, "storage busy, retry later");
        }
    }

    /// A batch is durable (or failed): answer every write in it.
    pub fn on_committed(&mut self, done: Committed<Ticket>) {
        for (ticket, result) in done {
            match result {
                Ok(outcome) => self.committed(ticket, outcome),
                Err(e) => {
                    self.settle_failed(&ticket);
                    let (code, message) = e.wire_error();
                    self.fail(&ticket, code, message);
                }
            }
        }
    }

    fn expire_acks(&mut self, due: &mut Vec<Due>) {
        let now = self.now_ms();
        let presence = &self.presence;
        self.acks
            .expire(now, |session| presence.is_online(session), due);
        for item in due.drain(..) {
            match item {
                Due::Resend { session, frame } => {
                    self.metrics.add(Counter::PushResends, 1);
                    self.downlink.send(Downcall::Frame { session, frame })
                }
                Due::Close { session } => {
                    self.metrics.add(Counter::AckTimeoutCloses, 1);
                    log::info!("closing session {session:?}: pushes unacked");
                    self.downlink.send(Downcall::Close {
                        session,
                        last: None,
                    });
                }
            }
        }
    }

    /// Tells the presence directory, if there is one (the event is only
    /// built then: logins without Redis copy nothing).
    pub(crate) fn tell_directory(&self, event: impl FnOnce() -> PresenceEvent) {
        if let Some(directory) = &self.directory {
            // Unbounded, and the keeper drains it even while Redis is down.
            let _ = directory.send(event());
        }
    }

    /// Every device of `uids` but `origin` (the session that caused it).
    pub(crate) fn devices_of(&self, uids: [u64; 2], origin: SessionId) -> Vec<SessionId> {
        uids.iter()
            .flat_map(|uid| self.presence.devices(*uid))
            .map(|d| d.session)
            .filter(|s| *s != origin)
            .collect()
    }

    pub(crate) fn reply(&self, ticket: &Ticket, body: Body) {
        if let Some(frame) = self.encode(&Frame {
            req_id: ticket.req_id,
            body: Some(body),
        }) {
            self.downlink.send(Downcall::Frame {
                session: ticket.session,
                frame,
            });
        }
    }

    pub(crate) fn fail(&self, ticket: &Ticket, code: ErrorCode, message: &str) {
        self.metrics.error(code);
        if let Some(frame) = self.encode(&error_frame(ticket.req_id, code, message)) {
            self.downlink.send(Downcall::Frame {
                session: ticket.session,
                frame,
            });
        }
    }

    pub(crate) fn encode(&self, frame: &Frame) -> Option<Bytes> {
        match self.codec.encode_to_bytes(frame) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                log::error!("cannot encode a frame: {e}");
                None
            }
        }
    }
}
