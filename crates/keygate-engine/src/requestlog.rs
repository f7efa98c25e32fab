//! What is kept of a finished request (SPEC §8): its count in the usage counters, always, and its
//! record in the request log, as the operator's [`RequestLogMode`] says. Both off the hot path.
//!
//! A request only adds one to an in-memory counter and, when the log keeps it, appends its
//! [`RequestRecord`] to an in-memory queue. A background task writes the queue to the store
//! every [`FLUSH_INTERVAL`] and the counters every [`COUNT_FLUSH_INTERVAL`], each in one batch.
//! A failed write puts its batch back (records in front, counts added), to be retried with the
//! next one. [`RequestRecorder::flush`] writes both at once: before usage or the log is read (so
//! the request made a moment ago counts) and at shutdown (so nothing acknowledged is lost);
//! flushes never overlap, so a read never misses a batch another flush has taken but not yet
//! written.
//!
//! The counters are exact: every counted request is written once. Memory holds one entry per
//! key, tenant, day and outcome seen since the last write. The log queue is bounded
//! ([`MAX_PENDING`]): when the store cannot keep up, the oldest records are dropped and counted in
//! `keygate_request_log_dropped_total`, so a request never waits and memory never grows without
//! limit; the counters are not dropped.
//!
//! Only authenticated requests are kept (both are read per account and per key), and a record
//! holds ids, the route template and the outcome: never a credential, header or body.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use keygate_domain::{AccountId, KeyId, TenantId};
use keygate_store::{RequestRecord, Store, UsageCount};
use tokio::sync::watch;

use crate::background::sleep_or_stop;
use crate::settings::RequestLogMode;

/// Short, so the store's work comes in small pieces: under load, one flush a second made a
/// burst long enough to show in the request latency's 99th percentile.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// How often the usage counters are written: one upsert per key, tenant, day and outcome seen
/// meanwhile, however many requests they count.
pub const COUNT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// The most records kept in memory while the store is slow or down.
pub const MAX_PENDING: usize = 100_000;

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

pub struct RequestRecorder {
    mode: RequestLogMode,
    pending: Mutex<VecDeque<RequestRecord>>,
    counts: Mutex<HashMap<Counted, u64>>,
    max_pending: usize,
    /// Held by a flush from taking its batches until they are written or put back.
    flushing: tokio::sync::Mutex<()>,
}

impl Default for RequestRecorder {
    fn default() -> Self {
        Self::new(RequestLogMode::All, MAX_PENDING)
    }
}

impl RequestRecorder {
    /// A recorder whose log keeps what `mode` says, at most `max_pending` records in memory.
    #[must_use]
    pub fn new(mode: RequestLogMode, max_pending: usize) -> Self {
        Self {
            mode,
            pending: Mutex::new(VecDeque::new()),
            counts: Mutex::new(HashMap::new()),
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
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(counted).or_default() += 1;
        }
    }

    /// Queues one record. Cheap: one uncontended lock and a push; never waits for the store.
    pub fn record(&self, record: RequestRecord) {
        let dropped = match self.pending.lock() {
            Ok(mut pending) => {
                pending.push_back(record);
                trim(&mut pending, self.max_pending)
            }
            Err(_) => 1,
        };
        count_dropped(dropped);
    }

    /// How many records wait to be written.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or_default()
    }

    /// Writes every pending record and count, after any flush already under way.
    pub async fn flush(&self, store: &dyn Store) {
        let _flushing = self.flushing.lock().await;
        self.write_records(store).await;
        self.write_counts(store).await;
    }

    async fn write_records(&self, store: &dyn Store) {
        // Taken whole, not drained: the lock is held for a pointer swap, never for a copy of a
        // second's worth of records that every request would wait on.
        let batch: Vec<RequestRecord> = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return,
        }
        .into();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.record_requests(&batch).await {
            store_failed(store, &e, "could not write the request log; will retry", batch.len());
            let dropped = match self.pending.lock() {
                Ok(mut pending) => {
                    // The failed batch is older than anything queued meanwhile: it goes first.
                    let newer = std::mem::take(&mut *pending);
                    pending.extend(batch);
                    pending.extend(newer);
                    trim(&mut pending, self.max_pending)
                }
                Err(_) => batch.len(),
            };
            count_dropped(dropped);
        }
    }

    async fn write_counts(&self, store: &dyn Store) {
        let taken = match self.counts.lock() {
            Ok(mut counts) => std::mem::take(&mut *counts),
            Err(_) => return,
        };
        if taken.is_empty() {
            return;
        }
        let batch: Vec<UsageCount> = taken
            .iter()
            .map(|(c, &count)| UsageCount {
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
            if let Ok(mut counts) = self.counts.lock() {
                for (counted, n) in taken {
                    *counts.entry(counted).or_default() += n;
                }
            }
        }
    }

    /// Writes the log every [`FLUSH_INTERVAL`] and the counters every [`COUNT_FLUSH_INTERVAL`]
    /// until `stop`, then both once more.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
        let every = (COUNT_FLUSH_INTERVAL.as_millis() / FLUSH_INTERVAL.as_millis()).max(1);
        let mut tick: u128 = 0;
        while !sleep_or_stop(&mut stop, FLUSH_INTERVAL).await {
            tick += 1;
            let _flushing = self.flushing.lock().await;
            self.write_records(&*store).await;
            if tick.is_multiple_of(every) {
                self.write_counts(&*store).await;
            }
        }
        self.flush(&*store).await;
    }
}

fn store_failed(store: &dyn Store, error: &keygate_store::StoreError, what: &'static str, items: usize) {
    metrics::counter!("keygate_store_errors_total", "backend" => store.backend()).increment(1);
    tracing::warn!(error = %error, items, "{what}");
}

/// Drops the oldest records beyond `max`; returns how many.
fn trim(pending: &mut VecDeque<RequestRecord>, max: usize) -> usize {
    let excess = pending.len().saturating_sub(max);
    pending.drain(..excess);
    excess
}

fn count_dropped(dropped: usize) {
    if dropped > 0 {
        metrics::counter!("keygate_request_log_dropped_total").increment(dropped as u64);
    }
}

#[cfg(test)]
mod tests {
    use keygate_domain::{AccountId, time};

    use super::*;

    fn record(n: u16) -> RequestRecord {
        RequestRecord {
            id: RequestRecord::generate_id(),
            request_id: format!("req_{n}"),
            at: time::now(),
            account_id: AccountId::generate(),
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

    #[test]
    fn a_full_queue_drops_the_oldest_records() {
        let recorder = RequestRecorder::new(RequestLogMode::All, 3);
        for n in 0..5 {
            recorder.record(record(n));
        }
        let pending = recorder.pending.lock().expect("not poisoned");
        let statuses: Vec<u16> = pending.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [2, 3, 4]);
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
