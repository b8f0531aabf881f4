//! The cluster's metadata and the commands that change it.
//!
//! [`ClusterState::apply`] is the state machine's transition function. It is pure and
//! deterministic: every input is in the command (times come from the proposer, as
//! `at_ms`), so every replica that applies the same log reaches the same state.
//! Commands that are not allowed in the current state change nothing and answer with
//! an error that says why; they are still part of the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A broker's id (`--node-id`); never reused for a broker whose disk was wiped.
pub type NodeId = u64;

/// What the cluster knows of one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub id: NodeId,
    /// Its advertised gRPC address (HOST:PORT).
    pub addr: String,
    pub rack: Option<String>,
    /// Chosen when the broker's data directory was created: a broker that comes back
    /// with another one lost its disk.
    pub incarnation: String,
    /// A fenced broker leads no partition and is left out of in-sync sets: it stopped
    /// heartbeating (or has not yet) for longer than its session.
    pub fenced: bool,
    pub registered_ms: i64,
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
        rack: Option<String>,
        incarnation: String,
        at_ms: i64,
    },
    /// The controller saw no heartbeat from the broker for its session timeout.
    FenceBroker { id: NodeId, at_ms: i64 },
    /// The controller heard from a fenced broker again.
    UnfenceBroker { id: NodeId, at_ms: i64 },
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
    pub brokers: BTreeMap<NodeId, BrokerRecord>,
}

impl ClusterState {
    /// Applies one command.
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            Command::RegisterBroker {
                id,
                addr,
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
                let fenced = self.brokers.get(id).is_none_or(|b| b.fenced);
                self.brokers.insert(
                    *id,
                    BrokerRecord {
                        id: *id,
                        addr: addr.clone(),
                        rack: rack.clone(),
                        incarnation: incarnation.clone(),
                        fenced,
                        registered_ms: *at_ms,
                    },
                );
                CommandResult::default()
            }
            Command::FenceBroker { id, .. } | Command::UnfenceBroker { id, .. } => {
                let fence = matches!(cmd, Command::FenceBroker { .. });
                match self.brokers.get_mut(id) {
                    Some(b) => {
                        b.fenced = fence;
                        CommandResult::default()
                    }
                    None => CommandResult::refused(format!("broker {id} is not registered")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(id: NodeId, incarnation: &str) -> Command {
        Command::RegisterBroker {
            id,
            addr: format!("127.0.0.1:{}", 9000 + id),
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
        // A restart with the same disk keeps its state.
        s.apply(&register(1, "a"));
        assert!(!s.brokers[&1].fenced);
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

    #[test]
    fn replicas_that_apply_the_same_log_agree() {
        let log = [
            register(1, "a"),
            register(2, "b"),
            Command::UnfenceBroker { id: 2, at_ms: 5 },
            register(2, "c"),
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
}
