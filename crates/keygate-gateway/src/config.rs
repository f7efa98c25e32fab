//! `[gateway]` in `keygate.toml`: the upstream and the routes keygate forwards to it, as written.
//! [`crate::Gateway::compile`] checks and compiles it.

use serde::{Deserialize, Serialize};

/// `[gateway]`: the upstream and the routes keygate forwards to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// `http://host:port` of the API behind keygate.
    pub upstream: String,
    pub connect_timeout_ms: u64,
    /// Time allowed until the upstream's response headers.
    pub timeout_ms: u64,
    /// Largest request body forwarded.
    pub max_body_bytes: usize,
    pub routes: Vec<RouteConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            upstream: String::new(),
            connect_timeout_ms: 2_000,
            timeout_ms: 30_000,
            max_body_bytes: 10 * 1024 * 1024,
            routes: Vec::new(),
        }
    }
}

/// `[[gateway.routes]]`: one forwarded endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub method: String,
    /// Under `/v1/`, with `{params}`.
    pub path: String,
    /// The scope a key needs.
    pub scope: String,
    /// The path parameter carrying the tenant; without it, the `X-Tenant-Id` header.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Whether `Idempotency-Key` applies; default: true for POST.
    #[serde(default)]
    pub idempotent: Option<bool>,
    /// A per-client-IP limit on this route.
    #[serde(default)]
    pub ip_rate_limit_per_minute: Option<u32>,
}
