//! The node's data on disk: the log as a sequence of segment files, and snapshot files; their
//! recovery, and the deletions compaction allows. The host calls it at the steps the replica
//! prescribes; this module decides file names, order of writes and syncs, and what may go.
//!
//! Layout, all in one directory (anything else there, such as the server's identity file, is
//! left alone):
//!
//! - `log-{seq:016x}-{first:016x}.log`: a log segment (`storage`'s records). `seq` orders the
//!   segments; `first` is the index the log's next entry had when the segment was begun. Each
//!   segment begins with a hard state record, so deleting older segments loses none. A new
//!   segment is begun after a synced batch takes the active one past its size bound, and after
//!   a snapshot is installed; it is created, its first record synced, and the directory synced
//!   before anything that must be durable is written to it. Space is reserved ahead of the
//!   records, a step at a time (`Disk::reserve`: zeros, synced with the write that reserves
//!   them), so the syncs of most writes flush data alone; a segment may therefore end in
//!   zeros, which recovery reads as reserved space (`codec`'s rule 0), in any segment.
//! - `snap-{index:016x}-{term:016x}.snap`: a snapshot file (`storage::snapshot_file_header`,
//!   then the state machine's bytes), written as `….snap.tmp`, synced, renamed, and the
//!   directory synced, so it appears whole or not at all.
//! - `snap-{index:016x}-{term:016x}-{transfer:016x}.part`: a leader's snapshot being received
//!   (each transfer, numbered by this node, in a file of its own, so a transfer that begins
//!   while an earlier one is still being checked never touches its file): the header, then the
//!   chunks in order. Once whole it is synced, read back and checked, and renamed to its final
//!   name.
//!
//! Recovery reads everything before it changes anything: it loads the newest snapshot that
//! passes its checksums (skipping a damaged one for an older one), replays every segment, and
//! combines them by the rule of Raft §7 (`storage::combine`). Only then does it delete
//! temporary files and cut the last segment's torn tail or reserved zeros (appends go on where
//! its records end), so a directory it refuses is left exactly as it was.
//! If the newest snapshot is one the log never recorded and the log does not continue it (a
//! crash between a received snapshot's rename and its record), recovery writes that record
//! before anything else, so the stale entries can never be replayed before new ones.
//! A directory with no snapshot file at all is new (or was written by format 1): it gets the
//! initial snapshot, the state the cluster was created with.
//!
//! Compaction keeps what recovery may need: the newest snapshot, the one before it (in case
//! the newest is ever unreadable), and every segment holding entries after the older of the
//! two. Segment k may go once segment k+1 began at or before that point plus one: entries that
//! survive in segments up to k all come before k+1's first index (a later write at a lower
//! index only shortens the log). An installed snapshot ends the log before it, so after an
//! install only it is kept. A received snapshot that was not installed (the log caught up
//! first) is kept like any other: it is the committed state at its index. Segments are deleted
//! oldest first, the directory synced after each, so a power failure that undoes some
//! deletions leaves a contiguous run.

use crate::disk::{Disk, SyncOn};
use raftchat::chat::Chat;
use raftchat::raft::{HardState, Persisted, Snapshot, SnapshotChunk, SnapshotMeta};
use raftchat::replica::{Replica, Work};
use raftchat::storage::{self, Install, StorageError};
use raftchat::types::{LogIndex, Term};
use std::future::Future;
use std::io;

/// The longest tail recovery will cut as torn. A group write holds at most 8 MiB of rounds
/// (the host's bound), or one larger round, which holds at most what a leader can have in
/// flight to a follower (its whole window of appends) plus one round of proposals; this is
/// several times that, so a longer unreadable tail is not a crash's doing.
const TORN_TAIL_BYTES_MAX: u64 =
    4 * (raftchat::limits::INFLIGHT_APPENDS_MAX * raftchat::limits::APPEND_BYTES_MAX) as u64;

/// The most space reserved ahead of a segment's records at a time. Each reservation costs the
/// write that makes it a sync of this many zeros (about 0.7 ms for 1 MiB on a shared VM's
/// disk, against 0.2 ms for a small write); a quarter of the segment's size is the step when
/// that is less, so small segments (the simulator's) are reserved in several steps too.
const RESERVE_BYTES_MAX: u64 = 1024 * 1024;

