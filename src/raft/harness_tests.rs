//! The fast inner harness: N Raft cores on a deterministic in-process network that drops,
//! duplicates and reorders messages, partitions links, and crashes nodes (losing everything not
//! persisted) and restarts them from what they persisted. Nodes snapshot a toy state machine (a
//! hash chained over the applied entries), compact their logs, and install each other's
//! snapshots, chunk by chunk. Thousands of random steps per seed; every safety property is
//! checked after every step (a snapshot's state must equal the state every node had at its
//! index), and a final liveness phase heals everything and requires a commit that every node
//! applies.
//!
//! A failure names the seed; `RAFT_HARNESS_SEED=N cargo test -p raftchat harness` replays it.

use super::*;
use crate::storage::Install;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, VecDeque};

/// What a node's disk holds: only this survives a crash. The log is kept as the storage
/// layer replays it (`storage::Recovered`), so restarts go through `storage::combine`.
#[derive(Clone, Default)]
struct Disk {
    log: crate::storage::Recovered,
    /// The newest durable snapshot.
    snapshot: Option<Snapshot>,
}

impl Disk {
    /// Persists a batch (or the prefix of one a power failure kept): the install's record,
    /// then entries, then the hard state.
    fn persist(
        &mut self,
        install: Option<Install>,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) {
        if let Some(install) = install {
            let (snapshot, kept_through) = (install.snapshot.index, install.kept_through);
            self.log
                .entries
                .retain(|e| snapshot < e.index && e.index <= kept_through);
            self.log.base = Some(install.snapshot);
        }
        if let Some(first) = entries.first() {
            let keep = self
                .log
                .entries
                .iter()
                .take_while(|e| e.index < first.index)
                .count();
            self.log.entries.truncate(keep);
            self.log.entries.extend(entries.iter().cloned());
        }
        if let Some(hard_state) = hard_state {
            self.log.hard_state = hard_state;
        }
    }

    /// Keeps the newer of the held snapshot and `snapshot`.
    fn keep_snapshot(&mut self, snapshot: Snapshot) {
        if self
            .snapshot
            .as_ref()
            .is_none_or(|s| s.meta.index < snapshot.meta.index)
        {
            self.snapshot = Some(snapshot);
        }
    }

    /// Deletes the log's entries up to `index` (segments a host deletes after compaction).
    fn compact(&mut self, index: LogIndex) {
        self.log.entries.retain(|e| e.index > index);
    }
}

