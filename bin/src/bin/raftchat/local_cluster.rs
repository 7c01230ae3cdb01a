//! `raftchat cluster up | down`: a local cluster of `raftchat-server` processes on 127.0.0.1,
//! kept in one directory: `cluster.toml`, and for each node ID its data directory `ID/`, its
//! log file `ID.log` and its pid file `ID.pid`.
//!
//! `up` either leaves a cluster with an elected leader running, or stops everything it started
//! and points at the logs. Run on a directory whose cluster lost some servers, it starts only
//! the missing ones (so `up` also restarts a killed node). `down` stops only processes that its
//! pid files name and that still look like raftchat servers, asking with SIGTERM first.

use crate::cli::{runtime, seed, Failure};
use crate::process;
use clap::{Args, Subcommand};
use raftchat::limits::CLUSTER_SIZE_MAX;
use raftchat::types::NodeId;
use raftchat_node::cluster_file::{self, ClusterFile};
use raftchat_node::cluster_status::ClusterStatus;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The distance between two nodes' gRPC ports: the original client's servers listen on 20000,
/// 20010 and 20020.
const GRPC_PORT_STEP: u64 = 10;
/// How often `up` and `down` look at the processes again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The status poll's attempt timeout while waiting for a leader.
const STATUS_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);

/// `raftchat cluster ...`
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Start N servers on 127.0.0.1 (or the missing ones); return once a leader is elected.
    Up(UpArgs),
    /// Stop the servers of a local cluster (SIGTERM, then SIGKILL after --timeout).
    Down(DownArgs),
}

/// `raftchat cluster up`
#[derive(Args, Debug)]
#[command(
    after_help = "Writes DIR/cluster.toml (or reuses it), and for each node ID its data \
                        directory DIR/ID/, log file DIR/ID.log and pid file DIR/ID.pid.\n\n\
                        The cluster file it writes spells out every setting with its default, \
                        commented: [timing]; [snapshot] (log_entries and log_bytes: when a \
                        member snapshots its state and compacts its log; catch_up_entries; \
                        segment_bytes); [chat] (inbox_messages_max and retained_bytes_max: \
                        how many messages are kept, fixed when a data directory is created); \
                        [client]. Edit it and run `cluster up` again to apply it to new \
                        members (restart running ones with `cluster down` first)."
)]
pub struct UpArgs {
    /// How many servers (1 to 15; odd numbers tolerate the most failures).
    #[arg(long, value_name = "N", default_value_t = 3)]
    nodes: usize,
    /// The cluster's directory (created if missing; reused with its data if it exists).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Port of node 1; node ID listens on BASE_PORT + ID - 1.
    #[arg(long, value_name = "PORT", default_value_t = 7001)]
    base_port: u16,
    /// Serve the original service's gRPC API too (plaintext, unauthenticated, on loopback):
    /// node ID on GRPC_BASE_PORT + 10 × (ID - 1), so by default on the original client's
    /// fixed addresses 127.0.0.1:20000, :20010 and :20020. Only for a new --dir.
    #[arg(long)]
    grpc: bool,
    /// The gRPC port of node 1, with --grpc.
    #[arg(long, value_name = "PORT", default_value_t = 20000, requires = "grpc")]
    grpc_base_port: u16,
    /// The server binary [default: raftchat-server next to this program].
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Seconds to wait for a leader before giving up.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    timeout: u64,
    /// The servers' --log-level.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: String,
}

/// `raftchat cluster down`
#[derive(Args, Debug)]
pub struct DownArgs {
    /// The cluster's directory, as given to `cluster up`.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Seconds to wait for the servers to stop after SIGTERM before sending SIGKILL.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    timeout: u64,
}

/// Runs a `cluster` command.
pub fn run(command: ClusterCommand) -> Result<(), Failure> {
    match command {
        ClusterCommand::Up(args) => up(&args),
        ClusterCommand::Down(args) => down(&args),
    }
}

