//! Generates the `strata.v1` code with a vendored `protoc`, so a fresh machine needs
//! nothing installed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = proto_root.join("strata/v1/strata.proto");
    println!("cargo:rerun-if-changed={}", file.display());

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // `bytes` fields become `bytes::Bytes`: batches move from socket to disk without copies.
    config.bytes(["."]);
    tonic_prost_build::configure().compile_with_config(config, &[file], &[proto_root])?;
    Ok(())
}
