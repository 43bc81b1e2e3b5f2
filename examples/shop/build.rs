//! Generates the shop's gRPC services from `proto/` without a system
//! `protoc` (`protox` parses the file, `tonic-prost-build` writes the code).

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    let file = root.join("shop/v1/shop.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
