//! Real-process chaos: a 3-node cluster of `raftchat-server` processes on loopback, each with
//! its own data directory, written to by several clients through the client library (half of
//! them with connections of their own, half sharing one connection per node) while the
//! leader is SIGKILLed and restarted (and SIGKILLed again while it catches up by installing a
//! snapshot), and then all three are SIGKILLed and restarted. The cluster snapshots and
//! compacts every few dozen entries, so kills land while nodes write snapshots, compact their
//! logs, rotate segments and install the leader's snapshot.
//!
//! Afterwards every acknowledged message must be in its recipient's inbox exactly once, a
//! message whose outcome was unknown at most once, a message reported not applied never, all
//! three nodes must converge on the same applied index and chat digest, the node that was down
//! must have installed a snapshot, and every data directory must hold at most two snapshots.
//! Every wait has a deadline; the server guard kills every process when the test ends, however
//! it ends.
#![cfg(not(madsim))]

mod common;

use common::Servers;
use raftchat::chat::{Operation, Status};
use raftchat::limits::FETCH_MESSAGES_MAX;
use raftchat_node::client::{Client, ClientError, SharedLinks};
use raftchat_node::cluster_status::ClusterStatus;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Writers; the second half share connections (`SharedLinks`), many requests in flight on each.
const WRITERS: usize = 8;
const USERS: [&str; 3] = ["ann", "bob", "cat"];
/// Acknowledged writes to wait for in each phase. Most go to one inbox, so that it outgrows
/// one fetch (FETCH_MESSAGES_MAX) and the check has to page through it.
const ACKS_PER_PHASE: u64 = 400;
/// The bound of any one wait.
const WAIT_MAX: Duration = Duration::from_secs(15);
/// The bound of the whole test.
const TEST_MAX: Duration = Duration::from_secs(60);
/// Snapshot settings that make every phase snapshot, compact and rotate many times.
const SETTINGS: [(&str, &str); 3] = [
    ("log_entries", "40"),
    ("catch_up_entries", "10"),
    ("segment_bytes", "8192"),
];

/// What the writers were told about each message they sent: (recipient, text).
#[derive(Default)]
struct Ledger {
    acknowledged: Vec<(String, String)>,
    unknown: Vec<(String, String)>,
    not_applied: Vec<(String, String)>,
    unexpected: Vec<String>,
    /// The highest log index at which an acknowledged write took effect.
    last_index: u64,
}

struct Writers {
    ledger: Arc<Mutex<Ledger>>,
    acks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(servers: &Servers) -> Writers {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let acks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let links = SharedLinks::new();
        let tasks = (0..WRITERS)
            .map(|writer| {
                let config = servers.client_config(100 + writer as u64);
                let client = match writer < WRITERS / 2 {
                    true => Client::new(config),
                    false => Client::sharing(config, links.clone()),
                };
                let (ledger, acks, stop) = (ledger.clone(), acks.clone(), stop.clone());
                tokio::spawn(write_loop(writer, client, ledger, acks, stop))
            })
            .collect();
        Writers {
            ledger,
            acks,
            stop,
            tasks,
        }
    }

