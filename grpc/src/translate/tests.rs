//! Every op and every status through the translation, against the real chat state machine, so
//! that the answers, including which error wins when several apply, are the original's.

use super::*;
use crate::local_chat::LocalChat;

/// The gateway's answers, as a cluster would give them.
struct Cluster(LocalChat);

impl Cluster {
    fn new() -> Cluster {
        Cluster(LocalChat::new())
    }

    /// The gateway's answer to `request`.
    fn call(&mut self, request: &ChatRequest) -> ChatResponse {
        match to_operation(request) {
            Ok(operation) => to_response(request, self.0.apply(operation)),
            Err(response) => response,
        }
    }

    fn status(&mut self, request: &ChatRequest) -> i32 {
        let response = self.call(request);
        assert_eq!(response.op, request.op, "the op is echoed");
        response.status
    }
}

const SUCCESS: i32 = 0;
const NO_ELEMENT: i32 = 1;
const OPERATION_NOT_SUPPORTED: i32 = 100;
const INVALID_USERNAME: i32 = 101;
const ACCOUNT_NOT_EXIST: i32 = 102;
const MESSAGE_TOO_LONG: i32 = 103;
const SERVER_ERROR: i32 = 190;
const GENERAL_ERROR: i32 = 199;

fn create(username: &str) -> ChatRequest {
    ChatRequest {
        op: OP_CREATE_ACCOUNT,
        username: username.into(),
        ..ChatRequest::default()
    }
}

fn check(username: &str) -> ChatRequest {
    ChatRequest {
        op: OP_CHECK_ACCOUNT,
        username: username.into(),
        ..ChatRequest::default()
    }
}

fn list(wildcard: &str) -> ChatRequest {
    ChatRequest {
        op: OP_LIST_ACCOUNT,
        wildcard: wildcard.into(),
        ..ChatRequest::default()
    }
}

fn delete(username: &str) -> ChatRequest {
    ChatRequest {
        op: OP_DELETE_ACCOUNT,
        username: username.into(),
        ..ChatRequest::default()
    }
}

fn send(from: &str, to: &str, message: &str) -> ChatRequest {
    ChatRequest {
        op: OP_SEND_MESSAGE,
        username: from.into(),
        target_name: to.into(),
        message: message.into(),
        ..ChatRequest::default()
    }
}

fn fetch(username: &str, first_id: i32) -> ChatRequest {
    ChatRequest {
        op: OP_FETCH_MESSAGES,
        username: username.into(),
        param_1: first_id,
        ..ChatRequest::default()
    }
}

/// Asserts the answer carries one non-empty text and nothing else, as the original client
/// expects of every answer but list's and fetch's successes.
fn assert_text_only(response: &ChatResponse) {
    assert!(response.usernames.is_empty(), "{response:?}");
    assert_eq!(response.messages.len(), 1, "{response:?}");
    assert!(!response.messages[0].is_empty(), "{response:?}");
}

#[test]
fn every_status_of_create_account() {
    let mut cluster = Cluster::new();
    assert_eq!(cluster.status(&create("alice")), SUCCESS);
    assert_eq!(cluster.status(&create("alice")), GENERAL_ERROR);
    assert_eq!(cluster.status(&create("")), INVALID_USERNAME);
    assert_eq!(cluster.status(&create(&"n".repeat(21))), INVALID_USERNAME);
    assert_eq!(cluster.status(&create("tab\tname")), INVALID_USERNAME);
    for request in [create("bob"), create("bob"), create("")] {
        assert_text_only(&cluster.call(&request));
    }
}

#[test]
fn every_status_of_check_account() {
    let mut cluster = Cluster::new();
    assert_eq!(cluster.status(&check("alice")), ACCOUNT_NOT_EXIST);
    cluster.call(&create("alice"));
    assert_eq!(cluster.status(&check("alice")), SUCCESS);
    assert_text_only(&cluster.call(&check("alice")));
    assert_text_only(&cluster.call(&check("bob")));
}

