//! Raft's claims, one test each, named after the paper's sections (in the spirit of etcd's
//! raft_paper_test.go), plus the production additions: pre-vote, check-quorum, fast
//! backtracking, pipelining and batching. A tiny synchronous network drives whole clusters.

use super::*;
use rand::SeedableRng;
use std::collections::BTreeSet;

fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

fn config(id: u64, n: u64) -> Config {
    Config {
        pre_vote: false,
        check_quorum: false,
        ..Config::new(NodeId(id), ids(n))
    }
}

fn raft_with(config: Config) -> Raft {
    let seed = config.id.0;
    Raft::new(config, ChaCha8Rng::seed_from_u64(seed)).unwrap()
}

fn raft(id: u64, n: u64) -> Raft {
    raft_with(config(id, n))
}

/// A node restarted from a hard state and a log from index 1, without a snapshot.
fn restart(
    config: Config,
    rng: ChaCha8Rng,
    hard_state: HardState,
    entries: Vec<Entry>,
) -> Result<Raft, RestoreError> {
    let persisted = Persisted {
        hard_state,
        snapshot: None,
        entries,
    };
    Raft::restart(config, rng, persisted)
}

fn payload(text: &str) -> Payload {
    Payload::new(text.as_bytes().to_vec())
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        data: EntryData::Command(payload("x")),
    }
}

/// A node restarted with the given log terms (indexes 1..) and hard-state term.
fn raft_with_log(id: u64, n: u64, terms: &[u64], term: u64) -> Raft {
    let entries = terms
        .iter()
        .enumerate()
        .map(|(k, &t)| entry(k as u64 + 1, t))
        .collect();
    let hard_state = HardState {
        term: Term(term),
        vote: None,
        commit_index: LogIndex(0),
    };
    restart(
        config(id, n),
        ChaCha8Rng::seed_from_u64(id),
        hard_state,
        entries,
    )
    .unwrap()
}

/// Carries out one Ready as a perfect host would; returns its messages.
fn flush(raft: &mut Raft) -> Vec<Message> {
    match raft.ready() {
        Some(ready) => {
            raft.advance();
            ready.messages
        }
        None => Vec::new(),
    }
}

fn message(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body,
    }
}

fn vote_request(from: u64, to: u64, term: u64, last_index: u64, last_term: u64) -> Message {
    let body = MessageBody::RequestVote {
        pre_vote: false,
        last_log_index: LogIndex(last_index),
        last_log_term: Term(last_term),
        transfer: false,
    };
    message(from, to, term, body)
}

fn append(
    from: u64,
    to: u64,
    term: u64,
    prev: (u64, u64),
    entries: Vec<Entry>,
    commit: u64,
) -> Message {
    let body = MessageBody::AppendEntries {
        prev_log_index: LogIndex(prev.0),
        prev_log_term: Term(prev.1),
        entries,
        leader_commit: LogIndex(commit),
    };
    message(from, to, term, body)
}

fn tick_until_campaign(raft: &mut Raft) {
    for _ in 0..raft.config.election_timeout_ticks_max {
        raft.tick();
        if raft.role_kind() != RoleKind::Follower {
            return;
        }
    }
    panic!("no campaign within the maximum election timeout");
}

/// A synchronous in-memory network: delivers every message until none is left, except on cut
/// links.
struct Network {
    nodes: BTreeMap<NodeId, Raft>,
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Messages lost on every link.
    dropping: Option<fn(&Message) -> bool>,
    delivered: usize,
    /// Read states each node handed out, in order.
    reads: BTreeMap<NodeId, Vec<ReadState>>,
}

impl Network {
    fn new(nodes: Vec<Raft>) -> Network {
        let nodes = nodes.into_iter().map(|r| (r.id(), r)).collect();
        Network {
            nodes,
            cut: BTreeSet::new(),
            dropping: None,
            delivered: 0,
            reads: BTreeMap::new(),
        }
    }

    fn of(n: u64) -> Network {
        Network::new((1..=n).map(|id| raft(id, n)).collect())
    }

    /// `n` nodes, each with the tests' configuration as `tweak` changes it.
    fn with(n: u64, tweak: impl Fn(&mut Config)) -> Network {
        let nodes = (1..=n)
            .map(|id| {
                let mut config = config(id, n);
                tweak(&mut config);
                raft_with(config)
            })
            .collect();
        Network::new(nodes)
    }

    fn node(&mut self, id: u64) -> &mut Raft {
        self.nodes.get_mut(&NodeId(id)).unwrap()
    }

    fn isolate(&mut self, id: u64) {
        for &other in self.nodes.keys() {
            self.cut.insert((NodeId(id), other));
            self.cut.insert((other, NodeId(id)));
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    /// Delivers messages until quiet; returns how many were delivered.
    fn settle(&mut self) -> usize {
        let before = self.delivered;
        loop {
            let mut queue = Vec::new();
            for (&id, raft) in self.nodes.iter_mut() {
                if let Some(ready) = raft.ready() {
                    raft.advance();
                    queue.extend(ready.messages);
                    self.reads.entry(id).or_default().extend(ready.read_states);
                }
            }
            if queue.is_empty() {
                return self.delivered - before;
            }
            for m in queue {
                let dropped = self.dropping.is_some_and(|dropping| dropping(&m));
                if !self.cut.contains(&(m.from, m.to)) && !dropped {
                    self.delivered += 1;
                    self.nodes.get_mut(&m.to).unwrap().step(m);
                }
            }
        }
    }

    fn elect(&mut self, id: u64) {
        tick_until_campaign(self.node(id));
        self.settle();
        assert_eq!(
            self.node(id).role_kind(),
            RoleKind::Leader,
            "node {id} did not win"
        );
    }

    fn propose(&mut self, id: u64, text: &str) -> LogIndex {
        let (index, _) = self.node(id).propose(payload(text)).unwrap();
        self.settle();
        index
    }

    /// The read states `id` handed out since the last call.
    fn take_reads(&mut self, id: u64) -> Vec<ReadState> {
        self.reads.remove(&NodeId(id)).unwrap_or_default()
    }

    /// Ticks two heartbeat intervals, so that followers learn the leader's commit: the
    /// heartbeat of the first, in which the leader appended, skips those that accepted; that
    /// of the second, with nothing appended, tells them.
    fn tell_followers_the_commit(&mut self) {
        self.tick_all(2 * self.nodes[&NodeId(1)].config.heartbeat_interval_ticks);
    }

    fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            for raft in self.nodes.values_mut() {
                raft.tick();
            }
            self.settle();
        }
    }
}

// ----- §5.1 terms --------------------------------------------------------------------------

/// Raft §5.1: a node of any role that sees a higher term adopts it and becomes a follower.
#[test]
fn section_5_1_higher_term_makes_any_role_a_follower() {
    for role in [RoleKind::Follower, RoleKind::Candidate, RoleKind::Leader] {
        let mut r = raft(1, 3);
        if role != RoleKind::Follower {
            tick_until_campaign(&mut r);
        }
        if role == RoleKind::Leader {
            r.step(message(
                2,
                1,
                1,
                MessageBody::RequestVoteResponse {
                    pre_vote: false,
                    granted: true,
                },
            ));
        }
        assert_eq!(r.role_kind(), role);
        flush(&mut r);
        r.step(append(2, 1, 5, (0, 0), vec![], 0));
        assert_eq!(r.role_kind(), RoleKind::Follower, "from {role:?}");
        assert_eq!(r.term, Term(5));
        assert_eq!(r.leader(), Some(NodeId(2)));
    }
}

/// Raft §5.1: a request with a stale term is rejected (here: an old leader's append is not
/// accepted, and the answer carries the newer term so the old leader steps down).
#[test]
fn section_5_1_stale_term_messages_are_rejected() {
    let mut r = raft_with_log(1, 3, &[], 3);
    r.step(append(2, 1, 2, (0, 0), vec![entry(1, 2)], 0));
    assert_eq!(r.log.last_index(), LogIndex(0));
    let replies = flush(&mut r);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].term, Term(3));
}

// ----- §5.2 leader election ----------------------------------------------------------------

/// Raft §5.2: on election timeout a follower increments its term, votes for itself, and sends
/// RequestVote to every other server.
#[test]
fn section_5_2_follower_campaigns_after_election_timeout() {
    let mut r = raft(1, 3);
    tick_until_campaign(&mut r);
    assert_eq!(r.role_kind(), RoleKind::Candidate);
    assert_eq!(r.term, Term(1));
    assert_eq!(r.vote, Some(NodeId(1)));
    let ready = r.ready().unwrap();
    assert_eq!(
        ready.hard_state.map(|h| h.vote),
        Some(Some(NodeId(1))),
        "self-vote persisted"
    );
    let mut to: Vec<u64> = ready.messages.iter().map(|m| m.to.0).collect();
    to.sort();
    assert_eq!(to, vec![2, 3]);
    assert!(ready.messages.iter().all(|m| matches!(
        m.body,
        MessageBody::RequestVote {
            pre_vote: false,
            ..
        }
    )));
}

/// Raft §5.2: election timeouts are drawn at random from [min, max), so that split votes are rare.
#[test]
fn section_5_2_election_timeouts_are_randomized_within_bounds() {
    let mut seen = BTreeSet::new();
    for seed in 0..200 {
        let r = Raft::new(config(1, 3), ChaCha8Rng::seed_from_u64(seed)).unwrap();
        assert!((10..20).contains(&r.election_timeout_ticks));
        seen.insert(r.election_timeout_ticks);
    }
    assert!(seen.len() >= 8, "timeouts spread over the range: {seen:?}");
}

/// Raft §5.2: a candidate wins with votes from a majority, and only then.
#[test]
fn section_5_2_candidate_wins_with_a_majority() {
    // (cluster size, granted peer votes, refused peer votes, expected role)
    let cases = [
        (1, 0, 0, RoleKind::Leader),
        (3, 1, 0, RoleKind::Leader),
        (3, 0, 1, RoleKind::Candidate),
        (3, 0, 2, RoleKind::Follower),
        (5, 1, 1, RoleKind::Candidate),
        (5, 2, 0, RoleKind::Leader),
        (5, 1, 3, RoleKind::Follower),
    ];
    for (n, granted, refused, want) in cases {
        let mut r = raft(1, n);
        tick_until_campaign(&mut r);
        flush(&mut r);
        let mut voter = 2;
        for (count, grant) in [(granted, true), (refused, false)] {
            for _ in 0..count {
                r.step(message(
                    voter,
                    1,
                    1,
                    MessageBody::RequestVoteResponse {
                        pre_vote: false,
                        granted: grant,
                    },
                ));
                voter += 1;
            }
        }
        assert_eq!(
            r.role_kind(),
            want,
            "n={n} granted={granted} refused={refused}"
        );
    }
}

/// Raft §5.2: each server votes for at most one candidate in a term, first come first served;
/// asking again for the same candidate is answered the same way (a retried request).
#[test]
fn section_5_2_at_most_one_vote_per_term() {
    let mut r = raft(1, 3);
    r.step(vote_request(2, 1, 1, 0, 0));
    r.step(vote_request(3, 1, 1, 0, 0));
    r.step(vote_request(2, 1, 1, 0, 0));
    let grants: Vec<(u64, bool)> = flush(&mut r)
        .iter()
        .map(|m| match m.body {
            MessageBody::RequestVoteResponse { granted, .. } => (m.to.0, granted),
            _ => panic!("unexpected {m:?}"),
        })
        .collect();
    assert_eq!(grants, vec![(2, true), (3, false), (2, true)]);
    assert_eq!(r.vote, Some(NodeId(2)));
}

