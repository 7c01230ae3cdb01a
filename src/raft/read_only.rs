//! Linearizable reads without log writes (Raft thesis §6.4): the leader's bookkeeping.
//!
//! A read asked of the leader gets a *read index*, the leader's commit index at that moment.
//! The leader then confirms it was still the leader at that moment by a round of heartbeats:
//! once a quorum (itself included) has answered a heartbeat sent after the read index was
//! recorded, no other leader can have committed anything the read index misses, and the read
//! may be served from any state machine that has applied through it. Reads that arrive before
//! a round's heartbeats go out share that round; the next read opens a new one.
//!
//! Rounds are numbered from 1 in each leadership and carried by every heartbeat; a follower
//! echoes the number in its answer. An answer confirms the highest round its heartbeat carried
//! and every round before it, and only answers in the leader's own term count (the term check
//! happens before a message reaches the leader's handlers), so a late, duplicated or reordered
//! answer, or one meant for an earlier leadership, never confirms a round it was not sent
//! after.
//!
//! A new leader knows its commit index is current only once an entry of its own term has
//! committed (its no-op); reads asked before that wait for it, then get that commit index.
//!
//! With leases on (check-quorum required), a leader whose round of heartbeats a quorum
//! answered within the lease may answer a read at once, with no round: the answering followers
//! refuse to vote for anyone else until an election timeout after they heard it. See
//! [`ReadOnly::lease_ticks`] for the clock assumption this adds. Ticks only measure time while
//! the host delivers them on schedule: a host whose clock stalls (a paused process) reports it,
//! and the leader drops its lease ([`ReadOnly::forget_lease`]).

use super::ReadId;
use crate::limits;
use crate::types::{LogIndex, NodeId};
use std::collections::{BTreeMap, VecDeque};

/// Most rounds whose send tick is kept while unconfirmed (a leader cut off from a quorum opens
/// one per heartbeat until check-quorum deposes it, or forever without it).
const SENT_ROUNDS_KEPT_MAX: usize = 1024;

/// A read waiting for its round: who asked, and its read index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct WaitingRead {
    /// The round whose confirmation releases it.
    pub round: u64,
    /// The commit index when it was asked.
    pub index: LogIndex,
    /// This node for a local read, or the follower that forwarded it.
    pub from: NodeId,
    /// The read's identity, chosen by whoever asked.
    pub read: ReadId,
}

/// A leader's reads in flight (see the module docs). Created empty when a node becomes leader
/// and dropped with its leadership.
#[derive(Debug, Default)]
pub(super) struct ReadOnly {
    /// The newest round opened in this leadership; 0 before the first.
    last_round: u64,
    /// Whether `last_round`'s heartbeats are still to go out (reads may still join it).
    unsent: bool,
    /// Reads with their read index, oldest round first.
    waiting: VecDeque<WaitingRead>,
    /// Reads asked before this leadership committed an entry of its own term.
    before_commit: Vec<(NodeId, ReadId)>,
    /// The highest round each peer has answered.
    answered: BTreeMap<NodeId, u64>,
    /// The tick at which each round still unconfirmed (and the last confirmed one) went out.
    sent_at: BTreeMap<u64, u64>,
    /// The newest round a quorum has answered.
    confirmed: u64,
    /// With leases: reads may be answered at once before this tick.
    lease_until: Option<u64>,
}

impl ReadOnly {
    /// Adds a read asked by `from`; `commit` is the leader's commit index if an entry of its
    /// own term has committed, `None` if not yet. False, adding nothing, if
    /// [`limits::READS_PENDING_MAX`] reads are waiting already.
    #[must_use]
    pub fn add(&mut self, from: NodeId, read: ReadId, commit: Option<LogIndex>) -> bool {
        if self.waiting.len() + self.before_commit.len() >= limits::READS_PENDING_MAX {
            return false;
        }
        self.push(from, read, commit);
        true
    }

    fn push(&mut self, from: NodeId, read: ReadId, commit: Option<LogIndex>) {
        match commit {
            None => self.before_commit.push((from, read)),
            Some(index) => {
                let round = self.open_round();
                self.waiting.push_back(WaitingRead {
                    round,
                    index,
                    from,
                    read,
                });
            }
        }
    }

