//! SPEC §3, through real requests: where a credential may come from, every check of the table in
//! its order (a request failing several checks gets the first one's code), the client IP behind
//! trusted proxies, and the failed-attempts throttle.
//!
//! The checks are one table: each row sets up a key (and its account) through the API, sends one
//! request, and names the answer it must get. Every row runs; the test then reports every row
//! that answered otherwise, not only the first.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use common::{Partner, Resp, TestApp, assert_problem, ids, list_data, send, str_of};
use keygate::Config;
use keygate_domain::{Environment, KeyFormat};
use reqwest::RequestBuilder;
use serde_json::{Value, json};

/// The second client's address: any 127.0.0.0/8 address reaches the server.
const SECOND: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("{s} is an IP address"))
}

/// A well-formed key whose checksum does not match: one body character changed.
fn with_bad_checksum(key: &str) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    let i = "sk_live_".len() + 3;
    chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

/// A key of the right shape and checksum that nobody issued.
fn unknown_key() -> String {
    KeyFormat::default().generate(Environment::Live).expose().to_owned()
}

/// The problem document without its request id, which differs per request by design.
fn without_request_id(r: &Resp) -> Value {
    let mut body = r.body.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("request_id");
    }
    body
}

/// What a response said, in one comparable line: `200`, `401 invalid_api_key`,
/// `403 insufficient_scope (api_keys:read)`.
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

/// Suspends a partner account (operator key).
async fn suspend_account(app: &TestApp, account_id: &str) {
    let r = app.post_empty(&app.operator_key, &format!("/v1/accounts/{account_id}/suspend")).await;
    assert_eq!(r.expect_status(200)["status"], "suspended");
}

/// Sets a partner account's IP allowlist (operator key).
async fn set_account_allowlist(app: &TestApp, account_id: &str, ips: &[&str]) {
    let r = app.patch(&app.operator_key, &format!("/v1/accounts/{account_id}"), &json!({"allowed_ips": ips})).await;
    assert_eq!(r.expect_status(200)["allowed_ips"], json!(ips));
}

/// Rolls `key_id` with no grace period: the old key has expired when this returns.
async fn roll_now(app: &TestApp, admin_key: &str, key_id: &str) -> Value {
    let path = format!("/v1/api-keys/{key_id}/roll");
    app.post(admin_key, &path, &json!({"grace_period_seconds": 0})).await.expect_status(201)
}

async fn revoke(app: &TestApp, admin_key: &str, key_id: &str) {
    let r = app.post(admin_key, &format!("/v1/api-keys/{key_id}/revoke"), &json!({"reason": "test"})).await;
    assert_eq!(r.expect_status(200)["status"], "revoked");
}

// ---------------------------------------------------------------------------------------------
// The checks, in order.
// ---------------------------------------------------------------------------------------------

/// The key a row presents.
#[derive(Clone, Copy)]
enum Presented {
    /// No credential at all.
    Nothing,
    /// This literal text.
    Text(&'static str),
    /// A well-formed key with a wrong checksum.
    BadChecksum,
    /// A well-formed, correctly checksummed key nobody issued.
    Unknown,
    /// A key made for the row.
    Key(KeySpec),
}

/// How a row's key is made; the defaults are an active, unrestricted key.
#[derive(Clone, Copy, Default)]
struct KeySpec {
    /// `None`: unrestricted (`null`).
    scopes: Option<&'static [&'static str]>,
    /// `None`: any IP (`null`); `Some(&[])`: no IP at all.
    allowed_ips: Option<&'static [&'static str]>,
    /// `expires_at` a day from now.
    expires_tomorrow: bool,
    /// Rolled with `grace_period_seconds: 0`; the row presents the old key.
    expired: bool,
    revoked: bool,
}

/// The state of a row's account (each row has its own).
#[derive(Clone, Copy, Default)]
struct AccountSpec {
    suspended: bool,
    /// Empty: open.
    allowed_ips: &'static [&'static str],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The default client, 127.0.0.1.
    Loopback,
    /// The second client, 127.0.0.2.
    Second,
}

struct Case {
    name: &'static str,
    presented: Presented,
    account: AccountSpec,
    from: Origin,
    /// A GET path and so the scope it needs: `/v1/api-keys` needs `api_keys:read`.
    path: &'static str,
    /// [`verdict`] of the expected answer.
    expect: &'static str,
}

const LIST: &str = "/v1/api-keys";

const fn key(spec: KeySpec) -> Presented {
    Presented::Key(spec)
}

const OPEN: AccountSpec = AccountSpec { suspended: false, allowed_ips: &[] };
const ANY: KeySpec =
    KeySpec { scopes: None, allowed_ips: None, expires_tomorrow: false, expired: false, revoked: false };

