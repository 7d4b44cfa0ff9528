//! Which sampled processes publish thread context: each address space is
//! looked at when first sampled, and again when a library is loaded into it
//! (its executable pages change: the SDK may come with a `dlopen`, as a
//! Python extension does), with a growing wait between looks. Found
//! processes go into `trace_processes`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};
use symbolizer::thread_context::{ContextFinder, ContextLocation};
use symbolizer::Symbolizer;

use super::entry::SlotEntry;
use crate::collect::key_was_missing;
use crate::logging::WarnOnce;
use crate::processes::ProcessTracker;
use crate::unwind::Seen;

/// A process whose libraries changed is looked at again after this long,
/// the wait doubling (up to the cap) each time nothing new was found: quick
/// for a process loading its SDK at start-up, cheap for a JIT that maps
/// code all the time.
const FIRST_WAIT: Duration = Duration::from_millis(100);
const MAX_WAIT: Duration = Duration::from_secs(8);

#[derive(Debug, Clone, Copy)]
enum State {
    Registered,
    /// Nothing published when looked at (with this many executable pages);
    /// not looked at again before `at + wait`.
    Absent {
        exec_vm: u64,
        at: Instant,
        wait: Duration,
    },
    /// Defined but unusable: reported once, not looked at again.
    Failed,
}

/// Counters for the summary and the agent's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceTrackerStats {
    /// Processes registered with the BPF reader.
    pub registered: u64,
    /// Processes whose thread context could not be located.
    pub failed: u64,
}

pub struct TraceContextTracker {
    slots: BpfHashMap<MapData, u32, SlotEntry>,
    finder: ContextFinder,
    states: HashMap<(u32, u64), State>,
    reported: WarnOnce,
    stats: TraceTrackerStats,
}

impl TraceContextTracker {
    pub fn new(map: Map) -> Result<Self, MapError> {
        Ok(Self {
            slots: BpfHashMap::try_from(map)?,
            finder: ContextFinder::default(),
            states: HashMap::new(),
            reported: WarnOnce::default(),
            stats: TraceTrackerStats::default(),
        })
    }

    /// Looks at every process in `seen` not looked at yet, or whose
    /// executable mappings changed since it was.
    pub fn follow(
        &mut self,
        seen: &[Seen],
        processes: &mut ProcessTracker,
        symbolizer: &mut Symbolizer,
    ) {
        for one in seen {
            if one.mm_id == 0 {
                continue;
            }
            let key = (one.pid, one.mm_id);
            let wait = match self.states.get(&key) {
                None => FIRST_WAIT,
                Some(State::Absent { exec_vm, at, wait })
                    if one.exec_vm != 0 && *exec_vm != one.exec_vm && at.elapsed() >= *wait =>
                {
                    // A library came or went: the snapshot is stale.
                    processes.refresh(one.pid, one.mm_id, symbolizer);
                    (*wait * 2).min(MAX_WAIT)
                }
                Some(_) => continue,
            };
            let state = self
                .look_at(one.pid, one.mm_id, processes)
                .unwrap_or(State::Absent {
                    exec_vm: one.exec_vm,
                    at: Instant::now(),
                    wait,
                });
            self.states.insert(key, state);
        }
    }

    /// Registers the process if it publishes a context; None if it does
    /// not (yet).
    fn look_at(&mut self, pid: u32, mm_id: u64, processes: &ProcessTracker) -> Option<State> {
        let maps = processes.maps(pid, mm_id)?;
        match self.finder.locate(maps) {
            Ok(None) => None,
            Ok(Some(location)) => Some(self.register(pid, mm_id, &location)),
            Err(e) if e.is_transient() => None,
            Err(e) => {
                self.reported
                    .warn(format!("trace context of pid {pid} is not read: {e}"));
                self.stats.failed += 1;
                Some(State::Failed)
            }
        }
    }

    fn register(&mut self, pid: u32, mm_id: u64, location: &ContextLocation) -> State {
        match self.slots.insert(pid, SlotEntry::from(location.slot), 0) {
            Ok(()) => {
                tracing::debug!(
                    "pid {pid} (mm {mm_id:#x}): trace context in {} ({}, {:?})",
                    location.module.display(),
                    location.access,
                    location.slot
                );
                // A pid counts once, whichever address space registered it.
                if !self
                    .states
                    .iter()
                    .any(|(&(p, _), s)| p == pid && matches!(s, State::Registered))
                {
                    self.stats.registered += 1;
                }
                State::Registered
            }
            Err(e) => {
                self.reported.warn(format!(
                    "cannot register pid {pid} with the trace context reader: {e}"
                ));
                self.stats.failed += 1;
                State::Failed
            }
        }
    }

    /// Forgets processes that exited.
    pub fn reap(&mut self, alive: impl Fn(u32) -> bool) {
        let mut dead: Vec<u32> = Vec::new();
        self.states.retain(|&(pid, _), state| {
            let keep = alive(pid);
            if !keep && matches!(state, State::Registered) {
                dead.push(pid);
            }
            keep
        });
        for pid in dead {
            match self.slots.remove(&pid) {
                Err(e) if !key_was_missing(&e) => {
                    tracing::debug!("pid {pid}: cannot remove from trace_processes: {e}")
                }
                _ => {}
            }
        }
    }

    pub fn stats(&self) -> TraceTrackerStats {
        self.stats
    }
}
