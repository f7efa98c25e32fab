//! No escalation (SPEC §4): a key may only create or change keys within its own scopes, tenant
//! scope and rate limit. Refusals are 403 `insufficient_scope` with `exceeds` naming the bound
//! (and `required_scope` the missing scope), and change nothing.

#[macro_use]
mod common;

use common::{Partner, Resp, TestApp, assert_invalid_fields, assert_problem, ids, list_data, str_of};
use serde_json::{Value, json};

#[track_caller]
fn assert_escalation(r: &Resp, exceeds: &str, required_scope: Option<&str>) {
    assert_problem(r, 403, "insufficient_scope");
    assert_eq!(r.body["exceeds"], exceeds, "{r:?}");
    match required_scope {
        Some(s) => assert_eq!(r.body["required_scope"], s, "{r:?}"),
        None => assert!(r.body.get("required_scope").is_none(), "{r:?}"),
    }
}

async fn key_ids(app: &TestApp, p: &Partner) -> Vec<String> {
    ids(&list_data(app.get(&p.key, "/v1/api-keys?limit=100").await.expect_status(200)))
}

async fn restricted_key_cannot_grant_scopes_it_lacks(app: TestApp) {
    let p = app.partner("Acme").await;
    let r = app.create_key(&p.key, json!({"name": "r", "scopes": ["api_keys:write", "calls:read"]})).await;
    let restricted = str_of(&r["key"]);
    let before = key_ids(&app, &p).await;

    for (scopes, missing) in [
        (json!(["calls:write"]), "calls:write"),
        (json!(["calls:*"]), "calls:*"),
        (json!(["calls:read", "billing:read"]), "billing:read"),
        (json!(["api_keys:*"]), "api_keys:*"),
        // Unrestricted is beyond any list.
        (Value::Null, "*"),
    ] {
        let resp = app.post(&restricted, "/v1/api-keys", &json!({"name": "x", "scopes": scopes})).await;
        assert_escalation(&resp, "scopes", Some(missing));
    }
    assert_eq!(key_ids(&app, &p).await, before, "nothing created");
    let events = app.audit_events(&p.key, &[("actor_id", &str_of(&r["id"]))]).await;
    assert!(events.is_empty(), "refusals leave no event: {events:?}");

    // Within its own: fine, including a narrower scope (write implies read).
    let ok = app.create_key(&restricted, json!({"name": "ok", "scopes": ["calls:read", "api_keys:read"]})).await;
    assert_eq!(ok["scopes"], json!(["calls:read", "api_keys:read"]));
    let same = app.create_key(&restricted, json!({"name": "same"})).await;
    assert_eq!(same["scopes"], json!(["api_keys:write", "calls:read"]));
}
both_backends!(restricted_key_cannot_grant_scopes_it_lacks);

async fn tenant_scoped_key_cannot_widen_the_tenant_scope(app: TestApp) {
    let p = app.partner("Acme").await;
    let t1 = str_of(&app.create_tenant(&p.key, json!({"name": "T1"})).await["id"]);
    let t2 = str_of(&app.create_tenant(&p.key, json!({"name": "T2"})).await["id"]);
    let scoped = app.create_key(&p.key, json!({"name": "scoped", "tenant_ids": [t1]})).await;
    let scoped_key = str_of(&scoped["key"]);
    let before = key_ids(&app, &p).await;

    for tenant_ids in [json!([t2]), json!([t1, t2]), Value::Null] {
        let r = app.post(&scoped_key, "/v1/api-keys", &json!({"name": "x", "tenant_ids": tenant_ids})).await;
        assert_escalation(&r, "tenant_ids", None);
    }
    assert_eq!(key_ids(&app, &p).await, before);

    let inherited = app.create_key(&scoped_key, json!({"name": "inherits"})).await;
    assert_eq!(inherited["tenant_ids"], json!([t1]), "absent tenant_ids: the creator's own");
    let explicit = app.create_key(&scoped_key, json!({"name": "explicit", "tenant_ids": [t1]})).await;
    assert_eq!(explicit["tenant_ids"], json!([t1]));
}
both_backends!(tenant_scoped_key_cannot_widen_the_tenant_scope);

