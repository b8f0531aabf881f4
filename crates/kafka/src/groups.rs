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
use strata_groups::classic::{ClassicError, Join};

use crate::Context;
use crate::errors;

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

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
    version: i16,
    r: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let mut resp = FindCoordinatorResponse::default();
    let keys: Vec<StrBytes> = if version >= 4 {
        r.coordinator_keys
    } else {
        vec![r.key]
    };
    // A single broker coordinates every group; transactions have no coordinator.
    let answer = |key: StrBytes| {
        let mut c = find_coordinator_response::Coordinator::default();
        c.key = key;
        if r.key_type != 0 {
            c.error_code = ResponseError::CoordinatorNotAvailable.code();
            c.error_message = Some(str("transactions are not supported by this broker"));
            c.node_id = BrokerId(-1);
            c.port = -1;
        } else {
            c.node_id = BrokerId(ctx.node_id());
            c.host = str(&ctx.host);
            c.port = ctx.port;
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

pub async fn join_group(
    ctx: &Context,
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

pub async fn sync_group(ctx: &Context, version: i16, r: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = r
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let mut resp = SyncGroupResponse::default();
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

pub fn heartbeat(ctx: &Context, r: HeartbeatRequest) -> HeartbeatResponse {
    let mut resp = HeartbeatResponse::default();
    if let Err(e) =
        ctx.broker
            .classic_groups()
            .heartbeat(&r.group_id.0, r.generation_id, &r.member_id)
    {
        resp.error_code = classic_code(&e);
    }
    resp
}

pub fn leave_group(ctx: &Context, version: i16, r: LeaveGroupRequest) -> LeaveGroupResponse {
    let groups = ctx.broker.classic_groups();
    let mut resp = LeaveGroupResponse::default();
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

pub async fn offset_commit(ctx: &Context, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = r.group_id.0.to_string();
    let member = r.member_id.to_string();
    let generation = r.generation_id_or_member_epoch;
    let classic = ctx.broker.classic_groups();
    // A classic member's commit is checked against its generation; a KIP-848 member's
    // (and a commit from outside any group) by the coordinator itself.
    let check = if classic.has_members(&group) || !ctx.broker.has_consumer_members(&group) {
        classic
            .check_commit(&group, generation, &member)
            .map(|()| (String::new(), -1))
            .map_err(|e| classic_code(&e))
    } else {
        Ok((member, generation))
    };
    let mut offsets = Vec::new();
    for t in &r.topics {
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
    let code = result.err().unwrap_or(0);
    let mut resp = OffsetCommitResponse::default();
    for t in r.topics {
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
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<BTreeMap<String, Vec<(i32, i64, String)>>, i16> {
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
    let mut by_topic: BTreeMap<String, Vec<(i32, i64, String)>> = BTreeMap::new();
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
                    rows.push((p, o, m));
                }
            }
        }
        None => {
            for ((t, p), (o, m)) in have {
                if o >= 0 {
                    by_topic.entry(t).or_default().push((p, o, m));
                }
            }
        }
    }
    Ok(by_topic)
}

pub async fn offset_fetch(
    ctx: &Context,
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
            match committed(ctx, &g.group_id.0, wanted).await {
                Ok(by_topic) => {
                    for (t, rows) in by_topic {
                        let mut tr = offset_fetch_response::OffsetFetchResponseTopics::default();
                        tr.name = TopicName(str(&t));
                        for (p, o, m) in rows {
                            let mut pr =
                                offset_fetch_response::OffsetFetchResponsePartitions::default();
                            pr.partition_index = p;
                            pr.committed_offset = o;
                            pr.committed_leader_epoch = -1;
                            pr.metadata = Some(str(&m));
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
    let wanted = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    match committed(ctx, &r.group_id.0, wanted).await {
        Ok(by_topic) => {
            for (t, rows) in by_topic {
                let mut tr = offset_fetch_response::OffsetFetchResponseTopic::default();
                tr.name = TopicName(str(&t));
                for (p, o, m) in rows {
                    let mut pr = offset_fetch_response::OffsetFetchResponsePartition::default();
                    pr.partition_index = p;
                    pr.committed_offset = o;
                    pr.committed_leader_epoch = -1;
                    pr.metadata = Some(str(&m));
                    tr.partitions.push(pr);
                }
                resp.topics.push(tr);
            }
        }
        Err(code) => resp.error_code = code,
    }
    resp
}

// ---- group administration ----

pub fn list_groups(ctx: &Context, version: i16, r: ListGroupsRequest) -> ListGroupsResponse {
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
    for (name, state, kind) in rows {
        let state_ok = version < 4
            || r.states_filter.is_empty()
            || r.states_filter
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&state));
        let type_ok = version < 5
            || r.types_filter.is_empty()
            || r.types_filter.iter().any(|t| t.eq_ignore_ascii_case(kind));
        if !(state_ok && type_ok) {
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

pub fn describe_groups(ctx: &Context, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    for id in r.groups {
        let mut g = describe_groups_response::DescribedGroup::default();
        if let Some(d) = ctx.broker.classic_groups().describe(&id.0) {
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

pub async fn delete_groups(ctx: &Context, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for id in r.groups_names {
        let mut out = delete_groups_response::DeletableGroupResult::default();
        out.error_code = if ctx.broker.classic_groups().has_members(&id.0) {
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
