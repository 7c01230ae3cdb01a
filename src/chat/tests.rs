//! Tests of the chat state machine's operations, limits and sessions, one claim each. They drive
//! [`Chat`] the way the replica does: every operation is a command under a session, applied at
//! the next log index.

use super::*;
use crate::limits::MESSAGE_CHARS_MAX;

/// A chat with one registered client, applying commands at consecutive indexes.
pub(super) struct Harness {
    pub(super) chat: Chat,
    pub(super) index: u64,
    pub(super) client_id: ClientId,
    pub(super) sequence: u64,
}

impl Harness {
    pub(super) fn new() -> Harness {
        Harness::with_chat(Chat::new())
    }

    pub(super) fn with_chat(mut chat: Chat) -> Harness {
        let index = chat.applied_index().0 + 1;
        let Outcome::Registered(client_id) = chat.apply(LogIndex(index), &Command::RegisterClient)
        else {
            panic!("registration failed");
        };
        Harness {
            chat,
            index,
            client_id,
            sequence: 0,
        }
    }

    pub(super) fn next_index(&mut self) -> LogIndex {
        self.index += 1;
        LogIndex(self.index)
    }

    /// Applies `operation` as this client's next command and returns its fresh reply.
    pub(super) fn run(&mut self, operation: Operation) -> Reply {
        self.sequence += 1;
        match self.submit(self.sequence, operation) {
            Outcome::Replied {
                reply,
                duplicate: false,
            } => reply,
            other => panic!("expected a fresh reply, got {other:?}"),
        }
    }

    /// Applies `operation` under this client's session with an explicit sequence.
    pub(super) fn submit(&mut self, sequence: u64, operation: Operation) -> Outcome {
        let command = Command::Client {
            client_id: self.client_id,
            sequence,
            operation,
        };
        let index = self.next_index();
        self.chat.apply(index, &command)
    }

    pub(super) fn register(&mut self) -> ClientId {
        let index = self.next_index();
        match self.chat.apply(index, &Command::RegisterClient) {
            Outcome::Registered(client_id) => client_id,
            other => panic!("expected registration, got {other:?}"),
        }
    }

    pub(super) fn status(&mut self, operation: Operation) -> Status {
        self.run(operation).status
    }
}

pub(super) fn create(username: &str) -> Operation {
    Operation::CreateAccount {
        username: username.to_owned(),
    }
}

pub(super) fn check(username: &str) -> Operation {
    Operation::CheckAccount {
        username: username.to_owned(),
    }
}

pub(super) fn list(pattern: &str) -> Operation {
    Operation::ListAccounts {
        pattern: pattern.to_owned(),
    }
}

pub(super) fn delete(username: &str) -> Operation {
    Operation::DeleteAccount {
        username: username.to_owned(),
    }
}

pub(super) fn send(from: &str, to: &str, message: &str) -> Operation {
    Operation::SendMessage {
        from: from.to_owned(),
        to: to.to_owned(),
        message: message.to_owned(),
    }
}

pub(super) fn fetch(username: &str, first_message_id: u64) -> Operation {
    Operation::FetchMessages {
        username: username.to_owned(),
        first_message_id,
    }
}

fn users(names: &[&str]) -> Reply {
    Reply::with_users(names.iter().map(|name| name.to_string()).collect())
}

fn messages(pairs: &[(&str, &str)]) -> Reply {
    messages_from(1, pairs)
}

/// A fetch reply whose first message has id `first_id`.
fn messages_from(first_id: u64, pairs: &[(&str, &str)]) -> Reply {
    let pairs = pairs
        .iter()
        .map(|&(from, text)| (from.to_owned(), text.to_owned()));
    Reply::with_messages(first_id, pairs.collect())
}

/// A harness with these accounts created, in this order.
fn with_accounts(names: &[&str]) -> Harness {
    let mut harness = Harness::new();
    for name in names {
        assert_eq!(harness.status(create(name)), Status::Success, "{name}");
    }
    harness
}

// ----- Status and Operation -----

#[test]
fn status_codes_and_names_match_the_original_protocol() {
    let table = [
        (Status::Success, 0, "SUCCESS"),
        (Status::NoElement, 1, "NO_ELEMENT"),
        (
            Status::OperationNotSupported,
            100,
            "OPERATION_NOT_SUPPORTED",
        ),
        (Status::InvalidUsername, 101, "INVALID_USERNAME"),
        (Status::AccountNotExist, 102, "ACCOUNT_NOT_EXIST"),
        (Status::MessageTooLong, 103, "MESSAGE_TOO_LONG"),
        (Status::MessageIdTooLarge, 104, "MESSAGE_ID_TOO_LARGE"),
        (Status::AuthFailed, 105, "AUTH_FAILED"),
        (Status::ServerError, 190, "SERVER_ERROR"),
        (Status::GeneralError, 199, "GENERAL_ERROR"),
    ];
    assert_eq!(table.len(), Status::ALL.len());
    for (status, code, name) in table {
        assert_eq!(status.code(), code, "{name}");
        assert_eq!(status.name(), name);
        assert_eq!(status.to_string(), name);
    }
}

#[test]
fn status_from_code_inverts_code_and_rejects_unknown_codes() {
    for status in Status::ALL {
        assert_eq!(Status::from_code(status.code()), Some(status));
    }
    for code in [2, 99, 106, 189, 191, 198, 200, u16::MAX] {
        assert_eq!(Status::from_code(code), None, "{code}");
    }
}

