//! Compiles the gRPC interfaces in `proto/` with protox (a protobuf compiler in Rust, so no
//! system `protoc` is needed) and generates tonic clients and servers from them. The encoded
//! descriptor set is kept for gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/xenoserve/common/v1/common.proto",
    "proto/xenoserve/corp/v1/corp.proto",
    "proto/xenoserve/server/v1/server.proto",
    "proto/xenoserve/taskmanager/v1/taskmanager.proto",
    "proto/xenoserve/xis/v1/xis.proto",
    "proto/xenoserve/rd/v1/rd.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("xenoserve_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
