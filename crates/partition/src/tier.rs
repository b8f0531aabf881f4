//! One partition's side of the cold tier: offloading its sealed segments, remote
//! retention, reads below the local log start, and holding produce back while offload
//! catches up.
//!
//! Invariants:
//! - Only sealed segments wholly below the high watermark are uploaded (committed
//!   records only), oldest first, each one continuing the partition's manifest; the
//!   manifest is saved after the object.
//! - Local retention deletes a segment only once the manifest covers it
//!   ([`Uploaded`]), so an object-store outage stops local deletion, never produce.
//! - Failed uploads are retried with exponential backoff (1 s to 60 s); the last error
//!   is visible in describe and in the upload failure counter.
//! - Remote retention (`retention.ms`/`retention.bytes`) removes the manifest entry
//!   first and the object second, so a reader never finds a listed object missing.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use object_store::ObjectStoreExt;
use parking_lot::{Mutex, RwLock};
use strata_log::DeletionGuard;
use strata_tier::manifest::{Manifest, RemoteSegment, SaveIf};
use strata_tier::remote::{DEFAULT_ROWS_PER_GROUP, upload_segment_file_in};

use crate::error::{Error, Result};
use crate::partition::Partition;

/// Segments encoded and uploaded at once when offload is behind (over all partitions,
/// and at most this many of one partition).
pub const UPLOADS_AT_ONCE: usize = 2;
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

/// Offload's retry state.
#[derive(Debug, Default)]
struct TierState {
    last_error: Option<String>,
    failures: u32,
    retry_at_ms: i64,
    /// Whether this run has swept the partition's prefix for objects no manifest lists.
    swept: bool,
    /// In a cluster: the leader epoch in which this broker last loaded the manifest
    /// from the bucket as its leader (a new leader goes on from the bucket's copy).
    loaded_as_leader: Option<i32>,
    /// In a cluster: when a follower last loaded the manifest (clock ms).
    loaded_ms: i64,
    /// The stored manifest's version as last read or written here: fenced writes are
    /// conditional on it (see `save_manifest`).
    version: Option<object_store::UpdateVersion>,
}

/// How often a follower loads its partition's manifest from the bucket, to apply
/// local retention by what the leader has offloaded.
pub const FOLLOWER_MANIFEST_EVERY_MS: i64 = 10_000;

/// A partition's share of the cold tier.
pub struct Tier {
    /// Remote segments in the cold tier (a copy of the bucket's manifest).
    pub remote: RwLock<Manifest>,
    state: Mutex<TierState>,
    /// Bytes of sealed local segments not yet in the cold tier, as offload last saw them.
    upload_backlog: AtomicU64,
    /// Woken whenever offload commits a segment or fails, for produce waiting on it.
    offload_progress: tokio::sync::Notify,
    /// Produce waits while `upload_backlog` is above this (see `wait_for_offload`).
    backlog_ceiling: AtomicU64,
    /// When offload last committed a segment (broker clock, ms).
    last_upload_ms: AtomicI64,
    /// Held while offload or remote retention works on the partition, so deleting the
    /// topic can wait for uploads under way before it removes the topic's objects.
    pub work: tokio::sync::Mutex<()>,
}

impl Tier {
    pub(crate) fn new(topic: &str, topic_id: &str, id: u32, now_ms: i64) -> Self {
        Self {
            remote: RwLock::new(Manifest::new(topic, topic_id, id)),
            state: Default::default(),
            upload_backlog: Default::default(),
            offload_progress: tokio::sync::Notify::new(),
            backlog_ceiling: AtomicU64::new(u64::MAX),
            // Offload counts as making progress from the start: produce may wait for it
            // for OFFLOAD_STALL_MS before a missing upload means it has stalled.
            last_upload_ms: AtomicI64::new(now_ms),
            work: tokio::sync::Mutex::new(()),
        }
    }

    /// The last offload error, until an upload succeeds.
    pub fn last_error(&self) -> Option<String> {
        self.state.lock().last_error.clone()
    }

    /// Bytes of sealed local segments not yet in the cold tier, as offload last saw them.
    pub fn upload_backlog(&self) -> u64 {
        self.upload_backlog.load(Ordering::Relaxed)
    }

    /// When offload last committed a segment (broker clock, ms).
    pub fn last_upload_ms(&self) -> i64 {
        self.last_upload_ms.load(Ordering::Relaxed)
    }

