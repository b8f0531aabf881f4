//! The Strata broker.
//!
//! Owns topics and partitions ([`broker`]), the semantics of produce, fetch, list-offsets
//! and admin requests, per-topic configs under Kafka's names ([`topic_config`]), broker
//! configuration ([`config`]), consumer groups and committed offsets ([`groups`]),
//! metrics ([`metrics`]) and its background work ([`tasks`]). It speaks no wire protocol:
//! errors carry a transport-neutral [`error::ErrorKind`], and the gRPC edge lives in
//! `strata-server`.
//!
//! Storage is delegated to `strata-log`: one log per partition. The broker validates
//! every produced batch (CRC, sizes, record count, `max.message.bytes`) before anything
//! is written, assigns offsets by rewriting batch headers, and serves fetches from the
//! stored bytes. With one broker the high watermark is the log end offset.

pub mod broker;
pub mod config;
pub mod deletion;
pub mod error;
mod flush;
pub mod groups;
pub mod metrics;
pub mod tasks;
pub mod tiering;
pub mod topic_config;

pub use broker::{Broker, validate_topic_name};
pub use config::BrokerConfig;
pub use error::BrokerError;
