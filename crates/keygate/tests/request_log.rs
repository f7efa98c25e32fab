//! The request log: `/v1/api-keys/{id}/usage` counts a key's requests per day and outcome, and
//! `/v1/requests` lists them, newest first, filtered and paged, for the key's account only.
//! Records are written within about a second of the request, so reads poll (deadline 5 s).

#[macro_use]
mod common;

use std::time::Duration;

use common::{
    Partner, TestApp, assert_invalid_fields, assert_problem, ids, is_id, is_timestamp, list_data, poll, str_of,
};
use reqwest::Method;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_millis(100);

both_backends!(
    usage_counts_a_keys_requests_per_day_and_outcome,
    requests_are_listed_newest_first_with_filters_and_pages,
    another_account_sees_none_of_them,
    bad_parameters_are_refused,
);

/// A key that may read tenants and nothing else, and what it did: two 200s, a 403 (no
/// `api_keys:read`) and a 404 (a tenant that does not exist).
struct Traffic {
    key: String,
    key_id: String,
    /// The request ids of the four requests, oldest first.
    request_ids: Vec<String>,
}

async fn make_traffic(app: &TestApp, p: &Partner) -> Traffic {
    let created = app.create_key(&p.key, json!({"name": "reader", "scopes": ["tenants:read"]})).await;
    let key = str_of(&created["key"]);
    let key_id = str_of(&created["id"]);
    let mut request_ids = Vec::new();
    for _ in 0..2 {
        let r = app.get(&key, "/v1/tenants").await;
        assert_eq!(r.status, 200, "{r:?}");
        request_ids.push(r.request_id().to_owned());
    }
    let r = app.get(&key, "/v1/api-keys").await;
    assert_problem(&r, 403, "insufficient_scope");
    request_ids.push(r.request_id().to_owned());
    let r = app.get(&key, "/v1/tenants/ten_01JABCDEFGHJKMNPQRSTVWXYZ0").await;
    assert_problem(&r, 404, "not_found");
    request_ids.push(r.request_id().to_owned());
    Traffic { key, key_id, request_ids }
}

/// Polls `/v1/requests?key_id=…` until it holds `n` records.
async fn requests_of(app: &TestApp, p: &Partner, key_id: &str, n: usize) -> Vec<Value> {
    let probe = || async {
        let r = common::send(app.request(Method::GET, "/v1/requests", &p.key).query(&[("key_id", key_id)])).await;
        let items = list_data(r.expect_status(200));
        (items.len() >= n).then_some(items)
    };
    poll(DEADLINE, EVERY, probe).await.unwrap_or_else(|t| panic!("{n} records of {key_id} not listed after {t:?}")).0
}

async fn usage_counts_a_keys_requests_per_day_and_outcome(app: TestApp) {
    let p = app.partner("Acme").await;
    let t = make_traffic(&app, &p).await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let path = format!("/v1/api-keys/{}/usage", t.key_id);
    let expected = json!([
        {"date": today, "outcome": "insufficient_scope", "count": 1},
        {"date": today, "outcome": "not_found", "count": 1},
        {"date": today, "outcome": "ok", "count": 2},
    ]);
    let probe = || async {
        let body = app.get(&p.key, &path).await.expect_status(200);
        (body["data"] == expected).then_some(body)
    };
    let (body, _) =
        poll(DEADLINE, EVERY, probe).await.unwrap_or_else(|e| panic!("usage at {path} not {expected} after {e:?}"));
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "only `data`: {body}");

    // A window that ends before the requests counts none of them.
    let r = common::send(
        app.request(Method::GET, &path, &p.key)
            .query(&[("since", "2020-01-01T00:00:00Z"), ("until", "2020-02-01T00:00:00Z")]),
    )
    .await;
    assert_eq!(r.expect_status(200), json!({"data": []}));

    // Reading usage needs api_keys:read, as reading the key does.
    assert_problem(&app.get(&t.key, &format!("/v1/api-keys/{}/usage", t.key_id)).await, 403, "insufficient_scope");
    // A key that does not exist has no usage.
    assert_problem(&app.get(&p.key, "/v1/api-keys/key_01JABCDEFGHJKMNPQRSTVWXYZ0/usage").await, 404, "not_found");
}