/// Pieces a snapshot's bytes are written in, so no single write is larger.
const WRITE_PIECE_BYTES: usize = 1024 * 1024;
/// Bytes of a snapshot file written between two syncs of it.
const SNAPSHOT_SYNC_BYTES: usize = 2 * WRITE_PIECE_BYTES;

/// Why a data directory cannot be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// Reading the directory failed.
    #[error("disk error: {0}")]
    Disk(#[from] io::Error),
    /// A log segment is damaged, or the log is inconsistent.
    #[error("{file}: {error}")]
    Log {
        /// The segment (the last one, for a torn tail too long to be one).
        file: String,
        /// What is wrong.
        error: StorageError,
    },
    /// The snapshots and the log do not fit together, or no snapshot can be read.
    #[error("{0}")]
    Inconsistent(String),
}

/// What recovery found, for the host to start from and to report.
#[derive(Debug)]
pub struct Recovered {
    /// The state to restart Raft from; its snapshot is always there.
    pub persisted: Persisted,
    /// Bytes of torn tail cut from the last segment (what a crash left of a write; the
    /// reserved zeros after it, cut too, are not counted).
    pub torn_tail_bytes: u64,
    /// Snapshot files skipped because they failed their checks, with why.
    pub skipped_snapshots: Vec<String>,
    /// Whether the directory was new and got the initial snapshot.
    pub bootstrapped: bool,
}

/// One log segment.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    seq: u64,
    first_index: LogIndex,
    size_bytes: u64,
    /// Its file's name, formatted once: the active segment's is wanted at every write.
    name: String,
}

