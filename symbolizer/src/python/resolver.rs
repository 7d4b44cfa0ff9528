//! Sampled Python frames -> function, file and line, with a bounded cache of
//! code objects per process.

use std::collections::HashMap;
use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;

use crate::lru::Lru;

use super::code::{read_code, CodeInfo};
use super::detect::PythonProcess;
use super::linetable::line_for_offset;
use super::threads::{ThreadNameReader, ThreadNamesError};
use crate::memory::ProcessMemory;

/// Code objects remembered, over all processes.
const CODE_CACHE: usize = 65_536;

/// One frame as the BPF walker recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawPythonFrame {
    /// `PyCodeObject` address in the process.
    pub code: u64,
    /// Instruction offset, in the units of the version (see `Layout::instr_scale`).
    pub instr: u32,
    /// `co_firstlineno` as read with the frame: a code object freed and
    /// another allocated at its address is told apart by it.
    pub first_line: i32,
    /// The outermost frame of one C call of the eval loop.
    pub entry: bool,
}

/// A resolved Python frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PythonFrame {
    /// Qualified name (`Class.method`, 3.11+), else the function's name.
    pub function: Arc<str>,
    pub file: Arc<str>,
    pub line: Option<u32>,
    /// The outermost frame of one C call of the eval loop.
    pub entry: bool,
}

/// Counters for metrics and the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PythonStats {
    pub processes: u64,
    pub frames: u64,
    pub code_objects_read: u64,
    /// Frames whose code object could not be read (freed, or the process exited).
    pub unreadable: u64,
}

struct Interpreter {
    process: PythonProcess,
    memory: ProcessMemory,
    thread_names: ThreadNameReader,
}

/// Resolves the frames of the processes it was given with [`PythonResolver::add`].
pub struct PythonResolver {
    interpreters: HashMap<u32, Interpreter>,
    /// (pid, code address, first line) -> the code object, or None when it
    /// could not be read.
    codes: Lru<(u32, u64, i32), Option<Arc<CodeInfo>>>,
    stats: PythonStats,
}

impl Default for PythonResolver {
    fn default() -> Self {
        Self {
            interpreters: HashMap::new(),
            codes: Lru::new(NonZeroUsize::new(CODE_CACHE).expect("non-zero")),
            stats: PythonStats::default(),
        }
    }
}

impl PythonResolver {
    /// Starts resolving the frames of a detected process (replacing an earlier
    /// process with the same pid).
    pub fn add(&mut self, process: PythonProcess) -> io::Result<()> {
        let memory = ProcessMemory::open(process.pid)?;
        let pid = process.pid;
        self.forget_codes(pid);
        self.interpreters.insert(
            pid,
            Interpreter {
                process,
                memory,
                thread_names: ThreadNameReader::new(),
            },
        );
        self.stats.processes += 1;
        Ok(())
    }

    /// Forgets a process (it exited or exec'd). Frames already resolved stay
    /// valid.
    pub fn remove(&mut self, pid: u32) {
        if self.interpreters.remove(&pid).is_some() {
            self.forget_codes(pid);
        }
    }

    fn forget_codes(&mut self, pid: u32) {
        let stale: Vec<_> = self
            .codes
            .iter()
            .filter(|((p, _, _), _)| *p == pid)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.codes.pop(&key);
        }
    }

    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.interpreters.keys().copied()
    }

    pub fn stats(&self) -> PythonStats {
        self.stats
    }

    /// The Python thread names of process `pid` by OS thread id (None: not
    /// a process being resolved).
    pub fn thread_names(
        &mut self,
        pid: u32,
    ) -> Option<Result<HashMap<u32, String>, ThreadNamesError>> {
        let i = self.interpreters.get_mut(&pid)?;
        Some(i.thread_names.read(&i.process, &i.memory))
    }

    /// Names `frames` of process `pid`, newest first. A frame whose code
    /// object cannot be read keeps its place as `[python code 0x...]`.
    pub fn resolve(&mut self, pid: u32, frames: &[RawPythonFrame]) -> Vec<PythonFrame> {
        frames.iter().map(|f| self.resolve_one(pid, f)).collect()
    }

    fn resolve_one(&mut self, pid: u32, frame: &RawPythonFrame) -> PythonFrame {
        self.stats.frames += 1;
        let key = (pid, frame.code, frame.first_line);
        let code = match self.codes.get(&key) {
            Some(code) => code.clone(),
            None => {
                let code = self.interpreters.get(&pid).and_then(|i| {
                    let read =
                        read_code(&i.memory, &i.process.layout, &i.process.types, frame.code);
                    if let Err(e) = &read {
                        log::debug!("pid {pid}: python code object: {e}");
                    }
                    read.ok()
                });
                let code = code.map(Arc::new);
                if code.is_some() {
                    self.stats.code_objects_read += 1;
                }
                self.codes.put(key, code.clone());
                code
            }
        };
        let Some(code) = code else {
            self.stats.unreadable += 1;
            return PythonFrame {
                function: format!("[python code 0x{:x}]", frame.code).into(),
                file: "[unknown]".into(),
                line: None,
                entry: frame.entry,
            };
        };
        let layout = self.interpreters.get(&pid).map(|i| i.process.layout);
        let line = layout.and_then(|l| {
            line_for_offset(
                l.lines,
                &code.line_table,
                code.first_line,
                frame.instr.saturating_mul(l.instr_scale),
            )
        });
        PythonFrame {
            function: code.name.clone(),
            file: code.file.clone(),
            line,
            entry: frame.entry,
        }
    }
}
