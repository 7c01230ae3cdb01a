//! The command line: `run` one seed, or `sweep` many seeds over scenarios on all cores.

use crate::cluster::{run_seed, RunOptions, RunReport};
use crate::scenario::Scenario;
use crate::trace::fnv1a;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// raftchat's deterministic simulator.
#[derive(Parser, Debug)]
#[command(name = "cargo sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one scenario with one seed; exit 1 if any check fails.
    Run {
        /// The scenario file.
        scenario: PathBuf,
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// Write the event trace (JSON lines) to this file.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Write the client history (JSON lines, Jepsen's convention) to this file.
        #[arg(long)]
        history: Option<PathBuf>,
        /// Run twice and require byte-identical traces and histories.
        #[arg(long)]
        check_determinism: bool,
        /// Switch on one known bug (see `cargo sim mutants`).
        #[cfg(feature = "mutants")]
        #[arg(long)]
        mutant: Option<String>,
    },
    /// Run many seeds of one or more scenarios in parallel; exit 1 if any seed fails.
    Sweep {
        /// The scenario files.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// How many seeds per scenario.
        #[arg(long)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Parallel jobs (default: every core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Run every seed twice and require identical traces.
        #[arg(long)]
        check_determinism: bool,
        /// Switch on one known bug (see `cargo sim mutants`).
        #[cfg(feature = "mutants")]
        #[arg(long)]
        mutant: Option<String>,
    },
    /// List the known bugs `--mutant` can switch on, one per line.
    #[cfg(feature = "mutants")]
    Mutants,
    /// Measure the simulator: wall time per seed, simulated seconds per wall second, messages
    /// per wall second, on one core (seeds run one after another).
    Bench {
        /// The scenario (default: the standard 5-node, 16-client, 60-second chaos scenario).
        #[arg(default_value = "sim/bench/standard.toml")]
        scenario: PathBuf,
        /// How many seeds.
        #[arg(long, default_value_t = 5)]
        seeds: u64,
    },
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { 2 } else { 0 };
        }
    };
    let result = match cli.command {
        Command::Run {
            scenario,
            seed,
            trace,
            history,
            check_determinism,
            #[cfg(feature = "mutants")]
            mutant,
        } => {
            #[cfg(feature = "mutants")]
            let selected = parse_mutant(mutant);
            #[cfg(not(feature = "mutants"))]
            let selected: Result<Selected, String> = Ok(());
            let (trace, history) = (trace.as_deref(), history.as_deref());
            selected.and_then(|m| run(&scenario, seed, trace, history, check_determinism, m))
        }
        Command::Sweep {
            scenarios,
            seeds,
            from,
            jobs,
            check_determinism,
            #[cfg(feature = "mutants")]
            mutant,
        } => {
            #[cfg(feature = "mutants")]
            let selected = parse_mutant(mutant);
            #[cfg(not(feature = "mutants"))]
            let selected: Result<Selected, String> = Ok(());
            selected.and_then(|m| sweep(&scenarios, seeds, from, jobs, check_determinism, m))
        }
        Command::Bench { scenario, seeds } => bench(&scenario, seeds),
        #[cfg(feature = "mutants")]
        Command::Mutants => {
            for mutant in raftchat::mutants::Mutant::ALL {
                println!("{}", mutant.name());
            }
            Ok(0)
        }
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            2
        }
    }
}

/// The known bug a run switches on, if the simulator is built with them.
#[cfg(feature = "mutants")]
type Selected = Option<raftchat::mutants::Mutant>;
/// Without the `mutants` feature there is nothing to select.
#[cfg(not(feature = "mutants"))]
type Selected = ();

#[cfg(feature = "mutants")]
fn parse_mutant(name: Option<String>) -> Result<Selected, String> {
    let Some(name) = name else { return Ok(None) };
    match raftchat::mutants::Mutant::from_name(&name) {
        Some(mutant) => Ok(Some(mutant)),
        None => Err(format!(
            "unknown mutant `{name}`; `cargo sim mutants` lists them"
        )),
    }
}

/// Switches the selected bug on for this thread; madsim runs each simulation on its caller's.
#[cfg_attr(not(feature = "mutants"), allow(unused_variables))]
fn activate(selected: Selected) {
    #[cfg(feature = "mutants")]
    raftchat::mutants::activate(selected);
}

