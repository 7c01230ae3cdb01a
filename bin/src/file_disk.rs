//! The real server's data directory: files on the host's file system, made durable with fsync.
//!
//! Invariant: once `sync`, `truncate` or `sync_dir` returns `Ok`, what it covers survives a
//! power failure.
//!
//! Appends write at the end of a file's data, tracked here, not at the end of the file: a log
//! segment is reserved ahead of its records with zeros (`Disk::reserve`), written and synced,
//! so a sync of the records that overwrite them changes neither the file's size nor its block
//! map and flushes data alone. On this machine's ext4 that made a small fdatasync a third
//! cheaper (`posix_fallocate` alone, which leaves the blocks "unwritten", gains half as much
//! for 8 KiB syncs, and nothing with `FALLOC_FL_KEEP_SIZE`, which leaves the size to grow).
//!
//! Small operations run on the calling thread. That is deliberate: the node's loop is serial
//! and waits on the log's write and sync before it sends anything that depends on them
//! (Raft's persist-before-send rule), so handing a small append to a thread pool would only add
//! a thread hop to every batch. Operations that may take long (reading a whole file, appending
//! or syncing more than `INLINE_BYTES_MAX`, as a snapshot does) go to tokio's blocking pool, so
//! a large snapshot never holds a runtime thread. Every error names the file, so an operator
//! sees which data directory is at fault.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::disk::{Disk, SyncOn};

/// Appends of more bytes than this, and syncs of more unsynced bytes, leave the calling thread.
const INLINE_BYTES_MAX: u64 = 1024 * 1024;

/// A node's data directory on a real disk.
#[derive(Clone, Debug)]
pub struct FileDisk {
    dir: Arc<PathBuf>,
    open: Arc<Mutex<BTreeMap<String, OpenFile>>>,
}

/// Zeros written at once by `reserve`, at most.
const ZERO_PIECE_BYTES: u64 = 1024 * 1024;

/// A file kept open for writing: where its data ends, how long it is (its data and the zeros
/// reserved after them), and how much was written to it since its last sync.
#[derive(Debug)]
struct OpenFile {
    file: Arc<File>,
    end: u64,
    len: u64,
    unsynced_bytes: u64,
}

