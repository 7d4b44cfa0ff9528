/* Reads which pprof label set the sampled thread's goroutine carries: four
 * user-memory reads, no loop; the set itself is read by user space (label
 * sets are immutable once made). Included by sampler.bpf.c. */
#include "go_labels.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SMOLDER_GO_PROCESSES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32); /* tgid */
	__type(value, struct smolder_go_process);
} go_processes SEC(".maps");

static __always_inline void go_labels(struct smolder_sample *s, struct task_struct *task)
{
	const struct smolder_go_process *p = bpf_map_lookup_elem(&go_processes, &s->pid);
	if (!p)
		return;
	__u64 fs_base = BPF_CORE_READ(task, thread.fsbase);
	__u64 g = 0, m = 0, curg = 0, labels = 0;
	/* No g (a thread Go does not run) or no user goroutine (runtime work)
	 * is no label set, not an error. */
	if (bpf_probe_read_user(&g, sizeof(g), (const void *)(fs_base + p->g_tls_offset)) != 0 ||
	    g == 0)
		return;
	if (bpf_probe_read_user(&m, sizeof(m), (const void *)(g + p->m_offset)) != 0 || m == 0 ||
	    bpf_probe_read_user(&curg, sizeof(curg), (const void *)(m + p->curg_offset)) != 0 ||
	    curg == 0)
		return;
	if (bpf_probe_read_user(&labels, sizeof(labels), (const void *)(curg + p->labels_offset)) !=
	    0) {
		count(STAT_GO_LABEL_ERRORS);
		return;
	}
	s->go_labels = labels;
	if (labels != 0)
		count(STAT_GO_LABELS);
}
