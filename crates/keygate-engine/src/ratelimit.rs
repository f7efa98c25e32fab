//! Rate limits (SPEC §5, check 11): per key, per account across its keys, and per route and
//! client IP where a route configures one.
//!
//! The arithmetic is GCRA from `keygate_domain::gcra`; this module keeps the limiters' state.
//! [`RateLimiter`] is one call per check — (limit key, quota, cost) → decision — so a shared
//! implementation (Redis, one atomic script call) can replace [`InProcessLimiter`] without
//! touching callers. Time comes from a [`Clock`], so tests control it instead of sleeping.
//!
//! A request is checked against its limits from the most specific to the least (key, then IP,
//! then account) and stops at the first refusal; allowances already spent by the earlier checks
//! stay spent, as with nginx's `limit_req` zones. The response describes the tightest limit that
//! applied (fewest requests remaining), or the one that refused.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use dashmap::DashMap;
use keygate_domain::gcra::{self, Decision, Quota};
use keygate_domain::{AccountId, KeyId, UserId};

/// Wall-clock time in nanoseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now_ns(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to: for deterministic tests.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// Starts at `unix_seconds`.
    #[must_use]
    pub fn at(unix_seconds: u64) -> Self {
        Self(AtomicU64::new(unix_seconds * 1_000_000_000))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// The current time in whole Unix seconds.
    #[must_use]
    pub fn now_seconds(&self) -> u64 {
        self.now_ns() / 1_000_000_000
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Which limit a decision is about; also the `limit_scope` of a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    Key,
    Account,
    Ip,
    /// A signed-in dashboard user's changes.
    User,
}

impl LimitScope {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Account => "account",
            Self::Ip => "ip",
            Self::User => "user",
        }
    }
}

/// Whose allowance a check spends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Key(KeyId),
    Account(AccountId),
    /// A route (by its configured path) and a client IP, within one account: an account's
    /// clients never spend another account's allowance from behind a shared address (a NAT), and
    /// in cluster mode all of one request's limits share the account's hash slot.
    RouteIp(AccountId, Arc<str>, IpAddr),
    /// Failed authentications from a client IP (see `throttle.rs`).
    FailedAuth(IpAddr),
    /// Dashboard sign-in attempts from a client IP (see `throttle.rs`).
    FailedSignInIp(IpAddr),
    /// Dashboard sign-in attempts for an email, by the first 128 bits of the SHA-256 of its
    /// folded key (see `throttle.rs`): small, so the key every request's limit check moves
    /// stays as small as before.
    FailedSignInEmail(u128),
    /// Dashboard sign-in attempts for an email from one client IP.
    FailedSignInEmailFrom(u128, IpAddr),
    /// A signed-in dashboard user's changes (form posts).
    User(UserId),
}

impl LimitKey {
    #[must_use]
    pub fn scope(&self) -> LimitScope {
        match self {
            Self::Key(_) => LimitScope::Key,
            Self::Account(_) => LimitScope::Account,
            Self::RouteIp(..)
            | Self::FailedAuth(_)
            | Self::FailedSignInIp(_)
            | Self::FailedSignInEmail(_)
            | Self::FailedSignInEmailFrom(..) => LimitScope::Ip,
            Self::User(_) => LimitScope::User,
        }
    }
}

/// The limiter could not decide (a shared store is down).
#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterError(pub String);

/// What one [`RateLimiter::spend`] decided: one decision per check made, in order, the last one
/// the refusal if any refused; and the time they were decided at (the shared store's clock in
/// cluster mode, so nodes' clocks do not matter), in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spent {
    pub now_ns: u64,
    pub decisions: Vec<Decision>,
}

