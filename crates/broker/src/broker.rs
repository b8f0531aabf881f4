//! Topics, partitions and the semantics of produce, fetch and admin requests.
//!
//! Data directory layout:
//! ```text
//! <data-dir>/.lock                       held while a broker runs on this directory
//! <data-dir>/.clean-shutdown             written last by a clean shutdown, removed at
//!                                        start before anything is written: while it is
//!                                        there, active segments need no recovery scan
//! <data-dir>/topics/<topic>/topic.json   name, id, partitions, replication factor, overrides
//! <data-dir>/topics/<topic>/<n>/         partition n's log (see strata-log)
//! <data-dir>/tombstones/<topic_id>.json  a deleted topic whose objects are still being
//!                                        removed from the bucket (see `deletion`)
//! <data-dir>/staging/creating-<t>       a create in progress (removed at start-up)
//! <data-dir>/staging/deleted-<t>        a delete in progress (removed at start-up)
//! ```
//! A topic appears by renaming a complete directory into place and disappears by
//! renaming it away, so a crash never leaves half a topic. Every topic has an id, fixed
//! at creation (Kafka's topic ids, KIP-516): a topic deleted and created again under the
//! same name is another incarnation with another id, and nothing keyed by the id (its
//! objects, manifests and cache entries) is ever shared between the two.
//!
//! Each partition's log sits behind its own lock: appends take it for writing, reads for
//! reading. The high watermark is published on a `watch` channel that long-poll fetches
//! and subscriptions wait on.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use strata_log::{Clock, Log, LogError};
use strata_record::BatchBuilder;
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::groups::OFFSETS_TOPIC;
use crate::metrics::Metrics;
use crate::topic_config::{self, EffectiveConfig};

/// Written in the data directory by a clean shutdown (see the module docs).
const CLEAN_SHUTDOWN: &str = ".clean-shutdown";

/// Largest fetch answer, whatever the client asks for.
pub const MAX_FETCH_BYTES: usize = 64 << 20;
/// Fetch size when the client leaves it at 0.
pub const DEFAULT_FETCH_BYTES: usize = 1 << 20;
pub const MAX_PARTITIONS: i64 = 10_000;

/// What is persisted about a topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    /// Fixed at creation; empty only in metadata written before topics had ids (such a
    /// topic is given one when it is loaded).
    #[serde(default)]
    pub id: String,
    pub partitions: u32,
    pub replication_factor: u32,
    pub configs: BTreeMap<String, String>,
    pub created_ms: i64,
}

pub struct Topic {
    meta: RwLock<TopicMeta>,
    config: RwLock<EffectiveConfig>,
    partitions: Vec<Arc<Partition>>,
    dir: PathBuf,
    /// False until the topic's metadata is stored in the bucket (after create/alter).
    pub(crate) meta_in_bucket: AtomicBool,
}

impl Topic {
    pub fn meta(&self) -> TopicMeta {
        self.meta.read().clone()
    }
    pub fn config(&self) -> EffectiveConfig {
        self.config.read().clone()
    }
    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }
}

pub struct Partition {
    pub topic: String,
    /// The topic's id: which incarnation of the name this partition belongs to.
    pub topic_id: String,
    pub id: u32,
    log: RwLock<Log>,
    high_watermark: watch::Sender<i64>,
    leader_epoch: i32,
    deleted: AtomicBool,
    closed: AtomicBool,
    /// Remote segments in the cold tier (a copy of the bucket's manifest).
    pub(crate) remote: RwLock<strata_tier::manifest::Manifest>,
    pub(crate) tier: parking_lot::Mutex<crate::tiering::TierState>,
    /// Bytes of sealed local segments not yet in the cold tier, as offload last saw them.
    pub(crate) upload_backlog: std::sync::atomic::AtomicU64,
    /// Woken whenever offload commits a segment or fails, for produce waiting on it.
    pub(crate) offload_progress: tokio::sync::Notify,
    /// Produce waits while `upload_backlog` is above this (see `wait_for_offload`).
    pub(crate) backlog_ceiling: std::sync::atomic::AtomicU64,
    /// When offload last committed a segment (broker clock, ms).
    pub(crate) last_upload_ms: std::sync::atomic::AtomicI64,
    /// Set while the partition waits in the `flush.ms` queue (see `flush`).
    pub(crate) flush_queued: AtomicBool,
    /// Held while offload or remote retention works on the partition, so deleting the
    /// topic can wait for uploads under way before it removes the topic's objects.
    pub(crate) tier_work: tokio::sync::Mutex<()>,
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
    pub high_watermark: i64,
    pub size_bytes: u64,
    pub segments: u32,
    pub leader_epoch: i32,
}

impl Partition {
    fn err(&self, source: LogError) -> BrokerError {
        BrokerError::Log {
            topic: self.topic.clone(),
            partition: self.id,
            source,
        }
    }