/// Raft §5.2: a candidate that hears AppendEntries from a leader of its own term steps down.
#[test]
fn section_5_2_candidate_yields_to_a_leader_of_its_term() {
    let mut r = raft(1, 3);
    tick_until_campaign(&mut r);
    flush(&mut r);
    r.step(append(2, 1, 1, (0, 0), vec![], 0));
    assert_eq!(r.role_kind(), RoleKind::Follower);
    assert_eq!(r.leader(), Some(NodeId(2)));
    assert_eq!(r.term, Term(1));
}

/// Raft §5.2: a candidate that neither wins nor loses times out and starts a new election in a
/// higher term (split vote).
#[test]
fn section_5_2_split_vote_times_out_into_a_new_term() {
    let mut r = raft(1, 3);
    tick_until_campaign(&mut r);
    flush(&mut r);
    tick_until_campaign_again(&mut r, Term(1));
    assert_eq!(r.role_kind(), RoleKind::Candidate);
    assert_eq!(r.term, Term(2));
}

fn tick_until_campaign_again(r: &mut Raft, term: Term) {
    for _ in 0..r.config.election_timeout_ticks_max {
        r.tick();
        if r.term > term {
            return;
        }
    }
    panic!("no new election");
}

/// Raft §5.2: in a healthy cluster exactly one leader is elected and everyone learns of it.
#[test]
fn section_5_2_cluster_elects_one_leader() {
    let mut net = Network::of(5);
    net.elect(1);
    for id in 2..=5 {
        assert_eq!(net.node(id).leader(), Some(NodeId(1)));
        assert_eq!(net.node(id).term, Term(1));
    }
}

// ----- §5.3 log replication ----------------------------------------------------------------

/// Raft §5.3 and §8: a new leader appends a no-op of its term and replicates it to everyone;
/// once a majority has it, it is committed and applied everywhere.
#[test]
fn section_5_3_new_leader_replicates_a_noop() {
    let mut net = Network::of(3);
    net.elect(1);
    net.tell_followers_the_commit();
    for id in 1..=3 {
        let log = net.node(id).log();
        assert_eq!(log.entries()[0].data, EntryData::Noop);
        assert_eq!(log.entries()[0].term, Term(1));
        assert_eq!(log.commit_index(), LogIndex(1), "node {id}");
        assert_eq!(log.applied_index(), LogIndex(1), "node {id}");
    }
}

/// Raft §5.3: a follower refuses entries unless its log holds `prev_log_index` with
/// `prev_log_term`.
#[test]
fn section_5_3_follower_checks_prev_entry() {
    // (follower log terms, prev (index, term), accepted)
    let cases: &[(&[u64], (u64, u64), bool)] = &[
        (&[], (0, 0), true),
        (&[1, 1], (2, 1), true),
        (&[1, 1], (1, 1), true),
        (&[1, 1], (3, 1), false),
        (&[1, 1], (2, 2), false),
        (&[1, 2, 2], (3, 3), false),
    ];
    for (terms, prev, accepted) in cases {
        let mut r = raft_with_log(2, 3, terms, 3);
        r.step(append(1, 2, 3, *prev, vec![entry(prev.0 + 1, 3)], 0));
        let reply = flush(&mut r).pop().unwrap();
        let ok = matches!(
            reply.body,
            MessageBody::AppendEntriesResponse(AppendOutcome::Accepted { .. })
        );
        assert_eq!(ok, *accepted, "log {terms:?} prev {prev:?}");
    }
}

/// Raft §5.3: a conflicting entry and everything after it are deleted and replaced by the
/// leader's; matching entries are kept.
#[test]
fn section_5_3_conflicting_entries_are_replaced() {
    let mut r = raft_with_log(2, 3, &[1, 1, 2, 2, 2], 4);
    r.step(append(1, 2, 4, (2, 1), vec![entry(3, 2), entry(4, 4)], 0));
    let terms: Vec<u64> = r.log.entries().iter().map(|e| e.term.0).collect();
    assert_eq!(terms, vec![1, 1, 2, 4]);
    let ready = r.ready().unwrap();
    assert_eq!(
        ready.entries.len(),
        1,
        "only the replaced entry is persisted again"
    );
    assert_eq!(ready.entries[0].index, LogIndex(4));
}

/// Raft §5.3, Log Matching: after replication, all logs are identical up to the leader's last.
#[test]
fn section_5_3_logs_match_after_replication() {
    let mut net = Network::of(5);
    net.elect(1);
    for k in 0..20 {
        net.propose(1, &format!("m{k}"));
    }
    net.tell_followers_the_commit();
    let leader_log: Vec<Entry> = net.node(1).log().entries().to_vec();
    assert_eq!(leader_log.len(), 21);
    for id in 2..=5 {
        assert_eq!(net.node(id).log().entries(), &leader_log[..], "node {id}");
        assert_eq!(net.node(id).log().commit_index(), LogIndex(21));
    }
}

/// Raft §5.3: a follower commits only what it knows matches the leader: min(leader_commit,
/// last new entry), never an entry of its own beyond what the leader sent.
#[test]
fn section_5_3_follower_commit_is_bounded_by_last_new_entry() {
    let mut r = raft_with_log(2, 3, &[1, 1, 1, 1], 2);
    r.step(append(1, 2, 2, (1, 1), vec![entry(2, 1)], 4));
    assert_eq!(r.log.commit_index(), LogIndex(2));
}

// ----- §5.4 safety -------------------------------------------------------------------------

/// Raft §5.4.1: a vote is refused to a candidate whose log is less up-to-date (last term lower,
/// or same last term and shorter).
#[test]
fn section_5_4_1_vote_requires_an_up_to_date_log() {
    // voter log terms = [1, 2, 2]; (candidate last index, last term, granted)
    let cases = [
        (3, 2, true),
        (4, 2, true),
        (2, 2, false),
        (9, 1, false),
        (1, 3, true),
    ];
    for (last_index, last_term, granted) in cases {
        let mut r = raft_with_log(1, 3, &[1, 2, 2], 2);
        r.step(vote_request(2, 1, 3, last_index, last_term));
        let reply = flush(&mut r).pop().unwrap();
        assert_eq!(
            reply.body,
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted
            },
            "candidate ({last_index}, {last_term})"
        );
    }
}

/// Raft §5.4.2 and Figure 8: a leader never commits an entry from an earlier term by counting
/// replicas, even when a majority stores it; it commits it only indirectly, once an entry of its
/// own term is replicated on a majority.
#[test]
fn section_5_4_2_figure_8_prior_term_entries_commit_only_indirectly() {
    // Node 1 leads term 3 with log [1, 2]; the index-2 entry is from term 2.
    let mut leader = raft_with_log(1, 3, &[1, 2], 2);
    tick_until_campaign(&mut leader);
    flush(&mut leader);
    leader.step(message(
        2,
        1,
        3,
        MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        },
    ));
    assert_eq!(leader.role_kind(), RoleKind::Leader);
    flush(&mut leader);
    // A majority (node 2) now holds index 2, but not the term-3 no-op at index 3.
    leader.step(message(
        2,
        1,
        3,
        MessageBody::AppendEntriesResponse(AppendOutcome::Accepted {
            match_index: LogIndex(2),
        }),
    ));
    assert_eq!(
        leader.log.commit_index(),
        LogIndex(0),
        "term-2 entry must not commit by counting"
    );
    leader.step(message(
        2,
        1,
        3,
        MessageBody::AppendEntriesResponse(AppendOutcome::Accepted {
            match_index: LogIndex(3),
        }),
    ));
    assert_eq!(
        leader.log.commit_index(),
        LogIndex(3),
        "committing the no-op commits index 2 too"
    );
}

/// Raft §5.4.3, Leader Completeness, seen from the outside: an entry committed by one leader
/// survives that leader's failure and is in every later leader's log.
#[test]
fn section_5_4_3_committed_entries_survive_leader_change() {
    let mut net = Network::of(3);
    net.elect(1);
    let index = net.propose(1, "durable");
    net.tick_all(1);
    assert!(net.node(1).log().commit_index() >= index);
    net.isolate(1);
    net.elect(2);
    let log = net.node(2).log();
    assert_eq!(
        log.entries()[index.0 as usize - 1].data,
        EntryData::Command(payload("durable"))
    );
}

// ----- persistence --------------------------------------------------------------------------

/// Raft Figure 2: the vote is persistent state, so it is in the Ready's hard state together with
/// (and therefore persisted before) the vote response.
#[test]
fn figure_2_vote_is_persisted_with_its_response() {
    let mut r = raft(1, 3);
    r.step(vote_request(2, 1, 1, 0, 0));
    let ready = r.ready().unwrap();
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: Term(1),
            vote: Some(NodeId(2)),
            commit_index: LogIndex(0)
        })
    );
    assert!(ready.must_persist());
    assert_eq!(ready.messages.len(), 1);
}

/// Raft Figure 2: a follower persists accepted entries before acknowledging them.
#[test]
fn figure_2_entries_are_persisted_with_their_acknowledgement() {
    let mut r = raft(2, 3);
    r.step(append(1, 2, 1, (0, 0), vec![entry(1, 1), entry(2, 1)], 0));
    let ready = r.ready().unwrap();
    assert_eq!(ready.entries.len(), 2);
    assert!(matches!(
        ready.messages[0].body,
        MessageBody::AppendEntriesResponse(AppendOutcome::Accepted {
            match_index: LogIndex(2)
        })
    ));
}

/// Raft Figure 2: a restarted node resumes with its persisted term, vote and log, and will not
/// vote twice in the same term.
#[test]
fn figure_2_restart_restores_term_vote_and_log() {
    let entries = vec![entry(1, 1), entry(2, 2)];
    let hard_state = HardState {
        term: Term(2),
        vote: Some(NodeId(3)),
        commit_index: LogIndex(1),
    };
    let mut r = restart(
        config(1, 3),
        ChaCha8Rng::seed_from_u64(1),
        hard_state,
        entries,
    )
    .unwrap();
    assert_eq!(r.hard_state(), hard_state);
    assert_eq!(r.log.last_index(), LogIndex(2));
    let ready = r.ready().unwrap();
    assert_eq!(ready.hard_state, None, "nothing new to persist");
    assert_eq!(
        ready.committed_entries.len(),
        1,
        "the committed prefix is re-applied"
    );
    r.advance();
    r.step(vote_request(2, 1, 2, 9, 9));
    assert!(matches!(
        flush(&mut r)[0].body,
        MessageBody::RequestVoteResponse { granted: false, .. }
    ));
}

