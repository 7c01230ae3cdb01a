//! The server: flags, logging, the data directory, signals, and exit codes around
//! `host::run_node`.
//!
//! On SIGINT or SIGTERM a leader first hands its leadership to the most up-to-date other voter
//! (waiting at most two election timeouts), so a planned restart costs no election.
//!
//! Exit codes: 0 after a clean shutdown on SIGINT or SIGTERM; 1 when the node fails while
//! starting or running (it cannot listen on its address or its gRPC address, a disk write or
//! fsync fails); 2 on a usage or input error (bad flags, a bad cluster file, an id that is not a
//! member, a data directory that cannot be used, belongs to another node, or holds a corrupt
//! log). The data is never modified on an error: a corrupt log is reported with its file and
//! offset and left as it is.
//!
//! The data directory names its format in `identity.toml`. Format 4 (this binary) holds log
//! segments and snapshot files (see `raftchat_node::durable`) whose records may carry cluster
//! configurations, and whose segments may end in zeros reserved ahead of their records;
//! format 3 is the same without reserved zeros, and format 2 without configurations either,
//! so both are upgraded by rewriting the identity (format 2's snapshot files are read as
//! holding the bootstrap configuration). A format-1 directory (one `raft.log`) is upgraded in place on first start,
//! crash-safely: the log file is renamed to be the first segment and the directory synced,
//! then the identity is rewritten atomically. Each step is idempotent, so a crash anywhere is
//! finished by the next start; a directory of a newer format is refused.

use clap::Parser;
use raftchat::raft::{RoleKind, Status};
use raftchat::types::NodeId;
use raftchat_node::client::ClientConfig;
use raftchat_node::cluster_file::ClusterFile;
use raftchat_node::config::NodeConfig;
use raftchat_node::file_disk::{self, FileDisk};
use raftchat_node::gateway::Gateway;
use raftchat_node::host::{run_node, NodeError};
use raftchat_node::observer::{Event, Observer};
use serde::Deserialize;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// The log file of a format-1 data directory.
const FORMAT_1_LOG_FILE_NAME: &str = "raft.log";
/// The name the format-1 log takes as the first segment of format 2.
const FORMAT_1_FIRST_SEGMENT: &str = "log-0000000000000001-0000000000000001.log";
/// The file that ties a data directory to one node of one cluster, and names its format.
const IDENTITY_FILE_NAME: &str = "identity.toml";
/// The layout of the data directory and its records that this binary reads and writes. A
/// change to either that an older binary would misread bumps it; an older format is upgraded
/// in place, a newer one refused, never reinterpreted.
const DATA_FORMAT: u32 = 4;
/// How long a shutdown waits for the runtime's tasks to stop.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// One member of a raftchat cluster.
#[derive(Parser, Debug)]
#[command(
    name = "raftchat-server",
    version,
    about = "One member of a raftchat cluster: Raft over TCP, a durable log with fsync.",
    after_help = "Exit codes: 0 stopped by SIGINT/SIGTERM; 1 failed while starting or running \
                  (cannot listen, disk error); 2 usage or input error (bad flag, bad cluster \
                  file, unknown id, unusable, foreign or corrupt data directory).\n\
                  The data directory is never modified on an error."
)]
struct Args {
    /// This node's id: one of the `[[nodes]]` ids of the cluster file, or with `--join` a new
    /// id of a node to be added.
    #[arg(long, value_name = "ID")]
    id: u64,
    /// Start a new member, not in the cluster file, with an empty data directory: it waits
    /// until the leader adds it (`raftchat member add ID ADDRESS`) and then catches up.
    #[arg(long, requires = "listen")]
    join: bool,
    /// With `--join`: where the new member listens, as given to `member add`.
    #[arg(long, value_name = "HOST:PORT", requires = "join")]
    listen: Option<SocketAddr>,
    /// The cluster file (see bin/cluster.example.toml).
    #[arg(long, value_name = "CLUSTER.toml")]
    cluster: PathBuf,
    /// This node's TLS certificate (PEM; signed by the cluster file's `[tls] ca`, naming the
    /// node as n<ID>.raftchat), in place of its `[[nodes]]` entry's `tls_cert`.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where this node keeps its log (created if missing; one directory per node).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Log verbosity: error, warn, info, debug or trace, or a tracing filter such as
    /// "info,raftchat_node=debug". Logs go to stderr.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: String,
    /// While this node leads, log every 5 s where its writes' time went, step by step (in the
    /// inbox, waiting for a round, its own sync, waiting for a quorum), p50/p99 in µs.
    #[arg(long)]
    timeline: bool,
    /// Threads that run the node: 1 (the default) runs its event loop and every connection on
    /// one thread, so handing a request or a message between them wakes no other thread (the
    /// fastest here, and what the benchmarks measure); more spreads connections (and their TLS)
    /// over that many threads. Disk syncs, password hashing and snapshots run on threads of
    /// their own either way.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
}

