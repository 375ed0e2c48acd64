//! Wall-clock time as rum records it: Unix time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Since the Unix epoch (zero on a clock set before it).
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Unix time now, in seconds.
pub fn unix_now() -> u64 {
    since_epoch().as_secs()
}