/// The committed entries are handed over at most `apply_entries_max` per `Ready`, in order,
/// until every one is applied; a batch bound of 0 or above the core's own is refused.
#[test]
fn committed_entries_are_applied_in_batches_of_at_most_apply_entries_max() {
    let entries: Vec<Entry> = (1..=7).map(|i| entry(i, 1)).collect();
    let hard_state = HardState {
        term: Term(1),
        vote: None,
        commit_index: LogIndex(7),
    };
    let cfg = Config {
        apply_entries_max: 3,
        ..config(1, 3)
    };
    let mut r = restart(cfg, ChaCha8Rng::seed_from_u64(1), hard_state, entries).unwrap();
    let mut batches = Vec::new();
    while let Some(ready) = r.ready() {
        let indexes: Vec<u64> = ready.committed_entries.iter().map(|e| e.index.0).collect();
        r.advance();
        if !indexes.is_empty() {
            batches.push(indexes);
        }
    }
    assert_eq!(batches, vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
    for bad in [0, limits::APPLY_ENTRIES_MAX + 1] {
        let cfg = Config {
            apply_entries_max: bad,
            ..config(1, 3)
        };
        assert!(cfg.validate().is_err(), "apply_entries_max {bad} accepted");
    }
}

/// Persisted state that no correct node could have written is refused, not trusted.
#[test]
fn restart_refuses_inconsistent_persisted_state() {
    let hs = |term, commit| HardState {
        term: Term(term),
        vote: None,
        commit_index: LogIndex(commit),
    };
    let bad: Vec<(HardState, Vec<Entry>)> = vec![
        (hs(2, 0), vec![entry(2, 1)]),
        (hs(2, 0), vec![entry(1, 2), entry(2, 1)]),
        (hs(2, 3), vec![entry(1, 1)]),
    ];
    for (hard_state, entries) in bad {
        let result = restart(
            config(1, 3),
            ChaCha8Rng::seed_from_u64(1),
            hard_state,
            entries.clone(),
        );
        assert!(result.is_err(), "{hard_state:?} {entries:?}");
    }
}

// ----- host contract -------------------------------------------------------------------------

/// Pipelining: a second Ready may be taken while the first is carried out; it hands out only
/// what the first did not, and the leader counts itself towards a quorum only for what it
/// persisted, in order.
#[test]
fn pipelined_readys_hand_out_each_entry_once_and_count_it_once_persisted() {
    let mut r = raft(1, 1);
    tick_until_campaign(&mut r);
    while r.ready().is_some() {
        r.advance();
    }
    assert_eq!(r.status().role, RoleKind::Leader);
    let (first, _) = r.propose(payload("a")).unwrap();
    let one = r.ready().unwrap();
    assert_eq!(
        one.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        [first]
    );
    let (second, _) = r.propose(payload("b")).unwrap();
    let two = r.ready().unwrap();
    assert_eq!(
        two.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        [second]
    );
    assert!(two.committed_entries.is_empty(), "nothing is persisted yet");
    assert!(r.status().commit_index < first);
    r.advance();
    assert_eq!(
        r.status().commit_index,
        first,
        "the first write alone is persisted"
    );
    r.advance();
    assert_eq!(r.status().commit_index, second);
    let three = r.ready().unwrap();
    let applied: Vec<_> = three.committed_entries.iter().map(|e| e.index).collect();
    assert_eq!(
        applied,
        [first, second],
        "committed entries are handed out once"
    );
    r.advance();
}

/// Pipelining: entries a new leader replaces while their write is under way are written again
/// after it, and the old write, once synced, does not count the replacements as persisted.
#[test]
fn entries_replaced_while_their_write_is_under_way_are_written_again() {
    let mut r = raft(2, 3);
    r.step(append(
        1,
        2,
        1,
        (0, 0),
        vec![entry(1, 1), entry(2, 1), entry(3, 1)],
        0,
    ));
    let old = r.ready().unwrap();
    assert_eq!(old.entries.len(), 3);
    // A leader of term 2 keeps entry 1 and replaces 2 and 3 before the write is synced.
    r.step(append(3, 2, 2, (1, 1), vec![entry(2, 2), entry(3, 2)], 0));
    let new = r.ready().unwrap();
    let written: Vec<_> = new.entries.iter().map(|e| (e.index.0, e.term.0)).collect();
    assert_eq!(written, [(2, 2), (3, 2)]);
    assert!(
        new.messages.iter().any(|m| matches!(
            m.body,
            MessageBody::AppendEntriesResponse(AppendOutcome::Accepted { .. })
        )),
        "the acknowledgement leaves with the write that holds its entries"
    );
    r.advance();
    assert_eq!(
        r.log.stable_index(),
        LogIndex(0),
        "entry 3 of term 1 was synced, not entry 3 of term 2"
    );
    r.advance();
    assert_eq!(r.log.stable_index(), LogIndex(3));
    assert!(r.ready().is_none_or(|ready| ready.entries.is_empty()));
}

/// A lone voter is elected without sending anything, so nothing has synced its new term yet:
/// its appends to a learner wait for the write of its term. Sent early, a crash before that
/// sync could let it lead the same term again with other entries at the same indexes.
#[test]
fn a_lone_voter_sends_nothing_early_until_its_term_is_persisted() {
    let membership = Membership::of_voters(&[NodeId(1)])
        .apply(&add_learner(2, false))
        .unwrap();
    let log = vec![Entry {
        term: Term(1),
        index: LogIndex(1),
        data: EntryData::Membership(membership),
    }];
    let hard_state = HardState {
        term: Term(1),
        vote: None,
        commit_index: LogIndex(1),
    };
    let mut r = restart(config(1, 1), ChaCha8Rng::seed_from_u64(1), hard_state, log).unwrap();
    tick_until_campaign(&mut r);
    assert_eq!(r.status().role, RoleKind::Leader);
    let mut first = r.ready().unwrap();
    assert_eq!(first.hard_state.map(|h| h.term), Some(r.status().term));
    assert!(first.take_messages_before_persist().is_empty());
    assert!(
        first.messages.iter().any(|m| m.to == NodeId(2)),
        "the learner's append waits for the write"
    );
    r.advance();
    let term = r.status().term.0;
    let last = r.status().last_index;
    let accepted = AppendOutcome::Accepted { match_index: last };
    r.step(message(
        2,
        1,
        term,
        MessageBody::AppendEntriesResponse(accepted),
    ));
    r.propose(payload("x")).unwrap();
    let mut next = r.ready().unwrap();
    assert!(
        !next.take_messages_before_persist().is_empty(),
        "once the term is synced, appends go early"
    );
    r.advance();
}

/// The vote a node grants while an earlier write is under way is persisted by the next Ready,
/// whose messages carry the grant.
#[test]
fn a_vote_granted_during_a_write_travels_with_the_write_that_persists_it() {
    let mut r = raft(2, 3);
    r.step(append(1, 2, 1, (0, 0), vec![entry(1, 1)], 0));
    let _under_way = r.ready().unwrap();
    r.step(vote_request(3, 2, 2, 1, 1));
    let next = r.ready().unwrap();
    assert_eq!(
        next.hard_state.map(|h| (h.term, h.vote)),
        Some((Term(2), Some(NodeId(3))))
    );
    assert!(next.messages.iter().any(|m| matches!(
        m.body,
        MessageBody::RequestVoteResponse { granted: true, .. }
    )));
    r.advance();
    r.advance();
}

/// A proposal to a follower names the leader it knows, so the client can go straight there.
#[test]
fn propose_to_follower_redirects_to_the_leader() {
    let mut net = Network::of(3);
    net.elect(2);
    assert_eq!(
        net.node(1).propose(payload("x")),
        Err(ProposeError::NotLeader {
            leader: Some(NodeId(2))
        })
    );
}

/// The leader refuses proposals beyond its uncommitted bound instead of growing without limit.
#[test]
fn propose_is_refused_when_too_much_is_uncommitted() {
    let mut cfg = config(1, 3);
    cfg.uncommitted_entries_max = 3;
    let mut net = Network::new(vec![raft_with(cfg), raft(2, 3), raft(3, 3)]);
    net.elect(1);
    net.isolate(1);
    let results: Vec<_> = (0..4)
        .map(|_| net.node(1).propose(payload("x")).is_ok())
        .collect();
    assert_eq!(results, vec![true, true, true, false]);
    assert_eq!(net.node(1).propose(payload("x")), Err(ProposeError::Busy));
}

/// A single-node cluster elects itself and commits once its own disk has the entry.
#[test]
fn single_node_commits_after_persisting() {
    let mut r = raft(1, 1);
    tick_until_campaign(&mut r);
    flush(&mut r);
    assert_eq!(r.role_kind(), RoleKind::Leader);
    let (index, _) = r.propose(payload("solo")).unwrap();
    let ready = r.ready().unwrap();
    assert!(
        ready.committed_entries.iter().all(|e| e.index < index),
        "not before persisting"
    );
    r.advance();
    let ready = r.ready().unwrap();
    assert_eq!(ready.committed_entries.last().map(|e| e.index), Some(index));
    r.advance();
}

// ----- batching and pipelining ----------------------------------------------------------------

/// Proposals made between two Readys travel in one AppendEntries per follower and one
/// persistence batch.
#[test]
fn proposals_are_batched_into_one_append_per_follower() {
    let mut net = Network::of(3);
    net.elect(1);
    for k in 0..50 {
        net.node(1).propose(payload(&format!("m{k}"))).unwrap();
    }
    let ready = net.node(1).ready().unwrap();
    assert_eq!(ready.entries.len(), 50);
    let appends: Vec<&Message> = ready
        .messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::AppendEntries { .. }))
        .collect();
    assert_eq!(appends.len(), 2);
    for m in appends {
        let MessageBody::AppendEntries { entries, .. } = &m.body else {
            unreachable!()
        };
        assert_eq!(entries.len(), 50);
    }
    net.node(1).advance();
}

/// In replicate mode the leader streams appends without waiting for acknowledgements, up to
/// the window, and no further.
#[test]
fn replication_is_pipelined_up_to_the_window() {
    let mut cfg = config(1, 2);
    cfg.inflight_appends_max = 3;
    let mut net = Network::new(vec![raft_with(cfg), raft(2, 2)]);
    net.elect(1);
    net.isolate(2);
    let mut appends = 0;
    for k in 0..5 {
        net.node(1).propose(payload(&format!("m{k}"))).unwrap();
        appends += flush(net.node(1))
            .iter()
            .filter(|m| matches!(m.body, MessageBody::AppendEntries { .. }))
            .count();
    }
    assert_eq!(appends, 3);
    assert_eq!(net.node(1).progress(NodeId(2)).unwrap().inflight_count(), 3);
}

// ----- fast backtracking ----------------------------------------------------------------------

/// With fast backtracking a divergent follower catches up in a number of round trips bounded by
/// the number of distinct terms in the logs, not by the number of entries.
#[test]
fn fast_backtracking_needs_round_trips_per_term_not_per_entry() {
    // Leader: 300 entries of term 1, then 300 of term 5. Follower: the same term-1 prefix, then
    // 300 divergent entries of term 3 (from a leader that never committed them).
    let leader_terms: Vec<u64> = [vec![1; 300], vec![5; 300]].concat();
    let follower_terms: Vec<u64> = [vec![1; 300], vec![3; 300]].concat();
    let mut leader = raft_with_log(1, 2, &leader_terms, 5);
    let mut follower = raft_with_log(2, 2, &follower_terms, 5);
    tick_until_campaign(&mut leader);
    let votes = flush(&mut leader);
    follower.step(votes[0].clone());
    for m in flush(&mut follower) {
        leader.step(m);
    }
    assert_eq!(leader.role_kind(), RoleKind::Leader);
    let mut rejections = 0;
    for _ in 0..100 {
        let to_follower = flush(&mut leader);
        if to_follower.is_empty() {
            break;
        }
        for m in to_follower {
            follower.step(m);
        }
        for m in flush(&mut follower) {
            if matches!(
                m.body,
                MessageBody::AppendEntriesResponse(AppendOutcome::Rejected { .. })
            ) {
                rejections += 1;
            }
            leader.step(m);
        }
    }
    assert_eq!(follower.log.entries(), leader.log.entries());
    assert!(
        rejections <= 2,
        "{rejections} rejections for 300 divergent entries"
    );
}

/// A far-behind follower (missing entries, no conflict) catches up with one rejection.
#[test]
fn fast_backtracking_far_behind_follower_catches_up_in_one_rejection() {
    let mut net = Network::of(3);
    net.elect(1);
    net.isolate(3);
    // A heartbeat interval passes with the follower cut off, as in any real partition: its
    // acceptance of the leader's first append no longer excuses it from a heartbeat.
    net.tick_all(1);
    for k in 0..500 {
        net.node(1).propose(payload(&format!("m{k}"))).unwrap();
        if k % 50 == 0 {
            net.settle();
        }
    }
    net.settle();
    net.heal();
    let before = net.delivered;
    net.tick_all(1);
    assert_eq!(
        net.node(3).log().last_index(),
        net.node(1).log().last_index()
    );
    assert!(
        net.delivered - before < 30,
        "{} messages",
        net.delivered - before
    );
}

// ----- pre-vote (thesis §9.6) and check-quorum (thesis §6.2) ------------------------------------