    /// The error for `offset` outside what the partition holds, as of `s`.
    pub(crate) fn out_of_range(&self, offset: i64, s: &PartitionState) -> BrokerError {
        BrokerError::InvalidOffset {
            topic: self.topic.clone(),
            partition: self.id,
            offset,
            start: s.log_start_offset,
            end: s.high_watermark,
        }
    }

    pub fn state(&self) -> PartitionState {
        let log = self.log.read();
        let remote = self.remote.read();
        let local_start = log.log_start_offset();
        let start = remote
            .segments
            .first()
            .map(|s| s.base_offset.min(local_start))
            .unwrap_or(local_start);
        let uploaded_to = remote.next_offset().unwrap_or(local_start);
        PartitionState {
            partition: self.id,
            log_start_offset: start,
            local_log_start_offset: local_start,
            remote_segments: remote.segments.len() as u32,
            remote_bytes: remote.segments.iter().map(|s| s.size_bytes).sum(),
            upload_lag: (log.log_end_offset() - uploaded_to).max(0),
            tier_error: self.tier.lock().last_error.clone(),
            high_watermark: log.log_end_offset(),
            size_bytes: log.size_bytes(),
            segments: log.segment_count() as u32,
            leader_epoch: self.leader_epoch,
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

    pub(crate) fn log_write(&self) -> parking_lot::RwLockWriteGuard<'_, Log> {
        self.log.write()
    }

    /// Moves the high watermark forward to `hw` (never back) and wakes its waiters.
    pub(crate) fn publish_high_watermark(&self, hw: i64) {
        self.high_watermark.send_if_modified(|v| {
            let moved = hw > *v;
            if moved {
                *v = hw;
            }
            moved
        });
    }

    pub(crate) fn log_read(&self) -> parking_lot::RwLockReadGuard<'_, Log> {
        self.log.read()
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
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

    /// Reads batches from `offset`; at most `max_bytes` but at least one batch.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<(Bytes, i64, i64)> {
        if self.is_deleted() {
            return Err(BrokerError::UnknownTopic(self.topic.clone()));
        }
        let log = self.log.read();
        let buf = log.read(offset, max_bytes).map_err(|e| self.err(e))?;
        Ok((
            Bytes::from(buf),
            log.log_end_offset(),
            log.log_start_offset(),
        ))
    }
}

/// Result of a produce.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: u32,
    pub log_start_offset: i64,
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
}

pub struct Broker {
    config: BrokerConfig,
    clock: Arc<dyn Clock>,
    pub(crate) topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    admin: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
    topics_dir: PathBuf,
    staging_dir: PathBuf,
    closing: watch::Sender<bool>,
    pub(crate) bucket: strata_tier::store::Bucket,
    pub(crate) cold: Arc<strata_tier::read::ColdReader>,
    /// Segments being encoded and uploaded at once, over all partitions.
    pub(crate) upload_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) groups: parking_lot::Mutex<crate::groups::Groups>,
    pub(crate) group_snapshots: crate::groups::SnapshotState,
    pub(crate) deletions: crate::deletion::Deletions,
    pub(crate) flusher: crate::flush::Flusher,
    _lock: File,
}

/// Kafka's topic name rules.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(BrokerError::InvalidTopicName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("a topic name must not be empty");
    }
    if name.len() > 249 {
        return bad("a topic name is at most 249 characters");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("use only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// A new topic id: 16 random bytes (a version 4 UUID), written as Kafka writes topic ids
/// (URL-safe base64 without padding, 22 characters).
pub fn new_topic_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

/// Writes `value` as JSON to `path` durably: a temp file, fsynced, renamed into place,
/// and the directory fsynced.
pub(crate) fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let data = serde_json::to_vec_pretty(value).expect("metadata serializes");
    let ctx = |e| BrokerError::io(format!("writing {}", path.display()), e);
    {
        use std::io::Write;
        let mut f = File::create(&tmp).map_err(ctx)?;
        f.write_all(&data).map_err(ctx)?;
        f.sync_all().map_err(ctx)?;
    }
    std::fs::rename(&tmp, path).map_err(ctx)?;
    sync_dir(path.parent().expect("has parent"))
}

/// In the data directory while the offsets topic waits to be filled from the bucket.
const OFFSETS_RESTORE_PENDING: &str = ".offsets-restore-pending";

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BrokerError::io(format!("syncing {}", dir.display()), e))
}

