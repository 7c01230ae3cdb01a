//! Reading and writing framed messages on a byte stream (a TCP connection).
//!
//! The reader keeps its buffer across calls, so `next()` is cancel-safe: a `select!` that drops
//! a pending read loses no bytes. The writer flushes after every batch: madsim's simulated TCP
//! sends nothing until `flush()`, and on real TCP the flush is free.

use raftchat::codec::CodecError;
use raftchat::limits::FRAME_SIZE_BYTES_MAX;
use raftchat::wire::{self, Frame};
use std::fmt;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a connection's frames stopped.
#[derive(Debug)]
pub enum FrameError {
    /// The socket failed.
    Io(io::Error),
    /// The bytes are not a valid frame (garbage, bad checksum, oversize).
    Codec(CodecError),
    /// The peer closed the connection in the middle of a frame.
    Truncated,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "connection error: {e}"),
            FrameError::Codec(e) => write!(f, "bad frame: {e}"),
            FrameError::Truncated => write!(f, "connection closed in the middle of a frame"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Reads frames from a stream.
pub struct FrameReader<R> {
    reader: R,
    /// Bytes read and not yet decoded are `buffer[start..]`.
    buffer: Vec<u8>,
    start: usize,
    frames_read: u64,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a stream.
    pub fn new(reader: R) -> FrameReader<R> {
        FrameReader {
            reader,
            buffer: Vec::with_capacity(64 * 1024),
            start: 0,
            frames_read: 0,
        }
    }

    /// The next frame; `Ok(None)` when the peer closed the connection between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            let pending = &self.buffer[self.start..];
            if let Some((frame, used)) = wire::decode(pending).map_err(FrameError::Codec)? {
                self.start += used;
                if self.start == self.buffer.len() {
                    self.start = 0;
                    self.buffer.clear();
                }
                self.frames_read += 1;
                return Ok(Some(frame));
            }
            debug_assert!(pending.len() <= FRAME_SIZE_BYTES_MAX + 8);
            // Decoded frames leave the buffer once per read, not once per frame.
            self.buffer.drain(..self.start);
            self.start = 0;
            self.buffer.reserve(16 * 1024);
            let read = match self.reader.read_buf(&mut self.buffer).await {
                Ok(read) => read,
                // A TLS peer that closed without close_notify (a client that exited). Frames
                // delimit themselves, so between two of them this is an ordinary close.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => 0,
                Err(error) => return Err(FrameError::Io(error)),
            };
            if read == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// Frames read so far.
    pub fn frames_read(&self) -> u64 {
        self.frames_read
    }

    /// The stream, to write on when one task both reads and writes it in turn (no split, and
    /// no lock around every read and write). Bytes read and not yet decoded stay buffered.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.reader
    }
}

/// Encodes `frames` into one buffer, writes it and flushes.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frames: impl IntoIterator<Item = &Frame>,
    scratch: &mut Vec<u8>,
) -> Result<(), FrameError> {
    scratch.clear();
    for frame in frames {
        wire::encode(frame, scratch).map_err(FrameError::Codec)?;
    }
    writer.write_all(scratch).await.map_err(FrameError::Io)?;
    writer.flush().await.map_err(FrameError::Io)
}
