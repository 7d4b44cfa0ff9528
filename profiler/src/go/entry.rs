//! Mirror of `struct smolder_go_process` (profiler-ebpf/include/go_labels.h).

use std::mem::size_of;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoProcessEntry {
    /// The running g is at fs_base + this.
    pub g_tls_offset: i64,
    /// `runtime.g.m`.
    pub m_offset: u32,
    /// `runtime.m.curg`.
    pub curg_offset: u32,
    /// `runtime.g.labels`.
    pub labels_offset: u32,
    pub _pad: u32,
}

const _: () = assert!(size_of::<GoProcessEntry>() == 24);

// SAFETY: repr(C), integers only, no padding (24 bytes, asserted above),
// every bit pattern valid.
unsafe impl aya::Pod for GoProcessEntry {}
