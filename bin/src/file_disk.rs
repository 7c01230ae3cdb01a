//! The real server's durable log: one file on the host's file system, written with `std::fs`.
//!
//! Invariant: the file is only ever appended to or cut shorter; nothing is rewritten in place.
//! Invariant: once `sync` or `truncate` returns `Ok`, the file's bytes up to that point survive
//! a power failure (fsync), and a file this type created is durable in its directory too.
//!
//! The calls block the calling thread. That is deliberate: the host loop is serial and waits on
//! the disk before it sends anything that depends on the write (Raft's persist-before-send
//! rule), so handing the work to a blocking pool would only add a thread hop to every batch.
//! Every error names the file, so an operator sees which data directory is at fault.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::disk::Disk;

/// A node's log file on a real disk, made durable with fsync.
#[derive(Debug)]
pub struct FileDisk {
    path: PathBuf,
    file: File,
}

impl FileDisk {
    /// Opens the log file at `path` for reading and appending, creating it (and its parent
    /// directory) if missing; a newly created file is made durable in its directory.
    pub fn open(path: &Path) -> io::Result<FileDisk> {
        let parent = path.parent().filter(|dir| !dir.as_os_str().is_empty());
        let dir_created = match parent {
            Some(dir) => create_dir(dir).map_err(context(dir, "create directory"))?,
            None => false,
        };
        let (file, file_created) = open_or_create(path).map_err(context(path, "open"))?;
        if file_created {
            sync_dir(parent.unwrap_or(Path::new(".")))?;
        }
        if dir_created {
            // The new directory's own entry lives in its parent; make that durable too.
            let grandparent = parent.and_then(Path::parent);
            let grandparent = grandparent.filter(|dir| !dir.as_os_str().is_empty());
            sync_dir(grandparent.unwrap_or(Path::new(".")))?;
        }
        let path = path.to_path_buf();
        Ok(FileDisk { path, file })
    }

    /// The file this disk writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_file(&mut self) -> io::Result<Vec<u8>> {
        // Appends ignore the position (O_APPEND), so seeking here cannot misplace a write.
        self.file.seek(SeekFrom::Start(0))?;
        let mut bytes = Vec::new();
        self.file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

impl Disk for FileDisk {
    async fn read_all(&mut self) -> io::Result<Vec<u8>> {
        self.read_file().map_err(context(&self.path, "read"))
    }

    async fn truncate(&mut self, len: u64) -> io::Result<()> {
        let path = &self.path;
        self.file.set_len(len).map_err(context(path, "truncate"))?;
        // sync_all, not sync_data: the new length is metadata and must survive too.
        self.file.sync_all().map_err(context(path, "fsync"))
    }

    async fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let path = &self.path;
        self.file.write_all(bytes).map_err(context(path, "append"))
    }

    async fn sync(&mut self) -> io::Result<()> {
        // fdatasync also flushes the file size when an append grew it, which is all we need.
        self.file.sync_data().map_err(context(&self.path, "fsync"))
    }
}

/// Creates `dir` and its ancestors; returns whether `dir` itself did not exist before.
fn create_dir(dir: &Path) -> io::Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    fs::create_dir_all(dir)?;
    Ok(true)
}

/// Opens `path` for read and append; the flag says whether this call created the file.
fn open_or_create(path: &Path) -> io::Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.read(true).append(true);
    // Try to create first, so "did we create it" is decided by the kernel, not by a race.
    match options.clone().create_new(true).open(path) {
        Ok(file) => Ok((file, true)),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            Ok((options.open(path)?, false))
        }
        Err(error) => Err(error),
    }
}

/// Makes the entries of `dir` durable, so a file created in it survives a power failure.
fn sync_dir(dir: &Path) -> io::Result<()> {
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

    /// A fresh, unique path under the system temp dir (no file created yet).
    fn scratch_path(name: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = format!("raftchat-file-disk-{}-{unique}", std::process::id());
        std::env::temp_dir().join(dir).join(name)
    }

    fn remove(path: &Path) {
        if let Some(dir) = path.parent() {
            let _ = fs::remove_dir_all(dir);
        }
    }

    #[tokio::test]
    async fn open_creates_the_file_and_its_directory() {
        let path = scratch_path("log");
        let mut disk = FileDisk::open(&path).unwrap();
        assert!(path.is_file());
        assert_eq!(disk.path(), path);
        assert_eq!(disk.read_all().await.unwrap(), b"");
        remove(&path);
    }

    #[tokio::test]
    async fn appended_bytes_read_back_in_order() {
        let path = scratch_path("log");
        let mut disk = FileDisk::open(&path).unwrap();
        disk.append(b"hello, ").await.unwrap();
        disk.append(b"world").await.unwrap();
        disk.sync().await.unwrap();
        assert_eq!(disk.read_all().await.unwrap(), b"hello, world");
        // Reading moved the position; an append must still land at the end.
        disk.append(b"!").await.unwrap();
        assert_eq!(disk.read_all().await.unwrap(), b"hello, world!");
        remove(&path);
    }

    #[tokio::test]
    async fn truncate_cuts_the_tail_and_appends_continue_after_it() {
        let path = scratch_path("log");
        let mut disk = FileDisk::open(&path).unwrap();
        disk.append(b"keep-torn").await.unwrap();
        disk.truncate(4).await.unwrap();
        assert_eq!(disk.read_all().await.unwrap(), b"keep");
        disk.append(b"-more").await.unwrap();
        assert_eq!(disk.read_all().await.unwrap(), b"keep-more");
        remove(&path);
    }

    #[tokio::test]
    async fn reopening_keeps_the_content() {
        let path = scratch_path("log");
        let mut disk = FileDisk::open(&path).unwrap();
        disk.append(b"durable").await.unwrap();
        disk.sync().await.unwrap();
        drop(disk);
        let mut disk = FileDisk::open(&path).unwrap();
        assert_eq!(disk.read_all().await.unwrap(), b"durable");
        disk.append(b"+").await.unwrap();
        assert_eq!(disk.read_all().await.unwrap(), b"durable+");
        remove(&path);
    }

    #[tokio::test]
    async fn errors_name_the_path() {
        let path = scratch_path("log");
        FileDisk::open(&path).unwrap();
        // A directory where the file should be cannot be opened as the log.
        let error = FileDisk::open(path.parent().unwrap()).unwrap_err();
        let dir = path.parent().unwrap().display().to_string();
        assert!(error.to_string().contains(&dir), "{error}");
        remove(&path);
    }
}
