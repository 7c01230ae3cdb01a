//! Scenario files: one fault story per TOML file, and the per-seed draw of its parameters.
//!
//! A scenario tells the simulator which cluster to build, how long to run it, what the network
//! and the clients do, and which faults to inject: at random (`[faults]`, as expected counts per
//! simulated minute) and on a timetable (`[[events]]`). A run has two phases: the fault phase
//! (`run.duration_secs` of workload and faults), then the liveness phase, in which every fault
//! heals and a leader must be elected and a new command committed within
//! `run.liveness_bound_secs`.
//!
//! The first line of a scenario is a comment telling its story (`# the leader crashes while a
//! client retries`); it becomes [`Scenario::story`]. A file without one loads with an empty
//! story; callers that require one check it themselves.
//!
//! # Swarm parameters
//!
//! Keys marked *param* take one value or an inclusive range `[min, max]`. A range is drawn anew
//! for every seed ([`Scenario::draw`]), so a sweep explores many configurations, as
//! TigerBeetle's VOPR does (swarm testing): `loss = [0.0, 0.1]` gives each seed its own loss
//! probability. `cluster.nodes` takes one count or a list to pick from (`nodes = [3, 5, 7]`).
//! The drawn values are printed next to the seed ([`Drawn::summary`]), and the same scenario and
//! seed always draw the same values. Keys marked *pair* always take `[min, max]` and are not
//! drawn: the whole range is used within every run (one latency per message, one downtime per
//! fault, and so on).
//!
//! # Every key, with its default
//!
//! Every section and every key is optional. The file below is the empty file spelled out: each
//! key is set to its default (the one `[[events]]` table is an example; there are no events
//! by default).
//!
//! ```toml
//! # the story: what this scenario exercises, in one line
//!
//! [cluster]
//! nodes = 3                  # 1..=7, or a list to pick one from per seed, e.g. [3, 5, 7]
//! tick_ms = 10               # param, 1..=1000: simulated length of one Raft tick
//! election_ticks = [10, 20]  # [min, max): election timeout in ticks; min > heartbeat_ticks
//!                            #   (its max, if a range), max >= min + 2, max <= 10000
//! heartbeat_ticks = 2        # param, >= 1: ticks between a leader's heartbeats
//! pre_vote = true            # Raft thesis §9.6; or [true, false] to draw it per seed
//! check_quorum = true        # a leader steps down when it cannot hear a quorum; or a list
//! append_entries_max = 1024  # param, 1..=1024: most entries per AppendEntries (1 splits every
//!                            #   batch)
//! inflight_appends_max = 64  # param, 1..=64: most unacknowledged AppendEntries per follower
//!                            #   (1 waits for each answer; small values keep the window full)
//! apply_entries_max = 4096   # param, 1..=4096: most committed entries applied in one turn of
//!                            #   a node's loop (1 applies entry by entry)
//! read_lease = false         # lease reads (thesis §6.4.1); or [true, false]. Needs
//!                            #   check-quorum: a seed that draws check_quorum = false has none
//! eager_commit = false       # a leader tells followers of every commit at once (a heartbeat
//!                            #   when no append carries it); or [true, false]
//! tls = false                # TLS on every link (a CA and a certificate per node, Ed25519);
//!                            #   or [true, false]
//! spare_nodes = 0            # 0..=4: nodes past `nodes` that start outside the cluster, to be
//!                            #   added (`add_member`, or random membership changes)
//!
//! [snapshot]                 # snapshots and compaction: tiny by default, so every run
//!                            #   snapshots, compacts and installs all the time
//! log_entries = [10, 300]    # param, 1..=1000000: entries applied since a node's last
//!                            #   snapshot that call for a new one
//! log_bytes = [4096, 262144] # param, 1..=2^40: command bytes applied since the last snapshot
//!                            #   that call for a new one
//! catch_up_entries = [0, 50] # param, 0..=1000000: entries kept behind a new snapshot
//! chunk_bytes = [256, 65536] # param, 1..=1048576: largest snapshot chunk on the wire
//! segment_bytes = [4096, 65536]  # param, 512..=2^40: a log segment this large is closed
//!
//! [chat]                     # the chat state's retention bounds (fixed at cluster creation)
//! inbox_messages_max = [4, 64]   # param, 1..=1000000: messages one inbox keeps
//! retained_bytes_max = [16384, 1048576]  # param, 16384..=805306368: bytes all inboxes keep
//!
//! [run]
//! duration_secs = 30         # param, 1..=3600: simulated seconds of workload and faults
//! liveness_bound_secs = 20   # 1..=3600: once every fault heals, a leader must appear and a
//!                            #   new command commit within this many simulated seconds
//!
//! [network]
//! latency_ms = [1, 5]        # pair, or one number for a fixed latency; 0..=10000: one-way
//!                            #   latency of every message, uniform in [min, max]
//! loss = 0.0                 # param, in [0, 1): probability a Raft message is dropped
//! duplicate = 0.0            # param, in [0, 1): probability a Raft message is delivered twice
//! reorder = 0.0              # param, in [0, 1): probability a Raft message is held back by
//!                            #   an extra delay, so later messages overtake it
//! reorder_delay_ms = [5, 50] # pair, 0..=60000: that extra delay
//! aim_kinds = ["all"]        # the message kinds loss, duplication and reordering hit: each
//!                            #   seed draws one entry of the list; "all", or one of
//!                            #   request_vote, request_vote_response, pre_vote,
//!                            #   pre_vote_response, append_entries, append_entries_response,
//!                            #   heartbeat, heartbeat_response, install_snapshot,
//!                            #   install_snapshot_response, read_index, read_index_response
//!
//! [workload]
//! clients = 4                # param, 1..=256: concurrent clients, one operation open each
//! users = 8                  # 1..=1000: size of the username pool the clients draw from
//! rate_per_client = 10.0     # param, in (0, 10000]: mean operations per simulated second per
//!                            #   client (clients think between operations)
//! request_timeout_ms = 1000  # 1..=600000: an operation unanswered this long completes as
//!                            #   "info" (outcome unknown)
//! mix = { create = 2, check = 1, list = 1, delete = 1, send = 6, fetch = 3 }
//!                            # relative weights of the six operations; at least one > 0. When
//!                            #   `mix` is given, an operation it leaves out weighs 0.
//! message_chars = [1, 40]    # pair, 0..=1000: length of sent messages in characters (above
//!                            #   500 the service answers MESSAGE_TOO_LONG)
//! # read_share = 0.8         # unset by default; param, in [0, 1]: share of operations that
//!                            #   are reads (check, list, fetch; picked by `mix` weight among
//!                            #   themselves, as writes are among the others). Unset, `mix`
//!                            #   alone decides.
//! # passwords = 0.5          # unset by default (0); param, in [0, 1]: share of creates that
//!                            #   set a password. With passwords, clients log in (now and then
//!                            #   with a wrong password, which must be refused), act as an
//!                            #   account's owner, as another account, as nobody, or with a
//!                            #   forged token, and the model checks who may act on what.
//! clients_per_host = 1       # param, 1..=256: clients that run on one machine and share its
//!                            #   connections, one per node, each carrying all of its clients'
//!                            #   requests at once (the client library's SharedLinks); 1: every
//!                            #   client has connections of its own
//! read_mode = ["leader", "any", "log"]
//!                            # where clients send reads, one mode drawn per seed: "leader"
//!                            #   (ReadIndex on the leader), "any" (each client reads from a
//!                            #   node of its own, followers included), "log" (through the
//!                            #   log, like writes)
//!
//! [faults]                   # random faults; each rate is the expected number of such faults
//!                            #   per simulated minute: param, in [0, 600]
//! crash = 0.0                # kill a node, restart it after a downtime
//! power_loss = 0.0           # kill a node and lose its unsynced writes, restart it later
//! partition = 0.0            # a random partition (isolate a node, majority/minority split,
//!                            #   isolate the leader, one-way link, bridge), healed later
//! pause = 0.0                # pause a node (like a long GC pause), resume it later
//! clock_drift = [1.0, 1.0]   # pair, each in (0.1, 10]: timer rate factor, drawn once per node
//!                            #   per seed (e.g. [0.8, 1.25])
//! torn_writes = 0.0          # param, in [0, 1]: probability a power loss keeps a torn prefix
//!                            #   of the unsynced tail instead of losing it cleanly
//! corrupt_tail = 0.0         # param, in [0, 1]: probability a power loss also flips a byte in
//!                            #   the surviving tail
//! membership = 0.0           # random membership changes: add a spare node (as a learner
//!                            #   promoted once caught up) or remove a member (never below
//!                            #   `nodes` voters), each drawn when it fires
//! transfer = 0.0             # random leadership transfers, to a random voter or the most
//!                            #   up-to-date one
//! aim_leader = 0.0           # param, in [0, 1]: share of random crashes, power losses, pauses
//!                            #   and partitions aimed at the current leader (a partition then
//!                            #   isolates it) rather than at a random healthy node
//! aim_transfer_target = 0.0  # param, in [0, 1]: share of those aimed at the voter a leadership
//!                            #   transfer is bringing up to date, while one is under way
//! aim_learner = 0.0          # param, in [0, 1]: share of those aimed at a learner, while the
//!                            #   leader's configuration has one
//! downtime_ms = [200, 3000]  # pair, 1..=3600000: how long a crashed, paused or partitioned
//!                            #   thing stays down
//! max_down = "minority"      # "minority": random faults never take down a majority at once;
//!                            #   "any": they may
//!
//! [[events]]                 # timed faults, on top of the random ones; run in at_ms order
//! at_ms = 5000               # simulated ms into the run; < run.duration_secs * 1000 (its max)
//! action = "crash"           # one of the actions below
//! node = 1                   # the node it acts on: see "Naming nodes"
//! ```
//!
//! # Actions
//!
//! Each `[[events]]` table has `at_ms`, `action`, and exactly the keys its action lists.
//!
//! | action | keys | effect |
//! |---|---|---|
//! | `crash` | `node` | kill the node (it stays down until `restart` or `restart_all`) |
//! | `restart` | `node` | restart a crashed node |
//! | `power_loss` | `node`, `torn`, `corrupt` | kill the node, lose its unsynced writes (1) |
//! | `pause` | `node` | stop the node's tasks, like a long GC pause |
//! | `resume` | `node` | resume a paused node |
//! | `isolate` | `node` | cut the node off from every other node |
//! | `split` | `minority` (a list of nodes) | partition those nodes from the rest |
//! | `split_random` | `count` | partition `count` nodes, picked at random when the event fires \
//! (the leader among them or not), from the rest; `count` is less than the cluster's size |
//! | `one_way` | `from`, `to` | drop messages from `from` to `to`; the reverse direction flows |
//! | `bridge` | `node` | split the others into two halves that can each talk only to `node` |
//! | `heal` | | remove every partition |
//! | `latency` | `ms` (a pair) | change the one-way latency of every message |
//! | `clock_drift` | `node`, `factor` in (0.1, 10] | set the node's timer rate factor |
//! | `corrupt_tail` | `node` | flip a byte in the node's last record on disk (2) |
//! | `restart_all` | | restart every node that is down |
//! | `crash_all` | | kill every node |
//! | `power_loss_all` | `torn` | power loss on every node at once (1) |
//! | `add_member` | `node`, `learner` | add the node as a learner; the leader promotes it once \
//! caught up, unless `learner = true` (default false) keeps it one |
//! | `remove_member` | `node` | remove the node from the configuration (voter or learner) |
//! | `transfer_leader` | `node` (optional) | hand leadership to the node, or without `node` \
//! to the most up-to-date other voter |
//! | `hostile_peer` | `node` | a peer outside the cluster connects to the node and sends vote \
//! requests and heartbeats of a far higher term: in clear, with another CA's certificate, and \
//! with a certificate of this cluster's CA claiming another node's id; all must be refused (3) |
//!
//! (1) `torn = true` keeps a torn prefix of the unsynced writes instead of losing them cleanly;
//! `corrupt = true` also flips a byte in the surviving tail. Both default to false.
//! (2) The node must detect the corrupt record by its checksum at its next restart and never
//! serve it.
//! (3) Only with `cluster.tls = true`: in clear nothing tells a hostile peer from a member.
//!
//! # Naming nodes
//!
//! A node is a number from 1 to `cluster.nodes` (its largest choice) plus `cluster.spare_nodes`,
//! or `"leader"` (whoever
//! leads when the event fires), `"follower"` (a random node that does not lead then),
//! `"transfer_target"` (the voter the leader is handing leadership to then) or `"learner"` (a
//! random learner of the leader's configuration then); an event naming a role no node has
//! when it fires is skipped, and traced as skipped. When
//! `cluster.nodes` is a list, a seed that draws fewer nodes than an event names drops that
//! event; [`Drawn::events_dropped`] counts them.
//!
//! # Errors
//!
//! Every error is one line naming the file and the key, e.g.
//! `scenarios/x.toml: workload.clients: must be between 1 and 256, got 0`, with
//! `(line L, column C)` added when the TOML parser located it. Unknown keys, wrong types, bad
//! values and contradictions between values are all errors; `[[events]]` tables are counted
//! from 0 in file order (`events[2].node`). No input makes the loader panic.

/// The largest AppendEntries batch a scenario may ask for (the core's own bound).
const APPEND_ENTRIES_MAX: u32 = raftchat::limits::APPEND_ENTRIES_MAX as u32;
/// Largest `inflight_appends_max`: the runtime's own.
const INFLIGHT_APPENDS_MAX: u32 = raftchat::limits::INFLIGHT_APPENDS_MAX as u32;
/// Largest `apply_entries_max`: the core's own.
const APPLY_ENTRIES_MAX: u32 = raftchat::limits::APPLY_ENTRIES_MAX as u32;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::distributions::uniform::SampleUniform;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

// Every bound on a scenario value, in one place. Bounds beyond what the format needs keep
// callers' arithmetic (milliseconds to nanoseconds, rates times durations) far from overflow.
const NODES_MAX: u32 = 7;
const SPARE_NODES_MAX: u32 = 4;
const TICK_MS_MAX: u64 = 1000;
const ELECTION_TICKS_MAX: u32 = 10_000;
const DURATION_SECS_MAX: u64 = 3600;
const LIVENESS_BOUND_SECS_MAX: u64 = 3600;
const LATENCY_MS_MAX: u64 = 10_000;
const REORDER_DELAY_MS_MAX: u64 = 60_000;
const CLIENTS_MAX: u32 = 256;
const USERS_MAX: u32 = 1000;
const RATE_PER_CLIENT_MAX: f64 = 10_000.0;
const REQUEST_TIMEOUT_MS_MAX: u64 = 600_000;
const MESSAGE_CHARS_MAX: u32 = 1000;
const FAULTS_PER_MIN_MAX: f64 = 600.0;
const CLOCK_DRIFT_MIN_EXCLUSIVE: f64 = 0.1;
const CLOCK_DRIFT_MAX: f64 = 10.0;
const DOWNTIME_MS_MAX: u64 = 3_600_000;
const SNAPSHOT_ENTRIES_MAX: u64 = 1_000_000;
const SNAPSHOT_BYTES_MAX: u64 = 1 << 40;
const SEGMENT_BYTES_MIN: u64 = 512;

const _: () = assert!(ELECTION_TICKS_MAX > 1 && NODES_MAX >= 3);
const _: () = assert!(DURATION_SECS_MAX * 1000 * 1_000_000 < u64::MAX / 1024);

/// Mixed into the seed before drawing, so the swarm draw is independent of the simulator's own
/// random stream, which starts from the bare seed.
const DRAW_SEED_SALT: u64 = 0x5CE4_A210_D7A3_F00D;

/// A value, or an inclusive range `[min, max]` drawn per seed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Param<T> {
    /// The same value for every seed.
    Fixed(T),
    /// A value drawn uniformly from `[min, max]` for each seed.
    Range([T; 2]),
}

impl<T: Copy + PartialOrd + SampleUniform> Param<T> {
    /// The smallest value this parameter can take.
    pub fn min(&self) -> T {
        match *self {
            Param::Fixed(value) => value,
            Param::Range([min, _]) => min,
        }
    }

    /// The largest value this parameter can take.
    pub fn max(&self) -> T {
        match *self {
            Param::Fixed(value) => value,
            Param::Range([_, max]) => max,
        }
    }

    /// Whether every seed gets the same value.
    pub fn is_fixed(&self) -> bool {
        self.min() == self.max()
    }

    /// The value for one seed: uniform over `[min, max]`. Uses no randomness when fixed.
    pub fn draw(&self, rng: &mut impl Rng) -> T {
        let (min, max) = (self.min(), self.max());
        assert!(min <= max, "Param::draw on an unvalidated range");
        if self.is_fixed() {
            min
        } else {
            rng.gen_range(min..=max)
        }
    }
}

