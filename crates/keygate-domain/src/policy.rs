//! The authorization policy: SPEC §3 checks 4–10 as pure functions.
//!
//! Checks 1–3 (present, well-formed, known) happen before a key record exists; 11–12 (rate
//! limits, credits) need shared state. What is here takes a loaded key and account, the facts of
//! the request, and answers the first failing check. The order is the contract: a request failing
//! several checks gets the first one's code.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::ids::{AccountId, TenantId};
use crate::ip;
use crate::model::{Account, AccountStatus, ApiKey, Tenant, TenantStatus};
use crate::scope::{self, Scope};
use crate::time::Timestamp;

/// What checks 4–10 read of a key: the stored [`ApiKey`] answers it, and so does the credential
/// cache's compact copy of one (a node may hold millions).
pub trait KeyBounds {
    fn account_id(&self) -> AccountId;
    fn is_revoked(&self) -> bool;
    fn expires_at(&self) -> Option<Timestamp>;
    /// `None` = any IP; empty = no IP at all.
    fn allowed_ips(&self) -> Option<&[IpNet]>;
    /// `None` = unrestricted.
    fn scopes(&self) -> Option<&[Scope]>;
    /// `None` = every tenant of the account.
    fn tenant_ids(&self) -> Option<&[TenantId]>;

    /// May this key act on `tenant`?
    fn covers_tenant(&self, tenant: TenantId) -> bool {
        self.tenant_ids().is_none_or(|ids| ids.contains(&tenant))
    }
}

impl KeyBounds for ApiKey {
    fn account_id(&self) -> AccountId {
        self.account_id
    }

    fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    fn expires_at(&self) -> Option<Timestamp> {
        self.expires_at
    }

    fn allowed_ips(&self) -> Option<&[IpNet]> {
        self.allowed_ips.as_deref()
    }

    fn scopes(&self) -> Option<&[Scope]> {
        self.scopes.as_deref()
    }

    fn tenant_ids(&self) -> Option<&[TenantId]> {
        self.tenant_ids.as_deref()
    }
}

/// Why a request was refused. Each variant is one stable error `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("No API key was presented. Send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`.")]
    MissingKey,
    #[error("Two different API keys were presented; send one key, in one place.")]
    AmbiguousCredentials,
    #[error("The API key is not valid.")]
    InvalidKey,
    #[error("The API key has been revoked.")]
    Revoked,
    #[error("The API key has expired.")]
    Expired,
    #[error("The account is suspended.")]
    AccountSuspended,
    #[error("Requests from this IP address are not allowed for this key.")]
    IpNotAllowed,
    #[error("This key lacks {required}.")]
    InsufficientScope { required: String },
    #[error("This key may not act on this tenant.")]
    TenantNotAllowed,
    #[error("The tenant is suspended.")]
    TenantSuspended,
}

impl AuthFailure {
    /// The stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingKey => "missing_api_key",
            Self::AmbiguousCredentials => "ambiguous_credentials",
            Self::InvalidKey => "invalid_api_key",
            Self::Revoked => "api_key_revoked",
            Self::Expired => "api_key_expired",
            Self::AccountSuspended => "account_suspended",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::TenantNotAllowed => "tenant_not_allowed",
            Self::TenantSuspended => "tenant_suspended",
        }
    }
}

/// What the policy needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts {
    pub now: Timestamp,
    /// `None` when unknown (a verify call that names no IP): then any allowlist refuses.
    pub client_ip: Option<IpAddr>,
}

/// Checks 4–8: revoked, expired, account active, account allowlist, key allowlist.
///
/// # Errors
/// The first failing check.
pub fn check_key(key: &impl KeyBounds, account: &Account, facts: RequestFacts) -> Result<(), AuthFailure> {
    if key.is_revoked() {
        return Err(AuthFailure::Revoked);
    }
    if key.expires_at().is_some_and(|t| t <= facts.now) {
        return Err(AuthFailure::Expired);
    }
    if account.status != AccountStatus::Active {
        return Err(AuthFailure::AccountSuspended);
    }
    let allowed = |list: &[ipnet::IpNet]| facts.client_ip.is_some_and(|ip| ip::contains(list, ip));
    if !account.allowed_ips.is_empty() && !allowed(&account.allowed_ips) {
        return Err(AuthFailure::IpNotAllowed);
    }
    if let Some(list) = key.allowed_ips()
        && !allowed(list)
    {
        return Err(AuthFailure::IpNotAllowed);
    }
    Ok(())
}

