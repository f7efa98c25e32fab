//! `last_used_at` / `last_used_ip`, recorded off the hot path.
//!
//! A request only writes into an in-memory map (the latest use per key wins); a background task
//! flushes the map to the store every [`FLUSH_INTERVAL`], so the stored values are at most that
//! stale (SPEC: ≤ 5 s). A failed flush puts its batch back, to be retried with the next one.
//! [`UsageRecorder::flush`] is also called at shutdown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_domain::{KeyId, time};
use keygate_store::{KeyUsage, Store};
use tokio::sync::watch;

use crate::background::sleep_or_stop;

pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<KeyId, KeyUsage>>,
}

impl UsageRecorder {
    /// Notes that `key` was used now from `ip`. Cheap: one uncontended lock and a map insert.
    pub fn record(&self, key: KeyId, ip: IpAddr) {
        let usage = KeyUsage { key_id: key, at: time::now(), ip };
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(key, usage);
        }
    }

    /// Writes everything pending.
    pub async fn flush(&self, store: &dyn Store) {
        let batch: Vec<KeyUsage> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().map(|(_, u)| u).collect(),
            Err(_) => return,
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.record_key_usage(&batch).await {
            metrics::counter!("keygate_store_errors_total", "backend" => store.backend()).increment(1);
            tracing::warn!(error = %e, keys = batch.len(), "could not record key usage; will retry");
            if let Ok(mut pending) = self.pending.lock() {
                for u in batch {
                    // A newer use recorded meanwhile wins.
                    pending.entry(u.key_id).or_insert(u);
                }
            }
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
