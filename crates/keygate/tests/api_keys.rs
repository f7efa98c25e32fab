//! `/v1/api-keys`: create, list, get, patch, revoke, delete, roll and look up, as a partner does.

#[macro_use]
mod common;

use common::{
    Resp, TestApp, assert_invalid_fields, assert_problem, ids, is_id, is_plaintext_key, is_timestamp, list_data, send,
    str_of, timestamp,
};
use keygate_domain::{Environment, KeyFormat};
use reqwest::Method;
use serde_json::{Value, json};

/// Every field of a key object, in no particular order.
const KEY_FIELDS: [&str; 18] = [
    "id",
    "name",
    "masked",
    "environment",
    "status",
    "scopes",
    "tenant_ids",
    "allowed_ips",
    "rate_limit_per_minute",
    "expires_at",
    "revoked_at",
    "revoked_reason",
    "last_used_at",
    "last_used_ip",
    "metadata",
    "created_at",
    "created_by",
    "updated_at",
];

#[track_caller]
fn assert_key_fields(key: &Value, with_plaintext: bool) {
    let mut fields: Vec<&str> = key.as_object().expect("a key object").keys().map(String::as_str).collect();
    fields.sort_unstable();
    let mut expected = KEY_FIELDS.to_vec();
    if with_plaintext {
        expected.push("key");
    }
    expected.sort_unstable();
    assert_eq!(fields, expected, "fields of {key}");
}

/// The key object without its plaintext and the fields that change with use.
fn settled(key: &Value) -> Value {
    let mut k = key.clone();
    let m = k.as_object_mut().expect("a key object");
    m.remove("key");
    m.remove("last_used_at");
    m.remove("last_used_ip");
    k
}

async fn create_returns_the_plaintext_and_every_field(app: TestApp) {
    let p = app.partner("Acme").await;
    let tenant = app.create_tenant(&p.key, json!({"name": "Northwind"})).await;
    let tenant_id = str_of(&tenant["id"]);
    let expires_at = "2031-01-01T00:00:00Z";

    let k = app
        .create_key(
            &p.key,
            json!({
                "name": "Production CRM Integration",
                "environment": "live",
                "scopes": ["tenants:write", "billing:read"],
                "tenant_ids": [tenant_id],
                "allowed_ips": ["203.0.113.7", "10.0.0.0/8"],
                "rate_limit_per_minute": 75,
                "expires_at": expires_at,
                "metadata": {"crm": "hubspot", "seats": "3"},
            }),
        )
        .await;

    assert_key_fields(&k, true);
    let plaintext = str_of(&k["key"]);
    assert!(is_plaintext_key(&plaintext), "{plaintext} matches ^sk_(live|test)_[0-9A-Za-z]{{36}}$");
    assert!(plaintext.starts_with("sk_live_"));
    assert_eq!(k["masked"], format!("sk_live_...{}", &plaintext[plaintext.len() - 4..]));
    assert!(is_id(&str_of(&k["id"]), "key"), "{}", k["id"]);
    assert_eq!(k["name"], "Production CRM Integration");
    assert_eq!(k["environment"], "live");
    assert_eq!(k["status"], "active");
    assert_eq!(k["scopes"], json!(["tenants:write", "billing:read"]));
    assert_eq!(k["tenant_ids"], json!([tenant_id]));
    assert_eq!(k["allowed_ips"], json!(["203.0.113.7", "10.0.0.0/8"]));
    assert_eq!(k["rate_limit_per_minute"], 75);
    assert_eq!(k["expires_at"], expires_at);
    assert_eq!(k["revoked_at"], Value::Null);
    assert_eq!(k["revoked_reason"], Value::Null);
    assert_eq!(k["last_used_at"], Value::Null);
    assert_eq!(k["last_used_ip"], Value::Null);
    assert_eq!(k["metadata"], json!({"crm": "hubspot", "seats": "3"}));
    assert!(is_timestamp(&str_of(&k["created_at"])), "{}", k["created_at"]);
    assert!(is_timestamp(&str_of(&k["updated_at"])), "{}", k["updated_at"]);
    assert_eq!(k["created_by"], p.key_id, "created by the acting key");

    let test_key = app
        .create_key(&p.key, json!({"name": "sandbox", "environment": "test", "expires_at": "2031-01-01T00:00:00.750Z"}))
        .await;
    assert_eq!(test_key["expires_at"], "2031-01-01T00:00:00Z", "whole seconds, like every timestamp");
    let plaintext = str_of(&test_key["key"]);
    assert!(is_plaintext_key(&plaintext) && plaintext.starts_with("sk_test_"), "{plaintext}");
    assert_eq!(test_key["environment"], "test");
    assert_eq!(test_key["masked"], format!("sk_test_...{}", &plaintext[plaintext.len() - 4..]));
}
both_backends!(create_returns_the_plaintext_and_every_field);

async fn create_applies_defaults(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "  minimal  "})).await;
    assert_key_fields(&k, true);
    assert_eq!(k["name"], "minimal", "trimmed");
    assert_eq!(k["rate_limit_per_minute"], 100);
    assert_eq!(k["environment"], "live");
    assert_eq!(k["status"], "active");
    assert_eq!(k["scopes"], Value::Null, "an unrestricted creator's scopes are inherited: unrestricted");
    assert_eq!(k["tenant_ids"], Value::Null, "all tenants");
    assert_eq!(k["allowed_ips"], Value::Null, "any IP");
    assert_eq!(k["expires_at"], Value::Null);
    assert_eq!(k["metadata"], json!({}));

    // The new key works on its own.
    let own = app.get(&str_of(&k["key"]), "/v1/account").await.expect_status(200);
    assert_eq!(own["id"], p.account_id);
}
both_backends!(create_applies_defaults);

