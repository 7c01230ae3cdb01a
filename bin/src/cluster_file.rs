//! The cluster file (`CLUSTER.toml`) that the server, the client CLI and the benchmark share:
//! the cluster's id, every member's id and address, and optional timing (read leases
//! included), snapshot, chat and client settings (timeouts, where reads go).
//! `bin/cluster.example.toml` documents the format.
//!
//! Parsing never panics: every problem is one line naming the file, the position or key, and
//! what is wrong, so an operator can fix it without reading code. The parsed form is checked as
//! a whole (unique ids and addresses, a timing Raft accepts) before anything starts.

use crate::auth::{AuthConfig, TokenKey};
use crate::client::{ClientConfig, ReadMode};
use crate::config::{ConnectionLimits, NodeConfig};
use crate::tls::{ClientTls, NodeTls};
use raftchat::chat::ChatLimits;
use raftchat::limits::CLUSTER_SIZE_MAX;
use raftchat::replica::SnapshotPolicy;
use raftchat::types::NodeId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest cluster file read, in bytes; anything larger is not a cluster file.
const CLUSTER_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// A problem with a cluster file, as one line that names the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ClusterFileError {
    /// The file, as given.
    pub path: String,
    /// What is wrong, with the key or line it concerns.
    pub message: String,
}

/// A parsed and checked cluster file.
#[derive(Clone, Debug)]
pub struct ClusterFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Identifies the cluster; peers from another cluster are refused.
    pub cluster_id: u64,
    /// Every member and the address it listens on.
    pub members: BTreeMap<NodeId, SocketAddr>,
    /// The members that serve the original service's gRPC API, and the address each serves it
    /// on (`grpc_address`, off when absent).
    pub grpc: BTreeMap<NodeId, SocketAddr>,
    /// Raft timing shared by every member.
    pub timing: Timing,
    /// When members snapshot and compact their logs.
    pub snapshot: SnapshotSettings,
    /// The chat state's retention bounds, for new data directories only.
    pub chat: ChatLimits,
    /// Client timeouts and where clients send their reads.
    pub client: ClientSettings,
    /// TLS on every link (`[tls]`); none for plaintext.
    pub tls: Option<TlsFiles>,
    /// Bounds on the client connections each member serves (`[limits]`).
    pub limits: ConnectionLimits,
    /// Passwords and tokens (`[auth]`): the token key's file (read only by servers: clients
    /// never need it), the token lifetime and the hash cost.
    pub auth: AuthSettings,
}

/// The `[auth]` table.
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    /// The file holding the cluster's token key (64 hexadecimal digits), resolved against the
    /// cluster file; without one, no node issues tokens.
    pub token_key: Option<PathBuf>,
    /// Token lifetime and hash cost (its `token_key` unset: servers load it from the file).
    pub config: AuthConfig,
}

/// The `[tls]` table and the members' certificates: paths resolved against the cluster file's
/// directory, and the CA read (so every client checks the nodes' certificates).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The cluster's CA certificate(s), in PEM.
    pub ca: PathBuf,
    /// Each member's certificate and private key, for the members the file gives them.
    pub nodes: BTreeMap<NodeId, (PathBuf, PathBuf)>,
    client: ClientTls,
}

/// Relative paths in a cluster file are relative to the file's directory.
fn resolve(file: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    match file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// The `[snapshot]` table: when a member snapshots its state and compacts its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// The thresholds that call for a snapshot.
    pub policy: SnapshotPolicy,
    /// Entries kept behind a snapshot for followers a little behind it.
    pub catch_up_entries: u64,
    /// Size at which a log segment is closed.
    pub segment_bytes: u64,
}

impl Default for SnapshotSettings {
    fn default() -> SnapshotSettings {
        let defaults = NodeConfig::new(NodeId(0), BTreeMap::new());
        SnapshotSettings {
            policy: defaults.snapshot_policy,
            catch_up_entries: defaults.snapshot_catch_up_entries,
            segment_bytes: defaults.segment_bytes_max,
        }
    }
}

/// The `[timing]` table: Raft's clock, shared by every member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Length of one Raft tick.
    pub tick: Duration,
    /// Election timeout range in ticks, `[min, max)`.
    pub election_ticks: (u32, u32),
    /// Ticks between heartbeats.
    pub heartbeat_ticks: u32,
    /// Raft pre-vote (thesis §9.6).
    pub pre_vote: bool,
    /// Raft check-quorum (thesis §6.2).
    pub check_quorum: bool,
    /// Lease reads (thesis §6.4.1); needs check-quorum.
    pub read_lease: bool,
    /// The clock-drift margin a read lease leaves, in percent.
    pub read_lease_drift_percent: u32,
    /// A leader tells followers of every new commit at once, not at the next heartbeat.
    pub eager_commit: bool,
}

impl Default for Timing {
    fn default() -> Timing {
        // The runtime's defaults, so a file without `[timing]` behaves like the simulator.
        let defaults = NodeConfig::new(NodeId(0), BTreeMap::new());
        Timing {
            tick: defaults.tick_interval,
            election_ticks: defaults.election_ticks,
            heartbeat_ticks: defaults.heartbeat_ticks,
            pre_vote: defaults.pre_vote,
            check_quorum: defaults.check_quorum,
            read_lease: defaults.read_lease,
            read_lease_drift_percent: defaults.read_lease_drift_percent,
            eager_commit: defaults.eager_commit,
        }
    }
}

