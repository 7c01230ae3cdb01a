//! A node's log file after a crash, a power loss or a bad disk: recovery must never panic, and
//! must never hand back bytes it could not vouch for.
//!
//! The input builds a valid log (batches of snapshot-install records, entries and hard states,
//! through the production encoder, so the fuzzer is not stopped by checksums), split into
//! segments (any of which may end in zeros reserved ahead of its records), then damages the
//! last segment once: a cut (a torn write), maybe followed by reserved zeros (a write torn
//! inside reserved space), or a run of overwritten bytes (a bad sector). Whatever recovery answers, the records
//! it keeps must be exactly the records written before the damage, and a cut is always a torn
//! tail, never corruption. The raw input is also recovered as a file, for the pure-garbage case.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use raftchat::codec;
use raftchat::raft::{Entry, EntryData, HardState, Payload, SnapshotMeta};
use raftchat::storage::{self, Install, Record, Recovered};
use raftchat::types::{LogIndex, NodeId, Term};

#[derive(Debug)]
struct Input {
    /// Whole segments before the last, which is `file`.
    earlier: Vec<Vec<u8>>,
    file: Vec<u8>,
    /// Offset just past each record, in order.
    record_ends: Vec<usize>,
    damage: Damage,
}

#[derive(Debug, Arbitrary)]
enum Damage {
    Cut { at: u32, reserved: u16 },
    Overwrite { at: u32, bytes: Vec<u8> },
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Input> {
        let mut earlier = Vec::new();
        let mut file = Vec::new();
        let mut record_count = 0;
        let mut last_index = 0u64;
        let mut first_index = 1u64;
        let mut term = 1u64;
        for _ in 0..u.int_in_range(0..=12)? {
            if u.ratio(1, 6)? {
                // Begin a new segment; the records so far are whole and synced, maybe followed
                // by zeros reserved for more.
                let reserved = u.int_in_range(0..=64)?;
                file.resize(file.len() + reserved, 0);
                earlier.push(std::mem::take(&mut file));
                record_count = 0;
            }
            // Now and then an installed snapshot: the log starts again after it, keeping a
            // suffix of what it holds there.
            let installed = if u.ratio(1, 5)? {
                term += 1;
                let index = u.int_in_range(first_index..=last_index + 3)?;
                let kept_through = u.int_in_range(index..=last_index.max(index))?;
                first_index = index + 1;
                last_index = kept_through;
                let snapshot = SnapshotMeta {
                    index: LogIndex(index),
                    term: Term(term),
                    size_bytes: 0,
                    checksum: 0,
                };
                Some(Install {
                    snapshot,
                    kept_through: LogIndex(kept_through),
                })
            } else {
                None
            };
            // A batch may rewrite from any index up to one past the end (conflict truncation).
            let first = match installed {
                Some(install) => install.kept_through.0 + 1,
                None => u.int_in_range(first_index..=last_index + 1)?,
            };
            term += u.int_in_range(0..=2)?;
            let mut entries = Vec::new();
            for index in first..first + u.int_in_range(0..=4)? {
                let data = if u.ratio(1, 4)? {
                    EntryData::Noop
                } else {
                    EntryData::Command(Payload::new(Vec::<u8>::arbitrary(u)?))
                };
                entries.push(Entry {
                    term: Term(term),
                    index: LogIndex(index),
                    data,
                });
            }
            if let Some(last) = entries.last() {
                last_index = last.index.0;
            }
            let hard_state = if u.arbitrary()? {
                Some(HardState {
                    term: Term(term),
                    vote: u.arbitrary::<Option<u8>>()?.map(|id| NodeId(u64::from(id))),
                    commit_index: LogIndex(u.int_in_range(0..=last_index)?),
                })
            } else {
                None
            };
            let mut batch = Vec::new();
            storage::encode_batch(
                installed.as_ref(),
                hard_state.as_ref(),
                &entries,
                &mut batch,
            )
            .expect("a small batch encodes");
            record_count += entries.len()
                + usize::from(hard_state.is_some())
                + usize::from(installed.is_some());
            file.extend_from_slice(&batch);
        }
        // Where each record ends, from a scan of the undamaged file (checked against the count
        // of records written).
        let scan = codec::scan_records::<Record>(&file).expect("an undamaged log scans");
        assert_eq!(scan.records.len(), record_count);
        let record_ends: Vec<usize> = scan
            .records
            .iter()
            .skip(1)
            .map(|(offset, _)| *offset as usize)
            .chain((record_count > 0).then_some(file.len()))
            .collect();
        let damage = Damage::arbitrary(u)?;
        Ok(Input {
            earlier,
            file,
            record_ends,
            damage,
        })
    }
}

