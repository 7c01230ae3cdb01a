//! The command line: `run` one seed, `sweep` many seeds over scenarios on all cores (or one
//! shard of them, or random seeds for a time budget), `merge` the shards of a sweep.

use crate::cluster::{run_drawn, run_seed, RunOptions, RunReport};
use crate::fleet::{self, RunRecord, Shard, SweepSpec};
use crate::scenario::{parse_schedule, Event, Scenario};
use crate::shrink::{self, Runner, ShrinkOptions};
use crate::trace::fnv1a;
use clap::{Parser, Subcommand};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
        /// Write a self-contained HTML page explaining the run (space-time diagram, client
        /// timeline, node status at a cursor, the failed check) to this file.
        #[arg(long, value_name = "FILE.html")]
        report: Option<PathBuf>,
        /// Write the run as a Chrome trace event file (for ui.perfetto.dev or
        /// chrome://tracing) to this file.
        #[arg(long, value_name = "FILE.json")]
        perfetto: Option<PathBuf>,
        /// Run twice and require byte-identical traces and histories.
        #[arg(long)]
        check_determinism: bool,
        /// Replay this fault schedule (`[[events]]` tables, as `--save-schedule` writes them)
        /// in place of the scenario's random faults and timed events.
        #[arg(long, value_name = "FILE")]
        schedule: Option<PathBuf>,
        /// Write what the nemesis did (every fault and repair, nodes resolved to ids) to FILE
        /// as `[[events]]` tables.
        #[arg(long, value_name = "FILE")]
        save_schedule: Option<PathBuf>,
        /// Switch on one known bug (see `cargo sim mutants`).
        #[cfg(feature = "mutants")]
        #[arg(long)]
        mutant: Option<String>,
    },
    /// Shrink a failing seed: the fewest faults and the simplest parameters that still fail
    /// the same check, written as a new scenario with explicit events.
    Shrink {
        /// The scenario file.
        scenario: PathBuf,
        /// The failing seed.
        #[arg(long)]
        seed: u64,
        /// Where to write the shrunk scenario (default: SCENARIO-NAME-SEED-shrunk.toml here).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Seeds tried per candidate: the one it last failed with, then the next ones.
        #[arg(long, default_value_t = 4)]
        seeds: u64,
        /// Candidates run at once (default: every core).
        #[arg(long)]
        jobs: Option<usize>,
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
        /// How many seeds per scenario (in all shards together).
        #[arg(long, required_unless_present = "time_budget")]
        seeds: Option<u64>,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Run only shard K of N (1-based): seed FROM + i of every scenario belongs to shard
        /// i mod N + 1, so N machines with shards 1..N run every seed once between them.
        #[arg(long, value_name = "K/N", conflicts_with = "time_budget")]
        shard: Option<Shard>,
        /// Instead of --seeds: run random seeds, scenario after scenario, until SECS seconds
        /// have passed, printing each.
        #[arg(long, value_name = "SECS", conflicts_with = "seeds")]
        time_budget: Option<u64>,
        /// Write one JSON line per run (scenario, seed, drawn parameters, result, check, wall
        /// time, the sweep's seeds and shard) to FILE, as the runs end.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write a JUnit XML report to FILE: a test case per failing seed, one per scenario for
        /// its passing seeds.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
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
    /// Merge the `--json` files of a sweep's shards: check that every seed of every scenario
    /// ran exactly once, and group the failures by check; exit 1 if a seed is missing, ran
    /// twice, or failed.
    Merge {
        /// The JSON lines files, one per shard.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the known bugs `--mutant` can switch on, one per line; with --score, measure how
    /// fast the scenarios catch each.
    #[cfg(feature = "mutants")]
    Mutants {
        /// Run every mutant over SCENARIOS (seed FROM of each, then FROM + 1 of each, ...) and
        /// print, per mutant, the runs until the first catch and the share of failing runs.
        #[arg(long, requires = "scenarios")]
        score: bool,
        /// The scenario files, with --score.
        scenarios: Vec<PathBuf>,
        /// Seeds per scenario, with --score.
        #[arg(long, default_value_t = 4)]
        seeds: u64,
        /// The first seed, with --score.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Parallel jobs (default: every core).
        #[arg(long)]
        jobs: Option<usize>,
    },
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
            report,
            perfetto,
            check_determinism,
            schedule,
            save_schedule,
            #[cfg(feature = "mutants")]
            mutant,
        } => {
            #[cfg(feature = "mutants")]
            let selected = parse_mutant(mutant);
            #[cfg(not(feature = "mutants"))]
            let selected: Result<Selected, String> = Ok(());
            let outputs = RunOutputs {
                trace,
                history,
                report,
                perfetto,
                schedule,
                save_schedule,
            };
            selected.and_then(|m| run(&scenario, seed, &outputs, check_determinism, m))
        }
        Command::Shrink {
            scenario,
            seed,
            out,
            seeds,
            jobs,
            #[cfg(feature = "mutants")]
            mutant,
        } => {
            #[cfg(feature = "mutants")]
            let selected = parse_mutant(mutant);
            #[cfg(not(feature = "mutants"))]
            let selected: Result<Selected, String> = Ok(());
            selected.and_then(|m| shrink(&scenario, seed, out, seeds, jobs, m))
        }
        Command::Sweep {
            scenarios,
            seeds,
            from,
            shard,
            time_budget,
            json,
            junit,
            jobs,
            check_determinism,
            #[cfg(feature = "mutants")]
            mutant,
        } => {
            #[cfg(feature = "mutants")]
            let selected = parse_mutant(mutant);
            #[cfg(not(feature = "mutants"))]
            let selected: Result<Selected, String> = Ok(());
            let seeds = match (seeds, time_budget) {
                (_, Some(secs)) => Seeds::Budget(Duration::from_secs(secs)),
                (Some(seeds), None) => Seeds::Range(SweepSpec {
                    from,
                    seeds,
                    shard: shard.unwrap_or(Shard::WHOLE),
                }),
                (None, None) => unreachable!("clap requires --seeds or --time-budget"),
            };
            let options = SweepOptions {
                seeds,
                jobs,
                check_determinism,
                json,
                junit,
            };
            selected.and_then(|m| sweep(&scenarios, &options, m))
        }
        Command::Merge { files } => merge(&files),
        Command::Bench { scenario, seeds } => bench(&scenario, seeds),
        #[cfg(feature = "mutants")]
        Command::Mutants {
            score: true,
            scenarios,
            seeds,
            from,
            jobs,
        } => score_mutants(&scenarios, from, seeds, jobs),
        #[cfg(feature = "mutants")]
        Command::Mutants { score: false, .. } => {
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
    mutant_name(selected).map_or(String::new(), |name| format!(" --mutant {name}"))
}

fn mutant_name(selected: Selected) -> Option<String> {
    #[cfg(feature = "mutants")]
    if let Some(mutant) = selected {
        return Some(mutant.name().to_owned());
    }
    let _ = selected;
    None
}

fn replay_command(scenario: &Path, seed: u64) -> String {
    format!(
        "cargo sim run {} --seed {seed} --trace trace.jsonl --history history.jsonl",
        scenario.display()
    )
}

/// The files `cargo sim run` reads or writes besides the scenario.
struct RunOutputs {
    trace: Option<PathBuf>,
    history: Option<PathBuf>,
    /// `--report`: the self-contained HTML page.
    report: Option<PathBuf>,
    /// `--perfetto`: the Chrome trace event file.
    perfetto: Option<PathBuf>,
    schedule: Option<PathBuf>,
    save_schedule: Option<PathBuf>,
}

fn run(
    path: &Path,
    seed: u64,
    outputs: &RunOutputs,
    check_determinism: bool,
    mutant: Selected,
) -> Result<i32, String> {
    let scenario = Scenario::load(path).map_err(|e| e.to_string())?;
    let mut drawn = scenario.draw(seed);
    let mut summary = drawn.summary(&scenario);
    if let Some(file) = &outputs.schedule {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let processes = drawn.nodes + drawn.spare_nodes;
        let events = parse_schedule(file, &text, processes, drawn.duration_secs)
            .map_err(|e| e.to_string())?;
        summary = format!("{summary} schedule={}", file.display());
        drawn = drawn.with_schedule(events);
    }
    activate(mutant);
    // One seed is cheap: always keep the trace, so a failure can show the events behind it.
    let options = RunOptions { trace: true };
    let started = Instant::now();
    let mut report = run_drawn(drawn.clone(), summary.clone(), seed, options);
    let wall = started.elapsed();
    if check_determinism && report.violation.is_none() {
        let again = run_drawn(drawn, summary, seed, options);
        if let Some(failure) = determinism_failure(&report, &again) {
            report.violation = Some(failure);
        }
    }
    let write = |file: &Path, bytes: &[u8]| {
        std::fs::write(file, bytes).map_err(|e| format!("{}: {e}", file.display()))
    };
    if let Some(file) = &outputs.trace {
        write(file, report.trace.as_deref().unwrap_or_default())?;
    }
    if let Some(file) = &outputs.history {
        write(file, &report.history)?;
    }
    if let Some(file) = &outputs.save_schedule {
        write(file, schedule_toml(&report.schedule).as_bytes())?;
    }
    let title = format!("{} seed {seed}{}", scenario.name, mutant_flag(mutant));
    write_explanations(outputs, &report, title)?;
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
            println!(
                "{} fault events in the schedule; shrink: cargo sim shrink {} --seed {seed}{}",
                shrink::fault_count(&report.schedule),
                path.display(),
                mutant_flag(mutant)
            );
            1
        }
    })
}

