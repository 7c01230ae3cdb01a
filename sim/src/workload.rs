//! The simulated clients: each a madsim node running the real client library against the
//! cluster, drawing operations from the scenario's mix, thinking between operations, and
//! recording every invocation and completion in the history.

use crate::history::{Completion, HistoryEvent};
use crate::scenario::{Drawn, OpKind};
use crate::world::World;
use raftchat::chat::Operation;
use raftchat::types::{LogIndex, NodeId};
use raftchat_node::client::{Client, ClientConfig, ClientError};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::time::Duration;

/// Patterns `list_account` is asked for: the whole table, prefixes, classes, and misses.
const PATTERNS: [&str; 6] = ["*", "u1*", "u?", "u[0-3]*", "[!u]*", "x*"];

/// Draws one operation of `kind` over the username pool.
pub fn draw_operation(kind: OpKind, drawn: &Drawn, rng: &mut ChaCha8Rng) -> Operation {
    let user = |rng: &mut ChaCha8Rng| -> String {
        // Now and then an invalid name, so INVALID_USERNAME and its kin are exercised too.
        match rng.gen_range(0..100) {
            0 => String::new(),
            1 => "x".repeat(21),
            _ => format!("u{}", rng.gen_range(0..drawn.users)),
        }
    };
    match kind {
        OpKind::Create => Operation::CreateAccount {
            username: user(rng),
        },
        OpKind::Check => Operation::CheckAccount {
            username: user(rng),
        },
        OpKind::Delete => Operation::DeleteAccount {
            username: user(rng),
        },
        OpKind::List => {
            let pattern = PATTERNS[rng.gen_range(0..PATTERNS.len())].to_string();
            Operation::ListAccounts { pattern }
        }
        OpKind::Send => {
            let (from, to) = (user(rng), user(rng));
            let (min, max) = drawn.message_chars;
            let length = rng.gen_range(min..=max) as usize;
            let message = (0..length)
                .map(|k| {
                    if k % 17 == 16 {
                        'é'
                    } else {
                        rng.gen_range('a'..='z')
                    }
                })
                .collect();
            Operation::SendMessage { from, to, message }
        }
        OpKind::Fetch => {
            let first_message_id = if rng.gen_range(0..50) == 0 {
                0
            } else {
                rng.gen_range(1..=4)
            };
            Operation::FetchMessages {
                username: user(rng),
                first_message_id,
            }
        }
    }
}

/// Runs one client until `stop_at` (simulated time since the start), recording its history.
pub async fn run_client(
    process: u32,
    config: ClientConfig,
    drawn: Drawn,
    world: Arc<World>,
    mut rng: ChaCha8Rng,
    stop_at: Duration,
) {
    let mut client = Client::new(config);
    while world.now() < stop_at && !world.violated() {
        let mean_ms = 1000.0 / drawn.rate_per_client;
        let think = -mean_ms * (1.0 - rng.gen::<f64>()).ln();
        tokio::time::sleep(Duration::from_micros((think * 1000.0) as u64)).await;
        if world.now() >= stop_at {
            break;
        }
        let operation = draw_operation(drawn.pick_op(&mut rng), &drawn, &mut rng);
        record(&world, process, None, &operation, None, None, None);
        let result = client.execute(operation.clone()).await;
        let command_id = client.last_command();
        match result {
            Ok(done) => {
                let answered = Answered {
                    index: done.index,
                    node: done.node,
                };
                record(
                    &world,
                    process,
                    Some(Completion::Ok),
                    &operation,
                    Some(done.reply),
                    Some(answered),
                    command_id,
                );
            }
            Err(ClientError::Failed(_)) => {
                record(
                    &world,
                    process,
                    Some(Completion::Fail),
                    &operation,
                    None,
                    None,
                    None,
                );
            }
            Err(ClientError::Unknown(_)) => {
                record(
                    &world,
                    process,
                    Some(Completion::Info),
                    &operation,
                    None,
                    None,
                    command_id,
                );
            }
        }
    }
}

/// Where an operation took effect, and which node answered it.
struct Answered {
    index: LogIndex,
    node: NodeId,
}

fn record(
    world: &World,
    process: u32,
    completion: Option<Completion>,
    operation: &Operation,
    reply: Option<raftchat::chat::Reply>,
    answered: Option<Answered>,
    command_id: Option<(raftchat::types::ClientId, u64)>,
) {
    let time = world.now();
    let node = answered.as_ref().map(|a| a.node);
    let event = HistoryEvent {
        process,
        completion,
        operation: operation.clone(),
        reply,
        index: answered.as_ref().map(|a| a.index),
        node,
        command_id,
        time,
    };
    world.with(|s| s.history.events.push(event));
    let kind = if completion.is_some() {
        "client_return"
    } else {
        "client_call"
    };
    world.trace(None, kind, || {
        serde_json::json!({ "process": process, "op": crate::history::op_name(operation),
                            "type": completion.map(|c| format!("{c:?}").to_lowercase()),
                            "answered_by": node.map(|n| n.to_string()) })
    });
}
