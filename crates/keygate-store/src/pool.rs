//! [`PoolSettings`]: how a store uses its database connections.

use std::time::Duration;

/// How a PostgreSQL store's connection pool behaves (`[database]` in the configuration). SQLite,
/// one file in this process, ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections the pool opens at most (per node: N nodes open up to N times this).
    pub max_connections: u32,
    /// How long a query waits for a free connection (or a new one) before it fails: the store
    /// is then unavailable for it (503 `service_unavailable`), not stuck.
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