#[test]
fn operation_codes_are_one_to_six_and_reads_are_check_list_fetch() {
    let table = [
        (create("a"), 1, false),
        (check("a"), 2, true),
        (list("*"), 3, true),
        (delete("a"), 4, false),
        (send("a", "b", "m"), 5, false),
        (fetch("a", 1), 6, true),
    ];
    for (operation, code, read_only) in table {
        assert_eq!(operation.code(), code, "{operation:?}");
        assert_eq!(operation.is_read_only(), read_only, "{operation:?}");
    }
}

// ----- create_account and usernames -----

#[test]
fn create_account_succeeds_and_check_then_finds_it() {
    let mut harness = Harness::new();
    assert_eq!(harness.status(create("alice")), Status::Success);
    assert_eq!(harness.status(check("alice")), Status::Success);
    assert_eq!(harness.chat.account_count(), 1);
}

#[test]
fn create_existing_account_is_general_error() {
    let mut harness = with_accounts(&["alice"]);
    assert_eq!(harness.status(create("alice")), Status::GeneralError);
    assert_eq!(harness.chat.account_count(), 1);
}

#[test]
fn username_of_20_characters_is_valid_and_21_is_invalid() {
    let mut harness = Harness::new();
    assert_eq!(harness.status(create(&"u".repeat(20))), Status::Success);
    assert_eq!(
        harness.status(create(&"v".repeat(21))),
        Status::InvalidUsername
    );
    assert_eq!(
        harness.status(check(&"v".repeat(21))),
        Status::AccountNotExist
    );
}

#[test]
fn username_length_counts_characters_not_bytes() {
    let mut harness = Harness::new();
    assert_eq!(harness.status(create(&"é".repeat(20))), Status::Success);
    assert_eq!(harness.status(create(&"🙂".repeat(20))), Status::Success);
    assert_eq!(
        harness.status(create(&"ü".repeat(21))),
        Status::InvalidUsername
    );
}

#[test]
fn empty_username_is_invalid() {
    let mut harness = Harness::new();
    assert_eq!(harness.status(create("")), Status::InvalidUsername);
}

#[test]
fn username_with_a_control_character_is_invalid() {
    let mut harness = Harness::new();
    for name in ["a\nb", "tab\t", "\0", "del\u{7f}", "c1\u{85}", "\u{1b}[31m"] {
        assert_eq!(
            harness.status(create(name)),
            Status::InvalidUsername,
            "{name:?}"
        );
    }
    assert_eq!(harness.chat.account_count(), 0);
}

#[test]
fn username_may_hold_spaces_punctuation_and_glob_characters() {
    let mut harness = Harness::new();
    for name in ["a b", "*", "[x]", "名前", "o'neil"] {
        assert_eq!(harness.status(create(name)), Status::Success, "{name:?}");
    }
}

// ----- check_account -----

#[test]
fn check_of_missing_account_is_account_not_exist() {
    let mut harness = with_accounts(&["alice"]);
    assert_eq!(harness.status(check("bob")), Status::AccountNotExist);
    assert_eq!(harness.status(check("Alice")), Status::AccountNotExist);
}

#[test]
fn check_of_invalid_username_is_account_not_exist() {
    let mut harness = Harness::new();
    assert_eq!(harness.status(check("")), Status::AccountNotExist);
    assert_eq!(harness.status(check("a\n")), Status::AccountNotExist);
}

// ----- list_account -----

#[test]
fn list_star_returns_every_account_in_creation_order() {
    let mut harness = with_accounts(&["carol", "alice", "bob"]);
    assert_eq!(harness.run(list("*")), users(&["carol", "alice", "bob"]));
}

#[test]
fn list_returns_only_accounts_matching_the_glob() {
    let mut harness = with_accounts(&["alice", "albert", "bob", "al"]);
    assert_eq!(harness.run(list("al*")), users(&["alice", "albert", "al"]));
    assert_eq!(harness.run(list("?ob")), users(&["bob"]));
    assert_eq!(
        harness.run(list("[ab]l*")),
        users(&["alice", "albert", "al"])
    );
    assert_eq!(harness.run(list("al")), users(&["al"]));
}

#[test]
fn list_with_no_match_is_success_with_no_users() {
    let mut harness = with_accounts(&["alice"]);
    assert_eq!(harness.run(list("z*")), users(&[]));
    assert_eq!(Harness::new().run(list("*")), users(&[]));
}

#[test]
fn list_after_delete_and_recreate_puts_the_account_last() {
    let mut harness = with_accounts(&["a", "b", "c"]);
    assert_eq!(harness.status(delete("a")), Status::Success);
    assert_eq!(harness.run(list("*")), users(&["b", "c"]));
    assert_eq!(harness.status(create("a")), Status::Success);
    assert_eq!(harness.run(list("*")), users(&["b", "c", "a"]));
}

#[test]
fn list_pattern_of_256_characters_is_accepted_and_257_is_general_error() {
    let mut harness = with_accounts(&["x"]);
    let longest = "*".repeat(255) + "x";
    assert_eq!(harness.run(list(&longest)), users(&["x"]));
    let multibyte = "é".repeat(256);
    assert_eq!(harness.run(list(&multibyte)), users(&[]));
    let too_long = "*".repeat(257);
    assert_eq!(
        harness.run(list(&too_long)),
        Reply::new(Status::GeneralError)
    );
}

// ----- delete_account -----

#[test]
fn delete_of_missing_account_is_account_not_exist() {
    let mut harness = with_accounts(&["alice"]);
    assert_eq!(harness.status(delete("bob")), Status::AccountNotExist);
    assert_eq!(harness.chat.account_count(), 1);
}