fn cases() -> Vec<Case> {
    let case = |name, presented, account, from, path, expect| Case { name, presented, account, from, path, expect };
    use Origin::{Loopback, Second};
    vec![
        // 1. A credential is present.
        case("no credential", Presented::Nothing, OPEN, Loopback, LIST, "401 missing_api_key"),
        // 2. Well-formed, checksum ok. 3. Known (same answer).
        case("malformed: too short", Presented::Text("sk_live_short"), OPEN, Loopback, LIST, "401 invalid_api_key"),
        case("malformed: not a key", Presented::Text("hunter2"), OPEN, Loopback, LIST, "401 invalid_api_key"),
        case(
            "malformed: unknown prefix",
            Presented::Text("pk_live_abcdefghijklmnopqrstuvwxyz0123456789"),
            OPEN,
            Loopback,
            LIST,
            "401 invalid_api_key",
        ),
        case("bad checksum", Presented::BadChecksum, OPEN, Loopback, LIST, "401 invalid_api_key"),
        case("unknown key", Presented::Unknown, OPEN, Loopback, LIST, "401 invalid_api_key"),
        case("an active, unrestricted key", key(ANY), OPEN, Loopback, LIST, "200"),
        // 4. Not revoked.
        case("revoked", key(KeySpec { revoked: true, ..ANY }), OPEN, Loopback, LIST, "401 api_key_revoked"),
        // 5. Not expired.
        case(
            "expired (rolled with no grace)",
            key(KeySpec { expired: true, ..ANY }),
            OPEN,
            Loopback,
            LIST,
            "401 api_key_expired",
        ),
        case("expires tomorrow", key(KeySpec { expires_tomorrow: true, ..ANY }), OPEN, Loopback, LIST, "200"),
        // 6. Account active.
        case(
            "account suspended",
            key(ANY),
            AccountSpec { suspended: true, ..OPEN },
            Loopback,
            LIST,
            "403 account_suspended",
        ),
        // 7. Account allowlist (empty = open).
        case(
            "account allowlist refuses the client",
            key(ANY),
            AccountSpec { allowed_ips: &[SECOND], ..OPEN },
            Loopback,
            LIST,
            "403 ip_not_allowed",
        ),
        case(
            "account allowlist admits the client",
            key(ANY),
            AccountSpec { allowed_ips: &[SECOND], ..OPEN },
            Second,
            LIST,
            "200",
        ),
        case(
            "account allowlist as a CIDR",
            key(ANY),
            AccountSpec { allowed_ips: &["127.0.0.0/31"], ..OPEN },
            Loopback,
            LIST,
            "200",
        ),
        case(
            "account allowlist as a CIDR, outside it",
            key(ANY),
            AccountSpec { allowed_ips: &["127.0.0.0/31"], ..OPEN },
            Second,
            LIST,
            "403 ip_not_allowed",
        ),
        // 8. Key allowlist (null = any, [] = none).
        case("key allowlist null admits any IP", key(ANY), OPEN, Second, LIST, "200"),
        case(
            "key allowlist [] admits no IP",
            key(KeySpec { allowed_ips: Some(&[]), ..ANY }),
            OPEN,
            Loopback,
            LIST,
            "403 ip_not_allowed",
        ),
        case(
            "key allowlist [] admits no IP, not even another",
            key(KeySpec { allowed_ips: Some(&[]), ..ANY }),
            OPEN,
            Second,
            LIST,
            "403 ip_not_allowed",
        ),
        case(
            "key allowlist address admits it",
            key(KeySpec { allowed_ips: Some(&[SECOND]), ..ANY }),
            OPEN,
            Second,
            LIST,
            "200",
        ),
        case(
            "key allowlist address refuses another",
            key(KeySpec { allowed_ips: Some(&[SECOND]), ..ANY }),
            OPEN,
            Loopback,
            LIST,
            "403 ip_not_allowed",
        ),
        case(
            "key allowlist CIDR admits inside",
            key(KeySpec { allowed_ips: Some(&["127.0.0.0/31"]), ..ANY }),
            OPEN,
            Loopback,
            LIST,
            "200",
        ),
        case(
            "key allowlist CIDR refuses outside",
            key(KeySpec { allowed_ips: Some(&["127.0.0.0/31"]), ..ANY }),
            OPEN,
            Second,
            LIST,
            "403 ip_not_allowed",
        ),
        case(
            "account allowlist admits, key allowlist refuses",
            key(KeySpec { allowed_ips: Some(&[SECOND]), ..ANY }),
            AccountSpec { allowed_ips: &["127.0.0.0/8"], ..OPEN },
            Loopback,
            LIST,
            "403 ip_not_allowed",
        ),
        // 9. Scope.
        case(
            "scope missing",
            key(KeySpec { scopes: Some(&["tenants:read"]), ..ANY }),
            OPEN,
            Loopback,
            LIST,
            "403 insufficient_scope (api_keys:read)",
        ),
        case(
            "scope: another resource's write grants nothing here",
            key(KeySpec { scopes: Some(&["tenants:write"]), ..ANY }),
            OPEN,
            Loopback,
            LIST,
            "403 insufficient_scope (api_keys:read)",
        ),
        case(
            "scope: write implies read",
            key(KeySpec { scopes: Some(&["api_keys:write"]), ..ANY }),
            OPEN,
            Loopback,
            LIST,
            "200",
        ),
        case(
            "scope: resource:* grants read",
            key(KeySpec { scopes: Some(&["api_keys:*"]), ..ANY }),
            OPEN,
            Loopback,
            LIST,
            "200",
        ),
        case(
            "scope: an empty list grants nothing",
            key(KeySpec { scopes: Some(&[]), ..ANY }),
            OPEN,
            Loopback,
            "/v1/account",
            "403 insufficient_scope (account:read)",
        ),
        case(
            "scope: a partner's unrestricted key lacks operator scopes",
            key(ANY),
            OPEN,
            Loopback,
            "/v1/accounts",
            "403 insufficient_scope (accounts:read)",
        ),
        // Order: the first failing check wins.
        case(
            "order: revoked key of a suspended account from a disallowed IP",
            key(KeySpec { revoked: true, scopes: Some(&[]), allowed_ips: Some(&[]), ..ANY }),
            AccountSpec { suspended: true, allowed_ips: &[SECOND] },
            Loopback,
            LIST,
            "401 api_key_revoked",
        ),
        case(
            "order: revoked and expired",
            key(KeySpec { revoked: true, expired: true, ..ANY }),
            OPEN,
            Loopback,
            LIST,
            "401 api_key_revoked",
        ),
        case(
            "order: expired key of a suspended account from a disallowed IP",
            key(KeySpec { expired: true, allowed_ips: Some(&[]), ..ANY }),
            AccountSpec { suspended: true, allowed_ips: &[SECOND] },
            Loopback,
            LIST,
            "401 api_key_expired",
        ),
        case(
            "order: suspended account, disallowed IP, missing scope",
            key(KeySpec { scopes: Some(&["tenants:read"]), ..ANY }),
            AccountSpec { suspended: true, allowed_ips: &[SECOND] },
            Loopback,
            LIST,
            "403 account_suspended",
        ),
        case(
            "order: account allowlist refuses, scope missing",
            key(KeySpec { scopes: Some(&["tenants:read"]), ..ANY }),
            AccountSpec { allowed_ips: &[SECOND], ..OPEN },
            Loopback,
            LIST,
            "403 ip_not_allowed",
        ),
        case(
            "order: key allowlist refuses, scope missing",
            key(KeySpec { scopes: Some(&["tenants:read"]), allowed_ips: Some(&[SECOND]), ..ANY }),
            OPEN,
            Loopback,
            LIST,
            "403 ip_not_allowed",
        ),
    ]
}

