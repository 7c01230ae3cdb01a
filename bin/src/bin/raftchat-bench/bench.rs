//! The benchmark: C concurrent clients, each with its own session, each sending one message at
//! a time in a loop for the warmup and then the measured duration. Only operations that
//! complete inside the measured window count; latency is from invocation to acknowledgement,
//! retries included. Percentiles come from the sorted latencies (nearest rank).
//!
//! `--kill-leader-after SECS` measures failover: it SIGKILLs the leader (its pid from the
//! `ID.pid` file beside the cluster file, as `raftchat cluster up` writes them) that many
//! seconds into the measured window, and reports the time from the kill to the next
//! acknowledged write, and the longest pause between two acknowledgements.
//!
//! `--monitor SECS` samples every node's resident memory and data directory size (from the same
//! pid files, and the `ID/` data directories beside them) at that interval while the load
//! runs, printing each sample to stderr and listing them with the results, so a long run shows
//! whether memory and disk stay flat.
//!
//! Exit codes: 0 the benchmark ran; 1 the cluster could not be reached, no operation was
//! acknowledged, or the leader could not be killed; 2 usage or input error.

use crate::process;
use clap::Parser;
use raftchat::chat::{Operation, Status};
use raftchat::limits::MESSAGE_CHARS_MAX;
use raftchat::raft::RoleKind;
use raftchat::types::NodeId;
use raftchat_node::client::{Client, ClientConfig, ClientError};
use raftchat_node::cluster_file::ClusterFile;
use raftchat_node::cluster_status::ClusterStatus;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::monitor::{self, Sample};

/// Most concurrent clients.
const CLIENTS_MAX: usize = 4096;
/// Most accounts the load spreads over.
const ACCOUNTS_MAX: usize = 1024;
/// How long `--kill-leader-after` looks for the leader.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// Longest run, in seconds (warmup included).
const DURATION_SECS_MAX: f64 = 24.0 * 3600.0;

/// send_message load against a raftchat cluster.
#[derive(Parser, Debug)]
#[command(
    name = "raftchat-bench",
    version,
    about = "Measures send_message throughput and latency (p50, p99, max) of a running cluster.",
    after_help = "Example:\n  raftchat cluster up --nodes 3 --dir /tmp/rc\n  \
                  raftchat-bench --cluster /tmp/rc/cluster.toml --clients 8 --duration 10\n  \
                  raftchat-bench --cluster /tmp/rc/cluster.toml --clients 8 --duration 10 \
                  --kill-leader-after 3\n\n\
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
    #[arg(long, value_name = "SECS")]
    kill_leader_after: Option<f64>,
    /// Where the servers' ID.pid files (and ID/ data directories) are [default: the cluster
    /// file's directory].
    #[arg(long, value_name = "DIR")]
    pid_dir: Option<PathBuf>,
    /// Sample each node's resident memory and data directory size every SECS seconds.
    #[arg(long, value_name = "SECS")]
    monitor: Option<f64>,
    /// Print the results as one JSON object.
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
    accounts: usize,
    warmup: Duration,
    duration: Duration,
    message_chars: usize,
    kill_leader_after: Option<Duration>,
    pid_dir: PathBuf,
    monitor: Option<Duration>,
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
    let kill_leader_after = match args.kill_leader_after {
        Some(secs) => Some(seconds("--kill-leader-after", secs, 0.0)?),
        None => None,
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
    Ok(Plan {
        file,
        clients: args.clients,
        accounts,
        warmup,
        duration,
        message_chars: args.message_chars,
        kill_leader_after,
        pid_dir,
        monitor,
    })
}

fn run(args: &Args) -> Result<(), Failure> {
    let plan = plan(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| cluster(format!("cannot start the async runtime: {e}")))?;
    let results = runtime.block_on(load(&plan))?;
    let report = Report::new(&plan, results);
    if args.json {
        out!("{}", report.json());
    } else {
        report.print();
    }
    if report.latencies.is_empty() {
        return Err(cluster(
            "no operation was acknowledged in the measured window",
        ));
    }
    Ok(())
}

fn account(index: usize) -> String {
    format!("bench-{index}")
}

/// What one client saw in the measured window.
#[derive(Default)]
struct ClientResults {
    /// (completion time, latency, acknowledging node) of every acknowledged SUCCESS.
    acks: Vec<(Instant, Duration, Option<NodeId>)>,
    failed: u64,
    unknown: u64,
    unexpected_status: u64,
}

/// What the whole run saw.
struct RunResults {
    clients: Vec<ClientResults>,
    measure_start: Instant,
    measure_end: Instant,
    kill: Option<(NodeId, Instant)>,
    samples: Vec<Sample>,
}

