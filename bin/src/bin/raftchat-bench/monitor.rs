//! Watching the servers while the load runs: every node's resident memory and the size of its
//! data directory, sampled at a fixed interval, so a long run shows whether memory and disk
//! stay flat; and the CPU time the servers, this benchmark and the whole machine spent in the
//! measured window (from `/proc`), so a change is judged on CPU per operation too. The pid files and data directories are the ones `raftchat cluster up` leaves in
//! the cluster's directory (`ID.pid`, `ID/`); a node whose pid file or process is missing is
//! reported without figures, never as an error.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One node at one moment.
#[derive(Clone, Debug)]
pub struct NodeSample {
    /// The node's id.
    pub id: u64,
    /// Resident memory of its process, if it could be read.
    pub rss_bytes: Option<u64>,
    /// Bytes of the files in its data directory, if it could be listed.
    pub disk_bytes: Option<u64>,
}

/// Every node at one moment of the run.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Since the load began (warmup included).
    pub elapsed: Duration,
    /// Writes acknowledged so far.
    pub acknowledged: u64,
    /// One per node, in id order.
    pub nodes: Vec<NodeSample>,
}

/// Samples every node of `ids` whose files are under `dir`.
pub fn sample(dir: &Path, ids: &[u64], elapsed: Duration, acknowledged: u64) -> Sample {
    let nodes = ids
        .iter()
        .map(|&id| NodeSample {
            id,
            rss_bytes: rss_bytes(&dir.join(format!("{id}.pid"))),
            disk_bytes: directory_bytes(&dir.join(id.to_string())),
        })
        .collect();
    Sample {
        elapsed,
        acknowledged,
        nodes,
    }
}

/// The resident memory of the process named by a pid file, from `/proc/PID/status`.
fn rss_bytes(pid_file: &Path) -> Option<u64> {
    let pid = crate::process::read_pid_file(pid_file).ok()?;
    let status = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/status"))).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The total size of the files directly in `dir`.
fn directory_bytes(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    let sizes = entries.filter_map(|entry| entry.ok()?.metadata().ok());
    Some(sizes.filter(|m| m.is_file()).map(|m| m.len()).sum())
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.1}", b as f64 / (1024.0 * 1024.0))
    })
}

impl Sample {
    /// One line: time, writes, and each node's memory and disk in MiB.
    pub fn line(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "n{} rss {} MiB disk {} MiB",
                    n.id,
                    mib(n.rss_bytes),
                    mib(n.disk_bytes)
                )
            })
            .collect();
        format!(
            "monitor {:>7.1} s {:>10} acked | {}",
            self.elapsed.as_secs_f64(),
            self.acknowledged,
            nodes.join(" | ")
        )
    }

    /// The sample as JSON.
    pub fn json(&self) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| json!({ "id": n.id, "rss_bytes": n.rss_bytes, "disk_bytes": n.disk_bytes }))
            .collect();
        json!({
            "elapsed_s": self.elapsed.as_secs_f64(),
            "acknowledged": self.acknowledged,
            "nodes": nodes,
        })
    }
}

/// Kernel clock ticks per second in `/proc`'s CPU times (USER_HZ, 100 on every Linux).
const USER_HZ: f64 = 100.0;

/// CPU times at one moment, in clock ticks.
#[derive(Clone, Debug, Default)]
pub struct CpuTimes {
    /// Each server's user and system time, by node id, where its pid file names a running
    /// process.
    servers: BTreeMap<u64, (u64, u64)>,
    /// This benchmark process's user and system time.
    bench: Option<(u64, u64)>,
    /// The machine's busy and total time, over every core.
    machine: Option<(u64, u64)>,
}

/// The CPU a measured window cost.
#[derive(Clone, Debug)]
pub struct CpuUse {
    /// Servers whose times were read at both ends.
    pub servers: usize,
    /// Their user and system CPU time, summed.
    pub servers_user: Duration,
    /// Their system CPU time, summed.
    pub servers_system: Duration,
    /// This benchmark's CPU time (user and system).
    pub bench: Option<Duration>,
    /// Share of the machine's CPU time (all cores) that was busy, in [0, 1].
    pub machine_busy: Option<f64>,
}

/// Reads the CPU times of the servers of `ids` (pid files under `dir`), of this process and of
/// the machine.
pub fn cpu_times(dir: &Path, ids: &[u64]) -> CpuTimes {
    let servers = ids
        .iter()
        .filter_map(|&id| {
            let pid = crate::process::read_pid_file(&dir.join(format!("{id}.pid"))).ok()?;
            Some((id, process_ticks(&format!("/proc/{pid}/stat"))?))
        })
        .collect();
    CpuTimes {
        servers,
        bench: process_ticks("/proc/self/stat"),
        machine: machine_ticks(),
    }
}

