//! The storage traits, and the records and filters they exchange.

use std::net::IpAddr;

use async_trait::async_trait;
use keygate_domain::model::{Account, ApiKey, AuditEvent, KeyStatus, Role, Session, Tenant, TenantStatus, User};
use keygate_domain::time::Timestamp;
use keygate_domain::{AccountId, Environment, KeyHash, KeyId, SessionId, TenantId, UserId};

use crate::chunk::{RequestChunk, RequestRecord};

/// What went wrong in the store. The server maps these to HTTP in one place.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; the string names the rule (e.g. `tenant_external_id`).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The database could not be reached or answered with an error.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A stored row could not be read back as a domain object.
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    /// An insert would take an account past its cap of `max` rows in `what` (`api_keys`,
    /// `tenants`); nothing was written.
    #[error("limit reached: {max} {what}")]
    LimitReached { what: &'static str, max: u64 },
    /// A text the database cannot hold (PostgreSQL refuses the NUL character in text); nothing
    /// was written or read.
    #[error("text the database cannot hold: {0}")]
    InvalidText(String),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Newest-first pagination: at most `limit` rows whose id sorts before `before` (an id of the
/// same kind, taken from the last row of the previous page).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: u32,
    pub before: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// Case-insensitive substring of the name.
    pub name: Option<String>,
    pub status: Option<KeyStatus>,
    /// Keys whose tenant list contains this tenant.
    pub tenant_id: Option<TenantId>,
    pub environment: Option<Environment>,
    /// Keys whose `created_by` is this (`usr_…`, `key_…`, `cli`).
    pub created_by: Option<String>,
    /// Needed to tell `active` from `expired`.
    pub now: Option<Timestamp>,
}

#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    pub status: Option<TenantStatus>,
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor_id: Option<String>,
    pub target_id: Option<String>,
    /// Inclusive.
    pub since: Option<Timestamp>,
    /// Exclusive.
    pub until: Option<Timestamp>,
}

/// What kind of object a change-log row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Account,
    Tenant,
    ApiKey,
}

impl ChangeKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Tenant => "tenant",
            Self::ApiKey => "api_key",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "account" => Some(Self::Account),
            "tenant" => Some(Self::Tenant),
            "api_key" => Some(Self::ApiKey),
            _ => None,
        }
    }
}

/// One row of the change log: "this object changed". Followers evict, then reload on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub kind: ChangeKind,
    pub entity_id: String,
    pub account_id: AccountId,
    pub at: Timestamp,
}

/// One observed use of a key, written in batches off the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUsage {
    pub key_id: KeyId,
    pub at: Timestamp,
    pub ip: IpAddr,
}

#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates the account and its first key together.
    async fn create_account(&self, account: &Account, initial_key: &ApiKey, audit: &AuditEvent) -> Result<()>;
    async fn get_account(&self, id: AccountId) -> Result<Option<Account>>;
    /// The built-in operator account, if `keygate init` has run.
    async fn operator_account(&self) -> Result<Option<Account>>;
    async fn list_accounts(&self, page: &Page) -> Result<Vec<Account>>;
    async fn update_account(&self, account: &Account, audit: &AuditEvent) -> Result<()>;
}

