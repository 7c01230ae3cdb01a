//! The shrinker: from a failing seed to the smallest schedule and the simplest parameters that
//! still fail the same check.
//!
//! A failing run's fault schedule (what the nemesis did, nodes resolved) replaces its random
//! faults, and the search goes in three passes, each keeping a candidate only if it fails the
//! same check as the original:
//!
//! 1. Cut the schedule at the violation: events after it cannot have caused it, and a shorter
//!    fault phase makes every later candidate cheaper.
//! 2. Delta debugging (Zeller's ddmin) over faults, each with the repair that ends it (a crash
//!    and its restart, a partition and its heal), so no candidate leaves a node down by
//!    accident; then ddmin again over single events, which may drop a repair (the fault then
//!    lasts until the fault phase ends).
//! 3. Simplify the drawn parameters one at a time: no message faults, fewer clients, a
//!    slower workload, fewer nodes (without the events of the nodes left out), no clock
//!    drift, a shorter run; then ddmin again, over faults and then single events, since
//!    simpler parameters can make more of the schedule unnecessary.
//!
//! Removing a fault changes everything after it (madsim has one random stream), so a
//! candidate is run with a few seeds and counts as failing if any of them fails; message
//! faults are keyed by link and sequence number, and disk faults by node and count, so they
//! do not shift with it. The candidates of one ddmin step run in parallel.
//!
//! The search is generic over how a candidate runs ([`Runner`]), so it is tested here on
//! synthetic failures without a simulator.

use crate::scenario::{Action, Drawn, Event, NodeRef};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Runs one candidate with one seed: the check it failed, if any.
pub trait Runner: Sync {
    /// Runs `drawn` with `seed`.
    fn failing_check(&self, drawn: &Drawn, seed: u64) -> Option<&'static str>;
}

/// How a shrink goes.
#[derive(Clone, Copy, Debug)]
pub struct ShrinkOptions {
    /// Seeds tried per candidate (the last failing seed first, then the following ones).
    pub seeds_per_candidate: u64,
    /// Candidates run at once.
    pub jobs: usize,
}

/// The smallest failing candidate found.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// Its parameters and schedule (`events`).
    pub drawn: Drawn,
    /// A seed with which it fails.
    pub seed: u64,
    /// Candidates run, and runs (candidate × seed) in all.
    pub candidates: usize,
    /// Runs in all.
    pub runs: usize,
    /// What each pass did, a line each.
    pub log: Vec<String>,
}

/// Whether an action repairs a fault rather than being one.
pub fn is_repair(action: &Action) -> bool {
    matches!(
        action,
        Action::Restart { .. } | Action::Resume { .. } | Action::Heal | Action::RestartAll
    )
}

/// The fault events of a schedule (its repairs not counted).
pub fn fault_count(events: &[Event]) -> usize {
    events.iter().filter(|e| !is_repair(&e.action)).count()
}

/// Groups a schedule's events into faults with their repairs: indexes into `events`, in order.
/// A repair that ends several faults at once (a heal of two partitions, a restart of every
/// node) belongs to each of them; an event that repairs nothing open is a group of its own.
pub fn fault_groups(events: &[Event]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    // Open faults: a node down or paused, and the partitions in force, by group.
    let mut down: BTreeMap<NodeRef, usize> = BTreeMap::new();
    let mut all_down: Vec<usize> = Vec::new();
    let mut paused: BTreeMap<NodeRef, usize> = BTreeMap::new();
    let mut partitions: Vec<usize> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let open = |groups: &mut Vec<Vec<usize>>| {
            groups.push(vec![index]);
            groups.len() - 1
        };
        match &event.action {
            Action::Crash { node }
            | Action::PowerLoss { node, .. }
            | Action::CorruptTail { node } => {
                let group = open(&mut groups);
                down.insert(*node, group);
            }
            Action::CrashAll | Action::PowerLossAll { .. } => {
                let group = open(&mut groups);
                all_down.push(group);
            }
            Action::Pause { node } => {
                let group = open(&mut groups);
                paused.insert(*node, group);
            }
            Action::Isolate { .. }
            | Action::Split { .. }
            | Action::SplitRandom { .. }
            | Action::OneWay { .. }
            | Action::Bridge { .. } => {
                let group = open(&mut groups);
                partitions.push(group);
            }
            Action::Restart { node } => match down.remove(node) {
                Some(group) => groups[group].push(index),
                None => match all_down.last() {
                    Some(&group) => groups[group].push(index),
                    None => groups.push(vec![index]),
                },
            },
            Action::Resume { node } => match paused.remove(node) {
                Some(group) => groups[group].push(index),
                None => groups.push(vec![index]),
            },
            Action::Heal => close_all(&mut groups, &mut partitions, index),
            Action::RestartAll => {
                let mut ended: Vec<usize> = std::mem::take(&mut down).into_values().collect();
                ended.append(&mut all_down);
                close_all(&mut groups, &mut ended, index);
            }
            Action::Latency { .. }
            | Action::ClockDrift { .. }
            | Action::AddMember { .. }
            | Action::RemoveMember { .. }
            | Action::TransferLeader { .. }
            | Action::HostilePeer { .. } => {
                open(&mut groups);
            }
        }
    }
    groups
}

