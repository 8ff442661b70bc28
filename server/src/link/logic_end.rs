//! The logic tier's end of the link: `im-link-listener` accepts gateways;
//! each gets a reader thread, `im-link-rx-<id>` (its upcalls into the logic
//! tier's inbox), and a writer thread, `im-link-tx-<id>` (downcalls for its
//! sessions, a batch per write).
//!
//! Routing is by the session id's gateway: [`Gateways`] is the logic tier's
//! `Downlink` and finds the gateway's outbox by that id. When full:
//! - the inbox (`logic.queue_capacity`): the reader waits, so the gateway's
//!   link backs up into its own bounded queue, whose workers then answer
//!   their clients UNAVAILABLE (the rule of one process, one hop further);
//! - a gateway's outbox (`link.queue_capacity`): that gateway is not keeping
//!   up with what its sessions are sent; its link is dropped, and its
//!   clients reconnect and sync (as a worker drops a slow session).
//!
//! When a link ends, the logic tier is told `GatewayGone` and forgets the
//! gateway's sessions; when a gateway links again under the same id (its
//! link blipped), the old link's sessions are forgotten before any call of
//! the new one is read.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use logic::presence::{GatewayAddr, GatewayAddrs};
use logic::store::lease::Fence;
use parking_lot::{Mutex, RwLock};
use protocol::link::wire::pb::link_frame::Kind;
use protocol::link::{Downcall, Downlink, Upcall};
use runtime::doorbell::{Bell, Doorbell};

use super::handshake::{self, GatewayInfo};
use super::{FrameReader, FrameWriter, LinkError, downcall_batch};

/// What the link server needs, handed over at start.
#[derive(Clone)]
pub struct Settings {
    pub secret: Vec<u8>,
    pub heartbeat: Duration,
    pub dead_after_secs: u64,
    pub queue_capacity: usize,
    /// On MySQL, the writer lease: while it has lapsed (no renewal for a
    /// whole lease: a standby may be taking over), gateways are let go and
    /// refused, so that they find the node that can write.
    pub writer: Option<Arc<Fence>>,
}

impl Settings {
    fn lapsed(&self) -> bool {
        self.writer.as_ref().is_some_and(|fence| fence.lapsed())
    }
}

/// One linked gateway's queue of downcalls.
struct Outbox {
    queue: Sender<Downcall>,
    bell: Bell,
    /// Sent something since the last flush.
    unrung: AtomicBool,
    /// Its queue overflowed: the link is being dropped.
    overloaded: AtomicBool,
    /// Which connection this is (a gateway may link again under its id).
    connection: u64,
}

/// The linked gateways: the logic tier's `Downlink` across processes.
#[derive(Default)]
pub struct Gateways {
    links: RwLock<HashMap<u32, Arc<Outbox>>>,
}

impl Gateways {
    /// Gateways linked now.
    pub fn count(&self) -> usize {
        self.links.read().len()
    }

    /// Downcalls waiting per gateway, for the metrics.
    pub fn depths(&self) -> Vec<(u32, usize)> {
        self.links
            .read()
            .iter()
            .map(|(id, out)| (*id, out.queue.len()))
            .collect()
    }
}