    /// For a topic whose tier is off: nothing waits to be uploaded.
    pub fn clear_backlog(&self) {
        self.upload_backlog.store(0, Ordering::Relaxed);
        self.offload_progress.notify_waiters();
    }
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

/// The error for a cold-tier failure of `p`.
pub fn remote_err(p: &Partition, e: strata_tier::TierError) -> Error {
    Error::Remote {
        topic: p.topic.clone(),
        partition: p.id,
        // A store error is an outage to retry; anything else is bad data in the bucket.
        corrupt: !matches!(e, strata_tier::TierError::Store(_)),
        reason: e.to_string(),
    }
}

/// Where the cold tier ends (none: it is empty) and the partition's sealed segments past
/// it that lie wholly below the high watermark, oldest first: what offload has yet to
/// upload.
fn awaiting_upload(p: &Partition) -> (Option<i64>, Vec<strata_log::SegmentInfo>) {
    let next_remote = p.tier.remote.read().next_offset();
    let hw = p.high_watermark();
    let log = p.log_read();
    let segs = log.segments();
    let from = next_remote.unwrap_or(log.log_start_offset());
    let waiting = segs[..segs.len() - 1]
        .iter()
        .filter(|s| s.next_offset > from && s.next_offset <= hw && s.size > 0)
        .cloned()
        .collect();
    (next_remote, waiting)
}

impl Partition {
    /// The sealed, committed segments offload has yet to upload, oldest first.
    pub fn awaiting_upload(&self) -> Vec<strata_log::SegmentInfo> {
        awaiting_upload(self).1
    }

    /// Only a leader offloads (and only below its HW).
    fn tier_enabled(&self) -> bool {
        !self.is_deleted() && self.is_leader() && self.config.read().remote_enabled()
    }

    /// Whether this partition's copy of the manifest may answer for the cold tier:
    /// always, except on a clustered leader that has not loaded it in its current
    /// leader epoch. That copy may be a follower's, long stale: offsets the cold tier
    /// holds would look gone (OUT_OF_RANGE, an earliest offset too high), and a
    /// consumer resetting to "earliest" would skip them. Until the first tier round of
    /// the leadership loads it (within a housekeeping interval), such reads answer a
    /// retriable error instead.
    pub(crate) fn cold_view_ready(&self) -> Result<()> {
        if !self.shared.clustered || !self.config.read().remote_enabled() {
            return Ok(());
        }
        let (role, epoch) = self.role();
        if role == crate::partition::Role::Leader
            && self.tier.state.lock().loaded_as_leader != Some(epoch)
        {
            return Err(Error::Remote {
                topic: self.topic.clone(),
                partition: self.id,
                corrupt: false,
                reason: format!(
                    "this broker became the leader in epoch {epoch} and is still loading the cold tier's manifest; retry shortly"
                ),
            });
        }
        Ok(())
    }

    /// Replaces the partition's copy of its manifest (loaded from the bucket).
    pub fn set_manifest(&self, m: Manifest) {
        *self.tier.remote.write() = m;
    }

    /// Loads the manifest from the bucket into this partition's copy; a local log that
    /// ends below the cold tier restarts where it ends (its leader has the rest).
    pub async fn load_manifest(&self) -> Result<()> {
        let m = Manifest::load_versioned(&self.shared.bucket, &self.topic, &self.topic_id, self.id)
            .await
            .map_err(|e| remote_err(self, e))?;
        let (m, version) = m.unzip();
        self.tier.state.lock().version = version;
        if let Some(m) = m {
            if let Some(end) = m.next_offset()
                && let Some(local_end) = self.raise_start(end)?
            {
                tracing::info!(topic = %self.topic, partition = self.id, local_end,
                    remote_end = end, "the local log ended below the cold tier; it restarts where the cold tier ends");
            }
            self.set_manifest(m);
        }
        Ok(())
    }

