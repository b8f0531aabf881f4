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
//! Partitions themselves (log, high watermark, produce checks, fetch) are
//! `strata_partition::Partition`s; this module is their registry.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use strata_log::Clock;
use strata_partition::metrics::Metrics;
use strata_partition::topic_config::{self, EffectiveConfig};
pub use strata_partition::{
    Fetched, OffsetQuery, Partition, PartitionState, PlainRecord, Produced, Shared,
    partition::{DEFAULT_FETCH_BYTES, MAX_FETCH_BYTES, fetch_size},
};
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::error::{BrokerError, ErrorKind, Result};
use crate::groups::OFFSETS_TOPIC;

/// Written in the data directory by a clean shutdown (see the module docs).
const CLEAN_SHUTDOWN: &str = ".clean-shutdown";

/// Largest fetch answer, whatever the client asks for.
pub const MAX_PARTITIONS: i64 = 10_000;

/// How long an `acks=all` produce waits for its in-sync replicas by default.
pub const DEFAULT_PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// An appended produce, waiting to be acknowledged.
pub struct Appended {
    pub produced: Produced,
    /// For `acks=all`: the partition whose HW must pass the batches, and for how long.
    wait: Option<(Arc<Partition>, Duration)>,
}

impl Appended {
    /// Resolves when the produce may be answered: at once for `acks=1`, once every
    /// in-sync replica has the batches for `acks=all`.
    pub async fn acknowledged(self) -> Result<Produced> {
        let Some((p, timeout)) = self.wait else {
            return Ok(self.produced);
        };
        let waited = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let r = p
            .wait_committed(
                self.produced.last_offset,
                self.produced.leader_epoch,
                deadline,
            )
            .await;
        p.shared_metrics().acks_all_wait.observe(waited.elapsed());
        r.map(|()| self.produced)
    }
}

/// How a produce is acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct ProduceOptions {
    /// Answer once every in-sync replica has the batches (`acks=all`), not as soon as
    /// the leader has appended them.
    pub acks_all: bool,
    /// The leader epoch the producer believes in; a request naming another is refused.
    pub leader_epoch: Option<i32>,
    /// How long an `acks=all` produce waits for the in-sync replicas.
    pub timeout: Duration,
}

impl Default for ProduceOptions {
    fn default() -> Self {
        Self {
            acks_all: false,
            leader_epoch: None,
            timeout: DEFAULT_PRODUCE_TIMEOUT,
        }
    }
}

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
    /// Shared with the topic's partitions.
    config: Arc<RwLock<EffectiveConfig>>,
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

pub struct Broker {
    config: BrokerConfig,
    /// Clock, metrics, cold tier and `flush.ms` timers, shared with every partition.
    pub(crate) shared: Arc<Shared>,
    /// Names this data directory (see [`node_identity`]).
    incarnation: String,
    pub(crate) topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    admin: tokio::sync::Mutex<()>,
    topics_dir: PathBuf,
    staging_dir: PathBuf,
    closing: watch::Sender<bool>,
    pub(crate) groups: strata_groups::Coordinator,
    /// Kafka's classic groups (client-side assignment), coordinated beside the others.
    pub(crate) classic: strata_groups::classic::ClassicGroups,
    pub(crate) deletions: crate::deletion::Deletions,
    /// In a cluster: the controller's metadata (set once the member starts).
    pub(crate) metadata: std::sync::OnceLock<Arc<dyn Metadata>>,
    producer_ids: Arc<crate::producer_ids::ProducerIds>,
    /// Security settings, and a single broker's users and ACLs (a cluster keeps them
    /// in the controller).
    security: crate::security::Security,
    quotas: crate::quotas::Quotas,
    _lock: File,
}

