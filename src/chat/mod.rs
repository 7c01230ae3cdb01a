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
//! Retention: the state is bounded, so a snapshot always fits its limit and memory stays flat
//! however long the service runs. An inbox keeps at most `limits.inbox_messages_max` messages,
//! and all inboxes together at most `limits.retained_bytes_max` bytes of messages (each charged
//! its sender's name, its text and a fixed overhead); beyond either bound the oldest message
//! goes (the oldest of that inbox, or the oldest to arrive anywhere). Message ids stay stable:
//! they count every message an inbox ever received. The limits are part of the replicated state,
//! fixed when the cluster is created and carried in every snapshot, so every replica applies the
//! same rule.
//!
//! Invariants, kept by construction and checked by [`Chat::restore`] on every snapshot:
//! - `accounts` and `creation_order` hold the same usernames. An account's `created` is the log
//!   index of the command that created it and its key in `creation_order`, so creation order is
//!   log order, and a deleted-then-recreated account moves to the end.
//! - Every username is valid ([`is_valid_username`]); every stored message is at most
//!   `MESSAGE_CHARS_MAX` characters and was sent by a valid username.
//! - Every inbox holds at most `limits.inbox_messages_max` messages; `retained_bytes` is the
//!   sum of every inbox's charge and is at most `limits.retained_bytes_max`; `oldest_arrivals`
//!   holds, for every non-empty inbox, the arrival index of its oldest message, mapped to its
//!   account. Arrival indexes are unique (one command delivers one message).
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
    ACCOUNTS_MAX, FETCH_MESSAGES_MAX, INBOX_MESSAGES_MAX, MESSAGE_CHARS_MAX, PATTERN_CHARS_MAX,
    RETAINED_BYTES_MAX, RETAINED_BYTES_MIN, SESSIONS_MAX, USERNAME_CHARS_MAX,
};
use crate::types::{ClientId, LogIndex};

mod auth;
mod digest;
pub mod glob;
mod inbox;
mod snapshot;

pub use auth::{Credential, Principal};
use inbox::{Inbox, StoredMessage};
pub use snapshot::ChatSnapshotError;

/// The retention bounds of the chat state: part of the replicated state, fixed when a cluster
/// is created, so that every replica drops the same messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatLimits {
    /// Most messages one inbox retains; beyond it the inbox's oldest message goes.
    pub inbox_messages_max: u64,
    /// Most bytes all inboxes retain together (each message charged its sender's name, its
    /// text and `MESSAGE_OVERHEAD_BYTES`); beyond it the oldest message anywhere goes.
    pub retained_bytes_max: u64,
}

impl Default for ChatLimits {
    fn default() -> ChatLimits {
        ChatLimits {
            inbox_messages_max: crate::limits::INBOX_MESSAGES_DEFAULT,
            retained_bytes_max: crate::limits::RETAINED_BYTES_DEFAULT,
        }
    }
}

impl ChatLimits {
    /// Checks the bounds, naming the first one out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=INBOX_MESSAGES_MAX).contains(&self.inbox_messages_max) {
            return Err(format!(
                "inbox_messages_max must be between 1 and {INBOX_MESSAGES_MAX}, got {}",
                self.inbox_messages_max
            ));
        }
        if !(RETAINED_BYTES_MIN..=RETAINED_BYTES_MAX).contains(&self.retained_bytes_max) {
            return Err(format!(
                "retained_bytes_max must be between {RETAINED_BYTES_MIN} and \
                 {RETAINED_BYTES_MAX}, got {}",
                self.retained_bytes_max
            ));
        }
        Ok(())
    }
}

/// Bytes a message is charged against `ChatLimits::retained_bytes_max` beyond its sender's
/// name and text.
pub const MESSAGE_OVERHEAD_BYTES: u64 = inbox::MESSAGE_OVERHEAD_BYTES;

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
    /// The account has a password and the request did not prove its owner sent it: no token,
    /// a bad or expired one, one for another account, or a wrong password at login. Not in
    /// the original protocol, whose accounts had no passwords.
    AuthFailed,
}

