//! Raft messages to peers: one outbound link per peer, written by the node's loop itself.
//!
//! The loop queues each message on its peer's link (`send`) and, before it waits for anything,
//! encodes what is queued and writes it to the socket without waiting (`flush`): one write per
//! peer for one turn of the loop or a few (see the host), and no task woken to do it. When the
//! socket cannot take everything at once (its buffer is full: a slow or stalled peer, or, on
//! tokio, a loop that has spent its cooperative budget) the rest goes to the link's task,
//! which finishes the write; meanwhile the loop only queues, and the task writes what was
//! queued too. The task also writes the backlog a new connection starts with.
//!
//! The link's task dials (with backoff), introduces the node with `PeerHello`, reads the peer's
//! acknowledgements (`PeerAck`), and drops a connection that goes silent for
//! `peer_silence_timeout`: frames unacknowledged that long, or a write the socket takes no
//! byte of for that long. A stalled TCP stream (a partition that healed, a peer that froze)
//! must not stall Raft for as long as the operating system, or madsim's simulated TCP with its
//! retransmission backoff, takes to notice. Raft tolerates loss, so a full queue drops, and
//! while a connection is down only the newest messages are kept for the next one.
//!
//! madsim's TCP takes every write whole at once, so the simulator never drives the task's
//! side of a write; the tests below do, over a small in-memory pipe and over real TCP.
//!
//! The peers are the members of the configuration in force, at the addresses it names (the
//! cluster file's for the bootstrap members): the node's loop tells the outbox whenever that
//! changes, and a link starts for each new member. A departed member's link stays, for the
//! answers Raft still sends it.

use crate::config::NodeConfig;
use crate::deadline::{Clock, Deadline};
use crate::frame_io::{write_frames, FrameError, FrameReader};
use crate::tls::Stream;
use crate::transport::PeerDirectory;
use raftchat::raft::Message;
use raftchat::types::NodeId;
use raftchat::wire::{self, Frame, PROTOCOL_VERSION};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{sleep, timeout, Instant};

/// Messages queued for one peer before new ones are dropped.
pub const PEER_QUEUE_MAX: usize = 4096;
/// Messages kept queued for a peer across a reconnection; older ones are dropped.
const PEER_BACKLOG_KEPT: usize = 256;
/// Most messages the link's task encodes into one write; between two, it reads what
/// acknowledgements came.
const TASK_BATCH_FRAMES_MAX: usize = 256;
/// The loop's encoding buffer is let go after a write larger than this (a snapshot chunk),
/// rather than kept at that size.
const SCRATCH_KEPT_BYTES: usize = 1 << 20;

/// Where the node's loop sends Raft messages. The production implementation is
/// [`PeerOutbox`]; the simulator wraps it in a fault layer.
pub trait Outbox: Send + 'static {
    /// Queues, or drops, one message. Never blocks.
    fn send(&mut self, message: Message);

    /// Writes what is queued, without waiting. The loop calls it before it waits for
    /// anything: a message not flushed leaves only at the next flush.
    fn flush(&mut self);

    /// The members and their addresses changed (a configuration entry was appended, or
    /// truncated, or came with a snapshot): send to these from now on.
    fn members_changed(&mut self, members: &BTreeMap<NodeId, SocketAddr>);
}

/// Sends Raft messages to peers over TCP, one link per peer.
#[derive(Debug)]
pub struct PeerOutbox {
    config: Arc<NodeConfig>,
    links: BTreeMap<NodeId, (SocketAddr, Arc<LinkHandle>)>,
    directory: PeerDirectory,
    /// Frames being encoded for a write (kept for its capacity).
    scratch: Vec<u8>,
    /// The peers sent to since the last flush, the only links a flush need look at: the
    /// others' queues are empty or left to their tasks. (Every turn of the loop flushes, and
    /// most send to one or two peers, or none.)
    queued: Vec<NodeId>,
}

impl PeerOutbox {
    /// Starts one link per member of the cluster file; peers that introduce themselves
    /// through `directory` can be answered too.
    pub fn start(config: &NodeConfig, directory: PeerDirectory) -> PeerOutbox {
        let mut outbox = PeerOutbox {
            config: Arc::new(config.clone()),
            links: BTreeMap::new(),
            directory,
            scratch: Vec::new(),
            queued: Vec::new(),
        };
        outbox.members_changed(&config.members);
        outbox
    }

