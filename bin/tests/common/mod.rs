//! Helpers shared by the integration tests that run real server processes: free loopback
//! ports, unique scratch directories, and a guard that owns the servers and kills every one of
//! them when the test ends, passes or fails.
#![allow(dead_code)] // each test file uses its own subset

use raftchat::types::NodeId;
use raftchat_node::client::ClientConfig;
use raftchat_node::cluster_file::{self, ClusterFile, RenderTls};
use raftchat_node::cluster_status::ClusterStatus;
use raftchat_node::tls::Authority;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The server binary Cargo built for these tests.
pub const SERVER: &str = env!("CARGO_BIN_EXE_raftchat-server");
/// The client binary.
pub const CLIENT: &str = env!("CARGO_BIN_EXE_raftchat");
/// The benchmark binary.
pub const BENCH: &str = env!("CARGO_BIN_EXE_raftchat-bench");

/// A directory under the system's temp dir, unique to this process and call.
pub fn scratch_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "raftchat-{name}-{}-{nanos}-{unique}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// `count` loopback addresses whose ports were free a moment ago (the OS picked them).
pub fn free_addresses(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address"))
        .collect()
}

/// Writes a cluster file for `addresses` (ids 1, 2, ...) into `dir` and loads it back.
pub fn write_cluster_file(dir: &Path, addresses: &[SocketAddr]) -> ClusterFile {
    write_cluster_file_with(dir, addresses, &[])
}

/// Like `write_cluster_file`, with each `(key, value)` of `settings` replacing the line that
/// sets that key (for instance `("log_entries", "50")`).
pub fn write_cluster_file_with(
    dir: &Path,
    addresses: &[SocketAddr],
    settings: &[(&str, &str)],
) -> ClusterFile {
    let members: BTreeMap<NodeId, SocketAddr> = (1u64..)
        .map(NodeId)
        .zip(addresses.iter().copied())
        .collect();
    let path = dir.join("cluster.toml");
    let mut text = cluster_file::render(4242, &members, &BTreeMap::new(), None, Some(TOKEN_KEY));
    write_token_key(dir);
    for (key, value) in settings.iter().chain(CHEAP_PASSWORDS) {
        let line = text
            .lines()
            .find(|line| line.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("the cluster file sets no {key}"))
            .to_string();
        text = text.replace(&line, &format!("{key} = {value}"));
    }
    fs::write(&path, text).expect("write the cluster file");
    ClusterFile::load(&path).expect("load the cluster file")
}

/// The token key's file, beside the cluster file.
const TOKEN_KEY: &str = "token.key";

/// Test servers are debug builds: hash passwords at Argon2's least cost, not the default's.
const CHEAP_PASSWORDS: &[(&str, &str)] =
    &[("password_memory_kib", "8"), ("password_iterations", "1")];

fn default_cost(key: &str) -> u32 {
    let cost = raftchat_node::auth::PasswordCost::default();
    match key {
        "password_memory_kib" => cost.memory_kib,
        _ => cost.iterations,
    }
}

fn write_token_key(dir: &Path) {
    let key = raftchat_node::auth::TokenKey::generate().expect("a token key");
    fs::write(dir.join(TOKEN_KEY), key.to_hex()).expect("write the token key");
}

/// Real server processes of one cluster; dropping it kills every one still running.
pub struct Servers {
    /// The cluster's directory: cluster.toml, data dirs ID/, logs ID.log.
    pub dir: PathBuf,
    /// The cluster file.
    pub file: ClusterFile,
    children: BTreeMap<u64, Child>,
}

impl Servers {
    /// A cluster of `count` nodes on free loopback ports; no server is started yet.
    pub fn new(name: &str, count: usize) -> Servers {
        Servers::with_settings(name, count, &[])
    }

    /// Like `new`, with cluster file settings replaced (see `write_cluster_file_with`).
    pub fn with_settings(name: &str, count: usize, settings: &[(&str, &str)]) -> Servers {
        let dir = scratch_dir(name);
        let file = write_cluster_file_with(&dir, &free_addresses(count), settings);
        Servers {
            dir,
            file,
            children: BTreeMap::new(),
        }
    }

