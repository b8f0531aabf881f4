//! One function per API: a decoded request in, its response frame out. Each answers
//! every topic and partition it was asked about, with a Kafka error code per partition
//! where one failed; none closes the connection for a failure of the broker's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use strata_auth::{Operation, ResourceType};
use strata_broker::broker::{Fetched, OffsetQuery, ProduceOptions, Produced};
use strata_broker::error::BrokerError;
use strata_broker::groups::OFFSETS_TOPIC;
use uuid::Uuid;

use crate::acls;
use crate::admin;
use crate::apis::SUPPORTED;
use crate::conn::{Answer, Header, Reply, Request, ready, response};
use crate::errors;
use crate::groups;
use crate::sessions;
use crate::view::{BrokerView, TopicView};
use crate::{Context, Session, str};

/// Longest a fetch waits for `min.bytes`, whatever it asks for.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(60);

/// Starts answering a decoded request.
pub fn dispatch(ctx: &Arc<Context>, session: &Arc<Session>, h: Header, r: Request) -> Reply {
    let ctx = ctx.clone();
    let session = session.clone();
    let (id, v) = (h.correlation_id, h.version);
    match r {
        Request::ApiVersions(_) => ready(response(id, v, &api_versions(0))),
        Request::Metadata(r) => Box::pin(async move {
            Answer::Frame(response(id, v, &metadata(&ctx, &session, v, r).await))
        }),
        Request::Produce(r) => produce(&ctx, &session, h, r),
        Request::Fetch(r) => {
            Box::pin(
                async move { Answer::Frame(response(id, v, &fetch(&ctx, &session, v, r).await)) },
            )
        }
        Request::ListOffsets(r) => Box::pin(async move {
            Answer::Frame(response(id, v, &list_offsets(&ctx, &session, v, r).await))
        }),
        Request::InitProducerId(r) => Box::pin(async move {
            Answer::Frame(response(id, v, &init_producer_id(&ctx, &session, r).await))
        }),
        Request::FindCoordinator(r) => ready(response(
            id,
            v,
            &groups::find_coordinator(&ctx, &session, v, r),
        )),
        Request::JoinGroup(r) => {
            let client = h.client_id.unwrap_or_default();
            Box::pin(async move {
                Answer::Frame(response(
                    id,
                    v,
                    &groups::join_group(&ctx, &session, v, &client, r).await,
                ))
            })
        }
        Request::SyncGroup(r) => Box::pin(async move {
            Answer::Frame(response(
                id,
                v,
                &groups::sync_group(&ctx, &session, v, r).await,
            ))
        }),
        Request::Heartbeat(r) => ready(response(id, v, &groups::heartbeat(&ctx, &session, r))),
        Request::LeaveGroup(r) => {
            ready(response(id, v, &groups::leave_group(&ctx, &session, v, r)))
        }
        Request::OffsetCommit(r) => Box::pin(async move {
            Answer::Frame(response(
                id,
                v,
                &groups::offset_commit(&ctx, &session, r).await,
            ))
        }),
        Request::OffsetFetch(r) => Box::pin(async move {
            Answer::Frame(response(
                id,
                v,
                &groups::offset_fetch(&ctx, &session, v, r).await,
            ))
        }),
        Request::ListGroups(r) => {
            ready(response(id, v, &groups::list_groups(&ctx, &session, v, r)))
        }
        Request::DescribeGroups(r) => {
            ready(response(id, v, &groups::describe_groups(&ctx, &session, r)))
        }
        Request::DeleteGroups(r) => Box::pin(async move {
            Answer::Frame(response(
                id,
                v,
                &groups::delete_groups(&ctx, &session, r).await,
            ))
        }),
        Request::ConsumerGroupHeartbeat(r) => Box::pin(async move {
            Answer::Frame(response(
                id,
                v,
                &groups::consumer_heartbeat(&ctx, &session, r).await,
            ))
        }),
        Request::ConsumerGroupDescribe(r) => ready(response(
            id,
            v,
            &groups::consumer_describe(&ctx, &session, r),
        )),
        Request::CreateTopics(r) => Box::pin(async move {
            Answer::Frame(response(
                id,
                v,
                &admin::create_topics(&ctx, &session, v, r).await,
            ))
        }),
        Request::DeleteTopics(r) => Box::pin(async move {
            Answer::Frame(response(
                id,
                v,
                &admin::delete_topics(&ctx, &session, v, r).await,
            ))
        }),
        Request::CreatePartitions(r) => Box::pin(async move {
            Answer::Frame(response(
                id,
                v,
                &admin::create_partitions(&ctx, &session, r).await,
            ))
        }),
        Request::DescribeConfigs(r) => {
            ready(response(id, v, &admin::describe_configs(&ctx, &session, r)))
        }
        Request::IncrementalAlterConfigs(r) => Box::pin(async move {
            Answer::Frame(response(
                id,
                v,
                &admin::incremental_alter_configs(&ctx, &session, r).await,
            ))
        }),
        Request::DescribeCluster(r) => {
            ready(response(id, v, &admin::describe_cluster(&ctx, &session, r)))
        }
        Request::OffsetForLeaderEpoch(r) => {
            ready(response(id, v, &offset_for_leader_epoch(&ctx, &session, r)))
        }
        Request::CreateAcls(r) => Box::pin(async move {
            Answer::Frame(response(id, v, &acls::create_acls(&ctx, &session, r).await))
        }),
        Request::DescribeAcls(r) => ready(response(id, v, &acls::describe_acls(&ctx, &session, r))),
        Request::DeleteAcls(r) => Box::pin(async move {
            Answer::Frame(response(id, v, &acls::delete_acls(&ctx, &session, r).await))
        }),
        // Authentication is over (or this listener has none): Kafka answers a SASL
        // request now with ILLEGAL_SASL_STATE.
        Request::SaslHandshake(_) => {
            let mut resp = SaslHandshakeResponse::default();
            resp.error_code = ResponseError::IllegalSaslState.code();
            resp.mechanisms = ctx
                .config
                .sasl_mechanisms
                .iter()
                .map(|m| str(m.name()))
                .collect();
            ready(response(id, v, &resp))
        }
        Request::SaslAuthenticate(_) => {
            let mut resp = SaslAuthenticateResponse::default();
            resp.error_code = ResponseError::IllegalSaslState.code();
            resp.error_message = Some(str(if ctx.config.sasl_mechanisms.is_empty() {
                "this listener does not use SASL; connect with PLAINTEXT or SSL"
            } else {
                "this connection has already authenticated"
            }));
            ready(response(id, v, &resp))
        }
        Request::DescribeUserScramCredentials(r) => ready(response(
            id,
            v,
            &admin::describe_user_scram_credentials(&ctx, &session, r),
        )),
        Request::AlterUserScramCredentials(r) => Box::pin(async move {
            Answer::Frame(response(
                id,
                v,
                &admin::alter_user_scram_credentials(&ctx, &session, r).await,
            ))
        }),
    }
}

