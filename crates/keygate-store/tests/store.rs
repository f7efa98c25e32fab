//! The store's contract, checked against real databases: every test body runs on a fresh SQLite
//! file and on a fresh PostgreSQL database (the latter when `KEYGATE_TEST_POSTGRES_URL` names a
//! server, e.g. `postgres://postgres@127.0.0.1:5432/test`; otherwise it is reported as ignored).
//!
//! No mocks: what passes here is what the server gets.

use std::future::Future;
use std::net::IpAddr;
use std::panic::resume_unwind;
use std::path::Path;
use std::sync::Arc;

use chrono::Duration;
use ipnet::IpNet;
use keygate_domain::key::{HashSecret, KeyHasher};
use keygate_domain::model::{Account, AccountStatus, ApiKey, AuditEvent, KeyStatus, Role, Session, Tenant, User};
use keygate_domain::time::{self, Timestamp};
use keygate_domain::{
    AccountId, Environment, EventId, KeyFormat, KeyId, PlaintextKey, Scope, SessionId, TenantId, UserId,
};
use keygate_store::{
    AuditFilter, Change, ChangeKind, ConnectError, IdempotencyBegin, KeyFilter, KeyUsage, Page, RequestChunk,
    RequestFilter, RequestRecord, SqliteStore, Store, StoreError, TenantFilter, UsageCount, UsageFilter, UsageRow,
    connect,
};
use serde_json::{Map, Value, json};
use sqlx::Connection;

// ---------------------------------------------------------------------------------------------
// Running one body on both backends.

/// `both_backends!(name)` turns `async fn name(store: Arc<dyn Store>)` into the tests
/// `name::sqlite` and `name::postgres`; `both_backends!(name, multi_thread)` runs them on a
/// multi-threaded runtime, for tests whose tasks must really run in parallel.
macro_rules! both_backends {
    ($name:ident) => {
        both_backends!(@tests $name, #[tokio::test]);
    };
    ($name:ident, multi_thread) => {
        both_backends!(@tests $name, #[tokio::test(flavor = "multi_thread", worker_threads = 4)]);
    };
    (@tests $name:ident, #[$test:meta]) => {
        mod $name {
            #[$test]
            async fn sqlite() {
                crate::on_sqlite(super::$name).await;
            }

            #[$test]
            #[cfg_attr(not(keygate_pg), ignore = "set KEYGATE_TEST_POSTGRES_URL to run the PostgreSQL suite")]
            async fn postgres() {
                crate::on_postgres(super::$name).await;
            }
        }
    };
}

/// Runs `test` on a store over a new SQLite file in a temporary directory.
async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("keygate.db").display());
    let store = connect(&url).await.expect("open and migrate SQLite");
    let outcome = tokio::spawn(test(store.clone())).await;
    store.close().await;
    if let Err(e) = outcome {
        resume_unwind(e.into_panic());
    }
}

/// Runs `test` on a store over a new PostgreSQL database, dropped afterwards (best effort, also
/// when the test fails).
async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin_url = std::env::var("KEYGATE_TEST_POSTGRES_URL").expect("KEYGATE_TEST_POSTGRES_URL is set");
    let name = format!("keygate_t_{}", AccountId::generate().ulid().to_string().to_lowercase());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.expect("connect to KEYGATE_TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create the test database");

    let store = connect(&with_database(&admin_url, &name)).await.expect("open and migrate PostgreSQL");
    let outcome = tokio::spawn(test(store.clone())).await;
    store.close().await;

    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await;
    let _ = admin.close().await;
    if let Err(e) = outcome {
        resume_unwind(e.into_panic());
    }
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn hasher() -> KeyHasher {
    KeyHasher::new(&HashSecret::new("a test hash secret that is long enough").expect("a valid secret"))
}

fn ts(s: &str) -> Timestamp {
    s.parse().expect("an RFC 3339 timestamp")
}

fn scope(s: &str) -> Scope {
    s.parse().expect("a valid scope")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("a valid CIDR")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a valid IP")
}

fn metadata(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("metadata must be an object"),
    }
}

fn new_account(name: &str) -> Account {
    let now = time::now();
    Account {
        id: AccountId::generate(),
        name: name.to_owned(),
        status: AccountStatus::Active,
        operator: false,
        allowed_ips: vec![],
        rate_limit_per_minute: 1000,
        created_at: now,
        updated_at: now,
    }
}

/// A fresh key of `account` with every optional field empty, and its plaintext.
fn new_key_with_plaintext(account: AccountId, name: &str) -> (ApiKey, PlaintextKey) {
    let plaintext = KeyFormat::default().generate(Environment::Live);
    let now = time::now();
    let key = ApiKey {
        id: KeyId::generate(),
        account_id: account,
        name: name.to_owned(),
        prefix: "sk".to_owned(),
        environment: Environment::Live,
        hash: hasher().hash(&plaintext),
        last4: plaintext.last4(),
        scopes: None,
        tenant_ids: None,
        allowed_ips: None,
        rate_limit_per_minute: 100,
        expires_at: None,
        revoked_at: None,
        revoked_reason: None,
        last_used_at: None,
        last_used_ip: None,
        metadata: Map::new(),
        created_at: now,
        created_by: None,
        updated_at: now,
    };
    (key, plaintext)
}

fn new_key(account: AccountId, name: &str) -> ApiKey {
    new_key_with_plaintext(account, name).0
}

fn new_tenant(account: AccountId, name: &str, external_id: Option<&str>) -> Tenant {
    let now = time::now();
    Tenant {
        id: TenantId::generate(),
        account_id: account,
        name: name.to_owned(),
        external_id: external_id.map(str::to_owned),
        status: AccountStatus::Active,
        metadata: Map::new(),
        created_at: now,
        updated_at: now,
    }
}

fn audit(account: AccountId, action: &str, target: &str) -> AuditEvent {
    audit_at(account, action, target, time::now())
}

fn audit_at(account: AccountId, action: &str, target: &str, at: Timestamp) -> AuditEvent {
    AuditEvent {
        id: EventId::generate(),
        account_id: account,
        action: action.to_owned(),
        actor_type: "cli".to_owned(),
        actor_id: "cli".to_owned(),
        target_type: action.split('.').next().unwrap_or_default().to_owned(),
        target_id: target.to_owned(),
        ip: None,
        user_agent: None,
        request_id: None,
        changes: json!({}),
        tenant_ids: None,
        created_at: at,
    }
}

/// Creates an account (with a first key) and returns both.
async fn seed_account(store: &Arc<dyn Store>, name: &str) -> (Account, ApiKey) {
    let account = new_account(name);
    let key = new_key(account.id, "initial");
    store
        .create_account(&account, &key, &audit(account.id, "account.created", &account.id.to_string()))
        .await
        .expect("create account");
    (account, key)
}

async fn create_key(store: &Arc<dyn Store>, key: &ApiKey) {
    store
        .create_key(key, &audit(key.account_id, "api_key.created", &key.id.to_string()), u64::MAX)
        .await
        .expect("create key");
}

fn page(limit: u32) -> Page {
    Page { limit, before: None }
}

fn page_before(limit: u32, before: &str) -> Page {
    Page { limit, before: Some(before.to_owned()) }
}

async fn all_changes(store: &Arc<dyn Store>) -> Vec<Change> {
    store.changes_since(0, 10_000).await.expect("changes")
}

async fn all_audit(store: &Arc<dyn Store>, account: AccountId) -> Vec<AuditEvent> {
    store.list_audit_events(account, &AuditFilter::default(), &page(100)).await.expect("audit events")
}

async fn key_ids(store: &Arc<dyn Store>, account: AccountId, filter: KeyFilter) -> Vec<KeyId> {
    let keys = store.list_keys(account, &filter, &page(100)).await.expect("list keys");
    keys.into_iter().map(|k| k.id).collect()
}

/// Ids newest first, as lists return them.
fn newest_first<T: Ord + Copy>(ids: &[T]) -> Vec<T> {
    let mut ids = ids.to_vec();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

// ---------------------------------------------------------------------------------------------
// Accounts.

both_backends!(account_round_trips_every_field);
async fn account_round_trips_every_field(store: Arc<dyn Store>) {
    let mut account = new_account("Acme");
    account.allowed_ips = vec![net("203.0.113.7/32"), net("10.0.0.0/8"), net("2001:db8::/32")];
    account.rate_limit_per_minute = 4_000_000_000;
    account.created_at = ts("2026-01-02T03:04:05Z");
    account.updated_at = ts("2026-01-03T03:04:05Z");
    let key = new_key(account.id, "initial");
    store.create_account(&account, &key, &audit(account.id, "account.created", "x")).await.expect("create");

    assert_eq!(store.get_account(account.id).await.expect("get"), Some(account.clone()));
    assert_eq!(store.get_key(account.id, key.id).await.expect("get key"), Some(key));
    assert_eq!(store.get_account(AccountId::generate()).await.expect("get unknown"), None);
    assert_eq!(store.operator_account().await.expect("operator"), None);

    let mut changed = account.clone();
    changed.name = "Acme Corp".to_owned();
    changed.status = AccountStatus::Suspended;
    changed.allowed_ips = vec![];
    changed.rate_limit_per_minute = 5;
    changed.updated_at = ts("2026-02-01T00:00:00Z");
    store.update_account(&changed, &audit(account.id, "account.updated", "x")).await.expect("update");
    assert_eq!(store.get_account(account.id).await.expect("get"), Some(changed));
}

both_backends!(there_is_at_most_one_operator_account);
async fn there_is_at_most_one_operator_account(store: Arc<dyn Store>) {
    let mut operator = new_account("Operator");
    operator.operator = true;
    let key = new_key(operator.id, "root");
    store.create_account(&operator, &key, &audit(operator.id, "account.created", "x")).await.expect("create");
    assert_eq!(store.operator_account().await.expect("operator"), Some(operator.clone()));

    // A plain account does not disturb it.
    seed_account(&store, "Partner").await;

    let mut second = new_account("Second operator");
    second.operator = true;
    let second_key = new_key(second.id, "root");
    let err = store
        .create_account(&second, &second_key, &audit(second.id, "account.created", "x"))
        .await
        .expect_err("a second operator is refused");
    assert!(matches!(err, StoreError::Conflict("operator_exists")), "{err:?}");

    // Nothing of the failed transaction remains.
    assert_eq!(store.get_account(second.id).await.expect("get"), None);
    assert_eq!(store.find_key_by_hash(&second_key.hash).await.expect("find"), None);
    assert!(all_audit(&store, second.id).await.is_empty());
    assert_eq!(store.operator_account().await.expect("operator"), Some(operator));
}

both_backends!(accounts_list_newest_first_in_pages);
async fn accounts_list_newest_first_in_pages(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(seed_account(&store, &format!("account {i}")).await.0.id);
    }
    let expected = newest_first(&ids);
    let first = store.list_accounts(&page(2)).await.expect("page 1");
    assert_eq!(first.iter().map(|a| a.id).collect::<Vec<_>>(), expected[..2]);
    let second = store.list_accounts(&page_before(2, &first[1].id.to_string())).await.expect("page 2");
    assert_eq!(second.iter().map(|a| a.id).collect::<Vec<_>>(), expected[2..4]);
    let third = store.list_accounts(&page_before(2, &second[1].id.to_string())).await.expect("page 3");
    assert_eq!(third.iter().map(|a| a.id).collect::<Vec<_>>(), expected[4..]);
    let all = store.list_accounts(&page(100)).await.expect("all");
    assert_eq!(all.len(), 5);
}

// ---------------------------------------------------------------------------------------------
// Keys.

both_backends!(key_round_trips_every_field);
async fn key_round_trips_every_field(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let tenant = new_tenant(account.id, "T", None);
    store.create_tenant(&tenant, &audit(account.id, "tenant.created", "t"), u64::MAX).await.expect("tenant");

    let mut full = new_key(account.id, "Production CRM Integration");
    full.environment = Environment::Test;
    full.prefix = "pk".to_owned();
    full.scopes = Some(vec![scope("tenants:write"), scope("billing:read"), scope("sms:send")]);
    full.tenant_ids = Some(vec![tenant.id, TenantId::generate()]);
    full.allowed_ips = Some(vec![net("203.0.113.7/32"), net("10.0.0.0/8"), net("2001:db8::/48")]);
    full.rate_limit_per_minute = 10_000;
    full.expires_at = Some(ts("2027-01-01T00:00:00Z"));
    full.revoked_at = Some(ts("2026-06-01T12:00:00Z"));
    full.revoked_reason = Some("leaked".to_owned());
    full.last_used_at = Some(ts("2026-05-31T23:59:59Z"));
    full.last_used_ip = Some(ip("2001:db8::1"));
    full.metadata = metadata(json!({"crm": "hubspot", "n": 3, "nested": {"a": [1, 2.5, null, true]}, "ü": "ß"}));
    full.created_at = ts("2026-01-01T00:00:00Z");
    full.created_by = Some("usr_01J0000000000000000000000".to_owned());
    full.updated_at = ts("2026-06-01T12:00:00Z");
    create_key(&store, &full).await;

    // Empty lists are not "unrestricted": each must come back as Some(vec![]).
    let mut empty = new_key(account.id, "locked down");
    empty.scopes = Some(vec![]);
    empty.tenant_ids = Some(vec![]);
    empty.allowed_ips = Some(vec![]);
    create_key(&store, &empty).await;

    let mut bare = new_key(account.id, "bare");
    bare.last_used_ip = Some(ip("198.51.100.4"));
    create_key(&store, &bare).await;

    for key in [&full, &empty, &bare] {
        assert_eq!(store.get_key(account.id, key.id).await.expect("get").as_ref(), Some(key));
        let (found, owner) = store.find_key_by_hash(&key.hash).await.expect("find").expect("found by hash");
        assert_eq!(&found, key);
        assert_eq!(owner, account);
    }
    assert_eq!(store.get_key(account.id, KeyId::generate()).await.expect("get unknown"), None);
    let unknown = hasher().hash(&KeyFormat::default().generate(Environment::Live));
    assert_eq!(store.find_key_by_hash(&unknown).await.expect("find unknown"), None);
}

both_backends!(find_key_by_hash_returns_the_current_account);
async fn find_key_by_hash_returns_the_current_account(store: Arc<dyn Store>) {
    let (mut account, key) = seed_account(&store, "Acme").await;
    account.status = AccountStatus::Suspended;
    account.allowed_ips = vec![net("192.0.2.0/24")];
    store.update_account(&account, &audit(account.id, "account.suspended", "x")).await.expect("update");
    let (_, owner) = store.find_key_by_hash(&key.hash).await.expect("find").expect("found");
    assert_eq!(owner, account);
}

both_backends!(find_key_by_id_finds_a_key_in_any_account);
async fn find_key_by_id_finds_a_key_in_any_account(store: Arc<dyn Store>) {
    let (a, a_key) = seed_account(&store, "A").await;
    let (b, b_initial) = seed_account(&store, "B").await;
    let b_key = new_key(b.id, "second");
    create_key(&store, &b_key).await;

    assert_eq!(store.find_key_by_id(a_key.id).await.expect("find A's"), Some(a_key.clone()));
    assert_eq!(store.find_key_by_id(b_initial.id).await.expect("find B's first"), Some(b_initial));
    let found = store.find_key_by_id(b_key.id).await.expect("find B's second").expect("found");
    assert_eq!(found, b_key, "every field, and the account that holds it");
    assert_eq!(found.account_id, b.id);
    assert_ne!(found.account_id, a.id);
    assert_eq!(store.find_key_by_id(KeyId::generate()).await.expect("find unknown"), None);

    // A deleted key is gone for this lookup too.
    store.delete_key(b.id, b_key.id, &audit(b.id, "api_key.deleted", "x")).await.expect("delete");
    assert_eq!(store.find_key_by_id(b_key.id).await.expect("find deleted"), None);
}

both_backends!(a_duplicate_key_hash_is_a_conflict);
async fn a_duplicate_key_hash_is_a_conflict(store: Arc<dyn Store>) {
    let (account, first) = seed_account(&store, "Acme").await;
    let changes_before = all_changes(&store).await;
    let mut copy = new_key(account.id, "copy");
    copy.hash = first.hash;
    let err = store
        .create_key(&copy, &audit(account.id, "api_key.created", &copy.id.to_string()), u64::MAX)
        .await
        .expect_err("same hash");
    assert!(matches!(err, StoreError::Conflict("key_hash")), "{err:?}");
    assert_eq!(store.get_key(account.id, copy.id).await.expect("get"), None);
    assert_eq!(all_changes(&store).await, changes_before, "a failed write leaves no change row");
}

both_backends!(update_key_writes_every_mutable_field);
async fn update_key_writes_every_mutable_field(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let key = new_key(account.id, "before");
    create_key(&store, &key).await;

    let mut changed = key.clone();
    changed.name = "after".to_owned();
    changed.scopes = Some(vec![scope("calls:read")]);
    changed.tenant_ids = Some(vec![]);
    changed.allowed_ips = Some(vec![net("::1/128")]);
    changed.rate_limit_per_minute = 7;
    changed.expires_at = Some(ts("2030-01-01T00:00:00Z"));
    changed.revoked_at = Some(ts("2026-03-03T03:03:03Z"));
    changed.revoked_reason = Some("no longer needed".to_owned());
    changed.metadata = metadata(json!({"k": "v"}));
    changed.updated_at = ts("2026-03-03T03:03:03Z");
    store.update_key(&changed, &audit(account.id, "api_key.updated", &key.id.to_string())).await.expect("update");
    assert_eq!(store.get_key(account.id, key.id).await.expect("get"), Some(changed.clone()));

    // And back to the unrestricted forms.
    let mut reset = changed.clone();
    reset.scopes = None;
    reset.tenant_ids = None;
    reset.allowed_ips = None;
    reset.expires_at = None;
    reset.revoked_at = None;
    reset.revoked_reason = None;
    reset.metadata = Map::new();
    store.update_key(&reset, &audit(account.id, "api_key.updated", &key.id.to_string())).await.expect("update");
    assert_eq!(store.get_key(account.id, key.id).await.expect("get"), Some(reset));
}