    /// A cluster of `count` nodes with TLS on every link: a CA and a certificate per node in
    /// `dir/tls/`; returns the CA too, to issue more certificates with.
    pub fn with_tls(name: &str, count: usize) -> (Servers, Authority) {
        let dir = scratch_dir(name);
        let addresses = free_addresses(count);
        let authority = Authority::new(4242).expect("a CA");
        let tls_dir = dir.join("tls");
        fs::create_dir_all(&tls_dir).expect("create the tls directory");
        fs::write(tls_dir.join("ca.pem"), authority.cert_pem()).expect("write the CA");
        let mut render = RenderTls {
            ca: "tls/ca.pem".into(),
            nodes: BTreeMap::new(),
        };
        for id in 1..=count as u64 {
            let issued = authority.issue(NodeId(id)).expect("a node certificate");
            let (cert, key) = (format!("tls/node-{id}.pem"), format!("tls/node-{id}.key"));
            fs::write(dir.join(&cert), issued.cert_pem).expect("write a certificate");
            fs::write(dir.join(&key), issued.key_pem).expect("write a key");
            render.nodes.insert(NodeId(id), (cert, key));
        }
        let members: BTreeMap<NodeId, SocketAddr> = (1u64..)
            .map(NodeId)
            .zip(addresses.iter().copied())
            .collect();
        let path = dir.join("cluster.toml");
        let mut text = cluster_file::render(
            4242,
            &members,
            &BTreeMap::new(),
            Some(&render),
            Some(TOKEN_KEY),
        );
        write_token_key(&dir);
        for (key, value) in CHEAP_PASSWORDS {
            text = text.replace(
                &format!("{key} = {}", default_cost(key)),
                &format!("{key} = {value}"),
            );
        }
        fs::write(&path, text).expect("write the cluster file");
        let file = ClusterFile::load(&path).expect("load the cluster file");
        let servers = Servers {
            dir,
            file,
            children: BTreeMap::new(),
        };
        (servers, authority)
    }

    /// Starts (or restarts) node `id`, logging to `dir/ID.log`.
    pub fn start(&mut self, id: u64) {
        self.start_with(id, &[]);
    }

    /// Starts a new member `id`, not in the cluster file, listening on `listen`: it waits to
    /// be added (`raftchat-server --join`).
    pub fn start_joining(&mut self, id: u64, listen: SocketAddr) {
        self.start_with(id, &["--join", "--listen", &listen.to_string()]);
    }

    /// Starts node `id` with `extra` flags.
    pub fn start_with(&mut self, id: u64, extra: &[&str]) {
        assert!(!self.children.contains_key(&id), "node {id} is running");
        let log_path = self.dir.join(format!("{id}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the log");
        let child = Command::new(SERVER)
            .arg("--id")
            .arg(id.to_string())
            .arg("--cluster")
            .arg(&self.file.path)
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .arg("--log-level")
            .arg("info")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .spawn()
            .expect("start raftchat-server");
        self.children.insert(id, child);
    }

    /// Starts every node.
    pub fn start_all(&mut self) {
        let ids: Vec<u64> = self.file.members.keys().map(|id| id.0).collect();
        for id in ids {
            self.start(id);
        }
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        let mut child = self.children.remove(&id).expect("node is running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERMs node `id` and waits (bounded) for its exit code.
    pub fn terminate(&mut self, id: u64) -> Option<i32> {
        let mut child = self.children.remove(&id).expect("node is running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Waits (bounded) for node `id` to exit on its own and returns its exit code.
    pub fn wait_exit(&mut self, id: u64, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let child = self.children.get_mut(&id).expect("node was started");
            if let Ok(Some(status)) = child.try_wait() {
                self.children.remove(&id);
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A client configuration for this cluster.
    pub fn client_config(&self, seed: u64) -> ClientConfig {
        self.file.client_config(seed)
    }

    /// Polls until `check` accepts the cluster's status, or panics at the deadline.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&ClusterStatus) -> bool,
    ) -> ClusterStatus {
        let mut config = self.client_config(7);
        config.attempt_timeout = Duration::from_millis(300);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let status = ClusterStatus::poll(&config).await;
            if check(&status) {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out after {limit:?} waiting for {what}; last status: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until a leader is known, and returns it.
    pub async fn leader(&self, limit: Duration) -> u64 {
        let status = self
            .wait_for("a leader", limit, |s| s.leader().is_some())
            .await;
        status.leader().map(|id| id.0).expect("checked")
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.children) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // Keep the evidence: the logs say what each server saw.
            eprintln!("servers' logs and data kept in {}", self.dir.display());
            for id in self.file.members.keys() {
                let log = self.dir.join(format!("{}.log", id.0));
                let text = fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- last lines of {}", log.display());
                for line in &lines[lines.len().saturating_sub(15)..] {
                    eprintln!("{line}");
                }
            }
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
