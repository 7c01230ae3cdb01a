//! One account's inbox: the messages it retains, oldest first, each with a stable id, stored so
//! that copying the whole chat state is cheap (copy on write): a snapshot is serialized from a
//! copy taken in O(accounts + messages / CHUNK_MESSAGES), off the node's event loop, while the
//! live state goes on changing.
//!
//! Messages live in chunks of at most `CHUNK_MESSAGES`, each behind an `Arc`. Appending writes
//! only the last chunk (copying it first if a snapshot copy still shares it); dropping the
//! oldest message only moves `head_skip` forward and frees a chunk once it is all dropped. So a
//! copy shares every chunk, and the live inbox copies at most one chunk per snapshot.
//!
//! Invariant: `first_id() + len == next_id`: ids count every message ever received, so an id
//! names the same message for as long as it is retained, whatever is dropped before it.
//! Invariant: `head_skip < chunks[0].len()` when there are chunks; no chunk is empty.
//! Invariant: `retained_bytes` and `digest` are the sums of `charge` and `message_hash` over the
//! retained messages.

use std::collections::VecDeque;
use std::sync::Arc;

use super::digest;
use crate::types::LogIndex;

/// Messages per chunk: the unit a write copies when a snapshot copy shares it.
const CHUNK_MESSAGES: usize = 64;

/// Bytes charged for a message beyond its sender's name and text: roughly what it costs in
/// memory (two strings and an index) and more than it costs in a snapshot (two lengths and an
/// index), so a bound on charged bytes bounds both.
pub const MESSAGE_OVERHEAD_BYTES: u64 = 64;

/// A retained message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// The sender's username.
    pub from: String,
    /// The text.
    pub text: String,
    /// The log index of the command that delivered it; orders eviction across inboxes.
    pub arrival: LogIndex,
}

impl StoredMessage {
    /// Bytes this message counts against the chat's retention bound.
    pub fn charge(&self) -> u64 {
        MESSAGE_OVERHEAD_BYTES + self.from.len() as u64 + self.text.len() as u64
    }
}

/// One account's retained messages.
#[derive(Clone, Debug)]
pub struct Inbox {
    chunks: VecDeque<Arc<Vec<StoredMessage>>>,
    head_skip: usize,
    len: usize,
    next_id: u64,
    retained_bytes: u64,
    digest: u64,
}

impl Default for Inbox {
    fn default() -> Inbox {
        Inbox {
            chunks: VecDeque::new(),
            head_skip: 0,
            len: 0,
            next_id: 1,
            retained_bytes: 0,
            digest: 0,
        }
    }
}

impl PartialEq for Inbox {
    /// Equal content and ids, however the messages happen to be chunked.
    fn eq(&self, other: &Inbox) -> bool {
        self.next_id == other.next_id && self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Inbox {}

impl Inbox {
    /// An inbox that has received `next_id - 1` messages and retains the last `messages.len()`
    /// of them, or `None` if that is more than it received.
    pub fn restore(next_id: u64, messages: Vec<StoredMessage>) -> Option<Inbox> {
        let len = u64::try_from(messages.len()).ok()?;
        if next_id.checked_sub(len)? < 1 {
            return None;
        }
        let mut inbox = Inbox {
            next_id: next_id - len,
            ..Inbox::default()
        };
        for message in messages {
            inbox.push(message);
        }
        assert_eq!(inbox.next_id, next_id);
        Some(inbox)
    }

    /// How many messages are retained.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The id the next message will get: one more than the count of every message received.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// The id of the oldest retained message (equal to `next_id` when none is retained).
    pub fn first_id(&self) -> u64 {
        self.next_id - self.len as u64
    }

    /// Bytes the retained messages count against the retention bound.
    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes
    }

    /// A hash of the retained messages and their ids, kept up to date as they change.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The oldest retained message.
    pub fn oldest(&self) -> Option<&StoredMessage> {
        self.chunks.front().map(|chunk| &chunk[self.head_skip])
    }

    /// Appends a message; returns its id.
    pub fn push(&mut self, message: StoredMessage) -> u64 {
        let id = self.next_id;
        self.retained_bytes += message.charge();
        self.digest = self.digest.wrapping_add(message_hash(id, &message));
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK_MESSAGES => Arc::make_mut(last).push(message),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_MESSAGES);
                chunk.push(message);
                self.chunks.push_back(Arc::new(chunk));
            }
        }
        self.len += 1;
        self.next_id += 1;
        id
    }

    /// Drops the oldest message; returns its charge, or `None` if the inbox is empty.
    pub fn pop_oldest(&mut self) -> Option<u64> {
        let id = self.first_id();
        let first = self.chunks.front()?;
        let message = &first[self.head_skip];
        let charge = message.charge();
        self.digest = self.digest.wrapping_sub(message_hash(id, message));
        self.retained_bytes -= charge;
        self.head_skip += 1;
        if self.head_skip == first.len() {
            self.chunks.pop_front();
            self.head_skip = 0;
        }
        self.len -= 1;
        Some(charge)
    }

    /// The retained messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &StoredMessage> + '_ {
        self.iter_from(self.first_id())
    }

    /// The retained messages with an id of at least `id`, oldest first.
    pub fn iter_from(&self, id: u64) -> impl Iterator<Item = &StoredMessage> + '_ {
        let skip = id.saturating_sub(self.first_id());
        let skip = usize::try_from(skip).unwrap_or(usize::MAX).min(self.len);
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.iter())
            .skip(self.head_skip + skip)
    }
}

