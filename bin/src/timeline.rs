//! Where a write's time goes on the leader that serves it, step by step (issue 15's profile):
//! from the moment the connection's task has its frame, to the moment the host hands the
//! answer back to that task. `raftchat-server --timeline` turns it on; the host then logs,
//! every few seconds, the percentiles of each step over the writes answered since the last
//! line. Off, it costs one branch per command.
//!
//! The steps, each measured from the end of the one before:
//! - `queue`: in the node's inbox, until the event loop takes the request and proposes it;
//! - `batch`: in the log, until a round of work takes the entry to persist (while the round
//!   before it writes and syncs);
//! - `sync`: the round's write and fsync of the leader's own log;
//! - `quorum`: until the entry is committed (a majority has it on disk; the followers' syncs
//!   overlap the leader's) and applied;
//!
//! and `total`, from the frame to the answer. What a client sees beyond `total` is the
//! connection's task writing the answer, and the loopback both ways.

use std::time::Duration;
use tokio::time::Instant;

/// How often the summary is logged.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);
/// Most writes kept between two reports (later ones are counted but not kept).
const SAMPLES_MAX: usize = 200_000;

/// The instants one write passed, as far as it got.
#[derive(Clone, Copy, Debug)]
pub struct Stamps {
    received: Instant,
    proposed: Instant,
    taken: Option<Instant>,
    synced: Option<Instant>,
}

impl Stamps {
    /// A write received at `received` and proposed now.
    pub fn proposed(received: Instant) -> Stamps {
        Stamps {
            received,
            proposed: Instant::now(),
            taken: None,
            synced: None,
        }
    }

    /// A round of work took the write's entry to persist, now (if none had before).
    pub fn taken(&mut self, now: Instant) {
        self.taken.get_or_insert(now);
    }

    /// The round that persists the write's entry is synced, now.
    pub fn synced(&mut self, now: Instant) {
        if self.taken.is_some() {
            self.synced.get_or_insert(now);
        }
    }
}

/// The steps of the writes answered since the last report.
#[derive(Debug)]
pub struct Timeline {
    samples: Vec<[Duration; 5]>,
    dropped: u64,
    last_report: Instant,
}

impl Default for Timeline {
    fn default() -> Timeline {
        Timeline {
            samples: Vec::new(),
            dropped: 0,
            last_report: Instant::now(),
        }
    }
}

impl Timeline {
    /// A write with these stamps was answered now.
    pub fn answered(&mut self, stamps: Stamps) {
        let (Some(taken), Some(synced)) = (stamps.taken, stamps.synced) else {
            return; // Answered without passing through this leader's log (a duplicate, say).
        };
        if self.samples.len() >= SAMPLES_MAX {
            self.dropped += 1;
            return;
        }
        let now = Instant::now();
        self.samples.push([
            stamps.proposed - stamps.received,
            taken.saturating_duration_since(stamps.proposed),
            synced.saturating_duration_since(taken),
            now.saturating_duration_since(synced),
            now - stamps.received,
        ]);
    }

    /// The summary line, if it is time for one and there is anything to say; starts afresh.
    pub fn report(&mut self) -> Option<String> {
        if self.last_report.elapsed() < REPORT_EVERY {
            return None;
        }
        self.last_report = Instant::now();
        if self.samples.is_empty() {
            return None;
        }
        let line = summarize(&mut self.samples, self.dropped);
        self.samples.clear();
        self.dropped = 0;
        Some(line)
    }
}

/// `writes=N queue=p50/p99 batch=… sync=… quorum=… total=…`, in microseconds.
fn summarize(samples: &mut [[Duration; 5]], dropped: u64) -> String {
    const STEPS: [&str; 5] = ["queue", "batch", "sync", "quorum", "total"];
    let mut line = format!("writes={}", samples.len() as u64 + dropped);
    for (step, name) in STEPS.iter().enumerate() {
        samples.sort_unstable_by_key(|sample| sample[step]);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize][step].as_micros();
        line += &format!(" {name}={}/{}us", at(0.5), at(0.99));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_gives_each_steps_median_and_tail() {
        let mut samples: Vec<[Duration; 5]> = (1..=100)
            .map(|k| {
                let us = Duration::from_micros(k);
                [us, us * 2, us * 3, us * 4, us * 10]
            })
            .collect();
        let line = summarize(&mut samples, 5);
        assert_eq!(
            line,
            "writes=105 queue=50/99us batch=100/198us sync=150/297us quorum=200/396us \
             total=500/990us"
        );
    }

    #[tokio::test]
    async fn only_writes_that_went_through_the_log_are_counted() {
        let mut timeline = Timeline::default();
        let mut stamps = Stamps::proposed(Instant::now());
        timeline.answered(stamps);
        stamps.synced(Instant::now());
        timeline.answered(stamps);
        assert!(timeline.samples.is_empty());
        stamps.taken(Instant::now());
        stamps.synced(Instant::now());
        timeline.answered(stamps);
        assert_eq!(timeline.samples.len(), 1);
    }
}
