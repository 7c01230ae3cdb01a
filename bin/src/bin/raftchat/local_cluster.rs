//! `raftchat cluster up | down | add | remove`: a local cluster of `raftchat-server` processes
//! on 127.0.0.1, kept in one directory: `cluster.toml`, and for each node ID its data directory
//! `ID/`, its log file `ID.log` and its pid file `ID.pid`; `local.toml` records the nodes
//! `add` started beyond the cluster file's and the members `remove` took out.
//!
//! `up` either leaves a cluster with an elected leader running, or stops everything it started
//! and points at the logs. Run on a directory whose cluster lost some servers, it starts only
//! the missing ones (so `up` also restarts a killed node, an added one included, and never a
//! removed one). `down` stops only processes that its pid files name and that still look like
//! raftchat servers, asking with SIGTERM first. `add` starts a new server with an empty data
//! directory and adds it as a member (a learner, promoted once caught up); `remove` takes a
//! member out of the configuration and then stops its server.

use crate::cli::{runtime, seed, Failure};
use crate::members;
use crate::process;
use clap::{Args, Subcommand};
use raftchat::limits::CLUSTER_SIZE_MAX;
use raftchat::raft::ConfChange;
use raftchat::types::NodeId;
use raftchat_node::auth::TokenKey;
use raftchat_node::client::Client;
use raftchat_node::cluster_file::{self, ClusterFile, RenderTls};
use raftchat_node::cluster_status::ClusterStatus;
use raftchat_node::tls::Authority;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Start N servers on 127.0.0.1 (or the missing ones); return once a leader is elected
    /// and every server started answers. With --json, print the cluster as one JSON object.
    Up(UpArgs),
    /// Stop the servers of a local cluster (SIGTERM, then SIGKILL after --timeout).
    Down(DownArgs),
    /// Start one more server with an empty data directory and add it to the running cluster:
    /// a learner, promoted to voter once caught up.
    Add(AddArgs),
    /// Remove a member from the running cluster's configuration, then stop its server; `up`
    /// no longer starts it.
    Remove(RemoveArgs),
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
    /// Run without TLS: every link in plaintext, so anyone who can reach the ports can join the
    /// Raft group or act as any client. Only for a new --dir (by default `up` makes the
    /// cluster a CA and each node a certificate, in DIR/tls/).
    #[arg(long)]
    insecure: bool,
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
    /// Start the servers with --timeline: the leader logs where its writes' time goes.
    #[arg(long)]
    timeline: bool,
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

/// `raftchat cluster add`
#[derive(Args, Debug)]
pub struct AddArgs {
    /// The cluster's directory, as given to `cluster up` (the cluster must be running).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The new node's id [default: one past the highest id the directory has seen]. Never the
    /// id of a removed node: a new disk is a new member.
    #[arg(long, value_name = "ID")]
    id: Option<u64>,
    /// Keep it a learner (it receives everything, and never votes or leads).
    #[arg(long)]
    learner: bool,
    /// Seconds to wait for it to catch up and be promoted.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    wait: u64,
    /// The server binary [default: raftchat-server next to this program].
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// The server's --log-level.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: String,
}

/// `raftchat cluster remove`
#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// The member to remove (its server is stopped once the change has committed).
    id: u64,
    /// The cluster's directory, as given to `cluster up`.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Seconds to wait for its server to stop after SIGTERM before sending SIGKILL.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    timeout: u64,
}

/// Whether `--json` was given: progress then goes to stderr, and stdout holds one JSON object.
static JSON: AtomicBool = AtomicBool::new(false);

/// A line of progress: on stdout, or on stderr under `--json`.
macro_rules! say {
    ($($arg:tt)*) => {{
        if JSON.load(Ordering::Relaxed) {
            eprintln!($($arg)*);
        } else {
            out!($($arg)*);
        }
    }};
}

