//! The nemesis: faults from outside the nodes, through madsim's handles (kill, restart, pause,
//! clog) and the simulated disks (power loss, torn and corrupted tails), timed by the scenario
//! or drawn at random from the seed.
//!
//! Random faults follow a Poisson process per kind, at the scenario's rates; each heals after a
//! random downtime. With `max_down = "minority"`, a random fault never impairs a majority at
//! once (down, paused or cut off), so the cluster should stay available while it is faulted;
//! timed events are carried out as written, whatever they do to availability.

use crate::checker::HOSTILE_TERM;
use crate::disk::{DiskStats, SimDiskHandle};
use crate::scenario::{self, NodeRef};
use crate::world::World;
use madsim::net::NetSim;
use madsim::runtime::Handle;
use raftchat::raft::ConfChange;
use raftchat::types::NodeId;
use raftchat_node::config::ClockRate;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// One fault or repair, with nodes resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Kill a node's process (unsynced writes survive in the page cache).
    Crash(NodeId),
    /// Start a killed node again.
    Restart(NodeId),
    /// Kill a node and cut its power: unsynced writes are lost, or torn, or corrupted.
    PowerLoss {
        /// The node.
        node: NodeId,
        /// Keep a torn prefix of the unsynced tail.
        torn: bool,
        /// Flip a byte in what survives.
        corrupt: bool,
    },
    /// Freeze every task of a node.
    Pause(NodeId),
    /// Unfreeze.
    Resume(NodeId),
    /// Cut a node off from everyone (peers and clients).
    Isolate(NodeId),
    /// Cut these nodes off from the other nodes.
    Split(Vec<NodeId>),
    /// Drop traffic from one node to another, not the reverse.
    OneWay(NodeId, NodeId),
    /// Split the others in two halves that only `node` connects.
    Bridge(NodeId),
    /// Remove every partition.
    Heal,
    /// Change the network latency range.
    Latency(Duration, Duration),
    /// Change a node's timer rate.
    ClockDrift(NodeId, f64),
    /// Kill a node mid-append: a half-written, corrupt record at its log's end.
    CorruptTail(NodeId),
    /// Kill every node.
    CrashAll,
    /// Power loss on every node.
    PowerLossAll {
        /// Keep torn prefixes.
        torn: bool,
    },
    /// Start every killed node again.
    RestartAll,
    /// Ask the leader to add a node as a learner, promoted once caught up unless the flag
    /// keeps it a learner.
    AddMember(NodeId, bool),
    /// Ask the leader to remove a node from the configuration.
    RemoveMember(NodeId),
    /// Ask the leader to hand its leadership to a voter (or the most up-to-date one).
    TransferLeader(Option<NodeId>),
    /// A hostile peer attacks the node (see `scenario::Action::HostilePeer`).
    HostilePeer(NodeId),
}

impl Action {
    /// The action as a timed event's action, every node named by id: what a recorded schedule
    /// holds, so that a replay does exactly what was done.
    pub fn to_event_action(&self) -> scenario::Action {
        use scenario::Action as A;
        let id = |node: &NodeId| NodeRef::Id(node.0 as u32);
        match self {
            Action::Crash(node) => A::Crash { node: id(node) },
            Action::Restart(node) => A::Restart { node: id(node) },
            Action::PowerLoss {
                node,
                torn,
                corrupt,
            } => A::PowerLoss {
                node: id(node),
                torn: *torn,
                corrupt: *corrupt,
            },
            Action::Pause(node) => A::Pause { node: id(node) },
            Action::Resume(node) => A::Resume { node: id(node) },
            Action::Isolate(node) => A::Isolate { node: id(node) },
            Action::Split(minority) => A::Split {
                minority: minority.iter().map(id).collect(),
            },
            Action::OneWay(from, to) => A::OneWay {
                from: id(from),
                to: id(to),
            },
            Action::Bridge(node) => A::Bridge { node: id(node) },
            Action::Heal => A::Heal,
            Action::Latency(min, max) => A::Latency {
                ms: [min.as_millis() as u64, max.as_millis() as u64],
            },
            Action::ClockDrift(node, factor) => A::ClockDrift {
                node: id(node),
                factor: *factor,
            },
            Action::CorruptTail(node) => A::CorruptTail { node: id(node) },
            Action::CrashAll => A::CrashAll,
            Action::PowerLossAll { torn } => A::PowerLossAll { torn: *torn },
            Action::RestartAll => A::RestartAll,
            Action::AddMember(node, learner) => A::AddMember {
                node: id(node),
                learner: *learner,
            },
            Action::RemoveMember(node) => A::RemoveMember { node: id(node) },
            Action::HostilePeer(node) => A::HostilePeer { node: id(node) },
            Action::TransferLeader(node) => A::TransferLeader {
                node: node.as_ref().map(id),
            },
        }
    }
}

