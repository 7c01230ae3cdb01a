//! Passwords and tokens, as a node handles them: hashing a new password (Argon2id, with a salt
//! the node draws) before the command that stores it enters the log; checking a login's
//! password against the stored hash; signing and checking tokens with the cluster's token key
//! (HMAC-SHA256); and slowing down a username's logins after repeated failures.
//!
//! Hashing is slow on purpose (tens of milliseconds at the default cost), so the host runs it
//! off its event loop, a few at a time. Only the hash is replicated: the log, the snapshots
//! and the peers never see a password.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raftchat::chat::{Credential, Principal};
use raftchat::limits::PASSWORD_BYTES_MAX;
use raftchat::wire::Token;
use ring::hmac;

/// A node's settings for passwords and tokens (the cluster file's `[auth]`).
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// The cluster's token key; without one the node issues and accepts no tokens (logins
    /// fail), though accounts can still be created with passwords.
    pub token_key: Option<TokenKey>,
    /// How long a token is good for.
    pub token_ttl: Duration,
    /// The cost of new passwords' hashes.
    pub password_cost: PasswordCost,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            token_key: None,
            token_ttl: TOKEN_TTL_DEFAULT,
            password_cost: PasswordCost::default(),
        }
    }
}

/// How long a token is good for unless the cluster file says otherwise.
pub const TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(60 * 60);

/// How costly a new password's hash is. The cost is stored with each hash, so a cluster that
/// raises it still checks older accounts' passwords at theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordCost {
    /// Argon2's memory cost, in KiB (at least 8).
    pub memory_kib: u32,
    /// Argon2's time cost (at least 1).
    pub iterations: u32,
}

impl Default for PasswordCost {
    /// OWASP's recommended Argon2id setting (19 MiB, 2 passes, 1 lane).
    fn default() -> PasswordCost {
        PasswordCost {
            memory_kib: 19 * 1024,
            iterations: 2,
        }
    }
}

impl PasswordCost {
    /// Checks the cost against Argon2's bounds and ours (at most 1 GiB, 64 passes), which the
    /// state machine also holds every stored hash to.
    pub fn validate(&self) -> Result<(), String> {
        use raftchat::limits::{
            PASSWORD_ITERATIONS_MAX, PASSWORD_MEMORY_KIB_MAX, PASSWORD_MEMORY_KIB_MIN,
        };
        if !(PASSWORD_MEMORY_KIB_MIN..=PASSWORD_MEMORY_KIB_MAX).contains(&self.memory_kib) {
            return Err(format!(
                "password_memory_kib must be between {PASSWORD_MEMORY_KIB_MIN} and \
                 {PASSWORD_MEMORY_KIB_MAX}, got {}",
                self.memory_kib
            ));
        }
        if !(1..=PASSWORD_ITERATIONS_MAX).contains(&self.iterations) {
            return Err(format!(
                "password_iterations must be between 1 and {PASSWORD_ITERATIONS_MAX}, got {}",
                self.iterations
            ));
        }
        Ok(())
    }
}

/// The cluster's key for signing tokens: 32 secret bytes every member holds, so a token any
/// member issued is good at every member.
#[derive(Clone)]
pub struct TokenKey {
    key: hmac::Key,
    bytes: [u8; 32],
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("TokenKey(…)")
    }
}

impl TokenKey {
    /// A key of these bytes.
    pub fn new(bytes: [u8; 32]) -> TokenKey {
        TokenKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            bytes,
        }
    }

    /// A fresh random key.
    pub fn generate() -> Result<TokenKey, String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|error| format!("the system's random source failed: {error}"))?;
        Ok(TokenKey::new(bytes))
    }

    /// A key file's text: 64 hexadecimal digits, surrounding white space ignored.
    pub fn from_hex(text: &str) -> Result<TokenKey, String> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("a token key is 64 hexadecimal digits".into());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| "a token key is 64 hexadecimal digits".to_string())?;
        }
        Ok(TokenKey::new(bytes))
    }

    /// The key as a key file holds it.
    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A token for `principal`, good until `expires_unix_ms`, in cluster `cluster_id`.
    pub fn sign(&self, principal: Principal, expires_unix_ms: u64, cluster_id: u64) -> Token {
        let bytes = Token::signed_bytes(&principal, expires_unix_ms, cluster_id);
        let tag = hmac::sign(&self.key, &bytes);
        let mut signature = [0u8; 32];
        signature.copy_from_slice(tag.as_ref());
        Token {
            principal,
            expires_unix_ms,
            signature,
        }
    }

    /// The principal a token names, if this key signed it for this cluster and it has not
    /// expired at `now_unix_ms`; else why not.
    pub fn verify(
        &self,
        token: &Token,
        now_unix_ms: u64,
        cluster_id: u64,
    ) -> Result<Principal, &'static str> {
        let bytes = Token::signed_bytes(&token.principal, token.expires_unix_ms, cluster_id);
        #[cfg(feature = "mutants")]
        let forged_ok = raftchat::mutants::is_active(raftchat::mutants::Mutant::AcceptForgedToken);
        #[cfg(not(feature = "mutants"))]
        let forged_ok = false;
        if !forged_ok && hmac::verify(&self.key, &bytes, &token.signature).is_err() {
            return Err("the token was not issued by this cluster");
        }
        if token.expires_unix_ms <= now_unix_ms {
            return Err("the token has expired; log in again");
        }
        // No node signs another, but a principal goes into the log: keep it bounded whatever
        // got past the signature (a leaked key, a mutant).
        if !raftchat::chat::is_valid_username(&token.principal.username) {
            return Err("the token names no valid account");
        }
        Ok(token.principal.clone())
    }
}

