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
        limits: Limits::default(),
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
