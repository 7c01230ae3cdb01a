//! One Raft node under any sequence of ticks, proposals and messages from its peers, including
//! messages no correct peer would send, with snapshots of its own taken and a leader's
//! snapshots received: it must never panic, and its own promises must hold whatever it is
//! told. Its term and commit index never go back, its vote never changes within a term, its
//! log terms never decrease, a committed entry is never changed or removed (until a snapshot
//! covers it), and committed entries are handed out in order, from a snapshot on.
//!
//! Numbers are drawn small (terms and indexes up to a few dozen) so messages agree with the
//! node's state often enough to drive it through every role; now and then a field is huge.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use raftchat::raft::{
    AppendOutcome, Config, Entry, EntryData, Membership, Message, MessageBody, Payload, Raft,
    RoleKind, Snapshot, SnapshotMeta,
};
use raftchat::types::{LogIndex, NodeId, ReadId, Term};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn small(u: &mut Unstructured<'_>, max: u64) -> Result<u64> {
    if u.ratio(1, 64)? {
        u.arbitrary()
    } else {
        u.int_in_range(0..=max)
    }
}

fn term(u: &mut Unstructured<'_>) -> Result<Term> {
    Ok(Term(small(u, 12)?))
}

fn index(u: &mut Unstructured<'_>) -> Result<LogIndex> {
    Ok(LogIndex(small(u, 24)?))
}

#[derive(Debug)]
struct Input(Message);

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Input> {
        let body = match u.int_in_range(0..=9)? {
            0 => MessageBody::RequestVote {
                pre_vote: u.arbitrary()?,
                last_log_index: index(u)?,
                last_log_term: term(u)?,
                transfer: u.arbitrary()?,
            },
            1 => MessageBody::RequestVoteResponse {
                pre_vote: u.arbitrary()?,
                granted: u.arbitrary()?,
            },
            2 => {
                let prev_log_index = index(u)?;
                let mut entry_term = term(u)?;
                let mut entries = Vec::new();
                for k in 1..=u.int_in_range(0..=4)? {
                    entry_term = Term(entry_term.0.saturating_add(u.int_in_range(0..=1)?));
                    entries.push(Entry {
                        term: entry_term,
                        index: LogIndex(prev_log_index.0.saturating_add(k)),
                        data: if u.arbitrary()? {
                            EntryData::Noop
                        } else {
                            EntryData::Command(Payload::new(vec![u.arbitrary()?]))
                        },
                    });
                }
                MessageBody::AppendEntries {
                    prev_log_index,
                    prev_log_term: term(u)?,
                    entries,
                    leader_commit: index(u)?,
                }
            }
            3 => MessageBody::AppendEntriesResponse(if u.arbitrary()? {
                AppendOutcome::Accepted {
                    match_index: index(u)?,
                }
            } else {
                AppendOutcome::Rejected {
                    rejected_prev_index: index(u)?,
                    hint_index: index(u)?,
                    hint_term: term(u)?,
                }
            }),
            4 => MessageBody::Heartbeat {
                leader_commit: index(u)?,
                read_round: small(u, 8)?,
            },
            5 => {
                let snapshot = snapshot_meta(u)?;
                let offset = small(u, snapshot.size_bytes.saturating_add(2))?;
                let len = u.int_in_range(0..=3)?;
                MessageBody::InstallSnapshot {
                    snapshot,
                    membership: Membership::of_voters(&[NodeId(1), NodeId(2), NodeId(3)]),
                    offset,
                    data: Payload::new(vec![0x5a; len]),
                }
            }
            6 => MessageBody::InstallSnapshotResponse {
                snapshot: snapshot_meta(u)?,
                next_offset: small(u, 8)?,
                resend: u.arbitrary()?,
            },
            7 => MessageBody::ReadIndex {
                read: ReadId(small(u, 4)?),
            },
            8 => MessageBody::ReadIndexResponse {
                read: ReadId(small(u, 4)?),
                index: if u.arbitrary()? {
                    Some(index(u)?)
                } else {
                    None
                },
            },
            _ => MessageBody::HeartbeatResponse {
                read_round: small(u, 8)?,
            },
        };
        Ok(Input(Message {
            from: NodeId(u.int_in_range(1..=4)?),
            to: NodeId(if u.ratio(1, 16)? { 2 } else { 1 }),
            term: term(u)?,
            body,
        }))
    }
}

fn snapshot_meta(u: &mut Unstructured<'_>) -> Result<SnapshotMeta> {
    Ok(SnapshotMeta {
        index: index(u)?,
        term: term(u)?,
        size_bytes: small(u, 6)?,
        checksum: u.arbitrary()?,
    })
}

