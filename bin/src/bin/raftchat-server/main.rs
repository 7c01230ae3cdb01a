//! `raftchat-server`: one member of a raftchat cluster on real TCP and a real disk. The binary
//! only parses flags and the cluster file; the node itself is the runtime the simulator tests.
//! It is only meaningful in the normal build: under `--cfg madsim` it compiles to a stub.

#[cfg(not(madsim))]
mod server;

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    server::main()
}

#[cfg(madsim)]
fn main() {
    eprintln!("raftchat-server: error: this build is for the simulator (--cfg madsim)");
    std::process::exit(2);
}
