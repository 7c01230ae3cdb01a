//! One replica: Raft, the chat state machine and its sessions, composed. This is the only module
//! that knows all of them, and the one place the order of effects is written down:
//!
//! 0. **replicate**: send `Work::messages_before_persist` (a leader's AppendEntries and
//!    heartbeats; they promise nothing the write holds), so the leader's sync overlaps the
//!    round trip to its followers;
//! 1. **persist**: append `Work::write` to the log file and sync it;
//! 2. **send**: only then send `Work::messages` (they may promise what was just persisted: a
//!    vote, an acknowledgement of entries);
//! 3. **apply**: [`Replica::complete`] applies the committed entries to the chat state machine;
//! 4. **reply**: only then answer the clients waiting on those entries, from what `complete`
//!    returns.
//!
//! The async host (and the simulator through it) only executes these steps; it makes no
//! protocol decision of its own. Commands are encoded here, so Raft sees opaque payloads.

use crate::chat::{Chat, Command, Operation, Outcome};
use crate::codec::{self, CodecError};
use crate::limits;
use crate::raft::{
    Config, ConfigError, EntryData, Message, Payload, ProposeError, Raft, RestoreError, Status,
};
use crate::storage::{self, Recovered};
use crate::types::{LogIndex, Term};
use rand_chacha::ChaCha8Rng;

/// One round of effects, to be carried out in the order of its fields, then handed back to
/// [`Replica::complete`].
#[derive(Debug)]
#[must_use = "Work must be persisted, sent, and completed"]
pub struct Work {
    /// Bytes to append to the log file and sync BEFORE sending anything. Empty when there is
    /// nothing to persist.
    pub write: Vec<u8>,
    /// Messages to send BEFORE the write (see `Ready::take_messages_before_persist`).
    pub messages_before_persist: Vec<Message>,
    /// Messages to send AFTER the write is synced.
    pub messages: Vec<Message>,
    entries: Vec<crate::raft::Entry>,
    committed: Vec<crate::raft::Entry>,
}

impl Work {
    /// Whether the host must write and sync before sending.
    pub fn must_sync(&self) -> bool {
        !self.write.is_empty()
    }

    /// The log entries `write` persists (for observers; the bytes are what matters).
    pub fn entries(&self) -> &[crate::raft::Entry] {
        &self.entries
    }

    /// How many committed entries `complete` will apply.
    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }
}

/// A committed entry as the state machine applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Its log index.
    pub index: LogIndex,
    /// The term it was proposed in; a waiter whose proposal had another term at this index
    /// lost its entry to another leader.
    pub term: Term,
    /// The command, or `None` for a leader's no-op.
    pub command: Option<Command>,
    /// The chat state machine's answer, or `None` for a no-op.
    pub outcome: Option<Outcome>,
}

/// Raft plus the chat state machine, with the order of effects fixed.
#[derive(Debug)]
pub struct Replica {
    raft: Raft,
    chat: Chat,
}

impl Replica {
    /// A replica that has never run.
    pub fn new(config: Config, rng: ChaCha8Rng) -> Result<Replica, ConfigError> {
        Ok(Replica {
            raft: Raft::new(config, rng)?,
            chat: Chat::new(),
        })
    }

    /// A replica restarting from its recovered log file. The chat state is rebuilt by applying
    /// the committed prefix again, through the normal `ready`/`complete` path.
    pub fn recover(
        config: Config,
        rng: ChaCha8Rng,
        recovered: Recovered,
    ) -> Result<Replica, RestoreError> {
        let raft = Raft::restart(config, rng, recovered.hard_state, recovered.entries)?;
        Ok(Replica {
            raft,
            chat: Chat::new(),
        })
    }

    /// A peer's message.
    pub fn step(&mut self, message: Message) {
        self.raft.step(message);
    }

    /// One tick of time.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Proposes a client command. Over-long strings are cut first (see
    /// [`Operation::bounded`]), which never changes the reply but bounds every log entry.
    pub fn propose(&mut self, command: Command) -> Result<(LogIndex, Term), ProposeError> {
        let command = match command {
            Command::Client {
                client_id,
                sequence,
                operation,
            } => Command::Client {
                client_id,
                sequence,
                operation: Operation::bounded(operation),
            },
            Command::RegisterClient => Command::RegisterClient,
        };
        let bytes = codec::encode_payload(&command).expect("a bounded command always encodes");
        assert!(bytes.len() <= limits::COMMAND_SIZE_BYTES_MAX);
        self.raft.propose(Payload::new(bytes))
    }

