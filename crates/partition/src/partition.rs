//! One partition replica: its log, log end offset (LEO), high watermark (HW), leader
//! epoch and role, and the produce, fetch and list-offsets semantics over it.
//!
//! Invariants:
//! - The LEO is the log's end: the offset the next appended record gets. The HW is
//!   the end of what is committed: what consumers may read, what list-offsets calls
//!   "latest", and what offload may upload. `HW <= LEO` always, and the HW only moves
//!   forward while a replica stays in one role; it sits on a batch boundary.
//! - A leader's HW is the lowest LEO over its in-sync replicas. A partition whose only
//!   replica is this broker has itself as its in-sync set, so there the HW follows the
//!   LEO on every append.
//! - Every produced batch is checked (CRC, sizes, record count, `max.message.bytes`,
//!   timestamp bounds, keys on compacted topics) before anything is written: a request
//!   is appended whole or not at all. Offsets are assigned by rewriting batch headers,
//!   never by re-encoding records.
//! - The log sits behind its own lock: appends take it for writing, reads for reading.
//!   The HW is published on a `watch` channel that long polls and subscriptions wait on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;
use strata_log::{Clock, Log, LogError};
use strata_record::BatchBuilder;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::flush::Flusher;
use crate::metrics::Metrics;
use crate::tier::{Tier, remote_err};
use crate::topic_config::EffectiveConfig;

/// Largest fetch a client may ask for.
pub const MAX_FETCH_BYTES: usize = 64 << 20;
/// Fetch size when the client leaves it at 0.
pub const DEFAULT_FETCH_BYTES: usize = 1 << 20;

/// The fetch size to use for a requested `max_bytes` (0: the default).
pub fn fetch_size(max_bytes: usize) -> usize {
    if max_bytes == 0 {
        DEFAULT_FETCH_BYTES
    } else {
        max_bytes.min(MAX_FETCH_BYTES)
    }
}

/// What every partition of a broker shares: the clock, metrics, the cold tier and the
/// `flush.ms` timers.
pub struct Shared {
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub bucket: strata_tier::store::Bucket,
    pub cold: Arc<strata_tier::read::ColdReader>,
    /// Segments being encoded and uploaded at once, over all partitions.
    pub upload_slots: Arc<tokio::sync::Semaphore>,
    /// Produce waits for offload while a partition's upload backlog is over this
    /// (0: never).
    pub upload_backlog_limit_bytes: u64,
    pub flusher: Flusher,
    /// A cluster member: partitions wait for the controller to give them a role.
    pub clustered: bool,
}

/// A replica's part in its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Takes produce and serves fetch; its HW is the lowest LEO over its in-sync set.
    Leader,
    /// Copies its leader's log; answers produce and fetch with not-leader.
    Follower,
    /// Holds the log of a partition this broker is not (or not yet known to be) a
    /// replica of.
    #[default]
    NotReplica,
}

/// Result of a produce.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: u32,
    pub log_start_offset: i64,
    /// The leader epoch it was appended in (an `acks=all` wait is bound to it).
    pub leader_epoch: i32,
}

/// Result of a fetch.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub batches: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// A record in the plain (non-batch) form.
#[derive(Debug, Clone, Default)]
pub struct PlainRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub timestamp_ms: i64,
    pub headers: Vec<(String, Bytes)>,
}

/// How to resolve an offset.
#[derive(Debug, Clone, Copy)]
pub enum OffsetQuery {
    Earliest,
    Latest,
    Timestamp(i64),
    /// The first record with the largest timestamp, in either tier (KIP-734).
    MaxTimestamp,
    /// The first offset on local disk (KIP-405's earliest-local).
    EarliestLocal,
    /// The last offset in the cold tier, -1 if none (KIP-1005's latest-tiered).
    LatestTiered,
}

