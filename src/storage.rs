//! Every record on disk, and recovery of a node's persistent state from its log file.
//!
//! A node keeps one append-only file of checksummed records (`codec`'s record layout). A batch
//! is the entries of one `Ready` followed by its hard state, written and synced once:
//!
//! - an `Entry` record at index `i` replaces any entry at `i` or later (that is how conflict
//!   truncation reaches the disk without rewriting it), so replaying the file in order rebuilds
//!   the log;
//! - the last `HardState` record wins.
//!
//! Entries come before the hard state within a batch, so a torn batch that kept the hard state
//! (and with it a commit index) kept every entry the commit index covers.
//!
//! Recovery truncates a torn tail (a crash in the middle of an unsynced append) and refuses,
//! naming the offset, a damaged record that has valid records after it: that is synced data
//! gone bad, and serving it could break Raft's promises.

use crate::codec::{self, CodecError, RecordError, TornTail};
use crate::raft::{Entry, HardState};
use crate::types::LogIndex;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One record of a node's log file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Raft's persistent term, vote and commit index.
    HardState(HardState),
    /// A log entry; replaces any entry at its index or later.
    Entry(Entry),
}

/// A node's persistent state as read back from its log file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last hard state written (default if none).
    pub hard_state: HardState,
    /// The log, contiguous from index 1.
    pub entries: Vec<Entry>,
    /// Bytes of the file that hold valid records; anything after is a torn tail to truncate.
    pub valid_len: u64,
    /// The torn tail found, if any.
    pub torn_tail: Option<TornTail>,
    /// Records read.
    pub record_count: usize,
}

/// A log file that cannot be trusted.
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

/// Appends one persistence batch: `entries` (contiguous) then `hard_state`.
pub fn encode_batch(
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
    for entry in entries {
        codec::encode_record(&RecordRef::Entry(entry), out)?;
    }
    if let Some(hard_state) = hard_state {
        codec::encode_record(&RecordRef::HardState(hard_state), out)?;
    }
    Ok(())
}

/// Borrowing twin of [`Record`], serialized identically, so encoding never clones an entry.
#[derive(Serialize)]
#[serde(rename = "Record")]
enum RecordRef<'a> {
    HardState(&'a HardState),
    Entry(&'a Entry),
}

/// Rebuilds a node's persistent state from the bytes of its log file.
pub fn recover(bytes: &[u8]) -> Result<Recovered, StorageError> {
    let scan = codec::scan_records::<Record>(bytes).map_err(StorageError::Corrupt)?;
    let mut recovered = Recovered {
        valid_len: scan.valid_len,
        torn_tail: scan.torn_tail,
        record_count: scan.records.len(),
        ..Recovered::default()
    };
    for (offset, record) in scan.records {
        match record {
            Record::HardState(hard_state) => recovered.hard_state = hard_state,
            Record::Entry(entry) => replay_entry(&mut recovered.entries, entry, offset)?,
        }
    }
    Ok(recovered)
}

fn replay_entry(entries: &mut Vec<Entry>, entry: Entry, offset: u64) -> Result<(), StorageError> {
    let next = LogIndex(entries.len() as u64 + 1);
    if entry.index.0 == 0 || entry.index > next {
        let reason = format!("entry {} follows entry {}: a gap", entry.index, next.prev());
        return Err(StorageError::Inconsistent { offset, reason });
    }
    entries.truncate(entry.index.0 as usize - 1);
    entries.push(entry);
    Ok(())
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
            encode_batch(hs.as_ref(), entries, &mut out).unwrap();
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
        assert_eq!(recover(&[]).unwrap(), Recovered::default());
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
        encode_batch(Some(&hard_state(1, 0)), &[noop], &mut bytes).unwrap();
        let synced = bytes.len();
        encode_batch(hs.as_ref(), entries, &mut bytes).unwrap();
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
        }
    }
}
