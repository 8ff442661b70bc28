//! A small blocking client: connect, log in, make requests and read what the
//! server pushes.
//!
//! Requests get a fresh non-zero `req_id`; [`Client::call`] sends one and
//! reads until the frame with that `req_id` arrives. Frames read meanwhile are
//! not lost: server-initiated ones (`req_id` 0: Push, ReadNotice, Kick) wait in
//! a queue for [`Client::next_event`], responses to other requests wait for
//! [`Client::wait_response`]. Tests and the load tester use it; it is also the
//! shortest description of how an SDK talks to the server.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use protocol::Request;
use protocol::pb::{self, ErrorCode, Frame, frame::Body};
use protocol::{FrameCodec, FrameError};

/// How long a call waits for its response unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// The server answered the request with an `Error` body.
    #[error("server error {code:?}: {message}")]
    Server { code: ErrorCode, message: String },
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    #[error("timed out waiting for the server")]
    Timeout,
    /// The server answered with a body that does not answer the request.
    #[error("unexpected response body {0}")]
    UnexpectedResponse(&'static str),
    /// TLS could not be set up (a bad CA file, a failed handshake, a
    /// certificate that does not check).
    #[error("tls: {0}")]
    Tls(String),
}

impl ClientError {
    /// The wire error code, when the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The byte stream under the frames: plain TCP, or TLS over it.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(stream) => stream,
            Conn::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(stream) => stream.read(buf),
            Conn::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(stream) => stream.write(buf),
            Conn::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(stream) => stream.flush(),
            Conn::Tls(tls) => tls.flush(),
        }
    }
}

