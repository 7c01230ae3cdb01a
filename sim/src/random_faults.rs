//! The fault phase's timeline: the scenario's timed events, plus random faults drawn as a
//! Poisson process per kind at the scenario's rates, each repaired after a random downtime.

use crate::nemesis::{Action, Nemesis};
use crate::scenario::{self, Drawn, Event, MaxDown, NodeRef};
use crate::world::World;
use raftchat::types::NodeId;
use rand::Rng;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The kinds of random fault.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Crash,
    PowerLoss,
    Partition,
    Pause,
    /// Add a spare node or remove a member.
    Membership,
    /// Hand leadership to another voter.
    Transfer,
}

/// The node a follow-up fault aims at.
#[derive(Clone, Copy, Debug)]
enum Aim {
    /// A transfer's target: the node asked for, or whichever the leader picked.
    Transfer(Option<NodeId>),
    /// A node just added.
    Node(NodeId),
}

/// The timeline of one fault phase.
pub struct RandomFaults {
    /// Per kind, expected faults per simulated millisecond.
    rates: Vec<(Kind, f64)>,
    downtime_ms: (u64, u64),
    torn_writes: f64,
    corrupt_tail: f64,
    /// Share of faults aimed at the current leader.
    aim_leader: f64,
    /// Share of faults aimed at a transfer's target while one is under way; also the chance
    /// that a random transfer is followed at once by a fault on its target.
    aim_transfer_target: f64,
    /// Share of faults aimed at a learner while there is one; also the chance that a random
    /// addition is followed at once by a fault on the new learner as it catches up.
    aim_learner: f64,
    /// Most nodes random faults may impair at once.
    impaired_max: usize,
    events: Vec<scenario::Event>,
    /// Voters of the bootstrap configuration: random removals never go below this many.
    voters_min: usize,
}

impl RandomFaults {
    /// The timeline a draw describes.
    pub fn new(drawn: &Drawn) -> RandomFaults {
        let per_ms = |per_min: f64| per_min / 60_000.0;
        let rates = vec![
            (Kind::Crash, per_ms(drawn.crash_per_min)),
            (Kind::PowerLoss, per_ms(drawn.power_loss_per_min)),
            (Kind::Partition, per_ms(drawn.partition_per_min)),
            (Kind::Pause, per_ms(drawn.pause_per_min)),
            (Kind::Membership, per_ms(drawn.membership_per_min)),
            (Kind::Transfer, per_ms(drawn.transfer_per_min)),
        ];
        let nodes = drawn.nodes as usize;
        let impaired_max = match drawn.max_down {
            MaxDown::Minority => (nodes - 1) / 2,
            MaxDown::Any => nodes,
        };
        RandomFaults {
            rates: rates.into_iter().filter(|(_, rate)| *rate > 0.0).collect(),
            downtime_ms: drawn.downtime_ms,
            torn_writes: drawn.torn_writes,
            corrupt_tail: drawn.corrupt_tail,
            aim_leader: drawn.aim_leader,
            aim_transfer_target: drawn.aim_transfer_target,
            aim_learner: drawn.aim_learner,
            impaired_max,
            events: drawn.events.clone(),
            voters_min: nodes,
        }
    }

    fn total_rate(&self) -> f64 {
        self.rates.iter().map(|(_, r)| r).sum()
    }

    fn next_random(&self, nemesis: &mut Nemesis, after: Duration) -> Option<Duration> {
        let total = self.total_rate();
        if total <= 0.0 {
            return None;
        }
        let wait_ms = -(1.0 - nemesis.rng().gen::<f64>()).ln() / total;
        Some(after + Duration::from_micros((wait_ms * 1000.0) as u64))
    }

