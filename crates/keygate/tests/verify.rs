//! `POST /v1/verify` (SPEC §9): for services that check keys themselves. The caller needs
//! `keys:verify` (an operator key); the verdict is always a 200 with `valid`, `code`, the key's
//! public facts (or `null` for no key) and `ratelimit`.

#[macro_use]
mod common;

use std::fmt::Write as _;
use std::time::Duration;

use common::{Resp, TestApp, assert_invalid_fields, assert_problem, is_id, poll, str_of};
use keygate_domain::{Environment, KeyFormat};
use serde_json::{Value, json};

/// The fields of the `key` object of a verdict, sorted.
const VERIFIED_KEY_FIELDS: [&str; 7] = ["account_id", "environment", "id", "metadata", "name", "scopes", "tenant_ids"];

fn unknown_key() -> String {
    KeyFormat::default().generate(Environment::Live).expose().to_owned()
}

async fn verify(app: &TestApp, body: &Value) -> Resp {
    app.post(&app.operator_key, "/v1/verify", body).await
}

/// Asserts a verdict: 200, `{valid, code, key, ratelimit}` and nothing else, `valid` exactly
/// when `code` is `valid`, and `key` a full public view (or `null` when `key_id` is `None`).
#[track_caller]
fn assert_verdict(r: &Resp, code: &str, key_id: Option<&str>) {
    assert_eq!(r.status, 200, "{r:?}");
    let mut fields: Vec<&str> = r.body.as_object().expect("a verdict object").keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["code", "key", "ratelimit", "valid"], "{r:?}");
    assert_eq!(r.body["code"], code, "{r:?}");
    assert_eq!(r.body["valid"], code == "valid", "{r:?}");
    assert!(r.body["ratelimit"].is_null() || r.body["ratelimit"].is_object(), "{r:?}");
    match key_id {
        None => assert_eq!(r.body["key"], Value::Null, "no key facts for a key that does not exist: {r:?}"),
        Some(id) => {
            let key = r.body["key"].as_object().unwrap_or_else(|| panic!("a key object in {r:?}"));
            let mut fields: Vec<&str> = key.keys().map(String::as_str).collect();
            fields.sort_unstable();
            assert_eq!(fields, VERIFIED_KEY_FIELDS, "{r:?}");
            assert_eq!(key["id"], id, "{r:?}");
        }
    }
}

async fn verify_needs_keys_verify(app: TestApp) {
    let p = app.partner("Acme").await;
    let body = json!({"key": p.key});

    // A partner's unrestricted key holds every scope but the operator's.
    let r = app.post(&p.key, "/v1/verify", &body).await;
    assert_problem(&r, 403, "insufficient_scope");
    assert_eq!(r.body["required_scope"], "keys:verify");

    // An operator key restricted to something else.
    let restricted = app.create_key(&app.operator_key, json!({"name": "ro", "scopes": ["api_keys:read"]})).await;
    let r = app.post(&str_of(&restricted["key"]), "/v1/verify", &body).await;
    assert_problem(&r, 403, "insufficient_scope");
    assert_eq!(r.body["required_scope"], "keys:verify");

    // The scope is checked before the body is read: a caller without it learns nothing.
    let r = app.post(&p.key, "/v1/verify", &json!({"nonsense": true})).await;
    assert_problem(&r, 403, "insufficient_scope");

    // And authentication before that.
    let r = app.post(&unknown_key(), "/v1/verify", &body).await;
    assert_problem(&r, 401, "invalid_api_key");

    // The operator's unrestricted key, and an operator key holding just keys:verify.
    assert_verdict(&verify(&app, &body).await, "valid", Some(&p.key_id));
    let verifier = app.create_key(&app.operator_key, json!({"name": "verifier", "scopes": ["keys:verify"]})).await;
    assert_eq!(verifier["scopes"], json!(["keys:verify"]));
    assert_verdict(&app.post(&str_of(&verifier["key"]), "/v1/verify", &body).await, "valid", Some(&p.key_id));
}
both_backends!(verify_needs_keys_verify);

