//! [`RedisBus`]: cache evictions published on a Redis channel and received by every node.
//!
//! Publishing never waits on the network: an eviction is queued (at most [`QUEUE`]) and a task
//! sends it with `PUBLISH` over the shared connection. Receiving is one `SUBSCRIBE` connection to
//! the Redis server (or, on a Redis Cluster, to any seed node: a cluster forwards every published
//! message to all of its nodes), pinged every [`crate::redis::CHECK_INTERVAL`] — a connection a
//! network partition silently dropped must not pass for one that receives — and reopened after
//! [`RECONNECT_AFTER`] when it drops or a ping goes unanswered for that long. Messages sent while a node was not
//! subscribed are not replayed; the change log it still follows covers them
//! ([`keygate_engine::follower`]). A message that is not an eviction is counted and ignored.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use keygate_engine::bus::{ChangeBus, Deliver, Eviction};
use tokio::sync::{mpsc, watch};

use crate::redis::{CHECK_INTERVAL, REPEAT_WARNING, Redis, RedisError};

/// The channel every node publishes its evictions on.
pub const CHANNEL: &str = "keygate:evictions";
/// Evictions queued for publishing at most; beyond it they are dropped (and counted).
pub const QUEUE: usize = 10_000;
/// How long an eviction waits for a process's first connection to Redis.
pub const CONNECT_WAIT: Duration = Duration::from_secs(1);
/// How long after losing its subscription a node subscribes again.
pub const RECONNECT_AFTER: Duration = Duration::from_millis(250);

/// Evictions to and from the other nodes over Redis pub/sub.
pub struct RedisBus {
    redis: Arc<Redis>,
    queue: mpsc::Sender<Eviction>,
    /// Evictions queued and not yet sent (or given up on).
    pending: Arc<std::sync::atomic::AtomicUsize>,
    /// The current subscription's number, 0 while there is none.
    subscription: AtomicU64,
    /// Subscriptions made so far.
    subscriptions: AtomicU64,
    /// Messages that were not evictions, and when that was last logged.
    ignored: std::sync::Mutex<(u64, Option<std::time::Instant>)>,
}

impl RedisBus {
    /// Starts the publishing task. Must be called within a Tokio runtime.
    #[must_use]
    pub fn start(redis: Arc<Redis>) -> Arc<Self> {
        let (queue, queued) = mpsc::channel(QUEUE);
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(publish(Arc::clone(&redis), queued, Arc::clone(&pending)));
        Arc::new(Self {
            redis,
            queue,
            pending,
            subscription: AtomicU64::new(0),
            subscriptions: AtomicU64::new(0),
            ignored: std::sync::Mutex::new((0, None)),
        })
    }

    /// Waits until every eviction published so far has been sent, for at most `within`: a
    /// process about to exit (the CLI) calls it so that what it changed reaches the running nodes
    /// at once, not at their next read of the change log. `false` if some were not sent in time.
    pub async fn flush(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.pending.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Counts a message that is not an eviction; says so at most every [`REPEAT_WARNING`].
    fn ignored(&self) {
        let Ok(mut ignored) = self.ignored.lock() else { return };
        ignored.0 += 1;
        if ignored.1.is_none_or(|at| at.elapsed() >= REPEAT_WARNING) {
            tracing::warn!(messages = ignored.0, "ignored messages on {CHANNEL} that are not evictions");
            *ignored = (0, Some(std::time::Instant::now()));
        }
    }

    async fn subscribe(&self, deliver: &Deliver, stop: &mut watch::Receiver<bool>) -> Result<(), RedisError> {
        let mut last = None;
        for url in self.redis.settings().target.servers() {
            let timeout = self.redis.settings().timeout.max(Duration::from_millis(250));
            let opened = tokio::time::timeout(timeout * 4, async {
                let mut pubsub = redis::Client::open(url.as_str())?.get_async_pubsub().await?;
                pubsub.subscribe(CHANNEL).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            let pubsub = match opened {
                Ok(Ok(pubsub)) => pubsub,
                Ok(Err(e)) => {
                    last = Some(RedisError::Redis(e));
                    continue;
                }
                Err(_) => {
                    last = Some(RedisError::Timeout(timeout * 4));
                    continue;
                }
            };
            let number = self.subscriptions.fetch_add(1, Ordering::AcqRel) + 1;
            self.subscription.store(number, Ordering::Release);
            tracing::info!("receiving other nodes' evictions from Redis");
            let (mut sink, mut messages) = pubsub.split();
            let mut ping = tokio::time::interval(CHECK_INTERVAL);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let lost = loop {
                tokio::select! {
                    message = messages.next() => {
                        let Some(message) = message else { break "the connection closed" };
                        let eviction = message.get_payload::<String>().ok().and_then(|p| p.parse::<Eviction>().ok());
                        match eviction {
                            Some(eviction) => deliver(eviction),
                            None => self.ignored(),
                        }
                    }
                    _ = ping.tick() => {
                        // A second to answer, however short redis_timeout_ms: a busy node or
                        // Redis must not pass for a partition (losing the subscription can empty
                        // the cache of a node that cannot read the change log).
                        let answered = tokio::time::timeout(CHECK_INTERVAL, sink.ping::<redis::Value>()).await;
                        if !matches!(answered, Ok(Ok(_))) {
                            break "a ping went unanswered";
                        }
                    }
                    _ = stop.changed() => {
                        self.subscription.store(0, Ordering::Release);
                        return Ok(());
                    }
                }
            };
            self.subscription.store(0, Ordering::Release);
            tracing::warn!(
                reason = lost,
                "lost the subscription to other nodes' evictions: relying on the change log until it is back"
            );
            return Err(RedisError::Reply(lost.into()));
        }
        Err(last.unwrap_or(RedisError::NotConnected))
    }
}

impl ChangeBus for RedisBus {
    fn publish(&self, eviction: Eviction) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.queue.try_send(eviction).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("keygate_redis_errors_total").increment(1);
        }
    }

    fn subscription(&self) -> Option<u64> {
        Some(self.subscription.load(Ordering::Acquire)).filter(|n| *n > 0)
    }

    fn listen(
        self: Arc<Self>,
        deliver: Deliver,
        mut stop: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut reported = false;
            while !*stop.borrow() {
                match self.subscribe(&deliver, &mut stop).await {
                    Ok(()) => return,
                    Err(e) => {
                        metrics::counter!("keygate_redis_errors_total").increment(1);
                        if !reported {
                            tracing::warn!(error = %e, "cannot subscribe to other nodes' evictions yet");
                            reported = true;
                        }
                    }
                }
                if keygate_engine::background::sleep_or_stop(&mut stop, RECONNECT_AFTER).await {
                    return;
                }
            }
        })
    }
}

/// Sends queued evictions, one `PUBLISH` each, until every sender is gone. A process that has
/// just started may not be connected yet: an eviction waits for the connection up to
/// [`CONNECT_WAIT`].
async fn publish(
    redis: Arc<Redis>,
    mut queued: mpsc::Receiver<Eviction>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
) {
    while let Some(eviction) = queued.recv().await {
        let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
        while !redis.connected() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let message = eviction.to_string();
        // A failure is counted by `query`; the change log carries the eviction instead.
        let _ = redis.query::<i64>(redis::cmd("PUBLISH").arg(CHANNEL).arg(message)).await;
        pending.fetch_sub(1, Ordering::AcqRel);
    }
}
