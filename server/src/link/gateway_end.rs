//! The gateway's end of the link: one thread, `im-link`, that connects to
//! the logic tier and keeps connecting.
//!
//! Workers hand upcalls to a [`gateway::LocalUplink`] exactly as in one
//! process: a bounded queue (full: the client gets UNAVAILABLE at once)
//! and a doorbell rung once per turn of a worker's loop. `im-link` waits at
//! that doorbell, takes everything queued, and writes it as one batch. A
//! reader thread per connection hands the logic tier's downcalls to the
//! workers' mailboxes.
//!
//! While there is no link, workers are told so at once ([`LinkedUplink`]:
//! the client gets UNAVAILABLE), and what was queued before the link went
//! is answered here, a request or a login UNAVAILABLE: no client waits on a
//! link that is not there. So is what went up the dead link unanswered:
//! the [`Ledger`] keeps every request and login in flight.
//!
//! The sessions the logic tier accepted stay connected through a link's
//! loss: the ledger keeps what each logged in as, and the first thing sent
//! on the next link, to the same logic node or to the standby that took
//! over, registers them all again (`Upcall::Resume`); the logic node tells
//! each client to sync (`SyncHint`), since pushes in flight were lost with
//! the old link. Only if no link comes back within
//! `link.keep_sessions_secs` are they closed with a Kick (their clients
//! reconnect, log in again and sync, missing nothing).
//!
//! Reconnecting cycles through the configured logic addresses, waiting
//! 100 ms between tries, doubling after each full round up to
//! `link.reconnect_max_ms`, each wait jittered.

use std::collections::{HashMap, HashSet};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use gateway::{LocalUplink, Mailboxes, Uplink, UplinkError};
use parking_lot::Mutex;
use protocol::body::{error_frame, kick_frame};
use protocol::link::wire::pb::link_frame::Kind;
use protocol::link::{Downcall, Downlink, Registration, SessionId, Upcall};
use protocol::{ErrorCode, FrameCodec, token};
use runtime::backoff::{Backoff, Rng};
use runtime::doorbell::{Bell, Doorbell};

use super::handshake::{self, GatewayInfo};
use super::{FrameReader, FrameWriter, LinkError, upcall_batch};

/// What went up the link and is not answered yet, and which sessions the
/// logic tier accepted (with what they logged in as): what a new link must
/// register again, and what a dead one leaves to answer here.
#[derive(Default)]
struct Ledger {
    accepted: HashMap<SessionId, Registration>,
    /// Logins sent, not yet answered: their req_id and what they claim.
    logging_in: HashMap<SessionId, (u64, Registration)>,
    /// Requests sent, not yet answered (req_id 0 is not tracked: its
    /// answer cannot be told from a push).
    requests: HashSet<(SessionId, u64)>,
}

impl Ledger {
    /// An upcall about to be written to the link.
    fn sending(&mut self, call: &Upcall) {
        match call {
            Upcall::Login {
                session,
                req_id,
                login,
            } => {
                let registration = Registration {
                    uid: login.uid,
                    device_id: login.device_id.clone(),
                    platform: login.platform,
                    token_issued_ms: token::issued_ms(&login.token),
                };
                self.logging_in.insert(*session, (*req_id, registration));
            }
            Upcall::Request { session, frame, .. } if frame.req_id != 0 => {
                self.requests.insert((*session, frame.req_id));
            }
            _ => {}
        }
    }

    /// A downcall read from the link.
    fn received(&mut self, call: &Downcall) {
        match call {
            Downcall::LoginAccepted { session, .. } => {
                if let Some((_, registration)) = self.logging_in.remove(session) {
                    self.accepted.insert(*session, registration);
                }
            }
            Downcall::Frame { session, frame } => {
                let req_id = FrameCodec::encoded_req_id(frame);
                if req_id != 0 {
                    self.requests.remove(&(*session, req_id));
                }
            }
            Downcall::Close { session, .. } => self.forget(*session),
        }
    }

    fn forget(&mut self, session: SessionId) {
        self.accepted.remove(&session);
        self.logging_in.remove(&session);
        // Its requests' answers would be dropped with the session anyway.
    }
}

/// The workers' uplink: the in-process queue to `im-link`, refusing at
/// once while there is no link.
pub struct LinkedUplink {
    queue: LocalUplink,
    up: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
}

