//! The linearizability checker: decides whether a client [`History`] could have come from one
//! copy of the chat service answering one operation at a time, each at some instant between its
//! invocation and its completion (Herlihy & Wing). The sequential specification is [`Model`],
//! written here again from BRIEF §1 rather than borrowed from `raftchat::chat::Chat`, so that
//! the checker is an independent oracle: a bug in the state machine is not also in its judge.
//!
//! What the outcomes mean (Jepsen's convention): `ok` took effect once, with the recorded
//! reply; `fail` certainly never took effect; `info` is unknown: the client gave up (or the run
//! ended) without an answer, so the operation may take effect at any instant after its
//! invocation, even after the end of the history, or never. An `info` therefore has no
//! completion time at all, and it orders nothing after it.
//!
//! Two algorithms, tried in this order:
//!
//! 1. Log order, O(n log n). The simulator records on every completion the log index at which
//!    the operation took effect (for an `info`, read afterwards from the replicas' applied logs;
//!    none if it never did); a read served without the log records the applied index of the
//!    state it saw, and goes right after the write at that index (reads at one index, in the
//!    order they were invoked). A Raft cluster is linearizable exactly because the log order is
//!    a linearization, so the checker verifies that claim: no `fail` has an index, no two
//!    writes share one, an operation that completed before another was invoked comes first in
//!    that order (a time sweep), and replaying everything that took effect in that order on
//!    the model reproduces every `ok` reply. A failure names the operation, the node that
//!    answered it, and what the log order gives instead.
//! 2. Search, when some `ok` lacks an index: Wing & Gong's depth-first search with Lowe's
//!    memoization of (set of linearized operations, model state). An `ok` must be linearized
//!    after every `ok` that completed before its invocation and before its own completion; an
//!    `info` write may be linearized anywhere after its invocation or left out; an `info` read
//!    and every `fail` are dropped, as they change nothing. A read whose reply matches the
//!    current state is linearized at once without branching, which is sound because a read
//!    changes nothing and nothing pending must precede it. The work is bounded by a budget of
//!    explored states; past it the verdict is [`Verdict::Undecided`], never a hang. Histories
//!    are not partitioned by account: `list` and `fetch` read across accounts, so the model is
//!    not a product of independent per-key models.
//!
//! Nothing here depends on madsim, the clock or OS randomness: the memo uses a fixed hasher,
//! and its iteration order never reaches the output.

use crate::history::{op_name, Completion, History, HistoryEvent};
use raftchat::chat::glob::Pattern;
use raftchat::chat::{ChatLimits, Operation, Principal, Reply, Status, MESSAGE_OVERHEAD_BYTES};
use raftchat::limits::{
    ACCOUNTS_MAX, FETCH_MESSAGES_MAX, MESSAGE_CHARS_MAX, PATTERN_CHARS_MAX, USERNAME_CHARS_MAX,
};
use raftchat::types::{LogIndex, NodeId};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::rc::Rc;
use std::time::Duration;

/// How many conflicting operations a violation's slice shows beside the offending one.
const SLICE_NEIGHBOURS_MAX: usize = 3;

/// How many messages or users a reason spells out before it says how many more there are.
const REASON_ITEMS_MAX: usize = 5;

// ---------------------------------------------------------------------------------------------
// The sequential model.

/// The chat service as a sequential specification (BRIEF §1, with the retention rule):
/// accounts in creation order, each with its inbox; an inbox keeps at most
/// `limits.inbox_messages_max` messages and all of them together at most
/// `limits.retained_bytes_max` bytes (a message counts its sender, its text and
/// `MESSAGE_OVERHEAD_BYTES`), the oldest going first, with ids that count every message
/// received. Clone, Hash and Eq so that the search can memoize states.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Model {
    limits: ChatLimits,
    // Invariant: `order` holds exactly the keys of `inboxes`, oldest account first.
    order: Vec<String>,
    // Inboxes are shared between the cloned states of the search until one of them changes.
    inboxes: BTreeMap<String, Rc<ModelInbox>>,
    /// Messages delivered so far: the arrival number of the next one.
    arrivals: u64,
    /// Bytes retained over every inbox.
    retained_bytes: u64,
    /// The accounts with a password, and the log index that created each (when known: the
    /// search may place a create whose index the history lacks). Only a genuine token naming
    /// the account and that index acts on it.
    owners: BTreeMap<String, Option<LogIndex>>,
}

/// One inbox: the id of its oldest retained message, and the retained messages with their
/// arrival numbers, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ModelInbox {
    first_id: u64,
    messages: VecDeque<(String, String, u64)>,
}

impl Default for ModelInbox {
    fn default() -> ModelInbox {
        ModelInbox {
            first_id: 1,
            messages: VecDeque::new(),
        }
    }
}

fn charge(from: &str, text: &str) -> u64 {
    MESSAGE_OVERHEAD_BYTES + from.len() as u64 + text.len() as u64
}

impl Default for Model {
    fn default() -> Model {
        Model::with_limits(ChatLimits::default())
    }
}

impl Model {
    /// The empty service under the default limits: no accounts.
    #[cfg(test)]
    pub fn new() -> Model {
        Model::default()
    }

    /// The empty service under `limits`.
    pub fn with_limits(limits: ChatLimits) -> Model {
        Model {
            limits,
            order: Vec::new(),
            inboxes: BTreeMap::new(),
            arrivals: 0,
            retained_bytes: 0,
            owners: BTreeMap::new(),
        }
    }

    /// Applies one operation, by nobody in particular, and returns the reply the service must
    /// give.
    #[cfg(test)]
    pub fn apply(&mut self, operation: &Operation) -> Reply {
        self.apply_as(operation, None, None)
    }

    /// Applies one operation acting as `acting` (a genuine token's principal), taking effect
    /// at log index `index` if known, and returns the reply the service must give.
    pub fn apply_as(
        &mut self,
        operation: &Operation,
        acting: Option<&Principal>,
        index: Option<LogIndex>,
    ) -> Reply {
        match operation {
            Operation::CreateAccount { username } => self.create(username, None),
            Operation::CreateAccountWithPassword { username, .. } => {
                self.create(username, Some(index))
            }
            Operation::DeleteAccount { username } => self.delete(username, acting),
            Operation::SendMessage { from, to, message } => self.send(from, to, message, acting),
            Operation::CheckAccount { .. }
            | Operation::ListAccounts { .. }
            | Operation::FetchMessages { .. } => self.read(operation, acting),
        }
    }

    /// The reply to a read-only operation; a write here is a programmer error.
    fn read(&self, operation: &Operation, acting: Option<&Principal>) -> Reply {
        match operation {
            Operation::CheckAccount { username } => self.check(username),
            Operation::ListAccounts { pattern } => self.list(pattern),
            Operation::FetchMessages {
                username,
                first_message_id,
            } => self.fetch(username, *first_message_id, acting),
            Operation::CreateAccount { .. }
            | Operation::CreateAccountWithPassword { .. }
            | Operation::DeleteAccount { .. }
            | Operation::SendMessage { .. } => unreachable!("model: read of a write"),
        }
    }

    /// Whether `acting` may act on the existing account `username`: anyone on an open one,
    /// only its owner (this account, not an earlier one of the same name) on one with a
    /// password.
    fn authorized(&self, username: &str, acting: Option<&Principal>) -> bool {
        match self.owners.get(username) {
            None => true,
            Some(created) => acting.is_some_and(|principal| {
                principal.username == username
                    && created.is_none_or(|created| created == principal.created)
            }),
        }
    }

    /// Validity first, then existence, then the table bound, as the service checks them. A
    /// protected account (`owner` given) remembers the index that created it, if known.
    fn create(&mut self, username: &str, owner: Option<Option<LogIndex>>) -> Reply {
        if !username_is_valid(username) {
            return Reply::new(Status::InvalidUsername);
        }
        if self.inboxes.contains_key(username) || self.order.len() >= ACCOUNTS_MAX {
            return Reply::new(Status::GeneralError);
        }
        self.order.push(username.to_owned());
        self.inboxes.insert(username.to_owned(), Rc::default());
        if let Some(created) = owner {
            self.owners.insert(username.to_owned(), created);
        }
        Reply::new(Status::Success)
    }

    fn check(&self, username: &str) -> Reply {
        match self.inboxes.contains_key(username) {
            true => Reply::new(Status::Success),
            false => Reply::new(Status::AccountNotExist),
        }
    }

    fn list(&self, pattern: &str) -> Reply {
        if pattern.chars().count() > PATTERN_CHARS_MAX {
            return Reply::new(Status::GeneralError);
        }
        let pattern = Pattern::new(pattern);
        let users = self.order.iter().filter(|user| pattern.matches(user));
        Reply::with_users(users.cloned().collect())
    }

    /// A deleted account's inbox goes with it; a later account of that name starts empty and
    /// comes last in creation order.
    fn delete(&mut self, username: &str, acting: Option<&Principal>) -> Reply {
        if !self.inboxes.contains_key(username) {
            return Reply::new(Status::AccountNotExist);
        }
        if !self.authorized(username, acting) {
            return Reply::new(Status::AuthFailed);
        }
        self.owners.remove(username);
        let inbox = self.inboxes.remove(username).expect("just checked");
        let freed: u64 = inbox.messages.iter().map(|(f, t, _)| charge(f, t)).sum();
        self.retained_bytes -= freed;
        self.order.retain(|user| user != username);
        Reply::new(Status::Success)
    }

    /// Length, then sender, then the right to send as it, then target, as the service checks
    /// them.
    fn send(&mut self, from: &str, to: &str, message: &str, acting: Option<&Principal>) -> Reply {
        if message.chars().count() > MESSAGE_CHARS_MAX {
            return Reply::new(Status::MessageTooLong);
        }
        if !self.inboxes.contains_key(from) {
            return Reply::new(Status::AccountNotExist);
        }
        if !self.authorized(from, acting) {
            return Reply::new(Status::AuthFailed);
        }
        let Some(inbox) = self.inboxes.get_mut(to) else {
            return Reply::new(Status::AccountNotExist);
        };
        let arrival = self.arrivals;
        self.arrivals += 1;
        let inbox = Rc::make_mut(inbox);
        inbox
            .messages
            .push_back((from.to_owned(), message.to_owned(), arrival));
        self.retained_bytes += charge(from, message);
        if inbox.messages.len() as u64 > self.limits.inbox_messages_max {
            self.drop_oldest(to);
        }
        while self.retained_bytes > self.limits.retained_bytes_max {
            let oldest = self
                .inboxes
                .iter()
                .filter_map(|(user, inbox)| Some((inbox.messages.front()?.2, user)))
                .min()
                .map(|(_, user)| user.clone())
                .expect("retained bytes are in some inbox");
            self.drop_oldest(&oldest);
        }
        Reply::new(Status::Success)
    }

