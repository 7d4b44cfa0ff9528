/* CUDA: uprobes on the launch, sync and copy entry points of libcudart and
 * libcuda, attached per library file by user space (every process that maps
 * the file is covered, running or not). Every call is counted exactly in
 * `cuda_counts`; a sample of them, under a per-process rate limit, goes to
 * user space with the stack (native, Python, trace context) that made it.
 * Sync calls are timed from entry to return, time on CPU (spinning) and
 * off it (blocked) apart. Included by sampler.bpf.c (it shares `targets`,
 * `stats` and the walkers). See docs/gpu.md. */
#ifndef SMOLDER_CUDA_PROBES_H
#define SMOLDER_CUDA_PROBES_H

#include "cuda.h"

/* Set by the loader before load. */
const volatile __u32 cuda_stacks_per_second = 100; /* per process; 0: counts only */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SMOLDER_CUDA_COUNTS);
	__type(key, struct smolder_cuda_key);
	__type(value, struct smolder_cuda_total);
} cuda_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SMOLDER_CUDA_THREADS);
	__type(key, __u32); /* tid */
	__type(value, struct smolder_cuda_wait);
} cuda_waiting SEC(".maps");

/* Threads inside a runtime launch: the driver launch it makes is not
 * counted again. tid -> time of the runtime call. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SMOLDER_CUDA_THREADS);
	__type(key, __u32);
	__type(value, __u64);
} cuda_runtime_launch SEC(".maps");

/* Per-process token bucket for sampled stacks. */
struct cuda_bucket {
	__u64 last_ns;
	__u64 tokens; /* in 1/1e9 of a stack */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SMOLDER_CUDA_PROCESSES);
	__type(key, __u32);
	__type(value, struct cuda_bucket);
} cuda_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} cuda_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct smolder_cuda_event);
} cuda_scratch SEC(".maps");

/* A driver launch this soon after a runtime launch on the same thread is
 * the runtime's own. */
#define CUDA_RUNTIME_LAUNCH_NS 1000000ULL