/// What the cluster's metadata says, for parts of the broker that serve partitions this
/// broker may hold no replica of (the group coordinator).
pub trait Metadata: Send + Sync {
    /// A topic's partition count, if the topic exists.
    fn partition_count(&self, topic: &str) -> Option<u32>;
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
        let mut bucket =
            crate::tiering::open_bucket(&config.object_store_url(), &config.object_store_options)
                .await?;
        if config.clustered() && !config.object_store.is_empty() {
            // Brokers share this store: a deposed leader's manifest writes must be
            // fenced, which needs conditional writes. (Unset, each broker has a store
            // of its own in its data directory, which nobody else writes.)
            bucket.check_conditional_writes(&new_topic_id()).await.map_err(|why| {
                BrokerError::InvalidConfig(format!(
                    "object store {} does not honour conditional writes: {why}. Brokers of a cluster sharing a store fence a deposed leader's manifest writes with them; use a store that honours If-Match and If-None-Match (S3, MinIO, R2), or leave object_store unset so each broker keeps its own",
                    config.object_store_url()
                ))
            })?;
            bucket.fenced_writes = true;
        }
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
        let incarnation = node_identity(data, config.node_id)?;
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
        let security = crate::security::Security::open(data, &config)?;
        let quotas = config.quotas()?;
        let producer_ids = Arc::new(crate::producer_ids::ProducerIds::open(
            data,
            config.node_id,
        )?);
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
        let shared = Arc::new(Shared {
            clock,
            metrics: Arc::new(Metrics::default()),
            bucket,
            cold,
            upload_slots: Arc::new(tokio::sync::Semaphore::new(
                strata_partition::tier::UPLOADS_AT_ONCE,
            )),
            upload_backlog_limit_bytes: config.upload_backlog_limit_bytes,
            flusher: Default::default(),
            clustered: config.clustered(),
        });
        let broker = Self {
            shared,
            incarnation,
            config,
            topics: RwLock::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            topics_dir,
            staging_dir,
            closing: watch::channel(false).0,
            groups: Default::default(),
            classic: Default::default(),
            deletions,
            metadata: Default::default(),
            producer_ids,
            security,
            quotas,
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
            scanned_bytes = broker.metrics().log_recovery_scanned_bytes.get(),
            "opened the partition logs"
        );
        broker.load_manifests().await?;
        broker.recover_from_bucket().await?;
        // A broker rebuilt from the bucket alone fills its new offsets topic with the
        // offsets last copied there. The marker, written before the topic exists and
        // removed once the copy is in it, makes a restore that failed (or crashed) run
        // again at the next start rather than leave the groups empty for good.
        let restore = broker.config.data_dir.join(OFFSETS_RESTORE_PENDING);
        // A cluster's offsets topic is the controller's, placed and replicated like any.
        if !broker.config.clustered() && broker.topic(OFFSETS_TOPIC).is_err() {
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
        // A single broker leads its offsets partition from the start; a cluster member
        // loads groups as it becomes leader of offsets partitions.
        broker.groups.sync_leadership(&broker)?;
        Ok(Arc::new(broker))
    }

    /// Security settings and a single broker's users and ACLs; see
    /// [`crate::security::Store`].
    pub fn security(&self) -> &crate::security::Security {
        &self.security
    }

