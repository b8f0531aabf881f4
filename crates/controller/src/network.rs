//! Raft messages between controller nodes, over a [`Transport`] the node provides (the
//! server crate's internal gRPC service). Messages are JSON: controller traffic is small
//! and rare next to data, and JSON keeps it readable in a packet capture.

use std::sync::Arc;

use futures::future::BoxFuture;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::state::NodeId;
use crate::{Node, TypeConfig};

/// Which controller message a request carries: Raft's own, or a broker's to the
/// controller leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    /// A command for the leader to propose ([`crate::Command`]).
    Propose,
    /// A broker's heartbeat to the leader.
    Heartbeat,
    /// A broker that is not a voter asks to follow the controller's log.
    Join,
    /// A voter with empty storage asks the others whether the cluster already exists
    /// and knew it (see `Controller::check_empty_node`). Answered before the answering
    /// node's own controller is running.
    Probe,
}

impl Rpc {
    const ALL: [Rpc; 7] = [
        Self::AppendEntries,
        Self::Vote,
        Self::InstallSnapshot,
        Self::Propose,
        Self::Heartbeat,
        Self::Join,
        Self::Probe,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::AppendEntries => "append_entries",
            Self::Vote => "vote",
            Self::InstallSnapshot => "install_snapshot",
            Self::Propose => "propose",
            Self::Heartbeat => "heartbeat",
            Self::Join => "join",
            Self::Probe => "probe",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// Carries one Raft message to the node at `addr` and brings back its answer.
pub trait Transport: Send + Sync + 'static {
    fn call(
        &self,
        addr: String,
        rpc: Rpc,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>>;
}

/// Makes a [`Connection`] per target node.
#[derive(Clone)]
pub struct Network {
    pub(crate) transport: Arc<dyn Transport>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        Connection {
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// Sends Raft messages to one node.
pub struct Connection {
    transport: Arc<dyn Transport>,
    target: NodeId,
    addr: String,
}

impl Connection {
    async fn send<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = self
            .transport
            .call(self.addr.clone(), rpc, body)
            .await
            .map_err(|e| {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
                    "node {} at {}: {e}",
                    self.target, self.addr
                ))))
            })?;
        let answer: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&answer)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.send(Rpc::AppendEntries, &rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(Rpc::InstallSnapshot, &rpc).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.send(Rpc::Vote, &rpc).await
    }
}
