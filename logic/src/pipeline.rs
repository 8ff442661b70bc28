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
//!                               and the ack timer for every push
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
use protocol::body::{error_frame, kick_frame};
use protocol::link::{Downcall, Downlink, SessionId, Upcall};
use protocol::{Body, ErrorCode, Frame, FrameCodec};
use runtime::config::Invalid;
use runtime::rate::{FixedWindow, TokenBucket};

use crate::acks::{AckPolicy, AckTracker, Due};
use crate::auth::Authenticator;
use crate::cache::keeper::PresenceEvent;
use crate::commit::{Committed, WriteJob};
use crate::config::LogicConfig;
use crate::dedup::RecentIds;
use crate::direct::{DIRECT_GATEWAY, DirectCall, UNANSWERED, UserPresence};
use crate::filter::ContentFilter;
use crate::metrics::{Counter, Gauge, LogicMetrics};
use crate::outbox::Backlog;
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
    /// When the pipeline took the request.
    pub received: Instant,
}

impl Ticket {
    /// Whether the request came from inside the process (`direct.rs`), not
    /// from a client.
    pub fn is_direct(&self) -> bool {
        self.session.gateway == DIRECT_GATEWAY
    }
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
    /// Failed logins per uid this minute.
    pub(crate) login_failures: HashMap<u64, FixedWindow>,
    /// Per uid: tokens issued at or before this (Unix ms) are revoked.
    pub(crate) revoked: HashMap<u64, u64>,
    pub(crate) acks: AckTracker,
    /// The offline-notification outbox's size, when a webhook is configured.
    pub(crate) outbox: Option<Arc<Backlog>>,
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
        outbox: Option<Arc<Backlog>>,
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
            login_failures: HashMap::new(),
            revoked: HashMap::new(),
            acks: AckTracker::new(
                AckPolicy {
                    first_resend: Duration::from_millis(config.push_resend_first_ms),
                    second_resend: Duration::from_millis(config.push_resend_second_ms),
                    close_after: Duration::from_millis(config.push_close_ms),
                },
                0,
            ),
            outbox,
            config: config.clone(),
            epoch: Instant::now(),
            metrics,
        })
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Runs until every gateway is gone, then lets the writer finish.
    pub fn run(
        &mut self,
        inbox: Inbox,
        direct: Receiver<DirectCall>,
        committed: Receiver<Committed<Ticket>>,
    ) {
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
            for call in direct.try_iter().take(UPCALLS_PER_ROUND) {
                self.direct(call);
                idle = false;
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
            Upcall::Resume {
                session,
                registration,
            } => self.resume(session, registration),
            Upcall::Closed { session, uid } => {
                // No uid: the session never reached a login here.
                if let Some(uid) = uid
                    && let Some(device) = self.presence.logout(session, uid)
                {
                    self.went_offline(uid, device);
                }
            }
            Upcall::GatewayGone { gateway } => {
                let gone = self.presence.drop_gateway(gateway);
                log::info!(
                    "gateway {gateway:08x} gone: {} sessions dropped (their unacked pushes are released; those devices sync)",
                    gone.len()
                );
                for (uid, device) in gone {
                    self.went_offline(uid, device);
                }
            }
            Upcall::PushAck {
                session, msg_id, ..
            } => {
                if let Some(pushed_us) = self.acks.acked(session, msg_id) {
                    let waited = self.now_us().saturating_sub(pushed_us);
                    self.metrics.push_ack.observe_us(waited);
                }
            }
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
                    received: Instant::now(),
                };
                match frame.body {
                    Some(body) => self.request(ticket, body),
                    None => self.fail(&ticket, ErrorCode::BadFrame, "frame has no body"),
                }
            }
        }
    }

    /// One call from inside the process (`direct.rs`). A request takes the
    /// path of a client's.
    fn direct(&mut self, call: DirectCall) {
        match call {
            DirectCall::Request {
                session,
                uid,
                frame,
            } => self.handle(Upcall::Request {
                session,
                uid,
                frame,
            }),
            DirectCall::Presence { uids, reply } => reply(
                uids.into_iter()
                    .map(|uid| UserPresence {
                        uid,
                        devices: self.presence.devices(uid).to_vec(),
                    })
                    .collect(),
            ),
            DirectCall::Kick {
                uid,
                device_id,
                reason,
                reply,
            } => {
                let last = self.encode(&kick_frame(reason));
                let mut kicked = 0;
                for device in self.presence.devices(uid) {
                    if device_id.as_ref().is_none_or(|id| *id == device.device_id) {
                        self.downlink.send(Downcall::Close {
                            session: device.session,
                            last: last.clone(),
                        });
                        kicked += 1;
                    }
                }
                reply(kicked)
            }
            DirectCall::NoticesDone { notices } => {
                let ticket = Ticket {
                    session: UNANSWERED,
                    req_id: 0,
                    uid: 0,
                    client_msg_id: None,
                    received: Instant::now(),
                };
                self.write(ticket, WriteOp::NoticesDone { notices });
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
            .expire(now, |session, uid| presence.is_online(session, uid), due);
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

    fn went_offline(&self, uid: u64, device: crate::presence::Device) {
        self.tell_directory(|| PresenceEvent::Offline {
            uid,
            device_id: device.device_id,
        });
    }

    /// Tells the presence directory, if there is one (the event is only
    /// built then: logins without Redis copy nothing).
    pub(crate) fn tell_directory(&self, event: impl FnOnce() -> PresenceEvent) {
        if let Some(directory) = &self.directory {
            // Unbounded, and the keeper drains it even while Redis is down.
            let _ = directory.send(event());
        }
    }

    /// Every device of `uids` but `origin` (the session that caused it),
    /// with its user.
    pub(crate) fn devices_of(&self, uids: [u64; 2], origin: SessionId) -> Vec<(u64, SessionId)> {
        uids.iter()
            .flat_map(|uid| {
                self.presence
                    .devices(*uid)
                    .iter()
                    .map(|d| (*uid, d.session))
            })
            .filter(|(_, s)| *s != origin)
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

#[cfg(test)]
mod tests {
    //! The pipeline alone: upcalls in, downcalls and queued jobs out, with
    //! the writer and the readers played by the test.

    use bytes::BytesMut;
    use crossbeam_channel::Receiver;
    use parking_lot::Mutex;
    use protocol::pb;

    use super::*;
    use crate::sequencer::Outcome;
    use crate::store::StoreError;

    const SECRET: &[u8] = b"pipeline-test-secret";

    /// The gateway, as the pipeline sees it: every downcall, in order.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Downcall>>);

    impl Downlink for Recorder {
        fn send(&self, call: Downcall) {
            self.0.lock().push(call);
        }
        fn flush(&self) {}
    }

    struct Harness {
        pipeline: Pipeline,
        gateway: Arc<Recorder>,
        writes: Receiver<WriteJob<Ticket>>,
        reads: Receiver<ReadJob>,
    }

    fn session(serial: u64) -> SessionId {
        SessionId {
            gateway: 9,
            slot: serial as u32,
            serial,
        }
    }

    fn harness(write_capacity: usize) -> Harness {
        let gateway = Arc::new(Recorder::default());
        let (write_tx, writes) = crossbeam_channel::bounded(write_capacity);
        let (read_tx, reads) = crossbeam_channel::bounded(16);
        let pipeline = Pipeline::new(
            &LogicConfig::default(),
            protocol::DEFAULT_MAX_FRAME,
            Authenticator::new(SECRET),
            None,
            gateway.clone(),
            write_tx,
            read_tx,
            None,
            Arc::new(crate::metrics::LogicMetrics::default()),
        )
        .unwrap();
        Harness {
            pipeline,
            gateway,
            writes,
            reads,
        }
    }

    /// A harness with user 1 logged in on one session, its answers taken.
    fn with_one_user(write_capacity: usize) -> (Harness, SessionId) {
        let mut h = harness(write_capacity);
        let me = session(1);
        h.logged_in(me, 1, "phone");
        h.said();
        (h, me)
    }

    impl Harness {
        fn login(&mut self, session: SessionId, uid: u64, device: &str, token: String) {
            self.pipeline.handle(Upcall::Login {
                session,
                req_id: 1,
                login: pb::LoginReq {
                    uid,
                    token,
                    device_id: device.into(),
                    platform: pb::Platform::Mobile as i32,
                },
            });
        }

        fn logged_in(&mut self, session: SessionId, uid: u64, device: &str) {
            let token = protocol::token::mint(SECRET, uid, runtime::clock::unix_secs() + 60);
            self.login(session, uid, device, token);
        }

        fn request(&mut self, session: SessionId, uid: u64, req_id: u64, body: Body) {
            self.pipeline.handle(Upcall::Request {
                session,
                uid,
                frame: Frame {
                    req_id,
                    body: Some(body),
                },
            });
        }

        /// The downcalls so far, taken.
        fn said(&self) -> Vec<Downcall> {
            std::mem::take(&mut *self.gateway.0.lock())
        }
    }

    fn decode(bytes: &Bytes) -> Frame {
        let mut buf = BytesMut::from(bytes.as_ref());
        FrameCodec::default().decode(&mut buf).unwrap().unwrap()
    }

    /// The frames written to `to`, decoded.
    fn frames_to(calls: &[Downcall], to: SessionId) -> Vec<Frame> {
        calls
            .iter()
            .filter_map(|call| match call {
                Downcall::Frame { session, frame } if *session == to => Some(decode(frame)),
                _ => None,
            })
            .collect()
    }

    fn error_code(frame: &Frame) -> ErrorCode {
        match &frame.body {
            Some(Body::Error(e)) => ErrorCode::try_from(e.code).unwrap(),
            other => panic!("not an error: {other:?}"),
        }
    }

    fn send_req(to_uid: u64, id: &str) -> Body {
        pb::SendReq {
            to_uid,
            client_msg_id: id.into(),
            content_type: 1,
            content: b"hi".to_vec(),
        }
        .into()
    }

    #[test]
    fn a_bad_token_closes_with_auth_failed_and_a_second_device_login_kicks_the_first() {
        let mut h = harness(16);
        h.login(session(1), 7, "phone", "7.1.forged".into());
        let calls = h.said();
        let [
            Downcall::Close {
                session: s,
                last: Some(last),
            },
        ] = &calls[..]
        else {
            panic!("{calls:?}")
        };
        assert_eq!(*s, session(1));
        assert_eq!(error_code(&decode(last)), ErrorCode::AuthFailed);

        h.logged_in(session(2), 7, "phone");
        assert!(matches!(
            &h.said()[..],
            [Downcall::LoginAccepted {
                uid: 7,
                req_id: 1,
                ..
            }]
        ));
        h.logged_in(session(3), 7, "phone");
        let calls = h.said();
        let kicked = calls
            .iter()
            .find_map(|call| match call {
                Downcall::Close { session: s, last } if *s == session(2) => last.clone(),
                _ => None,
            })
            .expect("the replaced session is closed");
        assert!(matches!(decode(&kicked).body, Some(Body::Kick(_))));
    }

    #[test]
    fn a_session_closed_while_its_login_was_accepted_goes_offline() {
        let mut h = harness(16);
        let phone = session(1);
        // The gateway closed the session before LoginAccepted reached it:
        // its Closed names the uid the login was for.
        h.logged_in(phone, 7, "phone");
        assert_eq!(h.pipeline.presence.devices(7).len(), 1);
        h.pipeline.handle(Upcall::Closed {
            session: phone,
            uid: Some(7),
        });
        assert!(h.pipeline.presence.devices(7).is_empty());
        // A close naming another user, or a session replaced by a later
        // login of the same device, leaves the device online.
        let tablet = session(2);
        h.logged_in(tablet, 7, "tablet");
        h.pipeline.handle(Upcall::Closed {
            session: tablet,
            uid: Some(8),
        });
        let again = session(3);
        h.logged_in(again, 7, "tablet");
        h.pipeline.handle(Upcall::Closed {
            session: tablet,
            uid: Some(7),
        });
        let online: Vec<SessionId> = h
            .pipeline
            .presence
            .devices(7)
            .iter()
            .map(|d| d.session)
            .collect();
        assert_eq!(online, vec![again]);
    }

    #[test]
    fn a_send_is_answered_once_durable_with_its_retry_and_pushed_to_every_other_device() {
        let mut h = harness(16);
        let (alice_phone, alice_pc, bob) = (session(1), session(2), session(3));
        h.logged_in(alice_phone, 1, "phone");
        h.logged_in(alice_pc, 1, "pc");
        h.logged_in(bob, 2, "phone");
        h.said();

        h.request(alice_phone, 1, 10, send_req(2, "m1"));
        h.request(alice_phone, 1, 11, send_req(2, "m1"));
        assert!(h.said().is_empty(), "nothing answered before the commit");
        let job = h.writes.try_recv().expect("one write queued");
        assert!(h.writes.try_recv().is_err(), "the retry waits on the first");
        assert!(matches!(&job.op, WriteOp::Send { from: 1, to: 2, .. }));

        let message = pb::Message {
            msg_id: 500,
            from_uid: 1,
            to_uid: 2,
            seq: 1,
            client_msg_id: "m1".into(),
            content_type: 1,
            content: b"hi".to_vec(),
            server_time_ms: 5,
        };
        h.pipeline.on_committed(vec![(
            job.ticket,
            Ok(Outcome::Sent {
                message,
                duplicate: false,
            }),
        )]);
        let calls = h.said();
        let answers = frames_to(&calls, alice_phone);
        let duplicates: Vec<(u64, bool)> = answers
            .iter()
            .map(|f| match &f.body {
                Some(Body::SendResp(r)) => (f.req_id, r.duplicate),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(duplicates, vec![(10, false), (11, true)]);
        for device in [bob, alice_pc] {
            let pushes = frames_to(&calls, device);
            assert!(
                matches!(
                    &pushes[..],
                    [Frame {
                        body: Some(Body::Push(_)),
                        ..
                    }]
                ),
                "{pushes:?}"
            );
        }
        assert_eq!(h.pipeline.acks.pending(), 2, "each push waits for its ack");
        h.pipeline.handle(Upcall::PushAck {
            session: bob,
            uid: 2,
            msg_id: 500,
        });
        assert_eq!(h.pipeline.acks.pending(), 1);

        // Later: a retry is answered from the recent ids, nothing queued.
        h.request(alice_phone, 1, 12, send_req(2, "m1"));
        assert!(h.writes.try_recv().is_err());
        let answers = frames_to(&h.said(), alice_phone);
        assert!(matches!(
            &answers[0].body,
            Some(Body::SendResp(pb::SendResp {
                duplicate: true,
                msg_id: 500,
                ..
            }))
        ));
    }

    #[test]
    fn a_failed_commit_refuses_the_send_and_its_waiting_retry_and_a_new_try_is_queued() {
        let mut h = harness(16);
        h.logged_in(session(1), 1, "phone");
        h.request(session(1), 1, 10, send_req(2, "m1"));
        h.request(session(1), 1, 11, send_req(2, "m1"));
        let job = h.writes.try_recv().unwrap();
        h.said();
        h.pipeline.on_committed(vec![(
            job.ticket,
            Err(StoreError::Unavailable("disk on fire".into())),
        )]);
        let codes: Vec<ErrorCode> = frames_to(&h.said(), session(1))
            .iter()
            .map(error_code)
            .collect();
        assert_eq!(codes, vec![ErrorCode::Unavailable, ErrorCode::Unavailable]);
        h.request(session(1), 1, 12, send_req(2, "m1"));
        assert!(h.writes.try_recv().is_ok(), "the retry is a new write");
    }

    #[test]
    fn what_the_contract_refuses_is_answered_at_once_and_queues_nothing() {
        let (mut h, me) = with_one_user(16);
        let cases: Vec<(Body, ErrorCode)> = vec![
            (send_req(1, "self"), ErrorCode::InvalidArgument),
            (send_req(0, "nobody"), ErrorCode::InvalidArgument),
            (send_req(2, ""), ErrorCode::InvalidArgument),
            (send_req(2, &"x".repeat(65)), ErrorCode::InvalidArgument),
            (
                pb::HistoryReq {
                    peer_uid: 0,
                    ..Default::default()
                }
                .into(),
                ErrorCode::InvalidArgument,
            ),
            (
                pb::ReadReq {
                    peer_uid: 1,
                    seq: 1,
                }
                .into(),
                ErrorCode::InvalidArgument,
            ),
            (
                pb::ProfileReq {
                    uids: (0..101).collect(),
                }
                .into(),
                ErrorCode::InvalidArgument,
            ),
            (
                pb::SetProfileReq {
                    nickname: "n".repeat(65),
                    avatar_url: String::new(),
                }
                .into(),
                ErrorCode::InvalidArgument,
            ),
            (pb::Ping {}.into(), ErrorCode::BadFrame),
        ];
        for (n, (body, code)) in cases.into_iter().enumerate() {
            h.request(me, 1, n as u64 + 1, body);
            let frames = frames_to(&h.said(), me);
            assert_eq!(frames.len(), 1, "case {n}");
            assert_eq!(frames[0].req_id, n as u64 + 1);
            assert_eq!(error_code(&frames[0]), code, "case {n}");
        }
        h.pipeline.handle(Upcall::Request {
            session: me,
            uid: 1,
            frame: Frame {
                req_id: 99,
                body: None,
            },
        });
        assert_eq!(
            error_code(&frames_to(&h.said(), me)[0]),
            ErrorCode::BadFrame
        );
        assert!(h.writes.try_recv().is_err());
        assert!(h.reads.try_recv().is_err());
    }

    #[test]
    fn reads_go_to_the_readers_and_a_full_writer_queue_is_unavailable() {
        let (mut h, me) = with_one_user(1);
        h.request(
            me,
            1,
            5,
            pb::SyncReq {
                cursor: 0,
                limit: 0,
            }
            .into(),
        );
        let job = h.reads.try_recv().expect("a read job");
        assert_eq!((job.session, job.req_id, job.uid), (me, 5, 1));
        assert!(matches!(job.query, ReadQuery::Sync(_)));

        h.request(me, 1, 6, send_req(2, "a"));
        h.request(me, 1, 7, send_req(2, "b"));
        let frames = frames_to(&h.said(), me);
        assert_eq!(frames.len(), 1, "the first waits for its commit");
        assert_eq!(
            (frames[0].req_id, error_code(&frames[0])),
            (7, ErrorCode::Unavailable)
        );
        // The refused send left no pending entry: its retry is queued anew.
        drop(h.writes.try_recv());
        h.request(me, 1, 8, send_req(2, "b"));
        assert!(h.writes.try_recv().is_ok());
    }
}
