/* Trace context of the sampled thread: where the OpenTelemetry thread
 * context record (OTEP 4947, `otel_thread_ctx_v1`) of a process is found.
 * Mirrored in profiler/src/trace_context/entry.rs; both sides assert the size. */
#ifndef SMOLDER_TRACE_CONTEXT_H
#define SMOLDER_TRACE_CONTEXT_H

#define SMOLDER_TRACE_PROCESSES 16384

/* Value of `trace_processes`, by tgid. The thread-local variable holds a
 * pointer to the thread's record (or NULL: no context). It lives either in
 * static TLS, at a fixed offset from the thread pointer (fs base), or in a
 * dynamically allocated TLS block found through the thread's DTV. */
struct smolder_trace_process {
	__s64 tp_offset;    /* static TLS: the variable is at fs_base + tp_offset */
	__u64 module_id;    /* dynamic TLS: its module's DTV index; 0 for static */
	__u64 block_offset; /* dynamic TLS: offset inside the module's block */
};

_Static_assert(sizeof(struct smolder_trace_process) == 24,
	       "struct smolder_trace_process layout changed: update the Rust mirror");

/* What is read of a record: its fixed part, up to `valid`. */
#define SMOLDER_TRACE_RECORD_READ 25
#define SMOLDER_TRACE_RECORD_VALID 24

#endif
