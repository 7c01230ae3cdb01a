//! The client library: finds the leader, retries under a session, and tells the caller
//! honestly whether an operation took effect.
//!
//! Every operation runs under a session (client id, sequence number): a retry reuses the
//! sequence, so the state machine answers it from its session table instead of applying it
//! twice (Raft paper §8). The client goes straight to the leader a server names; without a
//! name it tries the members in turn, backing off with jitter.
//!
//! Reads (check, list, fetch) go through no log and need no session: by default they go to the
//! leader, which serves them by ReadIndex; with [`ReadMode::Any`] each client reads from a node
//! of its own, leader or follower, spreading reads over the cluster; [`ReadMode::Log`] sends
//! them through the log like writes (as before reads without log writes existed). A read never
//! changes anything, so one that gets no answer simply failed.
//!
//! An operation ends in one of three ways, as a Jepsen history needs them: applied (with the
//! reply and the log index), certainly not applied (`Failed`), or unknown (`Unknown`: an
//! attempt may have reached a leader that then lost contact, so it may yet take effect, until
//! this client's next operation applies).

mod links;

pub use links::SharedLinks;

use crate::deadline::Deadline;
use crate::frame_io::{write_frames, FrameError, FrameReader};
use crate::tls::{ClientTls, Stream};
use raftchat::chat::{Command, Operation, Outcome, Reply};
use raftchat::raft::ConfChange;
use raftchat::types::{ClientId, LogIndex, NodeId};
use raftchat::wire::{
    Frame, MembershipView, NodeStatus, Request, RequestBody, ResponseBody, Token,
};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

/// How a client finds and talks to the cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Every member and its address.
    pub members: BTreeMap<NodeId, SocketAddr>,
    /// How long one operation may take, retries included, before it ends `Unknown`.
    pub operation_timeout: Duration,
    /// How long one attempt against one server may take.
    pub attempt_timeout: Duration,
    /// Retry backoff: first and largest delay (jittered).
    pub backoff: (Duration, Duration),
    /// Seed of the jitter RNG.
    pub seed: u64,
    /// Where reads go.
    pub reads: ReadMode,
    /// TLS to the nodes (checking each one's certificate); none for plaintext.
    pub tls: Option<crate::tls::ClientTls>,
}

/// Where a client sends its reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// To the leader, which serves them by ReadIndex (or its lease).
    #[default]
    Leader,
    /// To any node: each client picks one and stays with it while it answers; a follower
    /// asks the leader for the read index and serves the read itself.
    Any,
    /// Through the log, as commands under the session, like writes.
    Log,
}

impl ReadMode {
    /// Every mode, by its name in cluster files and flags.
    pub const NAMES: [(&'static str, ReadMode); 3] = [
        ("leader", ReadMode::Leader),
        ("any", ReadMode::Any),
        ("log", ReadMode::Log),
    ];

    /// The mode called `name`.
    pub fn from_name(name: &str) -> Option<ReadMode> {
        ReadMode::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, mode)| mode)
    }

    /// The mode's name.
    pub fn name(self) -> &'static str {
        ReadMode::NAMES
            .iter()
            .find(|(_, mode)| *mode == self)
            .map_or("leader", |(name, _)| name)
    }
}

impl ClientConfig {
    /// Defaults suited to a local cluster.
    pub fn new(members: BTreeMap<NodeId, SocketAddr>) -> ClientConfig {
        ClientConfig {
            members,
            operation_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_millis(500),
            backoff: (Duration::from_millis(10), Duration::from_millis(200)),
            seed: 0,
            reads: ReadMode::default(),
            tls: None,
        }
    }
}

/// How an operation ended, when it did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Certainly not applied: no attempt could have taken effect.
    #[error("not applied: {0}")]
    Failed(String),
    /// Perhaps applied: an attempt may have reached a leader before contact was lost.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Certainly not applied: the password or the token was refused (status `AUTH_FAILED`).
    #[error("AUTH_FAILED: {0}")]
    AuthFailed(String),
}

/// A successful operation: the reply, the log index at which it took effect, and the node
/// that answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completed {
    /// The chat state machine's reply.
    pub reply: Reply,
    /// Where in the log the operation took effect (for a read, the applied index of the state
    /// it saw).
    pub index: LogIndex,
    /// The node whose answer this is: the leader that applied a write, the node that served
    /// a read.
    pub node: NodeId,
}

