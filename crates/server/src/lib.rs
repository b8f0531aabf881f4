//! The network edge of a Strata broker: the gRPC service ([`service`]), the one mapping
//! from the core's [`ErrorKind`] to gRPC status codes ([`status`]), and the `/metrics`
//! endpoint. [`run`] serves a broker until a shutdown signal, with its background work
//! running beside. Tests bind `127.0.0.1:0` and call [`run`] in-process.
//!
//! The broker core knows nothing of tonic: everything protocol-shaped lives here.

pub mod auth;
pub mod cluster;
pub mod service;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1::strata_server::StrataServer;
use strata_tls::ServerTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use strata_broker::Broker;
use strata_broker::error::{BrokerError, ErrorKind};
use tonic::{Code, Status};

use crate::service::Service;

/// Largest gRPC message accepted or sent (a produce request or fetch answer).
pub const MAX_MESSAGE_BYTES: usize = 128 << 20;
/// How long a shutdown waits for open requests before closing connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves a single broker on `listener` (and `/metrics` on `metrics`) until `shutdown`
/// resolves, then flushes every log.
pub async fn run(
    broker: Arc<Broker>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    run_node(broker, None, listener, metrics, None, shutdown).await
}

/// A Kafka listener to serve beside gRPC.
pub struct KafkaListener {
    pub listener: TcpListener,
    pub config: strata_kafka::KafkaConfig,
}

/// How a cluster member starts its controller part.
pub struct ControllerSetup {
    pub config: strata_controller::ControllerConfig,
    pub transport: Arc<dyn strata_controller::Transport>,
    /// Carries follower fetches to leaders.
    pub link: Arc<dyn strata_broker::replication::LeaderLink>,
}

/// Why a broker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error("controller: {0}")]
    Controller(#[from] strata_controller::ControllerError),
    #[error("{0}")]
    Config(String),
}

