//! `/v1/accounts` (the operator's) and `/v1/account` (every account's own).

#[macro_use]
mod common;

use common::{
    TestApp, assert_invalid_fields, assert_problem, ids, is_id, is_plaintext_key, is_timestamp, list_data, str_of,
};
use serde_json::{Value, json};

#[track_caller]
fn assert_account_fields(a: &Value) {
    let mut fields: Vec<&str> = a.as_object().expect("an account object").keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["allowed_ips", "created_at", "id", "name", "operator", "rate_limit_per_minute", "status", "updated_at"],
        "{a}"
    );
}

async fn operator_creates_an_account_with_an_unrestricted_first_key(app: TestApp) {
    let r = app.post(&app.operator_key, "/v1/accounts", &json!({"name": "Acme Telecom"})).await;
    let created = r.expect_status(201);
    let mut top: Vec<&str> = created.as_object().expect("an object").keys().map(String::as_str).collect();
    top.sort_unstable();
    assert_eq!(top, ["account", "initial_key"]);

    let account = &created["account"];
    assert_account_fields(account);
    let account_id = str_of(&account["id"]);
    assert!(is_id(&account_id, "acct"), "{account_id}");
    assert_eq!(account["name"], "Acme Telecom");
    assert_eq!(account["status"], "active");
    assert_eq!(account["operator"], false);
    assert_eq!(account["allowed_ips"], json!([]));
    assert_eq!(account["rate_limit_per_minute"], 1000, "default account rate limit");
    assert!(is_timestamp(&str_of(&account["created_at"])));

    let key = &created["initial_key"];
    let plaintext = str_of(&key["key"]);
    assert!(is_plaintext_key(&plaintext) && plaintext.starts_with("sk_live_"), "{plaintext}");
    assert!(is_id(&str_of(&key["id"]), "key"));
    assert_eq!(key["status"], "active");
    assert_eq!(key["scopes"], Value::Null, "unrestricted");
    assert_eq!(key["tenant_ids"], Value::Null, "all tenants");
    assert_eq!(key["allowed_ips"], Value::Null);
    assert_eq!(key["masked"], format!("sk_live_...{}", &plaintext[plaintext.len() - 4..]));
    assert_eq!(key["created_by"], app.operator_key_id.as_str());

    // The first key works, for everything a partner may do.
    let own = app.get(&plaintext, "/v1/account").await.expect_status(200);
    assert_eq!(&own, account);
    let child = app.create_key(&plaintext, json!({"name": "child", "scopes": null})).await;
    assert_eq!(child["scopes"], Value::Null);
    app.create_tenant(&plaintext, json!({"name": "T"})).await;
    app.get(&plaintext, "/v1/audit-events").await.expect_status(200);
    let keys = list_data(app.get(&plaintext, "/v1/api-keys").await.expect_status(200));
    assert!(ids(&keys).contains(&str_of(&key["id"])));

    let custom = app
        .post(&app.operator_key, "/v1/accounts", &json!({"name": "Big", "rate_limit_per_minute": 5000}))
        .await
        .expect_status(201);
    assert_eq!(custom["account"]["rate_limit_per_minute"], 5000);

    assert_invalid_fields(&app.post(&app.operator_key, "/v1/accounts", &json!({"name": ""})).await, &["name"]);
    assert_invalid_fields(
        &app.post(&app.operator_key, "/v1/accounts", &json!({"name": "x", "rate_limit_per_minute": 0})).await,
        &["rate_limit_per_minute"],
    );
    assert_invalid_fields(
        &app.post(&app.operator_key, "/v1/accounts", &json!({"name": "x", "operator": true})).await,
        &["operator"],
    );
}
both_backends!(operator_creates_an_account_with_an_unrestricted_first_key);

