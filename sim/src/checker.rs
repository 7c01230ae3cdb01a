//! Safety checks that run on every event a node reports, so a violation is caught at the step
//! that causes it, with the time and node, not reconstructed at the end.
//!
//! - Election safety: at most one leader per term.
//! - Commit index never moves backwards within a node's life.
//! - State machine safety: every node applies the same command at each index, in order from its
//!   snapshot in each life, and reaches the same state (the chat digest) after it. Because a
//!   restarted node applies its log again from its snapshot, this also proves that nothing
//!   committed was lost across crashes and power loss: a node that lost a committed entry
//!   applies something else at that index, or stalls below it.
//! - Snapshots: a snapshot's state digest equals the digest every node had at its index; a
//!   node installs only a snapshot ahead of what it applied; compaction never drops an entry
//!   the state machine has not applied; and no node's log has a gap after its snapshot.
//! - Exactly once: no session command is applied (not answered from the session table) twice.
//! - Log matching: two nodes' logs holding an entry of the same index and term are identical up
//!   to it. Each node's persisted log is mirrored with a hash chained over every entry.
//! - Leader completeness: a new leader's log holds every entry applied anywhere before it was
//!   elected (checked at its first persisted batch, when its whole log is on disk).
//! - One vote per term: a node never grants its vote in a term to two candidates, even across
//!   restarts (Raft Figure 2: the vote is persistent state).
//! - The commitment rule (Raft §5.4.2): a leader advances its commit index only onto an entry
//!   of its own term; older entries are committed only indirectly.
//! - Committed entries stay durable: after every recovery (the one moment a power loss can
//!   take data away), every applied entry is still in the logs of a majority (or in the
//!   snapshots that cover it).
//!
//! And once the nemesis has healed everything, in the quiet window that follows (nothing is
//! faulted, message faults included), the liveness of elections: the cluster settles under one
//! leader within a bounded number of terms and a bounded time, both derived from the run's
//! timeouts ([`QuietBounds`]), and from then on keeps that leader and that term: a term change,
//! a campaign or a lost leadership with nothing faulted is a spurious election.

use raftchat::chat::{Command, Outcome};
use raftchat::raft::{Entry, EntryData, RoleKind, SnapshotMeta, Status};
use raftchat::replica::Applied;
use raftchat::storage::Install;
use raftchat::types::{ClientId, LogIndex, NodeId, Term};
use std::collections::BTreeMap;
use std::time::Duration;

/// A broken property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The check's name.
    pub check: &'static str,
    /// The node where it was seen.
    pub node: Option<NodeId>,
    /// What exactly.
    pub detail: String,
}

fn fail(check: &'static str, node: NodeId, detail: String) -> Result<(), Failure> {
    Err(Failure {
        check,
        node: Some(node),
        detail,
    })
}

/// What is known of one node in its current life.
#[derive(Clone, Debug, Default)]
struct Life {
    commit_index: LogIndex,
    applied_index: LogIndex,
    status: Option<Status>,
    stopped: Option<String>,
    /// Set when the node became leader: the term, and how far the log was applied anywhere
    /// before it won (see `Checker::applied_at_first_vote`); checked against its log at its
    /// next persisted batch.
    completeness_due: Option<(Term, LogIndex)>,
    /// The voter it is handing leadership to, while it leads and transfers.
    transfer_target: Option<NodeId>,
}

/// A node's log as it last persisted it: the snapshot it continues after, and per index after
/// it the entry's term and a hash chained over every entry up to it. Equal chains at an index
/// mean equal logs up to it.
#[derive(Clone, Debug, Default)]
struct LogMirror {
    /// The snapshot's index, term, and the chain hash of the log up to it.
    base: (LogIndex, Term, u64),
    /// The entries after `base`.
    entries: Vec<(Term, u64)>,
    /// Keeps terms only (every chain 0): for a log checked by its terms, not compared.
    terms_only: bool,
}

impl LogMirror {
    /// A log that continues after a snapshot whose log had `chain`.
    fn after(snapshot: SnapshotMeta, chain: u64) -> LogMirror {
        LogMirror {
            base: (snapshot.index, snapshot.term, chain),
            entries: Vec::new(),
            terms_only: false,
        }
    }

    /// A copy that keeps terms only from now on.
    fn terms_only(&self) -> LogMirror {
        LogMirror {
            terms_only: true,
            ..self.clone()
        }
    }

    /// Applies a persisted batch: each entry replaces its index and everything after. An entry
    /// that would leave a gap after the snapshot or the log, or land inside the snapshot, is
    /// refused with the reason.
    fn write(&mut self, entries: &[Entry]) -> Result<(), String> {
        for entry in entries {
            let Some(position) = entry.index.0.checked_sub(self.base.0 .0 + 1) else {
                return Err(format!(
                    "entry {} written inside the snapshot at {}",
                    entry.index, self.base.0
                ));
            };
            let position = position as usize;
            if position > self.entries.len() {
                return Err(format!(
                    "entry {} written after the log ends at {}: a gap",
                    entry.index,
                    self.last_index()
                ));
            }
            self.entries.truncate(position);
            let chain = match self.terms_only {
                true => 0,
                false => {
                    let previous = self.entries.last().map_or(self.base.2, |&(_, chain)| chain);
                    chain_hash(previous, entry)
                }
            };
            self.entries.push((entry.term, chain));
        }
        Ok(())
    }

    /// A batch: an install's record (with the chain of the log up to its snapshot), then
    /// entries. Refused with the check it breaks and why.
    fn record(
        &mut self,
        install: Option<(Install, u64)>,
        entries: &[Entry],
    ) -> Result<(), (&'static str, String)> {
        if let Some((install, chain)) = install {
            self.install(install, chain)?;
        }
        self.write(entries).map_err(|detail| ("log_gap", detail))
    }

    /// An install's record: the log starts again after the snapshot, keeping the entries up
    /// to `kept_through`, which Raft §7 allows only after an entry matching the snapshot's.
    /// Refused with the check it breaks and why.
    fn install(&mut self, install: Install, chain: u64) -> Result<(), (&'static str, String)> {
        let Install {
            snapshot,
            kept_through,
        } = install;
        let kept = kept_through.0.saturating_sub(snapshot.index.0) as usize;
        let mut entries = Vec::new();
        if kept > 0 {
            if self.term(snapshot.index) != Some(snapshot.term) {
                let detail = format!(
                    "kept entries up to {kept_through} after a snapshot at {} of {}, but its log \
                     has {:?} there",
                    snapshot.index,
                    snapshot.term,
                    self.term(snapshot.index)
                );
                return Err(("snapshot_install", detail));
            }
            if self.last_index() < kept_through {
                let detail = format!(
                    "an install keeps entries up to {kept_through}, but the log ends at {}",
                    self.last_index()
                );
                return Err(("log_gap", detail));
            }
            let start = (snapshot.index.0 - self.base.0 .0) as usize;
            entries = self.entries[start..start + kept].to_vec();
        }
        self.entries = entries;
        self.base = (snapshot.index, snapshot.term, chain);
        Ok(())
    }

    fn last_index(&self) -> LogIndex {
        LogIndex(self.base.0 .0 + self.entries.len() as u64)
    }

    fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.base.0 {
            return Some(self.base.1);
        }
        let position = index.0.checked_sub(self.base.0 .0 + 1)?;
        self.entries
            .get(usize::try_from(position).ok()?)
            .map(|&(term, _)| term)
    }

    fn chain(&self, index: LogIndex) -> Option<u64> {
        if index == self.base.0 {
            return Some(self.base.2);
        }
        let position = index.0.checked_sub(self.base.0 .0 + 1)?;
        self.entries
            .get(usize::try_from(position).ok()?)
            .map(|&(_, chain)| chain)
    }

    /// Whether this node durably holds the entry at `index` of `term`: in its log, or inside
    /// its snapshot (whose state the digest checks vouch for).
    fn holds(&self, index: LogIndex, term: Term) -> bool {
        index <= self.base.0 || self.term(index) == Some(term)
    }
}

/// The chain hash of `entry` after a log whose chain was `previous`: FxHash's step (rustc's
/// hasher) over the entry's kind, term, length and bytes, eight at a time. Not a cryptographic
/// hash, and it need not be: logs here differ by accident, not by design, and two that differ
/// in one word of one entry always hash differently, as each step is a bijection of the hash
/// so far and of the word. (FNV-1a, a byte at a time, was 1.5 % of a standard seed.)
fn chain_hash(previous: u64, entry: &Entry) -> u64 {
    let mix =
        |hash: u64, word: u64| (hash.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    let configuration;
    let (kind, payload): (u64, &[u8]) = match &entry.data {
        EntryData::Noop => (0, b""),
        EntryData::Command(payload) => (1, payload.as_bytes()),
        EntryData::Membership(membership) => {
            configuration = format!("{membership:?}");
            (2, configuration.as_bytes())
        }
    };
    let mut hash = mix(mix(mix(previous, kind), entry.term.0), payload.len() as u64);
    let mut words = payload.chunks_exact(8);
    for word in &mut words {
        hash = mix(
            hash,
            u64::from_le_bytes(word.try_into().expect("eight bytes")),
        );
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        hash = mix(hash, u64::from_le_bytes(word));
    }
    hash
}

/// One applied entry, as first seen.
#[derive(Debug)]
struct AppliedEntry {
    term: Term,
    command: Option<Command>,
}

/// A configuration's voters and learners.
type Members = (Vec<NodeId>, Vec<NodeId>);

/// The term a hostile peer claims (`scenario::Action::HostilePeer`): far past any a run
/// reaches, so a member that ever reports it let the hostile peer in.
pub const HOSTILE_TERM: u64 = 1 << 40;

/// The online checker.
#[derive(Default)]
pub struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    lives: BTreeMap<NodeId, Life>,
    applied: BTreeMap<LogIndex, AppliedEntry>,
    /// Where each session command first took effect (applied, not deduplicated).
    command_index: BTreeMap<(ClientId, u64), LogIndex>,
    /// Each node's persisted log.
    logs: BTreeMap<NodeId, LogMirror>,
    /// The chain hash first seen for each (index, term).
    chains: BTreeMap<(LogIndex, Term), u64>,
    /// The chat state's digest after each index, as first seen (applied, or in a snapshot).
    digests: BTreeMap<LogIndex, (u64, NodeId)>,
    /// Voters in the bootstrap configuration (nodes 1 to `voter_count`).
    voter_count: usize,
    /// Each node's configuration in force, as it last reported it, and the one before: the
    /// voters, whom a commit must reach and who may be elected.
    voters: BTreeMap<NodeId, (Vec<NodeId>, Vec<NodeId>)>,
    /// Each node's learners, as it last reported them.
    learners: BTreeMap<NodeId, Vec<NodeId>>,
    /// The voters of each configuration entry in each node's persisted log, by index (after
    /// its snapshot; what the snapshot held is not known here).
    log_configs: BTreeMap<NodeId, BTreeMap<LogIndex, Members>>,
    /// Each node's log as it holds it: the persisted log and the writes under way (a node
    /// writes its log as a pipeline, and acts on what it appended before it is synced).
    handed_logs: BTreeMap<NodeId, LogMirror>,
    /// The configuration entries of each node's log as it holds it, as `log_configs`.
    handed_configs: BTreeMap<NodeId, BTreeMap<LogIndex, Members>>,
    /// The voters of each configuration entry applied (so committed) anywhere, by index.
    committed_configs: BTreeMap<LogIndex, Vec<NodeId>>,
    /// The candidate each node voted for in each term, across its restarts.
    votes: BTreeMap<(NodeId, Term), NodeId>,
    /// For each (candidate, term), how far the log was applied anywhere when the first vote
    /// for it was granted. That moment comes before the candidate can win, and no leader of a
    /// later term can have committed anything yet (its quorum would share a voter with this
    /// one, who would have had to vote in the later term before this one). So everything
    /// applied by then was committed in an earlier term, and Leader Completeness (§5.4)
    /// requires it in the winner's log. Observing the winner later (a paused node reports its
    /// leadership late) would wrongly include entries committed after it won.
    applied_at_first_vote: BTreeMap<(NodeId, Term), LogIndex>,
    /// The highest term any node has reported.
    term_max: Term,
    /// The quiet window after the last heal, once open.
    quiet: Option<QuietWindow>,
}

/// What the recovery after the last heal may take, derived from the run's timing by the
/// caller, which also says how (the derivation goes into every failure message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuietBounds {
    /// Most terms the cluster may start between the heal and settling under one leader; none
    /// when the timing gives randomized elections no bound (timeouts spread narrower than a
    /// round trip split votes round after round, with no limit but luck).
    pub terms_max: Option<u64>,
    /// Longest the cluster may take from the heal until it settles under one leader; none
    /// when `terms_max` is none.
    pub settle_max: Option<Duration>,
    /// How long a settled cluster must stay put before a change counts as a spurious election
    /// rather than the tail of recovery (a resumed node's timers catch up at once).
    pub grace: Duration,
    /// How the bounds were computed from the timing, in words and numbers.
    pub derivation: String,
}

/// The quiet window: from the last heal to the end of the run.
#[derive(Clone, Debug)]
struct QuietWindow {
    bounds: QuietBounds,
    /// When the nemesis healed everything.
    opened_at: Duration,
    /// The highest term any node had reached by then.
    term_at_heal: Term,
    /// The settled state under observation: its term and leader, and since when it holds.
    settled: Option<(Term, NodeId, Duration)>,
}

/// How the quiet window went, for the run's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietOutcome {
    /// Time from the heal until the cluster settled under one leader for good.
    pub settled_after: Duration,
    /// Terms started between the heal and settling.
    pub terms_started: u64,
}

impl Checker {
    /// A checker for a cluster of `voter_count` nodes.
    pub fn new(voter_count: usize) -> Checker {
        Checker {
            voter_count,
            ..Checker::default()
        }
    }

    /// A node (re)started from its recovered snapshot and log: its volatile state begins again
    /// at the snapshot, its log mirror is what it read back, the snapshot's state is the one
    /// every node had at its index, and every committed entry must still be on a majority.
    pub fn node_started(
        &mut self,
        node: NodeId,
        snapshot: SnapshotMeta,
        digest: u64,
        entries: &[Entry],
    ) -> Result<(), Failure> {
        let life = Life {
            applied_index: snapshot.index,
            ..Life::default()
        };
        self.lives.insert(node, life);
        self.check_digest(node, snapshot.index, digest, "snapshot_digest")?;
        let configs = self.log_configs.entry(node).or_default();
        configs.clear();
        note_log_configs(configs, None, entries);
        self.handed_configs.insert(node, configs.clone());
        let mut mirror = LogMirror::after(snapshot, self.chain_at(snapshot));
        let written = mirror.write(entries);
        self.handed_logs.insert(node, mirror.terms_only());
        self.logs.insert(node, mirror);
        if let Err(detail) = written {
            return fail("log_gap", node, format!("recovered log: {detail}"));
        }
        self.check_log_matching(node, entries)?;
        self.check_committed_on_majority(node)
    }

