/* Off-CPU: a sched_switch program that times every voluntary sleep of a
 * target thread and aggregates the blocked time in the kernel, by thread,
 * stacks (kernel, user, Python) and trace context. Included by sampler.bpf.c
 * (it shares `targets`, `stats` and the walkers). See docs/architecture.md. */
#ifndef SMOLDER_OFFCPU_SWITCH_H
#define SMOLDER_OFFCPU_SWITCH_H

#define SYS_FUTEX 202 /* x86_64 */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SMOLDER_OFFCPU_THREADS);
	__type(key, __u32); /* tid */
	__type(value, struct smolder_offcpu_start);
} offcpu_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, SMOLDER_OFFCPU_STACKS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, SMOLDER_MAX_USER_FRAMES * sizeof(__u64));
} offcpu_stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SMOLDER_OFFCPU_TOTALS);
	__type(key, struct smolder_offcpu_key);
	__type(value, struct smolder_offcpu_value);
} offcpu_totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} offcpu_threads SEC(".maps");

/* User stacks walked with unwind tables, by id (see offcpu.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SMOLDER_OFFCPU_STACKS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __s32);
	__type(value, struct smolder_offcpu_user_stack);
} offcpu_user_stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct smolder_offcpu_user_stack);
} offcpu_user_scratch SEC(".maps");

/* Python stacks of threads that blocked, by id (see offcpu.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SMOLDER_OFFCPU_PYTHON_STACKS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __s32);
	__type(value, struct smolder_offcpu_python_stack);
} offcpu_python_stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct smolder_offcpu_python_stack);
} offcpu_python_scratch SEC(".maps");

/* Each Python stack the first time it is stored (user space names it). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 512 * 1024);
} offcpu_python_new SEC(".maps");

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

/* The current task's user stack walked with unwind tables and stored in
 * offcpu_user_stacks; its id, or -1 (no tables, or no room: the caller
 * falls back to the kernel's frame-pointer walk). */
static __always_inline __s32 dwarf_user_stack_id(__u32 tgid)
{
	if (!dwarf_unwind)
		return -1;
	__u32 zero = 0;
	struct smolder_offcpu_user_stack *stack = bpf_map_lookup_elem(&offcpu_user_scratch, &zero);
	struct unwind_cursor *c = fresh_cursor();
	if (!stack || !c || saved_user_registers(c) != 0)
		return -1;
	if (walk_user_stack(tgid, c, stack->frames) < 0)
		return -1;
	__u32 len = c->len;
	stack->len = len;
	stack->flags = c->flags;
	/* FNV-1a over the frames and the flags. */
	__u64 hash = FNV_OFFSET ^ c->flags;
	for (__u32 i = 0; i < SMOLDER_MAX_USER_FRAMES; i++) {
		if (i >= len)
			break;
		hash = (hash ^ stack->frames[i]) * FNV_PRIME;
	}
	stack->hash = hash;
	__s32 id = (__s32)((hash & SMOLDER_OFFCPU_DWARF_ID_MASK) | SMOLDER_OFFCPU_DWARF_ID);
	long err = bpf_map_update_elem(&offcpu_user_stacks, &id, stack, BPF_NOEXIST);
	if (err == 0)
		return id;
	if (err == -EEXIST) {
		struct smolder_offcpu_user_stack *stored =
		    bpf_map_lookup_elem(&offcpu_user_stacks, &id);
		if (stored && stored->hash == hash)
			return id;
		count(STAT_OFFCPU_DWARF_COLLISION);
		return -1;
	}
	count(STAT_OFFCPU_STACK_ERROR);
	return -1;
}

/* The Python frames of the current thread stored in offcpu_python_stacks
 * (and announced the first time); their id, or -1 (not a Python thread, or
 * no room). */
