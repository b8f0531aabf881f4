//! A Strata partition replica and what it owns.
//!
//! - [`partition`]: the [`Partition`]: its log, log end offset, high watermark, leader
//!   epoch and role; produce checks and append, long-poll fetch over both tiers,
//!   list-offsets, local retention and compaction of its log.
//! - [`replica`]: the partition's part in replication: roles from the controller, the
//!   leader's side of follower fetches and in-sync-set changes, the follower's
//!   appends and truncation.
//! - [`tier`]: the partition's share of the cold tier: offload below the high
//!   watermark, remote retention, the manifest copy, produce back-pressure.
//! - [`topic_config`]: per-topic configs under Kafka's names, validated.
//! - [`error`]: the one error type of the core, with its transport-neutral
//!   [`ErrorKind`] that each edge (gRPC, Kafka) maps to its own codes.
//! - [`metrics`]: the broker's counters and histograms; [`flush`]: `flush.ms` timers.
//!
//! Nothing here knows of topics as a registry, of groups or of any wire protocol: the
//! broker (`strata-broker`) owns those and drives partitions through this API.

pub mod error;
pub mod flush;
pub mod metrics;
pub mod partition;
pub mod producers;
pub mod replica;
pub mod tier;
pub mod topic_config;

pub use error::{Error, ErrorKind, Result};
pub use partition::{
    Fetched, OffsetQuery, Partition, PartitionState, PlainRecord, Produced, Role, Shared,
};
