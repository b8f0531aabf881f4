//! The `strata.v1.Strata` gRPC service: translates requests to [`Broker`] calls and
//! errors to status codes (through [`crate::status`], the one place that maps them).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use strata_proto::v1 as pb;
use strata_proto::v1::strata_server::Strata;
use strata_record::BatchIter;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use strata_broker::broker::{
    Broker, DEFAULT_PRODUCE_TIMEOUT, OffsetQuery, PartitionState, PlainRecord, ProduceOptions,
    Topic, fetch_size,
};
use strata_broker::error::BrokerError;
use strata_broker::groups::{Heartbeat, ResetTo};
use strata_controller::TopicRecord;

use strata_auth::{Operation, ResourceType};
use strata_broker::security::{Caller, Store};

use crate::auth::caller;
use crate::status;

/// Longest long-poll wait a fetch may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// acks=all produces of one stream waiting for their in-sync replicas at once.
const MAX_STREAM_IN_FLIGHT: usize = 1024;

pub struct Service {
    broker: Arc<Broker>,
    /// This node's controller part; never set for a single broker.
    node: Arc<crate::cluster::Node>,
}

impl Service {
    pub fn new(broker: Arc<Broker>, node: Arc<crate::cluster::Node>) -> Self {
        Self { broker, node }
    }

    /// The replica manager when this broker is a cluster member (an error while its
    /// cluster part is still starting); `None` for a single broker.
    /// The status for a failed group request: a broker that does not coordinate the
    /// group names the one that does (`strata-leader-address`), as for partitions.
    fn fail_group(&self, e: BrokerError) -> Status {
        match e {
            e @ BrokerError::NotCoordinator { .. } => fail(&self.node, e, 0),
            e => status(e),
        }
    }

    /// Where users and ACLs live, once `caller` may manage them (`op`: Alter to
    /// change, Describe to read).
    fn admin(&self, caller: &Caller, op: Operation) -> Result<Store<'_>, Status> {
        let store = self.store()?;
        store.check_admin(caller, op).map_err(status)?;
        Ok(store)
    }

    fn store(&self) -> Result<Store<'_>, Status> {
        store(&self.broker, &self.node)
    }

    fn cluster(&self) -> Result<Option<&Arc<strata_broker::replication::Member>>, Status> {
        cluster(&self.broker, &self.node)
    }

    /// Whether `caller` may do `op` on `(resource_type, name)`: PERMISSION_DENIED
    /// naming what it lacks if not.
    fn authorize(
        &self,
        caller: &Caller,
        op: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Result<(), Status> {
        authorize(&self.broker, &self.node, caller, op, resource_type, name)
    }

    fn may_create_topic(&self, caller: &Caller, name: &str) -> Result<(), Status> {
        let store = self.store()?;
        if store.allowed(
            caller,
            Operation::Create,
            ResourceType::Cluster,
            strata_auth::acl::CLUSTER_NAME,
        ) {
            return Ok(());
        }
        store
            .authorize(caller, Operation::Create, ResourceType::Topic, name)
            .map_err(status)
    }

    fn describe_cluster(&self) -> pb::DescribeClusterResponse {
        let config = self.broker.config();
        let Some(c) = self.node.get() else {
            if config.clustered() {
                // A cluster member whose controller part is still starting.
                return pb::DescribeClusterResponse {
                    brokers: Vec::new(),
                    controller_id: -1,
                    node_id: config.node_id as u64,
                    ..Default::default()
                };
            }
            // A single broker: itself, its own controller.
            let id = config.node_id as u64;
            return pb::DescribeClusterResponse {
                brokers: vec![pb::BrokerDescription {
                    id,
                    address: config.advertised().to_string(),
                    rack: config.rack.clone(),
                    state: "active".into(),
                    voter: true,
                }],
                controller_id: id as i64,
                raft_term: 0,
                node_id: id,
                ..Default::default()
            };
        };
        let voters = c.voter_ids();
        let state = c.state();
        let (under, offline) = state.unhealthy_partitions();
        pb::DescribeClusterResponse {
            under_replicated_partitions: under as u32,
            offline_partitions: offline as u32,
            brokers: state
                .brokers
                .values()
                .map(|b| pb::BrokerDescription {
                    id: b.id,
                    address: b.addr.clone(),
                    rack: b.rack.clone().unwrap_or_default(),
                    state: if b.fenced { "fenced" } else { "active" }.into(),
                    voter: voters.contains(&b.id),
                })
                .collect(),
            controller_id: c.leader().map_or(-1, |(id, _)| id as i64),
            raft_term: c.term(),
            node_id: c.node_id(),
        }
    }
}

fn plain_records(records: &[pb::Record]) -> Vec<PlainRecord> {
    records
        .iter()
        .map(|r| PlainRecord {
            key: r.key.clone(),
            value: r.value.clone(),
            timestamp_ms: r.timestamp_ms,
            headers: r
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
        })
        .collect()
}

/// How a produce request asks to be acknowledged.
fn produce_options(r: &pb::ProduceRequest) -> ProduceOptions {
    ProduceOptions {
        acks_all: r.acks == pb::Acks::All as i32,
        leader_epoch: r.leader_epoch,
        timeout: if r.timeout_ms == 0 {
            DEFAULT_PRODUCE_TIMEOUT
        } else {
            Duration::from_millis(r.timeout_ms as u64)
        },
    }
}

