//! The broker's side of the cold tier: offloading sealed segments, remote retention,
//! reads below the local log start, and rebuilding topics from the bucket alone.
//!
//! Invariants:
//! - Only sealed segments below the high watermark are uploaded, oldest first, each one
//!   continuing the partition's manifest; the manifest is saved after the object.
//! - Local retention deletes a segment only once the manifest covers it
//!   ([`Uploaded`]), so an object-store outage stops local deletion, never produce.
//! - Failed uploads are retried with exponential backoff (1 s to 60 s); the last error
//!   is visible in describe and in the upload failure counter.
//! - Remote retention (`retention.ms`/`retention.bytes`) removes the manifest entry
//!   first and the object second, so a reader never finds a listed object missing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use strata_log::DeletionGuard;
use strata_tier::manifest::{Manifest, RemoteSegment};
use strata_tier::remote::{DEFAULT_ROWS_PER_GROUP, upload_segment_file};
use strata_tier::store::Bucket;

use crate::broker::{Broker, Partition, TopicMeta};
use crate::error::{BrokerError, Result};

/// Segments encoded and uploaded at once when offload is behind (over all partitions,
/// and at most this many of one partition).
pub(crate) const UPLOADS_AT_ONCE: usize = 2;
/// Produce stops waiting for offload when no segment has been committed for this long.
pub const OFFLOAD_STALL_MS: i64 = 10_000;

/// An upload task, aborted if its round is dropped (the broker shutting down): the
/// multipart upload is left incomplete, as after a crash, and redone at the next start.
struct Upload(tokio::task::JoinHandle<(strata_tier::Result<RemoteSegment>, Duration)>);