    fn drop_oldest(&mut self, username: &str) {
        let inbox = Rc::make_mut(self.inboxes.get_mut(username).expect("the account exists"));
        let (from, text, _) = inbox.messages.pop_front().expect("a message to drop");
        inbox.first_id += 1;
        self.retained_bytes -= charge(&from, &text);
    }

    /// From the requested id, or the oldest retained one if that was dropped.
    fn fetch(&self, username: &str, first_message_id: u64, acting: Option<&Principal>) -> Reply {
        if first_message_id < 1 {
            return Reply::new(Status::GeneralError);
        }
        let Some(inbox) = self.inboxes.get(username) else {
            return Reply::new(Status::AccountNotExist);
        };
        if !self.authorized(username, acting) {
            return Reply::new(Status::AuthFailed);
        }
        let start = first_message_id.max(inbox.first_id);
        let next_id = inbox.first_id + inbox.messages.len() as u64;
        if start >= next_id {
            return Reply::new(Status::NoElement);
        }
        let messages = inbox
            .messages
            .iter()
            .skip((start - inbox.first_id) as usize)
            .take(FETCH_MESSAGES_MAX)
            .map(|(from, text, _)| (from.clone(), text.clone()));
        Reply::with_messages(start, messages.collect())
    }
}

/// Non-empty, at most `USERNAME_CHARS_MAX` characters, none of them a control character.
fn username_is_valid(username: &str) -> bool {
    !username.is_empty()
        && username.chars().count() <= USERNAME_CHARS_MAX
        && !username.chars().any(char::is_control)
}

/// Whether two replies to `operation` agree on everything the history records for it: the
/// status, and the users of a list or the messages of a fetch.
fn same_reply(operation: &Operation, a: &Reply, b: &Reply) -> bool {
    a.status == b.status
        && match operation {
            Operation::ListAccounts { .. } => a.users == b.users,
            Operation::FetchMessages { .. } => {
                a.messages == b.messages && a.first_message_id == b.first_message_id
            }
            _ => true,
        }
}

// ---------------------------------------------------------------------------------------------
// Operations: invocations paired with their completions.

/// How an operation ended, as the checker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Took effect once, with this reply.
    Ok(Reply),
    /// Certainly never took effect.
    Fail,
    /// Unknown: it may take effect at any time after its invocation, or never.
    Info,
}

/// One operation of a history: an invocation and the completion that answered it, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The client process that ran it.
    pub process: u32,
    /// What it asked for.
    pub operation: Operation,
    /// When it was invoked.
    pub invoked: Duration,
    /// When its outcome became known; None for an `info`, whose effect may come at any time.
    pub completed: Option<Duration>,
    /// How it ended.
    pub outcome: Outcome,
    /// The log index where it took effect, as the simulator recorded it.
    pub index: Option<LogIndex>,
    /// The node that answered it, if one did.
    pub node: Option<NodeId>,
    /// Whom it acted as: the principal of the genuine token it sent (a forged token's acts
    /// as nobody).
    pub acting: Option<Principal>,
    /// It sent a token no node issued (and so acted as nobody).
    pub forged_token: bool,
    /// The position of its invocation in the history's events.
    pub invoke_event: usize,
    /// The position of its completion in the history's events; None if it never completed.
    pub complete_event: Option<usize>,
}

/// A point in real time: simulated time, then the event's position, which orders events that
/// share a time exactly as they happened.
type Moment = (Duration, usize);

impl Op {
    fn invoked_at(&self) -> Moment {
        (self.invoked, self.invoke_event)
    }

    /// When the operation is known to have taken effect by; None for `info`.
    fn completed_at(&self) -> Option<Moment> {
        self.completed.zip(self.complete_event)
    }

    /// Applies the operation to `model` as it took effect, and returns the reply due.
    fn apply_to(&self, model: &mut Model) -> Reply {
        model.apply_as(&self.operation, self.acting.as_ref(), self.effect_index())
    }

    fn reply(&self) -> Option<&Reply> {
        match &self.outcome {
            Outcome::Ok(reply) => Some(reply),
            Outcome::Fail | Outcome::Info => None,
        }
    }

    /// The index where it took effect, by the simulator's account: an `ok`'s, or an `info`'s
    /// that has one. A `fail` never takes effect.
    fn effect_index(&self) -> Option<LogIndex> {
        match self.outcome {
            Outcome::Ok(_) | Outcome::Info => self.index,
            Outcome::Fail => None,
        }
    }

    /// Where the log order puts it: at its index, a read after the write there.
    fn position(&self) -> Option<(LogIndex, bool)> {
        self.effect_index()
            .map(|index| (index, self.operation.is_read_only()))
    }
}

/// Pairs every invocation with its process's next completion. An invocation still open at the
/// end becomes an `info`. A completion without an open invocation, a second invocation while
/// one is open, a completion of a different operation, or an `ok` without a reply is an error.
pub fn operations(history: &History) -> Result<Vec<Op>, String> {
    let mut ops: Vec<Op> = Vec::new();
    let mut open: BTreeMap<u32, usize> = BTreeMap::new();
    for (position, event) in history.events.iter().enumerate() {
        let line = position + 1;
        let Some(completion) = event.completion else {
            if let Some(&id) = open.get(&event.process) {
                let first = ops[id].invoke_event + 1;
                let process = event.process;
                return Err(format!(
                    "line {line}: process {process} invoked again while line {first} was open"
                ));
            }
            open.insert(event.process, ops.len());
            ops.push(invocation(position, event));
            continue;
        };
        let Some(id) = open.remove(&event.process) else {
            let process = event.process;
            return Err(format!(
                "line {line}: process {process} completed nothing it invoked"
            ));
        };
        complete(&mut ops[id], position, event, completion)?;
    }
    Ok(ops)
}

fn invocation(position: usize, event: &HistoryEvent) -> Op {
    Op {
        process: event.process,
        operation: event.operation.clone(),
        invoked: event.time,
        completed: None,
        outcome: Outcome::Info,
        index: None,
        node: None,
        acting: event
            .acting
            .as_ref()
            .filter(|acting| acting.genuine)
            .map(|acting| acting.principal.clone()),
        forged_token: event.acting.as_ref().is_some_and(|acting| !acting.genuine),
        invoke_event: position,
        complete_event: None,
    }
}

fn complete(
    op: &mut Op,
    position: usize,
    event: &HistoryEvent,
    completion: Completion,
) -> Result<(), String> {
    let line = position + 1;
    if event.operation != op.operation {
        return Err(format!(
            "line {line} completes another operation than it invoked"
        ));
    }
    op.complete_event = Some(position);
    op.index = event.index;
    op.node = event.node;
    op.outcome = match (completion, &event.reply) {
        (Completion::Ok, Some(reply)) => Outcome::Ok(reply.clone()),
        (Completion::Ok, None) => return Err(format!("line {line}: an ok without a reply")),
        (Completion::Fail, _) => Outcome::Fail,
        (Completion::Info, _) => Outcome::Info,
    };
    if completion != Completion::Info {
        op.completed = Some(event.time);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The verdict.

/// What the checker concluded about a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable {
        /// How it was found: "log order" or "search".
        method: &'static str,
        /// How many operations the history holds.
        operations: usize,
    },
    /// No linearization exists.
    NotLinearizable {
        /// Which operation cannot be placed, and why.
        reason: String,
        /// When the anomaly was complete: the latest invocation or completion among the
        /// operations the slice shows (what came after it cannot have caused it).
        at: Duration,
        /// The history lines (JSON, as `History::to_json_lines` renders them) of that operation
        /// and the few it conflicts with.
        slice: String,
    },
    /// The checker could not tell within its budget, or the history is malformed.
    Undecided {
        /// Why not.
        reason: String,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable { method, operations } => {
                write!(
                    formatter,
                    "linearizable: {operations} operations, by {method}"
                )
            }
            Verdict::NotLinearizable { reason, slice, .. } => {
                write!(formatter, "not linearizable: {reason}\n{slice}")
            }
            Verdict::Undecided { reason } => write!(formatter, "undecided: {reason}"),
        }
    }
}

/// A broken rule: what, and the operations that show it.
struct Violation {
    reason: String,
    ops: Vec<usize>,
}

/// Checks `history` for linearizability: by the log order when every `ok` has an index (the
/// simulator guarantees it), else by a search that explores at most `budget` states.
// The simulator's run (cluster.rs, madsim builds only) is to call this; until it does, the
// madsim build would reject the whole checker as dead code.
pub fn check(history: &History, budget: usize) -> Verdict {
    let ops = match operations(history) {
        Ok(ops) => ops,
        Err(error) => return malformed(error),
    };
    let indexed = ops
        .iter()
        .all(|op| op.reply().is_none() || op.index.is_some());
    match indexed {
        true => check_log_order(history, &ops, budget),
        false => check_by_search(history, &ops, budget),
    }
}

/// Checks `history` by the search alone, ignoring every index: for tests, and to cross-check
/// the log order.
// Only tests call it; the simulator always goes through `check`.
#[cfg(test)]
pub fn check_search_only(history: &History, budget: usize) -> Verdict {
    match operations(history) {
        Ok(ops) => check_by_search(history, &ops, budget),
        Err(error) => malformed(error),
    }
}

fn malformed(error: String) -> Verdict {
    Verdict::Undecided {
        reason: format!("malformed history: {error}"),
    }
}

fn not_linearizable(history: &History, ops: &[Op], violation: Violation) -> Verdict {
    let at = violation
        .ops
        .iter()
        .map(|&id| ops[id].completed.unwrap_or(ops[id].invoked))
        .max()
        .unwrap_or_default();
    Verdict::NotLinearizable {
        at,
        reason: violation.reason,
        slice: render_slice(history, ops, &violation.ops),
    }
}

// ---------------------------------------------------------------------------------------------
// The fast path: the log order is the linearization.

