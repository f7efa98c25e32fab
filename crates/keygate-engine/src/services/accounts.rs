//! Accounts: the operator's management of partners, and each account's own settings.
//!
//! Rules beyond the SPEC: an account's first key is unrestricted in scopes and tenants and has
//! the maximum key rate limit, since every key the account makes later is bounded by the key
//! that made it; the operator account cannot be suspended (it would lock everyone
//! out); a key cannot set its account an IP allowlist that excludes the address making the change
//! (it would lock itself out: 409 `conflict`; a dashboard user, whom the allowlist does not
//! guard, may); a partner cannot change its own rate limit (422: the operator sets
//! it). Audit events live in the acting account's log, so the operator's log shows the accounts
//! it created and suspended.

use keygate_domain::model::{Account, AccountStatus, ApiKey};
use keygate_domain::{AccountId, Environment, KeyId, PlaintextKey, time};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::{PageParams, Principal, Validator, diff, fields, ips_within, paginate};
use crate::error::{Error, Exceeds};
use crate::keygate::Keygate;
use crate::views::ip_entry;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// 1–200 characters, not only white space, no control characters.
    #[schema(
        example = "Acme Telecom",
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069][^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    pub name: String,
    /// Requests per minute across all the account's keys; default 1,000 (configurable).
    #[serde(default, deserialize_with = "fields::whole")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 4_294_967_295_i64)]
    pub rate_limit_per_minute: Option<u32>,
}

/// What an operator may change on any account.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccountRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069][^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    pub name: Option<String>,
    /// Account-wide IP allowlist; `[]` = any IP.
    #[serde(default, deserialize_with = "fields::not_null")]
    #[schema(schema_with = fields::account_ips_schema)]
    pub allowed_ips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "fields::whole")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 4_294_967_295_i64)]
    pub rate_limit_per_minute: Option<u32>,
}

/// What an account may change on itself (its rate limit is the operator's to set).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOwnAccountRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069][^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    pub name: Option<String>,
    /// Account-wide IP allowlist; `[]` = any IP. It may not exclude the address making the change.
    #[serde(default, deserialize_with = "fields::not_null")]
    #[schema(schema_with = fields::account_ips_schema)]
    pub allowed_ips: Option<Vec<String>>,
}

impl From<ListAccountsParams> for PageParams {
    fn from(q: ListAccountsParams) -> Self {
        Self { limit: q.limit, cursor: q.cursor }
    }
}

/// `limit` and `cursor` of the accounts list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAccountsParams {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^acct_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub cursor: Option<String>,
}

/// The result of creating an account: it, its first key, and that key's plaintext (once).
pub type NewAccount = (Account, ApiKey, PlaintextKey);

fn ip_strings(a: &Account) -> Value {
    json!(a.allowed_ips.iter().map(ip_entry).collect::<Vec<_>>())
}

impl Keygate {
    fn new_account(&self, name: String, rate_limit: u32, operator: bool) -> NewAccount {
        let now = time::now();
        let account = Account {
            id: AccountId::generate(),
            name,
            status: AccountStatus::Active,
            operator,
            allowed_ips: Vec::new(),
            rate_limit_per_minute: rate_limit,
            created_at: now,
            updated_at: now,
        };
        let plaintext = self.key_format.generate(Environment::Live);
        let key = ApiKey {
            id: KeyId::generate(),
            account_id: account.id,
            name: "Initial key".into(),
            prefix: self.key_format.prefix().to_owned(),
            environment: Environment::Live,
            hash: self.hasher.hash(&plaintext),
            last4: plaintext.last4(),
            scopes: None,
            tenant_ids: None,
            allowed_ips: None,
            // The root of the account's keys: every other key is bounded by it (no escalation),
            // so it carries the most a key may have.
            rate_limit_per_minute: self.limits.max_key_rate_limit_per_minute,
            expires_at: None,
            revoked_at: None,
            revoked_reason: None,
            last_used_at: None,
            last_used_ip: None,
            metadata: Map::new(),
            created_at: now,
            created_by: None,
            updated_at: now,
        };
        (account, key, plaintext)
    }