    /// Waits until `more` writes beyond the current count are acknowledged.
    async fn wait_for_acks(&self, more: u64, phase: &str) {
        let target = self.acks.load(Ordering::SeqCst) + more;
        let deadline = Instant::now() + WAIT_MAX;
        while self.acks.load(Ordering::SeqCst) < target {
            assert!(
                Instant::now() < deadline,
                "{phase}: only {} of {target} writes acknowledged within {WAIT_MAX:?}",
                self.acks.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a writer panicked");
        }
        let ledger = self.ledger.lock().expect("ledger lock");
        Ledger {
            acknowledged: ledger.acknowledged.clone(),
            unknown: ledger.unknown.clone(),
            not_applied: ledger.not_applied.clone(),
            unexpected: ledger.unexpected.clone(),
            last_index: ledger.last_index,
        }
    }
}

async fn write_loop(
    writer: usize,
    mut client: Client,
    ledger: Arc<Mutex<Ledger>>,
    acks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut sequence = 0usize;
    while !stop.load(Ordering::SeqCst) {
        sequence += 1;
        let from = USERS[writer % USERS.len()].to_string();
        let to = USERS[if sequence.is_multiple_of(4) {
            writer % 2
        } else {
            2
        }]
        .to_string();
        // Unique across the run, so each message can be counted in the inboxes.
        let text = format!("writer {writer} message {sequence}");
        let operation = Operation::SendMessage {
            from,
            to: to.clone(),
            message: text.clone(),
        };
        let result = client.execute(operation).await;
        let mut ledger = ledger.lock().expect("ledger lock");
        match result {
            Ok(done) if done.reply.status == Status::Success => {
                ledger.acknowledged.push((to, text));
                ledger.last_index = ledger.last_index.max(done.index.0);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Ok(done) => ledger
                .unexpected
                .push(format!("{text}: {}", done.reply.status)),
            Err(ClientError::Unknown(_)) => ledger.unknown.push((to, text)),
            Err(ClientError::Failed(_) | ClientError::AuthFailed(_)) => {
                ledger.not_applied.push((to, text))
            }
        }
    }
}

/// Creates the accounts, retrying until each is certainly there.
async fn create_users(servers: &Servers) {
    let mut client = Client::new(servers.client_config(1));
    let deadline = Instant::now() + WAIT_MAX;
    for user in USERS {
        loop {
            let operation = Operation::CreateAccount {
                username: user.to_string(),
            };
            match client.execute(operation).await {
                Ok(done) if matches!(done.reply.status, Status::Success | Status::GeneralError) => {
                    break
                }
                other => assert!(Instant::now() < deadline, "creating {user}: {other:?}"),
            }
        }
    }
}

/// Every message in every inbox, paging through each by FETCH_MESSAGES_MAX: text -> recipients.
async fn read_inboxes(servers: &Servers) -> BTreeMap<String, Vec<String>> {
    let mut config = servers.client_config(2);
    config.operation_timeout = WAIT_MAX;
    let mut client = Client::new(config);
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for user in USERS {
        let mut first_message_id = 1u64;
        loop {
            let operation = Operation::FetchMessages {
                username: user.to_string(),
                first_message_id,
            };
            let done = client.execute(operation).await.expect("fetch completes");
            if done.reply.status == Status::NoElement {
                break;
            }
            assert_eq!(done.reply.status, Status::Success, "fetching {user}");
            let count = done.reply.messages.len();
            for (_, text) in done.reply.messages {
                found.entry(text).or_default().push(user.to_string());
            }
            if count < FETCH_MESSAGES_MAX {
                break;
            }
            first_message_id += count as u64;
        }
    }
    found
}

fn check_exactly_once(ledger: &Ledger, found: &BTreeMap<String, Vec<String>>) {
    assert!(ledger.unexpected.is_empty(), "{:?}", ledger.unexpected);
    for (to, text) in &ledger.acknowledged {
        assert_eq!(
            found.get(text),
            Some(&vec![to.clone()]),
            "acknowledged {text:?} to {to} must be in {to}'s inbox exactly once"
        );
    }
    for (to, text) in &ledger.unknown {
        let copies = found.get(text).map_or(0, Vec::len);
        assert!(
            copies <= 1,
            "unknown {text:?} to {to} applied {copies} times"
        );
    }
    for (to, text) in &ledger.not_applied {
        assert!(
            !found.contains_key(text),
            "{text:?} to {to} was reported not applied"
        );
    }
    let sent = ledger.acknowledged.len() + ledger.unknown.len() + ledger.not_applied.len();
    for (text, recipients) in found {
        assert_eq!(recipients.len(), 1, "{text:?} delivered {recipients:?}");
    }
    assert!(found.len() <= sent, "more messages found than sent");
    for writer in 0..WRITERS {
        let prefix = format!("writer {writer} ");
        assert!(
            ledger
                .acknowledged
                .iter()
                .any(|(_, text)| text.starts_with(&prefix)),
            "writer {writer} had no write acknowledged"
        );
    }
}

/// Every node snapshotted and keeps at most two snapshot files; the old leader, down while the
/// others compacted, installed a snapshot to catch up.
fn check_snapshots(servers: &Servers, old_leader: u64, status: &ClusterStatus) {
    for node in status.reachable() {
        assert!(
            node.raft.snapshot_index.0 > 0,
            "{} never snapshotted",
            node.raft.id
        );
        let dir = servers.data_dir(node.raft.id.0);
        let snapshots = std::fs::read_dir(&dir)
            .expect("list the data directory")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".snap"))
            .count();
        assert!(
            snapshots <= 2,
            "{} holds {snapshots} snapshots",
            dir.display()
        );
    }
    let log = std::fs::read_to_string(servers.dir.join(format!("{old_leader}.log")))
        .expect("read the server's log");
    assert!(
        log.contains("snapshot installed"),
        "node {old_leader} caught up without installing a snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_leader_and_full_cluster_crashes() {
    let mut servers = Servers::with_settings("chaos", 3, &SETTINGS);
    let outcome = tokio::time::timeout(TEST_MAX, scenario(&mut servers)).await;
    assert!(outcome.is_ok(), "the chaos test exceeded {TEST_MAX:?}");
}

async fn scenario(servers: &mut Servers) {
    servers.start_all();
    servers.leader(WAIT_MAX).await;
    create_users(servers).await;
    let writers = Writers::start(servers);
    writers
        .wait_for_acks(ACKS_PER_PHASE, "before any crash")
        .await;

    let leader = servers.leader(WAIT_MAX).await;
    servers.kill(leader);
    writers
        .wait_for_acks(ACKS_PER_PHASE, "after SIGKILL of the leader")
        .await;
    servers.start(leader);
    // Killed again while it catches up (by installing the leader's snapshot: the others
    // compacted far past it), then back for good.
    tokio::time::sleep(Duration::from_millis(60)).await;
    servers.kill(leader);
    servers.start(leader);
    writers
        .wait_for_acks(ACKS_PER_PHASE, "after restarting the old leader")
        .await;

    for id in 1..=3 {
        servers.kill(id);
    }
    servers.start_all();
    writers
        .wait_for_acks(ACKS_PER_PHASE, "after SIGKILL and restart of all three")
        .await;
    let ledger = writers.stop().await;

    let status = servers
        .wait_for("convergence", WAIT_MAX, |s| {
            s.converged()
                && s.reachable()
                    .all(|n| n.raft.applied_index.0 >= ledger.last_index)
        })
        .await;
    let found = read_inboxes(servers).await;
    check_exactly_once(&ledger, &found);
    check_snapshots(servers, leader, &status);
    assert!(ledger.acknowledged.len() as u64 >= 4 * ACKS_PER_PHASE);
    let largest_inbox = USERS.iter().map(|user| {
        found
            .values()
            .filter(|recipients| recipients[0] == *user)
            .count()
    });
    assert!(
        largest_inbox.max() > Some(FETCH_MESSAGES_MAX),
        "no inbox needed paging"
    );
    eprintln!(
        "chaos: {} acknowledged, {} unknown, {} not applied; converged at {:?}",
        ledger.acknowledged.len(),
        ledger.unknown.len(),
        ledger.not_applied.len(),
        status.reachable().map(|n| n.raft.applied_index).next()
    );
}
