//! The gateway: the connection tier of the IM server.
//!
//! It owns client TCP connections: the login handshake, heartbeats,
//! framing, rate limits, backpressure and kicks. It knows nothing of
//! storage; everything a user asks for goes to the logic tier as an
//! [`Upcall`](protocol::link::Upcall), and everything the logic tier wants
//! said to a connection comes back as a [`Downcall`](protocol::link::Downcall).
//!
//! ```text
//!                 ┌──────────────┐  TcpStream + wake   ┌──────────────────────────┐
//!  clients ──────▶│ im-listener  │────────────────────▶│ im-worker-0 .. N-1       │
//!   (TCP)         │ accept batch │  (crossbeam queue)  │ mio::Poll, Slab<Session> │◀──── clients' frames
//!                 └──────────────┘                     │ TimerWheel, scratch buf  │────▶ responses, pushes
//!                                                      └────┬──────────────▲──────┘
//!                                       Upcall (try_send)   │              │ Downcall + wake
//!                                                      ┌────▼──────────────┴──────┐
//!                                                      │ logic tier (logic crate) │
//!                                                      └──────────────────────────┘
//! ```
//!
//! Files, in the order a frame passes through them: [`listener`] accepts,
//! [`worker`] runs the event loop, [`session`] holds one connection's
//! buffers and state over its [`transport`] (plain TCP, or [`tls`]),
//! [`link`] crosses to the logic tier and back, [`metrics`] counts, [`config`] configures.
//! `docs/lifetime-of-a-message.md` follows one frame through them by
//! function. The crate knows the logic tier only as the other end of the
//! link: the `server` crate wires the two together.

pub mod abuse;
pub mod config;
pub mod link;
pub mod listener;
pub mod metrics;
pub mod session;
pub mod tls;
pub mod transport;
pub mod websocket;
pub mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};

use mio::{Poll, Waker};

pub use config::GatewayConfig;
pub use link::{LocalUplink, Mailboxes, Uplink, UplinkError};
pub use metrics::Metrics;

use crate::link::{Inbox, Mailbox, Wake};
use crate::listener::{Handoff, Listener};
use crate::tls::TlsAcceptor;
use crate::transport::Kind;
use crate::worker::{Worker, WorkerParts};

/// Why a gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] runtime::config::Invalid),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("gateway.tls: {0}")]
    Tls(#[from] tls::TlsError),
}

/// A running gateway: its threads, its address, its way down to the workers.
pub struct GatewayHandle {
    id: u32,
    /// Where each listener listens: (kind, address).
    addrs: Vec<(Kind, SocketAddr)>,
    tls: Option<Arc<TlsAcceptor>>,
    shutdown: Arc<AtomicBool>,
    listener_wake: Arc<Wake>,
    worker_wakes: Vec<Arc<Wake>>,
    threads: Vec<JoinHandle<()>>,
    mailboxes: Mailboxes,
    open_connections: Arc<AtomicUsize>,
}

