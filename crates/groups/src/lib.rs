//! Consumer groups: membership, server-side assignment and committed offsets.
//!
//! The protocol follows Kafka's KIP-848. Members heartbeat with their subscription and
//! the partitions they own; the coordinator computes a target assignment for the group
//! (range or round-robin) and answers each member with what it should own now:
//! - a partition the member owns but should not is dropped from its answer (revoked);
//!   the member stops reading it, commits, and heartbeats without it;
//! - a partition is added to a member's answer only when no other member has it in its
//!   assignment or still reports owning it.
//!
//! So no partition is ever owned by two members at once, provided members stop reading
//! a partition before they heartbeat without it. Members that miss heartbeats for their
//! session timeout are dropped by housekeeping and their partitions move on.
//!
//! The [`Coordinator`] owns every group's state. It reaches the node it runs on only
//! through [`Host`] (the clock, topics' partitions, the bucket), passed to each call,
//! so it depends on partitions but nothing depends on it except the broker.
//!
//! State is kept in memory and made durable in the internal topic `__consumer_offsets`.
//! A group lives in one of its partitions ([`partition_for`]: Kafka's hash of the group
//! id), and the coordinator of a group is the leader of that partition: this
//! coordinator holds only the groups of partitions it leads, loaded from their logs
//! (up to the log end) when it became leader in its current leader epoch
//! ([`Coordinator::sync_leadership`]), and forgets them when it stops leading. Changes
//! are appended in that epoch (a deposed coordinator's appends are refused) and
//! applied in memory; the request is answered once the partition's in-sync replicas
//! have them (`acks=all`), so an answered commit survives a coordinator failover. A
//! single broker has one partition, which it always leads.
//! Records are JSON: key `{"type":"offset","group","topic","partition"}` with value
//! `{"offset","metadata","commit_ms"}`; key `{"type":"member","group","member"}` with
//! the member's subscription and assignment; key `{"type":"group","group"}` with the
//! group's assignor. A null value deletes the key.

pub mod classic;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use strata_partition::metrics::Metrics;
use strata_partition::{Error as BrokerError, OffsetQuery, Partition, PlainRecord, Result};

/// How long a group change waits for the offsets partition's in-sync replicas.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the coordinator needs from the node it runs on.
pub trait Host: Send + Sync {
    fn now_ms(&self) -> i64;
    /// A topic's partition count (the cluster's metadata, whether or not this node has
    /// a replica); an error naming the topic if there is none.
    fn partition_count(&self, topic: &str) -> Result<u32>;
    /// This node's replica of a partition.
    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>>;
    fn bucket(&self) -> &strata_tier::store::Bucket;
    fn metrics(&self) -> &Metrics;
    /// Names this node in failpoint callbacks (its data directory).
    fn label(&self) -> String;
}

/// The internal topic holding group state and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Assignors a group may use.
pub const ASSIGNORS: &[&str] = &["range", "roundrobin"];
const DEFAULT_SESSION_TIMEOUT_MS: u32 = 10_000;
const MIN_SESSION_TIMEOUT_MS: u32 = 500;
const MAX_SESSION_TIMEOUT_MS: u32 = 300_000;

type Tp = (String, u32);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Key {
    Offset {
        group: String,
        topic: String,
        partition: u32,
    },
    Member {
        group: String,
        member: String,
    },
    Group {
        group: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OffsetValue {
    offset: i64,
    metadata: String,
    commit_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MemberValue {
    epoch: i32,
    topics: Vec<String>,
    session_timeout_ms: u32,
    assigned: Vec<Tp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupValue {
    assignor: String,
}

#[derive(Debug, Clone)]
struct Member {
    epoch: i32,
    topics: Vec<String>,
    session_timeout_ms: u32,
    last_seen_ms: i64,
    /// What the coordinator last told the member to own.
    assigned: BTreeSet<Tp>,
    /// What the member last reported owning.
    owned: BTreeSet<Tp>,
}

#[derive(Debug, Clone, Default)]
struct Group {
    assignor: String,
    epoch: i32,
    members: BTreeMap<String, Member>,
    offsets: BTreeMap<Tp, (i64, String)>,
}

/// All groups, behind the coordinator's lock.
#[derive(Debug, Default)]
struct Groups {
    groups: BTreeMap<String, Group>,
    next_member: u64,
    /// Offsets-topic partitions this coordinator leads and has loaded, with the leader
    /// epoch it loaded them in. `groups` holds only groups of these partitions.
    loaded: BTreeMap<u32, i32>,
    /// The offsets topic's partition count; 0 until it exists here.
    partitions: u32,
    /// Partitions whose groups are being loaded.
    loading: BTreeSet<u32>,
}

/// The offsets-topic partition that holds `group`: Kafka's
/// `abs(groupId.hashCode()) % partitions` (Java's string hash over UTF-16), so Kafka
/// clients and tools find the same coordinator.
pub fn partition_for(group: &str, partitions: u32) -> u32 {
    let h = group
        .encode_utf16()
        .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)));
    (h & 0x7fff_ffff) as u32 % partitions.max(1)
}

impl Groups {
    /// Where `group`'s changes go: its offsets partition and the leader epoch this
    /// coordinator loaded it in. Refused when another broker coordinates it.
    fn route(&self, group: &str) -> Result<(u32, i32)> {
        if self.partitions == 0 {
            return Err(BrokerError::CoordinatorNotAvailable(format!(
                "{OFFSETS_TOPIC} does not exist on this broker yet (it is created once enough brokers are live)"
            )));
        }
        let p = partition_for(group, self.partitions);
        match self.loaded.get(&p) {
            Some(epoch) => Ok((p, *epoch)),
            None if self.loading.contains(&p) => Err(BrokerError::CoordinatorNotAvailable(
                format!("this broker is loading the groups of {OFFSETS_TOPIC}-{p}"),
            )),
            None => Err(not_coordinator(group, p, None)),
        }
    }
}

fn not_coordinator(group: &str, partition: u32, leader: Option<u64>) -> BrokerError {
    BrokerError::NotCoordinator {
        group: group.to_string(),
        topic: OFFSETS_TOPIC.to_string(),
        partition,
        leader,
    }
}

/// A change appended to the offsets topic, to be answered once it is committed.
#[derive(Default)]
pub struct Committing {
    wait: Option<(String, Arc<Partition>, i64, i32)>,
}

impl Committing {
    /// Resolves once the offsets partition's in-sync replicas have the change; fails
    /// (naming the new coordinator) if this broker stopped leading it meanwhile.
    pub async fn committed(self) -> Result<()> {
        let Some((group, p, last_offset, epoch)) = self.wait else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + COMMIT_TIMEOUT;
        p.wait_committed(last_offset, epoch, deadline)
            .await
            .map_err(|e| coordinator_error(&group, p.id, e))
    }
}

/// A leadership error of the offsets partition, said as the group's.
fn coordinator_error(group: &str, partition: u32, e: BrokerError) -> BrokerError {
    match e {
        BrokerError::NotLeader { leader, .. } => not_coordinator(group, partition, leader),
        BrokerError::FencedLeaderEpoch { .. } => not_coordinator(group, partition, None),
        e => e,
    }
}

/// One heartbeat from a member (see `GroupHeartbeatRequest` in the proto).
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub group: String,
    /// Empty to join.
    pub member_id: String,
    /// 0 to join, -1 to leave.
    pub member_epoch: i32,
    pub topics: Vec<String>,
    pub owned: BTreeSet<Tp>,
    pub assignor: String,
    pub session_timeout_ms: u32,
    /// Let a member join subscribed to topics that do not exist (yet): they are
    /// assigned once created, as Kafka does. gRPC members are told instead.
    pub allow_unknown_topics: bool,
}