/// Makes what a row presents; returns the plaintext and, for a made key, its id.
async fn present(app: &TestApp, p: &Partner, presented: Presented) -> (Option<String>, Option<String>) {
    match presented {
        Presented::Nothing => (None, None),
        Presented::Text(t) => (Some(t.to_owned()), None),
        Presented::BadChecksum => (Some(with_bad_checksum(&unknown_key())), None),
        Presented::Unknown => (Some(unknown_key()), None),
        Presented::Key(spec) => {
            let mut body = json!({"name": "row", "scopes": spec.scopes, "allowed_ips": spec.allowed_ips});
            if spec.expires_tomorrow {
                let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
                body["expires_at"] = json!(tomorrow.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            let created = app.create_key(&p.key, body).await;
            let (plaintext, id) = (str_of(&created["key"]), str_of(&created["id"]));
            if spec.expired {
                let rolled = roll_now(app, &p.key, &id).await;
                assert_ne!(str_of(&rolled["key"]), plaintext);
            }
            if spec.revoked {
                revoke(app, &p.key, &id).await;
            }
            (Some(plaintext), Some(id))
        }
    }
}

async fn every_check_in_order(app: TestApp) {
    let second = app.client_from(ip(SECOND));
    let mut mismatches = String::new();
    let mut answers = Vec::new();
    for case in cases() {
        let p = app.partner(case.name).await;
        let (plaintext, key_id) = present(&app, &p, case.presented).await;
        if !case.account.allowed_ips.is_empty() {
            set_account_allowlist(&app, &p.account_id, case.account.allowed_ips).await;
        }
        if case.account.suspended {
            suspend_account(&app, &p.account_id).await;
        }

        let client = if case.from == Origin::Second { &second } else { &app.client };
        let mut request = client.get(app.url(case.path));
        if let Some(k) = &plaintext {
            request = request.bearer_auth(k);
        }
        let r = send(request).await;
        let got = verdict(&r);
        if got != case.expect {
            let _ = writeln!(mismatches, "{}: expected {}, got {got} ({})", case.name, case.expect, r.text);
        } else if r.status == 200 {
            // It ran as that key's account: the list is the account's keys, the key among them.
            let listed = ids(&list_data(r.body.clone()));
            let id = key_id.as_deref().unwrap_or_default();
            if case.path == LIST && !listed.iter().any(|l| l == id) {
                let _ = writeln!(mismatches, "{}: {id} is not in its account's list {listed:?}", case.name);
            }
        }
        answers.push((case, r));
    }
    assert!(mismatches.is_empty(), "rows that answered otherwise:\n{mismatches}");

    // Each refusal is a complete problem document; a scope refusal names the scope.
    for (case, r) in &answers {
        if r.status != 200 {
            let (status, code) = case.expect.split_once(' ').unwrap_or_default();
            let code = code.split(' ').next().unwrap_or_default();
            assert_problem(r, status.parse().unwrap_or_default(), code);
            if r.status == 401 {
                assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"keygate\""), "{}", case.name);
            }
            assert!(r.body["key"].is_null() && r.body["account_id"].is_null(), "nothing about the key: {r:?}");
        }
    }

    // Malformed, bad checksum and unknown: one answer, apart from the request id (no oracle).
    let invalid: Vec<Value> =
        answers.iter().filter(|(c, _)| c.expect == "401 invalid_api_key").map(|(_, r)| without_request_id(r)).collect();
    assert_eq!(invalid.len(), 5);
    assert!(invalid.windows(2).all(|w| w[0] == w[1]), "one body for every invalid key: {invalid:#?}");
}
both_backends!(every_check_in_order);

