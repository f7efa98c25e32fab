//! What handlers and use cases share: the store, the key format and hasher, the catalog, limits.
//!
//! [`Keygate`] is everything the use cases (`services`) need; the CLI builds one too, so the
//! command line and the HTTP API run the same code. [`AppState`] adds what only a server needs:
//! the credential cache in front of the store, the authenticator, the rate limiter and its
//! clock, and the background tasks
//! (change-log follower, usage and request-log flushers, purge), which [`AppState::shutdown`]
//! stops.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Duration as ChronoDuration;
use keygate_domain::key::{HashSecret, KeyFormat, KeyHasher};
use keygate_domain::scope::Catalog;
use keygate_domain::time;
use keygate_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::cache::{Cache, CacheConfig, CachedStore};
use crate::config::{Limits, Settings};
use crate::follower;
use crate::gateway::Gateway;
use crate::idempotency::{self, Sealer};
use crate::ratelimit::{Clock, InProcessLimiter, RateLimiter, SystemClock};
use crate::requestlog::RequestRecorder;
use crate::usage::UsageRecorder;

/// How often the change log is polled: revocations elsewhere reach this node within about this
/// long plus one query.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
/// How long change-log rows are kept.
pub const CHANGE_RETENTION: ChronoDuration = ChronoDuration::hours(1);
/// How often old request-log records are purged.
const REQUEST_LOG_PURGE_INTERVAL: Duration = Duration::from_secs(86_400);

/// The use cases' dependencies.
pub struct Keygate {
    pub store: Arc<dyn Store>,
    pub key_format: KeyFormat,
    pub hasher: KeyHasher,
    pub catalog: Catalog,
    pub limits: Limits,
}

impl Keygate {
    #[must_use]
    pub fn new(store: Arc<dyn Store>, settings: &Settings, secret: &HashSecret) -> Self {
        Self {
            store,
            key_format: settings.key_format.clone(),
            hasher: KeyHasher::new(secret),
            catalog: settings.catalog.clone(),
            limits: settings.limits,
        }
    }
}

/// The database was made with another hash secret (SPEC §2): every key would fail
/// `invalid_api_key`, so keygate refuses to start instead.
#[derive(Debug, thiserror::Error)]
pub enum SecretCheckError {
    #[error(
        "the hash secret does not match the one this database was set up with (its fingerprint is \
         {stored}, this secret's is {ours}); every existing key would fail as invalid_api_key. Start \
         keygate with the original secret (KEYGATE_HASH_SECRET, hash_secret in keygate.toml, or the \
         keygate.secret file beside a SQLite database)"
    )]
    Mismatch { stored: String, ours: String },
    #[error(transparent)]
    Store(#[from] keygate_store::StoreError),
}

impl Keygate {
    /// The fingerprint of the configured hash secret: an HMAC of a fixed label under it, in hex.
    /// It identifies the secret without revealing it.
    #[must_use]
    pub fn hash_secret_fingerprint(&self) -> String {
        let mac = self.hasher.derive("hash-secret-fingerprint-v1");
        mac.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// Records the secret's fingerprint in a database that has none, or checks it against the
    /// one recorded (SPEC §2). Call once at start, before serving or changing anything.
    ///
    /// # Errors
    /// [`SecretCheckError::Mismatch`] when the database was made with another secret.
    pub async fn check_hash_secret(&self) -> Result<(), SecretCheckError> {
        let ours = self.hash_secret_fingerprint();
        match self.store.claim_hash_secret_fingerprint(&ours).await? {
            Some(stored) if stored != ours => Err(SecretCheckError::Mismatch { stored, ours }),
            _ => Ok(()),
        }
    }
}

/// Shared by every handler: one `Arc`, so the clone axum makes for each handler and middleware
/// is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub keygate: Arc<Keygate>,
    pub auth: Arc<Authenticator>,
    pub limiter: Arc<dyn RateLimiter>,
    pub clock: Arc<dyn Clock>,
    pub sealer: Arc<Sealer>,
    /// The compiled `[gateway]`, when configured.
    pub gateway: Option<Arc<Gateway>>,
    pub idempotency_retention: ChronoDuration,
    pub max_body_bytes: usize,
    /// The request log's in-memory queue, written to the store in batches.
    pub requests: Arc<RequestRecorder>,
    background: Background,
}

struct Background {
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl AppState {
    /// Puts the credential cache in front of `keygate.store` and starts the background tasks.
    /// Must be called within a Tokio runtime.
    #[must_use]
    pub fn new(keygate: Keygate, settings: &Settings) -> Self {
        Self::with_clock(keygate, settings, Arc::new(SystemClock))
    }

    /// As [`AppState::new`], with rate limits timed by `clock` (tests pass a manual one).
    #[must_use]
    pub fn with_clock(mut keygate: Keygate, settings: &Settings, clock: Arc<dyn Clock>) -> Self {
        let raw = Arc::clone(&keygate.store);
        let cache = Arc::new(Cache::new(CacheConfig::default()));
        keygate.store = Arc::new(CachedStore::new(Arc::clone(&raw), Arc::clone(&cache)));
        let usage = Arc::new(UsageRecorder::default());
        let auth = Arc::new(Authenticator::new(
            settings,
            keygate.hasher.clone(),
            Arc::clone(&cache),
            Arc::clone(&raw),
            Arc::clone(&usage),
        ));
        let requests = Arc::new(RequestRecorder::default());
        let (stop, stopped) = watch::channel(false);
        let sealer_key = keygate.hasher.derive("idempotency-responses-v1");
        let request_log_retention = ChronoDuration::days(i64::from(settings.request_log_retention_days));
        let tasks = vec![
            tokio::spawn(follower::follow(Arc::clone(&raw), cache, FOLLOW_INTERVAL, stopped.clone())),
            tokio::spawn(usage.run(Arc::clone(&raw), stopped.clone())),
            tokio::spawn(Arc::clone(&requests).run(Arc::clone(&raw), stopped.clone())),
            tokio::spawn(purge_expired(raw, request_log_retention, stopped)),
        ];
        Self(Arc::new(Shared {
            keygate: Arc::new(keygate),
            auth,
            limiter: Arc::new(InProcessLimiter::default()),
            clock,
            sealer: Arc::new(Sealer::new(sealer_key)),
            gateway: settings.gateway.clone(),
            idempotency_retention: idempotency::retention(settings.idempotency_retention_seconds),
            max_body_bytes: settings.max_body_bytes,
            requests,
            background: Background { stop, tasks: Mutex::new(tasks) },
        }))
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

/// Every ten minutes: deletes change-log rows older than [`CHANGE_RETENTION`] and expired
/// idempotency records (with the responses they sealed). Once a day (first ten minutes after
/// start): request-log records older than `request_log_retention`.
async fn purge_expired(store: Arc<dyn Store>, request_log_retention: ChronoDuration, mut stop: watch::Receiver<bool>) {
    let mut last_request_purge: Option<Instant> = None;
    while !follower::sleep_or_stop(&mut stop, Duration::from_secs(600)).await {
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
    }
}
