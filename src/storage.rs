//! Every record on disk, the snapshot file format, and recovery of a node's persistent state
//! from its log segments and its newest snapshot. Pure functions over bytes: the node runtime
//! owns the files.
//!
//! The log is a sequence of segment files, each an append-only run of checksummed records
//! (`codec`'s record layout), replayed in order as if they were one file. A batch is what one
//! `Ready` persists, written and synced once: a `Snapshot` record if the node installed one,
//! then its entries, then its hard state.
//!
//! - an `Entry` record at index `i` replaces any entry at `i` or later (that is how conflict
//!   truncation reaches the disk without rewriting it), so replaying in order rebuilds the log;
//! - a `Snapshot` record ([`Install`]) says the log starts again after an installed snapshot,
//!   keeping the entries written before it up to `kept_through` (the suffix Raft §7 keeps
//!   after a matching entry): replay drops every other entry. The record names what it keeps
//!   rather than how to find it, so it never depends on the entry at the snapshot's index
//!   (which compaction may have deleted), and the kept entries, already synced, are never
//!   written again (a torn install batch cannot take them with it);
//! - an entry at an index below every entry replayed so far (a conflict rewrite whose older
//!   segments were deleted) starts the log again from it;
//! - the last `HardState` record wins (every segment starts with one, so a deleted segment
//!   takes nothing with it).
//!
//! Entries come before the hard state within a batch, so a torn batch that kept the hard state
//! (and with it a commit index) kept every entry the commit index covers.
//!
//! Recovery truncates a torn tail (a crash in the middle of an unsynced append) of the last
//! segment, and refuses, naming the offset, a damaged record that has valid records after it:
//! that is synced data gone bad, and serving it could break Raft's promises.
//!
//! A snapshot file is one record holding a [`SnapshotHeader`] (with the metadata, whose checksum
//! covers the state machine's bytes), a record with the configuration at its index (from format
//! 2 on; a format-1 file stands for the bootstrap configuration), then those bytes. It is written under a temporary
//! name, synced, renamed and the directory synced, so a reader finds it whole or not at all;
//! [`decode_snapshot_file`] still checks both checksums, and a file that fails either is skipped
//! for an older snapshot.

use crate::codec::{self, CodecError, RecordError, TornTail};
use crate::raft::{Entry, HardState, Membership, Payload, Persisted, Snapshot, SnapshotMeta};
use crate::types::{LogIndex, Term};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One record of a node's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Raft's persistent term, vote and commit index.
    HardState(HardState),
    /// A log entry; replaces any entry at its index or later.
    Entry(Entry),
    /// The node installed a snapshot (or recovered from one that cut its log off).
    Snapshot(Install),
}

/// An installed snapshot as the log records it: the log starts again after `snapshot`,
/// keeping the entries after it that were written before this record, up to `kept_through`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Install {
    /// The snapshot.
    pub snapshot: SnapshotMeta,
    /// The last entry kept (Raft §7: the suffix after an entry matching the snapshot's);
    /// `snapshot.index` when none is.
    pub kept_through: LogIndex,
}

impl Install {
    /// The record of an install carried out by a `Ready` that persists `unstable` (the
    /// entries not on disk yet) and leaves the log ending at `last_index`: every entry before
    /// the unstable ones is on disk already, so those after the snapshot are kept.
    pub fn after_ready(
        snapshot: SnapshotMeta,
        unstable: &[Entry],
        last_index: LogIndex,
    ) -> Install {
        let kept_through = unstable.first().map_or(last_index, |e| e.index.prev());
        Install {
            snapshot,
            kept_through: kept_through.max(snapshot.index),
        }
    }
}

/// The log as replayed from its segments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last hard state written (default if none).
    pub hard_state: HardState,
    /// The last snapshot the log says was installed, if any: the log starts after it.
    pub base: Option<SnapshotMeta>,
    /// The entries, contiguous.
    pub entries: Vec<Entry>,
    /// Bytes of the last segment that hold valid records; anything after is a torn tail to
    /// truncate.
    pub valid_len: u64,
    /// The torn tail found at the end of the last segment, if any.
    pub torn_tail: Option<TornTail>,
    /// Zero bytes reserved after each segment's records, in order (never written; `codec`'s
    /// rule 0): 0 for a segment that ends in its last record or in a torn tail.
    pub reserved_lens: Vec<u64>,
    /// Records read.
    pub record_count: usize,
}

