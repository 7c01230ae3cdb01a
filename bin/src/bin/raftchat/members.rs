//! Operator commands for the cluster's configuration: add, remove and list members, and hand
//! leadership to another voter. Each goes to the leader through the client library; a change
//! is reported once it has committed.

use crate::cli::{seed, Failure};
use clap::Subcommand;
use raftchat::raft::{ConfChange, MemberRole};
use raftchat::types::NodeId;
use raftchat::wire::MembershipView;
use raftchat_node::client::{Client, ClientError};
use raftchat_node::cluster_file::ClusterFile;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// How often `member add` looks whether its learner was promoted.
const PROMOTION_POLL: Duration = Duration::from_millis(100);

/// `raftchat member ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum MemberCommand {
    /// Add a node: it joins as a learner, receives the log (or a snapshot), and is promoted
    /// to voter by the leader once caught up. Start its raftchat-server with `--join` first.
    Add {
        /// The new node's id (never one a removed node had: a new disk is a new member).
        id: u64,
        /// Where it listens for peers and clients, as HOST:PORT.
        address: String,
        /// Keep it a learner (it receives everything, and never votes or leads).
        #[arg(long)]
        learner: bool,
        /// How long to wait for the promotion, in seconds, before reporting the node still a
        /// learner (it is promoted later all the same).
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        wait: u64,
    },
    /// Remove a member, voter or learner. Removing the leader makes it step down once the
    /// change commits (transfer leadership first to avoid the election).
    Remove {
        /// The member's id.
        id: u64,
    },
    /// List the members of the configuration in force, as the leader sees it.
    List,
}

/// Runs a member command.
pub async fn run_member(
    file: &ClusterFile,
    json: bool,
    command: MemberCommand,
) -> Result<(), Failure> {
    let mut client = Client::new(file.client_config(seed()));
    match command {
        MemberCommand::Add {
            id,
            address,
            learner,
            wait,
        } => {
            if address.parse::<std::net::SocketAddr>().is_err() {
                return Err(Failure::input(format!(
                    "{address:?} is not an address (HOST:PORT, with an IP address)"
                )));
            }
            let wait = (!learner).then_some(Duration::from_secs(wait));
            let view = add(&mut client, NodeId(id), address, wait, !json).await?;
            print_view(&view, json);
            Ok(())
        }
        MemberCommand::Remove { id } => {
            let view = client
                .change_membership(ConfChange::Remove { id: NodeId(id) })
                .await
                .map_err(failure)?;
            print_view(&view, json);
            Ok(())
        }
        MemberCommand::List => {
            let view = client.membership().await.map_err(failure)?;
            print_view(&view, json);
            Ok(())
        }
    }
}

/// Adds `id` at `address` as a learner; with `wait`, to be promoted, and waits that long for
/// the promotion. Says when the learner is added if `tell`.
pub async fn add(
    client: &mut Client,
    id: NodeId,
    address: String,
    wait: Option<Duration>,
    tell: bool,
) -> Result<MembershipView, Failure> {
    let change = ConfChange::AddLearner {
        id,
        address,
        promote: wait.is_some(),
    };
    let view = client.change_membership(change).await.map_err(failure)?;
    if tell {
        out!("{id} added as a learner at index {}", view.index.0);
    }
    match wait {
        Some(wait) => wait_for_promotion(client, id, wait).await,
        None => Ok(view),
    }
}

/// Runs `transfer-leader [ID]`.
pub async fn run_transfer(
    file: &ClusterFile,
    json: bool,
    target: Option<u64>,
) -> Result<(), Failure> {
    let mut client = Client::new(file.client_config(seed()));
    let leader = client
        .transfer_leadership(target.map(NodeId))
        .await
        .map_err(failure)?;
    match json {
        true => out!("{}", json!({ "leader": leader.0 })),
        false => out!("n{} leads", leader.0),
    }
    Ok(())
}

/// Polls the leader's configuration until `id` is a voter, or `wait` has passed.
async fn wait_for_promotion(
    client: &mut Client,
    id: NodeId,
    wait: Duration,
) -> Result<MembershipView, Failure> {
    let deadline = Instant::now() + wait;
    loop {
        let view = client.membership().await.map_err(failure)?;
        if view.membership.is_voter(id) && view.committed {
            return Ok(view);
        }
        if !view.membership.is_member(id) {
            return Err(Failure::cluster(format!("{id} is no longer a member")));
        }
        if Instant::now() >= deadline {
            return Err(Failure::cluster(format!(
                "{id} is still a learner after {}s (not caught up yet, or unreachable); the \
                 leader promotes it once it is",
                wait.as_secs()
            )));
        }
        sleep(PROMOTION_POLL).await;
    }
}

pub fn failure(error: ClientError) -> Failure {
    Failure::cluster(error.to_string())
}

fn role_name(role: MemberRole) -> &'static str {
    match role {
        MemberRole::Voter => "voter",
        MemberRole::Learner { promote: true } => "learner (to promote)",
        MemberRole::Learner { promote: false } => "learner",
    }
}

fn view_json(view: &MembershipView) -> Value {
    let members: Vec<Value> = view
        .membership
        .members
        .iter()
        .map(|(id, member)| {
            json!({
                "id": id.0,
                "role": match member.role { MemberRole::Voter => "voter", _ => "learner" },
                "promote": matches!(member.role, MemberRole::Learner { promote: true }),
                "address": member.address,
            })
        })
        .collect();
    json!({
        "index": view.index.0,
        "committed": view.committed,
        "leader": view.leader.map(|l| l.0),
        "members": members,
    })
}

pub fn print_view(view: &MembershipView, json: bool) {
    if json {
        out!("{}", view_json(view));
        return;
    }
    let state = if view.committed {
        "committed"
    } else {
        "not committed yet"
    };
    out!("configuration of index {} ({state})", view.index.0);
    for (id, member) in &view.membership.members {
        let leads = if view.leader == Some(*id) {
            ", leader"
        } else {
            ""
        };
        let address = match member.address.as_str() {
            "" => "(cluster file)",
            address => address,
        };
        out!("{id}  {}{leads}  {address}", role_name(member.role));
    }
}
