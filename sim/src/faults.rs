//! The fault layer around a node's transport: drops, duplicates and delays (reorders) Raft
//! messages at the sender, at rates drawn per seed. madsim's simulated TCP is reliable and
//! ordered, so these faults cannot come from the network itself; they are injected here, from
//! outside the node runtime, which never knows it is being lied to.

use crate::world::World;
use raftchat::raft::Message;
use raftchat::types::NodeId;
use raftchat_node::transport::{Outbox, PeerOutbox};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Message fault rates.
#[derive(Clone, Copy, Debug)]
pub struct MessageFaults {
    /// Probability a message is dropped.
    pub loss: f64,
    /// Probability a message is sent twice.
    pub duplicate: f64,
    /// Probability a message is held back, so later ones overtake it.
    pub reorder: f64,
    /// How long a held-back message waits, in milliseconds, `[min, max]`.
    pub reorder_delay_ms: (u64, u64),
    /// The only message kind the faults hit (`MessageBody::kind`), or every kind.
    pub kind: Option<&'static str>,
}

/// A [`PeerOutbox`] with faults.
pub struct FaultyOutbox {
    inner: PeerOutbox,
    faults: MessageFaults,
    rng: ChaCha8Rng,
    world: Arc<World>,
    node: NodeId,
}

impl FaultyOutbox {
    /// Wraps `inner`.
    pub fn new(
        inner: PeerOutbox,
        faults: MessageFaults,
        rng: ChaCha8Rng,
        world: Arc<World>,
        node: NodeId,
    ) -> FaultyOutbox {
        FaultyOutbox {
            inner,
            faults,
            rng,
            world,
            node,
        }
    }

    fn deliver(&mut self, message: Message) {
        if self.faults.reorder > 0.0 && self.rng.gen_bool(self.faults.reorder) {
            let (min, max) = self.faults.reorder_delay_ms;
            let delay = Duration::from_millis(self.rng.gen_range(min..=max));
            self.world.with(|s| s.stats.messages_delayed += 1);
            self.world.trace(Some(self.node), "delay", || {
                json!({ "to": format!("{}", message.to), "message": message.body.kind(),
                        "delay_ms": delay.as_millis() as u64 })
            });
            let mut inner = self.inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                inner.send(message);
            });
        } else {
            self.inner.send(message);
        }
    }
}

impl Outbox for FaultyOutbox {
    fn send(&mut self, message: Message) {
        self.world.message_sent(self.node, &message);
        let aimed_elsewhere = self
            .faults
            .kind
            .is_some_and(|kind| kind != message.body.kind());
        if aimed_elsewhere || self.world.messages_healed() {
            // Not a kind the faults aim at: no draw, so other messages' faults stay as drawn.
            // And once everything is healed, nothing is faulted any more.
            self.inner.send(message);
            return;
        }
        if self.faults.loss > 0.0 && self.rng.gen_bool(self.faults.loss) {
            self.world.with(|s| s.stats.messages_dropped += 1);
            self.world.trace(
                Some(self.node),
                "drop",
                || json!({ "to": format!("{}", message.to), "message": message.body.kind() }),
            );
            return;
        }
        if self.faults.duplicate > 0.0 && self.rng.gen_bool(self.faults.duplicate) {
            self.world.with(|s| s.stats.messages_duplicated += 1);
            self.world.trace(
                Some(self.node),
                "duplicate",
                || json!({ "to": format!("{}", message.to), "message": message.body.kind() }),
            );
            self.deliver(message.clone());
        }
        self.deliver(message);
    }
}
