//! Off-CPU data from the sampler object: per-thread totals of blocked time
//! aggregated in the kernel, the stacks they refer to, and announcements of
//! new threads. Mirrors `profiler-ebpf/include/offcpu.h`.

use std::collections::{HashMap, HashSet};
use std::mem::size_of;
use std::num::NonZeroU32;
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, Map, MapError, StackTraceMap};
use aya::Ebpf;

use symbolizer::python::RawPythonFrame;

use super::record::{
    c_string, python_frames, RawPython, TraceContext, FLAG_USER_TRUNCATED, FLAG_USER_UNWIND_ERROR,
    MAX_PYTHON_FRAMES, RAW_PYTHON_SIZE,
};
use super::LoadError;

/// What to record off-CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffCpuConfig {
    /// Blocks shorter than this are ignored.
    pub min_block: Duration,
    /// Time one in N sleeps (1: all); totals are scaled back up by N.
    pub sample_every: NonZeroU32,
}

impl Default for OffCpuConfig {
    fn default() -> Self {
        Self {
            min_block: Duration::from_micros(1),
            sample_every: NonZeroU32::MIN,
        }
    }
}

/// `OFFCPU_GIL_WAIT` and `OFFCPU_TRACE_CONTEXT` (offcpu.h).
const FLAG_GIL_WAIT: u32 = 1 << 0;
const FLAG_GPU_WAIT: u32 = 1 << 2;
const FLAG_TRACE_CONTEXT: u32 = 1 << 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct RawKey {
    pid: u32,
    tid: u32,
    kernel_stack: i32,
    user_stack: i32,
    mm_id: u64,
    python_stack: i32,
    flags: u32,
    trace_id: [u8; 16],
    span_id: [u8; 8],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct RawValue {
    nanos: u64,
    count: u64,
}

/// Mirrors `struct smolder_offcpu_start`: a thread asleep right now.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct RawStart {
    time_ns: u64,
    mm_id: u64,
    kernel_stack: i32,
    user_stack: i32,
    pid: u32,
    python_stack: i32,
    flags: u32,
    pad: u32,
    trace_id: [u8; 16],
    span_id: [u8; 8],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawThread {
    pid: u32,
    tid: u32,
    mm_id: u64,
    comm: [u8; 16],
    thread_comm: [u8; 16],
}

/// Ids of user stacks walked with unwind tables (SMOLDER_OFFCPU_DWARF_ID).
const DWARF_ID: i32 = 1 << 30;

/// Mirrors `struct smolder_offcpu_user_stack`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct RawUserStack {
    hash: u64,
    len: u32,
    flags: u32,
    frames: [u64; super::record::MAX_USER_FRAMES],
}

pub(super) const RAW_USER_STACK_SIZE: usize = 16 + 8 * super::record::MAX_USER_FRAMES;
const _: () = assert!(size_of::<RawUserStack>() == RAW_USER_STACK_SIZE);

// SAFETY: repr(C) plain old data without padding (size asserted above).
unsafe impl aya::Pod for RawUserStack {}

/// Whether a stack id refers to `offcpu_user_stacks` (else the kernel's
/// stack map).
pub(super) fn is_dwarf_id(id: i32) -> bool {
    id >= 0 && id & DWARF_ID != 0
}

/// Mirrors `struct smolder_offcpu_python_stack`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct RawPythonStack {
    hash: u64,
    pid: u32,
    len: u32,
    status: u32,
    id: i32,
    frames: [RawPython; MAX_PYTHON_FRAMES],
}

const RAW_PYTHON_STACK_BASE_SIZE: usize = 24;
pub(super) const RAW_PYTHON_STACK_SIZE: usize =
    RAW_PYTHON_STACK_BASE_SIZE + RAW_PYTHON_SIZE * MAX_PYTHON_FRAMES;
const _: () = assert!(size_of::<RawPythonStack>() == RAW_PYTHON_STACK_SIZE);

// SAFETY: repr(C) plain old data without padding (size asserted above).
unsafe impl aya::Pod for RawPythonStack {}

const _: () = assert!(size_of::<RawKey>() == 56);
const _: () = assert!(size_of::<RawValue>() == 16);
const _: () = assert!(size_of::<RawThread>() == 48);
const _: () = assert!(size_of::<RawStart>() == 64);

// SAFETY: repr(C) plain old data without padding (sizes asserted above).
unsafe impl aya::Pod for RawKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RawValue {}
// SAFETY: as above (the explicit `pad` field leaves no implicit padding).
unsafe impl aya::Pod for RawStart {}