fn cluster(n: u64, pre_vote: bool, check_quorum: bool) -> Network {
    Network::with(n, |c| {
        c.pre_vote = pre_vote;
        c.check_quorum = check_quorum;
    })
}

/// Thesis §9.6: a pre-candidate does not increment its term; only winning the pre-vote makes it
/// a real candidate.
#[test]
fn thesis_9_6_pre_vote_does_not_change_terms() {
    let mut net = cluster(3, true, false);
    net.isolate(1);
    for _ in 0..5 {
        tick_until_campaign(net.node(1));
        net.settle();
    }
    assert_eq!(
        net.node(1).term,
        Term(0),
        "an isolated pre-candidate never bumps its term"
    );
    assert_eq!(net.node(1).role_kind(), RoleKind::PreCandidate);
}

/// Thesis §9.6: a node rejoining after a partition does not disrupt a healthy leader: its
/// pre-vote fails, and no one's term changes.
#[test]
fn thesis_9_6_rejoining_node_does_not_disrupt_the_leader() {
    let mut net = cluster(3, true, true);
    net.elect(1);
    net.isolate(3);
    for _ in 0..3 {
        tick_until_campaign(net.node(3));
        net.settle();
    }
    net.heal();
    tick_until_campaign(net.node(3));
    net.settle();
    assert_eq!(net.node(1).role_kind(), RoleKind::Leader);
    assert_eq!(net.node(1).term, Term(1));
    net.tick_all(3);
    assert_eq!(net.node(3).leader(), Some(NodeId(1)));
}

/// Without pre-vote, the same rejoin forces an election: the contrast shows pre-vote matters.
#[test]
fn thesis_9_6_without_pre_vote_a_rejoining_node_forces_a_new_term() {
    let mut net = cluster(3, false, false);
    net.elect(1);
    net.isolate(3);
    // A heartbeat interval passes with node 3 cut off.
    net.tick_all(1);
    tick_until_campaign(net.node(3));
    net.settle();
    net.heal();
    net.tick_all(1);
    assert!(net.node(1).term > Term(1));
}

/// Thesis §6.2: a leader that hears from no quorum for an election timeout steps down.
#[test]
fn thesis_6_2_check_quorum_deposes_an_isolated_leader() {
    let mut net = cluster(3, true, true);
    net.elect(1);
    net.isolate(1);
    for _ in 0..2 * net.node(1).config.election_timeout_ticks_min {
        net.node(1).tick();
        net.settle();
    }
    assert_eq!(net.node(1).role_kind(), RoleKind::Follower);
}

/// Thesis §6.2: a leader that keeps hearing from a quorum stays leader indefinitely.
#[test]
fn thesis_6_2_check_quorum_keeps_a_connected_leader() {
    let mut net = cluster(5, true, true);
    net.elect(1);
    net.isolate(5);
    net.isolate(4);
    net.tick_all(100);
    assert_eq!(net.node(1).role_kind(), RoleKind::Leader);
    assert_eq!(net.node(1).term, Term(1));
}

/// Thesis §4.2.3: with check-quorum, a follower that heard from its leader within the minimum
/// election timeout ignores a RequestVote of a higher term (leader lease).
#[test]
fn thesis_4_2_3_followers_in_lease_ignore_vote_requests() {
    let mut net = cluster(3, false, true);
    net.elect(1);
    net.node(2).step(vote_request(3, 2, 9, 99, 9));
    assert_eq!(net.node(2).term, Term(1));
    assert!(flush(net.node(2)).is_empty());
}

/// A power loss can tear a batch after its entries and before its hard state. The node must
/// still start: it adopts its last entry's term with no vote, since the lost hard state was
/// never acted upon, and persists that term in its next Ready.
#[test]
fn restart_after_a_torn_batch_adopts_the_last_entry_term() {
    let entries = vec![entry(1, 1), entry(2, 3)];
    let hard_state = HardState {
        term: Term(1),
        vote: Some(NodeId(2)),
        commit_index: LogIndex(1),
    };
    let mut r = restart(
        config(1, 3),
        ChaCha8Rng::seed_from_u64(1),
        hard_state,
        entries,
    )
    .unwrap();
    assert_eq!(r.term, Term(3));
    assert_eq!(r.vote, None);
    let ready = r.ready().unwrap();
    assert_eq!(
        ready.hard_state.map(|h| (h.term, h.vote)),
        Some((Term(3), None))
    );
    r.advance();
}

/// A single-node cluster's election batch (the no-op and its term) torn before the hard state.
#[test]
fn single_node_restarts_after_losing_the_hard_state_of_its_election_batch() {
    let mut r = raft(1, 1);
    tick_until_campaign(&mut r);
    let ready = r.ready().unwrap();
    let restarted = restart(
        config(1, 1),
        ChaCha8Rng::seed_from_u64(9),
        HardState::default(),
        ready.entries,
    );
    assert!(restarted.is_ok(), "{:?}", restarted.err());
}

/// A commit index that moved alone is applied without a sync: the Ready carries no hard
/// state, and the new commit index rides along with the next write of entries. A term or vote
/// change is always persisted.
#[test]
fn a_commit_index_that_moved_alone_waits_for_the_next_write() {
    let mut r = raft(2, 3);
    r.step(append(1, 2, 2, (0, 0), vec![entry(1, 2), entry(2, 2)], 0));
    let ready = r.ready().unwrap();
    assert_eq!(
        ready.hard_state.map(|hs| hs.term),
        Some(Term(2)),
        "the term is persisted"
    );
    r.advance();
    r.step(message(
        1,
        2,
        2,
        MessageBody::Heartbeat {
            leader_commit: LogIndex(2),
            read_round: 0,
        },
    ));
    let ready = r.ready().unwrap();
    assert_eq!(ready.hard_state, None);
    assert!(ready.entries.is_empty() && !ready.must_persist());
    assert_eq!(ready.committed_entries.len(), 2);
    r.advance();
    r.step(append(1, 2, 2, (2, 2), vec![entry(3, 2)], 2));
    let ready = r.ready().unwrap();
    assert_eq!(
        ready.hard_state.map(|hs| hs.commit_index),
        Some(LogIndex(2))
    );
    r.advance();
}

/// An AppendEntries that contradicts what the follower knows is committed (no correct leader
/// sends one) is dropped: committed entries are never overwritten and the node does not panic.
/// Found by the `raft_step` fuzz target.
#[test]
fn append_entries_contradicting_the_committed_prefix_are_dropped() {
    let contradicting: Vec<Message> = vec![
        // A different entry at a committed index, then a later one that would match.
        append(1, 2, 3, (1, 1), vec![entry(2, 1), entry(3, 3)], 3),
        // A different entry at a committed index, then one older than the committed entry
        // (this one used to panic in the log's append).
        append(1, 2, 3, (1, 1), vec![entry(2, 1), entry(3, 1)], 3),
    ];
    for m in contradicting {
        let mut r = raft(2, 3);
        r.step(append(1, 2, 2, (0, 0), vec![entry(1, 1), entry(2, 2)], 2));
        let _ = flush(&mut r);
        assert_eq!(r.log.commit_index(), LogIndex(2));
        r.step(m.clone());
        let committed: Vec<u64> = r.log.entries().iter().map(|e| e.term.0).collect();
        assert_eq!(committed, vec![1, 2], "{m:?}");
        assert!(flush(&mut r)
            .iter()
            .all(|reply| !matches!(reply.body, MessageBody::AppendEntriesResponse(_))));
    }
}

/// Malformed AppendEntries from the network are dropped, never trusted and never a panic.
#[test]
fn malformed_append_entries_are_dropped() {
    let bad: Vec<Message> = vec![
        append(1, 2, 2, (0, 0), vec![entry(2, 1)], 0),
        append(1, 2, 2, (0, 0), vec![entry(1, 2), entry(3, 2)], 0),
        append(1, 2, 2, (0, 0), vec![entry(1, 2), entry(2, 1)], 0),
        append(1, 2, 2, (0, 0), vec![entry(1, 3)], 0),
        append(1, 2, 2, (3, 5), vec![entry(4, 2)], 0),
        append(1, 2, 2, (u64::MAX, 1), vec![entry(0, 2)], 0),
        append(1, 2, 2, (u64::MAX, 1), vec![], 0),
        append(1, 2, u64::MAX, (0, 0), vec![], 0),
        append(1, 2, 2, (0, 0), vec![], u64::MAX),
    ];
    for m in bad {
        let mut r = raft(2, 3);
        r.step(m.clone());
        assert_eq!(r.log.last_index(), LogIndex(0), "{m:?}");
        let _ = flush(&mut r);
    }
}

// ----- §7 log compaction and InstallSnapshot -------------------------------------------------

/// A snapshot of the "state" at `index` of `term`: bytes that name it, padded to `size`.
fn snapshot_at(index: u64, term: u64, size: usize) -> Snapshot {
    let mut data = format!("state@{index}").into_bytes();
    data.resize(size.max(data.len()), b'.');
    Snapshot::new(LogIndex(index), Term(term), Payload::new(data))
}

fn install_chunk(
    from: u64,
    to: u64,
    term: u64,
    meta: SnapshotMeta,
    offset: u64,
    data: &[u8],
) -> Message {
    let body = MessageBody::InstallSnapshot {
        snapshot: meta,
        membership: Membership::of_voters(&[NodeId(1), NodeId(2), NodeId(3)]),
        offset,
        data: Payload::new(data.to_vec()),
    };
    message(from, to, term, body)
}

/// A follower at term 2 that knows node 1 leads, with a log of `terms` and `commit`.
fn follower_with_log(terms: &[u64], commit: u64) -> Raft {
    let mut r = raft_with_log(2, 3, terms, 2);
    let heartbeat = MessageBody::Heartbeat {
        leader_commit: LogIndex(commit),
        read_round: 0,
    };
    r.step(message(1, 2, 2, heartbeat));
    let _ = flush(&mut r);
    assert_eq!(r.log.commit_index(), LogIndex(commit));
    r
}

/// The chunks the follower must write, and its answers, for one input.
fn chunks_and_replies(r: &mut Raft) -> (Vec<SnapshotChunk>, Vec<MessageBody>) {
    let ready = r.ready().expect("a chunk is answered");
    r.advance();
    (
        ready.snapshot_chunks,
        ready.messages.into_iter().map(|m| m.body).collect(),
    )
}

/// Raft §7: a follower installing a snapshot whose last entry its log holds keeps the entries
/// after it; the snapshot's index becomes its commit and applied index.
#[test]
fn section_7_install_keeps_the_log_after_a_matching_entry() {
    let mut r = follower_with_log(&[1, 1, 1, 2, 2, 2], 2);
    assert!(r.snapshot_received(snapshot_at(4, 2, 8)));
    assert_eq!(r.log.first_index(), LogIndex(5));
    assert_eq!(r.log.last_index(), LogIndex(6));
    assert_eq!(
        r.log.term(LogIndex(4)),
        Some(Term(2)),
        "the snapshot's term is still known"
    );
    assert_eq!(
        (r.log.commit_index(), r.log.applied_index()),
        (LogIndex(4), LogIndex(4))
    );
    let ready = r.ready().unwrap();
    assert_eq!(ready.snapshot.map(|s| s.index), Some(LogIndex(4)));
    assert!(
        ready.committed_entries.is_empty(),
        "the state machine holds the snapshot"
    );
    let accepted = MessageBody::AppendEntriesResponse(AppendOutcome::Accepted {
        match_index: LogIndex(4),
    });
    assert!(ready
        .messages
        .iter()
        .any(|m| m.body == accepted && m.to == NodeId(1)));
    r.advance();
}

