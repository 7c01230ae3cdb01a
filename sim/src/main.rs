//! raftchat-sim: runs whole raftchat clusters and their clients inside madsim from one seed,
//! injects faults, checks every safety property as the run goes and liveness and convergence
//! at its end, and replays any seed exactly. Build and run it with `cargo sim` (an alias that
//! compiles with `--cfg madsim` into target/sim).
//!
//! Exit codes: 0 every check passed; 1 a check failed; 2 usage or input error.

// Without madsim the binary is a stub that says how to build it; the modules compiled for their
// unit tests are unused there.
#![cfg_attr(not(madsim), allow(dead_code))]

mod checker;
#[cfg(all(test, madsim))]
mod deadline_tests;
mod disk;
#[cfg(test)]
mod durable_tests;
mod fleet;
mod history;
mod linearizability;
mod report;
mod scenario;
mod shrink;
mod trace;

#[cfg(madsim)]
mod cli;
#[cfg(madsim)]
mod cluster;
#[cfg(madsim)]
mod faults;
#[cfg(all(test, madsim, feature = "mutants"))]
mod mutant_tests;
#[cfg(madsim)]
mod nemesis;
#[cfg(madsim)]
mod random_faults;
#[cfg(all(test, madsim))]
mod scenario_tests;
#[cfg(madsim)]
mod workload;
#[cfg(madsim)]
mod world;

#[cfg(madsim)]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("raftchat-sim must be built with --cfg madsim: run it as `cargo sim ...`");
    std::process::exit(2);
}
