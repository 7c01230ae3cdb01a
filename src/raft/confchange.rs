//! Membership: who votes, who only learns, and how that changes (Raft thesis §4).
//!
//! Changes are **single-server**: each configuration entry adds or removes at most one voter
//! (a learner may be added or removed freely, since it counts in no quorum). Any majority of a
//! voter set and any majority of the same set with one voter more or less intersect, so no two
//! leaders can be elected, and nothing committed can be lost, across one step. Why not joint
//! consensus: every change an operator makes here (add a machine, replace a dead one, remove
//! one) is a sequence of single steps, and single steps have no joint state that a crashed
//! leader can leave the cluster stuck in; the price, replacing a voter in two steps instead of
//! one, is paid once per replacement.
//!
//! Two rules make single steps safe, and the leader enforces both (thesis §4.1 and Ongaro's
//! 2015 correction on raft-dev): a leader proposes no change before an entry of its own term
//! has committed, and proposes none while an earlier change is uncommitted.
//!
//! **A configuration takes effect when it is appended**, committed or not, on every node: the
//! newest configuration entry in a node's log is the one it uses for elections, quorums,
//! commitment, read rounds and the snapshot metadata of later indexes. Truncating the log rolls
//! back to the newest configuration left in it (or the snapshot's). [`Memberships`] keeps that
//! history; the log updates it on every append, truncation, compaction and install.
//!
//! Learners receive the log and snapshots, never vote in a quorum, and never campaign. A
//! learner added with `promote` set is promoted by whichever node leads once it is caught up
//! (the flag is part of the configuration, so it survives a change of leader).

use crate::limits;
use crate::types::{LogIndex, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What a member does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRole {
    /// Counts in quorums, votes, and may lead.
    Voter,
    /// Receives the log; `promote` makes the leader promote it once it is caught up.
    Learner {
        /// Promote once caught up.
        promote: bool,
    },
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its role.
    pub role: MemberRole,
    /// Where peers reach it; opaque to Raft. Empty when the cluster file names it (the
    /// bootstrap members).
    pub address: String,
}

/// A cluster configuration: the members by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Every member, voters and learners.
    pub members: BTreeMap<NodeId, Member>,
}

/// A change an operator asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChange {
    /// Adds a learner at `address`; with `promote`, it becomes a voter once caught up.
    AddLearner {
        /// The new member.
        id: NodeId,
        /// Where peers reach it.
        address: String,
        /// Promote once caught up.
        promote: bool,
    },
    /// Makes a learner a voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Removes a member, voter or learner.
    Remove {
        /// The member.
        id: NodeId,
    },
}

/// Why a change cannot be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfChangeError(pub String);

impl fmt::Display for ConfChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfChangeError {}

impl Membership {
    /// The bootstrap configuration: these voters, addresses from the cluster file.
    pub fn of_voters(voters: &[NodeId]) -> Membership {
        let voter = || Member {
            role: MemberRole::Voter,
            address: String::new(),
        };
        Membership {
            members: voters.iter().map(|&id| (id, voter())).collect(),
        }
    }

