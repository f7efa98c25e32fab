//! API keys: create (plaintext once), list, get, update, revoke, delete, roll, look up.
//!
//! Rules beyond the SPEC, written down here and in docs/decisions.md:
//! - On create, an absent `scopes` or `tenant_ids` inherits the creator's own (so a restricted
//!   key mints restricted keys by default); an explicit `null` asks for unrestricted / all
//!   tenants, which only an unrestricted creator may give.
//! - A tenant-scoped caller sees only keys whose tenant scope lies within its own; others do not
//!   exist for it (404).
//! - On create, an absent `allowed_ips` or `expires_at` likewise inherits the creator's own (a key
//!   with an allowlist or an expiry mints keys with the same by default), and an absent
//!   `environment` is the creator's when it is a test key.
//! - No escalation (SPEC §4): the caller's scopes, tenant scope, rate limit, expiry, IP allowlist
//!   and environment bound both the key being changed (before) and the result (after). Refusals
//!   are 403 `insufficient_scope` with `exceeds` naming the bound.
//! - Revoking twice is a no-op that answers the key; revoked and expired keys cannot be rolled.
//! - PATCH `metadata` merges like Stripe's: a key set to `null` is removed.

use chrono::{DateTime, Duration, Utc};
use keygate_domain::model::{ApiKey, KeyStatus};
use keygate_domain::{Environment, KeyId, PlaintextKey, Scope, TenantId, UserId, scope, time};
use keygate_store::KeyFilter;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{
    PageParams, Principal, Validator, about_tenants, diff, double_option, fields, ips_within, merge_metadata, paginate,
    tenants_within,
};
use crate::error::{Error, Exceeds};
use crate::keygate::Keygate;
use crate::views::{KeyView, ip_entry, ts};