#[async_trait]
pub trait TenantStore: Send + Sync {
    /// [`StoreError::Conflict`]`("tenant_external_id")` when the account already has a tenant with
    /// that `external_id`; [`StoreError::LimitReached`] when it has `max_tenants` already (counted
    /// and inserted atomically; `u64::MAX` = no cap).
    async fn create_tenant(&self, tenant: &Tenant, audit: &AuditEvent, max_tenants: u64) -> Result<()>;
    async fn get_tenant(&self, account: AccountId, id: TenantId) -> Result<Option<Tenant>>;
    /// Tenants of `account` among `ids` (for validating a key's tenant scope).
    async fn get_tenants(&self, account: AccountId, ids: &[TenantId]) -> Result<Vec<Tenant>>;
    async fn list_tenants(&self, account: AccountId, filter: &TenantFilter, page: &Page) -> Result<Vec<Tenant>>;
    /// Same conflict rule as `create_tenant`.
    async fn update_tenant(&self, tenant: &Tenant, audit: &AuditEvent) -> Result<()>;
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// [`StoreError::LimitReached`] when the account holds `max_keys` keys already (counted and
    /// inserted atomically; `u64::MAX` = no cap).
    async fn create_key(&self, key: &ApiKey, audit: &AuditEvent, max_keys: u64) -> Result<()>;
    /// What `create_key` does for each `(key, audit)` pair, in one transaction: all the keys, or
    /// none of them. Each key gets its own audit event (the one beside it) and its own change
    /// row, stamped with that event's time, in the slice's order; the rows are written with
    /// multi-row inserts, so a batch costs about one commit rather than one per key. For bulk
    /// imports and benchmarks; the API creates keys one at a time.
    ///
    /// Every key must belong to one account: one cap check covers the whole batch.
    /// - [`StoreError::LimitReached`]`{ what: "api_keys", max: max_keys }` when the account would
    ///   hold more than `max_keys` keys afterwards (counted and inserted atomically; `u64::MAX` =
    ///   no cap);
    /// - [`StoreError::Conflict`]`("mixed_accounts")` when the keys belong to more than one
    ///   account (checked before the database is touched);
    /// - [`StoreError::Conflict`]`("id")` / `("key_hash")` when an id or hash is taken, by a stored
    ///   key or another key of the batch, as for `create_key`.
    ///
    /// On any error nothing is written. An empty slice writes nothing and is `Ok`.
    async fn create_keys(&self, keys: &[(ApiKey, AuditEvent)], max_keys: u64) -> Result<()>;
    async fn get_key(&self, account: AccountId, id: KeyId) -> Result<Option<ApiKey>>;
    /// The key with this id in whichever account holds it. For the operator's command line,
    /// which names a key by id alone; a request is always answered within its own account
    /// (`get_key`).
    async fn find_key_by_id(&self, id: KeyId) -> Result<Option<ApiKey>>;
    /// The credential lookup: the key with this hash and its account, in one query.
    async fn find_key_by_hash(&self, hash: &KeyHash) -> Result<Option<(ApiKey, Account)>>;
    async fn list_keys(&self, account: AccountId, filter: &KeyFilter, page: &Page) -> Result<Vec<ApiKey>>;
    /// Writes every mutable field of `key` (settings, revocation, expiry).
    async fn update_key(&self, key: &ApiKey, audit: &AuditEvent) -> Result<()>;
    /// Inserts `new` and updates `old` (its shortened expiry) together; the cap as for
    /// `create_key`.
    async fn roll_key(&self, old: &ApiKey, new: &ApiKey, audit: &AuditEvent, max_keys: u64) -> Result<()>;
    /// Removes the key for good; `false` when it did not exist.
    async fn delete_key(&self, account: AccountId, id: KeyId, audit: &AuditEvent) -> Result<bool>;
    /// Sets `last_used_at`/`last_used_ip` for each key (the latest use wins).
    async fn record_key_usage(&self, usage: &[KeyUsage]) -> Result<()>;
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn list_audit_events(&self, account: AccountId, filter: &AuditFilter, page: &Page)
    -> Result<Vec<AuditEvent>>;
}

#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Changes with `seq > after`, oldest first, at most `limit`.
    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>>;
    /// The highest `seq` so far (0 when empty): where a new follower starts.
    async fn latest_change(&self) -> Result<i64>;
    /// Deletes changes older than `before`; returns how many.
    async fn purge_changes(&self, before: Timestamp) -> Result<u64>;
}

/// What [`IdempotencyStore::begin_idempotent`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// No live record: one was created in state pending; the caller must execute and then
    /// `complete_idempotent` (or `release_idempotent` if it refused before executing).
    Started,
    /// A pending record with the same fingerprint: another request is executing it.
    InProgress,
    /// A record with a different fingerprint.
    Mismatch,
    /// A completed record with the same fingerprint: the stored response bytes.
    Completed(Vec<u8>),
}