async fn key_cannot_exceed_its_own_rate_limit(app: TestApp) {
    let p = app.partner("Acme").await;
    let slow = app.create_key(&p.key, json!({"name": "slow", "rate_limit_per_minute": 50})).await;
    let slow_key = str_of(&slow["key"]);

    let r = app.post(&slow_key, "/v1/api-keys", &json!({"name": "x", "rate_limit_per_minute": 51})).await;
    assert_escalation(&r, "rate_limit_per_minute", None);
    let at = app.create_key(&slow_key, json!({"name": "at", "rate_limit_per_minute": 50})).await;
    assert_eq!(at["rate_limit_per_minute"], 50);
    let default = app.create_key(&slow_key, json!({"name": "default"})).await;
    assert_eq!(default["rate_limit_per_minute"], 50, "the default is capped by the creator's own limit");
}
both_backends!(key_cannot_exceed_its_own_rate_limit);

async fn patch_cannot_escalate(app: TestApp) {
    let p = app.partner("Acme").await;
    let t1 = str_of(&app.create_tenant(&p.key, json!({"name": "T1"})).await["id"]);
    let restricted = app
        .create_key(
            &p.key,
            json!({"name": "r", "scopes": ["api_keys:write", "calls:read"], "rate_limit_per_minute": 50}),
        )
        .await;
    let r_key = str_of(&restricted["key"]);
    let r_path = format!("/v1/api-keys/{}", str_of(&restricted["id"]));
    let child = app.create_key(&r_key, json!({"name": "child", "scopes": ["calls:read"]})).await;
    let child_path = format!("/v1/api-keys/{}", str_of(&child["id"]));

    let cases = [
        (&child_path, json!({"scopes": ["calls:write"]}), "scopes", Some("calls:write")),
        (&child_path, json!({"scopes": null}), "scopes", Some("*")),
        (&child_path, json!({"rate_limit_per_minute": 51}), "rate_limit_per_minute", None),
        // Its own key is no exception.
        (&r_path, json!({"scopes": ["api_keys:write", "calls:read", "billing:read"]}), "scopes", Some("billing:read")),
        (&r_path, json!({"scopes": null}), "scopes", Some("*")),
        (&r_path, json!({"rate_limit_per_minute": 10_000}), "rate_limit_per_minute", None),
    ];
    for (path, body, exceeds, missing) in cases {
        let r = app.patch(&r_key, path, &body).await;
        assert_escalation(&r, exceeds, missing);
    }
    let child_now = app.get(&p.key, &child_path).await.expect_status(200);
    assert_eq!(child_now["scopes"], json!(["calls:read"]));
    assert_eq!(child_now["rate_limit_per_minute"], 50);
    let r_now = app.get(&p.key, &r_path).await.expect_status(200);
    assert_eq!(r_now["scopes"], json!(["api_keys:write", "calls:read"]));
    assert_eq!(r_now["rate_limit_per_minute"], 50);

    // Narrowing is fine.
    let narrowed = app.patch(&r_key, &child_path, &json!({"rate_limit_per_minute": 10, "scopes": []})).await;
    assert_eq!(narrowed.expect_status(200)["rate_limit_per_minute"], 10);

    // A key beyond the caller's bounds cannot be changed at all, not even renamed.
    let unrestricted = app.create_key(&p.key, json!({"name": "wide"})).await;
    let r = app.patch(&r_key, &format!("/v1/api-keys/{}", str_of(&unrestricted["id"])), &json!({"name": "n"})).await;
    assert_escalation(&r, "scopes", Some("*"));

    // A tenant-scoped key cannot widen a key's tenant scope.
    let scoped = app.create_key(&p.key, json!({"name": "scoped", "tenant_ids": [t1]})).await;
    let scoped_key = str_of(&scoped["key"]);
    let mine = app.create_key(&scoped_key, json!({"name": "mine"})).await;
    let r =
        app.patch(&scoped_key, &format!("/v1/api-keys/{}", str_of(&mine["id"])), &json!({"tenant_ids": null})).await;
    assert_escalation(&r, "tenant_ids", None);
}
both_backends!(patch_cannot_escalate);

