//! Row structs as the database returns them, and their checked conversion into domain objects.
//!
//! Both backends decode into these same structs; the conversions live here, outside the SQL, so
//! they are written once. Anything a row holds that is not a valid domain value (an unknown
//! status, a malformed id or IP, a hash of the wrong length) is [`StoreError::Corrupt`], never a
//! panic.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use keygate_domain::model::{Account, AccountStatus, ApiKey, AuditEvent, Role, Session, Tenant, User};
use keygate_domain::time::Timestamp;
use keygate_domain::{AccountId, Environment, EventId, KeyHash, KeyId, Scope, TenantId, UserId};
use serde_json::{Map, Value};
use sqlx::types::Json;

use crate::{Change, ChangeKind, IdempotencyBegin, RequestRecord, StoreError, UsageRow};

/// `accounts`, as selected by `ACCOUNT_COLUMNS`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct AccountRow {
    pub id: String,
    pub name: String,
    pub status: String,
    pub operator: bool,
    pub allowed_ips: Json<Vec<String>>,
    pub rate_limit_per_minute: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `tenants`, as selected by `TENANT_COLUMNS`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct TenantRow {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub external_id: Option<String>,
    pub status: String,
    pub metadata: Json<Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `api_keys`, as selected by `KEY_COLUMNS`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct KeyRow {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub prefix: String,
    pub environment: String,
    pub key_hash: Vec<u8>,
    pub last4: String,
    pub scopes: Option<Json<Vec<String>>>,
    pub tenant_ids: Option<Json<Vec<String>>>,
    pub allowed_ips: Option<Json<Vec<String>>>,
    pub rate_limit_per_minute: i64,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub revoked_reason: Option<String>,
    pub last_used_at: Option<Timestamp>,
    pub last_used_ip: Option<String>,
    pub metadata: Json<Value>,
    pub created_at: Timestamp,
    pub created_by: Option<String>,
    pub updated_at: Timestamp,
}

/// A key joined with its account (`find_key_by_hash`): the account's columns carry an `acct_`
/// prefix because both tables have `id`, `name`, `status`, ….
#[derive(Debug, sqlx::FromRow)]
pub(super) struct KeyAndAccountRow {
    #[sqlx(flatten)]
    pub key: KeyRow,
    pub acct_id: String,
    pub acct_name: String,
    pub acct_status: String,
    pub acct_operator: bool,
    pub acct_allowed_ips: Json<Vec<String>>,
    pub acct_rate_limit_per_minute: i64,
    pub acct_created_at: Timestamp,
    pub acct_updated_at: Timestamp,
}

/// `audit_events`, as selected by `AUDIT_COLUMNS`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct AuditRow {
    pub id: String,
    pub account_id: String,
    pub action: String,
    pub actor_type: String,
    pub actor_id: String,
    pub target_type: String,
    pub target_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub changes: Json<Value>,
    pub tenant_ids: Option<Json<Vec<String>>>,
    pub created_at: Timestamp,
}

/// `changes`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ChangeRow {
    pub seq: i64,
    pub kind: String,
    pub entity_id: String,
    pub account_id: String,
    pub at: Timestamp,
}

/// `request_log`, as selected by `request_columns!`: the table of one row per record that
/// migration 0008 emptied into chunks, where a node of an earlier version may still write during
/// a rolling upgrade.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct RequestRow {
    pub id: String,
    pub request_id: String,
    pub at: Timestamp,
    pub account_id: String,
    pub key_id: Option<String>,
    pub tenant_id: Option<String>,
    pub route: String,
    pub method: String,
    pub status: i32,
    pub outcome: String,
    pub client_ip: Option<String>,
    pub latency_us: i64,
    pub via_key_id: Option<String>,
}

/// One group of `key_usage`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct UsageCountRow {
    pub day: String,
    pub outcome: String,
    pub count: i64,
}

pub(super) fn corrupt(column: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{column} holds {value:?}"))
}

