//! A cluster member's replica manager: makes this broker's partitions what the
//! controller's metadata says, and keeps followers copying their leaders.
//!
//! [`Member::run`] reconciles on every metadata change (and on a timer): it creates the
//! local logs of topics with a replica here (under the controller's topic id), removes
//! those of topics deleted or no longer placed here, gives every local partition its
//! role and leader epoch, and runs one fetcher per followed partition. On the partitions
//! it leads it proposes in-sync-set changes ([`Partition::isr_change`]).
//!
//! It acts on what the metadata lacks (deleting topics it does not list) only once this
//! broker's own registration of this run is in its applied state
//! ([`Controller::caught_up`]): the state then holds every change committed before.
//!
//! Admin requests (create, delete) go through the controller from any broker; the
//! change reaches every broker through its metadata, this one included.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use strata_controller::{Command, Controller, ControllerError, PartitionRecord, TopicRecord};
use strata_partition::Partition;
pub use strata_partition::replica::{FollowerAnswer, FollowerFetch, NodeId};

use crate::broker::{Broker, TopicMeta};
use crate::error::{BrokerError, Result};
use crate::groups::OFFSETS_TOPIC;

/// Largest answer a follower asks its leader for (Kafka's `replica.fetch.max.bytes`).
const REPLICA_FETCH_BYTES: usize = 4 << 20;
/// How long a follower's fetch waits on the leader for something new.
const REPLICA_FETCH_WAIT: Duration = Duration::from_millis(500);
/// Pause after a failed follower fetch.
const REPLICA_FETCH_BACKOFF: Duration = Duration::from_millis(100);
/// How often the replica manager looks again without a metadata change.
const RECONCILE_EVERY: Duration = Duration::from_millis(250);
/// How long an admin request waits to see its change in this broker's metadata.
const METADATA_WAIT: Duration = Duration::from_secs(10);

/// A follower's fetch as it travels to its leader.
#[derive(Debug, Clone)]
pub struct ReplicaFetch {
    pub topic: String,
    pub topic_id: String,
    pub partition: u32,
    pub fetch: FollowerFetch,
}

/// Carries follower fetches to leaders (gRPC in `strata-server`).
pub trait LeaderLink: Send + Sync + 'static {
    fn fetch(
        &self,
        addr: &str,
        request: ReplicaFetch,
    ) -> BoxFuture<'static, std::result::Result<FollowerAnswer, String>>;
}

/// One running follower fetcher.
struct Fetcher {
    leader: NodeId,
    epoch: i32,
    addr: String,
    /// Bytes/s this replica may copy at while a reassignment adds it (0: no limit).
    throttle: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// This broker as a cluster member: its replica manager.
pub struct Member {
    broker: Arc<Broker>,
    controller: Arc<Controller>,
    link: Arc<dyn LeaderLink>,
    me: NodeId,
    /// Follower fetchers by (topic id, partition).
    fetchers: parking_lot::Mutex<HashMap<(String, u32), Fetcher>>,
    /// The partition records last applied, by (topic id, partition).
    applied: parking_lot::Mutex<HashMap<(String, u32), PartitionRecord>>,
    /// Topic names in the metadata at the last reconcile: one that goes is deleted, and
    /// the groups coordinated here forget its offsets.
    known: parking_lot::Mutex<std::collections::BTreeSet<String>>,
}

/// The controller's metadata, as the broker's group coordinator asks for it.
struct ControllerMetadata(Arc<Controller>);

impl crate::broker::Metadata for ControllerMetadata {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        self.0
            .state()
            .topics
            .get(topic)
            .map(|t| t.partitions.len() as u32)
    }
}