    /// The leadership has committed an entry of its own term, through `commit`: the reads
    /// that waited for it join a round with that read index.
    pub fn committed_in_term(&mut self, commit: LogIndex) {
        for (from, read) in std::mem::take(&mut self.before_commit) {
            self.push(from, read, Some(commit));
        }
    }

    /// The round new reads join: the unsent one, or a new one.
    fn open_round(&mut self) -> u64 {
        if !self.unsent {
            self.last_round += 1;
            self.unsent = true;
        }
        self.last_round
    }

    /// Whether reads wait for a round whose heartbeats have not gone out.
    pub fn has_unsent(&self) -> bool {
        self.unsent
    }

    /// Whether a read waits for a round that went out before `tick` (or one whose send tick
    /// is forgotten).
    pub fn waits_since(&self, tick: u64) -> bool {
        self.waiting.front().is_some_and(|read| {
            self.sent_at
                .get(&read.round)
                .is_none_or(|&sent| sent < tick)
        })
    }

    /// The round every heartbeat carries: the newest one opened.
    pub fn round(&self) -> u64 {
        self.last_round
    }

    /// If a round is waiting for its heartbeats, marks them sent at `tick` and returns it:
    /// the caller broadcasts them now.
    pub fn take_unsent(&mut self, tick: u64) -> Option<u64> {
        if !self.unsent {
            return None;
        }
        self.unsent = false;
        if self.sent_at.len() >= SENT_ROUNDS_KEPT_MAX {
            // No quorum has answered for a long while: forgetting when the oldest round went
            // out only means it can no longer extend a lease.
            self.sent_at.pop_first();
        }
        self.sent_at.insert(self.last_round, tick);
        Some(self.last_round)
    }

    /// A periodic broadcast of heartbeats at `tick`: it is a round of its own (the unsent one
    /// if reads wait, a new empty one if not), so that answers keep confirming rounds, and
    /// with them the lease, while no read is asked. Returns the round the heartbeats carry.
    pub fn broadcast(&mut self, tick: u64) -> u64 {
        self.open_round();
        self.take_unsent(tick).expect("a round was just opened")
    }

    /// `peer` answered a heartbeat that carried `round`.
    pub fn answered(&mut self, peer: NodeId, round: u64) {
        if round > self.last_round {
            // Never sent in this leadership: a malformed or misdirected answer.
            return;
        }
        let answered = self.answered.entry(peer).or_insert(0);
        *answered = (*answered).max(round);
    }

    /// The reads a quorum has now confirmed, oldest first, given the voters (this node among
    /// them). With `lease_ticks`, a confirmed round also extends the lease from its send.
    pub fn release(
        &mut self,
        id: NodeId,
        voters: &[NodeId],
        lease_ticks: Option<u64>,
    ) -> Vec<WaitingRead> {
        // Called before every Ready of a leader: with no read waiting and no lease to extend,
        // there is nothing to confirm (a later read opens a later round, and the answers
        // counted so far stay in `answered`).
        if self.waiting.is_empty() && lease_ticks.is_none() {
            return Vec::new();
        }
        // This node agrees with every round it has sent.
        let sent = if self.unsent {
            self.last_round - 1
        } else {
            self.last_round
        };
        let mut rounds: Vec<u64> = voters
            .iter()
            .map(|voter| match voter {
                voter if *voter == id => sent,
                peer => self.answered.get(peer).copied().unwrap_or(0),
            })
            .collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_round = rounds[voters.len() / 2];
        if quorum_round > self.confirmed {
            self.confirmed = quorum_round;
            if let (Some(lease), Some(&sent_at)) = (lease_ticks, self.sent_at.get(&quorum_round)) {
                let until = sent_at + lease;
                self.lease_until = Some(self.lease_until.map_or(until, |u| u.max(until)));
            }
            // Keep the send tick of the newest confirmed round only.
            self.sent_at = self.sent_at.split_off(&quorum_round);
        }
        let mut released = Vec::new();
        while let Some(read) = self.waiting.front() {
            if read.round > self.confirmed {
                break;
            }
            released.extend(self.waiting.pop_front());
        }
        released
    }