#[test]
fn list_account_puts_the_names_in_usernames_in_creation_order() {
    let mut cluster = Cluster::new();
    for name in ["carol", "alice", "bob"] {
        cluster.call(&create(name));
    }
    let response = cluster.call(&list("*"));
    assert_eq!(response.status, SUCCESS);
    assert_eq!(response.usernames, ["carol", "alice", "bob"]);
    assert_eq!(response.messages.len(), 1, "a text for the client to print");
    let response = cluster.call(&list("[ab]*"));
    assert_eq!(response.usernames, ["alice", "bob"]);
    let response = cluster.call(&list("nobody?"));
    assert_eq!(response.status, SUCCESS);
    assert!(response.usernames.is_empty());
    assert_eq!(response.messages.len(), 1);
    let response = cluster.call(&list(&"*".repeat(PATTERN_CHARS_MAX + 1)));
    assert_eq!(response.status, GENERAL_ERROR);
    assert_text_only(&response);
}

#[test]
fn every_status_of_delete_account() {
    let mut cluster = Cluster::new();
    assert_eq!(cluster.status(&delete("alice")), ACCOUNT_NOT_EXIST);
    cluster.call(&create("alice"));
    let response = cluster.call(&delete("alice"));
    assert_eq!(response.status, SUCCESS);
    assert_text_only(&response);
    assert_eq!(cluster.status(&check("alice")), ACCOUNT_NOT_EXIST);
}

#[test]
fn every_status_of_send_message() {
    let mut cluster = Cluster::new();
    cluster.call(&create("alice"));
    cluster.call(&create("bob"));
    assert_eq!(cluster.status(&send("alice", "bob", "hi")), SUCCESS);
    assert_eq!(
        cluster.status(&send("ghost", "bob", "hi")),
        ACCOUNT_NOT_EXIST
    );
    assert_eq!(
        cluster.status(&send("alice", "ghost", "hi")),
        ACCOUNT_NOT_EXIST
    );
    let longest = "m".repeat(MESSAGE_CHARS_MAX);
    assert_eq!(cluster.status(&send("alice", "bob", &longest)), SUCCESS);
    let too_long = "m".repeat(MESSAGE_CHARS_MAX + 1);
    assert_eq!(
        cluster.status(&send("alice", "bob", &too_long)),
        MESSAGE_TOO_LONG
    );
    for request in [
        send("alice", "bob", "hi"),
        send("ghost", "bob", "hi"),
        send("alice", "bob", &too_long),
    ] {
        assert_text_only(&cluster.call(&request));
    }
}

#[test]
fn send_message_checks_the_length_first_then_the_sender_then_the_target() {
    let mut cluster = Cluster::new();
    cluster.call(&create("alice"));
    let too_long = "m".repeat(MESSAGE_CHARS_MAX + 1);
    for (from, to) in [("ghost", "nobody"), ("ghost", "alice"), ("alice", "ghost")] {
        assert_eq!(
            cluster.status(&send(from, to, &too_long)),
            MESSAGE_TOO_LONG,
            "{from} -> {to}"
        );
    }
    assert_eq!(
        cluster.status(&send("ghost", "nobody", "hi")),
        ACCOUNT_NOT_EXIST
    );
}

#[test]
fn every_status_of_fetch_messages() {
    let mut cluster = Cluster::new();
    cluster.call(&create("alice"));
    cluster.call(&create("bob"));
    cluster.call(&send("alice", "bob", "one"));
    cluster.call(&send("bob", "bob", "two"));
    let response = cluster.call(&fetch("bob", 1));
    assert_eq!(response.status, SUCCESS);
    assert_eq!(
        response.usernames,
        ["alice", "bob"],
        "senders, parallel to messages"
    );
    assert_eq!(response.messages, ["one", "two"]);
    let response = cluster.call(&fetch("bob", 2));
    assert_eq!(
        (response.usernames, response.messages),
        (vec!["bob".to_owned()], vec!["two".to_owned()])
    );
    assert_eq!(cluster.status(&fetch("bob", 3)), NO_ELEMENT);
    assert_eq!(cluster.status(&fetch("alice", 1)), NO_ELEMENT);
    assert_eq!(cluster.status(&fetch("ghost", 1)), ACCOUNT_NOT_EXIST);
    assert_eq!(cluster.status(&fetch("bob", 0)), GENERAL_ERROR);
    assert_eq!(cluster.status(&fetch("bob", -5)), GENERAL_ERROR);
    for request in [fetch("bob", 3), fetch("ghost", 1), fetch("bob", 0)] {
        assert_text_only(&cluster.call(&request));
    }
}

