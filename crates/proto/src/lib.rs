//! Generated code for the public gRPC API `strata.v1` (see `proto/strata/v1/strata.proto`).
//!
//! This crate holds generated code only; semantics live in `strata-broker` (server side)
//! and `strata-client` (client side).

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("strata.v1");
}

/// The encoded descriptors of every message and service here, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strata_descriptor");

/// Broker-to-broker messages (`proto/strata/internal/v1/cluster.proto`): not a public API.
pub mod internal {
    pub mod v1 {
        tonic::include_proto!("strata.internal.v1");
    }
}
