//! SPEC §5 rate limits over real HTTP, on a clock only the test moves (no sleeping): burst and
//! refill, `Retry-After` exactness, the headers on 200 and 429, the account limit shared by two
//! keys, a changed limit taking effect on the next request, the verify API spending the
//! verified key's allowance, and accuracy under many concurrent clients.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Partner, Resp, TestApp, assert_problem, str_of};
use serde_json::json;

/// A key of `p` limited to `per_minute`.
async fn limited_key(app: &TestApp, p: &Partner, per_minute: u32) -> (String, String) {
    let k = app.create_key(&p.key, json!({"name": "limited", "rate_limit_per_minute": per_minute})).await;
    (str_of(&k["key"]), str_of(&k["id"]))
}

fn header_u64(r: &Resp, name: &str) -> u64 {
    r.header(name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("header {name} in {r:?}"))
}

async fn account(app: &TestApp, key: &str) -> Resp {
    app.get(key, "/v1/account").await
}

both_backends!(
    a_key_admits_its_burst_then_refuses_until_exactly_retry_after,
    the_account_limit_is_shared_by_its_keys,
    a_changed_limit_applies_to_the_next_request,
    verify_spends_the_verified_keys_allowance,
    concurrent_clients_get_the_limit_and_no_more,
    a_raised_limit_admits_at_once_and_a_lowered_one_refuses_at_once,
    an_account_limit_change_rescales_too,
);

