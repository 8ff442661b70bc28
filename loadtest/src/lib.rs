//! `im-loadtest`: the load client that proves our numbers.
//!
//! It speaks the real wire protocol through the `protocol` crate. Workload
//! generation ([`workload`]: seeded RNG, fixed-rate schedule) is kept apart
//! from connections ([`fleet`], [`conn`]: many non-blocking connections on
//! one `mio::Poll`). The modes: [`pairs`] (throughput, latency and the
//! delivery [`check`]), [`idle`] (connections and server memory), [`storm`]
//! (everyone reconnects at once).

pub mod check;
pub mod conn;
pub mod cpu;
pub mod fleet;
pub mod idle;
pub mod pairs;
pub mod report;
pub mod storm;
pub mod workload;