    /// `keygate init`: creates the operator account and its first key, unless it exists.
    ///
    /// # Errors
    /// Store failures.
    pub async fn init_operator(&self) -> Result<Option<NewAccount>, Error> {
        if self.store.operator_account().await?.is_some() {
            return Ok(None);
        }
        let (account, mut key, plaintext) =
            self.new_account("Operator".into(), self.limits.default_account_rate_limit_per_minute, true);
        key.created_by = Some("cli".into());
        let audit = Principal::cli(account.clone()).audit(
            "account.created",
            "account",
            account.id,
            json!({"name": account.name, "operator": true, "initial_key_id": key.id.to_string()}),
        );
        match self.store.create_account(&account, &key, &audit).await {
            Ok(()) => Ok(Some((account, key, plaintext))),
            // Another `init` won the race: same answer as if it had run first.
            Err(keygate_store::StoreError::Conflict("operator_exists")) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a partner account with an unrestricted first key.
    ///
    /// # Errors
    /// 403 unless `p` is the operator; 422 for invalid fields.
    pub async fn create_account(&self, p: &Principal, req: CreateAccountRequest) -> Result<NewAccount, Error> {
        require_operator(p)?;
        let mut v = Validator::default();
        let name = v.name("name", &req.name);
        let rate = req.rate_limit_per_minute.unwrap_or(self.limits.default_account_rate_limit_per_minute);
        if rate == 0 {
            v.error("rate_limit_per_minute", "must be at least 1");
        }
        v.finish()?;
        let (account, mut key, plaintext) = self.new_account(name, rate, false);
        key.created_by = Some(p.actor.id());
        let audit = p.audit(
            "account.created",
            "account",
            account.id,
            json!({"name": account.name, "rate_limit_per_minute": rate, "initial_key_id": key.id.to_string()}),
        );
        self.store.create_account(&account, &key, &audit).await?;
        Ok((account, key, plaintext))
    }

    /// # Errors
    /// 403 unless operator; 400/422 for bad paging.
    pub async fn list_accounts(
        &self,
        p: &Principal,
        page: PageParams,
    ) -> Result<(Vec<Account>, Option<String>), Error> {
        require_operator(p)?;
        let (page, limit) = page.to_page(|c| c.parse::<AccountId>().is_ok())?;
        let rows = self.store.list_accounts(&page).await?;
        Ok(paginate(rows, limit, |a| a.id.to_string()))
    }

    /// Any account, for the operator.
    ///
    /// # Errors
    /// 403 unless operator; 404.
    pub async fn get_account(&self, p: &Principal, id: &str) -> Result<Account, Error> {
        require_operator(p)?;
        let id: AccountId = id.parse().map_err(|_| Error::NotFound("account"))?;
        self.store.get_account(id).await?.ok_or(Error::NotFound("account"))
    }

    /// The operator changes any account, including its rate limit.
    ///
    /// # Errors
    /// 403 unless operator; 404; 422.
    pub async fn update_account(&self, p: &Principal, id: &str, req: UpdateAccountRequest) -> Result<Account, Error> {
        let old = self.get_account(p, id).await?;
        self.apply_account_update(p, old, req).await
    }

    /// An account changes its own name and allowlist.
    ///
    /// # Errors
    /// 403 for a narrower principal that would loosen the account's bounds; 422.
    pub async fn update_own_account(&self, p: &Principal, req: UpdateOwnAccountRequest) -> Result<Account, Error> {
        let req = UpdateAccountRequest { name: req.name, allowed_ips: req.allowed_ips, rate_limit_per_minute: None };
        // The account's settings bound every key of it: a narrower principal may not loosen them
        // for the others (SPEC §4). A tenant-scoped key acts for its tenants, not the account.
        p.ensure_account_wide()?;
        p.ensure_live()?;
        if let (Some(own), Some(ips)) = (&p.allowed_ips, &req.allowed_ips) {
            let mut v = Validator::default();
            let wanted = v.ip_list("allowed_ips", ips);
            v.finish()?;
            if wanted.is_empty() || !ips_within(Some(&wanted), Some(own)) {
                return Err(Error::Escalation { exceeds: Exceeds::AllowedIps, required_scope: None });
            }
        }
        let current = self.store.get_account(p.account.id).await?.ok_or(Error::NotFound("account"))?;
        self.apply_account_update(p, current, req).await
    }

    async fn apply_account_update(
        &self,
        p: &Principal,
        old: Account,
        req: UpdateAccountRequest,
    ) -> Result<Account, Error> {
        let mut a = old.clone();
        let mut v = Validator::default();
        if let Some(name) = &req.name {
            a.name = v.name("name", name);
        }
        if let Some(ips) = &req.allowed_ips {
            a.allowed_ips = v.ip_list("allowed_ips", ips);
        }
        if let Some(rate) = req.rate_limit_per_minute {
            if rate == 0 {
                v.error("rate_limit_per_minute", "must be at least 1");
            }
            a.rate_limit_per_minute = rate;
        }
        v.finish()?;
        // Like removing an account's last owner, a valid list that would shut out the very
        // key asking conflicts with the state it would leave (409, not a field error). A
        // dashboard user is not behind the allowlist (it guards keys), so its address is no
        // reason to refuse.
        if a.id == p.account.id
            && matches!(p.actor, keygate_domain::model::Actor::ApiKey(_))
            && let Some(ip) = p.ip
            && !a.allowed_ips.is_empty()
            && !keygate_domain::ip::contains(&a.allowed_ips, ip)
        {
            return Err(Error::Conflict(format!(
                "This allowlist would lock out {ip}, the address making this request; include it (or a network \
                 that holds it), or make the change from an address the list allows."
            )));
        }
        let mut changes = Map::new();
        diff(&mut changes, "name", json!(old.name), json!(a.name));
        diff(&mut changes, "allowed_ips", ip_strings(&old), ip_strings(&a));
        diff(&mut changes, "rate_limit_per_minute", json!(old.rate_limit_per_minute), json!(a.rate_limit_per_minute));
        if changes.is_empty() {
            return Ok(old);
        }
        a.updated_at = time::now();
        self.store.update_account(&a, &p.audit("account.updated", "account", a.id, Value::Object(changes))).await?;
        Ok(a)
    }

    /// Suspends (`true`) or reactivates (`false`) a partner account.
    ///
    /// # Errors
    /// 403 unless operator; 404; 409 for the operator account itself.
    pub async fn set_account_suspended(&self, p: &Principal, id: &str, suspended: bool) -> Result<Account, Error> {
        let mut a = self.get_account(p, id).await?;
        if a.operator && suspended {
            return Err(Error::Conflict("The operator account cannot be suspended.".into()));
        }
        let status = if suspended { AccountStatus::Suspended } else { AccountStatus::Active };
        if a.status == status {
            return Ok(a);
        }
        a.status = status;
        a.updated_at = time::now();
        let action = if suspended { "account.suspended" } else { "account.unsuspended" };
        self.store.update_account(&a, &p.audit(action, "account", a.id, json!({"status": status.as_str()}))).await?;
        Ok(a)
    }
}

fn require_operator(p: &Principal) -> Result<(), Error> {
    if p.account.operator {
        Ok(())
    } else {
        Err(keygate_domain::AuthFailure::InsufficientScope { required: "accounts:read".into() }.into())
    }
}