#[test]
fn delete_removes_the_account() {
    let mut harness = with_accounts(&["alice"]);
    assert_eq!(harness.status(delete("alice")), Status::Success);
    assert_eq!(harness.status(check("alice")), Status::AccountNotExist);
    assert_eq!(harness.status(delete("alice")), Status::AccountNotExist);
    assert_eq!(harness.chat.account_count(), 0);
}

#[test]
fn delete_discards_received_messages_but_keeps_those_sent_to_others() {
    let mut harness = with_accounts(&["alice", "bob"]);
    assert_eq!(
        harness.status(send("bob", "alice", "to alice")),
        Status::Success
    );
    assert_eq!(
        harness.status(send("alice", "bob", "to bob")),
        Status::Success
    );
    assert_eq!(harness.status(delete("alice")), Status::Success);
    assert_eq!(
        harness.run(fetch("bob", 1)),
        messages(&[("alice", "to bob")])
    );
    assert_eq!(harness.status(create("alice")), Status::Success);
    assert_eq!(harness.status(fetch("alice", 1)), Status::NoElement);
}

// ----- send_message -----

#[test]
fn send_appends_the_message_to_the_target_inbox() {
    let mut harness = with_accounts(&["alice", "bob"]);
    assert_eq!(harness.status(send("alice", "bob", "hi")), Status::Success);
    assert_eq!(
        harness.status(send("alice", "bob", "again")),
        Status::Success
    );
    let expected = messages(&[("alice", "hi"), ("alice", "again")]);
    assert_eq!(harness.run(fetch("bob", 1)), expected);
    assert_eq!(harness.status(fetch("alice", 1)), Status::NoElement);
}

#[test]
fn send_checks_the_length_before_either_account() {
    let mut harness = with_accounts(&["alice"]);
    let long = "m".repeat(501);
    for (from, to) in [("ghost", "nobody"), ("ghost", "alice"), ("alice", "ghost")] {
        assert_eq!(
            harness.status(send(from, to, &long)),
            Status::MessageTooLong,
            "{from} -> {to}"
        );
    }
}

#[test]
fn send_from_missing_sender_is_account_not_exist_before_the_target_check() {
    let mut harness = with_accounts(&["bob"]);
    assert_eq!(
        harness.status(send("ghost", "bob", "hi")),
        Status::AccountNotExist
    );
    assert_eq!(
        harness.status(send("ghost", "nobody", "hi")),
        Status::AccountNotExist
    );
    assert_eq!(harness.status(fetch("bob", 1)), Status::NoElement);
}

#[test]
fn send_to_missing_target_is_account_not_exist() {
    let mut harness = with_accounts(&["alice"]);
    assert_eq!(
        harness.status(send("alice", "ghost", "hi")),
        Status::AccountNotExist
    );
    assert_eq!(harness.status(fetch("alice", 1)), Status::NoElement);
}

#[test]
fn message_of_500_characters_is_sent_and_501_is_too_long() {
    let mut harness = with_accounts(&["alice", "bob"]);
    let longest = "m".repeat(500);
    assert_eq!(
        harness.status(send("alice", "bob", &longest)),
        Status::Success
    );
    let too_long = "m".repeat(501);
    assert_eq!(
        harness.status(send("alice", "bob", &too_long)),
        Status::MessageTooLong
    );
    assert_eq!(
        harness.run(fetch("bob", 1)),
        messages(&[("alice", &longest)])
    );
}

#[test]
fn message_length_counts_characters_not_bytes() {
    let mut harness = with_accounts(&["alice", "bob"]);
    let longest = "🙂".repeat(500);
    assert_eq!(
        harness.status(send("alice", "bob", &longest)),
        Status::Success
    );
    let too_long = "é".repeat(501);
    assert_eq!(
        harness.status(send("alice", "bob", &too_long)),
        Status::MessageTooLong
    );
}

#[test]
fn send_to_yourself_is_allowed() {
    let mut harness = with_accounts(&["alice"]);
    assert_eq!(
        harness.status(send("alice", "alice", "note")),
        Status::Success
    );
    assert_eq!(
        harness.run(fetch("alice", 1)),
        messages(&[("alice", "note")])
    );
}

#[test]
fn empty_message_is_allowed() {
    let mut harness = with_accounts(&["alice", "bob"]);
    assert_eq!(harness.status(send("alice", "bob", "")), Status::Success);
    assert_eq!(harness.run(fetch("bob", 1)), messages(&[("alice", "")]));
}

// ----- fetch_messages -----

/// Alice and bob, with `count` messages "m1", "m2", ... from alice in bob's inbox.
fn with_inbox(count: usize) -> Harness {
    let mut harness = with_accounts(&["alice", "bob"]);
    for number in 1..=count {
        let text = format!("m{number}");
        assert_eq!(harness.status(send("alice", "bob", &text)), Status::Success);
    }
    harness
}

#[test]
fn fetch_from_a_middle_id_returns_that_message_and_later_ones() {
    let mut harness = with_inbox(3);
    assert_eq!(
        harness.run(fetch("bob", 2)),
        messages_from(2, &[("alice", "m2"), ("alice", "m3")])
    );
}

#[test]
fn fetch_from_the_last_id_returns_one_message() {
    let mut harness = with_inbox(3);
    assert_eq!(
        harness.run(fetch("bob", 3)),
        messages_from(3, &[("alice", "m3")])
    );
}

