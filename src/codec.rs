//! Generic framing shared by the network wire format and the on-disk log records: a serde value
//! is encoded with bincode into a payload, and the payload is wrapped in a checksummed header.
//!
//! Payload: bincode 2 with little-endian, fixed-width integers (sequence and string lengths are
//! `u64`), and a decode limit of `FRAME_SIZE_BYTES_MAX`, so a garbage length inside a payload
//! cannot make the decoder allocate more than one frame's worth. A payload is never larger than
//! `FRAME_SIZE_BYTES_MAX` bytes, and decoding it must consume every byte.
//!
//! Network frame, `FRAME_HEADER_BYTES` of header then the payload:
//!
//! ```text
//! [payload_len: u32 LE][crc32(payload): u32 LE][payload: payload_len bytes]
//! ```
//!
//! The length comes first so a reader knows how much to buffer as soon as 4 bytes are in; a
//! declared length above the maximum is refused before any of the payload is buffered.
//!
//! Disk record, `RECORD_HEADER_BYTES` of header then the payload:
//!
//! ```text
//! [crc32(payload_len LE bytes ++ payload): u32 LE][payload_len: u32 LE][payload]
//! ```
//!
//! The record checksum covers the length too, so a corrupted length is caught rather than
//! followed. `scan_records` tells a torn tail (a crash mid-append: those bytes were never
//! synced, so they may be truncated) from corruption in the middle (synced data is damaged:
//! refuse): at the first bad record, if a complete checksum-valid record starts at ANY later
//! offset, it is corruption; otherwise it is a torn tail. A zero-filled (preallocated) tail is a
//! torn tail: an all-zero header declares length 0 with checksum 0, but the checksum of four zero
//! length bytes is `0x2144DF1C`, so no offset inside a zero run looks like a valid record.
//! The rule errs towards refusing: a torn record whose surviving payload happens to embed a
//! complete valid record image is reported as corruption, never silently truncated.
//!
//! Invariant: encoders append to the caller's buffer and leave it exactly as it was on error.
//! Invariant: no input bytes make a decoder panic or allocate more than about one frame.
//! This module does no I/O; callers own the buffers, the sockets and the files.

use std::fmt;

use bincode::enc::write::Writer;
use bincode::error::EncodeError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::limits::FRAME_SIZE_BYTES_MAX;

/// Size of a network frame header: payload length, then payload checksum, both `u32` LE.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Size of a disk record header: checksum of length and payload, then payload length.
pub const RECORD_HEADER_BYTES: usize = 8;

// Every payload length must fit the header's u32 length field.
const _: () = assert!(FRAME_SIZE_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(FRAME_HEADER_BYTES == 8 && RECORD_HEADER_BYTES == 8);

/// The one bincode configuration for every payload: LE, fixed-width ints, one frame at most.
pub(crate) fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<{ FRAME_SIZE_BYTES_MAX }>()
}

/// Why a payload or a network frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The payload is (or declares itself) larger than `max` bytes.
    Oversize {
        /// Payload length in bytes, as encoded or as declared by the header.
        len: usize,
        /// The largest payload allowed, `FRAME_SIZE_BYTES_MAX`.
        max: usize,
    },
    /// The payload's checksum differs from the one in the header.
    Checksum {
        /// Checksum stored in the header.
        expected: u32,
        /// Checksum computed over the received payload.
        actual: u32,
    },
    /// The payload is not a valid encoding of the expected type, or has bytes left over.
    Decode(String),
    /// The value cannot be serialized (for example a sequence of unknown length).
    Encode(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Oversize { len, max } => {
                write!(
                    f,
                    "payload of {len} bytes exceeds the maximum of {max} bytes"
                )
            }
            CodecError::Checksum { expected, actual } => write!(
                f,
                "checksum mismatch: header says {expected:#010x}, payload hashes to {actual:#010x}"
            ),
            CodecError::Decode(reason) => write!(f, "payload does not decode: {reason}"),
            CodecError::Encode(reason) => write!(f, "value does not encode: {reason}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Encodes `value` as a bare payload (no header), at most `FRAME_SIZE_BYTES_MAX` bytes.
pub fn encode_payload<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    append_payload(value, &mut out)?;
    Ok(out)
}

/// Decodes a bare payload as one `T`, refusing bytes left over after the value.
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, bincode_config())
        .map_err(|error| CodecError::Decode(error.to_string()))?;
    if used != bytes.len() {
        let trailing = bytes.len() - used;
        return Err(CodecError::Decode(format!(
            "{trailing} trailing bytes after the value"
        )));
    }
    Ok(value)
}

