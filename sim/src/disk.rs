//! The simulated disk: one node's log file, with power loss modelled (madsim's own file system
//! does not model it: its `power_fail` and `sync_all` do nothing), as TigerBeetle's simulator
//! brings its own storage.
//!
//! The file is one byte buffer whose first `durable_len` bytes are on the platter and whose rest
//! was appended since the last sync: readable, but lost or torn by a power failure.
//!
//! Invariant: `durable_len <= data.len()`.
//! Invariant: a process kill loses nothing (unsynced bytes sit in the OS page cache); only
//! `power_fail` drops or damages unsynced bytes, and only those.
//! Invariant: a sync makes durable exactly the bytes appended before it began, and only once
//! its latency has elapsed. Each operation sleeps first and changes the state afterwards in
//! one step, so a node killed mid-operation (madsim drops its futures) leaves no trace of it.
//!
//! Latencies come from the handle's own seeded ChaCha RNG, so this module needs no global RNG
//! and builds unchanged with and without `--cfg madsim`; its sleeps are madsim-tokio's, hence
//! simulated time in the simulator. The state sits behind a `std::sync::Mutex` (madsim runs one
//! thread) that is never held across an await.
// This is a toolkit for the nemesis and the checkers, in a binary crate: whichever parts a
// given build (and the normal build, tests aside, uses none) leaves unused are not dead.

use std::fmt;
use std::io;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raftchat_node::disk::Disk;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Default latency of one append (a write into the page cache): a few microseconds.
pub const WRITE_LATENCY_DEFAULT: (Duration, Duration) =
    (Duration::from_micros(5), Duration::from_micros(20));

/// Default latency of one sync (an fsync on an SSD): about a millisecond.
pub const SYNC_LATENCY_DEFAULT: (Duration, Duration) =
    (Duration::from_micros(500), Duration::from_millis(2));

/// Counters of the operations a disk has completed, for traces and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Appends completed.
    pub appends: u64,
    /// Syncs completed.
    pub syncs: u64,
    /// Bytes appended.
    pub bytes_written: u64,
}

/// How far from the end of a torn tail a corrupting power failure flips a byte.
const TAIL_CORRUPTION_WINDOW_BYTES: usize = 8;

/// The durable state of one simulated node's disk; survives kills and restarts of the node
/// (the simulator holds it), shared with the nemesis.
#[derive(Clone)]
pub struct SimDiskHandle {
    inner: Arc<Mutex<DiskState>>,
}

struct DiskState {
    // Invariant: data[..durable_len] is durable; data[durable_len..] is the volatile tail.
    data: Vec<u8>,
    durable_len: usize,
    /// Power failures so far; an operation that straddles one must not take effect.
    power_cycle_count: u64,
    write_latency: RangeInclusive<Duration>,
    sync_latency: RangeInclusive<Duration>,
    rng: ChaCha8Rng,
    stats: DiskStats,
}

impl DiskState {
    fn volatile_len(&self) -> usize {
        self.data.len() - self.durable_len
    }

    fn draw(&mut self, latency: fn(&DiskState) -> &RangeInclusive<Duration>) -> Duration {
        let range = latency(self).clone();
        if range.start() == range.end() {
            return *range.start();
        }
        self.rng.gen_range(range)
    }

    fn assert_invariants(&self) {
        assert!(
            self.durable_len <= self.data.len(),
            "durable prefix beyond the file"
        );
    }
}

