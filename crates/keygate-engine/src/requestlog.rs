//! What is kept of a finished request (SPEC §8): its count in the usage counters, always, and its
//! record in the request log, as the operator's [`RequestLogMode`] says. Both off the hot path.
//!
//! A request adds one to an in-memory counter and, when the log keeps it, encodes its record
//! straight into its account's open [`RequestChunk`] (the stored form, about 57 bytes a record:
//! nothing is encoded again before the write). A background task writes the counters every
//! [`COUNT_FLUSH_INTERVAL`] and, every [`FLUSH_INTERVAL`], the chunks that are due:
//!
//! - every closed chunk: one that reached
//!   [`MAX_CHUNK_RECORDS`](keygate_store::MAX_CHUNK_RECORDS), or whose account's next record fell
//!   in a new time bucket;
//! - the open chunks of one account in ten. An account's turn ([`phase`]) comes once every
//!   [`HOLD`], so each account's records are written once a second, in one chunk, and each
//!   100 ms write carries a tenth of the accounts.
//!
//! Why hold a second: what a chunk costs the database is mostly its bytes, but a chunk also costs
//! a row and two index entries, and with many active accounts a write of every account every
//! 100 ms made chunks of a few records each (3.5–4.8 µs a record at 100 accounts, against
//! 0.8–0.9 µs for the chunks of a hundred written by turn; docs/benchmarks.md). Writing every
//! account once a second made chunks as large, but every write ten times as long, which showed in
//! the requests' 99th percentile; the turns keep each write short.
//!
//! A failed write puts its chunks back (in front of the closed ones, counts added), to be retried
//! with the next one. [`RequestRecorder::flush_account`] writes an account's records and counts
//! before its usage or log is read (so the request made a moment ago counts), and
//! [`RequestRecorder::flush`] everything at shutdown (so nothing acknowledged is lost); flushes
//! never overlap, so a read never misses a chunk another flush has taken but not yet written. A
//! node that dies without a graceful shutdown loses what it held: about a second of its
//! requests' records, and up to a second of counts.
//!
//! The counters are exact: every counted request is written once. Memory holds one entry per
//! key, tenant, day and outcome seen since the last write. The log's held records are bounded
//! ([`MAX_PENDING`]): when the store cannot keep up, the oldest chunks are dropped, whole, and
//! their records counted in `keygate_request_log_dropped_total`, so a request never waits and
//! memory never grows without limit; the counters are not dropped.
//!
//! Only authenticated requests are kept (both are read per account and per key), and a record
//! holds ids, the route template and the outcome: never a credential, header or body.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use keygate_domain::{AccountId, KeyId, TenantId};
use keygate_store::{NewRequestRecord, RecordId, RequestChunk, Store, UsageCount};
use tokio::sync::watch;

use crate::background::sleep_or_stop;
use crate::settings::RequestLogMode;

/// How often the flusher writes: the closed chunks, and the open chunks whose turn it is.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// How long an account's open chunk is held at most (one turn): records wait up to this, plus a
/// [`FLUSH_INTERVAL`], before they are written.
pub const HOLD: Duration = Duration::from_secs(1);
/// How often the usage counters are written: one upsert per key, tenant, day and outcome seen
/// meanwhile, however many requests they count.
pub const COUNT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// The most records held in memory while the store is slow or down.
pub const MAX_PENDING: usize = 100_000;

/// Flushes per [`HOLD`]: the number of turns.
const TURNS: u64 = (HOLD.as_millis() / FLUSH_INTERVAL.as_millis()) as u64;
/// Locks the open chunks are spread over, by account, so two requests rarely wait on one.
const SHARDS: usize = 8;

/// The turn, out of [`TURNS`], at which `account`'s open chunk is written: from the ULID's
/// random low bits, so accounts spread evenly over the turns.
#[must_use]
pub fn phase(account: AccountId) -> u64 {
    (account.ulid().0 as u64) % TURNS
}

/// What one usage counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Counted {
    pub account: AccountId,
    pub key: KeyId,
    pub tenant: Option<TenantId>,
    /// The UTC day.
    pub day: NaiveDate,
    /// `ok`, or the error code.
    pub outcome: &'static str,
}

type OpenChunks = HashMap<AccountId, RequestChunk, foldhash::fast::RandomState>;