#[test]
fn fetch_from_id_zero_is_general_error() {
    let mut harness = with_inbox(3);
    assert_eq!(
        harness.run(fetch("bob", 0)),
        Reply::new(Status::GeneralError)
    );
}

#[test]
fn fetch_past_the_end_is_no_element() {
    let mut harness = with_inbox(3);
    assert_eq!(harness.run(fetch("bob", 4)), Reply::new(Status::NoElement));
    assert_eq!(
        harness.run(fetch("bob", u64::MAX)),
        Reply::new(Status::NoElement)
    );
    assert_eq!(
        harness.run(fetch("alice", 1)),
        Reply::new(Status::NoElement)
    );
}

#[test]
fn fetch_checks_the_id_before_the_account() {
    let mut harness = with_inbox(1);
    assert_eq!(harness.status(fetch("ghost", 1)), Status::AccountNotExist);
    assert_eq!(harness.status(fetch("ghost", 0)), Status::GeneralError);
    assert_eq!(harness.status(fetch("ghost", 2)), Status::AccountNotExist);
}

#[test]
fn fetch_returns_at_most_fetch_messages_max_and_the_client_pages_on() {
    let total = FETCH_MESSAGES_MAX + 5;
    let mut harness = with_inbox(total);
    let first_page = harness.run(fetch("bob", 1));
    assert_eq!(first_page.messages.len(), FETCH_MESSAGES_MAX);
    assert_eq!(first_page.messages[0].1, "m1");
    let next_id = FETCH_MESSAGES_MAX as u64 + 1;
    let second_page = harness.run(fetch("bob", next_id));
    assert_eq!(second_page.messages.len(), 5);
    assert_eq!(second_page.messages[0].1, format!("m{next_id}"));
    assert_eq!(second_page.messages[4].1, format!("m{total}"));
}

// ----- retention -----

/// A harness whose chat retains at most `inbox` messages per inbox and `bytes` in all.
fn with_limits(inbox: u64, bytes: u64) -> Harness {
    let limits = ChatLimits {
        inbox_messages_max: inbox,
        retained_bytes_max: bytes,
    };
    let mut harness = Harness::with_chat(Chat::with_limits(limits));
    for name in ["alice", "bob", "carol"] {
        assert_eq!(harness.status(create(name)), Status::Success);
    }
    harness
}

#[test]
fn a_full_inbox_drops_its_oldest_message_and_ids_stay_stable() {
    let mut harness = with_limits(3, crate::limits::RETAINED_BYTES_MAX);
    for k in 1..=5 {
        let text = format!("m{k}");
        assert_eq!(harness.status(send("alice", "bob", &text)), Status::Success);
    }
    let kept = messages_from(3, &[("alice", "m3"), ("alice", "m4"), ("alice", "m5")]);
    assert_eq!(
        harness.run(fetch("bob", 1)),
        kept,
        "from below the oldest: the oldest on"
    );
    assert_eq!(harness.run(fetch("bob", 3)), kept);
    assert_eq!(
        harness.run(fetch("bob", 5)),
        messages_from(5, &[("alice", "m5")])
    );
    assert_eq!(harness.status(fetch("bob", 6)), Status::NoElement);
}

#[test]
fn beyond_the_retained_bytes_the_oldest_message_anywhere_goes() {
    let bytes = crate::limits::RETAINED_BYTES_MIN;
    let mut harness = with_limits(1000, bytes);
    let text = "x".repeat(400);
    let charge = MESSAGE_OVERHEAD_BYTES + "alice".len() as u64 + 400;
    let fits = bytes / charge;
    // Alternate targets, so the oldest message is in a different inbox each time.
    for k in 0..fits + 2 {
        let to = if k % 2 == 0 { "bob" } else { "carol" };
        assert_eq!(harness.status(send("alice", to, &text)), Status::Success);
    }
    assert!(harness.chat.retained_bytes() <= bytes);
    assert_eq!(harness.chat.retained_bytes(), fits * charge);
    // The first message sent (bob's #1) and the second (carol's #1) were dropped.
    assert_eq!(harness.run(fetch("bob", 1)).first_message_id, 2);
    assert_eq!(harness.run(fetch("carol", 1)).first_message_id, 2);
}

#[test]
fn a_fully_dropped_inbox_answers_no_element_but_keeps_counting_ids() {
    let mut harness = with_limits(1, crate::limits::RETAINED_BYTES_MAX);
    assert_eq!(harness.status(send("alice", "bob", "one")), Status::Success);
    assert_eq!(harness.status(send("alice", "bob", "two")), Status::Success);
    assert_eq!(
        harness.run(fetch("bob", 1)),
        messages_from(2, &[("alice", "two")])
    );
    assert_eq!(harness.status(fetch("bob", 3)), Status::NoElement);
}

#[test]
fn deleting_an_account_releases_its_retained_bytes() {
    let mut harness = with_limits(100, crate::limits::RETAINED_BYTES_MAX);
    assert_eq!(
        harness.status(send("alice", "bob", "hello")),
        Status::Success
    );
    assert_eq!(harness.status(send("bob", "carol", "hi")), Status::Success);
    let carol_only = harness.chat.retained_bytes() - (MESSAGE_OVERHEAD_BYTES + 10);
    assert_eq!(harness.status(delete("bob")), Status::Success);
    assert_eq!(harness.chat.retained_bytes(), carol_only);
    assert_eq!(harness.status(create("bob")), Status::Success);
    assert_eq!(
        harness.status(fetch("bob", 1)),
        Status::NoElement,
        "a new inbox starts empty"
    );
}