/// Why the server stopped: the exit code and one line for the operator.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn input(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// Runs the server and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("raftchat-server: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| Failure::input(format!("--log-level {:?}: {e}", args.log_level)))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cluster = ClusterFile::load(&args.cluster).map_err(|e| Failure::input(e.to_string()))?;
    let id = NodeId(args.id);
    let mut config = match (args.join, args.listen) {
        (true, Some(listen)) => cluster.joiner_config(id, listen, seed(id)),
        _ => cluster.node_config(id, seed(id)),
    }
    .map_err(|e| Failure::input(e.to_string()))?;
    config.timeline = args.timeline;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = cluster
            .node_tls(cert, key)
            .map_err(|e| Failure::input(format!("--tls-cert: {e}")))?;
        config.tls = Some(tls);
    }
    match (&cluster.tls, &config.tls) {
        (Some(_), None) => {
            return Err(Failure::input(format!(
                "{}: [tls] is on, but node {} has no certificate: give `tls_cert` and `tls_key` \
                 in its [[nodes]] entry, or --tls-cert and --tls-key",
                cluster.path.display(),
                id.0
            )))
        }
        (None, _) => tracing::warn!(
            "running without TLS (the cluster file has no [tls]): anyone who can reach {} can \
             join the Raft group, or act as any client; passwords and tokens cross the network \
             in clear",
            config.listen
        ),
        (Some(_), Some(_)) => {}
    }
    if config.auth.token_key.is_none() {
        tracing::warn!(
            "no token key ([auth] token_key in the cluster file): accounts with passwords can \
             be created, but nobody can log in to act on them"
        );
    }
    prepare_data_dir(&args.data_dir, &config)?;
    let disk = FileDisk::open(&args.data_dir).map_err(|e| Failure::input(e.to_string()))?;
    let mut builder = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(threads));
            builder
        }
    };
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    tracing::info!(
        node = args.id,
        cluster_id = config.cluster_id,
        listen = %config.listen,
        data_dir = %args.data_dir.display(),
        "starting"
    );
    let grpc = cluster
        .grpc
        .get(&id)
        .map(|&address| (address, cluster.client_config(seed(id))));
    let result = runtime.block_on(serve(config, disk, grpc));
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    result.map_err(|error| match error {
        GatewayOrNode::Node(error) => classify(error, &args.data_dir),
        GatewayOrNode::Gateway(message) => Failure::runtime(message),
    })
}

/// Why `serve` stopped: the node failed, or the gRPC gateway did.
enum GatewayOrNode {
    Node(NodeError),
    Gateway(String),
}

