//! [`Engine`]: the [`Keygate`] core plus what serving requests needs — the credential cache in
//! front of the store, the [`Authenticator`], the rate limiter (in process, or shared by a
//! cluster's nodes: [`Engine::clustered`]), idempotency claims, and the background tasks
//! (change-bus listener, change-log follower, usage and request-log flushers, purge), which
//! [`Engine::shutdown`] stops. The API and the gateway share one.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Duration as ChronoDuration;
use keygate_domain::gcra::Quota;
use keygate_domain::model::Account;
use keygate_domain::{AccountId, UserId, time};
use keygate_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::{Authenticator, Caller};
use crate::background::sleep_or_stop;
use crate::bus::ChangeBus;
use crate::cache::{Cache, CacheConfig, CachedKey, CachedStore};
use crate::error::Error;
use crate::follower;
use crate::idempotency::Idempotency;
use crate::keygate::Keygate;
use crate::ratelimit::{self, Clock, InProcessLimiter, LimitKey, RateLimitStatus, RateLimiter};
use crate::requestlog::RequestRecorder;
use crate::services::sessions::{ActiveSession, Origin, SignedIn};
use crate::settings::{SessionSettings, Settings};
use crate::throttle::SignInThrottle;
use crate::usage::UsageRecorder;

/// How often the change log is polled: revocations elsewhere reach this node within about this
/// long plus one query.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
/// The longest `/readyz` waits for the store's answer before it says `unavailable`.
pub const READINESS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long change-log rows are kept.
pub const CHANGE_RETENTION: ChronoDuration = ChronoDuration::hours(1);

/// Changes one dashboard user may make per minute (form posts): far above a person's pace,
/// far below a script's.
pub const DASHBOARD_CHANGES_PER_MINUTE: u32 = 120;
/// How often old request-log records are purged.
const REQUEST_LOG_PURGE_INTERVAL: Duration = Duration::from_secs(86_400);

/// The engine a server runs: share it behind an `Arc`.
pub struct Engine {
    pub keygate: Arc<Keygate>,
    pub auth: Arc<Authenticator>,
    pub limiter: Arc<dyn RateLimiter>,
    /// Cluster mode's evictions to and from the other nodes.
    bus: Option<Arc<dyn ChangeBus>>,
    /// `Idempotency-Key` claims and stored responses (SPEC §6).
    pub idempotency: Idempotency,
    /// Usage counts and the request log's queue, written to the store in batches.
    pub requests: Arc<RequestRecorder>,
    /// Dashboard sessions' timeouts.
    pub sessions: SessionSettings,
    sign_in_throttle: SignInThrottle,
    background: Background,
}

/// What the nodes of a cluster share (SPEC §5, §11): the limiter that decides every limit for all
/// of them, and the bus that carries evictions between them.
pub struct Shared {
    pub limiter: Arc<dyn RateLimiter>,
    pub bus: Arc<dyn ChangeBus>,
}

/// How a node stands with what it depends on, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dependencies {
    /// The store answered a round trip.
    pub store: bool,
    /// Cluster mode only: limits are decided in Redis and evictions arrive from it. `false` while
    /// the node has fallen back to deciding alone.
    pub redis: Option<bool>,
}

