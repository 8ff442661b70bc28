//! The frame codec: a 4-byte big-endian length prefix, then one protobuf
//! `Frame`.
//!
//! The decoder is incremental and never trusts the peer: it reads the prefix,
//! rejects a zero length and any length above the configured maximum *before*
//! it reserves room for the body, and only then waits for the body. So a peer
//! that announces 4 GiB makes us allocate nothing, and one that sends its frame
//! a byte at a time costs us no more than one that sends it whole.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use crate::pb::{ErrorCode, Frame};

/// Bytes of the length prefix before every frame.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// The contract's default largest frame body, in bytes.
pub const DEFAULT_MAX_FRAME: usize = 65_536;

/// Why a byte stream is not a valid sequence of frames. Every variant is fatal
/// for the connection it came from: after it, the stream cannot be re-synced.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix said zero; a frame always has at least one byte.
    #[error("zero-length frame")]
    Empty,
    /// The length prefix (or a frame we were asked to encode) is over the limit.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    /// The body is not the protobuf message expected (a `Frame` from a client).
    #[error("undecodable frame: {0}")]
    Malformed(#[from] prost::DecodeError),
}

impl FrameError {
    /// The wire error code the server answers this error with (then closes).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            FrameError::Empty | FrameError::Malformed(_) => ErrorCode::BadFrame,
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        }
    }
}

/// Encodes and decodes frames under one maximum body size.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    /// Largest body accepted or produced, in bytes (the prefix not counted).
    max_frame: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameCodec {
    /// A codec that accepts bodies of `1..=max_frame` bytes. `max_frame` is
    /// capped at what a 4-byte prefix can say.
    pub fn new(max_frame: usize) -> Self {
        FrameCodec {
            max_frame: max_frame.clamp(1, u32::MAX as usize),
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Appends `frame`, prefixed by its length, to `dst`.
    ///
    /// Refuses a frame whose body would exceed the maximum (the peer would
    /// reject it) or be empty (a zero length is not a frame); `dst` is then
    /// left as it was.
    pub fn encode(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_message(frame, dst)
    }

    /// [`encode`](Self::encode) for any protobuf message: the link between
    /// the tiers frames its messages the same way.
    pub fn encode_message<M: Message>(
        &self,
        message: &M,
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        let len = self.checked_len(message.encoded_len())?;
        dst.reserve(LENGTH_PREFIX_LEN + len);
        dst.put_u32(len as u32);
        // Cannot fail: `reserve` made room for `len` bytes and `BytesMut` grows anyway.
        message
            .encode(dst)
            .expect("BytesMut has room for the encoded frame");
        Ok(())
    }

    /// Encodes `frame` into its own buffer, ready to queue on any number of
    /// connections (a `Bytes` clone shares the bytes).
    pub fn encode_to_bytes(&self, frame: &Frame) -> Result<Bytes, FrameError> {
        let mut buf = BytesMut::new();
        self.encode(frame, &mut buf)?;
        Ok(buf.freeze())
    }

    /// The `req_id` of one encoded frame (length prefix included) without
    /// decoding its body: 0 for a server-initiated frame, or for bytes
    /// that are not a frame this codec wrote (prost writes field 1 first).
    pub fn encoded_req_id(encoded: &[u8]) -> u64 {
        let Some(mut body) = encoded.get(LENGTH_PREFIX_LEN..) else {
            return 0;
        };
        if body.first() != Some(&0x08) {
            return 0;
        }
        body = &body[1..];
        prost::encoding::decode_varint(&mut body).unwrap_or(0)
    }

    /// Takes exactly one frame off the front of `src`.
    ///
    /// `Ok(None)`: the frame is not all there yet; `src` is untouched except
    /// that room for the announced body may be reserved. On `Err` the stream
    /// is unusable and the connection should be closed.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        self.decode_message(src)
    }

    /// [`decode`](Self::decode) for any protobuf message.
    pub fn decode_message<M: Message + Default>(
        &self,
        src: &mut BytesMut,
    ) -> Result<Option<M>, FrameError> {
        let Some(len) = self.announced_len(src)? else {
            return Ok(None);
        };
        let total = LENGTH_PREFIX_LEN + len;
        if src.len() < total {
            // Length already checked, so this reservation is bounded by max_frame.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX_LEN);
        let body = src.split_to(len);
        Ok(Some(M::decode(body.as_ref())?))
    }

    /// The body length announced by the prefix at the front of `src`, checked
    /// against the limits; `None` while fewer than four bytes are buffered.
    pub fn announced_len(&self, src: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = src.first_chunk::<LENGTH_PREFIX_LEN>() else {
            return Ok(None);
        };
        self.checked_len(u32::from_be_bytes(*prefix) as usize)
            .map(Some)
    }

    /// A body length within the limits, either direction: 1..=max_frame.
    fn checked_len(&self, len: usize) -> Result<usize, FrameError> {
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok(len)
    }
}