impl LinkedUplink {
    /// The uplink, and the receiving ends for [`start`].
    pub fn new(capacity: usize) -> (LinkedUplink, Receiver<Upcall>, Doorbell) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let doorbell = Doorbell::new();
        let uplink = LinkedUplink {
            queue: LocalUplink::new(tx, doorbell.bell()),
            up: Arc::new(AtomicBool::new(false)),
            ledger: Arc::default(),
        };
        (uplink, rx, doorbell)
    }
}

impl Uplink for LinkedUplink {
    fn send(&self, call: Upcall) -> Result<(), UplinkError> {
        if let Upcall::Closed { session, .. } = &call {
            // Never registered again, link or no link.
            self.ledger.lock().forget(*session);
        }
        if !self.up.load(Ordering::Acquire) {
            return Err(UplinkError::Disconnected);
        }
        self.queue.send(call)
    }

    fn flush(&self) {
        self.queue.flush()
    }

    fn depth(&self) -> usize {
        self.queue.depth()
    }
}

/// What the link needs to know, handed over at start.
pub struct Settings {
    pub logic: Vec<SocketAddr>,
    pub secret: Vec<u8>,
    pub info: GatewayInfo,
    pub heartbeat: Duration,
    pub dead_after_secs: u64,
    pub reconnect_max: Duration,
    /// How long accepted sessions stay open with no link (zero: closed at
    /// once).
    pub keep_sessions: Duration,
}

/// The running link: stop it once the gateway has stopped, so the last
/// upcalls (the sessions' `Closed`) go out first.
pub struct LinkHandle {
    stop: Arc<AtomicBool>,
    bell: Bell,
    thread: JoinHandle<()>,
    up: Arc<AtomicBool>,
}

impl LinkHandle {
    /// Whether a link to the logic tier is up now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// A check of the link for `/readyz`, usable after the handle moves.
    pub fn readiness(&self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
        let up = self.up.clone();
        move || match up.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err("no link to the logic tier".into()),
        }
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.bell.ring();
        if self.thread.join().is_err() {
            log::error!("the link thread panicked");
        }
    }
}

/// Starts `im-link`. `upcalls` and `doorbell` are the receiving ends of
/// the workers' `uplink`.
pub fn start(
    settings: Settings,
    uplink: &LinkedUplink,
    upcalls: Receiver<Upcall>,
    doorbell: Doorbell,
    mailboxes: Mailboxes,
) -> std::io::Result<LinkHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let up = uplink.up.clone();
    let bell = doorbell.bell();
    let mut link = GatewayLink {
        settings,
        upcalls,
        doorbell,
        mailboxes,
        stop: stop.clone(),
        up: up.clone(),
        ledger: uplink.ledger.clone(),
        codec: FrameCodec::default(),
    };
    let thread = thread::Builder::new()
        .name("im-link".into())
        .spawn(move || link.run())?;
    Ok(LinkHandle {
        stop,
        bell,
        thread,
        up,
    })
}

struct GatewayLink {
    settings: Settings,
    upcalls: Receiver<Upcall>,
    doorbell: Doorbell,
    mailboxes: Mailboxes,
    stop: Arc<AtomicBool>,
    up: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    codec: FrameCodec,
}