impl Broker {
    /// Opens the data directory, recovering every topic's logs, and the object store,
    /// recovering topics that only the bucket still has.
    pub async fn open(config: BrokerConfig, clock: Arc<dyn Clock>) -> Result<Arc<Self>> {
        config.validate()?;
        let bucket =
            crate::tiering::open_bucket(&config.object_store_url(), &config.object_store_options)
                .await?;
        let data = &config.data_dir;
        std::fs::create_dir_all(data).map_err(|e| {
            BrokerError::io(format!("creating data directory {}", data.display()), e)
        })?;
        let lock_path = data.join(".lock");
        let lock = File::create(&lock_path)
            .map_err(|e| BrokerError::io(format!("creating {}", lock_path.display()), e))?;
        if lock.try_lock().is_err() {
            return Err(BrokerError::InvalidConfig(format!(
                "data directory {} is in use by another strata server; stop it or use another --data-dir",
                data.display()
            )));
        }
        let topics_dir = data.join("topics");
        std::fs::create_dir_all(&topics_dir)
            .map_err(|e| BrokerError::io(format!("creating {}", topics_dir.display()), e))?;
        // Leftovers of an interrupted create or delete: finish them by removing them.
        let staging_dir = data.join("staging");
        if staging_dir.exists() {
            tracing::info!(dir = %staging_dir.display(), "removing leftovers of interrupted creates/deletes");
            std::fs::remove_dir_all(&staging_dir)
                .map_err(|e| BrokerError::io(format!("removing {}", staging_dir.display()), e))?;
        }
        std::fs::create_dir_all(&staging_dir)
            .map_err(|e| BrokerError::io(format!("creating {}", staging_dir.display()), e))?;
        let deletions = crate::deletion::Deletions::open(data)?;
        // Uploads a crash cut short, on a file:// store. Only now, holding the data
        // directory, is it sure that no other broker's upload is under way there.
        let b = bucket.clone();
        let removed = tokio::task::spawn_blocking(move || b.remove_abandoned_uploads())
            .await
            .unwrap_or(0);
        if removed > 0 {
            tracing::info!(files = removed, "removed uploads a crash cut short");
        }
        let cache: Option<Arc<dyn strata_tier::cache::RowGroupCache>> =
            if config.cold_cache_memory_bytes == 0 && config.cold_cache_disk_bytes == 0 {
                None
            } else {
                let c = strata_tier::cache::FoyerCache::open(
                    &config.data_dir.join("cache"),
                    config.cold_cache_memory_bytes.max(1 << 20),
                    config.cold_cache_disk_bytes.max(16 << 20),
                )
                .await
                .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
                Some(c)
            };
        let read_options = strata_tier::read::ReadOptions {
            span_bytes: (config.cold_read_ahead_bytes / 4).max(1 << 20),
            read_ahead_bytes: config.cold_read_ahead_bytes,
            ..Default::default()
        };
        let cold = strata_tier::read::ColdReader::new(bucket.clone(), cache, read_options);
        let broker = Self {
            cold,
            upload_slots: Arc::new(tokio::sync::Semaphore::new(crate::tiering::UPLOADS_AT_ONCE)),
            config,
            clock,
            topics: RwLock::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            metrics: Arc::new(Metrics::default()),
            topics_dir,
            staging_dir,
            closing: watch::channel(false).0,
            groups: parking_lot::Mutex::new(Default::default()),
            group_snapshots: Default::default(),
            bucket,
            deletions,
            flusher: Default::default(),
            _lock: lock,
        };
        // A clean shutdown closed every log: trust the active segments' index files. The
        // marker goes before anything can be written, so a crash from here on is unclean.
        let marker = broker.config.data_dir.join(CLEAN_SHUTDOWN);
        let clean = marker.exists();
        broker.load_topics(clean)?;
        if clean {
            std::fs::remove_file(&marker)
                .map_err(|e| BrokerError::io(format!("removing {}", marker.display()), e))?;
            sync_dir(&broker.config.data_dir)?;
        }
        tracing::info!(
            clean_shutdown = clean,
            scanned_bytes = broker.metrics.log_recovery_scanned_bytes.get(),
            "opened the partition logs"
        );
        broker.load_manifests().await?;
        broker.recover_from_bucket().await?;
        // A broker rebuilt from the bucket alone fills its new offsets topic with the
        // offsets last copied there. The marker, written before the topic exists and
        // removed once the copy is in it, makes a restore that failed (or crashed) run
        // again at the next start rather than leave the groups empty for good.
        let restore = broker.config.data_dir.join(OFFSETS_RESTORE_PENDING);
        if broker.topic(OFFSETS_TOPIC).is_err() {
            write_json_atomic(&restore, &serde_json::json!({ "restore": "group offsets" }))?;
            let configs = broker.offsets_topic_configs();
            broker.create_topic_now(broker.new_meta(OFFSETS_TOPIC, 1, 1, configs), &[])?;
        }
        if restore.exists() {
            broker.restore_group_offsets().await?;
            std::fs::remove_file(&restore)
                .map_err(|e| BrokerError::io(format!("removing {}", restore.display()), e))?;
            sync_dir(&broker.config.data_dir)?;
        }
        broker.load_groups()?;
        Ok(Arc::new(broker))
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn load_topics(&self, clean_shutdown: bool) -> Result<()> {
        let entries = std::fs::read_dir(&self.topics_dir)
            .map_err(|e| BrokerError::io(format!("listing {}", self.topics_dir.display()), e))?;
        let mut topics = self.topics.write();
        for entry in entries {
            let entry = entry.map_err(|e| {
                BrokerError::io(format!("listing {}", self.topics_dir.display()), e)
            })?;
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            let meta_path = path.join("topic.json");
            let text = std::fs::read(&meta_path)
                .map_err(|e| BrokerError::io(format!("reading {}", meta_path.display()), e))?;
            let mut meta: TopicMeta = serde_json::from_slice(&text).map_err(|e| {
                BrokerError::InvalidConfig(format!(
                    "{} is not valid topic metadata: {e}",
                    meta_path.display()
                ))
            })?;
            if self.deletions.is_deleted(&meta.id) {
                // Deleted, then a crash before its directory was moved away: finish that.
                tracing::info!(topic = %name, topic_id = %meta.id, "finishing the local part of an interrupted delete");
                self.bury(&path)?;
                continue;
            }
            if meta.id.is_empty() {
                meta.id = new_topic_id();
                tracing::warn!(topic = %name, topic_id = %meta.id,
                    "topic metadata had no topic id (written by an earlier version); gave it one. Objects an earlier version offloaded for it, under topics/<topic>/partition=<n>/ without a topic_id=<id> level, are not read");
                write_json_atomic(&meta_path, &meta)?;
            }
            let topic = self.open_topic(meta, path, &[], clean_shutdown)?;
            topics.insert(name, Arc::new(topic));
        }
        tracing::info!(topics = topics.len(), "loaded topics");
        Ok(())
    }

    pub(crate) fn open_topic(
        &self,
        meta: TopicMeta,
        dir: PathBuf,
        starts: &[i64],
        clean_shutdown: bool,
    ) -> Result<Topic> {
        let config = self.effective_config(&meta);
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            let (log, report) =
                self.open_partition_log(&meta, &config, &dir, p, starts, clean_shutdown)?;
            if report.truncated_bytes > 0 {
                self.metrics.log_recovery_truncations.add(1);
            }
            self.metrics
                .log_recovery_scanned_bytes
                .add(report.scanned_bytes);
            let (hw, _) = watch::channel(log.log_end_offset());
            partitions.push(Arc::new(Partition {
                topic: meta.name.clone(),
                topic_id: meta.id.clone(),
                id: p,
                log: RwLock::new(log),
                high_watermark: hw,
                leader_epoch: 0,
                deleted: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                remote: RwLock::new(strata_tier::manifest::Manifest::new(
                    &meta.name, &meta.id, p,
                )),
                tier: parking_lot::Mutex::new(Default::default()),
                upload_backlog: Default::default(),
                offload_progress: tokio::sync::Notify::new(),
                backlog_ceiling: std::sync::atomic::AtomicU64::new(u64::MAX),
                // Offload counts as making progress from the start: produce may wait for
                // it for OFFLOAD_STALL_MS before a missing upload means it has stalled.
                last_upload_ms: std::sync::atomic::AtomicI64::new(self.clock.now_ms()),
                tier_work: tokio::sync::Mutex::new(()),
                flush_queued: AtomicBool::new(false),
            }));
        }
        Ok(Topic {
            meta: RwLock::new(meta),
            config: RwLock::new(config),
            partitions,
            dir,
            meta_in_bucket: AtomicBool::new(false),
        })
    }

