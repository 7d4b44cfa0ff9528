//! Which sampled processes are Go binaries whose goroutine labels smolder
//! can read: each address space is looked at once when first sampled (its
//! executable, through `/proc/PID/exe`, which works across mount
//! namespaces; a binary shared by many processes is read once). Found
//! processes go into `go_processes`; the label sets their samples point at
//! are read here and remembered by address until the window ends.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};
use symbolizer::ProcessMemory;

use super::detect::{detect, GoRuntime, LabelLayout};
use super::labels::{read_labels, LabelSet};
use crate::collect::{key_was_missing, Sample};
use crate::logging::WarnOnce;
use crate::unwind::Seen;

/// Label sets remembered at most (per window): a process making a new set
/// per request makes many; past this the cache starts over.
const MAX_CACHED_SETS: usize = 16384;
/// Executables remembered by identity (device, inode).
const MAX_BINARIES: usize = 4096;

/// Counters for the summary and the agent's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GoTrackerStats {
    /// Go processes registered with the BPF reader.
    pub registered: u64,
    /// Go processes whose labels cannot be read (version, file).
    pub unsupported: u64,
    /// Label sets read from processes' memory.
    pub sets_read: u64,
    /// Label sets that could not be read (the samples carry none).
    pub read_errors: u64,
}

/// A registered process: how to read its label sets.
struct Reader {
    memory: ProcessMemory,
    layout: LabelLayout,
}

pub struct GoTracker {
    processes_map: BpfHashMap<MapData, u32, super::GoProcessEntry>,
    /// Address spaces looked at: (pid, mm_id).
    looked_at: HashSet<(u32, u64)>,
    readers: HashMap<u32, Reader>,
    /// What each executable is, by (device, inode): None when not a Go
    /// binary smolder reads.
    binaries: HashMap<(u64, u64), Option<GoRuntime>>,
    sets: HashMap<(u32, u64), Option<LabelSet>>,
    reported: WarnOnce,
    stats: GoTrackerStats,
}

impl GoTracker {
    pub fn new(map: Map) -> Result<Self, MapError> {
        Ok(Self {
            processes_map: BpfHashMap::try_from(map)?,
            looked_at: HashSet::new(),
            readers: HashMap::new(),
            binaries: HashMap::new(),
            sets: HashMap::new(),
            reported: WarnOnce::default(),
            stats: GoTrackerStats::default(),
        })
    }

    /// Registers the Go processes among `pids` before sampling starts, so
    /// that their first samples carry labels too.
    pub fn preload(&mut self, pids: impl IntoIterator<Item = u32>) {
        for pid in pids {
            if let Some(runtime) = self.runtime_of(pid) {
                self.register(pid, &runtime);
            }
        }
    }

    /// Looks at every address space in `seen` not looked at yet.
    pub fn follow(&mut self, seen: &[Seen]) {
        for one in seen {
            if one.mm_id == 0 || !self.looked_at.insert((one.pid, one.mm_id)) {
                continue;
            }
            if let Some(runtime) = self.runtime_of(one.pid) {
                self.register(one.pid, &runtime);
            }
        }
    }

    /// The Go runtime of `pid`'s executable, if smolder reads its labels.
    fn runtime_of(&mut self, pid: u32) -> Option<GoRuntime> {
        let path = format!("/proc/{pid}/exe");
        let file = std::fs::File::open(&path).ok()?;
        let meta = file.metadata().ok()?;
        let id = (meta.dev(), meta.ino());
        if let Some(known) = self.binaries.get(&id) {
            return known.clone();
        }
        // SAFETY: a read-only private mapping of an executable, which is
        // not rewritten in place while it runs.
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let runtime = match detect(&map) {
            Ok(runtime) => runtime,
            Err(e) => {
                self.stats.unsupported += 1;
                self.reported
                    .warn(format!("goroutine labels of pid {pid} are not read: {e}"));
                None
            }
        };
        if self.binaries.len() >= MAX_BINARIES {
            self.binaries.clear();
        }
        self.binaries.insert(id, runtime.clone());
        runtime
    }

    fn register(&mut self, pid: u32, runtime: &GoRuntime) {
        let memory = match ProcessMemory::open(pid) {
            Ok(memory) => memory,
            Err(_) => return, // exited
        };
        match self.processes_map.insert(pid, runtime.entry, 0) {
            Ok(()) => {
                tracing::debug!("pid {pid}: Go {} labels read", runtime.version);
                let reader = Reader {
                    memory,
                    layout: runtime.layout,
                };
                if self.readers.insert(pid, reader).is_none() {
                    self.stats.registered += 1;
                }
            }
            Err(e) => {
                self.stats.unsupported += 1;
                self.reported.warn(format!(
                    "cannot register pid {pid} with the goroutine label reader: {e}"
                ));
            }
        }
    }

    /// The label set of the goroutine `sample` caught, if it had one.
    pub fn labels(&mut self, sample: &Sample) -> Option<LabelSet> {
        if sample.go_labels == 0 {
            return None;
        }
        let key = (sample.pid, sample.go_labels);
        if let Some(known) = self.sets.get(&key) {
            return known.clone();
        }
        let reader = self.readers.get(&sample.pid)?;
        let set = match read_labels(&reader.memory, reader.layout, sample.go_labels) {
            Ok(set) => {
                self.stats.sets_read += 1;
                Some(set)
            }
            Err(e) => {
                self.stats.read_errors += 1;
                tracing::debug!("pid {}: label set not read: {e}", sample.pid);
                None
            }
        };
        if self.sets.len() >= MAX_CACHED_SETS {
            self.sets.clear();
        }
        self.sets.insert(key, set.clone());
        set
    }

    /// Forgets the label sets read: at the end of a window, so that an
    /// address the process freed and reused is read again.
    pub fn new_window(&mut self) {
        self.sets.clear();
    }

    /// Forgets processes that exited.
    pub fn reap(&mut self, alive: impl Fn(u32) -> bool) {
        self.looked_at.retain(|&(pid, _)| alive(pid));
        let dead: Vec<u32> = self
            .readers
            .keys()
            .copied()
            .filter(|&p| !alive(p))
            .collect();
        for pid in dead {
            self.readers.remove(&pid);
            match self.processes_map.remove(&pid) {
                Err(e) if !key_was_missing(&e) => {
                    tracing::debug!("pid {pid}: cannot remove from go_processes: {e}")
                }
                _ => {}
            }
        }
        self.sets.retain(|&(pid, _), _| alive(pid));
    }

    pub fn stats(&self) -> GoTrackerStats {
        self.stats
    }
}