/// A schedule as a file `--schedule` reads back.
fn schedule_toml(events: &[Event]) -> String {
    let mut text = String::from(
        "# A fault schedule: what the nemesis did, nodes resolved to ids. Replay it with\n\
         # cargo sim run SCENARIO --seed N --schedule THIS-FILE\n",
    );
    for event in events {
        text.push('\n');
        text.push_str(&event.to_toml());
    }
    text
}

/// Runs shrink candidates: the scenario's pinned parameters with the mutant switched on.
struct SimRunner {
    mutant: Selected,
}

impl Runner for SimRunner {
    fn failing_check(&self, drawn: &crate::scenario::Drawn, seed: u64) -> Option<&'static str> {
        activate(self.mutant);
        let report = run_drawn(drawn.clone(), String::new(), seed, RunOptions::default());
        report.violation.map(|v| v.failure.check)
    }
}

fn shrink(
    path: &Path,
    seed: u64,
    out: Option<PathBuf>,
    seeds: u64,
    jobs: Option<usize>,
    mutant: Selected,
) -> Result<i32, String> {
    let scenario = Scenario::load(path).map_err(|e| e.to_string())?;
    let drawn = scenario.draw(seed);
    activate(mutant);
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let original = run_drawn(drawn.clone(), String::new(), seed, RunOptions::default());
    let Some(violation) = original.violation else {
        let _ = std::panic::take_hook();
        println!("{} seed {seed} passes: nothing to shrink", scenario.name);
        return Ok(0);
    };
    let check = violation.failure.check;
    let events_before = original.schedule.len();
    let faults_before = shrink::fault_count(&original.schedule);
    let simulated_before = original.simulated;
    println!(
        "{} seed {seed} fails {check} at {:.3}s: {faults_before} faults ({events_before} \
         events), {:.1} simulated seconds; shrinking",
        scenario.name,
        violation.time.as_secs_f64(),
        simulated_before.as_secs_f64()
    );
    let options = ShrinkOptions {
        seeds_per_candidate: seeds,
        jobs: jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1),
    };
    let runner = SimRunner { mutant };
    let recorded = drawn.with_schedule(original.schedule);
    let shrunk = shrink::shrink(&runner, &recorded, seed, check, violation.time, options);
    for line in &shrunk.log {
        println!("  {line}");
    }
    // The result, run once more as written: its replay must fail, and its numbers are these.
    activate(mutant);
    let last = run_drawn(
        shrunk.drawn.clone(),
        String::new(),
        shrunk.seed,
        RunOptions::default(),
    );
    let _ = std::panic::take_hook();
    let Some(last_violation) = last.violation.filter(|v| v.failure.check == check) else {
        println!(
            "the recorded schedule did not fail {check} again with seeds {seed}..{}: \
             the failure depends on the random faults' timing beyond their schedule",
            seed + seeds.max(1) - 1
        );
        return Ok(1);
    };
    let stem = match mutant_name(mutant) {
        Some(name) => format!("{}-{seed}-{name}-shrunk.toml", scenario.name),
        None => format!("{}-{seed}-shrunk.toml", scenario.name),
    };
    let out = out.unwrap_or_else(|| PathBuf::from(stem));
    let faults_after = shrink::fault_count(&shrunk.drawn.events);
    let replay = format!(
        "cargo sim run {} --seed {}{}",
        out.display(),
        shrunk.seed,
        mutant_flag(mutant)
    );
    let header = format!(
        "postmortem: (fill in: what went wrong, the fix, the commit)\n\
         \n\
         Shrunk by `cargo sim shrink {} --seed {seed}{}` from {faults_before} faults \
         ({events_before} events) and {:.1} simulated seconds to {faults_after} faults \
         ({} events) and {:.1} s.\n\
         It fails {check}: {}\n\
         Replay: {replay}",
        path.display(),
        mutant_flag(mutant),
        simulated_before.as_secs_f64(),
        shrunk.drawn.events.len(),
        last.simulated.as_secs_f64(),
        last_violation
            .failure
            .detail
            .lines()
            .next()
            .unwrap_or_default(),
    );
    std::fs::write(&out, shrunk.drawn.pinned_toml(&header))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "shrunk in {:.1}s wall ({} candidates, {} runs): {faults_before} -> {faults_after} \
         faults, {events_before} -> {} events, {:.1} -> {:.1} simulated seconds",
        started.elapsed().as_secs_f64(),
        shrunk.candidates,
        shrunk.runs,
        shrunk.drawn.events.len(),
        simulated_before.as_secs_f64(),
        last.simulated.as_secs_f64()
    );
    println!("wrote {}; replay: {replay}", out.display());
    Ok(1)
}

