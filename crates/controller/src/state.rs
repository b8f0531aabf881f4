//! The cluster's metadata and the commands that change it.
//!
//! [`ClusterState::apply`] is the state machine's transition function. It is pure and
//! deterministic: every input is in the command (times come from the proposer, as
//! `at_ms`), so every replica that applies the same log reaches the same state.
//! Commands that are not allowed in the current state change nothing and answer with
//! an error that says why; they are still part of the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_auth::users::Users;
use strata_auth::{AclBinding, Acls, Mechanism, ScramCredential};

/// The most partitions a topic may have.
pub const MAX_PARTITIONS: usize = 10_000;

/// A broker's id (`--node-id`); never reused for a broker whose disk was wiped.
pub type NodeId = u64;

/// What the cluster knows of one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub id: NodeId,
    /// Its advertised gRPC address (HOST:PORT).
    pub addr: String,
    /// Its advertised Kafka listener (HOST:PORT), if it runs one.
    #[serde(default)]
    pub kafka_addr: Option<String>,
    pub rack: Option<String>,
    /// Chosen when the broker's data directory was created: a broker that comes back
    /// with another one lost its disk.
    pub incarnation: String,
    /// A fenced broker leads no partition and is left out of in-sync sets: it stopped
    /// heartbeating (or has not yet) for longer than its session.
    pub fenced: bool,
    pub registered_ms: i64,
}

/// One partition's replicas and leadership (Kafka's `PartitionRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// The brokers holding a replica; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// None while no in-sync replica is alive (the partition is offline).
    pub leader: Option<NodeId>,
    /// Raised at every leader change; batches and requests carry it (KIP-101).
    pub leader_epoch: i32,
    /// The in-sync replicas: the only ones a leader may be chosen from (unclean
    /// election is off). Never empty: an offline partition keeps its last member, which
    /// leads again when it returns.
    pub isr: Vec<NodeId>,
    /// Raised at every change of this record, so a stale change can be refused
    /// (KIP-497's partition epoch).
    pub partition_epoch: i32,
    /// A move to other replicas under way (KIP-455); see [`Reassignment`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassignment: Option<Reassignment>,
}

/// A partition moving to other brokers. While it is under way the partition's replicas
/// are the target followed by the replicas leaving (so the target's first is the
/// preferred leader); the brokers added copy the log by follower fetch, at most
/// `throttle_bytes_per_sec` each (0: unthrottled), and join the in-sync set as any
/// follower does. Once every target replica is in sync, the replicas become the target:
/// the leaving ones drop out of the in-sync set and, if the leader is one of them,
/// leadership moves to the first in-sync target replica in a new epoch. Producers and
/// consumers go on throughout; at worst they follow one leader change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    pub target: Vec<NodeId>,
    pub throttle_bytes_per_sec: u64,
}

impl PartitionRecord {
    /// A new partition: the first replica leads, every replica is in sync.
    pub fn new(replicas: Vec<NodeId>) -> Self {
        Self {
            leader: replicas.first().copied(),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            reassignment: None,
        }
    }

    /// Replicas a reassignment under way adds.
    pub fn adding(&self) -> Vec<NodeId> {
        let Some(r) = &self.reassignment else {
            return Vec::new();
        };
        let mut v = r.target.clone();
        v.retain(|id| !self.isr.contains(id));
        v
    }

    /// Replicas a reassignment under way removes.
    pub fn removing(&self) -> Vec<NodeId> {
        let Some(r) = &self.reassignment else {
            return Vec::new();
        };
        let mut v = self.replicas.clone();
        v.retain(|id| !r.target.contains(id));
        v
    }
}

/// A topic as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    /// Fixed at creation (KIP-516): another topic of the same name has another id.
    pub id: String,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionRecord>,
    pub created_ms: i64,
}