/// A new account's first key is "unrestricted" (SPEC §8), and the per-key maximum is 10,000/min
/// (SPEC §5): through that key, the partner can give a key any rate limit up to the maximum.
/// (No escalation bounds a key by its creator's own limit, so a first key of 100/min would cap
/// every key of the account at 100/min forever.)
async fn first_key_can_grant_up_to_the_maximum_rate_limit(app: TestApp) {
    let p = app.partner("Acme").await;
    let r = app.post(&p.key, "/v1/api-keys", &json!({"name": "busy", "rate_limit_per_minute": 10_000})).await;
    assert_eq!(r.expect_status(201)["rate_limit_per_minute"], 10_000);
}
both_backends!(first_key_can_grant_up_to_the_maximum_rate_limit);

async fn absent_scopes_are_inherited_and_null_means_unrestricted(app: TestApp) {
    let p = app.partner("Acme").await;
    let restricted = app.create_key(&p.key, json!({"name": "r", "scopes": ["api_keys:write", "tenants:read"]})).await;
    assert_eq!(restricted["scopes"], json!(["api_keys:write", "tenants:read"]));

    let child = app.create_key(&str_of(&restricted["key"]), json!({"name": "child"})).await;
    assert_eq!(child["scopes"], json!(["api_keys:write", "tenants:read"]), "absent scopes: the creator's own");
    assert_eq!(child["tenant_ids"], Value::Null);

    let unrestricted = app.create_key(&p.key, json!({"name": "u", "scopes": null})).await;
    assert_eq!(unrestricted["scopes"], Value::Null, "explicit null: unrestricted");
    let unrestricted_key = str_of(&unrestricted["key"]);
    // Unrestricted means every partner scope, `api_keys:*` included.
    app.get(&unrestricted_key, "/v1/audit-events").await.expect_status(200);
    app.create_key(&unrestricted_key, json!({"name": "grandchild", "scopes": ["calls:write"]})).await;

    let empty = app.create_key(&p.key, json!({"name": "nothing", "scopes": []})).await;
    assert_eq!(empty["scopes"], json!([]), "an empty list is not unrestricted");
    let r = app.get(&str_of(&empty["key"]), "/v1/api-keys").await;
    assert_problem(&r, 403, "insufficient_scope");
}
both_backends!(absent_scopes_are_inherited_and_null_means_unrestricted);

async fn create_names_each_invalid_field(app: TestApp) {
    let p = app.partner("Acme").await;
    let cases: Vec<(Value, &[&str])> = vec![
        (json!({"name": "k", "scopes": ["tenants:read", "nope:read"]}), &["scopes[1]"]),
        (json!({"name": "k", "scopes": ["tenants:read", "Not A Scope"]}), &["scopes[1]"]),
        (json!({"name": "k", "scopes": ["tenants:fly"]}), &["scopes[0]"]),
        (json!({"name": "k", "allowed_ips": ["10.0.0.0/33"]}), &["allowed_ips[0]"]),
        (json!({"name": "k", "allowed_ips": ["203.0.113.7", "not-an-ip"]}), &["allowed_ips[1]"]),
        (json!({"name": "k", "rate_limit_per_minute": 0}), &["rate_limit_per_minute"]),
        (json!({"name": "k", "rate_limit_per_minute": 10_001}), &["rate_limit_per_minute"]),
        (json!({"name": "k", "expires_at": "2020-01-01T00:00:00Z"}), &["expires_at"]),
        (json!({"name": "k", "tenant_ids": ["ten_01JABCDEFGHJKMNPQRSTVWXYZ0"]}), &["tenant_ids[0]"]),
        (json!({"name": "k", "tenant_ids": ["acme-clinic"]}), &["tenant_ids[0]"]),
        (json!({"name": "k", "environment": "prod"}), &["environment"]),
        (json!({"name": "  "}), &["name"]),
        (json!({"name": "bad\u{0}name"}), &["name"]),
        // A bidirectional override makes a name display as another ("Trojan Source").
        (json!({"name": "invoice\u{202E}fdp.exe"}), &["name"]),
        (json!({"name": "a\u{2066}b"}), &["name"]),
        (json!({"name": "x".repeat(201)}), &["name"]),
        (json!({"name": "k", "metadata": {"k": "x".repeat(600)}}), &["metadata.k"]),
        (
            json!({"name": "k", "metadata": (0..51).map(|i| (format!("k{i}"), json!(i.to_string()))).collect::<serde_json::Map<_, _>>()}),
            &["metadata"],
        ),
        (json!({"name": "k", "metadata": {"seats": 3}}), &["metadata.seats"]),
        (json!({"name": "k", "nmae": "typo"}), &["nmae"]),
        (json!({"name": 5}), &["name"]),
        (json!({"name": "k", "rate_limit_per_minute": "lots"}), &["rate_limit_per_minute"]),
        (json!({"name": "k", "scopes": "tenants:read"}), &["scopes"]),
        (json!({"scopes": ["tenants:read"]}), &["name"]),
        // Every bad field at once, not just the first.
        (
            json!({
                "name": "k", "scopes": ["tenants:read", "nope:read"], "allowed_ips": ["nope"],
                "rate_limit_per_minute": 0, "expires_at": "2020-01-01T00:00:00Z",
                "tenant_ids": ["ten_01JABCDEFGHJKMNPQRSTVWXYZ0"], "environment": "prod",
            }),
            &["scopes[1]", "allowed_ips[0]", "rate_limit_per_minute", "expires_at", "tenant_ids[0]", "environment"],
        ),
    ];
    for (body, fields) in cases {
        let r = app.post(&p.key, "/v1/api-keys", &body).await;
        assert_invalid_fields(&r, fields);
    }
    // Nothing was created by any of them.
    let keys = list_data(app.get(&p.key, "/v1/api-keys").await.expect_status(200));
    assert_eq!(ids(&keys), vec![p.key_id]);
}
both_backends!(create_names_each_invalid_field);