both_backends!(keys_list_newest_first_in_pages);
async fn keys_list_newest_first_in_pages(store: Arc<dyn Store>) {
    let (account, initial) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let mut ids = vec![initial.id];
    for i in 0..6 {
        let key = new_key(account.id, &format!("key {i}"));
        create_key(&store, &key).await;
        ids.push(key.id);
    }
    create_key(&store, &new_key(other.id, "someone else's")).await;
    let expected = newest_first(&ids);

    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let p = Page { limit: 3, before: before.clone() };
        let keys = store.list_keys(account.id, &KeyFilter::default(), &p).await.expect("list");
        if keys.is_empty() {
            break;
        }
        assert!(keys.len() <= 3);
        before = keys.last().map(|k| k.id.to_string());
        seen.extend(keys.into_iter().map(|k| k.id));
    }
    assert_eq!(seen, expected);
    assert!(store.list_keys(account.id, &KeyFilter::default(), &page(0)).await.expect("list").is_empty());
}

both_backends!(keys_filter_by_name_status_tenant_environment_and_creator);
async fn keys_filter_by_name_status_tenant_environment_and_creator(store: Arc<dyn Store>) {
    let (account, initial) = seed_account(&store, "Acme").await;
    // The filters' `now`: a day behind the real clock, so the two disagree about `underscore`.
    let now = time::now() - Duration::days(1);
    let tenant_a = TenantId::generate();
    let tenant_b = TenantId::generate();

    let mut crm = new_key(account.id, "Production CRM Integration");
    crm.tenant_ids = Some(vec![tenant_a, tenant_b]);
    crm.created_by = Some("usr_01J0000000000000000000000".to_owned());
    let mut percent = new_key(account.id, "100% uptime");
    percent.tenant_ids = Some(vec![tenant_b]);
    percent.created_by = Some("usr_01J0000000000000000000001".to_owned());
    let mut underscore = new_key(account.id, "a_b");
    underscore.environment = Environment::Test;
    underscore.expires_at = Some(now + Duration::seconds(1));
    let mut lookalike = new_key(account.id, "axb");
    lookalike.revoked_at = Some(now - Duration::days(1));
    lookalike.expires_at = Some(now - Duration::days(2));
    let mut expired = new_key(account.id, "old crm");
    expired.expires_at = Some(now);
    expired.tenant_ids = Some(vec![]);
    expired.environment = Environment::Test;
    let mut backslash = new_key(account.id, r"back\slash");
    backslash.revoked_at = Some(now);
    for key in [&crm, &percent, &underscore, &lookalike, &expired, &backslash] {
        create_key(&store, key).await;
    }
    let name = |n: &str| KeyFilter { name: Some(n.to_owned()), ..KeyFilter::default() };
    let status = |s: KeyStatus| KeyFilter { status: Some(s), now: Some(now), ..KeyFilter::default() };

    assert_eq!(key_ids(&store, account.id, name("crm")).await, newest_first(&[crm.id, expired.id]));
    assert_eq!(key_ids(&store, account.id, name("PRODUCTION crm")).await, vec![crm.id]);
    assert_eq!(key_ids(&store, account.id, name("_")).await, vec![underscore.id]);
    assert_eq!(key_ids(&store, account.id, name("%")).await, vec![percent.id]);
    assert_eq!(key_ids(&store, account.id, name(r"\")).await, vec![backslash.id]);
    assert_eq!(key_ids(&store, account.id, name("a_b")).await, vec![underscore.id]);
    assert!(key_ids(&store, account.id, name("nothing like it")).await.is_empty());

    assert_eq!(
        key_ids(&store, account.id, status(KeyStatus::Active)).await,
        newest_first(&[initial.id, crm.id, percent.id, underscore.id])
    );
    assert_eq!(
        key_ids(&store, account.id, status(KeyStatus::Revoked)).await,
        newest_first(&[lookalike.id, backslash.id])
    );
    assert_eq!(key_ids(&store, account.id, status(KeyStatus::Expired)).await, vec![expired.id]);
    // Without `now`, the store asks the clock, by which `underscore` has expired too.
    let by_clock = KeyFilter { status: Some(KeyStatus::Expired), ..KeyFilter::default() };
    assert_eq!(key_ids(&store, account.id, by_clock).await, newest_first(&[underscore.id, expired.id]));

    let tenant = |t: TenantId| KeyFilter { tenant_id: Some(t), ..KeyFilter::default() };
    assert_eq!(key_ids(&store, account.id, tenant(tenant_a)).await, vec![crm.id]);
    assert_eq!(key_ids(&store, account.id, tenant(tenant_b)).await, newest_first(&[crm.id, percent.id]));
    assert!(key_ids(&store, account.id, tenant(TenantId::generate())).await.is_empty());

    let env = |e: Environment| KeyFilter { environment: Some(e), ..KeyFilter::default() };
    assert_eq!(key_ids(&store, account.id, env(Environment::Test)).await, newest_first(&[underscore.id, expired.id]));
    assert_eq!(key_ids(&store, account.id, env(Environment::Live)).await.len(), 5);

    let creator = |c: &str| KeyFilter { created_by: Some(c.to_owned()), ..KeyFilter::default() };
    assert_eq!(key_ids(&store, account.id, creator("usr_01J0000000000000000000000")).await, vec![crm.id]);
    assert_eq!(key_ids(&store, account.id, creator("usr_01J0000000000000000000001")).await, vec![percent.id]);
    assert!(
        key_ids(&store, account.id, creator("usr_01J000000000000000000000")).await.is_empty(),
        "exact, not a prefix"
    );

    // Filters combine.
    let combined = KeyFilter {
        name: Some("CRM".to_owned()),
        status: Some(KeyStatus::Active),
        tenant_id: Some(tenant_b),
        environment: Some(Environment::Live),
        created_by: Some("usr_01J0000000000000000000000".to_owned()),
        now: Some(now),
    };
    assert_eq!(key_ids(&store, account.id, combined).await, vec![crm.id]);
}

both_backends!(roll_key_inserts_the_new_key_and_shortens_the_old);
async fn roll_key_inserts_the_new_key_and_shortens_the_old(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let mut old = new_key(account.id, "rolling");
    old.scopes = Some(vec![scope("calls:write")]);
    create_key(&store, &old).await;
    let seq_before = store.latest_change().await.expect("latest");

    let mut new = new_key(account.id, "rolling");
    new.scopes = old.scopes.clone();
    let mut shortened = old.clone();
    shortened.expires_at = Some(time::now() + Duration::hours(1));
    shortened.updated_at = time::now();
    let event = audit(account.id, "api_key.rolled", &old.id.to_string());
    store.roll_key(&shortened, &new, &event, u64::MAX).await.expect("roll");

    assert_eq!(store.get_key(account.id, old.id).await.expect("old"), Some(shortened));
    assert_eq!(store.get_key(account.id, new.id).await.expect("new"), Some(new.clone()));
    let changes = store.changes_since(seq_before, 100).await.expect("changes");
    let mut entities: Vec<_> = changes.iter().map(|c| (c.kind, c.entity_id.clone())).collect();
    entities.sort_by_key(|(k, e)| (k.as_str(), e.clone()));
    let mut expected = vec![(ChangeKind::ApiKey, old.id.to_string()), (ChangeKind::ApiKey, new.id.to_string())];
    expected.sort_by_key(|(k, e)| (k.as_str(), e.clone()));
    assert_eq!(entities, expected);
    assert!(all_audit(&store, account.id).await.contains(&event));

    // Rolling onto an existing hash fails as a whole: the old key keeps its expiry.
    let mut clash = new_key(account.id, "clash");
    clash.hash = new.hash;
    let mut shorter = old.clone();
    shorter.expires_at = Some(time::now());
    let err = store
        .roll_key(&shorter, &clash, &audit(account.id, "api_key.rolled", "x"), u64::MAX)
        .await
        .expect_err("hash clash");
    assert!(matches!(err, StoreError::Conflict("key_hash")), "{err:?}");
    let kept = store.get_key(account.id, old.id).await.expect("old").expect("still there");
    assert_ne!(kept.expires_at, shorter.expires_at);
}

both_backends!(delete_key_removes_it_but_keeps_the_record);
async fn delete_key_removes_it_but_keeps_the_record(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let key = new_key(account.id, "doomed");
    create_key(&store, &key).await;
    let seq_before = store.latest_change().await.expect("latest");

    let event = audit(account.id, "api_key.deleted", &key.id.to_string());
    assert!(store.delete_key(account.id, key.id, &event).await.expect("delete"));
    assert_eq!(store.get_key(account.id, key.id).await.expect("get"), None);
    assert_eq!(store.find_key_by_hash(&key.hash).await.expect("find"), None);
    assert!(all_audit(&store, account.id).await.contains(&event));
    let changes = store.changes_since(seq_before, 100).await.expect("changes");
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].kind, changes[0].entity_id.as_str()), (ChangeKind::ApiKey, key.id.to_string().as_str()));
    assert_eq!(changes[0].account_id, account.id);

    // A second delete finds nothing and records nothing.
    let again = audit(account.id, "api_key.deleted", &key.id.to_string());
    assert!(!store.delete_key(account.id, key.id, &again).await.expect("delete again"));
    assert!(!all_audit(&store, account.id).await.contains(&again));
    assert_eq!(store.latest_change().await.expect("latest"), changes[0].seq);
}

both_backends!(usage_is_recorded_in_batches_latest_wins);
async fn usage_is_recorded_in_batches_latest_wins(store: Arc<dyn Store>) {
    let (account, first) = seed_account(&store, "Acme").await;
    let second = new_key(account.id, "second");
    create_key(&store, &second).await;
    let untouched = new_key(account.id, "unused");
    create_key(&store, &untouched).await;
    let seq_before = store.latest_change().await.expect("latest");
    let audit_before = all_audit(&store, account.id).await;

    let t = ts("2026-05-01T10:00:00Z");
    let batch = [
        KeyUsage { key_id: first.id, at: t, ip: ip("203.0.113.7") },
        KeyUsage { key_id: first.id, at: t + Duration::seconds(5), ip: ip("2001:db8::7") },
        KeyUsage { key_id: first.id, at: t + Duration::seconds(2), ip: ip("203.0.113.8") },
        KeyUsage { key_id: second.id, at: t, ip: ip("198.51.100.1") },
        KeyUsage { key_id: KeyId::generate(), at: t, ip: ip("198.51.100.1") },
    ];
    store.record_key_usage(&batch).await.expect("record");
    store.record_key_usage(&[]).await.expect("an empty batch is fine");

    let got = store.get_key(account.id, first.id).await.expect("get").expect("first");
    assert_eq!((got.last_used_at, got.last_used_ip), (Some(t + Duration::seconds(5)), Some(ip("2001:db8::7"))));
    assert_eq!(got.updated_at, first.updated_at, "usage is not an update");
    let got = store.get_key(account.id, second.id).await.expect("get").expect("second");
    assert_eq!((got.last_used_at, got.last_used_ip), (Some(t), Some(ip("198.51.100.1"))));
    let got = store.get_key(account.id, untouched.id).await.expect("get").expect("untouched");
    assert_eq!((got.last_used_at, got.last_used_ip), (None, None));

    // An older batch arriving late does not move the time back.
    store.record_key_usage(&[KeyUsage { key_id: first.id, at: t, ip: ip("192.0.2.1") }]).await.expect("record late");
    let got = store.get_key(account.id, first.id).await.expect("get").expect("first");
    assert_eq!((got.last_used_at, got.last_used_ip), (Some(t + Duration::seconds(5)), Some(ip("2001:db8::7"))));

    // Nor does a settings update carrying a stale copy of the key.
    let mut stale = first.clone();
    stale.name = "renamed".to_owned();
    store.update_key(&stale, &audit(account.id, "api_key.updated", "x")).await.expect("update");
    let got = store.get_key(account.id, first.id).await.expect("get").expect("first");
    assert_eq!(got.name, "renamed");
    assert_eq!(got.last_used_at, Some(t + Duration::seconds(5)));

    // Usage is not audited and does not flood the change feed (only the update above counts).
    assert_eq!(store.changes_since(seq_before, 100).await.expect("changes").len(), 1);
    assert_eq!(all_audit(&store, account.id).await.len(), audit_before.len() + 1);
}

both_backends!(the_key_cap_counts_every_stored_key_of_the_account);
async fn the_key_cap_counts_every_stored_key_of_the_account(store: Arc<dyn Store>) {
    let (account, initial) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let capped = |key: ApiKey, max: u64| {
        let store = Arc::clone(&store);
        async move { store.create_key(&key, &audit(key.account_id, "api_key.created", "x"), max).await }
    };
    // The initial key is one of three; expired and revoked keys count.
    let mut expired = new_key(account.id, "expired");
    expired.expires_at = Some(ts("2020-01-01T00:00:00Z"));
    capped(expired, 3).await.expect("the second of three");
    let revoked = new_key(account.id, "to be revoked");
    capped(revoked.clone(), 3).await.expect("the third of three");
    let mut now_revoked = revoked.clone();
    now_revoked.revoked_at = Some(time::now());
    store.update_key(&now_revoked, &audit(account.id, "api_key.revoked", "x")).await.expect("revoke");
    let refused = capped(new_key(account.id, "fourth"), 3).await.expect_err("a fourth key");
    assert!(matches!(refused, StoreError::LimitReached { what: "api_keys", max: 3 }), "{refused:?}");
    // A roll makes a key too; another account has its own count; deleting makes room.
    let rolled = new_key(account.id, "rolled");
    let err = store
        .roll_key(&initial, &rolled, &audit(account.id, "api_key.rolled", "x"), 3)
        .await
        .expect_err("a roll past the cap");
    assert!(matches!(err, StoreError::LimitReached { .. }), "{err:?}");
    assert!(store.get_key(account.id, rolled.id).await.expect("get").is_none(), "nothing was written");
    capped(new_key(other.id, "theirs"), 3).await.expect("another account");
    store.delete_key(account.id, revoked.id, &audit(account.id, "api_key.deleted", "x")).await.expect("delete");
    capped(new_key(account.id, "fourth"), 3).await.expect("room again");
}

