/* CUDA probes: what they hand to user space. Mirrored in
 * profiler/src/collect/cuda.rs; both sides assert the sizes. */
#ifndef SMOLDER_CUDA_H
#define SMOLDER_CUDA_H

#include "sampler.h"

#define SMOLDER_CUDA_COUNTS 16384   /* distinct (process, API, function) */
#define SMOLDER_CUDA_THREADS 16384  /* threads inside a sync call at once (LRU) */
#define SMOLDER_CUDA_PROCESSES 4096 /* rate-limit buckets (LRU) */

/* The attach cookie of every CUDA probe: the API's id (enum CudaApi in
 * profiler/src/collect/cuda.rs) in the low 16 bits, and flags. */
#define CUDA_API_MASK 0xffffu
#define CUDA_FUNC_IN_ARG2 (1u << 16)   /* launch: the function is the second argument */
#define CUDA_DRIVER (1u << 17)	       /* a driver (libcuda) launch: skipped inside a runtime one */
#define CUDA_COPY_KIND_ARG4 (1u << 18) /* cudaMemcpy: waits only for device-to-host copies */
#define CUDA_ALIAS_OF_KERNEL (1u << 19) /* cuKernelGetFunction: the handle aliases a kernel's */

/* smolder_cuda_event.kind */
#define CUDA_EVENT_LAUNCH 1
#define CUDA_EVENT_WAIT 2

/* Exact totals per process, API and function (0 for waits). */
struct smolder_cuda_key {
	__u32 pid;
	__u32 api;
	__u64 func;
};

struct smolder_cuda_total {
	__u64 calls;
	__u64 spin_ns;	  /* waits: time on CPU inside the call */
	__u64 blocked_ns; /* waits: time off CPU inside the call */
};

/* A thread inside a sync call (per thread, until it returns). */
struct smolder_cuda_wait {
	__u64 start_ns;
	__u64 cpu_ns; /* the thread's sum_exec_runtime at entry */
	__u64 entry;  /* address of the API function */
	__u64 sp;     /* stack pointer at entry: its return is the one with sp + 8 */
	__u32 api;
	__u32 pad;
};

/* One sampled launch or wait, with the stack that made it (kernel_len 0).
 * Cut after the last Python frame like smolder_sample. */
struct smolder_cuda_event {
	__u32 kind; /* CUDA_EVENT_* */
	__u32 api;
	__u64 func; /* launch: host function, CUfunction or graph; wait: 0 */
	__u64 spin_ns;
	__u64 blocked_ns;
	struct smolder_sample sample;
};

#define SMOLDER_CUDA_EVENT_HEADER 32

#define SMOLDER_CUDA_NAME_LEN 240

/* A function handle handed out by the driver (cuModuleGetFunction,
 * cuLibraryGetKernel: with its kernel's name; cuKernelGetFunction: the
 * function of a kernel handle, `alias`). */
struct smolder_cuda_name {
	__u32 pid;
	__u32 api;
	__u64 handle;
	__u64 alias;
	char name[SMOLDER_CUDA_NAME_LEN];
};

_Static_assert(sizeof(struct smolder_cuda_key) == 16, "cuda_key layout");
_Static_assert(sizeof(struct smolder_cuda_name) == 24 + SMOLDER_CUDA_NAME_LEN, "cuda_name layout");
_Static_assert(sizeof(struct smolder_cuda_total) == 24, "cuda_total layout");
_Static_assert(__builtin_offsetof(struct smolder_cuda_event, sample) == SMOLDER_CUDA_EVENT_HEADER,
	       "cuda_event layout");

#endif
