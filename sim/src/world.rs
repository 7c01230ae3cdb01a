//! What one simulated run shares among its nodes, clients and nemesis: the trace, the history,
//! the online checker, and the first violation. Every node's runtime reports to it through the
//! `Observer` hook; everything runs on madsim's single thread, so a plain mutex never contends.

use crate::checker::{Checker, Failure};
use crate::history::History;
use crate::trace::Trace;
use raftchat::raft::MessageBody;
use raftchat::types::NodeId;
use raftchat_node::deadline::Clock;
use raftchat_node::observer::{Event, Observer};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The first broken property of a run, with when and where.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The failed check.
    pub failure: Failure,
    /// Simulated time since the start of the run.
    pub time: Duration,
    /// The end of the trace (or history) leading to it.
    pub context: String,
}

/// Counters for the benchmark and the summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Raft messages handed to the transport.
    pub messages_sent: u64,
    /// Messages dropped, duplicated, or delayed by the fault layer.
    pub messages_dropped: u64,
    /// Duplicated.
    pub messages_duplicated: u64,
    /// Delayed (reordered).
    pub messages_delayed: u64,
    /// Sync batches written.
    pub persisted_batches: u64,
    /// Snapshots taken by nodes of their own state.
    pub snapshots_taken: u64,
    /// Leaders' snapshots installed by followers.
    pub snapshots_installed: u64,
}

/// The mutable part of the world.
#[derive(Default)]
pub struct WorldState {
    /// The trace, when enabled.
    pub trace: Option<Trace>,
    /// The client history.
    pub history: History,
    /// The online checker.
    pub checker: Checker,
    /// The first violation.
    pub violation: Option<Violation>,
    /// Counters.
    pub stats: Stats,
    /// The newest principal any login returned for each account: what a forger knows.
    pub principals: std::collections::BTreeMap<String, raftchat::chat::Principal>,
}

/// The shared world of one run.
pub struct World {
    start: Instant,
    /// Read for every event recorded (`Instant::now()` would go through madsim's
    /// `clock_gettime` hook, which looks the runtime up on every call).
    clock: Clock,
    state: Mutex<WorldState>,
    tracing: bool,
    /// Set once the nemesis has healed everything: the message fault layer stands down.
    healed: AtomicBool,
    /// The cluster's CA, when its links are TLS: nodes get certificates from it, and clients
    /// check the nodes' against it.
    pub tls: Option<Arc<raftchat_node::tls::Authority>>,
    /// The cluster's token key, drawn from the seed.
    pub token_key: raftchat_node::auth::TokenKey,
}

impl World {
    /// A world for a cluster of `voter_count` nodes starting now, with or without a trace.
    pub fn new(voter_count: usize, tracing: bool) -> World {
        let state = WorldState {
            trace: tracing.then(Trace::default),
            checker: Checker::new(voter_count),
            ..WorldState::default()
        };
        let clock = Clock::current();
        World {
            start: clock.now(),
            clock,
            state: Mutex::new(state),
            tracing,
            healed: AtomicBool::new(false),
            tls: None,
            token_key: raftchat_node::auth::TokenKey::new([0; 32]),
        }
    }

    /// A client's TLS for this run's cluster, if its links are TLS.
    pub fn client_tls(&self) -> Option<raftchat_node::tls::ClientTls> {
        let authority = self.tls.as_ref()?;
        let tls = raftchat_node::tls::ClientTls::from_pem(authority.cert_pem().as_bytes(), "CA");
        Some(tls.expect("the run's own CA is valid"))
    }

    /// Simulated time since the start.
    pub fn now(&self) -> Duration {
        self.clock.now() - self.start
    }

    /// Runs `f` on the state.
    pub fn with<R>(&self, f: impl FnOnce(&mut WorldState) -> R) -> R {
        f(&mut self.state.lock().expect("world lock"))
    }

    /// Records a trace event, if tracing; `fields` is built only then.
    pub fn trace(
        &self,
        node: Option<NodeId>,
        kind: &str,
        fields: impl FnOnce() -> serde_json::Value,
    ) {
        if !self.tracing {
            return;
        }
        let time = self.now();
        self.with(|s| {
            if let Some(trace) = s.trace.as_mut() {
                trace.record(time, node.map(|n| n.0), kind, fields());
            }
        });
    }