/// Longest grace period for a roll: one week.
pub const MAX_GRACE_SECONDS: i64 = 604_800;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// 1–200 characters, not only white space, no control characters.
    #[schema(example = "Production CRM Integration")]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069][^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    pub name: String,
    /// `live` (default; `test` when the creator is a test key) or `test`.
    #[schema(pattern = "^(live|test)$")]
    pub environment: Option<String>,
    /// Absent: the creator's own scopes. `null`: unrestricted.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = fields::scopes_schema, example = json!(["tenants:write", "billing:read"]))]
    pub scopes: Option<Option<Vec<String>>>,
    /// Absent: the creator's own tenant scope. `null`: all tenants.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = fields::tenant_ids_schema)]
    pub tenant_ids: Option<Option<Vec<String>>>,
    /// Absent: the creator's own allowlist. `null`: any IP. `[]`: no IP at all.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = fields::allowed_ips_schema, example = json!(["203.0.113.7", "10.0.0.0/8"]))]
    pub allowed_ips: Option<Option<Vec<String>>>,
    /// Default 100 (configurable), at most 10,000 (configurable) and the creator's own.
    #[serde(default, deserialize_with = "fields::whole")]
    #[schema(minimum = 1, maximum = 10000)]
    pub rate_limit_per_minute: Option<u32>,
    /// Must be in the future. Absent: the creator's own expiry. `null`: never expires.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = DateTime, example = "2099-01-01T00:00:00Z")]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    #[schema(schema_with = fields::metadata_create)]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069][^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    pub name: Option<String>,
    /// `null`: unrestricted.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = fields::scopes_schema)]
    pub scopes: Option<Option<Vec<String>>>,
    /// `null`: all tenants.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = fields::tenant_ids_schema)]
    pub tenant_ids: Option<Option<Vec<String>>>,
    /// `null`: any IP. `[]`: no IP at all.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = fields::allowed_ips_schema)]
    pub allowed_ips: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "fields::whole")]
    #[schema(minimum = 1, maximum = 10000)]
    pub rate_limit_per_minute: Option<u32>,
    /// `null`: never expires. A new value must be in the future.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = DateTime, example = "2099-01-01T00:00:00Z")]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// Merged into the existing metadata; a key set to `null` is removed.
    #[schema(schema_with = fields::metadata_patch)]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeKeyRequest {
    /// Why (at most 500 characters); kept on the key and in the audit log.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollKeyRequest {
    /// How long the old key keeps working: 0–604800 seconds, default 0 (it expires now).
    #[serde(default, deserialize_with = "fields::whole")]
    #[schema(minimum = 0, maximum = 604_800)]
    pub grace_period_seconds: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupKeyRequest {
    /// A full key of this account.
    pub key: String,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListKeysParams {
    /// Case-insensitive part of the name.
    pub name: Option<String>,
    /// Alias of `name`.
    pub label: Option<String>,
    /// `active`, `revoked` or `expired`.
    #[param(pattern = "^(active|revoked|expired)$")]
    pub status: Option<String>,
    /// Keys scoped to this tenant.
    #[param(pattern = "^ten_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub tenant_id: Option<String>,
    /// `live` or `test`.
    #[param(pattern = "^(live|test)$")]
    pub environment: Option<String>,
    /// Keys made by this principal: a user (`usr_…`, a key made in the dashboard), a key
    /// (`key_…`) or `cli`.
    #[param(pattern = "^((usr|key)_[0-7][0-9A-HJKMNP-TV-Z]{25}|cli)$")]
    pub created_by: Option<String>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^key_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub cursor: Option<String>,
}

/// The no-escalation rule (SPEC §4): every bound of `key` lies within `p`'s own.
fn ensure_key_within(p: &Principal, key: &ApiKey) -> Result<(), Error> {
    let refuse = |exceeds| Err(Error::Escalation { exceeds, required_scope: None });
    if p.environment == Some(Environment::Test) && key.environment != Environment::Test {
        return refuse(Exceeds::Environment);
    }
    if let Err(missing) = scope::within(key.scopes.as_deref(), p.scopes.as_deref()) {
        return Err(Error::Escalation { exceeds: Exceeds::Scopes, required_scope: Some(missing) });
    }
    if !tenants_within(key.tenant_ids.as_deref(), p.tenant_ids.as_deref()) {
        return refuse(Exceeds::TenantIds);
    }
    if p.max_rate_limit.is_some_and(|max| key.rate_limit_per_minute > max) {
        return refuse(Exceeds::RateLimit);
    }
    if let Some(latest) = p.expires_at
        && key.expires_at.is_none_or(|t| t > latest)
    {
        return refuse(Exceeds::ExpiresAt);
    }
    if !ips_within(key.allowed_ips.as_deref(), p.allowed_ips.as_deref()) {
        return refuse(Exceeds::AllowedIps);
    }
    Ok(())
}

/// May `p` see `key` at all?
fn visible(p: &Principal, key: &ApiKey) -> bool {
    key.account_id == p.account.id && tenants_within(key.tenant_ids.as_deref(), p.tenant_ids.as_deref())
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Keygate {
    fn parse_scopes(&self, v: &mut Validator, operator: bool, list: &[String]) -> Vec<Scope> {
        let mut out: Vec<Scope> = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            match s.parse::<Scope>() {
                Ok(scope) if self.catalog.allows(&scope, operator) => {
                    if !out.contains(&scope) {
                        out.push(scope);
                    }
                }
                Ok(scope) if self.catalog.allows(&scope, true) => v.error(
                    format!("scopes[{i}]"),
                    format!("`{s}` belongs to the operator account only; partner keys cannot hold it"),
                ),
                Ok(_) => {
                    v.error(format!("scopes[{i}]"), format!("`{s}` is not a scope in the catalog (GET /v1/scopes)"))
                }
                Err(e) => v.error(format!("scopes[{i}]"), e.to_string()),
            }
        }
        out
    }

    async fn parse_tenants(&self, v: &mut Validator, p: &Principal, list: &[String]) -> Result<Vec<TenantId>, Error> {
        let mut ids: Vec<TenantId> = Vec::with_capacity(list.len());
        let mut positions = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            match s.parse::<TenantId>() {
                Ok(id) if !ids.contains(&id) => {
                    ids.push(id);
                    positions.push(i);
                }
                Ok(_) => {}
                Err(e) => v.error(format!("tenant_ids[{i}]"), e.to_string()),
            }
        }
        if list.len() > 1000 {
            v.error("tenant_ids", "may have at most 1000 entries");
        }
        if !ids.is_empty() {
            let found = self.store.get_tenants(p.account.id, &ids).await?;
            for (id, i) in ids.iter().zip(&positions) {
                if !found.iter().any(|t| t.id == *id) {
                    v.error(format!("tenant_ids[{i}]"), format!("no tenant {id} in this account"));
                }
            }
        }
        Ok(ids)
    }

    fn check_rate_limit(&self, v: &mut Validator, rate: u32) {
        let max = self.limits.max_key_rate_limit_per_minute;
        if rate == 0 || rate > max {
            v.error("rate_limit_per_minute", format!("must be between 1 and {max}"));
        }
    }

    /// A key of `p`'s account that `p` can see, by its id; anything else is not found.
    async fn load_key(&self, p: &Principal, id: &str) -> Result<ApiKey, Error> {
        let id: KeyId = id.parse().map_err(|_| Error::NotFound("API key"))?;
        match self.store.get_key(p.account.id, id).await? {
            Some(k) if visible(p, &k) => Ok(k),
            _ => Err(Error::NotFound("API key")),
        }
    }

    /// Creates a key; the plaintext is returned here and never again.
    ///
    /// # Errors
    /// 422 for invalid fields (all of them), 403 for escalation.
    pub async fn create_key(&self, p: &Principal, req: CreateKeyRequest) -> Result<(ApiKey, PlaintextKey), Error> {
        let now = time::now();
        let mut v = Validator::default();
        let name = v.name("name", &req.name);
        let environment = match req.environment.as_deref() {
            None => p.environment.unwrap_or(Environment::Live),
            Some(e) => Environment::parse(e).unwrap_or_else(|| {
                v.error("environment", "must be `live` or `test`");
                Environment::Live
            }),
        };
        let scopes = match &req.scopes {
            None => p.scopes.clone(),
            Some(None) => None,
            Some(Some(list)) => Some(self.parse_scopes(&mut v, p.account.operator, list)),
        };
        let tenant_ids = match &req.tenant_ids {
            None => p.tenant_ids.clone(),
            Some(None) => None,
            Some(Some(list)) => Some(self.parse_tenants(&mut v, p, list).await?),
        };
        let allowed_ips = match &req.allowed_ips {
            None => p.allowed_ips.clone(),
            Some(None) => None,
            Some(Some(list)) => Some(v.ip_list("allowed_ips", list)),
        };
        let default_rate = self.limits.default_key_rate_limit_per_minute.min(p.max_rate_limit.unwrap_or(u32::MAX));
        let rate_limit = req.rate_limit_per_minute.unwrap_or(default_rate);
        self.check_rate_limit(&mut v, rate_limit);
        let expires_at = match req.expires_at {
            None => p.expires_at,
            Some(None) => None,
            Some(Some(t)) => Some(time::truncate(t)),
        };
        if let Some(Some(t)) = req.expires_at {
            check_expiry(&mut v, t, now);
        }
        let metadata = req.metadata.unwrap_or_default();
        v.metadata("metadata", &metadata);
        v.finish()?;

        let plaintext = self.key_format.generate(environment);
        let key = ApiKey {
            id: KeyId::generate(),
            account_id: p.account.id,
            name,
            prefix: self.key_format.prefix().to_owned(),
            environment,
            hash: self.hasher.hash(&plaintext),
            last4: plaintext.last4(),
            scopes,
            tenant_ids,
            allowed_ips,
            rate_limit_per_minute: rate_limit,
            expires_at,
            revoked_at: None,
            revoked_reason: None,
            last_used_at: None,
            last_used_ip: None,
            metadata,
            created_at: now,
            created_by: Some(p.actor.id()),
            updated_at: now,
        };
        ensure_key_within(p, &key)?;
        let audit = about_tenants(
            p.audit("api_key.created", "api_key", key.id, created_changes(&key, now)),
            key.tenant_ids.clone(),
        );
        self.store.create_key(&key, &audit, u64::from(self.limits.max_keys_per_account)).await?;
        Ok((key, plaintext))
    }

    /// # Errors
    /// 422 for a bad filter, 400 for a bad cursor.
    pub async fn list_keys(&self, p: &Principal, q: ListKeysParams) -> Result<(Vec<ApiKey>, Option<String>), Error> {
        let mut v = Validator::default();
        let status = q.status.as_deref().and_then(|s| {
            KeyStatus::parse(s).or_else(|| {
                v.error("status", "must be `active`, `revoked` or `expired`");
                None
            })
        });
        let environment = q.environment.as_deref().and_then(|s| {
            Environment::parse(s).or_else(|| {
                v.error("environment", "must be `live` or `test`");
                None
            })
        });
        let tenant_id = q
            .tenant_id
            .as_deref()
            .and_then(|s| s.parse::<TenantId>().map_err(|e| v.error("tenant_id", e.to_string())).ok());
        let created_by = q.created_by.filter(|c| {
            let ok = c == "cli" || c.parse::<UserId>().is_ok() || c.parse::<KeyId>().is_ok();
            if !ok {
                v.error("created_by", "must be a user id (usr_…), a key id (key_…) or `cli`");
            }
            ok
        });
        v.finish()?;
        let page_params = PageParams { limit: q.limit, cursor: q.cursor };
        let (page, limit) = page_params.to_page(|c| c.parse::<KeyId>().is_ok())?;
        let filter =
            KeyFilter { name: q.name.or(q.label), status, tenant_id, environment, created_by, now: Some(time::now()) };
        let rows = self.store.list_keys(p.account.id, &filter, &page).await?;
        let (rows, next) = paginate(rows, limit, |k| k.id.to_string());
        Ok((rows.into_iter().filter(|k| visible(p, k)).collect(), next))
    }

    /// # Errors
    /// 404 when the key does not exist for `p`.
    pub async fn get_key(&self, p: &Principal, id: &str) -> Result<ApiKey, Error> {
        self.load_key(p, id).await
    }

    /// Changes a key's settings (never its value).
    ///
    /// # Errors
    /// 404, 422, or 403 for escalation.
    pub async fn update_key(&self, p: &Principal, id: &str, req: UpdateKeyRequest) -> Result<ApiKey, Error> {
        let old = self.load_key(p, id).await?;
        ensure_key_within(p, &old)?;
        let now = time::now();
        let mut key = old.clone();
        let mut v = Validator::default();
        if let Some(name) = &req.name {
            key.name = v.name("name", name);
        }
        if let Some(scopes) = &req.scopes {
            key.scopes = scopes.as_ref().map(|l| self.parse_scopes(&mut v, p.account.operator, l));
        }
        if let Some(tenants) = &req.tenant_ids {
            key.tenant_ids = match tenants {
                Some(l) => Some(self.parse_tenants(&mut v, p, l).await?),
                None => None,
            };
        }
        if let Some(ips) = &req.allowed_ips {
            key.allowed_ips = ips.as_ref().map(|l| v.ip_list("allowed_ips", l));
        }
        if let Some(rate) = req.rate_limit_per_minute {
            self.check_rate_limit(&mut v, rate);
            key.rate_limit_per_minute = rate;
        }
        if let Some(expires_at) = req.expires_at {
            if let Some(t) = expires_at {
                check_expiry(&mut v, t, now);
            }
            key.expires_at = expires_at.map(time::truncate);
        }
        if let Some(patch) = req.metadata {
            merge_metadata(&mut key.metadata, patch);
            v.metadata("metadata", &key.metadata);
        }
        v.finish()?;
        ensure_key_within(p, &key)?;

        let changes = key_diff(&old, &key);
        if changes.is_empty() {
            return Ok(old);
        }
        key.updated_at = now;
        let audit = about_tenants(
            p.audit("api_key.updated", "api_key", key.id, Value::Object(changes)),
            tenant_union(old.tenant_ids.as_deref(), key.tenant_ids.as_deref()),
        );
        self.store.update_key(&key, &audit).await?;
        Ok(key)
    }

    /// Revokes a key for good. Revoking a revoked key changes nothing.
    ///
    /// # Errors
    /// 404, 422 for an over-long reason, 403 for a key beyond the caller's bounds.
    pub async fn revoke_key(&self, p: &Principal, id: &str, reason: Option<String>) -> Result<ApiKey, Error> {
        let mut key = self.load_key(p, id).await?;
        ensure_key_within(p, &key)?;
        if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
            return Err(Error::field("reason", "must be at most 500 characters"));
        }
        let reason = reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
        if key.revoked_at.is_some() {
            return Ok(key);
        }
        let now = time::now();
        key.revoked_at = Some(now);
        key.revoked_reason = reason;
        key.updated_at = now;
        let audit = about_tenants(
            p.audit("api_key.revoked", "api_key", key.id, json!({"reason": key.revoked_reason})),
            key.tenant_ids.clone(),
        );
        self.store.update_key(&key, &audit).await?;
        Ok(key)
    }

    /// Deletes a key for good; the audit log keeps its record.
    ///
    /// # Errors
    /// 404, or 403 for a key beyond the caller's bounds.
    pub async fn delete_key(&self, p: &Principal, id: &str) -> Result<(), Error> {
        let key = self.load_key(p, id).await?;
        ensure_key_within(p, &key)?;
        let audit = about_tenants(
            p.audit("api_key.deleted", "api_key", key.id, json!({"name": key.name, "masked": key.masked()})),
            key.tenant_ids.clone(),
        );
        if self.store.delete_key(p.account.id, key.id, &audit).await? {
            Ok(())
        } else {
            Err(Error::NotFound("API key"))
        }
    }

    /// Issues a new key with the same settings; the old one expires after the grace period.
    ///
    /// # Errors
    /// 404, 409 for a revoked or expired key, 422 for a bad grace period, 403 beyond bounds.
    pub async fn roll_key(
        &self,
        p: &Principal,
        id: &str,
        grace_seconds: Option<i64>,
    ) -> Result<(ApiKey, PlaintextKey), Error> {
        let mut old = self.load_key(p, id).await?;
        ensure_key_within(p, &old)?;
        let grace = grace_seconds.unwrap_or(0);
        if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
            return Err(Error::field("grace_period_seconds", format!("must be between 0 and {MAX_GRACE_SECONDS}")));
        }
        let now = time::now();
        match old.status(now) {
            KeyStatus::Revoked => {
                return Err(Error::Conflict("A revoked key cannot be rolled; create a new key.".into()));
            }
            KeyStatus::Expired => {
                return Err(Error::Conflict("An expired key cannot be rolled; create a new key.".into()));
            }
            KeyStatus::Active => {}
        }
        let plaintext = self.key_format.generate(old.environment);
        let new = ApiKey {
            id: KeyId::generate(),
            prefix: self.key_format.prefix().to_owned(),
            hash: self.hasher.hash(&plaintext),
            last4: plaintext.last4(),
            last_used_at: None,
            last_used_ip: None,
            created_at: now,
            created_by: Some(p.actor.id()),
            updated_at: now,
            ..old.clone()
        };
        let old_expiry = now + Duration::seconds(grace);
        old.expires_at = Some(old.expires_at.map_or(old_expiry, |t| t.min(old_expiry)));
        old.updated_at = now;
        let audit = about_tenants(
            p.audit(
                "api_key.rolled",
                "api_key",
                old.id,
                json!({"new_key_id": new.id.to_string(), "old_key_expires_at": old.expires_at.map(ts)}),
            ),
            old.tenant_ids.clone(),
        );
        self.store.roll_key(&old, &new, &audit, u64::from(self.limits.max_keys_per_account)).await?;
        Ok((new, plaintext))
    }

    /// The key of `p`'s account with this value, by hash. Malformed and unknown are both 404.
    ///
    /// # Errors
    /// 404 when it is not a visible key of this account.
    pub async fn lookup_key(&self, p: &Principal, presented: &str) -> Result<ApiKey, Error> {
        let (plaintext, _) = self.key_format.parse(presented.trim()).map_err(|_| Error::NotFound("API key"))?;
        match self.store.find_key_by_hash(&self.hasher.hash(&plaintext)).await? {
            Some((k, _)) if visible(p, &k) => Ok(k),
            _ => Err(Error::NotFound("API key")),
        }
    }
}