/// Binds `config.listen` (and `config.tls.listen`) and starts the listener
/// and worker threads. Upcalls go to `uplink`; the logic tier answers
/// through [`GatewayHandle::downlink`]. The gateway picks its id
/// ([`GatewayHandle::id`]) here: every session it reports to the logic tier
/// carries it. A TLS listener needs `config.tls.cert` and `key` set (the
/// composition root makes a self-signed pair when they are not).
pub fn start(
    config: &GatewayConfig,
    uplink: Arc<dyn Uplink>,
    metrics: &Metrics,
) -> Result<GatewayHandle, StartError> {
    config.validate()?;
    let io_error = |what: &'static str| {
        move |source: io::Error| StartError::Io {
            what: what.to_owned(),
            source,
        }
    };
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    let ws = Kind::Ws {
        tls: config.websocket.tls,
    };
    for (kind, field, addr) in [
        (Kind::Plain, "gateway.listen", &config.listen),
        (Kind::Tls, "gateway.tls.listen", &config.tls.listen),
        (ws, "gateway.websocket.listen", &config.websocket.listen),
    ] {
        if addr.is_empty() {
            continue;
        }
        let addr = runtime::config::socket_addr(field, addr)?;
        let cannot = |source| StartError::Io {
            what: format!("cannot listen on {addr} ({field})"),
            source,
        };
        let listener = Listener::bind(addr, config.listen_backlog).map_err(cannot)?;
        addrs.push((kind, listener.local_addr().map_err(cannot)?));
        listeners.push((listener, kind));
    }
    let tls = if config.needs_tls() {
        Some(Arc::new(TlsAcceptor::load(
            std::path::Path::new(&config.tls.cert),
            std::path::Path::new(&config.tls.key),
        )?))
    } else {
        None
    };
    let ws_policy = (!config.websocket.listen.is_empty()).then(|| {
        Arc::new(websocket::WsPolicy {
            path: config.websocket.path.clone(),
            origins: config.websocket.origins.clone(),
            max_frame: config.max_frame,
        })
    });
    let id = gateway_id().map_err(io_error("cannot pick a gateway id"))?;
    let io_error = io_error("cannot start the event loops");
    let shared = Arc::new(config.clone());
    let shutdown = Arc::new(AtomicBool::new(false));
    let open_connections = Arc::new(AtomicUsize::new(0));
    let sources = Arc::new(abuse::SourceLimits::new(config.source_policy()));

    let mut handoffs = Vec::new();
    let mut mailboxes = Vec::new();
    let mut workers = Vec::new();
    for worker in 0..config.worker_count() {
        let poll = Poll::new().map_err(io_error)?;
        let wake = Arc::new(Wake::new(
            Waker::new(poll.registry(), worker::WAKER_TOKEN).map_err(io_error)?,
        ));
        let (conn_tx, conn_rx) = crossbeam_channel::unbounded();
        let (down_tx, down_rx) = crossbeam_channel::unbounded();
        handoffs.push(Handoff {
            connections: conn_tx,
            wake: wake.clone(),
        });
        mailboxes.push(Mailbox {
            downcalls: down_tx,
            wake: wake.clone(),
            unwoken: AtomicBool::new(false),
        });
        let parts = WorkerParts {
            gateway: id,
            id: worker as u16,
            poll,
            accepted: conn_rx,
            tls: tls.clone(),
            ws: ws_policy.clone(),
            inbox: Inbox {
                downcalls: down_rx,
                wake,
            },
            uplink: uplink.clone(),
            metrics: metrics.block(),
            shutdown: shutdown.clone(),
            open_connections: open_connections.clone(),
            sources: sources.clone(),
        };
        workers.push(Worker::new(parts, shared.clone()));
    }

    let poll = Poll::new().map_err(io_error)?;
    let listener_wake = Arc::new(Wake::new(
        Waker::new(poll.registry(), listener::WAKER_TOKEN).map_err(io_error)?,
    ));
    let worker_wakes = handoffs.iter().map(|h| h.wake.clone()).collect();
    let listener = Listener {
        poll,
        listeners,
        workers: handoffs,
        accept_batch: config.accept_batch,
        max_connections: config.max_connections,
        open_connections: open_connections.clone(),
        sources,
        shutdown: shutdown.clone(),
        metrics: metrics.block(),
    };

    let mut threads = Vec::new();
    for (n, worker) in workers.into_iter().enumerate() {
        threads.push(spawn(format!("im-worker-{n}"), move || worker.run()).map_err(io_error)?);
    }
    threads.push(spawn("im-listener".into(), move || listener.run()).map_err(io_error)?);
    for (kind, addr) in &addrs {
        log::info!("gateway {id:08x}: {kind:?} clients on {addr}");
    }
    log::info!("gateway {id:08x} running {} workers", config.worker_count());
    Ok(GatewayHandle {
        id,
        addrs,
        tls,
        shutdown,
        listener_wake,
        worker_wakes,
        threads,
        mailboxes: Mailboxes::new(id, mailboxes),
        open_connections,
    })
}

/// A random id: unique per process lifetime across every gateway of a
/// deployment without any coordination (a restarted gateway is a new one, so
/// nothing addressed to its previous run reaches its new sessions).
/// A random gateway id, never 0: the logic tier reserves 0 for requests
/// made inside its own process (the HTTP API).
fn gateway_id() -> io::Result<u32> {
    loop {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
        let id = u32::from_le_bytes(bytes);
        if id != 0 {
            return Ok(id);
        }
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name).spawn(f)
}

impl GatewayHandle {
    /// This gateway's id: `SessionId::gateway` of its sessions.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Where plain clients connect (or, with no plain listener, TLS ones).
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0].1
    }

    /// Where TLS clients connect, if there is a TLS listener.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.addr_of(|kind| kind == Kind::Tls)
    }

    /// Where WebSocket clients connect, if there is a WebSocket listener.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.addr_of(|kind| matches!(kind, Kind::Ws { .. }))
    }

    fn addr_of(&self, kind: impl Fn(Kind) -> bool) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(k, _)| kind(*k))
            .map(|(_, addr)| *addr)
    }

    /// Reads the TLS certificate and key again (SIGHUP): new connections
    /// use them, established ones keep what they have.
    pub fn reload_tls(&self) -> Result<(), tls::TlsError> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// The logic tier's way to reach this gateway's sessions.
    pub fn downlink(&self) -> Mailboxes {
        self.mailboxes.clone()
    }

    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Acquire)
    }

    /// Stops accepting, kicks every session ("server shutting down"),
    /// flushes what is queued and closes, within `shutdown_grace_secs`.
    /// Returns at once; [`join`](Self::join) waits for it.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.listener_wake.wake();
        for wake in &self.worker_wakes {
            wake.wake();
        }
    }

    /// Waits for every gateway thread to finish.
    pub fn join(self) {
        for thread in self.threads {
            let name = thread.thread().name().unwrap_or("?").to_owned();
            if thread.join().is_err() {
                log::error!("gateway thread {name} panicked");
            }
        }
    }
}