/// [`run`] for a broker that is a cluster member. Its controller part starts once the
/// node answers on its port (a voter with empty storage first asks the others about
/// itself, and they must be able to ask it too); it then answers other nodes on the same
/// port and runs its duties (registration, heartbeats, and on the leader, fencing)
/// beside the broker's. A controller that cannot start stops the broker with its error.
pub async fn run_node(
    broker: Arc<Broker>,
    controller: Option<ControllerSetup>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    kafka: Option<KafkaListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let node = Arc::new(cluster::Node::new(
        controller.as_ref().map(|c| c.config.dir.clone()),
    ));
    let kafka = kafka
        .map(|k| {
            strata_kafka::Context::new(broker.clone(), k.config, node.member_cell())
                .map(|ctx| (k.listener, ctx))
                .map_err(RunError::Config)
        })
        .transpose()?;
    let ListenersTls {
        grpc: grpc_tls,
        kafka: kafka_tls,
        metrics: metrics_tls,
    } = tls_for(broker.config())?;
    let reflection = reflection()?;
    let authenticate = auth::Authenticate::new(broker.config()).map_err(RunError::Config)?;
    let background = strata_broker::tasks::Background::start(&broker);
    let reload_poll = Duration::from_millis(broker.config().tls_reload_interval_ms);
    for tls in grpc_tls.iter().chain(&kafka_tls).chain(&metrics_tls) {
        tokio::spawn(tls.clone().watch(reload_poll, background.stopping()));
    }
    tokio::spawn(
        authenticate
            .clone()
            .watch(reload_poll, background.stopping()),
    );
    let metrics_task = metrics.map(|l| {
        tokio::spawn(serve_metrics(
            l,
            metrics_tls,
            [("grpc", &grpc_tls), ("kafka", &kafka_tls)]
                .into_iter()
                .filter_map(|(name, t)| Some((name, t.clone()?)))
                .collect(),
            broker.clone(),
            background.stopping(),
        ))
    });
    // Health (grpc.health.v1): NOT_SERVING until this broker can serve (a cluster
    // member: registered and not fenced), and again from the moment shutdown begins.
    let (health, health_service) = tonic_health::server::health_reporter();
    let health = Health::new(health);
    health.set(false).await;
    // With TLS configured the Kafka listener speaks only TLS too (Kafka's SSL).
    let kafka_task = kafka.map(|(l, ctx)| {
        tokio::spawn(strata_kafka::serve(
            l,
            kafka_tls.clone(),
            ctx,
            background.stopping(),
        ))
    });
    let (failed_tx, failed_rx) =
        tokio::sync::oneshot::channel::<strata_controller::ControllerError>();
    let clustered = controller.is_some();
    let duties = controller.map(|setup| {
        let node = node.clone();
        let broker = broker.clone();
        let health = health.clone();
        let mut stop = background.stopping();
        tokio::spawn(async move {
            let started = async {
                strata_controller::Controller::check_empty_node(&setup.config, &setup.transport)
                    .await?;
                strata_controller::Controller::start(setup.config, setup.transport).await
            };
            // Starting may wait for other voters: a shutdown ends the wait.
            let started = tokio::select! {
                r = started => r,
                _ = stop.changed() => return,
            };
            let ran = match started {
                Ok(c) => {
                    let member =
                        strata_broker::replication::Member::new(broker, c.clone(), setup.link);
                    node.set(c.clone(), member.clone());
                    tokio::spawn(track_fencing(c.clone(), health, stop.clone()));
                    let replicas = tokio::spawn(member.run(stop.clone()));
                    let ran = c.run(stop).await;
                    let _ = replicas.await;
                    ran
                }
                Err(e) => Err(e),
            };
            if let Err(e) = ran {
                tracing::error!(error = %e, "the controller stopped; stopping the broker");
                let _ = failed_tx.send(e);
            }
        })
    });
    let service = tonic::service::interceptor::InterceptedService::new(
        StrataServer::new(Service::new(broker.clone(), node.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        authenticate,
    );
    let internal = duties.is_some().then(|| {
        strata_proto::internal::v1::cluster_server::ClusterServer::new(
            cluster::ClusterService::new(node.clone(), broker.clone()),
        )
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    });
    let failure = Arc::new(parking_lot::Mutex::new(None));
    let shutdown = {
        let failure = failure.clone();
        async move {
            tokio::select! {
                _ = shutdown => {}
                Ok(e) = failed_rx => *failure.lock() = Some(e),
            }
        }
    };
    let metrics = broker.metrics().clone();
    let limit =
        strata_tls::ConnectionLimit::counted(broker.config().max_connections_per_ip, move || {
            metrics.connections_refused.add(1)
        });
    let incoming = strata_tls::incoming_limited(listener, grpc_tls, "grpc", limit);
    if !clustered {
        health.set(true).await;
    }
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel();
    let b = broker.clone();
    let serve = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .max_frame_size(Some((1 << 20) - 1))
        .add_service(service)
        .add_optional_service(internal)
        .add_service(health_service)
        .add_service(reflection.0)
        .add_service(reflection.1)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            health.closing().await;
            // End subscriptions, long polls and produce streams so connections drain.
            b.begin_shutdown();
            let _ = signalled_tx.send(());
        });
    tokio::pin!(serve);
    let result = tokio::select! {
        r = &mut serve => r,
        _ = async {
            let _ = signalled_rx.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown began; closing them");
            Ok(())
        }
    };
    background.stop().await;
    // Then Raft: proposals under way fail at once instead of waiting for a quorum that
    // may be shutting down too, and the duties end.
    if let Some(c) = node.get() {
        c.shutdown().await;
    }
    if let Some(t) = duties {
        let _ = t.await;
    }
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    if let Some(t) = kafka_task {
        let _ = t.await;
    }
    let b = broker.clone();
    let _ = tokio::task::spawn_blocking(move || b.close_all()).await;
    tracing::info!("broker stopped");
    result?;
    match failure.lock().take() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Loads the TLS files `config` names, so a broker can refuse bad ones before it
/// starts anything.
pub fn check_tls(config: &strata_broker::BrokerConfig) -> Result<(), RunError> {
    tls_for(config)?;
    auth::Authenticate::new(config).map_err(RunError::Config)?;
    // In a TLS cluster with super users, the others accept this broker's calls only
    // if its certificate names one of them: refuse now, not at its first call.
    let supers = config
        .super_users()
        .map_err(|e| RunError::Config(e.to_string()))?;
    if let (true, Some(cert)) = (
        config.clustered() && !supers.is_empty(),
        &config.tls_cert_file,
    ) {
        let leaf = strata_tls::load_certs(cert, "certificate")
            .map_err(|e| RunError::Config(e.to_string()))?;
        let me = leaf.first().and_then(|c| strata_auth::cert::principal(c));
        if !me.as_ref().is_some_and(|p| supers.contains(p)) {
            return Err(RunError::Config(format!(
                "this broker's certificate {} names {}, which is not in super_users: the other brokers would refuse its calls; add it to super_users or use a broker certificate",
                cert.display(),
                me.map_or("no principal".to_string(), |p| p.to_string())
            )));
        }
    }
    Ok(())
}

/// Each listener's TLS, when it has any: the same files, each with the application
/// protocols its clients offer (gRPC clients offer `h2`; Kafka clients may offer none
/// or their own, which an `h2`-only server would refuse).
#[derive(Default)]
struct ListenersTls {
    grpc: Option<Arc<ServerTls>>,
    kafka: Option<Arc<ServerTls>>,
    metrics: Option<Arc<ServerTls>>,
}

/// The TLS configurations of the listeners, as `config` asks.
fn tls_for(config: &strata_broker::BrokerConfig) -> Result<ListenersTls, RunError> {
    let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Ok(ListenersTls::default());
    };
    let files = strata_tls::ServerFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: config.tls_ca_file.clone(),
        client_auth: config.tls_client_auth.parse().map_err(RunError::Config)?,
    };
    let load = |files: strata_tls::ServerFiles, alpn: &[&'static [u8]]| {
        ServerTls::load(files, alpn).map_err(|e| RunError::Config(e.to_string()))
    };
    let metrics = if config.metrics_tls {
        // Scrapers are not asked for certificates.
        let files = strata_tls::ServerFiles {
            client_auth: strata_tls::ClientAuth::None,
            ..files.clone()
        };
        Some(load(files, &[b"http/1.1"])?)
    } else {
        None
    };
    Ok(ListenersTls {
        grpc: Some(load(files.clone(), &[b"h2"])?),
        kafka: Some(load(files, &[])?),
        metrics,
    })
}

