//! One replica: Raft, the chat state machine and its sessions, composed. This is the only module
//! that knows all of them, and the one place the order of effects is written down:
//!
//! 0. **replicate**: send `Work::messages_before_persist` (a leader's AppendEntries, heartbeats
//!    and snapshot chunks; they promise nothing the write holds), so the leader's sync overlaps
//!    the round trip to its followers;
//! 1. **persist**: write `Work::snapshot_chunks` into the file of the snapshot being received,
//!    then append `Work::write` to the log and sync it;
//! 2. **send**: only then send `Work::messages` (they may promise what was just persisted: a
//!    vote, an acknowledgement of entries or of snapshot bytes);
//! 3. **apply**: [`Replica::complete`] applies the committed entries to the chat state machine;
//! 4. **reply**: only then answer the clients waiting on those entries, from what `complete`
//!    returns.
//!
//! Reads (check, list, fetch) never enter the log (Raft thesis §6.4): [`Replica::read`] asks
//! Raft for a read index, and `complete` answers the read from the chat state once it has
//! applied through that index, with the applied index it was evaluated at. A read Raft refuses
//! (no leader, leadership lost, too many waiting) is answered with why; one that waits longer
//! than [`READ_TIMEOUT_ELECTIONS`] election timeouts (a follower's request or the leader's
//! answer was lost) is given up.
//!
//! Snapshots (Raft §7) run beside these steps, never on a client's path:
//!
//! - **taking one**: when the log since the last snapshot exceeds the policy's entries or bytes,
//!   [`Replica::maybe_snapshot`] hands out a [`SnapshotJob`]: a copy of the chat state (cheap,
//!   copy on write) at the applied index. The host serializes it off its event loop
//!   ([`SnapshotJob::encode`]), writes the file under a temporary name, syncs it, renames it and
//!   syncs the directory, and only then reports [`Replica::snapshot_taken`]; the log is then
//!   compacted behind it, and the host may delete the log segments and snapshot files that
//!   recovery no longer needs.
//! - **receiving one**: once a Work's last chunk is written, the host syncs the file, reads it
//!   back, checks it ([`Replica::decode_snapshot`]), makes it durable under its final name, and
//!   reports [`Replica::snapshot_received`] with the decoded state, or
//!   [`Replica::snapshot_refused`].
//!
//! The async host (and the simulator through it) only executes these steps; it makes no
//! protocol decision of its own. Commands are encoded here, so Raft sees opaque payloads.

use crate::chat::{Chat, ChatLimits, Command, Operation, Outcome, Principal, Reply};
use crate::codec::{self, CodecError};
use crate::limits;
use crate::raft::{
    ChangeError, ConfChange, Config, ConfigError, EntryData, HardState, Membership, Message,
    Payload, Persisted, ProposeError, Raft, ReadRefused, ReadState, RestoreError, Snapshot,
    SnapshotChunk, SnapshotMeta, Status, TransferError,
};
use crate::storage::{self, Install};
use crate::types::{LogIndex, NodeId, ReadId, Term};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// A read still unanswered after this many of the longest election timeouts is given up: its
/// request to the leader, or the answer, was lost, or the node is too far behind to apply
/// through its read index (a client has long since retried elsewhere).
pub const READ_TIMEOUT_ELECTIONS: u64 = 2;

/// When a replica snapshots its state: once the log since the last snapshot holds more entries,
/// or more bytes of commands, than these (etcd's `snapshot-count`, plus a size bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Entries applied since the last snapshot that call for a new one.
    pub log_entries: u64,
    /// Command bytes applied since the last snapshot that call for a new one.
    pub log_bytes: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> SnapshotPolicy {
        SnapshotPolicy {
            log_entries: limits::SNAPSHOT_LOG_ENTRIES_DEFAULT,
            log_bytes: limits::SNAPSHOT_LOG_BYTES_DEFAULT,
        }
    }
}

/// A snapshot to take: a copy of the chat state at an applied index. Encoding it is the
/// expensive part, meant for a thread where blocking is fine.
#[derive(Debug)]
pub struct SnapshotJob {
    index: LogIndex,
    term: Term,
    membership: Membership,
    chat: Chat,
}

impl SnapshotJob {
    /// The last index the snapshot will cover.
    pub fn index(&self) -> LogIndex {
        self.index
    }

    /// The digest of the state the snapshot will hold.
    pub fn digest(&self) -> u64 {
        self.chat.digest()
    }

    /// Serializes the copied state into a snapshot, with its checksum.
    pub fn encode(self) -> Snapshot {
        Snapshot::new(self.index, self.term, Payload::new(self.chat.snapshot()))
            .with_membership(self.membership)
    }
}

/// One round of effects: its committed entries applied at once ([`Replica::apply`]); its
/// early messages sent; its snapshot chunks and `write` persisted (after every earlier
/// round's); then its messages sent; then handed back to [`Replica::complete`].
#[derive(Debug)]
#[must_use = "Work must be persisted, sent, and completed"]
pub struct Work {
    /// Chunks of a leader's snapshot to write into its file before the log is synced.
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// Bytes to append to the log and sync before sending `messages`. Empty when there is
    /// nothing to persist.
    pub write: Vec<u8>,
    /// Messages to send BEFORE the write (see `Ready::take_messages_before_persist`).
    pub messages_before_persist: Vec<Message>,
    /// Messages to send AFTER the write is synced.
    pub messages: Vec<Message>,
    installed: Option<Install>,
    hard_state: Option<HardState>,
    last_index: LogIndex,
    entries: Vec<crate::raft::Entry>,
    committed: Vec<crate::raft::Entry>,
    read_states: Vec<ReadState>,
    /// Whether Raft handed out a Ready for this round (a round may only answer reads).
    from_raft: bool,
}

