//! Turns what the CUDA probes saw into the two aggregates smolder profiles:
//! launches and time in sync calls. The probes count every call exactly and
//! sample some with their stacks; each period's exact totals are shared out
//! among the stacks sampled for the same process, API and function, so the
//! profile's totals are the exact ones and the stacks are a sample.

use std::collections::HashMap;
use std::sync::Arc;

use symbolizer::python::PythonFrame;
use symbolizer::Symbolizer;

use crate::aggregate::{Aggregate, GpuMark, StackKey, Weight};
use crate::collect::{
    CallKind, CudaApi, CudaEvent, CudaKey, CudaLibrary, CudaName, CudaTotal, Sampler,
};
use crate::go::LabelSet;
use crate::profile::GpuWait;
use crate::unwind;

/// Attaches the CUDA probes to the libraries of the processes in `pids`
/// that map one (at start: they run already).
pub fn attach_running(sampler: &mut Sampler, symbolizer: &mut Symbolizer, pids: &[u32]) {
    for &pid in pids {
        if maps_mention_cuda(pid) {
            if let Ok(maps) = symbolizer.snapshot_process(pid) {
                sampler.cuda_follow(&maps);
            }
        }
    }
}

/// Attaches the CUDA probes to the libraries that target processes mapped
/// since the last call (announced by the BPF mapping recorder), and loads
/// those processes' unwind tables: their first launches are often the
/// moment they are first seen, and a stack walked before its tables are in
/// stops short.
pub fn attach_announced(sampler: &mut Sampler, symbolizer: &mut Symbolizer) {
    let pids = sampler.take_cuda_library_pids();
    if pids.is_empty() {
        return;
    }
    let snapshots: Vec<_> = pids
        .iter()
        .filter_map(|&pid| symbolizer.snapshot_process(pid).ok())
        .collect();
    if let Some(tables) = sampler.unwind_tables() {
        for maps in &snapshots {
            tables.add_process(maps.pid, 0, maps);
        }
        tables.finish_pending(unwind::NEW_TABLES_WAIT);
    }
    for maps in &snapshots {
        sampler.cuda_follow(maps);
    }
}

/// Whether `/proc/PID/maps` names a CUDA library (a cheap text search
/// before the maps are parsed).
fn maps_mention_cuda(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/maps"))
        .is_ok_and(|text| text.windows(8).any(|w| w == b"/libcuda"))
}

/// A sampled call, kept until its period's totals are read.
#[derive(Debug, Clone)]
struct SampledCall {
    stack: StackKey,
    comm: String,
    thread_name: String,
    /// Wait: the time this call took (spin, blocked).
    spin_ns: u64,
    blocked_ns: u64,
}

/// The most keys whose last stack is remembered (the BPF totals map holds
/// as many).
const MAX_REMEMBERED: usize = 16384;

/// The most function handles named (a process with Triton has a few
/// thousand).
const MAX_NAMES: usize = 65536;

#[derive(Debug, Default)]
pub struct GpuCalls {
    /// Calls sampled since the last [`GpuCalls::share_out`], by key.
    sampled: HashMap<CudaKey, Vec<SampledCall>>,
    /// The last call sampled for each key: what a period without a sampled
    /// stack of its own is attributed to.
    last: HashMap<CudaKey, SampledCall>,
    /// Totals attributed to a remembered stack rather than one of their
    /// period (calls).
    pub carried_over: u64,
    /// ... to no stack at all (`[stack not sampled]`).
    pub unsampled: u64,
    /// The address space of each process seen (for stacks not sampled).
    mm_ids: HashMap<u32, u64>,
    /// Processes found gone at the last [`GpuCalls::reap`].
    gone: Vec<u32>,
    /// Kernel names of the function handles the driver handed out, by
    /// process and handle.
    names: HashMap<(u32, u64), Arc<str>>,
    /// Handles not named because `names` was full.
    pub names_dropped: u64,
}

impl GpuCalls {
    /// Learns the kernel name of a function handle the driver handed out.
    pub fn learn_name(&mut self, name: CudaName) {
        let known = if name.alias != 0 {
            match self.names.get(&(name.pid, name.alias)) {
                Some(known) => known.clone(),
                None => return,
            }
        } else if name.name.is_empty() {
            return;
        } else {
            Arc::from(name.name.as_str())
        };
        if self.names.len() >= MAX_NAMES && !self.names.contains_key(&(name.pid, name.handle)) {
            self.names_dropped += 1;
            return;
        }
        self.names.insert((name.pid, name.handle), known);
    }

    /// The kernel name of a driver launch's handle, if it was handed out
    /// while smolder watched.
    fn name_of(&self, api: &CudaApi, pid: u32, func: u64) -> Option<Arc<str>> {
        if api.library != CudaLibrary::Driver || api.kind != CallKind::Launch {
            return None;
        }
        self.names.get(&(pid, func)).cloned()
    }