/// This broker's `grpc.health.v1` status, for the whole server ("") and for
/// `strata.v1.Strata` alike. Once shutdown begins it stays NOT_SERVING, whatever
/// the controller says after.
#[derive(Clone)]
struct Health {
    reporter: tonic_health::server::HealthReporter,
    closing: Arc<std::sync::atomic::AtomicBool>,
    /// Makes check-and-set one step, so a late "serving" cannot follow "closing".
    order: Arc<tokio::sync::Mutex<()>>,
}

impl Health {
    fn new(reporter: tonic_health::server::HealthReporter) -> Self {
        Self {
            reporter,
            closing: Default::default(),
            order: Default::default(),
        }
    }

    async fn set(&self, serving: bool) {
        use tonic::server::NamedService;
        use tonic_health::ServingStatus;
        let _in_order = self.order.lock().await;
        let status = if serving && !self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        self.reporter
            .set_service_status(<StrataServer<Service> as NamedService>::NAME, status)
            .await;
    }

    async fn closing(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.set(false).await;
    }
}

/// Keeps a cluster member's health in step with the controller's view of it: serving
/// once it has registered and caught up, not serving while it is fenced.
async fn track_fencing(
    c: Arc<strata_controller::Controller>,
    health: Health,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut changes = c.changes();
    let mut last = None;
    loop {
        let serving = c.serving();
        if last != Some(serving) {
            health.set(serving).await;
            last = Some(serving);
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// The reflection services (v1, and v1alpha for older tools), listing the public API,
/// health and reflection itself; the broker-to-broker service is not listed.
#[allow(clippy::type_complexity)]
fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    RunError,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("strata.v1.Strata")
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let bad = |e: tonic_reflection::server::Error| RunError::Config(format!("reflection: {e}"));
    Ok((
        builder().build_v1().map_err(bad)?,
        builder().build_v1alpha().map_err(bad)?,
    ))
}

/// A minimal HTTP/1.1 endpoint: `GET /metrics` answers the Prometheus text format.
async fn serve_metrics(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    listeners_tls: Vec<(&'static str, Arc<ServerTls>)>,
    broker: Arc<Broker>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (conn, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let broker = broker.clone();
        let tls = tls.clone();
        let listeners_tls = listeners_tls.clone();
        tokio::spawn(async move {
            let mut conn = match strata_tls::handshake(conn, tls.as_deref()).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(error = %e, "metrics: TLS handshake failed");
                    return;
                }
            };
            let mut req = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
                match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => req.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let line = String::from_utf8_lossy(&req);
            let (status, body) = if line.starts_with("GET /metrics ") {
                let mut text = broker.metrics_text();
                if !listeners_tls.is_empty() {
                    let named: Vec<_> = listeners_tls
                        .iter()
                        .map(|(n, t)| (*n, t.as_ref()))
                        .collect();
                    text.push_str(&strata_tls::metrics_text(&named));
                }
                ("200 OK", text)
            } else {
                ("404 Not Found", "try GET /metrics\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}

/// The gRPC code for each kind of error: the one place the broker's errors meet gRPC.
pub fn code(kind: ErrorKind) -> Code {
    use ErrorKind as K;
    match kind {
        K::UnknownTopic | K::UnknownPartition | K::UnknownGroup => Code::NotFound,
        K::TopicExists => Code::AlreadyExists,
        K::InvalidTopicName
        | K::InvalidPartitions
        | K::InvalidConfig
        | K::InvalidRequest
        | K::MessageTooLarge
        | K::InvalidTimestamp
        | K::CorruptMessage => Code::InvalidArgument,
        K::InvalidReplicationFactor
        | K::NonSequential
        | K::GroupNotEmpty
        | K::NotOwner
        | K::OutOfOrderSequence
        | K::InvalidProducerEpoch => Code::FailedPrecondition,
        K::NotAuthorized | K::TopicNotAuthorized | K::GroupNotAuthorized => Code::PermissionDenied,
        K::OffsetOutOfRange => Code::OutOfRange,
        K::StorageCorrupt => Code::DataLoss,
        K::Unavailable => Code::Unavailable,
        K::Internal => Code::Internal,
        // Distinct from NOT_FOUND (unknown topic): the member must rejoin.
        K::UnknownMember | K::FencedMemberEpoch => Code::Aborted,
        // Retriable after a metadata refresh; the status names the leader.
        K::NotLeader
        | K::UnknownLeaderEpoch
        | K::NotEnoughReplicas
        | K::NotEnoughReplicasAfterAppend
        | K::NotCoordinator
        | K::CoordinatorNotAvailable => Code::Unavailable,
        K::FencedLeaderEpoch => Code::FailedPrecondition,
        K::Timeout => Code::DeadlineExceeded,
    }
}

/// The status a client sees for `e`: its code and its message. Failures that point at
/// the broker itself (I/O, corrupt data) are logged here too.
pub fn status(e: BrokerError) -> Status {
    let code = code(e.kind());
    if matches!(code, Code::Internal | Code::DataLoss) {
        tracing::error!(error = %e, "request failed");
    }
    Status::new(code, e.to_string())
}
