//! Kafka's classic group protocol: JoinGroup, SyncGroup, Heartbeat and LeaveGroup, with
//! the assignment computed by the clients (the group leader) and only carried here.
//!
//! A rebalance gathers every member in a JoinGroup: the first join after a change moves
//! the group to `PreparingRebalance`, and the joins are answered together once every
//! known member has joined again, or the longest rebalance timeout passed (members that
//! did not rejoin are dropped). The answer starts a new generation, names the leader
//! (it alone gets the members' metadata) and the protocol every member supports. The
//! leader's SyncGroup carries the assignment; every member's SyncGroup is answered with
//! its share, and the group is `Stable`. Heartbeats keep a member's session alive and
//! tell it when to rejoin (REBALANCE_IN_PROGRESS).
//!
//! Membership lives in memory: after a coordinator restart a member's heartbeat gets
//! UNKNOWN_MEMBER_ID and it joins again, as after any session expiry. Committed
//! offsets are the coordinator's, shared with every other member of the group id
//! whatever protocol it speaks; a group has classic members or KIP-848 members, never
//! both at once (INCONSISTENT_GROUP_PROTOCOL).
//!
//! Invariants: a join or sync waiter is answered exactly once (a dropped waiter is a
//! member that went away, which the next rebalance notices); generations only grow;
//! a member's assignment is only ever the one its generation's leader sent.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Why a classic group request is refused; each is a Kafka error code's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassicError {
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    /// A new member's id, to join again with (KIP-394).
    MemberIdRequired(String),
    InconsistentGroupProtocol(String),
    InvalidSessionTimeout,
    InvalidGroupId,
    /// The group already has KIP-848 (gRPC or `group.protocol=consumer`) members.
    GroupUsesOtherProtocol,
}

impl std::fmt::Display for ClassicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownMemberId => write!(f, "unknown member id: join the group again"),
            Self::IllegalGeneration => write!(f, "stale generation: join the group again"),
            Self::RebalanceInProgress => write!(f, "the group is rebalancing: join again"),
            Self::MemberIdRequired(id) => write!(f, "join again with member id {id}"),
            Self::InconsistentGroupProtocol(why) => write!(f, "{why}"),
            Self::InvalidSessionTimeout => {
                write!(f, "session timeout must be between 1 s and 1 hour")
            }
            Self::InvalidGroupId => {
                write!(f, "invalid group id: use 1 to 249 printable characters")
            }
            Self::GroupUsesOtherProtocol => write!(
                f,
                "the group has members of the consumer protocol (KIP-848); use group.protocol=consumer or another group id"
            ),
        }
    }
}

pub type Result<T> = std::result::Result<T, ClassicError>;

const MIN_SESSION_TIMEOUT_MS: i32 = 1_000;
/// How long an id handed out with MEMBER_ID_REQUIRED waits for its member's join.
const PENDING_MEMBER_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_SESSION_TIMEOUT_MS: i32 = 3_600_000;

/// A JoinGroup request.
#[derive(Debug, Clone)]
pub struct Join {
    pub group: String,
    pub member_id: String,
    pub client_id: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// By preference: (name, metadata).
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new member first gets its id (MEMBER_ID_REQUIRED), then joins with it.
    pub require_known_member_id: bool,
}

/// A JoinGroup answer.
#[derive(Debug, Clone)]
pub struct Joined {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member's id and metadata for the chosen protocol.
    pub members: Vec<(String, Bytes)>,
}

/// A SyncGroup answer.
#[derive(Debug, Clone)]
pub struct Synced {
    pub protocol_type: String,
    pub protocol: String,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

struct Member {
    client_id: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heard: Instant,
    joining: Option<oneshot::Sender<Result<Joined>>>,
    syncing: Option<oneshot::Sender<Result<Synced>>>,
}

impl Member {
    /// What the member sent with `protocol` when it joined (empty if it did not name it).
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(p, _)| p == protocol)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    }
}

struct Group {
    state: State,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: String,
    members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, not yet joined with, and when.
    pending: BTreeMap<String, Instant>,
    /// When the rebalance under way gives up on members that have not joined again.
    rebalance_deadline: Option<Instant>,
}

impl Group {
    fn new() -> Self {
        Self {
            state: State::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline: None,
        }
    }

