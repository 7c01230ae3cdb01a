//! The chat state machine's snapshot: the whole state as bytes, and back, and its digest.
//!
//! Format: bincode (standard config, fixed-width integers) of [`SnapshotRecord`], whose first
//! field is a `u32` format version, so a reader can refuse a format it does not know before
//! decoding the rest; from version 3 on, followed by [`AuthRecord`]: the password hashes of
//! protected accounts, and whom each session's last command acted as, so that a version 2
//! snapshot, which has neither, still reads as the same state. Accounts are listed in creation order and sessions in client id order, so
//! equal states encode to equal bytes: the encoding is canonical, which is what lets
//! [`Chat::digest`] compare replicas.
//!
//! Decoding never trusts its input: it refuses oversize input, garbage, truncation, trailing
//! bytes and an unknown version with an error, and then rebuilds the state through checks of
//! every invariant listed in the parent module, so a decoded snapshot that would break one is
//! refused too. Nothing here panics on input.

use std::borrow::Cow;
use std::fmt;

use bincode::config::Config;
use serde::{Deserialize, Serialize};

use super::inbox::{Inbox, StoredMessage};
use super::{
    chars_at_most, is_valid_username, Account, Chat, ChatLimits, Credential, Principal, Reply,
    Session,
};
use crate::limits::{ACCOUNTS_MAX, CHAT_SNAPSHOT_SIZE_BYTES_MAX, MESSAGE_CHARS_MAX, SESSIONS_MAX};
use crate::types::{ClientId, LogIndex};

/// The version written first in every snapshot; bump it when [`SnapshotRecord`] changes.
/// Version 2 added the retention limits, message ids and arrival indexes; version 3 the
/// password hashes. This build reads 2 and 3.
const SNAPSHOT_FORMAT_VERSION: u32 = 3;

/// The oldest version this build reads.
const SNAPSHOT_FORMAT_VERSION_MIN: u32 = 2;

/// Why [`Chat::restore`] refused a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatSnapshotError {
    /// The snapshot is larger than `CHAT_SNAPSHOT_SIZE_BYTES_MAX`.
    TooLarge {
        /// Its size.
        size_bytes: usize,
    },
    /// The bytes do not decode as a snapshot: garbage or truncation.
    Decode {
        /// The decoder's explanation.
        reason: String,
    },
    /// The snapshot was written in a format version this build does not read.
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// The snapshot decoded but bytes were left over after its end.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The snapshot decoded but breaks an invariant of the chat state.
    Invalid {
        /// Which invariant.
        reason: &'static str,
    },
}

impl fmt::Display for ChatSnapshotError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatSnapshotError::TooLarge { size_bytes } => write!(
                formatter,
                "chat snapshot of {size_bytes} bytes exceeds {CHAT_SNAPSHOT_SIZE_BYTES_MAX}"
            ),
            ChatSnapshotError::Decode { reason } => {
                write!(formatter, "chat snapshot does not decode: {reason}")
            }
            ChatSnapshotError::UnsupportedVersion { version } => write!(
                formatter,
                "chat snapshot format version {version} is not supported \
                 (this build reads {SNAPSHOT_FORMAT_VERSION_MIN} to {SNAPSHOT_FORMAT_VERSION})"
            ),
            ChatSnapshotError::TrailingBytes { count } => {
                write!(formatter, "chat snapshot has {count} trailing bytes")
            }
            ChatSnapshotError::Invalid { reason } => {
                write!(formatter, "chat snapshot is invalid: {reason}")
            }
        }
    }
}

impl std::error::Error for ChatSnapshotError {}

/// The whole chat state, as encoded. `Cow` lets [`Chat::snapshot`] encode borrowed data without
/// copying the state, while decoding always yields owned data; both encode identically.
#[derive(Serialize, Deserialize)]
struct SnapshotRecord<'a> {
    format_version: u32,
    applied_index: LogIndex,
    sessions_max: u64,
    limits: ChatLimits,
    /// In creation order.
    accounts: Vec<AccountRecord<'a>>,
    /// In client id order.
    sessions: Vec<SessionRecord<'a>>,
}

#[derive(Serialize, Deserialize)]
struct AccountRecord<'a> {
    username: Cow<'a, str>,
    created: LogIndex,
    /// The id the next message will get.
    next_message_id: u64,
    /// The retained messages, oldest first.
    inbox: InboxRecord<'a>,
}

/// An inbox's messages as encoded: borrowed from the live inbox when encoding, owned when
/// decoding; both encode as one sequence of `(from, text, arrival)`.
enum InboxRecord<'a> {
    Borrowed(&'a Inbox),
    Owned(Vec<MessageRecord>),
}

#[derive(Serialize, Deserialize)]
struct MessageRecord {
    from: String,
    text: String,
    arrival: LogIndex,
}