// ---------------------------------------------------------------------------------------------
// Check 10, through POST /v1/verify.
// ---------------------------------------------------------------------------------------------

async fn tenant_checks_through_verify(app: TestApp) {
    let p = app.partner("Acme").await;
    let t1 = str_of(&app.create_tenant(&p.key, json!({"name": "one"})).await["id"]);
    let t2 = str_of(&app.create_tenant(&p.key, json!({"name": "two"})).await["id"]);
    let suspended = str_of(&app.create_tenant(&p.key, json!({"name": "gone"})).await["id"]);
    let r = app.post_empty(&p.key, &format!("/v1/tenants/{suspended}/suspend")).await;
    assert_eq!(r.expect_status(200)["status"], "suspended");
    let other = app.partner("Globex").await;
    let foreign = str_of(&app.create_tenant(&other.key, json!({"name": "theirs"})).await["id"]);
    let nowhere = "ten_01JABCDEFGHJKMNPQRSTVWXYZ0";

    let make = async |body: Value| str_of(&app.create_key(&p.key, body).await["key"]);
    let all_tenants = make(json!({"name": "all", "tenant_ids": null})).await;
    let only_t1 = make(json!({"name": "t1", "tenant_ids": [t1], "scopes": ["calls:write"]})).await;
    let only_suspended = make(json!({"name": "s", "tenant_ids": [suspended]})).await;
    let narrow = make(json!({"name": "narrow", "tenant_ids": [t1], "scopes": ["calls:read"]})).await;
    let revoked = app.create_key(&p.key, json!({"name": "revoked", "tenant_ids": null})).await;
    revoke(&app, &p.key, &str_of(&revoked["id"])).await;
    let revoked = str_of(&revoked["key"]);

    // (row, key, tenant_id, scope, expected code)
    let cases: [(&str, &str, &str, Option<&str>, &str); 10] = [
        ("all-tenant key, active tenant", &all_tenants, &t1, None, "valid"),
        ("all-tenant key, suspended tenant", &all_tenants, &suspended, None, "tenant_suspended"),
        ("all-tenant key, unknown tenant", &all_tenants, nowhere, None, "tenant_not_allowed"),
        ("all-tenant key, another account's tenant", &all_tenants, &foreign, None, "tenant_not_allowed"),
        ("tenant-scoped key, its tenant", &only_t1, &t1, Some("calls:write"), "valid"),
        ("tenant-scoped key, tenant outside its scope", &only_t1, &t2, None, "tenant_not_allowed"),
        ("order: outside the scope and suspended", &only_t1, &suspended, None, "tenant_not_allowed"),
        ("key scoped to a suspended tenant", &only_suspended, &suspended, None, "tenant_suspended"),
        ("order: scope (9) before tenant (10)", &narrow, &t2, Some("calls:write"), "insufficient_scope"),
        ("order: revoked before a suspended tenant", &revoked, &suspended, None, "api_key_revoked"),
    ];
    let mut mismatches = String::new();
    for (name, key, tenant, scope, expect) in cases {
        let mut body = json!({"key": key, "tenant_id": tenant});
        if let Some(s) = scope {
            body["scope"] = json!(s);
        }
        let r = app.post(&app.operator_key, "/v1/verify", &body).await;
        let ok = r.status == 200
            && r.body["code"] == expect
            && r.body["valid"] == (expect == "valid")
            && r.body["key"]["account_id"] == p.account_id.as_str();
        if !ok {
            let _ = writeln!(mismatches, "{name}: expected 200 {expect}, got {r:?}");
        }
    }
    assert!(mismatches.is_empty(), "rows that answered otherwise:\n{mismatches}");
}
both_backends!(tenant_checks_through_verify);

// ---------------------------------------------------------------------------------------------
// Credential sources.
// ---------------------------------------------------------------------------------------------

