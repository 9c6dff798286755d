//! What `/healthz` and `/readyz` answer, fed by the worker's receive loop.
//!
//! Live: the loop has made progress (polled, or checked in while waiting for room) recently,
//! and its jobs are not stalled (every slot busy with none freed for `worker.stall_secs`, or a
//! job running that long past its deadline); a wedged worker gets the container restarted.
//! Ready: the queue answered a poll recently (so
//! config and credentials work) and the worker is not draining for shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    /// Milliseconds since `epoch` (+1, so 0 means never).
    last_progress: AtomicU64,
    last_poll_ok: AtomicU64,
    last_poll_failed: AtomicBool,
    draining: AtomicBool,
    live_within: Duration,
    ready_within: Duration,
    jobs: JobTracker,
    /// Added to the clock: tests move time forward instead of sleeping.
    skew_ms: AtomicU64,
}

/// The jobs running now and when a slot last freed, for the stall checks.
#[derive(Debug)]
struct JobTracker {
    /// Start (ms since `epoch`) of each running job, by ticket.
    running: Mutex<HashMap<u64, u64>>,
    next_ticket: AtomicU64,
    last_freed: AtomicU64,
    slots: usize,
    deadline: Duration,
    stall_after: Duration,
}

/// A running job, as [`Health`] knows it: hand it back to [`Health::job_finished`].
#[derive(Debug)]
pub struct JobTicket(u64);

impl Health {
    /// `poll_wait` is the long-poll wait: a healthy loop reports at least once per poll.
    pub fn new(poll_wait: Duration) -> Health {
        Health {
            epoch: Instant::now(),
            last_progress: AtomicU64::new(0),
            last_poll_ok: AtomicU64::new(0),
            last_poll_failed: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            live_within: poll_wait * 3 + Duration::from_secs(60),
            ready_within: poll_wait * 2 + Duration::from_secs(30),
            skew_ms: AtomicU64::new(0),
            jobs: JobTracker {
                running: Mutex::new(HashMap::new()),
                next_ticket: AtomicU64::new(0),
                last_freed: AtomicU64::new(0),
                slots: usize::MAX,
                deadline: Duration::MAX,
                stall_after: Duration::MAX,
            },
        }
    }

    /// Live as long as one call to the queue may take: a receive or start-up call that hangs
    /// until its time-outs (attempt time-out × attempts) is the worker waiting correctly, not
    /// a wedge, and must not get the pod restarted.
    pub fn with_call_time(mut self, longest_call: Duration) -> Health {
        self.live_within = self.live_within.max(longest_call + Duration::from_secs(60));
        self
    }

    /// With the stall checks: `slots` jobs at most, each with `deadline`; stalled when every
    /// slot stays busy for `stall_after` with none freed, or a job runs `stall_after` past its
    /// deadline.
    pub fn with_stall_checks(
        mut self,
        slots: usize,
        deadline: Duration,
        stall_after: Duration,
    ) -> Health {
        self.jobs.slots = slots;
        self.jobs.deadline = deadline;
        self.jobs.stall_after = stall_after;
        self
    }

    pub fn job_started(&self) -> JobTicket {
        let ticket = self.jobs.next_ticket.fetch_add(1, Ordering::Relaxed);
        let now = self.now();
        self.jobs.running.lock().unwrap().insert(ticket, now);
        JobTicket(ticket)
    }

    pub fn job_finished(&self, ticket: JobTicket) {
        self.jobs.running.lock().unwrap().remove(&ticket.0);
        self.jobs.last_freed.store(self.now(), Ordering::Relaxed);
    }

    /// Jobs running for longer than the stall time now.
    pub fn stalled_jobs(&self) -> usize {
        let now = self.now();
        let limit = millis(self.jobs.stall_after);
        let running = self.jobs.running.lock().unwrap();
        running
            .values()
            .filter(|start| now.saturating_sub(**start) > limit)
            .count()
    }

    /// Why the jobs count as stalled, if they do.
    fn stall(&self) -> Option<String> {
        let jobs = &self.jobs;
        let now = self.now();
        let running = jobs.running.lock().unwrap();
        let oldest = running.values().min().copied()?;
        let newest = running.values().max().copied()?;
        let past_deadline = millis(jobs.deadline).saturating_add(millis(jobs.stall_after));
        if now.saturating_sub(oldest) > past_deadline {
            return Some(format!(
                "a job has run {} s, past its deadline of {} s",
                (now - oldest) / 1000,
                jobs.deadline.as_secs()
            ));
        }
        let since_freed = now.saturating_sub(jobs.last_freed.load(Ordering::Relaxed).max(newest));
        if running.len() >= jobs.slots && since_freed > millis(jobs.stall_after) {
            return Some(format!(
                "all {} job slots busy and none freed for {} s",
                jobs.slots,
                since_freed / 1000
            ));
        }
        None
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + self.skew_ms.load(Ordering::Relaxed) + 1
    }

    /// Moves this clock forward (tests).
    #[cfg(test)]
    fn advance(&self, by: Duration) {
        self.skew_ms.fetch_add(millis(by), Ordering::Relaxed);
    }

