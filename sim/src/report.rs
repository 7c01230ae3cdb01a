//! Explains a run: turns its trace and history (the JSON lines `run --trace` and `--history`
//! write) into a self-contained HTML page (`--report`) and a Chrome trace event file for
//! ui.perfetto.dev and chrome://tracing (`--perfetto`).
//!
//! Pure functions of bytes: nothing here runs a simulation or touches a file, so the same code
//! can explain a trace that was saved earlier. Bad input is an error naming the line, never a
//! panic.
//!
//! Sends and receives in the trace carry no message id, so `extract` pairs them: a receive
//! matches the earliest unmatched send on the same link (from, to) with the same kind, term and
//! fields. A send the fault layer duplicated may match two receives; a dropped send matches
//! none. A send still unmatched after `FLIGHT_US_MAX` (unless the fault layer delayed it on
//! purpose), or whose receiver crashed first, is lost. Identical messages on one link are
//! indistinguishable, so among them the pairing is first in, first out, which is what a TCP
//! link does.
//!
//! Invariant: every time in the extracted run is in whole simulated microseconds, and every
//! list is sorted by its start time.

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

/// The page template; `extract`'s data replaces its one `__RAFTCHAT_DATA__`.
const TEMPLATE: &str = include_str!("report.html");
/// The placeholder in `TEMPLATE`.
const DATA_PLACEHOLDER: &str = "__RAFTCHAT_DATA__";
/// A send unmatched this long is taken as lost (unless it was delayed on purpose): longer than
/// any network latency or pause the scenarios draw in their safety phase.
const FLIGHT_US_MAX: u64 = 5_000_000;
/// The most messages the Perfetto file draws as flows; beyond it, it samples (see `perfetto`).
pub const PERFETTO_FLOWS_MAX: usize = 50_000;
/// Messages sent in this window before a failure are always in the Perfetto file.
const PERFETTO_FAILURE_WINDOW_US: u64 = 1_000_000;
/// Operation texts (invocation value and reply) longer than this are cut, with an ellipsis.
const OPERATION_TEXT_BYTES_MAX: usize = 160;

/// Message flags, as the page and the Perfetto file show them.
const FLAG_DROPPED: u8 = 1;
/// The second copy of a message the fault layer duplicated.
const FLAG_DUPLICATE: u8 = 2;
/// Held back by the fault layer (reordering).
const FLAG_DELAYED: u8 = 4;
/// Sent, not dropped, never received: its receiver crashed, or it was cut off.
const FLAG_LOST: u8 = 8;

/// The check that failed, as the run reported it.
#[derive(Clone, Debug)]
pub struct Failed {
    /// Simulated time of the failure, in nanoseconds since the start.
    pub time_ns: u64,
    /// The node it was found on, as a trace names it (`n3`), if any.
    pub node: Option<String>,
    /// The check's name.
    pub check: String,
    /// What it found.
    pub detail: String,
}

/// What a report is made from.
pub struct Source<'a> {
    /// A one-line title: scenario, seed and mutant.
    pub title: String,
    /// The trace, JSON lines.
    pub trace: &'a [u8],
    /// The client history, JSON lines.
    pub history: &'a [u8],
    /// The failed check, if the run failed.
    pub failed: Option<Failed>,
}

/// A line of the trace or history that cannot be explained.
#[derive(Debug, PartialEq, Eq)]
pub struct ReportError {
    /// `trace` or `history`.
    pub file: &'static str,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub detail: String,
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}: {}", self.file, self.line, self.detail)
    }
}

impl std::error::Error for ReportError {}

/// One Raft message: a send and, if it arrived, its receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrow {
    /// Sent at.
    pub send_us: u64,
    /// Received at, if it was.
    pub receive_us: Option<u64>,
    /// Sender's node id.
    pub from: u64,
    /// Receiver's node id.
    pub to: u64,
    /// Index into `Run::kinds`.
    pub kind: usize,
    /// The sender's term.
    pub term: u64,
    /// The kind's extra fields (see `extra_field_names`), in that order.
    pub extra: Vec<u64>,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Receives this send may still match: 2 when duplicated, 0 when dropped.
    copies: u8,
}

/// A node's role, term and indexes from one `status` event on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Since.
    pub time_us: u64,
    /// The node's id.
    pub node: u64,
    /// Index into `Run::roles`.
    pub role: usize,
    /// Current term.
    pub term: u64,
    /// The leader it knows, or 0.
    pub leader: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
}

/// A fault or a lifecycle event: a mark on a node's lane, or across every lane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// When.
    pub time_us: u64,
    /// The node's id, or `None` for the whole cluster (heal, nemesis).
    pub node: Option<u64>,
    /// The trace kind (`crash`, `partition`, ...).
    pub kind: String,
    /// Details for a tooltip.
    pub text: String,
}

/// A period a node spent down, paused or cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// From.
    pub start_us: u64,
    /// Until (the end of the run if it never ended).
    pub end_us: u64,
    /// The node's id.
    pub node: u64,
    /// `down`, `paused`, `isolated` or `cut`.
    pub kind: &'static str,
    /// Details for a tooltip.
    pub text: String,
}

/// One client operation from invocation to completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client process.
    pub process: u64,
    /// Invoked at.
    pub invoke_us: u64,
    /// Completed at, if it did before the run ended.
    pub complete_us: Option<u64>,
    /// Jepsen's `f`.
    pub f: String,
    /// `ok`, `fail`, `info`, or `pending` if it never completed.
    pub outcome: String,
    /// The invocation's value and the completion's, cut to `OPERATION_TEXT_BYTES_MAX`.
    pub text: String,
}

