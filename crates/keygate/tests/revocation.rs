//! SPEC §3: revocation, expiry, suspension and every change to a key take effect on the node that
//! made them before the response returns, and on every other node within 1 second — a CLI
//! command run against the same database counts as another node. And `last_used_at` /
//! `last_used_ip`, written off the hot path, show up within 5 seconds.
//!
//! Every change is made after the key has been used once, so the node's credential cache holds
//! it: what is proven is that the cache lets go, not that a cold lookup sees the database.

#[macro_use]
mod common;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use common::{Partner, Resp, TestApp, assert_problem, poll, send, str_of, timestamp};
use keygate_engine::services::Principal;
use serde_json::{Value, json};

/// How long another node may take to see a change (SPEC §3), and how often the tests look.
const CROSS_NODE_DEADLINE: Duration = Duration::from_secs(1);
const CROSS_NODE_EVERY: Duration = Duration::from_millis(50);
/// `last_used_*` may be 5 s stale; one more second for the request and the poll itself.
const LAST_USED_DEADLINE: Duration = Duration::from_secs(6);

/// A change made through the API, and what the next request with the key must get.
#[derive(Debug, Clone, Copy)]
enum Change {
    Revoke,
    NarrowScopes,
    NarrowKeyAllowlist,
    Delete,
    RollWithoutGrace,
    SuspendAccount,
    AccountAllowlist,
    SuspendTenant,
}

const CHANGES: [Change; 8] = [
    Change::Revoke,
    Change::NarrowScopes,
    Change::NarrowKeyAllowlist,
    Change::Delete,
    Change::RollWithoutGrace,
    Change::SuspendAccount,
    Change::AccountAllowlist,
    Change::SuspendTenant,
];

impl Change {
    /// [`probe`]'s answer once the change is seen.
    fn refused(self) -> &'static str {
        match self {
            Self::Revoke => "401 api_key_revoked",
            Self::NarrowScopes => "403 insufficient_scope (api_keys:read)",
            Self::NarrowKeyAllowlist | Self::AccountAllowlist => "403 ip_not_allowed",
            Self::Delete => "401 invalid_api_key",
            Self::RollWithoutGrace => "401 api_key_expired",
            Self::SuspendAccount => "403 account_suspended",
            Self::SuspendTenant => "verify: tenant_suspended",
        }
    }

    /// [`probe`]'s answer before the change.
    fn admitted(self) -> &'static str {
        match self {
            Self::SuspendTenant => "verify: valid",
            _ => "200",
        }
    }
}

/// A key under test: its account, the key, and the tenant it is checked against.
struct Subject {
    partner: Partner,
    key: String,
    key_id: String,
    tenant_id: String,
}

/// A fresh account (so that suspending it touches nothing else) with a tenant and a key.
async fn subject(app: &TestApp, change: Change) -> Subject {
    let partner = app.partner(&format!("{change:?}")).await;
    let tenant_id = str_of(&app.create_tenant(&partner.key, json!({"name": "Northwind"})).await["id"]);
    let k = app.create_key(&partner.key, json!({"name": "under test"})).await;
    Subject { partner, key: str_of(&k["key"]), key_id: str_of(&k["id"]), tenant_id }
}

/// What a server answers for the subject's key: a `GET /v1/api-keys` verdict (`200`,
/// `401 api_key_revoked`, …), or for a tenant change the `code` of a verify naming the tenant.
async fn probe(client: &reqwest::Client, base_url: &str, operator_key: &str, s: &Subject, change: Change) -> String {
    if let Change::SuspendTenant = change {
        let body = json!({"key": s.key, "tenant_id": s.tenant_id});
        let r = send(client.post(format!("{base_url}/v1/verify")).bearer_auth(operator_key).json(&body)).await;
        return if r.status == 200 {
            format!("verify: {}", r.body["code"].as_str().unwrap_or("?"))
        } else {
            verdict(&r)
        };
    }
    let r = send(client.get(format!("{base_url}/v1/api-keys")).bearer_auth(&s.key)).await;
    if r.status != 200 {
        let expected_code = change.refused().split(' ').nth(1).unwrap_or_default();
        if r.body["code"] == expected_code {
            assert_problem(&r, r.status, expected_code);
        }
    }
    verdict(&r)
}