async fn requests_are_listed_newest_first_with_filters_and_pages(app: TestApp) {
    let p = app.partner("Acme").await;
    let t = make_traffic(&app, &p).await;
    let items = requests_of(&app, &p, &t.key_id, 4).await;
    assert_eq!(items.len(), 4, "{items:?}");

    // Newest first: the request ids in reverse order of sending.
    let listed: Vec<String> = items.iter().map(|i| str_of(&i["request_id"])).collect();
    let mut sent = t.request_ids.clone();
    sent.reverse();
    assert_eq!(listed, sent);

    let mut fields: Vec<&str> = items[0].as_object().expect("an item").keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "at",
            "client_ip",
            "id",
            "key_id",
            "latency_ms",
            "method",
            "outcome",
            "request_id",
            "route",
            "status",
            "tenant_id",
            "via_key_id"
        ]
    );
    for item in &items {
        assert!(is_id(&str_of(&item["id"]), "rl"), "{item}");
        assert!(is_timestamp(&str_of(&item["at"])), "{item}");
        assert_eq!(item["key_id"], t.key_id.as_str(), "{item}");
        assert_eq!(item["tenant_id"], Value::Null, "{item}");
        assert_eq!(item["method"], "GET", "{item}");
        assert_eq!(item["client_ip"], "127.0.0.1", "{item}");
        assert!(item["latency_ms"].as_f64().is_some_and(|l| l >= 0.0), "{item}");
    }
    let summary: Vec<(String, u64, String)> = items
        .iter()
        .rev()
        .map(|i| (str_of(&i["route"]), i["status"].as_u64().expect("a status"), str_of(&i["outcome"])))
        .collect();
    assert_eq!(
        summary,
        [
            ("/v1/tenants".to_owned(), 200, "ok".to_owned()),
            ("/v1/tenants".to_owned(), 200, "ok".to_owned()),
            ("/v1/api-keys".to_owned(), 403, "insufficient_scope".to_owned()),
            ("/v1/tenants/{id}".to_owned(), 404, "not_found".to_owned()),
        ]
    );

    // Filters: status, key, time.
    let (app_ref, key) = (&app, p.key.as_str());
    let list = move |query: Vec<(&'static str, String)>| async move {
        let r = common::send(app_ref.request(Method::GET, "/v1/requests", key).query(&query)).await;
        r.expect_status(200)
    };
    let only_404 = list_data(list(vec![("key_id", t.key_id.clone()), ("status", "404".into())]).await);
    assert_eq!(ids(&only_404), [str_of(&items[0]["id"])]);
    let only_200 = list_data(list(vec![("key_id", t.key_id.clone()), ("status", "200".into())]).await);
    assert_eq!(only_200.len(), 2);
    let future = list_data(list(vec![("since", "2100-01-01T00:00:00Z".into())]).await);
    assert!(future.is_empty(), "{future:?}");
    let past = list_data(list(vec![("key_id", t.key_id.clone()), ("until", "2020-01-01T00:00:00Z".into())]).await);
    assert!(past.is_empty(), "{past:?}");
    // The partner's own key made requests too (creating the key, reading the log).
    let own = list_data(list(vec![("key_id", p.key_id.clone()), ("limit", "100".into())]).await);
    assert!(own.iter().any(|i| i["route"] == "/v1/api-keys" && i["method"] == "POST" && i["status"] == 201), "{own:?}");

    // Pages of two, by cursor.
    let first = list(vec![("key_id", t.key_id.clone()), ("limit", "2".into())]).await;
    let cursor = str_of(&first["next_cursor"]);
    let second = list(vec![("key_id", t.key_id.clone()), ("limit", "2".into()), ("cursor", cursor)]).await;
    assert_eq!(second["next_cursor"], Value::Null);
    let mut paged = ids(&list_data(first));
    paged.extend(ids(&list_data(second)));
    assert_eq!(paged, ids(&items));

    // Reading the log needs audit:read.
    assert_problem(&app.get(&t.key, "/v1/requests").await, 403, "insufficient_scope");
}