/// A topic id as Kafka carries it: Strata stores the UUID's bytes in URL-safe base64.
pub fn topic_uuid(id: &str) -> Uuid {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .ok()
        .and_then(|b| Uuid::from_slice(&b).ok())
        .unwrap_or(Uuid::nil())
}

// ---- ApiVersions ----

/// The table of served APIs, with `error_code`.
pub(crate) fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error_code;
    r.api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            let mut a = api_versions_response::ApiVersion::default();
            a.api_key = key as i16;
            a.min_version = min;
            a.max_version = max;
            a
        })
        .collect();
    r
}

/// KIP-511: a client asking ApiVersions in a version newer than ours gets a v0 answer
/// with UNSUPPORTED_VERSION and the table, and asks again in one we speak.
pub fn api_versions_unsupported(correlation_id: i32) -> Bytes {
    response(
        correlation_id,
        0,
        &api_versions(ResponseError::UnsupportedVersion.code()),
    )
}

// ---- Metadata ----

async fn metadata(
    ctx: &Context,
    session: &Session,
    version: i16,
    r: MetadataRequest,
) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    // Any broker takes admin requests (a cluster member hands them to the controller).
    resp.controller_id = BrokerId(ctx.node_id());
    let view = match ctx.view() {
        Ok(v) => v,
        Err(e) => {
            // Not caught up: itself, and every topic asked for retriable.
            resp.brokers = vec![broker_metadata(&ctx.self_view())];
            for w in r.topics.unwrap_or_default() {
                let mut t = metadata_response::MetadataResponseTopic::default();
                t.name = w.name;
                t.topic_id = w.topic_id;
                t.error_code = errors::code(&e);
                resp.topics.push(t);
            }
            return resp;
        }
    };
    resp.cluster_id = Some(str(&ctx.cluster_id(&view)));
    resp.brokers = ctx.brokers(&view).iter().map(broker_metadata).collect();
    let listed: std::collections::BTreeSet<i32> =
        resp.brokers.iter().map(|b| b.node_id.0).collect();
    // The controller named must be one the client can reach (this broker, unless it is
    // fenced or runs no listener as far as the metadata says).
    if !listed.contains(&ctx.node_id()) {
        resp.controller_id = BrokerId(listed.first().copied().unwrap_or(-1));
    }
    // v0: an empty list asks for every topic; later versions say so with null.
    let wanted = match r.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let auto_create = ctx.config.auto_create_topics && (version < 4 || r.allow_auto_topic_creation);
    match wanted {
        None => {
            // Only the topics the caller may describe, as in Kafka.
            for t in ctx.topics(&view) {
                if ctx.may(session, Operation::Describe, ResourceType::Topic, &t.name) {
                    resp.topics.push(topic_metadata(&t, &listed));
                }
            }
        }
        Some(wanted) => {
            let names = wanted
                .iter()
                .any(|w| w.name.is_none())
                .then(|| ctx.topic_names(&view));
            for w in wanted {
                let found = match &w.name {
                    // Without Describe, whether the topic exists is not told either.
                    Some(name) => match ctx
                        .authorize_topic(session, Operation::Describe, name)
                        .and_then(|()| ctx.topic(&view, name))
                    {
                        Err(BrokerError::UnknownTopic(_))
                            if auto_create && name.as_str() != OFFSETS_TOPIC =>
                        {
                            match ctx.may_create_topic(session, name) {
                                Ok(()) => auto_create_topic(ctx, name).await,
                                Err(e) => Err(e),
                            }
                        }
                        found => found,
                    },
                    None => names
                        .as_ref()
                        .and_then(|n| n.get(&w.topic_id))
                        .ok_or_else(|| BrokerError::UnknownTopic(w.topic_id.to_string()))
                        .and_then(|name| {
                            ctx.authorize_topic(session, Operation::Describe, name)?;
                            ctx.topic(&view, name)
                        }),
                };
                match found {
                    Ok(t) => resp.topics.push(topic_metadata(&t, &listed)),
                    Err(e) => {
                        let mut t = metadata_response::MetadataResponseTopic::default();
                        t.name = w.name.clone();
                        t.topic_id = w.topic_id;
                        t.error_code = if w.name.is_none()
                            && !matches!(e, BrokerError::TopicNotAuthorized(_))
                        {
                            ResponseError::UnknownTopicId.code()
                        } else {
                            errors::code(&e)
                        };
                        resp.topics.push(t);
                    }
                }
            }
        }
    }
    resp
}

