//! Bytes from a peer or a client: the frame decoder must answer every input with a frame, "need
//! more", or an error, never a panic, and a frame it accepts must re-encode to bytes that
//! decode to the same frame and are a fixed point: encoding is canonical, decoding nearly so (a
//! configuration's map of members accepts its entries in any order, and repeated, and keeps
//! them sorted and once).
//!
//! Checksums would stop the fuzzer at the frame header, so the input is also decoded as a bare
//! payload (as if its checksum had matched), which reaches every serde path of every message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftchat::codec;
use raftchat::wire::{self, Frame};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, used))) = wire::decode(rest) {
        assert!(used > 0 && used <= rest.len());
        let bytes = round_trip(&frame);
        assert_eq!(
            round_trip(&decoded(&bytes)),
            bytes,
            "encodings are canonical"
        );
        rest = &rest[used..];
    }
    if let Ok(frame) = codec::decode_payload::<Frame>(data) {
        let bytes = round_trip(&frame);
        assert_eq!(
            round_trip(&decoded(&bytes)),
            bytes,
            "encodings are canonical"
        );
    }
});

fn decoded(bytes: &[u8]) -> Frame {
    wire::decode(bytes).expect("decodes").expect("whole").0
}

/// The frame's encoding, checked to decode back to the frame.
fn round_trip(frame: &Frame) -> Vec<u8> {
    let mut bytes = Vec::new();
    wire::encode(frame, &mut bytes).expect("a decoded frame re-encodes");
    let (again, used) = wire::decode(&bytes)
        .expect("an encoded frame decodes")
        .expect("an encoded frame is whole");
    assert_eq!(used, bytes.len());
    assert_eq!(&again, frame);
    bytes
}