/// Appends one network frame holding `value` to `out`; on error `out` is left unchanged.
pub fn encode_frame<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    // Serialize straight after the placeholder header, then patch it: no second copy.
    let payload_len = match append_payload(value, out) {
        Ok(payload_len) => payload_len,
        Err(error) => {
            out.truncate(start);
            return Err(error);
        }
    };
    let payload_start = start + FRAME_HEADER_BYTES;
    let checksum = crc32fast::hash(&out[payload_start..]);
    out[start..start + 4].copy_from_slice(&length_field(payload_len).to_le_bytes());
    out[start + 4..payload_start].copy_from_slice(&checksum.to_le_bytes());
    // Postcondition: the header we wrote reads back as this frame.
    assert_eq!(
        frame_len(&out[start..]),
        Ok(Some(FRAME_HEADER_BYTES + payload_len))
    );
    Ok(())
}

/// Total size (header and payload) of the frame at the start of `buf`, once its header is in;
/// `Ok(None)` while fewer than `FRAME_HEADER_BYTES` are buffered. Lets a reader reserve.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, CodecError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let payload_len = u32_field(header, 0) as usize;
    if payload_len > FRAME_SIZE_BYTES_MAX {
        return Err(CodecError::Oversize {
            len: payload_len,
            max: FRAME_SIZE_BYTES_MAX,
        });
    }
    Ok(Some(FRAME_HEADER_BYTES + payload_len))
}

/// Decodes the frame at the start of `buf`: `Ok(Some((value, bytes_consumed)))`, or `Ok(None)`
/// if `buf` does not hold a whole frame yet (read more and call again).
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, CodecError> {
    let Some(frame_size) = frame_len(buf)? else {
        return Ok(None);
    };
    let Some(frame) = buf.get(..frame_size) else {
        return Ok(None);
    };
    let (header, payload) = frame.split_at(FRAME_HEADER_BYTES);
    let expected = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let actual = crc32fast::hash(payload);
    if expected != actual {
        return Err(CodecError::Checksum { expected, actual });
    }
    let value = decode_payload(payload)?;
    Ok(Some((value, frame_size)))
}

/// Appends one disk record holding `value` to `out`; on error `out` is left unchanged.
pub fn encode_record<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    // Serialize straight after the placeholder header, then patch it: no second copy.
    let payload_len = match append_payload(value, out) {
        Ok(payload_len) => payload_len,
        Err(error) => {
            out.truncate(start);
            return Err(error);
        }
    };
    let payload_start = start + RECORD_HEADER_BYTES;
    let len_bytes = length_field(payload_len).to_le_bytes();
    let checksum = record_checksum(len_bytes, &out[payload_start..]);
    out[start..start + 4].copy_from_slice(&checksum.to_le_bytes());
    out[start + 4..payload_start].copy_from_slice(&len_bytes);
    // Postcondition: the header we wrote reads back as a valid record of this size.
    assert_eq!(
        check_record_at(out, start).map(<[u8]>::len),
        Ok(payload_len)
    );
    Ok(())
}

/// What `scan_records` found in a log file image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordScan<T> {
    /// Every valid record, in file order, with the byte offset at which its header starts.
    pub records: Vec<(u64, T)>,
    /// Length of the valid prefix: the file should be truncated to this before appending.
    pub valid_len: u64,
    /// The torn tail after the valid prefix, if the file ends in one.
    pub torn_tail: Option<TornTail>,
}

/// Unsynced bytes at the end of a log file, left by a crash mid-append; safe to truncate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// Offset of the first byte of the torn record (equal to `RecordScan::valid_len`).
    pub offset: u64,
    /// Number of bytes from `offset` to the end of the file.
    pub len: u64,
    /// Why the record at `offset` is not valid, for the operator's log.
    pub reason: &'static str,
}

/// Why a log file image cannot be trusted: damage with valid records after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The record at `offset` is damaged but is not a torn tail; refuse to serve or truncate.
    Corrupt {
        /// Offset of the damaged record's header.
        offset: u64,
        /// What is wrong with it, in one line.
        reason: String,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Corrupt { offset, reason } => {
                write!(f, "corrupt record at offset {offset}: {reason}")
            }
        }
    }
}

