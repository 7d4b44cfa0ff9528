//! Keeps the BPF unwinder's tables in step with the processes being sampled:
//! tables for every process at start, for a process the first time it is
//! seen (or after it execs), again when its stacks leave the mappings the
//! unwinder knows (a library dlopen()ed since), and never for the dead.

use std::time::Duration;

use symbolizer::Symbolizer;

use super::store::TableStore;
use super::tables::UnwindTables;
use crate::collect::{Sample, ThreadSeen};
use crate::processes::ProcessTracker;

/// How long a capture's start waits for the tables [`preload`] asked for
/// (each is built once; a 1 GiB library takes about 1 s).
pub const PRELOAD_WAIT: Duration = Duration::from_secs(5);

/// Loads the tables of processes that run already, so that their first
/// samples are unwound with tables too. Returns how many were loaded.
pub fn preload<S: TableStore>(
    tables: &mut UnwindTables<S>,
    symbolizer: &mut Symbolizer,
    pids: impl IntoIterator<Item = u32>,
) -> usize {
    let mut loaded = 0;
    for pid in pids {
        // Gone already, or a kernel thread (no executable mappings).
        if let Ok(maps) = symbolizer.snapshot_process(pid) {
            tables.add_process(pid, 0, &maps);
            loaded += 1;
        }
    }
    loaded
}

/// Every process on the host, by its /proc directory.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// A process as a drain saw it (one per process and drain is enough).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub pid: u32,
    /// Address space identity (0: a kernel thread).
    pub mm_id: u64,
    /// A stack left every mapping the unwinder knew.
    pub unmapped: bool,
    /// Pages of executable mappings when sampled (0: not known).
    pub exec_vm: u64,
}

impl From<&Sample> for Seen {
    fn from(sample: &Sample) -> Self {
        Self {
            pid: sample.pid,
            mm_id: sample.mm_id,
            unmapped: sample.user_unmapped,
            exec_vm: sample.exec_vm,
        }
    }
}

impl From<&ThreadSeen> for Seen {
    fn from(thread: &ThreadSeen) -> Self {
        Self {
            pid: thread.pid,
            mm_id: thread.mm_id,
            unmapped: false,
            exec_vm: 0,
        }
    }
}

/// Brings the tables of every process in `seen` up to date (after
/// `processes` has seen them).
pub fn follow<S: TableStore>(
    tables: &mut UnwindTables<S>,
    processes: &mut ProcessTracker,
    symbolizer: &mut Symbolizer,
    mut seen: Vec<Seen>,
) {
    tables.poll();
    seen.sort_unstable();
    seen.dedup();
    let requested = tables.requests();
    for one in seen {
        follow_one(tables, processes, symbolizer, one);
    }
    // Most libraries build in a few milliseconds: give the ones just asked
    // for a moment, so a new process is walked with tables from the next
    // sample on; larger ones finish in the background.
    if tables.requests() > requested {
        tables.finish_pending(NEW_TABLES_WAIT);
    }
}

/// How long a drain waits for tables it asked for (the ring buffer holds
/// four drain intervals, 400 ms).
pub const NEW_TABLES_WAIT: Duration = Duration::from_millis(50);

fn follow_one<S: TableStore>(
    tables: &mut UnwindTables<S>,
    processes: &mut ProcessTracker,
    symbolizer: &mut Symbolizer,
    seen: Seen,
) {
    let Seen {
        pid,
        mm_id,
        unmapped,
        ..
    } = seen;
    if mm_id == 0 {
        return; // a kernel thread
    }
    let known = tables.knows(pid, mm_id);
    if known && !(unmapped && tables.refresh_due(pid)) {
        return;
    }
    if known && !processes.refresh(pid, mm_id, symbolizer) {
        return; // exited meanwhile
    }
    if let Some(maps) = processes.maps(pid, mm_id) {
        tables.add_process(pid, mm_id, maps);
    } else if !known {
        // No snapshot: it exited before its maps were read. BPF recorded
        // its executable mappings (at exec and mmap): name its frames from
        // those whose files are open here.
        let recorded = tables.take_recorded(pid, mm_id);
        if let Some(maps) = symbolizer.process_from_mappings(pid, &recorded) {
            processes.adopt(pid, mm_id, maps);
        }
        // Do not try again for every sample of it still buffered.
        tables.mark_gone(pid, mm_id);
    }
}
