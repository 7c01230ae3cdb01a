//! Who may act on an account: the types the chat state machine stores and checks for
//! password-protected accounts. It computes no hash and verifies no token: the node hashes a
//! new password (slowly, off its event loop, with a salt it draws) before the command enters
//! the log, and verifies a token before proposing; the state machine stores the hash and
//! checks, at apply time, that the token's holder is the account's owner. Accounts created
//! without a password stay open to anyone, as in the original service.

use serde::{Deserialize, Serialize};

use crate::types::LogIndex;

/// A password's slow salted hash (Argon2id) and the cost it was computed at, so that a cluster
/// can raise its cost without locking out older accounts. Never the password itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Credential {
    /// Random bytes drawn by the node that took the request, before the command was logged.
    pub salt: [u8; 16],
    /// Argon2id's output for the password under `salt` and the cost below.
    pub hash: [u8; 32],
    /// Argon2's memory cost, in KiB.
    pub memory_kib: u32,
    /// Argon2's time cost (passes over the memory).
    pub iterations: u32,
}

impl Credential {
    /// Whether its cost is within the bounds a node hashes at (see `limits`).
    pub fn cost_in_bounds(&self) -> bool {
        use crate::limits::{
            PASSWORD_ITERATIONS_MAX, PASSWORD_MEMORY_KIB_MAX, PASSWORD_MEMORY_KIB_MIN,
        };
        (PASSWORD_MEMORY_KIB_MIN..=PASSWORD_MEMORY_KIB_MAX).contains(&self.memory_kib)
            && (1..=PASSWORD_ITERATIONS_MAX).contains(&self.iterations)
    }
}

/// An account's owner, as a verified token names it: the username and the log index of the
/// command that created the account. The index tells a deleted account from a later one of
/// the same name, so a token outlives neither.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// The account's name.
    pub username: String,
    /// Where in the log the account was created.
    pub created: LogIndex,
}

impl Principal {
    /// Whether this principal owns the account `username` created at `created`.
    pub fn owns(&self, username: &str, created: LogIndex) -> bool {
        self.username == username && self.created == created
    }
}
