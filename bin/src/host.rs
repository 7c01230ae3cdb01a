//! The async host of one replica: recovery from disk, the event loop, snapshot tasks, and
//! client waiters.
//!
//! The loop waits for any input (a tick, a peer's message, a client's request, a finished
//! background task, the log's write under way being synced), takes every other input already
//! queued (so one AppendEntries carries them all), then executes the replica's work in the
//! order the replica prescribes, as a pipeline: a round's early messages (a leader's appends)
//! leave before the loop next waits (the loop writes them to its peers' sockets itself; see
//! `outbox`) and its committed entries are applied and answered at once; its log records join the
//! next group write, which begins as soon as the one under way is synced (so the disk is kept
//! busy and one sync carries every round that came while the last one ran); its late
//! messages (acknowledgements, votes) leave only once its write is synced. The loop never
//! waits on the disk for the log, so acknowledgements and requests are handled while it syncs.
//! It makes no protocol decision of its own.
//!
//! Snapshots run beside the loop, so a large state never holds it: when the replica hands out
//! a snapshot job, a task encodes it on the blocking pool and writes its file durably, and the
//! loop only learns it is done; when the last chunk of a leader's snapshot is written, a task
//! syncs, reads back and checks the file, decodes it and makes it durable under its final name,
//! and the loop then installs it.
//!
//! Reads wait by read id until the replica answers them: served from the state once it has
//! applied through the read index, or refused.
//!
//! Membership changes wait like commands, and are answered with the configuration once
//! committed; a leadership transfer waits until another node leads (or the transfer is
//! abandoned). Whenever the configuration in force changes, the outbox is told the members'
//! addresses: those the configuration names, and the cluster file's for the bootstrap members.
//!
//! Passwords and tokens (see `auth`): a create with a password is hashed in a task beside the
//! loop, a few at once, and proposed when the hash is ready; a login reads the account's hash
//! through a linearizable read (on the leader, so one throttle sees every failure), checks the
//! password in a task and answers with a token, unless the throttle has locked the username; a request with a token is checked before it is proposed or read, and
//! carries the token's principal into the log or the read, where the state machine decides.
//!
//! Client waiters are kept by log index. An applied entry answers the waiter at its index if
//! the terms agree; if they differ, the waiter's entry was replaced by another leader's and
//! certainly never applies (`Dropped`). A leader that loses leadership answers every waiter
//! `Unknown`: its entries may still commit under the next leader, and a retry under the same
//! session is deduplicated.

use crate::auth::{self, LoginSlot, LoginThrottle};
use crate::config::NodeConfig;
use crate::deadline::{Clock, Deadline};
use crate::disk::{Disk, SyncOn};
use crate::durable::{self, Durable, Incoming, RecoveryError};
use crate::observer::{Event, Observer};
use crate::timeline::{Stamps, Timeline};
use crate::transport::{self, Inbound, Outbox, PeerOutbox};
use raftchat::chat::{is_valid_username, Chat, Command, Operation, Principal};
use raftchat::raft::{
    ChangeError, ConfChange, Membership, Message, MessageBody, ProposeError, RoleKind, Snapshot,
    Status, TransferError,
};
use raftchat::replica::{Applied, Completed, ReadAnswer, ReadError, Replica, SnapshotJob, Work};
use raftchat::types::{LogIndex, NodeId, ReadId, Term};
use raftchat::wire::{MembershipView, NodeStatus, RequestBody, ResponseBody, Token};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Inputs queued for the node's loop before new ones are refused or dropped.
pub const INBOX_MAX: usize = 8192;
/// Most inputs handled between two rounds of work.
const INPUT_BATCH_MAX: usize = 1024;
/// Most turns of the loop whose messages to peers wait for a later turn's, while input keeps
/// arriving, before they are written anyway; and the longest they wait so.
const FLUSH_TURNS_MAX: u32 = 8;
const FLUSH_DEFERRED_MAX: Duration = Duration::from_micros(200);
/// A group write joins rounds up to this many bytes (a single round may be larger), so a
/// write torn by a power failure stays well inside the tail recovery may cut.
const GROUP_WRITE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// A group write this small may be synced on the loop's own thread (`SyncOn::Caller`) if the
/// inbox is empty, no new work arrived while the write before it synced, and no snapshot is
/// being written or checked: a load light enough that the loop would have nothing to do
/// meanwhile. Under a heavier one, writes of many commands keep going beside the loop, which
/// steps and replicates the next batch while they sync. (The inbox alone says little: with
/// the loop and connections on one thread, it is empty at the end of nearly every turn.)
const SYNC_ON_LOOP_BYTES_MAX: usize = 1024;
/// A node that does not lead syncs its group writes up to this size on the loop's own thread
/// whatever the load, as long as no snapshot is being written or checked and its last group
/// write took no longer than `SYNC_ON_LOOP_SLOW`: it has nothing to step meanwhile, since its
/// next batch comes from the leader and is better taken whole after the sync (the connection
/// gathers it), so the thread hop to the blocking pool and back would only add to every
/// acknowledgement the leader waits for. Larger writes (a catch-up) keep going beside the
/// loop, whose thread meanwhile keeps reading the connections and acknowledging their frames.
const FOLLOWER_SYNC_ON_LOOP_BYTES_MAX: usize = 256 * 1024;
/// A group write that took longer than this (a disk that stalls) sends the next ones beside
/// the loop until one is quick again: while the loop's thread is in a sync, its connections
/// acknowledge no frames, and a leader that hears nothing for `peer_silence_timeout` drops
/// the link.
const SYNC_ON_LOOP_SLOW: Duration = Duration::from_millis(20);
/// Background results not yet seen by the loop, before their tasks wait to report: room for
/// one snapshot taken, one received snapshot checked, and a few hashed creates (a hashing task
/// frees its turn once its result is queued, so more may come; they wait, they never block the
/// loop).
const BACKGROUND_MAX: usize = 2 + HASHING_MAX;

/// Most clients waiting on a leader at once; more are answered `Busy`.
pub const WAITERS_MAX: usize = 16 * 1024;

/// Most passwords hashed or checked at once (each holds Argon2's memory, 19 MiB by default);
/// beyond it the requests wait their turn. Also the most hashed creates waiting to be proposed,
/// so a hashing task never waits to report.
const HASHING_MAX: usize = 4;

