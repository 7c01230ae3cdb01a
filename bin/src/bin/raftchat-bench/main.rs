//! `raftchat-bench`: send_message load, or a mix of sends and inbox polls, against a running
//! cluster through the client library, reporting throughput and latency percentiles. Only
//! meaningful in the normal build: under `--cfg madsim` it compiles to a stub.

#[cfg(not(madsim))]
/// `println!` that ignores a closed stdout (`raftchat ... | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[cfg(not(madsim))]
mod bench;
#[cfg(not(madsim))]
mod monitor;
#[cfg(not(madsim))]
#[path = "../raftchat/process.rs"]
mod process;

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    bench::main()
}

#[cfg(madsim)]
fn main() {
    eprintln!("raftchat-bench: error: this build is for the simulator (--cfg madsim)");
    std::process::exit(2);
}
