//! Generates the `strata.v1` (public) and `strata.internal.v1` (broker-to-broker) code with a vendored `protoc`, so a fresh machine needs
//! nothing installed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        proto_root.join("strata/v1/strata.proto"),
        proto_root.join("strata/internal/v1/cluster.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // `bytes` fields become `bytes::Bytes`: batches move from socket to disk without copies.
    config.bytes(["."]);
    // For gRPC server reflection: tools list and call the services with no .proto file.
    config.file_descriptor_set_path(
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("strata_descriptor.bin"),
    );
    tonic_prost_build::configure().compile_with_config(config, &files, &[proto_root])?;
    Ok(())
}