/// Most hashes and password checks under way at once (waiting for a turn, or hashing); more
/// are answered `Busy`, so a flood of creates or logins cannot pile up tasks.
const PASSWORD_WORK_MAX: usize = 256;

/// Why a node stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory is damaged in a way that is not a crash's doing; the node refuses
    /// to serve it, and leaves it as it is.
    #[error("data directory cannot be trusted: {0}")]
    Data(String),
    /// The data directory's records are intact but do not form a valid Raft state.
    #[error("data directory cannot be trusted: {0}")]
    Restore(#[from] raftchat::raft::RestoreError),
    /// Reading, writing or syncing the data directory failed.
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

impl From<RecoveryError> for NodeError {
    fn from(error: RecoveryError) -> NodeError {
        match error {
            RecoveryError::Disk(error) => NodeError::Disk(error),
            other => NodeError::Data(other.to_string()),
        }
    }
}

struct Waiter {
    term: Term,
    /// A membership change (answered with the configuration), not a command.
    change: bool,
    reply: oneshot::Sender<ResponseBody>,
    /// Where its time went, with `--timeline`.
    stamps: Option<Stamps>,
}

/// A client waiting for a read: for its answer, or for the state to check a login against.
enum ReadWaiter {
    Client(oneshot::Sender<ResponseBody>),
    Login {
        username: String,
        password: String,
        reply: oneshot::Sender<ResponseBody>,
        slot: LoginSlot,
    },
}

/// A create whose password is hashed, ready to propose.
struct Hashed {
    command: Command,
    reply: oneshot::Sender<ResponseBody>,
}

/// The state shared with the tasks that hash and check passwords.
#[derive(Clone)]
struct PasswordWork {
    /// Bounds the hashes computed at once.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Bounds the hashes and logins under way at once.
    under_way: Arc<tokio::sync::Semaphore>,
    throttle: Arc<Mutex<LoginThrottle>>,
    /// Where a hashed create goes (the loop's background channel).
    hashed: BackgroundJobs,
}

/// The sending side of the loop's background channel, counting the jobs alive: the loop waits
/// on the channel only while one is (or a result is left in it), since a receiver polled on
/// every turn registers its waker on every turn, for results that come a few times a minute.
#[derive(Clone)]
struct BackgroundJobs {
    sender: mpsc::Sender<Background>,
    alive: Arc<AtomicUsize>,
}

impl BackgroundJobs {
    /// A job begins: it holds the returned handle until it has sent its result, or given up.
    fn start(&self) -> BackgroundJob {
        self.alive.fetch_add(1, Ordering::Relaxed);
        BackgroundJob(self.clone())
    }

    /// Whether the loop must wait on the channel: a job is alive, or has left its result.
    /// (A job sends before its handle drops, and the drop releases what the send wrote.)
    fn pending(&self, finished: &mpsc::Receiver<Background>) -> bool {
        self.alive.load(Ordering::Acquire) > 0 || !finished.is_empty()
    }
}

/// A background job's hold on the channel (see `BackgroundJobs`).
struct BackgroundJob(BackgroundJobs);

impl BackgroundJob {
    async fn send(&self, done: Background) {
        // The loop stopped: nobody waits for the result.
        let _ = self.0.sender.send(done).await;
    }
}

impl Drop for BackgroundJob {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::Release);
    }
}

/// What a background task reports to the loop when it is done.
enum Background {
    /// A snapshot of this node's state is durable (or writing it failed); `digest` is the
    /// digest of the state it holds.
    Taken {
        result: io::Result<Snapshot>,
        digest: u64,
        /// How long copying the state held the loop, and when the copy was taken.
        loop_held: Duration,
        started: Instant,
    },
    /// A leader's snapshot was checked and made durable (or refused, with why).
    Received {
        incoming: Incoming,
        result: io::Result<Result<(Snapshot, Chat), String>>,
    },
    /// A create's password is hashed.
    Hashed(Hashed),
}

/// One node's running state.
struct Host<D, O> {
    /// Read on every turn and every write.
    clock: Clock,
    config: NodeConfig,
    replica: Replica,
    durable: Durable<D>,
    outbox: O,
    observer: Arc<dyn Observer>,
    waiters: BTreeMap<LogIndex, Waiter>,
    /// Clients waiting for reads, by the replica's read id.
    reads: BTreeMap<ReadId, ReadWaiter>,
    passwords: PasswordWork,
    last_status: Status,
    background: BackgroundJobs,
    /// A received snapshot is being checked beside the loop (one at a time: each holds a
    /// whole snapshot in memory).
    checking: bool,
    /// The newest whole transfer waiting for the check under way to end.
    queued: Option<Incoming>,
    /// Operators waiting for the leadership transfer under way.
    transfers: Vec<oneshot::Sender<ResponseBody>>,
    /// The transfer target last reported to the observer.
    transfer_target: Option<NodeId>,
    /// The configuration the outbox was last told of.
    members: Membership,
    /// The index and term of the log entry (or snapshot) `members` was last compared against.
    members_source: Option<(LogIndex, Option<Term>)>,
    /// Where writes' time goes, with `--timeline`.
    timeline: Option<Timeline>,
    /// Rounds taken from the replica and not yet done, oldest first: the first ones are in
    /// the group write under way, the rest wait for the next.
    rounds: VecDeque<Work>,
    writing: Option<GroupWrite>,
    /// Whether the inbox was empty when the loop last looked: a small group write begun then
    /// may be done on the loop's own thread (`SyncOn::Caller`, `SYNC_ON_LOOP_BYTES_MAX`).
    idle: bool,
    /// Whether new work (a client's request, a leader's entries) arrived while the group write
    /// under way, or the last one, was syncing: then the next is not synced on the loop.
    arrived_while_writing: bool,
    /// Whether the last group write took longer than `SYNC_ON_LOOP_SLOW`.
    last_write_slow: bool,
}

/// The log's write under way: the oldest `rounds` rounds' records, appended and synced as one.
struct GroupWrite {
    rounds: usize,
    bytes: usize,
    /// Where the disk may do it; on the loop's thread, what the loop sent must leave first.
    on: SyncOn,
    /// When it began: one that takes longer than `SYNC_ON_LOOP_SLOW` keeps the next off the loop.
    started: Instant,
    synced: Pin<Box<dyn Future<Output = io::Result<()>> + Send>>,
}