pub struct RequestRecorder {
    mode: RequestLogMode,
    counts: Mutex<HashMap<Counted, u64, foldhash::fast::RandomState>>,
    /// Each account's open chunk, sharded by account.
    open: [Mutex<OpenChunks>; SHARDS],
    /// Chunks closed (full, or followed by a record of a new time bucket) or put back after a
    /// failed write: oldest first.
    closed: Mutex<VecDeque<RequestChunk>>,
    /// Records held, open and closed.
    held: AtomicUsize,
    max_pending: usize,
    /// Held by a flush from taking its chunks until they are written or put back.
    flushing: tokio::sync::Mutex<()>,
}

impl Default for RequestRecorder {
    fn default() -> Self {
        Self::new(RequestLogMode::All, MAX_PENDING)
    }
}

/// Which open chunks a flush takes.
#[derive(Debug, Clone, Copy)]
pub enum Due {
    /// Those of the accounts whose turn (out of ten; [`phase`]) this is.
    Turn(u64),
    /// Every one.
    All,
    /// The one of this account, if it has one.
    Account(AccountId),
}

impl RequestRecorder {
    /// A recorder whose log keeps what `mode` says, at most `max_pending` records in memory.
    #[must_use]
    pub fn new(mode: RequestLogMode, max_pending: usize) -> Self {
        Self {
            mode,
            counts: Mutex::new(HashMap::default()),
            open: std::array::from_fn(|_| Mutex::new(OpenChunks::default())),
            closed: Mutex::new(VecDeque::new()),
            held: AtomicUsize::new(0),
            max_pending: max_pending.max(1),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether the request log keeps a request answered `status` with `outcome`: build its
    /// record only then.
    #[must_use]
    pub fn keeps(&self, status: u16, outcome: &str) -> bool {
        self.mode.keeps(status, outcome)
    }

    /// Counts one request. Cheap: one uncontended lock and a map update; never waits.
    pub fn count(&self, counted: Counted) {
        *lock(&self.counts).entry(counted).or_default() += 1;
    }

    /// Keeps one record: gives it an id (`rl_<ULID>`) and encodes it into its account's open
    /// chunk. Cheap: one lock of one shard, rarely contended; never waits for the store.
    pub fn record(&self, record: &NewRequestRecord<'_>) {
        if self.held.load(Ordering::Relaxed) >= self.max_pending && !self.make_room() {
            count_dropped(1);
            return;
        }
        let account = record.account_id;
        let mut open = lock(self.shard(account));
        let chunk = open.entry(account).or_insert_with(|| RequestChunk::new(account));
        // Made under the shard's lock, so an account's ids reach its chunk in order.
        let id = RecordId::generate();
        if !chunk.takes(id) {
            self.close(std::mem::replace(chunk, RequestChunk::new(account)));
        }
        if chunk.push(id, record).is_err() {
            count_dropped(1);
            return;
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        if chunk.is_full()
            && let Some(full) = open.remove(&account)
        {
            self.close(full);
        }
    }

    /// How many records wait to be written.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn shard(&self, account: AccountId) -> &Mutex<OpenChunks> {
        // The ULID's random bits, above those `phase` reads.
        &self.open[((account.ulid().0 >> 64) as usize) % SHARDS]
    }

    /// Queues `chunk` to be written with the next flush. Lock order: a shard, then `closed`.
    fn close(&self, chunk: RequestChunk) {
        lock(&self.closed).push_back(chunk);
    }

    fn discard(&self, chunk: &RequestChunk) {
        self.held.fetch_sub(chunk.len(), Ordering::Relaxed);
        count_dropped(chunk.len());
    }

    /// Drops the oldest closed chunk or, if none is closed, the open chunk holding the oldest
    /// record. Whether anything was dropped. A chunk is dropped from where it is held, under its
    /// lock, so a flush never misses one that is moving.
    fn make_room(&self) -> bool {
        if let Some(oldest) = lock(&self.closed).pop_front() {
            self.discard(&oldest);
            return true;
        }
        let oldest = (0..SHARDS)
            .filter_map(|shard| {
                let open = lock(&self.open[shard]);
                open.values().filter_map(|c| Some((c.first_id()?, shard, c.account()))).min()
            })
            .min();
        let Some((first_id, shard, account)) = oldest else { return false };
        let mut open = lock(&self.open[shard]);
        // Unless it was taken or closed meanwhile.
        if open.get(&account).and_then(RequestChunk::first_id) != Some(first_id) {
            return false;
        }
        open.remove(&account).inspect(|chunk| self.discard(chunk)).is_some()
    }

    /// The open chunks `due` names, taken out.
    fn take_open(&self, due: Due) -> Vec<RequestChunk> {
        let mut taken = Vec::new();
        for shard in &self.open {
            let mut open = lock(shard);
            match due {
                Due::All => taken.extend(open.drain().map(|(_, chunk)| chunk)),
                Due::Turn(turn) => {
                    taken.extend(open.extract_if(|account, _| phase(*account) == turn % TURNS).map(|(_, chunk)| chunk));
                }
                Due::Account(account) => taken.extend(open.remove(&account)),
            }
        }
        taken
    }

    /// Takes what a flush writes: the open chunks `due` names, then every closed chunk. In that
    /// order: a chunk only moves from open to closed, so one that moves meanwhile is taken
    /// closed.
    #[must_use]
    pub fn take(&self, due: Due) -> Vec<RequestChunk> {
        let mut taken = self.take_open(due);
        taken.extend(lock(&self.closed).drain(..));
        taken.retain(|chunk| !chunk.is_empty());
        taken
    }

    /// Writes every held record and every count, after any flush already under way: at
    /// shutdown.
    pub async fn flush(&self, store: &dyn Store) {
        let _flushing = self.flushing.lock().await;
        self.write_records(store, Due::All).await;
        self.write_counts(store, None).await;
    }

    /// Writes what is held of `account` (its records and counts) and every closed chunk, after
    /// any flush already under way: before the account's usage or log is read, so the request
    /// made a moment ago counts. Other accounts' open chunks and counts wait for their turn, so a
    /// client reading often does not make every account's writes small.
    pub async fn flush_account(&self, store: &dyn Store, account: AccountId) {
        let _flushing = self.flushing.lock().await;
        self.write_records(store, Due::Account(account)).await;
        self.write_counts(store, Some(account)).await;
    }

    async fn write_records(&self, store: &dyn Store, due: Due) {
        let chunks = self.take(due);
        if chunks.is_empty() {
            return;
        }
        // Not held while written: a write in progress makes no room for new records.
        let records: usize = chunks.iter().map(RequestChunk::len).sum();
        self.held.fetch_sub(records, Ordering::Relaxed);
        if let Err(e) = store.record_requests(&chunks).await {
            store_failed(store, &e, "could not write the request log; will retry", records);
            self.held.fetch_add(records, Ordering::Relaxed);
            let mut closed = lock(&self.closed);
            // The failed chunks are older than anything closed meanwhile: they go first.
            for chunk in chunks.into_iter().rev() {
                closed.push_front(chunk);
            }
            while self.held.load(Ordering::Relaxed) > self.max_pending {
                let Some(oldest) = closed.pop_front() else { break };
                self.discard(&oldest);
            }
        }
    }

    /// Writes the counts of `account`, or of every account.
    async fn write_counts(&self, store: &dyn Store, account: Option<AccountId>) {
        let taken: Vec<(Counted, u64)> = {
            let mut counts = lock(&self.counts);
            match account {
                None => counts.drain().collect(),
                Some(account) => counts.extract_if(|c, _| c.account == account).collect(),
            }
        };
        if taken.is_empty() {
            return;
        }
        let batch: Vec<UsageCount> = taken
            .iter()
            .map(|&(c, count)| UsageCount {
                account_id: c.account,
                key_id: c.key,
                tenant_id: c.tenant,
                day: c.day,
                outcome: c.outcome,
                count,
            })
            .collect();
        if let Err(e) = store.add_usage(&batch).await {
            store_failed(store, &e, "could not write usage counts; will retry", batch.len());
            let mut counts = lock(&self.counts);
            for (counted, n) in taken {
                *counts.entry(counted).or_default() += n;
            }
        }
    }

    /// Every [`FLUSH_INTERVAL`] writes the closed chunks and the open chunks whose turn it is,
    /// and every [`COUNT_FLUSH_INTERVAL`] the counters, until `stop`; then everything once more.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
        let every = (COUNT_FLUSH_INTERVAL.as_millis() / FLUSH_INTERVAL.as_millis()).max(1) as u64;
        let mut tick: u64 = 0;
        while !sleep_or_stop(&mut stop, FLUSH_INTERVAL).await {
            tick = tick.wrapping_add(1);
            let _flushing = self.flushing.lock().await;
            self.write_records(&*store, Due::Turn(tick)).await;
            if tick.is_multiple_of(every) {
                self.write_counts(&*store, None).await;
            }
        }
        self.flush(&*store).await;
    }
}

fn store_failed(store: &dyn Store, error: &keygate_store::StoreError, what: &'static str, items: usize) {
    metrics::counter!("keygate_store_errors_total", "backend" => store.backend()).increment(1);
    tracing::warn!(error = %error, items, "{what}");
}

/// The lock's data, also after a panic while it was held: every update under these locks leaves
/// the data whole (a push, a map entry, a count), so a panic elsewhere never loses what is held.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn count_dropped(dropped: usize) {
    if dropped > 0 {
        metrics::counter!("keygate_request_log_dropped_total").increment(dropped as u64);
    }
}