    /// One offload round under the partition's `work` lock: a first sweep for objects a
    /// crash left outside the manifest, then offload and remote retention (with the
    /// topic's total retention), again while offload finds more.
    ///
    /// Only a leader offloads. In a cluster a leader first loads the manifest from the
    /// bucket once per leader epoch (the copy it had may be a follower's, long stale),
    /// and sweeps again; a follower loads it every [`FOLLOWER_MANIFEST_EVERY_MS`] and
    /// does nothing else.
    pub async fn tier_round(self: &Arc<Self>, retention: (i64, i64)) {
        let _work = self.tier.work.lock().await;
        let (role, epoch) = self.role();
        match role {
            crate::partition::Role::Leader => {
                if self.shared.clustered && self.tier.state.lock().loaded_as_leader != Some(epoch) {
                    if let Err(e) = self.load_manifest().await {
                        tracing::warn!(topic = %self.topic, partition = self.id, error = %e, "could not load the manifest as the new leader; offload waits");
                        return;
                    }
                    // Claim it: written in this epoch, a deposed leader's next write
                    // fails (only where the store's writes are fenced).
                    if self.shared.bucket.fenced_writes
                        && let Err(e) = self.save_manifest(|_| Ok(true)).await
                    {
                        tracing::warn!(topic = %self.topic, partition = self.id, error = %e, "could not claim the manifest as the new leader; offload waits");
                        return;
                    }
                    let mut st = self.tier.state.lock();
                    st.loaded_as_leader = Some(epoch);
                    st.swept = false;
                }
            }
            crate::partition::Role::Follower => {
                let now = self.shared.clock.now_ms();
                let due = now - self.tier.state.lock().loaded_ms >= FOLLOWER_MANIFEST_EVERY_MS;
                if due {
                    self.tier.state.lock().loaded_ms = now;
                    if let Err(e) = self.load_manifest().await {
                        tracing::debug!(topic = %self.topic, partition = self.id, error = %e, "could not load the manifest as a follower");
                    }
                }
                return;
            }
            crate::partition::Role::NotReplica => return,
        }
        if !self.tier.state.lock().swept {
            match self.sweep_orphans().await {
                Ok(n) => {
                    self.tier.state.lock().swept = true;
                    if n > 0 {
                        tracing::info!(topic = %self.topic, partition = self.id, objects = n,
                            "removed objects that a crash left outside the manifest");
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, partition = self.id, error = %e, "could not sweep the partition's objects; will retry")
                }
            }
        }
        while !self.is_deleted() {
            let more = self.offload().await;
            if self.is_deleted() {
                return;
            }
            if let Err(e) = self.remote_retention(retention).await {
                tracing::warn!(topic = %self.topic, partition = self.id, error = %e, "remote retention failed");
            }
            if !more {
                return;
            }
        }
    }

    /// Waits while the partition's upload backlog is over its ceiling and offload is
    /// making progress: produce then runs at the pace offload keeps, and local disk stays
    /// bounded. The ceiling is `upload_backlog_limit_bytes`, or, after an outage or a
    /// restart found more than that waiting, the lowest backlog seen since: produce is
    /// never held back to drain a backlog it did not just create, only kept from growing
    /// it. Returns at once when the backlog is under the ceiling (two atomic loads). An
    /// object store that fails or hangs never holds produce: the wait ends when an upload
    /// fails or when no segment has been committed for [`OFFLOAD_STALL_MS`].
    pub async fn wait_for_offload(&self) {
        if self.shared.upload_backlog_limit_bytes == 0 {
            return;
        }
        let t = &self.tier;
        let over =
            || t.upload_backlog.load(Ordering::Relaxed) > t.backlog_ceiling.load(Ordering::Relaxed);
        if !over() {
            return;
        }
        let started = std::time::Instant::now();
        loop {
            let progress = t.offload_progress.notified();
            let stalled = self.shared.clock.now_ms() - t.last_upload_ms.load(Ordering::Relaxed)
                > OFFLOAD_STALL_MS;
            if !over() || stalled || t.state.lock().last_error.is_some() || !self.tier_enabled() {
                break;
            }
            // Woken by each committed segment; the timeout re-checks what no upload
            // signals (a stall, the topic's tier turned off, the partition deleted).
            let _ = tokio::time::timeout(Duration::from_millis(500), progress).await;
        }
        self.shared
            .metrics
            .produce_throttle
            .observe(started.elapsed());
    }

    /// Recounts the partition's upload backlog from its log, lowers its ceiling to it
    /// (never below the limit; no ceiling while uploads fail) and wakes waiting produce.
    pub fn refresh_backlog(&self) {
        let t = &self.tier;
        let backlog = awaiting_upload(self).1.iter().map(|s| s.size).sum();
        let ceiling = if t.state.lock().last_error.is_some() {
            u64::MAX
        } else {
            let limit = self.shared.upload_backlog_limit_bytes;
            limit.max(t.backlog_ceiling.load(Ordering::Relaxed).min(backlog))
        };
        t.upload_backlog.store(backlog, Ordering::Relaxed);
        t.backlog_ceiling.store(ceiling, Ordering::Relaxed);
        t.offload_progress.notify_waiters();
    }

