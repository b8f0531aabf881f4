//! The Kafka listener: Kafka's wire protocol in front of the same broker core the gRPC
//! service uses, so Kafka clients produce, consume and administer topics unchanged.
//!
//! What it owns:
//! - [`conn`]: framing. Every frame is length-checked against
//!   [`KafkaConfig::max_request_bytes`] before it is read, and a frame too short for a
//!   request header, an unknown API key, a version out of range or a body that does not
//!   decode closes the connection with a log line (as a Kafka broker does); nothing a
//!   peer sends can panic the broker or make it reserve more than the frame it sent.
//! - [`apis`]: which APIs and versions this listener speaks (ApiVersions' table).
//! - [`handlers`]: one function per API, from decoded request to response.
//! - [`errors`]: the one mapping from the core's error kinds to Kafka's error codes.
//!
//! Invariants: records are never decoded on produce or fetch (batches pass through as
//! the bytes the producer built and the log stores, CRC-32C included); responses on a
//! connection go out in request order; tagged fields are written only when they differ
//! from their default (old librdkafka mis-skips them otherwise).

pub mod acls;
pub mod admin;
pub mod apis;
pub mod conn;
pub mod errors;
pub mod groups;
pub mod handlers;
pub mod sasl;
pub mod sessions;
pub mod view;

use std::sync::{Arc, OnceLock};

use strata_broker::Broker;
use strata_broker::error::BrokerError;
use strata_broker::replication::Member;
use tokio::net::TcpListener;

/// Kafka's default port.
pub const DEFAULT_KAFKA_LISTEN: &str = "127.0.0.1:9092";

/// Largest request frame accepted (Kafka's `socket.request.max.bytes` default).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 << 20;

/// How the listener presents itself.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// The `HOST:PORT` clients are told to connect to (Kafka's `advertised.listeners`).
    pub advertise: String,
    /// Largest request frame; a bigger one closes the connection.
    pub max_request_bytes: usize,
    /// Create a topic a producer or consumer asks metadata for, with the broker's
    /// defaults (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// SASL mechanisms offered; with any, every connection must authenticate first
    /// (SASL_PLAINTEXT, or SASL_SSL over TLS). Empty: a connection's principal is its
    /// client certificate's, or `User:ANONYMOUS`.
    pub sasl_mechanisms: Vec<strata_auth::SaslMechanism>,
}

impl KafkaConfig {
    /// The listener's settings from the broker's, advertised as `advertise`.
    pub fn new(
        advertise: String,
        config: &strata_broker::BrokerConfig,
    ) -> Result<Self, BrokerError> {
        Ok(Self {
            advertise,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            auto_create_topics: config.auto_create_topics_enable,
            sasl_mechanisms: config.sasl_mechanisms()?,
        })
    }
}

/// Who is on a connection, settled before its first request is handled.
#[derive(Debug)]
pub struct Session {
    pub caller: strata_broker::security::Caller,
    /// Until when the connection reads no request: a client over its quota (KIP-219:
    /// the answer goes out at once with `throttle_time_ms`, then the connection is
    /// muted for that long).
    muted_until: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

impl Session {
    pub fn new(caller: strata_broker::security::Caller) -> Self {
        Self {
            caller,
            muted_until: parking_lot::Mutex::new(None),
        }
    }

    /// Records `bytes` moved against the principal's quota; the throttle time to
    /// answer with (0 under the quota). A client of a version that knows throttle
    /// times (KIP-219) gets its connection muted for it; an older one gets its answer
    /// that much later (`delay`, for the handler to wait out).
    pub fn throttle(
        &self,
        ctx: &Context,
        direction: strata_broker::quotas::Direction,
        bytes: u64,
        kip219: bool,
    ) -> (i32, std::time::Duration) {
        let t = ctx
            .broker
            .quotas()
            .record(&self.caller.principal, direction, bytes);
        if t.is_zero() {
            return (0, t);
        }
        let m = ctx.broker.metrics();
        match direction {
            strata_broker::quotas::Direction::Produce => m.quota_produce_throttled.add(1),
            strata_broker::quotas::Direction::Fetch => m.quota_fetch_throttled.add(1),
        }
        let ms = t.as_millis().min(i32::MAX as u128) as i32;
        if !kip219 {
            return (ms, t);
        }
        let until = tokio::time::Instant::now() + t;
        let mut muted = self.muted_until.lock();
        if muted.is_none_or(|m| m < until) {
            *muted = Some(until);
        }
        (ms, std::time::Duration::ZERO)
    }