/// Runs a `cluster` command; with `json`, its result is one JSON object on stdout.
pub fn run(command: ClusterCommand, json: bool) -> Result<(), Failure> {
    JSON.store(json, Ordering::Relaxed);
    match command {
        ClusterCommand::Up(args) => up(&args),
        ClusterCommand::Down(args) => down(&args),
        ClusterCommand::Add(args) => add(&args),
        ClusterCommand::Remove(args) => remove(&args),
    }
}

/// What `add` and `remove` changed in a local cluster, kept in `DIR/local.toml`: the nodes
/// started beyond the cluster file's, with their addresses, and the members taken out.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalChanges {
    /// Members removed: never started again, and their ids never reused.
    #[serde(default)]
    removed: Vec<u64>,
    /// Nodes added, by id (as a string: TOML keys are strings).
    #[serde(default)]
    added: BTreeMap<String, SocketAddr>,
}

impl LocalChanges {
    const FILE_NAME: &'static str = "local.toml";

    fn load(dir: &Path) -> Result<LocalChanges, Failure> {
        let path = dir.join(Self::FILE_NAME);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LocalChanges::default())
            }
            Err(error) => return Err(Failure::input(format!("{}: {error}", path.display()))),
        };
        let changes: LocalChanges = toml::from_str(&text)
            .map_err(|e| Failure::input(format!("{}: {}", path.display(), e.message())))?;
        if let Some(bad) = changes.added.keys().find(|id| id.parse::<u64>().is_err()) {
            return Err(Failure::input(format!(
                "{}: added: {bad:?} is not a node id",
                path.display()
            )));
        }
        Ok(changes)
    }

    /// Written whole to a temporary file, then renamed over the old one.
    fn save(&self, dir: &Path) -> Result<(), Failure> {
        let path = dir.join(Self::FILE_NAME);
        let body = toml::to_string(self).map_err(|e| Failure::cluster(e.to_string()))?;
        let text = format!(
            "# Written by `raftchat cluster add` and `cluster remove`: `cluster up` starts the \
             added nodes\n# (with --join) and never the removed ones.\n{body}"
        );
        let temporary = dir.join(format!("{}.tmp", Self::FILE_NAME));
        fs::write(&temporary, text)
            .and_then(|()| fs::rename(&temporary, &path))
            .map_err(|e| Failure::cluster(format!("{}: cannot write: {e}", path.display())))
    }

    fn added(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
        let id = |text: &String| NodeId(text.parse().expect("checked at load"));
        self.added
            .iter()
            .map(move |(text, &address)| (id(text), address))
    }

    fn is_removed(&self, id: NodeId) -> bool {
        self.removed.contains(&id.0)
    }

    /// Every node of the local cluster: the cluster file's and the added ones, less the
    /// removed; with its address, and whether it was added (it then starts with `--join`).
    fn nodes(&self, file: &ClusterFile) -> Vec<(NodeId, SocketAddr, bool)> {
        let bootstrap = file
            .members
            .iter()
            .map(|(&id, &address)| (id, address, false));
        let added = self.added().map(|(id, address)| (id, address, true));
        bootstrap
            .chain(added)
            .filter(|(id, _, _)| !self.is_removed(*id))
            .collect()
    }
}

/// The cluster file of a directory `up` made.
fn existing_cluster_file(dir: &Path) -> Result<ClusterFile, Failure> {
    let path = dir.join("cluster.toml");
    if !path.is_file() {
        return Err(Failure::input(format!(
            "{}: no cluster file; start the cluster with `raftchat cluster up --dir {}` first",
            path.display(),
            dir.display()
        )));
    }
    ClusterFile::load(&path).map_err(|e| Failure::input(e.to_string()))
}