fn broker_metadata(b: &BrokerView) -> metadata_response::MetadataResponseBroker {
    let mut m = metadata_response::MetadataResponseBroker::default();
    m.node_id = BrokerId(b.id);
    m.host = str(&b.host);
    m.port = b.port;
    m.rack = b.rack.as_deref().map(str);
    m
}

async fn auto_create_topic(ctx: &Context, name: &str) -> Result<TopicView, BrokerError> {
    match ctx.create_topic(name, 1, 0, BTreeMap::new()).await {
        Ok(t) => {
            tracing::info!(
                topic = name,
                "created topic on first use (auto.create.topics.enable)"
            );
            Ok(t)
        }
        // Another request created it meanwhile.
        Err(BrokerError::TopicExists(_)) => ctx.topic(&ctx.view()?, name),
        Err(e) => Err(e),
    }
}

/// A topic's metadata; a partition whose leader is not among `listed` (fenced, or
/// without a Kafka listener) answers LEADER_NOT_AVAILABLE, as one without a leader.
fn topic_metadata(
    t: &TopicView,
    listed: &std::collections::BTreeSet<i32>,
) -> metadata_response::MetadataResponseTopic {
    let ids = |v: &[i32]| v.iter().map(|&id| BrokerId(id)).collect::<Vec<_>>();
    let mut m = metadata_response::MetadataResponseTopic::default();
    m.name = Some(TopicName(str(&t.name)));
    m.topic_id = topic_uuid(&t.id);
    m.is_internal = t.name == OFFSETS_TOPIC;
    m.partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(n, p)| {
            let mut m = metadata_response::MetadataResponsePartition::default();
            m.partition_index = n as i32;
            let leader = p.leader.filter(|l| listed.contains(l));
            m.leader_id = BrokerId(leader.unwrap_or(-1));
            if leader.is_none() {
                m.error_code = ResponseError::LeaderNotAvailable.code();
            }
            m.leader_epoch = p.leader_epoch;
            m.replica_nodes = ids(&p.replicas);
            m.isr_nodes = ids(&p.isr);
            m.offline_replicas = ids(&p.offline);
            m
        })
        .collect();
    m
}

