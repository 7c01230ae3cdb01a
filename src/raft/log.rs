//! The in-memory Raft log: the entries, how far they are persisted, committed and applied, and
//! the snapshot that stands for the compacted prefix (Raft §7).
//!
//! Invariant: `entries[k].index == first_index + k`, and terms never decrease along the log.
//! Invariant: `first_index - 1 <= applied_index <= commit_index <= last_index()`: only applied
//! entries are ever compacted.
//! Invariant: `first_index - 1 <= stable_index <= handed_index <= last_index()`: entries
//! through `stable_index` are known persisted, those after it through `handed_index` were
//! handed to the host (their write may be under way, or done but not yet counted, see
//! `stable_to`), and the rest go out in the next `Ready`.
//! Invariant: `applied_index <= applying_index <= min(commit_index, stable_index)` once
//! handed out: only entries this node has persisted are handed to the state machine.
//! Invariant: a compacted prefix (`first_index > 1`) is covered by the snapshot:
//! `snapshot.index >= first_index - 1`, and `term(snapshot.index) == snapshot.term` whenever
//! the log still holds that index. Entries between `first_index` and the snapshot's index are
//! kept on purpose, so a follower slightly behind the snapshot catches up from the log.
//!
//! `term(i)` answers for `first_index - 1` too (the compaction point), so the consistency check
//! and fast backtracking work unchanged at the start of a compacted log; below it the log knows
//! no term and the leader must send its snapshot.

use super::confchange::{Membership, Memberships};
use super::message::{Entry, EntryData, Snapshot, SnapshotMeta};
use crate::types::{LogIndex, Term};

/// The replicated log as one node holds it.
#[derive(Debug)]
pub struct RaftLog {
    entries: Vec<Entry>,
    first_index: LogIndex,
    /// Term of the entry at `first_index - 1` (0 when that is the empty prefix).
    prefix_term: Term,
    /// The newest snapshot this node holds (taken or installed), with its bytes, to send.
    snapshot: Option<Snapshot>,
    stable_index: LogIndex,
    /// The last entry handed to the host for persistence.
    handed_index: LogIndex,
    /// Bumped whenever entries handed out are replaced, so that writes handed out before no
    /// longer count (see `stable_to`).
    handed_epoch: u64,
    commit_index: LogIndex,
    /// The last entry handed to the state machine (`applied_index` when none is on its way).
    applying_index: LogIndex,
    applied_index: LogIndex,
    /// The configurations of the snapshot and of the entries held (see `confchange`).
    memberships: Memberships,
}

impl RaftLog {
    /// An empty log.
    pub fn new() -> RaftLog {
        RaftLog {
            entries: Vec::new(),
            first_index: LogIndex(1),
            prefix_term: Term(0),
            snapshot: None,
            stable_index: LogIndex(0),
            handed_index: LogIndex(0),
            handed_epoch: 0,
            commit_index: LogIndex(0),
            applying_index: LogIndex(0),
            applied_index: LogIndex(0),
            memberships: Memberships::new(LogIndex(0), Membership::default()),
        }
    }

    /// A log recovered from storage: the snapshot (if any) and the entries after it, all
    /// stable. The state machine holds the snapshot's state, so the log is applied up to it.
    /// The caller has checked that the entries are contiguous from just after the snapshot
    /// with non-decreasing terms, and that `commit_index` is within the log.
    pub fn restore(
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
        commit_index: LogIndex,
    ) -> RaftLog {
        let mut log = RaftLog::new();
        if let Some(snapshot) = snapshot {
            log.first_index = snapshot.meta.index.next();
            log.prefix_term = snapshot.meta.term;
            log.applied_index = snapshot.meta.index;
            log.memberships = Memberships::new(snapshot.meta.index, snapshot.membership.clone());
            log.snapshot = Some(snapshot);
        }
        for (k, entry) in entries.iter().enumerate() {
            assert_eq!(entry.index.0, log.first_index.0 + k as u64);
            if let EntryData::Membership(membership) = &entry.data {
                log.memberships.appended(entry.index, membership.clone());
            }
        }
        log.entries = entries;
        log.stable_index = log.last_index();
        log.handed_index = log.stable_index;
        log.applying_index = log.applied_index;
        log.commit_index = commit_index.max(log.applied_index);
        assert!(log.commit_index <= log.last_index());
        log
    }