impl Serialize for InboxRecord<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            InboxRecord::Borrowed(inbox) => serialize_messages(
                serializer,
                inbox.len(),
                inbox
                    .iter()
                    .map(|m| (m.from.as_str(), m.text.as_str(), m.arrival)),
            ),
            InboxRecord::Owned(messages) => serialize_messages(
                serializer,
                messages.len(),
                messages
                    .iter()
                    .map(|m| (m.from.as_str(), m.text.as_str(), m.arrival)),
            ),
        }
    }
}

/// Encodes `len` messages as a sequence of `(from, text, arrival)`; bincode needs the length
/// up front, and the inbox knows it.
fn serialize_messages<'m, S: serde::Serializer>(
    serializer: S,
    len: usize,
    messages: impl Iterator<Item = (&'m str, &'m str, LogIndex)>,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(len))?;
    for message in messages {
        seq.serialize_element(&message)?;
    }
    seq.end()
}

impl<'de> Deserialize<'de> for InboxRecord<'_> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<MessageRecord>::deserialize(deserializer).map(InboxRecord::Owned)
    }
}

/// What version 3 added after the version 2 record.
#[derive(Default, Serialize, Deserialize)]
struct AuthRecord {
    /// In creation order.
    credentials: Vec<CredentialRecord>,
    /// In client id order; only sessions whose last command acted as someone.
    principals: Vec<SessionPrincipalRecord>,
}

/// A protected account's password hash, named by the account's creation index.
#[derive(Serialize, Deserialize)]
struct CredentialRecord {
    created: LogIndex,
    credential: Credential,
}

/// Whom a session's last command acted as.
#[derive(Serialize, Deserialize)]
struct SessionPrincipalRecord {
    client_id: ClientId,
    principal: Principal,
}

#[derive(Serialize, Deserialize)]
struct SessionRecord<'a> {
    client_id: ClientId,
    last_sequence: u64,
    last_reply: Cow<'a, Option<Reply>>,
    last_active: LogIndex,
}

fn bincode_config() -> impl Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_limit::<CHAT_SNAPSHOT_SIZE_BYTES_MAX>()
}

fn invalid(reason: &'static str) -> ChatSnapshotError {
    ChatSnapshotError::Invalid { reason }
}

/// `Ok` if `condition` holds, else the invariant named by `reason` is broken.
fn require(condition: bool, reason: &'static str) -> Result<(), ChatSnapshotError> {
    if condition {
        Ok(())
    } else {
        Err(invalid(reason))
    }
}

impl Chat {
    /// The whole state (accounts, inboxes, creation order, sessions, applied index) as bytes
    /// that [`Chat::restore`] turns back into an equal state. The encoding is canonical.
    pub fn snapshot(&self) -> Vec<u8> {
        assert_eq!(self.accounts.len(), self.creation_order.len());
        assert_eq!(self.sessions.len(), self.sessions_by_activity.len());
        assert!(self.sessions.len() <= self.sessions_max);
        #[cfg(feature = "mutants")]
        let sessions =
            match crate::mutants::is_active(crate::mutants::Mutant::SnapshotWithoutSessions) {
                true => Vec::new(),
                false => self.session_records(),
            };
        #[cfg(not(feature = "mutants"))]
        let sessions = self.session_records();
        let record = SnapshotRecord {
            format_version: SNAPSHOT_FORMAT_VERSION,
            applied_index: self.applied_index,
            sessions_max: self.sessions_max as u64,
            limits: self.limits,
            accounts: self.account_records(),
            sessions,
        };
        let mut bytes = match bincode::serde::encode_to_vec(&record, bincode_config()) {
            Ok(bytes) => bytes,
            Err(error) => panic!("chat: snapshot does not encode: {error}"),
        };
        let auth = AuthRecord {
            credentials: self.credential_records(),
            principals: self.session_principal_records(),
        };
        if let Err(error) =
            bincode::serde::encode_into_std_write(&auth, &mut bytes, bincode_config())
        {
            panic!("chat: snapshot does not encode: {error}");
        }
        bytes
    }

    /// A digest of the whole state, in O(1): equal states give equal digests on every replica
    /// and platform. It is maintained as commands apply (see `digest.rs`).
    pub fn digest(&self) -> u64 {
        let sessions_max = (self.sessions_max as u64).to_le_bytes();
        super::digest::mix(&[
            b"chat",
            &self.accounts_digest.to_le_bytes(),
            &self.sessions_digest.to_le_bytes(),
            &self.applied_index.0.to_le_bytes(),
            &sessions_max,
            &self.limits.inbox_messages_max.to_le_bytes(),
            &self.limits.retained_bytes_max.to_le_bytes(),
        ])
    }