async fn a_valid_key_is_described_without_secrets(app: TestApp) {
    let p = app.partner("Acme").await;
    let tenant = str_of(&app.create_tenant(&p.key, json!({"name": "Northwind"})).await["id"]);
    let created = app
        .create_key(
            &p.key,
            json!({
                "name": "CRM sandbox",
                "environment": "test",
                "scopes": ["calls:write", "sms:send"],
                "tenant_ids": [tenant],
                "metadata": {"crm": "hubspot", "seats": "3"},
            }),
        )
        .await;
    let (plaintext, id) = (str_of(&created["key"]), str_of(&created["id"]));

    let r =
        verify(&app, &json!({"key": plaintext, "scope": "calls:read", "tenant_id": tenant, "ip": "203.0.113.7"})).await;
    assert_verdict(&r, "valid", Some(&id));
    assert_eq!(
        r.body["key"],
        json!({
            "id": id,
            "account_id": p.account_id,
            "name": "CRM sandbox",
            "scopes": ["calls:write", "sms:send"],
            "tenant_ids": [tenant],
            "environment": "test",
            "metadata": {"crm": "hubspot", "seats": "3"},
        })
    );
    assert!(!r.text.contains(&plaintext), "the verdict never repeats the key: {r:?}");
    for secret_field in ["key_hash", "hash", "masked", "last4", "plaintext"] {
        assert!(r.body["key"].get(secret_field).is_none(), "{secret_field} in {r:?}");
    }

    // The unrestricted, all-tenant partner key: `null`s, not empty lists.
    let r = verify(&app, &json!({"key": p.key})).await;
    assert_verdict(&r, "valid", Some(&p.key_id));
    assert_eq!(r.body["key"]["scopes"], Value::Null);
    assert_eq!(r.body["key"]["tenant_ids"], Value::Null);
    assert_eq!(r.body["key"]["environment"], "live");
    assert_eq!(r.body["key"]["metadata"], json!({}));
}
both_backends!(a_valid_key_is_described_without_secrets);

