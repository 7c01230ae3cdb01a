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
//! [header_crc: u32 LE][payload_len: u32 LE][payload_crc: u32 LE][payload: payload_len bytes]
//!
//! header_crc  = crc32(RECORD_HEADER_DOMAIN ++ payload_len LE ++ payload_crc LE)
//! payload_crc = crc32(payload)
//! ```
//!
//! The header carries a checksum of its own, so a reader can trust a record's length, and with
//! it where the next record starts, before reading a byte of the payload. That matters because
//! payloads hold bytes that clients choose (chat text lands byte for byte inside `Entry`
//! records), and a client can make them spell out a whole, checksum-valid record. The header
//! checksum starts from a fixed 4-byte tag, `RECORD_HEADER_DOMAIN`, so a checksum an encoder
//! computed over payload bytes (a record's or a network frame's) does not pass as a header's.
//!
//! `scan_records` reads records from offset 0 and, at the first one that is not valid, tells a
//! torn tail (a crash mid-append: those bytes were never synced, so they may be truncated) from
//! corruption (synced data is damaged: refuse to serve or truncate). The contract, at offset `o`:
//!
//! 1. Fewer than `RECORD_HEADER_BYTES` bytes left: a torn tail ("incomplete header").
//! 2. The header checksum matches, so the length is trusted.
//!    - 2a. A length above `FRAME_SIZE_BYTES_MAX`: corrupt. No encoder writes one, so a header
//!      that checks and says so was damaged beyond what its checksum catches.
//!    - 2b. `o + RECORD_HEADER_BYTES + len` beyond the end of the file: a torn tail (the append
//!      was cut short).
//!    - 2c. The payload checksum matches: a record, decoded, and the scan goes on at its end. A
//!      payload that does not decode is corrupt: a checksum-valid payload was written whole,
//!      so it is not a torn write.
//!    - 2d. The payload checksum does not match: the damaged record ends at `e`, where the next
//!      record starts. If `e` is the end of the file, a torn tail (the interrupted record was
//!      the last one). Otherwise the bytes at `e` are judged by these same rules, without
//!      decoding: a complete record with both checksums matching is corrupt at `o` (valid
//!      data follows the damage, so synced data went bad); an incomplete header, or a valid
//!      header whose payload runs past the end, is a torn tail at `o` (the batch was cut); a
//!      payload that fails its checksum again moves on to its own end; an oversize length is
//!      corrupt; a header that fails its checksum goes to rule 3, searching from `e`.
//! 3. The header checksum does not match (at `o`, or at `e` in 2d): nothing trustworthy says
//!    where the next record starts, so every later offset is tried for a valid record (header
//!    checksum, length in bounds, payload inside the file, payload checksum; cheap checks
//!    first). One found: corrupt at `o`. None: a torn tail at `o`.
//!
//! 0. From `o` to the end of the file every byte is zero: reserved space, not damage. A log
//!    segment is extended with zeros ahead of its records, so a sync of a record changes no
//!    file size; the scan ends cleanly at `o`, and the zeros are reported as `reserved_len`.
//!    No offset in a zero run holds a valid header (an all-zero header declares length 0 and
//!    payload checksum 0, the checksum of no bytes, but its header checksum is 0 while that of
//!    two zero fields is `0x0CEB_347C`), so zeros are never mistaken for records.
//!
//! A torn write into reserved space leaves the interrupted record's first bytes followed by
//! zeros: a torn tail by rules 1 to 3, whose `written_len` counts only up to its last non-zero
//! byte, so the zeros after it are not taken for a longer tear than one write could leave.
//!
//! Rules 1 and 2 never read inside a payload: with a trusted header they step over it. Only
//! rule 3 reads payload bytes as candidate headers, so a record forged inside chat text can
//! only be found there, after a header failed its checksum (or a damaged payload was followed by
//! one). A crash that cuts an append short leaves every header before the cut whole, so the
//! forgery cannot turn a torn tail into corruption. The residual risk, stated plainly: a damaged
//! header (flipped in place, or left unwritten by a crash that persisted a later page of the
//! batch before an earlier one) followed by a torn payload holding a record forged with both a
//! header checksum in this domain and a payload checksum is reported as corruption, and the node
//! refuses to start until an operator looks. That errs towards refusing, and rule 3 never
//! discards a valid record. (Out-of-order persistence that keeps a whole later record is
//! reported as corruption anyway, forged or not.) Closing the gap needs something a client
//! cannot know, such as a per-file secret mixed into the header checksum.
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