impl Status {
    /// Every status, in code order.
    pub const ALL: [Status; 10] = [
        Status::Success,
        Status::NoElement,
        Status::OperationNotSupported,
        Status::InvalidUsername,
        Status::AccountNotExist,
        Status::MessageTooLong,
        Status::MessageIdTooLarge,
        Status::AuthFailed,
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
            Status::AuthFailed => 105,
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
            Status::AuthFailed => "AUTH_FAILED",
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
    /// `create_account` (code 1) of an account protected by a password: only the holder of a
    /// token for it may then send as it, fetch its inbox or delete it. Only a node proposes
    /// it, having hashed the password the client sent; a client sending one is refused.
    CreateAccountWithPassword {
        /// The new account's name.
        username: String,
        /// The password's hash.
        credential: Credential,
    },
}

impl Operation {
    /// The operation's code in the original protocol, 1 to 6.
    pub fn code(&self) -> u8 {
        match self {
            Operation::CreateAccount { .. } | Operation::CreateAccountWithPassword { .. } => 1,
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
            | Operation::CreateAccountWithPassword { .. }
            | Operation::DeleteAccount { .. }
            | Operation::SendMessage { .. } => false,
        }
    }

    /// The account the operation acts as or on, which must be its caller's own when it has a
    /// password: the sender of a message, the owner of a fetched inbox, a deleted account.
    pub fn acting_account(&self) -> Option<&str> {
        match self {
            Operation::SendMessage { from, .. } => Some(from),
            Operation::FetchMessages { username, .. } | Operation::DeleteAccount { username } => {
                Some(username)
            }
            Operation::CreateAccount { .. }
            | Operation::CreateAccountWithPassword { .. }
            | Operation::CheckAccount { .. }
            | Operation::ListAccounts { .. } => None,
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
            Operation::CreateAccountWithPassword {
                username,
                credential,
            } => Operation::CreateAccountWithPassword {
                username: user(username),
                credential,
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
    /// The id of `messages[0]` (0 when there are none). It is the requested id, or the oldest
    /// retained one when older messages have been dropped.
    pub first_message_id: u64,
}

impl Reply {
    /// A reply with this status and no users or messages.
    pub fn new(status: Status) -> Reply {
        Reply {
            status,
            users: Vec::new(),
            messages: Vec::new(),
            first_message_id: 0,
        }
    }

    /// A successful `list_account` reply.
    pub fn with_users(users: Vec<String>) -> Reply {
        Reply {
            users,
            ..Reply::new(Status::Success)
        }
    }

    /// A successful `fetch_messages` reply whose first message has id `first_message_id`.
    pub fn with_messages(first_message_id: u64, messages: Vec<(String, String)>) -> Reply {
        Reply {
            first_message_id: if messages.is_empty() {
                0
            } else {
                first_message_id
            },
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
    /// [`Command::Client`] sent with a token the proposing node verified: the operation acts
    /// as `principal`, so it may touch that principal's own password-protected account.
    Authenticated {
        /// Who the token names.
        principal: Principal,
        /// The session, as returned by [`Outcome::Registered`].
        client_id: ClientId,
        /// The client's number for this command.
        sequence: u64,
        /// What to do.
        operation: Operation,
    },
}

impl Command {
    /// The command as it may enter the log: its operation's strings cut (see
    /// [`Operation::bounded`]), and a principal that names no valid account dropped (it would
    /// act as nobody at apply; nodes verify principals' tokens first). Neither changes the
    /// reply, and every entry stays within `COMMAND_SIZE_BYTES_MAX`.
    pub fn bounded(self) -> Command {
        match self {
            Command::Authenticated {
                principal,
                client_id,
                sequence,
                operation,
            } if is_valid_username(&principal.username) => Command::Authenticated {
                principal,
                client_id,
                sequence,
                operation: operation.bounded(),
            },
            Command::Client {
                client_id,
                sequence,
                operation,
            }
            | Command::Authenticated {
                client_id,
                sequence,
                operation,
                ..
            } => Command::Client {
                client_id,
                sequence,
                operation: operation.bounded(),
            },
            Command::RegisterClient => Command::RegisterClient,
        }
    }

    /// The session, sequence and operation of a client's command (with a principal or
    /// without); None for a registration.
    pub fn session_command(&self) -> Option<(ClientId, u64, &Operation)> {
        match self {
            Command::Client {
                client_id,
                sequence,
                operation,
            }
            | Command::Authenticated {
                client_id,
                sequence,
                operation,
                ..
            } => Some((*client_id, *sequence, operation)),
            Command::RegisterClient => None,
        }
    }
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

/// One account: when it was created, its password's hash if it has one, and the messages it
/// retains.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Account {
    created: LogIndex,
    credential: Option<Credential>,
    inbox: Inbox,
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
    /// Whom that command acted as (None: nobody). A retry is answered from the table only
    /// when it acts as the same principal: session ids and sequences are easy to guess, and
    /// otherwise anyone could apply a harmless command under an owner's next sequence and have
    /// the owner's real command answered with its reply, unapplied.
    principal: Option<Principal>,
}

/// The chat state machine: accounts, inboxes, sessions and the applied index. Cloning it is
/// cheap (inboxes share their messages until written), which is how a snapshot is taken off
/// the event loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chat {
    limits: ChatLimits,
    accounts: BTreeMap<String, Account>,
    // Invariant: exactly the usernames of `accounts`, each keyed by its account's `created`.
    creation_order: BTreeMap<LogIndex, String>,
    sessions: BTreeMap<ClientId, Session>,
    // Invariant: exactly the clients of `sessions`, each keyed by its session's `last_active`.
    sessions_by_activity: BTreeMap<LogIndex, ClientId>,
    sessions_max: usize,
    // Invariant: the sum of every inbox's retained bytes.
    retained_bytes: u64,
    // Invariant: the arrival index of every non-empty inbox's oldest message, to its account.
    oldest_arrivals: BTreeMap<LogIndex, String>,
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
    /// An empty state with the default limits: no accounts, no sessions, nothing applied.
    pub fn new() -> Chat {
        Chat::with_limits(ChatLimits::default())
    }

    /// An empty state that retains messages within `limits`, which must be valid.
    pub fn with_limits(limits: ChatLimits) -> Chat {
        Chat::with_limits_and_sessions_max(limits, SESSIONS_MAX)
    }

    /// An empty state that keeps at most `sessions_max` sessions (tests use small tables).
    #[cfg(test)]
    pub(crate) fn with_sessions_max(sessions_max: usize) -> Chat {
        Chat::with_limits_and_sessions_max(ChatLimits::default(), sessions_max)
    }

    fn with_limits_and_sessions_max(limits: ChatLimits, sessions_max: usize) -> Chat {
        assert!(
            (1..=SESSIONS_MAX).contains(&sessions_max),
            "chat: bad sessions_max"
        );
        assert_eq!(limits.validate(), Ok(()), "chat: bad limits");
        Chat {
            limits,
            retained_bytes: 0,
            oldest_arrivals: BTreeMap::new(),
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
            } => self.apply_client(index, *client_id, *sequence, operation, None),
            Command::Authenticated {
                principal,
                client_id,
                sequence,
                operation,
            } => {
                // A principal no account can have (no node verifies a token for one, but the
                // log is the judge) acts as nobody.
                let principal =
                    Some(principal).filter(|p| is_valid_username(&p.username) && p.created < index);
                self.apply_client(index, *client_id, *sequence, operation, principal)
            }
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

    /// The retention bounds this state applies.
    pub fn limits(&self) -> ChatLimits {
        self.limits
    }

    /// Bytes of messages retained over all inboxes, as charged against the retention bound.
    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes
    }

    /// Evaluates an operation against the current state without a session and without changing
    /// anything, for a caller who proved no identity. A read-only operation gets the same reply
    /// `apply` would give it now; a write gets `OPERATION_NOT_SUPPORTED`.
    pub fn query(&self, operation: &Operation) -> Reply {
        self.query_as(operation, None)
    }

    /// [`Chat::query`] for a caller acting as `principal` (a verified token's), who may read
    /// that principal's own password-protected inbox.
    pub fn query_as(&self, operation: &Operation, principal: Option<&Principal>) -> Reply {
        match operation {
            Operation::CheckAccount { username } => self.check_account(username),
            Operation::ListAccounts { pattern } => self.list_accounts(pattern),
            Operation::FetchMessages {
                username,
                first_message_id,
            } => self.fetch_messages(username, *first_message_id, principal),
            Operation::CreateAccount { .. }
            | Operation::CreateAccountWithPassword { .. }
            | Operation::DeleteAccount { .. }
            | Operation::SendMessage { .. } => Reply::new(Status::OperationNotSupported),
        }
    }

    /// The account `username`'s owner and password hash, if it exists and has a password:
    /// what a node checks a login against.
    pub fn credential(&self, username: &str) -> Option<(Principal, Credential)> {
        let account = self.accounts.get(username)?;
        let principal = Principal {
            username: username.to_owned(),
            created: account.created,
        };
        Some((principal, account.credential?))
    }

    /// Whether the caller may act as or on `account` (named `username`): anyone may on an
    /// open account, only its owner on a password-protected one.
    fn authorized(username: &str, account: &Account, principal: Option<&Principal>) -> bool {
        #[cfg(feature = "mutants")]
        if crate::mutants::is_active(crate::mutants::Mutant::SkipOwnerCheck) {
            return true;
        }
        account.credential.is_none()
            || principal.is_some_and(|principal| principal.owns(username, account.created))
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
            principal: None,
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
        principal: Option<&Principal>,
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
            // A retry by another principal than the command it repeats: refused, the session
            // untouched. (The client treats it as a lost session: it registers again, and its
            // command's outcome is unknown to it.)
            (Ordering::Equal, Some(_)) if session.principal.as_ref() != principal => {
                Outcome::SessionExpired
            }
            (Ordering::Equal, Some(last_reply)) => {
                // A retried read is evaluated again rather than answered from the table: the
                // state it sees now is still inside the operation's invocation window, so the
                // answer stays linearizable, and sessions need not hold large fetch replies.
                let reply = if operation.is_read_only() {
                    self.query_as(operation, principal)
                } else {
                    last_reply.clone()
                };
                self.touch_session(client_id, index, None, None);
                Outcome::Replied {
                    reply,
                    duplicate: true,
                }
            }
            (Ordering::Greater, _) => {
                let reply = self.execute(index, operation, principal);
                // Only a write's reply is needed to answer its retry; a read keeps its status.
                let remembered = if operation.is_read_only() {
                    Reply::new(reply.status)
                } else {
                    reply.clone()
                };
                self.touch_session(client_id, index, Some((sequence, remembered)), principal);
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
    /// sequence, its reply and whom it acted as.
    fn touch_session(
        &mut self,
        client_id: ClientId,
        index: LogIndex,
        applied: Option<(u64, Reply)>,
        principal: Option<&Principal>,
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
            session.principal = principal.cloned();
        }
        let after = digest::session(client_id, session);
        self.sessions_digest = self
            .sessions_digest
            .wrapping_sub(before)
            .wrapping_add(after);
        assert!(self.sessions_by_activity.insert(index, client_id).is_none());
    }

    fn execute(
        &mut self,
        index: LogIndex,
        operation: &Operation,
        principal: Option<&Principal>,
    ) -> Reply {
        match operation {
            Operation::CreateAccount { username } => self.create_account(index, username, None),
            Operation::CreateAccountWithPassword {
                username,
                credential,
            } => self.create_account(index, username, Some(*credential)),
            Operation::DeleteAccount { username } => self.delete_account(username, principal),
            Operation::SendMessage { from, to, message } => {
                self.send_message(index, from, to, message, principal)
            }
            Operation::CheckAccount { .. }
            | Operation::ListAccounts { .. }
            | Operation::FetchMessages { .. } => self.query_as(operation, principal),
        }
    }

    fn create_account(
        &mut self,
        index: LogIndex,
        username: &str,
        credential: Option<Credential>,
    ) -> Reply {
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
        if credential.is_some_and(|c| !c.cost_in_bounds()) {
            // Only a bug could log one: no node hashes outside the bounds.
            return Reply::new(Status::GeneralError);
        }
        let account = Account {
            created: index,
            credential,
            inbox: Inbox::default(),
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
    /// Only its owner may delete a password-protected account.
    fn delete_account(&mut self, username: &str, principal: Option<&Principal>) -> Reply {
        let Some(account) = self.accounts.get(username) else {
            return Reply::new(Status::AccountNotExist);
        };
        if !Chat::authorized(username, account, principal) {
            return Reply::new(Status::AuthFailed);
        }
        let account = self.accounts.remove(username).expect("just found");
        self.accounts_digest = self
            .accounts_digest
            .wrapping_sub(digest::account(username, &account));
        let removed = self.creation_order.remove(&account.created);
        assert_eq!(removed.as_deref(), Some(username));
        if let Some(oldest) = account.inbox.oldest() {
            let removed = self.oldest_arrivals.remove(&oldest.arrival);
            assert_eq!(removed.as_deref(), Some(username));
        }
        self.retained_bytes -= account.inbox.retained_bytes();
        Reply::new(Status::Success)
    }

    /// Checks the length, then the sender, then the target, in the original service's order
    /// (a message too long is MESSAGE_TOO_LONG even between accounts that do not exist), with
    /// the caller's right to send as the sender checked right after the sender's existence;
    /// then delivers the message, and drops the oldest messages beyond the retention bounds.
    fn send_message(
        &mut self,
        index: LogIndex,
        from: &str,
        to: &str,
        message: &str,
        principal: Option<&Principal>,
    ) -> Reply {
        if !chars_at_most(message, MESSAGE_CHARS_MAX) {
            return Reply::new(Status::MessageTooLong);
        }
        let Some(sender) = self.accounts.get(from) else {
            return Reply::new(Status::AccountNotExist);
        };
        if !Chat::authorized(from, sender, principal) {
            return Reply::new(Status::AuthFailed);
        }
        if !self.accounts.contains_key(to) {
            return Reply::new(Status::AccountNotExist);
        }
        let stored = StoredMessage {
            from: from.to_owned(),
            text: message.to_owned(),
            arrival: index,
        };
        self.retained_bytes += stored.charge();
        self.update_inbox(to, |inbox| {
            inbox.push(stored);
        });
        while self.inbox_len(to) as u64 > self.limits.inbox_messages_max {
            self.drop_oldest_message(to);
        }
        while self.retained_bytes > self.limits.retained_bytes_max {
            let (_, owner) = self
                .oldest_arrivals
                .first_key_value()
                .expect("retained bytes live in some inbox");
            let owner = owner.clone();
            self.drop_oldest_message(&owner);
        }
        Reply::new(Status::Success)
    }

    fn inbox_len(&self, username: &str) -> usize {
        self.accounts.get(username).map_or(0, |a| a.inbox.len())
    }

    /// Drops the oldest message of `username`'s inbox, which must hold one.
    fn drop_oldest_message(&mut self, username: &str) {
        let mut charge = 0;
        self.update_inbox(username, |inbox| {
            charge = inbox.pop_oldest().expect("dropping from an empty inbox");
        });
        self.retained_bytes -= charge;
    }

    /// Changes one inbox, keeping the digest and the index of oldest arrivals in step.
    fn update_inbox(&mut self, username: &str, change: impl FnOnce(&mut Inbox)) {
        let account = self.accounts.get_mut(username).expect("the account exists");
        let before = digest::account(username, account);
        let oldest_before = account.inbox.oldest().map(|m| m.arrival);
        change(&mut account.inbox);
        let oldest_after = account.inbox.oldest().map(|m| m.arrival);
        let after = digest::account(username, account);
        self.accounts_digest = self
            .accounts_digest
            .wrapping_sub(before)
            .wrapping_add(after);
        if oldest_before != oldest_after {
            if let Some(arrival) = oldest_before {
                self.oldest_arrivals.remove(&arrival);
            }
            if let Some(arrival) = oldest_after {
                let previous = self.oldest_arrivals.insert(arrival, username.to_owned());
                assert!(previous.is_none(), "two messages arrived at {arrival}");
            }
        }
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

    /// At most `FETCH_MESSAGES_MAX` messages from the 1-based `first_message_id` on, or from
    /// the oldest retained one if that one was dropped. Checked in the original service's
    /// order: an id below 1 is GENERAL_ERROR (even for an account that does not exist), then
    /// the account, then the caller's right to read it, then NO_ELEMENT when no retained
    /// message has an id at least `first_message_id`.
    fn fetch_messages(
        &self,
        username: &str,
        first_message_id: u64,
        principal: Option<&Principal>,
    ) -> Reply {
        if first_message_id < 1 {
            return Reply::new(Status::GeneralError);
        }
        let Some(account) = self.accounts.get(username) else {
            return Reply::new(Status::AccountNotExist);
        };
        if !Chat::authorized(username, account, principal) {
            return Reply::new(Status::AuthFailed);
        }
        let start = first_message_id.max(account.inbox.first_id());
        if start >= account.inbox.next_id() {
            return Reply::new(Status::NoElement);
        }
        let messages = account
            .inbox
            .iter_from(start)
            .take(FETCH_MESSAGES_MAX)
            .map(|m| (m.from.clone(), m.text.clone()))
            .collect();
        Reply::with_messages(start, messages)
    }
}

#[cfg(test)]
mod tests;
