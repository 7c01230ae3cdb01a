//! A leader's view of one follower's log (etcd's Progress), kept in the leader's role state.
//!
//! Three modes: `Probe` sends one AppendEntries at a time and waits, used after a rejection or
//! when the leader knows nothing yet; `Replicate` streams AppendEntries optimistically, up to a
//! window of `inflight_appends_max` unacknowledged messages (pipelining); `Snapshot` streams the
//! leader's snapshot in chunks, up to a window of bytes, to a follower that needs entries the
//! leader has compacted (Raft §7), and sends no entries until the follower has installed it.
//!
//! Invariant: `match_index < next_index`.
//! Invariant: in `Replicate`, `inflight` holds the last index of each unacknowledged append, in
//! increasing order, and never more than the window.
//! Invariant: in `Snapshot`, `acked_offset <= next_offset <= size_bytes`.

use super::message::{Snapshot, SnapshotMeta};
use crate::types::LogIndex;
use std::collections::VecDeque;

/// A snapshot on its way to one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotTransfer {
    /// The snapshot being sent; held here, so a newer snapshot taken meanwhile does not cut
    /// the transfer short.
    pub snapshot: Snapshot,
    /// The next byte to send.
    pub next_offset: u64,
    /// Bytes the follower has confirmed, in order.
    pub acked_offset: u64,
    /// Heartbeat answers since the follower last confirmed a byte.
    pub stalled_rounds: u32,
    /// Leader ticks since the follower last answered about this transfer (or since it began).
    pub idle_ticks: u32,
    /// Send a chunk from `acked_offset` even with the window full or nothing left to send (a
    /// chunk was lost, or the follower may have lost what it had: a restart); the window then
    /// refills from there as usual.
    pub probe_due: bool,
}

impl SnapshotTransfer {
    /// The size of the snapshot's bytes.
    pub fn size_bytes(&self) -> u64 {
        self.snapshot.meta.size_bytes
    }

    /// Whether a chunk should go out now, given the window of unconfirmed bytes.
    pub fn wants_chunk(&self, window_bytes: u64) -> bool {
        let room = self.next_offset - self.acked_offset < window_bytes;
        self.probe_due || (self.next_offset < self.size_bytes() && room)
    }

    /// Records that a chunk of `len` bytes from `next_offset` went out.
    pub fn chunk_sent(&mut self, len: u64) {
        self.next_offset += len;
        assert!(self.next_offset <= self.size_bytes());
        self.probe_due = false;
    }
}

/// How the leader is sending to a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// Finding where the logs agree: one append in flight, then wait (`paused`) for its answer
    /// or the next heartbeat response.
    Probe {
        /// True while a probe is unanswered.
        paused: bool,
    },
    /// Logs agree up to `match_index`; entries stream ahead of acknowledgement.
    Replicate,
    /// The follower needs compacted entries: the snapshot streams instead.
    Snapshot(SnapshotTransfer),
}

/// One follower's replication state.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to match the leader's log.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// Probe or replicate.
    pub mode: ProgressMode,
    /// Whether the follower answered since the last check-quorum round.
    pub recent_active: bool,
    /// Highest commit index this follower has been told.
    pub commit_sent: LogIndex,
    /// Highest read index this follower was answered with: it waits to learn that commit.
    pub commit_wanted: LogIndex,
    /// The last index of the first append sent since the last periodic heartbeat.
    interval_append: Option<LogIndex>,
    /// The follower accepted through `interval_append`: it has heard this leader since the
    /// last periodic heartbeat.
    interval_confirmed: bool,
    inflight: VecDeque<LogIndex>,
    /// In replicate mode, send an append even with no new entries: the follower is behind and
    /// something sent may have been lost, so probe the tail and let a rejection tell.
    tail_probe_pending: bool,
}