impl Member {
    pub fn new(
        broker: Arc<Broker>,
        controller: Arc<Controller>,
        link: Arc<dyn LeaderLink>,
    ) -> Arc<Self> {
        let me = broker.config().node_id as NodeId;
        broker.set_metadata(Arc::new(ControllerMetadata(controller.clone())));
        Arc::new(Self {
            broker,
            controller,
            link,
            me,
            fetchers: Default::default(),
            applied: Default::default(),
            known: Default::default(),
        })
    }

    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// Reconciles with the metadata until `stop`, and proposes in-sync-set changes.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut changes = self.controller.changes();
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = changes.changed() => {}
                _ = tick.tick() => {}
            }
            if *stop.borrow() {
                break;
            }
            self.reconcile().await;
            self.propose_isr_changes().await;
        }
        self.fetchers.lock().clear();
    }

    /// Makes local topics and partition roles match the metadata.
    async fn reconcile(&self) {
        if !self.controller.caught_up() {
            return;
        }
        let state = self.controller.state();
        if !state.topics.contains_key(OFFSETS_TOPIC) {
            self.create_offsets_topic(&state).await;
        }
        let addrs: BTreeMap<NodeId, String> = state
            .brokers
            .values()
            .map(|b| (b.id, b.addr.clone()))
            .collect();
        for t in state.topics.values() {
            let here = t.partitions.iter().any(|p| p.replicas.contains(&self.me));
            let local = self.broker.topic(&t.name).ok();
            let stale = local.as_ref().is_some_and(|l| l.meta().id != t.id);
            if stale {
                self.remove_local(&t.name).await;
            } else if !here && local.is_some() {
                // Moved away (reassigned): the topic lives on, and so do its objects.
                if let Err(e) = self.broker.remove_local_copy(&t.name).await {
                    tracing::warn!(topic = %t.name, error = %e, "could not remove this broker's copy; retrying");
                }
            }
            if !here {
                continue;
            }
            let topic = match self.broker.topic(&t.name) {
                Ok(topic) => topic,
                Err(_) => match self.broker.create_replica(meta_of(t)).await {
                    Ok(topic) => topic,
                    Err(e) => {
                        tracing::warn!(topic = %t.name, error = %e, "could not create the local replica; retrying");
                        continue;
                    }
                },
            };
            let topic = if topic.partitions().len() < t.partitions.len() {
                match self
                    .broker
                    .set_replica_partitions(&t.name, &t.id, t.partitions.len() as u32)
                    .await
                    .and_then(|()| self.broker.topic(&t.name))
                {
                    Ok(grown) => grown,
                    Err(e) => {
                        tracing::warn!(topic = %t.name, error = %e, "could not add the new partitions locally; retrying");
                        topic
                    }
                }
            } else {
                topic
            };
            if topic.meta().configs != t.configs
                && let Err(e) = self
                    .broker
                    .set_replica_configs(&t.name, &t.id, &t.configs)
                    .await
            {
                tracing::warn!(topic = %t.name, error = %e, "could not apply the topic's configs; retrying");
            }
            for (n, (p, rec)) in topic.partitions().iter().zip(&t.partitions).enumerate() {
                self.apply_partition(&t.id, n as u32, p, rec, &addrs);
            }
        }
        let listed: Vec<String> = self
            .broker
            .list_topics()
            .into_iter()
            .map(|m| m.name)
            .filter(|n| !state.topics.contains_key(n))
            .collect();
        for name in listed {
            self.remove_local(&name).await;
        }
        // Fetchers of partitions that are gone.
        let live: std::collections::HashSet<(String, u32)> = state
            .topics
            .values()
            .flat_map(|t| (0..t.partitions.len() as u32).map(|n| (t.id.clone(), n)))
            .collect();
        self.fetchers.lock().retain(|k, _| live.contains(k));
        self.applied.lock().retain(|k, _| live.contains(k));
        // Roles may have moved: the coordinator takes up or lets go of groups.
        self.broker.sync_group_coordinator().await;
        let names: std::collections::BTreeSet<String> = state.topics.keys().cloned().collect();
        let gone: Vec<String> = self.known.lock().difference(&names).cloned().collect();
        for name in gone {
            self.broker.forget_topic_offsets(&name);
        }
        *self.known.lock() = names;
    }

    /// Creates the offsets topic once enough brokers are live for its replication
    /// factor (`offsets_topic_replication_factor`, at most the number of voters), as
    /// Kafka does on the first coordinator lookup. Only the controller's leader
    /// proposes it; a second proposal is refused as a duplicate.
    async fn create_offsets_topic(&self, state: &strata_controller::ClusterState) {
        if self.controller.leader().map(|(id, _)| id) != Some(self.me) {
            return;
        }
        let config = self.broker.config();
        // The configured voters, not the current membership: that grows from one.
        let voters = config
            .voters
            .split(',')
            .filter(|v| !v.trim().is_empty())
            .count();
        let rf = (config.offsets_topic_replication_factor as usize)
            .min(voters)
            .max(1);
        let record = match place_topic(
            state,
            OFFSETS_TOPIC,
            config.offsets_topic_partitions,
            rf as u32,
            BTreeMap::new(),
            self.broker.clock().now_ms(),
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "not creating {OFFSETS_TOPIC} yet");
                return;
            }
        };
        match self
            .controller
            .submit(Command::CreateTopic { topic: record })
            .await
        {
            Ok(()) => tracing::info!(
                partitions = config.offsets_topic_partitions,
                replication_factor = rf,
                "created {OFFSETS_TOPIC}"
            ),
            Err(e) => tracing::info!(error = %e, "{OFFSETS_TOPIC} not created now"),
        }
    }

    async fn remove_local(&self, name: &str) {
        match self.broker.remove_replica(name).await {
            Ok(()) => tracing::info!(
                topic = name,
                "removed the local replica (deleted or moved away)"
            ),
            Err(e) => {
                tracing::warn!(topic = name, error = %e, "could not remove the local replica; retrying")
            }
        }
    }

    fn apply_partition(
        &self,
        topic_id: &str,
        n: u32,
        p: &Arc<Partition>,
        rec: &PartitionRecord,
        addrs: &BTreeMap<NodeId, String>,
    ) {
        let key = (topic_id.to_string(), n);
        {
            let mut applied = self.applied.lock();
            if applied.get(&key) == Some(rec) && self.fetcher_ok(&key, rec, addrs) {
                return;
            }
            applied.insert(key.clone(), rec.clone());
        }
        if !rec.replicas.contains(&self.me) {
            p.become_follower(rec.leader_epoch, rec.leader, false);
            self.fetchers.lock().remove(&key);
        } else if rec.leader == Some(self.me) {
            p.become_leader(
                self.me,
                rec.leader_epoch,
                rec.partition_epoch,
                &rec.replicas,
                &rec.isr,
            );
            self.fetchers.lock().remove(&key);
        } else {
            p.become_follower(rec.leader_epoch, rec.leader, true);
            let target = rec
                .leader
                .and_then(|l| addrs.get(&l).map(|a| (l, a.clone())));
            // A replica a reassignment adds copies the log at the rate it was given.
            let throttle = match &rec.reassignment {
                Some(r) if rec.adding().contains(&self.me) => r.throttle_bytes_per_sec,
                _ => 0,
            };
            let mut fetchers = self.fetchers.lock();
            match target {
                Some((leader, addr)) => {
                    let same = fetchers.get(&key).filter(|f| {
                        f.leader == leader && f.epoch == rec.leader_epoch && f.addr == addr
                    });
                    if let Some(f) = same {
                        f.throttle
                            .store(throttle, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        let throttle = Arc::new(std::sync::atomic::AtomicU64::new(throttle));
                        let task = tokio::spawn(follow(
                            p.clone(),
                            self.link.clone(),
                            self.me,
                            rec.leader_epoch,
                            addr.clone(),
                            throttle.clone(),
                        ));
                        fetchers.insert(
                            key,
                            Fetcher {
                                leader,
                                epoch: rec.leader_epoch,
                                addr,
                                throttle,
                                task,
                            },
                        );
                    }
                }
                None => {
                    fetchers.remove(&key);
                }
            }
        }
    }

    /// Whether a followed partition's fetcher is still running against the right leader
    /// address (a leader that registered again under another address needs a new one).
    fn fetcher_ok(
        &self,
        key: &(String, u32),
        rec: &PartitionRecord,
        addrs: &BTreeMap<NodeId, String>,
    ) -> bool {
        let follows = rec.replicas.contains(&self.me) && rec.leader.is_some_and(|l| l != self.me);
        if !follows {
            return true;
        }
        let fetchers = self.fetchers.lock();
        fetchers.get(key).is_some_and(|f| {
            !f.task.is_finished() && Some(&f.addr) == rec.leader.and_then(|l| addrs.get(&l))
        })
    }

    /// On partitions this broker leads: proposes the in-sync-set changes they ask for.
    async fn propose_isr_changes(&self) {
        let lag = self.broker.config().replica_lag_time_max_ms as i64;
        let brokers = self.controller.state().brokers;
        let eligible = |id: NodeId| brokers.get(&id).is_some_and(|b| !b.fenced);
        let mut changes = Vec::new();
        for meta in self.broker.list_topics() {
            let Ok(topic) = self.broker.topic(&meta.name) else {
                continue;
            };
            for p in topic.partitions() {
                if let Some(change) = p.isr_change(self.me, lag, &eligible) {
                    changes.push((meta.clone(), p.clone(), change));
                }
            }
        }
        for (meta, p, change) in changes {
            let before = p.isr(self.me).len();
            let cmd = Command::AlterPartition {
                topic: meta.name.clone(),
                topic_id: meta.id.clone(),
                partition: p.id,
                leader: self.me,
                leader_epoch: change.leader_epoch,
                partition_epoch: change.partition_epoch,
                isr: change.isr.clone(),
            };
            let metrics = self.broker.metrics();
            if change.isr.len() < before {
                metrics.isr_shrinks.add(1);
            } else {
                metrics.isr_expands.add(1);
            }
            tracing::info!(topic = %meta.name, partition = p.id, isr = ?change.isr, "proposing an in-sync set change");
            // Whatever the answer, the change shows (or not) in the metadata; until the
            // partition epoch moves, the leader counts every member it proposed.
            if let Err(e) = self.controller.submit(cmd).await {
                tracing::info!(topic = %meta.name, partition = p.id, error = %e, "in-sync set change not made");
            }
        }
    }

    /// Creates a topic through the controller: places its replicas on live brokers
    /// (rack-aware) and waits until this broker's metadata has it.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i64,
        replication_factor: i64,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicRecord> {
        let rf = self
            .broker
            .check_new_topic(name, partitions, replication_factor, &configs)?;
        let state = self.controller.state();
        if state.topics.contains_key(name) {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        let record = place_topic(
            &state,
            name,
            partitions as u32,
            rf as u32,
            configs,
            self.broker.clock().now_ms(),
        )?;
        let id = record.id.clone();
        self.controller
            .submit(Command::CreateTopic { topic: record })
            .await
            .map_err(|e| {
                // Another create of the same name got there first.
                if matches!(e, ControllerError::Refused(_))
                    && self.controller.state().topics.contains_key(name)
                {
                    BrokerError::TopicExists(name.to_string())
                } else {
                    controller_error(e)
                }
            })?;
        self.wait_for(|s| s.topics.get(name).filter(|t| t.id == id).cloned())
            .await
    }

    /// Proposes `cmd` to the controller and waits until it is committed.
    pub(crate) async fn submit(&self, cmd: Command) -> Result<()> {
        self.controller
            .submit(cmd)
            .await
            .map(|_| ())
            .map_err(controller_error)
    }

    /// Deletes a topic through the controller.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        Broker::check_deletable(name)?;
        let topic = self.topic(name)?;
        self.controller
            .submit(Command::DeleteTopic {
                name: name.to_string(),
                id: topic.id.clone(),
            })
            .await
            .map_err(controller_error)?;
        self.wait_for(|s| (!s.topics.contains_key(name)).then_some(()))
            .await
    }

    /// Changes a topic's configs through the controller. Turning offload off is refused
    /// for a topic that had it on: any replica may have offloaded.
    pub async fn alter_configs(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<TopicRecord> {
        let t = self.topic(name)?;
        let configs = self
            .broker
            .altered_configs(name, &t.configs, set, delete, true)?;
        self.controller
            .submit(Command::AlterTopicConfigs {
                name: name.to_string(),
                id: t.id.clone(),
                configs: configs.clone(),
            })
            .await
            .map_err(controller_error)?;
        self.wait_for(|s| s.topics.get(name).filter(|t| t.configs == configs).cloned())
            .await
    }

    /// Adds partitions to a topic through the controller, up to `count`, each with as
    /// many replicas as the topic's first partition (placed on live brokers as a new
    /// topic's are); answers once this broker's metadata has them. With
    /// `validate_only`, only checks.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i64,
        validate_only: bool,
    ) -> Result<TopicRecord> {
        let t = self.topic(name)?;
        let from = t.partitions.len() as u32;
        Broker::check_partition_increase(name, from, count)?;
        let first = &t.partitions[0];
        let rf = match &first.reassignment {
            Some(r) => r.target.len(),
            None => first.replicas.len(),
        } as u32;
        let state = self.controller.state();
        let placed = place_topic(&state, name, count as u32, rf, BTreeMap::new(), 0)?;
        if validate_only {
            return Ok(t);
        }
        let replicas = placed.partitions[from as usize..]
            .iter()
            .map(|p| p.replicas.clone())
            .collect();
        self.controller
            .submit(Command::CreatePartitions {
                topic: name.to_string(),
                topic_id: t.id.clone(),
                from,
                replicas,
            })
            .await
            .map_err(|e| {
                // Another add got there first: judge this one against the count now.
                let now = self.topic(name).map(|t| t.partitions.len() as u32);
                match (&e, now) {
                    (ControllerError::Refused(_), Ok(now)) if now != from => {
                        Broker::check_partition_increase(name, now, count)
                            .err()
                            .unwrap_or_else(|| controller_error(e))
                    }
                    _ => controller_error(e),
                }
            })?;
        let id = t.id;
        self.wait_for(|s| {
            s.topics
                .get(name)
                .filter(|t| t.id == id && t.partitions.len() as i64 >= count)
                .cloned()
        })
        .await
    }

    /// Moves partition `partition` of `name` to `replicas` through the controller
    /// (see `strata_controller::Reassignment`); answers once the move is under way (or
    /// done, when the target replicas were all in sync already).
    pub async fn reassign(
        &self,
        name: &str,
        partition: u32,
        replicas: &[NodeId],
        throttle_bytes_per_sec: u64,
    ) -> Result<TopicRecord> {
        let t = self.topic(name)?;
        if partition as usize >= t.partitions.len() {
            return Err(BrokerError::PartitionOutOfRange {
                topic: name.to_string(),
                partition,
                max: t.partitions.len() as u32 - 1,
            });
        }
        self.controller
            .submit(Command::ReassignPartition {
                topic: name.to_string(),
                topic_id: t.id.clone(),
                partition,
                replicas: replicas.to_vec(),
                throttle_bytes_per_sec,
            })
            .await
            .map_err(controller_error)?;
        let n = partition as usize;
        self.wait_for(|s| {
            s.topics
                .get(name)
                .filter(|t| {
                    let p = &t.partitions[n];
                    p.reassignment.is_some() || p.replicas == replicas
                })
                .cloned()
        })
        .await
    }

    /// The topic as the metadata has it.
    pub fn topic(&self, name: &str) -> Result<TopicRecord> {
        self.controller
            .state()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))
    }

    /// Every topic in the metadata.
    pub fn topics(&self) -> Vec<TopicRecord> {
        self.controller.state().topics.into_values().collect()
    }

    /// `e` (met serving `partition`) as a client of this cluster should see it: a
    /// broker without a local replica of a topic the metadata has answers not-leader
    /// (naming the leader), as Kafka brokers do, and a not-coordinator names the leader
    /// of the group's offsets partition.
    pub fn explain(&self, e: BrokerError, partition: u32) -> BrokerError {
        match e {
            // The coordinator is the leader of the group's offsets partition.
            BrokerError::NotCoordinator {
                group,
                topic,
                partition,
                leader: None,
            } => {
                let leader = self
                    .topic(&topic)
                    .ok()
                    .and_then(|t| t.partitions.get(partition as usize).and_then(|p| p.leader));
                BrokerError::NotCoordinator {
                    group,
                    topic,
                    partition,
                    leader,
                }
            }
            BrokerError::UnknownTopic(topic) => match self.topic(&topic) {
                Ok(t) if (partition as usize) < t.partitions.len() => BrokerError::NotLeader {
                    leader: t.partitions[partition as usize].leader,
                    topic,
                    partition,
                },
                // A restarted (or slow) broker that has not applied its own registration
                // yet may lack a topic others already have: it cannot say "unknown" yet.
                _ if !self.controller.caught_up() => BrokerError::Controller {
                    reason: format!(
                        "this broker is still catching up with the cluster's metadata and does not know topic {topic:?} yet; retry shortly"
                    ),
                    retriable: true,
                },
                _ => BrokerError::UnknownTopic(topic),
            },
            // Partitions added since this broker last grew its local replica: the
            // metadata has them, the local copy will (or another broker leads them).
            BrokerError::PartitionOutOfRange {
                topic,
                partition,
                max,
            } => match self.topic(&topic) {
                Ok(t) if (partition as usize) < t.partitions.len() => BrokerError::NotLeader {
                    leader: t.partitions[partition as usize].leader,
                    topic,
                    partition,
                },
                _ => BrokerError::PartitionOutOfRange {
                    topic,
                    partition,
                    max,
                },
            },
            e => e,
        }
    }

    /// The advertised address of broker `id`, if it is registered.
    pub fn address_of(&self, id: NodeId) -> Option<String> {
        self.controller
            .state()
            .brokers
            .get(&id)
            .map(|b| b.addr.clone())
    }

    pub(crate) async fn wait_for<T>(
        &self,
        found: impl Fn(&strata_controller::ClusterState) -> Option<T>,
    ) -> Result<T> {
        let mut changes = self.controller.changes();
        let deadline = tokio::time::Instant::now() + METADATA_WAIT;
        loop {
            if let Some(t) = found(&self.controller.state()) {
                return Ok(t);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(BrokerError::Timeout(format!(
                    "the controller made the change, but this broker's metadata did not show it within {METADATA_WAIT:?}; it will"
                )));
            }
        }
    }
}

