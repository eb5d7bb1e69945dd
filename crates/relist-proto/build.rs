//! Compiles the top-level proto/ with protox (pure Rust), so building needs no system protoc.
use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(["relist/v1/relist.proto"], [&root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Server reflection serves this set, so grpcurl and Postman work without our files.
    fs::write(out_dir.join("relist_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