    /// The chain hash of the log up to a snapshot's last entry, as first seen.
    fn chain_at(&self, snapshot: SnapshotMeta) -> u64 {
        if snapshot.index == LogIndex(0) {
            return 0;
        }
        let key = (snapshot.index, snapshot.term);
        // Every snapshot is of a prefix some node persisted; without one on record the chain
        // starts afresh, and log matching is checked from the snapshot on.
        self.chains
            .get(&key)
            .copied()
            .unwrap_or_else(|| crate::trace::fnv1a(format!("{key:?}").as_bytes()))
    }

    /// The state after `index` must be the one every node had there.
    fn check_digest(
        &mut self,
        node: NodeId,
        index: LogIndex,
        digest: u64,
        check: &'static str,
    ) -> Result<(), Failure> {
        let (first, seen_on) = *self.digests.entry(index).or_insert((digest, node));
        if first != digest {
            let detail =
                format!("state digest at {index} is {digest:016x}, but {seen_on} had {first:016x}");
            return fail(check, node, detail);
        }
        Ok(())
    }

    /// A node persisted a batch: an installed snapshot's record (the log starts again after
    /// it), then entries.
    pub fn persisted(
        &mut self,
        node: NodeId,
        installed: Option<Install>,
        entries: &[Entry],
    ) -> Result<(), Failure> {
        let install = installed.map(|install| (install, self.chain_at(install.snapshot)));
        let mirror = self.logs.entry(node).or_default();
        let configs = self.log_configs.entry(node).or_default();
        if let Err((check, detail)) = record_batch(mirror, configs, install, entries) {
            return fail(check, node, detail);
        }
        self.check_log_matching(node, entries)?;
        let due = self
            .lives
            .get_mut(&node)
            .and_then(|life| life.completeness_due.take());
        match due {
            Some((term, applied)) => self.check_leader_completeness(node, term, applied),
            None => Ok(()),
        }
    }

    /// A node handed a round's log writes to its disk: its log holds them from now on.
    pub fn handed(
        &mut self,
        node: NodeId,
        installed: Option<Install>,
        entries: &[Entry],
    ) -> Result<(), Failure> {
        let install = installed.map(|install| (install, self.chain_at(install.snapshot)));
        let mirror = self
            .handed_logs
            .entry(node)
            .or_insert_with(|| LogMirror::default().terms_only());
        let configs = self.handed_configs.entry(node).or_default();
        if let Err((check, detail)) = record_batch(mirror, configs, install, entries) {
            return fail(check, node, format!("handed to the disk: {detail}"));
        }
        self.check_change_rule(node, entries)
    }

    /// Thesis §4.1 with Ongaro's correction (raft-dev, 2015), checked when a leader appends a
    /// configuration entry of its own term (hands it to its disk): it may append one only once an entry of its term
    /// has committed, and only while no earlier configuration is uncommitted. Otherwise its
    /// change can be decided against a configuration another leader has already replaced, and
    /// two disjoint majorities each commit a different entry at one index. Committed means here
    /// on the disks of a majority of the configuration before the change (the one the leader
    /// counted with); what a majority held once, it still holds.
    fn check_change_rule(&self, node: NodeId, entries: &[Entry]) -> Result<(), Failure> {
        for entry in entries {
            if !matches!(entry.data, raftchat::raft::EntryData::Membership(_))
                || self.leaders.get(&entry.term) != Some(&node)
            {
                continue;
            }
            let mirror = &self.handed_logs[&node];
            let previous = self
                .handed_configs
                .get(&node)
                .and_then(|configs| configs.range(..entry.index).next_back());
            // Without an earlier entry in the log, the configuration came with the snapshot
            // (committed) or is the bootstrap; the node reports its new one only after this.
            let voters = previous.map_or_else(|| self.voters_of(node), |(_, c)| c.0.clone());
            if let Some((&index, config)) = previous {
                let term = mirror.term(index).unwrap_or_default();
                let own = &config.0;
                let holders = self.holders(own, index, term).len();
                if holders <= own.len() / 2 {
                    let detail = format!(
                        "appended a configuration at {} in {} while the one at {index} was \
                         uncommitted (on {holders} of its voters {own:?})",
                        entry.index, entry.term
                    );
                    return fail("one_change_at_a_time", node, detail);
                }
            }
            let mut first = entry.index;
            while first.0 > mirror.base.0 .0 + 1 && mirror.term(first.prev()) == Some(entry.term) {
                first = first.prev();
            }
            let compacted = first.0 == mirror.base.0 .0 + 1 && mirror.base.1 == entry.term;
            // A leader's term begins with its no-op, so a change that is its term's first
            // entry broke the rule too.
            let majority_holds =
                || self.holders(&voters, first, entry.term).len() > voters.len() / 2;
            if !compacted && (first == entry.index || !majority_holds()) {
                let detail = format!(
                    "appended a configuration at {} before an entry of its term {} committed: \
                     the first, at {first}, is on a minority of voters {voters:?}",
                    entry.index, entry.term
                );
                return fail("change_after_term_commit", node, detail);
            }
        }
        Ok(())
    }

    /// Thesis §4.1: the configuration in force is the newest in the log. Checked when the node
    /// reports its status (after the round's configuration): its reported voters must be those
    /// of the newest configuration entry in its log (with the writes under way), when that log
    /// holds one.
    fn check_config_in_force(&self, node: NodeId) -> Result<(), Failure> {
        let Some((index, newest)) = self
            .handed_configs
            .get(&node)
            .and_then(|configs| configs.last_key_value())
        else {
            return Ok(());
        };
        let Some((voters, _)) = self.voters.get(&node) else {
            return Ok(());
        };
        let learners = self.learners.get(&node).cloned().unwrap_or_default();
        if (voters, &learners) != (&newest.0, &newest.1) {
            let detail = format!(
                "uses voters {voters:?} and learners {learners:?}, but the newest configuration \
                 in its log (at {index}) has voters {:?} and learners {:?}",
                newest.0, newest.1
            );
            return fail("config_in_force", node, detail);
        }
        Ok(())
    }

    fn check_log_matching(&mut self, node: NodeId, entries: &[Entry]) -> Result<(), Failure> {
        let mirror = &self.logs[&node];
        for entry in entries {
            let (Some(term), Some(chain)) = (mirror.term(entry.index), mirror.chain(entry.index))
            else {
                continue;
            };
            let first = *self.chains.entry((entry.index, term)).or_insert(chain);
            if first != chain {
                let detail = format!(
                    "entry {} of {term} differs from another node's, or follows a different log",
                    entry.index
                );
                return fail("log_matching", node, detail);
            }
        }
        Ok(())
    }

    /// Every entry applied anywhere before `node` was elected for `term` is in its log.
    fn check_leader_completeness(
        &self,
        node: NodeId,
        term: Term,
        applied: LogIndex,
    ) -> Result<(), Failure> {
        let mirror = &self.logs[&node];
        for (&index, entry) in self.applied.range(..=applied) {
            if !mirror.holds(index, entry.term) {
                let detail = format!(
                    "leader of {term} lacks committed entry {index} of {} (has {:?})",
                    entry.term,
                    mirror.term(index)
                );
                return fail("leader_completeness", node, detail);
            }
        }
        Ok(())
    }

