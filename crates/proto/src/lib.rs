//! Generated code for the public gRPC API `strata.v1` (see `proto/strata/v1/strata.proto`).
//!
//! This crate holds generated code only; semantics live in `strata-broker` (server side)
//! and `strata-client` (client side).

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("strata.v1");
}
