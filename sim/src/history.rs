//! The client history in Jepsen's convention: one JSON line per invocation and per completion,
//! `{"process", "type", "f", "value", "time"}`, plus `"index"` on completions: the log index at
//! which the operation took effect (for a read, the applied index of the state it saw), or null,
//! and `"node"`: the node that answered, or null. `fail` means certainly not applied, `info` unknown;
//! for an `info` the simulator fills the index in afterwards from the replicas' applied logs.
//! An invocation that acted as an account's owner carries `"as": {"user", "created",
//! "genuine"}`: the principal of the token it sent, and whether the cluster issued that token.

use raftchat::chat::{ChatLimits, Operation, Principal, Reply};
use raftchat::types::{ClientId, LogIndex, NodeId};
use serde_json::{json, Value};
use std::time::Duration;

/// How a completion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Applied; the reply is known.
    Ok,
    /// Certainly not applied.
    Fail,
    /// Unknown.
    Info,
}

impl Completion {
    fn name(self) -> &'static str {
        match self {
            Completion::Ok => "ok",
            Completion::Fail => "fail",
            Completion::Info => "info",
        }
    }
}

/// One line of the history.
#[derive(Clone, Debug)]
pub struct HistoryEvent {
    /// The client process.
    pub process: u32,
    /// None for an invocation.
    pub completion: Option<Completion>,
    /// The operation.
    pub operation: Operation,
    /// The reply, for `ok`.
    pub reply: Option<Reply>,
    /// Where it took effect, if known.
    pub index: Option<LogIndex>,
    /// The node that answered (the leader that applied a write, the node that served a read).
    pub node: Option<NodeId>,
    /// The session command that carried it, so an `info`'s index can be found afterwards.
    pub command_id: Option<(ClientId, u64)>,
    /// Whom the operation acted as (invocations only): the principal of the token it sent.
    pub acting: Option<Acting>,
    /// Simulated time.
    pub time: Duration,
}

/// Whom an operation acted as: the principal its token named, and whether the cluster issued
/// that token (the simulator knows: it forges the others). Only a genuine token's principal
/// may act on a protected account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acting {
    /// The token's principal.
    pub principal: Principal,
    /// Whether a node signed the token.
    pub genuine: bool,
}

impl Acting {
    /// Acting with a token a node issued.
    pub fn genuine(token: &raftchat::wire::Token) -> Acting {
        Acting {
            principal: token.principal.clone(),
            genuine: true,
        }
    }
}

/// The history of a run.
#[derive(Default)]
pub struct History {
    /// Every event, in order.
    pub events: Vec<HistoryEvent>,
    /// The chat service's retention limits in the run, which the model must apply too.
    pub limits: ChatLimits,
}

/// Jepsen's name of an operation.
pub fn op_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::CreateAccount { .. } | Operation::CreateAccountWithPassword { .. } => "create",
        Operation::CheckAccount { .. } => "check",
        Operation::ListAccounts { .. } => "list",
        Operation::DeleteAccount { .. } => "delete",
        Operation::SendMessage { .. } => "send",
        Operation::FetchMessages { .. } => "fetch",
    }
}

fn invoke_value(operation: &Operation) -> Value {
    match operation {
        Operation::CreateAccount { username }
        | Operation::CheckAccount { username }
        | Operation::DeleteAccount { username } => json!({ "user": username }),
        Operation::CreateAccountWithPassword { username, .. } => {
            json!({ "user": username, "password": true })
        }
        Operation::ListAccounts { pattern } => json!({ "pattern": pattern }),
        Operation::SendMessage { from, to, message } => {
            json!({ "from": from, "to": to, "message": message })
        }
        Operation::FetchMessages {
            username,
            first_message_id,
        } => {
            json!({ "user": username, "from_id": first_message_id })
        }
    }
}

fn reply_value(operation: &Operation, reply: &Reply) -> Value {
    let mut value = json!({ "status": reply.status.code() });
    match operation {
        Operation::ListAccounts { .. } => value["users"] = json!(reply.users),
        Operation::FetchMessages { .. } => {
            let messages: Vec<[&str; 2]> = reply
                .messages
                .iter()
                .map(|(from, text)| [from.as_str(), text.as_str()])
                .collect();
            value["messages"] = json!(messages);
            value["first_id"] = json!(reply.first_message_id);
        }
        _ => {}
    }
    value
}

impl History {
    /// Serializes the history as JSON lines.
    pub fn to_json_lines(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for event in &self.events {
            let mut line = json!({
                "process": event.process,
                "type": event.completion.map_or("invoke", Completion::name),
                "f": op_name(&event.operation),
                "value": match (&event.completion, &event.reply) {
                    (None, _) => invoke_value(&event.operation),
                    (Some(_), Some(reply)) => reply_value(&event.operation, reply),
                    (Some(_), None) => Value::Null,
                },
                "time": event.time.as_nanos() as u64,
            });
            if let Some(acting) = &event.acting {
                line["as"] = json!({ "user": acting.principal.username,
                                     "created": acting.principal.created.0,
                                     "genuine": acting.genuine });
            }
            if event.completion.is_some() {
                line["index"] = event.index.map_or(Value::Null, |i| json!(i.0));
                line["node"] = event.node.map_or(Value::Null, |n| json!(n.0));
            }
            serde_json::to_writer(&mut out, &line).expect("JSON to memory");
            out.push(b'\n');
        }
        out
    }
}
