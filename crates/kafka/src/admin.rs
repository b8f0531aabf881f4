//! Administration: CreateTopics, DeleteTopics, DescribeConfigs, IncrementalAlterConfigs
//! and DescribeCluster, over the same broker calls as `strata topic` and gRPC. Every
//! refusal names what is wrong (`error_message`) and changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use strata_broker::error::BrokerError;

use crate::errors;
use crate::handlers::topic_uuid;
use strata_auth::Operation;

use crate::{Context, Session, str};

/// Kafka's resource types in config requests.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

/// Where a config's value comes from, as Kafka names it.
fn config_source(is_default: bool) -> i8 {
    if is_default {
        SOURCE_DEFAULT
    } else {
        SOURCE_TOPIC
    }
}

/// The topics a request names more than once (each is refused: which entry would win?).
fn named_twice<'a>(names: impl Iterator<Item = &'a TopicName>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    names
        .filter(|n| !seen.insert(n.0.as_str()))
        .map(|n| n.0.to_string())
        .collect()
}

pub async fn create_topics(
    ctx: &Context,
    session: &Session,
    version: i16,
    r: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    let duplicates = named_twice(r.topics.iter().map(|t| &t.name));
    for t in r.topics {
        let name = t.name.0.to_string();
        let mut out = create_topics_response::CreatableTopicResult::default();
        out.name = t.name.clone();
        out.num_partitions = -1;
        out.replication_factor = -1;
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let partitions = if t.num_partitions == -1 {
            1
        } else {
            t.num_partitions as i64
        };
        let rf = if t.replication_factor == -1 {
            0
        } else {
            t.replication_factor as i64
        };
        let result = if let Err(e) = ctx.may_create_topic(session, &name) {
            Err((errors::code(&e), e.to_string()))
        } else if duplicates.contains(&name) {
            Err((
                ResponseError::InvalidRequest.code(),
                format!("topic {name:?} is named more than once in the request"),
            ))
        } else if !t.assignments.is_empty() {
            Err((
                ResponseError::InvalidReplicaAssignment.code(),
                "manual replica assignments are not supported; give num_partitions and replication_factor".to_string(),
            ))
        } else if r.validate_only {
            ctx.broker
                .check_new_topic(&name, partitions, rf, &configs)
                .and_then(|_| match ctx.view().and_then(|v| ctx.topic(&v, &name)) {
                    Ok(_) => Err(BrokerError::TopicExists(name.clone())),
                    Err(BrokerError::UnknownTopic(_)) => Ok(()),
                    Err(e) => Err(e),
                })
                .map_err(|e| (errors::code(&e), errors::message(&e)))
        } else {
            ctx.create_topic(&name, partitions, rf, configs)
                .await
                .map(|_| ())
                .map_err(|e| (errors::code(&e), errors::message(&e)))
        };
        let created = result.and_then(|()| {
            let view = ctx
                .view()
                .map_err(|e| (errors::code(&e), errors::message(&e)))?;
            // Validated only: what it would be.
            let t = ctx.topic(&view, &name).ok();
            let config = ctx.topic_config(&view, &name).ok();
            Ok((t, config))
        });
        match created {
            Ok((t, config)) => {
                if let Some(t) = t {
                    out.topic_id = topic_uuid(&t.id);
                    out.num_partitions = t.partitions.len() as i32;
                    out.replication_factor = t.replication_factor as i16;
                }
                if let (Some(config), true) = (config, version >= 5) {
                    out.configs = Some(
                        config
                            .entries()
                            .map(|(k, v, is_default)| {
                                let mut c =
                                    create_topics_response::CreatableTopicConfigs::default();
                                c.name = str(k);
                                c.value = Some(str(v));
                                c.config_source = config_source(is_default);
                                c
                            })
                            .collect(),
                    );
                }
            }
            Err((code, msg)) => {
                out.error_code = code;
                if version >= 1 {
                    out.error_message = Some(str(&msg));
                }
            }
        }
        resp.topics.push(out);
    }
    resp
}