async fn malformed_json_is_invalid_request(app: TestApp) {
    let p = app.partner("Acme").await;
    for body in [r#"{"name": "#, "not json", "", "{\"name\": \"x\",}"] {
        let req = app.request(Method::POST, "/v1/api-keys", &p.key).header("content-type", "application/json");
        let r = send(req.body(body)).await;
        assert_problem(&r, 400, "invalid_request");
    }
}
both_backends!(malformed_json_is_invalid_request);

/// A body that is not JSON is 400 even when serde meets a wrongly typed field before it meets
/// the syntax error (it reads as it goes): the client's problem is the syntax, not the field.
async fn truncated_json_is_invalid_request_even_after_a_bad_field(app: TestApp) {
    let p = app.partner("Acme").await;
    for body in [r#"{"name": 5"#, "[1, 2", r#"{"name": "k", "rate_limit_per_minute": "lots""#] {
        let req = app.request(Method::POST, "/v1/api-keys", &p.key).header("content-type", "application/json");
        let r = send(req.body(body)).await;
        assert_problem(&r, 400, "invalid_request");
    }
}
both_backends!(truncated_json_is_invalid_request_even_after_a_bad_field);

async fn oversized_body_is_payload_too_large(app: TestApp) {
    let p = app.partner("Acme").await;
    let body = json!({"name": "big", "metadata": {"blob": "x".repeat(common::MAX_BODY_BYTES)}});
    let r = app.post(&p.key, "/v1/api-keys", &body).await;
    assert_problem(&r, 413, "payload_too_large");
    let keys = list_data(app.get(&p.key, "/v1/api-keys").await.expect_status(200));
    assert_eq!(keys.len(), 1, "nothing created");
}
both_backends!(oversized_body_is_payload_too_large);

async fn list_is_masked_and_newest_first(app: TestApp) {
    let p = app.partner("Acme").await;
    let mut created = Vec::new();
    for name in ["one", "two", "three"] {
        created.push(app.create_key(&p.key, json!({"name": name})).await);
    }
    let body = app.get(&p.key, "/v1/api-keys").await.expect_status(200);
    assert_eq!(body["next_cursor"], Value::Null);
    let keys = list_data(body);
    let listed = ids(&keys);
    let mut expected: Vec<String> = created.iter().map(|k| str_of(&k["id"])).collect();
    expected.push(p.key_id.clone());
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(listed, expected, "every key, newest (highest id) first");
    assert_eq!(listed.last(), Some(&p.key_id), "the initial key is the oldest");
    for k in &keys {
        assert_key_fields(k, false);
        assert!(str_of(&k["masked"]).starts_with("sk_live_..."), "{k}");
    }
    for c in &created {
        let listed = keys.iter().find(|k| k["id"] == c["id"]).expect("listed");
        assert_eq!(settled(listed), settled(c), "the list shows what create returned, minus the plaintext");
    }
}
both_backends!(list_is_masked_and_newest_first);

async fn list_filters_by_name_status_tenant_and_environment(app: TestApp) {
    let p = app.partner("Acme").await;
    let tenant = str_of(&app.create_tenant(&p.key, json!({"name": "Northwind"})).await["id"]);
    let prod = app.create_key(&p.key, json!({"name": "Production CRM"})).await;
    let staging = app.create_key(&p.key, json!({"name": "Staging crm", "environment": "test"})).await;
    let scoped = app.create_key(&p.key, json!({"name": "Northwind only", "tenant_ids": [tenant]})).await;
    let percent = app.create_key(&p.key, json!({"name": "100% done"})).await;
    let revoked = app.create_key(&p.key, json!({"name": "old"})).await;
    app.post_empty(&p.key, &format!("/v1/api-keys/{}/revoke", str_of(&revoked["id"]))).await.expect_status(200);
    let rolled = app.create_key(&p.key, json!({"name": "rolled"})).await;
    let successor = app
        .post(&p.key, &format!("/v1/api-keys/{}/roll", str_of(&rolled["id"])), &json!({"grace_period_seconds": 0}))
        .await
        .expect_status(201);

    let list = |query: Vec<(&'static str, String)>| {
        let req = app.request(Method::GET, "/v1/api-keys", &p.key).query(&query);
        async move {
            let mut listed = ids(&list_data(send(req).await.expect_status(200)));
            listed.sort_unstable();
            listed
        }
    };
    let sorted = |keys: &[&Value]| {
        let mut v: Vec<String> = keys.iter().map(|k| str_of(&k["id"])).collect();
        v.sort_unstable();
        v
    };

    assert_eq!(list(vec![("name", "crm".into())]).await, sorted(&[&prod, &staging]), "partial, case-insensitive");
    assert_eq!(list(vec![("name", "PROD".into())]).await, sorted(&[&prod]));
    assert_eq!(list(vec![("label", "CRM".into())]).await, sorted(&[&prod, &staging]), "label is an alias of name");
    assert_eq!(list(vec![("name", "%".into())]).await, sorted(&[&percent]), "% is matched literally");
    assert_eq!(list(vec![("name", "_".into())]).await, Vec::<String>::new(), "_ is matched literally");
    assert_eq!(list(vec![("status", "revoked".into())]).await, sorted(&[&revoked]));
    assert_eq!(list(vec![("status", "expired".into())]).await, sorted(&[&rolled]));
    let active = list(vec![("status", "active".into())]).await;
    let mut expected_active = sorted(&[&prod, &staging, &scoped, &percent, &successor]);
    expected_active.push(p.key_id.clone());
    expected_active.sort_unstable();
    assert_eq!(active, expected_active);
    assert_eq!(list(vec![("tenant_id", tenant.clone())]).await, sorted(&[&scoped]));
    assert_eq!(list(vec![("environment", "test".into())]).await, sorted(&[&staging]));
    assert_eq!(
        list(vec![("name", "crm".into()), ("environment", "live".into())]).await,
        sorted(&[&prod]),
        "filters combine"
    );

    for (param, value) in [("status", "gone"), ("environment", "prod"), ("tenant_id", "northwind"), ("colour", "red")] {
        let r = send(app.request(Method::GET, "/v1/api-keys", &p.key).query(&[(param, value)])).await;
        assert_invalid_fields(&r, &[param]);
    }
}
both_backends!(list_filters_by_name_status_tenant_and_environment);

