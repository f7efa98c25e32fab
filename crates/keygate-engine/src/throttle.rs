//! Throttling of repeated authentication failures per client IP, checked before any store
//! lookup: a client guessing keys is stopped in memory, and cannot load the database.
//!
//! Each IP has a GCRA limiter (kept by the same [`RateLimiter`] as rate limits) that only
//! failures (401s from checks 2–5) spend. While it is empty, every request from that IP gets 429
//! `too_many_failed_attempts`, valid key or not. In cluster mode the limiter is shared, so the
//! nodes together tolerate the configured failures; while Redis is unreachable each node counts
//! its own (N nodes: N times as many), which still bounds guessing to a negligible rate against
//! 178-bit keys.

use std::net::IpAddr;
use std::sync::Arc;

use keygate_domain::gcra::Quota;
use keygate_domain::model::email_key;
use sha2::{Digest, Sha256};

use crate::ratelimit::{LimitKey, RateLimiter};

/// Failed-authentication allowances per client IP, kept like every other limit by the
/// engine's [`RateLimiter`].
pub struct FailureThrottle {
    quota: Quota,
    limiter: Arc<dyn RateLimiter>,
}

impl FailureThrottle {
    #[must_use]
    pub fn new(failures_per_minute: u32, limiter: Arc<dyn RateLimiter>) -> Self {
        Self { quota: Quota::per_minute(failures_per_minute), limiter }
    }

    /// `Some(seconds to wait)` when `ip` has used up its failures. Reads only: an IP that never
    /// failed leaves no trace. A limiter that cannot decide blocks nobody.
    pub async fn blocked(&self, ip: IpAddr) -> Option<u64> {
        match self.limiter.peek(&LimitKey::FailedAuth(ip), self.quota, 1).await {
            Ok((d, _)) => (!d.allowed).then(|| d.retry_after_ns.div_ceil(1_000_000_000).max(1)),
            Err(e) => {
                tracing::warn!(error = %e, "the failed-attempt throttle cannot decide");
                None
            }
        }
    }

    /// Spends one failure for `ip`.
    pub async fn record_failure(&self, ip: IpAddr) {
        let _ = self.limiter.spend(&[(LimitKey::FailedAuth(ip), self.quota)], 1).await;
    }
}

/// Dashboard sign-in attempts, counted before the password is checked, right or wrong
/// (counting failures after the check let a burst of concurrent guesses all pass the check
/// first), against three allowances:
/// - per client IP (its rate key: an IPv6 client by its network), 30 a minute: one address
///   guessing many users' passwords;
/// - per email from one IP, 10 a minute: one address guessing one user's;
/// - per email from anywhere, 100 a minute: many addresses guessing one user's. Locking a user
///   out therefore takes a hundred attempts a minute from several addresses, not ten from one.
///
/// Emails count by the SHA-256 of their folded key ([`email_key`]), so look-alike spellings of one
/// address share an allowance and a key is 16 bytes whatever was sent; a "email" longer than any
/// account's (254 characters) counts in one shared allowance, unfolded. While an allowance is used
/// up, sign-in answers 429 `too_many_failed_attempts`, right password or not. Shared by the nodes
/// in cluster mode, as [`FailureThrottle`].
pub struct SignInThrottle {
    per_ip: Quota,
    per_email_from_ip: Quota,
    per_email: Quota,
    limiter: Arc<dyn RateLimiter>,
}

/// The longest email an account can have ([`crate::services::fields::is_email`]).
const MAX_EMAIL_CHARS: usize = 254;

impl SignInThrottle {
    #[must_use]
    pub fn new(limiter: Arc<dyn RateLimiter>) -> Self {
        Self {
            per_ip: Quota::per_minute(30),
            per_email_from_ip: Quota::per_minute(10),
            per_email: Quota::per_minute(100),
            limiter,
        }
    }