async fn cannot_revoke_delete_or_roll_a_key_beyond_its_bounds(app: TestApp) {
    let p = app.partner("Acme").await;
    let restricted =
        app.create_key(&p.key, json!({"name": "r", "scopes": ["api_keys:write"], "rate_limit_per_minute": 50})).await;
    let r_key = str_of(&restricted["key"]);
    // Beyond its scopes (unrestricted) and beyond its rate limit (same scopes, 100/min).
    let wide = app.create_key(&p.key, json!({"name": "wide"})).await;
    let fast = app.create_key(&p.key, json!({"name": "fast", "scopes": ["api_keys:write"]})).await;

    for (target, exceeds, missing) in [(&wide, "scopes", Some("*")), (&fast, "rate_limit_per_minute", None)] {
        let path = format!("/v1/api-keys/{}", str_of(&target["id"]));
        assert_escalation(&app.post_empty(&r_key, &format!("{path}/revoke")).await, exceeds, missing);
        assert_escalation(&app.post_empty(&r_key, &format!("{path}/roll")).await, exceeds, missing);
        assert_escalation(&app.delete(&r_key, &path).await, exceeds, missing);
        let now = app.get(&p.key, &path).await.expect_status(200);
        assert_eq!(now["status"], "active");
        assert_eq!(now["expires_at"], Value::Null);
        app.get(&str_of(&target["key"]), "/v1/api-keys").await.expect_status(200);
    }
    assert_eq!(key_ids(&app, &p).await.len(), 4, "no roll happened");

    // Within bounds, all three work.
    let child = app.create_key(&r_key, json!({"name": "child"})).await;
    let path = format!("/v1/api-keys/{}", str_of(&child["id"]));
    let rolled = app.post_empty(&r_key, &format!("{path}/roll")).await.expect_status(201);
    let rolled_path = format!("/v1/api-keys/{}", str_of(&rolled["id"]));
    app.post_empty(&r_key, &format!("{rolled_path}/revoke")).await.expect_status(200);
    assert_eq!(app.delete(&r_key, &rolled_path).await.status, 204);
}
both_backends!(cannot_revoke_delete_or_roll_a_key_beyond_its_bounds);

async fn tenant_scoped_key_does_not_see_wider_keys(app: TestApp) {
    let p = app.partner("Acme").await;
    let t1 = str_of(&app.create_tenant(&p.key, json!({"name": "T1"})).await["id"]);
    let scoped = app.create_key(&p.key, json!({"name": "scoped", "tenant_ids": [t1]})).await;
    let scoped_key = str_of(&scoped["key"]);
    let wide = app.create_key(&p.key, json!({"name": "wide"})).await;
    let path = format!("/v1/api-keys/{}", str_of(&wide["id"]));

    // Keys beyond its tenant scope do not exist for it (documented in services/keys.rs).
    assert_problem(&app.get(&scoped_key, &path).await, 404, "not_found");
    assert_problem(&app.post_empty(&scoped_key, &format!("{path}/revoke")).await, 404, "not_found");
    assert_problem(&app.delete(&scoped_key, &path).await, 404, "not_found");
    let r = app.post(&scoped_key, "/v1/api-keys/lookup", &json!({"key": wide["key"]})).await;
    assert_problem(&r, 404, "not_found");
    let listed = ids(&list_data(app.get(&scoped_key, "/v1/api-keys").await.expect_status(200)));
    assert_eq!(listed, vec![str_of(&scoped["id"])]);
}
both_backends!(tenant_scoped_key_does_not_see_wider_keys);

