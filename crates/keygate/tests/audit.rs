//! `/v1/audit-events`: every write leaves the right record, and the log is filterable and paged.

#[macro_use]
mod common;

use common::{
    Partner, Resp, TestApp, USER_AGENT, assert_invalid_fields, assert_problem, ids, is_id, is_timestamp, list_data,
    str_of, timestamp,
};
use serde_json::{Value, json};

/// Asserts the event recorded for `r`: who (`actor_id`, an API key), what (`action` on
/// `target_id`), from where (127.0.0.1, the harness's user agent) and in which request.
#[track_caller]
fn assert_event(event: &Value, action: &str, actor_id: &str, target_type: &str, target_id: &str, r: &RequestMeta) {
    let mut fields: Vec<&str> = event.as_object().expect("an event").keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "action",
            "actor_id",
            "actor_type",
            "changes",
            "created_at",
            "id",
            "ip",
            "request_id",
            "target_id",
            "target_type",
            "user_agent"
        ],
        "{event}"
    );
    assert!(is_id(&str_of(&event["id"]), "evt"), "{event}");
    assert_eq!(event["action"], action, "{event}");
    assert_eq!(event["actor_type"], "api_key", "{event}");
    assert_eq!(event["actor_id"], actor_id, "{event}");
    assert_eq!(event["target_type"], target_type, "{event}");
    assert_eq!(event["target_id"], target_id, "{event}");
    assert_eq!(event["ip"], "127.0.0.1", "{event}");
    assert_eq!(event["user_agent"], USER_AGENT, "{event}");
    assert_eq!(event["request_id"], r.request_id.as_str(), "{event}");
    assert!(is_timestamp(&str_of(&event["created_at"])), "{event}");
}

/// What an event must repeat of the response that caused it.
struct RequestMeta {
    request_id: String,
}

impl RequestMeta {
    fn of(r: &Resp) -> Self {
        Self { request_id: r.request_id().to_owned() }
    }
}

async fn only(app: &TestApp, p: &Partner, action: &str, target_id: &str) -> Value {
    let events = app.audit_events(&p.key, &[("action", action), ("target_id", target_id)]).await;
    assert_eq!(events.len(), 1, "exactly one {action} for {target_id}: {events:?}");
    events.into_iter().next().expect("one event")
}

async fn key_writes_are_audited(app: TestApp) {
    let p = app.partner("Acme").await;

    let r = app
        .post(
            &p.key,
            "/v1/api-keys",
            &json!({"name": "audited", "scopes": ["calls:read"], "allowed_ips": ["10.0.0.0/8"],
                    "rate_limit_per_minute": 60, "metadata": {"crm": "hubspot"}}),
        )
        .await;
    let meta = RequestMeta::of(&r);
    let k = r.expect_status(201);
    let id = str_of(&k["id"]);
    let e = only(&app, &p, "api_key.created", &id).await;
    assert_event(&e, "api_key.created", &p.key_id, "api_key", &id, &meta);
    assert_eq!(
        e["changes"],
        json!({"name": "audited", "environment": "live", "scopes": ["calls:read"], "tenant_ids": null,
               "allowed_ips": ["10.0.0.0/8"], "rate_limit_per_minute": 60, "expires_at": null,
               "metadata": {"crm": "hubspot"}})
    );

    let r = app.patch(&p.key, &format!("/v1/api-keys/{id}"), &json!({"name": "renamed"})).await;
    let meta = RequestMeta::of(&r);
    r.expect_status(200);
    let e = only(&app, &p, "api_key.updated", &id).await;
    assert_event(&e, "api_key.updated", &p.key_id, "api_key", &id, &meta);
    assert_eq!(e["changes"], json!({"name": {"from": "audited", "to": "renamed"}}));

    let r = app.post(&p.key, &format!("/v1/api-keys/{id}/roll"), &json!({"grace_period_seconds": 60})).await;
    let meta = RequestMeta::of(&r);
    let new = r.expect_status(201);
    let new_id = str_of(&new["id"]);
    let e = only(&app, &p, "api_key.rolled", &id).await;
    assert_event(&e, "api_key.rolled", &p.key_id, "api_key", &id, &meta);
    assert_eq!(e["changes"]["new_key_id"], new_id.as_str());
    let old_now = app.get(&p.key, &format!("/v1/api-keys/{id}")).await.expect_status(200);
    assert_eq!(e["changes"]["old_key_expires_at"], old_now["expires_at"]);

    let r = app.post(&p.key, &format!("/v1/api-keys/{new_id}/revoke"), &json!({"reason": "rotating"})).await;
    let meta = RequestMeta::of(&r);
    r.expect_status(200);
    let e = only(&app, &p, "api_key.revoked", &new_id).await;
    assert_event(&e, "api_key.revoked", &p.key_id, "api_key", &new_id, &meta);
    assert_eq!(e["changes"], json!({"reason": "rotating"}));

    let r = app.delete(&p.key, &format!("/v1/api-keys/{new_id}")).await;
    let meta = RequestMeta::of(&r);
    assert_eq!(r.status, 204);
    let e = only(&app, &p, "api_key.deleted", &new_id).await;
    assert_event(&e, "api_key.deleted", &p.key_id, "api_key", &new_id, &meta);
    assert_eq!(e["changes"], json!({"name": "renamed", "masked": new["masked"]}));

    // The acting key is the one named, not the account's first key.
    let second = app.create_key(&p.key, json!({"name": "second actor"})).await;
    let r = app.post(&str_of(&second["key"]), "/v1/api-keys", &json!({"name": "by second"})).await;
    let meta = RequestMeta::of(&r);
    let by_second = str_of(&r.expect_status(201)["id"]);
    let e = only(&app, &p, "api_key.created", &by_second).await;
    assert_event(&e, "api_key.created", &str_of(&second["id"]), "api_key", &by_second, &meta);
}
both_backends!(key_writes_are_audited);

