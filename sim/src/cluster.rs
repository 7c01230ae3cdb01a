//! One seeded run: a fresh madsim runtime, a cluster of real node runtimes on simulated disks,
//! clients running the real client library, and the nemesis; then the liveness and
//! convergence phases and the end-of-run checks. Nothing outlives the runtime, so a seed that
//! fails in a sweep fails the same way alone.
//!
//! Phases: (1) faults: the workload runs while the nemesis injects timed and random faults;
//! (2) liveness: every fault is healed and every node restarted, and a new command must commit
//! within the scenario's bound; (3) convergence: every running node must reach the same applied
//! index and chat digest within the bound.
//!
//! Phases 2 and 3 are the quiet window: every fault is healed, message loss, duplication and
//! reordering included (the fault layer stands down), so that the window is fault-free in
//! every scenario, not only in those that draw no message faults. In it the cluster must
//! settle under one leader within bounds derived from its timeouts ([`quiet_bounds`]), and then
//! hold that term: an election with nothing faulted is a bug (`Checker::check_quiet`).

use crate::checker::{Failure, QuietBounds};
use crate::disk::{DiskStats, SimDiskHandle};
use crate::faults::{FaultyOutbox, MessageFaults};
use crate::history::{Completion, HistoryEvent};
use crate::linearizability::{self, Verdict};
use crate::nemesis::{Nemesis, SimNode};
use crate::random_faults::RandomFaults;
use crate::scenario::{Drawn, Event, Scenario};
use crate::workload;
use crate::world::{Stats, Violation, World};
use raftchat::chat::Operation;
use raftchat::types::NodeId;
use raftchat_node::auth::{PasswordCost, TokenKey};
use raftchat_node::client::{Client, ClientConfig, SharedLinks};
use raftchat_node::config::{ClockRate, NodeConfig};
use raftchat_node::host::run_node;
use raftchat_node::observer::Observer;
use raftchat_node::tls::Authority;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Options of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Record the event trace, and render the client history (a sweep needs neither unless
    /// it checks determinism; rendering the history alone took 2 % of a run).
    pub trace: bool,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct RunReport {
    /// The drawn swarm parameters, one line.
    pub drawn: String,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// The trace (JSON lines), if recorded.
    pub trace: Option<Vec<u8>>,
    /// The history (JSON lines), if the trace was recorded.
    pub history: Vec<u8>,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// Message and disk counters.
    pub stats: Stats,
    /// Client operations: ok, fail, info.
    pub operations: (usize, usize, usize),
    /// Log entries applied.
    pub applied_entries: usize,
    /// Terms that had a leader.
    pub leader_terms: usize,
    /// Time from the last heal to the first new commit.
    pub recovery: Option<Duration>,
    /// Disk activity summed over every node.
    pub disk: DiskStats,
    /// The linearizability verdict on the history.
    pub linearizability: String,
    /// What the nemesis did in the fault phase, as explicit events with node ids resolved: a
    /// schedule `cargo sim run --schedule` replays in place of the random faults.
    pub schedule: Vec<Event>,
}

const NODE_PORT: u16 = 7000;
/// States the linearizability search may explore when a history lacks log indexes.
const LINEARIZABILITY_BUDGET: usize = 100_000;
/// The most history events reserved at a run's start (what is not written is never touched).
const HISTORY_RESERVED_MAX: usize = 1 << 20;
const SALT_NEMESIS: u64 = 0x6e65_6d65_7369_7300;
const SALT_CLIENT: u64 = 0x636c_6965_6e74_0000;
const SALT_NODE: u64 = 0x6e6f_6465_0000_0000;
const SALT_ADMIN: u64 = 0x6164_6d69_6e00_0000;
const SALT_TOKEN_KEY: u64 = 0x746f_6b65_6e00_0000;

/// Argon2's least cost: the simulator hashes passwords through the servers' own code, but
/// needs no protection from guessing, and thousands of runs must stay fast.
const SIMULATED_PASSWORD_COST: PasswordCost = PasswordCost {
    memory_kib: 8,
    iterations: 1,
};

/// Where node `id` listens in the simulated network.
pub(crate) fn node_address(id: NodeId) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, id.0 as u8)), NODE_PORT)
}

fn client_ip(k: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, (k / 250) as u8, (k % 250 + 1) as u8))
}

