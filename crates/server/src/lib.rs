//! The network edge of a Strata broker: the gRPC service ([`service`]), the one mapping
//! from the core's [`ErrorKind`] to gRPC status codes ([`status`]), and the `/metrics`
//! endpoint. [`run`] serves a broker until a shutdown signal, with its background work
//! running beside. Tests bind `127.0.0.1:0` and call [`run`] in-process.
//!
//! The broker core knows nothing of tonic: everything protocol-shaped lives here.

pub mod cluster;
pub mod service;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1::strata_server::StrataServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

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
    let background = strata_broker::tasks::Background::start(&broker);
    let metrics_task =
        metrics.map(|l| tokio::spawn(serve_metrics(l, broker.clone(), background.stopping())));
    let kafka_task =
        kafka.map(|(l, ctx)| tokio::spawn(strata_kafka::serve(l, ctx, background.stopping())));
    let (failed_tx, failed_rx) =
        tokio::sync::oneshot::channel::<strata_controller::ControllerError>();
    let duties = controller.map(|setup| {
        let node = node.clone();
        let broker = broker.clone();
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
    let service = StrataServer::new(Service::new(broker.clone(), node.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
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
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel();
    let b = broker.clone();
    let serve = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .max_frame_size(Some((1 << 20) - 1))
        .add_service(service)
        .add_optional_service(internal)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
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

/// A minimal HTTP/1.1 endpoint: `GET /metrics` answers the Prometheus text format.
async fn serve_metrics(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (mut conn, _) = tokio::select! {
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
        tokio::spawn(async move {
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
                ("200 OK", broker.metrics_text())
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