struct Connection {
    reader: FrameReader<ReadHalf<Stream>>,
    writer: WriteHalf<Stream>,
}

/// What one attempt against one server gave.
enum Attempt {
    Answer(ResponseBody),
    /// The request may have been delivered; no answer came.
    Lost(String),
    /// The request certainly was not delivered.
    NotSent(String),
}

/// A connection to a raftchat cluster, with its own session.
pub struct Client {
    config: ClientConfig,
    session: Option<ClientId>,
    sequence: u64,
    leader: Option<NodeId>,
    /// With `ReadMode::Any`: the node this client reads from.
    read_home: Option<NodeId>,
    /// The last operation was a read served without the log.
    last_was_read: bool,
    connections: BTreeMap<NodeId, Connection>,
    next_request_id: u64,
    rng: ChaCha8Rng,
    scratch: Vec<u8>,
    /// From the last successful login: sent with every operation until replaced.
    token: Option<Token>,
    /// Connections shared with other clients, used instead of `connections` when set.
    shared: Option<SharedLinks>,
    /// The attempt timeout, one timer for every attempt (see `crate::deadline`); made at the
    /// first attempt, inside the runtime.
    attempt_timer: Option<Deadline>,
}

impl Client {
    /// A client; it connects lazily.
    pub fn new(config: ClientConfig) -> Client {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Client {
            config,
            session: None,
            sequence: 0,
            leader: None,
            read_home: None,
            last_was_read: false,
            connections: BTreeMap::new(),
            next_request_id: 1,
            rng,
            scratch: Vec::new(),
            token: None,
            shared: None,
            attempt_timer: None,
        }
    }

    /// A client that sends through `links`, connections it shares with the other clients
    /// made with them (one per node, carrying every sharer's requests at once), rather than
    /// through connections of its own. It keeps its own session: see [`SharedLinks`].
    pub fn sharing(config: ClientConfig, links: SharedLinks) -> Client {
        Client {
            shared: Some(links),
            ..Client::new(config)
        }
    }

    /// The token this client sends with its operations, if it logged in.
    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// Sends `token` with every operation from now on (none: act as nobody).
    pub fn set_token(&mut self, token: Option<Token>) {
        self.token = token;
    }

    /// Logs in as `username`: on success, every later operation goes with the token, so the
    /// client may act as that account. A wrong password is `AuthFailed`.
    pub async fn login(&mut self, username: &str, password: &str) -> Result<Token, ClientError> {
        let body = RequestBody::Login {
            username: username.to_owned(),
            password: password.to_owned(),
        };
        match self.admin(body).await {
            Ok(ResponseBody::LoggedIn(token)) => {
                self.token = Some(token.clone());
                Ok(token)
            }
            Ok(other) => Err(ClientError::Failed(format!("unexpected {other:?}"))),
            // A login changes nothing: however it ended, it failed.
            Err(ClientError::Unknown(why)) => Err(ClientError::Failed(why)),
            Err(error) => Err(error),
        }
    }

    /// `create_account` with a password: only the holder of a token from a login with it may
    /// then send as the account, read its inbox or delete it.
    pub async fn create_with_password(
        &mut self,
        username: &str,
        password: &str,
    ) -> Result<Completed, ClientError> {
        let deadline = Instant::now() + self.config.operation_timeout;
        self.last_was_read = false;
        let client_id = self.ensure_session(deadline).await?;
        self.sequence += 1;
        let body = RequestBody::CreateAccountWithPassword {
            client_id,
            sequence: self.sequence,
            username: username.to_owned(),
            password: password.to_owned(),
        };
        let (index, outcome, node) = self.submit(body, deadline).await?;
        self.completed(index, outcome, node)
    }

    /// The leader this client last heard of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The session and sequence number of the last operation this client ran, if it went
    /// through the log: the identity under which that operation is (or may yet be) applied.
    /// None after a read served without the log.
    pub fn last_command(&self) -> Option<(ClientId, u64)> {
        self.session
            .filter(|_| self.sequence > 0 && !self.last_was_read)
            .map(|session| (session, self.sequence))
    }