pub(super) fn parse<T: FromStr>(column: &str, value: &str) -> Result<T, StoreError> {
    value.parse().map_err(|_| corrupt(column, value))
}

fn parse_all<T: FromStr>(column: &str, values: Vec<String>) -> Result<Vec<T>, StoreError> {
    values.iter().map(|v| parse(column, v)).collect()
}

fn status(column: &str, value: &str) -> Result<AccountStatus, StoreError> {
    AccountStatus::parse(value).ok_or_else(|| corrupt(column, value))
}

fn rate_limit(column: &str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| corrupt(column, &value.to_string()))
}

fn object(column: &str, value: Value) -> Result<Map<String, Value>, StoreError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(corrupt(column, &other.to_string())),
    }
}

/// The stored form of a rate limit.
pub(super) fn rate_limit_to_db(limit: u32) -> i64 {
    i64::from(limit)
}

impl TryFrom<AccountRow> for Account {
    type Error = StoreError;

    fn try_from(row: AccountRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: parse("accounts.id", &row.id)?,
            name: row.name,
            status: status("accounts.status", &row.status)?,
            operator: row.operator,
            allowed_ips: parse_all::<IpNet>("accounts.allowed_ips", row.allowed_ips.0)?,
            rate_limit_per_minute: rate_limit("accounts.rate_limit_per_minute", row.rate_limit_per_minute)?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;

    fn try_from(row: TenantRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: parse("tenants.id", &row.id)?,
            account_id: parse("tenants.account_id", &row.account_id)?,
            name: row.name,
            external_id: row.external_id,
            status: status("tenants.status", &row.status)?,
            metadata: object("tenants.metadata", row.metadata.0)?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl TryFrom<KeyRow> for ApiKey {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> Result<Self, StoreError> {
        let hash: [u8; 32] = row.key_hash.as_slice().try_into().map_err(|_| {
            StoreError::Corrupt(format!("api_keys.key_hash of {} has {} bytes", row.id, row.key_hash.len()))
        })?;
        Ok(Self {
            id: parse::<KeyId>("api_keys.id", &row.id)?,
            account_id: parse::<AccountId>("api_keys.account_id", &row.account_id)?,
            name: row.name,
            prefix: row.prefix,
            environment: Environment::parse(&row.environment)
                .ok_or_else(|| corrupt("api_keys.environment", &row.environment))?,
            hash: KeyHash::from_bytes(hash),
            last4: row.last4,
            scopes: row.scopes.map(|s| parse_all::<Scope>("api_keys.scopes", s.0)).transpose()?,
            tenant_ids: row.tenant_ids.map(|t| parse_all::<TenantId>("api_keys.tenant_ids", t.0)).transpose()?,
            allowed_ips: row.allowed_ips.map(|a| parse_all::<IpNet>("api_keys.allowed_ips", a.0)).transpose()?,
            rate_limit_per_minute: rate_limit("api_keys.rate_limit_per_minute", row.rate_limit_per_minute)?,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            revoked_reason: row.revoked_reason,
            last_used_at: row.last_used_at,
            last_used_ip: row.last_used_ip.map(|ip| parse::<IpAddr>("api_keys.last_used_ip", &ip)).transpose()?,
            metadata: object("api_keys.metadata", row.metadata.0)?,
            created_at: row.created_at,
            created_by: row.created_by,
            updated_at: row.updated_at,
        })
    }
}

impl TryFrom<KeyAndAccountRow> for (ApiKey, Account) {
    type Error = StoreError;

    fn try_from(row: KeyAndAccountRow) -> Result<Self, StoreError> {
        let account = AccountRow {
            id: row.acct_id,
            name: row.acct_name,
            status: row.acct_status,
            operator: row.acct_operator,
            allowed_ips: row.acct_allowed_ips,
            rate_limit_per_minute: row.acct_rate_limit_per_minute,
            created_at: row.acct_created_at,
            updated_at: row.acct_updated_at,
        };
        Ok((row.key.try_into()?, account.try_into()?))
    }
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: parse::<EventId>("audit_events.id", &row.id)?,
            account_id: parse("audit_events.account_id", &row.account_id)?,
            action: row.action,
            actor_type: row.actor_type,
            actor_id: row.actor_id,
            target_type: row.target_type,
            target_id: row.target_id,
            ip: row.ip.map(|ip| parse::<IpAddr>("audit_events.ip", &ip)).transpose()?,
            user_agent: row.user_agent,
            request_id: row.request_id,
            changes: row.changes.0,
            tenant_ids: row.tenant_ids.map(|t| parse_all::<TenantId>("audit_events.tenant_ids", t.0)).transpose()?,
            created_at: row.created_at,
        })
    }
}

