//! The sample record written by `profiler-ebpf/src/sampler.bpf.c`, and its
//! decoding. Bytes from the kernel are untrusted: every length is checked.

use std::mem::size_of;

use symbolizer::python::RawPythonFrame;

pub(crate) const MAX_KERNEL_FRAMES: usize = 127;
pub(crate) const MAX_USER_FRAMES: usize = 127;
/// Deepest stack the BPF side records (kernel or user, on or off CPU).
pub const MAX_STACK_FRAMES: usize = MAX_USER_FRAMES;
const COMM_LEN: usize = 16;
pub(crate) const MAX_PYTHON_FRAMES: usize = 96;
/// `PY_FRAME_ENTRY` (python.h): set on the outermost frame of a C call.
const PYTHON_FRAME_ENTRY: u32 = 1 << 31;

const FLAG_KERNEL_TRUNCATED: u32 = 1 << 0;
/// Flag bits shared by samples and off-CPU user stacks (sampler.h).
pub(super) const FLAG_USER_TRUNCATED: u32 = 1 << 1;
pub(super) const FLAG_USER_UNWIND_ERROR: u32 = 1 << 2;
const FLAG_USER_UNMAPPED: u32 = 1 << 4;
const FLAG_TRACE_CONTEXT: u32 = 1 << 5;
const FLAG_GPU_WAIT: u32 = 1 << 6;

/// Mirror of `struct smolder_sample` (profiler-ebpf/include/sampler.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct RawSample {
    pid: u32,
    tid: u32,
    time_ns: u64,
    mm_id: u64,
    cpu: u32,
    kernel_len: i32,
    user_len: i32,
    flags: u32,
    comm: [u8; COMM_LEN],
    thread_comm: [u8; COMM_LEN],
    kernel_stack: [u64; MAX_KERNEL_FRAMES],
    user_stack: [u64; MAX_USER_FRAMES],
    python_len: u32,
    python_status: u32,
    exec_vm: u64,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    go_labels: u64,
    python: [RawPython; MAX_PYTHON_FRAMES],
}

/// Mirror of `struct smolder_python_frame` (profiler-ebpf/include/python.h).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct RawPython {
    pub(super) code: u64,
    pub(super) instr: u32,
    pub(super) first_line: i32,
}

pub(super) const RAW_PYTHON_SIZE: usize = 16;
const _: () = assert!(size_of::<RawPython>() == RAW_PYTHON_SIZE);
/// The record up to its Python frames: every record is this long plus
/// `python_len` frames.
pub(crate) const RAW_SAMPLE_BASE_SIZE: usize = 120 + 8 * (MAX_KERNEL_FRAMES + MAX_USER_FRAMES);
pub(crate) const RAW_SAMPLE_SIZE: usize =
    RAW_SAMPLE_BASE_SIZE + RAW_PYTHON_SIZE * MAX_PYTHON_FRAMES;
const _: () = assert!(size_of::<RawSample>() == RAW_SAMPLE_SIZE);

/// How the BPF side's walk of a sample's Python stack went
/// (`enum smolder_python_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PythonStatus {
    /// Not a Python process smolder registered.
    #[default]
    None,
    /// The whole chain.
    Complete,
    /// The thread has no PyThreadState (a native thread).
    NoThread,
    /// A read failed: the frames are the newest part of the chain.
    Error,
    /// Deeper than the BPF limit: the oldest frames are missing.
    Truncated,
}

impl TryFrom<u32> for PythonStatus {
    type Error = DecodeError;

    fn try_from(value: u32) -> Result<Self, DecodeError> {
        Ok(match value {
            0 => Self::None,
            1 => Self::Complete,
            2 => Self::NoThread,
            3 => Self::Error,
            4 => Self::Truncated,
            other => return Err(DecodeError::PythonStatus(other)),
        })
    }
}

/// One on-CPU sample, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub pid: u32,
    pub tid: u32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub time_ns: u64,
    /// Identity of the address space (changes when the process execs).
    pub mm_id: u64,
    pub cpu: u32,
    pub comm: String,
    pub thread_name: String,
    /// Kernel stack, innermost first (empty for samples in user mode).
    pub kernel: Vec<u64>,
    /// User stack, innermost first.
    pub user: Vec<u64>,
    pub kernel_truncated: bool,
    pub user_truncated: bool,
    /// The DWARF walk stopped at an error: the user stack's root is missing.
    pub user_unwind_error: bool,
    /// An address was outside every mapping the unwinder knew (a library
    /// loaded since its tables were written).
    pub user_unmapped: bool,
    /// The kernel's error when a stack could not be read (negative errno).
    pub kernel_error: Option<i32>,
    pub user_error: Option<i32>,
    /// Python frames, newest first (CPython processes only).
    pub python: Vec<RawPythonFrame>,
    pub python_status: PythonStatus,
    /// Pages of executable mappings in the address space: a change means a
    /// library was loaded or unloaded.
    pub exec_vm: u64,
    /// The trace the thread was serving (OTEP 4947 thread context).
    pub trace: Option<TraceContext>,
    /// Go: where the goroutine's pprof label set is in the process (0:
    /// none), read by [`crate::go::GoTracker`].
    pub go_labels: u64,
    /// Taken while the thread was inside a CUDA sync call.
    pub in_gpu_wait: bool,
}