impl Segment {
    fn new(seq: u64, first_index: LogIndex) -> Segment {
        Segment {
            seq,
            first_index,
            size_bytes: 0,
            name: format!("log-{seq:016x}-{:016x}.log", first_index.0),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// The file name of the snapshot `meta`.
pub fn snapshot_name(meta: &SnapshotMeta) -> String {
    format!("snap-{:016x}-{:016x}.snap", meta.index.0, meta.term.0)
}

fn part_name(meta: &SnapshotMeta, transfer: u64) -> String {
    format!(
        "snap-{:016x}-{:016x}-{transfer:016x}.part",
        meta.index.0, meta.term.0
    )
}

fn parse_hex_pair(name: &str, prefix: &str, suffix: &str) -> Option<(u64, u64)> {
    let middle = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    let (a, b) = middle.split_once('-')?;
    let hex = |s: &str| (s.len() == 16).then(|| u64::from_str_radix(s, 16).ok())?;
    Some((hex(a)?, hex(b)?))
}

fn parse_segment(name: &str) -> Option<Segment> {
    let (seq, first) = parse_hex_pair(name, "log-", ".log")?;
    Some(Segment::new(seq, LogIndex(first)))
}

fn parse_snapshot(name: &str) -> Option<(LogIndex, Term)> {
    let (index, term) = parse_hex_pair(name, "snap-", ".snap")?;
    Some((LogIndex(index), Term(term)))
}

fn is_temporary(name: &str) -> bool {
    name.starts_with("snap-") && (name.ends_with(".snap.tmp") || name.ends_with(".part"))
}

/// A snapshot being received: which one, and the number of its transfer (its file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The snapshot.
    pub snapshot: SnapshotMeta,
    /// This node's number for the transfer.
    pub transfer: u64,
    /// Bytes of the file before the snapshot's data (its header).
    pub header_bytes: u64,
}

/// A node's durable state, as files.
#[derive(Debug)]
pub struct Durable<D> {
    disk: D,
    segment_bytes_max: u64,
    /// Oldest first; the last is the one appended to.
    segments: Vec<Segment>,
    /// How long the last segment's file is at least: its records, then zeros reserved for
    /// more (a lower bound: an append past it grows the file).
    reserved_to: u64,
    /// The snapshot files held, by (index, term), oldest first.
    snapshots: Vec<(LogIndex, Term)>,
    /// The newest installed snapshot's index: the log cannot be recovered from before it.
    install_floor: LogIndex,
    /// The hard state last written, which heads every new segment.
    hard_state: HardState,
    /// The index of the last entry written.
    last_index: LogIndex,
    /// The transfer whose chunks are being written.
    incoming: Option<Incoming>,
    next_transfer: u64,
}

impl<D: Disk> Durable<D> {
    /// Recovers the node's state from `disk` (see the module doc). `initial` is the snapshot a
    /// new directory starts from.
    pub async fn open(
        disk: D,
        segment_bytes_max: u64,
        initial: impl FnOnce() -> Snapshot,
    ) -> Result<(Durable<D>, Recovered), RecoveryError> {
        let names = disk.list().await?;
        let found = read_newest_snapshot(&disk, &names).await?;
        let (snapshot, snapshots, skipped) = (found.newest, found.held, found.skipped);
        let (mut segments, log) = read_log(&disk, &names).await?;
        check_reserved_zeros(&segments, &log)?;
        let torn_tail_bytes = torn_tail_bytes(&segments, &log)?;
        // Earlier segments are counted by their records, as the active one is; the last keeps
        // its whole length until `repair` cuts what follows its records.
        let earlier = segments.len().saturating_sub(1);
        for (segment, reserved) in segments[..earlier].iter_mut().zip(&log.reserved_lens) {
            segment.size_bytes -= reserved;
        }
        let valid_len = log.valid_len;
        #[cfg(feature = "mutants")]
        let valid_len = match segments.last() {
            Some(last)
                if torn_tail_bytes == 0
                    && raftchat::mutants::is_active(
                        raftchat::mutants::Mutant::KeepReservedZeros,
                    ) =>
            {
                last.size_bytes
            }
            _ => valid_len,
        };
        let bootstrapped = snapshot.is_none();
        let snapshot = match snapshot {
            Some(snapshot) => snapshot,
            None if skipped.is_empty() && log.base.is_none() && starts_at_one(&log) => initial(),
            None => {
                return Err(RecoveryError::Inconsistent(format!(
                    "no readable snapshot ({}), and the log does not start at index 1",
                    skipped.join("; ")
                )))
            }
        };
        let hard_state = log.hard_state;
        let base_index = log.base.map_or(LogIndex(0), |base| base.index);
        let combined = storage::combine(snapshot.clone(), log)
            .map_err(|e| RecoveryError::Inconsistent(format!("log and snapshot: {e}")))?;
        let (persisted, reset) = (combined.persisted, combined.reset);
        // A reset (its record is written below) starts the log again after the snapshot.
        let install_floor = if reset {
            snapshot.meta.index
        } else {
            base_index
        };
        let last_index = persisted
            .entries
            .last()
            .map_or(snapshot.meta.index, |e| e.index);
        let reserved_to = segments.last().map_or(0, |last| last.size_bytes);
        let mut durable = Durable {
            disk,
            segment_bytes_max,
            segments,
            reserved_to,
            snapshots,
            install_floor,
            hard_state,
            last_index,
            incoming: None,
            next_transfer: 1,
        };
        durable.repair(&names, &found.damaged, valid_len).await?;
        durable.prepare(&snapshot, bootstrapped, reset).await?;
        let recovered = Recovered {
            persisted,
            torn_tail_bytes,
            skipped_snapshots: skipped,
            bootstrapped,
        };
        Ok((durable, recovered))
    }

    /// What a crash leaves behind, removed once recovery has accepted the directory: temporary
    /// snapshot files, snapshot files that failed their checks (recovery did without them),
    /// and whatever follows the last segment's `valid_len` bytes of records: a torn tail, or
    /// reserved zeros (appends go on where the records end, and a new `Disk` appends where
    /// the file ends).
    async fn repair(
        &mut self,
        names: &[String],
        damaged: &[String],
        valid_len: u64,
    ) -> io::Result<()> {
        let useless: Vec<&String> = names
            .iter()
            .filter(|n| is_temporary(n))
            .chain(damaged)
            .collect();
        for name in &useless {
            self.disk.remove(name).await?;
        }
        if !useless.is_empty() {
            self.disk.sync_dir().await?;
        }
        let last = self.segments.last_mut();
        if let Some(last) = last.filter(|last| last.size_bytes > valid_len) {
            // Bytes past the last whole record were never synced (a crash mid-append) or are
            // zeros, so no promise rests on them: cut them before appending after the records.
            last.size_bytes = valid_len;
            self.reserved_to = valid_len;
            self.disk.truncate(last.name(), valid_len).await?;
        }
        Ok(())
    }

    /// The directory.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Bytes of log records on disk, over every segment (the zeros reserved after them not
    /// counted).
    pub fn log_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size_bytes).sum()
    }