    /// Every applied (hence committed) entry is in the persisted logs of a majority: of the
    /// newest committed configuration's voters, for the entries up to it (its own commit put
    /// them there); for the entries after it, of that configuration or of the one change it
    /// may have pending, so on at least half its voters when a change is pending.
    fn check_committed_on_majority(&self, node: NodeId) -> Result<(), Failure> {
        if self.voter_count == 0 {
            return Ok(());
        }
        let (config_index, voters) = self.committed_configs.last_key_value().map_or_else(
            || (LogIndex(0), self.bootstrap_voters()),
            |(&i, v)| (i, v.clone()),
        );
        let pending = self
            .log_configs
            .values()
            .any(|configs| configs.range(config_index.next()..).next().is_some());
        for (&index, entry) in &self.applied {
            let holders = self.holders(&voters, index, entry.term).len();
            let needed = if index > config_index && pending {
                voters.len().div_ceil(2)
            } else {
                voters.len() / 2 + 1
            };
            if holders < needed {
                let detail = format!(
                    "after {node} recovered, committed entry {index} of {} is on {holders} of \
                     the voters {voters:?} (of the configuration committed at {config_index}), \
                     fewer than the {needed} it needs",
                    entry.term
                );
                return fail("committed_entry_lost", node, detail);
            }
        }
        Ok(())
    }

    /// The voters and learners of the current leader's configuration (the bootstrap voters
    /// when no leader is known).
    pub fn leader_membership(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let leader = self.current_leader();
        let learners = leader
            .and_then(|l| self.learners.get(&l).cloned())
            .unwrap_or_default();
        let voters = leader.map_or_else(|| self.bootstrap_voters(), |l| self.voters_of(l));
        (voters, learners)
    }

    /// A node's configuration in force changed (or it started with one).
    pub fn membership(&mut self, node: NodeId, membership: &raftchat::raft::Membership) {
        self.learners.insert(node, membership.learners().collect());
        let voters = membership.voter_ids();
        let bootstrap = self.bootstrap_voters();
        let entry = self
            .voters
            .entry(node)
            .or_insert_with(|| (bootstrap.clone(), bootstrap));
        if entry.0 != voters {
            entry.1 = std::mem::replace(&mut entry.0, voters);
        }
    }

    fn bootstrap_voters(&self) -> Vec<NodeId> {
        (1..=self.voter_count as u64).map(NodeId).collect()
    }

    /// The voters of `node`'s configuration in force, as it last reported it.
    fn voters_of(&self, node: NodeId) -> Vec<NodeId> {
        self.voters
            .get(&node)
            .map_or_else(|| self.bootstrap_voters(), |(voters, _)| voters.clone())
    }

    /// A leader committed through `index` (of `term`): the entry must be in the persisted
    /// logs of enough voters of its configuration that every majority of them holds it (a
    /// learner's copy counts for nothing). Checked with the configuration the leader last
    /// reported, which may lag the one it counted with by a single-server step: the condition
    /// holds across such a step, so it never fails a correct commit.
    fn check_commit_quorum(
        &self,
        node: NodeId,
        index: LogIndex,
        term: Term,
    ) -> Result<(), Failure> {
        let voters = self.voters_of(node);
        let holders = self.holders(&voters, index, term);
        let needed = voters.len() - (voters.len() / 2 + 1) + 1;
        if holders.len() < needed {
            let detail = format!(
                "committed {index} of {term} while only {holders:?} of its voters {voters:?} \
                 had it on disk: a majority of them lacks it"
            );
            return fail("commit_quorum", node, detail);
        }
        Ok(())
    }

    /// Those of `voters` whose persisted log (or snapshot) holds the entry at `index` of `term`.
    fn holders(&self, voters: &[NodeId], index: LogIndex, term: Term) -> Vec<NodeId> {
        let holds = |v: &&NodeId| self.logs.get(v).is_some_and(|log| log.holds(index, term));
        voters.iter().filter(holds).copied().collect()
    }

    /// A node stopped on a fatal error (e.g. it refused a corrupt log).
    pub fn node_stopped(&mut self, node: NodeId, reason: &str) {
        self.lives.entry(node).or_default().stopped = Some(reason.to_string());
    }

    /// A node was killed by the nemesis.
    pub fn node_killed(&mut self, node: NodeId) {
        self.lives.remove(&node);
    }

    /// The highest index applied anywhere so far.
    fn applied_through(&self) -> LogIndex {
        self.applied.keys().next_back().copied().unwrap_or_default()
    }

    /// A node granted its vote in `term` to `candidate`.
    pub fn vote_granted(
        &mut self,
        node: NodeId,
        term: Term,
        candidate: NodeId,
    ) -> Result<(), Failure> {
        let applied = self.applied_through();
        self.applied_at_first_vote
            .entry((candidate, term))
            .or_insert(applied);
        let first = *self.votes.entry((node, term)).or_insert(candidate);
        if first != candidate {
            let detail = format!("voted for {first} and then for {candidate} in {term}");
            return fail("one_vote_per_term", node, detail);
        }
        Ok(())
    }

    /// A node reported a status change.
    pub fn status(&mut self, node: NodeId, status: Status) -> Result<(), Failure> {
        // A leader may count followers' acknowledgements of an entry its own write still holds.
        let mirror_term = self
            .handed_logs
            .get(&node)
            .and_then(|log| log.term(status.commit_index));
        if status.term.0 >= HOSTILE_TERM {
            let detail = format!("reached {}: a hostile peer's message got in", status.term);
            return fail("hostile_refused", node, detail);
        }
        self.term_max = self.term_max.max(status.term);
        let life = self.lives.entry(node).or_default();
        let advanced = status.commit_index > life.commit_index;
        if status.role == RoleKind::Leader && advanced && mirror_term != Some(status.term) {
            let detail = format!(
                "leader of {} advanced its commit index to {}, an entry of {:?}",
                status.term, status.commit_index, mirror_term
            );
            return fail("commitment_rule", node, detail);
        }
        if status.role == RoleKind::Leader && advanced {
            self.check_commit_quorum(node, status.commit_index, status.term)?;
        }
        self.check_config_in_force(node)?;
        let life = self.lives.entry(node).or_default();
        if status.commit_index < life.commit_index {
            let detail = format!(
                "commit index went from {} to {}",
                life.commit_index, status.commit_index
            );
            return fail("commit_monotonic", node, detail);
        }
        life.commit_index = status.commit_index;
        let was_leading = life
            .status
            .is_some_and(|s| s.role == RoleKind::Leader && s.term == status.term);
        life.status = Some(status);
        if status.role == RoleKind::Leader && !was_leading {
            // Without a vote from another node (a one-node cluster), the moment it is seen.
            let applied_before_winning = self
                .applied_at_first_vote
                .get(&(node, status.term))
                .copied()
                .unwrap_or_else(|| self.applied_through());
            let life = self.lives.entry(node).or_default();
            life.completeness_due = Some((status.term, applied_before_winning));
            // Only a voter is elected: of its configuration in force, or of the one before
            // when an uncommitted change removed it (a removed leader finishing its change).
            let (latest, previous) = self
                .voters
                .get(&node)
                .cloned()
                .unwrap_or_else(|| (self.bootstrap_voters(), self.bootstrap_voters()));
            let known = !latest.is_empty() || !previous.is_empty();
            if known && !latest.contains(&node) && !previous.contains(&node) {
                let detail = format!(
                    "leads {} without being a voter (voters {latest:?}, before {previous:?})",
                    status.term
                );
                return fail("leader_not_voter", node, detail);
            }
        }
        if status.role == RoleKind::Leader {
            let first = *self.leaders.entry(status.term).or_insert(node);
            if first != node {
                let detail = format!("{first} and {node} both lead {}", status.term);
                return fail("election_safety", node, detail);
            }
        }
        Ok(())
    }

