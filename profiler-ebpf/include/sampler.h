/* Layout of what the sampler hands to user space. Mirrored in
 * profiler/src/collect/record.rs; both sides assert the sizes. */
#ifndef SMOLDER_SAMPLER_H
#define SMOLDER_SAMPLER_H

#define SMOLDER_MAX_KERNEL_FRAMES 127
#define SMOLDER_MAX_USER_FRAMES 127
#define SMOLDER_COMM_LEN 16
#define SMOLDER_MAX_TARGETS 16384

#include "python.h"

/* Indexes into the per-CPU `stats` array. */
enum smolder_stat {
	STAT_SAMPLES = 0,	     /* samples taken for a target */
	STAT_RINGBUF_FULL = 1,	     /* samples lost: ring buffer full */
	STAT_KSTACK_ERROR = 2,	     /* kernel stack could not be read */
	STAT_USTACK_ERROR = 3,	     /* user stack could not be read */
	STAT_TARGETS_FULL = 4,	     /* a child could not be added to `targets` */
	STAT_OFFCPU_TOTALS_FULL = 5, /* off-CPU time lost: offcpu_totals full */
	STAT_OFFCPU_STACK_ERROR = 6, /* off-CPU stack could not be stored */
	STAT_OFFCPU_EVENTS_FULL = 7, /* new-thread event lost: ring buffer full */
	STAT_UNWIND_TABLES = 8,	     /* user stacks walked with unwind tables */
	STAT_UNWIND_NO_PROCESS = 9,  /* user stacks of processes without tables (frame pointers) */
	STAT_UNWIND_ERROR = 10,	     /* user stacks cut short by an unwind error */
	STAT_UNWIND_TRUNCATED = 11,  /* user stacks deeper than SMOLDER_MAX_USER_FRAMES */
	STAT_UNWIND_FP_FRAMES = 12,  /* frames without a table row, stepped with frame pointers */
	STAT_UNWIND_UNMAPPED = 13,   /* user stacks with an address outside every known mapping */
	STAT_OFFCPU_DWARF_COLLISION = 14,  /* off-CPU DWARF stack id taken by another stack */
	STAT_PYTHON_STACKS = 15,	   /* samples of registered Python processes walked */
	STAT_PYTHON_NO_THREAD = 16,	   /* ... of threads without a PyThreadState */
	STAT_PYTHON_ERRORS = 17,	   /* ... cut short by a failed read */
	STAT_PYTHON_TRUNCATED = 18,	   /* ... deeper than SMOLDER_MAX_PYTHON_FRAMES */
	STAT_TRACE_CONTEXT = 19,	   /* samples that carry a trace context */
	STAT_TRACE_ERRORS = 20,		   /* trace context reads that failed */
	STAT_UNWIND_RECORDED = 21,	   /* user stacks of processes not read yet, walked with the
					      mappings recorded at exec and mmap */
	STAT_OFFCPU_PYTHON_FULL = 22,	   /* off-CPU Python stack not stored: map full */
	STAT_OFFCPU_PYTHON_COLLISION = 23, /* off-CPU Python stack id taken by another stack */
	STAT_OFFCPU_GIL_WAITS = 24,	   /* sleeps of Python threads waiting for the GIL */
	STAT_OFFCPU_PYTHON_EVENTS_FULL = 25, /* new Python stack event lost: ring buffer full */
	STAT_GO_LABELS = 26,		     /* samples of goroutines with pprof labels */
	STAT_GO_LABEL_ERRORS = 27,	     /* goroutine label reads that failed */
	STAT_CUDA_LAUNCHES = 28,	     /* CUDA launches counted */
	STAT_CUDA_WAITS = 29,		     /* CUDA sync calls timed */
	STAT_CUDA_EVENTS = 30,		     /* launches and waits sampled with their stacks */
	STAT_CUDA_EVENTS_FULL = 31,	     /* ... lost: ring buffer full */
	STAT_CUDA_COUNTS_FULL = 32,	     /* CUDA calls not counted: cuda_counts full */
	STAT_COUNT = 33,
};

/* sample.flags */
#define SAMPLE_KERNEL_TRUNCATED (1u << 0)
#define SAMPLE_USER_TRUNCATED (1u << 1)
#define SAMPLE_USER_UNWIND_ERROR (1u << 2) /* the walk stopped early: root is unknown */
/* bit 3 unused (stacks walked by the kernel are counted in STAT_UNWIND_NO_PROCESS) */
#define SAMPLE_USER_UNMAPPED (1u << 4) /* an address outside the known mappings */
#define SAMPLE_TRACE_CONTEXT (1u << 5) /* trace_id and span_id are set */
#define SAMPLE_GPU_WAIT (1u << 6)      /* taken inside a CUDA sync call */

/* One on-CPU sample. Frame arrays hold `*_len` valid entries; a negative
 * length is the kernel's error code from bpf_get_stack. The record is cut
 * after the last Python frame: its size is SMOLDER_SAMPLE_BASE_SIZE plus
 * python_len frames. */
struct smolder_sample {
	__u32 pid;     /* thread group id */
	__u32 tid;     /* thread id */
	__u64 time_ns; /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 mm_id;   /* identity of the address space: changes at exec */
	__u32 cpu;
	__s32 kernel_len;
	__s32 user_len;
	__u32 flags;
	char comm[SMOLDER_COMM_LEN];	    /* process (group leader) name */
	char thread_comm[SMOLDER_COMM_LEN]; /* thread name */
	__u64 kernel_stack[SMOLDER_MAX_KERNEL_FRAMES];
	__u64 user_stack[SMOLDER_MAX_USER_FRAMES];
	__u32 python_len;    /* frames in `python`, newest first */
	__u32 python_status; /* enum smolder_python_status */
	__u64 exec_vm;	     /* pages of executable mappings: changes when a library loads */
	__u8 trace_id[16];   /* with SAMPLE_TRACE_CONTEXT: the thread's trace context */
	__u8 span_id[8];
	__u64 go_labels; /* Go: address of the goroutine's pprof label set, or 0 */
	struct smolder_python_frame python[SMOLDER_MAX_PYTHON_FRAMES];
};

#define SMOLDER_SAMPLE_BASE_SIZE (120 + 8 * (SMOLDER_MAX_KERNEL_FRAMES + SMOLDER_MAX_USER_FRAMES))

_Static_assert(sizeof(struct smolder_sample) ==
		   SMOLDER_SAMPLE_BASE_SIZE + 16 * SMOLDER_MAX_PYTHON_FRAMES,
	       "struct smolder_sample layout changed: update the Rust mirror");
_Static_assert(__builtin_offsetof(struct smolder_sample, python) == SMOLDER_SAMPLE_BASE_SIZE,
	       "struct smolder_sample layout changed: update the Rust mirror");

#endif