fn write_explanations(outputs: &RunOutputs, run: &RunReport, title: String) -> Result<(), String> {
    if outputs.report.is_none() && outputs.perfetto.is_none() {
        return Ok(());
    }
    let source = crate::report::Source {
        title,
        trace: run.trace.as_deref().unwrap_or_default(),
        history: &run.history,
        failed: run.violation.as_ref().map(|v| crate::report::Failed {
            time_ns: v.time.as_nanos() as u64,
            node: v.failure.node.map(|n| format!("{n}")),
            check: v.failure.check.to_owned(),
            detail: v.failure.detail.clone(),
        }),
    };
    let write = |file: &Path, bytes: &[u8]| {
        std::fs::write(file, bytes).map_err(|e| format!("{}: {e}", file.display()))
    };
    let extracted =
        crate::report::extract(source.trace, source.history).map_err(|e| e.to_string())?;
    if let Some(file) = &outputs.report {
        write(file, crate::report::html(&source, &extracted).as_bytes())?;
    }
    if let Some(file) = &outputs.perfetto {
        write(file, &crate::report::perfetto(&source, &extracted))?;
    }
    Ok(())
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

/// Which seeds a sweep runs.
enum Seeds {
    /// A range of every scenario's seeds, or one shard of it.
    Range(SweepSpec),
    /// Random seeds until the time is up.
    Budget(Duration),
}

struct SweepOptions {
    seeds: Seeds,
    jobs: Option<usize>,
    check_determinism: bool,
    json: Option<PathBuf>,
    junit: Option<PathBuf>,
}

/// Where the next run of a sweep comes from.
enum Work {
    Fixed(Vec<(usize, u64)>),
    Budget {
        deadline: Instant,
        rng: Box<Mutex<ChaCha8Rng>>,
        scenarios: usize,
    },
}

impl Work {
    /// The `k`th run: which scenario, which seed; `None` when the sweep is done.
    fn get(&self, k: usize) -> Option<(usize, u64)> {
        match self {
            Work::Fixed(runs) => runs.get(k).copied(),
            Work::Budget {
                deadline,
                rng,
                scenarios,
            } => (Instant::now() < *deadline)
                .then(|| (k % scenarios, rng.lock().expect("lock").gen())),
        }
    }
}

fn sweep(paths: &[PathBuf], options: &SweepOptions, mutant: Selected) -> Result<i32, String> {
    let scenarios: Vec<Scenario> = paths
        .iter()
        .map(|p| Scenario::load(p).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let (work, spec) = match options.seeds {
        Seeds::Range(spec) => {
            let runs = (0..scenarios.len())
                .flat_map(|s| {
                    (spec.from..spec.from.saturating_add(spec.seeds))
                        .filter(move |&seed| spec.shard.holds(spec.from, seed))
                        .map(move |seed| (s, seed))
                })
                .collect();
            (Work::Fixed(runs), Some(spec))
        }
        Seeds::Budget(budget) => {
            let master = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let work = Work::Budget {
                deadline: Instant::now() + budget,
                rng: Box::new(Mutex::new(ChaCha8Rng::seed_from_u64(master))),
                scenarios: scenarios.len(),
            };
            (work, None)
        }
    };
    let json = match &options.json {
        Some(path) => Some(Mutex::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
        ))),
        None => None,
    };
    let jobs = options
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let progress = match &work {
        Work::Fixed(runs) => {
            let bar = indicatif::ProgressBar::new(runs.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} seeds, {elapsed} elapsed, {msg}",
                )
                .expect("a valid template"),
            );
            bar
        }
        Work::Budget { .. } => {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {pos} seeds, {elapsed} elapsed, {msg}",
                )
                .expect("a valid template"),
            );
            bar
        }
    };
    progress.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    // Panics are caught and reported per seed; the default hook would print each one.
    std::panic::set_hook(Box::new(|_| {}));
    let next = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    let records: Mutex<Vec<RunRecord>> = Mutex::new(Vec::new());
    let write_error: Mutex<Option<String>> = Mutex::new(None);
    let run_options = RunOptions {
        trace: options.check_determinism,
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                activate(mutant);
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some((s, seed)) = work.get(k) else {
                    return;
                };
                let scenario = &scenarios[s];
                let started = Instant::now();
                let mut report = run_seed(scenario, seed, run_options);
                if options.check_determinism && report.violation.is_none() {
                    let again = run_seed(scenario, seed, run_options);
                    report.violation = determinism_failure(&report, &again);
                }
                let record = RunRecord {
                    scenario: paths[s].display().to_string(),
                    seed,
                    drawn: report.drawn.clone(),
                    result: if report.violation.is_some() {
                        "fail"
                    } else {
                        "pass"
                    }
                    .into(),
                    check: report
                        .violation
                        .as_ref()
                        .map(|v| v.failure.check.to_owned()),
                    detail: report.violation.as_ref().map(|v| {
                        let node = v.failure.node.map_or("-".to_string(), |n| n.to_string());
                        format!(
                            "at {:.6}s on {node}: {}",
                            v.time.as_secs_f64(),
                            v.failure.detail
                        )
                    }),
                    wall_ms: started.elapsed().as_millis() as u64,
                    sweep: spec,
                    mutant: mutant_name(mutant),
                };
                if let Some(json) = &json {
                    let line = serde_json::to_string(&record).expect("a record serializes");
                    let mut file = json.lock().expect("lock");
                    if let Err(error) = writeln!(file, "{line}").and_then(|()| file.flush()) {
                        write_error
                            .lock()
                            .expect("lock")
                            .get_or_insert(error.to_string());
                    }
                }
                if matches!(work, Work::Budget { .. }) {
                    let outcome = match &record.check {
                        None => "PASS".to_owned(),
                        Some(check) => format!("FAIL {check}"),
                    };
                    progress.suspend(|| {
                        println!("{} seed {seed}: {outcome}", record.scenario);
                    });
                }
                if record.check.is_some() {
                    let failed = failures.fetch_add(1, Ordering::Relaxed) + 1;
                    progress.set_message(format!("{failed} failed"));
                }
                records.lock().expect("lock").push(record);
                progress.inc(1);
            });
        }
    });
    let _ = std::panic::take_hook();
    progress.finish_and_clear();
    let mut records = records.into_inner().expect("lock");
    records.sort_by(|a, b| (&a.scenario, a.seed).cmp(&(&b.scenario, b.seed)));
    if let (Some(path), Some(error)) = (&options.json, write_error.into_inner().expect("lock")) {
        return Err(format!("{}: {error}", path.display()));
    }
    if let Some(path) = &options.junit {
        std::fs::write(path, fleet::junit(&records))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let failed: Vec<&RunRecord> = records.iter().filter(|r| r.check.is_some()).collect();
    for f in &failed {
        println!(
            "FAIL {} seed {}: {} {} [{}]",
            f.scenario,
            f.seed,
            f.check.as_deref().unwrap_or_default(),
            f.detail.as_deref().unwrap_or_default(),
            f.drawn
        );
        println!("  replay: {}", f.replay());
    }
    if let Some(spec) = spec.filter(|spec| spec.shard != Shard::WHOLE) {
        println!("shard {}/{}:", spec.shard.index, spec.shard.count);
    }
    println!(
        "{} passed, {} failed",
        records.len() - failed.len(),
        failed.len()
    );
    Ok(if failed.is_empty() { 0 } else { 1 })
}

