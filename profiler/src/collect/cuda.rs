//! What the CUDA probes (`profiler-ebpf/src/cuda_probes.h`) hand to user
//! space: the APIs probed, sampled launches and waits with their stacks, and
//! exact totals. Bytes from the kernel are untrusted: sizes are checked.

use std::mem::size_of;

use super::record::{DecodeError, Sample, RAW_SAMPLE_BASE_SIZE, RAW_SAMPLE_SIZE};

/// Cookie bits (cuda.h).
const FUNC_IN_ARG2: u64 = 1 << 16;
const DRIVER: u64 = 1 << 17;
const COPY_KIND_ARG4: u64 = 1 << 18;
const ALIAS_OF_KERNEL: u64 = 1 << 19;
const API_MASK: u32 = 0xffff;

const EVENT_LAUNCH: u32 = 1;
const EVENT_WAIT: u32 = 2;
const EVENT_HEADER: usize = 32;

/// The library an entry point is exported by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CudaLibrary {
    /// `libcudart.so.*`, the runtime (NVIDIA's wheels, the toolkit).
    Runtime,
    /// `libcuda.so.*`, the driver's user-space library.
    Driver,
}

impl CudaLibrary {
    /// The library a mapped file is, by its name.
    pub fn of_file_name(name: &str) -> Option<Self> {
        if name.starts_with("libcudart.so") {
            Some(Self::Runtime)
        } else if name.starts_with("libcuda.so") {
            Some(Self::Driver)
        } else {
            None
        }
    }
}

/// What a call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// Queues GPU work: counted, and named by its function.
    Launch,
    /// Launches a CUDA graph (named by the graph).
    GraphLaunch,
    /// Waits for the GPU: timed from entry to return.
    Wait,
    /// Hands out a function handle (driver): learnt, to name the launches
    /// of that handle.
    HandOut,
}

/// One probed entry point.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CudaApi {
    /// The cookie's low 16 bits.
    pub id: u16,
    /// The exported symbol (without its version).
    pub name: &'static str,
    pub library: CudaLibrary,
    pub kind: CallKind,
    /// Launch: the function (or graph) is the second argument.
    func_in_arg2: bool,
    /// cudaMemcpy: a wait only for device-to-host copies.
    copy_kind_arg4: bool,
    /// cuKernelGetFunction: hands out the function of a kernel handle.
    alias_of_kernel: bool,
}

impl CudaApi {
    /// The attach cookie the BPF programs read.
    pub fn cookie(&self) -> u64 {
        let mut cookie = u64::from(self.id);
        if self.func_in_arg2 {
            cookie |= FUNC_IN_ARG2;
        }
        if self.library == CudaLibrary::Driver {
            cookie |= DRIVER;
        }
        if self.copy_kind_arg4 {
            cookie |= COPY_KIND_ARG4;
        }
        if self.alias_of_kernel {
            cookie |= ALIAS_OF_KERNEL;
        }
        cookie
    }

    pub fn by_id(id: u32) -> Option<&'static CudaApi> {
        CUDA_APIS.iter().find(|api| u32::from(api.id) == id)
    }
}

const fn api(
    id: u16,
    name: &'static str,
    library: CudaLibrary,
    kind: CallKind,
    func_in_arg2: bool,
) -> CudaApi {
    CudaApi {
        id,
        name,
        library,
        kind,
        func_in_arg2,
        copy_kind_arg4: false,
        alias_of_kernel: false,
    }
}

use CallKind::{GraphLaunch, HandOut, Launch, Wait};
use CudaLibrary::{Driver, Runtime};

/// Every entry point probed. Launches through the runtime reach the
/// driver's launch too: the BPF side counts that one only when the same
/// thread is not inside a runtime launch. `_ptsz`/`_ptds` are the
/// per-thread default stream twins.
pub static CUDA_APIS: &[CudaApi] = &[
    api(1, "cudaLaunchKernel", Runtime, Launch, false),
    api(2, "cudaLaunchKernel_ptsz", Runtime, Launch, false),
    api(3, "cudaLaunchKernelExC", Runtime, Launch, true),
    api(4, "cudaLaunchKernelExC_ptsz", Runtime, Launch, true),
    api(5, "cudaLaunchCooperativeKernel", Runtime, Launch, false),
    api(
        6,
        "cudaLaunchCooperativeKernel_ptsz",
        Runtime,
        Launch,
        false,
    ),
    api(7, "cudaGraphLaunch", Runtime, GraphLaunch, false),
    api(8, "cudaGraphLaunch_ptsz", Runtime, GraphLaunch, false),
    api(20, "cuLaunchKernel", Driver, Launch, false),
    api(21, "cuLaunchKernel_ptsz", Driver, Launch, false),
    api(22, "cuLaunchKernelEx", Driver, Launch, true),
    api(23, "cuLaunchKernelEx_ptsz", Driver, Launch, true),
    api(24, "cuLaunchCooperativeKernel", Driver, Launch, false),
    api(25, "cuLaunchCooperativeKernel_ptsz", Driver, Launch, false),
    api(26, "cuGraphLaunch", Driver, GraphLaunch, false),
    api(27, "cuGraphLaunch_ptsz", Driver, GraphLaunch, false),
    api(40, "cudaDeviceSynchronize", Runtime, Wait, false),
    api(41, "cudaStreamSynchronize", Runtime, Wait, false),
    api(42, "cudaStreamSynchronize_ptsz", Runtime, Wait, false),
    api(43, "cudaEventSynchronize", Runtime, Wait, false),
    CudaApi {
        copy_kind_arg4: true,
        ..api(44, "cudaMemcpy", Runtime, Wait, false)
    },
    CudaApi {
        copy_kind_arg4: true,
        ..api(45, "cudaMemcpy_ptds", Runtime, Wait, false)
    },
    api(60, "cuCtxSynchronize", Driver, Wait, false),
    api(61, "cuStreamSynchronize", Driver, Wait, false),
    api(62, "cuStreamSynchronize_ptsz", Driver, Wait, false),
    api(63, "cuEventSynchronize", Driver, Wait, false),
    api(64, "cuMemcpyDtoH_v2", Driver, Wait, false),
    api(65, "cuMemcpyDtoH_v2_ptds", Driver, Wait, false),
    api(80, "cuModuleGetFunction", Driver, HandOut, false),
    api(81, "cuLibraryGetKernel", Driver, HandOut, false),
    CudaApi {
        alias_of_kernel: true,
        ..api(82, "cuKernelGetFunction", Driver, HandOut, false)
    },
];

