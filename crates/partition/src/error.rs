//! The broker's one error type and its transport-neutral [`ErrorKind`].
//!
//! The core never speaks a wire protocol's error codes: each edge (the gRPC service,
//! a Kafka listener) maps [`ErrorKind`] to its own codes, once, in one place.

use strata_log::LogError;
use strata_record::RecordError;

/// What kind of failure an error is, for the edges to map to their own codes. Kinds
/// are finer than gRPC codes where a Kafka client needs the difference (an unknown
/// topic and an unknown partition, a too-large batch and a corrupt one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    UnknownTopic,
    UnknownPartition,
    TopicExists,
    InvalidTopicName,
    InvalidPartitions,
    InvalidReplicationFactor,
    InvalidConfig,
    /// A request that is malformed or not allowed as asked.
    InvalidRequest,
    MessageTooLarge,
    InvalidTimestamp,
    /// A batch that fails its checks (CRC, sizes, counts).
    CorruptMessage,
    OffsetOutOfRange,
    /// An append whose offsets do not continue the log.
    NonSequential,
    /// Stored data (local or remote) that fails its checks: never served.
    StorageCorrupt,
    /// Try again later: shutting down, a log out of service, the object store away.
    Unavailable,
    /// A local I/O failure.
    Internal,
    UnknownGroup,
    UnknownMember,
    FencedMemberEpoch,
    GroupNotEmpty,
    /// A group member acting on a partition it does not own.
    NotOwner,
    /// This broker is not the partition's leader (Kafka's NOT_LEADER_OR_FOLLOWER):
    /// refresh metadata and send to the leader.
    NotLeader,
    /// The request carries an older leader epoch than the partition's: the sender's
    /// metadata is stale.
    FencedLeaderEpoch,
    /// The request carries a newer leader epoch than this broker knows yet: retry.
    UnknownLeaderEpoch,
    /// Fewer in-sync replicas than `min.insync.replicas` for an `acks=all` produce.
    NotEnoughReplicas,
    /// The same, found once the batch was committed: it is written, with fewer copies
    /// than asked for.
    NotEnoughReplicasAfterAppend,
    /// The request did not complete in time; its outcome is unknown.
    Timeout,
    /// This broker does not coordinate the group (Kafka's NOT_COORDINATOR): the status
    /// names the coordinator.
    NotCoordinator,
    /// No broker can coordinate the group yet (Kafka's COORDINATOR_NOT_AVAILABLE).
    CoordinatorNotAvailable,
    /// An idempotent producer's batch that does not continue its sequence (Kafka's
    /// OUT_OF_ORDER_SEQUENCE_NUMBER): an earlier batch is missing.
    OutOfOrderSequence,
    /// An idempotent producer's batch from an epoch the partition has seen superseded
    /// (Kafka's INVALID_PRODUCER_EPOCH): a newer instance took over.
    InvalidProducerEpoch,
    /// The principal may not do this to the cluster (Kafka's
    /// CLUSTER_AUTHORIZATION_FAILED, gRPC's PERMISSION_DENIED).
    NotAuthorized,
    /// ... to a topic (Kafka's TOPIC_AUTHORIZATION_FAILED).
    TopicNotAuthorized,
    /// ... to a group (Kafka's GROUP_AUTHORIZATION_FAILED).
    GroupNotAuthorized,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown topic {0:?}; list topics with `strata topic list`")]
    UnknownTopic(String),
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: String },
    #[error("invalid partition count {0}: a topic needs at least 1 partition (at most 10000)")]
    InvalidPartitions(i64),
    #[error(
        "topic {topic:?} has {current} partitions; the new count {requested} must be larger (partitions are never removed: keys would map to others) and at most 10000"
    )]
    PartitionIncrease {
        topic: String,
        current: u32,
        requested: i64,
    },
    #[error(
        "partition {partition} does not exist in topic {topic:?}: valid partitions are 0..={max}"
    )]
    PartitionOutOfRange {
        topic: String,
        partition: u32,
        max: u32,
    },
    #[error(
        "replication factor {requested} needs {requested} brokers; this cluster has {available} (use --replication-factor 1)"
    )]
    ReplicationFactor { requested: i64, available: u32 },
    #[error("{0}")]
    InvalidConfig(String),
    #[error(
        "record batch of {size} bytes is larger than max.message.bytes={max} of topic {topic:?}; send smaller batches or raise max.message.bytes"
    )]
    MessageTooLarge {
        topic: String,
        size: usize,
        max: usize,
    },
    #[error(
        "record timestamp {timestamp} for {topic}-{partition} is {distance} ms {direction} the broker clock ({now}), past {key}={limit}; fix the producer's clock or timestamps, or raise {key}"
    )]
    InvalidTimestamp {
        topic: String,
        partition: u32,
        timestamp: i64,
        now: i64,
        distance: i64,
        direction: &'static str,
        key: &'static str,
        limit: i64,
    },
    #[error("invalid record batch for {topic}-{partition}: {source}")]
    InvalidBatch {
        topic: String,
        partition: u32,
        #[source]
        source: RecordError,
    },
    #[error("{0}")]
    InvalidRequest(String),
    /// The message names the principal, what it asked and what it lacks.
    #[error("{0}")]
    NotAuthorized(String),
    #[error("{0}")]
    TopicNotAuthorized(String),
    #[error("{0}")]
    GroupNotAuthorized(String),
    /// The log error names the partition (`topic-partition`) itself.
    #[error("{source}")]
    Log {
        topic: String,
        partition: u32,
        #[source]
        source: LogError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("broker is shutting down")]
    ShuttingDown,
    #[error("cold tier of {topic}-{partition}: {reason}")]
    Remote {
        topic: String,
        partition: u32,
        corrupt: bool,
        reason: String,
    },
    #[error("unknown group {0:?}; list groups with `strata group list`")]
    UnknownGroup(String),
    #[error(
        "unknown member {member:?} of group {group:?} (its session may have expired); rejoin with member_epoch 0"
    )]
    UnknownMember { group: String, member: String },
    #[error(
        "member {member:?} of group {group:?} sent member epoch {sent}, but its epoch is {current}: it has been fenced (a paused or partitioned member whose partitions may have moved on); rejoin with member_epoch 0"
    )]
    FencedMemberEpoch {
        group: String,
        member: String,
        sent: i32,
        current: i32,
    },
    #[error("group {group:?} has {members} live member(s); stop them before you {action}")]
    GroupNotEmpty {
        group: String,
        members: usize,
        action: &'static str,
    },
    #[error(
        "member {member:?} of group {group:?} does not own {topic}-{partition}; its commit is refused"
    )]
    NotOwner {
        group: String,
        member: String,
        topic: String,
        partition: u32,
    },
    #[error("this broker does not lead {topic}-{partition}; {}", match leader {
        Some(l) => format!("broker {l} does: send requests for it there (clients refresh metadata and retry)"),
        None => "it has no leader now (no in-sync replica is alive); retry when one returns".to_string(),
    })]
    NotLeader {
        topic: String,
        partition: u32,
        leader: Option<u64>,
    },
    #[error(
        "leader epoch {sent} for {topic}-{partition} is older than the current {current}: refresh metadata and retry"
    )]
    FencedLeaderEpoch {
        topic: String,
        partition: u32,
        sent: i32,
        current: i32,
    },
    #[error(
        "leader epoch {sent} for {topic}-{partition} is newer than this broker's {current}: it has not learned of the change yet; retry"
    )]
    UnknownLeaderEpoch {
        topic: String,
        partition: u32,
        sent: i32,
        current: i32,
    },
    #[error(
        "{topic}-{partition} has {isr} in-sync replica(s), fewer than min.insync.replicas={min}: an acks=all produce is refused and nothing was written; retry when replicas catch up, or use acks=1"
    )]
    NotEnoughReplicas {
        topic: String,
        partition: u32,
        isr: usize,
        min: usize,
    },
    #[error(
        "{topic}-{partition} has {isr} in-sync replica(s) left, fewer than min.insync.replicas={min}: the batch is written but with fewer copies than acks=all asks for"
    )]
    NotEnoughReplicasAfterAppend {
        topic: String,
        partition: u32,
        isr: usize,
        min: usize,
    },
    #[error("{0}")]
    Timeout(String),
    #[error("this broker is not the coordinator of group {group:?} (it is kept in {topic}-{partition}); {}", match leader {
        Some(l) => format!("broker {l} is: send the group's requests there (clients follow it and retry)"),
        None => "that partition has no leader now; retry when one returns".to_string(),
    })]
    NotCoordinator {
        group: String,
        topic: String,
        partition: u32,
        leader: Option<u64>,
    },
    #[error(
        "producer {producer_id} (epoch {epoch}) sent sequence {first_seq} to {topic}-{partition}, but {expected} comes next: a batch in between is missing; the producer must not skip a failed batch (start it again to get a new producer id)"
    )]
    OutOfOrderSequence {
        topic: String,
        partition: u32,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        expected: i32,
    },
    #[error(
        "producer {producer_id} sent epoch {sent} to {topic}-{partition}, but epoch {current} has written there since: this producer was superseded; stop it"
    )]
    InvalidProducerEpoch {
        topic: String,
        partition: u32,
        producer_id: i64,
        sent: i16,
        current: i16,
    },
    #[error("no broker coordinates consumer groups yet: {0}; retry shortly")]
    CoordinatorNotAvailable(String),
    /// A cluster change the controller could not make now (`retriable`) or refused.
    #[error("{reason}")]
    Controller { reason: String, retriable: bool },
    #[error(
        "offset {offset} is out of range for {topic}-{partition}: valid offsets are {start}..={end}"
    )]
    InvalidOffset {
        topic: String,
        partition: u32,
        offset: i64,
        start: i64,
        end: i64,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            Self::UnknownTopic(_) => K::UnknownTopic,
            Self::PartitionOutOfRange { .. } => K::UnknownPartition,
            Self::TopicExists(_) => K::TopicExists,
            Self::InvalidTopicName { .. } => K::InvalidTopicName,
            Self::InvalidPartitions(_) | Self::PartitionIncrease { .. } => K::InvalidPartitions,
            Self::InvalidConfig(_) => K::InvalidConfig,
            Self::MessageTooLarge { .. } => K::MessageTooLarge,
            Self::InvalidTimestamp { .. } => K::InvalidTimestamp,
            Self::InvalidBatch { .. } => K::CorruptMessage,
            Self::InvalidRequest(_) => K::InvalidRequest,
            Self::NotAuthorized(_) => K::NotAuthorized,
            Self::TopicNotAuthorized(_) => K::TopicNotAuthorized,
            Self::GroupNotAuthorized(_) => K::GroupNotAuthorized,
            Self::ReplicationFactor { .. } => K::InvalidReplicationFactor,
            Self::Log { source, .. } => match source {
                LogError::OffsetOutOfRange { .. } => K::OffsetOutOfRange,
                LogError::Corrupt { .. } => K::StorageCorrupt,
                LogError::OutOfService { .. } | LogError::SyncFailed { .. } => K::Unavailable,
                LogError::InvalidBatch(_) => K::CorruptMessage,
                LogError::NonSequential { .. } => K::NonSequential,
                LogError::Io { .. } => K::Internal,
            },
            Self::Io { .. } => K::Internal,
            Self::ShuttingDown => K::Unavailable,
            Self::UnknownGroup(_) => K::UnknownGroup,
            Self::Remote { corrupt: true, .. } => K::StorageCorrupt,
            Self::Remote { corrupt: false, .. } => K::Unavailable,
            Self::UnknownMember { .. } => K::UnknownMember,
            Self::FencedMemberEpoch { .. } => K::FencedMemberEpoch,
            Self::GroupNotEmpty { .. } => K::GroupNotEmpty,
            Self::NotOwner { .. } => K::NotOwner,
            Self::InvalidOffset { .. } => K::OffsetOutOfRange,
            Self::NotLeader { .. } => K::NotLeader,
            Self::FencedLeaderEpoch { .. } => K::FencedLeaderEpoch,
            Self::UnknownLeaderEpoch { .. } => K::UnknownLeaderEpoch,
            Self::NotEnoughReplicas { .. } => K::NotEnoughReplicas,
            Self::NotEnoughReplicasAfterAppend { .. } => K::NotEnoughReplicasAfterAppend,
            Self::Timeout(_) => K::Timeout,
            Self::NotCoordinator { .. } => K::NotCoordinator,
            Self::CoordinatorNotAvailable(_) => K::CoordinatorNotAvailable,
            Self::OutOfOrderSequence { .. } => K::OutOfOrderSequence,
            Self::InvalidProducerEpoch { .. } => K::InvalidProducerEpoch,
            Self::Controller {
                retriable: true, ..
            } => K::Unavailable,
            Self::Controller { .. } => K::InvalidRequest,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