    /// Keeps a sampled call, its Python frames already named.
    pub fn add(&mut self, event: CudaEvent, python: Box<[PythonFrame]>, labels: Option<LabelSet>) {
        let sample = event.sample;
        self.mm_ids.insert(sample.pid, sample.mm_id);
        let key = CudaKey {
            pid: sample.pid,
            api: u32::from(event.api.id),
            func: event.func,
        };
        let gpu = match event.api.kind {
            CallKind::Wait => GpuMark::Wait {
                api: event.api,
                part: GpuWait::Spin,
            },
            _ => GpuMark::Launch {
                api: event.api,
                func: event.func,
                name: self.name_of(event.api, sample.pid, event.func),
            },
        };
        let stack = StackKey {
            pid: sample.pid,
            tid: sample.tid,
            mm_id: sample.mm_id,
            kernel: Box::new([]),
            user: sample.user.into_boxed_slice(),
            truncated: sample.user_truncated,
            unwind_error: sample.user_unwind_error,
            python,
            trace: sample.trace,
            gil_wait: false,
            labels,
            gpu: Some(gpu),
        };
        self.sampled.entry(key).or_default().push(SampledCall {
            stack,
            comm: sample.comm,
            thread_name: sample.thread_name,
            spin_ns: event.spin_ns,
            blocked_ns: event.blocked_ns,
        });
    }

    /// Shares out the exact `totals` of a period among the calls sampled in
    /// it: launches into `launches`, sync calls into `waits`.
    pub fn share_out(
        &mut self,
        totals: Vec<(CudaKey, CudaTotal)>,
        launches: &mut Aggregate,
        waits: &mut Aggregate,
    ) {
        let mut sampled = std::mem::take(&mut self.sampled);
        for (key, total) in totals {
            let Some(api) = CudaApi::by_id(key.api) else {
                continue;
            };
            let calls = match sampled.remove(&key) {
                Some(calls) if !calls.is_empty() => {
                    self.remember(key, &calls[calls.len() - 1]);
                    calls
                }
                _ => match self.last.get(&key) {
                    Some(call) => {
                        self.carried_over += total.calls;
                        vec![call.clone()]
                    }
                    None => {
                        self.unsampled += total.calls;
                        let mm_id = self.mm_ids.get(&key.pid).copied().unwrap_or(0);
                        let name = self.name_of(api, key.pid, key.func);
                        vec![unsampled_call(key, mm_id, api, name)]
                    }
                },
            };
            match api.kind {
                CallKind::Launch | CallKind::GraphLaunch => share_launches(&calls, total, launches),
                CallKind::Wait => share_waits(&calls, total, waits),
                CallKind::HandOut => {}
            }
        }
        // Calls sampled but not in these totals (counted in the next
        // period's) wait for them.
        for (key, calls) in sampled {
            if !calls.is_empty() {
                self.sampled.insert(key, calls);
            }
        }
    }

    fn remember(&mut self, key: CudaKey, call: &SampledCall) {
        if self.last.len() >= MAX_REMEMBERED && !self.last.contains_key(&key) {
            return;
        }
        self.last.insert(key, call.clone());
    }

    /// Forgets the processes found gone at the previous call: the last
    /// calls of a process that exits are counted with the next period's
    /// totals, and share out among its stacks kept until then.
    pub fn reap(&mut self, alive: impl Fn(u32) -> bool) {
        let gone = std::mem::take(&mut self.gone);
        self.last.retain(|k, _| !gone.contains(&k.pid));
        self.sampled.retain(|k, _| !gone.contains(&k.pid));
        self.mm_ids.retain(|pid, _| !gone.contains(pid));
        self.names.retain(|(pid, _), _| !gone.contains(pid));
        let mut pids: Vec<u32> = self.mm_ids.keys().copied().collect();
        pids.extend(self.last.keys().map(|k| k.pid));
        pids.sort_unstable();
        pids.dedup();
        self.gone = pids.into_iter().filter(|&pid| !alive(pid)).collect();
    }
}

fn unsampled_call(
    key: CudaKey,
    mm_id: u64,
    api: &'static CudaApi,
    name: Option<Arc<str>>,
) -> SampledCall {
    let gpu = match api.kind {
        CallKind::Wait => GpuMark::Wait {
            api,
            part: GpuWait::Spin,
        },
        _ => GpuMark::Launch {
            api,
            func: key.func,
            name,
        },
    };
    SampledCall {
        stack: StackKey {
            pid: key.pid,
            tid: 0,
            mm_id,
            kernel: Box::new([]),
            user: Box::new([]),
            truncated: false,
            unwind_error: false,
            python: Box::new([]),
            trace: None,
            gil_wait: false,
            labels: None,
            gpu: Some(gpu),
        },
        comm: String::new(),
        thread_name: String::new(),
        spin_ns: 0,
        blocked_ns: 0,
    }
}

