//! `/v1/users`: dashboard users, their roles, the last-owner rule, and no escalation through a
//! user (SPEC §4, §8).

#[macro_use]
mod common;

use common::{Resp, TestApp, assert_invalid_fields, assert_problem, ids, is_id, is_timestamp, list_data, str_of};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

#[track_caller]
fn assert_user_fields(u: &Value) {
    let mut fields: Vec<&str> = u.as_object().expect("a user object").keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["created_at", "email", "has_password", "id", "last_sign_in_at", "role", "updated_at"], "{u}");
}

#[track_caller]
fn assert_escalation(r: &Resp, exceeds: &str, required_scope: Option<&str>) {
    assert_problem(r, 403, "insufficient_scope");
    assert_eq!(r.body["exceeds"], exceeds, "{r:?}");
    assert_eq!(r.body["required_scope"].as_str(), required_scope, "{r:?}");
}

async fn create_list_get_update_and_delete_users(app: TestApp) {
    let p = app.partner("Acme").await;
    let owner = app
        .post(&p.key, "/v1/users", &json!({"email": "Ada@Example.com", "role": "owner", "password": PASSWORD}))
        .await
        .expect_status(201);
    assert_user_fields(&owner);
    assert!(is_id(&str_of(&owner["id"]), "usr"), "{}", owner["id"]);
    assert_eq!(owner["email"], "Ada@Example.com");
    assert_eq!(owner["role"], "owner");
    assert_eq!(owner["has_password"], true);
    assert_eq!(owner["last_sign_in_at"], Value::Null);
    assert!(is_timestamp(&str_of(&owner["created_at"])));
    let body = serde_json::to_string(&owner).unwrap_or_default();
    assert!(!body.contains(PASSWORD) && !body.contains("argon2"), "no password in the answer: {body}");

    let invited = app.post(&p.key, "/v1/users", &json!({"email": "grace@example.com", "role": "viewer"})).await;
    let invited = invited.expect_status(201);
    assert_eq!(invited["has_password"], false);

    let listed = list_data(app.get(&p.key, "/v1/users").await.expect_status(200));
    assert_eq!(ids(&listed), [str_of(&invited["id"]), str_of(&owner["id"])], "newest first");
    let path = format!("/v1/users/{}", str_of(&invited["id"]));
    assert_eq!(app.get(&p.key, &path).await.expect_status(200), invited);

    let changed = app.patch(&p.key, &path, &json!({"role": "developer", "password": PASSWORD})).await;
    let changed = changed.expect_status(200);
    assert_eq!((changed["role"].as_str(), changed["has_password"].as_bool()), (Some("developer"), Some(true)));
    let event = app.audit_event(&p.key, "user.updated", &str_of(&invited["id"])).await;
    assert_eq!(event["changes"], json!({"role": {"from": "viewer", "to": "developer"}}));
    let event = app.audit_event(&p.key, "user.password_changed", &str_of(&invited["id"])).await;
    assert_eq!(event["changes"], json!({}), "no secret in the audit log");

    assert_eq!(app.delete(&p.key, &path).await.status, 204);
    assert_problem(&app.get(&p.key, &path).await, 404, "not_found");
    assert_problem(&app.delete(&p.key, &path).await, 404, "not_found");
    let event = app.audit_event(&p.key, "user.deleted", &str_of(&invited["id"])).await;
    assert_eq!(event["changes"], json!({"email": "grace@example.com", "role": "developer"}));

    // Another account's users do not exist for this one.
    let other = app.partner("Globex").await;
    assert_problem(&app.get(&other.key, &format!("/v1/users/{}", str_of(&owner["id"]))).await, 404, "not_found");
    assert!(list_data(app.get(&other.key, "/v1/users").await.expect_status(200)).is_empty());
}
both_backends!(create_list_get_update_and_delete_users);

async fn emails_are_unique_per_account_without_case(app: TestApp) {
    let a = app.partner("Acme").await;
    let b = app.partner("Globex").await;
    app.post(&a.key, "/v1/users", &json!({"email": "ada@example.com", "role": "admin"})).await.expect_status(201);
    let r = app.post(&a.key, "/v1/users", &json!({"email": "ADA@example.COM", "role": "viewer"})).await;
    assert_problem(&r, 409, "conflict");
    // Another account may have the same person.
    app.post(&b.key, "/v1/users", &json!({"email": "ada@example.com", "role": "owner"})).await.expect_status(201);
}
both_backends!(emails_are_unique_per_account_without_case);

