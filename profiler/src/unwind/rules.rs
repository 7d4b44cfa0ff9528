//! The host-wide rule array: every distinct unwind rule once, so that a row
//! names its rule with 16 bits. A whole PyTorch host has a few thousand
//! distinct rules; past [`MAX_RULES`] new ones become "unsupported" (the walk
//! stops there with `[unwind error]`) and are counted. Rules are never
//! removed: the array is small (512 KiB) and bounded.

use std::collections::HashMap;

use super::layout::{Rule, MAX_RULES};

#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    index: HashMap<Rule, u16>,
    /// Rules already in the BPF array (`rules[..stored]`).
    stored: usize,
    /// Rules that did not fit.
    pub overflow: u64,
}

/// Index of the unsupported rule (index 0 is the invalid rule).
const UNSUPPORTED: u16 = 1;

impl RuleSet {
    pub fn new() -> Self {
        let mut set = Self {
            rules: Vec::new(),
            index: HashMap::new(),
            stored: 0,
            overflow: 0,
        };
        set.intern(Rule::INVALID);
        set.intern(Rule::UNSUPPORTED);
        set
    }

    /// The index of `rule`, added if new.
    pub fn intern(&mut self, rule: Rule) -> u16 {
        if let Some(&index) = self.index.get(&rule) {
            return index;
        }
        if self.rules.len() >= MAX_RULES {
            self.overflow += 1;
            return UNSUPPORTED;
        }
        let index = self.rules.len() as u16;
        self.rules.push(rule);
        self.index.insert(rule, index);
        index
    }

    /// Host-wide indexes for a table's own rule list.
    pub fn renumber(&mut self, local: &[Rule]) -> Vec<u16> {
        local.iter().map(|&rule| self.intern(rule)).collect()
    }

    /// Rules added since the last call, with the index of the first.
    pub fn unstored(&mut self) -> (u32, &[Rule]) {
        let first = self.stored;
        self.stored = self.rules.len();
        (first as u32, &self.rules[first..])
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_shared_and_stored_once() {
        let mut set = RuleSet::new();
        assert_eq!(set.intern(Rule::INVALID), 0);
        let a = set.renumber(&[Rule::INVALID, Rule::rsp(8), Rule::rsp(16)]);
        let b = set.renumber(&[Rule::rsp(16), Rule::rsp(8)]);
        assert_eq!(a, vec![0, 2, 3]);
        assert_eq!(b, vec![3, 2]);
        let (first, new) = set.unstored();
        assert_eq!((first, new.len()), (0, 4));
        set.intern(Rule::rsp(24));
        let (first, new) = set.unstored();
        assert_eq!((first, new), (4, &[Rule::rsp(24)][..]));
        assert_eq!(set.unstored().1.len(), 0);
    }

    #[test]
    fn a_full_set_answers_unsupported_and_counts() {
        let mut set = RuleSet::new();
        for offset in 0..(MAX_RULES as i32) {
            set.intern(Rule::rsp(8 + offset));
        }
        assert_eq!(set.len(), MAX_RULES);
        assert_eq!(set.intern(Rule::rsp(-8)), UNSUPPORTED);
        assert!(set.overflow >= 1);
    }
}