async fn list_paginates_with_a_cursor(app: TestApp) {
    let p = app.partner("Acme").await;
    for i in 0..5 {
        app.create_key(&p.key, json!({"name": format!("k{i}")})).await;
    }
    let all = ids(&list_data(app.get(&p.key, "/v1/api-keys?limit=100").await.expect_status(200)));
    assert_eq!(all.len(), 6);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/api-keys?limit=2&cursor={c}"),
            None => "/v1/api-keys?limit=2".to_owned(),
        };
        let body = app.get(&p.key, &path).await.expect_status(200);
        let next = body["next_cursor"].as_str().map(str::to_owned);
        let page = ids(&list_data(body));
        assert!(page.len() <= 2, "{page:?}");
        seen.extend(page);
        pages += 1;
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "pagination ends");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all, "the pages together are the whole list, in order, without repeats");

    let default = list_data(app.get(&p.key, "/v1/api-keys").await.expect_status(200));
    assert_eq!(default.len(), 6, "default limit 20");

    for limit in ["0", "101", "-1", "many"] {
        let r = app.get(&p.key, &format!("/v1/api-keys?limit={limit}")).await;
        assert_invalid_fields(&r, &["limit"]);
    }
    for cursor in ["garbage", "ten_01JABCDEFGHJKMNPQRSTVWXYZ0"] {
        let r = app.get(&p.key, &format!("/v1/api-keys?cursor={cursor}")).await;
        assert_problem(&r, 400, "invalid_request");
    }
}
both_backends!(list_paginates_with_a_cursor);

async fn get_returns_one_key(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "one", "metadata": {"a": "1"}})).await;
    let got = app.get(&p.key, &format!("/v1/api-keys/{}", str_of(&k["id"]))).await.expect_status(200);
    assert_key_fields(&got, false);
    assert_eq!(settled(&got), settled(&k));

    for id in ["key_01JABCDEFGHJKMNPQRSTVWXYZ0", "nope", "ten_01JABCDEFGHJKMNPQRSTVWXYZ0"] {
        let r = app.get(&p.key, &format!("/v1/api-keys/{id}")).await;
        assert_problem(&r, 404, "not_found");
    }
}
both_backends!(get_returns_one_key);

async fn patch_changes_each_field_and_records_what_changed(app: TestApp) {
    let p = app.partner("Acme").await;
    let tenant = str_of(&app.create_tenant(&p.key, json!({"name": "Northwind"})).await["id"]);
    let k = app.create_key(&p.key, json!({"name": "before", "metadata": {"crm": "hubspot", "team": "sales"}})).await;
    let id = str_of(&k["id"]);
    let path = format!("/v1/api-keys/{id}");
    let expires_at = "2031-06-01T12:00:00Z";

    let patched = app
        .patch(
            &p.key,
            &path,
            &json!({
                "name": "after",
                "scopes": ["calls:read"],
                "tenant_ids": [tenant],
                "allowed_ips": ["192.0.2.0/24"],
                "rate_limit_per_minute": 42,
                "expires_at": expires_at,
                "metadata": {"team": null, "env": "prod"},
            }),
        )
        .await;
    let patched_id = patched.request_id().to_owned();
    let patched = patched.expect_status(200);
    assert_key_fields(&patched, false);
    assert_eq!(patched["id"], id);
    assert_eq!(patched["name"], "after");
    assert_eq!(patched["scopes"], json!(["calls:read"]));
    assert_eq!(patched["tenant_ids"], json!([tenant]));
    assert_eq!(patched["allowed_ips"], json!(["192.0.2.0/24"]));
    assert_eq!(patched["rate_limit_per_minute"], 42);
    assert_eq!(patched["expires_at"], expires_at);
    assert_eq!(patched["metadata"], json!({"crm": "hubspot", "env": "prod"}), "merged; null removes a key");
    assert_eq!(patched["masked"], k["masked"], "the key value never changes");
    assert_eq!(patched["created_at"], k["created_at"]);
    let got = app.get(&p.key, &path).await.expect_status(200);
    assert_eq!(settled(&got), settled(&patched), "the change is stored");

    let event = app.audit_event(&p.key, "api_key.updated", &id).await;
    assert_eq!(event["request_id"], patched_id.as_str());
    let changes = event["changes"].as_object().expect("changes");
    let mut changed: Vec<&str> = changes.keys().map(String::as_str).collect();
    changed.sort_unstable();
    assert_eq!(
        changed,
        ["allowed_ips", "expires_at", "metadata", "name", "rate_limit_per_minute", "scopes", "tenant_ids"]
    );
    assert_eq!(changes["name"], json!({"from": "before", "to": "after"}));
    assert_eq!(changes["scopes"], json!({"from": null, "to": ["calls:read"]}));
    assert_eq!(changes["rate_limit_per_minute"], json!({"from": 100, "to": 42}));
    assert_eq!(changes["expires_at"], json!({"from": null, "to": expires_at}));

    // Back to unrestricted, all tenants, any IP, no expiry.
    let cleared = app
        .patch(&p.key, &path, &json!({"scopes": null, "tenant_ids": null, "allowed_ips": null, "expires_at": null}))
        .await
        .expect_status(200);
    assert_eq!(cleared["scopes"], Value::Null);
    assert_eq!(cleared["tenant_ids"], Value::Null);
    assert_eq!(cleared["allowed_ips"], Value::Null);
    assert_eq!(cleared["expires_at"], Value::Null);

    // Invalid values and the key value itself are refused, naming the field.
    assert_invalid_fields(
        &app.patch(&p.key, &path, &json!({"rate_limit_per_minute": 0})).await,
        &["rate_limit_per_minute"],
    );
    assert_invalid_fields(&app.patch(&p.key, &path, &json!({"scopes": ["nope:read"]})).await, &["scopes[0]"]);
    assert_invalid_fields(
        &app.patch(&p.key, &path, &json!({"expires_at": "2020-01-01T00:00:00Z"})).await,
        &["expires_at"],
    );
    assert_invalid_fields(&app.patch(&p.key, &path, &json!({"key": "sk_live_x"})).await, &["key"]);
    assert_invalid_fields(&app.patch(&p.key, &path, &json!({"name": ""})).await, &["name"]);
    let r = app.patch(&p.key, "/v1/api-keys/key_01JABCDEFGHJKMNPQRSTVWXYZ0", &json!({"name": "x"})).await;
    assert_problem(&r, 404, "not_found");
}
both_backends!(patch_changes_each_field_and_records_what_changed);

