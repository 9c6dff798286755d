//! What a backfill did, as counts and the key it got to; one summary line at the end.

use std::time::Duration;

/// Where matched objects went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Queue,
    Direct,
    DryRun,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BackfillReport {
    pub listed: u64,
    pub matched: u64,
    pub enqueued: u64,
    pub processed: u64,
    pub skipped: u64,
    pub superseded: u64,
    pub ignored: u64,
    pub failed: u64,
    /// The last key of the last page finished: `--start-after` resumes there.
    pub last_key: Option<String>,
    pub interrupted: bool,
}

impl BackfillReport {
    pub fn summary(&self, mode: Mode, target: &str, elapsed: Duration) -> String {
        let counts = match mode {
            Mode::Queue => format!("enqueued={}", self.enqueued),
            Mode::Direct => format!(
                "processed={} skipped={} superseded={} ignored={}",
                self.processed, self.skipped, self.superseded, self.ignored
            ),
            Mode::DryRun => format!("would_backfill={}", self.matched),
        };
        let mode = match mode {
            Mode::Queue => "queue",
            Mode::Direct => "direct",
            Mode::DryRun => "dry-run",
        };
        let mut line = format!(
            "backfill {target}: mode={mode} listed={} matched={} {counts} failed={} elapsed={:.1}s",
            self.listed,
            self.matched,
            self.failed,
            elapsed.as_secs_f64()
        );
        if let Some(key) = &self.last_key {
            line.push_str(&format!(" last_key={key}"));
        }
        if self.interrupted {
            line.push_str(" interrupted=true");
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_count() {
        let report = BackfillReport {
            listed: 3,
            matched: 2,
            enqueued: 2,
            last_key: Some("p/c.jpg".into()),
            ..BackfillReport::default()
        };
        let line = report.summary(Mode::Queue, "s3://b/p/", Duration::from_millis(1500));
        assert_eq!(
            line,
            "backfill s3://b/p/: mode=queue listed=3 matched=2 enqueued=2 failed=0 elapsed=1.5s \
             last_key=p/c.jpg"
        );
        let line = report.summary(Mode::Direct, "s3://b", Duration::ZERO);
        assert!(
            line.contains("processed=0 skipped=0 superseded=0 ignored=0"),
            "{line}"
        );
    }
}
