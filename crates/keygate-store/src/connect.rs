//! [`connect`]: a store for a database URL, the backend chosen by its scheme.

use std::sync::Arc;

use crate::pool::PoolSettings;
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