impl<T: Copy + PartialOrd + fmt::Display> Param<T> {
    /// Checks each bound against `ok` (described by `want`), then that min <= max.
    fn validate(&self, key: &str, ok: impl Fn(T) -> bool, want: &str) -> Result<(), Invalid> {
        match *self {
            Param::Fixed(value) => check_value(key, value, ok, want),
            Param::Range(pair) => check_pair(key, pair, ok, want),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Param<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through a `toml::Value`, so a wrong element type names the type it wanted instead of
        // serde's untagged "data did not match any variant".
        match toml::Value::deserialize(deserializer)? {
            value @ toml::Value::Array(_) => pair(value)
                .map(Param::Range)
                .map_err(|e| de::Error::custom(e.message())),
            value => T::deserialize(value)
                .map(Param::Fixed)
                .map_err(|e| de::Error::custom(format!("{}, or a [min, max] pair", e.message()))),
        }
    }
}

/// Deserializes a `[min, max]` pair. Not `<[T; 2]>::deserialize`: through the toml parser that
/// silently ignores elements after the second.
fn pair<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<[T; 2], D::Error> {
    let values = Vec::<T>::deserialize(deserializer)?;
    <[T; 2]>::try_from(values).map_err(|values| {
        de::Error::custom(format!(
            "expected a [min, max] pair, got {} values",
            values.len()
        ))
    })
}

fn optional_pair<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<[T; 2]>, D::Error> {
    pair(deserializer).map(Some)
}

/// One value, or a list of values to pick one from per seed.
#[derive(Clone, Debug, PartialEq)]
pub enum Choice<T> {
    /// The same value for every seed.
    One(T),
    /// One of these, picked uniformly for each seed (never empty once validated).
    AnyOf(Vec<T>),
}

impl<T: Copy + Ord> Choice<T> {
    /// Every value this choice can take.
    pub fn values(&self) -> &[T] {
        match self {
            Choice::One(value) => std::slice::from_ref(value),
            Choice::AnyOf(values) => values,
        }
    }

    /// The largest value this choice can take.
    pub fn max(&self) -> T {
        let max = self.values().iter().max().copied();
        max.expect("Choice::max on an unvalidated empty list")
    }

    /// Whether every seed gets the same value.
    pub fn is_fixed(&self) -> bool {
        self.values().windows(2).all(|pair| pair[0] == pair[1])
    }

    /// The value for one seed, picked uniformly. Uses no randomness when fixed.
    pub fn draw(&self, rng: &mut impl Rng) -> T {
        let values = self.values();
        assert!(
            !values.is_empty(),
            "Choice::draw on an unvalidated empty list"
        );
        if self.is_fixed() {
            values[0]
        } else {
            values[rng.gen_range(0..values.len())]
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Choice<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(deserializer)? {
            value @ toml::Value::Array(_) => Vec::<T>::deserialize(value)
                .map(Choice::AnyOf)
                .map_err(|e| de::Error::custom(format!("{} (a list to pick from)", e.message()))),
            value => T::deserialize(value)
                .map(Choice::One)
                .map_err(|e| de::Error::custom(format!("{}, or a list to pick from", e.message()))),
        }
    }
}

/// `[cluster]`: the Raft cluster under test.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [cluster] table")]
pub struct ClusterSpec {
    /// How many nodes (1..=7), or counts to pick from per seed.
    pub nodes: Choice<u32>,
    /// Simulated milliseconds in one Raft tick.
    pub tick_ms: Param<u64>,
    /// Election timeout range `[min, max)` in ticks.
    #[serde(deserialize_with = "pair")]
    pub election_ticks: [u32; 2],
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: Param<u32>,
    /// Whether candidates run a pre-vote first (Raft thesis §9.6), or values to pick from.
    pub pre_vote: Choice<bool>,
    /// Whether a leader steps down when it stops hearing from a quorum, or values to pick from.
    pub check_quorum: Choice<bool>,
    /// Most entries in one AppendEntries; small values split batches, so followers can match an
    /// earlier entry of a new leader's log without its no-op (what Figure 8 needs).
    pub append_entries_max: Param<u32>,
    /// Most unacknowledged AppendEntries per follower.
    pub inflight_appends_max: Param<u32>,
    /// Most committed entries applied in one turn of a node's loop.
    pub apply_entries_max: Param<u32>,
    /// Whether leaders serve lease reads, or values to pick from.
    pub read_lease: Choice<bool>,
    /// Whether a leader tells followers of every commit at once, or values to pick from.
    pub eager_commit: Choice<bool>,
    /// Nodes beyond `nodes`, started outside the cluster, to be added by membership changes.
    pub spare_nodes: u32,
    /// Whether every link is TLS (a cluster CA and a certificate per node), or values to pick
    /// from.
    pub tls: Choice<bool>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            nodes: Choice::One(3),
            tick_ms: Param::Fixed(10),
            election_ticks: [10, 20],
            heartbeat_ticks: Param::Fixed(2),
            pre_vote: Choice::One(true),
            check_quorum: Choice::One(true),
            append_entries_max: Param::Fixed(APPEND_ENTRIES_MAX),
            inflight_appends_max: Param::Fixed(INFLIGHT_APPENDS_MAX),
            apply_entries_max: Param::Fixed(APPLY_ENTRIES_MAX),
            read_lease: Choice::One(false),
            eager_commit: Choice::One(false),
            spare_nodes: 0,
            tls: Choice::One(false),
        }
    }
}

/// `[snapshot]`: when nodes snapshot and compact, and how snapshots travel.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [snapshot] table")]
pub struct SnapshotSpec {
    /// Entries applied since the last snapshot that call for a new one.
    pub log_entries: Param<u64>,
    /// Command bytes applied since the last snapshot that call for a new one.
    pub log_bytes: Param<u64>,
    /// Entries kept behind a new snapshot.
    pub catch_up_entries: Param<u64>,
    /// Largest snapshot chunk.
    pub chunk_bytes: Param<u64>,
    /// Size at which a log segment is closed.
    pub segment_bytes: Param<u64>,
}

impl Default for SnapshotSpec {
    fn default() -> Self {
        SnapshotSpec {
            log_entries: Param::Range([10, 300]),
            log_bytes: Param::Range([4096, 262_144]),
            catch_up_entries: Param::Range([0, 50]),
            chunk_bytes: Param::Range([256, 65_536]),
            segment_bytes: Param::Range([4096, 65_536]),
        }
    }
}

/// `[chat]`: the chat state's retention bounds.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [chat] table")]
pub struct ChatSpec {
    /// Messages one inbox keeps.
    pub inbox_messages_max: Param<u64>,
    /// Bytes of messages all inboxes keep.
    pub retained_bytes_max: Param<u64>,
}

impl Default for ChatSpec {
    fn default() -> Self {
        ChatSpec {
            inbox_messages_max: Param::Range([4, 64]),
            retained_bytes_max: Param::Range([16_384, 1_048_576]),
        }
    }
}

/// `[run]`: how long the two phases of a run last.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [run] table")]
pub struct RunSpec {
    /// Simulated seconds of the fault phase (workload and faults).
    pub duration_secs: Param<u64>,
    /// Once faults heal, the simulated seconds within which a leader must appear and a new
    /// command commit.
    pub liveness_bound_secs: u64,
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec {
            duration_secs: Param::Fixed(30),
            liveness_bound_secs: 20,
        }
    }
}

/// `[network]`: latency, and the fault layer's loss, duplication and reordering.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [network] table")]
pub struct NetworkSpec {
    /// One-way latency bounds in ms (not drawn: both bounds go to the network; a single
    /// number means a fixed latency).
    pub latency_ms: Param<u64>,
    /// Probability each Raft message is dropped.
    pub loss: Param<f64>,
    /// Probability each Raft message is delivered twice.
    pub duplicate: Param<f64>,
    /// Probability each Raft message is held back by an extra delay.
    pub reorder: Param<f64>,
    /// Bounds of that extra delay, in ms.
    #[serde(deserialize_with = "pair")]
    pub reorder_delay_ms: [u64; 2],
    /// The message kinds the faults above hit, one drawn per seed ("all" for every kind).
    pub aim_kinds: Vec<String>,
}

/// The message kinds `[network] aim_kinds` may name (`MessageBody::kind`), besides "all".
pub const MESSAGE_KINDS: [&str; 13] = [
    "request_vote",
    "request_vote_response",
    "pre_vote",
    "pre_vote_response",
    "append_entries",
    "append_entries_response",
    "heartbeat",
    "heartbeat_response",
    "install_snapshot",
    "install_snapshot_response",
    "read_index",
    "read_index_response",
    "timeout_now",
];

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            latency_ms: Param::Range([1, 5]),
            loss: Param::Fixed(0.0),
            duplicate: Param::Fixed(0.0),
            reorder: Param::Fixed(0.0),
            reorder_delay_ms: [5, 50],
            aim_kinds: vec!["all".to_owned()],
        }
    }
}

/// `[workload]`: the chat clients.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [workload] table")]
pub struct WorkloadSpec {
    /// Concurrent clients.
    pub clients: Param<u32>,
    /// Size of the username pool the clients draw from.
    pub users: u32,
    /// Mean operations per simulated second per client.
    pub rate_per_client: Param<f64>,
    /// An operation unanswered for this long completes as "info" (unknown outcome).
    pub request_timeout_ms: u64,
    /// Relative weights of the six operations.
    pub mix: Mix,
    /// Bounds of a sent message's length, in characters.
    #[serde(deserialize_with = "pair")]
    pub message_chars: [u32; 2],
    /// Share of operations that are reads; unset, `mix` alone decides.
    pub read_share: Option<Param<f64>>,
    /// Share of creates that set a password; unset, none do.
    pub passwords: Option<Param<f64>>,
    /// Clients per machine, sharing its connections (1: each its own).
    pub clients_per_host: Param<u32>,
    /// Where clients send reads, or modes to pick from.
    pub read_mode: Choice<ReadMode>,
}

/// Where the simulated clients send reads (the client library's `ReadMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// To the leader, served by ReadIndex or its lease.
    Leader,
    /// To a node of each client's own, followers included.
    Any,
    /// Through the log, like writes.
    Log,
}

impl ReadMode {
    /// The name in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            ReadMode::Leader => "leader",
            ReadMode::Any => "any",
            ReadMode::Log => "log",
        }
    }

    /// The client library's mode.
    pub fn client_mode(self) -> raftchat_node::client::ReadMode {
        match self {
            ReadMode::Leader => raftchat_node::client::ReadMode::Leader,
            ReadMode::Any => raftchat_node::client::ReadMode::Any,
            ReadMode::Log => raftchat_node::client::ReadMode::Log,
        }
    }
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            clients: Param::Fixed(4),
            users: 8,
            rate_per_client: Param::Fixed(10.0),
            request_timeout_ms: 1000,
            mix: Mix::default(),
            message_chars: [1, 40],
            read_share: None,
            passwords: None,
            clients_per_host: Param::Fixed(1),
            read_mode: Choice::AnyOf(vec![ReadMode::Leader, ReadMode::Any, ReadMode::Log]),
        }
    }
}

/// Relative weights of the chat operations a client issues. In a file, an operation left out
/// of a given `mix` weighs 0; without `mix`, [`Mix::default`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of operation weights")]
pub struct Mix {
    /// Weight of create_account.
    #[serde(default)]
    pub create: u32,
    /// Weight of check_account.
    #[serde(default)]
    pub check: u32,
    /// Weight of list_account.
    #[serde(default)]
    pub list: u32,
    /// Weight of delete_account.
    #[serde(default)]
    pub delete: u32,
    /// Weight of send_message.
    #[serde(default)]
    pub send: u32,
    /// Weight of fetch_messages.
    #[serde(default)]
    pub fetch: u32,
}

impl Default for Mix {
    /// Sends and fetches dominate, as in a chat; account churn keeps every error path busy.
    fn default() -> Self {
        Mix {
            create: 2,
            check: 1,
            list: 1,
            delete: 1,
            send: 6,
            fetch: 3,
        }
    }
}

impl Mix {
    /// Each operation with its weight, in [`OpKind::ALL`] order.
    pub fn weights(&self) -> [(OpKind, u32); 6] {
        [
            (OpKind::Create, self.create),
            (OpKind::Check, self.check),
            (OpKind::List, self.list),
            (OpKind::Delete, self.delete),
            (OpKind::Send, self.send),
            (OpKind::Fetch, self.fetch),
        ]
    }

    /// The sum of the weights (at least 1 once validated).
    pub fn total(&self) -> u64 {
        self.weights()
            .iter()
            .map(|&(_, weight)| u64::from(weight))
            .sum()
    }

    /// Picks an operation: with `read_share`, a read with that probability (by weight among
    /// the reads) or else a write (by weight among the writes); without, by weight alone.
    pub fn pick_with_share(&self, read_share: Option<f64>, rng: &mut impl Rng) -> OpKind {
        let Some(share) = read_share else {
            return self.pick(rng);
        };
        let read = rng.gen_bool(share.clamp(0.0, 1.0));
        let mut only = *self;
        for (op, weight) in [
            (OpKind::Create, &mut only.create),
            (OpKind::Check, &mut only.check),
            (OpKind::List, &mut only.list),
            (OpKind::Delete, &mut only.delete),
            (OpKind::Send, &mut only.send),
            (OpKind::Fetch, &mut only.fetch),
        ] {
            if op.is_read() != read {
                *weight = 0;
            }
        }
        // Validation makes the class drawn non-empty; an empty one falls back to the mix.
        match only.total() {
            0 => self.pick(rng),
            _ => only.pick(rng),
        }
    }

    /// The total weight of the reads and of the writes.
    fn split_total(&self) -> (u64, u64) {
        let weights = self.weights();
        let sum = |read: bool| {
            weights
                .iter()
                .filter(|(op, _)| op.is_read() == read)
                .map(|&(_, w)| u64::from(w))
                .sum()
        };
        (sum(true), sum(false))
    }

    /// Picks an operation with probability proportional to its weight.
    pub fn pick(&self, rng: &mut impl Rng) -> OpKind {
        let total = self.total();
        assert!(
            total > 0,
            "Mix::pick with every weight zero (the loader rejects this)"
        );
        let mut ticket = rng.gen_range(0..total);
        for (op, weight) in self.weights() {
            if ticket < u64::from(weight) {
                return op;
            }
            ticket -= u64::from(weight);
        }
        unreachable!("a ticket below the total weight always lands on an operation")
    }
}

/// A chat operation, as the workload and the history name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// create_account.
    Create,
    /// check_account.
    Check,
    /// list_account.
    List,
    /// delete_account.
    Delete,
    /// send_message.
    Send,
    /// fetch_messages.
    Fetch,
}

impl OpKind {
    /// Every operation, in protocol code order.
    #[cfg(test)]
    pub const ALL: [OpKind; 6] = [
        OpKind::Create,
        OpKind::Check,
        OpKind::List,
        OpKind::Delete,
        OpKind::Send,
        OpKind::Fetch,
    ];

    /// Whether it only reads (check, list, fetch).
    pub fn is_read(self) -> bool {
        matches!(self, OpKind::Check | OpKind::List | OpKind::Fetch)
    }

    /// The name used in `mix` and in the history's `"f"` field.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Check => "check",
            OpKind::List => "list",
            OpKind::Delete => "delete",
            OpKind::Send => "send",
            OpKind::Fetch => "fetch",
        }
    }
}

/// Whether random faults may take down a majority of the nodes at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaxDown {
    /// Random faults never take down a majority at once.
    #[default]
    Minority,
    /// Random faults may take down any number of nodes.
    Any,
}

/// `[faults]`: the random fault profile.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a [faults] table")]
pub struct FaultSpec {
    /// Expected crashes per simulated minute.
    pub crash: Param<f64>,
    /// Expected power losses per simulated minute.
    pub power_loss: Param<f64>,
    /// Expected partitions per simulated minute.
    pub partition: Param<f64>,
    /// Expected pauses per simulated minute.
    pub pause: Param<f64>,
    /// Bounds of the per-node timer rate factor, drawn once per node per seed.
    #[serde(deserialize_with = "pair")]
    pub clock_drift: [f64; 2],
    /// Each node's timer rate factor, node 1 first, in place of drawing from `clock_drift`
    /// (a shrunk scenario pins them this way).
    pub node_clock_drift: Option<Vec<f64>>,
    /// Probability a power loss keeps a torn prefix of the unsynced tail.
    pub torn_writes: Param<f64>,
    /// Probability a power loss also flips a byte in the surviving tail.
    pub corrupt_tail: Param<f64>,
    /// Share of random faults aimed at the current leader.
    pub aim_leader: Param<f64>,
    /// Share of random faults aimed at a leadership transfer's target, while one is under way.
    pub aim_transfer_target: Param<f64>,
    /// Share of random faults aimed at a learner, while there is one.
    pub aim_learner: Param<f64>,
    /// Expected random membership changes per simulated minute.
    pub membership: Param<f64>,
    /// Expected random leadership transfers per simulated minute.
    pub transfer: Param<f64>,
    /// Bounds of how long a crashed, paused or partitioned thing stays down, in ms.
    #[serde(deserialize_with = "pair")]
    pub downtime_ms: [u64; 2],
    /// Whether random faults may take down a majority at once.
    pub max_down: MaxDown,
}

impl Default for FaultSpec {
    fn default() -> Self {
        FaultSpec {
            crash: Param::Fixed(0.0),
            power_loss: Param::Fixed(0.0),
            partition: Param::Fixed(0.0),
            pause: Param::Fixed(0.0),
            clock_drift: [1.0, 1.0],
            node_clock_drift: None,
            torn_writes: Param::Fixed(0.0),
            corrupt_tail: Param::Fixed(0.0),
            aim_leader: Param::Fixed(0.0),
            aim_transfer_target: Param::Fixed(0.0),
            aim_learner: Param::Fixed(0.0),
            membership: Param::Fixed(0.0),
            transfer: Param::Fixed(0.0),
            downtime_ms: [200, 3000],
            max_down: MaxDown::Minority,
        }
    }
}