/// Raft §7: a follower whose log disagrees with the snapshot at its last index (or ends before
/// it) discards its whole log.
#[test]
fn section_7_install_discards_a_log_that_disagrees_with_the_snapshot() {
    for terms in [&[1, 1, 1, 1, 1, 1][..], &[1, 1][..]] {
        let mut r = follower_with_log(terms, 1);
        assert!(r.snapshot_received(snapshot_at(4, 2, 8)));
        assert_eq!(r.log.first_index(), LogIndex(5));
        assert_eq!(r.log.last_index(), LogIndex(4), "{terms:?}");
        assert_eq!(r.log.last_term(), Term(2));
        let _ = flush(&mut r);
    }
}

/// Raft §7: a snapshot no newer than the commit index is not installed; a chunk of one is
/// answered with the commit index, so the leader goes on from the log.
#[test]
fn section_7_a_snapshot_the_commit_index_covers_is_not_installed() {
    let mut r = follower_with_log(&[1, 1, 1, 2, 2, 2], 5);
    assert!(!r.snapshot_received(snapshot_at(4, 2, 8)));
    assert_eq!(r.log.first_index(), LogIndex(1));
    let meta = snapshot_at(4, 2, 8).meta;
    r.step(install_chunk(1, 2, 2, meta, 0, b"state@4."));
    let (chunks, replies) = chunks_and_replies(&mut r);
    assert!(chunks.is_empty());
    let accepted = MessageBody::AppendEntriesResponse(AppendOutcome::Accepted {
        match_index: LogIndex(5),
    });
    assert_eq!(replies, vec![accepted]);
}

/// Raft §7: chunks are written in order. A duplicate is answered with the offset reached, one
/// that skips ahead with the offset wanted and a request to resend, and a chunk of a transfer
/// never started with offset 0; a new transfer starting at offset 0 replaces the old one.
#[test]
fn section_7_chunks_are_written_in_order_and_gaps_are_resent() {
    let mut r = follower_with_log(&[1, 1, 2], 1);
    let snapshot = snapshot_at(9, 2, 12);
    let (meta, bytes) = (snapshot.meta, snapshot.data.as_bytes().to_vec());
    let answer = |next_offset: u64, resend: bool| MessageBody::InstallSnapshotResponse {
        snapshot: meta,
        next_offset,
        resend,
    };
    r.step(install_chunk(1, 2, 2, meta, 4, &bytes[4..8]));
    let (chunks, replies) = chunks_and_replies(&mut r);
    assert!(chunks.is_empty());
    assert_eq!(
        replies,
        vec![answer(0, true)],
        "never started: from the beginning"
    );
    r.step(install_chunk(1, 2, 2, meta, 0, &bytes[..4]));
    let (chunks, replies) = chunks_and_replies(&mut r);
    assert_eq!(
        (chunks.len(), chunks[0].offset, chunks[0].last),
        (1, 0, false)
    );
    assert_eq!(replies, vec![answer(4, false)]);
    r.step(install_chunk(1, 2, 2, meta, 8, &bytes[8..]));
    assert_eq!(
        chunks_and_replies(&mut r),
        (vec![], vec![answer(4, true)]),
        "a gap"
    );
    r.step(install_chunk(1, 2, 2, meta, 0, &bytes[..4]));
    assert_eq!(
        chunks_and_replies(&mut r),
        (vec![], vec![answer(4, false)]),
        "a duplicate"
    );
    r.step(install_chunk(1, 2, 2, meta, 4, &bytes[4..8]));
    r.step(install_chunk(1, 2, 2, meta, 8, &bytes[8..]));
    let (chunks, replies) = chunks_and_replies(&mut r);
    assert_eq!(
        chunks
            .iter()
            .map(|c| (c.offset, c.last))
            .collect::<Vec<_>>(),
        [(4, false), (8, true)]
    );
    assert_eq!(replies, vec![answer(8, false), answer(12, false)]);
    // A new leader's transfer of another snapshot starts over.
    let newer = snapshot_at(10, 3, 12).meta;
    r.step(install_chunk(3, 2, 3, newer, 0, &bytes[..4]));
    let (chunks, _) = chunks_and_replies(&mut r);
    assert_eq!((chunks[0].snapshot, chunks[0].offset), (newer, 0));
}

/// Raft §7 and §5.2: a candidate that receives a chunk from the leader of its term becomes its
/// follower; an InstallSnapshot of a stale term is refused like any stale leader message.
#[test]
fn section_7_install_snapshot_carries_the_leader_terms_rules() {
    let meta = snapshot_at(3, 2, 4).meta;
    let mut r = raft_with_log(2, 3, &[1], 2);
    tick_until_campaign(&mut r);
    let _ = flush(&mut r);
    let term = r.term.0;
    r.step(install_chunk(1, 2, term, meta, 0, b"stat"));
    assert_eq!(
        (r.role_kind(), r.leader()),
        (RoleKind::Follower, Some(NodeId(1)))
    );
    let _ = flush(&mut r);
    r.step(install_chunk(3, 2, term - 1, meta, 0, b"stat"));
    let (chunks, replies) = chunks_and_replies(&mut r);
    assert!(chunks.is_empty());
    assert_eq!(
        replies,
        vec![MessageBody::HeartbeatResponse { read_round: 0 }]
    );
}

/// Malformed InstallSnapshot chunks (past the snapshot's end, oversized, a snapshot of a term
/// above the sender's, or of the empty prefix) are dropped without an answer.
#[test]
fn malformed_install_snapshot_is_dropped() {
    let meta = snapshot_at(3, 2, 4).meta;
    let huge = SnapshotMeta {
        size_bytes: limits::SNAPSHOT_SIZE_BYTES_MAX as u64 + 1,
        ..meta
    };
    let empty_prefix = SnapshotMeta {
        index: LogIndex(0),
        term: Term(0),
        ..meta
    };
    let far = SnapshotMeta {
        index: LogIndex(u64::MAX),
        ..meta
    };
    let bad = [
        install_chunk(1, 2, 2, far, 0, b"a"),
        install_chunk(1, 2, 2, meta, 5, b"abc"),
        install_chunk(1, 2, 2, meta, u64::MAX, b"a"),
        install_chunk(1, 2, 2, huge, 0, b"a"),
        install_chunk(1, 2, 1, meta, 0, b"a"),
        install_chunk(1, 2, 2, empty_prefix, 0, b"a"),
    ];
    for m in bad {
        let mut r = follower_with_log(&[1], 0);
        r.step(m.clone());
        assert!(r.ready().is_none(), "{m:?}");
    }
}

/// A network whose hosts also receive snapshots: chunks are assembled per node, and a
/// finished snapshot is reported back, as a host does after checking it.
struct SnapshotNetwork {
    net: Network,
    incoming: BTreeMap<NodeId, Vec<u8>>,
    installed: Vec<(NodeId, SnapshotMeta)>,
    /// How many more InstallSnapshot chunks to deliver before losing `chunks_to_drop`.
    chunks_to_pass: usize,
    /// How many more InstallSnapshot chunks to lose.
    chunks_to_drop: usize,
    chunks_sent: usize,
}

impl SnapshotNetwork {
    fn new(net: Network) -> SnapshotNetwork {
        SnapshotNetwork {
            net,
            incoming: BTreeMap::new(),
            installed: Vec::new(),
            chunks_to_pass: 0,
            chunks_to_drop: 0,
            chunks_sent: 0,
        }
    }

    fn settle(&mut self) {
        loop {
            let mut queue = Vec::new();
            let ids: Vec<NodeId> = self.net.nodes.keys().copied().collect();
            for id in ids {
                let raft = self.net.nodes.get_mut(&id).unwrap();
                let Some(ready) = raft.ready() else { continue };
                let mut finished = None;
                for chunk in ready.snapshot_chunks {
                    let file = self.incoming.entry(id).or_default();
                    file.truncate(chunk.offset as usize);
                    file.extend_from_slice(chunk.data.as_bytes());
                    if chunk.last {
                        let data = Payload::new(std::mem::take(file));
                        finished = Some(Snapshot {
                            meta: chunk.snapshot,
                            membership: chunk.membership.clone(),
                            data,
                        });
                    }
                }
                queue.extend(ready.messages);
                raft.advance();
                if let Some(snapshot) = finished {
                    assert!(snapshot.is_intact(), "assembled in order");
                    let meta = snapshot.meta;
                    if raft.snapshot_received(snapshot) {
                        self.installed.push((id, meta));
                    }
                }
            }
            if queue.is_empty() {
                return;
            }
            for m in queue {
                if matches!(m.body, MessageBody::InstallSnapshot { .. }) {
                    self.chunks_sent += 1;
                    if self.chunks_to_pass > 0 {
                        self.chunks_to_pass -= 1;
                    } else if self.chunks_to_drop > 0 {
                        self.chunks_to_drop -= 1;
                        continue;
                    }
                }
                if !self.net.cut.contains(&(m.from, m.to)) {
                    self.net.nodes.get_mut(&m.to).unwrap().step(m);
                }
            }
        }
    }

    fn propose(&mut self, id: u64, text: &str) {
        self.net.node(id).propose(payload(text)).unwrap();
        self.settle();
    }

    fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            for raft in self.net.nodes.values_mut() {
                raft.tick();
            }
            self.settle();
        }
    }
}

/// A 3-node cluster with small chunks and no catch-up entries, so compaction always forces a
/// snapshot transfer.
fn snapshot_cluster() -> Network {
    Network::with(3, |c| {
        c.snapshot_chunk_bytes_max = 16;
        c.snapshot_inflight_chunks_max = 2;
        c.snapshot_catch_up_entries = 0;
    })
}

/// Raft §7: a leader whose log no longer holds the entries a follower needs sends its snapshot
/// instead, in chunks within the window; the follower installs it and goes on from the log.
#[test]
fn section_7_a_follower_behind_the_compacted_log_is_sent_the_snapshot() {
    let mut net = snapshot_cluster();
    net.elect(1);
    net.isolate(3);
    for k in 0..10 {
        net.propose(1, &format!("c{k}"));
    }
    let applied = net.node(1).log.applied_index();
    let term = net.node(1).term.0;
    let compacted = net
        .node(1)
        .snapshot_taken(snapshot_at(applied.0, term, 100));
    assert_eq!(compacted, applied, "no catch-up entries kept");
    assert_eq!(net.node(1).log.term(LogIndex(1)), None);
    net.heal();
    let mut net = SnapshotNetwork::new(net);
    net.tick_all(3);
    assert_eq!(
        net.installed,
        vec![(NodeId(3), snapshot_at(applied.0, term, 100).meta)]
    );
    net.net.propose(1, "after");
    net.tick_all(2);
    let leader_last = net.net.node(1).log.last_index();
    let follower = net.net.node(3);
    assert_eq!(follower.log.last_index(), leader_last);
    assert_eq!(follower.log.commit_index(), leader_last);
    assert_eq!(follower.log.first_index(), applied.next());
}

/// Raft §7 with fast backtracking: a deposed leader's stale tail reaches past the current
/// leader's compaction point, whose entry is of a later term than the tail's. The rejection's
/// hint names that point with the tail's term, so the logs agree only somewhere in the
/// compacted prefix: the leader must send its snapshot, not probe the compaction point again
/// and again (a livelock for as long as no new snapshot moves the compaction point).
#[test]
fn section_7_a_stale_tail_past_the_compaction_point_is_replaced_by_the_snapshot() {
    let mut net = snapshot_cluster();
    net.elect(1);
    net.propose(1, "a");
    net.isolate(1);
    for k in 0..8 {
        net.propose(1, &format!("stale{k}"));
    }
    net.elect(2);
    let compaction_point = net.propose(2, "b").prev();
    let (first_term, second_term) = (net.node(1).term, net.node(2).term);
    net.elect(3);
    assert_eq!(net.node(3).log.term(compaction_point), Some(second_term));
    assert_eq!(net.node(1).log.term(compaction_point), Some(first_term));
    net.node(3)
        .snapshot_taken(snapshot_at(compaction_point.0, second_term.0, 40));
    assert_eq!(net.node(3).log.first_index(), compaction_point.next());
    net.heal();
    let mut net = SnapshotNetwork::new(net);
    net.tick_all(10);
    assert_eq!(
        net.installed,
        vec![(
            NodeId(1),
            snapshot_at(compaction_point.0, second_term.0, 40).meta
        )]
    );
    let leader_last = net.net.node(3).log.last_index();
    let leader_term = net.net.node(3).term;
    assert_eq!(net.net.node(1).log.last_index(), leader_last);
    assert_eq!(net.net.node(1).log.term(leader_last), Some(leader_term));
}