static __always_inline void cuda_count(__u32 tgid, __u32 api, __u64 func, __u64 spin_ns,
				       __u64 blocked_ns)
{
	struct smolder_cuda_key key = {.pid = tgid, .api = api, .func = func};
	struct smolder_cuda_total *total = bpf_map_lookup_elem(&cuda_counts, &key);
	if (!total) {
		/* First call: make the entry (or find the one another CPU made). */
		struct smolder_cuda_total zero = {};
		bpf_map_update_elem(&cuda_counts, &key, &zero, BPF_NOEXIST);
		total = bpf_map_lookup_elem(&cuda_counts, &key);
		if (!total) {
			count(STAT_CUDA_COUNTS_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&total->calls, 1);
	if (spin_ns)
		__sync_fetch_and_add(&total->spin_ns, spin_ns);
	if (blocked_ns)
		__sync_fetch_and_add(&total->blocked_ns, blocked_ns);
}

/* Whether this call of process `tgid` gets its stack sampled: one token a
 * call, cuda_stacks_per_second tokens a second, as many at most. */
static __always_inline int cuda_take_token(__u32 tgid, __u64 now)
{
	if (cuda_stacks_per_second == 0)
		return 0;
	__u64 full = (__u64)cuda_stacks_per_second * 1000000000ULL;
	struct cuda_bucket *b = bpf_map_lookup_elem(&cuda_buckets, &tgid);
	if (!b) {
		struct cuda_bucket fresh = {.last_ns = now, .tokens = full - 1000000000ULL};
		bpf_map_update_elem(&cuda_buckets, &tgid, &fresh, BPF_ANY);
		return 1;
	}
	__u64 elapsed = now > b->last_ns ? now - b->last_ns : 0;
	__u64 tokens = b->tokens + elapsed * cuda_stacks_per_second;
	if (tokens > full)
		tokens = full;
	b->last_ns = now;
	if (tokens < 1000000000ULL) {
		b->tokens = tokens;
		return 0;
	}
	b->tokens = tokens - 1000000000ULL;
	return 1;
}

/* The user stack from the registers of the probed call, with unwind tables
 * when the process has them, else the kernel's frame-pointer walk. */
static __always_inline void cuda_user_stack(struct pt_regs *regs, struct smolder_sample *s)
{
	struct unwind_cursor *c = dwarf_unwind ? fresh_cursor() : NULL;
	if (c) {
		c->ip = PT_REGS_IP(regs);
		c->sp = PT_REGS_SP(regs);
		c->bp = BPF_CORE_READ(regs, bp);
		if (walk_user_stack(s->pid, c, s->user_stack) >= 0) {
			s->user_len = (__s32)c->len;
			s->flags |= c->flags;
			return;
		}
	}
	long ulen = bpf_get_stack(regs, s->user_stack, sizeof(s->user_stack), BPF_F_USER_STACK);
	s->user_len = ulen < 0 ? (__s32)ulen : (__s32)(ulen / sizeof(__u64));
	if (s->user_len == SMOLDER_MAX_USER_FRAMES)
		s->flags |= SAMPLE_USER_TRUNCATED;
}

/* Moves one frame a slot outwards, the outermost first. */
struct shift_context {
	__u64 *frames;
};

static long shift_frame(__u32 index, void *data)
{
	__u64 *frames = ((struct shift_context *)data)->frames;
	__u32 to = SMOLDER_MAX_USER_FRAMES - 1 - index;
	if (to == 0 || to >= SMOLDER_MAX_USER_FRAMES)
		return 1;
	/* Masked for the verifier, after a barrier that keeps the compiler
	 * from dropping the mask as redundant. */
	asm volatile("" : "+r"(to));
	frames[to & 127] = frames[(to - 1) & 127];
	return 0;
}

/* Sends one sampled call with the current thread's stacks. `entry`, when
 * not 0, is put at the leaf (a return probe's stack starts in the caller). */
static __always_inline void cuda_event(struct pt_regs *regs, __u32 kind, __u32 api, __u64 func,
				       __u64 spin_ns, __u64 blocked_ns, __u64 entry)
{
	__u32 zero = 0;
	struct smolder_cuda_event *e = bpf_map_lookup_elem(&cuda_scratch, &zero);
	if (!e)
		return;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct smolder_sample *s = &e->sample;
	e->kind = kind;
	e->api = api;
	e->func = func;
	e->spin_ns = spin_ns;
	e->blocked_ns = blocked_ns;
	begin_sample(s, task);
	cuda_user_stack(regs, s);
	if (entry && s->user_len >= 0) {
		/* Make room for the API function at the leaf. */
		struct shift_context shift = {.frames = s->user_stack};
		bpf_loop(SMOLDER_MAX_USER_FRAMES - 1, shift_frame, &shift, 0);
		s->user_stack[0] = entry;
		if (s->user_len < SMOLDER_MAX_USER_FRAMES)
			s->user_len++;
		else
			s->flags |= SAMPLE_USER_TRUNCATED;
	}
	python_stack(s, task);
	trace_context(s, task);
	go_labels(s, task);
	__u64 size = SMOLDER_CUDA_EVENT_HEADER + SMOLDER_SAMPLE_BASE_SIZE +
		     (__u64)(s->python_len & 127) * sizeof(struct smolder_python_frame);
	if (size > sizeof(*e))
		size = sizeof(*e);
	if (bpf_ringbuf_output(&cuda_events, e, size, BPF_RB_NO_WAKEUP) != 0) {
		count(STAT_CUDA_EVENTS_FULL);
		return;
	}
	count(STAT_CUDA_EVENTS);
}

SEC("uprobe")
int cuda_launch(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!is_target(tgid))
		return 0;
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 api = cookie & CUDA_API_MASK;
	__u64 now = bpf_ktime_get_ns();
	if (cookie & CUDA_DRIVER) {
		__u64 *runtime = bpf_map_lookup_elem(&cuda_runtime_launch, &tid);
		if (runtime && now - *runtime < CUDA_RUNTIME_LAUNCH_NS) {
			bpf_map_delete_elem(&cuda_runtime_launch, &tid);
			return 0; /* counted at the runtime's entry */
		}
	} else {
		bpf_map_update_elem(&cuda_runtime_launch, &tid, &now, BPF_ANY);
	}
	/* Both read: the verifier refuses a context offset chosen at run time. */
	volatile __u64 arg1 = PT_REGS_PARM1(ctx);
	volatile __u64 arg2 = PT_REGS_PARM2(ctx);
	__u64 func = (cookie & CUDA_FUNC_IN_ARG2) ? arg2 : arg1;
	count(STAT_CUDA_LAUNCHES);
	cuda_count(tgid, api, func, 0, 0);
	if (cuda_take_token(tgid, now))
		cuda_event(ctx, CUDA_EVENT_LAUNCH, api, func, 0, 0, 0);
	return 0;
}

/* CPU time the current thread has run, as the scheduler last accounted it
 * (at the last tick or switch: the spin/blocked split is as fine as that). */
static __always_inline __u64 thread_cpu_ns(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	return task->se.sum_exec_runtime;
}

SEC("uprobe")
int cuda_wait_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!is_target(tgid))
		return 0;
	__u64 cookie = bpf_get_attach_cookie(ctx);
	if (cookie & CUDA_COPY_KIND_ARG4) {
		__u64 kind = PT_REGS_PARM4(ctx);
		if (kind != 2 && kind != 4) /* cudaMemcpyDeviceToHost, cudaMemcpyDefault */
			return 0;
	}
	__u64 sp = PT_REGS_SP(ctx);
	/* A sync call made inside another (the runtime's through the driver's)
	 * is timed as part of the outer one. */
	struct smolder_cuda_wait *outer = bpf_map_lookup_elem(&cuda_waiting, &tid);
	if (outer && outer->sp > sp)
		return 0;
	struct smolder_cuda_wait wait = {
	    .start_ns = bpf_ktime_get_ns(),
	    .cpu_ns = thread_cpu_ns(),
	    .entry = PT_REGS_IP(ctx),
	    .sp = sp,
	    .api = cookie & CUDA_API_MASK,
	};
	bpf_map_update_elem(&cuda_waiting, &tid, &wait, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int cuda_wait_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	struct smolder_cuda_wait *found = bpf_map_lookup_elem(&cuda_waiting, &tid);
	if (!found || found->sp + 8 != PT_REGS_SP(ctx))
		return 0; /* not timed, or the return of a call inside it */
	struct smolder_cuda_wait wait = *found;
	bpf_map_delete_elem(&cuda_waiting, &tid);
	__u64 now = bpf_ktime_get_ns();
	__u64 elapsed = now > wait.start_ns ? now - wait.start_ns : 0;
	__u64 cpu = thread_cpu_ns();
	__u64 spin = cpu > wait.cpu_ns ? cpu - wait.cpu_ns : 0;
	if (spin > elapsed)
		spin = elapsed;
	count(STAT_CUDA_WAITS);
	cuda_count(tgid, wait.api, 0, spin, elapsed - spin);
	if (cuda_take_token(tgid, now))
		cuda_event(ctx, CUDA_EVENT_WAIT, wait.api, 0, spin, elapsed - spin, wait.entry);
	return 0;
}