async fn partners_cannot_hand_out_operator_scopes(app: TestApp) {
    let p = app.partner("Acme").await;
    for (scopes, field) in [
        (json!(["accounts:read"]), "scopes[0]"),
        (json!(["keys:verify"]), "scopes[0]"),
        (json!(["tenants:read", "accounts:write"]), "scopes[1]"),
        (json!(["accounts:*"]), "scopes[0]"),
    ] {
        let r = app.post(&p.key, "/v1/api-keys", &json!({"name": "x", "scopes": scopes})).await;
        assert_invalid_fields(&r, &[field]);
    }
    // The operator's own keys may hold them.
    let k = app
        .create_key(&app.operator_key, json!({"name": "verifier", "scopes": ["keys:verify", "accounts:read"]}))
        .await;
    assert_eq!(k["scopes"], json!(["keys:verify", "accounts:read"]));
    app.get(&str_of(&k["key"]), "/v1/accounts").await.expect_status(200);

    // The catalog a partner is shown has no operator scopes; the operator's has them.
    let resources = |body: Value| -> Vec<String> { list_data(body).iter().map(|e| str_of(&e["resource"])).collect() };
    let partner_catalog = resources(app.get(&p.key, "/v1/scopes").await.expect_status(200));
    assert!(partner_catalog.contains(&"calls".to_owned()) && partner_catalog.contains(&"api_keys".to_owned()));
    assert!(!partner_catalog.iter().any(|r| r == "accounts" || r == "keys"), "{partner_catalog:?}");
    let operator_catalog = resources(app.get(&app.operator_key, "/v1/scopes").await.expect_status(200));
    assert!(operator_catalog.iter().any(|r| r == "accounts"), "{operator_catalog:?}");
}
both_backends!(partners_cannot_hand_out_operator_scopes);

// ---------------------------------------------------------------------------------------------
// Bounds other than scopes (SPEC §4): expiry, IP allowlist, environment
// ---------------------------------------------------------------------------------------------

fn in_hours(h: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(h)).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn an_expiring_key_cannot_outlive_itself(app: TestApp) {
    let p = app.partner("Acme").await;
    let own_expiry = in_hours(1);
    let k = app
        .create_key(
            &p.key,
            json!({"name": "short", "scopes": ["api_keys:write", "api_keys:read"], "expires_at": own_expiry}),
        )
        .await;
    let (short, short_id) = (str_of(&k["key"]), str_of(&k["id"]));
    let before = key_ids(&app, &p).await;

    // Raising its own expiry, or removing it, is refused and changes nothing.
    for expires_at in [Value::Null, json!(in_hours(2))] {
        let r = app.patch(&short, &format!("/v1/api-keys/{short_id}"), &json!({"expires_at": expires_at})).await;
        assert_escalation(&r, "expires_at", None);
    }
    let unchanged = app.get(&p.key, &format!("/v1/api-keys/{short_id}")).await.expect_status(200);
    assert_eq!(unchanged["expires_at"], own_expiry);

    // Minting a key that never expires, or expires later, is refused.
    for expires_at in [Value::Null, json!(in_hours(5))] {
        let r = app.post(&short, "/v1/api-keys", &json!({"name": "forever", "expires_at": expires_at})).await;
        assert_escalation(&r, "expires_at", None);
    }
    assert_eq!(key_ids(&app, &p).await, before, "nothing was created");

    // Lowering is fine; an absent expires_at inherits the creator's.
    let sooner = app.post(&short, "/v1/api-keys", &json!({"name": "sooner", "expires_at": in_hours(-1)})).await;
    assert_eq!(sooner.status, 422, "a past expiry is still a validation error: {sooner:?}");
    let inherited = app.create_key(&short, json!({"name": "inherits"})).await;
    assert_eq!(inherited["expires_at"], own_expiry, "absent: the creator's own expiry");
    let half = (chrono::Utc::now() + chrono::Duration::minutes(30)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let lowered = app.patch(&short, &format!("/v1/api-keys/{short_id}"), &json!({"expires_at": half})).await;
    assert_eq!(lowered.expect_status(200)["expires_at"], half, "a key may shorten its own life");

    // A key that never expires cannot be changed at all by an expiring one (its "before" is beyond).
    let forever = app.create_key(&p.key, json!({"name": "forever", "scopes": ["api_keys:read"]})).await;
    let forever_id = str_of(&forever["id"]);
    let r = app.patch(&short, &format!("/v1/api-keys/{forever_id}"), &json!({"name": "renamed"})).await;
    assert_escalation(&r, "expires_at", None);
    // The unbounded key can do all of it.
    let r = app.patch(&p.key, &format!("/v1/api-keys/{short_id}"), &json!({"expires_at": null})).await;
    assert_eq!(r.expect_status(200)["expires_at"], Value::Null);
}
both_backends!(an_expiring_key_cannot_outlive_itself);

async fn a_rolled_key_cannot_use_its_grace_period_to_remove_its_expiry(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "rolling", "scopes": ["api_keys:write", "api_keys:read"]})).await;
    let (old, old_id) = (str_of(&k["key"]), str_of(&k["id"]));
    let rolled = app.post(&old, &format!("/v1/api-keys/{old_id}/roll"), &json!({"grace_period_seconds": 3600})).await;
    assert_eq!(rolled.status, 201, "{rolled:?}");
    let r = app.patch(&old, &format!("/v1/api-keys/{old_id}"), &json!({"expires_at": null})).await;
    assert_escalation(&r, "expires_at", None);
    let r = app.post(&old, "/v1/api-keys", &json!({"name": "escape", "expires_at": null})).await;
    assert_escalation(&r, "expires_at", None);
    let still = app.get(&p.key, &format!("/v1/api-keys/{old_id}")).await.expect_status(200);
    assert!(still["expires_at"].is_string(), "the grace period still ends: {still}");
}
both_backends!(a_rolled_key_cannot_use_its_grace_period_to_remove_its_expiry);