fn add(args: &AddArgs) -> Result<(), Failure> {
    let server_bin = server_binary(args.server_bin.as_deref())?;
    let file = existing_cluster_file(&args.dir)?;
    let mut changes = LocalChanges::load(&args.dir)?;
    let known: Vec<u64> = file
        .members
        .keys()
        .map(|id| id.0)
        .chain(changes.added().map(|(id, _)| id.0))
        .chain(changes.removed.iter().copied())
        .collect();
    let id = args
        .id
        .unwrap_or_else(|| known.iter().max().map_or(1, |m| m + 1));
    if id == 0 || known.contains(&id) {
        return Err(Failure::input(format!(
            "--id {id}: {} already had node {id}; a new node needs a new id",
            args.dir.display()
        )));
    }
    let id = NodeId(id);
    let address = next_address(&file, id)?;
    check_addresses_free(std::iter::once((id, address)))?;
    let data_dir = args.dir.join(id.0.to_string());
    if data_dir.exists() {
        return Err(Failure::input(format!(
            "{}: exists already; a new member starts from an empty data directory",
            data_dir.display()
        )));
    }
    if file.tls.is_some() {
        let tls_dir = args.dir.join(TLS_DIR);
        let authority = Authority::load(
            file.cluster_id,
            &tls_dir.join("ca.pem"),
            &tls_dir.join("ca.key"),
        )
        .map_err(|e| {
            Failure::input(format!(
                "{e} (is {} a cluster `up` made?)",
                args.dir.display()
            ))
        })?;
        issue_certificate(&args.dir, &authority, id)?;
    }
    let server = ServerArgs {
        bin: &server_bin,
        dir: &args.dir,
        log_level: &args.log_level,
        timeline: false,
    };
    let mut child = server.start(&file, id, Some(address))?;
    changes.added.insert(id.0.to_string(), address);
    if let Err(failure) = changes.save(&args.dir) {
        stop_started(&args.dir, &mut vec![(id, child)]);
        return Err(failure);
    }
    say!("started node {} on {address}; adding it", id.0);
    let wait = (!args.learner).then_some(Duration::from_secs(args.wait));
    let runtime = runtime()?;
    let added = runtime.block_on(async {
        let mut client = Client::new(file.client_config(seed()));
        let tell = !JSON.load(Ordering::Relaxed);
        members::add(&mut client, id, address.to_string(), wait, tell).await
    });
    if let Ok(Some(exit)) = child.try_wait() {
        let log = args.dir.join(format!("{}.log", id.0));
        return Err(Failure::cluster(format!(
            "server {} exited ({exit}): {}; see {}",
            id.0,
            last_line(&log),
            log.display()
        )));
    }
    let view = added?;
    members::print_view(&view, JSON.load(Ordering::Relaxed));
    Ok(())
}

/// Where node `id` of a local cluster listens: node 1's port + ID - 1, as `up` lays them out.
fn next_address(file: &ClusterFile, id: NodeId) -> Result<SocketAddr, Failure> {
    let (&first, &address) = file
        .members
        .iter()
        .next()
        .ok_or_else(|| Failure::input("the cluster file has no members"))?;
    let port = u64::from(address.port()) + id.0 - first.0;
    let port = u16::try_from(port)
        .map_err(|_| Failure::input(format!("node {} would listen past port 65535", id.0)))?;
    Ok(SocketAddr::new(address.ip(), port))
}