    /// Opens partition `p`'s log under the topic directory `dir`; a new log starts at
    /// `starts[p]` (0 where not given).
    fn open_partition_log(
        &self,
        meta: &TopicMeta,
        config: &EffectiveConfig,
        dir: &Path,
        p: u32,
        starts: &[i64],
        clean_shutdown: bool,
    ) -> Result<(Log, strata_log::RecoveryReport)> {
        let options = strata_log::OpenOptions {
            start_offset: starts.get(p as usize).copied().unwrap_or(0),
            clean_shutdown,
        };
        Log::open_with(
            dir.join(p.to_string()),
            format!("{}-{p}", meta.name),
            config.log_config(),
            self.clock.clone(),
            options,
        )
        .map_err(|source| BrokerError::Log {
            topic: meta.name.clone(),
            partition: p,
            source,
        })
    }

    /// The offsets topic's configs, fixed by the broker (as Kafka's `offsets.topic.*`):
    /// compacted, so the latest commit of every group and partition is kept however
    /// quiet the group, and the topic does not grow without end; never offloaded (the
    /// bucket gets a snapshot of the offsets instead, see `groups`).
    fn offsets_topic_configs(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                self.config.offsets_topic_segment_bytes.to_string(),
            ),
        ])
    }

    /// A topic's configs: its own over the broker's defaults. The offsets topic takes
    /// neither: its configs are fixed ([`Broker::offsets_topic_configs`]), whatever an
    /// earlier version stored for it, and no broker-wide default applies to it.
    fn effective_config(&self, meta: &TopicMeta) -> EffectiveConfig {
        if meta.name == OFFSETS_TOPIC {
            EffectiveConfig::new(&BTreeMap::new(), &self.offsets_topic_configs())
        } else {
            EffectiveConfig::new(&self.config.topic_defaults, &meta.configs)
        }
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let t = self.topic(topic)?;
        t.partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| BrokerError::PartitionOutOfRange {
                topic: topic.to_string(),
                partition,
                max: t.partitions.len() as u32 - 1,
            })
    }

    pub fn list_topics(&self) -> Vec<TopicMeta> {
        self.topics.read().values().map(|t| t.meta()).collect()
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i64,
        replication_factor: i64,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>> {
        validate_topic_name(name)?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(BrokerError::InvalidPartitions(partitions));
        }
        let rf = if replication_factor == 0 {
            1
        } else {
            replication_factor
        };
        if rf < 0 {
            return Err(BrokerError::InvalidRequest(format!(
                "replication factor {rf} is invalid: it must be at least 1"
            )));
        }
        if rf > 1 {
            return Err(BrokerError::ReplicationFactor {
                requested: rf,
                available: 1,
            });
        }
        topic_config::validate_all(&configs)?;
        let _admin = self.admin.lock().await;
        self.create_topic_now(self.new_meta(name, partitions, rf, configs), &[])
    }

    /// Creates a topic; the caller holds the admin lock (or is still opening).
    pub(crate) fn new_meta(
        &self,
        name: &str,
        partitions: i64,
        rf: i64,
        configs: BTreeMap<String, String>,
    ) -> TopicMeta {
        TopicMeta {
            name: name.to_string(),
            id: new_topic_id(),
            partitions: partitions as u32,
            replication_factor: rf as u32,
            configs,
            created_ms: self.clock.now_ms(),
        }
    }

    /// Creates a topic whose partition logs start at `starts` (0 where not given).
    pub(crate) fn create_topic_now(&self, meta: TopicMeta, starts: &[i64]) -> Result<Arc<Topic>> {
        let name = meta.name.clone();
        let name = name.as_str();
        let partitions = meta.partitions;
        if self.topics.read().contains_key(name) {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        // Staging names stay short: a topic name may be 249 characters.
        let staging = self
            .staging_dir
            .join(format!("creating-{}", unique_suffix()));
        let dir = self.topics_dir.join(name);
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)
            .map_err(|e| BrokerError::io(format!("creating {}", staging.display()), e))?;
        write_json_atomic(&staging.join("topic.json"), &meta)?;
        // Each partition's log exists, starting where it must (the cold tier's end for
        // a topic rebuilt from the bucket), before the topic appears: a crash after the
        // rename can never leave a partition that restarts at offset 0 under remote data.
        let config = self.effective_config(&meta);
        for p in 0..partitions {
            self.open_partition_log(&meta, &config, &staging, p, starts, false)?;
        }
        std::fs::rename(&staging, &dir)
            .map_err(|e| BrokerError::io(format!("creating {}", dir.display()), e))?;
        sync_dir(&self.topics_dir)?;
        strata_failpoint::crash_at("topic-create-after-rename", || name.to_string());
        let topic = Arc::new(self.open_topic(meta, dir, starts, false)?);
        self.topics.write().insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        if name == OFFSETS_TOPIC {
            return Err(BrokerError::InvalidRequest(format!(
                "{OFFSETS_TOPIC} is internal (it holds consumer group offsets) and cannot be deleted; use `strata group delete`"
            )));
        }
        let _admin = self.admin.lock().await;
        let topic = self.topic(name)?;
        let id = topic.meta().id;
        // Durable before anything changes: after a crash from here on, the topic stays
        // deleted and its removal is finished (see `deletion`).
        self.deletions.record(crate::deletion::Tombstone {
            topic: name.to_string(),
            topic_id: id.clone(),
            deleted_ms: self.clock.now_ms(),
        })?;
        strata_failpoint::crash_at("topic-delete-after-tombstone", || name.to_string());
        self.topics.write().remove(name);
        for p in &topic.partitions {
            // Under the log's lock: a compaction swap (which checks this flag under it)
            // is either done before the directory moves or never starts.
            let _log = p.log.write();
            p.deleted.store(true, Ordering::Relaxed);
            p.high_watermark.send_modify(|_| {});
        }
        let buried = self.bury(&topic.dir);
        self.forget_topic_offsets(name);
        self.metrics.topic_deletions.add(1);
        if let Err(e) = buried {
            // The tombstone makes the delete stick, and must outlive the directory: the
            // removal starts only after the next start has moved the directory away.
            tracing::warn!(topic = name, error = %e, "could not move the deleted topic's files away; the next start will, and then removes its objects");
            return Ok(());
        }
        // Should this request be dropped while it waits (a client that gives up, the
        // shutdown grace ending), removal still starts, a minute on, when uploads under
        // way have long ended.
        let mut start = crate::deletion::StartOnDrop::new(&self.deletions, &id, &*self.clock);
        // Offload sees the partitions deleted and stops; wait for uploads under way, so
        // none lands after the objects are removed.
        for p in &topic.partitions {
            drop(p.tier_work.lock().await);
        }
        start.now();
        tracing::info!(topic = name, topic_id = %id, "deleted topic; its objects are removed in the background");
        Ok(())
    }

    /// Moves a topic directory out of `topics/` and removes it in the background.
    fn bury(&self, dir: &Path) -> Result<()> {
        let grave = self
            .staging_dir
            .join(format!("deleted-{}", unique_suffix()));
        std::fs::rename(dir, &grave)
            .map_err(|e| BrokerError::io(format!("deleting {}", dir.display()), e))?;
        sync_dir(&self.topics_dir)?;
        std::thread::spawn(move || {
            if let Err(e) = std::fs::remove_dir_all(&grave) {
                tracing::warn!(dir = %grave.display(), error = %e, "could not remove deleted topic's files");
            }
        });
        Ok(())
    }

    /// Runs the `flush.ms` timers until `stop` changes (see `flush`).
    pub async fn run_flusher(&self, stop: watch::Receiver<bool>) {
        self.flusher.run(self.metrics.clone(), stop).await
    }

    /// Deletions whose objects are still being removed from the bucket.
    pub fn pending_deletions(&self) -> Vec<crate::deletion::PendingDeletion> {
        self.deletions.pending()
    }

    /// Tries now to finish every pending deletion; returns how many remain.
    pub async fn finish_deletions(&self) -> usize {
        self.deletions
            .run_due(&self.bucket, self.clock.now_ms(), true)
            .await
    }

    /// Sets and removes topic config overrides; the change applies to the logs at once.
    pub async fn alter_configs(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<Arc<Topic>> {
        topic_config::validate_all(&set)?;
        for k in &delete {
            if !topic_config::KEYS.iter().any(|key| key.name == k) {
                topic_config::validate(k, "")?;
            }
        }
        if set.is_empty() && delete.is_empty() {
            return Err(BrokerError::InvalidConfig(
                "nothing to change: give at least one --config KEY=VALUE or --delete-config KEY"
                    .into(),
            ));
        }
        if name == OFFSETS_TOPIC {
            return Err(BrokerError::InvalidRequest(format!(
                "{OFFSETS_TOPIC} is internal (it holds consumer group offsets): its configs are the broker's and cannot be altered"
            )));
        }
        let _admin = self.admin.lock().await;
        let topic = self.topic(name)?;
        let mut meta = topic.meta();
        for k in &delete {
            meta.configs.remove(k);
        }
        meta.configs.extend(set);
        topic_config::validate_all(&meta.configs)?;
        let config = self.effective_config(&meta);
        if topic.config().cleanup_policy().compact && config.remote_enabled() {
            // Compacted segments have offsets without records, and the cold tier holds
            // dense offset ranges, one object per segment.
            return Err(BrokerError::InvalidConfig(format!(
                "topic {name:?} was compacted and cannot start offloading: its segments have gaps the cold tier does not take; leaving cleanup.policy=compact needs remote.storage.enable=false too"
            )));
        }
        if topic.config().remote_enabled() && !config.remote_enabled() {
            // Local retention would then delete what only the cold tier had uploaded
            // past, and offload could never continue the manifest: a gap for good.
            // Any offload at all counts, also one remote retention has since emptied:
            // the manifest's end would still have to meet the local log.
            let offloaded = topic
                .partitions
                .iter()
                .any(|p| p.remote.read().next_offset().is_some());
            if offloaded {
                return Err(BrokerError::InvalidConfig(format!(
                    "offloading cannot stop for topic {name:?} (remote.storage.enable=false, or cleanup.policy=compact, which never offloads): it has offloaded to the cold tier, and offsets would go missing between the cold tier's end and the local log; keep it as it is, or delete the topic"
                )));
            }
        }
        write_json_atomic(&topic.dir.join("topic.json"), &meta)?;
        for p in &topic.partitions {
            p.log.write().set_config(config.log_config());
        }
        *topic.config.write() = config;
        *topic.meta.write() = meta;
        topic.meta_in_bucket.store(false, Ordering::Relaxed);
        Ok(topic)
    }

    /// Appends to one partition. `batches` holds producer-built batches; when it is empty,
    /// `records` (the plain form) are built into one batch here.
    pub fn produce(
        &self,
        topic: &str,
        partition: u32,
        batches: Bytes,
        records: &[PlainRecord],
    ) -> Result<Produced> {
        let started = Instant::now();
        let result = self.produce_inner(topic, partition, batches, records);
        self.metrics.produce_requests.add(1);
        match &result {
            Ok(p) => self.metrics.produce_records.add(p.record_count as u64),
            Err(_) => self.metrics.produce_errors.add(1),
        }
        self.metrics.produce_latency.observe(started.elapsed());
        result
    }

    fn produce_inner(
        &self,
        topic: &str,
        partition: u32,
        batches: Bytes,
        records: &[PlainRecord],
    ) -> Result<Produced> {
        if topic == OFFSETS_TOPIC {
            return Err(BrokerError::InvalidRequest(format!(
                "{OFFSETS_TOPIC} is internal: it is written by the group coordinator only"
            )));
        }
        self.append(topic, partition, batches, records)
    }

    /// Appends plain records to an internal topic (partition 0).
    pub(crate) fn append_internal(&self, topic: &str, records: &[PlainRecord]) -> Result<Produced> {
        self.append(topic, 0, Bytes::new(), records)
    }

    fn append(
        &self,
        topic: &str,
        partition: u32,
        batches: Bytes,
        records: &[PlainRecord],
    ) -> Result<Produced> {
        let t = self.topic(topic)?;
        let p = self.partition(topic, partition)?;
        let (max, (before_max, after_max), compacted) = {
            let c = t.config.read();
            let compacted = c.cleanup_policy().compact;
            (c.max_message_bytes(), c.timestamp_bounds(), compacted)
        };
        let now = self.clock.now_ms();
        let mut buf = if batches.is_empty() {
            if records.is_empty() {
                return Err(BrokerError::InvalidRequest(
                    "produce request holds no records: send batches or records".into(),
                ));
            }
            BytesMut::from(&self.build_batch(records)[..])
        } else {
            BytesMut::from(batches)
        };
        let invalid = |source| BrokerError::InvalidBatch {
            topic: topic.to_string(),
            partition,
            source,
        };
        // Check every batch before anything is written: all or nothing.
        let mut pos = 0;
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
                return Err(BrokerError::MessageTooLarge {
                    topic: topic.to_string(),
                    size: len,
                    max,
                });
            }
            let (batch, min_ts) =
                strata_record::Batch::validate_with_min_timestamp(&buf[pos..]).map_err(invalid)?;
            let h = batch.header();
            // Compaction keeps the latest record per key: a record without one has no
            // place in a compacted topic (Kafka refuses it too).
            if compacted && batch.records().any(|r| r.is_ok_and(|r| r.key.is_none())) {
                return Err(BrokerError::InvalidRequest(format!(
                    "topic {topic:?} is compacted (cleanup.policy=compact) and keeps the latest record per key: every record needs a key; give each record one, or produce to a topic with cleanup.policy=delete"
                )));
            }
            // Kafka's KIP-937 bounds: a timestamp far in the future would pin time
            // retention for as long; one far in the past would expire at once. They hold
            // whatever the batch's timestamp-type bit says: nothing here stamps append
            // time, so the producer's timestamps are what is stored.
            {
                let bad = |timestamp: i64, direction, key, limit| BrokerError::InvalidTimestamp {
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
        let (info, start) = {
            let mut log = p.log.write();
            let info = log.append(&mut buf, p.leader_epoch).map_err(|e| p.err(e))?;
            (info, log.log_start_offset())
        };
        if let Some(ms) = info.flush_after_ms {
            self.flusher.schedule(&p, ms);
        }
        self.metrics.produce_bytes.add(buf.len() as u64);
        // Concurrent appends may publish out of order: the watermark only moves forward.
        p.publish_high_watermark(info.last_offset + 1);
        Ok(Produced {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            record_count: info.record_count,
            log_start_offset: start,
        })
    }

    fn build_batch(&self, records: &[PlainRecord]) -> Vec<u8> {
        let now = self.clock.now_ms();
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

    /// Long-poll fetch: answers as soon as `min_bytes` are available (at least one
    /// batch), or when `max_wait` passes with whatever there is.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
    ) -> Result<Fetched> {
        let started = Instant::now();
        let result = self
            .fetch_inner(topic, partition, offset, max_bytes, min_bytes, max_wait)
            .await;
        self.metrics.fetch_requests.add(1);
        match &result {
            Ok(f) => self.metrics.fetch_bytes.add(f.batches.len() as u64),
            Err(e) => {
                self.metrics.fetch_errors.add(1);
                if e.kind() == crate::error::ErrorKind::StorageCorrupt {
                    self.metrics.log_corruptions.add(1);
                }
            }
        }
        self.metrics.fetch_latency.observe(started.elapsed());
        result
    }

    async fn fetch_inner(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
    ) -> Result<Fetched> {
        let p = self.partition(topic, partition)?;
        let max_bytes = fetch_size(max_bytes);
        let min_bytes = min_bytes.clamp(1, max_bytes);
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let (batches, hw, start) = self.read_any(&p, offset, max_bytes).await?;
            let done = batches.len() >= min_bytes || tokio::time::Instant::now() >= deadline;
            if done {
                return Ok(Fetched {
                    batches,
                    high_watermark: hw,
                    log_start_offset: start,
                });
            }
            // Not enough yet: wait for the next append past what we have seen.
            let seen = if batches.is_empty() { offset } else { hw };
            p.wait_beyond(seen.max(offset), Some(deadline)).await;
            if p.is_deleted() {
                return Err(BrokerError::UnknownTopic(topic.to_string()));
            }
            if p.is_closed() {
                return Err(BrokerError::ShuttingDown);
            }
        }
    }

    /// Resolves an offset over both tiers: (offset, its timestamp or -1, log start, hw).
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        query: OffsetQuery,
    ) -> Result<(i64, i64, i64, i64)> {
        let p = self.partition(topic, partition)?;
        let s = p.state();
        let (start, end) = (s.log_start_offset, s.high_watermark);
        let (offset, ts) = match query {
            OffsetQuery::Earliest => (start, -1),
            OffsetQuery::Latest => (end, -1),
            OffsetQuery::Timestamp(t) => match self.remote_offset_for_timestamp(&p, t).await? {
                Some(found) => found,
                None => p
                    .log
                    .read()
                    .offset_for_timestamp(t)
                    .map_err(|e| p.err(e))?
                    .unwrap_or((-1, -1)),
            },
        };
        Ok((offset, ts, start, end))
    }

    /// Retention, `flush.ms` and `segment.ms` for every partition; expired group members.
    pub fn housekeeping(&self) {
        self.expire_members();
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        for t in topics {
            let remote = t.config().remote_enabled();
            for p in &t.partitions {
                // With the cold tier on, only what it already holds may leave the disk.
                let guard = crate::tiering::Uploaded {
                    upto: remote.then(|| {
                        let m = p.remote.read();
                        m.next_offset().unwrap_or(i64::MIN)
                    }),
                };
                let mut log = p.log.write();
                if let Err(e) = log.tick() {
                    tracing::warn!(log = log.name(), error = %e, "flush/roll failed");
                }
                match log.enforce_retention(&guard) {
                    Ok(deleted) => self
                        .metrics
                        .retention_deleted_segments
                        .add(deleted.len() as u64),
                    Err(e) => tracing::warn!(log = log.name(), error = %e, "retention failed"),
                }
            }
        }
    }

    /// One compaction pass over each compacted partition that is dirty enough. The
    /// rewrite runs without the partition's lock; only the swap takes it.
    pub fn compact_logs(&self) {
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        for t in topics {
            if *self.closing.borrow() {
                return;
            }
            if !t.config().cleanup_policy().compact {
                continue;
            }
            for p in &t.partitions {
                if p.is_deleted() || p.is_closed() {
                    continue;
                }
                let Some(pass) = p.log.read().cleanable() else {
                    continue;
                };
                let abort = || *self.closing.borrow();
                // A failed fsync of the pass (its new files, the partition directory)
                // counts as the log's own.
                let run = pass.run(&abort).map_err(|e| p.log.write().note_error(e));
                let result = run.and_then(|cleaned| {
                    let Some(cleaned) = cleaned else {
                        return Ok(None);
                    };
                    let mut log = p.log.write();
                    // A delete marks its partitions under this lock: a pass that finished
                    // after it must not touch the directory (which a new incarnation of
                    // the name may use by now). What it wrote is in `cleaned/`, which the
                    // next pass or start removes.
                    if p.is_deleted() || p.is_closed() {
                        return Ok(None);
                    }
                    log.swap_cleaned(cleaned)
                });
                match result {
                    Ok(Some(report)) => {
                        self.metrics.compactions.add(1);
                        self.metrics
                            .compaction_removed_records
                            .add(report.records_removed);
                        self.metrics
                            .compaction_reclaimed_bytes
                            .add(report.bytes_before.saturating_sub(report.bytes_after));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.metrics.compaction_errors.add(1);
                        tracing::warn!(topic = %p.topic, partition = p.id, error = %e, "compaction failed; retrying at the next interval");
                    }
                }
            }
        }
    }

    /// Starts a shutdown: long polls, subscriptions and produce streams end.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
        for t in self.topics.read().values() {
            for p in &t.partitions {
                p.closed.store(true, Ordering::Relaxed);
                p.high_watermark.send_modify(|_| {});
            }
        }
    }

    /// Resolves once [`Broker::begin_shutdown`] has been called.
    pub async fn closing(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|&c| c).await;
    }

    /// Ends a clean shutdown: closes every partition's log (fsynced, active indexes
    /// written; nothing more is written to it) and, when all closed, writes the
    /// clean-shutdown marker so the next start needs no recovery scan. Blocking I/O.
    pub fn close_all(&self) {
        let mut failed = 0;
        for t in self.topics.read().values() {
            for p in &t.partitions {
                if let Err(e) = p.log.write().close() {
                    failed += 1;
                    tracing::warn!(topic = %t.meta().name, partition = p.id, error = %e, "closing the log failed");
                }
            }
        }
        if failed > 0 {
            tracing::warn!(
                failed,
                "not every log closed cleanly: the next start recovers them"
            );
            return;
        }
        let marker = self.config.data_dir.join(CLEAN_SHUTDOWN);
        let written = File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(|e| BrokerError::io(format!("writing {}", marker.display()), e))
            .and_then(|()| sync_dir(&self.config.data_dir));
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not record the clean shutdown; the next start recovers the logs");
        }
    }
}

fn unique_suffix() -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos}-{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

pub fn fetch_size(max_bytes: usize) -> usize {
    if max_bytes == 0 {
        DEFAULT_FETCH_BYTES
    } else {
        max_bytes.min(MAX_FETCH_BYTES)
    }
}
