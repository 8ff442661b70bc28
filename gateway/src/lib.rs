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
//! buffers and state, [`link`] crosses to the logic tier and back,
//! [`metrics`] and [`admin`] report, [`config`] configures, [`node`] wires a
//! complete single-node server. `docs/lifetime-of-a-message.md` follows one
//! frame through them by function.

pub mod admin;
pub mod config;
pub mod link;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod session;
pub mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};

use mio::{Poll, Waker};

pub use config::{Config, ConfigError, GatewayConfig};
pub use link::{LocalUplink, Mailboxes, Uplink, UplinkError};
pub use metrics::Metrics;

use crate::link::{Inbox, Mailbox, Wake};
use crate::listener::{Handoff, Listener};
use crate::worker::{Worker, WorkerParts};

/// A running gateway: its threads, its address, its way down to the workers.
pub struct GatewayHandle {
    local_addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    listener_wake: Arc<Wake>,
    worker_wakes: Vec<Arc<Wake>>,
    threads: Vec<JoinHandle<()>>,
    mailboxes: Mailboxes,
    open_connections: Arc<AtomicUsize>,
}

/// Binds `config.listen` and starts the listener and worker threads. Upcalls
/// go to `uplink`; the logic tier answers through [`GatewayHandle::downlink`].
pub fn start(
    config: &GatewayConfig,
    uplink: Arc<dyn Uplink>,
    metrics: &Metrics,
) -> Result<GatewayHandle, ConfigError> {
    config.validate()?;
    let addr = config::parse_addr("gateway.listen", &config.listen)?;
    let io_error = |e: io::Error| ConfigError::Invalid {
        field: "gateway.listen",
        reason: format!("cannot listen on {addr}: {e}"),
    };
    let listener = Listener::bind(addr, config.listen_backlog).map_err(io_error)?;
    let local_addr = listener.local_addr().map_err(io_error)?;
    let shared = Arc::new(config.clone());
    let shutdown = Arc::new(AtomicBool::new(false));
    let open_connections = Arc::new(AtomicUsize::new(0));

    let mut handoffs = Vec::new();
    let mut mailboxes = Vec::new();
    let mut workers = Vec::new();
    for id in 0..config.worker_count() {
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
            id: id as u32,
            poll,
            accepted: conn_rx,
            inbox: Inbox {
                downcalls: down_rx,
                wake,
            },
            uplink: uplink.clone(),
            metrics: metrics.block(),
            shutdown: shutdown.clone(),
            open_connections: open_connections.clone(),
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
        listener,
        workers: handoffs,
        accept_batch: config.accept_batch,
        max_connections: config.max_connections,
        open_connections: open_connections.clone(),
        shutdown: shutdown.clone(),
        metrics: metrics.block(),
    };

    let mut threads = Vec::new();
    for (id, worker) in workers.into_iter().enumerate() {
        threads.push(spawn(format!("im-worker-{id}"), move || worker.run()).map_err(io_error)?);
    }
    threads.push(spawn("im-listener".into(), move || listener.run()).map_err(io_error)?);
    log::info!(
        "gateway listening on {local_addr} with {} workers",
        config.worker_count()
    );
    Ok(GatewayHandle {
        local_addr,
        shutdown,
        listener_wake,
        worker_wakes,
        threads,
        mailboxes: Mailboxes::new(mailboxes),
        open_connections,
    })
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name).spawn(f)
}

impl GatewayHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
