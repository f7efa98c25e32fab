//! The SQL backends: [`sqlite::SqliteStore`] and [`postgres::PgStore`].
//!
//! The queries are written once, in [`sql_store!`], and instantiated per backend in `sqlite.rs`
//! and `postgres.rs`, which pass in what differs between the dialects (how to ask "does this JSON
//! array hold this id", how a write transaction begins, the change-log lock) and own `open`.
//! Row structs and their conversion into domain objects live in `rows.rs`. Nothing outside this
//! module writes SQL.
//!
//! Every write runs in one transaction: the row change(s), the audit event and one `changes`
//! row per changed object commit together or not at all (idempotency records, sessions and
//! sign-in tokens excepted: they are neither audited nor followed; users are audited but not
//! followed, as nothing caches them). An update that matches no row (the object is gone, or
//! belongs to another account) writes nothing, audit included, and returns `Ok`: the caller has
//! already checked that the object exists, so this is a lost race.
//!
//! Hand-written SQL uses `$1`-style placeholders (which sqlx's SQLite driver accepts too);
//! dynamic queries use `QueryBuilder`, which emits each backend's own.

use crate::StoreError;

/// Maps a sqlx error to the store's: unique violations become a named [`StoreError::Conflict`],
/// text PostgreSQL cannot hold [`StoreError::InvalidText`], undecodable rows [`StoreError::Corrupt`], everything else (connection, pool, I/O, other
/// database errors) [`StoreError::Unavailable`].
fn map_err(e: sqlx::Error) -> StoreError {
    // PostgreSQL's character_not_in_repertoire / untranslatable_character: a NUL in a text
    // parameter (SQLite stores it). The client's input, not an outage.
    if let Some(db) = e.as_database_error()
        && matches!(db.code().as_deref(), Some("22021" | "22P05"))
    {
        return StoreError::InvalidText(db.message().to_owned());
    }
    if let Some(db) = e.as_database_error()
        && db.is_unique_violation()
    {
        // PostgreSQL names the constraint; SQLite only names the columns in its message
        // (`UNIQUE constraint failed: tenants.account_id, tenants.external_id`). Both mention
        // the distinguishing column, so look at both.
        let what = format!("{} {}", db.constraint().unwrap_or_default(), db.message());
        return StoreError::Conflict(if what.contains("external_id") {
            "tenant_external_id"
        } else if what.contains("operator") {
            "operator_exists"
        } else if what.contains("key_hash") {
            "key_hash"
        } else if what.contains("email_lower") {
            "user_email"
        } else if what.contains("token_hash") {
            // A session or sign-in token hash: 256 random bits collide only if reused.
            "token_hash"
        } else {
            // A primary key: the caller reused an id.
            "id"
        });
    }
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
        e => StoreError::Unavailable(e),
    }
}

/// Escapes `%`, `_` and `\` so user text matches literally inside `LIKE … ESCAPE '\'`.
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// `api_keys` columns in `rows::KeyRow`'s shape. Qualified and aliased so the same list works
/// in the join with `accounts`.
macro_rules! key_columns {
    () => {
        "api_keys.id AS id, api_keys.account_id AS account_id, api_keys.name AS name, \
         api_keys.prefix AS prefix, api_keys.environment AS environment, \
         api_keys.key_hash AS key_hash, api_keys.last4 AS last4, api_keys.scopes AS scopes, \
         api_keys.tenant_ids AS tenant_ids, api_keys.allowed_ips AS allowed_ips, \
         api_keys.rate_limit_per_minute AS rate_limit_per_minute, \
         api_keys.expires_at AS expires_at, api_keys.revoked_at AS revoked_at, \
         api_keys.revoked_reason AS revoked_reason, api_keys.last_used_at AS last_used_at, \
         api_keys.last_used_ip AS last_used_ip, api_keys.metadata AS metadata, \
         api_keys.created_at AS created_at, api_keys.created_by AS created_by, \
         api_keys.updated_at AS updated_at"
    };
}

macro_rules! account_columns {
    () => {
        "id, name, status, operator, allowed_ips, rate_limit_per_minute, created_at, updated_at"
    };
}

macro_rules! tenant_columns {
    () => {
        "id, account_id, name, external_id, status, metadata, created_at, updated_at"
    };
}

macro_rules! audit_columns {
    () => {
        "id, account_id, action, actor_type, actor_id, target_type, target_id, ip, user_agent, \
         request_id, changes, tenant_ids, created_at"
    };
}

/// `users` columns in `rows::UserRow`'s shape: whether a password is set, not the hash.
macro_rules! user_columns {
    () => {
        "users.id AS id, users.account_id AS account_id, users.email AS email, users.role AS role, \
         (users.password_hash IS NOT NULL) AS has_password, users.created_at AS created_at, \
         users.updated_at AS updated_at, users.last_sign_in_at AS last_sign_in_at"
    };
}

/// `sessions` columns in `rows::SessionRow`'s shape, qualified for the join with `users`.
macro_rules! session_columns {
    () => {
        "sessions.id AS id, sessions.user_id AS user_id, sessions.account_id AS account_id, \
         sessions.token_hash AS token_hash, sessions.created_at AS created_at, \
         sessions.last_seen_at AS last_seen_at, sessions.expires_at AS expires_at, sessions.ip AS ip, \
         sessions.user_agent AS user_agent, sessions.revoked_at AS revoked_at"
    };
}

/// `request_log` columns in `rows::RequestRow`'s shape (the table of one row per record that a
/// node of an earlier version may still write to during a rolling upgrade).
macro_rules! request_columns {
    () => {
        "id, request_id, at, account_id, key_id, tenant_id, route, method, status, outcome, client_ip, latency_us, \
         via_key_id"
    };
}

/// Chunk rows per `INSERT` of the request log (7 binds each).
const CHUNK_INSERT_ROWS: usize = 500;
/// Chunks a listing reads in its first query; each further query reads four times as many, up
/// to [`CHUNK_READ_MAX`].
const CHUNK_READ_FIRST: i64 = 8;
/// At most this many chunks (up to 1,000 records each) are held in memory at once.
const CHUNK_READ_MAX: i64 = 64;
/// A listing's work budget: after reading this many chunks without filling its page it returns
/// what it has and where to resume (a filter that matches little would otherwise decode the
/// account's whole log for one request).
const CHUNK_READ_BUDGET: usize = 128;
/// Rows per `INSERT` of usage counters (6 binds each).
const USAGE_INSERT_CHUNK: usize = 1000;

