//! The Rust client for Strata.
//!
//! - [`Client`]: one connection to a broker, with the admin calls (topics, configs,
//!   offsets) and raw fetch/subscribe. Fetch, subscribe and list-offsets follow the
//!   partition's leader: a broker that does not lead it names the leader, and the
//!   client goes there (and remembers it) within the same call.
//! - [`Producer`]: builds batches in the log's own binary format per partition
//!   (batch size, linger), picks partitions (key hash or sticky), and pipelines them to
//!   the broker over one ordered stream with a bounded in-flight window.
//! - [`consumer`]: fetch loops and subscriptions that hand out batches and records.
//! - [`group::GroupConsumer`]: a member of a consumer group: the broker assigns it
//!   partitions, it reads them and commits its positions.
//!
//! The client shares the batch codec (`strata-record`) with the broker but never the
//! storage engine.

pub mod consumer;
mod error;
pub mod group;
pub mod partitioner;
mod producer;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

pub use error::{ClientError, Result};
pub use producer::{AckedBatch, Acks, Producer, ProducerConfig, ProducerStats};
pub use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A connection's stub: every call carries the client's bearer token, if it has one.
pub(crate) type Rpc = StrataClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer TOKEN` to every call; its Debug form leaves the token
/// out.
#[derive(Clone, Default)]
pub(crate) struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(..)"
        } else {
            "Bearer(None)"
        })
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut r: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

impl Bearer {
    fn new(token: Option<&str>) -> Result<Self> {
        let Some(token) = token else {
            return Ok(Self(None));
        };
        let mut v: tonic::metadata::MetadataValue<_> =
            format!("Bearer {}", token.trim()).parse().map_err(|_| {
                ClientError::Invalid(
                    "the token holds characters a header cannot carry; check --token (STRATA_TOKEN)"
                        .into(),
                )
            })?;
        v.set_sensitive(true);
        Ok(Self(Some(v)))
    }
}

/// The broker address clients use unless told otherwise.
pub const DEFAULT_BROKER: &str = "127.0.0.1:9292";
const MAX_MESSAGE: usize = 128 << 20;

/// A connection to one broker, and to the leaders it named. Cheap to clone; clones
/// share the connections.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Rpc,
    addr: String,
    leaders: Arc<parking_lot::Mutex<Leaders>>,
    /// How every connection of this client (to leaders and other brokers too) is made.
    tls: Option<Tls>,
    bearer: Bearer,
}

/// A client's TLS configuration; its Debug form leaves out the key it holds.
#[derive(Clone)]
struct Tls(ClientTlsConfig);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

/// How a client connects: over plain text (the default) or TLS.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    pub tls: Option<TlsOptions>,
    /// A bearer token (`strata token create`) sent with every call.
    pub token: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| ".."))
            .finish()
    }
}

/// TLS for a client: the CA that signed the brokers' certificates and, for brokers that
/// require client certificates, this client's certificate and key (PEM files).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Required: the brokers' certificates must chain to it.
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    /// The name the broker's certificate must carry [default: the address's host].
    pub domain: Option<String>,
}

impl TlsOptions {
    /// The channel configuration, with every file read now.
    fn config(&self) -> Result<ClientTlsConfig> {
        let read = |p: &std::path::Path, what: &str| {
            std::fs::read(p).map_err(|e| ClientError::Tls {
                reason: format!("cannot read the {what} {}: {e}", p.display()),
            })
        };
        let mut c = ClientTlsConfig::new();
        let Some(ca) = &self.ca else {
            return Err(ClientError::Tls {
                reason: "TLS needs the CA that signed the brokers' certificates: give --tls-ca"
                    .into(),
            });
        };
        c = c.ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                c = c.identity(Identity::from_pem(
                    read(cert, "client certificate")?,
                    read(key, "client key")?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(ClientError::Tls {
                    reason: "a client certificate needs its key and a key its certificate: give both --tls-cert and --tls-key".into(),
                });
            }
        }
        if let Some(d) = &self.domain {
            c = c.domain_name(d.clone());
        }
        Ok(c)
    }
}

/// Partition leaders (and group coordinators) learned from not-leader answers:
/// (address, connection) by [`Route`].
type Leaders = HashMap<Route, (String, Rpc)>;

/// What a request is about: a partition, or a group (served by its coordinator).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Route {
    Partition(String, u32),
    Group(String),
}

/// Tries a partition's request this many times, following a named leader in between.
/// A not-leader answer means nothing was done, so following it is always safe; the
/// hops after the second wait a little longer each (50 ms, 100 ms, ...: 1.4 s in all),
/// which rides out a leadership change that the named broker has not applied yet.
const LEADER_HOPS: usize = 8;

fn endpoint(addr: &str, tls: Option<&Tls>) -> Result<Endpoint> {
    if tls.is_some() && addr.starts_with("http://") {
        return Err(ClientError::InvalidAddress {
            addr: addr.to_string(),
            reason: "http:// means plain text, but TLS is asked for (--tls-ca)".into(),
        });
    }
    let uri = if addr.contains("://") {
        addr.to_string()
    } else if tls.is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let mut endpoint = Endpoint::from_shared(uri).map_err(|e| ClientError::InvalidAddress {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.0.clone())
            .map_err(|e| ClientError::Tls {
                reason: format!("{e} (for {addr})"),
            })?;
    }
    Ok(endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10)))
}

fn raw_client(channel: Channel, bearer: &Bearer) -> Rpc {
    StrataClient::with_interceptor(channel, bearer.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    Earliest,
    Latest,
    Offset(i64),
    /// The first record at or after this timestamp (ms); the log end if none.
    Timestamp(i64),
}

impl Client {
    /// Connects to `addr` (`HOST:PORT` or `http://HOST:PORT`) over plain text, failing
    /// fast if nothing listens there.
    pub async fn connect(addr: &str) -> Result<Self> {
        Self::connect_with(addr, &ConnectOptions::default()).await
    }

    /// Connects to `addr` as `options` say (TLS, client certificate).
    pub async fn connect_with(addr: &str, options: &ConnectOptions) -> Result<Self> {
        let tls = options.tls.as_ref().map(TlsOptions::config).transpose()?;
        let bearer = Bearer::new(options.token.as_deref())?;
        Self::open(addr, tls.map(Tls), bearer).await
    }

    /// Connects to another broker the way this client connects.
    pub async fn sibling(&self, addr: &str) -> Result<Self> {
        Self::open(addr, self.tls.clone(), self.bearer.clone()).await
    }

    async fn open(addr: &str, tls: Option<Tls>, bearer: Bearer) -> Result<Self> {
        let channel = endpoint(addr, tls.as_ref())?.connect().await.map_err(|e| {
            ClientError::Unreachable {
                addr: addr.to_string(),
                reason: error::root_cause(&e),
            }
        })?;
        Ok(Self {
            inner: raw_client(channel, &bearer),
            addr: addr.to_string(),
            leaders: Default::default(),
            tls,
            bearer,
        })
    }

    /// The connection for `route`: its leader's when one was named.
    fn for_route(&self, route: &Route) -> (String, Rpc) {
        self.leaders
            .lock()
            .get(route)
            .cloned()
            .unwrap_or_else(|| (self.addr.clone(), self.inner.clone()))
    }

    /// Remembers the leader a not-leader answer names; whether it named one.
    fn follow_leader(&self, route: &Route, s: &tonic::Status) -> bool {
        let Some(addr) = s
            .metadata()
            .get("strata-leader-address")
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Ok(endpoint) = endpoint(addr, self.tls.as_ref()) else {
            return false;
        };
        let raw = raw_client(endpoint.connect_lazy(), &self.bearer);
        self.leaders
            .lock()
            .insert(route.clone(), (addr.to_string(), raw));
        true
    }

    /// Runs a partition's request on its leader, following a not-leader answer.
    async fn on_leader<T, F, Fut>(&self, topic: &str, partition: u32, call: F) -> Result<T>
    where
        F: Fn(Rpc) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.routed(Route::Partition(topic.to_string(), partition), call)
            .await
    }

    /// Runs a group's request on its coordinator, following a not-coordinator answer.
    async fn on_coordinator<T, F, Fut>(&self, group: &str, call: F) -> Result<T>
    where
        F: Fn(Rpc) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.routed(Route::Group(group.to_string()), call).await
    }

    /// Runs `call` where `route` was last sent, following a named leader; a learned
    /// broker that cannot be reached is forgotten and the connected one asked again.
    async fn routed<T, F, Fut>(&self, route: Route, call: F) -> Result<T>
    where
        F: Fn(Rpc) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut hops = 0;
        loop {
            let (addr, raw) = self.for_route(&route);
            match call(raw).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => {
                    hops += 1;
                    if hops < LEADER_HOPS && self.follow_leader(&route, &s) {
                        if hops > 1 {
                            let wait = 50 * (hops as u64 - 1);
                            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                        }
                        continue;
                    }
                    if hops < LEADER_HOPS
                        && addr != self.addr
                        && s.code() == tonic::Code::Unavailable
                    {
                        self.leaders.lock().remove(&route);
                        continue;
                    }
                    return Err(ClientError::from_status(&addr, s));
                }
            }
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn raw(&self) -> Rpc {
        self.inner.clone()
    }

    pub(crate) fn err(&self, s: tonic::Status) -> ClientError {
        ClientError::from_status(&self.addr, s)
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<pb::TopicDescription> {
        let r = self
            .raw()
            .create_topic(pb::CreateTopicRequest {
                name: name.to_string(),
                partitions,
                replication_factor,
                configs: configs.into_iter().collect(),
            })
            .await
            .map_err(|s| self.err(s))?;
        r.into_inner()
            .topic
            .ok_or_else(|| ClientError::Invalid("broker sent no topic description".into()))
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.raw()
            .delete_topic(pb::DeleteTopicRequest {
                name: name.to_string(),
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(())
    }

    pub async fn list_topics(&self) -> Result<Vec<pb::TopicSummary>> {
        Ok(self.list_topics_full().await?.topics)
    }

    /// The topics, and the deleted topics whose objects are still being removed.
    pub async fn list_topics_full(&self) -> Result<pb::ListTopicsResponse> {
        let r = self
            .raw()
            .list_topics(pb::ListTopicsRequest {})
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner())
    }

    pub async fn describe_topic(&self, name: &str) -> Result<pb::TopicDescription> {
        let r = self
            .raw()
            .describe_topic(pb::DescribeTopicRequest {
                name: name.to_string(),
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner())
    }

    pub async fn alter_configs(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<pb::TopicDescription> {
        let r = self
            .raw()
            .alter_topic_configs(pb::AlterTopicConfigsRequest {
                name: name.to_string(),
                set: set.into_iter().collect(),
                delete,
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner())
    }

    /// Raises a topic's partition count to `count`; the new partitions start empty.
    pub async fn create_partitions(&self, name: &str, count: i64) -> Result<pb::TopicDescription> {
        let r = self
            .raw()
            .create_partitions(pb::CreatePartitionsRequest {
                name: name.to_string(),
                count,
                validate_only: false,
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner())
    }

    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: pb::OffsetSpec,
        timestamp_ms: i64,
    ) -> Result<pb::ListOffsetsResponse> {
        self.on_leader(topic, partition, |mut raw| {
            let req = pb::ListOffsetsRequest {
                topic: topic.to_string(),
                partition,
                spec: spec as i32,
                timestamp_ms,
            };
            async move { raw.list_offsets(req).await }
        })
        .await
    }

    /// Turns a [`StartOffset`] into a concrete offset.
    pub async fn resolve_offset(
        &self,
        topic: &str,
        partition: u32,
        start: StartOffset,
    ) -> Result<i64> {
        let (spec, ts) = match start {
            StartOffset::Offset(o) => return Ok(o),
            StartOffset::Earliest => (pb::OffsetSpec::Earliest, 0),
            StartOffset::Latest => (pb::OffsetSpec::Latest, 0),
            StartOffset::Timestamp(t) => (pb::OffsetSpec::Timestamp, t),
        };
        let r = self.list_offsets(topic, partition, spec, ts).await?;
        Ok(if r.offset < 0 {
            r.high_watermark
        } else {
            r.offset
        })
    }

    /// One fetch; waits up to `max_wait` for at least `min_bytes`.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: u32,
        min_bytes: u32,
        max_wait: Duration,
    ) -> Result<pb::FetchResponse> {
        self.on_leader(topic, partition, |mut raw| {
            let req = pb::FetchRequest {
                topic: topic.to_string(),
                partition,
                offset,
                max_bytes,
                min_bytes,
                max_wait_ms: max_wait.as_millis() as u32,
                format: pb::Format::Batches as i32,
                leader_epoch: None,
            };
            async move { raw.fetch(req).await }
        })
        .await
    }

    /// A server stream of batches from `offset` that follows the tail.
    pub async fn subscribe(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: u32,
    ) -> Result<tonic::Streaming<pb::FetchResponse>> {
        self.on_leader(topic, partition, |mut raw| {
            let req = pb::SubscribeRequest {
                topic: topic.to_string(),
                partition,
                offset,
                max_bytes,
                format: pb::Format::Batches as i32,
            };
            async move { raw.subscribe(req).await }
        })
        .await
    }

    pub async fn group_heartbeat(
        &self,
        req: pb::GroupHeartbeatRequest,
    ) -> Result<pb::GroupHeartbeatResponse> {
        let group = req.group.clone();
        self.on_coordinator(&group, |mut raw| {
            let req = req.clone();
            async move { raw.group_heartbeat(req).await }
        })
        .await
    }

    /// Commits offsets for a group; `member_id` empty commits outside membership (only
    /// allowed while the group has no live members). `member_epoch` is the epoch the
    /// member's last heartbeat answer gave it (0 outside membership).
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<pb::OffsetEntry>,
    ) -> Result<()> {
        let req = pb::CommitOffsetsRequest {
            group: group.to_string(),
            member_id: member_id.to_string(),
            member_epoch,
            offsets,
        };
        self.on_coordinator(group, |mut raw| {
            let req = req.clone();
            async move { raw.commit_offsets(req).await }
        })
        .await?;
        Ok(())
    }

    /// Committed offsets of `group` for `partitions` (all committed ones if empty).
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: Vec<pb::TopicPartitions>,
    ) -> Result<Vec<pb::OffsetEntry>> {
        let req = pb::FetchCommittedOffsetsRequest {
            group: group.to_string(),
            partitions,
        };
        let r = self
            .on_coordinator(group, |mut raw| {
                let req = req.clone();
                async move { raw.fetch_committed_offsets(req).await }
            })
            .await?;
        Ok(r.offsets)
    }

    /// The cluster's brokers and controller as the connected broker knows them.
    /// Moves partition `partition` of `topic` to `replicas` (the first preferred as
    /// leader); each added replica copies the log at most `throttle_bytes_per_sec`
    /// (0: unthrottled). Answers once the move is under way.
    pub async fn reassign_partition(
        &self,
        topic: &str,
        partition: u32,
        replicas: &[u32],
        throttle_bytes_per_sec: u64,
    ) -> Result<pb::TopicDescription> {
        let r = self
            .raw()
            .reassign_partition(pb::ReassignPartitionRequest {
                topic: topic.to_string(),
                partition,
                replicas: replicas.to_vec(),
                throttle_bytes_per_sec,
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner())
    }

    /// A producer id and epoch for an idempotent producer.
    pub async fn init_producer_id(&self) -> Result<(i64, i16)> {
        let r = self
            .raw()
            .init_producer_id(pb::InitProducerIdRequest {})
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        Ok((r.producer_id, r.producer_epoch as i16))
    }

    /// Who the broker takes this client for (`User:NAME`, or `User:ANONYMOUS`).
    pub async fn who_am_i(&self) -> Result<String> {
        let r = self
            .raw()
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner().principal)
    }

    /// Sets `user`'s SCRAM password for `mechanism`. The password is salted here; only
    /// the salted form goes to the broker, which keeps only keys derived from it.
    pub async fn upsert_user(
        &self,
        user: &str,
        mechanism: strata_auth::Mechanism,
        password: &str,
        iterations: u32,
    ) -> Result<()> {
        strata_auth::scram::check_iterations(iterations)
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        if password.is_empty() {
            return Err(ClientError::Invalid("the password is empty".into()));
        }
        let salt = strata_auth::scram::new_salt();
        let salted = mechanism.salt_password(password.as_bytes(), &salt, iterations);
        self.raw()
            .upsert_user(pb::UpsertUserRequest {
                name: user.to_string(),
                mechanism: mechanism.name().to_string(),
                iterations,
                salt: salt.into(),
                salted_password: salted.into(),
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(())
    }

    /// Removes `user`'s SCRAM credential for `mechanism`.
    pub async fn delete_user(&self, user: &str, mechanism: strata_auth::Mechanism) -> Result<()> {
        self.raw()
            .delete_user(pb::DeleteUserRequest {
                name: user.to_string(),
                mechanism: mechanism.name().to_string(),
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(())
    }

    /// Every SCRAM user: names, mechanisms, iteration counts.
    pub async fn list_users(&self) -> Result<Vec<pb::UserDescription>> {
        let r = self
            .raw()
            .list_users(pb::ListUsersRequest {})
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner().users)
    }

    /// Adds ACL bindings (all or none: a malformed one refuses them all).
    pub async fn create_acls(&self, acls: Vec<pb::Acl>) -> Result<()> {
        self.raw()
            .create_acls(pb::CreateAclsRequest { acls })
            .await
            .map_err(|s| self.err(s))?;
        Ok(())
    }

    /// The ACL bindings `filter` names.
    pub async fn list_acls(&self, filter: pb::AclFilter) -> Result<Vec<pb::Acl>> {
        let r = self
            .raw()
            .list_acls(pb::ListAclsRequest {
                filter: Some(filter),
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner().acls)
    }

    /// Removes the ACL bindings `filter` names; returns them.
    pub async fn delete_acls(&self, filter: pb::AclFilter) -> Result<Vec<pb::Acl>> {
        let r = self
            .raw()
            .delete_acls(pb::DeleteAclsRequest {
                filter: Some(filter),
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner().deleted)
    }

    pub async fn describe_cluster(&self) -> Result<pb::DescribeClusterResponse> {
        let r = self
            .raw()
            .describe_cluster(pb::DescribeClusterRequest {})
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner())
    }

    /// Every group, by name. A broker lists the groups it coordinates, so in a
    /// cluster each active broker is asked (a single broker is the whole list).
    pub async fn list_groups(&self) -> Result<Vec<pb::GroupSummary>> {
        let r = self
            .raw()
            .list_groups(pb::ListGroupsRequest {})
            .await
            .map_err(|s| self.err(s))?;
        let mut all: BTreeMap<String, pb::GroupSummary> = r
            .into_inner()
            .groups
            .into_iter()
            .map(|g| (g.group.clone(), g))
            .collect();
        let cluster = self.describe_cluster().await?;
        for b in cluster
            .brokers
            .iter()
            .filter(|b| b.state == "active" && b.id != cluster.node_id)
        {
            let other = self.sibling(&b.address).await?;
            let r = other
                .raw()
                .list_groups(pb::ListGroupsRequest {})
                .await
                .map_err(|s| other.err(s))?;
            for g in r.into_inner().groups {
                all.entry(g.group.clone()).or_insert(g);
            }
        }
        Ok(all.into_values().collect())
    }

    pub async fn describe_group(&self, group: &str) -> Result<pb::GroupDescription> {
        let req = pb::DescribeGroupRequest {
            group: group.to_string(),
        };
        self.on_coordinator(group, |mut raw| {
            let req = req.clone();
            async move { raw.describe_group(req).await }
        })
        .await
    }

    pub async fn reset_group_offsets(
        &self,
        req: pb::ResetGroupOffsetsRequest,
    ) -> Result<Vec<pb::OffsetEntry>> {
        let group = req.group.clone();
        let r = self
            .on_coordinator(&group, |mut raw| {
                let req = req.clone();
                async move { raw.reset_group_offsets(req).await }
            })
            .await?;
        Ok(r.offsets)
    }

    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let req = pb::DeleteGroupRequest {
            group: group.to_string(),
        };
        self.on_coordinator(group, |mut raw| {
            let req = req.clone();
            async move { raw.delete_group(req).await }
        })
        .await?;
        Ok(())
    }
}
