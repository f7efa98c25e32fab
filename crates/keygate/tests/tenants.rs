//! `/v1/tenants`: a partner's end customers, and what a tenant-scoped key may do with them.

#[macro_use]
mod common;

use common::{TestApp, assert_invalid_fields, assert_problem, ids, is_id, is_timestamp, list_data, send, str_of};
use reqwest::Method;
use serde_json::{Value, json};

#[track_caller]
fn assert_tenant_fields(t: &Value) {
    let mut fields: Vec<&str> = t.as_object().expect("a tenant object").keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["created_at", "external_id", "id", "metadata", "name", "status", "updated_at"], "{t}");
}

async fn create_and_get_a_tenant(app: TestApp) {
    let p = app.partner("Acme").await;
    let t = app
        .create_tenant(
            &p.key,
            json!({"name": "Northwind Clinic", "external_id": "crm-42", "metadata": {"tier": "gold"}}),
        )
        .await;
    assert_tenant_fields(&t);
    assert!(is_id(&str_of(&t["id"]), "ten"), "{}", t["id"]);
    assert_eq!(t["name"], "Northwind Clinic");
    assert_eq!(t["external_id"], "crm-42");
    assert_eq!(t["status"], "active");
    assert_eq!(t["metadata"], json!({"tier": "gold"}));
    assert!(is_timestamp(&str_of(&t["created_at"])) && is_timestamp(&str_of(&t["updated_at"])));

    let got = app.get(&p.key, &format!("/v1/tenants/{}", str_of(&t["id"]))).await.expect_status(200);
    assert_eq!(got, t);

    let minimal = app.create_tenant(&p.key, json!({"name": "Minimal"})).await;
    assert_eq!(minimal["external_id"], Value::Null);
    assert_eq!(minimal["metadata"], json!({}));

    for id in ["ten_01JABCDEFGHJKMNPQRSTVWXYZ0", "northwind", "key_01JABCDEFGHJKMNPQRSTVWXYZ0"] {
        assert_problem(&app.get(&p.key, &format!("/v1/tenants/{id}")).await, 404, "not_found");
    }
}
both_backends!(create_and_get_a_tenant);

async fn create_names_each_invalid_field(app: TestApp) {
    let p = app.partner("Acme").await;
    let cases: Vec<(Value, &[&str])> = vec![
        (json!({"name": ""}), &["name"]),
        (json!({"name": "x".repeat(201)}), &["name"]),
        (json!({}), &["name"]),
        (json!({"name": "t", "external_id": ""}), &["external_id"]),
        (json!({"name": "t", "external_id": "x".repeat(256)}), &["external_id"]),
        (json!({"name": "t", "status": "active"}), &["status"]),
        (json!({"name": "t", "metadata": "gold"}), &["metadata"]),
        (json!({"name": "t", "metadata": {"k": "x".repeat(600)}}), &["metadata.k"]),
    ];
    for (body, fields) in cases {
        assert_invalid_fields(&app.post(&p.key, "/v1/tenants", &body).await, fields);
    }
    let r = send(app.request(Method::POST, "/v1/tenants", &p.key).header("content-type", "application/json").body("{"))
        .await;
    assert_problem(&r, 400, "invalid_request");
    assert!(list_data(app.get(&p.key, "/v1/tenants").await.expect_status(200)).is_empty());
}
both_backends!(create_names_each_invalid_field);