/// The toy state machine: a hash chained over every applied entry.
fn chain(state: u64, entry: &Entry) -> u64 {
    let data: &[u8] = match &entry.data {
        EntryData::Noop | EntryData::Membership(_) => b"noop",
        EntryData::Command(payload) => payload.as_bytes(),
    };
    data.iter()
        .chain(&entry.index.0.to_le_bytes())
        .fold(state ^ 0x9e37_79b9_7f4a_7c15, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// A snapshot of `state` at `index`: the state's 8 bytes, padded to `size` bytes.
fn encode_state(index: LogIndex, term: Term, state: u64, size: usize) -> Snapshot {
    let mut data = state.to_le_bytes().to_vec();
    data.resize(size.max(8), 0xa5);
    Snapshot::new(index, term, Payload::new(data))
}

fn decode_state(snapshot: &Snapshot) -> u64 {
    let bytes = snapshot.data.as_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("a state is 8 bytes"))
}

struct Node {
    raft: Option<Raft>,
    disk: Disk,
    /// Highest commit index seen in this life, to check it never moves backwards.
    commit_seen: LogIndex,
    /// The state machine: a hash of everything applied, and how far.
    state: u64,
    state_index: LogIndex,
    /// The file of a snapshot being received (lost, like its transfer, at a crash).
    incoming: Vec<u8>,
    /// Readys taken and not yet carried out, oldest first (their writes under way); lost at
    /// a crash.
    pending: VecDeque<(Ready, Option<Install>)>,
}

struct Options {
    /// The bootstrap voters: nodes 1 to `nodes`.
    nodes: u64,
    /// Every node slot; those past `nodes` start outside the cluster, to be added.
    slots: u64,
    /// Percent of steps that change the membership or transfer leadership.
    change_percent: u32,
    steps: usize,
    drop_percent: u32,
    duplicate_percent: u32,
    reorder_percent: u32,
    crash_percent: u32,
    pre_vote: bool,
    check_quorum: bool,
    /// Take a snapshot once this many entries were applied since the last; 0 for never.
    snapshot_every: u64,
    catch_up_entries: u64,
    chunk_bytes: usize,
    /// How many Readys a node may have under way at once (1: one at a time, carried out
    /// whole as soon as it is taken); beyond 1 it also sends a leader's messages early.
    pipeline_depth: usize,
    /// Whether leaders tell followers of every commit at once (`Config::eager_commit`).
    eager_commit: bool,
}

struct Harness {
    rng: ChaCha8Rng,
    seed: u64,
    options: Options,
    nodes: BTreeMap<NodeId, Node>,
    in_flight: Vec<Message>,
    cut: BTreeSet<(NodeId, NodeId)>,
    leaders: BTreeMap<Term, NodeId>,
    committed: BTreeMap<LogIndex, Entry>,
    /// For each committed index, a term at least as high as the one it was committed in: the
    /// highest term any node had when the commit was first seen.
    committed_by: BTreeMap<LogIndex, Term>,
    applied: BTreeMap<LogIndex, Entry>,
    /// The state machine's state after each index, as first computed by any node.
    states: BTreeMap<LogIndex, u64>,
    proposals: u64,
    installs: usize,
    /// Membership changes and transfers started.
    changes: usize,
    /// For each leader, the term it leads and the commit index checked against its quorum.
    quorum_checked: BTreeMap<NodeId, (Term, LogIndex)>,
}

impl Harness {
    fn new(seed: u64) -> Harness {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nodes = [3, 5][rng.gen_range(0..2)];
        let changes = rng.gen_bool(0.5);
        let options = Options {
            nodes,
            slots: if changes { nodes + 2 } else { nodes },
            change_percent: if changes { rng.gen_range(1..4) } else { 0 },
            steps: 5000,
            drop_percent: rng.gen_range(0..20),
            duplicate_percent: rng.gen_range(0..10),
            reorder_percent: rng.gen_range(0..30),
            crash_percent: rng.gen_range(0..3),
            pre_vote: rng.gen_bool(0.7),
            check_quorum: rng.gen_bool(0.7),
            snapshot_every: [0, 3, 10, 40][rng.gen_range(0..4)],
            catch_up_entries: rng.gen_range(0..8),
            chunk_bytes: rng.gen_range(4..64),
            pipeline_depth: [1, 1, 2, 4][rng.gen_range(0..4)],
            eager_commit: rng.gen_bool(0.5),
        };
        let mut harness = Harness {
            rng,
            seed,
            options,
            nodes: BTreeMap::new(),
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            committed_by: BTreeMap::new(),
            applied: BTreeMap::new(),
            states: BTreeMap::from([(LogIndex(0), 0)]),
            proposals: 0,
            installs: 0,
            changes: 0,
            quorum_checked: BTreeMap::new(),
        };
        for id in 1..=harness.options.slots {
            let node = Node {
                raft: None,
                disk: Disk::default(),
                commit_seen: LogIndex(0),
                state: 0,
                state_index: LogIndex(0),
                incoming: Vec::new(),
                pending: VecDeque::new(),
            };
            harness.nodes.insert(NodeId(id), node);
            harness.restart(NodeId(id));
        }
        harness
    }

    fn config(&self, id: NodeId) -> Config {
        let mut config = Config::new(id, (1..=self.options.nodes).map(NodeId).collect());
        config.pre_vote = self.options.pre_vote;
        config.check_quorum = self.options.check_quorum;
        config.eager_commit = self.options.eager_commit;
        config.heartbeat_interval_ticks = 3;
        config.inflight_appends_max = 4;
        config.append_entries_max = 8;
        // Smaller than the batches that commit at once: applying takes several rounds.
        config.apply_entries_max = 3;
        config.snapshot_catch_up_entries = self.options.catch_up_entries;
        config.snapshot_chunk_bytes_max = self.options.chunk_bytes;
        config.snapshot_inflight_chunks_max = 3;
        config
    }

    fn restart(&mut self, id: NodeId) {
        let config = self.config(id);
        let rng = ChaCha8Rng::seed_from_u64(self.rng.gen());
        let node = self.nodes.get_mut(&id).unwrap();
        let disk = node.disk.clone();
        let snapshot = disk
            .snapshot
            .unwrap_or_else(|| encode_state(LogIndex(0), Term(0), 0, 8));
        let seed = self.seed;
        let combined = crate::storage::combine(snapshot.clone(), disk.log)
            .unwrap_or_else(|e| panic!("seed {seed}: {id}'s own disk is inconsistent: {e}"));
        if combined.reset {
            // The host writes the snapshot's record before anything else.
            node.disk.log.entries.clear();
            node.disk.log.base = Some(snapshot.meta);
        }
        let persisted = combined.persisted;
        let raft = Raft::restart(config, rng, persisted).expect("own disk is consistent");
        node.raft = Some(raft);
        node.commit_seen = LogIndex(0);
        node.state = decode_state(&snapshot);
        node.state_index = snapshot.meta.index;
        node.incoming.clear();
        node.pending.clear();
    }

    fn highest_term(&self) -> Term {
        let terms = self
            .nodes
            .values()
            .filter_map(|n| n.raft.as_ref().map(|r| r.status().term));
        terms.max().unwrap_or(Term(0))
    }

    fn random_node(&mut self) -> NodeId {
        NodeId(self.rng.gen_range(1..=self.options.slots))
    }

    fn step_once(&mut self) {
        let id = self.random_node();
        if self.rng.gen_range(0..100) < self.options.change_percent {
            self.change_membership(id);
            self.check(id);
            return;
        }
        match self.rng.gen_range(0..100) {
            0..=47 => self.deliver(),
            48..=57 => self.with_raft(id, |raft, _| raft.tick()),
            58..=69 => self.propose(id),
            70..=94 => self.process_ready(id),
            95..=97 => self.repartition(),
            _ => self.crash_or_restart(id),
        }
        self.check(id);
    }

    fn with_raft(&mut self, id: NodeId, f: impl FnOnce(&mut Raft, &mut ChaCha8Rng)) {
        if let Some(raft) = self.nodes.get_mut(&id).unwrap().raft.as_mut() {
            f(raft, &mut self.rng);
        }
    }

    fn propose(&mut self, id: NodeId) {
        self.proposals += 1;
        let data = Payload::new(format!("{}-{}", self.seed, self.proposals).into_bytes());
        // Like a client, follow one redirect to the leader the node names.
        let mut target = id;
        if let Some(raft) = self.nodes[&id].raft.as_ref() {
            target = raft.leader().unwrap_or(id);
        }
        self.with_raft(target, |raft, _| {
            let _ = raft.propose(data);
        });
    }

    /// Asks the leader `id` names (like an operator's command, redirected once) for a random
    /// membership change or leadership transfer; most are refused, as they would be.
    fn change_membership(&mut self, id: NodeId) {
        let mut target = id;
        if let Some(raft) = self.nodes[&id].raft.as_ref() {
            target = raft.leader().unwrap_or(id);
        }
        let slots = self.options.slots;
        let pick = self.rng.gen_range(0..100);
        let node = NodeId(self.rng.gen_range(1..=slots));
        let promote = self.rng.gen_bool(0.7);
        let mut started = false;
        self.with_raft(target, |raft, _| {
            started = match pick {
                0..=34 => {
                    let change = ConfChange::AddLearner {
                        id: node,
                        address: format!("node-{}", node.0),
                        promote,
                    };
                    raft.propose_change(change).is_ok()
                }
                35..=59 => raft.propose_change(ConfChange::Remove { id: node }).is_ok(),
                60..=69 => raft
                    .propose_change(ConfChange::Promote { id: node })
                    .is_ok(),
                70..=84 => raft.transfer_leadership(Some(node)).is_ok(),
                _ => raft.transfer_leadership(None).is_ok(),
            };
        });
        self.changes += usize::from(started);
    }

    fn deliver(&mut self) {
        if self.in_flight.len() > 5000 {
            // A bounded network: the oldest messages are lost.
            self.in_flight.drain(..1000);
        }
        if self.in_flight.is_empty() {
            return;
        }
        // Mostly oldest-first, so messages have realistic delays; sometimes any, to reorder.
        let len = self.in_flight.len();
        let k = if self.rng.gen_range(0..100) < self.options.reorder_percent {
            self.rng.gen_range(0..len)
        } else {
            self.rng.gen_range(0..len.min(3))
        };
        let message = if self.rng.gen_range(0..100) < self.options.duplicate_percent {
            self.in_flight[k].clone()
        } else {
            self.in_flight.remove(k)
        };
        if self.rng.gen_range(0..100) < self.options.drop_percent
            || self.cut.contains(&(message.from, message.to))
        {
            return;
        }
        let to = message.to;
        self.with_raft(to, |raft, _| raft.step(message));
    }

    /// Takes the node's next Ready, or (with Readys under way) carries out the oldest, as a
    /// pipelining host would: a taken Ready's committed entries are applied at once (this node
    /// persisted them already) and, pipelined, a leader's messages sent before the write.
    fn process_ready(&mut self, id: NodeId) {
        let depth = self.options.pipeline_depth;
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let pending = node.pending.len();
        if pending > 0 && (pending >= depth || self.rng.gen_bool(0.5)) {
            self.carry_out_oldest(id);
            return;
        }
        let Some(mut ready) = raft.ready() else {
            if pending > 0 {
                self.carry_out_oldest(id);
            }
            return;
        };
        let last_index = raft.status().last_index;
        let install = ready
            .snapshot
            .map(|snapshot| Install::after_ready(snapshot, &ready.entries, last_index));
        if depth > 1 {
            self.in_flight.extend(ready.take_messages_before_persist());
        }
        let seed = self.seed;
        for entry in std::mem::take(&mut ready.committed_entries) {
            let persisted = node.disk.log.entries.contains(&entry)
                || node.disk.log.base.is_some_and(|b| b.index >= entry.index);
            assert!(
                persisted,
                "seed {seed}: {id} applies {} before persisting it",
                entry.index
            );
            check_same(&mut self.applied, &entry, seed, "state machine safety");
            assert_eq!(
                entry.index,
                node.state_index.next(),
                "seed {seed}: applied out of order"
            );
            node.state = chain(node.state, &entry);
            node.state_index = entry.index;
            let first = *self.states.entry(entry.index).or_insert(node.state);
            assert_eq!(
                first, node.state,
                "seed {seed}: state differs at {}",
                entry.index
            );
        }
        // A snapshot's files and reports wait for every write under way.
        let alone = depth == 1 || install.is_some() || !ready.snapshot_chunks.is_empty();
        node.pending.push_back((ready, install));
        if alone {
            while self.nodes[&id].raft.is_some() && !self.nodes[&id].pending.is_empty() {
                self.carry_out_oldest(id);
            }
        }
    }

    /// Carries out the node's oldest Ready under way: persists it (a power failure may keep a
    /// prefix), sends its messages, advances; then, with none under way, a snapshot's report.
    fn carry_out_oldest(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let (ready, install) = node.pending.pop_front().expect("a Ready under way");
        if self.rng.gen_range(0..10_000) < self.options.crash_percent * 2 {
            // Power fails mid-batch: a prefix of the batch's records (the install's record,
            // then the entries) reached the disk, the hard state written after them did not,
            // and nothing was sent; the later writes under way never started.
            let kept = self.rng.gen_range(0..=ready.entries.len() + 1);
            let entries = &ready.entries[..kept.saturating_sub(1)];
            node.disk
                .persist(install.filter(|_| kept > 0), entries, None);
            node.raft = None;
            return;
        }
        let received = write_chunks(&mut node.incoming, &ready.snapshot_chunks);
        node.disk.persist(install, &ready.entries, ready.hard_state);
        // A crash after persisting but before sending loses the messages, nothing else.
        if self.rng.gen_range(0..10_000) < self.options.crash_percent {
            node.raft = None;
            return;
        }
        self.in_flight.extend(ready.messages);
        raft.advance();
        if !node.pending.is_empty() {
            assert!(
                received.is_none(),
                "a snapshot's Ready is carried out alone"
            );
            return;
        }
        if let Some(snapshot) = received {
            self.snapshot_received(id, snapshot);
        }
        self.maybe_snapshot(id);
    }

    /// A snapshot arrived whole: made durable, then reported; if installed, the state machine
    /// takes its state, which must be the state every node had at its index.
    fn snapshot_received(&mut self, id: NodeId, snapshot: Snapshot) {
        let seed = self.seed;
        let node = self.nodes.get_mut(&id).unwrap();
        assert!(
            snapshot.is_intact(),
            "seed {seed}: chunks assembled out of order"
        );
        node.disk.keep_snapshot(snapshot.clone());
        let meta = snapshot.meta;
        let state = decode_state(&snapshot);
        let raft = node.raft.as_mut().unwrap();
        if raft.snapshot_received(snapshot) {
            self.installs += 1;
            node.state = state;
            node.state_index = meta.index;
            let first = *self.states.entry(meta.index).or_insert(state);
            assert_eq!(
                first, state,
                "seed {seed}: installed snapshot at {} differs",
                meta.index
            );
        }
    }

    /// Takes a snapshot when the policy says so, makes it durable, and compacts.
    fn maybe_snapshot(&mut self, id: NodeId) {
        let every = self.options.snapshot_every;
        let size = self.rng.gen_range(8..200);
        let node = self.nodes.get_mut(&id).unwrap();
        let raft = node.raft.as_mut().unwrap();
        let held = raft.log().snapshot_meta().map_or(LogIndex(0), |m| m.index);
        if every == 0 || node.state_index.0 < held.0 + every {
            return;
        }
        let term = raft
            .log()
            .term(node.state_index)
            .expect("the applied index is in the log");
        let membership = raft.membership_at(node.state_index).clone();
        let snapshot =
            encode_state(node.state_index, term, node.state, size).with_membership(membership);
        node.disk.keep_snapshot(snapshot.clone());
        let compacted = raft.snapshot_taken(snapshot);
        node.disk.compact(compacted);
    }

    fn repartition(&mut self) {
        self.cut.clear();
        if self.rng.gen_bool(0.5) {
            return;
        }
        for from in 1..=self.options.slots {
            for to in 1..=self.options.slots {
                if from != to && self.rng.gen_bool(0.3) {
                    self.cut.insert((NodeId(from), NodeId(to)));
                }
            }
        }
    }

    fn crash_or_restart(&mut self, id: NodeId) {
        if self.nodes[&id].raft.is_none() {
            self.restart(id);
        } else if self.rng.gen_range(0..100) < self.options.crash_percent * 5 {
            self.nodes.get_mut(&id).unwrap().raft = None;
        }
    }

    /// Every safety property, after every step, on the node that acted (and leaders globally).
    fn check(&mut self, id: NodeId) {
        // Before anything can change a leader's configuration.
        self.check_commit_quorums();
        let highest_term = self.highest_term();
        let seed = self.seed;
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = node.raft.as_ref() else {
            return;
        };
        let status = raft.status();
        assert!(
            status.commit_index >= node.commit_seen,
            "seed {seed}: commit index moved backwards on {id}"
        );
        node.commit_seen = status.commit_index;
        if status.role == RoleKind::Leader {
            let first_seen = !self.leaders.contains_key(&status.term);
            let previous = *self.leaders.entry(status.term).or_insert(id);
            assert_eq!(
                previous, id,
                "seed {seed}: election safety: two leaders in {}",
                status.term
            );
            // Only a voter wins an election: of the configuration in force, or of the last
            // committed one when an uncommitted change removes it (thesis §4.2.2).
            let commit_index = status.commit_index;
            let voter =
                raft.membership().is_voter(id) || raft.membership_at(commit_index).is_voter(id);
            assert!(
                !first_seen || voter,
                "seed {seed}: {id} leads {} without being a voter of {:?}",
                status.term,
                raft.membership()
            );
        }
        let committed = raft.log().entries().iter();
        for entry in committed.take_while(|e| e.index <= status.commit_index) {
            check_same(
                &mut self.committed,
                entry,
                seed,
                "committed entries never change",
            );
            self.committed_by.entry(entry.index).or_insert(highest_term);
        }
        self.check_log_matching(id);
        self.check_leader_completeness();
    }

    /// Every entry a leader commits is on the disks of a majority of the voters of its
    /// configuration in force (the one it counted with: a configuration only changes in a step
    /// before the commit it may affect, and this runs after every step). Learners count for
    /// nothing; an entry a disk's snapshot covers counts as held.
    fn check_commit_quorums(&mut self) {
        for (&id, node) in &self.nodes {
            let Some(raft) = node.raft.as_ref() else {
                continue;
            };
            let status = raft.status();
            if status.role != RoleKind::Leader {
                continue;
            }
            let checked = match self.quorum_checked.get(&id) {
                Some(&(term, index)) if term == status.term => index,
                // A new leadership: what it committed before it led is not its commit.
                _ => status.commit_index,
            };
            self.quorum_checked
                .insert(id, (status.term, status.commit_index));
            let voters = raft.membership().voter_ids();
            let mut index = checked.next();
            while index <= status.commit_index {
                let Some(term) = raft.log().term(index) else {
                    index = index.next();
                    continue;
                };
                let holders: Vec<NodeId> = voters
                    .iter()
                    .copied()
                    .filter(|voter| {
                        let disk = &self.nodes[voter].disk;
                        let covered = disk.log.base.is_some_and(|b| b.index >= index)
                            || disk
                                .snapshot
                                .as_ref()
                                .is_some_and(|s| s.meta.index >= index);
                        covered
                            || disk
                                .log
                                .entries
                                .iter()
                                .any(|e| e.index == index && e.term == term)
                    })
                    .collect();
                assert!(
                    holders.len() > voters.len() / 2,
                    "seed {}: {id} committed {index} held only by {holders:?} of voters {voters:?} \
                     (checked through {checked}, configuration of {}, {:?})",
                    self.seed,
                    raft.log().membership_index(),
                    status
                );
                index = index.next();
            }
        }
    }

    /// Log Matching (§5.3): two logs with an entry of the same index and term are identical up
    /// to it. Checked against every other live node.
    fn check_log_matching(&self, id: NodeId) {
        let log = self.nodes[&id].raft.as_ref().unwrap().log().entries();
        for (other_id, other) in &self.nodes {
            let Some(other) = other.raft.as_ref() else {
                continue;
            };
            let other_log = other.log().entries();
            let (Some(a), Some(b)) = (log.first(), other_log.first()) else {
                continue;
            };
            // Both logs, from the later of their first indexes.
            let start = a.index.max(b.index);
            let ours = log
                .get((start.0 - a.index.0) as usize..)
                .unwrap_or_default();
            let theirs = other_log
                .get((start.0 - b.index.0) as usize..)
                .unwrap_or_default();
            let common = ours.len().min(theirs.len());
            let Some(k) = (0..common).rev().find(|&k| ours[k].term == theirs[k].term) else {
                continue;
            };
            assert_eq!(
                ours[..=k],
                theirs[..=k],
                "seed {}: log matching between {id} and {other_id}",
                self.seed
            );
        }
    }

    /// Leader Completeness (§5.4): every leader's log holds every committed entry.
    fn check_leader_completeness(&self) {
        for (id, node) in &self.nodes {
            let Some(raft) = node.raft.as_ref() else {
                continue;
            };
            if raft.status().role != RoleKind::Leader {
                continue;
            }
            for (index, entry) in &self.committed {
                // Leader Completeness speaks of leaders of later terms than the commit: a stale
                // leader of an older term may legitimately lack it.
                if raft.status().term <= self.committed_by[index] {
                    continue;
                }
                let first = raft.log().first_index();
                if *index < first {
                    // Compacted: the leader's snapshot covers it.
                    continue;
                }
                let held = raft.log().entries().get((index.0 - first.0) as usize);
                assert_eq!(
                    held,
                    Some(entry),
                    "seed {}: leader {id} lacks committed {index}",
                    self.seed
                );
            }
        }
    }

    /// Heals every fault, restarts every node, and requires a new command to commit and be
    /// applied everywhere within a bound.
    fn require_liveness(&mut self) {
        self.cut.clear();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            if self.nodes[&id].raft.is_none() {
                self.restart(id);
            }
        }
        let marker = Payload::new(format!("liveness-{}", self.seed).into_bytes());
        let is_marker = |e: &Entry| e.data == EntryData::Command(marker.clone());
        for _round in 0..2000 {
            // Like a client, retry until some log holds the command: a proposal accepted by a
            // leader that then loses its entry to another leader is gone for good.
            // (A leader's log: a node removed from the cluster may hold it in a log that
            // will never commit again.)
            let held = self.nodes.values().any(|n| {
                let raft = n.raft.as_ref().unwrap();
                raft.status().role == RoleKind::Leader && raft.log().entries().iter().any(is_marker)
            });
            for &id in &ids {
                self.with_raft(id, |raft, _| raft.tick());
                if !held {
                    let data = marker.clone();
                    self.with_raft(id, |raft, _| {
                        let _ = raft.propose(data);
                    });
                }
            }
            self.settle_reliably();
            for &id in &ids {
                self.check(id);
            }
            let marker_index = self
                .applied
                .values()
                .find(|e| is_marker(e))
                .map(|e| e.index);
            // Every member of the configuration in force on the leader applies it.
            let members = self
                .nodes
                .values()
                .filter_map(|n| n.raft.as_ref())
                .find(|r| r.status().role == RoleKind::Leader)
                .map(|r| r.membership().clone());
            let everywhere = marker_index.zip(members).is_some_and(|(index, members)| {
                members
                    .members
                    .keys()
                    .all(|id| self.nodes[id].state_index >= index)
            });
            if everywhere {
                return;
            }
        }
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|(id, n)| n.raft.as_ref().map(|r| (id, n, r)))
            .map(|(id, n, r)| {
                let voters = r.membership().voter_ids();
                let learners: Vec<NodeId> = r.membership().learners().collect();
                format!(
                    "{id}: {:?}, applied {}, voters {voters:?}, learners {learners:?}",
                    r.status(),
                    n.state_index
                )
            })
            .collect();
        panic!(
            "seed {}: liveness: no commit applied everywhere after healing:\n{}",
            self.seed,
            nodes.join("\n")
        );
    }

    fn settle_reliably(&mut self) {
        let crash_percent = std::mem::replace(&mut self.options.crash_percent, 0);
        for _ in 0..100 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.process_ready(id);
                while self.nodes[&id].raft.is_some() && !self.nodes[&id].pending.is_empty() {
                    self.carry_out_oldest(id);
                }
                self.check_commit_quorums();
            }
            if self.in_flight.is_empty() {
                return;
            }
            for message in std::mem::take(&mut self.in_flight) {
                let to = message.to;
                self.with_raft(to, |raft, _| raft.step(message));
                self.check_commit_quorums();
            }
        }
        self.options.crash_percent = crash_percent;
    }
}