/// Adds the repair at `index` to every group in `open`, emptying it; a group of its own if
/// there is none.
fn close_all(groups: &mut Vec<Vec<usize>>, open: &mut Vec<usize>, index: usize) {
    if open.is_empty() {
        groups.push(vec![index]);
    }
    for group in open.drain(..) {
        groups[group].push(index);
    }
}

/// The events of the chosen groups, in schedule order, each once.
fn events_of(events: &[Event], groups: &[Vec<usize>]) -> Vec<Event> {
    let mut indexes: Vec<usize> = groups.iter().flatten().copied().collect();
    indexes.sort_unstable();
    indexes.dedup();
    indexes.into_iter().map(|i| events[i].clone()).collect()
}

/// Shrinks `original` (failing `check` with `seed`) as the module docs describe.
pub fn shrink(
    runner: &dyn Runner,
    original: &Drawn,
    seed: u64,
    check: &'static str,
    violation_at: Duration,
    options: ShrinkOptions,
) -> Shrunk {
    let mut search = Search {
        runner,
        check,
        options,
        best: original.clone(),
        seed,
        candidates: 0,
        runs: 0,
        log: Vec::new(),
    };
    search.cut_at(violation_at);
    search.ddmin_groups();
    search.ddmin_events();
    search.simplify();
    // Simpler parameters can make more of the schedule unnecessary: whole faults first (a
    // crash and its restart go together, which single events cannot), then single events.
    // The run is short by now and few faults are left, each of which may matter only on some
    // seeds: these passes try three times the seeds per candidate.
    search.options.seeds_per_candidate *= 3;
    search.ddmin_groups();
    search.ddmin_events();
    Shrunk {
        drawn: search.best,
        seed: search.seed,
        candidates: search.candidates,
        runs: search.runs,
        log: search.log,
    }
}

struct Search<'a> {
    runner: &'a dyn Runner,
    check: &'static str,
    options: ShrinkOptions,
    /// The smallest failing candidate so far, and a seed it fails with.
    best: Drawn,
    seed: u64,
    candidates: usize,
    runs: usize,
    log: Vec<String>,
}

