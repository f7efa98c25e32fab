//! What the engine is configured with: validated values, never the file's raw shape (the binary
//! reads and checks `keygate.toml`, see `docs/configuration.md`).

use ipnet::IpNet;
use keygate_domain::key::KeyFormat;
use keygate_domain::scope::Catalog;

/// Key rate-limit bounds and per-account caps, used when creating and changing keys and tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute of a key created without `rate_limit_per_minute`.
    pub default_key_rate_limit_per_minute: u32,
    /// The most requests per minute a key may be given.
    pub max_key_rate_limit_per_minute: u32,
    /// Requests per minute of an account created without a limit.
    pub default_account_rate_limit_per_minute: u32,
    /// API keys one account may hold (OWASP API4).
    pub max_keys_per_account: u32,
    /// Tenants one account may hold.
    pub max_tenants_per_account: u32,
    /// Dashboard users one account may hold.
    pub max_users_per_account: u32,
}

/// The partner guide's numbers (SPEC §8: "Rate Limit — default 100, max 10,000").
impl Default for Limits {
    fn default() -> Self {
        Self {
            default_key_rate_limit_per_minute: 100,
            max_key_rate_limit_per_minute: 10_000,
            default_account_rate_limit_per_minute: 1_000,
            max_keys_per_account: 1_000,
            max_tenants_per_account: 10_000,
            max_users_per_account: 1_000,
        }
    }
}

/// How long a dashboard session lasts (SPEC §12): it ends after `idle` without a request, and
/// after `lifetime` whatever its activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    pub idle: chrono::Duration,
    pub lifetime: chrono::Duration,
}

/// 30 minutes idle, 12 hours at most (OWASP's session guidance for a sensitive application).
impl Default for SessionSettings {
    fn default() -> Self {
        Self { idle: chrono::Duration::minutes(30), lifetime: chrono::Duration::hours(12) }
    }
}

/// Which requests the request log keeps (SPEC §8 `request_log`). Usage counters count every
/// request whatever the mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestLogMode {
    /// Every authenticated request: what a partner audits after a leak. The default.
    #[default]
    All,
    /// Only refused or failed ones: an outcome other than `ok`, or a status of 400 or more.
    Failures,
    /// None.
    Off,
}

impl RequestLogMode {
    /// Whether a request answered `status` with `outcome` (`ok` or an error code) is kept.
    #[must_use]
    pub fn keeps(self, status: u16, outcome: &str) -> bool {
        match self {
            Self::All => true,
            Self::Failures => status >= 400 || outcome != "ok",
            Self::Off => false,
        }
    }
}

/// The engine's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Peers whose `X-Forwarded-For` is believed (SPEC §3).
    pub trusted_proxies: Vec<IpNet>,
    /// Bits of an IPv6 client address that identify it for per-IP counting (1–128).
    pub client_ipv6_prefix: u8,
    pub key_format: KeyFormat,
    pub catalog: Catalog,
    pub limits: Limits,
    /// Whether the deprecated `appid` query parameter is a credential (SPEC §3, check 1).
    pub allow_query_key: bool,
    /// Failed authentications per minute tolerated from one IP before it gets 429.
    pub max_failed_attempts_per_minute: u32,
    /// The most keys the credential cache holds; beyond it the least recently used are evicted
    /// and verified from the store again.
    pub cache_max_keys: u64,
    /// How long an `Idempotency-Key` and its stored response are kept, in seconds (SPEC §6).
    pub idempotency_retention_seconds: u64,
    /// How many days request-log records are kept.
    pub request_log_retention_days: u32,
    /// Which requests the request log keeps (usage counts every request whatever this says).
    pub request_log: RequestLogMode,
    /// Dashboard sessions' timeouts.
    pub sessions: SessionSettings,
}