async fn empty_patch_changes_nothing(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "same", "metadata": {"a": "1"}})).await;
    let id = str_of(&k["id"]);
    let path = format!("/v1/api-keys/{id}");
    let before = app.audit_events(&p.key, &[("target_id", &id)]).await;

    let same = app.patch(&p.key, &path, &json!({})).await.expect_status(200);
    assert_eq!(settled(&same), settled(&k));
    // Setting fields to what they already are is no change either.
    let same = app.patch(&p.key, &path, &json!({"name": "same", "metadata": {"a": "1"}})).await.expect_status(200);
    assert_eq!(settled(&same), settled(&k), "updated_at untouched");

    let after = app.audit_events(&p.key, &[("target_id", &id)]).await;
    assert_eq!(ids(&after), ids(&before), "no api_key.updated event for no change");
}
both_backends!(empty_patch_changes_nothing);

async fn revoke_keeps_the_reason_and_is_idempotent(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "to revoke"})).await;
    let (id, plaintext) = (str_of(&k["id"]), str_of(&k["key"]));
    app.get(&plaintext, "/v1/api-keys").await.expect_status(200);

    let revoked = app.post(&p.key, &format!("/v1/api-keys/{id}/revoke"), &json!({"reason": "leaked in CI"})).await;
    let revoked = revoked.expect_status(200);
    assert_key_fields(&revoked, false);
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_reason"], "leaked in CI");
    assert!(is_timestamp(&str_of(&revoked["revoked_at"])));

    // The key stops working before the response above returned.
    let r = app.get(&plaintext, "/v1/api-keys").await;
    assert_problem(&r, 401, "api_key_revoked");

    // Revoking again changes nothing: same time, same reason, no second event.
    let again = app.post(&p.key, &format!("/v1/api-keys/{id}/revoke"), &json!({"reason": "another reason"})).await;
    let again = again.expect_status(200);
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    assert_eq!(again["revoked_reason"], "leaked in CI");
    let events = app.audit_events(&p.key, &[("action", "api_key.revoked"), ("target_id", &id)]).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["changes"]["reason"], "leaked in CI");

    // No body at all is fine: no reason.
    let other = app.create_key(&p.key, json!({"name": "no reason"})).await;
    let r = app.post_empty(&p.key, &format!("/v1/api-keys/{}/revoke", str_of(&other["id"]))).await;
    let r = r.expect_status(200);
    assert_eq!(r["status"], "revoked");
    assert_eq!(r["revoked_reason"], Value::Null);

    let long = app.create_key(&p.key, json!({"name": "long reason"})).await;
    let long_path = format!("/v1/api-keys/{}/revoke", str_of(&long["id"]));
    let r = app.post(&p.key, &long_path, &json!({"reason": "x".repeat(501)})).await;
    assert_invalid_fields(&r, &["reason"]);

    let r = app.post_empty(&p.key, "/v1/api-keys/key_01JABCDEFGHJKMNPQRSTVWXYZ0/revoke").await;
    assert_problem(&r, 404, "not_found");
}
both_backends!(revoke_keeps_the_reason_and_is_idempotent);

async fn delete_removes_the_key_and_audit_keeps_it(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "to delete"})).await;
    let (id, plaintext) = (str_of(&k["id"]), str_of(&k["key"]));
    let path = format!("/v1/api-keys/{id}");

    let r = app.delete(&p.key, &path).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.text.is_empty(), "204 has no body: {r:?}");

    assert_problem(&app.get(&p.key, &path).await, 404, "not_found");
    assert_problem(&app.delete(&p.key, &path).await, 404, "not_found");
    assert_problem(&app.get(&plaintext, "/v1/account").await, 401, "invalid_api_key");
    let keys = list_data(app.get(&p.key, "/v1/api-keys").await.expect_status(200));
    assert!(!ids(&keys).contains(&id));

    let event = app.audit_event(&p.key, "api_key.deleted", &id).await;
    assert_eq!(event["changes"]["name"], "to delete");
    assert_eq!(event["changes"]["masked"], k["masked"]);
}
both_backends!(delete_removes_the_key_and_audit_keeps_it);

