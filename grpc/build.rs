//! Generates the message types and the service of `proto/rpc_service.proto` at build time,
//! without `protoc`: protox parses the file, tonic-prost-build writes the Rust.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/rpc_service.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