/// A member's answer from a heartbeat.
#[derive(Debug, Clone)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: u32,
    pub assignment: BTreeMap<String, Vec<u32>>,
}

/// One row of `group describe`'s offsets.
#[derive(Debug, Clone)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    pub committed_offset: i64,
    pub high_watermark: i64,
    pub lag: i64,
    pub metadata: String,
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub member_epoch: i32,
    pub topics: Vec<String>,
    pub assignment: BTreeMap<String, Vec<u32>>,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group: String,
    pub state: &'static str,
    pub assignor: String,
    pub group_epoch: i32,
    pub members: Vec<MemberDescription>,
    pub offsets: Vec<PartitionLag>,
}

fn group_map(set: &BTreeSet<Tp>) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (t, p) in set {
        out.entry(t.clone()).or_default().push(*p);
    }
    out
}

fn validate_group_name(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > 249 || group.chars().any(char::is_control) {
        return Err(BrokerError::InvalidRequest(format!(
            "invalid group name {group:?}: use 1 to 249 printable characters"
        )));
    }
    Ok(())
}

impl Group {
    fn state(&self, targets: &BTreeMap<String, BTreeSet<Tp>>) -> &'static str {
        if self.members.is_empty() {
            return "Empty";
        }
        let settled = self.members.iter().all(|(id, m)| {
            let target = targets.get(id).cloned().unwrap_or_default();
            m.assigned == target && m.owned == target
        });
        if settled { "Stable" } else { "Reconciling" }
    }
}

/// Members subscribed to `topic`, in id order.
fn subscribers_of<'a>(group: &'a Group, topic: &str) -> Vec<&'a String> {
    group
        .members
        .iter()
        .filter(|(_, m)| m.topics.iter().any(|t| t == topic))
        .map(|(id, _)| id)
        .collect()
}

/// The target assignment: member id -> partitions, from sorted members and partitions.
fn compute_targets(
    group: &Group,
    partitions_of: &dyn Fn(&str) -> u32,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut targets: BTreeMap<String, BTreeSet<Tp>> = group
        .members
        .keys()
        .map(|id| (id.clone(), BTreeSet::new()))
        .collect();
    let topics: BTreeSet<&String> = group
        .members
        .values()
        .flat_map(|m| m.topics.iter())
        .collect();
    if group.assignor == "roundrobin" {
        // Deal every subscribed partition in turn to the members subscribed to its topic.
        let mut turn = 0usize;
        for topic in topics {
            let subscribers = subscribers_of(group, topic);
            for p in 0..partitions_of(topic) {
                let id = subscribers[turn % subscribers.len()];
                targets
                    .get_mut(id)
                    .expect("member")
                    .insert((topic.clone(), p));
                turn += 1;
            }
        }
    } else {
        // Range: per topic, contiguous blocks; the first members get one extra.
        for topic in topics {
            let subscribers = subscribers_of(group, topic);
            let n = partitions_of(topic) as usize;
            let (each, extra) = (n / subscribers.len(), n % subscribers.len());
            let mut p = 0;
            for (i, id) in subscribers.iter().enumerate() {
                let take = each + usize::from(i < extra);
                for q in p..p + take {
                    targets
                        .get_mut(*id)
                        .expect("member")
                        .insert((topic.clone(), q as u32));
                }
                p += take;
            }
        }
    }
    targets
}

/// The group coordinator: every group's members, assignments and committed offsets.
#[derive(Debug, Default)]
pub struct Coordinator {
    groups: parking_lot::Mutex<Groups>,
    snapshots: SnapshotState,
    /// Per offsets partition: the last offset appended (or loaded). An answer that
    /// writes nothing, or reads, waits until the HW passes it, so no answer shows state
    /// a failover could still take back.
    last_written: parking_lot::Mutex<BTreeMap<u32, i64>>,
}

fn partitions_of(host: &dyn Host, topic: &str) -> u32 {
    host.partition_count(topic).unwrap_or(0)
}

fn targets(host: &dyn Host, group: &Group) -> BTreeMap<String, BTreeSet<Tp>> {
    compute_targets(group, &|t| partitions_of(host, t))
}

