//! When a transiently failed message comes back, planned against the queue's redrive policy.
//!
//! Every retry costs one SQS receive, and the redrive policy moves a message to the DLQ (with
//! no reason attached) once it has been received `maxReceiveCount` times. So the retries are
//! spread over the receives the policy allows: the delays double from `queue.retry_base_secs`
//! (each at most `queue.retry_max_secs`) and, where that would not reach
//! `queue.retry_window_secs` in all, are stretched in proportion until it does (SQS can delay a
//! message up to 12 h from its receive, less the lease, so spacing is rarely the limit). On the
//! last receive it plans for, a message that fails again is dead-lettered by the worker itself,
//! as `transient_exhausted` with the last error as its reason. That is the receive before the
//! policy's last (`maxReceiveCount` 3 or more): the last is kept in reserve, so that a crash, a
//! release at shutdown or a failed DLQ send on the planned last receive still ends with the
//! worker's own dead letter and its reason, not the redrive policy's, which has none.
//!
//! The queue's `MessageRetentionPeriod` bounds it all: SQS deletes a message that old, reason or
//! not, and with no redrive policy retries would otherwise never end. So a retry is never
//! planned past the retention less a margin (a tenth of it, at most an hour, for the receive to
//! happen in time); when not even a short one fits, the message is dead-lettered now.

use std::time::Duration;

use crate::config::QueueConfig;
use crate::ports::MAX_VISIBILITY_SECS;

/// What to do after a transient failure on some receive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NextTry {
    /// Make the message visible again after this delay.
    In(Duration),
    /// That was the last receive planned (see the module docs): dead-letter it now.
    Exhausted,
    /// The queue would delete the message, for its age, before another retry: dead-letter it
    /// now.
    Expiring,
}

/// The retry schedule of one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPlan {
    base_secs: u64,
    max_secs: u64,
    window_secs: u64,
    /// The redrive policy's maxReceiveCount; `None`: the queue has none.
    max_receives: Option<u32>,
    /// The queue's MessageRetentionPeriod; `None`: unknown, or messages never expire.
    retention: Option<Duration>,
    /// The longest delay SQS accepts here: a message's visibility may reach 12 h from its
    /// receive, and the lease may already have run `queue.max_lease_secs` of them.
    max_delay_secs: f64,
}

impl RetryPlan {
    pub fn new(config: &QueueConfig, max_receives: Option<u32>) -> RetryPlan {
        RetryPlan {
            base_secs: config.retry_base_secs.max(1),
            max_secs: config.retry_max_secs.max(1),
            window_secs: config.retry_window_secs,
            max_receives,
            retention: None,
            max_delay_secs: MAX_VISIBILITY_SECS
                .saturating_sub(config.max_lease_secs)
                .max(1) as f64,
        }
    }

    /// The plan for a queue that deletes messages `retention` after they were sent.
    pub fn with_retention(mut self, retention: Option<Duration>) -> RetryPlan {
        self.retention = retention;
        self
    }

    /// `queue.retry_max_secs`, within what SQS allows.
    pub fn longest_delay(&self) -> Duration {
        Duration::from_secs_f64((self.max_secs as f64).min(self.max_delay_secs))
    }

    pub fn retention(&self) -> Option<Duration> {
        self.retention
    }

    /// How old a message may get before the worker gives up on it: the retention less a tenth
    /// of it (at most an hour), time for the receive that dead-letters it to happen.
    pub fn give_up_age(&self) -> Option<Duration> {
        self.retention
            .map(|r| r.saturating_sub((r / 10).min(Duration::from_secs(3600))))
    }

    /// Whether the retry window, or endless retries, would outlast the retention: then the
    /// retention ends retries first (the start-up log says so).
    pub fn retention_binds(&self) -> bool {
        match (self.give_up_age(), self.max_receives) {
            (None, _) => false,
            (Some(_), None) => true,
            // With the jitter's 20 % (the jobs' own time comes on top).
            (Some(age), Some(_)) => self.schedule().iter().sum::<Duration>().mul_f64(1.2) > age,
        }
    }

    pub fn max_receives(&self) -> Option<u32> {
        self.max_receives
    }

