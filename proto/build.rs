//! Compiles `vigil/v1/*.proto` with protox (pure Rust), so no system `protoc`
//! is needed on a fresh machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["vigil/v1/ingest.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