fn remove(args: &RemoveArgs) -> Result<(), Failure> {
    let file = existing_cluster_file(&args.dir)?;
    let mut changes = LocalChanges::load(&args.dir)?;
    let id = NodeId(args.id);
    let runtime = runtime()?;
    let view = runtime.block_on(async {
        let mut client = Client::new(file.client_config(seed()));
        let change = ConfChange::Remove { id };
        client
            .change_membership(change)
            .await
            .map_err(members::failure)
    })?;
    say!("node {} removed at index {}", id.0, view.index.0);
    if !changes.is_removed(id) {
        changes.removed.push(id.0);
    }
    changes.added.remove(&id.0.to_string());
    changes.save(&args.dir)?;
    let pid_path = pid_file(&args.dir, id);
    if pid_path.exists() {
        stop_servers(vec![(id.0, pid_path)], args.timeout)?;
    }
    members::print_view(&view, JSON.load(Ordering::Relaxed));
    Ok(())
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
        say!("already running: node {}", ids.join(", "));
    }
    let changes = LocalChanges::load(&args.dir)?;
    let nodes = changes.nodes(&file);
    let missing: Vec<(NodeId, SocketAddr, bool)> = nodes
        .iter()
        .copied()
        .filter(|(id, _, _)| !running.contains_key(&id.0))
        .collect();
    check_addresses_free(missing.iter().flat_map(|&(id, address, _)| {
        let grpc = file.grpc.get(&id).map(|&grpc| (id, grpc));
        std::iter::once((id, address)).chain(grpc)
    }))?;
    let server = ServerArgs {
        bin: &server_bin,
        dir: &args.dir,
        log_level: &args.log_level,
        timeline: args.timeline,
    };
    let mut children = Vec::new();
    for &(id, address, added) in &missing {
        // An added node is not in the cluster file: it is told where to listen.
        match server.start(&file, id, added.then_some(address)) {
            Ok(child) => children.push((id, child)),
            Err(failure) => {
                stop_started(&args.dir, &mut children);
                return Err(failure);
            }
        }
    }
    let nodes: Vec<(NodeId, SocketAddr)> = nodes.iter().map(|&(id, a, _)| (id, a)).collect();
    let started: Vec<NodeId> = missing.iter().map(|&(id, _, _)| id).collect();
    match wait_until_serving(&file, &args.dir, &mut children, &started, args.timeout) {
        Serving::All(leader) => {
            if JSON.load(Ordering::Relaxed) {
                out!("{}", up_json(&args.dir, &file, leader, &nodes, &started));
            } else {
                print_usage(&args.dir, &file, leader);
            }
            Ok(())
        }
        Serving::Silent(silent) => {
            let ids: Vec<String> = silent.iter().map(|id| id.0.to_string()).collect();
            let logs: Vec<String> = silent
                .iter()
                .map(|id| args.dir.join(format!("{}.log", id.0)).display().to_string())
                .collect();
            Err(Failure::cluster(format!(
                "a leader was elected, but node {} did not answer within {} s (still \
                 recovering?); left running; see {}",
                ids.join(", "),
                args.timeout,
                logs.join(", ")
            )))
        }
        Serving::Failed(failure) => {
            stop_started(&args.dir, &mut children);
            Err(failure)
        }
    }
}

/// `cluster up --json`: the cluster, its nodes and where their files are.
fn up_json(
    dir: &Path,
    file: &ClusterFile,
    leader: NodeId,
    nodes: &[(NodeId, SocketAddr)],
    started: &[NodeId],
) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = nodes
        .iter()
        .map(|&(id, address)| {
            let pid_file = pid_file(dir, id);
            json!({
                "id": id.0,
                "address": address.to_string(),
                "grpc_address": file.grpc.get(&id).map(ToString::to_string),
                "pid": process::read_pid_file(&pid_file).ok(),
                "pid_file": pid_file,
                "log": dir.join(format!("{}.log", id.0)),
                "data_dir": dir.join(id.0.to_string()),
                "started": started.contains(&id),
            })
        })
        .collect();
    json!({
        "cluster_file": file.path,
        "dir": dir,
        "leader": leader.0,
        "nodes": nodes,
    })
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
        say!("reusing {} and the data beside it", path.display());
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
    let tls = match args.insecure {
        true => None,
        false => Some(make_certificates(
            &args.dir,
            cluster_id,
            members.keys().copied(),
        )?),
    };
    let key = TokenKey::generate().map_err(Failure::input)?;
    write_file(&args.dir.join(TOKEN_KEY_FILE), &key.to_hex(), true)?;
    let text = cluster_file::render(
        cluster_id,
        &members,
        &grpc,
        tls.as_ref(),
        Some(TOKEN_KEY_FILE),
    );
    fs::write(&path, text)
        .map_err(|e| Failure::input(format!("{}: cannot write: {e}", path.display())))?;
    ClusterFile::load(&path).map_err(|e| Failure::input(e.to_string()))
}

