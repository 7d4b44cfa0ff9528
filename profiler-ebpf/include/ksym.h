/* Kernel address -> name, asked of the kernel itself. Mirrored in
 * profiler/src/collect/ksym.rs; both sides assert the sizes. */
#ifndef SMOLDER_KSYM_H
#define SMOLDER_KSYM_H

#define SMOLDER_KSYM_BATCH 64
#define SMOLDER_KSYM_NAME_LEN 128

struct smolder_ksym_batch {
	__u64 addresses[SMOLDER_KSYM_BATCH];
	__u32 count;
	__u32 pad;
	/* "%pS": "vfs_read+0x12/0x1a0", "ext4_read+0x4/0x80 [ext4]", or the
	 * address in hex when the kernel has no symbol for it. */
	char names[SMOLDER_KSYM_BATCH][SMOLDER_KSYM_NAME_LEN];
};

_Static_assert(sizeof(struct smolder_ksym_batch) ==
		   8 * SMOLDER_KSYM_BATCH + 8 + SMOLDER_KSYM_BATCH * SMOLDER_KSYM_NAME_LEN,
	       "struct smolder_ksym_batch layout changed: update the Rust mirror");

#endif
