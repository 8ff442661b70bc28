//! The listener thread: accepts connections and deals them out to workers.
//!
//! One listener with queues to the workers, rather than an SO_REUSEPORT
//! socket per worker: the kernel's reuseport hashing balances by address
//! tuple, not by load, and cannot enforce one `max_connections` across the
//! node; a single accept point counts every connection and deals them out
//! round-robin. Accepting is cheap next to what workers do per connection,
//! so one thread keeps up with a reconnect storm (see docs/benchmarks.md).
//!
//! Connections are accepted in batches of `accept_batch`; each worker that
//! got some is woken once per batch, not once per connection.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use protocol::body::error_frame;
use protocol::{ErrorCode, FrameCodec};

use crate::abuse::SourceLimits;
use crate::link::Wake;
use crate::metrics::{Block, Counter};
use crate::transport::Kind;

/// The waker's token; listening sockets take their index.
pub const WAKER_TOKEN: Token = Token(usize::MAX);

/// How one worker receives new connections, each with the kind of
/// listener it came in on.
pub struct Handoff {
    pub connections: Sender<(TcpStream, Kind)>,
    pub wake: Arc<Wake>,
}

pub struct Listener {
    pub poll: Poll,
    /// The listening sockets (plain, TLS), each with what it serves.
    pub listeners: Vec<(TcpListener, Kind)>,
    pub workers: Vec<Handoff>,
    pub accept_batch: usize,
    pub max_connections: usize,
    pub open_connections: Arc<AtomicUsize>,
    /// New connections per second per source address.
    pub sources: Arc<SourceLimits>,
    pub shutdown: Arc<AtomicBool>,
    pub metrics: Arc<Block>,
}

impl Listener {
    /// Binds with an explicit backlog (std and mio pick their own).
    pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
        let domain = socket2::Domain::for_address(addr);
        let socket =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(backlog.min(i32::MAX as u32) as i32)?;
        Ok(TcpListener::from_std(socket.into()))
    }

    pub fn run(mut self) {
        for (token, (listener, _)) in self.listeners.iter_mut().enumerate() {
            if let Err(e) =
                self.poll
                    .registry()
                    .register(listener, Token(token), Interest::READABLE)
            {
                log::error!("listener: cannot register: {e}");
                return;
            }
        }
        let mut events = Events::with_capacity(8);
        let mut next_worker = 0;
        // Set after running out of file descriptors: the backlog still holds
        // connections but epoll will not say so again; look after a pause.
        let mut retry: Option<Duration> = None;
        loop {
            if let Err(e) = self.poll.poll(&mut events, retry) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("listener: poll failed: {e}");
                    return;
                }
            }
            if self.shutdown.load(Ordering::Acquire) {
                log::info!("listener: stopped accepting");
                return;
            }
            retry = None;
            for listener in 0..self.listeners.len() {
                retry = retry.or(self.accept_all(listener, &mut next_worker));
            }
        }
    }

    /// Accepts until the backlog is empty, handing out a batch at a time.
    fn accept_all(&mut self, listener: usize, next_worker: &mut usize) -> Option<Duration> {
        let mut woken = vec![false; self.workers.len()];
        let kind = self.listeners[listener].1;
        loop {
            for _ in 0..self.accept_batch {
                match self.listeners[listener].0.accept() {
                    Ok((stream, peer)) => {
                        self.hand_out(stream, peer.ip(), kind, next_worker, &mut woken)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.wake(&mut woken);
                        return None;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // EMFILE/ENFILE and friends: say so, retry shortly.
                        log::warn!("listener: accept failed: {e}");
                        self.wake(&mut woken);
                        return Some(Duration::from_millis(100));
                    }
                }
            }
            self.wake(&mut woken);
        }
    }

    fn hand_out(
        &mut self,
        stream: TcpStream,
        peer: IpAddr,
        kind: Kind,
        next_worker: &mut usize,
        woken: &mut [bool],
    ) {
        if self.open_connections.load(Ordering::Acquire) >= self.max_connections {
            self.metrics.add(Counter::Refused, 1);
            refuse(
                stream,
                kind,
                ErrorCode::Unavailable,
                "server full: max_connections reached",
            );
            return;
        }
        if !self.sources.admit_connection(peer) {
            self.metrics.add(Counter::AcceptRateLimited, 1);
            refuse(
                stream,
                kind,
                ErrorCode::RateLimited,
                "too many new connections from this address, retry later",
            );
            return;
        }
        // Frames are small and we batch writes ourselves: no Nagle delay.
        let _ = stream.set_nodelay(true);
        self.open_connections.fetch_add(1, Ordering::AcqRel);
        let worker = *next_worker % self.workers.len();
        *next_worker = next_worker.wrapping_add(1);
        if self.workers[worker]
            .connections
            .send((stream, kind))
            .is_err()
        {
            // The worker has stopped (shutting down): the connection just closes.
            self.open_connections.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        self.metrics.add(Counter::Accepted, 1);
        woken[worker] = true;
    }

    fn wake(&self, woken: &mut [bool]) {
        for (worker, woke) in woken.iter_mut().enumerate() {
            if std::mem::take(woke) {
                self.workers[worker].wake.wake();
            }
        }
    }
}

/// Tells a connection over a limit why it is closed: one error frame into
/// the fresh socket's empty send buffer, then close. (A TLS or WebSocket
/// client cannot read a bare frame: it just sees the close.)
fn refuse(mut stream: TcpStream, kind: Kind, code: ErrorCode, why: &str) {
    if kind != Kind::Plain {
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    }
    let frame = error_frame(0, code, why);
    if let Ok(bytes) = FrameCodec::default().encode_to_bytes(&frame) {
        let _ = stream.write(&bytes);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}
