//! [`SqliteStore`]: keygate on one SQLite file (the default, single-node deployment).
//!
//! The queries come from `sql_store!`; this file holds how a SQLite database is opened and
//! what SQLite spells differently.

use std::path::Path;
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
    /// (durable across application crashes; WAL keeps it consistent across power loss), a
    /// checkpoint every [`WAL_AUTOCHECKPOINT_PAGES`] pages of WAL and a 5 s busy timeout, shared
    /// by a pool of 8 connections. Temporary storage is in memory (`temp_store = MEMORY`): a
    /// multi-row `INSERT` keeps a statement journal, which in a temporary file cost a write
    /// system call per page it touched (the usage counters' upserts wrote 1.0 KiB a counter row
    /// that way, 0.4 KiB without; docs/benchmarks.md). An in-memory database lives only as long
    /// as its connections, so it gets exactly one that is never closed.
    ///
    /// A database file keygate creates is mode 0600 (SPEC §2), and so are the `-wal` and `-shm`
    /// files SQLite creates next to it (SQLite gives them the database file's permissions). An
    /// existing file readable or writable by group or others is tightened to 0600, with a
    /// warning.
    ///
    /// # Errors
    /// The URL is not a SQLite URL or the file cannot be opened or created.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)?;
        if !in_memory {
            // The path exactly as sqlx parsed it (scheme and query stripped, percent-decoded),
            // so the file made private is the file SQLite opens.
            private_file(options.get_filename(), read_only(url));
        }
        let mut options = options
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .synchronous(SqliteSynchronous::Normal)
            .pragma("temp_store", "memory");
        let pool = if in_memory {
            SqlitePoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
        } else {
            options = options
                .journal_mode(SqliteJournalMode::Wal)
                .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string());
            SqlitePoolOptions::new().max_connections(8)
        };
        Ok(Self { pool: pool.connect_with(options).await? })
    }
}

/// Pages of WAL (4 KiB each: up to 40 MiB) after which a commit copies them into the database
/// file, SQLite's default being 1,000. Every key lands on a random page of the `key_hash` index,
/// so at a million keys each batch of new keys dirties about one page per key; a longer WAL
/// copies a page dirtied by several batches once, not once per batch (docs/benchmarks.md).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Whether the URL asks for a read-only database (`?mode=ro`): such a file is never created.
fn read_only(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| query.split('&').any(|pair| pair == "mode=ro"))
}

/// Makes the database file at `path` private to its owner (SPEC §2): creates it with mode 0600
/// if it does not exist (unless `read_only`); otherwise tightens it, and any `-wal`, `-shm` or
/// `-journal` file beside it, to 0600 if group or others may access it, with one warning.
/// SQLite gives the files it creates later the database file's permissions, so they are 0600
/// too.
///
/// Never fails: what cannot be created is left for SQLite to report when it opens the path, and
/// a file that cannot be tightened (another user's) is reported in the warning.
#[cfg(unix)]
fn private_file(path: &Path, read_only: bool) {
    use std::fs::{self, OpenOptions, Permissions};
    use std::io::ErrorKind;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::path::PathBuf;

    // "" is SQLite's private temporary database, deleted on close: nothing to protect.
    if path.as_os_str().is_empty() {
        return;
    }
    if !read_only {
        // create_new: never truncates an existing file, and never loosens one made meanwhile.
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => return,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            // A missing directory, say: SQLite reports it when it opens the path.
            Err(_) => return,
        }
    }
    let files = ["", "-wal", "-shm", "-journal"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    });
    let mut tightened = Vec::new();
    let mut failed = Vec::new();
    for file in &files {
        let Ok(meta) = fs::metadata(file) else { continue };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            continue;
        }
        match fs::set_permissions(file, Permissions::from_mode(0o600)) {
            Ok(()) => tightened.push(format!("{} (was {mode:o})", file.display())),
            Err(e) => failed.push(format!("{} ({mode:o}: {e})", file.display())),
        }
    }
    if !tightened.is_empty() || !failed.is_empty() {
        tracing::warn!(
            tightened = %tightened.join(", "),
            not_tightened = %failed.join(", "),
            "database files were accessible to group or others; keygate keeps them private to their owner (0600)"
        );
    }
}

#[cfg(not(unix))]
fn private_file(_path: &Path, _read_only: bool) {}

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
    // BEGIN IMMEDIATE already makes every write transaction the only one.
    lock_account: None,
    lock_changes: None,
    migrate_unbounded: None,
    // `at` is RFC 3339 text in UTC: its first ten characters are the day.
}
