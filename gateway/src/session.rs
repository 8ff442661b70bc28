//! One client connection: its transport, where it is in the login
//! handshake, its partial inbound frame and its queue of outbound frames.
//!
//! An idle session holds no buffer: the read buffer exists only while a
//! partial frame is waiting for the rest of its bytes, and the outbound queue
//! only while frames are waiting for the socket. That keeps a million idle
//! sessions at a couple of hundred bytes each (see docs/benchmarks.md).

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};
use mio::Interest;
use protocol::{Frame, FrameCodec, FrameError};
use runtime::rate::TokenBucket;

use crate::transport::Transport;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Connected; only LoginReq and Ping are accepted.
    AwaitingLogin,
    /// A LoginReq for `uid` went to the logic tier. Further input waits in
    /// the socket (or the read buffer) until the answer comes.
    Authenticating { uid: u64 },
    /// Logged in as `uid`.
    Active { uid: u64 },
    /// Its last frames are being flushed; input is read and discarded.
    Closing,
}

impl State {
    /// The uid, once logged in.
    pub fn uid(&self) -> Option<u64> {
        match self {
            State::Active { uid } => Some(*uid),
            _ => None,
        }
    }

    /// Whether the logic tier has heard of this session (and so must be told
    /// when it closes).
    pub fn known_to_logic(&self) -> bool {
        self.claimed_uid().is_some()
    }

    /// The uid the logic tier may know this session by: the one it logged
    /// in as, or is logging in as (what `Upcall::Closed` names, so the
    /// logic tier forgets a login it accepted just before the close).
    pub fn claimed_uid(&self) -> Option<u64> {
        match self {
            State::Authenticating { uid } | State::Active { uid } => Some(*uid),
            State::AwaitingLogin | State::Closing => None,
        }
    }
}

/// When a read may stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadUntil {
    /// At a read shorter than the buffer: the socket was empty then, and
    /// the edge-triggered poll reports the next bytes as a new event, so
    /// the read that would only say WouldBlock (one syscall in two, under
    /// load) is skipped.
    ShortRead,
    /// At WouldBlock or end of stream: when the peer has closed (its FIN
    /// may be queued behind the data, with no event to come) or when
    /// reading resumes without an event.
    WouldBlock,
}

/// What reading from the socket ended with.
#[derive(Debug)]
pub enum Fill {
    /// The socket is drained for now (WouldBlock).
    Drained,
    /// The read budget is spent; more may be waiting.
    BudgetSpent,
    /// The peer closed its side.
    Eof,
    Failed(io::Error),
}

pub struct Session {
    /// The byte stream the frames travel on (see `transport.rs`).
    pub transport: Transport,
    /// Unique per connection in this process; see `protocol::link::SessionId`.
    pub serial: u64,
    pub state: State,
    /// Bytes of a frame not yet complete. Empty, and unallocated, otherwise.
    read_buf: BytesMut,
    /// Encoded frames waiting for the socket; the front one may be partly written.
    out: VecDeque<Bytes>,
    /// Sum of the lengths in `out`: the slow-consumer measure.
    out_bytes: usize,
    /// Last time (worker clock, ms) a frame arrived: the heartbeat measure.
    pub last_active_ms: u64,
    /// Inbound frame rate limit.
    pub limiter: TokenBucket,
    /// Whether mio watches the socket for WRITABLE (only while `out` has bytes).
    pub writable_registered: bool,
    /// Whether the session is on the worker's list to flush this loop turn.
    pub dirty: bool,
    /// Whether the session is on the worker's list to read again next turn.
    pub read_pending: bool,
}

impl Session {
    pub fn new(transport: Transport, serial: u64, now_ms: u64, burst: u32) -> Session {
        Session {
            transport,
            serial,
            state: State::AwaitingLogin,
            read_buf: BytesMut::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            last_active_ms: now_ms,
            limiter: TokenBucket::full(burst, now_ms),
            writable_registered: false,
            dirty: false,
            read_pending: false,
        }
    }

    /// Reads from the socket until it is empty (as `until` tells), the
    /// peer closes, or `budget` bytes have been read (so that one busy
    /// client cannot keep its worker from the others). `scratch` is the
    /// worker's shared read area; only a partial frame's bytes stay with
    /// the session.
    pub fn fill(&mut self, scratch: &mut [u8], budget: usize, until: ReadUntil) -> (usize, Fill) {
        let mut total = 0;
        while total < budget {
            match self.transport.read(scratch) {
                Ok(0) => return (total, Fill::Eof),
                Ok(n) => {
                    self.read_buf.extend_from_slice(&scratch[..n]);
                    total += n;
                    if n < scratch.len()
                        && until == ReadUntil::ShortRead
                        && self.transport.short_read_drains()
                    {
                        return (total, Fill::Drained);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (total, Fill::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return (total, Fill::Failed(e)),
            }
        }
        (total, Fill::BudgetSpent)
    }

    /// The next whole frame from what has been read, if any.
    pub fn next_frame(&mut self, codec: &FrameCodec) -> Result<Option<Frame>, FrameError> {
        let frame = codec.decode(&mut self.read_buf);
        if self.read_buf.is_empty() && self.read_buf.capacity() > 0 {
            // Give the memory back: an idle session holds no read buffer.
            self.read_buf = BytesMut::new();
        }
        frame
    }

    /// Drops buffered input (a closing session reads and discards).
    pub fn discard_input(&mut self) {
        self.read_buf = BytesMut::new();
    }

    /// Reads and drops what the peer sends until the transport is empty.
    /// Returns true at end-of-stream (or a read error): the peer is gone.
    pub fn read_and_discard(&mut self, scratch: &mut [u8]) -> bool {
        self.discard_input();
        loop {
            match self.transport.read(scratch) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }

    /// Queues an encoded frame; returns the bytes now queued.
    pub fn queue(&mut self, frame: Bytes) -> usize {
        self.out_bytes += frame.len();
        self.out.push_back(frame);
        self.out_bytes
    }

    /// Writes queued frames until the queue is empty or the socket is full.
    /// Returns the bytes written; the queue tells whether it drained.
    pub fn flush(&mut self) -> io::Result<usize> {
        // What the transport holds of its own (TLS records) goes first.
        self.transport.flush()?;
        let mut written = 0;
        while !self.out.is_empty() {
            // Gather many small frames into one writev.
            let mut slices = [IoSlice::new(&[]); 64];
            let count = self
                .out
                .iter()
                .zip(slices.iter_mut())
                .map(|(frame, slice)| *slice = IoSlice::new(frame))
                .count();
            match self.transport.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.out.is_empty() && self.out.capacity() > 0 {
            // Give the memory back: an idle session holds no write queue.
            self.out = VecDeque::new();
        }
        Ok(written)
    }

    /// Drops `n` written bytes off the front of the queue.
    fn consume(&mut self, mut n: usize) {
        self.out_bytes -= n;
        while n > 0 {
            let Some(front) = self.out.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                self.out.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Drops everything queued (a slow consumer is closed without flushing).
    pub fn drop_output(&mut self) -> usize {
        let dropped = self.out_bytes;
        self.out = VecDeque::new();
        self.out_bytes = 0;
        dropped
    }

    /// Whether the poll must report WRITABLE for this session: while it
    /// or its transport has bytes waiting.
    pub fn wants_writable(&self) -> bool {
        self.has_output() || self.transport.wants_write()
    }

    /// The readiness to watch for: always readable, writable as above.
    pub fn interest(&self) -> Interest {
        if self.wants_writable() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }
}
