//! Known Raft and state machine bugs, switched on one at a time to prove that the simulator's
//! checkers catch them. This module, and every line that consults it, exists only with the
//! `mutants` feature: the simulator is built with it, the server never is.
//!
//! The active mutant is per thread: madsim runs a whole simulation on the thread that calls
//! `block_on`, so parallel runs (sweep workers, tests) each choose their own.

use std::cell::Cell;

/// One known bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutant {
    /// Grant a vote without the log up-to-date check (breaks Raft §5.4.1).
    VoteWithoutLogCheck,
    /// Commit an entry of an earlier term by counting replicas (Raft §5.4.2, Figure 8).
    CommitPriorTerm,
    /// Never persist the vote, so a restarted node can vote twice in one term (Figure 2).
    VoteNotPersisted,
    /// Hand entries to the state machine before they are committed.
    ApplyBeforeCommit,
    /// Accept AppendEntries without checking the term of the previous entry (Raft §5.3).
    SkipPrevLogCheck,
    /// Keep conflicting entries instead of truncating them (Raft §5.3).
    NoConflictTruncation,
    /// Answer a client as soon as its command is proposed, before it is committed and applied.
    ReplyBeforeApply,
    /// Apply a retried command again instead of answering it from the session table (§8).
    SkipSessionDedup,
    /// Install a leader's snapshot even when it is not newer than the commit index (Raft §7),
    /// rolling the state machine back.
    InstallOlderSnapshot,
    /// Leave the session table out of the chat snapshot, so a retry after an install is
    /// applied a second time.
    SnapshotWithoutSessions,
    /// Compact the log through the commit index when a snapshot is taken, past the snapshot's
    /// own index (and the catch-up entries and running transfers): a follower that installs
    /// the snapshot cannot go on from the log, and is sent the snapshot again and again.
    CompactPastSnapshot,
    /// On installing a snapshot, trust the log after it: keep the suffix even when the log's
    /// entry at the snapshot's index has another term (Raft §7 says discard the whole log),
    /// and tell the leader the whole log matches.
    KeepConflictingSuffix,
    /// Answer a read at the leader's commit index at once, without the heartbeat round that
    /// confirms it still leads: a deposed leader serves stale reads.
    SkipReadRound,
    /// Hold a read lease for twice the longest election timeout instead of less than the
    /// shortest: a new leader may commit while the old one still answers from its lease.
    LeasePastExpiry,
    /// Let a follower serve a read as soon as the leader's read index arrives, from whatever
    /// it has applied by then (a lagging follower answers from the past).
    ServeBeforeApply,
    /// Let a new leader propose a membership change before an entry of its own term has
    /// committed (Ongaro's single-server change bug, raft-dev 2015): its change can be
    /// decided against a configuration another leader has already replaced.
    ChangeBeforeTermCommit,
    /// Count learners' acknowledgements towards the commit quorum.
    LearnerInQuorum,
    /// Keep the configuration of a truncated entry in force instead of rolling back to the
    /// newest configuration left in the log.
    KeepTruncatedConfig,
    /// Send TimeoutNow to a transfer's target at once, caught up or not.
    TimeoutNowToLagging,
    /// Let a node campaign when its configuration does not make it a voter (a removed node,
    /// or a learner).
    NonVoterCampaigns,
    /// Accept a TLS peer whose certificate (of the cluster's CA) names another node than the
    /// one its hello claims: any certificate holder can speak as any member.
    SkipPeerNameCheck,
    /// Let anyone act on a password-protected account: the state machine ignores who the
    /// command's token named.
    SkipOwnerCheck,
    /// Accept a token without checking its signature: anyone can forge one for any account.
    AcceptForgedToken,
    /// Log in without checking the password: anyone gets a token for any protected account.
    AcceptAnyPassword,
    /// Forget, when a leader replaces entries whose write is still under way, that their
    /// replacements must be written too: the pipeline leaves the replaced entries on disk.
    KeepHandedOnTruncation,
    /// Send a pipelined round's messages (acknowledgements, votes) as soon as its write is
    /// started, not once it is synced.
    SendBeforeSync,
    /// Hand each answer on a connection that clients share to the caller that has waited
    /// longest, not to the one whose request id it carries (answers come back out of order).
    AnswerByOrder,
    /// Tell a follower in a heartbeat the leader's commit index, not capped by what the
    /// follower is known to hold: one with a diverging tail commits entries that are not the
    /// leader's.
    CommitPastMatch,
    /// Leave the zeros reserved after the last segment's records in place at recovery: the
    /// node's next appends land after them, and its next recovery finds records past a run of
    /// zeros (damage, by the codec's rules).
    KeepReservedZeros,
    /// Keep a follower's heartbeat-interval marks past the periodic heartbeat that should clear
    /// them: once it has accepted one append, a follower gets no periodic heartbeat again while
    /// the leader may send to it, so nothing reaches it while the leader has nothing to append,
    /// and it campaigns.
    KeepHeartbeatMarks,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 30] = [
        Mutant::VoteWithoutLogCheck,
        Mutant::CommitPriorTerm,
        Mutant::VoteNotPersisted,
        Mutant::ApplyBeforeCommit,
        Mutant::SkipPrevLogCheck,
        Mutant::NoConflictTruncation,
        Mutant::ReplyBeforeApply,
        Mutant::SkipSessionDedup,
        Mutant::InstallOlderSnapshot,
        Mutant::SnapshotWithoutSessions,
        Mutant::CompactPastSnapshot,
        Mutant::KeepConflictingSuffix,
        Mutant::SkipReadRound,
        Mutant::LeasePastExpiry,
        Mutant::ServeBeforeApply,
        Mutant::LearnerInQuorum,
        Mutant::NonVoterCampaigns,
        Mutant::KeepTruncatedConfig,
        Mutant::ChangeBeforeTermCommit,
        Mutant::TimeoutNowToLagging,
        Mutant::SkipPeerNameCheck,
        Mutant::SkipOwnerCheck,
        Mutant::AcceptForgedToken,
        Mutant::AcceptAnyPassword,
        Mutant::KeepHandedOnTruncation,
        Mutant::SendBeforeSync,
        Mutant::AnswerByOrder,
        Mutant::KeepReservedZeros,
        Mutant::CommitPastMatch,
        Mutant::KeepHeartbeatMarks,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mutant::VoteWithoutLogCheck => "vote-without-log-check",
            Mutant::CommitPriorTerm => "commit-prior-term",
            Mutant::VoteNotPersisted => "vote-not-persisted",
            Mutant::ApplyBeforeCommit => "apply-before-commit",
            Mutant::SkipPrevLogCheck => "skip-prev-log-check",
            Mutant::NoConflictTruncation => "no-conflict-truncation",
            Mutant::ReplyBeforeApply => "reply-before-apply",
            Mutant::SkipSessionDedup => "skip-session-dedup",
            Mutant::InstallOlderSnapshot => "install-older-snapshot",
            Mutant::SnapshotWithoutSessions => "snapshot-without-sessions",
            Mutant::CompactPastSnapshot => "compact-past-snapshot",
            Mutant::KeepConflictingSuffix => "keep-conflicting-suffix",
            Mutant::SkipReadRound => "skip-read-round",
            Mutant::LeasePastExpiry => "lease-past-expiry",
            Mutant::ServeBeforeApply => "serve-before-apply",
            Mutant::ChangeBeforeTermCommit => "change-before-term-commit",
            Mutant::LearnerInQuorum => "learner-in-quorum",
            Mutant::KeepTruncatedConfig => "keep-truncated-config",
            Mutant::TimeoutNowToLagging => "timeout-now-to-lagging",
            Mutant::NonVoterCampaigns => "non-voter-campaigns",
            Mutant::SkipPeerNameCheck => "skip-peer-name-check",
            Mutant::SkipOwnerCheck => "skip-owner-check",
            Mutant::AcceptForgedToken => "accept-forged-token",
            Mutant::AcceptAnyPassword => "accept-any-password",
            Mutant::KeepHandedOnTruncation => "keep-handed-on-truncation",
            Mutant::SendBeforeSync => "send-before-sync",
            Mutant::AnswerByOrder => "answer-by-order",
            Mutant::KeepReservedZeros => "keep-reserved-zeros",
            Mutant::CommitPastMatch => "commit-past-match",
            Mutant::KeepHeartbeatMarks => "keep-heartbeat-marks",
        }
    }

    /// The mutant with this name.
    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }
}

thread_local! {
    static ACTIVE: Cell<Option<Mutant>> = const { Cell::new(None) };
}

/// Switches `mutant` on for this thread (or every mutant off).
pub fn activate(mutant: Option<Mutant>) {
    ACTIVE.with(|active| active.set(mutant));
}

/// Whether `mutant` is on for this thread.
pub fn is_active(mutant: Mutant) -> bool {
    ACTIVE.with(|active| active.get() == Some(mutant))
}
