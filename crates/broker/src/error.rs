//! The broker's one error type and its mapping to gRPC status codes.

use strata_log::LogError;
use strata_record::RecordError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic {0:?}; list topics with `strata topic list`")]
    UnknownTopic(String),
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: String },
    #[error("invalid partition count {0}: a topic needs at least 1 partition (at most 10000)")]
    InvalidPartitions(i64),
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

impl BrokerError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Self::UnknownTopic(_) => Code::NotFound,
            Self::PartitionOutOfRange { .. } => Code::NotFound,
            Self::TopicExists(_) => Code::AlreadyExists,
            Self::InvalidTopicName { .. }
            | Self::InvalidPartitions(_)
            | Self::InvalidConfig(_)
            | Self::MessageTooLarge { .. }
            | Self::InvalidTimestamp { .. }
            | Self::InvalidBatch { .. }
            | Self::InvalidRequest(_) => Code::InvalidArgument,
            Self::ReplicationFactor { .. } => Code::FailedPrecondition,
            Self::Log { source, .. } => match source {
                LogError::OffsetOutOfRange { .. } => Code::OutOfRange,
                LogError::Corrupt { .. } => Code::DataLoss,
                LogError::OutOfService { .. } | LogError::SyncFailed { .. } => Code::Unavailable,
                LogError::InvalidBatch(_) => Code::InvalidArgument,
                LogError::NonSequential { .. } => Code::FailedPrecondition,
                LogError::Io { .. } => Code::Internal,
            },
            Self::Io { .. } => Code::Internal,
            Self::ShuttingDown => Code::Unavailable,
            Self::UnknownGroup(_) => Code::NotFound,
            Self::Remote { corrupt: true, .. } => Code::DataLoss,
            Self::Remote { corrupt: false, .. } => Code::Unavailable,
            // Distinct from NOT_FOUND (unknown topic): the member must rejoin.
            Self::UnknownMember { .. } | Self::FencedMemberEpoch { .. } => Code::Aborted,
            Self::GroupNotEmpty { .. } | Self::NotOwner { .. } => Code::FailedPrecondition,
            Self::InvalidOffset { .. } => Code::OutOfRange,
        }
    }
}

impl From<BrokerError> for Status {
    fn from(e: BrokerError) -> Self {
        let code = e.code();
        if matches!(code, Code::Internal | Code::DataLoss) {
            tracing::error!(error = %e, "request failed");
        }
        Status::new(code, e.to_string())
    }
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
