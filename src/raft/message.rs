//! What Raft persists and what it sends: log entries, the hard state, and every message of the
//! protocol (Raft Figure 2, plus pre-vote from thesis §9.6 and heartbeats as etcd splits them).
//!
//! These are plain serde types; framing and checksums live in `codec`, so the same types travel
//! on the wire, land on disk, and appear in traces.

use super::confchange::Membership;
use crate::types::{LogIndex, NodeId, ReadId, Term};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

/// An opaque, cheaply cloned command payload. A log entry is cloned into every AppendEntries
/// that carries it; sharing the bytes keeps that a reference-count bump instead of a copy.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Payload(Arc<[u8]>);

impl Payload {
    /// Wraps encoded command bytes.
    pub fn new(bytes: Vec<u8>) -> Payload {
        Payload(bytes.into())
    }

    /// The encoded command.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for a zero-length payload.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A copy of the bytes in `range`, as a payload of its own (a snapshot chunk).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Payload {
        Payload(self.0[range].into())
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        struct BytesVisitor;
        impl<'de> serde::de::Visitor<'de> for BytesVisitor {
            type Value = Payload;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload(v.into()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload(v.into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Payload, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(Payload(bytes.into()))
            }
        }
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryData {
    /// The entry a new leader appends at the start of its term (Raft §8): committing it commits
    /// every earlier entry, which a leader may not do by counting replicas (§5.4.2).
    Noop,
    /// A state machine command, encoded by the layer above Raft.
    Command(Payload),
    /// A new configuration, in force from the moment it is appended (see `confchange`).
    Membership(Membership),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created it.
    pub term: Term,
    /// Its position in the log.
    pub index: LogIndex,
    /// What it carries.
    pub data: EntryData,
}

impl Entry {
    /// Bytes of payload, the unit of the AppendEntries size budget.
    pub fn payload_size_bytes(&self) -> usize {
        match &self.data {
            EntryData::Noop => 0,
            EntryData::Command(payload) => payload.len(),
            EntryData::Membership(membership) => membership
                .members
                .values()
                .map(|member| member.address.len() + 16)
                .sum(),
        }
    }
}

/// Where a snapshot ends and how to check its bytes: the last log index it covers and that
/// entry's term (Raft §7), and the size and CRC-32 of the state machine's bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SnapshotMeta {
    /// The last index the snapshot covers.
    pub index: LogIndex,
    /// The term of the entry at `index`.
    pub term: Term,
    /// Length of the state machine's bytes.
    pub size_bytes: u64,
    /// CRC-32 of the state machine's bytes.
    pub checksum: u32,
}

/// A snapshot: its metadata, the configuration in force at its index, and the state machine's
/// bytes, opaque to Raft. Cloning shares the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Where it ends, and the checksum of `data`.
    pub meta: SnapshotMeta,
    /// The configuration in force at `meta.index`. Empty stands for the bootstrap
    /// configuration (the cluster file's voters): the initial state, and snapshot files
    /// written before configurations were part of snapshots.
    pub membership: Membership,
    /// The state machine's state at `meta.index`.
    pub data: Payload,
}

impl Snapshot {
    /// The snapshot of the state `data` at `index` (of `term`), with its size and checksum.
    pub fn new(index: LogIndex, term: Term, data: Payload) -> Snapshot {
        let meta = SnapshotMeta {
            index,
            term,
            size_bytes: data.len() as u64,
            checksum: crc32fast::hash(data.as_bytes()),
        };
        Snapshot {
            meta,
            membership: Membership::default(),
            data,
        }
    }

    /// The same snapshot, with the configuration in force at its index.
    pub fn with_membership(self, membership: Membership) -> Snapshot {
        Snapshot { membership, ..self }
    }

    /// Whether `data` has the size and checksum the metadata promises.
    pub fn is_intact(&self) -> bool {
        self.data.len() as u64 == self.meta.size_bytes
            && crc32fast::hash(self.data.as_bytes()) == self.meta.checksum
    }
}

/// The state Raft must persist before it answers any RPC (Raft Figure 2, "persistent state").
/// `commit_index` is not required for safety; it is kept so a restarted node can re-apply its
/// committed prefix without waiting for a leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// Whom this node voted for in `term`, if anyone.
    pub vote: Option<NodeId>,
    /// The highest index known committed.
    pub commit_index: LogIndex,
}