/// The node id a hostile peer's certificate of the cluster's CA names: outside every cluster.
const HOSTILE_ID: u64 = 999;

/// One hostile connection to `target` at `address`, claiming to be `claim`; returns how many
/// bytes came back (none if the connection or its TLS handshake was refused).
async fn hostile_attempt(
    address: std::net::SocketAddr,
    target: NodeId,
    claim: NodeId,
    tls: Option<raftchat_node::tls::NodeTls>,
) -> usize {
    use raftchat::raft::{Message, MessageBody};
    use raftchat::types::{LogIndex, Term};
    use raftchat::wire::{Frame, PROTOCOL_VERSION};
    use raftchat_node::tls::Stream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
        return 0;
    };
    let mut stream = match tls {
        None => Stream::Plain(stream),
        Some(tls) => match tls.connect(target, stream).await {
            Ok(stream) => stream,
            Err(_) => return 0,
        },
    };
    let term = Term(HOSTILE_TERM);
    let message = |body| {
        Frame::Raft(Message {
            from: claim,
            to: target,
            term,
            body,
        })
    };
    let frames = [
        Frame::PeerHello {
            version: PROTOCOL_VERSION,
            from: claim,
            cluster_id: 0,
            address: crate::cluster::node_address(claim),
        },
        message(MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: LogIndex(u64::MAX / 2),
            last_log_term: Term(HOSTILE_TERM),
            transfer: true,
        }),
        message(MessageBody::Heartbeat {
            leader_commit: LogIndex(0),
            read_round: 0,
        }),
    ];
    let mut bytes = Vec::new();
    for frame in &frames {
        raftchat::wire::encode(frame, &mut bytes).expect("a valid frame");
    }
    let _ = stream.write_all(&bytes).await;
    let _ = stream.flush().await;
    let mut answered = 0;
    let mut buffer = [0u8; 1024];
    let reading = async {
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            answered += n;
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), reading).await;
    answered
}

/// Where the nemesis's operator requests come from: a node of their own, and a client
/// configuration that knows every node.
struct Admin {
    node: madsim::runtime::NodeHandle,
    config: raftchat_node::client::ClientConfig,
    requests: u64,
}

/// What the nemesis knows of a node.
pub struct SimNode {
    /// madsim's handle to the node.
    pub madsim_id: madsim::task::NodeId,
    /// Its disk, which outlives its processes.
    pub disk: SimDiskHandle,
    /// Its timer rate.
    pub clock: ClockRate,
    /// Its clock drift as drawn for the seed.
    pub drift: f64,
    up: bool,
    paused: bool,
    /// Power losses and torn tails so far: with the seed, the key of the next one's draws.
    disk_faults: u64,
}

impl SimNode {
    /// A running node.
    pub fn new(
        madsim_id: madsim::task::NodeId,
        disk: SimDiskHandle,
        clock: ClockRate,
        drift: f64,
    ) -> SimNode {
        SimNode {
            madsim_id,
            disk,
            clock,
            drift,
            up: true,
            paused: false,
            disk_faults: 0,
        }
    }
}

/// Carries out actions and keeps track of what is broken.
pub struct Nemesis {
    world: Arc<World>,
    handle: Handle,
    nodes: BTreeMap<NodeId, SimNode>,
    /// Directed links currently clogged between nodes.
    clogged_links: BTreeSet<(NodeId, NodeId)>,
    isolated: BTreeSet<NodeId>,
    /// Nodes a partition leaves on the losing side (unable to be part of a quorum).
    cut_off: BTreeSet<NodeId>,
    rng: ChaCha8Rng,
    seed: u64,
    admin: Option<Admin>,
    /// A machine outside the cluster, for hostile peers.
    hostile: Option<madsim::runtime::NodeHandle>,
}

