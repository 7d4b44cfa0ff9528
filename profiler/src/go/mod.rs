//! Go: the pprof labels of the goroutine each sample caught, read without
//! touching the process. The BPF sampler reads, per sample, the address of
//! the running goroutine's label set (`runtime.g.labels` of the thread's
//! `m.curg`, found through offsets that depend on the Go version); user
//! space reads the set at that address from the process's memory. Label
//! sets are immutable once `runtime/pprof` made them, so a set read once
//! is remembered by address for the window. See docs/trace-context.md.

mod detect;
mod entry;
mod labels;
mod tracker;

pub use detect::{detect, GoDetectError, GoRuntime, LabelLayout};
pub use entry::GoProcessEntry;
pub use labels::{read_labels, LabelError, LabelSet};
pub use tracker::{GoTracker, GoTrackerStats};