/// Size of a disk record header: header checksum, payload length, payload checksum, each `u32` LE.
pub const RECORD_HEADER_BYTES: usize = 12;

/// The bytes a record's header checksum starts from, so that it lives in a domain of its own:
/// a checksum of payload bytes never doubles as a header checksum.
const RECORD_HEADER_DOMAIN: [u8; 4] = *b"RHDR";

// Every payload length must fit the header's u32 length field.
const _: () = assert!(FRAME_SIZE_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(FRAME_HEADER_BYTES == 8 && RECORD_HEADER_BYTES == 12);

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
    let header = record_header(length_field(payload_len), &out[payload_start..]);
    out[start..payload_start].copy_from_slice(&header);
    // Postcondition: the header we wrote reads back as a valid record of this size.
    assert!(
        matches!(record_at(out, start), RecordAt::Valid(payload) if payload.len() == payload_len)
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
    /// Zero bytes after the valid prefix, if every byte there is zero (rule 0): space reserved
    /// ahead of the records, never written. 0 when the file ends in a torn tail.
    pub reserved_len: u64,
}

/// Unsynced bytes at the end of a log file, left by a crash mid-append; safe to truncate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// Offset of the first byte of the torn record (equal to `RecordScan::valid_len`).
    pub offset: u64,
    /// Number of bytes from `offset` to the end of the file.
    pub len: u64,
    /// Number of bytes from `offset` to the last non-zero byte of the file: what the crash
    /// left of the interrupted write, without the reserved zeros after it.
    pub written_len: u64,
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

/// Walks a whole log file image: every valid record, and either a clean end, a torn tail, or
/// `Corrupt`, by the rules in the module doc (rules 1 to 3 there are this function's contract).
pub fn scan_records<T: DeserializeOwned>(bytes: &[u8]) -> Result<RecordScan<T>, RecordError> {
    let mut records = Vec::new();
    let mut offset = 0;
    // Bounded: every iteration consumes at least one header.
    while offset < bytes.len() {
        let payload = match record_at(bytes, offset) {
            RecordAt::Valid(payload) => payload,
            bad => {
                let rest = &bytes[offset..];
                if rest.iter().all(|&byte| byte == 0) {
                    // Rule 0: reserved space.
                    return Ok(RecordScan {
                        records,
                        valid_len: offset as u64,
                        torn_tail: None,
                        reserved_len: rest.len() as u64,
                    });
                }
                let torn_tail = classify_bad_record(bytes, offset, bad)?;
                return Ok(RecordScan {
                    records,
                    valid_len: offset as u64,
                    torn_tail: Some(torn_tail),
                    reserved_len: 0,
                });
            }
        };
        // Rule 2c: a checksum-valid payload that does not decode was written whole.
        let value = decode_payload(payload).map_err(|error| RecordError::Corrupt {
            offset: offset as u64,
            reason: format!("checksums are valid but the {error}"),
        })?;
        records.push((offset as u64, value));
        offset += RECORD_HEADER_BYTES + payload.len();
    }
    assert_eq!(offset, bytes.len());
    Ok(RecordScan {
        records,
        valid_len: bytes.len() as u64,
        torn_tail: None,
        reserved_len: 0,
    })
}

/// Decodes the one record at the start of `bytes`, for files that hold a record followed by
/// other data (a snapshot file's header): `Ok(Some((value, record_len)))`, `Ok(None)` if the
/// bytes end before the record does, or an error saying what is wrong with it.
pub fn decode_first_record<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<Option<(T, usize)>, CodecError> {
    match record_at(bytes, 0) {
        RecordAt::Valid(payload) => {
            decode_payload(payload).map(|value| Some((value, RECORD_HEADER_BYTES + payload.len())))
        }
        RecordAt::Torn(_) => Ok(None),
        RecordAt::Oversize(len) => Err(CodecError::Oversize {
            len: len as usize,
            max: FRAME_SIZE_BYTES_MAX,
        }),
        RecordAt::DamagedPayload { .. } => {
            Err(CodecError::Decode(PAYLOAD_CHECKSUM_MISMATCH.into()))
        }
        RecordAt::DamagedHeader => Err(CodecError::Decode(HEADER_CHECKSUM_MISMATCH.into())),
    }
}

const INCOMPLETE_HEADER: &str = "incomplete header";
const HEADER_CHECKSUM_MISMATCH: &str = "header checksum mismatch";
const LENGTH_BEYOND_END: &str = "length beyond the end of the file";
const PAYLOAD_CHECKSUM_MISMATCH: &str = "payload checksum mismatch";

/// What the bytes at one offset of a log image are, judged by rules 1 and 2 of the module doc,
/// without decoding the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordAt<'a> {
    /// Both checksums match over a complete record (rule 2c); this is its payload.
    Valid(&'a [u8]),
    /// An append cut short: an incomplete header (rule 1), or a trusted header whose payload
    /// runs past the end of the file (rule 2b).
    Torn(&'static str),
    /// A trusted header declaring more than `FRAME_SIZE_BYTES_MAX` bytes (rule 2a).
    Oversize(u32),
    /// A trusted header whose payload fails its checksum; the record ends at `end` (rule 2d).
    DamagedPayload {
        /// Offset just past the damaged payload, where the next record starts.
        end: usize,
    },
    /// A header that fails its checksum, so its length is not trusted (rule 3).
    DamagedHeader,
}

/// Judges the record whose header starts at `offset`. Cheap checks come first (the header
/// checksum covers 12 bytes), because rule 3 calls this at every offset of a damaged region.
fn record_at(bytes: &[u8], offset: usize) -> RecordAt<'_> {
    let rest = bytes.get(offset..).unwrap_or_default();
    let Some(header) = rest.first_chunk::<RECORD_HEADER_BYTES>() else {
        return RecordAt::Torn(INCOMPLETE_HEADER);
    };
    let payload_len = u32_field(header, 4);
    let payload_crc = u32_field(header, 8);
    if record_header_checksum(payload_len, payload_crc) != u32_field(header, 0) {
        return RecordAt::DamagedHeader;
    }
    if payload_len as usize > FRAME_SIZE_BYTES_MAX {
        return RecordAt::Oversize(payload_len);
    }
    // Invariant: from here on the header is trusted; nothing inside the payload is read as
    // framing.
    let end = RECORD_HEADER_BYTES + payload_len as usize;
    let Some(payload) = rest.get(RECORD_HEADER_BYTES..end) else {
        return RecordAt::Torn(LENGTH_BEYOND_END);
    };
    if crc32fast::hash(payload) != payload_crc {
        return RecordAt::DamagedPayload { end: offset + end };
    }
    RecordAt::Valid(payload)
}

/// Decides what the first bad record, at `offset`, is: a torn tail or corruption (rules 1, 2a,
/// 2b, 2d and 3 of the module doc). `bad` is how `record_at` judged it.
fn classify_bad_record(
    bytes: &[u8],
    offset: usize,
    bad: RecordAt<'_>,
) -> Result<TornTail, RecordError> {
    match bad {
        RecordAt::Valid(_) => panic!("record at offset {offset} is valid, not bad"),
        RecordAt::Torn(reason) => Ok(torn_tail(bytes, offset, reason)),
        RecordAt::Oversize(len) => Err(RecordError::Corrupt {
            offset: offset as u64,
            reason: format!(
                "header checksum is valid but declares {len} bytes, above the maximum of \
                 {FRAME_SIZE_BYTES_MAX}"
            ),
        }),
        RecordAt::DamagedHeader => search_after(bytes, offset, offset, HEADER_CHECKSUM_MISMATCH),
        RecordAt::DamagedPayload { end } => classify_after_damaged_payload(bytes, offset, end),
    }
}

/// Rule 2d: the record at `offset` has a trusted header and a damaged payload ending at
/// `next`. Judges the bytes at `next` (and on, past further damaged payloads) by rules 1 to 3.
fn classify_after_damaged_payload(
    bytes: &[u8],
    offset: usize,
    mut next: usize,
) -> Result<TornTail, RecordError> {
    let reason = PAYLOAD_CHECKSUM_MISMATCH;
    // Bounded: every round moves `next` on by at least one header, towards the end.
    loop {
        assert!(next > offset && next <= bytes.len());
        if next == bytes.len() {
            return Ok(torn_tail(bytes, offset, reason));
        }
        let corrupt = |detail: String| RecordError::Corrupt {
            offset: offset as u64,
            reason: format!("{reason}, {detail}"),
        };
        match record_at(bytes, next) {
            RecordAt::Valid(_) => {
                return Err(corrupt(format!(
                    "yet a valid record follows at offset {next}"
                )))
            }
            RecordAt::Torn(_) => return Ok(torn_tail(bytes, offset, reason)),
            RecordAt::Oversize(len) => {
                return Err(corrupt(format!(
                    "and the valid header at offset {next} declares {len} bytes"
                )))
            }
            RecordAt::DamagedPayload { end } => next = end,
            RecordAt::DamagedHeader => return search_after(bytes, offset, next, reason),
        }
    }
}

/// Rule 3: the first bad record is at `offset` and no trusted header says where anything after
/// `damaged_header` starts. Corrupt if a valid record starts at any offset after it, otherwise
/// a torn tail.
fn search_after(
    bytes: &[u8],
    offset: usize,
    damaged_header: usize,
    reason: &'static str,
) -> Result<TornTail, RecordError> {
    let next_valid = (damaged_header + 1..bytes.len())
        .find(|&at| matches!(record_at(bytes, at), RecordAt::Valid(_)));
    match next_valid {
        Some(next) => Err(RecordError::Corrupt {
            offset: offset as u64,
            reason: format!("{reason}, yet a valid record follows at offset {next}"),
        }),
        None => Ok(torn_tail(bytes, offset, reason)),
    }
}

/// The torn tail from `offset` to the end of `bytes`.
fn torn_tail(bytes: &[u8], offset: usize, reason: &'static str) -> TornTail {
    assert!(offset < bytes.len());
    let written_end = bytes
        .iter()
        .rposition(|&byte| byte != 0)
        .map_or(0, |last| last + 1);
    TornTail {
        offset: offset as u64,
        len: (bytes.len() - offset) as u64,
        written_len: written_end.saturating_sub(offset) as u64,
        reason,
    }
}

/// The header of a record whose payload is `payload`, declared `payload_len` bytes long.
fn record_header(payload_len: u32, payload: &[u8]) -> [u8; RECORD_HEADER_BYTES] {
    assert_eq!(payload_len as usize, payload.len());
    let payload_crc = crc32fast::hash(payload);
    let header_crc = record_header_checksum(payload_len, payload_crc);
    let mut header = [0; RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&header_crc.to_le_bytes());
    header[4..8].copy_from_slice(&payload_len.to_le_bytes());
    header[8..12].copy_from_slice(&payload_crc.to_le_bytes());
    header
}

/// The header checksum: crc32 of `RECORD_HEADER_DOMAIN`, then the length and payload checksum
/// fields as they are laid out in the header.
fn record_header_checksum(payload_len: u32, payload_crc: u32) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&RECORD_HEADER_DOMAIN);
    hasher.update(&payload_len.to_le_bytes());
    hasher.update(&payload_crc.to_le_bytes());
    hasher.finalize()
}

