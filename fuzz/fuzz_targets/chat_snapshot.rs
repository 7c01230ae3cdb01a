//! Snapshot bytes, as a future InstallSnapshot would bring them from a peer: `Chat::restore`
//! must refuse anything that is not a valid state with an error, never a panic, and a state it
//! accepts must be canonical: its own snapshot is the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftchat::chat::Chat;

fuzz_target!(|data: &[u8]| {
    if let Ok(chat) = Chat::restore(data) {
        assert_eq!(chat.snapshot(), data, "an accepted snapshot is canonical");
    }
});
