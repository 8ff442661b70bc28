//! One non-blocking client connection, driven by a `mio::Poll`.
//!
//! The load tester holds thousands of these per thread, so a connection is
//! a socket and two buffers: frames are encoded into the write buffer and
//! flushed when the socket takes them, and read bytes are decoded into
//! frames as they arrive. With `--tls` each connection is a rustls client
//! over the same non-blocking socket.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use protocol::body::event_frame;
use protocol::{Body, Frame, FrameCodec};
use rustls::ClientConnection;
use rustls::pki_types::ServerName;

/// TLS for every connection this process opens (`--tls CA_FILE`), set once
/// at start.
static TLS: OnceLock<Tls> = OnceLock::new();

struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    /// The flags that set it, for child processes.
    args: [String; 4],
}

/// Makes every connection from now on a TLS one, trusting the CAs in the
/// PEM file `ca` and expecting the server to be `server_name`.
pub fn use_tls(ca: &std::path::Path, server_name: &str) -> anyhow::Result<()> {
    let pem = std::fs::read(ca)?;
    let config = client::tls_config(&pem)?;
    let name = ServerName::try_from(server_name.to_owned())?;
    let args = [
        "--tls".to_owned(),
        ca.display().to_string(),
        "--tls-name".to_owned(),
        server_name.to_owned(),
    ];
    let _ = TLS.set(Tls { config, name, args });
    Ok(())
}

/// The flags a child process needs to connect as this one does.
pub fn tls_args() -> &'static [String] {
    TLS.get().map_or(&[], |tls| &tls.args)
}

pub struct Conn {
    pub stream: TcpStream,
    /// The TLS client state, with `--tls`.
    tls: Option<Box<ClientConnection>>,
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
    pub fn new(stream: TcpStream) -> io::Result<Conn> {
        let tls = match TLS.get() {
            Some(tls) => Some(Box::new(
                ClientConnection::new(tls.config.clone(), tls.name.clone())
                    .map_err(io::Error::other)?,
            )),
            None => None,
        };
        Ok(Conn {
            stream,
            tls,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            codec: FrameCodec::default(),
            last_req_id: 0,
            wants_write: false,
        })
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
        !self.write_buf.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Writes what the socket takes. Ok(true) when everything went out.
    pub fn flush(&mut self) -> io::Result<bool> {
        if let Some(tls) = self.tls.as_mut() {
            while !self.write_buf.is_empty() {
                match tls.writer().write(&self.write_buf)? {
                    0 => break,
                    n => self.write_buf.advance(n),
                }
            }
            while tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(self.write_buf.is_empty());
        }
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
        let open = match self.tls.as_mut() {
            Some(tls) => read_tls(tls, &mut self.stream, &mut self.read_buf)?,
            None => self.read_plain(peer_closed)?,
        };
        while let Some(frame) = self
            .codec
            .decode(&mut self.read_buf)
            .map_err(io::Error::other)?
        {
            frames.push(frame);
        }
        Ok(open)
    }

    fn read_plain(&mut self, peer_closed: bool) -> io::Result<bool> {
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
        Ok(open)
    }
}

/// Reads records until the socket is empty, and their plaintext into
/// `read_buf`. Ok(false) when the server closed.
fn read_tls(
    tls: &mut ClientConnection,
    stream: &mut TcpStream,
    read_buf: &mut BytesMut,
) -> io::Result<bool> {
    let mut chunk = [0u8; 32 * 1024];
    loop {
        let open = match tls.read_tls(stream) {
            Ok(0) => false,
            Ok(_) => {
                tls.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(e) => return Err(e),
        };
        // Take the plaintext out, so rustls has room for the next records.
        loop {
            match tls.reader().read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => read_buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if !open {
            return Ok(false);
        }
    }
}
