//! The wall clock, in the units the protocol speaks. Deadlines are kept on
//! monotonic clocks (`Instant`) by whoever sets them; these are for the
//! times told to clients and stored with messages.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch: token expiry is in seconds.
pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}
