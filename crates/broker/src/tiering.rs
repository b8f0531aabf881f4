//! The broker's side of the cold tier: opening the bucket, loading manifests at start,
//! rebuilding topics from the bucket alone, storing topic metadata there, and running
//! each partition's offload round (the round itself is `strata_partition::tier`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use object_store::{ObjectStoreExt, PutPayload};
use strata_tier::manifest::Manifest;
use strata_tier::store::Bucket;

use crate::broker::{Broker, Partition, TopicMeta};
use crate::error::{BrokerError, Result};

/// One partition's share of a tiering round (see [`Broker::tier_work_list`]).
pub struct TierWork {
    pub partition: Arc<Partition>,
    retention: (i64, i64),
    /// The topic, when its metadata is to be stored in the bucket first.
    store_meta: Option<Arc<crate::broker::Topic>>,
}

/// Opens the object store and checks that it answers, so a wrong endpoint, wrong
/// credentials or a missing bucket stop the broker at start-up with a clear error.
pub async fn open_bucket(
    url: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<Bucket> {
    let bucket = strata_tier::store::open_with(url, options)
        .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
    // A key of its own: brokers sharing the store probe it side by side at start-up.
    let probe = bucket
        .prefix
        .clone()
        .join(format!(".strata-probe-{}", crate::broker::new_topic_id()));
    let check = async {
        // Listing fails on a missing bucket even where writes to it would be accepted.
        bucket
            .store
            .list_with_delimiter(Some(&bucket.prefix))
            .await?;
        bucket
            .store
            .put(&probe, PutPayload::from_static(b"ok"))
            .await?;
        bucket.store.get(&probe).await?.bytes().await?;
        bucket.store.delete(&probe).await
    };
    match tokio::time::timeout(Duration::from_secs(20), check).await {
        Ok(Ok(())) => Ok(bucket),
        Ok(Err(e)) => Err(BrokerError::InvalidConfig(format!(
            "object store {url} does not work: {e}; check the bucket exists and the AWS_* endpoint, region and credentials"
        ))),
        Err(_) => Err(BrokerError::InvalidConfig(format!(
            "object store {url} did not answer within 20 s; check AWS_ENDPOINT and that the server is reachable"
        ))),
    }
}

/// `<prefix>/topics/<topic>/topic_id=<id>/_topic.json`: the topic's metadata.
fn meta_key(bucket: &Bucket, topic: &str, topic_id: &str) -> object_store::path::Path {
    bucket.topic_dir(topic, topic_id).join("_topic.json")
}

impl Broker {
    /// Every metric in the Prometheus text format, object-store requests included.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write;
        let mut out = self.metrics().render();
        let c = &self.shared.bucket.counters;
        let rows = [
            (
                "strata_s3_get_requests_total",
                "Object store GET requests (range reads included).",
                &c.get_requests,
            ),
            (
                "strata_s3_get_bytes_total",
                "Bytes returned by object store GETs.",
                &c.get_bytes,
            ),
            (
                "strata_s3_put_requests_total",
                "Object store PUT, multipart and copy requests.",
                &c.put_requests,
            ),
            (
                "strata_s3_put_bytes_total",
                "Bytes sent in single-request object store PUTs.",
                &c.put_bytes,
            ),
            (
                "strata_s3_delete_requests_total",
                "Object store delete requests.",
                &c.delete_requests,
            ),
            (
                "strata_s3_list_requests_total",
                "Object store list requests.",
                &c.list_requests,
            ),
        ];
        for (name, help, v) in rows {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        // Replication, from the partitions this broker leads.
        let lag = "strata_replica_lag_records";
        let under = "strata_under_replicated_partitions";
        let _ = writeln!(
            out,
            "# HELP {lag} Records a follower is behind its leader's log end, as of its last fetch (on the leader).\n# TYPE {lag} gauge"
        );
        let mut under_replicated = 0;
        for t in self.topics.read().values() {
            for p in t.partitions() {
                under_replicated += p.is_under_replicated() as u32;
                for (replica, records) in p.follower_lags() {
                    let _ = writeln!(
                        out,
                        "{lag}{{topic=\"{}\",partition=\"{}\",replica=\"{replica}\"}} {records}",
                        p.topic, p.id
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP {under} Partitions this broker leads with fewer in-sync replicas than replicas.\n# TYPE {under} gauge\n{under} {under_replicated}"
        );
        let name = "strata_topic_deletions_pending";
        let _ = writeln!(
            out,
            "# HELP {name} Deleted topics whose objects are still being removed from the object store.\n# TYPE {name} gauge\n{name} {}",
            self.deletions.pending().len()
        );
        if let Some(cache) = self.shared.cold.cache() {
            let c = cache.counters();
            let name = "strata_cold_cache_requests_total";
            let _ = writeln!(
                out,
                "# HELP {name} Cold row-group reads by where they were found.\n# TYPE {name} counter"
            );
            for (result, v) in [
                ("memory_hit", &c.memory_hits),
                ("disk_hit", &c.disk_hits),
                ("miss", &c.misses),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{result=\"{result}\"}} {}",
                    v.load(Ordering::Relaxed)
                );
            }
        }
        out
    }

    /// Loads every partition's manifest from the bucket.
    /// Loads every partition's manifest from the bucket. A local log that ends below
    /// the cold tier's end (its directory lost, or a crash that lost a tail the bucket
    /// already has) restarts at that end, so its offsets never repeat the cold tier's.
    pub(crate) async fn load_manifests(&self) -> Result<()> {
        let topics: Vec<_> = self.topics.read().values().cloned().collect();
        for t in topics {
            for p in t.partitions() {
                p.load_manifest().await?;
            }
        }
        Ok(())
    }

    /// Recreates topics that the bucket holds but the data directory does not (a new
    /// broker with an empty disk): local logs start where the cold tier ends. An
    /// incarnation this broker has a tombstone for, or that is marked deleted in the
    /// bucket, is never rebuilt; one marked deleted gets a tombstone here, so its removal
    /// is finished.
    pub(crate) async fn recover_from_bucket(&self) -> Result<()> {
        if self.config().clustered() {
            // In a cluster the controller's metadata says which topics exist and where;
            // a replica whose disk was lost is refilled by its leader.
            return Ok(());
        }
        let unreadable = |what: &str, e: &dyn std::fmt::Display| {
            BrokerError::InvalidConfig(format!("reading {what} in the object store: {e}"))
        };
        let topics_prefix = self.shared.bucket.prefix.clone().join("topics");
        let listing = self
            .shared
            .bucket
            .store
            .list_with_delimiter(Some(&topics_prefix))
            .await
            .map_err(|e| BrokerError::InvalidConfig(format!("listing the object store: {e}")))?;
        for dir in listing.common_prefixes {
            let Some(name) = dir.filename().map(str::to_string) else {
                continue;
            };
            if self.topic(&name).is_ok() {
                continue;
            }
            let incarnations = self
                .shared
                .bucket
                .store
                .list_with_delimiter(Some(&dir))
                .await
                .map_err(|e| unreadable(&format!("topics/{name}/"), &e))?;
            let mut live: Vec<TopicMeta> = Vec::new();
            for inc in incarnations.common_prefixes {
                let Some(id) = inc
                    .filename()
                    .and_then(|f| f.strip_prefix(strata_tier::store::TOPIC_ID_DIR_PREFIX))
                    .map(str::to_string)
                else {
                    continue;
                };
                if self.deletions.is_deleted(&id) {
                    continue;
                }
                let marker = inc.clone().join(crate::deletion::DELETED_MARKER);
                match self.shared.bucket.store.head(&marker).await {
                    Ok(_) => {
                        tracing::info!(topic = %name, topic_id = %id, "the object store holds a deleted topic; finishing its removal");
                        self.deletions.record(crate::deletion::Tombstone {
                            topic: name.clone(),
                            topic_id: id.clone(),
                            deleted_ms: self.clock().now_ms(),
                        })?;
                        self.deletions.start(&id);
                        continue;
                    }
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(unreadable(marker.as_ref(), &e)),
                }
                let key = meta_key(&self.shared.bucket, &name, &id);
                let meta: TopicMeta = match self.shared.bucket.store.get(&key).await {
                    Ok(r) => {
                        let bytes = r.bytes().await.map_err(|e| unreadable(key.as_ref(), &e))?;
                        serde_json::from_slice(&bytes).map_err(|e| {
                            BrokerError::InvalidConfig(format!(
                                "{key} in the object store is not valid topic metadata: {e}"
                            ))
                        })?
                    }
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(e) => return Err(unreadable(key.as_ref(), &e)),
                };
                if meta.id != id || meta.name != name {
                    return Err(BrokerError::InvalidConfig(format!(
                        "{key} in the object store describes topic {} with id {}, not the one its key names",
                        meta.name, meta.id
                    )));
                }
                live.push(meta);
            }
            // Two live incarnations of one name: only an interrupted delete of the older
            // whose tombstone was lost with its broker's disk. The newest is the topic.
            live.sort_by_key(|m| m.created_ms);
            let Some(meta) = live.pop() else { continue };
            for old in &live {
                tracing::warn!(topic = %name, topic_id = %old.id, kept = %meta.id,
                    "the object store holds an older incarnation of this topic, not marked deleted; it is not served (remove topics/{name}/topic_id={}/ once you know it is not wanted)", old.id);
            }
            let mut manifests = Vec::new();
            for p in 0..meta.partitions {
                let m = Manifest::load(&self.shared.bucket, &name, &meta.id, p)
                    .await
                    .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?
                    .unwrap_or_else(|| Manifest::new(&name, &meta.id, p));
                manifests.push(m);
            }
            let starts: Vec<i64> = manifests
                .iter()
                .map(|m| m.next_offset().unwrap_or(0))
                .collect();
            let topic = self.create_topic_now(meta, &starts)?;
            topic.meta_in_bucket.store(true, Ordering::Relaxed);
            for (p, m) in topic.partitions().iter().zip(manifests) {
                p.set_manifest(m);
            }
            tracing::info!(topic = %name, "recovered topic from the object store");
        }
        Ok(())
    }

    /// What each partition whose topic has the tier on has to do: offload and remote
    /// retention (with the topic's total retention), and for a topic's first partition,
    /// storing the topic's metadata in the bucket when it is missing there (the other
    /// partitions wait for that). Partitions of topics with the tier off have their
    /// upload backlog cleared.
    pub fn tier_work_list(&self) -> Vec<TierWork> {
        let topics: Vec<_> = self.topics.read().values().cloned().collect();
        let mut work = Vec::new();
        for t in topics {
            let config = t.config();
            if !config.remote_enabled() {
                for p in t.partitions() {
                    p.tier.clear_backlog();
                }
                continue;
            }
            let store_meta = !t.meta_in_bucket.load(Ordering::Relaxed);
            for (i, p) in t.partitions().iter().enumerate() {
                // Until the bucket's metadata counts them (partitions just added), only
                // the first partition works, storing it first: a topic rebuilt from the
                // bucket never misses a partition that has objects there.
                if store_meta && i > 0 {
                    continue;
                }
                if !p.is_deleted() {
                    work.push(TierWork {
                        partition: p.clone(),
                        retention: config.total_retention(),
                        store_meta: (i == 0 && store_meta).then(|| t.clone()),
                    });
                }
            }
        }
        work
    }

    /// One partition's round: the topic's metadata into the bucket if asked, then the
    /// partition's offload and remote retention (`Partition::tier_round`).
    pub async fn tier_partition(&self, work: &TierWork) {
        let p = &work.partition;
        if let Some(t) = &work.store_meta {
            // Under the partition's work lock, so nothing lands in the bucket after the
            // topic's deletion removed what is there.
            let _work = p.tier.work.lock().await;
            if !p.is_deleted() {
                self.store_topic_meta(t).await;
            }
        }
        p.tier_round(work.retention).await;
    }

    async fn store_topic_meta(&self, t: &crate::broker::Topic) {
        let meta = t.meta();
        let body = serde_json::to_vec_pretty(&meta).expect("metadata serializes");
        let bucket = &self.shared.bucket;
        let key = meta_key(bucket, &meta.name, &meta.id);
        match bucket.store.put(&key, PutPayload::from(body)).await {
            Ok(_) => t.meta_in_bucket.store(true, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(topic = %meta.name, error = %e, "could not store topic metadata in the bucket")
            }
        }
    }

    /// One round for every partition, side by side, returning when all are done. The
    /// broker's own loop (`server::tiering`) starts rounds per partition instead, so a
    /// partition working through a long backlog holds back no other.
    pub async fn tier_tick(&self) {
        let work = self.tier_work_list();
        futures::future::join_all(work.iter().map(|w| self.tier_partition(w))).await;
        self.run_deletions().await;
    }

    /// Removes the objects of deleted topics whose retry is due (see `deletion`).
    pub async fn run_deletions(&self) -> usize {
        self.deletions
            .run_due(&self.shared.bucket, self.clock().now_ms(), false)
            .await
    }

    /// Resolves when a deletion has been recorded and its removal may start.
    pub async fn deletion_requested(&self) {
        self.deletions.wake.notified().await
    }

    /// Holds produce to `topic`/`partition` while offload catches up (see
    /// `Partition::wait_for_offload`); returns at once for unknown partitions (produce
    /// reports those).
    pub async fn wait_for_offload(&self, topic: &str, partition: u32) {
        if let Ok(p) = self.partition(topic, partition) {
            p.wait_for_offload().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use bytes::Bytes;
    use futures::TryStreamExt;
    use std::collections::BTreeMap;
    use strata_log::{Clock, ManualClock};
    use strata_tier::faults::{Fault, Op};

    async fn broker(dir: &std::path::Path, clock: Arc<ManualClock>) -> Arc<Broker> {
        let config = BrokerConfig {
            data_dir: dir.to_path_buf(),
            object_store: "memory://".into(),
            cold_cache_memory_bytes: 0,
            cold_cache_disk_bytes: 0,
            upload_backlog_limit_bytes: 8 << 10,
            ..BrokerConfig::default()
        };
        let b = Broker::open(config, clock).await.unwrap();
        let configs = BTreeMap::from([("segment.bytes".to_string(), (4 << 10).to_string())]);
        b.create_topic("t", 1, 1, configs).await.unwrap();
        b
    }

    /// Produces plain records until the partition has `sealed` sealed segments.
    async fn fill(b: &Broker, sealed: usize) {
        let p = b.partition("t", 0).unwrap();
        let record = crate::broker::PlainRecord {
            key: None,
            value: Some(Bytes::from(vec![7u8; 1000])),
            timestamp_ms: 1,
            headers: Vec::new(),
        };
        while p.log_read().segments().len() <= sealed {
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
    }

    /// A broker just started, so its offload has not stalled (no upload is overdue
    /// yet), and its partition.
    async fn working(
        dir: &std::path::Path,
        clock: &Arc<ManualClock>,
    ) -> (Arc<Broker>, Arc<Partition>) {
        let b = broker(dir, clock.clone()).await;
        let p = b.partition("t", 0).unwrap();
        (b, p)
    }

    /// Seals segments up to `sealed` and lets offload count them, uploading nothing.
    async fn grow(b: &Broker, p: &Partition, sealed: usize) {
        fill(b, sealed).await;
        p.refresh_backlog();
    }

    #[tokio::test]
    async fn a_cold_tier_that_retention_empties_keeps_its_end_and_nothing_is_uploaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let b = broker(dir.path(), clock.clone()).await;
        fill(&b, 3).await;
        b.tier_tick().await;
        let p = b.partition("t", 0).unwrap();
        let end = p.tier.remote.read().next_offset().unwrap();
        let uploads = b.metrics().uploads.get();
        assert_eq!(uploads, 3);
        // Every record is past retention; remote retention runs before local retention.
        let configs = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        b.alter_configs("t", configs, vec![]).await.unwrap();
        b.tier_tick().await;
        assert!(
            p.tier.remote.read().segments.is_empty(),
            "remote retention emptied it"
        );
        assert_eq!(
            p.tier.remote.read().next_offset(),
            Some(end),
            "its end is kept"
        );
        b.tier_tick().await;
        assert_eq!(
            b.metrics().uploads.get(),
            uploads,
            "nothing is uploaded again"
        );
        let stored = Manifest::load(&b.shared.bucket, "t", &p.topic_id, 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.next_offset(), Some(end));
        // Local retention may now delete what the cold tier had, and nothing else.
        b.housekeeping();
        assert_eq!(p.state().local_log_start_offset, end);
        assert_eq!(p.state().log_start_offset, end);
    }

    #[tokio::test]
    async fn turning_the_tier_off_under_remote_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let b = broker(dir.path(), clock).await;
        fill(&b, 2).await;
        b.tier_tick().await;
        let off = BTreeMap::from([("remote.storage.enable".to_string(), "false".to_string())]);
        let Err(e) = b.alter_configs("t", off.clone(), vec![]).await else {
            panic!("turning the tier off was accepted");
        };
        assert!(e.to_string().contains("offloading cannot stop"), "{e}");
        assert!(
            b.topic("t").unwrap().config().remote_enabled(),
            "nothing changed"
        );
        // Nor may it become compacted: compacted topics never offload.
        let compact = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        let Err(e) = b.alter_configs("t", compact, vec![]).await else {
            panic!("compacting an offloaded topic was accepted");
        };
        assert!(e.to_string().contains("cleanup.policy=compact"), "{e}");
        assert!(b.topic("t").unwrap().config().remote_enabled());
        // A topic with nothing in the cold tier may turn it off.
        let configs = BTreeMap::new();
        b.create_topic("fresh", 1, 1, configs).await.unwrap();
        b.alter_configs("fresh", off, vec![]).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetch_that_local_retention_overtakes_is_served_from_the_cold_tier() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let b = broker(dir.path(), clock).await;
        fill(&b, 3).await;
        b.tier_tick().await;
        let p = b.partition("t", 0).unwrap();
        assert_eq!(
            p.tier.remote.read().segments.len(),
            3,
            "the sealed segments are uploaded"
        );
        // Local retention would now delete them, but has not run yet.
        let configs = BTreeMap::from([("local.retention.bytes".to_string(), "1".to_string())]);
        b.alter_configs("t", configs, vec![]).await.unwrap();
        assert_eq!(p.state().local_log_start_offset, 0);
        // It runs exactly between the fetch's look at the tiers and its local read.
        let hk = b.clone();
        let scope = dir.path().to_string_lossy().into_owned();
        strata_failpoint::on_hit("fetch-before-local-read", &scope, move || hk.housekeeping())
            .unwrap();
        let got = b.fetch("t", 0, 0, 1 << 20, 1, Duration::ZERO).await;
        strata_failpoint::clear("fetch-before-local-read");
        assert!(
            p.state().local_log_start_offset > 0,
            "retention ran meanwhile"
        );
        let got = got.expect("the cold tier serves what local retention took");
        let first = strata_record::BatchIter::new(&got.batches)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(first.header().base_offset, 0);
        assert_eq!(got.log_start_offset, 0);
    }

    #[tokio::test]
    async fn produce_waits_while_offload_catches_up_and_resumes_when_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let (b, p) = working(dir.path(), &clock).await;
        grow(&b, &p, 4).await;
        let found = p.tier.upload_backlog();
        assert!(found > 8 << 10);
        // Found over the limit (as after a restart): produce may go on up to that much,
        // and waits once it grows the backlog past it.
        assert!(futures::poll!(Box::pin(b.wait_for_offload("t", 0))).is_ready());
        grow(&b, &p, 6).await;
        assert!(p.tier.upload_backlog() > found);
        let mut wait = Box::pin(b.wait_for_offload("t", 0));
        assert!(
            futures::poll!(&mut wait).is_pending(),
            "over the ceiling: produce waits"
        );
        b.tier_tick().await;
        assert_eq!(p.tier.upload_backlog(), 0);
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("offload caught up: produce goes on");
        assert_eq!(b.metrics().produce_throttle.count(), 1);
        // Under the limit it does not wait at all.
        assert!(futures::poll!(Box::pin(b.wait_for_offload("t", 0))).is_ready());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleting_a_topic_while_it_offloads_leaves_nothing_in_the_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path(), Arc::new(ManualClock::new(1_000_000))).await;
        fill(&b, 8).await;
        let puts = || {
            b.shared
                .bucket
                .counters
                .put_requests
                .load(Ordering::Relaxed)
        };
        let before = puts();
        let tick = tokio::spawn({
            let b = b.clone();
            async move { b.tier_tick().await }
        });
        // Delete once offload is under way: the topic's metadata and a first object
        // are written, later segments are being encoded and uploaded.
        while puts() < before + 2 && !tick.is_finished() {
            tokio::task::yield_now().await;
        }
        b.delete_topic("t").await.unwrap();
        tick.await.unwrap();
        assert_eq!(b.finish_deletions().await, 0, "{:?}", b.pending_deletions());
        let left: Vec<String> = b
            .shared
            .bucket
            .store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        assert!(left.is_empty(), "orphaned objects: {left:?}");
    }

    #[tokio::test]
    async fn a_stalled_or_failing_offload_never_holds_produce() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let (b, p) = working(dir.path(), &clock).await;
        grow(&b, &p, 4).await;
        grow(&b, &p, 6).await;
        let mut wait = Box::pin(b.wait_for_offload("t", 0));
        assert!(futures::poll!(&mut wait).is_pending());
        // No segment committed for longer than the stall limit: produce goes on.
        clock.advance(strata_partition::tier::OFFLOAD_STALL_MS + 1);
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("a stalled offload lets produce through");
        // A failed upload lets produce through at once, however recent the last commit:
        // everything is uploaded, the backlog grows again, then the bucket fails writes.
        b.tier_tick().await;
        assert_eq!(p.tier.upload_backlog(), 0);
        assert_eq!(p.tier.last_upload_ms(), clock.now_ms());
        grow(&b, &p, 10).await;
        let mut wait = Box::pin(b.wait_for_offload("t", 0));
        assert!(futures::poll!(&mut wait).is_pending());
        let faults = b.shared.bucket.faults.clone();
        faults.inject(Op::Put, "", Fault::Fail, None);
        b.tier_tick().await;
        let error = p.tier.last_error().expect("the upload failed");
        assert!(
            error.contains("injected failure") && !error.contains("panic"),
            "the store's error, not a panic of the upload: {error}"
        );
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("a failing offload lets produce through");
        // Uploads resume (a commit clears the error) but stall after the first segment:
        // produce is not held back to drain what piled up during the outage, only kept
        // from adding to it.
        fill(&b, 12).await;
        faults.clear();
        let second = p.awaiting_upload()[1].base_offset;
        faults.inject(Op::Put, &format!("{second:020}-"), Fault::Stall, None);
        clock.advance(60_000); // past the retry backoff
        let tick = tokio::spawn({
            let b = b.clone();
            async move { b.tier_tick().await }
        });
        let p2 = p.clone();
        tokio::time::timeout(Duration::from_secs(30), async move {
            while p2.tier.last_error().is_some() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a segment is committed again");
        assert!(futures::poll!(Box::pin(b.wait_for_offload("t", 0))).is_ready());
        grow(&b, &p, 14).await;
        assert!(futures::poll!(Box::pin(b.wait_for_offload("t", 0))).is_pending());
        faults.clear();
        tick.await.unwrap();
    }
}