/// A snapshot of one partition's state.
#[derive(Debug, Clone)]
pub struct PartitionState {
    pub partition: u32,
    /// First offset held in either tier.
    pub log_start_offset: i64,
    /// First offset held on local disk.
    pub local_log_start_offset: i64,
    pub remote_segments: u32,
    pub remote_bytes: u64,
    /// Records below the high watermark not yet in the cold tier.
    pub upload_lag: i64,
    /// The last offload error, until an upload succeeds.
    pub tier_error: Option<String>,
    /// End of what is committed: consumers read below it.
    pub high_watermark: i64,
    /// End of the local log: the next record's offset.
    pub log_end_offset: i64,
    pub size_bytes: u64,
    pub segments: u32,
    pub leader_epoch: i32,
    pub role: Role,
}

pub struct Partition {
    pub topic: String,
    /// The topic's id: which incarnation of the name this partition belongs to.
    pub topic_id: String,
    pub id: u32,
    pub(crate) log: RwLock<Log>,
    pub(crate) high_watermark: watch::Sender<i64>,
    /// The log end offset, for follower fetches waiting on the leader to grow.
    pub(crate) log_end: watch::Sender<i64>,
    pub(crate) replica: parking_lot::Mutex<crate::replica::ReplicaState>,
    /// The topic's configs, shared by its partitions and changed by alter.
    pub(crate) config: Arc<RwLock<EffectiveConfig>>,
    deleted: AtomicBool,
    closed: AtomicBool,
    /// Set while the partition waits in the `flush.ms` queue (see `flush`).
    pub(crate) flush_queued: AtomicBool,
    /// The partition's share of the cold tier.
    pub tier: Tier,
    /// Idempotent producers' sequences (changed under the log's write lock, in log
    /// order; see `producers`).
    pub(crate) producers: parking_lot::Mutex<crate::producers::Producers>,
    /// When the producer state was last snapshotted, and the segment count then.
    producers_snapshot: parking_lot::Mutex<(i64, usize)>,
    pub(crate) shared: Arc<Shared>,
}

impl Partition {
    /// Opens partition `id`'s log in `dir` (a new log starts at `options.start_offset`).
    pub fn open(
        shared: &Arc<Shared>,
        topic: &str,
        topic_id: &str,
        id: u32,
        dir: std::path::PathBuf,
        config: Arc<RwLock<EffectiveConfig>>,
        options: strata_log::OpenOptions,
    ) -> Result<Arc<Self>> {
        let log = open_log(shared, topic, id, dir, &config.read(), options)?;
        let producers = crate::producers::state_of(&log);
        let leo = log.log_end_offset();
        // A single broker is its partitions' only replica, in sync with itself:
        // everything in the log is committed. A cluster member knows nothing yet: its
        // HW starts at the log start and moves as the leader (or the in-sync set, when
        // it leads) says.
        let (replica, hw) = if shared.clustered {
            (
                crate::replica::ReplicaState::unassigned(),
                log.log_start_offset(),
            )
        } else {
            (crate::replica::ReplicaState::single(), leo)
        };
        Ok(Arc::new(Self {
            topic: topic.to_string(),
            topic_id: topic_id.to_string(),
            id,
            log: RwLock::new(log),
            high_watermark: watch::channel(hw).0,
            log_end: watch::channel(leo).0,
            replica: parking_lot::Mutex::new(replica),
            config,
            deleted: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            flush_queued: AtomicBool::new(false),
            tier: Tier::new(topic, topic_id, id, shared.clock.now_ms()),
            producers: parking_lot::Mutex::new(producers),
            producers_snapshot: parking_lot::Mutex::new((shared.clock.now_ms(), 0)),
            shared: shared.clone(),
        }))
    }

    pub(crate) fn err(&self, source: LogError) -> Error {
        Error::Log {
            topic: self.topic.clone(),
            partition: self.id,
            source,
        }
    }

    /// The error for `offset` outside what the partition holds, as of `s`.
    pub fn out_of_range(&self, offset: i64, s: &PartitionState) -> Error {
        Error::InvalidOffset {
            topic: self.topic.clone(),
            partition: self.id,
            offset,
            start: s.log_start_offset,
            end: s.high_watermark,
        }
    }

