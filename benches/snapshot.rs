//! What taking a snapshot costs on a large chat state, to justify where each step runs:
//!
//! - `copy`: `Chat::clone`, the only step on the node's event loop (copy on write: it shares
//!   every inbox chunk), so it is what a snapshot holds the loop for;
//! - `encode`: `Chat::snapshot`, run on the blocking pool beside the loop;
//! - `decode`: `Chat::restore`, run beside the loop when a follower installs a snapshot (and at
//!   startup).
//!
//! Two states: the benchmark's (32 accounts, 10,000 messages of 64 characters each, every
//! inbox full: what `raftchat-bench --clients 32` leaves behind) and a wide one (4,096 accounts
//! of 250 messages). Compare `copy` with the heartbeat interval (30 ms by default): a step
//! longer than that on the loop would delay heartbeats and cost the leader its followers.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use raftchat::chat::{Chat, ChatLimits, Command, Operation};
use raftchat::types::{ClientId, LogIndex};
use std::hint::black_box;

/// A chat state with `accounts` accounts whose inboxes each hold `messages` messages.
fn state(accounts: usize, messages: usize) -> Chat {
    let limits = ChatLimits {
        inbox_messages_max: messages as u64,
        ..ChatLimits::default()
    };
    let mut chat = Chat::with_limits(limits);
    let mut index = 0u64;
    let mut apply = |chat: &mut Chat, command: Command| {
        index += 1;
        chat.apply(LogIndex(index), &command);
    };
    apply(&mut chat, Command::RegisterClient);
    let mut sequence = 0;
    let mut client = |operation: Operation| {
        sequence += 1;
        Command::Client {
            client_id: ClientId(1),
            sequence,
            operation,
        }
    };
    let name = |k: usize| format!("bench-{k}");
    for k in 0..accounts {
        let command = client(Operation::CreateAccount { username: name(k) });
        apply(&mut chat, command);
    }
    for round in 0..messages {
        for k in 0..accounts {
            let mut text = format!("c{k}-{round} ");
            text.extend(std::iter::repeat_n('x', 64 - text.len()));
            let send = Operation::SendMessage {
                from: name((k + 1) % accounts),
                to: name(k),
                message: text,
            };
            let command = client(send);
            apply(&mut chat, command);
        }
    }
    chat
}

fn bench_state(c: &mut Criterion, label: &str, chat: &Chat) {
    let bytes = chat.snapshot();
    let mut group = c.benchmark_group(format!("snapshot/{label} ({} MB)", bytes.len() >> 20));
    group.sample_size(10);
    group.bench_function("copy (on the loop)", |b| b.iter(|| black_box(chat.clone())));
    group.bench_function("encode (beside it)", |b| {
        b.iter(|| black_box(chat.snapshot()))
    });
    group.bench_function("decode (beside it)", |b| {
        b.iter_batched(
            || bytes.clone(),
            |bytes| black_box(Chat::restore(&bytes)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn snapshots(c: &mut Criterion) {
    bench_state(c, "32 accounts x 10000", &state(32, 10_000));
    bench_state(c, "4096 accounts x 250", &state(4096, 250));
}

criterion_group!(benches, snapshots);
criterion_main!(benches);