impl Coordinator {
    /// Appends `group`'s state changes to its offsets partition (`at`: partition and
    /// the leader epoch it was loaded in); `None` values delete keys.
    fn persist(
        &self,
        host: &dyn Host,
        group: &str,
        at: (u32, i32),
        entries: Vec<(Key, Option<Vec<u8>>)>,
    ) -> Result<Committing> {
        if entries.is_empty() {
            return self.settled(host, group, at);
        }
        if strata_failpoint::hit("groups-persist", || host.label()) {
            let e = std::io::Error::other("failpoint groups-persist");
            return Err(BrokerError::io(format!("appending to {OFFSETS_TOPIC}"), e));
        }
        let p = host.partition(OFFSETS_TOPIC, at.0)?;
        let produced = self
            .append(host, &p, Some(at.1), entries)
            .map_err(|e| coordinator_error(group, at.0, e))?;
        self.last_written.lock().insert(at.0, produced.last_offset);
        Ok(Committing {
            wait: Some((
                group.to_string(),
                p,
                produced.last_offset,
                produced.leader_epoch,
            )),
        })
    }

    /// Resolves once everything appended to `group`'s partition so far is committed.
    fn settled(&self, host: &dyn Host, group: &str, at: (u32, i32)) -> Result<Committing> {
        let Some(last) = self
            .last_written
            .lock()
            .get(&at.0)
            .copied()
            .filter(|o| *o >= 0)
        else {
            return Ok(Committing::default());
        };
        let p = host
            .partition(OFFSETS_TOPIC, at.0)
            .map_err(|_| not_coordinator(group, at.0, None))?;
        Ok(Committing {
            wait: Some((group.to_string(), p, last, at.1)),
        })
    }

    fn append(
        &self,
        host: &dyn Host,
        p: &Arc<Partition>,
        epoch: Option<i32>,
        entries: Vec<(Key, Option<Vec<u8>>)>,
    ) -> Result<strata_partition::partition::Produced> {
        let now = host.now_ms();
        let records: Vec<PlainRecord> = entries
            .into_iter()
            .map(|(k, v)| PlainRecord {
                key: Some(Bytes::from(serde_json::to_vec(&k).expect("key serializes"))),
                value: v.map(Bytes::from),
                timestamp_ms: now,
                headers: Vec::new(),
            })
            .collect();
        let produced = p.append(Bytes::new(), &records, epoch, true)?;
        self.snapshots
            .changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(produced)
    }

    fn member_record(group: &str, id: &str, m: &Member) -> (Key, Option<Vec<u8>>) {
        let v = MemberValue {
            epoch: m.epoch,
            topics: m.topics.clone(),
            session_timeout_ms: m.session_timeout_ms,
            assigned: m.assigned.iter().cloned().collect(),
        };
        (
            Key::Member {
                group: group.to_string(),
                member: id.to_string(),
            },
            Some(serde_json::to_vec(&v).expect("member serializes")),
        )
    }

