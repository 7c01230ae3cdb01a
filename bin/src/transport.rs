//! The TCP transport: peer connections for Raft messages, client connections for requests.
//!
//! Outbound peer links, written by the node's loop itself, are `crate::outbox`'s. This module
//! accepts connections: a peer's inbound one carries its Raft messages to the node's inbox and
//! acknowledges them on the same connection (`PeerAck`), at least every `ACK_EVERY_FRAMES`
//! frames and a while after the last, so the sender can tell a silent peer.
//!
//! With TLS (`crate::tls`), every connection is a TLS session: a peer shows a certificate of
//! the cluster's CA that names the node it claims to be in its `PeerHello`, or it is refused; a
//! client shows none, and checks the node's.
//!
//! Inbound connections say what they are with their first frame: a `PeerHello` from a node of
//! this cluster (any id but this node's: a new member hears from a leader it has no address
//! for, and Raft's own rules hold off a removed one), or a client's first `Request`. Anything
//! else, and any frame that fails to decode, closes that connection and nothing else.

use crate::config::{ConnectionLimits, NodeConfig};
use crate::deadline::{Clock, Deadline};
use crate::frame_io::{write_frames, FrameError, FrameReader};
use crate::tls::{names_node, Stream};
use raftchat::raft::Message;
use raftchat::types::NodeId;
use raftchat::wire::{Frame, Request, Response, ResponseBody, PROTOCOL_VERSION};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, timeout, Instant};

pub use crate::outbox::{Outbox, PeerOutbox, PEER_QUEUE_MAX};

/// An inbound connection acknowledges at least every this many frames.
const ACK_EVERY_FRAMES: u64 = 64;
/// How long a new inbound connection may take to say what it is.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests one client connection may have waiting for answers before the node stops reading
/// from it.
pub const CLIENT_IN_FLIGHT_MAX: usize = 128;

/// What the transport hands to the node's loop.
#[derive(Debug)]
pub enum Inbound {
    /// A Raft message from a peer.
    Peer(Message),
    /// A client request and where to send its answer.
    Request {
        /// The request.
        request: Request,
        /// Receives the answer.
        reply: oneshot::Sender<ResponseBody>,
        /// When the connection's task had the whole frame (for `--timeline`).
        received: tokio::time::Instant,
    },
}

/// The addresses peers gave in their `PeerHello`: how to answer a peer no configuration this
/// node holds names (a leader added while this node was away). Shared by the acceptor, which
/// learns them, and the outbox, which uses them.
#[derive(Clone, Debug, Default)]
pub struct PeerDirectory(Arc<std::sync::Mutex<BTreeMap<NodeId, SocketAddr>>>);

impl PeerDirectory {
    fn learn(&self, peer: NodeId, address: SocketAddr) {
        self.0.lock().expect("never poisoned").insert(peer, address);
    }

    pub(crate) fn get(&self, peer: NodeId) -> Option<SocketAddr> {
        self.0.lock().expect("never poisoned").get(&peer).copied()
    }
}

/// The connections a node's listener holds, against its [`ConnectionLimits`].
#[derive(Clone, Debug, Default)]
struct Admission(Arc<std::sync::Mutex<Counts>>);

#[derive(Debug, Default)]
struct Counts {
    unidentified: usize,
    clients: usize,
    clients_by_source: BTreeMap<IpAddr, usize>,
    /// Refusals since the last logged one: a flood gets a line a second, not a line each.
    refused_quietly: u64,
    last_logged: Option<Instant>,
}

/// What a connection counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unidentified,
    Client,
    Peer,
}

/// A connection's place in the counts, given back when it is dropped.
struct Slot {
    admission: Admission,
    source: IpAddr,
    kind: Kind,
}