    /// Runs the timeline until `end` (simulated time since the start) or a violation; returns
    /// what was done, as explicit events (the run's fault schedule).
    pub async fn run(self, nemesis: &mut Nemesis, world: &World, end: Duration) -> Vec<Event> {
        let mut schedule = Vec::new();
        let mut apply = |nemesis: &mut Nemesis, at: Duration, action: &Action| {
            nemesis.apply(action);
            schedule.push(Event {
                at,
                action: action.to_event_action(),
            });
        };
        let mut repairs: BTreeMap<(Duration, u64), Action> = BTreeMap::new();
        let mut repair_count = 0u64;
        // Faults aimed at the node an operator's request just named, due shortly after it.
        let mut follow_ups: BTreeMap<(Duration, u64), Aim> = BTreeMap::new();
        let mut timed = self.events.iter().peekable();
        let mut next_random = self.next_random(nemesis, world.now());
        loop {
            let next_timed = timed.peek().map(|e| e.at);
            let next_repair = repairs.keys().next().map(|(at, _)| *at);
            let next_follow_up = follow_ups.keys().next().map(|(at, _)| *at);
            let due = [
                next_timed,
                next_repair,
                next_follow_up,
                next_random,
                Some(end),
            ]
            .into_iter()
            .flatten()
            .min();
            let due = due.expect("end is always there");
            if world.violated() {
                return schedule;
            }
            if due >= end {
                tokio::time::sleep(end.saturating_sub(world.now())).await;
                return schedule;
            }
            tokio::time::sleep(due.saturating_sub(world.now())).await;
            if next_repair == Some(due) {
                let (_, action) = repairs.pop_first().expect("a repair is due");
                apply(nemesis, due, &action);
            } else if next_follow_up == Some(due) {
                let (_, aim) = follow_ups.pop_first().expect("a follow-up is due");
                if let Some((action, repair)) = self.draw_aimed(nemesis, world, aim) {
                    apply(nemesis, due, &action);
                    let (min, max) = self.downtime_ms;
                    let downtime = Duration::from_millis(nemesis.rng().gen_range(min..=max));
                    repair_count += 1;
                    repairs.insert((due + downtime, repair_count), repair);
                }
            } else if next_timed == Some(due) {
                let event = timed.next().expect("an event is due");
                match resolve(&event.action, nemesis, world) {
                    Some(action) => apply(nemesis, due, &action),
                    None => world.trace(
                        None,
                        "nemesis_skipped",
                        || json!({ "event": event.action.name() }),
                    ),
                }
            } else {
                match self.draw_fault(nemesis, world) {
                    Some((action, Some(repair))) => {
                        apply(nemesis, due, &action);
                        let (min, max) = self.downtime_ms;
                        let downtime = Duration::from_millis(nemesis.rng().gen_range(min..=max));
                        repair_count += 1;
                        repairs.insert((due + downtime, repair_count), repair);
                    }
                    Some((action, None)) => {
                        apply(nemesis, due, &action);
                        if let Some(aim) = self.follow_up(nemesis, &action) {
                            // Soon enough to land while the target catches up.
                            let delay = Duration::from_millis(nemesis.rng().gen_range(0..=50));
                            repair_count += 1;
                            follow_ups.insert((due + delay, repair_count), aim);
                        }
                    }
                    None => {}
                }
                next_random = self.next_random(nemesis, due);
            }
        }
    }

    /// Draws one random fault and the action that repairs it (none for an operator's
    /// request), if the fault budget allows one.
    fn draw_fault(&self, nemesis: &mut Nemesis, world: &World) -> Option<(Action, Option<Action>)> {
        let kind = pick_kind(nemesis, &self.rates);
        match kind {
            Kind::Membership => return self.draw_membership(nemesis, world).map(|a| (a, None)),
            Kind::Transfer => return Some((self.draw_transfer(nemesis, world), None)),
            _ => {}
        }
        let impaired = nemesis.impaired();
        if impaired.len() >= self.impaired_max {
            return None;
        }
        let healthy: Vec<NodeId> = nemesis
            .node_ids()
            .into_iter()
            .filter(|n| !impaired.contains(n))
            .collect();
        let mut target = healthy[nemesis.rng().gen_range(0..healthy.len())];
        // Drawn only when aiming is on, so seeds of scenarios without it draw as they did.
        let aimed = self.aim_leader > 0.0 && nemesis.rng().gen_bool(self.aim_leader);
        let leader = aimed
            .then(|| world.with(|s| s.checker.current_leader()))
            .flatten()
            .filter(|l| healthy.contains(l));
        if let Some(leader) = leader {
            target = leader;
            if let Kind::Partition = kind {
                if !nemesis.partitioned() {
                    return Some((Action::Isolate(leader), Some(Action::Heal)));
                }
            }
        } else if let Some(node) = self.aim_elsewhere(nemesis, world, &healthy) {
            target = node;
        }
        self.impair(nemesis, world, kind, target, &healthy)
            .map(|(fault, repair)| (fault, Some(repair)))
    }