    /// Makes the groups held here match the offsets partitions this node leads: loads
    /// a partition it leads in a leader epoch it has not loaded (from the partition's
    /// log, up to its end) and forgets the groups of partitions it no longer leads.
    /// Called at start-up and whenever partition roles may have changed.
    pub fn sync_leadership(&self, host: &dyn Host) -> Result<()> {
        let Ok(count) = host.partition_count(OFFSETS_TOPIC) else {
            return Ok(());
        };
        let mut to_load = Vec::new();
        {
            let mut groups = self.groups.lock();
            groups.partitions = count;
            for n in 0..count {
                let led = host
                    .partition(OFFSETS_TOPIC, n)
                    .ok()
                    .filter(|p| p.is_leader())
                    .map(|p| (p.role().1, p));
                let loaded = groups.loaded.get(&n).copied();
                match led {
                    Some((epoch, _)) if loaded == Some(epoch) => {}
                    Some((epoch, p)) => {
                        // Requests for its groups wait (retriable) until it is loaded.
                        groups.unload(n);
                        groups.loading.insert(n);
                        to_load.push((n, epoch, p));
                    }
                    None if loaded.is_some() => {
                        groups.unload(n);
                        tracing::info!(
                            partition = n,
                            "no longer coordinating the groups of this offsets partition"
                        );
                    }
                    None => {}
                }
            }
        }
        // Read without the lock: groups of other partitions go on being served.
        let mut failed = None;
        for (n, epoch, p) in to_load {
            let mut fresh = Groups::default();
            let loaded = Self::load_partition(&mut fresh, host, &p);
            let mut groups = self.groups.lock();
            groups.loading.remove(&n);
            match loaded {
                // Still this epoch's leader: nothing was appended since the read (no
                // request for these groups is served while they load).
                Ok(end) if p.is_leader() && p.role().1 == epoch => {
                    groups.groups.extend(fresh.groups);
                    groups.loaded.insert(n, epoch);
                    self.last_written.lock().insert(n, end - 1);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(partition = n, error = %e, "could not load the groups of an offsets partition; retrying");
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Rebuilds the groups of one offsets partition from its log, to its end; returns
    /// the log end.
    fn load_partition(groups: &mut Groups, host: &dyn Host, p: &Partition) -> Result<i64> {
        let now = host.now_ms();
        let mut at = p.state().log_start_offset;
        let mut applied = 0u64;
        let mut end;
        loop {
            let (buf, log_end) = p.read_to_log_end(at, 4 << 20)?;
            end = log_end;
            if buf.is_empty() {
                break;
            }
            for b in strata_record::BatchIter::new(&buf) {
                let b =
                    b.map_err(|e| BrokerError::InvalidRequest(format!("{OFFSETS_TOPIC}: {e}")))?;
                for r in b.records() {
                    let r = r.map_err(|e| {
                        BrokerError::InvalidRequest(format!("{OFFSETS_TOPIC}: {e}"))
                    })?;
                    if r.offset < at {
                        continue;
                    }
                    let Some(key) = r.key.and_then(|k| serde_json::from_slice::<Key>(k).ok())
                    else {
                        tracing::warn!(
                            offset = r.offset,
                            "skipping unreadable record in {OFFSETS_TOPIC}"
                        );
                        continue;
                    };
                    groups.apply(key, r.value, now);
                    applied += 1;
                }
                at = b.header().next_offset();
            }
            if at >= end {
                break;
            }
        }
        tracing::info!(
            partition = p.id,
            groups = groups.groups.len(),
            records = applied,
            "loaded consumer groups"
        );
        Ok(end)
    }

    /// A member's heartbeat (join with epoch 0, leave with -1), answered once what it
    /// changed is committed.
    pub async fn group_heartbeat(&self, host: &dyn Host, hb: Heartbeat) -> Result<HeartbeatAnswer> {
        let (answer, committing) = self.heartbeat_now(host, hb)?;
        committing.committed().await?;
        Ok(answer)
    }

    fn heartbeat_now(
        &self,
        host: &dyn Host,
        hb: Heartbeat,
    ) -> Result<(HeartbeatAnswer, Committing)> {
        let Heartbeat {
            group: group_id,
            member_id,
            member_epoch,
            topics,
            owned,
            assignor,
            session_timeout_ms,
            allow_unknown_topics,
        } = hb;
        let (group_id, member_id, assignor) =
            (group_id.as_str(), member_id.as_str(), assignor.as_str());
        validate_group_name(group_id)?;
        let now = host.now_ms();
        let mut guard = self.groups.lock();
        let groups = &mut *guard;
        let at = groups.route(group_id)?;
        if member_epoch == -1 {
            // Leave.
            let mut committing = Committing::default();
            if let Some(g) = groups.groups.get_mut(group_id)
                && g.members.contains_key(member_id)
            {
                committing = self.persist(
                    host,
                    group_id,
                    at,
                    vec![(
                        Key::Member {
                            group: group_id.to_string(),
                            member: member_id.to_string(),
                        },
                        None,
                    )],
                )?;
                g.members.remove(member_id);
                g.epoch += 1;
                tracing::info!(group = group_id, member = member_id, "member left");
            }
            let answer = HeartbeatAnswer {
                member_id: member_id.to_string(),
                member_epoch: -1,
                heartbeat_interval_ms: 0,
                assignment: BTreeMap::new(),
            };
            return Ok((answer, committing));
        }
        let mut topics = topics;
        topics.sort();
        topics.dedup();
        if topics.is_empty() {
            return Err(BrokerError::InvalidRequest(
                "a group member must subscribe to at least one topic".into(),
            ));
        }
        let joining = member_epoch == 0 || member_id.is_empty();
        if joining && !allow_unknown_topics {
            // A topic deleted later is simply left out of the assignment.
            for t in &topics {
                host.partition_count(t)?;
            }
        }
        let assignor = if assignor.is_empty() {
            "range"
        } else {
            assignor
        };
        if !ASSIGNORS.contains(&assignor) {
            return Err(BrokerError::InvalidRequest(format!(
                "unknown assignor {assignor:?}: use one of {}",
                ASSIGNORS.join(", ")
            )));
        }
        let session_timeout_ms = match session_timeout_ms {
            0 => DEFAULT_SESSION_TIMEOUT_MS,
            t if (MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&t) => t,
            t => {
                return Err(BrokerError::InvalidRequest(format!(
                    "session timeout {t} ms is out of range: use {MIN_SESSION_TIMEOUT_MS}..={MAX_SESSION_TIMEOUT_MS}"
                )));
            }
        };
        let mut changes = Vec::new();
        let creating_group = !groups.groups.contains_key(group_id);
        if creating_group {
            let v = GroupValue {
                assignor: assignor.to_string(),
            };
            changes.push((
                Key::Group {
                    group: group_id.to_string(),
                },
                Some(serde_json::to_vec(&v).expect("group serializes")),
            ));
        }
        let id = if member_id.is_empty() {
            groups.next_member += 1;
            format!("{group_id}-{:x}-{}", now, groups.next_member)
        } else {
            member_id.to_string()
        };
        let known = groups
            .groups
            .get(group_id)
            .is_some_and(|g| g.members.contains_key(&id));
        if !joining && !known {
            return Err(BrokerError::UnknownMember {
                group: group_id.to_string(),
                member: id,
            });
        }
        if !joining {
            // KIP-848 fencing: a member speaks with the epoch it was last given. The one
            // before is accepted only from a member that owns nothing it was not given
            // (its last answer was lost); anything older is a zombie, which must rejoin
            // before it may act for the group again.
            let m = &groups.groups[group_id].members[&id];
            let current = m.epoch.max(1);
            let lost_answer = member_epoch == current - 1 && owned.is_subset(&m.assigned);
            if member_epoch != current && !lost_answer {
                return Err(BrokerError::FencedMemberEpoch {
                    group: group_id.to_string(),
                    member: id,
                    sent: member_epoch,
                    current,
                });
            }
        }
        let group = groups
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group {
                assignor: assignor.to_string(),
                ..Group::default()
            });
        // What memory held before this heartbeat: restored if its changes cannot be
        // made durable, so nothing is answered, or acted on later, that is not stored.
        let before = (group.epoch, group.members.get(&id).cloned());
        let mut membership_changed = false;
        let member = group.members.entry(id.clone()).or_insert_with(|| {
            membership_changed = true;
            Member {
                epoch: 0,
                topics: Vec::new(),
                session_timeout_ms,
                last_seen_ms: now,
                assigned: BTreeSet::new(),
                owned: BTreeSet::new(),
            }
        });
        if member.topics != topics || member.session_timeout_ms != session_timeout_ms {
            member.topics = topics;
            member.session_timeout_ms = session_timeout_ms;
            membership_changed = true;
        }
        member.last_seen_ms = now;
        // A member can only own what it was given (still assigned, or being revoked and
        // not yet reported given up); anything else it reports is ignored. A retried
        // heartbeat that still reports a revoked partition keeps it owned, so the
        // partition is not handed on before its owner lets go.
        let held: BTreeSet<Tp> = member.assigned.union(&member.owned).cloned().collect();
        member.owned = owned.intersection(&held).cloned().collect();
        if membership_changed {
            group.epoch += 1;
        }
        let targets = compute_targets(group, &|t| partitions_of(host, t));
        let target = targets.get(&id).cloned().unwrap_or_default();
        let taken: BTreeSet<Tp> = group
            .members
            .iter()
            .filter(|(other, _)| **other != id)
            .flat_map(|(_, m)| m.assigned.iter().chain(m.owned.iter()).cloned())
            .collect();
        let member = group.members.get_mut(&id).expect("inserted");
        let next: BTreeSet<Tp> = target
            .iter()
            .filter(|tp| member.assigned.contains(*tp) || !taken.contains(*tp))
            .cloned()
            .collect();
        if next != member.assigned || membership_changed {
            if next != member.assigned {
                member.epoch += 1;
            }
            member.assigned = next;
            changes.push(Self::member_record(group_id, &id, member));
        }
        let answer = HeartbeatAnswer {
            member_id: id.clone(),
            member_epoch: member.epoch.max(1),
            heartbeat_interval_ms: (member.session_timeout_ms / 5).clamp(100, 3000),
            assignment: group_map(&member.assigned),
        };
        let committing = match self.persist(host, group_id, at, changes) {
            Ok(c) => c,
            Err(e) => {
                // Nothing durable changed: put memory back as it was.
                if creating_group {
                    groups.groups.remove(group_id);
                } else {
                    group.epoch = before.0;
                    match before.1 {
                        Some(m) => group.members.insert(id.clone(), m),
                        None => group.members.remove(&id),
                    };
                }
                return Err(e);
            }
        };
        if membership_changed {
            tracing::info!(group = group_id, member = %id, epoch = group.epoch, "member joined or changed subscription");
        }
        Ok((answer, committing))
    }

    /// Drops members whose session timed out (housekeeping).
    pub fn expire_members(&self, host: &dyn Host) {
        let now = host.now_ms();
        let mut guard = self.groups.lock();
        let groups = &mut *guard;
        for (gid, g) in groups.groups.iter_mut() {
            let p = partition_for(gid, groups.partitions);
            let Some(&epoch) = groups.loaded.get(&p) else {
                continue;
            };
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| now - m.last_seen_ms > m.session_timeout_ms as i64)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                let key = Key::Member {
                    group: gid.clone(),
                    member: id.clone(),
                };
                // Nobody waits for the answer: the in-sync replicas get it in time.
                if let Err(e) = self.persist(host, gid, (p, epoch), vec![(key, None)]) {
                    tracing::warn!(group = %gid, member = %id, error = %e, "could not record member expiry");
                    continue;
                }
                g.members.remove(&id);
                g.epoch += 1;
                tracing::info!(group = %gid, member = %id, "member session expired; its partitions move to others");
            }
        }
    }

    /// Commits offsets for a group. A member commits only partitions it owns, with the
    /// epoch it was last given (`member_epoch` > 0; 0 skips the check, for clients that
    /// do not send it); an older epoch is fenced.
    pub async fn commit_offsets(
        &self,
        host: &dyn Host,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<(String, u32, i64, String)>,
    ) -> Result<()> {
        self.commit_now(host, group_id, member_id, member_epoch, offsets)?
            .committed()
            .await
    }

    fn commit_now(
        &self,
        host: &dyn Host,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<(String, u32, i64, String)>,
    ) -> Result<Committing> {
        validate_group_name(group_id)?;
        let now = host.now_ms();
        let mut groups = self.groups.lock();
        let at = groups.route(group_id)?;
        if let Some(g) = groups.groups.get(group_id) {
            if member_id.is_empty() {
                if !g.members.is_empty() {
                    return Err(BrokerError::GroupNotEmpty {
                        group: group_id.to_string(),
                        members: g.members.len(),
                        action: "commit offsets outside the group",
                    });
                }
            } else {
                let m = g
                    .members
                    .get(member_id)
                    .ok_or_else(|| BrokerError::UnknownMember {
                        group: group_id.to_string(),
                        member: member_id.to_string(),
                    })?;
                let current = m.epoch.max(1);
                // A commit racing the answer that raised the epoch carries the one
                // before; the ownership check below still holds it to what it owns.
                if member_epoch > 0 && member_epoch != current && member_epoch != current - 1 {
                    return Err(BrokerError::FencedMemberEpoch {
                        group: group_id.to_string(),
                        member: member_id.to_string(),
                        sent: member_epoch,
                        current,
                    });
                }
                for (t, p, _, _) in &offsets {
                    let tp = (t.clone(), *p);
                    if !m.assigned.contains(&tp) && !m.owned.contains(&tp) {
                        return Err(BrokerError::NotOwner {
                            group: group_id.to_string(),
                            member: member_id.to_string(),
                            topic: t.clone(),
                            partition: *p,
                        });
                    }
                }
            }
        } else if !member_id.is_empty() {
            return Err(BrokerError::UnknownMember {
                group: group_id.to_string(),
                member: member_id.to_string(),
            });
        }
        for (t, p, o, _) in &offsets {
            // Checked against the log end where this broker leads the partition (a new
            // leader's HW trails the old one's for a moment); elsewhere against the
            // metadata (a follower's log may trail the leader's).
            match host.partition(t, *p).ok().filter(|part| part.is_leader()) {
                Some(part) => {
                    let s = part.state();
                    if *o < 0 || *o > s.log_end_offset {
                        return Err(part.out_of_range(*o, &s));
                    }
                }
                None => {
                    let count = host.partition_count(t)?;
                    if *p >= count {
                        return Err(BrokerError::PartitionOutOfRange {
                            topic: t.clone(),
                            partition: *p,
                            max: count.saturating_sub(1),
                        });
                    }
                    if *o < 0 {
                        return Err(BrokerError::InvalidRequest(format!(
                            "offset {o} for {t}-{p} is negative: commit the offset of the next record to read"
                        )));
                    }
                }
            }
        }
        let mut changes = Vec::new();
        if !groups.groups.contains_key(group_id) {
            let v = GroupValue {
                assignor: "range".into(),
            };
            changes.push((
                Key::Group {
                    group: group_id.to_string(),
                },
                Some(serde_json::to_vec(&v).expect("serializes")),
            ));
        }
        for (t, p, o, meta) in &offsets {
            let v = OffsetValue {
                offset: *o,
                metadata: meta.clone(),
                commit_ms: now,
            };
            changes.push((
                Key::Offset {
                    group: group_id.to_string(),
                    topic: t.clone(),
                    partition: *p,
                },
                Some(serde_json::to_vec(&v).expect("serializes")),
            ));
        }
        let committing = self.persist(host, group_id, at, changes)?;
        let g = groups
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group {
                assignor: "range".into(),
                ..Group::default()
            });
        for (t, p, o, meta) in offsets {
            g.offsets.insert((t, p), (o, meta));
        }
        Ok(committing)
    }