/// A TLS client configuration trusting the certificate authorities in
/// `ca_pem` (PEM) only: how a client pins a private CA or a self-signed
/// server certificate.
pub fn tls_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| ClientError::Tls(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

pub struct Client {
    stream: Conn,
    codec: FrameCodec,
    /// Bytes read from the socket and not yet decoded.
    read_buf: BytesMut,
    /// Reused for encoding outgoing frames.
    write_buf: BytesMut,
    /// The last `req_id` handed out; ids start at 1 because 0 means "server-initiated".
    last_req_id: u64,
    /// Server-initiated frames read while waiting for something else.
    events: VecDeque<Frame>,
    /// Responses read while waiting for a different `req_id`.
    responses: HashMap<u64, Frame>,
    /// How long `call` waits for its response.
    timeout: Duration,
}

impl Client {
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        Ok(Client::from_stream(TcpStream::connect(addr)?))
    }

    /// Connects over TLS, checking the server's certificate against
    /// `config`'s roots and `server_name`. The handshake completes here.
    pub fn connect_tls(
        addr: impl ToSocketAddrs,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut tls = rustls::StreamOwned::new(conn, stream);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
        }
        Ok(Client::over(Conn::Tls(Box::new(tls))))
    }

    /// Wraps an already connected stream (e.g. one bound to a chosen source address).
    pub fn from_stream(stream: TcpStream) -> Client {
        // Small request/response frames: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        Client::over(Conn::Plain(stream))
    }

    fn over(stream: Conn) -> Client {
        Client {
            stream,
            codec: FrameCodec::default(),
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            last_req_id: 0,
            events: VecDeque::new(),
            responses: HashMap::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.codec = FrameCodec::new(max_frame);
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.tcp().local_addr()
    }

    /// The TCP socket under the frames (TLS or not): for waiting on it
    /// with `poll(2)` next to other things. Bytes already read may still
    /// hold whole frames: drain with [`Client::next_frame`] after a wake.
    pub fn tcp(&self) -> &TcpStream {
        self.stream.tcp()
    }

    /// Logs in and returns the server's answer.
    pub fn login(
        &mut self,
        uid: u64,
        token: &str,
        device_id: &str,
        platform: pb::Platform,
    ) -> Result<pb::LoginResp, ClientError> {
        self.call(pb::LoginReq {
            uid,
            token: token.to_owned(),
            device_id: device_id.to_owned(),
            platform: platform as i32,
        })
    }

    /// Sends a request and waits for its typed response.
    pub fn call<R: Request>(&mut self, request: R) -> Result<R::Response, ClientError> {
        let req_id = self.send_request(request)?;
        let frame = self.wait_response(req_id, self.timeout)?;
        let name = frame.body.as_ref().map_or("none", Body::name);
        frame
            .body
            .and_then(R::response)
            .ok_or(ClientError::UnexpectedResponse(name))
    }

    /// Sends a request without waiting; returns its `req_id`.
    pub fn send_request(&mut self, body: impl Into<Body>) -> Result<u64, ClientError> {
        self.last_req_id += 1;
        let req_id = self.last_req_id;
        self.send_frame(&Frame {
            req_id,
            body: Some(body.into()),
        })?;
        Ok(req_id)
    }

    /// Sends a frame exactly as given (any `req_id`, any body).
    pub fn send_frame(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.write_buf.clear();
        self.codec.encode(frame, &mut self.write_buf)?;
        self.stream.write_all(&self.write_buf)?;
        Ok(())
    }

    /// Writes raw bytes: for tests of what the server does with bad input.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Waits for the response to `req_id`. An `Error` body becomes
    /// [`ClientError::Server`].
    pub fn wait_response(&mut self, req_id: u64, timeout: Duration) -> Result<Frame, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.responses.remove(&req_id) {
                return into_result(frame);
            }
            let frame = self.read_frame(deadline)?.ok_or(ClientError::Timeout)?;
            if frame.req_id == req_id {
                return into_result(frame);
            }
            self.stash(frame);
        }
    }

    /// The next server-initiated frame (Push, ReadNotice, Kick, or an Error
    /// with `req_id` 0), waiting at most `timeout`. `Ok(None)` on timeout.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Frame>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.events.pop_front() {
                return Ok(Some(frame));
            }
            match self.read_frame(deadline)? {
                None => return Ok(None),
                Some(frame) => self.stash(frame),
            }
        }
    }

    /// The next frame of any kind, queued or from the socket. `Ok(None)` on
    /// timeout. Queued server-initiated frames come first.
    pub fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, ClientError> {
        if let Some(frame) = self.events.pop_front() {
            return Ok(Some(frame));
        }
        if let Some(&req_id) = self.responses.keys().next() {
            return Ok(self.responses.remove(&req_id));
        }
        self.read_frame(Instant::now() + timeout)
    }

    /// Reads until the server closes the connection, discarding frames;
    /// `Err(Timeout)` if it is still open after `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_frame(deadline) {
                Ok(Some(_)) => continue,
                Ok(None) => return Err(ClientError::Timeout),
                Err(ClientError::Closed) => return Ok(()),
                Err(ClientError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn stash(&mut self, frame: Frame) {
        if frame.req_id == 0 {
            self.events.push_back(frame);
        } else {
            self.responses.insert(frame.req_id, frame);
        }
    }

    /// Decodes one frame from the buffer, reading from the socket until one is
    /// whole or `deadline` passes (`Ok(None)`).
    fn read_frame(&mut self, deadline: Instant) -> Result<Option<Frame>, ClientError> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.read_buf)? {
                return Ok(Some(frame));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // A zero read timeout means "block forever" to the OS; never pass it.
            let wait = (deadline - now).max(Duration::from_millis(1));
            self.stream.tcp().set_read_timeout(Some(wait))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ClientError::Closed),
                // A TLS peer that closed without close_notify has closed all
                // the same: frames carry their own lengths, so nothing can
                // be cut short unnoticed.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(ClientError::Closed);
                }
                Ok(n) => self.read_buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A response frame as a result: an `Error` body is the server saying no.
fn into_result(frame: Frame) -> Result<Frame, ClientError> {
    match frame.body {
        Some(Body::Error(error)) => Err(ClientError::Server {
            code: ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified),
            message: error.message,
        }),
        _ => Ok(frame),
    }
}
