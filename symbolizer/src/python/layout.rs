//! Where CPython keeps what the walker reads, per version (x86_64).
//!
//! 3.8 to 3.12 come from the CPython headers of each version; 3.13 and later
//! from the `_Py_DebugOffsets` table CPython embeds at the start of
//! `_PyRuntime` for out-of-process tools. [`super::detect`] checks a layout
//! against the live process before it is used.

use super::version::PythonVersion;

/// How frames link (see `profiler-ebpf/include/python.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// 3.8-3.10: `PyFrameObject`, one C call of the eval loop per frame.
    Object,
    /// 3.11: `_PyInterpreterFrame`; `is_entry` marks a C call's first frame.
    Entry,
    /// 3.12+: `_PyInterpreterFrame`; a shim frame sits below a C call's first frame.
    Shim,
}

/// How a code object maps bytecode offsets to lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// 3.8, 3.9: `co_lnotab`.
    Lnotab,
    /// 3.10: `co_linetable`, (bytecode delta, line delta) pairs.
    Pairs,
    /// 3.11+: `co_linetable`, the location table.
    Locations,
}

/// Where the GIL (`struct _gil_runtime_state`) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GilLocation {
    /// At this offset in `_PyRuntime` (3.9-3.11: `_PyRuntime.ceval.gil`).
    Runtime(u64),
    /// Pointed to by the word at this offset in the `PyInterpreterState`
    /// (3.12+: `interp->ceval.gil`).
    Interpreter(u64),
}

/// `sizeof(struct _gil_runtime_state)` with a GIL (3.9 to 3.15, x86_64):
/// interval, last_holder, locked, switch_number, then the condition variable
/// and mutex threads wait on, and the pair used to force a switch.
pub const GIL_STATE_SIZE: u64 = 208;

/// Offsets into `PyCodeObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLayout {
    pub filename: u64,
    pub name: u64,
    /// `co_qualname` (3.11+).
    pub qualname: Option<u64>,
    /// `co_lnotab` or `co_linetable`.
    pub linetable: u64,
    pub firstlineno: u64,
    /// `co_code_adaptive` (3.11+): instruction offsets count from here.
    pub code_adaptive: u64,
}

/// Everything version-specific the walker and the resolver read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub version: PythonVersion,
    /// `_PyRuntimeState.interpreters.head`
    pub interpreters_head: u64,
    /// `PyInterpreterState` -> first `PyThreadState`
    pub threads_head: u64,
    pub tstate_next: u64,
    pub tstate_interp: u64,
    /// `thread_id`: the thread's `pthread_self()`.
    pub tstate_thread_id: u64,
    /// `native_thread_id` (3.11+): the thread's tid.
    pub tstate_native_thread_id: Option<u64>,
    /// `frame` (3.8-3.10), `cframe` (3.11, 3.12) or `current_frame` (3.13+).
    pub tstate_frame: u64,
    /// `_PyCFrame.current_frame` (3.11, 3.12).
    pub cframe_current: Option<u64>,
    pub frames: FrameKind,
    pub frame_code: u64,
    pub frame_previous: u64,
    /// `f_lasti` (an int), or `prev_instr` / `instr_ptr` (a pointer).
    pub frame_instr: u64,
    /// `is_entry` (3.11) or `owner` (3.12+); unused before 3.11.
    pub frame_entry: u64,
    pub code: CodeLayout,
    pub lines: LineFormat,
    /// Bytes per unit of a sampled instruction offset (3.10's f_lasti counts
    /// 2-byte code units).
    pub instr_scale: u32,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's bytes start.
    pub ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where other compact strings' start.
    pub compact_size: u64,
    /// Where the GIL is; None where smolder does not know (3.8, 3.12).
    pub gil: Option<GilLocation>,
}

/// `PyObject.ob_type`, `PyVarObject.ob_size`, `PyBytesObject.ob_sval`, and
/// the string fields: the same in every supported version.
pub const OB_TYPE: u64 = 8;
pub const OB_SIZE: u64 = 16;
pub const BYTES_DATA: u64 = 32;
pub const UNICODE_LENGTH: u64 = 16;
pub const UNICODE_STATE: u64 = 32;