    /// The receive on which a transient failure dead-letters: one before the policy's last,
    /// when there are at least 3 (see the module docs).
    fn last_planned(max: u32) -> u32 {
        if max >= 3 {
            max - 1
        } else {
            max
        }
    }

    /// The delay after a failure on receive `receive_count` (1 = the first) of a message `age`
    /// old (`None`: unknown), with jitter that only lengthens it (0–20 %), so the schedule
    /// never falls short of its window; shortened to end before the retention does.
    pub fn after_failure(&self, receive_count: u32, age: Option<Duration>) -> NextTry {
        let nominal = match self.max_receives {
            Some(max) if receive_count >= Self::last_planned(max) => return NextTry::Exhausted,
            Some(_) => self.nominal(receive_count),
            None => self.doubling(receive_count),
        };
        let jittered = nominal * (1.0 + fastrand::f64() / 5.0);
        let delay = Duration::from_secs_f64(jittered.clamp(1.0, self.max_delay_secs));
        let (Some(give_up), Some(age)) = (self.give_up_age(), age) else {
            return NextTry::In(delay);
        };
        let left = give_up.saturating_sub(age);
        if delay <= left {
            NextTry::In(delay)
        } else if left >= Duration::from_secs(self.base_secs) {
            // One more try, as late as the retention allows.
            NextTry::In(left)
        } else {
            NextTry::Expiring
        }
    }

    /// Delays after receives 1, 2, … before the last allowed one, without jitter (for the
    /// README and `resizeq config show`); the first eight when retries never end.
    pub fn schedule(&self) -> Vec<Duration> {
        let retries = self
            .max_receives
            .map_or(8, |max| Self::last_planned(max).saturating_sub(1));
        (1..=retries)
            .map(|receive| Duration::from_secs_f64(self.nominal(receive).max(1.0)))
            .collect()
    }

    /// One line that says the schedule.
    pub fn describe(&self) -> String {
        let mut line = self.describe_receives();
        if let (true, Some(retention), Some(age)) =
            (self.retention_binds(), self.retention, self.give_up_age())
        {
            line.push_str(&format!(
                "; but the queue deletes messages after {} (MessageRetentionPeriod), so one still \
                 failing {} after it was sent dead-letters as transient_exhausted then",
                short(retention),
                short(age)
            ));
        }
        line
    }

    fn describe_receives(&self) -> String {
        let delays = self.schedule();
        let shown: Vec<String> = delays.iter().take(12).map(|d| short(*d)).collect();
        let more = if delays.len() > 12 { ", …" } else { "" };
        let total: Duration = delays.iter().sum();
        match self.max_receives {
            Some(max) => format!(
                "maxReceiveCount {max}: retries after {}{more} ({} in all); receive {} \
                 dead-letters as transient_exhausted{}",
                shown.join(", "),
                short(total),
                Self::last_planned(max),
                if Self::last_planned(max) < max {
                    format!(" (receive {max} kept in reserve)")
                } else {
                    String::new()
                }
            ),
            None => format!(
                "no redrive policy: retries after {}{more}, then every {} until the queue's \
                 MessageRetentionPeriod",
                shown.join(", "),
                short(Duration::from_secs(self.max_secs))
            ),
        }
    }

    /// base × 2^(receive − 1), at most `max_secs`.
    fn doubling(&self, receive: u32) -> f64 {
        let exp = receive.saturating_sub(1).min(30);
        (self.base_secs as f64 * 2f64.powi(exp as i32)).min(self.max_secs as f64)
    }

    /// The doubling delay, stretched so that the delays before the last allowed receive add up
    /// to the window.
    fn nominal(&self, receive: u32) -> f64 {
        let Some(max) = self.max_receives else {
            return self.doubling(receive);
        };
        let sum: f64 = (1..Self::last_planned(max)).map(|r| self.doubling(r)).sum();
        let stretch = if sum > 0.0 && sum < self.window_secs as f64 {
            self.window_secs as f64 / sum
        } else {
            1.0
        };
        (self.doubling(receive) * stretch).min(self.max_delay_secs)
    }
}

