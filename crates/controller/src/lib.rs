//! The cluster controller: Strata's metadata (brokers now; topics, assignments, leaders,
//! epochs and in-sync sets as replication lands) in a Raft group built on `openraft`,
//! in KRaft's combined mode: the voters (`--voters`) are brokers too, and every other
//! broker follows the log as a non-voting learner, so each broker applies the same
//! metadata locally.
//!
//! - [`state`]: the [`ClusterState`] and the [`Command`]s that change it; apply is
//!   deterministic (times travel in the commands, never `now()` in apply).
//! - [`store`]: the log and vote, fsynced before acknowledged, and the state machine
//!   with its snapshots, under `<data-dir>/raft/`.
//! - [`network`]: Raft and broker-to-leader messages over a [`Transport`] the node
//!   gives (gRPC in `strata-server`); no transport code here.
//!
//! Liveness is the leader's business, as in KRaft: brokers heartbeat to every voter
//! (which keep the times in memory), and the leader proposes [`Command::FenceBroker`]
//! when one has been silent for its session timeout, and [`Command::UnfenceBroker`]
//! when a fenced one is heard again. Because every voter keeps the times, a new leader
//! fences a dead old leader as soon as its session has passed, not a session after the
//! election; only a broker it has never heard from gets a session's grace.

pub mod network;
pub mod placement;
pub mod state;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use serde::{Deserialize, Serialize};

pub use network::{Network, Rpc, Transport};
pub use state::{
    BrokerRecord, ClusterState, Command, CommandResult, NodeId, PartitionRecord, TopicRecord,
};
pub use store::{LogStore, Shared, StateMachine};

/// A controller node's address, as Raft knows it.
pub type Node = BasicNode;

/// How long a proposal may wait for its quorum.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

openraft::declare_raft_types!(
    /// Strata's Raft types: commands in, command results out.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
);

/// Why a controller request failed.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum ControllerError {
    #[error("no controller leader is known yet (an election may be under way); retry shortly")]
    NoLeader,
    #[error("the controller refused the change: {0}")]
    Refused(String),
    #[error("controller: {0}")]
    Failed(String),
}

/// How a node runs its controller part.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node_id: NodeId,
    /// This node's advertised address (where other nodes reach it).
    pub addr: String,
    /// Its advertised Kafka listener, if it runs one (clients learn it from Metadata).
    pub kafka_addr: Option<String>,
    pub rack: Option<String>,
    /// The voters: node id -> address. A node not among them joins as a learner.
    pub voters: BTreeMap<NodeId, String>,
    /// A node to ask to join through, for a node that is not a voter.
    pub join: Option<String>,
    /// `<data-dir>/raft`.
    pub dir: PathBuf,
    /// Identifies this node's data directory (see [`BrokerRecord::incarnation`]).
    pub incarnation: String,
    pub heartbeat_interval_ms: u64,
    /// A broker silent this long is fenced.
    pub session_timeout_ms: u64,
    /// Raft election timeout range (ms); Raft's own heartbeats go at a fifth of the low end.
    pub election_timeout_ms: (u64, u64),
}

impl ControllerConfig {
    pub fn is_voter(&self) -> bool {
        self.voters.contains_key(&self.node_id)
    }
}

/// A node's controller part: its Raft member, the applied cluster state, and (on the
/// leader) broker liveness.
pub struct Controller {
    config: ControllerConfig,
    raft: Raft<TypeConfig>,
    shared: Arc<Shared>,
    network: Network,
    /// When the leader last heard from each broker, and from which incarnation of it;
    /// reset when leadership is won.
    heard: parking_lot::Mutex<HashMap<NodeId, (Instant, String)>>,
    /// The term in which this node last found itself leader, with when.
    led_since: parking_lot::Mutex<Option<(u64, Instant)>>,
    /// The `at_ms` of this run's registration once the controller accepted it.
    registered_at: std::sync::atomic::AtomicI64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registration {
    Pending,
    Done,
    Refused,
}

/// A voter with empty storage asking about itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProbeRequest {
    pub id: NodeId,
}

/// What a node answers to a [`ProbeRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ProbeAnswer {
    /// Whether the answering node has controller state (the cluster exists).
    pub initialized: bool,
    /// The incarnation under which the cluster knows the asking node, if it does.
    pub knows: Option<String>,
}