/// A thread that blocked for the first time with a given pair of stacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSeen {
    pub pid: u32,
    pub tid: u32,
    pub mm_id: u64,
    pub comm: String,
    pub thread_name: String,
}

impl TryFrom<&[u8]> for ThreadSeen {
    type Error = super::DecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        if bytes.len() != size_of::<RawThread>() {
            return Err(super::DecodeError::Size {
                got: bytes.len(),
                expected: size_of::<RawThread>(),
            });
        }
        // SAFETY: length checked; RawThread is plain old data valid for any
        // bit pattern; read_unaligned copes with any alignment.
        let raw: RawThread = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Ok(Self {
            pid: raw.pid,
            tid: raw.tid,
            mm_id: raw.mm_id,
            comm: c_string(&raw.comm),
            thread_name: c_string(&raw.thread_comm),
        })
    }
}

/// The Python frames of a thread that blocked, as the BPF walker read them:
/// code objects of process `pid`, named by the caller while it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffCpuPython {
    /// Identifies the stack (a hash of pid and frames), across windows.
    pub hash: u64,
    pub pid: u32,
    /// Newest first.
    pub frames: Vec<RawPythonFrame>,
}

impl TryFrom<&[u8]> for OffCpuPython {
    type Error = super::DecodeError;

    /// An announcement from `offcpu_python_new`: the record up to its last
    /// frame.
    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        if bytes.len() < RAW_PYTHON_STACK_BASE_SIZE || bytes.len() > RAW_PYTHON_STACK_SIZE {
            return Err(super::DecodeError::Size {
                got: bytes.len(),
                expected: RAW_PYTHON_STACK_BASE_SIZE,
            });
        }
        let mut whole = [0u8; RAW_PYTHON_STACK_SIZE];
        whole[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: `whole` has the full size; RawPythonStack is plain old
        // data valid for any bit pattern; read_unaligned copes with any
        // alignment.
        let raw: RawPythonStack = unsafe { std::ptr::read_unaligned(whole.as_ptr().cast()) };
        let expected = RAW_PYTHON_STACK_BASE_SIZE + raw.len as usize * RAW_PYTHON_SIZE;
        if bytes.len() != expected {
            return Err(super::DecodeError::Size {
                got: bytes.len(),
                expected,
            });
        }
        Self::from_raw(&raw).ok_or(super::DecodeError::Size {
            got: bytes.len(),
            expected,
        })
    }
}

impl OffCpuPython {
    fn from_raw(raw: &RawPythonStack) -> Option<Self> {
        // Lengths from the kernel are checked, never trusted.
        let frames = raw.frames.get(..raw.len as usize)?;
        Some(Self {
            hash: raw.hash,
            pid: raw.pid,
            frames: python_frames(frames),
        })
    }
}

/// Blocked time of one thread with one pair of stacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffCpuEntry {
    pub pid: u32,
    pub tid: u32,
    pub mm_id: u64,
    /// Innermost first; empty when the stack could not be stored.
    pub kernel: Vec<u64>,
    pub user: Vec<u64>,
    /// The user stack hit the depth limit.
    pub user_truncated: bool,
    /// The DWARF walk of the user stack stopped at an error.
    pub user_unwind_error: bool,
    /// Python frames, for threads of CPython processes.
    pub python: Option<OffCpuPython>,
    /// The thread slept waiting for the GIL.
    pub gil_wait: bool,
    /// The thread blocked inside a CUDA sync call.
    pub gpu_wait: bool,
    /// The trace the thread was serving when it blocked.
    pub trace: Option<TraceContext>,
    /// Number of blocks (scaled by the sampling rate).
    pub count: u64,
    /// Total blocked time (scaled by the sampling rate).
    pub nanos: u64,
}