fn up(args: &UpArgs) -> Result<(), Failure> {
    if args.nodes == 0 || args.nodes > CLUSTER_SIZE_MAX {
        return Err(Failure::input(format!(
            "--nodes {}: must be between 1 and {CLUSTER_SIZE_MAX}",
            args.nodes
        )));
    }
    let server_bin = server_binary(args.server_bin.as_deref())?;
    fs::create_dir_all(&args.dir)
        .map_err(|e| Failure::input(format!("{}: cannot create: {e}", args.dir.display())))?;
    let file = cluster_file(args)?;
    // Nodes already running (a cluster that lost some) are left alone; the rest are started.
    let running: BTreeMap<u64, u32> = running_servers(&args.dir).into_iter().collect();
    if !running.is_empty() {
        let ids: Vec<String> = running.keys().map(u64::to_string).collect();
        out!("already running: node {}", ids.join(", "));
    }
    let missing: Vec<NodeId> = file
        .members
        .keys()
        .copied()
        .filter(|id| !running.contains_key(&id.0))
        .collect();
    check_addresses_free(missing.iter().flat_map(|id| {
        let raft = file.members.get(id).map(|address| (*id, *address));
        let grpc = file.grpc.get(id).map(|address| (*id, *address));
        raft.into_iter().chain(grpc)
    }))?;
    let mut children = Vec::new();
    for &id in &missing {
        match start_server(&server_bin, &file, id, args) {
            Ok(child) => children.push((id, child)),
            Err(failure) => {
                stop_started(&args.dir, &mut children);
                return Err(failure);
            }
        }
    }
    match wait_for_leader(&file, &args.dir, &mut children, args.timeout) {
        Ok(leader) => {
            print_usage(&args.dir, &file, leader);
            Ok(())
        }
        Err(failure) => {
            stop_started(&args.dir, &mut children);
            Err(failure)
        }
    }
}

/// Refuses to start if another program (another cluster?) holds a port a node needs; its
/// status answers would otherwise be mistaken for this cluster's.
fn check_addresses_free(nodes: impl Iterator<Item = (NodeId, SocketAddr)>) -> Result<(), Failure> {
    for (id, address) in nodes {
        if let Err(error) = std::net::TcpListener::bind(address) {
            return Err(Failure::input(format!(
                "node {} cannot listen on {address}: {error}; is another cluster running there? \
                 (choose another --base-port for a new --dir)",
                id.0
            )));
        }
    }
    Ok(())
}

/// The server binary to run: the one given, or `raftchat-server` beside this program.
fn server_binary(given: Option<&Path>) -> Result<PathBuf, Failure> {
    let path = match given {
        Some(path) => path.to_path_buf(),
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| Failure::input(format!("cannot locate this program: {e}")))?;
            let name = format!("raftchat-server{}", std::env::consts::EXE_SUFFIX);
            exe.parent().unwrap_or(Path::new(".")).join(name)
        }
    };
    if !path.is_file() {
        return Err(Failure::input(format!(
            "{}: no server binary there; build it (cargo build --release) or pass --server-bin",
            path.display()
        )));
    }
    Ok(path)
}

/// The cluster file in `dir`: the existing one if it has the right size, else a new one.
fn cluster_file(args: &UpArgs) -> Result<ClusterFile, Failure> {
    let path = args.dir.join("cluster.toml");
    if path.exists() {
        let file = ClusterFile::load(&path).map_err(|e| Failure::input(e.to_string()))?;
        if file.members.len() != args.nodes {
            return Err(Failure::input(format!(
                "{} describes a cluster of {} nodes, not {}; use --nodes {} or another --dir",
                path.display(),
                file.members.len(),
                args.nodes,
                file.members.len()
            )));
        }
        if args.grpc && file.grpc.is_empty() {
            return Err(Failure::input(format!(
                "--grpc: {} gives no node a grpc_address; add them to it (see \
                 bin/cluster.example.toml) or use --grpc with a new --dir",
                path.display()
            )));
        }
        out!("reusing {} and the data beside it", path.display());
        return Ok(file);
    }
    let last_port = u32::from(args.base_port) + args.nodes as u32 - 1;
    if args.base_port == 0 || last_port > u32::from(u16::MAX) {
        return Err(Failure::input(format!(
            "--base-port {}: the ports of {} nodes must lie between 1 and 65535",
            args.base_port, args.nodes
        )));
    }
    let members: BTreeMap<NodeId, SocketAddr> = (1..=args.nodes as u64)
        .map(|id| {
            let port = args.base_port + (id - 1) as u16;
            (NodeId(id), SocketAddr::from(([127, 0, 0, 1], port)))
        })
        .collect();
    let grpc = if args.grpc {
        grpc_addresses(args.grpc_base_port, args.nodes)?
    } else {
        BTreeMap::new()
    };
    // Checked before the file is written, so a refused port leaves nothing behind.
    if let Some(clash) = grpc.values().find(|a| members.values().any(|m| m == *a)) {
        return Err(Failure::input(format!(
            "--grpc-base-port {}: the gRPC address {clash} is also a node's address; choose \
             ports that do not overlap --base-port's",
            args.grpc_base_port
        )));
    }
    let raft = members.iter().map(|(&id, &address)| (id, address));
    check_addresses_free(raft.chain(grpc.iter().map(|(&id, &address)| (id, address))))?;
    let cluster_id = seed() % 1_000_000_000 + 1;
    let text = cluster_file::render(cluster_id, &members, &grpc);
    fs::write(&path, text)
        .map_err(|e| Failure::input(format!("{}: cannot write: {e}", path.display())))?;
    ClusterFile::load(&path).map_err(|e| Failure::input(e.to_string()))
}