both_backends!(concurrent_creates_never_pass_the_cap);
async fn concurrent_creates_never_pass_the_cap(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let attempts = (0..24).map(|i| {
        let store = Arc::clone(&store);
        let key = new_key(account.id, &format!("racer {i}"));
        tokio::spawn(async move { store.create_key(&key, &audit(key.account_id, "api_key.created", "x"), 5).await })
    });
    let mut made = 0;
    for attempt in attempts.collect::<Vec<_>>() {
        match attempt.await.expect("the task ran") {
            Ok(()) => made += 1,
            Err(StoreError::LimitReached { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(made, 4, "the initial key and four more: exactly the cap of five");
    let tenants = (0..12).map(|i| {
        let store = Arc::clone(&store);
        let tenant = new_tenant(account.id, &format!("t{i}"), None);
        tokio::spawn(async move { store.create_tenant(&tenant, &audit(account.id, "tenant.created", "t"), 3).await })
    });
    let mut made = 0;
    for attempt in tenants.collect::<Vec<_>>() {
        if attempt.await.expect("the task ran").is_ok() {
            made += 1;
        }
    }
    assert_eq!(made, 3);
}

/// A batch for `create_keys`: `n` fresh keys of `account`, each with its own creation event,
/// made a second apart from `t0`.
fn key_batch(account: AccountId, n: usize, t0: Timestamp) -> Vec<(ApiKey, AuditEvent)> {
    (0..n)
        .map(|i| {
            let key = new_key(account, &format!("bulk {i}"));
            let at = t0 + Duration::seconds(i64::try_from(i).expect("small"));
            let event = audit_at(account, "api_key.created", &key.id.to_string(), at);
            (key, event)
        })
        .collect()
}

/// Every audit event of `account`, oldest id first, read page by page.
async fn every_audit_event(store: &Arc<dyn Store>, account: AccountId) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = Page { limit: 100, before: before.clone() };
        let batch = store.list_audit_events(account, &AuditFilter::default(), &page).await.expect("audit events");
        let Some(last) = batch.last() else { break };
        before = Some(last.id.to_string());
        events.extend(batch);
    }
    events.reverse();
    events
}

/// Asserts that a refused `create_keys` left no trace: none of its keys, no audit event of
/// `account` and no change row beyond those there were before.
async fn assert_nothing_written(
    store: &Arc<dyn Store>,
    batch: &[(ApiKey, AuditEvent)],
    audit_before: &[AuditEvent],
    changes_before: &[Change],
) {
    for (key, _) in batch {
        assert_eq!(store.find_key_by_id(key.id).await.expect("find by id"), None, "{}", key.name);
    }
    let account = batch[0].0.account_id;
    assert_eq!(every_audit_event(store, account).await, audit_before, "no audit event");
    assert_eq!(all_changes(store).await, changes_before, "no change row");
}

both_backends!(create_keys_writes_each_key_with_its_audit_event_and_change_row);
async fn create_keys_writes_each_key_with_its_audit_event_and_change_row(store: Arc<dyn Store>) {
    let (account, initial) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let seq_before = store.latest_change().await.expect("latest");
    // 1,001 keys: two full statements of 500 rows and one of a single row, for each table.
    let t0 = ts("2026-04-01T00:00:00Z");
    let mut batch = key_batch(account.id, 1_001, t0);
    let full = &mut batch[500].0;
    full.scopes = Some(vec![scope("tenants:write"), scope("sms:send")]);
    full.tenant_ids = Some(vec![TenantId::generate()]);
    full.allowed_ips = Some(vec![net("10.0.0.0/8"), net("2001:db8::/48")]);
    full.expires_at = Some(ts("2027-01-01T00:00:00Z"));
    full.metadata = metadata(json!({"crm": "hubspot", "n": 3}));
    full.created_by = Some("cli".to_owned());
    let event = &mut batch[500].1;
    event.ip = Some(ip("2001:db8::42"));
    event.request_id = Some("req_bulk".to_owned());
    event.changes = json!({"name": "bulk 500", "scopes": ["tenants:write", "sms:send"]});

    store.create_keys(&batch, 1_002).await.expect("a batch that reaches the cap exactly");

    for (key, _) in &batch {
        assert_eq!(store.get_key(account.id, key.id).await.expect("get").as_ref(), Some(key));
        let (found, owner) = store.find_key_by_hash(&key.hash).await.expect("find").expect("found by hash");
        assert_eq!(&found, key);
        assert_eq!(owner, account);
    }
    assert_eq!(store.get_key(account.id, initial.id).await.expect("get").as_ref(), Some(&initial));
    assert_eq!(key_ids(&store, other.id, KeyFilter::default()).await.len(), 1, "the other account's first key");

    // One audit event per key, exactly as given, beside the account's own.
    let (own, events): (Vec<_>, Vec<_>) =
        every_audit_event(&store, account.id).await.into_iter().partition(|e| e.action == "account.created");
    assert_eq!(own.len(), 1);
    let mut given: Vec<AuditEvent> = batch.iter().map(|(_, event)| event.clone()).collect();
    given.sort_by_key(|e| e.id);
    assert_eq!(events, given);

    // One change row per key, in the batch's order, stamped with its own event's time.
    let changes = store.changes_since(seq_before, 10_000).await.expect("changes");
    let rows: Vec<_> = changes.iter().map(|c| (c.kind, c.entity_id.clone(), c.account_id, c.at)).collect();
    let expected: Vec<_> = batch
        .iter()
        .map(|(key, event)| (ChangeKind::ApiKey, key.id.to_string(), account.id, event.created_at))
        .collect();
    assert_eq!(rows, expected);
    let seqs: Vec<i64> = changes.iter().map(|c| c.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(changes.last().expect("some").at, ts("2026-04-01T00:16:40Z"));

    // The account is full now: one more is refused, as create_key refuses it.
    let err = store.create_keys(&key_batch(account.id, 1, t0), 1_002).await.expect_err("past the cap");
    assert!(matches!(err, StoreError::LimitReached { what: "api_keys", max: 1_002 }), "{err:?}");
    let err = store
        .create_key(&new_key(account.id, "one more"), &audit(account.id, "api_key.created", "x"), 1_002)
        .await
        .expect_err("past the cap");
    assert!(matches!(err, StoreError::LimitReached { what: "api_keys", max: 1_002 }), "{err:?}");
}

both_backends!(create_keys_refuses_a_batch_past_the_cap_whole);
async fn create_keys_refuses_a_batch_past_the_cap_whole(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let t0 = ts("2026-04-01T00:00:00Z");
    let audit_before = every_audit_event(&store, account.id).await;
    let changes_before = all_changes(&store).await;

    // The initial key and five more would be six: the whole batch is refused, not its first four.
    let batch = key_batch(account.id, 5, t0);
    let err = store.create_keys(&batch, 5).await.expect_err("six keys of five");
    assert!(matches!(err, StoreError::LimitReached { what: "api_keys", max: 5 }), "{err:?}");
    assert_nothing_written(&store, &batch, &audit_before, &changes_before).await;
    assert_eq!(key_ids(&store, account.id, KeyFilter::default()).await.len(), 1);

    // An empty batch writes nothing, even at the cap; four more reach it exactly.
    store.create_keys(&[], 0).await.expect("an empty batch");
    assert_eq!(all_changes(&store).await, changes_before);
    store.create_keys(&batch[..4], 5).await.expect("five of five");
    assert_eq!(key_ids(&store, account.id, KeyFilter::default()).await.len(), 5);
    store.create_keys(&[], 5).await.expect("an empty batch at the cap");
    let err = store.create_keys(&batch[4..], 5).await.expect_err("the sixth");
    assert!(matches!(err, StoreError::LimitReached { what: "api_keys", max: 5 }), "{err:?}");
    assert_eq!(store.find_key_by_id(batch[4].0.id).await.expect("find"), None);
    assert_eq!(all_changes(&store).await.len(), changes_before.len() + 4);

    // Without a cap, any number.
    store.create_keys(&batch[4..], u64::MAX).await.expect("no cap");
    assert_eq!(key_ids(&store, account.id, KeyFilter::default()).await.len(), 6);
}

both_backends!(create_keys_refuses_keys_of_two_accounts);
async fn create_keys_refuses_keys_of_two_accounts(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let t0 = ts("2026-04-01T00:00:00Z");
    let mut batch = key_batch(account.id, 3, t0);
    batch.extend(key_batch(other.id, 1, t0));
    let audit_before = every_audit_event(&store, account.id).await;
    let other_audit_before = every_audit_event(&store, other.id).await;
    let changes_before = all_changes(&store).await;

    let err = store.create_keys(&batch, u64::MAX).await.expect_err("two accounts");
    assert!(matches!(err, StoreError::Conflict("mixed_accounts")), "{err:?}");
    assert_nothing_written(&store, &batch, &audit_before, &changes_before).await;
    assert_eq!(every_audit_event(&store, other.id).await, other_audit_before);
}

both_backends!(create_keys_refuses_a_taken_id_or_hash_whole);
async fn create_keys_refuses_a_taken_id_or_hash_whole(store: Arc<dyn Store>) {
    let (account, initial) = seed_account(&store, "Acme").await;
    let t0 = ts("2026-04-01T00:00:00Z");
    let audit_before = every_audit_event(&store, account.id).await;
    let changes_before = all_changes(&store).await;
    let refused = |batch: Vec<(ApiKey, AuditEvent)>, rule: &'static str| {
        let store = Arc::clone(&store);
        let (audit_before, changes_before) = (audit_before.clone(), changes_before.clone());
        async move {
            let err = store.create_keys(&batch, u64::MAX).await.expect_err(rule);
            assert!(matches!(err, StoreError::Conflict(r) if r == rule), "{rule}: {err:?}");
            assert_nothing_written(&store, &batch, &audit_before, &changes_before).await;
        }
    };

    // Two keys of the batch with one id; with one hash; a hash already stored; an audit event id
    // used twice. The clash is the last of 600 rows, in the second statement of keys.
    let mut batch = key_batch(account.id, 600, t0);
    batch[599].0.id = batch[0].0.id;
    refused(batch, "id").await;
    let mut batch = key_batch(account.id, 600, t0);
    batch[599].0.hash = batch[3].0.hash;
    refused(batch, "key_hash").await;
    let mut batch = key_batch(account.id, 600, t0);
    batch[599].0.hash = initial.hash;
    refused(batch, "key_hash").await;
    let mut batch = key_batch(account.id, 600, t0);
    batch[599].1.id = batch[0].1.id;
    refused(batch, "id").await;

    // The same batch without the clash goes in.
    store.create_keys(&key_batch(account.id, 600, t0), u64::MAX).await.expect("no clash");
    assert_eq!(all_changes(&store).await.len(), changes_before.len() + 600);
}

// ---------------------------------------------------------------------------------------------
// Tenants.

both_backends!(the_tenant_cap_counts_tenants_whatever_their_status);
async fn the_tenant_cap_counts_tenants_whatever_their_status(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let first = new_tenant(account.id, "first", Some("ext-1"));
    let second = new_tenant(account.id, "second", None);
    for tenant in [&first, &second] {
        store.create_tenant(tenant, &audit(account.id, "tenant.created", "t"), 2).await.expect("create");
    }
    let mut suspended = second.clone();
    suspended.status = AccountStatus::Suspended;
    store.update_tenant(&suspended, &audit(account.id, "tenant.suspended", "t")).await.expect("suspend");
    let err = store
        .create_tenant(&new_tenant(account.id, "third", None), &audit(account.id, "tenant.created", "t"), 2)
        .await
        .expect_err("a third tenant");
    assert!(matches!(err, StoreError::LimitReached { what: "tenants", max: 2 }), "{err:?}");
    store
        .create_tenant(&new_tenant(other.id, "theirs", None), &audit(other.id, "tenant.created", "t"), 2)
        .await
        .expect("another account's tenants are its own");
}

both_backends!(tenant_round_trips_and_external_ids_are_unique_per_account);
async fn tenant_round_trips_and_external_ids_are_unique_per_account(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;

    let mut tenant = new_tenant(account.id, "Customer One", Some("crm-1"));
    tenant.metadata = metadata(json!({"plan": "gold", "seats": 12, "tags": ["a", "b"]}));
    tenant.created_at = ts("2026-01-01T00:00:00Z");
    tenant.updated_at = ts("2026-01-02T00:00:00Z");
    store.create_tenant(&tenant, &audit(account.id, "tenant.created", "t"), u64::MAX).await.expect("create");
    assert_eq!(store.get_tenant(account.id, tenant.id).await.expect("get"), Some(tenant.clone()));

    let changes_before = all_changes(&store).await;
    let clash = new_tenant(account.id, "Customer One again", Some("crm-1"));
    let err =
        store.create_tenant(&clash, &audit(account.id, "tenant.created", "t"), u64::MAX).await.expect_err("clash");
    assert!(matches!(err, StoreError::Conflict("tenant_external_id")), "{err:?}");
    assert_eq!(store.get_tenant(account.id, clash.id).await.expect("get"), None);
    assert_eq!(all_changes(&store).await, changes_before);

    // The same external id in another account, and any number of tenants without one, are fine.
    let elsewhere = new_tenant(other.id, "Theirs", Some("crm-1"));
    store.create_tenant(&elsewhere, &audit(other.id, "tenant.created", "t"), u64::MAX).await.expect("other account");
    let anon1 = new_tenant(account.id, "No external id", None);
    let anon2 = new_tenant(account.id, "No external id either", None);
    store.create_tenant(&anon1, &audit(account.id, "tenant.created", "t"), u64::MAX).await.expect("anon 1");
    store.create_tenant(&anon2, &audit(account.id, "tenant.created", "t"), u64::MAX).await.expect("anon 2");
    assert_eq!(store.get_tenant(account.id, anon2.id).await.expect("get"), Some(anon2.clone()));

    // Updating into a taken external id is the same conflict; a free one is fine.
    let mut renamed = anon1.clone();
    renamed.external_id = Some("crm-1".to_owned());
    let err = store.update_tenant(&renamed, &audit(account.id, "tenant.updated", "t")).await.expect_err("clash");
    assert!(matches!(err, StoreError::Conflict("tenant_external_id")), "{err:?}");
    renamed.external_id = Some("crm-2".to_owned());
    renamed.name = "Renamed".to_owned();
    renamed.status = AccountStatus::Suspended;
    renamed.metadata = metadata(json!({"x": null}));
    renamed.updated_at = ts("2026-04-04T04:04:04Z");
    store.update_tenant(&renamed, &audit(account.id, "tenant.updated", "t")).await.expect("update");
    assert_eq!(store.get_tenant(account.id, anon1.id).await.expect("get"), Some(renamed.clone()));

    let mut got = store
        .get_tenants(account.id, &[tenant.id, renamed.id, elsewhere.id, TenantId::generate()])
        .await
        .expect("get many");
    got.sort_by_key(|t| t.id);
    let mut expected = vec![tenant, renamed];
    expected.sort_by_key(|t| t.id);
    assert_eq!(got, expected);
    assert!(store.get_tenants(account.id, &[]).await.expect("none").is_empty());
}

both_backends!(tenants_list_filters_and_pages);
async fn tenants_list_filters_and_pages(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let mut ids = Vec::new();
    let mut suspended = Vec::new();
    for i in 0..5 {
        let mut t = new_tenant(account.id, &format!("tenant {i}"), Some(&format!("ext-{i}")));
        if i % 2 == 0 {
            t.status = AccountStatus::Suspended;
            suspended.push(t.id);
        }
        store.create_tenant(&t, &audit(account.id, "tenant.created", "t"), u64::MAX).await.expect("create");
        ids.push(t.id);
    }
    store
        .create_tenant(
            &new_tenant(other.id, "theirs", Some("ext-1")),
            &audit(other.id, "tenant.created", "t"),
            u64::MAX,
        )
        .await
        .expect("create");

    let list = |filter: TenantFilter, p: Page| {
        let store = store.clone();
        async move {
            let tenants = store.list_tenants(account.id, &filter, &p).await.expect("list");
            tenants.into_iter().map(|t| t.id).collect::<Vec<_>>()
        }
    };
    let expected = newest_first(&ids);
    assert_eq!(list(TenantFilter::default(), page(100)).await, expected);
    let first = list(TenantFilter::default(), page(2)).await;
    assert_eq!(first, expected[..2]);
    assert_eq!(list(TenantFilter::default(), page_before(10, &first[1].to_string())).await, expected[2..]);

    let by_status = TenantFilter { status: Some(AccountStatus::Suspended), ..TenantFilter::default() };
    assert_eq!(list(by_status, page(100)).await, newest_first(&suspended));
    let by_external = TenantFilter { external_id: Some("ext-1".to_owned()), ..TenantFilter::default() };
    assert_eq!(list(by_external, page(100)).await, vec![ids[1]]);
    let both = TenantFilter { status: Some(AccountStatus::Suspended), external_id: Some("ext-1".to_owned()) };
    assert!(list(both, page(100)).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Scoping.

both_backends!(another_accounts_objects_do_not_exist);
async fn another_accounts_objects_do_not_exist(store: Arc<dyn Store>) {
    let (a, a_key) = seed_account(&store, "A").await;
    let (b, _) = seed_account(&store, "B").await;
    let a_tenant = new_tenant(a.id, "A's tenant", Some("x"));
    store.create_tenant(&a_tenant, &audit(a.id, "tenant.created", "t"), u64::MAX).await.expect("tenant");

    assert_eq!(store.get_key(b.id, a_key.id).await.expect("get"), None);
    assert_eq!(store.get_tenant(b.id, a_tenant.id).await.expect("get"), None);
    assert!(store.get_tenants(b.id, &[a_tenant.id]).await.expect("get many").is_empty());
    assert!(!key_ids(&store, b.id, KeyFilter::default()).await.contains(&a_key.id));
    assert!(store.list_tenants(b.id, &TenantFilter::default(), &page(100)).await.expect("list").is_empty());

    // B cannot delete or change A's objects by naming them.
    assert!(!store.delete_key(b.id, a_key.id, &audit(b.id, "api_key.deleted", "x")).await.expect("delete"));
    assert_eq!(store.get_key(a.id, a_key.id).await.expect("get"), Some(a_key.clone()));
    let mut hijack = a_key.clone();
    hijack.account_id = b.id;
    hijack.name = "hijacked".to_owned();
    store.update_key(&hijack, &audit(b.id, "api_key.updated", "x")).await.expect("update finds nothing");
    assert_eq!(store.get_key(a.id, a_key.id).await.expect("get"), Some(a_key));
    let mut hijack = a_tenant.clone();
    hijack.account_id = b.id;
    hijack.name = "hijacked".to_owned();
    store.update_tenant(&hijack, &audit(b.id, "tenant.updated", "x")).await.expect("update finds nothing");
    assert_eq!(store.get_tenant(a.id, a_tenant.id).await.expect("get"), Some(a_tenant));
    // Writes that changed nothing left no trace in B's log.
    assert_eq!(all_audit(&store, b.id).await.len(), 1, "only B's own account.created");
}

// ---------------------------------------------------------------------------------------------
// Audit log.

both_backends!(audit_events_round_trip_filter_and_page);
async fn audit_events_round_trip_filter_and_page(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let key = new_key(account.id, "k");
    let t0 = ts("2026-03-01T00:00:00Z");

    let mut full = audit_at(account.id, "api_key.created", &key.id.to_string(), t0);
    full.actor_type = "api_key".to_owned();
    full.actor_id = "key_01J00000000000000000000000".to_owned();
    full.ip = Some(ip("2001:db8::42"));
    full.user_agent = Some("curl/8.5".to_owned());
    full.request_id = Some("req_01J00000000000000000000000".to_owned());
    full.changes = json!({"name": {"from": null, "to": "k"}, "scopes": ["a:read"], "n": 1});
    store.create_key(&key, &full, u64::MAX).await.expect("create");

    let tenant = new_tenant(account.id, "t", None);
    let later = audit_at(account.id, "tenant.created", &tenant.id.to_string(), t0 + Duration::hours(1));
    store.create_tenant(&tenant, &later, u64::MAX).await.expect("tenant");
    let mut suspended = tenant.clone();
    suspended.status = AccountStatus::Suspended;
    let latest = audit_at(account.id, "tenant.suspended", &tenant.id.to_string(), t0 + Duration::hours(2));
    store.update_tenant(&suspended, &latest).await.expect("suspend");

    let events = all_audit(&store, account.id).await;
    assert_eq!(events.len(), 4, "account.created + 3");
    assert!(events.contains(&full), "every field round-trips");
    let ids: Vec<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, newest_first(&ids));
    assert!(!all_audit(&store, other.id).await.iter().any(|e| events.contains(e)), "scoped to the account");

    let filtered = |filter: AuditFilter| {
        let store = store.clone();
        async move {
            let events = store.list_audit_events(account.id, &filter, &page(100)).await.expect("list");
            events.into_iter().map(|e| e.id).collect::<Vec<_>>()
        }
    };
    let action = AuditFilter { action: Some("tenant.created".to_owned()), ..AuditFilter::default() };
    assert_eq!(filtered(action).await, vec![later.id]);
    let actor = AuditFilter { actor_id: Some(full.actor_id.clone()), ..AuditFilter::default() };
    assert_eq!(filtered(actor).await, vec![full.id]);
    let target = AuditFilter { target_id: Some(tenant.id.to_string()), ..AuditFilter::default() };
    assert_eq!(filtered(target).await, newest_first(&[later.id, latest.id]));
    // since is inclusive, until exclusive.
    let window = AuditFilter { since: Some(t0), until: Some(t0 + Duration::hours(2)), ..AuditFilter::default() };
    assert_eq!(filtered(window).await, newest_first(&[full.id, later.id]));
    let window = AuditFilter {
        since: Some(t0 + Duration::hours(1)),
        until: Some(t0 + Duration::hours(1) + Duration::seconds(1)),
        ..AuditFilter::default()
    };
    assert_eq!(filtered(window).await, vec![later.id]);
    let combined = AuditFilter {
        action: Some("tenant.suspended".to_owned()),
        target_id: Some(tenant.id.to_string()),
        since: Some(t0),
        ..AuditFilter::default()
    };
    assert_eq!(filtered(combined).await, vec![latest.id]);

    let first = store.list_audit_events(account.id, &AuditFilter::default(), &page(3)).await.expect("page 1");
    assert_eq!(first.iter().map(|e| e.id).collect::<Vec<_>>(), ids[..3]);
    let rest = store
        .list_audit_events(account.id, &AuditFilter::default(), &page_before(3, &first[2].id.to_string()))
        .await
        .expect("page 2");
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), ids[3..]);
}

both_backends!(audit_event_tenant_ids_round_trip);
async fn audit_event_tenant_ids_round_trip(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let scopes = [None, Some(vec![]), Some(vec![TenantId::generate(), TenantId::generate()])];
    let mut written = Vec::new();
    for tenant_ids in scopes {
        let key = new_key(account.id, "k");
        let mut event = audit(account.id, "api_key.created", &key.id.to_string());
        event.tenant_ids = tenant_ids;
        store.create_key(&key, &event, u64::MAX).await.expect("create");
        written.push(event);
    }

    let events = all_audit(&store, account.id).await;
    for event in &written {
        let read = events.iter().find(|e| e.id == event.id).expect("the event is listed");
        // Some(vec![]) (no tenant at all) must not come back as None (account-wide), nor the
        // reverse.
        assert_eq!(read.tenant_ids, event.tenant_ids);
        assert_eq!(read, event, "every field round-trips");
    }
}

// ---------------------------------------------------------------------------------------------
// Deployment facts.

both_backends!(the_hash_secret_fingerprint_is_claimed_once);
async fn the_hash_secret_fingerprint_is_claimed_once(store: Arc<dyn Store>) {
    assert_eq!(store.hash_secret_fingerprint().await.expect("get"), None, "a new database has none");
    assert_eq!(store.claim_hash_secret_fingerprint("fp-first").await.expect("claim"), None, "this call stored it");
    assert_eq!(store.hash_secret_fingerprint().await.expect("get"), Some("fp-first".to_owned()));

    // Another value is refused, and reported: the first one stays.
    let second = store.claim_hash_secret_fingerprint("fp-second").await.expect("claim again");
    assert_eq!(second, Some("fp-first".to_owned()));
    assert_eq!(store.hash_secret_fingerprint().await.expect("get"), Some("fp-first".to_owned()));
    // The same value again: already there.
    let same = store.claim_hash_secret_fingerprint("fp-first").await.expect("claim the same");
    assert_eq!(same, Some("fp-first".to_owned()));

    // Not an account's business: neither audited nor in the change feed.
    assert!(all_changes(&store).await.is_empty());
}

both_backends!(concurrent_fingerprint_claims_have_one_winner, multi_thread);
async fn concurrent_fingerprint_claims_have_one_winner(store: Arc<dyn Store>) {
    const CLAIMS: usize = 16;
    let claims: Vec<_> = (0..CLAIMS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mine = format!("fp-{i}");
                let before = store.claim_hash_secret_fingerprint(&mine).await.expect("claim");
                (mine, before)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut reported = Vec::new();
    for claim in claims {
        match claim.await.expect("join") {
            (mine, None) => winners.push(mine),
            (_, Some(before)) => reported.push(before),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim stores its value: {winners:?}");
    let stored = store.hash_secret_fingerprint().await.expect("get").expect("stored");
    assert_eq!(stored, winners[0]);
    assert!(reported.iter().all(|r| *r == stored), "every other claim reports the winner's: {reported:?}");
}

// ---------------------------------------------------------------------------------------------
// Change feed.

both_backends!(every_write_appends_to_the_change_feed_in_order);
async fn every_write_appends_to_the_change_feed_in_order(store: Arc<dyn Store>) {
    assert_eq!(store.latest_change().await.expect("latest"), 0);
    assert!(store.changes_since(0, 100).await.expect("changes").is_empty());

    let (mut account, initial) = seed_account(&store, "Acme").await;
    let key = new_key(account.id, "k");
    create_key(&store, &key).await;
    let mut updated = key.clone();
    updated.revoked_at = Some(time::now());
    store.update_key(&updated, &audit(account.id, "api_key.revoked", "k")).await.expect("revoke");
    let tenant = new_tenant(account.id, "t", None);
    store.create_tenant(&tenant, &audit(account.id, "tenant.created", "t"), u64::MAX).await.expect("tenant");
    store.update_tenant(&tenant, &audit(account.id, "tenant.updated", "t")).await.expect("tenant update");
    account.name = "Renamed".to_owned();
    store.update_account(&account, &audit(account.id, "account.updated", "a")).await.expect("account update");
    store.delete_key(account.id, key.id, &audit(account.id, "api_key.deleted", "k")).await.expect("delete");

    let changes = all_changes(&store).await;
    let seqs: Vec<i64> = changes.iter().map(|c| c.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "ascending seq: {seqs:?}");
    assert!(changes.iter().all(|c| c.account_id == account.id));
    let what: Vec<(ChangeKind, String)> = changes.iter().map(|c| (c.kind, c.entity_id.clone())).collect();
    let (a, i, k, t) = (account.id.to_string(), initial.id.to_string(), key.id.to_string(), tenant.id.to_string());
    // create_account writes both of its rows in one transaction, in either order.
    let mut created: Vec<_> = what[..2].to_vec();
    created.sort_by_key(|(k, e)| (k.as_str(), e.clone()));
    assert_eq!(created, vec![(ChangeKind::Account, a.clone()), (ChangeKind::ApiKey, i)]);
    assert_eq!(
        what[2..],
        [
            (ChangeKind::ApiKey, k.clone()),
            (ChangeKind::ApiKey, k.clone()),
            (ChangeKind::Tenant, t.clone()),
            (ChangeKind::Tenant, t),
            (ChangeKind::Account, a),
            (ChangeKind::ApiKey, k),
        ]
    );
    assert_eq!(store.latest_change().await.expect("latest"), *seqs.last().expect("some changes"));

    // Paging through the feed.
    let first = store.changes_since(0, 3).await.expect("first 3");
    assert_eq!(first, changes[..3]);
    let rest = store.changes_since(first[2].seq, 100).await.expect("rest");
    assert_eq!(rest, changes[3..]);
    assert!(store.changes_since(*seqs.last().expect("some"), 100).await.expect("none").is_empty());
}

both_backends!(old_changes_are_purged_by_time);
async fn old_changes_are_purged_by_time(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let t0 = ts("2026-01-01T00:00:00Z");
    let mut seqs = Vec::new();
    for hours in [0, 1, 2] {
        let tenant = new_tenant(account.id, "t", None);
        let at = t0 + Duration::hours(hours);
        store.create_tenant(&tenant, &audit_at(account.id, "tenant.created", "t", at), u64::MAX).await.expect("create");
        let latest = store.latest_change().await.expect("latest");
        let change = store.changes_since(latest - 1, 1).await.expect("change").pop().expect("the new change");
        assert_eq!(change.at, at, "a change is stamped with its audit event's time");
        seqs.push(latest);
    }
    let latest = store.latest_change().await.expect("latest");

    assert_eq!(store.purge_changes(t0 - Duration::days(1)).await.expect("purge none"), 0);
    // `before` is exclusive: the change at exactly t0 + 1h stays. (seed_account's changes are
    // stamped now, after 2026-01-01, so they stay too.)
    assert_eq!(store.purge_changes(t0 + Duration::hours(1)).await.expect("purge"), 1);
    let left: Vec<i64> = all_changes(&store).await.iter().map(|c| c.seq).collect();
    assert!(!left.contains(&seqs[0]));
    assert!(left.contains(&seqs[1]) && left.contains(&seqs[2]));
    assert_eq!(store.latest_change().await.expect("latest"), latest);

    // Purging everything never lets a seq be handed out twice.
    store.purge_changes(time::now() + Duration::days(1)).await.expect("purge all");
    assert!(all_changes(&store).await.is_empty());
    let tenant = new_tenant(account.id, "t", None);
    store.create_tenant(&tenant, &audit(account.id, "tenant.created", "t"), u64::MAX).await.expect("create");
    assert!(store.latest_change().await.expect("latest") > latest);
}

// ---------------------------------------------------------------------------------------------
// The request log.

fn request(account: AccountId, key: Option<KeyId>, at: Timestamp, status: u16, outcome: &str) -> RequestRecord {
    RequestRecord {
        id: RequestRecord::generate_id(),
        // Clients choose their own X-Request-Id: the same one twice must be fine.
        request_id: "req_same".to_owned(),
        at,
        account_id: account,
        key_id: key,
        tenant_id: None,
        route: "/v1/tenants/{id}".to_owned(),
        method: "GET".to_owned(),
        status,
        outcome: outcome.to_owned(),
        client_ip: Some(ip("203.0.113.7")),
        latency_us: 1234,
        via_key_id: None,
    }
}

fn usage_row(day: &str, outcome: &str, count: u64) -> UsageRow {
    UsageRow { day: day.to_owned(), outcome: outcome.to_owned(), count }
}

both_backends!(a_listing_that_matches_little_stops_at_its_budget_and_goes_on_from_its_cursor);
async fn a_listing_that_matches_little_stops_at_its_budget_and_goes_on_from_its_cursor(store: Arc<dyn Store>) {
    // 201 chunks (one a batch): key A's oldest record, 100 of key B, A's second, 100 of B.
    let (account, a, b) = (AccountId::generate(), KeyId::generate(), KeyId::generate());
    let at = ts("2026-11-24T10:00:00Z");
    let mut wanted = Vec::new();
    for n in 0..202 {
        let key = if n == 0 || n == 101 { a } else { b };
        let record = request(account, Some(key), at, 200, "ok");
        if key == a {
            wanted.push(record.clone());
        }
        store.record_requests(&RequestChunk::group(&[record]).expect("record ids")).await.expect("record");
    }
    wanted.reverse();
    let by_a = RequestFilter { key_id: Some(a), ..RequestFilter::default() };

    let first = store.list_requests(account, &by_a, &page(11)).await.expect("list");
    let resume = first.resume.clone().expect("the listing stopped at its budget with a cursor");
    assert_eq!(first.records, wanted[..1], "every wanted record above the cursor, and only those");
    assert!(resume.as_str() < wanted[0].id.as_str() && resume.as_str() > wanted[1].id.as_str());
    let rest = store.list_requests(account, &by_a, &page_before(11, &resume)).await.expect("list");
    assert_eq!((rest.records, rest.resume), (wanted[1..].to_vec(), None), "the cursor loses nothing");

    // A listing that fills its page early is not cut short, whatever it matches.
    let all = store.list_requests(account, &RequestFilter::default(), &page(100)).await.expect("list");
    assert_eq!((all.records.len(), all.resume), (100, None));
}

both_backends!(request_records_round_trip_and_list_newest_first);
async fn request_records_round_trip_and_list_newest_first(store: Arc<dyn Store>) {
    let account = AccountId::generate();
    let key = KeyId::generate();
    let tenant = TenantId::generate();
    let mut first = request(account, Some(key), ts("2026-11-24T10:00:00Z"), 200, "ok");
    first.tenant_id = Some(tenant);
    first.client_ip = Some(ip("2001:db8::1"));
    first.latency_us = u64::from(u32::MAX) + 7;
    let mut records = vec![first];
    for (i, (status, outcome)) in [(403, "insufficient_scope"), (404, "not_found"), (200, "ok")].into_iter().enumerate()
    {
        let mut r =
            request(account, Some(key), ts("2026-11-24T10:00:01Z") + Duration::seconds(i as i64), status, outcome);
        r.client_ip = None;
        records.push(r);
    }
    store.record_requests(&RequestChunk::group(&records).expect("record ids")).await.expect("record");
    store.record_requests(&RequestChunk::group(&[]).expect("record ids")).await.expect("an empty batch is fine");

    let listed = store.list_requests(account, &RequestFilter::default(), &page(100)).await.expect("list").records;
    let mut expected = records.clone();
    expected.reverse();
    assert_eq!(listed, expected, "every field round-trips, newest first");

    // Pages by record id.
    let first_page = store.list_requests(account, &RequestFilter::default(), &page(2)).await.expect("page 1").records;
    assert_eq!(first_page, expected[..2]);
    let rest = store
        .list_requests(account, &RequestFilter::default(), &page_before(10, &first_page[1].id))
        .await
        .expect("page 2")
        .records;
    assert_eq!(rest, expected[2..]);

    // Filters.
    let list = |filter: RequestFilter| {
        let store = Arc::clone(&store);
        async move { store.list_requests(account, &filter, &page(100)).await.expect("list").records }
    };
    let statuses = |rows: Vec<RequestRecord>| rows.into_iter().map(|r| r.status).collect::<Vec<_>>();
    assert_eq!(statuses(list(RequestFilter { status: Some(200), ..Default::default() }).await), [200, 200]);
    assert_eq!(
        statuses(list(RequestFilter { key_id: Some(KeyId::generate()), ..Default::default() }).await),
        [0u16; 0]
    );
    assert_eq!(statuses(list(RequestFilter { key_id: Some(key), ..Default::default() }).await).len(), 4);
    let window = RequestFilter {
        since: Some(ts("2026-11-24T10:00:01Z")),
        until: Some(ts("2026-11-24T10:00:03Z")),
        ..Default::default()
    };
    assert_eq!(statuses(list(window).await), [404, 403], "since inclusive, until exclusive");

    // Another account sees nothing.
    let other =
        store.list_requests(AccountId::generate(), &RequestFilter::default(), &page(100)).await.expect("list").records;
    assert!(other.is_empty());
}

fn count(
    account: AccountId,
    key: KeyId,
    tenant: Option<TenantId>,
    day: &str,
    outcome: &'static str,
    n: u64,
) -> UsageCount {
    let day = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").expect("a day");
    UsageCount { account_id: account, key_id: key, tenant_id: tenant, day, outcome, count: n }
}

fn day(d: &str) -> chrono::NaiveDate {
    chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("a day")
}

both_backends!(usage_counters_add_up_per_utc_day_and_outcome);
async fn usage_counters_add_up_per_utc_day_and_outcome(store: Arc<dyn Store>) {
    let account = AccountId::generate();
    let (key, other_key) = (KeyId::generate(), KeyId::generate());
    let (tenant, other_tenant) = (TenantId::generate(), TenantId::generate());
    store
        .add_usage(&[
            count(account, key, None, "2026-11-23", "ok", 1),
            count(account, key, None, "2026-11-24", "ok", 2),
            count(account, key, Some(tenant), "2026-11-24", "ok", 5),
            count(account, key, None, "2026-11-24", "not_found", 1),
            count(account, other_key, Some(other_tenant), "2026-11-24", "ok", 7),
            count(AccountId::generate(), key, None, "2026-11-24", "ok", 100),
        ])
        .await
        .expect("add");
    // Counters only grow: a second batch adds to the same rows (and makes new ones).
    store
        .add_usage(&[
            count(account, key, None, "2026-11-24", "ok", 3),
            count(account, key, None, "2026-11-24", "insufficient_scope", 1),
        ])
        .await
        .expect("add again");
    store.add_usage(&[]).await.expect("an empty batch is fine");

    let november = (day("2026-11-01"), day("2026-11-30"));
    let usage = |filter: UsageFilter, (first, last): (chrono::NaiveDate, chrono::NaiveDate)| {
        let store = Arc::clone(&store);
        async move { store.usage(account, filter, first, last).await.expect("usage") }
    };
    let of_key = UsageFilter { key_id: Some(key), tenant_id: None };
    assert_eq!(
        usage(of_key, november).await,
        [
            usage_row("2026-11-24", "insufficient_scope", 1),
            usage_row("2026-11-24", "not_found", 1),
            usage_row("2026-11-24", "ok", 10),
            usage_row("2026-11-23", "ok", 1),
        ],
        "a key's requests, whatever their tenant, newest day first"
    );
    let of_tenant = UsageFilter { key_id: None, tenant_id: Some(tenant) };
    assert_eq!(usage(of_tenant, november).await, [usage_row("2026-11-24", "ok", 5)], "one tenant's");
    assert_eq!(
        usage(UsageFilter::default(), november).await,
        [
            usage_row("2026-11-24", "insufficient_scope", 1),
            usage_row("2026-11-24", "not_found", 1),
            usage_row("2026-11-24", "ok", 17),
            usage_row("2026-11-23", "ok", 1),
        ],
        "the whole account's: every key and tenant, no other account's"
    );
    // The days are inclusive at both ends.
    assert_eq!(usage(of_key, (day("2026-11-23"), day("2026-11-23"))).await, [usage_row("2026-11-23", "ok", 1)]);
    assert!(usage(of_key, (day("2026-11-25"), day("2026-12-31"))).await.is_empty());
    // Another account's key of the same id counts nothing here, and vice versa.
    let none = store.usage(AccountId::generate(), of_key, november.0, november.1).await.expect("usage");
    assert!(none.is_empty());
}

both_backends!(large_request_batches_are_written_whole);
async fn large_request_batches_are_written_whole(store: Arc<dyn Store>) {
    let account = AccountId::generate();
    let at = ts("2026-11-24T10:00:00Z");
    let records: Vec<RequestRecord> = (0..1200).map(|_| request(account, None, at, 200, "ok")).collect();
    store.record_requests(&RequestChunk::group(&records).expect("record ids")).await.expect("record");
    let mut count = 0;
    let mut before: Option<String> = None;
    loop {
        let page = Page { limit: 100, before: before.clone() };
        let rows = store.list_requests(account, &RequestFilter::default(), &page).await.expect("list").records;
        if rows.is_empty() {
            break;
        }
        count += rows.len();
        before = rows.last().map(|r| r.id.clone());
    }
    assert_eq!(count, 1200);

    // A batch written again (a retry after a commit whose answer was lost) lists each record once.
    store.record_requests(&RequestChunk::group(&records[..10]).expect("record ids")).await.expect("record again");
    let newest = store.list_requests(account, &RequestFilter::default(), &page(20)).await.expect("list").records;
    let mut ids: Vec<&str> = newest.iter().map(|r| r.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 20, "no record twice: {ids:?}");
    // Record ids are of now: the purge reaches past them. It counts the records it deleted, the
    // copies written twice included.
    let after = time::now() + Duration::seconds(1);
    assert_eq!(store.purge_requests(after).await.expect("purge"), 1210);
    assert!(store.list_requests(account, &RequestFilter::default(), &page(10)).await.expect("list").records.is_empty());
}

both_backends!(old_request_records_are_purged_by_time);
async fn old_request_records_are_purged_by_time(store: Arc<dyn Store>) {
    let account = AccountId::generate();
    let t0 = ts("2026-01-01T00:00:00Z");
    // Made at those times: record ids are ordered by the time they were made, and retention
    // deletes by id.
    let records: Vec<RequestRecord> = (0..3)
        .map(|h| RequestRecord {
            id: RequestRecord::first_id_at(t0 + Duration::hours(h)),
            ..request(account, None, t0 + Duration::hours(h), 200, "ok")
        })
        .collect();
    // Written as the flusher writes them, a batch at a time.
    for record in &records {
        store
            .record_requests(&RequestChunk::group(std::slice::from_ref(record)).expect("record ids"))
            .await
            .expect("record");
    }
    assert_eq!(store.purge_requests(t0).await.expect("purge none"), 0);
    // `before` is exclusive: the record at exactly t0 + 1h stays.
    assert_eq!(store.purge_requests(t0 + Duration::hours(1)).await.expect("purge"), 1);
    let left = store.list_requests(account, &RequestFilter::default(), &page(100)).await.expect("list").records;
    assert_eq!(left.iter().map(|r| r.at).collect::<Vec<_>>(), [t0 + Duration::hours(2), t0 + Duration::hours(1)]);

    // Retention deletes whole chunks: one holding records on both sides of the cut-off stays
    // until its newest record is older (a chunk holds one written batch of one time bucket, at
    // most 2^20 ms).
    let t3 = t0 + Duration::hours(3);
    let both = [t3, t3 + Duration::seconds(1)]
        .map(|at| RequestRecord { id: RequestRecord::first_id_at(at), ..request(account, None, at, 200, "ok") });
    assert_eq!(both[0].id[..9], both[1].id[..9], "one time bucket");
    store.record_requests(&RequestChunk::group(&both).expect("record ids")).await.expect("record");
    assert_eq!(store.purge_requests(t3 + Duration::seconds(1)).await.expect("purge"), 2, "t0+1h and t0+2h");
    let left = store.list_requests(account, &RequestFilter::default(), &page(100)).await.expect("list").records;
    assert_eq!(left.len(), 2, "the chunk of t3 and t3+1s stays whole");
    assert_eq!(store.purge_requests(t3 + Duration::seconds(2)).await.expect("purge"), 2);

    // Records of one batch in two time buckets are two chunks, purged apart.
    let apart = [t0 + Duration::hours(5), t0 + Duration::hours(6)]
        .map(|at| RequestRecord { id: RequestRecord::first_id_at(at), ..request(account, None, at, 200, "ok") });
    store.record_requests(&RequestChunk::group(&apart).expect("record ids")).await.expect("record");
    assert_eq!(store.purge_requests(t0 + Duration::hours(6)).await.expect("purge"), 1);
}

// ---------------------------------------------------------------------------------------------
// The store itself.

both_backends!(migrations_are_idempotent_and_ping_works);
async fn migrations_are_idempotent_and_ping_works(store: Arc<dyn Store>) {
    store.migrate().await.expect("migrate again");
    store.migrate().await.expect("and again");
    store.ping().await.expect("ping");
    assert!(["sqlite", "postgres"].contains(&store.backend()));
    // The data survives re-running migrations.
    let (account, _) = seed_account(&store, "Acme").await;
    store.migrate().await.expect("migrate with data");
    assert!(store.get_account(account.id).await.expect("get").is_some());
}

both_backends!(a_closed_store_is_unavailable);
async fn a_closed_store_is_unavailable(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    store.close().await;
    let err = store.ping().await.expect_err("closed");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let err = store.get_account(AccountId::generate()).await.expect_err("closed");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn connect_refuses_an_unknown_scheme() {
    match connect("mysql://x").await {
        Err(ConnectError::UnknownScheme(scheme)) => assert_eq!(scheme, "mysql"),
        Err(other) => panic!("expected UnknownScheme, got {other:?}"),
        Ok(_) => panic!("mysql:// must be refused"),
    }
    assert!(matches!(connect("keygate.db").await, Err(ConnectError::NotAUrl)));
}

#[tokio::test]
async fn connect_reports_an_unopenable_sqlite_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("missing-dir").join("keygate.db").display());
    assert!(matches!(connect(&url).await, Err(ConnectError::Open(_))));
}

#[tokio::test]
async fn an_in_memory_sqlite_store_works() {
    let store = connect("sqlite::memory:").await.expect("open in memory");
    assert_eq!(store.backend(), "sqlite");
    let (account, key) = seed_account(&store, "Acme").await;
    assert_eq!(store.get_key(account.id, key.id).await.expect("get"), Some(key));
    // Concurrent callers share the one connection without deadlocking.
    let reads = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.get_account(account.id).await })
    });
    for read in reads {
        assert!(read.await.expect("join").expect("read").is_some());
    }
}

