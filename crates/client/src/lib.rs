//! The Rust client for Strata.
//!
//! - [`Client`]: one connection to a broker, with the admin calls (topics, configs,
//!   offsets) and raw fetch/subscribe.
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

use std::collections::BTreeMap;
use std::time::Duration;

pub use error::{ClientError, Result};
pub use producer::{AckedBatch, Acks, Producer, ProducerConfig, ProducerStats};
pub use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;
use tonic::transport::{Channel, Endpoint};

/// The broker address clients use unless told otherwise.
pub const DEFAULT_BROKER: &str = "127.0.0.1:9292";
const MAX_MESSAGE: usize = 128 << 20;

/// A connection to one broker. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Client {
    inner: StrataClient<Channel>,
    addr: String,
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
    /// Connects to `addr` (`HOST:PORT` or `http://HOST:PORT`), failing fast if nothing
    /// listens there.
    pub async fn connect(addr: &str) -> Result<Self> {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| ClientError::InvalidAddress {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(16 << 20))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| {
                let mut reason = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    reason = s.to_string();
                    src = s.source();
                }
                ClientError::Unreachable {
                    addr: addr.to_string(),
                    reason,
                }
            })?;
        let inner = StrataClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Self {
            inner,
            addr: addr.to_string(),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn raw(&self) -> StrataClient<Channel> {
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

    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: pb::OffsetSpec,
        timestamp_ms: i64,
    ) -> Result<pb::ListOffsetsResponse> {
        let r = self
            .raw()
            .list_offsets(pb::ListOffsetsRequest {
                topic: topic.to_string(),
                partition,
                spec: spec as i32,
                timestamp_ms,
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner())
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
        let r = self
            .raw()
            .fetch(pb::FetchRequest {
                topic: topic.to_string(),
                partition,
                offset,
                max_bytes,
                min_bytes,
                max_wait_ms: max_wait.as_millis() as u32,
                format: pb::Format::Batches as i32,
                leader_epoch: None,
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner())
    }

    /// A server stream of batches from `offset` that follows the tail.
    pub async fn subscribe(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: u32,
    ) -> Result<tonic::Streaming<pb::FetchResponse>> {
        let r = self
            .raw()
            .subscribe(pb::SubscribeRequest {
                topic: topic.to_string(),
                partition,
                offset,
                max_bytes,
                format: pb::Format::Batches as i32,
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner())
    }

    pub async fn group_heartbeat(
        &self,
        req: pb::GroupHeartbeatRequest,
    ) -> Result<pb::GroupHeartbeatResponse> {
        let r = self
            .raw()
            .group_heartbeat(req)
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner())
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
        self.raw()
            .commit_offsets(pb::CommitOffsetsRequest {
                group: group.to_string(),
                member_id: member_id.to_string(),
                member_epoch,
                offsets,
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(())
    }

    /// Committed offsets of `group` for `partitions` (all committed ones if empty).
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: Vec<pb::TopicPartitions>,
    ) -> Result<Vec<pb::OffsetEntry>> {
        let r = self
            .raw()
            .fetch_committed_offsets(pb::FetchCommittedOffsetsRequest {
                group: group.to_string(),
                partitions,
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner().offsets)
    }

    /// The cluster's brokers and controller as the connected broker knows them.
    pub async fn describe_cluster(&self) -> Result<pb::DescribeClusterResponse> {
        let r = self
            .raw()
            .describe_cluster(pb::DescribeClusterRequest {})
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner())
    }

    pub async fn list_groups(&self) -> Result<Vec<pb::GroupSummary>> {
        let r = self
            .raw()
            .list_groups(pb::ListGroupsRequest {})
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner().groups)
    }

    pub async fn describe_group(&self, group: &str) -> Result<pb::GroupDescription> {
        let r = self
            .raw()
            .describe_group(pb::DescribeGroupRequest {
                group: group.to_string(),
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner())
    }

    pub async fn reset_group_offsets(
        &self,
        req: pb::ResetGroupOffsetsRequest,
    ) -> Result<Vec<pb::OffsetEntry>> {
        let r = self
            .raw()
            .reset_group_offsets(req)
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner().offsets)
    }

    pub async fn delete_group(&self, group: &str) -> Result<()> {
        self.raw()
            .delete_group(pb::DeleteGroupRequest {
                group: group.to_string(),
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(())
    }
}