impl GatewayLink {
    fn run(&mut self) {
        let backoff = Backoff {
            first: Duration::from_millis(100),
            max: self.settings.reconnect_max,
        };
        let mut rng = Rng::default();
        // Rounds through every address since the last link: the backoff's attempt.
        let mut round = 1;
        let mut next = 0;
        // When the last link was lost, while its sessions are kept.
        let mut lost_at: Option<Instant> = None;
        while !self.stopping() {
            let addrs = self.settings.logic.len();
            let addr = self.settings.logic[next % addrs];
            next += 1;
            match self.connect(addr) {
                Ok((reader, mut writer)) => {
                    log::info!("link to the logic tier at {addr} is up");
                    round = 1;
                    lost_at = None;
                    self.up.store(true, Ordering::Release);
                    let ended = self
                        .resume_accepted(&mut writer, addr)
                        .and_then(|()| self.serve(reader, writer));
                    self.up.store(false, Ordering::Release);
                    match ended {
                        Ok(()) => log::info!("link to {addr} closed"),
                        Err(e) => log::warn!("link to {addr} lost: {e}"),
                    }
                    self.answer_in_flight();
                    if self.settings.keep_sessions.is_zero() {
                        self.kick_accepted();
                    } else {
                        lost_at = Some(Instant::now());
                    }
                    // Straight on to the next address: the standby, perhaps.
                    continue;
                }
                Err(LinkError::Refused(reason)) => {
                    log::error!("the logic tier at {addr} refused this gateway: {reason}")
                }
                Err(e) => log::warn!("cannot link to the logic tier at {addr}: {e}"),
            }
            // Wait before the next try, answering what queues meanwhile.
            let until = Instant::now() + backoff.wait_from_half(round, &mut rng);
            while !self.stopping() && Instant::now() < until {
                self.refuse_queued();
                if lost_at.is_some_and(|at| at.elapsed() >= self.settings.keep_sessions) {
                    lost_at = None;
                    self.kick_accepted();
                }
                self.doorbell
                    .wait(until.saturating_duration_since(Instant::now()));
            }
            if next % addrs == 0 {
                round += 1;
            }
        }
        self.refuse_queued();
    }

