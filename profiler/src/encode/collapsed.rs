//! Collapsed stacks (`comm;root;...;leaf COUNT`), the input of flamegraph.pl
//! and inferno.

use std::collections::BTreeMap;

use crate::profile::Profile;

/// One line per distinct stack, merged across threads of the same command,
/// sorted for stable output. Time a thread waited for the GIL ends in a
/// `[gil wait]` leaf. Counts are [`Profile::weight`]: samples
/// on-CPU, microseconds off-CPU.
pub fn collapsed_lines(profile: &Profile) -> Vec<String> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for sample in &profile.samples {
        let mut line = sanitize(&sample.comm);
        for name in profile.stack_names(sample) {
            line.push(';');
            line.push_str(&sanitize(name));
        }
        if sample.gil_wait {
            // Collapsed stacks have no labels: the wait is its leaf.
            line.push_str(";[gil wait]");
        }
        *merged.entry(line).or_insert(0) += profile.weight(sample);
    }
    merged
        .into_iter()
        .map(|(stack, n)| format!("{stack} {n}"))
        .collect()
}

/// `;` separates frames and the last space separates the count.
fn sanitize(name: &str) -> String {
    let name = if name.is_empty() { "[unknown]" } else { name };
    name.replace(';', ":").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_first_with_inlined_frames() {
        let profile = crate::profile::fixtures::small_profile();
        assert_eq!(
            collapsed_lines(&profile),
            vec!["prog;main;leaf;leaf_inlined 3"]
        );
    }
}