/// Node ID's gRPC address: GRPC_BASE_PORT + 10 × (ID - 1) on 127.0.0.1.
fn grpc_addresses(base_port: u16, nodes: usize) -> Result<BTreeMap<NodeId, SocketAddr>, Failure> {
    let last_port = u64::from(base_port) + GRPC_PORT_STEP * (nodes as u64 - 1);
    if base_port == 0 || last_port > u64::from(u16::MAX) {
        return Err(Failure::input(format!(
            "--grpc-base-port {base_port}: the gRPC ports of {nodes} nodes, {GRPC_PORT_STEP} \
             apart, must lie between 1 and 65535"
        )));
    }
    Ok((1..=nodes as u64)
        .map(|id| {
            let port = u64::from(base_port) + GRPC_PORT_STEP * (id - 1);
            let port = u16::try_from(port).expect("checked above");
            (NodeId(id), SocketAddr::from(([127, 0, 0, 1], port)))
        })
        .collect())
}

fn start_server(
    server_bin: &Path,
    file: &ClusterFile,
    id: NodeId,
    args: &UpArgs,
) -> Result<Child, Failure> {
    let log_path = args.dir.join(format!("{}.log", id.0));
    let log = open_log(&log_path)?;
    let log_err = log
        .try_clone()
        .map_err(|e| Failure::cluster(format!("{}: {e}", log_path.display())))?;
    let child = Command::new(server_bin)
        .arg("--id")
        .arg(id.0.to_string())
        .arg("--cluster")
        .arg(&file.path)
        .arg("--data-dir")
        .arg(args.dir.join(id.0.to_string()))
        .arg("--log-level")
        .arg(&args.log_level)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: a Ctrl-C meant for this command must not reach the servers.
        .process_group(0)
        .spawn()
        .map_err(|e| Failure::cluster(format!("cannot start {}: {e}", server_bin.display())))?;
    let pid_path = pid_file(&args.dir, id);
    if let Err(error) = fs::write(&pid_path, format!("{}\n", child.id())) {
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        return Err(Failure::cluster(format!(
            "{}: cannot write: {error}",
            pid_path.display()
        )));
    }
    Ok(child)
}

fn open_log(path: &Path) -> Result<File, Failure> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Failure::input(format!("{}: cannot open: {e}", path.display())))
}

fn pid_file(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("{}.pid", id.0))
}