async fn an_allowlisted_key_cannot_widen_the_allowlist(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app
        .create_key(
            &p.key,
            json!({"name": "pinned", "scopes": ["api_keys:write", "api_keys:read"], "allowed_ips": ["127.0.0.0/8", "2001:db8::/32"]}),
        )
        .await;
    let (pinned, pinned_id) = (str_of(&k["key"]), str_of(&k["id"]));
    let before = key_ids(&app, &p).await;

    for allowed in [
        Value::Null,
        json!(["10.0.0.1"]),
        json!(["126.0.0.0/7"]),
        json!(["127.0.0.1", "128.0.0.1"]),
        json!(["2001:db8::/31"]),
        json!(["::/0"]),
    ] {
        let r = app.patch(&pinned, &format!("/v1/api-keys/{pinned_id}"), &json!({"allowed_ips": allowed})).await;
        assert_escalation(&r, "allowed_ips", None);
        let r = app.post(&pinned, "/v1/api-keys", &json!({"name": "wide", "allowed_ips": allowed})).await;
        assert_escalation(&r, "allowed_ips", None);
    }
    assert_eq!(key_ids(&app, &p).await, before, "nothing was created");

    // Inside its own: fine, in any spelling (mapped IPv4 included), and [] (no IP at all).
    for allowed in
        [json!(["127.0.0.1"]), json!(["127.1.0.0/16", "2001:db8:1::/48"]), json!(["::ffff:127.0.0.1"]), json!([])]
    {
        let r = app.post(&pinned, "/v1/api-keys", &json!({"name": "narrow", "allowed_ips": allowed})).await;
        assert_eq!(r.status, 201, "{allowed}: {r:?}");
    }
    let inherited = app.create_key(&pinned, json!({"name": "inherits"})).await;
    assert_eq!(inherited["allowed_ips"], json!(["127.0.0.0/8", "2001:db8::/32"]), "absent: the creator's own");
    let narrowed =
        app.patch(&pinned, &format!("/v1/api-keys/{pinned_id}"), &json!({"allowed_ips": ["127.0.0.1"]})).await;
    assert_eq!(narrowed.expect_status(200)["allowed_ips"], json!(["127.0.0.1"]), "a key may narrow its own");
}
both_backends!(an_allowlisted_key_cannot_widen_the_allowlist);