async fn invalid_fields_are_named(app: TestApp) {
    let p = app.partner("Acme").await;
    let cases: Vec<(Value, &[&str])> = vec![
        (json!({"email": "ada", "role": "viewer"}), &["email"]),
        (json!({"email": "ada@example.com", "role": "root"}), &["role"]),
        (json!({"email": "ada@example.com", "role": "viewer", "password": "short"}), &["password"]),
        (json!({"email": "", "role": "", "password": "short"}), &["email", "role", "password"]),
        (json!({"email": "ada@example.com", "role": "viewer", "admin": true}), &["admin"]),
    ];
    for (body, fields) in cases {
        assert_invalid_fields(&app.post(&p.key, "/v1/users", &body).await, fields);
    }
    assert!(list_data(app.get(&p.key, "/v1/users").await.expect_status(200)).is_empty(), "nothing was created");
}
both_backends!(invalid_fields_are_named);

async fn an_account_keeps_one_owner(app: TestApp) {
    let p = app.partner("Acme").await;
    let first = app.post(&p.key, "/v1/users", &json!({"email": "a@example.com", "role": "owner"})).await;
    let first = format!("/v1/users/{}", str_of(&first.expect_status(201)["id"]));
    assert_problem(&app.patch(&p.key, &first, &json!({"role": "admin"})).await, 409, "conflict");
    assert_problem(&app.delete(&p.key, &first).await, 409, "conflict");
    assert_eq!(app.get(&p.key, &first).await.expect_status(200)["role"], "owner", "nothing changed");

    let second = app.post(&p.key, "/v1/users", &json!({"email": "b@example.com", "role": "owner"})).await;
    second.expect_status(201);
    assert_eq!(app.patch(&p.key, &first, &json!({"role": "admin"})).await.expect_status(200)["role"], "admin");
}
both_backends!(an_account_keeps_one_owner);

async fn no_escalation_through_a_user(app: TestApp) {
    let p = app.partner("Acme").await;
    let key = |body: Value| {
        let app = &app;
        let owner = p.key.clone();
        async move { str_of(&app.create_key(&owner, body).await["key"]) }
    };
    // Holds users:write and what a developer holds, but not a developer's every scope.
    let narrow =
        key(json!({"name": "narrow", "scopes": ["users:write", "calls:read"], "rate_limit_per_minute": 10_000})).await;
    let r = app.post(&narrow, "/v1/users", &json!({"email": "d@example.com", "role": "developer"})).await;
    assert_escalation(&r, "scopes", Some("account:read"));
    let r = app.post(&narrow, "/v1/users", &json!({"email": "o@example.com", "role": "owner"})).await;
    assert_escalation(&r, "scopes", Some("*"));

    // A restricted key can still invite a viewer when it reads everything.
    let readers = key(json!({"name": "readers", "scopes": ["users:write", "account:read", "api_keys:read",
        "audit:read", "billing:read", "balance:read", "webhooks:read", "tenants:read", "provisioning:read",
        "extensions:read", "call_flows:read", "queues:read", "ring_groups:read", "voicemail:read", "calls:read",
        "recordings:read", "trunks:read", "phone_numbers:read", "port_requests:read", "messages:read",
        "faxes:read", "campaigns:read", "two_fa:read", "validator:read", "reports:read"],
        "rate_limit_per_minute": 10_000}))
    .await;
    let viewer = app.post(&readers, "/v1/users", &json!({"email": "v@example.com", "role": "viewer"})).await;
    let viewer = viewer.expect_status(201);
    // …but cannot raise that viewer, nor change an owner (whom it could then sign in as).
    let path = format!("/v1/users/{}", str_of(&viewer["id"]));
    assert_escalation(&app.patch(&readers, &path, &json!({"role": "admin"})).await, "scopes", Some("account:write"));
    let owner = app.post(&p.key, "/v1/users", &json!({"email": "o@example.com", "role": "owner"})).await;
    let owner_path = format!("/v1/users/{}", str_of(&owner.expect_status(201)["id"]));
    let r = app.patch(&readers, &owner_path, &json!({"email": "mine@example.com"})).await;
    assert_escalation(&r, "scopes", Some("*"));
    assert_escalation(&app.delete(&readers, &owner_path).await, "scopes", Some("*"));

    // Bounds a user would not have: tenants, IPs, expiry, a rate limit below the maximum a
    // user's keys may have, the test environment.
    let slow = key(json!({"name": "slow", "rate_limit_per_minute": 9_999})).await;
    let r = app.post(&slow, "/v1/users", &json!({"email": "s@example.com", "role": "viewer"})).await;
    assert_escalation(&r, "rate_limit_per_minute", None);
    let tenant = app.create_tenant(&p.key, json!({"name": "T"})).await;
    let tenant_key = key(json!({"name": "t", "tenant_ids": [str_of(&tenant["id"])]})).await;
    let r = app.post(&tenant_key, "/v1/users", &json!({"email": "t@example.com", "role": "viewer"})).await;
    assert_problem(&r, 403, "tenant_not_allowed");
    let ip_key = key(json!({"name": "ip", "allowed_ips": ["127.0.0.1"]})).await;
    let r = app.post(&ip_key, "/v1/users", &json!({"email": "i@example.com", "role": "viewer"})).await;
    assert_escalation(&r, "allowed_ips", None);
    let expiring = key(json!({"name": "e", "expires_at": "2099-01-01T00:00:00Z"})).await;
    let r = app.post(&expiring, "/v1/users", &json!({"email": "e@example.com", "role": "viewer"})).await;
    assert_escalation(&r, "expires_at", None);
    let test_key = key(json!({"name": "test", "environment": "test"})).await;
    let r = app.post(&test_key, "/v1/users", &json!({"email": "x@example.com", "role": "viewer"})).await;
    assert_escalation(&r, "environment", None);

    // Without users:read or users:write, nothing at all.
    let none = key(json!({"name": "none", "scopes": ["calls:read"]})).await;
    assert_problem(&app.get(&none, "/v1/users").await, 403, "insufficient_scope");
    let r = app.post(&none, "/v1/users", &json!({"email": "n@example.com", "role": "viewer"})).await;
    assert_problem(&r, 403, "insufficient_scope");
    let listed = list_data(app.get(&p.key, "/v1/users").await.expect_status(200));
    assert_eq!(listed.len(), 2, "only the viewer and the owner were made: {listed:?}");
}
both_backends!(no_escalation_through_a_user);