async fn operator_lists_gets_and_patches_accounts(app: TestApp) {
    let a = app.partner("Acme").await;
    let b = app.partner("Globex").await;

    let body = app.get(&app.operator_key, "/v1/accounts").await.expect_status(200);
    assert_eq!(body["next_cursor"], Value::Null);
    let listed = list_data(body);
    for acc in &listed {
        assert_account_fields(acc);
    }
    let mut expected = vec![b.account_id.clone(), a.account_id.clone(), app.operator_account_id.clone()];
    expected.sort_unstable_by(|x, y| y.cmp(x));
    assert_eq!(ids(&listed), expected, "newest first, the operator included");
    let operator = listed.iter().find(|x| x["id"] == app.operator_account_id.as_str()).expect("listed");
    assert_eq!(operator["operator"], true);

    let page = app.get(&app.operator_key, "/v1/accounts?limit=2").await.expect_status(200);
    let cursor = str_of(&page["next_cursor"]);
    let rest = app.get(&app.operator_key, &format!("/v1/accounts?limit=2&cursor={cursor}")).await.expect_status(200);
    let mut paged = ids(&list_data(page));
    paged.extend(ids(&list_data(rest)));
    assert_eq!(paged, expected);
    assert_invalid_fields(&app.get(&app.operator_key, "/v1/accounts?limit=0").await, &["limit"]);
    assert_problem(&app.get(&app.operator_key, "/v1/accounts?cursor=x").await, 400, "invalid_request");

    let got = app.get(&app.operator_key, &format!("/v1/accounts/{}", a.account_id)).await.expect_status(200);
    assert_eq!(got["name"], "Acme");

    let patched = app
        .patch(
            &app.operator_key,
            &format!("/v1/accounts/{}", a.account_id),
            &json!({"name": "Acme Corp", "rate_limit_per_minute": 2500}),
        )
        .await
        .expect_status(200);
    assert_eq!(patched["name"], "Acme Corp");
    assert_eq!(patched["rate_limit_per_minute"], 2500);
    let own = app.get(&a.key, "/v1/account").await.expect_status(200);
    assert_eq!(own["name"], "Acme Corp");
    assert_eq!(own["rate_limit_per_minute"], 2500, "the partner sees its new limit");

    let path = format!("/v1/accounts/{}", a.account_id);
    assert_invalid_fields(
        &app.patch(&app.operator_key, &path, &json!({"rate_limit_per_minute": 0})).await,
        &["rate_limit_per_minute"],
    );
    assert_invalid_fields(&app.patch(&app.operator_key, &path, &json!({"status": "suspended"})).await, &["status"]);
    for id in ["acct_01JABCDEFGHJKMNPQRSTVWXYZ0", "acme"] {
        assert_problem(&app.get(&app.operator_key, &format!("/v1/accounts/{id}")).await, 404, "not_found");
        let r = app.patch(&app.operator_key, &format!("/v1/accounts/{id}"), &json!({"name": "x"})).await;
        assert_problem(&r, 404, "not_found");
    }
}
both_backends!(operator_lists_gets_and_patches_accounts);

async fn suspended_accounts_keys_are_refused(app: TestApp) {
    let p = app.partner("Acme").await;
    let other = app.create_key(&p.key, json!({"name": "other"})).await;
    let other_key = str_of(&other["key"]);

    let s = app.post_empty(&app.operator_key, &format!("/v1/accounts/{}/suspend", p.account_id)).await;
    let s = s.expect_status(200);
    assert_account_fields(&s);
    assert_eq!(s["status"], "suspended");

    for key in [&p.key, &other_key] {
        assert_problem(&app.get(key, "/v1/account").await, 403, "account_suspended");
        assert_problem(&app.post(key, "/v1/api-keys", &json!({"name": "x"})).await, 403, "account_suspended");
    }
    // Suspending twice is a no-op.
    let again = app.post_empty(&app.operator_key, &format!("/v1/accounts/{}/suspend", p.account_id)).await;
    assert_eq!(again.expect_status(200), s);

    let u = app.post_empty(&app.operator_key, &format!("/v1/accounts/{}/unsuspend", p.account_id)).await;
    assert_eq!(u.expect_status(200)["status"], "active");
    app.get(&p.key, "/v1/account").await.expect_status(200);
    app.get(&other_key, "/v1/account").await.expect_status(200);

    let r = app.post_empty(&app.operator_key, "/v1/accounts/acct_01JABCDEFGHJKMNPQRSTVWXYZ0/suspend").await;
    assert_problem(&r, 404, "not_found");
}
both_backends!(suspended_accounts_keys_are_refused);

async fn the_operator_account_cannot_be_suspended(app: TestApp) {
    let path = format!("/v1/accounts/{}/suspend", app.operator_account_id);
    assert_problem(&app.post_empty(&app.operator_key, &path).await, 409, "conflict");
    let me = app.get(&app.operator_key, &format!("/v1/accounts/{}", app.operator_account_id)).await;
    assert_eq!(me.expect_status(200)["status"], "active");
    app.get(&app.operator_key, "/v1/accounts").await.expect_status(200);
}
both_backends!(the_operator_account_cannot_be_suspended);

async fn partner_keys_cannot_use_operator_endpoints(app: TestApp) {
    let p = app.partner("Acme").await;
    let other = app.partner("Globex").await;
    let reads = [
        app.get(&p.key, "/v1/accounts").await,
        app.get(&p.key, &format!("/v1/accounts/{}", p.account_id)).await,
        app.get(&p.key, &format!("/v1/accounts/{}", other.account_id)).await,
    ];
    for r in &reads {
        assert_problem(r, 403, "insufficient_scope");
        assert_eq!(r.body["required_scope"], "accounts:read", "{r:?}");
    }
    let writes = [
        app.post(&p.key, "/v1/accounts", &json!({"name": "Mine"})).await,
        app.patch(&p.key, &format!("/v1/accounts/{}", p.account_id), &json!({"rate_limit_per_minute": 99_999})).await,
        app.post_empty(&p.key, &format!("/v1/accounts/{}/suspend", other.account_id)).await,
        app.post_empty(&p.key, &format!("/v1/accounts/{}/unsuspend", p.account_id)).await,
    ];
    for r in &writes {
        assert_problem(r, 403, "insufficient_scope");
        assert_eq!(r.body["required_scope"], "accounts:write", "{r:?}");
    }
    app.get(&other.key, "/v1/account").await.expect_status(200);
    assert_eq!(app.get(&p.key, "/v1/account").await.expect_status(200)["rate_limit_per_minute"], 1000);
}
both_backends!(partner_keys_cannot_use_operator_endpoints);

