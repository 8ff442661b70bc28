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
//! link that is not there. When a link dies, every session the logic tier had accepted is
//! closed with a Kick (the logic tier dropped them when it saw the link go;
//! their clients reconnect, log in again and sync, missing nothing).
//! Reconnecting waits 100 ms, doubling up to `link.reconnect_max_ms`, each
//! wait jittered, cycling through the configured logic addresses.

use std::collections::HashSet;
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
use protocol::link::{Downcall, Downlink, SessionId, Upcall};
use protocol::{ErrorCode, FrameCodec};
use runtime::doorbell::{Bell, Doorbell};

use super::handshake::{self, GatewayInfo};
use super::{FrameReader, FrameWriter, LinkError, upcall_batch};

/// The workers' uplink: the in-process queue to `im-link`, refusing at
/// once while there is no link.
pub struct LinkedUplink {
    queue: LocalUplink,
    up: Arc<AtomicBool>,
}

impl LinkedUplink {
    /// The uplink, and the receiving ends for [`start`].
    pub fn new(capacity: usize) -> (LinkedUplink, Receiver<Upcall>, Doorbell) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let doorbell = Doorbell::new();
        let uplink = LinkedUplink {
            queue: LocalUplink::new(tx, doorbell.bell()),
            up: Arc::new(AtomicBool::new(false)),
        };
        (uplink, rx, doorbell)
    }
}

impl Uplink for LinkedUplink {
    fn send(&self, call: Upcall) -> Result<(), UplinkError> {
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
        accepted: Arc::new(Mutex::new(HashSet::new())),
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
    /// Sessions the logic tier accepted over the current link: kicked when
    /// it dies.
    accepted: Arc<Mutex<HashSet<SessionId>>>,
    codec: FrameCodec,
}

impl GatewayLink {
    fn run(&mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut next = 0;
        while !self.stopping() {
            let addr = self.settings.logic[next % self.settings.logic.len()];
            next += 1;
            match self.connect(addr) {
                Ok((reader, writer)) => {
                    log::info!("link to the logic tier at {addr} is up");
                    backoff = Duration::from_millis(100);
                    self.up.store(true, Ordering::Release);
                    let ended = self.serve(reader, writer);
                    self.up.store(false, Ordering::Release);
                    match ended {
                        Ok(()) => log::info!("link to {addr} closed"),
                        Err(e) => log::warn!("link to {addr} lost: {e}"),
                    }
                    self.kick_accepted();
                }
                Err(LinkError::Refused(reason)) => {
                    log::error!("the logic tier at {addr} refused this gateway: {reason}")
                }
                Err(e) => log::warn!("cannot link to the logic tier at {addr}: {e}"),
            }
            // Wait before the next try, answering what queues meanwhile.
            let until = Instant::now() + jittered(backoff);
            while !self.stopping() && Instant::now() < until {
                self.refuse_queued();
                self.doorbell
                    .wait(until.saturating_duration_since(Instant::now()));
            }
            backoff = (backoff * 2).min(self.settings.reconnect_max);
        }
        self.refuse_queued();
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
            let accepted = self.accepted.clone();
            thread::Builder::new()
                .name("im-link-rx".into())
                .spawn(move || {
                    let ended = receive(reader, &mailboxes, &accepted);
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
                || upcall_batch(|| self.next_upcall()),
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

    /// The next queued upcall to send, keeping track of logouts.
    fn next_upcall(&self) -> Option<Upcall> {
        let call = self.upcalls.try_recv().ok()?;
        if let Upcall::Closed { session, .. } = &call {
            self.accepted.lock().remove(session);
        }
        Some(call)
    }

    /// No link: a request or a login queued now gets UNAVAILABLE.
    fn refuse_queued(&self) {
        let mut refused = false;
        while let Ok(call) = self.upcalls.try_recv() {
            let refusal = |req_id| {
                self.codec
                    .encode_to_bytes(&error_frame(
                        req_id,
                        ErrorCode::Unavailable,
                        "logic tier unavailable, retry later",
                    ))
                    .ok()
            };
            match call {
                Upcall::Request { session, frame, .. } => {
                    if let Some(frame) = refusal(frame.req_id) {
                        self.mailboxes.send(Downcall::Frame { session, frame });
                        refused = true;
                    }
                }
                Upcall::Login {
                    session, req_id, ..
                } => {
                    self.mailboxes.send(Downcall::Close {
                        session,
                        last: refusal(req_id),
                    });
                    refused = true;
                }
                Upcall::PushAck { .. } | Upcall::Closed { .. } | Upcall::GatewayGone { .. } => {}
            }
        }
        if refused {
            self.mailboxes.flush();
        }
    }

    /// The link died: the logic tier forgot this gateway's sessions, so
    /// their clients must log in again (and sync).
    fn kick_accepted(&self) {
        let sessions: Vec<SessionId> = self.accepted.lock().drain().collect();
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
    accepted: &Mutex<HashSet<SessionId>>,
) -> Result<(), LinkError> {
    loop {
        match reader.read()? {
            Kind::Batch(batch) => {
                for call in batch.downcalls {
                    let call = Downcall::try_from(call)?;
                    match &call {
                        Downcall::LoginAccepted { session, .. } => {
                            accepted.lock().insert(*session);
                        }
                        Downcall::Close { session, .. } => {
                            accepted.lock().remove(session);
                        }
                        Downcall::Frame { .. } => {}
                    }
                    mailboxes.send(call);
                }
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

/// Between half and all of `wait`: gateways that lost one logic node do not
/// all come back at the same instant.
fn jittered(wait: Duration) -> Duration {
    let [byte] = super::random::<1>().unwrap_or([255]);
    wait / 2 + wait / 2 * u32::from(byte) / 255
}