/// Runs the node, and its gRPC gateway if it has an address, until either fails or a shutdown
/// signal arrives.
async fn serve(
    config: NodeConfig,
    disk: FileDisk,
    grpc: Option<(SocketAddr, ClientConfig)>,
) -> Result<(), GatewayOrNode> {
    let gateway = match grpc {
        Some((address, client)) => {
            let gateway = Gateway::bind(address, client).await.map_err(|error| {
                GatewayOrNode::Gateway(format!(
                    "cannot listen on {address}: {error} (is another process using this address?)"
                ))
            })?;
            tracing::warn!(
                grpc = %address,
                "serving the gRPC ChatService in plaintext and unauthenticated: anyone who can \
                 reach it can act on every account without a password; keep it on loopback or a \
                 trusted network"
            );
            Some(gateway)
        }
        None => None,
    };
    let gateway = async move {
        match gateway {
            Some(gateway) => gateway.serve(std::future::pending()).await,
            None => std::future::pending().await,
        }
    };
    let observer = Arc::new(LogObserver::default());
    let handover = handover_client(&config);
    let node = run_node(config, disk, |outbox| outbox, observer);
    tokio::pin!(node);
    tokio::select! {
        result = &mut node => result.map_err(GatewayOrNode::Node),
        result = gateway => {
            let why = match result {
                Ok(()) => "stopped".to_owned(),
                Err(error) => error.to_string(),
            };
            Err(GatewayOrNode::Gateway(format!("the gRPC gateway failed: {why}")))
        }
        signal = shutdown_signal() => {
            match signal {
                Ok(name) => tracing::info!(signal = name, "shutting down"),
                Err(error) => tracing::error!(%error, "cannot wait for signals; shutting down"),
            }
            // A leader hands over first, so a planned restart costs no election timeout.
            tokio::select! {
                result = &mut node => return result.map_err(GatewayOrNode::Node),
                () = hand_over(handover) => {}
            }
            // Dropping the node stops it wherever it is: everything it acknowledged was
            // synced to disk before the acknowledgement was sent, and a group write still under
            // way (on the blocking pool, which the runtime's shutdown waits for) promised
            // nothing yet; if cut short, recovery drops its torn tail.
            Ok(())
        }
    }
}

/// A client of this node alone, to ask it to hand its leadership over before it stops; it
/// waits up to two longest election timeouts (a transfer is abandoned after one).
fn handover_client(config: &NodeConfig) -> (NodeId, ClientConfig) {
    let mut address = config.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let mut client = ClientConfig::new([(config.id, address)].into());
    let election_max = config.tick_interval * config.election_ticks.1;
    client.operation_timeout = 2 * election_max;
    client.attempt_timeout = 2 * election_max;
    (config.id, client)
}

/// If this node leads, hands its leadership to the most up-to-date other voter and waits
/// until that one leads (or the transfer is abandoned); otherwise does nothing.
async fn hand_over((id, config): (NodeId, ClientConfig)) {
    let mut client = raftchat_node::client::Client::new(config);
    match client.status(id).await {
        Ok(status) if status.raft.role == RoleKind::Leader => {}
        _ => return,
    }
    match client.transfer_leadership(None).await {
        Ok(leader) => tracing::info!(%leader, "handed leadership over"),
        Err(error) => tracing::warn!(%error, "could not hand leadership over; stopping anyway"),
    }
}

/// Waits for SIGINT or SIGTERM and says which came.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = terminate.recv() => Ok("SIGTERM"),
            _ = interrupt.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}

/// The exit code and message for a node that stopped on an error.
fn classify(error: NodeError, data_dir: &Path) -> Failure {
    match error {
        NodeError::Data(_) | NodeError::Restore(_) => Failure::input(format!(
            "{}: {error}; the directory was left untouched",
            data_dir.display()
        )),
        NodeError::Config(_) => Failure::input(error.to_string()),
        NodeError::Bind { .. } => {
            Failure::runtime(format!("{error} (is another process using this address?)"))
        }
        NodeError::Disk(_) => Failure::runtime(error.to_string()),
    }
}

/// What `identity.toml` records: which node of which cluster owns the data directory, and in
/// which format it is written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    format: u32,
    cluster_id: u64,
    node_id: u64,
}

