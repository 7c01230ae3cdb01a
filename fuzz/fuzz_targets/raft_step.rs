//! One Raft node under any sequence of ticks, proposals and messages from its peers, including
//! messages no correct peer would send: it must never panic, and its own promises must hold
//! whatever it is told. Its term and commit index never go back, its vote never changes within
//! a term, its log terms never decrease, and a committed entry is never changed or removed.
//!
//! Numbers are drawn small (terms and indexes up to a few dozen) so messages agree with the
//! node's state often enough to drive it through every role; now and then a field is huge.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use raftchat::raft::{
    AppendOutcome, Config, Entry, EntryData, Message, MessageBody, Payload, Raft,
};
use raftchat::types::{LogIndex, NodeId, Term};
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
        let body = match u.int_in_range(0..=5)? {
            0 => MessageBody::RequestVote {
                pre_vote: u.arbitrary()?,
                last_log_index: index(u)?,
                last_log_term: term(u)?,
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
            },
            _ => MessageBody::HeartbeatResponse,
        };
        Ok(Input(Message {
            from: NodeId(u.int_in_range(1..=4)?),
            to: NodeId(if u.ratio(1, 16)? { 2 } else { 1 }),
            term: term(u)?,
            body,
        }))
    }
}

#[derive(Debug, Arbitrary)]
enum Action {
    Tick(u8),
    Propose(u8),
    Step(Input),
}

fuzz_target!(|input: (u64, Vec<Action>)| {
    let (seed, actions) = input;
    let config = Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)]);
    let mut raft = Raft::new(config, ChaCha8Rng::seed_from_u64(seed)).expect("a valid config");
    let mut committed: Vec<Entry> = Vec::new();
    let mut voted = (Term(0), None);
    for action in actions {
        let before = raft.status();
        match action {
            Action::Tick(count) => {
                for _ in 0..count % 32 {
                    raft.tick();
                    drain(&mut raft, &mut committed);
                }
            }
            Action::Propose(byte) => {
                let _ = raft.propose(Payload::new(vec![byte]));
            }
            Action::Step(Input(message)) => raft.step(message),
        }
        drain(&mut raft, &mut committed);
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
        for entry in &committed {
            let kept = log.get(entry.index.0 as usize - 1);
            assert_eq!(kept, Some(entry), "a committed entry changed");
        }
    }
});

/// Carries out every Ready as a host would, recording the entries handed out as committed.
fn drain(raft: &mut Raft, committed: &mut Vec<Entry>) {
    while let Some(ready) = raft.ready() {
        for entry in ready.committed_entries {
            assert_eq!(
                entry.index.0,
                committed.len() as u64 + 1,
                "applied out of order"
            );
            committed.push(entry);
        }
        raft.advance();
    }
}
