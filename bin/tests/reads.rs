//! Reads without log writes, on a real 3-node cluster of `raftchat-server` processes on
//! loopback: a read in `leader` or `any` mode, issued after a write was acknowledged, sees that
//! write (linearizability gives read-your-writes even from a follower), in `any` mode followers
//! do serve reads, and no such read adds a byte to any node's log (so none costs an fsync),
//! while reads in `log` mode do go through the log. Once with ReadIndex, once with leases (the
//! cluster file's `[timing] read_lease`). The benchmark's `--reads` figures are checked against
//! the same cluster. Every wait has a deadline; the server guard kills every process when the
//! test ends, however it ends.
#![cfg(not(madsim))]

mod common;

use common::{Servers, BENCH};
use raftchat::chat::{Operation, Status};
use raftchat::types::NodeId;
use raftchat_node::client::{Client, ReadMode};
use raftchat_node::cluster_status::ClusterStatus;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

/// The bound of any one wait.
const WAIT_MAX: Duration = Duration::from_secs(15);
/// Write-then-read rounds per read mode.
const ROUNDS: usize = 20;
/// Clients reading in `any` mode, each from a node of its own picking.
const ANY_READERS: u64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_index_reads_see_every_acknowledged_write_and_write_no_log() {
    reads_see_writes_and_write_no_log("reads-index", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_reads_see_every_acknowledged_write_and_write_no_log() {
    reads_see_writes_and_write_no_log("reads-lease", &[("read_lease", "true")]).await;
}

async fn reads_see_writes_and_write_no_log(name: &str, settings: &[(&str, &str)]) {
    let mut servers = Servers::with_settings(name, 3, settings);
    servers.start_all();
    servers.leader(WAIT_MAX).await;
    let mut writer = Client::new(servers.client_config(1));
    for user in ["ann", "bob"] {
        let done = execute(&mut writer, create(user)).await;
        assert_eq!(done, Status::Success, "creating {user}");
    }

    let mut sent = 0usize;
    let mut served_by = BTreeSet::new();
    for mode in [ReadMode::Leader, ReadMode::Any, ReadMode::Log] {
        let mut readers = readers(&servers, mode);
        for round in 0..ROUNDS {
            sent += 1;
            let text = format!("{} {round}", mode.name());
            assert_eq!(execute(&mut writer, send(&text)).await, Status::Success);
            let reader = &mut readers[round % ANY_READERS as usize];
            let done = reader.execute(fetch()).await.expect("the read completes");
            assert_eq!(done.reply.status, Status::Success);
            let last = done.reply.messages.last().map(|(_, text)| text.as_str());
            assert_eq!(
                (done.reply.messages.len(), last),
                (sent, Some(text.as_str())),
                "a read from {} in {} mode missed an acknowledged write",
                done.node,
                mode.name()
            );
            if mode == ReadMode::Any {
                served_by.insert(done.node);
            }
        }
    }
    let leader = NodeId(servers.leader(WAIT_MAX).await);
    assert!(
        served_by.iter().any(|&node| node != leader),
        "no follower served a read in any mode (served by {served_by:?}, leader {leader})"
    );

    // Reads alone: nothing reaches any log, except through it. An election appends its new
    // leader's first entry, so a measurement across a change of term is taken again.
    for mode in [ReadMode::Leader, ReadMode::Any] {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (term, before) = settled_log_bytes(&servers).await;
            for reader in &mut readers(&servers, mode) {
                for _ in 0..10 {
                    let done = reader.execute(fetch()).await.expect("the read completes");
                    assert_eq!(done.reply.messages.len(), sent);
                    let check = Operation::CheckAccount {
                        username: "ann".into(),
                    };
                    assert_eq!(execute(reader, check).await, Status::Success);
                }
            }
            let (term_after, after) = settled_log_bytes(&servers).await;
            if term_after != term && attempts < 3 {
                continue;
            }
            assert_eq!(before, after, "reads in {} mode grew a log", mode.name());
            break;
        }
    }
    let (_, before) = settled_log_bytes(&servers).await;
    let mut reader = readers(&servers, ReadMode::Log).remove(0);
    for _ in 0..10 {
        assert_eq!(execute(&mut reader, fetch()).await, Status::Success);
    }
    let (_, after) = settled_log_bytes(&servers).await;
    for (id, bytes) in &after {
        assert!(
            bytes > &before[id],
            "reads through the log left {id}'s log alone"
        );
    }

    bench_reports_reads_apart(&servers);
}

/// The benchmark, reads only: every read answered, and not a byte of log for them.
fn bench_reports_reads_apart(servers: &Servers) {
    let cluster = servers.file.path.to_str().expect("a UTF-8 path");
    let args = [
        "--cluster",
        cluster,
        "--clients",
        "4",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--json",
    ];
    for mode in ["leader", "any"] {
        let mut all = args.to_vec();
        all.extend(["--reads", "100", "--read-mode", mode]);
        let report = bench(&all);
        assert_eq!(report["read_mode"], mode);
        assert!(report["reads"]["ops"].as_u64() > Some(0), "{report}");
        assert_eq!(report["writes"]["ops"], 0, "{report}");
        assert_eq!(report["errors"], 0, "{report}");
        assert_eq!(report["log"]["growth_bytes"], 0, "{report}");
    }
    // The same clients over two sets of shared connections: reads overtake writes on them.
    let mut all = args.to_vec();
    all.extend(["--reads", "50", "--shared-connections", "2"]);
    let report = bench(&all);
    assert_eq!(report["shared_connections"], 2, "{report}");
    assert!(report["reads"]["ops"].as_u64() > Some(0), "{report}");
    assert!(report["writes"]["ops"].as_u64() > Some(0), "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let mut all = args.to_vec();
    all.extend(["--reads", "50", "--compare-read-modes"]);
    let reports = bench(&all);
    let modes: Vec<&Value> = reports
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| &r["read_mode"])
        .collect();
    assert_eq!(modes, ["leader", "any", "log"], "{reports}");
    for report in reports.as_array().expect("an array") {
        assert!(report["reads"]["ops"].as_u64() > Some(0), "{report}");
        assert!(report["writes"]["ops"].as_u64() > Some(0), "{report}");
    }
}

fn bench(args: &[&str]) -> Value {
    let output = Command::new(BENCH)
        .args(args)
        .output()
        .expect("run the benchmark");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// `ANY_READERS` clients reading in `mode`, each with its own seed (so in `any` mode each picks
/// its own node).
fn readers(servers: &Servers, mode: ReadMode) -> Vec<Client> {
    (0..ANY_READERS)
        .map(|seed| {
            let mut config = servers.client_config(100 + seed);
            config.reads = mode;
            Client::new(config)
        })
        .collect()
}

/// The highest term and every node's log size, once all have applied the same state (so no
/// append is on its way).
async fn settled_log_bytes(servers: &Servers) -> (u64, BTreeMap<NodeId, u64>) {
    let status = servers
        .wait_for("convergence", WAIT_MAX, ClusterStatus::converged)
        .await;
    let term = status.reachable().map(|s| s.raft.term.0).max().unwrap_or(0);
    let sizes = status
        .reachable()
        .map(|s| (s.raft.id, s.log_bytes))
        .collect();
    (term, sizes)
}

async fn execute(client: &mut Client, operation: Operation) -> Status {
    let done = client
        .execute(operation)
        .await
        .expect("the operation completes");
    done.reply.status
}

fn create(user: &str) -> Operation {
    Operation::CreateAccount {
        username: user.into(),
    }
}

fn send(text: &str) -> Operation {
    Operation::SendMessage {
        from: "ann".into(),
        to: "bob".into(),
        message: text.into(),
    }
}

fn fetch() -> Operation {
    Operation::FetchMessages {
        username: "bob".into(),
        first_message_id: 1,
    }
}