fn two_users_per_account(config: &mut keygate::Config) {
    config.limits.max_users_per_account = 2;
}

async fn a_full_account_refuses_new_users(app: TestApp) {
    let p = app.partner("Acme").await;
    for email in ["a@example.com", "b@example.com"] {
        app.post(&p.key, "/v1/users", &json!({"email": email, "role": "viewer"})).await.expect_status(201);
    }
    let r = app.post(&p.key, "/v1/users", &json!({"email": "c@example.com", "role": "viewer"})).await;
    assert_problem(&r, 409, "conflict");
    assert!(r.body["detail"].as_str().is_some_and(|d| d.contains("limits.max_users_per_account")), "{r:?}");
    assert_eq!(list_data(app.get(&p.key, "/v1/users").await.expect_status(200)).len(), 2);
    // Another account has room of its own.
    let other = app.partner("Globex").await;
    app.post(&other.key, "/v1/users", &json!({"email": "c@example.com", "role": "viewer"})).await.expect_status(201);
}
both_backends_with!(two_users_per_account; a_full_account_refuses_new_users);

async fn only_an_owner_acts_on_admins_even_through_a_key(app: TestApp) {
    let p = app.partner("Acme").await;
    let admin = app.post(&p.key, "/v1/users", &json!({"email": "a@example.com", "role": "admin"})).await;
    let admin_path = format!("/v1/users/{}", str_of(&admin.expect_status(201)["id"]));
    // Every scope an admin holds, and the bounds a user has: what an admin could make itself.
    let catalog = keygate_domain::scope::Catalog::default();
    let admin_scopes =
        keygate_engine::services::users::role_scopes(keygate_domain::model::Role::Admin, &catalog, false)
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
    let created = app
        .create_key(&p.key, json!({"name": "admin-made", "scopes": admin_scopes, "rate_limit_per_minute": 10_000}))
        .await;
    let admin_key = str_of(&created["key"]);
    for (r, what) in [
        (
            app.post(&admin_key, "/v1/users", &json!({"email": "b@example.com", "role": "admin"})).await,
            "create an admin",
        ),
        (
            app.patch(&admin_key, &admin_path, &json!({"password": "a new long pass phrase"})).await,
            "reset an admin's password",
        ),
        (app.patch(&admin_key, &admin_path, &json!({"role": "viewer"})).await, "demote an admin"),
        (app.delete(&admin_key, &admin_path).await, "delete an admin"),
    ] {
        assert_escalation(&r, "role", None);
        assert!(r.body["detail"].as_str().is_some_and(|d| d.contains("only an owner")), "{what}: {r:?}");
    }
    // Below admin it may act; an unrestricted key (the owner's) may act on admins.
    let dev = app.post(&admin_key, "/v1/users", &json!({"email": "d@example.com", "role": "developer"})).await;
    let dev_path = format!("/v1/users/{}", str_of(&dev.expect_status(201)["id"]));
    app.patch(&admin_key, &dev_path, &json!({"role": "viewer"})).await.expect_status(200);
    app.patch(&p.key, &admin_path, &json!({"role": "developer"})).await.expect_status(200);
}
both_backends!(only_an_owner_acts_on_admins_even_through_a_key);
