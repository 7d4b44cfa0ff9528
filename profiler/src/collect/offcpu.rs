//! Off-CPU data from the sampler object: per-thread totals of blocked time
//! aggregated in the kernel, the stacks they refer to, and announcements of
//! new threads. Mirrors `profiler-ebpf/include/offcpu.h`.

use std::collections::{HashMap, HashSet};
use std::mem::size_of;
use std::num::NonZeroU32;
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, Map, MapError, StackTraceMap};
use aya::Ebpf;

use super::record::{c_string, FLAG_USER_TRUNCATED, FLAG_USER_UNWIND_ERROR};
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

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct RawKey {
    pid: u32,
    tid: u32,
    kernel_stack: i32,
    user_stack: i32,
    mm_id: u64,
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
    pad: u32,
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

const _: () = assert!(size_of::<RawKey>() == 24);
const _: () = assert!(size_of::<RawValue>() == 16);
const _: () = assert!(size_of::<RawThread>() == 48);
const _: () = assert!(size_of::<RawStart>() == 32);

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
                count: value.count * scale,
                nanos: value.nanos * scale,
            },
        ));
    }
    Ok(entries)
}

/// Removes the totals entries `read` came from, and the stacks nothing refers
/// to any more (no remaining entry, no thread asleep on them).
pub(super) fn remove_read(
    ebpf: &mut Ebpf,
    read: &[(RawKey, OffCpuEntry)],
) -> Result<(), LoadError> {
    let mut read_ids: HashSet<i32> = HashSet::new();
    {
        let mut totals: BpfHashMap<_, RawKey, RawValue> =
            open_mut(ebpf, "offcpu_totals", BpfHashMap::try_from)?;
        for (key, _) in read {
            read_ids.extend(key.stack_ids());
            // Gone already only if the map was changed under us: harmless.
            let _ = totals.remove(key);
        }
    }
    let mut in_use: HashSet<i32> = HashSet::new();
    {
        let starts: BpfHashMap<_, u32, RawStart> =
            open(ebpf, "offcpu_start", BpfHashMap::try_from)?;
        in_use.extend(
            starts
                .iter()
                .flatten()
                .flat_map(|(_, start)| start.stack_ids()),
        );
        let totals: BpfHashMap<_, RawKey, RawValue> =
            open(ebpf, "offcpu_totals", BpfHashMap::try_from)?;
        in_use.extend(totals.keys().flatten().flat_map(|key| key.stack_ids()));
    }
    let unused: Vec<i32> = read_ids.difference(&in_use).copied().collect();
    {
        let mut stacks = open_mut(ebpf, "offcpu_stacks", StackTraceMap::try_from)?;
        for id in unused.iter().filter(|id| !is_dwarf_id(**id)) {
            if let Ok(id) = u32::try_from(*id) {
                let _ = stacks.remove(&id);
            }
        }
    }
    let mut user_stacks: BpfHashMap<_, i32, RawUserStack> =
        open_mut(ebpf, "offcpu_user_stacks", BpfHashMap::try_from)?;
    for id in unused.iter().filter(|id| is_dwarf_id(**id)) {
        let _ = user_stacks.remove(id);
    }
    Ok(())
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