    /// Everything is healed for the rest of the run: message faults stop too, and the quiet
    /// window's checks begin (see `Checker::open_quiet_window`).
    pub fn heal_messages(&self) {
        self.healed.store(true, Ordering::Relaxed);
        self.trace(None, "heal_messages", || json!({}));
    }

    /// Whether message faults have stopped for the rest of the run.
    pub fn messages_healed(&self) -> bool {
        self.healed.load(Ordering::Relaxed)
    }

    /// Records a violation unless one is already recorded.
    pub fn violate(&self, failure: Failure) {
        let time = self.now();
        self.with(|s| {
            if s.violation.is_none() {
                let node = failure.node.map(|n| n.0);
                let context = s
                    .trace
                    .as_ref()
                    .map(|t| t.tail(25, node))
                    .unwrap_or_default();
                s.violation = Some(Violation {
                    failure,
                    time,
                    context,
                });
            }
        });
    }

    /// Whether a violation has been recorded.
    pub fn violated(&self) -> bool {
        self.with(|s| s.violation.is_some())
    }

    /// A node hands `message` to its transport: counted, and a granted vote is checked.
    pub fn message_sent(&self, node: NodeId, message: &raftchat::raft::Message) {
        if let MessageBody::TimeoutNow = message.body {
            let result = self.with(|s| s.checker.timeout_now(node, message.to, message.term));
            self.check(result);
        }
        let vote = matches!(
            message.body,
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true
            }
        );
        let result = self.with(|s| {
            s.stats.messages_sent += 1;
            if vote {
                s.checker.vote_granted(node, message.term, message.to)
            } else {
                Ok(())
            }
        });
        self.check(result);
    }

    fn check(&self, result: Result<(), Failure>) {
        if let Err(failure) = result {
            self.violate(failure);
        }
    }
}

fn message_fields(message: &raftchat::raft::Message) -> serde_json::Value {
    let mut fields = json!({
        "from": format!("{}", message.from),
        "to": format!("{}", message.to),
        "term": message.term.0,
        "message": message.body.kind(),
    });
    match &message.body {
        MessageBody::AppendEntries {
            prev_log_index,
            entries,
            leader_commit,
            ..
        } => {
            fields["prev_index"] = json!(prev_log_index.0);
            fields["entries"] = json!(entries.len());
            fields["commit"] = json!(leader_commit.0);
        }
        MessageBody::InstallSnapshot {
            snapshot,
            offset,
            data,
            ..
        } => {
            fields["snapshot"] = json!(snapshot.index.0);
            fields["offset"] = json!(offset);
            fields["bytes"] = json!(data.len());
        }
        MessageBody::InstallSnapshotResponse {
            snapshot,
            next_offset,
            resend,
        } => {
            fields["snapshot"] = json!(snapshot.index.0);
            fields["next_offset"] = json!(next_offset);
            fields["resend"] = json!(resend);
        }
        _ => {}
    }
    fields
}

impl Observer for World {
    fn wants_messages(&self) -> bool {
        self.tracing
    }