    /// The voters, in id order.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.role == MemberRole::Voter)
            .map(|(&id, _)| id)
    }

    /// The voters, collected.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        self.voters().collect()
    }

    /// How many voters there are.
    pub fn voter_count(&self) -> usize {
        self.voters().count()
    }

    /// The learners, in id order.
    pub fn learners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.role != MemberRole::Voter)
            .map(|(&id, _)| id)
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members
            .get(&id)
            .is_some_and(|m| m.role == MemberRole::Voter)
    }

    /// Whether `id` is a member, voter or learner.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// True for no members at all: a node that has yet to learn its cluster's configuration.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The learners to promote, in id order.
    pub fn promotable(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.role == MemberRole::Learner { promote: true })
            .map(|(&id, _)| id)
    }

    /// The configuration after `change`, or why it cannot be made. Every change adds or
    /// removes at most one voter; none leaves the cluster without a voter or with more members
    /// than [`limits::CLUSTER_SIZE_MAX`].
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, ConfChangeError> {
        let fail = |reason: String| Err(ConfChangeError(reason));
        let mut next = self.clone();
        match change {
            ConfChange::AddLearner {
                id,
                address,
                promote,
            } => {
                if self.is_member(*id) {
                    return fail(format!("{id} is a member already"));
                }
                if self.members.len() >= limits::CLUSTER_SIZE_MAX {
                    return fail(format!(
                        "the cluster has {} members, the most it may have",
                        limits::CLUSTER_SIZE_MAX
                    ));
                }
                if address.len() > limits::ADDRESS_BYTES_MAX {
                    return fail(format!(
                        "the address is longer than {} bytes",
                        limits::ADDRESS_BYTES_MAX
                    ));
                }
                let role = MemberRole::Learner { promote: *promote };
                let address = address.clone();
                next.members.insert(*id, Member { role, address });
            }
            ConfChange::Promote { id } => match next.members.get_mut(id) {
                Some(member) if member.role != MemberRole::Voter => {
                    member.role = MemberRole::Voter;
                }
                Some(_) => return fail(format!("{id} is a voter already")),
                None => return fail(format!("{id} is not a member")),
            },
            ConfChange::Remove { id } => {
                if !self.is_member(*id) {
                    return fail(format!("{id} is not a member"));
                }
                if self.is_voter(*id) && self.voter_count() == 1 {
                    return fail(format!("{id} is the last voter"));
                }
                next.members.remove(id);
            }
        }
        debug_assert!(is_single_step(self, &next));
        Ok(next)
    }

    /// Whether this configuration can be a cluster's: at least one voter, at most
    /// [`limits::CLUSTER_SIZE_MAX`] members, addresses within bounds. Checked on every
    /// configuration that arrives from the network or the disk.
    pub fn is_well_formed(&self) -> bool {
        self.members.len() <= limits::CLUSTER_SIZE_MAX
            && self.voters().next().is_some()
            && self
                .members
                .values()
                .all(|m| m.address.len() <= limits::ADDRESS_BYTES_MAX)
    }
}

/// Whether `next` differs from `previous` by at most one voter added or removed: the rule that
/// keeps every majority of one intersecting every majority of the other.
pub fn is_single_step(previous: &Membership, next: &Membership) -> bool {
    let added = next.voters().filter(|&v| !previous.is_voter(v)).count();
    let removed = previous.voters().filter(|&v| !next.is_voter(v)).count();
    added + removed <= 1
}

/// The configurations a log holds: the one in force at its base (the snapshot, or the
/// bootstrap configuration), and one per configuration entry after it, in index order. The
/// newest is the one in force (configurations take effect when appended).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memberships {
    /// The configuration in force at and before `base_index`.
    base: Membership,
    base_index: LogIndex,
    /// Configuration entries after `base_index`, in index order.
    changes: Vec<(LogIndex, Membership)>,
}

impl Memberships {
    /// A history with only a base: `membership` in force through `index`.
    pub fn new(index: LogIndex, membership: Membership) -> Memberships {
        Memberships {
            base: membership,
            base_index: index,
            changes: Vec::new(),
        }
    }

    /// The configuration in force: the newest appended.
    pub fn latest(&self) -> &Membership {
        self.changes.last().map_or(&self.base, |(_, m)| m)
    }

    /// The index of the newest configuration entry, or of the base when the log holds none.
    pub fn latest_index(&self) -> LogIndex {
        self.changes.last().map_or(self.base_index, |(i, _)| *i)
    }

