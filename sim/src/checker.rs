//! Safety checks that run on every event a node reports, so a violation is caught at the step
//! that causes it, with the time and node, not reconstructed at the end.
//!
//! - Election safety: at most one leader per term.
//! - Commit index never moves backwards within a node's life.
//! - State machine safety: every node applies the same command at each index, in order from 1
//!   in each life. Because a restarted node applies its log again from index 1, this also
//!   proves that nothing committed was lost across crashes and power loss: a node that lost a
//!   committed entry applies something else at that index, or stalls below it.
//! - Exactly once: no session command is applied (not answered from the session table) twice.

use raftchat::chat::{Command, Outcome};
use raftchat::raft::{RoleKind, Status};
use raftchat::replica::Applied;
use raftchat::types::{ClientId, LogIndex, NodeId, Term};
use std::collections::BTreeMap;

/// A broken property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The check's name.
    pub check: &'static str,
    /// The node where it was seen.
    pub node: Option<NodeId>,
    /// What exactly.
    pub detail: String,
}

fn fail(check: &'static str, node: NodeId, detail: String) -> Result<(), Failure> {
    Err(Failure {
        check,
        node: Some(node),
        detail,
    })
}

/// What is known of one node in its current life.
#[derive(Clone, Debug, Default)]
struct Life {
    commit_index: LogIndex,
    applied_index: LogIndex,
    status: Option<Status>,
    stopped: Option<String>,
}

/// One applied entry, as first seen.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AppliedEntry {
    term: Term,
    command: Option<Command>,
}

/// The online checker.
#[derive(Default)]
pub struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    lives: BTreeMap<NodeId, Life>,
    applied: BTreeMap<LogIndex, AppliedEntry>,
    /// Where each session command first took effect (applied, not deduplicated).
    command_index: BTreeMap<(ClientId, u64), LogIndex>,
}

impl Checker {
    /// A node (re)started: its volatile state begins again.
    pub fn node_started(&mut self, node: NodeId) {
        self.lives.insert(node, Life::default());
    }

    /// A node stopped on a fatal error (e.g. it refused a corrupt log).
    pub fn node_stopped(&mut self, node: NodeId, reason: &str) {
        self.lives.entry(node).or_default().stopped = Some(reason.to_string());
    }

    /// A node was killed by the nemesis.
    pub fn node_killed(&mut self, node: NodeId) {
        self.lives.remove(&node);
    }

    /// A node reported a status change.
    pub fn status(&mut self, node: NodeId, status: Status) -> Result<(), Failure> {
        let life = self.lives.entry(node).or_default();
        if status.commit_index < life.commit_index {
            let detail = format!(
                "commit index went from {} to {}",
                life.commit_index, status.commit_index
            );
            return fail("commit_monotonic", node, detail);
        }
        life.commit_index = status.commit_index;
        life.status = Some(status);
        if status.role == RoleKind::Leader {
            let first = *self.leaders.entry(status.term).or_insert(node);
            if first != node {
                let detail = format!("{first} and {node} both lead {}", status.term);
                return fail("election_safety", node, detail);
            }
        }
        Ok(())
    }

    /// A node applied a committed entry.
    pub fn applied(&mut self, node: NodeId, applied: &Applied) -> Result<(), Failure> {
        let life = self.lives.entry(node).or_default();
        if applied.index != life.applied_index.next() {
            let detail = format!("applied {} after {}", applied.index, life.applied_index);
            return fail("state_machine_safety", node, detail);
        }
        life.applied_index = applied.index;
        let entry = AppliedEntry {
            term: applied.term,
            command: applied.command.clone(),
        };
        let first = self
            .applied
            .entry(applied.index)
            .or_insert_with(|| entry.clone());
        if *first != entry {
            let detail = format!(
                "at {} applied {:?} of {}, but another node applied {:?} of {}",
                applied.index, entry.command, entry.term, first.command, first.term
            );
            return fail("state_machine_safety", node, detail);
        }
        self.check_exactly_once(node, applied)
    }