async fn external_id_is_unique_per_account(app: TestApp) {
    let a = app.partner("Acme").await;
    let b = app.partner("Globex").await;
    let first = app.create_tenant(&a.key, json!({"name": "One", "external_id": "crm-1"})).await;

    let r = app.post(&a.key, "/v1/tenants", &json!({"name": "Two", "external_id": "crm-1"})).await;
    assert_problem(&r, 409, "conflict");

    // Another account may use the same external id.
    let other = app.create_tenant(&b.key, json!({"name": "Elsewhere", "external_id": "crm-1"})).await;
    assert_eq!(other["external_id"], "crm-1");

    // Changing another tenant to a taken external id conflicts too; releasing it frees it.
    let second = app.create_tenant(&a.key, json!({"name": "Two", "external_id": "crm-2"})).await;
    let second_path = format!("/v1/tenants/{}", str_of(&second["id"]));
    assert_problem(&app.patch(&a.key, &second_path, &json!({"external_id": "crm-1"})).await, 409, "conflict");
    let first_path = format!("/v1/tenants/{}", str_of(&first["id"]));
    let released = app.patch(&a.key, &first_path, &json!({"external_id": null})).await.expect_status(200);
    assert_eq!(released["external_id"], Value::Null);
    let moved = app.patch(&a.key, &second_path, &json!({"external_id": "crm-1"})).await.expect_status(200);
    assert_eq!(moved["external_id"], "crm-1");

    // Tenants without an external id do not collide with each other.
    app.create_tenant(&a.key, json!({"name": "No id 1"})).await;
    app.create_tenant(&a.key, json!({"name": "No id 2"})).await;
}
both_backends!(external_id_is_unique_per_account);

async fn list_filters_and_paginates(app: TestApp) {
    let p = app.partner("Acme").await;
    let mut created = Vec::new();
    for i in 0..5 {
        created
            .push(app.create_tenant(&p.key, json!({"name": format!("t{i}"), "external_id": format!("ext-{i}")})).await);
    }
    let suspended = str_of(&created[1]["id"]);
    app.post_empty(&p.key, &format!("/v1/tenants/{suspended}/suspend")).await.expect_status(200);

    let body = app.get(&p.key, "/v1/tenants").await.expect_status(200);
    assert_eq!(body["next_cursor"], Value::Null);
    let all = ids(&list_data(body));
    let mut expected: Vec<String> = created.iter().map(|t| str_of(&t["id"])).collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(all, expected, "newest first");

    let by_status = ids(&list_data(app.get(&p.key, "/v1/tenants?status=suspended").await.expect_status(200)));
    assert_eq!(by_status, vec![suspended.clone()]);
    let active = ids(&list_data(app.get(&p.key, "/v1/tenants?status=active").await.expect_status(200)));
    assert_eq!(active.len(), 4);
    assert!(!active.contains(&suspended));
    let by_ext = list_data(app.get(&p.key, "/v1/tenants?external_id=ext-3").await.expect_status(200));
    assert_eq!(ids(&by_ext), vec![str_of(&created[3]["id"])]);
    assert!(list_data(app.get(&p.key, "/v1/tenants?external_id=ext").await.expect_status(200)).is_empty(), "exact");

    let first = app.get(&p.key, "/v1/tenants?limit=3").await.expect_status(200);
    let cursor = str_of(&first["next_cursor"]);
    let second = app.get(&p.key, &format!("/v1/tenants?limit=3&cursor={cursor}")).await.expect_status(200);
    assert_eq!(second["next_cursor"], Value::Null);
    let mut paged = ids(&list_data(first));
    paged.extend(ids(&list_data(second)));
    assert_eq!(paged, all);

    assert_invalid_fields(&app.get(&p.key, "/v1/tenants?status=gone").await, &["status"]);
    assert_invalid_fields(&app.get(&p.key, "/v1/tenants?limit=0").await, &["limit"]);
    assert_invalid_fields(&app.get(&p.key, "/v1/tenants?limit=101").await, &["limit"]);
    assert_problem(&app.get(&p.key, "/v1/tenants?cursor=nope").await, 400, "invalid_request");
}
both_backends!(list_filters_and_paginates);