async fn every_failure_is_a_verdict(app: TestApp) {
    let p = app.partner("Acme").await;
    let t1 = str_of(&app.create_tenant(&p.key, json!({"name": "one"})).await["id"]);
    let t2 = str_of(&app.create_tenant(&p.key, json!({"name": "two"})).await["id"]);
    let down = str_of(&app.create_tenant(&p.key, json!({"name": "down"})).await["id"]);
    app.post_empty(&p.key, &format!("/v1/tenants/{down}/suspend")).await.expect_status(200);

    let make = async |body: Value| {
        let k = app.create_key(&p.key, body).await;
        (str_of(&k["key"]), str_of(&k["id"]))
    };
    let plain = make(json!({"name": "plain"})).await;
    let revoked = make(json!({"name": "revoked"})).await;
    app.post_empty(&p.key, &format!("/v1/api-keys/{}/revoke", revoked.1)).await.expect_status(200);
    let expired = make(json!({"name": "expired"})).await;
    let rolled =
        app.post(&p.key, &format!("/v1/api-keys/{}/roll", expired.1), &json!({"grace_period_seconds": 0})).await;
    rolled.expect_status(201);
    let allowlisted = make(json!({"name": "allowlisted", "allowed_ips": ["203.0.113.0/24"]})).await;
    // The verifying service calls from 127.0.0.1; that is not the key user's address.
    let local_only = make(json!({"name": "local", "allowed_ips": ["127.0.0.1"]})).await;
    let nowhere = make(json!({"name": "nowhere", "allowed_ips": []})).await;
    let reader = make(json!({"name": "reader", "scopes": ["calls:read"]})).await;
    let writer = make(json!({"name": "writer", "scopes": ["calls:write"]})).await;
    let texter = make(json!({"name": "texter", "scopes": ["sms:send"]})).await;
    let on_t1 = make(json!({"name": "t1", "tenant_ids": [t1]})).await;

    let suspended = app.partner("Suspended Inc").await;
    app.post_empty(&app.operator_key, &format!("/v1/accounts/{}/suspend", suspended.account_id))
        .await
        .expect_status(200);
    let fenced = app.partner("Fenced Inc").await;
    let r = app
        .patch(
            &app.operator_key,
            &format!("/v1/accounts/{}", fenced.account_id),
            &json!({"allowed_ips": ["198.51.100.0/24"]}),
        )
        .await;
    r.expect_status(200);

    // (row, key, its id (None: no key facts expected), extra request fields, expected code)
    let cases: [(&str, &str, Option<&str>, Value, &str); 30] = [
        ("a good key", &plain.0, Some(&plain.1), json!({}), "valid"),
        ("garbage", "hunter2", None, json!({}), "invalid_api_key"),
        ("empty", "", None, json!({}), "invalid_api_key"),
        ("unknown", &unknown_key(), None, json!({}), "invalid_api_key"),
        ("revoked", &revoked.0, Some(&revoked.1), json!({}), "api_key_revoked"),
        ("expired", &expired.0, Some(&expired.1), json!({}), "api_key_expired"),
        ("account suspended", &suspended.key, Some(&suspended.key_id), json!({}), "account_suspended"),
        (
            "account allowlist, IP outside",
            &fenced.key,
            Some(&fenced.key_id),
            json!({"ip": "203.0.113.7"}),
            "ip_not_allowed",
        ),
        ("account allowlist, IP inside", &fenced.key, Some(&fenced.key_id), json!({"ip": "198.51.100.9"}), "valid"),
        ("account allowlist, no IP given", &fenced.key, Some(&fenced.key_id), json!({}), "ip_not_allowed"),
        ("key allowlist, IP inside", &allowlisted.0, Some(&allowlisted.1), json!({"ip": "203.0.113.7"}), "valid"),
        (
            "key allowlist, IP outside",
            &allowlisted.0,
            Some(&allowlisted.1),
            json!({"ip": "198.51.100.1"}),
            "ip_not_allowed",
        ),
        ("key allowlist, no IP given", &allowlisted.0, Some(&allowlisted.1), json!({}), "ip_not_allowed"),
        (
            "key allowlist, the verifier's own IP is not the client's",
            &local_only.0,
            Some(&local_only.1),
            json!({}),
            "ip_not_allowed",
        ),
        (
            "key allowlist, IPv6 outside",
            &allowlisted.0,
            Some(&allowlisted.1),
            json!({"ip": "2001:db8::1"}),
            "ip_not_allowed",
        ),
        ("key allowlist [], any IP", &nowhere.0, Some(&nowhere.1), json!({"ip": "203.0.113.7"}), "ip_not_allowed"),
        ("key allowlist null, any IP", &plain.0, Some(&plain.1), json!({"ip": "2001:db8::1"}), "valid"),
        ("scope held", &reader.0, Some(&reader.1), json!({"scope": "calls:read"}), "valid"),
        ("scope missing", &reader.0, Some(&reader.1), json!({"scope": "calls:write"}), "insufficient_scope"),
        ("write implies read", &writer.0, Some(&writer.1), json!({"scope": "calls:read"}), "valid"),
        ("an action scope", &texter.0, Some(&texter.1), json!({"scope": "sms:send"}), "valid"),
        (
            "an action scope grants no read",
            &texter.0,
            Some(&texter.1),
            json!({"scope": "sms:read"}),
            "insufficient_scope",
        ),
        (
            "operator scopes are not a partner's",
            &plain.0,
            Some(&plain.1),
            json!({"scope": "keys:verify"}),
            "insufficient_scope",
        ),
        ("tenant in scope", &on_t1.0, Some(&on_t1.1), json!({"tenant_id": t1}), "valid"),
        ("tenant outside the key's scope", &on_t1.0, Some(&on_t1.1), json!({"tenant_id": t2}), "tenant_not_allowed"),
        ("tenant suspended", &plain.0, Some(&plain.1), json!({"tenant_id": down}), "tenant_suspended"),
        (
            "tenant unknown",
            &plain.0,
            Some(&plain.1),
            json!({"tenant_id": "ten_01JABCDEFGHJKMNPQRSTVWXYZ0"}),
            "tenant_not_allowed",
        ),
        (
            "order: IP before scope",
            &allowlisted.0,
            Some(&allowlisted.1),
            json!({"scope": "keys:verify"}),
            "ip_not_allowed",
        ),
        (
            "order: scope before tenant",
            &reader.0,
            Some(&reader.1),
            json!({"scope": "calls:write", "tenant_id": down}),
            "insufficient_scope",
        ),
        (
            "order: revoked before everything",
            &revoked.0,
            Some(&revoked.1),
            json!({"scope": "keys:verify", "tenant_id": down, "ip": "192.0.2.1"}),
            "api_key_revoked",
        ),
    ];
    let mut mismatches = String::new();
    for (name, key, key_id, extra, expect) in cases {
        let mut body = json!({"key": key});
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        let r = verify(&app, &body).await;
        let facts_ok = match key_id {
            None => r.body["key"].is_null(),
            Some(id) => r.body["key"]["id"] == id,
        };
        if r.status != 200 || r.body["code"] != expect || r.body["valid"] != (expect == "valid") || !facts_ok {
            let _ = writeln!(mismatches, "{name}: expected {expect} (key {key_id:?}), got {r:?}");
        } else {
            assert_verdict(&r, expect, key_id);
        }
    }
    assert!(mismatches.is_empty(), "rows that answered otherwise:\n{mismatches}");
}
both_backends!(every_failure_is_a_verdict);

