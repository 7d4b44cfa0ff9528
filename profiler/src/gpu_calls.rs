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

    fn event(api: u16, func: u64, user: &[u64], spin_ns: u64, blocked_ns: u64) -> CudaEvent {
        CudaEvent {
            api: CudaApi::by_id(u32::from(api)).unwrap(),
            func,
            spin_ns,
            blocked_ns,
            sample: crate::collect::Sample {
                pid: 7,
                tid: 8,
                time_ns: 0,
                mm_id: 1,
                cpu: 0,
                comm: "server".into(),
                thread_name: "worker".into(),
                kernel: Vec::new(),
                user: user.to_vec(),
                kernel_truncated: false,
                user_truncated: false,
                user_unwind_error: false,
                user_unmapped: false,
                kernel_error: None,
                user_error: None,
                python: Vec::new(),
                python_status: Default::default(),
                exec_vm: 0,
                trace: None,
                go_labels: 0,
                in_gpu_wait: false,
            },
        }
    }

    fn total(calls: u64, spin_ns: u64, blocked_ns: u64) -> CudaTotal {
        CudaTotal {
            calls,
            spin_ns,
            blocked_ns,
        }
    }

    fn key(api: u32, func: u64) -> CudaKey {
        CudaKey { pid: 7, api, func }
    }

    /// Weights by user stack (empty: not sampled).
    fn weights(aggregate: &Aggregate) -> Vec<(Vec<u64>, u64, u64)> {
        let mut out: Vec<_> = aggregate
            .stacks
            .iter()
            .map(|(k, w)| (k.user.to_vec(), w.count, w.nanos))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn exact_totals_are_shared_out_among_the_sampled_stacks() {
        let mut calls = GpuCalls::default();
        // Two launch sites of one kernel sampled, a third call of it, and a
        // kernel never sampled.
        calls.add(event(1, 0xa0, &[1, 2], 0, 0), Box::default(), None);
        calls.add(event(1, 0xa0, &[1, 3], 0, 0), Box::default(), None);
        calls.add(event(1, 0xa0, &[1, 3], 0, 0), Box::default(), None);
        let (mut launches, mut waits) = (Aggregate::new(0), Aggregate::new(0));
        let totals = vec![
            (key(1, 0xa0), total(10, 0, 0)),
            (key(1, 0xb0), total(4, 0, 0)),
        ];
        calls.share_out(totals, &mut launches, &mut waits);
        assert_eq!(
            weights(&launches),
            vec![(vec![], 4, 0), (vec![1, 2], 3, 0), (vec![1, 3], 7, 0)]
        );
        assert_eq!(calls.unsampled, 4);
        // A period without a sampled stack of its own: the last one.
        let (mut launches, mut waits) = (Aggregate::new(0), Aggregate::new(0));
        calls.share_out(
            vec![(key(1, 0xa0), total(5, 0, 0))],
            &mut launches,
            &mut waits,
        );
        assert_eq!(weights(&launches), vec![(vec![1, 3], 5, 0)]);
        assert_eq!(calls.carried_over, 5);

        // Waits: calls with the spin part, time in proportion to each
        // sampled call's own.
        calls.add(event(41, 0, &[9], 100, 300), Box::default(), None);
        calls.add(event(41, 0, &[8], 300, 100), Box::default(), None);
        let (mut launches, mut waits) = (Aggregate::new(0), Aggregate::new(0));
        calls.share_out(
            vec![(key(41, 0), total(6, 4000, 4000))],
            &mut launches,
            &mut waits,
        );
        let mut parts: Vec<_> = waits
            .stacks
            .iter()
            .map(|(k, w)| {
                (
                    k.user.to_vec(),
                    k.gpu.as_ref().and_then(GpuMark::wait),
                    w.count,
                    w.nanos,
                )
            })
            .collect();
        parts.sort_by_key(|p| (p.0.clone(), p.1 == Some(GpuWait::Blocked)));
        assert_eq!(
            parts,
            vec![
                (vec![8], Some(GpuWait::Spin), 3, 3000),
                (vec![8], Some(GpuWait::Blocked), 0, 1000),
                (vec![9], Some(GpuWait::Spin), 3, 1000),
                (vec![9], Some(GpuWait::Blocked), 0, 3000),
            ]
        );
        assert_eq!(launches.samples, 0);
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
