//! raftchat's deterministic simulator (built with `--cfg madsim`).

fn main() {
    eprintln!("raftchat-sim: the madsim simulator is not built yet; see README");
    std::process::exit(2);
}