/// The local cluster's token key, in its directory.
const TOKEN_KEY_FILE: &str = "token.key";

/// Where a local cluster keeps its CA and its nodes' certificates.
const TLS_DIR: &str = "tls";

/// Makes a CA for the cluster in DIR/tls/, and a certificate for each node; returns what the
/// cluster file says of them (paths relative to it).
fn make_certificates(
    dir: &Path,
    cluster_id: u64,
    nodes: impl Iterator<Item = NodeId>,
) -> Result<RenderTls, Failure> {
    let tls_dir = dir.join(TLS_DIR);
    fs::create_dir_all(&tls_dir)
        .map_err(|e| Failure::input(format!("{}: cannot create: {e}", tls_dir.display())))?;
    let authority = Authority::new(cluster_id).map_err(|e| Failure::input(e.to_string()))?;
    write_file(&tls_dir.join("ca.pem"), authority.cert_pem(), false)?;
    write_file(&tls_dir.join("ca.key"), authority.key_pem(), true)?;
    let mut render = RenderTls {
        ca: format!("{TLS_DIR}/ca.pem"),
        nodes: BTreeMap::new(),
    };
    for id in nodes {
        let (cert, key) = issue_certificate(dir, &authority, id)?;
        render.nodes.insert(id, (cert, key));
    }
    Ok(render)
}

/// Writes node `id`'s certificate and key into DIR/tls/; returns their paths relative to DIR.
fn issue_certificate(
    dir: &Path,
    authority: &Authority,
    id: NodeId,
) -> Result<(String, String), Failure> {
    let issued = authority
        .issue(id)
        .map_err(|e| Failure::input(e.to_string()))?;
    let (cert, key) = node_certificate_files(id);
    write_file(&dir.join(&cert), &issued.cert_pem, false)?;
    write_file(&dir.join(&key), &issued.key_pem, true)?;
    Ok((cert, key))
}

/// Node `id`'s certificate and key, relative to a local cluster's directory.
fn node_certificate_files(id: NodeId) -> (String, String) {
    (
        format!("{TLS_DIR}/node-{}.pem", id.0),
        format!("{TLS_DIR}/node-{}.key", id.0),
    )
}

/// Writes a file whole; a private one (a key) is readable by its owner only.
fn write_file(path: &Path, text: &str, private: bool) -> Result<(), Failure> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mode = if private { 0o600 } else { 0o644 };
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|e| Failure::input(format!("{}: cannot write: {e}", path.display())))
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

/// How `up` and `add` start servers.
struct ServerArgs<'a> {
    bin: &'a Path,
    dir: &'a Path,
    log_level: &'a str,
    timeline: bool,
}