async fn tenant_writes_are_audited(app: TestApp) {
    let p = app.partner("Acme").await;

    let r = app.post(&p.key, "/v1/tenants", &json!({"name": "Northwind", "external_id": "crm-1"})).await;
    let meta = RequestMeta::of(&r);
    let id = str_of(&r.expect_status(201)["id"]);
    let e = only(&app, &p, "tenant.created", &id).await;
    assert_event(&e, "tenant.created", &p.key_id, "tenant", &id, &meta);
    assert_eq!(e["changes"], json!({"name": "Northwind", "external_id": "crm-1", "metadata": {}}));

    let r = app.patch(&p.key, &format!("/v1/tenants/{id}"), &json!({"name": "Northwind Clinic"})).await;
    let meta = RequestMeta::of(&r);
    r.expect_status(200);
    let e = only(&app, &p, "tenant.updated", &id).await;
    assert_event(&e, "tenant.updated", &p.key_id, "tenant", &id, &meta);
    assert_eq!(e["changes"], json!({"name": {"from": "Northwind", "to": "Northwind Clinic"}}));

    let r = app.post_empty(&p.key, &format!("/v1/tenants/{id}/suspend")).await;
    let meta = RequestMeta::of(&r);
    r.expect_status(200);
    let e = only(&app, &p, "tenant.suspended", &id).await;
    assert_event(&e, "tenant.suspended", &p.key_id, "tenant", &id, &meta);
    assert_eq!(e["changes"], json!({"status": "suspended"}));

    let r = app.post_empty(&p.key, &format!("/v1/tenants/{id}/unsuspend")).await;
    let meta = RequestMeta::of(&r);
    r.expect_status(200);
    let e = only(&app, &p, "tenant.unsuspended", &id).await;
    assert_event(&e, "tenant.unsuspended", &p.key_id, "tenant", &id, &meta);
    assert_eq!(e["changes"], json!({"status": "active"}));
}
both_backends!(tenant_writes_are_audited);

