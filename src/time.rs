//! Wall-clock time as stored and sent: Unix seconds and milliseconds. A clock set before 1970
//! reads as 0 rather than failing.

use std::time::{SystemTime, UNIX_EPOCH};

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Now, in Unix seconds.
pub fn unix_s() -> i64 {
    since_epoch().as_secs() as i64
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Now, in Unix nanoseconds (unique names).
pub fn unix_ns() -> u128 {
    since_epoch().as_nanos()
}