static __always_inline __s32 python_stack_id(__u32 tgid, __u32 tid, struct task_struct *task)
{
	__u32 zero = 0;
	struct smolder_offcpu_python_stack *stack =
	    bpf_map_lookup_elem(&offcpu_python_scratch, &zero);
	if (!stack)
		return -1;
	__u32 len = 0;
	__u32 status = python_frames(tgid, tid, task, stack->frames, &len);
	if (status == PY_STATUS_NONE || status == PY_STATUS_NO_THREAD || len == 0 ||
	    len > SMOLDER_MAX_PYTHON_FRAMES)
		return -1;
	stack->pid = tgid;
	stack->len = len;
	stack->status = status;
	/* FNV-1a over what names the stack: code objects belong to one process. */
	__u64 hash = (FNV_OFFSET ^ tgid) * FNV_PRIME;
	hash = (hash ^ status) * FNV_PRIME;
	/* Hide the bound checked above from the compiler, so that it keeps the
	 * loop's own (the verifier needs it on the loop's register). */
	asm volatile("" : "+r"(len));
	for (__u32 i = 0; i < SMOLDER_MAX_PYTHON_FRAMES; i++) {
		if (i >= len)
			break;
		struct smolder_python_frame *f = &stack->frames[i];
		hash = (hash ^ f->code) * FNV_PRIME;
		hash = (hash ^ ((__u64)f->instr | (__u64)(__u32)f->first_line << 32)) * FNV_PRIME;
	}
	__s32 id = (__s32)(hash & 0x7fffffff);
	stack->hash = hash;
	stack->id = id;
	long err = bpf_map_update_elem(&offcpu_python_stacks, &id, stack, BPF_NOEXIST);
	if (err == 0) {
		__u64 size = SMOLDER_OFFCPU_PYTHON_BASE_SIZE +
			     (__u64)(len & 127) * sizeof(struct smolder_python_frame);
		if (size > sizeof(*stack))
			size = sizeof(*stack);
		if (bpf_ringbuf_output(&offcpu_python_new, stack, size, BPF_RB_NO_WAKEUP) != 0)
			count(STAT_OFFCPU_PYTHON_EVENTS_FULL);
		return id;
	}
	if (err == -EEXIST) {
		struct smolder_offcpu_python_stack *stored =
		    bpf_map_lookup_elem(&offcpu_python_stacks, &id);
		if (stored && stored->hash == hash)
			return id;
		count(STAT_OFFCPU_PYTHON_COLLISION);
		return -1;
	}
	count(STAT_OFFCPU_PYTHON_FULL);
	return -1;
}

/* Whether the current thread of a Python process sleeps on the GIL: in a
 * futex inside the interpreter's `_gil_runtime_state` (its mutex, its
 * condition variable, or the forced-switch pair), which is where take_gil
 * and drop_gil wait whatever the version. */
static __always_inline int waits_for_gil(__u32 tgid)
{
	const struct smolder_python_process *p = bpf_map_lookup_elem(&python_processes, &tgid);
	if (!p || p->gil == 0)
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (!regs || BPF_CORE_READ(regs, orig_ax) != SYS_FUTEX)
		return 0;
	__u64 uaddr = BPF_CORE_READ(regs, di);
	return uaddr - p->gil < p->gil_size;
}

static __always_inline void add_blocked(struct smolder_offcpu_value *value, __u64 delta)
{
	__sync_fetch_and_add(&value->nanos, delta);
	__sync_fetch_and_add(&value->count, 1);
}

