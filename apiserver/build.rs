//! Compiles the Kubernetes schemas under `proto/` into one `FileDescriptorSet` that
//! `src/protobuf.rs` loads at run time to decode `application/vnd.kubernetes.protobuf` bodies,
//! and Berth's gRPC API (`proto/berth/v1/api.proto`) into prost messages and a tonic service.

use std::{env, fs, path::PathBuf};

/// The API groups Berth serves; the files they import come along.
const FILES: &[&str] = &[
    "k8s.io/api/core/v1/generated.proto",
    "k8s.io/api/apps/v1/generated.proto",
    "k8s.io/api/batch/v1/generated.proto",
    "k8s.io/api/discovery/v1/generated.proto",
    "k8s.io/api/coordination/v1/generated.proto",
    "k8s.io/api/rbac/v1/generated.proto",
    "k8s.io/api/certificates/v1/generated.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true);
    compiler.open_files(FILES)?;
    // Encoded by protox rather than through prost-types so that the berth.* field options survive.
    let out = PathBuf::from(env::var("OUT_DIR")?).join("k8s.fds");
    fs::write(out, compiler.encode_file_descriptor_set())?;

    let fds = protox::compile(["berth/v1/api.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
