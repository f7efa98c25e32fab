//! [`PgStore`]: keygate on PostgreSQL (the cluster deployment: any number of nodes, one
//! database).
//!
//! The queries come from `sql_store!`; this file holds how the pool is made and what
//! PostgreSQL spells differently.

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::pool::PoolSettings;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The store on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`) with a pool as `pool` says: its size, how
    /// long a query waits for a free connection, and the server-side `statement_timeout`.
    /// Does not migrate: see [`crate::Store::migrate`].
    ///
    /// # Errors
    /// The URL is not a PostgreSQL URL or the server cannot be reached within the acquire timeout.
    pub async fn open(url: &str, pool: &PoolSettings) -> Result<Self, sqlx::Error> {
        let mut options: PgConnectOptions = url.parse()?;
        if let Some(timeout) = pool.statement_timeout {
            // A server-side bound on every statement of every connection of the pool.
            options = options.options([("statement_timeout", timeout.as_millis().to_string())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(pool.max_connections)
            .acquire_timeout(pool.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

sql_store! {
    store: PgStore,
    db: Postgres,
    backend: "postgres",
    migrator: MIGRATOR,
    tenant_contains: ("api_keys.tenant_ids @> jsonb_build_array(CAST(", " AS TEXT))"),
    begin: "BEGIN",
    // A sequence hands out numbers at insert, not at commit: without this, a follower could
    // read seq 11 while seq 10 is still uncommitted, then never see 10. Holding one
    // transaction-scoped lock from the change insert to commit makes seq order commit order.
    // (The constant is arbitrary: "keyg" in ASCII.)
    // Row lock on the account: its capped inserts (keys, tenants) count and insert one at a time.
    lock_account: Some("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE"),
    lock_changes: Some("SELECT pg_advisory_xact_lock(1801812327)"),
    migrate_unbounded: Some("SET statement_timeout = 0"),
}
