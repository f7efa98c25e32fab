//! Follows the store's change log so that writes made by other processes (another node, the
//! CLI) evict this process's cache within a second.
//!
//! Sequence numbers can commit out of order on PostgreSQL (two transactions take 41 and 42;
//! 42 commits first). So the follower does not simply remember the highest seq it saw: it keeps
//! a watermark below which every seq has been applied, re-reads above it, and only gives up on
//! a missing seq (a rolled-back transaction) after [`GAP_TIMEOUT`]. Applying a change twice is
//! harmless: eviction is idempotent.
//!
//! If the change log cannot be read for [`BLIND_AFTER`], the cache is cleared (and again each
//! period after that): a node that cannot see revocations must not keep trusting its memory. In
//! cluster mode it still sees them while the [`ChangeBus`] subscription it had at its last read
//! is still receiving, so it keeps its cache and goes on answering the keys it holds while the
//! database is unreachable; a subscription lost or made anew since may have missed one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_store::Store;
use tokio::sync::watch;

use crate::background::sleep_or_stop;
use crate::bus::ChangeBus;
use crate::cache::Cache;

/// How long a hole in the sequence is waited for before it is taken as a rollback.
pub const GAP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long without a successful read before the cache is cleared.
pub const BLIND_AFTER: Duration = Duration::from_secs(2);
/// The longest one read of the change log may take before it counts as failed: a database that
/// stopped answering (a partition) is noticed in time, whatever the pool's timeouts.
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the follower is in the change log.
#[derive(Debug, Default)]
pub struct Position {
    /// Every seq ≤ this has been applied.
    watermark: i64,
    /// Seqs above the watermark already applied.
    applied: BTreeSet<i64>,
    /// Missing seqs above the watermark, with when they were first noticed.
    gaps: BTreeMap<i64, Instant>,
}

impl Position {
    #[must_use]
    pub fn starting_at(watermark: i64) -> Self {
        Self { watermark, ..Self::default() }
    }

    #[must_use]
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Records the seqs just read (ascending) and advances the watermark. Returns the seqs that
    /// are new, i.e. must be applied.
    pub fn observe(&mut self, seqs: &[i64], now: Instant) -> Vec<i64> {
        let mut fresh = Vec::new();
        for &seq in seqs {
            if seq > self.watermark && self.applied.insert(seq) {
                fresh.push(seq);
                self.gaps.remove(&seq);
            }
        }
        if let Some(&highest) = self.applied.iter().next_back() {
            for missing in (self.watermark + 1)..highest {
                if !self.applied.contains(&missing) {
                    self.gaps.entry(missing).or_insert(now);
                }
            }
        }
        loop {
            let next = self.watermark + 1;
            if self.applied.remove(&next) {
                self.watermark = next;
            } else if self.gaps.get(&next).is_some_and(|since| now.duration_since(*since) >= GAP_TIMEOUT) {
                self.gaps.remove(&next);
                self.watermark = next;
            } else {
                break;
            }
        }
        fresh
    }
}

/// Runs until `stop` turns true, polling every `interval`.
pub async fn follow(
    store: Arc<dyn Store>,
    cache: Arc<Cache>,
    bus: Option<Arc<dyn ChangeBus>>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut position = loop {
        match store.latest_change().await {
            Ok(seq) => {
                cache.start_following();
                break Position::starting_at(seq);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the change log yet");
                if sleep_or_stop(&mut stop, interval).await {
                    return;
                }
            }
        }
    };
    let mut last_success = Instant::now();
    let mut last_clear = Instant::now();
    // The bus's subscription at the last successful read: while it is still the one receiving,
    // every eviction since that read has arrived.
    let subscription = || bus.as_ref().and_then(|bus| bus.subscription());
    let mut heard_through = subscription();
    loop {
        if sleep_or_stop(&mut stop, interval).await {
            return;
        }
        cache.tidy();
        let read = tokio::time::timeout(READ_TIMEOUT, store.changes_since(position.watermark(), 1000)).await;
        let read = match read {
            Ok(read) => read.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {READ_TIMEOUT:?}")),
        };
        match read {
            Ok(changes) => {
                let now = Instant::now();
                let seqs: Vec<i64> = changes.iter().map(|c| c.seq).collect();
                let fresh = position.observe(&seqs, now);
                for change in changes.iter().filter(|c| fresh.contains(&c.seq)) {
                    cache.apply(change);
                }
                last_success = now;
                heard_through = subscription();
            }
            Err(e) => {
                metrics::counter!("keygate_store_errors_total", "backend" => store.backend()).increment(1);
                tracing::warn!(error = %e, "cannot read the change log");
                let blind = heard_through.is_none() || subscription() != heard_through;
                if blind && last_success.elapsed() >= BLIND_AFTER && last_clear.elapsed() >= BLIND_AFTER {
                    tracing::warn!(
                        "change log unreadable for {BLIND_AFTER:?} and no change bus: clearing the credential cache"
                    );
                    cache.clear();
                    last_clear = Instant::now();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_changes_advance_the_watermark() {
        let mut p = Position::starting_at(10);
        let t = Instant::now();
        assert_eq!(p.observe(&[11, 12, 13], t), vec![11, 12, 13]);
        assert_eq!(p.watermark(), 13);
        assert_eq!(p.observe(&[], t), Vec::<i64>::new());
    }

    #[test]
    fn a_late_commit_below_a_seen_seq_is_still_applied() {
        let mut p = Position::starting_at(10);
        let t = Instant::now();
        assert_eq!(p.observe(&[12], t), vec![12]);
        assert_eq!(p.watermark(), 10, "11 may still commit");
        // Next poll re-reads above the watermark: 11 arrived, 12 is not applied twice.
        assert_eq!(p.observe(&[11, 12], t), vec![11]);
        assert_eq!(p.watermark(), 12);
    }

    #[test]
    fn a_rolled_back_seq_is_given_up_after_the_timeout() {
        let mut p = Position::starting_at(10);
        let t = Instant::now();
        p.observe(&[12, 13], t);
        assert_eq!(p.watermark(), 10);
        p.observe(&[12, 13], t + GAP_TIMEOUT / 2);
        assert_eq!(p.watermark(), 10);
        assert_eq!(p.observe(&[12, 13], t + GAP_TIMEOUT), Vec::<i64>::new());
        assert_eq!(p.watermark(), 13);
    }
}