impl ServerArgs<'_> {
    /// Starts node `id`, a member of the cluster file, or with `listen` one added since (it
    /// joins: `--join --listen`), and writes its pid file.
    fn start(
        &self,
        file: &ClusterFile,
        id: NodeId,
        listen: Option<SocketAddr>,
    ) -> Result<Child, Failure> {
        let log_path = self.dir.join(format!("{}.log", id.0));
        let log = open_log(&log_path)?;
        let log_err = log
            .try_clone()
            .map_err(|e| Failure::cluster(format!("{}: {e}", log_path.display())))?;
        let mut command = Command::new(self.bin);
        command
            .arg("--id")
            .arg(id.0.to_string())
            .arg("--cluster")
            .arg(&file.path)
            .arg("--data-dir")
            .arg(self.dir.join(id.0.to_string()))
            .arg("--log-level")
            .arg(self.log_level);
        if self.timeline {
            command.arg("--timeline");
        }
        if let Some(listen) = listen {
            command
                .arg("--join")
                .arg("--listen")
                .arg(listen.to_string());
            // An added node is not in the cluster file: its certificate comes by flag.
            if file.tls.is_some() {
                let (cert, key) = node_certificate_files(id);
                command.arg("--tls-cert").arg(self.dir.join(cert));
                command.arg("--tls-key").arg(self.dir.join(key));
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C meant for this command must not reach the servers.
            .process_group(0)
            .spawn()
            .map_err(|e| Failure::cluster(format!("cannot start {}: {e}", self.bin.display())))?;
        let pid_path = pid_file(self.dir, id);
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

/// How waiting for a cluster ended.
enum Serving {
    /// A leader, and every node started here answers.
    All(NodeId),
    /// A leader, but these nodes started here did not answer in time.
    Silent(Vec<NodeId>),
    /// No leader in time, or a server exited.
    Failed(Failure),
}

/// Polls the cluster until it has a leader and every node in `started` answers its status, a
/// server exits, or the timeout passes.
fn wait_until_serving(
    file: &ClusterFile,
    dir: &Path,
    children: &mut [(NodeId, Child)],
    started: &[NodeId],
    timeout_secs: u64,
) -> Serving {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(failure) => return Serving::Failed(failure),
    };
    let mut config = file.client_config(seed());
    config.attempt_timeout = STATUS_ATTEMPT_TIMEOUT;
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let status = runtime.block_on(ClusterStatus::poll(&config));
        // Checked after the poll, so a leader is only reported while every server started
        // here is still running.
        if let Err(failure) = check_children(dir, children) {
            return Serving::Failed(failure);
        }
        let answered = |id: &NodeId| {
            let answer = status.members.iter().find(|m| m.id == *id);
            answer.is_some_and(|m| m.status.is_ok())
        };
        let silent: Vec<NodeId> = started.iter().copied().filter(|id| !answered(id)).collect();
        match status.leader() {
            Some(leader) if silent.is_empty() => return Serving::All(leader),
            Some(_) if Instant::now() >= deadline => return Serving::Silent(silent),
            None if Instant::now() >= deadline => {
                return Serving::Failed(Failure::cluster(format!(
                    "no leader was elected within {timeout_secs} s; the servers were stopped; \
                     see their logs in {}/*.log",
                    dir.display()
                )))
            }
            _ => std::thread::sleep(POLL_INTERVAL),
        }
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
        say!(
            "nothing to stop: no servers were started in {}",
            args.dir.display()
        );
        if JSON.load(Ordering::Relaxed) {
            out!("{}", json!({ "stopped": [] }));
        }
        return Ok(());
    }
    let ids: Vec<u64> = files.keys().copied().collect();
    stop_servers(files.into_iter().collect(), args.timeout)?;
    if JSON.load(Ordering::Relaxed) {
        out!("{}", json!({ "stopped": ids }));
    }
    Ok(())
}

/// Stops the servers the pid files name (those still running a raftchat server): SIGTERM,
/// then SIGKILL after `timeout_secs`. Removes the pid files of the stopped and the gone.
fn stop_servers(files: Vec<(u64, PathBuf)>, timeout_secs: u64) -> Result<(), Failure> {
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
                say!("node {id}: not running (pid {pid} is gone); removed its pid file");
                let _ = fs::remove_file(&path);
            }
            Err(error) => {
                say!("node {id}: {error}; removed it");
                let _ = fs::remove_file(&path);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    while Instant::now() < deadline && stopping.iter().any(|&(_, pid, _)| process::is_running(pid))
    {
        std::thread::sleep(POLL_INTERVAL / 2);
    }
    let mut failed = Vec::new();
    for (id, pid, path) in stopping {
        if process::is_running(pid) {
            say!("node {id}: still running {timeout_secs} s after SIGTERM; sending SIGKILL");
            let _ = process::signal(pid, "KILL");
            std::thread::sleep(POLL_INTERVAL);
            if process::is_running(pid) {
                failed.push(format!("node {id} (pid {pid})"));
                continue;
            }
        }
        say!("node {id}: stopped (pid {pid})");
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