/// `200`, or `status code (required_scope)`.
fn verdict(r: &Resp) -> String {
    if r.status == 200 {
        return "200".into();
    }
    let mut v = format!("{} {}", r.status, r.body["code"].as_str().unwrap_or("<no code>"));
    if let Some(s) = r.body.get("required_scope").and_then(Value::as_str) {
        let _ = write!(v, " ({s})");
    }
    v
}

/// Makes `change` through `app`'s API, asserting it succeeded.
async fn make_change(app: &TestApp, s: &Subject, change: Change) {
    let admin = &s.partner.key;
    let key_path = format!("/v1/api-keys/{}", s.key_id);
    let account_path = format!("/v1/accounts/{}", s.partner.account_id);
    match change {
        Change::Revoke => {
            let r = app.post(admin, &format!("{key_path}/revoke"), &json!({"reason": "compromised"})).await;
            assert_eq!(r.expect_status(200)["status"], "revoked");
        }
        Change::NarrowScopes => {
            let r = app.patch(admin, &key_path, &json!({"scopes": ["tenants:read"]})).await;
            assert_eq!(r.expect_status(200)["scopes"], json!(["tenants:read"]));
        }
        Change::NarrowKeyAllowlist => {
            let r = app.patch(admin, &key_path, &json!({"allowed_ips": ["203.0.113.7"]})).await;
            assert_eq!(r.expect_status(200)["allowed_ips"], json!(["203.0.113.7"]));
        }
        Change::Delete => {
            assert_eq!(app.delete(admin, &key_path).await.status, 204);
        }
        Change::RollWithoutGrace => {
            let r = app.post(admin, &format!("{key_path}/roll"), &json!({"grace_period_seconds": 0})).await;
            let new_key = str_of(&r.expect_status(201)["key"]);
            let r = app.get(&new_key, "/v1/api-keys").await;
            assert_eq!(r.status, 200, "the new key works at once: {r:?}");
        }
        Change::SuspendAccount => {
            let r = app.post_empty(&app.operator_key, &format!("{account_path}/suspend")).await;
            assert_eq!(r.expect_status(200)["status"], "suspended");
        }
        Change::AccountAllowlist => {
            let r = app.patch(&app.operator_key, &account_path, &json!({"allowed_ips": ["198.51.100.0/24"]})).await;
            assert_eq!(r.expect_status(200)["allowed_ips"], json!(["198.51.100.0/24"]));
        }
        Change::SuspendTenant => {
            let r = app.post_empty(admin, &format!("/v1/tenants/{}/suspend", s.tenant_id)).await;
            assert_eq!(r.expect_status(200)["status"], "suspended");
        }
    }
}

async fn every_change_takes_effect_on_the_very_next_request(app: TestApp) {
    let (client, base, op) = (&app.client, app.base_url.as_str(), app.operator_key.as_str());
    let mut mismatches = String::new();
    for change in CHANGES {
        let s = subject(&app, change).await;
        // Twice: the second answer comes from the cache.
        for _ in 0..2 {
            assert_eq!(probe(client, base, op, &s, change).await, change.admitted(), "{change:?}: before");
        }
        make_change(&app, &s, change).await;
        let got = probe(client, base, op, &s, change).await;
        if got != change.refused() {
            let _ = writeln!(mismatches, "{change:?}: expected {}, got {got}", change.refused());
        }
    }
    assert!(mismatches.is_empty(), "changes not in effect on the next request:\n{mismatches}");
}
both_backends!(every_change_takes_effect_on_the_very_next_request);