/// A new topic's record: its replicas placed on the live brokers (rack-aware, from a
/// random start so topics spread).
fn place_topic(
    state: &strata_controller::ClusterState,
    name: &str,
    partitions: u32,
    rf: u32,
    configs: BTreeMap<String, String>,
    now_ms: i64,
) -> Result<TopicRecord> {
    let live: Vec<strata_controller::placement::Candidate> = state
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| strata_controller::placement::Candidate {
            id: b.id,
            rack: b.rack.clone(),
        })
        .collect();
    if rf as usize > live.len() {
        return Err(BrokerError::ReplicationFactor {
            requested: rf as i64,
            available: live.len() as u32,
        });
    }
    let start = uuid::Uuid::new_v4().as_u128() as usize;
    let placed = strata_controller::placement::place(&live, partitions, rf, start)
        .map_err(BrokerError::InvalidRequest)?;
    Ok(TopicRecord {
        name: name.to_string(),
        id: crate::broker::new_topic_id(),
        configs,
        partitions: placed.into_iter().map(PartitionRecord::new).collect(),
        created_ms: now_ms,
    })
}

/// A topic's local metadata from its record.
fn meta_of(t: &TopicRecord) -> TopicMeta {
    TopicMeta {
        name: t.name.clone(),
        id: t.id.clone(),
        partitions: t.partitions.len() as u32,
        replication_factor: t.partitions.first().map_or(1, |p| p.replicas.len() as u32),
        configs: t.configs.clone(),
        created_ms: t.created_ms,
    }
}

