//! WebSocket (RFC 6455) for browsers, on the same event loops, over plain
//! TCP or TLS (wss).
//!
//! Each binary WebSocket message carries exactly one protobuf `Frame`,
//! without the 4-byte length prefix. This transport turns messages into
//! the length-prefixed byte stream the session decodes, and the session's
//! encoded frames back into messages, so every contract rule, limit and
//! metric works as it does over TCP. What is not a binary message the
//! session can take becomes a stream the frame codec refuses with the same
//! code as on TCP: a text message reads as an empty frame (BAD_FRAME), a
//! message over `max_frame` as an oversized one (FRAME_TOO_LARGE).
//!
//! The opening handshake is HTTP/1.1 `GET` with `Upgrade: websocket` on the
//! configured path; `Origin`, when the browser sends it, must be in the
//! allow-list (empty: any), so that another site's page cannot use a
//! visitor's browser to connect. A refused handshake gets its HTTP status
//! (400, 403, 404) and the connection closes.
//!
//! The framing is written here rather than taken from a crate because of
//! memory: a session holds no buffer while idle (the WebSocket crates keep
//! a read buffer per connection for its life), and the subset a client of
//! ours needs is small: binary messages (fragmented or not), ping, pong and
//! close. Pings are answered in the loop.

use std::io::{self, IoSlice};
use std::sync::Arc;

use base64::Engine;
use sha1::{Digest, Sha1};

use protocol::websocket::{
    Header, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, parse_header,
    push_frame, unmask,
};

use crate::transport::{Transport, take_into, write_out};

/// The GUID RFC 6455 appends to the client's key.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Longest opening handshake request accepted.
const MAX_HANDSHAKE: usize = 8 * 1024;
/// Most bytes read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// What a WebSocket listener accepts.
#[derive(Debug)]
pub struct WsPolicy {
    /// The request path, e.g. `/im`.
    pub path: String,
    /// Allowed `Origin` values; empty: any.
    pub origins: Vec<String>,
    /// Largest message, the frame codec's `max_frame`.
    pub max_frame: usize,
}

impl WsPolicy {
    fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            // Not a browser (browsers always send Origin): nothing to protect.
            None => true,
            Some(origin) => self.origins.is_empty() || self.origins.iter().any(|o| o == origin),
        }
    }
}

/// What to do with the bytes of an opening handshake read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// The request is not whole yet (and not over the limit).
    Partial,
    /// Switch: write `response`; the request took the first `consumed` bytes.
    Accept { consumed: usize, response: String },
    /// Answer `status` with `reason` and close.
    Refuse {
        status: &'static str,
        reason: &'static str,
    },
}

/// The opening handshake's answer to `incoming` under `policy`: any bytes
/// at all get one of the three (the fuzzer's `websocket_handshake` target).
pub fn answer_handshake(incoming: &[u8], policy: &WsPolicy) -> Handshake {
    let refuse = |status, reason| Handshake::Refuse { status, reason };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(incoming) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if incoming.len() <= MAX_HANDSHAKE => {
            return Handshake::Partial;
        }
        _ => return refuse("400 Bad Request", "not a WebSocket handshake"),
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let path = request.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or(path);
    if request.method != Some("GET") {
        return refuse("400 Bad Request", "not a GET");
    }
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return refuse("400 Bad Request", "no WebSocket upgrade");
    }
    if header("sec-websocket-version") != Some("13") {
        return refuse("400 Bad Request", "WebSocket version 13 only");
    }
    if path != policy.path {
        return refuse("404 Not Found", "no WebSocket here");
    }
    if !policy.origin_allowed(header("origin")) {
        return refuse("403 Forbidden", "origin not allowed");
    }
    let Some(key) = header("sec-websocket-key") else {
        return refuse("400 Bad Request", "no Sec-WebSocket-Key");
    };
    let accept = base64::engine::general_purpose::STANDARD
        .encode(Sha1::digest(format!("{}{ACCEPT_GUID}", key.trim())));
    Handshake::Accept {
        consumed: length,
        response: format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        ),
    }
}

/// One WebSocket connection.
pub struct WsStream {
    /// The byte stream under the framing: plain TCP, or TLS (wss).
    inner: Transport,
    policy: Arc<WsPolicy>,
    /// Still reading the opening handshake.
    handshaking: bool,
    /// Bytes read and not yet made into messages (a partial WebSocket frame,
    /// or the partial handshake request). Empty, unallocated, when idle.
    incoming: Vec<u8>,
    /// A fragmented message being put together.
    message: Vec<u8>,
    /// Length-prefixed frames for the session.
    plaintext: Vec<u8>,
    /// Bytes for the peer not yet written (WebSocket frames, the handshake
    /// response, pongs).
    outgoing: Vec<u8>,
    /// The peer is gone (close frame, or EOF), or the handshake was refused:
    /// reads end once `plaintext` is taken.
    ended: bool,
}

impl WsStream {
    pub fn new(inner: Transport, policy: Arc<WsPolicy>) -> WsStream {
        WsStream {
            inner,
            policy,
            handshaking: true,
            incoming: Vec::new(),
            message: Vec::new(),
            plaintext: Vec::new(),
            outgoing: Vec::new(),
            ended: false,
        }
    }

    pub fn inner(&mut self) -> &mut Transport {
        &mut self.inner
    }

    pub fn inner_ref(&self) -> &Transport {
        &self.inner
    }