/// Check 9: the key's scopes grant `required`. Operator-only scopes are held only by keys of the
/// operator account, whatever their scope list says.
///
/// # Errors
/// [`AuthFailure::InsufficientScope`] naming `required`.
pub fn check_scope(key: &impl KeyBounds, account: &Account, required: &Scope) -> Result<(), AuthFailure> {
    let operator_ok = account.operator || !scope::is_operator_only(required);
    if operator_ok && scope::grants(key.scopes(), required) {
        Ok(())
    } else {
        Err(AuthFailure::InsufficientScope { required: required.to_string() })
    }
}

/// Check 10: the tenant is in the key's tenant scope and active. `tenant` is `None` when the
/// request names a tenant that does not exist in the key's account: not allowed, with the same
/// answer as another account's tenant.
///
/// # Errors
/// [`AuthFailure::TenantNotAllowed`] or [`AuthFailure::TenantSuspended`].
pub fn check_tenant(key: &impl KeyBounds, tenant: Option<&Tenant>) -> Result<(), AuthFailure> {
    let tenant = tenant.filter(|t| t.account_id == key.account_id()).ok_or(AuthFailure::TenantNotAllowed)?;
    if !key.covers_tenant(tenant.id) {
        return Err(AuthFailure::TenantNotAllowed);
    }
    if tenant.status != TenantStatus::Active {
        return Err(AuthFailure::TenantSuspended);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, KeyId, TenantId};
    use crate::key::{Environment, KeyHash};
    use crate::{ip::parse_entry, time};
    use chrono::Duration;

    fn account() -> Account {
        let now = time::now();
        Account {
            id: AccountId::generate(),
            name: "Acme".into(),
            status: AccountStatus::Active,
            operator: false,
            allowed_ips: vec![],
            rate_limit_per_minute: 1000,
            created_at: now,
            updated_at: now,
        }
    }

    fn key(account: &Account) -> ApiKey {
        let now = time::now();
        ApiKey {
            id: KeyId::generate(),
            account_id: account.id,
            name: "k".into(),
            prefix: "sk".into(),
            environment: Environment::Live,
            hash: KeyHash::from_bytes([0; 32]),
            last4: "abcd".into(),
            scopes: None,
            tenant_ids: None,
            allowed_ips: None,
            rate_limit_per_minute: 100,
            expires_at: None,
            revoked_at: None,
            revoked_reason: None,
            last_used_at: None,
            last_used_ip: None,
            metadata: serde_json::Map::new(),
            created_at: now,
            created_by: None,
            updated_at: now,
        }
    }

    fn tenant(account: &Account) -> Tenant {
        let now = time::now();
        Tenant {
            id: TenantId::generate(),
            account_id: account.id,
            name: "t".into(),
            external_id: None,
            status: TenantStatus::Active,
            metadata: serde_json::Map::new(),
            created_at: now,
            updated_at: now,
        }
    }

    fn facts(ip: &str) -> RequestFacts {
        RequestFacts { now: time::now(), client_ip: Some(ip.parse().unwrap_or_else(|_| panic!("{ip}"))) }
    }

    fn code(r: Result<(), AuthFailure>) -> &'static str {
        r.err().map_or("ok", |e| e.code())
    }

    #[test]
    fn each_check_in_order() {
        let a = account();
        let ok = key(&a);
        assert_eq!(code(check_key(&ok, &a, facts("1.2.3.4"))), "ok");

        // Every failure at once: revoked wins, then expired, and so on down the table.
        let mut k = ok.clone();
        let mut acct = a.clone();
        k.revoked_at = Some(time::now());
        k.expires_at = Some(time::now() - Duration::seconds(1));
        k.allowed_ips = Some(vec![]);
        acct.status = AccountStatus::Suspended;
        acct.allowed_ips = vec![parse_entry("10.0.0.0/8").unwrap_or_else(|m| panic!("{m}"))];
        let f = facts("1.2.3.4");
        assert_eq!(code(check_key(&k, &acct, f)), "api_key_revoked");
        k.revoked_at = None;
        assert_eq!(code(check_key(&k, &acct, f)), "api_key_expired");
        k.expires_at = None;
        assert_eq!(code(check_key(&k, &acct, f)), "account_suspended");
        acct.status = AccountStatus::Active;
        assert_eq!(code(check_key(&k, &acct, f)), "ip_not_allowed");
        acct.allowed_ips.clear();
        assert_eq!(code(check_key(&k, &acct, f)), "ip_not_allowed", "[] admits no IP");
        k.allowed_ips = None;
        assert_eq!(code(check_key(&k, &acct, f)), "ok");
    }

    #[test]
    fn expiry_is_exclusive_of_now() {
        let a = account();
        let mut k = key(&a);
        let f = facts("1.2.3.4");
        k.expires_at = Some(f.now);
        assert_eq!(code(check_key(&k, &a, f)), "api_key_expired");
        k.expires_at = Some(f.now + Duration::seconds(1));
        assert_eq!(code(check_key(&k, &a, f)), "ok");
    }

    #[test]
    fn account_then_key_allowlist() {
        let mut a = account();
        a.allowed_ips = vec![parse_entry("10.0.0.0/8").unwrap_or_else(|m| panic!("{m}"))];
        let mut k = key(&a);
        k.allowed_ips = Some(vec![parse_entry("10.1.0.0/16").unwrap_or_else(|m| panic!("{m}"))]);
        assert_eq!(code(check_key(&k, &a, facts("10.1.2.3"))), "ok");
        assert_eq!(code(check_key(&k, &a, facts("10.2.0.1"))), "ip_not_allowed");
        assert_eq!(code(check_key(&k, &a, facts("11.1.2.3"))), "ip_not_allowed");
        assert_eq!(code(check_key(&k, &a, facts("::ffff:10.1.2.3"))), "ok");
        let unknown_ip = RequestFacts { client_ip: None, ..facts("10.1.2.3") };
        assert_eq!(code(check_key(&k, &a, unknown_ip)), "ip_not_allowed", "an unknown IP is in no allowlist");
        assert_eq!(code(check_key(&key(&account()), &account(), unknown_ip)), "ok", "no allowlist, no IP needed");
    }

    #[test]
    fn scope_check_names_the_required_scope_and_guards_operator_scopes() {
        let a = account();
        let mut k = key(&a);
        let calls_write: Scope = "calls:write".parse().unwrap_or_else(|_| unreachable!());
        let verify: Scope = "keys:verify".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(code(check_scope(&k, &a, &calls_write)), "ok");
        assert_eq!(code(check_scope(&k, &a, &verify)), "insufficient_scope", "partner keys never verify");
        let mut op = a.clone();
        op.operator = true;
        assert_eq!(code(check_scope(&k, &op, &verify)), "ok");
        k.scopes = Some(vec!["calls:read".parse().unwrap_or_else(|_| unreachable!())]);
        assert_eq!(
            check_scope(&k, &a, &calls_write),
            Err(AuthFailure::InsufficientScope { required: "calls:write".into() })
        );
    }

    #[test]
    fn tenant_scope_then_suspension() {
        let a = account();
        let t = tenant(&a);
        let other = tenant(&a);
        let mut k = key(&a);
        assert_eq!(code(check_tenant(&k, Some(&t))), "ok");
        assert_eq!(code(check_tenant(&k, None)), "tenant_not_allowed");
        k.tenant_ids = Some(vec![t.id]);
        assert_eq!(code(check_tenant(&k, Some(&other))), "tenant_not_allowed");
        let mut suspended = t.clone();
        suspended.status = TenantStatus::Suspended;
        assert_eq!(code(check_tenant(&k, Some(&suspended))), "tenant_suspended");
        let mut foreign = tenant(&account());
        foreign.id = t.id;
        assert_eq!(code(check_tenant(&k, Some(&foreign))), "tenant_not_allowed");
    }
}
