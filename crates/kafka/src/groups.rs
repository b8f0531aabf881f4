//! Group APIs: FindCoordinator, the classic protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, carried by `strata_groups::classic`), committed offsets (OffsetCommit,
//! OffsetFetch) and group administration (ListGroups, DescribeGroups, DeleteGroups).
//! Offsets are the coordinator's whatever protocol a member speaks: a group's offsets
//! committed through Kafka are the ones gRPC members read, and the other way round.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strata_broker::error::BrokerError;
use strata_broker::groups::{OFFSETS_TOPIC, partition_for};
use strata_groups::classic::{ClassicError, Join};

use crate::errors;
use crate::view::{BrokerView, View};
use strata_auth::{Operation, ResourceType};

use crate::{Context, Session, str};

/// Kafka's code for a classic group refusal.
pub fn classic_code(e: &ClassicError) -> i16 {
    use ClassicError as C;
    match e {
        C::UnknownMemberId => ResponseError::UnknownMemberId,
        C::IllegalGeneration => ResponseError::IllegalGeneration,
        C::RebalanceInProgress => ResponseError::RebalanceInProgress,
        C::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        C::InconsistentGroupProtocol(_) | C::GroupUsesOtherProtocol => {
            ResponseError::InconsistentGroupProtocol
        }
        C::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        C::InvalidGroupId => ResponseError::InvalidGroupId,
    }
    .code()
}

// ---- FindCoordinator ----

pub fn find_coordinator(
    ctx: &Context,
    session: &Session,
    version: i16,
    r: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let mut resp = FindCoordinatorResponse::default();
    let keys: Vec<StrBytes> = if version >= 4 {
        r.coordinator_keys
    } else {
        vec![r.key]
    };
    // A group's coordinator leads its offsets partition; transactions have none.
    let view = ctx.view();
    let answer = |key: StrBytes| {
        let mut c = find_coordinator_response::Coordinator::default();
        let found = if r.key_type != 0 {
            Err((
                ResponseError::CoordinatorNotAvailable.code(),
                "transactions are not supported by this broker".to_string(),
            ))
        } else {
            ctx.authorize_group(session, Operation::Describe, &key)
                .map_err(|e| (errors::code(&e), e.to_string()))
                .and_then(|()| coordinator(ctx, &view, &key))
        };
        c.key = key;
        match found {
            Ok(b) => {
                c.node_id = BrokerId(b.id);
                c.host = str(&b.host);
                c.port = b.port;
            }
            Err((code, msg)) => {
                c.error_code = code;
                c.error_message = Some(str(&msg));
                c.node_id = BrokerId(-1);
                c.port = -1;
            }
        }
        c
    };
    let mut all: Vec<_> = keys.into_iter().map(answer).collect();
    if version >= 4 {
        resp.coordinators = all;
    } else if let Some(c) = all.pop() {
        resp.error_code = c.error_code;
        resp.error_message = c.error_message;
        resp.node_id = c.node_id;
        resp.host = c.host;
        resp.port = c.port;
    }
    resp
}

// ---- classic groups ----

/// The broker coordinating `group`: the leader of its offsets partition.
fn coordinator(
    ctx: &Context,
    view: &Result<View, BrokerError>,
    group: &str,
) -> Result<BrokerView, (i16, String)> {
    let unavailable = |msg: String| (ResponseError::CoordinatorNotAvailable.code(), msg);
    let view = view.as_ref().map_err(|e| unavailable(e.to_string()))?;
    if matches!(view, View::Single) {
        return Ok(ctx.self_view());
    }
    let t = ctx.topic(view, OFFSETS_TOPIC).map_err(|_| {
        unavailable(format!(
            "{OFFSETS_TOPIC} does not exist yet (it is created once enough brokers are live); retry shortly"
        ))
    })?;
    let n = partition_for(group, t.partitions.len() as u32);
    let leader = t
        .partitions
        .get(n as usize)
        .and_then(|p| p.leader)
        .ok_or_else(|| unavailable(format!("{OFFSETS_TOPIC}-{n} has no leader at the moment")))?;
    ctx.broker(view, leader).ok_or_else(|| {
        unavailable(format!(
            "the coordinator (broker {leader}) is fenced or runs no Kafka listener"
        ))
    })
}

