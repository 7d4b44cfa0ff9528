/* Unwind tables for the DWARF CFI unwinder in sampler.bpf.c. User space
 * (profiler/src/unwind/) builds them from .eh_frame / .debug_frame and keeps
 * the mirrors in profiler/src/unwind/layout.rs; both sides assert the sizes. */
#ifndef SMOLDER_UNWIND_H
#define SMOLDER_UNWIND_H

/* Executable mappings with tables per process; more are counted and unwound
 * with frame pointers. */
#define SMOLDER_UNWIND_MAX_MAPPINGS 512
/* Binary search steps over the rows array: 2^24 rows at most. */
#define SMOLDER_UNWIND_ROW_SEARCH_STEPS 24
/* Binary search steps over a process's mappings (2^10 > 512). */
#define SMOLDER_UNWIND_MAPPING_SEARCH_STEPS 10

/* row.cfa_type: how to find the canonical frame address (CFA). */
enum smolder_cfa_type {
	CFA_INVALID = 0, /* no FDE covers this address: fall back to frame pointers */
	CFA_RSP = 1,	 /* CFA = rsp + cfa_offset */
	CFA_RBP = 2,	 /* CFA = rbp + cfa_offset */
	CFA_PLT =
	    3, /* the .plt expression: rsp + 8, + 8 more past the 11th byte of a 16-byte slot */
	CFA_END = 4,	     /* return address undefined: the outermost frame (_start, clone3) */
	CFA_UNSUPPORTED = 5, /* a rule this unwinder does not follow (an expression) */
};

/* row.rbp_type: where the caller's rbp is. */
enum smolder_rbp_type {
	RBP_UNCHANGED = 0, /* same value (or undefined): keep it */
	RBP_OFFSET = 1,	   /* saved at CFA + rbp_offset */
};

/* The rule from `pc` up to the next row's pc. `pc` is relative to the base of
 * its mapping entry. The return address is always at CFA - 8 on x86-64. */
struct smolder_unwind_row {
	__u32 pc;
	__s32 cfa_offset;
	__s16 rbp_offset;
	__u8 cfa_type;
	__u8 rbp_type;
	__u32 reserved; /* array elements are 8-byte aligned: 16 bytes either way */
};

_Static_assert(sizeof(struct smolder_unwind_row) == 16,
	       "struct smolder_unwind_row layout changed: update the Rust mirror");

/* One executable mapping of a process. An address `a` in [start, end) looks
 * up `a - base` in rows [first_row, first_row + row_count). row_count 0: a
 * known mapping without a table (JIT code, a module whose table did not fit):
 * frame pointers. */
struct smolder_unwind_mapping {
	__u64 start;
	__u64 end;
	__u64 base;
	__u32 first_row;
	__u32 row_count;
};

_Static_assert(sizeof(struct smolder_unwind_mapping) == 32,
	       "struct smolder_unwind_mapping layout changed: update the Rust mirror");

/* The mappings of one process, sorted by start, `count` valid. */
struct smolder_unwind_process {
	__u32 count;
	__u32 reserved;
	struct smolder_unwind_mapping mappings[SMOLDER_UNWIND_MAX_MAPPINGS];
};

_Static_assert(sizeof(struct smolder_unwind_process) == 8 + 32 * SMOLDER_UNWIND_MAX_MAPPINGS,
	       "struct smolder_unwind_process layout changed: update the Rust mirror");

#endif