#[tokio::test]
async fn the_sqlite_file_holds_the_hash_never_the_plaintext() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("keygate.db").display());
    let store = connect(&url).await.expect("open");
    let account = new_account("Acme");
    let (key, plaintext) = new_key_with_plaintext(account.id, "secret holder");
    store.create_account(&account, &key, &audit(account.id, "account.created", "x")).await.expect("create");
    let (rolled, rolled_plaintext) = new_key_with_plaintext(account.id, "rolled");
    store.roll_key(&key, &rolled, &audit(account.id, "api_key.rolled", "x"), u64::MAX).await.expect("roll");

    // Look at every file SQLite wrote (the database, its WAL and shared memory), open and after
    // closing.
    let check = |dir: &Path| {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir).expect("list the directory") {
            all.extend(std::fs::read(entry.expect("an entry").path()).expect("read a database file"));
        }
        for (stored, secret) in [(&key, &plaintext), (&rolled, &rolled_plaintext)] {
            assert!(!contains(&all, secret.expose().as_bytes()), "plaintext found on disk");
            // The body alone must not be there either (e.g. stored without its prefix).
            let body = &secret.expose()[8..];
            assert!(!contains(&all, body.as_bytes()), "key body found on disk");
            assert!(contains(&all, stored.hash.as_bytes()), "the hash is what is stored");
        }
    };
    check(dir.path());
    store.close().await;
    check(dir.path());
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn sqlite_store_can_be_opened_directly() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("direct.db").display());
    let store = SqliteStore::open(&url).await.expect("open");
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrate twice");
    assert!(dir.path().join("direct.db").exists(), "the file is created");
    store.ping().await.expect("ping");
}

