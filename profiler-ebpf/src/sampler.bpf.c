// SPDX-License-Identifier: GPL-2.0
/* On-CPU sampler: a perf-event program on every CPU that streams one record
 * per sample (pid, tid, names, kernel and user stacks) through a ring buffer;
 * user space aggregates. Off-CPU: a sched_switch program that times every
 * voluntary sleep and aggregates in the kernel. See docs/architecture.md. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "sampler.h"
#include "offcpu.h"

#define EEXIST 17
#define TASK_INTERRUPTIBLE 0x1
#define TASK_UNINTERRUPTIBLE 0x2

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader before load. */
const volatile __u32 self_tgid = 0;	      /* never sample smolder itself */
const volatile __u8 filter_targets = 0;	      /* 0: every process; 1: only `targets` */
const volatile __u8 follow_children = 0;      /* add forked children of targets */
const volatile __u64 offcpu_min_ns = 0;	      /* shorter blocks are ignored */
const volatile __u32 offcpu_sample_every = 1; /* time 1 in N sleeps */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024); /* resized by the loader for the CPU count */
} samples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SMOLDER_MAX_TARGETS);
	__type(key, __u32); /* tgid */
	__type(value, __u8);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count_n(__u32 stat, __u64 n)
{
	__u64 *value = bpf_map_lookup_elem(&stats, &stat);
	if (value)
		*value += n;
}

static __always_inline void count(__u32 stat)
{
	count_n(stat, 1);
}

#include "unwind_user.h"
/* Defines `sample_scratch`, where each sample is built before it is copied
 * into the ring buffer (the walkers fill it from bpf_loop callbacks). */
#include "python_user.h"
#include "trace_context_user.h"

/* The user stack with the kernel's frame-pointer walk. */
static __always_inline void frame_pointer_stack(struct bpf_perf_event_data *ctx,
						struct smolder_sample *s)
{
	long ulen = bpf_get_stack(ctx, s->user_stack, sizeof(s->user_stack), BPF_F_USER_STACK);
	if (ulen < 0) {
		count(STAT_USTACK_ERROR);
		s->user_len = (__s32)ulen;
		return;
	}
	s->user_len = (__s32)(ulen / sizeof(__u64));
	if (s->user_len == SMOLDER_MAX_USER_FRAMES)
		s->flags |= SAMPLE_USER_TRUNCATED;
}

static __always_inline void user_stack(struct bpf_perf_event_data *ctx, struct smolder_sample *s)
{
	int fp_frames = unwind_user_stack(ctx, s);
	if (fp_frames < 0) {
		count(STAT_UNWIND_NO_PROCESS);
		frame_pointer_stack(ctx, s);
		return;
	}
	count(STAT_UNWIND_TABLES);
	if (fp_frames > 0)
		count_n(STAT_UNWIND_FP_FRAMES, (__u64)fp_frames);
	if (s->flags & SAMPLE_USER_UNWIND_ERROR)
		count(STAT_UNWIND_ERROR);
	if (s->flags & SAMPLE_USER_TRUNCATED)
		count(STAT_UNWIND_TRUNCATED);
	if (s->flags & SAMPLE_USER_UNMAPPED)
		count(STAT_UNWIND_UNMAPPED);
}

static __always_inline void count_python(__u32 status)
{
	if (status == PY_STATUS_NONE)
		return;
	count(STAT_PYTHON_STACKS);
	if (status == PY_STATUS_NO_THREAD)
		count(STAT_PYTHON_NO_THREAD);
	else if (status == PY_STATUS_ERROR)
		count(STAT_PYTHON_ERRORS);
	else if (status == PY_STATUS_TRUNCATED)
		count(STAT_PYTHON_TRUNCATED);
}

static __always_inline int is_target(__u32 tgid)
{
	if (tgid == 0 || tgid == self_tgid)
		return 0; /* idle task, or smolder */
	if (!filter_targets)
		return 1;
	return bpf_map_lookup_elem(&targets, &tgid) != NULL;
}

SEC("perf_event")
int sample_cpu(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (!is_target(tgid))
		return 0;

	__u32 zero = 0;
	struct smolder_sample *s = bpf_map_lookup_elem(&sample_scratch, &zero);
	if (!s)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	s->pid = tgid;
	s->tid = (__u32)id;
	s->time_ns = bpf_ktime_get_ns();
	s->cpu = bpf_get_smp_processor_id();
	s->flags = 0;
	bpf_get_current_comm(s->thread_comm, sizeof(s->thread_comm));
	BPF_CORE_READ_STR_INTO(&s->comm, task, group_leader, comm);

	long klen = bpf_get_stack(ctx, s->kernel_stack, sizeof(s->kernel_stack), 0);
	if (klen < 0) {
		count(STAT_KSTACK_ERROR);
		s->kernel_len = (__s32)klen;
	} else {
		s->kernel_len = (__s32)(klen / sizeof(__u64));
		if (s->kernel_len == SMOLDER_MAX_KERNEL_FRAMES)
			s->flags |= SAMPLE_KERNEL_TRUNCATED;
	}

	/* Kernel threads have no user stack. */
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	s->mm_id = (__u64)mm;
	s->user_len = 0;
	s->python_len = 0;
	s->python_status = PY_STATUS_NONE;
	s->exec_vm = 0;
	if (mm != NULL) {
		s->exec_vm = BPF_CORE_READ(mm, exec_vm);
		user_stack(ctx, s);
		python_stack(s, task);
		count_python(s->python_status);
		trace_context(s, task);
	}

	/* Only the Python frames in use are sent. User space drains the buffer
	 * on a timer: no wakeup per sample. */
	__u64 size = SMOLDER_SAMPLE_BASE_SIZE +
		     (__u64)(s->python_len & 127) * sizeof(struct smolder_python_frame);
	if (size > sizeof(*s))
		size = sizeof(*s);
	if (bpf_ringbuf_output(&samples, s, size, BPF_RB_NO_WAKEUP) != 0) {
		count(STAT_RINGBUF_FULL);
		return 0;
	}
	count(STAT_SAMPLES);
	return 0;
}

/* Follow children of target processes (for `smolder record -- COMMAND`). */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(follow_fork, struct task_struct *parent, struct task_struct *child)
{
	if (!filter_targets || !follow_children)
		return 0;
	__u32 parent_tgid = BPF_CORE_READ(parent, tgid);
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	if (parent_tgid == child_tgid)
		return 0; /* a new thread, already covered */
	if (!bpf_map_lookup_elem(&targets, &parent_tgid))
		return 0;
	__u8 one = 1;
	if (bpf_map_update_elem(&targets, &child_tgid, &one, BPF_ANY) != 0)
		count(STAT_TARGETS_FULL);
	return 0;
}

/* ---- off-CPU ---- */

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
	__u64 hash = 0xcbf29ce484222325ULL ^ c->flags;
	for (__u32 i = 0; i < SMOLDER_MAX_USER_FRAMES; i++) {
		if (i >= len)
			break;
		hash = (hash ^ stack->frames[i]) * 0x100000001b3ULL;
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
	};
	start.kernel_stack = bpf_get_stackid(ctx, &offcpu_stacks, 0);
	start.user_stack = -1;
	if (mm) {
		start.user_stack = dwarf_user_stack_id(tgid);
		if (start.user_stack < 0)
			start.user_stack = bpf_get_stackid(ctx, &offcpu_stacks, BPF_F_USER_STACK);
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
	};
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