async fn account_writes_are_audited(app: TestApp) {
    let operator = Partner {
        account_id: app.operator_account_id.clone(),
        key: app.operator_key.clone(),
        key_id: app.operator_key_id.clone(),
    };

    let r = app.post(&app.operator_key, "/v1/accounts", &json!({"name": "Acme"})).await;
    let meta = RequestMeta::of(&r);
    let created = r.expect_status(201);
    let p = Partner {
        account_id: str_of(&created["account"]["id"]),
        key: str_of(&created["initial_key"]["key"]),
        key_id: str_of(&created["initial_key"]["id"]),
    };
    let e = only(&app, &operator, "account.created", &p.account_id).await;
    assert_event(&e, "account.created", &operator.key_id, "account", &p.account_id, &meta);
    assert_eq!(e["changes"]["name"], "Acme");
    assert_eq!(e["changes"]["initial_key_id"], p.key_id.as_str());

    // The account's own change lands in its own log.
    let r = app.patch(&p.key, "/v1/account", &json!({"name": "Acme Corp", "allowed_ips": ["127.0.0.0/8"]})).await;
    let meta = RequestMeta::of(&r);
    r.expect_status(200);
    let e = only(&app, &p, "account.updated", &p.account_id).await;
    assert_event(&e, "account.updated", &p.key_id, "account", &p.account_id, &meta);
    assert_eq!(
        e["changes"],
        json!({"name": {"from": "Acme", "to": "Acme Corp"}, "allowed_ips": {"from": [], "to": ["127.0.0.0/8"]}})
    );

    let path = format!("/v1/accounts/{}", p.account_id);
    let r = app.patch(&app.operator_key, &path, &json!({"rate_limit_per_minute": 2000})).await;
    let meta = RequestMeta::of(&r);
    r.expect_status(200);
    let e = only(&app, &operator, "account.updated", &p.account_id).await;
    assert_event(&e, "account.updated", &operator.key_id, "account", &p.account_id, &meta);
    assert_eq!(e["changes"], json!({"rate_limit_per_minute": {"from": 1000, "to": 2000}}));

    for (action, event) in [("suspend", "account.suspended"), ("unsuspend", "account.unsuspended")] {
        let r = app.post_empty(&app.operator_key, &format!("{path}/{action}")).await;
        let meta = RequestMeta::of(&r);
        r.expect_status(200);
        let e = only(&app, &operator, event, &p.account_id).await;
        assert_event(&e, event, &operator.key_id, "account", &p.account_id, &meta);
    }
}
both_backends!(account_writes_are_audited);

async fn refused_writes_leave_no_event(app: TestApp) {
    let p = app.partner("Acme").await;
    let before = ids(&app.audit_events(&p.key, &[]).await);
    let reader = app.create_key(&p.key, json!({"name": "reader", "scopes": ["api_keys:read", "audit:read"]})).await;
    let reader_key = str_of(&reader["key"]);
    let after_create = ids(&app.audit_events(&p.key, &[]).await);
    assert_eq!(after_create.len(), before.len() + 1);

    assert_eq!(app.post(&p.key, "/v1/api-keys", &json!({"name": ""})).await.status, 422);
    assert_eq!(app.post(&reader_key, "/v1/api-keys", &json!({"name": "x"})).await.status, 403);
    assert_eq!(app.post(&p.key, "/v1/tenants", &json!({"nmae": "x"})).await.status, 422);
    assert_eq!(app.patch(&p.key, "/v1/account", &json!({"allowed_ips": ["10.0.0.0/8"]})).await.status, 409);
    assert_eq!(app.post_empty(&p.key, "/v1/api-keys/key_01JABCDEFGHJKMNPQRSTVWXYZ0/revoke").await.status, 404);
    assert_eq!(ids(&app.audit_events(&p.key, &[]).await), after_create);
}
both_backends!(refused_writes_leave_no_event);

async fn events_never_contain_a_plaintext_key(app: TestApp) {
    let operator_log_before = app.get(&app.operator_key, "/v1/audit-events?limit=100").await;
    assert!(!operator_log_before.text.contains(&app.operator_key));

    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "secret"})).await;
    let id = str_of(&k["id"]);
    let rolled = app.post_empty(&p.key, &format!("/v1/api-keys/{id}/roll")).await.expect_status(201);
    app.post(&p.key, &format!("/v1/api-keys/{}/revoke", str_of(&rolled["id"])), &json!({"reason": "x"}))
        .await
        .expect_status(200);
    app.delete(&p.key, &format!("/v1/api-keys/{}", str_of(&rolled["id"]))).await;
    let secrets = [p.key.clone(), str_of(&k["key"]), str_of(&rolled["key"]), app.operator_key.clone()];

    for (key, log) in [
        (&p.key, app.get(&p.key, "/v1/audit-events?limit=100").await),
        (&app.operator_key, app.get(&app.operator_key, "/v1/audit-events?limit=100").await),
    ] {
        assert_eq!(log.status, 200, "{log:?}");
        assert!(!list_data(log.body.clone()).is_empty(), "the log of {key} has events");
        for secret in &secrets {
            assert!(!log.text.contains(secret.as_str()), "a plaintext key in the audit log: {log:?}");
            // Nor its random body, in case it were stored reformatted.
            assert!(!log.text.contains(&secret[8..38]), "part of a plaintext key in the audit log");
        }
    }
}
both_backends!(events_never_contain_a_plaintext_key);