impl SimDiskHandle {
    /// An empty disk with the default latencies, drawn from an RNG seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let state = DiskState {
            data: Vec::new(),
            durable_len: 0,
            power_cycle_count: 0,
            write_latency: WRITE_LATENCY_DEFAULT.0..=WRITE_LATENCY_DEFAULT.1,
            sync_latency: SYNC_LATENCY_DEFAULT.0..=SYNC_LATENCY_DEFAULT.1,
            rng: ChaCha8Rng::seed_from_u64(seed),
            stats: DiskStats::default(),
        };
        SimDiskHandle {
            inner: Arc::new(Mutex::new(state)),
        }
    }

    /// Sets the (min, max) latency of each append and each sync.
    #[cfg(test)]
    pub fn set_latency(&self, write: (Duration, Duration), sync: (Duration, Duration)) {
        assert!(
            write.0 <= write.1,
            "write latency range is inverted: {write:?}"
        );
        assert!(sync.0 <= sync.1, "sync latency range is inverted: {sync:?}");
        let mut state = self.state();
        state.write_latency = write.0..=write.1;
        state.sync_latency = sync.0..=sync.1;
    }

    /// The `Disk` a node's runtime uses; each life of the node gets a new one on the same state.
    pub fn disk(&self) -> SimDisk {
        SimDisk {
            handle: self.clone(),
        }
    }

    /// Power failure: the volatile tail is lost; with `torn`, a random strict prefix of it
    /// survives (cut at an arbitrary byte, not a record boundary); with `corrupt`, one byte
    /// among the last few surviving ones is also flipped. Whatever survives is durable afterwards.
    /// The caller kills the node too: power loss takes the process with it. Returns a short
    /// description for the trace.
    pub fn power_fail(&self, rng: &mut impl Rng, torn: bool, corrupt: bool) -> String {
        let mut state = self.state();
        state.power_cycle_count += 1;
        let volatile_len = state.volatile_len();
        if volatile_len == 0 {
            return "no unsynced bytes".to_string();
        }
        let kept_len = if torn {
            rng.gen_range(0..volatile_len)
        } else {
            0
        };
        let durable_len = state.durable_len;
        let mut description = format!("lost {} unsynced bytes", volatile_len - kept_len);
        if torn {
            description += &format!(", kept {kept_len} torn");
        }
        if corrupt && kept_len > 0 {
            // The flip lands in the last few surviving bytes, i.e. in the record the power
            // failure interrupted: a corrupted tail record. A flip deeper in the unsynced tail,
            // with whole records after it, is indistinguishable on restart from damage to
            // synced data, and the node would rightly refuse to start.
            let window = kept_len.min(TAIL_CORRUPTION_WINDOW_BYTES);
            let offset = durable_len + kept_len - 1 - rng.gen_range(0..window);
            flip_byte(rng, &mut state.data, offset);
            description += &format!(", flipped byte at offset {offset}");
        }
        state.data.truncate(durable_len + kept_len);
        state.durable_len = state.data.len();
        state.assert_invariants();
        description
    }

    /// Frees the disk's contents at the end of a run (the handle itself may outlive the run).
    pub fn release(&self) {
        let mut state = self.state();
        state.data = Vec::new();
        state.durable_len = 0;
    }

    /// Appends `bytes` to the volatile tail as if the node had written them and not synced
    /// yet: the nemesis's stand-in for a write that a power failure leaves half-done.
    pub fn append_unsynced_garbage(&self, bytes: &[u8]) {
        self.state().data.extend_from_slice(bytes);
    }

    #[cfg(test)]
    pub fn durable_len(&self) -> u64 {
        self.state().durable_len as u64
    }

    /// The whole file, synced bytes then unsynced ones, as a node would read it (for checkers).
    pub fn contents(&self) -> Vec<u8> {
        self.state().data.clone()
    }

    /// What the disk has done so far.
    pub fn stats(&self) -> DiskStats {
        self.state().stats
    }

    fn state(&self) -> MutexGuard<'_, DiskState> {
        // A poisoned lock means a panic mid-update, which already fails the simulation.
        self.inner
            .lock()
            .expect("simulated disk state poisoned by a panic")
    }
}

impl fmt::Debug for SimDiskHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("SimDiskHandle")
            .field("len", &state.data.len())
            .field("durable_len", &state.durable_len)
            .field("stats", &state.stats)
            .finish()
    }
}

/// Flips one byte at `offset` with a random non-zero mask, so the byte surely changes.
fn flip_byte(rng: &mut impl Rng, data: &mut [u8], offset: usize) {
    data[offset] ^= rng.gen_range(1..=u8::MAX);
}