/// Kafka's code when `session` may not do `op` on `group`, or when this broker does not
/// coordinate it now.
fn refused(ctx: &Context, session: &Session, op: Operation, group: &str) -> Option<i16> {
    ctx.authorize_group(session, op, group)
        .and_then(|()| ctx.broker.check_coordinator(group))
        .err()
        .map(|e| errors::code(&e))
}

pub async fn join_group(
    ctx: &Context,
    session: &Session,
    version: i16,
    client_id: &str,
    r: JoinGroupRequest,
) -> JoinGroupResponse {
    let group = r.group_id.0.to_string();
    let join = Join {
        group: group.clone(),
        member_id: r.member_id.to_string(),
        client_id: client_id.to_string(),
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            r.rebalance_timeout_ms
        } else {
            r.session_timeout_ms
        },
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let other = ctx.broker.has_consumer_members(&group);
    let mut resp = JoinGroupResponse::default();
    resp.generation_id = -1;
    if let Some(code) = refused(ctx, session, Operation::Read, &group) {
        resp.error_code = code;
        resp.member_id = r.member_id;
        if version < 7 {
            resp.protocol_name = Some(StrBytes::default());
        }
        return resp;
    }
    match ctx.broker.classic_groups().join(join, other).await {
        Ok(j) => {
            resp.generation_id = j.generation;
            if version >= 7 {
                resp.protocol_type = Some(str(&j.protocol_type));
            }
            resp.protocol_name = Some(str(&j.protocol));
            resp.leader = str(&j.leader);
            resp.member_id = str(&j.member_id);
            resp.members = j
                .members
                .into_iter()
                .map(|(id, meta)| {
                    let mut m = join_group_response::JoinGroupResponseMember::default();
                    m.member_id = str(&id);
                    m.metadata = meta;
                    m
                })
                .collect();
        }
        Err(e) => {
            resp.error_code = classic_code(&e);
            resp.member_id = match &e {
                ClassicError::MemberIdRequired(id) => str(id),
                _ => r.member_id,
            };
            if version < 7 {
                resp.protocol_name = Some(StrBytes::default());
            }
            if !matches!(e, ClassicError::MemberIdRequired(_)) {
                tracing::debug!(group, error = %e, "join refused");
            }
        }
    }
    resp
}

pub async fn sync_group(
    ctx: &Context,
    session: &Session,
    version: i16,
    r: SyncGroupRequest,
) -> SyncGroupResponse {
    let assignments = r
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let mut resp = SyncGroupResponse::default();
    if let Some(code) = refused(ctx, session, Operation::Read, &r.group_id.0) {
        resp.error_code = code;
        return resp;
    }
    // A sync naming another protocol than the group's changes nothing.
    if let Some(g) = ctx.broker.classic_groups().describe(&r.group_id.0) {
        let mismatch = r
            .protocol_type
            .as_ref()
            .is_some_and(|t| !g.protocol_type.is_empty() && t.as_str() != g.protocol_type)
            || r.protocol_name
                .as_ref()
                .is_some_and(|p| !g.protocol.is_empty() && p.as_str() != g.protocol);
        if mismatch {
            resp.error_code = ResponseError::InconsistentGroupProtocol.code();
            return resp;
        }
    }
    match ctx
        .broker
        .classic_groups()
        .sync(&r.group_id.0, r.generation_id, &r.member_id, assignments)
        .await
    {
        Ok(s) => {
            let mismatch = r
                .protocol_type
                .as_ref()
                .is_some_and(|t| t.as_str() != s.protocol_type)
                || r.protocol_name
                    .as_ref()
                    .is_some_and(|p| p.as_str() != s.protocol);
            if mismatch {
                resp.error_code = ResponseError::InconsistentGroupProtocol.code();
                return resp;
            }
            if version >= 5 {
                resp.protocol_type = Some(str(&s.protocol_type));
                resp.protocol_name = Some(str(&s.protocol));
            }
            resp.assignment = s.assignment;
        }
        Err(e) => resp.error_code = classic_code(&e),
    }
    resp
}

pub fn heartbeat(ctx: &Context, session: &Session, r: HeartbeatRequest) -> HeartbeatResponse {
    let mut resp = HeartbeatResponse::default();
    if let Some(code) = refused(ctx, session, Operation::Read, &r.group_id.0) {
        resp.error_code = code;
        return resp;
    }
    if let Err(e) =
        ctx.broker
            .classic_groups()
            .heartbeat(&r.group_id.0, r.generation_id, &r.member_id)
    {
        resp.error_code = classic_code(&e);
    }
    resp
}