/// A log that cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// A record is damaged and valid data follows it.
    Corrupt(RecordError),
    /// The records are intact but describe an impossible log.
    Inconsistent {
        /// Offset of the offending record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Corrupt(error) => write!(f, "{error}"),
            StorageError::Inconsistent { offset, reason } => {
                write!(f, "inconsistent record at offset {offset}: {reason}")
            }
        }
    }
}

impl std::error::Error for StorageError {}

/// Appends one persistence batch: `install` (a record that the log starts again after a
/// snapshot), then `entries` (contiguous), then `hard_state`.
pub fn encode_batch(
    install: Option<&Install>,
    hard_state: Option<&HardState>,
    entries: &[Entry],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    for pair in entries.windows(2) {
        assert_eq!(
            pair[1].index,
            pair[0].index.next(),
            "a batch's entries are contiguous"
        );
    }
    if let (Some(install), Some(first)) = (install, entries.first()) {
        assert_eq!(
            first.index,
            install.kept_through.next(),
            "entries follow what is kept"
        );
    }
    // One reservation for the batch, not a doubling of `out` every few records: a record is
    // its header, a few varints and tags (a membership's addresses aside) and its payload.
    let estimate = |entry: &Entry| codec::RECORD_HEADER_BYTES + 32 + entry.payload_size_bytes();
    out.reserve(
        entries.iter().map(estimate).sum::<usize>() + 2 * (codec::RECORD_HEADER_BYTES + 64),
    );
    let start = out.len();
    let result = (|| {
        if let Some(install) = install {
            codec::encode_record(&RecordRef::Snapshot(install), out)?;
        }
        for entry in entries {
            codec::encode_record(&RecordRef::Entry(entry), out)?;
        }
        if let Some(hard_state) = hard_state {
            codec::encode_record(&RecordRef::HardState(hard_state), out)?;
        }
        Ok(())
    })();
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Borrowing twin of [`Record`], serialized identically, so encoding never clones an entry.
#[derive(Serialize)]
#[serde(rename = "Record")]
enum RecordRef<'a> {
    HardState(&'a HardState),
    Entry(&'a Entry),
    Snapshot(&'a Install),
}

/// Rebuilds the log from the bytes of one log file (a single segment).
pub fn recover(bytes: &[u8]) -> Result<Recovered, StorageError> {
    recover_segments(&[bytes])
}

/// Rebuilds the log from its segments, in order. Only the last may end in a torn tail: every
/// earlier one was synced whole before the next was begun. Any may end in reserved space.
pub fn recover_segments(segments: &[&[u8]]) -> Result<Recovered, StorageError> {
    let mut recovered = Recovered::default();
    let mut first_index = LogIndex(1);
    for (k, bytes) in segments.iter().enumerate() {
        let scan = codec::scan_records::<Record>(bytes).map_err(StorageError::Corrupt)?;
        let last = k + 1 == segments.len();
        if let (false, Some(torn)) = (last, scan.torn_tail) {
            let reason = format!(
                "segment {} of {} ends in {} unreadable bytes, but a later segment exists",
                k + 1,
                segments.len(),
                torn.len
            );
            return Err(StorageError::Inconsistent {
                offset: torn.offset,
                reason,
            });
        }
        recovered.valid_len = scan.valid_len;
        recovered.torn_tail = scan.torn_tail;
        recovered.reserved_lens.push(scan.reserved_len);
        recovered.record_count += scan.records.len();
        for (offset, record) in scan.records {
            match record {
                Record::HardState(hard_state) => recovered.hard_state = hard_state,
                Record::Entry(entry) => {
                    replay_entry(&mut recovered.entries, &mut first_index, entry, offset)?
                }
                Record::Snapshot(install) => {
                    replay_install(&mut recovered.entries, &mut first_index, install, offset)?;
                    recovered.base = Some(install.snapshot);
                }
            }
        }
    }
    Ok(recovered)
}

fn replay_entry(
    entries: &mut Vec<Entry>,
    first_index: &mut LogIndex,
    entry: Entry,
    offset: u64,
) -> Result<(), StorageError> {
    if entry.index.0 != 0 && (entries.is_empty() || entry.index < *first_index) {
        // The oldest surviving segment starts wherever compaction left it; and a rewrite below
        // everything replayed (a conflict truncation whose older segments are gone) starts the
        // log again from there. Compaction only deletes what a snapshot covers, and recovery
        // checks the result against the snapshot.
        entries.clear();
        *first_index = entry.index;
    }
    let next = LogIndex(first_index.0 + entries.len() as u64);
    if entry.index > next {
        let reason = format!(
            "entry {} does not follow the log {}..{}: a gap",
            entry.index, first_index, next
        );
        return Err(StorageError::Inconsistent { offset, reason });
    }
    entries.truncate((entry.index.0 - first_index.0) as usize);
    entries.push(entry);
    Ok(())
}

/// The log starts again after the snapshot, with the entries the install kept; they must all
/// be there (they were synced before the record was written, and compaction never deletes an
/// entry after a snapshot recovery may need).
fn replay_install(
    entries: &mut Vec<Entry>,
    first_index: &mut LogIndex,
    install: Install,
    offset: u64,
) -> Result<(), StorageError> {
    let Install {
        snapshot,
        kept_through,
    } = install;
    entries.retain(|e| snapshot.index < e.index && e.index <= kept_through);
    let held = entries.len() as u64;
    if kept_through < snapshot.index || held != kept_through.0 - snapshot.index.0 {
        let reason = format!(
            "an install keeps entries {}..={kept_through}, but the log holds {held} of them",
            snapshot.index.next()
        );
        return Err(StorageError::Inconsistent { offset, reason });
    }
    *first_index = snapshot.index.next();
    Ok(())
}

/// The state a node restarts from, and whether the log on disk must be told so.
#[derive(Clone, Debug)]
pub struct Combined {
    /// The snapshot and the log after it, for Raft.
    pub persisted: Persisted,
    /// The snapshot is newer than any the log records, and the log held entries that do not
    /// continue it (a stale tail, or a log that ends before it): the host must write a
    /// `Snapshot` record before appending anything, or a later recovery would replay those
    /// entries as if the new ones followed them.
    pub reset: bool,
}

/// The state a node restarts from: its newest readable snapshot, and the replayed log after it
/// by the rule of Raft §7 (entries after the snapshot are kept if the log holds the snapshot's
/// last entry, or starts right after it; otherwise every entry is dropped). Fails if the log
/// cannot continue from the snapshot: the log says a newer (or another) snapshot was
/// installed, or its first entry comes after a gap.
pub fn combine(snapshot: Snapshot, log: Recovered) -> Result<Combined, StorageError> {
    let meta = snapshot.meta;
    let gap = |reason: String| StorageError::Inconsistent { offset: 0, reason };
    if let Some(base) = log.base {
        let newer = base.index > meta.index;
        if newer || (base.index == meta.index && base.term != meta.term) {
            return Err(gap(format!(
                "the log continues after a snapshot at {} of {}, but the newest readable \
                 snapshot is at {} of {}",
                base.index, base.term, meta.index, meta.term
            )));
        }
    }
    let mut entries = log.entries;
    let mut reset = false;
    match entries.first().map(|e| e.index) {
        None => {}
        Some(first) if first > meta.index.next() => {
            return Err(gap(format!(
                "the log starts at {first}, after a gap from the snapshot at {}",
                meta.index
            )));
        }
        // Written after the snapshot was taken or installed, on top of it.
        Some(first) if first == meta.index.next() => {}
        Some(first) => {
            let position = (meta.index.0 - first.0) as usize;
            match entries.get(position) {
                Some(entry) if entry.term == meta.term => {
                    entries.drain(..=position);
                }
                _ => {
                    entries.clear();
                    reset = true;
                }
            }
        }
    }
    let persisted = Persisted {
        hard_state: log.hard_state,
        snapshot: Some(snapshot),
        entries,
    };
    Ok(Combined { persisted, reset })
}

/// What a snapshot file says about itself, in its first record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// Must equal [`SNAPSHOT_FILE_VERSION`].
    pub version: u32,
    /// The snapshot's metadata; `checksum` covers the bytes after the header.
    pub meta: SnapshotMeta,
}

/// The layout of snapshot files this build writes. Version 2 added the configuration record;
/// this build reads version 1 too (its configuration is the bootstrap one).
pub const SNAPSHOT_FILE_VERSION: u32 = 2;

/// Why a snapshot file is not usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFileError(pub String);

impl fmt::Display for SnapshotFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SnapshotFileError {}

/// The bytes a snapshot file starts with; the snapshot's data follows them.
pub fn snapshot_file_header(meta: &SnapshotMeta, membership: &Membership) -> Vec<u8> {
    let header = SnapshotHeader {
        version: SNAPSHOT_FILE_VERSION,
        meta: *meta,
    };
    let mut out = Vec::new();
    codec::encode_record(&header, &mut out).expect("a snapshot header always encodes");
    codec::encode_record(membership, &mut out).expect("a configuration always encodes");
    out
}

/// Reads a whole snapshot file: the header's record checksum, its version, the data's size
/// and checksum. Takes the bytes, so the data is not copied.
pub fn decode_snapshot_file(mut bytes: Vec<u8>) -> Result<Snapshot, SnapshotFileError> {
    let fail = |reason: String| Err(SnapshotFileError(reason));
    let (header, header_len) = match codec::decode_first_record::<SnapshotHeader>(&bytes) {
        Ok(Some(decoded)) => decoded,
        Ok(None) => return fail("the header is incomplete".into()),
        Err(error) => return fail(format!("the header is damaged: {error}")),
    };
    let (membership, membership_len) = match header.version {
        1 => (Membership::default(), 0),
        2 => match codec::decode_first_record::<Membership>(&bytes[header_len..]) {
            // Empty stands for the bootstrap configuration (the initial snapshot).
            Ok(Some((membership, _))) if !membership.is_empty() && !membership.is_well_formed() => {
                return fail(format!("the configuration is impossible: {membership:?}"))
            }
            Ok(Some(decoded)) => decoded,
            Ok(None) => return fail("the configuration record is incomplete".into()),
            Err(error) => return fail(format!("the configuration record is damaged: {error}")),
        },
        version => {
            return fail(format!(
                "snapshot file version {version} (this build reads 1 to {SNAPSHOT_FILE_VERSION})"
            ))
        }
    };
    bytes.drain(..header_len + membership_len);
    let snapshot = Snapshot {
        meta: header.meta,
        membership,
        data: Payload::new(bytes),
    };
    if !snapshot.is_intact() {
        return fail(format!(
            "{} bytes of data do not match the header's size {} and checksum",
            snapshot.data.len(),
            header.meta.size_bytes
        ));
    }
    Ok(snapshot)
}

/// Whether `meta` can describe a snapshot a node holds: index 0 only for the empty initial
/// state (term 0), any other index with a term, and an index the log can go on from.
pub fn is_plausible_snapshot(meta: &SnapshotMeta) -> bool {
    (meta.index == LogIndex(0)) == (meta.term == Term(0)) && meta.index.0 <= crate::raft::INDEX_MAX
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Command, Operation};
    use crate::raft::{EntryData, Payload};
    use crate::types::{ClientId, NodeId, Term};
    use proptest::prelude::*;

    fn entry(index: u64, term: u64) -> Entry {
        let data = EntryData::Command(Payload::new(format!("cmd-{index}-{term}").into_bytes()));
        Entry {
            term: Term(term),
            index: LogIndex(index),
            data,
        }
    }

    fn hard_state(term: u64, commit: u64) -> HardState {
        HardState {
            term: Term(term),
            vote: Some(NodeId(1)),
            commit_index: LogIndex(commit),
        }
    }

    fn file(batches: &[(Option<HardState>, Vec<Entry>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (hs, entries) in batches {
            encode_batch(None, hs.as_ref(), entries, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn record_ref_encodes_exactly_like_record() {
        let e = entry(1, 1);
        let mut a = Vec::new();
        let mut b = Vec::new();
        codec::encode_record(&RecordRef::Entry(&e), &mut a).unwrap();
        codec::encode_record(&Record::Entry(e), &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn empty_file_recovers_the_initial_state() {
        let initial = Recovered {
            reserved_lens: vec![0],
            ..Recovered::default()
        };
        assert_eq!(recover(&[]).unwrap(), initial);
    }

    #[test]
    fn batches_replay_to_the_log_and_last_hard_state() {
        let bytes = file(&[
            (Some(hard_state(1, 0)), vec![entry(1, 1), entry(2, 1)]),
            (Some(hard_state(1, 2)), vec![entry(3, 1)]),
        ]);
        let recovered = recover(&bytes).unwrap();
        assert_eq!(recovered.hard_state, hard_state(1, 2));
        assert_eq!(
            recovered.entries,
            vec![entry(1, 1), entry(2, 1), entry(3, 1)]
        );
        assert_eq!(recovered.valid_len, bytes.len() as u64);
    }

    #[test]
    fn a_rewritten_entry_truncates_the_log_from_its_index() {
        let bytes = file(&[
            (
                Some(hard_state(1, 0)),
                vec![entry(1, 1), entry(2, 1), entry(3, 1)],
            ),
            (Some(hard_state(2, 1)), vec![entry(2, 2)]),
        ]);
        assert_eq!(
            recover(&bytes).unwrap().entries,
            vec![entry(1, 1), entry(2, 2)]
        );
    }

    #[test]
    fn a_gap_in_the_log_is_inconsistent() {
        let bytes = file(&[(None, vec![entry(1, 1)]), (None, vec![entry(3, 1)])]);
        assert!(matches!(
            recover(&bytes),
            Err(StorageError::Inconsistent { .. })
        ));
    }

    #[test]
    fn a_torn_last_batch_keeps_every_complete_record_before_it() {
        let first = file(&[(Some(hard_state(1, 0)), vec![entry(1, 1)])]);
        let whole = file(&[
            (Some(hard_state(1, 0)), vec![entry(1, 1)]),
            (Some(hard_state(2, 1)), vec![entry(2, 2), entry(3, 2)]),
        ]);
        for cut in first.len()..whole.len() {
            let recovered = recover(&whole[..cut]).unwrap();
            assert!(!recovered.entries.is_empty(), "cut at {cut}");
            assert!(recovered.entries.len() <= 3);
            if recovered.hard_state.term == Term(2) {
                assert_eq!(
                    recovered.entries.len(),
                    3,
                    "a kept hard state implies kept entries"
                );
            }
            assert_eq!(
                recovered.torn_tail.is_some(),
                recovered.valid_len != cut as u64
            );
        }
    }

    #[test]
    fn corruption_before_valid_records_is_refused_with_its_offset() {
        let one = file(&[(None, vec![entry(1, 1)])]);
        let mut bytes = file(&[(None, vec![entry(1, 1), entry(2, 1), entry(3, 1)])]);
        bytes[one.len() + 12] ^= 0xff;
        let error = recover(&bytes).unwrap_err();
        assert!(
            error.to_string().contains(&format!("offset {}", one.len())),
            "{error}"
        );
    }

    /// A string that is itself a whole, valid record image (a hard state record), all ASCII, so
    /// a client could send it as chat text. Built by the record codec, so it is a forgery
    /// against whatever the record format is.
    fn forged_record_text() -> String {
        for term in 0..128 {
            for commit_index in 0..128 {
                let forged = Record::HardState(HardState {
                    term: Term(term),
                    vote: Some(NodeId(1)),
                    commit_index: LogIndex(commit_index),
                });
                let mut image = Vec::new();
                codec::encode_record(&forged, &mut image).unwrap();
                if image.is_ascii() {
                    let scan = codec::scan_records::<Record>(&image).unwrap();
                    assert_eq!((scan.records.len(), scan.torn_tail), (1, None));
                    return String::from_utf8(image).unwrap();
                }
            }
        }
        panic!("no all-ASCII record image among 16384 hard states");
    }

    /// An entry whose command is a chat message of `message` then "tail".
    fn chat_entry(index: u64, message: &str) -> Entry {
        let command = Command::Client {
            client_id: ClientId(1),
            sequence: index,
            operation: Operation::SendMessage {
                from: "alice".into(),
                to: "bob".into(),
                message: message.to_string() + "tail",
            },
        };
        let data = EntryData::Command(Payload::new(codec::encode_payload(&command).unwrap()));
        Entry {
            term: Term(1),
            index: LogIndex(index),
            data,
        }
    }

    /// A synced first batch, then an unsynced one: `entries` and maybe a hard state. Returns
    /// the file and the length of the synced batch.
    fn file_with_torn_batch(entries: &[Entry], hs: Option<HardState>) -> (Vec<u8>, usize) {
        let mut bytes = Vec::new();
        let noop = Entry {
            term: Term(1),
            index: LogIndex(1),
            data: EntryData::Noop,
        };
        encode_batch(None, Some(&hard_state(1, 0)), &[noop], &mut bytes).unwrap();
        let synced = bytes.len();
        encode_batch(None, hs.as_ref(), entries, &mut bytes).unwrap();
        (bytes, synced)
    }

    /// The offset just past the first copy of `needle` at or after `from`.
    fn end_of(bytes: &[u8], from: usize, needle: &str) -> usize {
        let position = bytes[from..]
            .windows(needle.len())
            .position(|window| window == needle.as_bytes())
            .unwrap();
        from + position + needle.len()
    }

    #[test]
    fn a_torn_record_whose_user_payload_embeds_a_valid_record_is_a_torn_tail() {
        let message = forged_record_text();
        let (bytes, synced) = file_with_torn_batch(&[chat_entry(2, &message)], None);
        let at = end_of(&bytes, synced, &message);
        let recovered = recover(&bytes[..at]).unwrap(); // torn tail, not corruption
        assert_eq!(recovered.valid_len, synced as u64);
        assert_eq!(recovered.entries.len(), 1);
    }

    #[test]
    fn a_cut_anywhere_after_an_embedded_record_in_the_same_payload_is_a_torn_tail() {
        let message = forged_record_text();
        let (bytes, synced) = file_with_torn_batch(&[chat_entry(2, &message)], None);
        for cut in end_of(&bytes, synced, &message)..bytes.len() {
            let recovered = recover(&bytes[..cut]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert_eq!(recovered.valid_len, synced as u64, "cut at {cut}");
        }
        assert_eq!(recover(&bytes).unwrap().entries.len(), 2);
    }

    #[test]
    fn a_cut_in_the_header_after_a_complete_record_embedding_a_valid_record_is_a_torn_tail() {
        let message = forged_record_text();
        let entries = [chat_entry(2, &message), chat_entry(3, &message)];
        let (bytes, synced) = file_with_torn_batch(&entries, Some(hard_state(1, 2)));
        let scan = codec::scan_records::<Record>(&bytes).unwrap();
        let starts: Vec<usize> = scan.records.iter().map(|&(o, _)| o as usize).collect();
        // Each record after a chat entry (the second chat entry, then the hard state), with
        // the chat entry before it: its last byte, in "tail", is flipped in the damaged case,
        // as a power loss may do to the bytes just before the cut.
        for pair in starts.windows(2).filter(|pair| pair[0] >= synced) {
            let (previous, next) = (pair[0], pair[1]);
            for cut in next + 1..next + codec::RECORD_HEADER_BYTES {
                let recovered = recover(&bytes[..cut]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
                assert_eq!(recovered.valid_len, next as u64, "cut at {cut}");
                let mut damaged = bytes[..cut].to_vec();
                damaged[next - 1] ^= 0x20;
                let recovered = recover(&damaged).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
                assert_eq!(
                    recovered.valid_len, previous as u64,
                    "damaged, cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn a_batch_full_of_embedded_records_cut_anywhere_is_a_torn_tail() {
        let message = forged_record_text();
        let entries = [chat_entry(2, &message), chat_entry(3, &message)];
        let (bytes, synced) = file_with_torn_batch(&entries, Some(hard_state(1, 2)));
        for cut in synced..=bytes.len() {
            let recovered = recover(&bytes[..cut]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            let count = recovered.entries.len();
            assert!((1..=3).contains(&count), "cut at {cut}");
            assert_eq!(recovered.entries[1..], entries[..count - 1], "cut at {cut}");
        }
    }

    fn meta(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta {
            index: LogIndex(index),
            term: Term(term),
            size_bytes: 0,
            checksum: 0,
        }
    }

    fn snapshot(index: u64, term: u64) -> Snapshot {
        Snapshot::new(LogIndex(index), Term(term), Payload::new(b"state".to_vec()))
    }

    fn indexes(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries.iter().map(|e| (e.index.0, e.term.0)).collect()
    }

    #[test]
    fn segments_replay_as_one_log_and_start_wherever_compaction_left_them() {
        let mut first = Vec::new();
        encode_batch(
            None,
            Some(&hard_state(1, 0)),
            &[entry(5, 1), entry(6, 1)],
            &mut first,
        )
        .unwrap();
        let mut second = Vec::new();
        encode_batch(None, Some(&hard_state(2, 6)), &[], &mut second).unwrap();
        encode_batch(None, None, &[entry(6, 2), entry(7, 2)], &mut second).unwrap();
        let recovered = recover_segments(&[&first, &second]).unwrap();
        assert_eq!(indexes(&recovered.entries), vec![(5, 1), (6, 2), (7, 2)]);
        assert_eq!(recovered.hard_state, hard_state(2, 6));
        assert_eq!(recovered.valid_len, second.len() as u64);
    }

    #[test]
    fn only_the_last_segment_may_end_torn() {
        let mut first = Vec::new();
        encode_batch(None, None, &[entry(1, 1), entry(2, 1)], &mut first).unwrap();
        let torn = &first[..first.len() - 3];
        assert!(recover_segments(&[&first, torn]).is_ok());
        assert!(matches!(
            recover_segments(&[torn, &first]),
            Err(StorageError::Inconsistent { .. })
        ));
    }

    #[test]
    fn any_segment_may_end_in_reserved_zeros() {
        let mut first = Vec::new();
        encode_batch(None, None, &[entry(1, 1), entry(2, 1)], &mut first).unwrap();
        let records = first.len() as u64;
        first.resize(first.len() + 4096, 0);
        let mut second = Vec::new();
        encode_batch(None, None, &[entry(3, 1)], &mut second).unwrap();
        let second_records = second.len() as u64;
        second.resize(second.len() + 100, 0);
        let recovered = recover_segments(&[&first, &second]).unwrap();
        assert_eq!(indexes(&recovered.entries), vec![(1, 1), (2, 1), (3, 1)]);
        assert_eq!(recovered.valid_len, second_records);
        assert_eq!(
            (recovered.torn_tail, recovered.reserved_lens),
            (None, vec![4096, 100])
        );
        let recovered = recover_segments(&[&second, &first]).unwrap();
        assert_eq!(recovered.valid_len, records);
        assert_eq!(recovered.reserved_lens, vec![100, 4096]);
        // A record written after reserved zeros is not a torn tail: the zeros are damage.
        let mut past = first.clone();
        encode_batch(None, None, &[entry(3, 1)], &mut past).unwrap();
        assert!(matches!(
            recover_segments(&[&past]),
            Err(StorageError::Corrupt(_))
        ));
    }

    fn install(index: u64, term: u64, kept_through: u64) -> Install {
        Install {
            snapshot: meta(index, term),
            kept_through: LogIndex(kept_through),
        }
    }

    #[test]
    fn a_snapshot_record_keeps_what_it_names_and_starts_the_log_again() {
        let log = [entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)];
        let cases = [
            (install(2, 1, 4), vec![(3, 2), (4, 2)]),
            (install(2, 1, 3), vec![(3, 2)]),
            (install(3, 3, 3), vec![]),
            (install(9, 3, 9), vec![]),
        ];
        for (record, kept) in cases {
            let mut bytes = Vec::new();
            encode_batch(None, None, &log, &mut bytes).unwrap();
            encode_batch(Some(&record), Some(&hard_state(3, 9)), &[], &mut bytes).unwrap();
            let recovered = recover(&bytes).unwrap();
            assert_eq!(indexes(&recovered.entries), kept, "{record:?}");
            assert_eq!(recovered.base, Some(record.snapshot));
            // Entries written after the record continue from what it kept.
            let next = record.kept_through.0 + 1;
            encode_batch(None, None, &[entry(next, 3)], &mut bytes).unwrap();
            assert_eq!(recover(&bytes).unwrap().entries.len(), kept.len() + 1);
        }
        // Keeping entries the log does not hold is an inconsistent log, never a silent gap.
        let mut bytes = Vec::new();
        encode_batch(None, None, &log, &mut bytes).unwrap();
        encode_batch(Some(&install(3, 2, 6)), None, &[], &mut bytes).unwrap();
        let error = recover(&bytes).unwrap_err().to_string();
        assert!(error.contains("holds 1 of them"), "{error}");
    }

    #[test]
    fn a_torn_install_batch_keeps_the_entries_its_record_names() {
        // An install that kept 3..4 writes only its record and what is new: a tear anywhere
        // after the record still keeps 3..4, which were synced long before.
        let mut bytes = Vec::new();
        encode_batch(
            None,
            None,
            &[entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)],
            &mut bytes,
        )
        .unwrap();
        let synced = bytes.len();
        let new = [entry(5, 3), entry(6, 3)];
        encode_batch(
            Some(&install(2, 1, 4)),
            Some(&hard_state(3, 2)),
            &new,
            &mut bytes,
        )
        .unwrap();
        for cut in synced..=bytes.len() {
            let recovered = recover(&bytes[..cut]).unwrap();
            let held = indexes(&recovered.entries);
            if recovered.base.is_some() {
                assert_eq!(held[..2], [(3, 2), (4, 2)], "cut at {cut}");
            } else {
                assert_eq!(held.len(), 4, "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_rewrite_below_every_replayed_entry_starts_the_log_again() {
        // Segment k held 50..51 of term 1; the segment before it (40..49) was deleted by
        // compaction; segment k+1 rewrote the log from 40 after a conflict.
        let mut older = Vec::new();
        encode_batch(None, None, &[entry(50, 1), entry(51, 1)], &mut older).unwrap();
        let mut newer = Vec::new();
        encode_batch(None, None, &[entry(40, 2), entry(41, 2)], &mut newer).unwrap();
        let recovered = recover_segments(&[&older, &newer]).unwrap();
        assert_eq!(indexes(&recovered.entries), vec![(40, 2), (41, 2)]);
    }

    #[test]
    fn combine_applies_the_install_rule_at_recovery() {
        let log = |entries: Vec<Entry>| Recovered {
            entries,
            ..Recovered::default()
        };
        let kept = combine(
            snapshot(2, 1),
            log(vec![entry(1, 1), entry(2, 1), entry(3, 2)]),
        )
        .unwrap();
        assert_eq!(indexes(&kept.persisted.entries), vec![(3, 2)]);
        assert!(!kept.reset, "the log on disk continues the snapshot");
        let right_after = combine(snapshot(2, 1), log(vec![entry(3, 2), entry(4, 2)])).unwrap();
        assert_eq!(
            indexes(&right_after.persisted.entries),
            vec![(3, 2), (4, 2)]
        );
        let divergent = combine(
            snapshot(2, 3),
            log(vec![entry(1, 1), entry(2, 1), entry(3, 2)]),
        )
        .unwrap();
        assert!(divergent.persisted.entries.is_empty());
        assert!(
            divergent.reset,
            "the stale tail on disk must be cut off by a record"
        );
        let behind = combine(snapshot(9, 3), log(vec![entry(1, 1)])).unwrap();
        assert!(behind.persisted.entries.is_empty() && behind.reset);
        assert!(!combine(snapshot(9, 3), log(vec![])).unwrap().reset);
        let gap = combine(snapshot(2, 1), log(vec![entry(5, 2)]));
        assert!(gap.unwrap_err().to_string().contains("gap"));
        let newer_base = Recovered {
            base: Some(meta(7, 2)),
            ..Recovered::default()
        };
        assert!(combine(snapshot(2, 1), newer_base).is_err());
        let other_base = Recovered {
            base: Some(meta(2, 2)),
            ..Recovered::default()
        };
        assert!(combine(snapshot(2, 1), other_base).is_err());
    }

    #[test]
    fn a_format_1_snapshot_file_reads_as_the_bootstrap_configuration() {
        #[derive(Serialize)]
        struct FormatOneHeader {
            version: u32,
            meta: SnapshotMeta,
        }
        let snapshot = snapshot(12, 3);
        let header = FormatOneHeader {
            version: 1,
            meta: snapshot.meta,
        };
        let mut file = Vec::new();
        codec::encode_record(&header, &mut file).unwrap();
        file.extend_from_slice(snapshot.data.as_bytes());
        let read = decode_snapshot_file(file).unwrap();
        assert_eq!(read, snapshot);
        assert!(read.membership.is_empty());
    }

    #[test]
    fn a_snapshot_file_round_trips_and_any_damage_is_refused() {
        let voters = [NodeId(1), NodeId(2), NodeId(3)];
        let snapshot = snapshot(12, 3).with_membership(Membership::of_voters(&voters));
        let mut file = snapshot_file_header(&snapshot.meta, &snapshot.membership);
        file.extend_from_slice(snapshot.data.as_bytes());
        assert_eq!(decode_snapshot_file(file.clone()), Ok(snapshot));
        for k in 0..file.len() {
            let mut damaged = file.clone();
            damaged[k] ^= 0x10;
            assert!(decode_snapshot_file(damaged).is_err(), "flip at {k}");
        }
        for cut in 0..file.len() {
            assert!(
                decode_snapshot_file(file[..cut].to_vec()).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(decode_snapshot_file(longer).is_err());
    }

    proptest! {
        #[test]
        fn truncation_anywhere_recovers_a_prefix(cut in 0usize..2000) {
            let bytes = file(&[
                (Some(hard_state(1, 0)), (1..=5).map(|i| entry(i, 1)).collect()),
                (Some(hard_state(2, 3)), (4..=9).map(|i| entry(i, 2)).collect()),
            ]);
            let cut = cut.min(bytes.len());
            let recovered = recover(&bytes[..cut]).unwrap();
            prop_assert!(recovered.valid_len <= cut as u64);
            let full = recover(&bytes).unwrap();
            for e in &recovered.entries {
                // Every recovered entry is one that was written at that index.
                prop_assert!(e.term == Term(1) || full.entries.contains(e));
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = recover(&bytes);
            let _ = decode_snapshot_file(bytes);
        }
    }
}