impl Search<'_> {
    /// Runs `candidates` in parallel; the first (in order) that fails the check, with its seed.
    /// A candidate later than one already found failing is skipped.
    fn first_failing(&mut self, candidates: &[Drawn]) -> Option<(usize, u64)> {
        let next = AtomicUsize::new(0);
        let found = AtomicUsize::new(usize::MAX);
        let seeds: Mutex<BTreeMap<usize, u64>> = Mutex::new(BTreeMap::new());
        let runs = AtomicUsize::new(0);
        let tried = AtomicUsize::new(0);
        let (runner, check, first_seed) = (self.runner, self.check, self.seed);
        let per_candidate = self.options.seeds_per_candidate.max(1);
        std::thread::scope(|scope| {
            for _ in 0..self.options.jobs.clamp(1, candidates.len().max(1)) {
                scope.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= candidates.len() || k > found.load(Ordering::Relaxed) {
                        return;
                    }
                    tried.fetch_add(1, Ordering::Relaxed);
                    for attempt in 0..per_candidate {
                        if k > found.load(Ordering::Relaxed) {
                            break;
                        }
                        let seed = first_seed.wrapping_add(attempt);
                        runs.fetch_add(1, Ordering::Relaxed);
                        if runner.failing_check(&candidates[k], seed) == Some(check) {
                            seeds.lock().expect("lock").insert(k, seed);
                            found.fetch_min(k, Ordering::Relaxed);
                            break;
                        }
                    }
                });
            }
        });
        self.candidates += tried.into_inner();
        self.runs += runs.into_inner();
        let seeds = seeds.into_inner().expect("lock");
        seeds.into_iter().next()
    }

    /// Tries one candidate; keeps it if it fails. Returns whether it did.
    fn try_one(&mut self, candidate: Drawn, what: &str) -> bool {
        match self.first_failing(std::slice::from_ref(&candidate)) {
            Some((_, seed)) => {
                self.log.push(format!("{what}: still fails"));
                self.best = candidate;
                self.seed = seed;
                true
            }
            None => false,
        }
    }

    fn with_events(&self, events: Vec<Event>) -> Drawn {
        Drawn {
            events,
            ..self.best.clone()
        }
    }

    /// Pass 1: drop what came after the violation and end the fault phase soon after it.
    fn cut_at(&mut self, violation_at: Duration) {
        let end = Duration::from_secs(self.best.duration_secs);
        if violation_at >= end {
            return;
        }
        let events = self
            .best
            .events
            .iter()
            .filter(|e| e.at <= violation_at)
            .cloned()
            .collect();
        let candidate = Drawn {
            duration_secs: violation_at.as_secs() + 2,
            ..self.with_events(events)
        };
        if candidate.duration_secs < self.best.duration_secs {
            let what = format!(
                "cut at the violation ({:.3} s): {} s, {} events",
                violation_at.as_secs_f64(),
                candidate.duration_secs,
                candidate.events.len()
            );
            self.try_one(candidate, &what);
        }
    }

    /// Pass 2a: ddmin over faults with their repairs.
    fn ddmin_groups(&mut self) {
        let events = self.best.events.clone();
        let groups = fault_groups(&events);
        let before = groups.len();
        let kept = self.ddmin(groups, |search, chosen| {
            search.with_events(events_of(&events, chosen))
        });
        self.best.events = events_of(&events, &kept);
        self.log.push(format!(
            "ddmin over faults with their repairs: {before} -> {} faults",
            kept.len()
        ));
    }

    /// Pass 2b: ddmin over single events.
    fn ddmin_events(&mut self) {
        let events = self.best.events.clone();
        let before = events.len();
        let kept = self.ddmin(events, |search, chosen| search.with_events(chosen.to_vec()));
        self.log.push(format!(
            "ddmin over single events: {before} -> {} events",
            kept.len()
        ));
        self.best.events = kept;
    }

    /// Zeller's ddmin: the smallest subsequence of `items` found whose candidate still fails
    /// (1-minimal when it ends: removing any one item makes it pass). The empty sequence is
    /// tried first. `build` makes a candidate from a subsequence.
    fn ddmin<T: Clone>(&mut self, items: Vec<T>, build: impl Fn(&Self, &[T]) -> Drawn) -> Vec<T> {
        let mut current = items;
        if current.is_empty() {
            return current;
        }
        if let Some((_, seed)) = self.first_failing(&[build(self, &[])]) {
            self.seed = seed;
            return Vec::new();
        }
        let mut n = 2;
        while current.len() >= 2 {
            let chunks = split(&current, n);
            let mut candidates: Vec<Vec<T>> = chunks.clone();
            // Complements; with two chunks they are the chunks themselves.
            if n > 2 {
                for skip in 0..chunks.len() {
                    let complement: Vec<T> = chunks
                        .iter()
                        .enumerate()
                        .filter(|&(i, _)| i != skip)
                        .flat_map(|(_, chunk)| chunk.iter().cloned())
                        .collect();
                    candidates.push(complement);
                }
            }
            let built: Vec<Drawn> = candidates.iter().map(|c| build(self, c)).collect();
            match self.first_failing(&built) {
                Some((k, seed)) => {
                    self.seed = seed;
                    let is_chunk = k < chunks.len();
                    current = candidates.swap_remove(k);
                    n = if is_chunk { 2 } else { (n - 1).max(2) };
                }
                None if n >= current.len() => break,
                None => n = (2 * n).min(current.len()),
            }
        }
        current
    }

    /// Pass 3: simpler parameters, one at a time.
    fn simplify(&mut self) {
        let best = self.best.clone();
        if best.loss > 0.0 || best.duplicate > 0.0 || best.reorder > 0.0 {
            let calm = Drawn {
                loss: 0.0,
                duplicate: 0.0,
                reorder: 0.0,
                ..best.clone()
            };
            if !self.try_one(calm, "no message faults") {
                for (name, zero) in [
                    (
                        "no message loss",
                        Drawn {
                            loss: 0.0,
                            ..self.best.clone()
                        },
                    ),
                    (
                        "no duplication",
                        Drawn {
                            duplicate: 0.0,
                            ..self.best.clone()
                        },
                    ),
                    (
                        "no reordering",
                        Drawn {
                            reorder: 0.0,
                            ..self.best.clone()
                        },
                    ),
                ] {
                    self.try_one(zero, name);
                }
            }
        }
        while self.best.clients > 1 {
            let clients = self.best.clients / 2;
            let fewer = Drawn {
                clients,
                ..self.best.clone()
            };
            if !self.try_one(fewer, &format!("{clients} clients")) {
                break;
            }
        }
        while self.best.rate_per_client > 1.0 {
            let rate = self.best.rate_per_client / 2.0;
            let slower = Drawn {
                rate_per_client: rate,
                ..self.best.clone()
            };
            if !self.try_one(
                slower,
                &format!("{rate:.1} operations per second per client"),
            ) {
                break;
            }
        }
        // Fewer nodes, two at a time (a majority stays a majority of an odd cluster); the
        // events that name a node the smaller cluster lacks go with it.
        while self.best.nodes >= 3 {
            let nodes = self.best.nodes - 2;
            let processes = nodes + self.best.spare_nodes;
            let events: Vec<Event> = (self.best.events.iter())
                .filter(|e| e.action.fits(processes))
                .cloned()
                .collect();
            let what = match self.best.events.len() - events.len() {
                0 => format!("{nodes} nodes"),
                dropped => format!("{nodes} nodes, without the {dropped} events of the others"),
            };
            let smaller = Drawn {
                nodes,
                clock_drift: self.best.clock_drift[..nodes as usize].to_vec(),
                events,
                ..self.best.clone()
            };
            if !self.try_one(smaller, &what) {
                break;
            }
        }
        if self.best.clock_drift.iter().any(|&f| f != 1.0) {
            let steady = Drawn {
                clock_drift: vec![1.0; self.best.clock_drift.len()],
                ..self.best.clone()
            };
            self.try_one(steady, "no clock drift");
        }
        // The fault phase must still hold every event.
        let last = self
            .best
            .events
            .iter()
            .map(|e| e.at)
            .max()
            .unwrap_or_default();
        let shortest = last.as_secs() + 1;
        while self.best.duration_secs > shortest {
            let secs = ((self.best.duration_secs + shortest) / 2).max(shortest);
            let shorter = Drawn {
                duration_secs: secs,
                ..self.best.clone()
            };
            if !self.try_one(shorter, &format!("{secs} s of faults and load")) {
                break;
            }
        }
    }
}