/// Reads every totals entry and resolves its stack ids; the raw keys come
/// along so the caller can remove what it read.
pub(super) fn read_totals(
    ebpf: &Ebpf,
    scale: u64,
) -> Result<Vec<(RawKey, OffCpuEntry)>, LoadError> {
    let totals: BpfHashMap<_, RawKey, RawValue> =
        open(ebpf, "offcpu_totals", BpfHashMap::try_from)?;
    let stacks = open(ebpf, "offcpu_stacks", StackTraceMap::try_from)?;
    let user_stacks: BpfHashMap<_, i32, RawUserStack> =
        open(ebpf, "offcpu_user_stacks", BpfHashMap::try_from)?;
    let python_stacks: BpfHashMap<_, i32, RawPythonStack> =
        open(ebpf, "offcpu_python_stacks", BpfHashMap::try_from)?;
    let mut pythons: HashMap<i32, Option<OffCpuPython>> = HashMap::new();
    let mut python = |id: i32| -> Option<OffCpuPython> {
        if id < 0 {
            return None;
        }
        pythons
            .entry(id)
            .or_insert_with(|| {
                let raw = python_stacks.get(&id, 0).ok()?;
                OffCpuPython::from_raw(&raw)
            })
            .clone()
    };
    // (frames, flags) per id.
    let mut cache: HashMap<i32, (Vec<u64>, u32)> = HashMap::new();
    let mut stack = |id: i32| -> (Vec<u64>, u32) {
        if id < 0 {
            return (Vec::new(), 0);
        }
        cache
            .entry(id)
            .or_insert_with(|| {
                if is_dwarf_id(id) {
                    return user_stacks
                        .get(&id, 0)
                        .ok()
                        .and_then(|raw| {
                            // Lengths from the kernel are checked, never trusted.
                            let frames = raw.frames.get(..raw.len as usize)?;
                            Some((frames.to_vec(), raw.flags))
                        })
                        .unwrap_or_default();
                }
                let frames = stacks
                    .get(&(id as u32), 0)
                    .map(|trace| trace.frames().iter().map(|f| f.ip).collect())
                    .unwrap_or_default();
                (frames, 0)
            })
            .clone()
    };
    let mut entries = Vec::new();
    for item in totals.iter() {
        let (key, value) = item.map_err(|source| LoadError::Map {
            name: "offcpu_totals",
            source,
        })?;
        let (user, flags) = stack(key.user_stack);
        entries.push((
            key,
            OffCpuEntry {
                pid: key.pid,
                tid: key.tid,
                mm_id: key.mm_id,
                kernel: stack(key.kernel_stack).0,
                user,
                user_truncated: flags & FLAG_USER_TRUNCATED != 0,
                user_unwind_error: flags & FLAG_USER_UNWIND_ERROR != 0,
                python: python(key.python_stack),
                gil_wait: key.flags & FLAG_GIL_WAIT != 0,
                gpu_wait: key.flags & FLAG_GPU_WAIT != 0,
                trace: (key.flags & FLAG_TRACE_CONTEXT != 0).then_some(TraceContext {
                    trace_id: key.trace_id,
                    span_id: key.span_id,
                }),
                count: value.count * scale,
                nanos: value.nanos * scale,
            },
        ));
    }
    Ok(entries)
}

/// Stacks no entry referred to at the last sweep (by map): removed at the
/// next one if still unreferenced. Two sweeps, so that a stack the BPF side
/// stored a moment before writing the entry that refers to it is never
/// taken.
#[derive(Debug, Default)]
pub(super) struct Orphans {
    kernel: HashSet<u32>,
    user: HashSet<i32>,
    python: HashSet<i32>,
}

/// Removes the totals entries `read` came from, and every stack nothing has
/// referred to for two sweeps: those of blocks shorter than the minimum
/// (stored at switch-out, never totalled) and of threads that exited
/// asleep would otherwise fill the stack maps for good (found by the soak:
/// `offcpu_user_stacks` full after 15 minutes of process churn).
pub(super) fn remove_read(
    ebpf: &mut Ebpf,
    read: &[(RawKey, OffCpuEntry)],
    orphans: &mut Orphans,
) -> Result<(), LoadError> {
    {
        let mut totals: BpfHashMap<_, RawKey, RawValue> =
            open_mut(ebpf, "offcpu_totals", BpfHashMap::try_from)?;
        for (key, _) in read {
            // Gone already only if the map was changed under us: harmless.
            let _ = totals.remove(key);
        }
    }
    let mut in_use: HashSet<i32> = HashSet::new();
    let mut python_in_use: HashSet<i32> = HashSet::new();
    {
        let starts: BpfHashMap<_, u32, RawStart> =
            open(ebpf, "offcpu_start", BpfHashMap::try_from)?;
        for (_, start) in starts.iter().flatten() {
            in_use.extend(start.stack_ids());
            python_in_use.insert(start.python_stack);
        }
        let totals: BpfHashMap<_, RawKey, RawValue> =
            open(ebpf, "offcpu_totals", BpfHashMap::try_from)?;
        for key in totals.keys().flatten() {
            in_use.extend(key.stack_ids());
            python_in_use.insert(key.python_stack);
        }
    }
    {
        let mut stacks = open_mut(ebpf, "offcpu_stacks", StackTraceMap::try_from)?;
        let ids: Vec<u32> = stacks.stack_ids().flatten().collect();
        let unused = ids
            .into_iter()
            .filter(|&id| i32::try_from(id).is_ok_and(|i| !in_use.contains(&i)));
        sweep(&mut orphans.kernel, unused, |id| {
            let _ = stacks.remove(id);
        });
    }
    {
        let mut user_stacks: BpfHashMap<_, i32, RawUserStack> =
            open_mut(ebpf, "offcpu_user_stacks", BpfHashMap::try_from)?;
        let ids: Vec<i32> = user_stacks.keys().flatten().collect();
        let unused = ids.into_iter().filter(|id| !in_use.contains(id));
        sweep(&mut orphans.user, unused, |id| {
            let _ = user_stacks.remove(id);
        });
    }
    let mut python_stacks: BpfHashMap<_, i32, RawPythonStack> =
        open_mut(ebpf, "offcpu_python_stacks", BpfHashMap::try_from)?;
    let ids: Vec<i32> = python_stacks.keys().flatten().collect();
    let unused = ids.into_iter().filter(|id| !python_in_use.contains(id));
    sweep(&mut orphans.python, unused, |id| {
        let _ = python_stacks.remove(id);
    });
    Ok(())
}