async fn malformed_fields_are_named(app: TestApp) {
    let p = app.partner("Acme").await;
    let cases: Vec<(Value, &[&str])> = vec![
        (
            json!({"key": p.key, "scope": "calls", "tenant_id": "ten_nope", "ip": "999.1.1.1"}),
            &["scope", "tenant_id", "ip"],
        ),
        (json!({"key": p.key, "scope": "calls"}), &["scope"]),
        (json!({"key": p.key, "scope": ""}), &["scope"]),
        (json!({"key": p.key, "tenant_id": "acct_01JABCDEFGHJKMNPQRSTVWXYZ0"}), &["tenant_id"]),
        (json!({"key": p.key, "tenant_id": "northwind"}), &["tenant_id"]),
        (json!({"key": p.key, "ip": "10.0.0.0/8"}), &["ip"]),
        (json!({"key": p.key, "ip": "localhost"}), &["ip"]),
        (json!({"key": p.key, "ip": 17}), &["ip"]),
        (json!({"scope": "calls:read"}), &["key"]),
        (json!({"key": 5}), &["key"]),
        (json!({"key": p.key, "tenant": "ten_01JABCDEFGHJKMNPQRSTVWXYZ0"}), &["tenant"]),
    ];
    for (body, fields) in cases {
        let r = verify(&app, &body).await;
        assert_invalid_fields(&r, fields);
        assert!(!r.text.contains(&p.key), "a validation error never echoes the key: {r:?}");
    }
    let r = common::send(app.request(reqwest::Method::POST, "/v1/verify", &app.operator_key)).await;
    assert_problem(&r, 400, "invalid_request");
}
both_backends!(malformed_fields_are_named);

async fn verifying_bad_keys_does_not_throttle_the_verifier(app: TestApp) {
    // More than the default 30 failures a minute: they are the asked-about keys' failures, not
    // the verifying service's.
    for _ in 0..40 {
        assert_verdict(&verify(&app, &json!({"key": unknown_key()})).await, "invalid_api_key", None);
    }
    let p = app.partner("Acme").await;
    assert_verdict(&verify(&app, &json!({"key": p.key})).await, "valid", Some(&p.key_id));
}
both_backends!(verifying_bad_keys_does_not_throttle_the_verifier);

async fn verifying_records_the_verified_keys_use(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "used elsewhere"})).await;
    let (plaintext, id) = (str_of(&k["key"]), str_of(&k["id"]));
    let path = format!("/v1/api-keys/{id}");
    assert!(is_id(&id, "key"));
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);

    let r = verify(&app, &json!({"key": plaintext, "ip": "203.0.113.7"})).await;
    assert_verdict(&r, "valid", Some(&id));

    // SPEC §3: written in batches, at most 5 s stale.
    let (app, admin, path) = (&app, p.key.as_str(), path.as_str());
    let seen = poll(Duration::from_secs(6), Duration::from_millis(100), || async move {
        let key = app.get(admin, path).await.expect_status(200);
        (!key["last_used_at"].is_null()).then_some(key)
    })
    .await;
    let (key, after) = seen.unwrap_or_else(|waited| panic!("last_used_at still null after {waited:?}"));
    assert_eq!(key["last_used_ip"], "203.0.113.7", "the end client's IP, not the verifier's: {key}");
    let used = common::timestamp(&key["last_used_at"]);
    assert!(used >= before && used <= chrono::Utc::now(), "{used} is when it was verified");
    eprintln!("last_used_at visible after {after:?}");
}
both_backends!(verifying_records_the_verified_keys_use);

