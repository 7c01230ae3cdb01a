//! The async host of one replica: recovery from disk, the event loop, and client waiters.
//!
//! The loop waits for any input (a tick, a peer's message, a client's request), takes every
//! other input already queued (so one disk sync and one AppendEntries carry them all), then
//! executes the replica's work exactly in the order the replica prescribes: replicate, write
//! and sync, send, apply, answer. It makes no protocol decision of its own.
//!
//! Client waiters are kept by log index. An applied entry answers the waiter at its index if
//! the terms agree; if they differ, the waiter's entry was replaced by another leader's and
//! certainly never applies (`Dropped`). A leader that loses leadership answers every waiter
//! `Unknown`: its entries may still commit under the next leader, and a retry under the same
//! session is deduplicated.

use crate::config::NodeConfig;
use crate::disk::Disk;
use crate::observer::{Event, Observer};
use crate::transport::{self, Inbound, Outbox, PeerOutbox};
use raftchat::raft::{Message, ProposeError, RoleKind, Status};
use raftchat::replica::{Applied, Replica};
use raftchat::storage::{self, StorageError};
use raftchat::types::{LogIndex, Term};
use raftchat::wire::{NodeStatus, RequestBody, ResponseBody};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};

/// Inputs queued for the node's loop before new ones are refused or dropped.
pub const INBOX_MAX: usize = 8192;
/// Most inputs handled between two rounds of work.
const INPUT_BATCH_MAX: usize = 1024;
/// The longest tail recovery will cut as torn. One batch holds at most what a leader can have
/// in flight to a follower (its whole window of appends) plus one round of proposals; this is
/// several times that, so a longer unreadable tail is not a crash's doing.
const TORN_TAIL_BYTES_MAX: u64 =
    4 * (raftchat::limits::INFLIGHT_APPENDS_MAX * raftchat::limits::APPEND_BYTES_MAX) as u64;

/// Most clients waiting on a leader at once; more are answered `Busy`.
pub const WAITERS_MAX: usize = 16 * 1024;

/// Why a node stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The log file is damaged in a way that is not a torn tail; the node refuses to serve it.
    #[error("log file cannot be trusted: {0}")]
    Storage(#[from] StorageError),
    /// The log file's records are intact but do not form a valid Raft state.
    #[error("log file cannot be trusted: {0}")]
    Restore(#[from] raftchat::raft::RestoreError),
    /// Reading, writing or syncing the log file failed.
    #[error("disk error: {0}")]
    Disk(io::Error),
    /// The listening socket could not be opened.
    #[error("cannot listen on {address}: {error}")]
    Bind {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        error: io::Error,
    },
}

struct Waiter {
    term: Term,
    reply: oneshot::Sender<ResponseBody>,
}

/// One node's running state.
struct Host<D, O> {
    config: NodeConfig,
    replica: Replica,
    disk: D,
    outbox: O,
    observer: Arc<dyn Observer>,
    waiters: BTreeMap<LogIndex, Waiter>,
    last_status: Status,
}

/// Recovers the node from `disk`, starts its transport, and runs it until the inbox closes or
/// a fatal error. `wrap_outbox` lets the simulator put a fault layer around the transport; a
/// real server passes the identity.
pub async fn run_node<D, O>(
    config: NodeConfig,
    mut disk: D,
    wrap_outbox: impl FnOnce(PeerOutbox) -> O,
    observer: Arc<dyn Observer>,
) -> Result<(), NodeError>
where
    D: Disk,
    O: Outbox,
{
    config.validate().map_err(NodeError::Config)?;
    let replica = recover(&config, &mut disk, observer.as_ref()).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| NodeError::Bind {
            address: config.listen,
            error,
        })?;
    let (inbox_sender, inbox) = mpsc::channel(INBOX_MAX);
    tokio::spawn(transport::run_acceptor(
        listener,
        Arc::new(config.clone()),
        inbox_sender,
    ));
    let outbox = wrap_outbox(PeerOutbox::start(&config));
    let last_status = replica.status();
    let mut host = Host {
        config,
        replica,
        disk,
        outbox,
        observer,
        waiters: BTreeMap::new(),
        last_status,
    };
    host.observer
        .event(host.config.id, &Event::Status(last_status));
    let result = host.run(inbox).await;
    if let Err(error) = &result {
        let reason = error.to_string();
        host.observer
            .event(host.config.id, &Event::Stopped { reason: &reason });
    }
    result
}