impl Work {
    /// Whether the host must write and sync before sending.
    pub fn must_sync(&self) -> bool {
        !self.write.is_empty()
    }

    /// The log entries `write` persists (for observers; the bytes are what matters).
    pub fn entries(&self) -> &[crate::raft::Entry] {
        &self.entries
    }

    /// The snapshot installed in this round, as `write` records it.
    pub fn installed(&self) -> Option<Install> {
        self.installed
    }

    /// The hard state `write` records, if it records one.
    pub fn hard_state(&self) -> Option<HardState> {
        self.hard_state
    }

    /// The log's last index once `write` is persisted: everything the log holds is on disk
    /// then (after an install, the snapshot's index, or the end of the suffix it kept).
    pub fn last_index(&self) -> LogIndex {
        self.last_index
    }
}

/// What completing a round gave: the entries applied, and the reads answered.
#[derive(Debug, Default)]
#[must_use = "clients are waiting for these answers"]
pub struct Completed {
    /// The committed entries, in log order, as the state machine applied them.
    pub applied: Vec<Applied>,
    /// Reads answered (served or refused) in this round.
    pub reads: Vec<ReadAnswer>,
}

/// The answer to a read asked with [`Replica::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAnswer {
    /// The read, as `read` named it.
    pub read: ReadId,
    /// The reply, and the applied index of the state it was evaluated on (at or past the read
    /// index); or why it was not served.
    pub result: Result<(LogIndex, Reply), ReadError>,
}

/// Why a read was not served. It never changed anything: the client may retry anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// This node could not confirm a leader's read index (it knows no leader, or the leader
    /// it asked, or this node itself, lost leadership first).
    NotLeader,
    /// Too many reads are waiting; back off.
    Busy,
    /// No read index came, or the state did not catch up to it, in time.
    TimedOut,
    /// The operation changes state: it must go through the log under a session.
    NotReadOnly,
}

impl From<ReadRefused> for ReadError {
    fn from(refused: ReadRefused) -> ReadError {
        match refused {
            ReadRefused::NotLeader => ReadError::NotLeader,
            ReadRefused::Busy => ReadError::Busy,
        }
    }
}

/// A read being served: what it asks, when, and its read index once known.
#[derive(Debug)]
struct PendingRead {
    operation: Operation,
    principal: Option<Principal>,
    asked_at: u64,
    /// The term it was asked in.
    term: Term,
    index: Option<LogIndex>,
}

/// The reads a replica is serving. Read ids grow with time, so the oldest read (the next to
/// time out) is always the first.
#[derive(Debug, Default)]
struct Reads {
    next: u64,
    pending: BTreeMap<ReadId, PendingRead>,
    /// Reads with their read index, waiting for the state to apply through it.
    by_index: BTreeSet<(LogIndex, ReadId)>,
    /// Answers not yet handed out.
    answers: Vec<ReadAnswer>,
    /// The newest term a read was asked in.
    term: Term,
}

impl Reads {
    fn add(
        &mut self,
        operation: Operation,
        principal: Option<Principal>,
        now: u64,
        term: Term,
    ) -> ReadId {
        self.next += 1;
        let read = ReadId(self.next);
        self.term = term;
        let pending = PendingRead {
            operation,
            principal,
            asked_at: now,
            term,
            index: None,
        };
        self.pending.insert(read, pending);
        read
    }

    /// Raft's answer about a read's index.
    fn indexed(&mut self, state: ReadState) {
        let Some(pending) = self.pending.get_mut(&state.read) else {
            return; // Timed out meanwhile.
        };
        match state.index {
            Ok(index) if pending.index.is_none() => {
                pending.index = Some(index);
                self.by_index.insert((index, state.read));
            }
            Ok(_) => {} // A duplicate: the first answer stands.
            Err(refused) => self.answer(state.read, Err(refused.into())),
        }
    }

    /// Serves every read whose read index `chat` has applied through.
    fn serve(&mut self, chat: &Chat, #[allow(unused)] leads: bool) {
        let applied = chat.applied_index();
        while let Some(&(index, read)) = self.by_index.first() {
            #[cfg(feature = "mutants")]
            let index = serve_before_apply(index, leads);
            if index > applied {
                break;
            }
            self.by_index.pop_first();
            if let Some(pending) = self.pending.remove(&read) {
                let reply = chat.query_as(&pending.operation, pending.principal.as_ref());
                self.answers.push(ReadAnswer {
                    read,
                    result: Ok((applied, reply)),
                });
            }
        }
    }