    /// Rebuilds a state from [`Chat::snapshot`] bytes. Refuses oversize input, garbage,
    /// truncation, trailing bytes, an unknown format version and any state that breaks an
    /// invariant, with an error; never panics.
    pub fn restore(bytes: &[u8]) -> Result<Chat, ChatSnapshotError> {
        if bytes.len() > CHAT_SNAPSHOT_SIZE_BYTES_MAX {
            return Err(ChatSnapshotError::TooLarge {
                size_bytes: bytes.len(),
            });
        }
        let (version, _): (u32, usize) = decode(bytes)?;
        if !(SNAPSHOT_FORMAT_VERSION_MIN..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
            return Err(ChatSnapshotError::UnsupportedVersion { version });
        }
        let (record, mut consumed): (SnapshotRecord<'static>, usize) = decode(bytes)?;
        let mut auth = AuthRecord::default();
        if version >= 3 {
            let (record, used): (AuthRecord, usize) = decode(&bytes[consumed..])?;
            auth = record;
            consumed += used;
        }
        if consumed != bytes.len() {
            return Err(ChatSnapshotError::TrailingBytes {
                count: bytes.len().saturating_sub(consumed),
            });
        }
        let mut chat = Chat::from_record(record)?;
        chat.restore_credentials(auth.credentials)?;
        chat.restore_session_principals(auth.principals)?;
        Ok(chat)
    }

    /// Whom sessions last acted as, in client id order.
    fn session_principal_records(&self) -> Vec<SessionPrincipalRecord> {
        let records = self.sessions.iter().filter_map(|(&client_id, session)| {
            Some(SessionPrincipalRecord {
                client_id,
                principal: session.principal.clone()?,
            })
        });
        records.collect()
    }

    fn restore_session_principals(
        &mut self,
        records: Vec<SessionPrincipalRecord>,
    ) -> Result<(), ChatSnapshotError> {
        let mut floor = ClientId(0);
        for record in records {
            require(floor < record.client_id, "session principals out of order")?;
            floor = record.client_id;
            require(
                is_valid_username(&record.principal.username)
                    && record.principal.created <= self.applied_index,
                "invalid session principal",
            )?;
            let session = self
                .sessions
                .get_mut(&record.client_id)
                .ok_or(invalid("a principal for no session"))?;
            require(
                session.last_reply.is_some(),
                "a principal for a session that applied nothing",
            )?;
            let before = super::digest::session(record.client_id, session);
            session.principal = Some(record.principal);
            let after = super::digest::session(record.client_id, session);
            self.sessions_digest = self
                .sessions_digest
                .wrapping_sub(before)
                .wrapping_add(after);
        }
        Ok(())
    }

    /// Protected accounts' hashes, in creation order.
    fn credential_records(&self) -> Vec<CredentialRecord> {
        let records = self
            .creation_order
            .iter()
            .filter_map(|(&created, username)| {
                let credential = self.accounts[username].credential?;
                Some(CredentialRecord {
                    created,
                    credential,
                })
            });
        records.collect()
    }

    fn restore_credentials(
        &mut self,
        records: Vec<CredentialRecord>,
    ) -> Result<(), ChatSnapshotError> {
        let mut floor = LogIndex(0);
        for record in records {
            require(floor < record.created, "credentials out of creation order")?;
            floor = record.created;
            require(
                record.credential.cost_in_bounds(),
                "a credential's cost out of bounds",
            )?;
            let username = self
                .creation_order
                .get(&record.created)
                .ok_or(invalid("a credential for no account"))?;
            let account = self
                .accounts
                .get_mut(username)
                .expect("indexed accounts exist");
            let before = super::digest::account(username, account);
            account.credential = Some(record.credential);
            let after = super::digest::account(username, account);
            self.accounts_digest = self
                .accounts_digest
                .wrapping_sub(before)
                .wrapping_add(after);
        }
        Ok(())
    }

    fn account_records(&self) -> Vec<AccountRecord<'_>> {
        let records = self.creation_order.values().map(|username| {
            let account = &self.accounts[username];
            AccountRecord {
                username: Cow::Borrowed(username.as_str()),
                created: account.created,
                next_message_id: account.inbox.next_id(),
                inbox: InboxRecord::Borrowed(&account.inbox),
            }
        });
        records.collect()
    }

