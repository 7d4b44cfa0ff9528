//! Remembers the mappings of every sampled process while it is alive, so that
//! its stacks can be symbolized after it exits.

use std::collections::HashMap;

use symbolizer::{ProcessMaps, Symbolizer};

/// Mappings per (pid, address space). A process that execs gets a new
/// address space and so a new snapshot.
#[derive(Debug, Default)]
pub struct ProcessTracker {
    snapshots: HashMap<(u32, u64), Option<ProcessMaps>>,
    /// Processes that were gone before their maps could be read, and
    /// whose mappings were not recorded otherwise.
    pub missed: u64,
    /// Processes gone before their maps could be read, named from the
    /// executable mappings recorded in BPF (at exec and mmap).
    pub named_after_exit: u64,
}

impl ProcessTracker {
    /// Takes a snapshot the first time a process (address space) is seen.
    /// `mm_id` 0 is a kernel thread: nothing to snapshot.
    pub fn observe(&mut self, pid: u32, mm_id: u64, symbolizer: &mut Symbolizer) {
        if mm_id == 0 {
            return;
        }
        self.snapshots.entry((pid, mm_id)).or_insert_with(|| {
            match symbolizer.snapshot_process(pid) {
                Ok(maps) => Some(maps),
                Err(e) => {
                    tracing::debug!("no mappings for pid {pid}: {e}");
                    self.missed += 1;
                    None
                }
            }
        });
    }

    /// Gives a process whose maps could not be read the mappings recorded
    /// for it otherwise.
    pub fn adopt(&mut self, pid: u32, mm_id: u64, maps: ProcessMaps) {
        let slot = self.snapshots.entry((pid, mm_id)).or_insert(None);
        if slot.is_none() {
            self.missed = self.missed.saturating_sub(1);
            self.named_after_exit += 1;
            *slot = Some(maps);
        }
    }

    pub fn maps(&self, pid: u32, mm_id: u64) -> Option<&ProcessMaps> {
        self.snapshots.get(&(pid, mm_id))?.as_ref()
    }

    /// Drops the snapshot of a process no longer sampled (long-running use).
    pub fn forget(&mut self, pid: u32, mm_id: u64) {
        self.snapshots.remove(&(pid, mm_id));
    }

    /// Processes with a snapshot slot.
    pub fn len(&self) -> usize {
        self.snapshots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
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

/// Whether a process still runs: its /proc entry exists and it is not a
/// zombie (exited, waiting for its parent to reap it).
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the comm may contain spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}
