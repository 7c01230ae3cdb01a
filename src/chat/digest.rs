//! An incremental digest of the chat state, so reading it costs O(1) however large the state.
//!
//! Each account and each session contributes one 64-bit hash to a wrapping sum, kept up to
//! date as commands apply; an account's hash covers its name, its creation index, the next
//! message id, its password's hash if it has one, and its inbox's own wrapping sum over each retained message with its id (so
//! dropping the oldest message subtracts one hash, and order is fixed by the ids). The sums
//! do not depend on iteration order, so equal states give equal digests, and a restored
//! snapshot arrives at the same sums as it re-inserts.
//! (Recomputing a hash of the whole state on every status request stalled a node with a million
//! messages for longer than an election timeout.)

use super::{Account, Reply, Session};
use crate::types::ClientId;

/// Hashes length-prefixed parts, eight bytes at a time, each word folded into the state with a
/// 64×64→128-bit multiply (the mixing step of wyhash and foldhash), then spreads the bits
/// (splitmix64's finalizer) so that sums of these hashes stay well mixed. It is stable across
/// platforms and releases, allocates nothing, and is not adversary-proof: it detects replicas
/// that diverge, not forgeries. (It runs several times per command: a byte-at-a-time hash into
/// a scratch buffer was the largest cost of applying a message.)
pub(super) fn mix(parts: &[&[u8]]) -> u64 {
    const SEED: u64 = 0x243f_6a88_85a3_08d3;
    const LENGTH: u64 = 0x9e37_79b9_7f4a_7c15;
    const WORD: u64 = 0xa076_1d64_78bd_642f;
    let mut state = SEED;
    for part in parts {
        state = fold(state ^ part.len() as u64, LENGTH);
        let mut words = part.chunks_exact(8);
        for word in &mut words {
            let word: [u8; 8] = word.try_into().expect("chunks of eight");
            state = fold(state ^ u64::from_le_bytes(word), WORD);
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            state = fold(state ^ u64::from_le_bytes(word), WORD);
        }
    }
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 128-bit product of `a` and `b`, its two halves xored.
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// One account's contribution to the digest.
pub(super) fn account(name: &str, account: &Account) -> u64 {
    let created = account.created.0.to_le_bytes();
    let inbox = account.inbox.digest().to_le_bytes();
    let next_id = account.inbox.next_id().to_le_bytes();
    match &account.credential {
        // An open account hashes as it did before accounts had passwords.
        None => mix(&[b"account", name.as_bytes(), &created, &inbox, &next_id]),
        Some(credential) => mix(&[
            b"account",
            name.as_bytes(),
            &created,
            &inbox,
            &next_id,
            &credential.salt,
            &credential.hash,
            &credential.memory_kib.to_le_bytes(),
            &credential.iterations.to_le_bytes(),
        ]),
    }
}

/// One session's contribution to the digest.
pub(super) fn session(client_id: ClientId, session: &Session) -> u64 {
    let reply = reply(session.last_reply.as_ref()).to_le_bytes();
    let client = client_id.0.to_le_bytes();
    let sequence = session.last_sequence.to_le_bytes();
    let active = session.last_active.0.to_le_bytes();
    match &session.principal {
        // A session that never acted as anyone hashes as before there were principals.
        None => mix(&[b"session", &client, &sequence, &active, &reply]),
        Some(principal) => mix(&[
            b"session",
            &client,
            &sequence,
            &active,
            &reply,
            principal.username.as_bytes(),
            &principal.created.0.to_le_bytes(),
        ]),
    }
}

/// A stored reply's hash (0 for none), chained over its names and messages.
fn reply(reply: Option<&Reply>) -> u64 {
    let Some(reply) = reply else { return 0 };
    let status = reply.status.code().to_le_bytes();
    let first_id = reply.first_message_id.to_le_bytes();
    let mut hash = mix(&[b"reply", &status, &first_id]);
    for user in &reply.users {
        hash = mix(&[&hash.to_le_bytes(), user.as_bytes()]);
    }
    for (from, text) in &reply.messages {
        hash = mix(&[&hash.to_le_bytes(), from.as_bytes(), text.as_bytes()]);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_stable_across_releases() {
        // Replicas of one release compare digests; a change here must be deliberate.
        assert_eq!(mix(&[]), 0xe9e0_033e_3bad_af36);
        assert_eq!(mix(&[b"account", b"alice"]), 0x1e05_67b6_dc4c_cedb);
    }

    #[test]
    fn every_bit_of_the_input_changes_the_hash() {
        let input: Vec<u8> = (0..41).collect();
        let hash = mix(&[&input]);
        for bit in 0..input.len() * 8 {
            let mut flipped = input.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(mix(&[&flipped]), hash, "bit {bit}");
        }
    }

    #[test]
    fn mix_separates_parts() {
        assert_ne!(mix(&[b"ab", b"c"]), mix(&[b"a", b"bc"]));
    }
}