    /// How many segments the log has.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Step 1 of a round of work: writes the chunks of a snapshot being received, then appends
    /// the log records and syncs them. After an install, begins a new segment and deletes
    /// what the install made useless. Returns the transfer whose file is now whole, if one is:
    /// the host checks it beside the loop ([`finish_incoming`]), or gives it up
    /// ([`Durable::abandon`]).
    pub async fn persist(&mut self, work: &Work) -> io::Result<Option<Incoming>> {
        let mut whole = None;
        for chunk in &work.snapshot_chunks {
            self.write_chunk(chunk).await?;
            if chunk.last {
                whole = Some(self.incoming.take().expect("the chunk's transfer"));
            }
        }
        if work.must_sync() {
            let active = self.segments.last_mut().expect("there is always a segment");
            let name = active.name();
            self.disk.append(name, &work.write).await?;
            self.disk.sync(name).await?;
            active.size_bytes += work.write.len() as u64;
            self.synced(work);
        }
        if let Some(installed) = work.installed() {
            // The log now continues after the snapshot: begin it afresh, and let everything
            // before it go.
            self.install_floor = installed.snapshot.index;
            self.begin_segment().await?;
            self.compact().await?;
        } else if self
            .segments
            .last()
            .is_some_and(|s| s.size_bytes >= self.segment_bytes_max)
        {
            self.begin_segment().await?;
        }
        Ok(whole)
    }

    /// The pipelined path, for rounds that write only log records (no snapshot chunks, no
    /// install): appends `bytes` to the active segment and syncs it, as a future that owns
    /// what it needs, so the node's loop goes on meanwhile (unless `on` lets the disk do it
    /// on the loop's thread). Where the next write goes is settled now: a failed write stops
    /// the node. One at a time, each reported with
    /// [`Durable::appended`] before the next begins or anything else touches the log.
    pub fn append(
        &mut self,
        bytes: Vec<u8>,
        on: SyncOn,
    ) -> impl Future<Output = io::Result<()>> + Send + use<D> {
        let active = self.segments.last().expect("there is always a segment");
        let end = active.size_bytes + bytes.len() as u64;
        let step = self.reserve_step();
        let reserve_to = if end + step / 2 > self.reserved_to {
            // Running out of reserved space: this write reserves the next step too.
            (end + step).min(self.segment_bytes_max)
        } else {
            0
        };
        self.reserved_to = self.reserved_to.max(reserve_to);
        self.disk
            .append_synced(active.name().to_owned(), bytes, reserve_to, on)
    }

    /// How much space one reservation adds to a segment.
    fn reserve_step(&self) -> u64 {
        (self.segment_bytes_max / 4).clamp(1, RESERVE_BYTES_MAX)
    }

    /// Records that a write [`Durable::append`] began is synced: `rounds`, in order, are on
    /// disk. Begins a new segment if the active one is full.
    pub async fn appended(
        &mut self,
        rounds: impl IntoIterator<Item = &Work>,
        bytes: usize,
    ) -> io::Result<()> {
        let active = self.segments.last_mut().expect("there is always a segment");
        active.size_bytes += bytes as u64;
        let full = active.size_bytes >= self.segment_bytes_max;
        for work in rounds.into_iter().filter(|work| work.must_sync()) {
            debug_assert!(work.snapshot_chunks.is_empty() && work.installed().is_none());
            self.synced(work);
        }
        if full {
            self.begin_segment().await?;
        }
        Ok(())
    }

    /// Records what a round's synced write changed: the hard state a new segment begins with,
    /// and where the log ends (not an install's index: an install may keep the log's suffix,
    /// written again after its record, and the next segment must begin after that suffix).
    fn synced(&mut self, work: &Work) {
        if let Some(hard_state) = work.hard_state() {
            self.hard_state = hard_state;
        }
        self.last_index = work.last_index();
    }