    pub fn config(&self) -> EffectiveConfig {
        self.config.read().clone()
    }

    /// The broker's metrics, which this partition counts into.
    pub fn shared_metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    pub fn state(&self) -> PartitionState {
        let log = self.log.read();
        let remote = self.tier.remote.read();
        let (role, leader_epoch) = self.role();
        let local_start = log.log_start_offset();
        let start = start_over_tiers(&remote, local_start);
        let uploaded_to = remote.next_offset().unwrap_or(local_start);
        let hw = self.high_watermark();
        PartitionState {
            partition: self.id,
            log_start_offset: start,
            local_log_start_offset: local_start,
            remote_segments: remote.segments.len() as u32,
            remote_bytes: remote.segments.iter().map(|s| s.size_bytes).sum(),
            upload_lag: (hw - uploaded_to).max(0),
            tier_error: self.tier.last_error(),
            high_watermark: hw,
            log_end_offset: log.log_end_offset(),
            size_bytes: log.size_bytes(),
            segments: log.segment_count() as u32,
            leader_epoch,
            role,
        }
    }

    /// fsyncs the partition's log if anything is unflushed; whether it did.
    pub(crate) fn flush_log(&self) -> std::result::Result<bool, LogError> {
        let mut log = self.log.write();
        if log.unflushed_records() == 0 {
            return Ok(false);
        }
        log.flush().map(|()| true)
    }

