//! Which sampled processes run CPython: each is looked at once per address
//! space (again after an exec), registered with the BPF walker when it is,
//! and forgotten when it exits. A process that is still starting is looked
//! at again, less and less often, for a few minutes; one that cannot be
//! walked is reported once.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use symbolizer::python::{detect, PythonFrame, PythonResolver, PythonStats};
use symbolizer::{ProcessMaps, RegionKind};

use super::layout::ProcessEntry;
use super::store::PythonStore;
use crate::collect::{OffCpuPython, Sample};
use crate::logging::WarnOnce;
use crate::processes::ProcessTracker;
use crate::unwind::Seen;

/// Whether any executable module's file name says python (what
/// [`detect`] looks for).
fn maps_python(maps: &ProcessMaps) -> bool {
    maps.regions.iter().any(|r| match &r.kind {
        RegionKind::Module(m) => m
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains("python")),
        _ => false,
    })
}

/// How often, and how many times, a starting interpreter is looked at again:
/// after 200 ms, then twice as long each time up to 6.4 s; about four
/// minutes in all before a layout that never fits is reported.
const RETRY_EVERY: Duration = Duration::from_millis(200);
const RETRY_MAX_DOUBLINGS: u32 = 5;
const RETRIES: u32 = 40;

/// How often, at most, a process's thread names are read again (when a
/// thread without one shows up).
const NAMES_REFRESH: Duration = Duration::from_secs(1);

/// Python thread names of one process, as last read.
struct ThreadNames {
    by_tid: HashMap<u32, String>,
    /// Threads that had no name right after a read (native threads: not in
    /// `threading`): they do not cause another read.
    unnamed: HashSet<u32>,
    read_at: Instant,
    /// Reading failed: not tried again for this process.
    failed: bool,
}

/// Off-CPU Python stacks kept named (the BPF map holds 4096 at once; a
/// window's worth of stacks that left it stays here until the window ends).
const OFF_CPU_NAMED: usize = 16_384;

/// The wait before the retry that leaves `left` retries.
fn retry_delay(left: u32) -> Duration {
    let done = RETRIES.saturating_sub(left);
    RETRY_EVERY * 2u32.pow(done.min(RETRY_MAX_DOUBLINGS))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotPython,
    Registered,
    /// Not ready yet: look again after `at`.
    Retry {
        at: Instant,
        left: u32,
    },
    /// Unsupported or inconsistent: reported, not walked.
    Failed,
}

/// Counters for the summary and the agent's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Python processes registered with the walker.
    pub registered: u64,
    /// Python processes that could not be walked (unsupported, unexpected layout).
    pub failed: u64,
    pub resolver: PythonStats,
}

/// Where a Python process's interpreter is, for merging its stacks.
#[derive(Debug, Clone, Default)]
pub struct Interpreter {
    /// The module, as the process sees its path.
    pub module: PathBuf,
    /// The eval loop's code, as addresses in the process.
    pub eval_code: Vec<Range<u64>>,
}

pub struct PythonTracker<S: PythonStore> {
    store: S,
    resolver: PythonResolver,
    states: HashMap<(u32, u64), State>,
    /// Interpreter module of each registered pid: its frames are merged.
    modules: HashMap<u32, Interpreter>,
    /// Off-CPU Python stacks named when the BPF side first stored them,
    /// by hash (their blocked time is read at the end of the window, when
    /// the process may be gone): (pid, frames).
    off_cpu: HashMap<u64, (u32, Box<[PythonFrame]>)>,
    /// `threading` names by pid.
    thread_names: HashMap<u32, ThreadNames>,
    /// Messages already logged (each failure kind is reported once).
    reported: WarnOnce,
    registered: u64,
    failed: u64,
}