static __always_inline void announce_thread(struct smolder_offcpu_key *key,
					    struct task_struct *task)
{
	struct smolder_offcpu_thread *ev = bpf_ringbuf_reserve(&offcpu_threads, sizeof(*ev), 0);
	if (!ev) {
		count(STAT_OFFCPU_EVENTS_FULL);
		return;
	}
	ev->pid = key->pid;
	ev->tid = key->tid;
	ev->mm_id = key->mm_id;
	BPF_CORE_READ_STR_INTO(&ev->thread_comm, task, comm);
	BPF_CORE_READ_STR_INTO(&ev->comm, task, group_leader, comm);
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

/* Runs in the context of `prev`, the task leaving the CPU. */
static __always_inline void switch_out(void *ctx, struct task_struct *prev, __u64 now)
{
	__u32 tgid = BPF_CORE_READ(prev, tgid);
	if (!is_target(tgid))
		return;
	if (offcpu_sample_every > 1 && bpf_get_prandom_u32() % offcpu_sample_every != 0)
		return;
	__u32 tid = BPF_CORE_READ(prev, pid);
	struct mm_struct *mm = BPF_CORE_READ(prev, mm);
	struct smolder_offcpu_start start = {
	    .time_ns = now,
	    .mm_id = (__u64)mm,
	    .pid = tgid,
	    .python_stack = -1,
	};
	start.kernel_stack = bpf_get_stackid(ctx, &offcpu_stacks, 0);
	start.user_stack = -1;
	if (mm) {
		start.user_stack = dwarf_user_stack_id(tgid);
		if (start.user_stack < 0)
			start.user_stack = bpf_get_stackid(ctx, &offcpu_stacks, BPF_F_USER_STACK);
		start.python_stack = python_stack_id(tgid, tid, prev);
		if (start.python_stack >= 0 && waits_for_gil(tgid)) {
			start.flags |= OFFCPU_GIL_WAIT;
			count(STAT_OFFCPU_GIL_WAITS);
		}
		if (trace_context_read(tgid, prev, start.trace_id, start.span_id))
			start.flags |= OFFCPU_TRACE_CONTEXT;
		if (in_gpu_wait(tid))
			start.flags |= OFFCPU_GPU_WAIT;
	}
	if (start.kernel_stack < 0 || (mm && start.user_stack < 0))
		count(STAT_OFFCPU_STACK_ERROR);
	bpf_map_update_elem(&offcpu_start, &tid, &start, BPF_ANY);
}

static __always_inline void switch_in(struct task_struct *next, __u64 now)
{
	__u32 tid = BPF_CORE_READ(next, pid);
	struct smolder_offcpu_start *start = bpf_map_lookup_elem(&offcpu_start, &tid);
	if (!start)
		return;
	__u64 delta = now - start->time_ns;
	struct smolder_offcpu_key key = {
	    .pid = start->pid,
	    .tid = tid,
	    .kernel_stack = start->kernel_stack,
	    .user_stack = start->user_stack,
	    .mm_id = start->mm_id,
	    .python_stack = start->python_stack,
	    .flags = start->flags,
	};
	__builtin_memcpy(key.trace_id, start->trace_id, sizeof(key.trace_id));
	__builtin_memcpy(key.span_id, start->span_id, sizeof(key.span_id));
	bpf_map_delete_elem(&offcpu_start, &tid);
	if (delta < offcpu_min_ns)
		return;
	struct smolder_offcpu_value *value = bpf_map_lookup_elem(&offcpu_totals, &key);
	if (value) {
		add_blocked(value, delta);
		return;
	}
	struct smolder_offcpu_value first = {.nanos = delta, .count = 1};
	long err = bpf_map_update_elem(&offcpu_totals, &key, &first, BPF_NOEXIST);
	if (err == -EEXIST) {
		/* Another CPU created it in between. */
		value = bpf_map_lookup_elem(&offcpu_totals, &key);
		if (value)
			add_blocked(value, delta);
		return;
	}
	if (err) {
		count(STAT_OFFCPU_TOTALS_FULL);
		return;
	}
	announce_thread(&key, next);
}

static __always_inline int on_switch(void *ctx, bool preempt, struct task_struct *prev,
				     struct task_struct *next, unsigned int prev_state)
{
	__u64 now = bpf_ktime_get_ns();
	/* Voluntary sleeps only: a preempted task is runnable, not waiting. */
	if (!preempt && (prev_state & (TASK_INTERRUPTIBLE | TASK_UNINTERRUPTIBLE)))
		switch_out(ctx, prev, now);
	switch_in(next, now);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(offcpu_switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	return on_switch(ctx, preempt, prev, next, prev_state);
}

/* The same, for kernels whose BTF cannot attach tp_btf programs. */
SEC("raw_tp/sched_switch")
int BPF_PROG(offcpu_switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	return on_switch(ctx, preempt, prev, next, prev_state);
}

#endif