impl Nemesis {
    /// A nemesis over `nodes`, drawing from `seed`.
    pub fn new(world: Arc<World>, nodes: BTreeMap<NodeId, SimNode>, seed: u64) -> Nemesis {
        let handle = Handle::current();
        Nemesis {
            world,
            handle,
            nodes,
            clogged_links: BTreeSet::new(),
            isolated: BTreeSet::new(),
            cut_off: BTreeSet::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            admin: None,
            hostile: None,
        }
    }

    /// Lets the nemesis make operator requests (membership changes, transfers) from `node`.
    pub fn set_admin(
        &mut self,
        node: madsim::runtime::NodeHandle,
        config: raftchat_node::client::ClientConfig,
    ) {
        self.admin = Some(Admin {
            node,
            config,
            requests: 0,
        });
    }

    /// Sends an operator's request to the leader, as `raftchat member` or `transfer-leader`
    /// would, and traces its outcome; the run goes on meanwhile.
    fn admin_request(&mut self, action: Action) {
        let Some(admin) = &mut self.admin else {
            return;
        };
        admin.requests += 1;
        let mut config = admin.config.clone();
        config.seed = self.seed ^ admin.requests.rotate_left(32);
        let world = self.world.clone();
        let address = |node: NodeId| config.members.get(&node).map(|a| a.to_string());
        let change = match action {
            Action::AddMember(node, learner) => {
                address(node).map(|address| ConfChange::AddLearner {
                    id: node,
                    address,
                    promote: !learner,
                })
            }
            Action::RemoveMember(node) => Some(ConfChange::Remove { id: node }),
            _ => None,
        };
        admin.node.spawn(async move {
            let mut client = raftchat_node::client::Client::new(config);
            let outcome = match (change, action) {
                (Some(change), _) => match client.change_membership(change).await {
                    Ok(view) => format!(
                        "voters {:?}, learners {:?} at {}",
                        view.membership.voter_ids(),
                        view.membership.learners().collect::<Vec<_>>(),
                        view.index
                    ),
                    Err(error) => error.to_string(),
                },
                (None, Action::TransferLeader(target)) => {
                    match client.transfer_leadership(target).await {
                        Ok(leader) => format!("{leader} leads"),
                        Err(error) => error.to_string(),
                    }
                }
                (None, _) => "no address".to_string(),
            };
            world.trace(None, "operator", || json!({ "outcome": outcome }));
        });
    }

    /// Node ids.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Disk activity summed over every node.
    pub fn disk_totals(&self) -> DiskStats {
        let mut total = DiskStats::default();
        for node in self.nodes.values() {
            let stats = node.disk.stats();
            total.appends += stats.appends;
            total.syncs += stats.syncs;
            total.bytes_written += stats.bytes_written;
        }
        total
    }