/// A node named by an event: by id, or by its role when the event fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeRef {
    /// The node with this id (1-based).
    Id(u32),
    /// Whoever leads when the event fires.
    Leader,
    /// A random node that does not lead when the event fires.
    Follower,
    /// The voter the leader is handing leadership to when the event fires (the event is
    /// skipped when no transfer is under way).
    TransferTarget,
    /// A random learner of the leader's configuration when the event fires (skipped when it
    /// has none).
    Learner,
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeRef::Id(id) => write!(f, "{id}"),
            NodeRef::Leader => f.write_str("leader"),
            NodeRef::Follower => f.write_str("follower"),
            NodeRef::TransferTarget => f.write_str("transfer_target"),
            NodeRef::Learner => f.write_str("learner"),
        }
    }
}

impl<'de> Deserialize<'de> for NodeRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeRefVisitor)
    }
}

struct NodeRefVisitor;

const NODE_REFS: &str = "a node id, \"leader\", \"follower\", \"transfer_target\" or \"learner\"";

impl Visitor<'_> for NodeRefVisitor {
    type Value = NodeRef;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NODE_REFS)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<NodeRef, E> {
        u32::try_from(value)
            .map(NodeRef::Id)
            .map_err(|_| E::custom(format!("node id {value} is out of range")))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<NodeRef, E> {
        u32::try_from(value)
            .map(NodeRef::Id)
            .map_err(|_| E::custom(format!("node id {value} is out of range")))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<NodeRef, E> {
        match value {
            "leader" => Ok(NodeRef::Leader),
            "follower" => Ok(NodeRef::Follower),
            "transfer_target" => Ok(NodeRef::TransferTarget),
            "learner" => Ok(NodeRef::Learner),
            _ => Err(E::custom(format!(
                "unknown node `{value}`, expected {NODE_REFS}"
            ))),
        }
    }
}

/// One timed fault: what happens, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Simulated time into the run (`at_ms` in the file, to the nanosecond).
    pub at: Duration,
    /// What happens.
    pub action: Action,
}

/// What a timed fault does (see the module docs for each action's effect).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Kill the node.
    Crash {
        /// The node.
        node: NodeRef,
    },
    /// Restart a crashed node.
    Restart {
        /// The node.
        node: NodeRef,
    },
    /// Kill the node and lose its unsynced writes.
    PowerLoss {
        /// The node.
        node: NodeRef,
        /// Keep a torn prefix of the unsynced tail instead of losing it cleanly.
        torn: bool,
        /// Also flip a byte in the surviving tail.
        corrupt: bool,
    },
    /// Stop the node's tasks, like a long GC pause.
    Pause {
        /// The node.
        node: NodeRef,
    },
    /// Resume a paused node.
    Resume {
        /// The node.
        node: NodeRef,
    },
    /// Cut the node off from every other node.
    Isolate {
        /// The node.
        node: NodeRef,
    },
    /// Partition these nodes from the rest.
    Split {
        /// The smaller side (never empty, never every node).
        minority: Vec<NodeRef>,
    },
    /// Partition `count` nodes, picked at random when the event fires, from the rest.
    SplitRandom {
        /// How many nodes are cut off (at least 1, fewer than the cluster's size).
        count: u32,
    },
    /// Drop messages from `from` to `to`; the reverse direction flows.
    OneWay {
        /// The sender whose messages are dropped.
        from: NodeRef,
        /// The receiver that no longer hears `from`.
        to: NodeRef,
    },
    /// Split the others into two halves that can each talk only to this node.
    Bridge {
        /// The bridge node.
        node: NodeRef,
    },
    /// Remove every partition.
    Heal,
    /// Change the one-way latency of every message.
    Latency {
        /// New latency bounds `[min, max]` in ms.
        ms: [u64; 2],
    },
    /// Set a node's timer rate factor.
    ClockDrift {
        /// The node.
        node: NodeRef,
        /// Timer rate factor, in (0.1, 10].
        factor: f64,
    },
    /// Flip a byte in the node's last record on disk.
    CorruptTail {
        /// The node.
        node: NodeRef,
    },
    /// Restart every node that is down.
    RestartAll,
    /// Kill every node.
    CrashAll,
    /// Power loss on every node at once.
    PowerLossAll {
        /// Keep torn prefixes of the unsynced tails.
        torn: bool,
    },
    /// Add the node as a learner, promoted once caught up unless `learner`.
    AddMember {
        /// The node.
        node: NodeRef,
        /// Keep it a learner.
        learner: bool,
    },
    /// Remove the node from the configuration.
    RemoveMember {
        /// The node.
        node: NodeRef,
    },
    /// Hand leadership to the node, or to the most up-to-date other voter.
    TransferLeader {
        /// The target, if named.
        node: Option<NodeRef>,
    },
    /// A hostile peer, outside the cluster, connects to the node and sends well-formed Raft
    /// messages of a far higher term: in clear, with another cluster's certificate, and with a
    /// certificate of this cluster's CA that names another node than the one it claims.
    HostilePeer {
        /// The node it attacks.
        node: NodeRef,
    },
}

impl Action {
    /// Whether the action is an operator's request (a membership change or a transfer).
    pub fn is_membership(&self) -> bool {
        matches!(
            self,
            Action::AddMember { .. } | Action::RemoveMember { .. } | Action::TransferLeader { .. }
        )
    }

    /// The action's name, as written in scenario files.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    fn kind(&self) -> ActionKind {
        match self {
            Action::Crash { .. } => ActionKind::Crash,
            Action::Restart { .. } => ActionKind::Restart,
            Action::PowerLoss { .. } => ActionKind::PowerLoss,
            Action::Pause { .. } => ActionKind::Pause,
            Action::Resume { .. } => ActionKind::Resume,
            Action::Isolate { .. } => ActionKind::Isolate,
            Action::Split { .. } => ActionKind::Split,
            Action::SplitRandom { .. } => ActionKind::SplitRandom,
            Action::OneWay { .. } => ActionKind::OneWay,
            Action::Bridge { .. } => ActionKind::Bridge,
            Action::Heal => ActionKind::Heal,
            Action::Latency { .. } => ActionKind::Latency,
            Action::ClockDrift { .. } => ActionKind::ClockDrift,
            Action::CorruptTail { .. } => ActionKind::CorruptTail,
            Action::RestartAll => ActionKind::RestartAll,
            Action::CrashAll => ActionKind::CrashAll,
            Action::PowerLossAll { .. } => ActionKind::PowerLossAll,
            Action::AddMember { .. } => ActionKind::AddMember,
            Action::RemoveMember { .. } => ActionKind::RemoveMember,
            Action::HostilePeer { .. } => ActionKind::HostilePeer,
            Action::TransferLeader { .. } => ActionKind::TransferLeader,
        }
    }

    /// Every node the action names.
    pub fn nodes(&self) -> Vec<NodeRef> {
        match self {
            Action::Crash { node }
            | Action::Restart { node }
            | Action::PowerLoss { node, .. }
            | Action::Pause { node }
            | Action::Resume { node }
            | Action::Isolate { node }
            | Action::Bridge { node }
            | Action::ClockDrift { node, .. }
            | Action::CorruptTail { node }
            | Action::AddMember { node, .. }
            | Action::RemoveMember { node }
            | Action::HostilePeer { node } => vec![*node],
            Action::TransferLeader { node } => node.iter().copied().collect(),
            Action::Split { minority } => minority.clone(),
            Action::OneWay { from, to } => vec![*from, *to],
            Action::Heal
            | Action::SplitRandom { .. }
            | Action::Latency { .. }
            | Action::RestartAll
            | Action::CrashAll
            | Action::PowerLossAll { .. } => Vec::new(),
        }
    }

    /// Whether the action still makes sense in a cluster of `nodes` nodes: every id it names
    /// exists, and a split leaves someone on the other side.
    pub fn fits(&self, nodes: u32) -> bool {
        let ids_exist = self.nodes().iter().all(|node| match node {
            NodeRef::Id(id) => (1..=nodes).contains(id),
            NodeRef::Leader | NodeRef::Follower | NodeRef::TransferTarget | NodeRef::Learner => {
                true
            }
        });
        let split_leaves_rest = match self {
            Action::Split { minority } => minority.len() < nodes as usize,
            Action::SplitRandom { count } => *count < nodes,
            _ => true,
        };
        ids_exist && split_leaves_rest
    }
}

/// The action names of scenario files; the data each one needs is checked separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ActionKind {
    Crash,
    Restart,
    PowerLoss,
    Pause,
    Resume,
    Isolate,
    Split,
    SplitRandom,
    OneWay,
    Bridge,
    Heal,
    Latency,
    ClockDrift,
    CorruptTail,
    RestartAll,
    CrashAll,
    PowerLossAll,
    AddMember,
    RemoveMember,
    HostilePeer,
    TransferLeader,
}

impl ActionKind {
    fn name(self) -> &'static str {
        match self {
            ActionKind::Crash => "crash",
            ActionKind::Restart => "restart",
            ActionKind::PowerLoss => "power_loss",
            ActionKind::Pause => "pause",
            ActionKind::Resume => "resume",
            ActionKind::Isolate => "isolate",
            ActionKind::Split => "split",
            ActionKind::SplitRandom => "split_random",
            ActionKind::OneWay => "one_way",
            ActionKind::Bridge => "bridge",
            ActionKind::Heal => "heal",
            ActionKind::Latency => "latency",
            ActionKind::ClockDrift => "clock_drift",
            ActionKind::CorruptTail => "corrupt_tail",
            ActionKind::RestartAll => "restart_all",
            ActionKind::CrashAll => "crash_all",
            ActionKind::PowerLossAll => "power_loss_all",
            ActionKind::AddMember => "add_member",
            ActionKind::RemoveMember => "remove_member",
            ActionKind::HostilePeer => "hostile_peer",
            ActionKind::TransferLeader => "transfer_leader",
        }
    }

    /// The keys an `[[events]]` table with this action may have besides `at_ms` and `action`.
    fn keys(self) -> &'static [&'static str] {
        match self {
            ActionKind::Crash
            | ActionKind::Restart
            | ActionKind::Pause
            | ActionKind::Resume
            | ActionKind::Isolate
            | ActionKind::Bridge
            | ActionKind::CorruptTail
            | ActionKind::RemoveMember
            | ActionKind::HostilePeer
            | ActionKind::TransferLeader => &["node"],
            ActionKind::AddMember => &["node", "learner"],
            ActionKind::PowerLoss => &["node", "torn", "corrupt"],
            ActionKind::Split => &["minority"],
            ActionKind::SplitRandom => &["count"],
            ActionKind::OneWay => &["from", "to"],
            ActionKind::Latency => &["ms"],
            ActionKind::ClockDrift => &["node", "factor"],
            ActionKind::PowerLossAll => &["torn"],
            ActionKind::Heal | ActionKind::RestartAll | ActionKind::CrashAll => &[],
        }
    }
}

/// An `[[events]]` table as written: one flat struct, so the TOML parser locates a wrong type
/// on the exact key (an internally tagged enum would buffer the table and lose the position),
/// and so a key the action does not take gets its own message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [[events]] table")]
struct RawEvent {
    /// Milliseconds, an integer or a decimal (a recorded schedule writes nanoseconds).
    at_ms: f64,
    action: ActionKind,
    node: Option<NodeRef>,
    torn: Option<bool>,
    corrupt: Option<bool>,
    minority: Option<Vec<NodeRef>>,
    count: Option<u32>,
    from: Option<NodeRef>,
    to: Option<NodeRef>,
    #[serde(default, deserialize_with = "optional_pair")]
    ms: Option<[u64; 2]>,
    factor: Option<f64>,
    learner: Option<bool>,
}

impl RawEvent {
    fn present_keys(&self) -> Vec<&'static str> {
        let present = [
            ("node", self.node.is_some()),
            ("torn", self.torn.is_some()),
            ("corrupt", self.corrupt.is_some()),
            ("minority", self.minority.is_some()),
            ("count", self.count.is_some()),
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("ms", self.ms.is_some()),
            ("factor", self.factor.is_some()),
            ("learner", self.learner.is_some()),
        ];
        present
            .iter()
            .filter(|(_, is)| *is)
            .map(|&(key, _)| key)
            .collect()
    }
}

/// The whole file as written, before validation.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a scenario table")]
struct ScenarioFile {
    cluster: ClusterSpec,
    snapshot: SnapshotSpec,
    chat: ChatSpec,
    run: RunSpec,
    network: NetworkSpec,
    workload: WorkloadSpec,
    faults: FaultSpec,
    events: Vec<RawEvent>,
}

/// A loaded, validated scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The file stem (`leader-crash` for `scenarios/leader-crash.toml`).
    pub name: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The first line's comment, without the `#`; empty if the first line is not a comment.
    pub story: String,
    /// `[cluster]`.
    pub cluster: ClusterSpec,
    /// `[snapshot]`.
    pub snapshot: SnapshotSpec,
    /// `[chat]`.
    pub chat: ChatSpec,
    /// `[run]`.
    pub run: RunSpec,
    /// `[network]`.
    pub network: NetworkSpec,
    /// `[workload]`.
    pub workload: WorkloadSpec,
    /// `[faults]`.
    pub faults: FaultSpec,
    /// `[[events]]`, sorted by `at_ms` (events at the same time keep their file order).
    pub events: Vec<Event>,
}

impl Scenario {
    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError::new(path, None, &format!("cannot read: {e}")))?;
        Scenario::parse(path, &text)
    }

    /// Parses scenario text; `path` names the file in errors and gives the scenario its name.
    pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let file: ScenarioFile =
            toml::from_str(text).map_err(|e| ScenarioError::from_toml(path, text, &e))?;
        let invalid = |e: Invalid| ScenarioError::new(path, Some(&e.key), &e.message);
        validate_cluster(&file.cluster).map_err(invalid)?;
        validate_snapshot(&file.snapshot).map_err(invalid)?;
        validate_chat(&file.chat).map_err(invalid)?;
        validate_run(&file.run).map_err(invalid)?;
        validate_network(&file.network).map_err(invalid)?;
        validate_workload(&file.workload).map_err(invalid)?;
        validate_faults(&file.faults).map_err(invalid)?;
        validate_node_clock_drift(&file.cluster, &file.faults).map_err(invalid)?;
        let limits = EventLimits {
            nodes_max: file.cluster.nodes.max() + file.cluster.spare_nodes,
            at_ms_end: file.run.duration_secs.max().saturating_mul(1000),
        };
        let mut events = Vec::with_capacity(file.events.len());
        for (index, raw) in file.events.iter().enumerate() {
            events.push(build_event(index, raw, &limits).map_err(invalid)?);
        }
        // A stable sort: events at the same millisecond fire in file order.
        events.sort_by_key(|event| event.at);
        Ok(Scenario {
            name: path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: path.to_path_buf(),
            story: story(text),
            cluster: file.cluster,
            snapshot: file.snapshot,
            chat: file.chat,
            run: file.run,
            network: file.network,
            workload: file.workload,
            faults: file.faults,
            events,
        })
    }

    /// Draws every swarm parameter for one seed: same seed, same draw.
    pub fn draw(&self, seed: u64) -> Drawn {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ DRAW_SEED_SALT);
        let rng = &mut rng;
        let nodes = self.cluster.nodes.draw(rng);
        let duration_secs = self.run.duration_secs.draw(rng);
        let [drift_min, drift_max] = self.faults.clock_drift;
        let clock_drift = match &self.faults.node_clock_drift {
            Some(factors) => factors.clone(),
            None => (0..nodes)
                .map(|_| {
                    if drift_min < drift_max {
                        rng.gen_range(drift_min..=drift_max)
                    } else {
                        drift_min
                    }
                })
                .collect(),
        };
        let at_ms_end = duration_secs * 1000;
        let (events, dropped): (Vec<Event>, Vec<Event>) =
            self.events.iter().cloned().partition(|event| {
                let processes = nodes + self.cluster.spare_nodes;
                event.action.fits(processes) && event.at < Duration::from_millis(at_ms_end)
            });
        let network = &self.network;
        let workload = &self.workload;
        let faults = &self.faults;
        Drawn {
            nodes,
            tick_ms: self.cluster.tick_ms.draw(rng),
            election_ticks: (
                self.cluster.election_ticks[0],
                self.cluster.election_ticks[1],
            ),
            heartbeat_ticks: self.cluster.heartbeat_ticks.draw(rng),
            duration_secs,
            liveness_bound_secs: self.run.liveness_bound_secs,
            latency_ms: (network.latency_ms.min(), network.latency_ms.max()),
            loss: network.loss.draw(rng),
            duplicate: network.duplicate.draw(rng),
            reorder: network.reorder.draw(rng),
            reorder_delay_ms: (network.reorder_delay_ms[0], network.reorder_delay_ms[1]),
            clients: workload.clients.draw(rng),
            users: workload.users,
            rate_per_client: workload.rate_per_client.draw(rng),
            request_timeout_ms: workload.request_timeout_ms,
            mix: workload.mix,
            message_chars: (workload.message_chars[0], workload.message_chars[1]),
            crash_per_min: faults.crash.draw(rng),
            power_loss_per_min: faults.power_loss.draw(rng),
            partition_per_min: faults.partition.draw(rng),
            pause_per_min: faults.pause.draw(rng),
            clock_drift,
            torn_writes: faults.torn_writes.draw(rng),
            corrupt_tail: faults.corrupt_tail.draw(rng),
            downtime_ms: (faults.downtime_ms[0], faults.downtime_ms[1]),
            max_down: faults.max_down,
            events,
            events_dropped: dropped.len(),
            // Drawn last, so adding these keys left every earlier draw of a seed as it was.
            snapshot_log_entries: self.snapshot.log_entries.draw(rng),
            snapshot_log_bytes: self.snapshot.log_bytes.draw(rng),
            catch_up_entries: self.snapshot.catch_up_entries.draw(rng),
            chunk_bytes: self.snapshot.chunk_bytes.draw(rng),
            segment_bytes: self.snapshot.segment_bytes.draw(rng),
            inbox_messages_max: self.chat.inbox_messages_max.draw(rng),
            retained_bytes_max: self.chat.retained_bytes_max.draw(rng),
            aim_leader: faults.aim_leader.draw(rng),
            // A single choice draws nothing, so scenarios without the key draw as they did.
            aim_kind: match network.aim_kinds.as_slice() {
                [only] => only.clone(),
                kinds => kinds[rng.gen_range(0..kinds.len())].clone(),
            },
            // Fields are evaluated in the order written: these were fixed before they could be
            // drawn, and come last so that drawing them left every earlier draw alone.
            pre_vote: self.cluster.pre_vote.draw(rng),
            check_quorum: self.cluster.check_quorum.draw(rng),
            append_entries_max: self.cluster.append_entries_max.draw(rng),
            inflight_appends_max: self.cluster.inflight_appends_max.draw(rng),
            // Last of all, for the same reason.
            apply_entries_max: self.cluster.apply_entries_max.draw(rng),
            // And these after it.
            read_lease: self.cluster.read_lease.draw(rng),
            read_mode: workload.read_mode.draw(rng),
            read_share: workload.read_share.as_ref().map(|share| share.draw(rng)),
            // Drawn last, so that scenarios without membership changes draw as they did.
            spare_nodes: self.cluster.spare_nodes,
            membership_per_min: faults.membership.draw(rng),
            transfer_per_min: faults.transfer.draw(rng),
            // And these after them.
            aim_transfer_target: faults.aim_transfer_target.draw(rng),
            aim_learner: faults.aim_learner.draw(rng),
            // And this after them.
            tls: self.cluster.tls.draw(rng),
            // And this after it.
            passwords: workload
                .passwords
                .as_ref()
                .map_or(0.0, |share| share.draw(rng)),
            // And this after it.
            clients_per_host: workload.clients_per_host.draw(rng),
            // And this after it.
            eager_commit: self.cluster.eager_commit.draw(rng),
        }
        .lease_needs_check_quorum()
    }
}

