//! What a node reports about itself as it runs: a hook for traces and checkers. The production
//! server installs none; the simulator installs one that records a trace and checks safety
//! properties after every event. Per-message events are only produced when asked for, so a node
//! without a tracing observer pays nothing for them.

use raftchat::raft::{Entry, HardState, Message, SnapshotMeta, Status};
use raftchat::replica::Applied;
use raftchat::storage::Install;
use raftchat::types::{LogIndex, NodeId};
use std::time::Duration;

/// Something that happened in a node's runtime.
#[derive(Debug)]
pub enum Event<'a> {
    /// The node recovered its state from disk and is about to run.
    Recovered {
        /// The recovered hard state.
        hard_state: HardState,
        /// The snapshot it starts from (index 0 for a new data directory).
        snapshot: SnapshotMeta,
        /// The digest of the snapshot's state.
        snapshot_digest: u64,
        /// The recovered log after the snapshot.
        entries: &'a [Entry],
        /// Bytes of torn tail that were cut off.
        torn_tail_bytes: u64,
        /// Snapshot files skipped because they failed their checks, with why.
        skipped_snapshots: &'a [String],
    },
    /// Role, term, leader, commit or applied index changed.
    Status(Status),
    /// A round's log writes were handed to the disk: the node's log holds them from now on,
    /// and they are durable once `Persisted` reports them (rounds are persisted in order).
    Handed {
        /// The log entries; each replaces any entry at its index or later.
        entries: &'a [Entry],
        /// A snapshot recorded as installed, before the entries.
        installed: Option<Install>,
    },
    /// A batch was written and synced.
    Persisted {
        /// Bytes written.
        bytes: usize,
        /// The log entries it held; each replaces any entry at its index or later.
        entries: &'a [Entry],
        /// A snapshot it recorded as installed, before the entries: the log starts again after
        /// it, with the entries the record keeps.
        installed: Option<Install>,
    },
    /// A snapshot of this node's state was made durable, and the log compacted behind it.
    SnapshotTaken {
        /// The snapshot.
        snapshot: SnapshotMeta,
        /// The digest of the state it holds.
        digest: u64,
        /// The log in memory is compacted through this index.
        compacted_through: LogIndex,
        /// The applied index when it was compacted.
        applied_index: LogIndex,
        /// How long copying the state held the node's loop (the rest runs beside it).
        loop_held: Duration,
        /// From the copy to the file durable and the log compacted.
        took: Duration,
    },
    /// A leader's snapshot was installed: the state machine now holds its state.
    SnapshotInstalled {
        /// The snapshot.
        snapshot: SnapshotMeta,
        /// The digest of the state it holds.
        digest: u64,
    },
    /// A leader's snapshot arrived whole but failed its checks; the transfer starts over.
    SnapshotRefused {
        /// The snapshot.
        snapshot: SnapshotMeta,
        /// Why.
        reason: &'a str,
    },
    /// A Raft message was handed to the transport.
    Sent(&'a Message),
    /// A Raft message arrived from a peer.
    Received(&'a Message),
    /// A committed entry was applied.
    Applied(&'a Applied),
    /// The node refused to start from its data directory (it stays down).
    RecoveryFailed {
        /// Why.
        reason: &'a str,
    },
    /// The node stopped on a fatal error.
    Stopped {
        /// Why.
        reason: &'a str,
    },
    /// The configuration in force on the node changed (at start, too): a configuration entry
    /// was appended or truncated, or came with a snapshot.
    Membership {
        /// The configuration now in force.
        membership: &'a raftchat::raft::Membership,
        /// The index of the entry that made it (or of the snapshot, or 0 for the bootstrap).
        index: raftchat::types::LogIndex,
    },
    /// The leader began handing leadership over to `target` (thesis §3.10), or, with `None`,
    /// its transfer ended: the target took over, or it was abandoned.
    Transfer {
        /// The voter being brought up to date to take over.
        target: Option<NodeId>,
    },
}

/// Receives a node's events. Implementations must be cheap: they run inside the node's loop.
pub trait Observer: Send + Sync + 'static {
    /// Whether `Sent` and `Received` events are wanted.
    fn wants_messages(&self) -> bool {
        false
    }

    /// Called for every event, in the order they happen.
    fn event(&self, node: NodeId, event: &Event<'_>);
}

/// An observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn event(&self, _node: NodeId, _event: &Event<'_>) {}
}