impl TryFrom<ChangeRow> for Change {
    type Error = StoreError;

    fn try_from(row: ChangeRow) -> Result<Self, StoreError> {
        Ok(Self {
            seq: row.seq,
            kind: ChangeKind::parse(&row.kind).ok_or_else(|| corrupt("changes.kind", &row.kind))?,
            entity_id: row.entity_id,
            account_id: parse("changes.account_id", &row.account_id)?,
            at: row.at,
        })
    }
}

/// `idempotency_records`, as `begin_idempotent` reads an existing record.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct IdempotencyRow {
    pub fingerprint: Vec<u8>,
    pub state: String,
    pub response: Option<Vec<u8>>,
    pub expires_at: Timestamp,
}

impl IdempotencyRow {
    /// What this live record means for a request with `fingerprint`.
    pub(super) fn outcome(self, fingerprint: &[u8; 32]) -> Result<IdempotencyBegin, StoreError> {
        if self.fingerprint.as_slice() != fingerprint.as_slice() {
            return Ok(IdempotencyBegin::Mismatch);
        }
        match (self.state.as_str(), self.response) {
            ("pending", _) => Ok(IdempotencyBegin::InProgress),
            ("complete", Some(response)) => Ok(IdempotencyBegin::Completed(response)),
            ("complete", None) => Err(StoreError::Corrupt("idempotency_records.response is NULL when complete".into())),
            (state, _) => Err(corrupt("idempotency_records.state", state)),
        }
    }
}

impl TryFrom<RequestRow> for RequestRecord {
    type Error = StoreError;

    fn try_from(row: RequestRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: row.id,
            request_id: row.request_id,
            at: row.at,
            account_id: parse("request_log.account_id", &row.account_id)?,
            key_id: row.key_id.map(|k| parse("request_log.key_id", &k)).transpose()?,
            tenant_id: row.tenant_id.map(|t| parse("request_log.tenant_id", &t)).transpose()?,
            route: row.route,
            method: row.method,
            status: u16::try_from(row.status).map_err(|_| corrupt("request_log.status", &row.status.to_string()))?,
            outcome: row.outcome,
            client_ip: row.client_ip.map(|ip| parse::<IpAddr>("request_log.client_ip", &ip)).transpose()?,
            latency_us: u64::try_from(row.latency_us)
                .map_err(|_| corrupt("request_log.latency_us", &row.latency_us.to_string()))?,
            via_key_id: row.via_key_id.map(|k| parse("request_log.via_key_id", &k)).transpose()?,
        })
    }
}

impl TryFrom<UsageCountRow> for UsageRow {
    type Error = StoreError;

    fn try_from(row: UsageCountRow) -> Result<Self, StoreError> {
        let count = u64::try_from(row.count).map_err(|_| corrupt("count", &row.count.to_string()))?;
        Ok(Self { day: row.day, outcome: row.outcome, count })
    }
}

/// `users`, as selected by `user_columns!`: whether a password is set, never the hash.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct UserRow {
    pub id: String,
    pub account_id: String,
    pub email: String,
    pub role: String,
    pub has_password: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_sign_in_at: Option<Timestamp>,
}

/// A user with its password hash (`users_by_email`, for sign-in). No `Debug`: it holds the hash.
#[derive(sqlx::FromRow)]
pub(super) struct UserAndHashRow {
    #[sqlx(flatten)]
    pub user: UserRow,
    pub password_hash: Option<String>,
}

