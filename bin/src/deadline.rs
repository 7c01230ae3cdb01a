//! A reusable timer for event loops: [`Deadline`] fires once its instant has passed and is
//! moved on with [`Deadline::reset`], so a `select!` loop polls one timer for its whole life
//! instead of building a new one on every turn.
//!
//! Under madsim it also keeps the simulator fast. madsim's `Sleep` adds an entry to the
//! runtime's timer heap on every poll that returns pending, and that entry cannot be cancelled:
//! it stays until its instant, then wakes its task for nothing. A loop that polls a sleep on
//! every message (a host's tick, a link's keep-alive) filled the heap with one entry per
//! message and woke its task again for each. A `Deadline` polls the inner sleep only when no
//! entry of its task's is still to fire at or before its instant; otherwise that entry will wake
//! the same task in time, and it answers from the clock. So a deadline pushed later on every
//! request (an idle or attempt timeout) keeps its entry: the entry fires early, once, and the
//! poll it causes registers the instant then in force, instead of one entry per request, each
//! waking its task for nothing an interval later. Moved earlier, it registers again at once.
//! With tokio proper it is a pinned `Sleep`, which registers once by itself.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// A timer that fires at an instant and can be moved to another (see the module docs).
#[derive(Debug)]
pub struct Deadline {
    /// The instant it fires at.
    instant: Instant,
    /// With tokio, a sleep until `instant`. Under madsim, a sleep until the instant of the
    /// timer entry still to fire, while one is (`armed`): that instant, at or before
    /// `instant`, is then the one whose passing matters first, and the sleep tells it from its
    /// own clock handle (`Instant::now()` under madsim goes through its `clock_gettime` hook,
    /// which looks the runtime up and clones its handle on every call).
    sleep: Pin<Box<Sleep>>,
    /// The waker the entry at the sleep's instant will wake, while that entry is to fire.
    #[cfg(madsim)]
    armed: Option<std::task::Waker>,
}

impl Deadline {
    /// A timer firing at `instant`.
    pub fn at(instant: Instant) -> Deadline {
        let sleep = Box::pin(tokio::time::sleep_until(instant));
        Deadline {
            // madsim's `sleep_until` waits at least a millisecond, as tokio's timer does.
            instant: sleep.deadline(),
            sleep,
            #[cfg(madsim)]
            armed: None,
        }
    }

    /// Moves the timer to `instant` (earlier or later); it fires again once that has passed.
    pub fn reset(&mut self, instant: Instant) {
        self.instant = instant;
        // Later than the entry to fire: that entry wakes the task first, and the poll it
        // causes registers the instant then in force.
        #[cfg(madsim)]
        if self.armed.is_some() && instant >= self.sleep.deadline() {
            return;
        }
        #[cfg(madsim)]
        {
            self.armed = None;
        }
        self.sleep.as_mut().reset(instant);
    }

    /// The instant it fires at.
    pub fn instant(&self) -> Instant {
        self.instant
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        #[cfg(madsim)]
        {
            // The entry still to fire comes at or before the deadline: while it has not, the
            // deadline has not passed either, and the entry will wake this task.
            let armed_for_this_task = self.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
            if armed_for_this_task && !self.sleep.is_elapsed() {
                return Poll::Pending;
            }
            let instant = self.instant;
            self.sleep.as_mut().reset(instant);
        }
        let poll = self.sleep.as_mut().poll(cx);
        #[cfg(madsim)]
        {
            self.armed = poll.is_pending().then(|| cx.waker().clone());
        }
        poll
    }
}

/// A clock for a loop that reads the time on every turn. With tokio it is `Instant::now()`.
/// Under madsim `Instant::now()` goes through madsim's `clock_gettime` hook, which looks the
/// runtime up and clones its time handle on every call; a `Clock` keeps the handle.
#[derive(Clone)]
pub struct Clock {
    #[cfg(madsim)]
    time: tokio::time::TimeHandle,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl Clock {
    /// The running runtime's clock.
    pub fn current() -> Clock {
        Clock {
            #[cfg(madsim)]
            time: tokio::time::TimeHandle::current(),
        }
    }

    /// The time now.
    pub fn now(&self) -> Instant {
        #[cfg(madsim)]
        return self.time.now_instant();
        #[cfg(not(madsim))]
        Instant::now()
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
