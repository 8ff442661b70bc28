//! Many client connections on one `mio::Poll`: what every mode drives.
//!
//! The modes decide what to send; the fleet moves bytes. `poll` hands each
//! decoded frame (or a close) to the caller, and `flush` writes whatever the
//! caller queued, asking for WRITABLE only while bytes are left over.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use protocol::{Body, Frame, pb, token};
use slab::Slab;

use crate::conn::{self, Conn};

pub enum Event {
    Frame(Frame),
    /// The server closed the connection (or it failed).
    Closed,
}

pub struct Fleet {
    poll: Poll,
    events: Events,
    /// Wakes `poll` on time when its timeout is under a millisecond.
    timer: PreciseTimer,
    pub conns: Slab<Conn>,
    /// Connections with output queued since the last flush.
    dirty: Vec<usize>,
    frames: Vec<Frame>,
}

impl Fleet {
    pub fn new() -> io::Result<Fleet> {
        let poll = Poll::new()?;
        let timer = PreciseTimer::new(&poll)?;
        Ok(Fleet {
            poll,
            events: Events::with_capacity(4096),
            timer,
            conns: Slab::new(),
            dirty: Vec::new(),
            frames: Vec::new(),
        })
    }

    /// Starts connecting; the connection is usable (requests queue) at once.
    pub fn open(&mut self, addr: SocketAddr, source: Option<IpAddr>) -> io::Result<usize> {
        let mut stream = conn::connect(addr, source)?;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(Conn::new(stream)?).wants_write = true;
        Ok(key)
    }

    pub fn close(&mut self, key: usize) {
        if self.conns.contains(key) {
            let mut conn = self.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    /// Queues a request on `key`; returns its req_id.
    pub fn request(&mut self, key: usize, body: impl Into<Body>) -> u64 {
        self.dirty.push(key);
        self.conns[key].request(body)
    }

    pub fn notify(&mut self, key: usize, body: impl Into<Body>) {
        self.dirty.push(key);
        self.conns[key].notify(body)
    }

    /// Waits up to `timeout` for readiness and hands every frame and close
    /// to `handle`. Closed connections are removed after `handle` sees them.
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        mut handle: impl FnMut(&mut Fleet, usize, Event),
    ) -> io::Result<()> {
        let timeout = self.timer.arm(timeout)?;
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let ready: Vec<(usize, bool, bool, bool)> = self
            .events
            .iter()
            .filter(|e| e.token() != PreciseTimer::TOKEN)
            .map(|e| {
                let closed = e.is_read_closed() || e.is_error();
                (
                    e.token().0,
                    e.is_readable() || closed,
                    closed,
                    e.is_writable(),
                )
            })
            .collect();
        for (key, readable, closed, writable) in ready {
            if writable && self.conns.contains(key) {
                self.dirty.push(key);
            }
            if !readable || !self.conns.contains(key) {
                continue;
            }
            let mut frames = std::mem::take(&mut self.frames);
            let open = self.conns[key].read(&mut frames, closed).unwrap_or(false);
            if open && self.conns[key].has_output() {
                // TLS has records to send back (its handshake).
                self.dirty.push(key);
            }
            for frame in frames.drain(..) {
                handle(self, key, Event::Frame(frame));
            }
            self.frames = frames;
            if !open && self.conns.contains(key) {
                handle(self, key, Event::Closed);
                self.close(key);
            }
        }
        Ok(())
    }

    /// Writes what was queued; returns the keys whose connection failed.
    pub fn flush(&mut self) -> Vec<usize> {
        let mut failed = Vec::new();
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for key in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            match conn.flush() {
                Ok(drained) => {
                    if drained == conn.wants_write {
                        conn.wants_write = !drained;
                        let interest = if drained {
                            Interest::READABLE
                        } else {
                            Interest::READABLE | Interest::WRITABLE
                        };
                        let _ =
                            self.poll
                                .registry()
                                .reregister(&mut conn.stream, Token(key), interest);
                    }
                }
                Err(_) => failed.push(key),
            }
        }
        self.dirty = dirty;
        failed
    }

