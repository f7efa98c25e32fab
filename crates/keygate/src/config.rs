//! keygate's configuration: the shape of `keygate.toml` and its validation.
//!
//! Layering (defaults → file → `KEYGATE_*` env → flags) happens in `settings` (the binary); this only
//! defines what the layers fill in and turns it into validated [`Settings`]. Validation reports
//! every problem at once, each saying what to fix. Nothing here is global: the result is passed
//! explicitly to whatever needs it.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use keygate_domain::key::{HashSecret, KeyFormat};
use keygate_domain::scope::{Catalog, CatalogEntry};
use keygate_engine::{Limits, SessionSettings};
use keygate_gateway::{Gateway, GatewayConfig};
use serde::{Deserialize, Deserializer, Serialize};

/// The whole configuration file. Unknown keys are errors, not silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// `sqlite://path` (default, created on start) or `postgres://…`.
    pub database_url: String,
    /// One Redis server for cluster mode (`redis://host:port`): every limit decided there for
    /// all nodes, every cache eviction published to all of them (SPEC §5, §11).
    pub redis_url: Option<String>,
    /// Or a Redis Cluster for cluster mode: some of its nodes (`redis://host:port`). In env:
    /// comma-separated.
    #[serde(deserialize_with = "list_or_comma_string")]
    pub redis_cluster_nodes: Vec<String>,
    /// The longest one Redis call may take, in milliseconds (1–10,000), before the node decides
    /// without Redis until it answers again.
    pub redis_timeout_ms: u64,
    /// `[database]`: the PostgreSQL connection pool.
    pub database: DatabaseConfig,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs or addresses). In env: comma-separated.
    #[serde(deserialize_with = "list_or_comma_string")]
    pub trusted_proxies: Vec<String>,
    /// What is counted per client IP (route IP limits, the failed-attempt throttle) counts an
    /// IPv6 client by its network of this many bits (SPEC §3): 64 by default, 1–128.
    pub client_ipv6_prefix: u8,
    /// HMAC secret for key hashes (≥ 32 chars). Generated into `keygate.secret` beside a SQLite
    /// database when absent.
    pub hash_secret: Option<SecretString>,
    /// Key prefix: `sk` gives `sk_live_…`.
    pub key_prefix: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Threads serving requests; 0 = one per core keygate may use.
    pub workers: u16,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    /// `[dashboard]`: sign-in sessions.
    pub dashboard: DashboardConfig,
    /// How long an `Idempotency-Key` and its stored response are kept, in seconds.
    pub idempotency_retention_seconds: u64,
    /// How many days request-log records are kept (1–3650).
    pub request_log_retention_days: u32,
    /// Which authenticated requests the request log keeps: `all` (the default), `failures`
    /// (an error code or a status of 400 or more) or `off`. Usage counts every request either way.
    pub request_log: keygate_engine::settings::RequestLogMode,
    /// The scope catalog; `None` = the built-in default (SPEC §4).
    pub scopes: Option<Vec<CatalogEntry>>,
    /// Put keygate in front of an upstream API (SPEC §10).
    pub gateway: Option<GatewayConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite://keygate.db".into(),
            redis_url: None,
            redis_cluster_nodes: Vec::new(),
            redis_timeout_ms: 50,
            database: DatabaseConfig::default(),
            trusted_proxies: Vec::new(),
            client_ipv6_prefix: 64,
            hash_secret: None,
            key_prefix: "sk".into(),
            log_format: LogFormat::Text,
            max_body_bytes: 1024 * 1024,
            workers: 0,
            auth: AuthConfig::default(),
            dashboard: DashboardConfig::default(),
            limits: LimitsConfig::default(),
            idempotency_retention_seconds: 86_400,
            request_log_retention_days: 30,
            request_log: keygate_engine::settings::RequestLogMode::All,
            scopes: None,
            gateway: None,
        }
    }
}

/// `[database]`: how each node uses PostgreSQL (SQLite ignores it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Connections one node opens at most (1–1,000); N nodes open up to N times this, so keep
    /// N × this under PostgreSQL's `max_connections`.
    pub max_connections: u32,
    /// How long a query waits for a connection, in milliseconds (100–60,000), before the request
    /// that needs it gets 503 `service_unavailable`.
    pub acquire_timeout_ms: u64,
    /// PostgreSQL's `statement_timeout` for every query, in milliseconds; 0 leaves the server's
    /// own. Migrations are not bounded by it.
    pub statement_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        let d = keygate_store::PoolSettings::default();
        Self {
            max_connections: d.max_connections,
            acquire_timeout_ms: u64::try_from(d.acquire_timeout.as_millis()).unwrap_or(5_000),
            statement_timeout_ms: d.statement_timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(0)),
        }
    }
}