/// Implements every storage trait for `$store` (a struct with a `pool: Pool<$db>` field).
///
/// - `migrator`: the backend's embedded migrations.
/// - `tenant_contains`: SQL before and after a bound tenant id, true when `api_keys.tenant_ids`
///   (a JSON array) contains it.
/// - `begin`: the statement that starts a write transaction.
/// - `lock_account`: run inside a write transaction with the account id bound, to serialize that
///   account's capped inserts and the changes that could leave it without an owner (`None`
///   where the database already serializes writers).
/// - `lock_changes`: run inside a write transaction just before its `changes` rows are
///   inserted, so that `seq` order is commit order (`None` where the database already
///   serializes writers).
/// - `migrate_unbounded`: run on the connection that migrates, so a migration is not cut off by
///   the pool's statement timeout (`None` where there is none).
macro_rules! sql_store {
    (
        store: $store:ident,
        db: $db:ty,
        backend: $backend:literal,
        migrator: $migrator:expr,
        tenant_contains: ($tenant_before:literal, $tenant_after:literal),
        begin: $begin:literal,
        lock_account: $lock_account:expr,
        lock_changes: $lock_changes:expr,
        migrate_unbounded: $migrate_unbounded:expr $(,)?
    ) => {
        use std::collections::HashMap;

        use async_trait::async_trait;
        use keygate_domain::model::{Account, ApiKey, AuditEvent, KeyStatus, Role, Session, Tenant, User};
        use keygate_domain::time::{self, Timestamp};
        use keygate_domain::{AccountId, KeyHash, KeyId, SessionId, TenantId, UserId};
        use sqlx::types::Json;
        use sqlx::{QueryBuilder, Transaction};

        use super::rows::{
            convert_all, email_lower, rate_limit_to_db, role, AccountRow, AuditRow, ChangeRow, IdempotencyRow,
            KeyAndAccountRow, KeyRow, RequestRow, SessionAndUserRow, SessionRow, SignInTokenRow, TenantRow,
            UsageCountRow, UserAndHashRow, UserRow,
        };
        use super::{
            like_pattern, map_err, CHUNK_INSERT_ROWS, CHUNK_READ_BUDGET, CHUNK_READ_FIRST, CHUNK_READ_MAX,
            USAGE_INSERT_CHUNK,
        };
        use crate::{
            AccountStore, AuditFilter, AuditLog, Change, ChangeFeed, ChangeKind, IdempotencyBegin, IdempotencyStore,
            KeyFilter, KeyStore, KeyUsage, MetaStore, Page, RequestChunk, RequestFilter, RequestLog, RequestPage, RequestRecord, Result,
            Store, StoreError, TenantFilter, TenantStore, UsageCount, UsageFilter, UsageRow, UserStore,
        };

        type Tx = Transaction<'static, $db>;

        /// One `changes` row: what changed, and whose it is.
        struct Changed<'a> {
            kind: ChangeKind,
            entity_id: String,
            account_id: &'a AccountId,
        }

        impl<'a> Changed<'a> {
            fn account(account: &'a Account) -> Self {
                Self { kind: ChangeKind::Account, entity_id: account.id.to_string(), account_id: &account.id }
            }

            fn tenant(tenant: &'a Tenant) -> Self {
                Self { kind: ChangeKind::Tenant, entity_id: tenant.id.to_string(), account_id: &tenant.account_id }
            }

            fn key(key: &'a ApiKey) -> Self {
                Self::key_id(&key.account_id, key.id)
            }

            fn key_id(account_id: &'a AccountId, id: KeyId) -> Self {
                Self { kind: ChangeKind::ApiKey, entity_id: id.to_string(), account_id }
            }
        }

        impl $store {
            async fn begin_write(&self) -> Result<Tx> {
                self.pool.begin_with($begin).await.map_err(map_err)
            }

            /// The newest page of `request_log` rows matching `filter`: what a node of an earlier
            /// version wrote one by one during a rolling upgrade (migration 0008 moved the rest into
            /// chunks). The filter is applied here, so the page's `LIMIT` counts only wanted rows.
            async fn legacy_requests(
                &self,
                account: AccountId,
                filter: &RequestFilter,
                page: &Page,
            ) -> Result<Vec<RequestRecord>> {
                let mut query = QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    request_columns!(),
                    " FROM request_log WHERE account_id = "
                ));
                query.push_bind(account.to_string());
                if let Some(key_id) = filter.key_id {
                    query.push(" AND key_id = ").push_bind(key_id.to_string());
                }
                if let Some(status) = filter.status {
                    query.push(" AND status = ").push_bind(i32::from(status));
                }
                if let Some(since) = filter.since {
                    query.push(" AND at >= ").push_bind(since);
                }
                if let Some(until) = filter.until {
                    query.push(" AND at < ").push_bind(until);
                }
                push_page(&mut query, page);
                let rows: Vec<RequestRow> = query.build_query_as().fetch_all(&self.pool).await.map_err(map_err)?;
                convert_all(rows)
            }
        }

        /// Revokes every live session of `user` at `at` and deletes its unused sign-in links.
        async fn end_sign_ins(tx: &mut Tx, user: UserId, at: Timestamp) -> Result<()> {
            sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
                .bind(at)
                .bind(user.to_string())
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
            sqlx::query("DELETE FROM sign_in_tokens WHERE user_id = $1")
                .bind(user.to_string())
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
            Ok(())
        }

        /// Appends the audit event and the change-log rows, then commits. The change rows are
        /// stamped with the audit event's time: the moment the change was made. With no change
        /// rows (users: nothing caches them), the change-log lock is not taken either.
        async fn finish(mut tx: Tx, audit: &AuditEvent, changed: &[Changed<'_>]) -> Result<()> {
            insert_audit_events(&mut tx, &[audit]).await?;
            let stamped: Vec<_> = changed.iter().map(|change| (change, audit.created_at)).collect();
            insert_changes(&mut tx, &stamped).await?;
            tx.commit().await.map_err(map_err)
        }

        /// Rows per `INSERT` of the helpers below, which `create_keys` hands whole batches: a key
        /// row has 20 binds, an audit event 13, a change row 4, so 500 rows stay far below either
        /// backend's limit on bound parameters (SQLite 32766, PostgreSQL 65535).
        const BATCH_INSERT_CHUNK: usize = 500;

        /// Inserts the audit events, [`BATCH_INSERT_CHUNK`] rows per statement.
        async fn insert_audit_events(tx: &mut Tx, events: &[&AuditEvent]) -> Result<()> {
            for chunk in events.chunks(BATCH_INSERT_CHUNK) {
                let mut query = QueryBuilder::<$db>::new(concat!("INSERT INTO audit_events (", audit_columns!(), ") "));
                query.push_values(chunk, |mut row, audit| {
                    row.push_bind(audit.id.to_string())
                        .push_bind(audit.account_id.to_string())
                        .push_bind(audit.action.as_str())
                        .push_bind(audit.actor_type.as_str())
                        .push_bind(audit.actor_id.as_str())
                        .push_bind(audit.target_type.as_str())
                        .push_bind(audit.target_id.as_str())
                        .push_bind(audit.ip.map(|ip| ip.to_string()))
                        .push_bind(audit.user_agent.as_deref())
                        .push_bind(audit.request_id.as_deref())
                        .push_bind(Json(&audit.changes))
                        .push_bind(audit.tenant_ids.as_ref().map(Json))
                        .push_bind(audit.created_at);
                });
                query.build().execute(&mut **tx).await.map_err(map_err)?;
            }
            Ok(())
        }

        /// Inserts one `changes` row per `(change, at)`, in order, [`BATCH_INSERT_CHUNK`] rows per
        /// statement, after taking the change-log lock (not taken for none).
        async fn insert_changes(tx: &mut Tx, changes: &[(&Changed<'_>, Timestamp)]) -> Result<()> {
            if changes.is_empty() {
                return Ok(());
            }
            let lock: Option<&'static str> = $lock_changes;
            if let Some(lock) = lock {
                sqlx::query(lock).execute(&mut **tx).await.map_err(map_err)?;
            }
            for chunk in changes.chunks(BATCH_INSERT_CHUNK) {
                let mut query = QueryBuilder::<$db>::new("INSERT INTO changes (kind, entity_id, account_id, at) ");
                query.push_values(chunk, |mut row, (change, at)| {
                    row.push_bind(change.kind.as_str())
                        .push_bind(change.entity_id.as_str())
                        .push_bind(change.account_id.to_string())
                        .push_bind(*at);
                });
                query.build().execute(&mut **tx).await.map_err(map_err)?;
            }
            Ok(())
        }

        async fn insert_key(tx: &mut Tx, key: &ApiKey) -> Result<()> {
            insert_keys(tx, &[key]).await
        }

        /// Inserts the keys, [`BATCH_INSERT_CHUNK`] rows per statement.
        async fn insert_keys(tx: &mut Tx, keys: &[&ApiKey]) -> Result<()> {
            for chunk in keys.chunks(BATCH_INSERT_CHUNK) {
                let mut query = QueryBuilder::<$db>::new(
                    "INSERT INTO api_keys (id, account_id, name, prefix, environment, key_hash, last4, scopes, \
                     tenant_ids, allowed_ips, rate_limit_per_minute, expires_at, revoked_at, revoked_reason, \
                     last_used_at, last_used_ip, metadata, created_at, created_by, updated_at) ",
                );
                query.push_values(chunk, |mut row, key| {
                    row.push_bind(key.id.to_string())
                        .push_bind(key.account_id.to_string())
                        .push_bind(key.name.as_str())
                        .push_bind(key.prefix.as_str())
                        .push_bind(key.environment.as_str())
                        .push_bind(key.hash.as_bytes().as_slice())
                        .push_bind(key.last4.as_str())
                        .push_bind(key.scopes.as_ref().map(Json))
                        .push_bind(key.tenant_ids.as_ref().map(Json))
                        .push_bind(key.allowed_ips.as_ref().map(Json))
                        .push_bind(rate_limit_to_db(key.rate_limit_per_minute))
                        .push_bind(key.expires_at)
                        .push_bind(key.revoked_at)
                        .push_bind(key.revoked_reason.as_deref())
                        .push_bind(key.last_used_at)
                        .push_bind(key.last_used_ip.map(|ip| ip.to_string()))
                        .push_bind(Json(&key.metadata))
                        .push_bind(key.created_at)
                        .push_bind(key.created_by.as_deref())
                        .push_bind(key.updated_at);
                });
                query.build().execute(&mut **tx).await.map_err(map_err)?;
            }
            Ok(())
        }

        /// Writes the mutable fields of `key`; `false` when it does not exist. Leaves
        /// `last_used_*` alone: those belong to `record_key_usage`, and a stale copy of the key
        /// must not roll them back.
        async fn update_key_row(tx: &mut Tx, key: &ApiKey) -> Result<bool> {
            let done = sqlx::query(
                "UPDATE api_keys SET name = $1, scopes = $2, tenant_ids = $3, allowed_ips = $4, \
                 rate_limit_per_minute = $5, expires_at = $6, revoked_at = $7, revoked_reason = $8, \
                 metadata = $9, updated_at = $10 WHERE id = $11 AND account_id = $12",
            )
            .bind(key.name.as_str())
            .bind(key.scopes.as_ref().map(Json))
            .bind(key.tenant_ids.as_ref().map(Json))
            .bind(key.allowed_ips.as_ref().map(Json))
            .bind(rate_limit_to_db(key.rate_limit_per_minute))
            .bind(key.expires_at)
            .bind(key.revoked_at)
            .bind(key.revoked_reason.as_deref())
            .bind(Json(&key.metadata))
            .bind(key.updated_at)
            .bind(key.id.to_string())
            .bind(key.account_id.to_string())
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            Ok(done.rows_affected() > 0)
        }

        /// `AND id < $before ORDER BY id DESC LIMIT $limit`.
        fn push_page(query: &mut QueryBuilder<$db>, page: &Page) {
            if let Some(before) = &page.before {
                query.push(" AND id < ").push_bind(before.clone());
            }
            query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(page.limit));
        }

        /// Locks `account`'s row until the transaction ends, where the database does not already
        /// serialize writers: counts that guard a write (caps, the last owner) then see every
        /// other such write of the account committed or not begun.
        async fn lock_account(tx: &mut Tx, account: AccountId) -> Result<()> {
            let lock: Option<&'static str> = $lock_account;
            if let Some(lock) = lock {
                sqlx::query(lock).bind(account.to_string()).execute(&mut **tx).await.map_err(map_err)?;
            }
            Ok(())
        }

        /// Refuses an insert into `table` that would take `account` past `max` rows: the count
        /// and the insert run in one transaction with the account locked, so concurrent creates
        /// cannot pass the cap together.
        async fn ensure_room(tx: &mut Tx, table: &'static str, account: AccountId, max: u64) -> Result<()> {
            ensure_room_for(tx, table, account, max, 1).await
        }

        /// [`ensure_room`] for inserting `adding` rows at once: all of them fit, or the insert
        /// is refused.
        async fn ensure_room_for(
            tx: &mut Tx,
            table: &'static str,
            account: AccountId,
            max: u64,
            adding: u64,
        ) -> Result<()> {
            // `table` is one of three literals, never input.
            if max == u64::MAX {
                return Ok(());
            }
            lock_account(tx, account).await?;
            let sql = match table {
                "tenants" => "SELECT COUNT(*) FROM tenants WHERE account_id = $1",
                "users" => "SELECT COUNT(*) FROM users WHERE account_id = $1",
                _ => "SELECT COUNT(*) FROM api_keys WHERE account_id = $1",
            };
            let n: i64 = sqlx::query_scalar(sql).bind(account.to_string()).fetch_one(&mut **tx).await.map_err(map_err)?;
            let held = u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("COUNT(*) returned {n}")))?;
            if held.saturating_add(adding) > max {
                return Err(StoreError::LimitReached { what: table, max });
            }
            Ok(())
        }

        #[async_trait]
        impl AccountStore for $store {
            async fn create_account(&self, account: &Account, initial_key: &ApiKey, audit: &AuditEvent) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(concat!(
                    "INSERT INTO accounts (",
                    account_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ))
                .bind(account.id.to_string())
                .bind(account.name.as_str())
                .bind(account.status.as_str())
                .bind(account.operator)
                .bind(Json(&account.allowed_ips))
                .bind(rate_limit_to_db(account.rate_limit_per_minute))
                .bind(account.created_at)
                .bind(account.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                insert_key(&mut tx, initial_key).await?;
                finish(tx, audit, &[Changed::account(account), Changed::key(initial_key)]).await
            }

            async fn get_account(&self, id: AccountId) -> Result<Option<Account>> {
                sqlx::query_as::<_, AccountRow>(concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = $1"))
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?
                    .map(Account::try_from)
                    .transpose()
            }

            async fn operator_account(&self) -> Result<Option<Account>> {
                sqlx::query_as::<_, AccountRow>(concat!("SELECT ", account_columns!(), " FROM accounts WHERE operator"))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?
                    .map(Account::try_from)
                    .transpose()
            }

            async fn list_accounts(&self, page: &Page) -> Result<Vec<Account>> {
                let mut query =
                    QueryBuilder::<$db>::new(concat!("SELECT ", account_columns!(), " FROM accounts WHERE TRUE"));
                push_page(&mut query, page);
                let rows: Vec<AccountRow> = query.build_query_as().fetch_all(&self.pool).await.map_err(map_err)?;
                convert_all(rows)
            }

            async fn update_account(&self, account: &Account, audit: &AuditEvent) -> Result<()> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE accounts SET name = $1, status = $2, allowed_ips = $3, rate_limit_per_minute = $4, \
                     updated_at = $5 WHERE id = $6",
                )
                .bind(account.name.as_str())
                .bind(account.status.as_str())
                .bind(Json(&account.allowed_ips))
                .bind(rate_limit_to_db(account.rate_limit_per_minute))
                .bind(account.updated_at)
                .bind(account.id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    // Nothing changed, so nothing to audit: dropping `tx` rolls back.
                    tracing::debug!(account = %account.id, "update_account: no such account");
                    return Ok(());
                }
                finish(tx, audit, &[Changed::account(account)]).await
            }
        }

        #[async_trait]
        impl TenantStore for $store {
            async fn create_tenant(&self, tenant: &Tenant, audit: &AuditEvent, max_tenants: u64) -> Result<()> {
                let mut tx = self.begin_write().await?;
                ensure_room(&mut tx, "tenants", tenant.account_id, max_tenants).await?;
                sqlx::query(concat!(
                    "INSERT INTO tenants (",
                    tenant_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ))
                .bind(tenant.id.to_string())
                .bind(tenant.account_id.to_string())
                .bind(tenant.name.as_str())
                .bind(tenant.external_id.as_deref())
                .bind(tenant.status.as_str())
                .bind(Json(&tenant.metadata))
                .bind(tenant.created_at)
                .bind(tenant.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                finish(tx, audit, &[Changed::tenant(tenant)]).await
            }

            async fn get_tenant(&self, account: AccountId, id: TenantId) -> Result<Option<Tenant>> {
                sqlx::query_as::<_, TenantRow>(concat!(
                    "SELECT ",
                    tenant_columns!(),
                    " FROM tenants WHERE id = $1 AND account_id = $2"
                ))
                .bind(id.to_string())
                .bind(account.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?
                .map(Tenant::try_from)
                .transpose()
            }

            async fn get_tenants(&self, account: AccountId, ids: &[TenantId]) -> Result<Vec<Tenant>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    tenant_columns!(),
                    " FROM tenants WHERE account_id = "
                ));
                query.push_bind(account.to_string()).push(" AND id IN (");
                let mut list = query.separated(", ");
                for id in ids {
                    list.push_bind(id.to_string());
                }
                query.push(") ORDER BY id");
                let rows: Vec<TenantRow> = query.build_query_as().fetch_all(&self.pool).await.map_err(map_err)?;
                convert_all(rows)
            }

            async fn list_tenants(
                &self,
                account: AccountId,
                filter: &TenantFilter,
                page: &Page,
            ) -> Result<Vec<Tenant>> {
                let mut query = QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    tenant_columns!(),
                    " FROM tenants WHERE account_id = "
                ));
                query.push_bind(account.to_string());
                if let Some(status) = filter.status {
                    query.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(external_id) = &filter.external_id {
                    query.push(" AND external_id = ").push_bind(external_id.clone());
                }
                push_page(&mut query, page);
                let rows: Vec<TenantRow> = query.build_query_as().fetch_all(&self.pool).await.map_err(map_err)?;
                convert_all(rows)
            }

            async fn update_tenant(&self, tenant: &Tenant, audit: &AuditEvent) -> Result<()> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE tenants SET name = $1, external_id = $2, status = $3, metadata = $4, updated_at = $5 \
                     WHERE id = $6 AND account_id = $7",
                )
                .bind(tenant.name.as_str())
                .bind(tenant.external_id.as_deref())
                .bind(tenant.status.as_str())
                .bind(Json(&tenant.metadata))
                .bind(tenant.updated_at)
                .bind(tenant.id.to_string())
                .bind(tenant.account_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    tracing::debug!(tenant = %tenant.id, "update_tenant: no such tenant in this account");
                    return Ok(());
                }
                finish(tx, audit, &[Changed::tenant(tenant)]).await
            }
        }

        #[async_trait]
        impl KeyStore for $store {
            async fn create_key(&self, key: &ApiKey, audit: &AuditEvent, max_keys: u64) -> Result<()> {
                let mut tx = self.begin_write().await?;
                ensure_room(&mut tx, "api_keys", key.account_id, max_keys).await?;
                insert_key(&mut tx, key).await?;
                finish(tx, audit, &[Changed::key(key)]).await
            }

            async fn create_keys(&self, keys: &[(ApiKey, AuditEvent)], max_keys: u64) -> Result<()> {
                let Some((first, _)) = keys.first() else {
                    return Ok(());
                };
                let account = first.account_id;
                if keys.iter().any(|(key, _)| key.account_id != account) {
                    return Err(StoreError::Conflict("mixed_accounts"));
                }
                let (new, audits): (Vec<&ApiKey>, Vec<&AuditEvent>) =
                    keys.iter().map(|(key, audit)| (key, audit)).unzip();
                let changed: Vec<Changed<'_>> = new.iter().map(|key| Changed::key(key)).collect();
                let stamped: Vec<_> =
                    changed.iter().zip(&audits).map(|(change, audit)| (change, audit.created_at)).collect();
                let adding = u64::try_from(keys.len()).unwrap_or(u64::MAX);

                let mut tx = self.begin_write().await?;
                ensure_room_for(&mut tx, "api_keys", account, max_keys, adding).await?;
                insert_keys(&mut tx, &new).await?;
                insert_audit_events(&mut tx, &audits).await?;
                insert_changes(&mut tx, &stamped).await?;
                tx.commit().await.map_err(map_err)
            }

            async fn get_key(&self, account: AccountId, id: KeyId) -> Result<Option<ApiKey>> {
                sqlx::query_as::<_, KeyRow>(concat!(
                    "SELECT ",
                    key_columns!(),
                    " FROM api_keys WHERE id = $1 AND account_id = $2"
                ))
                .bind(id.to_string())
                .bind(account.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?
                .map(ApiKey::try_from)
                .transpose()
            }

            async fn find_key_by_id(&self, id: KeyId) -> Result<Option<ApiKey>> {
                sqlx::query_as::<_, KeyRow>(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1"))
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?
                    .map(ApiKey::try_from)
                    .transpose()
            }

            async fn find_key_by_hash(&self, hash: &KeyHash) -> Result<Option<(ApiKey, Account)>> {
                sqlx::query_as::<_, KeyAndAccountRow>(concat!(
                    "SELECT ",
                    key_columns!(),
                    ", accounts.id AS acct_id, accounts.name AS acct_name, accounts.status AS acct_status, \
                     accounts.operator AS acct_operator, accounts.allowed_ips AS acct_allowed_ips, \
                     accounts.rate_limit_per_minute AS acct_rate_limit_per_minute, \
                     accounts.created_at AS acct_created_at, accounts.updated_at AS acct_updated_at \
                     FROM api_keys JOIN accounts ON accounts.id = api_keys.account_id \
                     WHERE api_keys.key_hash = $1"
                ))
                .bind(hash.as_bytes().as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?
                .map(<(ApiKey, Account)>::try_from)
                .transpose()
            }

            async fn list_keys(&self, account: AccountId, filter: &KeyFilter, page: &Page) -> Result<Vec<ApiKey>> {
                let mut query =
                    QueryBuilder::<$db>::new(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE account_id = "));
                query.push_bind(account.to_string());
                if let Some(name) = &filter.name {
                    query.push(" AND LOWER(name) LIKE LOWER(").push_bind(like_pattern(name)).push(") ESCAPE '\\'");
                }
                if let Some(status) = filter.status {
                    let now = filter.now.unwrap_or_else(time::now);
                    match status {
                        KeyStatus::Active => {
                            query
                                .push(" AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ")
                                .push_bind(now)
                                .push(")");
                        }
                        KeyStatus::Revoked => {
                            query.push(" AND revoked_at IS NOT NULL");
                        }
                        KeyStatus::Expired => {
                            query.push(" AND revoked_at IS NULL AND expires_at <= ").push_bind(now);
                        }
                    }
                }
                if let Some(tenant) = filter.tenant_id {
                    query.push(" AND ").push($tenant_before).push_bind(tenant.to_string()).push($tenant_after);
                }
                if let Some(environment) = filter.environment {
                    query.push(" AND environment = ").push_bind(environment.as_str());
                }
                if let Some(created_by) = &filter.created_by {
                    query.push(" AND created_by = ").push_bind(created_by.clone());
                }
                push_page(&mut query, page);
                let rows: Vec<KeyRow> = query.build_query_as().fetch_all(&self.pool).await.map_err(map_err)?;
                convert_all(rows)
            }

            async fn update_key(&self, key: &ApiKey, audit: &AuditEvent) -> Result<()> {
                let mut tx = self.begin_write().await?;
                if !update_key_row(&mut tx, key).await? {
                    tracing::debug!(key = %key.id, "update_key: no such key in this account");
                    return Ok(());
                }
                finish(tx, audit, &[Changed::key(key)]).await
            }

            async fn roll_key(&self, old: &ApiKey, new: &ApiKey, audit: &AuditEvent, max_keys: u64) -> Result<()> {
                let mut tx = self.begin_write().await?;
                ensure_room(&mut tx, "api_keys", new.account_id, max_keys).await?;
                insert_key(&mut tx, new).await?;
                update_key_row(&mut tx, old).await?;
                finish(tx, audit, &[Changed::key(old), Changed::key(new)]).await
            }

            async fn delete_key(&self, account: AccountId, id: KeyId, audit: &AuditEvent) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query("DELETE FROM api_keys WHERE id = $1 AND account_id = $2")
                    .bind(id.to_string())
                    .bind(account.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                finish(tx, audit, &[Changed::key_id(&account, id)]).await?;
                Ok(true)
            }

            async fn record_key_usage(&self, usage: &[KeyUsage]) -> Result<()> {
                // The latest use of each key wins, within the batch and against the database. Times
                // are whole seconds: a use in the same second as the stored one is the later one
                // (a later batch), so it wins too (`<=`); with `<` it was lost whenever a flush
                // fell between two uses of one second.
                let mut latest: HashMap<KeyId, &KeyUsage> = HashMap::with_capacity(usage.len());
                for u in usage {
                    latest.entry(u.key_id).and_modify(|l| if u.at > l.at { *l = u }).or_insert(u);
                }
                if latest.is_empty() {
                    return Ok(());
                }
                let mut tx = self.begin_write().await?;
                for u in latest.values() {
                    sqlx::query(
                        "UPDATE api_keys SET last_used_at = $1, last_used_ip = $2 \
                         WHERE id = $3 AND (last_used_at IS NULL OR last_used_at <= $1)",
                    )
                    .bind(u.at)
                    .bind(u.ip.to_string())
                    .bind(u.key_id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)
            }
        }

        #[async_trait]
        impl AuditLog for $store {
            async fn list_audit_events(
                &self,
                account: AccountId,
                filter: &AuditFilter,
                page: &Page,
            ) -> Result<Vec<AuditEvent>> {
                let mut query = QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    audit_columns!(),
                    " FROM audit_events WHERE account_id = "
                ));
                query.push_bind(account.to_string());
                if let Some(action) = &filter.action {
                    query.push(" AND action = ").push_bind(action.clone());
                }
                if let Some(actor_id) = &filter.actor_id {
                    query.push(" AND actor_id = ").push_bind(actor_id.clone());
                }
                if let Some(target_id) = &filter.target_id {
                    query.push(" AND target_id = ").push_bind(target_id.clone());
                }
                if let Some(since) = filter.since {
                    query.push(" AND created_at >= ").push_bind(since);
                }
                if let Some(until) = filter.until {
                    query.push(" AND created_at < ").push_bind(until);
                }
                push_page(&mut query, page);
                let rows: Vec<AuditRow> = query.build_query_as().fetch_all(&self.pool).await.map_err(map_err)?;
                convert_all(rows)
            }
        }

        #[async_trait]
        impl ChangeFeed for $store {
            async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>> {
                let rows: Vec<ChangeRow> = sqlx::query_as(
                    "SELECT seq, kind, entity_id, account_id, at FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                convert_all(rows)
            }

            async fn latest_change(&self) -> Result<i64> {
                let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM changes")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(latest.unwrap_or(0))
            }

            async fn purge_changes(&self, before: Timestamp) -> Result<u64> {
                let done = sqlx::query("DELETE FROM changes WHERE at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected())
            }
        }

        #[async_trait]
        impl IdempotencyStore for $store {
            async fn begin_idempotent(
                &self,
                account: AccountId,
                key: &str,
                fingerprint: &[u8; 32],
                now: Timestamp,
                expires_at: Timestamp,
            ) -> Result<IdempotencyBegin> {
                // The primary key makes the claim atomic: of concurrent inserts (any connection,
                // any node) exactly one affects a row. On a conflict, read what is there; an
                // expired record is deleted (only if still expired: another request may have
                // replaced it meanwhile) and the insert tried once more, in the same transaction.
                // On PostgreSQL a conflicting insert waits for the other transaction to finish,
                // and each statement sees what committed before it, so the read finds the winner.
                let account = account.to_string();
                let mut tx = self.begin_write().await?;
                for _ in 0..2 {
                    let inserted = sqlx::query(
                        "INSERT INTO idempotency_records \
                         (account_id, idempotency_key, fingerprint, state, response, created_at, expires_at) \
                         VALUES ($1, $2, $3, 'pending', NULL, $4, $5) \
                         ON CONFLICT (account_id, idempotency_key) DO NOTHING",
                    )
                    .bind(account.as_str())
                    .bind(key)
                    .bind(fingerprint.as_slice())
                    .bind(now)
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    if inserted.rows_affected() > 0 {
                        tx.commit().await.map_err(map_err)?;
                        return Ok(IdempotencyBegin::Started);
                    }
                    let existing: Option<IdempotencyRow> = sqlx::query_as(
                        "SELECT fingerprint, state, response, expires_at FROM idempotency_records \
                         WHERE account_id = $1 AND idempotency_key = $2",
                    )
                    .bind(account.as_str())
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    match existing {
                        // Released or purged between the two statements: claim it again.
                        None => {}
                        Some(row) if row.expires_at <= now => {
                            sqlx::query(
                                "DELETE FROM idempotency_records \
                                 WHERE account_id = $1 AND idempotency_key = $2 AND expires_at <= $3",
                            )
                            .bind(account.as_str())
                            .bind(key)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(map_err)?;
                        }
                        Some(row) => {
                            tx.commit().await.map_err(map_err)?;
                            return row.outcome(fingerprint);
                        }
                    }
                }
                // The record changed under us twice (other requests claiming and releasing the
                // same key): someone else is at work on it. Never claim what we could not see.
                tx.commit().await.map_err(map_err)?;
                tracing::debug!(account = %account, "begin_idempotent: record kept changing; reporting in progress");
                Ok(IdempotencyBegin::InProgress)
            }

            async fn complete_idempotent(&self, account: AccountId, key: &str, response: &[u8]) -> Result<()> {
                let done = sqlx::query(
                    "UPDATE idempotency_records SET state = 'complete', response = $1 \
                     WHERE account_id = $2 AND idempotency_key = $3 AND state = 'pending'",
                )
                .bind(response)
                .bind(account.to_string())
                .bind(key)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    tracing::debug!(account = %account, "complete_idempotent: no pending record");
                }
                Ok(())
            }

            async fn release_idempotent(&self, account: AccountId, key: &str) -> Result<()> {
                sqlx::query(
                    "DELETE FROM idempotency_records \
                     WHERE account_id = $1 AND idempotency_key = $2 AND state = 'pending'",
                )
                .bind(account.to_string())
                .bind(key)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn purge_idempotency(&self, before: Timestamp) -> Result<u64> {
                let done = sqlx::query("DELETE FROM idempotency_records WHERE expires_at <= $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected())
            }
        }

        #[async_trait]
        impl RequestLog for $store {
            async fn record_requests(&self, chunks: &[RequestChunk]) -> Result<()> {
                let rows: Vec<super::requestlog::Row<'_>> =
                    chunks.iter().filter_map(|c| super::requestlog::row(c).transpose()).collect::<Result<_>>()?;
                if rows.is_empty() {
                    return Ok(());
                }
                let mut tx = self.begin_write().await?;
                for part in rows.chunks(CHUNK_INSERT_ROWS) {
                    let mut query = QueryBuilder::<$db>::new(
                        "INSERT INTO request_log_chunks \
                         (account_id, first_id, last_id, first_at, last_at, count, records, packed, strings) ",
                    );
                    query.push_values(part, |mut row, c| {
                        row.push_bind(&c.account_id)
                            .push_bind(&c.first_id)
                            .push_bind(&c.last_id)
                            .push_bind(c.first_at)
                            .push_bind(c.last_at)
                            .push_bind(c.count)
                            // For nodes of versions before 0009, which read only `records`: a
                            // chunk of none (docs/deployment.md).
                            .push_bind("[]")
                            .push_bind(c.packed)
                            .push_bind(c.strings);
                    });
                    query.build().execute(&mut *tx).await.map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)
            }

            async fn add_usage(&self, counts: &[UsageCount]) -> Result<()> {
                if counts.is_empty() {
                    return Ok(());
                }
                let mut tx = self.begin_write().await?;
                for chunk in counts.chunks(USAGE_INSERT_CHUNK) {
                    let mut query = QueryBuilder::<$db>::new(
                        "INSERT INTO usage_counters (account_id, day, key_id, tenant_id, outcome, count) ",
                    );
                    query.push_values(chunk, |mut row, c| {
                        row.push_bind(c.account_id.to_string())
                            .push_bind(c.day.format("%Y-%m-%d").to_string())
                            .push_bind(c.key_id.to_string())
                            .push_bind(c.tenant_id.map(|t| t.to_string()).unwrap_or_default())
                            .push_bind(c.outcome)
                            .push_bind(i64::try_from(c.count).unwrap_or(i64::MAX));
                    });
                    query.push(
                        " ON CONFLICT (account_id, day, key_id, tenant_id, outcome) \
                         DO UPDATE SET count = usage_counters.count + excluded.count",
                    );
                    query.build().execute(&mut *tx).await.map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)
            }

            async fn usage(
                &self,
                account: AccountId,
                filter: UsageFilter,
                first: chrono::NaiveDate,
                last: chrono::NaiveDate,
            ) -> Result<Vec<UsageRow>> {
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT day, outcome, CAST(SUM(count) AS BIGINT) AS count FROM usage_counters WHERE account_id = ",
                );
                query.push_bind(account.to_string());
                query.push(" AND day >= ").push_bind(first.format("%Y-%m-%d").to_string());
                query.push(" AND day <= ").push_bind(last.format("%Y-%m-%d").to_string());
                if let Some(key_id) = filter.key_id {
                    query.push(" AND key_id = ").push_bind(key_id.to_string());
                }
                if let Some(tenant_id) = filter.tenant_id {
                    query.push(" AND tenant_id = ").push_bind(tenant_id.to_string());
                }
                query.push(" GROUP BY day, outcome ORDER BY day DESC, outcome");
                let rows: Vec<UsageCountRow> = query.build_query_as().fetch_all(&self.pool).await.map_err(map_err)?;
                convert_all(rows)
            }

            async fn list_requests(
                &self,
                account: AccountId,
                filter: &RequestFilter,
                page: &Page,
            ) -> Result<RequestPage> {
                use super::requestlog::StoredChunk;
                let mut listing = super::requestlog::Listing::new(filter, page.before.as_deref(), page.limit);
                listing.extend(self.legacy_requests(account, filter, page).await?);
                let mut read_up_to: Option<(String, i64)> = None;
                let mut batch = CHUNK_READ_FIRST;
                let mut read = 0;
                loop {
                    let mut query = QueryBuilder::<$db>::new(
                        "SELECT seq, last_id, records, packed, strings FROM request_log_chunks WHERE account_id = ",
                    );
                    query.push_bind(account.to_string());
                    // Bounds on `last_id` the index seeks by: a chunk holds one time bucket of
                    // ids (requestlog.rs), and a record's id is made after its `at`.
                    if let Some(before) = &page.before {
                        query.push(" AND last_id < ").push_bind(super::requestlog::id_bucket_end(before));
                        query.push(" AND first_id < ").push_bind(before.clone());
                    }
                    if let Some(since) = filter.since {
                        query.push(" AND last_id >= ").push_bind(RequestRecord::first_id_at(since));
                        query.push(" AND last_at >= ").push_bind(since.timestamp());
                    }
                    if let Some(until) = filter.until {
                        // `at` is whole seconds: a record at 10 s is before an `until` of 10.5 s.
                        let ceiling = until.timestamp() + i64::from(until.timestamp_subsec_nanos() > 0);
                        query.push(" AND first_at < ").push_bind(ceiling);
                    }
                    if let Some((last_id, seq)) = &read_up_to {
                        query.push(" AND (last_id, seq) < (").push_bind(last_id.clone());
                        query.push(", ").push_bind(*seq).push(")");
                    }
                    query.push(" ORDER BY last_id DESC, seq DESC LIMIT ").push_bind(batch);
                    let rows: Vec<(i64, String, String, Option<Vec<u8>>, Option<String>)> =
                        query.build_query_as().fetch_all(&self.pool).await.map_err(map_err)?;
                    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) == batch;
                    read += rows.len();
                    for (_, _, records, packed, strings) in &rows {
                        listing.add(account, StoredChunk::from_columns(records, packed.as_deref(), strings.as_deref())?)?;
                    }
                    read_up_to = rows.into_iter().last().map(|(seq, last_id, ..)| (last_id, seq));
                    // More chunks may follow only after a full batch; none holds an id above this.
                    let unread_below = read_up_to.as_ref().filter(|_| more).map(|(last_id, _)| last_id.as_str());
                    if let Some(records) = listing.finish(unread_below) {
                        return Ok(RequestPage { records, resume: None });
                    }
                    if let Some(below) = unread_below.filter(|_| read >= CHUNK_READ_BUDGET) {
                        return Ok(RequestPage { records: listing.settled(below), resume: Some(below.to_owned()) });
                    }
                    batch = (batch * 4).min(CHUNK_READ_MAX);
                }
            }

            async fn purge_requests(&self, before: Timestamp) -> Result<u64> {
                let first_kept = RequestRecord::first_id_at(before);
                // Whole chunks, once their newest record is older than `before`.
                let counts: Vec<i64> = sqlx::query_scalar("DELETE FROM request_log_chunks WHERE last_id < $1 RETURNING count")
                    .bind(&first_kept)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                let legacy = sqlx::query("DELETE FROM request_log WHERE id < $1")
                    .bind(&first_kept)
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(counts.into_iter().map(|c| u64::try_from(c).unwrap_or_default()).sum::<u64>() + legacy.rows_affected())
            }
        }

        /// The role of user `id` in `account`, read inside `tx`; `None` when there is no such user.
        async fn user_role(tx: &mut Tx, account: AccountId, id: UserId) -> Result<Option<Role>> {
            let stored: Option<String> = sqlx::query_scalar("SELECT role FROM users WHERE id = $1 AND account_id = $2")
                .bind(id.to_string())
                .bind(account.to_string())
                .fetch_optional(&mut **tx)
                .await
                .map_err(map_err)?;
            stored.as_deref().map(role).transpose()
        }

        /// Refuses (`user_changed`) a write checked against `expected` when the user's role read
        /// under the account's lock is another: a concurrent write changed it since the caller
        /// checked it may touch the user.
        fn ensure_role_unchanged(current: Role, expected: Role) -> Result<()> {
            if current == expected {
                Ok(())
            } else {
                Err(StoreError::Conflict("user_changed"))
            }
        }

        /// Refuses (`last_owner`) a change that takes user `id` away from the owners of `account`
        /// when no other owner is left. The caller holds the account's lock (`lock_account`).
        async fn ensure_another_owner(tx: &mut Tx, account: AccountId, id: UserId) -> Result<()> {
            let others: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE account_id = $1 AND role = $2 AND id <> $3")
                    .bind(account.to_string())
                    .bind(Role::Owner.as_str())
                    .bind(id.to_string())
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(map_err)?;
            if others == 0 {
                return Err(StoreError::Conflict("last_owner"));
            }
            Ok(())
        }

        #[async_trait]
        impl UserStore for $store {
            async fn create_user(
                &self,
                user: &User,
                password_hash: Option<&str>,
                audit: &AuditEvent,
                max_users: u64,
            ) -> Result<()> {
                let mut tx = self.begin_write().await?;
                ensure_room(&mut tx, "users", user.account_id, max_users).await?;
                sqlx::query(
                    "INSERT INTO users (id, account_id, email, email_lower, role, password_hash, created_at, \
                     updated_at, last_sign_in_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(user.id.to_string())
                .bind(user.account_id.to_string())
                .bind(user.email.as_str())
                .bind(email_lower(&user.email))
                .bind(user.role.as_str())
                .bind(password_hash)
                .bind(user.created_at)
                .bind(user.updated_at)
                .bind(user.last_sign_in_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                finish(tx, audit, &[]).await
            }

            async fn get_user(&self, account: AccountId, id: UserId) -> Result<Option<User>> {
                sqlx::query_as::<_, UserRow>(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users WHERE id = $1 AND account_id = $2"
                ))
                .bind(id.to_string())
                .bind(account.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?
                .map(User::try_from)
                .transpose()
            }

            async fn users_by_email(&self, email: &str) -> Result<Vec<(User, Option<String>)>> {
                let rows: Vec<UserAndHashRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    ", users.password_hash AS password_hash FROM users WHERE email_lower = $1 \
                     ORDER BY created_at, id"
                ))
                .bind(email_lower(email))
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                convert_all(rows)
            }

            async fn list_users(&self, account: AccountId, page: &Page) -> Result<Vec<User>> {
                let mut query =
                    QueryBuilder::<$db>::new(concat!("SELECT ", user_columns!(), " FROM users WHERE account_id = "));
                query.push_bind(account.to_string());
                push_page(&mut query, page);
                let rows: Vec<UserRow> = query.build_query_as().fetch_all(&self.pool).await.map_err(map_err)?;
                convert_all(rows)
            }

            async fn update_user(&self, user: &User, expected_role: Role, audit: &AuditEvent) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                // Locked before the role is read, so the role and the owner count are both
                // current when the rules are checked.
                lock_account(&mut tx, user.account_id).await?;
                let Some(current) = user_role(&mut tx, user.account_id, user.id).await? else {
                    tracing::debug!(user = %user.id, "update_user: no such user in this account");
                    return Ok(false);
                };
                ensure_role_unchanged(current, expected_role)?;
                if current == Role::Owner && user.role != Role::Owner {
                    ensure_another_owner(&mut tx, user.account_id, user.id).await?;
                }
                sqlx::query(
                    "UPDATE users SET email = $1, email_lower = $2, role = $3, updated_at = $4 \
                     WHERE id = $5 AND account_id = $6",
                )
                .bind(user.email.as_str())
                .bind(email_lower(&user.email))
                .bind(user.role.as_str())
                .bind(user.updated_at)
                .bind(user.id.to_string())
                .bind(user.account_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                if user.role != current {
                    // Whoever holds a session or a link of this user must not take the new role
                    // along (one opened by someone who could then manage the user).
                    end_sign_ins(&mut tx, user.id, audit.created_at).await?;
                }
                finish(tx, audit, &[]).await?;
                Ok(true)
            }

            async fn set_password(
                &self,
                account: AccountId,
                id: UserId,
                expected_role: Role,
                password_hash: Option<&str>,
                audit: &AuditEvent,
            ) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                lock_account(&mut tx, account).await?;
                let Some(current) = user_role(&mut tx, account, id).await? else {
                    tracing::debug!(user = %id, "set_password: no such user in this account");
                    return Ok(false);
                };
                ensure_role_unchanged(current, expected_role)?;
                sqlx::query(
                    "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3 AND account_id = $4",
                )
                .bind(password_hash)
                .bind(audit.created_at)
                .bind(id.to_string())
                .bind(account.to_string())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                // An unused sign-in link would open a session the new password did not.
                end_sign_ins(&mut tx, id, audit.created_at).await?;
                finish(tx, audit, &[]).await?;
                Ok(true)
            }

            async fn delete_user(
                &self,
                account: AccountId,
                id: UserId,
                expected_role: Role,
                audit: &AuditEvent,
            ) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                lock_account(&mut tx, account).await?;
                let Some(current) = user_role(&mut tx, account, id).await? else {
                    return Ok(false);
                };
                ensure_role_unchanged(current, expected_role)?;
                if current == Role::Owner {
                    ensure_another_owner(&mut tx, account, id).await?;
                }
                // The user's rows first: their foreign keys name it.
                for sql in [
                    "DELETE FROM sessions WHERE user_id = $1",
                    "DELETE FROM sign_in_tokens WHERE user_id = $1",
                ] {
                    sqlx::query(sql).bind(id.to_string()).execute(&mut *tx).await.map_err(map_err)?;
                }
                sqlx::query("DELETE FROM users WHERE id = $1 AND account_id = $2")
                    .bind(id.to_string())
                    .bind(account.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                finish(tx, audit, &[]).await?;
                Ok(true)
            }

            async fn note_sign_in(&self, account: AccountId, id: UserId, at: Timestamp) -> Result<()> {
                sqlx::query("UPDATE users SET last_sign_in_at = $1 WHERE id = $2 AND account_id = $3")
                    .bind(at)
                    .bind(id.to_string())
                    .bind(account.to_string())
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn create_session(&self, session: &Session) -> Result<()> {
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, account_id, token_hash, created_at, last_seen_at, expires_at, \
                     ip, user_agent, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(session.id.to_string())
                .bind(session.user_id.to_string())
                .bind(session.account_id.to_string())
                .bind(session.token_hash.as_slice())
                .bind(session.created_at)
                .bind(session.last_seen_at)
                .bind(session.expires_at)
                .bind(session.ip.map(|ip| ip.to_string()))
                .bind(session.user_agent.as_deref())
                .bind(session.revoked_at)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn session_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<(Session, User)>> {
                sqlx::query_as::<_, SessionAndUserRow>(concat!(
                    "SELECT ",
                    session_columns!(),
                    ", users.id AS usr_id, users.account_id AS usr_account_id, users.email AS usr_email, \
                     users.role AS usr_role, (users.password_hash IS NOT NULL) AS usr_has_password, \
                     users.created_at AS usr_created_at, users.updated_at AS usr_updated_at, \
                     users.last_sign_in_at AS usr_last_sign_in_at \
                     FROM sessions JOIN users ON users.id = sessions.user_id \
                     WHERE sessions.token_hash = $1"
                ))
                .bind(token_hash.as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?
                .map(<(Session, User)>::try_from)
                .transpose()
            }

            async fn touch_session(&self, id: SessionId, at: Timestamp) -> Result<()> {
                sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $1")
                    .bind(at)
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn list_sessions(&self, account: AccountId, user: UserId, now: Timestamp) -> Result<Vec<Session>> {
                let rows: Vec<SessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM sessions WHERE account_id = $1 AND user_id = $2 AND revoked_at IS NULL \
                     AND expires_at > $3 ORDER BY created_at DESC, id DESC"
                ))
                .bind(account.to_string())
                .bind(user.to_string())
                .bind(now)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                convert_all(rows)
            }

            async fn revoke_session(
                &self,
                account: AccountId,
                user: UserId,
                id: SessionId,
                at: Timestamp,
            ) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE sessions SET revoked_at = COALESCE(revoked_at, $1) \
                     WHERE id = $2 AND user_id = $3 AND account_id = $4",
                )
                .bind(at)
                .bind(id.to_string())
                .bind(user.to_string())
                .bind(account.to_string())
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected() > 0)
            }

            async fn purge_sessions(&self, before: Timestamp) -> Result<u64> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query("DELETE FROM sessions WHERE revoked_at < $1 OR expires_at < $1")
                    .bind(before)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                sqlx::query("DELETE FROM sign_in_tokens WHERE expires_at < $1")
                    .bind(before)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(done.rows_affected())
            }

            async fn create_sign_in_token(
                &self,
                token_hash: &[u8; 32],
                account: AccountId,
                user: UserId,
                expires_at: Timestamp,
                audit: &AuditEvent,
            ) -> Result<()> {
                let mut tx = self.begin_write().await?;
                // One live link per user: a new one replaces the others.
                sqlx::query("DELETE FROM sign_in_tokens WHERE user_id = $1")
                    .bind(user.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                sqlx::query(
                    "INSERT INTO sign_in_tokens (token_hash, account_id, user_id, expires_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(token_hash.as_slice())
                .bind(account.to_string())
                .bind(user.to_string())
                .bind(expires_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                finish(tx, audit, &[]).await
            }

            async fn consume_sign_in_token(
                &self,
                token_hash: &[u8; 32],
                now: Timestamp,
            ) -> Result<Option<(AccountId, UserId)>> {
                // One statement deletes and reads: of concurrent calls (any connection, any node)
                // exactly one deletes the row and sees it. An expired token goes too: it would
                // never be good again.
                let row: Option<SignInTokenRow> = sqlx::query_as(
                    "DELETE FROM sign_in_tokens WHERE token_hash = $1 RETURNING account_id, user_id, expires_at",
                )
                .bind(token_hash.as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
                let Some(row) = row else { return Ok(None) };
                let (account, user, expires_at) = <(AccountId, UserId, Timestamp)>::try_from(row)?;
                Ok((expires_at > now).then_some((account, user)))
            }
        }

        /// The `keygate_meta` row holding the hash secret's fingerprint.
        const HASH_SECRET_FINGERPRINT: &str = "hash_secret_fingerprint";

        #[async_trait]
        impl MetaStore for $store {
            async fn hash_secret_fingerprint(&self) -> Result<Option<String>> {
                sqlx::query_scalar("SELECT value FROM keygate_meta WHERE name = $1")
                    .bind(HASH_SECRET_FINGERPRINT)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)
            }

            async fn claim_hash_secret_fingerprint(&self, fingerprint: &str) -> Result<Option<String>> {
                // The primary key makes the claim atomic: of concurrent claims (any connection,
                // any node) exactly one inserts; on PostgreSQL a conflicting insert waits for the
                // other transaction to finish, and the read that follows sees what it committed.
                let mut tx = self.begin_write().await?;
                let inserted = sqlx::query(
                    "INSERT INTO keygate_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                )
                .bind(HASH_SECRET_FINGERPRINT)
                .bind(fingerprint)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                let before = if inserted.rows_affected() > 0 {
                    None
                } else {
                    let value: String = sqlx::query_scalar("SELECT value FROM keygate_meta WHERE name = $1")
                        .bind(HASH_SECRET_FINGERPRINT)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    Some(value)
                };
                tx.commit().await.map_err(map_err)?;
                Ok(before)
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await.map_err(map_err)?;
                Ok(())
            }

            async fn migrate(&self) -> Result<()> {
                let mut conn = self.pool.acquire().await.map_err(map_err)?;
                let unbounded: Option<&str> = $migrate_unbounded;
                if let Some(sql) = unbounded {
                    sqlx::query(sql).execute(&mut *conn).await.map_err(map_err)?;
                }
                // Applied migrations this binary does not know are a newer version's: an older
                // node keeps running on the newer schema during a rolling upgrade, since
                // migrations only add (docs/deployment.md).
                let migrator = sqlx::migrate::Migrator {
                    migrations: std::borrow::Cow::Borrowed(&$migrator.migrations[..]),
                    ignore_missing: true,
                    locking: $migrator.locking,
                    no_tx: $migrator.no_tx,
                    table_name: std::borrow::Cow::Borrowed(&$migrator.table_name[..]),
                    create_schemas: std::borrow::Cow::Borrowed(&$migrator.create_schemas[..]),
                };
                let result = migrator.run_direct(None, &mut *conn, false).await;
                if unbounded.is_some() {
                    // Not back into the pool without its statement timeout: closed instead.
                    drop(conn.detach());
                }
                result?;
                Ok(())
            }

            async fn close(&self) {
                self.pool.close().await;
            }
        }
    };
}

// Declared after the macros above, which are in scope only below their definitions. The crate
// root names the backends by their modules: this module re-exports nothing, so that it and the
// backends, which use its helpers, import each other in one direction only.
pub mod postgres;
mod requestlog;
mod rows;
pub mod sqlite;