/// Runs one seed of one scenario in a fresh runtime on this thread.
pub fn run_seed(scenario: &Scenario, seed: u64, options: RunOptions) -> RunReport {
    let drawn = scenario.draw(seed);
    let summary = drawn.summary(scenario);
    run_drawn(drawn, summary, seed, options)
}

/// Runs one seed with its parameters already drawn (and perhaps changed since: a schedule in
/// place of the random faults, a shrinker's simplification); `summary` is the run's one-line
/// description of them.
pub fn run_drawn(drawn: Drawn, summary: String, seed: u64, options: RunOptions) -> RunReport {
    let mut config = madsim::Config::default();
    let (min, max) = drawn.latency_ms;
    config.net.send_latency =
        Duration::from_millis(min)..Duration::from_millis(max) + Duration::from_micros(1);
    let mut runtime = madsim::runtime::Runtime::with_seed_and_config(seed, config);
    let limit = drawn.duration_secs + 4 * drawn.liveness_bound_secs + 120;
    runtime.set_time_limit(Duration::from_secs(limit));
    let drawn_for_run = drawn.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(simulate(drawn_for_run, seed, options))
    }));
    match result {
        Ok(mut report) => {
            report.drawn = summary;
            report
        }
        Err(panic) => panic_report(summary, panic),
    }
}

fn panic_report(drawn: String, panic: Box<dyn std::any::Any + Send>) -> RunReport {
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into());
    let check = if message.contains("time limit") {
        "time_limit"
    } else {
        "panic"
    };
    let failure = Failure {
        check,
        node: None,
        detail: message,
    };
    RunReport {
        drawn,
        violation: Some(Violation {
            failure,
            time: Duration::ZERO,
            context: String::new(),
        }),
        trace: None,
        history: Vec::new(),
        simulated: Duration::ZERO,
        stats: Stats::default(),
        operations: (0, 0, 0),
        applied_entries: 0,
        leader_terms: 0,
        recovery: None,
        disk: DiskStats::default(),
        linearizability: String::new(),
        schedule: Vec::new(),
    }
}

fn node_config(drawn: &Drawn, id: NodeId, members: &BTreeMap<NodeId, SocketAddr>) -> NodeConfig {
    let mut config = NodeConfig::new(id, members.clone());
    config.tick_interval = Duration::from_millis(drawn.tick_ms);
    config.election_ticks = drawn.election_ticks;
    config.heartbeat_ticks = drawn.heartbeat_ticks;
    config.pre_vote = drawn.pre_vote;
    config.check_quorum = drawn.check_quorum;
    config.read_lease = drawn.read_lease;
    config.eager_commit = drawn.eager_commit;
    config.append_entries_max = drawn.append_entries_max as usize;
    config.inflight_appends_max = drawn.inflight_appends_max as usize;
    config.apply_entries_max = drawn.apply_entries_max as usize;
    config.snapshot_policy = raftchat::replica::SnapshotPolicy {
        log_entries: drawn.snapshot_log_entries,
        log_bytes: drawn.snapshot_log_bytes,
    };
    config.snapshot_catch_up_entries = drawn.catch_up_entries;
    config.snapshot_chunk_bytes = drawn.chunk_bytes as usize;
    config.segment_bytes_max = drawn.segment_bytes;
    config.chat_limits = drawn.chat_limits();
    config.peer_silence_timeout = node_peer_silence_timeout(drawn);
    config
}

/// How long a node waits on a silent peer link before dialling again: half the shortest
/// election timeout, so a link stalled by a healed partition comes back before the next
/// election would.
fn node_peer_silence_timeout(drawn: &Drawn) -> Duration {
    let election_timeout = Duration::from_millis(drawn.tick_ms * u64::from(drawn.election_ticks.0));
    (election_timeout / 2).max(Duration::from_millis(50))
}