/// Every parameter of one seeded run, with ranges and choices drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct Drawn {
    /// Cluster size.
    pub nodes: u32,
    /// Simulated milliseconds per Raft tick.
    pub tick_ms: u64,
    /// Election timeout range `[min, max)` in ticks.
    pub election_ticks: (u32, u32),
    /// Ticks between heartbeats.
    pub heartbeat_ticks: u32,
    /// Whether pre-vote is on.
    pub pre_vote: bool,
    /// Whether check-quorum is on.
    pub check_quorum: bool,
    /// Most entries per AppendEntries.
    pub append_entries_max: u32,
    /// Most unacknowledged AppendEntries per follower.
    pub inflight_appends_max: u32,
    /// Most committed entries applied in one turn of a node's loop.
    pub apply_entries_max: u32,
    /// Whether leaders serve lease reads.
    pub read_lease: bool,
    /// Whether a leader tells followers of every commit at once.
    pub eager_commit: bool,
    /// Whether every link is TLS.
    pub tls: bool,
    /// Where clients send reads.
    pub read_mode: ReadMode,
    /// Share of creates that set a password (0: none, and clients never log in).
    pub passwords: f64,
    /// Clients per machine, sharing its connections (1: each its own).
    pub clients_per_host: u32,
    /// Share of operations that are reads; None: the mix alone decides.
    pub read_share: Option<f64>,
    /// Nodes past `nodes`, started outside the cluster.
    pub spare_nodes: u32,
    /// Expected random membership changes per simulated minute.
    pub membership_per_min: f64,
    /// Expected random leadership transfers per simulated minute.
    pub transfer_per_min: f64,
    /// Share of random faults aimed at a transfer's target, while one is under way.
    pub aim_transfer_target: f64,
    /// Share of random faults aimed at a learner, while there is one.
    pub aim_learner: f64,
    /// Simulated seconds of the fault phase.
    pub duration_secs: u64,
    /// Simulated seconds the liveness phase may take.
    pub liveness_bound_secs: u64,
    /// One-way latency bounds in ms.
    pub latency_ms: (u64, u64),
    /// Probability a Raft message is dropped.
    pub loss: f64,
    /// Probability a Raft message is duplicated.
    pub duplicate: f64,
    /// Probability a Raft message is held back.
    pub reorder: f64,
    /// Bounds of the hold-back delay in ms.
    pub reorder_delay_ms: (u64, u64),
    /// Concurrent clients.
    pub clients: u32,
    /// Username pool size.
    pub users: u32,
    /// Mean operations per simulated second per client.
    pub rate_per_client: f64,
    /// Client operation timeout in ms.
    pub request_timeout_ms: u64,
    /// Operation weights.
    pub mix: Mix,
    /// Bounds of message length in characters.
    pub message_chars: (u32, u32),
    /// Expected crashes per simulated minute.
    pub crash_per_min: f64,
    /// Expected power losses per simulated minute.
    pub power_loss_per_min: f64,
    /// Expected partitions per simulated minute.
    pub partition_per_min: f64,
    /// Expected pauses per simulated minute.
    pub pause_per_min: f64,
    /// Timer rate factor of each node: `clock_drift[i]` is node `i + 1`'s.
    pub clock_drift: Vec<f64>,
    /// Probability a power loss tears the unsynced tail.
    pub torn_writes: f64,
    /// Probability a power loss corrupts the surviving tail.
    pub corrupt_tail: f64,
    /// Bounds of fault downtime in ms.
    pub downtime_ms: (u64, u64),
    /// Whether random faults may take down a majority.
    pub max_down: MaxDown,
    /// The timed events that fit this draw, sorted by `at_ms`.
    pub events: Vec<Event>,
    /// How many of the scenario's events this draw dropped: they named a node beyond
    /// `nodes`, split off every node, or fell after the drawn duration.
    pub events_dropped: usize,
    /// Entries applied since the last snapshot that call for a new one.
    pub snapshot_log_entries: u64,
    /// Command bytes applied since the last snapshot that call for a new one.
    pub snapshot_log_bytes: u64,
    /// Entries kept behind a new snapshot.
    pub catch_up_entries: u64,
    /// Largest snapshot chunk.
    pub chunk_bytes: u64,
    /// Log segment size.
    pub segment_bytes: u64,
    /// Messages one inbox keeps.
    pub inbox_messages_max: u64,
    /// Bytes of messages all inboxes keep.
    pub retained_bytes_max: u64,
    /// Share of random faults aimed at the current leader.
    pub aim_leader: f64,
    /// The message kind message faults hit, or "all".
    pub aim_kind: String,
}

impl Drawn {
    /// Lease reads need check-quorum: a draw without it has no lease.
    fn lease_needs_check_quorum(mut self) -> Drawn {
        self.read_lease &= self.check_quorum;
        self
    }

    /// Picks the next operation a client runs.
    pub fn pick_op(&self, rng: &mut impl Rng) -> OpKind {
        self.mix.pick_with_share(self.read_share, rng)
    }

    /// This draw with `schedule` in place of its faults: no random faults, and the
    /// schedule's events in place of the scenario's.
    pub fn with_schedule(mut self, schedule: Vec<Event>) -> Drawn {
        self.crash_per_min = 0.0;
        self.power_loss_per_min = 0.0;
        self.partition_per_min = 0.0;
        self.pause_per_min = 0.0;
        self.aim_leader = 0.0;
        self.aim_transfer_target = 0.0;
        self.aim_learner = 0.0;
        self.membership_per_min = 0.0;
        self.transfer_per_min = 0.0;
        self.events = schedule;
        self.events_dropped = 0;
        self
    }

    /// The chat state's retention bounds of this draw.
    pub fn chat_limits(&self) -> raftchat::chat::ChatLimits {
        raftchat::chat::ChatLimits {
            inbox_messages_max: self.inbox_messages_max,
            retained_bytes_max: self.retained_bytes_max,
        }
    }
}

impl Drawn {
    /// One line listing every drawn value that came from a range or choice, e.g.
    /// `nodes=5 tick_ms=7 loss=0.031 clients=12`, plus `events_dropped=N` when N > 0; empty
    /// when nothing was drawn. Printed next to the seed; floats have three decimals.
    pub fn summary(&self, scenario: &Scenario) -> String {
        let (cluster, network) = (&scenario.cluster, &scenario.network);
        let (workload, faults) = (&scenario.workload, &scenario.faults);
        let mut parts = Vec::new();
        let mut int = |fixed: bool, name: &str, value: u64| {
            if !fixed {
                parts.push(format!("{name}={value}"));
            }
        };
        int(cluster.nodes.is_fixed(), "nodes", self.nodes.into());
        int(cluster.tick_ms.is_fixed(), "tick_ms", self.tick_ms);
        int(
            cluster.heartbeat_ticks.is_fixed(),
            "heartbeat_ticks",
            self.heartbeat_ticks.into(),
        );
        int(
            scenario.run.duration_secs.is_fixed(),
            "duration_secs",
            self.duration_secs,
        );
        int(workload.clients.is_fixed(), "clients", self.clients.into());
        int(
            cluster.append_entries_max.is_fixed(),
            "append_entries_max",
            self.append_entries_max.into(),
        );
        int(
            cluster.inflight_appends_max.is_fixed(),
            "inflight_appends_max",
            self.inflight_appends_max.into(),
        );
        int(
            cluster.apply_entries_max.is_fixed(),
            "apply_entries_max",
            self.apply_entries_max.into(),
        );
        let snapshot = &scenario.snapshot;
        let drawn_ints = [
            (
                &snapshot.log_entries,
                "log_entries",
                self.snapshot_log_entries,
            ),
            (&snapshot.log_bytes, "log_bytes", self.snapshot_log_bytes),
            (
                &snapshot.catch_up_entries,
                "catch_up_entries",
                self.catch_up_entries,
            ),
            (&snapshot.chunk_bytes, "chunk_bytes", self.chunk_bytes),
            (&snapshot.segment_bytes, "segment_bytes", self.segment_bytes),
            (
                &scenario.chat.inbox_messages_max,
                "inbox_messages_max",
                self.inbox_messages_max,
            ),
            (
                &scenario.chat.retained_bytes_max,
                "retained_bytes_max",
                self.retained_bytes_max,
            ),
        ];
        for (param, name, value) in drawn_ints {
            int(param.is_fixed(), name, value);
        }
        if !cluster.pre_vote.is_fixed() {
            parts.push(format!("pre_vote={}", self.pre_vote));
        }
        if !cluster.check_quorum.is_fixed() {
            parts.push(format!("check_quorum={}", self.check_quorum));
        }
        if !cluster.read_lease.is_fixed() {
            parts.push(format!("read_lease={}", self.read_lease));
        }
        if !cluster.eager_commit.is_fixed() {
            parts.push(format!("eager_commit={}", self.eager_commit));
        }
        if !cluster.tls.is_fixed() {
            parts.push(format!("tls={}", self.tls));
        }
        if !workload.read_mode.is_fixed() {
            parts.push(format!("read_mode={}", self.read_mode.name()));
        }
        if let (Some(param), Some(share)) = (&workload.read_share, self.read_share) {
            if !param.is_fixed() {
                parts.push(format!("read_share={share:.3}"));
            }
        }
        if let Some(param) = &workload.passwords {
            if !param.is_fixed() {
                parts.push(format!("passwords={:.3}", self.passwords));
            }
        }
        if !workload.clients_per_host.is_fixed() {
            parts.push(format!("clients_per_host={}", self.clients_per_host));
        }
        let floats = [
            (network.loss, "loss", self.loss),
            (network.duplicate, "duplicate", self.duplicate),
            (network.reorder, "reorder", self.reorder),
            (
                workload.rate_per_client,
                "rate_per_client",
                self.rate_per_client,
            ),
            (faults.crash, "crash_per_min", self.crash_per_min),
            (
                faults.power_loss,
                "power_loss_per_min",
                self.power_loss_per_min,
            ),
            (
                faults.partition,
                "partition_per_min",
                self.partition_per_min,
            ),
            (faults.pause, "pause_per_min", self.pause_per_min),
            (faults.torn_writes, "torn_writes", self.torn_writes),
            (faults.corrupt_tail, "corrupt_tail", self.corrupt_tail),
            (faults.aim_leader, "aim_leader", self.aim_leader),
            (
                faults.aim_transfer_target,
                "aim_transfer_target",
                self.aim_transfer_target,
            ),
            (faults.aim_learner, "aim_learner", self.aim_learner),
            (
                faults.membership,
                "membership_per_min",
                self.membership_per_min,
            ),
            (faults.transfer, "transfer_per_min", self.transfer_per_min),
        ];
        for (param, name, value) in floats {
            if !param.is_fixed() {
                parts.push(format!("{name}={value:.3}"));
            }
        }
        if network.aim_kinds.len() > 1 {
            parts.push(format!("aim_kind={}", self.aim_kind));
        }
        if faults.clock_drift[0] < faults.clock_drift[1] {
            let factors: Vec<String> = self.clock_drift.iter().map(|f| format!("{f:.3}")).collect();
            parts.push(format!("clock_drift={}", factors.join(",")));
        }
        if self.events_dropped > 0 {
            parts.push(format!("events_dropped={}", self.events_dropped));
        }
        parts.join(" ")
    }
}

impl Event {
    /// The event as an `[[events]]` table that parses back to it, time to the nanosecond.
    pub fn to_toml(&self) -> String {
        let nanos = self.at.as_nanos();
        let at_ms = match nanos % 1_000_000 {
            0 => format!("{}", nanos / 1_000_000),
            fraction => format!("{}.{fraction:06}", nanos / 1_000_000),
        };
        let mut text = format!(
            "[[events]]\nat_ms = {at_ms}\naction = \"{}\"\n",
            self.action.name()
        );
        let node = |r: &NodeRef| match r {
            NodeRef::Id(id) => id.to_string(),
            other => format!("\"{other}\""),
        };
        let mut key = |name: &str, value: String| text.push_str(&format!("{name} = {value}\n"));
        match &self.action {
            Action::Crash { node: n }
            | Action::Restart { node: n }
            | Action::Pause { node: n }
            | Action::Resume { node: n }
            | Action::Isolate { node: n }
            | Action::Bridge { node: n }
            | Action::CorruptTail { node: n }
            | Action::RemoveMember { node: n }
            | Action::HostilePeer { node: n }
            | Action::TransferLeader { node: Some(n) } => key("node", node(n)),
            Action::TransferLeader { node: None } => {}
            Action::AddMember { node: n, learner } => {
                key("node", node(n));
                key("learner", learner.to_string());
            }
            Action::PowerLoss {
                node: n,
                torn,
                corrupt,
            } => {
                key("node", node(n));
                key("torn", torn.to_string());
                key("corrupt", corrupt.to_string());
            }
            Action::Split { minority } => {
                let nodes: Vec<String> = minority.iter().map(node).collect();
                key("minority", format!("[{}]", nodes.join(", ")));
            }
            Action::SplitRandom { count } => key("count", count.to_string()),
            Action::OneWay { from, to } => {
                key("from", node(from));
                key("to", node(to));
            }
            Action::Latency { ms } => key("ms", format!("[{}, {}]", ms[0], ms[1])),
            Action::ClockDrift { node: n, factor } => {
                key("node", node(n));
                key("factor", format!("{factor:?}"));
            }
            Action::PowerLossAll { torn } => key("torn", torn.to_string()),
            Action::Heal | Action::RestartAll | Action::CrashAll => {}
        }
        text
    }
}

/// A schedule file: `[[events]]` tables only, as `cargo sim run --schedule` takes them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a schedule: [[events]] tables only")]
struct ScheduleFile {
    #[serde(default)]
    events: Vec<RawEvent>,
}

/// Parses a schedule (the `[[events]]` of a scenario file, and nothing else) for a run of
/// `nodes` nodes lasting `duration_secs`: every node it names must exist and every event must
/// fall within the run. Events are sorted by time, ties in file order.
pub fn parse_schedule(
    path: &Path,
    text: &str,
    nodes: u32,
    duration_secs: u64,
) -> Result<Vec<Event>, ScenarioError> {
    let file: ScheduleFile =
        toml::from_str(text).map_err(|e| ScenarioError::from_toml(path, text, &e))?;
    let limits = EventLimits {
        nodes_max: nodes,
        at_ms_end: duration_secs.saturating_mul(1000),
    };
    let mut events = Vec::with_capacity(file.events.len());
    for (index, raw) in file.events.iter().enumerate() {
        let event = build_event(index, raw, &limits)
            .map_err(|e| ScenarioError::new(path, Some(&e.key), &e.message))?;
        events.push(event);
    }
    events.sort_by_key(|event| event.at);
    Ok(events)
}