    /// Whether a read may be answered at `tick` without a round: a lease is held.
    pub fn in_lease(&self, tick: u64) -> bool {
        self.lease_until.is_some_and(|until| tick < until)
    }

    /// The clock stalled: the lease is gone, and no round sent before now may renew it (its
    /// send tick no longer tells real time).
    pub fn forget_lease(&mut self) {
        self.lease_until = None;
        self.sent_at.clear();
    }

    /// The leadership ended: every read still waiting, to be refused.
    pub fn drain(&mut self) -> Vec<(NodeId, ReadId)> {
        let mut reads: Vec<(NodeId, ReadId)> =
            self.waiting.drain(..).map(|w| (w.from, w.read)).collect();
        reads.append(&mut self.before_commit);
        reads
    }

    /// How many ticks a lease lasts after the send of a round a quorum answered, for an
    /// election timeout of at least `election_ticks_min` ticks.
    ///
    /// The clock assumption: every node's clock runs at most `drift_percent` percent faster
    /// than the leader's (a follower's timeout may elapse that much sooner in the leader's
    /// time). A follower that answered a round's heartbeat heard it no earlier than the
    /// leader sent it, and refuses to vote for another candidate until `election_ticks_min`
    /// of its own ticks have passed since, less one for the tick it may be part-way through:
    /// `(election_ticks_min - 1) / (1 + drift)` of the leader's ticks. The leader counts
    /// whole ticks, and a read at tick `t` may be answered as late as `t + 1`, so one more
    /// tick comes off. Zero (no lease) when the timeout is too short to leave any. A follower
    /// that restarts forgets whom it heard; with leases on, every node refuses votes for an
    /// election timeout after it starts, so a restart does not cut the lease short.
    pub fn lease_ticks(election_ticks_min: u32, drift_percent: u32) -> u64 {
        let follower_ticks = u64::from(election_ticks_min.saturating_sub(1));
        let leader_ticks = follower_ticks * 100 / (100 + u64::from(drift_percent));
        leader_ticks.saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = NodeId(1);

    fn voters(n: u64) -> Vec<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    fn reads(released: &[WaitingRead]) -> Vec<u64> {
        released.iter().map(|r| r.read.0).collect()
    }

    #[test]
    fn reads_before_a_send_share_a_round_and_a_quorum_releases_them() {
        let mut ro = ReadOnly::default();
        assert!(ro.add(ME, ReadId(1), Some(LogIndex(5))));
        assert!(ro.add(NodeId(2), ReadId(2), Some(LogIndex(6))));
        assert_eq!(ro.take_unsent(10), Some(1));
        assert!(ro.add(ME, ReadId(3), Some(LogIndex(7))));
        assert_eq!(ro.round(), 2, "a read after the send opens a new round");
        assert!(ro.release(ME, &voters(3), None).is_empty(), "no answer yet");
        ro.answered(NodeId(3), 1);
        let released = ro.release(ME, &voters(3), None);
        assert_eq!(reads(&released), [1, 2]);
        assert_eq!(released[1].from, NodeId(2));
        assert_eq!(released[1].index, LogIndex(6));
        // Round 2 is not sent: an answer claiming it is ignored.
        ro.answered(NodeId(2), 2);
        assert!(ro.release(ME, &voters(3), None).is_empty());
        assert_eq!(ro.take_unsent(11), Some(2));
        ro.answered(NodeId(2), 2);
        assert_eq!(reads(&ro.release(ME, &voters(3), None)), [3]);
    }

    #[test]
    fn late_answers_confirm_only_what_they_carried() {
        let mut ro = ReadOnly::default();
        assert!(ro.add(ME, ReadId(1), Some(LogIndex(1))));
        ro.take_unsent(0);
        assert!(ro.add(ME, ReadId(2), Some(LogIndex(2))));
        ro.take_unsent(1);
        // Five voters: two answers needed besides this node.
        ro.answered(NodeId(2), 2);
        ro.answered(NodeId(3), 1);
        assert_eq!(reads(&ro.release(ME, &voters(5), None)), [1]);
        // A duplicate of an old answer changes nothing.
        ro.answered(NodeId(3), 1);
        assert!(ro.release(ME, &voters(5), None).is_empty());
        ro.answered(NodeId(4), 2);
        assert_eq!(reads(&ro.release(ME, &voters(5), None)), [2]);
    }

    #[test]
    fn a_single_node_confirms_its_own_rounds_once_sent() {
        let mut ro = ReadOnly::default();
        assert!(ro.add(ME, ReadId(9), Some(LogIndex(3))));
        assert!(ro.release(ME, &[ME], None).is_empty(), "not sent yet");
        ro.take_unsent(0);
        assert_eq!(reads(&ro.release(ME, &[ME], None)), [9]);
    }

    #[test]
    fn reads_before_the_first_commit_of_the_term_wait_for_it() {
        let mut ro = ReadOnly::default();
        assert!(ro.add(ME, ReadId(1), None));
        assert!(ro.add(NodeId(2), ReadId(2), None));
        assert_eq!(ro.take_unsent(0), None, "nothing to confirm yet");
        ro.committed_in_term(LogIndex(8));
        assert_eq!(ro.take_unsent(0), Some(1));
        ro.answered(NodeId(2), 1);
        let released = ro.release(ME, &voters(3), None);
        assert_eq!(reads(&released), [1, 2]);
        assert!(released.iter().all(|r| r.index == LogIndex(8)));
    }

    #[test]
    fn a_lease_runs_from_the_send_of_the_confirmed_round() {
        let mut ro = ReadOnly::default();
        assert!(ro.add(ME, ReadId(1), Some(LogIndex(1))));
        ro.take_unsent(100);
        assert!(!ro.in_lease(100));
        ro.answered(NodeId(2), 1);
        ro.release(ME, &voters(3), Some(8));
        assert!(ro.in_lease(107));
        assert!(!ro.in_lease(108), "measured from the send, not the answer");
        // Periodic heartbeats are rounds too: their answers renew the lease, with no read.
        assert_eq!(ro.broadcast(105), 2);
        ro.answered(NodeId(3), 2);
        assert!(ro.release(ME, &voters(3), Some(8)).is_empty());
        assert!(ro.in_lease(112));
        assert!(!ro.in_lease(113));
    }

    #[test]
    fn a_leader_cut_off_keeps_a_bounded_record_of_its_rounds() {
        let mut ro = ReadOnly::default();
        for tick in 0..5000 {
            ro.broadcast(tick);
        }
        assert!(ro.sent_at.len() <= SENT_ROUNDS_KEPT_MAX);
        ro.answered(NodeId(2), 4999);
        ro.release(ME, &voters(3), Some(10));
        assert!(ro.in_lease(5000));
    }

    #[test]
    fn a_lost_leadership_hands_back_every_read() {
        let mut ro = ReadOnly::default();
        assert!(ro.add(ME, ReadId(1), Some(LogIndex(1))));
        assert!(ro.add(NodeId(3), ReadId(2), None));
        let mut drained = ro.drain();
        drained.sort();
        assert_eq!(drained, [(ME, ReadId(1)), (NodeId(3), ReadId(2))]);
        assert!(ro.drain().is_empty());
    }

    #[test]
    fn a_leader_refuses_reads_beyond_the_pending_bound() {
        let mut ro = ReadOnly::default();
        for read in 0..limits::READS_PENDING_MAX as u64 {
            assert!(ro.add(ME, ReadId(read), None));
        }
        assert!(!ro.add(ME, ReadId(u64::MAX), Some(LogIndex(1))));
        ro.committed_in_term(LogIndex(1));
        assert_eq!(ro.take_unsent(0), Some(1), "the waiting ones are not lost");
    }

    #[test]
    fn lease_is_shorter_than_the_election_timeout_by_the_drift_margin() {
        assert_eq!(ReadOnly::lease_ticks(10, 0), 8);
        assert_eq!(ReadOnly::lease_ticks(10, 10), 7);
        assert_eq!(ReadOnly::lease_ticks(21, 25), 15);
        assert_eq!(ReadOnly::lease_ticks(1, 10), 0);
    }
}
