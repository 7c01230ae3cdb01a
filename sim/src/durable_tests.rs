//! Power failure at every crash point of the node's data directory: a one-node replica writes
//! its log through segment rotations, takes snapshots, compacts its log and deletes old files,
//! on the simulated disk; the power fails instead of the Kth disk operation, for every K (and
//! with the unsynced bytes lost, torn, or torn and corrupted). Recovery must always succeed, and
//! the recovered node must reach the exact state (the chat digest) it had acknowledged.
//!
//! This is the directed form of what the snapshot scenarios do at random: it proves the order
//! of writes, syncs, renames and deletions in `raftchat_node::durable` at every step, not just
//! at the steps a seed happens to hit.

use crate::disk::SimDiskHandle;
use raftchat::chat::{Chat, ChatLimits, Command, Operation};
use raftchat::raft::{Config, Entry, EntryData, HardState, Payload, Snapshot};
use raftchat::replica::{Replica, SnapshotPolicy};
use raftchat::types::{ClientId, LogIndex, NodeId, Term};
use raftchat_node::disk::{Disk, SyncOn};
use raftchat_node::durable::{self, Durable};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

/// Commands each run proposes, one at a time.
const COMMANDS: u64 = 24;
/// A segment this small rotates every few batches.
const SEGMENT_BYTES: u64 = 300;

fn config() -> Config {
    let mut config = Config::new(NodeId(1), vec![NodeId(1)]);
    config.snapshot_catch_up_entries = 1;
    config
}

fn policy() -> SnapshotPolicy {
    SnapshotPolicy {
        log_entries: 4,
        log_bytes: u64::MAX,
    }
}

/// The index each applied entry reached, with the state's digest after it.
type Digests = BTreeMap<LogIndex, u64>;

/// Opens the node on `disk`: recovery, then the replica.
async fn open(handle: &SimDiskHandle) -> io::Result<(Durable<crate::disk::SimDisk>, Replica)> {
    let initial = || Replica::initial_snapshot(ChatLimits::default());
    let (durable, recovered) = Durable::open(handle.disk(), SEGMENT_BYTES, initial)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    let rng = ChaCha8Rng::seed_from_u64(1);
    let replica = Replica::recover(config(), policy(), rng, recovered.persisted)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok((durable, replica))
}

/// Carries out the replica's work as the host does (persist, then apply; snapshots written
/// and compacted in line), recording what was applied. A round that only appends to the log
/// takes the pipelined path (`Durable::append`, which reserves space ahead), as the host's do.
async fn settle(
    durable: &mut Durable<crate::disk::SimDisk>,
    replica: &mut Replica,
    applied: &mut Digests,
) -> io::Result<()> {
    while let Some(mut work) = replica.ready() {
        // Half the rounds take the other path, so both are proved at every crash point.
        let pipelined = work.last_index().0 % 2 == 0;
        if pipelined
            && work.must_sync()
            && work.snapshot_chunks.is_empty()
            && work.installed().is_none()
        {
            let bytes = work.write.clone();
            let len = bytes.len();
            durable.append(bytes, SyncOn::Beside).await?;
            durable.appended(std::slice::from_ref(&work), len).await?;
        } else {
            let whole = durable.persist(&work).await?;
            assert!(whole.is_none(), "a one-node cluster receives no snapshot");
        }
        work.messages.clear();
        work.messages_before_persist.clear();
        for entry in replica.complete(work).applied {
            applied.insert(entry.index, entry.digest);
        }
        if let Some(job) = replica.maybe_snapshot() {
            let snapshot = job.encode();
            durable::write_snapshot_file(durable.disk(), &snapshot).await?;
            let meta = snapshot.meta;
            replica.snapshot_taken(snapshot);
            durable.snapshot_added(meta).await?;
        }
    }
    Ok(())
}

/// Ticks a one-node replica until it leads.
async fn lead(
    durable: &mut Durable<crate::disk::SimDisk>,
    replica: &mut Replica,
    applied: &mut Digests,
) -> io::Result<()> {
    for _ in 0..100 {
        replica.tick();
        settle(durable, replica, applied).await?;
        if replica.status().leader == Some(NodeId(1)) {
            return Ok(());
        }
    }
    panic!("a one-node cluster elects itself");
}

