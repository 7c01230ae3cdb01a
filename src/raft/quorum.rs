//! Quorum arithmetic, kept pure and apart from the protocol so it can be tested by tables.
//!
//! With `n` voters a quorum is any `n / 2 + 1` of them; two quorums always intersect, which is
//! what makes one leader per term (§5.2) and durable commitment (§5.4) possible.

use crate::types::{LogIndex, NodeId};
use std::collections::BTreeMap;

/// The outcome of an election, so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A quorum granted.
    Won,
    /// Enough voters refused that a quorum can no longer grant.
    Lost,
    /// Neither yet.
    Pending,
}

/// Size of a majority of `voter_count` voters.
pub fn majority(voter_count: usize) -> usize {
    assert!(voter_count > 0);
    voter_count / 2 + 1
}

/// The highest index that a majority has matched: the largest `i` such that at least a quorum
/// of `match_indexes` is `>= i`. Sorts its argument.
pub fn committed_index(match_indexes: &mut [LogIndex]) -> LogIndex {
    assert!(!match_indexes.is_empty());
    match_indexes.sort_unstable_by(|a, b| b.cmp(a));
    match_indexes[majority(match_indexes.len()) - 1]
}

/// Tallies `votes` (voter → granted) among `voters`; votes from non-voters are ignored.
pub fn vote_result(voters: &[NodeId], votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let granted = voters
        .iter()
        .filter(|v| votes.get(v) == Some(&true))
        .count();
    let refused = voters
        .iter()
        .filter(|v| votes.get(v) == Some(&false))
        .count();
    let quorum = majority(voters.len());
    if granted >= quorum {
        VoteResult::Won
    } else if voters.len() - refused < quorum {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_table() {
        for (n, m) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)] {
            assert_eq!(majority(n), m, "n = {n}");
        }
    }

    #[test]
    fn committed_index_table() {
        let cases: &[(&[u64], u64)] = &[
            (&[5], 5),
            (&[5, 3], 3),
            (&[5, 3, 1], 3),
            (&[1, 3, 5], 3),
            (&[0, 0, 7], 0),
            (&[4, 4, 4, 1, 1], 4),
            (&[9, 8, 1, 1, 1], 1),
            (&[9, 8, 7, 1, 1], 7),
            (&[2, 2, 2, 2, 9, 9, 9], 2),
        ];
        for (matches, want) in cases {
            let mut m: Vec<LogIndex> = matches.iter().map(|&i| LogIndex(i)).collect();
            assert_eq!(
                committed_index(&mut m),
                LogIndex(*want),
                "matches {matches:?}"
            );
        }
    }

    #[test]
    fn vote_result_table() {
        let voters: Vec<NodeId> = (1..=5).map(NodeId).collect();
        let cases: &[(&[(u64, bool)], VoteResult)] = &[
            (&[], VoteResult::Pending),
            (&[(1, true)], VoteResult::Pending),
            (&[(1, true), (2, true)], VoteResult::Pending),
            (&[(1, true), (2, true), (3, true)], VoteResult::Won),
            (&[(1, true), (2, false), (3, false)], VoteResult::Pending),
            (
                &[(1, true), (2, false), (3, false), (4, false)],
                VoteResult::Lost,
            ),
            (&[(1, true), (9, true), (8, true)], VoteResult::Pending),
        ];
        for (votes, want) in cases {
            let votes: BTreeMap<NodeId, bool> =
                votes.iter().map(|&(n, g)| (NodeId(n), g)).collect();
            assert_eq!(vote_result(&voters, &votes), *want, "votes {votes:?}");
        }
    }

    #[test]
    fn single_voter_wins_alone() {
        let votes = BTreeMap::from([(NodeId(1), true)]);
        assert_eq!(vote_result(&[NodeId(1)], &votes), VoteResult::Won);
    }
}