/// Everything a report shows, extracted from a trace and a history.
#[derive(Debug, Default)]
pub struct Run {
    /// Node ids, ascending.
    pub nodes: Vec<u64>,
    /// The last time in the trace or history.
    pub end_us: u64,
    /// Message kinds, in order of first appearance.
    pub kinds: Vec<String>,
    /// Role names, in order of first appearance.
    pub roles: Vec<String>,
    /// Messages, by send time.
    pub arrows: Vec<Arrow>,
    /// Receives that matched no send (their send was never traced, or came too long before).
    pub unmatched_receives: usize,
    /// Status changes, by time.
    pub statuses: Vec<Status>,
    /// Faults and lifecycle events, by time.
    pub marks: Vec<Mark>,
    /// Down, paused and cut-off periods, by start.
    pub spans: Vec<Span>,
    /// Client operations, by invocation.
    pub operations: Vec<Operation>,
}

/// The names of the extra fields a send or receive of `kind` carries, in the order `Arrow`
/// keeps them (see `message_fields` in world.rs).
pub fn extra_field_names(kind: &str) -> &'static [&'static str] {
    match kind {
        "append_entries" => &["prev_index", "entries", "commit"],
        "install_snapshot" => &["snapshot", "offset", "bytes"],
        "install_snapshot_response" => &["snapshot", "next_offset", "resend"],
        _ => &[],
    }
}

/// The kinds that are marks on a lane (or across all lanes), and how each is shown.
const MARK_KINDS: &[&str] = &[
    "crash",
    "restart",
    "power_loss",
    "corrupt_tail",
    "pause",
    "resume",
    "partition",
    "heal",
    "nemesis",
    "nemesis_skipped",
    "recovered",
    "recovery_failed",
    "stopped",
    "snapshot",
    "install",
    "snapshot_refused",
];

/// One parsed line, with its number for errors.
struct Line<'v> {
    file: &'static str,
    number: usize,
    value: &'v Value,
}

impl Line<'_> {
    fn error(&self, detail: impl Into<String>) -> ReportError {
        ReportError {
            file: self.file,
            line: self.number,
            detail: detail.into(),
        }
    }

    fn u64(&self, key: &str) -> Result<u64, ReportError> {
        match &self.value[key] {
            Value::Number(n) => n.as_u64(),
            Value::Bool(b) => Some(u64::from(*b)),
            _ => None,
        }
        .ok_or_else(|| self.error(format!("`{key}` is not a non-negative integer")))
    }

    fn str(&self, key: &str) -> Result<&str, ReportError> {
        self.value[key]
            .as_str()
            .ok_or_else(|| self.error(format!("`{key}` is not a string")))
    }

    /// A node name (`n3`) under `key`, as its id.
    fn node(&self, key: &str) -> Result<u64, ReportError> {
        let name = self.str(key)?;
        name.strip_prefix('n')
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| self.error(format!("`{key}` is `{name}`, not a node name like n1")))
    }

    fn time_us(&self) -> Result<u64, ReportError> {
        Ok(self.u64("time")? / 1_000)
    }
}

/// Parses JSON lines, calling `each` on every non-empty line.
fn for_each_line(
    file: &'static str,
    bytes: &[u8],
    mut each: impl FnMut(&Line<'_>) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: Value = serde_json::from_slice(raw).map_err(|e| ReportError {
            file,
            line: i + 1,
            detail: format!("not JSON: {e}"),
        })?;
        let line = Line {
            file,
            number: i + 1,
            value: &value,
        };
        if !value.is_object() {
            return Err(line.error("not a JSON object"));
        }
        each(&line)?;
    }
    Ok(())
}

/// Interns `name` in `table`, returning its index.
fn intern(table: &mut Vec<String>, name: &str) -> usize {
    match table.iter().position(|t| t == name) {
        Some(i) => i,
        None => {
            table.push(name.to_owned());
            table.len() - 1
        }
    }
}

/// What identifies a message on its link: kind, term and extra fields.
type MessageKey = (u64, u64, usize, u64, Vec<u64>);

/// The pairing of sends with receives, as the trace is read.
#[derive(Default)]
struct Matcher {
    /// Unmatched sends, per key, oldest first (indexes into `arrows`).
    pending: HashMap<MessageKey, VecDeque<usize>>,
    /// The last send per (from, to, kind), which the fault layer's drop, duplicate and delay
    /// lines (traced right after it) are about.
    last_send: HashMap<(u64, u64, usize), usize>,
}

impl Matcher {
    fn send(&mut self, arrows: &mut Vec<Arrow>, arrow: Arrow) {
        let key = (
            arrow.from,
            arrow.to,
            arrow.kind,
            arrow.term,
            arrow.extra.clone(),
        );
        self.last_send
            .insert((arrow.from, arrow.to, arrow.kind), arrows.len());
        self.pending.entry(key).or_default().push_back(arrows.len());
        arrows.push(arrow);
    }

    /// A fault-layer line about the last send from `from` to `to` of `kind`.
    fn fault(&mut self, arrows: &mut [Arrow], from: u64, to: u64, kind: usize, fault: &str) {
        let Some(&i) = self.last_send.get(&(from, to, kind)) else {
            return;
        };
        let arrow = &mut arrows[i];
        match fault {
            "drop" => {
                arrow.flags |= FLAG_DROPPED;
                arrow.copies = 0;
                let key = (
                    arrow.from,
                    arrow.to,
                    arrow.kind,
                    arrow.term,
                    arrow.extra.clone(),
                );
                self.remove(&key, i);
            }
            "duplicate" => arrow.copies = 2,
            _ => arrow.flags |= FLAG_DELAYED,
        }
    }

    fn remove(&mut self, key: &MessageKey, index: usize) {
        if let Some(queue) = self.pending.get_mut(key) {
            queue.retain(|&i| i != index);
            if queue.is_empty() {
                self.pending.remove(key);
            }
        }
    }