/// A run of the node: every command it acknowledges (applied, hence synced), with the digest
/// after it. Stops at the first disk error (the armed power failure).
async fn run(handle: &SimDiskHandle, acknowledged: &mut Digests) -> io::Result<()> {
    let (mut durable, mut replica) = open(handle).await?;
    lead(&mut durable, &mut replica, acknowledged).await?;
    replica
        .propose(Command::RegisterClient)
        .expect("the leader accepts");
    settle(&mut durable, &mut replica, acknowledged).await?;
    let client_id = ClientId(2);
    for sequence in 1..=COMMANDS {
        let operation = match sequence % 3 {
            0 => Operation::CreateAccount {
                username: format!("u{sequence}"),
            },
            _ => Operation::SendMessage {
                from: format!("u{}", sequence - sequence % 3),
                to: "u3".into(),
                message: "x".repeat(sequence as usize * 7),
            },
        };
        let command = Command::Client {
            client_id,
            sequence,
            operation,
        };
        replica.propose(command).expect("the leader accepts");
        settle(&mut durable, &mut replica, acknowledged).await?;
    }
    Ok(())
}

/// After the power failure: recovery must succeed, and the node, once it leads again, must
/// reach every acknowledged index with the same state. Then it writes more, and a second
/// recovery (after a plain kill) must find that too: what the first left behind (a cut torn
/// tail, reserved zeros) must not spoil the writes after it.
async fn check_recovery(handle: &SimDiskHandle, acknowledged: &Digests, case: &str) {
    let (mut durable, mut replica) = open(handle)
        .await
        .unwrap_or_else(|e| panic!("{case}: recovery failed: {e}"));
    let mut replayed = Digests::new();
    let start = replica.status().applied_index;
    replayed.insert(start, replica.chat().digest());
    lead(&mut durable, &mut replica, &mut replayed)
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    check_writes_after_recovery(handle, &mut durable, &mut replica, case).await;
    let Some((&last, &digest)) = acknowledged.iter().next_back() else {
        return;
    };
    assert!(
        start <= last || acknowledged.is_empty(),
        "{case}: recovered a snapshot at {start}, past the last acknowledged index {last}"
    );
    assert_eq!(
        replayed.get(&last),
        Some(&digest),
        "{case}: the state at the last acknowledged index {last} differs after recovery \
         (recovered from {start}, replayed to {:?})",
        replayed.keys().next_back()
    );
}

/// The recovered node registers a client and applies it; then it is killed (nothing lost) and
/// recovered again, and must hold the same state.
async fn check_writes_after_recovery(
    handle: &SimDiskHandle,
    durable: &mut Durable<crate::disk::SimDisk>,
    replica: &mut Replica,
    case: &str,
) {
    let mut applied = Digests::new();
    replica
        .propose(Command::RegisterClient)
        .expect("the leader accepts");
    settle(durable, replica, &mut applied)
        .await
        .unwrap_or_else(|e| panic!("{case}: writing after recovery: {e}"));
    let (&last, &digest) = applied.iter().next_back().expect("the command applied");
    let (mut durable, mut again) = open(handle)
        .await
        .unwrap_or_else(|e| panic!("{case}: second recovery failed: {e}"));
    let mut replayed = Digests::new();
    replayed.insert(again.status().applied_index, again.chat().digest());
    lead(&mut durable, &mut again, &mut replayed)
        .await
        .unwrap_or_else(|e| panic!("{case}: after the second recovery: {e}"));
    assert_eq!(
        replayed.get(&last),
        Some(&digest),
        "{case}: the write after the first recovery is lost or differs after the second"
    );
}

/// How many disk operations a whole run takes.
async fn operations_of_a_whole_run() -> u64 {
    let handle = SimDiskHandle::new(7);
    handle.set_latency(
        (Duration::ZERO, Duration::ZERO),
        (Duration::ZERO, Duration::ZERO),
    );
    handle.power_fail_after(u64::MAX, false, false, 0);
    let mut acknowledged = Digests::new();
    run(&handle, &mut acknowledged)
        .await
        .expect("no failure armed");
    assert!(
        acknowledged.len() as u64 > COMMANDS,
        "every command applied"
    );
    handle.operations_done()
}

#[tokio::test]
async fn a_power_failure_at_any_disk_operation_loses_nothing_acknowledged() {
    let total = operations_of_a_whole_run().await;
    assert!(total > 100, "a run exercises the disk: {total} operations");
    for k in 0..total {
        for (torn, corrupt) in [(false, false), (true, false), (true, true)] {
            let handle = SimDiskHandle::new(k);
            handle.set_latency(
                (Duration::ZERO, Duration::ZERO),
                (Duration::ZERO, Duration::ZERO),
            );
            handle.power_fail_after(k, torn, corrupt, k.wrapping_mul(31) ^ 5);
            let mut acknowledged = Digests::new();
            let result = run(&handle, &mut acknowledged).await;
            assert!(result.is_err(), "the failure at operation {k} struck");
            let case = format!(
                "power failure at operation {k} of {total} (torn {torn}, corrupt {corrupt})"
            );
            check_recovery(&handle, &acknowledged, &case).await;
        }
    }
}

