//! The logic tier: everything about users and messages, nothing about sockets.
//!
//! It receives [`Upcall`]s from gateways and answers with [`Downcall`]s
//! through a [`Downlink`]; it knows a connection only by its
//! [`SessionId`](protocol::link::SessionId). Its threads, wired by [`tier`]:
//!
//! - the pipeline ([`pipeline`]): the loop that takes upcalls and commits;
//!   each request kind's validation and answer in its file under
//!   [`requests`]; presence, recent-id dedup, rate limits, push acks;
//! - the group-commit thread ([`commit`]): batches of writes, one
//!   transaction each, applied by the [`sequencer`] (seqs, msg_ids,
//!   versions, and the rule of each write);
//! - the flush thread ([`flush`]), behind a store whose commits become
//!   durable later (the journal); whichever thread sees a batch durable
//!   answers it ([`answers`]) and keeps the Redis caches;
//! - readers ([`reader`]): history, sync, conversation lists, profiles.
//!
//! Callers inside the process (the HTTP API) reach the pipeline through
//! [`direct`]: a client's path without a gateway.
//!
//! Storage is behind the [`store`] traits: the embedded journal in front
//! of SQLite by default, MySQL shards in production, Redis caches beside
//! them ([`cache`]). `docs/architecture.md` draws the threads and queues;
//! `docs/lifetime-of-a-message.md` follows one message through them.

pub mod acks;
pub mod answers;
pub mod auth;
pub mod cache;
pub mod commit;
pub mod config;
pub mod dedup;
pub mod direct;
pub mod filter;
pub mod flush;
pub mod ids;
pub mod metrics;
pub mod outbox;
pub mod pages;
pub mod pipeline;
pub mod presence;
pub mod reader;
pub mod requests;
pub mod sequencer;
pub mod store;
pub mod tier;

pub use auth::Authenticator;
pub use tier::{Inbox, Link, LogicHandle, StartError, Storage, open_backend, start};

pub use protocol::link::{Downcall, Downlink, Upcall};
