//! Account isolation (BOLA): another account's objects do not exist for the caller. Every object
//! endpoint answers 404 `not_found` (never 403, which would confirm the id), changes nothing, and
//! no list or log shows another account's objects.

#[macro_use]
mod common;

use common::{Resp, TestApp, assert_invalid_fields, assert_problem, ids, list_data, str_of};
use serde_json::{Value, json};

async fn another_accounts_keys_do_not_exist(app: TestApp) {
    let a = app.partner("Acme").await;
    let b = app.partner("Globex").await;
    let k = app.create_key(&a.key, json!({"name": "A's key"})).await;
    let (id, plaintext) = (str_of(&k["id"]), str_of(&k["key"]));
    let path = format!("/v1/api-keys/{id}");

    let attempts: Vec<(&str, Resp)> = vec![
        ("GET key", app.get(&b.key, &path).await),
        ("PATCH key", app.patch(&b.key, &path, &json!({"name": "mine now"})).await),
        ("revoke", app.post(&b.key, &format!("{path}/revoke"), &json!({"reason": "x"})).await),
        ("roll", app.post(&b.key, &format!("{path}/roll"), &json!({"grace_period_seconds": 0})).await),
        ("DELETE key", app.delete(&b.key, &path).await),
        ("lookup", app.post(&b.key, "/v1/api-keys/lookup", &json!({"key": plaintext})).await),
        ("lookup A's first key", app.post(&b.key, "/v1/api-keys/lookup", &json!({"key": a.key})).await),
        ("GET A's first key", app.get(&b.key, &format!("/v1/api-keys/{}", a.key_id)).await),
    ];
    for (what, r) in &attempts {
        assert_problem(r, 404, "not_found");
        assert!(!r.text.contains("A's key"), "{what} leaks nothing: {r:?}");
    }

    // Nothing changed: A's key is as it was, and still works.
    let after = app.get(&a.key, &path).await.expect_status(200);
    assert_eq!(after["name"], "A's key");
    assert_eq!(after["status"], "active");
    assert_eq!(after["expires_at"], Value::Null);
    app.get(&plaintext, "/v1/account").await.expect_status(200);
    let a_keys = ids(&list_data(app.get(&a.key, "/v1/api-keys").await.expect_status(200)));
    assert_eq!(a_keys.len(), 2, "no key was added by a roll: {a_keys:?}");
}
both_backends!(another_accounts_keys_do_not_exist);

async fn another_accounts_tenants_do_not_exist(app: TestApp) {
    let a = app.partner("Acme").await;
    let b = app.partner("Globex").await;
    let t = app.create_tenant(&a.key, json!({"name": "A's tenant", "external_id": "a-1"})).await;
    let id = str_of(&t["id"]);
    let path = format!("/v1/tenants/{id}");

    let attempts = [
        app.get(&b.key, &path).await,
        app.patch(&b.key, &path, &json!({"name": "mine now"})).await,
        app.post_empty(&b.key, &format!("{path}/suspend")).await,
        app.post_empty(&b.key, &format!("{path}/unsuspend")).await,
    ];
    for r in &attempts {
        assert_problem(r, 404, "not_found");
        assert!(!r.text.contains("A's tenant"), "{r:?}");
    }
    assert_eq!(app.get(&a.key, &path).await.expect_status(200), t, "unchanged");

    // B cannot scope a key to A's tenant, nor find keys by it.
    let r = app.post(&b.key, "/v1/api-keys", &json!({"name": "x", "tenant_ids": [id]})).await;
    assert_invalid_fields(&r, &["tenant_ids[0]"]);
    let r = app.get(&b.key, &format!("/v1/api-keys?tenant_id={id}")).await;
    assert!(list_data(r.expect_status(200)).is_empty());
    // Nor find it by its external id.
    assert!(list_data(app.get(&b.key, "/v1/tenants?external_id=a-1").await.expect_status(200)).is_empty());
}
both_backends!(another_accounts_tenants_do_not_exist);

async fn lists_and_logs_show_only_own_objects(app: TestApp) {
    let a = app.partner("Acme").await;
    let b = app.partner("Globex").await;
    let a_key = app.create_key(&a.key, json!({"name": "shared name"})).await;
    let a_tenant = app.create_tenant(&a.key, json!({"name": "shared tenant"})).await;
    app.patch(&a.key, &format!("/v1/tenants/{}", str_of(&a_tenant["id"])), &json!({"name": "A renamed"}))
        .await
        .expect_status(200);
    let b_key = app.create_key(&b.key, json!({"name": "shared name"})).await;
    let b_tenant = app.create_tenant(&b.key, json!({"name": "shared tenant"})).await;

    let a_ids = [a.key_id.clone(), str_of(&a_key["id"]), str_of(&a_tenant["id"]), a.account_id.clone()];
    let b_ids = [b.key_id.clone(), str_of(&b_key["id"]), str_of(&b_tenant["id"]), b.account_id.clone()];

    for (p, own, foreign) in [(&a, &a_ids, &b_ids), (&b, &b_ids, &a_ids)] {
        let keys = app.get(&p.key, "/v1/api-keys?limit=100").await;
        let by_name = app.get(&p.key, "/v1/api-keys?name=shared").await;
        let tenants = app.get(&p.key, "/v1/tenants?limit=100").await;
        let events = app.get(&p.key, "/v1/audit-events?limit=100").await;
        for r in [&keys, &by_name, &tenants, &events] {
            assert_eq!(r.status, 200, "{r:?}");
            for id in foreign {
                assert!(!r.text.contains(id.as_str()), "{id} of another account in {r:?}");
            }
        }
        assert_eq!(ids(&list_data(keys.body.clone())).len(), 2);
        assert_eq!(ids(&list_data(by_name.body.clone())), vec![own[1].clone()]);
        assert_eq!(ids(&list_data(tenants.body.clone())), vec![own[2].clone()]);
        let log = list_data(events.body.clone());
        assert!(!log.is_empty());
        for e in &log {
            assert!(own.iter().any(|id| e["actor_id"] == id.as_str()), "only own keys act in own log: {e}");
        }
    }
    // A's audit log has A's tenant update; B's has none of it.
    let b_log = app.audit_events(&b.key, &[("target_id", &str_of(&a_tenant["id"]))]).await;
    assert!(b_log.is_empty());
    let b_log = app.audit_events(&b.key, &[("actor_id", &a.key_id)]).await;
    assert!(b_log.is_empty());
}
both_backends!(lists_and_logs_show_only_own_objects);

async fn cursors_do_not_cross_accounts(app: TestApp) {
    let a = app.partner("Acme").await;
    let b = app.partner("Globex").await;
    for i in 0..3 {
        app.create_key(&a.key, json!({"name": format!("a{i}")})).await;
    }
    let page = app.get(&a.key, "/v1/api-keys?limit=1").await.expect_status(200);
    let cursor = str_of(&page["next_cursor"]);
    // B replaying A's cursor sees B's own keys at most.
    let r = app.get(&b.key, &format!("/v1/api-keys?cursor={cursor}")).await;
    for k in list_data(r.expect_status(200)) {
        assert_ne!(k["name"].as_str().map(|n| n.starts_with('a')), Some(true), "{k}");
    }
}
both_backends!(cursors_do_not_cross_accounts);
