//! A snapshot file from disk, as recovery reads it: `decode_snapshot_file` must never panic,
//! must refuse any damage to a valid file (its header and its data are both checksummed), and
//! must hand back exactly what was written when nothing was damaged. Raw garbage is decoded
//! too, for the case of a file that is no snapshot at all.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use raftchat::raft::{Payload, Snapshot};
use raftchat::storage;
use raftchat::types::{LogIndex, Term};

#[derive(Debug, Arbitrary)]
struct Input {
    index: u64,
    term: u64,
    data: Vec<u8>,
    damage: Option<Damage>,
    garbage: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Damage {
    Cut { at: u32 },
    Flip { at: u32, mask: u8 },
    Append { bytes: Vec<u8> },
}

fuzz_target!(|input: Input| {
    let _ = storage::decode_snapshot_file(input.garbage.clone());
    let snapshot = Snapshot::new(
        LogIndex(input.index),
        Term(input.term),
        Payload::new(input.data.clone()),
    );
    let mut file = storage::snapshot_file_header(&snapshot.meta, &snapshot.membership);
    file.extend_from_slice(snapshot.data.as_bytes());
    let damaged = match input.damage {
        None => {
            let decoded = storage::decode_snapshot_file(file).expect("a whole file decodes");
            assert_eq!(decoded, snapshot);
            return;
        }
        Some(Damage::Cut { at }) => {
            let at = at as usize % file.len();
            file[..at].to_vec()
        }
        Some(Damage::Flip { at, mask }) => {
            let mut file = file;
            let at = at as usize % file.len();
            file[at] ^= mask.max(1);
            file
        }
        Some(Damage::Append { bytes }) if !bytes.is_empty() => {
            let mut file = file;
            file.extend_from_slice(&bytes);
            file
        }
        Some(Damage::Append { .. }) => return,
    };
    assert!(
        storage::decode_snapshot_file(damaged).is_err(),
        "a damaged snapshot file was accepted"
    );
});
