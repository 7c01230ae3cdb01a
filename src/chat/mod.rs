//! The chat state machine: the six operations of the original CS262 service (BRIEF §1), applied
//! in log order, behind a client session table that makes every command take effect at most
//! once (Raft paper §8, thesis §6.3).
//!
//! It is a pure function of the committed log: [`Chat::apply`] reads no clock, draws no
//! randomness, does no I/O and iterates only ordered collections, so every replica that applied
//! the same log prefix holds the same state and the same [`Chat::digest`]. It must not depend on
//! Raft, the wire codec or the replica; the replica feeds it committed entries in order and
//! carries its outcomes back to clients.
//!
//! Invariants, kept by construction and checked by [`Chat::restore`] on every snapshot:
//! - `accounts` and `creation_order` hold the same usernames. An account's `created` is the log
//!   index of the command that created it and its key in `creation_order`, so creation order is
//!   log order, and a deleted-then-recreated account moves to the end.
//! - Every username is valid ([`is_valid_username`]); every stored message is at most
//!   `MESSAGE_CHARS_MAX` characters.
//! - `sessions` and `sessions_by_activity` hold the same clients, at most `sessions_max` of them.
//!   A session's `last_active` is the index of the last command that touched it; no two sessions
//!   share one, because one log index touches at most one session. Eviction takes the least
//!   recently active, so it depends on log indexes alone.
//! - `applied_index` is the last index applied and strictly increases; every index stored in
//!   the state is at most it.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::{
    ACCOUNTS_MAX, FETCH_MESSAGES_MAX, MESSAGE_CHARS_MAX, PATTERN_CHARS_MAX, SESSIONS_MAX,
    USERNAME_CHARS_MAX,
};
use crate::types::{ClientId, LogIndex};

mod digest;
pub mod glob;
mod snapshot;

pub use snapshot::ChatSnapshotError;

/// A reply's status, numbered as in the original service so that its clients keep working.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The operation succeeded.
    Success,
    /// `fetch_messages` asked for a first id beyond the end of the inbox.
    NoElement,
    /// The operation cannot be served this way (a write given to [`Chat::query`]).
    OperationNotSupported,
    /// `create_account` got an empty or overlong username, or one with a control character.
    InvalidUsername,
    /// A named account does not exist.
    AccountNotExist,
    /// `send_message` got a message longer than `MESSAGE_CHARS_MAX` characters.
    MessageTooLong,
    /// Kept for protocol compatibility; the chat state machine never returns it.
    MessageIdTooLarge,
    /// This server cannot serve the request (it is not the leader). The replica answers with it;
    /// the chat state machine never does.
    ServerError,
    /// Any other failure: an account that already exists, a fetch id below 1, an overlong
    /// pattern.
    GeneralError,
}

impl Status {
    /// Every status, in code order.
    pub const ALL: [Status; 9] = [
        Status::Success,
        Status::NoElement,
        Status::OperationNotSupported,
        Status::InvalidUsername,
        Status::AccountNotExist,
        Status::MessageTooLong,
        Status::MessageIdTooLarge,
        Status::ServerError,
        Status::GeneralError,
    ];

    /// The numeric code of the original protocol.
    pub fn code(self) -> u16 {
        match self {
            Status::Success => 0,
            Status::NoElement => 1,
            Status::OperationNotSupported => 100,
            Status::InvalidUsername => 101,
            Status::AccountNotExist => 102,
            Status::MessageTooLong => 103,
            Status::MessageIdTooLarge => 104,
            Status::ServerError => 190,
            Status::GeneralError => 199,
        }
    }

    /// The status with this numeric code, if there is one.
    pub fn from_code(code: u16) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.code() == code)
    }

    /// The upper snake case name of the original protocol, e.g. `"ACCOUNT_NOT_EXIST"`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::NoElement => "NO_ELEMENT",
            Status::OperationNotSupported => "OPERATION_NOT_SUPPORTED",
            Status::InvalidUsername => "INVALID_USERNAME",
            Status::AccountNotExist => "ACCOUNT_NOT_EXIST",
            Status::MessageTooLong => "MESSAGE_TOO_LONG",
            Status::MessageIdTooLarge => "MESSAGE_ID_TOO_LARGE",
            Status::ServerError => "SERVER_ERROR",
            Status::GeneralError => "GENERAL_ERROR",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One of the six chat operations (BRIEF §1), with its request fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// `create_account` (code 1).
    CreateAccount {
        /// The new account's name.
        username: String,
    },
    /// `check_account` (code 2).
    CheckAccount {
        /// The account to look for.
        username: String,
    },
    /// `list_account` (code 3): the usernames matching a shell glob, in creation order.
    ListAccounts {
        /// A shell glob (see [`glob`]) of at most `PATTERN_CHARS_MAX` characters.
        pattern: String,
    },
    /// `delete_account` (code 4).
    DeleteAccount {
        /// The account to delete.
        username: String,
    },
    /// `send_message` (code 5).
    SendMessage {
        /// The sending account.
        from: String,
        /// The receiving account.
        to: String,
        /// The text, at most `MESSAGE_CHARS_MAX` characters.
        message: String,
    },
    /// `fetch_messages` (code 6).
    FetchMessages {
        /// The account whose inbox to read.
        username: String,
        /// The 1-based id of the first message wanted.
        first_message_id: u64,
    },
}