impl Admission {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0.lock().expect("never poisoned")
    }

    /// A place for a new connection, until it says what it is; none beyond the limit.
    fn admit(&self, limits: &ConnectionLimits, source: IpAddr) -> Option<Slot> {
        let mut counts = self.counts();
        if counts.unidentified >= limits.unidentified_max {
            drop(counts);
            self.refuse(source, "too many connections still opening");
            return None;
        }
        counts.unidentified += 1;
        Some(Slot {
            admission: self.clone(),
            source,
            kind: Kind::Unidentified,
        })
    }

    /// Logs a refused connection: the first at once, then at most a line a second.
    fn refuse(&self, source: IpAddr, reason: &str) {
        let mut counts = self.counts();
        let now = Instant::now();
        let due = counts
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1));
        if !due {
            counts.refused_quietly += 1;
            return;
        }
        let earlier = std::mem::take(&mut counts.refused_quietly);
        counts.last_logged = Some(now);
        drop(counts);
        tracing::warn!(%source, reason, refused_since_last_line = earlier, "refusing a connection");
    }
}

impl Slot {
    /// The connection is a client's: counted as one, unless that passes a limit (the reason).
    fn client(&mut self, limits: &ConnectionLimits) -> Result<(), &'static str> {
        let mut counts = self.admission.counts();
        let from_source = counts.clients_by_source.get(&self.source).copied();
        if counts.clients >= limits.clients_max {
            return Err("the node has its most client connections open");
        }
        if from_source.unwrap_or(0) >= limits.clients_per_source_max {
            return Err("the source address has its most client connections open");
        }
        counts.unidentified -= 1;
        counts.clients += 1;
        *counts.clients_by_source.entry(self.source).or_insert(0) += 1;
        self.kind = Kind::Client;
        Ok(())
    }

    /// The connection is a peer's: not counted.
    fn peer(&mut self) {
        self.admission.counts().unidentified -= 1;
        self.kind = Kind::Peer;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        match self.kind {
            Kind::Unidentified => counts.unidentified -= 1,
            Kind::Client => {
                counts.clients -= 1;
                let from_source = counts.clients_by_source.entry(self.source).or_insert(1);
                *from_source -= 1;
                if *from_source == 0 {
                    counts.clients_by_source.remove(&self.source);
                }
            }
            Kind::Peer => {}
        }
    }
}

