//! The composition root: where the tiers meet.
//!
//! The `gateway` crate holds connections and knows the logic tier only as
//! the other end of a link; the `logic` crate holds users and messages and
//! knows a connection only by its session id. Neither depends on the
//! other. This crate reads the whole configuration file ([`config`]), wires
//! a node from the tiers ([`node`]), with the admin and API ports of the
//! `api` crate, and builds the binaries, one per role:
//!
//! - `im-server`: the all-in-one node, gateway and logic tier in one
//!   process joined by in-process queues (the quickstart);
//! - `im-gateway`: the connection tier alone, linked over TCP ([`link`]) to
//! - `im-logic serve`: the logic tier alone (and `im-logic migrate`).

pub mod cli;
pub mod config;
pub mod link;
pub mod node;
pub mod tls;

pub use config::{Config, ConfigError};
pub use node::{GatewayNode, LogicNode, Node, NodeError};