async fn roll_issues_a_new_key_and_expires_the_old_one(app: TestApp) {
    let p = app.partner("Acme").await;
    let tenant = str_of(&app.create_tenant(&p.key, json!({"name": "Northwind"})).await["id"]);
    let old = app
        .create_key(
            &p.key,
            json!({
                "name": "rolling", "environment": "test", "scopes": ["calls:read", "api_keys:read"],
                "tenant_ids": [tenant], "allowed_ips": ["127.0.0.1"], "rate_limit_per_minute": 77,
                "metadata": {"crm": "hubspot"},
            }),
        )
        .await;
    let (old_id, old_plaintext) = (str_of(&old["id"]), str_of(&old["key"]));

    let new = app.post(&p.key, &format!("/v1/api-keys/{old_id}/roll"), &json!({"grace_period_seconds": 0})).await;
    let new = new.expect_status(201);
    assert_key_fields(&new, true);
    let new_plaintext = str_of(&new["key"]);
    assert!(is_plaintext_key(&new_plaintext) && new_plaintext.starts_with("sk_test_"), "{new_plaintext}");
    assert_ne!(new["id"], old["id"]);
    assert_ne!(new_plaintext, old_plaintext);
    assert_eq!(new["status"], "active");
    for field in ["name", "environment", "scopes", "tenant_ids", "allowed_ips", "rate_limit_per_minute", "metadata"] {
        assert_eq!(new[field], old[field], "{field} carries over");
    }
    assert_eq!(new["expires_at"], Value::Null);

    // The new key works; the old one has expired.
    app.get(&new_plaintext, "/v1/api-keys").await.expect_status(200);
    assert_problem(&app.get(&old_plaintext, "/v1/api-keys").await, 401, "api_key_expired");
    let old_now = app.get(&p.key, &format!("/v1/api-keys/{old_id}")).await.expect_status(200);
    assert_eq!(old_now["status"], "expired");

    // An expired key cannot be rolled again.
    let r = app.post_empty(&p.key, &format!("/v1/api-keys/{old_id}/roll")).await;
    assert_problem(&r, 409, "conflict");
}
both_backends!(roll_issues_a_new_key_and_expires_the_old_one);

async fn roll_with_grace_keeps_the_old_key_working(app: TestApp) {
    let p = app.partner("Acme").await;
    let old = app.create_key(&p.key, json!({"name": "graceful"})).await;
    let (old_id, old_plaintext) = (str_of(&old["id"]), str_of(&old["key"]));

    let before = chrono::Utc::now();
    let new = app.post(&p.key, &format!("/v1/api-keys/{old_id}/roll"), &json!({"grace_period_seconds": 3600})).await;
    let after = chrono::Utc::now();
    let new = new.expect_status(201);

    app.get(&old_plaintext, "/v1/api-keys").await.expect_status(200);
    app.get(&str_of(&new["key"]), "/v1/api-keys").await.expect_status(200);
    let old_now = app.get(&p.key, &format!("/v1/api-keys/{old_id}")).await.expect_status(200);
    assert_eq!(old_now["status"], "active");
    let expires = timestamp(&old_now["expires_at"]);
    let hour = chrono::Duration::seconds(3600);
    assert!(
        expires >= (before + hour) - chrono::Duration::seconds(1) && expires <= after + hour,
        "old key expires an hour after the roll: {expires}"
    );
}
both_backends!(roll_with_grace_keeps_the_old_key_working);

async fn roll_refuses_revoked_keys_and_bad_grace_periods(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "k"})).await;
    let id = str_of(&k["id"]);

    for grace in [json!(-1), json!(604_801), json!("soon")] {
        let r = app.post(&p.key, &format!("/v1/api-keys/{id}/roll"), &json!({"grace_period_seconds": grace})).await;
        assert_invalid_fields(&r, &["grace_period_seconds"]);
    }
    // The top of the range is fine.
    app.post(&p.key, &format!("/v1/api-keys/{id}/roll"), &json!({"grace_period_seconds": 604_800}))
        .await
        .expect_status(201);

    let revoked = app.create_key(&p.key, json!({"name": "revoked"})).await;
    let revoked_id = str_of(&revoked["id"]);
    app.post_empty(&p.key, &format!("/v1/api-keys/{revoked_id}/revoke")).await.expect_status(200);
    let r = app.post_empty(&p.key, &format!("/v1/api-keys/{revoked_id}/roll")).await;
    assert_problem(&r, 409, "conflict");
    let r = app.post_empty(&p.key, "/v1/api-keys/key_01JABCDEFGHJKMNPQRSTVWXYZ0/roll").await;
    assert_problem(&r, 404, "not_found");
}
both_backends!(roll_refuses_revoked_keys_and_bad_grace_periods);

async fn lookup_finds_own_keys_by_value_only(app: TestApp) {
    let p = app.partner("Acme").await;
    let other = app.partner("Other").await;
    let k = app.create_key(&p.key, json!({"name": "findable"})).await;
    let plaintext = str_of(&k["key"]);

    let found = app.post(&p.key, "/v1/api-keys/lookup", &json!({"key": plaintext})).await.expect_status(200);
    assert_key_fields(&found, false);
    assert_eq!(settled(&found), settled(&k));

    let unknown = KeyFormat::default().generate(Environment::Live);
    let mut bad_checksum = plaintext.clone();
    let last = bad_checksum.pop().expect("a character");
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    for value in ["sk_live_nope", "", bad_checksum.as_str(), unknown.expose(), other.key.as_str()] {
        let r = app.post(&p.key, "/v1/api-keys/lookup", &json!({"key": value})).await;
        assert_problem(&r, 404, "not_found");
        assert!(!r.text.contains(value) || value.is_empty(), "the key is not echoed: {r:?}");
    }
    assert_invalid_fields(&app.post(&p.key, "/v1/api-keys/lookup", &json!({})).await, &["key"]);
}
both_backends!(lookup_finds_own_keys_by_value_only);