    /// Whether a node is running (not killed).
    pub fn is_up(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.up)
    }

    /// Nodes that are down, paused or cut off: impaired for availability.
    pub fn impaired(&self) -> BTreeSet<NodeId> {
        let mut impaired: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.up || n.paused)
            .map(|(&id, _)| id)
            .collect();
        impaired.extend(self.cut_off.iter().copied());
        // A node that refused its log stays down for good.
        impaired.extend(self.world.with(|s| s.checker.stopped_nodes()).into_keys());
        impaired
    }

    /// Whether any partition is in force.
    pub fn partitioned(&self) -> bool {
        !self.clogged_links.is_empty() || !self.isolated.is_empty()
    }

    /// The drawn rng, for callers that pick targets.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Carries out one action.
    pub fn apply(&mut self, action: &Action) {
        self.world.trace(
            None,
            "nemesis",
            || json!({ "action": format!("{action:?}") }),
        );
        match action {
            Action::Crash(node) => self.kill(*node),
            Action::Restart(node) => self.restart(*node),
            Action::PowerLoss {
                node,
                torn,
                corrupt,
            } => self.power_loss(*node, *torn, *corrupt),
            Action::Pause(node) => self.pause(*node, true),
            Action::Resume(node) => self.pause(*node, false),
            Action::Isolate(node) => self.isolate(*node),
            Action::Split(minority) => self.split(minority),
            Action::OneWay(from, to) => {
                self.cut_off.insert(*from);
                self.clog(*from, *to);
            }
            Action::Bridge(node) => self.bridge(*node),
            Action::Heal => self.heal(),
            Action::Latency(min, max) => {
                let (min, max) = (*min, *max);
                NetSim::current().update_config(|c| {
                    c.send_latency = min..max.max(min + Duration::from_nanos(1))
                });
            }
            Action::ClockDrift(node, factor) => {
                if let Some(n) = self.nodes.get(node) {
                    n.clock.set(*factor);
                }
            }
            Action::CorruptTail(node) => self.corrupt_tail(*node),
            Action::CrashAll => self.node_ids().into_iter().for_each(|n| self.kill(n)),
            Action::PowerLossAll { torn } => {
                let torn = *torn;
                self.node_ids()
                    .into_iter()
                    .for_each(|n| self.power_loss(n, torn, false));
            }
            Action::RestartAll => self.node_ids().into_iter().for_each(|n| self.restart(n)),
            Action::AddMember(..) | Action::RemoveMember(_) | Action::TransferLeader(_) => {
                self.admin_request(action.clone())
            }
            Action::HostilePeer(node) => self.hostile_peer(*node),
        }
    }

    /// Lets the nemesis attack nodes from `node`, a machine outside the cluster.
    pub fn set_hostile(&mut self, node: madsim::runtime::NodeHandle) {
        self.hostile = Some(node);
    }

    /// From the hostile machine: connects to `target` three times and each time claims to be
    /// another member, sending a hello, a vote request and a heartbeat of [`HOSTILE_TERM`]: in
    /// clear, with a certificate of another CA, and with a certificate of this cluster's CA
    /// that names an outsider. Each attempt's outcome (bytes answered) is traced; whether any
    /// got in, the checker sees in the members' terms.
    fn hostile_peer(&mut self, target: NodeId) {
        let (Some(hostile), Some(cluster_ca)) = (&self.hostile, self.world.tls.clone()) else {
            return self.world.trace(
                None,
                "nemesis_skipped",
                || json!({ "event": "hostile_peer", "why": "needs cluster.tls = true" }),
            );
        };
        let world = self.world.clone();
        let address = crate::cluster::node_address(target);
        let claim = self
            .node_ids()
            .into_iter()
            .find(|&id| id != target)
            .unwrap_or(NodeId(1));
        hostile.spawn(async move {
            let stranger = raftchat_node::tls::Authority::new(u64::MAX).expect("a CA");
            let attempts = [
                ("clear", None),
                (
                    "other_ca",
                    Some(stranger.node_tls(claim).expect("a certificate")),
                ),
                (
                    "impostor",
                    Some(cluster_ca.node_tls(NodeId(HOSTILE_ID)).expect("a cert")),
                ),
            ];
            for (mode, tls) in attempts {
                let answered = hostile_attempt(address, target, claim, tls).await;
                world.trace(None, "hostile_peer", || {
                    json!({ "target": target.0, "claims": claim.0, "mode": mode,
                            "answered_bytes": answered })
                });
            }
        });
    }

    fn kill(&mut self, node: NodeId) {
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        if !n.up {
            return;
        }
        n.up = false;
        n.paused = false;
        self.handle.kill(n.madsim_id);
        self.world.with(|s| s.checker.node_killed(node));
        self.world.trace(Some(node), "crash", || json!({}));
    }

    fn restart(&mut self, node: NodeId) {
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        if n.up {
            return;
        }
        n.up = true;
        n.clock.set(n.drift);
        self.handle.restart(n.madsim_id);
        self.world.trace(Some(node), "restart", || json!({}));
    }

    /// The draws of a node's next disk fault: keyed by the seed, the node and how many it has
    /// had, not taken from the shared stream, so a replayed or shrunk schedule tears and
    /// corrupts a disk as the original run did.
    fn disk_fault_rng(&mut self, node: NodeId) -> Option<ChaCha8Rng> {
        let n = self.nodes.get_mut(&node)?;
        n.disk_faults += 1;
        let key = self.seed ^ node.0.rotate_left(48) ^ n.disk_faults.rotate_left(24);
        Some(ChaCha8Rng::seed_from_u64(key))
    }

    fn power_loss(&mut self, node: NodeId, torn: bool, corrupt: bool) {
        self.kill(node);
        let Some(mut rng) = self.disk_fault_rng(node) else {
            return;
        };
        let n = &self.nodes[&node];
        let what = n.disk.power_fail(&mut rng, torn, corrupt);
        self.world
            .trace(Some(node), "power_loss", || json!({ "disk": what }));
    }

    fn corrupt_tail(&mut self, node: NodeId) {
        self.kill(node);
        let Some(mut rng) = self.disk_fault_rng(node) else {
            return;
        };
        let n = &self.nodes[&node];
        let garbage_len = rng.gen_range(1..64);
        let garbage: Vec<u8> = (0..garbage_len).map(|_| rng.gen()).collect();
        n.disk.append_unsynced_garbage(&garbage);
        let what = n.disk.power_fail(&mut rng, true, true);
        self.world
            .trace(Some(node), "corrupt_tail", || json!({ "disk": what }));
    }

    fn pause(&mut self, node: NodeId, pause: bool) {
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        if !n.up || n.paused == pause {
            return;
        }
        n.paused = pause;
        if pause {
            self.handle.pause(n.madsim_id);
        } else {
            self.handle.resume(n.madsim_id);
        }
        let kind = if pause { "pause" } else { "resume" };
        self.world.trace(Some(node), kind, || json!({}));
    }

    fn isolate(&mut self, node: NodeId) {
        let Some(n) = self.nodes.get(&node) else {
            return;
        };
        NetSim::current().clog_node(n.madsim_id);
        self.isolated.insert(node);
        self.cut_off.insert(node);
        self.world
            .trace(Some(node), "partition", || json!({ "cut": "isolate" }));
    }

    fn clog(&mut self, from: NodeId, to: NodeId) {
        let (Some(a), Some(b)) = (self.nodes.get(&from), self.nodes.get(&to)) else {
            return;
        };
        NetSim::current().clog_link(a.madsim_id, b.madsim_id);
        self.clogged_links.insert((from, to));
        self.world.trace(
            None,
            "partition",
            || json!({ "cut": "link", "from": format!("{from}"), "to": format!("{to}") }),
        );
    }

    fn split(&mut self, minority: &[NodeId]) {
        let others: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|n| !minority.contains(n))
            .collect();
        self.cut_off.extend(minority.iter().copied());
        for &a in minority {
            for &b in &others {
                self.clog(a, b);
                self.clog(b, a);
            }
        }
    }

    fn bridge(&mut self, bridge: NodeId) {
        let others: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|&n| n != bridge)
            .collect();
        let (left, right) = others.split_at(others.len() / 2);
        self.cut_off.extend(left.iter().copied());
        for &a in left {
            for &b in right {
                self.clog(a, b);
                self.clog(b, a);
            }
        }
    }

    fn heal(&mut self) {
        let net = NetSim::current();
        for node in std::mem::take(&mut self.isolated) {
            net.unclog_node(self.nodes[&node].madsim_id);
        }
        for (from, to) in std::mem::take(&mut self.clogged_links) {
            net.unclog_link(self.nodes[&from].madsim_id, self.nodes[&to].madsim_id);
        }
        self.cut_off.clear();
        self.world.trace(None, "heal", || json!({}));
    }

    /// Kills every node and empties its disk: the run is over. madsim does not tear down the
    /// tasks still pending when a runtime is dropped, so a run must end them itself, or their
    /// state outlives the run and a long sweep runs out of memory.
    pub fn shutdown(&mut self) {
        for node in self.nodes.values_mut() {
            if node.up {
                self.handle.kill(node.madsim_id);
                node.up = false;
            }
            node.disk.release();
        }
    }

    /// Ends every fault: heal partitions, resume paused nodes, restart killed ones, restore
    /// each node's drawn clock rate. Nodes that refused to start (a corrupt log) stay down.
    pub fn heal_all(&mut self) {
        self.heal();
        for node in self.node_ids() {
            self.pause(node, false);
            self.restart(node);
            if let Some(n) = self.nodes.get(&node) {
                n.clock.set(n.drift);
            }
        }
    }
}
