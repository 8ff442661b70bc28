//! The link between gateways and the logic tier when they run as separate
//! processes: `Upcall`s and `Downcall`s in their wire form
//! (`protocol/proto/link.proto`) over TCP.
//!
//! ```text
//!  im-gateway                                          im-logic serve
//!  workers ─Upcall─▶ queue + bell ─▶ im-link ──Batch──▶ im-link-rx-<gw> ─▶ logic inbox
//!  workers ◀─Mailboxes◀─ im-link-rx ◀──Batch── im-link-tx-<gw> ◀─ Gateways (Downlink)
//! ```
//!
//! Each end batches: whatever has queued while the last write was on its
//! way goes in the next link frame, so a busy link costs one write for many
//! calls. Each end sends a heartbeat when it has had nothing to send for
//! `link.heartbeat_secs`, and takes the other for dead after
//! `link.dead_after_secs` without a frame. The queues are bounded; what
//! happens when one is full is said where it is filled (`gateway_end.rs`,
//! `logic_end.rs`). The handshake (`handshake.rs`) checks the version and
//! that both ends hold the link secret. The link is plain TCP: run it on a
//! private network, or see docs/cluster.md for what TLS on it would add.

pub mod gateway_end;
pub mod handshake;
pub mod logic_end;

use std::io::{self, Read, Write};
use std::net::TcpStream;

use bytes::BytesMut;
use protocol::FrameCodec;
use protocol::link::wire::pb::{LinkFrame, link_frame::Kind};
use protocol::link::wire::{LinkError as CallError, pb};
use protocol::link::{Downcall, Upcall};

/// The link protocol version this build speaks.
pub const VERSION: u32 = 2;

/// Largest link frame, either way (a batch is cut well below it).
const MAX_LINK_FRAME: usize = 64 << 20;

/// Most calls in one batch, and about the most bytes.
pub const BATCH_CALLS: usize = 4096;
pub const BATCH_BYTES: usize = 4 << 20;

/// Why a link ended or never began.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("the peer sent no frame for {0} s: taken for dead")]
    Silent(u64),
    #[error("the peer closed the link")]
    Closed,
    #[error("bad link frame: {0}")]
    Frame(#[from] protocol::FrameError),
    #[error("bad call: {0}")]
    Call(#[from] CallError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("refused: {0}")]
    Refused(String),
}

/// Reads link frames off one TCP stream.
pub struct FrameReader {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
    /// The read timeout set on the stream, for the error it causes.
    silent_secs: u64,
}

impl FrameReader {
    /// `silent_secs`: no frame for this long is a dead peer.
    pub fn new(stream: TcpStream, silent_secs: u64) -> io::Result<FrameReader> {
        stream.set_read_timeout(Some(std::time::Duration::from_secs(silent_secs)))?;
        Ok(FrameReader {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            codec: FrameCodec::new(MAX_LINK_FRAME),
            silent_secs,
        })
    }

    /// From now on, no frame for `secs` is a dead peer.
    pub fn set_silence(&mut self, secs: u64) -> io::Result<()> {
        self.stream
            .set_read_timeout(Some(std::time::Duration::from_secs(secs)))?;
        self.silent_secs = secs;
        Ok(())
    }

    /// The next frame; blocks until it is whole, the peer closes, or it
    /// has been silent too long.
    pub fn read(&mut self) -> Result<Kind, LinkError> {
        loop {
            if let Some(frame) = self.codec.decode_message::<LinkFrame>(&mut self.buf)? {
                return frame
                    .kind
                    .ok_or_else(|| LinkError::Protocol("empty link frame".into()));
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(LinkError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(LinkError::Silent(self.silent_secs));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Writes link frames to one TCP stream.
pub struct FrameWriter {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl FrameWriter {
    pub fn new(stream: TcpStream) -> FrameWriter {
        FrameWriter {
            stream,
            buf: BytesMut::new(),
            codec: FrameCodec::new(MAX_LINK_FRAME),
        }
    }

    /// One frame, in one write.
    pub fn send(&mut self, kind: Kind) -> Result<(), LinkError> {
        self.buf.clear();
        self.codec
            .encode_message(&LinkFrame { kind: Some(kind) }, &mut self.buf)?;
        self.stream.write_all(&self.buf)?;
        Ok(())
    }

    /// The stream written to (to shut it down from another thread).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes every batch `next_batch` gives; if there was none for a
    /// heartbeat interval, a heartbeat. `last_write` is when this end last
    /// wrote; returns how long until the next heartbeat is due.
    pub fn write_or_beat(
        &mut self,
        mut next_batch: impl FnMut() -> Option<Kind>,
        last_write: &mut std::time::Instant,
        heartbeat: std::time::Duration,
    ) -> Result<std::time::Duration, LinkError> {
        let mut wrote = false;
        while let Some(batch) = next_batch() {
            self.send(batch)?;
            wrote = true;
        }
        if wrote {
            *last_write = std::time::Instant::now();
        } else if last_write.elapsed() >= heartbeat {
            self.send(Kind::Heartbeat(pb::Heartbeat {}))?;
            *last_write = std::time::Instant::now();
        }
        Ok(heartbeat.saturating_sub(last_write.elapsed()))
    }
}

/// Up to a batch's worth of what `next` yields, as one link frame (`None`
/// when nothing is queued); `wrap` puts the calls on their side of the batch.
fn batch<T, P: From<T> + prost::Message>(
    mut next: impl FnMut() -> Option<T>,
    wrap: fn(Vec<P>) -> pb::Batch,
) -> Option<Kind> {
    let mut calls: Vec<P> = Vec::new();
    let mut bytes = 0;
    while let Some(call) = next() {
        let call = P::from(call);
        bytes += call.encoded_len();
        calls.push(call);
        if calls.len() >= BATCH_CALLS || bytes >= BATCH_BYTES {
            break;
        }
    }
    (!calls.is_empty()).then(|| Kind::Batch(wrap(calls)))
}

/// The upcalls of a batch.
pub fn upcall_batch(next: impl FnMut() -> Option<Upcall>) -> Option<Kind> {
    batch(next, |upcalls| pb::Batch {
        upcalls,
        ..Default::default()
    })
}

/// The downcalls of a batch.
pub fn downcall_batch(next: impl FnMut() -> Option<Downcall>) -> Option<Kind> {
    batch(next, |downcalls| pb::Batch {
        downcalls,
        ..Default::default()
    })
}

/// Random bytes for a nonce or an id.
pub fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(bytes)
}
