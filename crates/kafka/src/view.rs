//! What the listener describes and changes: the cluster's metadata on a cluster member,
//! the local log on a single broker. Handlers ask here for brokers, topics, leaders and
//! configs, and create, delete and alter topics here, so each answers the same on both.
//!
//! Invariants: a cluster member answers from the controller's metadata only once it has
//! caught up with it (before that every call is refused as retriable, never answered
//! from a stale view); brokers without a Kafka listener, and fenced ones, are left out
//! of the brokers clients are told about (as KRaft leaves out fenced brokers).

use std::collections::BTreeMap;

use strata_broker::broker::TopicMeta;
use strata_broker::error::BrokerError;
use strata_broker::topic_config::EffectiveConfig;
use strata_controller::{ClusterState, TopicRecord};
use uuid::Uuid;

use crate::Context;
use crate::handlers::topic_uuid;

type Result<T> = std::result::Result<T, BrokerError>;

/// A broker as Metadata and DescribeCluster show it.
pub struct BrokerView {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// A topic as Metadata shows it.
pub struct TopicView {
    pub name: String,
    /// Strata's form (URL-safe base64 of the UUID's bytes).
    pub id: String,
    pub partitions: Vec<PartitionView>,
    pub replication_factor: i32,
}

pub struct PartitionView {
    /// None while the partition is offline.
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Replicas on fenced brokers.
    pub offline: Vec<i32>,
}

/// The whole view, taken once per request.
pub enum View {
    Single,
    Cluster(Box<ClusterState>),
}

impl Context {
    /// The view to answer from: refused (retriable) while this cluster member's
    /// metadata is not caught up.
    pub fn view(&self) -> Result<View> {
        Ok(match self.cluster()? {
            None => View::Single,
            Some(m) => View::Cluster(Box::new(m.controller().state())),
        })
    }

    /// The id clients see for the cluster (Kafka's `cluster.id`): the same from every
    /// member; a single broker's is its own.
    pub fn cluster_id(&self, view: &View) -> String {
        match view {
            View::Cluster(state) if !state.cluster_id.is_empty() => state.cluster_id.clone(),
            _ => self.broker.incarnation().to_string(),
        }
    }

    /// This broker's own listener.
    pub fn self_view(&self) -> BrokerView {
        let rack = &self.broker.config().rack;
        BrokerView {
            id: self.node_id(),
            host: self.host.clone(),
            port: self.port,
            rack: (!rack.is_empty()).then(|| rack.clone()),
        }
    }

    /// The brokers clients may connect to.
    pub fn brokers(&self, view: &View) -> Vec<BrokerView> {
        let rack = |r: &str| (!r.is_empty()).then(|| r.to_string());
        match view {
            View::Single => vec![self.self_view()],
            View::Cluster(state) => state
                .brokers
                .values()
                .filter(|b| !b.fenced)
                .filter_map(|b| {
                    let (host, port) = crate::split_host_port(b.kafka_addr.as_deref()?).ok()?;
                    Some(BrokerView {
                        id: b.id as i32,
                        host,
                        port,
                        rack: b.rack.as_deref().and_then(rack),
                    })
                })
                .collect(),
        }
    }

    /// One broker's Kafka address, if it is live and runs a listener.
    pub fn broker(&self, view: &View, id: i32) -> Option<BrokerView> {
        self.brokers(view).into_iter().find(|b| b.id == id)
    }

    pub fn topics(&self, view: &View) -> Vec<TopicView> {
        match view {
            View::Single => self
                .broker
                .list_topics()
                .iter()
                .map(|m| self.local_view(m))
                .collect(),
            View::Cluster(state) => state
                .topics
                .values()
                .map(|t| record_view(state, t))
                .collect(),
        }
    }

    pub fn topic(&self, view: &View, name: &str) -> Result<TopicView> {
        match view {
            View::Single => Ok(self.local_view(&self.broker.topic(name)?.meta())),
            View::Cluster(state) => state
                .topics
                .get(name)
                .map(|t| record_view(state, t))
                .ok_or_else(|| BrokerError::UnknownTopic(name.to_string())),
        }
    }