/// Whether `password` is one the service accepts: 1 to `PASSWORD_BYTES_MAX` bytes.
pub fn password_acceptable(password: &str) -> Result<(), String> {
    if password.is_empty() || password.len() > PASSWORD_BYTES_MAX {
        return Err(format!(
            "a password must be 1 to {PASSWORD_BYTES_MAX} bytes long"
        ));
    }
    Ok(())
}

/// A salt for a new password's hash, from the system's random source (in simulation, the
/// run's seeded one, so a run replays exactly).
pub fn draw_salt() -> Result<[u8; 16], String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|error| format!("the system's random source failed: {error}"))?;
    Ok(salt)
}

/// The stored form of `password`: its Argon2id hash under `salt` at `cost`. Slow on purpose.
pub fn hash_password(
    password: &str,
    salt: [u8; 16],
    cost: PasswordCost,
) -> Result<Credential, String> {
    let hash = argon2_hash(password, &salt, cost.memory_kib, cost.iterations)?;
    Ok(Credential {
        salt,
        hash,
        memory_kib: cost.memory_kib,
        iterations: cost.iterations,
    })
}

/// Whether `password` is the one `credential` was made from. Slow on purpose; the comparison
/// of the hashes takes the same time wherever they differ.
pub fn verify_password(password: &str, credential: &Credential) -> bool {
    if !credential.cost_in_bounds() {
        return false; // The state machine stores none such; never allocate for one.
    }
    let Ok(hash) = argon2_hash(
        password,
        &credential.salt,
        credential.memory_kib,
        credential.iterations,
    ) else {
        return false;
    };
    let difference = hash
        .iter()
        .zip(credential.hash.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    #[cfg(feature = "mutants")]
    if raftchat::mutants::is_active(raftchat::mutants::Mutant::AcceptAnyPassword) {
        return true;
    }
    difference == 0
}

fn argon2_hash(
    password: &str,
    salt: &[u8; 16],
    memory_kib: u32,
    iterations: u32,
) -> Result<[u8; 32], String> {
    let params = argon2::Params::new(memory_kib, iterations, 1, Some(32))
        .map_err(|error| format!("bad password cost: {error}"))?;
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut hash = [0u8; 32];
    hasher
        .hash_password_into(password.as_bytes(), salt, &mut hash)
        .map_err(|error| format!("cannot hash the password: {error}"))?;
    Ok(hash)
}

/// Milliseconds since the Unix epoch, by this machine's clock (the simulator's, in
/// simulation): what token expiries are compared with.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Usernames remembered at once; beyond it the one whose last failure is oldest is forgotten.
/// Only failures against existing protected accounts are remembered, so this bound, one per
/// account the cluster can hold, is reached only by names deleted since (and long unlocked).
const THROTTLED_USERNAMES_MAX: usize = raftchat::limits::ACCOUNTS_MAX;
/// Failed logins allowed before the next ones are slowed down.
const FREE_FAILURES: u32 = 3;
/// The delay after the first failure beyond the free ones; it doubles with each further one.
const FIRST_DELAY: Duration = Duration::from_millis(200);
/// The longest delay.
const DELAY_MAX: Duration = Duration::from_secs(10);
/// A username whose last failure is this old starts afresh.
const FORGET_AFTER_MS: u64 = 15 * 60 * 1000;

/// Failed logins per username on this node, to slow down password guessing: after
/// `FREE_FAILURES` failures, the username is locked for `FIRST_DELAY` after its last failure,
/// twice as long after each further one, up to `DELAY_MAX`; a login while it is locked is
/// refused at once, its password unchecked (so a guesser gets one guess per lock, and no
/// request is held open). A success, or a quiet quarter of an hour, clears it.
/// (Per username rather than per source address: a guesser with many addresses is slowed as
/// much, and the account's owner only after failures of their own or an attack on them.)
///
/// At most one password check per username is under way at once: otherwise a guesser could
/// send hundreds of logins together, all admitted before the first failure is counted.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    /// Failures and the time of the last one, per username.
    failures: BTreeMap<String, (u32, u64)>,
    /// Usernames with a login under way (between its admission and its answer).
    checking: std::collections::BTreeSet<String>,
}

