//! SPEC §6 over real HTTP: `Idempotency-Key` on the management POSTs that create (keys,
//! tenants, accounts) and roll keys.

#[macro_use]
mod common;

use common::{Resp, TestApp, assert_problem, list_data, send, str_of};
use reqwest::Method;
use serde_json::{Value, json};

async fn post_idem(app: &TestApp, key: &str, path: &str, idem: &str, body: &Value) -> Resp {
    send(app.request(Method::POST, path, key).header("idempotency-key", idem).json(body)).await
}

async fn keys_named(app: &TestApp, key: &str, name: &str) -> usize {
    list_data(app.get(key, &format!("/v1/api-keys?name={name}&limit=100")).await.expect_status(200)).len()
}

both_backends!(
    a_retry_replays_the_first_response_byte_for_byte,
    concurrent_duplicates_execute_once,
    the_same_key_with_another_request_is_refused,
    two_accounts_never_share_a_key,
    refusals_are_not_stored_and_a_corrected_retry_executes,
    the_header_must_be_printable_ascii,
    a_roll_is_idempotent_too,
    tenants_and_accounts_are_idempotent,
);
sqlite_only!(stored_responses_are_sealed_at_rest);

async fn a_retry_replays_the_first_response_byte_for_byte(app: TestApp) {
    let p = app.partner("Acme").await;
    let body = json!({"name": "crm-sync", "scopes": ["calls:read"]});
    let first = post_idem(&app, &p.key, "/v1/api-keys", "retry-1", &body).await;
    assert_eq!(first.status, 201, "{first:?}");
    assert!(first.header("idempotent-replayed").is_none());
    let again = post_idem(&app, &p.key, "/v1/api-keys", "retry-1", &body).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.text, first.text, "byte-identical, plaintext key included");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("content-type"), Some("application/json"));
    assert_eq!(keys_named(&app, &p.key, "crm-sync").await, 1, "executed once");
    // Another server on the same database (a restart, or another node) replays it too.
    let node = app.start_node(|_| {}).await;
    let elsewhere =
        send(node.request(Method::POST, "/v1/api-keys", &p.key).header("idempotency-key", "retry-1").json(&body)).await;
    assert_eq!(elsewhere.status, 201);
    assert_eq!(elsewhere.text, first.text);
    assert_eq!(elsewhere.header("idempotent-replayed"), Some("true"));
    assert_eq!(keys_named(&app, &p.key, "crm-sync").await, 1);
}

async fn concurrent_duplicates_execute_once(app: TestApp) {
    let p = app.partner("Acme").await;
    let body = json!({"name": "parallel"});
    let requests: Vec<_> = (0..12).map(|_| post_idem(&app, &p.key, "/v1/api-keys", "same-key", &body)).collect();
    let results = common::join_all(requests).await;
    let created: Vec<&Resp> = results.iter().filter(|r| r.status == 201).collect();
    assert!(!created.is_empty());
    for r in &results {
        match r.status {
            201 => assert_eq!(r.text, created[0].text, "every 201 is the one execution's response"),
            409 => assert_problem(r, 409, "idempotency_in_progress"),
            other => panic!("unexpected {other}: {r:?}"),
        }
    }
    assert_eq!(keys_named(&app, &p.key, "parallel").await, 1, "exactly one execution");
    let events = app.audit_events(&p.key, &[("action", "api_key.created")]).await;
    assert_eq!(events.iter().filter(|e| e["changes"]["name"] == "parallel").count(), 1);
}

async fn the_same_key_with_another_request_is_refused(app: TestApp) {
    let p = app.partner("Acme").await;
    assert_eq!(post_idem(&app, &p.key, "/v1/api-keys", "k", &json!({"name": "one"})).await.status, 201);
    let other_body = post_idem(&app, &p.key, "/v1/api-keys", "k", &json!({"name": "two"})).await;
    assert_problem(&other_body, 422, "idempotency_key_reused");
    let other_path = post_idem(&app, &p.key, "/v1/tenants", "k", &json!({"name": "one"})).await;
    assert_problem(&other_path, 422, "idempotency_key_reused");
    assert_eq!(keys_named(&app, &p.key, "two").await, 0);
}