/// Removes the ids of `unused` that were unused at the last sweep too; the
/// others wait for the next.
fn sweep<T: std::hash::Hash + Eq + Copy>(
    last: &mut HashSet<T>,
    unused: impl Iterator<Item = T>,
    mut remove: impl FnMut(&T),
) {
    let mut next = HashSet::new();
    for id in unused {
        if last.contains(&id) {
            remove(&id);
        } else {
            next.insert(id);
        }
    }
    *last = next;
}

fn open<'a, T>(
    ebpf: &'a Ebpf,
    name: &'static str,
    convert: impl FnOnce(&'a Map) -> Result<T, MapError>,
) -> Result<T, LoadError> {
    let map = ebpf.map(name).ok_or(LoadError::Missing(name))?;
    convert(map).map_err(|source| LoadError::Map { name, source })
}

fn open_mut<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(&'a mut Map) -> Result<T, MapError>,
) -> Result<T, LoadError> {
    let map = ebpf.map_mut(name).ok_or(LoadError::Missing(name))?;
    convert(map).map_err(|source| LoadError::Map { name, source })
}

impl RawKey {
    pub(super) fn stack_ids(&self) -> [i32; 2] {
        [self.kernel_stack, self.user_stack]
    }
}

impl RawStart {
    pub(super) fn stack_ids(&self) -> [i32; 2] {
        [self.kernel_stack, self.user_stack]
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn stacks_go_after_two_sweeps_unused() {
        let mut last = HashSet::new();
        let mut removed = Vec::new();
        sweep(&mut last, [1, 2].into_iter(), |id| removed.push(*id));
        assert!(removed.is_empty(), "one sweep is not enough");
        sweep(&mut last, [2, 3].into_iter(), |id| removed.push(*id));
        assert_eq!(removed, [2]);
        assert_eq!(last, HashSet::from([3]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: u32, bytes_for: usize) -> Vec<u8> {
        let mut raw = RawPythonStack {
            hash: 0xfeed,
            pid: 42,
            len,
            status: 1,
            id: 7,
            frames: [RawPython::default(); MAX_PYTHON_FRAMES],
        };
        raw.frames[0].code = 0x1000;
        raw.frames[0].instr = 6 | (1 << 31);
        raw.frames[1].code = 0x2000;
        // SAFETY: RawPythonStack is repr(C) plain old data without padding.
        let all = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const RawPythonStack).cast::<u8>(),
                RAW_PYTHON_STACK_SIZE,
            )
        };
        all[..RAW_PYTHON_STACK_BASE_SIZE + bytes_for * RAW_PYTHON_SIZE].to_vec()
    }

    #[test]
    fn python_stack_announcements_decode_with_their_frames() {
        let stack = OffCpuPython::try_from(record(2, 2).as_slice()).expect("decodes");
        assert_eq!((stack.hash, stack.pid), (0xfeed, 42));
        let codes: Vec<u64> = stack.frames.iter().map(|f| f.code).collect();
        assert_eq!(codes, [0x1000, 0x2000]);
        assert!(stack.frames[0].entry && stack.frames[0].instr == 6);
    }

    #[test]
    fn python_stack_lengths_are_checked() {
        // A length that disagrees with the record, or beyond the array.
        assert!(OffCpuPython::try_from(record(3, 2).as_slice()).is_err());
        assert!(OffCpuPython::try_from(record(500, 2).as_slice()).is_err());
        assert!(OffCpuPython::try_from(&record(0, 0)[..10]).is_err());
    }
}