fn check_log_order(history: &History, ops: &[Op], budget: usize) -> Verdict {
    let violation = failed_with_effect(ops)
        .or_else(|| shared_index(ops))
        .or_else(|| real_time_inversion(ops))
        .or_else(|| replay_mismatch(ops, history.limits));
    let Some(mut violation) = violation else {
        return Verdict::Linearizable {
            method: "log order",
            operations: ops.len(),
        };
    };
    // A read served from a state real time forbids is a bug, but the history may still be
    // linearizable: its reply may be the same in a state it could have seen. The search,
    // which ignores indexes, decides.
    if violation
        .ops
        .iter()
        .any(|&id| ops[id].operation.is_read_only())
    {
        match check_by_search(history, ops, budget) {
            Verdict::Linearizable { operations, .. } => {
                return Verdict::Linearizable {
                    method: "search (a read's index broke the log order, its reply did not)",
                    operations,
                }
            }
            Verdict::Undecided { reason } => {
                violation.reason = format!(
                    "{}; the search could not place it either ({reason})",
                    violation.reason
                );
            }
            Verdict::NotLinearizable { .. } => {}
        }
    }
    not_linearizable(history, ops, violation)
}

fn failed_with_effect(ops: &[Op]) -> Option<Violation> {
    let (id, op) = ops
        .iter()
        .enumerate()
        .find(|(_, op)| op.outcome == Outcome::Fail && op.index.is_some())?;
    Some(Violation {
        reason: format!("a failed operation took effect: {}", describe(op)),
        ops: vec![id],
    })
}

/// Every write is its own log entry, so no two may claim one index (reads may share the
/// index of the state they saw).
fn shared_index(ops: &[Op]) -> Option<Violation> {
    let mut indexed: Vec<usize> = (0..ops.len())
        .filter(|&id| ops[id].index.is_some() && !ops[id].operation.is_read_only())
        .collect();
    indexed.sort_by_key(|&id| (ops[id].index, id));
    let pair = indexed
        .windows(2)
        .find(|pair| ops[pair[0]].index == ops[pair[1]].index)?;
    let (a, b) = (&ops[pair[0]], &ops[pair[1]]);
    Some(Violation {
        reason: format!(
            "two operations took effect at one index: {} and {}",
            describe(a),
            describe(b)
        ),
        ops: pair.to_vec(),
    })
}

/// A time sweep: at each invocation of an operation that took effect, the latest log-order
/// position of the `ok` operations completed so far must not be past its own (reads at one
/// position may complete in any order).
fn real_time_inversion(ops: &[Op]) -> Option<Violation> {
    // (moment, whether it is an invocation, op)
    let mut points: Vec<(Moment, bool, usize)> = Vec::new();
    for (id, op) in ops.iter().enumerate() {
        if op.effect_index().is_none() {
            continue;
        }
        points.push((op.invoked_at(), true, id));
        if let (Some(_), Some(at)) = (op.reply(), op.completed_at()) {
            points.push((at, false, id));
        }
    }
    points.sort_unstable();
    let mut latest: Option<usize> = None;
    for (_, invocation, id) in points {
        let position = ops[id].position();
        if invocation {
            if let Some(a) = latest.filter(|&a| ops[a].position() > position) {
                return Some(inversion(&ops[a], &ops[id], [a, id]));
            }
        } else if latest.is_none_or(|a| ops[a].position() < position) {
            latest = Some(id);
        }
    }
    None
}

fn inversion(a: &Op, b: &Op, ids: [usize; 2]) -> Violation {
    let reason = format!(
        "real-time order broken: {} completed at {:?}, before {} was invoked at {:?}, \
         yet the log puts the later one first",
        describe(a),
        a.completed.unwrap_or_default(),
        describe(b),
        b.invoked,
    );
    Violation {
        reason,
        ops: ids.to_vec(),
    }
}

/// Replays every operation that took effect in index order and compares each `ok` reply.
fn replay_mismatch(ops: &[Op], limits: ChatLimits) -> Option<Violation> {
    let mut order: Vec<usize> = (0..ops.len())
        .filter(|&id| ops[id].effect_index().is_some())
        .collect();
    order.sort_by_key(|&id| (ops[id].position(), ops[id].invoked_at()));
    let mut model = Model::with_limits(limits);
    for (position, &id) in order.iter().enumerate() {
        let op = &ops[id];
        let expected = op.apply_to(&mut model);
        let Some(actual) = op.reply() else {
            continue;
        };
        if !same_reply(&op.operation, actual, &expected) {
            let reason = format!(
                "{} returned {}, but the log order gives {}",
                describe(op),
                describe_reply(&op.operation, actual, &expected),
                describe_reply(&op.operation, &expected, actual),
            );
            let ops_shown = neighbours(ops, &order[..position], id, &expected);
            return Some(Violation {
                reason,
                ops: ops_shown,
            });
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The search path: Wing & Gong with Lowe's memoization.

/// A set of search items, as bits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(length: usize) -> Bits {
        Bits(vec![0; length.div_ceil(64)])
    }

    fn get(&self, bit: usize) -> bool {
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }
}

/// An operation the search may linearize: every `ok`, and every `info` write.
struct Item {
    op: usize,
    invoked: Moment,
    /// None for an `info`, which may take effect at any time or never.
    completed: Option<Moment>,
    read_only: bool,
}

/// A node of the depth-first search, after its matching reads were linearized.
struct Frame {
    done: Bits,
    model: Model,
    /// How many `ok` items are in `done`.
    ok_done: usize,
    /// The length of the search path on entering this frame.
    path_len: usize,
    /// The next item to try as the frame's next linearized operation.
    cursor: usize,
    /// The earliest completion of an `ok` not yet linearized: only items invoked before it may
    /// go next.
    frontier: Moment,
}

/// How far the search got before it had to give up on every order: the most `ok` operations
/// it linearized, along which path, and the one that had to come next.
struct Refutation {
    ok_done: usize,
    path: Vec<usize>,
    model: Model,
    blocker: usize,
    concurrent: Vec<usize>,
}

/// What the search found.
enum SearchResult {
    /// A linearization: the operations that take effect, in order.
    Found(Vec<usize>),
    /// None exists; the deepest point reached shows why.
    Refuted(Refutation),
    /// The budget ran out first.
    OutOfBudget,
}

type Memo = HashSet<(Bits, Model), BuildHasherDefault<DefaultHasher>>;

struct Search<'a> {
    ops: &'a [Op],
    limits: ChatLimits,
    // Invariant: sorted by invocation, so the candidates of a frame are a prefix.
    items: Vec<Item>,
    ok_by_completion: Vec<usize>,
    memo: Memo,
    budget: usize,
    deepest: Option<Refutation>,
}

fn check_by_search(history: &History, ops: &[Op], budget: usize) -> Verdict {
    match search(ops, budget, history.limits) {
        SearchResult::Found(order) => {
            let acknowledged = |id: &&usize| ops[**id].reply().is_some();
            let ok_count = ops.iter().filter(|op| op.reply().is_some()).count();
            assert_eq!(order.iter().filter(acknowledged).count(), ok_count);
            Verdict::Linearizable {
                method: "search",
                operations: ops.len(),
            }
        }
        SearchResult::Refuted(refutation) => {
            not_linearizable(history, ops, explain(ops, &refutation))
        }
        SearchResult::OutOfBudget => Verdict::Undecided {
            reason: format!(
                "history of {} operations too large to decide within {budget} states",
                ops.len()
            ),
        },
    }
}

fn search(ops: &[Op], budget: usize, limits: ChatLimits) -> SearchResult {
    let mut items: Vec<Item> = ops
        .iter()
        .enumerate()
        .filter_map(|(id, op)| search_item(id, op))
        .collect();
    items.sort_by_key(|item| item.invoked);
    let mut ok_by_completion: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].completed.is_some())
        .collect();
    ok_by_completion.sort_by_key(|&i| items[i].completed);
    let mut search = Search {
        ops,
        limits,
        items,
        ok_by_completion,
        memo: Memo::default(),
        budget,
        deepest: None,
    };
    search.run()
}

fn search_item(id: usize, op: &Op) -> Option<Item> {
    let read_only = op.operation.is_read_only();
    let completed = match op.outcome {
        Outcome::Ok(_) => Some(op.completed_at()?),
        Outcome::Info if !read_only => None,
        Outcome::Info | Outcome::Fail => return None,
    };
    Some(Item {
        op: id,
        invoked: op.invoked_at(),
        completed,
        read_only,
    })
}