/// Creates the data directory if needed and makes sure it belongs to this node and is in a
/// format this binary reads: a log written by another node, for another cluster, or by an
/// incompatible version must never be served as this node's.
fn prepare_data_dir(dir: &Path, config: &NodeConfig) -> Result<(), Failure> {
    if !dir.is_dir() {
        // A new directory must survive a power loss as surely as the votes written into it:
        // sync its parent, which holds its name.
        let cannot_create = |e: std::io::Error| {
            Failure::input(format!(
                "{}: cannot create the data directory: {e}",
                dir.display()
            ))
        };
        std::fs::create_dir_all(dir).map_err(cannot_create)?;
        let parent = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        std::fs::File::open(parent)
            .and_then(|p| p.sync_all())
            .map_err(cannot_create)?;
    }
    let path = dir.join(IDENTITY_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => check_identity(dir, &path, &text, config),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            write_identity(dir, &path, config)
        }
        Err(error) => Err(Failure::input(format!(
            "{}: cannot read: {error}",
            path.display()
        ))),
    }
}

fn check_identity(dir: &Path, path: &Path, text: &str, config: &NodeConfig) -> Result<(), Failure> {
    let invalid = |message: String| {
        Failure::input(format!(
            "{}: not a valid identity file: {}",
            path.display(),
            message.replace('\n', " ")
        ))
    };
    // The format first, on its own: a later format may have fields this binary does not know,
    // and must be refused for its format, not for those fields.
    let table: toml::Table = toml::from_str(text).map_err(|e| invalid(e.message().into()))?;
    let format = match table.get("format") {
        Some(toml::Value::Integer(format)) if (1..=i64::from(DATA_FORMAT)).contains(format) => {
            *format
        }
        Some(toml::Value::Integer(format)) if *format > i64::from(DATA_FORMAT) => {
            return Err(Failure::input(format!(
                "{}: the data directory is in format {format}, newer than this \
                 raftchat-server (format {DATA_FORMAT}); run a newer raftchat-server",
                dir.display()
            )));
        }
        Some(toml::Value::Integer(format)) => {
            return Err(invalid(format!("`format` {format} is no format")))
        }
        Some(_) => return Err(invalid("`format` is not an integer".into())),
        None => return Err(invalid("no `format`".into())),
    };
    let identity: Identity = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| invalid(e.message().into()))?;
    assert_eq!(i64::from(identity.format), format);
    if identity.node_id != config.id.0 || identity.cluster_id != config.cluster_id {
        return Err(Failure::input(format!(
            "{}: this data directory belongs to node {} of cluster {}, not to node {} of \
             cluster {}",
            dir.display(),
            identity.node_id,
            identity.cluster_id,
            config.id.0,
            config.cluster_id
        )));
    }
    if identity.format == 1 {
        upgrade_from_format_1(dir, path, config)?;
    } else if identity.format < DATA_FORMAT {
        // Formats 3 and 4 only add what formats 2 and 3 never wrote (configurations, reserved
        // zeros): an older binary must refuse the directory once they may be there, so the
        // identity says so before the node starts.
        write_identity(dir, path, config)?;
        tracing::info!(
            data_dir = %dir.display(),
            "upgraded the data directory from format {} to {DATA_FORMAT}",
            identity.format
        );
    }
    Ok(())
}

/// Upgrades a format-1 directory to format 4 in place (see the module doc). Every step can be
/// repeated, so a crash at any point is finished by the next start.
fn upgrade_from_format_1(dir: &Path, path: &Path, config: &NodeConfig) -> Result<(), Failure> {
    let old_log = dir.join(FORMAT_1_LOG_FILE_NAME);
    let first_segment = dir.join(FORMAT_1_FIRST_SEGMENT);
    let fail = |e: std::io::Error| {
        Failure::runtime(format!(
            "{}: cannot upgrade the data directory from format 1: {e}",
            dir.display()
        ))
    };
    match (old_log.is_file(), first_segment.exists()) {
        (true, true) => {
            return Err(Failure::input(format!(
                "{}: holds both {FORMAT_1_LOG_FILE_NAME} and {FORMAT_1_FIRST_SEGMENT}; \
                 refusing to upgrade it from format 1",
                dir.display()
            )))
        }
        (true, false) => {
            std::fs::rename(&old_log, &first_segment).map_err(fail)?;
            file_disk::sync_dir(dir).map_err(fail)?;
        }
        // Renamed before a crash, or a directory that never held a log.
        (false, _) => {}
    }
    write_identity(dir, path, config)?;
    tracing::info!(data_dir = %dir.display(), "upgraded the data directory from format 1 to 4");
    Ok(())
}

