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
use keygate_domain::model::email_key;

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

/// Dashboard sign-in attempts, counted per client IP (its rate key, an IPv6 client by its
/// network) and per email (by [`email_key`], so look-alike spellings of one address share it),
/// each with its own allowance: guessing one user's password from many addresses, or many
/// users' from one, is stopped either way. An attempt is counted *before* its password is
/// checked, right or wrong: counting failures after the check let a burst of concurrent guesses
/// all pass the check first. While either allowance is used up, sign-in answers 429
/// `too_many_failed_attempts`, right password or not. Per process, as [`FailureThrottle`].
pub struct SignInThrottle {
    per_ip: Quota,
    per_email: Quota,
    limiter: InProcessLimiter,
}

impl SignInThrottle {
    /// Attempts allowed per minute from one IP (30) and for one email (10).
    #[must_use]
    pub fn new() -> Self {
        Self { per_ip: Quota::per_minute(30), per_email: Quota::per_minute(10), limiter: InProcessLimiter::default() }
    }

    /// Counts one attempt from `ip` for `email`: the address first, and only if it may try, the
    /// email (a blocked address cannot spend a user's allowance).
    ///
    /// # Errors
    /// The seconds to wait, when either allowance is used up.
    pub fn attempt(&self, ip: IpAddr, email: &str) -> Result<(), u64> {
        let now = SystemClock.now_ns();
        let keys = [
            (LimitKey::FailedSignInIp(ip), self.per_ip),
            (LimitKey::FailedSignInEmail(email_key(email).into()), self.per_email),
        ];
        for (key, quota) in keys {
            let d = self.limiter.check_now(&key, quota, 1, now);
            if !d.allowed {
                return Err(d.retry_after_ns.div_ceil(1_000_000_000).max(1));
            }
        }
        Ok(())
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
    fn sign_ins_are_throttled_per_email_whatever_the_address_and_spelling_and_per_address() {
        let t = SignInThrottle::new();
        for n in 1..=10u8 {
            assert_eq!(t.attempt(IpAddr::from([192, 0, 2, n]), "ada@example.com"), Ok(()));
        }
        let fresh: IpAddr = [192, 0, 2, 99].into();
        for spelling in ["ADA@example.com", "ａda@example.com", "ⓐda@example.com"] {
            assert!(t.attempt(fresh, spelling).is_err(), "{spelling}: the email, whatever its case, form or address");
        }
        assert_eq!(t.attempt(fresh, "grace@example.com"), Ok(()), "another email from a fresh address");
        let guesser: IpAddr = [198, 51, 100, 7].into();
        for n in 0..30 {
            assert_eq!(t.attempt(guesser, &format!("user{n}@example.com")), Ok(()));
        }
        assert!(t.attempt(guesser, "someone-else@example.com").is_err(), "the address, whatever the email");
        // The blocked address spent nothing of that email's allowance.
        assert_eq!(t.attempt(fresh, "someone-else@example.com"), Ok(()));
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