/// The permission bits of `path`.
#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("the file exists").permissions().mode() & 0o7777
}

/// `path` plus `suffix` (`-wal`, `-shm`).
#[cfg(unix)]
fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

#[cfg(unix)]
#[tokio::test]
async fn sqlite_files_are_created_private_to_their_owner() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Both URL spellings, with and without a query.
    for (name, url) in [
        ("slashes.db", format!("sqlite://{}", dir.path().join("slashes.db").display())),
        ("query.db", format!("sqlite:{}?mode=rwc", dir.path().join("query.db").display())),
    ] {
        let db = dir.path().join(name);
        let store = connect(&url).await.expect("open");
        seed_account(&store, "Acme").await;
        let wal = beside(&db, "-wal");
        assert!(wal.exists(), "{name}: the WAL exists while the store is open");
        assert_eq!(mode(&db), 0o600, "{name}: the database file");
        assert_eq!(mode(&wal), 0o600, "{name}: the WAL inherits the database file's mode");
        let shm = beside(&db, "-shm");
        if shm.exists() {
            assert_eq!(mode(&shm), 0o600, "{name}: the shared-memory file too");
        }
        store.close().await;
        assert_eq!(mode(&db), 0o600, "{name}: after closing");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn an_existing_sqlite_file_open_to_others_is_tightened() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("keygate.db");
    let url = format!("sqlite://{}", db.display());
    let store = connect(&url).await.expect("create");
    let (account, _) = seed_account(&store, "Acme").await;
    store.close().await;

    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("loosen");
    let store = connect(&url).await.expect("reopen");
    assert_eq!(mode(&db), 0o600, "tightened on open");
    assert!(store.get_account(account.id).await.expect("get").is_some(), "the data is intact");
    let wal = beside(&db, "-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
    store.close().await;

    // Owner-only modes are left as they are.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).expect("read-only for the owner");
    let options = format!("sqlite://{}?mode=ro", db.display());
    let store = SqliteStore::open(&options).await.expect("open read-only");
    store.ping().await.expect("ping");
    assert_eq!(mode(&db), 0o400);
    store.close().await;
}

#[tokio::test]
async fn a_read_only_sqlite_url_creates_no_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("absent.db");
    let url = format!("sqlite://{}?mode=ro", db.display());
    assert!(matches!(connect(&url).await, Err(ConnectError::Open(_))), "there is nothing to open");
    assert!(!db.exists(), "mode=ro never creates the file");
}

#[test]
fn test_database_urls_are_rewritten() {
    assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
    assert_eq!(with_database("postgres://u@h/test?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}

// ---------------------------------------------------------------------------------------------
// Idempotency records.

const FP_A: [u8; 32] = [0xA1; 32];
const FP_B: [u8; 32] = [0xB2; 32];
const T0: &str = "2026-04-20T12:00:00Z";
const IN_A_DAY: &str = "2026-04-21T12:00:00Z";

/// Claims `key` for `account` at `T0`, live for a day.
async fn begin_at_t0(
    store: &Arc<dyn Store>,
    account: AccountId,
    key: &str,
    fingerprint: &[u8; 32],
) -> IdempotencyBegin {
    store.begin_idempotent(account, key, fingerprint, ts(T0), ts(IN_A_DAY)).await.expect("begin")
}

/// Bytes no text encoding would survive: every byte value, twice, and a zero at each end.
fn opaque_response() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    bytes.insert(0, 0);
    bytes.push(0);
    bytes
}

both_backends!(idempotency_started_then_completed_replays_the_bytes);
async fn idempotency_started_then_completed_replays_the_bytes(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let changes_before = all_changes(&store).await;
    let audit_before = all_audit(&store, account.id).await;

    assert_eq!(begin_at_t0(&store, account.id, "order-1", &FP_A).await, IdempotencyBegin::Started);
    assert_eq!(begin_at_t0(&store, account.id, "order-1", &FP_A).await, IdempotencyBegin::InProgress);

    let response = opaque_response();
    store.complete_idempotent(account.id, "order-1", &response).await.expect("complete");
    assert_eq!(begin_at_t0(&store, account.id, "order-1", &FP_A).await, IdempotencyBegin::Completed(response.clone()));
    // Replaying changes nothing: still the same bytes.
    assert_eq!(begin_at_t0(&store, account.id, "order-1", &FP_A).await, IdempotencyBegin::Completed(response.clone()));

    // A completed record keeps its first response, and releasing it does nothing.
    store.complete_idempotent(account.id, "order-1", b"a second response").await.expect("complete again");
    store.release_idempotent(account.id, "order-1").await.expect("release a completed record");
    assert_eq!(begin_at_t0(&store, account.id, "order-1", &FP_A).await, IdempotencyBegin::Completed(response));

    // An empty response is a response, and a large one survives intact.
    assert_eq!(begin_at_t0(&store, account.id, "empty", &FP_A).await, IdempotencyBegin::Started);
    store.complete_idempotent(account.id, "empty", b"").await.expect("complete empty");
    assert_eq!(begin_at_t0(&store, account.id, "empty", &FP_A).await, IdempotencyBegin::Completed(Vec::new()));
    let large: Vec<u8> = (0..256 * 1024).map(|i: u32| (i % 251) as u8).collect();
    assert_eq!(begin_at_t0(&store, account.id, "large", &FP_A).await, IdempotencyBegin::Started);
    store.complete_idempotent(account.id, "large", &large).await.expect("complete large");
    assert_eq!(begin_at_t0(&store, account.id, "large", &FP_A).await, IdempotencyBegin::Completed(large));

    // Completing a record that does not exist is a lost race, not an error, and creates nothing.
    store.complete_idempotent(account.id, "never-begun", b"x").await.expect("complete unknown");
    assert_eq!(begin_at_t0(&store, account.id, "never-begun", &FP_A).await, IdempotencyBegin::Started);

    // Not audited, not in the change log.
    assert_eq!(all_changes(&store).await, changes_before);
    assert_eq!(all_audit(&store, account.id).await, audit_before);
}

both_backends!(idempotency_another_fingerprint_is_a_mismatch);
async fn idempotency_another_fingerprint_is_a_mismatch(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    assert_eq!(begin_at_t0(&store, account.id, "k", &FP_A).await, IdempotencyBegin::Started);
    // While pending.
    assert_eq!(begin_at_t0(&store, account.id, "k", &FP_B).await, IdempotencyBegin::Mismatch);
    assert_eq!(begin_at_t0(&store, account.id, "k", &FP_A).await, IdempotencyBegin::InProgress);
    // When complete.
    store.complete_idempotent(account.id, "k", b"done").await.expect("complete");
    assert_eq!(begin_at_t0(&store, account.id, "k", &FP_B).await, IdempotencyBegin::Mismatch);
    assert_eq!(begin_at_t0(&store, account.id, "k", &FP_A).await, IdempotencyBegin::Completed(b"done".to_vec()));
}

both_backends!(idempotency_release_frees_the_key);
async fn idempotency_release_frees_the_key(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    assert_eq!(begin_at_t0(&store, account.id, "k", &FP_A).await, IdempotencyBegin::Started);
    store.release_idempotent(account.id, "k").await.expect("release");
    // Free again, for any fingerprint.
    assert_eq!(begin_at_t0(&store, account.id, "k", &FP_B).await, IdempotencyBegin::Started);
    assert_eq!(begin_at_t0(&store, account.id, "k", &FP_B).await, IdempotencyBegin::InProgress);
    // Releasing what is not there is fine.
    store.release_idempotent(account.id, "absent").await.expect("release unknown");
}

both_backends!(idempotency_an_expired_record_is_replaced);
async fn idempotency_an_expired_record_is_replaced(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (t1, t2, t3) = (ts(IN_A_DAY), ts("2026-04-22T12:00:00Z"), ts("2026-04-23T12:00:00Z"));

    // A pending record expiring at t1: still live just before, absent at t1 exactly.
    assert_eq!(begin_at_t0(&store, account.id, "pending", &FP_A).await, IdempotencyBegin::Started);
    let just_before = ts("2026-04-21T11:59:59Z");
    let found = store.begin_idempotent(account.id, "pending", &FP_A, just_before, t2).await.expect("begin");
    assert_eq!(found, IdempotencyBegin::InProgress);
    let found = store.begin_idempotent(account.id, "pending", &FP_B, t1, t2).await.expect("begin");
    assert_eq!(found, IdempotencyBegin::Started);
    // The new record is FP_B's, pending, expiring at t2.
    let found = store.begin_idempotent(account.id, "pending", &FP_B, t1, t3).await.expect("begin");
    assert_eq!(found, IdempotencyBegin::InProgress);
    let found = store.begin_idempotent(account.id, "pending", &FP_A, t1, t3).await.expect("begin");
    assert_eq!(found, IdempotencyBegin::Mismatch);

    // A completed record is replaced the same way, and its response is gone.
    assert_eq!(begin_at_t0(&store, account.id, "complete", &FP_A).await, IdempotencyBegin::Started);
    store.complete_idempotent(account.id, "complete", b"old response").await.expect("complete");
    let found = store.begin_idempotent(account.id, "complete", &FP_A, t2, t3).await.expect("begin");
    assert_eq!(found, IdempotencyBegin::Started);
    let found = store.begin_idempotent(account.id, "complete", &FP_A, t2, t3).await.expect("begin");
    assert_eq!(found, IdempotencyBegin::InProgress);
}

both_backends!(idempotency_keys_of_two_accounts_never_collide);
async fn idempotency_keys_of_two_accounts_never_collide(store: Arc<dyn Store>) {
    let (acme, _) = seed_account(&store, "Acme").await;
    let (globex, _) = seed_account(&store, "Globex").await;
    assert_eq!(begin_at_t0(&store, acme.id, "shared", &FP_A).await, IdempotencyBegin::Started);
    // Same key, same or another fingerprint: Globex's own record, never Acme's.
    assert_eq!(begin_at_t0(&store, globex.id, "shared", &FP_A).await, IdempotencyBegin::Started);
    store.complete_idempotent(acme.id, "shared", b"acme's response").await.expect("complete");
    assert_eq!(begin_at_t0(&store, globex.id, "shared", &FP_A).await, IdempotencyBegin::InProgress);
    assert_eq!(
        begin_at_t0(&store, acme.id, "shared", &FP_A).await,
        IdempotencyBegin::Completed(b"acme's response".to_vec())
    );
    // Releasing Globex's leaves Acme's alone.
    store.release_idempotent(globex.id, "shared").await.expect("release");
    assert_eq!(begin_at_t0(&store, globex.id, "shared", &FP_B).await, IdempotencyBegin::Started);
    assert_eq!(
        begin_at_t0(&store, acme.id, "shared", &FP_A).await,
        IdempotencyBegin::Completed(b"acme's response".to_vec())
    );
}

both_backends!(idempotency_records_are_purged_at_expiry);
async fn idempotency_records_are_purged_at_expiry(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let expiries = ["2026-04-21T00:00:00Z", "2026-04-22T00:00:00Z", "2026-04-23T00:00:00Z"];
    for (i, expires) in expiries.iter().enumerate() {
        let found = store.begin_idempotent(account.id, &format!("k{i}"), &FP_A, ts(T0), ts(expires)).await;
        assert_eq!(found.expect("begin"), IdempotencyBegin::Started);
    }
    store.complete_idempotent(account.id, "k0", b"done").await.expect("complete");

    // `expires_at <= before`: the first two, pending or complete.
    assert_eq!(store.purge_idempotency(ts(expiries[1])).await.expect("purge"), 2);
    assert_eq!(store.purge_idempotency(ts(expiries[1])).await.expect("purge again"), 0);
    assert_eq!(begin_at_t0(&store, account.id, "k0", &FP_B).await, IdempotencyBegin::Started);
    assert_eq!(begin_at_t0(&store, account.id, "k1", &FP_B).await, IdempotencyBegin::Started);
    assert_eq!(begin_at_t0(&store, account.id, "k2", &FP_B).await, IdempotencyBegin::Mismatch);
}

both_backends!(idempotency_concurrent_claims_have_one_winner, multi_thread);
async fn idempotency_concurrent_claims_have_one_winner(store: Arc<dyn Store>) {
    const CLAIMS: usize = 16;
    let (account, _) = seed_account(&store, "Acme").await;

    /// `CLAIMS` requests begin `key` at `now` at once; returns how many got each answer.
    async fn race(store: &Arc<dyn Store>, account: AccountId, key: &'static str, now: Timestamp) -> (usize, usize) {
        let barrier = Arc::new(tokio::sync::Barrier::new(CLAIMS));
        let claims: Vec<_> = (0..CLAIMS)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.begin_idempotent(account, key, &FP_A, now, now + Duration::hours(24)).await.expect("begin")
                })
            })
            .collect();
        let (mut started, mut in_progress) = (0, 0);
        for claim in claims {
            match claim.await.expect("claim") {
                IdempotencyBegin::Started => started += 1,
                IdempotencyBegin::InProgress => in_progress += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        (started, in_progress)
    }

    // A key nobody has used.
    assert_eq!(race(&store, account.id, "fresh", ts(T0)).await, (1, CLAIMS - 1));

    // A key whose record has expired: all of them see it expired, one replaces it.
    assert_eq!(begin_at_t0(&store, account.id, "stale", &FP_B).await, IdempotencyBegin::Started);
    store.complete_idempotent(account.id, "stale", b"old").await.expect("complete");
    assert_eq!(race(&store, account.id, "stale", ts("2026-04-22T00:00:00Z")).await, (1, CLAIMS - 1));
}

