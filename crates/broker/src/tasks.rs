//! The broker's background work: housekeeping (retention, `flush.ms`, `segment.ms`,
//! group sessions), offload and remote retention, removal of deleted topics' objects,
//! compaction, group offset snapshots and the `flush.ms` timers. [`Background::start`]
//! spawns them; [`Background::stop`] ends them and waits, so none outlives the broker.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;

/// How long the last copy of the group offsets may take at shutdown.
const FINAL_SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

/// The broker's running background tasks.
pub struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    flusher: tokio::task::JoinHandle<()>,
    broker: Arc<Broker>,
}

impl Background {
    /// Spawns every background task of `broker`.
    pub fn start(broker: &Arc<Broker>) -> Self {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let tasks = vec![
            tokio::spawn(housekeeping(broker.clone(), rx.clone())),
            tokio::spawn(tiering(broker.clone(), rx.clone())),
            tokio::spawn(deletions(broker.clone(), rx.clone())),
            tokio::spawn(cleaner(broker.clone(), rx.clone())),
            tokio::spawn(group_offset_snapshots(broker.clone(), rx.clone())),
        ];
        let flusher = tokio::spawn({
            let b = broker.clone();
            async move { b.run_flusher(rx).await }
        });
        Self {
            stop,
            tasks,
            flusher,
            broker: broker.clone(),
        }
    }

    /// A receiver that sees `true` once [`Background::stop`] begins.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Stops every task and waits for it; copies the group offsets to the bucket one
    /// last time (bounded: the store may be away); then runs the `flush.ms` timers out.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        match tokio::time::timeout(FINAL_SNAPSHOT_WAIT, self.broker.snapshot_group_offsets()).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "group offsets were not copied to the object store at shutdown")
            }
            Err(_) => {
                tracing::warn!(
                    "group offsets were not copied to the object store at shutdown: it did not answer in time"
                )
            }
        }
        let _ = self.flusher.await;
    }
}

/// A ticker every `ms`, which after a slow round waits a whole interval again.
fn ticker(ms: u64) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(Duration::from_millis(ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Runs `round` every `ms` until `stop`; a round in progress is abandoned at shutdown.
async fn every<F, Fut>(
    broker: Arc<Broker>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    ms: u64,
    mut round: F,
) where
    F: FnMut(Arc<Broker>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = ticker(ms);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = round(broker.clone()) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Retention, flush.ms, segment.ms and group sessions (blocking file work).
async fn housekeeping(broker: Arc<Broker>, stop: tokio::sync::watch::Receiver<bool>) {
    let ms = broker.config().housekeeping_interval_ms;
    every(broker, stop, ms, |b| async move {
        let _ = tokio::task::spawn_blocking(move || b.housekeeping()).await;
    })
    .await
}

/// Copies the committed group offsets to the bucket when they changed.
async fn group_offset_snapshots(broker: Arc<Broker>, stop: tokio::sync::watch::Receiver<bool>) {
    let ms = broker.config().offsets_snapshot_interval_ms;
    if ms == 0 {
        return;
    }
    every(broker, stop, ms, |b| async move {
        if let Err(e) = b.snapshot_group_offsets().await {
            tracing::warn!(error = %e, "could not copy group offsets to the object store; retrying");
        }
    })
    .await
}

/// Log compaction: one pass at a time over the compacted partitions (Kafka's single
/// cleaner thread), on a blocking thread; produce and fetch wait only for each swap.
///
/// A pass under way is not abandoned at shutdown: it stops at its next segment (it
/// watches the broker's shutdown) and is awaited, so no pass outlives the broker.
async fn cleaner(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = ticker(broker.config().housekeeping_interval_ms);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.compact_logs()).await;
    }
}

/// Offload and remote retention; runs beside produce, never in its way. Every
/// housekeeping interval each partition not already in a round starts one, so a
/// partition working through a long backlog holds back no other; rounds under way are
/// abandoned at shutdown.
async fn tiering(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    use futures::StreamExt;
    let mut tick = ticker(broker.config().housekeeping_interval_ms);
    let mut rounds = futures::stream::FuturesUnordered::new();
    let mut busy = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for work in broker.tier_work_list() {
                    let key = Arc::as_ptr(&work.partition) as usize;
                    if busy.insert(key) {
                        let b = broker.clone();
                        rounds.push(async move {
                            b.tier_partition(&work).await;
                            key
                        });
                    }
                }
            }
            Some(key) = rounds.next(), if !rounds.is_empty() => {
                busy.remove(&key);
            }
            _ = stop.changed() => return,
        }
    }
}

/// Removes deleted topics' objects: at once when a topic is deleted, then every
/// housekeeping interval while any removal waits for its retry. A removal under way is
/// abandoned at shutdown and redone at the next start (its tombstone stays).
async fn deletions(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = ticker(broker.config().housekeeping_interval_ms);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = broker.deletion_requested() => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = broker.run_deletions() => {}
            _ = stop.changed() => return,
        }
    }
}