// ---- Produce ----

fn produce(ctx: &Arc<Context>, session: &Session, h: Header, r: ProduceRequest) -> Reply {
    let (id, version) = (h.correlation_id, h.version);
    let acks = r.acks;
    let options = ProduceOptions {
        acks_all: acks == -1,
        leader_epoch: None,
        timeout: Duration::from_millis(r.timeout_ms.max(0) as u64),
    };
    let refuse = if !matches!(acks, -1..=1) {
        Some((
            ResponseError::InvalidRequiredAcks.code(),
            format!("acks={acks} is not one of 0, 1, -1 (all)"),
        ))
    } else if r.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
        Some((
            ResponseError::InvalidRequest.code(),
            "transactions are not supported by this broker; produce without transactional.id"
                .to_string(),
        ))
    } else {
        None
    };
    // The request's record bytes count against the principal's quota (KIP-219 from v6).
    let bytes: usize = r
        .topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .map(|p| p.records.as_ref().map_or(0, |b| b.len()))
        .sum();
    let (throttle_ms, delay) = session.throttle(
        ctx,
        strata_broker::quotas::Direction::Produce,
        bytes as u64,
        version >= 6,
    );
    // Append every partition now, in request order; wait for the acknowledgements
    // together afterwards.
    let mut waits = Vec::new();
    for t in r.topic_data {
        let name = t.name.0.to_string();
        // Checked once per topic, not per partition.
        let denied = ctx
            .authorize_topic(session, Operation::Write, &name)
            .err()
            .map(|e| (errors::code(&e), e.to_string()));
        for p in t.partition_data {
            let index = p.index;
            let answer = match refuse.as_ref().or(denied.as_ref()) {
                Some((code, msg)) => {
                    futures::future::ready(Err::<Produced, (i16, String)>((*code, msg.clone())))
                        .boxed()
                }
                None => {
                    let records = p.records.unwrap_or_default();
                    // A negative index reads as one far out of range: refused as unknown.
                    match ctx
                        .broker
                        .append_produced(&name, index as u32, records, &[], options)
                    {
                        Ok(appended) => appended
                            .acknowledged()
                            .map(|r| r.map_err(|e| (errors::code(&e), errors::message(&e))))
                            .boxed(),
                        Err(e) => {
                            let e = ctx.explain(e, index as u32);
                            futures::future::ready(Err((errors::code(&e), errors::message(&e))))
                                .boxed()
                        }
                    }
                }
            };
            waits.push((name.clone(), index, answer));
        }
    }
    Box::pin(async move {
        let mut by_topic: Vec<produce_response::TopicProduceResponse> = Vec::new();
        let mut failed = None;
        for (name, index, answer) in waits {
            let mut pr = produce_response::PartitionProduceResponse::default();
            pr.index = index;
            pr.log_append_time_ms = -1;
            match answer.await {
                Ok(p) => {
                    pr.base_offset = p.base_offset;
                    pr.log_start_offset = p.log_start_offset;
                }
                Err((code, msg)) => {
                    pr.error_code = code;
                    pr.base_offset = -1;
                    if version >= 8 {
                        pr.error_message = Some(str(&msg));
                    }
                    failed.get_or_insert((name.clone(), index, msg));
                }
            }
            match by_topic.last_mut() {
                Some(t) if t.name.0.as_str() == name => t.partition_responses.push(pr),
                _ => {
                    let mut t = produce_response::TopicProduceResponse::default();
                    t.name = TopicName(str(&name));
                    t.partition_responses.push(pr);
                    by_topic.push(t);
                }
            }
        }
        if acks == 0 {
            // No answer is sent; a failure closes the connection so the producer
            // learns of it (as Kafka does).
            return match failed {
                Some((topic, partition, msg)) => Answer::Close(format!(
                    "an acks=0 produce to {topic}-{partition} failed: {msg}"
                )),
                None => Answer::Nothing,
            };
        }
        let mut resp = ProduceResponse::default();
        resp.responses = by_topic;
        resp.throttle_time_ms = throttle_ms;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Answer::Frame(response(id, version, &resp))
    })
}