    /// Opens one logged-in connection per `(uid, device)`, to the given
    /// server addresses and from the given source addresses, each in turn.
    /// Returns the keys (None where it failed) and how long it took.
    pub fn login_all(
        &mut self,
        addrs: &[SocketAddr],
        sources: &[IpAddr],
        secret: &[u8],
        who: &[(u64, String)],
        timeout: Duration,
    ) -> (Vec<Option<usize>>, Duration) {
        let started = Instant::now();
        let expires = runtime::clock::unix_secs() + 24 * 3600;
        let mut keys = vec![None; who.len()];
        let mut pending = std::collections::HashMap::new();
        for (i, (uid, device)) in who.iter().enumerate() {
            let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
            let Ok(key) = self.open(addrs[i % addrs.len()], source) else {
                continue;
            };
            self.request(
                key,
                pb::LoginReq {
                    uid: *uid,
                    token: token::mint(secret, *uid, expires),
                    device_id: device.clone(),
                    platform: pb::Platform::Pc as i32,
                },
            );
            pending.insert(key, i);
            // Keep the connect queue moving while opening thousands.
            if i % 256 == 255 {
                self.settle_logins(&mut pending, &mut keys, Duration::ZERO);
            }
        }
        let deadline = started + timeout;
        let progress = Progress::new();
        while !pending.is_empty() && Instant::now() < deadline {
            self.settle_logins(&mut pending, &mut keys, Duration::from_millis(20));
            progress.show(|| format!("logged in {} of {}", who.len() - pending.len(), who.len()));
        }
        progress.done();
        for key in pending.into_keys() {
            self.close(key);
        }
        (keys, started.elapsed())
    }

    fn settle_logins(
        &mut self,
        pending: &mut std::collections::HashMap<usize, usize>,
        keys: &mut [Option<usize>],
        timeout: Duration,
    ) {
        for key in self.flush() {
            pending.remove(&key);
            self.close(key);
        }
        let _ = self.poll(Some(timeout), |fleet, key, event| match event {
            Event::Frame(frame) if frame.req_id == 1 => {
                if let Some(i) = pending.remove(&key) {
                    match frame.body {
                        Some(Body::LoginResp(_)) => keys[i] = Some(key),
                        _ => fleet.close(key),
                    }
                }
            }
            Event::Frame(_) => {}
            Event::Closed => {
                pending.remove(&key);
            }
        });
    }
}

/// A timerfd in the poll, armed when `poll` is asked to wait less than a
/// millisecond: epoll's timeout is in whole milliseconds (mio rounds up), so
/// a fixed-rate send due in 50 µs would otherwise leave up to a millisecond
/// late when no reply wakes the poll first, and that lateness would count
/// as the server's latency. Armed only for such waits, so it costs a wake-up
/// only when nothing else would have woken the poll in time.
struct PreciseTimer {
    fd: OwnedFd,
    armed: bool,
}

impl PreciseTimer {
    /// Connection keys are slab indices; this one is never handed out.
    const TOKEN: Token = Token(usize::MAX);

    fn new(poll: &Poll) -> io::Result<PreciseTimer> {
        // SAFETY: timerfd_create returns a new descriptor or -1.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor we own from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        poll.registry().register(
            &mut SourceFd(&fd.as_raw_fd()),
            Self::TOKEN,
            Interest::READABLE,
        )?;
        Ok(PreciseTimer { fd, armed: false })
    }

    /// Arms (or disarms) the timer for a poll with `timeout`; returns the
    /// timeout to give epoll.
    fn arm(&mut self, timeout: Option<Duration>) -> io::Result<Option<Duration>> {
        // An expiry is never read: setting the timer again clears it, and
        // the edge-triggered poll reports only a new one.
        let precise = timeout.filter(|t| !t.is_zero() && *t < Duration::from_millis(1));
        if precise.is_none() && !self.armed {
            return Ok(timeout);
        }
        let value = precise.unwrap_or(Duration::ZERO); // zero disarms
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: value.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: a valid descriptor and a pointer to a local struct.
        if unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) }
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        self.armed = precise.is_some();
        // Epoll's own timeout stays as a backstop.
        Ok(timeout)
    }
}

/// A live progress line on a terminal (stderr), at most twice a second;
/// nothing at all when stderr is not a terminal.
pub struct Progress {
    enabled: bool,
    next: std::cell::Cell<Instant>,
    /// Whether a line is on the screen (so `done` ends it).
    shown: std::cell::Cell<bool>,
}

impl Progress {
    pub fn new() -> Progress {
        use std::io::IsTerminal;
        Progress {
            enabled: std::io::stderr().is_terminal(),
            next: std::cell::Cell::new(Instant::now() + Duration::from_millis(500)),
            shown: std::cell::Cell::new(false),
        }
    }

    pub fn show(&self, line: impl FnOnce() -> String) {
        if self.enabled && Instant::now() >= self.next.get() {
            self.next.set(Instant::now() + Duration::from_millis(500));
            eprint!("\r  {}   ", line());
            self.shown.set(true);
        }
    }

    pub fn done(&self) {
        if self.shown.replace(false) {
            eprintln!();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}