async fn filters_by_action_actor_target_and_time(app: TestApp) {
    let p = app.partner("Acme").await;
    let second = app.create_key(&p.key, json!({"name": "second"})).await;
    let second_key = str_of(&second["key"]);
    let second_id = str_of(&second["id"]);
    let t1 = str_of(&app.create_tenant(&p.key, json!({"name": "T1"})).await["id"]);
    let t2 = str_of(&app.create_tenant(&second_key, json!({"name": "T2"})).await["id"]);
    app.patch(&second_key, &format!("/v1/tenants/{t1}"), &json!({"name": "T1b"})).await.expect_status(200);
    app.post_empty(&p.key, &format!("/v1/tenants/{t2}/suspend")).await.expect_status(200);

    let all = app.audit_events(&p.key, &[("limit", "100")]).await;
    assert_eq!(all.len(), 5, "{all:?}");
    let mut sorted = ids(&all);
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids(&all), sorted, "newest first");

    let pick = |pred: &dyn Fn(&Value) -> bool| -> Vec<String> {
        all.iter().filter(|e| pred(e)).map(|e| str_of(&e["id"])).collect()
    };

    let by_action = ids(&app.audit_events(&p.key, &[("action", "tenant.created")]).await);
    assert_eq!(by_action, pick(&|e| e["action"] == "tenant.created"));
    assert_eq!(by_action.len(), 2);
    let by_actor = ids(&app.audit_events(&p.key, &[("actor_id", &second_id)]).await);
    assert_eq!(by_actor, pick(&|e| e["actor_id"] == second_id.as_str()));
    assert_eq!(by_actor.len(), 2);
    let by_target = ids(&app.audit_events(&p.key, &[("target_id", &t1)]).await);
    assert_eq!(by_target, pick(&|e| e["target_id"] == t1.as_str()));
    assert_eq!(by_target.len(), 2);
    let combined = ids(&app.audit_events(&p.key, &[("action", "tenant.created"), ("actor_id", &second_id)]).await);
    assert_eq!(combined, pick(&|e| e["action"] == "tenant.created" && e["actor_id"] == second_id.as_str()));
    assert_eq!(combined.len(), 1);
    assert!(app.audit_events(&p.key, &[("action", "tenant")]).await.is_empty(), "action is exact");

    // `since` is inclusive and `until` exclusive, on the events' own timestamps.
    let middle = &all[2];
    let t = str_of(&middle["created_at"]);
    let at = timestamp(&middle["created_at"]);
    let since = ids(&app.audit_events(&p.key, &[("since", &t)]).await);
    assert_eq!(since, pick(&|e| timestamp(&e["created_at"]) >= at));
    assert!(since.contains(&str_of(&middle["id"])));
    let until = ids(&app.audit_events(&p.key, &[("until", &t)]).await);
    assert_eq!(until, pick(&|e| timestamp(&e["created_at"]) < at));
    assert!(!until.contains(&str_of(&middle["id"])));
    assert!(app.audit_events(&p.key, &[("since", "2100-01-01T00:00:00Z")]).await.is_empty());
    assert!(app.audit_events(&p.key, &[("until", "2000-01-01T00:00:00Z")]).await.is_empty());
    let window =
        ids(&app.audit_events(&p.key, &[("since", "2000-01-01T00:00:00Z"), ("until", "2100-01-01T00:00:00Z")]).await);
    assert_eq!(window, ids(&all));

    for (param, value) in [("since", "yesterday"), ("until", "2026-13-01T00:00:00Z"), ("actor", "x")] {
        let r =
            common::send(app.request(reqwest::Method::GET, "/v1/audit-events", &p.key).query(&[(param, value)])).await;
        assert_invalid_fields(&r, &[param]);
    }
}
both_backends!(filters_by_action_actor_target_and_time);