    /// Runs one chat operation to completion: applied, certainly not applied, or unknown.
    pub async fn execute(&mut self, operation: Operation) -> Result<Completed, ClientError> {
        let deadline = Instant::now() + self.config.operation_timeout;
        self.last_was_read = operation.is_read_only() && self.config.reads != ReadMode::Log;
        if self.last_was_read {
            return self.read(operation, deadline).await;
        }
        let client_id = self.ensure_session(deadline).await?;
        self.sequence += 1;
        let command = Command::Client {
            client_id,
            sequence: self.sequence,
            operation,
        };
        let body = match &self.token {
            Some(token) => RequestBody::CommandWithToken {
                token: token.clone(),
                command,
            },
            None => RequestBody::Command(command),
        };
        let (index, outcome, node) = self.submit(body, deadline).await?;
        self.completed(index, outcome, node)
    }

    /// An applied command's outcome as the caller sees it.
    fn completed(
        &mut self,
        index: LogIndex,
        outcome: Outcome,
        node: NodeId,
    ) -> Result<Completed, ClientError> {
        match outcome {
            Outcome::Replied { reply, .. } => Ok(Completed { reply, index, node }),
            Outcome::SessionExpired => {
                // Nothing was applied now, but an earlier attempt under the lost session could
                // have been; the next operation opens a new session.
                self.session = None;
                Err(ClientError::Unknown("session expired".into()))
            }
            Outcome::StaleSequence | Outcome::Registered(_) => Err(ClientError::Unknown(format!(
                "unexpected outcome {outcome:?}"
            ))),
        }
    }

    /// Replicates a membership change through the leader; returns the configuration once the
    /// change has committed. A change whose outcome is unknown may or may not have been made:
    /// read the membership to find out.
    pub async fn change_membership(
        &mut self,
        change: ConfChange,
    ) -> Result<MembershipView, ClientError> {
        match self.admin(RequestBody::ChangeMembership(change)).await? {
            ResponseBody::Membership(view) => {
                self.learn_members(&view);
                Ok(view)
            }
            other => Err(ClientError::Failed(format!("unexpected {other:?}"))),
        }
    }

    /// The configuration as the leader sees it.
    pub async fn membership(&mut self) -> Result<MembershipView, ClientError> {
        match self.admin(RequestBody::Membership).await? {
            ResponseBody::Membership(view) => {
                self.learn_members(&view);
                Ok(view)
            }
            other => Err(ClientError::Failed(format!("unexpected {other:?}"))),
        }
    }

    /// Hands leadership to `target` (or the most up-to-date other voter); returns the new
    /// leader once it leads.
    pub async fn transfer_leadership(
        &mut self,
        target: Option<NodeId>,
    ) -> Result<NodeId, ClientError> {
        match self.admin(RequestBody::TransferLeadership(target)).await? {
            ResponseBody::Transferred { leader } => {
                self.leader = Some(leader);
                Ok(leader)
            }
            ResponseBody::TimedOut => Err(ClientError::Failed(
                "the transfer was abandoned: the target did not take over within an election \
                 timeout"
                    .into(),
            )),
            other => Err(ClientError::Failed(format!("unexpected {other:?}"))),
        }
    }

    /// `target` named `leader` as the leader: go there next. A leader this client has no
    /// address for (a member added after the cluster file was written) is looked up in
    /// `target`'s configuration.
    async fn follow(&mut self, target: NodeId, leader: Option<NodeId>) {
        self.leader = leader.filter(|&l| l != target);
        let Some(leader) = self.leader else { return };
        if self.config.members.contains_key(&leader) {
            return;
        }
        if let Attempt::Answer(ResponseBody::Membership(view)) =
            self.attempt(target, RequestBody::Membership).await
        {
            self.learn_members(&view);
        }
    }

    /// Adds the addresses a configuration names to those this client knows, so it can reach
    /// members the cluster file does not list.
    fn learn_members(&mut self, view: &MembershipView) {
        for (&id, member) in &view.membership.members {
            if let Ok(address) = member.address.parse() {
                self.config.members.insert(id, address);
            }
        }
    }