async fn credential_sources(app: TestApp) {
    let p = app.partner("Acme").await;
    let other = str_of(&app.create_key(&p.key, json!({"name": "other"})).await["key"]);
    let k = p.key.as_str();
    let get = || app.client.get(app.url("/v1/account"));

    let cases: Vec<(&str, RequestBuilder, &str)> = vec![
        ("Bearer", get().bearer_auth(k), "200"),
        ("Bearer, lower-case scheme", get().header("authorization", format!("bearer {k}")), "200"),
        ("X-API-Key", get().header("x-api-key", k), "200"),
        ("Bearer and X-API-Key, the same key", get().bearer_auth(k).header("x-api-key", k), "200"),
        (
            "Bearer and X-API-Key, two keys",
            get().bearer_auth(k).header("x-api-key", &other),
            "400 ambiguous_credentials",
        ),
        (
            "Bearer and X-API-Key, one of them garbage",
            get().bearer_auth("garbage").header("x-api-key", k),
            "400 ambiguous_credentials",
        ),
        (
            "two X-API-Key headers, two keys",
            get().header("x-api-key", k).header("x-api-key", &other),
            "400 ambiguous_credentials",
        ),
        ("nothing", get(), "401 missing_api_key"),
        (
            "appid, refused by default",
            app.client.get(app.url(&format!("/v1/account?appid={k}"))),
            "401 missing_api_key",
        ),
        (
            "appid ignored by default beside a Bearer key",
            app.client.get(app.url(&format!("/v1/account?appid={other}"))).bearer_auth(k),
            "200",
        ),
    ];
    let mut mismatches = String::new();
    for (name, request, expect) in cases {
        let r = send(request).await;
        let got = verdict(&r);
        if got != expect {
            let _ = writeln!(mismatches, "{name}: expected {expect}, got {got} ({})", r.text);
            continue;
        }
        if r.status == 200 {
            assert_eq!(r.body["id"], p.account_id, "{name}: ran as the key's account");
        } else {
            let (status, code) = expect.split_once(' ').unwrap_or_default();
            assert_problem(&r, status.parse().unwrap_or_default(), code);
        }
        assert_eq!(r.header("deprecation"), None, "{name}: only the appid credential is deprecated");
    }
    assert!(mismatches.is_empty(), "rows that answered otherwise:\n{mismatches}");
}
both_backends!(credential_sources);

fn allow_query_key(config: &mut Config) {
    config.auth.allow_query_key = true;
}

async fn appid_is_accepted_when_allowed_and_marked_deprecated(app: TestApp) {
    let p = app.partner("Acme").await;
    let other = str_of(&app.create_key(&p.key, json!({"name": "other"})).await["key"]);
    let at = |path: &str| app.client.get(app.url(path));

    let r = send(at(&format!("/v1/account?appid={}", p.key))).await;
    assert_eq!(r.header("deprecation"), Some("true"), "{r:?}");
    assert_eq!(r.expect_status(200)["id"], p.account_id);

    let r = send(at("/v1/account").bearer_auth(&p.key)).await;
    assert_eq!(r.header("deprecation"), None, "a header credential is not deprecated");
    assert_eq!(r.expect_status(200)["id"], p.account_id);

    let r = send(at("/v1/account").header("x-api-key", &p.key)).await;
    assert_eq!(r.header("deprecation"), None, "a header credential is not deprecated");
    assert_eq!(r.expect_status(200)["id"], p.account_id);

    let r = send(at(&format!("/v1/account?appid={}", p.key)).bearer_auth(&p.key)).await;
    assert_eq!(r.expect_status(200)["id"], p.account_id, "the same key twice is one credential");

    let r = send(at(&format!("/v1/account?appid={other}")).bearer_auth(&p.key)).await;
    assert_problem(&r, 400, "ambiguous_credentials");

    let r = send(at(&format!("/v1/account?appid={}", unknown_key()))).await;
    assert_problem(&r, 401, "invalid_api_key");

    let r = send(at("/v1/account?appid=")).await;
    assert_problem(&r, 401, "invalid_api_key");
}
both_backends_with!(allow_query_key; appid_is_accepted_when_allowed_and_marked_deprecated);

/// The legacy credential is a credential, not a list filter: list routes, whose query
/// parameters are checked strictly, take it too.
async fn appid_works_on_routes_with_query_parameters(app: TestApp) {
    let p = app.partner("Acme").await;
    let r = send(app.client.get(app.url(&format!("/v1/api-keys?appid={}", p.key)))).await;
    assert_eq!(r.header("deprecation"), Some("true"), "{r:?}");
    assert_eq!(ids(&list_data(r.expect_status(200))), std::slice::from_ref(&p.key_id));

    let r = send(app.client.get(app.url(&format!("/v1/api-keys?limit=5&appid={}", p.key)))).await;
    assert_eq!(ids(&list_data(r.expect_status(200))), [p.key_id]);
}
both_backends_with!(allow_query_key; appid_works_on_routes_with_query_parameters);

// ---------------------------------------------------------------------------------------------
// The client IP.
// ---------------------------------------------------------------------------------------------