/// `total` split in parts proportional to `weights` (evenly when they are
/// all 0), summing to `total` exactly.
fn shares(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let n = weights.len() as u128;
    let mut cumulative: u128 = 0;
    let mut given: u64 = 0;
    weights
        .iter()
        .map(|&w| {
            cumulative += if sum == 0 { 1 } else { u128::from(w) };
            let whole = if sum == 0 { n } else { sum };
            let upto = (u128::from(total) * cumulative / whole) as u64;
            let share = upto - given;
            given = upto;
            share
        })
        .collect()
}

fn add(aggregate: &mut Aggregate, call: &SampledCall, stack: StackKey, weight: Weight) {
    if stack.tid != 0 {
        aggregate.name_thread(stack.tid, call.comm.clone(), call.thread_name.clone());
    }
    aggregate.add_weighted(stack, weight);
}

fn share_launches(calls: &[SampledCall], total: CudaTotal, launches: &mut Aggregate) {
    let counts = shares(total.calls, &vec![1; calls.len()]);
    for (call, count) in calls.iter().zip(counts) {
        if count > 0 {
            let weight = Weight { count, nanos: 0 };
            add(launches, call, call.stack.clone(), weight);
        }
    }
}

/// Each sampled call gets its share of the calls, and of the time on and
/// off CPU in proportion to its own; the calls are counted with the spin
/// part.
fn share_waits(calls: &[SampledCall], total: CudaTotal, waits: &mut Aggregate) {
    let counts = shares(total.calls, &vec![1; calls.len()]);
    let spins: Vec<u64> = calls.iter().map(|c| c.spin_ns).collect();
    let blocks: Vec<u64> = calls.iter().map(|c| c.blocked_ns).collect();
    let spin = shares(total.spin_ns, &spins);
    let blocked = shares(total.blocked_ns, &blocks);
    for (i, call) in calls.iter().enumerate() {
        let Some(GpuMark::Wait { api, .. }) = call.stack.gpu else {
            continue;
        };
        let part = |part| {
            let mut stack = call.stack.clone();
            stack.gpu = Some(GpuMark::Wait { api, part });
            stack
        };
        if counts[i] > 0 || spin[i] > 0 {
            let weight = Weight {
                count: counts[i],
                nanos: spin[i],
            };
            add(waits, call, part(GpuWait::Spin), weight);
        }
        if blocked[i] > 0 {
            let weight = Weight {
                count: 0,
                nanos: blocked[i],
            };
            add(waits, call, part(GpuWait::Blocked), weight);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hand_out(pid: u32, handle: u64, name: &str, alias: u64) -> CudaName {
        CudaName {
            pid,
            handle,
            name: name.into(),
            alias,
        }
    }

    #[test]
    fn driver_handles_are_named_through_their_kernels() {
        let launch = CudaApi::by_id(20).unwrap(); // cuLaunchKernel
        let runtime = CudaApi::by_id(1).unwrap(); // cudaLaunchKernel
        let mut calls = GpuCalls::default();
        calls.learn_name(hand_out(7, 0x10, "triton_poi_fused_add_0", 0));
        calls.learn_name(hand_out(7, 0x20, "_Z6kernelPf", 0));
        // cuKernelGetFunction: 0x30 is the function of kernel 0x20.
        calls.learn_name(hand_out(7, 0x30, "", 0x20));
        // An alias of a kernel never seen names nothing.
        calls.learn_name(hand_out(7, 0x40, "", 0x99));
        let name = |pid, func| calls.name_of(launch, pid, func).map(|n| n.to_string());
        assert_eq!(name(7, 0x10).as_deref(), Some("triton_poi_fused_add_0"));
        assert_eq!(name(7, 0x30).as_deref(), Some("_Z6kernelPf"));
        assert_eq!(name(7, 0x40), None);
        assert_eq!(name(8, 0x10), None, "handles are per process");
        // Runtime launches are named by their host function instead.
        assert_eq!(calls.name_of(runtime, 7, 0x10), None);
        // Gone processes are forgotten (at the second reap).
        calls.mm_ids.insert(7, 1);
        calls.reap(|_| false);
        calls.reap(|_| false);
        assert!(calls.names.is_empty());
    }

    #[test]
    fn shares_sum_to_the_total() {
        assert_eq!(shares(10, &[1, 1, 1]), vec![3, 3, 4]);
        assert_eq!(shares(7, &[0, 0]), vec![3, 4]);
        assert_eq!(shares(100, &[1, 3]), vec![25, 75]);
        assert_eq!(shares(0, &[5]), vec![0]);
        let many = shares(1_000_003, &[7, 11, 13, 0, 2]);
        assert_eq!(many.iter().sum::<u64>(), 1_000_003);
    }
}