    pub fn log_read(&self) -> parking_lot::RwLockReadGuard<'_, Log> {
        self.log.read()
    }

    /// Moves the high watermark forward to `hw` (never back, never past the LEO) and
    /// wakes its waiters.
    pub(crate) fn publish_high_watermark(&self, hw: i64) {
        self.high_watermark.send_if_modified(|v| {
            let moved = hw > *v;
            if moved {
                *v = hw;
            }
            moved
        });
    }

    /// Restarts the log at `offset` if it ends below it (the cold tier's end, when the
    /// local log lost a tail the bucket has): the LEO and HW move up there. Returns the
    /// local end it found when it did; never moves anything back.
    pub fn raise_start(&self, offset: i64) -> Result<Option<i64>> {
        let mut log = self.log.write();
        let end = log.log_end_offset();
        if end >= offset {
            return Ok(None);
        }
        log.reset_to(offset).map_err(|e| self.err(e))?;
        self.reload_producers(&log);
        // HW <= old LEO < offset: this moves it forward.
        self.log_end.send_replace(offset);
        self.high_watermark.send_replace(offset);
        Ok(Some(end))
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.read().log_end_offset()
    }

    pub fn leader_epoch(&self) -> i32 {
        self.replica.lock().leader_epoch
    }

    /// OffsetForLeaderEpoch as the leader answers a consumer: the largest epoch this log
    /// has that is at most `epoch`, and where it ends (the next epoch's start, or the
    /// log end); `None` when every epoch here is newer. `current` is the epoch the
    /// client believes the leader is in (-1: unchecked).
    pub fn end_offset_for_epoch(&self, current: i32, epoch: i32) -> Result<Option<(i32, i64)>> {
        self.check_leader((current >= 0).then_some(current))?;
        let log = self.log.read();
        Ok(log.epochs().end_offset_for(epoch, log.log_end_offset()))
    }

    /// Waits until the high watermark moves past `offset`, the partition is deleted, or
    /// the deadline passes.
    pub async fn wait_beyond(&self, offset: i64, deadline: Option<tokio::time::Instant>) {
        let mut rx = self.high_watermark.subscribe();
        let wait = rx.wait_for(|&hw| hw > offset || self.is_deleted() || self.is_closed());
        match deadline {
            Some(d) => {
                let _ = tokio::time::timeout_at(d, wait).await;
            }
            None => {
                let _ = wait.await;
            }
        }
    }

    /// Fetches and subscriptions currently waiting for this partition to grow.
    pub fn waiters(&self) -> usize {
        self.high_watermark.receiver_count()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Relaxed)
    }

    /// True once the broker is shutting down: waiters stop waiting.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Marks the partition deleted, under the log's lock (a compaction swap checks the
    /// flag under it, so it is either done before the directory moves or never starts),
    /// and wakes its waiters.
    pub fn mark_deleted(&self) {
        let _log = self.log.write();
        self.deleted.store(true, Ordering::Relaxed);
        self.wake();
    }

    /// Ends long polls and subscriptions on this partition (shutdown).
    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.wake();
    }

    /// Applies a changed topic config to the log.
    pub fn set_config(&self, config: &EffectiveConfig) {
        self.log.write().set_config(config.log_config());
    }

    /// Closes the log (fsynced, active indexes written). Blocking I/O.
    pub fn close(&self) -> std::result::Result<(), LogError> {
        self.log.write().close()
    }

    /// Reads local batches from `offset`, below the HW; at most `max_bytes` but at
    /// least one batch. Returns the batches, the HW and the local log start.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<(Bytes, i64, i64)> {
        if self.is_deleted() {
            return Err(Error::UnknownTopic(self.topic.clone()));
        }
        // The HW before the read: batches past it are left out, and it only moves on.
        let hw = self.high_watermark();
        let log = self.log.read();
        if offset > log.log_end_offset() {
            // Past the log's end is out of range.
            drop(log);
            return Err(self.out_of_range(offset, &self.state()));
        }
        if offset >= hw {
            // Not committed (yet): nothing to read. A new leader's HW trails the old
            // one's until its followers have fetched; a consumer there waits instead
            // of hearing out of range.
            return Ok((Bytes::new(), hw, log.log_start_offset()));
        }
        let buf = log
            .read_below(offset, max_bytes, hw)
            .map_err(|e| self.err(e))?;
        Ok((Bytes::from(buf), hw, log.log_start_offset()))
    }

    /// Reads local batches from `offset` up to the log end, past the HW: for a new
    /// leader rebuilding state from its own log (the group coordinator), which holds
    /// everything it will commit. Returns the batches and the log end.
    pub fn read_to_log_end(&self, offset: i64, max_bytes: usize) -> Result<(Bytes, i64)> {
        if self.is_deleted() {
            return Err(Error::UnknownTopic(self.topic.clone()));
        }
        let log = self.log.read();
        let end = log.log_end_offset();
        if offset >= end {
            return Ok((Bytes::new(), end));
        }
        let buf = log
            .read_below(offset, max_bytes, end)
            .map_err(|e| self.err(e))?;
        Ok((Bytes::from(buf), end))
    }

    /// Appends producer batches (checked whole first), or, when `batches` is empty,
    /// `records` built into one batch here, on the leader (in `epoch`, when the request
    /// names one). With `acks_all`, refuses when the in-sync set is below
    /// `min.insync.replicas`; the caller then waits for the HW
    /// ([`Partition::wait_committed`]). With no followers in sync the HW moves past the
    /// batches before this returns.
    pub fn append(
        self: &Arc<Self>,
        batches: Bytes,
        records: &[PlainRecord],
        epoch: Option<i32>,
        acks_all: bool,
    ) -> Result<Produced> {
        let (topic, partition) = (self.topic.as_str(), self.id);
        let (max, (before_max, after_max), compacted) = {
            let c = self.config.read();
            (
                c.max_message_bytes(),
                c.timestamp_bounds(),
                c.cleanup_policy().compact,
            )
        };
        let now = self.shared.clock.now_ms();
        let mut buf = if batches.is_empty() {
            if records.is_empty() {
                return Err(Error::InvalidRequest(
                    "produce request holds no records: send batches or records".into(),
                ));
            }
            BytesMut::from(&build_batch(records, now)[..])
        } else {
            BytesMut::from(batches)
        };
        let invalid = |source| Error::InvalidBatch {
            topic: topic.to_string(),
            partition,
            source,
        };
        // Check every batch before anything is written: all or nothing.
        let mut pos = 0;
        let mut batch_count = 0;
        let mut idempotent = None;
        while pos < buf.len() {
            let len = match strata_record::batch_total_len(&buf[pos..]) {
                Some(r) => r.map_err(invalid)?,
                None => {
                    return Err(invalid(strata_record::RecordError::Truncated {
                        need: strata_record::LENGTH_PREFIX,
                        have: buf.len() - pos,
                    }));
                }
            };
            if len > max {
                return Err(Error::MessageTooLarge {
                    topic: topic.to_string(),
                    size: len,
                    max,
                });
            }
            let (batch, min_ts) =
                strata_record::Batch::validate_with_min_timestamp(&buf[pos..]).map_err(invalid)?;
            let h = batch.header();
            batch_count += 1;
            if h.producer_id >= 0 {
                if h.producer_epoch < 0 || h.base_sequence < 0 {
                    return Err(Error::InvalidRequest(format!(
                        "a batch of producer {} has epoch {} and base sequence {}: an idempotent batch needs both at least 0",
                        h.producer_id, h.producer_epoch, h.base_sequence
                    )));
                }
                idempotent = Some(*h);
            }
            // Compaction keeps the latest record per key: a record without one has no
            // place in a compacted topic (Kafka refuses it too).
            if compacted
                && batch
                    .decoded()
                    .map_err(|e| Error::InvalidRequest(e.to_string()))?
                    .iter()
                    .any(|r| r.is_ok_and(|r| r.key.is_none()))
            {
                return Err(Error::InvalidRequest(format!(
                    "topic {topic:?} is compacted (cleanup.policy=compact) and keeps the latest record per key: every record needs a key; give each record one, or produce to a topic with cleanup.policy=delete"
                )));
            }
            // Kafka's KIP-937 bounds: a timestamp far in the future would pin time
            // retention for as long; one far in the past would expire at once. They hold
            // whatever the batch's timestamp-type bit says: nothing here stamps append
            // time, so the producer's timestamps are what is stored.
            {
                let bad = |timestamp: i64, direction, key, limit| Error::InvalidTimestamp {
                    topic: topic.to_string(),
                    partition,
                    timestamp,
                    now,
                    distance: (timestamp - now).saturating_abs(),
                    direction,
                    key,
                    limit,
                };
                if now.saturating_sub(min_ts) > before_max {
                    let key = "message.timestamp.before.max.ms";
                    return Err(bad(min_ts, "before", key, before_max));
                }
                if h.max_timestamp.saturating_sub(now) > after_max {
                    let key = "message.timestamp.after.max.ms";
                    return Err(bad(h.max_timestamp, "after", key, after_max));
                }
            }
            pos += len;
        }
        if idempotent.is_some() && batch_count > 1 {
            return Err(Error::InvalidRequest(
                "an idempotent produce carries exactly one batch per partition (Kafka's rule): send the batches in separate requests".into(),
            ));
        }
        let (info, start, leader_epoch) = {
            let mut log = self.log.write();
            let r = self.replica.lock();
            // Under the log's lock: a role change takes it, so nothing is appended in
            // a leadership that has ended.
            self.check_leader_locked(&r, epoch)?;
            if acks_all {
                self.check_min_isr(&r)?;
            }
            // Only an idempotent batch takes the producers' lock.
            let mut producers = idempotent.as_ref().map(|h| (h, self.producers.lock()));
            if let Some((h, producers)) = &producers {
                match producers.check(h) {
                    Ok(crate::producers::Check::Append) => {}
                    // Sent again after a lost answer: answered with where it is.
                    Ok(crate::producers::Check::Duplicate(b)) => {
                        self.shared.metrics.produce_duplicates.add(1);
                        return Ok(Produced {
                            base_offset: b.first_offset,
                            last_offset: b.last_offset,
                            record_count: h.record_count as u32,
                            log_start_offset: log.log_start_offset(),
                            leader_epoch: r.leader_epoch,
                        });
                    }
                    Err(e) => return Err(e.into_error(topic, partition)),
                }
            }
            let info = log
                .append(&mut buf, r.leader_epoch)
                .map_err(|e| self.err(e))?;
            if let Some((h, producers)) = &mut producers {
                producers.record(h, info.base_offset);
            }
            drop(producers);
            let leo = info.last_offset + 1;
            self.log_end.send_replace(leo);
            // Under the log's lock, so concurrent appends publish in order.
            self.recompute_high_watermark(&r, leo);
            (info, log.log_start_offset(), r.leader_epoch)
        };
        if let Some(ms) = info.flush_after_ms {
            self.shared.flusher.schedule(self, ms);
        }
        self.shared.metrics.produce_bytes.add(buf.len() as u64);
        Ok(Produced {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            record_count: info.record_count,
            log_start_offset: start,
            leader_epoch,
        })
    }

    /// Reads from whichever tier holds `offset`; the range check covers both tiers. A
    /// local read that local retention overtakes (the segment deleted between the look
    /// at the tiers and the read) is read again from the cold tier, which by then holds
    /// it: a consumer never hears OUT_OF_RANGE for an offset the partition still has.
    pub async fn read_any(&self, offset: i64, max_bytes: usize) -> Result<(Bytes, i64, i64)> {
        match self.read_any_once(offset, max_bytes).await {
            Err(Error::Log {
                source: LogError::OffsetOutOfRange { .. },
                ..
            }) if offset < self.state().local_log_start_offset => {
                self.read_any_once(offset, max_bytes).await
            }
            r => r,
        }
    }

    async fn read_any_once(&self, offset: i64, max_bytes: usize) -> Result<(Bytes, i64, i64)> {
        let s = self.state();
        if offset < s.local_log_start_offset {
            self.cold_view_ready()?;
        }
        if offset < s.log_start_offset || offset > s.log_end_offset.max(s.high_watermark) {
            return Err(self.out_of_range(offset, &s));
        }
        if offset < s.local_log_start_offset {
            let found = self
                .tier
                .remote
                .read()
                .find_with_next(offset)
                .map(|(seg, next)| (seg.clone(), next.cloned()));
            if let Some((seg, next)) = found {
                let cold = &self.shared.cold;
                let bytes = match cold.read(&seg, next.as_ref(), offset, max_bytes).await {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        // Retention may have removed the object while this read was on its
                        // way to it: then the offset is gone, as the consumer must learn.
                        let now = self.state();
                        if offset < now.log_start_offset {
                            return Err(self.out_of_range(offset, &now));
                        }
                        return Err(remote_err(self, e));
                    }
                };
                self.shared.metrics.remote_reads.add(1);
                self.shared
                    .metrics
                    .remote_read_bytes
                    .add(bytes.len() as u64);
                return Ok((bytes, s.high_watermark, s.log_start_offset));
            }
        }
        strata_failpoint::hit("fetch-before-local-read", || {
            self.log_read().dir().to_string_lossy().into_owned()
        });
        let (bytes, hw, _) = self.read(offset, max_bytes)?;
        Ok((bytes, hw, s.log_start_offset))
    }

    /// Long-poll fetch: answers as soon as `min_bytes` are available (at least one
    /// batch), or when `max_wait` passes with whatever there is.
    pub async fn fetch(
        &self,
        offset: i64,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
    ) -> Result<Fetched> {
        let max_bytes = fetch_size(max_bytes);
        let min_bytes = min_bytes.clamp(1, max_bytes);
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            // Consumers read from the leader (a follower's HW lags behind it).
            self.check_leader(None)?;
            let (batches, hw, start) = self.read_any(offset, max_bytes).await?;
            let done = batches.len() >= min_bytes || tokio::time::Instant::now() >= deadline;
            if done {
                return Ok(Fetched {
                    batches,
                    high_watermark: hw,
                    log_start_offset: start,
                });
            }
            // Not enough yet: wait for the next commit past what we have seen.
            let seen = if batches.is_empty() { offset } else { hw };
            self.wait_beyond(seen.max(offset), Some(deadline)).await;
            if self.is_deleted() {
                return Err(Error::UnknownTopic(self.topic.clone()));
            }
            if self.is_closed() {
                return Err(Error::ShuttingDown);
            }
        }
    }

    /// Resolves an offset over both tiers: (offset, its timestamp or -1, log start, hw).
    pub async fn list_offsets(&self, query: OffsetQuery) -> Result<(i64, i64, i64, i64)> {
        if !matches!(query, OffsetQuery::Latest) {
            self.cold_view_ready()?;
        }
        let s = self.state();
        let (start, end) = (s.log_start_offset, s.high_watermark);
        let (offset, ts) = match query {
            OffsetQuery::Earliest => (start, -1),
            OffsetQuery::Latest => (end, -1),
            OffsetQuery::EarliestLocal => (s.local_log_start_offset, -1),
            OffsetQuery::LatestTiered => (self.last_tiered_offset(), -1),
            OffsetQuery::Timestamp(t) => self.first_at_or_after(t).await?,
            // The first record at the largest timestamp held: found as the first at or
            // after it. (A largest timestamp only in a record not yet committed answers
            // none until it is.)
            OffsetQuery::MaxTimestamp => match self.max_timestamp() {
                i64::MIN => (-1, -1),
                max => self.first_at_or_after(max).await?,
            },
        };
        Ok((offset, ts, start, end))
    }

    /// The first committed record with a timestamp at or after `t`, in either tier;
    /// (-1, -1) if none.
    async fn first_at_or_after(&self, t: i64) -> Result<(i64, i64)> {
        if let Some(found) = self.remote_offset_for_timestamp(t).await? {
            return Ok(found);
        }
        match self.log.read().offset_for_timestamp(t) {
            // Only a committed record answers (as of now: the remote lookup may have
            // taken a while).
            Ok(Some((o, ts))) if o < self.high_watermark() => Ok((o, ts)),
            Ok(_) => Ok((-1, -1)),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Rebuilds the producer state after the log lost a tail or restarted (called with
    /// the log's write lock held).
    pub(crate) fn reload_producers(&self, log: &Log) {
        *self.producers.lock() = crate::producers::state_of(log);
    }

    /// Forgets producers silent for `producer.id.expiration.ms`, and snapshots the
    /// producer state when it changed and a segment rolled or 30 s passed since the
    /// last snapshot (so a restart replays at most that much). Blocking file work.
    fn producer_housekeeping(&self) {
        let now = self.shared.clock.now_ms();
        let (dir, bytes) = {
            let log = self.log.read();
            let mut p = self.producers.lock();
            p.expire(now, crate::producers::DEFAULT_EXPIRATION_MS);
            let mut last = self.producers_snapshot.lock();
            let rolled = log.segment_count() != last.1;
            if !p.is_dirty() || (!rolled && now - last.0 < 30_000) {
                return;
            }
            let end = log.log_end_offset();
            let below = match crate::producers::last_batch_below(&log, end) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(log = log.name(), error = %e, "could not snapshot producer state");
                    return;
                }
            };
            *last = (now, log.segment_count());
            (log.dir().to_path_buf(), p.take_snapshot(end, below))
        };
        // Outside the lock: the snapshot names the batch it ends at, so a load checks
        // it still matches the log (a truncation in between makes it not).
        if let Err(e) = crate::producers::write_snapshot(&dir, &bytes) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not write the producer state snapshot");
        }
    }

    /// `flush.ms`/`segment.ms` and local retention (with the cold tier on, only what it
    /// already holds may leave the disk), and the producer state's upkeep. Blocking
    /// file work.
    pub fn housekeeping(&self) {
        self.producer_housekeeping();
        let guard = crate::tier::Uploaded {
            upto: self.config.read().remote_enabled().then(|| {
                let m = self.tier.remote.read();
                m.next_offset().unwrap_or(i64::MIN)
            }),
        };
        let mut log = self.log.write();
        if let Err(e) = log.tick() {
            tracing::warn!(log = log.name(), error = %e, "flush/roll failed");
        }
        match log.enforce_retention(&guard) {
            Ok(deleted) => self
                .shared
                .metrics
                .retention_deleted_segments
                .add(deleted.len() as u64),
            Err(e) => tracing::warn!(log = log.name(), error = %e, "retention failed"),
        }
    }

    /// One compaction pass if the log is dirty enough. The rewrite runs without the
    /// log's lock; only the swap takes it. `abort` is polled between segments.
    pub fn compact(&self, abort: &dyn Fn() -> bool) {
        if self.is_deleted() || self.is_closed() {
            return;
        }
        let Some(pass) = self.log.read().cleanable() else {
            return;
        };
        // A failed fsync of the pass (its new files, the partition directory) counts as
        // the log's own.
        let run = pass.run(abort).map_err(|e| self.log.write().note_error(e));
        let result = run.and_then(|cleaned| {
            let Some(cleaned) = cleaned else {
                return Ok(None);
            };
            let mut log = self.log.write();
            // A delete marks its partitions under this lock: a pass that finished after
            // it must not touch the directory (which a new incarnation of the name may
            // use by now). What it wrote is in `cleaned/`, which the next pass or start
            // removes.
            if self.is_deleted() || self.is_closed() {
                return Ok(None);
            }
            log.swap_cleaned(cleaned)
        });
        let m = &self.shared.metrics;
        match result {
            Ok(Some(report)) => {
                m.compactions.add(1);
                m.compaction_removed_records.add(report.records_removed);
                m.compaction_reclaimed_bytes
                    .add(report.bytes_before.saturating_sub(report.bytes_after));
            }
            Ok(None) => {}
            Err(e) => {
                m.compaction_errors.add(1);
                tracing::warn!(topic = %self.topic, partition = self.id, error = %e, "compaction failed; retrying at the next interval");
            }
        }
    }
}

