//! The end-of-capture summary printed to the user.

use std::collections::HashMap;

use crate::profile::Profile;

/// Leaf functions by share of samples, most first.
pub fn top_functions(profile: &Profile, n: usize) -> Vec<(String, u64)> {
    let mut selfs: HashMap<&str, u64> = HashMap::new();
    for sample in &profile.samples {
        if let Some(frame) = sample
            .locations
            .first()
            .and_then(|&l| profile.locations[l].frames.first())
        {
            *selfs.entry(frame.name.as_str()).or_insert(0) += profile.weight(sample);
        }
    }
    let mut top: Vec<(String, u64)> = selfs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(n);
    top
}

pub fn print_top(profile: &Profile, n: usize) {
    let total: u64 = profile
        .samples
        .iter()
        .map(|s| profile.weight(s))
        .sum::<u64>()
        .max(1);
    eprintln!("Top functions (self {}):", profile.weight_unit());
    for (name, count) in top_functions(profile, n) {
        let pct = count as f64 * 100.0 / total as f64;
        let name: String = name.chars().take(100).collect();
        eprintln!("  {pct:5.1}%  {count:>7}  {name}");
    }
}