    /// Committed offsets of a group: all of them, or those asked for (-1 where none),
    /// answered once what they show is committed.
    pub async fn committed_offsets(
        &self,
        host: &dyn Host,
        group_id: &str,
        wanted: Vec<Tp>,
    ) -> Result<Vec<(String, u32, i64, String)>> {
        let (offsets, settled) = self.committed_now(host, group_id, wanted)?;
        settled.committed().await?;
        Ok(offsets)
    }

    #[allow(clippy::type_complexity)]
    fn committed_now(
        &self,
        host: &dyn Host,
        group_id: &str,
        wanted: Vec<Tp>,
    ) -> Result<(Vec<(String, u32, i64, String)>, Committing)> {
        let groups = self.groups.lock();
        let at = groups.route(group_id)?;
        let settled = self.settled(host, group_id, at)?;
        let g = groups.groups.get(group_id);
        let get = |tp: &Tp| {
            g.and_then(|g| g.offsets.get(tp))
                .cloned()
                .unwrap_or((-1, String::new()))
        };
        if wanted.is_empty() {
            let all = g
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), (o, m))| (t.clone(), *p, *o, m.clone()))
                        .collect()
                })
                .unwrap_or_default();
            return Ok((all, settled));
        }
        let some = wanted
            .into_iter()
            .map(|tp| {
                let (o, m) = get(&tp);
                (tp.0, tp.1, o, m)
            })
            .collect();
        Ok((some, settled))
    }

    pub fn list_groups(&self, host: &dyn Host) -> Vec<(String, &'static str, usize)> {
        let groups = self.groups.lock();
        groups
            .groups
            .iter()
            .map(|(id, g)| (id.clone(), g.state(&targets(host, g)), g.members.len()))
            .collect()
    }

    /// Whether this broker coordinates `group` now: refused as `route` refuses (another
    /// broker coordinates it, or its partition is loading).
    pub fn check_coordinator(&self, group_id: &str) -> Result<()> {
        self.groups.lock().route(group_id).map(|_| ())
    }

    pub fn describe_group(&self, host: &dyn Host, group_id: &str) -> Result<GroupDescription> {
        let groups = self.groups.lock();
        groups.route(group_id)?;
        let g = groups
            .groups
            .get(group_id)
            .ok_or_else(|| BrokerError::UnknownGroup(group_id.to_string()))?;
        let targets = targets(host, g);
        let mut tps: BTreeSet<Tp> = g.offsets.keys().cloned().collect();
        for m in g.members.values() {
            for t in &m.topics {
                for p in 0..partitions_of(host, t) {
                    tps.insert((t.clone(), p));
                }
            }
        }
        let mut offsets = Vec::new();
        for (t, p) in tps {
            let Ok(part) = host.partition(&t, p) else {
                continue;
            };
            let s = part.state();
            let (committed, metadata) = g
                .offsets
                .get(&(t.clone(), p))
                .cloned()
                .unwrap_or((-1, String::new()));
            let lag = if committed >= 0 {
                (s.high_watermark - committed).max(0)
            } else {
                s.high_watermark - s.log_start_offset
            };
            offsets.push(PartitionLag {
                topic: t,
                partition: p,
                committed_offset: committed,
                high_watermark: s.high_watermark,
                lag,
                metadata,
            });
        }
        Ok(GroupDescription {
            group: group_id.to_string(),
            state: g.state(&targets),
            assignor: g.assignor.clone(),
            group_epoch: g.epoch,
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    member_epoch: m.epoch,
                    topics: m.topics.clone(),
                    assignment: group_map(&m.assigned),
                })
                .collect(),
            offsets,
        })
    }

    /// Sets a group's committed offsets for a topic; refused while it has live members.
    pub async fn reset_group_offsets(
        &self,
        host: &dyn Host,
        group_id: &str,
        topic: &str,
        to: ResetTo,
        partitions: Vec<u32>,
    ) -> Result<Vec<(String, u32, i64, String)>> {
        validate_group_name(group_id)?;
        let n = host.partition_count(topic)?;
        let partitions = if partitions.is_empty() {
            (0..n).collect()
        } else {
            partitions
        };
        let mut offsets = Vec::new();
        for p in partitions {
            let part = host.partition(topic, p)?;
            let s = part.state();
            let o = match to {
                ResetTo::Earliest => s.log_start_offset,
                ResetTo::Latest => s.high_watermark,
                ResetTo::Timestamp(ts) => {
                    let (o, ..) = part.list_offsets(OffsetQuery::Timestamp(ts)).await?;
                    if o < 0 { s.high_watermark } else { o }
                }
                ResetTo::Offset(o) => {
                    if o < s.log_start_offset || o > s.high_watermark {
                        return Err(part.out_of_range(o, &s));
                    }
                    o
                }
            };
            offsets.push((topic.to_string(), p, o, String::new()));
        }
        {
            let groups = self.groups.lock();
            groups.route(group_id)?;
            if let Some(g) = groups.groups.get(group_id)
                && !g.members.is_empty()
            {
                return Err(BrokerError::GroupNotEmpty {
                    group: group_id.to_string(),
                    members: g.members.len(),
                    action: "reset its offsets",
                });
            }
        }
        self.commit_offsets(host, group_id, "", 0, offsets.clone())
            .await?;
        Ok(offsets)
    }

    pub async fn delete_group(&self, host: &dyn Host, group_id: &str) -> Result<()> {
        self.delete_now(host, group_id)?.committed().await
    }

    fn delete_now(&self, host: &dyn Host, group_id: &str) -> Result<Committing> {
        let mut groups = self.groups.lock();
        let at = groups.route(group_id)?;
        let g = groups
            .groups
            .get(group_id)
            .ok_or_else(|| BrokerError::UnknownGroup(group_id.to_string()))?;
        if !g.members.is_empty() {
            return Err(BrokerError::GroupNotEmpty {
                group: group_id.to_string(),
                members: g.members.len(),
                action: "delete it",
            });
        }
        let mut changes: Vec<(Key, Option<Vec<u8>>)> = g
            .offsets
            .keys()
            .map(|(t, p)| {
                (
                    Key::Offset {
                        group: group_id.to_string(),
                        topic: t.clone(),
                        partition: *p,
                    },
                    None,
                )
            })
            .collect();
        changes.push((
            Key::Group {
                group: group_id.to_string(),
            },
            None,
        ));
        let committing = self.persist(host, group_id, at, changes)?;
        groups.groups.remove(group_id);
        tracing::info!(group = group_id, "deleted group");
        Ok(committing)
    }

    /// Forgets every group's offsets for a deleted topic.
    pub fn forget_topic_offsets(&self, host: &dyn Host, topic: &str) {
        let mut guard = self.groups.lock();
        let groups = &mut *guard;
        for (gid, g) in groups.groups.iter_mut() {
            let changes: Vec<(Key, Option<Vec<u8>>)> = g
                .offsets
                .keys()
                .filter(|(t, _)| t == topic)
                .map(|(t, p)| {
                    let key = Key::Offset {
                        group: gid.clone(),
                        topic: t.clone(),
                        partition: *p,
                    };
                    (key, None)
                })
                .collect();
            if changes.is_empty() {
                continue;
            }
            let p = partition_for(gid, groups.partitions);
            let Some(&epoch) = groups.loaded.get(&p) else {
                continue;
            };
            if let Err(e) = self.persist(host, gid, (p, epoch), changes) {
                tracing::warn!(topic, group = %gid, error = %e, "could not forget committed offsets of a deleted topic");
                continue;
            }
            g.offsets.retain(|(t, _), _| t != topic);
        }
    }
}