    /// Topic names by Kafka topic id.
    pub fn topic_names(&self, view: &View) -> BTreeMap<Uuid, String> {
        match view {
            View::Single => self
                .broker
                .list_topics()
                .into_iter()
                .map(|t| (topic_uuid(&t.id), t.name))
                .collect(),
            View::Cluster(state) => state
                .topics
                .values()
                .map(|t| (topic_uuid(&t.id), t.name.clone()))
                .collect(),
        }
    }

    /// A topic's effective configs: the local replica's where there is one (the
    /// offsets topic's are fixed by the broker), else from the metadata's overrides.
    pub fn topic_config(&self, view: &View, name: &str) -> Result<EffectiveConfig> {
        match view {
            View::Single => Ok(self.broker.topic(name)?.config()),
            View::Cluster(state) => {
                let t = state
                    .topics
                    .get(name)
                    .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
                match self.broker.topic(name) {
                    Ok(local) if local.meta().id == t.id => Ok(local.config()),
                    _ => Ok(EffectiveConfig::new(
                        &self.broker.config().topic_defaults,
                        &t.configs,
                    )),
                }
            }
        }
    }

    /// A topic's config overrides.
    pub fn topic_overrides(&self, view: &View, name: &str) -> Result<BTreeMap<String, String>> {
        match view {
            View::Single => Ok(self.broker.topic(name)?.meta().configs),
            View::Cluster(state) => state
                .topics
                .get(name)
                .map(|t| t.configs.clone())
                .ok_or_else(|| BrokerError::UnknownTopic(name.to_string())),
        }
    }

    /// Creates a topic (through the controller on a cluster member); `replication_factor`
    /// 0 takes the broker's default.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i64,
        replication_factor: i64,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicView> {
        match self.cluster()? {
            None => {
                let t = self
                    .broker
                    .create_topic(name, partitions, replication_factor, configs)
                    .await?;
                Ok(self.local_view(&t.meta()))
            }
            Some(m) => {
                let t = m
                    .create_topic(name, partitions, replication_factor, configs)
                    .await?;
                Ok(record_view(&m.controller().state(), &t))
            }
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        match self.cluster()? {
            None => self.broker.delete_topic(name).await,
            Some(m) => m.delete_topic(name).await,
        }
    }

    /// Raises a topic's partition count (through the controller on a cluster member).
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i64,
        validate_only: bool,
    ) -> Result<()> {
        match self.cluster()? {
            None => self
                .broker
                .create_partitions(name, count, validate_only)
                .await
                .map(|_| ()),
            Some(m) => m
                .create_partitions(name, count, validate_only)
                .await
                .map(|_| ()),
        }
    }

    pub async fn alter_configs(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<()> {
        match self.cluster()? {
            None => self
                .broker
                .alter_configs(name, set, delete)
                .await
                .map(|_| ()),
            Some(m) => m.alter_configs(name, set, delete).await.map(|_| ()),
        }
    }

    fn local_view(&self, meta: &TopicMeta) -> TopicView {
        let node = self.node_id();
        let partitions = self
            .broker
            .topic(&meta.name)
            .map(|t| t.partitions().to_vec())
            .unwrap_or_default();
        TopicView {
            name: meta.name.clone(),
            id: meta.id.clone(),
            replication_factor: meta.replication_factor as i32,
            partitions: partitions
                .iter()
                .map(|p| PartitionView {
                    leader: Some(node),
                    leader_epoch: p.leader_epoch(),
                    replicas: vec![node],
                    isr: vec![node],
                    offline: Vec::new(),
                })
                .collect(),
        }
    }
}

fn record_view(state: &ClusterState, t: &TopicRecord) -> TopicView {
    let ids = |v: &[u64]| v.iter().map(|&id| id as i32).collect::<Vec<_>>();
    TopicView {
        name: t.name.clone(),
        id: t.id.clone(),
        replication_factor: t.partitions.first().map_or(0, |p| p.replicas.len() as i32),
        partitions: t
            .partitions
            .iter()
            .map(|p| PartitionView {
                leader: p.leader.map(|l| l as i32),
                leader_epoch: p.leader_epoch,
                replicas: ids(&p.replicas),
                isr: ids(&p.isr),
                offline: p
                    .replicas
                    .iter()
                    .filter(|r| state.brokers.get(r).is_none_or(|b| b.fenced))
                    .map(|&r| r as i32)
                    .collect(),
            })
            .collect(),
    }
}