    /// Pairs a receive with its send; false if none matches.
    fn receive(&mut self, arrows: &mut Vec<Arrow>, key: MessageKey, receive_us: u64) -> bool {
        let Some(queue) = self.pending.get_mut(&key) else {
            return false;
        };
        // Sends long in flight that were not delayed on purpose were lost.
        while let Some(&i) = queue.front() {
            let arrow = &arrows[i];
            let stale = arrow.send_us + FLIGHT_US_MAX < receive_us;
            if !stale || arrow.flags & FLAG_DELAYED != 0 {
                break;
            }
            queue.pop_front();
        }
        let Some(&i) = queue.front() else {
            self.pending.remove(&key);
            return false;
        };
        let arrow = &mut arrows[i];
        arrow.copies = arrow.copies.saturating_sub(1);
        if arrow.copies == 0 {
            queue.pop_front();
            if queue.is_empty() {
                self.pending.remove(&key);
            }
        }
        if arrow.receive_us.is_none() {
            arrow.receive_us = Some(receive_us);
        } else {
            let mut copy = arrow.clone();
            copy.receive_us = Some(receive_us);
            copy.flags |= FLAG_DUPLICATE;
            arrows.push(copy);
        }
        true
    }

    /// `node` went down: what was in flight to it is lost.
    fn receiver_down(&mut self, node: u64) {
        self.pending.retain(|key, _| key.1 != node);
    }
}

/// Tracks the open down, paused and cut-off periods of every node.
#[derive(Default)]
struct Spans {
    open: BTreeMap<(u64, &'static str), (u64, String)>,
    closed: Vec<Span>,
}

impl Spans {
    /// Opens a period, or adds `text` to the one already open (a node cut off from several).
    fn open(&mut self, node: u64, kind: &'static str, time_us: u64, text: String) {
        match self.open.get_mut(&(node, kind)) {
            Some((_, open)) if !open.contains(&text) => {
                open.push_str(", ");
                open.push_str(&text);
            }
            Some(_) => {}
            None => {
                self.open.insert((node, kind), (time_us, text));
            }
        }
    }

    fn close(&mut self, node: u64, kind: &'static str, time_us: u64) {
        if let Some((start_us, text)) = self.open.remove(&(node, kind)) {
            self.closed.push(Span {
                start_us,
                end_us: time_us,
                node,
                kind,
                text,
            });
        }
    }

    fn close_all(&mut self, kinds: &[&'static str], time_us: u64) {
        let keys: Vec<(u64, &'static str)> = self
            .open
            .keys()
            .filter(|(_, kind)| kinds.contains(kind))
            .copied()
            .collect();
        for (node, kind) in keys {
            self.close(node, kind, time_us);
        }
    }
}

/// Reads a trace and a history into a `Run`.
pub fn extract(trace: &[u8], history: &[u8]) -> Result<Run, ReportError> {
    let mut run = Run::default();
    let mut matcher = Matcher::default();
    let mut spans = Spans::default();
    let mut nodes = std::collections::BTreeSet::new();
    for_each_line("trace", trace, |line| {
        let time_us = line.time_us()?;
        run.end_us = run.end_us.max(time_us);
        let node = match &line.value["node"] {
            Value::Null => None,
            _ => Some(line.node("node")?),
        };
        nodes.extend(node);
        // Traces written before partitions said `cut` have the cut's kind in `kind`.
        let kind = match line.str("kind")? {
            "isolate" | "link" => "partition",
            kind => kind,
        };
        match (kind, node) {
            ("send" | "receive", Some(_)) => {
                let arrow = message(line, &mut run.kinds, time_us)?;
                nodes.extend([arrow.from, arrow.to]);
                if kind == "send" {
                    matcher.send(&mut run.arrows, arrow);
                } else {
                    let key = (arrow.from, arrow.to, arrow.kind, arrow.term, arrow.extra);
                    if !matcher.receive(&mut run.arrows, key, time_us) {
                        run.unmatched_receives += 1;
                    }
                }
            }
            ("drop" | "duplicate" | "delay", Some(from)) => {
                let to = line.node("to")?;
                let message_kind = intern(&mut run.kinds, line.str("message")?);
                matcher.fault(&mut run.arrows, from, to, message_kind, kind);
            }
            ("status", Some(node)) => {
                let role = intern(&mut run.roles, line.str("role")?);
                let status = Status {
                    time_us,
                    node,
                    role,
                    term: line.u64("term")?,
                    leader: line.u64("leader").unwrap_or(0),
                    commit: line.u64("commit")?,
                    applied: line.u64("applied")?,
                };
                let last = run.statuses.iter().rev().find(|s| s.node == node);
                let same = last.is_some_and(|l| {
                    Status {
                        time_us,
                        ..l.clone()
                    } == status
                });
                if !same {
                    run.statuses.push(status);
                }
            }
            _ if MARK_KINDS.contains(&kind) => {
                lifecycle(
                    line,
                    kind,
                    node,
                    time_us,
                    &mut matcher,
                    &mut spans,
                    &mut nodes,
                )?;
                run.marks.push(Mark {
                    time_us,
                    node,
                    kind: kind.to_owned(),
                    text: mark_text(line.value),
                });
            }
            _ => {}
        }
        Ok(())
    })?;
    run.operations = operations(history, &mut run.end_us)?;
    for arrow in &mut run.arrows {
        if arrow.receive_us.is_none() && arrow.flags & FLAG_DROPPED == 0 {
            arrow.flags |= FLAG_LOST;
        }
    }
    run.arrows.sort_by_key(|a| a.send_us);
    spans.close_all(&["down", "paused", "isolated", "cut"], run.end_us);
    spans.closed.sort_by_key(|s| s.start_us);
    run.spans = spans.closed;
    run.nodes = nodes.into_iter().collect();
    Ok(run)
}

/// A send or receive line as an unmatched arrow.
fn message(line: &Line<'_>, kinds: &mut Vec<String>, time_us: u64) -> Result<Arrow, ReportError> {
    let kind_name = line.str("message")?;
    let extra = extra_field_names(kind_name)
        .iter()
        .map(|name| line.u64(name))
        .collect::<Result<Vec<u64>, _>>()?;
    Ok(Arrow {
        send_us: time_us,
        receive_us: None,
        from: line.node("from")?,
        to: line.node("to")?,
        kind: intern(kinds, kind_name),
        term: line.u64("term")?,
        extra,
        flags: 0,
        copies: 1,
    })
}

/// Opens and closes the down, paused and cut-off periods a mark starts or ends.
fn lifecycle(
    line: &Line<'_>,
    kind: &str,
    node: Option<u64>,
    time_us: u64,
    matcher: &mut Matcher,
    spans: &mut Spans,
    nodes: &mut std::collections::BTreeSet<u64>,
) -> Result<(), ReportError> {
    match (kind, node) {
        ("crash" | "power_loss" | "corrupt_tail", Some(node)) => {
            matcher.receiver_down(node);
            spans.close(node, "paused", time_us);
            spans.open(node, "down", time_us, kind.to_owned());
        }
        ("restart", Some(node)) => spans.close(node, "down", time_us),
        ("pause", Some(node)) => spans.open(node, "paused", time_us, "paused".into()),
        ("resume", Some(node)) => spans.close(node, "paused", time_us),
        ("partition", Some(node)) => spans.open(node, "isolated", time_us, "isolated".into()),
        ("partition", None) => {
            let (from, to) = (line.node("from")?, line.node("to")?);
            nodes.extend([from, to]);
            spans.open(from, "cut", time_us, format!("cut off from n{to}"));
            spans.open(to, "cut", time_us, format!("cut off from n{from}"));
        }
        ("heal", _) => spans.close_all(&["isolated", "cut"], time_us),
        _ => {}
    }
    Ok(())
}

/// A mark's tooltip: its fields other than time, node and kind.
fn mark_text(value: &Value) -> String {
    let Some(object) = value.as_object() else {
        return String::new();
    };
    let parts: Vec<String> = object
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "time" | "node" | "kind"))
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}: {s}"),
            _ => format!("{k}: {v}"),
        })
        .collect();
    parts.join(", ")
}