async fn a_key_admits_its_burst_then_refuses_until_exactly_retry_after(app: TestApp) {
    let p = app.partner("Acme").await;
    let (key, _) = limited_key(&app, &p, 5).await;
    let now = app.clock.now_seconds();
    for remaining in (0..5).rev() {
        let r = account(&app, &key).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(header_u64(&r, "x-ratelimit-remaining"), remaining);
        // 5/min refills one request every 12 s; full again once every spent one is back.
        let reset_after = 12 * (5 - remaining);
        assert_eq!(header_u64(&r, "x-ratelimit-reset"), now + reset_after);
        assert_eq!(r.header("ratelimit-policy"), Some("\"key\";q=5;w=60"));
        assert_eq!(r.header("ratelimit"), Some(format!("\"key\";r={remaining};t={reset_after}").as_str()));
        assert!(r.header("retry-after").is_none());
    }
    let refused = account(&app, &key).await;
    assert_problem(&refused, 429, "rate_limited");
    assert_eq!(refused.body["limit_scope"], "key");
    assert_eq!(refused.body["limit"], 5);
    assert_eq!(refused.header("retry-after"), Some("12"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(refused.header("ratelimit-policy"), Some("\"key\";q=5;w=60"));

    app.clock.advance(Duration::from_millis(11_999));
    let still = account(&app, &key).await;
    assert_problem(&still, 429, "rate_limited");
    assert_eq!(still.header("retry-after"), Some("1"), "rounded up, never early");
    app.clock.advance(Duration::from_millis(1));
    assert_eq!(account(&app, &key).await.status, 200, "admitted exactly when Retry-After said");
    assert_problem(&account(&app, &key).await, 429, "rate_limited");
}

async fn the_account_limit_is_shared_by_its_keys(app: TestApp) {
    let p = app.partner("Acme").await;
    let r = app
        .patch(&app.operator_key, &format!("/v1/accounts/{}", p.account_id), &json!({"rate_limit_per_minute": 6}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let (k1, _) = limited_key(&app, &p, 100).await; // the creating request spent 1 of the 6
    let (k2, _) = limited_key(&app, &p, 100).await; // and this one another
    for key in [&k1, &k2] {
        let r = account(&app, key).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = account(&app, &k1).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-policy"), Some("\"account\";q=6;w=60"), "the tightest limit is the account's");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(account(&app, &k2).await.status, 200);
    let refused = account(&app, &k2).await;
    assert_problem(&refused, 429, "rate_limited");
    assert_eq!(refused.body["limit_scope"], "account");
    assert_eq!(refused.header("retry-after"), Some("10"), "6/min refills one every 10 s");
    assert_problem(&account(&app, &k1).await, 429, "rate_limited");
}

async fn a_changed_limit_applies_to_the_next_request(app: TestApp) {
    let p = app.partner("Acme").await;
    let (key, id) = limited_key(&app, &p, 100).await;
    assert_eq!(account(&app, &key).await.header("x-ratelimit-limit"), Some("100"));
    let r = app.patch(&p.key, &format!("/v1/api-keys/{id}"), &json!({"rate_limit_per_minute": 2})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let next = account(&app, &key).await;
    assert_eq!(next.status, 200);
    assert_eq!(next.header("x-ratelimit-limit"), Some("2"), "the new limit applies at once");
    let mut admitted = 1;
    while account(&app, &key).await.status == 200 {
        admitted += 1;
        assert!(admitted <= 2, "more than the new limit of 2 admitted");
    }
}

async fn verify(app: &TestApp, key: &str) -> Resp {
    app.post(&app.operator_key, "/v1/verify", &json!({"key": key})).await
}

/// `n` concurrent requests with `key`; how many were admitted (the rest must be 429).
async fn burst(app: &TestApp, key: &str, n: usize) -> usize {
    let futures: Vec<_> = (0..n).map(|_| account(app, key)).collect();
    futures_count_ok(futures).await
}

async fn verify_spends_the_verified_keys_allowance(app: TestApp) {
    let p = app.partner("Acme").await;
    let (key, _) = limited_key(&app, &p, 2).await;
    let first = verify(&app, &key).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body["valid"], true);
    assert_eq!(first.body["ratelimit"], json!({"limit": 2, "remaining": 1, "reset": 30}));
    let second = verify(&app, &key).await;
    assert_eq!(second.body["ratelimit"]["remaining"], 0);
    let third = verify(&app, &key).await;
    assert_eq!(third.status, 200, "the verdict is in the body");
    assert_eq!(third.body["valid"], false);
    assert_eq!(third.body["code"], "rate_limited");
    assert_eq!(third.body["ratelimit"]["remaining"], 0);
    // The verified key's own requests share that allowance.
    assert_problem(&account(&app, &key).await, 429, "rate_limited");
}

async fn concurrent_clients_get_the_limit_and_no_more(app: TestApp) {
    const LIMIT: u32 = 60;
    let p = app.partner("Acme").await;
    let (key, _) = limited_key(&app, &p, LIMIT).await;
    // At one instant: 150 concurrent requests, exactly the burst of 60 admitted.
    assert_eq!(burst(&app, &key, 150).await, LIMIT as usize);
    // Then a simulated minute in 1 s steps, 8 concurrent requests per step: one refill a second.
    let mut admitted = 0;
    for _ in 0..60 {
        app.clock.advance(Duration::from_secs(1));
        admitted += burst(&app, &key, 8).await;
    }
    assert!(
        (LIMIT as usize..=LIMIT as usize + 1).contains(&admitted),
        "admitted {admitted} in a minute at {LIMIT}/min"
    );
}

async fn futures_count_ok<F: Future<Output = Resp>>(futures: Vec<F>) -> usize {
    let results = common::join_all(futures).await;
    let mut ok = 0;
    for r in results {
        match r.status {
            200 => ok += 1,
            429 => assert_eq!(r.body["code"], "rate_limited"),
            other => panic!("unexpected {other}: {r:?}"),
        }
    }
    ok
}

/// SPEC §5: a changed limit rescales what was spent (in requests), in both directions.
async fn a_raised_limit_admits_at_once_and_a_lowered_one_refuses_at_once(app: TestApp) {
    let p = app.partner("Acme").await;
    let (key, id) = limited_key(&app, &p, 5).await;
    for _ in 0..5 {
        assert_eq!(account(&app, &key).await.status, 200);
    }
    assert_problem(&account(&app, &key).await, 429, "rate_limited");
    // (900, not 1,000: the account's own 1,000/min, a little spent, must not be the tightest.)
    let r = app.patch(&p.key, &format!("/v1/api-keys/{id}"), &json!({"rate_limit_per_minute": 900})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let next = account(&app, &key).await;
    assert_eq!(next.status, 200, "a raised limit admits at once: {next:?}");
    assert_eq!(next.header("x-ratelimit-limit"), Some("900"));
    assert_eq!(header_u64(&next, "x-ratelimit-remaining"), 894, "the 5 spent stay spent, and this one");
    for _ in 0..20 {
        assert_eq!(account(&app, &key).await.status, 200, "the whole raised allowance, not a trickle");
    }
    // 26 spent; lowered to 10, the key is over its new limit and refused at once, until 16 of
    // them have refilled at 10/min (6 s each) and one more: 96 s.
    let r = app.patch(&p.key, &format!("/v1/api-keys/{id}"), &json!({"rate_limit_per_minute": 10})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let refused = account(&app, &key).await;
    assert_problem(&refused, 429, "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("102"), "{refused:?}");
    app.clock.advance(Duration::from_secs(101));
    assert_problem(&account(&app, &key).await, 429, "rate_limited");
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(account(&app, &key).await.status, 200);
}

async fn an_account_limit_change_rescales_too(app: TestApp) {
    let p = app.partner("Acme").await;
    let path = format!("/v1/accounts/{}", p.account_id);
    let r = app.patch(&app.operator_key, &path, &json!({"rate_limit_per_minute": 3})).await;
    assert_eq!(r.status, 200, "{r:?}");
    for _ in 0..3 {
        assert_eq!(account(&app, &p.key).await.status, 200);
    }
    let refused = account(&app, &p.key).await;
    assert_problem(&refused, 429, "rate_limited");
    assert_eq!(refused.body["limit_scope"], "account");
    let r = app.patch(&app.operator_key, &path, &json!({"rate_limit_per_minute": 600})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let next = account(&app, &p.key).await;
    assert_eq!(next.status, 200, "raised: admitted at once: {next:?}");
    let r = app.patch(&app.operator_key, &path, &json!({"rate_limit_per_minute": 2})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let refused = account(&app, &p.key).await;
    assert_problem(&refused, 429, "rate_limited");
    assert_eq!(refused.body["limit_scope"], "account", "lowered below what was spent: refused at once");
}
