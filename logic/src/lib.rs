//! The logic tier: everything about users and messages, nothing about sockets.
//!
//! It receives [`Upcall`]s from gateway workers and answers with
//! [`Downcall`]s through a [`Downlink`]. See `docs/architecture.md`.

pub mod auth;
pub mod config;
pub mod presence;
pub mod service;

pub use auth::Authenticator;
pub use service::{LogicHandle, start};

pub use protocol::link::{Downcall, Downlink, Upcall};
