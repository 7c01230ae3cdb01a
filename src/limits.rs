//! Every bound in the core, in one place, with the relations between them checked at compile
//! time (TigerBeetle style). A queue, batch, frame or table without a bound here is a bug.

/// Largest encoded frame (network) or record (disk) payload, in bytes. Anything claiming to be
/// larger is refused before a byte of it is buffered.
pub const FRAME_SIZE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Longest username, in characters (Unicode scalar values), as in the original service.
pub const USERNAME_CHARS_MAX: usize = 20;

/// Longest chat message, in characters (Unicode scalar values), as in the original service.
pub const MESSAGE_CHARS_MAX: usize = 500;

/// Most bytes in a password (UTF-8); a longer one is refused before it is hashed, so a client
/// cannot make a node hash megabytes.
pub const PASSWORD_BYTES_MAX: usize = 128;

/// Bounds of a stored password hash's Argon2 cost: memory in KiB (Argon2's own least, and
/// 1 GiB), and passes. A node hashes only within them, and the state machine stores nothing
/// outside them, so checking a stored hash can never ask for more.
pub const PASSWORD_MEMORY_KIB_MIN: u32 = 8;
/// See [`PASSWORD_MEMORY_KIB_MIN`].
pub const PASSWORD_MEMORY_KIB_MAX: u32 = 1024 * 1024;
/// See [`PASSWORD_MEMORY_KIB_MIN`].
pub const PASSWORD_ITERATIONS_MAX: u32 = 64;

/// Longest glob pattern accepted by `list_account`, in characters.
pub const PATTERN_CHARS_MAX: usize = 256;

/// Largest encoded chat command in a log entry. Commands are bounded before they are proposed
/// (every string cut to one past its limit), so this holds for any client input.
pub const COMMAND_SIZE_BYTES_MAX: usize = 4096;

/// Most messages one `fetch_messages` reply carries; a client pages through a longer inbox by
/// fetching again from the next id.
pub const FETCH_MESSAGES_MAX: usize = 1000;

/// Most accounts at once; `create_account` beyond it answers GENERAL_ERROR. The bound keeps a
/// `list_account` reply (every username) within one frame.
pub const ACCOUNTS_MAX: usize = 64 * 1024;

/// Most client sessions the chat state machine remembers; the least recently used is evicted,
/// and its client is told its session expired (Raft thesis §6.3) rather than risk a duplicate.
pub const SESSIONS_MAX: usize = 16 * 1024;

/// Default of the most messages one inbox retains (a replicated setting, fixed when a cluster
/// is created); beyond it the inbox's oldest message is dropped.
pub const INBOX_MESSAGES_DEFAULT: u64 = 10_000;

/// Largest setting of the messages one inbox retains.
pub const INBOX_MESSAGES_MAX: u64 = 1_000_000;

/// Default of the most bytes of messages all inboxes retain together (a replicated setting);
/// beyond it the oldest message anywhere is dropped.
pub const RETAINED_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;

/// Smallest setting of the retained bytes: room for a few of the largest messages.
pub const RETAINED_BYTES_MIN: u64 = 16 * 1024;

/// Largest setting of the retained bytes: with every account and session at its largest, a
/// snapshot still fits `CHAT_SNAPSHOT_SIZE_BYTES_MAX` (checked below).
pub const RETAINED_BYTES_MAX: u64 = 768 * 1024 * 1024;

/// Largest chat snapshot, in bytes, that `Chat::restore` accepts, and the most a snapshot being
/// decoded may claim to allocate. Inboxes grow with traffic, so the chat state can outgrow one
/// frame; a snapshot is bounded by this instead of by `FRAME_SIZE_BYTES_MAX`.
pub const CHAT_SNAPSHOT_SIZE_BYTES_MAX: usize = 1024 * 1024 * 1024;
const _: () = assert!(CHAT_SNAPSHOT_SIZE_BYTES_MAX >= FRAME_SIZE_BYTES_MAX);
// The largest snapshot: every retained message (its encoding, two lengths and an index, is
// smaller than its charge), every account (name, indexes, inbox header) and every session (ids
// and a small remembered reply), with slack for the header.
// An account's password hash adds its creation index, salt, hash and cost; a session's
// principal (the account it last acted as) its name and creation index.
const ACCOUNT_SNAPSHOT_BYTES_MAX: u64 = (USERNAME_CHARS_MAX as u64) * 4 + 64 + 64;
const SESSION_SNAPSHOT_BYTES_MAX: u64 = 128 + (USERNAME_CHARS_MAX as u64) * 4 + 24;
const _: () = assert!(
    RETAINED_BYTES_MAX
        + ACCOUNTS_MAX as u64 * ACCOUNT_SNAPSHOT_BYTES_MAX
        + SESSIONS_MAX as u64 * SESSION_SNAPSHOT_BYTES_MAX
        + 4096
        <= CHAT_SNAPSHOT_SIZE_BYTES_MAX as u64
);
const _: () = assert!(RETAINED_BYTES_MIN <= RETAINED_BYTES_DEFAULT);
const _: () = assert!(RETAINED_BYTES_DEFAULT <= RETAINED_BYTES_MAX);
const _: () = assert!(INBOX_MESSAGES_DEFAULT <= INBOX_MESSAGES_MAX);
// The largest message fits the smallest retention bound several times over.
const _: () =
    assert!(((USERNAME_CHARS_MAX + MESSAGE_CHARS_MAX) * 4 + 64) as u64 * 4 <= RETAINED_BYTES_MIN);

