//! The real server's data directory: files on the host's file system, made durable with fsync.
//!
//! Invariant: once `sync`, `truncate` or `sync_dir` returns `Ok`, what it covers survives a
//! power failure.
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
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::disk::Disk;

/// Appends of more bytes than this, and syncs of more unsynced bytes, leave the calling thread.
const INLINE_BYTES_MAX: u64 = 1024 * 1024;

/// A node's data directory on a real disk.
#[derive(Clone, Debug)]
pub struct FileDisk {
    dir: Arc<PathBuf>,
    open: Arc<Mutex<BTreeMap<String, OpenFile>>>,
}

/// A file kept open for appending, and how much was written to it since its last sync.
#[derive(Debug)]
struct OpenFile {
    file: Arc<File>,
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

    /// The file open for appending under `name`, opened (and created) if need be.
    fn appendable(&self, name: &str) -> io::Result<Arc<File>> {
        let mut open = self.open_files();
        if let Some(entry) = open.get(name) {
            return Ok(entry.file.clone());
        }
        let path = self.path(name);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(context(&path, "open"))?;
        let file = Arc::new(file);
        let entry = OpenFile {
            file: file.clone(),
            unsynced_bytes: 0,
        };
        open.insert(name.to_string(), entry);
        Ok(file)
    }

    fn note_written(&self, name: &str, bytes: u64) {
        if let Some(entry) = self.open_files().get_mut(name) {
            entry.unsynced_bytes += bytes;
        }
    }

    fn forget(&self, name: &str) {
        self.open_files().remove(name);
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
        let file = self.appendable(name)?;
        let path = self.path(name);
        if bytes.len() as u64 <= INLINE_BYTES_MAX {
            (&*file)
                .write_all(bytes)
                .map_err(context(&path, "append"))?;
        } else {
            let owned = bytes.to_vec();
            on_blocking_pool(move || (&*file).write_all(&owned).map_err(context(&path, "append")))
                .await?;
        }
        self.note_written(name, bytes.len() as u64);
        Ok(())
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

    /// On the blocking pool, write and fdatasync together: one hand-off per batch, and the
    /// loop never blocks on the disk.
    fn append_synced(
        &self,
        name: String,
        bytes: Vec<u8>,
    ) -> impl Future<Output = io::Result<()>> + Send + use<> {
        let file = self.appendable(&name);
        let path = self.path(&name);
        async move {
            let file = file?;
            on_blocking_pool(move || {
                (&*file)
                    .write_all(&bytes)
                    .map_err(context(&path, "append"))?;
                file.sync_data().map_err(context(&path, "fsync"))
            })
            .await
        }
    }
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
    async fn errors_name_the_path() {
        let dir = scratch_dir();
        let disk = FileDisk::open(&dir).unwrap();
        let error = disk.read("missing").await.unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
        assert!(FileDisk::open(&dir.join("nope")).is_err());
        fs::remove_dir_all(dir).unwrap();
    }
}
