//! The Raft consensus state machine, sans I/O (Raft paper Figure 2, §5 and §7; pre-vote and
//! check-quorum from the thesis §9.6 and §6.2; pipelining, batching and fast backtracking as
//! production engines do them).
//!
//! The host drives it through one funnel per kind of input, and takes every effect back as data:
//!
//! - `step(message)` for a peer's message, `tick()` for the passage of time, `propose(data)` for
//!   a client command;
//! - `ready()` returns a [`Ready`]: hard state and entries to persist, messages to send, and
//!   committed entries to apply; then `advance()` says the host has done all of it.
//! - Snapshots (Raft §7) enter the same way: `snapshot_taken` when the host has made one of its
//!   own state durable (the log is then compacted behind it), `snapshot_received` when a
//!   leader's snapshot arrived whole and checked, `snapshot_refused` when it did not.
//!
//! Role state lives in the role's variant of [`Role`], so leader-only state (the followers'
//! progress) cannot exist on a follower. Nothing here reads a clock or the OS: time is `tick()`
//! and randomness is the ChaCha generator the host seeds, so a run is a pure function of its
//! inputs. Safety invariants are `assert!`s, on in release builds: a broken invariant stops the
//! node rather than corrupting the cluster.

pub mod confchange;
mod log;
mod message;
mod progress;
pub mod quorum;
mod read_only;

#[cfg(test)]
mod harness_tests;
#[cfg(test)]
mod tests;

pub use confchange::{ConfChange, ConfChangeError, Member, MemberRole, Membership};
pub use log::RaftLog;
pub use message::{
    AppendOutcome, Entry, EntryData, HardState, Message, MessageBody, Payload, Snapshot,
    SnapshotMeta,
};
pub use progress::{Progress, ProgressMode, SnapshotTransfer};

use crate::limits;
#[cfg(feature = "mutants")]
use crate::mutants::Mutant;
pub use crate::types::ReadId;
use crate::types::{LogIndex, NodeId, Term};
use quorum::VoteResult;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use read_only::ReadOnly;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Static configuration of one Raft node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// The bootstrap configuration's voters: the cluster file's members, the same on every
    /// node. The configuration in force comes from the log and snapshots once they hold one;
    /// a node not among these voters is a new member, waiting for a leader to add it.
    pub voters: Vec<NodeId>,
    /// Lower bound of the randomized election timeout, in ticks; also the check-quorum period
    /// and the leader lease.
    pub election_timeout_ticks_min: u32,
    /// Upper bound (exclusive) of the randomized election timeout, in ticks.
    pub election_timeout_ticks_max: u32,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_interval_ticks: u32,
    /// Campaign only after a pre-vote round succeeds (thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down, and
    /// followers that hear from a leader ignore vote requests for a while (thesis §6.2).
    pub check_quorum: bool,
    /// Most entries in one AppendEntries.
    pub append_entries_max: usize,
    /// Soft byte budget of one AppendEntries.
    pub append_bytes_max: usize,
    /// Most unacknowledged AppendEntries per follower.
    pub inflight_appends_max: usize,
    /// A leader tells its followers of every new commit at once: one that has no entries to
    /// send a follower sends it a heartbeat carrying the commit (and gets its answer), as
    /// etcd's raft does. Off (the default), followers learn the commit from the next append
    /// or the periodic heartbeat, as with raft-rs's `skip_bcast_commit`, except a follower
    /// whose read waits for it, which is told at once. A write no later append follows then
    /// costs each follower an append and its answer, not also a heartbeat and its answer;
    /// followers apply it up to a heartbeat interval later.
    pub eager_commit: bool,
    /// Lease reads (thesis §6.4.1): a leader whose heartbeats a quorum answered recently
    /// answers reads with no round of its own; needs `check_quorum`. Off by default: it adds a
    /// bound on clock drift to the safety argument (see `read_lease_drift_percent`).
    pub read_lease: bool,
    /// With `read_lease`: the most any node's clock may run faster than the leader's, in
    /// percent. The lease is shorter than the election timeout by this margin.
    pub read_lease_drift_percent: u32,
    /// Most committed entries one `Ready` hands over to apply; at most
    /// [`limits::APPLY_ENTRIES_MAX`]. Small values make the host apply in many small batches.
    pub apply_entries_max: usize,
    /// Most proposed-but-uncommitted entries before proposals are refused.
    pub uncommitted_entries_max: usize,
    /// Largest chunk of a snapshot in one InstallSnapshot.
    pub snapshot_chunk_bytes_max: usize,
    /// Most unconfirmed snapshot chunks in flight to one follower.
    pub snapshot_inflight_chunks_max: usize,
    /// Entries kept in the log behind a new snapshot, so a follower a little behind it catches
    /// up from the log instead of being sent the snapshot (etcd's SnapshotCatchUpEntries).
    pub snapshot_catch_up_entries: u64,
}

impl Config {
    /// A configuration with the usual timing (10-tick heartbeat-to-election ratio) and limits.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            election_timeout_ticks_min: 10,
            election_timeout_ticks_max: 20,
            heartbeat_interval_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            append_entries_max: limits::APPEND_ENTRIES_MAX,
            append_bytes_max: limits::APPEND_BYTES_MAX,
            inflight_appends_max: limits::INFLIGHT_APPENDS_MAX,
            eager_commit: false,
            read_lease: false,
            read_lease_drift_percent: READ_LEASE_DRIFT_PERCENT_DEFAULT,
            apply_entries_max: limits::APPLY_ENTRIES_MAX,
            uncommitted_entries_max: limits::UNCOMMITTED_ENTRIES_MAX,
            snapshot_chunk_bytes_max: limits::SNAPSHOT_CHUNK_BYTES_MAX,
            snapshot_inflight_chunks_max: limits::SNAPSHOT_INFLIGHT_CHUNKS_MAX,
            snapshot_catch_up_entries: limits::SNAPSHOT_CATCH_UP_ENTRIES,
        }
    }

    /// Checks the relations the protocol relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut sorted = self.voters.clone();
        sorted.sort();
        sorted.dedup();
        let fail = |reason: &str| Err(ConfigError(reason.to_string()));
        if sorted.len() != self.voters.len() {
            return fail("voters contain a duplicate id");
        }
        if self.voters.is_empty() {
            return fail("the bootstrap configuration has no voter");
        }
        if self.voters.len() > limits::CLUSTER_SIZE_MAX {
            return fail("more voters than CLUSTER_SIZE_MAX");
        }
        if self.heartbeat_interval_ticks == 0 {
            return fail("heartbeat interval must be at least one tick");
        }
        if self.election_timeout_ticks_min <= self.heartbeat_interval_ticks {
            return fail("election timeout must exceed the heartbeat interval");
        }
        if self.election_timeout_ticks_max < self.election_timeout_ticks_min + 2 {
            // A fixed timeout lets candidates that started together split the vote forever.
            return fail("election timeout range needs at least two values (max >= min + 2)");
        }
        if self.append_entries_max == 0 || self.inflight_appends_max == 0 {
            return fail("append batch and inflight window must be at least 1");
        }
        if self.read_lease && !self.check_quorum {
            return fail(
                "lease reads need check-quorum (followers that heard the leader refuse votes)",
            );
        }
        if self.read_lease && self.lease_ticks() == 0 {
            return fail("lease reads need an election timeout long enough to leave a lease");
        }
        if !(1..=limits::APPLY_ENTRIES_MAX).contains(&self.apply_entries_max) {
            return fail("apply batch must be between 1 and APPLY_ENTRIES_MAX entries");
        }
        if self.uncommitted_entries_max == 0 {
            return fail("uncommitted entry bound must be at least 1");
        }
        let chunk_range = 1..=limits::SNAPSHOT_CHUNK_BYTES_MAX;
        if !chunk_range.contains(&self.snapshot_chunk_bytes_max) {
            return fail("snapshot chunk size must be between 1 byte and SNAPSHOT_CHUNK_BYTES_MAX");
        }
        if self.snapshot_inflight_chunks_max == 0 {
            return fail("snapshot chunk window must be at least 1");
        }
        Ok(())
    }
}

impl Config {
    /// How long a read lease lasts, in the leader's ticks (see `ReadOnly::lease_ticks`).
    fn lease_ticks(&self) -> u64 {
        #[cfg(feature = "mutants")]
        if crate::mutants::is_active(Mutant::LeasePastExpiry) {
            return 2 * u64::from(self.election_timeout_ticks_max);
        }
        ReadOnly::lease_ticks(
            self.election_timeout_ticks_min,
            self.read_lease_drift_percent,
        )
    }
}

/// The default clock-drift margin of lease reads: 10 %, ten times what NTP-disciplined clocks
/// drift, and far more than the rate differences of free-running quartz.
pub const READ_LEASE_DRIFT_PERCENT_DEFAULT: u32 = 10;

/// A linearizable read the host may now serve, or must refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The read, as the host named it.
    pub read: ReadId,
    /// Serve it from the state machine once it has applied through this index; or refuse it:
    /// this node could not confirm a leader's read index (no leader known, leadership lost,
    /// the leader's answer said so).
    pub index: Result<LogIndex, ReadRefused>,
}

/// Why a read was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadRefused {
    /// This node does not lead and knows no leader, or the leader it asked no longer leads,
    /// or it lost its leadership before the read's round was confirmed.
    NotLeader,
    /// Too many reads are waiting for their round; the client should back off.
    Busy,
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid raft configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Persisted state that cannot be a Raft node's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreError(pub String);

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inconsistent persisted raft state: {}", self.0)
    }
}

impl std::error::Error for RestoreError {}

/// Why a proposal was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader accepts proposals; `leader` is whom this node believes leads, if anyone.
    NotLeader {
        /// The leader this node knows of in its current term.
        leader: Option<NodeId>,
    },
    /// Too many entries are waiting to commit; the client should back off.
    Busy,
    /// The leader is handing its leadership over (thesis §3.10) and takes no proposals until
    /// the transfer ends; the client should retry, most likely at the new leader.
    Transferring,
}