#[test]
fn limits_out_of_range_are_refused() {
    let bad = [
        ChatLimits {
            inbox_messages_max: 0,
            ..ChatLimits::default()
        },
        ChatLimits {
            retained_bytes_max: crate::limits::RETAINED_BYTES_MAX + 1,
            ..ChatLimits::default()
        },
        ChatLimits {
            retained_bytes_max: 1,
            ..ChatLimits::default()
        },
    ];
    for limits in bad {
        assert!(limits.validate().is_err(), "{limits:?}");
    }
    assert_eq!(ChatLimits::default().validate(), Ok(()));
}

#[test]
fn a_copy_taken_for_a_snapshot_does_not_change_as_the_state_does() {
    let mut harness = with_limits(4, crate::limits::RETAINED_BYTES_MIN);
    for k in 0..20 {
        harness.run(send("alice", "bob", &format!("before {k}")));
    }
    let copy = harness.chat.clone();
    let bytes = copy.snapshot();
    for k in 0..20 {
        harness.run(send("carol", "bob", &format!("after {k}")));
    }
    assert_eq!(copy.snapshot(), bytes);
    assert_eq!(Chat::restore(&bytes), Ok(copy));
}

// ----- query -----

#[test]
fn query_gives_the_reply_apply_gives_for_read_only_operations() {
    let mut harness = with_inbox(3);
    let reads = [
        check("bob"),
        check("ghost"),
        list("*"),
        list(&"x".repeat(300)),
    ];
    let more_reads = [
        fetch("bob", 2),
        fetch("bob", 0),
        fetch("bob", 9),
        fetch("ghost", 1),
    ];
    for operation in reads.into_iter().chain(more_reads) {
        let queried = harness.chat.query(&operation);
        assert_eq!(harness.run(operation.clone()), queried, "{operation:?}");
    }
}

#[test]
fn query_of_a_write_is_operation_not_supported_and_changes_nothing() {
    let harness = with_accounts(&["alice", "bob"]);
    let before = harness.chat.clone();
    for operation in [create("carol"), delete("alice"), send("alice", "bob", "hi")] {
        let reply = harness.chat.query(&operation);
        assert_eq!(
            reply,
            Reply::new(Status::OperationNotSupported),
            "{operation:?}"
        );
    }
    assert_eq!(harness.chat, before);
}

// ----- sessions -----

#[test]
fn register_names_the_client_after_its_log_index() {
    let mut chat = Chat::new();
    let outcome = chat.apply(LogIndex(7), &Command::RegisterClient);
    assert_eq!(outcome, Outcome::Registered(ClientId(7)));
    assert_eq!(chat.session_count(), 1);
}

#[test]
fn retry_with_the_same_sequence_returns_the_same_reply_and_does_not_send_twice() {
    let mut harness = with_accounts(&["alice", "bob"]);
    let sequence = harness.sequence + 1;
    let first = harness.submit(sequence, send("alice", "bob", "once"));
    let retry = harness.submit(sequence, send("alice", "bob", "once"));
    let success = Reply::new(Status::Success);
    assert_eq!(
        first,
        Outcome::Replied {
            reply: success.clone(),
            duplicate: false
        }
    );
    assert_eq!(
        retry,
        Outcome::Replied {
            reply: success,
            duplicate: true
        }
    );
    harness.sequence = sequence;
    assert_eq!(harness.run(fetch("bob", 1)), messages(&[("alice", "once")]));
}

#[test]
fn retried_create_returns_its_first_success_not_general_error() {
    let mut harness = Harness::new();
    assert_eq!(harness.status(create("alice")), Status::Success);
    let retry = harness.submit(harness.sequence, create("alice"));
    let expected = Outcome::Replied {
        reply: Reply::new(Status::Success),
        duplicate: true,
    };
    assert_eq!(retry, expected);
}

/// A retried read is evaluated again at the index the retry commits at: that state lies inside
/// the operation's window, so the answer is linearizable, and sessions never hold fetch replies.
#[test]
fn retried_read_is_evaluated_again_at_its_new_index() {
    let mut harness = with_inbox(1);
    let first = harness.run(fetch("bob", 1));
    assert_eq!(first.messages.len(), 1);
    let other = harness.register();
    let command = Command::Client {
        client_id: other,
        sequence: 1,
        operation: send("alice", "bob", "later"),
    };
    let index = harness.next_index();
    harness.chat.apply(index, &command);
    let retry = harness.submit(harness.sequence, fetch("bob", 1));
    let Outcome::Replied {
        reply,
        duplicate: true,
    } = retry
    else {
        panic!("expected a duplicate reply, got {retry:?}");
    };
    assert_eq!(
        reply.messages.len(),
        2,
        "the retry sees the state at its own index"
    );
}

/// Create refuses a new account once ACCOUNTS_MAX exist, so a list reply fits one frame.
#[test]
fn create_account_is_refused_beyond_the_account_bound() {
    let mut chat = Chat::new();
    let mut index = 0;
    let mut create = |chat: &mut Chat, name: String| {
        index += 1;
        let register = Command::RegisterClient;
        if index == 1 {
            chat.apply(LogIndex(index), &register);
            index += 1;
        }
        let operation = Operation::CreateAccount { username: name };
        let command = Command::Client {
            client_id: ClientId(1),
            sequence: index,
            operation,
        };
        match chat.apply(LogIndex(index), &command) {
            Outcome::Replied { reply, .. } => reply.status,
            other => panic!("{other:?}"),
        }
    };
    for k in 0..crate::limits::ACCOUNTS_MAX {
        assert_eq!(create(&mut chat, format!("u{k}")), Status::Success);
    }
    assert_eq!(
        create(&mut chat, "one-too-many".into()),
        Status::GeneralError
    );
    assert_eq!(chat.account_count(), crate::limits::ACCOUNTS_MAX);
}