    /// A node made a snapshot of its state durable and compacted its log through
    /// `compacted_through`, with its state machine at `applied_index`.
    pub fn snapshot_taken(
        &mut self,
        node: NodeId,
        snapshot: SnapshotMeta,
        digest: u64,
        compacted_through: LogIndex,
        applied_index: LogIndex,
    ) -> Result<(), Failure> {
        if compacted_through > applied_index {
            let detail = format!(
                "log compacted through {compacted_through}, past the applied index \
                 {applied_index}"
            );
            return fail("compaction", node, detail);
        }
        self.check_digest(node, snapshot.index, digest, "snapshot_digest")
    }

    /// A node installed a leader's snapshot: it must be ahead of what the node applied, and
    /// hold the state every node had at its index; the node applies from there on.
    pub fn snapshot_installed(
        &mut self,
        node: NodeId,
        snapshot: SnapshotMeta,
        digest: u64,
    ) -> Result<(), Failure> {
        let life = self.lives.entry(node).or_default();
        if snapshot.index <= life.applied_index {
            let detail = format!(
                "installed a snapshot at {}, not ahead of its applied index {}",
                snapshot.index, life.applied_index
            );
            return fail("snapshot_install", node, detail);
        }
        life.applied_index = snapshot.index;
        self.check_digest(node, snapshot.index, digest, "snapshot_digest")
    }

    /// A node applied a committed entry.
    pub fn applied(&mut self, node: NodeId, applied: &Applied) -> Result<(), Failure> {
        // (A node the checker never saw start, as in its own tests, has no log to check.)
        let persisted = self
            .logs
            .get(&node)
            .is_none_or(|log| log.holds(applied.index, applied.term));
        if !persisted {
            let detail = format!(
                "applied {} of {} before its disk held it",
                applied.index, applied.term
            );
            return fail("apply_persisted", node, detail);
        }
        let life = self.lives.entry(node).or_default();
        if applied.index != life.applied_index.next() {
            let detail = format!("applied {} after {}", applied.index, life.applied_index);
            return fail("state_machine_safety", node, detail);
        }
        life.applied_index = applied.index;
        // The first node to apply an index records its entry; the others are compared with it
        // (a clone only for the first: this runs for every entry on every node).
        let first = self
            .applied
            .entry(applied.index)
            .or_insert_with(|| AppliedEntry {
                term: applied.term,
                command: applied.command.clone(),
            });
        if first.term != applied.term || first.command != applied.command {
            let detail = format!(
                "at {} applied {:?} of {}, but another node applied {:?} of {}",
                applied.index, applied.command, applied.term, first.command, first.term
            );
            return fail("state_machine_safety", node, detail);
        }
        self.check_digest(node, applied.index, applied.digest, "state_machine_safety")?;
        let config = self
            .log_configs
            .get(&node)
            .and_then(|configs| configs.get(&applied.index));
        if let Some((voters, _)) = config {
            let voters = voters.clone();
            self.committed_configs
                .entry(applied.index)
                .or_insert(voters);
        }
        self.check_exactly_once(node, applied)
    }

    fn check_exactly_once(&mut self, node: NodeId, applied: &Applied) -> Result<(), Failure> {
        let Some((client_id, sequence, _)) =
            applied.command.as_ref().and_then(Command::session_command)
        else {
            return Ok(());
        };
        let Some(Outcome::Replied {
            duplicate: false, ..
        }) = &applied.outcome
        else {
            return Ok(());
        };
        let first = *self
            .command_index
            .entry((client_id, sequence))
            .or_insert(applied.index);
        if first != applied.index {
            let detail = format!(
                "command ({client_id}, {sequence}) applied at {first} and again at {}",
                applied.index
            );
            return fail("exactly_once", node, detail);
        }
        Ok(())
    }

    /// Where a session command took effect, if it did.
    pub fn command_index(&self, client_id: ClientId, sequence: u64) -> Option<LogIndex> {
        self.command_index.get(&(client_id, sequence)).copied()
    }

    /// A leader began (`Some`) or ended (`None`) a leadership transfer.
    pub fn transfer(&mut self, node: NodeId, target: Option<NodeId>) {
        self.lives.entry(node).or_default().transfer_target = target;
    }

    /// The voter the current leader is handing leadership to, if it is.
    pub fn transfer_target(&self) -> Option<NodeId> {
        let leader = self.current_leader()?;
        self.lives.get(&leader)?.transfer_target
    }

    /// Thesis §3.10: a leader tells its transfer's target to campaign (TimeoutNow) only once
    /// the target's log holds every entry of its own. A target that lacks some cannot win (the
    /// voters holding them refuse it), and its higher term deposes the leader: the transfer
    /// costs the election timeout it exists to save. The leader persists its entries before
    /// it sends anything, and the target persists before it acknowledges, so both logs as
    /// last persisted are the ones the leader's decision saw.
    pub fn timeout_now(&self, leader: NodeId, target: NodeId, term: Term) -> Result<(), Failure> {
        let Some(log) = self.logs.get(&leader) else {
            return Ok(());
        };
        let last = log.last_index();
        let last_term = log.term(last).unwrap_or_default();
        let target_log = self.logs.get(&target);
        if target_log.is_some_and(|t| t.holds(last, last_term)) {
            return Ok(());
        }
        let target_last = target_log.map(|t| (t.last_index(), t.term(t.last_index())));
        let detail = format!(
            "told {target} to campaign in {term} (TimeoutNow) while its log (last entry \
             {target_last:?}) lacks the leader's last entry, {last} of {last_term}"
        );
        fail("transfer_caught_up", leader, detail)
    }