    /// The configuration in force at `index`: the newest at or before it (the base for an
    /// index at or before the base).
    pub fn at(&self, index: LogIndex) -> &Membership {
        self.changes
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base, |(_, m)| m)
    }

    /// A configuration entry was appended at `index`, after every one held.
    pub fn appended(&mut self, index: LogIndex, membership: Membership) {
        assert!(index > self.latest_index(), "configurations out of order");
        self.changes.push((index, membership));
    }

    /// The log was cut after `index`: configurations from entries after it are gone, and the
    /// one in force rolls back to the newest left.
    pub fn truncated_after(&mut self, index: LogIndex) {
        #[cfg(feature = "mutants")]
        let in_force = self.latest().clone();
        self.changes.retain(|(i, _)| *i <= index);
        #[cfg(feature = "mutants")]
        if crate::mutants::is_active(crate::mutants::Mutant::KeepTruncatedConfig)
            && *self.latest() != in_force
        {
            // The bug: the truncated configuration stays in force (until the next one).
            self.changes.retain(|(i, _)| *i < index);
            self.changes
                .push((index.max(self.base_index.next()), in_force));
        }
    }

    /// The log was compacted through `index`: the configuration in force there becomes the
    /// base.
    pub fn compacted_through(&mut self, index: LogIndex) {
        if index <= self.base_index {
            return;
        }
        self.base = self.at(index).clone();
        self.base_index = index;
        self.changes.retain(|(i, _)| *i > index);
    }

    /// The log was replaced by a snapshot through `index` whose configuration is
    /// `membership`, keeping the entries after it (and their configurations).
    pub fn installed(&mut self, index: LogIndex, membership: Membership) {
        self.changes.retain(|(i, _)| *i > index);
        self.base = membership;
        self.base_index = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    fn add(id: u64, promote: bool) -> ConfChange {
        ConfChange::AddLearner {
            id: NodeId(id),
            address: format!("host-{id}:7000"),
            promote,
        }
    }

    #[test]
    fn changes_move_one_voter_at_a_time() {
        let three = Membership::of_voters(&ids(&[1, 2, 3]));
        let with_learner = three.apply(&add(4, true)).unwrap();
        assert_eq!(with_learner.voter_ids(), ids(&[1, 2, 3]));
        assert_eq!(with_learner.learners().collect::<Vec<_>>(), ids(&[4]));
        assert_eq!(with_learner.promotable().collect::<Vec<_>>(), ids(&[4]));
        let four = with_learner
            .apply(&ConfChange::Promote { id: NodeId(4) })
            .unwrap();
        assert_eq!(four.voter_ids(), ids(&[1, 2, 3, 4]));
        assert!(is_single_step(&three, &four));
        let replaced = four.apply(&ConfChange::Remove { id: NodeId(1) }).unwrap();
        assert_eq!(replaced.voter_ids(), ids(&[2, 3, 4]));
        // Two steps apart is not one step.
        assert!(!is_single_step(&three, &replaced));
    }

    #[test]
    fn impossible_changes_are_refused_with_a_reason() {
        let one = Membership::of_voters(&ids(&[1]));
        let cases: Vec<(ConfChange, &str)> = vec![
            (add(1, false), "n1 is a member already"),
            (
                ConfChange::Promote { id: NodeId(1) },
                "n1 is a voter already",
            ),
            (ConfChange::Promote { id: NodeId(9) }, "n9 is not a member"),
            (ConfChange::Remove { id: NodeId(9) }, "n9 is not a member"),
            (ConfChange::Remove { id: NodeId(1) }, "n1 is the last voter"),
        ];
        for (change, reason) in cases {
            assert_eq!(one.apply(&change), Err(ConfChangeError(reason.into())));
        }
        let full = Membership::of_voters(
            &(1..=limits::CLUSTER_SIZE_MAX as u64)
                .map(NodeId)
                .collect::<Vec<_>>(),
        );
        assert!(full.apply(&add(99, false)).is_err());
        let long = ConfChange::AddLearner {
            id: NodeId(2),
            address: "x".repeat(limits::ADDRESS_BYTES_MAX + 1),
            promote: false,
        };
        assert!(one.apply(&long).is_err());
    }

    #[test]
    fn history_rolls_back_on_truncation_and_folds_on_compaction() {
        let three = Membership::of_voters(&ids(&[1, 2, 3]));
        let four = three
            .apply(&add(4, false))
            .unwrap()
            .apply(&ConfChange::Promote { id: NodeId(4) })
            .unwrap();
        let mut history = Memberships::new(LogIndex(0), three.clone());
        history.appended(LogIndex(5), four.clone());
        assert_eq!(history.latest(), &four);
        assert_eq!(history.at(LogIndex(4)), &three);
        assert_eq!(history.at(LogIndex(5)), &four);
        history.truncated_after(LogIndex(4));
        assert_eq!(
            history.latest(),
            &three,
            "a truncated configuration rolls back"
        );
        history.appended(LogIndex(5), four.clone());
        history.compacted_through(LogIndex(7));
        assert_eq!(history.latest(), &four);
        assert_eq!(history.latest_index(), LogIndex(7));
        history.truncated_after(LogIndex(7));
        assert_eq!(history.latest(), &four, "the base survives truncation");
        history.installed(LogIndex(10), three.clone());
        assert_eq!(history.latest(), &three);
    }
}