    /// The writes recovery owes before the node appends anything: the initial snapshot's file
    /// for a new directory, a first segment, and after a reset the record that starts the log
    /// again after `snapshot`.
    async fn prepare(
        &mut self,
        snapshot: &Snapshot,
        bootstrapped: bool,
        reset: bool,
    ) -> io::Result<()> {
        let meta = snapshot.meta;
        if bootstrapped {
            write_snapshot_file(&self.disk, snapshot).await?;
            self.snapshots.push((meta.index, meta.term));
        }
        if self.segments.is_empty() {
            self.begin_segment().await?;
        }
        if reset {
            // The log on disk holds entries that do not continue the snapshot (a crash came
            // between a received snapshot's file and its record). Entries appended after them
            // would replay as if they followed them: start the log again first.
            self.write_reset(&meta).await?;
        }
        Ok(())
    }

    /// Writes a record that the log starts again after `snapshot`, keeping nothing, synced.
    async fn write_reset(&mut self, snapshot: &SnapshotMeta) -> io::Result<()> {
        let install = Install {
            snapshot: *snapshot,
            kept_through: snapshot.index,
        };
        let mut record = Vec::new();
        storage::encode_batch(Some(&install), Some(&self.hard_state), &[], &mut record)
            .expect("a snapshot record always encodes");
        let active = self.segments.last_mut().expect("there is always a segment");
        let name = active.name();
        self.disk.append(name, &record).await?;
        self.disk.sync(name).await?;
        active.size_bytes += record.len() as u64;
        Ok(())
    }

    /// Begins a new segment, durable (file and directory) before it is used.
    async fn begin_segment(&mut self) -> io::Result<()> {
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let segment = Segment::new(seq, self.last_index.next());
        let mut header = Vec::new();
        storage::encode_batch(None, Some(&self.hard_state), &[], &mut header)
            .expect("a hard state always encodes");
        let name = segment.name().to_owned();
        let reserve_to = self.reserve_step().max(header.len() as u64);
        self.disk.append(&name, &header).await?;
        self.disk.reserve(&name, reserve_to).await?;
        self.disk.sync(&name).await?;
        self.disk.sync_dir().await?;
        self.segments.push(Segment {
            size_bytes: header.len() as u64,
            ..segment
        });
        self.reserved_to = reserve_to;
        Ok(())
    }

    /// Writes one received chunk at its place. A chunk at offset 0 begins a new transfer in a
    /// file of its own and abandons the previous one (its file is removed, unless it is whole
    /// and being checked); the others follow it in order (the core sends them so).
    async fn write_chunk(&mut self, chunk: &SnapshotChunk) -> io::Result<()> {
        let meta = chunk.snapshot;
        if chunk.offset == 0 {
            if let Some(previous) = self.incoming.take() {
                self.disk
                    .remove(&part_name(&previous.snapshot, previous.transfer))
                    .await?;
            }
            let transfer = self.next_transfer;
            self.next_transfer += 1;
            let mut bytes = storage::snapshot_file_header(&meta, &chunk.membership);
            self.incoming = Some(Incoming {
                snapshot: meta,
                transfer,
                header_bytes: bytes.len() as u64,
            });
            bytes.extend_from_slice(chunk.data.as_bytes());
            return self
                .disk
                .write_at(&part_name(&meta, transfer), 0, &bytes)
                .await;
        }
        let incoming = self
            .incoming
            .filter(|incoming| incoming.snapshot == meta)
            .expect("a chunk past offset 0 follows its transfer's first chunk");
        let offset = incoming.header_bytes + chunk.offset;
        let name = part_name(&meta, incoming.transfer);
        self.disk
            .write_at(&name, offset, chunk.data.as_bytes())
            .await
    }

    /// Gives up a whole transfer that will not be checked (a newer one arrived meanwhile):
    /// its file goes.
    pub async fn abandon(&mut self, incoming: Incoming) -> io::Result<()> {
        let name = part_name(&incoming.snapshot, incoming.transfer);
        self.disk.remove(&name).await
    }

    /// A snapshot file was made durable (taken by this node, or received): record it and
    /// delete what recovery no longer needs.
    pub async fn snapshot_added(&mut self, meta: SnapshotMeta) -> io::Result<()> {
        let key = (meta.index, meta.term);
        if !self.snapshots.contains(&key) {
            self.snapshots.push(key);
            self.snapshots.sort();
        }
        self.compact().await
    }

