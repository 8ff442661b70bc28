//! The logic tier: everything about users and messages, nothing about sockets.
//!
//! It receives [`Upcall`]s from gateway workers and answers with
//! [`Downcall`]s through a [`Downlink`]. Three kinds of thread:
//!
//! - the pipeline ([`service`]): validation, content filter, rate limits,
//!   recent-id dedup, presence, fan-out, read receipts, push retransmits;
//! - the writer ([`writer`]): group commit, seq / msg_id / version assignment;
//! - readers ([`reader`]): history, sync, conversation lists, profiles.
//!
//! Storage is behind the [`store`] traits; [`store::sqlite`] is the embedded
//! default. `docs/architecture.md` draws the threads and queues;
//! `docs/lifetime-of-a-message.md` follows one message through them.

pub mod acks;
pub mod auth;
pub mod cache;
pub mod config;
pub mod dedup;
pub mod doorbell;
pub mod filter;
pub mod ids;
pub mod metrics;
pub mod offline;
pub mod pages;
pub mod presence;
pub mod reader;
pub mod service;
pub mod store;
pub mod writer;

pub use auth::Authenticator;
pub use service::{Inbox, LogicHandle, StartError, open_backend, start};

pub use protocol::link::{Downcall, Downlink, Upcall};
