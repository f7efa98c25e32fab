//! The stored objects: accounts, tenants, API keys, audit events, and the dashboard's users and
//! their sessions.
//!
//! These are the domain's view, shared by the store (which persists them) and the server (which
//! renders them). API response shapes live in the server; secrets never leave [`ApiKey::hash`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{AccountId, EventId, KeyId, SessionId, TenantId, UserId};
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
}

/// A user's role in its account (SPEC §8): owner > admin > developer > viewer.
///
/// The variants are declared from least to most, so the derived order is the roles' rank
/// (`Role::Viewer < Role::Owner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Developer,
    Admin,
    Owner,
}

impl Role {
    /// Every role, least to most.
    pub const ALL: [Self; 4] = [Self::Viewer, Self::Developer, Self::Admin, Self::Owner];

    /// The stored and wire name: `viewer`, `developer`, `admin`, `owner`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Developer => "developer",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string was not a role's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected viewer, developer, admin or owner")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    /// The exact lower-case names [`Role::as_str`] writes; nothing else.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|role| role.as_str() == s).ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A person who signs in to the dashboard of one account. The password hash is not part of it:
/// the store hands it out only to sign-in (`users_by_email`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub account_id: AccountId,
    /// As the user typed it (trimmed); compared case-insensitively (unique per account).
    pub email: String,
    pub role: Role,
    /// Whether a password is set (a user invited without one signs in with a one-time link).
    pub has_password: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_sign_in_at: Option<Timestamp>,
}

/// A dashboard sign-in session. The cookie holds a random token; only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub account_id: AccountId,
    /// SHA-256 of the session token the cookie holds (the token itself is never stored).
    pub token_hash: [u8; 32],
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// The absolute end of the session, whatever its activity.
    pub expires_at: Timestamp,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub revoked_at: Option<Timestamp>,
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    ApiKey(KeyId),
    /// A dashboard user, signed in.
    User(UserId),
    Cli,
    System,
}

impl Actor {
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ApiKey(_) => "api_key",
            Self::User(_) => "user",
            Self::Cli => "cli",
            Self::System => "system",
        }
    }

    #[must_use]
    pub fn id(&self) -> String {
        match self {
            Self::ApiKey(id) => id.to_string(),
            Self::User(id) => id.to_string(),
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

/// The key under which two spellings of one email address are the same user (SPEC §8: emails
/// are unique per account without case): compatibility forms unified (NFKC: a fullwidth `ａ` is
/// `a`, `é` composed or decomposed is one letter), and case folded through upper case first, so
/// letters whose lower case is not their fold meet too (`ß` and `SS`, `ſ` and `s`, final `ς`
/// and `Σ`). The store keeps it beside the email; the sign-in throttle counts by it.
#[must_use]
pub fn email_key(email: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let unified: String = email.nfkc().collect();
    unified.to_uppercase().to_lowercase().nfkc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_rank_from_viewer_to_owner() {
        assert!(Role::Viewer < Role::Developer);
        assert!(Role::Developer < Role::Admin);
        assert!(Role::Admin < Role::Owner);
        assert_eq!(Role::ALL.iter().max(), Some(&Role::Owner));
    }

    #[test]
    fn roles_round_trip_through_their_names_only() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(role.to_string(), role.as_str());
            assert_eq!(serde_json::to_value(role).ok(), Some(Value::String(role.as_str().to_owned())));
        }
        assert_eq!("Owner".parse::<Role>(), Err(UnknownRole("Owner".to_owned())));
        assert!(" owner".parse::<Role>().is_err());
        assert!("".parse::<Role>().is_err());
    }

    #[test]
    fn a_user_actor_is_named_by_its_id() {
        let id = UserId::generate();
        let actor = Actor::User(id);
        assert_eq!(actor.kind(), "user");
        assert_eq!(actor.id(), id.to_string());
        assert!(actor.id().starts_with("usr_"));
    }
}