    fn start_link(&mut self, peer: NodeId, address: SocketAddr) {
        let link = Arc::new(Link::default());
        self.links
            .insert(peer, (address, Arc::new(LinkHandle(link.clone()))));
        tokio::spawn(run_link(self.config.clone(), peer, address, link));
    }
}

impl Outbox for PeerOutbox {
    fn send(&mut self, message: Message) {
        if !self.links.contains_key(&message.to) {
            match self.directory.get(message.to) {
                Some(address) if message.to != self.config.id => {
                    self.start_link(message.to, address)
                }
                _ => return,
            }
        }
        if let Some((_, link)) = self.links.get(&message.to) {
            if !self.queued.contains(&message.to) {
                self.queued.push(message.to);
            }
            link.0.queue(message);
        }
    }

    fn flush(&mut self) {
        // In the links' order, as before this list was kept: each write draws its latency
        // from the simulator's one random stream, so the order is part of a seed's replay.
        self.queued.sort_unstable();
        for peer in self.queued.drain(..) {
            if let Some((_, link)) = self.links.get(&peer) {
                link.0.flush(&mut self.scratch);
            }
        }
        if self.scratch.capacity() > SCRATCH_KEPT_BYTES {
            self.scratch = Vec::new();
        }
    }

    fn members_changed(&mut self, members: &BTreeMap<NodeId, SocketAddr>) {
        // A departed member keeps its link: Raft only answers it from now on, and it needs
        // those answers (a removed leader that never learned its removal committed steps down
        // on the newer term they carry). A member whose address changed gets a new link; the
        // old one's task ends once the messages queued on it are written or given up.
        self.links
            .retain(|peer, (address, _)| members.get(peer).is_none_or(|wanted| wanted == address));
        for (&peer, &address) in members {
            if peer == self.config.id || self.links.contains_key(&peer) {
                continue;
            }
            self.start_link(peer, address);
        }
    }
}

/// A clone shares the links (the simulator's fault layer sends a delayed message through
/// one), not the encoding buffer.
impl Clone for PeerOutbox {
    fn clone(&self) -> PeerOutbox {
        PeerOutbox {
            config: self.config.clone(),
            links: self.links.clone(),
            directory: self.directory.clone(),
            scratch: Vec::new(),
            queued: Vec::new(),
        }
    }
}

/// The outbox's hold on a link: when the last clone of the outbox lets go, the link's task
/// writes what is queued, if it is connected, and ends.
#[derive(Debug)]
struct LinkHandle(Arc<Link>);

impl Drop for LinkHandle {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake.notify_one();
    }
}

/// One peer's outbound link, shared by the node's loop (which queues and writes) and the
/// link's task (which connects, reads acknowledgements, and finishes writes).
#[derive(Default)]
struct Link {
    state: Mutex<LinkState>,
    /// Wakes the task: a write is owed, the loop's write failed, or the outbox let go.
    wake: Notify,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Link")
            .field("queued", &state.queue.len())
            .field("connected", &state.writer.is_some())
            .field("sent_count", &state.sent_count)
            .field("acked_count", &state.acked_count)
            .finish()
    }
}

/// A connection's write side, as the link holds it.
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

#[derive(Default)]
struct LinkState {
    /// Messages not yet encoded, oldest first.
    queue: VecDeque<Message>,
    /// The connection, while it is up and nobody is writing to it: whoever writes takes it.
    /// While it is out, the loop only queues.
    writer: Option<Writer>,
    /// Encoded bytes the socket did not take at once (empty: only its flush is owed). The
    /// task writes them before anything else.
    owed: Option<Vec<u8>>,
    /// The loop's write failed: the task drops the connection.
    broken: bool,
    /// The outbox let the link go.
    closed: bool,
    /// Frames written on this connection (its `PeerHello` included), and how many of them
    /// the peer has acknowledged.
    sent_count: u64,
    acked_count: u64,
    /// Since when the oldest unacknowledged frame has waited.
    waiting_since: Option<Instant>,
}