    /// The node is in `term` now: a read asked in an earlier term still waiting for its index
    /// never gets one (an answer from the old term's leader would be dropped as stale), so it
    /// is refused now rather than left to time out.
    fn term_is(&mut self, term: Term) {
        if term <= self.term {
            return;
        }
        self.term = term;
        let stale: Vec<ReadId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.index.is_none() && p.term < term)
            .map(|(&read, _)| read)
            .collect();
        for read in stale {
            self.answer(read, Err(ReadError::NotLeader));
        }
    }

    /// Gives up every read asked before `deadline`.
    fn expire(&mut self, deadline: u64) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().asked_at > deadline {
                break;
            }
            let (read, pending) = entry.remove_entry();
            if let Some(index) = pending.index {
                self.by_index.remove(&(index, read));
            }
            self.answers.push(ReadAnswer {
                read,
                result: Err(ReadError::TimedOut),
            });
        }
    }

    fn answer(&mut self, read: ReadId, result: Result<(LogIndex, Reply), ReadError>) {
        if let Some(pending) = self.pending.remove(&read) {
            if let Some(index) = pending.index {
                self.by_index.remove(&(index, read));
            }
            self.answers.push(ReadAnswer { read, result });
        }
    }
}

/// Mutant `serve-before-apply`: a follower serves a read as soon as the leader's read index
/// arrives, from whatever it has applied by then.
#[cfg(feature = "mutants")]
fn serve_before_apply(index: LogIndex, leads: bool) -> LogIndex {
    use crate::mutants::{is_active, Mutant};
    match is_active(Mutant::ServeBeforeApply) && !leads {
        true => LogIndex(0),
        false => index,
    }
}

/// A committed entry as the state machine applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Its log index.
    pub index: LogIndex,
    /// The term it was proposed in; a waiter whose proposal had another term at this index
    /// lost its entry to another leader.
    pub term: Term,
    /// The command, or `None` for a leader's no-op.
    pub command: Option<Command>,
    /// The chat state machine's answer, or `None` for a no-op.
    pub outcome: Option<Outcome>,
    /// The chat state's digest after applying it.
    pub digest: u64,
}

/// Raft plus the chat state machine, with the order of effects fixed.
#[derive(Debug)]
pub struct Replica {
    raft: Raft,
    chat: Chat,
    policy: SnapshotPolicy,
    /// A job was handed out and its snapshot is not taken yet.
    snapshot_in_progress: bool,
    /// The index of the newest snapshot taken or installed.
    snapshot_index: LogIndex,
    /// Command bytes applied since then.
    bytes_since_snapshot: u64,
    reads: Reads,
    /// Ticks since the replica started (the clock reads time out by).
    ticks: u64,
    /// Ticks a read may wait.
    read_timeout_ticks: u64,
}

impl Replica {
    /// A replica that has never run, with an empty chat state under the default limits.
    pub fn new(
        config: Config,
        policy: SnapshotPolicy,
        rng: ChaCha8Rng,
    ) -> Result<Replica, ConfigError> {
        let read_timeout_ticks = read_timeout_ticks(&config);
        Ok(Replica {
            raft: Raft::new(config, rng)?,
            chat: Chat::new(),
            policy,
            snapshot_in_progress: false,
            snapshot_index: LogIndex(0),
            bytes_since_snapshot: 0,
            reads: Reads::default(),
            ticks: 0,
            read_timeout_ticks,
        })
    }

    /// The snapshot a new data directory starts from: the empty chat state with `limits`,
    /// which are fixed from then on (they travel in every later snapshot).
    pub fn initial_snapshot(limits: ChatLimits) -> Snapshot {
        let data = Chat::with_limits(limits).snapshot();
        Snapshot::new(LogIndex(0), Term(0), Payload::new(data))
    }

    /// A replica restarting from what it persisted: the chat state comes from the snapshot,
    /// and the committed entries after it are applied again through the normal
    /// `ready`/`complete` path. Fails if the snapshot's state does not decode or is not at its
    /// index, or if Raft refuses the log.
    pub fn recover(
        config: Config,
        policy: SnapshotPolicy,
        rng: ChaCha8Rng,
        persisted: Persisted,
    ) -> Result<Replica, RestoreError> {
        let chat = match &persisted.snapshot {
            Some(snapshot) => Replica::decode_snapshot(snapshot).map_err(RestoreError)?,
            None => Chat::new(),
        };
        let snapshot_index = chat.applied_index();
        let read_timeout_ticks = read_timeout_ticks(&config);
        let raft = Raft::restart(config, rng, persisted)?;
        Ok(Replica {
            raft,
            chat,
            policy,
            snapshot_in_progress: false,
            snapshot_index,
            bytes_since_snapshot: 0,
            reads: Reads::default(),
            ticks: 0,
            read_timeout_ticks,
        })
    }

    /// The chat state a snapshot holds, checked: its bytes match the checksum, decode to a
    /// valid state, and that state is at the snapshot's index. A pure function, meant for a
    /// thread where blocking is fine.
    pub fn decode_snapshot(snapshot: &Snapshot) -> Result<Chat, String> {
        let at = snapshot.meta.index;
        if !snapshot.is_intact() {
            return Err(format!("snapshot at {at} does not match its checksum"));
        }
        if !storage::is_plausible_snapshot(&snapshot.meta) {
            return Err(format!("snapshot at {at} has term {}", snapshot.meta.term));
        }
        let chat = Chat::restore(snapshot.data.as_bytes())
            .map_err(|e| format!("snapshot at {at}: {e}"))?;
        if chat.applied_index() != at {
            return Err(format!(
                "snapshot at {at} holds the state at {}",
                chat.applied_index()
            ));
        }
        Ok(chat)
    }

    /// A peer's message.
    pub fn step(&mut self, message: Message) {
        self.raft.step(message);
    }

    /// One tick of time.
    pub fn tick(&mut self) {
        self.raft.tick();
        self.ticks += 1;
        if let Some(deadline) = self.ticks.checked_sub(self.read_timeout_ticks) {
            self.reads.expire(deadline);
        }
    }