async fn a_test_key_cannot_touch_live_keys(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "sandbox", "environment": "test"})).await;
    let test_key = str_of(&k["key"]);
    assert!(test_key.starts_with("sk_test_"));
    let live_id = p.key_id.clone();

    let r = app.post(&test_key, "/v1/api-keys", &json!({"name": "live", "environment": "live"})).await;
    assert_escalation(&r, "environment", None);
    for (method, path, body) in [
        (reqwest::Method::PATCH, format!("/v1/api-keys/{live_id}"), json!({"name": "x"})),
        (reqwest::Method::POST, format!("/v1/api-keys/{live_id}/roll"), json!({})),
        (reqwest::Method::POST, format!("/v1/api-keys/{live_id}/revoke"), json!({})),
    ] {
        let r = common::send(app.request(method, &path, &test_key).json(&body)).await;
        assert_escalation(&r, "environment", None);
    }
    let r = app.delete(&test_key, &format!("/v1/api-keys/{live_id}")).await;
    assert_escalation(&r, "environment", None);

    // Tenants and the account's settings guard live traffic too: a test key reads, not writes.
    let tenant = str_of(&app.create_tenant(&p.key, json!({"name": "shared"})).await["id"]);
    for (method, path, body) in [
        (reqwest::Method::PATCH, "/v1/account".to_owned(), json!({"allowed_ips": []})),
        (reqwest::Method::POST, "/v1/tenants".to_owned(), json!({"name": "t"})),
        (reqwest::Method::PATCH, format!("/v1/tenants/{tenant}"), json!({"name": "x"})),
        (reqwest::Method::POST, format!("/v1/tenants/{tenant}/suspend"), json!({})),
    ] {
        let r = common::send(app.request(method, &path, &test_key).json(&body)).await;
        assert_escalation(&r, "environment", None);
    }
    assert_eq!(app.get(&test_key, &format!("/v1/tenants/{tenant}")).await.expect_status(200)["status"], "active");
    assert_eq!(app.get(&test_key, "/v1/account").await.status, 200);

    // Test keys it may make (by default, without naming the environment), and live keys may make test keys.
    let made = app.create_key(&test_key, json!({"name": "another"})).await;
    assert_eq!(made["environment"], "test");
    let from_live = app.create_key(&p.key, json!({"name": "t2", "environment": "test"})).await;
    assert_eq!(from_live["environment"], "test");
    assert_eq!(app.get(&p.key, &format!("/v1/api-keys/{live_id}")).await.expect_status(200)["status"], "active");
}
both_backends!(a_test_key_cannot_touch_live_keys);

/// The account's own settings bound all its keys: a key with an IP allowlist may not loosen the
/// account allowlist beyond its own, and a tenant-scoped key may not change the account at all.
async fn narrower_keys_cannot_loosen_the_account(app: TestApp) {
    let p = app.partner("Acme").await;
    let pinned = app
        .create_key(
            &p.key,
            json!({"name": "pinned", "scopes": ["account:write", "account:read"], "allowed_ips": ["127.0.0.0/8"]}),
        )
        .await;
    let pinned = str_of(&pinned["key"]);
    for allowed in [json!([]), json!(["0.0.0.0/0"]), json!(["127.0.0.1", "10.0.0.1"])] {
        let r = app.patch(&pinned, "/v1/account", &json!({"allowed_ips": allowed})).await;
        assert_escalation(&r, "allowed_ips", None);
    }
    let r = app.patch(&pinned, "/v1/account", &json!({"allowed_ips": ["127.0.0.1"]})).await;
    assert_eq!(r.expect_status(200)["allowed_ips"], json!(["127.0.0.1"]), "within its own: fine");
    let r = app.patch(&pinned, "/v1/account", &json!({"name": "Acme Inc"})).await;
    assert_eq!(r.status, 200, "other settings: fine");

    let tenant = str_of(&app.create_tenant(&p.key, json!({"name": "t"})).await["id"]);
    let scoped =
        app.create_key(&p.key, json!({"name": "scoped", "scopes": ["account:write"], "tenant_ids": [tenant]})).await;
    let r = app.patch(&str_of(&scoped["key"]), "/v1/account", &json!({"allowed_ips": []})).await;
    assert_problem(&r, 403, "tenant_not_allowed");
    // The partner-level, any-IP key may open it again.
    let r = app.patch(&p.key, "/v1/account", &json!({"allowed_ips": []})).await;
    assert_eq!(r.expect_status(200)["allowed_ips"], json!([]));
}
both_backends!(narrower_keys_cannot_loosen_the_account);