/// Comment lines for `resizeq config show`: the retry schedule these settings give under a few
/// redrive policies (the worker reads its queue's at start-up and logs the schedule).
pub fn schedule_note(config: &QueueConfig) -> String {
    let mut note = String::from(
        "# Transient retries under the queue's RedrivePolicy (read at start-up; the worker logs \
         its schedule):\n",
    );
    for max_receives in [Some(3), Some(5), Some(10), None] {
        note.push_str(&format!(
            "#   {}\n",
            RetryPlan::new(config, max_receives).describe()
        ));
    }
    note
}

/// Plain exponential backoff with jitter: base × 2^(receives − 1), capped, times 0.5–1.0.
pub fn backoff(config: &QueueConfig, receive_count: u32) -> Duration {
    let exp = receive_count.saturating_sub(1).min(20);
    let secs = (config.retry_base_secs.saturating_mul(1 << exp)).min(config.retry_max_secs) as f64;
    Duration::from_secs_f64(secs * (0.5 + fastrand::f64() / 2.0)).max(Duration::from_secs(1))
}

/// `90s`, `4m`, `2h30m`: a delay as an operator reads it.
fn short(d: Duration) -> String {
    let secs = d.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (hours, minutes, seconds) {
        _ if secs < 120 => format!("{secs}s"),
        (h, _, _) if h >= 48 && h % 24 == 0 => format!("{}d", h / 24),
        (h, _, _) if h >= 48 => format!("{}d{}h", h / 24, h % 24),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(max_receives: Option<u32>) -> RetryPlan {
        RetryPlan::new(&QueueConfig::default(), max_receives)
    }

    #[test]
    fn retries_fill_the_window_within_the_redrive_policy() {
        let p = plan(Some(5));
        let delays = p.schedule();
        assert_eq!(
            delays.len(),
            3,
            "receives 1 to 3 are retried, 4 is the last planned, 5 the reserve"
        );
        let total: Duration = delays.iter().sum();
        assert!(
            total >= Duration::from_secs(30 * 60) - Duration::from_secs(1),
            "{total:?}"
        );
        assert!(delays.windows(2).all(|w| w[1] > w[0]), "{delays:?}");
        for receive in 1..4 {
            let NextTry::In(d) = p.after_failure(receive, None) else {
                panic!("receive {receive} is not the last");
            };
            let nominal = delays[receive as usize - 1].as_secs_f64();
            assert!(d.as_secs_f64() >= nominal - 1.0, "{d:?} < {nominal}");
            assert!(d.as_secs_f64() <= nominal * 1.2 + 1.0, "{d:?} > {nominal}");
        }
        assert_eq!(p.after_failure(4, None), NextTry::Exhausted);
        assert_eq!(p.after_failure(5, None), NextTry::Exhausted);
        assert_eq!(p.after_failure(9, None), NextTry::Exhausted);
        assert_eq!(plan(Some(1)).after_failure(1, None), NextTry::Exhausted);
        // Too few receives to keep one in reserve: the last is the last.
        assert!(matches!(
            plan(Some(2)).after_failure(1, None),
            NextTry::In(_)
        ));
        assert_eq!(plan(Some(2)).after_failure(2, None), NextTry::Exhausted);
    }

    #[test]
    fn a_window_the_doubling_already_fills_is_not_stretched() {
        let p = plan(Some(20));
        let delays = p.schedule();
        assert_eq!(delays[0], Duration::from_secs(5));
        assert_eq!(delays.len(), 18, "receives 1 to 18; 19 the last planned");
        assert_eq!(
            delays[17],
            Duration::from_secs(900),
            "capped at retry_max_secs"
        );
    }

    #[test]
    fn no_delay_exceeds_what_sqs_allows() {
        let config = QueueConfig {
            retry_window_secs: 10 * 24 * 3600,
            ..QueueConfig::default()
        };
        let p = RetryPlan::new(&config, Some(4));
        for receive in 1..3 {
            let NextTry::In(d) = p.after_failure(receive, None) else {
                panic!()
            };
            // 12 h from the receive, of which the lease may have used 15 min.
            assert!(d <= Duration::from_secs(MAX_VISIBILITY_SECS - 900), "{d:?}");
        }
    }

    #[test]
    fn without_a_redrive_policy_retries_double_up_to_the_cap() {
        let p = plan(None);
        assert_eq!(p.schedule()[0], Duration::from_secs(5));
        assert!(
            matches!(p.after_failure(1000, None), NextTry::In(d) if d <= Duration::from_secs(1080))
        );
        assert!(p
            .describe()
            .starts_with("no redrive policy: retries after 5s, 10s"));
    }

    #[test]
    fn delays_read_as_an_operator_writes_them() {
        for (secs, text) in [
            (90, "90s"),
            (120, "2m"),
            (975, "16m15s"),
            (3600, "1h"),
            (9000, "2h30m"),
            (4 * 86400, "4d"),
            (4 * 86400 - 3600, "3d23h"),
        ] {
            assert_eq!(short(Duration::from_secs(secs)), text);
        }
    }

    #[test]
    fn the_schedule_reads_as_delays() {
        assert_eq!(
            plan(Some(5)).describe(),
            "maxReceiveCount 5: retries after 4m17s, 8m34s, 17m8s (30m in all); receive 4 \
             dead-letters as transient_exhausted (receive 5 kept in reserve)"
        );
    }

    fn with_retention(max_receives: Option<u32>, retention_secs: u64) -> RetryPlan {
        plan(max_receives).with_retention(Some(Duration::from_secs(retention_secs)))
    }

    #[test]
    fn retries_end_before_the_queue_deletes_the_message() {
        // No redrive policy: retries would never end, but the queue deletes at 4 days.
        let p = with_retention(None, 4 * 86400);
        assert_eq!(p.give_up_age(), Some(Duration::from_secs(4 * 86400 - 3600)));
        let young = Some(Duration::from_secs(60));
        assert!(matches!(p.after_failure(3, young), NextTry::In(d) if d < Duration::from_secs(30)));
        // A delay that would pass the give-up age is shortened to end on it...
        let old = Some(Duration::from_secs(4 * 86400 - 3600 - 300));
        assert_eq!(
            p.after_failure(50, old),
            NextTry::In(Duration::from_secs(300))
        );
        // ...and once not even retry_base_secs is left, the message is dead-lettered now.
        let older = Some(Duration::from_secs(4 * 86400 - 3600 - 4));
        assert_eq!(p.after_failure(50, older), NextTry::Expiring);
        assert_eq!(
            p.after_failure(1, Some(Duration::from_secs(5 * 86400))),
            NextTry::Expiring
        );
        // An unknown age (no SentTimestamp) keeps the plain schedule.
        assert!(matches!(p.after_failure(50, None), NextTry::In(_)));
    }

    #[test]
    fn a_short_retention_cuts_a_long_window() {
        // Defaults (30 min window) against a 1 h retention: the margin is 6 min.
        let p = with_retention(Some(5), 3600);
        assert_eq!(p.give_up_age(), Some(Duration::from_secs(3240)));
        assert!(!p.retention_binds(), "30 min of delays fit in 54 min");
        let config = QueueConfig {
            retry_window_secs: 2 * 3600,
            ..QueueConfig::default()
        };
        let p = RetryPlan::new(&config, Some(5)).with_retention(Some(Duration::from_secs(3600)));
        assert!(p.retention_binds());
        // The delays are 17, 34 and 69 min (2 h): the first fits as planned...
        let NextTry::In(first) = p.after_failure(1, Some(Duration::from_secs(1))) else {
            panic!("the first retry fits");
        };
        assert!(first >= Duration::from_secs(17 * 60), "{first:?}");
        // ...the third, 30 min after the upload, is cut to the 24 min left.
        assert_eq!(
            p.after_failure(3, Some(Duration::from_secs(1800))),
            NextTry::In(Duration::from_secs(1440))
        );
        assert!(p.describe().ends_with(
            "; but the queue deletes messages after 1h (MessageRetentionPeriod), so one still \
             failing 54m after it was sent dead-letters as transient_exhausted then"
        ));
        // Without a known retention nothing changes.
        assert!(!plan(None).with_retention(None).retention_binds());
        assert!(!plan(Some(5)).describe().contains("MessageRetentionPeriod"));
    }
}