/// Whether the bucket's copy of the committed offsets is behind.
#[derive(Debug, Default)]
pub struct SnapshotState {
    /// Bumped by every change written to the offsets topic.
    changes: std::sync::atomic::AtomicU64,
    /// `changes` as of the last copy written to the bucket.
    taken: std::sync::atomic::AtomicU64,
}

/// The bucket's copy of the committed offsets (`<prefix>/groups/offsets.json`).
#[derive(Debug, Serialize, Deserialize)]
struct OffsetsSnapshot {
    version: u32,
    taken_ms: i64,
    groups: Vec<GroupSnapshot>,
}

#[derive(Debug, Serialize, Deserialize)]
struct GroupSnapshot {
    group: String,
    assignor: String,
    offsets: Vec<(String, u32, i64, String)>,
}

/// Bytes of records per batch when the offsets topic is filled from the bucket: a
/// quarter of its default `max.message.bytes`.
const RESTORE_BATCH_BYTES: usize = 256 << 10;

/// `<prefix>/groups/offsets.json`
fn snapshot_key(bucket: &strata_tier::store::Bucket) -> object_store::path::Path {
    bucket.prefix.clone().join("groups").join("offsets.json")
}

/// The committed offsets in the bucket. The offsets topic stays on local disk (it is
/// compacted, and compacted topics are not offloaded); so that a broker rebuilt from the
/// bucket alone keeps its groups' positions, the coordinator copies the committed
/// offsets there every `offsets_snapshot_interval_ms` when they changed, and at
/// shutdown. A rebuilt broker gets the offsets of the last copy, as it gets the records
/// offloaded so far: commits made after it are lost with the disk.
impl Coordinator {
    /// Writes the committed offsets to the bucket if they changed since the last copy;
    /// returns whether it wrote.
    pub async fn snapshot_group_offsets(&self, host: &dyn Host) -> Result<bool> {
        use object_store::ObjectStoreExt;
        use std::sync::atomic::Ordering;
        let changes = self.snapshots.changes.load(Ordering::Relaxed);
        if changes == self.snapshots.taken.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let snapshot = {
            let groups = self.groups.lock();
            OffsetsSnapshot {
                version: 1,
                taken_ms: host.now_ms(),
                groups: groups
                    .groups
                    .iter()
                    .filter(|(_, g)| !g.offsets.is_empty() || !g.assignor.is_empty())
                    .map(|(id, g)| GroupSnapshot {
                        group: id.clone(),
                        assignor: g.assignor.clone(),
                        offsets: g
                            .offsets
                            .iter()
                            .map(|((t, p), (o, m))| (t.clone(), *p, *o, m.clone()))
                            .collect(),
                    })
                    .collect(),
            }
        };
        let body = serde_json::to_vec(&snapshot).expect("snapshot serializes");
        let key = snapshot_key(host.bucket());
        host.bucket()
            .store
            .put(&key, body.into())
            .await
            .map_err(|e| {
                BrokerError::io(
                    format!("writing {key} to the object store"),
                    std::io::Error::other(e),
                )
            })?;
        self.snapshots.taken.store(changes, Ordering::Relaxed);
        host.metrics().group_offset_snapshots.add(1);
        Ok(true)
    }