/// Why a membership change was not proposed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeError {
    /// Only the leader proposes changes; `leader` is whom this node believes leads.
    NotLeader {
        /// The leader this node knows of in its current term.
        leader: Option<NodeId>,
    },
    /// Not yet: this leader has not committed an entry of its own term, or an earlier change
    /// is still uncommitted, or a transfer is under way. Retry shortly.
    Pending,
    /// The change cannot be made to the configuration in force.
    Invalid(ConfChangeError),
}

impl fmt::Display for ChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeError::NotLeader { leader: Some(l) } => write!(f, "not the leader ({l} leads)"),
            ChangeError::NotLeader { leader: None } => f.write_str("not the leader, none known"),
            ChangeError::Pending => f.write_str(
                "a change or a leadership transfer is under way, or the leader is new; retry",
            ),
            ChangeError::Invalid(e) => write!(f, "{e}"),
        }
    }
}

/// Why a leadership transfer was not started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// Only the leader transfers its leadership.
    NotLeader {
        /// The leader this node knows of in its current term.
        leader: Option<NodeId>,
    },
    /// The target is not a voter of the configuration in force, or that configuration is not
    /// committed yet, or there is no other voter.
    InvalidTarget(String),
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::NotLeader { leader: Some(l) } => {
                write!(f, "not the leader ({l} leads)")
            }
            TransferError::NotLeader { leader: None } => f.write_str("not the leader, none known"),
            TransferError::InvalidTarget(reason) => f.write_str(reason),
        }
    }
}

/// The role a node plays, for status and traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RoleKind {
    /// Follows a leader, or waits for one.
    Follower,
    /// Asking whether it could win an election, without disturbing anyone.
    PreCandidate,
    /// Campaigning in its term.
    Candidate,
    /// Leads its term.
    Leader,
}

impl RoleKind {
    /// Lower-case name for output.
    pub fn name(self) -> &'static str {
        match self {
            RoleKind::Follower => "follower",
            RoleKind::PreCandidate => "pre_candidate",
            RoleKind::Candidate => "candidate",
            RoleKind::Leader => "leader",
        }
    }
}

/// A snapshot of a node's protocol state, for hosts, status commands and checkers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The node.
    pub id: NodeId,
    /// Its role.
    pub role: RoleKind,
    /// Its current term.
    pub term: Term,
    /// The leader of its term, if known.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit_index: LogIndex,
    /// Highest index handed to the state machine.
    pub applied_index: LogIndex,
    /// Its last log index.
    pub last_index: LogIndex,
    /// The last index covered by its newest snapshot (0 without one).
    pub snapshot_index: LogIndex,
    /// The first index its log still holds; everything before is compacted.
    pub first_index: LogIndex,
}

/// Everything the host must do, in this order:
///
/// 1. write `snapshot_chunks` at their offsets into the file of the snapshot being received
///    (no sync needed: a transfer never survives a crash, and the whole file is synced before
///    it is checked); then persist, and sync: first `snapshot` (a record that the log starts
///    again after the installed snapshot, whose file is durable already, keeping the entries
///    after it that are persisted already: `storage::Install`), then `entries` (each replaces
///    any persisted entry at the same or a later index), then `hard_state`;
/// 2. THEN send `messages`, which may promise what was just persisted (a vote, an
///    acknowledgement of entries or of snapshot bytes);
/// 3. then call [`Raft::advance`].
///
/// `committed_entries` are persisted on this node already (by earlier Readys), so the host
/// may apply them, in order, as soon as it has the Ready, before its write.
///
/// **Pipelining.** The host need not wait: while a Ready is being carried out it may give the
/// node input (`step`, `tick`, `propose`, reads, transfers) and take further Readys, so the
/// next batch is appended while the last one syncs (etcd's asynchronous storage writes). What
/// it must keep: the writes reach the disk in the order the Readys were handed out, a Ready's
/// messages leave only once its write and every earlier one are synced, and `advance()` is
/// called once per Ready, in that order, at any point between inputs and `ready()` calls. A
/// Ready may rewrite entries an earlier one is still writing (a leader replaced them
/// meanwhile); the order of the writes makes the later win.
/// `snapshot_taken`, `snapshot_received` and `snapshot_refused` need every Ready advanced
/// (they panic otherwise). When the last chunk of a snapshot is written (`SnapshotChunk::last`),
/// the host syncs the file, checks the whole snapshot against its checksum, makes it durable
/// under its final name, and then reports it with [`Raft::snapshot_received`] (or, if it fails
/// the check, [`Raft::snapshot_refused`]).
#[derive(Debug, Default)]
#[must_use = "a Ready must be carried out and then acknowledged with advance()"]
pub struct Ready {
    /// The hard state to persist: when its term or vote changed, or alongside `entries` when
    /// anything in it changed. A commit index that moved alone is not worth a sync; it rides
    /// along with the next write.
    pub hard_state: Option<HardState>,
    /// Entries to persist, contiguous; the first may overwrite persisted entries from its index.
    pub entries: Vec<Entry>,
    /// Messages to send after persisting.
    pub messages: Vec<Message>,
    /// Committed entries to apply, in index order; this node has persisted them.
    pub committed_entries: Vec<Entry>,
    /// A leader's snapshot this node installed: its log now starts after it (with the suffix
    /// it kept, if any). The state machine already holds the snapshot's state.
    pub snapshot: Option<SnapshotMeta>,
    /// Chunks of a leader's snapshot to write into the file that receives it.
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// Reads the host may serve (once applied through their index) or must refuse. They
    /// need nothing persisted.
    pub read_states: Vec<ReadState>,
    /// Whether the node's current term was persisted (synced) before this Ready: only then
    /// may a leader's messages go before the write.
    term_persisted: bool,
}

/// A chunk of a snapshot this node is receiving, to write at `offset` of the snapshot's file.
/// A chunk at offset 0 starts the file afresh; a transfer of another snapshot abandons it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The snapshot the bytes belong to.
    pub snapshot: SnapshotMeta,
    /// The configuration at the snapshot's index, for the file's header.
    pub membership: Membership,
    /// Where they go.
    pub offset: u64,
    /// The bytes.
    pub data: Payload,
    /// The snapshot is whole once this chunk is written.
    pub last: bool,
}

impl Ready {
    /// Whether anything must reach the disk (and be synced) before the messages go out.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some()
            || !self.entries.is_empty()
            || self.snapshot.is_some()
            || !self.snapshot_chunks.is_empty()
    }

    /// Takes out of `messages` those a host may send BEFORE persisting this Ready: a leader's
    /// AppendEntries, heartbeats and snapshot chunks (thesis §10.2.1). They promise nothing
    /// this Ready holds: their term is persisted (a leader that won votes synced it before
    /// its vote requests left; a lone voter, elected without any, sends nothing early until
    /// the write of its term is synced, or a crash before it could leave it leading the same
    /// term again with other entries at the same indexes), and a leader counts itself towards
    /// committing an entry only once the entry is persisted (`advance`), so followers may
    /// store and acknowledge it while the leader's own write is under way. Sending them first
    /// overlaps the leader's sync with the round trip to its followers. A host that never
    /// calls this keeps the strict order, which is also correct.
    pub fn take_messages_before_persist(&mut self) -> Vec<Message> {
        if !self.term_persisted {
            return Vec::new();
        }
        let (early, late) = std::mem::take(&mut self.messages)
            .into_iter()
            .partition(|message| {
                matches!(
                    message.body,
                    MessageBody::AppendEntries { .. }
                        | MessageBody::Heartbeat { .. }
                        | MessageBody::InstallSnapshot { .. }
                )
            });
        self.messages = late;
        early
    }
}

/// What a `Ready` handed out, so `advance` can record it once it is carried out.
#[derive(Clone, Copy, Debug)]
struct ReadyMark {
    /// The hard state it persists, if any.
    hard_state: Option<HardState>,
    /// The last entry it persists, and the log's epoch when it was handed out.
    last_entry: Option<(LogIndex, u64)>,
    last_committed: Option<LogIndex>,
}

#[derive(Debug)]
struct Follower {
    leader: Option<NodeId>,
    /// A leader's snapshot arriving chunk by chunk.
    incoming: Option<IncomingSnapshot>,
}

/// How much of a leader's snapshot a follower holds.
#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    /// Bytes written so far, in order.
    received_bytes: u64,
}

impl Follower {
    fn of(leader: Option<NodeId>) -> Follower {
        Follower {
            leader,
            incoming: None,
        }
    }
}

#[derive(Debug)]
struct Candidate {
    votes: BTreeMap<NodeId, bool>,
}

#[derive(Debug)]
struct Leader {
    /// Every other member's progress, learners included.
    progress: BTreeMap<NodeId, Progress>,
    heartbeat_elapsed_ticks: u32,
    reads: ReadOnly,
    /// A leadership transfer under way (thesis §3.10).
    transfer: Option<Transfer>,
}

/// A leadership transfer: proposals stop while the target catches up; TimeoutNow goes once it
/// has; the transfer is abandoned after an election timeout.
#[derive(Debug)]
struct Transfer {
    target: NodeId,
    elapsed_ticks: u32,
    timeout_now_sent: bool,
}

#[derive(Debug)]
enum Role {
    Follower(Follower),
    PreCandidate(Candidate),
    Candidate(Candidate),
    Leader(Leader),
}

/// One Raft node.
pub struct Raft {
    config: Config,
    term: Term,
    vote: Option<NodeId>,
    log: RaftLog,
    role: Role,
    /// Ticks since the last election reset: a follower's timeout, a leader's check-quorum clock.
    election_elapsed_ticks: u32,
    election_timeout_ticks: u32,
    rng: ChaCha8Rng,
    messages: Vec<Message>,
    /// Snapshot chunks received since the last Ready, to write.
    snapshot_chunks: Vec<SnapshotChunk>,
    /// A snapshot installed since the last Ready, to record.
    installed: Option<SnapshotMeta>,
    persisted_hard_state: HardState,
    /// The hard state the newest Ready persists (or `persisted_hard_state` when none does).
    handed_hard_state: HardState,
    /// Readys handed out and not yet advanced, oldest first.
    pending: VecDeque<ReadyMark>,
    /// Reads answered or refused since the last Ready.
    read_states: Vec<ReadState>,
    /// Ticks since this node started: the leader's clock for read leases.
    ticks: u64,
}

