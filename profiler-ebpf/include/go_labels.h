/* Where a Go process keeps the pprof labels of the goroutine a thread runs.
 * Mirrored in profiler/src/go/entry.rs; both sides assert the size. */
#ifndef SMOLDER_GO_LABELS_H
#define SMOLDER_GO_LABELS_H

#define SMOLDER_GO_PROCESSES 16384

/* Value of `go_processes`, by tgid. The running g is at fs_base +
 * g_tls_offset; its m's curg is the user goroutine (also while the thread
 * runs on g0, in the scheduler or a cgo call, on its behalf), whose
 * `labels` points at the runtime/pprof label set (or is 0). Offsets depend
 * on the Go version the binary was built with. */
struct smolder_go_process {
	__s64 g_tls_offset;
	__u32 m_offset;	     /* runtime.g.m */
	__u32 curg_offset;   /* runtime.m.curg */
	__u32 labels_offset; /* runtime.g.labels */
	__u32 _pad;
};

_Static_assert(sizeof(struct smolder_go_process) == 24,
	       "struct smolder_go_process layout changed: update the Rust mirror");

#endif