/// Raft §7: a transfer whose chunks are lost resends from the last byte the follower
/// confirmed once heartbeats show it stalled, and finishes; the window bounds the chunks in
/// flight.
#[test]
fn section_7_a_stalled_transfer_resends_from_the_last_confirmed_byte() {
    let mut net = snapshot_cluster();
    net.elect(1);
    net.isolate(3);
    for k in 0..5 {
        net.propose(1, &format!("c{k}"));
    }
    let applied = net.node(1).log.applied_index();
    let term = net.node(1).term.0;
    net.node(1)
        .snapshot_taken(snapshot_at(applied.0, term, 200));
    net.heal();
    let mut net = SnapshotNetwork::new(net);
    net.chunks_to_drop = 2;
    net.tick_all(30);
    assert_eq!(net.installed.len(), 1);
    assert!(
        net.chunks_sent >= 200 / 16 + 1 + 2,
        "the two lost chunks were sent again"
    );
}

/// Raft §7: compaction keeps `snapshot_catch_up_entries` behind the snapshot, and never
/// compacts past the snapshot a transfer under way will install.
#[test]
fn section_7_compaction_keeps_catch_up_entries_and_what_a_transfer_needs() {
    let mut r = raft_with({
        let mut c = config(1, 1);
        c.snapshot_catch_up_entries = 3;
        c
    });
    tick_until_campaign(&mut r);
    for k in 0..10 {
        r.propose(payload(&format!("c{k}"))).unwrap();
        let _ = flush(&mut r);
    }
    let _ = flush(&mut r);
    let applied = r.log.applied_index();
    assert_eq!(applied, LogIndex(11));
    let term = r.term.0;
    assert_eq!(r.snapshot_taken(snapshot_at(11, term, 4)), LogIndex(8));
    assert_eq!(r.log.first_index(), LogIndex(9));
    assert_eq!(r.status().snapshot_index, LogIndex(11));
    // An older snapshot changes nothing.
    assert_eq!(r.snapshot_taken(snapshot_at(10, term, 4)), LogIndex(8));
    assert_eq!(r.log.snapshot_meta().map(|m| m.index), Some(LogIndex(11)));

    let mut net = snapshot_cluster();
    net.elect(1);
    net.isolate(3);
    // A heartbeat interval passes with the follower cut off (see the fast backtracking test).
    net.tick_all(1);
    for k in 0..4 {
        net.propose(1, &format!("c{k}"));
    }
    let first = net.node(1).log.applied_index();
    net.node(1).snapshot_taken(snapshot_at(first.0, 1, 64));
    net.heal();
    let mut net = SnapshotNetwork::new(net);
    net.chunks_to_pass = 1;
    net.chunks_to_drop = usize::MAX;
    net.tick_all(1);
    assert!(net.chunks_sent > 1, "the transfer of `first` began");
    for k in 0..4 {
        net.propose(1, &format!("d{k}"));
    }
    let later = net.net.node(1).log.applied_index();
    assert!(later > first);
    let compacted = net.net.node(1).snapshot_taken(snapshot_at(later.0, 1, 64));
    assert_eq!(
        compacted, first,
        "the follower installing `first` goes on from the log"
    );
    net.chunks_to_drop = 0;
    net.tick_all(30);
    assert_eq!(net.installed.first().map(|(_, m)| m.index), Some(first));
    let leader_last = net.net.node(1).log.last_index();
    assert_eq!(net.net.node(3).log.last_index(), leader_last);
}

/// Raft §7: a node restarts from its snapshot and the log after it: the snapshot's term is
/// known at its index, the state machine is at the snapshot, and committed entries after it
/// are applied again.
#[test]
fn section_7_restart_from_a_snapshot_and_the_log_after_it() {
    let persisted = Persisted {
        hard_state: HardState {
            term: Term(3),
            vote: None,
            commit_index: LogIndex(6),
        },
        snapshot: Some(snapshot_at(4, 2, 8)),
        entries: vec![entry(5, 2), entry(6, 3), entry(7, 3)],
    };
    let mut r = Raft::restart(config(1, 3), ChaCha8Rng::seed_from_u64(1), persisted).unwrap();
    assert_eq!(r.log.term(LogIndex(4)), Some(Term(2)));
    assert_eq!(r.log.term(LogIndex(3)), None);
    assert_eq!(r.log.applied_index(), LogIndex(4));
    let ready = r.ready().unwrap();
    let applied: Vec<u64> = ready.committed_entries.iter().map(|e| e.index.0).collect();
    assert_eq!(applied, vec![5, 6]);
    r.advance();

    let gap = Persisted {
        hard_state: HardState::default(),
        snapshot: Some(snapshot_at(4, 2, 8)),
        entries: vec![entry(6, 2)],
    };
    assert!(Raft::restart(config(1, 3), ChaCha8Rng::seed_from_u64(1), gap).is_err());
    let mut damaged = snapshot_at(4, 2, 8);
    damaged.meta.checksum ^= 1;
    let damaged = Persisted {
        snapshot: Some(damaged),
        ..Persisted::default()
    };
    assert!(Raft::restart(config(1, 3), ChaCha8Rng::seed_from_u64(1), damaged).is_err());
}

/// Raft §7: a transfer to a follower that is down holds nothing back: once it has gone quiet
/// for an election timeout, a new snapshot restarts it and the log is compacted behind the new
/// snapshot, so a dead follower never makes the leader's log grow without bound.
#[test]
fn section_7_a_transfer_to_a_dead_follower_does_not_hold_compaction_back() {
    let mut net = snapshot_cluster();
    net.elect(1);
    net.isolate(3);
    // A heartbeat interval passes with the follower cut off (see the fast backtracking test).
    net.tick_all(1);
    for k in 0..4 {
        net.propose(1, &format!("c{k}"));
    }
    let first = net.node(1).log.applied_index();
    net.node(1).snapshot_taken(snapshot_at(first.0, 1, 64));
    net.heal();
    let mut net = SnapshotNetwork::new(net);
    net.chunks_to_pass = 1;
    net.chunks_to_drop = usize::MAX;
    net.tick_all(1);
    let pending = net
        .net
        .node(1)
        .progress(NodeId(3))
        .and_then(Progress::pending_snapshot);
    assert_eq!(
        pending.map(|m| m.index),
        Some(first),
        "the follower began the transfer"
    );
    // The follower answered once (it began the transfer), then dies.
    net.net.isolate(3);
    for k in 0..4 {
        net.propose(1, &format!("d{k}"));
    }
    let timeout = net.net.node(1).config.election_timeout_ticks_min;
    for _ in 0..timeout {
        net.net.node(1).tick();
        let _ = flush(net.net.node(1));
    }
    let later = net.net.node(1).log.applied_index();
    let compacted = net.net.node(1).snapshot_taken(snapshot_at(later.0, 1, 64));
    assert_eq!(compacted, later, "nothing held back by the quiet transfer");
    let pending = net
        .net
        .node(1)
        .progress(NodeId(3))
        .and_then(Progress::pending_snapshot);
    assert_eq!(
        pending.map(|m| m.index),
        Some(later),
        "the transfer starts over"
    );
    // Back again, the follower installs the newer snapshot and goes on from the log.
    net.net.heal();
    net.chunks_to_drop = 0;
    net.tick_all(30);
    assert_eq!(net.installed.last().map(|(_, m)| m.index), Some(later));
    let leader_last = net.net.node(1).log.last_index();
    assert_eq!(net.net.node(3).log.last_index(), leader_last);
}

// ----- §6.4 reads without the log -----------------------------------------------------------

fn read_ok(read: u64, index: u64) -> ReadState {
    ReadState {
        read: ReadId(read),
        index: Ok(LogIndex(index)),
    }
}

fn read_refused(read: u64) -> ReadState {
    ReadState {
        read: ReadId(read),
        index: Err(ReadRefused::NotLeader),
    }
}

/// Thesis §6.4: the leader's read index is its commit index, released once a quorum answered
/// a heartbeat sent after it was recorded; nothing enters the log.
#[test]
fn section_6_4_a_leader_read_waits_for_a_quorum_round_and_writes_nothing() {
    let mut net = Network::of(3);
    net.elect(1);
    let index = net.propose(1, "x");
    let last = net.node(1).log.last_index();
    net.isolate(2);
    net.isolate(3);
    net.node(1).read_index(ReadId(7));
    net.settle();
    assert!(net.take_reads(1).is_empty(), "no quorum answered");
    // A heartbeat interval passes with the followers cut off.
    let heartbeat = net.node(1).config.heartbeat_interval_ticks;
    net.tick_all(heartbeat);
    net.heal();
    net.tick_all(heartbeat);
    assert_eq!(net.take_reads(1), [read_ok(7, index.0)]);
    assert_eq!(net.node(1).log.last_index(), last, "a read writes nothing");
}

/// Thesis §6.4: many reads asked before a round goes out share it.
#[test]
fn section_6_4_reads_asked_together_share_one_round() {
    let mut net = Network::of(3);
    net.elect(1);
    let index = net.propose(1, "x").0;
    let before = net.delivered;
    for read in 1..=5 {
        net.node(1).read_index(ReadId(read));
    }
    net.settle();
    let reads: Vec<ReadState> = (1..=5).map(|r| read_ok(r, index)).collect();
    assert_eq!(net.take_reads(1), reads);
    // One heartbeat and one answer per follower.
    assert_eq!(net.delivered - before, 4);
}

/// Thesis §6.4: a new leader serves no read before an entry of its own term commits.
#[test]
fn section_6_4_a_new_leader_reads_only_after_its_first_commit() {
    let mut net = Network::of(3);
    tick_until_campaign(net.node(1));
    // Deliver messages one wave at a time until node 1 leads, then cut it off before its
    // no-op can commit.
    for _ in 0..8 {
        if net.node(1).role_kind() == RoleKind::Leader {
            break;
        }
        let queue: Vec<Message> = net.nodes.values_mut().flat_map(flush).collect();
        for m in queue {
            net.nodes.get_mut(&m.to).unwrap().step(m);
        }
    }
    assert_eq!(net.node(1).role_kind(), RoleKind::Leader);
    net.isolate(1);
    net.node(1).read_index(ReadId(1));
    net.settle();
    assert!(net.take_reads(1).is_empty());
    net.heal();
    net.tick_all(1);
    let noop = net.node(1).log.last_index();
    assert_eq!(net.node(1).log.commit_index(), noop);
    assert_eq!(net.take_reads(1), [read_ok(1, noop.0)]);
}

/// A follower asks the leader for the read index and hands it on; it serves once applied.
#[test]
fn section_6_4_a_follower_read_gets_the_leaders_index() {
    let mut net = Network::of(3);
    net.elect(1);
    let index = net.propose(1, "x").0;
    net.node(2).read_index(ReadId(3));
    net.settle();
    assert_eq!(net.take_reads(2), [read_ok(3, index)]);
    assert!(
        net.take_reads(1).is_empty(),
        "the leader answers by message"
    );
}