    /// The node leading the highest term among live nodes, if any.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.lives
            .iter()
            .filter_map(|(&node, life)| life.status.map(|s| (node, s)))
            .filter(|(_, s)| s.role == RoleKind::Leader)
            .max_by_key(|(_, s)| s.term)
            .map(|(node, _)| node)
    }

    /// Nodes that stopped on a fatal error, with the reason.
    pub fn stopped_nodes(&self) -> BTreeMap<NodeId, String> {
        self.lives
            .iter()
            .filter_map(|(&n, l)| l.stopped.clone().map(|r| (n, r)))
            .collect()
    }

    /// Highest index applied anywhere.
    pub fn applied_count(&self) -> usize {
        self.applied.len()
    }

    /// Number of distinct terms that had a leader.
    pub fn leader_terms(&self) -> usize {
        self.leaders.len()
    }

    /// Nothing is faulted from `now` on: starts checking recovery against `bounds`, then that
    /// the cluster stays settled.
    pub fn open_quiet_window(&mut self, bounds: QuietBounds, now: Duration) {
        assert!(self.quiet.is_none(), "the quiet window opens once per run");
        self.quiet = Some(QuietWindow {
            bounds,
            opened_at: now,
            term_at_heal: self.term_max,
            settled: None,
        });
    }

    /// The term and leader every member agrees on, if they all do: one node leads the term,
    /// and every other member of its configuration (voters and learners) follows it. A member
    /// killed and not yet restarted (no life), or restarted but not yet reporting, has not
    /// settled; a node outside the configuration (removed, or never added) does not count.
    fn settled_under(&self) -> Option<(Term, NodeId)> {
        let status = |node: NodeId| match self.lives.get(&node) {
            Some(life) if life.stopped.is_some() => None,
            Some(life) => life.status,
            None => None,
        };
        let mut nodes: Vec<NodeId> = self.bootstrap_voters();
        nodes.extend(self.voters.keys().copied());
        nodes.sort();
        nodes.dedup();
        let mut leaders = nodes.iter().filter_map(|&node| {
            status(node)
                .filter(|s| s.role == RoleKind::Leader)
                .map(|s| (node, s))
        });
        let (leader, leader_status) = leaders.next()?;
        if leaders.next().is_some() {
            return None;
        }
        let term = leader_status.term;
        let mut members = self.voters_of(leader);
        members.extend(self.learners.get(&leader).cloned().unwrap_or_default());
        let stopped = |node: &NodeId| self.lives.get(node).is_some_and(|l| l.stopped.is_some());
        let following = |node: NodeId| {
            status(node).is_some_and(|s| {
                s.term == term && s.role == RoleKind::Follower && s.leader == Some(leader)
            })
        };
        members
            .into_iter()
            .filter(|node| !stopped(node))
            .all(|node| node == leader || following(node))
            .then_some((term, leader))
    }

    /// After a status report from `node` at `now`: within the quiet window, recovery stays
    /// within its bounds, and a settled cluster stays settled.
    /// (`now` is asked only with the window open: a status changes at every entry applied.)
    pub fn check_quiet(
        &mut self,
        node: NodeId,
        now: impl FnOnce() -> Duration,
    ) -> Result<(), Failure> {
        let Some(window) = self.quiet.as_ref() else {
            return Ok(());
        };
        let now = now();
        let current = self.settled_under();
        if let Some((term, leader, since)) = window.settled {
            if current == Some((term, leader)) {
                return Ok(());
            }
            if now - since >= window.bounds.grace {
                return Err(self.spurious_election(node, term, leader, since, now));
            }
        }
        let window = self.quiet.as_ref().expect("checked above");
        let terms_started = self.term_max.0.saturating_sub(window.term_at_heal.0);
        if let Some(terms_max) = window.bounds.terms_max.filter(|&max| terms_started > max) {
            let detail = format!(
                "{terms_started} terms started since everything healed at {:?} (from {} to {}) \
                 without settling under one leader; the bound is {terms_max} ({})",
                window.opened_at, window.term_at_heal, self.term_max, window.bounds.derivation
            );
            return fail("recovery_elections", node, detail);
        }
        let settled = current.map(|(term, leader)| (term, leader, now));
        self.quiet.as_mut().expect("checked above").settled = settled;
        Ok(())
    }

    fn spurious_election(
        &self,
        node: NodeId,
        term: Term,
        leader: NodeId,
        since: Duration,
        now: Duration,
    ) -> Failure {
        let window = self
            .quiet
            .as_ref()
            .expect("a spurious election needs a quiet window");
        let status = self.lives.get(&node).and_then(|life| life.status);
        let what = status.map_or("restarted".to_string(), |s| {
            format!("is now {} in {}", s.role.name(), s.term)
        });
        let detail = format!(
            "spurious election: every node followed {leader} in {term} from {since:?} (settled \
             {:?} after everything healed at {:?}), and nothing was faulted, but {node} {what}, \
             {:?} later ({})",
            since - window.opened_at,
            window.opened_at,
            now - since,
            window.bounds.derivation
        );
        Failure {
            check: "stable_term",
            node: Some(node),
            detail,
        }
    }

    /// The end of the run: the cluster must have settled, within the time bound.
    pub fn close_quiet_window(&mut self, now: Duration) -> Result<Option<QuietOutcome>, Failure> {
        let Some(window) = self.quiet.take() else {
            return Ok(None);
        };
        let terms_started = self.term_max.0.saturating_sub(window.term_at_heal.0);
        let settled_after = window.settled.map(|(_, _, since)| since - window.opened_at);
        let Some(bound) = window.bounds.settle_max else {
            return Ok(settled_after.map(|settled_after| QuietOutcome {
                settled_after,
                terms_started,
            }));
        };
        if settled_after.is_none_or(|after| after > bound) {
            let observed = settled_after.map_or_else(
                || format!("had not settled by {:?}", now - window.opened_at),
                |after| format!("settled only after {after:?}"),
            );
            let detail = format!(
                "after everything healed at {:?}, the cluster {observed} under one leader \
                 (every running node following it in its term; {terms_started} terms started); \
                 the bound is {bound:?} ({})",
                window.opened_at, window.bounds.derivation
            );
            return Err(Failure {
                check: "recovery_time",
                node: None,
                detail,
            });
        }
        Ok(settled_after.map(|settled_after| QuietOutcome {
            settled_after,
            terms_started,
        }))
    }
}

/// Records a batch (an installed snapshot's record, then entries) in a mirror of a node's log
/// and in the configurations that log holds (`configs`): an installed snapshot keeps only those
/// its record keeps, and each entry replaces any at its index or later.
fn record_batch(
    mirror: &mut LogMirror,
    configs: &mut BTreeMap<LogIndex, Members>,
    install: Option<(Install, u64)>,
    entries: &[Entry],
) -> Result<(), (&'static str, String)> {
    note_log_configs(configs, install.map(|(install, _)| install), entries);
    mirror.record(install, entries)
}