/// What a node persisted, as its host read it back.
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    /// The last hard state written.
    pub hard_state: HardState,
    /// The newest snapshot, whose state the state machine holds; `None` for none.
    pub snapshot: Option<Snapshot>,
    /// The log after the snapshot (from index 1 without one), contiguous.
    pub entries: Vec<Entry>,
}

impl fmt::Debug for Raft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Raft")
            .field("status", &self.status())
            .finish()
    }
}

impl Raft {
    /// A node that has never run: term 0, empty log.
    pub fn new(config: Config, rng: ChaCha8Rng) -> Result<Raft, ConfigError> {
        Raft::build(config, rng, HardState::default(), RaftLog::new())
    }

    /// A node restarting from what it persisted. Fails, naming the problem, if the snapshot
    /// does not match its checksum, the entries are not contiguous from just after it, their
    /// terms decrease or exceed the hard state's term, or the commit index is beyond the log.
    pub fn restart(
        config: Config,
        rng: ChaCha8Rng,
        persisted: Persisted,
    ) -> Result<Raft, RestoreError> {
        let Persisted {
            hard_state,
            snapshot,
            entries,
        } = persisted;
        let base = snapshot.as_ref().map(|s| s.meta).unwrap_or_default();
        if base.index.0 > INDEX_MAX || hard_state.term.0 > TERM_MAX {
            return Err(RestoreError(format!(
                "snapshot index {} or term {} is out of range",
                base.index, hard_state.term
            )));
        }
        let odd_membership =
            |s: &Snapshot| !s.membership.is_empty() && !s.membership.is_well_formed();
        if snapshot.as_ref().is_some_and(odd_membership) {
            return Err(RestoreError(format!(
                "snapshot at {} holds an impossible configuration",
                base.index
            )));
        }
        if let Some(entry) = entries.iter().find(|e| match &e.data {
            EntryData::Membership(m) => !m.is_well_formed(),
            _ => false,
        }) {
            return Err(RestoreError(format!(
                "entry {} holds an impossible configuration",
                entry.index
            )));
        }
        if snapshot.as_ref().is_some_and(|s| !s.is_intact()) {
            return Err(RestoreError(format!(
                "snapshot at {} does not match its checksum",
                base.index
            )));
        }
        let mut previous_term = base.term;
        for (k, entry) in entries.iter().enumerate() {
            if entry.index.0 != base.index.0 + k as u64 + 1 {
                let reason = format!(
                    "entry {} found where entry {} belongs",
                    entry.index,
                    base.index.0 + k as u64 + 1
                );
                return Err(RestoreError(reason));
            }
            if entry.term < previous_term {
                let reason = format!("entry {} has out-of-order term {}", entry.index, entry.term);
                return Err(RestoreError(reason));
            }
            previous_term = entry.term;
        }
        let last_index = base.index.0 + entries.len() as u64;
        if hard_state.commit_index.0 > last_index {
            return Err(RestoreError(format!(
                "commit index {} beyond the last entry {last_index}",
                hard_state.commit_index,
            )));
        }
        // A torn batch can keep its entries yet lose the hard state written after them. Nothing
        // in that lost record was promised to anyone (the messages that rely on a batch leave
        // only after it is synced; a leader's early AppendEntries carry a term it synced when
        // it campaigned), so the node adopts its last entry's term, with no vote. The next
        // Ready persists it.
        let mut effective = hard_state;
        if previous_term > hard_state.term {
            effective = HardState {
                term: previous_term,
                vote: None,
                ..hard_state
            };
        }
        let log = RaftLog::restore(snapshot, entries, hard_state.commit_index);
        let mut raft =
            Raft::build(config, rng, effective, log).map_err(|e| RestoreError(e.to_string()))?;
        raft.persisted_hard_state = hard_state;
        raft.handed_hard_state = hard_state;
        Ok(raft)
    }

    fn build(
        config: Config,
        rng: ChaCha8Rng,
        hard_state: HardState,
        log: RaftLog,
    ) -> Result<Raft, ConfigError> {
        config.validate()?;
        let mut raft = Raft {
            config,
            term: hard_state.term,
            vote: hard_state.vote,
            log,
            role: Role::Follower(Follower::of(None)),
            election_elapsed_ticks: 0,
            election_timeout_ticks: 0,
            rng,
            messages: Vec::new(),
            snapshot_chunks: Vec::new(),
            installed: None,
            persisted_hard_state: hard_state,
            handed_hard_state: hard_state,
            pending: VecDeque::new(),
            read_states: Vec::new(),
            ticks: 0,
        };
        let bootstrap = Membership::of_voters(&raft.config.voters);
        raft.log.bootstrap(bootstrap);
        raft.reset_election_timer();
        Ok(raft)
    }

    // ----- inputs -----------------------------------------------------------------------------