impl Drawn {
    /// A scenario file that draws exactly this whatever the seed: every range and choice
    /// pinned to its drawn value, and `events` as its timed events. `header` is written first,
    /// as `#` comment lines (its first line is the scenario's story).
    pub fn pinned_toml(&self, header: &str) -> String {
        let mut text = String::new();
        for line in header.lines() {
            match line {
                "" => text.push_str("#\n"),
                line => text.push_str(&format!("# {line}\n")),
            }
        }
        let pair = |a: &dyn fmt::Display, b: &dyn fmt::Display| format!("[{a}, {b}]");
        let float = |x: f64| format!("{x:?}");
        let sections: [(&str, Vec<(&str, String)>); 7] = [
            (
                "cluster",
                vec![
                    ("nodes", self.nodes.to_string()),
                    ("tick_ms", self.tick_ms.to_string()),
                    (
                        "election_ticks",
                        pair(&self.election_ticks.0, &self.election_ticks.1),
                    ),
                    ("heartbeat_ticks", self.heartbeat_ticks.to_string()),
                    ("pre_vote", self.pre_vote.to_string()),
                    ("check_quorum", self.check_quorum.to_string()),
                    ("append_entries_max", self.append_entries_max.to_string()),
                    (
                        "inflight_appends_max",
                        self.inflight_appends_max.to_string(),
                    ),
                    ("apply_entries_max", self.apply_entries_max.to_string()),
                    ("read_lease", self.read_lease.to_string()),
                    ("eager_commit", self.eager_commit.to_string()),
                    ("spare_nodes", self.spare_nodes.to_string()),
                    ("tls", self.tls.to_string()),
                ],
            ),
            (
                "snapshot",
                vec![
                    ("log_entries", self.snapshot_log_entries.to_string()),
                    ("log_bytes", self.snapshot_log_bytes.to_string()),
                    ("catch_up_entries", self.catch_up_entries.to_string()),
                    ("chunk_bytes", self.chunk_bytes.to_string()),
                    ("segment_bytes", self.segment_bytes.to_string()),
                ],
            ),
            (
                "chat",
                vec![
                    ("inbox_messages_max", self.inbox_messages_max.to_string()),
                    ("retained_bytes_max", self.retained_bytes_max.to_string()),
                ],
            ),
            (
                "run",
                vec![
                    ("duration_secs", self.duration_secs.to_string()),
                    ("liveness_bound_secs", self.liveness_bound_secs.to_string()),
                ],
            ),
            (
                "network",
                vec![
                    ("latency_ms", pair(&self.latency_ms.0, &self.latency_ms.1)),
                    ("loss", float(self.loss)),
                    ("duplicate", float(self.duplicate)),
                    ("reorder", float(self.reorder)),
                    (
                        "reorder_delay_ms",
                        pair(&self.reorder_delay_ms.0, &self.reorder_delay_ms.1),
                    ),
                    ("aim_kinds", format!("[\"{}\"]", self.aim_kind)),
                ],
            ),
            (
                "workload",
                vec![
                    ("clients", self.clients.to_string()),
                    ("users", self.users.to_string()),
                    ("rate_per_client", float(self.rate_per_client)),
                    ("request_timeout_ms", self.request_timeout_ms.to_string()),
                    ("mix", {
                        let weights: Vec<String> = self
                            .mix
                            .weights()
                            .iter()
                            .map(|(op, weight)| format!("{} = {weight}", op.name()))
                            .collect();
                        format!("{{ {} }}", weights.join(", "))
                    }),
                    (
                        "message_chars",
                        pair(&self.message_chars.0, &self.message_chars.1),
                    ),
                    ("read_mode", format!("\"{}\"", self.read_mode.name())),
                ]
                .into_iter()
                .chain(self.read_share.map(|share| ("read_share", float(share))))
                .chain((self.passwords > 0.0).then(|| ("passwords", float(self.passwords))))
                .chain(
                    (self.clients_per_host > 1)
                        .then(|| ("clients_per_host", self.clients_per_host.to_string())),
                )
                .collect(),
            ),
            (
                "faults",
                vec![
                    ("crash", float(self.crash_per_min)),
                    ("power_loss", float(self.power_loss_per_min)),
                    ("partition", float(self.partition_per_min)),
                    ("pause", float(self.pause_per_min)),
                    ("node_clock_drift", {
                        let factors: Vec<String> =
                            self.clock_drift.iter().map(|&f| float(f)).collect();
                        format!("[{}]", factors.join(", "))
                    }),
                    ("torn_writes", float(self.torn_writes)),
                    ("corrupt_tail", float(self.corrupt_tail)),
                    ("aim_leader", float(self.aim_leader)),
                    ("aim_transfer_target", float(self.aim_transfer_target)),
                    ("aim_learner", float(self.aim_learner)),
                    ("membership", float(self.membership_per_min)),
                    ("transfer", float(self.transfer_per_min)),
                    (
                        "downtime_ms",
                        pair(&self.downtime_ms.0, &self.downtime_ms.1),
                    ),
                    (
                        "max_down",
                        match self.max_down {
                            MaxDown::Minority => "\"minority\"".to_string(),
                            MaxDown::Any => "\"any\"".to_string(),
                        },
                    ),
                ],
            ),
        ];
        for (name, keys) in sections {
            text.push_str(&format!("\n[{name}]\n"));
            for (key, value) in keys {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        for event in &self.events {
            text.push('\n');
            text.push_str(&event.to_toml());
        }
        text
    }
}

/// Why a scenario did not load; its `Display` is one line: `FILE: KEY: what is wrong`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    path: PathBuf,
    key: Option<String>,
    message: String,
}

impl ScenarioError {
    fn new(path: &Path, key: Option<&str>, message: &str) -> ScenarioError {
        ScenarioError {
            path: path.to_path_buf(),
            key: key.filter(|key| !key.is_empty()).map(one_line),
            message: one_line(message),
        }
    }

    /// Turns a TOML syntax or type error into one line naming the key it points at.
    fn from_toml(path: &Path, text: &str, error: &toml::de::Error) -> ScenarioError {
        let mut message = plain_types(&one_line(error.message()));
        let Some(span) = error.span() else {
            return ScenarioError::new(path, None, &message);
        };
        let (line, column) = line_column(text, span.start);
        let mut key = locate_key(text, &span);
        if let Some(field) = quoted_after(&message, "missing field `") {
            key = Some(join_key(key.as_deref().unwrap_or(""), &field));
            message = "missing".to_string();
        } else if let Some(field) = quoted_after(&message, "unknown field `") {
            let expected = message
                .split_once("`, ")
                .map_or("", |(_, rest)| rest)
                .to_string();
            if key.is_none() {
                key = Some(key_segment(&field));
            }
            message = format!("unknown key; {expected}");
        } else if let Some(rest) = message.strip_prefix("unknown variant") {
            message = format!("unknown value{rest}");
        }
        let message = format!("{message} (line {line}, column {column})");
        ScenarioError::new(path, key.as_deref(), &message)
    }
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// A validation failure, before it is given the file name.
struct Invalid {
    key: String,
    message: String,
}

fn invalid(key: &str, message: String) -> Invalid {
    Invalid {
        key: key.to_string(),
        message,
    }
}

fn check_value<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    ok: impl Fn(T) -> bool,
    want: &str,
) -> Result<(), Invalid> {
    let shown = value.to_string();
    if ok(value) {
        Ok(())
    } else {
        Err(invalid(key, format!("must be {want}, got {shown}")))
    }
}

/// Checks a `[min, max]` pair: each bound satisfies `ok`, and min <= max.
fn check_pair<T: Copy + PartialOrd + fmt::Display>(
    key: &str,
    [min, max]: [T; 2],
    ok: impl Fn(T) -> bool,
    want: &str,
) -> Result<(), Invalid> {
    for bound in [min, max] {
        if !ok(bound) {
            return Err(invalid(
                key,
                format!("each bound must be {want}, got {bound}"),
            ));
        }
    }
    if min <= max {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("[{min}, {max}]: min must not exceed max"),
        ))
    }
}

fn is_probability(value: f64) -> bool {
    (0.0..1.0).contains(&value)
}

fn is_fraction(value: f64) -> bool {
    (0.0..=1.0).contains(&value)
}

fn validate_cluster(cluster: &ClusterSpec) -> Result<(), Invalid> {
    let nodes = cluster.nodes.values();
    if nodes.is_empty() {
        return Err(invalid(
            "cluster.nodes",
            "must list at least one node count".into(),
        ));
    }
    check_value(
        "cluster.spare_nodes",
        cluster.spare_nodes,
        |n| n <= SPARE_NODES_MAX,
        &format!("at most {SPARE_NODES_MAX}"),
    )?;
    for &count in nodes {
        let ok = |n| (1..=NODES_MAX).contains(&n);
        check_value(
            "cluster.nodes",
            count,
            ok,
            &format!("between 1 and {NODES_MAX}"),
        )?;
    }
    let ok = |ms| (1..=TICK_MS_MAX).contains(&ms);
    cluster.tick_ms.validate(
        "cluster.tick_ms",
        ok,
        &format!("between 1 and {TICK_MS_MAX}"),
    )?;
    cluster
        .heartbeat_ticks
        .validate("cluster.heartbeat_ticks", |t| t >= 1, "at least 1")?;
    let [min, max] = cluster.election_ticks;
    let heartbeat_max = cluster.heartbeat_ticks.max();
    if min <= heartbeat_max {
        let message = format!("min ({min}) must exceed heartbeat_ticks ({heartbeat_max})");
        return Err(invalid("cluster.election_ticks", message));
    }
    if max < min + 2 {
        let message = format!(
            "max ({max}) must be at least min ({min}) + 2: the range is [min, max), and a \
             fixed timeout lets candidates split the vote forever"
        );
        return Err(invalid("cluster.election_ticks", message));
    }
    let want = format!("between 1 and {APPEND_ENTRIES_MAX}");
    cluster.append_entries_max.validate(
        "cluster.append_entries_max",
        |n| (1..=APPEND_ENTRIES_MAX).contains(&n),
        &want,
    )?;
    let want = format!("between 1 and {INFLIGHT_APPENDS_MAX}");
    cluster.inflight_appends_max.validate(
        "cluster.inflight_appends_max",
        |n| (1..=INFLIGHT_APPENDS_MAX).contains(&n),
        &want,
    )?;
    let want = format!("between 1 and {APPLY_ENTRIES_MAX}");
    cluster.apply_entries_max.validate(
        "cluster.apply_entries_max",
        |n| (1..=APPLY_ENTRIES_MAX).contains(&n),
        &want,
    )?;
    for (key, choice) in [
        ("cluster.pre_vote", &cluster.pre_vote),
        ("cluster.check_quorum", &cluster.check_quorum),
        ("cluster.read_lease", &cluster.read_lease),
        ("cluster.eager_commit", &cluster.eager_commit),
        ("cluster.tls", &cluster.tls),
    ] {
        if choice.values().is_empty() {
            return Err(invalid(key, "a list to pick from needs a value".into()));
        }
    }
    if max > ELECTION_TICKS_MAX {
        let message = format!("max must be at most {ELECTION_TICKS_MAX}, got {max}");
        return Err(invalid("cluster.election_ticks", message));
    }
    Ok(())
}

fn validate_snapshot(snapshot: &SnapshotSpec) -> Result<(), Invalid> {
    let within = |key: &str, param: &Param<u64>, min: u64, max: u64| {
        param.validate(
            key,
            |v| (min..=max).contains(&v),
            &format!("between {min} and {max}"),
        )
    };
    within(
        "snapshot.log_entries",
        &snapshot.log_entries,
        1,
        SNAPSHOT_ENTRIES_MAX,
    )?;
    within(
        "snapshot.log_bytes",
        &snapshot.log_bytes,
        1,
        SNAPSHOT_BYTES_MAX,
    )?;
    within(
        "snapshot.catch_up_entries",
        &snapshot.catch_up_entries,
        0,
        SNAPSHOT_ENTRIES_MAX,
    )?;
    let chunk_max = raftchat::limits::SNAPSHOT_CHUNK_BYTES_MAX as u64;
    within("snapshot.chunk_bytes", &snapshot.chunk_bytes, 1, chunk_max)?;
    within(
        "snapshot.segment_bytes",
        &snapshot.segment_bytes,
        SEGMENT_BYTES_MIN,
        SNAPSHOT_BYTES_MAX,
    )
}

fn validate_chat(chat: &ChatSpec) -> Result<(), Invalid> {
    use raftchat::limits::{INBOX_MESSAGES_MAX, RETAINED_BYTES_MAX, RETAINED_BYTES_MIN};
    let ok = |n| (1..=INBOX_MESSAGES_MAX).contains(&n);
    let want = format!("between 1 and {INBOX_MESSAGES_MAX}");
    chat.inbox_messages_max
        .validate("chat.inbox_messages_max", ok, &want)?;
    let ok = |n| (RETAINED_BYTES_MIN..=RETAINED_BYTES_MAX).contains(&n);
    let want = format!("between {RETAINED_BYTES_MIN} and {RETAINED_BYTES_MAX}");
    chat.retained_bytes_max
        .validate("chat.retained_bytes_max", ok, &want)
}

fn validate_run(run: &RunSpec) -> Result<(), Invalid> {
    let ok = |secs| (1..=DURATION_SECS_MAX).contains(&secs);
    let want = format!("between 1 and {DURATION_SECS_MAX}");
    run.duration_secs.validate("run.duration_secs", ok, &want)?;
    let ok = |secs| (1..=LIVENESS_BOUND_SECS_MAX).contains(&secs);
    let want = format!("between 1 and {LIVENESS_BOUND_SECS_MAX}");
    check_value(
        "run.liveness_bound_secs",
        run.liveness_bound_secs,
        ok,
        &want,
    )
}