    fn event(&self, node: NodeId, event: &Event<'_>) {
        match event {
            Event::Recovered {
                hard_state,
                snapshot,
                snapshot_digest,
                entries,
                torn_tail_bytes,
                skipped_snapshots,
            } => {
                let result = self.with(|s| {
                    s.checker
                        .node_started(node, *snapshot, *snapshot_digest, entries)
                });
                self.check(result);
                self.trace(Some(node), "recovered", || {
                    json!({
                        "term": hard_state.term.0,
                        "snapshot": snapshot.index.0,
                        "entries": entries.len(),
                        "commit": hard_state.commit_index.0,
                        "torn_tail_bytes": torn_tail_bytes,
                        "skipped_snapshots": skipped_snapshots,
                    })
                });
            }
            Event::Status(status) => {
                let result = self.with(|s| {
                    s.checker
                        .status(node, *status)
                        .and_then(|()| s.checker.check_quiet(node, || self.now()))
                });
                self.trace(Some(node), "status", || {
                    json!({
                        "role": status.role.name(),
                        "term": status.term.0,
                        "leader": status.leader.map(|l| l.0),
                        "commit": status.commit_index.0,
                        "applied": status.applied_index.0,
                    })
                });
                self.check(result);
            }
            Event::Handed { entries, installed } => {
                let result = self.with(|s| s.checker.handed(node, *installed, entries));
                self.check(result);
            }
            Event::Persisted {
                bytes,
                entries,
                installed,
            } => {
                let result = self.with(|s| {
                    s.stats.persisted_batches += 1;
                    s.checker.persisted(node, *installed, entries)
                });
                self.trace(Some(node), "persist", || {
                    json!({ "bytes": bytes, "entries": entries.len(),
                            "first": entries.first().map(|e| e.index.0),
                            "installed": installed.map(|i| i.snapshot.index.0),
                            "kept_through": installed.map(|i| i.kept_through.0) })
                });
                self.check(result);
            }
            Event::SnapshotTaken { .. }
            | Event::SnapshotInstalled { .. }
            | Event::SnapshotRefused { .. } => self.snapshot_event(node, event),
            // Counting and the vote check happen in the fault layer, which sees every
            // message whether or not the trace is on.
            Event::Sent(message) => {
                self.trace(Some(node), "send", || message_fields(message));
            }
            Event::Received(message) => {
                self.trace(Some(node), "receive", || message_fields(message));
            }
            Event::Applied(applied) => {
                let result = self.with(|s| s.checker.applied(node, applied));
                self.trace(Some(node), "apply", || {
                    json!({ "index": applied.index.0, "term": applied.term.0,
                            "command": applied.command.as_ref().map(|c| format!("{c:?}")) })
                });
                self.check(result);
            }
            Event::RecoveryFailed { reason } => {
                // The fault model only ever damages what was not yet synced, which recovery
                // must always get past: a node refusing its own directory lost data.
                self.with(|s| s.checker.node_stopped(node, reason));
                self.trace(
                    Some(node),
                    "recovery_failed",
                    || json!({ "reason": reason }),
                );
                self.violate(Failure {
                    check: "recovery",
                    node: Some(node),
                    detail: format!("refused its own data directory: {reason}"),
                });
            }
            Event::Membership { membership, index } => {
                self.with(|s| s.checker.membership(node, membership));
                self.trace(Some(node), "membership", || {
                    json!({ "index": index.0,
                            "voters": membership.voters().map(|v| v.0).collect::<Vec<_>>(),
                            "learners": membership.learners().map(|l| l.0).collect::<Vec<_>>() })
                });
            }
            Event::Transfer { target } => {
                self.with(|s| s.checker.transfer(node, *target));
                self.trace(
                    Some(node),
                    "transfer",
                    || json!({ "target": target.map(|t| t.0) }),
                );
            }
            Event::Stopped { reason } => {
                // A power failure always takes the process with it, so no disk operation of a
                // running node ever fails in a run: a node that stops on an error has a bug.
                self.with(|s| s.checker.node_stopped(node, reason));
                self.trace(Some(node), "stopped", || json!({ "reason": reason }));
                self.violate(Failure {
                    check: "node_error",
                    node: Some(node),
                    detail: format!("stopped on an error: {reason}"),
                });
            }
        }
    }
}

impl World {
    /// The snapshot events: checked and traced.
    fn snapshot_event(&self, node: NodeId, event: &Event<'_>) {
        match event {
            Event::SnapshotTaken {
                snapshot,
                digest,
                compacted_through,
                applied_index,
                ..
            } => {
                let result = self.with(|s| {
                    s.stats.snapshots_taken += 1;
                    s.checker.snapshot_taken(
                        node,
                        *snapshot,
                        *digest,
                        *compacted_through,
                        *applied_index,
                    )
                });
                self.trace(Some(node), "snapshot", || {
                    json!({ "index": snapshot.index.0, "term": snapshot.term.0,
                        "bytes": snapshot.size_bytes,
                        "compacted_through": compacted_through.0 })
                });
                self.check(result);
            }
            Event::SnapshotInstalled { snapshot, digest } => {
                let result = self.with(|s| {
                    s.stats.snapshots_installed += 1;
                    s.checker.snapshot_installed(node, *snapshot, *digest)
                });
                self.trace(Some(node), "install", || {
                    json!({ "index": snapshot.index.0, "term": snapshot.term.0,
                        "bytes": snapshot.size_bytes })
                });
                self.check(result);
            }
            Event::SnapshotRefused { snapshot, reason } => {
                self.trace(
                    Some(node),
                    "snapshot_refused",
                    || json!({ "index": snapshot.index.0, "reason": reason }),
                );
            }
            _ => {}
        }
    }
}