impl Search<'_> {
    fn run(&mut self) -> SearchResult {
        let mut path = Vec::new();
        let model = Model::with_limits(self.limits);
        let Some(root) = self.enter(Bits::new(self.items.len()), model, 0, &mut path) else {
            return SearchResult::Found(self.order(&path));
        };
        let mut stack = vec![root];
        while let Some(frame) = stack.last_mut() {
            let Some((done, model, item)) = self.next_child(frame) else {
                stack.pop();
                continue;
            };
            if self.memo.len() > self.budget {
                return SearchResult::OutOfBudget;
            }
            path.truncate(frame.path_len);
            path.push(item);
            let ok_done = frame.ok_done + usize::from(self.items[item].completed.is_some());
            match self.enter(done, model, ok_done, &mut path) {
                Some(child) => stack.push(child),
                None => return SearchResult::Found(self.order(&path)),
            }
        }
        match self.deepest.take() {
            Some(refutation) => SearchResult::Refuted(refutation),
            None => unreachable!("search: the root frame always records a depth"),
        }
    }

    /// Linearizes every pending read that matches the state, then makes the frame; None if
    /// every `ok` is then linearized (the search is over).
    fn enter(
        &mut self,
        mut done: Bits,
        model: Model,
        mut ok_done: usize,
        path: &mut Vec<usize>,
    ) -> Option<Frame> {
        loop {
            let (frontier, blocker) = self.frontier(&done)?;
            let Some(read) = self.matching_read(&done, &model, frontier) else {
                self.note_depth(&done, &model, ok_done, path, blocker);
                let path_len = path.len();
                return Some(Frame {
                    done,
                    model,
                    ok_done,
                    path_len,
                    cursor: 0,
                    frontier,
                });
            };
            done.set(read);
            path.push(read);
            ok_done += 1;
        }
    }

    /// The earliest completion among the `ok` items not yet linearized, and that item.
    fn frontier(&self, done: &Bits) -> Option<(Moment, usize)> {
        let item = *self.ok_by_completion.iter().find(|&&i| !done.get(i))?;
        Some((self.items[item].completed?, item))
    }

    /// The indexes of the items that may go next.
    fn candidates<'b>(
        &'b self,
        done: &'b Bits,
        frontier: Moment,
    ) -> impl Iterator<Item = usize> + 'b {
        (0..self.items.len())
            .take_while(move |&i| self.items[i].invoked < frontier)
            .filter(move |&i| !done.get(i))
    }

    fn matching_read(&self, done: &Bits, model: &Model, frontier: Moment) -> Option<usize> {
        self.candidates(done, frontier).find(|&i| {
            let op = &self.ops[self.items[i].op];
            match op.reply() {
                Some(reply) if op.operation.is_read_only() => same_reply(
                    &op.operation,
                    reply,
                    &model.read(&op.operation, op.acting.as_ref()),
                ),
                _ => false,
            }
        })
    }

    /// The frame's next unexplored child: a write that may go next, whose reply matches, and
    /// whose resulting state is new.
    fn next_child(&mut self, frame: &mut Frame) -> Option<(Bits, Model, usize)> {
        while let Some(item) = self.items.get(frame.cursor) {
            let i = frame.cursor;
            if item.invoked >= frame.frontier {
                return None;
            }
            frame.cursor += 1;
            // A pending `ok` read here did not match: `enter` linearized every one that did.
            if frame.done.get(i) || item.read_only {
                continue;
            }
            let op = &self.ops[item.op];
            let mut model = frame.model.clone();
            let reply = op.apply_to(&mut model);
            if op
                .reply()
                .is_some_and(|r| !same_reply(&op.operation, r, &reply))
            {
                continue;
            }
            let mut done = frame.done.clone();
            done.set(i);
            if self.memo.insert((done.clone(), model.clone())) {
                return Some((done, model, i));
            }
        }
        None
    }

    fn note_depth(
        &mut self,
        done: &Bits,
        model: &Model,
        ok_done: usize,
        path: &[usize],
        blocker: usize,
    ) {
        if self.deepest.as_ref().is_some_and(|d| d.ok_done >= ok_done) {
            return;
        }
        let frontier = self.items[blocker].completed.unwrap_or_default();
        let concurrent = self.candidates(done, frontier).filter(|&i| i != blocker);
        let concurrent = concurrent.map(|i| self.items[i].op).collect();
        self.deepest = Some(Refutation {
            ok_done,
            path: self.order(path),
            model: model.clone(),
            blocker: self.items[blocker].op,
            concurrent,
        });
    }

    fn order(&self, path: &[usize]) -> Vec<usize> {
        path.iter().map(|&i| self.items[i].op).collect()
    }
}

/// Why the search failed, from the deepest point it reached: the operation that had to take
/// effect next, what it returned, and what the state there gives.
fn explain(ops: &[Op], refutation: &Refutation) -> Violation {
    let blocker = &ops[refutation.blocker];
    let ok_count = ops.iter().filter(|op| op.reply().is_some()).count();
    let placed = format!(
        "no linearization exists: at most {} of {ok_count} acknowledged operations can be \
         ordered before {} must take effect",
        refutation.ok_done,
        describe(blocker),
    );
    let expected = blocker.apply_to(&mut refutation.model.clone());
    let mut reason = match blocker.reply() {
        Some(actual) if !same_reply(&blocker.operation, actual, &expected) => format!(
            "{placed}; it returned {}, but the state there gives {}",
            describe_reply(&blocker.operation, actual, &expected),
            describe_reply(&blocker.operation, &expected, actual),
        ),
        _ => format!("{placed}, and no order of the operations concurrent with it fits"),
    };
    let concurrent = refutation.concurrent.iter().copied();
    let concurrent: Vec<usize> = concurrent
        .filter(|&id| conflicts(&blocker.operation, &ops[id].operation))
        .take(SLICE_NEIGHBOURS_MAX)
        .collect();
    let stuck: Vec<String> = concurrent
        .iter()
        .filter_map(|&id| stuck_reply(&ops[id], &refutation.model))
        .collect();
    if !stuck.is_empty() {
        reason += &format!(
            "; nor can the concurrent operations that might precede it: {}",
            stuck.join("; ")
        );
    }
    let mut shown = neighbours(ops, &refutation.path, refutation.blocker, &expected);
    shown.extend(concurrent);
    shown.sort_unstable();
    shown.dedup();
    Violation { reason, ops: shown }
}

/// If `op` is an `ok` whose reply disagrees with `model`, says so.
fn stuck_reply(op: &Op, model: &Model) -> Option<String> {
    let actual = op.reply()?;
    let expected = op.apply_to(&mut model.clone());
    if same_reply(&op.operation, actual, &expected) {
        return None;
    }
    Some(format!(
        "{} returned {}, where the state gives {}",
        describe(op),
        describe_reply(&op.operation, actual, &expected),
        describe_reply(&op.operation, &expected, actual),
    ))
}

// ---------------------------------------------------------------------------------------------
// Explanations.

/// The operation `id`, the last few operations before it (in `before`, oldest first) that
/// could change its reply, and the writes of any user or message on which its reply and the
/// expected one differ, whatever became of those writes.
fn neighbours(ops: &[Op], before: &[usize], id: usize, expected: &Reply) -> Vec<usize> {
    let op = &ops[id];
    let earlier = before.iter().rev().copied();
    let earlier = earlier.filter(|&w| conflicts(&op.operation, &ops[w].operation));
    let mut shown: Vec<usize> = earlier.take(SLICE_NEIGHBOURS_MAX).collect();
    if let Some(actual) = op.reply() {
        let sources = (0..ops.len()).filter(|&w| {
            w != id && explains_difference(&op.operation, &ops[w].operation, actual, expected)
        });
        shown.extend(sources.take(SLICE_NEIGHBOURS_MAX));
    }
    shown.push(id);
    shown.sort_unstable();
    shown.dedup();
    shown
}

/// Whether `writer` wrote a user or message that is in one of two replies to `reader` and
/// not in the other.
fn explains_difference(reader: &Operation, writer: &Operation, a: &Reply, b: &Reply) -> bool {
    match (reader, writer) {
        (
            Operation::FetchMessages { username, .. },
            Operation::SendMessage { from, to, message },
        ) => {
            let holds = |reply: &Reply| {
                let mut messages = reply.messages.iter();
                messages.any(|(f, t)| f == from && t == message)
            };
            to == username && holds(a) != holds(b)
        }
        (
            Operation::ListAccounts { .. },
            Operation::CreateAccount { username }
            | Operation::CreateAccountWithPassword { username, .. }
            | Operation::DeleteAccount { username },
        ) => a.users.contains(username) != b.users.contains(username),
        _ => false,
    }
}

/// Whether `writer` can change the reply to `reader`.
fn conflicts(reader: &Operation, writer: &Operation) -> bool {
    match writer {
        Operation::CreateAccount { username }
        | Operation::CreateAccountWithPassword { username, .. }
        | Operation::DeleteAccount { username } => mentions(reader, username),
        Operation::SendMessage { to, .. } => {
            matches!(reader, Operation::FetchMessages { username, .. } if username == to)
        }
        _ => false,
    }
}

/// Whether the reply to `operation` depends on whether `user` exists.
fn mentions(operation: &Operation, user: &str) -> bool {
    match operation {
        Operation::CreateAccount { username }
        | Operation::CreateAccountWithPassword { username, .. }
        | Operation::CheckAccount { username }
        | Operation::DeleteAccount { username }
        | Operation::FetchMessages { username, .. } => username == user,
        Operation::ListAccounts { pattern } => Pattern::new(pattern).matches(user),
        Operation::SendMessage { from, to, .. } => from == user || to == user,
    }
}

/// E.g. `fetch by process 3 at index 812 (user "u4" from id 1)`.
fn describe(op: &Op) -> String {
    let arguments = match &op.operation {
        Operation::CreateAccount { username }
        | Operation::CheckAccount { username }
        | Operation::DeleteAccount { username } => format!("user {username:?}"),
        Operation::CreateAccountWithPassword { username, .. } => {
            format!("user {username:?}, with a password")
        }
        Operation::ListAccounts { pattern } => format!("pattern {pattern:?}"),
        Operation::SendMessage { from, to, message } => {
            format!("{from:?} to {to:?}: {:?}", shorten(message))
        }
        Operation::FetchMessages {
            username,
            first_message_id,
        } => format!("user {username:?} from id {first_message_id}"),
    };
    let at = op
        .index
        .map_or(String::new(), |index| format!(" at index {}", index.0));
    let on = op.node.map_or(String::new(), |node| format!(" on {node}"));
    let name = op_name(&op.operation);
    let acting = match (&op.acting, op.forged_token) {
        (Some(principal), _) => format!(
            " as {:?} (created at {})",
            principal.username, principal.created.0
        ),
        (None, true) => " with a forged token".to_owned(),
        (None, false) => String::new(),
    };
    format!(
        "{name} by process {}{acting}{at}{on} ({arguments})",
        op.process
    )
}

/// `reply` in words: a list's users, and a fetch's messages unless `other`'s status differs
/// (then the status says enough).
fn describe_reply(operation: &Operation, reply: &Reply, other: &Reply) -> String {
    let status = reply.status.name();
    match operation {
        Operation::ListAccounts { .. } if reply.status == Status::Success => {
            format!("{status} with users {}", listed(&reply.users))
        }
        Operation::FetchMessages { .. } if reply.status == Status::Success => {
            let count = match reply.messages.len() {
                1 => "1 message".to_owned(),
                count => format!("{count} messages"),
            };
            match reply.status == other.status {
                true => format!("{count}: {}", listed(&reply.messages)),
                false => format!("{status} with {count}"),
            }
        }
        _ => status.to_owned(),
    }
}

/// The first few items, and how many more.
fn listed<T: fmt::Debug>(items: &[T]) -> String {
    let shown: Vec<String> = items
        .iter()
        .take(REASON_ITEMS_MAX)
        .map(|item| format!("{item:?}"))
        .collect();
    let more = items.len().saturating_sub(REASON_ITEMS_MAX);
    match more {
        0 => format!("[{}]", shown.join(", ")),
        _ => format!("[{}, and {more} more]", shown.join(", ")),
    }
}