async fn two_accounts_never_share_a_key(app: TestApp) {
    let a = app.partner("A").await;
    let b = app.partner("B").await;
    let ra = post_idem(&app, &a.key, "/v1/api-keys", "shared", &json!({"name": "same"})).await;
    let rb = post_idem(&app, &b.key, "/v1/api-keys", "shared", &json!({"name": "same"})).await;
    assert_eq!((ra.status, rb.status), (201, 201));
    assert!(rb.header("idempotent-replayed").is_none(), "B executes its own request");
    assert_ne!(ra.body["key"], rb.body["key"]);
    assert_eq!(rb.body["id"].as_str().map(|s| s.starts_with("key_")), Some(true));
    assert_eq!(keys_named(&app, &b.key, "same").await, 1);
}

async fn refusals_are_not_stored_and_a_corrected_retry_executes(app: TestApp) {
    let p = app.partner("Acme").await;
    let bad = post_idem(&app, &p.key, "/v1/api-keys", "fixme", &json!({"name": "x", "scopes": ["nope:read"]})).await;
    assert_problem(&bad, 422, "validation_failed");
    let broken =
        send(app.request(Method::POST, "/v1/api-keys", &p.key).header("idempotency-key", "fixme").body("{\"name\": "))
            .await;
    assert_problem(&broken, 400, "invalid_request");
    let unauthorized = post_idem(&app, "sk_live_nope", "/v1/api-keys", "fixme", &json!({"name": "x"})).await;
    assert_problem(&unauthorized, 401, "invalid_api_key");
    let fixed = post_idem(&app, &p.key, "/v1/api-keys", "fixme", &json!({"name": "x", "scopes": ["calls:read"]})).await;
    assert_eq!(fixed.status, 201, "{fixed:?}");
    assert!(fixed.header("idempotent-replayed").is_none());
}

async fn the_header_must_be_printable_ascii(app: TestApp) {
    let p = app.partner("Acme").await;
    let too_long = post_idem(&app, &p.key, "/v1/api-keys", &"x".repeat(256), &json!({"name": "n"})).await;
    assert_problem(&too_long, 400, "invalid_request");
    let control = send(
        app.request(Method::POST, "/v1/api-keys", &p.key)
            .header("idempotency-key", reqwest::header::HeaderValue::from_bytes(b"tab\there").expect("a header value"))
            .json(&json!({"name": "n"})),
    )
    .await;
    assert_problem(&control, 400, "invalid_request");
    assert_eq!(post_idem(&app, &p.key, "/v1/api-keys", &"x".repeat(255), &json!({"name": "n"})).await.status, 201);
}

async fn a_roll_is_idempotent_too(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "to-roll"})).await;
    let path = format!("/v1/api-keys/{}/roll", str_of(&k["id"]));
    let first = send(app.request(Method::POST, &path, &p.key).header("idempotency-key", "roll-1")).await;
    assert_eq!(first.status, 201, "{first:?}");
    let again = send(app.request(Method::POST, &path, &p.key).header("idempotency-key", "roll-1")).await;
    assert_eq!(again.text, first.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let rolls = app
        .audit_events(&p.key, &[("action", "api_key.rolled"), ("target_id", k["id"].as_str().unwrap_or_default())])
        .await;
    assert_eq!(rolls.len(), 1, "rolled once");
}

async fn tenants_and_accounts_are_idempotent(app: TestApp) {
    let p = app.partner("Acme").await;
    let t1 = post_idem(&app, &p.key, "/v1/tenants", "t", &json!({"name": "Clinic"})).await;
    let t2 = post_idem(&app, &p.key, "/v1/tenants", "t", &json!({"name": "Clinic"})).await;
    assert_eq!((t1.status, t2.text.as_str()), (201, t1.text.as_str()));
    assert_eq!(t2.header("idempotent-replayed"), Some("true"));
    let a1 = post_idem(&app, &app.operator_key, "/v1/accounts", "acct", &json!({"name": "Globex"})).await;
    let a2 = post_idem(&app, &app.operator_key, "/v1/accounts", "acct", &json!({"name": "Globex"})).await;
    assert_eq!((a1.status, a2.text.as_str()), (201, a1.text.as_str()));
    assert_eq!(a2.header("idempotent-replayed"), Some("true"));
}