    /// A transfer's target or a learner, when a draw aims there (each drawn only when its share
    /// is on, so seeds of scenarios without it draw as they did).
    fn aim_elsewhere(
        &self,
        nemesis: &mut Nemesis,
        world: &World,
        healthy: &[NodeId],
    ) -> Option<NodeId> {
        if self.aim_transfer_target > 0.0 && nemesis.rng().gen_bool(self.aim_transfer_target) {
            let target = world.with(|s| s.checker.transfer_target());
            if let Some(target) = target.filter(|t| healthy.contains(t)) {
                return Some(target);
            }
        }
        if self.aim_learner > 0.0 && nemesis.rng().gen_bool(self.aim_learner) {
            let (_, learners) = world.with(|s| s.checker.leader_membership());
            let learners: Vec<NodeId> = learners
                .into_iter()
                .filter(|l| healthy.contains(l))
                .collect();
            if !learners.is_empty() {
                return Some(learners[nemesis.rng().gen_range(0..learners.len())]);
            }
        }
        None
    }

    /// Whether an operator's request just made is followed by a fault on the node it names:
    /// a transfer's target, or a node added as a learner.
    fn follow_up(&self, nemesis: &mut Nemesis, action: &Action) -> Option<Aim> {
        let (share, aim) = match *action {
            Action::TransferLeader(target) => (self.aim_transfer_target, Aim::Transfer(target)),
            Action::AddMember(node, _) => (self.aim_learner, Aim::Node(node)),
            _ => return None,
        };
        (share > 0.0 && nemesis.rng().gen_bool(share)).then_some(aim)
    }

    /// A fault on the node a follow-up aims at, of a kind the scenario injects at random, if
    /// that node is up and the fault budget allows.
    fn draw_aimed(
        &self,
        nemesis: &mut Nemesis,
        world: &World,
        aim: Aim,
    ) -> Option<(Action, Action)> {
        let target = match aim {
            Aim::Node(node) => node,
            Aim::Transfer(target) => {
                target.or_else(|| world.with(|s| s.checker.transfer_target()))?
            }
        };
        let impaired = nemesis.impaired();
        if impaired.len() >= self.impaired_max || impaired.contains(&target) {
            return None;
        }
        let kinds: Vec<(Kind, f64)> = self
            .rates
            .iter()
            .copied()
            .filter(|(kind, _)| !matches!(kind, Kind::Membership | Kind::Transfer))
            .collect();
        if kinds.is_empty() {
            return None;
        }
        let kind = pick_kind(nemesis, &kinds);
        let healthy: Vec<NodeId> = nemesis
            .node_ids()
            .into_iter()
            .filter(|n| !impaired.contains(n))
            .collect();
        self.impair(nemesis, world, kind, target, &healthy)
    }