// ---------------------------------------------------------------------------------------------
// Concurrency.

both_backends!(concurrent_writers_all_land_and_a_follower_misses_none);
async fn concurrent_writers_all_land_and_a_follower_misses_none(store: Arc<dyn Store>) {
    const WRITERS: usize = 8;
    const KEYS_EACH: usize = 5;
    let (account, _) = seed_account(&store, "Acme").await;
    let start = store.latest_change().await.expect("latest");

    // A follower polls the feed while the writers run, as another node would.
    let done = Arc::new(tokio::sync::Notify::new());
    let follower = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen: Vec<Change> = Vec::new();
            let mut after = start;
            let mut finished = false;
            loop {
                let batch = store.changes_since(after, 7).await.expect("poll");
                if let Some(last) = batch.last() {
                    after = last.seq;
                } else if finished {
                    return seen;
                }
                seen.extend(batch);
                if !finished {
                    tokio::select! {
                        () = done.notified() => finished = true,
                        () = tokio::time::sleep(std::time::Duration::from_millis(2)) => {}
                    }
                }
            }
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..KEYS_EACH {
                    let key = new_key(account.id, &format!("writer {w} key {i}"));
                    create_key(&store, &key).await;
                    store
                        .record_key_usage(&[KeyUsage { key_id: key.id, at: time::now(), ip: ip("192.0.2.1") }])
                        .await
                        .expect("usage");
                    ids.push(key.id);
                }
                ids
            })
        })
        .collect();
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.expect("writer"));
    }
    done.notify_one();
    let seen = follower.await.expect("follower");

    assert_eq!(written.len(), WRITERS * KEYS_EACH);
    for id in &written {
        assert!(store.get_key(account.id, *id).await.expect("get").is_some());
    }
    let feed = store.changes_since(start, 1000).await.expect("feed");
    assert_eq!(feed.len(), written.len());
    assert_eq!(seen, feed, "the follower saw every change once, in order");
}

// ---------------------------------------------------------------------------------------------
// Dashboard users, sessions and sign-in tokens.

const ARGON: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
const ARGON_NEW: &str = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaG5ld2hhc2g";

/// A user of `account` that does not exist yet; `has_password` as `password` says.
fn new_user(account: AccountId, email: &str, role: Role, password: Option<&str>) -> User {
    let now = time::now();
    User {
        id: UserId::generate(),
        account_id: account,
        email: email.to_owned(),
        role,
        has_password: password.is_some(),
        created_at: now,
        updated_at: now,
        last_sign_in_at: None,
    }
}

/// Creates a user of `account` (with the audit event `user.created`) and returns it.
async fn add_user(store: &Arc<dyn Store>, account: AccountId, email: &str, role: Role, password: Option<&str>) -> User {
    let user = new_user(account, email, role, password);
    store
        .create_user(&user, password, &audit(account, "user.created", &user.id.to_string()), u64::MAX)
        .await
        .expect("create user");
    user
}

/// 32 bytes no other call returns: a token hash.
fn token_hash() -> [u8; 32] {
    let mut hash = [0; 32];
    hash[..16].copy_from_slice(&ulid::Ulid::generate().0.to_be_bytes());
    hash[16..].copy_from_slice(&ulid::Ulid::generate().0.to_be_bytes());
    hash
}

/// A session of `user` made at `created_at`, ending at `expires_at`, not yet stored.
fn new_session(user: &User, created_at: Timestamp, expires_at: Timestamp) -> Session {
    Session {
        id: SessionId::generate(),
        user_id: user.id,
        account_id: user.account_id,
        token_hash: token_hash(),
        created_at,
        last_seen_at: created_at,
        expires_at,
        ip: None,
        user_agent: None,
        revoked_at: None,
    }
}

async fn add_session(store: &Arc<dyn Store>, user: &User, created_at: Timestamp, expires_at: Timestamp) -> Session {
    let session = new_session(user, created_at, expires_at);
    store.create_session(&session).await.expect("create session");
    session
}

async fn session(store: &Arc<dyn Store>, token_hash: &[u8; 32]) -> Option<Session> {
    store.session_by_token(token_hash).await.expect("session by token").map(|(session, _)| session)
}

async fn session_ids(store: &Arc<dyn Store>, user: &User, now: Timestamp) -> Vec<SessionId> {
    let sessions = store.list_sessions(user.account_id, user.id, now).await.expect("list sessions");
    sessions.into_iter().map(|s| s.id).collect()
}

/// The account's audit actions, oldest first.
/// The account's audit actions, sorted by name: events written within one millisecond have ids
/// that need not sort by time, so their order is not something to assert.
async fn audit_actions(store: &Arc<dyn Store>, account: AccountId) -> Vec<String> {
    let mut actions: Vec<String> = all_audit(store, account).await.into_iter().map(|e| e.action).collect();
    actions.sort();
    actions
}

both_backends!(user_round_trips_every_field);
async fn user_round_trips_every_field(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let changes_before = all_changes(&store).await;

    let mut user = new_user(account.id, "Ada.Lovelace@Example.com", Role::Admin, Some(ARGON));
    user.created_at = ts("2026-01-02T03:04:05Z");
    user.updated_at = ts("2026-01-03T03:04:05Z");
    store
        .create_user(&user, Some(ARGON), &audit(account.id, "user.created", &user.id.to_string()), u64::MAX)
        .await
        .expect("create");
    assert_eq!(store.get_user(account.id, user.id).await.expect("get"), Some(user.clone()));
    assert_eq!(store.get_user(other.id, user.id).await.expect("another account's"), None);
    assert_eq!(store.get_user(account.id, UserId::generate()).await.expect("unknown"), None);
    assert_eq!(
        store.users_by_email("ada.lovelace@example.com").await.expect("by email"),
        vec![(user.clone(), Some(ARGON.to_owned()))]
    );

    // Invited without a password.
    let invited = add_user(&store, account.id, "grace@example.com", Role::Viewer, None).await;
    let got = store.get_user(account.id, invited.id).await.expect("get").expect("invited");
    assert!(!got.has_password);
    assert_eq!(got, invited);
    assert_eq!(store.users_by_email("grace@example.com").await.expect("by email"), vec![(invited.clone(), None)]);

    // A sign-in is noted without touching anything else.
    store.note_sign_in(account.id, user.id, ts("2026-02-01T10:00:00Z")).await.expect("note sign-in");
    store.note_sign_in(other.id, invited.id, ts("2026-02-01T10:00:00Z")).await.expect("another account's: no-op");
    let mut signed_in = user.clone();
    signed_in.last_sign_in_at = Some(ts("2026-02-01T10:00:00Z"));
    assert_eq!(store.get_user(account.id, user.id).await.expect("get"), Some(signed_in.clone()));
    assert_eq!(store.get_user(account.id, invited.id).await.expect("get"), Some(invited.clone()));

    // update_user writes email, role and updated_at, and nothing else.
    let mut changed = signed_in.clone();
    changed.email = "ada@example.org".to_owned();
    changed.role = Role::Developer;
    changed.updated_at = ts("2026-03-01T00:00:00Z");
    changed.has_password = false;
    changed.last_sign_in_at = None;
    changed.created_at = ts("2030-01-01T00:00:00Z");
    assert!(
        store
            .update_user(&changed, user.role, &audit(account.id, "user.updated", &user.id.to_string()))
            .await
            .expect("update")
    );
    let mut expected = signed_in.clone();
    expected.email = "ada@example.org".to_owned();
    expected.role = Role::Developer;
    expected.updated_at = ts("2026-03-01T00:00:00Z");
    assert_eq!(store.get_user(account.id, user.id).await.expect("get"), Some(expected.clone()));
    assert_eq!(
        store.users_by_email("ADA@example.org").await.expect("the new email"),
        vec![(expected, Some(ARGON.to_owned()))]
    );
    assert!(store.users_by_email("ada.lovelace@example.com").await.expect("the old email").is_empty());

    // Another account cannot change it by naming it, and a user that is gone is a no-op.
    let mut hijack = changed.clone();
    hijack.account_id = other.id;
    hijack.email = "hijacked@example.com".to_owned();
    assert!(
        !store.update_user(&hijack, hijack.role, &audit(other.id, "user.updated", "x")).await.expect("finds nothing")
    );
    let ghost = new_user(account.id, "ghost@example.com", Role::Viewer, None);
    assert!(
        !store.update_user(&ghost, ghost.role, &audit(account.id, "user.updated", "x")).await.expect("finds nothing")
    );
    assert_eq!(store.get_user(account.id, user.id).await.expect("get").map(|u| u.email), Some(changed.email));

    // Audited, only what was written; users never reach the change log.
    assert_eq!(
        audit_actions(&store, account.id).await,
        ["account.created", "user.created", "user.created", "user.updated"]
    );
    assert_eq!(audit_actions(&store, other.id).await, ["account.created"]);
    assert_eq!(all_changes(&store).await, changes_before);
}

both_backends!(user_emails_are_unique_per_account_whatever_their_case);
async fn user_emails_are_unique_per_account_whatever_their_case(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let ada = add_user(&store, account.id, "Ada@Example.com", Role::Owner, Some(ARGON)).await;

    for email in ["Ada@Example.com", "ada@example.com", "ADA@EXAMPLE.COM"] {
        let clash = new_user(account.id, email, Role::Viewer, None);
        let err = store
            .create_user(&clash, None, &audit(account.id, "user.created", &clash.id.to_string()), u64::MAX)
            .await
            .expect_err("the same email, any case");
        assert!(matches!(err, StoreError::Conflict("user_email")), "{email}: {err:?}");
        assert_eq!(store.get_user(account.id, clash.id).await.expect("get"), None, "nothing was written");
    }
    assert_eq!(audit_actions(&store, account.id).await, ["account.created", "user.created"]);

    // Non-ASCII letters fold too.
    add_user(&store, account.id, "Émile@Example.com", Role::Viewer, None).await;
    let err = store
        .create_user(
            &new_user(account.id, "éMILE@example.com", Role::Viewer, None),
            None,
            &audit(account.id, "user.created", "x"),
            u64::MAX,
        )
        .await
        .expect_err("é and É");
    assert!(matches!(err, StoreError::Conflict("user_email")), "{err:?}");

    // Two spellings of one address are one user: letters whose lower case is not their case
    // fold, composed and decomposed accents, compatibility forms.
    for (first, second) in [
        ("straße@example.com", "STRASSE@example.com"),
        ("ſam@example.com", "sam@example.com"),
        ("\u{3b1}\u{3c2}@example.com", "\u{391}\u{3a3}@example.com"),
        ("own\u{e9}r@example.com", "owne\u{301}r@example.com"),
        ("\u{ff41}da@example.com", "ada@example.com"),
    ] {
        let kept = new_user(account.id, first, Role::Viewer, None);
        match store.create_user(&kept, None, &audit(account.id, "user.created", "x"), u64::MAX).await {
            Ok(()) | Err(StoreError::Conflict("user_email")) => {}
            Err(e) => panic!("{first}: {e:?}"),
        }
        let twin = new_user(account.id, second, Role::Viewer, None);
        let err = store.create_user(&twin, None, &audit(account.id, "user.created", "x"), u64::MAX).await;
        assert!(matches!(err, Err(StoreError::Conflict("user_email"))), "{first} and {second}: {err:?}");
    }

    // The same email in another account is another user.
    let elsewhere = add_user(&store, other.id, "ada@example.com", Role::Owner, None).await;
    assert_eq!(store.get_user(other.id, elsewhere.id).await.expect("get"), Some(elsewhere));

    // Renaming into a taken email is the same conflict; changing only the case of one's own is not.
    let grace = add_user(&store, account.id, "grace@example.com", Role::Admin, None).await;
    let mut renamed = grace.clone();
    renamed.email = "ADA@example.com".to_owned();
    let err =
        store.update_user(&renamed, grace.role, &audit(account.id, "user.updated", "x")).await.expect_err("taken");
    assert!(matches!(err, StoreError::Conflict("user_email")), "{err:?}");
    assert_eq!(store.get_user(account.id, grace.id).await.expect("get"), Some(grace.clone()));
    let mut recased = ada.clone();
    recased.email = "ADA@example.COM".to_owned();
    assert!(
        store.update_user(&recased, ada.role, &audit(account.id, "user.updated", "x")).await.expect("its own email")
    );
    assert_eq!(store.get_user(account.id, ada.id).await.expect("get"), Some(recased));
}

both_backends!(users_by_email_finds_every_account_oldest_first_with_hashes);
async fn users_by_email_finds_every_account_oldest_first_with_hashes(store: Arc<dyn Store>) {
    let (a, _) = seed_account(&store, "A").await;
    let (b, _) = seed_account(&store, "B").await;
    let (c, _) = seed_account(&store, "C").await;
    // Created out of order: the list is by creation time.
    let mut in_b = new_user(b.id, "ada@example.com", Role::Owner, None);
    in_b.created_at = ts("2026-02-01T00:00:00Z");
    store.create_user(&in_b, None, &audit(b.id, "user.created", "x"), u64::MAX).await.expect("create");
    let mut in_a = new_user(a.id, "Ada@Example.com", Role::Viewer, Some(ARGON));
    in_a.created_at = ts("2026-01-01T00:00:00Z");
    store.create_user(&in_a, Some(ARGON), &audit(a.id, "user.created", "x"), u64::MAX).await.expect("create");
    let mut in_c = new_user(c.id, "ADA@EXAMPLE.COM", Role::Admin, Some(ARGON_NEW));
    in_c.created_at = ts("2026-03-01T00:00:00Z");
    store.create_user(&in_c, Some(ARGON_NEW), &audit(c.id, "user.created", "x"), u64::MAX).await.expect("create");
    add_user(&store, a.id, "ada@example.org", Role::Owner, Some(ARGON)).await;
    add_user(&store, a.id, "not-ada@example.com", Role::Owner, Some(ARGON)).await;

    let expected =
        vec![(in_a.clone(), Some(ARGON.to_owned())), (in_b.clone(), None), (in_c.clone(), Some(ARGON_NEW.to_owned()))];
    assert_eq!(store.users_by_email("ada@example.com").await.expect("by email"), expected);
    assert_eq!(store.users_by_email("aDa@ExAmPlE.cOm").await.expect("any case"), expected);
    assert!(store.users_by_email("ada@example").await.expect("a prefix").is_empty());
    assert!(store.users_by_email("%@example.com").await.expect("no patterns").is_empty());
    assert!(store.users_by_email("nobody@example.com").await.expect("unknown").is_empty());
}

both_backends!(users_list_newest_first_in_pages);
async fn users_list_newest_first_in_pages(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(add_user(&store, account.id, &format!("user{i}@example.com"), Role::Developer, None).await.id);
    }
    add_user(&store, other.id, "theirs@example.com", Role::Owner, None).await;

    let list = |p: Page| {
        let store = store.clone();
        async move {
            let users = store.list_users(account.id, &p).await.expect("list");
            users.into_iter().map(|u| u.id).collect::<Vec<_>>()
        }
    };
    let expected = newest_first(&ids);
    assert_eq!(list(page(100)).await, expected);
    let first = list(page(2)).await;
    assert_eq!(first, expected[..2]);
    let second = list(page_before(2, &first[1].to_string())).await;
    assert_eq!(second, expected[2..4]);
    let third = list(page_before(2, &second[1].to_string())).await;
    assert_eq!(third, expected[4..]);
    assert!(list(page_before(2, &third[0].to_string())).await.is_empty());
    let all = store.list_users(account.id, &page(100)).await.expect("list");
    assert_eq!(all[0].id, expected[0]);
    assert_eq!(all.iter().map(|u| u.id).collect::<Vec<_>>(), expected);
    assert!(store.list_users(AccountId::generate(), &page(100)).await.expect("no such account").is_empty());
}

both_backends!(the_last_owner_can_be_neither_demoted_nor_deleted);