impl Layout {
    /// The layout of a version without a debug offsets table (before 3.13);
    /// None for versions smolder does not know.
    pub fn for_version(version: PythonVersion) -> Option<Self> {
        if version.major != 3 {
            return None;
        }
        let old_code = |linetable, lines, instr_scale| Layout {
            version,
            interpreters_head: 32,
            threads_head: 8,
            tstate_next: 8,
            tstate_interp: 16,
            tstate_thread_id: 176,
            tstate_native_thread_id: None,
            tstate_frame: 24,
            cframe_current: None,
            frames: FrameKind::Object,
            frame_code: 32,
            frame_previous: 24,
            frame_instr: if version.minor == 10 { 96 } else { 104 },
            frame_entry: 0,
            code: CodeLayout {
                filename: 104,
                name: 112,
                qualname: None,
                linetable,
                firstlineno: 40,
                code_adaptive: 0,
            },
            lines,
            instr_scale,
            ascii_size: 48,
            compact_size: 72,
            // After 4 ints, _finalizing, interpreters, xidregistry,
            // main_thread, exitfuncs[32], nexitfuncs and ceval's
            // signals_pending (3.9, 3.10; measured on Debian's 3.9).
            gil: (version.minor >= 9).then_some(GilLocation::Runtime(352)),
        };
        match version.minor {
            8 | 9 => Some(old_code(120, LineFormat::Lnotab, 1)),
            10 => Some(old_code(120, LineFormat::Pairs, 2)),
            11 => Some(Layout {
                version,
                interpreters_head: 40,
                threads_head: 16,
                tstate_next: 8,
                tstate_interp: 16,
                tstate_thread_id: 152,
                tstate_native_thread_id: Some(160),
                tstate_frame: 56,
                cframe_current: Some(8),
                frames: FrameKind::Entry,
                frame_code: 32,
                frame_previous: 48,
                frame_instr: 56,
                frame_entry: 68,
                code: CodeLayout {
                    filename: 112,
                    name: 120,
                    qualname: Some(128),
                    linetable: 136,
                    firstlineno: 72,
                    code_adaptive: 184,
                },
                lines: LineFormat::Locations,
                instr_scale: 1,
                ascii_size: 48,
                compact_size: 72,
                // 3.11 added _initialized before the four ints (measured on
                // Debian's 3.11).
                gil: Some(GilLocation::Runtime(360)),
            }),
            12 => Some(Layout {
                version,
                interpreters_head: 48,
                threads_head: 72,
                tstate_next: 8,
                tstate_interp: 16,
                tstate_thread_id: 136,
                tstate_native_thread_id: Some(144),
                tstate_frame: 56,
                cframe_current: Some(0),
                frames: FrameKind::Shim,
                frame_code: 0,
                frame_previous: 8,
                frame_instr: 56,
                frame_entry: 70,
                code: CodeLayout {
                    filename: 112,
                    name: 120,
                    qualname: Some(128),
                    linetable: 136,
                    firstlineno: 68,
                    code_adaptive: 192,
                },
                lines: LineFormat::Locations,
                instr_scale: 1,
                ascii_size: 40,
                compact_size: 56,
                gil: None,
            }),
            _ => None,
        }
    }

