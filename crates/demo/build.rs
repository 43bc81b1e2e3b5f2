//! Generates the demo's gRPC service from `proto/` without a system `protoc`:
//! `protox` (pure Rust) parses the .proto into a FileDescriptorSet, which
//! `tonic-prost-build` turns into messages, client and server code.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    let file = root.join("switchyard/demo/v1/inventory.proto");
    println!("cargo:rerun-if-changed={}", file.display());

    // protox reports parse errors with file/line context; surface them as-is.
    let fds = protox::compile([&file], [root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
