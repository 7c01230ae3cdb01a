//! The benchmark: C concurrent clients, each with its own session, each running one operation
//! at a time in a loop for the warmup and then the measured duration. Only operations that
//! complete inside the measured window count; latency is from invocation to acknowledgement,
//! retries included. Percentiles come from the sorted latencies (nearest rank).
//!
//! By default every operation is a send_message. With `--reads PCT`, that share of each
//! client's operations are reads instead, as a chat client polling its inbox does: a
//! fetch_messages of the client's own account from the first message it has not seen yet
//! (NO_ELEMENT, nothing new, is an answer like SUCCESS). Reads go where `--read-mode` (or the
//! cluster file's `[client] reads`) says; `--compare-read-modes` runs the same load once per
//! mode (leader, any, log) and prints one table. Throughput and latency are reported for all
//! operations and for reads and writes apart.
//!
//! Every run also reads each node's log size (`log_bytes` of its status) before and after the
//! load, and reports the growth per acknowledged write: reads served without the log add
//! nothing to it (and so cost no fsync), while reads through the log (`log` mode) do.
//!
//! `--kill-leader-after SECS` measures failover: it SIGKILLs the leader (its pid from the
//! `ID.pid` file beside the cluster file, as `raftchat cluster up` writes them) that many
//! seconds into the measured window, and reports the time from the kill to the next
//! acknowledged write, and the longest pause between two acknowledgements.
//! `--stop-leader-after SECS` does the same with SIGTERM: a planned restart, in which the
//! leader hands its leadership to another voter before it exits.
//!
//! `--monitor SECS` samples every node's resident memory and data directory size (from the same
//! pid files, and the `ID/` data directories beside them) at that interval while the load
//! runs, printing each sample to stderr and listing them with the results, so a long run shows
//! whether memory and disk stay flat.
//!
//! Every run reports the CPU the measured window cost, from `/proc`: the servers' (whose pid
//! files are in `--pid-dir`) in microseconds per operation, user and system apart, the
//! benchmark's own, and the share of the whole machine that was busy.
//!
//! Exit codes: 0 the benchmark ran; 1 the cluster could not be reached, no operation was
//! acknowledged, or the leader could not be killed; 2 usage or input error.

use crate::process;
use clap::Parser;
use raftchat::chat::{Operation, Status};
use raftchat::limits::MESSAGE_CHARS_MAX;
use raftchat::raft::RoleKind;
use raftchat::types::NodeId;
use raftchat_node::client::{Client, ClientConfig, ClientError, Completed, ReadMode, SharedLinks};
use raftchat_node::cluster_file::{self, ClusterFile};
use raftchat_node::cluster_status::ClusterStatus;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::monitor::{self, CpuUse, Sample};

/// Most concurrent clients.
const CLIENTS_MAX: usize = 4096;
/// Most accounts the load spreads over.
const ACCOUNTS_MAX: usize = 1024;
/// How long `--kill-leader-after` looks for the leader.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// How long the log sizes before and after a run wait for the followers to catch up.
const SETTLE_WAIT: Duration = Duration::from_secs(2);
/// Longest run, in seconds (warmup included).
const DURATION_SECS_MAX: f64 = 24.0 * 3600.0;