impl std::error::Error for RecordError {}

/// Walks a whole log file image: every valid record, and either a clean end, a torn tail (no
/// valid record anywhere after the first bad one), or `Corrupt` (a valid record follows it).
pub fn scan_records<T: DeserializeOwned>(bytes: &[u8]) -> Result<RecordScan<T>, RecordError> {
    let mut records = Vec::new();
    let mut offset = 0;
    // Bounded: every iteration consumes at least one header.
    while offset < bytes.len() {
        let payload = match check_record_at(bytes, offset) {
            Ok(payload) => payload,
            Err(reason) => {
                let torn_tail = classify_bad_record(bytes, offset, reason)?;
                return Ok(RecordScan {
                    records,
                    valid_len: offset as u64,
                    torn_tail: Some(torn_tail),
                });
            }
        };
        // A checksum-valid payload that does not decode was written whole: not a torn write.
        let value = decode_payload(payload).map_err(|error| RecordError::Corrupt {
            offset: offset as u64,
            reason: format!("checksum is valid but the {error}"),
        })?;
        records.push((offset as u64, value));
        offset += RECORD_HEADER_BYTES + payload.len();
    }
    assert_eq!(offset, bytes.len());
    Ok(RecordScan {
        records,
        valid_len: bytes.len() as u64,
        torn_tail: None,
    })
}

/// Decides what the first bad record at `offset` is: a torn tail if no valid record starts at
/// any later offset, otherwise corruption in the middle.
fn classify_bad_record(
    bytes: &[u8],
    offset: usize,
    reason: &'static str,
) -> Result<TornTail, RecordError> {
    let next_valid = (offset + 1..bytes.len()).find(|&at| check_record_at(bytes, at).is_ok());
    match next_valid {
        Some(next) => Err(RecordError::Corrupt {
            offset: offset as u64,
            reason: format!("{reason}, yet a valid record follows at offset {next}"),
        }),
        None => Ok(TornTail {
            offset: offset as u64,
            len: (bytes.len() - offset) as u64,
            reason,
        }),
    }
}

/// The payload of the record whose header starts at `offset`, if the header is complete, the
/// length is in bounds and the checksum matches; otherwise why not. Cheap checks come first,
/// because `classify_bad_record` calls this at every offset of a damaged region.
fn check_record_at(bytes: &[u8], offset: usize) -> Result<&[u8], &'static str> {
    let rest = bytes.get(offset..).unwrap_or_default();
    let Some(header) = rest.first_chunk::<RECORD_HEADER_BYTES>() else {
        return Err("incomplete header");
    };
    let payload_len = u32_field(header, 4) as usize;
    if payload_len > FRAME_SIZE_BYTES_MAX {
        return Err("length above the maximum");
    }
    let Some(payload) = rest.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload_len) else {
        return Err("length beyond the end of the file");
    };
    let len_bytes = [header[4], header[5], header[6], header[7]];
    if record_checksum(len_bytes, payload) != u32_field(header, 0) {
        return Err("checksum mismatch");
    }
    Ok(payload)
}

/// The record checksum: crc32 of the length field's bytes followed by the payload.
fn record_checksum(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

/// The little-endian `u32` at byte `at` (0 or 4) of an 8-byte header.
fn u32_field(header: &[u8; 8], at: usize) -> u32 {
    assert!(at == 0 || at == 4);
    u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
}

/// A payload length as the header's `u32` field; `append_payload` bounds it already.
fn length_field(payload_len: usize) -> u32 {
    assert!(payload_len <= FRAME_SIZE_BYTES_MAX);
    payload_len as u32
}

/// Serializes `value` onto the end of `out` and returns the payload length; on error `out` is
/// truncated back to where it was.
fn append_payload<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<usize, CodecError> {
    let start = out.len();
    let mut writer = CappedWriter { out, written: 0 };
    let result = bincode::serde::encode_into_writer(value, &mut writer, bincode_config());
    let written = writer.written;
    if let Err(error) = result {
        out.truncate(start);
        return Err(CodecError::Encode(error.to_string()));
    }
    if written > FRAME_SIZE_BYTES_MAX {
        out.truncate(start);
        return Err(CodecError::Oversize {
            len: written,
            max: FRAME_SIZE_BYTES_MAX,
        });
    }
    assert_eq!(out.len(), start + written);
    Ok(written)
}

/// A bincode writer that appends to a `Vec` until the payload exceeds one frame, then only
/// counts, so an oversize value reports its exact size without buffering more than a frame.
struct CappedWriter<'a> {
    out: &'a mut Vec<u8>,
    written: usize,
}