// ---- Fetch ----

struct Want {
    topic: Option<String>,
    topic_id: Uuid,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    leader_epoch: i32,
}

async fn fetch(ctx: &Context, caller: &Session, version: i16, r: FetchRequest) -> FetchResponse {
    let mut resp = FetchResponse::default();
    // v13 names topics by id: resolved once per request.
    let names =
        (version >= 13).then(|| ctx.view().map(|v| ctx.topic_names(&v)).unwrap_or_default());
    let name_of = |topic: &TopicName, id: Uuid| match &names {
        Some(names) => names.get(&id).cloned(),
        None => Some(topic.0.to_string()),
    };
    let mut asked = Vec::new();
    for t in &r.topics {
        let name = name_of(&t.topic, t.topic_id);
        for p in &t.partitions {
            asked.push(Want {
                topic: name.clone(),
                topic_id: t.topic_id,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                leader_epoch: p.current_leader_epoch,
            });
        }
    }
    let as_parts = |wants: &[Want]| -> BTreeMap<sessions::Key, sessions::Part> {
        wants
            .iter()
            .filter_map(|w| {
                let part = sessions::Part {
                    topic_id: w.topic_id,
                    offset: w.offset,
                    max_bytes: w.max_bytes,
                    leader_epoch: w.leader_epoch,
                    sent: None,
                };
                Some(((w.topic.clone()?, w.partition), part))
            })
            .collect()
    };
    // KIP-227: epoch -1 fetches without a session (closing the one named), 0 starts a
    // new one with these partitions, more continues one with only what changed.
    let (wants, session) = if version < 7 || r.session_epoch < 0 {
        if version >= 7 && r.session_id != 0 {
            ctx.sessions.close(r.session_id);
        }
        (asked, None)
    } else if r.session_epoch == 0 {
        if r.session_id != 0 {
            ctx.sessions.close(r.session_id);
        }
        let id = ctx.sessions.create(as_parts(&asked));
        (asked, Some((id, false)))
    } else {
        let forgotten: Vec<sessions::Key> = r
            .forgotten_topics_data
            .iter()
            .filter_map(|t| Some((name_of(&t.topic, t.topic_id)?, t)))
            .flat_map(|(name, t)| t.partitions.iter().map(move |&p| (name.clone(), p)))
            .collect();
        match ctx
            .sessions
            .update(r.session_id, r.session_epoch, as_parts(&asked), &forgotten)
        {
            Ok(parts) => {
                let wants = parts
                    .into_iter()
                    .map(|((topic, partition), p)| Want {
                        topic: Some(topic),
                        topic_id: p.topic_id,
                        partition,
                        offset: p.offset,
                        max_bytes: p.max_bytes,
                        leader_epoch: p.leader_epoch,
                    })
                    .collect();
                (wants, Some((r.session_id, true)))
            }
            Err(sessions::SessionError::NotFound) => {
                resp.error_code = ResponseError::FetchSessionIdNotFound.code();
                return resp;
            }
            Err(sessions::SessionError::WrongEpoch) => {
                resp.error_code = ResponseError::InvalidFetchSessionEpoch.code();
                return resp;
            }
        }
    };
    resp.session_id = session.map_or(0, |(id, _)| id);
    // A session's partitions come in one fixed order: each request starts one further
    // along, so partitions late in it are not starved when the first fill `max.bytes`
    // (a client without a session orders its partitions itself).
    let mut wants = wants;
    if session.is_some() && !wants.is_empty() {
        let n = wants.len();
        wants.rotate_left(r.session_epoch.max(0) as usize % n);
    }
    // Read on each topic, checked once per request (a session's partitions included):
    // the code each refused topic's partitions answer (not authorized, or retriable
    // while a cluster member catches up).
    let mut checked: BTreeMap<&str, Option<i16>> = BTreeMap::new();
    for w in &wants {
        if let Some(t) = &w.topic
            && !checked.contains_key(t.as_str())
        {
            let refused = ctx
                .authorize_topic(caller, Operation::Read, t)
                .err()
                .map(|e| errors::code(&e));
            checked.insert(t, refused);
        }
    }
    let denied: BTreeMap<String, i16> = checked
        .into_iter()
        .filter_map(|(t, code)| Some((t.to_string(), code?)))
        .collect();
    let max_wait = Duration::from_millis(r.max_wait_ms.max(0) as u64).min(MAX_FETCH_WAIT);
    let deadline = tokio::time::Instant::now() + max_wait;
    let min_bytes = r.min_bytes.max(0) as usize;
    let max_bytes = if r.max_bytes <= 0 {
        usize::MAX
    } else {
        r.max_bytes as usize
    };
    loop {
        let (parts, bytes, failed) = read_partitions(ctx, &wants, &denied, max_bytes).await;
        if bytes >= min_bytes || failed || tokio::time::Instant::now() >= deadline {
            resp.responses = assemble(ctx, version, &wants, parts, session);
            // What it fetched counts against the principal's quota (KIP-219 from v8).
            let (ms, delay) = caller.throttle(
                ctx,
                strata_broker::quotas::Direction::Fetch,
                bytes as u64,
                version >= 8,
            );
            resp.throttle_time_ms = ms;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            return resp;
        }
        // Wait until a partition's high watermark moves past what this pass saw (or
        // past the offset asked for), or the deadline: never a busy loop over data
        // that is there but short of min.bytes.
        let waits: Vec<_> = wants
            .iter()
            .zip(&parts)
            .filter_map(|(w, pd)| {
                let p = ctx
                    .broker
                    .partition(w.topic.as_deref()?, w.partition as u32)
                    .ok()?;
                let seen = w.offset.max(pd.high_watermark);
                Some(async move { p.wait_beyond(seen, Some(deadline)).await }.boxed())
            })
            .collect();
        if waits.is_empty() {
            tokio::time::sleep_until(deadline).await;
        } else {
            futures::future::select_all(waits).await;
        }
    }
}

