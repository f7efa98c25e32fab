//! Shared set-up for the benchmarks: a real store with an operator, a partner account, a tenant
//! and a restricted key, the way a running server would have them.

use std::sync::Arc;

use keygate_domain::key::HashSecret;
use keygate_domain::key::KeyFormat;
use keygate_domain::scope::Catalog;
use keygate_engine::services::Principal;
use keygate_engine::services::keys::CreateKeyRequest;
use keygate_engine::services::tenants::CreateTenantRequest;
use keygate_engine::{Keygate, Limits, Settings};
use keygate_store::Store;

pub const SECRET: &str = "bench-secret-bench-secret-bench-secret-0123";

#[allow(dead_code, reason = "each bench binary uses a different part of the fixture")]
pub struct Fixture {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub plaintext: String,
    pub tenant_id: String,
}

pub fn settings() -> Settings {
    Settings {
        trusted_proxies: Vec::new(),
        client_ipv6_prefix: 64,
        key_format: KeyFormat::new("sk").unwrap_or_else(|e| panic!("key format: {e}")),
        catalog: Catalog::default(),
        // Room for the benches' populations (store_verify makes 1,000 keys in the operator
        // account, which holds its own first key too).
        limits: Limits { max_keys_per_account: 1_000_000, ..Limits::default() },
        allow_query_key: false,
        max_failed_attempts_per_minute: 30,
        cache_max_keys: 100_000,
        idempotency_retention_seconds: 86_400,
        request_log_retention_days: 30,
        request_log: keygate_engine::settings::RequestLogMode::All,
        sessions: keygate_engine::SessionSettings::default(),
    }
}

pub fn secret() -> HashSecret {
    HashSecret::new(SECRET).unwrap_or_else(|_| panic!("secret"))
}

/// Opens `url`, creates an account with a tenant and a key restricted the way partners restrict
/// them (scopes, tenant, CIDR allowlist), and returns it.
pub async fn fixture(url: &str) -> Fixture {
    let settings = settings();
    let store = keygate_store::connect(url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let keygate = Keygate::new(Arc::clone(&store), &settings, &secret());
    let (operator, ..) = keygate.init_operator().await.ok().flatten().unwrap_or_else(|| panic!("init"));
    let p = Principal::cli(operator);
    let tenant = keygate
        .create_tenant(&p, CreateTenantRequest { name: "Clinic".into(), ..CreateTenantRequest::default() })
        .await
        .unwrap_or_else(|e| panic!("tenant: {e}"));
    let req = CreateKeyRequest {
        name: "bench".into(),
        scopes: Some(Some(vec!["calls:write".into(), "sms:send".into(), "tenants:read".into()])),
        tenant_ids: Some(Some(vec![tenant.id.to_string()])),
        allowed_ips: Some(Some(vec!["10.0.0.0/8".into(), "2001:db8::/32".into()])),
        ..CreateKeyRequest::default()
    };
    let (_, plaintext) = keygate.create_key(&p, req).await.unwrap_or_else(|e| panic!("key: {e}"));
    Fixture { settings, store, plaintext: plaintext.expose().to_owned(), tenant_id: tenant.id.to_string() }
}

/// A fresh PostgreSQL database on the server `KEYGATE_TEST_POSTGRES_URL` names, for one bench
/// run: `kg_bench_<ulid>`, created by [`ScratchDatabase::create`] and dropped by
/// [`ScratchDatabase::drop`].
#[allow(dead_code, reason = "only the benches that measure PostgreSQL use it")]
pub struct ScratchDatabase {
    admin: String,
    pub name: String,
    /// The server's URL with the scratch database in it (its query kept).
    pub url: String,
}

#[allow(dead_code, reason = "only the benches that measure PostgreSQL use it")]
impl ScratchDatabase {
    /// `None` when `KEYGATE_TEST_POSTGRES_URL` is not set.
    pub async fn create() -> Option<Self> {
        use sqlx::Connection as _;
        let admin = std::env::var("KEYGATE_TEST_POSTGRES_URL").ok()?;
        let name = format!("kg_bench_{}", ulid::Ulid::generate().to_string().to_lowercase());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| panic!("postgres: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        let _ = conn.close().await;
        let (base, query) = admin.split_once('?').map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
        let authority = base.find("://").map_or(0, |i| i + 3);
        let server = base[authority..].find('/').map_or(base, |slash| &base[..authority + slash]);
        let url = match query {
            Some(q) => format!("{server}/{name}?{q}"),
            None => format!("{server}/{name}"),
        };
        Some(Self { admin, name, url })
    }

    /// A connection to the server's own database (not the scratch one).
    pub async fn admin(&self) -> sqlx::PgConnection {
        use sqlx::Connection as _;
        sqlx::PgConnection::connect(&self.admin).await.unwrap_or_else(|e| panic!("postgres: {e}"))
    }

    /// Drops the database, whoever is still connected to it.
    pub async fn drop(self) {
        let mut conn = self.admin().await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&mut conn)
            .await;
    }
}