/// Most log entries in one AppendEntries message.
pub const APPEND_ENTRIES_MAX: usize = 1024;

/// Most payload bytes of log entries in one AppendEntries message (a soft bound: one entry
/// larger than this still travels alone).
pub const APPEND_BYTES_MAX: usize = 1024 * 1024;

/// Most AppendEntries in flight to one follower in replicate mode (the pipeline window).
pub const INFLIGHT_APPENDS_MAX: usize = 64;

/// Most entries a leader holds proposed but uncommitted before it refuses new proposals.
pub const UNCOMMITTED_ENTRIES_MAX: usize = 64 * 1024;

/// Most committed entries handed to the state machine in one Ready.
pub const APPLY_ENTRIES_MAX: usize = 4096;

/// Most reads a leader keeps waiting for their round (or its term's first commit); more are
/// refused as busy, so a leader cut off from its quorum never grows without bound.
pub const READS_PENDING_MAX: usize = 64 * 1024;

/// Largest snapshot chunk in one InstallSnapshot message, in bytes.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1024 * 1024;

/// Most unconfirmed snapshot chunks in flight to one follower (the transfer's window).
pub const SNAPSHOT_INFLIGHT_CHUNKS_MAX: usize = 4;

/// Largest snapshot, in bytes: the chat state machine's snapshot is the whole snapshot.
pub const SNAPSHOT_SIZE_BYTES_MAX: usize = CHAT_SNAPSHOT_SIZE_BYTES_MAX;

/// Entries kept in the log behind a new snapshot by default, so a follower a little behind it
/// catches up from the log (etcd keeps 5,000 for the same reason).
pub const SNAPSHOT_CATCH_UP_ENTRIES: u64 = 5000;

/// Entries applied since the last snapshot that call for a new one, by default (etcd's
/// `snapshot-count` is of the same order).
pub const SNAPSHOT_LOG_ENTRIES_DEFAULT: u64 = 100_000;

/// Command bytes applied since the last snapshot that call for a new one, by default.
pub const SNAPSHOT_LOG_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Largest cluster, in members (voters and learners).
pub const CLUSTER_SIZE_MAX: usize = 15;

/// Longest member address in a configuration ("host:port", or a DNS name and port).
pub const ADDRESS_BYTES_MAX: usize = 256;

/// A learner to be promoted is caught up once its log is within this many entries of the
/// leader's: one AppendEntries batch, so promoting it never makes a quorum wait on a long
/// catch-up.
pub const LEARNER_LAG_ENTRIES_MAX: u64 = APPEND_ENTRIES_MAX as u64;

// Worst-case bytes of one fetch reply: each message carries a username and a message, at most
// four UTF-8 bytes a character, plus framing slack; it must fit in one frame.
const FETCH_REPLY_BYTES_MAX: usize =
    FETCH_MESSAGES_MAX * (USERNAME_CHARS_MAX + MESSAGE_CHARS_MAX) * 4 + 64 * FETCH_MESSAGES_MAX;
const _: () = assert!(FETCH_REPLY_BYTES_MAX < FRAME_SIZE_BYTES_MAX);
const LIST_REPLY_BYTES_MAX: usize = ACCOUNTS_MAX * (USERNAME_CHARS_MAX * 4 + 8) + 64;
const _: () = assert!(LIST_REPLY_BYTES_MAX < FRAME_SIZE_BYTES_MAX);
// A bounded send_message: two usernames and a message one past their limits, four UTF-8 bytes a
// character, plus the command's fixed fields.
const _: () = assert!(
    ((USERNAME_CHARS_MAX + 1) * 2 + MESSAGE_CHARS_MAX + 1) * 4 + 64 <= COMMAND_SIZE_BYTES_MAX
);
const _: () = assert!(APPEND_BYTES_MAX * 2 < FRAME_SIZE_BYTES_MAX);
// A chunk travels in one frame, with room for its message's fixed fields and configuration.
const _: () = assert!(
    SNAPSHOT_CHUNK_BYTES_MAX + 4096 + CLUSTER_SIZE_MAX * (ADDRESS_BYTES_MAX + 64)
        < FRAME_SIZE_BYTES_MAX
);
const _: () = assert!(SNAPSHOT_INFLIGHT_CHUNKS_MAX >= 1);
const _: () = assert!(INFLIGHT_APPENDS_MAX >= 1);
const _: () = assert!(APPEND_ENTRIES_MAX >= 1);
