//! The broker-to-broker edge: the internal `strata.internal.v1.Cluster` service that
//! carries controller messages into this node's [`Controller`] and follower fetches to
//! the partitions it leads, and the [`GrpcTransport`] that carries this node's messages
//! out to the others. Both share the public gRPC port.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use strata_broker::Broker;
use strata_broker::replication::{FollowerAnswer, FollowerFetch};
use strata_broker::replication::{LeaderLink, Member, ReplicaFetch};
use strata_controller::{Controller, Rpc, Transport};
use strata_proto::internal::v1 as ipb;
use strata_proto::internal::v1::cluster_client::ClusterClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Response, Status};

/// How long a controller message may take (Raft retries on its own).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends controller messages over gRPC, one lazily connected channel per address.
#[derive(Default)]
pub struct GrpcTransport {
    channels: parking_lot::Mutex<HashMap<String, Channel>>,
    /// Set when the brokers speak TLS: the CA their certificates chain to, and this
    /// broker's own certificate, presented as its identity.
    tls: Option<ClientTlsConfig>,
}

impl GrpcTransport {
    /// A transport that reaches the other brokers as `config` says: over TLS when this
    /// broker serves TLS (then they do too), presenting its own certificate.
    pub fn for_config(config: &strata_broker::BrokerConfig) -> Result<Self, crate::RunError> {
        let tls = match (
            &config.tls_cert_file,
            &config.tls_key_file,
            &config.tls_ca_file,
        ) {
            (Some(cert), Some(key), Some(ca)) => {
                let read = |p: &std::path::Path| {
                    std::fs::read(p).map_err(|e| {
                        crate::RunError::Config(format!("cannot read {}: {e}", p.display()))
                    })
                };
                // Refused here if it holds no usable certificate, not at the first call.
                strata_tls::root_store(ca).map_err(|e| crate::RunError::Config(e.to_string()))?;
                Some(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(read(ca)?))
                        .identity(Identity::from_pem(read(cert)?, read(key)?)),
                )
            }
            _ => None,
        };
        Ok(Self {
            channels: Default::default(),
            tls,
        })
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("bad address {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS for {addr}: {e}"))?;
        }
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

impl LeaderLink for GrpcTransport {
    fn fetch(
        &self,
        addr: &str,
        r: ReplicaFetch,
    ) -> BoxFuture<'static, Result<FollowerAnswer, String>> {
        let channel = self.channel(addr);
        Box::pin(async move {
            let mut client = ClusterClient::new(channel?);
            let f = r.fetch;
            let request = ipb::ReplicaFetchRequest {
                replica_id: f.replica,
                topic: r.topic,
                topic_id: r.topic_id,
                partition: r.partition,
                leader_epoch: f.leader_epoch,
                fetch_offset: f.fetch_offset,
                last_fetched_epoch: f.last_fetched_epoch,
                max_bytes: f.max_bytes as u32,
                max_wait_ms: f.max_wait.as_millis() as u32,
                high_watermark: f.known_high_watermark,
            };
            let a = client
                .replica_fetch(request)
                .await
                .map_err(|s| format!("{}: {}", s.code(), s.message()))?
                .into_inner();
            Ok(FollowerAnswer {
                batches: a.batches,
                high_watermark: a.high_watermark,
                log_start_offset: a.log_start_offset,
                local_log_start_offset: a.local_log_start_offset,
                diverging: a
                    .diverging
                    .then_some((a.diverging_epoch, a.diverging_end_offset)),
            })
        })
    }
}

/// This node's cluster part, once started: its controller and replica manager.
#[derive(Default)]
pub struct Node {
    controller: std::sync::OnceLock<Arc<Controller>>,
    /// Shared with the Kafka listener, which answers from the cluster's metadata.
    member: Arc<std::sync::OnceLock<Arc<Member>>>,
    /// Where its controller storage is (`<data-dir>/raft`), for probes answered while
    /// it starts; none for a single broker.
    pub raft_dir: Option<std::path::PathBuf>,
}

