//! Throttling of repeated authentication failures per client IP, checked before any store
//! lookup: a client guessing keys is stopped in memory, and cannot load the database.
//!
//! Each IP has a GCRA limiter (the same in-process limiter as rate limits) that only failures
//! (401s from checks 2–5) spend. While it is
//! empty, every request from that IP gets 429 `too_many_failed_attempts`, valid key or not.
//! Per process: a cluster of N nodes tolerates N times the configured failures, which still
//! bounds guessing to a negligible rate against 178-bit keys.

use std::net::IpAddr;

use keygate_domain::gcra::Quota;

use crate::ratelimit::{Clock, InProcessLimiter, LimitKey, SystemClock};

/// Failed-authentication allowances per client IP, kept like every other limit in an
/// [`InProcessLimiter`].
pub struct FailureThrottle {
    quota: Quota,
    limiter: InProcessLimiter,
}

impl FailureThrottle {
    #[must_use]
    pub fn new(failures_per_minute: u32) -> Self {
        Self { quota: Quota::per_minute(failures_per_minute), limiter: InProcessLimiter::default() }
    }

    /// `Some(seconds to wait)` when `ip` has used up its failures. Reads only: an IP that never
    /// failed leaves no trace.
    #[must_use]
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let d = self.limiter.peek(&LimitKey::FailedAuth(ip), self.quota, 1, SystemClock.now_ns());
        (!d.allowed).then(|| d.retry_after_ns.div_ceil(1_000_000_000).max(1))
    }

    /// Spends one failure for `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        let _ = self.limiter.check_now(&LimitKey::FailedAuth(ip), self.quota, 1, SystemClock.now_ns());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_allowed_failures_and_only_that_ip() {
        let t = FailureThrottle::new(3);
        let ip: IpAddr = [192, 0, 2, 1].into();
        let other: IpAddr = [192, 0, 2, 2].into();
        for _ in 0..3 {
            assert_eq!(t.blocked(ip), None);
            t.record_failure(ip);
        }
        let wait = t.blocked(ip);
        assert!(wait.is_some_and(|s| (1..=20).contains(&s)), "{wait:?}");
        assert_eq!(t.blocked(other), None);
    }
}