    /// Deletes the snapshot files and segments recovery can no longer need, oldest first.
    async fn compact(&mut self) -> io::Result<()> {
        let Some(newest) = self.snapshots.last().copied() else {
            return Ok(());
        };
        let floor = self.install_floor;
        let fallback = self
            .snapshots
            .iter()
            .rev()
            .nth(1)
            .filter(|(index, _)| *index >= floor && *index < newest.0)
            .copied();
        let keep_from = fallback.map_or(newest.0, |(index, _)| index);
        let mut removed = false;
        for key in self.snapshots.clone() {
            if key != newest && Some(key) != fallback {
                let (index, term) = key;
                let meta = SnapshotMeta {
                    index,
                    term,
                    ..SnapshotMeta::default()
                };
                self.disk.remove(&snapshot_name(&meta)).await?;
                self.snapshots.retain(|held| *held != key);
                removed = true;
            }
        }
        if removed {
            self.disk.sync_dir().await?;
        }
        while self.segments.len() > 1 && self.segments[1].first_index.0 <= keep_from.0 + 1 {
            // One at a time, each made durable before the next: a power failure undoes only
            // the newest deletions, so the segments left are always a contiguous run.
            let segment = self.segments.remove(0);
            self.disk.remove(segment.name()).await?;
            self.disk.sync_dir().await?;
        }
        Ok(())
    }
}

/// Refuses zeros after a segment's records longer than its reservations could leave: at most
/// a step of reserved space, and in the last segment also what a lost write left of its place
/// (its kept part may be all zeros). More is not this program's doing: synced records zeroed,
/// say.
fn check_reserved_zeros(
    segments: &[Segment],
    log: &storage::Recovered,
) -> Result<(), RecoveryError> {
    let last = log.reserved_lens.len().saturating_sub(1);
    for (k, &reserved) in log.reserved_lens.iter().enumerate() {
        let max = RESERVE_BYTES_MAX + if k == last { TORN_TAIL_BYTES_MAX } else { 0 };
        if reserved > max {
            let segment = &segments[k];
            let reason = format!(
                "{reserved} zero bytes after the records, more than space reserved ahead of \
                 them could leave; refusing to take them for reserved space"
            );
            let offset = segment.size_bytes - reserved;
            let error = StorageError::Inconsistent { offset, reason };
            return Err(RecoveryError::Log {
                file: segment.name().to_owned(),
                error,
            });
        }
    }
    Ok(())
}

/// The torn tail to cut from the last segment; refuses one longer than a crash could leave.
fn torn_tail_bytes(segments: &[Segment], log: &storage::Recovered) -> Result<u64, RecoveryError> {
    let torn_tail_bytes = match (segments.last(), log.torn_tail) {
        (Some(_), Some(torn)) => torn.written_len,
        _ => 0,
    };
    if torn_tail_bytes > TORN_TAIL_BYTES_MAX {
        // A crash tears at most the one batch being written. Anything longer is not a torn
        // append: a file from another program or format, never to be cut away.
        let file = segments.last().map_or_else(String::new, |s| s.name.clone());
        let reason = format!(
            "{torn_tail_bytes} bytes at the end do not form records, more than one write could \
             leave; refusing to truncate them"
        );
        let offset = log.valid_len;
        let error = StorageError::Inconsistent { offset, reason };
        return Err(RecoveryError::Log { file, error });
    }
    Ok(torn_tail_bytes)
}

fn starts_at_one(log: &storage::Recovered) -> bool {
    log.entries.first().is_none_or(|e| e.index == LogIndex(1))
}

/// What the snapshot files of a directory hold.
struct FoundSnapshots {
    /// The newest that passes its checks.
    newest: Option<Snapshot>,
    /// Every snapshot file up to it, by (index, term), oldest first.
    held: Vec<(LogIndex, Term)>,
    /// Newer files that failed their checks, by name.
    damaged: Vec<String>,
    /// Why each was skipped.
    skipped: Vec<String>,
}