impl Writer for CappedWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.written = self.written.saturating_add(bytes.len());
        // Invariant: once over the limit, `written` stays over it, so nothing more is appended.
        if self.written <= FRAME_SIZE_BYTES_MAX {
            self.out.extend_from_slice(bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Entry {
        term: u64,
        index: u64,
        data: Vec<u8>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Message {
        Ping,
        Vote { term: u64, granted: bool },
        Text(String),
        Entries(Vec<Entry>),
    }

    type Tuple = (Vec<u8>, String, u64, Option<u32>);

    fn entry(index: u64) -> Entry {
        Entry {
            term: 3,
            index,
            data: vec![index as u8; index as usize * 7],
        }
    }

    fn messages() -> Vec<Message> {
        vec![
            Message::Ping,
            Message::Vote {
                term: 7,
                granted: true,
            },
            Message::Text("héllo, wörld — 你好 🦀".to_string()),
            Message::Entries(vec![entry(1), entry(2)]),
            Message::Entries(Vec::new()),
        ]
    }

    fn frame<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(value, &mut out).expect("test values encode");
        out
    }

    /// A log image of `messages()` and the offset at which each record starts.
    fn log_image() -> (Vec<u8>, Vec<usize>) {
        let mut image = Vec::new();
        let mut offsets = Vec::new();
        for message in messages() {
            offsets.push(image.len());
            encode_record(&message, &mut image).expect("test values encode");
        }
        (image, offsets)
    }

    /// Decodes every whole frame at the front of `buf`, draining what it consumed.
    fn drain_frames<T: DeserializeOwned>(buf: &mut Vec<u8>, values: &mut Vec<T>) {
        while let Some((value, consumed)) = decode_frame::<T>(buf).expect("valid stream") {
            values.push(value);
            buf.drain(..consumed);
        }
    }

    fn frame_round_trip<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(value: &T) {
        let bytes = frame(value);
        assert_eq!(
            decode_frame::<T>(&bytes),
            Ok(Some((decode_self(value), bytes.len())))
        );
    }

    fn record_round_trip<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(value: &T) {
        let mut image = Vec::new();
        encode_record(value, &mut image).expect("test values encode");
        let scan = scan_records::<T>(&image).expect("a fresh record is valid");
        assert_eq!(scan.records, vec![(0, decode_self(value))]);
        assert_eq!(scan.valid_len, image.len() as u64);
        assert_eq!(scan.torn_tail, None);
    }

    /// An owned copy of `value` by way of the payload codec.
    fn decode_self<T: Serialize + DeserializeOwned>(value: &T) -> T {
        decode_payload(&encode_payload(value).expect("encodes")).expect("decodes")
    }

    #[test]
    fn frame_round_trips_a_struct_with_bytes() {
        frame_round_trip(&entry(5));
    }

    #[test]
    fn frame_round_trips_every_enum_variant() {
        for message in messages() {
            frame_round_trip(&message);
        }
    }

    #[test]
    fn frame_round_trips_a_multibyte_string() {
        let text = "ünïcödé 😀 文字 — ok".to_string();
        let bytes = frame(&text);
        assert_eq!(
            decode_frame::<String>(&bytes),
            Ok(Some((text, bytes.len())))
        );
    }

    #[test]
    fn record_round_trips_a_struct_with_bytes() {
        record_round_trip(&entry(4));
    }

    #[test]
    fn record_round_trips_every_enum_variant() {
        for message in messages() {
            record_round_trip(&message);
        }
    }

    #[test]
    fn record_round_trips_a_multibyte_string() {
        record_round_trip(&"ünïcödé 😀 文字".to_string());
    }

    #[test]
    fn payload_uses_fixed_width_little_endian_integers() {
        assert_eq!(encode_payload(&0x0102_0304u32), Ok(vec![4, 3, 2, 1]));
        assert_eq!(
            encode_payload(&vec![9u8]),
            Ok(vec![1, 0, 0, 0, 0, 0, 0, 0, 9])
        );
    }

    #[test]
    fn decode_payload_refuses_trailing_bytes() {
        let mut bytes = encode_payload(&7u32).expect("encodes");
        bytes.push(0);
        assert!(matches!(
            decode_payload::<u32>(&bytes),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn decode_payload_refuses_a_huge_declared_length_without_allocating_it() {
        let bytes = u64::MAX.to_le_bytes();
        assert!(matches!(
            decode_payload::<Vec<u8>>(&bytes),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn frame_header_is_length_then_checksum_of_payload() {
        let bytes = frame(&0xAABB_CCDDu32);
        let payload = [0xDD, 0xCC, 0xBB, 0xAA];
        assert_eq!(bytes[..4], 4u32.to_le_bytes());
        assert_eq!(bytes[4..8], crc32fast::hash(&payload).to_le_bytes());
        assert_eq!(bytes[8..], payload);
    }

    #[test]
    fn record_header_is_checksum_of_length_and_payload_then_length() {
        let mut bytes = Vec::new();
        encode_record(&0xAABB_CCDDu32, &mut bytes).expect("encodes");
        let covered = [4, 0, 0, 0, 0xDD, 0xCC, 0xBB, 0xAA];
        assert_eq!(bytes[..4], crc32fast::hash(&covered).to_le_bytes());
        assert_eq!(bytes[4..], covered);
    }

    #[test]
    fn encode_frame_appends_after_existing_bytes() {
        let mut out = vec![0xEE; 3];
        encode_frame(&entry(2), &mut out).expect("encodes");
        assert_eq!(out[..3], [0xEE; 3]);
        assert_eq!(
            decode_frame::<Entry>(&out[3..]),
            Ok(Some((entry(2), out.len() - 3)))
        );
    }

    #[test]
    fn encode_frame_refuses_an_oversize_payload_and_leaves_the_buffer_unchanged() {
        let mut out = vec![1, 2, 3];
        let value = vec![0u8; FRAME_SIZE_BYTES_MAX];
        let result = encode_frame(&value, &mut out);
        let len = FRAME_SIZE_BYTES_MAX + 8;
        assert_eq!(
            result,
            Err(CodecError::Oversize {
                len,
                max: FRAME_SIZE_BYTES_MAX
            })
        );
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn encode_record_refuses_an_oversize_payload_and_leaves_the_buffer_unchanged() {
        let mut out = vec![1, 2, 3];
        let value = vec![0u8; FRAME_SIZE_BYTES_MAX];
        assert!(matches!(
            encode_record(&value, &mut out),
            Err(CodecError::Oversize { .. })
        ));
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn encode_frame_leaves_the_buffer_unchanged_when_the_value_does_not_serialize() {
        struct UnknownLength;
        impl Serialize for UnknownLength {
            fn serialize<S: serde::Serializer>(&self, _serializer: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("refuses to serialize"))
            }
        }
        let mut out = vec![1, 2, 3];
        assert!(matches!(
            encode_frame(&UnknownLength, &mut out),
            Err(CodecError::Encode(_))
        ));
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn a_payload_of_exactly_the_maximum_size_round_trips() {
        // A Vec<u8> payload is its u64 length and its bytes.
        let value = vec![0x5Au8; FRAME_SIZE_BYTES_MAX - 8];
        let bytes = frame(&value);
        assert_eq!(bytes.len(), FRAME_HEADER_BYTES + FRAME_SIZE_BYTES_MAX);
        assert_eq!(
            decode_frame::<Vec<u8>>(&bytes),
            Ok(Some((value, bytes.len())))
        );
    }

    #[test]
    fn streaming_decode_of_concatenated_frames_is_exact_at_every_split() {
        let mut stream = Vec::new();
        for message in messages() {
            encode_frame(&message, &mut stream).expect("encodes");
        }
        for split in 0..=stream.len() {
            let mut buf = stream[..split].to_vec();
            let mut values = Vec::new();
            drain_frames::<Message>(&mut buf, &mut values);
            buf.extend_from_slice(&stream[split..]);
            drain_frames::<Message>(&mut buf, &mut values);
            assert_eq!(values, messages(), "split at {split}");
            assert!(buf.is_empty(), "split at {split}");
        }
    }

    #[test]
    fn streaming_decode_one_byte_at_a_time_is_exact() {
        let mut stream = Vec::new();
        for message in messages() {
            encode_frame(&message, &mut stream).expect("encodes");
        }
        let (mut buf, mut values) = (Vec::new(), Vec::new());
        for &byte in &stream {
            buf.push(byte);
            drain_frames::<Message>(&mut buf, &mut values);
        }
        assert_eq!(values, messages());
        assert!(buf.is_empty());
    }

    #[test]
    fn decode_frame_waits_on_every_strict_prefix() {
        let bytes = frame(&Message::Entries(vec![entry(3)]));
        for end in 0..bytes.len() {
            assert_eq!(
                decode_frame::<Message>(&bytes[..end]),
                Ok(None),
                "prefix {end}"
            );
        }
    }

    #[test]
    fn frame_len_is_known_once_the_header_is_in() {
        let bytes = frame(&entry(6));
        for end in 0..FRAME_HEADER_BYTES {
            assert_eq!(frame_len(&bytes[..end]), Ok(None));
        }
        for end in FRAME_HEADER_BYTES..=bytes.len() {
            assert_eq!(frame_len(&bytes[..end]), Ok(Some(bytes.len())));
        }
    }

    #[test]
    fn an_oversize_header_is_refused_before_its_payload_arrives() {
        let len = FRAME_SIZE_BYTES_MAX + 1;
        let mut header = (len as u32).to_le_bytes().to_vec();
        header.extend_from_slice(&[0; 4]);
        let oversize = CodecError::Oversize {
            len,
            max: FRAME_SIZE_BYTES_MAX,
        };
        assert_eq!(frame_len(&header), Err(oversize.clone()));
        assert_eq!(decode_frame::<Vec<u8>>(&header), Err(oversize));
    }

    #[test]
    fn a_checksum_mismatch_names_both_checksums() {
        let mut bytes = frame(&7u32);
        bytes[8] ^= 1;
        let expected = crc32fast::hash(&7u32.to_le_bytes());
        let actual = crc32fast::hash(&6u32.to_le_bytes());
        assert_eq!(
            decode_frame::<u32>(&bytes),
            Err(CodecError::Checksum { expected, actual })
        );
    }

    #[test]
    fn flipping_any_bit_of_the_checksum_or_payload_is_an_error() {
        let bytes = frame(&Message::Entries(vec![entry(1), entry(2)]));
        for position in 4..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[position] ^= 1 << bit;
                let result = decode_frame::<Message>(&damaged);
                assert!(result.is_err(), "byte {position} bit {bit}: {result:?}");
            }
        }
    }

    #[test]
    fn flipping_any_bit_of_the_length_is_an_error_or_waits_for_more() {
        let bytes = frame(&Message::Text("length".to_string()));
        for position in 0..4 {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[position] ^= 1 << bit;
                let result = decode_frame::<Message>(&damaged);
                assert!(
                    matches!(result, Err(_) | Ok(None)),
                    "byte {position} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn a_checksum_valid_frame_whose_payload_does_not_decode_is_a_decode_error() {
        let payload = [2u8]; // not a bool
        let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert!(matches!(
            decode_frame::<bool>(&bytes),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn random_garbage_never_panics_the_decoders() {
        let mut rng = ChaCha8Rng::seed_from_u64(262);
        for _ in 0..2000 {
            let len = rng.gen_range(0..200);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if rng.gen_bool(0.5) && bytes.len() >= 8 {
                // A small length makes the checksum and payload paths reachable.
                bytes[..4].copy_from_slice(&(rng.gen_range(0..len as u32)).to_le_bytes());
                bytes[4..8].copy_from_slice(&[0; 4]);
            }
            let _ = decode_frame::<Message>(&bytes);
            let _ = decode_payload::<Message>(&bytes);
            let _ = scan_records::<Message>(&bytes);
        }
    }

    #[test]
    fn an_empty_log_scans_clean() {
        let scan = scan_records::<Message>(&[]).expect("empty is valid");
        assert_eq!(
            scan,
            RecordScan {
                records: Vec::new(),
                valid_len: 0,
                torn_tail: None
            }
        );
    }

    #[test]
    fn a_whole_log_scans_to_every_record_at_its_offset() {
        let (image, offsets) = log_image();
        let scan = scan_records::<Message>(&image).expect("valid log");
        let expected: Vec<_> = offsets.iter().map(|&o| o as u64).zip(messages()).collect();
        assert_eq!(scan.records, expected);
        assert_eq!((scan.valid_len, scan.torn_tail), (image.len() as u64, None));
    }

    #[test]
    fn truncating_a_log_at_every_offset_leaves_the_intact_prefix_and_a_torn_tail() {
        let (image, offsets) = log_image();
        let ends: Vec<usize> = offsets[1..].iter().copied().chain([image.len()]).collect();
        for cut in 0..=image.len() {
            let scan = scan_records::<Message>(&image[..cut]).expect("a truncation is torn");
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            let valid_len = if whole == 0 { 0 } else { ends[whole - 1] };
            let kept: Vec<Message> = scan.records.into_iter().map(|(_, value)| value).collect();
            assert_eq!(kept[..], messages()[..whole], "cut at {cut}");
            assert_eq!(scan.valid_len, valid_len as u64, "cut at {cut}");
            let torn = (cut > valid_len).then_some((valid_len as u64, (cut - valid_len) as u64));
            let reported = scan.torn_tail.map(|tail| (tail.offset, tail.len));
            assert_eq!(reported, torn, "cut at {cut}");
        }
    }

    #[test]
    fn a_damaged_byte_in_a_middle_record_is_corrupt_at_that_records_offset() {
        let (image, offsets) = log_image();
        for (record, pair) in offsets.windows(2).enumerate() {
            for position in pair[0]..pair[1] {
                let mut damaged = image.clone();
                damaged[position] ^= 0x41;
                let result = scan_records::<Message>(&damaged);
                let offset = pair[0] as u64;
                assert!(
                    matches!(&result, Err(RecordError::Corrupt { offset: o, .. }) if *o == offset),
                    "record {record} byte {position}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn a_damaged_byte_in_the_last_record_is_a_torn_tail() {
        let (image, offsets) = log_image();
        let last = offsets[offsets.len() - 1];
        for position in last..image.len() {
            let mut damaged = image.clone();
            damaged[position] ^= 0x41;
            let scan = scan_records::<Message>(&damaged).expect("last record is a torn tail");
            assert_eq!(scan.records.len(), offsets.len() - 1, "byte {position}");
            assert_eq!(scan.valid_len, last as u64);
            assert_eq!(scan.torn_tail.map(|tail| tail.offset), Some(last as u64));
        }
    }

    #[test]
    fn a_zero_header_is_not_a_valid_record() {
        assert_eq!(check_record_at(&[0; 64], 0), Err("checksum mismatch"));
        assert_eq!(record_checksum([0; 4], &[]), 0x2144_DF1C);
    }

    #[test]
    fn a_zero_filled_tail_after_valid_records_is_a_torn_tail() {
        let (mut image, offsets) = log_image();
        let valid_len = image.len() as u64;
        image.resize(image.len() + 4096, 0);
        let scan = scan_records::<Message>(&image).expect("zeros are a torn tail");
        assert_eq!(scan.records.len(), offsets.len());
        assert_eq!(scan.valid_len, valid_len);
        let tail = TornTail {
            offset: valid_len,
            len: 4096,
            reason: "checksum mismatch",
        };
        assert_eq!(scan.torn_tail, Some(tail));
    }

    #[test]
    fn a_zero_filled_file_is_a_torn_tail_at_offset_zero() {
        for len in [1, 7, 8, 9, 4096] {
            let scan = scan_records::<Message>(&vec![0; len]).expect("zeros are a torn tail");
            assert_eq!((scan.records.len(), scan.valid_len), (0, 0));
            assert_eq!(scan.torn_tail.map(|tail| tail.len), Some(len as u64));
        }
    }

    #[test]
    fn a_zero_run_with_valid_records_after_it_is_corrupt() {
        let (image, offsets) = log_image();
        let mut damaged = image[..offsets[2]].to_vec();
        damaged.extend_from_slice(&[0; 512]);
        damaged.extend_from_slice(&image[offsets[2]..]);
        let result = scan_records::<Message>(&damaged);
        let damaged_at = offsets[2] as u64;
        assert!(matches!(result, Err(RecordError::Corrupt { offset, .. }) if offset == damaged_at));
    }

    #[test]
    fn an_incomplete_header_at_the_end_is_a_torn_tail() {
        let (mut image, _) = log_image();
        let valid_len = image.len() as u64;
        image.extend_from_slice(&[1, 2, 3]);
        let scan = scan_records::<Message>(&image).expect("torn");
        let tail = TornTail {
            offset: valid_len,
            len: 3,
            reason: "incomplete header",
        };
        assert_eq!(scan.torn_tail, Some(tail));
    }

    #[test]
    fn a_length_above_the_maximum_with_nothing_valid_after_is_a_torn_tail() {
        let mut image = Vec::new();
        image.extend_from_slice(&[0; 4]);
        image.extend_from_slice(&u32::MAX.to_le_bytes());
        image.extend_from_slice(&[7; 100]);
        let scan = scan_records::<Message>(&image).expect("torn");
        assert_eq!(
            scan.torn_tail.map(|tail| tail.reason),
            Some("length above the maximum")
        );
    }

    #[test]
    fn a_checksum_valid_record_that_does_not_decode_is_corrupt_even_at_the_end() {
        let (mut image, _) = log_image();
        let offset = image.len() as u64;
        encode_record(&99u32, &mut image).expect("encodes"); // 99 is no Message variant
        let result = scan_records::<Message>(&image);
        assert!(matches!(result, Err(RecordError::Corrupt { offset: o, .. }) if o == offset));
    }

    #[test]
    fn error_messages_are_one_line_and_name_the_offset() {
        let error = RecordError::Corrupt {
            offset: 42,
            reason: "checksum mismatch".to_string(),
        };
        assert_eq!(
            error.to_string(),
            "corrupt record at offset 42: checksum mismatch"
        );
        let errors = [
            CodecError::Oversize { len: 9, max: 8 },
            CodecError::Checksum {
                expected: 1,
                actual: 2,
            },
            CodecError::Decode("unexpected end".to_string()),
            CodecError::Encode("no length".to_string()),
        ];
        for error in errors {
            assert!(!error.to_string().contains('\n'), "{error}");
        }
    }

    fn tuple() -> impl Strategy<Value = Tuple> {
        (
            proptest::collection::vec(any::<u8>(), 0..64),
            ".{0,16}",
            any::<u64>(),
            any::<Option<u32>>(),
        )
    }

    proptest! {
        #[test]
        fn frame_round_trips_arbitrary_tuples(value in tuple()) {
            let bytes = frame(&value);
            prop_assert_eq!(decode_frame::<Tuple>(&bytes), Ok(Some((value, bytes.len()))));
        }

        #[test]
        fn record_round_trips_arbitrary_tuples(value in tuple()) {
            record_round_trip(&value);
        }

        #[test]
        fn a_record_image_cut_anywhere_keeps_the_whole_records_before_the_cut(
            values in proptest::collection::vec(tuple(), 1..6),
            cut_fraction in 0.0..=1.0f64,
        ) {
            let mut image = Vec::new();
            let mut ends = Vec::new();
            for value in &values {
                encode_record(value, &mut image).expect("encodes");
                ends.push(image.len());
            }
            let cut = (image.len() as f64 * cut_fraction) as usize;
            let scan = scan_records::<Tuple>(&image[..cut]).expect("a truncation is torn");
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            let valid_len = if whole == 0 { 0 } else { ends[whole - 1] };
            let kept: Vec<Tuple> = scan.records.into_iter().map(|(_, value)| value).collect();
            prop_assert_eq!(&kept[..], &values[..whole]);
            prop_assert_eq!(scan.valid_len, valid_len as u64);
            prop_assert_eq!(scan.torn_tail.is_some(), cut > valid_len);
        }

        #[test]
        fn arbitrary_garbage_never_panics_decode_frame(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = decode_frame::<Message>(&bytes);
            let _ = decode_frame::<Tuple>(&bytes);
        }

        #[test]
        fn a_checksum_valid_frame_of_garbage_is_ok_or_a_decode_error(
            payload in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
            bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
            let result = decode_frame::<Message>(&bytes);
            prop_assert!(matches!(result, Ok(Some(_)) | Err(CodecError::Decode(_))));
        }

        #[test]
        fn arbitrary_garbage_never_panics_scan_records(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = scan_records::<Message>(&bytes);
            let _ = scan_records::<Tuple>(&bytes);
        }

        #[test]
        fn garbage_after_valid_records_never_loses_them(
            garbage in proptest::collection::vec(any::<u8>(), 1..256),
        ) {
            let (mut image, offsets) = log_image();
            let valid_len = image.len() as u64;
            image.extend_from_slice(&garbage);
            if let Ok(scan) = scan_records::<Message>(&image) {
                prop_assert!(scan.records.len() >= offsets.len());
                prop_assert!(scan.valid_len >= valid_len);
            }
        }
    }
}