async fn read_only_key_cannot_write(app: TestApp) {
    let p = app.partner("Acme").await;
    let reader = app.create_key(&p.key, json!({"name": "reader", "scopes": ["api_keys:read"]})).await;
    let reader_key = str_of(&reader["key"]);
    let target = str_of(&app.create_key(&p.key, json!({"name": "target"})).await["id"]);

    app.get(&reader_key, "/v1/api-keys").await.expect_status(200);
    app.get(&reader_key, &format!("/v1/api-keys/{target}")).await.expect_status(200);

    let attempts: Vec<Resp> = vec![
        app.post(&reader_key, "/v1/api-keys", &json!({"name": "x"})).await,
        app.patch(&reader_key, &format!("/v1/api-keys/{target}"), &json!({"name": "x"})).await,
        app.post_empty(&reader_key, &format!("/v1/api-keys/{target}/revoke")).await,
        app.post_empty(&reader_key, &format!("/v1/api-keys/{target}/roll")).await,
        app.delete(&reader_key, &format!("/v1/api-keys/{target}")).await,
    ];
    for r in &attempts {
        assert_problem(r, 403, "insufficient_scope");
        assert_eq!(r.body["required_scope"], "api_keys:write", "{r:?}");
    }
    // Scope is checked before the body is read: a key without the scope learns nothing from
    // validation.
    let r = app.post(&reader_key, "/v1/api-keys", &json!({"nmae": 1})).await;
    assert_problem(&r, 403, "insufficient_scope");

    // write implies read.
    let writer = app.create_key(&p.key, json!({"name": "writer", "scopes": ["api_keys:write"]})).await;
    app.get(&str_of(&writer["key"]), "/v1/api-keys").await.expect_status(200);
    // Another resource's scope does not help.
    let tenants = app.create_key(&p.key, json!({"name": "tenants", "scopes": ["tenants:write"]})).await;
    let r = app.get(&str_of(&tenants["key"]), "/v1/api-keys").await;
    assert_problem(&r, 403, "insufficient_scope");
    assert_eq!(r.body["required_scope"], "api_keys:read");
}
both_backends!(read_only_key_cannot_write);

async fn key_allowlist_is_enforced(app: TestApp) {
    let p = app.partner("Acme").await;
    let elsewhere = app.client_from("127.0.0.2".parse().expect("an IP"));
    let pinned = app.create_key(&p.key, json!({"name": "pinned", "allowed_ips": ["127.0.0.2"]})).await;
    let nowhere = app.create_key(&p.key, json!({"name": "nowhere", "allowed_ips": []})).await;
    let cidr = app.create_key(&p.key, json!({"name": "cidr", "allowed_ips": ["127.0.0.0/30"]})).await;
    assert_eq!(nowhere["allowed_ips"], json!([]), "[] is kept: no IP at all, unlike null");

    let from_elsewhere = |key: &Value| send(elsewhere.get(app.url("/v1/account")).bearer_auth(str_of(&key["key"])));

    assert_problem(&app.get(&str_of(&pinned["key"]), "/v1/account").await, 403, "ip_not_allowed");
    from_elsewhere(&pinned).await.expect_status(200);
    assert_problem(&app.get(&str_of(&nowhere["key"]), "/v1/account").await, 403, "ip_not_allowed");
    assert_problem(&from_elsewhere(&nowhere).await, 403, "ip_not_allowed");
    app.get(&str_of(&cidr["key"]), "/v1/account").await.expect_status(200);
    from_elsewhere(&cidr).await.expect_status(200);
}
both_backends!(key_allowlist_is_enforced);

/// Without configured trusted proxies, `X-Forwarded-For` is the client's word, not its address:
/// it neither opens an allowlist nor lands in the audit log.
async fn forwarded_for_is_not_believed_without_trusted_proxies(app: TestApp) {
    let p = app.partner("Acme").await;
    let pinned = app.create_key(&p.key, json!({"name": "pinned", "allowed_ips": ["203.0.113.9"]})).await;
    let spoofed =
        |key: &str| send(app.request(Method::GET, "/v1/account", key).header("x-forwarded-for", "203.0.113.9"));
    assert_problem(&spoofed(&str_of(&pinned["key"])).await, 403, "ip_not_allowed");

    let r = send(
        app.request(Method::POST, "/v1/tenants", &p.key)
            .header("x-forwarded-for", "203.0.113.9")
            .json(&json!({"name": "T"})),
    )
    .await;
    let id = str_of(&r.expect_status(201)["id"]);
    assert_eq!(app.audit_event(&p.key, "tenant.created", &id).await["ip"], "127.0.0.1");
}
both_backends!(forwarded_for_is_not_believed_without_trusted_proxies);

/// SPEC §3: every change to a key takes effect on this node before the response returns, so a
/// credential cache must never answer with the key as it was.
async fn changes_to_a_key_take_effect_at_once(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "changing"})).await;
    let (id, key) = (str_of(&k["id"]), str_of(&k["key"]));
    let path = format!("/v1/api-keys/{id}");
    // Warm whatever cache there is.
    app.get(&key, "/v1/api-keys").await.expect_status(200);
    app.get(&key, "/v1/tenants").await.expect_status(200);

    app.patch(&p.key, &path, &json!({"scopes": ["api_keys:read"]})).await.expect_status(200);
    let r = app.get(&key, "/v1/tenants").await;
    assert_problem(&r, 403, "insufficient_scope");
    // The narrowed key is also bounded by its new scopes when it creates keys.
    let r = app.post(&key, "/v1/api-keys", &json!({"name": "x"})).await;
    assert_problem(&r, 403, "insufficient_scope");

    app.patch(&p.key, &path, &json!({"scopes": null, "allowed_ips": ["10.0.0.0/8"]})).await.expect_status(200);
    assert_problem(&app.get(&key, "/v1/api-keys").await, 403, "ip_not_allowed");

    app.patch(&p.key, &path, &json!({"allowed_ips": null, "rate_limit_per_minute": 10})).await.expect_status(200);
    let r = app.post(&key, "/v1/api-keys", &json!({"name": "x", "rate_limit_per_minute": 11})).await;
    assert_problem(&r, 403, "insufficient_scope");
    assert_eq!(r.body["exceeds"], "rate_limit_per_minute");

    let tenant = str_of(&app.create_tenant(&p.key, json!({"name": "T"})).await["id"]);
    app.patch(&p.key, &path, &json!({"tenant_ids": [tenant]})).await.expect_status(200);
    assert_problem(&app.post(&key, "/v1/tenants", &json!({"name": "U"})).await, 403, "tenant_not_allowed");

    app.post_empty(&p.key, &format!("{path}/revoke")).await.expect_status(200);
    assert_problem(&app.get(&key, "/v1/api-keys").await, 401, "api_key_revoked");
}
both_backends!(changes_to_a_key_take_effect_at_once);

