//! An operator's view of a whole cluster: every member's status, asked of all members at
//! once, and the leader they agree on. The CLI's `status`, `cluster up` and the benchmark use it.

use crate::client::{Client, ClientConfig, ClientError};
use raftchat::raft::RoleKind;
use raftchat::types::NodeId;
use raftchat::wire::NodeStatus;
use std::net::SocketAddr;

/// One member's answer, or why it gave none.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    /// The member.
    pub id: NodeId,
    /// Where it listens.
    pub address: SocketAddr,
    /// Its status, or why it could not be asked.
    pub status: Result<NodeStatus, String>,
}

/// Every member's status at about the same moment.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    /// One entry per member, in id order.
    pub members: Vec<MemberStatus>,
}

impl ClusterStatus {
    /// Asks every member for its status, concurrently, each within the config's attempt
    /// timeout. The members are those of the configuration in force, as the leader reports it
    /// (members added since the cluster file was written, and not those removed), or those of
    /// `config` while no leader answers.
    pub async fn poll(config: &ClientConfig) -> ClusterStatus {
        let status = ClusterStatus::poll_members(config).await;
        let Some(leader) = status.leader() else {
            return status;
        };
        // The leader's view if this config can reach it, else that of a member that answered
        // (a leader added since the cluster file was written has no address here yet).
        let answered = status.reachable().map(|s| s.raft.id);
        let askable: Vec<NodeId> = std::iter::once(leader)
            .chain(answered)
            .filter(|id| config.members.contains_key(id))
            .collect();
        let mut client = Client::new(config.clone());
        let mut view = None;
        for node in askable {
            if let Ok(answer) = client.membership_of(node).await {
                view = Some(answer);
                break;
            }
        }
        let Some(view) = view else {
            return status;
        };
        let members = crate::host::member_addresses(&view.membership, &config.members);
        if members == config.members {
            return status;
        }
        let mut config = config.clone();
        config.members = members;
        ClusterStatus::poll_members(&config).await
    }

    async fn poll_members(config: &ClientConfig) -> ClusterStatus {
        let mut tasks = Vec::new();
        for (&id, &address) in &config.members {
            let mut client = Client::new(config.clone());
            let task = tokio::spawn(async move { client.status(id).await });
            tasks.push((id, address, task));
        }
        let mut members = Vec::new();
        for (id, address, task) in tasks {
            let status = match task.await {
                Ok(Ok(status)) => Ok(status),
                Ok(Err(
                    ClientError::Failed(why)
                    | ClientError::Unknown(why)
                    | ClientError::AuthFailed(why),
                )) => Err(why),
                Err(error) => Err(format!("status task failed: {error}")),
            };
            members.push(MemberStatus {
                id,
                address,
                status,
            });
        }
        ClusterStatus { members }
    }

    /// The statuses of the members that answered.
    pub fn reachable(&self) -> impl Iterator<Item = &NodeStatus> {
        self.members.iter().filter_map(|m| m.status.as_ref().ok())
    }

    /// The leader of the highest term any reachable member knows, as that term's members
    /// report it; `None` while an election is undecided or nobody answered.
    pub fn leader(&self) -> Option<NodeId> {
        let term = self.reachable().map(|s| s.raft.term).max()?;
        let in_term = || self.reachable().filter(move |s| s.raft.term == term);
        let leading = in_term().find(|s| s.raft.role == RoleKind::Leader);
        leading
            .map(|s| s.raft.id)
            .or_else(|| in_term().find_map(|s| s.raft.leader))
    }

    /// Whether every member answered with the same applied index and chat digest.
    pub fn converged(&self) -> bool {
        let mut statuses = self.members.iter().map(|m| m.status.as_ref().ok());
        let Some(Some(first)) = statuses.next() else {
            return false;
        };
        statuses.all(|s| {
            s.is_some_and(|s| {
                s.raft.applied_index == first.raft.applied_index
                    && s.chat_digest == first.chat_digest
            })
        })
    }
}

/// The lower-case name of a role, as the CLI prints it.
pub fn role_name(role: RoleKind) -> &'static str {
    match role {
        RoleKind::Follower => "follower",
        RoleKind::PreCandidate => "pre_candidate",
        RoleKind::Candidate => "candidate",
        RoleKind::Leader => "leader",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftchat::raft::Status;
    use raftchat::types::{LogIndex, Term};

    fn member(id: u64, role: RoleKind, term: u64, leader: Option<u64>) -> MemberStatus {
        let raft = Status {
            id: NodeId(id),
            role,
            term: Term(term),
            leader: leader.map(NodeId),
            commit_index: LogIndex(5),
            applied_index: LogIndex(5),
            last_index: LogIndex(5),
            snapshot_index: LogIndex(0),
            first_index: LogIndex(1),
        };
        MemberStatus {
            id: NodeId(id),
            address: ([127, 0, 0, 1], 7000 + id as u16).into(),
            status: Ok(NodeStatus {
                raft,
                chat_digest: 9,
                log_bytes: 0,
            }),
        }
    }

    fn down(id: u64) -> MemberStatus {
        MemberStatus {
            status: Err("refused".into()),
            ..member(id, RoleKind::Follower, 0, None)
        }
    }

    #[test]
    fn the_leader_is_the_one_of_the_highest_term() {
        let stale = ClusterStatus {
            members: vec![
                member(1, RoleKind::Leader, 2, Some(1)),
                member(2, RoleKind::Follower, 3, Some(3)),
                down(3),
            ],
        };
        // Node 1 still thinks it leads term 2; term 3's leader is node 3, as node 2 reports.
        assert_eq!(stale.leader(), Some(NodeId(3)));
        let electing = ClusterStatus {
            members: vec![
                member(1, RoleKind::Candidate, 4, None),
                member(2, RoleKind::Leader, 3, Some(2)),
            ],
        };
        assert_eq!(electing.leader(), None);
        assert_eq!(
            ClusterStatus {
                members: vec![down(1)]
            }
            .leader(),
            None
        );
    }

    #[test]
    fn convergence_needs_every_member_to_agree() {
        let same = vec![
            member(1, RoleKind::Leader, 1, Some(1)),
            member(2, RoleKind::Follower, 1, Some(1)),
        ];
        assert!(ClusterStatus {
            members: same.clone()
        }
        .converged());
        let mut behind = same.clone();
        if let Ok(status) = &mut behind[1].status {
            status.raft.applied_index = LogIndex(4);
        }
        assert!(!ClusterStatus { members: behind }.converged());
        let mut with_down = same;
        with_down.push(down(3));
        assert!(!ClusterStatus { members: with_down }.converged());
    }
}