/// Idempotency records (SPEC §6): one per (account, `Idempotency-Key`), claimed before a request
/// executes and holding its response afterwards. The claim is atomic across connections and
/// nodes (it rests on the table's primary key), so of any number of concurrent requests with the
/// same key exactly one is [`IdempotencyBegin::Started`].
///
/// Not audited and not in the change log. Times compare as in the rest of the store: pass whole
/// seconds in UTC (SQLite compares them as text).
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Atomically claims (account, key) for a request with `fingerprint`, unless a live record
    /// exists. A record whose `expires_at <= now` counts as absent (replace it).
    async fn begin_idempotent(
        &self,
        account: AccountId,
        key: &str,
        fingerprint: &[u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<IdempotencyBegin>;
    /// Stores the response and marks the record complete. Only a pending record changes: a
    /// completed one keeps its first response, and a record that is gone (released, purged)
    /// stays gone.
    async fn complete_idempotent(&self, account: AccountId, key: &str, response: &[u8]) -> Result<()>;
    /// Deletes a pending record (the request was refused before it executed). A completed
    /// record is left alone.
    async fn release_idempotent(&self, account: AccountId, key: &str) -> Result<()>;
    /// Deletes records with `expires_at <= before`; returns how many.
    async fn purge_idempotency(&self, before: Timestamp) -> Result<u64>;
}

#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub key_id: Option<KeyId>,
    pub status: Option<u16>,
    /// Inclusive.
    pub since: Option<Timestamp>,
    /// Exclusive.
    pub until: Option<Timestamp>,
}

/// A page of the request log as the store read it.
#[derive(Debug, Default)]
pub struct RequestPage {
    /// Newest first, at most the page's limit.
    pub records: Vec<RequestRecord>,
    /// Set when the listing stopped at its work budget (a bounded number of stored chunks,
    /// [`RequestLog::list_requests`]) before it filled the page: a record id below which the
    /// listing goes on. `records` then holds every wanted record above it, fewer than the limit
    /// (possibly none).
    pub resume: Option<String>,
}

/// How many requests were made on one day (UTC) with one outcome: a row of a usage answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// `YYYY-MM-DD`, in UTC.
    pub day: String,
    pub outcome: String,
    pub count: u64,
}

/// Requests to add to the usage counters: `count` more requests of `key_id` (acting for
/// `tenant_id`, if any) on `day` (UTC) answered with `outcome` (an error code, or `ok`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCount {
    pub account_id: AccountId,
    pub key_id: KeyId,
    pub tenant_id: Option<TenantId>,
    pub day: chrono::NaiveDate,
    pub outcome: &'static str,
    pub count: u64,
}

/// Which of an account's usage counters an answer sums: all of them (the account), one key's,
/// or one tenant's (both: that key's for that tenant).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub key_id: Option<KeyId>,
    pub tenant_id: Option<TenantId>,
}

/// The request log and the usage counters (SPEC §8). The log holds one row per authenticated
/// request (as the operator's `request_log` setting keeps them), appended in batches off the hot
/// path, listed per account, purged by age. The counters hold every request's count per key,
/// tenant, UTC day and outcome, added in batches, kept for good. Neither is audited nor in the
/// change log.
#[async_trait]
pub trait RequestLog: Send + Sync {
    /// Inserts the chunks of records, all or none.
    async fn record_requests(&self, chunks: &[RequestChunk]) -> Result<()>;
    /// Adds the counts to the usage counters, all or none.
    async fn add_usage(&self, counts: &[UsageCount]) -> Result<()>;
    /// The account's requests matching `filter` on the UTC days `first..=last`, summed per day
    /// and outcome: newest day first, outcomes alphabetically.
    async fn usage(
        &self,
        account: AccountId,
        filter: UsageFilter,
        first: chrono::NaiveDate,
        last: chrono::NaiveDate,
    ) -> Result<Vec<UsageRow>>;
    /// The account's requests, newest first, paged by record id. A listing reads at most a
    /// bounded number of stored chunks (the SQL stores: 128, up to 128,000 records), so a filter
    /// that matches little costs one request no more than that: past it the page comes back
    /// short with [`RequestPage::resume`].
    async fn list_requests(&self, account: AccountId, filter: &RequestFilter, page: &Page) -> Result<RequestPage>;
    /// Deletes records made before `before` (by record id: ids are ordered by time), a written
    /// chunk at a time once its newest record is that old (so a record may outlive `before` by
    /// the chunk's span, at most 2^20 ms); returns how many records went.
    async fn purge_requests(&self, before: Timestamp) -> Result<u64>;
}