impl ProbeAnswer {
    /// What a node whose controller is not running yet answers.
    pub fn not_initialized() -> Vec<u8> {
        serde_json::to_vec(&Self {
            initialized: false,
            knows: None,
        })
        .expect("serializes")
    }
}

/// What a broker asking to join sends.
#[derive(Debug, Serialize, Deserialize)]
struct JoinRequest {
    id: NodeId,
    addr: String,
    /// Passed on by a member that was not the leader: not passed on again.
    #[serde(default)]
    forwarded: bool,
}

/// A broker's heartbeat.
#[derive(Debug, Serialize, Deserialize)]
struct HeartbeatRequest {
    id: NodeId,
    /// Only the registered incarnation keeps a broker alive: one whose disk was wiped
    /// stays fenced.
    incarnation: String,
}

impl Controller {
    /// Before a node with empty controller storage takes part in Raft: makes sure it is
    /// not one whose disk was wiped. A wiped voter would vote as if it had never voted
    /// and had no log, so a candidate missing committed entries could win with its
    /// vote; for any wiped node, the leader would find its log gone back (openraft's
    /// leader stops on that). It asks the voters: any that has controller state and
    /// knows this node refuses it; one that has state and does not know it lets it in
    /// (a new broker); a voter also goes ahead once a majority of the voter set
    /// (itself included) is known to be empty, which is a new cluster forming. Waits,
    /// asking again, until one or the other.
    pub async fn check_empty_node(
        config: &ControllerConfig,
        transport: &Arc<dyn Transport>,
    ) -> Result<(), ControllerError> {
        if store::has_state(&config.dir) {
            return Ok(());
        }
        // A voter counts itself towards forming a new cluster; a broker that joins needs
        // the cluster to exist.
        let majority = if config.is_voter() {
            config.voters.len() / 2 + 1
        } else {
            usize::MAX
        };
        let body = serde_json::to_vec(&ProbeRequest { id: config.node_id }).expect("serializes");
        let mut waited = Duration::ZERO;
        loop {
            let mut empty = 1; // this node
            let mut exists = false;
            for (id, addr) in config
                .voters
                .iter()
                .filter(|(id, _)| **id != config.node_id)
            {
                let Ok(a) = transport.call(addr.clone(), Rpc::Probe, body.clone()).await else {
                    continue;
                };
                let Ok(answer) = serde_json::from_slice::<ProbeAnswer>(&a) else {
                    continue;
                };
                if !answer.initialized {
                    empty += 1;
                    continue;
                }
                exists = true;
                if let Some(incarnation) = answer.knows {
                    return Err(ControllerError::Refused(format!(
                        "node {} has no controller state, but voter {id} knows it (incarnation {incarnation}, this data directory is {}): its disk was wiped or replaced. A voter that lost its state would vote as new and could let committed metadata be lost, so it is not started; restore its data directory, or bring the broker back under a new --node-id",
                        config.node_id, config.incarnation
                    )));
                }
            }
            if exists || empty >= majority {
                return Ok(());
            }
            if waited.as_secs().is_multiple_of(10) && waited.subsec_millis() == 0 {
                tracing::info!(voters = ?config.voters, answered_empty = empty - 1,
                    "controller storage is empty: waiting for a majority of the voters to answer before forming the cluster");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            waited += Duration::from_millis(200);
        }
    }

    /// Opens the controller's storage and starts its Raft member. A voter whose storage
    /// is empty proposes the configured voter set as the first membership (every voter
    /// does, with the same set, which Raft allows).
    pub async fn start(
        config: ControllerConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<Self>, ControllerError> {
        let failed = |e: &dyn std::fmt::Display| ControllerError::Failed(e.to_string());
        let log = LogStore::open(&config.dir).map_err(|e| failed(&e))?;
        let sm = StateMachine::open(&config.dir).map_err(|e| failed(&e))?;
        let shared = sm.shared();
        let (min, max) = config.election_timeout_ms;
        let raft_config = openraft::Config {
            cluster_name: "strata".into(),
            election_timeout_min: min,
            election_timeout_max: max,
            heartbeat_interval: (min / 5).max(10),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate().map_err(|e| failed(&e))?);
        let network = Network { transport };
        let raft = Raft::new(config.node_id, raft_config, network.clone(), log, sm)
            .await
            .map_err(|e| failed(&e))?;
        if config.is_voter() && !raft.is_initialized().await.map_err(|e| failed(&e))? {
            let members: BTreeMap<NodeId, Node> = config
                .voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => {
                    tracing::info!(voters = ?config.voters, "controller: proposed the voter set")
                }
                // Another voter got there first, or this one already was: both fine.
                Err(RaftError::APIError(e)) => {
                    tracing::debug!(error = %e, "controller already initialized")
                }
                Err(e) => return Err(failed(&e)),
            }
        }
        Ok(Arc::new(Self {
            config,
            raft,
            shared,
            network,
            heard: Default::default(),
            led_since: Default::default(),
            registered_at: std::sync::atomic::AtomicI64::new(i64::MIN),
        }))
    }

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The cluster state as this node last applied it.
    pub fn state(&self) -> ClusterState {
        self.shared.state()
    }

    /// `f` of the cluster state as last applied, without copying it.
    pub fn with_state<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        self.shared.with_state(f)
    }