/// Creates one node whose every life recovers from the same simulated disk. `members` is the
/// bootstrap configuration; a node outside it (a spare) starts as a new member waiting to be
/// added.
fn spawn_node(
    drawn: &Drawn,
    seed: u64,
    id: NodeId,
    members: &BTreeMap<NodeId, SocketAddr>,
    world: &Arc<World>,
) -> SimNode {
    let disk = SimDiskHandle::new(seed ^ SALT_NODE ^ id.0);
    let drift = drawn
        .clock_drift
        .get(id.0 as usize - 1)
        .copied()
        .unwrap_or(1.0);
    let clock = ClockRate::new(drift);
    let faults = MessageFaults {
        loss: drawn.loss,
        duplicate: drawn.duplicate,
        reorder: drawn.reorder,
        reorder_delay_ms: drawn.reorder_delay_ms,
        kind: crate::scenario::MESSAGE_KINDS
            .into_iter()
            .find(|&kind| kind == drawn.aim_kind),
    };
    let lives = Arc::new(AtomicU64::new(0));
    let mut base = node_config(drawn, id, members);
    base.auth.token_key = Some(world.token_key.clone());
    base.auth.password_cost = SIMULATED_PASSWORD_COST;
    if let Some(authority) = &world.tls {
        base.tls = Some(
            authority
                .node_tls(id)
                .expect("a certificate from the run's CA"),
        );
    }
    if !members.contains_key(&id) {
        base.joining = true;
        base.listen = node_address(id);
    }
    let (init_disk, init_clock, init_world) = (disk.clone(), clock.clone(), world.clone());
    let init = move || {
        let life = lives.fetch_add(1, Ordering::Relaxed);
        let life_seed = seed ^ SALT_NODE ^ (id.0 << 40) ^ life;
        let mut config = base.clone();
        config.seed = life_seed;
        config.clock = init_clock.clone();
        let disk = init_disk.disk();
        let world = init_world.clone();
        let key = life_seed.rotate_left(17);
        async move {
            let observer: Arc<dyn Observer> = world.clone();
            let wrap = |outbox| FaultyOutbox::new(outbox, faults, key, world, id);
            // A node that refuses its log has reported why; it stays down.
            let _ = run_node(config, disk, wrap, observer).await;
        }
    };
    let address = node_address(id);
    let node = madsim::runtime::Handle::current()
        .create_node()
        .name(format!("n{}", id.0))
        .ip(address.ip())
        .init(init)
        .build();
    SimNode::new(node.id(), disk, clock, drift)
}

fn client_config(
    drawn: &Drawn,
    world: &World,
    members: &BTreeMap<NodeId, SocketAddr>,
    seed: u64,
) -> ClientConfig {
    let mut config = ClientConfig::new(members.clone());
    config.tls = world.client_tls();
    config.operation_timeout = Duration::from_millis(drawn.request_timeout_ms);
    let election_timeout = Duration::from_millis(drawn.tick_ms * u64::from(drawn.election_ticks.1));
    config.attempt_timeout = (election_timeout * 2).min(config.operation_timeout);
    config.seed = seed;
    config.reads = drawn.read_mode.client_mode();
    config
}

