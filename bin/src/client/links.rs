//! Connections many clients share ([`SharedLinks`]), each carrying many requests at once.
//!
//! A client with connections of its own has one request in flight on each, so a thousand
//! callers cost a thousand connections, and every request and every answer is a system call
//! of its own on both ends. Clients made with [`Client::sharing`](super::Client::sharing) send
//! through one connection per node instead (as etcd's clients share one gRPC connection): a
//! task per connection writes every request queued since its last write in one write, and
//! hands each answer to its caller by request id; the node answers each as soon as it has it,
//! and the answers ready together leave in one write too.
//!
//! Each client keeps its own session and its one operation in flight, so retries are applied
//! once, exactly as with connections of its own. What an attempt learns is the same three-way
//! answer: an answer; certainly not sent (no connection, or the connection ended before the
//! request was written); or lost (written, and the connection ended or the attempt timed out).
//! A connection that owes answers and hears nothing for an attempt timeout is given up, so a
//! stalled stream is replaced as a client's own connection would be.

use super::{connect, Attempt};
use crate::deadline::Deadline;
use crate::frame_io::{write_frames, FrameReader};
use crate::tls::{ClientTls, Stream};
use raftchat::types::NodeId;
use raftchat::wire::{Frame, Request, RequestBody};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};

/// Requests queued for one shared connection before callers wait for room.
const LINK_QUEUE_MAX: usize = 1024;
/// Requests written in one write.
const LINK_BATCH_MAX: usize = 256;

/// Connections to a cluster's nodes shared by every client made with them (see the module
/// docs). Cloning shares the same connections.
#[derive(Clone, Debug, Default)]
pub struct SharedLinks {
    links: Arc<Mutex<BTreeMap<NodeId, mpsc::Sender<Call>>>>,
}

/// One request on its way, and where its attempt's end goes.
struct Call {
    body: RequestBody,
    answer: oneshot::Sender<Attempt>,
}

impl SharedLinks {
    /// No connections yet: the first request to each node opens one.
    pub fn new() -> SharedLinks {
        SharedLinks::default()
    }

    /// One request to `node` through its shared connection, within `attempt_timeout`.
    pub(super) async fn attempt(
        &self,
        node: NodeId,
        address: SocketAddr,
        tls: Option<&ClientTls>,
        body: RequestBody,
        attempt_timeout: Duration,
    ) -> Attempt {
        let deadline = Instant::now() + attempt_timeout;
        let link = match self.open(node) {
            Some(link) => link,
            None => match within(deadline, connect(node, address, tls)).await {
                Ok(Ok(stream)) => self.keep(node, stream, attempt_timeout),
                Ok(Err(error)) => return Attempt::NotSent(format!("cannot reach {node}: {error}")),
                Err(_) => return Attempt::NotSent(format!("cannot reach {node}: timed out")),
            },
        };
        let (answer, answered) = oneshot::channel();
        match within(deadline, link.send(Call { body, answer })).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Attempt::NotSent(format!("the connection to {node} closed")),
            Err(_) => return Attempt::NotSent(format!("the connection to {node} is full")),
        }
        match within(deadline, answered).await {
            Ok(Ok(attempt)) => attempt,
            Ok(Err(_)) => Attempt::Lost(format!("the connection to {node} closed")),
            Err(_) => Attempt::Lost(format!("{node} did not answer in time")),
        }
    }

    /// The connection to `node`, if one is open.
    fn open(&self, node: NodeId) -> Option<mpsc::Sender<Call>> {
        let mut links = self.links.lock().expect("links lock");
        match links.get(&node) {
            Some(link) if !link.is_closed() => Some(link.clone()),
            Some(_) => {
                links.remove(&node);
                None
            }
            None => None,
        }
    }

    /// Starts serving `stream` as the connection to `node`, unless another caller's connection
    /// got there first (then `stream` is closed and that one is used).
    fn keep(&self, node: NodeId, stream: Stream, silence: Duration) -> mpsc::Sender<Call> {
        let mut links = self.links.lock().expect("links lock");
        if let Some(link) = links.get(&node).filter(|link| !link.is_closed()) {
            return link.clone();
        }
        let (link, calls) = mpsc::channel(LINK_QUEUE_MAX);
        tokio::spawn(run_link(stream, calls, silence));
        links.insert(node, link.clone());
        link
    }
}

