//! Compiles `proto/im.proto` (the client protocol) and `proto/link.proto`
//! (gateway to logic) into Rust types at build time.
//!
//! `protox` is a protobuf compiler written in Rust, so building the workspace
//! needs no `protoc` binary on the machine: a fresh clone builds with cargo alone.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/im.proto");
    println!("cargo:rerun-if-changed=proto/link.proto");
    let client = protox::compile(["im.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(client)?;
    // The link's messages refer to the client protocol's types where they
    // carry its frames: those are `crate::pb`, generated above. Its byte
    // fields are `Bytes`, so a frame passes through without a copy.
    let link = protox::compile(["link.proto"], ["proto"])?;
    prost_build::Config::new()
        .extern_path(".im.v1", "crate::pb")
        .bytes([".im.link.v1"])
        .compile_fds(link)?;
    Ok(())
}
