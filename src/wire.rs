//! Every message on the network, as serde types, and their framing.
//!
//! One frame type serves peer and client connections alike: a connection's first frame says
//! what it is (`PeerHello` for a Raft peer; a `Request` for a client). Framing is
//! `codec`'s: a length, a CRC-32 and a bincode payload; decoding garbage, truncated or oversized
//! input returns an error and never panics, so a bad peer can only get its connection closed.

use crate::chat::{Command, Operation, Outcome, Principal, Reply};
use crate::codec::{self, CodecError};
use crate::raft::{ConfChange, Membership, Message, Status};
use crate::types::{ClientId, LogIndex, NodeId};
use serde::{Deserialize, Serialize};

/// The protocol version spoken; a peer or client speaking another is refused. Version 2 added
/// snapshot transfer, message ids in fetch replies, and log sizes in status; version 3 read
/// rounds in heartbeats and the ReadIndex messages; version 4 configurations (in entries and
/// snapshot chunks), transfer elections and TimeoutNow; version 5 passwords and tokens.
pub const PROTOCOL_VERSION: u32 = 5;

/// Everything that travels over a raftchat connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The first frame on a connection a peer opens: who is calling, in which cluster.
    PeerHello {
        /// Must equal [`PROTOCOL_VERSION`].
        version: u32,
        /// The calling node.
        from: NodeId,
        /// Identifies the cluster, so two clusters sharing hosts never talk to each other.
        cluster_id: u64,
        /// Where the caller listens (an unspecified IP stands for the connection's source
        /// IP): how a node reaches a peer its configuration does not name yet, to answer it (a
        /// leader added after the node left or before it joined).
        address: std::net::SocketAddr,
    },
    /// A Raft protocol message, on a peer connection.
    Raft(Message),
    /// The receiver of a peer connection acknowledges that frames are arriving. Raft's own
    /// answers travel on the other node's connection, so without this a sender could not tell
    /// a stalled connection from an idle one.
    PeerAck {
        /// Frames received on this connection so far.
        received_count: u64,
    },
    /// A client's request.
    Request(Request),
    /// The server's answer to the request with the same id.
    Response(Response),
}

/// A client's request; `id` is chosen by the client to match the response on its connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Correlates the response.
    pub id: u64,
    /// What is asked.
    pub body: RequestBody,
}

/// What a client can ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Replicate and apply a chat command (register a session, or an operation in one).
    Command(Command),
    /// This node's Raft status.
    Status,
    /// A linearizable read of a read-only operation (check, list, fetch), served by this node
    /// without writing the log: by ReadIndex on a leader, through the leader's read index on a
    /// follower. No session: a read changes nothing, so a retry is harmless.
    Read(Operation),
    /// Replicate a membership change (leader only); answered once it has committed, with the
    /// configuration it made.
    ChangeMembership(ConfChange),
    /// This node's view of the configuration.
    Membership,
    /// Hand leadership to this voter, or to the most up-to-date one (leader only); answered
    /// once another node leads, or when the transfer is abandoned (`TimedOut`).
    TransferLeadership(Option<NodeId>),
    /// `create_account` with a password, under a session: the node hashes the password with a
    /// salt it draws, then replicates only the hash. Answered as a `Command`.
    CreateAccountWithPassword {
        /// The session.
        client_id: ClientId,
        /// The client's number for this command.
        sequence: u64,
        /// The new account's name.
        username: String,
        /// At most `PASSWORD_BYTES_MAX` bytes, not empty.
        password: String,
    },
    /// Check a password against the account's hash (from a linearizable read of it); answered
    /// with a token for the account, or `AuthFailed`.
    Login {
        /// The account.
        username: String,
        /// Its password.
        password: String,
    },
    /// A `Command` sent as the owner of the token's account.
    CommandWithToken {
        /// From a `Login`.
        token: Token,
        /// A `Command::Client`.
        command: Command,
    },
    /// A `Read` made as the owner of the token's account.
    ReadWithToken {
        /// From a `Login`.
        token: Token,
        /// A read-only operation.
        operation: Operation,
    },
}

