//! Compiles the etcd v3 API and Berth's Raft peer protocol with protox (pure Rust, no
//! system `protoc` needed) and generates prost messages and tonic services.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/etcd/rpc.proto",
        "proto/etcd/kv.proto",
        "proto/raft.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