    /// The host's clock stalled for more than a tick (see `Raft::clock_stalled`).
    pub fn clock_stalled(&mut self) {
        self.raft.clock_stalled();
    }

    /// Asks for a linearizable read of `operation` without writing the log. Its answer comes
    /// out of a later [`Replica::complete`], under the id returned here.
    pub fn read(&mut self, operation: Operation) -> Result<ReadId, ReadError> {
        self.read_as(operation, None)
    }

    /// [`Replica::read`] for a caller acting as `principal`, whose token the caller verified:
    /// it may read that principal's own password-protected inbox.
    pub fn read_as(
        &mut self,
        operation: Operation,
        principal: Option<Principal>,
    ) -> Result<ReadId, ReadError> {
        if !operation.is_read_only() {
            return Err(ReadError::NotReadOnly);
        }
        let term = self.raft.status().term;
        let read = self
            .reads
            .add(Operation::bounded(operation), principal, self.ticks, term);
        self.raft.read_index(read);
        Ok(read)
    }

    /// Proposes a client command, bounded first (see [`Command::bounded`]): that never changes
    /// the reply, and bounds every log entry.
    pub fn propose(&mut self, command: Command) -> Result<(LogIndex, Term), ProposeError> {
        let command = command.bounded();
        let bytes = codec::encode_payload(&command).expect("a bounded command always encodes");
        assert!(bytes.len() <= limits::COMMAND_SIZE_BYTES_MAX);
        self.raft.propose(Payload::new(bytes))
    }

    /// Proposes a membership change (leader only; see `raft::confchange`). It takes effect
    /// once appended; the host answers the operator when it commits.
    pub fn propose_change(&mut self, change: ConfChange) -> Result<(LogIndex, Term), ChangeError> {
        self.raft.propose_change(change)
    }

    /// Starts handing leadership to `target`, or to the most up-to-date other voter.
    pub fn transfer_leadership(&mut self, target: Option<NodeId>) -> Result<NodeId, TransferError> {
        self.raft.transfer_leadership(target)
    }

    /// The configuration in force (the newest in the log).
    pub fn membership(&self) -> &Membership {
        self.raft.membership()
    }

    /// The next round of effects, or `None` when there is nothing to do.
    pub fn ready(&mut self) -> Option<Work> {
        let Some(mut ready) = self.raft.ready() else {
            // Reads answered outside a round (timed out) still need one to come out of.
            return (!self.reads.answers.is_empty()).then(|| Work::answers_only(self.status()));
        };
        // Every entry up to it is persisted once this round's write is: the unstable ones are
        // in `ready.entries`.
        let last_index = self.raft.status().last_index;
        let messages_before_persist = ready.take_messages_before_persist();
        let installed = ready
            .snapshot
            .map(|snapshot| Install::after_ready(snapshot, &ready.entries, last_index));
        let mut write = Vec::new();
        storage::encode_batch(
            installed.as_ref(),
            ready.hard_state.as_ref(),
            &ready.entries,
            &mut write,
        )
        .expect("every entry is bounded well below the record limit");
        Some(Work {
            snapshot_chunks: ready.snapshot_chunks,
            write,
            messages_before_persist,
            messages: ready.messages,
            installed,
            hard_state: ready.hard_state,
            last_index,
            entries: ready.entries,
            committed: ready.committed_entries,
            read_states: ready.read_states,
            from_raft: true,
        })
    }

    /// Applies the round's committed entries, in order, and takes in its read states: at once,
    /// before its write, because this node persisted those entries in earlier rounds and reads
    /// need nothing persisted. Returns the entries with their outcomes, and the reads now
    /// answered, for the host to answer its waiting clients. [`Replica::complete`] does it for
    /// a host that has not.
    pub fn apply(&mut self, work: &mut Work) -> Completed {
        Completed {
            applied: self.apply_committed(work),
            reads: self.serve_reads(),
        }
    }

    /// Completes a round whose write is synced and whose messages were taken and sent (rounds
    /// are completed in the order `ready` gave them): applies its committed entries if
    /// [`Replica::apply`] has not, and returns what was applied and the reads answered.
    /// Completing with messages still in the Work is a host bug.
    pub fn complete(&mut self, mut work: Work) -> Completed {
        assert!(
            work.messages.is_empty() && work.messages_before_persist.is_empty(),
            "complete() before the messages were taken and sent"
        );
        let applied = self.apply_committed(&mut work);
        if work.from_raft {
            self.raft.advance();
        }
        Completed {
            applied,
            reads: self.serve_reads(),
        }
    }

    /// Applies the round's committed entries still in it and takes in its read states.
    fn apply_committed(&mut self, work: &mut Work) -> Vec<Applied> {
        for state in std::mem::take(&mut work.read_states) {
            self.reads.indexed(state);
        }
        std::mem::take(&mut work.committed)
            .into_iter()
            .map(|entry| self.apply_entry(entry))
            .collect()
    }

    fn serve_reads(&mut self) -> Vec<ReadAnswer> {
        self.reads.term_is(self.raft.status().term);
        let leads = self.raft.status().role == crate::raft::RoleKind::Leader;
        self.reads.serve(&self.chat, leads);
        std::mem::take(&mut self.reads.answers)
    }