    /// Starts (or keeps) a rebalance: members are told to join again.
    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            let longest = self
                .members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or(Duration::from_secs(1));
            self.rebalance_deadline = Some(now + longest);
            self.state = State::PreparingRebalance;
            // Syncs of the old generation will not be answered with an assignment.
            for m in self.members.values_mut() {
                if let Some(tx) = m.syncing.take() {
                    let _ = tx.send(Err(ClassicError::RebalanceInProgress));
                }
            }
        }
    }

    /// The protocol every member supports, by the members' preference.
    fn choose_protocol(&self) -> Option<String> {
        let supported_by_all = |name: &str| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(p, _)| p == name))
        };
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((p, _)) = m.protocols.iter().find(|(p, _)| supported_by_all(p)) {
                *votes.entry(p).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|&(_, n)| n)
            .map(|(p, _)| p.to_string())
    }

    /// Ends the join phase if every member joined again, or (`force`) drops those that
    /// did not: a new generation, answered to every waiting joiner.
    fn maybe_complete_join(&mut self, force: bool) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.joining.is_some());
        if !all_joined && !force {
            return;
        }
        self.members.retain(|_, m| m.joining.is_some());
        self.pending.clear();
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader.clear();
            self.protocol.clear();
            return;
        }
        self.protocol = self.choose_protocol().unwrap_or_default();
        if !self.members.contains_key(&self.leader) {
            self.leader = self.members.keys().next().expect("members").clone();
        }
        self.state = State::CompletingRebalance;
        let metadata: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.metadata(&self.protocol)))
            .collect();
        let now = Instant::now();
        for (id, m) in self.members.iter_mut() {
            m.last_heard = now;
            m.assignment = Bytes::new();
            let answer = Joined {
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol: self.protocol.clone(),
                leader: self.leader.clone(),
                member_id: id.clone(),
                members: if *id == self.leader {
                    metadata.clone()
                } else {
                    Vec::new()
                },
            };
            if let Some(tx) = m.joining.take() {
                let _ = tx.send(Ok(answer));
            }
        }
        tracing::info!(
            generation = self.generation,
            members = self.members.len(),
            leader = %self.leader,
            protocol = %self.protocol,
            "classic group rebalanced"
        );
    }

    fn remove_member(&mut self, id: &str, now: Instant) {
        if self.members.remove(id).is_none() {
            return;
        }
        if self.members.is_empty() && self.state != State::PreparingRebalance {
            self.state = State::Empty;
            self.generation += 1;
            self.leader.clear();
            return;
        }
        self.prepare_rebalance(now);
        self.maybe_complete_join(false);
    }
}

/// What `describe` shows of a classic group.
#[derive(Debug, Clone)]
pub struct ClassicDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub generation: i32,
    /// (member id, client id, metadata, assignment).
    pub members: Vec<(String, String, Bytes, Bytes)>,
}

/// Every classic group this coordinator has in memory.
#[derive(Default)]
pub struct ClassicGroups {
    groups: parking_lot::Mutex<HashMap<String, Group>>,
}

fn new_member_id(client_id: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let client: String = client_id
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    format!("{client}-{nanos:x}-{n}")
}

