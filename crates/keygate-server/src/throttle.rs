//! Throttling of repeated authentication failures per client IP, checked before any store
//! lookup: a client guessing keys is stopped in memory, and cannot load the database.
//!
//! Each IP has a GCRA limiter that only failures (401s from checks 2–5) spend. While it is
//! empty, every request from that IP gets 429 `too_many_failed_attempts`, valid key or not.
//! Per process: a cluster of N nodes tolerates N times the configured failures, which still
//! bounds guessing to a negligible rate against 178-bit keys.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keygate_domain::gcra::{self, Quota};
use moka::sync::Cache;

pub struct FailureThrottle {
    quota: Quota,
    limiters: Cache<IpAddr, Arc<AtomicU64>>,
    epoch: Instant,
}

impl FailureThrottle {
    #[must_use]
    pub fn new(failures_per_minute: u32) -> Self {
        Self {
            quota: Quota::per_minute(failures_per_minute),
            limiters: Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(120)).build(),
            epoch: Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// `Some(seconds to wait)` when `ip` has used up its failures.
    #[must_use]
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let limiter = self.limiters.get(&ip)?;
        let decision = gcra::check(self.quota, limiter.load(Ordering::Acquire), self.now_ns(), 1);
        (!decision.allowed).then(|| decision.retry_after_ns.div_ceil(1_000_000_000).max(1))
    }

    /// Spends one failure for `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        let limiter = self.limiters.get_with(ip, || Arc::new(AtomicU64::new(0)));
        let now = self.now_ns();
        let _ = limiter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
            let d = gcra::check(self.quota, tat, now, 1);
            d.allowed.then_some(d.tat_ns)
        });
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