/// `items` in `n` chunks of nearly equal length, in order.
fn split<T: Clone>(items: &[T], n: usize) -> Vec<Vec<T>> {
    let n = n.clamp(1, items.len().max(1));
    let mut chunks = Vec::with_capacity(n);
    let mut start = 0;
    for k in 0..n {
        let end = start + (items.len() - start) / (n - k);
        chunks.push(items[start..end].to_vec());
        start = end;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use std::path::Path;

    fn event(ms: u64, action: Action) -> Event {
        Event {
            at: Duration::from_millis(ms),
            action,
        }
    }

    fn id(n: u32) -> NodeRef {
        NodeRef::Id(n)
    }

    fn drawn_with(events: Vec<Event>) -> Drawn {
        let scenario = Scenario::parse(Path::new("t.toml"), "[run]\nduration_secs = 60\n")
            .expect("a valid scenario");
        scenario.draw(0).with_schedule(events)
    }

    /// Fails when the schedule holds every one of `needed` (by time) and, if `clients_max`,
    /// at most that many clients; counts its runs.
    struct Needs {
        needed: Vec<u64>,
        clients_max: Option<u32>,
        runs: AtomicUsize,
    }

    impl Runner for Needs {
        fn failing_check(&self, drawn: &Drawn, _seed: u64) -> Option<&'static str> {
            self.runs.fetch_add(1, Ordering::Relaxed);
            let times: Vec<u64> = drawn
                .events
                .iter()
                .map(|e| e.at.as_millis() as u64)
                .collect();
            let all = self.needed.iter().all(|t| times.contains(t));
            let clients = self.clients_max.is_none_or(|max| drawn.clients <= max);
            (all && clients).then_some("safety")
        }
    }

    #[test]
    fn faults_are_grouped_with_their_repairs() {
        let events = vec![
            event(1, Action::Crash { node: id(1) }),
            event(2, Action::Isolate { node: id(2) }),
            event(3, Action::Pause { node: id(3) }),
            event(
                4,
                Action::Split {
                    minority: vec![id(4)],
                },
            ),
            event(5, Action::Restart { node: id(1) }),
            event(6, Action::Heal),
            event(7, Action::Resume { node: id(3) }),
            event(8, Action::Heal),
            event(9, Action::Latency { ms: [1, 2] }),
        ];
        let groups = fault_groups(&events);
        assert_eq!(
            groups,
            vec![
                vec![0, 4],
                vec![1, 5],
                vec![2, 6],
                vec![3, 5],
                vec![7],
                vec![8]
            ]
        );
        // Two partitions share their heal; taking one keeps the heal once.
        let both = events_of(&events, &[groups[1].clone(), groups[3].clone()]);
        let times: Vec<u128> = both.iter().map(|e| e.at.as_millis()).collect();
        assert_eq!(times, [2, 4, 6]);
        assert_eq!(fault_count(&events), 5);
    }

    #[test]
    fn ddmin_finds_the_two_faults_that_matter_among_forty() {
        let mut events = Vec::new();
        for k in 0..40u64 {
            let node = id((k % 5) as u32 + 1);
            events.push(event(k * 100, Action::Crash { node }));
            events.push(event(k * 100 + 50, Action::Restart { node }));
        }
        let runner = Needs {
            needed: vec![1200, 2550],
            clients_max: None,
            runs: AtomicUsize::new(0),
        };
        let original = drawn_with(events);
        let options = ShrinkOptions {
            seeds_per_candidate: 1,
            jobs: 2,
        };
        let shrunk = shrink(
            &runner,
            &original,
            7,
            "safety",
            Duration::from_secs(600),
            options,
        );
        let times: Vec<u64> = shrunk
            .drawn
            .events
            .iter()
            .map(|e| e.at.as_millis() as u64)
            .collect();
        // The crash at 1200 ms and the restart at 2550 ms: each fault's partner went in the
        // single-event pass.
        assert_eq!(times, [1200, 2550]);
        assert_eq!(shrunk.seed, 7);
        assert!(
            runner.runs.load(Ordering::Relaxed) < 200,
            "ddmin took {} runs",
            runner.runs.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn parameters_are_simplified_only_while_the_failure_stays() {
        let events = vec![
            event(1000, Action::Crash { node: id(1) }),
            event(2000, Action::Restart { node: id(1) }),
        ];
        let mut original = drawn_with(events);
        original.clients = 16;
        original.loss = 0.2;
        let runner = Needs {
            needed: vec![1000],
            clients_max: Some(16),
            runs: AtomicUsize::new(0),
        };
        let options = ShrinkOptions {
            seeds_per_candidate: 2,
            jobs: 1,
        };
        let shrunk = shrink(
            &runner,
            &original,
            0,
            "safety",
            Duration::from_millis(1500),
            options,
        );
        assert_eq!(shrunk.drawn.events.len(), 1, "{:?}", shrunk.log);
        assert_eq!(shrunk.drawn.loss, 0.0);
        assert_eq!(shrunk.drawn.clients, 1);
        assert_eq!(shrunk.drawn.nodes, 1);
        assert_eq!(shrunk.drawn.clock_drift.len(), 1);
        assert!(shrunk.drawn.rate_per_client <= 1.0);
        // Cut at the violation: 1 s + 2, then down to the last event's second + 1.
        assert_eq!(shrunk.drawn.duration_secs, 2);
    }

    #[test]
    fn a_failure_that_needs_nothing_shrinks_to_nothing() {
        let events = vec![event(1000, Action::Pause { node: id(2) })];
        let runner = Needs {
            needed: vec![],
            clients_max: None,
            runs: AtomicUsize::new(0),
        };
        let options = ShrinkOptions {
            seeds_per_candidate: 1,
            jobs: 1,
        };
        let shrunk = shrink(
            &runner,
            &drawn_with(events),
            3,
            "safety",
            Duration::from_secs(100),
            options,
        );
        assert!(shrunk.drawn.events.is_empty());
    }

    #[test]
    fn split_keeps_order_and_sizes() {
        let items: Vec<u32> = (0..7).collect();
        assert_eq!(
            split(&items, 3),
            vec![vec![0, 1], vec![2, 3], vec![4, 5, 6]]
        );
        assert_eq!(split(&items, 7).len(), 7);
    }
}
