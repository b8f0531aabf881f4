//! The fuzz targets' bodies, in `targets.rs`: the e2e suite includes the same file for
//! its fuzz smoke test, so both run exactly this code.
pub mod targets;