/// One pass over the wanted partitions, without waiting: an answer per partition (in
/// `wants` order), their record bytes, and whether any failed (an error is answered
/// at once).
async fn read_partitions(
    ctx: &Context,
    wants: &[Want],
    denied: &BTreeMap<String, i16>,
    max_bytes: usize,
) -> (Vec<fetch_response::PartitionData>, usize, bool) {
    let mut out = Vec::with_capacity(wants.len());
    let mut total = 0usize;
    let mut failed = false;
    for w in wants {
        let mut pd = fetch_response::PartitionData::default();
        pd.partition_index = w.partition;
        pd.high_watermark = -1;
        pd.last_stable_offset = -1;
        pd.log_start_offset = -1;
        match &w.topic {
            None => {
                pd.error_code = ResponseError::UnknownTopicId.code();
                failed = true;
            }
            Some(topic) if denied.contains_key(topic) => {
                pd.error_code = denied[topic];
                failed = true;
            }
            // Once the answer is full, the rest are answered without records (their
            // positions unchanged, the client asks again).
            Some(topic) if total >= max_bytes => {
                if let Ok(p) = ctx.broker.partition(topic, w.partition as u32) {
                    pd.high_watermark = p.high_watermark();
                    pd.last_stable_offset = pd.high_watermark;
                }
                pd.records = Some(Bytes::new());
            }
            Some(topic) => {
                let budget = (w.max_bytes.max(1) as usize).min(max_bytes - total);
                match fetch_one(ctx, topic, w, budget).await {
                    Ok(f) => {
                        total += f.batches.len();
                        pd.high_watermark = f.high_watermark;
                        pd.last_stable_offset = f.high_watermark;
                        pd.log_start_offset = f.log_start_offset;
                        pd.records = Some(f.batches);
                    }
                    Err(e) => {
                        pd.error_code = errors::code(&ctx.explain(e, w.partition as u32));
                        failed = true;
                    }
                }
            }
        }
        out.push(pd);
    }
    (out, total, failed)
}