    /// When reading may go on, if the connection is muted now.
    pub(crate) fn muted(&self) -> Option<tokio::time::Instant> {
        let mut muted = self.muted_until.lock();
        match *muted {
            Some(t) if t > tokio::time::Instant::now() => Some(t),
            _ => {
                *muted = None;
                None
            }
        }
    }
}

/// What every connection shares.
pub struct Context {
    pub broker: Arc<Broker>,
    pub config: KafkaConfig,
    /// Fetch sessions (KIP-227), shared by every connection.
    pub sessions: sessions::FetchSessions,
    /// The advertised address, split for Metadata answers.
    pub(crate) host: String,
    pub(crate) port: i32,
    /// This broker's replica manager once its cluster part runs (never, for a single
    /// broker): the metadata answers come from its controller's state.
    member: Arc<OnceLock<Arc<Member>>>,
    /// Connections per client address (`max_connections_per_ip`).
    connections: Arc<strata_tls::ConnectionLimit>,
}

impl Context {
    pub fn new(
        broker: Arc<Broker>,
        config: KafkaConfig,
        member: Arc<OnceLock<Arc<Member>>>,
    ) -> Result<Arc<Self>, String> {
        let (host, port) = split_host_port(&config.advertise)?;
        let metrics = broker.metrics().clone();
        let connections = strata_tls::ConnectionLimit::counted(
            broker.config().max_connections_per_ip,
            move || metrics.connections_refused.add(1),
        );
        Ok(Arc::new(Self {
            connections,
            broker,
            config,
            sessions: Default::default(),
            host,
            port,
            member,
        }))
    }

    /// The cluster this broker is a member of: none for a single broker; refused as
    /// retriable while its cluster part starts or catches up with the metadata (it
    /// answers nothing rather than something stale).
    pub fn cluster(&self) -> Result<Option<&Arc<Member>>, BrokerError> {
        if !self.broker.config().clustered() {
            return Ok(None);
        }
        match self.member.get() {
            Some(m) if m.controller().caught_up() => Ok(Some(m)),
            _ => Err(BrokerError::Controller {
                reason:
                    "this broker is still catching up with the cluster's metadata; retry shortly"
                        .into(),
                retriable: true,
            }),
        }
    }

    /// `e`, met serving `partition`, as a client of this cluster should see it (see
    /// `Member::explain`: not-leader where another broker holds the partition).
    pub fn explain(&self, e: BrokerError, partition: u32) -> BrokerError {
        match self.member.get() {
            Some(m) => m.explain(e, partition),
            None => e,
        }
    }

    /// Where users and ACLs live (the controller, or a single broker's files).
    pub fn store(&self) -> Result<strata_broker::security::Store<'_>, BrokerError> {
        Ok(strata_broker::security::Store::new(
            &self.broker,
            self.cluster()?,
        ))
    }