/// send_message load, or sends mixed with inbox polls, against a raftchat cluster.
#[derive(Parser, Debug)]
#[command(
    name = "raftchat-bench",
    version,
    about = "Measures the throughput and latency (p50, p99, max) of a running cluster under \
             send_message load, or a mix of sends and inbox polls (fetch_messages).",
    after_help = "Example:\n  raftchat cluster up --nodes 3 --dir /tmp/rc\n  \
                  raftchat-bench --cluster /tmp/rc/cluster.toml --clients 8 --duration 10\n  \
                  raftchat-bench --cluster /tmp/rc/cluster.toml --clients 8 --duration 10 \
                  --kill-leader-after 3\n  \
                  raftchat-bench --cluster /tmp/rc/cluster.toml --clients 8 --duration 10 \
                  --reads 90 --read-mode any\n  \
                  raftchat-bench --cluster /tmp/rc/cluster.toml --clients 8 --duration 10 \
                  --reads 90 --compare-read-modes\n\n\
                  Exit codes: 0 the benchmark ran; 1 the cluster was unreachable, nothing was \
                  acknowledged, or the leader could not be killed; 2 usage or input error."
)]
struct Args {
    /// The cluster file.
    #[arg(long, value_name = "CLUSTER.toml")]
    cluster: PathBuf,
    /// Concurrent clients, each with one operation in flight.
    #[arg(long, value_name = "C")]
    clients: usize,
    /// Let the clients share connections: N sets of one connection per node, the clients
    /// spread evenly over them, each connection carrying all its clients' operations at once
    /// (as etcd's benchmark spreads its clients over --conns) [default: every client has
    /// connections of its own].
    #[arg(long, value_name = "N")]
    shared_connections: Option<usize>,
    /// Measured seconds (after the warmup).
    #[arg(long, value_name = "SECS")]
    duration: f64,
    /// Seconds of load before measuring (sessions open, connections warm up).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    warmup: f64,
    /// Accounts the messages travel between [default: clients, at least 2, at most 1024].
    #[arg(long, value_name = "N")]
    accounts: Option<usize>,
    /// Characters per message (1 to 500).
    #[arg(long, value_name = "CHARS", default_value_t = 64)]
    message_chars: usize,
    /// SIGKILL the leader this many seconds into the measured window, and report how long
    /// until the next acknowledged write. Needs the leader's pid file (see --pid-dir).
    #[arg(long, value_name = "SECS", conflicts_with = "stop_leader_after")]
    kill_leader_after: Option<f64>,
    /// Like --kill-leader-after with SIGTERM: the leader hands its leadership over and exits
    /// (a planned restart).
    #[arg(long, value_name = "SECS")]
    stop_leader_after: Option<f64>,
    /// Where the servers' ID.pid files (and ID/ data directories) are [default: the cluster
    /// file's directory].
    #[arg(long, value_name = "DIR")]
    pid_dir: Option<PathBuf>,
    /// Sample each node's resident memory and data directory size every SECS seconds.
    #[arg(long, value_name = "SECS")]
    monitor: Option<f64>,
    /// Percentage of operations that are reads (0 to 100): each client polls its own inbox
    /// (fetch_messages from the first message it has not seen) instead of sending.
    #[arg(long, value_name = "PCT", default_value = "0")]
    reads: String,
    /// Where reads go: leader, any or log [default: the cluster file's `[client] reads`].
    #[arg(long, value_name = "MODE")]
    read_mode: Option<String>,
    /// Run the same load once per read mode (leader, any, log), one after the other, and print
    /// one table. Needs --reads above 0.
    #[arg(long)]
    compare_read_modes: bool,
    /// Print the results as one JSON object (with --compare-read-modes, a JSON array of them).
    #[arg(long)]
    json: bool,
}

/// Why the benchmark stopped early: the exit code and one line.
struct Failure {
    code: u8,
    message: String,
}

fn input(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

fn cluster(message: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        message: message.into(),
    }
}

/// Runs the benchmark and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("raftchat-bench: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// The validated plan of a run.
struct Plan {
    file: ClusterFile,
    clients: usize,
    /// Sets of shared connections the clients are spread over; none: their own.
    shared_connections: Option<usize>,
    accounts: usize,
    warmup: Duration,
    duration: Duration,
    message_chars: usize,
    kill_leader_after: Option<Duration>,
    /// The signal `kill_leader_after` sends: KILL, or TERM for a planned restart.
    leader_signal: &'static str,
    pid_dir: PathBuf,
    monitor: Option<Duration>,
    /// Percentage of operations that are reads.
    read_percent: u32,
    /// The read modes to run the load with, in order: one, or every mode to compare them.
    read_modes: Vec<ReadMode>,
}