#[test]
fn fetch_messages_checks_the_id_first_then_the_account() {
    let mut cluster = Cluster::new();
    assert_eq!(cluster.status(&fetch("ghost", 0)), GENERAL_ERROR);
    assert_eq!(cluster.status(&fetch("ghost", i32::MIN)), GENERAL_ERROR);
    assert_eq!(cluster.status(&fetch("ghost", 1)), ACCOUNT_NOT_EXIST);
    cluster.call(&create("alice"));
    assert_eq!(cluster.status(&fetch("alice", 1)), NO_ELEMENT);
    assert_eq!(cluster.status(&fetch("alice", i32::MAX)), NO_ELEMENT);
}

#[test]
fn an_op_outside_one_to_six_is_not_supported_and_never_reaches_the_log() {
    for op in [0, 7, 100, -1, i32::MAX, i32::MIN] {
        let request = ChatRequest {
            op,
            username: "alice".into(),
            ..ChatRequest::default()
        };
        let response = to_operation(&request).expect_err("no operation");
        assert_eq!(response.op, op);
        assert_eq!(response.status, OPERATION_NOT_SUPPORTED);
        assert_text_only(&response);
    }
}

#[test]
fn each_op_reads_only_its_own_fields() {
    let noisy = |op| ChatRequest {
        op,
        param_1: 3,
        username: "alice".into(),
        target_name: "bob".into(),
        message: "text".into(),
        wildcard: "a*".into(),
    };
    let expected = [
        Operation::CreateAccount {
            username: "alice".into(),
        },
        Operation::CheckAccount {
            username: "alice".into(),
        },
        Operation::ListAccounts {
            pattern: "a*".into(),
        },
        Operation::DeleteAccount {
            username: "alice".into(),
        },
        Operation::SendMessage {
            from: "alice".into(),
            to: "bob".into(),
            message: "text".into(),
        },
        Operation::FetchMessages {
            username: "alice".into(),
            first_message_id: 3,
        },
    ];
    for (op, expected) in (1..=6).zip(expected) {
        assert_eq!(to_operation(&noisy(op)), Ok(expected));
    }
}

#[test]
fn a_huge_request_becomes_a_small_operation_with_the_same_answer() {
    let huge = "x".repeat(1 << 20);
    let operation = to_operation(&send(&huge, &huge, &huge)).unwrap();
    let Operation::SendMessage { from, to, message } = &operation else {
        panic!("{operation:?}");
    };
    assert!(
        from.len() + to.len() + message.len() < 1024,
        "{operation:?}"
    );
    let mut cluster = Cluster::new();
    let response = cluster.call(&send(&huge, "bob", "hi"));
    assert_eq!(response.status, ACCOUNT_NOT_EXIST);
    assert!(
        response.messages[0].len() < 200,
        "the name is not echoed whole"
    );
}

#[test]
fn no_answer_is_server_error_and_an_unknown_outcome_is_a_final_general_error() {
    let request = send("alice", "bob", "hi");
    let response = unavailable(&request, "no leader");
    assert_eq!(response.status, SERVER_ERROR);
    assert_text_only(&response);
    let response = outcome_unknown(&request, "timed out");
    assert_eq!(response.status, GENERAL_ERROR);
    assert_text_only(&response);
    assert!(response.messages[0].contains("unknown"), "{response:?}");
}