async fn load(plan: &Plan) -> Result<RunResults, Failure> {
    let base_seed = seed();
    create_accounts(plan, plan.file.client_config(base_seed)).await?;
    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let end = measure_start + plan.duration;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for index in 0..plan.clients {
        let config = plan
            .file
            .client_config(base_seed.wrapping_add(index as u64 + 1));
        let work = ClientWork {
            index,
            accounts: plan.accounts,
            message_chars: plan.message_chars,
            measure_start,
            end,
            acknowledged: acknowledged.clone(),
        };
        tasks.push(tokio::spawn(run_client(Client::new(config), work)));
    }
    let sampler = plan.monitor.map(|interval| {
        let ids: Vec<u64> = plan.file.members.keys().map(|id| id.0).collect();
        let dir = plan.pid_dir.clone();
        tokio::spawn(run_monitor(dir, ids, interval, start, end, acknowledged))
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
    Ok(RunResults {
        clients,
        measure_start,
        measure_end: end,
        kill,
        samples,
    })
}

/// Samples the nodes every `interval` until `end`, printing each sample to stderr.
async fn run_monitor(
    dir: PathBuf,
    ids: Vec<u64>,
    interval: Duration,
    start: Instant,
    end: Instant,
    acknowledged: Arc<AtomicU64>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut next = start;
    while next <= end {
        tokio::time::sleep_until(next).await;
        let count = acknowledged.load(Ordering::Relaxed);
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
    measure_start: Instant,
    end: Instant,
    /// Every client's acknowledged writes, warmup included, for the monitor.
    acknowledged: Arc<AtomicU64>,
}

async fn run_client(mut client: Client, work: ClientWork) -> ClientResults {
    let mut results = ClientResults::default();
    let mut sequence = 0usize;
    while Instant::now() < work.end {
        sequence += 1;
        let from = (work.index + sequence) % work.accounts;
        let to = (from + 1) % work.accounts;
        let mut message = format!("c{}-{sequence} ", work.index);
        while message.len() < work.message_chars {
            message.push('x');
        }
        message.truncate(work.message_chars);
        let operation = Operation::SendMessage {
            from: account(from),
            to: account(to),
            message,
        };
        let began = Instant::now();
        let result = client.execute(operation).await;
        let done = Instant::now();
        if matches!(&result, Ok(completed) if completed.reply.status == Status::Success) {
            work.acknowledged.fetch_add(1, Ordering::Relaxed);
        }
        if done < work.measure_start {
            continue;
        }
        if done > work.end {
            break;
        }
        match result {
            Ok(completed) if completed.reply.status == Status::Success => {
                // The client records the node that answered as the leader.
                results.acks.push((done, done - began, client.leader()));
            }
            Ok(_) => results.unexpected_status += 1,
            Err(ClientError::Failed(_)) => results.failed += 1,
            Err(ClientError::Unknown(_)) => results.unknown += 1,
        }
    }
    results
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
    match process::signal(pid, "KILL") {
        Ok(true) => Ok((leader, killed_at)),
        Ok(false) => Err(cluster(format!("cannot SIGKILL pid {pid}"))),
        Err(error) => Err(cluster(format!("cannot run `kill`: {error}"))),
    }
}

/// The figures of a finished run.
struct Report {
    clients: usize,
    duration: Duration,
    warmup: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    failed: u64,
    unknown: u64,
    unexpected_status: u64,
    longest_gap: Duration,
    /// The killed leader, when it was killed (from the measured window's start), and how long
    /// until the next acknowledged write.
    failover: Option<(NodeId, Duration, Option<Duration>)>,
    /// The monitor's samples, in time order.
    samples: Vec<Sample>,
}

impl Report {
    fn new(plan: &Plan, results: RunResults) -> Report {
        let mut completions: Vec<(Instant, Option<NodeId>)> = Vec::new();
        let mut latencies = Vec::new();
        let (mut failed, mut unknown, mut unexpected_status) = (0, 0, 0);
        for client in results.clients {
            failed += client.failed;
            unknown += client.unknown;
            unexpected_status += client.unexpected_status;
            for (done, latency, node) in client.acks {
                completions.push((done, node));
                latencies.push(latency);
            }
        }
        latencies.sort_unstable();
        completions.sort_unstable_by_key(|&(done, _)| done);
        let mut longest_gap = Duration::ZERO;
        let mut previous = results.measure_start;
        for &(done, _) in &completions {
            longest_gap = longest_gap.max(done - previous);
            previous = done;
        }
        longest_gap = longest_gap.max(results.measure_end.saturating_duration_since(previous));
        let failover = results.kill.map(|(leader, killed_at)| {
            // Acknowledgements the killed leader sent just before it died may arrive after the
            // kill; only another node's acknowledgement shows that the cluster recovered.
            let next = completions
                .iter()
                .find(|&&(done, node)| done > killed_at && node != Some(leader));
            let killed_after = killed_at - results.measure_start;
            (
                leader,
                killed_after,
                next.map(|&(done, _)| done - killed_at),
            )
        });
        Report {
            clients: plan.clients,
            duration: plan.duration,
            warmup: plan.warmup,
            latencies,
            failed,
            unknown,
            unexpected_status,
            longest_gap,
            failover,
            samples: results.samples,
        }
    }

    /// The latency at quantile `q`, in milliseconds.
    fn percentile_ms(&self, q: f64) -> f64 {
        millis(percentile(&self.latencies, q))
    }

    fn ops_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.duration.as_secs_f64()
    }

    fn errors(&self) -> u64 {
        self.failed + self.unknown + self.unexpected_status
    }

    fn print(&self) {
        out!(
            "send_message: {} clients, {:.1} s measured after {:.1} s warmup",
            self.clients,
            self.duration.as_secs_f64(),
            self.warmup.as_secs_f64()
        );
        out!(
            "  throughput  {} acknowledged, {:.1} ops/s",
            self.latencies.len(),
            self.ops_per_second()
        );
        out!(
            "  latency     p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            self.percentile_ms(1.0)
        );
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
            "duration_s": self.duration.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "ops": self.latencies.len(),
            "ops_per_s": self.ops_per_second(),
            "latency_ms": {
                "p50": self.percentile_ms(0.50),
                "p99": self.percentile_ms(0.99),
                "max": self.percentile_ms(1.0),
            },
            "errors": self.errors(),
            "error_kinds": {
                "not_applied": self.failed,
                "unknown": self.unknown,
                "unexpected_status": self.unexpected_status,
            },
            "longest_gap_ms": millis(self.longest_gap),
            "failover": failover,
            "monitor": self.samples.iter().map(Sample::json).collect::<Vec<_>>(),
        })
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