/// Serves one shared connection until it fails, goes silent while it owes answers, or every
/// client that could use it is gone.
async fn run_link(stream: Stream, mut calls: mpsc::Receiver<Call>, silence: Duration) {
    let (read_half, mut writer) = tokio::io::split(stream);
    let mut reader = FrameReader::new(read_half);
    let mut waiting: BTreeMap<u64, oneshot::Sender<Attempt>> = BTreeMap::new();
    let mut next_id = 1u64;
    let (mut frames, mut scratch) = (Vec::new(), Vec::new());
    let mut silent = Deadline::at(Instant::now() + silence);
    let why = loop {
        tokio::select! {
            biased;
            frame = reader.next() => match frame {
                Ok(Some(Frame::Response(response))) => {
                    silent.reset(Instant::now() + silence);
                    if let Some(answer) = take_waiter(&mut waiting, response.id) {
                        let _ = answer.send(Attempt::Answer(response.body));
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break "closed by the node".to_string(),
                Err(error) => break error.to_string(),
            },
            call = calls.recv() => {
                let Some(call) = call else { return }; // no client is left to use it
                if waiting.is_empty() {
                    silent.reset(Instant::now() + silence);
                }
                if waiting.len() >= LINK_QUEUE_MAX {
                    // Requests whose callers gave up and that the node never answered.
                    waiting.retain(|_, answer| !answer.is_closed());
                }
                let mut next = Some(call);
                while let Some(call) = next.take() {
                    // A caller that gave up before its request was written is not sent.
                    if !call.answer.is_closed() {
                        let id = next_id;
                        next_id += 1;
                        frames.push(Frame::Request(Request { id, body: call.body }));
                        waiting.insert(id, call.answer);
                    }
                    if frames.len() < LINK_BATCH_MAX {
                        next = calls.try_recv().ok();
                    }
                }
                if frames.is_empty() {
                    continue;
                }
                let written = write_frames(&mut writer, &frames, &mut scratch).await;
                frames.clear();
                if let Err(error) = written {
                    break error.to_string();
                }
            },
            () = &mut silent, if !waiting.is_empty() => {
                // Callers that gave up wait for nothing: only a live caller's silence counts.
                waiting.retain(|_, answer| !answer.is_closed());
                if !waiting.is_empty() {
                    break format!("no answer for {} ms", silence.as_millis());
                }
                silent.reset(Instant::now() + silence);
            }
        }
    };
    tracing::debug!(%why, owed = waiting.len(), "shared client connection given up");
    for (_, answer) in waiting {
        let _ = answer.send(Attempt::Lost(format!("connection lost: {why}")));
    }
    calls.close();
    while let Ok(call) = calls.try_recv() {
        let _ = call
            .answer
            .send(Attempt::NotSent(format!("connection lost: {why}")));
    }
}

/// The caller waiting for the answer to request `id`.
fn take_waiter(
    waiting: &mut BTreeMap<u64, oneshot::Sender<Attempt>>,
    id: u64,
) -> Option<oneshot::Sender<Attempt>> {
    #[cfg(feature = "mutants")]
    if raftchat::mutants::is_active(raftchat::mutants::Mutant::AnswerByOrder) {
        return waiting.pop_first().map(|(_, answer)| answer);
    }
    waiting.remove(&id)
}

/// `future`, unless `deadline` passes first (madsim has no `timeout_at`).
async fn within<F: Future>(deadline: Instant, future: F) -> Result<F::Output, ()> {
    let left = deadline.saturating_duration_since(Instant::now());
    timeout(left, future).await.map_err(|_| ())
}
