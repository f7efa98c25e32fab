//! [`connect`]: a store for a database URL, the backend chosen by its scheme.

use std::sync::Arc;
use std::time::Duration;

use crate::sql::postgres::PgStore;
use crate::sql::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("database_url has unsupported scheme `{0}`: use sqlite://path/to/keygate.db or postgres://user@host/db")]
    UnknownScheme(String),
    #[error("database_url is not a URL (expected sqlite://… or postgres://…)")]
    NotAUrl,
    #[error("cannot open the database: {0}")]
    Open(#[source] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a PostgreSQL store's connection pool behaves (`[database]` in the configuration). SQLite,
/// one file in this process, ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections the pool opens at most (per node: N nodes open up to N times this).
    pub max_connections: u32,
    /// How long a query waits for a free connection (or a new one) before it fails: the store
    /// is then unavailable for it (503 `store_unavailable`), not stuck.
    pub acquire_timeout: Duration,
    /// PostgreSQL's `statement_timeout` for every statement, `None` for the server's own.
    pub statement_timeout: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(10)),
        }
    }
}

/// Opens the store named by `url` (`sqlite://…` or `postgres://…`), creating a SQLite file if
/// needed, and applies migrations, with the default [`PoolSettings`].
///
/// # Errors
/// Unknown scheme, unreachable database, or failed migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, ConnectError> {
    connect_with(url, &PoolSettings::default()).await
}

/// As [`connect`], with a PostgreSQL pool as `pool` says.
///
/// # Errors
/// Unknown scheme, unreachable database, or failed migrations.
pub async fn connect_with(url: &str, pool: &PoolSettings) -> Result<Arc<dyn Store>, ConnectError> {
    let scheme = url.split_once(':').map(|(s, _)| s).ok_or(ConnectError::NotAUrl)?;
    let store: Arc<dyn Store> = match scheme {
        "sqlite" => Arc::new(SqliteStore::open(url).await.map_err(ConnectError::Open)?),
        "postgres" | "postgresql" => Arc::new(PgStore::open(url, pool).await.map_err(ConnectError::Open)?),
        other => return Err(ConnectError::UnknownScheme(other.to_owned())),
    };
    store.migrate().await?;
    Ok(store)
}
