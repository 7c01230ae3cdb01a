//! The binaries' contracts, run as real processes: exit codes, one-line errors, the `--json`
//! shapes, the local cluster launcher, and a server that refuses a corrupt log without
//! touching it. Every server started here is stopped by a guard, however the test ends.
#![cfg(not(madsim))]

mod common;

use common::{free_addresses, scratch_dir, write_cluster_file, Servers, BENCH, CLIENT, SERVER};
use serde_json::Value;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Runs a binary to completion.
fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .output()
        .expect("run the binary")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts an exit code and a single-line error that mentions `needle`.
fn assert_error(output: &Output, code: i32, needle: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {text}");
    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
    assert!(text.contains(needle), "{needle:?} not in: {text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn every_binary_prints_help() {
    for (binary, args) in [
        (SERVER, vec!["--help"]),
        (CLIENT, vec!["--help"]),
        (CLIENT, vec!["send", "--help"]),
        (CLIENT, vec!["cluster", "up", "--help"]),
        (CLIENT, vec!["cluster", "down", "--help"]),
        (BENCH, vec!["--help"]),
    ] {
        let output = run(binary, &args);
        assert_eq!(output.status.code(), Some(0), "{binary} {args:?}");
        assert!(stdout(&output).contains("Usage:"), "{binary} {args:?}");
    }
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = scratch_dir("cli-input");
    let bad = dir.join("bad.toml");
    fs::write(
        &bad,
        "cluster_id = 1\n[[nodes]]\nid = 1\nadress = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    assert_error(&run(CLIENT, &["--cluster", bad, "status"]), 2, "adress");
    assert_error(
        &run(CLIENT, &["--cluster", "/nonexistent.toml", "list"]),
        2,
        "nonexistent",
    );
    assert_error(&run(CLIENT, &["create", "ann"]), 2, "--cluster");
    let server_args = ["--id", "1", "--cluster", bad, "--data-dir", "/tmp/x"];
    assert_error(&run(SERVER, &server_args), 2, "line 4");
    let bench_args = ["--cluster", bad, "--clients", "1", "--duration", "1"];
    assert_error(&run(BENCH, &bench_args), 2, "bad.toml");
    let good = write_cluster_file(&dir, &free_addresses(3));
    let good = good.path.to_str().unwrap();
    let bench = |extra: &[&'static str]| {
        let mut args = vec!["--cluster", good, "--clients", "1", "--duration", "1"];
        args.extend_from_slice(extra);
        run(BENCH, &args)
    };
    assert_error(&bench(&["--reads", "101"]), 2, "--reads \"101\"");
    assert_error(&bench(&["--reads", "most"]), 2, "--reads \"most\"");
    assert_error(&bench(&["--read-mode", "all"]), 2, "--read-mode \"all\"");
    assert_error(&bench(&["--compare-read-modes"]), 2, "--reads 1 to 100");
    let shared = "--shared-connections 2: must be between 1 and --clients (1)";
    assert_error(&bench(&["--shared-connections", "2"]), 2, shared);
    let both = ["--reads", "9", "--compare-read-modes", "--read-mode", "any"];
    assert_error(&bench(&both), 2, "leave out --read-mode");
    let lease = fs::read_to_string(good)
        .unwrap()
        .replace("read_lease = false", "read_lease = true")
        .replace("check_quorum = true", "check_quorum = false");
    fs::write(bad, lease).unwrap();
    assert_error(
        &run(CLIENT, &["--cluster", bad, "status"]),
        2,
        "timing.read_lease",
    );
    // Usage errors come from clap: several lines of help, but exit code 2 and no panic.
    for (binary, args) in [
        (CLIENT, vec!["--bogus"]),
        (CLIENT, vec!["fetch", "ann", "-1"]),
        (SERVER, vec!["--id", "x"]),
        (BENCH, vec!["--clients", "2"]),
    ] {
        let output = run(binary, &args);
        assert_eq!(output.status.code(), Some(2), "{binary} {args:?}");
        assert!(!stderr(&output).contains("panicked"));
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn an_unreachable_cluster_exits_1() {
    let dir = scratch_dir("cli-unreachable");
    let file = write_cluster_file(&dir, &free_addresses(3));
    let text = fs::read_to_string(&file.path)
        .unwrap()
        .replace("operation_timeout_ms = 5000", "operation_timeout_ms = 300");
    fs::write(&file.path, text).unwrap();
    let cluster = file.path.to_str().unwrap();
    let output = run(CLIENT, &["--cluster", cluster, "create", "ann"]);
    assert_error(&output, 1, "nothing was applied");
    let output = run(CLIENT, &["--cluster", cluster, "--json", "status"]);
    assert_eq!(output.status.code(), Some(1));
    let status: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(status["leader"], Value::Null);
    assert_eq!(status["nodes"][0]["reachable"], Value::Bool(false));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_log_is_refused_and_left_untouched() {
    let mut servers = Servers::new("cli-corrupt", 1);
    servers.start(1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(servers.leader(Duration::from_secs(10)));
    let cluster = servers.file.path.to_str().unwrap().to_string();
    for user in ["ann", "bob", "cat", "dan"] {
        let output = run(CLIENT, &["--cluster", &cluster, "create", user]);
        assert_eq!(stdout(&output), "SUCCESS\n", "{}", stderr(&output));
    }
    assert_eq!(servers.terminate(1), Some(0), "SIGTERM is a clean exit");
    let dir = servers.data_dir(1);
    let segment = files_in(&dir)
        .into_keys()
        .find(|name| name.starts_with("log-"))
        .expect("a log segment");
    let log = dir.join(&segment);
    let mut bytes = fs::read(&log).unwrap();
    // Inside the records, not the zeros reserved after them (damage there harms no record).
    let records_len = bytes.iter().rposition(|&byte| byte != 0).unwrap() + 1;
    assert!(records_len < bytes.len(), "the segment has space reserved");
    let middle = records_len / 3;
    bytes[middle] ^= 0x55;
    fs::write(&log, &bytes).unwrap();
    let before = files_in(&dir);

    servers.start(1);
    let code = servers.wait_exit(1, Duration::from_secs(10));
    assert_eq!(code, Some(2), "a corrupt log is an input error");
    let text = fs::read_to_string(servers.dir.join("1.log")).unwrap();
    let line = text.lines().last().unwrap();
    assert!(
        line.contains(&segment) && line.contains("offset") && line.contains("untouched"),
        "{line}"
    );
    assert_eq!(
        files_in(&dir),
        before,
        "the data directory must not be modified"
    );
}

/// Every file of a directory and its content.
fn files_in(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .map(|entry| {
            let name = entry.file_name().into_string().unwrap();
            (name, fs::read(entry.path()).unwrap())
        })
        .collect()
}

/// A format-1 data directory for node 1 of `cluster_id`, as the previous release wrote it:
/// one `raft.log` holding a session and the creation of `ann`, committed.
fn write_format_1_dir(dir: &Path, cluster_id: u64) {
    use raftchat::chat::{Command as ChatCommand, Operation};
    use raftchat::raft::{Entry, EntryData, HardState, Payload};
    use raftchat::types::{ClientId, LogIndex, NodeId, Term};
    fs::create_dir_all(dir).unwrap();
    let command = |command: &ChatCommand| {
        let bytes = raftchat::codec::encode_payload(command).unwrap();
        EntryData::Command(Payload::new(bytes))
    };
    let create = ChatCommand::Client {
        client_id: ClientId(2),
        sequence: 1,
        operation: Operation::CreateAccount {
            username: "ann".into(),
        },
    };
    let data = [
        EntryData::Noop,
        command(&ChatCommand::RegisterClient),
        command(&create),
    ];
    let entries: Vec<Entry> = data
        .into_iter()
        .enumerate()
        .map(|(k, data)| Entry {
            term: Term(1),
            index: LogIndex(k as u64 + 1),
            data,
        })
        .collect();
    let hard_state = HardState {
        term: Term(1),
        vote: Some(NodeId(1)),
        commit_index: LogIndex(3),
    };
    let mut log = Vec::new();
    raftchat::storage::encode_batch(None, Some(&hard_state), &entries, &mut log).unwrap();
    fs::write(dir.join("raft.log"), log).unwrap();
    let identity = format!("format = 1\ncluster_id = {cluster_id}\nnode_id = 1\n");
    fs::write(dir.join("identity.toml"), identity).unwrap();
}

#[test]
fn a_format_1_data_dir_is_upgraded_in_place_even_after_a_crash_mid_upgrade() {
    for crashed_after_rename in [false, true] {
        let mut servers = Servers::new("cli-upgrade", 1);
        let dir = servers.data_dir(1);
        write_format_1_dir(&dir, servers.file.cluster_id);
        if crashed_after_rename {
            // The first step of an upgrade done, the identity not yet rewritten.
            let segment = dir.join("log-0000000000000001-0000000000000001.log");
            fs::rename(dir.join("raft.log"), segment).unwrap();
        }
        servers.start(1);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(servers.leader(Duration::from_secs(10)));
        let cluster = servers.file.path.to_str().unwrap().to_string();
        let output = run(CLIENT, &["--cluster", &cluster, "check", "ann"]);
        assert_eq!(stdout(&output), "SUCCESS\n", "{}", stderr(&output));
        let identity = fs::read_to_string(dir.join("identity.toml")).unwrap();
        assert!(identity.contains("format = 4"), "{identity}");
        assert!(!dir.join("raft.log").exists());
        assert!(files_in(&dir).keys().any(|name| name.starts_with("snap-")));
    }
}

#[test]
fn a_data_dir_of_another_node_is_refused() {
    let mut servers = Servers::new("cli-identity", 2);
    let dir1 = servers.data_dir(1);
    fs::create_dir_all(&dir1).unwrap();
    fs::write(
        dir1.join("identity.toml"),
        "format = 1\ncluster_id = 4242\nnode_id = 2\n",
    )
    .unwrap();
    servers.start(1);
    assert_eq!(servers.wait_exit(1, Duration::from_secs(10)), Some(2));
    let text = fs::read_to_string(servers.dir.join("1.log")).unwrap();
    assert!(text.contains("belongs to node 2"), "{text}");
}

#[test]
fn a_data_dir_of_another_format_is_refused_and_left_alone() {
    let mut servers = Servers::new("cli-format", 2);
    let dir1 = servers.data_dir(1);
    fs::create_dir_all(&dir1).unwrap();
    let identity = format!(
        "format = 5\ncluster_id = {}\nnode_id = 1\nshard = 7\n",
        servers.file.cluster_id
    );
    fs::write(dir1.join("identity.toml"), &identity).unwrap();
    fs::write(dir1.join("raft.log"), b"a log of a later format").unwrap();
    servers.start(1);
    assert_eq!(servers.wait_exit(1, Duration::from_secs(10)), Some(2));
    let text = fs::read_to_string(servers.dir.join("1.log")).unwrap();
    let line = text.lines().last().unwrap();
    assert!(
        line.contains("format 5") && line.contains("newer"),
        "{line}"
    );
    assert_eq!(
        fs::read(dir1.join("raft.log")).unwrap(),
        b"a log of a later format"
    );
    assert_eq!(
        fs::read_to_string(dir1.join("identity.toml")).unwrap(),
        identity
    );
}

/// Stops a `cluster up` cluster when dropped, so no test leaves servers behind.
struct LocalCluster {
    dir: PathBuf,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let dir = self.dir.to_str().unwrap_or_default();
        let _ = run(CLIENT, &["cluster", "down", "--dir", dir, "--timeout", "5"]);
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A base port with `count` free ports after it.
fn free_port_range(count: u16) -> u16 {
    // Tests run in parallel: each call starts elsewhere, so two never pick one range at once.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for attempt in (0..200u32).map(|a| a + call * 1000) {
        let base = 20_000 + ((std::process::id() * 7919 + attempt * 104_729) % 40_000) as u16;
        let free = (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no {count} consecutive free ports found");
}

fn json(cluster: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--cluster", cluster.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let output = run(CLIENT, &all);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?}: {}",
        stderr(&output)
    );
    serde_json::from_str(&stdout(&output)).expect("valid JSON")
}

#[test]
fn local_cluster_up_chat_and_down() {
    let guard = LocalCluster {
        dir: scratch_dir("cli-local"),
    };
    let dir = guard.dir.to_str().unwrap();
    let base = free_port_range(3).to_string();
    let up = [
        "cluster",
        "up",
        "--nodes",
        "3",
        "--dir",
        dir,
        "--base-port",
        &base,
    ];
    let output = run(CLIENT, &up);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("cluster down --dir"));
    for id in 1..=3 {
        assert!(guard.dir.join(format!("{id}.pid")).is_file());
        assert!(guard.dir.join(format!("{id}.log")).is_file());
    }
    let cluster = guard.dir.join("cluster.toml");

    assert_eq!(
        json(&cluster, &["create", "ann"]),
        serde_json::json!({"status": 0})
    );
    assert_eq!(
        json(&cluster, &["create", "ann"]),
        serde_json::json!({"status": 199})
    );
    json(&cluster, &["create", "bob"]);
    let sent = json(&cluster, &["send", "ann", "bob", "hello", "there"]);
    assert_eq!(sent, serde_json::json!({"status": 0}));
    let fetched = json(&cluster, &["fetch", "bob"]);
    let expected =
        serde_json::json!({"status": 0, "first_id": 1, "messages": [["ann", "hello there"]]});
    assert_eq!(fetched, expected);
    let listed = json(&cluster, &["list", "*"]);
    assert_eq!(
        listed,
        serde_json::json!({"status": 0, "users": ["ann", "bob"]})
    );
    let missing = json(&cluster, &["check", "zed"]);
    assert_eq!(missing, serde_json::json!({"status": 102}));
    let status = json(&cluster, &["status"]);
    assert!(status["leader"].is_u64(), "{status}");
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for key in [
        "id",
        "role",
        "term",
        "commit_index",
        "applied_index",
        "last_index",
    ] {
        assert!(!nodes[0][key].is_null(), "{key} in {status}");
    }

    let output = run(
        CLIENT,
        &["--cluster", cluster.to_str().unwrap(), "fetch", "bob"],
    );
    assert_eq!(stdout(&output), "SUCCESS\n#1 ann: hello there\n");
    // The file `cluster up` wrote names the read mode; --reads overrides it.
    let text = fs::read_to_string(&cluster).unwrap();
    assert!(text.contains("reads = \"leader\""), "{text}");
    assert!(text.contains("read_lease = false"), "{text}");
    for mode in ["leader", "any", "log"] {
        assert_eq!(json(&cluster, &["--reads", mode, "fetch", "bob"]), fetched);
    }
    let output = run(
        CLIENT,
        &[
            "--cluster",
            cluster.to_str().unwrap(),
            "--reads",
            "follower",
            "fetch",
            "bob",
        ],
    );
    assert_error(
        &output,
        2,
        "--reads \"follower\": must be \"leader\", \"any\" or \"log\"",
    );

    // Up again on a running cluster: nothing to start, same answer.
    let output = run(CLIENT, &up);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("already running"));

    let output = run(CLIENT, &["cluster", "down", "--dir", dir]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).matches("stopped").count(),
        3,
        "{}",
        stdout(&output)
    );
    for id in 1..=3 {
        assert!(!guard.dir.join(format!("{id}.pid")).exists());
    }
    let output = run(CLIENT, &["cluster", "down", "--dir", dir]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("nothing to stop"));
}

/// A local cluster of three nodes started by `raftchat cluster up` in a scratch directory
/// named after `name`, with room for `ports` nodes; and the `up` command line, to run again.
fn local_cluster(name: &str, ports: u16) -> (LocalCluster, Vec<String>) {
    let guard = LocalCluster {
        dir: scratch_dir(name),
    };
    let dir = guard.dir.to_str().unwrap().to_string();
    let base = free_port_range(ports).to_string();
    let up: Vec<String> = [
        "cluster",
        "up",
        "--nodes",
        "3",
        "--dir",
        &dir,
        "--base-port",
        &base,
    ]
    .map(String::from)
    .to_vec();
    let output = run(CLIENT, &up.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    (guard, up)
}

#[test]
fn local_cluster_add_and_remove_nodes() {
    let (guard, up) = local_cluster("cli-local-members", 4);
    let up: Vec<&str> = up.iter().map(String::as_str).collect();
    let dir = guard.dir.to_str().unwrap();
    let cluster = guard.dir.join("cluster.toml");
    json(&cluster, &["create", "ann"]);

    // A fourth node joins with an empty disk, catches up and is promoted.
    let output = run(CLIENT, &["cluster", "add", "--dir", dir]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("n4  voter"), "{}", stdout(&output));
    assert!(guard.dir.join("4.pid").is_file());
    let listed = json(&cluster, &["member", "list"]);
    assert_eq!(listed["members"].as_array().unwrap().len(), 4, "{listed}");
    // Status follows the configuration, not the cluster file.
    let status = json(&cluster, &["status"]);
    assert_eq!(status["nodes"].as_array().unwrap().len(), 4, "{status}");

    // A bootstrap member leaves: the change commits, then its server is stopped.
    let output = run(CLIENT, &["cluster", "remove", "1", "--dir", dir]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!guard.dir.join("1.pid").exists());
    let listed = json(&cluster, &["member", "list"]);
    let ids: Vec<u64> = listed["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [2, 3, 4]);

    // Its id is never reused.
    let output = run(CLIENT, &["cluster", "add", "--dir", dir, "--id", "1"]);
    assert_error(&output, 2, "already had node 1");

    // Up on the changed cluster restarts the added node (with --join) and not the removed one.
    let output = run(CLIENT, &["cluster", "down", "--dir", dir]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mut up_json = vec!["--json"];
    up_json.extend_from_slice(&up);
    let output = run(CLIENT, &up_json);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!guard.dir.join("1.pid").exists());
    assert!(guard.dir.join("4.pid").is_file());
    // --json: one object on stdout, every node `up` started answering.
    let up: Value = serde_json::from_str(&stdout(&output)).expect("one JSON object");
    let nodes: Vec<(u64, bool)> = up["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_u64().unwrap(), n["started"].as_bool().unwrap()))
        .collect();
    assert_eq!(nodes, [(2, true), (3, true), (4, true)], "{up}");
    assert!(up["leader"].is_u64(), "{up}");
    let fetched = json(&cluster, &["check", "ann"]);
    assert_eq!(fetched, serde_json::json!({"status": 0}));
}

/// Lines typed at the prompt while a command runs are kept, not lost: the prompt runs in a
/// pseudo-terminal (driven by Python's `pty`, as a user's terminal would be), and every line is
/// typed at once, before the first has been answered.
#[test]
fn prompt_lines_typed_ahead_are_kept() {
    let (guard, _) = local_cluster("cli-prompt", 3);
    let cluster = guard.dir.join("cluster.toml");
    let driver = r#"
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "--cluster", sys.argv[2]])
out = b""
def drain(seconds):
    global out
    end = time.time() + seconds
    while time.time() < end:
        if select.select([fd], [], [], 0.05)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:
                return
drain(1.0)
os.write(fd, b"create alice\rcreate bob\rcheck bob\rlist\r")
drain(5.0)
os.write(fd, b"quit\r")
drain(1.0)
sys.stdout.write(out.decode(errors="replace"))
"#;
    let output = Command::new("python3")
        .args(["-c", driver, CLIENT, cluster.to_str().unwrap()])
        .output()
        .expect("python3 runs");
    let text = stdout(&output);
    assert_eq!(text.matches("SUCCESS").count(), 4, "{text}");
    assert!(text.contains("alice") && text.contains("bob"), "{text}");
}

/// Runs the client with `args`, its password given as `password` (through RAFTCHAT_PASSWORD,
/// or, with `stdin`, as a line of standard input).
fn run_with_password(args: &[&str], password: &str, stdin: bool) -> Output {
    use std::io::Write as _;
    let mut command = Command::new(CLIENT);
    command.args(args).env_remove("RAFTCHAT_PASSWORD");
    if !stdin {
        command.env("RAFTCHAT_PASSWORD", password);
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the client");
    let mut input = child.stdin.take().expect("piped");
    if stdin {
        writeln!(input, "{password}").expect("write the password");
    }
    drop(input);
    child.wait_with_output().expect("the client ends")
}

#[test]
fn passwords_through_the_command_line() {
    let (guard, _) = local_cluster("cli-passwords", 3);
    let file = guard.dir.join("cluster.toml");
    let cluster = file.to_str().unwrap();
    let with = |args: &[&'static str]| -> Vec<&str> {
        let mut all = vec!["--cluster", cluster];
        all.extend_from_slice(args);
        all
    };
    // The password from the environment, and from standard input.
    let created = run_with_password(&with(&["create", "carol", "--password"]), "s3cret", false);
    assert_eq!(stdout(&created).trim(), "SUCCESS", "{}", stderr(&created));
    let created = run_with_password(&with(&["create", "dave", "--password"]), "d4ve", true);
    assert_eq!(stdout(&created).trim(), "SUCCESS", "{}", stderr(&created));
    // Only carol reads and sends as carol; the others get the status, not a failure.
    let sent = run_with_password(
        &with(&["--user", "dave", "send", "dave", "carol", "hi"]),
        "d4ve",
        true,
    );
    assert_eq!(stdout(&sent).trim(), "SUCCESS", "{}", stderr(&sent));
    let output = run(CLIENT, &with(&["fetch", "carol"]));
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&output).trim(), "AUTH_FAILED");
    let output = run_with_password(&with(&["--user", "dave", "fetch", "carol"]), "d4ve", false);
    assert_eq!(stdout(&output).trim(), "AUTH_FAILED");
    let output = run_with_password(
        &with(&["--user", "carol", "--json", "fetch", "carol"]),
        "s3cret",
        false,
    );
    let fetched: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(fetched["status"], 0, "{fetched}");
    assert_eq!(fetched["messages"][0][0], "dave");
    // A wrong password is one line, AUTH_FAILED, exit 1; nothing ran.
    let output = run_with_password(
        &with(&["--user", "carol", "send", "carol", "dave", "x"]),
        "wrong",
        false,
    );
    assert_error(&output, 1, "AUTH_FAILED");
    assert!(stdout(&output).is_empty());
}