pub fn leave_group(
    ctx: &Context,
    session: &Session,
    version: i16,
    r: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let groups = ctx.broker.classic_groups();
    let mut resp = LeaveGroupResponse::default();
    if let Some(code) = refused(ctx, session, Operation::Read, &r.group_id.0) {
        resp.error_code = code;
        return resp;
    }
    if version < 3 {
        if let Err(e) = groups.leave(&r.group_id.0, &r.member_id) {
            resp.error_code = classic_code(&e);
        }
        return resp;
    }
    for m in r.members {
        let mut out = leave_group_response::MemberResponse::default();
        out.member_id = m.member_id.clone();
        out.group_instance_id = m.group_instance_id.clone();
        if let Err(e) = groups.leave(&r.group_id.0, &m.member_id) {
            out.error_code = classic_code(&e);
        }
        resp.members.push(out);
    }
    resp
}

// ---- offsets ----

pub async fn offset_commit(
    ctx: &Context,
    session: &Session,
    r: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = r.group_id.0.to_string();
    // Kafka's order: the group first (everything fails with it), then each topic.
    let denied = |t: &str| {
        ctx.authorize_topic(session, Operation::Read, t)
            .err()
            .map(|e| errors::code(&e))
    };
    let topic_codes: BTreeMap<String, Option<i16>> = r
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), denied(&t.name.0)))
        .collect();
    let member = r.member_id.to_string();
    let generation = r.generation_id_or_member_epoch;
    let classic = ctx.broker.classic_groups();
    // A classic member's commit is checked against its generation; a KIP-848 member's
    // (and a commit from outside any group) by the coordinator itself.
    let check = if let Err(e) = ctx.authorize_group(session, Operation::Read, &group) {
        Err(errors::code(&e))
    } else if classic.has_members(&group) || !ctx.broker.has_consumer_members(&group) {
        classic
            .check_commit(&group, generation, &member)
            .map(|()| (String::new(), -1))
            .map_err(|e| classic_code(&e))
    } else {
        Ok((member, generation))
    };
    let mut offsets = Vec::new();
    for t in &r.topics {
        if topic_codes[t.name.0.as_str()].is_some() {
            continue;
        }
        for p in &t.partitions {
            if p.partition_index >= 0 {
                offsets.push((
                    t.name.0.to_string(),
                    p.partition_index as u32,
                    p.committed_offset,
                    p.committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                ));
            }
        }
    }
    let result = match check {
        Ok((member, epoch)) => ctx
            .broker
            .commit_offsets(&group, &member, epoch, offsets)
            .await
            .map_err(|e| errors::code(&e)),
        Err(code) => Err(code),
    };
    let group_code = result.err();
    let mut resp = OffsetCommitResponse::default();
    for t in r.topics {
        let code = group_code.or(topic_codes[t.name.0.as_str()]).unwrap_or(0);
        let mut tr = offset_commit_response::OffsetCommitResponseTopic::default();
        tr.name = t.name;
        tr.topic_id = t.topic_id;
        for p in t.partitions {
            let mut pr = offset_commit_response::OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = if p.partition_index < 0 {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                code
            };
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

/// One group's committed offsets: `wanted` (topic, partitions), or all when `None`.
async fn committed(
    ctx: &Context,
    session: &Session,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<BTreeMap<String, Vec<(i32, i64, String, i16)>>, i16> {
    if let Err(e) = ctx.authorize_group(session, Operation::Describe, group) {
        return Err(errors::code(&e));
    }
    // A topic the caller may not describe: asked for, its partitions answer
    // TOPIC_AUTHORIZATION_FAILED; in a listing of all, it is left out (as in Kafka).
    let may = |t: &str| ctx.may(session, Operation::Describe, ResourceType::Topic, t);
    let (wanted, denied): (Option<Vec<_>>, Vec<_>) = match wanted {
        Some(w) => {
            let (ok, no): (Vec<_>, Vec<_>) = w.into_iter().partition(|(t, _)| may(t));
            (Some(ok), no)
        }
        None => (None, Vec::new()),
    };
    let asked: Vec<(String, u32)> = wanted
        .iter()
        .flatten()
        .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p as u32)))
        .collect();
    let found = ctx
        .broker
        .committed_offsets(group, asked)
        .await
        .or_else(|e| match e {
            // A group that never committed has no offsets: -1 for each asked.
            BrokerError::UnknownGroup(_) => Ok(Vec::new()),
            e => Err(errors::code(&e)),
        })?;
    let mut by_topic: BTreeMap<String, Vec<(i32, i64, String, i16)>> = BTreeMap::new();
    for (t, ps) in denied {
        let code = ResponseError::TopicAuthorizationFailed.code();
        by_topic.insert(
            t,
            ps.into_iter()
                .map(|p| (p, -1, String::new(), code))
                .collect(),
        );
    }
    let mut have: BTreeMap<(String, i32), (i64, String)> = BTreeMap::new();
    for (t, p, o, m) in found {
        have.insert((t, p as i32), (o, m));
    }
    match wanted {
        Some(wanted) => {
            for (t, ps) in wanted {
                let rows = by_topic.entry(t.clone()).or_default();
                for p in ps {
                    let (o, m) = have.remove(&(t.clone(), p)).unwrap_or((-1, String::new()));
                    rows.push((p, o, m, 0));
                }
            }
        }
        None => {
            for ((t, p), (o, m)) in have {
                if o >= 0 && may(&t) {
                    by_topic.entry(t).or_default().push((p, o, m, 0));
                }
            }
        }
    }
    Ok(by_topic)
}