    /// Sends an operator's request to the leader until it answers, or the deadline passes.
    /// Returns the leader's answer (`Membership`, `Transferred`, `TimedOut`); a refusal is
    /// `Failed` with the leader's reason.
    async fn admin(&mut self, body: RequestBody) -> Result<ResponseBody, ClientError> {
        let deadline = Instant::now() + self.config.operation_timeout;
        let mut maybe_done = false;
        let mut backoff = self.config.backoff.0;
        let mut last_problem = String::from("no attempt made");
        while Instant::now() < deadline {
            let target = self.pick_target();
            let retry_now = match self.attempt(target, body.clone()).await {
                Attempt::Answer(ResponseBody::NotLeader { leader }) => {
                    last_problem = format!("{target} is not the leader");
                    self.follow(target, leader).await;
                    self.leader.is_some()
                }
                Attempt::Answer(ResponseBody::Busy) => {
                    last_problem = format!("{target} is busy (a change or transfer is under way)");
                    self.leader = Some(target);
                    false
                }
                Attempt::Answer(ResponseBody::Unknown | ResponseBody::Dropped) => {
                    maybe_done = true;
                    last_problem = format!("{target} lost leadership before the change committed");
                    self.leader = None;
                    false
                }
                Attempt::Answer(ResponseBody::Invalid(why)) if maybe_done => {
                    return Err(ClientError::Unknown(format!(
                        "{target} refused ({why}), perhaps because an earlier attempt took effect"
                    )));
                }
                Attempt::Answer(ResponseBody::Invalid(why)) => {
                    return Err(ClientError::Failed(format!("{target} refused: {why}")));
                }
                Attempt::Answer(ResponseBody::AuthFailed(why)) => {
                    return Err(ClientError::AuthFailed(why));
                }
                Attempt::Answer(answer) => {
                    self.leader = Some(target);
                    return Ok(answer);
                }
                Attempt::Lost(why) => {
                    maybe_done = true;
                    last_problem = why;
                    self.leader = None;
                    false
                }
                Attempt::NotSent(why) => {
                    last_problem = why;
                    self.leader = None;
                    false
                }
            };
            if !retry_now {
                self.back_off(&mut backoff, deadline).await;
            }
        }
        Err(timed_out(maybe_done, &last_problem))
    }

    /// Asks one node for the configuration as it sees it, in one attempt.
    pub async fn membership_of(&mut self, node: NodeId) -> Result<MembershipView, ClientError> {
        match self.attempt(node, RequestBody::Membership).await {
            Attempt::Answer(ResponseBody::Membership(view)) => Ok(view),
            Attempt::Answer(other) => Err(ClientError::Failed(format!("unexpected {other:?}"))),
            Attempt::Lost(why) | Attempt::NotSent(why) => Err(ClientError::Failed(why)),
        }
    }

    /// Asks one node for its status.
    pub async fn status(&mut self, node: NodeId) -> Result<NodeStatus, ClientError> {
        match self.attempt(node, RequestBody::Status).await {
            Attempt::Answer(ResponseBody::Status(status)) => Ok(status),
            Attempt::Answer(other) => Err(ClientError::Failed(format!("unexpected {other:?}"))),
            Attempt::Lost(why) | Attempt::NotSent(why) => Err(ClientError::Failed(why)),
        }
    }

    async fn ensure_session(&mut self, deadline: Instant) -> Result<ClientId, ClientError> {
        if let Some(client_id) = self.session {
            return Ok(client_id);
        }
        // A registration whose outcome is unknown leaves at most an unused session behind,
        // which the state machine evicts in time; so any failure here is just a failure.
        let body = RequestBody::Command(Command::RegisterClient);
        match self.submit(body, deadline).await {
            Ok((_, Outcome::Registered(client_id), _)) => {
                self.session = Some(client_id);
                self.sequence = 0;
                Ok(client_id)
            }
            Ok((_, other, _)) => Err(ClientError::Failed(format!("registration gave {other:?}"))),
            Err(
                ClientError::Unknown(why) | ClientError::Failed(why) | ClientError::AuthFailed(why),
            ) => Err(ClientError::Failed(format!("cannot open a session: {why}"))),
        }
    }