async fn the_user_cap_counts_the_account_s_users(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    for i in 0..2 {
        let user = new_user(account.id, &format!("u{i}@example.com"), Role::Viewer, None);
        store.create_user(&user, None, &audit(account.id, "user.created", "x"), 2).await.expect("room");
    }
    let third = new_user(account.id, "u2@example.com", Role::Viewer, None);
    let err = store.create_user(&third, None, &audit(account.id, "user.created", "x"), 2).await.expect_err("full");
    assert!(matches!(err, StoreError::LimitReached { what: "users", max: 2 }), "{err:?}");
    assert_eq!(store.get_user(account.id, third.id).await.expect("get"), None, "nothing was written");
    let theirs = new_user(other.id, "u0@example.com", Role::Viewer, None);
    store.create_user(&theirs, None, &audit(other.id, "user.created", "x"), 2).await.expect("another account's room");
}
both_backends!(the_user_cap_counts_the_account_s_users);
async fn the_last_owner_can_be_neither_demoted_nor_deleted(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let owner = add_user(&store, account.id, "owner@example.com", Role::Owner, Some(ARGON)).await;
    let admin = add_user(&store, account.id, "admin@example.com", Role::Admin, None).await;
    // Another account's owner does not count.
    add_user(&store, other.id, "owner@example.com", Role::Owner, None).await;
    let audited = audit_actions(&store, account.id).await.len();

    for role in [Role::Admin, Role::Developer, Role::Viewer] {
        let mut demoted = owner.clone();
        demoted.role = role;
        let err = store
            .update_user(&demoted, Role::Owner, &audit(account.id, "user.updated", "x"))
            .await
            .expect_err("last owner");
        assert!(matches!(err, StoreError::Conflict("last_owner")), "{role:?}: {err:?}");
    }
    let err = store
        .delete_user(account.id, owner.id, Role::Owner, &audit(account.id, "user.deleted", "x"))
        .await
        .expect_err("last");
    assert!(matches!(err, StoreError::Conflict("last_owner")), "{err:?}");
    assert_eq!(store.get_user(account.id, owner.id).await.expect("get"), Some(owner.clone()));
    assert_eq!(audit_actions(&store, account.id).await.len(), audited, "refused writes leave no audit event");

    // The last owner may still change its email; others may change around it.
    let mut renamed = owner.clone();
    renamed.email = "boss@example.com".to_owned();
    assert!(
        store
            .update_user(&renamed, Role::Owner, &audit(account.id, "user.updated", "x"))
            .await
            .expect("keeps its role")
    );
    let mut viewer = admin.clone();
    viewer.role = Role::Viewer;
    assert!(
        store.update_user(&viewer, Role::Admin, &audit(account.id, "user.updated", "x")).await.expect("not an owner")
    );

    // With a second owner, either may step down or go, but not both.
    let mut promoted = viewer.clone();
    promoted.role = Role::Owner;
    assert!(
        store.update_user(&promoted, Role::Viewer, &audit(account.id, "user.updated", "x")).await.expect("promote")
    );
    let mut demoted = renamed.clone();
    demoted.role = Role::Admin;
    assert!(
        store
            .update_user(&demoted, Role::Owner, &audit(account.id, "user.updated", "x"))
            .await
            .expect("another owner remains")
    );
    assert_eq!(store.get_user(account.id, owner.id).await.expect("get").map(|u| u.role), Some(Role::Admin));
    let err = store
        .delete_user(account.id, admin.id, Role::Owner, &audit(account.id, "user.deleted", "x"))
        .await
        .expect_err("now last");
    assert!(matches!(err, StoreError::Conflict("last_owner")), "{err:?}");
    let mut demote_last = promoted.clone();
    demote_last.role = Role::Developer;
    let err = store
        .update_user(&demote_last, Role::Owner, &audit(account.id, "user.updated", "x"))
        .await
        .expect_err("now last");
    assert!(matches!(err, StoreError::Conflict("last_owner")), "{err:?}");

    // A non-owner may always be deleted; an owner too while another remains.
    assert!(
        store
            .delete_user(account.id, owner.id, Role::Admin, &audit(account.id, "user.deleted", "x"))
            .await
            .expect("admin")
    );
    let second = add_user(&store, account.id, "second@example.com", Role::Owner, None).await;
    assert!(
        store
            .delete_user(account.id, admin.id, Role::Owner, &audit(account.id, "user.deleted", "x"))
            .await
            .expect("owner")
    );
    let left = store.list_users(account.id, &page(100)).await.expect("list");
    assert_eq!(left, vec![second]);

    // No such user: nothing refused, nothing written (events are counted, not read by order:
    // ids made in one millisecond do not sort by time).
    let events = audit_actions(&store, account.id).await.len();
    assert!(
        !store
            .delete_user(account.id, UserId::generate(), Role::Viewer, &audit(account.id, "user.deleted", "x"))
            .await
            .expect("gone")
    );
    assert_eq!(audit_actions(&store, account.id).await.len(), events);
}

both_backends!(concurrent_demotions_leave_an_owner, multi_thread);
async fn concurrent_demotions_leave_an_owner(store: Arc<dyn Store>) {
    const OWNERS: usize = 6;
    let (account, _) = seed_account(&store, "Acme").await;
    let mut owners = Vec::new();
    for i in 0..OWNERS {
        owners.push(add_user(&store, account.id, &format!("owner{i}@example.com"), Role::Owner, None).await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(OWNERS));
    let attempts: Vec<_> = owners
        .iter()
        .enumerate()
        .map(|(i, owner)| {
            let (store, barrier, owner) = (store.clone(), barrier.clone(), owner.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                // Half step down, half leave.
                if i % 2 == 0 {
                    let mut demoted = owner;
                    demoted.role = Role::Admin;
                    store.update_user(&demoted, Role::Owner, &audit(account.id, "user.updated", "x")).await.map(|_| ())
                } else {
                    store
                        .delete_user(account.id, owner.id, Role::Owner, &audit(account.id, "user.deleted", "x"))
                        .await
                        .map(|_| ())
                }
            })
        })
        .collect();
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.expect("the task ran") {
            Ok(()) => {}
            Err(StoreError::Conflict("last_owner")) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(refused, 1, "every owner but one stepped down");
    let users = store.list_users(account.id, &page(100)).await.expect("list");
    assert_eq!(users.iter().filter(|u| u.role == Role::Owner).count(), 1);
}

both_backends!(set_password_revokes_every_session_of_the_user);
async fn set_password_revokes_every_session_of_the_user(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let user = add_user(&store, account.id, "ada@example.com", Role::Admin, None).await;
    let bystander = add_user(&store, account.id, "grace@example.com", Role::Viewer, Some(ARGON)).await;
    let t0 = ts(T0);
    let live = add_session(&store, &user, t0, t0 + Duration::days(7)).await;
    let second = add_session(&store, &user, t0 + Duration::hours(1), t0 + Duration::days(7)).await;
    let earlier = t0 + Duration::hours(2);
    assert!(store.revoke_session(account.id, user.id, second.id, earlier).await.expect("revoke"));
    let theirs = add_session(&store, &bystander, t0, t0 + Duration::days(7)).await;

    let at = t0 + Duration::hours(3);
    assert!(
        store
            .set_password(
                account.id,
                user.id,
                user.role,
                Some(ARGON_NEW),
                &audit_at(account.id, "user.password_set", "x", at)
            )
            .await
            .expect("set password")
    );
    let got = store.get_user(account.id, user.id).await.expect("get").expect("user");
    assert!(got.has_password);
    assert_eq!(got.updated_at, at);
    assert_eq!(got.email, user.email);
    assert_eq!(
        store.users_by_email("ada@example.com").await.expect("by email"),
        vec![(got, Some(ARGON_NEW.to_owned()))]
    );
    assert_eq!(session(&store, &live.token_hash).await.and_then(|s| s.revoked_at), Some(at));
    assert_eq!(session(&store, &second.token_hash).await.and_then(|s| s.revoked_at), Some(earlier), "kept its time");
    assert!(session_ids(&store, &user, t0 + Duration::hours(4)).await.is_empty());
    assert_eq!(session(&store, &theirs.token_hash).await.and_then(|s| s.revoked_at), None, "another user's");
    assert_eq!(session_ids(&store, &bystander, t0 + Duration::hours(4)).await, vec![theirs.id]);

    // Cleared, it revokes what was made since.
    let third = add_session(&store, &user, at + Duration::hours(1), at + Duration::days(1)).await;
    let cleared_at = at + Duration::hours(2);
    assert!(
        store
            .set_password(
                account.id,
                user.id,
                user.role,
                None,
                &audit_at(account.id, "user.password_cleared", "x", cleared_at)
            )
            .await
            .expect("clear password")
    );
    assert_eq!(store.users_by_email("ada@example.com").await.expect("by email")[0].1, None);
    assert!(!store.get_user(account.id, user.id).await.expect("get").expect("user").has_password);
    assert_eq!(session(&store, &third.token_hash).await.and_then(|s| s.revoked_at), Some(cleared_at));

    // Another account, or a user that is gone: nothing written.
    assert!(
        !store
            .set_password(other.id, bystander.id, bystander.role, None, &audit(other.id, "user.password_cleared", "x"))
            .await
            .expect("another account's user: no-op")
    );
    assert!(
        !store
            .set_password(
                account.id,
                UserId::generate(),
                Role::Viewer,
                None,
                &audit(account.id, "user.password_cleared", "x")
            )
            .await
            .expect("no such user: no-op")
    );
    assert_eq!(store.users_by_email("grace@example.com").await.expect("by email")[0].1, Some(ARGON.to_owned()));
    assert_eq!(session(&store, &theirs.token_hash).await.and_then(|s| s.revoked_at), None);
    assert_eq!(audit_actions(&store, other.id).await, ["account.created"]);
    assert_eq!(
        audit_actions(&store, account.id).await,
        ["account.created", "user.created", "user.created", "user.password_cleared", "user.password_set"]
    );
}

both_backends!(sessions_round_trip_touch_list_and_revoke);
async fn sessions_round_trip_touch_list_and_revoke(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let user = add_user(&store, account.id, "ada@example.com", Role::Developer, Some(ARGON)).await;
    let colleague = add_user(&store, account.id, "grace@example.com", Role::Developer, None).await;
    let changes_before = all_changes(&store).await;
    let audit_before = all_audit(&store, account.id).await;
    let t0 = ts(T0);

    let mut first = new_session(&user, t0, t0 + Duration::days(30));
    first.ip = Some(ip("2001:db8::7"));
    first.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64)".to_owned());
    store.create_session(&first).await.expect("create");
    assert_eq!(store.session_by_token(&first.token_hash).await.expect("by token"), Some((first.clone(), user.clone())));
    assert_eq!(store.session_by_token(&token_hash()).await.expect("unknown token"), None);

    // touch moves last_seen_at forward only.
    store.touch_session(first.id, t0 + Duration::minutes(5)).await.expect("touch");
    store.touch_session(first.id, t0 + Duration::minutes(1)).await.expect("touch back");
    store.touch_session(SessionId::generate(), t0).await.expect("no such session");
    let mut touched = first.clone();
    touched.last_seen_at = t0 + Duration::minutes(5);
    assert_eq!(session(&store, &first.token_hash).await, Some(touched.clone()));

    // The list: live sessions of that user only, newest first.
    let second = add_session(&store, &user, t0 + Duration::hours(1), t0 + Duration::days(30)).await;
    let short = add_session(&store, &user, t0 + Duration::hours(2), t0 + Duration::hours(3)).await;
    let revoked = add_session(&store, &user, t0 + Duration::hours(3), t0 + Duration::days(30)).await;
    let theirs = add_session(&store, &colleague, t0 + Duration::hours(4), t0 + Duration::days(30)).await;
    let now = t0 + Duration::hours(2) + Duration::minutes(30);
    assert_eq!(session_ids(&store, &user, now).await, vec![revoked.id, short.id, second.id, first.id]);
    assert!(store.list_sessions(other.id, user.id, now).await.expect("another account").is_empty());

    // Only the user's own session can be revoked through it, and in its own account.
    let revoked_at = t0 + Duration::hours(5);
    assert!(!store.revoke_session(account.id, user.id, theirs.id, revoked_at).await.expect("another user's"));
    assert!(!store.revoke_session(other.id, user.id, revoked.id, revoked_at).await.expect("another account"));
    assert!(!store.revoke_session(account.id, user.id, SessionId::generate(), revoked_at).await.expect("gone"));
    assert!(store.revoke_session(account.id, user.id, revoked.id, revoked_at).await.expect("own"));
    assert!(
        store.revoke_session(account.id, user.id, revoked.id, revoked_at + Duration::hours(1)).await.expect("again")
    );
    let (got, _) = store.session_by_token(&revoked.token_hash).await.expect("by token").expect("still there");
    assert_eq!(got.revoked_at, Some(revoked_at), "the first revocation's time stays");
    assert_eq!(session(&store, &theirs.token_hash).await.and_then(|s| s.revoked_at), None);

    // `short` expired at t0 + 3h (`expires_at` itself is past); `revoked` is revoked.
    let later = t0 + Duration::hours(6);
    assert_eq!(session_ids(&store, &user, later).await, vec![second.id, first.id]);
    assert_eq!(session_ids(&store, &user, t0 + Duration::hours(3)).await, vec![second.id, first.id]);
    assert_eq!(session_ids(&store, &colleague, later).await, vec![theirs.id]);
    assert_eq!(session(&store, &short.token_hash).await.map(|s| s.id), Some(short.id), "an expired one is still found");

    // Sessions are neither audited nor followed.
    assert_eq!(all_audit(&store, account.id).await, audit_before);
    assert_eq!(all_changes(&store).await, changes_before);

    // The joined user is the current one.
    store.note_sign_in(account.id, user.id, later).await.expect("sign-in");
    let (_, current) = store.session_by_token(&first.token_hash).await.expect("by token").expect("found");
    assert_eq!(current.last_sign_in_at, Some(later));
}

both_backends!(revoked_and_expired_sessions_are_purged_by_time);
async fn revoked_and_expired_sessions_are_purged_by_time(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let user = add_user(&store, account.id, "ada@example.com", Role::Owner, None).await;
    let t0 = ts(T0);
    let cutoff = t0 + Duration::days(1);
    let expired = add_session(&store, &user, t0, cutoff - Duration::seconds(1)).await;
    let revoked = add_session(&store, &user, t0, t0 + Duration::days(30)).await;
    store.revoke_session(account.id, user.id, revoked.id, t0 + Duration::hours(1)).await.expect("revoke");
    let expires_at_cutoff = add_session(&store, &user, t0, cutoff).await;
    let revoked_later = add_session(&store, &user, t0, t0 + Duration::days(30)).await;
    store.revoke_session(account.id, user.id, revoked_later.id, cutoff + Duration::hours(1)).await.expect("revoke");
    let live = add_session(&store, &user, t0, t0 + Duration::days(30)).await;
    // Another user's: a user has one live token at a time.
    let grace = add_user(&store, account.id, "grace@example.com", Role::Viewer, None).await;
    let old_token = token_hash();
    store
        .create_sign_in_token(
            &old_token,
            account.id,
            grace.id,
            cutoff - Duration::seconds(1),
            &audit(account.id, "user.sign_in_link_created", "x"),
        )
        .await
        .expect("token");
    let new_token = token_hash();
    store
        .create_sign_in_token(
            &new_token,
            account.id,
            user.id,
            cutoff,
            &audit(account.id, "user.sign_in_link_created", "x"),
        )
        .await
        .expect("token");

    assert_eq!(store.purge_sessions(t0).await.expect("purge none"), 0);
    assert_eq!(store.purge_sessions(cutoff).await.expect("purge"), 2);
    assert_eq!(session(&store, &expired.token_hash).await, None);
    assert_eq!(session(&store, &revoked.token_hash).await, None);
    for kept in [&expires_at_cutoff, &revoked_later, &live] {
        assert_eq!(session(&store, &kept.token_hash).await.map(|s| s.id), Some(kept.id), "`before` is exclusive");
    }
    assert_eq!(store.purge_sessions(cutoff).await.expect("purge again"), 0);

    // Sign-in tokens that expired before the cutoff went too (asked as of a time they were good).
    let then = t0 + Duration::hours(1);
    assert_eq!(store.consume_sign_in_token(&old_token, then).await.expect("consume"), None);
    assert_eq!(store.consume_sign_in_token(&new_token, then).await.expect("consume"), Some((account.id, user.id)));
}

both_backends!(a_sign_in_token_is_consumed_exactly_once);
async fn a_sign_in_token_is_consumed_exactly_once(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let user = add_user(&store, account.id, "ada@example.com", Role::Owner, None).await;
    let theirs = add_user(&store, other.id, "ada@example.com", Role::Owner, None).await;
    let t0 = ts(T0);
    let expires_at = t0 + Duration::minutes(15);

    let token = token_hash();
    store
        .create_sign_in_token(
            &token,
            account.id,
            user.id,
            expires_at,
            &audit(account.id, "user.sign_in_link_created", "x"),
        )
        .await
        .expect("create");
    let their_token = token_hash();
    store
        .create_sign_in_token(
            &their_token,
            other.id,
            theirs.id,
            expires_at,
            &audit(other.id, "user.sign_in_link_created", "x"),
        )
        .await
        .expect("create");
    let err = store
        .create_sign_in_token(
            &token,
            other.id,
            theirs.id,
            expires_at,
            &audit(other.id, "user.sign_in_link_created", "x"),
        )
        .await
        .expect_err("the same hash");
    assert!(matches!(err, StoreError::Conflict("token_hash")), "{err:?}");

    assert_eq!(store.consume_sign_in_token(&token, t0).await.expect("consume"), Some((account.id, user.id)));
    assert_eq!(store.consume_sign_in_token(&token, t0).await.expect("again"), None);
    assert_eq!(store.consume_sign_in_token(&token, t0 - Duration::hours(1)).await.expect("again"), None);
    assert_eq!(store.consume_sign_in_token(&token_hash(), t0).await.expect("unknown"), None);
    assert_eq!(
        store.consume_sign_in_token(&their_token, expires_at - Duration::seconds(1)).await.expect("the last second"),
        Some((other.id, theirs.id))
    );

    // Expired (also at exactly expires_at): refused, and gone for good.
    let stale = token_hash();
    store
        .create_sign_in_token(
            &stale,
            account.id,
            user.id,
            expires_at,
            &audit(account.id, "user.sign_in_link_created", "x"),
        )
        .await
        .expect("create");
    assert_eq!(store.consume_sign_in_token(&stale, expires_at).await.expect("expired"), None);
    assert_eq!(store.consume_sign_in_token(&stale, t0).await.expect("later, whatever the clock"), None);
}

both_backends!(concurrent_consumes_of_a_sign_in_token_have_one_winner, multi_thread);
async fn concurrent_consumes_of_a_sign_in_token_have_one_winner(store: Arc<dyn Store>) {
    const CALLS: usize = 12;
    let (account, _) = seed_account(&store, "Acme").await;
    let user = add_user(&store, account.id, "ada@example.com", Role::Owner, None).await;
    let t0 = ts(T0);
    let token = token_hash();
    store
        .create_sign_in_token(
            &token,
            account.id,
            user.id,
            t0 + Duration::minutes(15),
            &audit(account.id, "user.sign_in_link_created", "x"),
        )
        .await
        .expect("create");
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLS));
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.consume_sign_in_token(&token, t0).await.expect("consume")
            })
        })
        .collect();
    let mut winners = Vec::new();
    for call in calls {
        winners.extend(call.await.expect("the task ran"));
    }
    assert_eq!(winners, vec![(account.id, user.id)]);
}