/// Proof, for a while, that its holder knew an account's password: signed by a node with the
/// cluster's token key, so every node can check it without asking the one that issued it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The account's owner (its name and creation index, so a token dies with the account).
    pub principal: Principal,
    /// When it stops being accepted, in milliseconds since the Unix epoch.
    pub expires_unix_ms: u64,
    /// HMAC-SHA256 of [`Token::signed_bytes`] under the cluster's token key.
    pub signature: [u8; 32],
}

impl Token {
    /// What the signature covers: a fixed label, the cluster, the principal and the expiry, each
    /// of fixed width or length-prefixed, so no two tokens share these bytes.
    pub fn signed_bytes(principal: &Principal, expires_unix_ms: u64, cluster_id: u64) -> Vec<u8> {
        let name = principal.username.as_bytes();
        let mut bytes = Vec::with_capacity(48 + name.len());
        bytes.extend_from_slice(b"raftchat token 1");
        bytes.extend_from_slice(&cluster_id.to_le_bytes());
        bytes.extend_from_slice(&(name.len() as u64).to_le_bytes());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(&principal.created.0.to_le_bytes());
        bytes.extend_from_slice(&expires_unix_ms.to_le_bytes());
        bytes
    }
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// The answer.
    pub body: ResponseBody,
}

/// The possible answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// The command was committed and applied at `index`, with this outcome.
    Applied {
        /// Where in the log it took effect.
        index: LogIndex,
        /// What the chat state machine answered.
        outcome: Outcome,
    },
    /// This node does not lead; `leader` is the one it knows of. Nothing was applied.
    NotLeader {
        /// The leader to try, if known.
        leader: Option<NodeId>,
    },
    /// The leader has too much uncommitted work; nothing was applied; retry later.
    Busy,
    /// The command was accepted but leadership changed before it applied: it may or may not
    /// take effect. Retrying under the same session and sequence is safe.
    Unknown,
    /// The command's log entry was replaced by another leader's: it was certainly not applied.
    Dropped,
    /// This node's status.
    Status(NodeStatus),
    /// A read's reply, from the state applied through `index` (at or past its read index).
    Read {
        /// The applied index of the state the read saw.
        index: LogIndex,
        /// What the chat state machine answered.
        reply: Reply,
    },
    /// This node gave up on the request in time (a read whose read index, or state, did not
    /// come); nothing changed, and it may be retried anywhere.
    TimedOut,
    /// The request is not one this node can serve (a read of an operation that writes, a
    /// membership change that cannot be made, a transfer to a node that cannot lead).
    Invalid(String),
    /// A node's view of the configuration (after a change: the one it made, committed).
    Membership(MembershipView),
    /// Leadership moved to `leader`.
    Transferred {
        /// The new leader.
        leader: NodeId,
    },
    /// A `Login`'s token.
    LoggedIn(Token),
    /// The request's password or token was refused (the status `AUTH_FAILED`), for the reason
    /// given; nothing was applied.
    AuthFailed(String),
}

/// The configuration as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    /// The configuration in force on the node (the newest in its log).
    pub membership: Membership,
    /// The log index of the entry that made it (that of the node's snapshot, or 0 for the
    /// bootstrap configuration, when the log holds none).
    pub index: LogIndex,
    /// Whether the node knows it committed.
    pub committed: bool,
    /// The leader the node knows of.
    pub leader: Option<NodeId>,
}

/// A node's status as reported to clients and operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Raft's view: role, term, leader, commit and applied index.
    pub raft: Status,
    /// Digest of the chat state at `raft.applied_index`; equal on replicas that applied the
    /// same prefix.
    pub chat_digest: u64,
    /// Bytes of log on the node's disk (every segment file).
    pub log_bytes: u64,
}

/// Appends one frame to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), CodecError> {
    codec::encode_frame(frame, out)
}

