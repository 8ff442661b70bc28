//! One non-blocking client connection, driven by a `mio::Poll`.
//!
//! The load tester holds thousands of these per thread, so a connection is
//! a socket and two buffers: frames are encoded into the write buffer and
//! flushed when the socket takes them, and read bytes are decoded into
//! frames as they arrive.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use protocol::body::event_frame;
use protocol::{Body, Frame, FrameCodec};

pub struct Conn {
    pub stream: TcpStream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    codec: FrameCodec,
    last_req_id: u64,
    /// Whether mio is asked for WRITABLE (only while bytes wait).
    pub wants_write: bool,
}

/// Opens a non-blocking connection, from `source` if given (several
/// loopback source addresses multiply the ports available).
pub fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            codec: FrameCodec::default(),
            last_req_id: 0,
            wants_write: false,
        }
    }

    /// Encodes a request into the write buffer; returns its req_id.
    pub fn request(&mut self, body: impl Into<Body>) -> u64 {
        self.last_req_id += 1;
        let frame = Frame {
            req_id: self.last_req_id,
            body: Some(body.into()),
        };
        // Load-test frames are small and well-formed: encoding cannot fail.
        let _ = self.codec.encode(&frame, &mut self.write_buf);
        self.last_req_id
    }

    /// Encodes a frame that is not a request (PushAck).
    pub fn notify(&mut self, body: impl Into<Body>) {
        let _ = self.codec.encode(&event_frame(body), &mut self.write_buf);
    }

    pub fn has_output(&self) -> bool {
        !self.write_buf.is_empty()
    }

    /// Writes what the socket takes. Ok(true) when everything went out.
    pub fn flush(&mut self) -> io::Result<bool> {
        while !self.write_buf.is_empty() {
            match self.stream.write(&self.write_buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.write_buf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads what is available and appends whole frames to `frames`.
    /// Ok(false) when the server closed the connection.
    pub fn read(&mut self, frames: &mut Vec<Frame>, peer_closed: bool) -> io::Result<bool> {
        let mut chunk = [0u8; 32 * 1024];
        let mut open = true;
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => {
                    self.read_buf.extend_from_slice(&chunk[..n]);
                    // A short read emptied the socket; the poll reports
                    // the next bytes (as the gateway's worker does, see
                    // its session.rs), unless the peer closed.
                    if n < chunk.len() && !peer_closed {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        while let Some(frame) = self
            .codec
            .decode(&mut self.read_buf)
            .map_err(io::Error::other)?
        {
            frames.push(frame);
        }
        Ok(open)
    }
}