#[cfg(test)]
mod tests {
    use keygate_domain::{AccountId, time};
    use keygate_store::{MAX_CHUNK_RECORDS, Page, RequestFilter, RequestRecord};

    use super::*;

    fn record(account: AccountId, n: u16) -> RequestRecord {
        RequestRecord {
            id: String::new(),
            request_id: format!("req_{n}"),
            at: time::now(),
            account_id: account,
            key_id: None,
            tenant_id: None,
            route: "/v1/api-keys".into(),
            method: "GET".into(),
            status: n,
            outcome: "ok".into(),
            client_ip: None,
            latency_us: 1,
            via_key_id: None,
        }
    }

    async fn store() -> Arc<dyn Store> {
        let store = keygate_store::connect("sqlite::memory:").await.expect("store");
        store.migrate().await.expect("migrate");
        store
    }

    /// The statuses of `account`'s stored records, newest first.
    async fn statuses(store: &dyn Store, account: AccountId) -> Vec<u16> {
        let page = Page { limit: 100, before: None };
        let listed = store.list_requests(account, &RequestFilter::default(), &page).await.expect("list");
        listed.records.iter().map(|r| r.status).collect()
    }

    /// An account with the given turn.
    fn account_of_turn(turn: u64) -> AccountId {
        std::iter::repeat_with(AccountId::generate).find(|a| phase(*a) == turn).expect("some account")
    }