pub async fn offset_fetch(
    ctx: &Context,
    session: &Session,
    version: i16,
    r: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if version >= 8 {
        for g in r.groups {
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let mut out = offset_fetch_response::OffsetFetchResponseGroup::default();
            match committed(ctx, session, &g.group_id.0, wanted).await {
                Ok(by_topic) => {
                    for (t, rows) in by_topic {
                        let mut tr = offset_fetch_response::OffsetFetchResponseTopics::default();
                        tr.name = TopicName(str(&t));
                        for (p, o, m, code) in rows {
                            let mut pr =
                                offset_fetch_response::OffsetFetchResponsePartitions::default();
                            pr.partition_index = p;
                            pr.committed_offset = o;
                            pr.committed_leader_epoch = -1;
                            pr.metadata = Some(str(&m));
                            pr.error_code = code;
                            tr.partitions.push(pr);
                        }
                        out.topics.push(tr);
                    }
                }
                Err(code) => out.error_code = code,
            }
            out.group_id = g.group_id;
            resp.groups.push(out);
        }
        return resp;
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let asked = (version < 2).then(|| wanted.clone().unwrap_or_default());
    match committed(ctx, session, &r.group_id.0, wanted).await {
        Ok(by_topic) => {
            for (t, rows) in by_topic {
                let mut tr = offset_fetch_response::OffsetFetchResponseTopic::default();
                tr.name = TopicName(str(&t));
                for (p, o, m, code) in rows {
                    let mut pr = offset_fetch_response::OffsetFetchResponsePartition::default();
                    pr.partition_index = p;
                    pr.committed_offset = o;
                    pr.committed_leader_epoch = -1;
                    pr.metadata = Some(str(&m));
                    pr.error_code = code;
                    tr.partitions.push(pr);
                }
                resp.topics.push(tr);
            }
        }
        // v1 has no top-level error: every partition asked for carries it.
        Err(code) => match asked {
            Some(asked) => {
                for (t, ps) in asked {
                    let mut tr = offset_fetch_response::OffsetFetchResponseTopic::default();
                    tr.name = TopicName(str(&t));
                    for p in ps {
                        let mut pr = offset_fetch_response::OffsetFetchResponsePartition::default();
                        pr.partition_index = p;
                        pr.committed_offset = -1;
                        pr.committed_leader_epoch = -1;
                        pr.error_code = code;
                        tr.partitions.push(pr);
                    }
                    resp.topics.push(tr);
                }
            }
            None => resp.error_code = code,
        },
    }
    resp
}

// ---- group administration ----

pub fn list_groups(
    ctx: &Context,
    session: &Session,
    version: i16,
    r: ListGroupsRequest,
) -> ListGroupsResponse {
    let mut rows: Vec<(String, String, &'static str)> = ctx
        .broker
        .classic_groups()
        .list()
        .into_iter()
        .map(|(name, state, _)| (name, state.to_string(), "classic"))
        .collect();
    for (name, state, _) in ctx.broker.list_groups() {
        if !rows.iter().any(|(n, _, _)| *n == name) {
            rows.push((name, state.to_string(), "consumer"));
        }
    }
    let mut resp = ListGroupsResponse::default();
    // Describe on the cluster lists every group; else those the caller may describe.
    let all = ctx.may(
        session,
        Operation::Describe,
        ResourceType::Cluster,
        strata_auth::acl::CLUSTER_NAME,
    );
    for (name, state, kind) in rows {
        let state_ok = version < 4
            || r.states_filter.is_empty()
            || r.states_filter
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&state));
        let type_ok = version < 5
            || r.types_filter.is_empty()
            || r.types_filter.iter().any(|t| t.eq_ignore_ascii_case(kind));
        // Only the groups the caller may describe, as in Kafka.
        if !(state_ok && type_ok)
            || (!all && !ctx.may(session, Operation::Describe, ResourceType::Group, &name))
        {
            continue;
        }
        let mut g = list_groups_response::ListedGroup::default();
        g.group_id = GroupId(str(&name));
        g.protocol_type = str("consumer");
        g.group_state = str(&state);
        g.group_type = str(kind);
        resp.groups.push(g);
    }
    resp
}