/// The `Disk` one life of a simulated node writes through; dropping it (a kill) loses nothing.
#[derive(Debug)]
pub struct SimDisk {
    handle: SimDiskHandle,
}

impl SimDisk {
    /// Sleeps for a latency drawn from the disk's RNG; returns the power cycle it started in.
    async fn wait(&self, latency: fn(&DiskState) -> &RangeInclusive<Duration>) -> u64 {
        let (delay, power_cycle_count) = {
            let mut state = self.handle.state();
            (state.draw(latency), state.power_cycle_count)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        power_cycle_count
    }
}

/// The error of an operation that a power failure interrupted (the nemesis should have killed
/// the node; this keeps a straddling write or sync from taking effect if it did not).
fn power_failed(operation: &str) -> io::Error {
    io::Error::other(format!("simulated disk: power failed during {operation}"))
}

impl Disk for SimDisk {
    async fn read_all(&mut self) -> io::Result<Vec<u8>> {
        Ok(self.handle.contents())
    }

    async fn truncate(&mut self, len: u64) -> io::Result<()> {
        let started_in = self.wait(|state| &state.sync_latency).await;
        let mut state = self.handle.state();
        if state.power_cycle_count != started_in {
            return Err(power_failed("truncate"));
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        assert!(
            len <= state.data.len(),
            "truncate to {len} beyond the file's end"
        );
        state.data.truncate(len);
        state.durable_len = len;
        state.assert_invariants();
        Ok(())
    }

    async fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let started_in = self.wait(|state| &state.write_latency).await;
        let mut state = self.handle.state();
        if state.power_cycle_count != started_in {
            return Err(power_failed("append"));
        }
        state.data.extend_from_slice(bytes);
        state.stats.appends += 1;
        state.stats.bytes_written += bytes.len() as u64;
        Ok(())
    }

