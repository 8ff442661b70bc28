//! The pipeline thread: the logic tier's front door.
//!
//! ```text
//!  Upcall ──▶ validate ─▶ content filter ─▶ per-user rate limit ─▶ recent-id dedup
//!               │                                                     │
//!               │ reads (history, sync, conversations, profiles)      │ writes (send, read, delete, profile)
//!               ▼                                                     ▼
//!        reader threads ──Downcall──▶ client              writer thread (group commit)
//!                                                                     │ Committed
//!                                                                     ▼
//!                                 SendResp / ReadResp, then push, ReadNotice, offline hook,
//!                                 and the ack timer for every push
//! ```
//!
//! This thread owns presence, the recent-id cache, the rate limits and the
//! ack tracker; it never touches storage, so it never waits on a disk.
//! Responses to writes are sent only when the writer reports the commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use protocol::body::{error_frame, event_frame, kick_frame};
use protocol::link::{Downcall, Downlink, SessionId, Upcall};
use protocol::rate::{Admit, TokenBucket};
use protocol::{Body, ErrorCode, Frame, FrameCodec, pb};

use crate::acks::{AckPolicy, AckTracker, Due};
use crate::auth::{Authenticator, unix_secs};
use crate::cache::keeper::{self, PresenceEvent};
use crate::cache::link::Shared;
use crate::cache::{Cache, CacheWriter};
use crate::config::{LogicConfig, RedisConfig, StorageConfig};
use crate::dedup::{Recent, RecentIds};
use crate::doorbell::{Bell, Doorbell};
use crate::filter::ContentFilter;
use crate::metrics::{Counter, Gauge, LogicMetrics};
use crate::offline::{LogNotifier, OfflineNotifier, WebhookNotifier};
use crate::presence::{Device, Presence};
use crate::reader::{self, ReadJob, ReadQuery};
use crate::store::{Backend, StoreError};
use crate::writer::{
    self, Committed, GroupCommit, Outcome, ReadOutcome, Sequencer, WriteJob, WriteOp,
};

/// Longest client_msg_id, nickname (in characters) and avatar_url, and the
/// most uids per ProfileReq: the contract's limits.
const MAX_CLIENT_MSG_ID: usize = crate::dedup::MAX_ID;
const MAX_NICKNAME_CHARS: usize = 64;
const MAX_AVATAR_URL: usize = 512;
const MAX_PROFILE_UIDS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot start a logic thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Who to answer when a write is committed.
pub struct Ticket {
    session: SessionId,
    req_id: u64,
    uid: u64,
    /// For sends: the client_msg_id, to settle the recent-id entry.
    client_msg_id: Option<String>,
}

/// Where the gateway's upcalls arrive: a bounded queue (full: the gateway
/// answers UNAVAILABLE at once) and the doorbell its senders ring once per
/// batch (see `doorbell.rs`).
pub struct Inbox {
    pub upcalls: Receiver<Upcall>,
    pub doorbell: Doorbell,
}

impl Inbox {
    /// The queue, the inbox's end of it, and the bell to ring after sending.
    pub fn bounded(capacity: usize) -> (Sender<Upcall>, Bell, Inbox) {
        let (tx, upcalls) = crossbeam_channel::bounded(capacity);
        let doorbell = Doorbell::new();
        (tx, doorbell.bell(), Inbox { upcalls, doorbell })
    }
}

/// Most upcalls the pipeline handles before it looks at commits and timers
/// again.
const UPCALLS_PER_ROUND: usize = 256;

pub struct LogicHandle {
    threads: Vec<JoinHandle<()>>,
    metrics: Arc<LogicMetrics>,
}

impl LogicHandle {
    /// The tier's metrics, for the admin page.
    pub fn metrics(&self) -> Arc<LogicMetrics> {
        self.metrics.clone()
    }

    /// Waits for the logic tier to finish: it does once every gateway is
    /// gone (the upcall queue is disconnected) and every write it accepted
    /// is committed and answered.
    pub fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                log::error!("a logic thread panicked");
            }
        }
    }
}