/// `sessions`, as selected by `session_columns!`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub account_id: String,
    pub token_hash: Vec<u8>,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    pub expires_at: Timestamp,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub revoked_at: Option<Timestamp>,
}

/// A session joined with its user (`session_by_token`): the user's columns carry a `usr_`
/// prefix because both tables have `id`, `account_id`, `created_at`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SessionAndUserRow {
    #[sqlx(flatten)]
    pub session: SessionRow,
    pub usr_id: String,
    pub usr_account_id: String,
    pub usr_email: String,
    pub usr_role: String,
    pub usr_has_password: bool,
    pub usr_created_at: Timestamp,
    pub usr_updated_at: Timestamp,
    pub usr_last_sign_in_at: Option<Timestamp>,
}

/// `sign_in_tokens`, as `consume_sign_in_token` deletes one.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SignInTokenRow {
    pub account_id: String,
    pub user_id: String,
    pub expires_at: Timestamp,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(row: UserRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: parse("users.id", &row.id)?,
            account_id: parse("users.account_id", &row.account_id)?,
            email: row.email,
            role: role(&row.role)?,
            has_password: row.has_password,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_sign_in_at: row.last_sign_in_at,
        })
    }
}

impl TryFrom<UserAndHashRow> for (User, Option<String>) {
    type Error = StoreError;

    fn try_from(row: UserAndHashRow) -> Result<Self, StoreError> {
        Ok((row.user.try_into()?, row.password_hash))
    }
}

impl TryFrom<SessionRow> for Session {
    type Error = StoreError;

    fn try_from(row: SessionRow) -> Result<Self, StoreError> {
        let token_hash: [u8; 32] = row.token_hash.as_slice().try_into().map_err(|_| {
            StoreError::Corrupt(format!("sessions.token_hash of {} has {} bytes", row.id, row.token_hash.len()))
        })?;
        Ok(Self {
            id: parse("sessions.id", &row.id)?,
            user_id: parse("sessions.user_id", &row.user_id)?,
            account_id: parse("sessions.account_id", &row.account_id)?,
            token_hash,
            created_at: row.created_at,
            last_seen_at: row.last_seen_at,
            expires_at: row.expires_at,
            ip: row.ip.map(|ip| parse::<IpAddr>("sessions.ip", &ip)).transpose()?,
            user_agent: row.user_agent,
            revoked_at: row.revoked_at,
        })
    }
}

impl TryFrom<SessionAndUserRow> for (Session, User) {
    type Error = StoreError;

    fn try_from(row: SessionAndUserRow) -> Result<Self, StoreError> {
        let user = UserRow {
            id: row.usr_id,
            account_id: row.usr_account_id,
            email: row.usr_email,
            role: row.usr_role,
            has_password: row.usr_has_password,
            created_at: row.usr_created_at,
            updated_at: row.usr_updated_at,
            last_sign_in_at: row.usr_last_sign_in_at,
        };
        Ok((row.session.try_into()?, user.try_into()?))
    }
}

impl TryFrom<SignInTokenRow> for (AccountId, UserId, Timestamp) {
    type Error = StoreError;

    fn try_from(row: SignInTokenRow) -> Result<Self, StoreError> {
        Ok((
            parse("sign_in_tokens.account_id", &row.account_id)?,
            parse("sign_in_tokens.user_id", &row.user_id)?,
            row.expires_at,
        ))
    }
}

/// A stored role (`users.role`).
pub(super) fn role(value: &str) -> Result<Role, StoreError> {
    parse("users.role", value)
}

/// The stored, folded form of an email (`users.email_lower`), folded here rather than by SQL,
/// whose `LOWER` folds only ASCII on SQLite, so both backends compare alike
/// ([`keygate_domain::model::email_key`]).
pub(super) fn email_lower(email: &str) -> String {
    keygate_domain::model::email_key(email)
}

/// Converts every row, failing on the first that is not valid.
pub(super) fn convert_all<R, T>(rows: Vec<R>) -> Result<Vec<T>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}
