//! The simulated clients: each a madsim node running the real client library against the
//! cluster, drawing operations from the scenario's mix, thinking between operations, and
//! recording every invocation and completion in the history.
//!
//! With `passwords`, a share of creates set a password (user `uK`'s is always `pw-uK`, so
//! every client can act as every owner), and before each operation on an account a client
//! picks who to be: the account's owner (logging in, now and then first with a wrong password,
//! which must be refused: the check `wrong_password_refused`), whoever it last logged in as,
//! nobody, or the holder of a forged token (a real principal, a signature of zeros). The
//! history records whom each operation acted as, and whether the token was genuine, so the
//! model can tell who may act on a protected account.

use crate::checker::Failure;
use crate::history::{Acting, Completion, HistoryEvent};
use crate::scenario::{Drawn, OpKind};
use crate::world::World;
use raftchat::chat::{Credential, Operation};
use raftchat::types::{LogIndex, NodeId};
use raftchat::wire::Token;
use raftchat_node::client::{Client, ClientConfig, ClientError, SharedLinks};
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

/// What the history records as a password create's credential: the model needs only to know
/// there is one (the node draws the salt and computes the hash).
pub const RECORDED_CREDENTIAL: Credential = Credential {
    salt: [0; 16],
    hash: [0; 32],
    memory_kib: 0,
    iterations: 0,
};

/// User `username`'s password in every run.
fn password_of(username: &str) -> String {
    format!("pw-{username}")
}

/// Picks whom the client acts as for `operation`, logging in if it wants to be the owner;
/// returns the token to send and what the history records of it.
async fn choose_acting(
    client: &mut Client,
    operation: &Operation,
    world: &World,
    process: u32,
    rng: &mut ChaCha8Rng,
) -> Option<Acting> {
    let account = operation.acting_account()?.to_owned();
    let held = client.token().cloned();
    match rng.gen_range(0..100) {
        // The owner: log in unless its token is held already.
        0..55 => {
            if held
                .as_ref()
                .is_some_and(|t| t.principal.username == account)
            {
                return held.map(|token| Acting::genuine(&token));
            }
            if rng.gen_range(0..10) == 0 {
                let wrong = client.login(&account, "wrong").await;
                world.trace(None, "login", || {
                    serde_json::json!({ "process": process, "user": account, "password": "wrong",
                                        "ok": wrong.is_ok() })
                });
                if let Ok(token) = wrong {
                    world.violate(Failure {
                        check: "wrong_password_refused",
                        node: None,
                        detail: format!(
                            "process {process} logged in as {account} with a wrong password \
                             and got a token for {:?}",
                            token.principal
                        ),
                    });
                }
            }
            let login = client.login(&account, &password_of(&account)).await;
            world.trace(
                None,
                "login",
                || serde_json::json!({ "process": process, "user": account, "ok": login.is_ok() }),
            );
            match login {
                Ok(token) => {
                    world.with(|s| s.principals.insert(account, token.principal.clone()));
                    Some(Acting::genuine(&token))
                }
                // No such account, an open one, or no answer: act as nobody.
                Err(_) => {
                    client.set_token(None);
                    None
                }
            }
        }
        // Whoever it last logged in as (perhaps another account, perhaps nobody).
        55..80 => held.map(|token| Acting::genuine(&token)),
        // Nobody.
        80..92 => {
            client.set_token(None);
            None
        }
        // A forger who knows the account's owner but not the cluster's key.
        _ => {
            let principal = world.with(|s| s.principals.get(&account).cloned());
            let forged = principal.map(|principal| Token {
                principal,
                expires_unix_ms: u64::MAX,
                signature: [0; 32],
            });
            client.set_token(forged.clone());
            forged.map(|token| Acting {
                principal: token.principal,
                genuine: false,
            })
        }
    }
}

/// Runs one client until `stop_at` (simulated time since the start), recording its history.
pub async fn run_client(
    process: u32,
    config: ClientConfig,
    links: Option<SharedLinks>,
    drawn: Drawn,
    world: Arc<World>,
    mut rng: ChaCha8Rng,
    stop_at: Duration,
) {
    let mut client = match links {
        Some(links) => Client::sharing(config, links),
        None => Client::new(config),
    };
    while world.now() < stop_at && !world.violated() {
        let mean_ms = 1000.0 / drawn.rate_per_client;
        let think = -mean_ms * (1.0 - rng.gen::<f64>()).ln();
        tokio::time::sleep(Duration::from_micros((think * 1000.0) as u64)).await;
        if world.now() >= stop_at {
            break;
        }
        let mut operation = draw_operation(drawn.pick_op(&mut rng), &drawn, &mut rng);
        let mut acting = None;
        let mut password = None;
        if drawn.passwords > 0.0 {
            if let Operation::CreateAccount { username } = &operation {
                if rng.gen_bool(drawn.passwords) {
                    password = Some(password_of(username));
                    operation = Operation::CreateAccountWithPassword {
                        username: username.clone(),
                        credential: RECORDED_CREDENTIAL,
                    };
                }
            }
            acting = choose_acting(&mut client, &operation, &world, process, &mut rng).await;
        }
        let forged = acting.as_ref().is_some_and(|a| !a.genuine);
        record(&world, process, None, &operation, None, None, None, acting);
        let result = match (&operation, password) {
            (Operation::CreateAccountWithPassword { username, .. }, Some(password)) => {
                client.create_with_password(username, &password).await
            }
            _ => client.execute(operation.clone()).await,
        };
        if forged {
            client.set_token(None);
        }
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
                    None,
                );
            }
            // A refused token: certainly not applied.
            Err(ClientError::Failed(_) | ClientError::AuthFailed(_)) => {
                record(
                    &world,
                    process,
                    Some(Completion::Fail),
                    &operation,
                    None,
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
                    None,
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

#[allow(clippy::too_many_arguments)] // One line of the history, field by field.
fn record(
    world: &World,
    process: u32,
    completion: Option<Completion>,
    operation: &Operation,
    reply: Option<raftchat::chat::Reply>,
    answered: Option<Answered>,
    command_id: Option<(raftchat::types::ClientId, u64)>,
    acting: Option<Acting>,
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
        acting,
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
