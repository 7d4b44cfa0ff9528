//! Symbolize stage: turns raw aggregated stacks into a [`Profile`].

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use symbolizer::python::PythonFrame;
use symbolizer::{
    ExecRegion, FrameAddress, FunctionFrame, RegionKind, Resolution, Symbolizer, UserLocation,
};

use crate::aggregate::{Aggregate, GpuMark, StackKey, ThreadNames};
use crate::collect::{CallKind, CudaApi, CudaLibrary};
use crate::processes::ProcessTracker;
use crate::profile::{Location, Mapping, Profile, ProfileKind, ProfileSample};
use crate::python::{merge, Interpreter, Merged, NativeFrameKind};

/// Frames the BPF machinery itself adds at the top of kernel stacks.
const BPF_FRAME_PREFIXES: &[&str] = &[
    "bpf_prog_",
    "bpf_trace_run",
    "__bpf_trace_",
    "bpf_overflow_handler",
    "__traceiter_",
];

/// How many leaf frames of a kernel stack are smolder's own BPF program
/// and the tracing machinery that called it: the leading frames that are
/// BPF machinery or unknown, up to the last named one (the JIT'ed program
/// itself has no symbol when the kernel's list was read before it loaded;
/// an unknown leaf without machinery after it is kept).
fn bpf_frames_at_leaf(resolved: &[(Resolution, Option<String>)]) -> usize {
    let is_bpf = |r: &Resolution| match r {
        Resolution::Symbols(frames) => frames
            .iter()
            .any(|f| BPF_FRAME_PREFIXES.iter().any(|p| f.name.starts_with(p))),
        Resolution::Unknown(_) => false,
    };
    resolved
        .iter()
        .take_while(|(r, _)| is_bpf(r) || matches!(r, Resolution::Unknown(_)))
        .enumerate()
        .filter(|(_, (r, _))| is_bpf(r))
        .map(|(i, _)| i + 1)
        .last()
        .unwrap_or(0)
}

/// Window facts the profile records.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: SystemTime,
    pub duration: Duration,
    pub kind: ProfileKind,
}

#[derive(Hash, PartialEq, Eq)]
enum LocationKey {
    User {
        pid: u32,
        mm_id: u64,
        address: u64,
    },
    Kernel(u64),
    Truncated,
    UnwindError,
    /// A launch's leaf: the function (or graph) it launched.
    CudaLaunch {
        pid: u32,
        mm_id: u64,
        api: u16,
        func: u64,
    },
    /// A sync call's leaf.
    GpuWait(&'static str),
    /// A CUDA call whose stack was not sampled.
    NotSampled,
    Python {
        function: std::sync::Arc<str>,
        file: std::sync::Arc<str>,
        line: Option<u32>,
    },
}

#[derive(Hash, PartialEq, Eq)]
enum MappingKey {
    User { pid: u32, mm_id: u64, start: u64 },
    Kernel(Option<String>),
}

struct Builder<'a> {
    symbolizer: &'a mut Symbolizer,
    locations: Vec<Location>,
    location_ids: HashMap<LocationKey, usize>,
    mappings: Vec<Mapping>,
    mapping_ids: HashMap<MappingKey, usize>,
    /// Interpreter module of each Python process, by pid.
    python_modules: &'a HashMap<u32, Interpreter>,
}

/// Symbolizes every stack of `aggregate`. The stacks of processes in
/// `python_modules` get their Python frames merged in.
pub fn symbolize(
    aggregate: &Aggregate,
    processes: &mut ProcessTracker,
    symbolizer: &mut Symbolizer,
    python_modules: &HashMap<u32, Interpreter>,
    window: Window,
) -> Profile {
    refresh_stale_snapshots(aggregate, processes, symbolizer);
    let mut builder = Builder {
        symbolizer,
        locations: Vec::new(),
        location_ids: HashMap::new(),
        mappings: Vec::new(),
        mapping_ids: HashMap::new(),
        python_modules,
    };
    let unnamed = ThreadNames {
        comm: String::new(),
        thread_name: String::new(),
    };
    let mut samples: Vec<ProfileSample> = aggregate
        .stacks
        .iter()
        .map(|(key, weight)| {
            let names = aggregate.threads.get(&key.tid).unwrap_or(&unnamed);
            ProfileSample {
                pid: key.pid,
                tid: key.tid,
                comm: names.comm.clone(),
                thread_name: names.thread_name.clone(),
                locations: builder.stack(key, processes),
                count: weight.count,
                nanos: weight.nanos,
                trace: key.trace,
                gil_wait: key.gil_wait,
                labels: key.labels.clone(),
                gpu_wait: key.gpu.as_ref().and_then(GpuMark::wait),
            }
        })
        .collect();
    samples.sort_by(|a, b| {
        (b.nanos, b.count)
            .cmp(&(a.nanos, a.count))
            .then(a.pid.cmp(&b.pid))
            .then(a.locations.cmp(&b.locations))
    });
    Profile {
        start: window.start,
        duration: window.duration,
        kind: window.kind,
        samples,
        locations: builder.locations,
        mappings: builder.mappings,
    }
}

