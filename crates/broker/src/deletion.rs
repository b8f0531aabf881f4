//! Topic deletion: durable at once, finished later.
//!
//! Deleting a topic writes a tombstone, `<data-dir>/tombstones/<topic_id>.json` (fsynced
//! with its directory), before the topic leaves the local disk and before the delete is
//! answered. Removing the topic's objects from the bucket is this module's background
//! work ([`Deletions::run_due`]): it is retried with backoff (1 s to 60 s) until the
//! incarnation's prefix `topics/<name>/topic_id=<id>/` is empty, through any object-store
//! outage and any number of restarts; only then does the tombstone go.
//!
//! Invariants:
//! - A topic id with a tombstone is never loaded from the data directory nor rebuilt from
//!   the bucket: a deleted incarnation never comes back.
//! - Before the first object of an incarnation is removed, a `_deleted` marker is put in
//!   its prefix, and it is the last key removed. A broker rebuilt from the bucket alone
//!   (a new disk) therefore sees a half-removed incarnation as deleted, takes over its
//!   tombstone and finishes the removal.
//! - The name is free as soon as the delete is answered: a new topic of that name has a
//!   new id, hence a prefix of its own that removal never touches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use strata_tier::store::Bucket;

use crate::broker::{sync_dir, write_json_atomic};
use crate::error::{BrokerError, Result};

/// The key, inside an incarnation's prefix, that marks it deleted.
pub const DELETED_MARKER: &str = "_deleted";

/// What is recorded of a deleted topic incarnation until its objects are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub topic: String,
    pub topic_id: String,
    /// When the delete was answered (broker clock, ms).
    pub deleted_ms: i64,
}

/// A deletion not finished yet, as `topic list`, describe and metrics show it.
#[derive(Debug, Clone)]
pub struct PendingDeletion {
    pub tombstone: Tombstone,
    /// Why the last attempt to remove the objects failed, if it did.
    pub last_error: Option<String>,
    pub attempts: u32,
}

struct Entry {
    pending: PendingDeletion,
    retry_at_ms: i64,
    /// False while the deleting request still waits for uploads under way: removal
    /// starting before them could miss an object they are about to write.
    started: bool,
}

/// The tombstones of this broker and the background removal of their objects.
pub struct Deletions {
    dir: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// One removal pass at a time.
    running: tokio::sync::Mutex<()>,
    /// Woken when a tombstone is recorded, so removal starts at once.
    pub(crate) wake: tokio::sync::Notify,
}