impl Operation {
    /// The operation's code in the original protocol, 1 to 6.
    pub fn code(&self) -> u8 {
        match self {
            Operation::CreateAccount { .. } => 1,
            Operation::CheckAccount { .. } => 2,
            Operation::ListAccounts { .. } => 3,
            Operation::DeleteAccount { .. } => 4,
            Operation::SendMessage { .. } => 5,
            Operation::FetchMessages { .. } => 6,
        }
    }

    /// Whether the operation leaves the state unchanged (check, list, fetch).
    pub fn is_read_only(&self) -> bool {
        match self {
            Operation::CheckAccount { .. }
            | Operation::ListAccounts { .. }
            | Operation::FetchMessages { .. } => true,
            Operation::CreateAccount { .. }
            | Operation::DeleteAccount { .. }
            | Operation::SendMessage { .. } => false,
        }
    }

    /// The same operation with every string cut to one character past its limit. The reply is
    /// identical in every state (a string over its limit fails the same check whatever its
    /// length), and the encoded command, which is replicated and stored, stays small however
    /// large the client's input was.
    pub fn bounded(self) -> Operation {
        let user = |s: String| cut_chars(s, USERNAME_CHARS_MAX + 1);
        match self {
            Operation::CreateAccount { username } => Operation::CreateAccount {
                username: user(username),
            },
            Operation::CheckAccount { username } => Operation::CheckAccount {
                username: user(username),
            },
            Operation::DeleteAccount { username } => Operation::DeleteAccount {
                username: user(username),
            },
            Operation::ListAccounts { pattern } => Operation::ListAccounts {
                pattern: cut_chars(pattern, PATTERN_CHARS_MAX + 1),
            },
            Operation::SendMessage { from, to, message } => Operation::SendMessage {
                from: user(from),
                to: user(to),
                message: cut_chars(message, MESSAGE_CHARS_MAX + 1),
            },
            Operation::FetchMessages {
                username,
                first_message_id,
            } => Operation::FetchMessages {
                username: user(username),
                first_message_id,
            },
        }
    }
}

/// `s` cut to at most `chars_max` characters.
fn cut_chars(mut s: String, chars_max: usize) -> String {
    if let Some((byte_index, _)) = s.char_indices().nth(chars_max) {
        s.truncate(byte_index);
    }
    s
}

/// The answer to one operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The outcome.
    pub status: Status,
    /// The matching usernames, in creation order; filled only by a successful `list_account`.
    pub users: Vec<String>,
    /// `(sender, text)` pairs from the requested id on; filled only by a successful
    /// `fetch_messages`.
    pub messages: Vec<(String, String)>,
}

impl Reply {
    /// A reply with this status and no users or messages.
    pub fn new(status: Status) -> Reply {
        Reply {
            status,
            users: Vec::new(),
            messages: Vec::new(),
        }
    }

    /// A successful `list_account` reply.
    pub fn with_users(users: Vec<String>) -> Reply {
        Reply {
            users,
            ..Reply::new(Status::Success)
        }
    }

    /// A successful `fetch_messages` reply.
    pub fn with_messages(messages: Vec<(String, String)>) -> Reply {
        Reply {
            messages,
            ..Reply::new(Status::Success)
        }
    }
}