fn mutant_flag(selected: Selected) -> String {
    #[cfg(feature = "mutants")]
    if let Some(mutant) = selected {
        return format!(" --mutant {}", mutant.name());
    }
    let _ = selected;
    String::new()
}

fn replay_command(scenario: &Path, seed: u64) -> String {
    format!(
        "cargo sim run {} --seed {seed} --trace trace.jsonl --history history.jsonl",
        scenario.display()
    )
}

fn run(
    path: &Path,
    seed: u64,
    trace_path: Option<&Path>,
    history_path: Option<&Path>,
    check_determinism: bool,
    mutant: Selected,
) -> Result<i32, String> {
    let scenario = Scenario::load(path).map_err(|e| e.to_string())?;
    activate(mutant);
    // One seed is cheap: always keep the trace, so a failure can show the events behind it.
    let options = RunOptions { trace: true };
    let started = Instant::now();
    let mut report = run_seed(&scenario, seed, options);
    let wall = started.elapsed();
    if check_determinism && report.violation.is_none() {
        let again = run_seed(&scenario, seed, options);
        if let Some(failure) = determinism_failure(&report, &again) {
            report.violation = Some(failure);
        }
    }
    if let Some(file) = trace_path {
        let bytes = report.trace.as_deref().unwrap_or_default();
        std::fs::write(file, bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    if let Some(file) = history_path {
        std::fs::write(file, &report.history).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    println!("{} seed {seed}: {}", scenario.name, report.drawn);
    println!("linearizability: {}", report.linearizability);
    Ok(match &report.violation {
        None => {
            println!("PASS {}", describe(&report, wall));
            0
        }
        Some(violation) => {
            let failure = &violation.failure;
            let node = failure.node.map_or("-".to_string(), |n| n.to_string());
            println!(
                "FAIL {} at {:.6}s on {node}: {}",
                failure.check,
                violation.time.as_secs_f64(),
                failure.detail
            );
            if !violation.context.is_empty() {
                println!("the events leading to it:\n{}", violation.context);
            }
            println!(
                "replay: {}{}",
                replay_command(path, seed),
                mutant_flag(mutant)
            );
            1
        }
    })
}

fn determinism_failure(first: &RunReport, second: &RunReport) -> Option<crate::world::Violation> {
    let hash = |r: &RunReport| {
        (
            fnv1a(r.trace.as_deref().unwrap_or_default()),
            fnv1a(&r.history),
        )
    };
    if hash(first) == hash(second) {
        return None;
    }
    let detail = format!(
        "two runs of the same seed differ: trace/history hashes {:016x}/{:016x} vs {:016x}/{:016x}",
        hash(first).0,
        hash(first).1,
        hash(second).0,
        hash(second).1
    );
    let failure = crate::checker::Failure {
        check: "determinism",
        node: None,
        detail,
    };
    Some(crate::world::Violation {
        failure,
        time: first.simulated,
        context: String::new(),
    })
}

fn describe(report: &RunReport, wall: std::time::Duration) -> String {
    let simulated = report.simulated.as_secs_f64();
    let (ok, fail, info) = report.operations;
    let recovery = report
        .recovery
        .map_or("-".into(), |r| format!("{:.3}s", r.as_secs_f64()));
    format!(
        "{simulated:.1}s simulated in {:.2}s wall ({:.0}x); {} operations ({ok} ok, {fail} fail, \
         {info} info); {} entries applied; {} leader terms; {} messages ({} dropped, {} \
         duplicated, {} delayed); {} disk syncs; {} snapshots taken, {} installed; recovery \
         after heal {recovery}",
        wall.as_secs_f64(),
        simulated / wall.as_secs_f64().max(1e-9),
        ok + fail + info,
        report.applied_entries,
        report.leader_terms,
        report.stats.messages_sent,
        report.stats.messages_dropped,
        report.stats.messages_duplicated,
        report.stats.messages_delayed,
        report.disk.syncs,
        report.stats.snapshots_taken,
        report.stats.snapshots_installed,
    )
}

struct Failed {
    scenario: PathBuf,
    seed: u64,
    line: String,
}

fn sweep(
    paths: &[PathBuf],
    seeds: u64,
    from: u64,
    jobs: Option<usize>,
    check_determinism: bool,
    mutant: Selected,
) -> Result<i32, String> {
    let scenarios: Vec<Scenario> = paths
        .iter()
        .map(|p| Scenario::load(p).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let work: Vec<(usize, u64)> = (0..scenarios.len())
        .flat_map(|s| (from..from.saturating_add(seeds)).map(move |seed| (s, seed)))
        .collect();
    let jobs = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let progress = indicatif::ProgressBar::new(work.len() as u64);
    progress.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} seeds, {elapsed} elapsed, {msg}",
        )
        .expect("a valid template"),
    );
    // Panics are caught and reported per seed; the default hook would print each one.
    std::panic::set_hook(Box::new(|_| {}));
    let next = AtomicUsize::new(0);
    let failed: Mutex<Vec<Failed>> = Mutex::new(Vec::new());
    let options = RunOptions {
        trace: check_determinism,
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                activate(mutant);
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(s, seed)) = work.get(k) else {
                    return;
                };
                let scenario = &scenarios[s];
                let mut report = run_seed(scenario, seed, options);
                if check_determinism && report.violation.is_none() {
                    let again = run_seed(scenario, seed, options);
                    report.violation = determinism_failure(&report, &again);
                }
                if let Some(v) = &report.violation {
                    let node = v.failure.node.map_or("-".to_string(), |n| n.to_string());
                    let line = format!(
                        "{} at {:.6}s on {node}: {} [{}]",
                        v.failure.check,
                        v.time.as_secs_f64(),
                        v.failure.detail,
                        report.drawn
                    );
                    let mut failed = failed.lock().expect("lock");
                    failed.push(Failed {
                        scenario: paths[s].clone(),
                        seed,
                        line,
                    });
                    progress.set_message(format!("{} failed", failed.len()));
                }
                progress.inc(1);
            });
        }
    });
    let _ = std::panic::take_hook();
    progress.finish_and_clear();
    let mut failed = failed.into_inner().expect("lock");
    failed.sort_by(|a, b| (&a.scenario, a.seed).cmp(&(&b.scenario, b.seed)));
    for f in &failed {
        println!("FAIL {} seed {}: {}", f.scenario.display(), f.seed, f.line);
        println!(
            "  replay: {}{}",
            replay_command(&f.scenario, f.seed),
            mutant_flag(mutant)
        );
    }
    println!(
        "{} passed, {} failed",
        work.len() - failed.len(),
        failed.len()
    );
    Ok(if failed.is_empty() { 0 } else { 1 })
}