impl LinkState {
    /// Encodes up to `most` queued messages into `bytes`, oldest first, counting them as
    /// sent. A message that cannot be encoded (larger than a frame may be) is dropped: Raft
    /// sends again.
    fn encode_queue(&mut self, bytes: &mut Vec<u8>, most: usize) {
        let mut frames = 0;
        let count = self.queue.len().min(most);
        for message in self.queue.drain(..count) {
            let frame = Frame::Raft(message);
            let mark = bytes.len();
            match wire::encode(&frame, bytes) {
                Ok(()) => frames += 1,
                Err(error) => {
                    bytes.truncate(mark);
                    tracing::warn!(%error, "a Raft message could not be encoded; dropped");
                }
            }
        }
        self.note_sent(frames);
    }

    fn note_sent(&mut self, frames: u64) {
        if frames > 0 && self.acked_count == self.sent_count {
            self.waiting_since = Some(Instant::now());
        }
        self.sent_count += frames;
    }

    /// The connection is gone: what was written on it is lost with it, as with TCP.
    fn disconnected(&mut self) {
        self.writer = None;
        self.owed = None;
        self.broken = false;
        self.sent_count = 0;
        self.acked_count = 0;
        self.waiting_since = None;
    }
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().expect("never poisoned")
    }

    fn queue(&self, message: Message) {
        let mut state = self.lock();
        // A full queue means the peer is far behind or unreachable; Raft resends.
        if state.queue.len() < PEER_QUEUE_MAX {
            state.queue.push_back(message);
        }
    }

    /// The loop's write: everything queued, encoded into one buffer and written without
    /// waiting. What the socket does not take is left to the task. With the connection down,
    /// or a write already left to the task, the messages wait in the queue.
    fn flush(&self, scratch: &mut Vec<u8>) {
        let mut state = self.lock();
        if state.queue.is_empty() || state.owed.is_some() {
            return;
        }
        let Some(mut writer) = state.writer.take() else {
            return;
        };
        scratch.clear();
        state.encode_queue(scratch, usize::MAX);
        match write_now(&mut writer, scratch) {
            Ok(Written::All) => state.writer = Some(writer),
            Ok(Written::Part(taken)) => {
                state.owed = Some(scratch[taken..].to_vec());
                state.writer = Some(writer);
                self.wake.notify_one();
            }
            Err(error) => {
                tracing::debug!(%error, "write to a peer failed");
                state.broken = true;
                self.wake.notify_one();
            }
        }
    }
}

/// How much of a write left at once.
#[derive(Debug, PartialEq)]
enum Written {
    /// Everything, flushed.
    All,
    /// This many bytes were taken; the rest, or the flush, must wait for the socket.
    Part(usize),
}

/// Writes `bytes` and flushes, without waiting. A stream that would block is polled with a
/// waker that does nothing: the task that finishes the write polls it again with its own,
/// which is the one the stream then wakes.
fn write_now<W: AsyncWrite + Unpin + ?Sized>(writer: &mut W, bytes: &[u8]) -> io::Result<Written> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut taken = 0;
    while taken < bytes.len() {
        match Pin::new(&mut *writer).poll_write(&mut cx, &bytes[taken..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => taken += n,
            Poll::Ready(Err(error)) => return Err(error),
            Poll::Pending => return Ok(Written::Part(taken)),
        }
    }
    match Pin::new(writer).poll_flush(&mut cx) {
        Poll::Ready(Ok(())) => Ok(Written::All),
        Poll::Ready(Err(error)) => Err(error),
        Poll::Pending => Ok(Written::Part(taken)),
    }
}