/// A command in the replicated log, for the chat state machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Opens a client session; the new [`ClientId`] is the log index this command is applied at
    /// (Raft thesis §6.3), so every replica assigns the same one.
    RegisterClient,
    /// One operation under a session. `sequence` starts at 1 and grows by one per new command;
    /// a retry reuses it. Sequence 0 is never valid and is answered as stale.
    Client {
        /// The session, as returned by [`Outcome::Registered`].
        client_id: ClientId,
        /// The client's number for this command.
        sequence: u64,
        /// What to do.
        operation: Operation,
    },
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A session was opened with this id.
    Registered(ClientId),
    /// The operation was applied now, or (`duplicate` true) its earlier reply was answered from
    /// the session table without applying it again.
    Replied {
        /// The operation's reply.
        reply: Reply,
        /// Whether this was a retry answered from the session table.
        duplicate: bool,
    },
    /// The session is unknown (never registered, or evicted): nothing was applied. The client
    /// must register again and treat the command's outcome as unknown.
    SessionExpired,
    /// The sequence is below the session's last applied one (or is 0): an old retry overtaken
    /// by a newer command. Nothing was applied.
    StaleSequence,
}

/// Whether `username` is a valid account name: non-empty, at most `USERNAME_CHARS_MAX`
/// characters (Unicode scalar values), and no control characters.
pub fn is_valid_username(username: &str) -> bool {
    !username.is_empty()
        && chars_at_most(username, USERNAME_CHARS_MAX)
        && !username.chars().any(char::is_control)
}

/// Whether `text` has at most `max` characters; reads at most `max + 1` of them.
fn chars_at_most(text: &str, max: usize) -> bool {
    text.chars().nth(max).is_none()
}

/// One account: when it was created and the messages it has received, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Account {
    created: LogIndex,
    inbox: Vec<(String, String)>,
    /// A hash chained over `inbox`, in order (see `digest`).
    inbox_chain: u64,
}

/// One client session (Raft thesis §6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    /// The sequence of the last command applied under this session; 0 before the first.
    last_sequence: u64,
    /// That command's reply. Invariant: `None` exactly when `last_sequence` is 0.
    last_reply: Option<Reply>,
    /// The index of the last command that registered, applied or answered under this session.
    last_active: LogIndex,
}

/// The chat state machine: accounts, inboxes, sessions and the applied index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chat {
    accounts: BTreeMap<String, Account>,
    // Invariant: exactly the usernames of `accounts`, each keyed by its account's `created`.
    creation_order: BTreeMap<LogIndex, String>,
    sessions: BTreeMap<ClientId, Session>,
    // Invariant: exactly the clients of `sessions`, each keyed by its session's `last_active`.
    sessions_by_activity: BTreeMap<LogIndex, ClientId>,
    sessions_max: usize,
    applied_index: LogIndex,
    // Invariant: the wrapping sum of `digest::account` over every account.
    accounts_digest: u64,
    // Invariant: the wrapping sum of `digest::session` over every session.
    sessions_digest: u64,
}

impl Default for Chat {
    fn default() -> Chat {
        Chat::new()
    }
}

impl Chat {
    /// An empty state: no accounts, no sessions, nothing applied.
    pub fn new() -> Chat {
        Chat::with_sessions_max(SESSIONS_MAX)
    }

    /// An empty state that keeps at most `sessions_max` sessions (tests use small tables).
    pub(crate) fn with_sessions_max(sessions_max: usize) -> Chat {
        assert!(
            (1..=SESSIONS_MAX).contains(&sessions_max),
            "chat: bad sessions_max"
        );
        Chat {
            accounts: BTreeMap::new(),
            creation_order: BTreeMap::new(),
            sessions: BTreeMap::new(),
            sessions_by_activity: BTreeMap::new(),
            sessions_max,
            applied_index: LogIndex(0),
            accounts_digest: 0,
            sessions_digest: 0,
        }
    }

    /// Applies the committed command at `index`. Indexes must strictly increase across calls to
    /// `apply` and [`Chat::apply_noop`]; anything else is a programmer error and panics.
    pub fn apply(&mut self, index: LogIndex, command: &Command) -> Outcome {
        self.advance_applied_index(index);
        match command {
            Command::RegisterClient => Outcome::Registered(self.register_client(index)),
            Command::Client {
                client_id,
                sequence,
                operation,
            } => self.apply_client(index, *client_id, *sequence, operation),
        }
    }

    /// Records that `index` was applied without a chat command (e.g. a Raft no-op), so that
    /// [`Chat::applied_index`] stays exact. Indexes must strictly increase, as for `apply`.
    pub fn apply_noop(&mut self, index: LogIndex) {
        self.advance_applied_index(index);
    }