    /// Sends a command (`body`) until a leader applies it or the deadline passes.
    async fn submit(
        &mut self,
        body: RequestBody,
        deadline: Instant,
    ) -> Result<(LogIndex, Outcome, NodeId), ClientError> {
        let mut maybe_applied = false;
        let mut backoff = self.config.backoff.0;
        let mut last_problem = String::from("no attempt made");
        while Instant::now() < deadline {
            let target = self.pick_target();
            let retry_now = match self.attempt(target, body.clone()).await {
                Attempt::Answer(ResponseBody::Applied { index, outcome }) => {
                    self.leader = Some(target);
                    return Ok((index, outcome, target));
                }
                Attempt::Answer(ResponseBody::NotLeader { leader }) => {
                    last_problem = format!("{target} is not the leader");
                    self.follow(target, leader).await;
                    self.leader.is_some()
                }
                Attempt::Answer(ResponseBody::Unknown) => {
                    maybe_applied = true;
                    last_problem = format!("{target} lost leadership before applying");
                    self.leader = None;
                    false
                }
                Attempt::Answer(ResponseBody::Dropped) => {
                    last_problem = format!("{target}'s entry was replaced by a new leader");
                    self.leader = None;
                    false
                }
                Attempt::Answer(ResponseBody::Busy) => {
                    last_problem = format!("{target} is busy");
                    false
                }
                Attempt::Answer(ResponseBody::AuthFailed(why)) if maybe_applied => {
                    return Err(ClientError::Unknown(format!(
                        "{target} refused the token ({why}) after an attempt that may have \
                         taken effect"
                    )));
                }
                Attempt::Answer(ResponseBody::AuthFailed(why)) => {
                    return Err(ClientError::AuthFailed(why));
                }
                Attempt::Answer(
                    other @ (ResponseBody::Status(_)
                    | ResponseBody::LoggedIn(_)
                    | ResponseBody::Read { .. }
                    | ResponseBody::TimedOut
                    | ResponseBody::Invalid(_)
                    | ResponseBody::Membership(_)
                    | ResponseBody::Transferred { .. }),
                ) => {
                    // Nothing a node answers so was applied.
                    last_problem = format!("{target} answered a command with {other:?}");
                    false
                }
                Attempt::Lost(why) => {
                    maybe_applied = true;
                    last_problem = why;
                    self.leader = None;
                    false
                }
                Attempt::NotSent(why) => {
                    last_problem = why;
                    self.leader = None;
                    false
                }
            };
            if !retry_now {
                self.back_off(&mut backoff, deadline).await;
            }
        }
        Err(timed_out(maybe_applied, &last_problem))
    }

    /// Sends a read until a node serves it or the deadline passes. A read changes nothing,
    /// so however it ends without an answer, it failed.
    async fn read(
        &mut self,
        operation: Operation,
        deadline: Instant,
    ) -> Result<Completed, ClientError> {
        let mut backoff = self.config.backoff.0;
        let mut last_problem = String::from("no attempt made");
        while Instant::now() < deadline {
            let target = self.pick_read_target();
            let request = match &self.token {
                Some(token) => RequestBody::ReadWithToken {
                    token: token.clone(),
                    operation: operation.clone(),
                },
                None => RequestBody::Read(operation.clone()),
            };
            let retry_now = match self.attempt(target, request).await {
                Attempt::Answer(ResponseBody::Read { index, reply }) => {
                    return Ok(Completed {
                        reply,
                        index,
                        node: target,
                    });
                }
                Attempt::Answer(ResponseBody::NotLeader { leader }) => {
                    last_problem = format!("{target} could not confirm a leader");
                    self.follow(target, leader).await;
                    // A follower without a leader tells of none; try the leader if it knows one.
                    self.read_home = self.leader;
                    self.leader.is_some()
                }
                Attempt::Answer(ResponseBody::Invalid(why)) => {
                    return Err(ClientError::Failed(format!("{target} refused: {why}")));
                }
                Attempt::Answer(ResponseBody::AuthFailed(why)) => {
                    return Err(ClientError::AuthFailed(why));
                }
                Attempt::Answer(other) => {
                    last_problem = format!("{target} answered a read with {other:?}");
                    false
                }
                Attempt::Lost(why) | Attempt::NotSent(why) => {
                    last_problem = why;
                    self.leader = self.leader.filter(|&l| l != target);
                    self.read_home = None;
                    false
                }
            };
            if !retry_now {
                self.back_off(&mut backoff, deadline).await;
            }
        }
        Err(ClientError::Failed(format!(
            "timed out; last: {last_problem}"
        )))
    }

    /// Sleeps for a jittered `backoff` (never past the deadline), and doubles it.
    async fn back_off(&mut self, backoff: &mut Duration, deadline: Instant) {
        let jitter = self.rng.gen_range(0.5..1.0);
        let pause = backoff
            .mul_f64(jitter)
            .min(deadline.saturating_duration_since(Instant::now()));
        sleep(pause).await;
        *backoff = (*backoff * 2).min(self.config.backoff.1);
    }