/// SPEC §9: verify spends the verified key's limits, never the verifier's own (the platform's
/// whole traffic passes through it), and is a use of the verified key in `/usage` and the
/// request log, noting the verifier.
async fn verify_spends_the_verified_key_not_the_verifier(app: TestApp) {
    let p = app.partner("Acme").await;
    // The operator account's own limit is tiny: were verify spending it, the 4th call would be 429.
    let operator_account = app.get(&app.operator_key, "/v1/account").await.expect_status(200);
    let path = format!("/v1/accounts/{}", str_of(&operator_account["id"]));
    app.patch(&app.operator_key, &path, &json!({"rate_limit_per_minute": 3})).await.expect_status(200);
    let k = app.create_key(&p.key, json!({"name": "partner's", "rate_limit_per_minute": 50})).await;
    let (plaintext, id) = (str_of(&k["key"]), str_of(&k["id"]));
    for i in 0..60 {
        let r = verify(&app, &json!({"key": plaintext})).await;
        let expected = if i < 50 { "valid" } else { "rate_limited" };
        assert_verdict(&r, expected, Some(&id));
    }
    // Usage counts every one of them as the verified key's, at once (nothing waits for a flush).
    let usage = app.get(&p.key, &format!("/v1/api-keys/{id}/usage")).await.expect_status(200);
    let count = |outcome: &str| -> u64 {
        usage["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["outcome"] == outcome)
            .filter_map(|r| r["count"].as_u64())
            .sum()
    };
    assert_eq!((count("ok"), count("rate_limited")), (50, 10), "{usage}");
    // The request log shows them as the verified key's, with the verifier noted.
    let records =
        common::list_data(app.get(&p.key, &format!("/v1/requests?key_id={id}&limit=100")).await.expect_status(200));
    assert_eq!(records.len(), 60);
    assert!(records.iter().all(|r| r["via_key_id"] == app.operator_key_id.as_str() && r["route"] == "/v1/verify"));
}
both_backends!(verify_spends_the_verified_key_not_the_verifier);

/// `POST /v1/verify` is served beside the router (a data-plane call), with what the router gives
/// every endpoint: the caller is authenticated before the body is read, the body within the
/// API's limit and declared as JSON, `X-Request-Id` and `Cache-Control: no-store` on every
/// answer; other methods on the path are the router's 405.
async fn verify_is_served_as_every_endpoint_is(app: TestApp) {
    let p = app.partner("Acme").await;
    let post = |key: &str| app.request(reqwest::Method::POST, "/v1/verify", key);

    let r = verify(&app, &json!({"key": p.key})).await;
    assert_verdict(&r, "valid", Some(&p.key_id));
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    assert!(r.request_id().starts_with("req_"), "{r:?}");
    let chosen =
        common::send(post(&app.operator_key).header("x-request-id", "trace-42").json(&json!({"key": p.key}))).await;
    assert_eq!((chosen.status, chosen.request_id()), (200, "trace-42"), "{chosen:?}");

    // Too large: 413.
    let big = json!({"key": p.key, "scope": "x".repeat(common::MAX_BODY_BYTES)});
    let r = common::send(post(&app.operator_key).json(&big)).await;
    assert_problem(&r, 413, "payload_too_large");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    // The caller is checked before the body is looked at: a body that is no JSON at all is the
    // refusal of who sent it. (Small: a refusal before a large body is read closes the connection
    // under the client's feet.)
    let not_json = |request: reqwest::RequestBuilder| request.header("content-type", "text/plain").body("{{{");
    assert_problem(&common::send(not_json(post(&p.key))).await, 403, "insufficient_scope");
    let anonymous = common::send(not_json(app.client.post(app.url("/v1/verify")))).await;
    assert_problem(&anonymous, 401, "missing_api_key");

    // Declared as something else, or absent.
    let text = post(&app.operator_key).header("content-type", "text/plain").body(format!("{{\"key\":\"{}\"}}", p.key));
    assert_problem(&common::send(text).await, 400, "invalid_request");
    assert_problem(&common::send(post(&app.operator_key)).await, 400, "invalid_request");
    assert_problem(&common::send(post(&app.operator_key).body("{\"key\": ")).await, 400, "invalid_request");
    let r = common::send(post(&app.operator_key).json(&json!({"key": p.key, "extra": 1}))).await;
    assert_invalid_fields(&r, &["extra"]);

    let r = app.get(&app.operator_key, "/v1/verify").await;
    assert_problem(&r, 405, "method_not_allowed");
}
both_backends!(verify_is_served_as_every_endpoint_is);