    fn within(&self, stamp: &AtomicU64, window: Duration) -> bool {
        let at = stamp.load(Ordering::Relaxed);
        at != 0 && self.now().saturating_sub(at) <= window.as_millis() as u64
    }

    /// The loop is alive (called on every turn and while it waits for room).
    pub fn progress(&self) {
        self.last_progress.store(self.now(), Ordering::Relaxed);
    }

    /// A receive call answered (with or without messages).
    pub fn poll_ok(&self) {
        let now = self.now();
        self.last_progress.store(now, Ordering::Relaxed);
        self.last_poll_ok.store(now, Ordering::Relaxed);
        self.last_poll_failed.store(false, Ordering::Relaxed);
    }

    pub fn poll_failed(&self) {
        self.progress();
        self.last_poll_failed.store(true, Ordering::Relaxed);
    }

    /// Waiting for room while every slot is busy: the queue is as reachable as at the last
    /// poll, so a long job does not turn the worker unready.
    pub fn busy(&self) {
        self.progress();
        if self.last_poll_ok.load(Ordering::Relaxed) != 0
            && !self.last_poll_failed.load(Ordering::Relaxed)
        {
            self.last_poll_ok.store(self.now(), Ordering::Relaxed);
        }
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_live(&self) -> bool {
        self.liveness().is_ok()
    }

    /// Why it is not live, for the `/healthz` body.
    pub fn liveness(&self) -> Result<(), String> {
        // Before the first turn of the loop (start-up) the process counts as live.
        let progressing = self.last_progress.load(Ordering::Relaxed) == 0
            || self.within(&self.last_progress, self.live_within);
        if !progressing {
            return Err("the receive loop has made no progress recently".into());
        }
        match self.stall() {
            Some(why) => Err(format!("jobs stalled: {why}")),
            None => Ok(()),
        }
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && self.within(&self.last_poll_ok, self.ready_within)
    }

    /// Why it is not ready, for the `/readyz` body.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Relaxed) {
            Err("draining for shutdown")
        } else if self.last_poll_ok.load(Ordering::Relaxed) == 0 {
            Err("no successful poll of the queue yet")
        } else if !self.within(&self.last_poll_ok, self.ready_within) {
            Err("the queue has not answered recently")
        } else {
            Ok(())
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl Default for Health {
    fn default() -> Self {
        Health::new(Duration::from_secs(20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_a_poll_and_not_while_draining() {
        let health = Health::new(Duration::from_secs(1));
        assert!(health.is_live());
        assert_eq!(
            health.readiness(),
            Err("no successful poll of the queue yet")
        );
        health.poll_failed();
        assert!(!health.is_ready());
        health.poll_ok();
        assert!(health.is_ready());
        health.start_draining();
        assert_eq!(health.readiness(), Err("draining for shutdown"));
        assert!(health.is_live());
    }

    #[test]
    fn every_slot_busy_with_none_freed_is_a_stall() {
        let health = Health::new(Duration::from_secs(1)).with_stall_checks(
            2,
            Duration::from_secs(600),
            Duration::from_secs(60),
        );
        health.progress();
        let a = health.job_started();
        health.advance(Duration::from_secs(90));
        health.progress();
        assert!(health.is_live(), "one slot of two busy is not a stall");
        let b = health.job_started();
        assert!(health.is_live(), "the second slot was just taken");
        health.advance(Duration::from_secs(61));
        health.progress();
        let why = health.liveness().unwrap_err();
        assert!(why.contains("all 2 job slots busy"), "{why}");
        assert_eq!(health.stalled_jobs(), 2);
        health.job_finished(a);
        assert!(health.is_live(), "a slot freed");
        health.job_finished(b);
        assert_eq!(health.stalled_jobs(), 0);
    }

    #[test]
    fn a_job_long_past_its_deadline_is_a_stall() {
        let health = Health::new(Duration::from_secs(1)).with_stall_checks(
            8,
            Duration::from_secs(30),
            Duration::from_secs(30),
        );
        let job = health.job_started();
        health.advance(Duration::from_secs(61));
        health.progress();
        let why = health.liveness().unwrap_err();
        assert!(why.contains("past its deadline"), "{why}");
        health.job_finished(job);
        assert!(health.is_live());
    }

    #[test]
    fn a_call_hanging_until_its_time_outs_is_not_a_wedge() {
        let health = Health::new(Duration::from_secs(20)).with_call_time(Duration::from_secs(180));
        health.progress();
        health.advance(Duration::from_secs(200));
        assert!(health.is_live(), "three 60 s attempts of one receive");
        health.advance(Duration::from_secs(60));
        assert!(!health.is_live(), "and no longer");
    }

    #[test]
    fn busy_keeps_readiness_only_after_a_good_poll() {
        let health = Health::new(Duration::from_secs(1));
        health.busy();
        assert!(!health.is_ready());
        health.poll_ok();
        health.poll_failed();
        health.busy();
        assert!(health.is_ready(), "the last good poll is still recent");
    }
}