/// Accepts connections forever, serving each on its own task.
pub async fn run_acceptor(
    listener: TcpListener,
    config: Arc<NodeConfig>,
    inbox: mpsc::Sender<Inbound>,
    directory: PeerDirectory,
) {
    let admission = Admission::default();
    loop {
        match listener.accept().await {
            Ok((stream, source)) => {
                let Some(slot) = admission.admit(&config.connection_limits, source.ip()) else {
                    continue; // dropping the stream closes it
                };
                let _ = stream.set_nodelay(true);
                let connection = accept_connection(
                    stream,
                    source,
                    slot,
                    config.clone(),
                    inbox.clone(),
                    directory.clone(),
                );
                tokio::spawn(connection);
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Opens the TLS session of an inbound connection, if the node has TLS, then serves it.
async fn accept_connection(
    stream: TcpStream,
    source: SocketAddr,
    slot: Slot,
    config: Arc<NodeConfig>,
    inbox: mpsc::Sender<Inbound>,
    directory: PeerDirectory,
) {
    // Refusals go through the admission's log, a line a second at most: a stranger's flood
    // must not flood the log.
    let stream = match &config.tls {
        Some(tls) => match timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%source, %error, "TLS handshake failed");
                return slot.admission.refuse(source.ip(), "TLS handshake failed");
            }
            Err(_) => {
                return slot
                    .admission
                    .refuse(source.ip(), "TLS handshake timed out")
            }
        },
        None => Stream::Plain(stream),
    };
    serve_connection(stream, source, slot, config, inbox, directory).await;
}

async fn serve_connection(
    stream: Stream,
    source: SocketAddr,
    mut slot: Slot,
    config: Arc<NodeConfig>,
    inbox: mpsc::Sender<Inbound>,
    directory: PeerDirectory,
) {
    let certificate = stream.peer_certificate();
    // One task reads and writes the connection in turn: no split.
    let mut reader = FrameReader::new(stream);
    let first = match timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
        Ok(Ok(Some(frame))) => frame,
        Ok(Err(error)) => return tracing::warn!(%error, "closing a connection"),
        _ => return,
    };
    let result = match first {
        Frame::PeerHello {
            version,
            from,
            cluster_id,
            mut address,
        } => {
            if version != PROTOCOL_VERSION || cluster_id != config.cluster_id || from == config.id {
                tracing::debug!(%from, version, cluster_id, "refusing a peer");
                let reason = "a peer of another protocol version or cluster, or claiming this node";
                return slot.admission.refuse(source.ip(), reason);
            }
            // With TLS, a peer speaks only as the node its certificate names.
            let proven = certificate.as_ref().is_some_and(|c| names_node(c, from));
            #[cfg(feature = "mutants")]
            let proven = proven
                || (certificate.is_some()
                    && raftchat::mutants::is_active(raftchat::mutants::Mutant::SkipPeerNameCheck));
            if config.tls.is_some() && !proven {
                tracing::debug!(%from, %source, "a peer's certificate does not name it");
                let reason = "a peer whose certificate does not name the node it claims to be";
                return slot.admission.refuse(source.ip(), reason);
            }
            if address.ip().is_unspecified() {
                address.set_ip(source.ip());
            }
            directory.learn(from, address);
            slot.peer();
            serve_peer(&config, from, reader, &inbox).await
        }
        Frame::Request(request) => {
            let limits = config.connection_limits;
            if let Err(reason) = slot.client(&limits) {
                slot.admission.refuse(source.ip(), reason);
                // The newcomer hears why: busy, try another node or later.
                let refusal = Frame::Response(Response {
                    id: request.id,
                    body: ResponseBody::Busy,
                });
                let _ = write_frames(reader.get_mut(), [&refusal], &mut Vec::new()).await;
                return;
            }
            serve_client(request, reader, &inbox, limits.client_idle_timeout).await
        }
        _ => return tracing::warn!("closing a connection that opened with an unexpected frame"),
    };
    if let Err(error) = result {
        tracing::warn!(%error, "closing a connection");
    }
}

async fn serve_peer<S: AsyncRead + AsyncWrite + Unpin>(
    config: &NodeConfig,
    from: NodeId,
    mut reader: FrameReader<S>,
    inbox: &mpsc::Sender<Inbound>,
) -> Result<(), FrameError> {
    // The sender declares silence a timeout after its oldest unacknowledged frame, or its
    // last acknowledgement: half of it for the interval leaves the other half for the
    // frame's and the acknowledgement's latency (a quarter, before, cost a fifth as many
    // acknowledgements as Raft messages).
    let ack_interval = config.peer_silence_timeout / 2;
    let mut acked_count = 0u64;
    let mut scratch = Vec::new();
    // Acknowledges what was read at least every `ack_interval` while frames wait for it.
    let clock = Clock::current();
    let mut ack_timer = Deadline::at(clock.now() + ack_interval);
    loop {
        let ack_due = reader.frames_read() > acked_count;
        // The timer is polled once no frame is ready, so a steady stream is acknowledged every
        // ACK_EVERY_FRAMES frames, and its last frames once the stream pauses past the interval.
        let mut interval_passed = false;
        tokio::select! {
            biased;
            frame = reader.next() => match frame? {
                Some(Frame::Raft(message)) if message.from == from && message.to == config.id => {
                    // A full inbox drops the message: Raft tolerates loss, not unbounded queues.
                    let _ = inbox.try_send(Inbound::Peer(message));
                }
                Some(_) => return Err(FrameError::Codec(raftchat::codec::CodecError::Decode(
                    "unexpected frame on a peer connection".into(),
                ))),
                None => return Ok(()),
            },
            () = &mut ack_timer, if ack_due => interval_passed = true,
        }
        let unacked = reader.frames_read() - acked_count;
        if unacked > 0 && (unacked >= ACK_EVERY_FRAMES || interval_passed) {
            let ack = Frame::PeerAck {
                received_count: reader.frames_read(),
            };
            write_frames(reader.get_mut(), [&ack], &mut scratch).await?;
            acked_count = reader.frames_read();
            ack_timer.reset(clock.now() + ack_interval);
        }
    }
}