struct Background {
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Engine {
    /// Puts the credential cache in front of `keygate.store` and starts the background tasks.
    /// Must be called within a Tokio runtime.
    #[must_use]
    pub fn new(keygate: Keygate, settings: &Settings) -> Self {
        Self::build(keygate, settings, Arc::new(InProcessLimiter::default()), None)
    }

    /// As [`Engine::new`], with rate limits timed by `clock` (tests pass a manual one).
    #[must_use]
    pub fn with_clock(keygate: Keygate, settings: &Settings, clock: Arc<dyn Clock>) -> Self {
        Self::build(keygate, settings, Arc::new(InProcessLimiter::with_clock(clock)), None)
    }

    /// A node of a cluster: limits decided by `shared.limiter`, evictions sent and received on
    /// `shared.bus` (which starts listening here). Must be called within a Tokio runtime.
    #[must_use]
    pub fn clustered(keygate: Keygate, settings: &Settings, shared: Shared) -> Self {
        Self::build(keygate, settings, shared.limiter, Some(shared.bus))
    }

    fn build(
        mut keygate: Keygate,
        settings: &Settings,
        limiter: Arc<dyn RateLimiter>,
        bus: Option<Arc<dyn ChangeBus>>,
    ) -> Self {
        let raw = Arc::clone(&keygate.store);
        let cache = Arc::new(Cache::new(CacheConfig { max_keys: settings.cache_max_keys, ..CacheConfig::default() }));
        keygate.store = Arc::new(CachedStore::new(Arc::clone(&raw), Arc::clone(&cache), bus.clone()));
        let usage = Arc::new(UsageRecorder::default());
        let auth = Arc::new(Authenticator::new(
            settings,
            keygate.hasher.clone(),
            Arc::clone(&cache),
            Arc::clone(&raw),
            Arc::clone(&usage),
            Arc::clone(&limiter),
        ));
        let requests = Arc::new(RequestRecorder::new(settings.request_log, crate::requestlog::MAX_PENDING));
        let (stop, stopped) = watch::channel(false);
        let sealer_key = keygate.hasher.derive("idempotency-responses-v1");
        let fingerprint_key = keygate.hasher.derive("idempotency-fingerprints-v1");
        let idempotency = Idempotency::new(
            Arc::clone(&keygate.store),
            sealer_key,
            fingerprint_key,
            settings.idempotency_retention_seconds,
        );
        let request_log_retention = ChronoDuration::days(i64::from(settings.request_log_retention_days));
        let mut tasks = Vec::with_capacity(5);
        if let Some(bus) = &bus {
            let cache = Arc::clone(&cache);
            tasks.push(tokio::spawn(Arc::clone(bus).listen(Arc::new(move |e| cache.evict(e)), stopped.clone())));
        }
        tasks.extend([
            tokio::spawn(follower::follow(Arc::clone(&raw), cache, bus.clone(), FOLLOW_INTERVAL, stopped.clone())),
            tokio::spawn(usage.run(Arc::clone(&raw), stopped.clone())),
            tokio::spawn(Arc::clone(&requests).run(Arc::clone(&raw), stopped.clone())),
            tokio::spawn(purge_expired(raw, request_log_retention, stopped)),
        ]);
        Self {
            keygate: Arc::new(keygate),
            auth,
            sign_in_throttle: SignInThrottle::new(Arc::clone(&limiter)),
            limiter,
            bus,
            idempotency,
            requests,
            sessions: settings.sessions,
            background: Background { stop, tasks: Mutex::new(tasks) },
        }
    }

    /// Check 11 for `caller`: spends one request of its key's allowance, then the route's per-IP
    /// one (`route_ip`, where the route has one), then its account's (SPEC §5). `Ok` carries the
    /// tightest limit that applied, for the response's headers.
    ///
    /// # Errors
    /// [`Error::RateLimited`] naming the limit that refused; [`Error::LimiterUnavailable`] when
    /// the limiter cannot decide.
    pub async fn spend(
        &self,
        caller: &Caller,
        route_ip: Option<(LimitKey, Quota)>,
    ) -> Result<Option<RateLimitStatus>, Error> {
        self.spend_key(caller.key(), caller.account(), route_ip).await?.map_err(Error::RateLimited)
    }

    /// Check 11 for a key: as [`Engine::spend`], with the refusal as a value. `Ok(Ok(tightest))`
    /// when admitted, `Ok(Err(refusing))` when refused (verify answers a refusal in its body).
    ///
    /// # Errors
    /// [`Error::LimiterUnavailable`] when the limiter cannot decide.
    pub async fn spend_key(
        &self,
        key: &CachedKey,
        account: &Account,
        route_ip: Option<(LimitKey, Quota)>,
    ) -> Result<Result<Option<RateLimitStatus>, RateLimitStatus>, Error> {
        let mut checks = Vec::with_capacity(3);
        checks.push((LimitKey::Key(key.id), Quota::per_minute(key.rate_limit_per_minute)));
        checks.extend(route_ip);
        checks.push((LimitKey::Account(account.id), Quota::per_minute(account.rate_limit_per_minute)));
        ratelimit::enforce(&*self.limiter, &checks, 1).await.map_err(|e| Error::LimiterUnavailable(e.0))
    }

    /// Check 11 for a signed-in user's change (a dashboard form post): at most
    /// [`DASHBOARD_CHANGES_PER_MINUTE`] per user, its own allowance — not the account's, which
    /// the account's keys spend: a flood through a leaked key must not stop its owner from
    /// revoking it.
    ///
    /// # Errors
    /// [`Error::RateLimited`] (`limit_scope` `user`); [`Error::LimiterUnavailable`].
    pub async fn spend_user(&self, user: UserId) -> Result<(), Error> {
        let checks = [(LimitKey::User(user), Quota::per_minute(DASHBOARD_CHANGES_PER_MINUTE))];
        match ratelimit::enforce(&*self.limiter, &checks, 1).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(refused)) => Err(Error::RateLimited(refused)),
            Err(e) => Err(Error::LimiterUnavailable(e.0)),
        }
    }

    /// A dashboard sign-in ([`Keygate::sign_in`]) from `ip`, throttled per address (its rate
    /// key) and per email, counted before the password is checked: while either has used up its
    /// attempts, 429 `too_many_failed_attempts`, right password or not.
    ///
    /// # Errors
    /// As [`Keygate::sign_in`], and [`Error::TooManyFailedAttempts`].
    pub async fn sign_in(
        &self,
        email: &str,
        password: String,
        ip: IpAddr,
        user_agent: Option<String>,
    ) -> Result<SignedIn, Error> {
        let counted_as = self.auth.rate_key(ip);
        self.sign_in_throttle
            .attempt(counted_as, email)
            .await
            .map_err(|retry_after| Error::TooManyFailedAttempts { retry_after })?;
        self.keygate.sign_in(email, password, Some(ip), user_agent, self.sessions).await
    }

    /// A sign-in with a one-time link ([`Keygate::sign_in_with_link`], this engine's timeouts).
    /// Not throttled: the token is 256 random bits, and a failure counter keyed on anything the
    /// caller sends would let one client lock every link out.
    ///
    /// # Errors
    /// As [`Keygate::sign_in_with_link`].
    pub async fn sign_in_with_link(
        &self,
        token: &str,
        ip: IpAddr,
        user_agent: Option<String>,
    ) -> Result<SignedIn, Error> {
        self.keygate.sign_in_with_link(token, Some(ip), user_agent, self.sessions).await
    }

    /// A signed-in user sets its own password ([`Keygate::set_own_password`]); when it needs the
    /// current one, the attempt counts as a sign-in attempt for the throttle (per address and per
    /// email), so the form cannot be used to guess it.
    ///
    /// # Errors
    /// As [`Keygate::set_own_password`], and [`Error::TooManyFailedAttempts`].
    pub async fn set_own_password(
        &self,
        active: &ActiveSession,
        current: Option<String>,
        new: String,
        origin: Origin,
    ) -> Result<SignedIn, Error> {
        let counted_as = self.auth.rate_key(origin.ip.unwrap_or(IpAddr::from([0, 0, 0, 0])));
        if active.user.has_password {
            let email = &active.user.email;
            self.sign_in_throttle
                .attempt(counted_as, email)
                .await
                .map_err(|retry_after| Error::TooManyFailedAttempts { retry_after })?;
        }
        self.keygate.set_own_password(active, current, new, origin, self.sessions).await
    }

    /// How this node stands with the store and, in cluster mode, Redis (for `/readyz`). The
    /// store's round trip is bounded by [`READINESS_TIMEOUT`]: a health check must be answered
    /// before a load balancer gives up on it, whatever the pool's acquire timeout.
    pub async fn dependencies(&self) -> Dependencies {
        let store = matches!(tokio::time::timeout(READINESS_TIMEOUT, self.keygate.store.ping()).await, Ok(Ok(())));
        let redis = self.bus.as_ref().map(|bus| bus.receiving() && self.limiter.shared());
        Dependencies { store, redis }
    }

    /// The live session `token` opens ([`Keygate::session`] with this engine's timeouts).
    ///
    /// # Errors
    /// A store failure.
    pub async fn session(&self, token: &str) -> Result<Option<ActiveSession>, Error> {
        self.keygate.session(token, self.sessions).await
    }

    /// The [`Keygate`] to read `account`'s usage and request log through: what this node has
    /// counted and kept of the account is written first, so the request made a moment ago counts
    /// (SPEC §8). Every reader of either (the API, the dashboard) goes through here.
    pub async fn recorded(&self, account: AccountId) -> &Keygate {
        self.requests.flush_account(&*self.keygate.store, account).await;
        &self.keygate
    }

    /// Stops the background tasks, flushing pending usage and request-log records. Call after
    /// the server has stopped.
    pub async fn shutdown(&self) {
        let _ = self.background.stop.send(true);
        let tasks = self.background.tasks.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Every ten minutes: deletes change-log rows older than [`CHANGE_RETENTION`], expired
/// idempotency records (with the responses they sealed) and ended dashboard sessions. Once a day (first ten minutes after
/// start): request-log records older than `request_log_retention`.
async fn purge_expired(store: Arc<dyn Store>, request_log_retention: ChronoDuration, mut stop: watch::Receiver<bool>) {
    let mut last_request_purge: Option<Instant> = None;
    while !sleep_or_stop(&mut stop, Duration::from_secs(600)).await {
        if last_request_purge.is_none_or(|t| t.elapsed() >= REQUEST_LOG_PURGE_INTERVAL) {
            match store.purge_requests(time::now() - request_log_retention).await {
                Ok(n) => {
                    last_request_purge = Some(Instant::now());
                    tracing::debug!(records = n, "purged old request-log records");
                }
                Err(e) => tracing::warn!(error = %e, "could not purge the request log"),
            }
        }
        if let Err(e) = store.purge_changes(time::now() - CHANGE_RETENTION).await {
            tracing::warn!(error = %e, "could not purge the change log");
        }
        if let Err(e) = store.purge_idempotency(time::now()).await {
            tracing::warn!(error = %e, "could not purge expired idempotency records");
        }
        if let Err(e) = store.purge_sessions(time::now()).await {
            tracing::warn!(error = %e, "could not purge ended dashboard sessions");
        }
    }
}