/// Dashboard users, their sign-in sessions and one-time sign-in tokens (SPEC §8).
///
/// Writes to users are audited like every other write, but not in the change log: nothing
/// caches them. Making a sign-in token is audited (`user.sign_in_link_created`: whoever makes one
/// can sign in as the user); sessions are not audited, and neither is in the change log (signing
/// in is not a change to the account). Emails compare case-insensitively: the store keeps a
/// lower-cased copy beside the email as typed. Times compare as in the rest of the store: pass
/// whole seconds in UTC (SQLite compares them as text).
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Inserts `user` with its argon2id PHC `password_hash` (None: no password yet) and its audit
    /// event, in one transaction. [`StoreError::Conflict`]`("user_email")` when the account
    /// already has a user with that email, compared case-insensitively. `user.has_password` is
    /// not stored: it is read back from whether `password_hash` is set.
    /// [`StoreError::LimitReached`] when the account has `max_users` already (counted and inserted
    /// atomically; `u64::MAX` = no cap).
    async fn create_user(
        &self,
        user: &User,
        password_hash: Option<&str>,
        audit: &AuditEvent,
        max_users: u64,
    ) -> Result<()>;
    async fn get_user(&self, account: AccountId, id: UserId) -> Result<Option<User>>;
    /// Every user with this email (case-insensitive) in any account, with its password hash,
    /// oldest first (sign-in).
    async fn users_by_email(&self, email: &str) -> Result<Vec<(User, Option<String>)>>;
    /// Users of `account`, newest first, paged like `list_tenants` (cursor = a user id, as
    /// [`Page`] does for other objects).
    async fn list_users(&self, account: AccountId, page: &Page) -> Result<Vec<User>>;
    /// Writes email and role (and `updated_at`) with the audit event, if the user still has
    /// `expected_role` (the role the caller checked it may touch).
    ///
    /// In one write transaction, with the account locked first (on PostgreSQL the account row,
    /// as the per-account caps do), the user's current role is read:
    /// - no such user in `user.account_id`: writes nothing, `Ok(false)`;
    /// - its role is not `expected_role` (changed by a concurrent write):
    ///   [`StoreError::Conflict`]`("user_changed")`, nothing written;
    /// - otherwise the write happens and `Ok(true)`, with
    ///   [`StoreError::Conflict`]`("user_email")` as for `create_user` and
    ///   [`StoreError::Conflict`]`("last_owner")` when the change would leave the account
    ///   without an owner (checked under the same lock, so two concurrent demotions cannot both
    ///   pass).
    ///
    /// A change of role also revokes the user's sessions and deletes its unused sign-in tokens
    /// (as `set_password` does): nobody takes the new role along in a session or a link opened
    /// before it.
    async fn update_user(&self, user: &User, expected_role: Role, audit: &AuditEvent) -> Result<bool>;
    /// Sets (`Some`) or clears (`None`) the password hash, revokes every session of the user and
    /// deletes its unused sign-in tokens, with the audit event; `updated_at` and the sessions' `revoked_at` become the audit event's
    /// time.
    ///
    /// In one write transaction, with the account locked first, the user's current role is
    /// read: no such user in `account`: writes nothing, `Ok(false)`; its role is not
    /// `expected_role`: [`StoreError::Conflict`]`("user_changed")`, nothing written; otherwise
    /// the write happens and `Ok(true)`.
    async fn set_password(
        &self,
        account: AccountId,
        id: UserId,
        expected_role: Role,
        password_hash: Option<&str>,
        audit: &AuditEvent,
    ) -> Result<bool>;
    /// Deletes the user, its sessions and sign-in tokens, with the audit event.
    ///
    /// In one write transaction, with the account locked first, the user's current role is
    /// read: no such user in `account`: deletes nothing, `Ok(false)`; its role is not
    /// `expected_role`: [`StoreError::Conflict`]`("user_changed")`, nothing deleted; otherwise
    /// [`StoreError::Conflict`]`("last_owner")` as for `update_user`, or the delete happens and
    /// `Ok(true)`.
    async fn delete_user(
        &self,
        account: AccountId,
        id: UserId,
        expected_role: Role,
        audit: &AuditEvent,
    ) -> Result<bool>;
    /// Records a successful sign-in time (not audited; `updated_at` stays).
    async fn note_sign_in(&self, account: AccountId, id: UserId, at: Timestamp) -> Result<()>;

    async fn create_session(&self, session: &Session) -> Result<()>;
    /// The session with this token hash and its user, if it exists (revoked or expired ones too:
    /// the caller decides).
    async fn session_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<(Session, User)>>;
    /// Moves `last_seen_at` forward (idle timeout), never back; no-op for a missing session.
    async fn touch_session(&self, id: SessionId, at: Timestamp) -> Result<()>;
    /// Sessions of one user that are not revoked and not past `expires_at` as of `now`, newest
    /// first.
    async fn list_sessions(&self, account: AccountId, user: UserId, now: Timestamp) -> Result<Vec<Session>>;
    /// Revokes one session of that user (sets `revoked_at`; a session revoked already keeps its
    /// first `revoked_at` and counts as found). `Ok(false)` when it is not that user's or is gone.
    async fn revoke_session(&self, account: AccountId, user: UserId, id: SessionId, at: Timestamp) -> Result<bool>;
    /// Deletes sessions revoked or expired before `before`; returns how many. Also deletes the
    /// sign-in tokens that expired before `before` (not counted): nothing else removes a token
    /// that was never used.
    async fn purge_sessions(&self, before: Timestamp) -> Result<u64>;

    /// Stores a one-time sign-in token (its SHA-256) for a user, valid until `expires_at`, with
    /// its audit event; the user's other unused tokens are deleted (one live link per user).
    async fn create_sign_in_token(
        &self,
        token_hash: &[u8; 32],
        account: AccountId,
        user: UserId,
        expires_at: Timestamp,
        audit: &AuditEvent,
    ) -> Result<()>;
    /// Uses up the token atomically: `Some(user)` once if it exists and is unexpired at `now`
    /// (`expires_at > now`), `None` otherwise (also on every later call: an expired token is
    /// deleted too). Of concurrent calls with the same token, at most one gets `Some`.
    async fn consume_sign_in_token(&self, token_hash: &[u8; 32], now: Timestamp)
    -> Result<Option<(AccountId, UserId)>>;
}

