//! The stored objects: accounts, tenants, API keys and audit events.
//!
//! These are the domain's view, shared by the store (which persists them) and the server (which
//! renders them). API response shapes live in the server; secrets never leave [`ApiKey::hash`].

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{AccountId, EventId, KeyId, TenantId};
use crate::key::{self, Environment, KeyHash};
use crate::scope::Scope;
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Active,
    Suspended,
}

impl AccountStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            _ => None,
        }
    }
}

/// Tenants share the account statuses.
pub type TenantStatus = AccountStatus;

/// A partner (or the operator itself).
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub status: AccountStatus,
    /// The one built-in operator account, made by `keygate init`.
    pub operator: bool,
    /// Empty = any IP.
    pub allowed_ips: Vec<IpNet>,
    pub rate_limit_per_minute: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A sub-account of an account: a partner's end customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub account_id: AccountId,
    pub name: String,
    /// The partner's own id for it; unique per account.
    pub external_id: Option<String>,
    pub status: TenantStatus,
    pub metadata: Map<String, Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `active`, `revoked` or `expired`, derived at read time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Revoked,
    Expired,
}

impl KeyStatus {
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "revoked" => Some(Self::Revoked),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

/// An API key as stored: everything but the plaintext, which is never kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: KeyId,
    pub account_id: AccountId,
    pub name: String,
    /// The prefix the key was issued with (`sk`), for its masked form.
    pub prefix: String,
    pub environment: Environment,
    pub hash: KeyHash,
    pub last4: String,
    /// `None` = unrestricted.
    pub scopes: Option<Vec<Scope>>,
    /// `None` = every tenant of the account.
    pub tenant_ids: Option<Vec<TenantId>>,
    /// `None` = any IP; empty = no IP at all.
    pub allowed_ips: Option<Vec<IpNet>>,
    pub rate_limit_per_minute: u32,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub revoked_reason: Option<String>,
    pub last_used_at: Option<Timestamp>,
    pub last_used_ip: Option<IpAddr>,
    pub metadata: Map<String, Value>,
    pub created_at: Timestamp,
    /// Who created it: a key id, `cli`, or a user id.
    pub created_by: Option<String>,
    pub updated_at: Timestamp,
}

impl ApiKey {
    #[must_use]
    pub fn status(&self, now: Timestamp) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if self.expires_at.is_some_and(|t| t <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }

    /// `sk_live_...abc1`.
    #[must_use]
    pub fn masked(&self) -> String {
        key::masked(&self.prefix, self.environment, &self.last4)
    }

    /// May this key act on `tenant`? (`None` = all tenants.)
    #[must_use]
    pub fn covers_tenant(&self, tenant: TenantId) -> bool {
        self.tenant_ids.as_ref().is_none_or(|ids| ids.contains(&tenant))
    }
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    ApiKey(KeyId),
    Cli,
    System,
}

impl Actor {
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ApiKey(_) => "api_key",
            Self::Cli => "cli",
            Self::System => "system",
        }
    }

    #[must_use]
    pub fn id(&self) -> String {
        match self {
            Self::ApiKey(id) => id.to_string(),
            Self::Cli => "cli".to_owned(),
            Self::System => "system".to_owned(),
        }
    }
}

/// One append-only audit record. Lives in the account of whoever acted, so an operator's
/// account operations appear in the operator's log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: EventId,
    pub account_id: AccountId,
    /// `api_key.created`, `tenant.suspended`, …
    pub action: String,
    pub actor_type: String,
    pub actor_id: String,
    pub target_type: String,
    pub target_id: String,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// The changed fields, `{"field": {"from": …, "to": …}}` or the created values. Never a
    /// secret.
    pub changes: Value,
    /// The tenant scope of what the event is about: a key's `tenant_ids`, a tenant's own id;
    /// `None` for account-wide events. Tenant-scoped callers see only events whose tenants lie
    /// within their own (SPEC §4).
    pub tenant_ids: Option<Vec<TenantId>>,
    pub created_at: Timestamp,
}