fn controller_error(e: ControllerError) -> BrokerError {
    let retriable = !matches!(e, ControllerError::Refused(_));
    BrokerError::Controller {
        reason: e.to_string(),
        retriable,
    }
}

/// Copies `leader`'s log into `p` while `p` follows it in `epoch`; ends when `p` no
/// longer does (its fetcher is replaced or dropped then anyway). While `throttle` is
/// above 0 (bytes/s: a reassignment adding this replica), it pauses after each answer
/// for as long as copying that much at that rate takes.
async fn follow(
    p: Arc<Partition>,
    link: Arc<dyn LeaderLink>,
    me: NodeId,
    epoch: i32,
    addr: String,
    throttle: Arc<std::sync::atomic::AtomicU64>,
) {
    let metrics = p.shared_metrics();
    loop {
        let (offset, last_epoch, hw) = p.fetch_position();
        let request = ReplicaFetch {
            topic: p.topic.clone(),
            topic_id: p.topic_id.clone(),
            partition: p.id,
            fetch: FollowerFetch {
                replica: me,
                leader_epoch: epoch,
                fetch_offset: offset,
                last_fetched_epoch: last_epoch,
                // Throttled: smaller answers, so the pauses between them stay short.
                max_bytes: match throttle.load(std::sync::atomic::Ordering::Relaxed) {
                    0 => REPLICA_FETCH_BYTES,
                    rate => (rate as usize / 2).clamp(64 << 10, REPLICA_FETCH_BYTES),
                },
                known_high_watermark: hw,
                max_wait: REPLICA_FETCH_WAIT,
            },
        };
        let answer = match link.fetch(&addr, request).await {
            Ok(a) => a,
            Err(e) => {
                metrics.replication_fetch_errors.add(1);
                tracing::debug!(topic = %p.topic, partition = p.id, leader = %addr, error = %e, "follower fetch failed");
                tokio::time::sleep(REPLICA_FETCH_BACKOFF).await;
                continue;
            }
        };
        let applied = if let Some((e, end)) = answer.diverging {
            metrics.replication_truncations.add(1);
            match p.truncate_diverged(epoch, e, end) {
                // No progress: the same answer would come back at once. Wait, and let
                // a new epoch or the leader's log change it.
                Ok(leo) if leo == offset => {
                    tracing::warn!(topic = %p.topic, partition = p.id, epoch = e, end, "the leader says this log diverges, but truncating changes nothing; retrying");
                    tokio::time::sleep(REPLICA_FETCH_BACKOFF * 10).await;
                    Ok(())
                }
                r => r.map(|_| ()),
            }
        } else if answer.batches.is_empty() && offset < answer.local_log_start_offset {
            p.start_at_leader(epoch, answer.local_log_start_offset)
        } else if answer.batches.is_empty() {
            p.append_from_leader(epoch, &[], answer.high_watermark)
        } else {
            let copied = answer.batches.len() as u64;
            // File writes (and an fsync when flush.messages says so): off the workers.
            let (p, batches) = (p.clone(), answer.batches);
            let hw = answer.high_watermark;
            let r = tokio::task::spawn_blocking(move || p.append_from_leader(epoch, &batches, hw))
                .await
                .unwrap_or_else(|e| Err(BrokerError::InvalidRequest(format!("append task: {e}"))));
            let rate = throttle.load(std::sync::atomic::Ordering::Relaxed);
            if let Some(us) = copied.saturating_mul(1_000_000).checked_div(rate) {
                tokio::time::sleep(Duration::from_micros(us)).await;
            }
            r
        };
        match applied {
            Ok(()) => {}
            Err(BrokerError::FencedLeaderEpoch { .. }) => return,
            Err(e) => {
                metrics.replication_fetch_errors.add(1);
                tracing::warn!(topic = %p.topic, partition = p.id, error = %e, "could not apply what the leader sent; retrying");
                tokio::time::sleep(REPLICA_FETCH_BACKOFF).await;
            }
        }
    }
}