/// Serves a client connection: many requests may be in flight on it at once (a client that
/// multiplexes its callers, such as `SharedLinks`), each answered by id as soon as the node has
/// its answer; the answers ready together leave in one write. A client with one request at a
/// time sees the old exchange. Reading stops while `CLIENT_IN_FLIGHT_MAX` wait for answers.
async fn serve_client<S: AsyncRead + AsyncWrite + Unpin>(
    first: Request,
    mut reader: FrameReader<S>,
    inbox: &mpsc::Sender<Inbound>,
    idle_timeout: Duration,
) -> Result<(), FrameError> {
    let mut scratch = Vec::new();
    let mut waiting = Waiting::default();
    let mut answers: Vec<Frame> = Vec::new();
    let clock = Clock::current();
    waiting.submit(first, clock.now(), inbox, &mut answers);
    // Set again at each turn.
    let mut idle = Deadline::at(clock.now() + idle_timeout);
    // Whether the client may send more: once it has closed its side, it still gets the
    // answers it is owed.
    let mut reading = true;
    loop {
        // Answers go out before the next wait: a `Busy` answered at submission included.
        if !answers.is_empty() {
            write_frames(reader.get_mut(), &answers, &mut scratch).await?;
            answers.clear();
        }
        if waiting.is_empty() {
            if !reading {
                return Ok(());
            }
            idle.reset(clock.now() + idle_timeout);
        }
        tokio::select! {
            biased;
            answered = std::future::poll_fn(|cx| waiting.poll_answers(cx, &mut answers)),
                if !waiting.is_empty() => {
                if answered.is_err() {
                    return Ok(()); // the node is stopping
                }
            }
            frame = reader.next(), if reading && waiting.len() < CLIENT_IN_FLIGHT_MAX => {
                match frame? {
                    Some(Frame::Request(request)) => {
                        waiting.submit(request, clock.now(), inbox, &mut answers)
                    }
                    Some(_) => return Ok(()),
                    None => reading = false,
                }
            }
            // Idle: the client comes back on a new connection.
            () = &mut idle, if waiting.is_empty() => return Ok(()),
        }
    }
}

/// Requests a client connection has handed to the node, waiting for their answers.
#[derive(Default)]
struct Waiting(Vec<(u64, oneshot::Receiver<ResponseBody>)>);

/// The node stopped before it answered.
struct Stopping;

impl Waiting {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Hands `request`, received at `received`, to the node, or answers `Busy` at once when its
    /// inbox is full.
    fn submit(
        &mut self,
        request: Request,
        received: Instant,
        inbox: &mpsc::Sender<Inbound>,
        answers: &mut Vec<Frame>,
    ) {
        let id = request.id;
        let (reply, answer) = oneshot::channel();
        match inbox.try_send(Inbound::Request {
            request,
            reply,
            received,
        }) {
            Ok(()) => self.0.push((id, answer)),
            Err(_) => answers.push(Frame::Response(Response {
                id,
                body: ResponseBody::Busy,
            })),
        }
    }