/// One retained message's contribution to its inbox's digest.
fn message_hash(id: u64, message: &StoredMessage) -> u64 {
    digest::mix(&[
        b"message",
        &id.to_le_bytes(),
        message.from.as_bytes(),
        message.text.as_bytes(),
        &message.arrival.0.to_le_bytes(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(k: u64) -> StoredMessage {
        StoredMessage {
            from: format!("u{k}"),
            text: "x".repeat(k as usize % 7),
            arrival: LogIndex(k),
        }
    }

    fn texts(inbox: &Inbox) -> Vec<String> {
        inbox.iter().map(|m| m.from.clone()).collect()
    }

    #[test]
    fn ids_count_every_message_and_survive_dropping_the_oldest() {
        let mut inbox = Inbox::default();
        for k in 1..=200 {
            assert_eq!(inbox.push(message(k)), k);
        }
        for _ in 0..130 {
            inbox.pop_oldest().unwrap();
        }
        assert_eq!(
            (inbox.first_id(), inbox.next_id(), inbox.len()),
            (131, 201, 70)
        );
        assert_eq!(inbox.oldest(), Some(&message(131)));
        let from_150: Vec<_> = inbox.iter_from(150).cloned().collect();
        assert_eq!(from_150.first(), Some(&message(150)));
        assert_eq!(from_150.len(), 51);
        assert_eq!(
            inbox.iter_from(1).count(),
            70,
            "below the oldest: from the oldest"
        );
        assert_eq!(inbox.iter_from(999).count(), 0);
    }

    #[test]
    fn a_copy_is_unaffected_by_later_changes_to_the_original() {
        let mut inbox = Inbox::default();
        for k in 1..=100 {
            inbox.push(message(k));
        }
        let copy = inbox.clone();
        let before = texts(&copy);
        for k in 101..=300 {
            inbox.push(message(k));
            inbox.pop_oldest();
        }
        assert_eq!(texts(&copy), before);
        assert_eq!(
            copy.digest(),
            Inbox::restore(101, copy.iter().cloned().collect())
                .unwrap()
                .digest()
        );
    }

    #[test]
    fn restore_rebuilds_an_equal_inbox_with_equal_digest_and_charge() {
        let mut inbox = Inbox::default();
        for k in 1..=150 {
            inbox.push(message(k));
        }
        for _ in 0..77 {
            inbox.pop_oldest();
        }
        let restored = Inbox::restore(inbox.next_id(), inbox.iter().cloned().collect()).unwrap();
        assert_eq!(restored, inbox);
        assert_eq!(restored.digest(), inbox.digest());
        assert_eq!(restored.retained_bytes(), inbox.retained_bytes());
    }

    #[test]
    fn restore_refuses_more_messages_than_ids() {
        assert!(Inbox::restore(1, vec![message(1)]).is_none());
        assert!(Inbox::restore(0, vec![]).is_none());
        assert!(Inbox::restore(2, vec![message(1)]).is_some());
    }

    #[test]
    fn emptying_keeps_the_next_id_and_zeroes_the_sums() {
        let mut inbox = Inbox::default();
        inbox.push(message(1));
        inbox.push(message(2));
        inbox.pop_oldest();
        inbox.pop_oldest();
        assert_eq!(inbox.pop_oldest(), None);
        assert_eq!((inbox.len(), inbox.next_id(), inbox.first_id()), (0, 3, 3));
        assert_eq!((inbox.retained_bytes(), inbox.digest()), (0, 0));
    }
}