/// A change to the cluster's metadata, proposed to the controller's Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// A broker announces itself (at start-up, and after its address changes). It
    /// starts fenced until its first heartbeat reaches the controller.
    RegisterBroker {
        id: NodeId,
        addr: String,
        #[serde(default)]
        kafka_addr: Option<String>,
        rack: Option<String>,
        incarnation: String,
        at_ms: i64,
    },
    /// The controller saw no heartbeat from the broker for its session timeout.
    FenceBroker { id: NodeId, at_ms: i64 },
    /// The controller heard from a fenced broker again.
    UnfenceBroker { id: NodeId, at_ms: i64 },
    /// A new topic with its replica assignment (placed by the proposer, see
    /// [`crate::placement`]).
    CreateTopic { topic: TopicRecord },
    /// Removes a topic, if it is still the incarnation named.
    DeleteTopic { name: String, id: String },
    /// Replaces a topic's config overrides (checked by the proposer), if it is still
    /// the incarnation named.
    AlterTopicConfigs {
        name: String,
        id: String,
        configs: BTreeMap<String, String>,
    },
    /// A partition leader changes its in-sync set (Kafka's AlterPartition, KIP-497):
    /// applied only if the leader, its epoch and the partition epoch are still the
    /// ones it saw, so a change based on stale state is refused.
    AlterPartition {
        topic: String,
        topic_id: String,
        partition: u32,
        leader: NodeId,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<NodeId>,
    },
    /// Adds partitions to a topic (Kafka's CreatePartitions), placed by the proposer:
    /// `replicas[i]` holds partition `from + i`. Applied only if the topic is still the
    /// incarnation named and still has `from` partitions, so two concurrent adds cannot
    /// both apply.
    CreatePartitions {
        topic: String,
        topic_id: String,
        from: u32,
        replicas: Vec<Vec<NodeId>>,
    },
    /// Moves a partition to `replicas` (Kafka's AlterPartitionReassignments), if the
    /// topic is still the incarnation named; see [`Reassignment`].
    ReassignPartition {
        topic: String,
        topic_id: String,
        partition: u32,
        replicas: Vec<NodeId>,
        throttle_bytes_per_sec: u64,
    },
    /// Sets a user's SCRAM credential for one mechanism (Kafka's
    /// AlterUserScramCredentials upsertion): only salted keys, never a password.
    UpsertScramCredential {
        user: String,
        mechanism: Mechanism,
        credential: ScramCredential,
    },
    /// Removes a user's credential for one mechanism; refused if it has none.
    DeleteScramCredential { user: String, mechanism: Mechanism },
    /// Adds ACL bindings (Kafka's CreateAcls); refused whole if one is malformed.
    CreateAcls { acls: Vec<AclBinding> },
    /// Removes these exact bindings (the proposer resolved Kafka's DeleteAcls filters
    /// against its state); those already gone are skipped.
    DeleteAcls { acls: Vec<AclBinding> },
}

/// What applying a command answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Why the command changed nothing, if it did not apply.
    pub error: Option<String>,
}

impl CommandResult {
    fn refused(why: String) -> Self {
        Self { error: Some(why) }
    }
}

/// The cluster's metadata: what every broker learns from the controller's log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The cluster's id (Kafka's `cluster.id`): the incarnation of the first broker
    /// that registered, the same on every member.
    #[serde(default)]
    pub cluster_id: String,
    pub brokers: BTreeMap<NodeId, BrokerRecord>,
    #[serde(default)]
    pub topics: BTreeMap<String, TopicRecord>,
    /// SASL/SCRAM users (also checked by SASL/PLAIN).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: Users,
    /// Who may do what (see [`strata_auth::acl`]).
    #[serde(default, skip_serializing_if = "Acls::is_empty")]
    pub acls: Acls,
}

