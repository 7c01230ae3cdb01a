//! Snapshot bytes, as an InstallSnapshot brings them from a peer: `Chat::restore` must refuse
//! anything that is not a valid state with an error, never a panic, and a state it accepts must
//! be canonical: its own snapshot is the same bytes (for a snapshot of an older format, which is
//! read and then written in the current one, the same state).
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftchat::chat::Chat;

fuzz_target!(|data: &[u8]| {
    if let Ok(chat) = Chat::restore(data) {
        let bytes = chat.snapshot();
        if data[..4] == bytes[..4] {
            assert_eq!(bytes, data, "an accepted snapshot is canonical");
        } else {
            let again = Chat::restore(&bytes).expect("a snapshot restores");
            assert_eq!(again, chat, "an older format is upgraded to the same state");
            assert_eq!(again.digest(), chat.digest());
        }
    }
});