/// A sampled call, with the stack of the thread that made it.
#[derive(Debug, Clone)]
pub struct CudaEvent {
    pub api: &'static CudaApi,
    /// Launch: the host function, `CUfunction` or graph; wait: 0.
    pub func: u64,
    /// Wait: time on CPU (spinning) and off it (blocked) inside the call.
    pub spin_ns: u64,
    pub blocked_ns: u64,
    /// The stack (no kernel frames). A wait's leaf is the API function.
    pub sample: Sample,
}

/// Mirror of the header of `struct smolder_cuda_event`.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawHeader {
    kind: u32,
    api: u32,
    func: u64,
    spin_ns: u64,
    blocked_ns: u64,
}

const _: () = assert!(size_of::<RawHeader>() == EVENT_HEADER);

impl TryFrom<&[u8]> for CudaEvent {
    type Error = DecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        if bytes.len() < EVENT_HEADER + RAW_SAMPLE_BASE_SIZE
            || bytes.len() > EVENT_HEADER + RAW_SAMPLE_SIZE
        {
            return Err(DecodeError::Size {
                got: bytes.len(),
                expected: EVENT_HEADER + RAW_SAMPLE_BASE_SIZE,
            });
        }
        // SAFETY: at least EVENT_HEADER bytes; RawHeader is plain old data
        // valid for any bit pattern, read_unaligned copes with alignment.
        let raw: RawHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let api = CudaApi::by_id(raw.api & API_MASK).ok_or(DecodeError::CudaApi(raw.api))?;
        let expected_kind = match api.kind {
            Launch | GraphLaunch => EVENT_LAUNCH,
            Wait => EVENT_WAIT,
            HandOut => return Err(DecodeError::CudaApi(raw.api)),
        };
        if raw.kind != expected_kind {
            return Err(DecodeError::CudaApi(raw.api));
        }
        let sample = Sample::try_from(&bytes[EVENT_HEADER..])?;
        Ok(Self {
            api,
            func: raw.func,
            spin_ns: raw.spin_ns,
            blocked_ns: raw.blocked_ns,
            sample,
        })
    }
}

const NAME_LEN: usize = 240;

/// A function handle the driver handed out (`struct smolder_cuda_name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaName {
    pub pid: u32,
    pub handle: u64,
    /// The kernel's name (empty for an alias).
    pub name: String,
    /// cuKernelGetFunction: the kernel handle `handle` is the function of.
    pub alias: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawName {
    pid: u32,
    api: u32,
    handle: u64,
    alias: u64,
    name: [u8; NAME_LEN],
}

const _: () = assert!(size_of::<RawName>() == 24 + NAME_LEN);

impl TryFrom<&[u8]> for CudaName {
    type Error = DecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        if bytes.len() != size_of::<RawName>() {
            return Err(DecodeError::Size {
                got: bytes.len(),
                expected: size_of::<RawName>(),
            });
        }
        // SAFETY: the length was checked; RawName is plain old data.
        let raw: RawName = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let api = CudaApi::by_id(raw.api & API_MASK).ok_or(DecodeError::CudaApi(raw.api))?;
        if api.kind != HandOut {
            return Err(DecodeError::CudaApi(raw.api));
        }
        Ok(Self {
            pid: raw.pid,
            handle: raw.handle,
            name: super::record::c_string(&raw.name),
            alias: if api.alias_of_kernel { raw.alias } else { 0 },
        })
    }
}

/// Key of the exact totals (`struct smolder_cuda_key`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CudaKey {
    pub pid: u32,
    pub api: u32,
    pub func: u64,
}

/// `struct smolder_cuda_total`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CudaTotal {
    pub calls: u64,
    pub spin_ns: u64,
    pub blocked_ns: u64,
}

