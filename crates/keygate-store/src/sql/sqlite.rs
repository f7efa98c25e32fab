//! [`SqliteStore`]: keygate on one SQLite file (the default, single-node deployment).
//!
//! The queries come from `sql_store!`; this file holds how a SQLite database is opened and
//! what SQLite spells differently.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The store on SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path/to/keygate.db`,
    /// `sqlite::memory:`). Does not migrate: see [`crate::Store::migrate`].
    ///
    /// A file gets WAL journaling (readers never wait for the writer), `synchronous = NORMAL`
    /// (durable across application crashes; WAL keeps it consistent across power loss) and a
    /// 5 s busy timeout, shared by a pool of 8 connections. An in-memory database lives only
    /// as long as its connections, so it gets exactly one that is never closed.
    ///
    /// # Errors
    /// The URL is not a SQLite URL or the file cannot be opened or created.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .synchronous(SqliteSynchronous::Normal);
        let pool = if in_memory {
            SqlitePoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
        } else {
            options = options.journal_mode(SqliteJournalMode::Wal);
            SqlitePoolOptions::new().max_connections(8)
        };
        Ok(Self { pool: pool.connect_with(options).await? })
    }
}

sql_store! {
    store: SqliteStore,
    db: Sqlite,
    backend: "sqlite",
    migrator: MIGRATOR,
    tenant_contains: ("EXISTS (SELECT 1 FROM json_each(api_keys.tenant_ids) WHERE value = ", ")"),
    // IMMEDIATE takes the write lock up front, waiting out the busy timeout if another writer
    // holds it, instead of failing when a read would have to upgrade to a write mid-way.
    begin: "BEGIN IMMEDIATE",
    // SQLite has one writer at a time, so seq order is already commit order.
    lock_changes: None,
    // `at` is RFC 3339 text in UTC: its first ten characters are the day.
    utc_day: "substr(at, 1, 10)",
}