impl Deletions {
    /// Opens `<data_dir>/tombstones`, loading every tombstone a previous run left.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("tombstones");
        std::fs::create_dir_all(&dir)
            .map_err(|e| BrokerError::io(format!("creating {}", dir.display()), e))?;
        let mut entries = BTreeMap::new();
        let listing = std::fs::read_dir(&dir)
            .map_err(|e| BrokerError::io(format!("listing {}", dir.display()), e))?;
        for entry in listing {
            let entry =
                entry.map_err(|e| BrokerError::io(format!("listing {}", dir.display()), e))?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                // A tombstone whose write a crash cut short: its delete was never answered.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read(&path)
                .map_err(|e| BrokerError::io(format!("reading {}", path.display()), e))?;
            let t: Tombstone = serde_json::from_slice(&text).map_err(|e| {
                BrokerError::InvalidConfig(format!(
                    "{} is not a valid tombstone: {e}; it records a deleted topic, so move it away only if you know that topic's objects are gone from the bucket",
                    path.display()
                ))
            })?;
            entries.insert(t.topic_id.clone(), new_entry(t));
        }
        if !entries.is_empty() {
            tracing::info!(
                pending = entries.len(),
                "topic deletions to finish in the object store"
            );
        }
        Ok(Self {
            dir,
            entries: Mutex::new(entries),
            running: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Records a deletion durably (the tombstone file and its directory are fsynced).
    /// Blocking file I/O. Recording one already recorded is a no-op.
    pub fn record(&self, t: Tombstone) -> Result<()> {
        if self.is_deleted(&t.topic_id) {
            return Ok(());
        }
        write_json_atomic(&self.path(&t.topic_id), &t)?;
        let mut e = new_entry(t);
        e.started = false;
        self.entries
            .lock()
            .insert(e.pending.tombstone.topic_id.clone(), e);
        Ok(())
    }

    /// Lets removal of a recorded deletion's objects begin, and begins it.
    pub fn start(&self, topic_id: &str) {
        self.start_at(topic_id, i64::MIN);
    }

    /// Lets removal begin at `at_ms` (broker clock) or later.
    fn start_at(&self, topic_id: &str, at_ms: i64) {
        if let Some(e) = self.entries.lock().get_mut(topic_id) {
            e.started = true;
            e.retry_at_ms = at_ms;
        }
        self.wake.notify_one();
    }

    /// Whether the incarnation with this id is deleted (its objects may remain).
    pub fn is_deleted(&self, topic_id: &str) -> bool {
        self.entries.lock().contains_key(topic_id)
    }

    /// Deletions whose objects are not all removed yet, oldest first.
    pub fn pending(&self) -> Vec<PendingDeletion> {
        let mut out: Vec<_> = self
            .entries
            .lock()
            .values()
            .map(|e| e.pending.clone())
            .collect();
        out.sort_by_key(|p| p.tombstone.deleted_ms);
        out
    }

    /// Tries once to remove the objects of every deletion that is due (all of them when
    /// `force`), and drops the tombstones of those finished. Returns how many remain.
    pub async fn run_due(&self, bucket: &Bucket, now_ms: i64, force: bool) -> usize {
        let _one = self.running.lock().await;
        let due: Vec<Tombstone> = self
            .entries
            .lock()
            .values()
            .filter(|e| e.started && (force || e.retry_at_ms <= now_ms))
            .map(|e| e.pending.tombstone.clone())
            .collect();
        for t in due {
            match remove_objects(bucket, &t).await {
                Ok(n) => match self.finished(&t.topic_id) {
                    Ok(()) => {
                        tracing::info!(topic = %t.topic, topic_id = %t.topic_id, objects = n,
                            "deleted the topic's objects; deletion finished");
                    }
                    Err(e) => self.failed(&t, now_ms, e.to_string()),
                },
                Err(e) => self.failed(&t, now_ms, e),
            }
        }
        self.entries.lock().len()
    }

    fn failed(&self, t: &Tombstone, now_ms: i64, error: String) {
        let mut entries = self.entries.lock();
        let Some(e) = entries.get_mut(&t.topic_id) else {
            return;
        };
        e.pending.attempts += 1;
        let backoff = (1000i64 << e.pending.attempts.min(6)).min(60_000);
        e.retry_at_ms = now_ms + backoff;
        tracing::warn!(topic = %t.topic, topic_id = %t.topic_id, error = %error, retry_in_ms = backoff,
            "could not remove a deleted topic's objects; will retry");
        e.pending.last_error = Some(error);
    }

    fn finished(&self, topic_id: &str) -> Result<()> {
        let path = self.path(topic_id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BrokerError::io(format!("removing {}", path.display()), e)),
        }
        sync_dir(&self.dir)?;
        self.entries.lock().remove(topic_id);
        Ok(())
    }

    fn path(&self, topic_id: &str) -> PathBuf {
        self.dir.join(format!("{topic_id}.json"))
    }
}

/// Starts a recorded deletion's removal when [`StartOnDrop::now`] is called, or, if the
/// deleting request is dropped before that, a minute after it was dropped.
pub(crate) struct StartOnDrop<'a> {
    deletions: &'a Deletions,
    topic_id: String,
    clock: &'a dyn strata_log::Clock,
    pending: bool,
}

impl<'a> StartOnDrop<'a> {
    pub(crate) fn new(
        deletions: &'a Deletions,
        topic_id: &str,
        clock: &'a dyn strata_log::Clock,
    ) -> Self {
        Self {
            deletions,
            topic_id: topic_id.to_string(),
            clock,
            pending: true,
        }
    }

    pub(crate) fn now(&mut self) {
        self.pending = false;
        self.deletions.start(&self.topic_id);
    }
}

impl Drop for StartOnDrop<'_> {
    fn drop(&mut self) {
        if self.pending {
            let at = self.clock.now_ms() + 60_000;
            self.deletions.start_at(&self.topic_id, at);
        }
    }
}

fn new_entry(t: Tombstone) -> Entry {
    Entry {
        pending: PendingDeletion {
            tombstone: t,
            last_error: None,
            attempts: 0,
        },
        retry_at_ms: i64::MIN,
        started: true,
    }
}