    /// Registers every session the logic tier accepted before with the
    /// node at the other end of a new link, before any other call: the
    /// workers' calls queued meanwhile follow them.
    fn resume_accepted(&self, writer: &mut FrameWriter, addr: SocketAddr) -> Result<(), LinkError> {
        let mut resumes = self
            .ledger
            .lock()
            .accepted
            .iter()
            .map(|(session, registration)| Upcall::Resume {
                session: *session,
                registration: registration.clone(),
            })
            .collect::<Vec<_>>()
            .into_iter();
        let count = resumes.len();
        while let Some(batch) = upcall_batch(|| resumes.next()) {
            writer.send(batch)?;
        }
        if count > 0 {
            log::info!("{count} open sessions registered again with the logic tier at {addr}");
        }
        Ok(())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn connect(&self, addr: SocketAddr) -> Result<(FrameReader, FrameWriter), LinkError> {
        let stream = TcpStream::connect_timeout(&addr, handshake::TIMEOUT)?;
        stream.set_nodelay(true)?;
        let mut reader = FrameReader::new(stream.try_clone()?, handshake::TIMEOUT.as_secs())?;
        let mut writer = FrameWriter::new(stream);
        handshake::connect(
            &mut reader,
            &mut writer,
            &self.settings.secret,
            &self.settings.info,
        )?;
        reader.set_silence(self.settings.dead_after_secs)?;
        Ok((reader, writer))
    }

    /// Runs one link until it fails or the gateway stops.
    fn serve(&mut self, reader: FrameReader, mut writer: FrameWriter) -> Result<(), LinkError> {
        let dead = Arc::new(AtomicBool::new(false));
        let socket = writer.stream().try_clone()?;
        let receiving = {
            let dead = dead.clone();
            let bell = self.doorbell.bell();
            let mailboxes = self.mailboxes.clone();
            let ledger = self.ledger.clone();
            thread::Builder::new()
                .name("im-link-rx".into())
                .spawn(move || {
                    let ended = receive(reader, &mailboxes, &ledger);
                    dead.store(true, Ordering::Release);
                    bell.ring();
                    ended
                })?
        };
        let sent = self.send_until_dead(&mut writer, &dead);
        let _ = socket.shutdown(Shutdown::Both);
        let received = receiving
            .join()
            .unwrap_or_else(|_| Err(LinkError::Protocol("the link reader panicked".into())));
        sent.and(received.or_else(|e| match e {
            LinkError::Closed if self.stopping() => Ok(()),
            e => Err(e),
        }))
    }

    /// Writes what the workers queue, a batch per write, and heartbeats.
    fn send_until_dead(
        &mut self,
        writer: &mut FrameWriter,
        dead: &AtomicBool,
    ) -> Result<(), LinkError> {
        let heartbeat = self.settings.heartbeat;
        let mut last_write = Instant::now();
        loop {
            let due = writer.write_or_beat(
                || {
                    let mut ledger = self.ledger.lock();
                    upcall_batch(|| {
                        let call = self.upcalls.try_recv().ok()?;
                        ledger.sending(&call);
                        Some(call)
                    })
                },
                &mut last_write,
                heartbeat,
            )?;
            if dead.load(Ordering::Acquire) {
                return Ok(());
            }
            if self.stopping() {
                // The workers have stopped: their last upcalls are written.
                if self.upcalls.is_empty() {
                    return Ok(());
                }
                continue;
            }
            self.doorbell.wait(due);
        }
    }

    /// An UNAVAILABLE answer to `req_id`.
    fn refusal(&self, req_id: u64) -> Option<bytes::Bytes> {
        self.codec
            .encode_to_bytes(&error_frame(
                req_id,
                ErrorCode::Unavailable,
                "logic tier unavailable, retry later",
            ))
            .ok()
    }

    /// A request gets UNAVAILABLE; a login, UNAVAILABLE and its session
    /// closed (it may log in again).
    fn refuse_request(&self, session: SessionId, req_id: u64) {
        if let Some(frame) = self.refusal(req_id) {
            self.mailboxes.send(Downcall::Frame { session, frame });
        }
    }

    fn refuse_login(&self, session: SessionId, req_id: u64) {
        self.mailboxes.send(Downcall::Close {
            session,
            last: self.refusal(req_id),
        });
    }

    /// No link: a request or a login queued now gets UNAVAILABLE.
    fn refuse_queued(&self) {
        let mut refused = false;
        while let Ok(call) = self.upcalls.try_recv() {
            match call {
                Upcall::Request { session, frame, .. } => {
                    self.refuse_request(session, frame.req_id);
                    refused = true;
                }
                Upcall::Login {
                    session, req_id, ..
                } => {
                    self.refuse_login(session, req_id);
                    refused = true;
                }
                Upcall::PushAck { .. }
                | Upcall::Closed { .. }
                | Upcall::GatewayGone { .. }
                | Upcall::Resume { .. } => {}
            }
        }
        if refused {
            self.mailboxes.flush();
        }
    }

    /// The link died with requests and logins on it: each is answered
    /// UNAVAILABLE (the client resends; a send with the same
    /// client_msg_id, which the logic tier's dedup holds).
    fn answer_in_flight(&self) {
        let (requests, logins) = {
            let mut ledger = self.ledger.lock();
            (
                std::mem::take(&mut ledger.requests),
                std::mem::take(&mut ledger.logging_in),
            )
        };
        if requests.is_empty() && logins.is_empty() {
            return;
        }
        log::warn!(
            "{} requests and {} logins in flight on the lost link answered UNAVAILABLE",
            requests.len(),
            logins.len()
        );
        for (session, req_id) in requests {
            self.refuse_request(session, req_id);
        }
        for (session, (req_id, _)) in logins {
            self.refuse_login(session, req_id);
        }
        self.mailboxes.flush();
    }

    /// No link came back in time: the open sessions are closed, and their
    /// clients must log in again (and sync).
    fn kick_accepted(&self) {
        let sessions: Vec<SessionId> = self
            .ledger
            .lock()
            .accepted
            .drain()
            .map(|(s, _)| s)
            .collect();
        if sessions.is_empty() {
            return;
        }
        log::warn!(
            "closing {} sessions: their logic tier link is gone",
            sessions.len()
        );
        let kick = self
            .codec
            .encode_to_bytes(&kick_frame("logic tier unavailable, reconnect"))
            .ok();
        for session in sessions {
            self.mailboxes.send(Downcall::Close {
                session,
                last: kick.clone(),
            });
        }
        self.mailboxes.flush();
    }
}

/// The reader thread: downcalls to the workers, a flush per batch.
fn receive(
    mut reader: FrameReader,
    mailboxes: &Mailboxes,
    ledger: &Mutex<Ledger>,
) -> Result<(), LinkError> {
    loop {
        match reader.read()? {
            Kind::Batch(batch) => {
                let mut ledger = ledger.lock();
                for call in batch.downcalls {
                    let call = Downcall::try_from(call)?;
                    ledger.received(&call);
                    mailboxes.send(call);
                }
                drop(ledger);
                mailboxes.flush();
            }
            Kind::Heartbeat(_) => {}
            other => {
                return Err(LinkError::Protocol(format!(
                    "unexpected {other:?} on an open link"
                )));
            }
        }
    }
}