/// The `[client]` table: how long clients wait, and where they send reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// How long one operation may take, retries included.
    pub operation_timeout: Duration,
    /// How long one attempt against one server may take.
    pub attempt_timeout: Duration,
    /// Where reads (check, list, fetch) go: the leader, any node, or the log.
    pub reads: ReadMode,
}

impl Default for ClientSettings {
    fn default() -> ClientSettings {
        let defaults = ClientConfig::new(BTreeMap::new());
        ClientSettings {
            operation_timeout: defaults.operation_timeout,
            attempt_timeout: defaults.attempt_timeout,
            reads: defaults.reads,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    cluster_id: u64,
    nodes: Vec<RawNode>,
    timing: Option<RawTiming>,
    snapshot: Option<RawSnapshot>,
    chat: Option<RawChat>,
    client: Option<RawClient>,
    tls: Option<RawTls>,
    limits: Option<RawLimits>,
    auth: Option<RawAuth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    token_key: Option<String>,
    token_ttl_secs: Option<u64>,
    password_memory_kib: Option<u32>,
    password_iterations: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    client_connections_max: Option<u64>,
    client_connections_per_source_max: Option<u64>,
    client_idle_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    log_entries: Option<u64>,
    log_bytes: Option<u64>,
    catch_up_entries: Option<u64>,
    segment_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChat {
    inbox_messages_max: Option<u64>,
    retained_bytes_max: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: u64,
    address: String,
    grpc_address: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTiming {
    tick_ms: Option<u64>,
    election_ticks: Option<[u32; 2]>,
    heartbeat_ticks: Option<u32>,
    pre_vote: Option<bool>,
    check_quorum: Option<bool>,
    read_lease: Option<bool>,
    read_lease_drift_percent: Option<u32>,
    eager_commit: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    operation_timeout_ms: Option<u64>,
    attempt_timeout_ms: Option<u64>,
    reads: Option<String>,
}

impl ClusterFile {
    /// Reads and checks the cluster file at `path`.
    pub fn load(path: &Path) -> Result<ClusterFile, ClusterFileError> {
        let fail = |message: String| ClusterFileError {
            path: path.display().to_string(),
            message,
        };
        let metadata = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        if !metadata.is_file() {
            return Err(fail("not a file".into()));
        }
        if metadata.len() > CLUSTER_FILE_BYTES_MAX {
            return Err(fail(format!("larger than {CLUSTER_FILE_BYTES_MAX} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        ClusterFile::parse(&text, path)
    }

    /// Parses and checks cluster file text; `path` is only used to name the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ClusterFile, ClusterFileError> {
        let fail = |message: String| ClusterFileError {
            path: path.display().to_string(),
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| fail(describe_toml_error(text, &e)))?;
        let (members, grpc) = parse_members(&raw.nodes).map_err(fail)?;
        let timing = parse_timing(raw.timing.as_ref()).map_err(fail)?;
        let snapshot = parse_snapshot(raw.snapshot.as_ref()).map_err(fail)?;
        let chat = parse_chat(raw.chat.as_ref()).map_err(fail)?;
        let client = parse_client(raw.client.as_ref()).map_err(fail)?;
        let tls = parse_tls(raw.tls.as_ref(), &raw.nodes, path).map_err(fail)?;
        let limits = parse_limits(raw.limits.as_ref()).map_err(fail)?;
        let auth = parse_auth(raw.auth.as_ref(), path).map_err(fail)?;
        let file = ClusterFile {
            path: path.to_path_buf(),
            cluster_id: raw.cluster_id,
            members,
            grpc,
            timing,
            snapshot,
            chat,
            client,
            tls,
            limits,
            auth,
        };
        // Every member gets the same timing, so checking one member's config checks them all.
        if let Some(&id) = file.members.keys().next() {
            let config = file.node_config_unchecked(id);
            config
                .validate()
                .map_err(|e| fail(format!("[timing]: {e}")))?;
        }
        Ok(file)
    }

    /// The runtime configuration of member `id`, or an error naming the file if `id` is not a
    /// member. `seed` seeds the election-timeout jitter; give every start of a node its own.
    pub fn node_config(&self, id: NodeId, seed: u64) -> Result<NodeConfig, ClusterFileError> {
        if !self.members.contains_key(&id) {
            let ids: Vec<String> = self.members.keys().map(|id| id.0.to_string()).collect();
            return Err(ClusterFileError {
                path: self.path.display().to_string(),
                message: format!(
                    "node {} is not a member (the members are {})",
                    id.0,
                    ids.join(", ")
                ),
            });
        }
        let mut config = self.node_config_unchecked(id);
        config.seed = seed;
        if let Some((cert, key)) = self.tls.as_ref().and_then(|tls| tls.nodes.get(&id)) {
            config.tls = Some(self.node_tls(cert, key)?);
        }
        config.auth.token_key = self.token_key()?;
        Ok(config)
    }

    /// The cluster's token key, read from the file `[auth] token_key` names (a server's
    /// business only); none when the table names none.
    pub fn token_key(&self) -> Result<Option<TokenKey>, ClusterFileError> {
        let Some(path) = &self.auth.token_key else {
            return Ok(None);
        };
        let fail = |message: String| ClusterFileError {
            path: self.path.display().to_string(),
            message: format!("`auth.token_key` {}: {message}", path.display()),
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        TokenKey::from_hex(&text).map(Some).map_err(fail)
    }

    /// This cluster's TLS for a node whose certificate and private key are these files (the
    /// node's own entry's, or `raftchat-server --tls-cert` and `--tls-key`); an error when the
    /// file has no `[tls]`, or a file cannot be used.
    pub fn node_tls(&self, cert: &Path, key: &Path) -> Result<NodeTls, ClusterFileError> {
        let fail = |message: String| ClusterFileError {
            path: self.path.display().to_string(),
            message,
        };
        let Some(tls) = &self.tls else {
            return Err(fail(
                "gives no [tls] ca: a node certificate needs the cluster's CA".into(),
            ));
        };
        NodeTls::load(&tls.ca, cert, key).map_err(|e| fail(format!("[tls]: {e}")))
    }

    /// The runtime configuration of a new member `id`, not in this file, that listens on
    /// `listen` and waits for the leader to add it (`raftchat member add`). The file's members
    /// are its bootstrap configuration, as on every other node.
    pub fn joiner_config(
        &self,
        id: NodeId,
        listen: std::net::SocketAddr,
        seed: u64,
    ) -> Result<NodeConfig, ClusterFileError> {
        if self.members.contains_key(&id) {
            return Err(ClusterFileError {
                path: self.path.display().to_string(),
                message: format!(
                    "node {} is a member of the cluster file already: start it without --join",
                    id.0
                ),
            });
        }
        let mut config = self.node_config_unchecked(id);
        config.listen = listen;
        config.joining = true;
        config.seed = seed;
        config.auth.token_key = self.token_key()?;
        Ok(config)
    }

    fn node_config_unchecked(&self, id: NodeId) -> NodeConfig {
        let mut config = NodeConfig::new(id, self.members.clone());
        config.cluster_id = self.cluster_id;
        config.tick_interval = self.timing.tick;
        config.election_ticks = self.timing.election_ticks;
        config.heartbeat_ticks = self.timing.heartbeat_ticks;
        config.pre_vote = self.timing.pre_vote;
        config.check_quorum = self.timing.check_quorum;
        config.read_lease = self.timing.read_lease;
        config.read_lease_drift_percent = self.timing.read_lease_drift_percent;
        config.eager_commit = self.timing.eager_commit;
        config.snapshot_policy = self.snapshot.policy;
        config.snapshot_catch_up_entries = self.snapshot.catch_up_entries;
        config.segment_bytes_max = self.snapshot.segment_bytes;
        config.chat_limits = self.chat;
        config.connection_limits = self.limits;
        config.auth = self.auth.config.clone();
        config
    }

    /// A client configuration for this cluster; `seed` seeds its retry jitter.
    pub fn client_config(&self, seed: u64) -> ClientConfig {
        let mut config = ClientConfig::new(self.members.clone());
        config.operation_timeout = self.client.operation_timeout;
        config.attempt_timeout = self.client.attempt_timeout;
        config.reads = self.client.reads;
        config.seed = seed;
        config.tls = self.tls.as_ref().map(|tls| tls.client.clone());
        config
    }
}

/// What `render` writes of TLS: the CA's path and each node's certificate and key paths, as
/// written in the file (relative to it, or absolute).
#[derive(Clone, Debug, Default)]
pub struct RenderTls {
    /// The CA certificate.
    pub ca: String,
    /// Each node's certificate and private key.
    pub nodes: BTreeMap<NodeId, (String, String)>,
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// Every member's address, and the gRPC address of those that have one.
type Addresses = (BTreeMap<NodeId, SocketAddr>, BTreeMap<NodeId, SocketAddr>);

fn parse_members(nodes: &[RawNode]) -> Result<Addresses, String> {
    if nodes.is_empty() {
        return Err("`nodes`: at least one [[nodes]] entry is needed".into());
    }
    if nodes.len() > CLUSTER_SIZE_MAX {
        return Err(format!(
            "`nodes`: {} entries, at most {CLUSTER_SIZE_MAX} are allowed",
            nodes.len()
        ));
    }
    let mut members = BTreeMap::new();
    let mut grpc = BTreeMap::new();
    let mut used = Vec::new();
    for (position, node) in nodes.iter().enumerate() {
        let key = format!("nodes[{position}]");
        let address = parse_address(&format!("{key}.address"), &node.address, &used)?;
        used.push(address);
        if members.insert(NodeId(node.id), address).is_some() {
            return Err(format!("`{key}.id`: id {} is used by two nodes", node.id));
        }
        if let Some(text) = &node.grpc_address {
            let address = parse_address(&format!("{key}.grpc_address"), text, &used)?;
            used.push(address);
            grpc.insert(NodeId(node.id), address);
        }
    }
    Ok((members, grpc))
}

/// A fixed IP:PORT address that no earlier key of the file uses.
fn parse_address(key: &str, text: &str, used: &[SocketAddr]) -> Result<SocketAddr, String> {
    let address: SocketAddr = text.trim().parse().map_err(|_| {
        format!("`{key}`: {text:?} is not an IP:PORT address such as \"127.0.0.1:7001\"")
    })?;
    if address.port() == 0 {
        return Err(format!("`{key}`: port 0 is not a fixed port"));
    }
    if used.contains(&address) {
        return Err(format!("`{key}`: {address} is used twice in the file"));
    }
    Ok(address)
}

fn parse_tls(
    raw: Option<&RawTls>,
    nodes: &[RawNode],
    path: &Path,
) -> Result<Option<TlsFiles>, String> {
    let mut certificates = BTreeMap::new();
    for (position, node) in nodes.iter().enumerate() {
        let key = format!("nodes[{position}]");
        match (&node.tls_cert, &node.tls_key, raw) {
            (Some(_), None, _) => return Err(format!("`{key}.tls_cert`: needs `tls_key` too")),
            (None, Some(_), _) => return Err(format!("`{key}.tls_key`: needs `tls_cert` too")),
            (Some(_), Some(_), None) => {
                return Err(format!(
                    "`{key}.tls_cert`: needs a [tls] table naming the cluster's `ca`"
                ))
            }
            (Some(cert), Some(private), Some(_)) => {
                let files = (resolve(path, cert), resolve(path, private));
                certificates.insert(NodeId(node.id), files);
            }
            (None, None, _) => {}
        }
    }
    let Some(raw) = raw else { return Ok(None) };
    let ca = resolve(path, &raw.ca);
    let client = ClientTls::load(&ca).map_err(|e| format!("`tls.ca`: {e}"))?;
    Ok(Some(TlsFiles {
        ca,
        nodes: certificates,
        client,
    }))
}

/// Largest connection count a limit may name.
const CONNECTIONS_MAX: u64 = 1 << 20;
/// Longest client idle timeout: a day.
const IDLE_TIMEOUT_MS_MAX: u64 = 24 * 3600 * 1000;

fn parse_auth(raw: Option<&RawAuth>, path: &Path) -> Result<AuthSettings, String> {
    let mut auth = AuthSettings::default();
    let Some(raw) = raw else { return Ok(auth) };
    auth.token_key = raw.token_key.as_deref().map(|key| resolve(path, key));
    if let Some(secs) = raw.token_ttl_secs {
        if !(1..=30 * 24 * 3600).contains(&secs) {
            return Err(format!(
                "`auth.token_ttl_secs`: must be between 1 and 2592000 (30 days), got {secs}"
            ));
        }
        auth.config.token_ttl = Duration::from_secs(secs);
    }
    if let Some(memory_kib) = raw.password_memory_kib {
        auth.config.password_cost.memory_kib = memory_kib;
    }
    if let Some(iterations) = raw.password_iterations {
        auth.config.password_cost.iterations = iterations;
    }
    auth.config
        .password_cost
        .validate()
        .map_err(|e| format!("`auth`: {e}"))?;
    Ok(auth)
}

fn parse_limits(raw: Option<&RawLimits>) -> Result<ConnectionLimits, String> {
    let mut limits = ConnectionLimits::default();
    let Some(raw) = raw else { return Ok(limits) };
    let count = |key: &str, value: u64| {
        if value == 0 || value > CONNECTIONS_MAX {
            return Err(format!(
                "`limits.{key}`: must be between 1 and {CONNECTIONS_MAX}"
            ));
        }
        Ok(value as usize)
    };
    if let Some(value) = raw.client_connections_max {
        limits.clients_max = count("client_connections_max", value)?;
    }
    if let Some(value) = raw.client_connections_per_source_max {
        limits.clients_per_source_max = count("client_connections_per_source_max", value)?;
    }
    if let Some(ms) = raw.client_idle_timeout_ms {
        if ms == 0 || ms > IDLE_TIMEOUT_MS_MAX {
            return Err(format!(
                "`limits.client_idle_timeout_ms`: must be between 1 and {IDLE_TIMEOUT_MS_MAX}"
            ));
        }
        limits.client_idle_timeout = Duration::from_millis(ms);
    }
    Ok(limits)
}

fn parse_timing(raw: Option<&RawTiming>) -> Result<Timing, String> {
    let mut timing = Timing::default();
    let Some(raw) = raw else { return Ok(timing) };
    if let Some(tick_ms) = raw.tick_ms {
        if tick_ms == 0 || tick_ms > 60_000 {
            return Err("`timing.tick_ms`: must be between 1 and 60000".into());
        }
        timing.tick = Duration::from_millis(tick_ms);
    }
    if let Some([min, max]) = raw.election_ticks {
        timing.election_ticks = (min, max);
    }
    if let Some(heartbeat_ticks) = raw.heartbeat_ticks {
        timing.heartbeat_ticks = heartbeat_ticks;
    }
    if let Some(pre_vote) = raw.pre_vote {
        timing.pre_vote = pre_vote;
    }
    if let Some(check_quorum) = raw.check_quorum {
        timing.check_quorum = check_quorum;
    }
    if let Some(read_lease) = raw.read_lease {
        timing.read_lease = read_lease;
    }
    if let Some(eager_commit) = raw.eager_commit {
        timing.eager_commit = eager_commit;
    }
    if let Some(percent) = raw.read_lease_drift_percent {
        if !(1..=READ_LEASE_DRIFT_PERCENT_MAX).contains(&percent) {
            return Err(format!(
                "`timing.read_lease_drift_percent`: must be between 1 and \
                 {READ_LEASE_DRIFT_PERCENT_MAX}"
            ));
        }
        timing.read_lease_drift_percent = percent;
    }
    // Raft's own check refuses this too, but only this message names the keys to change.
    if timing.read_lease && !timing.check_quorum {
        return Err(
            "`timing.read_lease`: lease reads need `check_quorum = true` (a follower \
                    that heard the leader must refuse votes while the lease lasts)"
                .into(),
        );
    }
    Ok(timing)
}

/// Largest clock-drift margin of a read lease: beyond it the lease is under half the election
/// timeout, and ReadIndex costs little more.
const READ_LEASE_DRIFT_PERCENT_MAX: u32 = 100;

/// Largest snapshot threshold or segment size accepted, far beyond any sensible setting.
const SNAPSHOT_SETTING_MAX: u64 = 1 << 40;

fn parse_snapshot(raw: Option<&RawSnapshot>) -> Result<SnapshotSettings, String> {
    let mut settings = SnapshotSettings::default();
    let Some(raw) = raw else { return Ok(settings) };
    let positive = |key: &str, value: u64| {
        if value == 0 || value > SNAPSHOT_SETTING_MAX {
            Err(format!(
                "`snapshot.{key}`: must be between 1 and {SNAPSHOT_SETTING_MAX}"
            ))
        } else {
            Ok(value)
        }
    };
    if let Some(value) = raw.log_entries {
        settings.policy.log_entries = positive("log_entries", value)?;
    }
    if let Some(value) = raw.log_bytes {
        settings.policy.log_bytes = positive("log_bytes", value)?;
    }
    if let Some(value) = raw.segment_bytes {
        settings.segment_bytes = positive("segment_bytes", value)?;
    }
    if let Some(value) = raw.catch_up_entries {
        if value > SNAPSHOT_SETTING_MAX {
            return Err(format!(
                "`snapshot.catch_up_entries`: must be at most {SNAPSHOT_SETTING_MAX}"
            ));
        }
        settings.catch_up_entries = value;
    }
    Ok(settings)
}

fn parse_chat(raw: Option<&RawChat>) -> Result<ChatLimits, String> {
    let mut limits = ChatLimits::default();
    let Some(raw) = raw else { return Ok(limits) };
    if let Some(value) = raw.inbox_messages_max {
        limits.inbox_messages_max = value;
    }
    if let Some(value) = raw.retained_bytes_max {
        limits.retained_bytes_max = value;
    }
    limits.validate().map_err(|e| format!("`chat`: {e}"))?;
    Ok(limits)
}

fn parse_client(raw: Option<&RawClient>) -> Result<ClientSettings, String> {
    let mut client = ClientSettings::default();
    let Some(raw) = raw else { return Ok(client) };
    let millis = |key: &str, value: u64| {
        if value == 0 || value > 3_600_000 {
            Err(format!("`client.{key}`: must be between 1 and 3600000"))
        } else {
            Ok(Duration::from_millis(value))
        }
    };
    if let Some(value) = raw.operation_timeout_ms {
        client.operation_timeout = millis("operation_timeout_ms", value)?;
    }
    if let Some(value) = raw.attempt_timeout_ms {
        client.attempt_timeout = millis("attempt_timeout_ms", value)?;
    }
    if let Some(name) = &raw.reads {
        client.reads = ReadMode::from_name(name).ok_or_else(|| {
            format!(
                "`client.reads`: {name:?} is not one of {}",
                read_mode_names()
            )
        })?;
    }
    Ok(client)
}

/// The read modes' names, for messages: `"leader", "any" or "log"`.
pub fn read_mode_names() -> String {
    let names: Vec<String> = ReadMode::NAMES
        .iter()
        .map(|(name, _)| format!("{name:?}"))
        .collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// One line for a TOML or schema error: `LINE:COLUMN: message (in `source line`)`.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', " ");
    let Some(span) = error.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = before[line_start..].chars().count() + 1;
    let source_line = text[line_start..].lines().next().unwrap_or("").trim();
    let mut out = format!("line {line}, column {column}: {message}");
    if !source_line.is_empty() {
        let shown: String = source_line.chars().take(60).collect();
        let _ = write!(out, " (at `{shown}`)");
    }
    out
}

/// The text of a cluster file for `members`, all with the default timing, commented so that an
/// operator can edit it. `raftchat cluster up` writes it.
pub fn render(
    cluster_id: u64,
    members: &BTreeMap<NodeId, SocketAddr>,
    grpc: &BTreeMap<NodeId, SocketAddr>,
    tls: Option<&RenderTls>,
    token_key: Option<&str>,
) -> String {
    let timing = Timing::default();
    let snapshot = SnapshotSettings::default();
    let chat = ChatLimits::default();
    let client = ClientSettings::default();
    let mut out = String::new();
    out.push_str("# A raftchat cluster; the format is documented in bin/cluster.example.toml.\n");
    let _ = writeln!(out, "cluster_id = {cluster_id}\n");
    if !grpc.is_empty() {
        out.push_str(
            "# grpc_address: where a node serves the original service's gRPC API (plaintext,\n\
             # unauthenticated: keep it on loopback or a trusted network).\n",
        );
    }
    match tls {
        Some(tls) => {
            let _ = writeln!(
                out,
                "# TLS on every link: each node shows a certificate of this CA naming it\n\
                 # (n<ID>.raftchat), and clients check it. Paths are relative to this file.\n\
                 [tls]\nca = {}\n",
                toml_string(&tls.ca)
            );
        }
        None => out.push_str(
            "# No [tls]: every link is plaintext, and anyone who can reach a node's address can\n\
             # join the Raft group or act as any client.\n\n",
        ),
    }
    for (id, address) in members {
        let _ = writeln!(out, "[[nodes]]\nid = {}\naddress = \"{address}\"", id.0);
        if let Some(grpc) = grpc.get(id) {
            let _ = writeln!(out, "grpc_address = \"{grpc}\"");
        }
        if let Some((cert, key)) = tls.and_then(|tls| tls.nodes.get(id)) {
            let _ = writeln!(out, "tls_cert = {}", toml_string(cert));
            let _ = writeln!(out, "tls_key = {}", toml_string(key));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "[timing]\ntick_ms = {}\nelection_ticks = [{}, {}]\nheartbeat_ticks = {}\n\
         pre_vote = {}\ncheck_quorum = {}\n\
         # Lease reads (needs check_quorum): the leader answers reads without a round of\n\
         # heartbeats, assuming no clock runs read_lease_drift_percent faster than another.\n\
         read_lease = {}\nread_lease_drift_percent = {}\n\
         # Tell followers of every commit at once, not with the next append or heartbeat.\n\
         eager_commit = {}\n",
        timing.tick.as_millis(),
        timing.election_ticks.0,
        timing.election_ticks.1,
        timing.heartbeat_ticks,
        timing.pre_vote,
        timing.check_quorum,
        timing.read_lease,
        timing.read_lease_drift_percent,
        timing.eager_commit,
    );
    let _ = writeln!(
        out,
        "# A member snapshots its state once this many entries, or bytes of commands, were\n\
         # applied since its last snapshot, then compacts its log, keeping catch_up_entries\n\
         # behind the snapshot; the log is kept in segment files of segment_bytes.\n\
         [snapshot]\nlog_entries = {}\nlog_bytes = {}\ncatch_up_entries = {}\n\
         segment_bytes = {}\n",
        snapshot.policy.log_entries,
        snapshot.policy.log_bytes,
        snapshot.catch_up_entries,
        snapshot.segment_bytes,
    );
    let _ = writeln!(
        out,
        "# Retention: messages kept per inbox, and bytes of messages kept in all; beyond\n\
         # either, the oldest go. Read only when a member's data directory is created: they\n\
         # are then fixed for the cluster's life.\n\
         [chat]\ninbox_messages_max = {}\nretained_bytes_max = {}\n",
        chat.inbox_messages_max, chat.retained_bytes_max,
    );
    let limits = ConnectionLimits::default();
    let _ = writeln!(
        out,
        "# Client connections a member serves at once, in all and from one IP address (a\n\
         # newcomer past either is answered busy and closed, and the refusal logged), and how\n\
         # long a client connection may stay idle. Peers are never counted.\n\
         [limits]\nclient_connections_max = {}\nclient_connections_per_source_max = {}\n\
         client_idle_timeout_ms = {}\n",
        limits.clients_max,
        limits.clients_per_source_max,
        limits.client_idle_timeout.as_millis(),
    );
    let auth = AuthConfig::default();
    let key_line = match token_key {
        Some(path) => format!("token_key = {}\n", toml_string(path)),
        None => "# token_key = \"token.key\"\n".to_owned(),
    };
    let _ = writeln!(
        out,
        "# Passwords: the file of the cluster's token key (64 hex digits, secret, the same on\n\
         # every server; without it no login succeeds), how long a login's token lasts, and\n\
         # the Argon2id cost of new passwords' hashes.\n\
         [auth]\n{key_line}token_ttl_secs = {}\npassword_memory_kib = {}\n\
         password_iterations = {}\n",
        auth.token_ttl.as_secs(),
        auth.password_cost.memory_kib,
        auth.password_cost.iterations,
    );
    let _ = writeln!(
        out,
        "# reads: where check, list and fetch go: \"leader\" (linearizable, by ReadIndex),\n\
         # \"any\" (linearizable, each client at a node of its own) or \"log\" (as commands).\n\
         [client]\noperation_timeout_ms = {}\nattempt_timeout_ms = {}\nreads = \"{}\"",
        client.operation_timeout.as_millis(),
        client.attempt_timeout.as_millis(),
        client.reads.name(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterFile, ClusterFileError> {
        ClusterFile::parse(text, Path::new("c.toml"))
    }

    fn error(text: &str) -> String {
        let error = parse(text).expect_err("the file should be refused");
        let line = error.to_string();
        assert!(line.starts_with("c.toml: "), "{line}");
        assert!(!line.contains('\n'), "one line: {line}");
        line
    }

    const TWO: &str = "cluster_id = 7\n\
        [[nodes]]\nid = 1\naddress = \"127.0.0.1:7001\"\n\
        [[nodes]]\nid = 2\naddress = \"127.0.0.1:7002\"\n";

    #[test]
    fn a_minimal_file_gets_the_default_timing() {
        let file = parse(TWO).unwrap();
        assert_eq!(file.cluster_id, 7);
        assert_eq!(file.members.len(), 2);
        assert_eq!(file.timing, Timing::default());
        assert_eq!(file.client, ClientSettings::default());
        let config = file.node_config(NodeId(2), 9).unwrap();
        assert_eq!(config.cluster_id, 7);
        assert_eq!(config.listen, "127.0.0.1:7002".parse().unwrap());
        assert_eq!(config.seed, 9);
    }

    #[test]
    fn timing_and_client_tables_are_applied() {
        let text = format!(
            "{TWO}[timing]\ntick_ms = 5\nelection_ticks = [20, 40]\nheartbeat_ticks = 4\n\
             pre_vote = false\ncheck_quorum = false\n\
             [client]\noperation_timeout_ms = 900\nattempt_timeout_ms = 300\n"
        );
        let file = parse(&text).unwrap();
        let config = file.node_config(NodeId(1), 0).unwrap();
        assert_eq!(config.tick_interval, Duration::from_millis(5));
        assert_eq!(config.election_ticks, (20, 40));
        assert_eq!(config.heartbeat_ticks, 4);
        assert!(!config.pre_vote && !config.check_quorum);
        let client = file.client_config(3);
        assert_eq!(client.operation_timeout, Duration::from_millis(900));
        assert_eq!(client.attempt_timeout, Duration::from_millis(300));
    }

    #[test]
    fn rendered_files_parse_back() {
        let members = parse(TWO).unwrap().members;
        let file = parse(&render(42, &members, &BTreeMap::new(), None, None)).unwrap();
        assert_eq!(file.cluster_id, 42);
        assert_eq!(file.members, members);
        assert!(file.grpc.is_empty());
        let grpc = BTreeMap::from([(NodeId(2), "127.0.0.1:20010".parse().unwrap())]);
        let file = parse(&render(42, &members, &grpc, None, None)).unwrap();
        assert_eq!(file.members, members);
        assert_eq!(file.grpc, grpc);
        assert_eq!(file.timing, Timing::default());
        assert_eq!(file.snapshot, SnapshotSettings::default());
        assert_eq!(file.chat, ChatLimits::default());
        assert_eq!(file.client, ClientSettings::default());
        let members = parse(TWO).unwrap().members;
        let text = render(42, &members, &BTreeMap::new(), None, None)
            .replace("read_lease = false", "read_lease = true")
            .replace("eager_commit = false", "eager_commit = true")
            .replace("reads = \"leader\"", "reads = \"any\"");
        let file = parse(&text).unwrap();
        assert!(file.timing.read_lease);
        assert!(file.timing.eager_commit);
        assert!(
            file.node_config(NodeId(1), 0)
                .unwrap()
                .raft_config()
                .eager_commit
        );
        assert_eq!(file.client.reads, ReadMode::Any);
    }

    #[test]
    fn snapshot_and_chat_tables_are_applied_and_checked() {
        let text = format!(
            "{TWO}[snapshot]\nlog_entries = 50\nlog_bytes = 4096\ncatch_up_entries = 0\n\
             segment_bytes = 8192\n[chat]\ninbox_messages_max = 7\nretained_bytes_max = 65536\n"
        );
        let config = parse(&text).unwrap().node_config(NodeId(2), 0).unwrap();
        assert_eq!(config.snapshot_policy.log_entries, 50);
        assert_eq!(config.snapshot_policy.log_bytes, 4096);
        assert_eq!(config.snapshot_catch_up_entries, 0);
        assert_eq!(config.segment_bytes_max, 8192);
        assert_eq!(config.chat_limits.inbox_messages_max, 7);
        assert_eq!(config.chat_limits.retained_bytes_max, 65536);
        let bad = [
            ("[snapshot]\nlog_entries = 0\n", "snapshot.log_entries"),
            ("[snapshot]\nsegment_bytes = 0\n", "snapshot.segment_bytes"),
            ("[chat]\ninbox_messages_max = 0\n", "inbox_messages_max"),
            ("[chat]\nretained_bytes_max = 1\n", "retained_bytes_max"),
            ("[snapshot]\nlog_entrys = 5\n", "log_entrys"),
        ];
        for (table, key) in bad {
            let line = error(&format!("{TWO}{table}"));
            assert!(line.contains(key), "{line}");
        }
    }

    #[test]
    fn read_settings_are_applied() {
        let file = parse(TWO).unwrap();
        assert_eq!(file.client_config(0).reads, ReadMode::Leader);
        let config = file.node_config(NodeId(1), 0).unwrap();
        assert!(!config.read_lease);
        for (name, mode) in ReadMode::NAMES {
            let file = parse(&format!("{TWO}[client]\nreads = \"{name}\"\n")).unwrap();
            assert_eq!(file.client_config(0).reads, mode);
        }
        let text = format!("{TWO}[timing]\nread_lease = true\nread_lease_drift_percent = 25\n");
        let config = parse(&text).unwrap().node_config(NodeId(2), 0).unwrap();
        assert!(config.read_lease);
        assert_eq!(config.read_lease_drift_percent, 25);
        assert!(config.raft_config().read_lease);
    }

    #[test]
    fn bad_read_settings_name_their_key() {
        let bad = [
            ("[client]\nreads = \"follower\"\n", "client.reads"),
            ("[client]\nreads = 1\n", "reads"),
            ("[timing]\nread_lease = \"yes\"\n", "read_lease"),
            (
                "[timing]\nread_lease_drift_percent = 0\n",
                "timing.read_lease_drift_percent",
            ),
            (
                "[timing]\nread_lease_drift_percent = 101\n",
                "read_lease_drift_percent",
            ),
            (
                "[timing]\nread_lease_drift_percent = -1\n",
                "read_lease_drift_percent",
            ),
            (
                "[timing]\nread_lease = true\ncheck_quorum = false\n",
                "`timing.read_lease`: lease reads need `check_quorum = true`",
            ),
            // Too short an election timeout leaves no lease; Raft's own check says so.
            (
                "[timing]\nread_lease = true\nelection_ticks = [3, 6]\nheartbeat_ticks = 1\n",
                "lease reads need an election timeout long enough",
            ),
        ];
        for (table, needle) in bad {
            let line = error(&format!("{TWO}{table}"));
            assert!(line.contains(needle), "{line}");
        }
        let line = error(&format!("{TWO}[client]\nreads = \"x\"\n"));
        assert!(line.contains(r#""leader", "any" or "log""#), "{line}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let line = error(&format!("{TWO}[timing]\ntick = 5\n"));
        assert!(line.contains("line 9") && line.contains("tick"), "{line}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let line = error(&TWO.replace("127.0.0.1:7002", "localhost"));
        assert!(line.contains("nodes[1].address"), "{line}");
        let line = error(&TWO.replace("id = 2", "id = 1"));
        assert!(line.contains("nodes[1].id"), "{line}");
        let line = error(&TWO.replace("7002", "7001"));
        assert!(line.contains("used twice"), "{line}");
        let line = error(&format!("{TWO}[timing]\nelection_ticks = [3, 4]\n"));
        assert!(line.contains("[timing]"), "{line}");
        let line = error(&format!("{TWO}[client]\nattempt_timeout_ms = 0\n"));
        assert!(line.contains("client.attempt_timeout_ms"), "{line}");
        let line = error("cluster_id = \"x\"\n");
        assert!(line.contains("line 1"), "{line}");
        let line = error("cluster_id = 1\nnodes = []\n");
        assert!(line.contains("at least one"), "{line}");
        error("this is not toml");
        error("");
    }

    #[test]
    fn grpc_addresses_are_optional_fixed_and_unique() {
        let text = TWO.replace(
            "address = \"127.0.0.1:7002\"",
            "address = \"127.0.0.1:7002\"\ngrpc_address = \"127.0.0.1:20010\"",
        );
        let file = parse(&text).unwrap();
        let expected = BTreeMap::from([(NodeId(2), "127.0.0.1:20010".parse().unwrap())]);
        assert_eq!(file.grpc, expected);
        for (bad, why) in [
            ("127.0.0.1:7001", "used twice"),
            ("127.0.0.1:7002", "used twice"),
            ("127.0.0.1:0", "port 0"),
            ("localhost:20010", "not an IP:PORT"),
        ] {
            let line = error(&text.replace("127.0.0.1:20010", bad));
            assert!(
                line.contains("nodes[1].grpc_address") && line.contains(why),
                "{line}"
            );
        }
    }

    #[test]
    fn a_non_member_id_is_refused_with_the_members() {
        let file = parse(TWO).unwrap();
        let error = file.node_config(NodeId(3), 0).unwrap_err().to_string();
        assert!(error.contains("the members are 1, 2"), "{error}");
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/cluster.example.toml"));
        let file = ClusterFile::load(path).unwrap();
        assert_eq!(file.members.len(), 3);
        assert_eq!(file.timing, Timing::default());
        assert_eq!(file.client, ClientSettings::default());
    }

    #[test]
    fn tls_settings_are_checked_and_resolved_against_the_file() {
        let with_node_cert = |extra: &str| {
            format!(
                "cluster_id = 7\n{extra}\
                 [[nodes]]\nid = 1\naddress = \"127.0.0.1:7001\"\ntls_cert = \"n1.pem\"\n"
            )
        };
        let line = error(&with_node_cert(""));
        assert!(
            line.contains("`nodes[0].tls_cert`: needs `tls_key` too"),
            "{line}"
        );
        let line = error(&(with_node_cert("") + "tls_key = \"n1.key\"\n"));
        assert!(line.contains("needs a [tls] table"), "{line}");
        let line = error(
            &with_node_cert("[tls]\nca = \"missing-ca.pem\"\n")
                .replace("tls_cert = \"n1.pem\"\n", ""),
        );
        assert!(
            line.contains("`tls.ca`: missing-ca.pem: cannot read"),
            "{line}"
        );

        let dir = std::env::temp_dir().join(format!("raftchat-tls-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let authority = crate::tls::Authority::new(7).unwrap();
        std::fs::write(dir.join("ca.pem"), authority.cert_pem()).unwrap();
        let issued = authority.issue(NodeId(1)).unwrap();
        std::fs::write(dir.join("n1.pem"), issued.cert_pem).unwrap();
        std::fs::write(dir.join("n1.key"), issued.key_pem).unwrap();
        let text = with_node_cert("[tls]\nca = \"ca.pem\"\n") + "tls_key = \"n1.key\"\n";
        let path = dir.join("c.toml");
        std::fs::write(&path, text).unwrap();
        let file = ClusterFile::load(&path).unwrap();
        assert_eq!(file.tls.as_ref().unwrap().ca, dir.join("ca.pem"));
        assert!(file.node_config(NodeId(1), 0).unwrap().tls.is_some());
        assert!(file.client_config(0).tls.is_some());
        // A key that is not the certificate's is refused, naming both files.
        std::fs::write(
            dir.join("n1.key"),
            authority.issue(NodeId(2)).unwrap().key_pem,
        )
        .unwrap();
        let error = file.node_config(NodeId(1), 0).unwrap_err().to_string();
        assert!(error.contains("n1.pem and"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = ClusterFile::load(Path::new("/nonexistent/c.toml")).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("/nonexistent/c.toml: cannot read"));
    }
}
