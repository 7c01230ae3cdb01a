//! Watching the servers while the load runs: every node's resident memory and the size of its
//! data directory, sampled at a fixed interval, so a long run shows whether memory and disk
//! stay flat. The pid files and data directories are the ones `raftchat cluster up` leaves in
//! the cluster's directory (`ID.pid`, `ID/`); a node whose pid file or process is missing is
//! reported without figures, never as an error.

use serde_json::{json, Value};
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
}