/// Lazily (the default), a leader's new commit reaches followers with the next append, or the
/// heartbeat of the first interval without one, and a replicated write costs an append and its
/// answer per follower; eagerly, a heartbeat
/// carrying the commit and its answer follow at once.
#[test]
fn a_followers_commit_comes_with_the_next_heartbeat_or_at_once_when_eager() {
    for eager in [false, true] {
        let mut net = Network::with(3, |c| c.eager_commit = eager);
        net.elect(1);
        net.tick_all(1);
        let (index, _) = net.node(1).propose(payload("x")).unwrap();
        let delivered = net.settle();
        assert_eq!(net.node(1).log.commit_index(), index);
        let followers_commit = net.node(2).log.commit_index();
        match eager {
            false => {
                assert_eq!(delivered, 4, "two appends and their answers");
                assert!(followers_commit < index);
                // The append excuses its interval's heartbeat.
                net.tick_all(1);
                assert!(net.node(2).log.commit_index() < index);
                net.tick_all(1);
                assert_eq!(net.node(2).log.commit_index(), index);
            }
            true => {
                assert_eq!(delivered, 8, "and two heartbeats with the commit");
                assert_eq!(followers_commit, index);
            }
        }
    }
}

/// The followers the leader's next periodic heartbeat goes to (it ticks once, and its Ready is
/// taken from it, not delivered).
fn heartbeat_recipients(net: &mut Network, leader: u64) -> Vec<u64> {
    net.node(leader).tick();
    let mut to: Vec<u64> = flush(net.node(leader))
        .into_iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .map(|m| m.to.0)
        .collect();
    to.sort_unstable();
    to
}

/// Three nodes whose commit reaches followers at once, with an append window of `window`; the
/// leader's no-op has committed and its heartbeat interval has started again.
fn eager_cluster(window: usize) -> Network {
    let mut net = Network::with(3, |c| {
        c.eager_commit = true;
        c.inflight_appends_max = window;
    });
    net.elect(1);
    net.tick_all(1);
    net
}

/// Raft §5.2 sends heartbeats in idle periods: a follower that accepted an append sent since
/// the last periodic heartbeat, and was told the commit, gets none; one whose appends of the
/// interval went unanswered does.
#[test]
fn section_5_2_a_heartbeat_skips_a_follower_that_accepted_an_append_of_its_interval() {
    let mut net = eager_cluster(8);
    net.propose(1, "x");
    assert_eq!(heartbeat_recipients(&mut net, 1), [] as [u64; 0]);
    // An idle interval: every follower hears a heartbeat.
    assert_eq!(heartbeat_recipients(&mut net, 1), [2, 3]);
    net.settle();
    net.isolate(3);
    net.propose(1, "y");
    assert_eq!(heartbeat_recipients(&mut net, 1), [3]);
    // Its acceptance counts once: the next interval, with no append, sends to both.
    net.heal();
    assert_eq!(heartbeat_recipients(&mut net, 1), [2, 3]);
}

/// A follower the leader cannot send to, its append window full of appends that may be lost,
/// gets its heartbeat: the answer frees a slot (see `Progress::heartbeat_answered`).
#[test]
fn a_heartbeat_goes_to_a_follower_with_a_full_window_despite_an_accepted_append() {
    for (window, recipients) in [(2, vec![2]), (3, vec![])] {
        let mut net = eager_cluster(window);
        net.propose(1, "x");
        net.cut.insert((NodeId(1), NodeId(2)));
        net.propose(1, "y");
        net.propose(1, "z");
        assert_eq!(
            heartbeat_recipients(&mut net, 1),
            recipients,
            "window {window}"
        );
    }
}

/// An eager cluster (above) whose heartbeat answers are lost, with a read waiting for its round
/// since before an append both followers accepted.
fn read_unanswered_after_an_append() -> Network {
    let mut net = eager_cluster(8);
    net.dropping = Some(|m| matches!(m.body, MessageBody::HeartbeatResponse { .. }));
    net.node(1).read_index(ReadId(1));
    net.settle();
    net.propose(1, "x");
    net
}

/// Thesis §6.4: a read whose round has gone unconfirmed for a whole heartbeat interval has
/// every follower hear the next heartbeat, whatever it accepted: its round's heartbeats or
/// their answers were likely lost, and any answer may be the one that confirms it.
#[test]
fn section_6_4_a_heartbeat_skips_no_follower_while_a_read_waits_an_interval() {
    let mut net = read_unanswered_after_an_append();
    // Sent in this interval, the round's answers may still come.
    assert_eq!(heartbeat_recipients(&mut net, 1), [] as [u64; 0]);
    net.propose(1, "y");
    assert_eq!(heartbeat_recipients(&mut net, 1), [2, 3]);
    // Once the read is answered, the skipping resumes.
    net.dropping = None;
    net.tick_all(1);
    assert_eq!(net.take_reads(1).len(), 1);
    net.propose(1, "z");
    assert_eq!(heartbeat_recipients(&mut net, 1), [] as [u64; 0]);
}

/// Thesis §6.4: reads asked before a periodic heartbeat join its round, and every follower
/// hears it, whatever it accepted; a read round's own heartbeats, sent as soon as it is
/// asked, do not end the heartbeat interval.
#[test]
fn section_6_4_a_read_rounds_periodic_heartbeat_skips_no_follower() {
    let mut net = read_unanswered_after_an_append();
    net.node(1).read_index(ReadId(2));
    assert_eq!(heartbeat_recipients(&mut net, 1), [2, 3]);

    let mut net = eager_cluster(8);
    net.propose(1, "x");
    net.node(1).read_index(ReadId(1));
    net.settle();
    assert_eq!(net.take_reads(1).len(), 1);
    assert_eq!(heartbeat_recipients(&mut net, 1), [] as [u64; 0]);
}

/// Three nodes with lease reads, past the election timeout in which nodes that just started
/// vote for no one (see the test of a restarted node's vote below): the leader and its two
/// followers.
fn lease_cluster() -> (Network, u64, [u64; 2]) {
    let lease_config = |id| Config {
        check_quorum: true,
        read_lease: true,
        ..config(id, 3)
    };
    let mut net = Network::new((1..=3).map(|id| raft_with(lease_config(id))).collect());
    let max = net.node(1).config.election_timeout_ticks_max;
    net.tick_all(max);
    let leader = (1..=3)
        .find(|&id| net.node(id).role_kind() == RoleKind::Leader)
        .expect("a leader after one election timeout");
    let (a, b) = match leader {
        1 => (2, 3),
        2 => (1, 3),
        _ => (1, 2),
    };
    (net, leader, [a, b])
}

/// A follower whose read waits for a commit it has not been told is told at once, with the
/// answer, not at the next heartbeat. A read round's heartbeats carry the commit anyway; a
/// lease read has no round.
#[test]
fn section_6_4_1_a_follower_lease_read_is_told_the_commit_it_waits_for() {
    let (mut net, leader, [a, b]) = lease_cluster();
    let index = net.propose(leader, "x");
    assert!(net.node(a).log.commit_index() < index, "lazy commit");
    net.node(a).read_index(ReadId(3));
    net.settle();
    assert_eq!(net.take_reads(a), [read_ok(3, index.0)]);
    assert_eq!(net.node(a).log.commit_index(), index);
    assert!(
        net.node(b).log.commit_index() < index,
        "only the follower that waits is told"
    );
}

/// A leader deposed before its round is confirmed refuses its reads; a node that knows no
/// leader refuses at once.
#[test]
fn section_6_4_a_deposed_leader_refuses_its_pending_reads() {
    let mut net = Network::of(3);
    net.elect(1);
    net.propose(1, "x");
    net.isolate(1);
    net.node(1).read_index(ReadId(1));
    net.settle();
    // Node 2 takes over; node 1 hears of the higher term and steps down.
    net.elect(2);
    net.heal();
    let heartbeat = net.node(2).config.heartbeat_interval_ticks;
    net.tick_all(heartbeat);
    assert_eq!(net.node(1).role_kind(), RoleKind::Follower);
    assert!(net.take_reads(1).contains(&read_refused(1)));
    let mut lonely = raft(1, 3);
    lonely.read_index(ReadId(9));
    let ready = lonely.ready().unwrap();
    assert_eq!(ready.read_states, [read_refused(9)]);
}

/// A forwarded read that reaches a node that does not lead is refused in its answer.
#[test]
fn section_6_4_a_read_forwarded_to_a_non_leader_is_refused() {
    let mut r = follower_with_log(&[1, 2], 2);
    r.step(message(3, 2, 2, MessageBody::ReadIndex { read: ReadId(4) }));
    let replies = flush(&mut r);
    assert_eq!(
        replies[0].body,
        MessageBody::ReadIndexResponse {
            read: ReadId(4),
            index: None
        }
    );
}

/// Thesis §6.4.1: with a lease held, a leader answers at once; once the lease has run out
/// with no answers, it does not; lease reads need check-quorum.
#[test]
fn section_6_4_1_a_lease_read_needs_no_round_while_the_lease_holds() {
    let (mut net, leader, [a, b]) = lease_cluster();
    let min = net.node(1).config.election_timeout_ticks_min;
    let index = net.propose(leader, "x").0;
    let heartbeat = net.node(leader).config.heartbeat_interval_ticks;
    net.tick_all(heartbeat);
    net.isolate(a);
    net.isolate(b);
    net.node(leader).read_index(ReadId(1));
    net.settle();
    assert_eq!(
        net.take_reads(leader),
        [read_ok(1, index)],
        "answered within the lease"
    );
    // Cut off for a whole election timeout: the lease is over (and check-quorum deposes it).
    for _ in 0..min {
        net.node(leader).tick();
        net.settle();
    }
    net.node(leader).read_index(ReadId(2));
    net.settle();
    let reads = net.take_reads(leader);
    assert!(
        reads
            .iter()
            .all(|r| r.read != ReadId(2) || r.index.is_err()),
        "{reads:?}"
    );
    let no_quorum_check = Config {
        read_lease: true,
        ..config(1, 3)
    };
    assert!(no_quorum_check.validate().is_err());
}

/// A lease is counted in ticks; when the host's clock stalls (a paused process), ticks no
/// longer tell real time: the leader drops its lease and confirms reads by a round again, until
/// a round sent after the stall renews it.
#[test]
fn section_6_4_1_a_clock_stall_ends_the_lease() {
    let (mut net, leader, _) = lease_cluster();
    let index = net.propose(leader, "x").0;
    let heartbeat = net.node(leader).config.heartbeat_interval_ticks;
    net.tick_all(heartbeat);
    net.node(leader).clock_stalled();
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    for &id in &others {
        net.isolate(id);
    }
    net.node(leader).read_index(ReadId(1));
    net.settle();
    assert_eq!(net.take_reads(leader), [], "no lease after the stall");
    // Reconnected, the round confirms the read, and a round sent now renews the lease.
    net.heal();
    net.tick_all(heartbeat);
    assert_eq!(net.take_reads(leader), [read_ok(1, index)]);
    net.tick_all(heartbeat);
    for &id in &others {
        net.isolate(id);
    }
    net.node(leader).read_index(ReadId(2));
    net.settle();
    assert_eq!(net.take_reads(leader), [read_ok(2, index)], "a lease again");
}

/// With read leases, a node that has just (re)started may have answered a leader's heartbeat
/// in its previous life: it refuses votes for an election timeout, as if it had heard one.
#[test]
fn section_6_4_1_with_leases_a_restarted_node_waits_an_election_timeout_to_vote() {
    let cfg = Config {
        check_quorum: true,
        read_lease: true,
        ..config(2, 3)
    };
    let min = cfg.election_timeout_ticks_min;
    let mut r = raft_with(cfg);
    r.step(vote_request(1, 2, 1, 0, 0));
    assert_eq!(r.hard_state().vote, None, "voted right after starting");
    for _ in 0..min {
        r.tick();
        let _ = flush(&mut r);
    }
    let term = r.term.0 + 1;
    r.step(vote_request(1, 2, term.max(2), 0, 0));
    let _ = flush(&mut r);
    assert!(
        r.role_kind() == RoleKind::Follower && r.hard_state().vote == Some(NodeId(1))
            || r.term.0 > term.max(2),
        "{:?}",
        r.status()
    );
}