impl FileDisk {
    /// The data directory `dir`, which must exist.
    pub fn open(dir: &Path) -> io::Result<FileDisk> {
        if !dir.is_dir() {
            let message = format!("{}: not a directory", dir.display());
            return Err(io::Error::new(io::ErrorKind::NotFound, message));
        }
        Ok(FileDisk {
            dir: Arc::new(dir.to_path_buf()),
            open: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// The directory this disk writes.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        // Names come from this program or from a listing of the directory itself.
        assert!(
            !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != "..",
            "not a plain file name: {name:?}"
        );
        self.dir.join(name)
    }

    fn open_files(&self) -> MutexGuard<'_, BTreeMap<String, OpenFile>> {
        // A poisoned lock means a panic mid-update; the process is failing anyway.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The file open for writing under `name`, opened (and created) if need be; its data ends
    /// where the file does when first opened. Not `O_APPEND`: Linux would append a positioned
    /// write whatever its offset.
    fn appendable(&self, name: &str) -> io::Result<Arc<File>> {
        self.with_open(name, |entry| entry.file.clone())
    }

    /// Runs `f` on the open file `name` (opened and created if need be).
    fn with_open<T>(&self, name: &str, f: impl FnOnce(&mut OpenFile) -> T) -> io::Result<T> {
        let mut open = self.open_files();
        if let Some(entry) = open.get_mut(name) {
            return Ok(f(entry));
        }
        let path = self.path(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(context(&path, "open"))?;
        let len = file.metadata().map_err(context(&path, "stat"))?.len();
        let entry = open.entry(name.to_string()).or_insert(OpenFile {
            file: Arc::new(file),
            end: len,
            len,
            unsynced_bytes: 0,
        });
        Ok(f(entry))
    }

    /// Claims the next `bytes` of `name`'s data, and the zeros to reserve up to `reserve_to`:
    /// returns the file, where the bytes go, and the stretch of zeros to write first (empty if
    /// the file is long enough already). Bookkeeping is done at once: a failed write stops the
    /// node, which forgets it all.
    fn claim(
        &self,
        name: &str,
        bytes: u64,
        reserve_to: u64,
    ) -> io::Result<(Arc<File>, u64, std::ops::Range<u64>)> {
        self.with_open(name, |entry| {
            let offset = entry.end;
            // Zeros only where the bytes will not land.
            let from = entry.len.max(offset + bytes);
            let zeros = from..reserve_to.max(from);
            entry.end += bytes;
            entry.len = entry.len.max(entry.end).max(reserve_to);
            entry.unsynced_bytes += bytes + (zeros.end - zeros.start);
            (entry.file.clone(), offset, zeros)
        })
    }

    fn forget(&self, name: &str) {
        self.open_files().remove(name);
    }

    /// `name` was cut to `len` bytes: its data ends there, and nothing is reserved past it.
    fn cut(&self, name: &str, len: u64) {
        if let Some(entry) = self.open_files().get_mut(name) {
            entry.end = len;
            entry.len = len;
        }
    }
}

/// Runs `f` on tokio's blocking pool and waits for it.
async fn on_blocking_pool<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    #[allow(deprecated)] // madsim deprecates it; the simulator never builds a FileDisk.
    let handle = tokio::task::spawn_blocking(f);
    handle.await.map_err(io::Error::other)?
}

impl Disk for FileDisk {
    async fn list(&self) -> io::Result<Vec<String>> {
        let dir = self.dir.as_path();
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(context(dir, "list"))? {
            let entry = entry.map_err(context(dir, "list"))?;
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            // A name that is not UTF-8 is no file of ours.
            if let (true, Ok(name)) = (is_file, entry.file_name().into_string()) {
                names.push(name);
            }
        }
        Ok(names)
    }

    async fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let path = self.path(name);
        on_blocking_pool(move || {
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .map_err(context(&path, "read"))?;
            Ok(bytes)
        })
        .await
    }

    async fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let (file, offset, _) = self.claim(name, bytes.len() as u64, 0)?;
        let path = self.path(name);
        if bytes.len() as u64 <= INLINE_BYTES_MAX {
            file.write_all_at(bytes, offset)
                .map_err(context(&path, "append"))
        } else {
            let owned = bytes.to_vec();
            on_blocking_pool(move || {
                file.write_all_at(&owned, offset)
                    .map_err(context(&path, "append"))
            })
            .await
        }
    }

    async fn reserve(&self, name: &str, len: u64) -> io::Result<()> {
        let (file, _, zeros) = self.claim(name, 0, len)?;
        let path = self.path(name);
        if zeros.is_empty() {
            return Ok(());
        }
        on_blocking_pool(move || write_zeros(&file, zeros).map_err(context(&path, "reserve"))).await
    }

    async fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let file = self.appendable(name)?;
        let path = self.path(name);
        let len = file.metadata().map_err(context(&path, "stat"))?.len();
        if offset > len {
            let message = format!("{}: write at {offset} past the end ({len})", path.display());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        file.set_len(offset).map_err(context(&path, "truncate"))?;
        self.cut(name, offset);
        self.append(name, bytes).await
    }

    async fn sync(&self, name: &str) -> io::Result<()> {
        let file = self.appendable(name)?;
        let path = self.path(name);
        let unsynced = self.open_files().get(name).map_or(0, |e| e.unsynced_bytes);
        // fdatasync also flushes the file size when an append grew it, which is all we need.
        if unsynced <= INLINE_BYTES_MAX {
            file.sync_data().map_err(context(&path, "fsync"))?;
        } else {
            on_blocking_pool(move || file.sync_data().map_err(context(&path, "fsync"))).await?;
        }
        if let Some(entry) = self.open_files().get_mut(name) {
            entry.unsynced_bytes = entry.unsynced_bytes.saturating_sub(unsynced);
        }
        Ok(())
    }