    /// Index of the last entry (or of the compacted prefix when there is none).
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.first_index.0 + self.entries.len() as u64 - 1)
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.prefix_term, |e| e.term)
    }

    /// Index of the first entry the log still holds; everything before it is compacted.
    pub fn first_index(&self) -> LogIndex {
        self.first_index
    }

    /// Term of the entry at `index`, if the log holds it (or it is the compaction point).
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index.0.checked_add(1) == Some(self.first_index.0) {
            return Some(self.prefix_term);
        }
        self.entry(index).map(|e| e.term)
    }

    fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.0.checked_sub(self.first_index.0)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    fn offset(&self, index: LogIndex) -> usize {
        assert!(index >= self.first_index && index <= self.last_index().next());
        (index.0 - self.first_index.0) as usize
    }

    /// Whether the log holds `index` with `term`: the AppendEntries consistency check (§5.3).
    pub fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// The commit index.
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }

    /// Highest index handed to the state machine.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// Highest index known persisted.
    pub fn stable_index(&self) -> LogIndex {
        self.stable_index
    }

    /// The newest snapshot this node holds, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The newest snapshot's metadata, if any.
    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshot.as_ref().map(|s| s.meta)
    }

    /// The configuration in force: the newest in the log, committed or not.
    pub fn membership(&self) -> &Membership {
        self.memberships.latest()
    }

    /// The index of the newest configuration entry (of the snapshot, when the log holds none).
    pub fn membership_index(&self) -> LogIndex {
        self.memberships.latest_index()
    }

    /// The configuration in force at `index`, which must not be before the log's base.
    pub fn membership_at(&self, index: LogIndex) -> &Membership {
        self.memberships.at(index)
    }

    /// A log that has never held a configuration (no snapshot with one, no configuration
    /// entry) starts from `bootstrap`, the cluster file's.
    pub fn bootstrap(&mut self, bootstrap: Membership) {
        if let Some(snapshot) = &mut self.snapshot {
            if snapshot.membership.is_empty() {
                // Sent to followers, it must say what it stands for.
                snapshot.membership = bootstrap.clone();
            }
        }
        let base_index = self.first_index.prev();
        if self.memberships.at(base_index).is_empty() {
            let mut memberships = Memberships::new(base_index, bootstrap);
            for entry in &self.entries {
                if let EntryData::Membership(membership) = &entry.data {
                    memberships.appended(entry.index, membership.clone());
                }
            }
            self.memberships = memberships;
        }
    }

    /// Raft §5.4.1: a candidate's log is at least as up-to-date as ours if its last term is
    /// greater, or equal with an index at least as large.
    pub fn is_up_to_date(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        (last_log_term, last_log_index) >= (self.last_term(), self.last_index())
    }

    /// The largest index `<= index` whose term is `<= term`, if this log can tell. Terms are
    /// non-decreasing along the log, so this is a binary search: it is how both sides of fast
    /// backtracking skip a whole term per round trip. The log knows the term of every entry it
    /// holds and of the compaction point (`first_index - 1`), and no other: `None` says the
    /// answer lies in the compacted prefix. (A compacted prefix is committed, but only a
    /// majority is sure to hold it: a leader cannot assume a follower agrees there.)
    pub fn last_index_with_term_at_most(&self, index: LogIndex, term: Term) -> Option<LogIndex> {
        let index = index.min(self.last_index());
        let compaction_point = self.first_index.prev();
        if index < compaction_point {
            return None;
        }
        if index >= self.first_index {
            let searched = &self.entries[..=self.offset(index)];
            let count = searched.partition_point(|e| e.term <= term);
            if count > 0 {
                return Some(LogIndex(self.first_index.0 + count as u64 - 1));
            }
        }
        (self.prefix_term <= term).then_some(compaction_point)
    }

    /// Appends entries created by this node as leader.
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index().next());
        assert!(entry.term >= self.last_term());
        if let EntryData::Membership(membership) = &entry.data {
            // In force from now on, committed or not (see `confchange`).
            self.memberships.appended(entry.index, membership.clone());
        }
        self.entries.push(entry);
    }

    /// Merges entries received from a leader after a successful consistency check at
    /// `entries[0].index - 1`: entries that already match are kept, the first conflicting
    /// entry and everything after it are replaced (§5.3). Returns the index of the last entry
    /// of `entries`, which now matches the leader. The entries start after the commit index
    /// (the caller drops the committed part), hence after the compacted prefix.
    pub fn merge(&mut self, entries: Vec<Entry>) -> Option<LogIndex> {
        let last_new = entries.last()?.index;
        assert!(
            entries[0].index >= self.first_index,
            "merging into the compacted prefix"
        );
        for entry in entries {
            match self.term(entry.index) {
                Some(term) if term == entry.term => continue,
                #[cfg(feature = "mutants")]
                Some(_)
                    if crate::mutants::is_active(crate::mutants::Mutant::NoConflictTruncation) =>
                {
                    continue
                }
                Some(_) => {
                    // Invariant: committed entries are never overwritten (§5.4, Leader
                    // Completeness).
                    assert!(
                        entry.index > self.commit_index,
                        "truncating a committed entry"
                    );
                    self.truncate_after(entry.index.prev());
                    self.append(entry);
                }
                None => self.append(entry),
            }
        }
        Some(last_new)
    }

    fn truncate_after(&mut self, index: LogIndex) {
        let keep = self.offset(index.next());
        self.entries.truncate(keep);
        self.stable_index = self.stable_index.min(index);
        self.memberships.truncated_after(index);
        // Entries replaced while their write is under way go out again (their replacements'
        // write follows the one under way), and the writes handed out before say nothing
        // more (see `stable_to`).
        #[cfg(feature = "mutants")]
        if crate::mutants::is_active(crate::mutants::Mutant::KeepHandedOnTruncation) {
            return;
        }
        if index < self.handed_index {
            self.handed_index = index;
            self.handed_epoch += 1;
        }
    }

    /// Clones up to `count_max` entries from `from`, stopping once `bytes_max` payload bytes are
    /// reached (always at least one entry when any exist). `from` must not be compacted.
    pub fn entries_from(&self, from: LogIndex, count_max: usize, bytes_max: usize) -> Vec<Entry> {
        if from > self.last_index() {
            return Vec::new();
        }
        let start = self.offset(from);
        let mut bytes = 0usize;
        let mut out = Vec::new();
        for entry in self.entries[start..].iter().take(count_max) {
            bytes = bytes.saturating_add(entry.payload_size_bytes());
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Entries not yet handed to the host for persistence; handing them out is recorded with
    /// [`RaftLog::handed_to`].
    pub fn unhanded_entries(&self) -> &[Entry] {
        let from = self.handed_index.next();
        #[cfg(feature = "mutants")]
        let from = from.min(self.last_index().next());
        &self.entries[self.offset(from)..]
    }

    /// Records that entries through `index` are handed to the host for persistence; returns
    /// the epoch to give back to [`RaftLog::stable_to`] once they are persisted.
    pub fn handed_to(&mut self, index: LogIndex) -> u64 {
        assert!(index <= self.last_index());
        self.handed_index = self.handed_index.max(index);
        self.handed_epoch
    }

    /// Records that a write ending at `index`, handed out in `epoch`, is persisted. Writes are
    /// persisted in the order they were handed out, so every entry through `index` is then on
    /// disk, unless entries handed out were replaced since (a new epoch): the log through
    /// `index` may then differ from what the write held, even where the terms agree again
    /// (replaced, then replaced back by a third leader). Such a write says nothing; the
    /// writes handed out after the replacement follow it, and say it for them all.
    pub fn stable_to(&mut self, index: LogIndex, epoch: u64) {
        if epoch == self.handed_epoch && index > self.stable_index {
            assert!(
                index <= self.handed_index,
                "a write beyond what was handed out"
            );
            self.stable_index = index;
        }
    }

    /// The last entry the state machine may be handed: committed, and persisted here.
    fn appliable_index(&self) -> LogIndex {
        self.commit_index.min(self.stable_index)
    }

    /// Advances the commit index; it never moves backwards.
    pub fn commit_to(&mut self, index: LogIndex) -> bool {
        assert!(index <= self.last_index(), "commit beyond the log");
        if index > self.commit_index {
            self.commit_index = index;
            true
        } else {
            false
        }
    }

    /// Committed entries this node has persisted and not yet handed to the state machine, at
    /// most `count_max`; handing them out is recorded with [`RaftLog::applying_to`].
    pub fn committed_unapplied(&self, count_max: usize) -> &[Entry] {
        let from = self.applying_index.next();
        let through = self.appliable_index();
        if through < from {
            return &[];
        }
        let start = self.offset(from);
        let end = self.offset(through.next());
        &self.entries[start..end.min(start + count_max)]
    }

    /// Records that committed entries through `index` are handed to the state machine.
    pub fn applying_to(&mut self, index: LogIndex) {
        #[cfg(feature = "mutants")]
        let unchecked = crate::mutants::is_active(crate::mutants::Mutant::ApplyBeforeCommit);
        #[cfg(not(feature = "mutants"))]
        let unchecked = false;
        assert!(
            unchecked || index <= self.commit_index,
            "applying an uncommitted entry"
        );
        self.applying_index = self.applying_index.max(index);
    }

    /// Mutant `apply-before-commit`: every unapplied entry, committed or not.
    #[cfg(feature = "mutants")]
    pub fn unapplied_through_last(&self, count_max: usize) -> &[Entry] {
        let start = self.applying_index.next();
        if start > self.last_index() {
            return &[];
        }
        let start = self.offset(start);
        &self.entries[start..self.entries.len().min(start + count_max)]
    }

    /// Mutant `apply-before-commit`: records application without the commit check.
    #[cfg(feature = "mutants")]
    pub fn force_applied_to(&mut self, index: LogIndex) {
        self.applied_index = self.applied_index.max(index);
        self.applying_index = self.applying_index.max(index);
    }

    /// Records that entries up to `index` were handed to the state machine.
    pub fn applied_to(&mut self, index: LogIndex) {
        assert!(index <= self.commit_index, "applying an uncommitted entry");
        assert!(index >= self.applied_index && index <= self.applying_index);
        self.applied_index = index;
    }

    /// Records a snapshot of this node's own state machine, taken at an applied index of its
    /// log, as the one to send to followers that need compacted entries. An older snapshot
    /// than the one held is ignored; returns whether it was kept.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) -> bool {
        let meta = snapshot.meta;
        assert!(
            meta.index <= self.applied_index,
            "snapshot of unapplied state"
        );
        if self
            .snapshot_meta()
            .is_some_and(|held| held.index >= meta.index)
        {
            return false;
        }
        assert!(
            meta.index.next() >= self.first_index,
            "snapshot inside the compacted prefix"
        );
        assert_eq!(
            self.term(meta.index),
            Some(meta.term),
            "snapshot term disagrees"
        );
        self.snapshot = Some(snapshot);
        true
    }

    /// Drops every entry up to `index` (Raft §7); the snapshot must cover them and the state
    /// machine must have applied them. Compacting at or before the start does nothing.
    pub fn compact(&mut self, index: LogIndex) {
        if index < self.first_index {
            return;
        }
        assert!(index <= self.applied_index, "compacting unapplied entries");
        let covered = self.snapshot_meta().is_some_and(|s| s.index >= index);
        #[cfg(feature = "mutants")]
        let covered =
            covered || crate::mutants::is_active(crate::mutants::Mutant::CompactPastSnapshot);
        assert!(covered, "compacting entries no snapshot covers");
        self.prefix_term = self.term(index).expect("a compacted index is in the log");
        self.memberships.compacted_through(index);
        self.entries.drain(..self.offset(index.next()));
        self.first_index = index.next();
        self.stable_index = self.stable_index.max(index);
        self.handed_index = self.handed_index.max(index);
    }

    /// Installs a leader's snapshot that is newer than the commit index (Raft §7): if the log
    /// holds the snapshot's last entry, the entries after it are kept; otherwise the whole log
    /// is discarded. Everything up to the snapshot is then committed and applied. Returns
    /// whether a suffix was kept.
    pub fn install(&mut self, snapshot: Snapshot) -> bool {
        let meta = snapshot.meta;
        #[cfg(feature = "mutants")]
        let older_allowed = crate::mutants::is_active(crate::mutants::Mutant::InstallOlderSnapshot);
        #[cfg(not(feature = "mutants"))]
        let older_allowed = false;
        assert!(
            meta.index > self.commit_index || older_allowed,
            "installing an old snapshot"
        );
        let keep_suffix = self.matches(meta.index, meta.term);
        #[cfg(feature = "mutants")]
        let keep_suffix = keep_suffix
            || (crate::mutants::is_active(crate::mutants::Mutant::KeepConflictingSuffix)
                && self.term(meta.index).is_some());
        if keep_suffix {
            self.entries.drain(..self.offset(meta.index.next()));
        } else {
            self.entries.clear();
        }
        self.first_index = meta.index.next();
        self.prefix_term = meta.term;
        // A kept suffix stays as persisted as it was: the host's record of the install names
        // the persisted part as kept, and the rest goes out after it.
        self.stable_index = self.stable_index.max(meta.index).min(self.last_index());
        self.handed_index = self.stable_index;
        self.commit_index = meta.index;
        self.applying_index = meta.index;
        self.applied_index = meta.index;
        if keep_suffix {
            self.memberships
                .installed(meta.index, snapshot.membership.clone());
        } else {
            self.memberships = Memberships::new(meta.index, snapshot.membership.clone());
        }
        self.snapshot = Some(snapshot);
        keep_suffix
    }

    /// All entries held, for tests and checkers.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl Default for RaftLog {
    fn default() -> RaftLog {
        RaftLog::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::message::EntryData;

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(k, &t)| Entry {
                term: Term(t),
                index: LogIndex(k as u64 + 1),
                data: EntryData::Noop,
            })
            .collect();
        RaftLog::restore(None, entries, LogIndex(0))
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            data: EntryData::Noop,
        }
    }

    #[test]
    fn empty_log_has_index_zero_term_zero() {
        let log = RaftLog::new();
        assert_eq!(log.last_index(), LogIndex(0));
        assert_eq!(log.last_term(), Term(0));
        assert!(log.matches(LogIndex(0), Term(0)));
        assert!(!log.matches(LogIndex(1), Term(0)));
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let log = log_with_terms(&[1, 1, 2]);
        assert!(log.is_up_to_date(LogIndex(3), Term(2)));
        assert!(log.is_up_to_date(LogIndex(1), Term(3)));
        assert!(!log.is_up_to_date(LogIndex(2), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(9), Term(1)));
    }

    #[test]
    fn last_index_with_term_at_most_table() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4, 5]);
        let cases = [
            (7, 5, 7),
            (7, 4, 6),
            (7, 3, 5),
            (5, 9, 5),
            (7, 1, 2),
            (7, 0, 0),
            (99, 2, 5),
            (0, 9, 0),
        ];
        for (index, term, want) in cases {
            assert_eq!(
                log.last_index_with_term_at_most(LogIndex(index), Term(term)),
                Some(LogIndex(want)),
                "index {index} term {term}"
            );
        }
        // Compacted through 3 (term 2): the point itself is known, nothing before it.
        let snapshot = Snapshot::new(LogIndex(3), Term(2), crate::raft::Payload::new(vec![1]));
        let after = [(4, 2), (5, 2), (6, 4), (7, 5)].map(|(index, term)| Entry {
            term: Term(term),
            index: LogIndex(index),
            data: EntryData::Noop,
        });
        let log = RaftLog::restore(Some(snapshot), after.to_vec(), LogIndex(3));
        let cases = [
            (7, 3, Some(5)),
            (9, 2, Some(5)),
            (7, 1, None),
            (3, 2, Some(3)),
            (3, 1, None),
            (2, 9, None),
        ];
        for (index, term, want) in cases {
            assert_eq!(
                log.last_index_with_term_at_most(LogIndex(index), Term(term)),
                want.map(LogIndex),
                "compacted: index {index} term {term}"
            );
        }
    }

    #[test]
    fn merge_keeps_matching_entries_and_truncates_at_first_conflict() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        let last = log.merge(vec![entry(2, 1), entry(3, 3)]);
        assert_eq!(last, Some(LogIndex(3)));
        let terms: Vec<u64> = log.entries().iter().map(|e| e.term.0).collect();
        assert_eq!(terms, vec![1, 1, 3]);
        assert_eq!(
            log.stable_index(),
            LogIndex(2),
            "the replaced entry must be persisted again"
        );
    }

    #[test]
    fn merge_of_an_old_prefix_does_not_truncate_a_longer_log() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        assert_eq!(log.merge(vec![entry(2, 1)]), Some(LogIndex(2)));
        assert_eq!(log.last_index(), LogIndex(4));
    }

    #[test]
    #[should_panic(expected = "truncating a committed entry")]
    fn merge_refuses_to_overwrite_committed_entries() {
        let mut log = log_with_terms(&[1, 1]);
        log.commit_to(LogIndex(2));
        log.merge(vec![entry(2, 2)]);
    }

    #[test]
    fn entries_from_honours_count_and_byte_budgets() {
        let mut log = RaftLog::new();
        for i in 1..=10 {
            let data = EntryData::Command(crate::raft::Payload::new(vec![0; 100]));
            log.append(Entry {
                term: Term(1),
                index: LogIndex(i),
                data,
            });
        }
        assert_eq!(log.entries_from(LogIndex(3), 4, 10_000).len(), 4);
        assert_eq!(log.entries_from(LogIndex(3), 100, 250).len(), 2);
        assert_eq!(
            log.entries_from(LogIndex(3), 100, 10).len(),
            1,
            "one entry always travels"
        );
        assert!(log.entries_from(LogIndex(11), 100, 10_000).is_empty());
    }

    #[test]
    fn committed_unapplied_is_bounded() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        log.commit_to(LogIndex(3));
        assert_eq!(log.committed_unapplied(2).len(), 2);
        log.applying_to(LogIndex(2));
        assert_eq!(log.committed_unapplied(9).len(), 1, "handed out once");
        log.applied_to(LogIndex(2));
        assert_eq!(log.committed_unapplied(9).len(), 1);
    }

    #[test]
    fn only_persisted_committed_entries_are_handed_to_the_state_machine() {
        let mut log = log_with_terms(&[1, 1]);
        log.append(entry(3, 1));
        log.append(entry(4, 1));
        log.commit_to(LogIndex(4));
        assert_eq!(
            log.committed_unapplied(9).len(),
            2,
            "entries 3 and 4 are not on disk"
        );
        let epoch = log.handed_to(LogIndex(4));
        log.stable_to(LogIndex(4), epoch);
        assert_eq!(log.committed_unapplied(9).len(), 4);
    }

    #[test]
    fn a_synced_write_whose_entries_were_replaced_meanwhile_persists_nothing() {
        let mut log = log_with_terms(&[1]);
        log.append(entry(2, 1));
        log.append(entry(3, 1));
        let old = log.handed_to(LogIndex(3));
        assert!(log.unhanded_entries().is_empty());
        log.merge(vec![entry(3, 2)]);
        assert_eq!(log.unhanded_entries(), [entry(3, 2)]);
        log.stable_to(LogIndex(3), old);
        assert_eq!(log.stable_index(), LogIndex(1));
        let new = log.handed_to(LogIndex(3));
        log.stable_to(LogIndex(3), new);
        assert_eq!(log.stable_index(), LogIndex(3));
    }

    /// Replaced, then replaced back by a third leader: the terms agree again, but the first
    /// write must not count, since the second (holding other entries) lands after it.
    #[test]
    fn a_write_does_not_count_after_its_entries_were_replaced_and_replaced_back() {
        let mut log = log_with_terms(&[1]);
        log.append(entry(2, 1));
        log.append(entry(3, 1));
        let first = log.handed_to(LogIndex(3));
        log.merge(vec![entry(2, 2)]);
        let second = log.handed_to(LogIndex(2));
        log.merge(vec![entry(2, 1), entry(3, 1)]);
        log.stable_to(LogIndex(3), first);
        assert_eq!(
            log.stable_index(),
            LogIndex(1),
            "the second write lands after it"
        );
        log.stable_to(LogIndex(2), second);
        assert_eq!(log.stable_index(), LogIndex(1));
        let third = log.handed_to(LogIndex(3));
        log.stable_to(LogIndex(3), third);
        assert_eq!(log.stable_index(), LogIndex(3));
    }
}
