//! The request log, recorded off the hot path (SPEC §8 `/usage`).
//!
//! A request only appends its [`RequestRecord`] to an in-memory queue; a background task writes
//! the queue to the store every [`FLUSH_INTERVAL`] in one batch. A failed flush puts its batch
//! back in front, to be retried with the next one. The queue is bounded ([`MAX_PENDING`]): when
//! the store cannot keep up, the oldest records are dropped and counted in
//! `keygate_request_log_dropped_total`, so a request never waits and memory never grows without
//! limit. [`RequestRecorder::flush`] is also called at shutdown.
//!
//! Only authenticated requests are recorded (the log is read per account and per key), and a
//! record holds ids, the route template and the outcome: never a credential, header or body.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_store::{RequestRecord, Store};
use tokio::sync::watch;

use crate::background::sleep_or_stop;

/// Short, so the store's work comes in small pieces: under load, one flush a second made a
/// burst long enough to show in the request latency's 99th percentile.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// The most records kept in memory while the store is slow or down.
pub const MAX_PENDING: usize = 100_000;

pub struct RequestRecorder {
    pending: Mutex<VecDeque<RequestRecord>>,
    max_pending: usize,
}

impl Default for RequestRecorder {
    fn default() -> Self {
        Self::with_capacity(MAX_PENDING)
    }
}

impl RequestRecorder {
    /// A recorder keeping at most `max_pending` records in memory.
    #[must_use]
    pub fn with_capacity(max_pending: usize) -> Self {
        Self { pending: Mutex::new(VecDeque::new()), max_pending: max_pending.max(1) }
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

    /// Writes everything pending.
    pub async fn flush(&self, store: &dyn Store) {
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
            metrics::counter!("keygate_store_errors_total", "backend" => store.backend()).increment(1);
            tracing::warn!(error = %e, records = batch.len(), "could not write the request log; will retry");
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

    /// Flushes every [`FLUSH_INTERVAL`] until `stop`, then once more.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
        while !sleep_or_stop(&mut stop, FLUSH_INTERVAL).await {
            self.flush(&*store).await;
        }
        self.flush(&*store).await;
    }
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
        let recorder = RequestRecorder::with_capacity(3);
        for n in 0..5 {
            recorder.record(record(n));
        }
        let pending = recorder.pending.lock().expect("not poisoned");
        let statuses: Vec<u16> = pending.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [2, 3, 4]);
    }
}
