//! The server's one reading of wall-clock time, in Unix seconds.
//!
//! Everything that decides with time (token expiry, certificate validity,
//! grant ends, KRL generation, rate-limit windows) takes `now` as an argument
//! and is handed this reading by its caller, so tests pass any instant they
//! like instead of sleeping; only the edges (request handlers, background
//! tasks, commands) read the clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; 0 if the system clock reads before it (a
/// clock that far off makes every certificate and token look expired, which
/// fails closed).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