/// The first offset in either tier, given the cold tier's manifest and the local log's
/// start.
pub(crate) fn start_over_tiers(remote: &strata_tier::manifest::Manifest, local_start: i64) -> i64 {
    remote
        .segments
        .first()
        .map(|s| s.base_offset.min(local_start))
        .unwrap_or(local_start)
}

/// Opens a partition log under `dir`.
pub fn open_log(
    shared: &Shared,
    topic: &str,
    id: u32,
    dir: std::path::PathBuf,
    config: &EffectiveConfig,
    options: strata_log::OpenOptions,
) -> Result<Log> {
    let (log, report) = Log::open_with(
        dir,
        format!("{topic}-{id}"),
        config.log_config(),
        shared.clock.clone(),
        options,
    )
    .map_err(|source| Error::Log {
        topic: topic.to_string(),
        partition: id,
        source,
    })?;
    if report.truncated_bytes > 0 {
        shared.metrics.log_recovery_truncations.add(1);
    }
    shared
        .metrics
        .log_recovery_scanned_bytes
        .add(report.scanned_bytes);
    Ok(log)
}

/// Builds plain records into one batch; records without a timestamp get `now`.
fn build_batch(records: &[PlainRecord], now: i64) -> Vec<u8> {
    let ts = |r: &PlainRecord| {
        if r.timestamp_ms > 0 {
            r.timestamp_ms
        } else {
            now
        }
    };
    let mut b = BatchBuilder::new(ts(&records[0]), 1024);
    let mut headers = Vec::new();
    for r in records {
        headers.clear();
        headers.extend(r.headers.iter().map(|(k, v)| (k.as_str(), Some(&v[..]))));
        b.append(ts(r), r.key.as_deref(), r.value.as_deref(), &headers);
    }
    b.finish_vec()
}
