//! Snapshot bytes, as a future InstallSnapshot would bring them from a peer: `Chat::restore`
//! must refuse anything that is not a valid state with an error, never a panic, and a state it
//! accepts must be canonical (its own snapshot is the same bytes) and carry a consistent digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftchat::chat::Chat;

fuzz_target!(|data: &[u8]| {
    if let Ok(chat) = Chat::restore(data) {
        let bytes = chat.snapshot();
        assert_eq!(bytes, data, "an accepted snapshot is canonical");
        let again = Chat::restore(&bytes).expect("a snapshot restores");
        assert_eq!(again.digest(), chat.digest());
    }
});