    /// Length-prefixed frames, as the session reads a TCP stream.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.plaintext.is_empty() {
                return Ok(take_into(&mut self.plaintext, buf));
            }
            if self.ended {
                return Ok(0);
            }
            let mut chunk = [0u8; READ_CHUNK];
            match self.inner.read(&mut chunk) {
                Ok(0) => self.ended = true,
                Ok(n) => {
                    self.incoming.extend_from_slice(&chunk[..n]);
                    if self.handshaking {
                        self.handshake()?;
                    }
                    if !self.handshaking {
                        self.take_frames()?;
                    }
                    if self.incoming.is_empty() {
                        self.incoming = Vec::new();
                    }
                    self.flush()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Answers the opening handshake once its request is whole.
    fn handshake(&mut self) -> io::Result<()> {
        match answer_handshake(&self.incoming, &self.policy) {
            Handshake::Partial => Ok(()),
            Handshake::Refuse { status, reason } => self.refuse(status, reason),
            Handshake::Accept { consumed, response } => {
                self.outgoing.extend_from_slice(response.as_bytes());
                self.incoming.drain(..consumed);
                self.handshaking = false;
                Ok(())
            }
        }
    }

    /// An HTTP error for a refused handshake; the connection then ends.
    fn refuse(&mut self, status: &str, reason: &str) -> io::Result<()> {
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}\n",
            reason.len() + 1
        );
        self.outgoing.extend_from_slice(response.as_bytes());
        self.incoming = Vec::new();
        self.ended = true;
        let _ = self.flush();
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket handshake refused: {reason}"),
        ))
    }

    /// Makes every whole WebSocket frame received into session bytes.
    fn take_frames(&mut self) -> io::Result<()> {
        while let Some(frame) = parse_header(&self.incoming)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            let Header {
                fin,
                opcode,
                header_len,
                payload_len,
                mask,
            } = frame;
            if payload_len > self.policy.max_frame as u64 + 16 {
                // Announce it to the codec, which refuses it as on TCP.
                self.too_large(payload_len);
                return Ok(());
            }
            let end = header_len + payload_len as usize;
            if self.incoming.len() < end {
                return Ok(());
            }
            let mut payload = self.incoming[header_len..end].to_vec();
            if let Some(mask) = mask {
                unmask(&mut payload, mask);
            }
            self.incoming.drain(..end);
            match opcode {
                OP_BINARY | OP_CONTINUATION => {
                    self.message.extend_from_slice(&payload);
                    if self.message.len() > self.policy.max_frame {
                        self.too_large(self.message.len() as u64);
                        return Ok(());
                    }
                    if fin {
                        let message = std::mem::take(&mut self.message);
                        if message.is_empty() {
                            // An empty message is not a frame: the codec says so.
                            self.plaintext.extend_from_slice(&0u32.to_be_bytes());
                        } else {
                            self.plaintext
                                .extend_from_slice(&(message.len() as u32).to_be_bytes());
                            self.plaintext.extend_from_slice(&message);
                        }
                    }
                }
                OP_TEXT => {
                    // Not what the protocol carries: read as an empty frame.
                    self.plaintext.extend_from_slice(&0u32.to_be_bytes());
                    self.ended = true;
                    return Ok(());
                }
                OP_PING => push_frame(&mut self.outgoing, OP_PONG, &payload, None),
                OP_PONG => {}
                OP_CLOSE => {
                    let code = &payload[..payload.len().min(2)];
                    push_frame(&mut self.outgoing, OP_CLOSE, code, None);
                    self.ended = true;
                    return Ok(());
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unknown WebSocket opcode",
                    ));
                }
            }
        }
        Ok(())
    }

    /// A message over the limit: the session sees a frame announcing its
    /// size, and refuses it with FRAME_TOO_LARGE.
    fn too_large(&mut self, len: u64) {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.plaintext.extend_from_slice(&len.to_be_bytes());
        self.incoming = Vec::new();
        self.message = Vec::new();
        self.ended = true;
    }

    /// Sends each encoded frame (length prefix and body) as one binary
    /// message; takes whole frames only.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.flush()?;
        if self.handshaking || !self.outgoing.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut taken = 0;
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            let body = buf.get(protocol::LENGTH_PREFIX_LEN..).unwrap_or(&[]);
            push_frame(&mut self.outgoing, OP_BINARY, body, None);
            taken += buf.len();
        }
        self.flush()?;
        Ok(taken)
    }

    /// Writes pending bytes until the socket is full (not an error).
    pub fn flush(&mut self) -> io::Result<()> {
        let inner = &mut self.inner;
        write_out(&mut self.outgoing, |bytes| {
            inner.write_vectored(&[IoSlice::new(bytes)])
        })?;
        self.inner.flush()
    }

    pub fn wants_write(&self) -> bool {
        !self.outgoing.is_empty() || self.inner.wants_write()
    }

    /// A close frame, then the end of the stream.
    pub fn shutdown_write(&mut self) {
        if !self.handshaking {
            push_frame(&mut self.outgoing, OP_CLOSE, &1000u16.to_be_bytes(), None);
        }
        let _ = self.flush();
        self.inner.shutdown_write();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_rfc_6455_s() {
        // The example of RFC 6455, section 1.3.
        let accept = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(format!(
            "dGhlIHNhbXBsZSBub25jZQ=={ACCEPT_GUID}"
        )));
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