/// User and system ticks of a process, from its `stat` file (fields 14 and 15, counted after
/// the parenthesised command name, which may hold spaces).
fn process_ticks(path: &str) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    // Fields 3 onwards follow the name; utime and stime are the 14th and 15th.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Busy and total ticks of every core together, from `/proc/stat`: idle and iowait are idle.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn ticks(count: u64) -> Duration {
    Duration::from_secs_f64(count as f64 / USER_HZ)
}

impl CpuUse {
    /// What was spent between two readings; servers are counted when read at both (a server
    /// restarted in between is left out: its times began again).
    pub fn between(before: &CpuTimes, after: &CpuTimes) -> CpuUse {
        let pairs: Vec<((u64, u64), (u64, u64))> = before
            .servers
            .iter()
            .filter_map(|(id, &b)| after.servers.get(id).map(|&a| (b, a)))
            .filter(|(b, a)| a.0 >= b.0 && a.1 >= b.1)
            .collect();
        let user: u64 = pairs.iter().map(|(b, a)| a.0 - b.0).sum();
        let system: u64 = pairs.iter().map(|(b, a)| a.1 - b.1).sum();
        let bench = before
            .bench
            .zip(after.bench)
            .map(|(b, a)| ticks((a.0 + a.1).saturating_sub(b.0 + b.1)));
        let machine_busy = before.machine.zip(after.machine).and_then(|(b, a)| {
            let total = a.1.checked_sub(b.1).filter(|&t| t > 0)?;
            Some(a.0.saturating_sub(b.0) as f64 / total as f64)
        });
        CpuUse {
            servers: pairs.len(),
            servers_user: ticks(user),
            servers_system: ticks(system),
            bench,
            machine_busy,
        }
    }

    /// Server CPU per operation, in microseconds.
    pub fn servers_per_op_us(&self, ops: usize) -> Option<f64> {
        let total = self.servers_user + self.servers_system;
        (self.servers > 0 && ops > 0).then(|| total.as_secs_f64() * 1e6 / ops as f64)
    }

    /// One line: servers' CPU per operation (user and system), the benchmark's, and how busy
    /// the machine was.
    pub fn line(&self, ops: usize) -> String {
        let per_op = |d: Duration| d.as_secs_f64() * 1e6 / ops.max(1) as f64;
        let servers = match self.servers_per_op_us(ops) {
            Some(us) => format!(
                "servers {us:.0} µs/op (user {:.0}, system {:.0}; {} servers)",
                per_op(self.servers_user),
                per_op(self.servers_system),
                self.servers
            ),
            None => "servers - (no pid files)".into(),
        };
        let bench = self
            .bench
            .map_or("-".into(), |d| format!("{:.0} µs/op", per_op(d)));
        let busy = self
            .machine_busy
            .map_or("-".into(), |b| format!("{:.0} %", b * 100.0));
        format!("{servers}; bench {bench}; machine busy {busy}")
    }

    /// The figures as JSON.
    pub fn json(&self, ops: usize) -> Value {
        let per_op = |d: Duration| d.as_secs_f64() * 1e6 / ops.max(1) as f64;
        json!({
            "servers": self.servers,
            "servers_us_per_op": self.servers_per_op_us(ops),
            "servers_user_us_per_op": (self.servers > 0).then(|| per_op(self.servers_user)),
            "servers_system_us_per_op": (self.servers > 0).then(|| per_op(self.servers_system)),
            "bench_us_per_op": self.bench.map(per_op),
            "machine_busy": self.machine_busy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_node_is_reported_without_figures() {
        let dir = std::env::temp_dir().join(format!("raftchat-monitor-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("1")).unwrap();
        std::fs::write(dir.join("1").join("a"), vec![0u8; 2048]).unwrap();
        std::fs::write(dir.join("1.pid"), format!("{}\n", std::process::id())).unwrap();
        let sample = sample(&dir, &[1, 2], Duration::from_secs(3), 42);
        assert_eq!(sample.nodes[0].disk_bytes, Some(2048));
        assert!(sample.nodes[0].rss_bytes.is_some_and(|b| b > 0));
        assert_eq!(
            (sample.nodes[1].rss_bytes, sample.nodes[1].disk_bytes),
            (None, None)
        );
        assert!(
            sample.line().contains("n2 rss - MiB disk - MiB"),
            "{}",
            sample.line()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cpu_times_are_read_from_proc() {
        let dir = std::env::temp_dir().join(format!("raftchat-cpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("1.pid"), format!("{}\n", std::process::id())).unwrap();
        let before = cpu_times(&dir, &[1, 2]);
        // Spin for a few clock ticks, so every figure moves.
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let after = cpu_times(&dir, &[1, 2]);
        let used = CpuUse::between(&before, &after);
        // Node 1 is this process; node 2 has no pid file and is left out.
        assert_eq!(used.servers, 1);
        assert!(used.bench.is_some());
        assert!(used.machine_busy.is_some_and(|b| (0.0..=1.0).contains(&b)));
        assert!(used.line(1000).contains("µs/op"), "{}", used.line(1000));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