    /// Changes whenever this node applies an entry or installs a snapshot.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<Option<openraft::LogId<NodeId>>> {
        self.shared.changes()
    }

    /// Whether this node has applied its own registration of this run: then its state
    /// holds every change committed before it started (deleted topics, moved
    /// leaderships), and it may act on what the state does not hold.
    pub fn caught_up(&self) -> bool {
        let at = self
            .registered_at
            .load(std::sync::atomic::Ordering::Acquire);
        at != i64::MIN
            && self.shared.with_state(|s| {
                s.brokers.get(&self.config.node_id).is_some_and(|b| {
                    b.incarnation == self.config.incarnation && b.registered_ms == at
                })
            })
    }

    /// Whether this broker may serve: it has caught up (see [`Controller::caught_up`])
    /// and the controller has not fenced it.
    pub fn serving(&self) -> bool {
        self.caught_up()
            && self.shared.with_state(|s| {
                s.brokers
                    .get(&self.config.node_id)
                    .is_some_and(|b| !b.fenced)
            })
    }

    /// The current leader (id, address), if one is known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// The Raft term this node is in.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Voter ids of the current membership.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config.membership().voter_ids().collect()
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Answers a controller message from another node (the server's internal service).
    pub async fn handle(&self, rpc: Rpc, body: &[u8]) -> Result<Vec<u8>, String> {
        fn answer<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
            serde_json::to_vec(v).map_err(|e| e.to_string())
        }
        fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
            serde_json::from_slice(body).map_err(|e| format!("bad controller message: {e}"))
        }
        match rpc {
            Rpc::AppendEntries => answer(&self.raft.append_entries(parse(body)?).await),
            Rpc::Vote => answer(&self.raft.vote(parse(body)?).await),
            Rpc::InstallSnapshot => answer(&self.raft.install_snapshot(parse(body)?).await),
            Rpc::Propose => answer(&self.propose_here(parse(body)?).await),
            Rpc::Heartbeat => {
                let hb: HeartbeatRequest = parse(body)?;
                answer(&self.heard_from(hb))
            }
            Rpc::Join => {
                let mut j: JoinRequest = parse(body)?;
                if self.is_leader() || j.forwarded {
                    return answer(&self.add_learner(j.id, j.addr).await);
                }
                // The joining broker knows one member, not the leader: pass it on, once.
                j.forwarded = true;
                let body = serde_json::to_vec(&j).expect("serializes");
                match self.to_leader(Rpc::Join, body).await {
                    Ok(a) => Ok(a),
                    Err(e) => answer(&Err::<(), _>(e)),
                }
            }
            Rpc::Probe => {
                let p: ProbeRequest = parse(body)?;
                answer(&ProbeAnswer {
                    initialized: true,
                    knows: self.knows(p.id),
                })
            }
        }
    }

    /// Whether this node has seen `id` take part: registered (with the incarnation it
    /// registered under), a learner in the membership, or, on the leader, a follower
    /// that has stored entries. What a node with empty storage must not be.
    fn knows(&self, id: NodeId) -> Option<String> {
        if let Some(b) = self.state().brokers.get(&id) {
            return Some(b.incarnation.clone());
        }
        let m = self.raft.metrics().borrow().clone();
        let learner = m
            .membership_config
            .membership()
            .learner_ids()
            .any(|l| l == id);
        let replicated = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).copied().flatten())
            .is_some_and(|matched| matched.index > 0);
        (learner || replicated).then(|| "(not registered yet)".to_string())
    }

    /// Proposes `cmd` on this node, which must be the leader. Bounded: a leader that
    /// has lost its quorum does not hang its caller.
    async fn propose_here(&self, cmd: Command) -> Result<CommandResult, ControllerError> {
        let write = self.raft.client_write(cmd);
        match tokio::time::timeout(PROPOSE_TIMEOUT, write).await {
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(ControllerError::NoLeader)
            }
            Ok(Err(e)) => Err(ControllerError::Failed(e.to_string())),
            Err(_) => Err(ControllerError::Failed(format!(
                "no quorum answered within {PROPOSE_TIMEOUT:?}"
            ))),
        }
    }

    /// Proposes `cmd` through the leader, wherever it is; waits for it to be applied
    /// there. A refused command is an error that says why.
    pub async fn submit(&self, cmd: Command) -> Result<(), ControllerError> {
        let result = if self.is_leader() {
            self.propose_here(cmd).await?
        } else {
            let body = serde_json::to_vec(&cmd).expect("commands serialize");
            let answer = self.to_leader(Rpc::Propose, body).await?;
            serde_json::from_slice::<Result<CommandResult, ControllerError>>(&answer)
                .map_err(|e| ControllerError::Failed(e.to_string()))??
        };
        match result.error {
            Some(why) => Err(ControllerError::Refused(why)),
            None => Ok(()),
        }
    }

    async fn to_leader(&self, rpc: Rpc, body: Vec<u8>) -> Result<Vec<u8>, ControllerError> {
        let (_, addr) = self.leader().ok_or(ControllerError::NoLeader)?;
        self.network
            .transport
            .call(addr, rpc, body)
            .await
            .map_err(ControllerError::Failed)
    }

    /// On the leader: adds a broker as a learner, so it follows the log.
    async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), ControllerError> {
        if self.voter_ids().contains(&id) {
            return Err(ControllerError::Refused(format!(
                "node {id} is a voter; start it with --voters, not --join"
            )));
        }
        self.raft
            .add_learner(id, BasicNode { addr }, false)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                    ControllerError::NoLeader
                }
                e => ControllerError::Failed(e.to_string()),
            })
    }

    /// Records a heartbeat. Every voter keeps them, so one that becomes leader knows
    /// at once who has been silent (the old leader, typically) instead of giving every
    /// broker a session's grace first.
    fn heard_from(&self, hb: HeartbeatRequest) -> Result<(), ControllerError> {
        self.heard
            .lock()
            .insert(hb.id, (Instant::now(), hb.incarnation));
        Ok(())
    }

    /// Runs this node's controller duties until `stop`: join (a learner), register,
    /// heartbeat, and on the leader fence and unfence brokers by their heartbeats. Ends
    /// with an error if the Raft member stops on its own (a storage failure).
    pub async fn run(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ControllerError> {
        let every = Duration::from_millis(self.config.heartbeat_interval_ms);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut joined = self.config.is_voter();
        let mut registered = Registration::Pending;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                _ = tick.tick() => {}
            }
            if *stop.borrow() {
                return Ok(());
            }
            if let Err(e) = &self.raft.metrics().borrow().running_state {
                return Err(ControllerError::Failed(format!(
                    "the Raft member stopped: {e}"
                )));
            }
            if !joined {
                joined = self.join().await;
                continue;
            }
            if registered == Registration::Pending {
                registered = self.register().await;
            }
            self.heartbeat().await;
            if self.is_leader() {
                self.check_liveness().await;
            }
        }
    }

    async fn join(&self) -> bool {
        let Some(via) = self.config.join.clone() else {
            return true;
        };
        let body = serde_json::to_vec(&JoinRequest {
            id: self.config.node_id,
            addr: self.config.addr.clone(),
            forwarded: false,
        })
        .expect("serializes");
        // Any node answers; a follower's answer says who leads, and the next try goes
        // there once this node has learned it.
        let target = self.leader().map(|(_, a)| a).unwrap_or(via);
        match self
            .network
            .transport
            .call(target.clone(), Rpc::Join, body)
            .await
        {
            Ok(a) => match serde_json::from_slice::<Result<(), ControllerError>>(&a) {
                Ok(Ok(())) => {
                    tracing::info!(via = %target, "joined the cluster as a non-voter");
                    true
                }
                Ok(Err(e)) => {
                    tracing::warn!(via = %target, error = %e, "could not join the cluster yet");
                    false
                }
                Err(e) => {
                    tracing::warn!(via = %target, error = %e, "bad answer to a join");
                    false
                }
            },
            Err(e) => {
                tracing::warn!(via = %target, error = %e, "could not reach the cluster to join");
                false
            }
        }
    }

    async fn register(&self) -> Registration {
        let at_ms = now_ms();
        let cmd = Command::RegisterBroker {
            id: self.config.node_id,
            addr: self.config.addr.clone(),
            kafka_addr: self.config.kafka_addr.clone(),
            rack: self.config.rack.clone(),
            incarnation: self.config.incarnation.clone(),
            at_ms,
        };
        match self.submit(cmd).await {
            Ok(()) => {
                self.registered_at
                    .store(at_ms, std::sync::atomic::Ordering::Release);
                tracing::info!(
                    node_id = self.config.node_id,
                    "registered with the controller"
                );
                Registration::Done
            }
            Err(ControllerError::Refused(why)) => {
                // For good: only the operator can resolve it (a new --node-id).
                tracing::error!(%why, "the controller refused this broker's registration; it stays fenced");
                Registration::Refused
            }
            Err(e) => {
                tracing::debug!(error = %e, "registration not done yet");
                Registration::Pending
            }
        }
    }

    /// Heartbeats to every voter (itself included), side by side.
    async fn heartbeat(&self) {
        let hb = HeartbeatRequest {
            id: self.config.node_id,
            incarnation: self.config.incarnation.clone(),
        };
        let body = serde_json::to_vec(&hb).expect("serializes");
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<String> = membership
            .voter_ids()
            .filter(|id| *id != self.config.node_id)
            .filter_map(|id| membership.get_node(&id).map(|n| n.addr.clone()))
            .collect();
        if self.config.is_voter() {
            let _ = self.heard_from(hb);
        }
        // Bounded by the interval: a voter that does not answer (paused, partitioned
        // away) must not hold back the heartbeats to the others, nor the next round.
        let bound = Duration::from_millis(self.config.heartbeat_interval_ms);
        let sends = voters.into_iter().map(|addr| {
            let call = self
                .network
                .transport
                .call(addr.clone(), Rpc::Heartbeat, body.clone());
            async move {
                match tokio::time::timeout(bound, call).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::debug!(voter = %addr, error = %e, "heartbeat failed"),
                    Err(_) => tracing::debug!(voter = %addr, "heartbeat not answered in time"),
                }
            }
        });
        futures::future::join_all(sends).await;
    }

    /// On the leader: fences brokers silent for their session, unfences those heard.
    async fn check_liveness(&self) {
        let term = self.term();
        let now = Instant::now();
        let since = {
            let mut led = self.led_since.lock();
            match *led {
                Some((t, at)) if t == term => at,
                _ => {
                    // Newly leader. Its heartbeat times are its own (every voter keeps
                    // them); a broker it has never heard from gets a session's grace.
                    *led = Some((term, now));
                    now
                }
            }
        };
        let session = Duration::from_millis(self.config.session_timeout_ms);
        let state = self.state();
        for b in state.brokers.values() {
            let last = self
                .heard
                .lock()
                .get(&b.id)
                .filter(|(_, incarnation)| *incarnation == b.incarnation)
                .map(|(at, _)| *at);
            let alive = match last {
                Some(at) => now.duration_since(at) < session,
                // Not heard since this node became leader: a session's grace.
                None => now.duration_since(since) < session,
            };
            let cmd = match (b.fenced, alive, last.is_some()) {
                (false, false, _) => Command::FenceBroker {
                    id: b.id,
                    at_ms: now_ms(),
                },
                (true, true, true) => Command::UnfenceBroker {
                    id: b.id,
                    at_ms: now_ms(),
                },
                _ => continue,
            };
            tracing::info!(broker = b.id, command = ?cmd, "broker liveness changed");
            if let Err(e) = self.submit(cmd).await {
                tracing::warn!(broker = b.id, error = %e, "could not record broker liveness");
            }
        }
    }

    /// Stops the Raft member.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
