//! What a session reads its frames from and writes them to: the byte
//! stream under the protocol.
//!
//! Plain TCP, or TLS (`tls.rs`); WebSocket goes here too. They are why this
//! is more than a socket: a TLS stream may need to write while the session
//! only reads (handshake records, a close_notify), and a WebSocket may need
//! to answer a ping nobody asked the session about.
//! So the session never asks the socket directly what to wait for; the
//! event loop derives interest from what the session has queued *and* what
//! the transport still wants to write ([`Transport::wants_write`]).
//!
//! Whatever runs on it, a transport is one TCP socket underneath: that is
//! what the worker registers with mio ([`Transport::socket`]).

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use mio::net::TcpStream;

use crate::tls::TlsStream;
use crate::websocket::WsStream;

/// Which listener a connection came in on: what its transport is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Tls,
    /// WebSocket, over TCP (`ws`) or TLS (`wss`).
    Ws {
        tls: bool,
    },
}

/// One connection's byte stream.
pub enum Transport {
    /// Frames straight on the TCP stream.
    Plain(TcpStream),
    /// Frames inside TLS records.
    Tls(Box<TlsStream>),
    /// Frames as WebSocket messages (over TCP or TLS).
    Ws(Box<WsStream>),
}

impl Transport {
    /// Reads decoded application bytes: what the frame codec sees.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buf),
            Transport::Tls(tls) => tls.read(buf),
            Transport::Ws(ws) => ws.read(buf),
        }
    }

    /// Writes application bytes, gathered from many frames at once.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write_vectored(bufs),
            Transport::Tls(tls) => tls.write_vectored(bufs),
            Transport::Ws(ws) => ws.write_vectored(bufs),
        }
    }

    /// Whether the transport holds bytes of its own to write (records,
    /// control frames) whatever the session has queued. Plain TCP never does.
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.wants_write(),
            Transport::Ws(ws) => ws.wants_write(),
        }
    }

    /// Writes what the transport holds of its own, as far as the socket
    /// takes it (a full socket is not an error).
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(tls) => tls.flush(),
            Transport::Ws(ws) => ws.flush(),
        }
    }

    /// Whether a read shorter than asked means the socket is empty. Not for
    /// TLS: rustls hands out one record's plaintext at a time, with more in
    /// the socket.
    pub fn short_read_drains(&self) -> bool {
        matches!(self, Transport::Plain(_))
    }

    /// Sends end-of-stream after what is written: the peer reads our last
    /// frame, then EOF.
    pub fn shutdown_write(&mut self) {
        match self {
            Transport::Plain(stream) => {
                let _ = stream.shutdown(Shutdown::Write);
            }
            Transport::Tls(tls) => tls.shutdown_write(),
            Transport::Ws(ws) => ws.shutdown_write(),
        }
    }

    /// Makes the coming close abortive (RST): the kernel drops what it still
    /// holds for the peer instead of keeping an orphaned socket around to
    /// dribble megabytes to a client that stopped reading.
    pub fn abort_on_close(&self) {
        let stream = self.tcp();
        let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    }

    /// The TCP socket underneath, to register with the poll.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            Transport::Tls(tls) => tls.socket(),
            Transport::Ws(ws) => ws.inner().socket(),
        }
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            Transport::Tls(tls) => tls.tcp(),
            Transport::Ws(ws) => ws.inner_ref().tcp(),
        }
    }
}

/// Moves the front of `pending` into `buf`; returns how much. An emptied
/// buffer gives its memory back: an idle session holds none.
pub(crate) fn take_into(pending: &mut Vec<u8>, buf: &mut [u8]) -> usize {
    let n = buf.len().min(pending.len());
    buf[..n].copy_from_slice(&pending[..n]);
    pending.drain(..n);
    if pending.is_empty() {
        *pending = Vec::new();
    }
    n
}

/// Writes `pending` through `write` until it is empty or `write` would
/// block (not an error: what is left waits for WRITABLE). An emptied buffer
/// gives its memory back.
pub(crate) fn write_out(
    pending: &mut Vec<u8>,
    mut write: impl FnMut(&[u8]) -> io::Result<usize>,
) -> io::Result<()> {
    while !pending.is_empty() {
        match write(pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    *pending = Vec::new();
    Ok(())
}
