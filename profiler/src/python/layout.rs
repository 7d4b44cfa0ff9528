//! Mirror of `struct smolder_python_process` (profiler-ebpf/include/python.h).

use std::mem::size_of;

use symbolizer::python::{FrameKind, PythonProcess};

/// `PY_NO_OFFSET`: a field this version does not have.
const NO_OFFSET: u32 = u32::MAX;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessEntry {
    pub interpreters_head: u64,
    pub frames: u32,
    pub threads_head: u32,
    pub tstate_next: u32,
    pub tstate_thread_id: u32,
    pub tstate_frame: u32,
    pub cframe_current: u32,
    pub frame_code: u32,
    pub frame_previous: u32,
    pub frame_instr: u32,
    pub frame_entry: u32,
    pub code_adaptive: u32,
    pub code_firstlineno: u32,
    /// The GIL's state: a futex inside [gil, gil + gil_size) is a GIL wait.
    pub gil: u64,
    pub gil_size: u32,
    pub reserved: u32,
}

const _: () = assert!(size_of::<ProcessEntry>() == 72);

// SAFETY: repr(C), no padding (8 + 12 * 4 + 8 + 2 * 4 bytes), every bit
// pattern valid.
unsafe impl aya::Pod for ProcessEntry {}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("offset {0} does not fit the BPF walker's 32-bit fields")]
pub struct OffsetTooLarge(u64);

impl TryFrom<&PythonProcess> for ProcessEntry {
    type Error = OffsetTooLarge;

    fn try_from(p: &PythonProcess) -> Result<Self, OffsetTooLarge> {
        let l = &p.layout;
        let o = |v: u64| u32::try_from(v).map_err(|_| OffsetTooLarge(v));
        Ok(Self {
            interpreters_head: p.interpreters_head,
            frames: match l.frames {
                FrameKind::Object => 1,
                FrameKind::Entry => 2,
                FrameKind::Shim => 3,
            },
            threads_head: o(l.threads_head)?,
            tstate_next: o(l.tstate_next)?,
            tstate_thread_id: o(l.tstate_thread_id)?,
            tstate_frame: o(l.tstate_frame)?,
            cframe_current: l.cframe_current.map(o).transpose()?.unwrap_or(NO_OFFSET),
            frame_code: o(l.frame_code)?,
            frame_previous: o(l.frame_previous)?,
            frame_instr: o(l.frame_instr)?,
            frame_entry: o(l.frame_entry)?,
            code_adaptive: o(l.code.code_adaptive)?,
            code_firstlineno: o(l.code.firstlineno)?,
            gil: p.gil.as_ref().map_or(0, |gil| gil.start),
            gil_size: p.gil.as_ref().map_or(Ok(0), |gil| o(gil.end - gil.start))?,
            reserved: 0,
        })
    }
}
