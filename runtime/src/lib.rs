//! What the server's threads run on, whichever tier they belong to.
//!
//! None of it knows about messages or connections; each piece is here
//! because more than one tier (and the load tester) needs the same one:
//!
//! - [`backoff`]: exponential backoff with jitter, for whatever retries.
//! - [`clock`]: the wall clock in the units the protocol speaks.
//! - [`timer`]: the hashed timer wheel the event loops keep their deadlines in.
//! - [`rate`]: the token bucket behind every rate limit.
//! - [`doorbell`]: one wake-up for many queued items, between threads.
//! - [`metrics`]: metric tables and the Prometheus text format.
//! - [`fd_limit`]: the open-file limit, raised to the hard limit at start.
//! - [`config`]: the error every configuration section's check returns.

pub mod backoff;
pub mod clock;
pub mod config;
pub mod doorbell;
pub mod fd_limit;
pub mod metrics;
pub mod rate;
pub mod timer;
