/* Off-CPU bookkeeping shared with user space. Mirrored in
 * profiler/src/collect/offcpu.rs; both sides assert the sizes. */
#ifndef SMOLDER_OFFCPU_H
#define SMOLDER_OFFCPU_H

#include "python.h"

#define SMOLDER_OFFCPU_THREADS 65536	  /* threads blocked at once (LRU) */
#define SMOLDER_OFFCPU_STACKS 16384	  /* distinct stacks */
#define SMOLDER_OFFCPU_TOTALS 40960	  /* distinct (thread, stacks, trace context) */
#define SMOLDER_OFFCPU_PYTHON_STACKS 4096 /* distinct Python stacks */

/* smolder_offcpu_start.flags and smolder_offcpu_key.flags */
#define OFFCPU_GIL_WAIT (1u << 0)      /* a Python thread waiting for the GIL */
#define OFFCPU_TRACE_CONTEXT (1u << 1) /* trace_id and span_id are set */
#define OFFCPU_GPU_WAIT (1u << 2)      /* blocked inside a CUDA sync call */

/* Where and when a thread went to sleep (per thread, until it wakes). */
struct smolder_offcpu_start {
	__u64 time_ns;
	__u64 mm_id;
	__s32 kernel_stack; /* id in offcpu_stacks, or -errno */
	__s32 user_stack;
	__u32 pid;
	__s32 python_stack; /* id in offcpu_python_stacks, or -1 */
	__u32 flags;	    /* OFFCPU_* */
	__u32 pad;
	__u8 trace_id[16]; /* with OFFCPU_TRACE_CONTEXT */
	__u8 span_id[8];
};

/* Totals are kept per thread, per set of stacks, per address space, per
 * trace context. Stacks are ids into maps of their own, so a key stays small
 * whatever the depth; a span makes entries only for the stacks it blocked
 * in, and a key that does not fit is counted (STAT_OFFCPU_TOTALS_FULL). */
struct smolder_offcpu_key {
	__u32 pid;
	__u32 tid;
	__s32 kernel_stack;
	__s32 user_stack;
	__u64 mm_id;
	__s32 python_stack;
	__u32 flags;
	__u8 trace_id[16];
	__u8 span_id[8];
};

struct smolder_offcpu_value {
	__u64 nanos; /* total time blocked */
	__u64 count; /* number of blocks */
};

/* User stacks walked with unwind tables are kept in offcpu_user_stacks under
 * ids with this bit set (kernel stack-map ids stay below it): the low 30
 * bits of a hash of the frames. `hash` holds all 64 bits, so that a
 * collision is detected (and that block falls back to frame pointers). */
#define SMOLDER_OFFCPU_DWARF_ID (1 << 30)
#define SMOLDER_OFFCPU_DWARF_ID_MASK (SMOLDER_OFFCPU_DWARF_ID - 1)

struct smolder_offcpu_user_stack {
	__u64 hash;
	__u32 len;   /* valid frames */
	__u32 flags; /* SAMPLE_USER_TRUNCATED, SAMPLE_USER_UNWIND_ERROR */
	__u64 frames[127];
};

/* The Python frames of a thread that blocked, kept in offcpu_python_stacks
 * under the low 31 bits of `hash` (a hash of pid, status and frames: code
 * objects belong to one process) and sent once through offcpu_python_new,
 * so user space names the code objects while the process lives. */
struct smolder_offcpu_python_stack {
	__u64 hash;
	__u32 pid;
	__u32 len;    /* valid frames */
	__u32 status; /* enum smolder_python_status */
	__s32 id;
	struct smolder_python_frame frames[SMOLDER_MAX_PYTHON_FRAMES];
};

#define SMOLDER_OFFCPU_PYTHON_BASE_SIZE 24

/* Sent once per new totals entry, so user space learns names and can read
 * the process's mappings while it lives. */
struct smolder_offcpu_thread {
	__u32 pid;
	__u32 tid;
	__u64 mm_id;
	char comm[16];
	char thread_comm[16];
};

_Static_assert(sizeof(struct smolder_offcpu_start) == 64, "offcpu_start layout");
_Static_assert(sizeof(struct smolder_offcpu_key) == 56, "offcpu_key layout");
_Static_assert(sizeof(struct smolder_offcpu_python_stack) ==
		   SMOLDER_OFFCPU_PYTHON_BASE_SIZE + 16 * SMOLDER_MAX_PYTHON_FRAMES,
	       "offcpu_python_stack layout");
_Static_assert(sizeof(struct smolder_offcpu_value) == 16, "offcpu_value layout");
_Static_assert(sizeof(struct smolder_offcpu_thread) == 48, "offcpu_thread layout");
_Static_assert(sizeof(struct smolder_offcpu_user_stack) == 16 + 8 * 127,
	       "offcpu_user_stack layout");

#endif