async fn undoing_a_suspension_takes_effect_on_the_very_next_request(app: TestApp) {
    let (client, base, op) = (&app.client, app.base_url.as_str(), app.operator_key.as_str());

    let s = subject(&app, Change::SuspendAccount).await;
    make_change(&app, &s, Change::SuspendAccount).await;
    assert_eq!(probe(client, base, op, &s, Change::SuspendAccount).await, "403 account_suspended");
    let r = app.post_empty(op, &format!("/v1/accounts/{}/unsuspend", s.partner.account_id)).await;
    assert_eq!(r.expect_status(200)["status"], "active");
    assert_eq!(probe(client, base, op, &s, Change::SuspendAccount).await, "200");

    let s = subject(&app, Change::SuspendTenant).await;
    make_change(&app, &s, Change::SuspendTenant).await;
    assert_eq!(probe(client, base, op, &s, Change::SuspendTenant).await, "verify: tenant_suspended");
    let r = app.post_empty(&s.partner.key, &format!("/v1/tenants/{}/unsuspend", s.tenant_id)).await;
    assert_eq!(r.expect_status(200)["status"], "active");
    assert_eq!(probe(client, base, op, &s, Change::SuspendTenant).await, "verify: valid");
}
both_backends!(undoing_a_suspension_takes_effect_on_the_very_next_request);

/// Polls `base_url` until the subject's key is refused as `change` says, for at most a second.
/// Returns how long that took after the change was acknowledged.
async fn seen_within_a_second(
    client: &reqwest::Client,
    base_url: &str,
    operator_key: &str,
    s: &Subject,
    change: Change,
) -> Result<Duration, String> {
    let admitted = change.admitted();
    let seen = poll(CROSS_NODE_DEADLINE, CROSS_NODE_EVERY, || async move {
        let got = probe(client, base_url, operator_key, s, change).await;
        (got != admitted).then_some(got)
    })
    .await;
    match seen {
        Ok((got, elapsed)) if got == change.refused() && elapsed < CROSS_NODE_DEADLINE => Ok(elapsed),
        Ok((got, elapsed)) => Err(format!("{change:?}: after {elapsed:?}, expected {}, got {got}", change.refused())),
        Err(elapsed) => Err(format!("{change:?}: still admitted after {elapsed:?}")),
    }
}

async fn every_change_on_one_node_reaches_another_within_a_second(app: TestApp) {
    let b = app.start_node(|_| {}).await;
    let op = app.operator_key.as_str();
    let mut failures = String::new();
    let mut report = String::new();
    for change in CHANGES {
        let s = subject(&app, change).await;
        // B has the key in its cache; A does too.
        for _ in 0..2 {
            assert_eq!(probe(&b.client, &b.base_url, op, &s, change).await, change.admitted(), "{change:?} on B");
        }
        assert_eq!(probe(&app.client, &app.base_url, op, &s, change).await, change.admitted(), "{change:?} on A");

        make_change(&app, &s, change).await;
        // A: before its response returned.
        let on_a = probe(&app.client, &app.base_url, op, &s, change).await;
        assert_eq!(on_a, change.refused(), "{change:?} on A, the node that made it");
        // B: within a second.
        match seen_within_a_second(&b.client, &b.base_url, op, &s, change).await {
            Ok(elapsed) => {
                let _ = write!(report, " {change:?} {} ms;", elapsed.as_millis());
            }
            Err(e) => {
                let _ = writeln!(failures, "{e}");
            }
        }
    }
    eprintln!("cross-node ({:?}): seen on B after{report}", app.backend);
    assert!(failures.is_empty(), "changes on A not seen on B within a second:\n{failures}");
}
both_backends!(every_change_on_one_node_reaches_another_within_a_second);