/// An `expires_at` must lie in the future, and before the year 10000: RFC 3339 has four-digit
/// years, and a time beyond them cannot be written back as it was given.
fn check_expiry(v: &mut Validator, t: DateTime<Utc>, now: DateTime<Utc>) {
    use chrono::Datelike;
    if t <= now {
        v.error("expires_at", "must be in the future (to stop a key now, revoke it)");
    } else if t.year() > 9999 {
        v.error("expires_at", "must be before 10000-01-01T00:00:00Z (RFC 3339 years have four digits); omit it or send null for a key that never expires");
    }
}

/// The tenants an update touches: both sides' (`None`, account-wide, if either is).
fn tenant_union(a: Option<&[TenantId]>, b: Option<&[TenantId]>) -> Option<Vec<TenantId>> {
    let (a, b) = (a?, b?);
    let mut all = a.to_vec();
    all.extend(b.iter().filter(|t| !a.contains(t)));
    Some(all)
}

fn created_changes(k: &ApiKey, now: chrono::DateTime<Utc>) -> Value {
    let view = KeyView::new(k, now);
    json!({
        "name": view.name, "environment": view.environment, "scopes": view.scopes,
        "tenant_ids": view.tenant_ids, "allowed_ips": view.allowed_ips,
        "rate_limit_per_minute": view.rate_limit_per_minute, "expires_at": view.expires_at,
        "metadata": view.metadata,
    })
}