/// A process that loaded a library after its snapshot has addresses outside
/// every known mapping: read its maps again while it still lives.
fn refresh_stale_snapshots(
    aggregate: &Aggregate,
    processes: &mut ProcessTracker,
    symbolizer: &mut Symbolizer,
) {
    let mut stale: Vec<(u32, u64)> = aggregate
        .stacks
        .keys()
        .filter(|k| match processes.maps(k.pid, k.mm_id) {
            Some(maps) => k
                .user
                .iter()
                .any(|&a| maps.find(a.saturating_sub(1)).is_none()),
            None => false,
        })
        .map(|k| (k.pid, k.mm_id))
        .collect();
    stale.sort_unstable();
    stale.dedup();
    for (pid, mm_id) in stale {
        processes.refresh(pid, mm_id, symbolizer);
    }
}

impl Builder<'_> {
    /// Location ids of a stack, leaf first: kernel frames, then user frames.
    fn stack(&mut self, key: &StackKey, processes: &ProcessTracker) -> Vec<usize> {
        let mut ids = Vec::with_capacity(key.kernel.len() + key.user.len() + 2);
        match &key.gpu {
            Some(GpuMark::Launch { api, func, name }) => {
                ids.push(self.launch_location(key, api, *func, name.as_deref(), processes));
            }
            Some(GpuMark::Wait { api, .. }) => {
                let name = format!("[gpu wait] {}", api.name);
                ids.push(self.marker(LocationKey::GpuWait(api.name), &name));
            }
            Some(GpuMark::Inside(_)) | None => {}
        }
        let called = matches!(key.gpu, Some(GpuMark::Launch { .. } | GpuMark::Wait { .. }));
        if called && key.kernel.is_empty() && key.user.is_empty() && key.python.is_empty() {
            // Counted, but no stack of it was sampled.
            ids.push(self.marker(LocationKey::NotSampled, "[stack not sampled]"));
            return ids;
        }
        self.kernel_frames(&key.kernel, &mut ids);
        if key.python.is_empty() {
            self.user_frames(key, processes, &mut ids);
        } else {
            let mut native = Vec::with_capacity(key.user.len());
            self.user_frames(key, processes, &mut native);
            self.merge_python(key, &native, &mut ids);
        }
        // Root markers: the stack goes on past what was recorded.
        if key.truncated {
            ids.push(self.marker(LocationKey::Truncated, "[truncated]"));
        }
        if key.unwind_error {
            ids.push(self.marker(LocationKey::UnwindError, "[unwind error]"));
        }
        ids
    }

    /// Puts the Python frames of `key` in place of the interpreter's frames
    /// in `native` (location ids, leaf first).
    fn merge_python(&mut self, key: &StackKey, native: &[usize], ids: &mut Vec<usize>) {
        let interpreter = self.python_modules.get(&key.pid);
        let module = interpreter.map(|i| i.module.display().to_string());
        let classified: Vec<(usize, NativeFrameKind)> = native
            .iter()
            .map(|&id| {
                let location = &self.locations[id];
                let in_interpreter = match (location.mapping, &module) {
                    (Some(m), Some(module)) => self.mappings[m].file == *module,
                    _ => false,
                };
                // The eval loop's code, named or not (a stripped
                // interpreter's split-off loop has no name).
                let in_eval_code = interpreter
                    .is_some_and(|i| i.eval_code.iter().any(|r| r.contains(&location.address)));
                if in_eval_code {
                    return (id, NativeFrameKind::Eval);
                }
                // The real frame is the outermost; inlined ones come first.
                let name = location.frames.last().map_or("", |f| f.name.as_str());
                (id, NativeFrameKind::of(name, in_interpreter))
            })
            .collect();
        for frame in merge(&classified, &key.python) {
            let id = match frame {
                Merged::Native(id) => id,
                Merged::Python(f) => self.python_location(f),
            };
            ids.push(id);
        }
    }

    fn python_location(&mut self, frame: &PythonFrame) -> usize {
        let key = LocationKey::Python {
            function: frame.function.clone(),
            file: frame.file.clone(),
            line: frame.line,
        };
        self.location(key, |_| Location {
            mapping: None,
            address: 0,
            frames: vec![FunctionFrame {
                name: frame.function.to_string(),
                system_name: frame.function.to_string(),
                file: Some(frame.file.to_string()),
                line: frame.line,
                inlined: false,
            }],
        })
    }

    /// `[cuda] NAME`: the host function a runtime launch was given, named
    /// as a frame of its process is; a driver launch's `CUfunction` and a
    /// graph by their handles.
    fn launch_location(
        &mut self,
        key: &StackKey,
        api: &'static CudaApi,
        func: u64,
        known: Option<&str>,
        processes: &ProcessTracker,
    ) -> usize {
        let location_key = LocationKey::CudaLaunch {
            pid: key.pid,
            mm_id: key.mm_id,
            api: api.id,
            func,
        };
        self.location(location_key, |b| {
            let name = match (api.kind, api.library, known) {
                (CallKind::GraphLaunch, _, _) => format!("graph 0x{func:x}"),
                (_, _, Some(name)) => symbolizer::demangle(name),
                (_, CudaLibrary::Driver, None) => format!("function 0x{func:x}"),
                _ => b.function_name(key, func, processes),
            };
            Location {
                mapping: None,
                address: 0,
                frames: vec![FunctionFrame::named(&format!("[cuda] {name}"))],
            }
        })
    }

    /// The function at `address` in the process of `key` (its outermost
    /// frame where inlined ones share the address), or `module+0xoffset`.
    fn function_name(
        &mut self,
        key: &StackKey,
        address: u64,
        processes: &ProcessTracker,
    ) -> String {
        let Some(maps) = processes.maps(key.pid, key.mm_id) else {
            return format!("[unknown]+0x{address:x}");
        };
        let resolved = self
            .symbolizer
            .symbolize_user(maps, &[FrameAddress::at_depth(address, 0)]);
        match resolved.into_iter().next() {
            Some(UserLocation {
                resolution: Resolution::Symbols(frames),
                ..
            }) if !frames.is_empty() => frames[frames.len() - 1].name.clone(),
            Some(location) => unknown_name(location.region.as_ref(), address),
            None => format!("[unknown]+0x{address:x}"),
        }
    }

    /// A location with no address, only a name.
    fn marker(&mut self, key: LocationKey, name: &str) -> usize {
        self.location(key, |_| Location {
            mapping: None,
            address: 0,
            frames: vec![FunctionFrame::named(name)],
        })
    }

    fn kernel_frames(&mut self, stack: &[u64], ids: &mut Vec<usize>) {
        let addresses: Vec<FrameAddress> = stack
            .iter()
            .enumerate()
            .map(|(d, &a)| FrameAddress::at_depth(a, d))
            .collect();
        let resolved = self.symbolizer.symbolize_kernel(&addresses);
        let skip = bpf_frames_at_leaf(&resolved);
        for (address, (resolution, module)) in addresses.iter().zip(resolved).skip(skip) {
            let raw = address.raw();
            let id = self.location(LocationKey::Kernel(raw), |b| {
                let mapping = Some(b.kernel_mapping(module.clone()));
                let frames = match resolution {
                    Resolution::Symbols(frames) => frames,
                    Resolution::Unknown(_) => {
                        vec![FunctionFrame::named(&format!("[kernel]+0x{raw:x}"))]
                    }
                };
                Location {
                    mapping,
                    address: raw,
                    frames,
                }
            });
            ids.push(id);
        }
    }

    fn user_frames(&mut self, key: &StackKey, processes: &ProcessTracker, ids: &mut Vec<usize>) {
        let addresses: Vec<FrameAddress> = key
            .user
            .iter()
            .enumerate()
            .map(|(d, &a)| FrameAddress::at_depth(a, d))
            .collect();
        // Only addresses not yet in the profile need the symbolizer.
        let needed: Vec<bool> = addresses
            .iter()
            .map(|a| !self.location_ids.contains_key(&user_key(key, a.raw())))
            .collect();
        let resolved: Vec<UserLocation> = match processes.maps(key.pid, key.mm_id) {
            Some(maps) => {
                let fresh: Vec<FrameAddress> = addresses
                    .iter()
                    .zip(&needed)
                    .filter(|(_, &n)| n)
                    .map(|(a, _)| *a)
                    .collect();
                self.symbolizer.symbolize_user(maps, &fresh)
            }
            None => Vec::new(),
        };
        let mut resolved = resolved.into_iter();
        for (address, needed) in addresses.into_iter().zip(needed) {
            let location = if needed { resolved.next() } else { None };
            let raw = address.raw();
            let id = self.location(user_key(key, raw), |b| b.user_location(key, raw, location));
            ids.push(id);
        }
    }

    fn user_location(
        &mut self,
        key: &StackKey,
        raw: u64,
        location: Option<UserLocation>,
    ) -> Location {
        let Some(location) = location else {
            return Location {
                mapping: None,
                address: raw,
                frames: vec![FunctionFrame::named(&format!("[unknown]+0x{raw:x}"))],
            };
        };
        let mapping = location.region.as_ref().map(|r| self.user_mapping(key, r));
        let frames = match location.resolution {
            Resolution::Symbols(frames) => frames,
            Resolution::Unknown(_) => vec![FunctionFrame::named(&unknown_name(
                location.region.as_ref(),
                raw,
            ))],
        };
        Location {
            mapping,
            address: raw,
            frames,
        }
    }

    fn location(&mut self, key: LocationKey, make: impl FnOnce(&mut Self) -> Location) -> usize {
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        let location = make(self);
        let id = self.locations.len();
        self.locations.push(location);
        self.location_ids.insert(key, id);
        id
    }

    fn user_mapping(&mut self, key: &StackKey, region: &ExecRegion) -> usize {
        let mkey = MappingKey::User {
            pid: key.pid,
            mm_id: key.mm_id,
            start: region.start,
        };
        if let Some(&id) = self.mapping_ids.get(&mkey) {
            return id;
        }
        let (file, build_id) = match &region.kind {
            RegionKind::Module(m) => (
                m.path.display().to_string(),
                m.build_id.as_ref().map(|b| b.to_string()),
            ),
            RegionKind::Anonymous => ("[anon]".to_owned(), None),
            RegionKind::Pseudo(name) => (name.clone(), None),
        };
        self.push_mapping(
            mkey,
            Mapping {
                start: region.start,
                limit: region.end,
                offset: region.offset,
                file,
                build_id,
            },
        )
    }

    fn kernel_mapping(&mut self, module: Option<String>) -> usize {
        let file = match &module {
            Some(name) => format!("[{name}]"),
            None => "[kernel.kallsyms]".to_owned(),
        };
        let mkey = MappingKey::Kernel(module);
        if let Some(&id) = self.mapping_ids.get(&mkey) {
            return id;
        }
        self.push_mapping(
            mkey,
            Mapping {
                start: 0,
                limit: 0,
                offset: 0,
                file,
                build_id: None,
            },
        )
    }

    fn push_mapping(&mut self, key: MappingKey, mapping: Mapping) -> usize {
        let id = self.mappings.len();
        self.mappings.push(mapping);
        self.mapping_ids.insert(key, id);
        id
    }
}