async fn a_cli_change_reaches_a_running_server_within_a_second(app: TestApp) {
    let cli = app.offline_keygate().await;
    let op = app.operator_key.as_str();
    let (client, base) = (&app.client, app.base_url.as_str());

    // Revoke, as `keygate keys revoke` does.
    let s = subject(&app, Change::Revoke).await;
    assert_eq!(probe(client, base, op, &s, Change::Revoke).await, "200", "cached");
    let account = cli
        .store
        .get_account(s.partner.account_id.parse().expect("an account id"))
        .await
        .expect("the store answers")
        .expect("the account exists");
    let revoked = cli.revoke_key(&Principal::cli(account), &s.key_id, Some("from the CLI".into())).await;
    assert!(revoked.expect("the CLI revokes").revoked_at.is_some());
    let elapsed = seen_within_a_second(client, base, op, &s, Change::Revoke).await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("CLI revoke ({:?}) seen by the server after {} ms", app.backend, elapsed.as_millis());

    // Suspend an account, as the operator's CLI does.
    let s = subject(&app, Change::SuspendAccount).await;
    assert_eq!(probe(client, base, op, &s, Change::SuspendAccount).await, "200", "cached");
    let operator = cli
        .store
        .get_account(app.operator_account_id.parse().expect("an account id"))
        .await
        .expect("the store answers")
        .expect("the operator exists");
    let suspended = cli.set_account_suspended(&Principal::cli(operator), &s.partner.account_id, true).await;
    assert_eq!(suspended.expect("the CLI suspends").status, keygate_domain::AccountStatus::Suspended);
    let elapsed =
        seen_within_a_second(client, base, op, &s, Change::SuspendAccount).await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("CLI suspension ({:?}) seen by the server after {} ms", app.backend, elapsed.as_millis());
}
both_backends!(a_cli_change_reaches_a_running_server_within_a_second);

/// Polls `GET /v1/api-keys/{id}` until `done` holds for the key object, for at most 6 s.
async fn key_when(app: &TestApp, admin: &str, key_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/v1/api-keys/{key_id}");
    let (path, done) = (path.as_str(), &done);
    let seen = poll(LAST_USED_DEADLINE, Duration::from_millis(100), || async move {
        let key = app.get(admin, path).await.expect_status(200);
        done(&key).then_some(key)
    })
    .await;
    match seen {
        Ok((key, _)) => key,
        Err(elapsed) => {
            let key = app.get(admin, path).await.expect_status(200);
            panic!(
                "not there after {elapsed:?}: last_used_at {}, last_used_ip {}",
                key["last_used_at"], key["last_used_ip"]
            )
        }
    }
}

async fn a_request_records_when_and_where_the_key_was_last_used(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "in use"})).await;
    let (key, id) = (str_of(&k["key"]), str_of(&k["id"]));
    assert_eq!((&k["last_used_at"], &k["last_used_ip"]), (&Value::Null, &Value::Null), "never used yet");

    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    app.get(&key, "/v1/account").await.expect_status(200);
    let seen = key_when(&app, &p.key, &id, |k| !k["last_used_at"].is_null()).await;
    assert_eq!(seen["last_used_ip"], "127.0.0.1", "{seen}");
    let used = timestamp(&seen["last_used_at"]);
    assert!(before <= used && used <= chrono::Utc::now(), "{used} is when the key was used");
    // The list shows the same.
    let list = app.get(&p.key, "/v1/api-keys").await.expect_status(200);
    let listed = list["data"].as_array().and_then(|d| d.iter().find(|k| k["id"] == id.as_str())).cloned();
    assert_eq!(
        listed.map(|k| (k["last_used_at"].clone(), k["last_used_ip"].clone())),
        Some((seen["last_used_at"].clone(), seen["last_used_ip"].clone()))
    );

    // The latest use wins, even right after another one: two uses within the same second, the
    // second from 127.0.0.2, leave 127.0.0.2 behind.
    let second: IpAddr = "127.0.0.2".parse().expect("an address");
    let second = app.client_from(second);
    for attempt in 0.. {
        let started = chrono::Utc::now().timestamp();
        app.get(&key, "/v1/account").await.expect_status(200);
        send(second.get(app.url("/v1/account")).bearer_auth(&key)).await.expect_status(200);
        if chrono::Utc::now().timestamp() == started || attempt == 5 {
            break;
        }
    }
    let seen = key_when(&app, &p.key, &id, |k| k["last_used_ip"] == "127.0.0.2").await;
    assert!(timestamp(&seen["last_used_at"]) >= used, "{seen}");
}
both_backends!(a_request_records_when_and_where_the_key_was_last_used);