/// A link's task: connects, serves the connection until it fails, waits, connects again;
/// ends once the outbox has let the link go and its queue is written or given up.
async fn run_link(config: Arc<NodeConfig>, peer: NodeId, address: SocketAddr, link: Arc<Link>) {
    let (backoff_min, backoff_max) = config.reconnect_backoff;
    let mut backoff = backoff_min;
    loop {
        let connected = timeout(config.peer_silence_timeout, dial(&config, peer, address)).await;
        if let Ok(Ok(stream)) = connected {
            backoff = backoff_min;
            let result = run_connection(&config, &link, stream).await;
            link.lock().disconnected();
            match result {
                Ok(()) => return, // the outbox let the link go
                Err(error) => tracing::debug!(%peer, %error, "peer connection dropped"),
            }
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(backoff_max);
        let mut state = link.lock();
        if state.closed {
            return;
        }
        // Keep only the newest messages for the next connection: the oldest are the stalest.
        let stale = state.queue.len().saturating_sub(PEER_BACKLOG_KEPT);
        state.queue.drain(..stale);
    }
}

/// Connects to `peer`, in TLS when the node has it.
async fn dial(config: &NodeConfig, peer: NodeId, address: SocketAddr) -> io::Result<Stream> {
    let stream = TcpStream::connect(address).await?;
    let _ = stream.set_nodelay(true);
    match &config.tls {
        Some(tls) => tls.connect(peer, stream).await.inspect_err(|error| {
            tracing::warn!(%peer, %address, %error, "TLS handshake with a peer failed");
        }),
        None => Ok(Stream::Plain(stream)),
    }
}

/// Why an outbound peer connection was given up.
#[derive(Debug)]
enum LinkError {
    Frame(FrameError),
    Closed,
    Silent,
    Unexpected,
    Broken,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Frame(e) => write!(f, "{e}"),
            LinkError::Closed => write!(f, "closed by the peer"),
            LinkError::Silent => write!(f, "no acknowledgement within the silence timeout"),
            LinkError::Unexpected => write!(f, "unexpected frame from the peer"),
            LinkError::Broken => write!(f, "a write failed"),
        }
    }
}

/// Serves one connection: hands its write side to the link, then reads acknowledgements,
/// finishes the writes left to it, and watches for silence. `Ok` once the outbox has let the
/// link go and nothing is left to write.
async fn run_connection(config: &NodeConfig, link: &Link, stream: Stream) -> Result<(), LinkError> {
    let (read_half, mut write_half) = tokio::io::split(stream);
    let hello = Frame::PeerHello {
        version: PROTOCOL_VERSION,
        from: config.id,
        cluster_id: config.cluster_id,
        address: config
            .members
            .get(&config.id)
            .copied()
            .unwrap_or(config.listen),
    };
    let mut scratch = Vec::new();
    write_frames(&mut write_half, [&hello], &mut scratch)
        .await
        .map_err(LinkError::Frame)?;
    {
        let mut state = link.lock();
        state.disconnected();
        state.note_sent(1);
        state.writer = Some(Box::new(write_half));
    }
    let mut reader = FrameReader::new(read_half);
    // Wakes the task when the peer's silence could first be declared, so it is noticed even
    // when nothing more is sent on the link: a silence timeout after the link last made
    // progress while frames wait for their acknowledgement, or, with none waiting, a timeout
    // from now to look again (the loop begins a wait without waking this task). A timer every
    // quarter timeout woke every link 8 times a second on a real server and 80 times in the
    // standard simulation, most of them with nothing to check.
    let silence = config.peer_silence_timeout;
    let clock = Clock::current();
    let mut check = Deadline::at(clock.now() + silence);
    loop {
        // Messages queued while the connection was down, or while the task was writing,
        // leave here, a batch at a time with the acknowledgements read in between; the loop
        // writes the rest itself.
        match write_owed(link, config.peer_silence_timeout).await? {
            Owed::Nothing { closed: true } => return Ok(()),
            Owed::Nothing { closed: false } => {}
            Owed::Wrote => link.wake.notify_one(),
        }
        tokio::select! {
            biased;
            frame = reader.next() => match frame.map_err(LinkError::Frame)? {
                Some(Frame::PeerAck { received_count }) => {
                    let mut state = link.lock();
                    if received_count > state.acked_count {
                        state.acked_count = received_count.min(state.sent_count);
                        state.waiting_since = Some(clock.now());
                    }
                }
                Some(_) => return Err(LinkError::Unexpected),
                None => return Err(LinkError::Closed),
            },
            () = link.wake.notified() => {}
            () = &mut check => {
                let state = link.lock();
                let now = clock.now();
                let waiting = state.acked_count < state.sent_count;
                match state.waiting_since.filter(|_| waiting) {
                    Some(since) if now.duration_since(since) >= silence => {
                        return Err(LinkError::Silent);
                    }
                    Some(since) => check.reset(since + silence),
                    None => check.reset(now + silence),
                }
            }
        }
    }
}

