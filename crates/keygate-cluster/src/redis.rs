//! One connection to Redis — a single server or a Redis Cluster — shared by every request, with
//! a bounded time per call and a view of whether Redis is reachable.
//!
//! A call that fails or outlasts [`RedisSettings::timeout`] marks Redis down: callers then decide
//! without it at once ([`Redis::up`] is false) instead of each waiting out its own timeout, and
//! `keygate_redis_errors_total` counts the failure. A background probe connects in the first
//! place (so a node starts even while Redis is unreachable), then runs the limiter's own script
//! with no limiter every [`PROBE_INTERVAL`] while Redis is down and every [`CHECK_INTERVAL`] while
//! it is up: Redis is up exactly while that script runs — a `PING` would pass where the script
//! cannot (out of memory, a user without `EVALSHA`, a read-only replica), and flap — and an idle
//! node still notices that Redis went away. While Redis stays down, the reason is logged again
//! every [`REPEAT_WARNING`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Script, ScriptInvocation, Value};
use thread_local::ThreadLocal;
use tokio::runtime::RuntimeFlavor;
use tokio::sync::OnceCell;

use crate::limiter::GCRA;

/// How often an unreachable Redis is tried again.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How often a reachable Redis is checked when nothing else calls it.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often the reason Redis is down is logged again while it stays down.
pub const REPEAT_WARNING: Duration = Duration::from_secs(60);

/// Where Redis is (SPEC §11) and how long a call may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub target: Target,
    /// The longest one call may take before the node decides without Redis.
    pub timeout: Duration,
}

/// One Redis server, or the seed nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `redis_url`: `redis://host:port`.
    Single(String),
    /// `redis_cluster_nodes`: `redis://host:port` of some of its nodes.
    Cluster(Vec<String>),
}

impl Target {
    /// The servers a plain (non-cluster) connection may be made to: the one server, or each seed
    /// node of a cluster (pub/sub messages reach every node of a cluster).
    #[must_use]
    pub fn servers(&self) -> &[String] {
        match self {
            Self::Single(url) => std::slice::from_ref(url),
            Self::Cluster(nodes) => nodes,
        }
    }
}

/// Why Redis could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("not connected to Redis yet")]
    NotConnected,
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected answer from Redis: {0}")]
    Reply(String),
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Either kind of connection answers commands and scripts alike.
impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The shared connection, one more per request thread, and Redis's health.
///
/// A connection's driver runs on the runtime that made it. Requests run on one current-thread
/// runtime per core (`keygate serve`'s workers), so each of those threads gets a connection of its
/// own, made on first use in the background: a request's script call then never wakes another
/// thread to write it and again to read its answer (measured with one shared connection: about
/// five more system calls and 20 µs more CPU per request, most of it those wake-ups). Until it is
/// ready, and on every other thread (the probe, the bus), the shared connection serves.
pub struct Redis {
    settings: RedisSettings,
    connection: OnceCell<Connection>,
    per_thread: ThreadLocal<Arc<Mutex<PerThread>>>,
    up: AtomicBool,
}

/// A request thread's own connection.
enum PerThread {
    None,
    Connecting,
    Ready(Connection),
}

impl Redis {
    /// Checks the URLs and starts connecting in the background (the probe). Must be called within
    /// a Tokio runtime; the probe ends when the last `Arc` is dropped.
    ///
    /// # Errors
    /// A URL that is not a Redis URL.
    pub fn start(settings: RedisSettings) -> Result<Arc<Self>, redis::RedisError> {
        for url in settings.target.servers() {
            redis::Client::open(url.as_str())?;
        }
        let redis = Arc::new(Self {
            settings,
            connection: OnceCell::new(),
            per_thread: ThreadLocal::new(),
            up: AtomicBool::new(false),
        });
        tokio::spawn(probe(Arc::downgrade(&redis)));
        Ok(redis)
    }

    #[must_use]
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Whether a connection has been made (it reconnects by itself after that).
    #[must_use]
    pub fn connected(&self) -> bool {
        self.connection.initialized()
    }

    /// Whether the last call (or probe) was answered.
    #[must_use]
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Runs `script` (EVALSHA, loading it on `NOSCRIPT`) within the timeout.
    ///
    /// # Errors
    /// Not connected, timed out, or Redis's own error; each marks Redis down.
    pub async fn invoke<T: FromRedisValue + Send>(&self, script: &ScriptInvocation<'_>) -> Result<T, RedisError> {
        let mut connection = self.connection().ok_or(RedisError::NotConnected)?;
        self.bounded(async move { script.invoke_async(&mut connection).await }).await
    }

