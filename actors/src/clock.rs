//! The wall clock, read in one place. Decisions take the time as an argument (`now`); the shells
//! that feed them read it here.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time, Unix seconds (0 before 1970, `i64::MAX` past its range).
#[must_use]
pub fn unix_now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

/// The current time, Unix seconds with their fraction (for latencies).
#[must_use]
pub fn unix_now_f64() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
