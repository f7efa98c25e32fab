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

/// Failed dashboard sign-ins, counted per client IP (its rate key, an IPv6 client by its
/// network) and per email (lower-cased), each with its own allowance: guessing one user's
/// password from many addresses, or many users' from one, is stopped either way. While either is
/// used up, sign-in answers 429 `too_many_failed_attempts`, right password or not. Per process,
/// as [`FailureThrottle`].
pub struct SignInThrottle {
    per_ip: Quota,
    per_email: Quota,
    limiter: InProcessLimiter,
}

impl SignInThrottle {
    /// Failures tolerated per minute from one IP (20) and for one email (5).
    #[must_use]
    pub fn new() -> Self {
        Self { per_ip: Quota::per_minute(20), per_email: Quota::per_minute(5), limiter: InProcessLimiter::default() }
    }

    fn keys(ip: IpAddr, email: &str) -> [(LimitKey, bool); 2] {
        [(LimitKey::FailedSignInIp(ip), true), (LimitKey::FailedSignInEmail(email.to_lowercase().into()), false)]
    }

    /// `Some(seconds to wait)` when `ip` or `email` has used up its failures.
    #[must_use]
    pub fn blocked(&self, ip: IpAddr, email: &str) -> Option<u64> {
        let now = SystemClock.now_ns();
        Self::keys(ip, email)
            .iter()
            .filter_map(|(key, by_ip)| {
                let quota = if *by_ip { self.per_ip } else { self.per_email };
                let d = self.limiter.peek(key, quota, 1, now);
                (!d.allowed).then(|| d.retry_after_ns.div_ceil(1_000_000_000).max(1))
            })
            .max()
    }

    /// Spends one failure for `ip` and one for `email`.
    pub fn record_failure(&self, ip: IpAddr, email: &str) {
        let now = SystemClock.now_ns();
        for (key, by_ip) in Self::keys(ip, email) {
            let quota = if by_ip { self.per_ip } else { self.per_email };
            let _ = self.limiter.check_now(&key, quota, 1, now);
        }
    }
}

impl Default for SignInThrottle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_ins_are_throttled_per_email_whatever_the_address_and_per_address() {
        let t = SignInThrottle::new();
        let ips: Vec<IpAddr> = (1..=5u8).map(|n| IpAddr::from([192, 0, 2, n])).collect();
        for ip in &ips {
            assert_eq!(t.blocked(*ip, "ada@example.com"), None);
            t.record_failure(*ip, "ada@example.com");
        }
        let fresh: IpAddr = [192, 0, 2, 99].into();
        assert!(t.blocked(fresh, "ADA@example.com").is_some(), "the email, whatever its case or address");
        assert_eq!(t.blocked(fresh, "grace@example.com"), None, "another email from a fresh address");
        let guesser: IpAddr = [198, 51, 100, 7].into();
        for n in 0..20 {
            t.record_failure(guesser, &format!("user{n}@example.com"));
        }
        assert!(t.blocked(guesser, "someone-else@example.com").is_some(), "the address, whatever the email");
    }

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