/// Recovers the node from `disk`, starts its transport, and runs it until the inbox closes or
/// a fatal error. `wrap_outbox` lets the simulator put a fault layer around the transport; a
/// real server passes the identity.
pub async fn run_node<D, O>(
    config: NodeConfig,
    disk: D,
    wrap_outbox: impl FnOnce(PeerOutbox) -> O,
    observer: Arc<dyn Observer>,
) -> Result<(), NodeError>
where
    D: Disk,
    O: Outbox,
{
    config.validate().map_err(NodeError::Config)?;
    let (durable, replica) = match recover(&config, disk, observer.as_ref()).await {
        Ok(recovered) => recovered,
        Err(error) => {
            let reason = error.to_string();
            observer.event(config.id, &Event::RecoveryFailed { reason: &reason });
            return Err(error);
        }
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| NodeError::Bind {
            address: config.listen,
            error,
        })?;
    let (inbox_sender, inbox) = mpsc::channel(INBOX_MAX);
    let directory = transport::PeerDirectory::default();
    tokio::spawn(transport::run_acceptor(
        listener,
        Arc::new(config.clone()),
        inbox_sender,
        directory.clone(),
    ));
    let outbox = wrap_outbox(PeerOutbox::start(&config, directory));
    let last_status = replica.status();
    // One channel for every kind of background work: each channel more is one more waker
    // the loop registers on every turn while jobs are alive (see `BackgroundJobs`).
    let (sender, finished) = mpsc::channel(BACKGROUND_MAX);
    let background = BackgroundJobs {
        sender,
        alive: Arc::default(),
    };
    let passwords = PasswordWork {
        hashing: Arc::new(tokio::sync::Semaphore::new(HASHING_MAX)),
        under_way: Arc::new(tokio::sync::Semaphore::new(PASSWORD_WORK_MAX)),
        throttle: Arc::default(),
        hashed: background.clone(),
    };
    let mut host = Host {
        clock: Clock::current(),
        config,
        replica,
        durable,
        outbox,
        observer,
        waiters: BTreeMap::new(),
        reads: BTreeMap::new(),
        passwords,
        last_status,
        background,
        checking: false,
        queued: None,
        transfers: Vec::new(),
        transfer_target: None,
        members: Membership::default(),
        members_source: None,
        timeline: None,
        rounds: VecDeque::new(),
        writing: None,
        idle: false,
        arrived_while_writing: false,
        last_write_slow: false,
    };
    host.timeline = host.config.timeline.then(Timeline::default);
    host.note_membership();
    host.observer
        .event(host.config.id, &Event::Status(last_status));
    let result = host.run(inbox, finished).await;
    if let Err(error) = &result {
        let reason = error.to_string();
        host.observer
            .event(host.config.id, &Event::Stopped { reason: &reason });
    }
    result
}

/// Recovers the data directory and rebuilds the replica from it.
async fn recover<D: Disk>(
    config: &NodeConfig,
    disk: D,
    observer: &dyn Observer,
) -> Result<(Durable<D>, Replica), NodeError> {
    let limits = config.chat_limits;
    let initial = || Replica::initial_snapshot(limits);
    let (durable, recovered) = Durable::open(disk, config.segment_bytes_max, initial).await?;
    let snapshot = recovered
        .persisted
        .snapshot
        .as_ref()
        .map(|s| s.meta)
        .expect("recovery always finds or makes a snapshot");
    let rng = ChaCha8Rng::seed_from_u64(config.seed);
    let hard_state = recovered.persisted.hard_state;
    let entries = recovered.persisted.entries.clone();
    let replica = Replica::recover(
        config.raft_config(),
        config.snapshot_policy,
        rng,
        recovered.persisted,
    )?;
    observer.event(
        config.id,
        &Event::Recovered {
            hard_state,
            snapshot,
            snapshot_digest: replica.chat().digest(),
            entries: &entries,
            torn_tail_bytes: recovered.torn_tail_bytes,
            skipped_snapshots: &recovered.skipped_snapshots,
        },
    );
    Ok((durable, replica))
}

impl<D: Disk, O: Outbox> Host<D, O> {
    async fn run(
        &mut self,
        mut inbox: mpsc::Receiver<Inbound>,
        mut finished: mpsc::Receiver<Background>,
    ) -> Result<(), NodeError> {
        let mut tick = Deadline::at(Instant::now() + self.tick_interval());
        let mut unflushed_turns = 0;
        let mut deferred_since: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                () = &mut tick => {
                    // After a stall (a GC pause, a suspended VM) the ticks missed are not made
                    // up in a burst: they would count time in which the inbox, holding the
                    // leader's heartbeats, was not read, and call elections against a healthy
                    // leader. Otherwise the cadence stays exact (the instant is now).
                    let now = self.clock.now();
                    let interval = self.tick_interval();
                    if now > tick.instant() + interval {
                        // A lease counted in ticks no longer tells real time.
                        self.replica.clock_stalled();
                    }
                    tick.reset(tick.instant().max(now) + interval);
                    self.replica.tick();
                }
                result = group_write(&mut self.writing), if self.writing.is_some() => {
                    self.idle = inbox.is_empty();
                    self.write_done(result).await?;
                }
                Some(done) = finished.recv(), if self.background.pending(&finished) => {
                    self.finish_background(done).await?
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
            self.idle = inbox.is_empty();
            self.process_ready().await?;
            self.maybe_start_snapshot();
            // What this turn sent leaves before the loop waits: at once if no input is
            // waiting, or else with what the next turns send (one write per peer for several
            // turns), within FLUSH_TURNS_MAX turns and FLUSH_DEFERRED_MAX. (Under madsim no
            // input arrives during a turn, so every turn writes.)
            unflushed_turns += 1;
            let on_loop = self
                .writing
                .as_ref()
                .is_some_and(|w| w.on == SyncOn::Caller);
            let flush = inbox.is_empty() || on_loop || unflushed_turns >= FLUSH_TURNS_MAX || {
                let now = self.clock.now();
                now.duration_since(*deferred_since.get_or_insert(now)) >= FLUSH_DEFERRED_MAX
            };
            if flush {
                self.outbox.flush();
                unflushed_turns = 0;
                deferred_since = None;
            }
            if on_loop {
                // Before the loop's thread blocks in the sync: the tasks this turn woke (the
                // connections it answered, links finishing writes) run first.
                tokio::task::yield_now().await;
            }
            if let Some(line) = self.timeline.as_mut().and_then(Timeline::report) {
                tracing::info!(node = %self.config.id, "timeline of writes led here: {line}");
            }
        }
    }

