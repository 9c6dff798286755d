//! What `/healthz` and `/readyz` answer, fed by the worker's receive loop.
//!
//! Live: the loop has made progress (polled, or checked in while waiting for room) recently;
//! a wedged loop gets the container restarted. Ready: the queue answered a poll recently (so
//! config and credentials work) and the worker is not draining for shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
}

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
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
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
        // Before the first turn of the loop (start-up) the process counts as live.
        self.last_progress.load(Ordering::Relaxed) == 0
            || self.within(&self.last_progress, self.live_within)
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