/// The configurations' part of [`record_batch`].
fn note_log_configs(
    configs: &mut BTreeMap<LogIndex, Members>,
    installed: Option<Install>,
    entries: &[Entry],
) {
    if let Some(install) = installed {
        let (base, kept) = (install.snapshot.index, install.kept_through);
        configs.retain(|&index, _| base < index && index <= kept);
    }
    let Some(first) = entries.first() else {
        return;
    };
    configs.retain(|&index, _| index < first.index);
    for entry in entries {
        if let raftchat::raft::EntryData::Membership(membership) = &entry.data {
            let learners = membership.learners().collect();
            configs.insert(entry.index, (membership.voter_ids(), learners));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftchat::chat::Operation;

    fn status(role: RoleKind, term: u64, commit: u64) -> Status {
        Status {
            id: NodeId(1),
            role,
            term: Term(term),
            leader: None,
            commit_index: LogIndex(commit),
            applied_index: LogIndex(0),
            last_index: LogIndex(commit),
            snapshot_index: LogIndex(0),
            first_index: LogIndex(1),
        }
    }

    fn applied(index: u64, term: u64, sequence: u64) -> Applied {
        let operation = Operation::CheckAccount {
            username: "u".into(),
        };
        let command = Command::Client {
            client_id: ClientId(1),
            sequence,
            operation,
        };
        let reply = raftchat::chat::Reply::new(raftchat::chat::Status::Success);
        Applied {
            index: LogIndex(index),
            term: Term(term),
            command: Some(command),
            outcome: Some(Outcome::Replied {
                reply,
                duplicate: false,
            }),
            digest: index ^ (term << 8) ^ (sequence << 16),
        }
    }

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut checker = Checker::default();
        assert!(checker
            .status(NodeId(1), status(RoleKind::Leader, 2, 0))
            .is_ok());
        let failure = checker
            .status(NodeId(2), status(RoleKind::Leader, 2, 0))
            .unwrap_err();
        assert_eq!(failure.check, "election_safety");
    }

    #[test]
    fn a_commit_index_moving_backwards_is_caught() {
        let mut checker = Checker::default();
        assert!(checker
            .status(NodeId(1), status(RoleKind::Follower, 1, 5))
            .is_ok());
        let failure = checker
            .status(NodeId(1), status(RoleKind::Follower, 1, 4))
            .unwrap_err();
        assert_eq!(failure.check, "commit_monotonic");
    }

    #[test]
    fn a_restart_resets_the_commit_index_floor() {
        let mut checker = Checker::default();
        assert!(checker
            .status(NodeId(1), status(RoleKind::Follower, 1, 5))
            .is_ok());
        checker
            .node_started(NodeId(1), SnapshotMeta::default(), 0, &[])
            .unwrap();
        assert!(checker
            .status(NodeId(1), status(RoleKind::Follower, 1, 0))
            .is_ok());
    }

    #[test]
    fn different_commands_at_one_index_are_caught() {
        let mut checker = Checker::default();
        assert!(checker.applied(NodeId(1), &applied(1, 1, 1)).is_ok());
        let failure = checker.applied(NodeId(2), &applied(1, 2, 1)).unwrap_err();
        assert_eq!(failure.check, "state_machine_safety");
    }

    #[test]
    fn an_entry_applied_before_its_disk_holds_it_is_caught() {
        let mut checker = Checker::default();
        checker
            .node_started(NodeId(1), SnapshotMeta::default(), 0, &[])
            .unwrap();
        let failure = checker.applied(NodeId(1), &applied(1, 1, 1)).unwrap_err();
        assert_eq!(failure.check, "apply_persisted");
    }

    #[test]
    fn a_gap_in_application_is_caught() {
        let mut checker = Checker::default();
        let failure = checker.applied(NodeId(1), &applied(2, 1, 1)).unwrap_err();
        assert_eq!(failure.check, "state_machine_safety");
    }

    #[test]
    fn a_command_applied_twice_is_caught() {
        let mut checker = Checker::default();
        assert!(checker.applied(NodeId(1), &applied(1, 1, 7)).is_ok());
        let failure = checker.applied(NodeId(1), &applied(2, 1, 7)).unwrap_err();
        assert_eq!(failure.check, "exactly_once");
    }

    fn noop(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            data: raftchat::raft::EntryData::Noop,
        }
    }

    /// A leader is held to what was applied before it could have won, not to what was applied
    /// by the time it was seen: a node paused right after winning t1 reports its leadership
    /// after t2 has committed entries it never had, which is no violation.
    #[test]
    fn a_leader_seen_late_is_held_to_what_was_applied_before_its_first_vote() {
        let mut checker = Checker::new(3);
        checker.vote_granted(NodeId(2), Term(1), NodeId(1)).unwrap();
        checker.applied(NodeId(2), &applied(1, 2, 1)).unwrap();
        checker
            .status(NodeId(1), status(RoleKind::Leader, 1, 0))
            .unwrap();
        assert!(checker.persisted(NodeId(1), None, &[noop(1, 1)]).is_ok());
    }

    #[test]
    fn a_leader_lacking_an_entry_applied_before_its_first_vote_is_caught() {
        let mut checker = Checker::new(3);
        checker.applied(NodeId(2), &applied(1, 1, 1)).unwrap();
        checker.vote_granted(NodeId(3), Term(2), NodeId(1)).unwrap();
        checker
            .status(NodeId(1), status(RoleKind::Leader, 2, 0))
            .unwrap();
        let failure = checker
            .persisted(NodeId(1), None, &[noop(1, 2)])
            .unwrap_err();
        assert_eq!(failure.check, "leader_completeness");
    }

    fn snapshot(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta {
            index: LogIndex(index),
            term: Term(term),
            ..SnapshotMeta::default()
        }
    }

    #[test]
    fn a_snapshot_whose_state_differs_from_the_applied_one_is_caught() {
        let mut checker = Checker::new(3);
        checker.applied(NodeId(1), &applied(1, 1, 1)).unwrap();
        let digest = applied(1, 1, 1).digest;
        let ok =
            checker.snapshot_taken(NodeId(2), snapshot(1, 1), digest, LogIndex(1), LogIndex(1));
        assert!(ok.is_ok());
        let failure = checker
            .snapshot_taken(
                NodeId(2),
                snapshot(1, 1),
                digest ^ 1,
                LogIndex(0),
                LogIndex(1),
            )
            .unwrap_err();
        assert_eq!(failure.check, "snapshot_digest");
    }

    #[test]
    fn compaction_past_the_applied_index_is_caught() {
        let mut checker = Checker::new(3);
        let failure = checker
            .snapshot_taken(NodeId(1), snapshot(5, 1), 0, LogIndex(5), LogIndex(4))
            .unwrap_err();
        assert_eq!(failure.check, "compaction");
    }

    #[test]
    fn installing_a_snapshot_not_ahead_of_the_applied_index_is_caught() {
        let mut checker = Checker::new(3);
        checker.applied(NodeId(1), &applied(1, 1, 1)).unwrap();
        checker.applied(NodeId(1), &applied(2, 1, 2)).unwrap();
        let digest = applied(1, 1, 1).digest;
        let failure = checker
            .snapshot_installed(NodeId(1), snapshot(1, 1), digest)
            .unwrap_err();
        assert_eq!(failure.check, "snapshot_install");
    }

    fn install(index: u64, term: u64, kept_through: u64) -> Install {
        Install {
            snapshot: snapshot(index, term),
            kept_through: LogIndex(kept_through),
        }
    }

    #[test]
    fn an_install_keeps_only_a_matching_suffix_it_holds_and_the_log_goes_on_after_it() {
        let mut checker = Checker::new(3);
        let log = [noop(1, 1), noop(2, 1), noop(3, 1)];
        for node in 1..=4 {
            checker.persisted(NodeId(node), None, &log).unwrap();
        }
        // Matching at 2: the entry at 3 is kept, and the log goes on at 4.
        checker
            .persisted(NodeId(1), Some(install(2, 1, 3)), &[noop(4, 1)])
            .unwrap();
        // Keeping entries after a snapshot whose entry the log does not hold (Raft §7).
        let failure = checker
            .persisted(NodeId(2), Some(install(2, 2, 3)), &[])
            .unwrap_err();
        assert_eq!(failure.check, "snapshot_install");
        // Keeping entries the log never had.
        let failure = checker
            .persisted(NodeId(3), Some(install(2, 1, 5)), &[])
            .unwrap_err();
        assert_eq!(failure.check, "log_gap");
        // Conflicting at 5: the log is dropped, so 7 after 5 is a gap.
        let failure = checker
            .persisted(NodeId(4), Some(install(5, 2, 5)), &[noop(7, 2)])
            .unwrap_err();
        assert_eq!(failure.check, "log_gap");
    }

    #[test]
    fn a_node_restarted_from_a_snapshot_applies_from_it() {
        let mut checker = Checker::new(3);
        checker
            .node_started(NodeId(1), snapshot(4, 1), 7, &[noop(5, 1)])
            .unwrap();
        checker.applied(NodeId(1), &applied(5, 1, 1)).unwrap();
        let failure = checker
            .node_started(NodeId(2), snapshot(4, 1), 8, &[])
            .unwrap_err();
        assert_eq!(failure.check, "snapshot_digest");
        let gap = checker
            .node_started(NodeId(3), snapshot(4, 1), 7, &[noop(6, 1)])
            .unwrap_err();
        assert_eq!(gap.check, "log_gap");
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn quiet_bounds() -> QuietBounds {
        QuietBounds {
            terms_max: Some(2),
            settle_max: Some(ms(1000)),
            grace: ms(200),
            derivation: "test bounds".into(),
        }
    }

    /// Reports `node`'s status at `at_ms` and runs the quiet checks, as the world does.
    fn report(
        checker: &mut Checker,
        node: u64,
        role: RoleKind,
        term: u64,
        leader: Option<u64>,
        at_ms: u64,
    ) -> Result<(), Failure> {
        let status = Status {
            id: NodeId(node),
            leader: leader.map(NodeId),
            ..status(role, term, 0)
        };
        checker.status(NodeId(node), status)?;
        checker.check_quiet(NodeId(node), || ms(at_ms))
    }

    /// A three-node cluster that settles under n1 in `term`, 10 ms after `at_ms`.
    fn settle(checker: &mut Checker, term: u64, at_ms: u64) {
        report(checker, 1, RoleKind::Leader, term, Some(1), at_ms).unwrap();
        report(checker, 2, RoleKind::Follower, term, Some(1), at_ms + 5).unwrap();
        report(checker, 3, RoleKind::Follower, term, Some(1), at_ms + 10).unwrap();
    }

    #[test]
    fn an_election_after_the_cluster_settled_with_nothing_faulted_is_caught() {
        let mut checker = Checker::new(3);
        report(&mut checker, 1, RoleKind::Follower, 1, None, 0).unwrap();
        checker.open_quiet_window(quiet_bounds(), ms(0));
        settle(&mut checker, 2, 100);
        // Commit index changes keep the term: no failure.
        report(&mut checker, 2, RoleKind::Follower, 2, Some(1), 600).unwrap();
        let failure = report(&mut checker, 3, RoleKind::Candidate, 3, None, 900).unwrap_err();
        assert_eq!(failure.check, "stable_term");
        assert!(
            failure.detail.contains("candidate in t3"),
            "{}",
            failure.detail
        );
        assert!(failure.detail.contains("test bounds"), "{}", failure.detail);
    }

    #[test]
    fn a_pre_vote_campaign_or_a_lost_leadership_in_a_settled_cluster_is_caught() {
        let mut checker = Checker::new(3);
        checker.open_quiet_window(quiet_bounds(), ms(0));
        settle(&mut checker, 1, 100);
        let failure = report(&mut checker, 2, RoleKind::PreCandidate, 1, None, 500).unwrap_err();
        assert_eq!(failure.check, "stable_term");
        let mut checker = Checker::new(3);
        checker.open_quiet_window(quiet_bounds(), ms(0));
        settle(&mut checker, 1, 100);
        let failure = report(&mut checker, 1, RoleKind::Follower, 1, None, 500).unwrap_err();
        assert_eq!(failure.check, "stable_term");
    }

    #[test]
    fn a_change_within_the_grace_after_settling_is_recovery_not_a_spurious_election() {
        let mut checker = Checker::new(3);
        checker.open_quiet_window(quiet_bounds(), ms(0));
        settle(&mut checker, 1, 0);
        // A resumed node's timers fire at once: it campaigns 50 ms after the cluster settled.
        report(&mut checker, 3, RoleKind::Candidate, 2, None, 60).unwrap();
        report(&mut checker, 3, RoleKind::Leader, 2, Some(3), 70).unwrap();
        report(&mut checker, 1, RoleKind::Follower, 2, Some(3), 75).unwrap();
        report(&mut checker, 2, RoleKind::Follower, 2, Some(3), 80).unwrap();
        let outcome = checker.close_quiet_window(ms(2000)).unwrap().unwrap();
        assert_eq!(outcome.settled_after, ms(80));
        // From t0 at the heal: t1, then t2.
        assert_eq!(outcome.terms_started, 2);
    }

    #[test]
    fn unbounded_recovery_counts_no_terms_but_a_settled_cluster_must_stay_settled() {
        let mut checker = Checker::new(3);
        let unbounded = QuietBounds {
            terms_max: None,
            settle_max: None,
            ..quiet_bounds()
        };
        checker.open_quiet_window(unbounded, ms(0));
        // Split votes, round after round: no failure, however many.
        for term in 1..=30 {
            report(&mut checker, 2, RoleKind::Candidate, term, None, term * 10).unwrap();
        }
        assert_eq!(checker.close_quiet_window(ms(5000)), Ok(None));
        let mut checker = Checker::new(3);
        checker.open_quiet_window(
            QuietBounds {
                terms_max: None,
                settle_max: None,
                ..quiet_bounds()
            },
            ms(0),
        );
        settle(&mut checker, 31, 400);
        let failure = report(&mut checker, 3, RoleKind::Candidate, 32, None, 2000).unwrap_err();
        assert_eq!(failure.check, "stable_term");
    }

    #[test]
    fn too_many_elections_before_settling_are_caught() {
        let mut checker = Checker::new(3);
        report(&mut checker, 1, RoleKind::Follower, 4, None, 0).unwrap();
        checker.open_quiet_window(quiet_bounds(), ms(0));
        report(&mut checker, 2, RoleKind::Candidate, 5, None, 100).unwrap();
        report(&mut checker, 3, RoleKind::Candidate, 6, None, 200).unwrap();
        let failure = report(&mut checker, 2, RoleKind::Candidate, 7, None, 300).unwrap_err();
        assert_eq!(failure.check, "recovery_elections");
        assert!(
            failure.detail.contains("3 terms started"),
            "{}",
            failure.detail
        );
        assert!(
            failure.detail.contains("the bound is 2 (test bounds)"),
            "{}",
            failure.detail
        );
    }

    #[test]
    fn settling_late_or_never_is_caught_with_the_bound() {
        let mut checker = Checker::new(3);
        checker.open_quiet_window(quiet_bounds(), ms(0));
        settle(&mut checker, 1, 1500);
        let failure = checker.close_quiet_window(ms(3000)).unwrap_err();
        assert_eq!(failure.check, "recovery_time");
        assert!(
            failure.detail.contains("settled only after 1.51s"),
            "{}",
            failure.detail
        );
        let mut checker = Checker::new(3);
        checker.open_quiet_window(quiet_bounds(), ms(0));
        report(&mut checker, 1, RoleKind::Leader, 1, Some(1), 100).unwrap();
        report(&mut checker, 2, RoleKind::Follower, 1, Some(1), 100).unwrap();
        // n3 never reports after the heal (killed and not restarted): not settled.
        let failure = checker.close_quiet_window(ms(3000)).unwrap_err();
        assert_eq!(failure.check, "recovery_time");
        assert!(
            failure.detail.contains("had not settled"),
            "{}",
            failure.detail
        );
        assert!(
            failure.detail.contains("the bound is 1s (test bounds)"),
            "{}",
            failure.detail
        );
    }
}