fn key_diff(old: &ApiKey, new: &ApiKey) -> Map<String, Value> {
    let scopes = |k: &ApiKey| to_json(&k.scopes);
    let tenants =
        |k: &ApiKey| to_json(&k.tenant_ids.as_ref().map(|t| t.iter().map(ToString::to_string).collect::<Vec<_>>()));
    let ips = |k: &ApiKey| to_json(&k.allowed_ips.as_ref().map(|l| l.iter().map(ip_entry).collect::<Vec<_>>()));
    let mut m = Map::new();
    diff(&mut m, "name", json!(old.name), json!(new.name));
    diff(&mut m, "scopes", scopes(old), scopes(new));
    diff(&mut m, "tenant_ids", tenants(old), tenants(new));
    diff(&mut m, "allowed_ips", ips(old), ips(new));
    diff(&mut m, "rate_limit_per_minute", json!(old.rate_limit_per_minute), json!(new.rate_limit_per_minute));
    diff(&mut m, "expires_at", json!(old.expires_at.map(ts)), json!(new.expires_at.map(ts)));
    diff(&mut m, "metadata", Value::Object(old.metadata.clone()), Value::Object(new.metadata.clone()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_scope_containment() {
        let a = TenantId::generate();
        let b = TenantId::generate();
        assert!(tenants_within(None, None));
        assert!(tenants_within(Some(&[a]), None));
        assert!(!tenants_within(None, Some(&[a])));
        assert!(tenants_within(Some(&[a]), Some(&[a, b])));
        assert!(!tenants_within(Some(&[a, b]), Some(&[a])));
        assert!(tenants_within(Some(&[]), Some(&[a])));
    }
}