impl Progress {
    /// A follower the new leader knows nothing about: probe from just after its own last entry.
    pub fn new(last_index: LogIndex) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index: last_index.next(),
            mode: ProgressMode::Probe { paused: false },
            recent_active: false,
            commit_sent: LogIndex(0),
            commit_wanted: LogIndex(0),
            interval_append: None,
            interval_confirmed: false,
            inflight: VecDeque::new(),
            tail_probe_pending: false,
        }
    }

    /// Whether the leader may send another append now.
    pub fn can_send(&self, inflight_appends_max: usize) -> bool {
        match self.mode {
            ProgressMode::Probe { paused } => !paused,
            ProgressMode::Replicate => self.inflight.len() < inflight_appends_max,
            ProgressMode::Snapshot(_) => false,
        }
    }

    /// Whether the leader should send an append now, given its last index: a probe whenever
    /// unpaused, entries whenever the window has room and there are some to send.
    pub fn wants_append(&self, last_index: LogIndex, inflight_appends_max: usize) -> bool {
        if !self.can_send(inflight_appends_max) {
            return false;
        }
        match self.mode {
            ProgressMode::Probe { .. } => true,
            ProgressMode::Replicate => self.next_index <= last_index || self.tail_probe_pending,
            ProgressMode::Snapshot(_) => false,
        }
    }

    /// Records an append ending at `last_index` was sent.
    pub fn sent(&mut self, last_index: LogIndex, entry_count: usize) {
        self.interval_append.get_or_insert(last_index);
        match &mut self.mode {
            ProgressMode::Probe { paused } => *paused = true,
            ProgressMode::Replicate => {
                if entry_count > 0 {
                    assert!(last_index.next() > self.next_index);
                    self.next_index = last_index.next();
                }
                self.inflight.push_back(last_index);
                self.tail_probe_pending = false;
            }
            ProgressMode::Snapshot(_) => unreachable!("no appends while a snapshot streams"),
        }
    }

    /// Handles an acceptance up to `match_index`. Returns false for a stale one.
    pub fn accepted(&mut self, match_index: LogIndex) -> bool {
        if self
            .interval_append
            .is_some_and(|first| first <= match_index)
        {
            self.interval_confirmed = true;
        }
        while self.inflight.front().is_some_and(|&i| i <= match_index) {
            self.inflight.pop_front();
        }
        if match_index <= self.match_index {
            if let ProgressMode::Probe { paused } = &mut self.mode {
                // A probe answered with nothing new still means the follower is listening.
                *paused = false;
            }
            return false;
        }
        self.match_index = match_index;
        self.next_index = self.next_index.max(match_index.next());
        if self
            .pending_snapshot()
            .is_some_and(|pending| match_index < pending.index)
        {
            // A late answer to an append sent before the transfer began: the follower still
            // needs the snapshot.
            return true;
        }
        if !matches!(self.mode, ProgressMode::Replicate) {
            // After a probe, or once the follower installed the snapshot (or found it already
            // had everything in it), the logs agree at `match_index`: stream from there.
            self.become_replicate();
        }
        true
    }

    /// Handles a rejection of the append whose prev index was `rejected_prev_index`; `retry_from`
    /// is where the leader computed the logs may agree. Returns false for a stale rejection.
    pub fn rejected(&mut self, rejected_prev_index: LogIndex, retry_from: LogIndex) -> bool {
        match self.mode {
            ProgressMode::Replicate if rejected_prev_index <= self.match_index => false,
            ProgressMode::Probe { .. } if rejected_prev_index.next() != self.next_index => false,
            // Sent before the transfer began: the snapshot decides where the logs meet.
            ProgressMode::Snapshot(_) => false,
            _ => {
                self.become_probe();
                self.next_index = retry_from.max(self.match_index.next());
                true
            }
        }
    }

    /// Ends a heartbeat interval (a periodic heartbeat is due): whether the follower accepted
    /// an append sent during it. Such a follower has heard this leader since the last
    /// heartbeat, and its answer showed it alive.
    pub fn end_heartbeat_interval(&mut self) -> bool {
        #[cfg(feature = "mutants")]
        if crate::mutants::is_active(crate::mutants::Mutant::KeepHeartbeatMarks) {
            return self.interval_confirmed;
        }
        self.interval_append = None;
        std::mem::take(&mut self.interval_confirmed)
    }

    /// A heartbeat answer: the follower is alive, so a paused probe may go again, and a full
    /// pipeline whose head was lost frees one slot so the loss is discovered by a rejection.
    pub fn heartbeat_answered(&mut self, inflight_appends_max: usize, last_index: LogIndex) {
        match &mut self.mode {
            ProgressMode::Probe { paused } => *paused = false,
            ProgressMode::Replicate if self.match_index < last_index => {
                if self.inflight.len() >= inflight_appends_max {
                    self.inflight.pop_front();
                }
                self.tail_probe_pending = true;
            }
            ProgressMode::Replicate => {}
            ProgressMode::Snapshot(transfer) => {
                // No byte confirmed for two rounds: a chunk (or its answer) was lost, or the
                // follower restarted and lost what it had. Send again from the last confirmed
                // byte (a probe chunk, then the window refills); the answer tells which.
                transfer.stalled_rounds += 1;
                if transfer.stalled_rounds >= 2 {
                    transfer.stalled_rounds = 0;
                    transfer.next_offset = transfer.acked_offset;
                    transfer.probe_due = true;
                }
            }
        }
    }

    /// Starts streaming `snapshot` to this follower, from its first byte.
    pub fn become_snapshot(&mut self, snapshot: Snapshot) {
        self.inflight.clear();
        self.tail_probe_pending = false;
        self.mode = ProgressMode::Snapshot(SnapshotTransfer {
            snapshot,
            next_offset: 0,
            acked_offset: 0,
            stalled_rounds: 0,
            idle_ticks: 0,
            probe_due: false,
        });
    }

    /// Whether a snapshot transfer is under way that its follower has begun to receive and
    /// answered about within the last `idle_ticks_max` ticks (while it checks and installs a
    /// whole snapshot it still answers the leader's probes): only such a transfer holds the
    /// leader's compaction back.
    pub fn is_transfer_active(&self, idle_ticks_max: u32) -> bool {
        match &self.mode {
            ProgressMode::Snapshot(transfer) => {
                transfer.acked_offset > 0 && transfer.idle_ticks < idle_ticks_max
            }
            _ => false,
        }
    }

    /// The snapshot transfer under way to this follower, if any.
    pub fn snapshot_transfer(&mut self) -> Option<&mut SnapshotTransfer> {
        match &mut self.mode {
            ProgressMode::Snapshot(transfer) => Some(transfer),
            _ => None,
        }
    }

    /// The snapshot being sent to this follower, if any.
    pub fn pending_snapshot(&self) -> Option<SnapshotMeta> {
        match &self.mode {
            ProgressMode::Snapshot(transfer) => Some(transfer.snapshot.meta),
            _ => None,
        }
    }

    /// The follower holds `next_offset` bytes of `snapshot`; with `resend`, it wants the
    /// bytes from there again. An answer about another snapshot is stale and ignored.
    pub fn snapshot_acked(&mut self, snapshot: SnapshotMeta, next_offset: u64, resend: bool) {
        let ProgressMode::Snapshot(transfer) = &mut self.mode else {
            return;
        };
        if transfer.snapshot.meta != snapshot || next_offset > transfer.size_bytes() {
            return;
        }
        transfer.idle_ticks = 0;
        let started_over = next_offset < transfer.acked_offset;
        if next_offset > transfer.acked_offset {
            transfer.acked_offset = next_offset;
            transfer.stalled_rounds = 0;
        }
        if resend || started_over {
            // A gap (a chunk lost or overtaken: the follower holds everything before it, which
            // may be more than was confirmed so far), or the follower started over. Send again
            // from where it is.
            transfer.acked_offset = next_offset;
            transfer.next_offset = next_offset;
            transfer.stalled_rounds = 0;
        }
        transfer.next_offset = transfer.next_offset.max(transfer.acked_offset);
    }

    fn become_probe(&mut self) {
        self.mode = ProgressMode::Probe { paused: false };
        self.inflight.clear();
    }

    fn become_replicate(&mut self) {
        self.mode = ProgressMode::Replicate;
        self.next_index = self.match_index.next();
        self.inflight.clear();
        self.tail_probe_pending = false;
    }

    /// Unacknowledged appends, for tests and status.
    pub fn inflight_count(&self) -> usize {
        self.inflight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_pauses_after_one_send_until_answered() {
        let mut p = Progress::new(LogIndex(5));
        assert!(p.can_send(4));
        p.sent(LogIndex(5), 0);
        assert!(!p.can_send(4));
        p.heartbeat_answered(4, LogIndex(5));
        assert!(p.can_send(4));
    }

    #[test]
    fn acceptance_moves_probe_to_replicate() {
        let mut p = Progress::new(LogIndex(5));
        p.sent(LogIndex(5), 0);
        assert!(p.accepted(LogIndex(5)));
        assert_eq!(p.mode, ProgressMode::Replicate);
        assert_eq!(p.next_index, LogIndex(6));
    }

    #[test]
    fn replicate_window_bounds_inflight_appends() {
        let mut p = Progress::new(LogIndex(0));
        p.become_replicate();
        for i in 1..=3 {
            assert!(p.can_send(3));
            p.sent(LogIndex(i), 1);
        }
        assert!(!p.can_send(3));
        assert!(p.accepted(LogIndex(2)));
        assert_eq!(p.inflight_count(), 1);
        assert!(p.can_send(3));
    }

    #[test]
    fn stale_rejection_in_replicate_is_ignored() {
        let mut p = Progress::new(LogIndex(0));
        p.sent(LogIndex(0), 0);
        p.accepted(LogIndex(3));
        assert!(!p.rejected(LogIndex(2), LogIndex(1)));
        assert_eq!(p.mode, ProgressMode::Replicate);
    }

    #[test]
    fn rejection_falls_back_to_probe_never_below_match() {
        let mut p = Progress::new(LogIndex(0));
        p.sent(LogIndex(0), 0);
        p.accepted(LogIndex(3));
        p.sent(LogIndex(7), 4);
        assert!(p.rejected(LogIndex(7), LogIndex(2)));
        assert_eq!(p.mode, ProgressMode::Probe { paused: false });
        assert_eq!(p.next_index, LogIndex(4));
    }

    #[test]
    fn full_window_frees_a_slot_on_heartbeat_answer() {
        let mut p = Progress::new(LogIndex(0));
        p.sent(LogIndex(0), 0);
        p.accepted(LogIndex(1));
        p.sent(LogIndex(2), 1);
        p.sent(LogIndex(3), 1);
        assert!(!p.can_send(2));
        p.heartbeat_answered(2, LogIndex(3));
        assert!(p.can_send(2));
        assert!(
            p.wants_append(LogIndex(3), 2),
            "a behind follower gets a tail probe"
        );
    }

    fn snapshot(size: usize) -> Snapshot {
        Snapshot::new(
            LogIndex(9),
            crate::types::Term(2),
            crate::raft::Payload::new(vec![7; size]),
        )
    }

    fn transfer(p: &mut Progress) -> SnapshotTransfer {
        p.snapshot_transfer().unwrap().clone()
    }

    #[test]
    fn snapshot_chunks_fill_the_window_and_acks_slide_it() {
        let mut p = Progress::new(LogIndex(20));
        p.become_snapshot(snapshot(100));
        assert!(
            !p.wants_append(LogIndex(20), 4),
            "no entries while the snapshot streams"
        );
        let t = p.snapshot_transfer().unwrap();
        let window = 20;
        while t.wants_chunk(window) {
            t.chunk_sent(10);
        }
        assert_eq!(t.next_offset, 20);
        let meta = t.snapshot.meta;
        p.snapshot_acked(meta, 10, false);
        assert_eq!(transfer(&mut p).acked_offset, 10);
        assert!(transfer(&mut p).wants_chunk(window));
        let stale = SnapshotMeta {
            index: LogIndex(3),
            ..meta
        };
        p.snapshot_acked(stale, 0, true);
        assert_eq!(
            transfer(&mut p).acked_offset,
            10,
            "an answer about another snapshot"
        );
        p.snapshot_acked(meta, 10, true);
        assert_eq!(
            transfer(&mut p).next_offset,
            10,
            "a gap: resend from the ack"
        );
        let t = p.snapshot_transfer().unwrap();
        while t.wants_chunk(window) {
            t.chunk_sent(5);
        }
        assert_eq!(transfer(&mut p).next_offset, 30);
        p.snapshot_acked(meta, 15, true);
        assert_eq!(
            (transfer(&mut p).acked_offset, transfer(&mut p).next_offset),
            (15, 15),
            "a gap past what was confirmed: resend from where the follower is"
        );
        p.snapshot_acked(meta, 0, false);
        assert_eq!(
            (transfer(&mut p).acked_offset, transfer(&mut p).next_offset),
            (0, 0),
            "the follower started over"
        );
    }

    #[test]
    fn a_stalled_snapshot_transfer_probes_after_two_silent_rounds() {
        let mut p = Progress::new(LogIndex(20));
        p.become_snapshot(snapshot(30));
        let t = p.snapshot_transfer().unwrap();
        t.chunk_sent(10);
        t.chunk_sent(10);
        p.heartbeat_answered(4, LogIndex(20));
        assert!(!transfer(&mut p).probe_due);
        p.heartbeat_answered(4, LogIndex(20));
        let t = transfer(&mut p);
        assert!(t.probe_due && t.next_offset == 0);
        // All bytes confirmed, the install pending: the probe is an empty chunk at the end.
        let meta = t.snapshot.meta;
        p.snapshot_acked(meta, 30, false);
        p.heartbeat_answered(4, LogIndex(20));
        p.heartbeat_answered(4, LogIndex(20));
        let t = transfer(&mut p);
        assert!(t.probe_due && t.next_offset == 30);
    }

    #[test]
    fn installing_the_snapshot_moves_the_follower_to_replicate() {
        let mut p = Progress::new(LogIndex(20));
        p.become_snapshot(snapshot(30));
        assert!(
            p.accepted(LogIndex(5)),
            "a late answer updates the match index"
        );
        assert!(
            p.pending_snapshot().is_some(),
            "but the follower still needs the snapshot"
        );
        assert!(p.accepted(LogIndex(9)));
        assert_eq!(p.mode, ProgressMode::Replicate);
        assert_eq!(p.next_index, LogIndex(10));
        assert!(
            !p.rejected(LogIndex(3), LogIndex(1)),
            "a rejection below the match index is stale"
        );
    }
}