/// Reads the log file back, cuts a torn tail, and rebuilds the replica.
async fn recover<D: Disk>(
    config: &NodeConfig,
    disk: &mut D,
    observer: &dyn Observer,
) -> Result<Replica, NodeError> {
    let bytes = disk.read_all().await.map_err(NodeError::Disk)?;
    let recovered = storage::recover(&bytes)?;
    let torn_tail_bytes = bytes.len() as u64 - recovered.valid_len;
    if torn_tail_bytes > TORN_TAIL_BYTES_MAX {
        // A crash tears at most the one batch being written. Anything longer is not a torn
        // append: a file from another program or format, which must never be cut away.
        return Err(NodeError::Storage(StorageError::Inconsistent {
            offset: recovered.valid_len,
            reason: format!(
                "{torn_tail_bytes} bytes at the end do not form records, more than one write \
                 could leave; refusing to truncate them"
            ),
        }));
    }
    if torn_tail_bytes > 0 {
        // Bytes past the last whole record were never synced (a crash mid-append), so no
        // promise rests on them: cut them before appending anything new after them.
        disk.truncate(recovered.valid_len)
            .await
            .map_err(NodeError::Disk)?;
    }
    observer.event(
        config.id,
        &Event::Recovered {
            hard_state: recovered.hard_state,
            entries: &recovered.entries,
            torn_tail_bytes,
        },
    );
    let rng = ChaCha8Rng::seed_from_u64(config.seed);
    Ok(Replica::recover(config.raft_config(), rng, recovered)?)
}