/// Decodes the first frame of `buf`: `Ok(None)` until a whole frame is buffered, then the frame
/// and the bytes it used. Garbage, a bad checksum or an oversized length is an error.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, CodecError> {
    codec::decode_frame(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Operation, Reply, Status as ChatStatus};
    use crate::raft::{AppendOutcome, Entry, EntryData, MessageBody, Payload, RoleKind};
    use crate::types::{ClientId, Term};
    use proptest::prelude::*;

    fn samples() -> Vec<Frame> {
        let entry = Entry {
            term: Term(3),
            index: LogIndex(9),
            data: EntryData::Command(Payload::new(b"hello".to_vec())),
        };
        let append = MessageBody::AppendEntries {
            prev_log_index: LogIndex(8),
            prev_log_term: Term(2),
            entries: vec![
                entry.clone(),
                Entry {
                    data: EntryData::Noop,
                    ..entry
                },
            ],
            leader_commit: LogIndex(7),
        };
        let operation = Operation::SendMessage {
            from: "alice".into(),
            to: "bób".into(),
            message: "ünïcode ✓".into(),
        };
        let command = Command::Client {
            client_id: ClientId(4),
            sequence: 2,
            operation,
        };
        let status = Status {
            id: NodeId(1),
            role: RoleKind::Leader,
            term: Term(3),
            leader: Some(NodeId(1)),
            commit_index: LogIndex(5),
            applied_index: LogIndex(5),
            last_index: LogIndex(6),
            snapshot_index: LogIndex(2),
            first_index: LogIndex(1),
        };
        let reply = Reply::with_messages(1, vec![("a".into(), "b".into())]);
        let token = Token {
            principal: crate::chat::Principal {
                username: "carol".into(),
                created: LogIndex(3),
            },
            expires_unix_ms: 1_800_000_000_000,
            signature: [5; 32],
        };
        let command_as_carol = Command::Client {
            client_id: ClientId(4),
            sequence: 4,
            operation: Operation::DeleteAccount {
                username: "carol".into(),
            },
        };
        let snapshot_meta = crate::raft::SnapshotMeta {
            index: LogIndex(7),
            term: Term(2),
            size_bytes: 9,
            checksum: 0xdead_beef,
        };
        vec![
            Frame::PeerHello {
                version: PROTOCOL_VERSION,
                from: NodeId(2),
                cluster_id: 77,
                address: "127.0.0.1:7002".parse().unwrap(),
            },
            Frame::Raft(Message {
                from: NodeId(1),
                to: NodeId(2),
                term: Term(3),
                body: append,
            }),
            Frame::Raft(Message {
                from: NodeId(2),
                to: NodeId(1),
                term: Term(3),
                body: MessageBody::AppendEntriesResponse(AppendOutcome::Rejected {
                    rejected_prev_index: LogIndex(8),
                    hint_index: LogIndex(4),
                    hint_term: Term(1),
                }),
            }),
            Frame::Raft(Message {
                from: NodeId(1),
                to: NodeId(2),
                term: Term(3),
                body: MessageBody::InstallSnapshot {
                    snapshot: snapshot_meta,
                    membership: crate::raft::Membership::of_voters(&[NodeId(1), NodeId(2)]),
                    offset: 2,
                    data: Payload::new(b"ab".to_vec()),
                },
            }),
            Frame::Raft(Message {
                from: NodeId(2),
                to: NodeId(1),
                term: Term(3),
                body: MessageBody::InstallSnapshotResponse {
                    snapshot: snapshot_meta,
                    next_offset: 4,
                    resend: true,
                },
            }),
            Frame::Request(Request {
                id: 1,
                body: RequestBody::Command(command),
            }),
            Frame::Request(Request {
                id: 2,
                body: RequestBody::Status,
            }),
            Frame::Response(Response {
                id: 1,
                body: ResponseBody::Applied {
                    index: LogIndex(9),
                    outcome: Outcome::Replied {
                        reply,
                        duplicate: false,
                    },
                },
            }),
            Frame::Response(Response {
                id: 3,
                body: ResponseBody::NotLeader { leader: None },
            }),
            Frame::Response(Response {
                id: 4,
                body: ResponseBody::Status(NodeStatus {
                    raft: status,
                    chat_digest: 99,
                    log_bytes: 4096,
                }),
            }),
            Frame::PeerAck { received_count: 12 },
            Frame::Request(Request {
                id: 6,
                body: RequestBody::Read(Operation::FetchMessages {
                    username: "bób".into(),
                    first_message_id: 2,
                }),
            }),
            Frame::Response(Response {
                id: 6,
                body: ResponseBody::Read {
                    index: LogIndex(12),
                    reply: Reply::with_messages(2, vec![("a".into(), "ü".into())]),
                },
            }),
            Frame::Response(Response {
                id: 7,
                body: ResponseBody::TimedOut,
            }),
            Frame::Response(Response {
                id: 8,
                body: ResponseBody::Invalid("not a read".into()),
            }),
            Frame::Request(Request {
                id: 9,
                body: RequestBody::CreateAccountWithPassword {
                    client_id: ClientId(4),
                    sequence: 3,
                    username: "carol".into(),
                    password: "pässword".into(),
                },
            }),
            Frame::Request(Request {
                id: 10,
                body: RequestBody::Login {
                    username: "carol".into(),
                    password: "pässword".into(),
                },
            }),
            Frame::Response(Response {
                id: 10,
                body: ResponseBody::LoggedIn(token.clone()),
            }),
            Frame::Request(Request {
                id: 11,
                body: RequestBody::CommandWithToken {
                    token: token.clone(),
                    command: command_as_carol,
                },
            }),
            Frame::Request(Request {
                id: 12,
                body: RequestBody::ReadWithToken {
                    token,
                    operation: Operation::FetchMessages {
                        username: "carol".into(),
                        first_message_id: 1,
                    },
                },
            }),
            Frame::Response(Response {
                id: 12,
                body: ResponseBody::AuthFailed("the token has expired".into()),
            }),
            Frame::Response(Response {
                id: 5,
                body: ResponseBody::Applied {
                    index: LogIndex(1),
                    outcome: Outcome::Replied {
                        reply: Reply::new(ChatStatus::MessageTooLong),
                        duplicate: true,
                    },
                },
            }),
        ]
    }

    #[test]
    fn every_frame_kind_round_trips() {
        for frame in samples() {
            let mut buf = Vec::new();
            encode(&frame, &mut buf).unwrap();
            let (decoded, used) = decode(&buf).unwrap().unwrap();
            assert_eq!(decoded, frame);
            assert_eq!(used, buf.len());
        }
    }

    #[test]
    fn every_truncation_waits_for_more_bytes() {
        for frame in samples() {
            let mut buf = Vec::new();
            encode(&frame, &mut buf).unwrap();
            for cut in 0..buf.len() {
                assert_eq!(decode(&buf[..cut]), Ok(None), "{frame:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn every_single_byte_corruption_is_detected_or_waits() {
        for frame in samples() {
            let mut buf = Vec::new();
            encode(&frame, &mut buf).unwrap();
            for position in 0..buf.len() {
                let mut bad = buf.clone();
                bad[position] ^= 0x5a;
                match decode(&bad) {
                    Err(_) | Ok(None) => {}
                    Ok(Some((decoded, _))) => panic!("corruption at {position} gave {decoded:?}"),
                }
            }
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn garbage_behind_a_valid_header_is_an_error(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            // A frame whose checksum matches its garbage payload must still not decode into a
            // frame unless the payload really is one.
            let mut buf = Vec::new();
            buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
            buf.extend_from_slice(&bytes);
            if let Ok(Some((frame, _))) = decode(&buf) {
                let mut again = Vec::new();
                encode(&frame, &mut again).unwrap();
                prop_assert_eq!(again, buf);
            }
        }
    }
}