    async fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let file = self.appendable(name)?;
        let path = self.path(name);
        file.set_len(len).map_err(context(&path, "truncate"))?;
        self.cut(name, len);
        // sync_all, not sync_data: the new length is metadata and must survive too.
        file.sync_all().map_err(context(&path, "fsync"))
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.forget(from);
        self.forget(to);
        let (source, target) = (self.path(from), self.path(to));
        fs::rename(&source, &target).map_err(context(&source, "rename"))
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        self.forget(name);
        let path = self.path(name);
        match fs::remove_file(&path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                Err(context(&path, "remove")(error))
            }
            _ => Ok(()),
        }
    }

    async fn sync_dir(&self) -> io::Result<()> {
        sync_dir(&self.dir)
    }

    /// The reserved zeros, the bytes and one fdatasync together: on the blocking pool (one
    /// hand-off per batch, the loop going on meanwhile), or, with `SyncOn::Caller`, for a
    /// write that reserves nothing and is at most `INLINE_BYTES_MAX`, on the thread that first
    /// polls the future (the caller has nothing to do until it is synced).
    fn append_synced(
        &self,
        name: String,
        bytes: Vec<u8>,
        reserve_to: u64,
        on: SyncOn,
    ) -> impl Future<Output = io::Result<()>> + Send + use<> {
        let claimed = self.claim(&name, bytes.len() as u64, reserve_to);
        let path = self.path(&name);
        let open = self.open.clone();
        async move {
            let (file, offset, zeros) = claimed?;
            let synced_bytes = bytes.len() as u64 + (zeros.end - zeros.start);
            let here = on == SyncOn::Caller && synced_bytes <= INLINE_BYTES_MAX && zeros.is_empty();
            let write = move || {
                write_zeros(&file, zeros).map_err(context(&path, "reserve"))?;
                file.write_all_at(&bytes, offset)
                    .map_err(context(&path, "append"))?;
                file.sync_data().map_err(context(&path, "fsync"))
            };
            if here {
                write()?;
            } else {
                on_blocking_pool(write).await?;
            }
            let mut open = open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(entry) = open.get_mut(&name) {
                entry.unsynced_bytes = entry.unsynced_bytes.saturating_sub(synced_bytes);
            }
            Ok(())
        }
    }
}

/// Writes zeros over `range` of `file`, a piece at a time.
fn write_zeros(file: &File, range: std::ops::Range<u64>) -> io::Result<()> {
    let zeros = vec![0; range.end.saturating_sub(range.start).min(ZERO_PIECE_BYTES) as usize];
    let mut offset = range.start;
    while offset < range.end {
        let piece = (range.end - offset).min(ZERO_PIECE_BYTES) as usize;
        file.write_all_at(&zeros[..piece], offset)?;
        offset += piece as u64;
    }
    Ok(())
}

/// Makes the entries of `dir` durable, so a file created, renamed or removed in it stays so
/// after a power failure.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let sync = || File::open(dir)?.sync_all();
    sync().map_err(context(dir, "fsync directory"))
}