/// Zeros after a segment's records are reserved space only as far as reservations go: a
/// longer run (synced records zeroed, say) is refused, naming the segment, and left alone.
#[tokio::test]
async fn zeros_longer_than_a_reservation_are_refused() {
    for (first_zeros, last_zeros, refused) in [
        (1024 * 1024, 0, false),
        (1024 * 1024 + 1, 0, true),
        (0, 64 * 1024 * 1024, false),
    ] {
        let handle = SimDiskHandle::new(5);
        handle.set_latency(
            (Duration::ZERO, Duration::ZERO),
            (Duration::ZERO, Duration::ZERO),
        );
        let disk = handle.disk();
        let hard_state = HardState {
            term: Term(1),
            vote: None,
            commit_index: LogIndex(0),
        };
        let mut records = Vec::new();
        raftchat::storage::encode_batch(None, Some(&hard_state), &[], &mut records).unwrap();
        let first = format!("log-{:016x}-{:016x}.log", 1, 1);
        let second = format!("log-{:016x}-{:016x}.log", 2, 1);
        for (name, zeros) in [(&first, first_zeros), (&second, last_zeros)] {
            disk.append(name, &records).await.unwrap();
            disk.reserve(name, (records.len() + zeros) as u64)
                .await
                .unwrap();
            disk.sync(name).await.unwrap();
        }
        disk.sync_dir().await.unwrap();
        let before = handle.contents(&first);
        match open(&handle).await {
            Ok(_) => assert!(!refused, "{first_zeros} zeros taken for reserved space"),
            Err(error) => {
                assert!(refused, "{first_zeros} zeros refused: {error}");
                assert!(error.to_string().contains(&first), "{error}");
                assert_eq!(handle.contents(&first), before, "left alone");
            }
        }
    }
}

/// A crash between a received snapshot's file and its log record leaves a log whose tail does
/// not continue the snapshot (entries of an old term, never committed). Recovery must start
/// the log again after the snapshot before appending anything: else what the node writes next
/// replays after that stale tail, and recovery drops it with the tail.
#[tokio::test]
async fn a_log_that_does_not_continue_the_newest_snapshot_is_started_again() {
    let handle = SimDiskHandle::new(11);
    handle.set_latency(
        (Duration::ZERO, Duration::ZERO),
        (Duration::ZERO, Duration::ZERO),
    );
    let disk = handle.disk();
    let stale: Vec<Entry> = (1..=6)
        .map(|index| Entry {
            term: Term(1),
            index: LogIndex(index),
            data: EntryData::Noop,
        })
        .collect();
    let mut log = Vec::new();
    let hard_state = |term| HardState {
        term: Term(term),
        vote: None,
        commit_index: LogIndex(0),
    };
    raftchat::storage::encode_batch(None, Some(&hard_state(1)), &stale, &mut log).unwrap();
    raftchat::storage::encode_batch(None, Some(&hard_state(2)), &[], &mut log).unwrap();
    let segment = format!("log-{:016x}-{:016x}.log", 1, 1);
    disk.append(&segment, &log).await.unwrap();
    disk.sync(&segment).await.unwrap();
    let mut chat = Chat::with_limits(ChatLimits::default());
    for index in 1..=3 {
        chat.apply_noop(LogIndex(index));
    }
    let snapshot = Snapshot::new(LogIndex(3), Term(2), Payload::new(chat.snapshot()));
    durable::write_snapshot_file(&disk, &snapshot)
        .await
        .unwrap();

    let mut acknowledged = Digests::new();
    let (mut durable, mut replica) = open(&handle).await.expect("recovers");
    assert_eq!(
        replica.status().last_index,
        LogIndex(3),
        "the stale tail is dropped"
    );
    lead(&mut durable, &mut replica, &mut acknowledged)
        .await
        .unwrap();
    replica
        .propose(Command::RegisterClient)
        .expect("the leader accepts");
    settle(&mut durable, &mut replica, &mut acknowledged)
        .await
        .unwrap();
    assert!(acknowledged.keys().next_back() > Some(&LogIndex(4)));
    check_recovery(&handle, &acknowledged, "reopened after the reset").await;
}