/* A call that hands out a function handle, between entry and return. */
struct cuda_name_call {
	__u64 out;    /* where the handle is written */
	__u64 name;   /* the kernel's name (a user string), or 0 */
	__u64 kernel; /* cuKernelGetFunction: the kernel handle */
	__u64 sp;
	__u32 api;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32); /* tid */
	__type(value, struct cuda_name_call);
} cuda_name_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} cuda_names SEC(".maps");

/* cuModuleGetFunction(CUfunction *out, CUmodule, const char *name),
 * cuLibraryGetKernel(CUkernel *out, CUlibrary, const char *name),
 * cuKernelGetFunction(CUfunction *out, CUkernel). */
SEC("uprobe")
int cuda_name_enter(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!is_target(tgid))
		return 0;
	__u64 cookie = bpf_get_attach_cookie(ctx);
	volatile __u64 arg2 = PT_REGS_PARM2(ctx);
	volatile __u64 arg3 = PT_REGS_PARM3(ctx);
	struct cuda_name_call call = {
	    .out = PT_REGS_PARM1(ctx),
	    .sp = PT_REGS_SP(ctx),
	    .api = cookie & CUDA_API_MASK,
	};
	if (cookie & CUDA_ALIAS_OF_KERNEL)
		call.kernel = arg2;
	else
		call.name = arg3;
	bpf_map_update_elem(&cuda_name_calls, &tid, &call, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int cuda_name_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	struct cuda_name_call *found = bpf_map_lookup_elem(&cuda_name_calls, &tid);
	if (!found || found->sp + 8 != PT_REGS_SP(ctx))
		return 0;
	struct cuda_name_call call = *found;
	bpf_map_delete_elem(&cuda_name_calls, &tid);
	if (PT_REGS_RC(ctx) != 0)
		return 0; /* CUDA_SUCCESS only */
	__u64 handle = 0;
	if (bpf_probe_read_user(&handle, sizeof(handle), (void *)call.out) != 0 || handle == 0)
		return 0;
	struct smolder_cuda_name *e = bpf_ringbuf_reserve(&cuda_names, sizeof(*e), 0);
	if (!e) {
		count(STAT_CUDA_EVENTS_FULL);
		return 0;
	}
	e->pid = tgid;
	e->api = call.api;
	e->handle = handle;
	e->alias = call.kernel;
	e->name[0] = 0;
	if (call.name)
		bpf_probe_read_user_str(e->name, sizeof(e->name), (void *)call.name);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* Whether the current thread is inside a timed sync call. */
static __always_inline int in_gpu_wait(__u32 tid)
{
	return cuda_watch && bpf_map_lookup_elem(&cuda_waiting, &tid) != NULL;
}

#endif
