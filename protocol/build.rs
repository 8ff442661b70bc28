//! Compiles `proto/im.proto` into Rust types at build time.
//!
//! `protox` is a protobuf compiler written in Rust, so building the workspace
//! needs no `protoc` binary on the machine: a fresh clone builds with cargo alone.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/im.proto");
    let descriptors = protox::compile(["im.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