/// `[dashboard]`: how long a sign-in lasts, and where browsers reach the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// A session ends after this many minutes without a request (1–1440).
    pub session_idle_minutes: u32,
    /// A session ends this many hours after sign-in, whatever its activity (1–720).
    pub session_hours: u32,
    /// The URL browsers reach keygate at (`https://keygate.example.com`), for the one-time
    /// sign-in links the CLI prints; default `http://` + `listen`.
    pub public_url: Option<String>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        let d = SessionSettings::default();
        Self {
            session_idle_minutes: u32::try_from(d.idle.num_minutes()).unwrap_or(30),
            session_hours: u32::try_from(d.lifetime.num_hours()).unwrap_or(12),
            public_url: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept the deprecated `appid` query parameter as a credential.
    pub allow_query_key: bool,
    /// Failed authentications per minute tolerated from one IP before it gets 429
    /// `too_many_failed_attempts` (burst of this many, then refilling smoothly).
    pub max_failed_attempts_per_minute: u32,
    /// The most keys the credential cache holds (1 – 100,000,000): beyond it, the least recently
    /// used are evicted and verified from the store again. About 2.2 KB of memory per cached key
    /// (docs/benchmarks.md).
    pub cache_max_keys: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { allow_query_key: false, max_failed_attempts_per_minute: 30, cache_max_keys: 100_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub default_key_rate_limit_per_minute: u32,
    pub max_key_rate_limit_per_minute: u32,
    pub default_account_rate_limit_per_minute: u32,
    /// API keys one account may hold (revoked and expired ones count until deleted); creating or
    /// rolling past it is 409 `conflict`. OWASP API4: no unbounded growth.
    pub max_keys_per_account: u32,
    /// Tenants one account may hold; creating past it is 409 `conflict`.
    pub max_tenants_per_account: u32,
    /// Dashboard users one account may hold; creating past it is 409 `conflict`.
    pub max_users_per_account: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            default_key_rate_limit_per_minute: l.default_key_rate_limit_per_minute,
            max_key_rate_limit_per_minute: l.max_key_rate_limit_per_minute,
            default_account_rate_limit_per_minute: l.default_account_rate_limit_per_minute,
            max_keys_per_account: l.max_keys_per_account,
            max_tenants_per_account: l.max_tenants_per_account,
            max_users_per_account: l.max_users_per_account,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A configured secret: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    #[must_use]
    pub fn new(s: String) -> Self {
        Self(s)
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

fn list_or_comma_string<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        One(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(v) => v,
        Either::One(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
    })
}

/// The validated configuration: the engine's part, and what serving needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub engine: keygate_engine::Settings,
    pub listen: SocketAddr,
    pub database_url: String,
    /// The PostgreSQL pool (`[database]`).
    pub pool: keygate_store::PoolSettings,
    /// Cluster mode's Redis, when `redis_url` or `redis_cluster_nodes` is set.
    pub redis: Option<keygate_cluster::RedisSettings>,
    /// The largest request body keygate's own API accepts, in bytes.
    pub max_body_bytes: usize,
    /// Threads serving requests; `None` = one per core (see [`Settings::workers`]).
    pub workers: Option<NonZeroUsize>,
    pub log_format: LogFormat,
    /// The compiled gateway, when configured.
    pub gateway: Option<Arc<Gateway>>,
    /// Where browsers reach keygate, without a trailing `/` (`[dashboard] public_url`, or
    /// `http://` + `listen`): the base of the one-time sign-in links the CLI prints.
    pub public_url: String,
}

impl Settings {
    /// How many threads serve requests: `workers`, or one per core keygate may use. Asked only
    /// by `serve` (finding the cores reads the cgroup limits).
    #[must_use]
    pub fn workers(&self) -> NonZeroUsize {
        self.workers.unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
    }
}

impl Config {
    /// Cluster mode's Redis: `redis_url` or `redis_cluster_nodes` (not both), each a
    /// `redis://host:port` URL, and the timeout per call.
    fn redis_settings(&self) -> Result<Option<keygate_cluster::RedisSettings>, String> {
        let target = match (&self.redis_url, self.redis_cluster_nodes.as_slice()) {
            (None, []) => return Ok(None),
            (Some(_), [_, ..]) => {
                return Err(
                    "set redis_url (one Redis server) or redis_cluster_nodes (a Redis Cluster), not both".into()
                );
            }
            (Some(url), []) => keygate_cluster::Target::Single(url.clone()),
            (None, nodes) => keygate_cluster::Target::Cluster(nodes.to_vec()),
        };
        for url in target.servers() {
            let setting = if self.redis_url.is_some() { "redis_url" } else { "redis_cluster_nodes" };
            let host = url.strip_prefix("redis://").map(|rest| rest.rsplit_once('@').map_or(rest, |(_, h)| h));
            if host.is_none_or(|h| h.is_empty() || h.starts_with(['/', ':'])) {
                // The URL may hold a password: only its scheme is echoed.
                let scheme = url.split_once("://").map_or("none", |(s, _)| s);
                return Err(format!(
                    "{setting}: expected redis://host:port (scheme `{scheme}`; TLS, rediss://, is not supported: \
                     reach Redis over a private network or a TLS tunnel)"
                ));
            }
        }
        if !(1..=10_000).contains(&self.redis_timeout_ms) {
            return Err("redis_timeout_ms must be between 1 and 10000".into());
        }
        Ok(Some(keygate_cluster::RedisSettings { target, timeout: Duration::from_millis(self.redis_timeout_ms) }))
    }

    /// Checks everything but the hash secret (resolved by the binary, which may generate it).
    ///
    /// # Errors
    /// Every problem found, one message each.
    pub fn validate(&self) -> Result<Settings, Vec<String>> {
        let mut errors = Vec::new();
        let listen = self
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| errors.push(format!("listen: `{}` is not an address like 127.0.0.1:8080", self.listen)))
            .ok();
        let mut trusted_proxies = Vec::new();
        for p in &self.trusted_proxies {
            match keygate_domain::ip::parse_entry(p) {
                Ok(net) => trusted_proxies.push(net),
                Err(m) => errors.push(format!("trusted_proxies: {m}")),
            }
        }
        let key_format = KeyFormat::new(&self.key_prefix).map_err(|e| errors.push(format!("key_prefix: {e}"))).ok();
        let catalog = Catalog::new(self.scopes.clone().unwrap_or_else(Catalog::default_entries))
            .map_err(|e| errors.push(format!("scopes: {e}")))
            .ok();
        let l = &self.limits;
        if l.max_key_rate_limit_per_minute == 0 {
            errors.push("limits.max_key_rate_limit_per_minute must be at least 1".into());
        }
        if l.default_key_rate_limit_per_minute == 0
            || l.default_key_rate_limit_per_minute > l.max_key_rate_limit_per_minute
        {
            errors.push(
                "limits.default_key_rate_limit_per_minute must be between 1 and limits.max_key_rate_limit_per_minute"
                    .into(),
            );
        }
        if l.max_keys_per_account == 0 || l.max_tenants_per_account == 0 || l.max_users_per_account == 0 {
            errors.push(
                "limits.max_keys_per_account, limits.max_tenants_per_account and limits.max_users_per_account must \
                 be at least 1"
                    .into(),
            );
        }
        if !(1..=128).contains(&self.client_ipv6_prefix) {
            errors.push("client_ipv6_prefix must be between 1 and 128 (64: one host owns a /64)".into());
        }
        if l.default_account_rate_limit_per_minute == 0 {
            errors.push("limits.default_account_rate_limit_per_minute must be at least 1".into());
        }
        if self.auth.max_failed_attempts_per_minute == 0 {
            errors.push("auth.max_failed_attempts_per_minute must be at least 1".into());
        }
        if !(1..=100_000_000).contains(&self.auth.cache_max_keys) {
            errors.push("auth.cache_max_keys must be between 1 and 100000000".into());
        }
        if !(60..=30 * 86_400).contains(&self.idempotency_retention_seconds) {
            errors.push("idempotency_retention_seconds must be between 60 and 2592000 (30 days)".into());
        }
        if !(1..=1440).contains(&self.dashboard.session_idle_minutes) {
            errors.push("dashboard.session_idle_minutes must be between 1 and 1440 (a day)".into());
        }
        if !(1..=720).contains(&self.dashboard.session_hours) {
            errors.push("dashboard.session_hours must be between 1 and 720 (30 days)".into());
        }
        if let Some(url) = &self.dashboard.public_url
            && !((url.starts_with("http://") || url.starts_with("https://"))
                && url.len() > "https://".len()
                && !url.contains(['?', '#', ' ']))
        {
            errors.push(format!(
                "dashboard.public_url: `{url}` is not a URL like https://keygate.example.com (http or https, no query)"
            ));
        }
        if !(1..=3650).contains(&self.request_log_retention_days) {
            errors.push("request_log_retention_days must be between 1 and 3650".into());
        }
        let redis = self.redis_settings().map_err(|e| errors.push(e)).ok().flatten();
        let db = &self.database;
        if !(1..=1000).contains(&db.max_connections) {
            errors.push("database.max_connections must be between 1 and 1000".into());
        }
        if !(100..=60_000).contains(&db.acquire_timeout_ms) {
            errors.push("database.acquire_timeout_ms must be between 100 and 60000".into());
        }
        if db.statement_timeout_ms > 3_600_000 {
            errors.push(
                "database.statement_timeout_ms must be between 0 (the server's own) and 3600000 (an hour)".into(),
            );
        }
        if self.max_body_bytes < 1024 {
            errors.push("max_body_bytes must be at least 1024".into());
        }
        if self.workers > 1024 {
            errors.push("workers must be between 0 (one per core) and 1024".into());
        }
        if let Some(secret) = &self.hash_secret
            && let Err(e) = HashSecret::new(secret.expose())
        {
            errors.push(format!("hash_secret: {e}"));
        }
        let gateway = match (&self.gateway, &catalog) {
            (Some(g), Some(catalog)) => {
                Gateway::compile(g, catalog, keygate_api::own_paths().iter().map(String::as_str))
                    .map_err(|e| errors.extend(e.into_iter().map(|m| format!("gateway: {m}"))))
                    .ok()
                    .map(Arc::new)
            }
            _ => None,
        };
        match (listen, key_format, catalog) {
            (Some(listen), Some(key_format), Some(catalog)) if errors.is_empty() => Ok(Settings {
                engine: keygate_engine::Settings {
                    trusted_proxies,
                    client_ipv6_prefix: self.client_ipv6_prefix,
                    key_format,
                    catalog,
                    limits: Limits {
                        default_key_rate_limit_per_minute: l.default_key_rate_limit_per_minute,
                        max_key_rate_limit_per_minute: l.max_key_rate_limit_per_minute,
                        default_account_rate_limit_per_minute: l.default_account_rate_limit_per_minute,
                        max_keys_per_account: l.max_keys_per_account,
                        max_tenants_per_account: l.max_tenants_per_account,
                        max_users_per_account: l.max_users_per_account,
                    },
                    allow_query_key: self.auth.allow_query_key,
                    max_failed_attempts_per_minute: self.auth.max_failed_attempts_per_minute,
                    cache_max_keys: self.auth.cache_max_keys,
                    idempotency_retention_seconds: self.idempotency_retention_seconds,
                    request_log_retention_days: self.request_log_retention_days,
                    request_log: self.request_log,
                    sessions: SessionSettings {
                        idle: chrono::Duration::minutes(i64::from(self.dashboard.session_idle_minutes)),
                        lifetime: chrono::Duration::hours(i64::from(self.dashboard.session_hours)),
                    },
                },
                listen,
                database_url: self.database_url.clone(),
                pool: keygate_store::PoolSettings {
                    max_connections: db.max_connections,
                    acquire_timeout: Duration::from_millis(db.acquire_timeout_ms),
                    statement_timeout: (db.statement_timeout_ms > 0)
                        .then(|| Duration::from_millis(db.statement_timeout_ms)),
                },
                redis,
                max_body_bytes: self.max_body_bytes,
                workers: NonZeroUsize::new(usize::from(self.workers)),
                log_format: self.log_format,
                gateway,
                public_url: self
                    .dashboard
                    .public_url
                    .as_deref()
                    .map_or_else(|| format!("http://{listen}"), |u| u.trim_end_matches('/').to_owned()),
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_url_is_a_base_url() {
        let mut config = Config::default();
        assert_eq!(config.validate().map(|s| s.public_url).ok().as_deref(), Some("http://127.0.0.1:8080"));
        config.dashboard.public_url = Some("https://keygate.example.com/".into());
        assert_eq!(config.validate().map(|s| s.public_url).ok().as_deref(), Some("https://keygate.example.com"));
        for bad in ["keygate.example.com", "ftp://x", "https://", "https://x/?a=b"] {
            config.dashboard.public_url = Some(bad.into());
            let errors = config.validate().err().unwrap_or_default();
            assert!(errors.iter().any(|e| e.starts_with("dashboard.public_url")), "{bad}: {errors:?}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        let s = Config::default().validate().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.engine.limits.default_key_rate_limit_per_minute, 100);
        assert_eq!(Some(s.workers()), std::thread::available_parallelism().ok(), "0 workers: one per core");
        let s = Config { workers: 3, ..Config::default() }.validate().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.workers().get(), 3);
    }

    #[test]
    fn every_problem_is_reported() {
        let c = Config {
            listen: "nope".into(),
            trusted_proxies: vec!["10.0.0.0/33".into()],
            key_prefix: "S_K".into(),
            hash_secret: Some(SecretString::new("short".into())),
            request_log_retention_days: 0,
            workers: 1025,
            auth: AuthConfig { cache_max_keys: 0, ..AuthConfig::default() },
            ..Config::default()
        };
        let errors = c.validate().err().unwrap_or_default();
        assert_eq!(errors.len(), 7, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("auth.cache_max_keys")), "{errors:?}");
        assert!(errors.iter().all(|e| !e.contains("short")), "secrets are not echoed");
    }

    #[test]
    fn the_cache_size_reaches_the_engine() {
        let c = Config { auth: AuthConfig { cache_max_keys: 2_000_000, ..AuthConfig::default() }, ..Config::default() };
        let s = c.validate().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.engine.cache_max_keys, 2_000_000);
        let too_big =
            Config { auth: AuthConfig { cache_max_keys: 100_000_001, ..AuthConfig::default() }, ..Config::default() };
        assert!(too_big.validate().is_err());
    }

    #[test]
    fn cluster_mode_takes_one_redis_or_a_redis_cluster() {
        let s = Config::default().validate().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.redis, None, "no Redis: one node");
        let one = Config { redis_url: Some("redis://10.0.0.5:6379".into()), ..Config::default() };
        let s = one.validate().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            s.redis,
            Some(keygate_cluster::RedisSettings {
                target: keygate_cluster::Target::Single("redis://10.0.0.5:6379".into()),
                timeout: Duration::from_millis(50),
            })
        );
        let nodes = vec!["redis://10.0.0.5:7000".to_owned(), "redis://10.0.0.6:7000".to_owned()];
        let cluster = Config { redis_cluster_nodes: nodes.clone(), redis_timeout_ms: 20, ..Config::default() };
        let s = cluster.validate().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            s.redis.map(|r| (r.target, r.timeout)),
            Some((keygate_cluster::Target::Cluster(nodes.clone()), Duration::from_millis(20)))
        );
        let both = Config { redis_url: Some("redis://h:1".into()), redis_cluster_nodes: nodes, ..Config::default() };
        assert!(both.validate().err().unwrap_or_default().iter().any(|e| e.contains("not both")));
        for bad in ["rediss://:hunter2@h:6379", "h:6379", "redis://", "http://h"] {
            let c = Config { redis_url: Some(bad.into()), ..Config::default() };
            let errors = c.validate().err().unwrap_or_default();
            assert!(errors.iter().any(|e| e.starts_with("redis_url")), "{bad}: {errors:?}");
            assert!(errors.iter().all(|e| !e.contains("hunter2")), "a password is not echoed");
        }
        let slow = Config { redis_url: Some("redis://h:1".into()), redis_timeout_ms: 0, ..Config::default() };
        assert!(slow.validate().is_err());
    }

    #[test]
    fn the_pool_settings_reach_the_store() {
        let c = Config {
            database: DatabaseConfig { max_connections: 40, acquire_timeout_ms: 800, statement_timeout_ms: 0 },
            ..Config::default()
        };
        let s = c.validate().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            s.pool,
            keygate_store::PoolSettings {
                max_connections: 40,
                acquire_timeout: Duration::from_millis(800),
                statement_timeout: None
            }
        );
        let d = Config::default().validate().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(d.pool, keygate_store::PoolSettings::default());
        let bad = Config {
            database: DatabaseConfig { max_connections: 0, ..DatabaseConfig::default() },
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Config {
            hash_secret: Some(SecretString::new("supersecretsupersecretsupersecret".into())),
            ..Config::default()
        };
        assert!(!format!("{c:?}").contains("supersecret"));
    }
}