/// A trace and span id pair, as published by the thread (big-endian bytes,
/// as in W3C traceparent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("sample record of {got} bytes, expected {expected}")]
    Size { got: usize, expected: usize },
    #[error("stack length {0} out of range")]
    StackLength(i32),
    #[error("Python status {0} unknown")]
    PythonStatus(u32),
    #[error("CUDA API {0} unknown, or not of the event's kind")]
    CudaApi(u32),
}

impl TryFrom<&[u8]> for Sample {
    type Error = DecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        if bytes.len() < RAW_SAMPLE_BASE_SIZE || bytes.len() > RAW_SAMPLE_SIZE {
            return Err(DecodeError::Size {
                got: bytes.len(),
                expected: RAW_SAMPLE_BASE_SIZE,
            });
        }
        let mut whole = [0u8; RAW_SAMPLE_SIZE];
        whole[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: `whole` has the full size; RawSample is plain old data valid
        // for any bit pattern, and read_unaligned copes with any alignment.
        let raw: RawSample = unsafe { std::ptr::read_unaligned(whole.as_ptr().cast()) };
        let python_len = raw.python_len as usize;
        let expected = RAW_SAMPLE_BASE_SIZE + python_len * RAW_PYTHON_SIZE;
        if python_len > MAX_PYTHON_FRAMES || bytes.len() != expected {
            return Err(DecodeError::Size {
                got: bytes.len(),
                expected,
            });
        }
        let (kernel, kernel_error) = frames(&raw.kernel_stack, raw.kernel_len)?;
        let (user, user_error) = frames(&raw.user_stack, raw.user_len)?;
        let python = python_frames(&raw.python[..python_len]);
        Ok(Sample {
            pid: raw.pid,
            tid: raw.tid,
            time_ns: raw.time_ns,
            mm_id: raw.mm_id,
            cpu: raw.cpu,
            comm: c_string(&raw.comm),
            thread_name: c_string(&raw.thread_comm),
            kernel,
            user,
            kernel_truncated: raw.flags & FLAG_KERNEL_TRUNCATED != 0,
            user_truncated: raw.flags & FLAG_USER_TRUNCATED != 0,
            user_unwind_error: raw.flags & FLAG_USER_UNWIND_ERROR != 0,
            user_unmapped: raw.flags & FLAG_USER_UNMAPPED != 0,
            kernel_error,
            user_error,
            python,
            python_status: PythonStatus::try_from(raw.python_status)?,
            exec_vm: raw.exec_vm,
            trace: (raw.flags & FLAG_TRACE_CONTEXT != 0).then_some(TraceContext {
                trace_id: raw.trace_id,
                span_id: raw.span_id,
            }),
            go_labels: raw.go_labels,
            in_gpu_wait: raw.flags & FLAG_GPU_WAIT != 0,
        })
    }
}

/// Python frames as the BPF walker records them (sampled or off-CPU).
pub(super) fn python_frames(raw: &[RawPython]) -> Vec<RawPythonFrame> {
    raw.iter()
        .map(|f| RawPythonFrame {
            code: f.code,
            instr: f.instr & !PYTHON_FRAME_ENTRY,
            first_line: f.first_line,
            entry: f.instr & PYTHON_FRAME_ENTRY != 0,
        })
        .collect()
}

fn frames(stack: &[u64], len: i32) -> Result<(Vec<u64>, Option<i32>), DecodeError> {
    if len < 0 {
        return Ok((Vec::new(), Some(len)));
    }
    let n = usize::try_from(len).map_err(|_| DecodeError::StackLength(len))?;
    let frames = stack.get(..n).ok_or(DecodeError::StackLength(len))?;
    Ok((frames.to_vec(), None))
}