    /// Where users and ACLs live, once `session` may manage them (`op`: Alter to
    /// change, Describe to read).
    pub fn admin(
        &self,
        session: &Session,
        op: strata_auth::Operation,
    ) -> Result<strata_broker::security::Store<'_>, BrokerError> {
        let store = self.store()?;
        store.check_admin(&session.caller, op)?;
        Ok(store)
    }

    /// Whether `session` may do `op` on `(resource_type, name)`; the error says why
    /// not (with the code for the resource), or that the metadata is not ready yet.
    pub fn authorize(
        &self,
        session: &Session,
        op: strata_auth::Operation,
        resource_type: strata_auth::ResourceType,
        name: &str,
    ) -> Result<(), BrokerError> {
        self.store()?
            .authorize(&session.caller, op, resource_type, name)
    }

    /// Whether `session` may do `op` on `(resource_type, name)`, for filtering a
    /// listing (not counted as a refusal; false while the metadata is not ready).
    pub fn may(
        &self,
        session: &Session,
        op: strata_auth::Operation,
        resource_type: strata_auth::ResourceType,
        name: &str,
    ) -> bool {
        self.store()
            .is_ok_and(|s| s.allowed(&session.caller, op, resource_type, name))
    }

    /// [`Context::authorize`] on a topic.
    pub fn authorize_topic(
        &self,
        session: &Session,
        op: strata_auth::Operation,
        topic: &str,
    ) -> Result<(), BrokerError> {
        self.authorize(session, op, strata_auth::ResourceType::Topic, topic)
    }

    /// [`Context::authorize`] on a group.
    pub fn authorize_group(
        &self,
        session: &Session,
        op: strata_auth::Operation,
        group: &str,
    ) -> Result<(), BrokerError> {
        self.authorize(session, op, strata_auth::ResourceType::Group, group)
    }

    /// Whether `session` may create topic `name`: Create on the cluster, or on the
    /// topic (as in Kafka).
    pub fn may_create_topic(&self, session: &Session, name: &str) -> Result<(), BrokerError> {
        if self
            .authorize_cluster(session, strata_auth::Operation::Create)
            .is_ok()
        {
            return Ok(());
        }
        self.authorize_topic(session, strata_auth::Operation::Create, name)
    }

    /// [`Context::authorize`] on the cluster.
    pub fn authorize_cluster(
        &self,
        session: &Session,
        op: strata_auth::Operation,
    ) -> Result<(), BrokerError> {
        self.authorize(
            session,
            op,
            strata_auth::ResourceType::Cluster,
            strata_auth::acl::CLUSTER_NAME,
        )
    }

    /// This broker's node id as Kafka clients see it.
    pub fn node_id(&self) -> i32 {
        self.broker.config().node_id as i32
    }
}

/// A string as the protocol carries it.
pub(crate) fn str(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_string())
}

/// `HOST:PORT` (or `[V6]:PORT`) into its parts.
pub fn split_host_port(addr: &str) -> Result<(String, i32), String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| {
        format!("Kafka advertised address {addr:?} is not HOST:PORT; set --kafka-advertise")
    })?;
    let port: u16 = port.parse().map_err(|_| {
        format!("Kafka advertised address {addr:?} has no valid port; set --kafka-advertise")
    })?;
    if host.is_empty() || port == 0 {
        return Err(format!(
            "Kafka advertised address {addr:?} is not one clients can connect to; set --kafka-advertise HOST:PORT"
        ));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), port as i32))
}

/// Accepts Kafka connections until `stop` turns true; each runs on its own task and
/// ends when the broker shuts down.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<strata_tls::ServerTls>>,
    ctx: Arc<Context>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // A cluster member takes Kafka connections once it has caught up with the
    // cluster's metadata (as a KRaft broker opens its listeners): before that it could
    // only answer "no topics", which a client subscribed by pattern takes as every
    // topic gone. Connections wait in the backlog meanwhile.
    while ctx.cluster().is_err() {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            _ = stop.changed() => return,
        }
    }
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "kafka accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            // Reaps connections that ended.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = stop.changed() => break,
        };
        let Some(permit) = ctx.connections.try_acquire(peer.ip()) else {
            tracing::debug!(%peer, max = ctx.connections.max(), "kafka connection refused: too many from this address (max_connections_per_ip)");
            continue;
        };
        ctx.broker.metrics().kafka_connections.add(1);
        let ctx = ctx.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            // Held until the connection ends.
            let _permit = permit;
            // The handshake runs on the connection's own task, within a deadline.
            let mut stopping = stop.clone();
            let shaken = tokio::select! {
                r = strata_tls::handshake(stream, tls.as_deref()) => r,
                // A handshake still running at shutdown is dropped, not waited for.
                _ = stopping.changed() => return,
            };
            match shaken {
                Ok(c) => conn::serve_connection(c, peer, ctx, stop).await,
                Err(e) => tracing::info!(
                    %peer,
                    error = %e,
                    "kafka: TLS handshake failed (a PLAINTEXT client on an SSL listener, or an untrusted certificate?)"
                ),
            }
        });
    }
    // Connections end at the stop once they have answered what they read; waiting for
    // them means none still appends (or holds the broker) when the broker closes its
    // logs. One that cannot finish its answers (a peer that stopped reading) is cut.
    let drained = tokio::time::timeout(CONNECTIONS_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "kafka connections still answering {CONNECTIONS_GRACE:?} after shutdown began; closing them"
        );
        conns.shutdown().await;
    }
}

/// How long a stopping listener waits for its connections to answer what they read.
const CONNECTIONS_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
