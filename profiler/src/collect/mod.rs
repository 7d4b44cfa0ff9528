//! Collect stage: loads the BPF sampler, attaches it to every CPU and hands
//! decoded samples (on-CPU) and blocked-time totals (off-CPU) to the caller. Also home of the other BPF object smolder
//! loads: the kernel-symbol lookup used by the symbolize stage.

mod cuda;
mod cuda_probes;
mod ksym;
mod offcpu;
mod programs;
mod record;
mod sampler;

pub use cuda::{
    CallKind, CudaApi, CudaEvent, CudaKey, CudaLibrary, CudaName, CudaTotal, CUDA_APIS,
};
pub use cuda_probes::{entry_points, entry_points_in, CudaProbeStats};
pub use ksym::BpfKernelSymbols;
pub use offcpu::{OffCpuConfig, OffCpuEntry, OffCpuPython, ThreadSeen};
pub use programs::key_was_missing;
pub use record::{DecodeError, PythonStatus, Sample, TraceContext, MAX_STACK_FRAMES};
pub use sampler::{
    CudaConfig, LoadError, Sampler, SamplerConfig, SamplerStats, SamplerTargets, UnwindConfig,
    UnwindMode, DEFAULT_CUDA_STACKS_PER_SECOND, DEFAULT_UNWIND_TABLE_MIB, DRAIN_INTERVAL,
};