    /// The index of the last command applied; `LogIndex(0)` before any.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// How many accounts exist.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// How many client sessions are remembered.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Evaluates an operation against the current state without a session and without changing
    /// anything. A read-only operation gets the same reply `apply` would give it now; a write
    /// gets `OPERATION_NOT_SUPPORTED`.
    pub fn query(&self, operation: &Operation) -> Reply {
        match operation {
            Operation::CheckAccount { username } => self.check_account(username),
            Operation::ListAccounts { pattern } => self.list_accounts(pattern),
            Operation::FetchMessages {
                username,
                first_message_id,
            } => self.fetch_messages(username, *first_message_id),
            Operation::CreateAccount { .. }
            | Operation::DeleteAccount { .. }
            | Operation::SendMessage { .. } => Reply::new(Status::OperationNotSupported),
        }
    }

    fn advance_applied_index(&mut self, index: LogIndex) {
        assert!(
            index > self.applied_index,
            "chat: index {index} applied after {}",
            self.applied_index
        );
        self.applied_index = index;
    }

    /// Opens a session named after `index`, evicting the least recently active one if the
    /// table is then over its bound. The new session is the most recent, so it survives.
    fn register_client(&mut self, index: LogIndex) -> ClientId {
        let client_id = ClientId(index.0);
        let session = Session {
            last_sequence: 0,
            last_reply: None,
            last_active: index,
        };
        self.sessions_digest = self
            .sessions_digest
            .wrapping_add(digest::session(client_id, &session));
        assert!(self.sessions.insert(client_id, session).is_none());
        assert!(self.sessions_by_activity.insert(index, client_id).is_none());
        if self.sessions.len() > self.sessions_max {
            self.evict_least_recently_active();
        }
        assert!(self.sessions.len() <= self.sessions_max);
        assert_eq!(self.sessions.len(), self.sessions_by_activity.len());
        client_id
    }

    fn evict_least_recently_active(&mut self) {
        if let Some((_, client_id)) = self.sessions_by_activity.pop_first() {
            let session = self
                .sessions
                .remove(&client_id)
                .expect("an indexed session exists");
            let hash = digest::session(client_id, &session);
            self.sessions_digest = self.sessions_digest.wrapping_sub(hash);
        }
    }

    /// Deduplicates by sequence (Raft paper §8), then applies a new command.
    fn apply_client(
        &mut self,
        index: LogIndex,
        client_id: ClientId,
        sequence: u64,
        operation: &Operation,
    ) -> Outcome {
        let Some(session) = self.sessions.get(&client_id) else {
            return Outcome::SessionExpired;
        };
        let ordering = sequence.cmp(&session.last_sequence);
        #[cfg(feature = "mutants")]
        let ordering = match crate::mutants::is_active(crate::mutants::Mutant::SkipSessionDedup) {
            true if ordering == Ordering::Equal && session.last_reply.is_some() => {
                Ordering::Greater
            }
            _ => ordering,
        };
        match (ordering, &session.last_reply) {
            (Ordering::Equal, Some(last_reply)) => {
                // A retried read is evaluated again rather than answered from the table: the
                // state it sees now is still inside the operation's invocation window, so the
                // answer stays linearizable, and sessions need not hold large fetch replies.
                let reply = if operation.is_read_only() {
                    self.query(operation)
                } else {
                    last_reply.clone()
                };
                self.touch_session(client_id, index, None);
                Outcome::Replied {
                    reply,
                    duplicate: true,
                }
            }
            (Ordering::Greater, _) => {
                let reply = self.execute(index, operation);
                // Only a write's reply is needed to answer its retry; a read keeps its status.
                let remembered = if operation.is_read_only() {
                    Reply::new(reply.status)
                } else {
                    reply.clone()
                };
                self.touch_session(client_id, index, Some((sequence, remembered)));
                Outcome::Replied {
                    reply,
                    duplicate: false,
                }
            }
            // Equal without a reply is sequence 0 on a fresh session: never a valid command.
            (Ordering::Less, _) | (Ordering::Equal, None) => Outcome::StaleSequence,
        }
    }

    /// Marks the session active at `index` and, for a newly applied command, remembers its
    /// sequence and reply.
    fn touch_session(
        &mut self,
        client_id: ClientId,
        index: LogIndex,
        applied: Option<(u64, Reply)>,
    ) {
        let Some(session) = self.sessions.get_mut(&client_id) else {
            panic!("chat: touched session {client_id} does not exist");
        };
        let before = digest::session(client_id, session);
        let moved = self.sessions_by_activity.remove(&session.last_active);
        assert_eq!(moved, Some(client_id));
        assert!(session.last_active < index);
        session.last_active = index;
        if let Some((sequence, reply)) = applied {
            #[cfg(feature = "mutants")]
            let reapplied = crate::mutants::is_active(crate::mutants::Mutant::SkipSessionDedup);
            #[cfg(not(feature = "mutants"))]
            let reapplied = false;
            assert!(sequence > session.last_sequence || reapplied);
            session.last_sequence = sequence;
            session.last_reply = Some(reply);
        }
        let after = digest::session(client_id, session);
        self.sessions_digest = self
            .sessions_digest
            .wrapping_sub(before)
            .wrapping_add(after);
        assert!(self.sessions_by_activity.insert(index, client_id).is_none());
    }