    fn session_records(&self) -> Vec<SessionRecord<'_>> {
        let records = self
            .sessions
            .iter()
            .map(|(&client_id, session)| SessionRecord {
                client_id,
                last_sequence: session.last_sequence,
                last_reply: Cow::Borrowed(&session.last_reply),
                last_active: session.last_active,
            });
        records.collect()
    }

    fn from_record(record: SnapshotRecord<'_>) -> Result<Chat, ChatSnapshotError> {
        let sessions_max = usize::try_from(record.sessions_max)
            .ok()
            .filter(|sessions_max| (1..=SESSIONS_MAX).contains(sessions_max))
            .ok_or(invalid("sessions_max out of range"))?;
        require(record.limits.validate().is_ok(), "limits out of range")?;
        let mut chat = Chat::with_limits_and_sessions_max(record.limits, sessions_max);
        chat.applied_index = record.applied_index;
        require(
            record.accounts.len() <= ACCOUNTS_MAX,
            "more accounts than ACCOUNTS_MAX",
        )?;
        for account in record.accounts {
            chat.restore_account(account)?;
        }
        require(
            chat.retained_bytes <= chat.limits.retained_bytes_max,
            "more retained bytes than retained_bytes_max",
        )?;
        // One send, one message: eviction by arrival relies on no two sharing an index. The
        // retained bytes bound the count (each message costs its overhead at least).
        let mut arrivals: Vec<LogIndex> = chat
            .accounts
            .values()
            .flat_map(|account| account.inbox.iter().map(|m| m.arrival))
            .collect();
        arrivals.sort_unstable();
        require(
            arrivals.windows(2).all(|pair| pair[0] < pair[1]),
            "two messages arrived at one index",
        )?;
        for session in record.sessions {
            chat.restore_session(session)?;
        }
        Ok(chat)
    }

    fn restore_account(&mut self, record: AccountRecord<'_>) -> Result<(), ChatSnapshotError> {
        let username = record.username.into_owned();
        let created = record.created;
        require(is_valid_username(&username), "invalid username")?;
        require(!self.accounts.contains_key(&username), "duplicate username")?;
        require(
            LogIndex(0) < created && created <= self.applied_index,
            "account created outside the applied log",
        )?;
        let in_order = self
            .creation_order
            .last_key_value()
            .is_none_or(|(last_created, _)| *last_created < created);
        require(in_order, "accounts out of creation order")?;
        let InboxRecord::Owned(messages) = record.inbox else {
            unreachable!("decoding yields owned inboxes")
        };
        let inbox_valid = messages
            .iter()
            .all(|m| is_valid_username(&m.from) && chars_at_most(&m.text, MESSAGE_CHARS_MAX));
        require(inbox_valid, "invalid message in an inbox")?;
        let mut arrival_floor = created;
        for message in &messages {
            require(
                arrival_floor < message.arrival && message.arrival <= self.applied_index,
                "message arrivals out of order or outside the applied log",
            )?;
            arrival_floor = message.arrival;
        }
        require(
            messages.len() as u64 <= self.limits.inbox_messages_max,
            "more messages in an inbox than inbox_messages_max",
        )?;
        let messages = messages
            .into_iter()
            .map(|m| StoredMessage {
                from: m.from,
                text: m.text,
                arrival: m.arrival,
            })
            .collect();
        let inbox = Inbox::restore(record.next_message_id, messages)
            .ok_or(invalid("more messages than message ids"))?;
        if let Some(oldest) = inbox.oldest() {
            require(
                !self.oldest_arrivals.contains_key(&oldest.arrival),
                "two messages arrived at one index",
            )?;
            self.oldest_arrivals
                .insert(oldest.arrival, username.clone());
        }
        self.retained_bytes = self.retained_bytes.saturating_add(inbox.retained_bytes());
        self.creation_order.insert(created, username.clone());
        let account = Account {
            created,
            credential: None,
            inbox,
        };
        self.accounts_digest = self
            .accounts_digest
            .wrapping_add(super::digest::account(&username, &account));
        self.accounts.insert(username, account);
        Ok(())
    }

    fn restore_session(&mut self, record: SessionRecord<'_>) -> Result<(), ChatSnapshotError> {
        let SessionRecord {
            client_id,
            last_sequence,
            last_reply,
            last_active,
        } = record;
        let in_order = self
            .sessions
            .last_key_value()
            .is_none_or(|(last_client_id, _)| *last_client_id < client_id);
        require(in_order, "sessions out of client id order")?;
        require(
            0 < client_id.0 && client_id.0 <= last_active.0 && last_active <= self.applied_index,
            "session active outside the applied log",
        )?;
        require(
            !self.sessions_by_activity.contains_key(&last_active),
            "two sessions active at one index",
        )?;
        require(
            (last_sequence == 0) == last_reply.is_none(),
            "session reply does not match its sequence",
        )?;
        require(
            self.sessions.len() < self.sessions_max,
            "more sessions than sessions_max",
        )?;
        let session = Session {
            last_sequence,
            last_reply: last_reply.into_owned(),
            last_active,
            principal: None, // Version 3's trailer names it, if any.
        };
        self.sessions_digest = self
            .sessions_digest
            .wrapping_add(super::digest::session(client_id, &session));
        self.sessions.insert(client_id, session);
        self.sessions_by_activity.insert(last_active, client_id);
        Ok(())
    }
}