impl Node {
    pub fn new(raft_dir: Option<std::path::PathBuf>) -> Self {
        Self {
            controller: Default::default(),
            member: Default::default(),
            raft_dir,
        }
    }

    pub fn set(&self, c: Arc<Controller>, m: Arc<Member>) {
        let _ = self.controller.set(c);
        let _ = self.member.set(m);
    }

    pub fn get(&self) -> Option<&Arc<Controller>> {
        self.controller.get()
    }

    /// The replica manager, once the controller part runs.
    pub fn member(&self) -> Option<&Arc<Member>> {
        self.member.get()
    }

    /// Where the replica manager will be, for parts that start before it.
    pub fn member_cell(&self) -> Arc<std::sync::OnceLock<Arc<Member>>> {
        self.member.clone()
    }
}

/// The internal service: hands controller messages to this node's controller and
/// follower fetches to its partitions.
pub struct ClusterService {
    node: Arc<Node>,
    broker: Arc<Broker>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>, broker: Arc<Broker>) -> Self {
        Self { node, broker }
    }

    /// With TLS on, only a peer that presented a certificate the CA signed may speak
    /// for a broker: a client without one cannot vote, propose or fetch as a follower.
    fn check_peer<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if !self.broker.config().tls() {
            return Ok(());
        }
        let Some(peer) = crate::auth::cert_principal(request) else {
            return Err(Status::permission_denied(
                "broker-to-broker calls need a broker certificate signed by this cluster's CA",
            ));
        };
        // With super users named, a certificate of the cluster's CA is not enough (the
        // CA may sign clients too): the broker's must name a super user.
        let supers = self.broker.config().super_users().unwrap_or_default();
        if !supers.is_empty() && !supers.contains(&peer) {
            tracing::warn!(%peer, "refused a broker-to-broker call from a principal not in super_users");
            return Err(Status::permission_denied(format!(
                "{peer} is not a broker of this cluster: broker-to-broker calls need a certificate naming one of super_users"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl ipb::cluster_server::Cluster for ClusterService {
    async fn controller(
        &self,
        request: Request<ipb::ControllerRequest>,
    ) -> Result<Response<ipb::ControllerResponse>, Status> {
        self.check_peer(&request)?;
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

    async fn replica_fetch(
        &self,
        request: Request<ipb::ReplicaFetchRequest>,
    ) -> Result<Response<ipb::ReplicaFetchResponse>, Status> {
        self.check_peer(&request)?;
        let r = request.into_inner();
        let p = self
            .broker
            .partition(&r.topic, r.partition)
            .map_err(crate::status)?;
        if p.topic_id != r.topic_id {
            return Err(Status::not_found(format!(
                "topic {:?} here has id {}, not {}: the metadata changed",
                r.topic, p.topic_id, r.topic_id
            )));
        }
        let fetch = FollowerFetch {
            replica: r.replica_id,
            leader_epoch: r.leader_epoch,
            fetch_offset: r.fetch_offset,
            last_fetched_epoch: r.last_fetched_epoch,
            max_bytes: (r.max_bytes as usize).clamp(1, crate::MAX_MESSAGE_BYTES / 2),
            known_high_watermark: r.high_watermark,
            max_wait: Duration::from_millis(r.max_wait_ms.min(5_000) as u64),
        };
        let a = p.serve_follower(&fetch).await.map_err(crate::status)?;
        let (diverging, diverging_epoch, diverging_end_offset) = match a.diverging {
            Some((e, o)) => (true, e, o),
            None => (false, -1, -1),
        };
        Ok(Response::new(ipb::ReplicaFetchResponse {
            batches: a.batches,
            high_watermark: a.high_watermark,
            log_start_offset: a.log_start_offset,
            local_log_start_offset: a.local_log_start_offset,
            diverging,
            diverging_epoch,
            diverging_end_offset,
        }))
    }
}