    /// A fault of `kind` on `target`, and the action that repairs it.
    fn impair(
        &self,
        nemesis: &mut Nemesis,
        world: &World,
        kind: Kind,
        target: NodeId,
        healthy: &[NodeId],
    ) -> Option<(Action, Action)> {
        Some(match kind {
            Kind::Crash => (Action::Crash(target), Action::Restart(target)),
            Kind::PowerLoss => {
                let torn = nemesis.rng().gen_bool(self.torn_writes);
                let corrupt = torn && nemesis.rng().gen_bool(self.corrupt_tail);
                (
                    Action::PowerLoss {
                        node: target,
                        torn,
                        corrupt,
                    },
                    Action::Restart(target),
                )
            }
            Kind::Pause => (Action::Pause(target), Action::Resume(target)),
            Kind::Partition if nemesis.partitioned() => return None,
            Kind::Partition => (
                self.draw_partition(nemesis, world, healthy, target),
                Action::Heal,
            ),
            Kind::Membership | Kind::Transfer => unreachable!("not a fault on a node"),
        })
    }

    /// A random membership change, as the current leader's configuration allows: add a node
    /// outside it (as a learner, promoted once caught up), or remove a learner, or a voter
    /// while more than the bootstrap's count remain.
    fn draw_membership(&self, nemesis: &mut Nemesis, world: &World) -> Option<Action> {
        let (voters, learners) = world.with(|s| s.checker.leader_membership());
        let outside: Vec<NodeId> = nemesis
            .node_ids()
            .into_iter()
            .filter(|n| !voters.contains(n) && !learners.contains(n))
            .collect();
        let mut removable = learners;
        if voters.len() > self.voters_min {
            removable.extend(voters);
        }
        let add = !outside.is_empty() && (removable.is_empty() || nemesis.rng().gen_bool(0.5));
        if add {
            let k = nemesis.rng().gen_range(0..outside.len());
            let learner = nemesis.rng().gen_bool(0.2);
            return Some(Action::AddMember(outside[k], learner));
        }
        if removable.is_empty() {
            return None;
        }
        let k = nemesis.rng().gen_range(0..removable.len());
        Some(Action::RemoveMember(removable[k]))
    }

    /// A random leadership transfer: to a random voter, or to the most up-to-date one.
    fn draw_transfer(&self, nemesis: &mut Nemesis, world: &World) -> Action {
        let (voters, _) = world.with(|s| s.checker.leader_membership());
        if voters.is_empty() || nemesis.rng().gen_bool(0.5) {
            return Action::TransferLeader(None);
        }
        let k = nemesis.rng().gen_range(0..voters.len());
        Action::TransferLeader(Some(voters[k]))
    }

    fn draw_partition(
        &self,
        nemesis: &mut Nemesis,
        world: &World,
        healthy: &[NodeId],
        target: NodeId,
    ) -> Action {
        let budget = self.impaired_max - nemesis.impaired().len();
        let leader = world
            .with(|s| s.checker.current_leader())
            .filter(|l| healthy.contains(l));
        match nemesis.rng().gen_range(0..5) {
            0 => Action::Isolate(leader.unwrap_or(target)),
            1 if budget >= 2 && healthy.len() >= 3 => {
                let mut side = healthy.to_vec();
                let size = nemesis.rng().gen_range(1..=budget.min(side.len() - 1));
                while side.len() > size {
                    let k = nemesis.rng().gen_range(0..side.len());
                    side.remove(k);
                }
                Action::Split(side)
            }
            2 => {
                let others: Vec<NodeId> = nemesis
                    .node_ids()
                    .into_iter()
                    .filter(|&n| n != target)
                    .collect();
                let to = others[nemesis.rng().gen_range(0..others.len())];
                Action::OneWay(target, to)
            }
            3 if nemesis.node_ids().len() >= 3 && budget >= (nemesis.node_ids().len() - 1) / 2 => {
                Action::Bridge(target)
            }
            _ => Action::Isolate(target),
        }
    }
}

/// A kind drawn from `rates` (not empty, every rate positive), each in proportion to its rate.
fn pick_kind(nemesis: &mut Nemesis, rates: &[(Kind, f64)]) -> Kind {
    let total: f64 = rates.iter().map(|(_, rate)| rate).sum();
    let mut pick = nemesis.rng().gen::<f64>() * total;
    let kind = rates.iter().find(|(_, rate)| {
        pick -= rate;
        pick <= 0.0
    });
    kind.map_or(rates[0].0, |(k, _)| *k)
}