impl CudaTotal {
    /// What was added since `earlier` (counters only grow; a key evicted
    /// and made again starts from 0).
    pub fn since(&self, earlier: &CudaTotal) -> CudaTotal {
        if self.calls < earlier.calls {
            return *self;
        }
        CudaTotal {
            calls: self.calls - earlier.calls,
            spin_ns: self.spin_ns.saturating_sub(earlier.spin_ns),
            blocked_ns: self.blocked_ns.saturating_sub(earlier.blocked_ns),
        }
    }
}

// SAFETY: both are repr(C) plain old data without padding.
unsafe impl aya::Pod for CudaKey {}
// SAFETY: as above.
unsafe impl aya::Pod for CudaTotal {}

const _: () = assert!(size_of::<CudaKey>() == 16);
const _: () = assert!(size_of::<CudaTotal>() == 24);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::record::tests::encode;

    fn event(kind: u32, api: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [kind, api] {
            bytes.extend_from_slice(&word.to_ne_bytes());
        }
        for word in [0x4010u64, 7, 9] {
            bytes.extend_from_slice(&word.to_ne_bytes());
        }
        bytes.extend(encode(10, &[], &[0x401000, 0x401100], 2));
        bytes
    }

    #[test]
    fn decodes_a_launch_and_rejects_a_mismatched_kind() {
        let launch = CudaEvent::try_from(&event(EVENT_LAUNCH, 1)[..]).unwrap();
        assert_eq!(launch.api.name, "cudaLaunchKernel");
        assert_eq!(launch.func, 0x4010);
        assert_eq!(launch.sample.user, vec![0x401000, 0x401100]);
        assert!(CudaEvent::try_from(&event(EVENT_WAIT, 1)[..]).is_err());
        assert!(CudaEvent::try_from(&event(EVENT_LAUNCH, 999)[..]).is_err());
        assert!(CudaEvent::try_from(&event(EVENT_LAUNCH, 1)[..40]).is_err());
    }

    fn name_record(api: u32, alias: u64, name: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&7u32.to_ne_bytes());
        bytes.extend_from_slice(&api.to_ne_bytes());
        bytes.extend_from_slice(&0x5000u64.to_ne_bytes());
        bytes.extend_from_slice(&alias.to_ne_bytes());
        let mut text = [0u8; NAME_LEN];
        text[..name.len()].copy_from_slice(name);
        bytes.extend_from_slice(&text);
        bytes
    }

    #[test]
    fn decodes_handed_out_names_and_aliases() {
        let named = CudaName::try_from(&name_record(80, 0, b"triton_mm_1")[..]).unwrap();
        assert_eq!(named.name, "triton_mm_1");
        assert_eq!((named.pid, named.handle, named.alias), (7, 0x5000, 0));
        // An alias only from cuKernelGetFunction.
        let alias = CudaName::try_from(&name_record(82, 0x77, b"")[..]).unwrap();
        assert_eq!(alias.alias, 0x77);
        let not_alias = CudaName::try_from(&name_record(81, 0x77, b"k")[..]).unwrap();
        assert_eq!(not_alias.alias, 0);
        // Not a hand-out, or cut short.
        assert!(CudaName::try_from(&name_record(1, 0, b"x")[..]).is_err());
        assert!(CudaName::try_from(&name_record(80, 0, b"x")[..100]).is_err());
        // A name that fills the buffer without a NUL still decodes.
        let full = CudaName::try_from(&name_record(80, 0, &[b'a'; NAME_LEN])[..]).unwrap();
        assert_eq!(full.name.len(), NAME_LEN);
    }

    #[test]
    fn ids_are_unique_and_cookies_carry_the_flags() {
        let mut ids: Vec<u16> = CUDA_APIS.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), CUDA_APIS.len());
        let ex = CUDA_APIS
            .iter()
            .find(|a| a.name == "cuLaunchKernelEx")
            .unwrap();
        assert_eq!(ex.cookie(), 22 | FUNC_IN_ARG2 | DRIVER);
        let copy = CudaApi::by_id(44).unwrap();
        assert_eq!(copy.cookie(), 44 | COPY_KIND_ARG4);
    }

    #[test]
    fn totals_since_handle_a_restarted_key() {
        let old = CudaTotal {
            calls: 10,
            spin_ns: 5,
            blocked_ns: 5,
        };
        let new = CudaTotal {
            calls: 12,
            spin_ns: 9,
            blocked_ns: 5,
        };
        assert_eq!(new.since(&old).calls, 2);
        assert_eq!(new.since(&old).spin_ns, 4);
        let restarted = CudaTotal {
            calls: 3,
            ..CudaTotal::default()
        };
        assert_eq!(restarted.since(&old).calls, 3);
    }

    #[test]
    fn libraries_by_name() {
        assert_eq!(
            CudaLibrary::of_file_name("libcudart.so.12"),
            Some(CudaLibrary::Runtime)
        );
        assert_eq!(
            CudaLibrary::of_file_name("libcuda.so.1"),
            Some(CudaLibrary::Driver)
        );
        assert_eq!(CudaLibrary::of_file_name("libcudnn.so.9"), None);
    }
}