/// The answer's topics from per-partition answers. Within a session, what is
/// answered is recorded, and an incremental answer leaves out partitions with no news.
fn assemble(
    ctx: &Context,
    version: i16,
    wants: &[Want],
    parts: Vec<fetch_response::PartitionData>,
    session: Option<(i32, bool)>,
) -> Vec<fetch_response::FetchableTopicResponse> {
    let mut topics: Vec<fetch_response::FetchableTopicResponse> = Vec::new();
    for (w, pd) in wants.iter().zip(parts) {
        if let (Some((id, incremental)), Some(topic)) = (session, &w.topic) {
            let key = (topic.clone(), w.partition);
            let news = ctx
                .sessions
                .answered(id, &key, pd.high_watermark, pd.log_start_offset);
            let has_records = pd.records.as_ref().is_some_and(|r| !r.is_empty());
            if incremental && !news && !has_records && pd.error_code == 0 {
                continue;
            }
        }
        let same = topics.last().is_some_and(|t| {
            if version >= 13 {
                t.topic_id == w.topic_id
            } else {
                w.topic.as_deref() == Some(t.topic.0.as_str())
            }
        });
        if !same {
            let mut t = fetch_response::FetchableTopicResponse::default();
            if version >= 13 {
                t.topic_id = w.topic_id;
            } else {
                t.topic = TopicName(str(w.topic.as_deref().unwrap_or_default()));
            }
            topics.push(t);
        }
        topics.last_mut().expect("pushed").partitions.push(pd);
    }
    topics
}

async fn fetch_one(
    ctx: &Context,
    topic: &str,
    w: &Want,
    budget: usize,
) -> Result<Fetched, BrokerError> {
    let partition = w.partition as u32;
    let p = ctx.broker.partition(topic, partition)?;
    // (v13 names the topic by id: a local replica of an older topic of the same name,
    // not yet replaced, must not answer for the new one.)
    if !w.topic_id.is_nil() && topic_uuid(&p.topic_id) != w.topic_id {
        return Err(BrokerError::UnknownTopic(topic.to_string()));
    }
    if w.leader_epoch >= 0 {
        p.check_leader(Some(w.leader_epoch))?;
    }
    ctx.broker
        .fetch(topic, partition, w.offset, budget, 1, Duration::ZERO)
        .await
}

// ---- ListOffsets ----