fn seconds(flag: &str, value: f64, min: f64) -> Result<Duration, Failure> {
    if !value.is_finite() || value < min || value > DURATION_SECS_MAX {
        return Err(input(format!(
            "{flag} {value}: must be between {min} and {DURATION_SECS_MAX}"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

fn plan(args: &Args) -> Result<Plan, Failure> {
    let file = ClusterFile::load(&args.cluster).map_err(|e| input(e.to_string()))?;
    if args.clients == 0 || args.clients > CLIENTS_MAX {
        return Err(input(format!(
            "--clients {}: must be between 1 and {CLIENTS_MAX}",
            args.clients
        )));
    }
    if let Some(n) = args
        .shared_connections
        .filter(|&n| n == 0 || n > args.clients)
    {
        return Err(input(format!(
            "--shared-connections {n}: must be between 1 and --clients ({})",
            args.clients
        )));
    }
    let accounts = args.accounts.unwrap_or(args.clients.clamp(2, ACCOUNTS_MAX));
    if !(1..=ACCOUNTS_MAX).contains(&accounts) {
        return Err(input(format!(
            "--accounts {accounts}: must be between 1 and {ACCOUNTS_MAX}"
        )));
    }
    if !(1..=MESSAGE_CHARS_MAX).contains(&args.message_chars) {
        return Err(input(format!(
            "--message-chars {}: must be between 1 and {MESSAGE_CHARS_MAX}",
            args.message_chars
        )));
    }
    let duration = seconds("--duration", args.duration, 0.001)?;
    let warmup = seconds("--warmup", args.warmup, 0.0)?;
    let (kill_leader_after, leader_signal) = match (args.kill_leader_after, args.stop_leader_after)
    {
        (Some(secs), _) => (Some(seconds("--kill-leader-after", secs, 0.0)?), "KILL"),
        (None, Some(secs)) => (Some(seconds("--stop-leader-after", secs, 0.0)?), "TERM"),
        (None, None) => (None, "KILL"),
    };
    if kill_leader_after.is_some_and(|after| after >= duration) {
        return Err(input("--kill-leader-after must be shorter than --duration"));
    }
    let monitor = match args.monitor {
        Some(secs) => Some(seconds("--monitor", secs, 0.1)?),
        None => None,
    };
    let pid_dir = match &args.pid_dir {
        Some(dir) => dir.clone(),
        None => args.cluster.parent().map(PathBuf::from).unwrap_or_default(),
    };
    let read_percent = read_percent(&args.reads)?;
    let read_modes = read_modes(args, &file, read_percent)?;
    if read_modes.len() > 1 && (kill_leader_after.is_some() || monitor.is_some()) {
        return Err(input(
            "--compare-read-modes cannot be combined with --kill-leader-after or --monitor",
        ));
    }
    Ok(Plan {
        file,
        clients: args.clients,
        shared_connections: args.shared_connections,
        accounts,
        warmup,
        duration,
        message_chars: args.message_chars,
        kill_leader_after,
        leader_signal,
        pid_dir,
        monitor,
        read_percent,
        read_modes,
    })
}

fn read_percent(text: &str) -> Result<u32, Failure> {
    match text.trim().parse::<u32>() {
        Ok(percent) if percent <= 100 => Ok(percent),
        _ => Err(input(format!(
            "--reads {text:?}: must be a whole percentage between 0 and 100"
        ))),
    }
}

fn read_modes(
    args: &Args,
    file: &ClusterFile,
    read_percent: u32,
) -> Result<Vec<ReadMode>, Failure> {
    let mode = match &args.read_mode {
        Some(name) => ReadMode::from_name(name).ok_or_else(|| {
            input(format!(
                "--read-mode {name:?}: must be {}",
                cluster_file::read_mode_names()
            ))
        })?,
        None => file.client.reads,
    };
    if !args.compare_read_modes {
        return Ok(vec![mode]);
    }
    if args.read_mode.is_some() {
        return Err(input(
            "--compare-read-modes runs every read mode; leave out --read-mode",
        ));
    }
    if read_percent == 0 {
        return Err(input(
            "--compare-read-modes needs reads to compare: give --reads 1 to 100",
        ));
    }
    Ok(ReadMode::NAMES.iter().map(|&(_, mode)| mode).collect())
}

fn run(args: &Args) -> Result<(), Failure> {
    let plan = plan(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| cluster(format!("cannot start the async runtime: {e}")))?;
    let mut reports = Vec::new();
    for &mode in &plan.read_modes {
        if plan.read_modes.len() > 1 {
            eprintln!("raftchat-bench: running with reads from {}", mode.name());
        }
        let results = runtime.block_on(load(&plan, mode))?;
        reports.push(Report::new(&plan, mode, results));
    }
    match (&reports[..], args.json) {
        ([report], true) => out!("{}", report.json()),
        ([report], false) => report.print(),
        (_, true) => out!(
            "{}",
            serde_json::Value::from_iter(reports.iter().map(Report::json))
        ),
        (_, false) => print_comparison(&plan, &reports),
    }
    if let Some(report) = reports.iter().find(|r| r.all.0.is_empty()) {
        return Err(cluster(format!(
            "no operation was acknowledged in the measured window (reads from {})",
            report.read_mode.name()
        )));
    }
    Ok(())
}

fn account(index: usize) -> String {
    format!("bench-{index}")
}

/// What kind of operation a client ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A fetch_messages of the client's own inbox.
    Read,
    /// A send_message.
    Write,
}

/// What one client saw in the measured window.
#[derive(Default)]
struct ClientResults {
    /// (completion time, latency, answering node, kind) of every acknowledged operation.
    acks: Vec<(Instant, Duration, NodeId, Kind)>,
    failed: u64,
    unknown: u64,
    unexpected_status: u64,
}

/// Operations answered, warmup and the moments past the window included: everything that could
/// have reached the log while it was measured.
#[derive(Default)]
struct Answered {
    /// Writes acknowledged with SUCCESS (the monitor shows these).
    writes: AtomicU64,
    /// Reads answered.
    reads: AtomicU64,
}

/// What the whole run saw.
struct RunResults {
    clients: Vec<ClientResults>,
    measure_start: Instant,
    measure_end: Instant,
    kill: Option<(NodeId, Instant)>,
    samples: Vec<Sample>,
    /// Each node's log size before and after the load, where it answered both times.
    log_bytes: BTreeMap<NodeId, (u64, u64)>,
    answered: Arc<Answered>,
    /// The CPU the measured window cost.
    cpu: CpuUse,
}

async fn load(plan: &Plan, read_mode: ReadMode) -> Result<RunResults, Failure> {
    let base_seed = seed();
    create_accounts(plan, plan.file.client_config(base_seed)).await?;
    let log_before = log_bytes(plan).await;
    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let end = measure_start + plan.duration;
    let answered = Arc::new(Answered::default());
    let mut tasks = Vec::new();
    let links: Vec<SharedLinks> = (0..plan.shared_connections.unwrap_or(0))
        .map(|_| SharedLinks::new())
        .collect();
    for index in 0..plan.clients {
        let mut config = plan
            .file
            .client_config(base_seed.wrapping_add(index as u64 + 1));
        config.reads = read_mode;
        let work = ClientWork {
            index,
            accounts: plan.accounts,
            message_chars: plan.message_chars,
            read_percent: plan.read_percent,
            measure_start,
            end,
            answered: answered.clone(),
        };
        let client = match links.get(index % links.len().max(1)) {
            Some(links) => Client::sharing(config, links.clone()),
            None => Client::new(config),
        };
        tasks.push(tokio::spawn(run_client(client, work)));
    }
    let ids: Vec<u64> = plan.file.members.keys().map(|id| id.0).collect();
    let cpu_window = tokio::spawn(measure_cpu(plan.pid_dir.clone(), ids, measure_start, end));
    let sampler = plan.monitor.map(|interval| {
        let ids: Vec<u64> = plan.file.members.keys().map(|id| id.0).collect();
        let dir = plan.pid_dir.clone();
        tokio::spawn(run_monitor(
            dir,
            ids,
            interval,
            start,
            end,
            answered.clone(),
        ))
    });
    let kill = match plan.kill_leader_after {
        Some(after) => {
            tokio::time::sleep_until(measure_start + after).await;
            Some(kill_leader(plan).await?)
        }
        None => None,
    };
    let mut clients = Vec::new();
    for task in tasks {
        let results = task
            .await
            .map_err(|e| cluster(format!("a client task failed: {e}")))?;
        clients.push(results);
    }
    let samples = match sampler {
        Some(task) => task
            .await
            .map_err(|e| cluster(format!("the monitor failed: {e}")))?,
        None => Vec::new(),
    };
    let cpu = cpu_window
        .await
        .map_err(|e| cluster(format!("the CPU reading failed: {e}")))?;
    let log_after = log_bytes(plan).await;
    let log_bytes = log_before
        .iter()
        .filter_map(|(id, &before)| log_after.get(id).map(|&after| (*id, (before, after))))
        .collect();
    Ok(RunResults {
        clients,
        measure_start,
        measure_end: end,
        kill,
        samples,
        log_bytes,
        answered,
        cpu,
    })
}

/// Reads the CPU times at the measured window's start and end.
async fn measure_cpu(dir: PathBuf, ids: Vec<u64>, start: Instant, end: Instant) -> CpuUse {
    tokio::time::sleep_until(start).await;
    let before = monitor::cpu_times(&dir, &ids);
    tokio::time::sleep_until(end).await;
    let after = monitor::cpu_times(&dir, &ids);
    CpuUse::between(&before, &after)
}

/// The log size of every node that answers, from its status, once every member has applied
/// the same state (so no append is on its way to a follower), or after `SETTLE_WAIT` (a node is
/// down, or load from elsewhere goes on).
async fn log_bytes(plan: &Plan) -> BTreeMap<NodeId, u64> {
    let config = plan.file.client_config(seed());
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let status = ClusterStatus::poll(&config).await;
        if status.converged() || Instant::now() >= deadline {
            return status
                .reachable()
                .map(|s| (s.raft.id, s.log_bytes))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Samples the nodes every `interval` until `end`, printing each sample to stderr.
async fn run_monitor(
    dir: PathBuf,
    ids: Vec<u64>,
    interval: Duration,
    start: Instant,
    end: Instant,
    answered: Arc<Answered>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut next = start;
    while next <= end {
        tokio::time::sleep_until(next).await;
        let count = answered.writes.load(Ordering::Relaxed);
        let sample = monitor::sample(&dir, &ids, start.elapsed(), count);
        eprintln!("{}", sample.line());
        samples.push(sample);
        next += interval;
    }
    samples
}

/// Creates the accounts the load uses; ones left by an earlier run are fine.
async fn create_accounts(plan: &Plan, config: ClientConfig) -> Result<(), Failure> {
    let mut client = Client::new(config);
    for index in 0..plan.accounts {
        let operation = Operation::CreateAccount {
            username: account(index),
        };
        match client.execute(operation).await {
            Ok(done) if matches!(done.reply.status, Status::Success | Status::GeneralError) => {}
            Ok(done) => {
                return Err(cluster(format!(
                    "creating account {}: {}",
                    account(index),
                    done.reply.status
                )))
            }
            Err(error) => {
                return Err(cluster(format!(
                    "cannot set up the accounts ({error}); is the cluster in {} running?",
                    plan.file.path.display()
                )))
            }
        }
    }
    Ok(())
}

/// One client's share of the load.
struct ClientWork {
    index: usize,
    accounts: usize,
    message_chars: usize,
    read_percent: u32,
    measure_start: Instant,
    end: Instant,
    /// Every client's answered operations, warmup included.
    answered: Arc<Answered>,
}

impl ClientWork {
    /// Whether operation `sequence` (from 1) is a read: exactly `read_percent` of every 100
    /// consecutive ones are, spread evenly, and each client starts at its own phase.
    fn is_read(&self, sequence: usize) -> bool {
        let percent = self.read_percent as usize;
        let step = sequence + self.index * 37;
        step * percent / 100 != (step - 1) * percent / 100
    }

    /// The account whose inbox this client polls.
    fn own_account(&self) -> String {
        account(self.index % self.accounts)
    }

    fn send(&self, sequence: usize) -> Operation {
        let from = (self.index + sequence) % self.accounts;
        let to = (from + 1) % self.accounts;
        let mut message = format!("c{}-{sequence} ", self.index);
        while message.len() < self.message_chars {
            message.push('x');
        }
        message.truncate(self.message_chars);
        Operation::SendMessage {
            from: account(from),
            to: account(to),
            message,
        }
    }
}

async fn run_client(mut client: Client, work: ClientWork) -> ClientResults {
    let mut results = ClientResults::default();
    let mut sequence = 0usize;
    // The id of the first message of the inbox this client has not seen.
    let mut unseen_id = 1u64;
    while Instant::now() < work.end {
        sequence += 1;
        let kind = if work.is_read(sequence) {
            Kind::Read
        } else {
            Kind::Write
        };
        let operation = match kind {
            Kind::Read => Operation::FetchMessages {
                username: work.own_account(),
                first_message_id: unseen_id,
            },
            Kind::Write => work.send(sequence),
        };
        let began = Instant::now();
        let result = client.execute(operation).await;
        let done = Instant::now();
        let acknowledged = result.as_ref().is_ok_and(|c| is_acknowledged(c, kind));
        match kind {
            Kind::Write if acknowledged => work.answered.writes.fetch_add(1, Ordering::Relaxed),
            Kind::Read if result.is_ok() => work.answered.reads.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        if let Ok(completed) = &result {
            if completed.reply.status == Status::Success {
                let seen = completed.reply.messages.len() as u64;
                unseen_id = unseen_id.max(completed.reply.first_message_id + seen);
            }
        }
        if done < work.measure_start {
            continue;
        }
        if done > work.end {
            break;
        }
        match result {
            Ok(completed) if acknowledged => {
                results
                    .acks
                    .push((done, done - began, completed.node, kind));
            }
            Ok(_) => results.unexpected_status += 1,
            Err(ClientError::Failed(_) | ClientError::AuthFailed(_)) => results.failed += 1,
            Err(ClientError::Unknown(_)) => results.unknown += 1,
        }
    }
    results
}

/// Whether an answer is the one the load expects: SUCCESS, or for a poll also NO_ELEMENT
/// (nothing new since the last one).
fn is_acknowledged(completed: &Completed, kind: Kind) -> bool {
    matches!(
        (kind, completed.reply.status),
        (_, Status::Success) | (Kind::Read, Status::NoElement)
    )
}

/// Finds the leader, SIGKILLs it through its pid file, and returns it with the kill's time.
async fn kill_leader(plan: &Plan) -> Result<(NodeId, Instant), Failure> {
    let mut config = plan.file.client_config(seed());
    config.attempt_timeout = Duration::from_millis(500);
    // Only a node that itself answers as leader will do: a follower's idea of the leader may
    // be stale, and killing a follower measures nothing.
    let deadline = Instant::now() + LEADER_WAIT;
    let leader = loop {
        let status = ClusterStatus::poll(&config).await;
        let leading = status.leader().filter(|&id| {
            status
                .reachable()
                .any(|s| s.raft.id == id && s.raft.role == RoleKind::Leader)
        });
        if let Some(leader) = leading {
            break leader;
        }
        if Instant::now() >= deadline {
            return Err(cluster(format!(
                "--kill-leader-after: no node answered as leader within {LEADER_WAIT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pid_path = plan.pid_dir.join(format!("{}.pid", leader.0));
    let pid = process::read_pid_file(&pid_path).map_err(|e| {
        cluster(format!(
            "--kill-leader-after: {e} (use a cluster from `raftchat cluster up`, or --pid-dir)"
        ))
    })?;
    if !process::is_running(pid) || !process::is_server(pid) {
        return Err(cluster(format!(
            "--kill-leader-after: pid {pid} from {} is not a running raftchat server",
            pid_path.display()
        )));
    }
    // Timed from just before `kill` runs, so the figure includes starting the command.
    let killed_at = Instant::now();
    match process::signal(pid, plan.leader_signal) {
        Ok(true) => Ok((leader, killed_at)),
        Ok(false) => Err(cluster(format!(
            "cannot SIG{} pid {pid}",
            plan.leader_signal
        ))),
        Err(error) => Err(cluster(format!("cannot run `kill`: {error}"))),
    }
}

/// Latencies of one kind of operation, sorted.
#[derive(Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn new(mut latencies: Vec<Duration>) -> Latencies {
        latencies.sort_unstable();
        Latencies(latencies)
    }

    /// The latency at quantile `q`, in milliseconds.
    fn percentile_ms(&self, q: f64) -> f64 {
        millis(percentile(&self.0, q))
    }

    fn ops_per_second(&self, duration: Duration) -> f64 {
        self.0.len() as f64 / duration.as_secs_f64()
    }

    /// `p50 A ms, p99 B ms, max C ms`.
    fn summary(&self) -> String {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            self.percentile_ms(1.0)
        )
    }

    fn json(&self, duration: Duration) -> serde_json::Value {
        json!({
            "ops": self.0.len(),
            "ops_per_s": self.ops_per_second(duration),
            "latency_ms": {
                "p50": self.percentile_ms(0.50),
                "p99": self.percentile_ms(0.99),
                "max": self.percentile_ms(1.0),
            },
        })
    }
}

/// How much the logs grew during a run, against what was answered.
struct LogGrowth {
    /// Each node's log size before and after.
    nodes: BTreeMap<NodeId, (u64, u64)>,
    /// Writes acknowledged and reads answered during the run, warmup included.
    writes: u64,
    reads: u64,
}

impl LogGrowth {
    /// The largest growth of any node's log, in bytes; negative if compaction shrank them all.
    fn bytes(&self) -> Option<i64> {
        self.nodes
            .values()
            .map(|&(before, after)| after as i64 - before as i64)
            .max()
    }

    fn bytes_per_write(&self) -> Option<f64> {
        let bytes = self.bytes()?;
        (self.writes > 0).then(|| bytes as f64 / self.writes as f64)
    }

    fn line(&self) -> String {
        let Some(bytes) = self.bytes() else {
            return "no node answered for its log size before and after".into();
        };
        let per_write = self
            .bytes_per_write()
            .map_or(String::new(), |b| format!(": {b:.1} bytes per write"));
        let shrunk = if bytes < 0 {
            " (compacted during the run)"
        } else {
            ""
        };
        format!(
            "{bytes:+} bytes in the largest log{shrunk}, for {} writes and {} reads \
             answered{per_write}",
            self.writes, self.reads
        )
    }

    fn json(&self) -> serde_json::Value {
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|(id, (before, after))| json!({"id": id.0, "before": before, "after": after}))
            .collect();
        json!({
            "growth_bytes": self.bytes(),
            "writes": self.writes,
            "reads": self.reads,
            "bytes_per_write": self.bytes_per_write(),
            "nodes": nodes,
        })
    }
}

/// The figures of a finished run.
struct Report {
    clients: usize,
    shared_connections: Option<usize>,
    duration: Duration,
    warmup: Duration,
    read_percent: u32,
    read_mode: ReadMode,
    all: Latencies,
    reads: Latencies,
    writes: Latencies,
    failed: u64,
    unknown: u64,
    unexpected_status: u64,
    longest_gap: Duration,
    /// The killed leader, when it was killed (from the measured window's start), and how long
    /// until the next acknowledged write.
    failover: Option<(NodeId, Duration, Option<Duration>)>,
    /// The monitor's samples, in time order.
    samples: Vec<Sample>,
    log: LogGrowth,
    cpu: CpuUse,
}

impl Report {
    fn new(plan: &Plan, read_mode: ReadMode, results: RunResults) -> Report {
        let mut completions: Vec<(Instant, NodeId, Kind)> = Vec::new();
        let (mut all, mut reads, mut writes) = (Vec::new(), Vec::new(), Vec::new());
        let (mut failed, mut unknown, mut unexpected_status) = (0, 0, 0);
        for client in results.clients {
            failed += client.failed;
            unknown += client.unknown;
            unexpected_status += client.unexpected_status;
            for (done, latency, node, kind) in client.acks {
                completions.push((done, node, kind));
                all.push(latency);
                match kind {
                    Kind::Read => reads.push(latency),
                    Kind::Write => writes.push(latency),
                }
            }
        }
        completions.sort_unstable_by_key(|&(done, _, _)| done);
        let mut longest_gap = Duration::ZERO;
        let mut previous = results.measure_start;
        for &(done, _, _) in &completions {
            longest_gap = longest_gap.max(done - previous);
            previous = done;
        }
        longest_gap = longest_gap.max(results.measure_end.saturating_duration_since(previous));
        let failover = results.kill.map(|(leader, killed_at)| {
            // Acknowledgements the killed leader sent just before it died may arrive after the
            // kill; only another node's acknowledgement of a write shows that the cluster
            // recovered (a follower may serve reads from its state a while longer).
            let next = completions.iter().find(|&&(done, node, kind)| {
                done > killed_at && node != leader && kind == Kind::Write
            });
            let killed_after = killed_at - results.measure_start;
            (
                leader,
                killed_after,
                next.map(|&(done, _, _)| done - killed_at),
            )
        });
        Report {
            clients: plan.clients,
            shared_connections: plan.shared_connections,
            duration: plan.duration,
            warmup: plan.warmup,
            read_percent: plan.read_percent,
            read_mode,
            all: Latencies::new(all),
            reads: Latencies::new(reads),
            writes: Latencies::new(writes),
            failed,
            unknown,
            unexpected_status,
            longest_gap,
            failover,
            samples: results.samples,
            cpu: results.cpu,
            log: LogGrowth {
                nodes: results.log_bytes,
                writes: results.answered.writes.load(Ordering::Relaxed),
                reads: results.answered.reads.load(Ordering::Relaxed),
            },
        }
    }

    fn errors(&self) -> u64 {
        self.failed + self.unknown + self.unexpected_status
    }

    /// What the load was, for headings.
    fn workload(&self) -> String {
        if self.read_percent == 0 {
            return "send_message".into();
        }
        format!(
            "{}% fetch_messages (reads from {}), {}% send_message",
            self.read_percent,
            self.read_mode.name(),
            100 - self.read_percent
        )
    }

    fn print(&self) {
        let sharing = match self.shared_connections {
            Some(n) => format!(" over {n} shared connection(s) per node"),
            None => String::new(),
        };
        out!(
            "{}: {} clients{sharing}, {:.1} s measured after {:.1} s warmup",
            self.workload(),
            self.clients,
            self.duration.as_secs_f64(),
            self.warmup.as_secs_f64()
        );
        out!(
            "  throughput  {} acknowledged, {:.1} ops/s",
            self.all.0.len(),
            self.all.ops_per_second(self.duration)
        );
        out!("  latency     {}", self.all.summary());
        if self.read_percent > 0 {
            for (name, latencies) in [("reads", &self.reads), ("writes", &self.writes)] {
                let summary = if latencies.0.is_empty() {
                    String::new()
                } else {
                    format!("; {}", latencies.summary())
                };
                out!(
                    "  {name:<11} {} acknowledged, {:.1} ops/s{summary}",
                    latencies.0.len(),
                    latencies.ops_per_second(self.duration),
                );
            }
        }
        out!(
            "  errors      {} ({} not applied, {} unknown, {} unexpected status)",
            self.errors(),
            self.failed,
            self.unknown,
            self.unexpected_status
        );
        out!(
            "  longest gap {:.1} ms between acknowledgements",
            millis(self.longest_gap)
        );
        out!("  log         {}", self.log.line());
        out!("  cpu         {}", self.cpu.line(self.all.0.len()));
        if let Some((leader, at, next)) = self.failover {
            let next = next.map_or("never came".into(), |d| {
                format!("{:.1} ms later", millis(d))
            });
            out!(
                "  failover    leader {} SIGKILLed at {:.2} s; next acknowledged write {next}",
                leader.0,
                at.as_secs_f64()
            );
        }
        for sample in &self.samples {
            out!("  {}", sample.line());
        }
    }

    fn json(&self) -> serde_json::Value {
        let failover = self.failover.map(|(leader, at, next)| {
            json!({
                "killed_node": leader.0,
                "killed_at_s": at.as_secs_f64(),
                "next_ack_ms": next.map(millis),
            })
        });
        json!({
            "clients": self.clients,
            "shared_connections": self.shared_connections,
            "duration_s": self.duration.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "read_percent": self.read_percent,
            "read_mode": self.read_mode.name(),
            "ops": self.all.0.len(),
            "ops_per_s": self.all.ops_per_second(self.duration),
            "latency_ms": {
                "p50": self.all.percentile_ms(0.50),
                "p99": self.all.percentile_ms(0.99),
                "max": self.all.percentile_ms(1.0),
            },
            "reads": self.reads.json(self.duration),
            "writes": self.writes.json(self.duration),
            "errors": self.errors(),
            "error_kinds": {
                "not_applied": self.failed,
                "unknown": self.unknown,
                "unexpected_status": self.unexpected_status,
            },
            "longest_gap_ms": millis(self.longest_gap),
            "cpu": self.cpu.json(self.all.0.len()),
            "log": self.log.json(),
            "failover": failover,
            "monitor": self.samples.iter().map(Sample::json).collect::<Vec<_>>(),
        })
    }

    /// One row of the comparison table.
    fn row(&self) -> String {
        let group = |latencies: &Latencies| {
            format!(
                "{:>8.0} {:>7.2} {:>7.2} {:>8.2}",
                latencies.ops_per_second(self.duration),
                latencies.percentile_ms(0.50),
                latencies.percentile_ms(0.99),
                latencies.percentile_ms(1.0)
            )
        };
        let per_write = self
            .log
            .bytes_per_write()
            .map_or("-".into(), |b| format!("{b:.0}"));
        format!(
            "{:<6} | {} | {} | {} | {per_write:>11} {:>6}",
            self.read_mode.name(),
            group(&self.all),
            group(&self.reads),
            group(&self.writes),
            self.errors()
        )
    }
}

/// The runs of `--compare-read-modes`, one row each.
fn print_comparison(plan: &Plan, reports: &[Report]) {
    out!(
        "{}% fetch_messages, {}% send_message: {} clients, {:.1} s measured after {:.1} s \
         warmup, per read mode",
        plan.read_percent,
        100 - plan.read_percent,
        plan.clients,
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64()
    );
    let group = |name: &str| format!("{name:<8} {:>7} {:>7} {:>8}", "p50 ms", "p99 ms", "max ms");
    out!(
        "{:<6} | {} | {} | {} | {:>11} {:>6}",
        "reads",
        group("all/s"),
        group("reads/s"),
        group("writes/s"),
        "log B/write",
        "errors"
    );
    for report in reports {
        out!("{}", report.row());
    }
}

/// The nearest-rank `q` quantile of `sorted` (zero if empty): the smallest value with at
/// least a fraction `q` of the values at or below it.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A seed for retry jitter that differs from run to run.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms = |n: u64| Duration::from_millis(n);
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 0.50), ms(50));
        assert_eq!(percentile(&sorted, 0.99), ms(99));
        assert_eq!(percentile(&sorted, 1.0), ms(100));
        assert_eq!(percentile(&sorted, 0.0), ms(1));
        assert_eq!(percentile(&[ms(7)], 0.99), ms(7));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
