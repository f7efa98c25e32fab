//! keygate's storage: small async traits, one implementation per backend.
//!
//! The server and CLI talk only to [`Store`]; SQL lives in `sql/` (`sqlite.rs` / `postgres.rs`,
//! which share their query text through the `sql_store!` macro in `sql/mod.rs`) and nowhere
//! else. The backend is chosen by the URL
//! scheme in [`connect`]; an unknown scheme is an error, never an empty SQLite file.
//!
//! Every write takes the [`AuditEvent`] that describes it and commits both, plus a row in the
//! change log, in one transaction: nothing acknowledged is lost, and every node can follow the
//! change log to evict what it cached. The one exception is [`IdempotencyStore`]: its records
//! are a retry cache that nothing else reads, so they are neither audited nor in the change log.
//! Nor is the [`RequestLog`]: it records requests, not changes, and is written in batches. Nor is
//! the [`MetaStore`]: it records facts about the deployment, not about any account. User writes
//! are audited but need no change-log row (nothing caches users), and sessions and sign-in tokens
//! are neither audited nor followed: they are read from the store on every use.

mod chunk;
mod connect;
mod pool;
mod sql;
mod store;

pub use chunk::{ChunkError, MAX_CHUNK_RECORDS, NewRequestRecord, RecordId, RequestChunk, RequestRecord};
pub use connect::{ConnectError, connect, connect_with};
pub use pool::PoolSettings;
pub use sql::postgres::PgStore;
pub use sql::sqlite::SqliteStore;
pub use store::*;