async fn stored_responses_are_sealed_at_rest(app: TestApp) {
    let p = app.partner("Acme").await;
    let r = post_idem(&app, &p.key, "/v1/api-keys", "sealed", &json!({"name": "secret-holder"})).await;
    assert_eq!(r.status, 201);
    let plaintext = str_of(&r.body["key"]);
    let dir = app.db_dir.as_ref().expect("SQLite keeps its files in a directory");
    for file in ["keygate.db", "keygate.db-wal", "keygate.db-shm"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        assert!(!bytes.windows(plaintext.len()).any(|w| w == plaintext.as_bytes()), "{file} holds the plaintext key");
    }
}

/// SPEC §6: a record is bound to the principal that made it. A narrower key of the same account
/// replaying a wider key's Idempotency-Key must get 422, never the stored response (which holds a
/// plaintext key the narrower one could not have made).
async fn another_principal_cannot_replay_what_a_wider_one_created(app: TestApp) {
    let p = app.partner("Acme").await;
    let narrow = app
        .create_key(&p.key, json!({"name": "narrow", "scopes": ["api_keys:write", "api_keys:read", "tenants:read"]}))
        .await;
    let narrow_key = str_of(&narrow["key"]);
    let body = json!({"name": "billing", "scopes": ["billing:write"]});
    let first = post_idem(&app, &p.key, "/v1/api-keys", "ik-1", &body).await;
    assert_eq!(first.status, 201, "{first:?}");
    let plaintext = str_of(&first.body["key"]);

    let stolen = post_idem(&app, &narrow_key, "/v1/api-keys", "ik-1", &body).await;
    assert_problem(&stolen, 422, "idempotency_key_reused");
    assert!(!stolen.text.contains(&plaintext), "no part of the stored response: {stolen:?}");
    assert!(stolen.header("idempotent-replayed").is_none());
    // The one that made it still replays it.
    let again = post_idem(&app, &p.key, "/v1/api-keys", "ik-1", &body).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (201, Some("true")));
    assert_eq!(keys_named(&app, &p.key, "billing").await, 1);

    // Rolls are bound the same way.
    let target = app.create_key(&p.key, json!({"name": "rolled", "scopes": ["calls:read"]})).await;
    let roll_path = format!("/v1/api-keys/{}/roll", str_of(&target["id"]));
    let rolled = post_idem(&app, &p.key, &roll_path, "ik-roll", &json!({})).await;
    assert_eq!(rolled.status, 201, "{rolled:?}");
    let stolen_roll = post_idem(&app, &narrow_key, &roll_path, "ik-roll", &json!({})).await;
    assert_problem(&stolen_roll, 422, "idempotency_key_reused");
    assert!(!stolen_roll.text.contains(&str_of(&rolled.body["key"])));
    // And the record stays bound after the wider key is gone: the narrower one still gets 422.
    assert_eq!(
        app.post(&p.key, &format!("/v1/api-keys/{}/revoke", str_of(&narrow["id"])), &json!({})).await.status,
        200
    );
}

/// Responses that carry a plaintext key, and their replays, are never cacheable (SPEC §2); so is
/// every other answer of keygate's own API.
async fn responses_with_a_plaintext_key_are_no_store(app: TestApp) {
    let p = app.partner("Acme").await;
    let created = post_idem(&app, &p.key, "/v1/api-keys", "ns-1", &json!({"name": "ns"})).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let replay = post_idem(&app, &p.key, "/v1/api-keys", "ns-1", &json!({"name": "ns"})).await;
    assert_eq!(
        (replay.header("idempotent-replayed"), replay.header("cache-control")),
        (Some("true"), Some("no-store"))
    );
    let rolled = app.post(&p.key, &format!("/v1/api-keys/{}/roll", str_of(&created.body["id"])), &json!({})).await;
    assert_eq!((rolled.status, rolled.header("cache-control")), (201, Some("no-store")));
    let account = app.post(&app.operator_key, "/v1/accounts", &json!({"name": "Beta"})).await;
    assert_eq!((account.status, account.header("cache-control")), (201, Some("no-store")));
    let listed = app.get(&p.key, "/v1/api-keys").await;
    assert_eq!((listed.status, listed.header("cache-control")), (200, Some("no-store")));
    let refused = app.get("sk_live_nope", "/v1/api-keys").await;
    assert_eq!((refused.status, refused.header("cache-control")), (401, Some("no-store")));
}

both_backends!(another_principal_cannot_replay_what_a_wider_one_created, responses_with_a_plaintext_key_are_no_store);