impl ClusterState {
    /// Applies one command.
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            Command::RegisterBroker {
                id,
                addr,
                kafka_addr,
                rack,
                incarnation,
                at_ms,
            } => {
                if let Some(known) = self.brokers.get(id)
                    && known.incarnation != *incarnation
                {
                    // Its data directory is new: it lost what it held as a replica
                    // and, as a voter, what it voted for.
                    return CommandResult::refused(format!(
                        "broker {id} is known to the cluster with another data directory (incarnation {}, now {incarnation}): a broker whose disk was wiped must come back under a new --node-id",
                        known.incarnation
                    ));
                }
                // A restart too starts fenced (as KRaft's brokers do): its log may
                // have lost an unflushed tail, so it must not lead on in the same epoch.
                // Leadership moves to an in-sync replica; it follows, catches up, is
                // added back and, as the preferred replica, leads again with a new epoch.
                if self.cluster_id.is_empty() {
                    self.cluster_id = incarnation.clone();
                }
                let restarted = self.brokers.contains_key(id);
                self.brokers.insert(
                    *id,
                    BrokerRecord {
                        id: *id,
                        addr: addr.clone(),
                        kafka_addr: kafka_addr.clone(),
                        rack: rack.clone(),
                        incarnation: incarnation.clone(),
                        fenced: true,
                        registered_ms: *at_ms,
                    },
                );
                if restarted {
                    self.elect_leaders();
                }
                CommandResult::default()
            }
            Command::FenceBroker { id, .. } | Command::UnfenceBroker { id, .. } => {
                let fence = matches!(cmd, Command::FenceBroker { .. });
                match self.brokers.get_mut(id) {
                    Some(b) => {
                        b.fenced = fence;
                        self.elect_leaders();
                        CommandResult::default()
                    }
                    None => CommandResult::refused(format!("broker {id} is not registered")),
                }
            }
            Command::CreateTopic { topic } => match self.check_new_topic(topic) {
                Ok(()) => {
                    let mut topic = topic.clone();
                    for p in &mut topic.partitions {
                        *p = PartitionRecord::new(p.replicas.clone());
                    }
                    self.topics.insert(topic.name.clone(), topic);
                    self.elect_leaders();
                    CommandResult::default()
                }
                Err(why) => CommandResult::refused(why),
            },
            Command::DeleteTopic { name, id } => match self.topics.get(name) {
                Some(t) if t.id == *id => {
                    self.topics.remove(name);
                    CommandResult::default()
                }
                _ => CommandResult::refused(format!(
                    "topic {name:?} with id {id} does not exist (deleted already, or created again since)"
                )),
            },
            Command::AlterTopicConfigs { name, id, configs } => match self.topics.get_mut(name) {
                Some(t) if t.id == *id => {
                    t.configs = configs.clone();
                    CommandResult::default()
                }
                _ => CommandResult::refused(format!(
                    "topic {name:?} with id {id} does not exist (deleted already, or created again since)"
                )),
            },
            Command::AlterPartition {
                topic,
                topic_id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => match self.alter_partition(
                topic,
                topic_id,
                *partition,
                *leader,
                (*leader_epoch, *partition_epoch),
                isr,
            ) {
                Ok(()) => {
                    self.complete_reassignments();
                    self.elect_leaders();
                    CommandResult::default()
                }
                Err(why) => CommandResult::refused(why),
            },
            Command::CreatePartitions {
                topic,
                topic_id,
                from,
                replicas,
            } => match self.create_partitions(topic, topic_id, *from, replicas) {
                Ok(()) => {
                    self.elect_leaders();
                    CommandResult::default()
                }
                Err(why) => CommandResult::refused(why),
            },
            Command::ReassignPartition {
                topic,
                topic_id,
                partition,
                replicas,
                throttle_bytes_per_sec,
            } => match self.reassign(
                topic,
                topic_id,
                *partition,
                replicas,
                *throttle_bytes_per_sec,
            ) {
                Ok(()) => {
                    self.complete_reassignments();
                    self.elect_leaders();
                    CommandResult::default()
                }
                Err(why) => CommandResult::refused(why),
            },
            Command::UpsertScramCredential {
                user,
                mechanism,
                credential,
            } => match strata_auth::check_name(user)
                .and_then(|()| strata_auth::scram::check_iterations(credential.iterations))
            {
                Ok(()) => {
                    self.users
                        .entry(user.clone())
                        .or_default()
                        .insert(*mechanism, credential.clone());
                    CommandResult::default()
                }
                Err(e) => CommandResult::refused(e.to_string()),
            },
            Command::DeleteScramCredential { user, mechanism } => {
                let Some(creds) = self.users.get_mut(user) else {
                    return CommandResult::refused(format!("user {user:?} does not exist"));
                };
                if creds.remove(mechanism).is_none() {
                    return CommandResult::refused(format!(
                        "user {user:?} has no {} credential",
                        mechanism.name()
                    ));
                }
                if creds.is_empty() {
                    self.users.remove(user);
                }
                CommandResult::default()
            }
            Command::CreateAcls { acls } => {
                if let Some(e) = acls.iter().find_map(|b| b.validate().err()) {
                    return CommandResult::refused(e.to_string());
                }
                for b in acls {
                    self.acls.insert(b.clone());
                }
                CommandResult::default()
            }
            Command::DeleteAcls { acls } => {
                for b in acls {
                    self.acls.remove(b);
                }
                CommandResult::default()
            }
        }
    }

    /// Partition `partition` of `topic`, if the topic is still the incarnation named.
    fn partition(
        &self,
        topic: &str,
        topic_id: &str,
        partition: u32,
    ) -> Result<&PartitionRecord, String> {
        self.topics
            .get(topic)
            .filter(|t| t.id == topic_id)
            .ok_or_else(|| format!("topic {topic:?} with id {topic_id} does not exist"))?
            .partitions
            .get(partition as usize)
            .ok_or_else(|| format!("topic {topic:?} has no partition {partition}"))
    }

    fn reassign(
        &mut self,
        topic: &str,
        topic_id: &str,
        partition: u32,
        target: &[NodeId],
        throttle_bytes_per_sec: u64,
    ) -> Result<(), String> {
        let p = self.partition(topic, topic_id, partition)?;
        if target.is_empty() {
            return Err(format!("{topic}-{partition}: name at least one replica"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in target {
            if !self.brokers.contains_key(r) {
                return Err(format!(
                    "broker {r} is not registered: {topic}-{partition} can only move to brokers of the cluster (`strata cluster status` lists them)"
                ));
            }
            if !seen.insert(r) {
                return Err(format!("broker {r} is named twice"));
            }
        }
        if let Some(r) = &p.reassignment {
            return Err(format!(
                "{topic}-{partition} is already moving to {:?}; wait until that finishes (`strata topic describe {topic}`)",
                r.target
            ));
        }
        if p.replicas == target {
            return Ok(());
        }
        let mut replicas = target.to_vec();
        replicas.extend(p.replicas.iter().filter(|r| !target.contains(r)));
        let p = &mut self.topics.get_mut(topic).expect("checked").partitions[partition as usize];
        p.replicas = replicas;
        p.reassignment = Some(Reassignment {
            target: target.to_vec(),
            throttle_bytes_per_sec,
        });
        p.partition_epoch += 1;
        Ok(())
    }

    /// Finishes every reassignment whose target replicas are all in sync (see
    /// [`Reassignment`]): the replicas become the target and the leaving ones leave the
    /// in-sync set. A leaving leader is then out of sync, so [`Self::elect_leaders`]
    /// (which runs after this) hands leadership to the first in-sync target replica.
    fn complete_reassignments(&mut self) {
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                let in_sync = |r: &Reassignment| r.target.iter().all(|id| p.isr.contains(id));
                let Some(r) = p.reassignment.take_if(|r| in_sync(r)) else {
                    continue;
                };
                p.isr.retain(|id| r.target.contains(id));
                p.isr
                    .sort_by_key(|id| r.target.iter().position(|x| x == id));
                p.replicas = r.target;
                p.partition_epoch += 1;
            }
        }
    }

    fn alter_partition(
        &mut self,
        topic: &str,
        topic_id: &str,
        partition: u32,
        leader: NodeId,
        (leader_epoch, partition_epoch): (i32, i32),
        isr: &[NodeId],
    ) -> Result<(), String> {
        let live = |id: &NodeId| self.brokers.get(id).is_some_and(|b| !b.fenced);
        let p = self.partition(topic, topic_id, partition)?;
        if p.leader != Some(leader) || p.leader_epoch != leader_epoch {
            return Err(format!(
                "broker {leader} in epoch {leader_epoch} no longer leads {topic}-{partition} (now {:?} in epoch {})",
                p.leader, p.leader_epoch
            ));
        }
        if p.partition_epoch != partition_epoch {
            return Err(format!(
                "{topic}-{partition} changed since (partition epoch {} , not {partition_epoch})",
                p.partition_epoch
            ));
        }
        if !isr.contains(&leader) {
            return Err("the in-sync set must hold its leader".into());
        }
        if let Some(r) = isr.iter().find(|r| !p.replicas.contains(r)) {
            return Err(format!(
                "broker {r} is not a replica of {topic}-{partition}"
            ));
        }
        // A fenced broker is not added: it would hold back the high watermark.
        if let Some(r) = isr.iter().find(|r| !p.isr.contains(r) && !live(r)) {
            return Err(format!(
                "broker {r} is fenced and cannot join the in-sync set"
            ));
        }
        let mut isr = isr.to_vec();
        isr.sort_by_key(|r| p.replicas.iter().position(|x| x == r));
        isr.dedup();
        let p = &mut self.topics.get_mut(topic).expect("checked").partitions[partition as usize];
        p.isr = isr;
        p.partition_epoch += 1;
        Ok(())
    }

    fn check_new_topic(&self, t: &TopicRecord) -> Result<(), String> {
        if self.topics.contains_key(&t.name) {
            return Err(format!("topic {:?} already exists", t.name));
        }
        if t.partitions.is_empty() {
            return Err(format!("topic {:?} needs at least one partition", t.name));
        }
        for (n, p) in t.partitions.iter().enumerate() {
            self.check_placement(&t.name, n, &p.replicas)?;
        }
        Ok(())
    }

    /// Checks a new partition's replicas: at least one, each a registered broker, none
    /// named twice.
    fn check_placement(&self, topic: &str, n: usize, replicas: &[NodeId]) -> Result<(), String> {
        if replicas.is_empty() {
            return Err(format!("partition {n} of {topic:?} has no replicas"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in replicas {
            if !self.brokers.contains_key(r) {
                return Err(format!(
                    "partition {n} of {topic:?} is placed on broker {r}, which is not registered"
                ));
            }
            if !seen.insert(r) {
                return Err(format!("partition {n} of {topic:?} lists broker {r} twice"));
            }
        }
        Ok(())
    }

    fn create_partitions(
        &mut self,
        topic: &str,
        topic_id: &str,
        from: u32,
        replicas: &[Vec<NodeId>],
    ) -> Result<(), String> {
        let t = self
            .topics
            .get(topic)
            .filter(|t| t.id == topic_id)
            .ok_or_else(|| format!("topic {topic:?} with id {topic_id} does not exist"))?;
        if t.partitions.len() as u32 != from {
            return Err(format!(
                "topic {topic:?} has {} partitions now, not {from}: it changed since; try again",
                t.partitions.len()
            ));
        }
        if replicas.is_empty() {
            return Err(format!("no partitions to add to {topic:?}"));
        }
        // Groups map to the offsets topic's partitions by hash: its count is fixed.
        if topic == "__consumer_offsets" {
            return Err(format!("{topic} is internal: its partition count is fixed"));
        }
        if from as usize + replicas.len() > MAX_PARTITIONS {
            return Err(format!(
                "a topic has at most {MAX_PARTITIONS} partitions; {topic:?} would have {}",
                from as usize + replicas.len()
            ));
        }
        for (i, r) in replicas.iter().enumerate() {
            self.check_placement(topic, from as usize + i, r)?;
        }
        let t = self.topics.get_mut(topic).expect("checked");
        t.partitions
            .extend(replicas.iter().map(|r| PartitionRecord::new(r.clone())));
        Ok(())
    }

    /// Moves leadership off fenced brokers and onto live ones, as Kafka's controller
    /// does when a broker's liveness changes: a fenced broker leaves every in-sync set
    /// it is not the last member of, a partition whose leader is fenced gets the first
    /// live in-sync replica (in replica order) as leader with the next epoch, or none
    /// (offline) if there is none; an offline partition whose last in-sync member is
    /// back gets it as leader. Never a leader outside the in-sync set. The preferred
    /// replica (the first) takes leadership back once it is live and in sync again, so
    /// leadership spreads again after a broker returns (Kafka's preferred leader
    /// election).
    fn elect_leaders(&mut self) {
        let live: std::collections::BTreeSet<NodeId> = self
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect();
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                let before = p.clone();
                if p.isr.iter().any(|r| live.contains(r)) {
                    p.isr.retain(|r| live.contains(r));
                }
                let leader_ok = p
                    .leader
                    .is_some_and(|l| live.contains(&l) && p.isr.contains(&l));
                let preferred = p.replicas[0];
                let preferred_back = p.leader != Some(preferred)
                    && live.contains(&preferred)
                    && p.isr.contains(&preferred);
                if !leader_ok || preferred_back {
                    let next = p
                        .replicas
                        .iter()
                        .copied()
                        .find(|r| p.isr.contains(r) && live.contains(r));
                    if next != p.leader {
                        p.leader = next;
                        p.leader_epoch += 1;
                    }
                }
                if *p != before {
                    p.partition_epoch += 1;
                }
            }
        }
    }

    /// Partitions with a leader but fewer in-sync replicas than replicas, and those
    /// without a leader.
    pub fn unhealthy_partitions(&self) -> (usize, usize) {
        let mut under = 0;
        let mut offline = 0;
        for t in self.topics.values() {
            for p in &t.partitions {
                match p.leader {
                    None => offline += 1,
                    Some(_) if p.isr.len() < p.replicas.len() => under += 1,
                    Some(_) => {}
                }
            }
        }
        (under, offline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(id: NodeId, incarnation: &str) -> Command {
        Command::RegisterBroker {
            id,
            addr: format!("127.0.0.1:{}", 9000 + id),
            kafka_addr: None,
            rack: None,
            incarnation: incarnation.into(),
            at_ms: 1,
        }
    }

    #[test]
    fn a_broker_registers_fenced_and_a_wiped_one_is_refused_under_its_old_id() {
        let mut s = ClusterState::default();
        assert_eq!(s.apply(&register(1, "a")), CommandResult::default());
        assert!(s.brokers[&1].fenced, "fenced until it heartbeats");
        s.apply(&Command::UnfenceBroker { id: 1, at_ms: 2 });
        assert!(!s.brokers[&1].fenced);
        // A restart with the same disk starts fenced again, until it heartbeats.
        s.apply(&register(1, "a"));
        assert!(s.brokers[&1].fenced);
        s.apply(&Command::UnfenceBroker { id: 1, at_ms: 3 });
        let before = s.clone();
        let refused = s.apply(&register(1, "b"));
        assert!(refused.error.unwrap().contains("new --node-id"));
        assert_eq!(s, before, "a refused command changes nothing");
        assert!(
            s.apply(&Command::FenceBroker { id: 7, at_ms: 3 })
                .error
                .is_some()
        );
    }

    fn topic(name: &str, replicas: &[&[NodeId]]) -> Command {
        Command::CreateTopic {
            topic: TopicRecord {
                name: name.into(),
                id: format!("{name}-id"),
                configs: BTreeMap::new(),
                partitions: replicas
                    .iter()
                    .map(|r| PartitionRecord::new(r.to_vec()))
                    .collect(),
                created_ms: 1,
            },
        }
    }

    fn live_cluster(n: NodeId) -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=n {
            s.apply(&register(id, "a"));
            s.apply(&Command::UnfenceBroker { id, at_ms: 1 });
        }
        s
    }

    #[test]
    fn partitions_are_added_once_on_the_incarnation_named_and_lead_on_a_live_replica() {
        let mut s = live_cluster(3);
        s.apply(&topic("t", &[&[1, 2]]));
        s.apply(&Command::FenceBroker { id: 2, at_ms: 2 });
        let add = |id: &str, from: u32, replicas: Vec<Vec<NodeId>>| Command::CreatePartitions {
            topic: "t".into(),
            topic_id: id.into(),
            from,
            replicas,
        };
        // Refused, changing nothing: another incarnation, a stale count, an unknown or
        // doubled broker, nothing to add.
        let before = s.clone();
        for bad in [
            add("old-id", 1, vec![vec![2, 3]]),
            add("t-id", 2, vec![vec![2, 3]]),
            add("t-id", 1, vec![vec![2, 9]]),
            add("t-id", 1, vec![vec![3, 3]]),
            add("t-id", 1, vec![]),
        ] {
            assert!(s.apply(&bad).error.is_some(), "{bad:?}");
        }
        assert_eq!(s, before);
        assert_eq!(
            s.apply(&add("t-id", 1, vec![vec![2, 3], vec![3, 1]])),
            CommandResult::default()
        );
        let t = &s.topics["t"];
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.partitions[0], before.topics["t"].partitions[0]);
        // Broker 2 is fenced: its new partition is led by the next in-sync replica.
        assert_eq!(t.partitions[1].replicas, vec![2, 3]);
        assert_eq!(t.partitions[1].leader, Some(3));
        assert_eq!(t.partitions[2].leader, Some(3));
        // The same add again (a retry, or a second admin) is refused: the count moved.
        assert!(
            s.apply(&add("t-id", 1, vec![vec![2, 3], vec![3, 1]]))
                .error
                .is_some()
        );
    }

    #[test]
    fn a_reassignment_adds_the_new_replicas_then_drops_the_old_ones_once_they_are_in_sync() {
        let mut s = live_cluster(4);
        s.apply(&topic("t", &[&[1, 2, 3]]));
        let p = |s: &ClusterState| s.topics["t"].partitions[0].clone();
        let reassign = |replicas: &[NodeId]| Command::ReassignPartition {
            topic: "t".into(),
            topic_id: "t-id".into(),
            partition: 0,
            replicas: replicas.to_vec(),
            throttle_bytes_per_sec: 1 << 20,
        };
        // Refused, changing nothing: an unknown broker, a broker twice, no replica.
        let before = s.clone();
        for bad in [&[2, 3, 9][..], &[2, 2, 4], &[]] {
            assert!(s.apply(&reassign(bad)).error.is_some(), "{bad:?}");
        }
        assert_eq!(s, before);
        assert_eq!(s.apply(&reassign(&[2, 3, 4])), CommandResult::default());
        let moving = p(&s);
        assert_eq!(
            moving.replicas,
            vec![2, 3, 4, 1],
            "target first, then the leaving"
        );
        assert_eq!(moving.adding(), vec![4]);
        assert_eq!(moving.removing(), vec![1]);
        // The target's first replica is the preferred leader now, and in sync already:
        // it takes over.
        assert_eq!(moving.leader, Some(2));
        assert!(
            s.apply(&reassign(&[3, 4, 1])).error.is_some(),
            "one at a time"
        );
        // Broker 4 catches up and the leader adds it to the in-sync set: the partition
        // is on the target, broker 1 out of it.
        let alter = Command::AlterPartition {
            topic: "t".into(),
            topic_id: "t-id".into(),
            partition: 0,
            leader: 2,
            leader_epoch: moving.leader_epoch,
            partition_epoch: moving.partition_epoch,
            isr: vec![1, 2, 3, 4],
        };
        assert_eq!(s.apply(&alter), CommandResult::default());
        let done = p(&s);
        assert_eq!(done.replicas, vec![2, 3, 4]);
        assert_eq!(done.isr, vec![2, 3, 4]);
        assert_eq!(done.reassignment, None);
        assert_eq!(done.leader, Some(2));
        // Shrinking onto replicas already in sync finishes at once, and a leader that
        // leaves hands over in a new epoch.
        assert_eq!(s.apply(&reassign(&[3, 4])), CommandResult::default());
        let shrunk = p(&s);
        assert_eq!(
            (shrunk.replicas.clone(), shrunk.isr.clone()),
            (vec![3, 4], vec![3, 4])
        );
        assert_eq!(shrunk.leader, Some(3));
        assert!(shrunk.leader_epoch > done.leader_epoch);
    }

    #[test]
    fn a_fenced_leader_hands_over_to_an_in_sync_replica_with_the_next_epoch() {
        let mut s = live_cluster(3);
        assert_eq!(
            s.apply(&topic("t", &[&[1, 2, 3], &[2, 3, 1]])),
            CommandResult::default()
        );
        let p = |s: &ClusterState, n: usize| s.topics["t"].partitions[n].clone();
        assert_eq!((p(&s, 0).leader, p(&s, 0).leader_epoch), (Some(1), 0));
        s.apply(&Command::FenceBroker { id: 1, at_ms: 2 });
        let p0 = p(&s, 0);
        assert_eq!(
            (p0.leader, p0.leader_epoch, p0.isr.clone()),
            (Some(2), 1, vec![2, 3])
        );
        assert_eq!(
            p(&s, 1).leader,
            Some(2),
            "a partition led elsewhere keeps its leader"
        );
        assert_eq!(p(&s, 1).leader_epoch, 0);
        assert_eq!(
            p(&s, 1).isr,
            vec![2, 3],
            "but the fenced broker leaves its in-sync set"
        );
        // Back: a follower again; it rejoins the in-sync set only by catching up
        // (replication's business), so leadership stays.
        s.apply(&Command::UnfenceBroker { id: 1, at_ms: 3 });
        assert_eq!((p(&s, 0).leader, p(&s, 0).leader_epoch), (Some(2), 1));
        assert_eq!(s.unhealthy_partitions(), (2, 0));
    }

    #[test]
    fn with_no_live_in_sync_replica_a_partition_goes_offline_and_only_its_last_member_revives_it() {
        let mut s = live_cluster(3);
        s.apply(&topic("t", &[&[1, 2]]));
        s.apply(&Command::FenceBroker { id: 2, at_ms: 2 });
        s.apply(&Command::FenceBroker { id: 1, at_ms: 3 });
        let p = s.topics["t"].partitions[0].clone();
        assert_eq!(
            (p.leader, p.isr.clone()),
            (None, vec![1]),
            "offline; 1 was last in sync"
        );
        assert_eq!(s.unhealthy_partitions(), (0, 1));
        // 2 returns first: it is not in sync, so no unclean election.
        s.apply(&Command::UnfenceBroker { id: 2, at_ms: 4 });
        assert_eq!(s.topics["t"].partitions[0].leader, None);
        s.apply(&Command::UnfenceBroker { id: 1, at_ms: 5 });
        let p = s.topics["t"].partitions[0].clone();
        assert_eq!((p.leader, p.leader_epoch), (Some(1), 2));
    }

    #[test]
    fn topics_on_unknown_brokers_or_twice_are_refused_and_delete_names_the_incarnation() {
        let mut s = live_cluster(2);
        assert!(
            s.apply(&topic("t", &[&[1, 9]]))
                .error
                .unwrap()
                .contains("broker 9")
        );
        assert!(
            s.apply(&topic("t", &[&[1, 1]]))
                .error
                .unwrap()
                .contains("twice")
        );
        assert_eq!(s.apply(&topic("t", &[&[1, 2]])), CommandResult::default());
        assert!(
            s.apply(&topic("t", &[&[1]]))
                .error
                .unwrap()
                .contains("already exists")
        );
        let wrong = Command::DeleteTopic {
            name: "t".into(),
            id: "other".into(),
        };
        assert!(s.apply(&wrong).error.is_some());
        let right = Command::DeleteTopic {
            name: "t".into(),
            id: "t-id".into(),
        };
        assert_eq!(s.apply(&right), CommandResult::default());
        assert!(s.topics.is_empty());
    }

    #[test]
    fn an_isr_change_applies_only_from_the_current_leader_and_partition_epoch() {
        let mut s = live_cluster(3);
        s.apply(&topic("t", &[&[1, 2, 3]]));
        let alter =
            |isr: &[NodeId], leader, leader_epoch, partition_epoch| Command::AlterPartition {
                topic: "t".into(),
                topic_id: "t-id".into(),
                partition: 0,
                leader,
                leader_epoch,
                partition_epoch,
                isr: isr.to_vec(),
            };
        let p = |s: &ClusterState| s.topics["t"].partitions[0].clone();
        // Shrink by the leader at the current epochs.
        assert_eq!(s.apply(&alter(&[1, 2], 1, 0, 0)), CommandResult::default());
        assert_eq!((p(&s).isr, p(&s).partition_epoch), (vec![1, 2], 1));
        // Stale partition epoch, a non-leader, a set without the leader: refused.
        let before = s.clone();
        assert!(
            s.apply(&alter(&[1], 1, 0, 0))
                .error
                .unwrap()
                .contains("changed since")
        );
        assert!(
            s.apply(&alter(&[2], 2, 0, 1))
                .error
                .unwrap()
                .contains("no longer leads")
        );
        assert!(
            s.apply(&alter(&[2], 1, 0, 1))
                .error
                .unwrap()
                .contains("hold its leader")
        );
        assert_eq!(s, before);
        // A fenced broker cannot come back in; a live one can.
        s.apply(&Command::FenceBroker { id: 3, at_ms: 2 });
        let pe = p(&s).partition_epoch;
        assert!(
            s.apply(&alter(&[1, 2, 3], 1, 0, pe))
                .error
                .unwrap()
                .contains("fenced")
        );
        s.apply(&Command::UnfenceBroker { id: 3, at_ms: 3 });
        let pe = p(&s).partition_epoch;
        assert_eq!(
            s.apply(&alter(&[3, 1, 2], 1, 0, pe)),
            CommandResult::default()
        );
        assert_eq!(p(&s).isr, vec![1, 2, 3], "kept in replica order");
    }

    #[test]
    fn a_restarted_leader_registers_fenced_and_hands_leadership_over() {
        let mut s = live_cluster(2);
        s.apply(&topic("t", &[&[1, 2]]));
        s.apply(&register(1, "a"));
        let p = s.topics["t"].partitions[0].clone();
        assert_eq!((p.leader, p.leader_epoch, p.isr), (Some(2), 1, vec![2]));
        assert!(s.brokers[&1].fenced);
    }

    #[test]
    fn the_preferred_replica_leads_again_once_back_in_sync() {
        let mut s = live_cluster(2);
        s.apply(&topic("t", &[&[1, 2]]));
        s.apply(&Command::FenceBroker { id: 1, at_ms: 2 });
        s.apply(&Command::UnfenceBroker { id: 1, at_ms: 3 });
        let p = s.topics["t"].partitions[0].clone();
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (Some(2), 1, vec![2])
        );
        // Broker 2 adds 1 back once it caught up: leadership returns to it.
        s.apply(&Command::AlterPartition {
            topic: "t".into(),
            topic_id: "t-id".into(),
            partition: 0,
            leader: 2,
            leader_epoch: 1,
            partition_epoch: p.partition_epoch,
            isr: vec![1, 2],
        });
        let p = s.topics["t"].partitions[0].clone();
        assert_eq!((p.leader, p.leader_epoch, p.isr), (Some(1), 2, vec![1, 2]));
    }

    #[test]
    fn replicas_that_apply_the_same_log_agree() {
        let log = [
            register(1, "a"),
            register(2, "b"),
            Command::UnfenceBroker { id: 2, at_ms: 5 },
            register(2, "c"),
            topic("t", &[&[2, 1], &[1, 2]]),
            Command::FenceBroker { id: 1, at_ms: 9 },
        ];
        let run = || {
            let mut s = ClusterState::default();
            let answers: Vec<_> = log.iter().map(|c| s.apply(c)).collect();
            (s, answers)
        };
        assert_eq!(run(), run());
        let encoded = serde_json::to_string(&run().0).unwrap();
        let decoded: ClusterState = serde_json::from_str(&encoded).unwrap();
        assert_eq!(decoded, run().0);
    }

    #[test]
    fn scram_credentials_are_set_replaced_and_removed() {
        use strata_auth::{Mechanism, ScramCredential};
        let mut s = ClusterState::default();
        let cred = |pw: &str| ScramCredential::new(Mechanism::Sha512, pw, 4096).unwrap();
        let upsert = |user: &str, c: ScramCredential| Command::UpsertScramCredential {
            user: user.into(),
            mechanism: Mechanism::Sha512,
            credential: c,
        };
        assert_eq!(
            s.apply(&upsert("alice", cred("one"))),
            CommandResult::default()
        );
        let second = cred("two");
        s.apply(&upsert("alice", second.clone()));
        assert_eq!(s.users["alice"][&Mechanism::Sha512], second);
        // A weak credential or a bad name changes nothing.
        let mut weak = cred("x");
        weak.iterations = 10;
        assert!(s.apply(&upsert("bob", weak)).error.is_some());
        assert!(s.apply(&upsert("", cred("x"))).error.is_some());
        assert_eq!(s.users.len(), 1);
        // The state, credentials included, survives a snapshot's round trip.
        let back: ClusterState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let delete = Command::DeleteScramCredential {
            user: "alice".into(),
            mechanism: Mechanism::Sha512,
        };
        assert_eq!(s.apply(&delete), CommandResult::default());
        assert!(s.users.is_empty());
        assert!(s.apply(&delete).error.unwrap().contains("does not exist"));
    }

    #[test]
    fn acls_are_added_checked_and_removed() {
        use strata_auth::{Operation, PatternType, Permission, ResourceType};
        let b = |principal: &str| AclBinding {
            resource_type: ResourceType::Topic,
            name: "orders".into(),
            pattern: PatternType::Literal,
            principal: principal.into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        };
        let mut s = ClusterState::default();
        let create = Command::CreateAcls {
            acls: vec![b("User:alice"), b("User:bob")],
        };
        assert_eq!(s.apply(&create), CommandResult::default());
        // Again: the same bindings, no duplicates.
        s.apply(&create);
        assert_eq!(s.acls.len(), 2);
        // One malformed binding refuses the whole command.
        let bad = Command::CreateAcls {
            acls: vec![b("User:carol"), b("carol")],
        };
        assert!(s.apply(&bad).error.unwrap().contains("User:NAME"));
        assert_eq!(s.acls.len(), 2);
        let back: ClusterState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        s.apply(&Command::DeleteAcls {
            acls: vec![b("User:alice"), b("User:zed")],
        });
        assert_eq!(s.acls.iter().collect::<Vec<_>>(), vec![&b("User:bob")]);
    }
}