#[derive(Debug, Arbitrary)]
enum Action {
    Tick(u8),
    Propose(u8),
    /// A linearizable read.
    Read(u8),
    Step(Input),
    /// The host made a snapshot of the state at the applied index durable.
    TakeSnapshot,
    /// The host reports a received snapshot whole (a leader's, as far as it can tell).
    SnapshotReceived(u8),
    /// The host reports a received snapshot refused.
    SnapshotRefused(u8),
}

/// What the host of the node under test has seen of it.
#[derive(Default)]
struct Host {
    /// Entries handed out as committed since the last install, in index order.
    committed: Vec<Entry>,
    /// The index the state machine is at.
    applied_index: LogIndex,
    /// Snapshots whose last chunk was written, waiting to be reported.
    received: Vec<SnapshotMeta>,
}

fuzz_target!(|input: (u64, u8, Vec<Action>)| {
    let (seed, catch_up, actions) = input;
    let mut config = Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)]);
    config.snapshot_catch_up_entries = u64::from(catch_up % 4);
    config.snapshot_chunk_bytes_max = 2;
    let mut raft = Raft::new(config, ChaCha8Rng::seed_from_u64(seed)).expect("a valid config");
    let mut host = Host::default();
    let mut voted = (Term(0), None);
    for action in actions {
        let before = raft.status();
        match action {
            Action::Tick(count) => {
                for _ in 0..count % 32 {
                    raft.tick();
                    drain(&mut raft, &mut host);
                }
            }
            Action::Propose(byte) => {
                let _ = raft.propose(Payload::new(vec![byte]));
            }
            Action::Read(id) => raft.read_index(ReadId(u64::from(id))),
            Action::Step(Input(message)) => raft.step(message),
            Action::TakeSnapshot => {
                let index = host.applied_index;
                if let Some(term) = raft.log().term(index).filter(|_| index.0 > 0) {
                    let data = Payload::new(index.0.to_le_bytes().to_vec());
                    let compacted = raft.snapshot_taken(Snapshot::new(index, term, data));
                    assert!(compacted <= host.applied_index, "compacted past applied");
                }
            }
            Action::SnapshotReceived(pick) => {
                if !host.received.is_empty() {
                    let meta = host.received.remove(pick as usize % host.received.len());
                    let data = Payload::new(vec![0x5a; meta.size_bytes as usize]);
                    let membership = Membership::of_voters(&[NodeId(1), NodeId(2), NodeId(3)]);
                    let snapshot = Snapshot {
                        meta,
                        membership,
                        data,
                    };
                    if raft.snapshot_received(snapshot) {
                        assert!(
                            meta.index > before.commit_index,
                            "installed an old snapshot"
                        );
                        host.committed.clear();
                        host.applied_index = meta.index;
                    }
                }
            }
            Action::SnapshotRefused(pick) => {
                if !host.received.is_empty() {
                    let meta = host.received.remove(pick as usize % host.received.len());
                    raft.snapshot_refused(meta);
                }
            }
        }
        drain(&mut raft, &mut host);
        let after = raft.status();
        assert!(after.term >= before.term, "the term went back");
        assert!(
            after.commit_index >= before.commit_index,
            "the commit index went back"
        );
        assert!(after.commit_index <= after.last_index);
        let hard_state = raft.hard_state();
        if hard_state.term == voted.0 && voted.1.is_some() {
            assert_eq!(hard_state.vote, voted.1, "a second vote in one term");
        }
        voted = (hard_state.term, hard_state.vote);
        let log = raft.log().entries();
        assert!(
            log.windows(2).all(|w| w[0].term <= w[1].term),
            "log terms decrease"
        );
        let first = raft.log().first_index();
        for entry in host.committed.iter().filter(|e| e.index >= first) {
            let kept = log.get((entry.index.0 - first.0) as usize);
            assert_eq!(kept, Some(entry), "a committed entry changed");
        }
    }
});

/// Carries out every Ready as a host would, recording the entries handed out as committed and
/// the snapshots received whole.
fn drain(raft: &mut Raft, host: &mut Host) {
    while let Some(ready) = raft.ready() {
        for entry in ready.committed_entries {
            assert_eq!(
                entry.index,
                host.applied_index.next(),
                "applied out of order"
            );
            host.applied_index = entry.index;
            host.committed.push(entry);
        }
        for state in &ready.read_states {
            // A read index this node gives as leader is committed here; a leader's answer to
            // this node as follower may be ahead of its own commit, never of the leader's.
            if raft.status().role == RoleKind::Leader {
                if let Ok(index) = state.index {
                    assert!(
                        index <= raft.status().commit_index,
                        "a read index not committed"
                    );
                }
            }
        }
        for chunk in ready.snapshot_chunks {
            assert!(chunk.offset + chunk.data.len() as u64 <= chunk.snapshot.size_bytes);
            if chunk.last {
                host.received.push(chunk.snapshot);
            }
        }
        raft.advance();
    }
}
