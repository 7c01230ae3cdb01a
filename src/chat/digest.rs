//! An incremental digest of the chat state, so reading it costs O(1) however large the state.
//!
//! Each account and each session contributes one 64-bit hash to a wrapping sum, kept up to
//! date as commands apply; an account's hash covers its name, its creation index, the next
//! message id, and its inbox's own wrapping sum over each retained message with its id (so
//! dropping the oldest message subtracts one hash, and order is fixed by the ids). The sums
//! do not depend on iteration order, so equal states give equal digests, and a restored
//! snapshot arrives at the same sums as it re-inserts.
//! (Recomputing a hash of the whole state on every status request stalled a node with a million
//! messages for longer than an election timeout.)

use super::{Account, Session};
use crate::codec;
use crate::types::ClientId;

/// FNV-1a, 64-bit: small and stable across platforms and releases (not adversary-proof).
pub(super) fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// Hashes length-prefixed parts, then spreads the bits (splitmix64's finalizer) so that sums
/// of these hashes stay well mixed.
pub(super) fn mix(parts: &[&[u8]]) -> u64 {
    let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for part in parts {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part);
    }
    let mut z = fnv1a_64(&bytes);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One account's contribution to the digest.
pub(super) fn account(name: &str, account: &Account) -> u64 {
    let created = account.created.0.to_le_bytes();
    let inbox = account.inbox.digest().to_le_bytes();
    let next_id = account.inbox.next_id().to_le_bytes();
    mix(&[b"account", name.as_bytes(), &created, &inbox, &next_id])
}

/// One session's contribution to the digest.
pub(super) fn session(client_id: ClientId, session: &Session) -> u64 {
    // Stored replies are small: a write's status, or a read's status alone.
    let reply = codec::encode_payload(&session.last_reply).unwrap_or_default();
    let client = client_id.0.to_le_bytes();
    let sequence = session.last_sequence.to_le_bytes();
    let active = session.last_active.0.to_le_bytes();
    mix(&[b"session", &client, &sequence, &active, &reply])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_64_matches_published_test_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn mix_separates_parts() {
        assert_ne!(mix(&[b"ab", b"c"]), mix(&[b"a", b"bc"]));
    }
}