/// Removes every object of one incarnation: the marker first, then the data, then the
/// marker. Returns how many objects went; an error leaves the marker for the retry.
async fn remove_objects(bucket: &Bucket, t: &Tombstone) -> std::result::Result<usize, String> {
    let dir = bucket.topic_dir(&t.topic, &t.topic_id);
    let marker = dir.clone().join(DELETED_MARKER);
    let body = serde_json::to_vec_pretty(t).expect("tombstone serializes");
    bucket
        .store
        .put(&marker, PutPayload::from(body))
        .await
        .map_err(|e| format!("marking {dir} deleted: {e}"))?;
    strata_failpoint::crash_at("topic-delete-after-marker", || t.topic.clone());
    let mut removed = 0;
    // Twice at most: a second listing proves the first one's deletes all took.
    for _ in 0..2 {
        let keys = bucket
            .list_keys(&dir)
            .await
            .map_err(|e| format!("listing {dir}: {e}"))?;
        let keys: Vec<_> = keys.into_iter().filter(|k| *k != marker).collect();
        if keys.is_empty() {
            return match bucket.delete_if_present(&marker).await {
                Ok(()) => Ok(removed),
                Err(e) => Err(format!("removing {marker}: {e}")),
            };
        }
        let n = keys.len();
        let mut results = bucket
            .store
            .delete_stream(futures::stream::iter(keys.into_iter().map(Ok)).boxed());
        while let Some(r) = results.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(format!("deleting an object under {dir}: {e}")),
            }
        }
        removed += n;
    }
    Err(format!(
        "objects keep appearing under {dir} after they were deleted"
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    use bytes::Bytes;
    use strata_log::ManualClock;

    use crate::broker::{Broker, PlainRecord};
    use crate::config::BrokerConfig;

    /// A broker on an in-memory bucket whose topic `t` has three sealed segments in it.
    async fn offloaded(dir: &Path, clock: Arc<ManualClock>) -> Arc<Broker> {
        let config = BrokerConfig {
            data_dir: dir.to_path_buf(),
            object_store: "memory://".into(),
            cold_cache_memory_bytes: 0,
            cold_cache_disk_bytes: 0,
            ..BrokerConfig::default()
        };
        let b = Broker::open(config, clock).await.unwrap();
        let configs = BTreeMap::from([("segment.bytes".to_string(), (4 << 10).to_string())]);
        b.create_topic("t", 1, 1, configs).await.unwrap();
        let p = b.partition("t", 0).unwrap();
        let record = PlainRecord {
            key: None,
            value: Some(Bytes::from(vec![7u8; 1000])),
            timestamp_ms: 1,
            headers: Vec::new(),
        };
        while p.log_read().segments().len() <= 3 {
            b.produce(
                "t",
                0,
                Bytes::new(),
                std::slice::from_ref(&record),
                Default::default(),
            )
            .await
            .unwrap();
        }
        b.tier_tick().await;
        b
    }

    #[tokio::test]
    async fn a_delete_dropped_while_it_waits_for_an_upload_removes_the_objects_a_minute_later() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let b = offloaded(dir.path(), clock.clone()).await;
        let id = b.topic("t").unwrap().meta().id;
        let prefix = b.shared.bucket.topic_dir("t", &id);
        let objects = || async { b.shared.bucket.list_keys(&prefix).await.unwrap() };
        let before = objects().await;
        assert_eq!(
            before
                .iter()
                .filter(|k| k.as_ref().ends_with(".parquet"))
                .count(),
            3,
            "{before:?}"
        );

        // An upload under way, which the delete waits for; the client gives up meanwhile.
        let p = b.partition("t", 0).unwrap();
        let upload = p.tier.work.lock().await;
        let mut delete = Box::pin(b.delete_topic("t"));
        assert!(
            futures::poll!(&mut delete).is_pending(),
            "the delete waits for the upload"
        );
        drop(delete);
        drop(upload);
        assert!(
            b.list_topics().iter().all(|t| t.name != "t"),
            "the topic is deleted all the same"
        );
        let pending = b.pending_deletions();
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0].tombstone.topic_id, id);

        // Not at once: an upload the dropped request no longer waits for may still land.
        assert_eq!(b.run_deletions().await, 1);
        clock.advance(59_999);
        assert_eq!(b.run_deletions().await, 1);
        assert_eq!(objects().await, before, "nothing removed within the minute");

        // A minute after the drop, the deletion round removes them.
        clock.advance(1);
        assert_eq!(b.run_deletions().await, 0, "{:?}", b.pending_deletions());
        let left = objects().await;
        assert!(left.is_empty(), "orphaned objects: {left:?}");
        assert!(b.pending_deletions().is_empty());
        let tombstones: Vec<_> = std::fs::read_dir(dir.path().join("tombstones"))
            .unwrap()
            .collect();
        assert!(tombstones.is_empty(), "{tombstones:?}");
    }
}
