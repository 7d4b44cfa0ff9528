//! Finds the CPython interpreter in a process: the module holding
//! `_PyRuntime` (libpython, or the executable of a static build), its
//! version, and a [`Layout`] checked against the live interpreter.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment, ObjectSymbol};

use super::code::Types;
use super::layout::{GilLocation, Layout, GIL_STATE_SIZE};
use super::version::PythonVersion;
use crate::memory::ProcessMemory;
use crate::proc_maps::{parse_maps, MapEntry, MapPath};

/// Size of the `_Py_DebugOffsets` table read (it is about 0x200 bytes).
const DEBUG_OFFSETS_WORDS: usize = 128;
/// Most PyThreadStates looked at when checking a layout.
const MAX_THREADS_CHECKED: usize = 256;

/// A CPython process, ready to be walked.
#[derive(Debug, Clone)]
pub struct PythonProcess {
    pub pid: u32,
    pub version: PythonVersion,
    pub layout: Layout,
    /// The module with the interpreter, as the process sees its path.
    pub module: PathBuf,
    /// Address of `_PyRuntime.interpreters.head` in the process.
    pub interpreters_head: u64,
    /// Where the eval loop's code is in the process (see `eval_code`):
    /// its native frames are the ones Python frames replace, also where the
    /// interpreter has no symbol table to name them.
    pub eval_code: Vec<std::ops::Range<u64>>,
    /// Where the GIL's state is (`GIL_STATE_SIZE` bytes): threads asleep
    /// on a futex inside it wait for the GIL. None where not known.
    pub gil: Option<std::ops::Range<u64>>,
    pub(crate) types: Types,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("cannot read /proc/{pid}")]
    Proc {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {path} as ELF")]
    Elf {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    #[error("{path} has no `{symbol}` symbol")]
    MissingSymbol { path: PathBuf, symbol: &'static str },
    #[error("cannot tell the Python version of {path}")]
    UnknownVersion { path: PathBuf },
    #[error("Python {0} is not supported (3.8 and later are)")]
    Unsupported(PythonVersion),
    #[error("the interpreter has no thread yet")]
    NotReady,
    /// A layout that does not fit, or an interpreter still starting (its
    /// runtime is there, its threads not yet).
    #[error("Python {version} in {path} does not have the expected layout (no thread list leads back to the interpreter)")]
    ThreadsNotLinked {
        version: PythonVersion,
        path: PathBuf,
    },
    /// 3.13+ built without the GIL: its objects and thread states differ.
    #[error("Python {version} in {path} is a free-threaded build, which smolder does not walk")]
    FreeThreaded {
        version: PythonVersion,
        path: PathBuf,
    },
    #[error("Python {version} in {path} does not have the expected layout ({what})")]
    Layout {
        version: PythonVersion,
        path: PathBuf,
        what: &'static str,
    },
}

impl DetectError {
    /// Worth trying again later (the process is still starting).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::NotReady)
    }

    /// May go away as the interpreter finishes starting. Also what a
    /// layout that never fits gives, so the caller retries a bounded number
    /// of times before it reports it.
    pub fn may_settle(&self) -> bool {
        matches!(self, Self::ThreadsNotLinked { .. })
    }
}

/// The Python interpreter of `pid`; `Ok(None)` when it maps none.
pub fn detect(pid: u32) -> Result<Option<PythonProcess>, DetectError> {
    let proc_err = |source| DetectError::Proc { pid, source };
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(proc_err)?;
    let (entries, _) = parse_maps(&maps);
    let mut candidates: Vec<&MapEntry> = entries
        .iter()
        .filter(|e| e.perms.exec)
        .filter(|e| file_name(e).is_some_and(|n| n.contains("python")))
        .collect();
    // libpython first: with a shared build the executable has no runtime.
    candidates.sort_by_key(|e| !file_name(e).is_some_and(|n| n.starts_with("libpython")));
    candidates.dedup_by_key(|e| e.inode);
    for entry in candidates {
        match inspect(pid, &entries, entry) {
            Ok(found) => return Ok(Some(found)),
            // Named like Python but without the runtime (the executable of
            // a shared build, a tool): look at the next one.
            Err(DetectError::MissingSymbol { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn file_name(entry: &MapEntry) -> Option<&str> {
    match &entry.path {
        MapPath::File { path, .. } => path.file_name()?.to_str(),
        _ => None,
    }
}

/// Symbols read from the interpreter module (link-time addresses).
struct Symbols {
    runtime: u64,
    version: Option<u64>,
    code_type: u64,
    unicode_type: u64,
    bytes_type: u64,
    dict_type: Option<u64>,
    long_type: Option<u64>,
}

fn inspect(pid: u32, entries: &[MapEntry], entry: &MapEntry) -> Result<PythonProcess, DetectError> {
    let MapPath::File { path, .. } = &entry.path else {
        unreachable!("candidates are file mappings");
    };
    // map_files reaches the file even inside another mount namespace.
    let open_path = PathBuf::from(format!(
        "/proc/{pid}/map_files/{:x}-{:x}",
        entry.start, entry.end
    ));
    let elf_err = |source| DetectError::Elf {
        path: path.clone(),
        source,
    };
    let file = File::open(&open_path).map_err(|source| DetectError::Proc { pid, source })?;
    // SAFETY: the mapping is read-only; a file truncated under us can fault
    // the read, as with every mmap reader (blazesym does the same).
    let data =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|source| DetectError::Proc { pid, source })?;
    let elf = object::File::parse(&*data).map_err(elf_err)?;
    let symbols = read_symbols(&elf, path)?;
    let to_address = |vaddr: u64| link_to_process(&elf, entries, entry, vaddr);
    let runtime = to_address(symbols.runtime).ok_or(DetectError::MissingSymbol {
        path: path.clone(),
        symbol: "_PyRuntime (mapped)",
    })?;
    let memory = ProcessMemory::open(pid).map_err(|source| DetectError::Proc { pid, source })?;
    let version = match symbols.version.and_then(to_address) {
        Some(at) => PythonVersion::from_hex(
            memory
                .u64(at)
                .map_err(|source| DetectError::Proc { pid, source })?
                & 0xffff_ffff,
        ),
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(PythonVersion::from_file_name)
            .ok_or_else(|| DetectError::UnknownVersion { path: path.clone() })?,
    };
    let layout = if (version.major, version.minor) >= (3, 13) {
        let mut raw = vec![0u8; DEBUG_OFFSETS_WORDS * 8];
        memory
            .read(runtime, &mut raw)
            .map_err(|source| DetectError::Proc { pid, source })?;
        let words: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        // 3.13+ says whether it is a free-threaded build (no GIL).
        if words.get(2) == Some(&1) {
            return Err(DetectError::FreeThreaded {
                version,
                path: path.clone(),
            });
        }
        Layout::from_debug_offsets(&words).ok_or(DetectError::Layout {
            version,
            path: path.clone(),
            what: "no _Py_DebugOffsets table",
        })?
    } else if (version.major, version.minor) < (3, 8) {
        return Err(DetectError::Unsupported(version));
    } else {
        Layout::for_version(version).ok_or(DetectError::Unsupported(version))?
    };
    let layout = check_layout(pid, &memory, runtime, layout, path)?;
    let eval_code = super::eval_code::eval_code(&elf)
        .into_iter()
        .filter_map(|r| Some(to_address(r.start)?..to_address(r.end - 1)? + 1))
        .collect();
    let types = Types {
        code: to_address(symbols.code_type).unwrap_or(0),
        unicode: to_address(symbols.unicode_type).unwrap_or(0),
        bytes: to_address(symbols.bytes_type).unwrap_or(0),
        dict: symbols.dict_type.and_then(to_address).unwrap_or(0),
        long: symbols.long_type.and_then(to_address).unwrap_or(0),
    };
    let gil = find_gil(&memory, runtime, &layout);
    if gil.is_none() && layout.gil.is_some() {
        log::debug!(
            "Python {version} in {}: the GIL is not where expected; GIL waits will not be told apart",
            path.display()
        );
    }
    Ok(PythonProcess {
        pid,
        version,
        layout,
        module: path.clone(),
        interpreters_head: runtime + layout.interpreters_head,
        eval_code,
        gil,
        types,
    })
}

fn read_symbols(elf: &object::File<'_>, path: &Path) -> Result<Symbols, DetectError> {
    let mut runtime = None;
    let mut version = None;
    let mut code_type = None;
    let mut unicode_type = None;
    let mut bytes_type = None;
    let mut dict_type = None;
    let mut long_type = None;
    for symbol in elf.dynamic_symbols().chain(elf.symbols()) {
        let slot = match symbol.name() {
            Ok("_PyRuntime") => &mut runtime,
            Ok("Py_Version") => &mut version,
            Ok("PyCode_Type") => &mut code_type,
            Ok("PyUnicode_Type") => &mut unicode_type,
            Ok("PyBytes_Type") => &mut bytes_type,
            Ok("PyDict_Type") => &mut dict_type,
            Ok("PyLong_Type") => &mut long_type,
            _ => continue,
        };
        if symbol.address() != 0 {
            *slot = Some(symbol.address());
        }
    }
    let missing = |symbol| DetectError::MissingSymbol {
        path: path.to_owned(),
        symbol,
    };
    Ok(Symbols {
        runtime: runtime.ok_or_else(|| missing("_PyRuntime"))?,
        version,
        code_type: code_type.ok_or_else(|| missing("PyCode_Type"))?,
        unicode_type: unicode_type.ok_or_else(|| missing("PyUnicode_Type"))?,
        bytes_type: bytes_type.ok_or_else(|| missing("PyBytes_Type"))?,
        dict_type,
        long_type,
    })
}

/// Where a link-time address of the module is in the process: its load
/// bias (where the file's first page is mapped, against the address its
/// first segment was linked at) plus the address; without a mapping of the
/// first page, through the segment holding it to a file offset, then to the
/// mapping of that offset. The bias comes first because a file page can be
/// mapped twice: a non-PIE binary's last read-only page is also the first
/// page of its data (Debian's python3.9), and the offset alone cannot tell
/// which mapping holds `_PyRuntime`.
fn link_to_process(
    elf: &object::File<'_>,
    entries: &[MapEntry],
    module: &MapEntry,
    vaddr: u64,
) -> Option<u64> {
    let same_file = |e: &&MapEntry| {
        e.inode == module.inode
            && e.dev_major == module.dev_major
            && e.dev_minor == module.dev_minor
    };
    let first_page = entries.iter().filter(same_file).find(|e| e.offset == 0);
    let first_segment = elf.segments().find(|s| s.file_range().0 == 0);
    if let (Some(mapping), Some(segment)) = (first_page, first_segment) {
        let linked = segment.address() & !0xfff;
        return mapping.start.checked_sub(linked)?.checked_add(vaddr);
    }
    let segment = elf
        .segments()
        .find(|s| s.address() <= vaddr && vaddr < s.address() + s.size())?;
    let (file_start, _) = segment.file_range();
    let file_offset = vaddr - segment.address() + file_start;
    // .bss lies past the file: map it from the segment's first page.
    let (anchor_offset, extra) = if vaddr - segment.address() < segment.file_range().1 {
        (file_offset, 0)
    } else {
        (file_start, vaddr - segment.address())
    };
    let mapping = entries
        .iter()
        .filter(same_file)
        .find(|e| e.offset <= anchor_offset && anchor_offset < e.offset + (e.end - e.start))?;
    Some(mapping.start + (anchor_offset - mapping.offset) + extra)
}

/// Checks the layout against the interpreter: the first interpreter's
/// thread list must lead back to it, and (3.11+) hold the process's own
/// threads. Tables that do not fit are searched nearby, in case a patch
/// release or distribution build moved a field.
fn check_layout(
    pid: u32,
    memory: &ProcessMemory,
    runtime: u64,
    layout: Layout,
    path: &Path,
) -> Result<Layout, DetectError> {
    let heads = std::iter::once(layout.interpreters_head).chain((8..=128).step_by(8));
    let mut saw_interpreter = false;
    for head in heads {
        let Ok(interp) = memory.u64(runtime + head) else {
            continue;
        };
        if interp == 0 || interp % 8 != 0 {
            continue;
        }
        saw_interpreter = true;
        let threads = std::iter::once(layout.threads_head).chain((8..=512).step_by(8));
        for threads_head in threads {
            let Ok(tstate) = memory.u64(interp + threads_head) else {
                continue;
            };
            if tstate == 0 || tstate % 8 != 0 {
                continue;
            }
            if memory.u64(tstate + layout.tstate_interp).ok() != Some(interp) {
                continue;
            }
            let found = Layout {
                interpreters_head: head,
                threads_head,
                ..layout
            };
            if let Some(native) = layout.tstate_native_thread_id {
                if !threads_are_ours(pid, memory, tstate, &found, native) {
                    continue;
                }
            }
            if found != layout {
                log::info!(
                    "Python {} in {}: interpreter found at runtime+{head}, threads at +{threads_head}",
                    layout.version,
                    path.display()
                );
            }
            return Ok(found);
        }
    }
    if saw_interpreter {
        Err(DetectError::ThreadsNotLinked {
            version: layout.version,
            path: path.to_owned(),
        })
    } else {
        Err(DetectError::NotReady)
    }
}

/// The GIL's state, checked: its switch interval (microseconds, 5000 unless
/// changed) is plausible and `locked` is 0 or 1.
fn find_gil(memory: &ProcessMemory, runtime: u64, layout: &Layout) -> Option<std::ops::Range<u64>> {
    let at = match layout.gil? {
        GilLocation::Runtime(offset) => runtime.checked_add(offset)?,
        GilLocation::Interpreter(offset) => {
            let interp = memory.u64(runtime + layout.interpreters_head).ok()?;
            memory.u64(interp.checked_add(offset)?).ok()?
        }
    };
    if at == 0 || at % 8 != 0 {
        return None;
    }
    let interval = memory.u64(at).ok()?;
    let locked = memory.u64(at + 16).ok()? & 0xffff_ffff;
    let plausible = (1..=1_000_000_000).contains(&interval) && locked <= 1;
    plausible.then_some(at..at + GIL_STATE_SIZE)
}

/// Whether some PyThreadState in the list starting at `first` carries the
/// id of a thread of `pid`.
fn threads_are_ours(
    pid: u32,
    memory: &ProcessMemory,
    first: u64,
    layout: &Layout,
    native: u64,
) -> bool {
    let mut at = first;
    for _ in 0..MAX_THREADS_CHECKED {
        if at == 0 {
            break;
        }
        if let Ok(tid) = memory.u64(at + native) {
            if tid != 0
                && tid < u64::from(u32::MAX)
                && Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
            {
                return true;
            }
        }
        at = memory.u64(at + layout.tstate_next).unwrap_or(0);
    }
    false
}