/// Where limits are kept: in this process ([`InProcessLimiter`]) or shared by every node
/// (cluster mode, `keygate-cluster`).
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Spends `cost` from each of `checks`' allowances in order and stops at the first that
    /// refuses; what the earlier ones spent stays spent (SPEC §5). A shared limiter decides all of
    /// them in one round trip. Each quota is the limit as it stands now: a limiter whose state was
    /// computed under another is rescaled first ([`gcra::rescale`]).
    ///
    /// # Errors
    /// The limiter could not decide.
    async fn spend(&self, checks: &[(LimitKey, Quota)], cost: u32) -> Result<Spent, LimiterError>;

    /// What spending `cost` from `key` would decide now, without spending or remembering
    /// anything; with the time it was decided at.
    ///
    /// # Errors
    /// The limiter could not decide.
    async fn peek(&self, key: &LimitKey, quota: Quota, cost: u32) -> Result<(Decision, u64), LimiterError>;

    /// `false` while a shared limiter cannot reach its store and decides in process instead.
    fn shared(&self) -> bool {
        true
    }
}

/// Limiters in this process's memory: one atomic TAT per limit key in a sharded map, updated by
/// compare-and-swap, so concurrent requests on one key admit exactly what GCRA allows.
///
/// Each slot remembers the limit its TAT was computed under. A check with another limit (the
/// key's or account's limit was changed) first rescales the TAT so that what was spent stays
/// spent, in requests (SPEC §5; [`gcra::rescale`]). That happens under the shard's write lock,
/// while the compare-and-swap fast path runs under its read lock, so no check ever applies one
/// limit's arithmetic to a TAT made under another.
///
/// A limiter whose TAT has passed is full, exactly as if it did not exist, so forgetting it loses
/// nothing: when the map grows past [`SWEEP_ABOVE`] entries, those are swept out.
pub struct InProcessLimiter {
    tats: DashMap<LimitKey, Slot>,
    clock: Arc<dyn Clock>,
}

/// One limiter's state: its TAT and the quota that TAT was computed under.
struct Slot {
    tat: AtomicU64,
    quota: Quota,
}

/// Entries above which an insert first sweeps out full limiters.
pub const SWEEP_ABOVE: usize = 100_000;

impl Default for InProcessLimiter {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

#[async_trait]
impl RateLimiter for InProcessLimiter {
    async fn spend(&self, checks: &[(LimitKey, Quota)], cost: u32) -> Result<Spent, LimiterError> {
        Ok(self.spend_now(checks, cost))
    }

    async fn peek(&self, key: &LimitKey, quota: Quota, cost: u32) -> Result<(Decision, u64), LimiterError> {
        let now = self.clock.now_ns();
        Ok((self.peek_at(key, quota, cost, now), now))
    }
}

impl InProcessLimiter {
    /// Limiters timed by `clock` (tests pass a manual one).
    #[must_use]
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self { tats: DashMap::new(), clock }
    }

    /// The synchronous core of [`RateLimiter::spend`], at this limiter's clock.
    #[must_use]
    pub fn spend_now(&self, checks: &[(LimitKey, Quota)], cost: u32) -> Spent {
        let now_ns = self.clock.now_ns();
        let mut decisions = Vec::with_capacity(checks.len());
        for (key, quota) in checks {
            let decision = self.check_now(key, *quota, cost, now_ns);
            decisions.push(decision);
            if !decision.allowed {
                break;
            }
        }
        Spent { now_ns, decisions }
    }

    /// One check at `now_ns`.
    #[must_use]
    pub fn check_now(&self, key: &LimitKey, quota: Quota, cost: u32, now_ns: u64) -> Decision {
        if let Some(slot) = self.tats.get(key) {
            if slot.quota == quota {
                return Self::spend(&slot.tat, quota, cost, now_ns);
            }
        } else if self.tats.len() >= SWEEP_ABOVE {
            self.tats.retain(|_, slot| slot.tat.load(Ordering::Acquire) > now_ns);
        }
        // New, or its limit changed: the write lock keeps every fast-path check out meanwhile.
        let mut slot = self.tats.entry(key.clone()).or_insert_with(|| Slot { tat: AtomicU64::new(0), quota });
        if slot.quota != quota {
            let tat = gcra::rescale(slot.tat.load(Ordering::Acquire), now_ns, slot.quota, quota);
            slot.tat.store(tat, Ordering::Release);
            slot.quota = quota;
        }
        Self::spend(&slot.tat, quota, cost, now_ns)
    }

