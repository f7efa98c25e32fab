//! [`Principal`]: who is acting on a use case, and the most it may hand out (SPEC §4).

use std::net::IpAddr;

use ipnet::IpNet;
use keygate_domain::model::{Account, Actor, AuditEvent, Role};
use keygate_domain::scope;
use keygate_domain::time::Timestamp;
use keygate_domain::{Environment, EventId, Scope, TenantId, time};
use serde_json::Value;

use keygate_domain::policy::AuthFailure;

use crate::error::{Error, Exceeds};

/// Who is acting, and the most it may hand out.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account: Account,
    pub actor: Actor,
    /// `None` = unrestricted.
    pub scopes: Option<Vec<Scope>>,
    /// `None` = all tenants.
    pub tenant_ids: Option<Vec<TenantId>>,
    /// `None` = up to the configured maximum.
    pub max_rate_limit: Option<u32>,
    /// The latest expiry it may give (its own); `None` = no bound.
    pub expires_at: Option<Timestamp>,
    /// The IPs it may allow (its own allowlist); `None` = any IP.
    pub allowed_ips: Option<Vec<IpNet>>,
    /// `Some(Test)` for a test key, which may only create or change test keys; `None` = any.
    pub environment: Option<Environment>,
    /// A signed-in user's role, which bounds the users it may manage (SPEC §8: an admin manages
    /// users below admin); `None` for a key or the command line.
    pub role: Option<Role>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl Principal {
    /// The command line: acts on `account` without bounds (it has the database already).
    #[must_use]
    pub fn cli(account: Account) -> Self {
        Self {
            account,
            actor: Actor::Cli,
            scopes: None,
            tenant_ids: None,
            max_rate_limit: None,
            expires_at: None,
            allowed_ips: None,
            environment: None,
            role: None,
            ip: None,
            user_agent: None,
            request_id: None,
        }
    }

    /// Check 9 (SPEC §3) for a principal: it holds `required`, and an operator-only scope only in
    /// the operator account. The API's extractors check a key this way before a body is read;
    /// the dashboard checks a signed-in user's role scopes with it before each action.
    ///
    /// # Errors
    /// 403 `insufficient_scope` naming the scope.
    pub fn require(&self, required: &Scope) -> Result<(), Error> {
        let operator_ok = self.account.operator || !scope::is_operator_only(required);
        if operator_ok && scope::grants(self.scopes.as_deref(), required) {
            Ok(())
        } else {
            Err(AuthFailure::InsufficientScope { required: required.to_string() }.into())
        }
    }

    /// Tenants and the account's settings are shared by live and test keys: a test key may read
    /// them but not change them, or it could loosen what guards live traffic (SPEC §4, the
    /// environment bound).
    ///
    /// # Errors
    /// 403 `insufficient_scope` with `exceeds: "environment"` for a test key.
    pub fn ensure_live(&self) -> Result<(), Error> {
        if self.environment == Some(Environment::Test) {
            return Err(Error::Escalation { exceeds: Exceeds::Environment, required_scope: None });
        }
        Ok(())
    }

    /// Whether this principal acts for the whole account: a tenant-scoped one acts for its
    /// tenants only, so what is account-wide (tenants themselves, the account's settings, users)
    /// is not its to create or change (SPEC §4).
    ///
    /// # Errors
    /// 403 `tenant_not_allowed` for a tenant-scoped principal.
    pub fn ensure_account_wide(&self) -> Result<(), Error> {
        if self.tenant_ids.is_some() {
            return Err(AuthFailure::TenantNotAllowed.into());
        }
        Ok(())
    }

    /// An audit event for something this principal did.
    #[must_use]
    pub fn audit(&self, action: &str, target_type: &str, target_id: impl ToString, changes: Value) -> AuditEvent {
        AuditEvent {
            id: EventId::generate(),
            account_id: self.account.id,
            action: action.to_owned(),
            actor_type: self.actor.kind().to_owned(),
            actor_id: self.actor.id(),
            target_type: target_type.to_owned(),
            target_id: target_id.to_string(),
            ip: self.ip,
            user_agent: self.user_agent.clone(),
            request_id: self.request_id.clone(),
            changes,
            tenant_ids: None,
            created_at: time::now(),
        }
    }
}
