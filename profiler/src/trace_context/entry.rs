//! Mirror of `struct smolder_trace_process` (profiler-ebpf/include/trace_context.h).

use std::mem::size_of;

use symbolizer::thread_context::ContextSlot;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotEntry {
    pub tp_offset: i64,
    /// 0: static TLS.
    pub module_id: u64,
    pub block_offset: u64,
}

const _: () = assert!(size_of::<SlotEntry>() == 24);

// SAFETY: repr(C), three 8-byte fields, no padding, every bit pattern valid.
unsafe impl aya::Pod for SlotEntry {}

impl From<ContextSlot> for SlotEntry {
    fn from(slot: ContextSlot) -> Self {
        match slot {
            ContextSlot::Static { tp_offset } => Self {
                tp_offset,
                module_id: 0,
                block_offset: 0,
            },
            ContextSlot::Dynamic {
                module_id,
                block_offset,
            } => Self {
                tp_offset: 0,
                module_id,
                block_offset,
            },
        }
    }
}
