//! Generates the etcd v3 client from the trimmed protos in `proto/` without a
//! system `protoc` (the reason this crate exists instead of `etcd-client`,
//! whose build script needs one): `protox` parses them in pure Rust and
//! `tonic-prost-build` turns the descriptor set into messages and clients.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    let files = [root.join("etcd/kv.proto"), root.join("etcd/rpc.proto")];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
