//! The agent's own numbers, as Prometheus text on an optional listener
//! (`GET /metrics`; loopback unless configured otherwise).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds (seconds) of the push latency histogram.
const PUSH_BUCKETS: [f64; 8] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
pub struct Metrics {
    pub samples: AtomicU64,
    pub samples_lost: AtomicU64,
    pub processes: AtomicU64,
    pub services: AtomicU64,
    pub windows: AtomicU64,
    pub windows_dropped: AtomicU64,
    pub profiles_written: AtomicU64,
    pub profiles_removed: AtomicU64,
    pub write_errors: AtomicU64,
    pub pushes_ok: AtomicU64,
    pub pushes_failed: AtomicU64,
    pub pushes_rejected: AtomicU64,
    pub pushes_rate_limited: AtomicU64,
    pub bytes_pushed: AtomicU64,
    push_seconds_nanos: AtomicU64,
    push_buckets: [AtomicU64; PUSH_BUCKETS.len()],
    push_count: AtomicU64,
    pub spool_files: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub spool_dropped: AtomicU64,
    pub spool_corrupt: AtomicU64,
    pub go_processes: AtomicU64,
    pub go_label_samples: AtomicU64,
    pub go_label_read_errors: AtomicU64,
    pub go_label_sets_dropped: AtomicU64,
    pub cuda_launches: AtomicU64,
    pub cuda_waits: AtomicU64,
    pub cuda_events: AtomicU64,
    pub cuda_events_lost: AtomicU64,
    pub cuda_libraries: AtomicU64,
    pub cuda_launch_duty_percent: AtomicU64,
    pub symbol_lookups: AtomicU64,
    pub symbol_unknown: AtomicU64,
    pub symbol_cached_addresses: AtomicU64,
    pub heap_bytes: AtomicU64,
    pub symbol_parsed_files: AtomicU64,
    pub symbol_parsed_file_releases: AtomicU64,
    pub processes_missed: AtomicU64,
    pub processes_named_after_exit: AtomicU64,
    pub unwind_recorded_mappings: AtomicU64,
    pub off_cpu_lost: AtomicU64,
    pub off_cpu_python_lost: AtomicU64,
    pub off_cpu_gil_waits: AtomicU64,
    pub unwind_with_tables: AtomicU64,
    pub unwind_frame_pointers_only: AtomicU64,
    pub unwind_errors: AtomicU64,
    pub trace_context_samples: AtomicU64,
    pub trace_context_read_errors: AtomicU64,
    pub trace_context_processes: AtomicU64,
    pub trace_context_failed: AtomicU64,
    pub unwind_truncated: AtomicU64,
    pub unwind_tables: AtomicU64,
    pub unwind_table_bytes: AtomicU64,
    pub unwind_table_space_full: AtomicU64,
    pub unwind_table_capacity_bytes: AtomicU64,
    pub unwind_tables_evicted: AtomicU64,
    pub unwind_rules: AtomicU64,
    pub unwind_code_without_cfi_bytes: AtomicU64,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub fn set(c: &AtomicU64, n: u64) {
    c.store(n, Ordering::Relaxed);
}

impl Metrics {
    pub fn observe_push(&self, took: Duration) {
        add(&self.push_seconds_nanos, took.as_nanos() as u64);
        add(&self.push_count, 1);
        for (bound, bucket) in PUSH_BUCKETS.iter().zip(&self.push_buckets) {
            if took.as_secs_f64() <= *bound {
                add(bucket, 1);
            }
        }
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "smolder_samples_total",
            "counter",
            "On-CPU samples taken.",
            get(&self.samples),
        );
        metric(
            "smolder_samples_lost_total",
            "counter",
            "Samples lost (ring buffer full or undecodable).",
            get(&self.samples_lost),
        );
        metric(
            "smolder_off_cpu_lost_total",
            "counter",
            "Off-CPU blocks or thread events lost to full maps.",
            get(&self.off_cpu_lost),
        );
        metric(
            "smolder_off_cpu_python_stacks_lost_total",
            "counter",
            "Off-CPU blocks of Python threads kept with native frames only (Python stack map full, or an id collision).",
            get(&self.off_cpu_python_lost),
        );
        metric(
            "smolder_off_cpu_gil_waits_total",
            "counter",
            "Sleeps of Python threads waiting for the GIL (labelled gil=wait).",
            get(&self.off_cpu_gil_waits),
        );
        metric(
            "smolder_unwind_stacks_dwarf_total",
            "counter",
            "User stacks walked with DWARF unwind tables.",
            get(&self.unwind_with_tables),
        );
        metric(
            "smolder_unwind_stacks_recorded_mappings_total",
            "counter",
            "User stacks of processes not read yet, walked with the executable mappings the kernel recorded at exec and mmap (included in smolder_unwind_stacks_dwarf_total).",
            get(&self.unwind_recorded_mappings),
        );
        metric(
            "smolder_unwind_stacks_frame_pointers_total",
            "counter",
            "User stacks of processes without unwind tables (frame pointers).",
            get(&self.unwind_frame_pointers_only),
        );
        metric(
            "smolder_unwind_errors_total",
            "counter",
            "User stacks cut short by an unwind error ([unwind error] root frame).",
            get(&self.unwind_errors),
        );
        metric(
            "smolder_trace_context_samples_total",
            "counter",
            "Samples that carry a trace context (trace_id / span_id).",
            get(&self.trace_context_samples),
        );
        metric(
            "smolder_trace_context_read_errors_total",
            "counter",
            "Trace context reads that failed in BPF (the sample carries no ids).",
            get(&self.trace_context_read_errors),
        );
        metric(
            "smolder_trace_context_processes_total",
            "counter",
            "Processes found publishing a trace context (OTEP 4947).",
            get(&self.trace_context_processes),
        );
        metric(
            "smolder_trace_context_unreadable_total",
            "counter",
            "Processes that define otel_thread_ctx_v1 where it could not be located.",
            get(&self.trace_context_failed),
        );
        metric(
            "smolder_unwind_truncated_total",
            "counter",
            "User stacks deeper than the BPF limit ([truncated] root frame).",
            get(&self.unwind_truncated),
        );
        metric(
            "smolder_unwind_tables",
            "gauge",
            "Module unwind tables loaded in BPF.",
            get(&self.unwind_tables),
        );
        metric(
            "smolder_unwind_table_bytes",
            "gauge",
            "Bytes of the unwind table memory in use.",
            get(&self.unwind_table_bytes),
        );
        metric(
            "smolder_unwind_table_space_full_total",
            "counter",
            "Modules left to frame pointers because the unwind table memory was full.",
            get(&self.unwind_table_space_full),
        );
        metric(
            "smolder_unwind_table_capacity_bytes",
            "gauge",
            "Bytes allocated for unwind tables (rows, pages, rules).",
            get(&self.unwind_table_capacity_bytes),
        );
        metric(
            "smolder_unwind_tables_evicted_total",
            "counter",
            "Tables of modules no process used, evicted to make room.",
            get(&self.unwind_tables_evicted),
        );
        metric(
            "smolder_unwind_rules",
            "gauge",
            "Distinct unwind rules in the host-wide rule array.",
            get(&self.unwind_rules),
        );
        metric(
            "smolder_unwind_code_without_cfi_bytes_total",
            "counter",
            "Bytes of code without CFI given unwind rules from its machine code.",
            get(&self.unwind_code_without_cfi_bytes),
        );
        metric(
            "smolder_processes",
            "gauge",
            "Processes profiled in the last window.",
            get(&self.processes),
        );
        metric(
            "smolder_services",
            "gauge",
            "Services profiled in the last window.",
            get(&self.services),
        );
        metric(
            "smolder_windows_total",
            "counter",
            "Windows completed.",
            get(&self.windows),
        );
        metric(
            "smolder_windows_dropped_total",
            "counter",
            "Windows dropped because delivery fell behind.",
            get(&self.windows_dropped),
        );
        metric(
            "smolder_profiles_written_total",
            "counter",
            "Profiles written to the local directory.",
            get(&self.profiles_written),
        );
        metric(
            "smolder_profiles_removed_total",
            "counter",
            "Old profiles removed to keep the local directory bounded.",
            get(&self.profiles_removed),
        );
        metric(
            "smolder_write_errors_total",
            "counter",
            "Failed writes to the local directory or spool.",
            get(&self.write_errors),
        );
        metric(
            "smolder_pushes_ok_total",
            "counter",
            "Push requests accepted by the server.",
            get(&self.pushes_ok),
        );
        metric(
            "smolder_pushes_failed_total",
            "counter",
            "Push attempts that failed and will be retried (network errors, 5xx).",
            get(&self.pushes_failed),
        );
        metric(
            "smolder_pushes_rate_limited_total",
            "counter",
            "Push attempts answered 429.",
            get(&self.pushes_rate_limited),
        );
        metric(
            "smolder_pushes_rejected_total",
            "counter",
            "Push requests the server rejected (4xx); not retried.",
            get(&self.pushes_rejected),
        );
        metric(
            "smolder_pushed_bytes_total",
            "counter",
            "Bytes of accepted push requests.",
            get(&self.bytes_pushed),
        );
        metric(
            "smolder_spool_files",
            "gauge",
            "Push requests waiting on disk.",
            get(&self.spool_files),
        );
        metric(
            "smolder_spool_bytes",
            "gauge",
            "Bytes waiting on disk.",
            get(&self.spool_bytes),
        );
        metric(
            "smolder_spool_dropped_total",
            "counter",
            "Spooled requests dropped, oldest first, to keep the spool bounded.",
            get(&self.spool_dropped),
        );
        metric(
            "smolder_go_processes",
            "gauge",
            "Go processes whose goroutine labels are read.",
            get(&self.go_processes),
        );
        metric(
            "smolder_go_label_samples_total",
            "counter",
            "Samples of goroutines that carry pprof labels.",
            get(&self.go_label_samples),
        );
        metric(
            "smolder_go_label_read_errors_total",
            "counter",
            "Goroutine label sets that could not be read (the samples carry none).",
            get(&self.go_label_read_errors),
        );
        metric(
            "smolder_go_label_sets_dropped_total",
            "counter",
            "Samples whose allowed Go labels were dropped: more distinct sets in the window than profiling.max_go_label_sets.",
            get(&self.go_label_sets_dropped),
        );
        metric(
            "smolder_cuda_launches_total",
            "counter",
            "CUDA launches the probes counted (while the launch probes were on).",
            get(&self.cuda_launches),
        );
        metric(
            "smolder_cuda_waits_total",
            "counter",
            "CUDA sync and device-to-host copy calls timed.",
            get(&self.cuda_waits),
        );
        metric(
            "smolder_cuda_stacks_total",
            "counter",
            "CUDA launches and waits sampled with their stacks.",
            get(&self.cuda_events),
        );
        metric(
            "smolder_cuda_lost_total",
            "counter",
            "CUDA stacks lost (ring buffer full) and calls not counted (totals map full).",
            get(&self.cuda_events_lost),
        );
        metric(
            "smolder_cuda_libraries",
            "gauge",
            "libcudart and libcuda files the CUDA probes are attached to.",
            get(&self.cuda_libraries),
        );
        metric(
            "smolder_cuda_launch_probe_percent",
            "gauge",
            "Percent of each window the launch probes are on for (100: always; less keeps them within profiling.cuda_max_overhead_percent).",
            get(&self.cuda_launch_duty_percent),
        );
        metric(
            "smolder_spool_corrupt_total",
            "counter",
            "Spooled requests not sent again because they were not what the agent writes.",
            get(&self.spool_corrupt),
        );
        metric(
            "smolder_symbol_lookups_total",
            "counter",
            "Addresses symbolized.",
            get(&self.symbol_lookups),
        );
        metric(
            "smolder_symbol_unknown_total",
            "counter",
            "Addresses left as module+offset.",
            get(&self.symbol_unknown),
        );
        metric(
            "smolder_symbol_cached_addresses",
            "gauge",
            "Symbolized addresses held in the symbolizer's cache.",
            get(&self.symbol_cached_addresses),
        );
        metric(
            "smolder_heap_bytes",
            "gauge",
            "Heap memory the agent holds (allocated, not freed), at the end of the last window.",
            get(&self.heap_bytes),
        );
        metric(
            "smolder_symbol_parsed_files",
            "gauge",
            "Files whose symbols and debug info are held parsed now.",
            get(&self.symbol_parsed_files),
        );
        metric(
            "smolder_symbol_parsed_file_releases_total",
            "counter",
            "Times the parsed files were released (idle, or too many at once).",
            get(&self.symbol_parsed_file_releases),
        );
        metric(
            "smolder_processes_missed_total",
            "counter",
            "Processes gone before their mappings could be read.",
            get(&self.processes_missed),
        );
        metric(
            "smolder_processes_named_after_exit_total",
            "counter",
            "Processes gone before their mappings could be read, named from the mappings recorded in BPF.",
            get(&self.processes_named_after_exit),
        );
        let name = "smolder_push_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Push request latency.\n# TYPE {name} histogram"
        );
        for (bound, bucket) in PUSH_BUCKETS.iter().zip(&self.push_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(bucket));
        }
        let count = get(&self.push_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            get(&self.push_seconds_nanos) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

/// Serves `GET /metrics` until the task is dropped. Requests are read with
/// a size and time limit; anything else gets 404.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut request = vec![0u8; 4096];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < request.len() {
                    let n = stream.read(&mut request[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if request[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&request[..len]);
            let (status, body) =
                if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?") {
                    ("200 OK", metrics.render())
                } else {
                    ("404 Not Found", "try /metrics\n".to_owned())
                };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// Binds the metrics listener.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_histogram() {
        let m = Metrics::default();
        add(&m.pushes_ok, 3);
        m.observe_push(Duration::from_millis(200));
        let text = m.render();
        assert!(text.contains("smolder_pushes_ok_total 3\n"));
        assert!(text.contains("smolder_push_duration_seconds_bucket{le=\"0.1\"} 0\n"));
        assert!(text.contains("smolder_push_duration_seconds_bucket{le=\"0.25\"} 1\n"));
        assert!(text.contains("smolder_push_duration_seconds_count 1\n"));
    }
}