pub(crate) fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn encode(pid: u32, kernel: &[u64], user: &[u64], user_len: i32) -> Vec<u8> {
        let mut raw = RawSample {
            pid,
            tid: pid + 1,
            time_ns: 42,
            mm_id: 7,
            cpu: 1,
            kernel_len: kernel.len() as i32,
            user_len,
            flags: FLAG_USER_TRUNCATED,
            comm: [0; COMM_LEN],
            thread_comm: *b"worker-thread-01",
            kernel_stack: [0; MAX_KERNEL_FRAMES],
            user_stack: [0; MAX_USER_FRAMES],
            python_len: 0,
            python_status: 0,
            exec_vm: 0,
            trace_id: [0; 16],
            span_id: [0; 8],
            go_labels: 0,
            python: [RawPython::default(); MAX_PYTHON_FRAMES],
        };
        raw.comm[..4].copy_from_slice(b"prog");
        raw.kernel_stack[..kernel.len()].copy_from_slice(kernel);
        raw.user_stack[..user.len()].copy_from_slice(user);
        // SAFETY: RawSample is repr(C) plain old data without padding.
        unsafe {
            std::slice::from_raw_parts(
                (&raw as *const RawSample).cast::<u8>(),
                RAW_SAMPLE_BASE_SIZE,
            )
        }
        .to_vec()
    }

    /// Where `python_len` is in a record.
    const PYTHON_LEN_AT: usize = RAW_SAMPLE_BASE_SIZE - 48;

    #[test]
    fn decodes_a_record() {
        let bytes = encode(10, &[0xffff_0001], &[0x401000, 0x401100], 2);
        let s = Sample::try_from(bytes.as_slice()).unwrap();
        assert_eq!((s.pid, s.tid, s.cpu, s.mm_id), (10, 11, 1, 7));
        assert_eq!(s.comm, "prog");
        assert_eq!(s.thread_name, "worker-thread-01");
        assert_eq!(s.kernel, vec![0xffff_0001]);
        assert_eq!(s.user, vec![0x401000, 0x401100]);
        assert!(s.user_truncated && !s.kernel_truncated);
        assert_eq!(s.trace, None);
    }

    #[test]
    fn decodes_a_trace_context_only_with_its_flag() {
        let mut bytes = encode(10, &[], &[], 0);
        let ids_at = RAW_SAMPLE_BASE_SIZE - 32;
        for (i, b) in bytes[ids_at..ids_at + 24].iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        assert_eq!(Sample::try_from(bytes.as_slice()).unwrap().trace, None);
        bytes[36] |= FLAG_TRACE_CONTEXT as u8; // flags (little-endian) at 36
        let trace = Sample::try_from(bytes.as_slice()).unwrap().trace.unwrap();
        assert_eq!(trace.trace_id[0], 1);
        assert_eq!(trace.trace_id[15], 16);
        assert_eq!(trace.span_id, [17, 18, 19, 20, 21, 22, 23, 24]);
    }

    #[test]
    fn decodes_python_frames_after_the_native_stacks() {
        let mut bytes = encode(10, &[], &[0x401000], 1);
        bytes[PYTHON_LEN_AT] = 2;
        bytes[PYTHON_LEN_AT + 4] = 1; // complete
        for (code, instr, line) in [
            (0x7f00_0010u64, 6u32, 12i32),
            (0x7f00_0020, 40 | PYTHON_FRAME_ENTRY, 3),
        ] {
            bytes.extend(code.to_le_bytes());
            bytes.extend(instr.to_le_bytes());
            bytes.extend(line.to_le_bytes());
        }
        let s = Sample::try_from(bytes.as_slice()).unwrap();
        assert_eq!(s.python_status, PythonStatus::Complete);
        assert_eq!(s.python.len(), 2);
        assert_eq!(
            (s.python[0].code, s.python[0].instr, s.python[0].entry),
            (0x7f00_0010, 6, false)
        );
        assert_eq!(
            (s.python[1].instr, s.python[1].first_line, s.python[1].entry),
            (40, 3, true)
        );
    }

    #[test]
    fn rejects_bad_lengths() {
        let short = vec![0u8; 10];
        assert!(matches!(
            Sample::try_from(short.as_slice()),
            Err(DecodeError::Size { got: 10, .. })
        ));
        // A Python frame count that disagrees with the record's length.
        let mut bytes = encode(10, &[], &[], 0);
        bytes[PYTHON_LEN_AT] = 2;
        assert!(matches!(
            Sample::try_from(bytes.as_slice()),
            Err(DecodeError::Size { .. })
        ));
        let bytes = encode(10, &[], &[], 500);
        assert_eq!(
            Sample::try_from(bytes.as_slice()),
            Err(DecodeError::StackLength(500))
        );
        let bytes = encode(10, &[], &[], -14);
        let s = Sample::try_from(bytes.as_slice()).unwrap();
        assert_eq!(s.user_error, Some(-14));
        assert!(s.user.is_empty());
    }
}
