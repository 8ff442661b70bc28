//! A worker: one thread, one `mio::Poll`, its sessions in a `Slab`, one
//! timer wheel for all their deadlines.
//!
//! Each turn of the loop: wait for readiness (or the next deadline), read
//! and handle what arrived, take new connections and the logic tier's
//! downcalls, fire due timers, then flush every session that has something
//! to write. Writes are batched per turn, so a hundred frames for one socket
//! cost one `writev`; so are wake-ups of the logic tier (`Uplink::flush`
//! after each phase of the turn, not one per frame). Nothing in the loop
//! blocks: the uplink is `try_send`, the downlink is drained without
//! waiting, and a session that cannot keep up is closed rather than waited
//! for.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use protocol::body::{error_frame, kick_frame};
use protocol::link::{Downcall, SessionId, Upcall};
use protocol::{Body, ErrorCode, Frame, FrameCodec, Sender, pb};
use runtime::clock::unix_ms;
use runtime::rate::Admit;
use runtime::timer::TimerWheel;
use slab::Slab;

use crate::abuse::SourceLimits;
use crate::config::GatewayConfig;
use crate::link::{Inbox, Uplink, UplinkError};
use crate::metrics::{Block, CloseReason, Counter, Gauge};
use crate::session::{Fill, ReadUntil, Session, State};
use crate::tls::TlsAcceptor;
use crate::transport::{Kind, Transport};
use crate::websocket::{WsPolicy, WsStream};

/// The waker's token; sessions use their slab key, which never gets this high.
pub const WAKER_TOKEN: Token = Token(usize::MAX);

/// Bytes one session may read per turn before the others get theirs.
const READ_BUDGET: usize = 128 * 1024;
/// The worker's shared read area.
const SCRATCH_LEN: usize = 64 * 1024;
/// How long a closing session may take to flush its last frame and see the
/// peer's end-of-stream before the socket is dropped anyway.
const LINGER_MS: u64 = 1_000;
/// Resolution of the timer wheel; deadlines here are seconds long.
const TICK_MS: u64 = 50;
/// 4096 slots of 50 ms: one rotation is 204 s, longer than any deadline here.
const WHEEL_SLOTS: usize = 4096;

/// Why a timer entry was set. Entries are never cancelled; each checks, when
/// it fires, whether its session and reason still stand.
#[derive(Debug, Clone, Copy)]
enum TimerKind {
    Login,
    Heartbeat,
    Linger,
}

#[derive(Debug, Clone, Copy)]
struct Timer {
    slot: usize,
    serial: u64,
    kind: TimerKind,
}

/// What a worker needs from the outside world, handed over at start.
pub struct WorkerParts {
    /// The gateway this worker belongs to (`SessionId::gateway`).
    pub gateway: u32,
    pub id: u16,
    pub poll: Poll,
    pub accepted: Receiver<(TcpStream, Kind)>,
    /// TLS for connections from the TLS (and wss) listener, if there is one.
    pub tls: Option<Arc<TlsAcceptor>>,
    /// What the WebSocket listener accepts, if there is one.
    pub ws: Option<Arc<WsPolicy>>,
    pub inbox: Inbox,
    pub uplink: Arc<dyn Uplink>,
    pub metrics: Arc<Block>,
    pub shutdown: Arc<AtomicBool>,
    /// Connections open across the gateway, shared with the listener.
    pub open_connections: Arc<AtomicUsize>,
    /// Failed logins per source address, shared by every worker.
    pub sources: Arc<SourceLimits>,
}

