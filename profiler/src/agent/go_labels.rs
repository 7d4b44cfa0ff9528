//! Which goroutine labels go to Pyroscope. Pyroscope makes a series of
//! every string label of a sample, so a label with a value per request or
//! per user would make series without bound: only the keys the config
//! allows go, and at most so many distinct sets of them per window (the
//! rest keep only `span_id` and are counted). `span_id` always goes:
//! Pyroscope keeps it per sample for span profiles, not as a series.

use std::collections::HashSet;
use std::sync::Arc;

use crate::go::LabelSet;

pub struct LabelFilter {
    allowed: HashSet<String>,
    max_sets: usize,
    seen: HashSet<LabelSet>,
    dropped: u64,
}

impl LabelFilter {
    pub fn new(allowed: &[String], max_sets: usize) -> Self {
        Self {
            allowed: allowed.iter().cloned().collect(),
            max_sets,
            seen: HashSet::new(),
            dropped: 0,
        }
    }

    /// The labels of `set` that may go.
    pub fn apply(&mut self, set: Option<LabelSet>) -> Option<LabelSet> {
        let set = set?;
        let span = set.iter().find(|(k, _)| &**k == "span_id").cloned();
        let series: LabelSet = set
            .iter()
            .filter(|(k, _)| self.allowed.contains(&**k))
            .cloned()
            .collect();
        let mut kept: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        if !series.is_empty() {
            if self.seen.contains(&series) || self.seen.len() < self.max_sets {
                self.seen.insert(series.clone());
                kept.extend(series.iter().cloned());
            } else {
                self.dropped += 1;
            }
        }
        kept.extend(span);
        kept.sort();
        (!kept.is_empty()).then(|| kept.into())
    }

    /// A new window: its own sets.
    pub fn new_window(&mut self) {
        self.seen.clear();
    }

    /// Samples whose allowed labels were dropped past the cap, so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> Option<LabelSet> {
        Some(pairs.iter().map(|&(k, v)| (k.into(), v.into())).collect())
    }

    #[test]
    fn keeps_allowed_keys_and_span_ids_up_to_the_cap() {
        let mut filter = LabelFilter::new(&["endpoint".to_owned()], 2);
        let kept = filter.apply(set(&[
            ("endpoint", "/a"),
            ("user", "u1"),
            ("span_id", "ab"),
        ]));
        assert_eq!(kept, set(&[("endpoint", "/a"), ("span_id", "ab")]));
        assert_eq!(filter.apply(set(&[("user", "u2")])), None);
        assert!(filter.apply(set(&[("endpoint", "/b")])).is_some());
        // A third set is past the cap: only span_id stays.
        assert_eq!(
            filter.apply(set(&[("endpoint", "/c"), ("span_id", "cd")])),
            set(&[("span_id", "cd")])
        );
        assert_eq!(filter.dropped(), 1);
        // Sets already seen still go; a new window starts over.
        assert!(filter.apply(set(&[("endpoint", "/a")])).is_some());
        filter.new_window();
        assert!(filter.apply(set(&[("endpoint", "/c")])).is_some());
    }
}