/// A login admitted by the throttle: while it lives, no other login for its username is; it
/// ends (however the login ends) when it is dropped.
#[derive(Debug)]
pub struct LoginSlot {
    throttle: Arc<Mutex<LoginThrottle>>,
    username: String,
}

impl Drop for LoginSlot {
    fn drop(&mut self) {
        lock_throttle(&self.throttle)
            .checking
            .remove(&self.username);
    }
}

impl LoginSlot {
    /// Admits a login for `username` at `now_unix_ms`, or says why not: the username is locked
    /// after failures, or another login for it is under way.
    pub fn admit(
        throttle: &Arc<Mutex<LoginThrottle>>,
        username: &str,
        now_unix_ms: u64,
    ) -> Result<LoginSlot, String> {
        let mut guard = lock_throttle(throttle);
        let locked = guard.locked_for(username, now_unix_ms);
        if !locked.is_zero() {
            return Err(format!(
                "too many failed logins as {username}: try again in {} ms",
                locked.as_millis().max(1)
            ));
        }
        if !guard.checking.insert(username.to_owned()) {
            return Err(format!(
                "another login as {username} is being checked: try again in a moment"
            ));
        }
        Ok(LoginSlot {
            throttle: Arc::clone(throttle),
            username: username.to_owned(),
        })
    }

    /// The login failed against an existing protected account: it counts towards a lock.
    pub fn failed(&self, now_unix_ms: u64) {
        lock_throttle(&self.throttle).failed(&self.username, now_unix_ms);
    }

    /// The login succeeded: the username's failures are forgotten.
    pub fn succeeded(&self) {
        lock_throttle(&self.throttle).succeeded(&self.username);
    }
}