// ----- membership changes (thesis §4) and leadership transfer (thesis §3.10) ---------------------

/// A network of `n` bootstrap voters plus `joiners` new nodes outside the cluster (their
/// bootstrap configuration is the cluster's; they wait to be added).
fn cluster_with_joiners(n: u64, joiners: u64, pre_vote: bool, check_quorum: bool) -> Network {
    let nodes = (1..=n + joiners)
        .map(|id| {
            raft_with(Config {
                pre_vote,
                check_quorum,
                ..Config::new(NodeId(id), ids(n))
            })
        })
        .collect();
    Network::new(nodes)
}

fn add_learner(id: u64, promote: bool) -> ConfChange {
    ConfChange::AddLearner {
        id: NodeId(id),
        address: format!("node-{id}:7000"),
        promote,
    }
}

/// Thesis §4.2.1: a new member joins as a learner, receives the log, and is promoted by the
/// leader once caught up; the configuration is the same on every member afterwards.
#[test]
fn thesis_4_2_1_a_learner_catches_up_and_is_promoted() {
    let mut net = cluster_with_joiners(3, 1, false, false);
    net.elect(1);
    for k in 0..5 {
        net.propose(1, &format!("before-{k}"));
    }
    net.node(1).propose_change(add_learner(4, true)).unwrap();
    net.settle();
    net.tell_followers_the_commit();
    let everyone = [NodeId(1), NodeId(2), NodeId(3), NodeId(4)];
    for id in 1..=4 {
        let membership = net.node(id).membership().clone();
        assert_eq!(membership.voter_ids(), everyone, "node {id}");
        assert_eq!(
            net.node(id).status().commit_index,
            net.node(1).status().commit_index
        );
    }
    // Node 4 now counts: with two of the old voters gone, 1 and 4 are not a quorum of four.
    net.isolate(2);
    net.isolate(3);
    let (index, _) = net.node(1).propose(payload("needs three")).unwrap();
    net.settle();
    assert!(net.node(1).status().commit_index < index);
    net.heal();
    net.tick_all(1);
    assert!(net.node(1).status().commit_index >= index);
}

/// Thesis §4.1 with Ongaro's correction: a leader proposes no change before an entry of its
/// own term has committed, and none while an earlier change is uncommitted.
#[test]
fn thesis_4_1_one_change_at_a_time_and_only_after_the_terms_first_commit() {
    let mut net = cluster_with_joiners(3, 2, false, false);
    tick_until_campaign(net.node(1));
    // Win the election but hold back the no-op's acknowledgements.
    net.isolate(1);
    let mut votes = Vec::new();
    for m in flush(net.node(1)) {
        let to = m.to;
        net.node(to.0).step(m);
        votes.extend(flush(net.node(to.0)));
    }
    for m in votes {
        net.node(1).step(m);
    }
    assert_eq!(net.node(1).role_kind(), RoleKind::Leader);
    assert_eq!(
        net.node(1).propose_change(add_learner(4, false)),
        Err(ChangeError::Pending),
        "before the no-op commits"
    );
    net.heal();
    net.settle();
    net.node(1).propose_change(add_learner(4, false)).unwrap();
    assert_eq!(
        net.node(1).propose_change(add_learner(5, false)),
        Err(ChangeError::Pending),
        "while the first change is uncommitted"
    );
    net.settle();
    net.node(1).propose_change(add_learner(5, false)).unwrap();
    assert!(matches!(
        net.node(1).propose_change(add_learner(5, false)),
        Err(ChangeError::Invalid(_))
    ));
    assert_eq!(
        net.node(2).propose_change(add_learner(6, false)),
        Err(ChangeError::NotLeader {
            leader: Some(NodeId(1))
        })
    );
}

/// Learners receive the log but never count towards a commit and never campaign.
#[test]
fn thesis_4_2_1_learners_never_count_and_never_campaign() {
    let mut net = cluster_with_joiners(3, 1, true, true);
    net.elect(1);
    net.node(1).propose_change(add_learner(4, false)).unwrap();
    net.settle();
    let index = net.propose(1, "to everyone");
    net.tell_followers_the_commit();
    assert_eq!(net.node(4).status().commit_index, index);
    net.isolate(2);
    net.isolate(3);
    let (index, _) = net
        .node(1)
        .propose(payload("leader and learner only"))
        .unwrap();
    net.settle();
    assert!(net.node(1).status().commit_index < index);
    assert_eq!(
        net.node(4).status().last_index,
        index,
        "the learner holds it"
    );
    // Cut off from everyone, the learner waits forever without campaigning.
    net.heal();
    net.isolate(4);
    let term = net.node(4).status().term;
    for _ in 0..10 * net.node(4).config().election_timeout_ticks_max {
        net.node(4).tick();
        net.settle();
    }
    assert_eq!(net.node(4).role_kind(), RoleKind::Follower);
    assert_eq!(net.node(4).status().term, term);
}

/// Thesis §4.2.2: a leader that removes itself leads until the change commits (without
/// counting itself), then steps down and never campaigns again; the rest elect a leader.
#[test]
fn thesis_4_2_2_a_removed_leader_steps_down_once_the_change_commits() {
    let mut net = cluster(3, true, true);
    net.elect(1);
    net.node(1)
        .propose_change(ConfChange::Remove { id: NodeId(1) })
        .unwrap();
    assert_eq!(net.node(1).role_kind(), RoleKind::Leader);
    net.settle();
    assert_eq!(net.node(1).role_kind(), RoleKind::Follower);
    for id in 1..=3 {
        assert_eq!(
            net.node(id).membership().voter_ids(),
            [NodeId(2), NodeId(3)],
            "node {id}"
        );
    }
    let ticks = 3 * net.node(2).config().election_timeout_ticks_max;
    net.tick_all(ticks);
    let leaders: Vec<u64> = (1..=3)
        .filter(|&id| net.node(id).role_kind() == RoleKind::Leader)
        .collect();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 1, "the removed node never leads");
}

/// Thesis §4.1: a configuration is in force from its append; when the entry is truncated by
/// a new leader, the configuration rolls back to the newest left in the log.
#[test]
fn thesis_4_1_a_truncated_configuration_rolls_back() {
    let mut follower = raft(2, 3);
    let bootstrap = follower.membership().clone();
    let four = bootstrap
        .apply(&add_learner(4, false))
        .unwrap()
        .apply(&ConfChange::Promote { id: NodeId(4) })
        .unwrap();
    let config_entry = Entry {
        term: Term(1),
        index: LogIndex(2),
        data: EntryData::Membership(four.clone()),
    };
    follower.step(append(1, 2, 1, (0, 0), vec![entry(1, 1), config_entry], 1));
    assert_eq!(follower.membership(), &four, "in force once appended");
    let _ = flush(&mut follower);
    // A leader of term 2 that never had it overwrites index 2.
    follower.step(append(3, 2, 2, (1, 1), vec![entry(2, 2)], 1));
    assert_eq!(follower.membership(), &bootstrap, "rolled back");
}

/// A snapshot holds the configuration at its index, and a node restarted from it alone has
/// that configuration.
#[test]
fn a_snapshot_carries_the_configuration_at_its_index() {
    let mut net = cluster_with_joiners(3, 1, false, false);
    net.elect(1);
    net.node(1).propose_change(add_learner(4, false)).unwrap();
    net.settle();
    let applied = net.node(1).status().applied_index;
    let term = net.node(1).log().term(applied).unwrap();
    let membership = net.node(1).membership_at(applied).clone();
    assert!(membership.is_member(NodeId(4)));
    net.node(1).snapshot_taken(
        Snapshot::new(applied, term, payload("state")).with_membership(membership.clone()),
    );
    let snapshot = net.node(1).log().snapshot().unwrap().clone();
    assert_eq!(snapshot.membership, membership);
    let persisted = Persisted {
        hard_state: net.node(1).hard_state(),
        snapshot: Some(snapshot),
        entries: Vec::new(),
    };
    let restarted = Raft::restart(config(1, 3), ChaCha8Rng::seed_from_u64(9), persisted).unwrap();
    assert_eq!(restarted.membership(), &membership);
}

/// Thesis §3.10: the leader brings the target up to date and sends TimeoutNow; the target
/// campaigns at once, past pre-vote and past voters that just heard from the old leader.
#[test]
fn thesis_3_10_leadership_transfer_hands_over_without_a_timeout() {
    let mut net = cluster(3, true, true);
    net.elect(1);
    net.propose(1, "x");
    let term = net.node(1).status().term;
    assert_eq!(
        net.node(1).transfer_leadership(Some(NodeId(2))),
        Ok(NodeId(2))
    );
    net.settle();
    assert_eq!(net.node(2).role_kind(), RoleKind::Leader);
    assert_eq!(net.node(2).status().term, term.next());
    assert_eq!(net.node(1).role_kind(), RoleKind::Follower);
    // With no target named, the most caught-up other voter is chosen.
    net.propose(2, "y");
    assert!(net.node(2).transfer_leadership(None).is_ok());
    net.settle();
    assert_eq!(net.node(2).role_kind(), RoleKind::Follower);
}

/// Thesis §3.10: proposals are refused while a transfer runs; a transfer whose target does
/// not take over within an election timeout is abandoned; only other voters are targets.
#[test]
fn thesis_3_10_a_stuck_transfer_is_abandoned_and_targets_are_voters() {
    let mut net = cluster_with_joiners(3, 1, false, false);
    net.elect(1);
    net.node(1).propose_change(add_learner(4, false)).unwrap();
    net.settle();
    for (target, why) in [(1, "leads already"), (4, "is not a voter")] {
        match net.node(1).transfer_leadership(Some(NodeId(target))) {
            Err(TransferError::InvalidTarget(reason)) => assert!(reason.contains(why), "{reason}"),
            other => panic!("transfer to {target}: {other:?}"),
        }
    }
    net.isolate(2);
    net.node(1).transfer_leadership(Some(NodeId(2))).unwrap();
    assert_eq!(net.node(1).transfer_target(), Some(NodeId(2)));
    assert_eq!(
        net.node(1).propose(payload("during")),
        Err(ProposeError::Transferring)
    );
    for _ in 0..net.node(1).config().election_timeout_ticks_min {
        net.node(1).tick();
        net.settle();
    }
    assert_eq!(net.node(1).transfer_target(), None);
    assert_eq!(net.node(1).role_kind(), RoleKind::Leader);
    assert!(net.node(1).propose(payload("after")).is_ok());
}

/// Thesis §4.2.3: a node outside the configuration (a removed one that never learned its
/// removal committed) cannot disrupt the cluster: its vote requests and answers are ignored,
/// higher term and all, even with pre-vote and check-quorum off.
#[test]
fn thesis_4_2_3_messages_from_non_members_change_no_term() {
    let mut net = cluster(3, false, false);
    net.elect(1);
    net.node(1)
        .propose_change(ConfChange::Remove { id: NodeId(3) })
        .unwrap();
    net.settle();
    let term = net.node(2).status().term;
    net.node(2)
        .step(vote_request(3, 2, term.0 + 5, 100, term.0 + 1));
    assert_eq!(net.node(2).status().term, term);
    assert!(flush(net.node(2)).is_empty(), "no answer, no new term");
    // Nor by an answer carrying a newer term (to a heartbeat queued before the removal).
    let answer = MessageBody::HeartbeatResponse { read_round: 0 };
    net.node(1).step(message(3, 1, term.0 + 5, answer));
    assert_eq!(net.node(1).role_kind(), RoleKind::Leader);
    assert_eq!(net.node(1).status().term, term);
}