    /// What a check would decide at `now_ns`, without spending anything or remembering `key`.
    #[must_use]
    pub fn peek_at(&self, key: &LimitKey, quota: Quota, cost: u32, now_ns: u64) -> Decision {
        let tat = self
            .tats
            .get(key)
            .map_or(0, |slot| gcra::rescale(slot.tat.load(Ordering::Acquire), now_ns, slot.quota, quota));
        gcra::check(quota, tat, now_ns, cost)
    }

    /// How many limiters are held (full ones included until the next sweep).
    #[must_use]
    pub fn len(&self) -> usize {
        self.tats.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tats.is_empty()
    }

    fn spend(tat: &AtomicU64, quota: Quota, cost: u32, now_ns: u64) -> Decision {
        let mut current = tat.load(Ordering::Acquire);
        loop {
            let decision = gcra::check(quota, current, now_ns, cost);
            if !decision.allowed {
                return decision;
            }
            match tat.compare_exchange_weak(current, decision.tat_ns, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return decision,
                Err(actual) => current = actual,
            }
        }
    }
}

/// The limit a response reports: the tightest that applied, or the one that refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    pub scope: LimitScope,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the limit is full again (rounded up).
    pub reset_after: u64,
    /// Unix seconds at which it is full again.
    pub reset_at: u64,
    /// On refusal: whole seconds (≥ 1, rounded up) until a retry can be admitted.
    pub retry_after: Option<u64>,
}

impl RateLimitStatus {
    fn new(scope: LimitScope, quota: Quota, d: &Decision, now_ns: u64) -> Self {
        let reset_after = d.reset_after_ns.div_ceil(1_000_000_000);
        Self {
            scope,
            limit: quota.limit,
            remaining: d.remaining,
            reset_after,
            reset_at: now_ns / 1_000_000_000 + reset_after,
            retry_after: (!d.allowed).then(|| d.retry_after_ns.div_ceil(1_000_000_000).max(1)),
        }
    }
}

impl fmt::Display for RateLimitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} limit of {}/min", self.scope.as_str(), self.limit)
    }
}