/// Claims a new data directory for this node. The file appears whole or not at all: it is
/// written beside its final name, synced, renamed, and the directory synced, so a crash here
/// never leaves a half-written identity that would refuse the next start.
fn write_identity(dir: &Path, path: &Path, config: &NodeConfig) -> Result<(), Failure> {
    let text = format!(
        "# Written by raftchat-server: this data directory belongs to this node.\n\
         format = {DATA_FORMAT}\ncluster_id = {}\nnode_id = {}\n",
        config.cluster_id, config.id.0
    );
    let temporary = dir.join(format!("{IDENTITY_FILE_NAME}.tmp"));
    let fail = |e: std::io::Error| Failure::input(format!("{}: cannot write: {e}", path.display()));
    let mut file = std::fs::File::create(&temporary).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)
}

/// A fresh election-jitter seed for every start of a node, so that two nodes restarted together
/// do not time out in step.
fn seed(id: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32) ^ id.0
}

/// Logs what an operator wants to see: recovery, and changes of role, term and leader (not
/// every commit, which would flood the log under load).
#[derive(Default)]
struct LogObserver {
    last: Mutex<Option<(RoleKind, u64, Option<NodeId>)>>,
}

impl Observer for LogObserver {
    fn event(&self, node: NodeId, event: &Event<'_>) {
        match event {
            Event::Recovered {
                hard_state,
                snapshot,
                entries,
                torn_tail_bytes,
                skipped_snapshots,
                ..
            } => {
                for skipped in skipped_snapshots.iter() {
                    tracing::warn!(%node, skipped, "skipped an unreadable snapshot");
                }
                tracing::info!(
                    %node, ?hard_state, snapshot_index = snapshot.index.0,
                    entries = entries.len(), torn_tail_bytes, "recovered the data directory"
                );
            }
            Event::Status(status) => self.status(node, status),
            Event::Stopped { reason } => tracing::error!(%node, reason, "node stopped"),
            Event::Membership { membership, index } => {
                let voters: Vec<u64> = membership.voters().map(|v| v.0).collect();
                let learners: Vec<u64> = membership.learners().map(|l| l.0).collect();
                tracing::info!(%node, index = index.0, ?voters, ?learners, "configuration");
            }
            Event::Transfer {
                target: Some(target),
            } => {
                tracing::info!(%node, %target, "handing leadership over")
            }
            Event::Transfer { target: None } => tracing::info!(%node, "leadership transfer ended"),
            Event::RecoveryFailed { reason } => {
                tracing::error!(%node, reason, "cannot recover the data directory")
            }
            Event::SnapshotTaken {
                snapshot,
                compacted_through,
                loop_held,
                took,
                ..
            } => tracing::info!(
                %node, index = snapshot.index.0, bytes = snapshot.size_bytes,
                compacted_through = compacted_through.0,
                loop_held_us = loop_held.as_micros() as u64, took_ms = took.as_millis() as u64,
                "snapshot taken"
            ),
            Event::SnapshotInstalled { snapshot, .. } => tracing::info!(
                %node, index = snapshot.index.0, bytes = snapshot.size_bytes,
                "snapshot installed"
            ),
            Event::SnapshotRefused { snapshot, reason } => tracing::warn!(
                %node, index = snapshot.index.0, reason, "received snapshot refused"
            ),
            _ => {}
        }
    }
}

impl LogObserver {
    fn status(&self, node: NodeId, status: &Status) {
        let now = (status.role, status.term.0, status.leader);
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if *last == Some(now) {
            return;
        }
        let first = last.is_none();
        *last = Some(now);
        drop(last);
        let role = raftchat_node::cluster_status::role_name(status.role);
        let leader = status.leader.map(|l| l.0);
        if first {
            tracing::info!(
                %node, role, term = status.term.0, ?leader,
                last_index = status.last_index.0, commit_index = status.commit_index.0,
                "running"
            );
        } else {
            tracing::info!(%node, role, term = status.term.0, ?leader, "status changed");
        }
    }
}
