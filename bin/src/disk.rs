//! A node's data directory behind a small file-system trait: real files with fsync for the
//! server, the simulator's faulty disk in simulation. The node runtime appends to log segments,
//! writes snapshot files under temporary names and renames them, deletes what compaction
//! frees, and at startup lists and reads everything back; it never rewrites a file in place
//! except to cut a torn tail.
//!
//! Files are named by plain names inside the one directory (no paths), so both implementations
//! agree on what a name means and a name from a listing can never escape the directory.

use std::future::Future;
use std::io;

/// Where a disk may do the work of `Disk::append_synced`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncOn {
    /// Beside the caller, which goes on with other work meanwhile.
    Beside,
    /// On the thread that first polls the future, if the write is small: the caller has
    /// nothing else to do until it is synced, and handing it to another thread and back costs
    /// two wake-ups, on a small sync about as long as the sync itself.
    Caller,
}

/// One node's data directory.
///
/// Durability contract, the one POSIX file systems give and the simulator models:
/// - bytes written to a file may be lost (wholly, or as a torn or corrupted tail) by a power
///   failure until `sync` of that file returns; after that they survive any crash;
/// - creating, renaming or removing a file may be undone by a power failure until `sync_dir`
///   returns;
/// - a process crash (without power loss) loses nothing that was written.
///
/// Clones share the directory: a background task may write one file while the node's loop
/// writes another.
pub trait Disk: Clone + Send + Sync + 'static {
    /// The names of the files in the directory, in no particular order.
    fn list(&self) -> impl Future<Output = io::Result<Vec<String>>> + Send;
    /// Reads a whole file.
    fn read(&self, name: &str) -> impl Future<Output = io::Result<Vec<u8>>> + Send;
    /// Appends bytes at the end of a file's data, creating it if missing; not durable until
    /// `sync` (and, for a new file, `sync_dir`). The end of the data is the file's length when
    /// this `Disk` first writes it, moved on by appends and cuts, not by `reserve`: appends
    /// overwrite reserved zeros.
    fn append(&self, name: &str, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Extends a file with zeros to `len` bytes, if it is shorter, without moving the end of
    /// its data: space reserved for later appends, so that their syncs find the file's size
    /// and blocks already durable and flush data alone. Durable after `sync`.
    fn reserve(&self, name: &str, len: u64) -> impl Future<Output = io::Result<()>> + Send;
    /// Cuts a file to `offset` bytes (which must not exceed its length), then appends `bytes`:
    /// how a chunk lands at its place in a snapshot being received, a resent one included.
    fn write_at(
        &self,
        name: &str,
        offset: u64,
        bytes: &[u8],
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// Makes every byte written to a file durable.
    fn sync(&self, name: &str) -> impl Future<Output = io::Result<()>> + Send;
    /// Cuts a file to its first `len` bytes and makes that durable (drops a torn tail).
    fn truncate(&self, name: &str, len: u64) -> impl Future<Output = io::Result<()>> + Send;
    /// Renames a file, replacing any file of the new name; durable after `sync_dir`.
    fn rename(&self, from: &str, to: &str) -> impl Future<Output = io::Result<()>> + Send;
    /// Deletes a file; durable after `sync_dir`. A missing file is not an error.
    fn remove(&self, name: &str) -> impl Future<Output = io::Result<()>> + Send;
    /// Makes every creation, rename and removal so far durable.
    fn sync_dir(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Reserves `reserve_to` bytes of a file (`reserve`), appends `bytes` and syncs both, as a
    /// future that owns what it needs, so the node's loop goes on while the disk works (the
    /// log's pipelined writes). A real disk does it on another thread, with one sync, or, as
    /// `on` allows, on the thread that first polls the future; the default, whatever `on`
    /// says, is `reserve` (unless `reserve_to` is 0), `append`, then `sync`. Bookkeeping (where
    /// the next append goes) moves on when the future is made: a failed or dropped write
    /// stops the node, whose next life starts from what is on disk.
    fn append_synced(
        &self,
        name: String,
        bytes: Vec<u8>,
        reserve_to: u64,
        _on: SyncOn,
    ) -> impl Future<Output = io::Result<()>> + Send + use<Self> {
        let disk = self.clone();
        async move {
            if reserve_to > 0 {
                disk.reserve(&name, reserve_to).await?;
            }
            disk.append(&name, &bytes).await?;
            disk.sync(&name).await
        }
    }
}
