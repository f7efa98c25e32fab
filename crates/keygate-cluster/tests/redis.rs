//! The GCRA script and the change bus against a real Redis (`KEYGATE_TEST_REDIS_URL`): the same
//! decisions as the in-process limiter's arithmetic (`keygate_domain::gcra`), limits rescaled when
//! they change (SPEC §5), one call for a request's limits, evictions delivered to a listener.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_cluster::limiter::RedisLimiter;
use keygate_cluster::redis::Redis;
use keygate_cluster::{RedisSettings, Target};
use keygate_domain::gcra::Quota;
use keygate_domain::{AccountId, KeyId};
use keygate_engine::bus::{ChangeBus, Eviction};
use keygate_engine::ratelimit::{LimitKey, RateLimiter};

fn settings() -> RedisSettings {
    let url = match option_env!("KEYGATE_TEST_REDIS_URL") {
        Some(url) => url.to_owned(),
        None => panic!("set KEYGATE_TEST_REDIS_URL"),
    };
    RedisSettings { target: Target::Single(url), timeout: Duration::from_millis(500) }
}

/// Redis, once the probe has connected and seen it answer.
async fn connected() -> Arc<Redis> {
    let redis = Redis::start(settings()).expect("a Redis URL");
    for _ in 0..200 {
        if redis.up() {
            return redis;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("Redis never answered");
}

#[tokio::test]
#[cfg_attr(not(keygate_redis), ignore = "set KEYGATE_TEST_REDIS_URL to a private Redis")]
async fn a_burst_of_the_limit_then_refusals_that_say_when() {
    let limiter = RedisLimiter::new(connected().await);
    let account = AccountId::generate();
    let checks = [
        (LimitKey::Key(KeyId::generate()), Quota::per_minute(60)),
        (LimitKey::Account(account), Quota::per_minute(1000)),
    ];
    for n in 0..60u32 {
        let spent = limiter.spend(&checks, 1).await.expect("decided");
        assert_eq!(spent.decisions.len(), 2, "both limits in one call");
        assert!(spent.decisions.iter().all(|d| d.allowed), "request {n}");
        assert_eq!(spent.decisions[0].remaining, 59 - n);
    }
    let refused = limiter.spend(&checks, 1).await.expect("decided");
    assert_eq!(refused.decisions.len(), 1, "the key refused: the account spends nothing");
    let d = refused.decisions[0];
    assert!(!d.allowed);
    assert_eq!(d.remaining, 0);
    // One a second refills; a little of it has passed since the burst began.
    assert!((900_000_000..=1_000_000_000).contains(&d.retry_after_ns), "{}", d.retry_after_ns);
    let account_only = limiter.spend(&checks[1..], 1).await.expect("decided");
    assert_eq!(account_only.decisions[0].remaining, 1000 - 61, "60 admitted, and this one");
}

#[tokio::test]
#[cfg_attr(not(keygate_redis), ignore = "set KEYGATE_TEST_REDIS_URL to a private Redis")]
async fn a_changed_limit_keeps_what_was_spent_in_requests() {
    let limiter = RedisLimiter::new(connected().await);
    let key = [LimitKey::Key(KeyId::generate())];
    let at = |limit| [(key[0].clone(), Quota::per_minute(limit))];
    for _ in 0..5 {
        assert!(limiter.spend(&at(5), 1).await.expect("decided").decisions[0].allowed);
    }
    assert!(!limiter.spend(&at(5), 1).await.expect("decided").decisions[0].allowed, "five of five spent");
    // Raised to 1,000: 995 remain at once.
    let raised = limiter.spend(&at(1000), 1).await.expect("decided").decisions[0];
    assert!(raised.allowed);
    assert_eq!(raised.remaining, 994);

    let other = [LimitKey::Key(KeyId::generate())];
    let at = |limit| [(other[0].clone(), Quota::per_minute(limit))];
    let began = std::time::Instant::now();
    for _ in 0..10 {
        assert!(limiter.spend(&at(1000), 1).await.expect("decided").decisions[0].allowed);
    }
    // Lowered to 5 with 10 spent: refused for as long as 10 requests take at 5/min, less the
    // 60 s burst, plus one: 72 s, less what refilled meanwhile — each millisecond at 1,000/min is
    // a fifth of a second at 5/min.
    let lowered = limiter.spend(&at(5), 1).await.expect("decided").decisions[0];
    let elapsed = began.elapsed().as_secs_f64();
    assert!(!lowered.allowed);
    let secs = lowered.retry_after_ns as f64 / 1e9;
    assert!((72.0 - 200.0 * elapsed - 0.01..=72.0).contains(&secs), "{secs} after {elapsed} s");
}

#[tokio::test]
#[cfg_attr(not(keygate_redis), ignore = "set KEYGATE_TEST_REDIS_URL to a private Redis")]
async fn peeking_spends_nothing() {
    let limiter = RedisLimiter::new(connected().await);
    // An address no earlier run has spent from (the Redis outlives the test).
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos();
    let key = LimitKey::FailedAuth(std::net::Ipv6Addr::from(nanos).into());
    let quota = Quota::per_minute(2);
    for _ in 0..5 {
        assert!(limiter.peek(&key, quota, 1).await.expect("decided").0.allowed);
    }
    for _ in 0..2 {
        let _ = limiter.spend(&[(key.clone(), quota)], 1).await.expect("decided");
    }
    assert!(!limiter.peek(&key, quota, 1).await.expect("decided").0.allowed);
}

#[tokio::test]
#[cfg_attr(not(keygate_redis), ignore = "set KEYGATE_TEST_REDIS_URL to a private Redis")]
async fn evictions_reach_every_listener() {
    let (a, b) = (connected().await, connected().await);
    let (bus_a, bus_b) = (keygate_cluster::bus::RedisBus::start(a), keygate_cluster::bus::RedisBus::start(b));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let sink = Arc::clone(&received);
    tokio::spawn(Arc::clone(&bus_b).listen(Arc::new(move |e| sink.lock().expect("sink").push(e)), stopped));
    for _ in 0..200 {
        if bus_b.receiving() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(bus_b.receiving());
    let account = AccountId::generate();
    let sent = [Eviction::Key(account, KeyId::generate()), Eviction::Account(account)];
    for e in sent {
        bus_a.publish(e);
    }
    for _ in 0..200 {
        if received.lock().expect("sink").len() >= sent.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got: Vec<Eviction> = received.lock().expect("sink").iter().filter(|e| sent.contains(e)).copied().collect();
    assert_eq!(got, sent, "in order, as published");
}

#[tokio::test]
#[cfg_attr(not(keygate_redis), ignore = "set KEYGATE_TEST_REDIS_URL to a private Redis")]
async fn a_burst_is_exactly_the_limit_whatever_it_divides() {
    let limiter = RedisLimiter::new(connected().await);
    // Limits that do not divide a minute in nanoseconds: the burst is the limit, no more. (In one
    // call each: real time passes between calls, and 777,777 a minute refill 13 a millisecond.)
    for limit in [7, 9_999, 777_777] {
        let fresh = || [(LimitKey::Account(AccountId::generate()), Quota::per_minute(limit))];
        let all = limiter.spend(&fresh(), limit).await.expect("decided").decisions[0];
        assert!(all.allowed, "{limit}: the whole burst at once");
        assert_eq!(all.remaining, 0, "{limit}");
        let over = limiter.spend(&fresh(), limit + 1).await.expect("decided").decisions[0];
        assert!(!over.allowed, "{limit}: one more than the limit is refused");
        let first = limiter.spend(&fresh(), 1).await.expect("decided").decisions[0];
        assert_eq!(first.remaining, limit - 1, "{limit}");
    }
}