    /// Advances time by one tick: followers and candidates may start an election, a leader
    /// sends heartbeats and checks it still hears from a quorum.
    pub fn tick(&mut self) {
        self.ticks += 1;
        match self.role {
            Role::Leader(_) => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// The host's clock stalled: more than a tick of real time passed that no tick accounts for
    /// (the process was paused, descheduled or suspended). A read lease is counted in ticks, so
    /// it no longer bounds real time: the leader gives it up, and confirms reads by heartbeat
    /// rounds until a round sent after the stall renews it. Elections are not affected (a tick
    /// missed only makes a follower wait longer, which is safe).
    pub fn clock_stalled(&mut self) {
        if let Role::Leader(leader) = &mut self.role {
            leader.reads.forget_lease();
        }
    }

    /// Proposes a command; on success it will appear at the returned index and term if this
    /// leader keeps its leadership long enough to commit it.
    pub fn propose(&mut self, data: Payload) -> Result<(LogIndex, Term), ProposeError> {
        if !matches!(self.role, Role::Leader(_)) {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        if matches!(&self.role, Role::Leader(l) if l.transfer.is_some()) {
            return Err(ProposeError::Transferring);
        }
        let uncommitted = self.log.last_index().0 - self.log.commit_index().0;
        if uncommitted >= self.config.uncommitted_entries_max as u64 {
            return Err(ProposeError::Busy);
        }
        let index = self.log.last_index().next();
        self.log.append(Entry {
            term: self.term,
            index,
            data: EntryData::Command(data),
        });
        // The entry goes out with the next Ready, batched with every other proposal made before
        // it: one AppendEntries per follower and one fsync carry them all.
        Ok((index, self.term))
    }

    /// Proposes a membership change (see `confchange`): single-server, so only once this
    /// leader has committed an entry of its own term and while no earlier change is
    /// uncommitted. The new configuration is in force as soon as it is appended, here now and
    /// on each follower as it receives it.
    pub fn propose_change(&mut self, change: ConfChange) -> Result<(LogIndex, Term), ChangeError> {
        let Role::Leader(leader) = &self.role else {
            return Err(ChangeError::NotLeader {
                leader: self.leader(),
            });
        };
        let next = self
            .log
            .membership()
            .apply(&change)
            .map_err(ChangeError::Invalid)?;
        if leader.transfer.is_some() || !self.may_change_membership() {
            return Err(ChangeError::Pending);
        }
        Ok(self.append_membership(next))
    }

    /// Thesis §4.1 with Ongaro's correction: a new configuration only after an entry of this
    /// leader's term has committed and while no earlier configuration is uncommitted.
    fn may_change_membership(&self) -> bool {
        let term_committed = self.committed_in_term().is_some();
        #[cfg(feature = "mutants")]
        let term_committed =
            term_committed || crate::mutants::is_active(Mutant::ChangeBeforeTermCommit);
        term_committed && self.log.membership_index() <= self.log.commit_index()
    }

    fn append_membership(&mut self, membership: Membership) -> (LogIndex, Term) {
        let index = self.log.last_index().next();
        self.log.append(Entry {
            term: self.term,
            index,
            data: EntryData::Membership(membership),
        });
        self.track_members();
        // A leader that is no longer a voter stops counting itself: the entry may now commit
        // without it.
        self.maybe_commit();
        (index, self.term)
    }

    /// The leader's progress follows the configuration in force: a new member is probed from
    /// the end of the log, a departed one forgotten.
    fn track_members(&mut self) {
        let last_index = self.log.last_index();
        let id = self.config.id;
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let membership = self.log.membership();
        leader
            .progress
            .retain(|peer, _| membership.is_member(*peer));
        for &peer in membership.members.keys() {
            if peer != id {
                leader
                    .progress
                    .entry(peer)
                    .or_insert_with(|| Progress::new(last_index));
            }
        }
    }

    /// A learner marked for promotion is promoted once its log is within
    /// [`limits::LEARNER_LAG_ENTRIES_MAX`] entries of this leader's, when a change may be made.
    fn maybe_promote(&mut self) {
        let Role::Leader(leader) = &self.role else {
            return;
        };
        if leader.transfer.is_some() || !self.may_change_membership() {
            return;
        }
        let last_index = self.log.last_index();
        // Caught up: replicating (not probing, not installing a snapshot), and close behind.
        let caught_up = |learner: &NodeId| {
            leader.progress.get(learner).is_some_and(|p| {
                p.mode == ProgressMode::Replicate
                    && p.match_index.0 + limits::LEARNER_LAG_ENTRIES_MAX >= last_index.0
            })
        };
        let membership = self.log.membership();
        let Some(learner) = membership.promotable().find(caught_up) else {
            return;
        };
        let next = membership
            .apply(&ConfChange::Promote { id: learner })
            .expect("a learner can be promoted");
        self.append_membership(next);
    }

    /// Starts handing leadership to `target` (thesis §3.10), or to the most up-to-date other
    /// voter when `None`: proposals are refused while the target catches up, then it is told
    /// to campaign at once. The transfer is abandoned after an election timeout. The target
    /// must be a voter of the configuration in force, and that configuration committed.
    pub fn transfer_leadership(&mut self, target: Option<NodeId>) -> Result<NodeId, TransferError> {
        let Role::Leader(leader) = &self.role else {
            return Err(TransferError::NotLeader {
                leader: self.leader(),
            });
        };
        let membership = self.log.membership();
        let invalid = |reason: String| Err(TransferError::InvalidTarget(reason));
        if self.log.membership_index() > self.log.commit_index() {
            return invalid("a membership change is still uncommitted".into());
        }
        let target = match target {
            Some(target) => target,
            None => {
                let others = membership.voters().filter(|&v| v != self.config.id);
                let best = others.max_by_key(|v| {
                    let matched = leader
                        .progress
                        .get(v)
                        .map_or(LogIndex(0), |p| p.match_index);
                    (matched, std::cmp::Reverse(*v))
                });
                match best {
                    Some(best) => best,
                    None => return invalid("there is no other voter".into()),
                }
            }
        };
        if target == self.config.id {
            return invalid(format!("{target} leads already"));
        }
        if !membership.is_voter(target) {
            return invalid(format!("{target} is not a voter"));
        }
        let Role::Leader(leader) = &mut self.role else {
            unreachable!()
        };
        leader.transfer = Some(Transfer {
            target,
            elapsed_ticks: 0,
            timeout_now_sent: false,
        });
        self.maybe_timeout_now();
        Ok(target)
    }

    /// The transfer's target has every entry: tell it to campaign (once).
    fn maybe_timeout_now(&mut self) {
        let last_index = self.log.last_index();
        let term = self.term;
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(transfer) = &mut leader.transfer else {
            return;
        };
        let caught_up = leader
            .progress
            .get(&transfer.target)
            .is_some_and(|p| p.match_index == last_index);
        #[cfg(feature = "mutants")]
        let caught_up = caught_up || crate::mutants::is_active(Mutant::TimeoutNowToLagging);
        if caught_up && !transfer.timeout_now_sent {
            transfer.timeout_now_sent = true;
            let target = transfer.target;
            self.send(target, term, MessageBody::TimeoutNow);
        }
    }

    /// Asks for a linearizable read (thesis §6.4); its [`ReadState`] comes in a later `Ready`.
    /// A leader records its commit index as the read index (waiting for an entry of its own
    /// term to commit first) and confirms its leadership by a round of heartbeats, which every
    /// read asked before the round goes out shares; with a read lease held, it answers at
    /// once. A follower asks its leader, and hands on the answer; with no leader known, the
    /// read is refused. A follower's request or answer may be lost: the replica times reads out.
    pub fn read_index(&mut self, read: ReadId) {
        match &self.role {
            Role::Leader(_) => self.lead_read(self.config.id, read),
            Role::Follower(Follower {
                leader: Some(leader),
                ..
            }) => {
                let leader = *leader;
                self.send(leader, self.term, MessageBody::ReadIndex { read });
            }
            _ => self.read_states.push(ReadState {
                read,
                index: Err(ReadRefused::NotLeader),
            }),
        }
    }

    /// Handles a message from a peer. Messages from non-members, or addressed elsewhere, are
    /// ignored: they are an operating error of the network, not a protocol event.
    pub fn step(&mut self, message: Message) {
        // Any node may write: a new member hears from a leader it has no configuration for
        // yet, and a removed one is held off by the term rules, pre-vote and check-quorum.
        // (Who may connect at all is the transport's business.)
        if message.to != self.config.id || message.from == self.config.id {
            return;
        }
        if !is_well_formed(&message) {
            // Checksums make this a peer's bug, not line noise; it must not become ours.
            return;
        }
        let from_leader = matches!(
            message.body,
            MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
        );
        if !from_leader && !self.log.membership().is_member(message.from) {
            // A node this configuration does not know (one removed, which may not have
            // learned its removal committed, and so campaigns) must not bump anyone's term,
            // by a vote request or by an answer: with pre-vote and check-quorum both off,
            // nothing else would hold it off (thesis §4.2.3). Refusing a vote is always safe;
            // a candidate added by an entry this node lacks wins with the votes of the nodes
            // that have it, which are the up-to-date ones. A leader's messages pass: a new
            // member hears from a leader its configuration does not name yet.
            return;
        }
        if !self.reconcile_term(&message) {
            return;
        }
        let Message {
            from, term, body, ..
        } = message;
        if let MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            ..
        } = body
        {
            self.handle_request_vote(from, term, pre_vote, last_log_index, last_log_term);
            return;
        }
        match self.role {
            Role::Leader(_) => self.step_leader(from, body),
            Role::Candidate(_) | Role::PreCandidate(_) => self.step_candidate(from, body),
            Role::Follower(_) => self.step_follower(from, body),
        }
    }

    /// Raft §7: the host has made a snapshot of this node's own state machine durable, taken
    /// at an applied index. It becomes the snapshot sent to followers that need compacted
    /// entries, and the log is compacted behind it: `snapshot_catch_up_entries` entries before
    /// it are kept for followers a little behind, and so is every entry after a snapshot that a
    /// live transfer (one its follower has begun and answered about within an election
    /// timeout) will install, so its follower can go on from the log. A transfer that has not
    /// started, or has gone quiet (its follower is down), or that its follower started over
    /// (a restart), starts over with the new snapshot instead, so a dead follower never holds
    /// the log back. An older snapshot than the one held changes nothing.
    /// Returns the index the log is now compacted through.
    pub fn snapshot_taken(&mut self, snapshot: Snapshot) -> LogIndex {
        self.assert_not_pending();
        let index = snapshot.meta.index;
        // A snapshot from before the log's base (a leader's snapshot was installed while this
        // one was being taken) is refused below; the log no longer knows its configuration.
        let snapshot = match index >= self.log.first_index().prev() {
            true => {
                let membership = self.log.membership_at(index).clone();
                assert!(
                    snapshot.membership.is_empty() || snapshot.membership == membership,
                    "a snapshot with another configuration than its index's"
                );
                snapshot.with_membership(membership)
            }
            false => snapshot,
        };
        if !self.log.set_snapshot(snapshot) {
            return self.log.first_index().prev();
        }
        let idle_ticks_max = self.config.election_timeout_ticks_min;
        if let Role::Leader(leader) = &mut self.role {
            let newest = self.log.snapshot().expect("just set");
            for progress in leader.progress.values_mut() {
                let pending = progress.pending_snapshot().is_some();
                if pending && !progress.is_transfer_active(idle_ticks_max) {
                    progress.become_snapshot(newest.clone());
                }
            }
        }
        let mut compact_to = LogIndex(
            index
                .0
                .saturating_sub(self.config.snapshot_catch_up_entries),
        );
        if let Role::Leader(leader) = &self.role {
            let active = leader
                .progress
                .values()
                .filter(|progress| progress.is_transfer_active(idle_ticks_max));
            for pending in active.filter_map(Progress::pending_snapshot) {
                compact_to = compact_to.min(pending.index);
            }
        }
        #[cfg(feature = "mutants")]
        if crate::mutants::is_active(Mutant::CompactPastSnapshot) {
            compact_to = self.log.applied_index();
        }
        self.log.compact(compact_to);
        self.log.first_index().prev()
    }

    /// Raft §7: a leader's snapshot arrived whole, matches its checksum, and is durable under
    /// its final name. A follower installs it if it is newer than its commit index: the log
    /// keeps its entries after the snapshot if it holds the snapshot's last entry, and is
    /// discarded otherwise; commit and applied index move to the snapshot, and the leader is
    /// told the logs now agree there. Returns whether it was installed, in which case the host
    /// must restore the state machine from it before anything else. A node that is no longer a
    /// follower, or whose log committed past the snapshot meanwhile, stays as it was.
    pub fn snapshot_received(&mut self, snapshot: Snapshot) -> bool {
        self.assert_not_pending();
        let meta = snapshot.meta;
        let commit_index = self.log.commit_index();
        let Role::Follower(follower) = &mut self.role else {
            return false;
        };
        if follower
            .incoming
            .as_ref()
            .is_some_and(|i| i.meta.index <= meta.index)
        {
            follower.incoming = None;
        }
        let newer = meta.index > commit_index;
        #[cfg(feature = "mutants")]
        let newer = newer || crate::mutants::is_active(Mutant::InstallOlderSnapshot);
        if !newer || meta.term > self.term {
            return false;
        }
        let leader = follower.leader;
        self.log.install(snapshot);
        self.installed = Some(meta);
        // Only the snapshot is known to match the leader: a kept suffix may still diverge.
        let match_index = meta.index;
        #[cfg(feature = "mutants")]
        let match_index = match crate::mutants::is_active(Mutant::KeepConflictingSuffix) {
            true => self.log.last_index(),
            false => match_index,
        };
        if let Some(leader) = leader {
            let outcome = AppendOutcome::Accepted { match_index };
            self.send(
                leader,
                self.term,
                MessageBody::AppendEntriesResponse(outcome),
            );
        }
        true
    }

    /// The snapshot being received failed its checksum, or could not be made durable: drop
    /// what was received, so the leader's next chunk starts the transfer over.
    pub fn snapshot_refused(&mut self, snapshot: SnapshotMeta) {
        self.assert_not_pending();
        if let Role::Follower(follower) = &mut self.role {
            if follower
                .incoming
                .as_ref()
                .is_some_and(|i| i.meta == snapshot)
            {
                follower.incoming = None;
            }
        }
    }

    // ----- outputs ----------------------------------------------------------------------------

    /// Collects everything the host must do now, or `None` if there is nothing. See [`Ready`].
    pub fn ready(&mut self) -> Option<Ready> {
        self.maybe_promote();
        self.send_appends();
        self.serve_reads();
        let hard_state = self.hard_state();
        #[cfg(feature = "mutants")]
        let hard_state = match crate::mutants::is_active(Mutant::VoteNotPersisted) {
            true => HardState {
                vote: None,
                ..hard_state
            },
            false => hard_state,
        };
        #[cfg(feature = "mutants")]
        let committed_entries = match crate::mutants::is_active(Mutant::ApplyBeforeCommit) {
            true => self
                .log
                .unapplied_through_last(self.config.apply_entries_max),
            false => self.log.committed_unapplied(self.config.apply_entries_max),
        };
        #[cfg(not(feature = "mutants"))]
        let committed_entries = self.log.committed_unapplied(self.config.apply_entries_max);
        let entries = self.log.unhanded_entries();
        // The term and the vote are promises and must be synced before any message that
        // relies on them. The commit index is not: a node that restarts with an older one
        // learns the rest from the leader. So a change of the commit index alone waits for the
        // next write that must happen anyway, and a committed entry is applied (and its client
        // answered) without a sync of its own.
        let handed = self.handed_hard_state;
        let writes_log = !entries.is_empty() || self.installed.is_some();
        let must_persist_hard_state = hard_state.term != handed.term
            || hard_state.vote != handed.vote
            || (writes_log && hard_state != handed);
        // Nothing to do (most turns of a host's loop ask once more and find this): no Ready.
        // `Ready::must_persist` and the emptiness a Ready is checked for, on the parts before
        // they are copied into one.
        if !must_persist_hard_state
            && !writes_log
            && self.snapshot_chunks.is_empty()
            && self.messages.is_empty()
            && committed_entries.is_empty()
            && self.read_states.is_empty()
        {
            return None;
        }
        let ready = Ready {
            hard_state: must_persist_hard_state.then_some(hard_state),
            entries: entries.to_vec(),
            messages: std::mem::take(&mut self.messages),
            committed_entries: committed_entries.to_vec(),
            snapshot: self.installed.take(),
            snapshot_chunks: std::mem::take(&mut self.snapshot_chunks),
            read_states: std::mem::take(&mut self.read_states),
            term_persisted: self.persisted_hard_state.term == self.term,
        };
        let last_entry = ready
            .entries
            .last()
            .map(|e| (e.index, self.log.handed_to(e.index)));
        let mark = ReadyMark {
            hard_state: ready.hard_state,
            last_entry,
            last_committed: ready.committed_entries.last().map(|e| e.index),
        };
        if let Some(hard_state) = mark.hard_state {
            self.handed_hard_state = hard_state;
        }
        if let Some(index) = mark.last_committed {
            self.log.applying_to(index);
        }
        self.pending.push_back(mark);
        Some(ready)
    }

    /// Records that the oldest outstanding `Ready` was carried out: its state persisted, its
    /// messages sent, its committed entries applied.
    pub fn advance(&mut self) {
        let mark = self
            .pending
            .pop_front()
            .expect("advance() without a pending ready()");
        if let Some(hard_state) = mark.hard_state {
            self.persisted_hard_state = hard_state;
        }
        if let Some((index, epoch)) = mark.last_entry {
            self.log.stable_to(index, epoch);
        }
        if let Some(index) = mark.last_committed {
            #[cfg(feature = "mutants")]
            if crate::mutants::is_active(Mutant::ApplyBeforeCommit) {
                self.log.force_applied_to(index);
                self.maybe_commit();
                return;
            }
            self.log.applied_to(index);
        }
        // The leader counts itself towards a quorum only for entries it has persisted.
        self.maybe_commit();
    }

    // ----- queries ----------------------------------------------------------------------------

    /// Whether the log holds entries not yet handed out in a Ready (inputs stepped since the
    /// last `ready()` appended them).
    pub fn has_unhanded_entries(&self) -> bool {
        !self.log.unhanded_entries().is_empty()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Current term, vote and commit index.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit_index: self.log.commit_index(),
        }
    }

    /// The leader of the current term as far as this node knows.
    pub fn leader(&self) -> Option<NodeId> {
        match &self.role {
            Role::Follower(f) => f.leader,
            Role::Leader(_) => Some(self.config.id),
            Role::PreCandidate(_) | Role::Candidate(_) => None,
        }
    }

    /// The role, term, leader and log positions.
    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role_kind(),
            term: self.term,
            leader: self.leader(),
            commit_index: self.log.commit_index(),
            applied_index: self.log.applied_index(),
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot_meta().unwrap_or_default().index,
            first_index: self.log.first_index(),
        }
    }

    /// The configuration in force (the newest in the log, committed or not).
    pub fn membership(&self) -> &Membership {
        self.log.membership()
    }

    /// The configuration in force at `index` (at or after the log's compaction point), for a
    /// snapshot taken there.
    pub fn membership_at(&self, index: LogIndex) -> &Membership {
        self.log.membership_at(index)
    }

    /// The target of the leadership transfer under way, if this node leads and is handing over.
    pub fn transfer_target(&self) -> Option<NodeId> {
        match &self.role {
            Role::Leader(leader) => leader.transfer.as_ref().map(|t| t.target),
            _ => None,
        }
    }

    /// The log, for checkers and tests.
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// A follower's replication progress as the leader sees it (None if not leader).
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        match &self.role {
            Role::Leader(leader) => leader.progress.get(&peer),
            _ => None,
        }
    }

    fn role_kind(&self) -> RoleKind {
        match self.role {
            Role::Follower(_) => RoleKind::Follower,
            Role::PreCandidate(_) => RoleKind::PreCandidate,
            Role::Candidate(_) => RoleKind::Candidate,
            Role::Leader(_) => RoleKind::Leader,
        }
    }

    fn assert_not_pending(&self) {
        assert!(
            self.pending.is_empty(),
            "a snapshot's report while a Ready is outstanding; advance() every Ready first"
        );
    }

    /// The other voters of the configuration in force: whom a candidate asks for votes.
    fn voting_peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        let id = self.config.id;
        self.log.membership().voters().filter(move |&v| v != id)
    }

    fn is_voter(&self) -> bool {
        self.log.membership().is_voter(self.config.id)
    }

    /// A voter of the configuration in force may campaign; so may a voter of the last
    /// committed one whom an uncommitted change leaves out (thesis §4.2.2: a leader that
    /// removed itself manages the cluster until the change commits). Without the second, a
    /// removed leader that lost its quorum before the change committed would leave the cluster
    /// stuck: it holds the change, so the remaining voters cannot win its vote, and it would
    /// never campaign to finish the change itself. Votes are counted in the candidate's
    /// configuration in force either way, so this changes no safety argument.
    fn may_campaign(&self) -> bool {
        let id = self.config.id;
        self.is_voter() || self.log.membership_at(self.log.commit_index()).is_voter(id)
    }

    fn send(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.messages.push(Message {
            from: self.config.id,
            to,
            term,
            body,
        });
    }

    // ----- time ------------------------------------------------------------------------------

    fn tick_election(&mut self) {
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.election_timeout_ticks {
            // Learners, removed members and new members not yet added never campaign.
            let may_campaign = self.may_campaign();
            #[cfg(feature = "mutants")]
            let may_campaign = may_campaign || crate::mutants::is_active(Mutant::NonVoterCampaigns);
            if may_campaign {
                self.campaign();
            } else {
                if !matches!(self.role, Role::Follower(_)) {
                    self.become_follower(self.term, None);
                }
                self.reset_election_timer();
            }
        }
    }

    fn tick_leader(&mut self) {
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.config.election_timeout_ticks_min {
            self.election_elapsed_ticks = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                // Thesis §6.2: a leader cut off from a quorum steps down, so its clients go
                // looking for the real leader instead of waiting on one that cannot commit.
                self.become_follower(self.term, None);
                return;
            }
        }
        let Role::Leader(leader) = &mut self.role else {
            unreachable!()
        };
        for progress in leader.progress.values_mut() {
            if let Some(transfer) = progress.snapshot_transfer() {
                transfer.idle_ticks = transfer.idle_ticks.saturating_add(1);
            }
        }
        if let Some(transfer) = &mut leader.transfer {
            transfer.elapsed_ticks += 1;
            if transfer.elapsed_ticks >= self.config.election_timeout_ticks_min {
                // Thesis §3.10: a target that has not taken over within an election timeout
                // is not going to; take proposals again.
                leader.transfer = None;
            }
        }
        leader.heartbeat_elapsed_ticks += 1;
        if leader.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks {
            leader.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
    }

    /// True if a quorum (counting this leader) answered since the last check; clears the marks.
    fn quorum_recently_active(&mut self) -> bool {
        let membership = self.log.membership();
        let Role::Leader(leader) = &mut self.role else {
            unreachable!()
        };
        let mut active = usize::from(membership.is_voter(self.config.id));
        for (peer, progress) in leader.progress.iter_mut() {
            active += usize::from(progress.recent_active && membership.is_voter(*peer));
            progress.recent_active = false;
        }
        active >= quorum::majority(membership.voter_count())
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed_ticks = 0;
        let (min, max) = (
            self.config.election_timeout_ticks_min,
            self.config.election_timeout_ticks_max,
        );
        self.election_timeout_ticks = self.rng.gen_range(min..max);
    }

    /// Whether this node has heard from a live leader within the minimum election timeout.
    /// Such a node refuses to help unseat that leader (thesis §4.2.3 and §9.6).
    ///
    /// With read leases on, a node that has just started counts as having heard from one: it
    /// may have answered a leader's heartbeat in its previous life, and a leader's lease
    /// relies on that answer holding off every other candidate for an election timeout.
    fn in_leader_lease(&self) -> bool {
        let min = self.config.election_timeout_ticks_min;
        let just_started = self.config.read_lease && self.ticks < u64::from(min);
        (self.leader().is_some() || just_started) && self.election_elapsed_ticks < min
    }

    // ----- role changes ----------------------------------------------------------------------

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(term >= self.term, "terms never go backwards");
        if let Role::Leader(old) = &mut self.role {
            // Reads whose round was not confirmed cannot be served by this node any more.
            for (from, read) in old.reads.drain() {
                self.answer_read(from, read, Err(ReadRefused::NotLeader));
            }
        }
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower(Follower::of(leader));
        self.reset_election_timer();
    }

    fn campaign(&mut self) {
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
    }

    /// Thesis §9.6: ask first whether an election could be won, so that a node that cannot win
    /// (stale log, or a healthy leader exists) never bumps everyone's term.
    fn become_pre_candidate(&mut self) {
        let votes = BTreeMap::from([(self.config.id, true)]);
        self.role = Role::PreCandidate(Candidate { votes });
        self.reset_election_timer();
        self.request_votes(true, false);
        self.tally_votes();
    }

    /// Raft §5.2: a new term, a vote for itself, and a RequestVote to every peer.
    fn become_candidate(&mut self, transfer: bool) {
        self.term = self.term.next();
        self.vote = Some(self.config.id);
        let votes = BTreeMap::from([(self.config.id, true)]);
        self.role = Role::Candidate(Candidate { votes });
        self.reset_election_timer();
        self.request_votes(false, transfer);
        self.tally_votes();
    }

    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        let term = if pre_vote {
            self.term.next()
        } else {
            self.term
        };
        let body = MessageBody::RequestVote {
            pre_vote,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        };
        let peers: Vec<NodeId> = self.voting_peers().collect();
        for peer in peers {
            self.send(peer, term, body.clone());
        }
    }

    /// Raft §5.2 and §8: a new leader starts every follower in probe mode and appends a no-op
    /// of its own term, whose commitment commits everything before it (§5.4.2).
    fn become_leader(&mut self) {
        let last_index = self.log.last_index();
        self.role = Role::Leader(Leader {
            progress: BTreeMap::new(),
            heartbeat_elapsed_ticks: 0,
            reads: ReadOnly::default(),
            transfer: None,
        });
        self.track_members();
        self.election_elapsed_ticks = 0;
        let index = last_index.next();
        self.log.append(Entry {
            term: self.term,
            index,
            data: EntryData::Noop,
        });
    }

    // ----- messages --------------------------------------------------------------------------

    /// Raft §5.1: a higher term makes any node a follower of that term; a lower term marks a
    /// stale message. Returns false if the message must be dropped.
    fn reconcile_term(&mut self, message: &Message) -> bool {
        if message.term > self.term {
            return self.handle_higher_term(message);
        }
        if message.term < self.term {
            self.handle_lower_term(message);
            return false;
        }
        true
    }

    fn handle_higher_term(&mut self, message: &Message) -> bool {
        match message.body {
            MessageBody::RequestVote {
                pre_vote, transfer, ..
            } => {
                // A transfer's election was asked for by the leader itself (thesis §3.10).
                if (pre_vote || self.config.check_quorum) && self.in_leader_lease() && !transfer {
                    if pre_vote {
                        self.send(
                            message.from,
                            self.term,
                            MessageBody::RequestVoteResponse {
                                pre_vote,
                                granted: false,
                            },
                        );
                    }
                    return false;
                }
                if !pre_vote {
                    self.become_follower(message.term, None);
                }
            }
            // A granted pre-vote is answered in the term the pre-candidate would campaign in;
            // it is not evidence of a real higher term.
            MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: true,
            } => {}
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(message.term, Some(message.from));
            }
            _ => self.become_follower(message.term, None),
        }
        true
    }

    fn handle_lower_term(&mut self, message: &Message) {
        match message.body {
            // A stale leader learns of the newer term and steps down. Without this, a node whose
            // term rose while it was cut off would ignore the leader forever, and, with
            // check-quorum and pre-vote, never be able to disrupt it into a new election either.
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                let body = MessageBody::HeartbeatResponse { read_round: 0 };
                self.send(message.from, self.term, body);
            }
            MessageBody::RequestVote { pre_vote: true, .. } => {
                let body = MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: false,
                };
                self.send(message.from, self.term, body);
            }
            _ => {}
        }
    }

    /// Raft §5.2 and §5.4.1: grant at most one vote per term, and only to a candidate whose log
    /// is at least as up-to-date as ours. The vote is persisted (it is in the hard state of the
    /// next Ready) before the response leaves.
    fn handle_request_vote(
        &mut self,
        candidate: NodeId,
        term: Term,
        pre_vote: bool,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let can_vote = self.vote == Some(candidate)
            || (self.vote.is_none() && self.leader().is_none())
            || (pre_vote && term > self.term);
        let up_to_date = self.log.is_up_to_date(last_log_index, last_log_term);
        #[cfg(feature = "mutants")]
        let up_to_date = up_to_date || crate::mutants::is_active(Mutant::VoteWithoutLogCheck);
        let granted = can_vote && up_to_date;
        if granted && !pre_vote {
            self.vote = Some(candidate);
            self.reset_election_timer();
        }
        let reply_term = if granted { term } else { self.term };
        self.send(
            candidate,
            reply_term,
            MessageBody::RequestVoteResponse { pre_vote, granted },
        );
    }

    fn step_candidate(&mut self, from: NodeId, body: MessageBody) {
        match body {
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                let is_pre_candidate = matches!(self.role, Role::PreCandidate(_));
                if pre_vote == is_pre_candidate {
                    let (Role::PreCandidate(c) | Role::Candidate(c)) = &mut self.role else {
                        unreachable!()
                    };
                    c.votes.insert(from, granted);
                    self.tally_votes();
                }
            }
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // Raft §5.2: another node won this term.
                self.become_follower(self.term, Some(from));
                self.step_follower(from, body);
            }
            _ => {}
        }
    }

    fn tally_votes(&mut self) {
        let (Role::PreCandidate(c) | Role::Candidate(c)) = &self.role else {
            return;
        };
        let voters = self.log.membership().voter_ids();
        let result = quorum::vote_result(&voters, &c.votes);
        let is_pre_candidate = matches!(self.role, Role::PreCandidate(_));
        match result {
            VoteResult::Won if is_pre_candidate => self.become_candidate(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    fn step_follower(&mut self, from: NodeId, body: MessageBody) {
        let is_from_leader = matches!(
            body,
            MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
        );
        if is_from_leader {
            self.election_elapsed_ticks = 0;
            let Role::Follower(follower) = &mut self.role else {
                unreachable!()
            };
            follower.leader = Some(from);
        }
        match body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.handle_append_entries(
                    from,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                );
            }
            MessageBody::Heartbeat {
                leader_commit,
                read_round,
            } => {
                // The leader sends at most what it knows this follower holds, so no check is
                // needed; the min guards against a log shortened by a bug, not by the protocol.
                self.log.commit_to(leader_commit.min(self.log.last_index()));
                let body = MessageBody::HeartbeatResponse { read_round };
                self.send(from, self.term, body);
            }
            MessageBody::ReadIndexResponse { read, index } => {
                // Only from the leader of this term (checked by the term, above), whom it asked.
                let leads = matches!(&self.role, Role::Follower(f) if f.leader == Some(from));
                let index = index.filter(|_| leads).ok_or(ReadRefused::NotLeader);
                self.read_states.push(ReadState { read, index });
            }
            MessageBody::ReadIndex { read } => {
                let body = MessageBody::ReadIndexResponse { read, index: None };
                self.send(from, self.term, body);
            }
            MessageBody::InstallSnapshot {
                snapshot,
                membership,
                offset,
                data,
            } => self.handle_install_snapshot(from, snapshot, membership, offset, data),
            MessageBody::TimeoutNow => {
                // Thesis §3.10: the leader of this term (checked by the term, above) hands over;
                // campaign now, without pre-vote, if this node may lead at all.
                let from_leader = matches!(&self.role, Role::Follower(f) if f.leader == Some(from));
                if from_leader && self.may_campaign() {
                    self.become_candidate(true);
                }
            }
            _ => {}
        }
    }

    /// Raft §5.3: accept entries only after the log matches at `prev_log_index`; on a mismatch,
    /// reply with a hint that lets the leader skip a whole term of entries per round trip.
    fn handle_append_entries(
        &mut self,
        leader: NodeId,
        mut prev_log_index: LogIndex,
        mut prev_log_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        let commit_index = self.log.commit_index();
        if prev_log_index < commit_index {
            // Committed entries match the leader's (Leader Completeness, §5.4), so only the part
            // after the commit index needs the consistency check. This keeps a duplicated or
            // reordered old append from being rejected and sending the leader back to probing.
            let known = entries
                .iter()
                .take_while(|e| e.index <= commit_index)
                .count();
            // No correct leader sends an entry up to the commit index that differs from this
            // node's (Leader Completeness). A peer that does has a bug: trusting its later
            // entries would graft them onto a log they do not extend, and they could carry
            // terms older than ours, which the log refuses with a panic. Drop the message.
            // (Entries past the commit index follow one that matched, and `is_well_formed`
            // has checked that their terms do not decrease.)
            let contradicts = entries[..known]
                .iter()
                .any(|e| self.log.term(e.index).is_some_and(|term| term != e.term));
            if contradicts {
                return;
            }
            entries.drain(..known);
            prev_log_index = commit_index;
            prev_log_term = self
                .log
                .term(commit_index)
                .expect("the committed entry is in the log");
        }
        let matches = self.log.matches(prev_log_index, prev_log_term);
        #[cfg(feature = "mutants")]
        let matches = matches
            || (crate::mutants::is_active(Mutant::SkipPrevLogCheck)
                && self.log.term(prev_log_index).is_some());
        let outcome = if matches {
            let last_new = self.log.merge(entries).unwrap_or(prev_log_index);
            self.log.commit_to(leader_commit.min(last_new));
            AppendOutcome::Accepted {
                match_index: last_new,
            }
        } else {
            // A rejection is after the commit index, which is at or after the compaction point,
            // so the log can always tell; were it not, the commit index is a safe hint.
            let hint_index = self
                .log
                .last_index_with_term_at_most(prev_log_index, prev_log_term)
                .unwrap_or(commit_index);
            let hint_term = self.log.term(hint_index).expect("the hint is in the log");
            AppendOutcome::Rejected {
                rejected_prev_index: prev_log_index,
                hint_index,
                hint_term,
            }
        };
        self.send(
            leader,
            self.term,
            MessageBody::AppendEntriesResponse(outcome),
        );
    }

    /// Raft §7: one chunk of the leader's snapshot. Chunks are written in order into the file
    /// that receives the snapshot; one out of order is answered with the offset wanted, a
    /// duplicate with the offset reached, and a chunk of a transfer this node has not started
    /// (or lost in a restart) with offset 0. A snapshot the commit index already covers adds
    /// nothing: the answer says how far this log is committed, and the leader goes on from
    /// there with entries.
    fn handle_install_snapshot(
        &mut self,
        leader: NodeId,
        meta: SnapshotMeta,
        membership: Membership,
        offset: u64,
        data: Payload,
    ) {
        let commit_index = self.log.commit_index();
        let needed = meta.index > commit_index;
        #[cfg(feature = "mutants")]
        let needed = needed || crate::mutants::is_active(Mutant::InstallOlderSnapshot);
        if !needed {
            let outcome = AppendOutcome::Accepted {
                match_index: commit_index,
            };
            self.send(
                leader,
                self.term,
                MessageBody::AppendEntriesResponse(outcome),
            );
            return;
        }
        let Role::Follower(follower) = &mut self.role else {
            unreachable!()
        };
        let fresh = offset == 0 && follower.incoming.as_ref().is_none_or(|i| i.meta != meta);
        if fresh {
            follower.incoming = Some(IncomingSnapshot {
                meta,
                received_bytes: 0,
            });
        }
        let (next_offset, resend) = match &mut follower.incoming {
            Some(incoming) if incoming.meta == meta => {
                let wanted = offset == incoming.received_bytes
                    && (fresh || incoming.received_bytes < meta.size_bytes);
                if wanted {
                    // Well-formed: the chunk ends within the snapshot.
                    incoming.received_bytes += data.len() as u64;
                    let last = incoming.received_bytes == meta.size_bytes;
                    if fresh || !data.is_empty() {
                        self.snapshot_chunks.push(SnapshotChunk {
                            snapshot: meta,
                            membership,
                            offset,
                            data,
                            last,
                        });
                    }
                }
                let received = incoming.received_bytes;
                (received, !wanted && offset > received)
            }
            _ => (0, true),
        };
        let body = MessageBody::InstallSnapshotResponse {
            snapshot: meta,
            next_offset,
            resend,
        };
        self.send(leader, self.term, body);
    }

    fn step_leader(&mut self, from: NodeId, body: MessageBody) {
        let inflight_max = self.config.inflight_appends_max;
        let last_index = self.log.last_index();
        let Role::Leader(leader) = &mut self.role else {
            unreachable!()
        };
        let Some(progress) = leader.progress.get_mut(&from) else {
            return;
        };
        match body {
            MessageBody::AppendEntriesResponse(outcome) => {
                progress.recent_active = true;
                match outcome {
                    AppendOutcome::Accepted { match_index } => {
                        if match_index <= last_index && progress.accepted(match_index) {
                            self.maybe_commit();
                            self.maybe_timeout_now();
                        }
                    }
                    AppendOutcome::Rejected {
                        rejected_prev_index,
                        hint_index,
                        hint_term,
                    } => {
                        // Fast backtracking: our last entry at or before the hint whose term is
                        // at most the hint's term is the furthest point the logs can agree. If
                        // that is in our compacted prefix, the snapshot must go (retrying from
                        // index 1 sends it).
                        let agree = self.log.last_index_with_term_at_most(hint_index, hint_term);
                        let retry_from = agree.map_or(LogIndex(1), LogIndex::next);
                        progress.rejected(rejected_prev_index, retry_from);
                    }
                }
            }
            MessageBody::HeartbeatResponse { read_round } => {
                progress.recent_active = true;
                progress.heartbeat_answered(inflight_max, last_index);
                leader.reads.answered(from, read_round);
            }
            MessageBody::ReadIndex { read } => self.lead_read(from, read),
            MessageBody::InstallSnapshotResponse {
                snapshot,
                next_offset,
                resend,
            } => {
                progress.recent_active = true;
                progress.snapshot_acked(snapshot, next_offset, resend);
            }
            _ => {}
        }
    }

    /// Raft §5.3 and §5.4.2: the commit index is the highest index a quorum has persisted, but
    /// only an entry of the leader's own term may be committed by counting replicas (Figure 8).
    fn maybe_commit(&mut self) -> bool {
        let Role::Leader(leader) = &self.role else {
            return false;
        };
        let membership = self.log.membership();
        let counts = |peer: &NodeId| membership.is_voter(*peer);
        #[cfg(feature = "mutants")]
        let counts =
            |peer: &NodeId| counts(peer) || crate::mutants::is_active(Mutant::LearnerInQuorum);
        let mut match_indexes = [LogIndex(0); limits::CLUSTER_SIZE_MAX];
        let mut voters = 0;
        if membership.is_voter(self.config.id) {
            match_indexes[0] = self.log.stable_index();
            voters = 1;
        }
        for (_, progress) in leader.progress.iter().filter(|(peer, _)| counts(peer)) {
            match_indexes[voters] = progress.match_index;
            voters += 1;
        }
        if voters == 0 {
            return false;
        }
        let candidate = quorum::committed_index(&mut match_indexes[..voters]);
        #[cfg(feature = "mutants")]
        let candidate = match crate::mutants::is_active(Mutant::LearnerInQuorum) {
            // Acknowledgements from every member, against a quorum of the voters' size.
            true => {
                let quorum = quorum::majority(membership.voter_count());
                match_indexes[..voters].sort_unstable_by(|a, b| b.cmp(a));
                match_indexes[quorum.min(voters) - 1]
            }
            false => candidate,
        };
        let of_current_term = self.log.term(candidate) == Some(self.term);
        #[cfg(feature = "mutants")]
        let of_current_term = of_current_term
            || (crate::mutants::is_active(Mutant::CommitPriorTerm)
                && candidate > self.log.commit_index());
        if of_current_term && self.log.commit_to(candidate) {
            self.maybe_step_down_removed();
            return true;
        }
        false
    }

    /// Thesis §4.2.2: a leader that the configuration in force leaves out steps down once
    /// that configuration has committed (until then it leads, without counting itself).
    fn maybe_step_down_removed(&mut self) {
        let committed = self.log.membership_index() <= self.log.commit_index();
        if committed && !self.is_voter() && matches!(self.role, Role::Leader(_)) {
            self.become_follower(self.term, None);
        }
    }

    /// The periodic heartbeat: every broadcast is a read round of its own (see `ReadOnly`).
    fn broadcast_heartbeat(&mut self) {
        let Role::Leader(leader) = &mut self.role else {
            unreachable!()
        };
        // Reads in the round about to go out need every answer, as does a lease (only a
        // round's answers renew it); so does a read whose round went out a whole interval ago
        // and is still unconfirmed (its heartbeats or their answers were likely lost).
        let interval_began = self
            .ticks
            .saturating_sub(self.config.heartbeat_interval_ticks.into());
        let skip_confirmed = !self.config.read_lease
            && !leader.reads.has_unsent()
            && !leader.reads.waits_since(interval_began);
        let round = leader.reads.broadcast(self.ticks);
        self.send_heartbeats(round, Heartbeats::Periodic { skip_confirmed });
    }

    /// A heartbeat to every follower; with `Periodic { skip_confirmed: true }`, not to one that
    /// accepted an append sent since the last periodic heartbeat (Raft §5.2 sends heartbeats
    /// in idle periods only). That append reset the follower's election timer and told it the
    /// commit of its time, and its answer marked the follower active; the commit since then
    /// comes with the next append, or with the heartbeat of the first interval without one.
    /// A follower whose appends of the interval all went unanswered, or one the leader cannot
    /// send to (a paused probe, a full window), gets its heartbeat, whose answer starts the
    /// repair (`Progress::heartbeat_answered`).
    fn send_heartbeats(&mut self, read_round: u64, heartbeats: Heartbeats) {
        let commit_index = self.log.commit_index();
        let inflight_max = self.config.inflight_appends_max;
        let term = self.term;
        let Role::Leader(leader) = &mut self.role else {
            unreachable!()
        };
        let (periodic, skip_confirmed) = match heartbeats {
            Heartbeats::Periodic { skip_confirmed } => (true, skip_confirmed),
            Heartbeats::ReadRound => (false, false),
        };
        for (&peer, progress) in leader.progress.iter_mut() {
            let confirmed = periodic && progress.end_heartbeat_interval();
            if skip_confirmed && confirmed && progress.can_send(inflight_max) {
                continue;
            }
            let leader_commit = heartbeat_commit(progress.match_index, commit_index);
            progress.commit_sent = progress.commit_sent.max(leader_commit);
            self.messages.push(Message {
                from: self.config.id,
                to: peer,
                term,
                body: MessageBody::Heartbeat {
                    leader_commit,
                    read_round,
                },
            });
        }
    }

    /// The commit index, if an entry of this node's term has committed (only then does a new
    /// leader know it is current, thesis §6.4).
    fn committed_in_term(&self) -> Option<LogIndex> {
        let commit = self.log.commit_index();
        (self.log.term(commit) == Some(self.term)).then_some(commit)
    }

    /// A leader's reads before a Ready: those waiting for the term's first commit join a round
    /// once it is in, a round whose reads are waiting sends its heartbeats, and reads whose
    /// round a quorum confirmed are answered (a follower's through a `ReadIndexResponse`).
    fn serve_reads(&mut self) {
        let commit = self.committed_in_term();
        let lease = self.config.read_lease.then(|| self.config.lease_ticks());
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        if let Some(commit) = commit {
            leader.reads.committed_in_term(commit);
        }
        if let Some(round) = leader.reads.take_unsent(self.ticks) {
            self.send_heartbeats(round, Heartbeats::ReadRound);
        }
        let Role::Leader(leader) = &mut self.role else {
            unreachable!()
        };
        // Before every Ready of a leader: the voters go on the stack, not the heap.
        let mut voters = [NodeId(0); limits::CLUSTER_SIZE_MAX];
        let mut voter_count = 0;
        for (slot, voter) in voters.iter_mut().zip(self.log.membership().voters()) {
            *slot = voter;
            voter_count += 1;
        }
        let released = leader
            .reads
            .release(self.config.id, &voters[..voter_count], lease);
        for read in released {
            self.answer_read(read.from, read.read, Ok(read.index));
        }
    }

    /// A read asked of this leader, by itself or by the follower `from`: answered at once
    /// while a lease holds, else it waits for a round (and for the term's first commit).
    fn lead_read(&mut self, from: NodeId, read: ReadId) {
        let commit = self.committed_in_term();
        let (ticks, lease) = (self.ticks, self.config.read_lease);
        let Role::Leader(leader) = &mut self.role else {
            unreachable!("only a leader leads reads")
        };
        let held = lease && leader.reads.in_lease(ticks);
        #[cfg(feature = "mutants")]
        let held = held || crate::mutants::is_active(Mutant::SkipReadRound);
        match commit.filter(|_| held) {
            Some(index) => self.answer_read(from, read, Ok(index)),
            None if leader.reads.add(from, read, commit) => {}
            None => self.answer_read(from, read, Err(ReadRefused::Busy)),
        }
    }

    /// A read's outcome: a read state here, or an answer to the follower that asked (which
    /// refuses it itself when told no index, whatever the reason).
    fn answer_read(&mut self, from: NodeId, read: ReadId, index: Result<LogIndex, ReadRefused>) {
        if from == self.config.id {
            self.read_states.push(ReadState { read, index });
        } else {
            let body = MessageBody::ReadIndexResponse {
                read,
                index: index.ok(),
            };
            self.send(from, self.term, body);
            // The follower serves the read once it has applied through `index`: it is told the
            // commit now, not at the next heartbeat.
            let (Ok(index), Some(notice)) = (index, self.commit_notice()) else {
                return;
            };
            let Role::Leader(leader) = &mut self.role else {
                unreachable!("a commit notice is a leader's")
            };
            if let Some(progress) = leader.progress.get_mut(&from) {
                progress.commit_wanted = progress.commit_wanted.max(index);
                self.messages.extend(notice.due(from, progress));
            }
        }
    }

    /// Sends every follower what it lacks, as far as its mode and window allow, batching all
    /// entries appended since the last Ready; a follower with nothing new to receive but a stale
    /// commit index gets a heartbeat carrying the commit.
    fn send_appends(&mut self) {
        let Some(notice) = self.commit_notice() else {
            return;
        };
        let (term, commit_index) = (self.term, self.log.commit_index());
        let Role::Leader(leader) = &mut self.role else {
            unreachable!("a commit notice is a leader's")
        };
        for (&peer, progress) in leader.progress.iter_mut() {
            let compacted = self.log.term(progress.next_index.prev()).is_none();
            if compacted && progress.pending_snapshot().is_none() {
                // Raft §7: the follower needs entries this log has compacted; the snapshot
                // that covers them goes instead.
                let snapshot = self.log.snapshot().expect("a compacted log has a snapshot");
                progress.become_snapshot(snapshot.clone());
            }
            if let Some(transfer) = progress.snapshot_transfer() {
                let chunk_bytes_max = self.config.snapshot_chunk_bytes_max;
                let window_chunks = self.config.snapshot_inflight_chunks_max;
                let chunks = snapshot_chunks(transfer, chunk_bytes_max, window_chunks);
                self.messages.extend(chunks.map(|body| Message {
                    from: self.config.id,
                    to: peer,
                    term,
                    body,
                }));
                continue;
            }
            let mut sent_append = false;
            while progress.wants_append(self.log.last_index(), self.config.inflight_appends_max) {
                let prev_log_index = progress.next_index.prev();
                let Some(prev_log_term) = self.log.term(prev_log_index) else {
                    break;
                };
                let entries = self.log.entries_from(
                    progress.next_index,
                    self.config.append_entries_max,
                    self.config.append_bytes_max,
                );
                let last = entries.last().map_or(prev_log_index, |e| e.index);
                progress.sent(last, entries.len());
                progress.commit_sent = progress.commit_sent.max(commit_index.min(last));
                let body = MessageBody::AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit: commit_index,
                };
                self.messages.push(Message {
                    from: self.config.id,
                    to: peer,
                    term,
                    body,
                });
                sent_append = true;
            }
            if !sent_append {
                self.messages.extend(notice.due(peer, progress));
            }
        }
    }

    /// How a leader tells followers its commit as things stand; `None` if not leading.
    fn commit_notice(&self) -> Option<CommitNotice> {
        let Role::Leader(leader) = &self.role else {
            return None;
        };
        Some(CommitNotice {
            from: self.config.id,
            term: self.term,
            commit_index: self.log.commit_index(),
            read_round: leader.reads.round(),
            eager: self.config.eager_commit,
        })
    }
}