    fn execute(&mut self, index: LogIndex, operation: &Operation) -> Reply {
        match operation {
            Operation::CreateAccount { username } => self.create_account(index, username),
            Operation::DeleteAccount { username } => self.delete_account(username),
            Operation::SendMessage { from, to, message } => self.send_message(from, to, message),
            Operation::CheckAccount { .. }
            | Operation::ListAccounts { .. }
            | Operation::FetchMessages { .. } => self.query(operation),
        }
    }

    fn create_account(&mut self, index: LogIndex, username: &str) -> Reply {
        if !is_valid_username(username) {
            return Reply::new(Status::InvalidUsername);
        }
        if self.accounts.contains_key(username) {
            return Reply::new(Status::GeneralError);
        }
        if self.accounts.len() >= ACCOUNTS_MAX {
            // The bound keeps a `list_account` reply within one frame.
            return Reply::new(Status::GeneralError);
        }
        let account = Account {
            created: index,
            inbox: Vec::new(),
            inbox_chain: 0,
        };
        self.accounts_digest = self
            .accounts_digest
            .wrapping_add(digest::account(username, &account));
        self.accounts.insert(username.to_owned(), account);
        assert!(self
            .creation_order
            .insert(index, username.to_owned())
            .is_none());
        Reply::new(Status::Success)
    }

    /// Deletes the account and its inbox; messages it sent stay in their receivers' inboxes.
    fn delete_account(&mut self, username: &str) -> Reply {
        let Some(account) = self.accounts.remove(username) else {
            return Reply::new(Status::AccountNotExist);
        };
        self.accounts_digest = self
            .accounts_digest
            .wrapping_sub(digest::account(username, &account));
        let removed = self.creation_order.remove(&account.created);
        assert_eq!(removed.as_deref(), Some(username));
        Reply::new(Status::Success)
    }

    /// Checks the sender, then the target, then the length, as the original service did.
    fn send_message(&mut self, from: &str, to: &str, message: &str) -> Reply {
        if !self.accounts.contains_key(from) {
            return Reply::new(Status::AccountNotExist);
        }
        let Some(target) = self.accounts.get_mut(to) else {
            return Reply::new(Status::AccountNotExist);
        };
        if !chars_at_most(message, MESSAGE_CHARS_MAX) {
            return Reply::new(Status::MessageTooLong);
        }
        let before = digest::account(to, target);
        target.inbox_chain = digest::chain_message(target.inbox_chain, from, message);
        target.inbox.push((from.to_owned(), message.to_owned()));
        let after = digest::account(to, target);
        self.accounts_digest = self
            .accounts_digest
            .wrapping_sub(before)
            .wrapping_add(after);
        Reply::new(Status::Success)
    }

    fn check_account(&self, username: &str) -> Reply {
        if self.accounts.contains_key(username) {
            Reply::new(Status::Success)
        } else {
            Reply::new(Status::AccountNotExist)
        }
    }

    fn list_accounts(&self, pattern: &str) -> Reply {
        if !chars_at_most(pattern, PATTERN_CHARS_MAX) {
            return Reply::new(Status::GeneralError);
        }
        let pattern = glob::Pattern::new(pattern);
        let users = self
            .creation_order
            .values()
            .filter(|username| pattern.matches(username))
            .cloned()
            .collect();
        Reply::with_users(users)
    }

    /// At most `FETCH_MESSAGES_MAX` messages from the 1-based `first_message_id` on.
    fn fetch_messages(&self, username: &str, first_message_id: u64) -> Reply {
        let Some(account) = self.accounts.get(username) else {
            return Reply::new(Status::AccountNotExist);
        };
        if first_message_id < 1 {
            return Reply::new(Status::GeneralError);
        }
        let start = match usize::try_from(first_message_id - 1) {
            Ok(start) if start < account.inbox.len() => start,
            _ => return Reply::new(Status::NoElement),
        };
        let messages = account.inbox[start..]
            .iter()
            .take(FETCH_MESSAGES_MAX)
            .cloned()
            .collect();
        Reply::with_messages(messages)
    }
}

#[cfg(test)]
mod tests;