async fn a_page_holds_twenty_by_default(app: TestApp) {
    let p = app.partner("Acme").await;
    for i in 0..21 {
        app.create_tenant(&p.key, json!({"name": format!("t{i}")})).await;
    }
    let first = app.get(&p.key, "/v1/tenants").await.expect_status(200);
    let cursor = str_of(&first["next_cursor"]);
    assert_eq!(list_data(first).len(), 20);
    let rest = app.get(&p.key, &format!("/v1/tenants?cursor={cursor}")).await.expect_status(200);
    assert_eq!(rest["next_cursor"], Value::Null);
    assert_eq!(list_data(rest).len(), 1);
}
both_backends!(a_page_holds_twenty_by_default);

async fn patch_changes_name_external_id_and_merges_metadata(app: TestApp) {
    let p = app.partner("Acme").await;
    let t = app
        .create_tenant(&p.key, json!({"name": "Before", "external_id": "e1", "metadata": {"a": "1", "b": "2"}}))
        .await;
    let id = str_of(&t["id"]);
    let path = format!("/v1/tenants/{id}");

    let r = app
        .patch(&p.key, &path, &json!({"name": "After", "external_id": "e2", "metadata": {"b": null, "c": "3"}}))
        .await;
    let request_id = r.request_id().to_owned();
    let patched = r.expect_status(200);
    assert_tenant_fields(&patched);
    assert_eq!(patched["name"], "After");
    assert_eq!(patched["external_id"], "e2");
    assert_eq!(patched["metadata"], json!({"a": "1", "c": "3"}));
    assert_eq!(patched["created_at"], t["created_at"]);
    assert_eq!(app.get(&p.key, &path).await.expect_status(200), patched);

    let event = app.audit_event(&p.key, "tenant.updated", &id).await;
    assert_eq!(event["request_id"], request_id.as_str());
    assert_eq!(event["changes"]["name"], json!({"from": "Before", "to": "After"}));
    assert_eq!(event["changes"]["external_id"], json!({"from": "e1", "to": "e2"}));
    assert_eq!(event["changes"]["metadata"], json!({"from": {"a": "1", "b": "2"}, "to": {"a": "1", "c": "3"}}));

    let cleared = app.patch(&p.key, &path, &json!({"external_id": null})).await.expect_status(200);
    assert_eq!(cleared["external_id"], Value::Null);

    let unchanged = app.patch(&p.key, &path, &json!({})).await.expect_status(200);
    assert_eq!(unchanged, cleared);

    assert_invalid_fields(&app.patch(&p.key, &path, &json!({"name": ""})).await, &["name"]);
    assert_invalid_fields(&app.patch(&p.key, &path, &json!({"status": "suspended"})).await, &["status"]);
    assert_problem(
        &app.patch(&p.key, "/v1/tenants/ten_01JABCDEFGHJKMNPQRSTVWXYZ0", &json!({"name": "x"})).await,
        404,
        "not_found",
    );
}
both_backends!(patch_changes_name_external_id_and_merges_metadata);

async fn suspend_and_unsuspend(app: TestApp) {
    let p = app.partner("Acme").await;
    let t = app.create_tenant(&p.key, json!({"name": "Northwind"})).await;
    let id = str_of(&t["id"]);

    let s = app.post_empty(&p.key, &format!("/v1/tenants/{id}/suspend")).await.expect_status(200);
    assert_tenant_fields(&s);
    assert_eq!(s["status"], "suspended");
    assert_eq!(app.get(&p.key, &format!("/v1/tenants/{id}")).await.expect_status(200)["status"], "suspended");
    // Suspending twice is a no-op.
    let again = app.post_empty(&p.key, &format!("/v1/tenants/{id}/suspend")).await.expect_status(200);
    assert_eq!(again, s);

    let u = app.post_empty(&p.key, &format!("/v1/tenants/{id}/unsuspend")).await.expect_status(200);
    assert_eq!(u["status"], "active");
    let again = app.post_empty(&p.key, &format!("/v1/tenants/{id}/unsuspend")).await.expect_status(200);
    assert_eq!(again, u);

    let events = app.audit_events(&p.key, &[("target_id", &id)]).await;
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap_or_default()).collect();
    assert_eq!(actions, ["tenant.unsuspended", "tenant.suspended", "tenant.created"], "one event per change");

    for action in ["suspend", "unsuspend"] {
        let r = app.post_empty(&p.key, &format!("/v1/tenants/ten_01JABCDEFGHJKMNPQRSTVWXYZ0/{action}")).await;
        assert_problem(&r, 404, "not_found");
    }
}
both_backends!(suspend_and_unsuspend);