/// Cuts `text` to at most `OPERATION_TEXT_BYTES_MAX` bytes, at a character boundary.
fn shorten(mut text: String) -> String {
    if text.len() > OPERATION_TEXT_BYTES_MAX {
        let mut cut = OPERATION_TEXT_BYTES_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Pairs the history's invocations with their completions, per process.
fn operations(history: &[u8], end_us: &mut u64) -> Result<Vec<Operation>, ReportError> {
    let mut operations: Vec<Operation> = Vec::new();
    let mut open: HashMap<u64, usize> = HashMap::new();
    for_each_line("history", history, |line| {
        let time_us = line.time_us()?;
        *end_us = (*end_us).max(time_us);
        let process = line.u64("process")?;
        let value = &line.value["value"];
        match line.str("type")? {
            "invoke" => {
                open.insert(process, operations.len());
                operations.push(Operation {
                    process,
                    invoke_us: time_us,
                    complete_us: None,
                    f: line.str("f")?.to_owned(),
                    outcome: "pending".into(),
                    text: shorten(value.to_string()),
                });
            }
            outcome @ ("ok" | "fail" | "info") => {
                let i = open
                    .remove(&process)
                    .ok_or_else(|| line.error(format!("process {process} completes nothing")))?;
                let operation = &mut operations[i];
                operation.complete_us = Some(time_us);
                operation.outcome = outcome.to_owned();
                let reply = shorten(value.to_string());
                operation.text = format!("{} → {reply}", operation.text);
                if let Some(index) = line.value["index"].as_u64() {
                    operation.text.push_str(&format!(" @{index}"));
                }
                if let Some(node) = line.value["node"].as_u64() {
                    operation.text.push_str(&format!(" by n{node}"));
                }
            }
            other => return Err(line.error(format!("unknown type `{other}`"))),
        }
        Ok(())
    })?;
    Ok(operations)
}

/// Successive differences, so times sorted ascending embed as small numbers.
fn deltas(times: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut last = 0;
    times
        .map(|t| {
            let d = t.saturating_sub(last);
            last = t;
            d
        })
        .collect()
}

/// A node id's lane: its position in `nodes`.
fn lane(nodes: &[u64], node: u64) -> usize {
    nodes.binary_search(&node).unwrap_or(0)
}

/// The page's data: columns of numbers, with string tables, as one JSON object.
fn page_data(source: &Source<'_>, run: &Run) -> Value {
    let nodes = &run.nodes;
    let l = |n: u64| lane(nodes, n);
    let a = &run.arrows;
    let s = &run.statuses;
    let m = &run.marks;
    let mut mark_kinds: Vec<String> = Vec::new();
    let mark_kind: Vec<usize> = m.iter().map(|m| intern(&mut mark_kinds, &m.kind)).collect();
    let mut functions: Vec<String> = Vec::new();
    let op_f: Vec<usize> = (run.operations.iter())
        .map(|o| intern(&mut functions, &o.f))
        .collect();
    let outcomes = ["ok", "fail", "info", "pending"];
    let ops = &run.operations;
    json!({
        "title": source.title,
        "end": run.end_us,
        "nodes": nodes.iter().map(|n| format!("n{n}")).collect::<Vec<_>>(),
        "kinds": run.kinds,
        "kindFields": run.kinds.iter().map(|k| extra_field_names(k)).collect::<Vec<_>>(),
        "roles": run.roles,
        "unmatchedReceives": run.unmatched_receives,
        "flightMax": FLIGHT_US_MAX,
        "msg": {
            "t": deltas(a.iter().map(|a| a.send_us)),
            "dt": a.iter().map(|a| a.receive_us.map_or(-1, |r| (r - a.send_us) as i64))
                .collect::<Vec<_>>(),
            "from": a.iter().map(|a| l(a.from)).collect::<Vec<_>>(),
            "to": a.iter().map(|a| l(a.to)).collect::<Vec<_>>(),
            "kind": a.iter().map(|a| a.kind).collect::<Vec<_>>(),
            "term": a.iter().map(|a| a.term).collect::<Vec<_>>(),
            "flags": a.iter().map(|a| a.flags).collect::<Vec<_>>(),
            "x": a.iter().flat_map(|a| a.extra.iter().copied()).collect::<Vec<_>>(),
        },
        "status": {
            "t": deltas(s.iter().map(|s| s.time_us)),
            "node": s.iter().map(|s| l(s.node)).collect::<Vec<_>>(),
            "role": s.iter().map(|s| s.role).collect::<Vec<_>>(),
            "term": s.iter().map(|s| s.term).collect::<Vec<_>>(),
            "leader": s.iter().map(|s| s.leader).collect::<Vec<_>>(),
            "commit": s.iter().map(|s| s.commit).collect::<Vec<_>>(),
            "applied": s.iter().map(|s| s.applied).collect::<Vec<_>>(),
        },
        "markKinds": mark_kinds,
        "marks": {
            "t": m.iter().map(|m| m.time_us).collect::<Vec<_>>(),
            "node": m.iter().map(|m| m.node.map_or(-1, |n| l(n) as i64)).collect::<Vec<_>>(),
            "kind": mark_kind,
            "text": m.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        },
        "spans": run.spans.iter().map(|s| json!([s.start_us, s.end_us, l(s.node), s.kind, s.text]))
            .collect::<Vec<_>>(),
        "fs": functions,
        "outcomes": outcomes,
        "ops": {
            "process": ops.iter().map(|o| o.process).collect::<Vec<_>>(),
            "t": ops.iter().map(|o| o.invoke_us).collect::<Vec<_>>(),
            "dt": ops.iter().map(|o| o.complete_us.map_or(-1, |c| (c - o.invoke_us) as i64))
                .collect::<Vec<_>>(),
            "f": op_f,
            "outcome": ops.iter().map(|o| outcomes.iter().position(|x| *x == o.outcome)
                .unwrap_or(3)).collect::<Vec<_>>(),
            "text": ops.iter().map(|o| o.text.as_str()).collect::<Vec<_>>(),
        },
        "failure": source.failed.as_ref().map(|f| json!({
            "t": f.time_ns / 1_000,
            "node": f.node,
            "check": f.check,
            "detail": f.detail,
        })),
    })
}

/// The self-contained HTML page that explains `run` (extracted from `source`).
pub fn html(source: &Source<'_>, run: &Run) -> String {
    let data = serde_json::to_string(&page_data(source, run)).expect("JSON to memory");
    // Inside <script>, `</` could close the element; `<\/` is the same JSON string.
    let data = data.replace("</", "<\\/");
    TEMPLATE.replacen(DATA_PLACEHOLDER, &data, 1)
}

/// Which messages the Perfetto file draws: all of them up to `PERFETTO_FLOWS_MAX`; beyond, every
/// one sent in the second before the failure and an even stride of the rest.
fn perfetto_sample(run: &Run, failed: Option<&Failed>) -> (Vec<bool>, Option<usize>) {
    let count = run.arrows.len();
    if count <= PERFETTO_FLOWS_MAX {
        return (vec![true; count], None);
    }
    let stride = count.div_ceil(PERFETTO_FLOWS_MAX / 2);
    let failure_us = failed.map(|f| f.time_ns / 1_000);
    let keep = (run.arrows.iter().enumerate())
        .map(|(i, a)| {
            let near_failure = failure_us
                .is_some_and(|t| a.send_us <= t && a.send_us + PERFETTO_FAILURE_WINDOW_US >= t);
            near_failure || i % stride == 0
        })
        .collect();
    (keep, Some(stride))
}

/// Appends one trace event to `out`, comma-separated.
fn push_event(out: &mut Vec<u8>, event: &Value) {
    if out.last() != Some(&b'[') {
        out.extend_from_slice(b",\n");
    }
    serde_json::to_writer(&mut *out, event).expect("JSON to memory");
}

/// Microseconds as Chrome trace event `ts`.
fn ts(time_us: u64) -> f64 {
    time_us as f64
}

/// `run` (extracted from `source`) as a Chrome trace event file (JSON object form), for ui.perfetto.dev and
/// chrome://tracing: a process per node with a `role` track of role/term slices, `commit` and
/// `applied` counters and a `messages` track whose one-microsecond slices carry the flow arrows
/// from send to receive; faults as instant events; client operations as slices of a `clients`
/// process, a thread per client process.
pub fn perfetto(source: &Source<'_>, run: &Run) -> Vec<u8> {
    let mut out = b"{\"traceEvents\":[".to_vec();
    let pid = |node: u64| lane(&run.nodes, node) + 1;
    let clients_pid = run.nodes.len() + 1;
    for &node in &run.nodes {
        let p = pid(node);
        let name = format!("n{node}");
        push_event(
            &mut out,
            &json!({"ph": "M", "name": "process_name", "pid": p, "tid": 0,
            "args": {"name": name}}),
        );
        push_event(
            &mut out,
            &json!({"ph": "M", "name": "process_sort_index", "pid": p,
            "tid": 0, "args": {"sort_index": p}}),
        );
        for (tid, thread) in [(1, "role"), (2, "messages"), (3, "faults")] {
            push_event(
                &mut out,
                &json!({"ph": "M", "name": "thread_name", "pid": p,
                "tid": tid, "args": {"name": thread}}),
            );
        }
    }
    push_event(
        &mut out,
        &json!({"ph": "M", "name": "process_name", "pid": clients_pid,
        "tid": 0, "args": {"name": "clients"}}),
    );
    perfetto_roles(&mut out, run, &pid);
    let (keep, stride) = perfetto_sample(run, source.failed.as_ref());
    perfetto_messages(&mut out, run, &keep, &pid);
    perfetto_marks(&mut out, run, source.failed.as_ref(), &pid);
    for o in &run.operations {
        let end = o.complete_us.unwrap_or(run.end_us);
        push_event(
            &mut out,
            &json!({"ph": "X", "name": o.f, "cat": o.outcome,
            "pid": clients_pid, "tid": o.process + 1, "ts": ts(o.invoke_us),
            "dur": ts(end.saturating_sub(o.invoke_us).max(1)),
            "args": {"outcome": o.outcome, "operation": o.text}}),
        );
    }
    let sampling = match stride {
        None => format!("every one of the {} messages is drawn", run.arrows.len()),
        Some(stride) => format!(
            "{} messages, sampled: every {stride}th, and every one sent in the {} ms before the \
             failure",
            run.arrows.len(),
            PERFETTO_FAILURE_WINDOW_US / 1_000
        ),
    };
    out.extend_from_slice(b"],\n\"displayTimeUnit\":\"ms\",\"otherData\":");
    let other = json!({"title": source.title, "messages": sampling,
        "unmatched_receives": run.unmatched_receives});
    serde_json::to_writer(&mut out, &other).expect("JSON to memory");
    out.extend_from_slice(b"}\n");
    out
}

/// Role/term slices per node (one per stretch of the same role and term, cut short where the
/// node went down) and index counters.
fn perfetto_roles(out: &mut Vec<u8>, run: &Run, pid: &impl Fn(u64) -> usize) {
    let mut open: HashMap<u64, &Status> = HashMap::new();
    let down_from = |node: u64, start_us: u64, end_us: u64| {
        (run.spans.iter())
            .filter(|s| s.node == node && s.kind == "down")
            .map(|s| s.start_us)
            .find(|&t| t >= start_us && t < end_us)
            .unwrap_or(end_us)
    };
    let close = |out: &mut Vec<u8>, from: &Status, end_us: u64| {
        let end_us = down_from(from.node, from.time_us, end_us);
        let name = format!("{} t{}", run.roles[from.role], from.term);
        push_event(
            out,
            &json!({"ph": "X", "name": name, "cat": run.roles[from.role],
            "pid": pid(from.node), "tid": 1, "ts": ts(from.time_us),
            "dur": ts(end_us.saturating_sub(from.time_us)),
            "args": {"term": from.term, "leader": from.leader}}),
        );
    };
    for status in &run.statuses {
        let changed = open
            .get(&status.node)
            .is_none_or(|o| (o.role, o.term) != (status.role, status.term));
        if changed {
            if let Some(previous) = open.insert(status.node, status) {
                close(out, previous, status.time_us);
            }
        }
        push_event(
            out,
            &json!({"ph": "C", "name": "index", "pid": pid(status.node),
            "ts": ts(status.time_us),
            "args": {"commit": status.commit, "applied": status.applied}}),
        );
    }
    let mut last: Vec<&Status> = open.into_values().collect();
    last.sort_by_key(|s| s.node);
    for status in last {
        close(out, status, run.end_us);
    }
}

/// Messages as flows: a short slice on the sender's and the receiver's `messages` track, bound
/// by a flow from send to receive; a dropped or lost message is a slice with no flow.
fn perfetto_messages(out: &mut Vec<u8>, run: &Run, keep: &[bool], pid: &impl Fn(u64) -> usize) {
    for (id, arrow) in run.arrows.iter().enumerate().filter(|(i, _)| keep[*i]) {
        let kind = &run.kinds[arrow.kind];
        let mut args = json!({"from": format!("n{}", arrow.from), "to": format!("n{}", arrow.to),
            "term": arrow.term});
        for (name, value) in extra_field_names(kind).iter().zip(&arrow.extra) {
            args[*name] = json!(value);
        }
        let fate = match arrow.flags {
            f if f & FLAG_DROPPED != 0 => "dropped",
            f if f & FLAG_LOST != 0 => "lost",
            f if f & FLAG_DUPLICATE != 0 => "duplicate",
            f if f & FLAG_DELAYED != 0 => "delayed",
            _ => "delivered",
        };
        args["fate"] = json!(fate);
        let name = format!("{kind} → n{}", arrow.to);
        push_event(
            out,
            &json!({"ph": "X", "name": name, "cat": kind, "pid": pid(arrow.from),
            "tid": 2, "ts": ts(arrow.send_us), "dur": 1, "args": args}),
        );
        let Some(receive_us) = arrow.receive_us else {
            continue;
        };
        push_event(
            out,
            &json!({"ph": "s", "name": kind, "cat": "message", "id": id,
            "pid": pid(arrow.from), "tid": 2, "ts": ts(arrow.send_us)}),
        );
        let name = format!("{kind} ← n{}", arrow.from);
        push_event(
            out,
            &json!({"ph": "X", "name": name, "cat": kind, "pid": pid(arrow.to),
            "tid": 2, "ts": ts(receive_us), "dur": 1, "args": args}),
        );
        push_event(
            out,
            &json!({"ph": "f", "bp": "e", "name": kind, "cat": "message",
            "id": id, "pid": pid(arrow.to), "tid": 2, "ts": ts(receive_us)}),
        );
    }
}

/// Faults and lifecycle events as instant events (global for the cluster-wide ones), and the
/// failed check as a global instant event.
fn perfetto_marks(
    out: &mut Vec<u8>,
    run: &Run,
    failed: Option<&Failed>,
    pid: &impl Fn(u64) -> usize,
) {
    for mark in &run.marks {
        let mut event = json!({"ph": "i", "name": mark.kind, "cat": "fault", "ts": ts(mark.time_us),
            "args": {"detail": mark.text}});
        match mark.node {
            Some(node) => {
                event["pid"] = json!(pid(node));
                event["tid"] = json!(3);
                event["s"] = json!("t");
            }
            None => {
                event["pid"] = json!(0);
                event["s"] = json!("g");
            }
        }
        push_event(out, &event);
    }
    if let Some(f) = failed {
        let name = format!("FAIL {}", f.check);
        push_event(
            out,
            &json!({"ph": "i", "name": name, "cat": "failure", "s": "g",
            "pid": 0, "ts": ts(f.time_ns / 1_000),
            "args": {"node": f.node, "detail": f.detail}}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(time_ns: u64, from: u64, to: u64, kind: &str, term: u64) -> String {
        format!(
            r#"{{"time":{time_ns},"node":"n{from}","kind":"send","from":"n{from}","to":"n{to}","term":{term},"message":"{kind}"}}"#
        )
    }

    fn receive(time_ns: u64, from: u64, to: u64, kind: &str, term: u64) -> String {
        send(time_ns, from, to, kind, term).replace("\"send\"", "\"receive\"")
    }

    fn lines(lines: &[String]) -> Vec<u8> {
        (lines.join("\n") + "\n").into_bytes()
    }

    #[test]
    fn a_receive_matches_the_earliest_unmatched_send_with_its_fields() {
        let trace = lines(&[
            send(1_000, 1, 2, "heartbeat", 1),
            send(2_000, 1, 2, "heartbeat", 1),
            send(3_000, 1, 2, "heartbeat", 2),
            receive(4_000, 1, 2, "heartbeat", 2),
            receive(5_000, 1, 2, "heartbeat", 1),
        ]);
        let run = extract(&trace, b"").unwrap();
        let received: Vec<(u64, Option<u64>)> = run
            .arrows
            .iter()
            .map(|a| (a.send_us, a.receive_us))
            .collect();
        assert_eq!(received, [(1, Some(5)), (2, None), (3, Some(4))]);
        assert_eq!(run.arrows[1].flags, FLAG_LOST);
        assert_eq!(run.nodes, [1, 2]);
    }

    #[test]
    fn append_entries_match_on_their_fields_too() {
        let ae = |kind: &str, t: u64, prev: u64| {
            format!(
                r#"{{"time":{t},"node":"n1","kind":"{kind}","from":"n1","to":"n3","term":2,"message":"append_entries","prev_index":{prev},"entries":1,"commit":0}}"#
            )
        };
        let trace = lines(&[
            ae("send", 1_000, 4),
            ae("send", 2_000, 5),
            ae("receive", 3_000, 5),
        ]);
        let run = extract(&trace, b"").unwrap();
        assert_eq!(run.arrows[0].receive_us, None);
        assert_eq!(run.arrows[1].receive_us, Some(3));
        assert_eq!(run.arrows[1].extra, [5, 1, 0]);
    }

    #[test]
    fn dropped_duplicated_and_orphan_messages() {
        let fault = |t: u64, kind: &str| {
            format!(r#"{{"time":{t},"node":"n1","kind":"{kind}","to":"n2","message":"heartbeat"}}"#)
        };
        let trace = lines(&[
            send(1_000, 1, 2, "heartbeat", 1),
            fault(1_000, "drop"),
            send(2_000, 1, 2, "heartbeat", 1),
            fault(2_000, "duplicate"),
            receive(3_000, 1, 2, "heartbeat", 1),
            receive(4_000, 1, 2, "heartbeat", 1),
            receive(5_000, 1, 2, "heartbeat", 1),
        ]);
        let run = extract(&trace, b"").unwrap();
        let summary: Vec<(u64, Option<u64>, u8)> = (run.arrows.iter())
            .map(|a| (a.send_us, a.receive_us, a.flags))
            .collect();
        assert_eq!(
            summary,
            [
                (1, None, FLAG_DROPPED),
                (2, Some(3), 0),
                (2, Some(4), FLAG_DUPLICATE)
            ]
        );
        assert_eq!(run.unmatched_receives, 1);
    }

    #[test]
    fn a_crash_loses_what_was_in_flight_to_the_node() {
        let trace = lines(&[
            send(1_000, 1, 2, "heartbeat", 1),
            r#"{"time":1500,"node":"n2","kind":"crash"}"#.into(),
            r#"{"time":1800,"node":"n2","kind":"restart"}"#.into(),
            receive(2_000, 1, 2, "heartbeat", 1),
        ]);
        let run = extract(&trace, b"").unwrap();
        assert_eq!(run.arrows[0].flags, FLAG_LOST);
        assert_eq!(run.unmatched_receives, 1);
        let down = &run.spans[0];
        assert_eq!(
            (down.start_us, down.end_us, down.node, down.kind),
            (1, 1, 2, "down")
        );
    }

    #[test]
    fn a_split_cuts_nodes_off_until_the_heal() {
        let cut = |from: u64, to: u64| {
            format!(
                r#"{{"time":1000,"node":null,"kind":"partition","cut":"link","from":"n{from}","to":"n{to}"}}"#
            )
        };
        let trace = lines(&[
            cut(1, 2),
            cut(1, 3),
            // Written before partitions said `cut`: the same thing.
            r#"{"time":2000,"node":"n2","kind":"isolate"}"#.into(),
            r#"{"time":9000,"node":null,"kind":"heal"}"#.into(),
        ]);
        let run = extract(&trace, b"").unwrap();
        let spans: Vec<(u64, &str, u64, u64, &str)> = (run.spans.iter())
            .map(|s| (s.node, s.kind, s.start_us, s.end_us, s.text.as_str()))
            .collect();
        assert_eq!(
            spans,
            [
                (1, "cut", 1, 9, "cut off from n2, cut off from n3"),
                (2, "cut", 1, 9, "cut off from n1"),
                (3, "cut", 1, 9, "cut off from n1"),
                (2, "isolated", 2, 9, "isolated"),
            ]
        );
        let kinds: Vec<&str> = run.marks.iter().map(|m| m.kind.as_str()).collect();
        assert_eq!(kinds, ["partition", "partition", "partition", "heal"]);
    }

    #[test]
    fn status_timeline_keeps_changes_only() {
        let status = |t: u64, role: &str, term: u64, commit: u64| {
            format!(
                r#"{{"time":{t},"node":"n1","kind":"status","role":"{role}","term":{term},"leader":null,"commit":{commit},"applied":{commit}}}"#
            )
        };
        let trace = lines(&[
            status(1_000, "follower", 1, 0),
            status(2_000, "follower", 1, 0),
            status(3_000, "candidate", 2, 0),
            status(4_000, "leader", 2, 3),
        ]);
        let run = extract(&trace, b"").unwrap();
        let timeline: Vec<(u64, &str, u64, u64)> = (run.statuses.iter())
            .map(|s| (s.time_us, run.roles[s.role].as_str(), s.term, s.commit))
            .collect();
        assert_eq!(
            timeline,
            [
                (1, "follower", 1, 0),
                (3, "candidate", 2, 0),
                (4, "leader", 2, 3)
            ]
        );
    }

    #[test]
    fn history_pairs_invocations_with_completions() {
        let history =
            br#"{"process":0,"type":"invoke","f":"create","value":{"user":"a"},"time":1000}
{"process":1,"type":"invoke","f":"check","value":{"user":"a"},"time":1500}
{"process":0,"type":"ok","f":"create","value":{"status":0},"time":2000,"index":3,"node":2}
"#;
        let run = extract(b"", history).unwrap();
        let ops: Vec<(u64, u64, Option<u64>, &str)> = (run.operations.iter())
            .map(|o| (o.process, o.invoke_us, o.complete_us, o.outcome.as_str()))
            .collect();
        assert_eq!(ops, [(0, 1, Some(2), "ok"), (1, 1, None, "pending")]);
        assert!(
            run.operations[0].text.ends_with("@3 by n2"),
            "{}",
            run.operations[0].text
        );
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        let error = extract(
            b"{\"time\":1,\"node\":null,\"kind\":\"heal\"}\nnot json\n",
            b"",
        )
        .unwrap_err();
        assert_eq!((error.file, error.line), ("trace", 2));
        let error = extract(
            &lines(&[send(1, 1, 2, "heartbeat", 1).replace("n2", "x")]),
            b"",
        )
        .unwrap_err();
        assert!(error.detail.contains("node name"), "{error}");
        let error = extract(b"", b"{\"process\":0,\"type\":\"ok\",\"time\":1}\n").unwrap_err();
        assert_eq!(error.file, "history");
    }

    fn source<'a>(trace: &'a [u8], history: &'a [u8]) -> Source<'a> {
        Source {
            title: "test </script>".into(),
            trace,
            history,
            failed: Some(Failed {
                time_ns: 4_000,
                node: Some("n2".into()),
                check: "election_safety".into(),
                detail: "two leaders".into(),
            }),
        }
    }

    #[test]
    fn perfetto_is_valid_json_with_processes_flows_and_slices() {
        let trace = lines(&[
            r#"{"time":500,"node":"n1","kind":"status","role":"leader","term":1,"leader":1,"commit":0,"applied":0}"#.into(),
            send(1_000, 1, 2, "heartbeat", 1),
            receive(3_000, 1, 2, "heartbeat", 1),
            r#"{"time":3500,"node":"n1","kind":"crash"}"#.into(),
        ]);
        let history =
            br#"{"process":0,"type":"invoke","f":"create","value":{"user":"a"},"time":1000}
{"process":0,"type":"info","f":"create","value":null,"time":2000,"index":null}
"#;
        let source = source(&trace, history);
        let run = extract(source.trace, source.history).unwrap();
        let bytes = perfetto(&source, &run);
        let value: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        let events = value["traceEvents"].as_array().unwrap();
        let count = |ph: &str| events.iter().filter(|e| e["ph"] == ph).count();
        assert_eq!((count("s"), count("f")), (1, 1));
        let flow = |ph: &str| events.iter().find(|e| e["ph"] == ph).unwrap().clone();
        assert_eq!(flow("s")["id"], flow("f")["id"]);
        assert_eq!(
            (flow("s")["pid"].clone(), flow("f")["pid"].clone()),
            (json!(1), json!(2))
        );
        let names: Vec<&str> = (events.iter())
            .filter(|e| e["name"] == "process_name")
            .filter_map(|e| e["args"]["name"].as_str())
            .collect();
        assert_eq!(names, ["n1", "n2", "clients"]);
        // The leader's slice ends where it crashed.
        let leader = events.iter().find(|e| e["name"] == "leader t1").unwrap();
        assert_eq!((&leader["ts"], &leader["dur"]), (&json!(0.0), &json!(3.0)));
        assert!(events
            .iter()
            .any(|e| e["ph"] == "i" && e["name"] == "crash"));
        assert!(events.iter().any(|e| e["name"] == "FAIL election_safety"));
        assert!(events
            .iter()
            .any(|e| e["ph"] == "X" && e["name"] == "create"));
    }

    #[test]
    fn html_embeds_the_data_once_and_cannot_close_its_script() {
        let trace = lines(&[send(1_000, 1, 2, "heartbeat", 1)]);
        let source = source(&trace, b"");
        let page = html(&source, &extract(source.trace, source.history).unwrap());
        assert!(!page.contains(DATA_PLACEHOLDER));
        assert!(!page.contains("test </script>"));
        assert!(page.contains("election_safety"));
    }
}