impl<S: PythonStore> PythonTracker<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            resolver: PythonResolver::default(),
            states: HashMap::new(),
            modules: HashMap::new(),
            off_cpu: HashMap::new(),
            thread_names: HashMap::new(),
            reported: WarnOnce::default(),
            registered: 0,
            failed: 0,
        }
    }

    /// Looks at processes that run already (their address space is not
    /// known yet: recorded under mm_id 0 and adopted by the first sample).
    pub fn preload(&mut self, pids: impl IntoIterator<Item = u32>) {
        for pid in pids {
            self.look_at(pid, 0);
        }
    }

    /// Looks at every process in `seen` not looked at yet (or due a retry).
    /// Processes whose snapshot in `processes` maps nothing named like
    /// python are settled from it, without reading their maps again.
    pub fn follow(&mut self, seen: &[Seen], processes: &ProcessTracker) {
        let now = Instant::now();
        for one in seen {
            if one.mm_id == 0 {
                continue;
            }
            let key = (one.pid, one.mm_id);
            match self.states.get(&key) {
                None => {
                    if let Some(state) = self.states.remove(&(one.pid, 0)) {
                        // Preloaded before its address space was known.
                        self.states.insert(key, state);
                        continue;
                    }
                    // A new process, or this pid after an exec.
                    if self.modules.contains_key(&one.pid) {
                        self.forget(one.pid);
                    }
                    if processes
                        .maps(one.pid, one.mm_id)
                        .is_some_and(|maps| !maps_python(maps))
                    {
                        self.states.insert(key, State::NotPython);
                        continue;
                    }
                    self.look_at(one.pid, one.mm_id);
                }
                Some(State::Retry { at, .. }) if *at <= now => self.look_at(one.pid, one.mm_id),
                Some(_) => {}
            }
        }
    }

    fn look_at(&mut self, pid: u32, mm_id: u64) {
        let left = match self.states.get(&(pid, mm_id)) {
            Some(State::Retry { left, .. }) => *left,
            _ => RETRIES,
        };
        let state = match detect(pid) {
            Ok(None) => State::NotPython,
            Ok(Some(process)) => match self.register(&process) {
                Ok(()) => {
                    tracing::debug!(
                        "pid {pid}: Python {} ({})",
                        process.version,
                        process.module.display()
                    );
                    self.modules.insert(
                        pid,
                        Interpreter {
                            module: process.module.clone(),
                            eval_code: process.eval_code.clone(),
                        },
                    );
                    if let Err(e) = self.resolver.add(process) {
                        tracing::debug!("pid {pid}: cannot open its memory: {e}");
                    }
                    self.registered += 1;
                    State::Registered
                }
                Err(message) => {
                    self.reported.warn(message);
                    self.failed += 1;
                    State::Failed
                }
            },
            // Not ready, or not consistent yet: an interpreter caught while
            // it starts has its runtime but not yet its threads.
            Err(e) if (e.is_transient() || e.may_settle()) && left > 0 => State::Retry {
                at: Instant::now() + retry_delay(left),
                left: left - 1,
            },
            Err(e) => {
                if !matches!(e, symbolizer::python::DetectError::Proc { .. }) {
                    self.reported
                        .warn(format!("Python stacks of pid {pid} are not walked: {e}"));
                    self.failed += 1;
                }
                State::Failed
            }
        };
        self.states.insert((pid, mm_id), state);
    }

    fn register(&mut self, process: &symbolizer::python::PythonProcess) -> Result<(), String> {
        let entry = ProcessEntry::try_from(process)
            .map_err(|e| format!("Python {}: {e}", process.version))?;
        self.store
            .set(process.pid, &entry)
            .map_err(|e| format!("cannot register Python processes with the BPF walker: {e}"))
    }

    /// The sample's Python frames, named (empty for other processes).
    pub fn resolve(&mut self, sample: &Sample) -> Box<[PythonFrame]> {
        if sample.python.is_empty() {
            return Box::default();
        }
        self.resolver
            .resolve(sample.pid, &sample.python)
            .into_boxed_slice()
    }

    /// Names an off-CPU Python stack the BPF side stored for the first time.
    pub fn learn_off_cpu(&mut self, stack: &OffCpuPython) {
        if self.off_cpu.len() >= OFF_CPU_NAMED || self.off_cpu.contains_key(&stack.hash) {
            return;
        }
        let frames = self.resolver.resolve(stack.pid, &stack.frames);
        self.off_cpu
            .insert(stack.hash, (stack.pid, frames.into_boxed_slice()));
    }

    /// The names of an off-CPU Python stack: as learned, or read now.
    pub fn resolve_off_cpu(&mut self, stack: &OffCpuPython) -> Box<[PythonFrame]> {
        match self.off_cpu.get(&stack.hash) {
            Some((_, frames)) => frames.clone(),
            None => self
                .resolver
                .resolve(stack.pid, &stack.frames)
                .into_boxed_slice(),
        }
    }

    /// The name `threading` gave thread `tid` of Python process `pid`, if
    /// any. Read from the process when a thread it has no name for shows up
    /// (at most once a second per process).
    pub fn thread_name(&mut self, pid: u32, tid: u32) -> Option<&str> {
        if !self.modules.contains_key(&pid) {
            return None;
        }
        let due = self.thread_names.get(&pid).is_none_or(|names| {
            !names.failed
                && !names.by_tid.contains_key(&tid)
                && !names.unnamed.contains(&tid)
                && names.read_at.elapsed() >= NAMES_REFRESH
        });
        if due {
            let names = match self.resolver.thread_names(pid)? {
                Ok(by_tid) => {
                    // Native threads stay known as such.
                    let mut unnamed = self
                        .thread_names
                        .remove(&pid)
                        .map(|old| old.unnamed)
                        .unwrap_or_default();
                    unnamed.retain(|tid| !by_tid.contains_key(tid));
                    ThreadNames {
                        by_tid,
                        unnamed,
                        read_at: Instant::now(),
                        failed: false,
                    }
                }
                Err(e) => {
                    tracing::debug!("pid {pid}: Python thread names not read: {e}");
                    ThreadNames {
                        by_tid: HashMap::new(),
                        unnamed: HashSet::new(),
                        read_at: Instant::now(),
                        failed: true,
                    }
                }
            };
            self.thread_names.insert(pid, names);
        }
        let names = self.thread_names.get_mut(&pid)?;
        if due && !names.by_tid.contains_key(&tid) {
            // Read just now and not there: a native thread.
            names.unnamed.insert(tid);
        }
        names.by_tid.get(&tid).map(String::as_str)
    }

    /// The interpreter of every process registered so far, by pid.
    pub fn modules(&self) -> &HashMap<u32, Interpreter> {
        &self.modules
    }

    /// Forgets processes that exited.
    pub fn reap(&mut self, alive: impl Fn(u32) -> bool) {
        let dead: Vec<u32> = self.resolver.pids().filter(|&pid| !alive(pid)).collect();
        for pid in dead {
            self.forget(pid);
        }
        self.states.retain(|&(pid, _), _| alive(pid));
    }

    /// Drops the interpreter modules of processes that exited (after their
    /// last stacks were symbolized: the agent, at the end of a window).
    pub fn prune_modules(&mut self, alive: impl Fn(u32) -> bool) {
        self.modules.retain(|&pid, _| alive(pid));
        self.off_cpu.retain(|_, (pid, _)| alive(*pid));
    }

    fn forget(&mut self, pid: u32) {
        self.resolver.remove(pid);
        self.thread_names.remove(&pid);
        if let Err(e) = self.store.remove(pid) {
            tracing::debug!("pid {pid}: cannot remove from python_processes: {e}");
        }
    }

    pub fn stats(&self) -> TrackerStats {
        TrackerStats {
            registered: self.registered,
            failed: self.failed,
            resolver: self.resolver.stats(),
        }
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_bound() {
        assert_eq!(retry_delay(RETRIES), Duration::from_millis(200));
        assert_eq!(retry_delay(RETRIES - 1), Duration::from_millis(400));
        assert_eq!(retry_delay(1), Duration::from_millis(6400));
        let total: Duration = (1..=RETRIES).map(retry_delay).sum();
        assert!(total > Duration::from_secs(60) && total < Duration::from_secs(300));
    }
}
