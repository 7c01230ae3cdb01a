//! Replacing a dead machine with no downtime, on a real cluster of `raftchat-server` processes
//! on loopback: a 3-node cluster under a steady write load loses a follower for good (killed,
//! its disk gone); a new node with an empty data directory joins (`--join`), is added as a
//! learner, catches up and is promoted; the dead node is removed; then leadership is handed to
//! another voter and the old leader is restarted with SIGTERM (which hands leadership over
//! first when it leads). Nothing acknowledged is lost or applied twice, and every member ends
//! with the same state. Every wait has a deadline; the server guard kills every process when
//! the test ends, however it ends.
#![cfg(not(madsim))]

mod common;

use common::{free_addresses, Servers};
use raftchat::chat::{Operation, Status};
use raftchat::raft::ConfChange;
use raftchat::types::NodeId;
use raftchat_node::client::{Client, ClientError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// The bound of any one wait.
const WAIT_MAX: Duration = Duration::from_secs(20);
/// Clients writing throughout.
const WRITERS: u64 = 4;

/// What the writers saw: messages acknowledged, and those whose outcome is unknown.
#[derive(Default)]
struct Outcomes {
    acknowledged: BTreeSet<String>,
    unknown: BTreeSet<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_and_the_leader_moved_with_nothing_lost() {
    let mut servers = Servers::new("membership", 3);
    servers.start_all();
    let first_leader = servers.leader(WAIT_MAX).await;
    let mut admin = Client::new(servers.client_config(1));
    let created = admin
        .execute(Operation::CreateAccount {
            username: "inbox".into(),
        })
        .await
        .expect("create the inbox");
    assert_eq!(created.reply.status, Status::Success);

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mut client = Client::new(servers.client_config(100 + w));
            let (stop, outcomes) = (stop.clone(), outcomes.clone());
            tokio::spawn(async move {
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let text = format!("w{w}-{k}");
                    let operation = Operation::SendMessage {
                        from: "inbox".into(),
                        to: "inbox".into(),
                        message: text.clone(),
                    };
                    let result = client.execute(operation).await;
                    let mut outcomes = outcomes.lock().unwrap();
                    match result {
                        Ok(done) if done.reply.status == Status::Success => {
                            outcomes.acknowledged.insert(text);
                        }
                        Ok(done) => panic!("{text}: {:?}", done.reply.status),
                        Err(ClientError::Unknown(_)) => {
                            outcomes.unknown.insert(text);
                        }
                        Err(ClientError::Failed(_) | ClientError::AuthFailed(_)) => {}
                    }
                }
            })
        })
        .collect();
    sleep(Duration::from_millis(300)).await;

    // A follower dies for good: killed, and its disk gone.
    let dead = (1..=3).find(|&id| id != first_leader).unwrap();
    servers.kill(dead);
    std::fs::remove_dir_all(servers.data_dir(dead)).unwrap();

    // Its replacement joins with an empty data directory, is added, catches up, is promoted.
    let address = free_addresses(1)[0];
    servers.start_joining(4, address);
    let change = ConfChange::AddLearner {
        id: NodeId(4),
        address: address.to_string(),
        promote: true,
    };
    let view = admin.change_membership(change).await.expect("add node 4");
    assert!(view.membership.is_member(NodeId(4)));
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let view = admin.membership().await.expect("read the membership");
        if view.membership.is_voter(NodeId(4)) && view.committed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 was never promoted: {view:?}"
        );
        sleep(Duration::from_millis(50)).await;
    }
    let view = admin
        .change_membership(ConfChange::Remove { id: NodeId(dead) })
        .await
        .expect("remove the dead node");
    let voters: Vec<NodeId> = view.membership.voter_ids();
    assert_eq!(voters.len(), 3, "{view:?}");
    assert!(!view.membership.is_member(NodeId(dead)));

    // Leadership moves to the new node (which the writers' cluster file does not list: they
    // learn its address from the configuration) with no election timeout; then that leader
    // restarts with SIGTERM, handing leadership on first.
    let new_leader = admin
        .transfer_leadership(Some(NodeId(4)))
        .await
        .expect("transfer leadership");
    assert_eq!(new_leader, NodeId(4));
    sleep(Duration::from_millis(300)).await;
    assert_eq!(servers.terminate(4), Some(0), "a clean stop");
    let address = address.to_string();
    servers.start_with(4, &["--join", "--listen", &address]);
    sleep(Duration::from_millis(500)).await;

    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("a writer");
    }

    // Every member converges on the same state, and holds every acknowledged message once.
    let members: Vec<NodeId> = admin
        .membership()
        .await
        .unwrap()
        .membership
        .members
        .keys()
        .copied()
        .collect();
    let deadline = Instant::now() + WAIT_MAX;
    let digests = loop {
        let mut digests = BTreeMap::new();
        for &id in &members {
            if let Ok(status) = admin.status(id).await {
                digests.insert(id, (status.raft.applied_index, status.chat_digest));
            }
        }
        let same =
            digests.len() == members.len() && digests.values().collect::<BTreeSet<_>>().len() == 1;
        if same {
            break digests;
        }
        assert!(
            Instant::now() < deadline,
            "members never converged: {digests:?}"
        );
        // A write makes every member apply up to a common index.
        let _ = admin
            .execute(Operation::CheckAccount {
                username: "inbox".into(),
            })
            .await;
        sleep(Duration::from_millis(100)).await;
    };
    let texts = fetch_all(&mut admin).await;
    let outcomes = outcomes.lock().unwrap();
    let mut seen = BTreeSet::new();
    for text in &texts {
        assert!(seen.insert(text.clone()), "{text} applied twice");
        assert!(
            outcomes.acknowledged.contains(text) || outcomes.unknown.contains(text),
            "{text} applied but never sent"
        );
    }
    let lost: Vec<&String> = outcomes.acknowledged.difference(&seen).collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    assert!(
        outcomes.acknowledged.len() > 20,
        "too little load: {}",
        outcomes.acknowledged.len()
    );
    eprintln!(
        "{} acknowledged, {} unknown, members converged at {digests:?}",
        outcomes.acknowledged.len(),
        outcomes.unknown.len()
    );
}

/// Every message in the inbox, in order.
async fn fetch_all(client: &mut Client) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        let operation = Operation::FetchMessages {
            username: "inbox".into(),
            first_message_id: texts.len() as u64 + 1,
        };
        let done = client.execute(operation).await.expect("fetch");
        if done.reply.messages.is_empty() {
            return texts;
        }
        texts.extend(done.reply.messages.into_iter().map(|(_, text)| text));
    }
}
