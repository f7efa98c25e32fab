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

/// Serde helpers that write timestamps as `2026-04-20T15:42:11Z`.
pub mod rfc3339 {
    use super::Timestamp;
    use chrono::SecondsFormat;
    use serde::Serializer;

    /// # Errors
    /// Never fails; the signature is serde's.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    pub mod option {
        use super::Timestamp;
        use chrono::SecondsFormat;
        use serde::Serializer;

        /// # Errors
        /// Never fails; the signature is serde's.
        #[expect(clippy::ref_option, reason = "serde's serialize_with passes &Option<T>")]
        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true)),
                None => s.serialize_none(),
            }
        }
    }
}