    async fn sync(&mut self) -> io::Result<()> {
        // Only what was written when the fsync began is covered by it.
        let target_len = self.handle.state().data.len();
        let started_in = self.wait(|state| &state.sync_latency).await;
        let mut state = self.handle.state();
        if state.power_cycle_count != started_in {
            return Err(power_failed("sync"));
        }
        // A truncate during the sleep may have cut below the target; it made everything durable.
        let covered_len = target_len.min(state.data.len());
        state.durable_len = state.durable_len.max(covered_len);
        state.stats.syncs += 1;
        state.assert_invariants();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftchat::raft::{Entry, EntryData, HardState, Payload};
    use raftchat::storage::{encode_batch, recover};
    use raftchat::types::{LogIndex, Term};

    /// A disk with no latency, so the tests run at once in real time.
    fn instant_disk(seed: u64) -> (SimDiskHandle, SimDisk) {
        let handle = SimDiskHandle::new(seed);
        handle.set_latency(
            (Duration::ZERO, Duration::ZERO),
            (Duration::ZERO, Duration::ZERO),
        );
        let disk = handle.disk();
        (handle, disk)
    }

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    #[tokio::test]
    async fn unsynced_bytes_are_lost_by_a_power_failure() {
        let (handle, mut disk) = instant_disk(1);
        disk.append(b"synced").await.unwrap();
        disk.sync().await.unwrap();
        disk.append(b"volatile").await.unwrap();
        let description = handle.power_fail(&mut rng(1), false, false);
        assert_eq!(description, "lost 8 unsynced bytes");
        assert_eq!(handle.disk().read_all().await.unwrap(), b"synced");
        assert_eq!(handle.durable_len(), 6);
    }

    #[tokio::test]
    async fn synced_bytes_survive_a_power_failure() {
        let (handle, mut disk) = instant_disk(2);
        disk.append(b"one").await.unwrap();
        disk.append(b"two").await.unwrap();
        disk.sync().await.unwrap();
        assert_eq!(
            handle.power_fail(&mut rng(2), true, true),
            "no unsynced bytes"
        );
        assert_eq!(handle.contents(), b"onetwo");
        let stats = handle.stats();
        assert_eq!((stats.appends, stats.syncs, stats.bytes_written), (2, 1, 6));
    }

    #[tokio::test]
    async fn a_torn_power_failure_keeps_a_strict_prefix_of_the_unsynced_bytes() {
        let tail: Vec<u8> = (0..=255).collect();
        for seed in 0..100 {
            let (handle, mut disk) = instant_disk(seed);
            disk.append(b"base").await.unwrap();
            disk.sync().await.unwrap();
            disk.append(&tail).await.unwrap();
            handle.power_fail(&mut rng(seed), true, false);
            let after = handle.contents();
            assert!(
                after.len() < 4 + tail.len(),
                "seed {seed}: kept the whole tail"
            );
            assert_eq!(&after[..4], b"base");
            assert_eq!(&after[4..], &tail[..after.len() - 4], "seed {seed}");
            assert_eq!(handle.durable_len(), after.len() as u64);
        }
    }

    #[tokio::test]
    async fn a_corrupting_power_failure_flips_exactly_one_byte_of_the_kept_tail() {
        let tail = vec![0x5a; 300];
        for seed in 0..100 {
            let (handle, mut disk) = instant_disk(seed);
            disk.append(&[0xa5; 50]).await.unwrap();
            disk.sync().await.unwrap();
            disk.append(&tail).await.unwrap();
            let description = handle.power_fail(&mut rng(seed), true, true);
            let after = handle.contents();
            assert!(
                after[..50].iter().all(|&b| b == 0xa5),
                "seed {seed}: synced bytes hit"
            );
            let flipped = after[50..].iter().filter(|&&b| b != 0x5a).count();
            assert_eq!(
                flipped,
                usize::from(after.len() > 50),
                "seed {seed}: {description}"
            );
        }
    }

    #[tokio::test]
    async fn a_kill_keeps_unsynced_bytes() {
        let (handle, mut disk) = instant_disk(3);
        disk.append(b"in the page cache").await.unwrap();
        drop(disk);
        let mut restarted = handle.disk();
        assert_eq!(restarted.read_all().await.unwrap(), b"in the page cache");
        assert_eq!(handle.durable_len(), 0);
    }

    #[tokio::test]
    async fn a_sync_killed_before_its_latency_elapses_makes_nothing_durable() {
        let handle = SimDiskHandle::new(4);
        let slow = Duration::from_millis(50);
        handle.set_latency((Duration::ZERO, Duration::ZERO), (slow, slow));
        let mut disk = handle.disk();
        disk.append(b"pending").await.unwrap();
        let short = Duration::from_millis(5);
        assert!(tokio::time::timeout(short, disk.sync()).await.is_err());
        assert_eq!(handle.durable_len(), 0);
        handle.power_fail(&mut rng(4), false, false);
        assert!(handle.contents().is_empty());
    }

    #[tokio::test]
    async fn a_sync_covers_only_bytes_appended_before_it_began() {
        let handle = SimDiskHandle::new(5);
        let slow = Duration::from_millis(20);
        handle.set_latency((Duration::ZERO, Duration::ZERO), (slow, slow));
        let (mut syncer, mut writer) = (handle.disk(), handle.disk());
        syncer.append(b"before").await.unwrap();
        let (synced, appended) = tokio::join!(syncer.sync(), writer.append(b"during"));
        synced.unwrap();
        appended.unwrap();
        assert_eq!(handle.durable_len(), 6);
        assert_eq!(handle.contents(), b"beforeduring");
    }

    #[tokio::test]
    async fn truncate_cuts_the_file_and_makes_the_rest_durable() {
        let (handle, mut disk) = instant_disk(6);
        disk.append(b"good").await.unwrap();
        disk.append(b"torn").await.unwrap();
        disk.truncate(4).await.unwrap();
        assert_eq!(handle.contents(), b"good");
        assert_eq!(handle.durable_len(), 4);
        handle.power_fail(&mut rng(6), false, false);
        assert_eq!(disk.read_all().await.unwrap(), b"good");
    }

    #[tokio::test]
    async fn unsynced_garbage_is_volatile_and_not_counted_as_a_write() {
        let (handle, mut disk) = instant_disk(8);
        disk.append(b"log").await.unwrap();
        disk.sync().await.unwrap();
        handle.append_unsynced_garbage(b"junk");
        assert_eq!(disk.read_all().await.unwrap(), b"logjunk");
        assert_eq!((handle.durable_len(), handle.stats().bytes_written), (3, 3));
        handle.power_fail(&mut rng(8), false, false);
        assert_eq!(handle.contents(), b"log");
    }

    #[tokio::test]
    async fn a_corrupting_power_failure_flips_a_byte_near_the_end_of_the_torn_tail() {
        for seed in 0..100 {
            let (handle, mut disk) = instant_disk(seed);
            disk.append(&[0; 1000]).await.unwrap();
            handle.power_fail(&mut rng(seed), true, true);
            let after = handle.contents();
            let changed: Vec<usize> = (0..after.len()).filter(|&i| after[i] != 0).collect();
            assert!(changed.len() <= 1, "seed {seed}: {changed:?}");
            if let Some(&offset) = changed.first() {
                assert!(
                    offset + TAIL_CORRUPTION_WINDOW_BYTES >= after.len(),
                    "seed {seed}"
                );
            }
        }
    }

    fn entry(index: u64, size: usize) -> Entry {
        let data = EntryData::Command(Payload::new(vec![index as u8; size]));
        Entry {
            term: Term(1),
            index: LogIndex(index),
            data,
        }
    }

    fn hard_state(commit_index: u64) -> HardState {
        HardState {
            term: Term(1),
            vote: None,
            commit_index: LogIndex(commit_index),
        }
    }

    /// Writes random batches, syncing after some; returns (every entry, synced entry count).
    async fn write_log(disk: &mut SimDisk, rng: &mut ChaCha8Rng) -> (Vec<Entry>, usize) {
        let (mut written, mut synced_count) = (Vec::new(), 0);
        for _ in 0..rng.gen_range(1..8) {
            let first = written.len() as u64 + 1;
            let batch: Vec<Entry> = (first..first + rng.gen_range(1..5))
                .map(|index| entry(index, rng.gen_range(0..64)))
                .collect();
            let mut bytes = Vec::new();
            encode_batch(Some(&hard_state(first - 1)), &batch, &mut bytes).unwrap();
            disk.append(&bytes).await.unwrap();
            written.extend(batch);
            if rng.gen_bool(0.5) {
                disk.sync().await.unwrap();
                synced_count = written.len();
            }
        }
        (written, synced_count)
    }

    #[tokio::test]
    async fn a_torn_log_always_recovers_every_synced_entry_and_only_written_ones() {
        for seed in 0..200 {
            let (handle, mut disk) = instant_disk(seed);
            let mut rng = rng(seed);
            let (written, synced_count) = write_log(&mut disk, &mut rng).await;
            handle.power_fail(&mut rng, true, false);
            let mut disk = handle.disk();
            let bytes = disk.read_all().await.unwrap();
            let recovered = recover(&bytes).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let count = recovered.entries.len();
            assert!(count >= synced_count, "seed {seed}: lost a synced entry");
            assert_eq!(recovered.entries, written[..count], "seed {seed}");
            disk.truncate(recovered.valid_len).await.unwrap();
            assert_eq!(recover(&handle.contents()).unwrap().torn_tail, None);
        }
    }

    #[tokio::test]
    async fn a_corrupted_torn_log_is_refused_or_recovers_written_entries_only() {
        for seed in 0..200 {
            let (handle, mut disk) = instant_disk(seed);
            let mut rng = rng(seed);
            let (written, synced_count) = write_log(&mut disk, &mut rng).await;
            handle.power_fail(&mut rng, true, true);
            // A flipped byte followed by intact records reads as corruption: refusing is right.
            let Ok(recovered) = recover(&handle.contents()) else {
                continue;
            };
            let count = recovered.entries.len();
            assert!(count >= synced_count, "seed {seed}: lost a synced entry");
            assert_eq!(recovered.entries, written[..count], "seed {seed}");
        }
    }
}