impl Drop for Upload {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One partition's share of a tiering round (see [`Broker::tier_work_list`]).
pub(crate) struct TierWork {
    pub partition: Arc<Partition>,
    retention: (i64, i64),
    /// The topic, when its metadata is to be stored in the bucket first.
    store_meta: Option<Arc<crate::broker::Topic>>,
}

/// Per-partition offload state.
#[derive(Debug, Default)]
pub struct TierState {
    pub last_error: Option<String>,
    failures: u32,
    retry_at_ms: i64,
    /// Whether this run has swept the partition's prefix for objects no manifest lists.
    swept: bool,
}

/// Lets local retention delete only what the cold tier already holds.
pub struct Uploaded {
    /// Offset after the last uploaded record; `None` when the tier is off for the topic.
    pub upto: Option<i64>,
}

impl DeletionGuard for Uploaded {
    fn may_delete(&self, _base: i64, next: i64) -> bool {
        self.upto.is_none_or(|upto| next <= upto)
    }
}

/// Opens the object store and checks that it answers, so a wrong endpoint, wrong
/// credentials or a missing bucket stop the broker at start-up with a clear error.
pub async fn open_bucket(
    url: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<Bucket> {
    let bucket = strata_tier::store::open_with(url, options)
        .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
    let probe = bucket.prefix.clone().join(".strata-probe");
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

fn remote_err(p: &Partition, e: strata_tier::TierError) -> BrokerError {
    BrokerError::Remote {
        topic: p.topic.clone(),
        partition: p.id,
        // A store error is an outage to retry; anything else is bad data in the bucket.
        corrupt: !matches!(e, strata_tier::TierError::Store(_)),
        reason: e.to_string(),
    }
}

/// Where the cold tier ends (none: it is empty) and the partition's sealed, committed
/// segments past it, oldest first: what offload has yet to upload.
fn awaiting_upload(p: &Partition) -> (Option<i64>, Vec<strata_log::SegmentInfo>) {
    let next_remote = p.remote.read().next_offset();
    let log = p.log_read();
    let segs = log.segments();
    let hw = log.log_end_offset();
    let from = next_remote.unwrap_or(log.log_start_offset());
    let waiting = segs[..segs.len() - 1]
        .iter()
        .filter(|s| s.next_offset > from && s.next_offset <= hw && s.size > 0)
        .cloned()
        .collect();
    (next_remote, waiting)
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
        let c = &self.bucket.counters;
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
        let name = "strata_topic_deletions_pending";
        let _ = writeln!(
            out,
            "# HELP {name} Deleted topics whose objects are still being removed from the object store.\n# TYPE {name} gauge\n{name} {}",
            self.deletions.pending().len()
        );
        if let Some(cache) = self.cold.cache() {
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
                let Some(m) = Manifest::load(&self.bucket, &p.topic, &p.topic_id, p.id)
                    .await
                    .map_err(|e| remote_err(p, e))?
                else {
                    continue;
                };
                if let Some(end) = m.next_offset() {
                    let mut log = p.log_write();
                    if log.log_end_offset() < end {
                        tracing::warn!(topic = %p.topic, partition = p.id, local_end = log.log_end_offset(),
                            remote_end = end, "the local log ends below the cold tier; it restarts where the cold tier ends");
                        log.reset_to(end).map_err(|source| BrokerError::Log {
                            topic: p.topic.clone(),
                            partition: p.id,
                            source,
                        })?;
                        p.publish_high_watermark(end);
                    }
                }
                *p.remote.write() = m;
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
        let unreadable = |what: &str, e: &dyn std::fmt::Display| {
            BrokerError::InvalidConfig(format!("reading {what} in the object store: {e}"))
        };
        let topics_prefix = self.bucket.prefix.clone().join("topics");
        let listing = self
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
                match self.bucket.store.head(&marker).await {
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
                let key = meta_key(&self.bucket, &name, &id);
                let meta: TopicMeta = match self.bucket.store.get(&key).await {
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
                let m = Manifest::load(&self.bucket, &name, &meta.id, p)
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
                *p.remote.write() = m;
            }
            tracing::info!(topic = %name, "recovered topic from the object store");
        }
        Ok(())
    }

    /// Reads from whichever tier holds `offset`; the range check covers both tiers. A
    /// local read that local retention overtakes (the segment deleted between the look
    /// at the tiers and the read) is read again from the cold tier, which by then holds
    /// it: a consumer never hears OUT_OF_RANGE for an offset the partition still has.
    pub async fn read_any(
        &self,
        p: &Partition,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(Bytes, i64, i64)> {
        match self.read_any_once(p, offset, max_bytes).await {
            Err(BrokerError::Log {
                source: strata_log::LogError::OffsetOutOfRange { .. },
                ..
            }) if offset < p.state().local_log_start_offset => {
                self.read_any_once(p, offset, max_bytes).await
            }
            r => r,
        }
    }

    async fn read_any_once(
        &self,
        p: &Partition,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(Bytes, i64, i64)> {
        let s = p.state();
        if offset < s.log_start_offset || offset > s.high_watermark {
            return Err(p.out_of_range(offset, &s));
        }
        if offset < s.local_log_start_offset {
            let found = p
                .remote
                .read()
                .find_with_next(offset)
                .map(|(seg, next)| (seg.clone(), next.cloned()));
            if let Some((seg, next)) = found {
                let bytes = match self.cold.read(&seg, next.as_ref(), offset, max_bytes).await {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        // Retention may have removed the object while this read was on its
                        // way to it: then the offset is gone, as the consumer must learn.
                        let now = p.state();
                        if offset < now.log_start_offset {
                            return Err(p.out_of_range(offset, &now));
                        }
                        return Err(remote_err(p, e));
                    }
                };
                self.metrics().remote_reads.add(1);
                self.metrics().remote_read_bytes.add(bytes.len() as u64);
                return Ok((bytes, s.high_watermark, s.log_start_offset));
            }
        }
        strata_failpoint::hit("fetch-before-local-read", || {
            p.log_read().dir().to_string_lossy().into_owned()
        });
        let (bytes, hw, _) = p.read(offset, max_bytes)?;
        Ok((bytes, hw, s.log_start_offset))
    }

    /// The first remote offset whose timestamp is >= `ts`, if the cold tier has one.
    pub(crate) async fn remote_offset_for_timestamp(
        &self,
        p: &Partition,
        ts: i64,
    ) -> Result<Option<(i64, i64)>> {
        let segs: Vec<_> = p
            .remote
            .read()
            .segments
            .iter()
            .filter(|s| s.max_timestamp >= ts)
            .cloned()
            .collect();
        let local_start = p.state().local_log_start_offset;
        for seg in segs {
            if seg.base_offset >= local_start {
                break; // the local log answers from here on
            }
            let mut at = seg.base_offset;
            while at <= seg.last_offset {
                let bytes = self
                    .cold
                    .read(&seg, None, at, 1 << 20)
                    .await
                    .map_err(|e| remote_err(p, e))?;
                if bytes.is_empty() {
                    break;
                }
                for b in strata_record::BatchIter::new(&bytes) {
                    let b = b.map_err(|e| BrokerError::InvalidRequest(e.to_string()))?;
                    for r in b.records() {
                        let r = r.map_err(|e| BrokerError::InvalidRequest(e.to_string()))?;
                        if r.timestamp >= ts {
                            return Ok(Some((r.offset, r.timestamp)));
                        }
                    }
                    at = b.header().next_offset();
                }
            }
        }
        Ok(None)
    }

    /// What each partition whose topic has the tier on has to do: offload and remote
    /// retention (with the topic's total retention), and for a topic's first partition,
    /// storing the topic's metadata in the bucket when it is missing there. Partitions
    /// of topics with the tier off have their upload backlog cleared.
    pub(crate) fn tier_work_list(&self) -> Vec<TierWork> {
        let topics: Vec<_> = self.topics.read().values().cloned().collect();
        let mut work = Vec::new();
        for t in topics {
            let config = t.config();
            if !config.remote_enabled() {
                for p in t.partitions() {
                    p.upload_backlog.store(0, Ordering::Relaxed);
                    p.offload_progress.notify_waiters();
                }
                continue;
            }
            let store_meta = !t.meta_in_bucket.load(Ordering::Relaxed);
            for (i, p) in t.partitions().iter().enumerate() {
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

    /// One partition's round under its `tier_work` lock (so nothing of it lands in the
    /// bucket after the topic's deletion removed what is there): the topic's metadata if
    /// asked, then offload and remote retention, again while offload finds more.
    pub(crate) async fn tier_partition(&self, work: &TierWork) {
        let p = &work.partition;
        let _work = p.tier_work.lock().await;
        if let Some(t) = &work.store_meta
            && !p.is_deleted()
        {
            let meta = t.meta();
            let body = serde_json::to_vec_pretty(&meta).expect("metadata serializes");
            match self
                .bucket
                .store
                .put(
                    &meta_key(&self.bucket, &meta.name, &meta.id),
                    PutPayload::from(body),
                )
                .await
            {
                Ok(_) => t.meta_in_bucket.store(true, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(topic = %meta.name, error = %e, "could not store topic metadata in the bucket")
                }
            }
        }
        if !p.tier.lock().swept {
            match self.sweep_orphans(p).await {
                Ok(n) => {
                    p.tier.lock().swept = true;
                    if n > 0 {
                        tracing::info!(topic = %p.topic, partition = p.id, objects = n,
                            "removed objects that a crash left outside the manifest");
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %p.topic, partition = p.id, error = %e, "could not sweep the partition's objects; will retry")
                }
            }
        }
        while !p.is_deleted() {
            let more = self.offload(p).await;
            if p.is_deleted() {
                return;
            }
            if let Err(e) = self.remote_retention(p, work.retention).await {
                tracing::warn!(topic = %p.topic, partition = p.id, error = %e, "remote retention failed");
            }
            if !more {
                return;
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
            .run_due(&self.bucket, self.clock().now_ms(), false)
            .await
    }

    /// Resolves when a deletion has been recorded and its removal may start.
    pub async fn deletion_requested(&self) {
        self.deletions.wake.notified().await
    }

    fn tier_enabled(&self, topic: &str) -> bool {
        self.topic(topic).is_ok_and(|t| t.config().remote_enabled())
    }

    /// Waits while the partition's upload backlog is over its ceiling and offload is
    /// making progress: produce then runs at the pace offload keeps, and local disk stays
    /// bounded. The ceiling is `upload_backlog_limit_bytes`, or, after an outage or a
    /// restart found more than that waiting, the lowest backlog seen since: produce is
    /// never held back to drain a backlog it did not just create, only kept from growing
    /// it. Returns at once when the backlog is under the ceiling (two atomic loads) and
    /// for unknown partitions (produce reports those). An object store that fails or
    /// hangs never holds produce: the wait ends when an upload fails or when no segment
    /// has been committed for [`OFFLOAD_STALL_MS`].
    pub async fn wait_for_offload(&self, topic: &str, partition: u32) {
        if self.config().upload_backlog_limit_bytes == 0 {
            return;
        }
        let Ok(p) = self.partition(topic, partition) else {
            return;
        };
        let over =
            || p.upload_backlog.load(Ordering::Relaxed) > p.backlog_ceiling.load(Ordering::Relaxed);
        if !over() {
            return;
        }
        let started = std::time::Instant::now();
        loop {
            let progress = p.offload_progress.notified();
            let stalled =
                self.clock().now_ms() - p.last_upload_ms.load(Ordering::Relaxed) > OFFLOAD_STALL_MS;
            if !over()
                || stalled
                || p.tier.lock().last_error.is_some()
                || p.is_deleted()
                || !self.tier_enabled(topic)
            {
                break;
            }
            // Woken by each committed segment; the timeout re-checks what no upload
            // signals (a stall, the topic's tier turned off, the partition deleted).
            let _ = tokio::time::timeout(Duration::from_millis(500), progress).await;
        }
        self.metrics().produce_throttle.observe(started.elapsed());
    }

    /// Recounts the partition's upload backlog from its log, lowers its ceiling to it
    /// (never below the limit; no ceiling while uploads fail) and wakes waiting produce.
    fn refresh_backlog(&self, p: &Partition) {
        let backlog = awaiting_upload(p).1.iter().map(|s| s.size).sum();
        let ceiling = if p.tier.lock().last_error.is_some() {
            u64::MAX
        } else {
            let limit = self.config().upload_backlog_limit_bytes;
            limit.max(p.backlog_ceiling.load(Ordering::Relaxed).min(backlog))
        };
        p.upload_backlog.store(backlog, Ordering::Relaxed);
        p.backlog_ceiling.store(ceiling, Ordering::Relaxed);
        p.offload_progress.notify_waiters();
    }

    fn tier_failed(&self, p: &Partition, what: String) {
        let now = self.clock().now_ms();
        let mut st = p.tier.lock();
        st.failures += 1;
        let backoff = (1000i64 << st.failures.min(6)).min(60_000);
        st.retry_at_ms = now + backoff;
        tracing::warn!(topic = %p.topic, partition = p.id, error = %what, retry_in_ms = backoff, "offload failed");
        st.last_error = Some(what);
        drop(st);
        p.backlog_ceiling.store(u64::MAX, Ordering::Relaxed);
        self.metrics().upload_failures.add(1);
        p.offload_progress.notify_waiters();
    }

    /// Uploads the partition's sealed, committed segments that the manifest lacks, oldest
    /// first, as found when called; returns whether it committed any (there may be more
    /// by now). Up to [`UPLOADS_AT_ONCE`] are encoded and uploaded side by side (a
    /// broker-wide limit, shared by all partitions) and the next starts as soon as one
    /// finishes, so offload gets more of the machine the further it falls behind; they
    /// join the manifest in offset order. It stops early when the topic is deleted or
    /// its tier turned off.
    async fn offload(&self, p: &Arc<Partition>) -> bool {
        self.refresh_backlog(p);
        if p.tier.lock().retry_at_ms > self.clock().now_ms() {
            return false;
        }
        let (next_remote, candidates) = awaiting_upload(p);
        let Some(first) = candidates.first() else {
            return false;
        };
        if let Some(n) = next_remote
            && first.base_offset != n
        {
            self.tier_failed(
                p,
                format!(
                    "cannot offload: the next local segment starts at {} but the cold tier ends at {}",
                    first.base_offset,
                    n - 1
                ),
            );
            return false;
        }
        let mut pending = candidates.into_iter();
        let mut running = std::collections::VecDeque::new();
        let mut committed = false;
        loop {
            while running.len() < UPLOADS_AT_ONCE
                && pending.len() > 0
                && !p.is_deleted()
                && self.tier_enabled(&p.topic)
            {
                // Wait for a slot only with nothing of this partition under way: an
                // upload that has finished must not wait behind other partitions' ones
                // to be committed.
                let slot = if running.is_empty() {
                    self.upload_slots.clone().acquire_owned().await.ok()
                } else {
                    self.upload_slots.clone().try_acquire_owned().ok()
                };
                let Some(slot) = slot else { break };
                let Some(seg) = pending.next() else { break };
                let (bucket, topic, topic_id, id) = (
                    self.bucket.clone(),
                    p.topic.clone(),
                    p.topic_id.clone(),
                    p.id,
                );
                let (path, offsets) = (seg.path.clone(), seg.base_offset..=seg.next_offset - 1);
                let task = Upload(tokio::spawn(async move {
                    let _slot = slot;
                    let started = std::time::Instant::now();
                    let r = upload_segment_file(
                        &bucket,
                        &topic,
                        &topic_id,
                        id,
                        &path,
                        offsets,
                        DEFAULT_ROWS_PER_GROUP,
                    )
                    .await;
                    (r, started.elapsed())
                }));
                running.push_back((seg, task));
            }
            let Some((seg, mut task)) = running.pop_front() else {
                return committed;
            };
            let (uploaded, took) = match (&mut task.0).await {
                Ok(done) => done,
                Err(e) => (
                    Err(strata_tier::TierError::Format(format!(
                        "the upload task failed: {e}"
                    ))),
                    Default::default(),
                ),
            };
            if let Err(e) = self.commit_upload(p, &seg, uploaded, took).await {
                if !p.is_deleted() {
                    self.tier_failed(p, e);
                }
                // Later segments may not join the manifest before this one; let the
                // uploads under way finish (their keys are rewritten on retry).
                for (_, mut t) in running {
                    let _ = (&mut t.0).await;
                }
                return committed;
            }
            committed = true;
        }
    }

    /// Adds an uploaded segment to the partition's manifest, in the bucket first.
    async fn commit_upload(
        &self,
        p: &Partition,
        seg: &strata_log::SegmentInfo,
        uploaded: strata_tier::Result<strata_tier::manifest::RemoteSegment>,
        took: Duration,
    ) -> std::result::Result<(), String> {
        let rs = uploaded.map_err(|e| format!("uploading segment {}: {e}", seg.base_offset))?;
        if p.is_deleted() {
            // The topic is going: its deletion removes this object with the others.
            return Err("the topic was deleted".into());
        }
        strata_failpoint::crash_at("tier-upload-before-manifest", || p.topic.clone());
        let mut m = p.remote.read().clone();
        m.add(rs.clone()).map_err(|e| e.to_string())?;
        m.save(&self.bucket)
            .await
            .map_err(|e| format!("saving the manifest: {e}"))?;
        *p.remote.write() = m;
        {
            let mut st = p.tier.lock();
            st.failures = 0;
            st.last_error = None;
        }
        self.metrics().uploads.add(1);
        self.metrics().upload_bytes.add(rs.size_bytes);
        self.metrics().upload_log_bytes.add(seg.size);
        self.metrics().upload_latency.observe(took);
        p.last_upload_ms
            .store(self.clock().now_ms(), Ordering::Relaxed);
        self.refresh_backlog(p);
        tracing::info!(topic = %p.topic, partition = p.id, base = rs.base_offset, last = rs.last_offset,
            bytes = rs.size_bytes, "offloaded segment");
        Ok(())
    }

    /// Removes the partition's objects that its manifest does not list and that lie
    /// below its end: what a crash left between remote retention's manifest save and
    /// its delete. An unlisted object at or past the end is an upload whose manifest
    /// save a crash prevented: offload writes the same key again and lists it. Runs once
    /// per partition after start-up, under its `tier_work` lock (no upload under way).
    async fn sweep_orphans(&self, p: &Partition) -> std::result::Result<usize, String> {
        let dir = self.bucket.partition_dir(&p.topic, &p.topic_id, p.id);
        let objects = self
            .bucket
            .list_keys(&dir)
            .await
            .map_err(|e| format!("listing {dir}: {e}"))?;
        let (listed, end) = {
            let m = p.remote.read();
            let listed: std::collections::HashSet<String> =
                m.segments.iter().map(|s| s.key.clone()).collect();
            (listed, m.next_offset())
        };
        let Some(end) = end else { return Ok(0) };
        let mut removed = 0;
        for key in objects {
            let Some(last) = key
                .filename()
                .and_then(|f| f.strip_suffix(".parquet"))
                .and_then(|f| f.split_once('-'))
                .and_then(|(_, last)| last.parse::<i64>().ok())
            else {
                continue;
            };
            if last < end && !listed.contains(key.as_ref()) {
                self.bucket
                    .delete_if_present(&key)
                    .await
                    .map_err(|e| format!("deleting {key}: {e}"))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn remote_retention(&self, p: &Partition, (ms, bytes): (i64, i64)) -> Result<()> {
        let now = self.clock().now_ms();
        loop {
            let mut m = p.remote.read().clone();
            let Some(first) = m.segments.first().cloned() else {
                return Ok(());
            };
            let (local_start, local_size) = {
                let log = p.log_read();
                (log.log_start_offset(), log.size_bytes())
            };
            // Size over both tiers, counting each record once.
            let remote_only: u64 = m
                .segments
                .iter()
                .filter(|s| s.last_offset < local_start)
                .map(|s| s.size_bytes)
                .sum();
            let total = (remote_only + local_size) as i64;
            let expired = ms >= 0 && now.saturating_sub(first.max_timestamp) > ms;
            let oversize = bytes >= 0
                && first.last_offset < local_start
                && total - first.size_bytes as i64 >= bytes;
            if !(expired || oversize) {
                return Ok(());
            }
            m.segments.remove(0);
            m.save(&self.bucket).await.map_err(|e| remote_err(p, e))?;
            *p.remote.write() = m;
            strata_failpoint::crash_at("tier-retention-before-object-delete", || p.topic.clone());
            let key = object_store::path::Path::from(first.key.as_str());
            if let Err(e) = self.bucket.store.delete(&key).await {
                tracing::warn!(key = %first.key, error = %e, "could not delete an expired remote segment");
            }
            self.metrics().remote_deleted_segments.add(1);
            tracing::info!(topic = %p.topic, partition = p.id, base = first.base_offset, last = first.last_offset,
                reason = if expired { "retention.ms" } else { "retention.bytes" }, "deleted remote segment");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
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
    fn fill(b: &Broker, sealed: usize) {
        let p = b.partition("t", 0).unwrap();
        let record = crate::broker::PlainRecord {
            key: None,
            value: Some(Bytes::from(vec![7u8; 1000])),
            timestamp_ms: 1,
            headers: Vec::new(),
        };
        while p.log_read().segments().len() <= sealed {
            b.produce("t", 0, Bytes::new(), std::slice::from_ref(&record))
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
    fn grow(b: &Broker, p: &Partition, sealed: usize) {
        fill(b, sealed);
        b.refresh_backlog(p);
    }

    #[tokio::test]
    async fn a_cold_tier_that_retention_empties_keeps_its_end_and_nothing_is_uploaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let b = broker(dir.path(), clock.clone()).await;
        fill(&b, 3);
        b.tier_tick().await;
        let p = b.partition("t", 0).unwrap();
        let end = p.remote.read().next_offset().unwrap();
        let uploads = b.metrics().uploads.get();
        assert_eq!(uploads, 3);
        // Every record is past retention; remote retention runs before local retention.
        let configs = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        b.alter_configs("t", configs, vec![]).await.unwrap();
        b.tier_tick().await;
        assert!(
            p.remote.read().segments.is_empty(),
            "remote retention emptied it"
        );
        assert_eq!(p.remote.read().next_offset(), Some(end), "its end is kept");
        b.tier_tick().await;
        assert_eq!(
            b.metrics().uploads.get(),
            uploads,
            "nothing is uploaded again"
        );
        let stored = Manifest::load(&b.bucket, "t", &p.topic_id, 0)
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
        fill(&b, 2);
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
        fill(&b, 3);
        b.tier_tick().await;
        let p = b.partition("t", 0).unwrap();
        assert_eq!(
            p.remote.read().segments.len(),
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
        grow(&b, &p, 4);
        let found = p.upload_backlog.load(Ordering::Relaxed);
        assert!(found > 8 << 10);
        // Found over the limit (as after a restart): produce may go on up to that much,
        // and waits once it grows the backlog past it.
        assert!(futures::poll!(Box::pin(b.wait_for_offload("t", 0))).is_ready());
        grow(&b, &p, 6);
        assert!(p.upload_backlog.load(Ordering::Relaxed) > found);
        let mut wait = Box::pin(b.wait_for_offload("t", 0));
        assert!(
            futures::poll!(&mut wait).is_pending(),
            "over the ceiling: produce waits"
        );
        b.tier_tick().await;
        assert_eq!(p.upload_backlog.load(Ordering::Relaxed), 0);
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
        fill(&b, 8);
        let puts = || b.bucket.counters.put_requests.load(Ordering::Relaxed);
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
        grow(&b, &p, 4);
        grow(&b, &p, 6);
        let mut wait = Box::pin(b.wait_for_offload("t", 0));
        assert!(futures::poll!(&mut wait).is_pending());
        // No segment committed for longer than the stall limit: produce goes on.
        clock.advance(OFFLOAD_STALL_MS + 1);
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("a stalled offload lets produce through");
        // A failed upload lets produce through at once, however recent the last commit:
        // everything is uploaded, the backlog grows again, then the bucket fails writes.
        b.tier_tick().await;
        assert_eq!(p.upload_backlog.load(Ordering::Relaxed), 0);
        assert_eq!(p.last_upload_ms.load(Ordering::Relaxed), clock.now_ms());
        grow(&b, &p, 10);
        let mut wait = Box::pin(b.wait_for_offload("t", 0));
        assert!(futures::poll!(&mut wait).is_pending());
        let faults = b.bucket.faults.clone();
        faults.inject(Op::Put, "", Fault::Fail, None);
        b.tier_tick().await;
        let error = p.tier.lock().last_error.clone().expect("the upload failed");
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
        fill(&b, 12);
        faults.clear();
        let second = awaiting_upload(&p).1[1].base_offset;
        faults.inject(Op::Put, &format!("{second:020}-"), Fault::Stall, None);
        clock.advance(60_000); // past the retry backoff
        let tick = tokio::spawn({
            let b = b.clone();
            async move { b.tier_tick().await }
        });
        let p2 = p.clone();
        tokio::time::timeout(Duration::from_secs(30), async move {
            while p2.tier.lock().last_error.is_some() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a segment is committed again");
        assert!(futures::poll!(Box::pin(b.wait_for_offload("t", 0))).is_ready());
        grow(&b, &p, 14);
        assert!(futures::poll!(Box::pin(b.wait_for_offload("t", 0))).is_pending());
        faults.clear();
        tick.await.unwrap();
    }
}