impl Downlink for Gateways {
    fn send(&self, call: Downcall) {
        let gateway = call.session().gateway;
        let links = self.links.read();
        let Some(out) = links.get(&gateway) else {
            // Its link is gone, and the session with it.
            return;
        };
        match out.queue.try_send(call) {
            Ok(()) => out.unrung.store(true, Ordering::Release),
            Err(TrySendError::Full(_)) => {
                if !out.overloaded.swap(true, Ordering::AcqRel) {
                    log::warn!(
                        "gateway {gateway:08x} is not keeping up ({} downcalls queued): dropping its link",
                        out.queue.len()
                    );
                    out.bell.ring();
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn flush(&self) {
        for out in self.links.read().values() {
            if out.unrung.swap(false, Ordering::AcqRel) {
                out.bell.ring();
            }
        }
    }
}

/// The running link server.
pub struct LinkServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    gateways: Arc<Gateways>,
    sockets: Arc<Mutex<HashMap<u64, TcpStream>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    listener: JoinHandle<()>,
}

/// Everything a gateway's connection needs.
#[derive(Clone)]
struct Shared {
    settings: Settings,
    upcalls: Sender<Upcall>,
    bell: Bell,
    addrs: Arc<GatewayAddrs>,
    gateways: Arc<Gateways>,
    sockets: Arc<Mutex<HashMap<u64, TcpStream>>>,
    stop: Arc<AtomicBool>,
}

/// Listens on `listen` for gateways. Their upcalls go to `upcalls`, with
/// `bell` rung once per batch; their client addresses into `addrs`.
pub fn start(
    listen: SocketAddr,
    settings: Settings,
    upcalls: Sender<Upcall>,
    bell: Bell,
    addrs: Arc<GatewayAddrs>,
) -> std::io::Result<LinkServer> {
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let gateways = Arc::new(Gateways::default());
    let sockets = Arc::new(Mutex::new(HashMap::new()));
    let threads = Arc::new(Mutex::new(Vec::new()));
    let shared = Shared {
        settings,
        upcalls,
        bell,
        addrs,
        gateways: gateways.clone(),
        sockets: sockets.clone(),
        stop: stop.clone(),
    };
    let spawned = threads.clone();
    let listener = thread::Builder::new()
        .name("im-link-listener".into())
        .spawn(move || accept(listener, shared, &spawned))?;
    log::info!("link: listening for gateways on {addr}");
    Ok(LinkServer {
        addr,
        stop,
        gateways,
        sockets,
        threads,
        listener,
    })
}

impl LinkServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `Downlink` the logic tier sends through.
    pub fn gateways(&self) -> Arc<Gateways> {
        self.gateways.clone()
    }

    /// Stops accepting, closes every link and waits for their threads: the
    /// logic tier's inbox then has no sender left from here.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        // Unblock the accept with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = self.listener.join();
        for socket in self.sockets.lock().values() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let threads: Vec<JoinHandle<()>> = self.threads.lock().drain(..).collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept(listener: TcpListener, shared: Shared, threads: &Mutex<Vec<JoinHandle<()>>>) {
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if shared.settings.lapsed() {
            log::warn!("link: refused a gateway: this node's writer lease has lapsed");
            continue;
        }
        let connection = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let spawned = thread::Builder::new()
            .name("im-link-rx".into())
            .spawn(move || serve(stream, connection, shared));
        match spawned {
            Ok(thread) => {
                let mut threads = threads.lock();
                threads.retain(|t| !t.is_finished());
                threads.push(thread);
            }
            Err(e) => log::error!("link: cannot start a thread for a gateway: {e}"),
        }
    }
}

/// One gateway's connection, from the handshake to its end.
fn serve(stream: TcpStream, connection: u64, shared: Shared) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    match link(stream, connection, &shared) {
        Ok(()) => {}
        Err(LinkError::Refused(reason)) => {
            log::error!("link: refused a gateway at {peer}: {reason}")
        }
        Err(e) if shared.stop.load(Ordering::Acquire) => {
            log::debug!("link: gateway at {peer} closed at shutdown: {e}")
        }
        Err(LinkError::Closed) => log::info!("link: gateway at {peer} closed its link"),
        Err(e) => log::warn!("link: gateway at {peer}: {e}"),
    }
    shared.sockets.lock().remove(&connection);
}

fn link(stream: TcpStream, connection: u64, shared: &Shared) -> Result<(), LinkError> {
    stream.set_nodelay(true)?;
    shared
        .sockets
        .lock()
        .insert(connection, stream.try_clone()?);
    let mut reader = FrameReader::new(stream.try_clone()?, handshake::TIMEOUT.as_secs())?;
    let mut writer = FrameWriter::new(stream.try_clone()?);
    let info = handshake::accept(&mut reader, &mut writer, &shared.settings.secret)?;
    reader.set_silence(shared.settings.dead_after_secs)?;
    let gateway = info.gateway;
    log::info!(
        "link: gateway {gateway:08x} (clients at {}, started at {}) linked",
        info.client_addr,
        info.epoch_ms
    );

    let (queue, downcalls) = crossbeam_channel::bounded(shared.settings.queue_capacity);
    let doorbell = Doorbell::new();
    let outbox = Arc::new(Outbox {
        queue,
        bell: doorbell.bell(),
        unrung: AtomicBool::new(false),
        overloaded: AtomicBool::new(false),
        connection,
    });
    register(shared, &info, outbox.clone());

    let dead = Arc::new(AtomicBool::new(false));
    let sending = {
        let dead = dead.clone();
        let outbox = outbox.clone();
        let settings = shared.settings.clone();
        thread::Builder::new()
            .name(format!("im-link-tx-{gateway:08x}"))
            .spawn(move || send(writer, &downcalls, &doorbell, &outbox, &dead, &settings))?
    };
    let received = receive(&mut reader, gateway, shared);
    dead.store(true, Ordering::Release);
    outbox.bell.ring();
    let _ = stream.shutdown(Shutdown::Both);
    let sent = sending
        .join()
        .unwrap_or_else(|_| Err(LinkError::Protocol("the link writer panicked".into())));
    unregister(shared, gateway, connection);
    log::info!("link: gateway {gateway:08x} unlinked");
    received.and(sent)
}

/// The gateway's outbox goes where downcalls find it. A gateway linking
/// again under its id replaces its old link, whose sessions the logic tier
/// forgets first.
fn register(shared: &Shared, info: &GatewayInfo, outbox: Arc<Outbox>) {
    let replaced = shared.gateways.links.write().insert(info.gateway, outbox);
    shared.addrs.set(
        info.gateway,
        GatewayAddr {
            client_addr: info.client_addr.clone(),
            epoch_ms: info.epoch_ms,
        },
    );
    if let Some(old) = replaced {
        old.overloaded.store(true, Ordering::Release);
        old.bell.ring();
        gone(shared, info.gateway);
    }
}

fn unregister(shared: &Shared, gateway: u32, connection: u64) {
    let mut links = shared.gateways.links.write();
    if links
        .get(&gateway)
        .is_some_and(|o| o.connection == connection)
    {
        links.remove(&gateway);
        drop(links);
        shared.addrs.remove(gateway);
        gone(shared, gateway);
    }
}

fn gone(shared: &Shared, gateway: u32) {
    if shared.upcalls.send(Upcall::GatewayGone { gateway }).is_ok() {
        shared.bell.ring();
    }
}

/// The reader: upcalls into the logic tier's inbox, a ring per batch.
fn receive(reader: &mut FrameReader, gateway: u32, shared: &Shared) -> Result<(), LinkError> {
    loop {
        match reader.read()? {
            Kind::Batch(batch) => {
                for call in batch.upcalls {
                    let call = Upcall::try_from(call)?;
                    let from = call.session().map_or(gateway, |s| s.gateway);
                    if from != gateway {
                        return Err(LinkError::Protocol(format!(
                            "gateway {gateway:08x} sent a call for gateway {from:08x}"
                        )));
                    }
                    // Waits while the inbox is full: see the module doc.
                    if shared.upcalls.send(call).is_err() {
                        return Err(LinkError::Closed);
                    }
                }
                shared.bell.ring();
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

/// The writer: downcalls, a batch per write, and heartbeats.
fn send(
    mut writer: FrameWriter,
    downcalls: &Receiver<Downcall>,
    doorbell: &Doorbell,
    outbox: &Outbox,
    dead: &AtomicBool,
    settings: &Settings,
) -> Result<(), LinkError> {
    let heartbeat = settings.heartbeat;
    let mut last_write = Instant::now();
    loop {
        if dead.load(Ordering::Acquire) {
            return Ok(());
        }
        if settings.lapsed() {
            let _ = writer.stream().shutdown(Shutdown::Both);
            return Err(LinkError::Protocol(
                "this node's writer lease lapsed: letting the gateway go to a standby".into(),
            ));
        }
        if outbox.overloaded.load(Ordering::Acquire) {
            let _ = writer.stream().shutdown(Shutdown::Both);
            return Err(LinkError::Protocol("the gateway's queue overflowed".into()));
        }
        let due = writer.write_or_beat(
            || downcall_batch(|| downcalls.try_recv().ok()),
            &mut last_write,
            heartbeat,
        )?;
        doorbell.wait(due);
    }
}