    /// The layout described by a `_Py_DebugOffsets` table (3.13+): `words`
    /// are the table's first 64-bit words. The table grew between versions,
    /// so its sections are found by what they must contain rather than by
    /// position: `PyThreadState` starts with prev, next, interp (0, 8, 16);
    /// `_PyInterpreterFrame` with f_executable, previous (0, 8).
    pub fn from_debug_offsets(words: &[u64]) -> Option<Self> {
        if words.len() < 40 || &words[0].to_le_bytes() != b"xdebugpy" {
            return None;
        }
        let version = PythonVersion::from_hex(words[1]);
        // 3.13.0 final and later have a free_threaded flag before the
        // runtime section; a runtime size is never 0 or 1.
        let runtime = if words[2] <= 1 { 3 } else { 2 };
        let interpreters_head = words[runtime + 2];
        let interp = runtime + 3;
        // size, id, next, threads_head. `detect` checks it against the
        // process and searches nearby if the table's shape differs.
        let threads_head = words[interp + 3];
        let tstate = (interp..words.len() - 9).find(|&i| {
            words[i] > 64 && words[i + 1] == 0 && words[i + 2] == 8 && words[i + 3] == 16
        })?;
        let frame = (tstate + 4..words.len() - 16).find(|&i| {
            words[i] >= 40 && words[i] < 256 && words[i + 1] == 8 && words[i + 2] == 0
        })?;
        // The frame section grew in 3.14 (stackpointer, tlbc_index): the
        // code object's starts with size, then filename, name, qualname and
        // linetable, one word apart.
        let code = (frame + 6..words.len() - 10).find(|&i| {
            // Checked sums: the table is read from the process (an
            // overflow here was found by the python_tables fuzz target).
            let filename = words[i + 1];
            let at = |delta: u64| filename.checked_add(delta);
            words[i] > filename
                && Some(words[i + 2]) == at(8)
                && Some(words[i + 3]) == at(16)
                && Some(words[i + 4]) == at(24)
        })?;
        // 3.15 put three frame pointers (base_frame, last_profiled_frame,
        // ...) between current_frame and thread_id.
        let thread_id = if (version.major, version.minor) >= (3, 15) {
            tstate + 8
        } else {
            tstate + 5
        };
        let field = |i: usize| words.get(i).copied();
        // The interpreter section ends with ceval_gil, gil_runtime_state,
        // then the GIL's enabled, locked and holder fields (+0, +16, +8).
        let gil = (interp..tstate.saturating_sub(4))
            .find(|&i| {
                let state = words[i + 1];
                words[i] > 0
                    && words[i] < state
                    && Some(words[i + 3]) == state.checked_add(16)
                    && Some(words[i + 4]) == state.checked_add(8)
            })
            .map(|i| GilLocation::Interpreter(words[i]));
        Some(Layout {
            version,
            interpreters_head,
            threads_head,
            tstate_next: 8,
            tstate_interp: 16,
            tstate_thread_id: field(thread_id)?,
            tstate_native_thread_id: field(thread_id + 1),
            tstate_frame: field(tstate + 4)?,
            cframe_current: None,
            frames: FrameKind::Shim,
            frame_code: field(frame + 2)?,
            frame_previous: field(frame + 1)?,
            frame_instr: field(frame + 3)?,
            frame_entry: field(frame + 5)?,
            code: CodeLayout {
                filename: field(code + 1)?,
                name: field(code + 2)?,
                qualname: field(code + 3),
                linetable: field(code + 4)?,
                firstlineno: field(code + 5)?,
                code_adaptive: field(code + 9)?,
            },
            lines: LineFormat::Locations,
            instr_scale: 1,
            ascii_size: 40,
            compact_size: 56,
            gil,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_versions_have_layouts() {
        for minor in 8..=12 {
            let layout = Layout::for_version(PythonVersion::new(3, minor, 0));
            assert!(layout.is_some(), "3.{minor}");
        }
        assert!(Layout::for_version(PythonVersion::new(3, 7, 0)).is_none());
        assert!(Layout::for_version(PythonVersion::new(2, 7, 0)).is_none());
        let l = Layout::for_version(PythonVersion::new(3, 10, 4)).unwrap();
        assert_eq!((l.lines, l.instr_scale), (LineFormat::Pairs, 2));
    }

    /// The start of CPython's table as read from Debian's 3.14 and 3.15
    /// (x86_64), through the code object section.
    fn debug_table(minor: u64) -> Vec<u64> {
        let mut w = vec![u64::from_le_bytes(*b"xdebugpy")];
        if minor == 14 {
            w.extend([0x030E0AF0, 0, 316616, 784, 808]);
            w.extend([
                225864, 7280, 7272, 7344, 7360, 7408, 7688, 7672, 7680, 16, 7784,
            ]);
            w.extend([0, 7800, 7792, 7992, 0]); // interpreter
            w.extend([832, 0, 8, 16, 72, 152, 160, 232, 32]); // thread state
        } else {
            w.extend([0x030F02F0, 0, 346568, 912, 936]);
            w.extend([
                226240, 7272, 7264, 7336, 7352, 7400, 7592, 7576, 7584, 16, 7736,
            ]);
            w.extend([0, 7752, 7744, 7944, 0]); // interpreter
            w.extend([
                888, 0, 8, 16, 72, 80, 88, 96, 176, 184, 256, 32, 36, 40, 136,
            ]);
            w.extend([288, 0]); // thread state
        }
        w.extend([88, 8, 0, 56, 80, 74, 64, 0]); // interpreter frame
        w.extend([216, 112, 120, 128, 136, 68, 52, 96, 104, 208, 0]); // code object
        w.extend([16, 8, 416, 24, 88, 168, 40, 32, 16, 40, 24, 16, 200, 24]);
        w
    }

    #[test]
    fn debug_offsets_are_found_by_shape() {
        for (minor, runtime_head, thread_id) in [(14, 808, 152), (15, 936, 176)] {
            let l = Layout::from_debug_offsets(&debug_table(minor)).expect("layout");
            assert_eq!((l.version.major, l.version.minor), (3, minor as u8));
            assert_eq!(l.interpreters_head, runtime_head);
            assert_eq!((l.tstate_frame, l.tstate_thread_id), (72, thread_id));
            assert_eq!(l.tstate_native_thread_id, Some(thread_id + 8));
            assert_eq!(
                (l.frame_code, l.frame_previous, l.frame_instr, l.frame_entry),
                (0, 8, 56, 74)
            );
            let code = l.code;
            assert_eq!(
                (code.filename, code.name, code.qualname),
                (112, 120, Some(128))
            );
            assert_eq!((code.linetable, code.firstlineno), (136, 68));
            assert_eq!(code.code_adaptive, 208);
            assert_eq!(l.gil, Some(GilLocation::Interpreter(16)));
        }
    }

    #[test]
    fn debug_offsets_need_the_cookie() {
        let mut table = debug_table(14);
        table[0] = 0;
        assert!(Layout::from_debug_offsets(&table).is_none());
        assert!(Layout::from_debug_offsets(&table[..10]).is_none());
    }
}