/// Writes received chunks into the incoming file; returns the snapshot once it is whole.
fn write_chunks(file: &mut Vec<u8>, chunks: &[SnapshotChunk]) -> Option<Snapshot> {
    let mut whole = None;
    for chunk in chunks {
        file.truncate(chunk.offset as usize);
        assert_eq!(
            file.len() as u64,
            chunk.offset,
            "a chunk past the end of the file"
        );
        file.extend_from_slice(chunk.data.as_bytes());
        if chunk.last {
            whole = Some(Snapshot {
                meta: chunk.snapshot,
                membership: chunk.membership.clone(),
                data: Payload::new(std::mem::take(file)),
            });
        }
    }
    whole
}

fn check_same(seen: &mut BTreeMap<LogIndex, Entry>, entry: &Entry, seed: u64, property: &str) {
    let first = seen.entry(entry.index).or_insert_with(|| entry.clone());
    assert_eq!(
        first, entry,
        "seed {seed}: {property} violated at {}",
        entry.index
    );
}

fn run_seed(seed: u64) -> Harness {
    // `RAFT_HARNESS_MUTANT=NAME` (with the `mutants` feature) runs the harness against a known
    // bug, to see whether it catches it.
    #[cfg(feature = "mutants")]
    if let Ok(name) = std::env::var("RAFT_HARNESS_MUTANT") {
        let mutant =
            crate::mutants::Mutant::from_name(&name).expect("RAFT_HARNESS_MUTANT names a mutant");
        crate::mutants::activate(Some(mutant));
    }
    let mut harness = Harness::new(seed);
    for _ in 0..harness.options.steps {
        harness.step_once();
    }
    harness.require_liveness();
    harness
}