    fn pick_read_target(&mut self) -> NodeId {
        if self.config.reads != ReadMode::Any {
            return self.pick_target();
        }
        if let Some(home) = self
            .read_home
            .filter(|h| self.config.members.contains_key(h))
        {
            return home;
        }
        let members: Vec<NodeId> = self.config.members.keys().copied().collect();
        let home = members[self.rng.gen_range(0..members.len())];
        self.read_home = Some(home);
        home
    }

    fn pick_target(&mut self) -> NodeId {
        if let Some(leader) = self.leader.filter(|l| self.config.members.contains_key(l)) {
            return leader;
        }
        let members: Vec<NodeId> = self.config.members.keys().copied().collect();
        members[self.rng.gen_range(0..members.len())]
    }

    /// One request to one server, with the attempt timeout.
    async fn attempt(&mut self, node: NodeId, body: RequestBody) -> Attempt {
        let Some(&address) = self.config.members.get(&node) else {
            return Attempt::NotSent(format!("{node} is not a member"));
        };
        if let Some(links) = &self.shared {
            let (tls, attempt_timeout) = (self.config.tls.as_ref(), self.config.attempt_timeout);
            return links
                .attempt(node, address, tls, body, attempt_timeout)
                .await;
        }
        if !self.connections.contains_key(&node) {
            let connecting = connect(node, address, self.config.tls.as_ref());
            match timeout(self.config.attempt_timeout, connecting).await {
                Ok(Ok(stream)) => {
                    let (read_half, writer) = tokio::io::split(stream);
                    let reader = FrameReader::new(read_half);
                    self.connections.insert(node, Connection { reader, writer });
                }
                Ok(Err(error)) => return Attempt::NotSent(format!("cannot reach {node}: {error}")),
                Err(_) => return Attempt::NotSent(format!("cannot reach {node}: timed out")),
            }
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        let attempt_timeout = self.config.attempt_timeout;
        let connection = self.connections.get_mut(&node).expect("just inserted");
        let frame = Frame::Request(Request { id, body });
        if let Err(error) = write_frames(&mut connection.writer, [&frame], &mut self.scratch).await
        {
            self.connections.remove(&node);
            return Attempt::Lost(format!("sending to {node}: {error}"));
        }
        let until = Instant::now() + attempt_timeout;
        let timer = self
            .attempt_timer
            .get_or_insert_with(|| Deadline::at(until));
        timer.reset(until);
        let answer = tokio::select! {
            biased;
            answer = read_response(&mut connection.reader, id) => Some(answer),
            () = timer => None,
        };
        match answer {
            Some(Ok(body)) => Attempt::Answer(body),
            Some(Err(error)) => {
                self.connections.remove(&node);
                Attempt::Lost(format!("waiting for {node}: {error}"))
            }
            None => {
                // The connection may deliver this answer later; a fresh one avoids confusion.
                self.connections.remove(&node);
                Attempt::Lost(format!("{node} did not answer in time"))
            }
        }
    }
}

/// How an operation that ran out of time ended: unknown if an attempt may have taken effect,
/// failed if none can have.
fn timed_out(maybe_applied: bool, last_problem: &str) -> ClientError {
    let why = format!("timed out; last: {last_problem}");
    match maybe_applied {
        true => ClientError::Unknown(why),
        false => ClientError::Failed(why),
    }
}

/// Connects to `node` at `address`, in TLS when `tls` is given (a server that speaks plaintext
/// then fails the handshake, and one that speaks TLS never answers a plaintext request).
async fn connect(
    node: NodeId,
    address: SocketAddr,
    tls: Option<&ClientTls>,
) -> std::io::Result<Stream> {
    let stream = TcpStream::connect(address).await?;
    let _ = stream.set_nodelay(true);
    match tls {
        Some(tls) => tls.connect(node, stream).await.map_err(|error| {
            std::io::Error::new(error.kind(), format!("TLS handshake failed: {error}"))
        }),
        None => Ok(Stream::Plain(stream)),
    }
}

/// Reads frames until the response to request `id`.
async fn read_response(
    reader: &mut FrameReader<ReadHalf<Stream>>,
    id: u64,
) -> Result<ResponseBody, FrameError> {
    loop {
        match reader.next().await? {
            Some(Frame::Response(response)) if response.id == id => return Ok(response.body),
            Some(_) => continue,
            None => return Err(FrameError::Truncated),
        }
    }
}
