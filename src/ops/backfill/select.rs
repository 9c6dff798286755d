//! Which listed objects a backfill takes: `--since`, `--suffix`, and the worker's own filters
//! (what the worker would ignore is not worth a message).

use std::time::SystemTime;

use crate::config::Filters;

#[derive(Debug, Clone)]
pub struct Selection {
    pub since: Option<SystemTime>,
    /// Lower-cased.
    pub suffixes: Vec<String>,
    pub filters: Filters,
}

impl Selection {
    pub fn new(since: Option<SystemTime>, suffixes: &[String], filters: Filters) -> Selection {
        Selection {
            since,
            suffixes: suffixes
                .iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            filters,
        }
    }

    pub fn accepts(&self, key: &str, last_modified: Option<SystemTime>) -> bool {
        // A "folder" placeholder, not an image.
        if key.ends_with('/') {
            return false;
        }
        if let Some(since) = self.since {
            if last_modified.is_none_or(|t| t < since) {
                return false;
            }
        }
        let lower = key.to_ascii_lowercase();
        (self.suffixes.is_empty() || self.suffixes.iter().any(|s| lower.ends_with(s)))
            && self.filters.accepts(key)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ops::parse_since;

    #[test]
    fn selection_applies_since_suffixes_and_the_worker_filters() {
        let may_first = parse_since("2024-05-01").unwrap();
        let second = Duration::from_secs(1);
        let filters = Filters {
            exclude_prefixes: vec!["tmp/".into()],
            ..Filters::default()
        };
        let s = Selection::new(Some(may_first), &[".jpg".into(), " .PNG".into()], filters);
        assert!(s.accepts("a/b.JPG", Some(may_first)));
        assert!(s.accepts("a/b.png", Some(may_first + 10 * second)));
        assert!(!s.accepts("a/b.jpg", Some(may_first - second)), "too old");
        assert!(
            !s.accepts("a/b.jpg", None),
            "no date, no proof it is recent"
        );
        assert!(!s.accepts("a/b.gif", Some(may_first)), "suffix");
        assert!(!s.accepts("tmp/b.jpg", Some(may_first)), "worker filter");
        assert!(!s.accepts("a/", Some(may_first)), "folder marker");

        let all = Selection::new(None, &[], Filters::default());
        assert!(all.accepts("anything", None));
    }
}
