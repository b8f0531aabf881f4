//! `flush.ms`: each partition is fsynced `flush.ms` after the first append that made it
//! unflushed, by a timer of its own, not at the next housekeeping tick.
//!
//! Appends report when they make a log unflushed ([`strata_log::AppendInfo`]); the
//! partition is then queued here by due time. One task ([`Flusher::run`]) sleeps until
//! the earliest is due and fsyncs it on a blocking thread. A queued partition holds only
//! a weak reference, so deleting a topic needs nothing from here. A partition is queued
//! at most once at a time (a flag on the partition), so the cost on produce is one
//! atomic swap per append and one map insert per fsync.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::partition::Partition;

/// Partitions waiting for their `flush.ms` fsync, by due time.
#[derive(Default)]
pub struct Flusher {
    due: Mutex<BTreeMap<(Instant, u64), Weak<Partition>>>,
    seq: std::sync::atomic::AtomicU64,
    wake: tokio::sync::Notify,
}

impl Flusher {
    /// Queues `p` for an fsync `after_ms` from now, unless it is queued already (the
    /// fsync then due covers this append too).
    pub(crate) fn schedule(&self, p: &Arc<Partition>, after_ms: i64) {
        if p.flush_queued
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let at = Instant::now() + Duration::from_millis(after_ms.max(0) as u64);
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut due = self.due.lock();
        let earliest = due.keys().next().is_none_or(|&(first, _)| at < first);
        due.insert((at, seq), Arc::downgrade(p));
        drop(due);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// fsyncs each queued partition when it is due, until `stop` changes.
    pub async fn run(&self, metrics: Arc<Metrics>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let next = self.due.lock().keys().next().copied();
            match next {
                Some((at, _)) if at <= Instant::now() => {
                    let Some(p) = self.due.lock().remove(&next.expect("peeked")) else {
                        continue;
                    };
                    let Some(p) = p.upgrade() else { continue };
                    // Cleared before the fsync: an append after it queues the next one.
                    p.flush_queued
                        .store(false, std::sync::atomic::Ordering::Release);
                    let metrics = metrics.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        if p.is_deleted() {
                            return;
                        }
                        match p.flush_log() {
                            Ok(true) => metrics.log_timed_flushes.add(1),
                            Ok(false) => {}
                            Err(e) => {
                                tracing::error!(topic = %p.topic, partition = p.id, error = %e, "flush.ms fsync failed")
                            }
                        }
                    })
                    .await;
                }
                Some((at, _)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.wake.notified() => {}
                        _ = stop.changed() => return,
                    }
                }
                None => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }
}