/// Median runs to the first catch the library should reach, and the most any mutant may take.
#[cfg(feature = "mutants")]
const SCORE_GOAL: (usize, usize) = (20, 100);

/// `cargo sim mutants --score`: every mutant over every scenario and seed, in the round-robin
/// order the mutant tests use, so "caught after N runs" means the same in both.
#[cfg(feature = "mutants")]
fn score_mutants(
    paths: &[PathBuf],
    from: u64,
    seeds: u64,
    jobs: Option<usize>,
) -> Result<i32, String> {
    use raftchat::mutants::Mutant;
    let scenarios: Vec<Scenario> = paths
        .iter()
        .map(|p| Scenario::load(p).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let per_mutant = scenarios.len() * seeds as usize;
    let work: Vec<(usize, usize)> = (0..Mutant::ALL.len())
        .flat_map(|m| (0..per_mutant).map(move |run| (m, run)))
        .collect();
    let caught: Mutex<Vec<Vec<Option<&'static str>>>> =
        Mutex::new(vec![vec![None; per_mutant]; Mutant::ALL.len()]);
    let jobs = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let progress = indicatif::ProgressBar::new(work.len() as u64);
    progress.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    std::panic::set_hook(Box::new(|_| {}));
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let Some(&(m, run)) = work.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                raftchat::mutants::activate(Some(Mutant::ALL[m]));
                let scenario = &scenarios[run % scenarios.len()];
                let seed = from + (run / scenarios.len()) as u64;
                let report = run_seed(scenario, seed, RunOptions::default());
                if let Some(violation) = report.violation {
                    caught.lock().expect("lock")[m][run] = Some(violation.failure.check);
                }
                progress.inc(1);
            });
        }
    });
    let _ = std::panic::take_hook();
    progress.finish_and_clear();
    let caught = caught.into_inner().expect("lock");
    println!(
        "{per_mutant} runs per mutant ({} scenarios x {seeds} seeds from {from})",
        scenarios.len()
    );
    println!(
        "{:<26} {:>12} {:>9}  caught by",
        "mutant", "first catch", "failing"
    );
    let mut firsts = Vec::new();
    for (m, runs) in caught.iter().enumerate() {
        let first = runs.iter().position(Option::is_some).map(|p| p + 1);
        let failing = runs.iter().filter(|r| r.is_some()).count();
        let mut checks: std::collections::BTreeMap<&str, usize> = Default::default();
        for check in runs.iter().flatten() {
            *checks.entry(check).or_default() += 1;
        }
        let checks: Vec<String> = checks.iter().map(|(c, n)| format!("{c} {n}")).collect();
        println!(
            "{:<26} {:>12} {:>8.1}%  {}",
            Mutant::ALL[m].name(),
            first.map_or("never".to_owned(), |f| f.to_string()),
            100.0 * failing as f64 / per_mutant.max(1) as f64,
            checks.join(", ")
        );
        // A mutant never caught counts as one run past the end.
        firsts.push(first.unwrap_or(per_mutant + 1));
    }
    firsts.sort_unstable();
    let shown = |runs: usize| {
        if runs > per_mutant {
            "never".to_owned()
        } else {
            runs.to_string()
        }
    };
    let median = firsts[firsts.len() / 2];
    let slowest = *firsts.last().expect("mutants exist");
    let all_caught = slowest <= per_mutant;
    let (median_goal, slowest_goal) = SCORE_GOAL;
    let met = all_caught && median <= median_goal && slowest <= slowest_goal;
    println!(
        "median first catch {} runs, slowest {} (goal: median <= {median_goal}, none above \
         {slowest_goal}): {}",
        shown(median),
        shown(slowest),
        if met { "met" } else { "MISSED" }
    );
    Ok(if all_caught { 0 } else { 1 })
}

fn merge(paths: &[PathBuf]) -> Result<i32, String> {
    let files = paths
        .iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((path.display().to_string(), text))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let merged = fleet::merge(&files)?;
    print!("{}", merged.report());
    Ok(if merged.is_clean() { 0 } else { 1 })
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