pub struct Worker {
    gateway: u32,
    id: u16,
    poll: Poll,
    sessions: Slab<Session>,
    timers: TimerWheel<Timer>,
    codec: FrameCodec,
    config: Arc<GatewayConfig>,
    accepted: Receiver<(TcpStream, Kind)>,
    tls: Option<Arc<TlsAcceptor>>,
    ws: Option<Arc<WsPolicy>>,
    inbox: Inbox,
    uplink: Arc<dyn Uplink>,
    metrics: Arc<Block>,
    shutdown: Arc<AtomicBool>,
    open_connections: Arc<AtomicUsize>,
    /// Failed logins per source address (shared by every worker).
    sources: Arc<SourceLimits>,
    /// The worker's clock starts here; timers run in milliseconds since.
    epoch: Instant,
    /// Shared read area: only a partial frame's bytes are copied to a session.
    scratch: Box<[u8]>,
    /// Sessions with frames queued this turn, flushed at its end.
    dirty: Vec<usize>,
    /// Sessions to read again next turn: their budget ran out, or their
    /// login was just accepted with input waiting.
    read_again: Vec<usize>,
    /// `Closed` upcalls the uplink refused; retried every turn, because the
    /// logic tier must never keep a ghost device.
    unsent_closes: VecDeque<Upcall>,
    /// Serial numbers: the worker id in the top 16 bits
    /// (`SessionId::first_serial`) keeps them unique across workers.
    next_serial: u64,
    /// When shutdown began (worker clock), once it has.
    draining_since: Option<u64>,
}

