//! The chat state machine under any sequence of committed commands, as hostile clients could
//! make the log hold: it must never panic, must answer a retry from the session table with the
//! first reply, must answer a read the same way whether applied or queried, and its
//! incrementally kept digest must equal the digest of the state rebuilt from a snapshot.
//!
//! Names are drawn from a tiny alphabet (glob metacharacters, a multi-byte letter, a control
//! character) so accounts collide and patterns match; arbitrary strings are mixed in.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use raftchat::chat::{Chat, Command, Credential, Operation, Outcome, Principal};
use raftchat::types::{ClientId, LogIndex};

#[derive(Debug)]
struct Name(String);

impl<'a> Arbitrary<'a> for Name {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Name> {
        if u.ratio(1, 16)? {
            return Ok(Name(String::arbitrary(u)?));
        }
        const ALPHABET: &[&str] = &["a", "b", "*", "?", "[", "]", "!", "-", "\\", "é", "\n"];
        let mut name = String::new();
        for _ in 0..u.int_in_range(0..=6)? {
            name.push_str(u.choose(ALPHABET)?);
        }
        Ok(Name(name))
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Create(Name),
    Check(Name),
    List(Name),
    Delete(Name),
    Send(Name, Name, Name),
    Fetch(Name, u8),
    CreateWithPassword(Name, u8),
}

impl Op {
    fn operation(self) -> Operation {
        match self {
            Op::Create(n) => Operation::CreateAccount { username: n.0 },
            Op::Check(n) => Operation::CheckAccount { username: n.0 },
            Op::List(n) => Operation::ListAccounts { pattern: n.0 },
            Op::Delete(n) => Operation::DeleteAccount { username: n.0 },
            Op::Send(from, to, text) => Operation::SendMessage {
                from: from.0,
                to: to.0,
                message: text.0,
            },
            Op::Fetch(n, first) => Operation::FetchMessages {
                username: n.0,
                first_message_id: u64::from(first),
            },
            Op::CreateWithPassword(n, byte) => Operation::CreateAccountWithPassword {
                username: n.0,
                credential: Credential {
                    salt: [byte; 16],
                    hash: [byte; 32],
                    memory_kib: 8,
                    iterations: 1,
                },
            },
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Step {
    Register,
    /// A command of the `session`-th registered session (or an unknown one), with its next
    /// sequence, a repeat of the last, or an arbitrary one.
    Client {
        session: u8,
        sequence: SequenceChoice,
        op: Op,
        /// Acting as the owner of the account the operation acts on (if it has one), as
        /// someone else, or as nobody.
        acting: Acting,
    },
    Noop,
    /// Apply the last client command again, as a retry landing in the log twice.
    Retry,
    Snapshot,
}

#[derive(Debug, Arbitrary)]
enum Acting {
    Nobody,
    Owner,
    Other(Name, u8),
}

#[derive(Debug, Arbitrary)]
enum SequenceChoice {
    Next,
    Same,
    Any(u8),
}

fuzz_target!(|steps: Vec<Step>| {
    let mut chat = Chat::new();
    let mut index = 0u64;
    let mut sessions: Vec<(ClientId, u64)> = Vec::new();
    let mut last: Option<(Command, Outcome)> = None;
    for step in steps {
        if let Step::Snapshot = step {
            check_snapshot(&chat);
            continue;
        }
        index += 1;
        let at = LogIndex(index);
        match step {
            Step::Register => match chat.apply(at, &Command::RegisterClient) {
                Outcome::Registered(id) => {
                    assert_eq!(id, ClientId(index), "a session is named by its log index");
                    sessions.push((id, 0));
                }
                other => panic!("registration answered {other:?}"),
            },
            Step::Client {
                session,
                sequence,
                op,
                acting,
            } => {
                let (client_id, next) = match sessions.get_mut(usize::from(session)) {
                    Some((id, sequence)) => (*id, sequence),
                    None => (ClientId(u64::from(session) + 1_000_000), &mut 0),
                };
                let sequence = match sequence {
                    SequenceChoice::Next => {
                        *next += 1;
                        *next
                    }
                    SequenceChoice::Same => *next,
                    SequenceChoice::Any(s) => u64::from(s),
                };
                let operation = op.operation();
                let principal = match acting {
                    Acting::Nobody => None,
                    Acting::Owner => operation
                        .acting_account()
                        .and_then(|account| chat.credential(account))
                        .map(|(principal, _)| principal),
                    Acting::Other(name, created) => Some(Principal {
                        username: name.0,
                        created: LogIndex(u64::from(created)),
                    }),
                };
                let queried = operation
                    .is_read_only()
                    .then(|| chat.query_as(&operation, principal.as_ref()));
                let command = match principal {
                    None => Command::Client {
                        client_id,
                        sequence,
                        operation,
                    },
                    Some(principal) => Command::Authenticated {
                        principal,
                        client_id,
                        sequence,
                        operation,
                    },
                };
                let outcome = chat.apply(at, &command);
                if let (
                    Some(queried),
                    Outcome::Replied {
                        reply,
                        duplicate: false,
                    },
                ) = (&queried, &outcome)
                {
                    assert_eq!(queried, reply, "a read applied answers as a read queried");
                }
                last = Some((command, outcome));
            }
            Step::Noop => chat.apply_noop(at),
            Step::Retry => {
                if let Some((command, first)) = &last {
                    let again = chat.apply(at, command);
                    if let Outcome::Replied { reply, .. } = first {
                        // Unless the session was evicted since, the first reply comes back.
                        if let Outcome::Replied {
                            reply: second,
                            duplicate,
                        } = &again
                        {
                            assert!(duplicate, "a retry is never applied twice");
                            assert_eq!(reply, second, "a retry gets the first reply");
                        }
                    }
                } else {
                    chat.apply_noop(at);
                }
            }
            Step::Snapshot => unreachable!("handled above"),
        }
        assert_eq!(chat.applied_index(), at);
    }
    check_snapshot(&chat);
});

fn check_snapshot(chat: &Chat) {
    let bytes = chat.snapshot();
    let restored = Chat::restore(&bytes).expect("a snapshot restores");
    assert_eq!(
        restored.digest(),
        chat.digest(),
        "the kept digest is the state's digest"
    );
    assert_eq!(restored.snapshot(), bytes, "snapshots are canonical");
}