pub async fn delete_topics(
    ctx: &Context,
    session: &Session,
    version: i16,
    r: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let mut resp = DeleteTopicsResponse::default();
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        r.topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        r.topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    for (name, id) in wanted {
        let mut out = delete_topics_response::DeletableTopicResult::default();
        let name = name.or_else(|| {
            ctx.view()
                .ok()
                .and_then(|v| ctx.topic_names(&v).remove(&id))
        });
        let result = match &name {
            Some(n) => match ctx.authorize_topic(session, Operation::Delete, n) {
                Ok(()) => ctx.delete_topic(n).await,
                Err(e) => Err(e),
            }
            .map_err(|e| (errors::code(&e), errors::message(&e))),
            None => Err((
                ResponseError::UnknownTopicId.code(),
                format!("no topic has id {id}"),
            )),
        };
        out.name = name.map(|n| TopicName(str(&n)));
        out.topic_id = id;
        if let Err((code, msg)) = result {
            out.error_code = code;
            if version >= 5 {
                out.error_message = Some(str(&msg));
            }
        }
        resp.responses.push(out);
    }
    resp
}

/// Raises partition counts. Manual assignments are refused, as in CreateTopics: the
/// new partitions get as many replicas as the topic's first, placed as a new topic's.
pub async fn create_partitions(
    ctx: &Context,
    session: &Session,
    r: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    let duplicates = named_twice(r.topics.iter().map(|t| &t.name));
    for t in r.topics {
        let name = t.name.0.to_string();
        let mut out = create_partitions_response::CreatePartitionsTopicResult::default();
        out.name = t.name.clone();
        let result = if let Err(e) = ctx.authorize_topic(session, Operation::Alter, &name) {
            Err((errors::code(&e), e.to_string()))
        } else if duplicates.contains(&name) {
            Err((
                ResponseError::InvalidRequest.code(),
                format!("topic {name:?} is named more than once in the request"),
            ))
        } else if t.assignments.is_some() {
            Err((
                ResponseError::InvalidReplicaAssignment.code(),
                "manual replica assignments are not supported; give the count alone".to_string(),
            ))
        } else {
            ctx.create_partitions(&name, t.count as i64, r.validate_only)
                .await
                .map_err(|e| (errors::code(&e), errors::message(&e)))
        };
        if let Err((code, msg)) = result {
            out.error_code = code;
            out.error_message = Some(str(&msg));
        }
        resp.results.push(out);
    }
    resp
}

pub fn describe_configs(
    ctx: &Context,
    session: &Session,
    r: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut resp = DescribeConfigsResponse::default();
    for res in r.resources {
        let mut out = describe_configs_response::DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        match res.resource_type {
            RESOURCE_TOPIC => match ctx
                .authorize_topic(session, Operation::DescribeConfigs, &res.resource_name)
                .and_then(|()| ctx.view())
                .and_then(|v| ctx.topic_config(&v, &res.resource_name))
            {
                Ok(config) => {
                    for (k, v, is_default) in config.entries() {
                        let wanted = res
                            .configuration_keys
                            .as_ref()
                            .is_none_or(|keys| keys.iter().any(|w| w.as_str() == k));
                        if !wanted {
                            continue;
                        }
                        let mut c =
                            describe_configs_response::DescribeConfigsResourceResult::default();
                        c.name = str(k);
                        c.value = Some(str(v));
                        c.config_source = config_source(is_default);
                        out.configs.push(c);
                    }
                }
                Err(e) => {
                    out.error_code = errors::code(&e);
                    out.error_message = Some(str(&errors::message(&e)));
                }
            },
            // Broker settings live in the config file; none are described here.
            RESOURCE_BROKER => {
                if let Err(e) = ctx.authorize_cluster(session, Operation::DescribeConfigs) {
                    out.error_code = errors::code(&e);
                    out.error_message = Some(str(&e.to_string()));
                }
            }
            other => {
                out.error_code = ResponseError::InvalidRequest.code();
                out.error_message = Some(str(&format!(
                    "resource type {other} is not supported: describe topics (2) or brokers (4)"
                )));
            }
        }
        resp.results.push(out);
    }
    resp
}

