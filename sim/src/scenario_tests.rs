//! Every scenario in `scenarios/` runs as a test: a handful of seeds each must pass every
//! check, and one seed run twice must produce byte-identical traces and histories.

use crate::cluster::{run_seed, RunOptions};
use crate::scenario::Scenario;
use crate::trace::fnv1a;
use std::path::PathBuf;

/// Seeds per scenario in the test suite (.ci/run's smoke sweep takes the next ones); sweeps
/// run many more.
const SEEDS_PER_SCENARIO: u64 = 4;

/// The scenario library, sorted by file name.
pub(crate) fn scenarios() -> Vec<Scenario> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the scenarios directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no scenarios in {}", dir.display());
    paths
        .iter()
        .map(|p| Scenario::load(p).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

#[test]
fn every_scenario_passes_its_seeds() {
    let mut failures = Vec::new();
    for scenario in scenarios() {
        assert!(
            !scenario.story.is_empty(),
            "{}: the first line must tell its story",
            scenario.name
        );
        for seed in 0..SEEDS_PER_SCENARIO {
            let report = run_seed(&scenario, seed, RunOptions::default());
            if let Some(v) = report.violation {
                failures.push(format!(
                    "{} seed {seed}: {} at {:?}: {}",
                    scenario.name, v.failure.check, v.time, v.failure.detail
                ));
            } else {
                assert!(
                    report.operations.0 > 0,
                    "{} seed {seed}: no operation succeeded",
                    scenario.name
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "failing seeds:\n{}",
        failures.join("\n")
    );
}

/// Seeds that once failed, each with its postmortem: what the bug was. Each must pass for good
/// (as long as its scenario file and the draw keep their meaning).
const REGRESSIONS: [(&str, u64, &str); 2] = [
    (
        "seven-nodes",
        105,
        "a new snapshot transfer deleted the file of one still being checked; the check's \
         disk error stopped the node",
    ),
    (
        "restart-storm",
        1003,
        "after an install that kept the log's suffix, the next segment began at the snapshot's \
         index, and compaction deleted the segment that held the suffix: a gap at recovery",
    ),
];

#[test]
fn seeds_that_once_failed_pass() {
    let library = scenarios();
    for (name, seed, postmortem) in REGRESSIONS {
        let scenario = library
            .iter()
            .find(|s| s.name == name)
            .expect("the scenario");
        let report = run_seed(scenario, seed, RunOptions::default());
        if let Some(v) = report.violation {
            panic!(
                "{name} seed {seed} fails again ({postmortem}): {} at {:?}: {}",
                v.failure.check, v.time, v.failure.detail
            );
        }
    }
}

#[test]
fn every_scenario_replays_byte_for_byte() {
    for scenario in scenarios() {
        let options = RunOptions { trace: true };
        let first = run_seed(&scenario, 7, options);
        let second = run_seed(&scenario, 7, options);
        let trace = |r: &crate::cluster::RunReport| fnv1a(r.trace.as_deref().unwrap_or_default());
        assert!(
            first.trace.as_ref().is_some_and(|t| !t.is_empty()),
            "{}: empty trace",
            scenario.name
        );
        assert_eq!(
            trace(&first),
            trace(&second),
            "{}: traces differ",
            scenario.name
        );
        assert_eq!(
            fnv1a(&first.history),
            fnv1a(&second.history),
            "{}: histories differ",
            scenario.name
        );
    }
}

#[test]
fn a_broken_scenario_file_is_one_clear_error() {
    let dir = std::env::temp_dir().join(format!("raftchat-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "# bad\n[workload]\nclients = 0\n").unwrap();
    let error = Scenario::load(&path).unwrap_err().to_string();
    assert!(
        error.contains("bad.toml") && error.contains("workload.clients"),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
}
