//! A chat state machine behind one session, applying each operation at the next log index: the
//! cluster as the gateway's backend sees it, for tests without a network.

use raftchat::chat::{Chat, Command, Operation, Outcome, Reply};
use raftchat::types::{ClientId, LogIndex};

pub(crate) struct LocalChat {
    chat: Chat,
    index: u64,
    client_id: ClientId,
    sequence: u64,
}

impl LocalChat {
    pub(crate) fn new() -> LocalChat {
        let mut chat = Chat::new();
        let Outcome::Registered(client_id) = chat.apply(LogIndex(1), &Command::RegisterClient)
        else {
            panic!("registration failed");
        };
        LocalChat {
            chat,
            index: 1,
            client_id,
            sequence: 0,
        }
    }

    /// Applies `operation` as the session's next command and returns its reply.
    pub(crate) fn apply(&mut self, operation: Operation) -> Reply {
        self.index += 1;
        self.sequence += 1;
        let command = Command::Client {
            client_id: self.client_id,
            sequence: self.sequence,
            operation,
        };
        match self.chat.apply(LogIndex(self.index), &command) {
            Outcome::Replied { reply, .. } => reply,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
}