pub async fn incremental_alter_configs(
    ctx: &Context,
    session: &Session,
    r: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in r.resources {
        let mut out = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let allowed = match res.resource_type {
            RESOURCE_TOPIC => {
                ctx.authorize_topic(session, Operation::AlterConfigs, &res.resource_name)
            }
            _ => Ok(()),
        };
        let result = match allowed {
            Err(e) => Err((errors::code(&e), e.to_string())),
            Ok(()) => alter_one(ctx, &res, r.validate_only).await,
        };
        if let Err((code, msg)) = result {
            out.error_code = code;
            out.error_message = Some(str(&msg));
        }
        resp.responses.push(out);
    }
    resp
}

async fn alter_one(
    ctx: &Context,
    res: &incremental_alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let invalid = |msg: String| (ResponseError::InvalidRequest.code(), msg);
    if res.resource_type != RESOURCE_TOPIC {
        return Err(invalid(format!(
            "resource type {} cannot be altered here: topic configs (2) can; broker settings live in the config file",
            res.resource_type
        )));
    }
    let mut set = BTreeMap::new();
    let mut delete = Vec::new();
    for c in &res.configs {
        match (c.config_operation, &c.value) {
            (0, Some(v)) => {
                set.insert(c.name.to_string(), v.to_string());
            }
            (0, None) => return Err(invalid(format!("SET of {} needs a value", c.name))),
            (1, _) => delete.push(c.name.to_string()),
            (op, _) => {
                return Err(invalid(format!(
                    "operation {op} on {} is not supported: use SET (0) or DELETE (1)",
                    c.name
                )));
            }
        }
    }
    let overrides = ctx
        .view()
        .and_then(|v| ctx.topic_overrides(&v, &res.resource_name))
        .map_err(|e| (errors::code(&e), errors::message(&e)))?;
    let result = if validate_only {
        ctx.broker
            .altered_configs(&res.resource_name, &overrides, set, delete, false)
            .map(|_| ())
    } else {
        ctx.alter_configs(&res.resource_name, set, delete).await
    };
    result.map_err(|e| (errors::code(&e), errors::message(&e)))
}

pub fn describe_cluster(
    ctx: &Context,
    session: &Session,
    r: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse::default();
    resp.endpoint_type = r.endpoint_type;
    // Any broker takes admin requests (a cluster member hands them to the controller).
    resp.controller_id = BrokerId(ctx.node_id());
    // Kafka asks no ACL for DescribeCluster: clients find brokers with it.
    let _ = session;
    let brokers = match ctx.view() {
        Ok(view) => {
            resp.cluster_id = str(&ctx.cluster_id(&view));
            ctx.brokers(&view)
        }
        Err(e) => {
            resp.error_code = errors::code(&e);
            resp.error_message = Some(str(&errors::message(&e)));
            Vec::new()
        }
    };
    resp.brokers = brokers
        .into_iter()
        .map(|b| {
            let mut out = describe_cluster_response::DescribeClusterBroker::default();
            out.broker_id = BrokerId(b.id);
            out.host = str(&b.host);
            out.port = b.port;
            out.rack = b.rack.as_deref().map(str);
            out
        })
        .collect();
    resp
}

// ---- SCRAM users (KIP-554) ----

/// Each user asked for (every user, if none is named) with its mechanisms and
/// iteration counts; never a key.
pub fn describe_user_scram_credentials(
    ctx: &Context,
    session: &Session,
    r: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let mut resp = DescribeUserScramCredentialsResponse::default();
    let listed = ctx.admin(session, Operation::Describe).map(|u| u.users());
    let all = match listed {
        Ok(all) => all,
        Err(e) => {
            resp.error_code = errors::code(&e);
            resp.error_message = Some(str(&e.to_string()));
            return resp;
        }
    };
    let names: Vec<String> = match r.users {
        Some(users) if !users.is_empty() => users.into_iter().map(|u| u.name.to_string()).collect(),
        _ => all.keys().cloned().collect(),
    };
    let mut seen = BTreeSet::new();
    for name in names {
        let mut result =
            describe_user_scram_credentials_response::DescribeUserScramCredentialsResult::default();
        result.user = str(&name);
        if !seen.insert(name.clone()) {
            result.error_code = ResponseError::DuplicateResource.code();
            result.error_message = Some(str("the user is named twice in the request"));
        } else {
            match all.get(&name) {
                Some(mechs) => {
                    result.credential_infos = mechs
                        .iter()
                        .map(|(m, iterations)| {
                            let mut c =
                                describe_user_scram_credentials_response::CredentialInfo::default();
                            c.mechanism = m.kafka_type();
                            c.iterations = *iterations as i32;
                            c
                        })
                        .collect();
                }
                None => {
                    result.error_code = ResponseError::ResourceNotFound.code();
                    result.error_message =
                        Some(str(&format!("user {name:?} has no SCRAM credential")));
                }
            }
        }
        resp.results.push(result);
    }
    resp
}