    /// Client quotas; see [`crate::quotas`].
    pub fn quotas(&self) -> &crate::quotas::Quotas {
        &self.quotas
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Gives the broker the cluster's metadata (once, when its member starts).
    pub fn set_metadata(&self, metadata: Arc<dyn Metadata>) {
        let _ = self.metadata.set(metadata);
    }

    /// Chosen when this data directory was first used: a broker that comes back with
    /// another one has lost its disk, and the cluster treats it as new.
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
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
        let config = Arc::new(RwLock::new(self.effective_config(&meta)));
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            partitions.push(Partition::open(
                &self.shared,
                &meta.name,
                &meta.id,
                p,
                dir.join(p.to_string()),
                config.clone(),
                strata_log::OpenOptions {
                    start_offset: starts.get(p as usize).copied().unwrap_or(0),
                    clean_shutdown,
                },
            )?);
        }
        Ok(Topic {
            meta: RwLock::new(meta),
            config,
            partitions,
            dir,
            meta_in_bucket: AtomicBool::new(false),
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
        let rf = self.check_new_topic(name, partitions, replication_factor, &configs)?;
        if rf > 1 {
            return Err(BrokerError::ReplicationFactor {
                requested: rf,
                available: 1,
            });
        }
        let _admin = self.admin.lock().await;
        self.create_topic_now(self.new_meta(name, partitions, rf, configs), &[])
    }

    /// Checks a new topic's name, partition count, replication factor and configs;
    /// returns the replication factor to use (0 asks for the default, 1).
    pub fn check_new_topic(
        &self,
        name: &str,
        partitions: i64,
        replication_factor: i64,
        configs: &BTreeMap<String, String>,
    ) -> Result<i64> {
        validate_topic_name(name)?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(BrokerError::InvalidPartitions(partitions));
        }
        if name == OFFSETS_TOPIC {
            return Err(BrokerError::TopicExists(name.to_string()));
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
        topic_config::validate_all(configs)?;
        Ok(rf)
    }

    /// Creates the local replica of a topic the controller placed here (its id and
    /// configs are the controller's).
    pub async fn create_replica(&self, meta: TopicMeta) -> Result<Arc<Topic>> {
        let _admin = self.admin.lock().await;
        if let Ok(t) = self.topic(&meta.name)
            && t.meta().id == meta.id
        {
            return Ok(t);
        }
        self.create_topic_now(meta, &[])
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
            created_ms: self.shared.clock.now_ms(),
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
            let start = starts.get(p as usize).copied().unwrap_or(0);
            let dir = staging.join(p.to_string());
            strata_partition::partition::open_log(
                &self.shared,
                &meta.name,
                p,
                dir,
                &config,
                strata_log::OpenOptions {
                    start_offset: start,
                    clean_shutdown: false,
                },
            )?;
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

    /// Raises a topic's partition count to `count` (Kafka's CreatePartitions). The new
    /// partitions start empty; the others and their data are untouched. With
    /// `validate_only`, only checks.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i64,
        validate_only: bool,
    ) -> Result<Arc<Topic>> {
        let _admin = self.admin.lock().await;
        let topic = self.topic(name)?;
        Self::check_partition_increase(name, topic.partitions.len() as u32, count)?;
        if validate_only {
            return Ok(topic);
        }
        self.grow_topic(&topic, count as u32)
    }

    /// Checks that `count` may replace a topic's `current` partition count: larger, at
    /// most [`MAX_PARTITIONS`], and not for the offsets topic.
    pub fn check_partition_increase(name: &str, current: u32, count: i64) -> Result<()> {
        if name == OFFSETS_TOPIC {
            return Err(BrokerError::InvalidRequest(format!(
                "{OFFSETS_TOPIC} is internal: groups map to its partitions by hash, so its partition count (offsets.topic.num.partitions) is fixed"
            )));
        }
        if count <= current as i64 || count > MAX_PARTITIONS {
            return Err(BrokerError::PartitionIncrease {
                topic: name.to_string(),
                current,
                requested: count,
            });
        }
        Ok(())
    }

    /// Gives a local replica the partition count the controller has for its topic
    /// (`id`).
    pub async fn set_replica_partitions(&self, name: &str, id: &str, count: u32) -> Result<()> {
        let _admin = self.admin.lock().await;
        let topic = self.topic(name)?;
        if topic.meta().id != id || topic.partitions.len() as u32 >= count {
            return Ok(());
        }
        Self::check_partition_increase(name, topic.partitions.len() as u32, count as i64)?;
        self.grow_topic(&topic, count).map(|_| ())
    }

    /// Adds empty partitions up to `count`; the caller holds the admin lock. Each new
    /// partition's log exists before the count naming it is stored: a crash in between
    /// leaves a directory no count names, which the next grow replaces.
    fn grow_topic(&self, topic: &Topic, count: u32) -> Result<Arc<Topic>> {
        let mut meta = topic.meta();
        let name = meta.name.clone();
        let config = topic.config();
        let old = topic.partitions.len() as u32;
        for p in old..count {
            let dir = topic.dir.join(p.to_string());
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| BrokerError::io(format!("removing {}", dir.display()), e))?;
            }
            let staging = self
                .staging_dir
                .join(format!("partition-{}", unique_suffix()));
            strata_partition::partition::open_log(
                &self.shared,
                &name,
                p,
                staging.clone(),
                &config,
                strata_log::OpenOptions {
                    start_offset: 0,
                    clean_shutdown: false,
                },
            )?;
            std::fs::rename(&staging, &dir)
                .map_err(|e| BrokerError::io(format!("creating {}", dir.display()), e))?;
        }
        sync_dir(&topic.dir)?;
        // Opened before the count is stored: a failure here leaves the count as it was.
        let mut partitions = topic.partitions.clone();
        for p in old..count {
            partitions.push(Partition::open(
                &self.shared,
                &name,
                &meta.id,
                p,
                topic.dir.join(p.to_string()),
                topic.config.clone(),
                strata_log::OpenOptions {
                    start_offset: 0,
                    clean_shutdown: false,
                },
            )?);
        }
        strata_failpoint::crash_at("partitions-create-before-count", || name.clone());
        meta.partitions = count;
        write_json_atomic(&topic.dir.join("topic.json"), &meta)?;
        let grown = Arc::new(Topic {
            meta: RwLock::new(meta),
            config: topic.config.clone(),
            partitions,
            dir: topic.dir.clone(),
            meta_in_bucket: AtomicBool::new(false),
        });
        self.topics.write().insert(name.clone(), grown.clone());
        tracing::info!(topic = %name, from = old, to = count, "added partitions");
        Ok(grown)
    }

    /// Refuses to delete the internal offsets topic.
    pub fn check_deletable(name: &str) -> Result<()> {
        if name == OFFSETS_TOPIC {
            return Err(BrokerError::InvalidRequest(format!(
                "{OFFSETS_TOPIC} is internal (it holds consumer group offsets) and cannot be deleted; use `strata group delete`"
            )));
        }
        Ok(())
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        Self::check_deletable(name)?;
        self.remove_topic(name).await
    }

    /// Removes a local topic the cluster's metadata no longer places here (deleted,
    /// or an older incarnation of its name), the internal offsets topic included.
    pub async fn remove_replica(&self, name: &str) -> Result<()> {
        self.remove_topic(name).await
    }

    /// Removes this broker's copy of a topic that lives on elsewhere (each of its
    /// partitions moved to other brokers): the local files only. Its objects in the
    /// bucket belong to the topic, not to this copy, and stay.
    pub async fn remove_local_copy(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        let topic = self.topic(name)?;
        self.topics.write().remove(name);
        for p in &topic.partitions {
            p.mark_deleted();
        }
        // Offload sees the partitions deleted and stops; let rounds under way end.
        for p in &topic.partitions {
            drop(p.tier.work.lock().await);
        }
        // A crash before this leaves the directory, and the next start removes it again.
        self.bury(&topic.dir)?;
        tracing::info!(
            topic = name,
            "removed this broker's copy of the topic: its partitions moved to other brokers"
        );
        Ok(())
    }

    async fn remove_topic(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        let topic = self.topic(name)?;
        let id = topic.meta().id;
        // Durable before anything changes: after a crash from here on, the topic stays
        // deleted and its removal is finished (see `deletion`).
        self.deletions.record(crate::deletion::Tombstone {
            topic: name.to_string(),
            topic_id: id.clone(),
            deleted_ms: self.shared.clock.now_ms(),
        })?;
        strata_failpoint::crash_at("topic-delete-after-tombstone", || name.to_string());
        self.topics.write().remove(name);
        for p in &topic.partitions {
            p.mark_deleted();
        }
        let buried = self.bury(&topic.dir);
        self.forget_topic_offsets(name);
        self.shared.metrics.topic_deletions.add(1);
        if let Err(e) = buried {
            // The tombstone makes the delete stick, and must outlive the directory: the
            // removal starts only after the next start has moved the directory away.
            tracing::warn!(topic = name, error = %e, "could not move the deleted topic's files away; the next start will, and then removes its objects");
            return Ok(());
        }
        // Should this request be dropped while it waits (a client that gives up, the
        // shutdown grace ending), removal still starts, a minute on, when uploads under
        // way have long ended.
        let mut start =
            crate::deletion::StartOnDrop::new(&self.deletions, &id, &*self.shared.clock);
        // Offload sees the partitions deleted and stops; wait for uploads under way, so
        // none lands after the objects are removed.
        for p in &topic.partitions {
            drop(p.tier.work.lock().await);
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
        self.shared
            .flusher
            .run(self.shared.metrics.clone(), stop)
            .await
    }

    /// Deletions whose objects are still being removed from the bucket.
    pub fn pending_deletions(&self) -> Vec<crate::deletion::PendingDeletion> {
        self.deletions.pending()
    }

    /// Tries now to finish every pending deletion; returns how many remain.
    pub async fn finish_deletions(&self) -> usize {
        self.deletions
            .run_due(&self.shared.bucket, self.shared.clock.now_ms(), true)
            .await
    }

    /// Sets and removes topic config overrides; the change applies to the logs at once.
    pub async fn alter_configs(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<Arc<Topic>> {
        let _admin = self.admin.lock().await;
        let topic = self.topic(name)?;
        // Any offload at all counts, also one remote retention has since emptied: the
        // manifest's end would still have to meet the local log.
        let offloaded = topic
            .partitions
            .iter()
            .any(|p| p.tier.remote.read().next_offset().is_some());
        let configs = self.altered_configs(name, &topic.meta().configs, set, delete, offloaded)?;
        self.apply_configs(&topic, configs)?;
        Ok(topic)
    }

    /// A topic's configs after setting `set` and removing `delete` from `old`, checked:
    /// valid keys and values, and no change the topic's data cannot follow (a
    /// compacted topic starting to offload; a topic that has `offloaded` stopping).
    pub fn altered_configs(
        &self,
        name: &str,
        old: &BTreeMap<String, String>,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
        offloaded: bool,
    ) -> Result<BTreeMap<String, String>> {
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
        let mut configs = old.clone();
        for k in &delete {
            configs.remove(k);
        }
        configs.extend(set);
        topic_config::validate_all(&configs)?;
        let before = EffectiveConfig::new(&self.config.topic_defaults, old);
        let after = EffectiveConfig::new(&self.config.topic_defaults, &configs);
        if before.cleanup_policy().compact && after.remote_enabled() {
            // Compacted segments have offsets without records, and the cold tier holds
            // dense offset ranges, one object per segment.
            return Err(BrokerError::InvalidConfig(format!(
                "topic {name:?} was compacted and cannot start offloading: its segments have gaps the cold tier does not take; leaving cleanup.policy=compact needs remote.storage.enable=false too"
            )));
        }
        if before.remote_enabled() && !after.remote_enabled() && offloaded {
            // Local retention would then delete what only the cold tier had uploaded
            // past, and offload could never continue the manifest: a gap for good.
            return Err(BrokerError::InvalidConfig(format!(
                "offloading cannot stop for topic {name:?} (remote.storage.enable=false, or cleanup.policy=compact, which never offloads): it has offloaded to the cold tier, and offsets would go missing between the cold tier's end and the local log; keep it as it is, or delete the topic"
            )));
        }
        Ok(configs)
    }

    /// Stores a topic's new configs and applies them to its logs at once.
    fn apply_configs(&self, topic: &Topic, configs: BTreeMap<String, String>) -> Result<()> {
        let mut meta = topic.meta();
        meta.configs = configs;
        let config = self.effective_config(&meta);
        write_json_atomic(&topic.dir.join("topic.json"), &meta)?;
        for p in &topic.partitions {
            p.set_config(&config);
        }
        *topic.config.write() = config;
        *topic.meta.write() = meta;
        topic.meta_in_bucket.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Gives a local replica the configs the controller has for its topic (`id`).
    pub async fn set_replica_configs(
        &self,
        name: &str,
        id: &str,
        configs: &BTreeMap<String, String>,
    ) -> Result<()> {
        let _admin = self.admin.lock().await;
        let topic = self.topic(name)?;
        if topic.meta().id != id || topic.meta().configs == *configs {
            return Ok(());
        }
        self.apply_configs(&topic, configs.clone())
    }

    /// Appends to one partition. `batches` holds producer-built batches; when it is empty,
    /// `records` (the plain form) are built into one batch here. With `acks_all`, answers
    /// once every in-sync replica has the batches (the HW passed them).
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        batches: Bytes,
        records: &[PlainRecord],
        options: ProduceOptions,
    ) -> Result<Produced> {
        self.append_produced(topic, partition, batches, records, options)?
            .acknowledged()
            .await
    }

    /// A new idempotent producer's id and epoch (0: without transactions, a producer
    /// that starts again gets a new id).
    pub async fn init_producer_id(&self) -> Result<(i64, i16)> {
        let ids = self.producer_ids.clone();
        let id = tokio::task::spawn_blocking(move || ids.next())
            .await
            .map_err(|e| BrokerError::InvalidRequest(format!("allocating a producer id: {e}")))??;
        Ok((id, 0))
    }

    /// The first half of [`Broker::produce`]: appends, and returns what to wait on
    /// before the produce may be answered. A stream appends its requests in order with
    /// this and lets the waits run side by side.
    pub fn append_produced(
        &self,
        topic: &str,
        partition: u32,
        batches: Bytes,
        records: &[PlainRecord],
        options: ProduceOptions,
    ) -> Result<Appended> {
        let started = Instant::now();
        let result = self.append_inner(topic, partition, batches, records, &options);
        let m = &self.shared.metrics;
        m.produce_requests.add(1);
        match &result {
            Ok((_, p)) => m.produce_records.add(p.record_count as u64),
            Err(_) => m.produce_errors.add(1),
        }
        m.produce_latency.observe(started.elapsed());
        let (partition, produced) = result?;
        Ok(Appended {
            produced,
            wait: options.acks_all.then_some((partition, options.timeout)),
        })
    }

    fn append_inner(
        &self,
        topic: &str,
        partition: u32,
        batches: Bytes,
        records: &[PlainRecord],
        options: &ProduceOptions,
    ) -> Result<(Arc<Partition>, Produced)> {
        if topic == OFFSETS_TOPIC {
            return Err(BrokerError::InvalidRequest(format!(
                "{OFFSETS_TOPIC} is internal: it is written by the group coordinator only"
            )));
        }
        let p = self.partition(topic, partition)?;
        let produced = p.append(batches, records, options.leader_epoch, options.acks_all)?;
        Ok((p, produced))
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
        self.shared.metrics.fetch_requests.add(1);
        match &result {
            Ok(f) => self.shared.metrics.fetch_bytes.add(f.batches.len() as u64),
            Err(e) => {
                self.shared.metrics.fetch_errors.add(1);
                if e.kind() == ErrorKind::StorageCorrupt {
                    self.shared.metrics.log_corruptions.add(1);
                }
            }
        }
        self.shared.metrics.fetch_latency.observe(started.elapsed());
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
        p.fetch(offset, max_bytes, min_bytes, max_wait).await
    }

    /// Resolves an offset over both tiers: (offset, its timestamp or -1, log start, hw).
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        query: OffsetQuery,
    ) -> Result<(i64, i64, i64, i64)> {
        let p = self.partition(topic, partition)?;
        p.check_leader(None)?;
        p.list_offsets(query).await
    }

    /// Retention, `flush.ms` and `segment.ms` for every partition; expired group members.
    pub fn housekeeping(&self) {
        self.expire_members();
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        for t in topics {
            for p in &t.partitions {
                p.housekeeping();
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
            let abort = || *self.closing.borrow();
            for p in &t.partitions {
                p.compact(&abort);
            }
        }
    }

    /// Starts a shutdown: long polls, subscriptions and produce streams end.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
        for t in self.topics.read().values() {
            for p in &t.partitions {
                p.mark_closed();
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
                if let Err(e) = p.close() {
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

/// `<data-dir>/node.json`: which node id this data directory belongs to, and the
/// incarnation id chosen when it was first used. A directory is never used under
/// another node id: its replicas and votes are that node's.
fn node_identity(data: &Path, node_id: u32) -> Result<String> {
    #[derive(Serialize, Deserialize)]
    struct NodeFile {
        node_id: u32,
        incarnation: String,
    }
    let path = data.join("node.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let f: NodeFile = serde_json::from_slice(&bytes).map_err(|e| {
                BrokerError::InvalidConfig(format!("{} is not valid: {e}", path.display()))
            })?;
            if f.node_id != node_id {
                return Err(BrokerError::InvalidConfig(format!(
                    "data directory {} belongs to node {}, not {node_id}; start it with --node-id {} or use another --data-dir",
                    data.display(),
                    f.node_id,
                    f.node_id
                )));
            }
            Ok(f.incarnation)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = NodeFile {
                node_id,
                incarnation: new_topic_id(),
            };
            write_json_atomic(&path, &f)?;
            Ok(f.incarnation)
        }
        Err(e) => Err(BrokerError::io(format!("reading {}", path.display()), e)),
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