    #[tokio::test]
    async fn a_full_recorder_drops_the_oldest_records_a_chunk_at_a_time() {
        let store = store().await;
        let account = AccountId::generate();
        let recorder = RequestRecorder::new(RequestLogMode::All, 3);
        for n in 0..5 {
            recorder.record(&record(account, n).as_new());
        }
        assert_eq!(recorder.pending(), 2, "the chunk of the first three was dropped");
        recorder.flush(&*store).await;
        assert_eq!(statuses(&*store, account).await, [4, 3]);
        assert_eq!(recorder.pending(), 0);
    }

    #[tokio::test]
    async fn an_open_chunk_is_written_at_its_accounts_turn_and_a_full_one_at_once() {
        let store = store().await;
        let (early, late) = (account_of_turn(1), account_of_turn(2));
        let recorder = RequestRecorder::default();
        recorder.record(&record(early, 1).as_new());
        recorder.record(&record(late, 2).as_new());
        let taken = recorder.take(Due::Turn(1));
        assert_eq!(taken.iter().map(RequestChunk::account).collect::<Vec<_>>(), [early]);
        assert_eq!(recorder.take(Due::Turn(3)).len(), 0, "not the late account's turn");
        assert_eq!(recorder.take(Due::Turn(12)).iter().map(RequestChunk::account).collect::<Vec<_>>(), [late]);

        // A full chunk is closed, and written at the next flush, whoever's turn it is.
        for n in 0..=MAX_CHUNK_RECORDS {
            recorder.record(&record(late, u16::try_from(n % 500).expect("small")).as_new());
        }
        let taken = recorder.take(Due::Turn(0));
        assert_eq!(taken.iter().map(RequestChunk::len).collect::<Vec<_>>(), [MAX_CHUNK_RECORDS]);
        store.record_requests(&taken).await.expect("write");
        let due = recorder.take(Due::Turn(2));
        assert_eq!(due.iter().map(RequestChunk::len).collect::<Vec<_>>(), [1], "the one after the full chunk");
        store.record_requests(&due).await.expect("write");
        assert_eq!(statuses(&*store, late).await.len(), 100, "a page of the 1,002 records");
    }

