//! One non-blocking client connection, driven by a `mio::Poll`.
//!
//! The load tester holds thousands of these per thread, so a connection is
//! a socket and two buffers: frames are encoded into the write buffer and
//! flushed when the socket takes them, and read bytes are decoded into
//! frames as they arrive. With `--tls` each connection is a rustls client
//! over the same non-blocking socket; with `--ws` it speaks WebSocket (one
//! binary message per frame), over TCP or TLS.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use protocol::body::event_frame;
use protocol::websocket as ws;
use protocol::{Body, Frame, FrameCodec};

/// The masking key of the load tester's WebSocket frames (a browser's are
/// random; the server does not care which).
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x9e];
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

/// WebSocket for every connection from now on (`--ws PATH`): the upgrade
/// request each connection starts with.
static WS: OnceLock<(String, Vec<u8>)> = OnceLock::new();

pub fn use_websocket(path: &str) {
    let upgrade = format!(
        "GET {path} HTTP/1.1\r\nHost: im\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let _ = WS.set((path.to_owned(), upgrade.into_bytes()));
}

/// The flags a child process needs to connect as this one does.
pub fn child_args() -> Vec<String> {
    let mut args: Vec<String> = TLS.get().map_or(Vec::new(), |tls| tls.args.to_vec());
    if let Some((path, _)) = WS.get() {
        args.extend(["--ws".to_owned(), path.clone()]);
    }
    args
}

/// A WebSocket client's state on one connection.
#[derive(Default)]
struct Ws {
    /// The server's 101 has been read.
    upgraded: bool,
    /// Bytes read and not yet made into frames.
    incoming: Vec<u8>,
    /// A fragmented message being put together.
    message: Vec<u8>,
}

impl Ws {
    /// Moves the server's messages out of `incoming` as length-prefixed
    /// frames into `out`. Ok(false) when the server closed.
    fn take(&mut self, out: &mut BytesMut) -> io::Result<bool> {
        if !self.upgraded {
            let Some(end) = self.incoming.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(true);
            };
            if !self.incoming.starts_with(b"HTTP/1.1 101") {
                return Err(io::Error::other(format!(
                    "WebSocket upgrade refused: {}",
                    String::from_utf8_lossy(&self.incoming[..end])
                )));
            }
            self.incoming.drain(..end + 4);
            self.upgraded = true;
        }
        while let Some(header) = ws::parse_header(&self.incoming).map_err(io::Error::other)? {
            let end = header.header_len + header.payload_len as usize;
            if self.incoming.len() < end {
                break;
            }
            let payload = &self.incoming[header.header_len..end];
            match header.opcode {
                ws::OP_BINARY | ws::OP_CONTINUATION => {
                    self.message.extend_from_slice(payload);
                    if header.fin {
                        out.extend_from_slice(&(self.message.len() as u32).to_be_bytes());
                        out.extend_from_slice(&self.message);
                        self.message.clear();
                    }
                }
                ws::OP_CLOSE => return Ok(false),
                _ => {}
            }
            self.incoming.drain(..end);
        }
        Ok(true)
    }
}

pub struct Conn {
    pub stream: TcpStream,
    /// The TLS client state, with `--tls`.
    tls: Option<Box<ClientConnection>>,
    /// The WebSocket client state, with `--ws`.
    ws: Option<Box<Ws>>,
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
        let mut write_buf = BytesMut::new();
        let ws = WS.get().map(|(_, upgrade)| {
            write_buf.extend_from_slice(upgrade);
            Box::<Ws>::default()
        });
        Ok(Conn {
            stream,
            tls,
            ws,
            read_buf: BytesMut::new(),
            write_buf,
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
        self.push(&frame);
        self.last_req_id
    }

    /// Encodes a frame that is not a request (PushAck).
    pub fn notify(&mut self, body: impl Into<Body>) {
        self.push(&event_frame(body));
    }

    /// One frame into the write buffer: length-prefixed, or as a masked
    /// WebSocket binary message.
    fn push(&mut self, frame: &Frame) {
        if self.ws.is_some() {
            let mut message = Vec::new();
            let body = prost::Message::encode_to_vec(frame);
            ws::push_frame(&mut message, ws::OP_BINARY, &body, Some(MASK));
            self.write_buf.extend_from_slice(&message);
        } else {
            // Load-test frames are small and well-formed: encoding cannot fail.
            let _ = self.codec.encode(frame, &mut self.write_buf);
        }
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
        let mut open = match self.tls.as_mut() {
            Some(tls) => read_tls(tls, &mut self.stream, &mut self.read_buf)?,
            None => self.read_plain(peer_closed)?,
        };
        if let Some(ws) = self.ws.as_mut() {
            ws.incoming.extend_from_slice(&self.read_buf.split());
            open &= ws.take(&mut self.read_buf)?;
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
