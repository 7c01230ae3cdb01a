//! A reusable timer for event loops: [`Deadline`] fires once its instant has passed and is
//! moved on with [`Deadline::reset`], so a `select!` loop polls one timer for its whole life
//! instead of building a new one on every turn.
//!
//! Under madsim it also keeps the simulator fast. madsim's `Sleep` adds an entry to the
//! runtime's timer heap on every poll that returns pending, and that entry cannot be cancelled:
//! it stays until its instant, then wakes its task for nothing. A loop that polls a sleep on
//! every message (a host's tick, a link's keep-alive) filled the heap with one entry per
//! message and woke its task again for each. A `Deadline` polls the inner sleep only when its
//! instant or its task's waker changed since the last pending poll; otherwise the entry already
//! in the heap will wake the same task at the same instant, and it answers from the clock.
//! With tokio proper it is a pinned `Sleep`, which registers once by itself.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// A timer that fires at an instant and can be moved to another (see the module docs).
#[derive(Debug)]
pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    /// The waker the timer entry for the current instant will wake, once one is registered.
    #[cfg(madsim)]
    armed: Option<std::task::Waker>,
}

impl Deadline {
    /// A timer firing at `instant`.
    pub fn at(instant: Instant) -> Deadline {
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(instant)),
            #[cfg(madsim)]
            armed: None,
        }
    }

    /// Moves the timer to `instant` (earlier or later); it fires again once that has passed.
    pub fn reset(&mut self, instant: Instant) {
        self.sleep.as_mut().reset(instant);
        #[cfg(madsim)]
        {
            self.armed = None;
        }
    }

    /// The instant it fires at.
    pub fn instant(&self) -> Instant {
        self.sleep.deadline()
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        #[cfg(madsim)]
        if self.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return if self.sleep.is_elapsed() {
                Poll::Ready(())
            } else {
                Poll::Pending
            };
        }
        let poll = self.sleep.as_mut().poll(cx);
        #[cfg(madsim)]
        if poll.is_pending() {
            self.armed = Some(cx.waker().clone());
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn fires_at_its_instant_and_again_after_a_reset() {
        let start = Instant::now();
        let mut deadline = Deadline::at(start + Duration::from_millis(10));
        (&mut deadline).await;
        assert!(Instant::now() >= start + Duration::from_millis(10));
        deadline.reset(start + Duration::from_millis(30));
        assert_eq!(deadline.instant(), start + Duration::from_millis(30));
        (&mut deadline).await;
        assert!(Instant::now() >= start + Duration::from_millis(30));
        // Already passed: ready at once, however often it is polled.
        (&mut deadline).await;
        (&mut deadline).await;
    }

    #[tokio::test]
    async fn a_select_loop_sees_it_fire_between_other_events() {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<u32>(16);
        tokio::spawn(async move {
            for k in 0..5 {
                tokio::time::sleep(Duration::from_millis(3)).await;
                let _ = sender.send(k).await;
            }
        });
        let start = Instant::now();
        let mut tick = Deadline::at(start + Duration::from_millis(7));
        let (mut ticks, mut messages) = (0, 0);
        while messages < 5 || ticks < 3 {
            tokio::select! {
                () = &mut tick => {
                    ticks += 1;
                    let next = tick.instant() + Duration::from_millis(7);
                    tick.reset(next);
                }
                Some(_) = receiver.recv() => messages += 1,
            }
        }
        assert!(Instant::now() >= start + Duration::from_millis(21));
    }
}
