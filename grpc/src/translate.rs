//! The translation between the original service's messages and raftchat's chat operations: a
//! pure function each way, so every op and every status is unit-tested without a network.
//!
//! The original's `ChatRequest` names its operation by `op` and carries every field of every
//! operation; [`to_operation`] picks the fields that operation reads and ignores the rest, as
//! the original did. An `op` outside 1..=6 is answered at once, never entering the log.
//! [`to_response`] writes the reply the way the original's clients read it: list's names in
//! `usernames`; fetch's senders and texts as parallel `usernames` and `messages`; every other
//! answer a human-readable text in `messages[0]`, which the original client prints (an empty
//! list would fail it).

use crate::proto::{ChatRequest, ChatResponse};
use raftchat::chat::{Operation, Reply, Status};
use raftchat::limits::{MESSAGE_CHARS_MAX, PATTERN_CHARS_MAX, USERNAME_CHARS_MAX};

/// `create_account`.
pub const OP_CREATE_ACCOUNT: i32 = 1;
/// `check_account`.
pub const OP_CHECK_ACCOUNT: i32 = 2;
/// `list_account`.
pub const OP_LIST_ACCOUNT: i32 = 3;
/// `delete_account`.
pub const OP_DELETE_ACCOUNT: i32 = 4;
/// `send_message`.
pub const OP_SEND_MESSAGE: i32 = 5;
/// `fetch_messages`.
pub const OP_FETCH_MESSAGES: i32 = 6;

/// The chat operation a request asks for, or the answer to give at once when it names no
/// operation (OPERATION_NOT_SUPPORTED). Every string is cut to one character past its limit
/// ([`Operation::bounded`]): the answer is the same, and a huge request never becomes a huge
/// log entry.
pub fn to_operation(request: &ChatRequest) -> Result<Operation, ChatResponse> {
    let operation = match request.op {
        OP_CREATE_ACCOUNT => Operation::CreateAccount {
            username: request.username.clone(),
        },
        OP_CHECK_ACCOUNT => Operation::CheckAccount {
            username: request.username.clone(),
        },
        OP_LIST_ACCOUNT => Operation::ListAccounts {
            pattern: request.wildcard.clone(),
        },
        OP_DELETE_ACCOUNT => Operation::DeleteAccount {
            username: request.username.clone(),
        },
        OP_SEND_MESSAGE => Operation::SendMessage {
            from: request.username.clone(),
            to: request.target_name.clone(),
            message: request.message.clone(),
        },
        OP_FETCH_MESSAGES => Operation::FetchMessages {
            username: request.username.clone(),
            // An id below 1 (negative included) is GENERAL_ERROR; the state machine says so.
            first_message_id: u64::try_from(request.param_1).unwrap_or(0),
        },
        op => {
            return Err(text_response(
                op,
                Status::OperationNotSupported,
                format!("operation {op} is not supported (the operations are 1 to 6)"),
            ))
        }
    };
    Ok(operation.bounded())
}

/// The answer to `request` once its operation was applied with `reply`.
pub fn to_response(request: &ChatRequest, reply: Reply) -> ChatResponse {
    let op = request.op;
    match (op, reply.status) {
        (OP_LIST_ACCOUNT, Status::Success) => {
            let text = match reply.users.len() {
                1 => "1 account matches".to_owned(),
                count => format!("{count} accounts match"),
            };
            ChatResponse {
                op,
                status: code(Status::Success),
                usernames: reply.users,
                messages: vec![text],
            }
        }
        (OP_FETCH_MESSAGES, Status::Success) => {
            let (usernames, messages) = reply.messages.into_iter().unzip();
            ChatResponse {
                op,
                status: code(Status::Success),
                usernames,
                messages,
            }
        }
        (_, status) => text_response(op, status, describe(request, status)),
    }
}

/// The answer when the request changed nothing (no leader could be reached, or it is a read):
/// SERVER_ERROR, which tells the original client to try its next server.
pub fn unavailable(request: &ChatRequest, why: &str) -> ChatResponse {
    text_response(
        request.op,
        Status::ServerError,
        format!("this server cannot serve the request now ({why}); nothing was changed: try another server"),
    )
}

/// The answer when a write may or may not have been applied (contact with the leader was lost
/// while it changed): a final GENERAL_ERROR, never SERVER_ERROR, which would make the client
/// send the write again elsewhere.
pub fn outcome_unknown(request: &ChatRequest, why: &str) -> ChatResponse {
    text_response(
        request.op,
        Status::GeneralError,
        format!(
            "the outcome is unknown ({why}): the operation may or may not have been applied; \
             check before retrying it"
        ),
    )
}

fn text_response(op: i32, status: Status, text: String) -> ChatResponse {
    ChatResponse {
        op,
        status: code(status),
        usernames: Vec::new(),
        messages: vec![text],
    }
}

fn code(status: Status) -> i32 {
    i32::from(status.code())
}

/// The human-readable text of an answer without names or messages.
fn describe(request: &ChatRequest, status: Status) -> String {
    let user = shown(&request.username);
    let target = shown(&request.target_name);
    match (request.op, status) {
        (OP_CREATE_ACCOUNT, Status::Success) => format!("account {user:?} created"),
        (OP_CREATE_ACCOUNT, Status::InvalidUsername) => format!(
            "{user:?} is not a valid username (1 to {USERNAME_CHARS_MAX} characters, no control \
             characters)"
        ),
        (OP_CREATE_ACCOUNT, Status::GeneralError) => format!(
            "account {user:?} cannot be created: it already exists, or the cluster holds as \
             many accounts as it can"
        ),
        (OP_CHECK_ACCOUNT, Status::Success) => format!("account {user:?} exists"),
        (OP_LIST_ACCOUNT, Status::GeneralError) => {
            format!("the wildcard is too long (at most {PATTERN_CHARS_MAX} characters)")
        }
        (OP_DELETE_ACCOUNT, Status::Success) => format!("account {user:?} deleted"),
        (OP_SEND_MESSAGE, Status::Success) => {
            format!("message sent to {target:?}")
        }
        (OP_SEND_MESSAGE, Status::MessageTooLong) => {
            format!("the message is too long (at most {MESSAGE_CHARS_MAX} characters)")
        }
        (OP_SEND_MESSAGE, Status::AccountNotExist) => {
            format!("account {user:?} or {target:?} does not exist")
        }
        (OP_FETCH_MESSAGES, Status::GeneralError) => {
            format!("message id {} is invalid: ids start at 1", request.param_1)
        }
        (OP_FETCH_MESSAGES, Status::NoElement) => format!(
            "no message with id {} or later for {user:?}",
            request.param_1
        ),
        (_, Status::AccountNotExist) => format!("account {user:?} does not exist"),
        (_, Status::AuthFailed) => format!(
            "account {user:?} has a password, and this gateway carries none: only raftchat's own \
             protocol (log in, then act with the token) can act on it"
        ),
        (_, status) => status.name().to_owned(),
    }
}

/// A name as quoted in a text: cut short, so a huge request is not echoed back whole.
fn shown(name: &str) -> &str {
    match name.char_indices().nth(USERNAME_CHARS_MAX + 1) {
        Some((end, _)) => &name[..end],
        None => name,
    }
}

#[cfg(test)]
mod tests;