    fn apply_entry(&mut self, entry: crate::raft::Entry) -> Applied {
        let (index, term) = (entry.index, entry.term);
        self.bytes_since_snapshot += entry.payload_size_bytes() as u64;
        let command = match &entry.data {
            // A configuration is Raft's business; for the chat it is a no-op.
            EntryData::Noop | EntryData::Membership(_) => None,
            EntryData::Command(payload) => decode_command(payload.as_bytes()).ok(),
        };
        // Every replica decodes the same bytes the same way, so an undecodable entry (which only
        // a bug could produce: entries are checksummed on the wire and on disk) is skipped
        // identically everywhere, like a no-op.
        let outcome = match &command {
            Some(command) => Some(self.chat.apply(index, command)),
            None => {
                self.chat.apply_noop(index);
                None
            }
        };
        Applied {
            index,
            term,
            command,
            outcome,
            digest: self.chat.digest(),
        }
    }

    /// Reads asked and not yet answered.
    pub fn reads_pending(&self) -> usize {
        self.reads.pending.len()
    }

    /// Whether a snapshot is being taken (its job handed out, its result not yet back).
    pub fn snapshot_in_progress(&self) -> bool {
        self.snapshot_in_progress
    }

    /// Whether the policy calls for a snapshot now and none is being taken.
    pub fn snapshot_due(&self) -> bool {
        let entries = self.chat.applied_index().0 - self.snapshot_index.0;
        let due = entries >= self.policy.log_entries
            || self.bytes_since_snapshot >= self.policy.log_bytes;
        !self.snapshot_in_progress && due && entries > 0
    }

    /// A snapshot to take now, if the log since the last one has outgrown the policy and none
    /// is being taken. The job holds a copy of the state at the applied index.
    pub fn maybe_snapshot(&mut self) -> Option<SnapshotJob> {
        if !self.snapshot_due() {
            return None;
        }
        let applied_index = self.chat.applied_index();
        let term = self.raft.log().term(applied_index);
        self.snapshot_in_progress = true;
        Some(SnapshotJob {
            index: applied_index,
            term: term.expect("the applied index is in the log"),
            membership: self.raft.membership_at(applied_index).clone(),
            chat: self.chat.clone(),
        })
    }

    /// The host made the job's snapshot durable. Returns the index the log is now compacted
    /// through.
    pub fn snapshot_taken(&mut self, snapshot: Snapshot) -> LogIndex {
        assert!(self.snapshot_in_progress, "a snapshot taken without a job");
        self.snapshot_in_progress = false;
        if snapshot.meta.index > self.snapshot_index {
            self.snapshot_index = snapshot.meta.index;
            self.bytes_since_snapshot = 0;
        }
        self.raft.snapshot_taken(snapshot)
    }

    /// A leader's snapshot arrived whole, checked, durable, and decoded into `chat`. Returns
    /// whether it was installed (see `Raft::snapshot_received`): the chat state is then the
    /// snapshot's.
    pub fn snapshot_received(&mut self, snapshot: Snapshot, chat: Chat) -> bool {
        let meta = snapshot.meta;
        assert_eq!(
            chat.applied_index(),
            meta.index,
            "decode_snapshot checks this"
        );
        if !self.raft.snapshot_received(snapshot) {
            return false;
        }
        self.chat = chat;
        self.snapshot_index = meta.index;
        self.bytes_since_snapshot = 0;
        true
    }

    /// The snapshot being received failed its checks; the transfer starts over.
    pub fn snapshot_refused(&mut self, snapshot: SnapshotMeta) {
        self.raft.snapshot_refused(snapshot);
    }

    /// Raft's view: role, term, leader, commit and applied index.
    pub fn status(&self) -> Status {
        self.raft.status()
    }

    /// The Raft node, for checkers.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The chat state, for checkers and inspection.
    pub fn chat(&self) -> &Chat {
        &self.chat
    }
}

impl Work {
    /// A round with nothing to persist, send or apply, that only hands out read answers.
    fn answers_only(status: Status) -> Work {
        Work {
            snapshot_chunks: Vec::new(),
            write: Vec::new(),
            messages_before_persist: Vec::new(),
            messages: Vec::new(),
            installed: None,
            hard_state: None,
            last_index: status.last_index,
            entries: Vec::new(),
            committed: Vec::new(),
            read_states: Vec::new(),
            from_raft: false,
        }
    }
}

fn read_timeout_ticks(config: &Config) -> u64 {
    READ_TIMEOUT_ELECTIONS * u64::from(config.election_timeout_ticks_max)
}

