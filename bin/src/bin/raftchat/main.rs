//! `raftchat`: the chat client (one command, or an interactive prompt) and the local cluster
//! launcher (`raftchat cluster up | down`). Only meaningful in the normal build: under
//! `--cfg madsim` it compiles to a stub.

#[cfg(not(madsim))]
/// `println!` that ignores a closed stdout (`raftchat ... | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[cfg(not(madsim))]
mod chat;
#[cfg(not(madsim))]
mod cli;
#[cfg(not(madsim))]
mod local_cluster;
#[cfg(not(madsim))]
mod members;
#[cfg(not(madsim))]
mod process;
#[cfg(not(madsim))]
mod prompt;

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(madsim)]
fn main() {
    eprintln!("raftchat: error: this build is for the simulator (--cfg madsim)");
    std::process::exit(2);
}