/// What `write_owed` found.
enum Owed {
    /// It wrote a batch; more may be owed.
    Wrote,
    /// Nothing is owed; `closed` when the outbox has let the link go.
    Nothing { closed: bool },
}

/// Writes one batch the link owes the connection: the bytes the loop's write left, or else
/// up to `TASK_BATCH_FRAMES_MAX` messages queued with nobody to write them.
async fn write_owed(link: &Link, patience: Duration) -> Result<Owed, LinkError> {
    let (mut writer, bytes) = {
        let mut state = link.lock();
        if state.broken {
            return Err(LinkError::Broken);
        }
        let bytes = match state.owed.take() {
            Some(bytes) => bytes,
            None if !state.queue.is_empty() => {
                let mut bytes = Vec::new();
                state.encode_queue(&mut bytes, TASK_BATCH_FRAMES_MAX);
                bytes
            }
            None => {
                return Ok(Owed::Nothing {
                    closed: state.closed,
                })
            }
        };
        let writer = state
            .writer
            .take()
            .expect("a connection's write side is the link's whenever no write is under way");
        (writer, bytes)
    };
    write_patiently(&mut writer, &bytes, patience).await?;
    link.lock().writer = Some(writer);
    Ok(Owed::Wrote)
}

/// Writes all of `bytes` and flushes. A peer whose socket takes no byte for `patience` is
/// silent; a slow one that keeps taking some is not, however long the whole takes.
async fn write_patiently(
    writer: &mut Writer,
    bytes: &[u8],
    patience: Duration,
) -> Result<(), LinkError> {
    let failed = |error| LinkError::Frame(FrameError::Io(error));
    let mut taken = 0;
    while taken < bytes.len() {
        match timeout(patience, writer.write(&bytes[taken..])).await {
            Err(_) => return Err(LinkError::Silent),
            Ok(Err(error)) => return Err(failed(error)),
            Ok(Ok(0)) => return Err(failed(io::ErrorKind::WriteZero.into())),
            Ok(Ok(n)) => taken += n,
        }
    }
    match timeout(patience, writer.flush()).await {
        Err(_) => Err(LinkError::Silent),
        Ok(result) => result.map_err(failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftchat::raft::{Membership, MessageBody, Payload, SnapshotMeta};
    use raftchat::types::{LogIndex, Term};
    use tokio::io::AsyncReadExt;

    fn heartbeat(n: u64) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(n),
            body: MessageBody::Heartbeat {
                leader_commit: raftchat::types::LogIndex(0),
                read_round: n,
            },
        }
    }

    /// A socket with a small buffer takes part of the loop's write; the task writes the rest,
    /// then the messages the loop queued meanwhile, in order.
    #[tokio::test]
    async fn a_write_the_socket_cannot_take_at_once_is_finished_by_the_task_in_order() {
        let (near, mut far) = tokio::io::duplex(256);
        let link = Link::default();
        link.lock().writer = Some(Box::new(near));
        for n in 0..50 {
            link.queue(heartbeat(n));
        }
        let mut scratch = Vec::new();
        link.flush(&mut scratch);
        assert!(link.lock().owed.as_ref().is_some_and(|b| !b.is_empty()));
        // The loop only queues while the task writes.
        for n in 50..60 {
            link.queue(heartbeat(n));
        }
        link.flush(&mut scratch);
        assert_eq!(link.lock().queue.len(), 10);
        let reading = tokio::spawn(async move {
            let mut bytes = Vec::new();
            far.read_to_end(&mut bytes).await.unwrap();
            bytes
        });
        while let Owed::Wrote = write_owed(&link, Duration::from_secs(5)).await.unwrap() {}
        assert_eq!(link.lock().sent_count, 60);
        drop(link); // closes the near end
        let bytes = reading.await.unwrap();
        assert_frames(&bytes, 60, |n, message| assert_eq!(message.term, Term(n)));
    }

    /// Decodes `count` Raft frames from `bytes` and checks they are `check(n)` in order.
    fn assert_frames(bytes: &[u8], count: u64, check: impl Fn(u64, &Message)) {
        let mut rest = bytes;
        for n in 0..count {
            let (frame, used) = wire::decode(rest).unwrap().expect("a whole frame");
            let Frame::Raft(message) = frame else {
                panic!("not a Raft frame")
            };
            check(n, &message);
            rest = &rest[used..];
        }
        assert!(rest.is_empty(), "{} bytes after the last frame", rest.len());
    }

    /// Over real TCP, with the reader not reading yet, the loop's write fills the socket's
    /// buffers and leaves the rest to the task (the no-op waker polled by the loop must not
    /// keep the task's write from being woken); every frame arrives once, in order.
    #[tokio::test]
    async fn over_tcp_a_write_larger_than_the_socket_buffers_is_finished_by_the_task() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (near, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        let (mut far, _) = accepted.unwrap();
        let link = Link::default();
        link.lock().writer = Some(Box::new(near.unwrap()));
        let chunk = Payload::new(vec![7; 16 * 1024]);
        let message = |n: u64| Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::InstallSnapshot {
                snapshot: SnapshotMeta {
                    index: LogIndex(1),
                    term: Term(1),
                    size_bytes: 1 << 30,
                    checksum: 0,
                },
                membership: Membership::default(),
                offset: n,
                data: chunk.clone(),
            },
        };
        let count = 2048; // 32 MiB, more than loopback's buffers hold
        for n in 0..count {
            link.queue(message(n));
        }
        let mut scratch = Vec::new();
        link.flush(&mut scratch);
        assert!(link.lock().owed.is_some(), "the socket took 32 MiB at once");
        let reading = tokio::spawn(async move {
            let mut bytes = Vec::new();
            far.read_to_end(&mut bytes).await.unwrap();
            bytes
        });
        while let Owed::Wrote = write_owed(&link, Duration::from_secs(5)).await.unwrap() {}
        drop(link);
        let bytes = reading.await.unwrap();
        assert_frames(&bytes, count, |n, message| {
            let MessageBody::InstallSnapshot { offset, .. } = message.body else {
                panic!("not a chunk")
            };
            assert_eq!(offset, n);
        });
    }

    /// A connected pair over loopback, and a node configuration with a short silence timeout.
    async fn connected(silence: Duration) -> (NodeConfig, Stream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (near, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        let mut config = NodeConfig::new(NodeId(1), BTreeMap::new());
        config.peer_silence_timeout = silence;
        (config, Stream::Plain(near.unwrap()), accepted.unwrap().0)
    }

    /// A peer that never acknowledges the hello is given up a silence timeout after it was
    /// sent, not before (the check is armed for that instant, not polled now and then).
    #[tokio::test]
    async fn a_peer_that_never_acknowledges_is_given_up_after_the_silence_timeout() {
        let silence = Duration::from_millis(200);
        let (config, near, _far) = connected(silence).await;
        let link = Link::default();
        let started = Instant::now();
        let result = run_connection(&config, &link, near).await;
        assert!(matches!(result, Err(LinkError::Silent)), "{result:?}");
        let took = started.elapsed();
        assert!(took >= silence, "given up after {took:?}");
        assert!(took < silence * 5, "given up only after {took:?}");
    }

    /// A link with nothing waiting for an acknowledgement stays up however long it is idle.
    #[tokio::test]
    async fn an_idle_link_whose_frames_were_acknowledged_stays_up() {
        let silence = Duration::from_millis(50);
        let (config, near, mut far) = connected(silence).await;
        let ack = Frame::PeerAck { received_count: 1 };
        write_frames(&mut far, [&ack], &mut Vec::new())
            .await
            .unwrap();
        let link = Link::default();
        let served = timeout(silence * 8, run_connection(&config, &link, near)).await;
        assert!(served.is_err(), "the link ended: {served:?}");
        assert_eq!(link.lock().acked_count, 1);
    }

    #[test]
    fn a_write_to_a_closed_socket_breaks_the_link() {
        let (near, far) = tokio::io::duplex(256);
        drop(far);
        let link = Link::default();
        link.lock().writer = Some(Box::new(near));
        link.queue(heartbeat(1));
        link.flush(&mut Vec::new());
        let state = link.lock();
        assert!(state.broken && state.writer.is_none());
    }
}