both_backends!(user_writes_refuse_a_role_that_changed_meanwhile);
async fn user_writes_refuse_a_role_that_changed_meanwhile(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    add_user(&store, account.id, "owner@example.com", Role::Owner, None).await;
    // A caller read the user as a developer; a concurrent request promoted it to owner since.
    let read = add_user(&store, account.id, "ada@example.com", Role::Developer, Some(ARGON)).await;
    let mut promoted = read.clone();
    promoted.role = Role::Owner;
    assert!(
        store.update_user(&promoted, Role::Developer, &audit(account.id, "user.updated", "x")).await.expect("promote")
    );
    let t0 = ts(T0);
    let live = add_session(&store, &promoted, t0, t0 + Duration::days(7)).await;
    let token = token_hash();
    store
        .create_sign_in_token(
            &token,
            account.id,
            read.id,
            t0 + Duration::days(1),
            &audit(account.id, "user.sign_in_link_created", "x"),
        )
        .await
        .expect("token");
    let audited = audit_actions(&store, account.id).await;

    // Each write checked against the stale role is refused and writes nothing: not the stale
    // role written back over the new one, not a password, not a delete.
    let mut renamed = read.clone();
    renamed.email = "ada@example.org".to_owned();
    let err = store
        .update_user(&renamed, Role::Developer, &audit(account.id, "user.updated", "x"))
        .await
        .expect_err("the role changed");
    assert!(matches!(err, StoreError::Conflict("user_changed")), "{err:?}");
    for hash in [Some(ARGON_NEW), None] {
        let err = store
            .set_password(account.id, read.id, Role::Developer, hash, &audit(account.id, "user.password_changed", "x"))
            .await
            .expect_err("the role changed");
        assert!(matches!(err, StoreError::Conflict("user_changed")), "{hash:?}: {err:?}");
    }
    let err = store
        .delete_user(account.id, read.id, Role::Developer, &audit(account.id, "user.deleted", "x"))
        .await
        .expect_err("the role changed");
    assert!(matches!(err, StoreError::Conflict("user_changed")), "{err:?}");

    assert_eq!(store.get_user(account.id, read.id).await.expect("get"), Some(promoted.clone()));
    assert_eq!(
        store.users_by_email("ada@example.com").await.expect("by email"),
        vec![(promoted.clone(), Some(ARGON.to_owned()))]
    );
    assert_eq!(session(&store, &live.token_hash).await, Some(live.clone()));
    assert_eq!(session_ids(&store, &promoted, t0 + Duration::hours(1)).await, vec![live.id]);
    assert_eq!(audit_actions(&store, account.id).await, audited, "refused writes leave no audit event");

    // With the current role, the same writes go through.
    assert!(
        store
            .set_password(
                account.id,
                read.id,
                Role::Owner,
                Some(ARGON_NEW),
                &audit(account.id, "user.password_changed", "x")
            )
            .await
            .expect("set password")
    );
    assert!(session_ids(&store, &promoted, t0 + Duration::hours(1)).await.is_empty());
    assert!(store.update_user(&promoted, Role::Owner, &audit(account.id, "user.updated", "x")).await.expect("update"));
    assert_eq!(store.consume_sign_in_token(&token, t0).await.expect("consume"), None, "the new password used it up");
    assert!(
        store
            .delete_user(account.id, read.id, Role::Owner, &audit(account.id, "user.deleted", "x"))
            .await
            .expect("delete")
    );
    assert_eq!(store.get_user(account.id, read.id).await.expect("get"), None);

    // A user that is gone: Ok(false) whatever the role, nothing written.
    let audited = audit_actions(&store, account.id).await;
    for role in [Role::Owner, Role::Developer] {
        let mut ghost = promoted.clone();
        ghost.role = role;
        assert!(!store.update_user(&ghost, role, &audit(account.id, "user.updated", "x")).await.expect("gone"));
        assert!(
            !store
                .set_password(
                    account.id,
                    read.id,
                    role,
                    Some(ARGON_NEW),
                    &audit(account.id, "user.password_changed", "x")
                )
                .await
                .expect("gone")
        );
        assert!(
            !store.delete_user(account.id, read.id, role, &audit(account.id, "user.deleted", "x")).await.expect("gone")
        );
    }
    assert_eq!(store.get_user(account.id, read.id).await.expect("get"), None);
    assert_eq!(audit_actions(&store, account.id).await, audited);
}

both_backends!(delete_user_removes_its_sessions_and_sign_in_tokens);
async fn delete_user_removes_its_sessions_and_sign_in_tokens(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let (other, _) = seed_account(&store, "Other").await;
    let owner = add_user(&store, account.id, "owner@example.com", Role::Owner, None).await;
    let user = add_user(&store, account.id, "ada@example.com", Role::Developer, Some(ARGON)).await;
    let t0 = ts(T0);
    let sessions =
        [add_session(&store, &user, t0, t0 + Duration::days(1)).await, add_session(&store, &user, t0, t0).await];
    let token = token_hash();
    store
        .create_sign_in_token(
            &token,
            account.id,
            user.id,
            t0 + Duration::days(1),
            &audit(account.id, "user.sign_in_link_created", "x"),
        )
        .await
        .expect("token");
    let owners_session = add_session(&store, &owner, t0, t0 + Duration::days(1)).await;
    let owners_token = token_hash();
    store
        .create_sign_in_token(
            &owners_token,
            account.id,
            owner.id,
            t0 + Duration::days(1),
            &audit(account.id, "user.sign_in_link_created", "x"),
        )
        .await
        .expect("token");

    assert!(
        !store
            .delete_user(other.id, user.id, user.role, &audit(other.id, "user.deleted", "x"))
            .await
            .expect("not theirs")
    );
    assert_eq!(store.get_user(account.id, user.id).await.expect("get"), Some(user.clone()));

    let deleted = audit(account.id, "user.deleted", &user.id.to_string());
    assert!(store.delete_user(account.id, user.id, user.role, &deleted).await.expect("delete"));
    assert_eq!(store.get_user(account.id, user.id).await.expect("get"), None);
    assert!(store.users_by_email("ada@example.com").await.expect("by email").is_empty());
    for session in &sessions {
        assert_eq!(store.session_by_token(&session.token_hash).await.expect("by token"), None);
    }
    assert_eq!(store.consume_sign_in_token(&token, t0).await.expect("consume"), None);
    assert!(
        !store
            .delete_user(account.id, user.id, user.role, &audit(account.id, "user.deleted", "x"))
            .await
            .expect("again")
    );

    // The audit event outlives the user; the owner's session and token are untouched.
    // (Its position is not asserted: events made within one millisecond have random ids.)
    assert!(all_audit(&store, account.id).await.contains(&deleted));
    assert_eq!(audit_actions(&store, other.id).await, ["account.created"]);
    assert_eq!(session(&store, &owners_session.token_hash).await, Some(owners_session));
    assert_eq!(store.consume_sign_in_token(&owners_token, t0).await.expect("consume"), Some((account.id, owner.id)));

    // The email is free again.
    add_user(&store, account.id, "ADA@example.com", Role::Viewer, None).await;
}

both_backends!(a_new_password_uses_up_the_users_sign_in_tokens);
async fn a_new_password_uses_up_the_users_sign_in_tokens(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    let user = add_user(&store, account.id, "ada@example.com", Role::Developer, None).await;
    let owner = add_user(&store, account.id, "owner@example.com", Role::Owner, None).await;
    let t0 = ts(T0);
    let token = token_hash();
    store
        .create_sign_in_token(
            &token,
            account.id,
            user.id,
            t0 + Duration::days(1),
            &audit(account.id, "user.sign_in_link_created", "x"),
        )
        .await
        .expect("token");
    let owners_token = token_hash();
    store
        .create_sign_in_token(
            &owners_token,
            account.id,
            owner.id,
            t0 + Duration::days(1),
            &audit(account.id, "user.sign_in_link_created", "x"),
        )
        .await
        .expect("token");
    let changed = audit(account.id, "user.password_changed", &user.id.to_string());
    assert!(store.set_password(account.id, user.id, user.role, Some(ARGON), &changed).await.expect("set"));
    assert_eq!(store.consume_sign_in_token(&token, t0).await.expect("consume"), None, "the link died with it");
    assert_eq!(store.consume_sign_in_token(&owners_token, t0).await.expect("consume"), Some((account.id, owner.id)));
}

both_backends!(a_change_of_role_ends_the_users_sessions_and_links);
async fn a_change_of_role_ends_the_users_sessions_and_links(store: Arc<dyn Store>) {
    let (account, _) = seed_account(&store, "Acme").await;
    add_user(&store, account.id, "owner@example.com", Role::Owner, None).await;
    let user = add_user(&store, account.id, "ada@example.com", Role::Developer, None).await;
    let t0 = ts(T0);
    let live = add_session(&store, &user, t0, t0 + Duration::days(1)).await;
    let first = token_hash();
    let made = audit(account.id, "user.sign_in_link_created", &user.id.to_string());
    store.create_sign_in_token(&first, account.id, user.id, t0 + Duration::days(1), &made).await.expect("token");
    assert!(audit_actions(&store, account.id).await.contains(&"user.sign_in_link_created".to_owned()), "audited");
    // A second link replaces the first.
    let second = token_hash();
    let again = audit(account.id, "user.sign_in_link_created", &user.id.to_string());
    store.create_sign_in_token(&second, account.id, user.id, t0 + Duration::days(1), &again).await.expect("token");
    assert_eq!(store.consume_sign_in_token(&first, t0).await.expect("consume"), None, "one live link per user");

    // Renaming keeps them; a new role ends both.
    let mut renamed = user.clone();
    renamed.email = "ada.l@example.com".into();
    assert!(
        store.update_user(&renamed, Role::Developer, &audit(account.id, "user.updated", "x")).await.expect("rename")
    );
    assert_eq!(session(&store, &live.token_hash).await.map(|s| s.revoked_at), Some(None));
    let mut promoted = renamed.clone();
    promoted.role = Role::Admin;
    assert!(
        store.update_user(&promoted, Role::Developer, &audit(account.id, "user.updated", "x")).await.expect("promote")
    );
    assert!(session(&store, &live.token_hash).await.is_some_and(|s| s.revoked_at.is_some()), "the session ended");
    assert_eq!(store.consume_sign_in_token(&second, t0).await.expect("consume"), None, "the link died");
}

/// During a rolling upgrade the new version migrates first, and an old node must still start on
/// that schema (docs/deployment.md): a migration it does not know is a newer version's.
#[tokio::test]
async fn an_older_binary_starts_on_a_newer_schema() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("keygate.db").display());
    let store = connect(&url).await.expect("open and migrate SQLite");
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open the file");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99999, 'from a newer keygate', 1, X'00', 0)",
    )
    .execute(&mut conn)
    .await
    .expect("record a migration of a newer version");
    let _ = conn.close().await;
    store.migrate().await.expect("migrating again ignores the newer version's migration");
    store.close().await;
    connect(&url).await.expect("and a new process opens it");
}

/// Migration 0008 moves the request log from a row per record into chunks: every record a
/// server of the previous version kept is listed unchanged after the upgrade, and a record such
/// a server writes afterwards (its table stays, for rolling upgrades) is listed and purged too.
/// Migration 0009 adds the packed form beside: chunks of both forms are listed, and one in the
/// packed form holds no record a node of the 0008 version would try to read.
macro_rules! request_log_upgrade {
    ($(#[$attr:meta])* $name:ident, $conn:ty, $url:expr, $cleanup:expr) => {
        #[tokio::test]
        $(#[$attr])*
        #[allow(clippy::redundant_closure_call, reason = "one body for both backends")]
        async fn $name() {
            /// Writes `r` into `request_log` as keygate did up to migration 0007.
            async fn insert_legacy(conn: &mut $conn, r: &RequestRecord) {
                sqlx::query(
                    "INSERT INTO request_log (id, request_id, at, account_id, key_id, tenant_id, route, method, \
                     status, outcome, client_ip, latency_us, via_key_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(&r.id)
                .bind(&r.request_id)
                .bind(r.at)
                .bind(r.account_id.to_string())
                .bind(r.key_id.map(|k| k.to_string()))
                .bind(r.tenant_id.map(|t| t.to_string()))
                .bind(&r.route)
                .bind(&r.method)
                .bind(i32::from(r.status))
                .bind(&r.outcome)
                .bind(r.client_ip.map(|ip| ip.to_string()))
                .bind(i64::try_from(r.latency_us).expect("small"))
                .bind(r.via_key_id.map(|k| k.to_string()))
                .execute(conn)
                .await
                .expect("insert into request_log");
            }

            let (url, dir, backend) = $url.await;
            // Migrations 0001–0007 from the source tree, run as a server of that version ran them.
            let previous = tempfile::tempdir().expect("a temporary directory");
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
            for entry in std::fs::read_dir(&source).expect("the migrations") {
                let path = entry.expect("an entry").path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
                if name.as_str() < "0008" {
                    std::fs::copy(&path, previous.path().join(&name)).expect("copy a migration");
                }
            }
            let mut conn = <$conn>::connect(&url).await.expect("connect");
            let migrator = sqlx::migrate::Migrator::new(previous.path()).await.expect("read the migrations");
            migrator.run(&mut conn).await.expect("migrate to 0007");

            let (a, b) = (AccountId::generate(), AccountId::generate());
            let key = KeyId::generate();
            let t0 = ts("2026-11-01T00:00:00Z");
            let mut kept = Vec::new();
            for i in 0..2_345_i64 {
                let at = t0 + Duration::seconds(i);
                let mut r = request(if i % 7 == 0 { b } else { a }, (i % 3 == 0).then_some(key), at, 200, "ok");
                r.id = RequestRecord::first_id_at(at);
                r.request_id = format!("req \"{i}\" ü");
                r.tenant_id = (i % 5 == 0).then(TenantId::generate);
                r.client_ip = (i % 2 == 0).then(|| ip("2001:db8::7"));
                r.via_key_id = (i % 11 == 0).then(KeyId::generate);
                r.status = if i % 4 == 0 { 429 } else { 200 };
                kept.push(r);
            }
            for r in &kept {
                insert_legacy(&mut conn, r).await;
            }

            let store = connect(&url).await.expect("open and migrate to the newest schema");
            let everything = |account| {
                let store = Arc::clone(&store);
                async move {
                    let mut all = Vec::new();
                    loop {
                        let page = Page { limit: 100, before: all.last().map(|r: &RequestRecord| r.id.clone()) };
                        let rows = store.list_requests(account, &RequestFilter::default(), &page).await.expect("list").records;
                        if rows.is_empty() {
                            return all;
                        }
                        all.extend(rows);
                    }
                }
            };
            for account in [a, b] {
                let mut expected: Vec<RequestRecord> = kept.iter().filter(|r| r.account_id == account).cloned().collect();
                expected.reverse();
                assert_eq!(everything(account).await, expected, "every record of {account}, unchanged");
            }
            let filter = RequestFilter { key_id: Some(key), status: Some(429), ..RequestFilter::default() };
            let listed = store.list_requests(a, &filter, &page(1_000)).await.expect("list filtered").records;
            let expected: Vec<&str> =
                kept.iter().rev().filter(|r| r.account_id == a && r.key_id == Some(key) && r.status == 429).map(|r| r.id.as_str()).collect();
            assert_eq!(listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), expected);

            // A node of the previous version, not yet upgraded, writes a record the old way.
            let late = RequestRecord { id: RequestRecord::generate_id(), ..request(a, Some(key), time::now(), 201, "ok") };
            insert_legacy(&mut conn, &late).await;
            let newest = store.list_requests(a, &RequestFilter::default(), &page(2)).await.expect("list").records;
            assert_eq!(newest[0], late);
            assert_eq!(newest[1], *kept.iter().rev().find(|r| r.account_id == a).expect("one of a"));

            // Migration 0009: this version writes chunks in the packed form. A node of the 0008
            // version reads only `records`, and finds no record there; this version lists it.
            let packed = RequestRecord { id: RequestRecord::generate_id(), ..request(a, Some(key), time::now(), 202, "ok") };
            let chunks = RequestChunk::group(std::slice::from_ref(&packed)).expect("record ids");
            store.record_requests(&chunks).await.expect("record");
            let seen_by_0008: Vec<String> = sqlx::query_scalar("SELECT records FROM request_log_chunks WHERE last_id = $1")
                .bind(&packed.id)
                .fetch_all(&mut conn)
                .await
                .expect("read as the 0008 version reads");
            assert_eq!(seen_by_0008, ["[]"]);
            let newest = store.list_requests(a, &RequestFilter::default(), &page(2)).await.expect("list").records;
            assert_eq!(newest, [packed, late]);
            let total = u64::try_from(kept.len()).expect("small") + 2;
            assert_eq!(store.purge_requests(time::now() + Duration::seconds(1)).await.expect("purge"), total);
            assert!(everything(a).await.is_empty());
            let _ = conn.close().await;
            store.close().await;
            ($cleanup)(dir).await;
        }
    };
}

request_log_upgrade!(
    request_log_upgrade_sqlite,
    sqlx::SqliteConnection,
    async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("keygate.db");
        std::fs::File::create(&path).expect("create the file");
        (format!("sqlite://{}", path.display()), Some(dir), "sqlite")
    },
    |dir: Option<tempfile::TempDir>| async move { drop(dir) }
);

request_log_upgrade!(
    #[cfg_attr(not(keygate_pg), ignore = "set KEYGATE_TEST_POSTGRES_URL to run the PostgreSQL suite")]
    request_log_upgrade_postgres,
    sqlx::PgConnection,
    async {
        let admin_url = std::env::var("KEYGATE_TEST_POSTGRES_URL").expect("KEYGATE_TEST_POSTGRES_URL is set");
        let name = format!("keygate_t_{}", AccountId::generate().ulid().to_string().to_lowercase());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.expect("connect to KEYGATE_TEST_POSTGRES_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.expect("create");
        let _ = admin.close().await;
        (with_database(&admin_url, &name), Some(name), "postgres")
    },
    |name: Option<String>| async move {
        let admin_url = std::env::var("KEYGATE_TEST_POSTGRES_URL").expect("KEYGATE_TEST_POSTGRES_URL is set");
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.expect("connect");
        let _ =
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", name.expect("named"))))
                .execute(&mut admin)
                .await;
    }
);