#[test]
fn stale_sequence_applies_nothing() {
    let mut harness = with_accounts(&["alice", "bob"]);
    assert_eq!(harness.status(send("alice", "bob", "new")), Status::Success);
    let stale = harness.sequence - 1;
    let before = harness.chat.query(&fetch("bob", 1));
    assert_eq!(
        harness.submit(stale, send("alice", "bob", "old")),
        Outcome::StaleSequence
    );
    assert_eq!(harness.chat.query(&fetch("bob", 1)), before);
}

#[test]
fn sequence_zero_is_stale_even_on_a_fresh_session() {
    let mut harness = Harness::new();
    assert_eq!(harness.submit(0, create("alice")), Outcome::StaleSequence);
    assert_eq!(harness.chat.account_count(), 0);
}

#[test]
fn sequence_may_skip_ahead_and_then_lower_ones_are_stale() {
    let mut harness = Harness::new();
    let outcome = harness.submit(5, create("alice"));
    let expected = Outcome::Replied {
        reply: Reply::new(Status::Success),
        duplicate: false,
    };
    assert_eq!(outcome, expected);
    assert_eq!(harness.submit(4, create("bob")), Outcome::StaleSequence);
    assert_eq!(harness.chat.account_count(), 1);
}

#[test]
fn unknown_session_is_expired_and_applies_nothing() {
    let mut chat = Chat::new();
    let command = Command::Client {
        client_id: ClientId(42),
        sequence: 1,
        operation: create("alice"),
    };
    assert_eq!(chat.apply(LogIndex(1), &command), Outcome::SessionExpired);
    assert_eq!(chat.account_count(), 0);
    assert_eq!(chat.applied_index(), LogIndex(1));
}

/// A chat that keeps two sessions, with `first` and `second` registered at indexes 1 and 2.
fn two_session_harness() -> (Harness, ClientId) {
    let mut harness = Harness::with_chat(Chat::with_sessions_max(2));
    let second = harness.register();
    (harness, second)
}

fn is_expired(harness: &mut Harness, client_id: ClientId) -> bool {
    let command = Command::Client {
        client_id,
        sequence: 1,
        operation: check("x"),
    };
    let index = harness.next_index();
    harness.chat.apply(index, &command) == Outcome::SessionExpired
}

#[test]
fn registering_past_the_bound_evicts_the_least_recently_active_session() {
    let (mut harness, second) = two_session_harness();
    let first = harness.client_id;
    assert_eq!(harness.status(check("x")), Status::AccountNotExist);
    let third = harness.register();
    assert_eq!(harness.chat.session_count(), 2);
    assert!(is_expired(&mut harness, second));
    assert!(!is_expired(&mut harness, first));
    assert!(!is_expired(&mut harness, third));
}

#[test]
fn with_no_activity_the_oldest_registration_is_evicted_first() {
    let (mut harness, second) = two_session_harness();
    let first = harness.client_id;
    let _third = harness.register();
    assert!(is_expired(&mut harness, first));
    assert!(!is_expired(&mut harness, second));
}

#[test]
fn a_duplicate_answer_refreshes_the_session() {
    let (mut harness, second) = two_session_harness();
    let first = harness.client_id;
    assert_eq!(harness.status(check("x")), Status::AccountNotExist);
    let _touch_second = is_expired(&mut harness, second);
    let retry = harness.submit(harness.sequence, check("x"));
    assert!(matches!(
        retry,
        Outcome::Replied {
            duplicate: true,
            ..
        }
    ));
    let _third = harness.register();
    assert!(is_expired(&mut harness, second));
    assert!(!is_expired(&mut harness, first));
}

#[test]
fn a_stale_sequence_does_not_refresh_the_session() {
    let (mut harness, second) = two_session_harness();
    let first = harness.client_id;
    assert_eq!(harness.submit(0, check("x")), Outcome::StaleSequence);
    let _third = harness.register();
    assert!(is_expired(&mut harness, first));
    assert!(!is_expired(&mut harness, second));
}

#[test]
fn session_table_never_exceeds_its_bound() {
    let mut harness = Harness::with_chat(Chat::with_sessions_max(3));
    for _ in 0..10 {
        harness.register();
        assert!(harness.chat.session_count() <= 3);
    }
    assert_eq!(harness.chat.session_count(), 3);
}

// ----- applied index -----

#[test]
fn applied_index_starts_at_zero_and_follows_apply_and_noop() {
    let mut chat = Chat::new();
    assert_eq!(chat.applied_index(), LogIndex(0));
    chat.apply_noop(LogIndex(1));
    assert_eq!(chat.applied_index(), LogIndex(1));
    chat.apply(LogIndex(5), &Command::RegisterClient);
    assert_eq!(chat.applied_index(), LogIndex(5));
}

#[test]
#[should_panic(expected = "applied after")]
fn apply_at_a_repeated_index_panics() {
    let mut chat = Chat::new();
    chat.apply(LogIndex(3), &Command::RegisterClient);
    chat.apply(LogIndex(3), &Command::RegisterClient);
}

#[test]
#[should_panic(expected = "applied after")]
fn noop_at_a_lower_index_panics() {
    let mut chat = Chat::new();
    chat.apply_noop(LogIndex(3));
    chat.apply_noop(LogIndex(2));
}

