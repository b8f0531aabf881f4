//! The broker-to-broker edge: the internal `strata.internal.v1.Cluster` service that
//! carries controller messages into this node's [`Controller`], and the
//! [`GrpcTransport`] that carries this node's messages out to the others. Both share
//! the public gRPC port.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use strata_controller::{Controller, Rpc, Transport};
use strata_proto::internal::v1 as ipb;
use strata_proto::internal::v1::cluster_client::ClusterClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// How long a controller message may take (Raft retries on its own).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends controller messages over gRPC, one lazily connected channel per address.
#[derive(Default)]
pub struct GrpcTransport {
    channels: parking_lot::Mutex<HashMap<String, Channel>>,
}

impl GrpcTransport {
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad address {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

impl Transport for GrpcTransport {
    fn call(
        &self,
        addr: String,
        rpc: Rpc,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let channel = self.channel(&addr);
        Box::pin(async move {
            let mut client = ClusterClient::new(channel?);
            let request = ipb::ControllerRequest {
                rpc: rpc.name().to_string(),
                body: body.into(),
            };
            client
                .controller(request)
                .await
                .map(|r| r.into_inner().body.to_vec())
                .map_err(|s| format!("{}: {}", s.code(), s.message()))
        })
    }
}

/// This node's controller part, once started.
#[derive(Default)]
pub struct Node {
    controller: std::sync::OnceLock<Arc<Controller>>,
    /// Where its controller storage is (`<data-dir>/raft`), for probes answered while
    /// it starts; none for a single broker.
    pub raft_dir: Option<std::path::PathBuf>,
}

impl Node {
    pub fn new(raft_dir: Option<std::path::PathBuf>) -> Self {
        Self {
            controller: Default::default(),
            raft_dir,
        }
    }

    pub fn set(&self, c: Arc<Controller>) {
        let _ = self.controller.set(c);
    }

    pub fn get(&self) -> Option<&Arc<Controller>> {
        self.controller.get()
    }
}

/// The internal service: hands controller messages to this node's controller.
pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl ipb::cluster_server::Cluster for ClusterService {
    async fn controller(
        &self,
        request: Request<ipb::ControllerRequest>,
    ) -> Result<Response<ipb::ControllerResponse>, Status> {
        let r = request.into_inner();
        let rpc = Rpc::parse(&r.rpc).ok_or_else(|| {
            Status::invalid_argument(format!("unknown controller message {:?}", r.rpc))
        })?;
        let Some(controller) = self.node.get() else {
            // Still starting. A probe is answered "empty" only if this node truly has no
            // controller state: one still loading its log must not count as empty, or a
            // wiped voter could take it for a new cluster forming.
            let empty = self
                .node
                .raft_dir
                .as_deref()
                .is_some_and(|d| !strata_controller::store::has_state(d));
            if rpc == Rpc::Probe && empty {
                let body = strata_controller::ProbeAnswer::not_initialized();
                return Ok(Response::new(ipb::ControllerResponse { body: body.into() }));
            }
            return Err(Status::unavailable("this node's controller is starting"));
        };
        let body = controller
            .handle(rpc, &r.body)
            .await
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(ipb::ControllerResponse { body: body.into() }))
    }
}
