//! Timestamps. The API speaks RFC 3339 in UTC with whole seconds (`2026-04-20T15:42:11Z`), and
//! stores compare timestamps as values, so every timestamp keygate makes is truncated to the
//! second here, in one place.

use chrono::{DateTime, SubsecRound, Utc};

pub type Timestamp = DateTime<Utc>;

/// The current time, truncated to whole seconds.
#[must_use]
pub fn now() -> Timestamp {
    Utc::now().trunc_subsecs(0)
}

/// The current time in whole seconds since the Unix epoch: what `now().timestamp()` gives,
/// without building a date (the request path asks for it on every authenticated request).
#[must_use]
pub fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
}

/// Truncates a client-supplied time to whole seconds, as every stored time is.
#[must_use]
pub fn truncate(t: Timestamp) -> Timestamp {
    t.trunc_subsecs(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_is_now_in_seconds() {
        let before = now().timestamp();
        let seconds = unix_seconds();
        let after = now().timestamp();
        assert!((before..=after).contains(&seconds), "{before} <= {seconds} <= {after}");
    }
}