    fn check_exactly_once(&mut self, node: NodeId, applied: &Applied) -> Result<(), Failure> {
        let Some(Command::Client {
            client_id,
            sequence,
            ..
        }) = &applied.command
        else {
            return Ok(());
        };
        let Some(Outcome::Replied {
            duplicate: false, ..
        }) = &applied.outcome
        else {
            return Ok(());
        };
        let first = *self
            .command_index
            .entry((*client_id, *sequence))
            .or_insert(applied.index);
        if first != applied.index {
            let detail = format!(
                "command ({client_id}, {sequence}) applied at {first} and again at {}",
                applied.index
            );
            return fail("exactly_once", node, detail);
        }
        Ok(())
    }

    /// Where a session command took effect, if it did.
    pub fn command_index(&self, client_id: ClientId, sequence: u64) -> Option<LogIndex> {
        self.command_index.get(&(client_id, sequence)).copied()
    }

    /// The node leading the highest term among live nodes, if any.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.lives
            .iter()
            .filter_map(|(&node, life)| life.status.map(|s| (node, s)))
            .filter(|(_, s)| s.role == RoleKind::Leader)
            .max_by_key(|(_, s)| s.term)
            .map(|(node, _)| node)
    }

    /// Nodes that stopped on a fatal error, with the reason.
    pub fn stopped_nodes(&self) -> BTreeMap<NodeId, String> {
        self.lives
            .iter()
            .filter_map(|(&n, l)| l.stopped.clone().map(|r| (n, r)))
            .collect()
    }

    /// Highest index applied anywhere.
    pub fn applied_count(&self) -> usize {
        self.applied.len()
    }

    /// Number of distinct terms that had a leader.
    pub fn leader_terms(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftchat::chat::Operation;

    fn status(role: RoleKind, term: u64, commit: u64) -> Status {
        Status {
            id: NodeId(1),
            role,
            term: Term(term),
            leader: None,
            commit_index: LogIndex(commit),
            applied_index: LogIndex(0),
            last_index: LogIndex(commit),
        }
    }

    fn applied(index: u64, term: u64, sequence: u64) -> Applied {
        let operation = Operation::CheckAccount {
            username: "u".into(),
        };
        let command = Command::Client {
            client_id: ClientId(1),
            sequence,
            operation,
        };
        let reply = raftchat::chat::Reply::new(raftchat::chat::Status::Success);
        Applied {
            index: LogIndex(index),
            term: Term(term),
            command: Some(command),
            outcome: Some(Outcome::Replied {
                reply,
                duplicate: false,
            }),
        }
    }

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut checker = Checker::default();
        assert!(checker
            .status(NodeId(1), status(RoleKind::Leader, 2, 0))
            .is_ok());
        let failure = checker
            .status(NodeId(2), status(RoleKind::Leader, 2, 0))
            .unwrap_err();
        assert_eq!(failure.check, "election_safety");
    }

    #[test]
    fn a_commit_index_moving_backwards_is_caught() {
        let mut checker = Checker::default();
        assert!(checker
            .status(NodeId(1), status(RoleKind::Follower, 1, 5))
            .is_ok());
        let failure = checker
            .status(NodeId(1), status(RoleKind::Follower, 1, 4))
            .unwrap_err();
        assert_eq!(failure.check, "commit_monotonic");
    }

    #[test]
    fn a_restart_resets_the_commit_index_floor() {
        let mut checker = Checker::default();
        assert!(checker
            .status(NodeId(1), status(RoleKind::Follower, 1, 5))
            .is_ok());
        checker.node_started(NodeId(1));
        assert!(checker
            .status(NodeId(1), status(RoleKind::Follower, 1, 0))
            .is_ok());
    }

    #[test]
    fn different_commands_at_one_index_are_caught() {
        let mut checker = Checker::default();
        assert!(checker.applied(NodeId(1), &applied(1, 1, 1)).is_ok());
        let failure = checker.applied(NodeId(2), &applied(1, 2, 1)).unwrap_err();
        assert_eq!(failure.check, "state_machine_safety");
    }

    #[test]
    fn a_gap_in_application_is_caught() {
        let mut checker = Checker::default();
        let failure = checker.applied(NodeId(1), &applied(2, 1, 1)).unwrap_err();
        assert_eq!(failure.check, "state_machine_safety");
    }

    #[test]
    fn a_command_applied_twice_is_caught() {
        let mut checker = Checker::default();
        assert!(checker.applied(NodeId(1), &applied(1, 1, 7)).is_ok());
        let failure = checker.applied(NodeId(1), &applied(2, 1, 7)).unwrap_err();
        assert_eq!(failure.check, "exactly_once");
    }
}