#[test]
#[should_panic(expected = "applied after")]
fn apply_at_index_zero_panics() {
    Chat::new().apply_noop(LogIndex(0));
}

/// Cutting over-long strings never changes a reply: a table of operations over and under every
/// limit, applied to twin states, one with the original and one with the bounded operation.
#[test]
fn bounded_operations_get_identical_replies() {
    let long_name = "n".repeat(5000);
    let long_message = "m".repeat(100_000);
    let long_pattern = "*".repeat(10_000);
    let operations = vec![
        Operation::CreateAccount {
            username: long_name.clone(),
        },
        Operation::CreateAccount {
            username: "a".repeat(21),
        },
        Operation::CheckAccount {
            username: long_name.clone(),
        },
        Operation::DeleteAccount {
            username: long_name.clone(),
        },
        Operation::ListAccounts {
            pattern: long_pattern,
        },
        Operation::ListAccounts {
            pattern: "*".repeat(256),
        },
        Operation::SendMessage {
            from: "alice".into(),
            to: "bob".into(),
            message: long_message.clone(),
        },
        Operation::SendMessage {
            from: "alice".into(),
            to: "bob".into(),
            message: "é".repeat(500),
        },
        Operation::SendMessage {
            from: long_name.clone(),
            to: "bob".into(),
            message: "hi".into(),
        },
        Operation::SendMessage {
            from: "alice".into(),
            to: long_name.clone(),
            message: long_message,
        },
        Operation::FetchMessages {
            username: long_name,
            first_message_id: 1,
        },
    ];
    for operation in operations {
        let mut original = with_accounts(&["alice", "bob"]);
        let mut bounded = with_accounts(&["alice", "bob"]);
        let want = original.run(operation.clone());
        let got = bounded.run(operation.clone().bounded());
        assert_eq!(got, want, "{:?}", operation.code());
    }
}

#[test]
fn bounded_keeps_operations_within_limits_unchanged() {
    let operation = Operation::SendMessage {
        from: "alice".into(),
        to: "bob".into(),
        message: "ü".repeat(500),
    };
    assert_eq!(operation.clone().bounded(), operation);
}

// Accounts with passwords: who may act on them.

const CREDENTIAL: Credential = Credential {
    salt: [7; 16],
    hash: [9; 32],
    memory_kib: 8,
    iterations: 1,
};

fn create_with_password(username: &str) -> Operation {
    Operation::CreateAccountWithPassword {
        username: username.to_owned(),
        credential: CREDENTIAL,
    }
}

impl Harness {
    /// Applies `operation` as this client's next command, acting as `principal`.
    fn run_as(&mut self, principal: &Principal, operation: Operation) -> Reply {
        self.sequence += 1;
        let command = Command::Authenticated {
            principal: principal.clone(),
            client_id: self.client_id,
            sequence: self.sequence,
            operation,
        };
        let index = self.next_index();
        match self.chat.apply(index, &command) {
            Outcome::Replied {
                reply,
                duplicate: false,
            } => reply,
            other => panic!("expected a fresh reply, got {other:?}"),
        }
    }

    /// Creates `username` with a password; returns its owner.
    fn create_protected(&mut self, username: &str) -> Principal {
        assert_eq!(self.status(create_with_password(username)), Status::Success);
        let (owner, credential) = self.chat.credential(username).expect("just created");
        assert_eq!(credential, CREDENTIAL);
        owner
    }
}

#[test]
fn a_protected_account_is_acted_on_only_by_its_owner() {
    let mut harness = Harness::new();
    let carol = harness.create_protected("carol");
    assert_eq!(carol.created, LogIndex(harness.index));
    harness.run(create("bob"));
    // Nobody, and another account's owner, are refused; the owner is not.
    assert_eq!(
        harness.status(send("carol", "bob", "hi")),
        Status::AuthFailed
    );
    assert_eq!(
        harness.chat.query(&fetch("carol", 1)).status,
        Status::AuthFailed
    );
    assert_eq!(harness.status(delete("carol")), Status::AuthFailed);
    let dave = harness.create_protected("dave");
    assert_eq!(
        harness.run_as(&dave, send("carol", "bob", "hi")).status,
        Status::AuthFailed
    );
    assert_eq!(
        harness.run_as(&dave, delete("carol")).status,
        Status::AuthFailed
    );
    assert_eq!(
        harness
            .chat
            .query_as(&fetch("carol", 1), Some(&dave))
            .status,
        Status::AuthFailed
    );
    assert_eq!(
        harness.run_as(&carol, send("carol", "bob", "hi")).status,
        Status::Success
    );
    assert_eq!(
        harness.status(send("bob", "carol", "yo")),
        Status::Success,
        "anyone may write to it"
    );
    assert_eq!(
        harness.chat.query_as(&fetch("carol", 1), Some(&carol)),
        messages(&[("bob", "yo")])
    );
    // Check and list stay open.
    assert_eq!(harness.status(check("carol")), Status::Success);
    assert_eq!(harness.run(list("c*")), users(&["carol"]));
    assert_eq!(
        harness.run_as(&carol, delete("carol")).status,
        Status::Success
    );
}

#[test]
fn an_open_account_stays_open_to_anyone_as_in_the_original() {
    let mut harness = Harness::new();
    harness.run(create("bob"));
    let carol = harness.create_protected("carol");
    assert_eq!(harness.chat.credential("bob"), None);
    assert_eq!(
        harness.run_as(&carol, send("bob", "bob", "as bob")).status,
        Status::Success
    );
    assert_eq!(harness.status(send("bob", "carol", "hi")), Status::Success);
    assert_eq!(harness.status(delete("bob")), Status::Success);
}

