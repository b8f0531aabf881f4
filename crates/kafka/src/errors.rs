//! The one mapping from the broker core's error kinds to Kafka's error codes. Every
//! failure a client can act on gets the code a Kafka broker would send (so clients
//! retry, refresh metadata or give up as they would against Kafka); the connection is
//! never closed for one.

use kafka_protocol::ResponseError as E;
use strata_broker::error::{BrokerError, ErrorKind};

/// Kafka's error code for `e`.
pub fn code(e: &BrokerError) -> i16 {
    kind_code(e.kind())
}

/// Kafka's error code for an error kind.
pub fn kind_code(kind: ErrorKind) -> i16 {
    use ErrorKind as K;
    let e = match kind {
        K::UnknownTopic | K::UnknownPartition => E::UnknownTopicOrPartition,
        K::TopicExists => E::TopicAlreadyExists,
        K::InvalidTopicName => E::InvalidTopicException,
        K::InvalidPartitions => E::InvalidPartitions,
        K::InvalidReplicationFactor => E::InvalidReplicationFactor,
        K::InvalidConfig => E::InvalidConfig,
        K::InvalidRequest | K::NonSequential => E::InvalidRequest,
        K::MessageTooLarge => E::MessageTooLarge,
        K::InvalidTimestamp => E::InvalidTimestamp,
        K::CorruptMessage => E::CorruptMessage,
        K::OffsetOutOfRange => E::OffsetOutOfRange,
        K::StorageCorrupt | K::Internal => E::KafkaStorageError,
        K::Unavailable => E::LeaderNotAvailable,
        K::UnknownGroup => E::GroupIdNotFound,
        K::UnknownMember => E::UnknownMemberId,
        K::FencedMemberEpoch => E::FencedMemberEpoch,
        K::GroupNotEmpty => E::NonEmptyGroup,
        K::NotOwner => E::IllegalGeneration,
        K::NotLeader => E::NotLeaderOrFollower,
        K::FencedLeaderEpoch => E::FencedLeaderEpoch,
        K::UnknownLeaderEpoch => E::UnknownLeaderEpoch,
        K::NotEnoughReplicas => E::NotEnoughReplicas,
        K::NotEnoughReplicasAfterAppend => E::NotEnoughReplicasAfterAppend,
        K::Timeout => E::RequestTimedOut,
        K::NotCoordinator => E::NotCoordinator,
        K::CoordinatorNotAvailable => E::CoordinatorNotAvailable,
        K::OutOfOrderSequence => E::OutOfOrderSequenceNumber,
        K::InvalidProducerEpoch => E::InvalidProducerEpoch,
        K::NotAuthorized => E::ClusterAuthorizationFailed,
        K::TopicNotAuthorized => E::TopicAuthorizationFailed,
        K::GroupNotAuthorized => E::GroupAuthorizationFailed,
    };
    e.code()
}

/// The message sent beside the code where the version has room for one; failures
/// that point at the broker itself are logged here too.
pub fn message(e: &BrokerError) -> String {
    if matches!(e.kind(), ErrorKind::StorageCorrupt | ErrorKind::Internal) {
        tracing::error!(error = %e, "kafka request failed");
    }
    e.to_string()
}
