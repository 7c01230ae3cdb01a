//! The fault layer around a node's transport: drops, duplicates and delays (reorders) Raft
//! messages at the sender, at rates drawn per seed. madsim's simulated TCP is reliable and
//! ordered, so these faults cannot come from the network itself; they are injected here, from
//! outside the node runtime, which never knows it is being lied to.
//!
//! Each message's fate is a function of the run's key (seed, node and life), its link and its
//! sequence number on that link, not of a stream shared with the messages before it: a run
//! whose schedule is shrunk (a crash removed, say) still drops, duplicates and delays the
//! messages it has in common with the original as the original did, as far as they remain the
//! same messages on the same links.

use crate::world::World;
use raftchat::raft::Message;
use raftchat::types::NodeId;
use raftchat_node::transport::{Outbox, PeerOutbox};
use serde_json::json;
use std::collections::BTreeMap;
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
    /// The run's key for this node's life; with a link and a sequence number, a message's.
    key: u64,
    /// Messages handed to each peer so far.
    sequence: BTreeMap<NodeId, u64>,
    world: Arc<World>,
    node: NodeId,
}

/// The draws that decide one message's fate, each uniform in [0, 1).
struct Fate {
    draws: u64,
}

impl Fate {
    /// SplitMix64's finalizer: a bijective mix of a 64-bit key into a well-spread value.
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next draw, in [0, 1).
    fn unit(&mut self) -> f64 {
        self.draws = self.draws.wrapping_add(0x9e37_79b9_7f4a_7c15);
        (Fate::mix(self.draws) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`; draws even when `p` is 0, so every message uses the same
    /// draws for the same decisions whatever the rates.
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

impl FaultyOutbox {
    /// Wraps `inner`; `key` stands for the seed, the node and its life.
    pub fn new(
        inner: PeerOutbox,
        faults: MessageFaults,
        key: u64,
        world: Arc<World>,
        node: NodeId,
    ) -> FaultyOutbox {
        FaultyOutbox {
            inner,
            faults,
            key,
            sequence: BTreeMap::new(),
            world,
            node,
        }
    }

    /// The fate of the next message to `to`.
    fn fate(&mut self, to: NodeId) -> Fate {
        let sequence = self.sequence.entry(to).or_insert(0);
        *sequence += 1;
        let link = Fate::mix(self.key ^ to.0.rotate_left(40));
        Fate {
            draws: Fate::mix(link ^ *sequence),
        }
    }

    fn deliver(&mut self, message: Message, fate: &mut Fate) {
        let held = fate.chance(self.faults.reorder);
        let wait = fate.unit();
        if held {
            let (min, max) = self.faults.reorder_delay_ms;
            let span = (max - min + 1) as f64;
            let delay = Duration::from_millis(min + ((wait * span) as u64).min(max - min));
            self.world.with(|s| s.stats.messages_delayed += 1);
            self.world.trace(Some(self.node), "delay", || {
                json!({ "to": format!("{}", message.to), "message": message.body.kind(),
                        "delay_ms": delay.as_millis() as u64 })
            });
            let mut inner = self.inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                inner.send(message);
                inner.flush();
            });
        } else {
            self.inner.send(message);
        }
    }
}

impl Outbox for FaultyOutbox {
    fn members_changed(&mut self, members: &BTreeMap<NodeId, std::net::SocketAddr>) {
        self.inner.members_changed(members);
    }

    fn flush(&mut self) {
        self.inner.flush();
    }

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
        let mut fate = self.fate(message.to);
        if fate.chance(self.faults.loss) {
            self.world.with(|s| s.stats.messages_dropped += 1);
            self.world.trace(
                Some(self.node),
                "drop",
                || json!({ "to": format!("{}", message.to), "message": message.body.kind() }),
            );
            return;
        }
        if fate.chance(self.faults.duplicate) {
            self.world.with(|s| s.stats.messages_duplicated += 1);
            self.world.trace(
                Some(self.node),
                "duplicate",
                || json!({ "to": format!("{}", message.to), "message": message.body.kind() }),
            );
            self.deliver(message.clone(), &mut fate);
        }
        self.deliver(message, &mut fate);
    }
}