/// Opens the configured storage backend.
pub fn open_backend(storage: &StorageConfig) -> Result<Arc<dyn Backend>, StartError> {
    match storage.backend.as_str() {
        "sqlite" => {
            let synchronous = crate::store::sqlite::Synchronous::parse(&storage.sqlite_synchronous)
                .ok_or_else(|| {
                    StartError::Config(
                        "storage.sqlite_synchronous must be \"full\" or \"normal\"".into(),
                    )
                })?;
            let store = crate::store::journal::Journaled::open(
                std::path::Path::new(&storage.data_dir),
                synchronous,
            )?;
            Ok(Arc::new(store))
        }
        "mysql" => Ok(Arc::new(crate::store::mysql::MySql::open(
            &storage.mysql_urls,
        )?)),
        other => Err(StartError::Config(format!(
            "storage.backend must be \"sqlite\" or \"mysql\", not {other:?}"
        ))),
    }
}

/// Starts the logic tier: the pipeline, the writer and the readers.
pub fn start(
    config: &LogicConfig,
    redis: &RedisConfig,
    max_frame: usize,
    auth: Authenticator,
    backend: Arc<dyn Backend>,
    inbox: Inbox,
    downlink: Arc<dyn Downlink>,
) -> Result<LogicHandle, StartError> {
    let mut writer_store = backend.writer()?;
    let recovered = writer_store.recover()?;
    log::info!(
        "storage recovered: last msg_id {}, last change version {}",
        recovered.max_msg_id,
        recovered.max_version
    );
    let sequencer = Sequencer::new(recovered, config.node_id, config.row_cache);
    let (write_tx, write_rx) = crossbeam_channel::bounded(config.queue_capacity);
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let policy = GroupCommit {
        max_batch: config.group_commit_max,
        window: Duration::from_micros(config.group_commit_window_us),
    };
    let metrics = Arc::new(LogicMetrics::default());
    let mut threads = Vec::new();

    // Redis: the keeper, the writer's side of the caches, the readers' side.
    let (directory, cache_writer, reader_caches) = if redis.enabled() {
        let shared = Arc::new(
            Shared::new(redis, metrics.clone()).map_err(|e| StartError::Config(e.to_string()))?,
        );
        let (directory, keeper) =
            keeper::start(shared.clone(), config.node_id, redis.advertise.clone())?;
        threads.push(keeper);
        let (rebuild_tx, rebuild_rx) = crossbeam_channel::bounded(4096);
        let writer = CacheWriter::new(
            Cache::new(shared.clone(), None),
            backend.reader()?,
            rebuild_rx,
        );
        let readers: Vec<Cache> = (0..config.reader_threads)
            .map(|_| Cache::new(shared.clone(), Some(rebuild_tx.clone())))
            .collect();
        (Some(directory), Some(writer), readers)
    } else {
        let readers = (0..config.reader_threads)
            .map(|_| Cache::disabled())
            .collect();
        (None, None, readers)
    };

    threads.push(writer::spawn(
        metrics.clone(),
        writer_store,
        sequencer,
        policy,
        write_rx,
        writer::Done {
            queue: done_tx,
            bell: inbox.doorbell.bell(),
        },
        cache_writer,
    )?);

    let readers = reader_caches
        .into_iter()
        .map(|cache| Ok((backend.reader()?, cache)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let (read_tx, read_rx) = crossbeam_channel::bounded(config.queue_capacity);
    threads.extend(reader::spawn(
        readers,
        read_rx,
        downlink.clone(),
        max_frame,
    )?);

    let offline: Arc<dyn OfflineNotifier> = if config.offline_webhook.is_empty() {
        Arc::new(LogNotifier)
    } else {
        Arc::new(
            WebhookNotifier::start(&config.offline_webhook, 65_536)
                .map_err(|e| StartError::Config(e.to_string()))?,
        )
    };
    let epoch = Instant::now();
    let mut pipeline = Pipeline {
        auth,
        codec: FrameCodec::new(max_frame),
        presence: Presence::default(),
        directory,
        downlink,
        writes: Some(write_tx),
        reads: read_tx,
        recent: RecentIds::new(config.recent_ids),
        filter: ContentFilter::new(&config.content_filter).map_err(StartError::Config)?,
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
        epoch,
        metrics: metrics.clone(),
    };
    threads.push(
        thread::Builder::new()
            .name("im-logic".into())
            .spawn(move || pipeline.run(inbox, done_rx))?,
    );
    Ok(LogicHandle { threads, metrics })
}

struct Pipeline {
    auth: Authenticator,
    codec: FrameCodec,
    presence: Presence,
    /// The Redis presence directory's keeper, when Redis is configured.
    directory: Option<Sender<PresenceEvent>>,
    downlink: Arc<dyn Downlink>,
    /// To the writer; dropped at shutdown so the writer can finish.
    writes: Option<Sender<WriteJob<Ticket>>>,
    reads: Sender<ReadJob>,
    recent: RecentIds<Ticket>,
    filter: ContentFilter,
    /// Per-user send rate limits.
    limits: HashMap<u64, TokenBucket>,
    acks: AckTracker,
    offline: Arc<dyn OfflineNotifier>,
    config: LogicConfig,
    /// The ack timers' clock starts here.
    epoch: Instant,
    metrics: Arc<LogicMetrics>,
}

impl Pipeline {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn run(&mut self, inbox: Inbox, committed: Receiver<Committed<Ticket>>) {
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

    fn handle(&mut self, call: Upcall) {
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
            } => self.request(session, uid, frame),
        }
    }

    fn login(&mut self, session: SessionId, req_id: u64, login: pb::LoginReq) {
        if let Err(e) = self.auth.verify(&login.token, login.uid, unix_secs()) {
            log::info!("login refused for uid {}: {e}", login.uid);
            self.metrics.add(Counter::LoginsRefused, 1);
            let last = self.encode(&error_frame(
                req_id,
                ErrorCode::AuthFailed,
                "authentication failed",
            ));
            self.downlink.send(Downcall::Close { session, last });
            return;
        }
        let device = Device {
            device_id: login.device_id,
            platform: login.platform,
            session,
            login_ms: unix_secs() * 1000,
        };
        self.tell_directory(|| PresenceEvent::Online {
            uid: login.uid,
            device: device.clone(),
        });
        if let Some(replaced) = self.presence.login(login.uid, device) {
            let last = self.encode(&kick_frame("logged in on the same device elsewhere"));
            self.downlink.send(Downcall::Close {
                session: replaced,
                last,
            });
        }
        self.metrics.add(Counter::Logins, 1);
        self.downlink.send(Downcall::LoginAccepted {
            session,
            uid: login.uid,
            req_id,
        });
    }

    fn request(&mut self, session: SessionId, uid: u64, frame: Frame) {
        let req_id = frame.req_id;
        let ticket = Ticket {
            session,
            req_id,
            uid,
            client_msg_id: None,
        };
        let Some(body) = frame.body else {
            return self.fail(&ticket, ErrorCode::BadFrame, "frame has no body");
        };
        match body {
            Body::SendReq(send) => self.send(ticket, send),
            Body::HistoryReq(req) if req.peer_uid == 0 => {
                self.fail(&ticket, ErrorCode::InvalidArgument, "peer_uid is 0")
            }
            Body::HistoryReq(req) => self.read(ticket, ReadQuery::History(req)),
            Body::SyncReq(req) => self.read(ticket, ReadQuery::Sync(req)),
            Body::ConversationsReq(req) => self.read(ticket, ReadQuery::Conversations(req)),
            Body::ProfileReq(req) if req.uids.len() > MAX_PROFILE_UIDS => self.fail(
                &ticket,
                ErrorCode::InvalidArgument,
                "at most 100 uids per profile_req",
            ),
            Body::ProfileReq(req) => self.read(ticket, ReadQuery::Profiles(req)),
            Body::ReadReq(req) if req.peer_uid == 0 || req.peer_uid == uid => self.fail(
                &ticket,
                ErrorCode::InvalidArgument,
                "peer_uid must be another user",
            ),
            Body::ReadReq(req) => self.write(
                ticket,
                WriteOp::Read {
                    owner: uid,
                    peer: req.peer_uid,
                    seq: req.seq,
                },
            ),
            Body::DeleteConversationReq(req) if req.peer_uid == 0 || req.peer_uid == uid => self
                .fail(
                    &ticket,
                    ErrorCode::InvalidArgument,
                    "peer_uid must be another user",
                ),
            Body::DeleteConversationReq(req) => self.write(
                ticket,
                WriteOp::Delete {
                    owner: uid,
                    peer: req.peer_uid,
                },
            ),
            Body::SetProfileReq(req) => {
                if req.nickname.chars().count() > MAX_NICKNAME_CHARS {
                    return self.fail(
                        &ticket,
                        ErrorCode::InvalidArgument,
                        "nickname is over 64 characters",
                    );
                }
                if req.avatar_url.len() > MAX_AVATAR_URL {
                    return self.fail(
                        &ticket,
                        ErrorCode::InvalidArgument,
                        "avatar_url is over 512 bytes",
                    );
                }
                self.write(
                    ticket,
                    WriteOp::SetProfile {
                        uid,
                        nickname: req.nickname,
                        avatar_url: req.avatar_url,
                    },
                )
            }
            other => {
                // The gateway answers Login, Ping and PushAck itself.
                let message = format!("{} is not a request the logic tier serves", other.name());
                self.fail(&ticket, ErrorCode::BadFrame, &message)
            }
        }
    }

    /// Validate, filter, rate-limit, dedup, then hand to the writer.
    fn send(&mut self, mut ticket: Ticket, send: pb::SendReq) {
        let uid = ticket.uid;
        if send.to_uid == 0 || send.to_uid == uid {
            return self.fail(
                &ticket,
                ErrorCode::InvalidArgument,
                "to_uid must be another user",
            );
        }
        if send.client_msg_id.is_empty() || send.client_msg_id.len() > MAX_CLIENT_MSG_ID {
            return self.fail(
                &ticket,
                ErrorCode::InvalidArgument,
                "client_msg_id must be 1 to 64 bytes",
            );
        }
        if send.content.len() > self.config.max_content_bytes {
            return self.fail(
                &ticket,
                ErrorCode::InvalidArgument,
                "content is over the size limit",
            );
        }
        if self.filter.rejects(&send.content) {
            return self.fail(
                &ticket,
                ErrorCode::ContentRejected,
                "refused by the content filter",
            );
        }
        if self.limits.len() > 1_000_000 {
            // Bounded: forgetting every bucket only grants a fresh burst.
            self.limits.clear();
        }
        let (rate, burst) = (self.config.messages_per_sec, self.config.message_burst);
        let now = self.now_ms();
        let bucket = self
            .limits
            .entry(uid)
            .or_insert_with(|| TokenBucket::full(burst, now));
        if bucket.take(now, rate, burst) != Admit::Yes {
            return self.fail(
                &ticket,
                ErrorCode::RateLimited,
                "too many messages, retry later",
            );
        }
        match self.recent.get_mut(uid, &send.client_msg_id) {
            Some(Recent::Done {
                msg_id,
                seq,
                server_time_ms,
            }) => {
                self.metrics.add(Counter::Duplicates, 1);
                let resp = pb::SendResp {
                    msg_id: *msg_id,
                    seq: *seq,
                    server_time_ms: *server_time_ms,
                    duplicate: true,
                };
                return self.reply(&ticket, resp.into());
            }
            Some(Recent::Pending(waiters)) => {
                waiters.push(ticket);
                return;
            }
            None => {}
        }
        self.recent.insert_pending(uid, &send.client_msg_id);
        ticket.client_msg_id = Some(send.client_msg_id.clone());
        let op = WriteOp::Send {
            from: uid,
            to: send.to_uid,
            client_msg_id: send.client_msg_id,
            content_type: send.content_type,
            content: send.content,
        };
        self.write(ticket, op);
    }

    fn write(&mut self, ticket: Ticket, op: WriteOp) {
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

    fn read(&mut self, ticket: Ticket, query: ReadQuery) {
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

    fn on_committed(&mut self, done: Committed<Ticket>) {
        for (ticket, result) in done {
            match result {
                Ok(Outcome::Sent { message, duplicate }) => {
                    self.on_sent(ticket, message, duplicate)
                }
                Ok(Outcome::Read(read)) => {
                    let resp = pb::ReadResp {
                        unread: read.unread,
                        total_unread: read.total_unread,
                    };
                    self.reply(&ticket, resp.into());
                    self.notify_read(&ticket, &read);
                }
                Ok(Outcome::Deleted(read)) => {
                    self.reply(&ticket, pb::DeleteConversationResp {}.into());
                    self.notify_read(&ticket, &read);
                }
                Ok(Outcome::ProfileSet) => self.reply(&ticket, pb::SetProfileResp {}.into()),
                Err(_) => {
                    self.settle_failed(&ticket);
                    self.fail(
                        &ticket,
                        ErrorCode::Unavailable,
                        "storage unavailable, retry later",
                    );
                }
            }
        }
    }

    /// A send that will not be stored: retries waiting on it fail too.
    fn settle_failed(&mut self, ticket: &Ticket) {
        let Some(client_msg_id) = &ticket.client_msg_id else {
            return;
        };
        if let Some(Recent::Pending(waiters)) = self.recent.remove(ticket.uid, client_msg_id) {
            for waiter in waiters {
                self.fail(
                    &waiter,
                    ErrorCode::Unavailable,
                    "storage unavailable, retry later",
                );
            }
        }
    }

    fn on_sent(&mut self, ticket: Ticket, message: pb::Message, duplicate: bool) {
        let resp = pb::SendResp {
            msg_id: message.msg_id,
            seq: message.seq,
            server_time_ms: message.server_time_ms,
            duplicate,
        };
        let waiters = self.recent.complete(
            message.from_uid,
            &message.client_msg_id,
            message.msg_id,
            message.seq,
            message.server_time_ms,
        );
        self.reply(&ticket, resp.into());
        for waiter in waiters {
            self.reply(
                &waiter,
                pb::SendResp {
                    duplicate: true,
                    ..resp
                }
                .into(),
            );
        }
        if !duplicate {
            self.fan_out(ticket.session, message);
        }
    }

    /// Pushes a stored message to every online device of the recipient and
    /// to the sender's other devices, and tracks each push until its ack.
    fn fan_out(&mut self, origin: SessionId, message: pb::Message) {
        let recipient_online = !self.presence.devices(message.to_uid).is_empty();
        if !recipient_online {
            self.metrics.add(Counter::OfflineNotifications, 1);
            self.offline.notify(&message);
        }
        let msg_id = message.msg_id;
        let (to, from) = (message.to_uid, message.from_uid);
        let Some(frame) = self.encode(&event_frame(pb::Push {
            message: Some(message),
        })) else {
            return;
        };
        let targets: Vec<SessionId> = self
            .presence
            .devices(to)
            .iter()
            .chain(self.presence.devices(from))
            .map(|d| d.session)
            .filter(|s| *s != origin)
            .collect();
        let now = self.now_ms();
        self.metrics.add(Counter::Pushes, targets.len() as u64);
        for session in targets {
            self.downlink.send(Downcall::Frame {
                session,
                frame: frame.clone(),
            });
            self.acks.pushed(session, msg_id, frame.clone(), now);
        }
    }

    /// A read position moved: the peer's devices get a read receipt, the
    /// reader's other devices learn it too.
    fn notify_read(&mut self, ticket: &Ticket, read: &ReadOutcome) {
        if !read.changed {
            return;
        }
        let notice = pb::ReadNotice {
            reader_uid: read.owner,
            peer_uid: read.peer,
            seq: read.seq,
        };
        let Some(frame) = self.encode(&event_frame(notice)) else {
            return;
        };
        let targets: Vec<SessionId> = self
            .presence
            .devices(read.peer)
            .iter()
            .chain(self.presence.devices(read.owner))
            .map(|d| d.session)
            .filter(|s| *s != ticket.session)
            .collect();
        self.metrics.add(Counter::ReadNotices, targets.len() as u64);
        for session in targets {
            self.downlink.send(Downcall::Frame {
                session,
                frame: frame.clone(),
            });
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
    fn tell_directory(&self, event: impl FnOnce() -> PresenceEvent) {
        if let Some(directory) = &self.directory {
            // Unbounded, and the keeper drains it even while Redis is down.
            let _ = directory.send(event());
        }
    }

    fn reply(&self, ticket: &Ticket, body: Body) {
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

    fn fail(&self, ticket: &Ticket, code: ErrorCode, message: &str) {
        self.metrics.error(code);
        if let Some(frame) = self.encode(&error_frame(ticket.req_id, code, message)) {
            self.downlink.send(Downcall::Frame {
                session: ticket.session,
                frame,
            });
        }
    }

    fn encode(&self, frame: &Frame) -> Option<Bytes> {
        match self.codec.encode_to_bytes(frame) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                log::error!("cannot encode a frame: {e}");
                None
            }
        }
    }
}