    /// A write that fails keeps its chunks, ahead of newer ones, for the next flush; past the
    /// bound the oldest go.
    #[tokio::test]
    async fn a_failed_write_is_retried_and_bounded() {
        use sqlx::Connection as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/log.db", dir.path().display());
        let store = keygate_store::connect(&url).await.expect("store");
        store.migrate().await.expect("migrate");
        let mut sql = sqlx::SqliteConnection::connect(&url).await.expect("connect");
        let account = AccountId::generate();
        let recorder = RequestRecorder::new(RequestLogMode::All, 5);
        for n in 0..3 {
            recorder.record(&record(account, n).as_new());
        }
        sqlx::query("ALTER TABLE request_log_chunks RENAME TO away").execute(&mut sql).await.expect("rename");
        recorder.flush(&*store).await;
        assert_eq!(recorder.pending(), 3, "kept for the next write");
        for n in 3..6 {
            recorder.record(&record(account, n).as_new());
        }
        recorder.flush(&*store).await;
        assert_eq!(recorder.pending(), 3, "the failed chunk of three dropped, past the bound of five");
        sqlx::query("ALTER TABLE away RENAME TO request_log_chunks").execute(&mut sql).await.expect("rename");
        recorder.flush(&*store).await;
        assert_eq!(recorder.pending(), 0);
        assert_eq!(statuses(&*store, account).await, [5, 4, 3]);
    }

    #[tokio::test]
    async fn what_a_flush_writes_is_listed_and_nothing_is_written_twice() {
        let store = store().await;
        let accounts: Vec<AccountId> = (0..TURNS).map(account_of_turn).collect();
        let recorder = Arc::new(RequestRecorder::default());
        for (n, account) in accounts.iter().enumerate() {
            for status in 0..3 {
                recorder.record(&record(*account, u16::try_from(n * 10).expect("small") + status).as_new());
            }
        }
        assert_eq!(recorder.pending(), accounts.len() * 3);
        for turn in 0..TURNS {
            recorder.write_records(&*store, Due::Turn(turn)).await;
        }
        assert_eq!(recorder.pending(), 0);
        recorder.flush(&*store).await;
        for (n, account) in accounts.iter().enumerate() {
            let n = u16::try_from(n * 10).expect("small");
            assert_eq!(statuses(&*store, *account).await, [n + 2, n + 1, n]);
        }
    }

    /// A read of one account writes what is held of it, and leaves other accounts' open chunks
    /// and counts to their turn.
    #[tokio::test]
    async fn a_read_flushes_its_own_account_only() {
        let store = store().await;
        let (a, b) = (AccountId::generate(), AccountId::generate());
        let recorder = RequestRecorder::default();
        let today = time::now().date_naive();
        for account in [a, b] {
            recorder.record(&record(account, 200).as_new());
            recorder.count(Counted { account, key: KeyId::generate(), tenant: None, day: today, outcome: "ok" });
        }
        recorder.flush_account(&*store, a).await;
        assert_eq!(statuses(&*store, a).await, [200]);
        assert_eq!(statuses(&*store, b).await, [] as [u16; 0], "b's chunk waits for its turn");
        assert_eq!(recorder.pending(), 1);
        let usage = |account| {
            let store = Arc::clone(&store);
            async move {
                let rows =
                    store.usage(account, keygate_store::UsageFilter::default(), today, today).await.expect("usage");
                rows.iter().map(|r| r.count).sum::<u64>()
            }
        };
        assert_eq!((usage(a).await, usage(b).await), (1, 0));
        recorder.flush(&*store).await;
        assert_eq!(statuses(&*store, b).await, [200]);
        assert_eq!((usage(a).await, usage(b).await), (1, 1));
        assert_eq!(recorder.pending(), 0);
    }

    #[test]
    fn turns_spread_accounts_evenly() {
        let mut per_turn = [0_u32; TURNS as usize];
        for _ in 0..10_000 {
            per_turn[usize::try_from(phase(AccountId::generate())).expect("small")] += 1;
        }
        assert!(per_turn.iter().all(|&n| (800..1_200).contains(&n)), "{per_turn:?}");
    }

    #[test]
    fn the_mode_says_which_requests_the_log_keeps() {
        let cases = [(200, "ok"), (201, "ok"), (404, "not_found"), (429, "rate_limited"), (502, "ok"), (200, "x")];
        let kept = |mode: RequestLogMode| cases.iter().filter(|(s, o)| mode.keeps(*s, o)).count();
        assert_eq!(kept(RequestLogMode::All), 6);
        assert_eq!(kept(RequestLogMode::Failures), 4, "an upstream's 502 and any error code are failures");
        assert_eq!(kept(RequestLogMode::Off), 0);
    }
}
