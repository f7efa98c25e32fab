//! Cluster mode (SPEC §5, §11): what lets many keygate nodes act as one.
//!
//! - [`limiter::RedisLimiter`]: every limit a request spends decided in Redis by one script call,
//!   so N nodes together admit a key's limit, not N times it;
//! - [`bus::RedisBus`]: every eviction of a cached credential published to every node;
//! - [`redis::Redis`]: the one connection (a Redis server or a Redis Cluster), its timeout and its
//!   health. While Redis cannot answer, each node decides alone and says so (`/readyz`,
//!   `keygate_redis_errors_total`), and it returns to shared limits by itself.
//!
//! The engine defines what it needs ([`keygate_engine::ratelimit::RateLimiter`],
//! [`keygate_engine::bus::ChangeBus`]); this crate implements them with Redis and the binary wires
//! them in with [`start`].

pub mod bus;
pub mod limiter;
pub mod redis;

use keygate_engine::Shared;

pub use crate::redis::{RedisSettings, Target};

/// For a process that changes keys without serving (the CLI): its evictions, published to the
/// running nodes through `store` ([`keygate_engine::cache::CachedStore`] over a cache of its own),
/// and the bus to [`bus::RedisBus::flush`] before it exits. Must be called within a Tokio runtime.
///
/// # Errors
/// A URL that is not a Redis URL.
pub fn publishing(
    settings: RedisSettings,
    store: std::sync::Arc<dyn keygate_store::Store>,
) -> Result<(std::sync::Arc<dyn keygate_store::Store>, std::sync::Arc<bus::RedisBus>), ::redis::RedisError> {
    use keygate_engine::cache::{Cache, CacheConfig, CachedStore};
    let bus = bus::RedisBus::start(redis::Redis::start(settings)?);
    let cache = std::sync::Arc::new(Cache::new(CacheConfig { max_keys: 1, ..CacheConfig::default() }));
    let published: std::sync::Arc<dyn keygate_engine::bus::ChangeBus> = bus.clone();
    Ok((std::sync::Arc::new(CachedStore::new(store, cache, Some(published))), bus))
}

/// Connects to Redis in the background and returns the shared limiter and change bus for
/// [`keygate_engine::Engine::clustered`]. Must be called within a Tokio runtime.
///
/// # Errors
/// A URL that is not a Redis URL.
pub fn start(settings: RedisSettings) -> Result<Shared, ::redis::RedisError> {
    let redis = redis::Redis::start(settings)?;
    Ok(Shared {
        limiter: std::sync::Arc::new(limiter::RedisLimiter::new(std::sync::Arc::clone(&redis))),
        bus: bus::RedisBus::start(redis),
    })
}