async fn list_offsets(
    ctx: &Context,
    session: &Session,
    version: i16,
    r: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for t in r.topics {
        let name = t.name.0.to_string();
        let mut tr = list_offsets_response::ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        let denied = ctx
            .authorize_topic(session, Operation::Describe, &name)
            .err()
            .map(|e| errors::code(&e));
        for p in t.partitions {
            let mut pr = list_offsets_response::ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            pr.leader_epoch = -1;
            let query = match p.timestamp {
                -2 => Some(OffsetQuery::Earliest),
                -1 => Some(OffsetQuery::Latest),
                -3 if version >= 7 => Some(OffsetQuery::MaxTimestamp),
                -4 if version >= 8 => Some(OffsetQuery::EarliestLocal),
                -5 if version >= 9 => Some(OffsetQuery::LatestTiered),
                t if t >= 0 => Some(OffsetQuery::Timestamp(t)),
                _ => None,
            };
            let answer = match query {
                _ if denied.is_some() => Err(denied.unwrap_or_default()),
                None => Err(ResponseError::InvalidRequest.code()),
                Some(q) => list_one(ctx, &name, p.partition_index, p.current_leader_epoch, q)
                    .await
                    .map_err(|e| errors::code(&ctx.explain(e, p.partition_index as u32))),
            };
            match answer {
                Ok((offset, ts, epoch)) => {
                    pr.offset = offset;
                    pr.timestamp = ts;
                    if version >= 4 {
                        pr.leader_epoch = epoch;
                    }
                }
                Err(code) => pr.error_code = code,
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

async fn list_one(
    ctx: &Context,
    topic: &str,
    partition: i32,
    leader_epoch: i32,
    query: OffsetQuery,
) -> Result<(i64, i64, i32), BrokerError> {
    let index = partition as u32;
    let p = ctx.broker.partition(topic, index)?;
    p.check_leader((leader_epoch >= 0).then_some(leader_epoch))?;
    let (offset, ts, _, _) = ctx.broker.list_offsets(topic, index, query).await?;
    Ok((offset, ts, p.leader_epoch()))
}

// ---- OffsetForLeaderEpoch ----

fn offset_for_leader_epoch(
    ctx: &Context,
    session: &Session,
    r: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in r.topics {
        let mut tr = offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default();
        for p in t.partitions {
            let mut out = offset_for_leader_epoch_response::EpochEndOffset::default();
            out.partition = p.partition;
            out.leader_epoch = -1;
            out.end_offset = -1;
            let found = ctx
                .authorize_topic(session, Operation::Describe, &t.topic.0)
                .and_then(|()| ctx.broker.partition(&t.topic.0, p.partition as u32))
                .and_then(|part| part.end_offset_for_epoch(p.current_leader_epoch, p.leader_epoch));
            match found {
                Ok(Some((epoch, end))) => {
                    out.leader_epoch = epoch;
                    out.end_offset = end;
                }
                // Every epoch here is newer: Kafka's UNDEFINED_EPOCH and offset.
                Ok(None) => {}
                Err(e) => out.error_code = errors::code(&ctx.explain(e, p.partition as u32)),
            }
            tr.partitions.push(out);
        }
        tr.topic = t.topic;
        resp.topics.push(tr);
    }
    resp
}

// ---- InitProducerId ----

async fn init_producer_id(
    ctx: &Context,
    session: &Session,
    r: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if r.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
        tracing::info!(
            "InitProducerId with a transactional.id refused: transactions are not supported"
        );
        resp.error_code = ResponseError::UnsupportedVersion.code();
        return resp;
    }
    // An idempotent producer: IdempotentWrite on the cluster, or Write on some topic
    // (KIP-679).
    let allowed = ctx.store().map(|s| {
        s.allowed(
            &session.caller,
            Operation::IdempotentWrite,
            strata_auth::ResourceType::Cluster,
            strata_auth::acl::CLUSTER_NAME,
        ) || s.allowed_any(
            &session.caller,
            Operation::Write,
            strata_auth::ResourceType::Topic,
        )
    });
    match allowed {
        Ok(true) => {}
        Ok(false) => {
            resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
            return resp;
        }
        Err(e) => {
            resp.error_code = errors::code(&e);
            return resp;
        }
    }
    match ctx.broker.init_producer_id().await {
        Ok((id, epoch)) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = epoch;
        }
        Err(e) => resp.error_code = errors::code(&e),
    }
    resp
}