/// Facts about the deployment itself, kept in the database so every process that opens it
/// sees the same ones. Not audited and not in the change log.
///
/// The database records an HMAC fingerprint of the hash secret (never the secret itself): a
/// process started with another secret would hash every presented key differently and find none
/// of them, so it refuses to start instead (SPEC §2).
#[async_trait]
pub trait MetaStore: Send + Sync {
    /// The hash secret's fingerprint as the database records it; `None` before any process has
    /// claimed one. Never the secret (SPEC §2).
    async fn hash_secret_fingerprint(&self) -> Result<Option<String>>;
    /// Records `fingerprint` (an HMAC fingerprint of the hash secret, never the secret) as the
    /// database's hash-secret fingerprint unless one is recorded already, atomically across
    /// connections and nodes; returns the value recorded before this call: `None` when this call
    /// recorded it, otherwise the earlier value, unchanged (SPEC §2: a process whose fingerprint
    /// differs must refuse to start).
    async fn claim_hash_secret_fingerprint(&self, fingerprint: &str) -> Result<Option<String>>;
}

/// Everything keygate stores.
#[async_trait]
pub trait Store:
    AccountStore
    + TenantStore
    + KeyStore
    + AuditLog
    + ChangeFeed
    + IdempotencyStore
    + RequestLog
    + MetaStore
    + UserStore
    + 'static
{
    /// `"sqlite"` or `"postgres"` (a metrics label).
    fn backend(&self) -> &'static str;
    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<()>;
    /// Applies pending migrations (also done by [`connect`]).
    async fn migrate(&self) -> Result<()>;
    /// Closes the pool; later calls fail with [`StoreError::Unavailable`].
    async fn close(&self);
}
