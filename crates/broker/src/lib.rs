//! The Strata broker.
//!
//! Owns topics and partitions ([`broker`]), the semantics of produce, fetch, list-offsets
//! and admin requests, per-topic configs under Kafka's names ([`topic_config`]), broker
//! configuration ([`config`]), consumer groups and committed offsets ([`groups`]),
//! metrics ([`metrics`]) and its background work ([`tasks`]). It speaks no wire protocol:
//! errors carry a transport-neutral [`error::ErrorKind`], and the gRPC edge lives in
//! `strata-server`.
//!
//! Each partition is a `strata_partition::Partition` (log, LEO, high watermark, epoch,
//! role, its share of the cold tier); the broker holds them in its topic registry and
//! drives them. Dependencies point one way: `strata-server` → `strata-broker` →
//! `strata-partition` → `strata-log`/`strata-tier` → `strata-record`.

pub mod broker;
pub mod config;
pub mod deletion;
pub mod groups;
pub mod producer_ids;
pub mod quotas;
pub mod replication;
pub mod security;
pub mod tasks;
pub mod tiering;

/// The core's error type and its transport-neutral kind (owned by `strata-partition`).
pub mod error {
    pub use strata_partition::error::{Error as BrokerError, ErrorKind, Result};
}
pub use strata_partition::{metrics, topic_config};

pub use broker::{Broker, validate_topic_name};
pub use config::BrokerConfig;
pub use error::BrokerError;