/// A message cut for a reason line.
fn shorten(text: &str) -> String {
    const CHARS_MAX: usize = 40;
    match text.char_indices().nth(CHARS_MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// The history lines of the operations `ids`, in history order.
fn render_slice(history: &History, ops: &[Op], ids: &[usize]) -> String {
    let mut lines: Vec<usize> = ids
        .iter()
        .flat_map(|&id| std::iter::once(ops[id].invoke_event).chain(ops[id].complete_event))
        .collect();
    lines.sort_unstable();
    lines.dedup();
    let slice = History {
        events: lines.iter().map(|&l| history.events[l].clone()).collect(),
        limits: history.limits,
    };
    String::from_utf8_lossy(&slice.to_json_lines()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Acting;
    use raftchat::chat::{Chat, Command, Outcome as ChatOutcome};
    use raftchat::types::ClientId;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const BUDGET: usize = 200_000;

    // -- Operations and replies, by name.

    fn create(user: &str) -> Operation {
        Operation::CreateAccount {
            username: user.into(),
        }
    }

    fn check_account(user: &str) -> Operation {
        Operation::CheckAccount {
            username: user.into(),
        }
    }

    fn delete(user: &str) -> Operation {
        Operation::DeleteAccount {
            username: user.into(),
        }
    }

    fn list(pattern: &str) -> Operation {
        Operation::ListAccounts {
            pattern: pattern.into(),
        }
    }

    fn send(from: &str, to: &str, message: &str) -> Operation {
        Operation::SendMessage {
            from: from.into(),
            to: to.into(),
            message: message.into(),
        }
    }

    fn fetch(user: &str, first_message_id: u64) -> Operation {
        Operation::FetchMessages {
            username: user.into(),
            first_message_id,
        }
    }

    fn status(status: Status) -> Reply {
        Reply::new(status)
    }

    fn success() -> Reply {
        Reply::new(Status::Success)
    }

    fn users(names: &[&str]) -> Reply {
        Reply::with_users(names.iter().map(|n| n.to_string()).collect())
    }

    fn messages(pairs: &[(&str, &str)]) -> Reply {
        messages_from(1, pairs)
    }

    fn messages_from(first_id: u64, pairs: &[(&str, &str)]) -> Reply {
        let pairs = pairs
            .iter()
            .map(|&(from, text)| (from.to_owned(), text.to_owned()));
        Reply::with_messages(first_id, pairs.collect())
    }

    // -- Histories written by hand: one event per millisecond, in call order.

    #[derive(Default)]
    struct Script {
        history: History,
    }

    impl Script {
        fn push(&mut self, process: u32, completion: Option<Completion>, operation: &Operation) {
            let time = Duration::from_millis(self.history.events.len() as u64 + 1);
            self.history.events.push(HistoryEvent {
                process,
                completion,
                operation: operation.clone(),
                reply: None,
                index: None,
                node: None,
                command_id: None,
                acting: None,
                time,
            });
        }

        /// Like `call`, acting as `principal` (a genuine token's, or a forged one's).
        fn call_as(
            &mut self,
            process: u32,
            acting: (&str, u64, bool),
            operation: &Operation,
            reply: Reply,
            index: u64,
        ) -> &mut Script {
            self.invoke(process, operation);
            let (username, created, genuine) = acting;
            self.history.events.last_mut().expect("just pushed").acting = Some(Acting {
                principal: Principal {
                    username: username.into(),
                    created: LogIndex(created),
                },
                genuine,
            });
            self.ok(process, operation, reply, index)
        }

        fn invoke(&mut self, process: u32, operation: &Operation) -> &mut Script {
            self.push(process, None, operation);
            self
        }

        fn ok(
            &mut self,
            process: u32,
            operation: &Operation,
            reply: Reply,
            index: u64,
        ) -> &mut Script {
            self.push(process, Some(Completion::Ok), operation);
            let event = self.history.events.last_mut().expect("just pushed");
            event.reply = Some(reply);
            event.index = Some(LogIndex(index));
            self
        }

        fn end(
            &mut self,
            process: u32,
            completion: Completion,
            operation: &Operation,
            index: Option<u64>,
        ) -> &mut Script {
            self.push(process, Some(completion), operation);
            self.history.events.last_mut().expect("just pushed").index = index.map(LogIndex);
            self
        }

        /// An invocation answered at once: a sequential step.
        fn call(
            &mut self,
            process: u32,
            operation: &Operation,
            reply: Reply,
            index: u64,
        ) -> &mut Script {
            self.invoke(process, operation)
                .ok(process, operation, reply, index)
        }
    }

    fn create_protected(user: &str) -> Operation {
        Operation::CreateAccountWithPassword {
            username: user.into(),
            credential: raftchat::chat::Credential {
                salt: [0; 16],
                hash: [0; 32],
                memory_kib: 8,
                iterations: 1,
            },
        }
    }

    #[test]
    fn only_a_genuine_token_of_the_owner_acts_on_a_protected_account() {
        let mut script = Script::default();
        script
            .call(0, &create_protected("carol"), success(), 1)
            .call(0, &create("bob"), success(), 2)
            .call(
                1,
                &send("carol", "bob", "no"),
                status(Status::AuthFailed),
                3,
            )
            .call_as(
                1,
                ("bob", 2, true),
                &send("carol", "bob", "no"),
                status(Status::AuthFailed),
                4,
            )
            .call_as(
                1,
                ("carol", 1, false),
                &send("carol", "bob", "no"),
                status(Status::AuthFailed),
                5,
            )
            .call_as(
                2,
                ("carol", 1, true),
                &send("carol", "bob", "yes"),
                success(),
                6,
            )
            .call_as(
                2,
                ("carol", 1, true),
                &fetch("carol", 1),
                status(Status::NoElement),
                6,
            )
            .call_as(
                2,
                ("carol", 1, true),
                &send("bob", "carol", "open"),
                success(),
                7,
            )
            .call(1, &fetch("carol", 1), status(Status::AuthFailed), 7)
            .call(1, &delete("carol"), status(Status::AuthFailed), 8)
            .call_as(2, ("carol", 1, true), &delete("carol"), success(), 9);
        assert_linearizable_both_ways(&script.history);
    }

    #[test]
    fn a_token_of_an_earlier_account_of_the_name_acts_as_nobody() {
        let mut script = Script::default();
        script
            .call(0, &create_protected("carol"), success(), 1)
            .call_as(2, ("carol", 1, true), &delete("carol"), success(), 2)
            .call(0, &create_protected("carol"), success(), 3)
            .call_as(
                2,
                ("carol", 1, true),
                &fetch("carol", 1),
                status(Status::AuthFailed),
                3,
            )
            .call_as(
                2,
                ("carol", 3, true),
                &fetch("carol", 1),
                status(Status::NoElement),
                3,
            );
        // With the indexes, that is: the search without them cannot tell the two accounts
        // apart, and lets any genuine token naming the user act.
        assert!(matches!(
            check(&script.history, BUDGET),
            Verdict::Linearizable { .. }
        ));
        let searched = check_search_only(&script.history, BUDGET);
        assert!(
            matches!(searched, Verdict::Linearizable { .. }),
            "{searched}"
        );
    }

    #[test]
    fn a_forged_token_that_got_in_is_caught() {
        let mut script = Script::default();
        script
            .call(0, &create_protected("carol"), success(), 1)
            .call_as(
                1,
                ("carol", 1, false),
                &fetch("carol", 1),
                status(Status::NoElement),
                1,
            );
        assert_refuted_both_ways(&script.history, "fetch");
    }

    #[test]
    fn a_token_of_an_earlier_account_of_the_name_that_got_in_is_caught() {
        let mut script = Script::default();
        script
            .call(0, &create_protected("carol"), success(), 1)
            .call(0, &delete("carol"), status(Status::AuthFailed), 2)
            .call(0, &create("dave"), success(), 3)
            .call_as(
                1,
                ("carol", 7, true),
                &send("carol", "dave", "x"),
                success(),
                4,
            );
        assert_refuted_both_ways(&script.history, "send");
    }

    /// The same history with every index erased, so that `check` must search.
    fn without_indexes(history: &History) -> History {
        let mut events = history.events.clone();
        events.iter_mut().for_each(|event| event.index = None);
        History {
            events,
            limits: ChatLimits::default(),
        }
    }

    fn assert_linearizable_both_ways(history: &History) {
        let fast = check(history, BUDGET);
        assert!(
            matches!(
                fast,
                Verdict::Linearizable {
                    method: "log order",
                    ..
                }
            ),
            "{fast}"
        );
        let searched = check_search_only(history, BUDGET);
        assert!(
            matches!(
                searched,
                Verdict::Linearizable {
                    method: "search",
                    ..
                }
            ),
            "{searched}"
        );
        assert_eq!(check(&without_indexes(history), BUDGET), searched);
    }

    /// Both paths refute `history` and name `naming` in their reasons; returns the two verdicts.
    fn assert_refuted_both_ways(history: &History, naming: &str) -> [(String, String); 2] {
        [check(history, BUDGET), check_search_only(history, BUDGET)].map(|verdict| {
            let Verdict::NotLinearizable { reason, slice, .. } = verdict else {
                panic!("expected a violation naming {naming}, got {verdict}");
            };
            assert!(
                reason.contains(naming),
                "{reason:?} does not name {naming:?}"
            );
            assert!(!slice.is_empty() && slice.lines().count() <= 16, "{slice}");
            (reason, slice)
        })
    }

    // -- The model, against a table of every status it can give and every limit.

    #[test]
    fn model_gives_every_status_and_honours_every_limit() {
        let name_max = "n".repeat(USERNAME_CHARS_MAX);
        let name_over = "n".repeat(USERNAME_CHARS_MAX + 1);
        let wide_max = "é".repeat(USERNAME_CHARS_MAX);
        let text_max = "é".repeat(MESSAGE_CHARS_MAX);
        let text_over = "m".repeat(MESSAGE_CHARS_MAX + 1);
        let pattern_max = "*".repeat(PATTERN_CHARS_MAX);
        let pattern_over = "*".repeat(PATTERN_CHARS_MAX + 1);
        let table: Vec<(Operation, Reply)> = vec![
            (check_account("a"), status(Status::AccountNotExist)),
            (create(""), status(Status::InvalidUsername)),
            (create(&name_over), status(Status::InvalidUsername)),
            (create("bell\u{7}"), status(Status::InvalidUsername)),
            (create("line\n"), status(Status::InvalidUsername)),
            (create(&name_max), success()),
            (create(&wide_max), success()),
            (create("a"), success()),
            (create("a"), status(Status::GeneralError)),
            (create("b"), success()),
            (check_account("a"), success()),
            (check_account(&name_over), status(Status::AccountNotExist)),
            (list(&pattern_max), users(&[&name_max, &wide_max, "a", "b"])),
            (list(&pattern_over), status(Status::GeneralError)),
            (list("[ab]"), users(&["a", "b"])),
            (list("x*"), users(&[])),
            (send("x", "a", "hi"), status(Status::AccountNotExist)),
            (send("a", "x", "hi"), status(Status::AccountNotExist)),
            (send("x", "y", &text_over), status(Status::MessageTooLong)),
            (send("a", "x", &text_over), status(Status::MessageTooLong)),
            (send("a", "b", &text_over), status(Status::MessageTooLong)),
            (send("a", "b", &text_max), success()),
            (send("b", "b", "self"), success()),
            (fetch("x", 1), status(Status::AccountNotExist)),
            (fetch("x", 0), status(Status::GeneralError)),
            (fetch("b", 0), status(Status::GeneralError)),
            (fetch("a", 1), status(Status::NoElement)),
            (fetch("b", 3), status(Status::NoElement)),
            (fetch("b", u64::MAX), status(Status::NoElement)),
            (fetch("b", 1), messages(&[("a", &text_max), ("b", "self")])),
            (fetch("b", 2), messages_from(2, &[("b", "self")])),
            (delete("x"), status(Status::AccountNotExist)),
            (delete("b"), success()),
            (delete("b"), status(Status::AccountNotExist)),
            (fetch("b", 1), status(Status::AccountNotExist)),
            (create("b"), success()),
            (fetch("b", 1), status(Status::NoElement)),
            (list("?"), users(&["a", "b"])),
            (delete("a"), success()),
            (create("a"), success()),
            (list("?"), users(&["b", "a"])),
            (create_protected("p"), success()),
            (fetch("p", 1), status(Status::AuthFailed)),
            (send("p", "a", "as p"), status(Status::AuthFailed)),
            (delete("p"), status(Status::AuthFailed)),
            (send("a", "p", "to p"), success()),
        ];
        let mut model = Model::new();
        let mut seen = Vec::new();
        for (row, (operation, expected)) in table.iter().enumerate() {
            let reply = model.apply(operation);
            assert_eq!(&reply, expected, "row {row}: {operation:?}");
            seen.push(reply.status);
        }
        // The state machine never answers with the other three (BRIEF §1: the replica does).
        for status in Status::ALL {
            let never = [
                Status::OperationNotSupported,
                Status::MessageIdTooLarge,
                Status::ServerError,
            ];
            assert_eq!(seen.contains(&status), !never.contains(&status), "{status}");
        }
    }

    #[test]
    fn model_fetch_returns_at_most_fetch_messages_max() {
        let mut model = Model::new();
        model.apply(&create("a"));
        for k in 0..=FETCH_MESSAGES_MAX {
            assert_eq!(model.apply(&send("a", "a", &k.to_string())), success());
        }
        let page = model.apply(&fetch("a", 1));
        assert_eq!(page.messages.len(), FETCH_MESSAGES_MAX);
        assert_eq!(page.messages[0].1, "0");
        let rest = model.apply(&fetch("a", FETCH_MESSAGES_MAX as u64 + 1));
        let next = FETCH_MESSAGES_MAX as u64 + 1;
        assert_eq!(
            rest,
            messages_from(next, &[("a", &FETCH_MESSAGES_MAX.to_string())])
        );
    }

    #[test]
    fn model_drops_the_oldest_messages_beyond_its_limits_and_keeps_ids() {
        let limits = ChatLimits {
            inbox_messages_max: 2,
            retained_bytes_max: raftchat::limits::RETAINED_BYTES_MIN,
        };
        let mut model = Model::with_limits(limits);
        model.apply(&create("a"));
        model.apply(&create("b"));
        for k in 1..=3 {
            assert_eq!(model.apply(&send("a", "b", &format!("m{k}"))), success());
        }
        let kept = messages_from(2, &[("a", "m2"), ("a", "m3")]);
        assert_eq!(model.apply(&fetch("b", 1)), kept);
        assert_eq!(model.apply(&fetch("b", 4)), status(Status::NoElement));
        // Past the byte bound the oldest message anywhere goes: b's m1 first.
        let limits = ChatLimits {
            inbox_messages_max: 1000,
            ..limits
        };
        let mut model = Model::with_limits(limits);
        model.apply(&create("a"));
        model.apply(&create("b"));
        model.apply(&send("a", "b", "m1"));
        let long = "x".repeat(400);
        let fits = raftchat::limits::RETAINED_BYTES_MIN / charge("b", &long);
        for _ in 0..fits {
            model.apply(&send("b", "a", &long));
        }
        assert_eq!(model.apply(&fetch("b", 1)), messages(&[("a", "m1")]));
        // One more: m1 goes, and so does a's first, to get back under the bound.
        model.apply(&send("b", "a", &long));
        assert_eq!(model.apply(&fetch("b", 1)), status(Status::NoElement));
        assert_eq!(model.apply(&fetch("a", 1)).first_message_id, 2);
        // The same history through the real state machine gives the same replies.
        let mut chat = raftchat::chat::Chat::with_limits(limits);
        let mut model = Model::with_limits(limits);
        let mut index = 1;
        let register = chat.apply(LogIndex(index), &Command::RegisterClient);
        let ChatOutcome::Registered(client_id) = register else {
            panic!("{register:?}")
        };
        let script = [create("a"), create("b"), send("a", "b", "m1")]
            .into_iter()
            .chain((0..60).map(|k| send("b", "a", &"y".repeat(k * 5))))
            .chain([fetch("a", 1), fetch("b", 1)]);
        for (sequence, operation) in script.enumerate() {
            index += 1;
            let command = Command::Client {
                client_id,
                sequence: sequence as u64 + 1,
                operation: operation.clone(),
            };
            let ChatOutcome::Replied { reply, .. } = chat.apply(LogIndex(index), &command) else {
                panic!("not applied")
            };
            assert_eq!(reply, model.apply(&operation), "{operation:?}");
        }
    }

    #[test]
    fn model_refuses_accounts_beyond_accounts_max() {
        let mut model = Model::new();
        for k in 0..ACCOUNTS_MAX {
            assert_eq!(model.apply(&create(&format!("u{k}"))), success());
        }
        assert_eq!(
            model.apply(&create("one-more")),
            status(Status::GeneralError)
        );
        assert_eq!(model.apply(&delete("u0")), success());
        assert_eq!(model.apply(&create("one-more")), success());
    }

    /// A random operation over a small pool, now and then invalid or over a limit.
    fn random_operation(rng: &mut ChaCha8Rng, serial: &mut u64) -> Operation {
        const POOL: [&str; 6] = ["a", "b", "c", "d", "", "xxxxxxxxxxxxxxxxxxxxx"];
        const PATTERNS: [&str; 6] = ["*", "a*", "[ab]", "?", "[!a]*", "x*"];
        let user = |rng: &mut ChaCha8Rng| match rng.gen_range(0..20) {
            0 => POOL[rng.gen_range(4..POOL.len())],
            _ => POOL[rng.gen_range(0..4)],
        };
        *serial += 1;
        match rng.gen_range(0..12) {
            0 | 1 => create(user(rng)),
            2 => check_account(user(rng)),
            3 => delete(user(rng)),
            4 if rng.gen_range(0..10) == 0 => list(&"*".repeat(PATTERN_CHARS_MAX + 1)),
            4 => list(PATTERNS[rng.gen_range(0..PATTERNS.len())]),
            5..=8 if rng.gen_range(0..20) == 0 => {
                send(user(rng), user(rng), &"m".repeat(MESSAGE_CHARS_MAX + 1))
            }
            5..=8 => send(user(rng), user(rng), &format!("m{serial}")),
            _ => fetch(user(rng), rng.gen_range(0..5)),
        }
    }

    /// Runs `operations` through the real state machine, one session; the reply and log index
    /// of each.
    fn execute(operations: &[Operation]) -> Vec<(Reply, u64)> {
        let mut chat = Chat::new();
        let registered = chat.apply(LogIndex(1), &Command::RegisterClient);
        assert_eq!(registered, ChatOutcome::Registered(ClientId(1)));
        let mut results = Vec::new();
        for (k, operation) in operations.iter().enumerate() {
            let index = k as u64 + 2;
            let command = Command::Client {
                client_id: ClientId(1),
                sequence: k as u64 + 1,
                operation: operation.clone(),
            };
            let ChatOutcome::Replied { reply, .. } = chat.apply(LogIndex(index), &command) else {
                panic!("chat refused command {k}");
            };
            results.push((reply, index));
        }
        results
    }

    #[test]
    fn model_agrees_with_the_chat_state_machine_on_random_operations() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut serial = 0;
        let operations: Vec<Operation> = (0..2000)
            .map(|_| random_operation(&mut rng, &mut serial))
            .collect();
        let results = execute(&operations);
        let mut model = Model::new();
        let mut statuses = HashSet::<u16>::new();
        for (operation, (reply, _)) in operations.iter().zip(&results) {
            assert_eq!(&model.apply(operation), reply, "{operation:?}");
            statuses.insert(reply.status.code());
        }
        assert_eq!(
            statuses.len(),
            6,
            "every status the state machine gives: {statuses:?}"
        );
    }

    // -- Pairing invocations with completions.

    #[test]
    fn operations_pair_each_invocation_with_its_process_next_completion() {
        let mut script = Script::default();
        script
            .invoke(1, &create("a"))
            .invoke(2, &create("b"))
            .ok(2, &create("b"), success(), 3)
            .ok(1, &create("a"), success(), 2)
            .invoke(1, &check_account("a"))
            .end(1, Completion::Fail, &check_account("a"), None)
            .invoke(2, &send("b", "a", "x"));
        let ops = operations(&script.history).expect("well formed");
        assert_eq!(ops.len(), 4);
        assert_eq!((ops[0].process, ops[0].complete_event), (1, Some(3)));
        assert_eq!(ops[0].completed, Some(Duration::from_millis(4)));
        assert_eq!(ops[1].index, Some(LogIndex(3)));
        assert_eq!(ops[2].outcome, Outcome::Fail);
        assert_eq!(
            (ops[3].outcome.clone(), ops[3].completed),
            (Outcome::Info, None)
        );
    }

    #[test]
    fn malformed_histories_are_undecided() {
        let mut twice = Script::default();
        twice.invoke(1, &create("a")).invoke(1, &create("b"));
        let mut orphan = Script::default();
        orphan.ok(1, &create("a"), success(), 2);
        let mut unanswered = Script::default();
        unanswered
            .invoke(1, &create("a"))
            .end(1, Completion::Ok, &create("a"), Some(2));
        let mut mismatched = Script::default();
        mismatched
            .invoke(1, &create("a"))
            .ok(1, &create("b"), success(), 2);
        for script in [twice, orphan, unanswered, mismatched] {
            let verdict = check(&script.history, BUDGET);
            let malformed = |reason: &str| reason.starts_with("malformed history: line ");
            assert!(
                matches!(&verdict, Verdict::Undecided { reason } if malformed(reason)),
                "{verdict}"
            );
        }
    }

    // -- Valid histories pass both ways.

    #[test]
    fn sequential_history_is_linearizable_both_ways() {
        let mut script = Script::default();
        script
            .call(1, &create("a"), success(), 2)
            .call(2, &create("b"), success(), 3)
            .call(1, &send("a", "b", "hi"), success(), 4)
            .call(2, &fetch("b", 1), messages(&[("a", "hi")]), 5)
            .call(1, &list("*"), users(&["a", "b"]), 7)
            .call(2, &delete("a"), success(), 9)
            .call(1, &check_account("a"), status(Status::AccountNotExist), 10);
        assert_linearizable_both_ways(&script.history);
        let verdict = check(&script.history, BUDGET);
        assert_eq!(
            verdict.to_string(),
            "linearizable: 7 operations, by log order"
        );
    }

    #[test]
    fn concurrent_overlapping_history_is_linearizable_both_ways() {
        // The fetch overlaps the send and saw it; the check overlaps the delete and did not.
        let mut script = Script::default();
        script
            .call(1, &create("a"), success(), 2)
            .invoke(1, &send("a", "a", "hi"))
            .invoke(2, &fetch("a", 1))
            .invoke(3, &check_account("a"))
            .ok(2, &fetch("a", 1), messages(&[("a", "hi")]), 4)
            .invoke(2, &delete("a"))
            .ok(1, &send("a", "a", "hi"), success(), 3)
            .ok(2, &delete("a"), success(), 6)
            .ok(3, &check_account("a"), success(), 5);
        assert_linearizable_both_ways(&script.history);
    }

    #[test]
    fn info_operations_that_did_and_did_not_take_effect_are_linearizable_both_ways() {
        let mut script = Script::default();
        script
            .call(1, &create("a"), success(), 2)
            // Timed out, yet applied: the fetch sees it.
            .invoke(1, &send("a", "a", "took"))
            .end(1, Completion::Info, &send("a", "a", "took"), Some(3))
            // Timed out and never applied.
            .invoke(1, &send("a", "a", "lost"))
            .end(1, Completion::Info, &send("a", "a", "lost"), None)
            // Failed: never applied.
            .invoke(1, &create("b"))
            .end(1, Completion::Fail, &create("b"), None)
            .call(2, &fetch("a", 1), messages(&[("a", "took")]), 5)
            .call(2, &check_account("b"), status(Status::AccountNotExist), 6)
            // Still open at the end, and never applied.
            .invoke(3, &send("a", "a", "open"))
            .call(2, &list("*"), users(&["a"]), 7);
        assert_linearizable_both_ways(&script.history);
    }

    #[test]
    fn an_open_invocation_may_take_effect_after_its_invocation_in_the_search() {
        // The create never completed; the search may place it before the list that saw it.
        let mut script = Script::default();
        script
            .call(1, &create("a"), success(), 2)
            .invoke(3, &create("c"))
            .call(2, &list("*"), users(&["a", "c"]), 4);
        let searched = check_search_only(&script.history, BUDGET);
        assert!(
            matches!(searched, Verdict::Linearizable { .. }),
            "{searched}"
        );
        // Not before its invocation, though.
        let mut early = Script::default();
        early
            .call(1, &create("a"), success(), 2)
            .call(2, &list("*"), users(&["a", "c"]), 4)
            .invoke(3, &create("c"));
        assert_refuted_both_ways(&early.history, "list by process 2");
    }

    // -- Invalid histories fail both ways, naming the operation.

    #[test]
    fn stale_read_is_refuted_both_ways() {
        // The send completed before the fetch began, yet the fetch misses it.
        let mut script = Script::default();
        script
            .call(1, &create("a"), success(), 2)
            .call(1, &send("a", "a", "one"), success(), 3)
            .call(1, &send("a", "a", "two"), success(), 4)
            .call(2, &fetch("a", 1), messages(&[("a", "one")]), 5);
        let [(fast, slice), (searched, _)] =
            assert_refuted_both_ways(&script.history, "fetch by process 2");
        assert_eq!(
            fast,
            "fetch by process 2 at index 5 (user \"a\" from id 1) returned 1 message: \
             [(\"a\", \"one\")], but the log order gives 2 messages: \
             [(\"a\", \"one\"), (\"a\", \"two\")]"
        );
        assert!(searched.contains("returned 1 message:"), "{searched}");
        assert!(
            slice.contains("\"two\""),
            "the slice shows the missed send: {slice}"
        );
    }

    #[test]
    fn lost_acknowledged_write_is_refuted_both_ways() {
        let mut script = Script::default();
        script
            .call(1, &create("a"), success(), 2)
            .call(1, &create("b"), success(), 3)
            .call(2, &check_account("a"), status(Status::AccountNotExist), 4);
        let [(fast, slice), _] = assert_refuted_both_ways(&script.history, "check by process 2");
        assert!(fast.ends_with("returned ACCOUNT_NOT_EXIST, but the log order gives SUCCESS"));
        assert_eq!(
            slice.lines().count(),
            4,
            "the check and the create of a only: {slice}"
        );
    }

    #[test]
    fn duplicated_send_is_refuted_both_ways() {
        let mut script = Script::default();
        script
            .call(1, &create("a"), success(), 2)
            .call(1, &send("a", "a", "once"), success(), 3)
            .call(
                2,
                &fetch("a", 1),
                messages(&[("a", "once"), ("a", "once")]),
                4,
            );
        assert_refuted_both_ways(&script.history, "fetch by process 2");
    }

    #[test]
    fn failed_operation_that_took_effect_is_refuted() {
        let mut with_index = Script::default();
        with_index
            .call(1, &create("a"), success(), 2)
            .invoke(1, &send("a", "a", "ghost"))
            .end(1, Completion::Fail, &send("a", "a", "ghost"), Some(3));
        let verdict = check(&with_index.history, BUDGET);
        let Verdict::NotLinearizable { reason, slice, .. } = verdict else {
            panic!("{verdict}");
        };
        assert!(reason.starts_with("a failed operation took effect: send by process 1"));
        assert_eq!(slice.lines().count(), 2);
        // Seen by a later fetch, it is refuted by both paths, with or without its index.
        with_index.call(2, &fetch("a", 1), messages(&[("a", "ghost")]), 4);
        let [(fast, _), (searched, _)] =
            assert_refuted_both_ways(&with_index.history, "by process");
        assert!(fast.starts_with("a failed operation took effect: send by process 1"));
        assert!(searched.contains("before fetch by process 2"), "{searched}");
        with_index.history.events[3].index = None;
        let [(fast, slice), (searched, _)] =
            assert_refuted_both_ways(&with_index.history, "fetch by process 2");
        assert!(
            fast.contains("but the log order gives NO_ELEMENT"),
            "{fast}"
        );
        assert!(
            searched.contains("the state there gives NO_ELEMENT"),
            "{searched}"
        );
        assert!(
            slice.contains("\"fail\""),
            "the slice shows the failed send: {slice}"
        );
    }

    /// Reads served without the log share the index of the state they saw: they go after the
    /// write at that index, and may complete in any order among themselves.
    #[test]
    fn reads_share_the_index_of_the_state_they_saw() {
        let mut script = Script::default();
        script
            .call(1, &create("a"), success(), 5)
            .invoke(2, &check_account("a"))
            .invoke(3, &check_account("a"))
            .ok(3, &check_account("a"), success(), 5)
            .ok(2, &check_account("a"), success(), 5)
            .call(1, &create("b"), success(), 6)
            .call(3, &check_account("b"), success(), 6);
        let verdict = check(&script.history, BUDGET);
        assert!(
            matches!(
                verdict,
                Verdict::Linearizable {
                    method: "log order",
                    ..
                }
            ),
            "{verdict}"
        );
    }

    /// A read served from a state older than a write that completed before it was invoked (a
    /// deposed leader's, say) is refuted, naming the node that served it, when its reply
    /// shows it; when its reply is the same in a state it may have seen, the search accepts it.
    #[test]
    fn a_stale_read_is_refuted_only_when_its_reply_shows_it() {
        let mut script = Script::default();
        script.call(1, &create("a"), success(), 5).call(
            2,
            &check_account("a"),
            status(Status::AccountNotExist),
            4,
        );
        script.history.events[3].node = Some(raftchat::types::NodeId(3));
        let Verdict::NotLinearizable { reason, at, .. } = check(&script.history, BUDGET) else {
            panic!("a stale read passed");
        };
        assert!(
            reason.contains("check by process 2 at index 4 on n3"),
            "{reason}"
        );
        assert_eq!(
            at,
            Duration::from_millis(4),
            "stamped at the stale read's completion"
        );
        let mut harmless = Script::default();
        harmless.call(1, &create("a"), success(), 5).call(
            2,
            &check_account("b"),
            status(Status::AccountNotExist),
            4,
        );
        let verdict = check(&harmless.history, BUDGET);
        assert!(
            matches!(verdict, Verdict::Linearizable { method, .. } if method.starts_with("search")),
            "{verdict}"
        );
    }

    #[test]
    fn real_time_inversion_by_indexes_is_refuted_both_ways() {
        // The check was invoked after the create completed, yet the log puts it first, where
        // its reply is right: only the real-time order exposes it.
        let mut script = Script::default();
        script.call(1, &create("a"), success(), 5).call(
            2,
            &check_account("a"),
            status(Status::AccountNotExist),
            4,
        );
        let [(fast, slice), _] = assert_refuted_both_ways(&script.history, "check by process 2");
        assert!(fast.starts_with("real-time order broken: create by process 1 at index 5"));
        assert_eq!(slice.lines().count(), 4);
    }

    #[test]
    fn two_operations_at_one_index_are_refuted() {
        let mut script = Script::default();
        script
            .call(1, &create("a"), success(), 2)
            .call(2, &create("b"), success(), 2);
        let verdict = check(&script.history, BUDGET);
        assert!(
            matches!(&verdict, Verdict::NotLinearizable { reason, .. }
                if reason.starts_with("two operations took effect at one index")),
            "{verdict}"
        );
    }

    #[test]
    fn check_searches_when_an_ok_lacks_its_index() {
        let mut script = Script::default();
        script
            .call(1, &create("a"), success(), 2)
            .call(2, &check_account("a"), success(), 3);
        script.history.events[3].index = None;
        let verdict = check(&script.history, BUDGET);
        assert_eq!(verdict.to_string(), "linearizable: 2 operations, by search");
    }

    // -- Random histories: a real sequential execution, interleaved.

    /// A concurrent history whose linearization is `operations` in order, as executed by the
    /// real state machine: each operation takes effect at an instant inside its window. Some
    /// become `info` (applied, index known), and failed and lost operations are mixed in.
    fn random_history(rng: &mut ChaCha8Rng, length: usize, processes: u32) -> History {
        let mut serial = 0;
        let operations: Vec<Operation> = (0..length)
            .map(|_| random_operation(rng, &mut serial))
            .collect();
        let results = execute(&operations);
        let mut builder = Interleaving::new(processes);
        for (k, (operation, (reply, index))) in operations.iter().zip(results).enumerate() {
            let instant = 1_000 * (k as u64 + 1);
            if rng.gen_range(0..10) == 0 {
                let ghost = random_operation(rng, &mut serial);
                let completion = [Completion::Fail, Completion::Info][rng.gen_range(0..2)];
                builder.place(rng, instant - 500, &ghost, (completion, None, None));
            }
            let outcome = match rng.gen_range(0..8) {
                0 => (Completion::Info, None, Some(index)),
                _ => (Completion::Ok, Some(reply), Some(index)),
            };
            builder.place(rng, instant, operation, outcome);
        }
        builder.finish(rng)
    }

    /// Places operations on processes so that each process has one open at a time.
    struct Interleaving {
        /// Per process: when it is free again, and its last completion event.
        free_at: Vec<(u64, Option<usize>)>,
        events: Vec<(u64, HistoryEvent)>,
    }

    type Ending = (Completion, Option<Reply>, Option<u64>);

    impl Interleaving {
        fn new(processes: u32) -> Interleaving {
            Interleaving {
                free_at: vec![(0, None); processes as usize],
                events: Vec::new(),
            }
        }

        /// Places `operation` on some process with a window around `instant`.
        fn place(
            &mut self,
            rng: &mut ChaCha8Rng,
            instant: u64,
            operation: &Operation,
            ending: Ending,
        ) {
            let mut order: Vec<usize> = (0..self.free_at.len()).collect();
            order.shuffle(rng);
            let process = order.into_iter().find(|&p| self.free_at[p].0 + 1 < instant);
            let process = process.unwrap_or_else(|| {
                self.free_at.push((0, None));
                self.free_at.len() - 1
            });
            let invoked =
                (instant.saturating_sub(rng.gen_range(1..2_500))).max(self.free_at[process].0 + 1);
            let completed = instant + rng.gen_range(1..2_500);
            let event = |time: u64, completion: Option<Completion>| HistoryEvent {
                process: process as u32,
                completion,
                operation: operation.clone(),
                reply: None,
                index: None,
                node: None,
                command_id: None,
                acting: None,
                time: Duration::from_nanos(time),
            };
            self.events.push((invoked, event(invoked, None)));
            let (completion, reply, index) = ending;
            let mut end = event(completed, Some(completion));
            (end.reply, end.index) = (reply, index.map(LogIndex));
            self.free_at[process] = (completed, Some(self.events.len()));
            self.events.push((completed, end));
        }

        /// The history, with some processes' last `info` left open instead.
        fn finish(mut self, rng: &mut ChaCha8Rng) -> History {
            let mut open: Vec<usize> = self.free_at.iter().filter_map(|&(_, last)| last).collect();
            open.retain(|&e| {
                self.events[e].1.completion == Some(Completion::Info)
                    && self.events[e].1.index.is_none()
                    && rng.gen_bool(0.5)
            });
            open.sort_unstable();
            for &e in open.iter().rev() {
                self.events.remove(e);
            }
            self.events.sort_by_key(|&(time, _)| time);
            History {
                events: self.events.into_iter().map(|(_, event)| event).collect(),
                limits: ChatLimits::default(),
            }
        }
    }

    /// Changes one `ok` reply so that it differs from what was recorded.
    fn mutate(rng: &mut ChaCha8Rng, history: &mut History) {
        let oks: Vec<usize> = (0..history.events.len())
            .filter(|&e| history.events[e].completion == Some(Completion::Ok))
            .collect();
        let event = &mut history.events[*oks.choose(rng).expect("some ok")];
        let original = event.reply.clone().expect("an ok has a reply");
        let mut reply = original.clone();
        while same_reply(&event.operation, &reply, &original) {
            reply = original.clone();
            match rng.gen_range(0..4) {
                0 => {
                    let statuses = [0, 1, 101, 102, 103, 199].map(Status::from_code);
                    reply = Reply::new(statuses.choose(rng).copied().flatten().expect("a code"));
                }
                1 => reply
                    .users
                    .push(["a", "b", "c", "d"].choose(rng).expect("").to_string()),
                2 if !reply.messages.is_empty() => {
                    let k = rng.gen_range(0..reply.messages.len());
                    let message = reply.messages.remove(k);
                    if rng.gen_bool(0.5) {
                        reply.messages.insert(0, message.clone());
                        reply.messages.push(message);
                    }
                }
                _ => reply.messages.push(("a".into(), "m0".into())),
            }
        }
        event.reply = Some(reply);
    }

    /// Whether `order` is a linearization of `ops`: every `ok` once, no `fail`, each after
    /// everything that completed before its invocation, and every `ok` reply reproduced.
    fn is_linearization(ops: &[Op], order: &[usize]) -> bool {
        let mut placed = vec![false; ops.len()];
        let mut model = Model::new();
        for (position, &id) in order.iter().enumerate() {
            let op = &ops[id];
            let later = &order[position + 1..];
            let overtaken = later.iter().any(|&l| {
                ops[l].completed_at().is_some_and(|c| c < op.invoked_at())
                    && ops[l].reply().is_some()
            });
            let reply = model.apply(&op.operation);
            let mismatch = op
                .reply()
                .is_some_and(|r| !same_reply(&op.operation, r, &reply));
            if placed[id] || op.outcome == Outcome::Fail || overtaken || mismatch {
                return false;
            }
            placed[id] = true;
        }
        (0..ops.len()).all(|id| placed[id] || op_is_optional(&ops[id]))
    }

    fn op_is_optional(op: &Op) -> bool {
        op.reply().is_none()
    }

    #[test]
    fn log_order_and_search_agree_on_random_histories_and_their_mutants() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let (mut refuted, mut reordered) = (0, 0);
        for round in 0..300 {
            let length = rng.gen_range(4..24);
            let processes = rng.gen_range(1..5);
            let mut history = random_history(&mut rng, length, processes);
            assert_linearizable_both_ways(&history);
            mutate(&mut rng, &mut history);
            let fast = check(&history, BUDGET);
            let ops = operations(&history).expect("well formed");
            match search(&ops, BUDGET, ChatLimits::default()) {
                SearchResult::Refuted(_) | SearchResult::OutOfBudget => {
                    assert!(
                        matches!(fast, Verdict::NotLinearizable { .. }),
                        "round {round}: {fast}"
                    );
                    refuted += 1;
                }
                // The mutant may be linearizable in another order than the log's (two
                // concurrent creates of one name, swapped): only the indexes refute it then,
                // unless the mutant is a read, whose index alone the checker does not trust.
                SearchResult::Found(order) => {
                    assert!(is_linearization(&ops, &order), "round {round}: {order:?}");
                    let by_search = matches!(fast, Verdict::Linearizable { method, .. }
                        if method.starts_with("search"));
                    assert!(
                        by_search || matches!(fast, Verdict::NotLinearizable { .. }),
                        "round {round}: {fast}"
                    );
                    reordered += 1;
                }
            }
        }
        assert!(
            refuted >= 9 * (refuted + reordered) / 10,
            "{refuted} vs {reordered}"
        );
    }

    #[test]
    fn search_finds_valid_linearizations() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..100 {
            let history = random_history(&mut rng, 16, 4);
            let ops = operations(&history).expect("well formed");
            let SearchResult::Found(order) = search(&ops, BUDGET, ChatLimits::default()) else {
                panic!("a valid history was not linearized");
            };
            assert!(is_linearization(&ops, &order), "{order:?}");
        }
    }

    #[test]
    fn large_valid_history_takes_the_log_order_path() {
        let mut rng = ChaCha8Rng::seed_from_u64(5000);
        let history = random_history(&mut rng, 5000, 8);
        let count = operations(&history).expect("well formed").len();
        assert!(count >= 5000);
        // A budget of one state: the log order must not fall back to the search.
        let verdict = check(&history, 1);
        assert_eq!(
            verdict,
            Verdict::Linearizable {
                method: "log order",
                operations: count
            }
        );
    }

    #[test]
    fn search_gives_up_at_its_budget_instead_of_hanging() {
        // 198 concurrent sends that never answered, and a fetch showing a message nobody sent:
        // refuting it needs every order of every subset of the sends.
        let mut script = Script::default();
        script.call(0, &create("a"), success(), 2);
        let sends: Vec<Operation> = (1..199).map(|k| send("a", "a", &format!("m{k}"))).collect();
        for (k, operation) in sends.iter().enumerate() {
            script.invoke(k as u32 + 1, operation);
        }
        script.call(
            199,
            &fetch("a", 1),
            messages(&[("a", "nobody sent this")]),
            300,
        );
        assert_eq!(operations(&script.history).expect("well formed").len(), 200);
        let verdict = check_search_only(&script.history, 1_000);
        assert_eq!(
            verdict,
            Verdict::Undecided {
                reason: "history of 200 operations too large to decide within 1000 states".into()
            }
        );
    }
}
