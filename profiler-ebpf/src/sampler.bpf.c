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

static __always_inline int is_target(__u32 tgid)
{
	if (tgid == 0 || tgid == self_tgid)
		return 0; /* idle task, or smolder */
	if (!filter_targets)
		return 1;
	return bpf_map_lookup_elem(&targets, &tgid) != NULL;
}

/* Fills what every sample record starts with, for the current thread of
 * `task`: ids, time, CPU, names, address space; no stacks yet (lengths 0).
 * Returns the address space (NULL for a kernel thread). */
static __always_inline struct mm_struct *begin_sample(struct smolder_sample *s,
						      struct task_struct *task)
{
	__u64 id = bpf_get_current_pid_tgid();
	s->pid = id >> 32;
	s->tid = (__u32)id;
	s->time_ns = bpf_ktime_get_ns();
	s->cpu = bpf_get_smp_processor_id();
	s->flags = 0;
	s->kernel_len = 0;
	s->user_len = 0;
	s->python_len = 0;
	s->python_status = PY_STATUS_NONE;
	s->go_labels = 0;
	bpf_get_current_comm(s->thread_comm, sizeof(s->thread_comm));
	BPF_CORE_READ_STR_INTO(&s->comm, task, group_leader, comm);
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	s->mm_id = (__u64)mm;
	s->exec_vm = mm ? BPF_CORE_READ(mm, exec_vm) : 0;
	return mm;
}

#include "unwind_user.h"
/* Defines `sample_scratch`, where each sample is built before it is copied
 * into the ring buffer (the walkers fill it from bpf_loop callbacks). */
#include "python_user.h"
#include "trace_context_user.h"
#include "go_labels_user.h"
#include "cuda_probes.h"

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
	struct mm_struct *mm = begin_sample(s, task);

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
	if (mm != NULL) {
		user_stack(ctx, s);
		python_stack(s, task);
		count_python(s->python_status);
		trace_context(s, task);
		go_labels(s, task);
	}
	if (in_gpu_wait(s->tid))
		s->flags |= SAMPLE_GPU_WAIT;

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

#include "offcpu_switch.h"