fn validate_network(network: &NetworkSpec) -> Result<(), Invalid> {
    let ok = |ms| ms <= LATENCY_MS_MAX;
    let want = format!("at most {LATENCY_MS_MAX}");
    network
        .latency_ms
        .validate("network.latency_ms", ok, &want)?;
    network
        .loss
        .validate("network.loss", is_probability, "in [0, 1)")?;
    network
        .duplicate
        .validate("network.duplicate", is_probability, "in [0, 1)")?;
    network
        .reorder
        .validate("network.reorder", is_probability, "in [0, 1)")?;
    let ok = |ms| ms <= REORDER_DELAY_MS_MAX;
    let want = format!("at most {REORDER_DELAY_MS_MAX}");
    check_pair(
        "network.reorder_delay_ms",
        network.reorder_delay_ms,
        ok,
        &want,
    )?;
    if network.aim_kinds.is_empty() {
        return Err(invalid(
            "network.aim_kinds",
            "must name at least one kind (\"all\" for every message)".into(),
        ));
    }
    for kind in &network.aim_kinds {
        if kind != "all" && !MESSAGE_KINDS.contains(&kind.as_str()) {
            return Err(invalid(
                "network.aim_kinds",
                format!(
                    "{kind:?} is not a message kind; use \"all\" or one of {}",
                    MESSAGE_KINDS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn validate_workload(workload: &WorkloadSpec) -> Result<(), Invalid> {
    let ok = |n| (1..=CLIENTS_MAX).contains(&n);
    let want = format!("between 1 and {CLIENTS_MAX}");
    workload.clients.validate("workload.clients", ok, &want)?;
    let per_host = "workload.clients_per_host";
    workload.clients_per_host.validate(per_host, ok, &want)?;
    let ok = |n| (1..=USERS_MAX).contains(&n);
    check_value(
        "workload.users",
        workload.users,
        ok,
        &format!("between 1 and {USERS_MAX}"),
    )?;
    let ok = |rate: f64| rate > 0.0 && rate <= RATE_PER_CLIENT_MAX;
    let want = format!("in (0, {RATE_PER_CLIENT_MAX}]");
    workload
        .rate_per_client
        .validate("workload.rate_per_client", ok, &want)?;
    let ok = |ms| (1..=REQUEST_TIMEOUT_MS_MAX).contains(&ms);
    let want = format!("between 1 and {REQUEST_TIMEOUT_MS_MAX}");
    check_value(
        "workload.request_timeout_ms",
        workload.request_timeout_ms,
        ok,
        &want,
    )?;
    if workload.mix.total() == 0 {
        return Err(invalid(
            "workload.mix",
            "at least one weight must be above 0".into(),
        ));
    }
    if workload.read_mode.values().is_empty() {
        let message = "a list to pick from needs a value".into();
        return Err(invalid("workload.read_mode", message));
    }
    if let Some(share) = &workload.read_share {
        let ok = |share: f64| (0.0..=1.0).contains(&share);
        share.validate("workload.read_share", ok, "in [0, 1]")?;
        let (reads, writes) = workload.mix.split_total();
        if share.max() > 0.0 && reads == 0 {
            let message = "needs a read (check, list or fetch) weighing above 0 in the mix";
            return Err(invalid("workload.read_share", message.into()));
        }
        if share.min() < 1.0 && writes == 0 {
            let message = "needs a write (create, delete or send) weighing above 0 in the mix";
            return Err(invalid("workload.read_share", message.into()));
        }
    }
    if let Some(share) = &workload.passwords {
        let ok = |share: f64| (0.0..=1.0).contains(&share);
        share.validate("workload.passwords", ok, "in [0, 1]")?;
    }
    let ok = |chars| chars <= MESSAGE_CHARS_MAX;
    let want = format!("at most {MESSAGE_CHARS_MAX}");
    check_pair("workload.message_chars", workload.message_chars, ok, &want)
}

fn validate_faults(faults: &FaultSpec) -> Result<(), Invalid> {
    let rates = [
        ("faults.crash", &faults.crash),
        ("faults.power_loss", &faults.power_loss),
        ("faults.partition", &faults.partition),
        ("faults.pause", &faults.pause),
        ("faults.membership", &faults.membership),
        ("faults.transfer", &faults.transfer),
    ];
    let want = format!("in [0, {FAULTS_PER_MIN_MAX}]");
    for (key, rate) in rates {
        rate.validate(key, |r| (0.0..=FAULTS_PER_MIN_MAX).contains(&r), &want)?;
    }
    let want = format!("in ({CLOCK_DRIFT_MIN_EXCLUSIVE}, {CLOCK_DRIFT_MAX}]");
    check_pair(
        "faults.clock_drift",
        faults.clock_drift,
        is_clock_factor,
        &want,
    )?;
    faults
        .torn_writes
        .validate("faults.torn_writes", is_fraction, "in [0, 1]")?;
    faults
        .corrupt_tail
        .validate("faults.corrupt_tail", is_fraction, "in [0, 1]")?;
    faults
        .aim_leader
        .validate("faults.aim_leader", is_fraction, "in [0, 1]")?;
    faults
        .aim_transfer_target
        .validate("faults.aim_transfer_target", is_fraction, "in [0, 1]")?;
    faults
        .aim_learner
        .validate("faults.aim_learner", is_fraction, "in [0, 1]")?;
    let ok = |ms| (1..=DOWNTIME_MS_MAX).contains(&ms);
    let want = format!("between 1 and {DOWNTIME_MS_MAX}");
    check_pair("faults.downtime_ms", faults.downtime_ms, ok, &want)
}

/// `node_clock_drift` names one factor per node, so the cluster size must be fixed.
fn validate_node_clock_drift(cluster: &ClusterSpec, faults: &FaultSpec) -> Result<(), Invalid> {
    let Some(factors) = &faults.node_clock_drift else {
        return Ok(());
    };
    let key = "faults.node_clock_drift";
    if !cluster.nodes.is_fixed() || factors.len() != cluster.nodes.max() as usize {
        let message = format!(
            "needs a fixed cluster.nodes and one factor per node, got {} factors",
            factors.len()
        );
        return Err(invalid(key, message));
    }
    match factors.iter().find(|&&f| !is_clock_factor(f)) {
        Some(bad) => Err(invalid(
            key,
            format!("each must be in ({CLOCK_DRIFT_MIN_EXCLUSIVE}, {CLOCK_DRIFT_MAX}], got {bad}"),
        )),
        None => Ok(()),
    }
}

fn is_clock_factor(factor: f64) -> bool {
    factor > CLOCK_DRIFT_MIN_EXCLUSIVE && factor <= CLOCK_DRIFT_MAX
}

/// What the rest of the file allows an event to name.
struct EventLimits {
    nodes_max: u32,
    /// Events must come before this millisecond (the longest drawable duration).
    at_ms_end: u64,
}

/// Checks one `[[events]]` table (the `index`th in the file) and builds its event.
fn build_event(index: usize, raw: &RawEvent, limits: &EventLimits) -> Result<Event, Invalid> {
    let fields = EventFields { index, raw, limits };
    if !(raw.at_ms >= 0.0 && raw.at_ms < limits.at_ms_end as f64) {
        let message = format!(
            "must be at least 0 and less than run.duration_secs * 1000 = {} (its max), got {}",
            limits.at_ms_end, raw.at_ms
        );
        return Err(invalid(&fields.key("at_ms"), message));
    }
    let kind = raw.action;
    for present in raw.present_keys() {
        if !kind.keys().contains(&present) {
            let takes = match kind.keys() {
                [] => "takes no other keys".to_string(),
                keys => format!("takes {}", keys.join(", ")),
            };
            let message = format!("not a key of action `{}`, which {takes}", kind.name());
            return Err(invalid(&fields.key(present), message));
        }
    }
    let action = fields.action()?;
    Ok(Event {
        at: Duration::from_nanos((raw.at_ms * 1e6).round() as u64),
        action,
    })
}

/// One `[[events]]` table being turned into an [`Action`], with what its errors need.
struct EventFields<'a> {
    index: usize,
    raw: &'a RawEvent,
    limits: &'a EventLimits,
}

impl EventFields<'_> {
    fn key(&self, name: &str) -> String {
        format!("events[{}].{name}", self.index)
    }

    fn required<T>(&self, value: Option<T>, name: &str) -> Result<T, Invalid> {
        let message = format!("missing: action `{}` needs it", self.raw.action.name());
        value.ok_or_else(|| invalid(&self.key(name), message))
    }

    fn node_ref(&self, value: Option<NodeRef>, name: &str) -> Result<NodeRef, Invalid> {
        check_node(
            &self.key(name),
            self.required(value, name)?,
            self.limits.nodes_max,
        )
    }

    fn node(&self) -> Result<NodeRef, Invalid> {
        self.node_ref(self.raw.node, "node")
    }

    fn action(&self) -> Result<Action, Invalid> {
        let raw = self.raw;
        Ok(match raw.action {
            ActionKind::Crash => Action::Crash { node: self.node()? },
            ActionKind::Restart => Action::Restart { node: self.node()? },
            ActionKind::PowerLoss => Action::PowerLoss {
                node: self.node()?,
                torn: raw.torn.unwrap_or(false),
                corrupt: raw.corrupt.unwrap_or(false),
            },
            ActionKind::Pause => Action::Pause { node: self.node()? },
            ActionKind::Resume => Action::Resume { node: self.node()? },
            ActionKind::Isolate => Action::Isolate { node: self.node()? },
            ActionKind::Split => self.split()?,
            ActionKind::SplitRandom => self.split_random()?,
            ActionKind::OneWay => self.one_way()?,
            ActionKind::Bridge => Action::Bridge { node: self.node()? },
            ActionKind::Heal => Action::Heal,
            ActionKind::Latency => {
                let ms = self.required(raw.ms, "ms")?;
                let want = format!("at most {LATENCY_MS_MAX}");
                check_pair(&self.key("ms"), ms, |ms| ms <= LATENCY_MS_MAX, &want)?;
                Action::Latency { ms }
            }
            ActionKind::ClockDrift => {
                let node = self.node()?;
                let factor = self.required(raw.factor, "factor")?;
                let want = format!("in ({CLOCK_DRIFT_MIN_EXCLUSIVE}, {CLOCK_DRIFT_MAX}]");
                check_value(&self.key("factor"), factor, is_clock_factor, &want)?;
                Action::ClockDrift { node, factor }
            }
            ActionKind::CorruptTail => Action::CorruptTail { node: self.node()? },
            ActionKind::RestartAll => Action::RestartAll,
            ActionKind::CrashAll => Action::CrashAll,
            ActionKind::PowerLossAll => Action::PowerLossAll {
                torn: raw.torn.unwrap_or(false),
            },
            ActionKind::AddMember => Action::AddMember {
                node: self.node()?,
                learner: raw.learner.unwrap_or(false),
            },
            ActionKind::RemoveMember => Action::RemoveMember { node: self.node()? },
            ActionKind::HostilePeer => Action::HostilePeer { node: self.node()? },
            ActionKind::TransferLeader => Action::TransferLeader {
                node: match raw.node {
                    Some(node) => Some(self.node_ref(Some(node), "node")?),
                    None => None,
                },
            },
        })
    }

    fn one_way(&self) -> Result<Action, Invalid> {
        let from = self.node_ref(self.raw.from, "from")?;
        let to = self.node_ref(self.raw.to, "to")?;
        // Two "follower"s (or learners) may be two different nodes; any other repeat is one.
        if from == to && !matches!(from, NodeRef::Follower | NodeRef::Learner) {
            let message = format!("must differ from `from` ({from})");
            return Err(invalid(&self.key("to"), message));
        }
        Ok(Action::OneWay { from, to })
    }

    fn split(&self) -> Result<Action, Invalid> {
        let key = self.key("minority");
        let minority = self.required(self.raw.minority.as_deref(), "minority")?;
        let nodes_max = self.limits.nodes_max;
        if minority.is_empty() {
            return Err(invalid(&key, "must name at least one node".into()));
        }
        if minority.len() >= nodes_max as usize {
            let message = format!(
                "names {} nodes, but the cluster has at most {nodes_max}: the other side would \
                 be empty",
                minority.len()
            );
            return Err(invalid(&key, message));
        }
        for (position, &node) in minority.iter().enumerate() {
            check_node(&key, node, nodes_max)?;
            let repeated = minority[..position].contains(&node);
            if repeated && matches!(node, NodeRef::Id(_) | NodeRef::Leader) {
                return Err(invalid(&key, format!("names {node} twice")));
            }
        }
        Ok(Action::Split {
            minority: minority.to_vec(),
        })
    }

    fn split_random(&self) -> Result<Action, Invalid> {
        let count = self.required(self.raw.count, "count")?;
        let nodes_max = self.limits.nodes_max;
        if count == 0 || count >= nodes_max {
            let message = format!(
                "must be at least 1 and less than cluster.nodes (at most {nodes_max}), so both \
                 sides have a node, got {count}"
            );
            return Err(invalid(&self.key("count"), message));
        }
        Ok(Action::SplitRandom { count })
    }
}

fn check_node(key: &str, node: NodeRef, nodes_max: u32) -> Result<NodeRef, Invalid> {
    match node {
        NodeRef::Id(0) => Err(invalid(key, "node ids start at 1, got 0".into())),
        NodeRef::Id(id) if id > nodes_max => Err(invalid(
            key,
            format!("node {id} does not exist: cluster.nodes is at most {nodes_max}"),
        )),
        node => Ok(node),
    }
}

/// The story: the first line, if it is a comment, without its `#` and surrounding spaces.
fn story(text: &str) -> String {
    let first = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .lines()
        .next()
        .unwrap_or("");
    match first.trim_start().strip_prefix('#') {
        Some(comment) => comment.trim().to_string(),
        None => String::new(),
    }
}

/// Joins the lines of a message with "; " and blanks other control characters, so an error
/// always prints as one line.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .join("; ")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Says "a non-negative integer" where serde says "u64", for people who write TOML.
fn plain_types(message: &str) -> String {
    message
        .replace("expected u32", "expected an integer from 0 to 4294967295")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected f64", "expected a number")
}

/// The text between `prefix` (at the start of `message`) and the next backquote.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(quoted, _)| quoted.to_string())
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A key as one segment of a dotted path: bare if TOML allows it bare, quoted otherwise.
fn key_segment(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.escape_debug())
    }
}

fn join_key(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        key_segment(name)
    } else {
        format!("{parent}.{}", key_segment(name))
    }
}

/// Names the key whose name or value covers `span` (an error's position): `cluster.nodes`,
/// `events[1].node`. Parses the text again into a tree of spans; None if that fails.
fn locate_key(text: &str, span: &Range<usize>) -> Option<String> {
    let tree: Node = toml::from_str(text).ok()?;
    let mut path = String::new();
    tree.locate(span, &mut path).then_some(path)
}

/// A TOML value reduced to its shape and the spans of its keys and values, as far as the
/// parser knows them (the implicit parent tables of dotted keys have none).
struct Node {
    shape: Shape,
    span: Option<Range<usize>>,
}

enum Shape {
    Table(Vec<(Key, Node)>),
    Array(Vec<Node>),
    Leaf,
}

/// A table key with its span, when the parser knows it.
struct Key {
    name: String,
    span: Option<Range<usize>>,
}

fn covers(outer: Option<&Range<usize>>, inner: &Range<usize>) -> bool {
    outer.is_some_and(|o| o.start <= inner.start && inner.end <= o.end && o.start < o.end)
}

impl Node {
    /// Extends `path` to the deepest key or value covering `span`; false if none does.
    fn locate(&self, span: &Range<usize>, path: &mut String) -> bool {
        let parent_len = path.len();
        match &self.shape {
            Shape::Table(entries) => {
                for (key, value) in entries {
                    path.truncate(parent_len);
                    if parent_len > 0 {
                        path.push('.');
                    }
                    path.push_str(&key_segment(&key.name));
                    let on_key = covers(key.span.as_ref(), span);
                    if on_key || value.locate(span, path) || covers(value.span.as_ref(), span) {
                        return true;
                    }
                }
            }
            Shape::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    path.truncate(parent_len);
                    path.push_str(&format!("[{index}]"));
                    if item.locate(span, path) || covers(item.span.as_ref(), span) {
                        return true;
                    }
                }
            }
            Shape::Leaf => {}
        }
        path.truncate(parent_len);
        false
    }
}

// The toml crate hands out spans only through `toml::Spanned`, whose protocol is this struct
// name and these fields: asked for that struct, the parser answers with a map of the three
// fields when it knows the span, and with the bare value when it does not. `Spanned` itself
// fails on the latter, so the locator speaks the protocol directly. Should it ever change, no
// spans arrive, and errors keep their line and column but name no key.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, NodeVisitor)
    }
}

/// The value inside a span wrapper; asking for a span again would wrap it again.
struct Unspanned(Node);

impl<'de> Deserialize<'de> for Unspanned {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor).map(Unspanned)
    }
}

struct NodeVisitor;

impl NodeVisitor {
    fn leaf<E>(self) -> Result<Node, E> {
        Ok(Node {
            shape: Shape::Leaf,
            span: None,
        })
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        self.leaf()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        self.leaf()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        self.leaf()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        self.leaf()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        self.leaf()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node {
            shape: Shape::Array(items),
            span: None,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(first) = map.next_key::<Key>()? else {
            return Ok(Node {
                shape: Shape::Table(Vec::new()),
                span: None,
            });
        };
        if first.name == SPANNED_START && first.span.is_none() {
            return visit_span_wrapper(map);
        }
        let mut entries = vec![(first, map.next_value()?)];
        while let Some(key) = map.next_key::<Key>()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node {
            shape: Shape::Table(entries),
            span: None,
        })
    }
}

/// Reads the rest of a span wrapper whose start field was just read as a key.
fn visit_span_wrapper<'de, A: MapAccess<'de>>(mut map: A) -> Result<Node, A::Error> {
    let start = map.next_value::<usize>()?;
    let (mut end, mut node) = (None, None);
    while let Some(field) = map.next_key::<String>()? {
        match field.as_str() {
            SPANNED_END => end = Some(map.next_value::<usize>()?),
            SPANNED_VALUE => node = Some(map.next_value::<Unspanned>()?.0),
            _ => map.next_value::<de::IgnoredAny>().map(|_| ())?,
        }
    }
    let mut node = node.ok_or_else(|| de::Error::missing_field(SPANNED_VALUE))?;
    node.span = end.map(|end| start..end);
    Ok(node)
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table key")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
        Ok(Key {
            name: name.to_string(),
            span: None,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        let (mut start, mut end, mut name) = (None, None, None);
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                SPANNED_START => start = Some(map.next_value::<usize>()?),
                SPANNED_END => end = Some(map.next_value::<usize>()?),
                SPANNED_VALUE => name = Some(map.next_value::<String>()?),
                _ => map.next_value::<de::IgnoredAny>().map(|_| ())?,
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field(SPANNED_VALUE))?;
        let span = start.zip(end).map(|(start, end)| start..end);
        Ok(Key { name, span })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("scenarios/x.toml"), text)
    }

    fn parse_ok(text: &str) -> Scenario {
        match parse(text) {
            Ok(scenario) => scenario,
            Err(e) => panic!("expected {text:?} to parse, got: {e}"),
        }
    }

    /// The error line for `text`, which must fail.
    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected {text:?} to be an error"),
            Err(e) => {
                let line = e.to_string();
                assert!(!line.contains('\n'), "not one line: {line:?}");
                line
            }
        }
    }

    fn assert_error_names(text: &str, key: &str) {
        let line = error(text);
        let prefix = format!("scenarios/x.toml: {key}: ");
        assert!(
            line.starts_with(&prefix),
            "for {text:?}: expected {prefix:?}, got {line:?}"
        );
    }

    const FULL: &str = r#"# a full example: every section, ranges, and every action
[cluster]
nodes = [3, 5]
tick_ms = [5, 20]
election_ticks = [12, 24]
heartbeat_ticks = [1, 3]
pre_vote = false
check_quorum = false

[run]
duration_secs = [20, 40]
liveness_bound_secs = 15

[network]
latency_ms = 2
loss = [0.0, 0.1]
duplicate = 0.01
reorder = [0, 0.2]
reorder_delay_ms = [10, 30]

[workload]
clients = [2, 16]
users = 20
rate_per_client = [1.0, 20.0]
request_timeout_ms = 500
mix = { send = 5, fetch = 2 }
message_chars = [0, 600]

[faults]
crash = [0.0, 2.0]
power_loss = 1
partition = 0.5
pause = [0, 1]
clock_drift = [0.8, 1.25]
torn_writes = 0.5
corrupt_tail = [0.0, 0.3]
downtime_ms = [100, 2000]
max_down = "any"

[[events]]
at_ms = 9000
action = "heal"

[[events]]
at_ms = 1000
action = "crash"
node = "leader"

[[events]]
at_ms = 1000
action = "restart"
node = 5

[[events]]
at_ms = 2000
action = "power_loss"
node = 2
torn = true

[[events]]
at_ms = 3000
action = "pause"
node = "follower"

[[events]]
at_ms = 3500
action = "resume"
node = "follower"

[[events]]
at_ms = 4000
action = "isolate"
node = 1

[[events]]
at_ms = 5000
action = "split"
minority = [1, "leader"]

[[events]]
at_ms = 5500
action = "split_random"
count = 2

[[events]]
at_ms = 6000
action = "one_way"
from = "leader"
to = 3

[[events]]
at_ms = 7000
action = "bridge"
node = 2

[[events]]
at_ms = 8000
action = "latency"
ms = [10, 20]

[[events]]
at_ms = 8500
action = "clock_drift"
node = 1
factor = 1.5

[[events]]
at_ms = 10000
action = "corrupt_tail"
node = 3

[[events]]
at_ms = 11000
action = "crash_all"

[[events]]
at_ms = 12000
action = "power_loss_all"
torn = true

