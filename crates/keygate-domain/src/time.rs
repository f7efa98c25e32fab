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

/// Truncates a client-supplied time to whole seconds, as every stored time is.
#[must_use]
pub fn truncate(t: Timestamp) -> Timestamp {
    t.trunc_subsecs(0)
}
