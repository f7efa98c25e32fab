//! Response shapes: how stored objects look on the wire (SPEC §8), with their OpenAPI schemas.
//!
//! Only the create and roll responses carry a plaintext key ([`CreatedKey`]); every other view of
//! a key is masked.

use chrono::SecondsFormat;
use ipnet::IpNet;
use keygate_domain::model::{Account, ApiKey, AuditEvent, Tenant, User};
use keygate_domain::time::Timestamp;
use keygate_store::{RequestRecord, UsageRow};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// `2026-04-20T15:42:11Z`.
#[must_use]
pub fn ts(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An allowlist entry as the client wrote it: a single address without `/32` or `/128`.
#[must_use]
pub fn ip_entry(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() { net.addr().to_string() } else { net.to_string() }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ApiKey)]
pub struct KeyView {
    #[schema(example = "key_01JABCDEFGHJKMNPQRSTVWXYZ0")]
    pub id: String,
    pub name: String,
    /// The key's masked form; the full key is shown only once.
    #[schema(example = "sk_live_...abc1")]
    pub masked: String,
    /// `live` or `test`.
    pub environment: String,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    /// `null` = unrestricted.
    pub scopes: Option<Vec<String>>,
    /// `null` = all tenants.
    pub tenant_ids: Option<Vec<String>>,
    /// `null` = any IP; `[]` = none.
    pub allowed_ips: Option<Vec<String>>,
    pub rate_limit_per_minute: u32,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub revoked_reason: Option<String>,
    pub last_used_at: Option<String>,
    pub last_used_ip: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub created_at: String,
    /// The key, CLI or user that created it.
    pub created_by: Option<String>,
    pub updated_at: String,
}

impl KeyView {
    #[must_use]
    pub fn new(k: &ApiKey, now: Timestamp) -> Self {
        let status = match k.status(now) {
            keygate_domain::KeyStatus::Active => "active",
            keygate_domain::KeyStatus::Revoked => "revoked",
            keygate_domain::KeyStatus::Expired => "expired",
        };
        Self {
            id: k.id.to_string(),
            name: k.name.clone(),
            masked: k.masked(),
            environment: k.environment.as_str().to_owned(),
            status: status.to_owned(),
            scopes: k.scopes.as_ref().map(|s| s.iter().map(ToString::to_string).collect()),
            tenant_ids: k.tenant_ids.as_ref().map(|t| t.iter().map(ToString::to_string).collect()),
            allowed_ips: k.allowed_ips.as_ref().map(|l| l.iter().map(ip_entry).collect()),
            rate_limit_per_minute: k.rate_limit_per_minute,
            expires_at: k.expires_at.map(ts),
            revoked_at: k.revoked_at.map(ts),
            revoked_reason: k.revoked_reason.clone(),
            last_used_at: k.last_used_at.map(ts),
            last_used_ip: k.last_used_ip.map(|ip| ip.to_string()),
            metadata: k.metadata.clone(),
            created_at: ts(k.created_at),
            created_by: k.created_by.clone(),
            updated_at: ts(k.updated_at),
        }
    }
}

/// A key object plus its plaintext, returned exactly once: by create and by roll.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub api_key: KeyView,
    /// The full key. Store it now: it cannot be shown again.
    #[schema(example = "sk_live_3kTMd9pQ7vXz1bN4cR8wY2hJ6fL0sA5eQ9xZ2a")]
    pub key: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Tenant)]
pub struct TenantView {
    #[schema(example = "ten_01JABCDEFGHJKMNPQRSTVWXYZ0")]
    pub id: String,
    pub name: String,
    pub external_id: Option<String>,
    /// `active` or `suspended`.
    pub status: String,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.clone(),
            external_id: t.external_id.clone(),
            status: t.status.as_str().to_owned(),
            metadata: t.metadata.clone(),
            created_at: ts(t.created_at),
            updated_at: ts(t.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Account)]
pub struct AccountView {
    #[schema(example = "acct_01JABCDEFGHJKMNPQRSTVWXYZ0")]
    pub id: String,
    pub name: String,
    /// `active` or `suspended`.
    pub status: String,
    /// True only for the built-in operator account.
    pub operator: bool,
    /// Account-wide IP allowlist; empty = any IP.
    pub allowed_ips: Vec<String>,
    /// Requests per minute across all the account's keys (set by the operator).
    pub rate_limit_per_minute: u32,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        Self {
            id: a.id.to_string(),
            name: a.name.clone(),
            status: a.status.as_str().to_owned(),
            operator: a.operator,
            allowed_ips: a.allowed_ips.iter().map(ip_entry).collect(),
            rate_limit_per_minute: a.rate_limit_per_minute,
            created_at: ts(a.created_at),
            updated_at: ts(a.updated_at),
        }
    }
}

/// A new account and its first key (unrestricted, shown this once).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedAccount {
    pub account: AccountView,
    pub initial_key: CreatedKey,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEvent)]