/// Resolves a scenario event's node references at the moment it fires.
fn resolve(action: &scenario::Action, nemesis: &mut Nemesis, world: &World) -> Option<Action> {
    use scenario::Action as A;
    let mut node = |r: &NodeRef| resolve_node(*r, nemesis, world);
    Some(match action {
        A::Crash { node: n } => Action::Crash(node(n)?),
        A::Restart { node: n } => Action::Restart(node(n)?),
        A::PowerLoss {
            node: n,
            torn,
            corrupt,
        } => Action::PowerLoss {
            node: node(n)?,
            torn: *torn,
            corrupt: *corrupt,
        },
        A::Pause { node: n } => Action::Pause(node(n)?),
        A::Resume { node: n } => Action::Resume(node(n)?),
        A::Isolate { node: n } => Action::Isolate(node(n)?),
        A::Split { minority } => {
            Action::Split(minority.iter().map(&mut node).collect::<Option<_>>()?)
        }
        A::SplitRandom { count } => Action::Split(pick_nodes(nemesis, *count as usize)),
        A::OneWay { from, to } => Action::OneWay(node(from)?, node(to)?),
        A::Bridge { node: n } => Action::Bridge(node(n)?),
        A::Heal => Action::Heal,
        A::Latency { ms } => {
            Action::Latency(Duration::from_millis(ms[0]), Duration::from_millis(ms[1]))
        }
        A::ClockDrift { node: n, factor } => Action::ClockDrift(node(n)?, *factor),
        A::CorruptTail { node: n } => Action::CorruptTail(node(n)?),
        A::RestartAll => Action::RestartAll,
        A::CrashAll => Action::CrashAll,
        A::PowerLossAll { torn } => Action::PowerLossAll { torn: *torn },
        A::AddMember { node: n, learner } => Action::AddMember(node(n)?, *learner),
        A::RemoveMember { node: n } => Action::RemoveMember(node(n)?),
        A::HostilePeer { node: n } => Action::HostilePeer(node(n)?),
        A::TransferLeader { node: n } => Action::TransferLeader(match n {
            Some(n) => Some(node(n)?),
            None => None,
        }),
    })
}

/// `count` distinct nodes picked uniformly from the whole cluster (the loader keeps `count`
/// below the cluster's size).
fn pick_nodes(nemesis: &mut Nemesis, count: usize) -> Vec<NodeId> {
    let mut nodes = nemesis.node_ids();
    assert!(count < nodes.len(), "split_random would cut off every node");
    let mut picked = Vec::with_capacity(count);
    for _ in 0..count {
        let k = nemesis.rng().gen_range(0..nodes.len());
        picked.push(nodes.remove(k));
    }
    picked.sort();
    picked
}

fn resolve_node(node: NodeRef, nemesis: &mut Nemesis, world: &World) -> Option<NodeId> {
    let leader = world
        .with(|s| s.checker.current_leader())
        .filter(|&l| nemesis.is_up(l));
    match node {
        NodeRef::Id(id) => Some(NodeId(u64::from(id))),
        NodeRef::Leader => leader,
        NodeRef::TransferTarget => world
            .with(|s| s.checker.transfer_target())
            .filter(|&t| nemesis.is_up(t)),
        NodeRef::Learner => {
            let (_, learners) = world.with(|s| s.checker.leader_membership());
            let learners: Vec<NodeId> =
                learners.into_iter().filter(|&n| nemesis.is_up(n)).collect();
            (!learners.is_empty()).then(|| learners[nemesis.rng().gen_range(0..learners.len())])
        }
        NodeRef::Follower => {
            let followers: Vec<NodeId> = nemesis
                .node_ids()
                .into_iter()
                .filter(|&n| Some(n) != leader && nemesis.is_up(n))
                .collect();
            (!followers.is_empty()).then(|| followers[nemesis.rng().gen_range(0..followers.len())])
        }
    }
}