    /// Moves every answer that has come into `answers`; ready once one has.
    fn poll_answers(
        &mut self,
        cx: &mut Context<'_>,
        answers: &mut Vec<Frame>,
    ) -> Poll<Result<(), Stopping>> {
        let before = answers.len();
        let mut stopping = false;
        self.0
            .retain_mut(|(id, answer)| match Pin::new(answer).poll(cx) {
                Poll::Ready(Ok(body)) => {
                    answers.push(Frame::Response(Response { id: *id, body }));
                    false
                }
                Poll::Ready(Err(_)) => {
                    stopping = true;
                    false
                }
                Poll::Pending => true,
            });
        if stopping {
            Poll::Ready(Err(Stopping))
        } else if answers.len() > before {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A client connection served by `serve_client`, with the test as the node: what the node
    /// receives arrives on the returned inbox.
    async fn served() -> (tokio::net::TcpStream, mpsc::Receiver<Inbound>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, client) = tokio::join!(listener.accept(), client);
        let (server, _) = accepted.unwrap();
        let (inbox, node) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut reader = FrameReader::new(server);
            let Some(Frame::Request(first)) = reader.next().await.unwrap() else {
                panic!("the test sends a request first")
            };
            let idle = Duration::from_secs(5);
            let _ = serve_client(first, reader, &inbox, idle).await;
        });
        (client.unwrap(), node)
    }

    fn status(id: u64) -> Frame {
        Frame::Request(Request {
            id,
            body: raftchat::wire::RequestBody::Status,
        })
    }

    async fn answer_ids(
        reader: &mut FrameReader<tokio::net::tcp::OwnedReadHalf>,
        n: usize,
    ) -> Vec<u64> {
        let mut ids = Vec::new();
        for _ in 0..n {
            match reader.next().await.unwrap() {
                Some(Frame::Response(response)) => ids.push(response.id),
                other => panic!("expected a response, got {other:?}"),
            }
        }
        ids
    }

    #[tokio::test]
    async fn requests_in_flight_are_answered_by_id_in_the_order_the_node_answers() {
        // A node that served one request at a time would never see the second: fail, not hang.
        let test = in_flight_and_half_closed();
        timeout(Duration::from_secs(10), test)
            .await
            .expect("the exchange finishes");
    }

    #[tokio::test]
    async fn a_request_the_node_cannot_take_is_answered_busy_at_once() {
        let (client, node) = served().await;
        drop(node); // the node's inbox refuses everything from now on
        let (read_half, mut write_half) = client.into_split();
        let mut reader = FrameReader::new(read_half);
        for id in [9, 10] {
            write_frames(&mut write_half, [&status(id)], &mut Vec::new())
                .await
                .unwrap();
            let answer = timeout(Duration::from_secs(5), reader.next()).await;
            match answer.expect("answered without waiting for another frame") {
                Ok(Some(Frame::Response(response))) => {
                    assert_eq!((response.id, response.body), (id, ResponseBody::Busy))
                }
                other => panic!("expected Busy for {id}, got {other:?}"),
            }
        }
    }

    async fn in_flight_and_half_closed() {
        let (client, mut node) = served().await;
        let (read_half, mut write_half) = client.into_split();
        let mut reader = FrameReader::new(read_half);
        let frames = [status(1), status(2), status(3)];
        write_frames(&mut write_half, &frames, &mut Vec::new())
            .await
            .unwrap();
        let mut replies = Vec::new();
        for _ in 0..3 {
            match node.recv().await.unwrap() {
                Inbound::Request { request, reply, .. } => replies.push((request.id, reply)),
                Inbound::Peer(_) => panic!("a client sent a peer message"),
            }
        }
        // The node answers the last first, then the other two together.
        let (id, reply) = replies.pop().unwrap();
        reply.send(ResponseBody::Busy).unwrap();
        assert_eq!(answer_ids(&mut reader, 1).await, [id]);
        for (_, reply) in replies {
            reply.send(ResponseBody::Busy).unwrap();
        }
        assert_eq!(answer_ids(&mut reader, 2).await, [1, 2]);

        // A client that closes its side still gets what it is owed, then the node closes.
        write_frames(&mut write_half, [&status(4)], &mut Vec::new())
            .await
            .unwrap();
        write_half.shutdown().await.unwrap();
        let Some(Inbound::Request { reply, .. }) = node.recv().await else {
            panic!("the fourth request reaches the node")
        };
        reply.send(ResponseBody::Busy).unwrap();
        assert_eq!(answer_ids(&mut reader, 1).await, [4]);
        assert!(
            reader.next().await.unwrap().is_none(),
            "then the node closes"
        );
    }
}