impl Worker {
    pub fn new(parts: WorkerParts, config: Arc<GatewayConfig>) -> Worker {
        let epoch = Instant::now();
        Worker {
            gateway: parts.gateway,
            id: parts.id,
            poll: parts.poll,
            sessions: Slab::new(),
            timers: TimerWheel::new(TICK_MS, WHEEL_SLOTS, 0),
            codec: FrameCodec::new(config.max_frame),
            accepted: parts.accepted,
            tls: parts.tls,
            ws: parts.ws,
            inbox: parts.inbox,
            uplink: parts.uplink,
            metrics: parts.metrics,
            shutdown: parts.shutdown,
            open_connections: parts.open_connections,
            sources: parts.sources,
            epoch,
            scratch: vec![0; SCRATCH_LEN].into_boxed_slice(),
            dirty: Vec::new(),
            read_again: Vec::new(),
            unsent_closes: VecDeque::new(),
            next_serial: SessionId::first_serial(parts.id),
            draining_since: None,
            config,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Runs the event loop until shutdown has drained every session (or the
    /// grace period is over).
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut due = Vec::new();
        let mut flushing = Vec::new();
        let mut reading = Vec::new();
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("worker {}: poll failed: {e}", self.id);
                    break;
                }
            }
            let now = self.now_ms();
            for event in events.iter() {
                if event.token() != WAKER_TOKEN {
                    self.on_event(event, now);
                }
            }
            // The requests just read go to the logic tier before the
            // downcalls below are written out.
            self.uplink.flush();
            // Reset before draining: anything queued from here on wakes us again.
            self.inbox.wake.reset();
            self.retry_closes();
            self.take_connections(now);
            self.take_downcalls(now);

            std::mem::swap(&mut self.read_again, &mut reading);
            for slot in reading.drain(..) {
                if let Some(session) = self.sessions.get_mut(slot) {
                    session.read_pending = false;
                    self.on_readable(slot, now, ReadUntil::WouldBlock);
                }
            }
            // And those read on a second pass, before the writes below.
            self.uplink.flush();

            self.timers.expire(now, &mut due);
            for timer in due.drain(..) {
                self.on_timer(timer, now);
            }

            std::mem::swap(&mut self.dirty, &mut flushing);
            for slot in flushing.drain(..) {
                self.flush(slot);
            }
            // Closes from timers and flushes.
            self.uplink.flush();

            if self.shutdown.load(Ordering::Acquire) && self.drain_for_shutdown(now) {
                break;
            }
        }
        let slots: Vec<usize> = self.sessions.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close(slot, CloseReason::Shutdown, None);
        }
        self.retry_closes();
        self.uplink.flush();
        log::debug!("worker {} stopped", self.id);
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.read_again.is_empty() || !self.dirty.is_empty() || !self.unsent_closes.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = self.now_ms();
        let next = self
            .timers
            .next_deadline()
            .map(|at| Duration::from_millis(at.saturating_sub(now)));
        if self.draining_since.is_some() {
            // While shutting down, look at the clock often.
            return Some(next.map_or(Duration::from_millis(50), |d| {
                d.min(Duration::from_millis(50))
            }));
        }
        next
    }

    /// Returns true when the worker may stop.
    fn drain_for_shutdown(&mut self, now: u64) -> bool {
        let since = match self.draining_since {
            Some(since) => since,
            None => {
                self.draining_since = Some(now);
                let kick = self.encode(&kick_frame("server shutting down"));
                let slots: Vec<usize> = self.sessions.iter().map(|(slot, _)| slot).collect();
                for slot in slots {
                    self.close(slot, CloseReason::Shutdown, kick.clone());
                }
                now
            }
        };
        self.sessions.is_empty() || now >= since + self.config.shutdown_grace_secs * 1000
    }

    fn session_id(&self, slot: usize, serial: u64) -> SessionId {
        SessionId {
            gateway: self.gateway,
            slot: slot as u32,
            serial,
        }
    }

    // ---- connections ------------------------------------------------------

    fn take_connections(&mut self, now: u64) {
        while let Ok((stream, kind)) = self.accepted.try_recv() {
            if self.draining_since.is_some() {
                self.open_connections.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let mut transport = match self.open_transport(stream, kind) {
                Ok(transport) => transport,
                Err(e) => {
                    log::warn!(
                        "worker {}: cannot start a {kind:?} connection: {e}",
                        self.id
                    );
                    self.open_connections.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
            };
            let entry = self.sessions.vacant_entry();
            let slot = entry.key();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(transport.socket(), Token(slot), Interest::READABLE)
            {
                log::warn!("worker {}: cannot register connection: {e}", self.id);
                self.open_connections.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            self.next_serial += 1;
            let serial = self.next_serial;
            entry.insert(Session::new(
                transport,
                serial,
                now,
                self.config.inbound_burst,
            ));
            self.metrics.gauge(Gauge::Connections, 1);
            let deadline = now + self.config.login_timeout_secs * 1000;
            self.timers.schedule(
                deadline,
                Timer {
                    slot,
                    serial,
                    kind: TimerKind::Login,
                },
            );
            // The client may have written before we registered; edge-triggered
            // readiness would not tell us again, so look now.
            self.schedule_read(slot);
        }
    }

    /// The transport a connection from this kind of listener runs on.
    fn open_transport(&self, stream: TcpStream, kind: Kind) -> io::Result<Transport> {
        let tls = |stream| match &self.tls {
            Some(tls) => tls.accept(stream).map(Box::new),
            None => Err(io::Error::other("no TLS configured")),
        };
        Ok(match kind {
            Kind::Plain => Transport::Plain(stream),
            Kind::Tls => Transport::Tls(tls(stream)?),
            Kind::Ws { tls: secure } => {
                let policy = self
                    .ws
                    .clone()
                    .ok_or_else(|| io::Error::other("no WebSocket configured"))?;
                let inner = if secure {
                    Transport::Tls(tls(stream)?)
                } else {
                    Transport::Plain(stream)
                };
                Transport::Ws(Box::new(WsStream::new(inner, policy)))
            }
        })
    }

    fn on_event(&mut self, event: &Event, now: u64) {
        let slot = event.token().0;
        if !self.sessions.contains(slot) {
            return;
        }
        if event.is_writable() {
            self.mark_dirty(slot);
        }
        if event.is_read_closed() || event.is_error() {
            self.on_readable(slot, now, ReadUntil::WouldBlock);
        } else if event.is_readable() {
            self.on_readable(slot, now, ReadUntil::ShortRead);
        }
    }

    /// Handles frames already buffered, then reads more and handles those.
    fn on_readable(&mut self, slot: usize, now: u64, until: ReadUntil) {
        if !self.handle_buffered(slot, now) {
            return;
        }
        let Some(session) = self.sessions.get_mut(slot) else {
            return;
        };
        match session.state {
            // Input waits in the kernel until the logic tier answers.
            State::Authenticating { .. } => return,
            State::Closing => return self.discard_input(slot),
            State::AwaitingLogin | State::Active { .. } => {}
        }
        let (read, fill) = session.fill(&mut self.scratch, READ_BUDGET, until);
        self.metrics.add(Counter::BytesIn, read as u64);
        if session.transport.wants_write() {
            // TLS has records to send (its handshake): flush watches for room.
            self.mark_dirty(slot);
        }
        if !self.handle_buffered(slot, now) {
            return;
        }
        match fill {
            Fill::Drained => {}
            Fill::BudgetSpent => self.schedule_read(slot),
            Fill::Eof => self.close(slot, CloseReason::PeerClosed, None),
            Fill::Failed(e) => {
                log::debug!("worker {}: read error: {e}", self.id);
                let reason = match crate::tls::failure(&e) {
                    Some(failure) => {
                        self.metrics.tls_failed(failure);
                        CloseReason::TlsError
                    }
                    None => CloseReason::IoError,
                };
                self.close(slot, reason, None);
            }
        }
    }

    /// Handles every whole frame in the session's buffer. Returns false when
    /// the session is gone or must not read on (closing, authenticating).
    fn handle_buffered(&mut self, slot: usize, now: u64) -> bool {
        loop {
            let Some(session) = self.sessions.get_mut(slot) else {
                return false;
            };
            match session.state {
                State::Authenticating { .. } | State::Closing => return false,
                State::AwaitingLogin | State::Active { .. } => {}
            }
            match session.next_frame(&self.codec) {
                Ok(None) => return true,
                Ok(Some(frame)) => {
                    self.metrics.add(Counter::FramesIn, 1);
                    self.on_frame(slot, frame, now);
                }
                Err(e) => {
                    let reason = match e.error_code() {
                        ErrorCode::FrameTooLarge => CloseReason::FrameTooLarge,
                        _ => CloseReason::BadFrame,
                    };
                    // No req_id could be read from an undecodable frame.
                    self.close_with_error(slot, 0, e.error_code(), &e.to_string(), reason);
                    return false;
                }
            }
        }
    }

    /// A closing session's input is read and dropped until end-of-stream.
    fn discard_input(&mut self, slot: usize) {
        let Some(session) = self.sessions.get_mut(slot) else {
            return;
        };
        if session.read_and_discard(&mut self.scratch) {
            self.remove(slot);
        }
    }

    // ---- frames from clients ----------------------------------------------

    /// One decoded frame, in the order of the contract's rules: a frame the
    /// server cannot accept from anyone first (BAD_FRAME), then the rate
    /// limit, then what the session's state allows.
    fn on_frame(&mut self, slot: usize, frame: Frame, now: u64) {
        let req_id = frame.req_id;
        let Some(body) = frame.body.as_ref() else {
            return self.close_with_error(
                slot,
                req_id,
                ErrorCode::BadFrame,
                "frame has no body",
                CloseReason::BadFrame,
            );
        };
        if body.sender() == Sender::Server {
            let message = format!("{} is sent by the server only", body.name());
            return self.close_with_error(
                slot,
                req_id,
                ErrorCode::BadFrame,
                &message,
                CloseReason::BadFrame,
            );
        }
        let (rate, burst) = (
            self.config.inbound_frames_per_sec,
            self.config.inbound_burst,
        );
        let session = &mut self.sessions[slot];
        let state = session.state;
        if let State::Active { .. } = state {
            session.last_active_ms = now;
        }
        // Acks answer our own pushes: limiting them would only cause resends.
        if !matches!(body, Body::PushAck(_)) {
            match session.limiter.take(now, rate, burst) {
                Admit::Yes => {}
                Admit::Limited => {
                    self.metrics.add(Counter::RateLimited, 1);
                    return self.reply_error(
                        slot,
                        req_id,
                        ErrorCode::RateLimited,
                        "too many frames",
                    );
                }
                Admit::Abusive => {
                    self.metrics.add(Counter::RateLimited, 1);
                    return self.close_with_error(
                        slot,
                        req_id,
                        ErrorCode::RateLimited,
                        "too many frames for too long",
                        CloseReason::RateLimited,
                    );
                }
            }
        }
        match (state, frame.body) {
            (_, Some(Body::Ping(_))) => {
                let pong = pb::Pong {
                    server_time_ms: unix_ms(),
                };
                self.reply(slot, req_id, pong.into());
            }
            (State::AwaitingLogin, Some(Body::LoginReq(login))) => {
                self.on_login(slot, req_id, login)
            }
            (State::AwaitingLogin, _) => self.close_with_error(
                slot,
                req_id,
                ErrorCode::NotLoggedIn,
                "log in first",
                CloseReason::NotLoggedIn,
            ),
            (State::Active { .. }, Some(Body::LoginReq(_))) => self.reply_error(
                slot,
                req_id,
                ErrorCode::InvalidArgument,
                "already logged in",
            ),
            (State::Active { uid }, Some(Body::PushAck(ack))) => {
                let session = self.session_id(slot, self.sessions[slot].serial);
                // A lost ack costs a resend, never a message: no error to send.
                let _ = self.uplink.send(Upcall::PushAck {
                    session,
                    uid,
                    msg_id: ack.msg_id,
                });
            }
            (State::Active { uid }, body) => {
                let session = self.session_id(slot, self.sessions[slot].serial);
                let frame = Frame { req_id, body };
                if let Err(e) = self.uplink.send(Upcall::Request {
                    session,
                    uid,
                    frame,
                }) {
                    self.metrics.add(Counter::UplinkFull, 1);
                    self.reply_error(slot, req_id, ErrorCode::Unavailable, uplink_message(e));
                }
            }
            // handle_buffered never hands these states a frame.
            (State::Authenticating { .. } | State::Closing, _) => {}
        }
    }

    /// The session's peer address (one getpeername, at login time only:
    /// sessions do not keep it).
    fn peer_ip(&self, slot: usize) -> Option<std::net::IpAddr> {
        self.sessions[slot]
            .transport
            .tcp()
            .peer_addr()
            .ok()
            .map(|a| a.ip())
    }

    fn on_login(&mut self, slot: usize, req_id: u64, login: pb::LoginReq) {
        if login.device_id.is_empty() || login.device_id.len() > 64 {
            return self.close_with_error(
                slot,
                req_id,
                ErrorCode::InvalidArgument,
                "device_id must be 1 to 64 bytes",
                CloseReason::InvalidLogin,
            );
        }
        let peer = self.peer_ip(slot);
        if peer.is_some_and(|ip| !self.sources.login_allowed(ip)) {
            self.metrics.add(Counter::LoginsThrottled, 1);
            return self.close_with_error(
                slot,
                req_id,
                ErrorCode::RateLimited,
                "too many failed logins from this address, retry later",
                CloseReason::RateLimited,
            );
        }
        let serial = self.sessions[slot].serial;
        let session = self.session_id(slot, serial);
        let uid = login.uid;
        match self.uplink.send(Upcall::Login {
            session,
            req_id,
            login,
        }) {
            Ok(()) => self.sessions[slot].state = State::Authenticating { uid },
            Err(e) => {
                self.metrics.add(Counter::UplinkFull, 1);
                self.reply_error(slot, req_id, ErrorCode::Unavailable, uplink_message(e));
            }
        }
    }

    // ---- downcalls from the logic tier -------------------------------------

    fn take_downcalls(&mut self, now: u64) {
        while let Ok(call) = self.inbox.downcalls.try_recv() {
            let id = call.session();
            let slot = id.slot as usize;
            let current = self
                .sessions
                .get(slot)
                .is_some_and(|s| s.serial == id.serial && s.state != State::Closing);
            if !current {
                self.metrics.add(Counter::StaleDowncalls, 1);
                continue;
            }
            match call {
                Downcall::LoginAccepted { uid, req_id, .. } => {
                    self.on_login_accepted(slot, uid, req_id, now)
                }
                Downcall::Frame { frame, .. } => self.queue(slot, frame),
                Downcall::Close { last, .. } => {
                    if matches!(self.sessions[slot].state, State::Authenticating { .. }) {
                        // The logic tier refused the login.
                        self.metrics.add(Counter::LoginsFailed, 1);
                        if let Some(ip) = self.peer_ip(slot) {
                            self.sources.login_failed(ip);
                        }
                    }
                    self.close(slot, CloseReason::ClosedByLogic, last)
                }
            }
        }
    }

    fn on_login_accepted(&mut self, slot: usize, uid: u64, req_id: u64, now: u64) {
        let session = &mut self.sessions[slot];
        if !matches!(session.state, State::Authenticating { .. }) {
            return;
        }
        session.state = State::Active { uid };
        session.last_active_ms = now;
        let serial = session.serial;
        self.metrics.gauge(Gauge::Sessions, 1);
        self.metrics.add(Counter::Logins, 1);
        let resp = pb::LoginResp {
            server_time_ms: unix_ms(),
            heartbeat_secs: self.config.heartbeat_secs,
        };
        self.reply(slot, req_id, resp.into());
        self.timers.schedule(
            now + self.heartbeat_timeout_ms(),
            Timer {
                slot,
                serial,
                kind: TimerKind::Heartbeat,
            },
        );
        // Frames sent right behind the LoginReq have waited; handle them now.
        self.schedule_read(slot);
    }

    // ---- timers -------------------------------------------------------------

    fn heartbeat_timeout_ms(&self) -> u64 {
        2 * self.config.heartbeat_secs as u64 * 1000
    }

    fn on_timer(&mut self, timer: Timer, now: u64) {
        let Some(session) = self.sessions.get(timer.slot) else {
            return;
        };
        if session.serial != timer.serial {
            return;
        }
        match (timer.kind, session.state) {
            (TimerKind::Login, State::AwaitingLogin | State::Authenticating { .. }) => {
                self.close(timer.slot, CloseReason::LoginTimeout, None)
            }
            (TimerKind::Heartbeat, State::Active { .. }) => {
                let deadline = session.last_active_ms + self.heartbeat_timeout_ms();
                if now >= deadline {
                    self.close(timer.slot, CloseReason::HeartbeatTimeout, None);
                } else {
                    self.timers.schedule(deadline, timer);
                }
            }
            (TimerKind::Linger, State::Closing) => self.remove(timer.slot),
            _ => {}
        }
    }

    // ---- output ---------------------------------------------------------------

    fn encode(&self, frame: &Frame) -> Option<Bytes> {
        match self.codec.encode_to_bytes(frame) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                log::error!("worker {}: cannot encode a reply: {e}", self.id);
                None
            }
        }
    }

    fn reply(&mut self, slot: usize, req_id: u64, body: Body) {
        if let Some(bytes) = self.encode(&Frame {
            req_id,
            body: Some(body),
        }) {
            self.queue(slot, bytes);
        }
    }

    fn reply_error(&mut self, slot: usize, req_id: u64, code: ErrorCode, message: &str) {
        if let Some(bytes) = self.encode(&error_frame(req_id, code, message)) {
            self.queue(slot, bytes);
        }
    }

    /// Queues an encoded frame; a session whose backlog passes the limit is a
    /// slow consumer and is closed (its messages wait for sync).
    fn queue(&mut self, slot: usize, frame: Bytes) {
        let len = frame.len();
        let session = &mut self.sessions[slot];
        let queued = session.queue(frame);
        self.metrics.add(Counter::FramesOut, 1);
        self.metrics.gauge(Gauge::OutboundBytes, len as i64);
        if queued > self.config.max_outbound_bytes && session.state != State::Closing {
            log::warn!(
                "worker {}: closing slow consumer (uid {:?}, {queued} bytes unsent)",
                self.id,
                session.state.uid()
            );
            session.transport.abort_on_close();
            self.close(slot, CloseReason::SlowConsumer, None);
        } else {
            self.mark_dirty(slot);
        }
    }

    // Both tolerate a session that is already gone: a reply can cut a slow
    // consumer in the middle of its caller's work.
    fn mark_dirty(&mut self, slot: usize) {
        let Some(session) = self.sessions.get_mut(slot) else {
            return;
        };
        if !session.dirty {
            session.dirty = true;
            self.dirty.push(slot);
        }
    }

    fn schedule_read(&mut self, slot: usize) {
        let Some(session) = self.sessions.get_mut(slot) else {
            return;
        };
        if !session.read_pending {
            session.read_pending = true;
            self.read_again.push(slot);
        }
    }

    /// Writes what the session has queued and watches for WRITABLE only
    /// while something is left.
    fn flush(&mut self, slot: usize) {
        let Some(session) = self.sessions.get_mut(slot) else {
            return;
        };
        session.dirty = false;
        match session.flush() {
            Ok(written) => {
                self.metrics.add(Counter::BytesOut, written as u64);
                self.metrics.gauge(Gauge::OutboundBytes, -(written as i64));
            }
            Err(e) => {
                log::debug!("worker {}: write error: {e}", self.id);
                return self.close(slot, CloseReason::IoError, None);
            }
        }
        if session.state == State::Closing && !session.has_output() {
            // Last frame written: FIN, then wait for the peer's (or the linger timer).
            session.transport.shutdown_write();
        }
        let want_writable = session.wants_writable();
        if want_writable != session.writable_registered {
            session.writable_registered = want_writable;
            let interest = session.interest();
            if let Err(e) =
                self.poll
                    .registry()
                    .reregister(session.transport.socket(), Token(slot), interest)
            {
                log::debug!("worker {}: reregister failed: {e}", self.id);
                self.close(slot, CloseReason::IoError, None);
            }
        }
    }

    // ---- closing --------------------------------------------------------------

    fn close_with_error(
        &mut self,
        slot: usize,
        req_id: u64,
        code: ErrorCode,
        message: &str,
        reason: CloseReason,
    ) {
        let last = self.encode(&error_frame(req_id, code, message));
        self.close(slot, reason, last);
    }

    /// Ends a session. With a `last` frame (a Kick or an Error) the session
    /// lingers until that frame is written and the peer has closed, or for
    /// `LINGER_MS`; without one it is dropped at once.
    fn close(&mut self, slot: usize, reason: CloseReason, last: Option<Bytes>) {
        let Some(session) = self.sessions.get_mut(slot) else {
            return;
        };
        if session.state == State::Closing {
            return;
        }
        let previous = session.state;
        let serial = session.serial;
        session.state = State::Closing;
        self.metrics.closed(reason);
        log::debug!(
            "worker {}: closing session {serial} ({})",
            self.id,
            reason.label()
        );
        if previous.uid().is_some() {
            self.metrics.gauge(Gauge::Sessions, -1);
        }
        if previous.known_to_logic() {
            let closed = Upcall::Closed {
                session: self.session_id(slot, serial),
                uid: previous.claimed_uid(),
            };
            if self.uplink.send(closed.clone()).is_err() {
                self.unsent_closes.push_back(closed);
            }
        }
        match last {
            Some(frame) if reason != CloseReason::SlowConsumer => {
                let session = &mut self.sessions[slot];
                session.discard_input();
                session.queue(frame);
                self.metrics.add(Counter::FramesOut, 1);
                self.mark_dirty(slot);
                self.timers.schedule(
                    self.now_ms() + LINGER_MS,
                    Timer {
                        slot,
                        serial,
                        kind: TimerKind::Linger,
                    },
                );
            }
            _ => self.remove(slot),
        }
    }

    /// Drops the session and its socket now.
    fn remove(&mut self, slot: usize) {
        if !self.sessions.contains(slot) {
            return;
        }
        let mut session = self.sessions.remove(slot);
        let unsent = session.drop_output();
        self.metrics.gauge(Gauge::OutboundBytes, -(unsent as i64));
        self.metrics.gauge(Gauge::Connections, -1);
        let _ = self.poll.registry().deregister(session.transport.socket());
        self.open_connections.fetch_sub(1, Ordering::AcqRel);
    }

    fn retry_closes(&mut self) {
        while let Some(closed) = self.unsent_closes.pop_front() {
            if let Err(UplinkError::Full) = self.uplink.send(closed.clone()) {
                self.unsent_closes.push_front(closed);
                return;
            }
        }
    }
}

fn uplink_message(e: UplinkError) -> &'static str {
    match e {
        UplinkError::Full => "server busy, retry later",
        UplinkError::Disconnected => "logic tier unavailable",
    }
}