/// Which heartbeats a leader sends.
#[derive(Clone, Copy, Debug)]
enum Heartbeats {
    /// A read round's, asked for by reads waiting: to every follower.
    ReadRound,
    /// The periodic broadcast, which ends every follower's heartbeat interval;
    /// `skip_confirmed` leaves out those an append of the interval reached.
    Periodic { skip_confirmed: bool },
}

/// The commit a heartbeat tells a follower: never past what the follower is known to hold, or
/// one with a diverging tail would commit entries that are not the leader's (etcd's
/// `sendHeartbeat` caps it the same way).
fn heartbeat_commit(match_index: LogIndex, commit_index: LogIndex) -> LogIndex {
    #[cfg(feature = "mutants")]
    if crate::mutants::is_active(Mutant::CommitPastMatch) {
        return commit_index;
    }
    match_index.min(commit_index)
}

/// A leader's rule for telling a follower the commit index when no append carries it.
struct CommitNotice {
    from: NodeId,
    term: Term,
    commit_index: LogIndex,
    read_round: u64,
    /// Every new commit (`Config::eager_commit`), not only what a read waits for.
    eager: bool,
}

impl CommitNotice {
    /// The heartbeat that tells `peer` the commit, if it is due: eagerly, whenever the follower
    /// has not been told the commit it may learn; lazily, only what one of its reads waits for.
    fn due(&self, peer: NodeId, progress: &mut Progress) -> Option<Message> {
        let leader_commit = heartbeat_commit(progress.match_index, self.commit_index);
        let wanted = match self.eager {
            true => leader_commit,
            false => leader_commit.min(progress.commit_wanted),
        };
        if progress.commit_sent >= wanted {
            return None;
        }
        progress.commit_sent = leader_commit;
        Some(Message {
            from: self.from,
            to: peer,
            term: self.term,
            body: MessageBody::Heartbeat {
                leader_commit,
                read_round: self.read_round,
            },
        })
    }
}

