//! Wall-clock helpers. Logic that depends on time takes it as a parameter; only binaries and
//! I/O glue call [`unix_micros`].

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, as LOC's wall-clock timestamps use.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