/// The throttle, even if a task panicked holding it (its counts are still counts).
fn lock_throttle(throttle: &Mutex<LoginThrottle>) -> std::sync::MutexGuard<'_, LoginThrottle> {
    throttle
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LoginThrottle {
    /// How long logins for `username` stay locked from `now_unix_ms` on (zero: not locked).
    pub fn locked_for(&self, username: &str, now_unix_ms: u64) -> Duration {
        let Some(&(count, last)) = self.failures.get(username) else {
            return Duration::ZERO;
        };
        if count < FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (count - FREE_FAILURES).min(16);
        let lock = (FIRST_DELAY * 2u32.pow(doublings)).min(DELAY_MAX);
        let since = Duration::from_millis(now_unix_ms.saturating_sub(last));
        lock.saturating_sub(since)
    }

    /// A login for `username` failed.
    pub fn failed(&mut self, username: &str, now_unix_ms: u64) {
        if !self.failures.contains_key(username) && self.failures.len() >= THROTTLED_USERNAMES_MAX {
            let oldest = self
                .failures
                .iter()
                .min_by_key(|(_, &(_, last))| last)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                self.failures.remove(&oldest);
            }
        }
        let entry = self.failures.entry(username.to_owned()).or_insert((0, 0));
        if now_unix_ms.saturating_sub(entry.1) >= FORGET_AFTER_MS {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now_unix_ms;
    }

    /// A login for `username` succeeded.
    pub fn succeeded(&mut self, username: &str) {
        self.failures.remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftchat::types::LogIndex;

    const CHEAP: PasswordCost = PasswordCost {
        memory_kib: 8,
        iterations: 1,
    };

    fn alice() -> Principal {
        Principal {
            username: "alice".into(),
            created: LogIndex(7),
        }
    }

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let credential = hash_password("correct horse", [3; 16], CHEAP).unwrap();
        assert!(verify_password("correct horse", &credential));
        assert!(!verify_password("correct horsf", &credential));
        assert!(!verify_password("", &credential));
        let other_salt = hash_password("correct horse", [4; 16], CHEAP).unwrap();
        assert_ne!(
            credential.hash, other_salt.hash,
            "the salt changes the hash"
        );
    }

    #[test]
    fn a_hash_keeps_the_cost_it_was_made_at() {
        let credential = hash_password("pw", [1; 16], CHEAP).unwrap();
        assert_eq!((credential.memory_kib, credential.iterations), (8, 1));
        let mut tampered = credential;
        tampered.iterations = 2;
        assert!(!verify_password("pw", &tampered));
    }

    #[test]
    fn a_token_verifies_until_it_expires() {
        let key = TokenKey::new([9; 32]);
        let token = key.sign(alice(), 1_000, 5);
        assert_eq!(key.verify(&token, 999, 5), Ok(alice()));
        assert!(key.verify(&token, 1_000, 5).is_err());
    }

    #[test]
    fn a_token_is_bound_to_its_key_cluster_and_contents() {
        let key = TokenKey::new([9; 32]);
        let token = key.sign(alice(), 1_000, 5);
        assert!(TokenKey::new([8; 32]).verify(&token, 0, 5).is_err());
        assert!(key.verify(&token, 0, 6).is_err(), "another cluster");
        let mut renamed = token.clone();
        renamed.principal.username = "mallory".into();
        assert!(key.verify(&renamed, 0, 5).is_err());
        let mut recreated = token.clone();
        recreated.principal.created = LogIndex(8);
        assert!(key.verify(&recreated, 0, 5).is_err());
        let mut extended = token;
        extended.expires_unix_ms += 1;
        assert!(key.verify(&extended, 0, 5).is_err());
    }

    #[test]
    fn token_keys_round_trip_through_hex_and_refuse_garbage() {
        let key = TokenKey::generate().unwrap();
        assert_eq!(TokenKey::from_hex(&key.to_hex()).unwrap().bytes, key.bytes);
        assert!(TokenKey::from_hex("abc").is_err());
        assert!(TokenKey::from_hex(&"g".repeat(64)).is_err());
        assert!(TokenKey::from_hex(&"é".repeat(32)).is_err());
    }

    #[test]
    fn passwords_are_bounded() {
        assert!(password_acceptable("").is_err());
        assert!(password_acceptable(&"x".repeat(PASSWORD_BYTES_MAX)).is_ok());
        assert!(password_acceptable(&"x".repeat(PASSWORD_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn repeated_failures_lock_logins_for_longer_and_longer_until_a_success() {
        let mut throttle = LoginThrottle::default();
        for _ in 0..FREE_FAILURES {
            assert_eq!(throttle.locked_for("alice", 0), Duration::ZERO);
            throttle.failed("alice", 0);
        }
        assert_eq!(throttle.locked_for("alice", 0), FIRST_DELAY);
        let later = FIRST_DELAY - Duration::from_millis(150);
        assert_eq!(throttle.locked_for("alice", 150), later);
        assert_eq!(
            throttle.locked_for("alice", 1000),
            Duration::ZERO,
            "the lock runs out"
        );
        throttle.failed("alice", 1000);
        assert_eq!(throttle.locked_for("alice", 1000), FIRST_DELAY * 2);
        assert_eq!(
            throttle.locked_for("bob", 1000),
            Duration::ZERO,
            "per username"
        );
        for _ in 0..40 {
            throttle.failed("alice", 1000);
        }
        assert_eq!(throttle.locked_for("alice", 1000), DELAY_MAX);
        throttle.succeeded("alice");
        assert_eq!(throttle.locked_for("alice", 1000), Duration::ZERO);
    }

    #[test]
    fn a_quiet_quarter_of_an_hour_starts_the_count_afresh() {
        let mut throttle = LoginThrottle::default();
        for _ in 0..10 {
            throttle.failed("alice", 0);
        }
        throttle.failed("alice", FORGET_AFTER_MS);
        assert_eq!(
            throttle.locked_for("alice", FORGET_AFTER_MS),
            Duration::ZERO
        );
    }

    #[test]
    fn one_login_per_username_is_checked_at_a_time() {
        let throttle = Arc::new(Mutex::new(LoginThrottle::default()));
        let first = LoginSlot::admit(&throttle, "alice", 0).unwrap();
        assert!(LoginSlot::admit(&throttle, "alice", 0).is_err());
        let bob = LoginSlot::admit(&throttle, "bob", 0).unwrap();
        first.failed(0);
        drop(first);
        assert!(LoginSlot::admit(&throttle, "alice", 0).is_ok());
        drop(bob);
        for _ in 0..FREE_FAILURES {
            LoginSlot::admit(&throttle, "carol", 0).unwrap().failed(0);
        }
        let refused = LoginSlot::admit(&throttle, "carol", 0).unwrap_err();
        assert!(refused.contains("too many failed logins"), "{refused}");
    }

    #[test]
    fn the_throttle_remembers_a_bounded_number_of_usernames() {
        let mut throttle = LoginThrottle::default();
        for i in 0..THROTTLED_USERNAMES_MAX as u64 + 10 {
            throttle.failed(&format!("u{i}"), i);
        }
        assert_eq!(throttle.failures.len(), THROTTLED_USERNAMES_MAX);
        assert!(
            !throttle.failures.contains_key("u0"),
            "the oldest is forgotten"
        );
    }
}