/// Appends a produce request; the future resolves to its answer once it may be given.
fn produce_one(
    broker: &Broker,
    r: pb::ProduceRequest,
) -> Result<impl Future<Output = Result<pb::ProduceResponse, BrokerError>> + use<>, BrokerError> {
    let records = plain_records(&r.records);
    let options = produce_options(&r);
    let appended = broker.append_produced(&r.topic, r.partition, r.batches, &records, options)?;
    let none = r.acks == pb::Acks::None as i32;
    let id = r.correlation_id;
    Ok(async move {
        let produced = appended.acknowledged().await?;
        Ok(pb::ProduceResponse {
            base_offset: if none { -1 } else { produced.base_offset },
            last_offset: if none { -1 } else { produced.last_offset },
            record_count: produced.record_count,
            log_start_offset: produced.log_start_offset,
            correlation_id: id,
            ..Default::default()
        })
    })
}

/// The bytes a produce request moves, for quotas (not counted with none set).
fn produce_bytes(broker: &Broker, r: &pb::ProduceRequest) -> u64 {
    if !broker.quotas().is_on() {
        return 0;
    }
    let records: usize = r
        .records
        .iter()
        .map(|x| x.key.as_ref().map_or(0, |k| k.len()) + x.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    (r.batches.len() + records) as u64
}

/// Records `bytes` against `caller`'s quota: how long to hold its answer back.
fn throttle(
    broker: &Broker,
    caller: &Caller,
    direction: strata_broker::quotas::Direction,
    bytes: u64,
) -> Duration {
    let t = broker.quotas().record(&caller.principal, direction, bytes);
    if !t.is_zero() {
        let m = broker.metrics();
        match direction {
            strata_broker::quotas::Direction::Produce => m.quota_produce_throttled.add(1),
            strata_broker::quotas::Direction::Fetch => m.quota_fetch_throttled.add(1),
        }
    }
    t
}

/// The streaming form of a failed produce: an answer with its status inside, the
/// leader it names, whether the batch may have been written (`appended`: the error came
/// after the append) and the error's kind.
fn produce_error(
    node: &crate::cluster::Node,
    id: u64,
    partition: u32,
    e: BrokerError,
    appended: bool,
) -> pb::ProduceResponse {
    let kind = format!("{:?}", e.kind());
    let st = fail(node, e, partition);
    let leader_address = st
        .metadata()
        .get("strata-leader-address")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    pb::ProduceResponse {
        base_offset: -1,
        last_offset: -1,
        correlation_id: id,
        error_code: st.code() as i32,
        error_message: st.message().to_string(),
        leader_address,
        outcome_unknown: appended,
        error_kind: kind,
        ..Default::default()
    }
}

/// The status for `e` (met serving `partition`), naming the leader (its id and
/// address, also as the `strata-leader-id` and `strata-leader-address` metadata) when
/// this broker is not it. A cluster member without a local replica of a topic the
/// metadata has answers not-leader too, as Kafka brokers do.
fn fail(node: &crate::cluster::Node, e: BrokerError, partition: u32) -> Status {
    let e = match node.member() {
        Some(m) => m.explain(e, partition),
        None => e,
    };
    let leader = match &e {
        BrokerError::NotLeader {
            leader: Some(id), ..
        }
        | BrokerError::NotCoordinator {
            leader: Some(id), ..
        } => Some(*id),
        _ => None,
    };
    let Some(id) = leader else {
        return status(e);
    };
    let addr = node.member().and_then(|m| m.address_of(id));
    let mut st = status(e);
    if let Some(addr) = addr {
        st = Status::new(st.code(), format!("{} (at {addr})", st.message()));
        if let Ok(v) = addr.parse() {
            st.metadata_mut().insert("strata-leader-address", v);
        }
    }
    if let Ok(v) = id.to_string().parse() {
        st.metadata_mut().insert("strata-leader-id", v);
    }
    st
}

fn next_offset(batches: &[u8], default: i64) -> i64 {
    let mut next = default;
    let mut pos = 0;
    while pos < batches.len() {
        match strata_record::BatchHeader::decode(&batches[pos..]) {
            Ok(h) => {
                next = h.next_offset();
                pos += h.total_len();
            }
            Err(_) => break,
        }
    }
    next
}

/// Decodes stored batches into plain records, skipping those before `from`.
fn decode_records(batches: &[u8], from: i64) -> Result<Vec<pb::Record>, Status> {
    let mut out = Vec::new();
    let batches = strata_record::compression::decompressed_batches(batches)
        .map_err(|e| Status::data_loss(e.to_string()))?;
    for b in BatchIter::new(&batches) {
        let b = b.map_err(|e| Status::data_loss(e.to_string()))?;
        for r in b.records() {
            let r = r.map_err(|e| Status::data_loss(e.to_string()))?;
            if r.offset < from {
                continue;
            }
            out.push(pb::Record {
                key: r.key.map(Bytes::copy_from_slice),
                value: r.value.map(Bytes::copy_from_slice),
                timestamp_ms: r.timestamp,
                headers: r
                    .headers()
                    .map(|(k, v)| pb::Header {
                        key: String::from_utf8_lossy(k).into_owned(),
                        value: Bytes::copy_from_slice(v.unwrap_or_default()),
                    })
                    .collect(),
                offset: r.offset,
            });
        }
    }
    Ok(out)
}

fn fetch_response(
    topic: &str,
    partition: u32,
    offset: i64,
    batches: Bytes,
    hw: i64,
    start: i64,
    format: i32,
) -> Result<pb::FetchResponse, Status> {
    let next = next_offset(&batches, offset);
    let (batches, records) = if format == pb::Format::Records as i32 {
        (Bytes::new(), decode_records(&batches, offset)?)
    } else {
        (batches, Vec::new())
    };
    Ok(pb::FetchResponse {
        topic: topic.to_string(),
        partition,
        batches,
        records,
        high_watermark: hw,
        log_start_offset: start,
        next_offset: next,
        throttle_time_ms: 0,
    })
}

fn pending_deletions(broker: &Broker, name: Option<&str>) -> Vec<pb::PendingDeletion> {
    broker
        .pending_deletions()
        .into_iter()
        .filter(|d| name.is_none_or(|n| d.tombstone.topic == n))
        .map(|d| pb::PendingDeletion {
            name: d.tombstone.topic,
            topic_id: d.tombstone.topic_id,
            deleted_ms: d.tombstone.deleted_ms,
            last_error: d.last_error.unwrap_or_default(),
            attempts: d.attempts,
        })
        .collect()
}

/// A topic as the cluster's metadata has it, with this broker's view of the partitions
/// it holds a replica of (sizes, offsets and tier state are the local replica's).
fn describe_record(broker: &Broker, t: &TopicRecord) -> pb::TopicDescription {
    let local = broker.topic(&t.name).ok().filter(|l| l.meta().id == t.id);
    // The local replica's where there is one (the offsets topic's are fixed by the
    // broker); the same from the metadata elsewhere.
    let config = local.as_ref().map_or_else(
        || {
            strata_broker::topic_config::EffectiveConfig::new(
                &broker.config().topic_defaults,
                &t.configs,
            )
        },
        |l| l.config(),
    );
    pb::TopicDescription {
        deleting: pending_deletions(broker, Some(&t.name)),
        topic_id: t.id.clone(),
        name: t.name.clone(),
        replication_factor: t.partitions.first().map_or(0, |p| p.replicas.len() as u32),
        configs: config_entries(&config),
        partitions: t
            .partitions
            .iter()
            .enumerate()
            .map(|(n, rec)| {
                let ids = |v: &[u64]| v.iter().map(|&id| id as u32).collect::<Vec<_>>();
                let mut d = local
                    .as_ref()
                    .and_then(|l| l.partitions().get(n))
                    .filter(|_| rec.replicas.contains(&(broker.config().node_id as u64)))
                    .map(|p| partition_description(&p.state(), 0))
                    .unwrap_or_default();
                d.partition = n as u32;
                d.leader = rec.leader.map_or(-1, |l| l as i32);
                d.replicas = ids(&rec.replicas);
                d.isr = ids(&rec.isr);
                d.leader_epoch = rec.leader_epoch;
                d.adding_replicas = ids(&rec.adding());
                d.removing_replicas = ids(&rec.removing());
                d
            })
            .collect(),
    }
}

fn config_entries(config: &strata_broker::topic_config::EffectiveConfig) -> Vec<pb::ConfigEntry> {
    config
        .entries()
        .map(|(name, value, is_default)| pb::ConfigEntry {
            name: name.to_string(),
            value: value.to_string(),
            is_default,
        })
        .collect()
}

fn partition_description(s: &PartitionState, node: u32) -> pb::PartitionDescription {
    pb::PartitionDescription {
        partition: s.partition,
        leader: node as i32,
        replicas: vec![node],
        isr: vec![node],
        log_start_offset: s.log_start_offset,
        high_watermark: s.high_watermark,
        size_bytes: s.size_bytes,
        segments: s.segments,
        leader_epoch: s.leader_epoch,
        local_log_start_offset: s.local_log_start_offset,
        remote_segments: s.remote_segments,
        remote_bytes: s.remote_bytes,
        upload_lag: s.upload_lag,
        tier_error: s.tier_error.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn describe(broker: &Broker, topic: &Topic) -> pb::TopicDescription {
    let meta = topic.meta();
    let node = broker.config().node_id;
    pb::TopicDescription {
        deleting: pending_deletions(broker, Some(&meta.name)),
        topic_id: meta.id.clone(),
        name: meta.name.clone(),
        replication_factor: meta.replication_factor,
        configs: config_entries(&topic.config()),
        partitions: topic
            .partitions()
            .iter()
            .map(|p| partition_description(&p.state(), node))
            .collect(),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Strata for Service {
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        Ok(Response::new(pb::WhoAmIResponse {
            principal: crate::auth::principal(&request).to_string(),
        }))
    }

    async fn upsert_user(
        &self,
        request: Request<pb::UpsertUserRequest>,
    ) -> Result<Response<pb::UpsertUserResponse>, Status> {
        let caller = caller(&request);
        let principal = &caller.principal;
        let r = request.into_inner();
        let m = mechanism(&r.mechanism)?;
        let credential = strata_auth::ScramCredential::from_salted_password(
            m,
            r.salt.to_vec(),
            &r.salted_password,
            r.iterations,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.admin(&caller, Operation::Alter)?
            .upsert_user(&r.name, m, credential)
            .await
            .map_err(status)?;
        tracing::info!(%principal, user = %r.name, mechanism = m.name(), "SCRAM credential set");
        Ok(Response::new(pb::UpsertUserResponse {}))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = caller(&request);
        let principal = &caller.principal;
        let r = request.into_inner();
        let m = mechanism(&r.mechanism)?;
        let deleted = self
            .admin(&caller, Operation::Alter)?
            .delete_user(&r.name, m)
            .await
            .map_err(status)?;
        if !deleted {
            return Err(Status::not_found(format!(
                "user {:?} has no {} credential; list users with `strata user list`",
                r.name,
                m.name()
            )));
        }
        tracing::info!(%principal, user = %r.name, mechanism = m.name(), "SCRAM credential removed");
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let users = self
            .admin(&caller(&request), Operation::Describe)?
            .users()
            .into_iter()
            .map(|(name, creds)| pb::UserDescription {
                name,
                credentials: creds
                    .into_iter()
                    .map(|(m, iterations)| pb::UserCredential {
                        mechanism: m.name().to_string(),
                        iterations,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListUsersResponse { users }))
    }

    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.authorize(&caller, Operation::Write, ResourceType::Topic, &r.topic)?;
        // Over the quota, the produce waits before it is appended: concurrent calls
        // each wait out their share of the debt, so they cannot outrun the rate.
        let held = throttle(
            &self.broker,
            &caller,
            strata_broker::quotas::Direction::Produce,
            produce_bytes(&self.broker, &r),
        );
        if !held.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(held) => {}
                _ = self.broker.closing() => return Err(status(BrokerError::ShuttingDown)),
            }
        }
        let partition = r.partition;
        let span = tracing::debug_span!("produce", topic = %r.topic, partition = r.partition);
        tokio::select! {
            _ = self.broker.wait_for_offload(&r.topic, r.partition).instrument(span.clone()) => {}
            _ = self.broker.closing() => return Err(status(BrokerError::ShuttingDown)),
        }
        let answer = span
            .in_scope(|| produce_one(&self.broker, r))
            .map_err(|e| fail(&self.node, e, partition))?;
        let mut resp = answer
            .instrument(span)
            .await
            .map_err(|e| fail(&self.node, e, partition))?;
        resp.throttle_time_ms = held.as_millis() as u32;
        Ok(Response::new(resp))
    }

    type ProduceStreamStream = BoxStream<pb::ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let caller = caller(&request);
        let mut inbound = request.into_inner();
        let broker = self.broker.clone();
        let node = self.node.clone();
        let (tx, rx) = mpsc::channel(128);
        tokio::spawn(
            async move {
                // Requests of one stream are appended in order; acks=all waits run side
                // by side, and answers leave in request order.
                let mut answers = futures::stream::FuturesOrdered::new();
                let mut open = true;
                while open || !answers.is_empty() {
                    let msg = tokio::select! {
                        Some(resp) = answers.next(), if !answers.is_empty() => {
                            if tx.send(Ok(resp)).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        m = inbound.next(), if open && answers.len() < MAX_STREAM_IN_FLIGHT => m,
                        _ = broker.closing() => {
                            let _ = tx.send(Err(status(BrokerError::ShuttingDown))).await;
                            break;
                        }
                    };
                    let r = match msg {
                        Some(Ok(r)) => r,
                        None => {
                            open = false;
                            continue;
                        }
                        Some(Err(status)) => {
                            tracing::debug!(%status, "produce stream ended by client");
                            open = false;
                            continue;
                        }
                    };
                    let (id, partition) = (r.correlation_id, r.partition);
                    // Waiting here holds back this producer only.
                    tokio::select! {
                        _ = broker.wait_for_offload(&r.topic, r.partition) => {}
                        _ = broker.closing() => {
                            let _ = tx.send(Err(status(BrokerError::ShuttingDown))).await;
                            break;
                        }
                    }
                    // Checked per request (ACLs may change while the stream is open).
                    let denied = match store(&broker, &node) {
                        Ok(s) => s
                            .authorize(&caller, Operation::Write, ResourceType::Topic, &r.topic)
                            .err(),
                        Err(st) => Some(BrokerError::Controller {
                            reason: st.message().to_string(),
                            retriable: true,
                        }),
                    };
                    if let Some(e) = denied {
                        answers.push_back(
                            futures::future::ready(produce_error(&node, id, partition, e, false))
                                .boxed(),
                        );
                        continue;
                    }
                    let held = throttle(
                        &broker,
                        &caller,
                        strata_broker::quotas::Direction::Produce,
                        produce_bytes(&broker, &r),
                    );
                    // Appended here, before the next request is read: order is kept.
                    match produce_one(&broker, r) {
                        Ok(answer) => {
                            let node = node.clone();
                            answers.push_back(
                                answer
                                    .map(move |r| {
                                        r.unwrap_or_else(|e| {
                                            produce_error(&node, id, partition, e, true)
                                        })
                                    })
                                    .boxed(),
                            );
                        }
                        Err(e) => answers.push_back(
                            futures::future::ready(produce_error(&node, id, partition, e, false))
                                .boxed(),
                        ),
                    }
                    // Over the quota: the stream reads nothing more until the throttle
                    // time is waited out (as Kafka mutes a connection).
                    if !held.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(held) => {}
                            _ = broker.closing() => {}
                        }
                    }
                }
            }
            .instrument(tracing::debug_span!("produce_stream")),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.authorize(&caller, Operation::Read, ResourceType::Topic, &r.topic)?;
        // A caller still in debt from earlier fetches waits it out before this one
        // reads (concurrent calls cannot outrun the rate).
        let owed = self
            .broker
            .quotas()
            .owed(&caller.principal, strata_broker::quotas::Direction::Fetch);
        if !owed.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(owed) => {}
                _ = self.broker.closing() => return Err(status(BrokerError::ShuttingDown)),
            }
        }
        let wait = Duration::from_millis(r.max_wait_ms as u64).min(MAX_WAIT);
        if r.leader_epoch.is_some() {
            self.broker
                .partition(&r.topic, r.partition)
                .and_then(|p| p.check_leader(r.leader_epoch))
                .map_err(|e| fail(&self.node, e, r.partition))?;
        }
        let f = self
            .broker
            .fetch(&r.topic, r.partition, r.offset, r.max_bytes as usize, r.min_bytes as usize, wait)
            .instrument(tracing::debug_span!("fetch", topic = %r.topic, partition = r.partition, offset = r.offset))
            .await.map_err(|e| fail(&self.node, e, r.partition))?;
        let held = throttle(
            &self.broker,
            &caller,
            strata_broker::quotas::Direction::Fetch,
            f.batches.len() as u64,
        );
        let mut resp = fetch_response(
            &r.topic,
            r.partition,
            r.offset,
            f.batches,
            f.high_watermark,
            f.log_start_offset,
            r.format,
        )?;
        if !held.is_zero() {
            resp.throttle_time_ms = held.as_millis() as u32;
            tokio::time::sleep(held).await;
        }
        Ok(Response::new(resp))
    }

    type SubscribeStream = BoxStream<pb::FetchResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.authorize(&caller, Operation::Read, ResourceType::Topic, &r.topic)?;
        let p = self
            .broker
            .partition(&r.topic, r.partition)
            .and_then(|p| p.check_leader(None).map(|()| p))
            .map_err(|e| fail(&self.node, e, r.partition))?;
        // A bad start offset is refused up front, as a status rather than a stream item.
        p.read_any(r.offset, 1).await.map_err(status)?;
        let node = self.node.clone();
        let max_bytes = fetch_size(r.max_bytes as usize);
        let metrics = self.broker.metrics().clone();
        let broker = self.broker.clone();
        // Two answers ahead of the reader: enough to keep the stream busy, bounded memory.
        let (tx, rx) = mpsc::channel(2);
        let span = tracing::debug_span!("subscribe", topic = %r.topic, partition = r.partition, offset = r.offset);
        tokio::spawn(
            async move {
                let mut offset = r.offset;
                loop {
                    // Read is checked per answer: revoking it ends the subscription.
                    if let Err(s) = authorize(
                        &broker,
                        &node,
                        &caller,
                        Operation::Read,
                        ResourceType::Topic,
                        &r.topic,
                    ) {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                    // Leadership moved: the subscriber goes to the new leader.
                    let read = match p.check_leader(None) {
                        Ok(()) => p.read_any(offset, max_bytes).await,
                        Err(e) => {
                            let _ = tx.send(Err(fail(&node, e, r.partition))).await;
                            return;
                        }
                    };
                    metrics.fetch_requests.add(1);
                    let (batches, hw, start) = match read {
                        Ok(x) => x,
                        Err(e) => {
                            metrics.fetch_errors.add(1);
                            let _ = tx.send(Err(status(e))).await;
                            return;
                        }
                    };
                    if batches.is_empty() {
                        tokio::select! {
                            _ = p.wait_beyond(offset, None) => {}
                            _ = tx.closed() => return,
                        }
                        if p.is_closed() {
                            let _ = tx.send(Err(status(BrokerError::ShuttingDown))).await;
                            return;
                        }
                        continue;
                    }
                    metrics.fetch_bytes.add(batches.len() as u64);
                    let held = throttle(
                        &broker,
                        &caller,
                        strata_broker::quotas::Direction::Fetch,
                        batches.len() as u64,
                    );
                    let mut resp =
                        fetch_response(&r.topic, r.partition, offset, batches, hw, start, r.format);
                    if let Ok(resp) = &mut resp {
                        offset = resp.next_offset;
                        resp.throttle_time_ms = held.as_millis() as u32;
                    }
                    let failed = resp.is_err();
                    if tx.send(resp).await.is_err() || failed {
                        return;
                    }
                    // Over the quota: the next answer waits out the throttle time.
                    if !held.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(held) => {}
                            _ = tx.closed() => return,
                        }
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.authorize(&caller, Operation::Describe, ResourceType::Topic, &r.topic)?;
        let query = match pb::OffsetSpec::try_from(r.spec) {
            Ok(pb::OffsetSpec::Earliest) => OffsetQuery::Earliest,
            Ok(pb::OffsetSpec::Latest) => OffsetQuery::Latest,
            Ok(pb::OffsetSpec::Timestamp) => OffsetQuery::Timestamp(r.timestamp_ms),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown offset spec {}",
                    r.spec
                )));
            }
        };
        let (offset, ts, start, hw) = self
            .broker
            .list_offsets(&r.topic, r.partition, query)
            .await
            .map_err(|e| fail(&self.node, e, r.partition))?;
        Ok(Response::new(pb::ListOffsetsResponse {
            offset,
            timestamp_ms: ts,
            log_start_offset: start,
            high_watermark: hw,
        }))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.may_create_topic(&caller, &r.name)?;
        let configs: BTreeMap<String, String> = r.configs.into_iter().collect();
        if let Some(m) = self.cluster()? {
            let t = m
                .create_topic(
                    &r.name,
                    r.partitions as i64,
                    r.replication_factor as i64,
                    configs,
                )
                .await
                .map_err(status)?;
            return Ok(Response::new(pb::CreateTopicResponse {
                topic: Some(describe_record(&self.broker, &t)),
            }));
        }
        let topic = self
            .broker
            .create_topic(
                &r.name,
                r.partitions as i64,
                r.replication_factor as i64,
                configs,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateTopicResponse {
            topic: Some(describe(&self.broker, &topic)),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let caller = caller(&request);
        let name = request.into_inner().name;
        self.authorize(&caller, Operation::Delete, ResourceType::Topic, &name)?;
        match self.cluster()? {
            Some(m) => m.delete_topic(&name).await.map_err(status)?,
            None => self.broker.delete_topic(&name).await.map_err(status)?,
        }
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        // Only the topics the caller may describe, as Kafka's Metadata.
        let caller = caller(&request);
        let store = self.store()?;
        let visible =
            |name: &str| store.allowed(&caller, Operation::Describe, ResourceType::Topic, name);
        if let Some(m) = self.cluster()? {
            let topics = m
                .topics()
                .into_iter()
                .filter(|t| visible(&t.name))
                .map(|t| pb::TopicSummary {
                    partitions: t.partitions.len() as u32,
                    replication_factor: t.partitions.first().map_or(0, |p| p.replicas.len() as u32),
                    name: t.name,
                    topic_id: t.id,
                })
                .collect();
            return Ok(Response::new(pb::ListTopicsResponse {
                topics,
                deleting: pending_deletions(&self.broker, None),
            }));
        }
        let topics = self
            .broker
            .list_topics()
            .into_iter()
            .filter(|t| visible(&t.name))
            .map(|m| pb::TopicSummary {
                name: m.name,
                partitions: m.partitions,
                replication_factor: m.replication_factor,
                topic_id: m.id,
            })
            .collect();
        Ok(Response::new(pb::ListTopicsResponse {
            topics,
            deleting: pending_deletions(&self.broker, None),
        }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let caller = caller(&request);
        let name = request.into_inner().name;
        self.authorize(&caller, Operation::Describe, ResourceType::Topic, &name)?;
        if let Some(m) = self.cluster()? {
            let t = m.topic(&name).map_err(status)?;
            return Ok(Response::new(describe_record(&self.broker, &t)));
        }
        let topic = self.broker.topic(&name).map_err(status)?;
        Ok(Response::new(describe(&self.broker, &topic)))
    }

    async fn alter_topic_configs(
        &self,
        request: Request<pb::AlterTopicConfigsRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.authorize(
            &caller,
            Operation::AlterConfigs,
            ResourceType::Topic,
            &r.name,
        )?;
        if let Some(m) = self.cluster()? {
            let t = m
                .alter_configs(&r.name, r.set.into_iter().collect(), r.delete)
                .await
                .map_err(status)?;
            return Ok(Response::new(describe_record(&self.broker, &t)));
        }
        let topic = self
            .broker
            .alter_configs(&r.name, r.set.into_iter().collect(), r.delete)
            .await
            .map_err(status)?;
        Ok(Response::new(describe(&self.broker, &topic)))
    }

    async fn create_partitions(
        &self,
        request: Request<pb::CreatePartitionsRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.authorize(&caller, Operation::Alter, ResourceType::Topic, &r.name)?;
        if let Some(m) = self.cluster()? {
            let t = m
                .create_partitions(&r.name, r.count, r.validate_only)
                .await
                .map_err(status)?;
            return Ok(Response::new(describe_record(&self.broker, &t)));
        }
        let topic = self
            .broker
            .create_partitions(&r.name, r.count, r.validate_only)
            .await
            .map_err(status)?;
        Ok(Response::new(describe(&self.broker, &topic)))
    }

    async fn reassign_partition(
        &self,
        request: Request<pb::ReassignPartitionRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.authorize(
            &caller,
            Operation::Alter,
            ResourceType::Cluster,
            strata_auth::acl::CLUSTER_NAME,
        )?;
        let Some(m) = self.cluster()? else {
            return Err(status(BrokerError::InvalidRequest(
                "this is a single broker: there is no other broker to move a partition to (start a cluster with --voters)".into(),
            )));
        };
        let replicas = r.replicas.iter().map(|&id| id as u64).collect::<Vec<_>>();
        let t = m
            .reassign(&r.topic, r.partition, &replicas, r.throttle_bytes_per_sec)
            .await
            .map_err(status)?;
        Ok(Response::new(describe_record(&self.broker, &t)))
    }

    async fn group_heartbeat(
        &self,
        request: Request<pb::GroupHeartbeatRequest>,
    ) -> Result<Response<pb::GroupHeartbeatResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.authorize(&caller, Operation::Read, ResourceType::Group, &r.group)?;
        let span = tracing::debug_span!("group_heartbeat", group = %r.group, member = %r.member_id);
        let owned = r
            .owned
            .iter()
            .flat_map(|tp| tp.partitions.iter().map(move |p| (tp.topic.clone(), *p)))
            .collect();
        let hb = Heartbeat {
            group: r.group,
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            topics: r.topics,
            owned,
            assignor: r.assignor,
            session_timeout_ms: r.session_timeout_ms,
            allow_unknown_topics: false,
        };
        let a = self
            .broker
            .group_heartbeat(hb)
            .instrument(span)
            .await
            .map_err(|e| self.fail_group(e))?;
        Ok(Response::new(pb::GroupHeartbeatResponse {
            member_id: a.member_id,
            member_epoch: a.member_epoch,
            heartbeat_interval_ms: a.heartbeat_interval_ms,
            assignment: topic_partitions(a.assignment),
        }))
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.authorize(&caller, Operation::Read, ResourceType::Group, &r.group)?;
        for t in r
            .offsets
            .iter()
            .map(|o| &o.topic)
            .collect::<std::collections::BTreeSet<_>>()
        {
            self.authorize(&caller, Operation::Read, ResourceType::Topic, t)?;
        }
        let offsets = r
            .offsets
            .into_iter()
            .map(|o| (o.topic, o.partition, o.offset, o.metadata))
            .collect();
        self.broker
            .commit_offsets(&r.group, &r.member_id, r.member_epoch, offsets)
            .await
            .map_err(|e| self.fail_group(e))?;
        Ok(Response::new(pb::CommitOffsetsResponse {}))
    }

    async fn fetch_committed_offsets(
        &self,
        request: Request<pb::FetchCommittedOffsetsRequest>,
    ) -> Result<Response<pb::FetchCommittedOffsetsResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.authorize(&caller, Operation::Describe, ResourceType::Group, &r.group)?;
        for tp in &r.partitions {
            self.authorize(&caller, Operation::Describe, ResourceType::Topic, &tp.topic)?;
        }
        let wanted = r
            .partitions
            .iter()
            .flat_map(|tp| tp.partitions.iter().map(move |p| (tp.topic.clone(), *p)))
            .collect();
        let mut offsets = self
            .broker
            .committed_offsets(&r.group, wanted)
            .await
            .map_err(|e| self.fail_group(e))?;
        // Asked for all: only the topics the caller may describe (as Kafka's OffsetFetch).
        let store = self.store()?;
        offsets
            .retain(|(t, ..)| store.allowed(&caller, Operation::Describe, ResourceType::Topic, t));
        Ok(Response::new(pb::FetchCommittedOffsetsResponse {
            offsets: offset_entries(offsets),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let caller = caller(&request);
        let store = self.store()?;
        let groups = self
            .broker
            .list_groups()
            .into_iter()
            .filter(|(g, _, _)| store.allowed(&caller, Operation::Describe, ResourceType::Group, g))
            .map(|(group, state, members)| pb::GroupSummary {
                group,
                state: state.to_string(),
                members: members as u32,
            })
            .collect();
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::GroupDescription>, Status> {
        let caller = caller(&request);
        let group = request.into_inner().group;
        self.authorize(&caller, Operation::Describe, ResourceType::Group, &group)?;
        let d = self
            .broker
            .describe_group(&group)
            .map_err(|e| self.fail_group(e))?;
        Ok(Response::new(pb::GroupDescription {
            group: d.group,
            state: d.state.to_string(),
            assignor: d.assignor,
            group_epoch: d.group_epoch,
            members: d
                .members
                .into_iter()
                .map(|m| pb::GroupMember {
                    member_id: m.member_id,
                    member_epoch: m.member_epoch,
                    topics: m.topics,
                    assignments: topic_partitions(m.assignment),
                })
                .collect(),
            // Offsets and lag only of the topics the caller may describe.
            offsets: d
                .offsets
                .into_iter()
                .filter(|o| {
                    self.store().is_ok_and(|s| {
                        s.allowed(&caller, Operation::Describe, ResourceType::Topic, &o.topic)
                    })
                })
                .map(|o| pb::PartitionLag {
                    topic: o.topic,
                    partition: o.partition,
                    committed_offset: o.committed_offset,
                    high_watermark: o.high_watermark,
                    lag: o.lag,
                    metadata: o.metadata,
                })
                .collect(),
        }))
    }

    async fn reset_group_offsets(
        &self,
        request: Request<pb::ResetGroupOffsetsRequest>,
    ) -> Result<Response<pb::ResetGroupOffsetsResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.authorize(&caller, Operation::Read, ResourceType::Group, &r.group)?;
        self.authorize(&caller, Operation::Read, ResourceType::Topic, &r.topic)?;
        let to = match (r.offset, pb::OffsetSpec::try_from(r.spec)) {
            (Some(o), _) => ResetTo::Offset(o),
            (None, Ok(pb::OffsetSpec::Earliest)) => ResetTo::Earliest,
            (None, Ok(pb::OffsetSpec::Latest)) => ResetTo::Latest,
            (None, Ok(pb::OffsetSpec::Timestamp)) => ResetTo::Timestamp(r.timestamp_ms),
            (None, Err(_)) => {
                return Err(Status::invalid_argument(format!(
                    "unknown offset spec {}",
                    r.spec
                )));
            }
        };
        let offsets = self
            .broker
            .reset_group_offsets(&r.group, &r.topic, to, r.partitions)
            .await
            .map_err(|e| self.fail_group(e))?;
        Ok(Response::new(pb::ResetGroupOffsetsResponse {
            offsets: offset_entries(offsets),
        }))
    }

    async fn describe_cluster(
        &self,
        _request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        Ok(Response::new(self.describe_cluster()))
    }

    async fn init_producer_id(
        &self,
        request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        // IdempotentWrite on the cluster, or Write on some topic (KIP-679).
        let caller = caller(&request);
        let store = self.store()?;
        if !store.allowed(
            &caller,
            Operation::IdempotentWrite,
            ResourceType::Cluster,
            strata_auth::acl::CLUSTER_NAME,
        ) && !store.allowed_any(&caller, Operation::Write, ResourceType::Topic)
        {
            return Err(Status::permission_denied(format!(
                "{} may not start an idempotent producer: that takes Write on some topic, or IdempotentWrite on the cluster",
                caller.principal
            )));
        }
        let (producer_id, producer_epoch) = self.broker.init_producer_id().await.map_err(status)?;
        Ok(Response::new(pb::InitProducerIdResponse {
            producer_id,
            producer_epoch: producer_epoch as i32,
        }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let caller = caller(&request);
        let group = request.into_inner().group;
        self.authorize(&caller, Operation::Delete, ResourceType::Group, &group)?;
        self.broker
            .delete_group(&group)
            .await
            .map_err(|e| self.fail_group(e))?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }

    async fn create_acls(
        &self,
        request: Request<pb::CreateAclsRequest>,
    ) -> Result<Response<pb::CreateAclsResponse>, Status> {
        let caller = caller(&request);
        let bindings = request
            .into_inner()
            .acls
            .iter()
            .map(acl_binding)
            .collect::<Result<Vec<_>, _>>()?;
        let store = self.admin(&caller, Operation::Alter)?;
        store.create_acls(bindings.clone()).await.map_err(status)?;
        for b in &bindings {
            tracing::info!(principal = %caller.principal, acl = %b, "ACL created");
        }
        Ok(Response::new(pb::CreateAclsResponse {}))
    }

    async fn list_acls(
        &self,
        request: Request<pb::ListAclsRequest>,
    ) -> Result<Response<pb::ListAclsResponse>, Status> {
        let caller = caller(&request);
        let filter = acl_filter(request.into_inner().filter.unwrap_or_default())?;
        let acls = self.admin(&caller, Operation::Describe)?.acls(&filter);
        Ok(Response::new(pb::ListAclsResponse {
            acls: acls.iter().map(acl_message).collect(),
        }))
    }

    async fn delete_acls(
        &self,
        request: Request<pb::DeleteAclsRequest>,
    ) -> Result<Response<pb::DeleteAclsResponse>, Status> {
        let caller = caller(&request);
        let filter = acl_filter(request.into_inner().filter.unwrap_or_default())?;
        let deleted = self
            .admin(&caller, Operation::Alter)?
            .delete_acls(vec![filter])
            .await
            .map_err(status)?;
        let deleted: Vec<_> = deleted.into_iter().flatten().collect();
        for b in &deleted {
            tracing::info!(principal = %caller.principal, acl = %b, "ACL deleted");
        }
        Ok(Response::new(pb::DeleteAclsResponse {
            deleted: deleted.iter().map(acl_message).collect(),
        }))
    }
}

/// The cluster member when this broker is one (an error while its cluster part is
/// still starting); `None` for a single broker.
fn cluster<'a>(
    broker: &Broker,
    node: &'a crate::cluster::Node,
) -> Result<Option<&'a Arc<strata_broker::replication::Member>>, Status> {
    if !broker.config().clustered() {
        return Ok(None);
    }
    match node.member() {
        // Until then its metadata may be older than what it answered before a
        // restart: it answers none rather than a stale one.
        Some(m) if m.controller().caught_up() => Ok(Some(m)),
        _ => Err(Status::unavailable(
            "this broker is still catching up with the cluster's metadata; retry shortly",
        )),
    }
}

fn store<'a>(broker: &'a Broker, node: &'a crate::cluster::Node) -> Result<Store<'a>, Status> {
    Ok(Store::new(broker, cluster(broker, node)?))
}

fn authorize(
    broker: &Broker,
    node: &crate::cluster::Node,
    caller: &Caller,
    op: Operation,
    resource_type: ResourceType,
    name: &str,
) -> Result<(), Status> {
    store(broker, node)?
        .authorize(caller, op, resource_type, name)
        .map_err(status)
}

fn acl_binding(a: &pb::Acl) -> Result<strata_auth::AclBinding, Status> {
    let bad = |e: strata_auth::AuthError| Status::invalid_argument(e.to_string());
    let b = strata_auth::AclBinding {
        resource_type: a.resource_type.parse().map_err(bad)?,
        name: a.name.clone(),
        pattern: if a.pattern.is_empty() {
            strata_auth::PatternType::Literal
        } else {
            a.pattern.parse().map_err(bad)?
        },
        principal: a.principal.clone(),
        host: if a.host.is_empty() {
            strata_auth::acl::WILDCARD.to_string()
        } else {
            a.host.clone()
        },
        operation: a.operation.parse().map_err(bad)?,
        permission: a.permission.parse().map_err(bad)?,
    };
    b.validate().map_err(bad)?;
    Ok(b)
}

fn acl_message(b: &strata_auth::AclBinding) -> pb::Acl {
    pb::Acl {
        resource_type: b.resource_type.name().to_string(),
        name: b.name.clone(),
        pattern: b.pattern.name().to_string(),
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: b.operation.name().to_string(),
        permission: b.permission.name().to_string(),
    }
}

fn acl_filter(f: pb::AclFilter) -> Result<strata_auth::AclFilter, Status> {
    let bad = |e: strata_auth::AuthError| Status::invalid_argument(e.to_string());
    Ok(strata_auth::AclFilter {
        resource_type: f
            .resource_type
            .map(|t| t.parse())
            .transpose()
            .map_err(bad)?,
        pattern: match f.pattern.as_deref() {
            None => None,
            Some(p) if p.eq_ignore_ascii_case("match") => {
                Some(strata_auth::acl::FilterPattern::Match)
            }
            Some(p) => Some(strata_auth::acl::FilterPattern::Exactly(
                p.parse().map_err(bad)?,
            )),
        },
        name: f.name,
        principal: f.principal,
        host: f.host,
        operation: f.operation.map(|o| o.parse()).transpose().map_err(bad)?,
        permission: f.permission.map(|p| p.parse()).transpose().map_err(bad)?,
    })
}

fn topic_partitions(map: BTreeMap<String, Vec<u32>>) -> Vec<pb::TopicPartitions> {
    map.into_iter()
        .map(|(topic, partitions)| pb::TopicPartitions { topic, partitions })
        .collect()
}

fn offset_entries(offsets: Vec<(String, u32, i64, String)>) -> Vec<pb::OffsetEntry> {
    offsets
        .into_iter()
        .map(|(topic, partition, offset, metadata)| pb::OffsetEntry {
            topic,
            partition,
            offset,
            metadata,
        })
        .collect()
}

/// A SCRAM mechanism named in a request.
fn mechanism(name: &str) -> Result<strata_auth::Mechanism, Status> {
    name.parse()
        .map_err(|e: strata_auth::AuthError| Status::invalid_argument(e.to_string()))
}