async fn simulate(drawn: Drawn, seed: u64, options: RunOptions) -> RunReport {
    let mut world = World::new(drawn.nodes as usize, options.trace);
    world.token_key = TokenKey::new(ChaCha8Rng::seed_from_u64(seed ^ SALT_TOKEN_KEY).gen());
    if drawn.tls {
        let authority = Authority::new(seed).expect("a CA for the run");
        world.tls = Some(Arc::new(authority));
    }
    let world = Arc::new(world);
    // The history is reserved for the operations the workload will likely invoke and complete
    // (growing it doubled it some twelve times a run, a copy and fresh pages each time).
    let expected = f64::from(drawn.clients) * drawn.rate_per_client * drawn.duration_secs as f64;
    let events = (2.0 * expected).min(HISTORY_RESERVED_MAX as f64) as usize;
    world.with(|s| {
        s.history.limits = drawn.chat_limits();
        s.history.events.reserve(events);
    });
    let members: BTreeMap<NodeId, SocketAddr> = (1..=u64::from(drawn.nodes))
        .map(|i| (NodeId(i), node_address(NodeId(i))))
        .collect();
    // Every node that may ever be a member: clients know them all, as a client that has read
    // the configuration would.
    let slots: BTreeMap<NodeId, SocketAddr> = (1..=u64::from(drawn.nodes + drawn.spare_nodes))
        .map(|i| (NodeId(i), node_address(NodeId(i))))
        .collect();
    let nodes = slots
        .keys()
        .map(|&id| (id, spawn_node(&drawn, seed, id, &members, &world)))
        .collect();
    let mut nemesis = Nemesis::new(world.clone(), nodes, seed ^ SALT_NEMESIS);
    let fault_end = Duration::from_secs(drawn.duration_secs);
    let handle = madsim::runtime::Handle::current();
    let mut helpers = Vec::new();
    if drawn.spare_nodes > 0
        || drawn.membership_per_min > 0.0
        || drawn.transfer_per_min > 0.0
        || drawn.events.iter().any(|e| e.action.is_membership())
    {
        let admin = handle
            .create_node()
            .name("admin")
            .ip(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 2)))
            .build();
        helpers.push(admin.id());
        let config = client_config(&drawn, &world, &slots, seed ^ SALT_ADMIN);
        nemesis.set_admin(admin, config);
    }
    if drawn
        .events
        .iter()
        .any(|e| matches!(e.action, crate::scenario::Action::HostilePeer { .. }))
    {
        let hostile = handle
            .create_node()
            .name("hostile")
            .ip(IpAddr::V4(Ipv4Addr::new(10, 3, 0, 1)))
            .build();
        helpers.push(hostile.id());
        nemesis.set_hostile(hostile);
    }
    // Clients run `clients_per_host` to a machine; those that share one share its
    // connections to the nodes (one client alone on its machine has its own, as before).
    let per_host = drawn.clients_per_host.max(1);
    let mut host = None;
    for k in 0..drawn.clients {
        let client_seed = seed ^ SALT_CLIENT ^ u64::from(k);
        let config = client_config(&drawn, &world, &slots, client_seed);
        if k % per_host == 0 {
            let node = handle
                .create_node()
                .name(format!("c{k}"))
                .ip(client_ip(k / per_host))
                .build();
            host = Some((node, (per_host > 1).then(SharedLinks::new)));
        }
        let (node, links) = host.as_ref().expect("made for the first client");
        let rng = ChaCha8Rng::seed_from_u64(client_seed.rotate_left(29));
        node.spawn(workload::run_client(
            k,
            config,
            links.clone(),
            drawn.clone(),
            world.clone(),
            rng,
            fault_end,
        ));
    }
    let schedule = RandomFaults::new(&drawn)
        .run(&mut nemesis, &world, fault_end)
        .await;
    nemesis.heal_all();
    world.heal_messages();
    match quiet_bounds(&drawn) {
        Ok(bounds) => {
            let now = world.now();
            world.trace(None, "quiet_window", || {
                serde_json::json!({ "terms_max": bounds.terms_max,
                    "settle_max_ms": bounds.settle_max.map(|d| d.as_millis() as u64),
                    "grace_ms": bounds.grace.as_millis() as u64,
                    "derivation": bounds.derivation.clone() })
            });
            world.with(|s| s.checker.open_quiet_window(bounds, now));
        }
        Err(reason) => world.trace(
            None,
            "quiet_unchecked",
            || serde_json::json!({ "reason": reason }),
        ),
    }
    let probe = handle
        .create_node()
        .name("probe")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1)))
        .build();
    let recovery = if world.violated() {
        None
    } else {
        let task = liveness_and_convergence(drawn.clone(), slots.clone(), world.clone(), seed);
        probe.spawn(task).await.ok().flatten()
    };
    // Let operations still in flight finish or time out before the history is closed.
    tokio::time::sleep(Duration::from_millis(drawn.request_timeout_ms)).await;
    let mut report = finish(&world, recovery, nemesis.disk_totals());
    report.schedule = schedule;
    helpers.push(probe.id());
    end_run(&mut nemesis, &helpers, &world).await;
    report
}