/// Decodes a `T` from the front of `bytes`, returning it and the bytes used.
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), ChatSnapshotError> {
    bincode::serde::decode_from_slice(bytes, bincode_config()).map_err(|error| {
        ChatSnapshotError::Decode {
            reason: error.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::tests::{check, create, delete, fetch, list, send, Harness};
    use crate::chat::{Command, Operation, Outcome};
    use proptest::prelude::*;

    /// A state with every kind of content: accounts (one deleted and recreated), inboxes with
    /// multibyte and empty messages, several sessions with replies, and a no-op in the log.
    fn rich_harness() -> Harness {
        let mut harness = Harness::with_chat(Chat::with_sessions_max(3));
        let operations = [
            create("alice"),
            create("bob"),
            create("名前"),
            send("alice", "bob", "hi"),
            send("bob", "alice", "yo 🙂"),
            delete("alice"),
            create("alice"),
            send("名前", "bob", ""),
            send("bob", "alice", "again"),
        ];
        for operation in operations {
            harness.run(operation);
        }
        harness.register();
        let index = harness.next_index();
        harness.chat.apply_noop(index);
        harness.run(fetch("bob", 1));
        harness
    }

    fn rich_chat() -> Chat {
        rich_harness().chat
    }

    /// SplitMix64: a tiny deterministic generator, so byte-string tests replay exactly.
    fn splitmix64(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = *state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    /// The first message of the first account that has one.
    fn first_message<'r>(record: &'r mut SnapshotRecord<'static>) -> &'r mut MessageRecord {
        record
            .accounts
            .iter_mut()
            .find_map(|account| match &mut account.inbox {
                InboxRecord::Owned(messages) => messages.first_mut(),
                InboxRecord::Borrowed(_) => None,
            })
            .expect("the rich state has a message")
    }

    fn decode_record(bytes: &[u8]) -> SnapshotRecord<'static> {
        match decode(bytes) {
            Ok((record, _)) => record,
            Err(error) => panic!("test snapshot does not decode: {error}"),
        }
    }

    /// The record, followed by no credentials and no session principals.
    fn encode_record(record: &SnapshotRecord<'_>) -> Vec<u8> {
        encode_with_credentials(record, Vec::new())
    }

    fn encode_with_credentials(
        record: &SnapshotRecord<'_>,
        credentials: Vec<CredentialRecord>,
    ) -> Vec<u8> {
        let auth = AuthRecord {
            credentials,
            principals: Vec::new(),
        };
        let encoded =
            bincode::serde::encode_to_vec(record, bincode_config()).and_then(|mut bytes| {
                bincode::serde::encode_into_std_write(&auth, &mut bytes, bincode_config())?;
                Ok(bytes)
            });
        match encoded {
            Ok(bytes) => bytes,
            Err(error) => panic!("test snapshot does not encode: {error}"),
        }
    }

    fn credential(byte: u8) -> Credential {
        Credential {
            salt: [byte; 16],
            hash: [byte; 32],
            memory_kib: 8,
            iterations: 1,
        }
    }

    #[test]
    fn a_version_2_snapshot_reads_as_the_same_state_without_passwords() {
        let chat = rich_chat();
        let mut record = decode_record(&chat.snapshot());
        record.format_version = 2;
        let v2 = bincode::serde::encode_to_vec(&record, bincode_config()).unwrap();
        assert_eq!(Chat::restore(&v2), Ok(chat));
    }

    #[test]
    fn credentials_must_name_accounts_in_creation_order() {
        let chat = rich_chat();
        let record = || decode_record(&chat.snapshot());
        let created: Vec<LogIndex> = record().accounts.iter().map(|a| a.created).collect();
        let named = |created: LogIndex, byte| CredentialRecord {
            created,
            credential: credential(byte),
        };
        let good = [named(created[0], 1), named(created[2], 2)];
        let restored = Chat::restore(&encode_with_credentials(&record(), Vec::from(good))).unwrap();
        assert!(restored
            .credential(&record().accounts[0].username)
            .is_some());
        assert!(restored
            .credential(&record().accounts[1].username)
            .is_none());
        let unordered = [named(created[2], 2), named(created[0], 1)];
        assert_eq!(
            Chat::restore(&encode_with_credentials(&record(), Vec::from(unordered))),
            Err(invalid("credentials out of creation order"))
        );
        let orphan = [named(LogIndex(1), 1)]; // The session's registration.
        assert_eq!(
            Chat::restore(&encode_with_credentials(&record(), Vec::from(orphan))),
            Err(invalid("a credential for no account"))
        );
    }

    #[test]
    fn snapshot_then_restore_gives_an_equal_state_and_digest() {
        let chat = rich_chat();
        let restored = Chat::restore(&chat.snapshot());
        assert_eq!(restored.as_ref(), Ok(&chat));
        assert_eq!(
            restored.map(|restored| restored.digest()),
            Ok(chat.digest())
        );
    }

    #[test]
    fn empty_chat_round_trips() {
        let chat = Chat::new();
        assert_eq!(Chat::restore(&chat.snapshot()), Ok(chat));
    }

    #[test]
    fn restored_state_answers_queries_like_the_original() {
        let chat = rich_chat();
        let Ok(restored) = Chat::restore(&chat.snapshot()) else {
            panic!("rich snapshot does not restore");
        };
        let reads = [
            check("alice"),
            check("ghost"),
            list("*"),
            list("[a-b]*"),
            list("?"),
        ];
        let fetches = [
            fetch("bob", 1),
            fetch("bob", 3),
            fetch("alice", 1),
            fetch("bob", 0),
        ];
        for operation in reads.into_iter().chain(fetches) {
            assert_eq!(
                restored.query(&operation),
                chat.query(&operation),
                "{operation:?}"
            );
        }
        assert_eq!(restored.account_count(), chat.account_count());
        assert_eq!(restored.session_count(), chat.session_count());
        assert_eq!(restored.applied_index(), chat.applied_index());
    }

    #[test]
    fn restored_state_answers_a_retry_from_its_session_table() {
        let mut harness = rich_harness();
        let Ok(restored) = Chat::restore(&harness.chat.snapshot()) else {
            panic!("rich snapshot does not restore");
        };
        let expected = harness.chat.query(&fetch("bob", 1));
        harness.chat = restored;
        let retry = harness.submit(harness.sequence, fetch("bob", 1));
        assert_eq!(
            retry,
            Outcome::Replied {
                reply: expected,
                duplicate: true
            }
        );
    }

    #[test]
    fn restore_rejects_every_truncation() {
        let bytes = rich_chat().snapshot();
        for length in 0..bytes.len() {
            let result = Chat::restore(&bytes[..length]);
            assert!(
                result.is_err(),
                "truncated to {length} of {} bytes",
                bytes.len()
            );
        }
    }

    #[test]
    fn restore_rejects_random_bytes() {
        let mut state = 0x5eed;
        for attempt in 0..400 {
            let length = (splitmix64(&mut state) % 300) as usize;
            let mut bytes: Vec<u8> = (0..length).map(|_| splitmix64(&mut state) as u8).collect();
            if attempt % 2 == 0 {
                // Half carry the right version, to reach past the version check.
                let mut prefixed = SNAPSHOT_FORMAT_VERSION.to_le_bytes().to_vec();
                prefixed.append(&mut bytes);
                bytes = prefixed;
            }
            assert!(
                Chat::restore(&bytes).is_err(),
                "attempt {attempt}: {bytes:?}"
            );
        }
    }

    #[test]
    fn restore_accepts_only_canonical_bytes_under_single_byte_corruption() {
        let bytes = rich_chat().snapshot();
        for position in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut corrupted = bytes.clone();
                corrupted[position] ^= flip;
                if let Ok(chat) = Chat::restore(&corrupted) {
                    assert_eq!(chat.snapshot(), corrupted, "byte {position} ^ {flip:#x}");
                }
            }
        }
    }

    #[test]
    fn restore_rejects_trailing_bytes() {
        let mut bytes = rich_chat().snapshot();
        bytes.push(0);
        assert_eq!(
            Chat::restore(&bytes),
            Err(ChatSnapshotError::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn restore_rejects_an_unknown_format_version() {
        for version in [1, SNAPSHOT_FORMAT_VERSION + 1] {
            let mut bytes = rich_chat().snapshot();
            bytes[..4].copy_from_slice(&version.to_le_bytes());
            let expected = ChatSnapshotError::UnsupportedVersion { version };
            assert_eq!(Chat::restore(&bytes), Err(expected));
        }
    }

    /// A change that makes a well-formed snapshot break one invariant.
    type Breaker = fn(&mut SnapshotRecord<'static>);

    /// Every way a well-formed snapshot can break an invariant, each with the reason expected.
    fn invariant_breakers() -> Vec<(&'static str, Breaker)> {
        vec![
            ("invalid username", |r| {
                r.accounts[0].username = "a\nb".into()
            }),
            ("invalid username", |r| r.accounts[0].username = "".into()),
            ("duplicate username", |r| {
                r.accounts[1].username = r.accounts[0].username.clone()
            }),
            ("accounts out of creation order", |r| r.accounts.swap(0, 1)),
            ("account created outside the applied log", |r| {
                r.accounts[0].created = LogIndex(0)
            }),
            ("account created outside the applied log", |r| {
                r.applied_index = LogIndex(2)
            }),
            ("invalid message in an inbox", |r| {
                first_message(r).text = "m".repeat(MESSAGE_CHARS_MAX + 1)
            }),
            ("invalid message in an inbox", |r| {
                first_message(r).from = "".into()
            }),
            (
                "message arrivals out of order or outside the applied log",
                |r| first_message(r).arrival = LogIndex(0),
            ),
            (
                "message arrivals out of order or outside the applied log",
                |r| first_message(r).arrival = LogIndex(r.applied_index.0 + 1),
            ),
            ("more messages than message ids", |r| {
                for account in r.accounts.iter_mut() {
                    account.next_message_id = 1;
                }
            }),
            ("more messages in an inbox than inbox_messages_max", |r| {
                r.limits.inbox_messages_max = 1
            }),
            ("more retained bytes than retained_bytes_max", |r| {
                // Forty more 500-byte messages, arrived long after the rest.
                r.applied_index = LogIndex(1000);
                r.limits.retained_bytes_max = crate::limits::RETAINED_BYTES_MIN;
                let account = &mut r.accounts[0];
                account.next_message_id += 40;
                let InboxRecord::Owned(messages) = &mut account.inbox else {
                    unreachable!()
                };
                messages.extend((0..40).map(|k| MessageRecord {
                    from: "bob".into(),
                    text: "x".repeat(500),
                    arrival: LogIndex(900 + k),
                }));
            }),
            ("two messages arrived at one index", |r| {
                // Another account's copy of the newest message anywhere.
                let arrivals = |a: &AccountRecord<'_>| match &a.inbox {
                    InboxRecord::Owned(messages) => messages.last().map(|m| m.arrival),
                    InboxRecord::Borrowed(_) => None,
                };
                let (newest, latest) = (0..r.accounts.len())
                    .filter_map(|k| arrivals(&r.accounts[k]).map(|arrival| (k, arrival)))
                    .max_by_key(|&(_, arrival)| arrival)
                    .expect("the rich state has a message");
                let other = usize::from(newest == 0);
                let account = &mut r.accounts[other];
                assert!(account.created < latest);
                account.next_message_id += 1;
                let InboxRecord::Owned(messages) = &mut account.inbox else {
                    unreachable!()
                };
                messages.push(MessageRecord {
                    from: "bob".into(),
                    text: "copy".into(),
                    arrival: latest,
                });
            }),
            ("limits out of range", |r| r.limits.inbox_messages_max = 0),
            ("limits out of range", |r| r.limits.retained_bytes_max = 0),
            ("sessions out of client id order", |r| r.sessions.swap(0, 1)),
            ("session active outside the applied log", |r| {
                r.sessions[0].last_active = LogIndex(r.applied_index.0 + 1)
            }),
            ("session active outside the applied log", |r| {
                r.sessions[0].client_id = ClientId(0)
            }),
            ("two sessions active at one index", |r| {
                r.sessions[1].last_active = r.sessions[0].last_active
            }),
            ("session reply does not match its sequence", |r| {
                r.sessions[0].last_sequence = 0
            }),
            ("session reply does not match its sequence", |r| {
                r.sessions[0].last_reply = Cow::Owned(None)
            }),
            ("sessions_max out of range", |r| r.sessions_max = 0),
            ("sessions_max out of range", |r| {
                r.sessions_max = SESSIONS_MAX as u64 + 1
            }),
            ("more sessions than sessions_max", |r| r.sessions_max = 1),
        ]
    }

    #[test]
    fn restore_rejects_snapshots_that_break_an_invariant() {
        let bytes = rich_chat().snapshot();
        assert_eq!(decode_record(&bytes).sessions.len(), 2);
        for (reason, breaker) in invariant_breakers() {
            let mut record = decode_record(&bytes);
            breaker(&mut record);
            let result = Chat::restore(&encode_record(&record));
            assert_eq!(
                result,
                Err(ChatSnapshotError::Invalid { reason }),
                "{reason}"
            );
        }
    }

    #[test]
    fn digest_differs_when_the_state_differs() {
        let base = rich_harness();
        let changes: [fn(&mut Harness); 5] = [
            |h| assert_eq!(h.status(create("dave")), crate::chat::Status::Success),
            |h| {
                assert_eq!(
                    h.status(send("bob", "bob", "x")),
                    crate::chat::Status::Success
                )
            },
            |h| _ = h.register(),
            |h| h.chat.apply_noop(LogIndex(h.index + 1)),
            |h| _ = h.run(check("bob")),
        ];
        let mut digests = vec![base.chat.digest()];
        for change in changes {
            let mut harness = rich_harness();
            change(&mut harness);
            digests.push(harness.chat.digest());
        }
        let mut distinct = digests.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), digests.len(), "{digests:x?}");
    }

    #[test]
    fn equal_histories_give_equal_digests() {
        assert_eq!(rich_chat().digest(), rich_chat().digest());
        assert_eq!(Chat::new().digest(), Chat::default().digest());
    }

    #[test]
    fn errors_display_one_line() {
        let errors = [
            ChatSnapshotError::TooLarge { size_bytes: 1 },
            ChatSnapshotError::Decode { reason: "x".into() },
            ChatSnapshotError::UnsupportedVersion { version: 9 },
            ChatSnapshotError::TrailingBytes { count: 3 },
            ChatSnapshotError::Invalid { reason: "y" },
        ];
        for error in errors {
            let text = error.to_string();
            assert!(
                text.starts_with("chat snapshot") && !text.contains('\n'),
                "{text}"
            );
        }
    }

    /// One step of a random history: the command is derived from the driver's view of the
    /// sessions, never from a chat, so both chats under test see the same commands.
    #[derive(Clone, Debug)]
    enum Step {
        Register,
        Noop,
        Submit {
            client_slot: usize,
            sequence_kind: u8,
            operation: Operation,
        },
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        let names = vec!["alice", "bob", "carol", "名前", "", "bell\u{7}"];
        prop::sample::select(names).prop_map(str::to_owned)
    }

    fn operation_strategy() -> impl Strategy<Value = Operation> {
        let patterns = vec!["*", "a*", "?o?", "[a-c]*", "[!a]*", "\\*"];
        let long_message = "m".repeat(MESSAGE_CHARS_MAX + 1);
        let texts = vec![
            String::new(),
            "hi".to_owned(),
            "🙂".to_owned(),
            long_message,
        ];
        prop_oneof![
            name_strategy().prop_map(|username| Operation::CreateAccount { username }),
            name_strategy().prop_map(|username| Operation::CreateAccountWithPassword {
                username,
                credential: credential(3),
            }),
            name_strategy().prop_map(|username| Operation::CheckAccount { username }),
            prop::sample::select(patterns).prop_map(|pattern| Operation::ListAccounts {
                pattern: pattern.to_owned()
            }),
            name_strategy().prop_map(|username| Operation::DeleteAccount { username }),
            (
                name_strategy(),
                name_strategy(),
                prop::sample::select(texts)
            )
                .prop_map(|(from, to, message)| Operation::SendMessage {
                    from,
                    to,
                    message
                }),
            (name_strategy(), 0u64..5).prop_map(|(username, first_message_id)| {
                Operation::FetchMessages {
                    username,
                    first_message_id,
                }
            }),
        ]
    }

    fn step_strategy() -> impl Strategy<Value = Step> {
        prop_oneof![
            1 => Just(Step::Register),
            1 => Just(Step::Noop),
            8 => (0usize..5, 0u8..6, operation_strategy()).prop_map(
                |(client_slot, sequence_kind, operation)| Step::Submit {
                    client_slot,
                    sequence_kind,
                    operation,
                }
            ),
        ]
    }

    /// The clients' side of a random history: who registered, and their last sequence.
    #[derive(Default)]
    struct Driver {
        clients: Vec<(ClientId, u64)>,
    }

    impl Driver {
        /// The command for `step` at `index`, or `None` for a no-op.
        fn command(&mut self, index: LogIndex, step: &Step) -> Option<Command> {
            let (client_slot, sequence_kind, operation) = match step {
                Step::Noop => return None,
                Step::Register => {
                    self.clients.push((ClientId(index.0), 0));
                    return Some(Command::RegisterClient);
                }
                Step::Submit {
                    client_slot,
                    sequence_kind,
                    operation,
                } => (*client_slot, *sequence_kind, operation.clone()),
            };
            let Some((client_id, last_sequence)) = self.clients.get_mut(client_slot) else {
                let client_id = ClientId(u64::MAX - client_slot as u64);
                return Some(Command::Client {
                    client_id,
                    sequence: 1,
                    operation,
                });
            };
            let sequence = match sequence_kind {
                0 => *last_sequence,
                1 => last_sequence.saturating_sub(1),
                _ => *last_sequence + 1,
            };
            *last_sequence = sequence.max(*last_sequence);
            Some(Command::Client {
                client_id: *client_id,
                sequence,
                operation,
            })
        }
    }

    fn apply_step(chat: &mut Chat, index: LogIndex, command: &Option<Command>) -> Option<Outcome> {
        match command {
            Some(command) => Some(chat.apply(index, command)),
            None => {
                chat.apply_noop(index);
                None
            }
        }
    }

    proptest! {
        #[test]
        fn a_chat_restored_midway_stays_identical_to_one_never_snapshotted(
            steps in prop::collection::vec(step_strategy(), 1..120),
            split_fraction in 0.0f64..1.0,
            inbox_messages_max in 1u64..4,
            tight_bytes in any::<bool>(),
        ) {
            let split = (steps.len() as f64 * split_fraction) as usize;
            // Small bounds, so messages are dropped across the snapshot.
            let limits = ChatLimits {
                inbox_messages_max,
                retained_bytes_max: match tight_bytes {
                    true => crate::limits::RETAINED_BYTES_MIN,
                    false => crate::limits::RETAINED_BYTES_MAX,
                },
            };
            let mut straight = Chat::with_limits_and_sessions_max(limits, 3);
            let mut restored = Chat::with_limits_and_sessions_max(limits, 3);
            let mut driver = Driver::default();
            for (position, step) in steps.iter().enumerate() {
                if position == split {
                    restored = Chat::restore(&restored.snapshot()).map_err(|error| {
                        TestCaseError::fail(error.to_string())
                    })?;
                }
                let index = LogIndex(position as u64 + 1);
                let mut command = driver.command(index, step);
                // Now and then, act as the owner of the account the operation acts on.
                if let Some(Command::Client { client_id, sequence, operation }) = &command {
                    let owner = operation
                        .acting_account()
                        .and_then(|account| straight.credential(account))
                        .filter(|_| !index.0.is_multiple_of(3));
                    if let Some((principal, _)) = owner {
                        command = Some(Command::Authenticated {
                            principal,
                            client_id: *client_id,
                            sequence: *sequence,
                            operation: operation.clone(),
                        });
                    }
                }
                let expected = apply_step(&mut straight, index, &command);
                prop_assert_eq!(apply_step(&mut restored, index, &command), expected);
            }
            prop_assert_eq!(restored.digest(), straight.digest());
            prop_assert_eq!(&restored, &straight);
        }
    }
}