/// The chunks of a snapshot transfer that may go out now: as many as the window of unconfirmed
/// bytes allows, or the one chunk a stalled transfer probes with.
fn snapshot_chunks(
    transfer: &mut SnapshotTransfer,
    chunk_bytes_max: usize,
    window_chunks: usize,
) -> impl Iterator<Item = MessageBody> + '_ {
    let window_bytes = (chunk_bytes_max as u64).saturating_mul(window_chunks as u64);
    std::iter::from_fn(move || {
        if !transfer.wants_chunk(window_bytes) {
            return None;
        }
        let offset = transfer.next_offset;
        let end = offset
            .saturating_add(chunk_bytes_max as u64)
            .min(transfer.size_bytes());
        let data = transfer.snapshot.data.slice(offset as usize..end as usize);
        transfer.chunk_sent(end - offset);
        Some(MessageBody::InstallSnapshot {
            snapshot: transfer.snapshot.meta,
            membership: transfer.snapshot.membership.clone(),
            offset,
            data,
        })
    })
}

/// Terms beyond this are refused from the network: no real cluster gets near it, and a term that
/// could overflow when incremented must never be adopted.
const TERM_MAX: u64 = u64::MAX / 2;

/// Log indexes beyond this are refused from the network and from disk, for the same reason:
/// an index the log could never reach must not make `next()` overflow.
pub const INDEX_MAX: u64 = u64::MAX / 2;

