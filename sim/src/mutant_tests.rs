//! Proof that the checkers bite: each known bug, switched on alone, must be caught by a sweep
//! of at most 200 seeds over the scenario library. The seeds go round-robin over the scenarios
//! (seed 0 of each, then seed 1 of each, ...), and each test reports how many runs it took.
//! The failing seed is then shrunk: the shrinker must bring it down to at most
//! [`SHRUNK_FAULTS_MAX`] fault events, and the scenario it writes must fail the same check.

use crate::cluster::{run_drawn, run_seed, RunOptions};
use crate::scenario::{Drawn, Scenario};
use crate::scenario_tests::scenarios;
use crate::shrink::{self, Runner, ShrinkOptions};
use raftchat::mutants::{activate, Mutant};
use std::path::Path;

/// Most runs a mutant may survive.
const RUNS_MAX: u64 = 200;

/// Most fault events a mutant's shrunk failing seed may keep (issue 11's goal).
const SHRUNK_FAULTS_MAX: usize = 5;

/// Runs shrink candidates with one mutant on.
struct MutantRunner(Mutant);

impl Runner for MutantRunner {
    fn failing_check(&self, drawn: &Drawn, seed: u64) -> Option<&'static str> {
        activate(Some(self.0));
        let report = run_drawn(drawn.clone(), String::new(), seed, RunOptions::default());
        report.violation.map(|v| v.failure.check)
    }
}

/// Shrinks a failing seed and checks the goal and the written scenario's replay.
fn assert_shrinks(mutant: Mutant, scenario: &Scenario, seed: u64) {
    let drawn = scenario.draw(seed);
    let original = run_drawn(drawn.clone(), String::new(), seed, RunOptions::default());
    let violation = original.violation.expect("the seed fails");
    let check = violation.failure.check;
    // The other tests share the cores at first, but the longest shrinks (hundreds of faults
    // in figure-8-churn) are the last tests still running, with the cores to themselves.
    let options = ShrinkOptions {
        seeds_per_candidate: 4,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let before = shrink::fault_count(&original.schedule);
    let recorded = drawn.with_schedule(original.schedule);
    let runner = MutantRunner(mutant);
    let shrunk = shrink::shrink(&runner, &recorded, seed, check, violation.time, options);
    let after = shrink::fault_count(&shrunk.drawn.events);
    eprintln!(
        "mutant {} shrunk from {before} to {after} faults in {} runs",
        mutant.name(),
        shrunk.runs
    );
    assert!(
        after <= SHRUNK_FAULTS_MAX,
        "mutant {}: {} seed {seed} shrank only to {after} faults: {:?}",
        mutant.name(),
        scenario.name,
        shrunk.log
    );
    let text = shrunk.drawn.pinned_toml("postmortem: a test");
    let written = Scenario::parse(Path::new("shrunk.toml"), &text).expect("it parses");
    activate(Some(mutant));
    let replay = run_seed(&written, shrunk.seed, RunOptions::default());
    let replayed = replay.violation.map(|v| v.failure.check);
    assert_eq!(
        replayed,
        Some(check),
        "the shrunk scenario replays:\n{text}"
    );
}

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
                assert_shrinks(mutant, scenario, seed);
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
    mutant_skip_read_round_is_caught => SkipReadRound,
    mutant_lease_past_expiry_is_caught => LeasePastExpiry,
    mutant_serve_before_apply_is_caught => ServeBeforeApply,
    mutant_learner_in_quorum_is_caught => LearnerInQuorum,
    mutant_non_voter_campaigns_is_caught => NonVoterCampaigns,
    mutant_keep_truncated_config_is_caught => KeepTruncatedConfig,
    mutant_change_before_term_commit_is_caught => ChangeBeforeTermCommit,
    mutant_timeout_now_to_lagging_is_caught => TimeoutNowToLagging,
    mutant_skip_peer_name_check_is_caught => SkipPeerNameCheck,
    mutant_skip_owner_check_is_caught => SkipOwnerCheck,
    mutant_accept_forged_token_is_caught => AcceptForgedToken,
    mutant_accept_any_password_is_caught => AcceptAnyPassword,
    mutant_keep_handed_on_truncation_is_caught => KeepHandedOnTruncation,
    mutant_send_before_sync_is_caught => SendBeforeSync,
    mutant_answer_by_order_is_caught => AnswerByOrder,
    mutant_keep_reserved_zeros_is_caught => KeepReservedZeros,
    mutant_commit_past_match_is_caught => CommitPastMatch,
    mutant_keep_heartbeat_marks_is_caught => KeepHeartbeatMarks,
}

#[test]
fn every_mutant_has_a_test_and_a_unique_name() {
    let mut names: Vec<&str> = Mutant::ALL.iter().map(|m| m.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), Mutant::ALL.len());
    assert!(Mutant::ALL.len() >= 15);
    for mutant in Mutant::ALL {
        assert_eq!(Mutant::from_name(mutant.name()), Some(mutant));
    }
}