/// A protocol message between two members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// The sender's term; for a pre-vote request, the term it would campaign in.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// RequestVote (Raft §5.2), or a pre-vote probe (thesis §9.6) that changes no one's term.
    RequestVote {
        /// True for a pre-vote: "would you vote for me?" without disturbing anyone.
        pre_vote: bool,
        /// The candidate's last log index, for the up-to-date check (§5.4.1).
        last_log_index: LogIndex,
        /// The candidate's last log term.
        last_log_term: Term,
        /// The leader asked for this election (TimeoutNow, leadership transfer, thesis
        /// §3.10): a voter that heard from that leader recently votes anyway.
        transfer: bool,
    },
    /// The answer to a RequestVote.
    RequestVoteResponse {
        /// Echoes the request's kind.
        pre_vote: bool,
        /// Whether the vote (or pre-vote) was granted.
        granted: bool,
    },
    /// AppendEntries (Raft §5.3): replicate `entries` after the leader's entry at
    /// `prev_log_index`, and tell the follower how far the log is committed.
    AppendEntries {
        /// Index of the entry just before `entries`.
        prev_log_index: LogIndex,
        /// Term of the entry at `prev_log_index`.
        prev_log_term: Term,
        /// The entries, contiguous from `prev_log_index + 1`; empty for a probe.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
    },
    /// The answer to an AppendEntries.
    AppendEntriesResponse(AppendOutcome),
    /// A leader's periodic "I am alive", carrying a commit index the recipient is known to hold
    /// (min of its match index and the leader's commit), so it never needs a log check.
    Heartbeat {
        /// Commit index the follower may advance to.
        leader_commit: LogIndex,
        /// The leader's newest read round (ReadIndex, thesis §6.4), echoed in the answer.
        read_round: u64,
    },
    /// The answer to a heartbeat; it tells the leader the follower is reachable (check-quorum),
    /// lets it resume a paused replication, and confirms its leadership as of a read round.
    HeartbeatResponse {
        /// The heartbeat's read round (0 for an answer to a stale leader's heartbeat).
        read_round: u64,
    },
    /// A follower asks the leader for a read index on behalf of a read it was asked to serve.
    ReadIndex {
        /// The follower's identity for the read.
        read: ReadId,
    },
    /// The leader's answer to a `ReadIndex`: the read may be served once the follower has
    /// applied through `index`; none if the recipient could not give one (it does not lead).
    ReadIndexResponse {
        /// The read it answers.
        read: ReadId,
        /// The read index, if given.
        index: Option<LogIndex>,
    },
    /// InstallSnapshot (Raft §7): one chunk of the leader's snapshot, for a follower that needs
    /// entries the leader has compacted. Chunks go in order; the follower writes each at
    /// `offset` of a file for `snapshot` and installs it once every byte is in and checked.
    InstallSnapshot {
        /// The snapshot being sent.
        snapshot: SnapshotMeta,
        /// The configuration in force at the snapshot's index (never empty).
        membership: Membership,
        /// Where `data` starts in the snapshot's bytes.
        offset: u64,
        /// The chunk; empty for a probe at the end of the snapshot.
        data: Payload,
    },
    /// The answer to an InstallSnapshot chunk. Once the snapshot is installed (or found not to
    /// be needed) the follower answers with an `AppendEntriesResponse` instead, carrying its
    /// new match index.
    InstallSnapshotResponse {
        /// The snapshot the answer is about.
        snapshot: SnapshotMeta,
        /// How many bytes of it the follower holds, in order: where the next chunk must start.
        next_offset: u64,
        /// The chunk did not start at `next_offset` (one was lost or reordered), or the
        /// follower started over: send again from `next_offset`.
        resend: bool,
    },
    /// Leadership transfer (thesis §3.10): the leader has brought the recipient up to date and
    /// stopped taking proposals; the recipient campaigns at once, skipping pre-vote.
    TimeoutNow,
}

/// How a follower answered an AppendEntries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The follower's log now matches the leader's up to `match_index`.
    Accepted {
        /// Highest index known to match the leader's log.
        match_index: LogIndex,
    },
    /// The consistency check failed at `rejected_prev_index`. The hint is the follower's
    /// last entry at or before it whose term is at most the leader's `prev_log_term`: every
    /// entry after the hint is certain to disagree, so the leader skips a whole term per round
    /// trip instead of one entry (fast backtracking).
    Rejected {
        /// The `prev_log_index` of the rejected request, to spot stale rejections.
        rejected_prev_index: LogIndex,
        /// Index of the follower's hint entry (0 for the empty prefix).
        hint_index: LogIndex,
        /// Term of the follower's hint entry.
        hint_term: Term,
    },
}

impl MessageBody {
    /// A short, stable name for traces.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre_vote: true, .. } => "pre_vote",
            MessageBody::RequestVote { .. } => "request_vote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "pre_vote_response",
            MessageBody::RequestVoteResponse { .. } => "request_vote_response",
            MessageBody::AppendEntries { .. } => "append_entries",
            MessageBody::AppendEntriesResponse(_) => "append_entries_response",
            MessageBody::Heartbeat { .. } => "heartbeat",
            MessageBody::HeartbeatResponse { .. } => "heartbeat_response",
            MessageBody::ReadIndex { .. } => "read_index",
            MessageBody::ReadIndexResponse { .. } => "read_index_response",
            MessageBody::InstallSnapshot { .. } => "install_snapshot",
            MessageBody::InstallSnapshotResponse { .. } => "install_snapshot_response",
            MessageBody::TimeoutNow => "timeout_now",
        }
    }
}
