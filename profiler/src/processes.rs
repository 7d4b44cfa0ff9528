//! Remembers the mappings of every sampled process while it is alive, so that
//! its stacks can be symbolized after it exits.

use std::collections::HashMap;

use symbolizer::{ProcessMaps, Symbolizer};

use crate::collect::Sample;

/// Mappings per (pid, address space). A process that execs gets a new
/// address space and so a new snapshot.
#[derive(Debug, Default)]
pub struct ProcessTracker {
    snapshots: HashMap<(u32, u64), Option<ProcessMaps>>,
    /// Processes that were gone before their maps could be read.
    pub missed: u64,
}

impl ProcessTracker {
    /// Takes a snapshot the first time a process (address space) is seen.
    pub fn observe(&mut self, sample: &Sample, symbolizer: &mut Symbolizer) {
        if sample.mm_id == 0 || sample.user.is_empty() {
            return; // kernel thread
        }
        self.snapshots
            .entry((sample.pid, sample.mm_id))
            .or_insert_with(|| match symbolizer.snapshot_process(sample.pid) {
                Ok(maps) => Some(maps),
                Err(e) => {
                    log::debug!("no mappings for pid {}: {e}", sample.pid);
                    self.missed += 1;
                    None
                }
            });
    }

    pub fn maps(&self, pid: u32, mm_id: u64) -> Option<&ProcessMaps> {
        self.snapshots.get(&(pid, mm_id))?.as_ref()
    }

    /// Replaces a snapshot with a fresh one if the process still lives (used
    /// when addresses fell outside every known mapping: a library loaded later).
    pub fn refresh(&mut self, pid: u32, mm_id: u64, symbolizer: &mut Symbolizer) -> bool {
        match symbolizer.snapshot_process(pid) {
            Ok(maps) => {
                self.snapshots.insert((pid, mm_id), Some(maps));
                true
            }
            Err(_) => false,
        }
    }
}