/// Reads the snapshot files, newest first, until one passes its checks.
async fn read_newest_snapshot<D: Disk>(disk: &D, names: &[String]) -> io::Result<FoundSnapshots> {
    let mut files: Vec<(LogIndex, Term, &String)> = names
        .iter()
        .filter_map(|name| parse_snapshot(name).map(|(index, term)| (index, term, name)))
        .collect();
    files.sort();
    let mut found = FoundSnapshots {
        newest: None,
        held: Vec::new(),
        damaged: Vec::new(),
        skipped: Vec::new(),
    };
    for &(index, term, name) in files.iter().rev() {
        let decoded = storage::decode_snapshot_file(disk.read(name).await?);
        let why = match decoded {
            Ok(snapshot) if snapshot.meta.index == index && snapshot.meta.term == term => {
                found.newest = Some(snapshot);
                break;
            }
            Ok(_) => "its header names another snapshot".to_string(),
            Err(error) => error.to_string(),
        };
        found.skipped.push(format!("{name}: {why}"));
        found.damaged.push(name.clone());
    }
    if let Some(newest) = &found.newest {
        let newest = (newest.meta.index, newest.meta.term);
        found.held = files
            .iter()
            .map(|&(index, term, _)| (index, term))
            .filter(|key| *key <= newest)
            .collect();
    }
    Ok(found)
}

/// Reads and replays every segment, in order.
async fn read_log<D: Disk>(
    disk: &D,
    names: &[String],
) -> Result<(Vec<Segment>, storage::Recovered), RecoveryError> {
    let mut segments: Vec<Segment> = names.iter().filter_map(|n| parse_segment(n)).collect();
    segments.sort_by_key(|s| s.seq);
    let mut contents = Vec::with_capacity(segments.len());
    for segment in &mut segments {
        let bytes = disk.read(segment.name()).await?;
        segment.size_bytes = bytes.len() as u64;
        contents.push(bytes);
    }
    let slices: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
    let log = storage::recover_segments(&slices).map_err(|error| {
        // Name the segment: only the last one's tail is judged, so a whole-log error is
        // usually there, and the offset says where.
        let file = segments.last().map_or_else(String::new, |s| s.name.clone());
        RecoveryError::Log { file, error }
    })?;
    Ok((segments, log))
}

/// Writes a snapshot file so it appears whole or not at all: under a temporary name, synced,
/// renamed, and the directory synced. Its bytes go in pieces, so no single write is large, and
/// are synced every `SNAPSHOT_SYNC_BYTES` as they go (RocksDB's `bytes_per_sync`): one sync of
/// the whole file would flush tens of megabytes at once, and the log's own syncs, which every
/// commit waits on, would queue behind it.
pub async fn write_snapshot_file<D: Disk>(disk: &D, snapshot: &Snapshot) -> io::Result<()> {
    let name = snapshot_name(&snapshot.meta);
    let temporary = format!("{name}.tmp");
    disk.remove(&temporary).await?;
    disk.append(
        &temporary,
        &storage::snapshot_file_header(&snapshot.meta, &snapshot.membership),
    )
    .await?;
    let mut unsynced = 0;
    for piece in snapshot.data.as_bytes().chunks(WRITE_PIECE_BYTES) {
        disk.append(&temporary, piece).await?;
        unsynced += piece.len();
        if unsynced >= SNAPSHOT_SYNC_BYTES {
            disk.sync(&temporary).await?;
            unsynced = 0;
        }
    }
    disk.sync(&temporary).await?;
    disk.rename(&temporary, &name).await?;
    disk.sync_dir().await
}

/// Finishes receiving a snapshot: syncs its file, reads it back and checks it whole (the
/// file's checksums, then the chat state it decodes to), then makes it durable under its final
/// name. `Ok(Err(why))` when the snapshot is not good (its file is removed); `Err` for a disk
/// error.
pub async fn finish_incoming<D: Disk>(
    disk: &D,
    incoming: Incoming,
) -> io::Result<Result<(Snapshot, Chat), String>> {
    let meta = incoming.snapshot;
    let part = part_name(&meta, incoming.transfer);
    disk.sync(&part).await?;
    let bytes = disk.read(&part).await?;
    let checked = storage::decode_snapshot_file(bytes)
        .map_err(|e| e.to_string())
        .and_then(|snapshot| match snapshot.meta == meta {
            true => Ok(snapshot),
            false => Err("the received file names another snapshot".to_string()),
        })
        .and_then(|snapshot| Replica::decode_snapshot(&snapshot).map(|chat| (snapshot, chat)));
    match checked {
        Ok(decoded) => {
            disk.rename(&part, &snapshot_name(&meta)).await?;
            disk.sync_dir().await?;
            Ok(Ok(decoded))
        }
        Err(why) => {
            disk.remove(&part).await?;
            Ok(Err(why))
        }
    }
}