pub struct AuditEventView {
    #[schema(example = "evt_01JABCDEFGHJKMNPQRSTVWXYZ0")]
    pub id: String,
    /// `api_key.created`, `tenant.suspended`, …
    pub action: String,
    /// `api_key`, `user`, `cli` or `system`.
    pub actor_type: String,
    pub actor_id: String,
    pub target_type: String,
    pub target_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// Changed fields. Never a secret.
    #[schema(value_type = Object)]
    pub changes: Value,
    pub created_at: String,
}

impl From<&AuditEvent> for AuditEventView {
    fn from(e: &AuditEvent) -> Self {
        Self {
            id: e.id.to_string(),
            action: e.action.clone(),
            actor_type: e.actor_type.clone(),
            actor_id: e.actor_id.clone(),
            target_type: e.target_type.clone(),
            target_id: e.target_id.clone(),
            ip: e.ip.map(|ip| ip.to_string()),
            user_agent: e.user_agent.clone(),
            request_id: e.request_id.clone(),
            changes: e.changes.clone(),
            created_at: ts(e.created_at),
        }
    }
}

/// Requests made on one day (UTC) with one outcome (by one key, for one tenant, or by the
/// whole account, as the path says).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Usage)]
pub struct UsageView {
    #[schema(example = "2026-11-24")]
    pub date: String,
    /// `ok`, or the error code the request was answered with.
    #[schema(example = "ok")]
    pub outcome: String,
    #[schema(example = 12)]
    pub count: u64,
}

impl From<UsageRow> for UsageView {
    fn from(r: UsageRow) -> Self {
        Self { date: r.day, outcome: r.outcome, count: r.count }
    }
}

/// Usage, newest day first: one row per day and outcome with any requests.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = UsageList)]
pub struct UsageList {
    pub data: Vec<UsageView>,
}

/// One authenticated request.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Request)]
pub struct RequestView {
    #[schema(example = "rl_01JABCDEFGHJKMNPQRSTVWXYZ0")]
    pub id: String,
    /// The request's `X-Request-Id`.
    pub request_id: String,
    pub at: String,
    pub key_id: Option<String>,
    pub tenant_id: Option<String>,
    #[schema(example = "GET")]
    pub method: String,
    /// The route template, e.g. `/v1/api-keys/{id}`.
    #[schema(example = "/v1/api-keys/{id}")]
    pub route: String,
    #[schema(example = 200)]
    pub status: u16,
    /// `ok`, or the error code the request was answered with.
    #[schema(example = "ok")]
    pub outcome: String,
    pub client_ip: Option<String>,
    #[schema(example = 1.25)]
    pub latency_ms: f64,
    /// For a use recorded by `POST /v1/verify`: the key that asked (`key_id` is the key verified).
    pub via_key_id: Option<String>,
}

impl From<&RequestRecord> for RequestView {
    fn from(r: &RequestRecord) -> Self {
        // Exact: a latency is far below 2^52 microseconds.
        let latency_ms = r.latency_us as f64 / 1000.0;
        Self {
            id: r.id.clone(),
            request_id: r.request_id.clone(),
            at: ts(r.at),
            key_id: r.key_id.map(|k| k.to_string()),
            tenant_id: r.tenant_id.map(|t| t.to_string()),
            method: r.method.clone(),
            route: r.route.clone(),
            status: r.status,
            outcome: r.outcome.clone(),
            client_ip: r.client_ip.map(|ip| ip.to_string()),
            latency_ms,
            via_key_id: r.via_key_id.map(|k| k.to_string()),
        }
    }
}

macro_rules! list_type {
    ($name:ident, $item:ty, $schema:ident) => {
        /// One page, newest first.
        #[derive(Debug, Serialize, ToSchema)]
        #[schema(as = $schema)]
        pub struct $name {
            pub data: Vec<$item>,
            /// Pass as `cursor` for the next page; `null` on the last page. A page may be short
            /// (even empty) and still have one: follow it until it is `null`.
            pub next_cursor: Option<String>,
        }
    };
}

list_type!(KeyList, KeyView, ApiKeyList);
list_type!(TenantList, TenantView, TenantList);
list_type!(UserList, UserView, UserList);
list_type!(AccountList, AccountView, AccountList);
list_type!(AuditEventList, AuditEventView, AuditEventList);
list_type!(RequestList, RequestView, RequestList);

/// A dashboard user (SPEC §8). Its password is never shown, only whether it has one.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    #[schema(example = "usr_01JABCDEFGHJKMNPQRSTVWXYZ0")]
    pub id: String,
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// `owner`, `admin`, `developer` or `viewer`.
    pub role: String,
    /// Whether the user has a password (one invited without one cannot sign in yet).
    pub has_password: bool,
    pub created_at: String,
    pub updated_at: String,
    pub last_sign_in_at: Option<String>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.clone(),
            role: u.role.as_str().to_owned(),
            has_password: u.has_password,
            created_at: ts(u.created_at),
            updated_at: ts(u.updated_at),
            last_sign_in_at: u.last_sign_in_at.map(ts),
        }
    }
}