/// Deletions then upsertions, each answered for its user. A user named twice in one
/// request is refused (Kafka's DUPLICATE_RESOURCE); nothing else of it changes.
pub async fn alter_user_scram_credentials(
    ctx: &Context,
    session: &Session,
    r: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut resp = AlterUserScramCredentialsResponse::default();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for name in r
        .deletions
        .iter()
        .map(|d| &d.name)
        .chain(r.upsertions.iter().map(|u| &u.name))
    {
        *counts.entry(name.to_string()).or_default() += 1;
    }
    let allowed = ctx.admin(session, Operation::Alter);
    let answer = |user: &str, e: Option<(i16, String)>| {
        let mut a =
            alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default();
        a.user = str(user);
        if let Some((code, msg)) = e {
            a.error_code = code;
            a.error_message = Some(str(&msg));
        }
        a
    };
    let users = match allowed {
        Ok(u) => u,
        Err(e) => {
            let e = (errors::code(&e), e.to_string());
            for (name, _) in counts {
                resp.results.push(answer(&name, Some(e.clone())));
            }
            return resp;
        }
    };
    let duplicate = |name: &str| {
        (counts.get(name).copied().unwrap_or(0) > 1).then(|| {
            (
                ResponseError::DuplicateResource.code(),
                "the user is named more than once in the request".to_string(),
            )
        })
    };
    let mechanism = |t: i8| {
        strata_auth::Mechanism::from_kafka_type(t).ok_or_else(|| {
            (
                ResponseError::UnsupportedSaslMechanism.code(),
                format!("unknown SCRAM mechanism {t}; use 1 (SCRAM-SHA-256) or 2 (SCRAM-SHA-512)"),
            )
        })
    };
    let failed = |e: BrokerError| (errors::code(&e), e.to_string());
    let mut reported = BTreeSet::new();
    for d in r.deletions {
        let name = d.name.to_string();
        let outcome = match duplicate(&name) {
            Some(e) => Err(e),
            None => match mechanism(d.mechanism) {
                Ok(m) => match users.delete_user(&name, m).await {
                    Ok(true) => Ok(()),
                    // Nothing to delete is Kafka's RESOURCE_NOT_FOUND.
                    Ok(false) => Err((
                        ResponseError::ResourceNotFound.code(),
                        format!("user {name:?} has no {} credential", m.name()),
                    )),
                    Err(e) => Err(failed(e)),
                },
                Err(e) => Err(e),
            },
        };
        if reported.insert(name.clone()) {
            resp.results.push(answer(&name, outcome.err()));
        }
    }
    for u in r.upsertions {
        let name = u.name.to_string();
        let outcome = match duplicate(&name) {
            Some(e) => Err(e),
            None => match mechanism(u.mechanism) {
                Ok(m) => match strata_auth::ScramCredential::from_salted_password(
                    m,
                    u.salt.to_vec(),
                    &u.salted_password,
                    u.iterations.max(0) as u32,
                ) {
                    Ok(c) => users.upsert_user(&name, m, c).await.map_err(failed),
                    Err(e) => Err((ResponseError::UnacceptableCredential.code(), e.to_string())),
                },
                Err(e) => Err(e),
            },
        };
        if reported.insert(name.clone()) {
            resp.results.push(answer(&name, outcome.err()));
        }
    }
    resp
}