    /// The next round of effects, or `None` when there is nothing to do.
    pub fn ready(&mut self) -> Option<Work> {
        let mut ready = self.raft.ready()?;
        let messages_before_persist = ready.take_messages_before_persist();
        let mut write = Vec::new();
        storage::encode_batch(ready.hard_state.as_ref(), &ready.entries, &mut write)
            .expect("every entry is bounded well below the record limit");
        Some(Work {
            write,
            messages_before_persist,
            messages: ready.messages,
            entries: ready.entries,
            committed: ready.committed_entries,
        })
    }

    /// Completes a round whose write is synced and whose messages were taken and sent: applies
    /// its committed entries, in order, and returns them with their outcomes for the host to
    /// answer its waiting clients. Completing with messages still in the Work is a host bug.
    pub fn complete(&mut self, work: Work) -> Vec<Applied> {
        assert!(
            work.messages.is_empty() && work.messages_before_persist.is_empty(),
            "complete() before the messages were taken and sent"
        );
        let applied = work
            .committed
            .into_iter()
            .map(|entry| self.apply(entry))
            .collect();
        self.raft.advance();
        applied
    }

    fn apply(&mut self, entry: crate::raft::Entry) -> Applied {
        let (index, term) = (entry.index, entry.term);
        let command = match &entry.data {
            EntryData::Noop => None,
            EntryData::Command(payload) => decode_command(payload.as_bytes()).ok(),
        };
        // Every replica decodes the same bytes the same way, so an undecodable entry (which only
        // a bug could produce: entries are checksummed on the wire and on disk) is skipped
        // identically everywhere, like a no-op.
        let outcome = match &command {
            Some(command) => Some(self.chat.apply(index, command)),
            None => {
                self.chat.apply_noop(index);
                None
            }
        };
        Applied {
            index,
            term,
            command,
            outcome,
        }
    }

    /// Raft's view: role, term, leader, commit and applied index.
    pub fn status(&self) -> Status {
        self.raft.status()
    }

    /// The Raft node, for checkers.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The chat state, for checkers and inspection.
    pub fn chat(&self) -> &Chat {
        &self.chat
    }
}