/// Kills everything and lets simulated time pass, so that madsim drops every task of the run
/// (it does not when the runtime is dropped), then frees the run's shared state.
async fn end_run(nemesis: &mut Nemesis, helpers: &[madsim::task::NodeId], world: &World) {
    nemesis.shutdown();
    let handle = madsim::runtime::Handle::current();
    for &node in helpers {
        handle.kill(node);
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    world.with(|s| *s = crate::world::WorldState::default());
}

/// Phase 2 and 3: a new command commits within the bound; then all running nodes converge.
async fn liveness_and_convergence(
    drawn: Drawn,
    members: BTreeMap<NodeId, SocketAddr>,
    world: Arc<World>,
    seed: u64,
) -> Option<Duration> {
    let bound = Duration::from_secs(drawn.liveness_bound_secs);
    let healed_at = world.now();
    let mut config = client_config(&drawn, &world, &members, seed ^ SALT_CLIENT ^ 0xffff);
    config.operation_timeout = bound;
    let mut client = Client::new(config);
    let operation = Operation::CreateAccount {
        username: "probe".into(),
    };
    let process = drawn.clients;
    record_probe(&world, process, &operation, None, None);
    let result = client.execute(operation.clone()).await;
    let command_id = client.last_command();
    match result {
        Ok(done) => {
            let completion = Some((Completion::Ok, Some(done)));
            record_probe(&world, process, &operation, completion, command_id);
        }
        Err(error) => {
            let completion = Some((Completion::Info, None));
            record_probe(&world, process, &operation, completion, command_id);
            let detail = format!(
                "no command committed within {bound:?} after the last fault healed: {error}"
            );
            world.violate(Failure {
                check: "liveness",
                node: None,
                detail,
            });
            return None;
        }
    }
    let recovery = world.now() - healed_at;
    // The members of the configuration in force converge; a removed node, or a spare never
    // added, is left behind.
    let members = match client.membership().await {
        Ok(view) => members
            .into_iter()
            .filter(|(id, _)| view.membership.is_member(*id))
            .collect(),
        Err(_) => members,
    };
    converge(&mut client, &members, &world, healed_at + bound).await;
    read_final_state(&mut client, &drawn, &world, process).await;
    if !world.violated() {
        let now = world.now();
        match world.with(|s| s.checker.close_quiet_window(now)) {
            Ok(Some(outcome)) => world.trace(None, "settled", || {
                serde_json::json!({ "after_ms": outcome.settled_after.as_millis() as u64,
                    "terms_started": outcome.terms_started })
            }),
            Ok(None) => {}
            Err(failure) => world.violate(failure),
        }
    }
    Some(recovery)
}

/// Election rounds the recovery after the last heal may take (terms started before the
/// cluster settles under one leader) when election timeouts are spread wider than a round
/// trip: one per node that comes back with a higher term (without pre-vote it deposes the
/// leader) or splits a vote. Tuned on the scenario library (the most observed is in the
/// README), with a margin; a narrower spread has no bound (see `quiet_bounds`).
const RECOVERY_ELECTION_ROUNDS_MAX: u64 = 6;

/// The bounds of the quiet window, from the run's timing: every node's timers run at its drawn
/// clock rate again after the heal, so a timeout of T ticks lasts between
/// T × tick_ms / fastest rate and T × tick_ms / slowest rate. Refused, with the reason, when the
/// timing itself allows spurious elections: when the slowest leader's heartbeat interval, a
/// message's latency and a tick of slack may exceed the fastest follower's shortest election
/// timeout, an election with nothing faulted is no bug.
fn quiet_bounds(drawn: &Drawn) -> Result<QuietBounds, String> {
    let rates = drawn.clock_drift.iter().copied();
    let rate_min = rates.clone().fold(1.0_f64, f64::min);
    let rate_max = rates.fold(1.0_f64, f64::max);
    let tick_ms = drawn.tick_ms as f64;
    let (election_min, election_max) = drawn.election_ticks;
    let latency_max_ms = drawn
        .events
        .iter()
        .filter_map(|event| match event.action {
            crate::scenario::Action::Latency { ms } => Some(ms[1]),
            _ => None,
        })
        .fold(drawn.latency_ms.1, u64::max) as f64;
    let heartbeat_ms = f64::from(drawn.heartbeat_ticks) * tick_ms / rate_min;
    let election_shortest_ms = f64::from(election_min) * tick_ms / rate_max;
    let slack_ms = tick_ms / rate_min;
    if heartbeat_ms + latency_max_ms + slack_ms >= election_shortest_ms {
        return Err(format!(
            "a heartbeat every {heartbeat_ms:.1}ms (slowest clock) plus {latency_max_ms}ms \
             latency and a {slack_ms:.1}ms tick may outlast the shortest election timeout, \
             {election_shortest_ms:.1}ms (fastest clock)"
        ));
    }
    let election_longest_ms = f64::from(election_max) * tick_ms / rate_min;
    // A round: the longest timeout, then a pre-vote and a vote, each a round trip.
    let round_ms = election_longest_ms + 4.0 * latency_max_ms;
    // A link to a node that was down is noticed silent, then redialled after a backoff that
    // grew while the node was down (up to the runtime's largest).
    let backoff_max = NodeConfig::new(NodeId(1), BTreeMap::new())
        .reconnect_backoff
        .1;
    let redial_ms =
        (node_peer_silence_timeout(drawn) + backoff_max).as_secs_f64() * 1000.0 + latency_max_ms;
    // Candidates whose timeouts fire within a round trip of each other split the vote: the
    // narrower the spread of timeouts against the round trip, the more rounds it takes.
    // Timeouts are whole ticks in [min, max): max - 1 - min ticks apart at most (at least one).
    let spread_ticks = election_max.saturating_sub(election_min + 1).max(1);
    let spread_ms = f64::from(spread_ticks) * tick_ms / rate_max;
    let round_trip_ms = 2.0 * latency_max_ms;
    // A cluster can look settled the moment everything heals (every node still following the
    // leader it had), while a link the last partition stalled is yet to be noticed and
    // redialled: a follower on it may time out meanwhile (deposed-long-tail seed 669). So
    // the settled state must outlast a redial as well as an election timeout.
    let grace_ms = election_longest_ms + redial_ms;
    let grace_text = format!(
        "a settled cluster must hold for one longest election timeout plus a redial \
         ({grace_ms:.0}ms) before a change counts as spurious"
    );
    if spread_ms < round_trip_ms {
        // Raft's randomized elections settle in a few rounds only when timeouts are spread
        // wider than a round trip; narrower, candidates split the vote round after round with
        // a probability no bound covers (restart-storm seed 1157 took 19 rounds). Progress is
        // still checked (liveness), and a settled cluster must stay settled.
        return Ok(QuietBounds {
            terms_max: None,
            settle_max: None,
            grace: Duration::from_secs_f64(grace_ms / 1000.0),
            derivation: format!(
                "no bound on recovery: election timeouts spread over {spread_ms:.1}ms, narrower \
                 than the {round_trip_ms}ms round trip, split votes without limit; {grace_text}"
            ),
        });
    }
    // Without pre-vote, a node that restarted and has not heard the leader yet (its links
    // still being redialled) campaigns alone once per election timeout, each time in a new
    // term, which it brings back to the cluster when it is reached.
    let lonely_terms = if drawn.pre_vote {
        0
    } else {
        (redial_ms / election_shortest_ms).ceil() as u64
    };
    let rounds = RECOVERY_ELECTION_ROUNDS_MAX + lonely_terms;
    let settle_ms = redial_ms + rounds as f64 * round_ms + heartbeat_ms;
    let derivation = format!(
        "{rounds} election rounds ({RECOVERY_ELECTION_ROUNDS_MAX}, plus {lonely_terms} a \
         restarted node may campaign alone without pre-vote while its links are redialled; \
         timeouts spread over {spread_ms:.1}ms, wider than the {round_trip_ms}ms round trip) \
         of {round_ms:.0}ms (the longest election timeout, \
         {election_max} ticks x {tick_ms}ms / slowest clock rate {rate_min:.2}, plus 4 x \
         {latency_max_ms}ms latency), after {redial_ms:.0}ms to notice a silent peer link and \
         redial it after the longest backoff, plus \
         one {heartbeat_ms:.0}ms heartbeat: {settle_ms:.0}ms; {grace_text}"
    );
    Ok(QuietBounds {
        terms_max: Some(rounds),
        settle_max: Some(Duration::from_secs_f64(settle_ms / 1000.0)),
        grace: Duration::from_secs_f64(grace_ms / 1000.0),
        derivation,
    })
}

/// Reads every account and inbox back into the history, so the linearizability check covers
/// the final state: every acknowledged message must be there exactly once.
async fn read_final_state(client: &mut Client, drawn: &Drawn, world: &World, process: u32) {
    let mut reads = vec![Operation::ListAccounts {
        pattern: "*".into(),
    }];
    for user in 0..drawn.users {
        let username = format!("u{user}");
        reads.push(Operation::FetchMessages {
            username,
            first_message_id: 1,
        });
    }
    for operation in reads {
        if world.violated() {
            return;
        }
        record_probe(world, process, &operation, None, None);
        let result = client.execute(operation.clone()).await;
        let command_id = client.last_command();
        let completion = match result {
            Ok(done) => (Completion::Ok, Some(done)),
            Err(_) => (Completion::Info, None),
        };
        record_probe(world, process, &operation, Some(completion), command_id);
    }
}

fn record_probe(
    world: &World,
    process: u32,
    operation: &Operation,
    completion: Option<(Completion, Option<raftchat_node::client::Completed>)>,
    command_id: Option<(raftchat::types::ClientId, u64)>,
) {
    let time = world.now();
    let (completion, done) = match completion {
        Some((c, done)) => (Some(c), done),
        None => (None, None),
    };
    let event = HistoryEvent {
        process,
        completion,
        operation: operation.clone(),
        index: done.as_ref().map(|d| d.index),
        node: done.as_ref().map(|d| d.node),
        reply: done.map(|d| d.reply),
        command_id,
        acting: None,
        time,
    };
    world.with(|s| s.history.events.push(event));
}

async fn converge(
    client: &mut Client,
    members: &BTreeMap<NodeId, SocketAddr>,
    world: &World,
    deadline: Duration,
) {
    let stopped = world.with(|s| s.checker.stopped_nodes());
    let mut last = BTreeMap::new();
    while world.now() < deadline {
        last.clear();
        for &node in members.keys().filter(|n| !stopped.contains_key(n)) {
            let status = client.status(node).await.ok();
            last.insert(node, status.map(|s| (s.raft.applied_index, s.chat_digest)));
        }
        let values: Vec<_> = last.values().collect();
        if values.iter().all(|v| v.is_some()) && values.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detail = format!("replicas did not converge: (applied index, digest) per node {last:?}");
    world.violate(Failure {
        check: "convergence",
        node: None,
        detail,
    });
}

/// Closes the run: fills in the index of unknown operations, checks durability, and reports.
fn finish(world: &World, recovery: Option<Duration>, disk: DiskStats) -> RunReport {
    let simulated = world.now();
    world.with(|s| {
        for event in s.history.events.iter_mut() {
            let Some((client_id, sequence)) = event.command_id else {
                continue;
            };
            let applied_at = s.checker.command_index(client_id, sequence);
            match event.completion {
                Some(Completion::Info) => event.index = applied_at,
                // A write takes effect where it was first applied; a retried read was evaluated
                // again, so its index is the state its reply saw.
                Some(Completion::Ok) if !event.operation.is_read_only() => {
                    if applied_at.is_none() && s.violation.is_none() {
                        let detail =
                            format!("acknowledged {:?} is not in the log", event.operation);
                        let failure = Failure {
                            check: "durability",
                            node: None,
                            detail,
                        };
                        s.violation = Some(Violation {
                            failure,
                            time: simulated,
                            context: String::new(),
                        });
                    }
                    event.index = applied_at.or(event.index);
                }
                _ => {}
            }
        }
        let verdict = linearizability::check(&s.history, LINEARIZABILITY_BUDGET);
        if let Verdict::NotLinearizable { reason, slice, at } = &verdict {
            if s.violation.is_none() {
                let failure = Failure {
                    check: "linearizability",
                    node: None,
                    detail: reason.clone(),
                };
                // Stamped when the anomaly was complete, not when the run ended, so the replay
                // line points at it and a shrink may cut everything after it.
                s.violation = Some(Violation {
                    failure,
                    time: *at,
                    context: slice.clone(),
                });
            }
        }
        let count = |c: Completion| {
            s.history
                .events
                .iter()
                .filter(|e| e.completion == Some(c))
                .count()
        };
        RunReport {
            drawn: String::new(),
            violation: s.violation.clone(),
            trace: s.trace.as_ref().map(|t| t.bytes().to_vec()),
            history: if s.trace.is_some() {
                s.history.to_json_lines()
            } else {
                Vec::new()
            },
            simulated,
            stats: s.stats,
            operations: (
                count(Completion::Ok),
                count(Completion::Fail),
                count(Completion::Info),
            ),
            applied_entries: s.checker.applied_count(),
            leader_terms: s.checker.leader_terms(),
            recovery,
            disk,
            linearizability: verdict.to_string(),
            schedule: Vec::new(),
        }
    })
}