pub fn describe_groups(
    ctx: &Context,
    session: &Session,
    r: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    for id in r.groups {
        let mut g = describe_groups_response::DescribedGroup::default();
        if let Err(e) = ctx.authorize_group(session, Operation::Describe, &id.0) {
            g.error_code = errors::code(&e);
        } else if let Some(d) = ctx.broker.classic_groups().describe(&id.0) {
            g.group_state = str(d.state);
            g.protocol_type = str(&d.protocol_type);
            g.protocol_data = str(&d.protocol);
            for (member, client, meta, assignment) in d.members {
                let mut m = describe_groups_response::DescribedGroupMember::default();
                m.member_id = str(&member);
                m.client_id = str(&client);
                m.member_metadata = meta;
                m.member_assignment = assignment;
                g.members.push(m);
            }
        } else {
            match ctx.broker.describe_group(&id.0) {
                Ok(d) => {
                    g.group_state = str(d.state);
                    g.protocol_type = str("consumer");
                    for m in d.members {
                        let mut out = describe_groups_response::DescribedGroupMember::default();
                        out.member_id = str(&m.member_id);
                        g.members.push(out);
                    }
                }
                // Kafka describes a group it does not know as Dead, without an error.
                Err(BrokerError::UnknownGroup(_)) => g.group_state = str("Dead"),
                Err(e) => g.error_code = errors::code(&e),
            }
        }
        g.group_id = id;
        resp.groups.push(g);
    }
    resp
}

pub async fn delete_groups(
    ctx: &Context,
    session: &Session,
    r: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for id in r.groups_names {
        let mut out = delete_groups_response::DeletableGroupResult::default();
        out.error_code = if let Err(e) = ctx.authorize_group(session, Operation::Delete, &id.0) {
            errors::code(&e)
        } else if ctx.broker.classic_groups().has_members(&id.0) {
            ResponseError::NonEmptyGroup.code()
        } else {
            match ctx.broker.delete_group(&id.0).await {
                Ok(()) => 0,
                Err(e) => errors::code(&e),
            }
        };
        out.group_id = id;
        resp.results.push(out);
    }
    resp
}

// ---- the consumer protocol (KIP-848) ----

/// How long a KIP-848 member may stay silent (Kafka's
/// `group.consumer.session.timeout.ms` default).
const CONSUMER_SESSION_TIMEOUT_MS: u32 = 45_000;