/// Recovers the earlier segments, then `last`.
fn recover(input: &Input, last: &[u8]) -> Result<Recovered, storage::StorageError> {
    let mut segments: Vec<&[u8]> = input.earlier.iter().map(Vec::as_slice).collect();
    segments.push(last);
    storage::recover_segments(&segments)
}

fuzz_target!(|input: Input| {
    let whole = recover(&input, &input.file).expect("an undamaged log recovers");
    let earlier_records: usize = input
        .earlier
        .iter()
        .map(|segment| {
            codec::scan_records::<Record>(segment)
                .expect("whole")
                .records
                .len()
        })
        .sum();
    assert_eq!(
        whole.record_count,
        earlier_records + input.record_ends.len()
    );
    assert!(whole.torn_tail.is_none());

    let mut damaged = input.file.clone();
    let first_damaged_byte = match &input.damage {
        Damage::Cut { at, reserved } => {
            let at = (*at as usize).min(damaged.len());
            damaged.truncate(at);
            damaged.resize(at + usize::from(*reserved % 4096), 0);
            // Zeros may rewrite what was there: the damage begins where the bytes differ.
            (0..input.file.len())
                .find(|&k| damaged.get(k) != input.file.get(k))
                .unwrap_or(input.file.len())
        }
        Damage::Overwrite { at, bytes } => {
            if damaged.is_empty() {
                return;
            }
            let at = *at as usize % damaged.len();
            let mut changed = None;
            for (k, byte) in bytes.iter().take(8).enumerate() {
                let Some(slot) = damaged.get_mut(at + k) else {
                    break;
                };
                if *slot != *byte {
                    changed.get_or_insert(at + k);
                    *slot = *byte;
                }
            }
            match changed {
                Some(first) => first,
                None => return,
            }
        }
    };
    // The records wholly before the damage are the most recovery may keep.
    let intact = input
        .record_ends
        .iter()
        .take_while(|&&end| end <= first_damaged_byte)
        .count();
    match recover(&input, &damaged) {
        Ok(recovered) => {
            let kept = recovered.record_count - earlier_records;
            assert!(
                kept <= intact,
                "recovery kept {kept} records, but damage at byte {first_damaged_byte} left \
                 {intact} intact"
            );
            let prefix_len = if kept == 0 {
                0
            } else {
                input.record_ends[kept - 1]
            };
            assert_eq!(recovered.valid_len as usize, prefix_len);
            let expected =
                recover(&input, &input.file[..prefix_len]).expect("a record prefix recovers");
            assert_same(&recovered, &expected);
            if matches!(input.damage, Damage::Cut { .. }) {
                assert_eq!(kept, intact, "a cut keeps every whole record");
            }
        }
        Err(error) => {
            assert!(
                matches!(input.damage, Damage::Overwrite { .. }),
                "a cut, with or without zeros after it, is a torn tail, never corruption: {error}"
            );
            let text = error.to_string();
            assert!(!text.contains('\n'), "one line: {text}");
        }
    }
});

fn assert_same(a: &Recovered, b: &Recovered) {
    assert_eq!(a.hard_state, b.hard_state);
    assert_eq!(a.base, b.base);
    assert_eq!(a.entries, b.entries);
    assert_eq!(a.record_count, b.record_count);
}
