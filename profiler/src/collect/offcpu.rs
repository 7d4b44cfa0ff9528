//! Off-CPU data from the sampler object: per-thread totals of blocked time
//! aggregated in the kernel, the stacks they refer to, and announcements of
//! new threads. Mirrors `profiler-ebpf/include/offcpu.h`.

use std::collections::HashMap;
use std::mem::size_of;
use std::num::NonZeroU32;
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData, StackTraceMap};

use super::record::c_string;
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
            return Err(super::DecodeError::Size { got: bytes.len() });
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
    /// Number of blocks (scaled by the sampling rate).
    pub count: u64,
    /// Total blocked time (scaled by the sampling rate).
    pub nanos: u64,
}

/// Reads every totals entry and resolves its stack ids; the raw keys come
/// along so the caller can remove what it read.
pub(super) fn read_totals(
    totals: &BpfHashMap<&MapData, RawKey, RawValue>,
    stacks: &StackTraceMap<&MapData>,
    scale: u64,
) -> Result<Vec<(RawKey, OffCpuEntry)>, LoadError> {
    let mut cache: HashMap<i32, Vec<u64>> = HashMap::new();
    let mut stack = |id: i32| -> Vec<u64> {
        if id < 0 {
            return Vec::new();
        }
        cache
            .entry(id)
            .or_insert_with(|| {
                stacks
                    .get(&(id as u32), 0)
                    .map(|trace| trace.frames().iter().map(|f| f.ip).collect())
                    .unwrap_or_default()
            })
            .clone()
    };
    let mut entries = Vec::new();
    for item in totals.iter() {
        let (key, value) = item.map_err(|source| LoadError::Map {
            name: "offcpu_totals",
            source,
        })?;
        entries.push((
            key,
            OffCpuEntry {
                pid: key.pid,
                tid: key.tid,
                mm_id: key.mm_id,
                kernel: stack(key.kernel_stack),
                user: stack(key.user_stack),
                count: value.count * scale,
                nanos: value.nanos * scale,
            },
        ));
    }
    Ok(entries)
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