#[test]
fn a_token_dies_with_its_account_even_if_the_name_is_taken_again() {
    let mut harness = Harness::new();
    let first = harness.create_protected("carol");
    assert_eq!(
        harness.run_as(&first, delete("carol")).status,
        Status::Success
    );
    let second = harness.create_protected("carol");
    assert_ne!(first, second);
    assert_eq!(
        harness.run_as(&first, send("carol", "carol", "hi")).status,
        Status::AuthFailed
    );
    assert_eq!(
        harness
            .chat
            .query_as(&fetch("carol", 1), Some(&first))
            .status,
        Status::AuthFailed
    );
    assert_eq!(
        harness.run_as(&second, send("carol", "carol", "hi")).status,
        Status::Success
    );
}

#[test]
fn authorization_is_checked_in_the_original_order_of_checks() {
    let mut harness = Harness::new();
    harness.create_protected("carol");
    let long = "m".repeat(MESSAGE_CHARS_MAX + 1);
    assert_eq!(
        harness.status(send("carol", "ghost", &long)),
        Status::MessageTooLong
    );
    assert_eq!(
        harness.status(send("ghost", "carol", "hi")),
        Status::AccountNotExist
    );
    assert_eq!(
        harness.status(send("carol", "ghost", "hi")),
        Status::AuthFailed
    );
    assert_eq!(
        harness.chat.query(&fetch("carol", 0)).status,
        Status::GeneralError
    );
    assert_eq!(harness.status(delete("ghost")), Status::AccountNotExist);
    assert_eq!(
        harness.status(create("carol")),
        Status::GeneralError,
        "the name is taken"
    );
    assert_eq!(
        harness.status(create_with_password("")),
        Status::InvalidUsername
    );
}

#[test]
fn a_password_changes_the_digest_and_survives_a_snapshot() {
    let mut open = Harness::new();
    open.run(create("carol"));
    let mut protected = Harness::new();
    protected.create_protected("carol");
    assert_ne!(open.chat.digest(), protected.chat.digest());
    let restored = Chat::restore(&protected.chat.snapshot()).expect("restores");
    assert_eq!(restored, protected.chat);
    assert_eq!(restored.digest(), protected.chat.digest());
    assert!(restored.credential("carol").is_some());
}

#[test]
fn a_retry_by_another_principal_is_not_answered_from_the_session_table() {
    let mut harness = Harness::new();
    let carol = harness.create_protected("carol");
    harness.run(create("bob"));
    // Someone who guessed carol's session and next sequence gets in first with a harmless
    // command, acting as nobody.
    let sequence = harness.sequence + 1;
    let index = harness.next_index();
    let planted = Command::Client {
        client_id: harness.client_id,
        sequence,
        operation: check("bob"),
    };
    assert!(matches!(
        harness.chat.apply(index, &planted),
        Outcome::Replied { .. }
    ));
    // Carol's real command at that sequence must not be answered with that reply, unapplied.
    let real = Command::Authenticated {
        principal: carol.clone(),
        client_id: harness.client_id,
        sequence,
        operation: send("carol", "bob", "for real"),
    };
    let index = harness.next_index();
    assert_eq!(harness.chat.apply(index, &real), Outcome::SessionExpired);
    // Her own retry of a command she applied is still answered from the table.
    let next = Command::Authenticated {
        principal: carol.clone(),
        client_id: harness.client_id,
        sequence: sequence + 1,
        operation: send("carol", "bob", "again"),
    };
    let index = harness.next_index();
    assert!(matches!(
        harness.chat.apply(index, &next),
        Outcome::Replied {
            duplicate: false,
            ..
        }
    ));
    let index = harness.next_index();
    assert!(matches!(
        harness.chat.apply(index, &next),
        Outcome::Replied {
            duplicate: true,
            ..
        }
    ));
    // And a snapshot keeps whom the session last acted as.
    let restored = Chat::restore(&harness.chat.snapshot()).expect("restores");
    assert_eq!(restored, harness.chat);
    assert_eq!(restored.digest(), harness.chat.digest());
}

#[test]
fn a_hash_of_a_cost_no_node_uses_is_refused() {
    let mut harness = Harness::new();
    let huge = Operation::CreateAccountWithPassword {
        username: "carol".into(),
        credential: Credential {
            memory_kib: u32::MAX,
            ..CREDENTIAL
        },
    };
    assert_eq!(harness.status(huge), Status::GeneralError);
    assert_eq!(harness.status(check("carol")), Status::AccountNotExist);
}

#[test]
fn a_principal_no_account_can_have_acts_as_nobody_and_the_state_still_snapshots() {
    // Found by the chat_commands fuzz target: such a principal was kept in the session, and
    // the snapshot then refused to restore.
    let mut harness = Harness::new();
    harness.run(create("bob"));
    for principal in [
        Principal {
            username: "bell\u{7}".into(),
            created: LogIndex(1),
        },
        Principal {
            username: "bob".into(),
            created: LogIndex(10_000),
        },
    ] {
        assert_eq!(
            harness.run_as(&principal, send("bob", "bob", "hi")).status,
            Status::Success,
            "an open account, acted on by nobody"
        );
        let restored = Chat::restore(&harness.chat.snapshot()).expect("restores");
        assert_eq!(restored, harness.chat);
    }
}