    fn tier_failed(&self, what: String) {
        let now = self.shared.clock.now_ms();
        let mut st = self.tier.state.lock();
        st.failures += 1;
        let backoff = (1000i64 << st.failures.min(6)).min(60_000);
        st.retry_at_ms = now + backoff;
        tracing::warn!(topic = %self.topic, partition = self.id, error = %what, retry_in_ms = backoff, "offload failed");
        st.last_error = Some(what);
        drop(st);
        self.tier.backlog_ceiling.store(u64::MAX, Ordering::Relaxed);
        self.shared.metrics.upload_failures.add(1);
        self.tier.offload_progress.notify_waiters();
    }

    /// Uploads the partition's sealed, committed segments that the manifest lacks, oldest
    /// first, as found when called; returns whether it committed any (there may be more
    /// by now). Up to [`UPLOADS_AT_ONCE`] are encoded and uploaded side by side (a
    /// broker-wide limit, shared by all partitions) and the next starts as soon as one
    /// finishes, so offload gets more of the machine the further it falls behind; they
    /// join the manifest in offset order. It stops early when the topic is deleted or
    /// its tier turned off.
    async fn offload(&self) -> bool {
        self.refresh_backlog();
        if self.tier.state.lock().retry_at_ms > self.shared.clock.now_ms() {
            return false;
        }
        let (next_remote, candidates) = awaiting_upload(self);
        let Some(first) = candidates.first() else {
            return false;
        };
        if let Some(n) = next_remote
            && first.base_offset != n
        {
            self.tier_failed(format!(
                "cannot offload: the next local segment starts at {} but the cold tier ends at {}",
                first.base_offset,
                n - 1
            ));
            return false;
        }
        let mut pending = candidates.into_iter();
        let mut running = std::collections::VecDeque::new();
        let mut committed = false;
        loop {
            while running.len() < UPLOADS_AT_ONCE && pending.len() > 0 && self.tier_enabled() {
                // Wait for a slot only with nothing of this partition under way: an
                // upload that has finished must not wait behind other partitions' ones
                // to be committed.
                let slots = &self.shared.upload_slots;
                let slot = if running.is_empty() {
                    slots.clone().acquire_owned().await.ok()
                } else {
                    slots.clone().try_acquire_owned().ok()
                };
                let Some(slot) = slot else { break };
                let Some(seg) = pending.next() else { break };
                let (bucket, topic, topic_id, id) = (
                    self.shared.bucket.clone(),
                    self.topic.clone(),
                    self.topic_id.clone(),
                    self.id,
                );
                let (path, offsets) = (seg.path.clone(), seg.base_offset..=seg.next_offset - 1);
                let epoch = self.shared.clustered.then(|| self.role().1);
                let task = Upload(tokio::spawn(async move {
                    let _slot = slot;
                    let started = std::time::Instant::now();
                    let r = upload_segment_file_in(
                        &bucket,
                        (&topic, &topic_id, id),
                        &path,
                        offsets,
                        DEFAULT_ROWS_PER_GROUP,
                        epoch,
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
            if let Err(e) = self.commit_upload(&seg, uploaded, took).await {
                if !self.is_deleted() {
                    self.tier_failed(e);
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
        seg: &strata_log::SegmentInfo,
        uploaded: strata_tier::Result<RemoteSegment>,
        took: Duration,
    ) -> std::result::Result<(), String> {
        let rs = uploaded.map_err(|e| format!("uploading segment {}: {e}", seg.base_offset))?;
        if self.is_deleted() {
            // The topic is going: its deletion removes this object with the others.
            return Err("the topic was deleted".into());
        }
        strata_failpoint::crash_at("tier-upload-before-manifest", || self.topic.clone());
        if !self.is_leader() {
            // Deposed while uploading: the new leader owns the manifest now.
            return Err("no longer the partition's leader".into());
        }
        if strata_failpoint::hit("tier-upload-stall-before-manifest", || self.topic.clone()) {
            // A leader that stalls here (a GC pause, a slow disk) and is replaced
            // meanwhile writes the manifest late, as a zombie: the fencing must hold.
            tracing::warn!(topic = %self.topic, partition = self.id, "failpoint tier-upload-stall-before-manifest: the manifest write waits 15 s");
            tokio::time::sleep(Duration::from_secs(15)).await;
        }
        self.save_manifest(|m| m.add(rs.clone()).map_err(|e| remote_err(self, e)))
            .await
            .map_err(|e| format!("saving the manifest: {e}"))?;
        {
            let mut st = self.tier.state.lock();
            st.failures = 0;
            st.last_error = None;
        }
        let metrics = &self.shared.metrics;
        metrics.uploads.add(1);
        metrics.upload_bytes.add(rs.size_bytes);
        metrics.upload_log_bytes.add(seg.size);
        metrics.upload_latency.observe(took);
        self.tier
            .last_upload_ms
            .store(self.shared.clock.now_ms(), Ordering::Relaxed);
        self.refresh_backlog();
        tracing::info!(topic = %self.topic, partition = self.id, base = rs.base_offset, last = rs.last_offset,
            bytes = rs.size_bytes, "offloaded segment");
        Ok(())
    }

    /// Removes the partition's objects that its manifest does not list and that lie
    /// below its end: what a crash left between remote retention's manifest save and
    /// its delete. An unlisted object at or past the end is an upload whose manifest
    /// save a crash prevented: offload writes the same key again and lists it. Runs once
    /// per partition after start-up, under its `work` lock (no upload under way).
    async fn sweep_orphans(&self) -> std::result::Result<usize, String> {
        let bucket = &self.shared.bucket;
        let dir = bucket.partition_dir(&self.topic, &self.topic_id, self.id);
        let objects = bucket
            .list_keys(&dir)
            .await
            .map_err(|e| format!("listing {dir}: {e}"))?;
        let (listed, end) = {
            let m = self.tier.remote.read();
            let listed: std::collections::HashSet<String> =
                m.segments.iter().map(|s| s.key.clone()).collect();
            (listed, m.next_offset())
        };
        let Some(end) = end else { return Ok(0) };
        let mut removed = 0;
        for key in objects {
            // `<base>-<last>.parquet`, or `<base>-<last>-e<epoch>.parquet` in a cluster.
            let Some(last) = key
                .filename()
                .and_then(|f| f.strip_suffix(".parquet"))
                .and_then(|f| f.split('-').nth(1))
                .and_then(|last| last.parse::<i64>().ok())
            else {
                continue;
            };
            if last < end && !listed.contains(key.as_ref()) {
                bucket
                    .delete_if_present(&key)
                    .await
                    .map_err(|e| format!("deleting {key}: {e}"))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Applies `change` to the manifest and writes it to the bucket, then makes it this
    /// partition's copy; `change` says whether it changed anything (nothing is written
    /// when it did not). Where the store's writes are fenced the write is conditional
    /// on the version last read or written here, in this leader's epoch: on a conflict
    /// the stored manifest is read again and `change` applied to it, unless it was
    /// written in a later epoch, when this broker is a deposed leader and stops. Returns
    /// whether `change` changed anything.
    pub(crate) async fn save_manifest(
        &self,
        change: impl Fn(&mut Manifest) -> Result<bool>,
    ) -> Result<bool> {
        let bucket = &self.shared.bucket;
        for _ in 0..5 {
            let (role, epoch) = self.role();
            if role != crate::partition::Role::Leader {
                return Err(self.deposed("it no longer leads the partition"));
            }
            let mut m = self.tier.remote.read().clone();
            let changed = change(&mut m)?;
            if !bucket.fenced_writes {
                if changed {
                    m.save(bucket).await.map_err(|e| remote_err(self, e))?;
                    *self.tier.remote.write() = m;
                }
                return Ok(changed);
            }
            if !changed && m.leader_epoch == Some(epoch) {
                return Ok(false);
            }
            m.leader_epoch = Some(epoch);
            let version = self.tier.state.lock().version.clone();
            match m
                .save_if(bucket, version.as_ref())
                .await
                .map_err(|e| remote_err(self, e))?
            {
                SaveIf::Saved(v) => {
                    self.tier.state.lock().version = Some(v);
                    *self.tier.remote.write() = m;
                    return Ok(changed);
                }
                SaveIf::Conflict => {
                    let stored =
                        Manifest::load_versioned(bucket, &self.topic, &self.topic_id, self.id)
                            .await
                            .map_err(|e| remote_err(self, e))?;
                    match stored {
                        Some((s, _)) if s.leader_epoch.is_some_and(|e| e > epoch) => {
                            self.shared.metrics.manifest_fenced.add(1);
                            return Err(self.deposed(&format!(
                                "the manifest was written in leader epoch {}, after this broker's {epoch}",
                                s.leader_epoch.unwrap_or_default()
                            )));
                        }
                        Some((s, v)) => {
                            tracing::info!(topic = %self.topic, partition = self.id, stored_epoch = ?s.leader_epoch, "the manifest changed under this leader (an earlier leader's late write); applying the change to it");
                            self.tier.state.lock().version = Some(v);
                            *self.tier.remote.write() = s;
                        }
                        None => {
                            self.tier.state.lock().version = None;
                        }
                    }
                }
            }
        }
        Err(self.deposed("the manifest kept changing under this broker"))
    }

    /// A cold-tier write refused because another broker owns the manifest now.
    fn deposed(&self, why: &str) -> Error {
        Error::Remote {
            topic: self.topic.clone(),
            partition: self.id,
            corrupt: false,
            reason: format!("not writing the manifest: {why}"),
        }
    }

    async fn remote_retention(&self, (ms, bytes): (i64, i64)) -> Result<()> {
        let now = self.shared.clock.now_ms();
        loop {
            let m = self.tier.remote.read().clone();
            let Some(first) = m.segments.first().cloned() else {
                return Ok(());
            };
            let (local_start, local_size) = {
                let log = self.log_read();
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
            if !self.is_leader() {
                return Ok(());
            }
            // Out of the manifest first (as it is in the bucket, should a concurrent
            // writer have changed it), then the object.
            let removed = self
                .save_manifest(|m| {
                    let first_still = m
                        .segments
                        .first()
                        .is_some_and(|s| s.base_offset == first.base_offset && s.key == first.key);
                    if first_still {
                        m.segments.remove(0);
                    }
                    Ok(first_still)
                })
                .await?;
            if !removed {
                continue;
            }
            strata_failpoint::crash_at("tier-retention-before-object-delete", || {
                self.topic.clone()
            });
            let key = object_store::path::Path::from(first.key.as_str());
            if let Err(e) = self.shared.bucket.store.delete(&key).await {
                tracing::warn!(key = %first.key, error = %e, "could not delete an expired remote segment");
            }
            self.shared.metrics.remote_deleted_segments.add(1);
            tracing::info!(topic = %self.topic, partition = self.id, base = first.base_offset, last = first.last_offset,
                reason = if expired { "retention.ms" } else { "retention.bytes" }, "deleted remote segment");
        }
    }

    /// The largest record timestamp in either tier (`i64::MIN` if none).
    pub(crate) fn max_timestamp(&self) -> i64 {
        let remote = self
            .tier
            .remote
            .read()
            .segments
            .iter()
            .map(|s| s.max_timestamp)
            .max()
            .unwrap_or(i64::MIN);
        remote.max(self.log.read().max_timestamp())
    }

    /// The last offset in the cold tier, -1 if it holds none.
    pub(crate) fn last_tiered_offset(&self) -> i64 {
        self.tier
            .remote
            .read()
            .segments
            .last()
            .map_or(-1, |s| s.last_offset)
    }

    /// The first remote offset whose timestamp is >= `ts`, if the cold tier has one.
    pub(crate) async fn remote_offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        let segs: Vec<_> = self
            .tier
            .remote
            .read()
            .segments
            .iter()
            .filter(|s| s.max_timestamp >= ts)
            .cloned()
            .collect();
        let local_start = self.state().local_log_start_offset;
        for seg in segs {
            if seg.base_offset >= local_start {
                break; // the local log answers from here on
            }
            let mut at = seg.base_offset;
            while at <= seg.last_offset {
                let bytes = self
                    .shared
                    .cold
                    .read(&seg, None, at, 1 << 20)
                    .await
                    .map_err(|e| remote_err(self, e))?;
                if bytes.is_empty() {
                    break;
                }
                for b in strata_record::BatchIter::new(&bytes) {
                    let b = b.map_err(|e| Error::InvalidRequest(e.to_string()))?;
                    let records = b
                        .decoded()
                        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
                    for r in records.iter() {
                        let r = r.map_err(|e| Error::InvalidRequest(e.to_string()))?;
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
}