    /// Fills a new offsets topic from the bucket's copy, if there is one (start-up, before
    /// the groups are loaded).
    pub async fn restore_group_offsets(&self, host: &dyn Host) -> Result<()> {
        use object_store::ObjectStoreExt;
        let key = snapshot_key(host.bucket());
        let unreadable = |e: &dyn std::fmt::Display| {
            BrokerError::InvalidConfig(format!(
                "reading the committed group offsets {key} in the object store: {e}"
            ))
        };
        let bytes = match host.bucket().store.get(&key).await {
            Ok(r) => r.bytes().await.map_err(|e| unreadable(&e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(unreadable(&e)),
        };
        let snapshot: OffsetsSnapshot =
            serde_json::from_slice(&bytes).map_err(|e| unreadable(&e))?;
        let now = host.now_ms();
        let mut entries = Vec::new();
        for g in &snapshot.groups {
            if !g.assignor.is_empty() {
                let v = GroupValue {
                    assignor: g.assignor.clone(),
                };
                entries.push((
                    Key::Group {
                        group: g.group.clone(),
                    },
                    Some(serde_json::to_vec(&v).expect("group serializes")),
                ));
            }
            for (topic, partition, offset, metadata) in &g.offsets {
                let v = OffsetValue {
                    offset: *offset,
                    metadata: metadata.clone(),
                    commit_ms: now,
                };
                entries.push((
                    Key::Offset {
                        group: g.group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    },
                    Some(serde_json::to_vec(&v).expect("offset serializes")),
                ));
            }
        }
        let restored = entries.len();
        // A single broker's offsets topic has one partition (a cluster does not copy
        // offsets to the bucket).
        let p = host.partition(OFFSETS_TOPIC, 0)?;
        // In batches well under the offsets topic's max.message.bytes (names and commit
        // metadata have no small bound). Restoring twice (a restore cut short, then run
        // again) appends the same keys and values again: the state is the same.
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for (key, value) in entries {
            let size = serde_json::to_vec(&key).map_or(0, |k| k.len())
                + value.as_ref().map_or(0, Vec::len)
                + 32;
            if !chunk.is_empty() && bytes + size > RESTORE_BATCH_BYTES {
                self.append(host, &p, None, std::mem::take(&mut chunk))?;
                bytes = 0;
            }
            bytes += size;
            chunk.push((key, value));
        }
        self.append(host, &p, None, chunk)?;
        tracing::info!(
            groups = snapshot.groups.len(),
            records = restored,
            taken_ms = snapshot.taken_ms,
            "restored committed group offsets from the object store"
        );
        Ok(())
    }
}

/// Where `reset_group_offsets` moves a group.
#[derive(Debug, Clone, Copy)]
pub enum ResetTo {
    Earliest,
    Latest,
    Timestamp(i64),
    Offset(i64),
}

impl Groups {
    /// Forgets the groups of offsets partition `n`.
    fn unload(&mut self, n: u32) {
        let count = self.partitions;
        self.groups.retain(|g, _| partition_for(g, count) != n);
        self.loaded.remove(&n);
    }

    fn apply(&mut self, key: Key, value: Option<&[u8]>, now: i64) {
        match key {
            Key::Group { group } => {
                match value.and_then(|v| serde_json::from_slice::<GroupValue>(v).ok()) {
                    Some(v) => {
                        self.groups.entry(group).or_default().assignor = v.assignor;
                    }
                    None => {
                        self.groups.remove(&group);
                    }
                }
            }
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                let g = self.groups.entry(group).or_default();
                match value.and_then(|v| serde_json::from_slice::<OffsetValue>(v).ok()) {
                    Some(v) => {
                        g.offsets.insert((topic, partition), (v.offset, v.metadata));
                    }
                    None => {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            }
            Key::Member { group, member } => {
                let g = self.groups.entry(group).or_default();
                match value.and_then(|v| serde_json::from_slice::<MemberValue>(v).ok()) {
                    Some(v) => {
                        let assigned: BTreeSet<Tp> = v.assigned.into_iter().collect();
                        g.members.insert(
                            member,
                            Member {
                                epoch: v.epoch,
                                topics: v.topics,
                                session_timeout_ms: v.session_timeout_ms,
                                // A restarted broker gives every member a full session to
                                // come back, and assumes it still owns what it was given.
                                last_seen_ms: now,
                                owned: assigned.clone(),
                                assigned,
                            },
                        );
                    }
                    None => {
                        g.members.remove(&member);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(assignor: &str, members: &[(&str, &[&str])]) -> Group {
        let mut g = Group {
            assignor: assignor.into(),
            ..Group::default()
        };
        for (id, topics) in members {
            g.members.insert(
                id.to_string(),
                Member {
                    epoch: 1,
                    topics: topics.iter().map(|t| t.to_string()).collect(),
                    session_timeout_ms: 1000,
                    last_seen_ms: 0,
                    assigned: BTreeSet::new(),
                    owned: BTreeSet::new(),
                },
            );
        }
        g
    }

    fn parts(t: &BTreeMap<String, BTreeSet<Tp>>, id: &str) -> Vec<(String, u32)> {
        t[id].iter().cloned().collect()
    }

    #[test]
    fn groups_map_to_offsets_partitions_as_kafka_maps_them() {
        // abs(String.hashCode()) % n, Java's hash over UTF-16 code units (values
        // computed independently).
        assert_eq!(partition_for("gf", 50), 45);
        assert_eq!(partition_for("my-group", 50), 36, "a negative hash");
        assert_eq!(partition_for("consumer-group-1", 50), 20);
        assert_eq!(partition_for("groupé😀", 50), 25, "a surrogate pair");
        assert_eq!(partition_for("my-group", 16), 14);
        assert_eq!(
            partition_for("my-group", 1),
            0,
            "a single broker's one partition"
        );
    }

    #[test]
    fn range_gives_contiguous_blocks_and_roundrobin_deals_in_turn() {
        let g = group("range", &[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let t = compute_targets(&g, &|_| 7);
        assert_eq!(
            parts(&t, "a"),
            vec![("t".into(), 0), ("t".into(), 1), ("t".into(), 2)]
        );
        assert_eq!(parts(&t, "b"), vec![("t".into(), 3), ("t".into(), 4)]);
        assert_eq!(parts(&t, "c"), vec![("t".into(), 5), ("t".into(), 6)]);
        let g = group("roundrobin", &[("a", &["t", "u"]), ("b", &["t"])]);
        let t = compute_targets(&g, &|_| 2);
        assert_eq!(
            parts(&t, "a"),
            vec![("t".into(), 0), ("u".into(), 0), ("u".into(), 1)]
        );
        assert_eq!(parts(&t, "b"), vec![("t".into(), 1)]);
    }

    #[test]
    fn every_partition_has_exactly_one_target_owner() {
        for assignor in ASSIGNORS {
            for members in 1..6 {
                let ids: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
                let list: Vec<(&str, &[&str])> =
                    ids.iter().map(|i| (i.as_str(), &["x", "y"][..])).collect();
                let g = group(assignor, &list);
                let t = compute_targets(&g, &|topic| if topic == "x" { 6 } else { 5 });
                let all: Vec<&Tp> = t.values().flatten().collect();
                let unique: BTreeSet<&Tp> = all.iter().cloned().collect();
                assert_eq!(all.len(), 11, "{assignor} with {members}");
                assert_eq!(unique.len(), 11);
                let sizes: Vec<usize> = t.values().map(|s| s.len()).collect();
                assert!(
                    sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 2,
                    "{sizes:?}"
                );
            }
        }
    }
}