impl ClassicGroups {
    /// Whether `group` has classic members.
    pub fn has_members(&self, group: &str) -> bool {
        self.groups
            .lock()
            .get(group)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// JoinGroup: resolves when the rebalance it takes part in completes.
    /// `other_protocol_members` says whether the group has KIP-848 members.
    pub async fn join(&self, j: Join, other_protocol_members: bool) -> Result<Joined> {
        let group = j.group.clone();
        let (mut rx, deadline) = self.join_now(j, other_protocol_members)?;
        tokio::select! {
            biased;
            r = &mut rx => return r.unwrap_or(Err(ClassicError::RebalanceInProgress)),
            _ = tokio::time::sleep_until(deadline) => {}
        }
        // The rebalance timeout passed: it completes without the members that did not
        // join again, which answers this joiner (or drops it, if it was replaced). Only
        // a rebalance whose own deadline passed is forced, never a newer one.
        if let Some(g) = self.groups.lock().get_mut(&group)
            && g.rebalance_deadline.is_some_and(|d| d <= Instant::now())
        {
            g.maybe_complete_join(true);
        }
        rx.await.unwrap_or(Err(ClassicError::RebalanceInProgress))
    }

    #[allow(clippy::type_complexity)]
    fn join_now(
        &self,
        j: Join,
        other_protocol_members: bool,
    ) -> Result<(oneshot::Receiver<Result<Joined>>, Instant)> {
        if j.group.is_empty() || j.group.len() > 249 || j.group.chars().any(char::is_control) {
            return Err(ClassicError::InvalidGroupId);
        }
        if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&j.session_timeout_ms) {
            return Err(ClassicError::InvalidSessionTimeout);
        }
        if j.protocols.is_empty() || j.protocol_type.is_empty() {
            return Err(ClassicError::InconsistentGroupProtocol(
                "a member must name its protocol type and at least one protocol".into(),
            ));
        }
        if other_protocol_members {
            return Err(ClassicError::GroupUsesOtherProtocol);
        }
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let g = groups.entry(j.group.clone()).or_insert_with(Group::new);
        if !g.members.is_empty() {
            if g.protocol_type != j.protocol_type {
                return Err(ClassicError::InconsistentGroupProtocol(format!(
                    "the group's members use protocol type {:?}, not {:?}",
                    g.protocol_type, j.protocol_type
                )));
            }
            let shared = j.protocols.iter().any(|(p, _)| {
                g.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(q, _)| q == p))
            });
            if !shared {
                return Err(ClassicError::InconsistentGroupProtocol(
                    "none of this member's assignment protocols is supported by every member"
                        .into(),
                ));
            }
        }
        let member_id = if j.member_id.is_empty() {
            let id = new_member_id(&j.client_id);
            if j.require_known_member_id {
                if g.pending.len() >= 10_000 {
                    g.pending.pop_first();
                }
                g.pending.insert(id.clone(), now);
                return Err(ClassicError::MemberIdRequired(id));
            }
            id
        } else if g.members.contains_key(&j.member_id) || g.pending.remove(&j.member_id).is_some() {
            j.member_id.clone()
        } else {
            return Err(ClassicError::UnknownMemberId);
        };
        let clamp = |ms: i32| Duration::from_millis(ms.clamp(0, MAX_SESSION_TIMEOUT_MS) as u64);
        let (tx, rx) = oneshot::channel();
        let changed = match g.members.get_mut(&member_id) {
            Some(m) => {
                let changed = m.protocols != j.protocols;
                m.protocols = j.protocols;
                m.session_timeout = clamp(j.session_timeout_ms);
                m.rebalance_timeout = clamp(j.rebalance_timeout_ms.max(j.session_timeout_ms));
                m.last_heard = now;
                if let Some(old) = m.joining.replace(tx) {
                    let _ = old.send(Err(ClassicError::RebalanceInProgress));
                }
                changed || g.state != State::PreparingRebalance
            }
            None => {
                g.members.insert(
                    member_id.clone(),
                    Member {
                        client_id: j.client_id,
                        session_timeout: clamp(j.session_timeout_ms),
                        rebalance_timeout: clamp(j.rebalance_timeout_ms.max(j.session_timeout_ms)),
                        protocols: j.protocols,
                        assignment: Bytes::new(),
                        last_heard: now,
                        joining: Some(tx),
                        syncing: None,
                    },
                );
                true
            }
        };
        g.protocol_type = j.protocol_type;
        if changed {
            g.prepare_rebalance(now);
        }
        let deadline = g.rebalance_deadline.unwrap_or(now);
        g.maybe_complete_join(false);
        Ok((rx, deadline))
    }

    /// SyncGroup: the leader's carries the assignment; every member gets its share once
    /// the leader's has arrived.
    pub async fn sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Synced> {
        let (rx, timeout) = {
            let mut groups = self.groups.lock();
            let g = groups.get_mut(group).ok_or(ClassicError::UnknownMemberId)?;
            let m = g
                .members
                .get_mut(member_id)
                .ok_or(ClassicError::UnknownMemberId)?;
            if generation != g.generation {
                return Err(ClassicError::IllegalGeneration);
            }
            m.last_heard = Instant::now();
            let timeout = m.session_timeout;
            match g.state {
                State::Empty | State::PreparingRebalance => {
                    return Err(ClassicError::RebalanceInProgress);
                }
                State::Stable => {
                    return Ok(Synced {
                        protocol_type: g.protocol_type.clone(),
                        protocol: g.protocol.clone(),
                        assignment: m.assignment.clone(),
                    });
                }
                State::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            m.syncing = Some(tx);
            if member_id == g.leader {
                let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
                for (id, m) in g.members.iter_mut() {
                    m.assignment = by_member.remove(id).unwrap_or_default();
                    if let Some(tx) = m.syncing.take() {
                        let _ = tx.send(Ok(Synced {
                            protocol_type: g.protocol_type.clone(),
                            protocol: g.protocol.clone(),
                            assignment: m.assignment.clone(),
                        }));
                    }
                }
                g.state = State::Stable;
            }
            (rx, timeout)
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClassicError::RebalanceInProgress),
            Err(_) => {
                // The leader never sent the assignment: start over.
                let mut groups = self.groups.lock();
                if let Some(g) = groups.get_mut(group)
                    && g.generation == generation
                    && g.state == State::CompletingRebalance
                {
                    g.prepare_rebalance(Instant::now());
                }
                Err(ClassicError::RebalanceInProgress)
            }
        }
    }

    /// Heartbeat: keeps the session; says when to join again.
    pub fn heartbeat(&self, group: &str, generation: i32, member_id: &str) -> Result<()> {
        let mut groups = self.groups.lock();
        let g = groups.get_mut(group).ok_or(ClassicError::UnknownMemberId)?;
        let m = g
            .members
            .get_mut(member_id)
            .ok_or(ClassicError::UnknownMemberId)?;
        m.last_heard = Instant::now();
        if g.state == State::PreparingRebalance {
            return Err(ClassicError::RebalanceInProgress);
        }
        if generation != g.generation {
            return Err(ClassicError::IllegalGeneration);
        }
        Ok(())
    }

    /// LeaveGroup for one member.
    pub fn leave(&self, group: &str, member_id: &str) -> Result<()> {
        let mut groups = self.groups.lock();
        let g = groups.get_mut(group).ok_or(ClassicError::UnknownMemberId)?;
        if !g.members.contains_key(member_id) {
            return Err(ClassicError::UnknownMemberId);
        }
        g.remove_member(member_id, Instant::now());
        tracing::info!(group, member = member_id, "classic member left");
        Ok(())
    }

    /// Checks an offset commit by a classic member (generation and member id); a commit
    /// with neither (generation -1, no member) is allowed while the group has no members.
    pub fn check_commit(&self, group: &str, generation: i32, member_id: &str) -> Result<()> {
        let groups = self.groups.lock();
        let Some(g) = groups.get(group).filter(|g| !g.members.is_empty()) else {
            return if member_id.is_empty() || generation < 0 {
                Ok(())
            } else {
                Err(ClassicError::UnknownMemberId)
            };
        };
        if member_id.is_empty() && generation < 0 {
            return Err(ClassicError::UnknownMemberId);
        }
        if !g.members.contains_key(member_id) {
            return Err(ClassicError::UnknownMemberId);
        }
        if generation != g.generation {
            return Err(ClassicError::IllegalGeneration);
        }
        // As Kafka: a member of the current generation may commit until the new
        // generation is formed (its last commit before rejoining counts).
        if g.state == State::CompletingRebalance {
            return Err(ClassicError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Drops members whose session ran out (members waiting in a join are covered by
    /// the rebalance timeout instead), and completes joins whose deadline passed.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        for (name, g) in groups.iter_mut() {
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| m.joining.is_none() && m.last_heard + m.session_timeout < now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %name, member = %id, "classic member's session expired");
                g.remove_member(&id, now);
            }
            if g.rebalance_deadline.is_some_and(|d| d <= now) {
                g.maybe_complete_join(true);
            }
            // An id handed out and never joined with is forgotten after a minute.
            g.pending.retain(|_, at| *at + PENDING_MEMBER_TIMEOUT > now);
        }
        groups.retain(|_, g| !g.members.is_empty() || !g.pending.is_empty());
    }

    /// Names and states of classic groups with members.
    pub fn list(&self) -> Vec<(String, &'static str, usize)> {
        let groups = self.groups.lock();
        groups
            .iter()
            .filter(|(_, g)| !g.members.is_empty())
            .map(|(n, g)| (n.clone(), g.state.name(), g.members.len()))
            .collect()
    }

    pub fn describe(&self, group: &str) -> Option<ClassicDescription> {
        let groups = self.groups.lock();
        let g = groups.get(group).filter(|g| !g.members.is_empty())?;
        Some(ClassicDescription {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            generation: g.generation,
            members: g
                .members
                .iter()
                .map(|(id, m)| {
                    let meta = m.metadata(&g.protocol);
                    (id.clone(), m.client_id.clone(), meta, m.assignment.clone())
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(group: &str, member: &str) -> Join {
        Join {
            group: group.into(),
            member_id: member.into(),
            client_id: "c".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            require_known_member_id: true,
        }
    }

    #[tokio::test]
    async fn two_members_join_sync_and_a_leave_starts_a_new_generation() {
        let g = Arc::new(ClassicGroups::default());
        let id = match g.join(join("g", ""), false).await {
            Err(ClassicError::MemberIdRequired(id)) => id,
            other => panic!("{other:?}"),
        };
        let first = g.join(join("g", &id), false).await.unwrap();
        assert_eq!((first.generation, first.leader.as_str()), (1, id.as_str()));
        assert_eq!(first.members.len(), 1);
        let s = g
            .sync("g", 1, &id, vec![(id.clone(), Bytes::from_static(b"all"))])
            .await;
        assert_eq!(s.unwrap().assignment, Bytes::from_static(b"all"));
        g.heartbeat("g", 1, &id).unwrap();

        // A second member: the first learns of the rebalance by heartbeat and rejoins.
        let id2 = match g.join(join("g", ""), false).await {
            Err(ClassicError::MemberIdRequired(id)) => id,
            other => panic!("{other:?}"),
        };
        let g2 = g.clone();
        let id2c = id2.clone();
        let second = tokio::spawn(async move { g2.join(join("g", &id2c), false).await });
        // Wait (no sleep) until the second join is registered: heartbeats say rebalance.
        loop {
            match g.heartbeat("g", 1, &id) {
                Err(ClassicError::RebalanceInProgress) => break,
                Ok(()) => tokio::task::yield_now().await,
                other => panic!("{other:?}"),
            }
        }
        let again = g.join(join("g", &id), false).await.unwrap();
        let second = second.await.unwrap().unwrap();
        assert_eq!(again.generation, 2);
        assert_eq!(second.generation, 2);
        assert_eq!(again.leader, id, "the leader stays");
        assert_eq!(again.members.len(), 2);
        assert!(
            second.members.is_empty(),
            "only the leader gets the metadata"
        );
        let g2 = g.clone();
        let id2c = id2.clone();
        let follower = tokio::spawn(async move { g2.sync("g", 2, &id2c, vec![]).await });
        let lead = g
            .sync(
                "g",
                2,
                &id,
                vec![
                    (id.clone(), Bytes::from_static(b"p0")),
                    (id2.clone(), Bytes::from_static(b"p1")),
                ],
            )
            .await
            .unwrap();
        assert_eq!(lead.assignment, Bytes::from_static(b"p0"));
        assert_eq!(
            follower.await.unwrap().unwrap().assignment,
            Bytes::from_static(b"p1")
        );
        assert_eq!(g.check_commit("g", 2, &id2), Ok(()));
        assert_eq!(
            g.check_commit("g", 1, &id2),
            Err(ClassicError::IllegalGeneration)
        );

        g.leave("g", &id).unwrap();
        assert_eq!(
            g.heartbeat("g", 2, &id2),
            Err(ClassicError::RebalanceInProgress)
        );
        let alone = g.join(join("g", &id2), false).await.unwrap();
        assert_eq!((alone.generation, alone.leader.as_str()), (3, id2.as_str()));
        assert_eq!(g.heartbeat("g", 3, &id), Err(ClassicError::UnknownMemberId));
    }

    #[tokio::test]
    async fn a_group_with_consumer_protocol_members_refuses_classic_joins() {
        let g = ClassicGroups::default();
        let mut j = join("g", "");
        j.require_known_member_id = false;
        assert_eq!(
            g.join(j.clone(), true).await.unwrap_err(),
            ClassicError::GroupUsesOtherProtocol
        );
        j.session_timeout_ms = 10;
        assert_eq!(
            g.join(j, false).await.unwrap_err(),
            ClassicError::InvalidSessionTimeout
        );
    }

    use std::sync::Arc;
}