async fn spoofed_forwarded_for_changes_nothing_without_trusted_proxies(app: TestApp) {
    let p = app.partner("Acme").await;
    let ten = str_of(&app.create_key(&p.key, json!({"name": "10/8", "allowed_ips": ["10.0.0.0/8"]})).await["key"]);
    let local = str_of(&app.create_key(&p.key, json!({"name": "local", "allowed_ips": ["127.0.0.1"]})).await["key"]);

    for xff in ["10.1.2.3", "203.0.113.5, 10.1.2.3", "10.1.2.3, 127.0.0.1"] {
        let r = send(app.request(reqwest::Method::GET, LIST, &ten).header("x-forwarded-for", xff)).await;
        assert_problem(&r, 403, "ip_not_allowed");
        // Nor does it lock out the real peer.
        let r = send(app.request(reqwest::Method::GET, LIST, &local).header("x-forwarded-for", xff)).await;
        assert_eq!(r.status, 200, "{xff}: {r:?}");
    }
}
both_backends!(spoofed_forwarded_for_changes_nothing_without_trusted_proxies);

fn trust_loopback(config: &mut Config) {
    config.trusted_proxies = vec!["127.0.0.0/8".into()];
}

async fn forwarded_for_from_a_trusted_proxy_names_the_client(app: TestApp) {
    let p = app.partner("Acme").await;
    // (key allowlist, X-Forwarded-For header lines, expected)
    let cases: [(&str, &[&str], &str); 24] = [
        ("10.0.0.0/8", &["10.1.2.3"], "200"),
        ("10.0.0.0/8", &[], "403 ip_not_allowed"),
        ("10.0.0.0/8", &["203.0.113.5, 10.1.2.3"], "200"),
        ("10.0.0.0/8", &["10.1.2.3, 203.0.113.5"], "403 ip_not_allowed"),
        ("10.0.0.0/8", &["10.1.2.3", "203.0.113.5"], "403 ip_not_allowed"),
        ("10.0.0.0/8", &["203.0.113.5", "10.1.2.3"], "200"),
        ("10.0.0.0/8", &["10.1.2.3, 127.0.0.9"], "200"),
        ("203.0.113.5", &["203.0.113.5, 127.0.0.9, 127.0.0.1"], "200"),
        ("203.0.113.5", &["203.0.113.6"], "403 ip_not_allowed"),
        ("10.0.0.0/8", &["::ffff:10.1.2.3"], "200"),
        // IPv6.
        ("2001:db8::/32", &["2001:db8::7"], "200"),
        ("2001:db9::/32", &["2001:db8::7"], "403 ip_not_allowed"),
        ("2001:db8::/32", &["2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"], "200"),
        ("2001:db8::/32", &["2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"], "403 ip_not_allowed"),
        ("2001:db8::7", &["2001:db8::7"], "200"),
        ("2001:db8::7", &["2001:db8::8"], "403 ip_not_allowed"),
        ("2001:db8::/32", &["10.1.2.3"], "403 ip_not_allowed"),
        // CIDR edges.
        ("10.0.0.0/8", &["10.0.0.0"], "200"),
        ("10.0.0.0/8", &["10.255.255.255"], "200"),
        ("10.0.0.0/8", &["11.0.0.0"], "403 ip_not_allowed"),
        ("10.0.0.0/8", &["9.255.255.255"], "403 ip_not_allowed"),
        ("192.168.4.0/22", &["192.168.7.255"], "200"),
        ("192.168.4.0/22", &["192.168.8.0"], "403 ip_not_allowed"),
        ("192.168.4.0/22", &["192.168.3.255"], "403 ip_not_allowed"),
    ];
    let mut keys: HashMap<&str, String> = HashMap::new();
    let mut mismatches = String::new();
    for (allowlist, xff, expect) in cases {
        if !keys.contains_key(allowlist) {
            let k = app.create_key(&p.key, json!({"name": allowlist, "allowed_ips": [allowlist]})).await;
            keys.insert(allowlist, str_of(&k["key"]));
        }
        let mut request = app.request(reqwest::Method::GET, LIST, &keys[allowlist]);
        for line in xff {
            request = request.header("x-forwarded-for", *line);
        }
        let r = send(request).await;
        let got = verdict(&r);
        if got != expect {
            let _ = writeln!(mismatches, "[{allowlist}] X-Forwarded-For {xff:?}: expected {expect}, got {got}");
        } else if r.status != 200 {
            assert_problem(&r, 403, "ip_not_allowed");
        }
    }
    assert!(mismatches.is_empty(), "rows that answered otherwise:\n{mismatches}");

    // The account allowlist sees the same client.
    let q = app.partner("Globex").await;
    set_account_allowlist(&app, &q.account_id, &["10.0.0.0/8"]).await;
    let r = send(app.request(reqwest::Method::GET, LIST, &q.key).header("x-forwarded-for", "10.1.2.3")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(app.request(reqwest::Method::GET, LIST, &q.key).header("x-forwarded-for", "11.1.2.3")).await;
    assert_problem(&r, 403, "ip_not_allowed");
}
both_backends_with!(trust_loopback; forwarded_for_from_a_trusted_proxy_names_the_client);

// ---------------------------------------------------------------------------------------------
// Brute force.
// ---------------------------------------------------------------------------------------------

fn five_failures_per_minute(config: &mut Config) {
    config.auth.max_failed_attempts_per_minute = 5;
}

async fn repeated_failures_from_one_ip_are_throttled_before_any_lookup(app: TestApp) {
    let p = app.partner("Acme").await;
    let second = app.client_from(ip(SECOND));
    let from_second = async |key: &str| send(second.get(app.url(LIST)).bearer_auth(key)).await;

    let guesses = [
        "sk_live_short".to_owned(),
        unknown_key(),
        with_bad_checksum(&unknown_key()),
        unknown_key(),
        "garbage".to_owned(),
    ];
    for guess in &guesses {
        assert_problem(&app.get(guess, LIST).await, 401, "invalid_api_key");
    }

    // The sixth request from that IP is refused, whatever it carries.
    for key in [p.key.as_str(), &unknown_key(), "garbage"] {
        let r = app.get(key, LIST).await;
        assert_problem(&r, 429, "too_many_failed_attempts");
        let retry_after: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or_default();
        assert!(retry_after >= 1, "Retry-After is whole seconds, at least 1: {:?}", r.header("retry-after"));
        assert!(retry_after <= 60, "no more than one failure's worth of refill: {retry_after}");
    }

    // Another IP is not affected: its valid key works, its failures are its own.
    let r = from_second(&p.key).await;
    assert_eq!(ids(&list_data(r.expect_status(200))), std::slice::from_ref(&p.key_id));
    assert_problem(&from_second(&unknown_key()).await, 401, "invalid_api_key");

    // Before any store lookup: with the store gone, the throttled IP still gets 429, not 503...
    app.store.close().await;
    for key in [unknown_key(), with_bad_checksum(&unknown_key())] {
        assert_problem(&app.get(&key, LIST).await, 429, "too_many_failed_attempts");
    }
    // (The valid key, held in memory since the other IP used it, is not throttled: it is
    // authenticated from memory, and only the listing itself then needs the store.)
    assert_problem(&app.get(&p.key, LIST).await, 503, "service_unavailable");
    // ...while a lookup from elsewhere would indeed have failed.
    assert_problem(&from_second(&unknown_key()).await, 503, "service_unavailable");
}
both_backends_with!(five_failures_per_minute; repeated_failures_from_one_ip_are_throttled_before_any_lookup);

// ---------------------------------------------------------------------------------------------
// Security review: the throttle spares cached keys; mapped IPv4; Bearer in any case; verify
// fails closed on tenants
// ---------------------------------------------------------------------------------------------

async fn a_noisy_neighbour_cannot_lock_out_a_cached_valid_key(app: TestApp) {
    let p = app.partner("Acme").await;
    let uncached = app.create_key(&p.key, json!({"name": "never used"})).await;
    let uncached = str_of(&uncached["key"]);
    // The valid key is in use (so held in the credential cache)...
    assert_eq!(app.get(&p.key, LIST).await.status, 200);
    // ...when a neighbour behind the same address guesses keys.
    for _ in 0..5 {
        assert_problem(&app.get(&unknown_key(), LIST).await, 401, "invalid_api_key");
    }
    assert_problem(&app.get(&unknown_key(), LIST).await, 429, "too_many_failed_attempts");
    let mut statuses = HashMap::new();
    for _ in 0..50 {
        *statuses.entry(app.get(&p.key, LIST).await.status).or_insert(0) += 1;
        let _ = app.get(&unknown_key(), LIST).await;
    }
    assert_eq!(statuses, HashMap::from([(200, 50)]), "every request of the cached valid key passes");
    // Evicted from memory (any change to the key evicts it), it is still no guess: it passes.
    let r = app.patch(&p.key, &format!("/v1/api-keys/{}", p.key_id), &json!({"name": "renamed"})).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(app.get(&p.key, LIST).await.status, 200, "an evicted valid key is looked up, not throttled");
    // A key memory does not know still waits behind the throttle: the store stays protected.
    assert_problem(&app.get(&uncached, LIST).await, 429, "too_many_failed_attempts");
    // Answered from memory: with the store gone, the cached key is still authenticated (the list
    // itself then needs the store, so the answer is 503, not 401 or 429).
    app.store.close().await;
    assert_problem(&app.get(&p.key, LIST).await, 503, "service_unavailable");
    assert_problem(&app.get(&uncached, LIST).await, 429, "too_many_failed_attempts");
}
both_backends_with!(five_failures_per_minute; a_noisy_neighbour_cannot_lock_out_a_cached_valid_key);

async fn ipv4_mapped_allowlist_entries_are_normalised(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app
        .create_key(&p.key, json!({"name": "mapped", "allowed_ips": ["::ffff:127.0.0.0/104", "::ffff:10.0.0.1"]}))
        .await;
    assert_eq!(k["allowed_ips"], json!(["127.0.0.0/8", "10.0.0.1"]), "stored and shown as IPv4");
    let mapped = str_of(&k["key"]);
    assert_eq!(app.get(&mapped, LIST).await.status, 200, "127.0.0.1 is in ::ffff:127.0.0.0/104");
    let outside = app.create_key(&p.key, json!({"name": "outside", "allowed_ips": ["::ffff:10.0.0.0/104"]})).await;
    assert_problem(&app.get(&str_of(&outside["key"]), LIST).await, 403, "ip_not_allowed");
    // The account allowlist the same way.
    let r = app.patch(&p.key, "/v1/account", &json!({"allowed_ips": ["::ffff:127.0.0.1"]})).await;
    assert_eq!(r.expect_status(200)["allowed_ips"], json!(["127.0.0.1"]));
    assert_eq!(app.get(&mapped, LIST).await.status, 200);
    // And verify's `ip`, in either spelling.
    for ip in ["127.0.0.1", "::ffff:127.0.0.1"] {
        let r = app.post(&app.operator_key, "/v1/verify", &json!({"key": mapped, "ip": ip})).await;
        assert_eq!(r.expect_status(200)["code"], "valid", "{ip}");
    }
    let r = app.post(&app.operator_key, "/v1/verify", &json!({"key": mapped, "ip": "::ffff:10.9.9.9"})).await;
    assert_eq!(r.expect_status(200)["code"], "ip_not_allowed");
}
both_backends!(ipv4_mapped_allowlist_entries_are_normalised);

fn trust_mapped_loopback(config: &mut Config) {
    config.trusted_proxies = vec!["::ffff:127.0.0.0/104".into()];
}

async fn mapped_trusted_proxies_are_trusted(app: TestApp) {
    let p = app.partner("Acme").await;
    let k = app.create_key(&p.key, json!({"name": "pinned", "allowed_ips": ["203.0.113.7"]})).await;
    let pinned = str_of(&k["key"]);
    let r = send(app.client.get(app.url(LIST)).bearer_auth(&pinned).header("x-forwarded-for", "203.0.113.7")).await;
    assert_eq!(r.status, 200, "the proxy at 127.0.0.1 is trusted through its mapped CIDR: {r:?}");
    let r = send(app.client.get(app.url(LIST)).bearer_auth(&pinned).header("x-forwarded-for", "203.0.113.8")).await;
    assert_problem(&r, 403, "ip_not_allowed");
}
both_backends_with!(trust_mapped_loopback; mapped_trusted_proxies_are_trusted);

async fn the_bearer_scheme_is_case_insensitive(app: TestApp) {
    let p = app.partner("Acme").await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = send(app.client.get(app.url(LIST)).header("authorization", format!("{scheme} {}", p.key))).await;
        assert_eq!(r.status, 200, "{scheme}: {r:?}");
    }
    let r = send(app.client.get(app.url(LIST)).header("authorization", format!("Basic {}", p.key))).await;
    assert_problem(&r, 401, "invalid_api_key");
}
both_backends!(the_bearer_scheme_is_case_insensitive);

