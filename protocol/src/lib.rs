//! The wire contract of the IM server, shared by the gateway, the logic tier,
//! the load tester, the tests and any Rust SDK.
//!
//! This crate does no server I/O. It holds:
//!
//! - [`pb`]: the types generated from `proto/im.proto` (package `im.v1`).
//! - [`codec`]: the length-prefixed frame codec (`encode` into a `BytesMut`,
//!   incremental `decode` that returns `Ok(None)` until a whole frame is in).
//! - [`body`]: what each frame body is: who may send it, its name, and which
//!   response answers which request.
//! - [`token`]: the login token format, `<uid>.<expires>.<sig>` with an
//!   HMAC-SHA256 signature.
//! - [`client`]: a small blocking client (connect, login, request/response by
//!   `req_id`, a queue of server-initiated frames) for tests and the load tester.
//! - [`link`]: the messages between the gateway and the logic tier, which
//!   both depend on and neither owns.
//! - [`timer`]: the hashed timer wheel both tiers' event loops use.
//! - [`rate`]: the token bucket both tiers' rate limits use.
//! - [`metrics`]: metric tables and the Prometheus text format, for both tiers.
//!
//! A frame on the wire is a 4-byte big-endian length `L` (1..=max_frame)
//! followed by `L` bytes of one protobuf `im.v1.Frame`; see `docs/protocol.md`.

pub mod body;
pub mod client;
pub mod codec;
pub mod fd_limit;
pub mod link;
pub mod metrics;
pub mod rate;
pub mod timer;
pub mod token;

/// Types generated from `proto/im.proto` by `build.rs`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/im.v1.rs"));
}

pub use body::{Request, Sender};
pub use client::{Client, ClientError};
pub use codec::{DEFAULT_MAX_FRAME, FrameCodec, FrameError, LENGTH_PREFIX_LEN};
pub use pb::{ErrorCode, Frame, frame::Body};