/// Polls the cluster until it has a leader, a server exits, or the timeout passes.
fn wait_for_leader(
    file: &ClusterFile,
    dir: &Path,
    children: &mut [(NodeId, Child)],
    timeout_secs: u64,
) -> Result<NodeId, Failure> {
    let runtime = runtime()?;
    let mut config = file.client_config(seed());
    config.attempt_timeout = STATUS_ATTEMPT_TIMEOUT;
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let status = runtime.block_on(ClusterStatus::poll(&config));
        // Checked after the poll, so a leader is only reported while every server started
        // here is still running.
        check_children(dir, children)?;
        if let Some(leader) = status.leader() {
            return Ok(leader);
        }
        if Instant::now() >= deadline {
            return Err(Failure::cluster(format!(
                "no leader was elected within {timeout_secs} s; the servers were stopped; see \
                 their logs in {}/*.log",
                dir.display()
            )));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Fails if a server started here has exited, quoting its log's last line.
fn check_children(dir: &Path, children: &mut [(NodeId, Child)]) -> Result<(), Failure> {
    for (id, child) in children.iter_mut() {
        if let Ok(Some(exit)) = child.try_wait() {
            let log = dir.join(format!("{}.log", id.0));
            return Err(Failure::cluster(format!(
                "server {} exited at startup ({exit}): {}; see {}",
                id.0,
                last_line(&log),
                log.display()
            )));
        }
    }
    Ok(())
}

/// The last non-empty line of a log file, for an error message.
fn last_line(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let line = text.lines().rev().find(|l| !l.trim().is_empty());
    line.unwrap_or("(empty log)").trim().to_string()
}

/// Stops the servers `up` started, after a failure.
fn stop_started(dir: &Path, children: &mut Vec<(NodeId, Child)>) {
    for (_, child) in children.iter() {
        let _ = process::signal(child.id(), "TERM");
    }
    for (id, mut child) in children.drain(..) {
        if !wait_for_exit(&mut child, Duration::from_secs(5)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_file(pid_file(dir, id));
    }
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn print_usage(dir: &Path, file: &ClusterFile, leader: NodeId) {
    let dir = dir.display();
    let cluster = file.path.display();
    out!(
        "cluster of {} nodes is up on 127.0.0.1; node {} leads",
        file.members.len(),
        leader.0
    );
    out!("  cluster file: {cluster}");
    out!("  logs:         {dir}/ID.log   data: {dir}/ID/   pids: {dir}/ID.pid");
    out!();
    out!("chat through it:");
    out!("  raftchat --cluster {cluster} create alice");
    out!("  raftchat --cluster {cluster} create bob");
    out!("  raftchat --cluster {cluster} send alice bob hello bob");
    out!("  raftchat --cluster {cluster} fetch bob");
    out!("  raftchat --cluster {cluster} status");
    out!("  raftchat --cluster {cluster}                 (interactive prompt)");
    if !file.grpc.is_empty() {
        let addresses: Vec<String> = file.grpc.values().map(ToString::to_string).collect();
        out!(
            "its gRPC ChatService (the original service's API): {}",
            addresses.join(", ")
        );
    }
    out!("benchmark it:");
    out!("  raftchat-bench --cluster {cluster} --clients 8 --duration 10");
    out!("stop it:");
    out!("  raftchat cluster down --dir {dir}");
}

/// The nodes of `dir` whose pid files name a running raftchat server.
fn running_servers(dir: &Path) -> Vec<(u64, u32)> {
    pid_files(dir)
        .into_iter()
        .filter_map(|(id, path)| {
            let pid = process::read_pid_file(&path).ok()?;
            (process::is_running(pid) && process::is_server(pid)).then_some((id, pid))
        })
        .collect()
}

/// The `ID.pid` files in `dir`, by id.
fn pid_files(dir: &Path) -> BTreeMap<u64, PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let id = name.strip_suffix(".pid")?.parse().ok()?;
            Some((id, entry.path()))
        })
        .collect()
}

fn down(args: &DownArgs) -> Result<(), Failure> {
    if !args.dir.is_dir() {
        return Err(Failure::input(format!(
            "{}: no such directory",
            args.dir.display()
        )));
    }
    let files = pid_files(&args.dir);
    if files.is_empty() {
        out!(
            "nothing to stop: no servers were started in {}",
            args.dir.display()
        );
        return Ok(());
    }
    let mut stopping = Vec::new();
    for (id, path) in files {
        match process::read_pid_file(&path) {
            Ok(pid) if process::is_running(pid) && process::is_server(pid) => {
                if let Err(error) = process::signal(pid, "TERM") {
                    return Err(Failure::cluster(format!("cannot run `kill`: {error}")));
                }
                stopping.push((id, pid, path));
            }
            Ok(pid) => {
                out!("node {id}: not running (pid {pid} is gone); removed its pid file");
                let _ = fs::remove_file(&path);
            }
            Err(error) => {
                out!("node {id}: {error}; removed it");
                let _ = fs::remove_file(&path);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    while Instant::now() < deadline && stopping.iter().any(|&(_, pid, _)| process::is_running(pid))
    {
        std::thread::sleep(POLL_INTERVAL / 2);
    }
    let mut failed = Vec::new();
    for (id, pid, path) in stopping {
        if process::is_running(pid) {
            out!(
                "node {id}: still running {} s after SIGTERM; sending SIGKILL",
                args.timeout
            );
            let _ = process::signal(pid, "KILL");
            std::thread::sleep(POLL_INTERVAL);
            if process::is_running(pid) {
                failed.push(format!("node {id} (pid {pid})"));
                continue;
            }
        }
        out!("node {id}: stopped (pid {pid})");
        let _ = fs::remove_file(&path);
    }
    if !failed.is_empty() {
        return Err(Failure::cluster(format!(
            "could not stop {}",
            failed.join(", ")
        )));
    }
    Ok(())
}
