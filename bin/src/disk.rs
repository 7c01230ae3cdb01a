//! The durable log file behind a small trait: real files with fsync for the server, the
//! simulator's faulty disk in simulation. The node runtime only appends, syncs, and at startup
//! reads everything back and cuts a torn tail; it never rewrites in place.

use std::future::Future;
use std::io;

/// One node's append-only log file.
///
/// Durability contract: bytes passed to `append` may be lost (wholly, or as a torn or corrupted
/// tail) by a power failure until `sync` returns; after that they survive any crash.
pub trait Disk: Send + 'static {
    /// Reads the whole file (at startup, before any append).
    fn read_all(&mut self) -> impl Future<Output = io::Result<Vec<u8>>> + Send;
    /// Cuts the file to its first `len` bytes and makes that durable (drops a torn tail).
    fn truncate(&mut self, len: u64) -> impl Future<Output = io::Result<()>> + Send;
    /// Appends bytes at the end; not durable until `sync`.
    fn append(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Makes every appended byte durable.
    fn sync(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}