    /// Counts one attempt from `ip` for `email`: the address first, then the email from that
    /// address, then the email; a refused step spends nothing of the later ones (a blocked
    /// address cannot spend a user's allowance).
    ///
    /// # Errors
    /// The seconds to wait, when an allowance is used up.
    pub async fn attempt(&self, ip: IpAddr, email: &str) -> Result<(), u64> {
        let digest = if email.chars().count() <= MAX_EMAIL_CHARS {
            let full: [u8; 32] = Sha256::digest(email_key(email).as_bytes()).into();
            let mut half = [0u8; 16];
            half.copy_from_slice(&full[..16]);
            u128::from_le_bytes(half)
        } else {
            u128::MAX
        };
        let keys = [
            (LimitKey::FailedSignInIp(ip), self.per_ip),
            (LimitKey::FailedSignInEmailFrom(digest, ip), self.per_email_from_ip),
            (LimitKey::FailedSignInEmail(digest), self.per_email),
        ];
        match self.limiter.spend(&keys, 1).await {
            Ok(spent) => match spent.decisions.iter().find(|d| !d.allowed) {
                Some(refused) => Err(refused.retry_after_ns.div_ceil(1_000_000_000).max(1)),
                None => Ok(()),
            },
            Err(e) => {
                tracing::warn!(error = %e, "the sign-in throttle cannot decide");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::InProcessLimiter;

    fn limiter() -> Arc<dyn RateLimiter> {
        Arc::new(InProcessLimiter::default())
    }

    #[tokio::test]
    async fn sign_ins_are_throttled_per_email_and_address_per_email_and_per_address() {
        let t = SignInThrottle::new(limiter());
        let guesser: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..10 {
            assert_eq!(t.attempt(guesser, "ada@example.com").await, Ok(()));
        }
        for spelling in ["ADA@example.com", "ａda@example.com", "ⓐda@example.com"] {
            assert!(t.attempt(guesser, spelling).await.is_err(), "{spelling}: one email, whatever its case or form");
        }
        // Ada herself, elsewhere, is not locked out by one address's guesses.
        assert_eq!(t.attempt([198, 51, 100, 1].into(), "ada@example.com").await, Ok(()));
        // A hundred attempts a minute from anywhere are: many addresses guessing one password.
        for n in 0..89u8 {
            let _ = t.attempt(IpAddr::from([203, 0, 113, n]), "ada@example.com").await;
        }
        assert!(t.attempt([198, 51, 100, 2].into(), "ada@example.com").await.is_err());
        assert_eq!(t.attempt([198, 51, 100, 2].into(), "grace@example.com").await, Ok(()), "another email");
        // One address, many emails.
        let sprayer: IpAddr = [198, 51, 100, 7].into();
        for n in 0..30 {
            assert_eq!(t.attempt(sprayer, &format!("user{n}@example.com")).await, Ok(()));
        }
        assert!(t.attempt(sprayer, "someone-else@example.com").await.is_err(), "the address, whatever the email");
        assert_eq!(
            t.attempt([192, 0, 2, 99].into(), "someone-else@example.com").await,
            Ok(()),
            "it spent nothing of hers"
        );
    }

    #[tokio::test]
    async fn an_enormous_email_is_one_small_key() {
        let t = SignInThrottle::new(limiter());
        let huge = "a".repeat(1 << 20);
        let ip: IpAddr = [192, 0, 2, 1].into();
        assert_eq!(t.attempt(ip, &huge).await, Ok(()));
        let other = "b".repeat(1 << 20);
        for _ in 0..9 {
            let _ = t.attempt(ip, &other).await;
        }
        assert!(t.attempt(ip, &huge).await.is_err(), "every over-long email shares one allowance");
    }

    #[tokio::test]
    async fn blocks_after_the_allowed_failures_and_only_that_ip() {
        let t = FailureThrottle::new(3, limiter());
        let ip: IpAddr = [192, 0, 2, 1].into();
        let other: IpAddr = [192, 0, 2, 2].into();
        for _ in 0..3 {
            assert_eq!(t.blocked(ip).await, None);
            t.record_failure(ip).await;
        }
        let wait = t.blocked(ip).await;
        assert!(wait.is_some_and(|s| (1..=20).contains(&s)), "{wait:?}");
        assert_eq!(t.blocked(other).await, None);
    }
}
