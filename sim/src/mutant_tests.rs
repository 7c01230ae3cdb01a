//! Proof that the checkers bite: each known bug, switched on alone, must be caught by a sweep
//! of at most 200 seeds over the scenario library. The seeds go round-robin over the scenarios
//! (seed 0 of each, then seed 1 of each, ...), and each test reports how many runs it took.

use crate::cluster::{run_seed, RunOptions};
use crate::scenario_tests::scenarios;
use raftchat::mutants::{activate, Mutant};

/// Most runs a mutant may survive.
const RUNS_MAX: u64 = 200;

fn assert_caught(mutant: Mutant) {
    activate(Some(mutant));
    let library = scenarios();
    let mut runs = 0;
    for seed in 0.. {
        for scenario in &library {
            runs += 1;
            assert!(
                runs <= RUNS_MAX,
                "mutant {} survived {RUNS_MAX} runs",
                mutant.name()
            );
            let report = run_seed(scenario, seed, RunOptions::default());
            if let Some(violation) = report.violation {
                eprintln!(
                    "mutant {} caught after {runs} runs: {} seed {seed}, check {}: {}",
                    mutant.name(),
                    scenario.name,
                    violation.failure.check,
                    violation.failure.detail
                );
                activate(None);
                return;
            }
        }
    }
}

macro_rules! mutant_tests {
    ($($test:ident => $mutant:ident,)*) => {
        $(
            #[test]
            fn $test() {
                assert_caught(Mutant::$mutant);
            }
        )*
    };
}

mutant_tests! {
    mutant_vote_without_log_check_is_caught => VoteWithoutLogCheck,
    mutant_commit_prior_term_is_caught => CommitPriorTerm,
    mutant_vote_not_persisted_is_caught => VoteNotPersisted,
    mutant_apply_before_commit_is_caught => ApplyBeforeCommit,
    mutant_skip_prev_log_check_is_caught => SkipPrevLogCheck,
    mutant_no_conflict_truncation_is_caught => NoConflictTruncation,
    mutant_reply_before_apply_is_caught => ReplyBeforeApply,
    mutant_skip_session_dedup_is_caught => SkipSessionDedup,
    mutant_install_older_snapshot_is_caught => InstallOlderSnapshot,
    mutant_snapshot_without_sessions_is_caught => SnapshotWithoutSessions,
    mutant_compact_past_snapshot_is_caught => CompactPastSnapshot,
    mutant_keep_conflicting_suffix_is_caught => KeepConflictingSuffix,
}

#[test]
fn every_mutant_has_a_test_and_a_unique_name() {
    let mut names: Vec<&str> = Mutant::ALL.iter().map(|m| m.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), Mutant::ALL.len());
    assert!(Mutant::ALL.len() >= 12);
    for mutant in Mutant::ALL {
        assert_eq!(Mutant::from_name(mutant.name()), Some(mutant));
    }
}