/// The little-endian `u32` at byte `at` (a multiple of 4) of an `N`-byte header.
fn u32_field<const N: usize>(header: &[u8; N], at: usize) -> u32 {
    assert!(at.is_multiple_of(4) && at + 4 <= N);
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

    /// A checksum-valid record header declaring `payload_len` bytes of checksum `payload_crc`.
    fn valid_header(payload_len: u32, payload_crc: u32) -> [u8; RECORD_HEADER_BYTES] {
        let mut header = [0; RECORD_HEADER_BYTES];
        let header_crc = record_header_checksum(payload_len, payload_crc);
        header[..4].copy_from_slice(&header_crc.to_le_bytes());
        header[4..8].copy_from_slice(&payload_len.to_le_bytes());
        header[8..].copy_from_slice(&payload_crc.to_le_bytes());
        header
    }

    /// What a torn tail is compared on where its written part is beside the point.
    fn tail_fields(tail: TornTail) -> (u64, u64, &'static str) {
        (tail.offset, tail.len, tail.reason)
    }

    /// A complete, valid record image around arbitrary `payload` bytes.
    fn raw_record(payload: &[u8]) -> Vec<u8> {
        let mut image = record_header(payload.len() as u32, payload).to_vec();
        image.extend_from_slice(payload);
        image
    }

    /// A whole, valid record image, as a client could spell one out inside the bytes it sends.
    fn forged_record() -> Vec<u8> {
        let mut forged = Vec::new();
        encode_record(&Message::Text("forged".to_string()), &mut forged).expect("encodes");
        let scan = scan_records::<Message>(&forged).expect("the forgery is a valid record");
        assert_eq!((scan.records.len(), scan.torn_tail), (1, None));
        forged
    }

    /// `log_image()` then one more record whose payload embeds `forged_record()` and 40 more
    /// bytes: (image, offset of that last record, offset just past the embedded forgery).
    fn log_image_ending_in_a_forgery() -> (Vec<u8>, usize, usize) {
        let (mut image, _) = log_image();
        let last = image.len();
        let forged = forged_record();
        let mut data = forged.clone();
        data.extend_from_slice(&[0x55; 40]);
        let carrier = Message::Entries(vec![Entry {
            term: 3,
            index: 9,
            data,
        }]);
        encode_record(&carrier, &mut image).expect("encodes");
        let forged_at = image[last..]
            .windows(forged.len())
            .position(|window| window == forged)
            .expect("the payload holds the forgery byte for byte");
        (image, last, last + forged_at + forged.len())
    }

    /// The offset of the corrupt record `result` reports, or what it was instead.
    fn corrupt_offset(result: Result<RecordScan<Message>, RecordError>) -> u64 {
        match result {
            Err(RecordError::Corrupt { offset, .. }) => offset,
            Ok(scan) => panic!("expected corruption, got {:?}", scan.torn_tail),
        }
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
    fn record_header_is_header_checksum_then_length_then_payload_checksum() {
        let mut bytes = Vec::new();
        encode_record(&0xAABB_CCDDu32, &mut bytes).expect("encodes");
        let payload = [0xDD, 0xCC, 0xBB, 0xAA];
        let payload_crc = crc32fast::hash(&payload).to_le_bytes();
        let mut covered = b"RHDR".to_vec();
        covered.extend_from_slice(&[4, 0, 0, 0]);
        covered.extend_from_slice(&payload_crc);
        let header_crc = crc32fast::hash(&covered);
        assert_eq!(bytes[..4], header_crc.to_le_bytes());
        assert_eq!(bytes[4..8], [4, 0, 0, 0]);
        assert_eq!(bytes[8..12], payload_crc);
        assert_eq!(bytes[12..], payload);
        // The domain tag is what keeps a checksum of bare fields from passing as a header's.
        assert_ne!(header_crc, crc32fast::hash(&covered[4..]));
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
            if rng.gen_bool(0.5) && bytes.len() >= RECORD_HEADER_BYTES {
                // A checksum-valid record header makes every rule of the scan reachable.
                let at = rng.gen_range(0..=len - RECORD_HEADER_BYTES);
                let payload_len = rng.gen_range(0..2 * len as u32);
                let header = valid_header(payload_len, rng.gen());
                bytes[at..at + RECORD_HEADER_BYTES].copy_from_slice(&header);
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
                torn_tail: None,
                reserved_len: 0,
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
        assert_eq!(record_at(&[0; 64], 0), RecordAt::DamagedHeader);
        // Zero is the checksum of no bytes, so the header checksum alone refuses a zero run.
        assert_eq!(crc32fast::hash(&[]), 0);
        assert_eq!(record_header_checksum(0, 0), 0x0CEB_347C);
    }

    /// Rule 0.
    #[test]
    fn a_zero_filled_tail_after_valid_records_is_reserved_space() {
        let (mut image, offsets) = log_image();
        let valid_len = image.len() as u64;
        image.resize(image.len() + 4096, 0);
        let scan = scan_records::<Message>(&image).expect("zeros are reserved space");
        assert_eq!(scan.records.len(), offsets.len());
        assert_eq!(scan.valid_len, valid_len);
        assert_eq!((scan.torn_tail, scan.reserved_len), (None, 4096));
    }

    #[test]
    fn a_zero_filled_file_is_reserved_space_from_offset_zero() {
        for len in [1, 7, 8, 11, 12, 13, 4096] {
            let scan = scan_records::<Message>(&vec![0; len]).expect("zeros are reserved space");
            assert_eq!((scan.records.len(), scan.valid_len), (0, 0));
            assert_eq!((scan.torn_tail, scan.reserved_len), (None, len as u64));
        }
    }

    /// A write into reserved space torn at any byte: the torn tail's written part ends at its
    /// last non-zero byte, whatever the zeros after it.
    #[test]
    fn a_record_torn_inside_reserved_space_is_a_torn_tail_without_the_zeros() {
        let (image, _) = log_image();
        let next = raw_record(b"the next record, cut short by a crash");
        for cut in 1..next.len() {
            let mut torn = image.clone();
            torn.extend_from_slice(&next[..cut]);
            torn.resize(torn.len() + 1000, 0);
            let scan = scan_records::<Message>(&torn).expect("torn, not corrupt");
            assert_eq!(scan.valid_len, image.len() as u64, "cut at {cut}");
            assert_eq!(scan.reserved_len, 0);
            let Some(tail) = scan.torn_tail else {
                // The kept bytes were all zero: nothing of the write is left.
                assert!(next[..cut].iter().all(|&b| b == 0), "cut at {cut}");
                continue;
            };
            let written = next[..cut].iter().rposition(|&b| b != 0).expect("non-zero") + 1;
            assert_eq!(tail.len, cut as u64 + 1000, "cut at {cut}");
            assert_eq!(tail.written_len, written as u64, "cut at {cut}");
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

    /// Rule 1.
    #[test]
    fn an_incomplete_header_at_the_end_is_a_torn_tail() {
        let (image, _) = log_image();
        let next = raw_record(b"next");
        for len in 1..RECORD_HEADER_BYTES {
            let mut cut = image.clone();
            cut.extend_from_slice(&next[..len]);
            let scan = scan_records::<Message>(&cut).expect("torn");
            let tail = (image.len() as u64, len as u64, INCOMPLETE_HEADER);
            assert_eq!(
                scan.torn_tail.map(tail_fields),
                Some(tail),
                "{len} header bytes"
            );
        }
    }

    /// Rule 3: an oversize length is not trusted when its header fails its checksum.
    #[test]
    fn a_length_above_the_maximum_under_a_bad_header_checksum_is_a_torn_tail() {
        let mut image = Vec::new();
        image.extend_from_slice(&[0; 4]);
        image.extend_from_slice(&u32::MAX.to_le_bytes());
        image.extend_from_slice(&[0; 4]);
        image.extend_from_slice(&[7; 100]);
        let scan = scan_records::<Message>(&image).expect("torn");
        assert_eq!(
            scan.torn_tail.map(|tail| tail.reason),
            Some(HEADER_CHECKSUM_MISMATCH)
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

    /// Rule 2a.
    #[test]
    fn a_checksum_valid_header_declaring_an_oversize_length_is_corrupt_even_at_the_end() {
        let (image, _) = log_image();
        for len in [FRAME_SIZE_BYTES_MAX as u32 + 1, u32::MAX] {
            let mut damaged = image.clone();
            damaged.extend_from_slice(&valid_header(len, 0));
            damaged.extend_from_slice(&[7; 100]);
            assert_eq!(corrupt_offset(scan_records(&damaged)), image.len() as u64);
        }
    }

    /// Rule 2b: the regression. A record cut short after a forged record in its own payload
    /// is a torn tail; the forgery is stepped over, never read as framing.
    #[test]
    fn a_record_cut_anywhere_after_a_forged_record_in_its_payload_is_a_torn_tail() {
        let (image, last, forged_end) = log_image_ending_in_a_forgery();
        for cut in last + RECORD_HEADER_BYTES..image.len() {
            let scan = scan_records::<Message>(&image[..cut]).expect("torn, not corrupt");
            assert_eq!(scan.records.len(), messages().len(), "cut at {cut}");
            let tail = (last as u64, (cut - last) as u64, LENGTH_BEYOND_END);
            assert_eq!(scan.torn_tail.map(tail_fields), Some(tail), "cut at {cut}");
        }
        assert!(forged_end < image.len());
        let scan = scan_records::<Message>(&image).expect("whole");
        assert_eq!(scan.records.len(), messages().len() + 1);
    }

    /// Rule 2d, end of file: damage anywhere in the last record's payload, forgery included.
    #[test]
    fn a_damaged_payload_holding_a_forged_record_at_the_end_is_a_torn_tail() {
        let (image, last, _) = log_image_ending_in_a_forgery();
        for position in last + RECORD_HEADER_BYTES..image.len() {
            let mut damaged = image.clone();
            damaged[position] ^= 0x41;
            let scan = scan_records::<Message>(&damaged).expect("torn, not corrupt");
            let tail = (
                last as u64,
                (image.len() - last) as u64,
                PAYLOAD_CHECKSUM_MISMATCH,
            );
            assert_eq!(
                scan.torn_tail.map(tail_fields),
                Some(tail),
                "byte {position}"
            );
        }
    }

    /// Rule 2d: a valid record right after the damaged one is corruption, and says where.
    #[test]
    fn a_damaged_payload_followed_by_a_valid_record_is_corrupt_and_names_both() {
        let (mut image, offsets) = log_image();
        image[offsets[2] + RECORD_HEADER_BYTES] ^= 0x41;
        let Err(RecordError::Corrupt { offset, reason }) = scan_records::<Message>(&image) else {
            panic!("expected corruption");
        };
        assert_eq!(offset, offsets[2] as u64);
        let follows = format!("{PAYLOAD_CHECKSUM_MISMATCH}, yet a valid record follows at");
        assert_eq!(reason, format!("{follows} offset {}", offsets[3]));
    }

    /// Rule 2d: the damaged record's successor was cut short (header or payload), so the batch
    /// was torn; the forgery inside the damaged payload is never looked at.
    #[test]
    fn a_damaged_payload_followed_by_a_cut_record_is_a_torn_tail() {
        let (mut image, last, forged_end) = log_image_ending_in_a_forgery();
        image[forged_end] ^= 0x41;
        let next = image.len();
        encode_record(&Message::Text("next".to_string()), &mut image).expect("encodes");
        for cut in next..image.len() {
            let scan = scan_records::<Message>(&image[..cut]).expect("torn, not corrupt");
            let tail = scan.torn_tail.map(|tail| (tail.offset, tail.reason));
            let expected = (last as u64, PAYLOAD_CHECKSUM_MISMATCH);
            assert_eq!(tail, Some(expected), "cut at {cut}");
        }
        assert_eq!(corrupt_offset(scan_records(&image)), last as u64);
    }

    /// Rule 2d, followed: damaged payloads in a row lead to a valid record or to the end.
    #[test]
    fn a_run_of_damaged_payloads_is_corrupt_before_a_valid_record_and_torn_at_the_end() {
        let (image, offsets) = log_image();
        let mut middle = image.clone();
        middle[offsets[1] + RECORD_HEADER_BYTES] ^= 0x41;
        middle[offsets[2] + RECORD_HEADER_BYTES] ^= 0x41;
        assert_eq!(corrupt_offset(scan_records(&middle)), offsets[1] as u64);
        let mut end = image.clone();
        end[offsets[3] + RECORD_HEADER_BYTES] ^= 0x41;
        end[offsets[4] + RECORD_HEADER_BYTES] ^= 0x41;
        let scan = scan_records::<Message>(&end).expect("torn");
        let tail = scan.torn_tail.map(|tail| (tail.offset, tail.reason));
        assert_eq!(tail, Some((offsets[3] as u64, PAYLOAD_CHECKSUM_MISMATCH)));
    }

    /// Rule 2d, then rule 3 from the damaged header: the search starts past the damaged
    /// payload, so a forgery inside that payload is never found.
    #[test]
    fn a_damaged_header_after_a_damaged_payload_is_searched_past_from_there() {
        let (mut image, last, forged_end) = log_image_ending_in_a_forgery();
        image[forged_end] ^= 0x41;
        let next = image.len();
        encode_record(&Message::Text("next".to_string()), &mut image).expect("encodes");
        image[next] ^= 0x41;
        let scan = scan_records::<Message>(&image).expect("torn, not corrupt");
        let tail = scan.torn_tail.map(|tail| (tail.offset, tail.reason));
        assert_eq!(tail, Some((last as u64, PAYLOAD_CHECKSUM_MISMATCH)));
        // A valid record after the damaged header makes it corruption at the first damage.
        encode_record(&Message::Ping, &mut image).expect("encodes");
        assert_eq!(corrupt_offset(scan_records(&image)), last as u64);
    }

    /// Rule 2d: a checksum-valid oversize header after a damaged payload is corruption.
    #[test]
    fn a_damaged_payload_followed_by_a_valid_oversize_header_is_corrupt() {
        let (mut image, offsets) = log_image();
        let last = offsets[offsets.len() - 1];
        image[last + RECORD_HEADER_BYTES] ^= 0x41;
        image.extend_from_slice(&valid_header(FRAME_SIZE_BYTES_MAX as u32 + 1, 0));
        assert_eq!(corrupt_offset(scan_records(&image)), last as u64);
    }

    /// Rule 3: a damaged header with a valid record after it is corruption, and says where.
    #[test]
    fn a_damaged_header_followed_by_a_valid_record_is_corrupt_and_names_both() {
        let (mut image, offsets) = log_image();
        image[offsets[1] + 4] ^= 0x41;
        let Err(RecordError::Corrupt { offset, reason }) = scan_records::<Message>(&image) else {
            panic!("expected corruption");
        };
        assert_eq!(offset, offsets[1] as u64);
        let follows = format!("{HEADER_CHECKSUM_MISMATCH}, yet a valid record follows at");
        assert_eq!(reason, format!("{follows} offset {}", offsets[2]));
    }

    /// Rule 3: only a whole valid record found by the search counts, not a valid header alone.
    #[test]
    fn a_damaged_header_followed_by_a_valid_header_alone_is_a_torn_tail() {
        let (image, _) = log_image();
        let payload = b"a payload of some length";
        let bad_crc = crc32fast::hash(payload) ^ 1;
        let followers = [
            [&valid_header(100, 0)[..], &payload[..]].concat(), // runs past the end
            [
                &valid_header(payload.len() as u32, bad_crc)[..],
                &payload[..],
            ]
            .concat(),
        ];
        for follower in followers {
            let mut damaged = image.clone();
            damaged.extend_from_slice(&[0xAB; RECORD_HEADER_BYTES]);
            damaged.extend_from_slice(&follower);
            let scan = scan_records::<Message>(&damaged).expect("torn");
            let tail = scan.torn_tail.map(|tail| (tail.offset, tail.reason));
            assert_eq!(tail, Some((image.len() as u64, HEADER_CHECKSUM_MISMATCH)));
        }
    }

    /// Rule 3, the residual risk the module doc names: a damaged header followed by a torn
    /// payload that holds a forged record reads as corruption. It errs towards refusing.
    #[test]
    fn a_damaged_header_before_a_forged_record_is_corrupt_the_documented_residual_risk() {
        let (mut image, last, forged_end) = log_image_ending_in_a_forgery();
        image[last] ^= 0x41;
        for cut in forged_end..=image.len() {
            assert_eq!(corrupt_offset(scan_records(&image[..cut])), last as u64);
        }
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
        fn damage_confined_to_the_last_record_is_a_torn_tail_at_its_offset(
            values in proptest::collection::vec(tuple(), 1..6),
            position_fraction in 0.0..1.0f64,
            flip in 1..=255u8,
            cut_fraction in 0.0..=1.0f64,
        ) {
            let mut image = Vec::new();
            let mut last = 0;
            for value in &values {
                last = image.len();
                encode_record(value, &mut image).expect("encodes");
            }
            let record_len = image.len() - last;
            image[last + (record_len as f64 * position_fraction) as usize] ^= flip;
            let cut = last + ((record_len as f64 * cut_fraction) as usize).max(1);
            let scan = scan_records::<Tuple>(&image[..cut]).expect("damage at the end is torn");
            prop_assert_eq!(scan.records.len(), values.len() - 1);
            prop_assert_eq!(scan.torn_tail.map(|tail| tail.offset), Some(last as u64));
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