async fn own_account_can_be_read_and_renamed(app: TestApp) {
    let p = app.partner("Acme").await;
    let own = app.get(&p.key, "/v1/account").await.expect_status(200);
    assert_account_fields(&own);
    assert_eq!(own["id"], p.account_id);
    assert_eq!(own["operator"], false);

    let renamed = app.patch(&p.key, "/v1/account", &json!({"name": "Acme Corp"})).await.expect_status(200);
    assert_eq!(renamed["name"], "Acme Corp");
    assert_eq!(app.get(&p.key, "/v1/account").await.expect_status(200)["name"], "Acme Corp");

    // The rate limit is the operator's to set.
    let r = app.patch(&p.key, "/v1/account", &json!({"rate_limit_per_minute": 5000})).await;
    assert_invalid_fields(&r, &["rate_limit_per_minute"]);
    assert_eq!(app.get(&p.key, "/v1/account").await.expect_status(200)["rate_limit_per_minute"], 1000);
    assert_invalid_fields(&app.patch(&p.key, "/v1/account", &json!({"status": "active"})).await, &["status"]);
    assert_invalid_fields(&app.patch(&p.key, "/v1/account", &json!({"name": ""})).await, &["name"]);

    let reader = str_of(&app.create_key(&p.key, json!({"name": "r", "scopes": ["account:read"]})).await["key"]);
    app.get(&reader, "/v1/account").await.expect_status(200);
    let r = app.patch(&reader, "/v1/account", &json!({"name": "x"})).await;
    assert_problem(&r, 403, "insufficient_scope");
    assert_eq!(r.body["required_scope"], "account:write");
}
both_backends!(own_account_can_be_read_and_renamed);

async fn account_allowlist_is_set_and_enforced(app: TestApp) {
    let p = app.partner("Acme").await;
    let elsewhere = app.client_from("127.0.0.2".parse().expect("an IP"));
    let from_elsewhere = || common::send(elsewhere.get(app.url("/v1/account")).bearer_auth(&p.key));
    from_elsewhere().await.expect_status(200);

    let set = app.patch(&p.key, "/v1/account", &json!({"allowed_ips": ["127.0.0.1", "10.0.0.0/8"]})).await;
    assert_eq!(set.expect_status(200)["allowed_ips"], json!(["127.0.0.1", "10.0.0.0/8"]));
    app.get(&p.key, "/v1/account").await.expect_status(200);
    assert_problem(&from_elsewhere().await, 403, "ip_not_allowed");

    // A list that leaves out the caller's own address would lock it out: refused, as a conflict
    // with the state it would leave (the list itself is well-formed).
    let r = app.patch(&p.key, "/v1/account", &json!({"allowed_ips": ["10.0.0.0/8"]})).await;
    assert_problem(&r, 409, "conflict");
    assert!(r.body["detail"].as_str().is_some_and(|d| d.contains("127.0.0.1")), "{r:?}");
    let own = app.get(&p.key, "/v1/account").await.expect_status(200);
    assert_eq!(own["allowed_ips"], json!(["127.0.0.1", "10.0.0.0/8"]));

    assert_invalid_fields(
        &app.patch(&p.key, "/v1/account", &json!({"allowed_ips": ["127.0.0.1", "nope"]})).await,
        &["allowed_ips[1]"],
    );

    // An empty list opens the account again.
    let open = app.patch(&p.key, "/v1/account", &json!({"allowed_ips": []})).await.expect_status(200);
    assert_eq!(open["allowed_ips"], json!([]));
    from_elsewhere().await.expect_status(200);

    // The operator can set any list on a partner (no lock-out rule: it is not the partner's IP).
    let r = app
        .patch(&app.operator_key, &format!("/v1/accounts/{}", p.account_id), &json!({"allowed_ips": ["10.0.0.0/8"]}))
        .await;
    assert_eq!(r.expect_status(200)["allowed_ips"], json!(["10.0.0.0/8"]));
    assert_problem(&app.get(&p.key, "/v1/account").await, 403, "ip_not_allowed");
    assert_problem(&from_elsewhere().await, 403, "ip_not_allowed");
}
both_backends!(account_allowlist_is_set_and_enforced);