/// Wraps an I/O error so its message names the file and the operation that failed.
fn context<'a>(path: &'a Path, operation: &'a str) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |error| {
        let message = format!("{}: {operation}: {error}", path.display());
        io::Error::new(error.kind(), message)
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A fresh, empty, unique directory under the system temp dir.
    fn scratch_dir() -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = format!("raftchat-file-disk-{}-{unique}", std::process::id());
        let dir = std::env::temp_dir().join(dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn appended_bytes_read_back_in_order_and_list_names_the_file() {
        let dir = scratch_dir();
        let disk = FileDisk::open(&dir).unwrap();
        assert!(disk.list().await.unwrap().is_empty());
        disk.append("log", b"hello, ").await.unwrap();
        disk.append("log", b"world").await.unwrap();
        disk.sync("log").await.unwrap();
        disk.sync_dir().await.unwrap();
        assert_eq!(disk.read("log").await.unwrap(), b"hello, world");
        assert_eq!(disk.list().await.unwrap(), vec!["log".to_string()]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn large_appends_and_syncs_go_through_the_blocking_pool() {
        let dir = scratch_dir();
        let disk = FileDisk::open(&dir).unwrap();
        let big = vec![7u8; INLINE_BYTES_MAX as usize * 3];
        disk.append("snap", &big).await.unwrap();
        disk.append("snap", b"tail").await.unwrap();
        disk.sync("snap").await.unwrap();
        let back = disk.read("snap").await.unwrap();
        assert_eq!(back.len(), big.len() + 4);
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn write_at_cuts_then_appends_and_refuses_a_hole() {
        let dir = scratch_dir();
        let disk = FileDisk::open(&dir).unwrap();
        disk.write_at("part", 0, b"abcdef").await.unwrap();
        disk.write_at("part", 3, b"XY").await.unwrap();
        assert_eq!(disk.read("part").await.unwrap(), b"abcXY");
        assert!(disk.write_at("part", 9, b"!").await.is_err());
        disk.write_at("part", 0, b"new").await.unwrap();
        assert_eq!(disk.read("part").await.unwrap(), b"new");
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn truncate_rename_and_remove() {
        let dir = scratch_dir();
        let disk = FileDisk::open(&dir).unwrap();
        disk.append("a.tmp", b"keep-torn").await.unwrap();
        disk.truncate("a.tmp", 4).await.unwrap();
        disk.rename("a.tmp", "a").await.unwrap();
        disk.append("a", b"-more").await.unwrap();
        assert_eq!(disk.read("a").await.unwrap(), b"keep-more");
        disk.remove("a").await.unwrap();
        disk.remove("a").await.unwrap();
        disk.sync_dir().await.unwrap();
        assert!(disk.list().await.unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn appends_overwrite_reserved_zeros_and_a_new_disk_appends_at_the_files_end() {
        let dir = scratch_dir();
        let disk = FileDisk::open(&dir).unwrap();
        disk.append("seg", b"head").await.unwrap();
        disk.reserve("seg", 16).await.unwrap();
        disk.sync("seg").await.unwrap();
        assert_eq!(
            disk.read("seg").await.unwrap(),
            b"head\0\0\0\0\0\0\0\0\0\0\0\0"
        );
        disk.append_synced("seg".into(), b"-one".to_vec(), 12, SyncOn::Caller)
            .await
            .unwrap();
        assert_eq!(disk.read("seg").await.unwrap(), b"head-one\0\0\0\0\0\0\0\0");
        // Reserving past the end with the same write: zeros first, then the bytes over them.
        disk.append_synced("seg".into(), b"-two".to_vec(), 24, SyncOn::Beside)
            .await
            .unwrap();
        let mut expected = b"head-one-two".to_vec();
        expected.resize(24, 0);
        assert_eq!(disk.read("seg").await.unwrap(), expected);
        // A write past what is reserved grows the file.
        disk.append("seg", b"-three-four-five").await.unwrap();
        assert_eq!(
            disk.read("seg").await.unwrap(),
            b"head-one-two-three-four-five"
        );
        // A new life appends where the file ends, unless recovery cuts it first.
        disk.reserve("seg", 32).await.unwrap();
        let reopened = FileDisk::open(&dir).unwrap();
        reopened.append("seg", b"!").await.unwrap();
        assert_eq!(reopened.read("seg").await.unwrap().len(), 33);
        reopened.truncate("seg", 12).await.unwrap();
        reopened.append("seg", b"-six").await.unwrap();
        assert_eq!(reopened.read("seg").await.unwrap(), b"head-one-two-six");
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn errors_name_the_path() {
        let dir = scratch_dir();
        let disk = FileDisk::open(&dir).unwrap();
        let error = disk.read("missing").await.unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
        assert!(FileDisk::open(&dir.join("nope")).is_err());
        fs::remove_dir_all(dir).unwrap();
    }
}