    /// Starts taking a snapshot if the replica calls for one: the copy of the state is taken
    /// here, everything costly in a task.
    fn maybe_start_snapshot(&mut self) {
        if !self.replica.snapshot_due() {
            return;
        }
        let started = Instant::now();
        let Some(job) = self.replica.maybe_snapshot() else {
            return;
        };
        let loop_held = started.elapsed();
        let disk = self.durable.disk().clone();
        let background = self.background.start();
        tokio::spawn(async move {
            let digest = job.digest();
            let result = take_snapshot(disk, job).await;
            let taken = Background::Taken {
                result,
                digest,
                loop_held,
                started,
            };
            background.send(taken).await;
        });
    }

    /// Starts finishing a received snapshot whose last chunk is written, or queues it behind
    /// the one being checked (in place of any queued before it, which is given up: the core
    /// awaits the answer about the latest transfer, and a stale one would never get one).
    async fn start_finishing(&mut self, incoming: Incoming) -> Result<(), NodeError> {
        if self.checking {
            if let Some(older) = self.queued.replace(incoming) {
                self.durable.abandon(older).await.map_err(NodeError::Disk)?;
            }
            return Ok(());
        }
        self.checking = true;
        let disk = self.durable.disk().clone();
        let job = self.background.start();
        tokio::spawn(async move {
            let result = durable::finish_incoming(&disk, incoming).await;
            job.send(Background::Received { incoming, result }).await;
        });
        Ok(())
    }

    async fn finish_background(&mut self, done: Background) -> Result<(), NodeError> {
        // The replica hears of a snapshot, and the log's files change, only with every round
        // done.
        match done {
            Background::Hashed(hashed) => self.propose(hashed.command, hashed.reply, None),
            Background::Taken {
                result,
                digest,
                loop_held,
                started,
            } => {
                self.drain_writes().await?;
                let snapshot = result.map_err(NodeError::Disk)?;
                let meta = snapshot.meta;
                let compacted_through = self.replica.snapshot_taken(snapshot);
                self.durable
                    .snapshot_added(meta)
                    .await
                    .map_err(NodeError::Disk)?;
                let event = Event::SnapshotTaken {
                    snapshot: meta,
                    digest,
                    compacted_through,
                    applied_index: self.replica.status().applied_index,
                    loop_held,
                    took: started.elapsed(),
                };
                self.observer.event(self.config.id, &event);
            }
            Background::Received { incoming, result } => {
                self.drain_writes().await?;
                self.checking = false;
                match result.map_err(NodeError::Disk)? {
                    Ok((received, chat)) => self.install(received, chat).await?,
                    Err(reason) => self.refuse(incoming.snapshot, &reason),
                }
                if let Some(next) = self.queued.take() {
                    self.start_finishing(next).await?;
                }
            }
        }
        Ok(())
    }

    /// A received snapshot failed its checks: the transfer starts over.
    fn refuse(&mut self, snapshot: raftchat::raft::SnapshotMeta, reason: &str) {
        self.replica.snapshot_refused(snapshot);
        let event = Event::SnapshotRefused { snapshot, reason };
        self.observer.event(self.config.id, &event);
    }

    /// Hands a checked, durable snapshot to the replica. Its file is kept either way: a
    /// snapshot the node did not need (its log caught up meanwhile) is still the committed
    /// state at its index, the same bytes on every node, and this node may be writing the
    /// very same file from its own state right now, so deleting it by name could take that
    /// one. Compaction decides when it goes, as for any other.
    async fn install(&mut self, snapshot: Snapshot, chat: Chat) -> Result<(), NodeError> {
        let meta = snapshot.meta;
        let digest = chat.digest();
        let installed = self.replica.snapshot_received(snapshot, chat);
        self.durable
            .snapshot_added(meta)
            .await
            .map_err(NodeError::Disk)?;
        if installed {
            let event = Event::SnapshotInstalled {
                snapshot: meta,
                digest,
            };
            self.observer.event(self.config.id, &event);
        }
        Ok(())
    }

    fn tick_interval(&self) -> std::time::Duration {
        self.config.clock.scale(self.config.tick_interval)
    }

    fn handle(&mut self, input: Inbound) {
        let new_work = match &input {
            Inbound::Request { .. } => true,
            Inbound::Peer(message) => matches!(
                &message.body,
                MessageBody::AppendEntries { entries, .. } if !entries.is_empty()
            ),
        };
        self.arrived_while_writing |= new_work && self.writing.is_some();
        match input {
            Inbound::Peer(message) => {
                if self.observer.wants_messages() {
                    self.observer
                        .event(self.config.id, &Event::Received(&message));
                }
                self.replica.step(message);
            }
            Inbound::Request {
                request,
                reply,
                received,
            } => match request.body {
                RequestBody::Status => {
                    let status = NodeStatus {
                        raft: self.replica.status(),
                        chat_digest: self.replica.chat().digest(),
                        log_bytes: self.durable.log_bytes(),
                    };
                    let _ = reply.send(ResponseBody::Status(status));
                }
                RequestBody::Command(command) => match command_from_client(&command) {
                    Ok(()) => self.propose(command, reply, Some(received)),
                    Err(why) => {
                        let _ = reply.send(ResponseBody::Invalid(why.into()));
                    }
                },
                RequestBody::Read(operation) => self.read(operation, None, reply),
                RequestBody::CreateAccountWithPassword {
                    client_id,
                    sequence,
                    username,
                    password,
                } => self.create_with_password(client_id, sequence, username, password, reply),
                RequestBody::Login { username, password } => self.login(username, password, reply),
                RequestBody::CommandWithToken { token, command } => {
                    self.propose_with_token(&token, command, reply, received);
                }
                RequestBody::ReadWithToken { token, operation } => match self.verify(&token) {
                    Ok(principal) => self.read(operation, Some(principal), reply),
                    Err(why) => {
                        let _ = reply.send(ResponseBody::AuthFailed(why.into()));
                    }
                },
                RequestBody::ChangeMembership(change) => self.change_membership(change, reply),
                RequestBody::Membership => {
                    let _ = reply.send(ResponseBody::Membership(self.membership_view()));
                }
                RequestBody::TransferLeadership(target) => self.transfer(target, reply),
            },
        }
    }

