//! The wire contracts of the IM server: what crosses a socket, and nothing
//! that reads or writes one. Shared by the gateway, the logic tier, the
//! client, the load tester and any SDK.
//!
//! - [`pb`]: the client protocol's types, generated from `proto/im.proto`
//!   (package `im.v1`).
//! - [`codec`]: the length-prefixed frame codec (`encode` into a `BytesMut`,
//!   incremental `decode` that returns `Ok(None)` until a whole frame is in).
//! - [`body`]: what each frame body is: who may send it, its name, and which
//!   response answers which request.
//! - [`token`]: the login token format, `<uid>.<expires>.<sig>` with an
//!   HMAC-SHA256 signature.
//! - [`link`]: the messages between the gateway and the logic tier, which
//!   both depend on and neither owns, as Rust values and in their wire form
//!   (`proto/link.proto`, package `im.link.v1`).
//! - [`websocket`]: WebSocket framing, for the browsers' transport.
//!
//! A client frame on the wire is a 4-byte big-endian length `L`
//! (1..=max_frame) followed by `L` bytes of one protobuf `im.v1.Frame`; see
//! `docs/protocol.md`.

pub mod body;
pub mod codec;
pub mod link;
pub mod token;
pub mod websocket;

/// Types generated from `proto/im.proto` by `build.rs`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/im.v1.rs"));
}

pub use body::{Request, Sender};
pub use codec::{DEFAULT_MAX_FRAME, FrameCodec, FrameError, LENGTH_PREFIX_LEN};
pub use pb::{ErrorCode, Frame, frame::Body};