async fn pages_through_the_log(app: TestApp) {
    let p = app.partner("Acme").await;
    for i in 0..6 {
        app.create_tenant(&p.key, json!({"name": format!("t{i}")})).await;
    }
    let all = ids(&app.audit_events(&p.key, &[("limit", "100")]).await);
    assert_eq!(all.len(), 6);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut query = vec![("limit", "4".to_owned())];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let r = common::send(app.request(reqwest::Method::GET, "/v1/audit-events", &p.key).query(&query)).await;
        let body = r.expect_status(200);
        cursor = body["next_cursor"].as_str().map(str::to_owned);
        seen.extend(ids(&list_data(body)));
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, all, "two pages, in order, nothing repeated or missed");

    assert_invalid_fields(&app.get(&p.key, "/v1/audit-events?limit=0").await, &["limit"]);
    assert_invalid_fields(&app.get(&p.key, "/v1/audit-events?limit=101").await, &["limit"]);
    assert_problem(
        &app.get(&p.key, "/v1/audit-events?cursor=key_01JABCDEFGHJKMNPQRSTVWXYZ0").await,
        400,
        "invalid_request",
    );

    let no_audit = app.create_key(&p.key, json!({"name": "no audit", "scopes": ["tenants:read"]})).await;
    let r = app.get(&str_of(&no_audit["key"]), "/v1/audit-events").await;
    assert_problem(&r, 403, "insufficient_scope");
    assert_eq!(r.body["required_scope"], "audit:read");
}
both_backends!(pages_through_the_log);

/// SPEC §4: a tenant-scoped key sees only the history of its own tenants; events about other
/// tenants' keys (metadata included) and about the account as a whole do not exist for it.
async fn tenant_scoped_keys_see_only_their_tenants_history(app: TestApp) {
    let p = app.partner("Acme").await;
    let ta1 = str_of(&app.create_tenant(&p.key, json!({"name": "TA1"})).await["id"]);
    let ta2 = str_of(&app.create_tenant(&p.key, json!({"name": "TA2"})).await["id"]);
    let reader = app
        .create_key(&p.key, json!({"name": "ta1 auditor", "scopes": ["audit:read"], "tenant_ids": [ta1.clone()]}))
        .await;
    let reader = str_of(&reader["key"]);
    let k1 =
        app.create_key(&p.key, json!({"name": "k1", "tenant_ids": [ta1.clone()], "metadata": {"crm": "one"}})).await;
    let k2 = app
        .create_key(&p.key, json!({"name": "k2", "tenant_ids": [ta2.clone()], "metadata": {"crm": "secret-two"}}))
        .await;
    let (k1_id, k2_id) = (str_of(&k1["id"]), str_of(&k2["id"]));
    assert_eq!(app.post(&p.key, &format!("/v1/api-keys/{k2_id}/revoke"), &json!({})).await.status, 200);
    let both = app.create_key(&p.key, json!({"name": "both", "tenant_ids": [ta1.clone(), ta2.clone()]})).await;
    let r = app.patch(&p.key, "/v1/account", &json!({"name": "Acme Renamed"})).await;
    assert_eq!(r.status, 200);

    let seen = app.audit_events(&reader, &[("limit", "100")]).await;
    let targets: Vec<String> = seen.iter().map(|e| str_of(&e["target_id"])).collect();
    assert!(targets.contains(&k1_id), "its own tenant's key: {targets:?}");
    assert!(targets.contains(&ta1), "its own tenant: {targets:?}");
    for hidden in [&k2_id, &ta2, &str_of(&both["id"]), &p.account_id] {
        assert!(!targets.contains(hidden), "{hidden} must not exist for a TA1 key: {targets:?}");
    }
    let text = serde_json::to_string(&seen).expect("json");
    assert!(!text.contains("secret-two"), "no metadata of another tenant's key");
    // Filtering for a hidden target finds nothing either.
    assert!(app.audit_events(&reader, &[("target_id", k2_id.as_str())]).await.is_empty());
    // The partner-level key sees everything.
    let all: Vec<String> =
        app.audit_events(&p.key, &[("limit", "100")]).await.iter().map(|e| str_of(&e["target_id"])).collect();
    for id in [&k1_id, &k2_id, &ta1, &ta2, &p.account_id] {
        assert!(all.contains(id), "{id} in {all:?}");
    }
}
both_backends!(tenant_scoped_keys_see_only_their_tenants_history);