/// `RAFT_HARNESS_SEED=N` replays one seed; `RAFT_HARNESS_SEEDS=COUNT` sweeps that many.
fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("RAFT_HARNESS_SEED") {
        return vec![seed.parse().expect("RAFT_HARNESS_SEED is a number")];
    }
    let count = std::env::var("RAFT_HARNESS_SEEDS").map_or(120, |c| c.parse().expect("a count"));
    (0..count).collect()
}

/// Election safety, log matching, leader completeness, state machine safety and a monotonic
/// commit index hold under message loss, duplication, reordering, partitions and crashes; and
/// once everything heals, the cluster commits again.
#[test]
fn harness_safety_and_liveness_under_faults() {
    let (mut committed_total, mut installs_total, mut changes_total) = (0, 0, 0);
    let mut failed = Vec::new();
    let seeds = seeds();
    for &seed in &seeds {
        match std::panic::catch_unwind(|| run_seed(seed)) {
            Ok(harness) => {
                committed_total += harness.committed.len();
                installs_total += harness.installs;
                changes_total += harness.changes;
            }
            Err(_) => failed.push(seed),
        }
    }
    for seed in &failed {
        eprintln!(
            "FAILED seed {seed}: replay with \
             RAFT_HARNESS_SEED={seed} cargo test -p raftchat --lib harness_safety"
        );
    }
    eprintln!(
        "harness: {committed_total} entries committed, {installs_total} snapshots installed, \
         {changes_total} membership changes and transfers started"
    );
    eprintln!(
        "{} passed, {} failed",
        seeds.len() - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
    let enough = 100 * seeds.len();
    assert!(
        committed_total > enough,
        "too little committed: {committed_total}"
    );
    assert!(
        installs_total > seeds.len() / 10,
        "too few installs: {installs_total}"
    );
    assert!(
        changes_total > seeds.len(),
        "too few membership changes: {changes_total}"
    );
}

/// The harness is deterministic: a seed replays to the same committed log.
#[test]
fn harness_replays_a_seed_exactly() {
    let a = run_seed(7);
    let b = run_seed(7);
    assert_eq!(a.committed, b.committed);
    assert_eq!(a.leaders, b.leaders);
}