fn decode_command(bytes: &[u8]) -> Result<Command, CodecError> {
    codec::decode_payload(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Reply, Status as ChatStatus};
    use crate::raft::RoleKind;
    use crate::types::{ClientId, NodeId};
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    /// What one node keeps on its "disk": its log bytes, its newest snapshot, and the file of
    /// a snapshot being received.
    #[derive(Default)]
    struct Files {
        log: Vec<u8>,
        snapshot: Option<Snapshot>,
        incoming: Vec<u8>,
    }

    /// Replicas with their files, on a lossless in-memory network, carrying out every Work
    /// and snapshot as a host would (synchronously).
    struct Cluster {
        replicas: BTreeMap<NodeId, Replica>,
        files: BTreeMap<NodeId, Files>,
        down: Vec<NodeId>,
        outcomes: BTreeMap<(NodeId, LogIndex), Applied>,
        reads: BTreeMap<(NodeId, ReadId), ReadAnswer>,
        policy: SnapshotPolicy,
        installs: usize,
    }

    fn config(id: u64) -> Config {
        let mut config = Config::new(NodeId(id), (1..=3).map(NodeId).collect());
        config.snapshot_catch_up_entries = 2;
        config.snapshot_chunk_bytes_max = 64;
        config
    }

    impl Cluster {
        fn new() -> Cluster {
            Cluster::with_policy(SnapshotPolicy::default())
        }

        fn with_policy(policy: SnapshotPolicy) -> Cluster {
            let mut cluster = Cluster {
                replicas: BTreeMap::new(),
                files: BTreeMap::new(),
                down: Vec::new(),
                outcomes: BTreeMap::new(),
                reads: BTreeMap::new(),
                policy,
                installs: 0,
            };
            for id in 1..=3 {
                cluster.files.insert(NodeId(id), Files::default());
                cluster.recover(NodeId(id));
            }
            cluster
        }

        fn run(&mut self, ticks: usize) {
            for _ in 0..ticks {
                for (id, replica) in self.replicas.iter_mut() {
                    if !self.down.contains(id) {
                        replica.tick();
                    }
                }
                self.settle();
            }
        }

        fn settle(&mut self) {
            loop {
                let mut queue = Vec::new();
                let ids: Vec<NodeId> = self.replicas.keys().copied().collect();
                for id in ids {
                    if !self.down.contains(&id) {
                        queue.extend(self.process(id));
                    }
                }
                if queue.is_empty() {
                    return;
                }
                for message in queue {
                    if !self.down.contains(&message.to) {
                        self.replicas.get_mut(&message.to).unwrap().step(message);
                    }
                }
            }
        }

        /// Carries out a node's work until it has none; returns the messages it sent.
        fn process(&mut self, id: NodeId) -> Vec<Message> {
            let mut sent = Vec::new();
            let replica = self.replicas.get_mut(&id).unwrap();
            let files = self.files.get_mut(&id).unwrap();
            while let Some(mut work) = replica.ready() {
                let mut received = None;
                for chunk in std::mem::take(&mut work.snapshot_chunks) {
                    files.incoming.truncate(chunk.offset as usize);
                    files.incoming.extend_from_slice(chunk.data.as_bytes());
                    if chunk.last {
                        let data = Payload::new(std::mem::take(&mut files.incoming));
                        received = Some(Snapshot {
                            meta: chunk.snapshot,
                            membership: chunk.membership.clone(),
                            data,
                        });
                    }
                }
                files.log.extend_from_slice(&work.write);
                sent.append(&mut work.messages_before_persist);
                sent.append(&mut work.messages);
                let completed = replica.complete(work);
                for applied in completed.applied {
                    self.outcomes.insert((id, applied.index), applied);
                }
                for answer in completed.reads {
                    self.reads.insert((id, answer.read), answer);
                }
                if let Some(snapshot) = received {
                    let chat = Replica::decode_snapshot(&snapshot).unwrap();
                    files.snapshot = Some(snapshot.clone());
                    if replica.snapshot_received(snapshot, chat) {
                        self.installs += 1;
                    }
                }
                if let Some(job) = replica.maybe_snapshot() {
                    let snapshot = job.encode();
                    files.snapshot = Some(snapshot.clone());
                    replica.snapshot_taken(snapshot);
                }
            }
            sent
        }

        fn leader(&self) -> NodeId {
            let leaders: Vec<NodeId> = self
                .replicas
                .iter()
                .filter(|(id, r)| !self.down.contains(id) && r.status().role == RoleKind::Leader)
                .map(|(&id, _)| id)
                .collect();
            assert_eq!(leaders.len(), 1, "exactly one leader");
            leaders[0]
        }

        /// Proposes at the leader and returns the outcome it applied.
        fn submit(&mut self, command: Command) -> Outcome {
            let leader = self.leader();
            let (index, _) = self
                .replicas
                .get_mut(&leader)
                .unwrap()
                .propose(command)
                .unwrap();
            self.settle();
            self.outcomes[&(leader, index)].outcome.clone().unwrap()
        }

        /// Asks `id` for a read, settles, and returns its answer, if one came.
        fn read(&mut self, id: NodeId, operation: Operation) -> Option<ReadAnswer> {
            let read = self.replicas.get_mut(&id).unwrap().read(operation).unwrap();
            self.settle();
            self.reads.remove(&(id, read))
        }

        fn log_bytes(&self) -> usize {
            self.files.values().map(|f| f.log.len()).sum()
        }

        fn crash(&mut self, id: NodeId) {
            self.down.push(id);
        }

        /// Restarts a node from its files, as a host recovers: the newest snapshot (or the
        /// initial one) and the log after it.
        fn recover(&mut self, id: NodeId) {
            self.down.retain(|&d| d != id);
            let files = &self.files[&id];
            let log = storage::recover(&files.log).unwrap();
            let snapshot = files
                .snapshot
                .clone()
                .unwrap_or_else(|| Replica::initial_snapshot(ChatLimits::default()));
            let combined = storage::combine(snapshot, log).unwrap();
            assert!(!combined.reset, "nodes crash only between batches here");
            let persisted = combined.persisted;
            let rng = ChaCha8Rng::seed_from_u64(id.0 + 100);
            let replica = Replica::recover(config(id.0), self.policy, rng, persisted).unwrap();
            self.replicas.insert(id, replica);
        }

        fn digests(&self) -> Vec<u64> {
            self.replicas.values().map(|r| r.chat().digest()).collect()
        }
    }

    fn op(client: ClientId, sequence: u64, operation: Operation) -> Command {
        Command::Client {
            client_id: client,
            sequence,
            operation,
        }
    }

    fn register(cluster: &mut Cluster) -> ClientId {
        match cluster.submit(Command::RegisterClient) {
            Outcome::Registered(client) => client,
            other => panic!("{other:?}"),
        }
    }

    fn reply(outcome: Outcome) -> Reply {
        match outcome {
            Outcome::Replied { reply, .. } => reply,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn commands_apply_in_order_and_replicas_converge() {
        let mut cluster = Cluster::new();
        cluster.run(30);
        let client = register(&mut cluster);
        let create = |name: &str| Operation::CreateAccount {
            username: name.into(),
        };
        assert_eq!(
            reply(cluster.submit(op(client, 1, create("alice")))).status,
            ChatStatus::Success
        );
        assert_eq!(
            reply(cluster.submit(op(client, 2, create("bob")))).status,
            ChatStatus::Success
        );
        let send = Operation::SendMessage {
            from: "alice".into(),
            to: "bob".into(),
            message: "hi".into(),
        };
        assert_eq!(
            reply(cluster.submit(op(client, 3, send))).status,
            ChatStatus::Success
        );
        cluster.run(3);
        let digests = cluster.digests();
        assert!(
            digests.windows(2).all(|w| w[0] == w[1]),
            "replicas diverged: {digests:?}"
        );
        assert_eq!(cluster.replicas[&NodeId(2)].chat().account_count(), 2);
    }

    #[test]
    fn a_retry_after_leader_failover_is_answered_once() {
        let mut cluster = Cluster::new();
        cluster.run(30);
        let client = register(&mut cluster);
        let create = Operation::CreateAccount {
            username: "alice".into(),
        };
        let first = cluster.submit(op(client, 1, create.clone()));
        let old_leader = cluster.leader();
        cluster.crash(old_leader);
        cluster.run(60);
        let retry = cluster.submit(op(client, 1, create));
        assert_eq!(
            retry,
            Outcome::Replied {
                reply: reply(first),
                duplicate: true
            }
        );
    }

    #[test]
    fn a_recovered_replica_rebuilds_the_same_chat_state_from_its_file() {
        let mut cluster = Cluster::new();
        cluster.run(30);
        let client = register(&mut cluster);
        for k in 1..=20 {
            let create = Operation::CreateAccount {
                username: format!("user{k}"),
            };
            cluster.submit(op(client, k, create));
        }
        cluster.run(3);
        cluster.crash(NodeId(3));
        cluster.recover(NodeId(3));
        // The file may hold an older commit index than the node had (a commit index that moved
        // alone is not synced); the rest comes from the leader, after an election if node 3
        // was the leader.
        cluster.run(60);
        let digests: Vec<u64> = (1..=3)
            .map(|id| cluster.replicas[&NodeId(id)].chat().digest())
            .collect();
        assert!(digests.iter().all(|&d| d == digests[0]), "{digests:?}");
        assert_eq!(cluster.replicas[&NodeId(3)].chat().account_count(), 20);
    }

    #[test]
    fn an_oversized_message_is_answered_without_being_replicated_whole() {
        let mut cluster = Cluster::new();
        cluster.run(30);
        let client = register(&mut cluster);
        for (k, name) in ["alice", "bob"].iter().enumerate() {
            cluster.submit(op(
                client,
                k as u64 + 1,
                Operation::CreateAccount {
                    username: (*name).into(),
                },
            ));
        }
        let size_before: usize = cluster.files.values().map(|f| f.log.len()).sum();
        let huge = "x".repeat(1_000_000);
        let send = Operation::SendMessage {
            from: "alice".into(),
            to: "bob".into(),
            message: huge,
        };
        assert_eq!(
            reply(cluster.submit(op(client, 3, send))).status,
            ChatStatus::MessageTooLong
        );
        let size_after: usize = cluster.files.values().map(|f| f.log.len()).sum();
        assert!(
            size_after - size_before < 3 * 8 * 1024,
            "grew by {}",
            size_after - size_before
        );
    }

    fn create_users(cluster: &mut Cluster, client: ClientId, range: std::ops::Range<u64>) {
        for k in range {
            let create = Operation::CreateAccount {
                username: format!("user{k}"),
            };
            let outcome = cluster.submit(op(client, k + 1, create));
            assert_eq!(reply(outcome).status, ChatStatus::Success);
        }
    }

    fn check(name: &str) -> Operation {
        Operation::CheckAccount {
            username: name.into(),
        }
    }

    fn served(answer: Option<ReadAnswer>) -> (LogIndex, Reply) {
        match answer {
            Some(ReadAnswer {
                result: Ok(served), ..
            }) => served,
            other => panic!("not served: {other:?}"),
        }
    }

    /// Thesis §6.4: a read on the leader or on a follower is served from the state through
    /// the leader's commit index, and writes nothing to any log.
    #[test]
    fn reads_on_the_leader_and_on_followers_see_every_write_and_write_no_log() {
        let mut cluster = Cluster::new();
        cluster.run(30);
        let client = register(&mut cluster);
        create_users(&mut cluster, client, 0..3);
        let leader = cluster.leader();
        let commit = cluster.replicas[&leader].status().commit_index;
        let bytes = cluster.log_bytes();
        for id in (1..=3).map(NodeId) {
            let (index, reply) = served(cluster.read(id, check("user2")));
            assert_eq!(reply.status, ChatStatus::Success, "on {id}");
            assert!(index >= commit, "{id} served at {index}, before {commit}");
            let (_, reply) = served(cluster.read(id, check("nobody")));
            assert_eq!(reply.status, ChatStatus::AccountNotExist);
        }
        assert_eq!(cluster.log_bytes(), bytes, "reads wrote to a log");
    }

    #[test]
    fn a_read_with_no_leader_known_is_refused() {
        let mut cluster = Cluster::new();
        let answer = cluster
            .read(NodeId(1), check("a"))
            .expect("answered at once");
        assert_eq!(answer.result, Err(ReadError::NotLeader));
    }

    #[test]
    fn an_operation_that_writes_is_not_a_read() {
        let mut cluster = Cluster::new();
        let create = Operation::CreateAccount {
            username: "a".into(),
        };
        let refused = cluster.replicas.get_mut(&NodeId(1)).unwrap().read(create);
        assert_eq!(refused, Err(ReadError::NotReadOnly));
    }

    /// A follower whose request for a read index goes unanswered (here, its leader crashed)
    /// refuses the read once a new term begins (the old leader's answer would be stale), and
    /// gives it up after `READ_TIMEOUT_ELECTIONS` election timeouts if none does: it never
    /// hangs.
    #[test]
    fn a_read_whose_leader_vanished_is_answered_in_bounded_time() {
        let mut cluster = Cluster::new();
        cluster.run(30);
        let leader = cluster.leader();
        let follower = (1..=3).map(NodeId).find(|&id| id != leader).unwrap();
        cluster.crash(leader);
        let read = cluster
            .replicas
            .get_mut(&follower)
            .unwrap()
            .read(check("a"))
            .unwrap();
        let timeout = READ_TIMEOUT_ELECTIONS * u64::from(config(1).election_timeout_ticks_max);
        for _ in 0..timeout {
            cluster.run(1);
            if cluster.reads.contains_key(&(follower, read)) {
                break;
            }
        }
        let answer = cluster.reads.remove(&(follower, read)).expect("answered");
        assert_eq!(answer.result, Err(ReadError::NotLeader), "a new term began");
        // With no election possible (a quorum is down; pre-vote keeps the term), it times out.
        cluster.recover(leader);
        cluster.run(30);
        let leader = cluster.leader();
        let follower = (1..=3).map(NodeId).find(|&id| id != leader).unwrap();
        for id in (1..=3).map(NodeId).filter(|&id| id != follower) {
            cluster.crash(id);
        }
        let read = cluster
            .replicas
            .get_mut(&follower)
            .unwrap()
            .read(check("a"))
            .unwrap();
        for _ in 0..timeout {
            cluster.run(1);
        }
        let answer = cluster.reads.remove(&(follower, read)).expect("answered");
        assert_eq!(answer.result, Err(ReadError::TimedOut));
        assert_eq!(cluster.replicas[&follower].reads_pending(), 0);
    }

    /// Raft §7: a follower cut off while the others snapshot and compact their logs past what
    /// it has is brought back by installing the leader's snapshot, and converges.
    #[test]
    fn a_follower_behind_the_compacted_log_catches_up_by_installing_a_snapshot() {
        let policy = SnapshotPolicy {
            log_entries: 5,
            log_bytes: u64::MAX,
        };
        let mut cluster = Cluster::with_policy(policy);
        cluster.run(30);
        let client = register(&mut cluster);
        let behind = (1..=3)
            .map(NodeId)
            .find(|&id| id != cluster.leader())
            .unwrap();
        cluster.crash(behind);
        create_users(&mut cluster, client, 0..30);
        let leader = cluster.leader();
        let first_index = cluster.replicas[&leader].status().first_index;
        assert!(
            first_index > LogIndex(10),
            "the leader compacted: {first_index}"
        );
        cluster.recover(behind);
        cluster.run(10);
        assert!(cluster.installs >= 1, "the follower installed a snapshot");
        let digests = cluster.digests();
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
        assert_eq!(cluster.replicas[&behind].chat().account_count(), 30);
    }

    /// A node that restarts after snapshotting recovers from its snapshot and the log after
    /// it, and a retry of a command from before the snapshot is still answered from the
    /// session table, not applied again.
    #[test]
    fn a_restart_from_a_snapshot_keeps_state_and_sessions() {
        let policy = SnapshotPolicy {
            log_entries: 4,
            log_bytes: u64::MAX,
        };
        let mut cluster = Cluster::with_policy(policy);
        cluster.run(30);
        let client = register(&mut cluster);
        create_users(&mut cluster, client, 0..12);
        for id in (1..=3).map(NodeId) {
            cluster.crash(id);
        }
        for id in (1..=3).map(NodeId) {
            assert!(cluster.files[&id].snapshot.is_some(), "{id} snapshotted");
            cluster.recover(id);
        }
        cluster.run(60);
        let retry = Operation::CreateAccount {
            username: "user11".into(),
        };
        match cluster.submit(op(client, 12, retry)) {
            Outcome::Replied {
                duplicate: true,
                reply,
            } => assert_eq!(reply.status, ChatStatus::Success),
            other => panic!("{other:?}"),
        }
        // Followers learn the last commit from the heartbeat of the first interval without an
        // append: the second.
        cluster.run(2);
        let digests = cluster.digests();
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    }
}