async fn another_account_sees_none_of_them(app: TestApp) {
    let p = app.partner("Acme").await;
    let other = app.partner("Globex").await;
    let t = make_traffic(&app, &p).await;
    requests_of(&app, &p, &t.key_id, 4).await;

    let usage = format!("/v1/api-keys/{}/usage", t.key_id);
    assert_problem(&app.get(&other.key, &usage).await, 404, "not_found");
    let r = common::send(app.request(Method::GET, "/v1/requests", &other.key).query(&[("key_id", &t.key_id)])).await;
    assert_eq!(list_data(r.expect_status(200)), Vec::<Value>::new());
    let all = list_data(
        common::send(app.request(Method::GET, "/v1/requests", &other.key).query(&[("limit", "100")]))
            .await
            .expect_status(200),
    );
    assert!(all.iter().all(|i| i["key_id"] == other.key_id.as_str()), "only the other account's own: {all:?}");

    // No record holds a plaintext key, in any field.
    let mine = list_data(
        common::send(app.request(Method::GET, "/v1/requests", &p.key).query(&[("limit", "100")]))
            .await
            .expect_status(200),
    );
    let text = serde_json::to_string(&mine).expect("JSON");
    for secret in [&t.key, &p.key, &other.key] {
        assert!(!text.contains(secret.as_str()), "a plaintext key in the request log");
    }
    assert!(!text.contains("sk_live_") && !text.contains("sk_test_"), "{text}");
}

async fn bad_parameters_are_refused(app: TestApp) {
    let p = app.partner("Acme").await;
    let get = |path: &'static str, query: Vec<(&'static str, &'static str)>| {
        let request = app.request(Method::GET, path, &p.key).query(&query);
        async move { common::send(request).await }
    };
    assert_invalid_fields(&get("/v1/requests", vec![("key_id", "nope")]).await, &["key_id"]);
    assert_invalid_fields(&get("/v1/requests", vec![("limit", "0")]).await, &["limit"]);
    assert_problem(
        &get("/v1/requests", vec![("cursor", "key_01JABCDEFGHJKMNPQRSTVWXYZ0")]).await,
        400,
        "invalid_request",
    );
    let usage = format!("/v1/api-keys/{}/usage", p.key_id);
    let r = common::send(
        app.request(Method::GET, &usage, &p.key)
            .query(&[("since", "2026-02-01T00:00:00Z"), ("until", "2026-01-01T00:00:00Z")]),
    )
    .await;
    assert_eq!(r.expect_status(200), json!({"data": []}), "an empty window holds no requests");
}

/// SPEC §4: a tenant-scoped key's view of the request log holds its tenants' requests and those
/// of keys within its tenants, nothing of other tenants.
async fn tenant_scoped_keys_see_only_their_tenants_requests(app: TestApp) {
    let p = app.partner("Acme").await;
    let ta1 = str_of(&app.create_tenant(&p.key, json!({"name": "TA1"})).await["id"]);
    let ta2 = str_of(&app.create_tenant(&p.key, json!({"name": "TA2"})).await["id"]);
    let make = async |name: &str, tenant: &str, scopes: Value| {
        let k = app.create_key(&p.key, json!({"name": name, "tenant_ids": [tenant], "scopes": scopes})).await;
        (str_of(&k["key"]), str_of(&k["id"]))
    };
    let (reader, reader_id) = make("ta1 auditor", &ta1, json!(["audit:read", "api_keys:read"])).await;
    let (k2, k2_id) = make("ta2 key", &ta2, json!(["api_keys:read"])).await;
    assert_eq!(app.get(&k2, "/v1/api-keys").await.status, 200);
    assert_eq!(app.get(&reader, "/v1/api-keys").await.status, 200);
    assert_eq!(app.get(&p.key, "/v1/api-keys").await.status, 200);

    // Wait until all three are recorded, as the partner-level key sees them.
    poll(DEADLINE, EVERY, || async {
        let all = list_data(app.get(&p.key, "/v1/requests?limit=100").await.expect_status(200));
        let keys: Vec<String> = all.iter().map(|r| str_of(&r["key_id"])).collect();
        (keys.contains(&k2_id) && keys.contains(&reader_id) && keys.contains(&p.key_id)).then_some(())
    })
    .await
    .expect("the three requests are recorded");
    let seen = list_data(app.get(&reader, "/v1/requests?limit=100").await.expect_status(200));
    let keys: Vec<String> = seen.iter().map(|r| str_of(&r["key_id"])).collect();
    assert!(keys.contains(&reader_id), "its own requests: {keys:?}");
    assert!(!keys.contains(&k2_id), "another tenant's key's requests do not exist for it: {keys:?}");
    assert!(!keys.contains(&p.key_id), "nor a partner-level key's: {keys:?}");
    let filtered = list_data(app.get(&reader, &format!("/v1/requests?key_id={k2_id}")).await.expect_status(200));
    assert!(filtered.is_empty(), "{filtered:?}");
    assert_problem(&app.get(&reader, &format!("/v1/api-keys/{k2_id}/usage")).await, 404, "not_found");
}
both_backends!(tenant_scoped_keys_see_only_their_tenants_requests);

