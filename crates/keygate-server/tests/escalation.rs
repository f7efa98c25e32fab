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