    /// Sends one command within the timeout.
    ///
    /// # Errors
    /// As [`Redis::invoke`].
    pub async fn query<T: FromRedisValue + Send>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        let mut connection = self.connection().ok_or(RedisError::NotConnected)?;
        self.bounded(async move { cmd.query_async(&mut connection).await }).await
    }

    /// This request thread's own connection when it is ready (starting to make it if it is not),
    /// else the shared one.
    fn connection(&self) -> Option<Connection> {
        let current_thread =
            tokio::runtime::Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread);
        if current_thread && self.connection.initialized() {
            let slot = self.per_thread.get_or(|| Arc::new(Mutex::new(PerThread::None)));
            let mut state = slot.lock().unwrap_or_else(PoisonError::into_inner);
            match &*state {
                PerThread::Ready(connection) => return Some(connection.clone()),
                PerThread::Connecting => {}
                PerThread::None => {
                    *state = PerThread::Connecting;
                    let (slot, settings) = (Arc::clone(slot), self.settings.clone());
                    tokio::spawn(async move {
                        let made = connect(&settings).await;
                        let mut state = slot.lock().unwrap_or_else(PoisonError::into_inner);
                        // A failure is tried again by a later request, while Redis is up.
                        *state = made.map_or(PerThread::None, PerThread::Ready);
                    });
                }
            }
        }
        self.connection.get().cloned()
    }

    async fn bounded<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, RedisError> {
        let result = match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => RedisError::Redis(e),
            Err(_) => RedisError::Timeout(self.settings.timeout),
        };
        self.failed(&result);
        Err(result)
    }

    /// Counts a failure and, the first time, says the node now decides without Redis.
    pub fn failed(&self, error: &RedisError) {
        metrics::counter!("keygate_redis_errors_total").increment(1);
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                error = %error,
                "Redis unreachable: rate limits are decided by this node alone until it answers again"
            );
        }
    }
}

/// A new connection to `settings`' Redis (with its reconnecting driver on the current runtime).
async fn connect(settings: &RedisSettings) -> Result<Connection, RedisError> {
    let timeout = settings.timeout.max(Duration::from_millis(250));
    let connecting = async {
        match &settings.target {
            Target::Single(url) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(settings.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(PROBE_INTERVAL);
                let client = redis::Client::open(url.as_str())?;
                Ok(Connection::Single(ConnectionManager::new_with_config(client, config).await?))
            }
            Target::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(settings.timeout)
                    .retries(1)
                    .build()?;
                Ok(Connection::Cluster(client.get_async_connection().await?))
            }
        }
    };
    match tokio::time::timeout(timeout * 4, connecting).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::Timeout(timeout * 4)),
    }
}

/// Connects (once), then runs the limiter's script with no limiter.
async fn check(redis: &Redis, script: &Script) -> Result<(), RedisError> {
    if !redis.connected() {
        let connection = connect(&redis.settings).await.inspect_err(|_| {
            metrics::counter!("keygate_redis_errors_total").increment(1);
        })?;
        let _ = redis.connection.set(connection);
    }
    redis.invoke::<Vec<u64>>(script.prepare_invoke().arg(1).arg(0)).await.map(drop)
}

/// [`check`]s Redis every [`PROBE_INTERVAL`] while it is down, every [`CHECK_INTERVAL`] while it
/// is up.
async fn probe(redis: std::sync::Weak<Redis>) {
    let script = Script::new(GCRA);
    let mut warned: Option<std::time::Instant> = None;
    loop {
        let Some(redis) = redis.upgrade() else { return };
        let was_up = redis.up();
        let checked = check(&redis, &script).await;
        match checked {
            Ok(()) => {
                warned = None;
                if !redis.up.swap(true, Ordering::AcqRel) {
                    tracing::info!("Redis reachable: rate limits are shared by every node again");
                }
            }
            Err(e) => {
                if was_up {
                    // `failed` has just said so.
                    warned = Some(std::time::Instant::now());
                } else if warned.is_none_or(|at| at.elapsed() >= REPEAT_WARNING) {
                    tracing::warn!(
                        error = %e,
                        "Redis cannot decide rate limits: each node decides alone until it can"
                    );
                    warned = Some(std::time::Instant::now());
                }
            }
        }
        let wait = if redis.up() { CHECK_INTERVAL } else { PROBE_INTERVAL };
        drop(redis);
        tokio::time::sleep(wait).await;
    }
}
