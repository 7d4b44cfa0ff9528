/* Reads the sampled thread's trace context (OTEP 4947) into the sample:
 * at most four user-memory reads, no loop. Included by sampler.bpf.c. */
#include "trace_context.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SMOLDER_TRACE_PROCESSES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32); /* tgid */
	__type(value, struct smolder_trace_process);
} trace_processes SEC(".maps");

/* glibc's dtv_t is two words; the pointer to the vector is the second word
 * of the TCB, and the word before entry 0 holds the vector's length. */
#define DTV_ENTRY_SIZE 16
#define TCB_DTV 8
#define DTV_UNALLOCATED ((__u64) - 1)

/* Where the thread's `otel_thread_ctx_v1` is, or 0 (its dynamic block is
 * not allocated: the thread never touched the variable). */
static __always_inline __u64 trace_slot(const struct smolder_trace_process *p, __u64 fs_base,
					int *failed)
{
	if (p->module_id == 0)
		return fs_base + (__u64)p->tp_offset;
	__u64 dtv = 0, len = 0, block = 0;
	if (bpf_probe_read_user(&dtv, sizeof(dtv), (const void *)(fs_base + TCB_DTV)) != 0 ||
	    bpf_probe_read_user(&len, sizeof(len), (const void *)(dtv - DTV_ENTRY_SIZE)) != 0) {
		*failed = 1;
		return 0;
	}
	if (p->module_id > len)
		return 0;
	if (bpf_probe_read_user(&block, sizeof(block),
				(const void *)(dtv + p->module_id * DTV_ENTRY_SIZE)) != 0) {
		*failed = 1;
		return 0;
	}
	if (block == 0 || block == DTV_UNALLOCATED)
		return 0;
	return block + p->block_offset;
}

/* Reads the current thread's trace context into trace_id and span_id;
 * returns 1 when it has one. */
static __always_inline int trace_context_read(__u32 pid, struct task_struct *task,
					      __u8 trace_id[16], __u8 span_id[8])
{
	const struct smolder_trace_process *p = bpf_map_lookup_elem(&trace_processes, &pid);
	if (!p)
		return 0;
	int failed = 0;
	__u64 slot = trace_slot(p, BPF_CORE_READ(task, thread.fsbase), &failed);
	__u64 record = 0;
	__u8 raw[SMOLDER_TRACE_RECORD_READ];
	if (slot != 0 && bpf_probe_read_user(&record, sizeof(record), (const void *)slot) != 0)
		failed = 1;
	if (record != 0 && bpf_probe_read_user(raw, sizeof(raw), (const void *)record) != 0)
		failed = 1;
	if (failed) {
		count(STAT_TRACE_ERRORS);
		return 0;
	}
	if (record == 0 || raw[SMOLDER_TRACE_RECORD_VALID] != 1)
		return 0;
	__builtin_memcpy(trace_id, raw, 16);
	__builtin_memcpy(span_id, raw + 16, 8);
	return 1;
}

static __always_inline void trace_context(struct smolder_sample *s, struct task_struct *task)
{
	if (!trace_context_read(s->pid, task, s->trace_id, s->span_id))
		return;
	s->flags |= SAMPLE_TRACE_CONTEXT;
	count(STAT_TRACE_CONTEXT);
}