async fn tenant_scoped_key_sees_only_its_tenants(app: TestApp) {
    let p = app.partner("Acme").await;
    let mine = str_of(&app.create_tenant(&p.key, json!({"name": "Mine"})).await["id"]);
    let theirs = str_of(&app.create_tenant(&p.key, json!({"name": "Theirs"})).await["id"]);
    let scoped = app.create_key(&p.key, json!({"name": "scoped", "tenant_ids": [mine]})).await;
    assert_eq!(scoped["scopes"], Value::Null);
    let key = str_of(&scoped["key"]);

    app.get(&key, &format!("/v1/tenants/{mine}")).await.expect_status(200);
    let listed = ids(&list_data(app.get(&key, "/v1/tenants").await.expect_status(200)));
    assert_eq!(listed, vec![mine.clone()]);
    app.patch(&key, &format!("/v1/tenants/{mine}"), &json!({"name": "Still mine"})).await.expect_status(200);

    let refused = [
        app.get(&key, &format!("/v1/tenants/{theirs}")).await,
        app.patch(&key, &format!("/v1/tenants/{theirs}"), &json!({"name": "x"})).await,
        app.post_empty(&key, &format!("/v1/tenants/{theirs}/suspend")).await,
        app.post_empty(&key, &format!("/v1/tenants/{theirs}/unsuspend")).await,
    ];
    for r in &refused {
        assert_problem(r, 403, "tenant_not_allowed");
    }
    let untouched = app.get(&p.key, &format!("/v1/tenants/{theirs}")).await.expect_status(200);
    assert_eq!(untouched["name"], "Theirs");
    assert_eq!(untouched["status"], "active");

    // Only a key for all tenants creates tenants.
    let r = app.post(&key, "/v1/tenants", &json!({"name": "New"})).await;
    assert_problem(&r, 403, "tenant_not_allowed");
    assert_eq!(list_data(app.get(&p.key, "/v1/tenants").await.expect_status(200)).len(), 2);
}
both_backends!(tenant_scoped_key_sees_only_its_tenants);

async fn tenant_scopes_are_required(app: TestApp) {
    let p = app.partner("Acme").await;
    let t = str_of(&app.create_tenant(&p.key, json!({"name": "T"})).await["id"]);
    let reader = str_of(&app.create_key(&p.key, json!({"name": "r", "scopes": ["tenants:read"]})).await["key"]);
    let none = str_of(&app.create_key(&p.key, json!({"name": "n", "scopes": ["calls:read"]})).await["key"]);

    app.get(&reader, "/v1/tenants").await.expect_status(200);
    app.get(&reader, &format!("/v1/tenants/{t}")).await.expect_status(200);
    for r in [
        app.post(&reader, "/v1/tenants", &json!({"name": "x"})).await,
        app.patch(&reader, &format!("/v1/tenants/{t}"), &json!({"name": "x"})).await,
        app.post_empty(&reader, &format!("/v1/tenants/{t}/suspend")).await,
    ] {
        assert_problem(&r, 403, "insufficient_scope");
        assert_eq!(r.body["required_scope"], "tenants:write");
    }
    let r = app.get(&none, "/v1/tenants").await;
    assert_problem(&r, 403, "insufficient_scope");
    assert_eq!(r.body["required_scope"], "tenants:read");
}
both_backends!(tenant_scopes_are_required);