    /// Proposes a client's command (received by its connection at `received`, if it came
    /// straight from one) and keeps its waiter.
    fn propose(
        &mut self,
        command: raftchat::chat::Command,
        reply: oneshot::Sender<ResponseBody>,
        received: Option<Instant>,
    ) {
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
                let stamps = received
                    .filter(|_| self.timeline.is_some())
                    .map(Stamps::proposed);
                let waiter = Waiter {
                    term,
                    change: false,
                    reply,
                    stamps,
                };
                let previous = self.waiters.insert(index, waiter);
                // A fresh index is never reused by the same leader.
                assert!(previous.is_none(), "two waiters at {index}");
            }
            Err(ProposeError::NotLeader { leader }) => {
                let _ = reply.send(ResponseBody::NotLeader { leader });
            }
            Err(ProposeError::Busy) => {
                let _ = reply.send(ResponseBody::Busy);
            }
            // Leadership is moving: the client looks for the new leader.
            Err(ProposeError::Transferring) => {
                let _ = reply.send(ResponseBody::NotLeader { leader: None });
            }
        }
    }

    fn change_membership(&mut self, change: ConfChange, reply: oneshot::Sender<ResponseBody>) {
        if self.waiters.len() >= WAITERS_MAX {
            let _ = reply.send(ResponseBody::Busy);
            return;
        }
        let body = match self.replica.propose_change(change) {
            Ok((index, term)) => {
                let waiter = Waiter {
                    term,
                    change: true,
                    reply,
                    stamps: None,
                };
                let previous = self.waiters.insert(index, waiter);
                assert!(previous.is_none(), "two waiters at {index}");
                return;
            }
            Err(ChangeError::NotLeader { leader }) => ResponseBody::NotLeader { leader },
            Err(ChangeError::Pending) => ResponseBody::Busy,
            Err(ChangeError::Invalid(why)) => ResponseBody::Invalid(why.to_string()),
        };
        let _ = reply.send(body);
    }

    fn transfer(&mut self, target: Option<NodeId>, reply: oneshot::Sender<ResponseBody>) {
        let body = match self.replica.transfer_leadership(target) {
            Ok(_) => return self.transfers.push(reply),
            Err(TransferError::NotLeader { leader }) => ResponseBody::NotLeader { leader },
            Err(TransferError::InvalidTarget(why)) => ResponseBody::Invalid(why),
        };
        let _ = reply.send(body);
    }

    /// Answers the operators waiting for a transfer: another node leads, or this one gave
    /// the transfer up (its target did not take over within an election timeout).
    /// Reports a transfer's start and end.
    fn note_transfer(&mut self) {
        let target = self.replica.raft().transfer_target();
        if target != self.transfer_target {
            self.transfer_target = target;
            self.observer
                .event(self.config.id, &Event::Transfer { target });
        }
    }

    fn check_transfers(&mut self) {
        if self.transfers.is_empty() {
            return;
        }
        let status = self.replica.status();
        let body = match (status.role, status.leader) {
            (RoleKind::Leader, _) if self.replica.raft().transfer_target().is_none() => {
                ResponseBody::TimedOut
            }
            (RoleKind::Leader, _) | (_, None) => return,
            (_, Some(leader)) => ResponseBody::Transferred { leader },
        };
        for reply in std::mem::take(&mut self.transfers) {
            let _ = reply.send(body.clone());
        }
    }

    /// The configuration as this node sees it.
    fn membership_view(&self) -> MembershipView {
        let raft = self.replica.raft();
        let index = raft.log().membership_index();
        MembershipView {
            membership: raft.membership().clone(),
            index,
            committed: index <= raft.status().commit_index,
            leader: raft.leader(),
        }
    }

    /// Tells the outbox the members' addresses when the configuration in force changed.
    fn note_membership(&mut self) {
        // Reported once the log that holds it is handed to the disk: a follower steps messages
        // while its write is under way without taking a round, and its report waits for the
        // round (observers check the configuration against the log handed out).
        let raft = self.replica.raft();
        if raft.has_unhanded_entries() {
            return;
        }
        // The entry (or snapshot) the configuration comes from names it: (index, term) is
        // checked on every round, the configuration itself only when that moves.
        let index = raft.log().membership_index();
        let source = (index, raft.log().term(index));
        if self.members_source == Some(source) {
            return;
        }
        self.members_source = Some(source);
        let membership = self.replica.membership();
        if *membership == self.members {
            return;
        }
        self.members = membership.clone();
        let addresses = member_addresses(&self.members, &self.config.members);
        self.outbox.members_changed(&addresses);
        let event = Event::Membership {
            membership: &self.members,
            index,
        };
        self.observer.event(self.config.id, &event);
    }

    fn read(
        &mut self,
        operation: Operation,
        principal: Option<Principal>,
        reply: oneshot::Sender<ResponseBody>,
    ) {
        if self.reads.len() >= WAITERS_MAX {
            let _ = reply.send(ResponseBody::Busy);
            return;
        }
        match self.replica.read_as(operation, principal) {
            Ok(read) => {
                self.reads.insert(read, ReadWaiter::Client(reply));
            }
            Err(_) => {
                let why = "a read of an operation that writes; send it as a command";
                let _ = reply.send(ResponseBody::Invalid(why.into()));
            }
        }
    }

    /// Proposes a client's operation under its session as the principal its token names, once
    /// the token is verified.
    fn propose_with_token(
        &mut self,
        token: &Token,
        command: Command,
        reply: oneshot::Sender<ResponseBody>,
        received: Instant,
    ) {
        let principal = match self.verify(token) {
            Ok(principal) => principal,
            Err(why) => {
                let _ = reply.send(ResponseBody::AuthFailed(why.into()));
                return;
            }
        };
        if let Err(why) = command_from_client(&command) {
            let _ = reply.send(ResponseBody::Invalid(why.into()));
            return;
        }
        let Command::Client {
            client_id,
            sequence,
            operation,
        } = command
        else {
            let why = "only an operation under a session goes with a token";
            let _ = reply.send(ResponseBody::Invalid(why.into()));
            return;
        };
        let command = Command::Authenticated {
            principal,
            client_id,
            sequence,
            operation,
        };
        self.propose(command, reply, Some(received));
    }

    /// The principal a client's token names, if this cluster's key signed it and it is still
    /// good; else why not.
    fn verify(&self, token: &Token) -> Result<Principal, &'static str> {
        let Some(key) = &self.config.auth.token_key else {
            return Err("this cluster has no token key ([auth] token_key in its cluster file)");
        };
        key.verify(token, auth::unix_ms(), self.config.cluster_id)
    }

    /// Hashes the password beside the loop, then proposes the create with only the hash. A
    /// follower says so at once rather than hash for nothing.
    fn create_with_password(
        &mut self,
        client_id: raftchat::types::ClientId,
        sequence: u64,
        username: String,
        password: String,
        reply: oneshot::Sender<ResponseBody>,
    ) {
        let status = self.replica.status();
        if status.role != RoleKind::Leader {
            let _ = reply.send(ResponseBody::NotLeader {
                leader: status.leader,
            });
            return;
        }
        if let Err(why) = auth::password_acceptable(&password) {
            let _ = reply.send(ResponseBody::Invalid(why));
            return;
        }
        // A name no account can have costs no hash: the state machine refuses it all the same
        // (INVALID_USERNAME), with or without a password. (Whether the account exists is the
        // state machine's to say, at apply time: a check here, on state that may lag the log,
        // could refuse a create that would succeed.)
        if !is_valid_username(&username) {
            let command = Command::Client {
                client_id,
                sequence,
                operation: Operation::CreateAccount { username },
            };
            self.propose(command, reply, None);
            return;
        }
        let Ok(under_way) = self.passwords.under_way.clone().try_acquire_owned() else {
            let _ = reply.send(ResponseBody::Busy);
            return;
        };
        let salt = match auth::draw_salt() {
            Ok(salt) => salt,
            Err(why) => {
                tracing::error!("cannot draw a salt: {why}");
                let _ = reply.send(ResponseBody::Busy);
                return;
            }
        };
        let cost = self.config.auth.password_cost;
        let work = self.passwords.clone();
        let job = self.passwords.hashed.start();
        tokio::spawn(async move {
            let _under_way = under_way;
            let Ok(_hashing) = work.hashing.acquire().await else {
                return;
            };
            let hashing = off_loop(move || auth::hash_password(&password, salt, cost));
            let credential = match hashing.await {
                Ok(Ok(credential)) => credential,
                Ok(Err(why)) | Err(why) => {
                    tracing::error!("cannot hash a password: {why}");
                    let _ = reply.send(ResponseBody::Busy);
                    return;
                }
            };
            let command = Command::Client {
                client_id,
                sequence,
                operation: Operation::CreateAccountWithPassword {
                    username,
                    credential,
                },
            };
            job.send(Background::Hashed(Hashed { command, reply }))
                .await;
        });
    }

    /// Reads the account's hash linearizably (a read of the account, then the state it was
    /// served from), and checks the password in `finish_login`. Only the leader logs clients
    /// in, so that one throttle counts every failure (while leadership holds).
    fn login(&mut self, username: String, password: String, reply: oneshot::Sender<ResponseBody>) {
        let status = self.replica.status();
        if status.role != RoleKind::Leader {
            let _ = reply.send(ResponseBody::NotLeader {
                leader: status.leader,
            });
            return;
        }
        if self.config.auth.token_key.is_none() {
            let why = "this cluster issues no tokens: its cluster file names no [auth] token_key";
            let _ = reply.send(ResponseBody::AuthFailed(why.into()));
            return;
        }
        // No account has such a name or such a password: refused before anything is held, or
        // hashed, for it.
        if !is_valid_username(&username) || auth::password_acceptable(&password).is_err() {
            let why = "wrong username or password";
            let _ = reply.send(ResponseBody::AuthFailed(why.into()));
            return;
        }
        let slot = match LoginSlot::admit(&self.passwords.throttle, &username, auth::unix_ms()) {
            Ok(slot) => slot,
            Err(why) => {
                let _ = reply.send(ResponseBody::AuthFailed(why));
                return;
            }
        };
        if self.reads.len() >= WAITERS_MAX {
            let _ = reply.send(ResponseBody::Busy);
            return;
        }
        let check = Operation::CheckAccount {
            username: username.clone(),
        };
        match self.replica.read(check) {
            Ok(read) => {
                let waiter = ReadWaiter::Login {
                    username,
                    password,
                    reply,
                    slot,
                };
                self.reads.insert(read, waiter);
            }
            Err(_) => unreachable!("a check is read-only"),
        }
    }

    /// The login's read was served from the state the replica holds now: check the password
    /// against the hash it holds, beside the loop.
    fn finish_login(
        &mut self,
        username: String,
        password: String,
        reply: oneshot::Sender<ResponseBody>,
        slot: LoginSlot,
    ) {
        let Some(key) = self.config.auth.token_key.clone() else {
            return; // Checked when the login came.
        };
        let Ok(under_way) = self.passwords.under_way.clone().try_acquire_owned() else {
            let _ = reply.send(ResponseBody::Busy);
            return;
        };
        let Some((principal, credential)) = self.replica.chat().credential(&username) else {
            // No such account, or one without a password: nothing to guess, nothing counted.
            let why = "wrong username or password";
            let _ = reply.send(ResponseBody::AuthFailed(why.into()));
            return;
        };
        let work = self.passwords.clone();
        let ttl = self.config.auth.token_ttl;
        let cluster_id = self.config.cluster_id;
        tokio::spawn(async move {
            let _under_way = under_way;
            let Ok(_hashing) = work.hashing.acquire().await else {
                return;
            };
            let checking = off_loop(move || auth::verify_password(&password, &credential));
            let verified = checking.await.unwrap_or(false);
            let now = auth::unix_ms();
            let body = match verified {
                true => {
                    slot.succeeded();
                    let expires = now.saturating_add(ttl.as_millis() as u64);
                    ResponseBody::LoggedIn(key.sign(principal, expires, cluster_id))
                }
                false => {
                    slot.failed(now);
                    ResponseBody::AuthFailed("wrong username or password".into())
                }
            };
            drop(slot); // Before the answer, so the client's next login is admitted.
            let _ = reply.send(body);
        });
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

    /// Executes the replica's work in its prescribed order until it has none, as a pipeline:
    /// each round's early messages go and its committed entries (persisted here in earlier
    /// rounds) are applied and answered at once; its write joins the log's next group write,
    /// which begins as soon as the one under way is synced; and its late messages leave, and
    /// the replica hears it is done, once its write is synced (`write_done`). A round that
    /// writes a snapshot's chunks or records an install waits for every write before it and is
    /// carried out alone.
    async fn process_ready(&mut self) -> Result<(), NodeError> {
        loop {
            if !self.may_take_round() {
                break;
            }
            let Some(mut work) = self.replica.ready() else {
                break;
            };
            if !work.entries().is_empty() || work.installed().is_some() {
                let event = Event::Handed {
                    entries: work.entries(),
                    installed: work.installed(),
                };
                self.observer.event(self.config.id, &event);
            }
            if !work.snapshot_chunks.is_empty() || work.installed().is_some() {
                self.drain_writes().await?;
                self.carry_out_alone(work).await?;
                continue;
            }
            for message in std::mem::take(&mut work.messages_before_persist) {
                self.send(message);
            }
            let completed = self.replica.apply(&mut work);
            self.answer_completed(completed);
            self.stamp_waiters(&work, Stamps::taken);
            self.rounds.push_back(work);
            self.start_write();
        }
        // The configuration first: a status report then speaks of the configuration in force.
        self.note_membership();
        self.note_status();
        self.note_transfer();
        self.check_transfers();
        Ok(())
    }

    /// Whether to take the replica's next round now. With no write under way, always. While
    /// one is under way, only a leader gains from a round: its appends go out at once, and what
    /// committed is answered. A follower's round would hold little but acknowledgements that
    /// must wait for the write anyway; it waits, and one round then acknowledges everything
    /// that came meanwhile.
    fn may_take_round(&self) -> bool {
        self.writing.is_none() || self.replica.status().role == RoleKind::Leader
    }

    /// Begins the next group write if none is under way: every round waiting, in order, up to
    /// `GROUP_WRITE_BYTES_MAX`. Rounds at the front with nothing to write are done at once,
    /// since nothing before them is still being written.
    fn start_write(&mut self) {
        if self.writing.is_some() {
            return;
        }
        while self.rounds.front().is_some_and(|work| !work.must_sync()) {
            let work = self.rounds.pop_front().expect("a round");
            self.finish_round(work);
        }
        let mut bytes = Vec::new();
        let mut rounds = 0;
        for work in &self.rounds {
            if rounds > 0 && bytes.len() + work.write.len() > GROUP_WRITE_BYTES_MAX {
                break;
            }
            bytes.extend_from_slice(&work.write);
            rounds += 1;
        }
        if rounds == 0 {
            return;
        }
        #[cfg(feature = "mutants")]
        if raftchat::mutants::is_active(raftchat::mutants::Mutant::SendBeforeSync) {
            let early: Vec<Message> = (self.rounds.iter_mut().take(rounds))
                .flat_map(|work| std::mem::take(&mut work.messages))
                .collect();
            for message in early {
                self.send(message);
            }
        }
        let len = bytes.len();
        // Not while a snapshot's file is written or checked beside the loop: a sync of the log
        // may queue behind its writes, and the loop must not stall that long.
        let quiet = !self.checking && !self.replica.snapshot_in_progress();
        let light = !std::mem::take(&mut self.arrived_while_writing);
        // The most a write may be to be synced on the loop, if it may be at all.
        let on_loop_max = if self.replica.status().role != RoleKind::Leader {
            Some(FOLLOWER_SYNC_ON_LOOP_BYTES_MAX)
        } else {
            (self.idle && light).then_some(SYNC_ON_LOOP_BYTES_MAX)
        };
        let on = match on_loop_max {
            Some(most) if quiet && !self.last_write_slow && len <= most => SyncOn::Caller,
            _ => SyncOn::Beside,
        };
        self.writing = Some(GroupWrite {
            rounds,
            bytes: len,
            on,
            started: self.clock.now(),
            synced: Box::pin(self.durable.append(bytes, on)),
        });
    }

    /// The group write under way is synced (or failed, which stops the node): its rounds are
    /// done, in order, and the next group write begins.
    async fn write_done(&mut self, result: io::Result<()>) -> Result<(), NodeError> {
        // A segment may begin below: messages the last turns deferred leave first.
        self.outbox.flush();
        result.map_err(NodeError::Disk)?;
        let write = self.writing.take().expect("a group write under way");
        self.last_write_slow = self.clock.now() - write.started > SYNC_ON_LOOP_SLOW;
        self.durable
            .appended(self.rounds.range(..write.rounds), write.bytes)
            .await
            .map_err(NodeError::Disk)?;
        for _ in 0..write.rounds {
            let work = self.rounds.pop_front().expect("a round of the write");
            self.finish_round(work);
        }
        self.start_write();
        Ok(())
    }

    /// Waits until every round taken is done: before a snapshot's files are touched or the
    /// replica hears of a snapshot, which need the log's writes behind them.
    async fn drain_writes(&mut self) -> Result<(), NodeError> {
        while let Some(write) = self.writing.as_mut() {
            self.outbox.flush();
            let result = write.synced.as_mut().await;
            self.write_done(result).await?;
        }
        self.outbox.flush();
        debug_assert!(self.rounds.is_empty());
        Ok(())
    }

    /// A round whose write (and every earlier one) is synced: its late messages leave, and
    /// the replica records it.
    fn finish_round(&mut self, mut work: Work) {
        self.stamp_waiters(&work, Stamps::synced);
        if work.must_sync() {
            let event = Event::Persisted {
                bytes: work.write.len(),
                entries: work.entries(),
                installed: work.installed(),
            };
            self.observer.event(self.config.id, &event);
        }
        for message in std::mem::take(&mut work.messages) {
            self.send(message);
        }
        let completed = self.replica.complete(work);
        self.answer_completed(completed);
    }

    /// A round with a snapshot's chunks or install, with no write under way: written and
    /// synced, then its messages, then the replica; a snapshot received whole is checked.
    async fn carry_out_alone(&mut self, mut work: Work) -> Result<(), NodeError> {
        for message in std::mem::take(&mut work.messages_before_persist) {
            self.send(message);
        }
        self.stamp_waiters(&work, Stamps::taken);
        self.outbox.flush();
        let received = self.durable.persist(&work).await.map_err(NodeError::Disk)?;
        self.finish_round(work);
        self.outbox.flush();
        if let Some(snapshot) = received {
            self.start_finishing(snapshot).await?;
        }
        Ok(())
    }

    fn answer_completed(&mut self, completed: Completed) {
        for applied in completed.applied {
            self.observer
                .event(self.config.id, &Event::Applied(&applied));
            self.answer(applied);
        }
        for read in completed.reads {
            self.answer_read(read);
        }
    }

    fn send(&mut self, message: Message) {
        if self.observer.wants_messages() {
            self.observer.event(self.config.id, &Event::Sent(&message));
        }
        self.outbox.send(message);
    }

    /// With `--timeline`, marks the waiters whose entries `work` persists as having reached
    /// `step` now.
    fn stamp_waiters(&mut self, work: &raftchat::replica::Work, step: fn(&mut Stamps, Instant)) {
        let (Some(_), Some(first), Some(last)) = (
            &self.timeline,
            work.entries().first(),
            work.entries().last(),
        ) else {
            return;
        };
        let now = Instant::now();
        for waiter in self.waiters.range_mut(first.index..=last.index) {
            if let Some(stamps) = waiter.1.stamps.as_mut() {
                step(stamps, now);
            }
        }
    }

    fn answer(&mut self, applied: Applied) {
        let Some(waiter) = self.waiters.remove(&applied.index) else {
            return;
        };
        if let (Some(timeline), Some(stamps)) = (self.timeline.as_mut(), waiter.stamps) {
            timeline.answered(stamps);
        }
        let body = match applied.outcome {
            _ if waiter.change && waiter.term == applied.term => {
                ResponseBody::Membership(self.membership_view())
            }
            Some(outcome) if waiter.term == applied.term => ResponseBody::Applied {
                index: applied.index,
                outcome,
            },
            _ => ResponseBody::Dropped,
        };
        let _ = waiter.reply.send(body);
    }

    fn answer_read(&mut self, answer: ReadAnswer) {
        let reply = match self.reads.remove(&answer.read) {
            None => return,
            Some(ReadWaiter::Client(reply)) => reply,
            Some(ReadWaiter::Login {
                username,
                password,
                reply,
                slot,
            }) => match answer.result {
                Ok(_) => return self.finish_login(username, password, reply, slot),
                Err(_) => reply,
            },
        };
        let body = match answer.result {
            Ok((index, reply)) => ResponseBody::Read { index, reply },
            Err(ReadError::NotLeader) => ResponseBody::NotLeader {
                leader: self.replica.status().leader,
            },
            Err(ReadError::Busy) => ResponseBody::Busy,
            Err(ReadError::TimedOut) => ResponseBody::TimedOut,
            Err(ReadError::NotReadOnly) => unreachable!("refused when asked"),
        };
        let _ = reply.send(body);
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

/// Where each member listens: the address its configuration entry names, or the cluster
/// file's for a bootstrap member (whose entry names none). A member with neither, or with an
/// address that does not parse, is left out (and logged): no message can reach it.
pub fn member_addresses(
    membership: &Membership,
    cluster_file: &BTreeMap<NodeId, SocketAddr>,
) -> BTreeMap<NodeId, SocketAddr> {
    let mut addresses = BTreeMap::new();
    for (&id, member) in &membership.members {
        let address = match member.address.as_str() {
            "" => cluster_file.get(&id).copied(),
            text => text.parse().ok(),
        };
        match address {
            Some(address) => {
                addresses.insert(id, address);
            }
            None => tracing::warn!(%id, address = member.address, "no usable address for a member"),
        }
    }
    addresses
}

/// Whether a client may send `command` as it is: a client never names a principal (a node
/// puts in the one its token proves) nor a password's hash (a node puts in the hash of the
/// password it was sent).
fn command_from_client(command: &Command) -> Result<(), &'static str> {
    match command {
        Command::Authenticated { .. } => Err("a principal comes only from a verified token"),
        Command::Client {
            operation: Operation::CreateAccountWithPassword { .. },
            ..
        } => Err("send a password with CreateAccountWithPassword; the node hashes it"),
        Command::Client { .. } | Command::RegisterClient => Ok(()),
    }
}

/// The group write under way, once synced.
async fn group_write(writing: &mut Option<GroupWrite>) -> io::Result<()> {
    match writing {
        Some(write) => write.synced.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Runs `work` on the blocking pool (in simulation, as a task of the node) and waits for it.
async fn off_loop<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    #[allow(deprecated)] // madsim deprecates it; in simulation it runs as a task of the node.
    let handle = tokio::task::spawn_blocking(work);
    handle.await.map_err(|error| error.to_string())
}

/// Encodes a snapshot job on the blocking pool (the costly part), then writes its file.
async fn take_snapshot<D: Disk>(disk: D, job: SnapshotJob) -> io::Result<Snapshot> {
    #[allow(deprecated)] // madsim deprecates it; in simulation it runs as a task of the node.
    let encoding = tokio::task::spawn_blocking(move || job.encode());
    let snapshot = encoding.await.map_err(io::Error::other)?;
    durable::write_snapshot_file(&disk, &snapshot).await?;
    Ok(snapshot)
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    fn jobs() -> (BackgroundJobs, mpsc::Receiver<Background>) {
        let (sender, finished) = mpsc::channel(BACKGROUND_MAX);
        let alive = Arc::default();
        (BackgroundJobs { sender, alive }, finished)
    }

    fn hashed() -> Background {
        let (reply, _) = oneshot::channel();
        Background::Hashed(Hashed {
            command: Command::RegisterClient,
            reply,
        })
    }

    #[tokio::test]
    async fn the_loop_waits_on_its_background_channel_while_a_job_lives_or_its_result_waits() {
        let (jobs, mut finished) = jobs();
        assert!(!jobs.pending(&finished), "no job, nothing to wait for");
        let job = jobs.start();
        assert!(jobs.pending(&finished), "a job under way");
        job.send(hashed()).await;
        drop(job);
        assert!(
            jobs.pending(&finished),
            "the job is done, its result not yet taken"
        );
        assert!(finished.recv().await.is_some());
        assert!(!jobs.pending(&finished), "result taken, no job left");
        drop(jobs.start()); // a job that gave up without a result
        assert!(!jobs.pending(&finished));
    }
}
