//! `raftchat_node::deadline::Deadline` under madsim, where it keeps track of its own timer
//! entries (madsim's cannot be cancelled): moved either way it fires at its instant and only
//! then, and pushed later on every turn it does not leave an entry, and a wake, per push.

use raftchat_node::deadline::Deadline;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::time::{sleep, Instant};

const MS: Duration = Duration::from_millis(1);

/// Polls `deadline` once, in this task's context.
async fn poll_once(deadline: &mut Deadline) -> Poll<()> {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *deadline).poll(cx))).await
}

/// Waits for `deadline`; returns how many times it was polled.
async fn polls_until_fired(deadline: &mut Deadline) -> usize {
    let mut polls = 0;
    poll_fn(|cx| {
        polls += 1;
        Pin::new(&mut *deadline).poll(cx)
    })
    .await;
    polls
}

/// Makes a deadline `first` from now, polls it once, moves it to `then` from the start, and
/// waits for it: when it fired, and how many times it was polled in the wait.
async fn moved_while_waited_for(first: Duration, then: Duration) -> (Duration, usize) {
    let start = Instant::now();
    let mut deadline = Deadline::at(start + first);
    assert!(poll_once(&mut deadline).await.is_pending());
    deadline.reset(start + then);
    let polls = polls_until_fired(&mut deadline).await;
    (start.elapsed(), polls)
}

#[tokio::test]
async fn moved_earlier_while_waited_for_it_fires_at_the_earlier_instant() {
    let (fired, _) = moved_while_waited_for(100 * MS, 10 * MS).await;
    assert!(fired >= 10 * MS && fired < 11 * MS, "fired after {fired:?}");
}

#[tokio::test]
async fn moved_later_while_waited_for_it_fires_at_the_later_instant_only() {
    // The entry for 10 ms wakes the task then; the deadline is not passed.
    let (fired, polls) = moved_while_waited_for(10 * MS, 30 * MS).await;
    assert!(fired >= 30 * MS && fired < 31 * MS, "fired after {fired:?}");
    assert_eq!(polls, 3, "pending at once, again at 10 ms, ready at 30 ms");
}

#[tokio::test]
async fn pushed_later_on_every_turn_it_keeps_one_entry_instead_of_one_per_push() {
    // An idle timeout pushed back at every request, a millisecond apart.
    let mut deadline = Deadline::at(Instant::now() + 50 * MS);
    for _ in 0..100 {
        assert!(poll_once(&mut deadline).await.is_pending());
        sleep(MS).await;
        deadline.reset(Instant::now() + 50 * MS);
    }
    let last_push = Instant::now();
    // An entry per push would wake the task at each of the last 50 pushes' first instants.
    let polls = polls_until_fired(&mut deadline).await;
    let fired = last_push.elapsed();
    assert!(fired >= 50 * MS && fired < 51 * MS, "fired after {fired:?}");
    assert!(polls <= 3, "polled {polls} times");
}

#[tokio::test]
async fn like_a_sleep_it_waits_at_least_a_millisecond() {
    // madsim's `sleep_until`, as tokio's timer, waits a millisecond at least: a simulated
    // disk's sync of a few microseconds keeps costing what it always has.
    let start = Instant::now();
    let mut deadline = Deadline::at(start + Duration::from_micros(5));
    assert!(deadline.instant() >= start + MS);
    polls_until_fired(&mut deadline).await;
    assert!(start.elapsed() >= MS);
}
