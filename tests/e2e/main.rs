//! End-to-end tests: real brokers (in-process on an ephemeral port, or the `strata`
//! binary as a child process for crash tests), real gRPC over loopback sockets.

mod helpers;
mod history;
mod netns;

mod bad_input;
mod cli_roundtrip;
pub mod cluster;
mod compaction;
mod crash;
mod crash_matrix;
mod fuzz_smoke;
mod groups;
mod kafka;
mod long_poll;
mod moto;
mod power_loss;
mod s3;
mod security;
mod tiered;
mod topics;