[[events]]
at_ms = 13000
action = "restart_all"
"#;

    #[test]
    fn full_example_parses_every_section_and_action() {
        let s = parse_ok(FULL);
        assert_eq!(s.name, "x");
        assert_eq!(
            s.story,
            "a full example: every section, ranges, and every action"
        );
        assert_eq!(s.cluster.nodes, Choice::AnyOf(vec![3, 5]));
        assert_eq!(s.cluster.tick_ms, Param::Range([5, 20]));
        assert_eq!(s.cluster.election_ticks, [12, 24]);
        assert_eq!(s.cluster.heartbeat_ticks, Param::Range([1, 3]));
        assert_eq!(s.cluster.pre_vote, Choice::One(false));
        assert_eq!(s.cluster.check_quorum, Choice::One(false));
        assert_eq!(s.run.duration_secs, Param::Range([20, 40]));
        assert_eq!(s.run.liveness_bound_secs, 15);
        assert_eq!(s.network.latency_ms, Param::Fixed(2));
        assert_eq!(s.network.loss, Param::Range([0.0, 0.1]));
        assert_eq!(s.network.reorder, Param::Range([0.0, 0.2]));
        assert_eq!(
            s.workload.mix,
            Mix {
                send: 5,
                fetch: 2,
                ..Mix::zero()
            }
        );
        assert_eq!(s.workload.message_chars, [0, 600]);
        assert_eq!(s.faults.power_loss, Param::Fixed(1.0));
        assert_eq!(s.faults.max_down, MaxDown::Any);
        let times: Vec<Duration> = s.events.iter().map(|e| e.at).collect();
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(times, sorted, "events are sorted by at_ms");
        let names: Vec<&str> = s.events.iter().map(|e| e.action.name()).collect();
        assert_eq!(
            &names[..2],
            ["crash", "restart"],
            "same at_ms keeps file order"
        );
        assert_eq!(names.len(), 17);
        assert_eq!(
            s.events[0].action,
            Action::Crash {
                node: NodeRef::Leader
            }
        );
        let power_loss = Action::PowerLoss {
            node: NodeRef::Id(2),
            torn: true,
            corrupt: false,
        };
        assert_eq!(s.events[2].action, power_loss);
        let split = Action::Split {
            minority: vec![NodeRef::Id(1), NodeRef::Leader],
        };
        assert!(s.events.iter().any(|e| e.action == split));
        let split_random = Action::SplitRandom { count: 2 };
        assert!(s.events.iter().any(|e| e.action == split_random));
        let one_way = Action::OneWay {
            from: NodeRef::Leader,
            to: NodeRef::Id(3),
        };
        assert!(s.events.iter().any(|e| e.action == one_way));
        assert!(s
            .events
            .iter()
            .any(|e| e.action == Action::Latency { ms: [10, 20] }));
        let drift = Action::ClockDrift {
            node: NodeRef::Id(1),
            factor: 1.5,
        };
        assert!(s.events.iter().any(|e| e.action == drift));
        assert!(s
            .events
            .iter()
            .any(|e| e.action == Action::PowerLossAll { torn: true }));
        assert_eq!(
            s.events.last().map(|e| &e.action),
            Some(&Action::RestartAll)
        );
    }

    impl Mix {
        fn zero() -> Mix {
            Mix {
                create: 0,
                check: 0,
                list: 0,
                delete: 0,
                send: 0,
                fetch: 0,
            }
        }
    }

    #[test]
    fn empty_file_is_every_documented_default() {
        let s = parse_ok("");
        assert_eq!(s.story, "");
        assert_eq!(s.cluster.nodes, Choice::One(3));
        assert_eq!(s.cluster.tick_ms, Param::Fixed(10));
        assert_eq!(s.cluster.election_ticks, [10, 20]);
        assert_eq!(s.cluster.heartbeat_ticks, Param::Fixed(2));
        assert_eq!(s.cluster.pre_vote, Choice::One(true));
        assert_eq!(s.cluster.check_quorum, Choice::One(true));
        assert_eq!(s.run.duration_secs, Param::Fixed(30));
        assert_eq!(s.run.liveness_bound_secs, 20);
        assert_eq!(s.network.latency_ms, Param::Range([1, 5]));
        assert_eq!(s.network.loss, Param::Fixed(0.0));
        assert_eq!(s.network.duplicate, Param::Fixed(0.0));
        assert_eq!(s.network.reorder, Param::Fixed(0.0));
        assert_eq!(s.network.reorder_delay_ms, [5, 50]);
        assert_eq!(s.workload.clients, Param::Fixed(4));
        assert_eq!(s.workload.users, 8);
        assert_eq!(s.workload.rate_per_client, Param::Fixed(10.0));
        assert_eq!(s.workload.request_timeout_ms, 1000);
        let mix = Mix {
            create: 2,
            check: 1,
            list: 1,
            delete: 1,
            send: 6,
            fetch: 3,
        };
        assert_eq!(s.workload.mix, mix);
        assert_eq!(s.workload.message_chars, [1, 40]);
        assert_eq!(s.faults.crash, Param::Fixed(0.0));
        assert_eq!(s.faults.power_loss, Param::Fixed(0.0));
        assert_eq!(s.faults.partition, Param::Fixed(0.0));
        assert_eq!(s.faults.pause, Param::Fixed(0.0));
        assert_eq!(s.faults.clock_drift, [1.0, 1.0]);
        assert_eq!(s.faults.torn_writes, Param::Fixed(0.0));
        assert_eq!(s.faults.corrupt_tail, Param::Fixed(0.0));
        assert_eq!(s.faults.downtime_ms, [200, 3000]);
        assert_eq!(s.faults.max_down, MaxDown::Minority);
        assert!(s.events.is_empty());
        // Empty sections are the defaults too.
        let sections = "[cluster]\n[run]\n[network]\n[workload]\n[faults]\n";
        let with_sections = parse_ok(sections);
        assert_eq!(
            (with_sections.cluster, with_sections.faults),
            (s.cluster, s.faults)
        );
    }

    /// The example in the module docs sets every key to its default: the docs cannot drift.
    #[test]
    fn module_doc_example_spells_out_the_defaults() {
        let source = include_str!("scenario.rs");
        let example: Vec<&str> = source
            .lines()
            .skip_while(|line| *line != "//! ```toml")
            .skip(1)
            .take_while(|line| *line != "//! ```")
            .map(|line| {
                line.strip_prefix("//! ")
                    .unwrap_or(line.trim_start_matches("//!"))
            })
            .collect();
        assert!(example.len() > 40, "the module docs hold the full example");
        let documented = parse_ok(&example.join("\n"));
        let defaults = parse_ok("");
        assert_eq!(
            documented.story,
            "the story: what this scenario exercises, in one line"
        );
        assert_eq!(documented.cluster, defaults.cluster);
        assert_eq!(documented.snapshot, defaults.snapshot);
        assert_eq!(documented.chat, defaults.chat);
        assert_eq!(documented.run, defaults.run);
        assert_eq!(documented.network, defaults.network);
        assert_eq!(documented.workload, defaults.workload);
        assert_eq!(documented.faults, defaults.faults);
        let crash = Event {
            at: Duration::from_millis(5000),
            action: Action::Crash {
                node: NodeRef::Id(1),
            },
        };
        assert_eq!(documented.events, vec![crash]);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        assert_error_names("bogus = 1", "bogus");
        assert_error_names("[bogus]\nx = 1", "bogus");
        for section in ["cluster", "run", "network", "workload", "faults"] {
            assert_error_names(
                &format!("[{section}]\nbogus = 1\n"),
                &format!("{section}.bogus"),
            );
            let inline = format!("{section} = {{ bogus = 1 }}\n");
            assert_error_names(&inline, &format!("{section}.bogus"));
            assert_error_names(
                &format!("{section}.bogus = 1\n"),
                &format!("{section}.bogus"),
            );
        }
        let line = error("[cluster]\nnodes = 3\nnode = 3\n");
        assert!(
            line.contains("unknown key") && line.contains("`nodes`"),
            "{line}"
        );
        assert!(line.ends_with("(line 3, column 1)"), "{line}");
        assert_error_names("[workload]\nmix = { post = 1 }", "workload.mix.post");
        let event = "[[events]]\nat_ms = 1\naction = \"heal\"\nbogus = 1\n";
        assert_error_names(event, "events[0].bogus");
    }

    #[test]
    fn wrong_types_are_errors_naming_the_key() {
        assert_error_names("[cluster]\nnodes = \"three\"", "cluster.nodes");
        assert_error_names("[cluster]\nnodes = [3, \"x\"]", "cluster.nodes");
        assert_error_names("[cluster]\npre_vote = 1", "cluster.pre_vote");
        assert_error_names(
            "[cluster]\nelection_ticks = [10, \"x\"]",
            "cluster.election_ticks[1]",
        );
        assert_error_names(
            "[cluster]\nelection_ticks = [10, 20, 30]",
            "cluster.election_ticks",
        );
        assert_error_names("[cluster]\ntick_ms = 1.5", "cluster.tick_ms");
        assert_error_names("[cluster]\ntick_ms = -1", "cluster.tick_ms");
        assert_error_names("cluster = 3", "cluster");
        assert_error_names(
            "[run]\nliveness_bound_secs = \"x\"",
            "run.liveness_bound_secs",
        );
        assert_error_names("[network]\nloss = \"x\"", "network.loss");
        assert_error_names("[workload]\nusers = 5000000000", "workload.users");
        assert_error_names("[faults]\nmax_down = \"all\"", "faults.max_down");
        assert_error_names("[faults]\nclock_drift = 1.0", "faults.clock_drift");
        assert_error_names("events = 3", "events");
        let line = error("[cluster]\ntick_ms = \"x\"");
        assert!(
            line.contains("non-negative integer, or a [min, max] pair"),
            "{line}"
        );
        assert!(line.ends_with("(line 2, column 11)"), "{line}");
    }

    #[test]
    fn syntax_errors_are_one_line_with_a_position() {
        let line = error("[cluster\nnodes = 3\n");
        assert!(line.starts_with("scenarios/x.toml: "), "{line}");
        assert!(line.contains("(line 1, column 9)"), "{line}");
        let line = error("[cluster]\nnodes = 3\nnodes = 5\n");
        assert!(line.contains("line 3"), "{line}");
    }

    #[test]
    fn bad_cluster_values_are_errors() {
        assert_error_names("[cluster]\nnodes = 0", "cluster.nodes");
        assert_error_names("[cluster]\nnodes = 8", "cluster.nodes");
        assert_error_names("[cluster]\nnodes = [3, 8]", "cluster.nodes");
        assert_error_names("[cluster]\nnodes = []", "cluster.nodes");
        let line = error("[cluster]\nnodes = 8");
        assert_eq!(
            line,
            "scenarios/x.toml: cluster.nodes: must be between 1 and 7, got 8"
        );
        assert_error_names(
            "[cluster]\nelection_ticks = [2, 20]",
            "cluster.election_ticks",
        );
        assert_error_names(
            "[cluster]\nelection_ticks = [10, 10]",
            "cluster.election_ticks",
        );
        assert_error_names(
            "[cluster]\nelection_ticks = [10, 9]",
            "cluster.election_ticks",
        );
        let heartbeat = "[cluster]\nheartbeat_ticks = [1, 10]\nelection_ticks = [10, 20]";
        assert_error_names(heartbeat, "cluster.election_ticks");
        assert_error_names("[cluster]\nheartbeat_ticks = 0", "cluster.heartbeat_ticks");
        assert_error_names("[cluster]\ntick_ms = 0", "cluster.tick_ms");
        assert_error_names("[cluster]\ntick_ms = 1001", "cluster.tick_ms");
    }

    #[test]
    fn bad_values_in_other_sections_are_errors() {
        assert_error_names("[run]\nduration_secs = 0", "run.duration_secs");
        assert_error_names("[run]\nduration_secs = [1, 3601]", "run.duration_secs");
        assert_error_names("[run]\nliveness_bound_secs = 0", "run.liveness_bound_secs");
        assert_error_names("[network]\nloss = 1.5", "network.loss");
        assert_error_names("[network]\nloss = 1.0", "network.loss");
        assert_error_names("[network]\nloss = nan", "network.loss");
        assert_error_names("[network]\nduplicate = -0.1", "network.duplicate");
        assert_error_names(
            "[network]\nreorder_delay_ms = [50, 5]",
            "network.reorder_delay_ms",
        );
        assert_error_names("[workload]\nclients = 0", "workload.clients");
        assert_error_names("[workload]\nclients = 257", "workload.clients");
        assert_error_names("[workload]\nusers = 0", "workload.users");
        assert_error_names(
            "[workload]\nrate_per_client = 0",
            "workload.rate_per_client",
        );
        assert_error_names(
            "[workload]\nrate_per_client = inf",
            "workload.rate_per_client",
        );
        assert_error_names(
            "[workload]\nrequest_timeout_ms = 0",
            "workload.request_timeout_ms",
        );
        let zero = "[workload]\nmix = { create = 0, send = 0 }";
        assert_error_names(zero, "workload.mix");
        assert_error_names("[workload]\nmix = {}", "workload.mix");
        assert_error_names(
            "[workload]\nmessage_chars = [5, 1]",
            "workload.message_chars",
        );
        assert_error_names("[faults]\ncrash = -1", "faults.crash");
        assert_error_names("[faults]\nclock_drift = [0.1, 1.0]", "faults.clock_drift");
        assert_error_names("[faults]\ntorn_writes = 1.5", "faults.torn_writes");
        assert_error_names("[faults]\naim_leader = -0.1", "faults.aim_leader");
        assert_error_names("[network]\naim_kinds = [\"votes\"]", "network.aim_kinds");
        assert_error_names("[network]\naim_kinds = []", "network.aim_kinds");
        assert_error_names("[faults]\ndowntime_ms = [0, 10]", "faults.downtime_ms");
        assert_error_names(
            "[faults]\ntorn_writes = 1.0\ncorrupt_tail = 2",
            "faults.corrupt_tail",
        );
    }

    #[test]
    fn ranges_with_min_above_max_are_errors() {
        assert_error_names("[cluster]\ntick_ms = [20, 5]", "cluster.tick_ms");
        assert_error_names("[network]\nloss = [0.2, 0.1]", "network.loss");
        assert_error_names("[faults]\nclock_drift = [2.0, 1.0]", "faults.clock_drift");
        let line = error("[workload]\nclients = [16, 2]");
        assert!(
            line.ends_with("workload.clients: [16, 2]: min must not exceed max"),
            "{line}"
        );
    }

    fn event(body: &str) -> String {
        format!("[[events]]\nat_ms = 100\naction = \"heal\"\n\n[[events]]\n{body}\n")
    }

    #[test]
    fn split_random_needs_a_count_that_leaves_both_sides_a_node() {
        let three = |body: &str| format!("[cluster]\nnodes = [3, 5]\n{}", event(body));
        let ok = parse_ok(&three("at_ms = 1\naction = \"split_random\"\ncount = 4"));
        // Sorted by at_ms: the split (at 1 ms) comes before the heal (at 100 ms).
        assert_eq!(ok.events[0].action, Action::SplitRandom { count: 4 });
        // A seed that draws three nodes drops the split rather than cut off every node.
        let drawn = (0..64).map(|seed| ok.draw(seed)).find(|d| d.nodes == 3);
        assert_eq!(drawn.map(|d| d.events.len()), Some(1));
        for bad in ["count = 0", "count = 5", "count = 9"] {
            let body = format!("at_ms = 1\naction = \"split_random\"\n{bad}");
            assert_error_names(&three(&body), "events[1].count");
        }
        assert_error_names(
            &three("at_ms = 1\naction = \"split_random\""),
            "events[1].count",
        );
        assert_error_names(
            &three("at_ms = 1\naction = \"split_random\"\ncount = 2\nnode = 1"),
            "events[1].node",
        );
        assert_error_names(
            &three("at_ms = 1\naction = \"split\"\nminority = [1]\ncount = 2"),
            "events[1].count",
        );
    }

    #[test]
    fn bad_events_are_errors_naming_the_event_and_key() {
        let beyond =
            "[run]\nduration_secs = [10, 20]\n[[events]]\nat_ms = 20000\naction = \"heal\"";
        assert_error_names(beyond, "events[0].at_ms");
        let within =
            "[run]\nduration_secs = [10, 20]\n[[events]]\nat_ms = 19999\naction = \"heal\"";
        parse_ok(within);
        let nine = format!(
            "[cluster]\nnodes = 3\n{}",
            event("at_ms = 1\naction = \"crash\"\nnode = 9")
        );
        assert_error_names(&nine, "events[1].node");
        assert_error_names(
            &event("at_ms = 1\naction = \"crash\"\nnode = 0"),
            "events[1].node",
        );
        assert_error_names(
            &event("at_ms = 1\naction = \"explode\""),
            "events[1].action",
        );
        assert_error_names(&event("at_ms = 1\naction = \"crash\""), "events[1].node");
        assert_error_names(&event("at_ms = 1\nnode = 1"), "events[1].action");
        assert_error_names(&event("action = \"heal\""), "events[1].at_ms");
        assert_error_names(
            &event("at_ms = \"soon\"\naction = \"heal\""),
            "events[1].at_ms",
        );
        let node_type = "at_ms = 1\naction = \"crash\"\nnode = \"boss\"";
        assert_error_names(&event(node_type), "events[1].node");
        let extra = "at_ms = 1\naction = \"crash\"\nnode = 1\nfactor = 2.0";
        assert_error_names(&event(extra), "events[1].factor");
        assert_error_names(
            &event("at_ms = 1\naction = \"heal\"\nnode = 1"),
            "events[1].node",
        );
        let split = "at_ms = 1\naction = \"split\"\nminority = []";
        assert_error_names(&event(split), "events[1].minority");
        let split_all = "at_ms = 1\naction = \"split\"\nminority = [1, 2, 3]";
        assert_error_names(&event(split_all), "events[1].minority");
        let twice = "[cluster]\nnodes = 5\n".to_string()
            + &event("at_ms = 1\naction = \"split\"\nminority = [1, 1]");
        assert_error_names(&twice, "events[1].minority");
        let self_link = "at_ms = 1\naction = \"one_way\"\nfrom = 1\nto = 1";
        assert_error_names(&event(self_link), "events[1].to");
        assert_error_names(
            &event("at_ms = 1\naction = \"one_way\"\nfrom = 1"),
            "events[1].to",
        );
        let latency = "at_ms = 1\naction = \"latency\"\nms = [5, 1]";
        assert_error_names(&event(latency), "events[1].ms");
        let drift = "at_ms = 1\naction = \"clock_drift\"\nnode = 1\nfactor = 0.05";
        assert_error_names(&event(drift), "events[1].factor");
        let torn = "at_ms = 1\naction = \"power_loss\"\nnode = 1\ntorn = \"yes\"";
        assert_error_names(&event(torn), "events[1].torn");
        let inline =
            "events = [{ at_ms = 1, action = \"heal\" }, { at_ms = 2, action = \"crash\" }]";
        assert_error_names(inline, "events[1].node");
    }

    #[test]
    fn story_is_the_first_comment_line() {
        assert_eq!(
            parse_ok("# the leader crashes\n[run]\n").story,
            "the leader crashes"
        );
        assert_eq!(parse_ok("#tight\n").story, "tight");
        assert_eq!(
            parse_ok("# postmortem: lost write  \r\n").story,
            "postmortem: lost write"
        );
        assert_eq!(parse_ok("[run]\n# not first\n").story, "");
        assert_eq!(parse_ok("\n# second line\n").story, "");
    }

    #[test]
    fn load_reads_the_file_and_reports_a_missing_one_in_one_line() {
        let dir = std::env::temp_dir().join(format!("raftchat-scenario-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("leader-crash.toml");
        std::fs::write(&path, "# the leader crashes\n[cluster]\nnodes = 5\n").expect("write");
        let loaded = Scenario::load(&path).expect("loads");
        assert_eq!(
            (loaded.name.as_str(), loaded.story.as_str()),
            ("leader-crash", "the leader crashes")
        );
        assert_eq!(loaded.path, path);
        let missing = dir.join("missing.toml");
        let line = Scenario::load(&missing)
            .expect_err("missing file")
            .to_string();
        assert!(
            line.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{line}"
        );
        assert!(!line.contains('\n'));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn draw_is_deterministic_per_seed_and_varies_across_seeds() {
        let s = parse_ok(FULL);
        for seed in 0..50 {
            assert_eq!(s.draw(seed), s.draw(seed));
        }
        let draws: Vec<Drawn> = (0..50).map(|seed| s.draw(seed)).collect();
        let distinct = |f: &dyn Fn(&Drawn) -> String| {
            let mut values: Vec<String> = draws.iter().map(f).collect();
            values.sort();
            values.dedup();
            values.len()
        };
        assert!(distinct(&|d| d.tick_ms.to_string()) > 5);
        assert!(distinct(&|d| d.clients.to_string()) > 5);
        assert!(distinct(&|d| format!("{:.6}", d.loss)) > 40);
        assert!(distinct(&|d| format!("{:?}", d.clock_drift)) > 40);
        assert_eq!(distinct(&|d| d.nodes.to_string()), 2);
        for d in &draws {
            assert!((5..=20).contains(&d.tick_ms));
            assert!((1..=3).contains(&d.heartbeat_ticks));
            assert!((20..=40).contains(&d.duration_secs));
            assert!((0.0..=0.1).contains(&d.loss));
            assert!((1.0..=20.0).contains(&d.rate_per_client));
            assert_eq!(d.clock_drift.len(), d.nodes as usize);
            assert!(d.clock_drift.iter().all(|f| (0.8..=1.25).contains(f)));
        }
    }

    #[test]
    fn fixed_params_never_vary() {
        let s = parse_ok(FULL);
        let first = s.draw(0);
        for seed in 1..100 {
            let d = s.draw(seed);
            assert_eq!(d.election_ticks, (12, 24));
            assert_eq!(d.latency_ms, (2, 2));
            assert_eq!(d.duplicate, 0.01);
            assert_eq!(d.users, 20);
            assert_eq!(d.request_timeout_ms, 500);
            assert_eq!(d.power_loss_per_min, 1.0);
            assert_eq!(d.partition_per_min, 0.5);
            assert_eq!(d.torn_writes, 0.5);
            assert_eq!(d.reorder_delay_ms, (10, 30));
            assert_eq!(d.downtime_ms, (100, 2000));
            assert_eq!((d.max_down, d.mix), (first.max_down, first.mix));
            assert!(!d.pre_vote && !d.check_quorum);
        }
        let defaults = parse_ok("");
        let d = defaults.draw(7);
        // By default only the snapshot and retention settings (so that every run snapshots,
        // compacts and drops messages in its own way) and where reads go are drawn.
        let snapshot_and_chat_only = |mut d: Drawn| {
            d.read_mode = ReadMode::Leader;
            d.snapshot_log_entries = 0;
            d.snapshot_log_bytes = 0;
            d.catch_up_entries = 0;
            d.chunk_bytes = 0;
            d.segment_bytes = 0;
            d.inbox_messages_max = 0;
            d.retained_bytes_max = 0;
            d
        };
        assert_eq!(
            snapshot_and_chat_only(d.clone()),
            snapshot_and_chat_only(defaults.draw(8))
        );
        assert_eq!((d.nodes, d.tick_ms, d.clients, d.loss), (3, 10, 4, 0.0));
        assert_eq!(d.clock_drift, vec![1.0; 3]);
        let summary = d.summary(&defaults);
        assert!(summary.starts_with("log_entries="), "{summary}");
        assert!(summary.contains("retained_bytes_max="), "{summary}");
    }

    #[test]
    fn choice_picks_only_listed_values() {
        let s = parse_ok("[cluster]\nnodes = [3, 5, 7]\n");
        let mut seen: Vec<u32> = (0..200).map(|seed| s.draw(seed).nodes).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, [3, 5, 7]);
    }

    #[test]
    fn events_naming_nodes_beyond_the_draw_are_dropped_and_counted() {
        let s = parse_ok(FULL);
        let three = (0..100)
            .map(|seed| s.draw(seed))
            .find(|d| d.nodes == 3)
            .expect("a 3");
        let five = (0..100)
            .map(|seed| s.draw(seed))
            .find(|d| d.nodes == 5)
            .expect("a 5");
        // `restart node 5` needs five nodes; `heal` at 9000 ms is within any duration.
        assert_eq!(five.events.len() + five.events_dropped, s.events.len());
        assert_eq!(three.events_dropped, 1);
        assert!(three.events.iter().all(|e| e.action.fits(3)));
        assert!(five.events.iter().any(|e| e.action
            == Action::Restart {
                node: NodeRef::Id(5)
            }));
        let late = "[run]\nduration_secs = [1, 60]\n[[events]]\nat_ms = 30000\naction = \"heal\"";
        let s = parse_ok(late);
        for seed in 0..20 {
            let d = s.draw(seed);
            assert_eq!(d.events.len() + d.events_dropped, 1);
            assert_eq!(d.events_dropped == 1, d.duration_secs <= 30);
        }
    }

    #[test]
    fn summary_lists_drawn_range_values_only() {
        let s = parse_ok(FULL);
        let d = s.draw(42);
        let summary = d.summary(&s);
        assert!(summary.starts_with(&format!("nodes={} tick_ms={} ", d.nodes, d.tick_ms)));
        for expected in [
            format!("heartbeat_ticks={}", d.heartbeat_ticks),
            format!("duration_secs={}", d.duration_secs),
            format!("clients={}", d.clients),
            format!("loss={:.3}", d.loss),
            format!("reorder={:.3}", d.reorder),
            format!("rate_per_client={:.3}", d.rate_per_client),
            format!("crash_per_min={:.3}", d.crash_per_min),
            format!("pause_per_min={:.3}", d.pause_per_min),
            format!("corrupt_tail={:.3}", d.corrupt_tail),
            "clock_drift=".to_string(),
        ] {
            assert!(
                summary.contains(&expected),
                "{expected:?} missing from {summary:?}"
            );
        }
        for fixed in [
            "duplicate=",
            "users=",
            "power_loss_per_min=",
            "torn_writes=",
            "latency",
        ] {
            assert!(
                !summary.contains(fixed),
                "{fixed:?} is fixed but in {summary:?}"
            );
        }
        assert!(!summary.contains('\n'));
        assert_eq!(summary, s.draw(42).summary(&s));
    }

    #[test]
    fn mix_picks_by_weight() {
        let mix = Mix {
            send: 3,
            fetch: 1,
            ..Mix::zero()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let picks: Vec<OpKind> = (0..4000).map(|_| mix.pick(&mut rng)).collect();
        let sends = picks.iter().filter(|&&op| op == OpKind::Send).count();
        let fetches = picks.iter().filter(|&&op| op == OpKind::Fetch).count();
        assert_eq!(
            sends + fetches,
            picks.len(),
            "zero weights are never picked"
        );
        assert!(
            (2800..3200).contains(&sends),
            "sends {sends} of 4000 at weight 3/4"
        );
        let names: Vec<&str> = OpKind::ALL.iter().map(OpKind::name).collect();
        assert_eq!(
            names,
            ["create", "check", "list", "delete", "send", "fetch"]
        );
    }

    #[test]
    fn garbage_never_panics_and_errors_are_one_line() {
        let mut rng = ChaCha8Rng::seed_from_u64(0x6A5B);
        let alphabet = b"[]{}=\"'#.,\n\t -_0123456789abcdefxyz";
        for case in 0..600 {
            let text = match case % 3 {
                0 => {
                    let bytes: Vec<u8> = (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                1 => (0..rng.gen_range(0..200))
                    .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
                    .collect(),
                _ => {
                    // Mutations of a valid file reach deep into the validation.
                    let mut bytes = FULL.as_bytes().to_vec();
                    for _ in 0..rng.gen_range(1..4) {
                        let at = rng.gen_range(0..bytes.len());
                        bytes[at] = alphabet[rng.gen_range(0..alphabet.len())];
                    }
                    bytes.truncate(rng.gen_range(bytes.len() / 2..=bytes.len()));
                    String::from_utf8_lossy(&bytes).into_owned()
                }
            };
            match parse(&text) {
                Ok(scenario) => {
                    let drawn = scenario.draw(case);
                    assert!(!drawn.summary(&scenario).contains('\n'));
                    // Whatever loads, pinned, loads again and draws the same.
                    let pinned_text = drawn.pinned_toml("pinned");
                    let pinned = Scenario::parse(Path::new("p.toml"), &pinned_text)
                        .unwrap_or_else(|e| panic!("{e}\n{pinned_text}"));
                    let expected = Drawn {
                        events_dropped: 0,
                        ..drawn
                    };
                    assert_eq!(pinned.draw(case + 1), expected);
                }
                Err(e) => {
                    let line = e.to_string();
                    assert!(!line.contains('\n'), "not one line: {line:?}");
                    assert!(line.starts_with("scenarios/x.toml: "), "{line:?}");
                }
            }
        }
    }

    #[test]
    fn garbage_schedules_never_panic_and_valid_ones_write_back() {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5C4E);
        let alphabet = b"[]{}=\"'#.,\n\t -_0123456789abcdefxyzeE+";
        let valid: String = [
            "[[events]]\nat_ms = 1.5\naction = \"crash\"\nnode = 1\n",
            "[[events]]\nat_ms = 20\naction = \"split\"\nminority = [1, 3]\n",
            "[[events]]\nat_ms = 30.000001\naction = \"power_loss\"\nnode = 2\ntorn = true\n\
             corrupt = false\n",
            "[[events]]\nat_ms = 40\naction = \"latency\"\nms = [1, 9]\n",
            "[[events]]\nat_ms = 50\naction = \"clock_drift\"\nnode = 3\nfactor = 1.25\n",
            "[[events]]\nat_ms = 60\naction = \"split_random\"\ncount = 1\n",
        ]
        .concat();
        for case in 0..600 {
            let mut bytes = valid.as_bytes().to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..bytes.len());
                bytes[at] = alphabet[rng.gen_range(0..alphabet.len())];
            }
            bytes.truncate(rng.gen_range(bytes.len() / 2..=bytes.len()));
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let path = Path::new("s.toml");
            match parse_schedule(path, &text, 3, 1 + case % 3) {
                Ok(events) => {
                    let written: String = events.iter().map(Event::to_toml).collect();
                    let again = parse_schedule(path, &written, 3, 1 + case % 3);
                    assert_eq!(again.as_ref(), Ok(&events), "{written}");
                }
                Err(e) => {
                    let line = e.to_string();
                    assert!(!line.contains('\n'), "not one line: {line:?}");
                    assert!(line.starts_with("s.toml: "), "{line:?}");
                }
            }
        }
    }

    /// Every scenario of the library, loaded.
    fn library() -> Vec<Scenario> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("the scenario library")
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|path| Scenario::load(path).expect("a library scenario loads"))
            .collect()
    }

    #[test]
    fn a_pinned_draw_draws_itself_whatever_the_seed() {
        for scenario in library() {
            for seed in 0..8 {
                let drawn = scenario.draw(seed);
                let text = drawn.pinned_toml("a story\n\nand a note");
                let pinned = Scenario::parse(Path::new("pinned.toml"), &text)
                    .unwrap_or_else(|e| panic!("{}: {e}\n{text}", scenario.name));
                assert_eq!(pinned.story, "a story");
                for other in [seed, seed + 1, u64::MAX] {
                    let again = pinned.draw(other);
                    let expected = Drawn {
                        events_dropped: 0,
                        ..drawn.clone()
                    };
                    assert_eq!(again, expected, "{} seed {seed}", scenario.name);
                }
            }
        }
    }

    #[test]
    fn every_action_writes_an_event_that_parses_back() {
        let actions = [
            Action::Crash {
                node: NodeRef::Id(1),
            },
            Action::Restart {
                node: NodeRef::Leader,
            },
            Action::PowerLoss {
                node: NodeRef::Follower,
                torn: true,
                corrupt: false,
            },
            Action::Pause {
                node: NodeRef::Id(2),
            },
            Action::Resume {
                node: NodeRef::Id(2),
            },
            Action::Isolate {
                node: NodeRef::Id(3),
            },
            Action::Split {
                minority: vec![NodeRef::Id(1), NodeRef::Id(3)],
            },
            Action::SplitRandom { count: 2 },
            Action::OneWay {
                from: NodeRef::Id(1),
                to: NodeRef::Id(2),
            },
            Action::Bridge {
                node: NodeRef::Id(2),
            },
            Action::Heal,
            Action::Latency { ms: [3, 9] },
            Action::ClockDrift {
                node: NodeRef::Id(3),
                factor: 1.0625,
            },
            Action::CorruptTail {
                node: NodeRef::Id(1),
            },
            Action::RestartAll,
            Action::CrashAll,
            Action::PowerLossAll { torn: true },
        ];
        let events: Vec<Event> = actions
            .into_iter()
            .enumerate()
            .map(|(k, action)| Event {
                at: Duration::from_nanos(1_000_000 * k as u64 + 123_456 * (k as u64 % 3)),
                action,
            })
            .collect();
        let text: String = events.iter().map(Event::to_toml).collect();
        let parsed = parse_schedule(Path::new("s.toml"), &text, 3, 60).expect("parses back");
        assert_eq!(parsed, events);
    }

    #[test]
    fn a_schedule_must_fit_the_run() {
        let error = |text: &str| {
            parse_schedule(Path::new("s.toml"), text, 3, 10)
                .expect_err("an error")
                .to_string()
        };
        let beyond = "[[events]]\nat_ms = 1\naction = \"crash\"\nnode = 4\n";
        assert!(
            error(beyond).contains("events[0].node"),
            "{}",
            error(beyond)
        );
        let late = "[[events]]\nat_ms = 10000.5\naction = \"heal\"\n";
        assert!(error(late).contains("events[0].at_ms"), "{}", error(late));
        let negative = "[[events]]\nat_ms = -1\naction = \"heal\"\n";
        assert!(error(negative).contains("events[0].at_ms"));
        assert!(error("[cluster]\nnodes = 3\n").starts_with("s.toml"));
        let fine = "[[events]]\nat_ms = 2.5\naction = \"heal\"\n";
        let events = parse_schedule(Path::new("s.toml"), fine, 3, 10).expect("valid");
        assert_eq!(events[0].at, Duration::from_micros(2500));
    }

    #[test]
    fn node_clock_drift_names_each_node_once() {
        let ok = "[cluster]\nnodes = 3\n[faults]\nnode_clock_drift = [1.0, 0.5, 2.0]\n";
        let s = parse(ok).expect("valid");
        assert_eq!(s.draw(0).clock_drift, vec![1.0, 0.5, 2.0]);
        assert_error_names(
            "[cluster]\nnodes = 3\n[faults]\nnode_clock_drift = [1.0]",
            "faults.node_clock_drift",
        );
        assert_error_names(
            "[cluster]\nnodes = [3, 5]\n[faults]\nnode_clock_drift = [1.0, 1.0, 1.0]",
            "faults.node_clock_drift",
        );
        assert_error_names(
            "[cluster]\nnodes = 1\n[faults]\nnode_clock_drift = [0.05]",
            "faults.node_clock_drift",
        );
    }
}