impl<D: Disk, O: Outbox> Host<D, O> {
    async fn run(&mut self, mut inbox: mpsc::Receiver<Inbound>) -> Result<(), NodeError> {
        let mut next_tick = Instant::now() + self.tick_interval();
        loop {
            tokio::select! {
                biased;
                () = sleep_until(next_tick) => {
                    next_tick += self.tick_interval();
                    self.replica.tick();
                }
                input = inbox.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return Ok(()),
                },
            }
            for _ in 0..INPUT_BATCH_MAX {
                let Ok(input) = inbox.try_recv() else { break };
                self.handle(input);
            }
            self.process_ready().await?;
        }
    }

    fn tick_interval(&self) -> std::time::Duration {
        self.config.clock.scale(self.config.tick_interval)
    }

    fn handle(&mut self, input: Inbound) {
        match input {
            Inbound::Peer(message) => {
                if self.observer.wants_messages() {
                    self.observer
                        .event(self.config.id, &Event::Received(&message));
                }
                self.replica.step(message);
            }
            Inbound::Request { request, reply } => match request.body {
                RequestBody::Status => {
                    let status = NodeStatus {
                        raft: self.replica.status(),
                        chat_digest: self.replica.chat().digest(),
                    };
                    let _ = reply.send(ResponseBody::Status(status));
                }
                RequestBody::Command(command) => self.propose(command, reply),
            },
        }
    }

    fn propose(&mut self, command: raftchat::chat::Command, reply: oneshot::Sender<ResponseBody>) {
        if self.waiters.len() >= WAITERS_MAX {
            let _ = reply.send(ResponseBody::Busy);
            return;
        }
        #[cfg(feature = "mutants")]
        let premature = self.premature_answer(&command);
        match self.replica.propose(command) {
            #[cfg(feature = "mutants")]
            Ok((index, _)) if premature.is_some() => {
                let premature = premature.expect("checked just above");
                let _ = reply.send(ResponseBody::Applied {
                    index,
                    outcome: premature(index),
                });
            }
            Ok((index, term)) => {
                let previous = self.waiters.insert(index, Waiter { term, reply });
                // A fresh index is never reused by the same leader.
                assert!(previous.is_none(), "two waiters at {index}");
            }
            Err(ProposeError::NotLeader { leader }) => {
                let _ = reply.send(ResponseBody::NotLeader { leader });
            }
            Err(ProposeError::Busy) => {
                let _ = reply.send(ResponseBody::Busy);
            }
        }
    }

    /// Mutant `reply-before-apply`: the answer a careless server gives at proposal time: success
    /// for every write, and reads served from the local, possibly stale, state.
    #[cfg(feature = "mutants")]
    fn premature_answer(
        &self,
        command: &raftchat::chat::Command,
    ) -> Option<impl FnOnce(LogIndex) -> raftchat::chat::Outcome> {
        use raftchat::chat::{Command, Outcome, Reply, Status};
        use raftchat::mutants::{is_active, Mutant};
        if !is_active(Mutant::ReplyBeforeApply) {
            return None;
        }
        let read = match command {
            Command::Client { operation, .. } if operation.is_read_only() => {
                Some(self.replica.chat().query(operation))
            }
            _ => None,
        };
        let registering = matches!(command, Command::RegisterClient);
        Some(move |index: LogIndex| match (registering, read) {
            (true, _) => Outcome::Registered(raftchat::types::ClientId(index.0)),
            (false, Some(reply)) => Outcome::Replied {
                reply,
                duplicate: false,
            },
            (false, None) => Outcome::Replied {
                reply: Reply::new(Status::Success),
                duplicate: false,
            },
        })
    }

    /// Executes the replica's work in its prescribed order until it has none.
    async fn process_ready(&mut self) -> Result<(), NodeError> {
        while let Some(mut work) = self.replica.ready() {
            for message in std::mem::take(&mut work.messages_before_persist) {
                self.send(message);
            }
            if work.must_sync() {
                self.disk
                    .append(&work.write)
                    .await
                    .map_err(NodeError::Disk)?;
                self.disk.sync().await.map_err(NodeError::Disk)?;
                let event = Event::Persisted {
                    bytes: work.write.len(),
                    entries: work.entries(),
                };
                self.observer.event(self.config.id, &event);
            }
            for message in std::mem::take(&mut work.messages) {
                self.send(message);
            }
            for applied in self.replica.complete(work) {
                self.observer
                    .event(self.config.id, &Event::Applied(&applied));
                self.answer(applied);
            }
            self.note_status();
        }
        self.note_status();
        Ok(())
    }

    fn send(&mut self, message: Message) {
        if self.observer.wants_messages() {
            self.observer.event(self.config.id, &Event::Sent(&message));
        }
        self.outbox.send(message);
    }

    fn answer(&mut self, applied: Applied) {
        let Some(waiter) = self.waiters.remove(&applied.index) else {
            return;
        };
        let body = match applied.outcome {
            Some(outcome) if waiter.term == applied.term => ResponseBody::Applied {
                index: applied.index,
                outcome,
            },
            _ => ResponseBody::Dropped,
        };
        let _ = waiter.reply.send(body);
    }

    /// Reports status changes and, when leadership is lost, answers every waiter `Unknown`.
    fn note_status(&mut self) {
        let status = self.replica.status();
        if status == self.last_status {
            return;
        }
        let was_leading = self.last_status.role == RoleKind::Leader;
        let still_leading = status.role == RoleKind::Leader && status.term == self.last_status.term;
        self.last_status = status;
        self.observer.event(self.config.id, &Event::Status(status));
        if was_leading && !still_leading {
            for (_, waiter) in std::mem::take(&mut self.waiters) {
                let _ = waiter.reply.send(ResponseBody::Unknown);
            }
        }
    }
}
