//! Trace context on samples: finds the processes that publish the trace and
//! span their threads serve (OTEP 4947 `otel_thread_ctx_v1`), tells the BPF
//! sampler where to read it (`trace_processes`), and turns what it read into
//! the `trace_id` / `span_id` labels. See docs/trace-context.md.

mod entry;
mod tracker;

pub use entry::SlotEntry;
pub use tracker::{TraceContextTracker, TraceTrackerStats};

use crate::collect::TraceContext;

/// Lower-case hex, as W3C Trace Context and Pyroscope write ids.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TraceContext {
    /// The 32-character trace id.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The 16-character span id.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lower_case_hex_of_fixed_width() {
        let context = TraceContext {
            trace_id: [0xab; 16],
            span_id: [0, 1, 2, 3, 4, 5, 6, 0xff],
        };
        assert_eq!(context.trace_id_hex(), "ab".repeat(16));
        assert_eq!(context.span_id_hex(), "00010203040506ff");
    }
}