/// SPEC §8: usage is exact at once, the current second included.
async fn usage_counts_the_requests_just_made(app: TestApp) {
    let p = app.partner("Acme").await;
    for _ in 0..3 {
        assert_eq!(app.get(&p.key, "/v1/account").await.status, 200);
    }
    let usage = app.get(&p.key, &format!("/v1/api-keys/{}/usage", p.key_id)).await.expect_status(200);
    let ok: u64 = usage["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["outcome"] == "ok")
        .filter_map(|r| r["count"].as_u64())
        .sum();
    assert_eq!(ok, 3, "the three requests just made count at once: {usage}");
    let listed =
        list_data(app.get(&p.key, &format!("/v1/requests?key_id={}&limit=100", p.key_id)).await.expect_status(200));
    assert_eq!(listed.iter().filter(|r| r["route"] == "/v1/account").count(), 3, "{listed:?}");
}
both_backends!(usage_counts_the_requests_just_made);

/// `POST /v1/verify` of `key` for `tenant`, by the operator: a use of `key` for that tenant when
/// valid (SPEC §9).
async fn verify_for(app: &TestApp, key: &str, tenant: &str) -> String {
    let r = app.post(&app.operator_key, "/v1/verify", &json!({"key": key, "tenant_id": tenant})).await;
    str_of(&r.expect_status(200)["code"])
}

/// The `count` of `outcome` on today's row of a usage answer (0 when there is none).
fn today_count(usage: &Value, outcome: &str) -> u64 {
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    usage["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["date"] == today.as_str() && r["outcome"] == outcome)
        .filter_map(|r| r["count"].as_u64())
        .sum()
}

/// SPEC §8: usage per tenant (by every key acting for it) and per account (every key), in the
/// key's usage shape, exact at once; a tenant-scoped key reads its tenants' only.
async fn tenant_and_account_usage_sum_every_key(app: TestApp) {
    let p = app.partner("Acme").await;
    let other = app.partner("Globex").await;
    let t1 = str_of(&app.create_tenant(&p.key, json!({"name": "North"})).await["id"]);
    let t2 = str_of(&app.create_tenant(&p.key, json!({"name": "South"})).await["id"]);
    let scoped = app
        .create_key(&p.key, json!({"name": "north", "tenant_ids": [t1], "scopes": ["tenants:read", "account:read"]}))
        .await;
    let partner_level = app.create_key(&p.key, json!({"name": "all tenants", "scopes": ["tenants:read"]})).await;
    let (scoped, partner_level) = (str_of(&scoped["key"]), str_of(&partner_level["key"]));
    for _ in 0..3 {
        assert_eq!(verify_for(&app, &scoped, &t1).await, "valid");
    }
    assert_eq!(verify_for(&app, &partner_level, &t1).await, "valid");
    for _ in 0..2 {
        assert_eq!(verify_for(&app, &partner_level, &t2).await, "valid");
    }
    // Refused for a tenant it may not act for: counted as the key's, not as that tenant's.
    assert_eq!(verify_for(&app, &scoped, &t2).await, "tenant_not_allowed");

    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let north = app.get(&p.key, &format!("/v1/tenants/{t1}/usage")).await.expect_status(200);
    assert_eq!(north, json!({"data": [{"date": today, "outcome": "ok", "count": 4}]}), "both keys' uses for North");
    let south = app.get(&p.key, &format!("/v1/tenants/{t2}/usage")).await.expect_status(200);
    assert_eq!(south, json!({"data": [{"date": today, "outcome": "ok", "count": 2}]}));
    // A window before today counts nothing.
    let r = common::send(
        app.request(Method::GET, &format!("/v1/tenants/{t1}/usage"), &p.key)
            .query(&[("since", "2020-01-01T00:00:00Z"), ("until", "2020-02-01T00:00:00Z")]),
    )
    .await;
    assert_eq!(r.expect_status(200), json!({"data": []}));

    // The account's: every key's requests, the partner key's own management calls included.
    let account = app.get(&p.key, "/v1/usage").await.expect_status(200);
    assert_eq!(today_count(&account, "tenant_not_allowed"), 1, "{account}");
    assert!(today_count(&account, "ok") >= 6 + 2 + 2 + 2, "six uses, the creations, the reads: {account}");
    // Exact at once: the call just answered counts in the next answer.
    let again = app.get(&p.key, "/v1/usage").await.expect_status(200);
    assert_eq!(today_count(&again, "ok"), today_count(&account, "ok") + 1, "{again}");

    // Another account: its own usage only (nothing yet, then its one read), and none of Acme's.
    assert_eq!(app.get(&other.key, "/v1/usage").await.expect_status(200), json!({"data": []}));
    let theirs = app.get(&other.key, "/v1/usage").await.expect_status(200);
    assert_eq!(theirs, json!({"data": [{"date": today, "outcome": "ok", "count": 1}]}));
    assert_problem(&app.get(&other.key, &format!("/v1/tenants/{t1}/usage")).await, 404, "not_found");

    // A tenant-scoped key reads its own tenant's usage, not another's, and not the account's.
    let mine = app.get(&scoped, &format!("/v1/tenants/{t1}/usage")).await.expect_status(200);
    assert_eq!(today_count(&mine, "ok"), 4, "{mine}");
    // (As reading that tenant is: SPEC §3 check 10.)
    assert_problem(&app.get(&scoped, &format!("/v1/tenants/{t2}")).await, 403, "tenant_not_allowed");
    assert_problem(&app.get(&scoped, &format!("/v1/tenants/{t2}/usage")).await, 403, "tenant_not_allowed");
    assert_problem(&app.get(&scoped, "/v1/usage").await, 403, "tenant_not_allowed");
    // Each needs its scope: tenants:read for a tenant's, account:read for the account's.
    assert_problem(&app.get(&partner_level, "/v1/usage").await, 403, "insufficient_scope");
    let no_tenants = str_of(&app.create_key(&p.key, json!({"name": "x", "scopes": ["account:read"]})).await["key"]);
    assert_problem(&app.get(&no_tenants, &format!("/v1/tenants/{t1}/usage")).await, 403, "insufficient_scope");
    // Bad parameters are refused, naming the field.
    let r = common::send(app.request(Method::GET, "/v1/usage", &p.key).query(&[("since", "yesterday")])).await;
    assert_invalid_fields(&r, &["since"]);
}
both_backends!(tenant_and_account_usage_sum_every_key);

fn failures_only(config: &mut keygate::Config) {
    config.request_log = keygate_engine::settings::RequestLogMode::Failures;
}

fn no_request_log(config: &mut keygate::Config) {
    config.request_log = keygate_engine::settings::RequestLogMode::Off;
}

/// `request_log = "failures"`: the log keeps refused requests only; usage still counts all.
async fn the_log_can_keep_failures_only(app: TestApp) {
    let p = app.partner("Acme").await;
    let t = make_traffic(&app, &p).await;
    let listed = list_data(app.get(&p.key, &format!("/v1/requests?key_id={}", t.key_id)).await.expect_status(200));
    let kept: Vec<(u64, String)> =
        listed.iter().map(|r| (r["status"].as_u64().unwrap_or_default(), str_of(&r["outcome"]))).collect();
    assert_eq!(kept, [(404, "not_found".to_owned()), (403, "insufficient_scope".to_owned())]);
    let usage = app.get(&p.key, &format!("/v1/api-keys/{}/usage", t.key_id)).await.expect_status(200);
    assert_eq!((today_count(&usage, "ok"), today_count(&usage, "not_found")), (2, 1), "{usage}");
}
both_backends_with!(failures_only; the_log_can_keep_failures_only);

/// `request_log = "off"`: no record is kept; usage still counts every request.
async fn the_log_can_be_off(app: TestApp) {
    let p = app.partner("Acme").await;
    let t = make_traffic(&app, &p).await;
    let listed = list_data(app.get(&p.key, "/v1/requests?limit=100").await.expect_status(200));
    assert!(listed.is_empty(), "{listed:?}");
    let usage = app.get(&p.key, &format!("/v1/api-keys/{}/usage", t.key_id)).await.expect_status(200);
    let counts = ["ok", "insufficient_scope", "not_found"].map(|o| today_count(&usage, o));
    assert_eq!(counts, [2, 1, 1], "{usage}");
}
both_backends_with!(no_request_log; the_log_can_be_off);

/// A known key refused by checks 4–8 (revoked; an address outside its allowlist) is still the
/// caller of record: the refusals are in its usage and request log, so a partner sees what a
/// leaked key was tried for after it was revoked. An unknown key is nobody's.
async fn refused_uses_of_a_known_key_are_its_own(app: TestApp) {
    let p = app.partner("Acme").await;
    let fenced = app
        .create_key(&p.key, json!({"name": "fenced", "scopes": ["tenants:read"], "allowed_ips": ["192.0.2.1"]}))
        .await;
    let leaked = app.create_key(&p.key, json!({"name": "leaked", "scopes": ["tenants:read"]})).await;
    let (leaked_key, leaked_id) = (str_of(&leaked["key"]), str_of(&leaked["id"]));
    assert_eq!(app.get(&leaked_key, "/v1/tenants").await.status, 200);
    app.post(&p.key, &format!("/v1/api-keys/{leaked_id}/revoke"), &json!({})).await.expect_status(200);
    for _ in 0..2 {
        assert_problem(&app.get(&leaked_key, "/v1/tenants").await, 401, "api_key_revoked");
    }
    assert_problem(&app.get(&str_of(&fenced["key"]), "/v1/tenants").await, 403, "ip_not_allowed");

    let usage = app.get(&p.key, &format!("/v1/api-keys/{leaked_id}/usage")).await.expect_status(200);
    assert_eq!((today_count(&usage, "ok"), today_count(&usage, "api_key_revoked")), (1, 2), "{usage}");
    let listed = list_data(app.get(&p.key, &format!("/v1/requests?key_id={leaked_id}")).await.expect_status(200));
    let outcomes: Vec<String> = listed.iter().map(|r| str_of(&r["outcome"])).collect();
    assert_eq!(outcomes, ["api_key_revoked", "api_key_revoked", "ok"], "{listed:?}");
    assert!(listed.iter().all(|r| r["client_ip"] == "127.0.0.1"), "{listed:?}");
    let fenced_usage =
        app.get(&p.key, &format!("/v1/api-keys/{}/usage", str_of(&fenced["id"]))).await.expect_status(200);
    assert_eq!(today_count(&fenced_usage, "ip_not_allowed"), 1, "{fenced_usage}");
    // Another account sees none of it.
    let other = app.partner("Globex").await;
    let theirs = list_data(app.get(&other.key, "/v1/requests?limit=100").await.expect_status(200));
    assert!(theirs.iter().all(|r| r["key_id"] == other.key_id.as_str()), "{theirs:?}");
}
both_backends!(refused_uses_of_a_known_key_are_its_own);