async fn verify_fails_closed_for_a_tenant_scoped_key_without_a_tenant(app: TestApp) {
    let p = app.partner("Acme").await;
    let t1 = str_of(&app.create_tenant(&p.key, json!({"name": "one"})).await["id"]);
    let r = app.post_empty(&p.key, &format!("/v1/tenants/{t1}/suspend")).await;
    assert_eq!(r.expect_status(200)["status"], "suspended");
    let scoped = str_of(&app.create_key(&p.key, json!({"name": "scoped", "tenant_ids": [t1.clone()]})).await["key"]);
    let r = app.post(&app.operator_key, "/v1/verify", &json!({"key": scoped})).await;
    let body = r.expect_status(200);
    assert_eq!((body["valid"].clone(), body["code"].clone()), (json!(false), json!("tenant_not_allowed")));
    let r = app.post(&app.operator_key, "/v1/verify", &json!({"key": scoped, "tenant_id": t1})).await;
    assert_eq!(r.expect_status(200)["code"], "tenant_suspended");
    // A partner-level key needs no tenant.
    let r = app.post(&app.operator_key, "/v1/verify", &json!({"key": p.key})).await;
    assert_eq!(r.expect_status(200)["code"], "valid");
}
both_backends!(verify_fails_closed_for_a_tenant_scoped_key_without_a_tenant);

fn trusted_proxy_and_five_failures(config: &mut Config) {
    trust_loopback(config);
    five_failures_per_minute(config);
}

/// SPEC §3: the failed-attempt throttle counts an IPv6 client by its /64, so rotating addresses
/// inside one network buys no more guesses; another network is not affected.
async fn failed_attempts_from_one_ipv6_network_are_counted_together(app: TestApp) {
    let p = app.partner("Acme").await;
    let from = async |ip: &str, key: &str| {
        send(app.client.get(app.url(LIST)).bearer_auth(key).header("x-forwarded-for", ip.to_owned())).await
    };
    for i in 1..=5 {
        assert_problem(&from(&format!("2001:db8:7:7::{i}"), &unknown_key()).await, 401, "invalid_api_key");
    }
    assert_problem(&from("2001:db8:7:7:ffff::9", &unknown_key()).await, 429, "too_many_failed_attempts");
    assert_problem(&from("2001:db8:7:8::1", &unknown_key()).await, 401, "invalid_api_key");
    assert_eq!(from("2001:db8:7:8::1", &p.key).await.status, 200);
}
both_backends_with!(trusted_proxy_and_five_failures; failed_attempts_from_one_ipv6_network_are_counted_together);
