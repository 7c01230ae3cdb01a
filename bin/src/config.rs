//! The runtime configuration of one node: who its peers are, where they listen, its timing.
//! Parsing of cluster files lives with the binaries; this is the validated, typed form.

use raftchat::chat::ChatLimits;
use raftchat::limits;
use raftchat::raft;
use raftchat::replica::SnapshotPolicy;
use raftchat::types::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Size at which a log segment is closed and a new one begun, by default (etcd's WAL
/// segments are 64 MB too).
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// A node's timer rate, in parts per million of real time (1,000,000 = exact). A simulated
/// clock drift changes it while the node runs; a real node leaves it at 1.
#[derive(Clone, Debug)]
pub struct ClockRate(Arc<AtomicU64>);

impl ClockRate {
    /// A clock running at `factor` times real speed (ticks come `1 / factor` as often).
    pub fn new(factor: f64) -> ClockRate {
        let rate = ClockRate(Arc::new(AtomicU64::new(1_000_000)));
        rate.set(factor);
        rate
    }

    /// Changes the rate.
    pub fn set(&self, factor: f64) {
        assert!(
            factor.is_finite() && factor > 0.0,
            "clock rate must be positive"
        );
        self.0
            .store((factor * 1e6).round().max(1.0) as u64, Ordering::Relaxed);
    }

    /// The real duration of `nominal` on this clock.
    pub fn scale(&self, nominal: Duration) -> Duration {
        let ppm = self.0.load(Ordering::Relaxed).max(1);
        let nanos = nominal.as_nanos() * 1_000_000 / u128::from(ppm);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl Default for ClockRate {
    fn default() -> ClockRate {
        ClockRate::new(1.0)
    }
}

/// Bounds on the connections a node serves. Peers (identified by their hello, and with TLS by
/// their certificate) are never counted: a flood of clients cannot cut a node off its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most client connections open at once.
    pub clients_max: usize,
    /// Most client connections open at once from one IP address.
    pub clients_per_source_max: usize,
    /// Most connections at once that have not yet said what they are (TLS handshake, first
    /// frame); each has `HANDSHAKE_TIMEOUT` to do so.
    pub unidentified_max: usize,
    /// A client connection that sends no request for this long is closed.
    pub client_idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            clients_max: 4096,
            clients_per_source_max: 512,
            unidentified_max: 256,
            client_idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Everything one node's runtime needs to run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node.
    pub id: NodeId,
    /// Identifies the cluster; peers from another cluster are refused.
    pub cluster_id: u64,
    /// Every member and the address it listens on, this node included.
    pub members: BTreeMap<NodeId, SocketAddr>,
    /// Where this node listens (usually its own member address).
    pub listen: SocketAddr,
    /// A new member, not in `members` (the bootstrap configuration): it waits for a leader to
    /// add it.
    pub joining: bool,
    /// TLS for every connection, with this node's certificate; none for plaintext.
    pub tls: Option<crate::tls::NodeTls>,
    /// Bounds on client connections, so one client cannot hurt the rest.
    pub connection_limits: ConnectionLimits,
    /// Passwords and tokens: the token key, the token lifetime, the hash cost.
    pub auth: crate::auth::AuthConfig,
    /// Log where writes' time goes on this node when it leads (see `timeline`).
    pub timeline: bool,
    /// Length of one Raft tick.
    pub tick_interval: Duration,
    /// Election timeout range in ticks, `[min, max)`.
    pub election_ticks: (u32, u32),
    /// Ticks between heartbeats.
    pub heartbeat_ticks: u32,
    /// Raft pre-vote (thesis §9.6).
    pub pre_vote: bool,
    /// Raft check-quorum (thesis §6.2).
    pub check_quorum: bool,
    /// Lease reads (thesis §6.4.1; needs check-quorum): adds the clock assumption that no
    /// node's clock runs more than `read_lease_drift_percent` faster than the leader's.
    pub read_lease: bool,
    /// The clock-drift margin the read lease leaves, in percent.
    pub read_lease_drift_percent: u32,
    /// A leader tells followers of every new commit at once (see `raft::Config::eager_commit`).
    pub eager_commit: bool,
    /// Most entries in one AppendEntries.
    pub append_entries_max: usize,
    /// Most unacknowledged AppendEntries per follower.
    pub inflight_appends_max: usize,
    /// Most committed entries applied in one turn of the event loop.
    pub apply_entries_max: usize,
    /// When the node snapshots its state and compacts its log.
    pub snapshot_policy: SnapshotPolicy,
    /// Entries kept behind a new snapshot for followers a little behind it.
    pub snapshot_catch_up_entries: u64,
    /// Largest chunk of a snapshot sent to a follower.
    pub snapshot_chunk_bytes: usize,
    /// A log segment this large is closed and a new one begun.
    pub segment_bytes_max: u64,
    /// The chat state's retention bounds for a new data directory; fixed from then on (they
    /// travel in the replicated state), so changing them later changes nothing.
    pub chat_limits: ChatLimits,
    /// A peer connection whose receiver has acknowledged nothing for this long, while frames
    /// were sent, is considered stalled and replaced by a new one.
    pub peer_silence_timeout: Duration,
    /// Reconnection backoff to a peer: first and largest delay.
    pub reconnect_backoff: (Duration, Duration),
    /// Seed of the election-timeout RNG; give each node life its own.
    pub seed: u64,
    /// The timer rate (simulated clock drift).
    pub clock: ClockRate,
}

impl NodeConfig {
    /// A configuration with default timing for `id` in a cluster of `members`.
    pub fn new(id: NodeId, members: BTreeMap<NodeId, SocketAddr>) -> NodeConfig {
        let listen = members
            .get(&id)
            .copied()
            .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
        NodeConfig {
            id,
            cluster_id: 0,
            members,
            listen,
            joining: false,
            tls: None,
            connection_limits: ConnectionLimits::default(),
            auth: crate::auth::AuthConfig::default(),
            timeline: false,
            tick_interval: Duration::from_millis(10),
            election_ticks: (15, 30),
            heartbeat_ticks: 3,
            pre_vote: true,
            check_quorum: true,
            read_lease: false,
            read_lease_drift_percent: raft::READ_LEASE_DRIFT_PERCENT_DEFAULT,
            eager_commit: false,
            append_entries_max: limits::APPEND_ENTRIES_MAX,
            inflight_appends_max: limits::INFLIGHT_APPENDS_MAX,
            apply_entries_max: limits::APPLY_ENTRIES_MAX,
            snapshot_policy: SnapshotPolicy::default(),
            snapshot_catch_up_entries: limits::SNAPSHOT_CATCH_UP_ENTRIES,
            snapshot_chunk_bytes: limits::SNAPSHOT_CHUNK_BYTES_MAX,
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
            chat_limits: ChatLimits::default(),
            peer_silence_timeout: Duration::from_millis(500),
            reconnect_backoff: (Duration::from_millis(20), Duration::from_millis(500)),
            seed: id.0,
            clock: ClockRate::default(),
        }
    }

    /// The Raft configuration this runtime configuration implies.
    pub fn raft_config(&self) -> raft::Config {
        let mut config = raft::Config::new(self.id, self.members.keys().copied().collect());
        config.election_timeout_ticks_min = self.election_ticks.0;
        config.election_timeout_ticks_max = self.election_ticks.1;
        config.heartbeat_interval_ticks = self.heartbeat_ticks;
        config.pre_vote = self.pre_vote;
        config.check_quorum = self.check_quorum;
        config.read_lease = self.read_lease;
        config.read_lease_drift_percent = self.read_lease_drift_percent;
        config.eager_commit = self.eager_commit;
        config.append_entries_max = self.append_entries_max;
        config.inflight_appends_max = self.inflight_appends_max;
        config.apply_entries_max = self.apply_entries_max;
        config.snapshot_catch_up_entries = self.snapshot_catch_up_entries;
        config.snapshot_chunk_bytes_max = self.snapshot_chunk_bytes;
        config
    }

    /// Checks the configuration, naming the first problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.members.contains_key(&self.id) == self.joining {
            return Err(match self.joining {
                true => format!("node {} joins, yet is a bootstrap member", self.id),
                false => format!("node {} is not a member of the cluster", self.id),
            });
        }
        if self.members.len() > limits::CLUSTER_SIZE_MAX {
            return Err(format!("at most {} members", limits::CLUSTER_SIZE_MAX));
        }
        if self.tick_interval.is_zero() {
            return Err("tick interval must be positive".into());
        }
        if self.snapshot_policy.log_entries == 0 || self.snapshot_policy.log_bytes == 0 {
            return Err("snapshot thresholds must be at least 1".into());
        }
        if self.segment_bytes_max == 0 {
            return Err("segment size must be positive".into());
        }
        self.chat_limits.validate()?;
        self.auth.password_cost.validate()?;
        self.raft_config().validate().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_rate_scales_durations() {
        let rate = ClockRate::new(2.0);
        assert_eq!(
            rate.scale(Duration::from_millis(10)),
            Duration::from_millis(5)
        );
        rate.set(0.5);
        assert_eq!(
            rate.scale(Duration::from_millis(10)),
            Duration::from_millis(20)
        );
    }

    #[test]
    fn default_config_is_valid() {
        let members = BTreeMap::from([(NodeId(1), "127.0.0.1:1".parse().unwrap())]);
        assert_eq!(NodeConfig::new(NodeId(1), members).validate(), Ok(()));
    }

    #[test]
    fn a_non_member_is_refused() {
        let members = BTreeMap::from([(NodeId(1), "127.0.0.1:1".parse().unwrap())]);
        assert!(NodeConfig::new(NodeId(2), members).validate().is_err());
    }
}