pub async fn consumer_heartbeat(
    ctx: &Context,
    session: &Session,
    r: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let mut resp = ConsumerGroupHeartbeatResponse::default();
    let fail = |resp: &mut ConsumerGroupHeartbeatResponse, code: i16, msg: String| {
        resp.error_code = code;
        resp.error_message = Some(str(&msg));
    };
    if r.subscribed_topic_regex
        .as_ref()
        .is_some_and(|x| !x.is_empty())
    {
        fail(
            &mut resp,
            ResponseError::InvalidRequest.code(),
            "regular-expression subscriptions are not supported; subscribe to topic names".into(),
        );
        return resp;
    }
    let group = r.group_id.0.to_string();
    let member = r.member_id.to_string();
    if let Err(e) = ctx.authorize_group(session, Operation::Read, &group) {
        fail(&mut resp, errors::code(&e), e.to_string());
        return resp;
    }
    // What the request leaves out (null: unchanged) is what the coordinator has.
    let known = ctx
        .broker
        .describe_group(&group)
        .ok()
        .and_then(|d| d.members.into_iter().find(|m| m.member_id == member));
    let topics: Vec<String> = match r.subscribed_topic_names {
        Some(names) => names.into_iter().map(|t| t.0.to_string()).collect(),
        None => known.as_ref().map(|m| m.topics.clone()).unwrap_or_default(),
    };
    let owned: std::collections::BTreeSet<(String, u32)> = match r.topic_partitions {
        Some(tps) => {
            let names = topic_names(ctx);
            tps.into_iter()
                .filter_map(|tp| names.get(&tp.topic_id).map(|n| (n.clone(), tp.partitions)))
                .flat_map(|(n, ps)| ps.into_iter().map(move |p| (n.clone(), p as u32)))
                .collect()
        }
        None => known
            .as_ref()
            .map(|m| {
                m.assignment
                    .iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let assignor = match r.server_assignor.as_deref() {
        None | Some("") => String::new(),
        Some("uniform") => "roundrobin".to_string(),
        Some(a) => a.to_string(),
    };
    let hb = strata_groups::Heartbeat {
        group,
        member_id: member.clone(),
        member_epoch: r.member_epoch.max(-1),
        topics,
        owned,
        assignor,
        session_timeout_ms: CONSUMER_SESSION_TIMEOUT_MS,
        allow_unknown_topics: true,
    };
    match ctx.broker.group_heartbeat(hb).await {
        Ok(a) => {
            resp.member_id = Some(str(&a.member_id));
            resp.member_epoch = a.member_epoch;
            resp.heartbeat_interval_ms = a.heartbeat_interval_ms as i32;
            if a.member_epoch >= 0 {
                let ids = topic_ids(ctx);
                let mut assignment = consumer_group_heartbeat_response::Assignment::default();
                for (t, ps) in a.assignment {
                    let mut tp = consumer_group_heartbeat_response::TopicPartitions::default();
                    tp.topic_id = ids.get(&t).copied().unwrap_or_default();
                    tp.partitions = ps.into_iter().map(|p| p as i32).collect();
                    assignment.topic_partitions.push(tp);
                }
                resp.assignment = Some(assignment);
            }
        }
        Err(e) => {
            resp.member_id = Some(str(&member));
            fail(&mut resp, errors::code(&e), errors::message(&e));
        }
    }
    resp
}

fn topic_ids(ctx: &Context) -> BTreeMap<String, uuid::Uuid> {
    topic_names(ctx)
        .into_iter()
        .map(|(id, n)| (n, id))
        .collect()
}

fn topic_names(ctx: &Context) -> BTreeMap<uuid::Uuid, String> {
    ctx.view().map(|v| ctx.topic_names(&v)).unwrap_or_default()
}

pub fn consumer_describe(
    ctx: &Context,
    session: &Session,
    r: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let ids = topic_ids(ctx);
    let assignment = |a: &BTreeMap<String, Vec<u32>>| {
        let mut out = consumer_group_describe_response::Assignment::default();
        for (t, ps) in a {
            let mut tp = consumer_group_describe_response::TopicPartitions::default();
            tp.topic_id = ids.get(t).copied().unwrap_or_default();
            tp.topic_name = TopicName(str(t));
            tp.partitions = ps.iter().map(|&p| p as i32).collect();
            out.topic_partitions.push(tp);
        }
        out
    };
    let mut resp = ConsumerGroupDescribeResponse::default();
    for id in r.group_ids {
        let mut g = consumer_group_describe_response::DescribedGroup::default();
        match ctx
            .authorize_group(session, Operation::Describe, &id.0)
            .and_then(|()| ctx.broker.describe_group(&id.0))
        {
            Ok(d) => {
                g.group_state = str(d.state);
                g.group_epoch = d.group_epoch;
                g.assignment_epoch = d.group_epoch;
                g.assignor_name = str(&d.assignor);
                for m in d.members {
                    let mut out = consumer_group_describe_response::Member::default();
                    out.member_id = str(&m.member_id);
                    out.member_epoch = m.member_epoch;
                    out.subscribed_topic_names =
                        m.topics.iter().map(|t| TopicName(str(t))).collect();
                    out.assignment = assignment(&m.assignment);
                    out.target_assignment = assignment(&m.assignment);
                    g.members.push(out);
                }
            }
            Err(e) => {
                g.error_code = match e {
                    BrokerError::UnknownGroup(_) => ResponseError::GroupIdNotFound.code(),
                    ref e => errors::code(e),
                };
                g.error_message = Some(str(&e.to_string()));
            }
        }
        g.group_id = id;
        resp.groups.push(g);
    }
    resp
}
