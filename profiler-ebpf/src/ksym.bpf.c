// SPDX-License-Identifier: GPL-2.0
/* Names kernel addresses with the kernel's own symbol lookup (bpf_snprintf
 * "%pS": a binary search per address). Never attached: user space fills the
 * batch map and runs the program with BPF_PROG_TEST_RUN. This spares reading
 * all of /proc/kallsyms, which costs more than a whole capture. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "ksym.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct smolder_ksym_batch);
} ksym_batch SEC(".maps");

SEC("raw_tp/smolder_ksym")
int name_kernel_addresses(void *ctx)
{
	__u32 zero = 0;
	struct smolder_ksym_batch *batch = bpf_map_lookup_elem(&ksym_batch, &zero);
	if (!batch)
		return 1;
	for (__u32 i = 0; i < SMOLDER_KSYM_BATCH; i++) {
		if (i >= batch->count)
			break;
		__u64 address = batch->addresses[i];
		bpf_snprintf(batch->names[i], SMOLDER_KSYM_NAME_LEN, "%pS", &address,
			     sizeof(address));
	}
	return 0;
}