/// Whether a message is internally consistent: a sane term, and AppendEntries entries that are
/// contiguous from `prev_log_index + 1` with terms between `prev_log_term` and the sender's term.
fn is_well_formed(message: &Message) -> bool {
    if message.term.0 > TERM_MAX {
        return false;
    }
    let index_ok = |index: &LogIndex| index.0 <= INDEX_MAX;
    let indexes_ok = match &message.body {
        MessageBody::AppendEntries {
            prev_log_index,
            leader_commit,
            entries,
            ..
        } => {
            index_ok(prev_log_index)
                && index_ok(leader_commit)
                && entries.last().is_none_or(|e| index_ok(&e.index))
        }
        MessageBody::InstallSnapshot { snapshot, .. }
        | MessageBody::InstallSnapshotResponse { snapshot, .. } => index_ok(&snapshot.index),
        MessageBody::RequestVote { last_log_index, .. } => index_ok(last_log_index),
        MessageBody::Heartbeat { leader_commit, .. } => index_ok(leader_commit),
        MessageBody::ReadIndexResponse { index, .. } => index.is_none_or(|i| index_ok(&i)),
        MessageBody::AppendEntriesResponse(AppendOutcome::Accepted { match_index }) => {
            index_ok(match_index)
        }
        MessageBody::AppendEntriesResponse(AppendOutcome::Rejected {
            rejected_prev_index,
            hint_index,
            ..
        }) => index_ok(rejected_prev_index) && index_ok(hint_index),
        MessageBody::RequestVoteResponse { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::ReadIndex { .. }
        | MessageBody::TimeoutNow => true,
    };
    if !indexes_ok {
        return false;
    }
    match &message.body {
        MessageBody::InstallSnapshot {
            snapshot,
            membership,
            offset,
            data,
        } => {
            let end = offset.checked_add(data.len() as u64);
            // A snapshot covers at least one entry, whose term is at least 1.
            membership.is_well_formed()
                && snapshot.index.0 > 0
                && snapshot.term.0 > 0
                && snapshot.term <= message.term
                && snapshot.size_bytes <= limits::SNAPSHOT_SIZE_BYTES_MAX as u64
                && data.len() <= limits::SNAPSHOT_CHUNK_BYTES_MAX
                && end.is_some_and(|end| end <= snapshot.size_bytes)
        }
        MessageBody::InstallSnapshotResponse {
            snapshot,
            next_offset,
            ..
        } => *next_offset <= snapshot.size_bytes,
        _ => is_well_formed_append(message),
    }
}

/// AppendEntries entries are contiguous from `prev_log_index + 1`, with terms between
/// `prev_log_term` and the sender's term; other messages pass.
fn is_well_formed_append(message: &Message) -> bool {
    let MessageBody::AppendEntries {
        prev_log_index,
        prev_log_term,
        entries,
        ..
    } = &message.body
    else {
        return true;
    };
    let mut expected_index = prev_log_index.0.checked_add(1);
    let mut previous_term = *prev_log_term;
    for entry in entries {
        if Some(entry.index.0) != expected_index || entry.term < previous_term {
            return false;
        }
        if let EntryData::Membership(membership) = &entry.data {
            if !membership.is_well_formed() {
                return false;
            }
        }
        expected_index = entry.index.0.checked_add(1);
        previous_term = entry.term;
    }
    previous_term <= message.term
}