/// Checks a request's limits in order, in one call of `limiter`. `Ok` carries the tightest limit
/// that applied; `Err` the one that refused.
///
/// # Errors
/// The refusing limit's status, or the limiter's own failure.
pub async fn enforce(
    limiter: &dyn RateLimiter,
    checks: &[(LimitKey, Quota)],
    cost: u32,
) -> Result<Result<Option<RateLimitStatus>, RateLimitStatus>, LimiterError> {
    let Spent { now_ns, decisions } = limiter.spend(checks, cost).await?;
    let mut tightest: Option<RateLimitStatus> = None;
    for ((key, quota), decision) in checks.iter().zip(&decisions) {
        let status = RateLimitStatus::new(key.scope(), *quota, decision, now_ns);
        if !decision.allowed {
            metrics::counter!("keygate_ratelimit_rejections_total", "limit_scope" => key.scope().as_str()).increment(1);
            return Ok(Err(status));
        }
        let tighter = tightest.is_none_or(|t| (status.remaining, status.limit) < (t.remaining, t.limit));
        if tighter {
            tightest = Some(status);
        }
    }
    Ok(Ok(tightest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn run(
        limiter: &InProcessLimiter,
        checks: &[(LimitKey, Quota)],
    ) -> Result<Option<RateLimitStatus>, RateLimitStatus> {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(enforce(limiter, checks, 1)).expect("in-process never fails")
    }

    #[test]
    fn a_burst_of_the_limit_then_retry_after_exactly_one_interval() {
        let clock = Arc::new(ManualClock::at(T0));
        let limiter = InProcessLimiter::with_clock(clock.clone());
        let key = [(LimitKey::Key(KeyId::generate()), Quota::per_minute(60))];
        for i in 0..60 {
            let s = run(&limiter, &key).expect("admitted").expect("a limit applied");
            assert_eq!(s.remaining, 59 - i);
        }
        let refused = run(&limiter, &key).expect_err("refused");
        assert_eq!(
            (refused.scope, refused.limit, refused.remaining, refused.retry_after),
            (LimitScope::Key, 60, 0, Some(1))
        );
        clock.advance(Duration::from_millis(999));
        assert!(run(&limiter, &key).is_err(), "not a moment early");
        clock.advance(Duration::from_millis(1));
        assert!(run(&limiter, &key).is_ok(), "exactly when Retry-After said");
    }

    #[test]
    fn the_account_limit_is_shared_by_its_keys_and_named_when_it_refuses() {
        let clock = Arc::new(ManualClock::at(T0));
        let limiter = InProcessLimiter::with_clock(clock.clone());
        let account = LimitKey::Account(AccountId::generate());
        let k1 =
            [(LimitKey::Key(KeyId::generate()), Quota::per_minute(100)), (account.clone(), Quota::per_minute(150))];
        let k2 = [(LimitKey::Key(KeyId::generate()), Quota::per_minute(100)), (account, Quota::per_minute(150))];
        for _ in 0..100 {
            assert!(run(&limiter, &k1).is_ok());
        }
        for _ in 0..50 {
            assert!(run(&limiter, &k2).is_ok());
        }
        let refused = run(&limiter, &k2).expect_err("the account is spent");
        assert_eq!(refused.scope, LimitScope::Account);
        assert_eq!(refused.retry_after, Some(1));
    }

    #[test]
    fn the_tightest_limit_is_reported() {
        let clock = Arc::new(ManualClock::at(T0));
        let limiter = InProcessLimiter::with_clock(clock.clone());
        let checks = [
            (LimitKey::Key(KeyId::generate()), Quota::per_minute(100)),
            (
                LimitKey::RouteIp(AccountId::generate(), "/v1/sms/send".into(), [203, 0, 113, 7].into()),
                Quota::per_minute(30),
            ),
            (LimitKey::Account(AccountId::generate()), Quota::per_minute(1000)),
        ];
        let s = run(&limiter, &checks).expect("admitted").expect("some limit");
        assert_eq!((s.scope, s.limit, s.remaining), (LimitScope::Ip, 30, 29));
        assert_eq!(s.reset_at, T0 + 2, "one interval of 2 s to refill the one spent");
    }

    #[test]
    fn concurrent_requests_admit_exactly_the_limit() {
        let limiter = Arc::new(InProcessLimiter::default());
        let key = LimitKey::Key(KeyId::generate());
        let quota = Quota::per_minute(500);
        let now = T0 * 1_000_000_000;
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        if limiter.check_now(&key, quota, 1, now).allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 500);
    }

    #[test]
    fn full_limiters_are_swept_when_the_map_is_large() {
        let limiter = InProcessLimiter::default();
        let quota = Quota::per_minute(60);
        let t = T0 * 1_000_000_000;
        for _ in 0..SWEEP_ABOVE {
            let _ = limiter.check_now(&LimitKey::Key(KeyId::generate()), quota, 1, t);
        }
        // 1/min: this one refills for a whole minute.
        let busy = LimitKey::Key(KeyId::generate());
        let _ = limiter.check_now(&busy, Quota::per_minute(1), 1, t);
        assert_eq!(limiter.len(), SWEEP_ABOVE + 1, "nothing was full yet");
        // 30 s later the 60/min limiters (full after 1 s) are swept; the busy one is kept.
        let later = t + 30_000_000_000;
        let _ = limiter.check_now(&LimitKey::Key(KeyId::generate()), quota, 1, later);
        assert_eq!(limiter.len(), 2, "the busy limiter and the new one");
        assert!(!limiter.check_now(&busy, Quota::per_minute(1), 1, later).allowed, "its state was kept");
    }
}

#[cfg(test)]
mod size {
    /// Every limit check moves a `LimitKey`: it stays no larger than a route's key.
    #[test]
    fn a_limit_key_stays_small() {
        assert!(std::mem::size_of::<super::LimitKey>() <= 64, "{}", std::mem::size_of::<super::LimitKey>());
    }
}