fn user_key(key: &StackKey, address: u64) -> LocationKey {
    LocationKey::User {
        pid: key.pid,
        mm_id: key.mm_id,
        address,
    }
}

/// `libc.so.6+0x2a1c0` (file offset), `[vdso]+0x9d0`, `[anon]+0x7f...`.
fn unknown_name(region: Option<&ExecRegion>, address: u64) -> String {
    match region {
        Some(r) => {
            let offset = r.file_offset(address);
            match &r.kind {
                RegionKind::Module(m) => format!("{}+0x{offset:x}", m.short_name()),
                RegionKind::Pseudo(name) => format!("{name}+0x{offset:x}"),
                RegionKind::Anonymous => format!("[anon]+0x{address:x}"),
            }
        }
        None => format!("[unknown]+0x{address:x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use symbolizer::UnknownReason;

    fn named(name: &str) -> (Resolution, Option<String>) {
        (Resolution::Symbols(vec![FunctionFrame::named(name)]), None)
    }

    fn unknown() -> (Resolution, Option<String>) {
        (Resolution::Unknown(UnknownReason::NoSymbol), None)
    }

    #[test]
    fn the_bpf_program_and_its_callers_are_cut_from_the_leaf() {
        // The JIT'ed program unnamed (loaded after kallsyms was read).
        let stack = [
            unknown(),
            named("bpf_trace_run4"),
            named("__traceiter_sched_switch"),
            named("__schedule"),
        ];
        assert_eq!(bpf_frames_at_leaf(&stack), 3);
        let named_program = [
            named("bpf_prog_6deef7357e7b4530_offcpu_switch"),
            named("__schedule"),
        ];
        assert_eq!(bpf_frames_at_leaf(&named_program), 1);
        // An unknown leaf without tracing machinery after it stays.
        assert_eq!(bpf_frames_at_leaf(&[unknown(), named("__schedule")]), 0);
        assert_eq!(bpf_frames_at_leaf(&[named("__schedule")]), 0);
        assert_eq!(bpf_frames_at_leaf(&[]), 0);
    }
}