fn small_caps(config: &mut keygate::Config) {
    config.limits.max_keys_per_account = 3;
    config.limits.max_tenants_per_account = 2;
}

/// OWASP API4: an account holds at most `max_keys_per_account` keys and
/// `max_tenants_per_account` tenants; past that, 409 `conflict` saying what to do, nothing made.
async fn accounts_cannot_grow_without_bound(app: TestApp) {
    let p = app.partner("Acme").await;
    // The partner's first key is one of three.
    let second = app.create_key(&p.key, json!({"name": "two"})).await;
    let third = app.create_key(&p.key, json!({"name": "three"})).await;
    let refused = app.post(&p.key, "/v1/api-keys", &json!({"name": "four"})).await;
    assert_problem(&refused, 409, "conflict");
    let detail = str_of(&refused.body["detail"]);
    assert!(detail.contains("3 API keys") && detail.contains("max_keys_per_account"), "{detail}");
    // A roll makes a key too; revoked keys still count; deleting one makes room.
    let roll = app.post(&p.key, &format!("/v1/api-keys/{}/roll", str_of(&second["id"])), &json!({})).await;
    assert_problem(&roll, 409, "conflict");
    assert_eq!(
        app.post(&p.key, &format!("/v1/api-keys/{}/revoke", str_of(&third["id"])), &json!({})).await.status,
        200
    );
    assert_problem(&app.post(&p.key, "/v1/api-keys", &json!({"name": "four"})).await, 409, "conflict");
    assert_eq!(app.delete(&p.key, &format!("/v1/api-keys/{}", str_of(&third["id"]))).await.status, 204);
    assert_eq!(app.post(&p.key, "/v1/api-keys", &json!({"name": "four"})).await.status, 201);
    // Another account has its own allowance.
    let other = app.partner("Globex").await;
    assert_eq!(app.post(&other.key, "/v1/api-keys", &json!({"name": "two"})).await.status, 201);

    app.create_tenant(&p.key, json!({"name": "one"})).await;
    app.create_tenant(&p.key, json!({"name": "two"})).await;
    let refused = app.post(&p.key, "/v1/tenants", &json!({"name": "three"})).await;
    assert_problem(&refused, 409, "conflict");
    assert!(str_of(&refused.body["detail"]).contains("max_tenants_per_account"), "{refused:?}");
    let listed = list_data(app.get(&p.key, "/v1/tenants?limit=100").await.expect_status(200));
    assert_eq!(listed.len(), 2, "nothing was made");
}
both_backends_with!(small_caps; accounts_cannot_grow_without_bound);

/// A body declared as something other than JSON is refused, not guessed at; a time past year
/// 9999 (RFC 3339 years have four digits) is refused, not stored as an expired key.
async fn bodies_must_be_json_and_times_rfc3339(app: TestApp) {
    let p = app.partner("Acme").await;
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let r = send(
            app.request(Method::POST, "/v1/api-keys", &p.key)
                .header("content-type", content_type)
                .body(r#"{"name": "typed"}"#),
        )
        .await;
        assert_problem(&r, 400, "invalid_request");
        assert!(r.body["detail"].as_str().is_some_and(|d| d.contains("application/json")), "{r:?}");
    }
    for content_type in ["application/json", "application/json; charset=utf-8", "application/merge-patch+json"] {
        let r = send(
            app.request(Method::POST, "/v1/api-keys", &p.key)
                .header("content-type", content_type)
                .body(r#"{"name": "typed"}"#),
        )
        .await;
        assert_eq!(r.status, 201, "{content_type}: {r:?}");
    }
    let r = app.post(&p.key, "/v1/api-keys", &json!({"name": "far", "expires_at": "+10000-01-01T00:00:00Z"})).await;
    assert_invalid_fields(&r, &["expires_at"]);
    let r = app.post(&p.key, "/v1/api-keys", &json!({"name": "edge", "expires_at": "9999-12-31T23:59:59Z"})).await;
    assert_eq!(r.expect_status(201)["status"], "active");
}
both_backends!(bodies_must_be_json_and_times_rfc3339);

/// Refusals say what to do next.
async fn refusals_say_what_to_do(app: TestApp) {
    let p = app.partner("Acme").await;
    let r = send(app.client.get(app.url("/v1/api-keys"))).await;
    assert_problem(&r, 401, "missing_api_key");
    assert!(str_of(&r.body["detail"]).contains("Authorization: Bearer"), "{r:?}");
    let r = app.post(&p.key, "/v1/api-keys", &json!({"name": "k", "expires_at": "tomorrow"})).await;
    assert_invalid_fields(&r, &["expires_at"]);
    assert!(r.text.contains("RFC 3339"), "{r:?}");
    let r = app.post(&p.key, "/v1/api-keys", &json!({"name": "k", "scopes": ["accounts:read"]})).await;
    assert_invalid_fields(&r, &["scopes[0]"]);
    assert!(r.text.contains("operator account only"), "{r:?}");
}
both_backends!(refusals_say_what_to_do);