fn bench(path: &Path, seeds: u64) -> Result<i32, String> {
    let scenario = Scenario::load(path).map_err(|e| e.to_string())?;
    let (mut wall_total, mut simulated_total, mut messages_total) = (0.0, 0.0, 0u64);
    let mut failed = 0;
    for seed in 0..seeds {
        let started = Instant::now();
        let report = run_seed(&scenario, seed, RunOptions::default());
        let wall = started.elapsed().as_secs_f64();
        let simulated = report.simulated.as_secs_f64();
        failed += usize::from(report.violation.is_some());
        println!(
            "seed {seed}: {wall:.2}s wall, {simulated:.1}s simulated ({:.0} sim-s/s), {} messages \
             ({:.0}/s), {} operations",
            simulated / wall,
            report.stats.messages_sent,
            report.stats.messages_sent as f64 / wall,
            report.operations.0 + report.operations.1 + report.operations.2,
        );
        wall_total += wall;
        simulated_total += simulated;
        messages_total += report.stats.messages_sent;
    }
    let n = seeds.max(1) as f64;
    println!(
        "{}: {:.2}s wall per seed; {:.0} simulated seconds per wall second; {:.0} messages per \
         wall second; {:.2} seeds per second per core",
        scenario.name,
        wall_total / n,
        simulated_total / wall_total.max(1e-9),
        messages_total as f64 / wall_total.max(1e-9),
        n / wall_total.max(1e-9),
    );
    Ok(if failed == 0 { 0 } else { 1 })
}