fn decode_command(bytes: &[u8]) -> Result<Command, CodecError> {
    codec::decode_payload(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Reply, Status as ChatStatus};
    use crate::raft::RoleKind;
    use crate::types::{ClientId, NodeId};
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    /// Replicas with a log file each (a byte vector), on a lossless in-memory network.
    struct Cluster {
        replicas: BTreeMap<NodeId, Replica>,
        files: BTreeMap<NodeId, Vec<u8>>,
        down: Vec<NodeId>,
        outcomes: BTreeMap<(NodeId, LogIndex), Applied>,
    }

    fn config(id: u64) -> Config {
        Config::new(NodeId(id), (1..=3).map(NodeId).collect())
    }

    impl Cluster {
        fn new() -> Cluster {
            let mut cluster = Cluster {
                replicas: BTreeMap::new(),
                files: BTreeMap::new(),
                down: Vec::new(),
                outcomes: BTreeMap::new(),
            };
            for id in 1..=3 {
                let rng = ChaCha8Rng::seed_from_u64(id);
                cluster
                    .replicas
                    .insert(NodeId(id), Replica::new(config(id), rng).unwrap());
                cluster.files.insert(NodeId(id), Vec::new());
            }
            cluster
        }

        fn run(&mut self, ticks: usize) {
            for _ in 0..ticks {
                for (id, replica) in self.replicas.iter_mut() {
                    if !self.down.contains(id) {
                        replica.tick();
                    }
                }
                self.settle();
            }
        }

        fn settle(&mut self) {
            loop {
                let mut queue = Vec::new();
                for (&id, replica) in self.replicas.iter_mut() {
                    if self.down.contains(&id) {
                        continue;
                    }
                    while let Some(mut work) = replica.ready() {
                        self.files
                            .get_mut(&id)
                            .unwrap()
                            .extend_from_slice(&work.write);
                        queue.append(&mut work.messages_before_persist);
                        queue.append(&mut work.messages);
                        for applied in replica.complete(work) {
                            self.outcomes.insert((id, applied.index), applied);
                        }
                    }
                }
                if queue.is_empty() {
                    return;
                }
                for message in queue {
                    if !self.down.contains(&message.to) {
                        self.replicas.get_mut(&message.to).unwrap().step(message);
                    }
                }
            }
        }

        fn leader(&self) -> NodeId {
            let leaders: Vec<NodeId> = self
                .replicas
                .iter()
                .filter(|(id, r)| !self.down.contains(id) && r.status().role == RoleKind::Leader)
                .map(|(&id, _)| id)
                .collect();
            assert_eq!(leaders.len(), 1, "exactly one leader");
            leaders[0]
        }

        /// Proposes at the leader and returns the outcome it applied.
        fn submit(&mut self, command: Command) -> Outcome {
            let leader = self.leader();
            let (index, _) = self
                .replicas
                .get_mut(&leader)
                .unwrap()
                .propose(command)
                .unwrap();
            self.settle();
            self.outcomes[&(leader, index)].outcome.clone().unwrap()
        }

        fn crash(&mut self, id: NodeId) {
            self.down.push(id);
        }

        fn recover(&mut self, id: NodeId) {
            self.down.retain(|&d| d != id);
            let recovered = storage::recover(&self.files[&id]).unwrap();
            let rng = ChaCha8Rng::seed_from_u64(id.0 + 100);
            self.replicas
                .insert(id, Replica::recover(config(id.0), rng, recovered).unwrap());
        }
    }

    fn op(client: ClientId, sequence: u64, operation: Operation) -> Command {
        Command::Client {
            client_id: client,
            sequence,
            operation,
        }
    }

    fn register(cluster: &mut Cluster) -> ClientId {
        match cluster.submit(Command::RegisterClient) {
            Outcome::Registered(client) => client,
            other => panic!("{other:?}"),
        }
    }

    fn reply(outcome: Outcome) -> Reply {
        match outcome {
            Outcome::Replied { reply, .. } => reply,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn commands_apply_in_order_and_replicas_converge() {
        let mut cluster = Cluster::new();
        cluster.run(30);
        let client = register(&mut cluster);
        let create = |name: &str| Operation::CreateAccount {
            username: name.into(),
        };
        assert_eq!(
            reply(cluster.submit(op(client, 1, create("alice")))).status,
            ChatStatus::Success
        );
        assert_eq!(
            reply(cluster.submit(op(client, 2, create("bob")))).status,
            ChatStatus::Success
        );
        let send = Operation::SendMessage {
            from: "alice".into(),
            to: "bob".into(),
            message: "hi".into(),
        };
        assert_eq!(
            reply(cluster.submit(op(client, 3, send))).status,
            ChatStatus::Success
        );
        cluster.run(3);
        let digests: Vec<u64> = cluster
            .replicas
            .values()
            .map(|r| r.chat().digest())
            .collect();
        assert!(
            digests.windows(2).all(|w| w[0] == w[1]),
            "replicas diverged: {digests:?}"
        );
        assert_eq!(cluster.replicas[&NodeId(2)].chat().account_count(), 2);
    }

    #[test]
    fn a_retry_after_leader_failover_is_answered_once() {
        let mut cluster = Cluster::new();
        cluster.run(30);
        let client = register(&mut cluster);
        let create = Operation::CreateAccount {
            username: "alice".into(),
        };
        let first = cluster.submit(op(client, 1, create.clone()));
        let old_leader = cluster.leader();
        cluster.crash(old_leader);
        cluster.run(60);
        let retry = cluster.submit(op(client, 1, create));
        assert_eq!(
            retry,
            Outcome::Replied {
                reply: reply(first),
                duplicate: true
            }
        );
    }

    #[test]
    fn a_recovered_replica_rebuilds_the_same_chat_state_from_its_file() {
        let mut cluster = Cluster::new();
        cluster.run(30);
        let client = register(&mut cluster);
        for k in 1..=20 {
            let create = Operation::CreateAccount {
                username: format!("user{k}"),
            };
            cluster.submit(op(client, k, create));
        }
        cluster.run(3);
        cluster.crash(NodeId(3));
        cluster.recover(NodeId(3));
        // The file may hold an older commit index than the node had (a commit index that moved
        // alone is not synced); the rest comes from the leader, after an election if node 3
        // was the leader.
        cluster.run(60);
        let digests: Vec<u64> = (1..=3)
            .map(|id| cluster.replicas[&NodeId(id)].chat().digest())
            .collect();
        assert!(digests.iter().all(|&d| d == digests[0]), "{digests:?}");
        assert_eq!(cluster.replicas[&NodeId(3)].chat().account_count(), 20);
    }

    #[test]
    fn an_oversized_message_is_answered_without_being_replicated_whole() {
        let mut cluster = Cluster::new();
        cluster.run(30);
        let client = register(&mut cluster);
        for (k, name) in ["alice", "bob"].iter().enumerate() {
            cluster.submit(op(
                client,
                k as u64 + 1,
                Operation::CreateAccount {
                    username: (*name).into(),
                },
            ));
        }
        let size_before: usize = cluster.files.values().map(Vec::len).sum();
        let huge = "x".repeat(1_000_000);
        let send = Operation::SendMessage {
            from: "alice".into(),
            to: "bob".into(),
            message: huge,
        };
        assert_eq!(
            reply(cluster.submit(op(client, 3, send))).status,
            ChatStatus::MessageTooLong
        );
        let size_after: usize = cluster.files.values().map(Vec::len).sum();
        assert!(
            size_after - size_before < 3 * 8 * 1024,
            "grew by {}",
            size_after - size_before
        );
    }
}
