/* Unwind tables for the DWARF CFI unwinder in sampler.bpf.c. User space
 * (profiler/src/unwind/) builds them from .eh_frame / .debug_frame (and from
 * the machine code of functions without CFI) and keeps the mirrors in
 * profiler/src/unwind/layout.rs; both sides assert the sizes.
 *
 * A table is two levels deep, so that a row costs 4 bytes: a module's code is
 * cut into 64 KiB pages; a page entry points at the page's rows, and a row
 * holds the low 16 bits of its pc and the index of its rule in a shared,
 * deduplicated rule array (a few thousand distinct rules on a whole host). */
#ifndef SMOLDER_UNWIND_H
#define SMOLDER_UNWIND_H

/* Executable mappings with tables per process; more are counted and unwound
 * with frame pointers. */
#define SMOLDER_UNWIND_MAX_MAPPINGS 512
/* A page covers 2^16 bytes of code. */
#define SMOLDER_UNWIND_PAGE_SHIFT 16
/* Binary search steps over one page's rows: at most 2^16 + 1 rows. */
#define SMOLDER_UNWIND_ROW_SEARCH_STEPS 17
/* Binary search steps over a process's mappings (2^10 > 512). */
#define SMOLDER_UNWIND_MAPPING_SEARCH_STEPS 10
/* Distinct rules on the host (indexes are 16-bit). */
#define SMOLDER_UNWIND_MAX_RULES 65536

/* rule.cfa_type: how to find the canonical frame address (CFA). */
enum smolder_cfa_type {
	CFA_INVALID = 0, /* no rule covers this address: fall back to frame pointers */
	CFA_RSP = 1,	 /* CFA = rsp + cfa_offset */
	CFA_RBP = 2,	 /* CFA = rbp + cfa_offset */
	CFA_PLT =
	    3, /* the .plt expression: rsp + 8, + 8 more past the 11th byte of a 16-byte slot */
	CFA_END = 4,	     /* return address undefined: the outermost frame (_start, clone3) */
	CFA_UNSUPPORTED = 5, /* a rule this unwinder does not follow (an expression) */
	CFA_DEREF_RBP = 6,   /* CFA = *(rbp + cfa_offset): GCC's stack realignment */
	CFA_GO_CGO = 7,	     /* Go's asmcgocall: from the system stack back to the goroutine's */
};

/* rule.rbp_type: where the caller's rbp is. */
enum smolder_rbp_type {
	RBP_UNCHANGED = 0, /* same value (or undefined): keep it */
	RBP_OFFSET = 1,	   /* saved at CFA + rbp_offset */
	RBP_AT_RBP = 2,	   /* saved at rbp + rbp_offset (realigned frames) */
};

/* How to find the caller's frame. The return address is always at CFA - 8
 * on x86-64. Rule 0 is the invalid rule. */
struct smolder_unwind_rule {
	__s32 cfa_offset;
	__s16 rbp_offset;
	__u8 cfa_type;
	__u8 rbp_type;
};

_Static_assert(sizeof(struct smolder_unwind_rule) == 8,
	       "struct smolder_unwind_rule layout changed: update the Rust mirror");

/* The rule from `pc` up to the next row's pc; `pc` is the offset inside the
 * row's page. Every page's rows start at pc 0. */
struct smolder_unwind_row {
	__u16 pc;
	__u16 rule;
};

_Static_assert(sizeof(struct smolder_unwind_row) == 4,
	       "struct smolder_unwind_row layout changed: update the Rust mirror");

/* The element of the rows array: array elements are 8-byte aligned, so two
 * rows share one (row i is rows[i & 1] of element i / 2). */
struct smolder_unwind_row_pair {
	struct smolder_unwind_row rows[2];
};

_Static_assert(sizeof(struct smolder_unwind_row_pair) == 8,
	       "struct smolder_unwind_row_pair layout changed: update the Rust mirror");

/* One 64 KiB page of a table: rows [first_row, first_row + row_count). */
struct smolder_unwind_page {
	__u32 first_row;
	__u32 row_count;
};

_Static_assert(sizeof(struct smolder_unwind_page) == 8,
	       "struct smolder_unwind_page layout changed: update the Rust mirror");

/* One executable mapping of a process. An address `a` in [start, end) looks
 * up `a - base` in pages [first_page, first_page + page_count). page_count 0:
 * a known mapping without a table (JIT code, a module whose table did not
 * fit): frame pointers. */
struct smolder_unwind_mapping {
	__u64 start;
	__u64 end;
	__u64 base;
	__u32 first_page;
	__u32 page_count;
};

_Static_assert(sizeof(struct smolder_unwind_mapping) == 32,
	       "struct smolder_unwind_mapping layout changed: update the Rust mirror");

/* A file whose table is loaded, for the processes user space has not read
 * yet: the walker finds an address's file through its VMA and looks it up
 * here. Key: the inode's device (kernel encoding: major << 20 | minor) and
 * number, as /proc/PID/maps shows them. */
struct smolder_unwind_file_key {
	__u64 dev;
	__u64 ino;
};

/* A VMA mapping file bytes [pgoff * 4096, ...) that fall in the executable
 * segment [seg_offset, seg_end) of the file gets
 * base = vm_start - pgoff * 4096 + delta, and the table's pages. */
struct smolder_unwind_file {
	__u64 delta;
	__u64 seg_offset;
	__u64 seg_end;
	__u32 first_page;
	__u32 page_count;
};

_Static_assert(sizeof(struct smolder_unwind_file) == 32,
	       "struct smolder_unwind_file layout changed: update the Rust mirror");

#define SMOLDER_EXEC_MAPPINGS 32

/* An executable file mapping a process made, as the kernel made it. */
struct smolder_exec_mapping {
	__u64 start;
	__u64 end;
	__u64 pgoff;
	__u64 dev;
	__u64 ino;
};

/* The executable file mappings of one process (address space mm_id), in
 * the order they were made; the first SMOLDER_EXEC_MAPPINGS are kept. The
 * walker uses them for a process user space has not read yet, and user
 * space names the frames of a process that exited before it could be read
 * from them. */
struct smolder_exec_mappings {
	__u32 count;
	__u32 reserved;
	__u64 mm_id;
	struct smolder_exec_mapping mappings[SMOLDER_EXEC_MAPPINGS];
};

_Static_assert(sizeof(struct smolder_exec_mappings) == 16 + 40 * SMOLDER_EXEC_MAPPINGS,
	       "struct smolder_exec_mappings layout changed: update the Rust mirror");

/* The mappings of one process, sorted by start, `count` valid. mm_id: the
 * address space they were read from (0: not known); after an exec the
 * entry no longer applies and the walker goes through the VMAs.
 * generation: unique to each entry user space writes (never 0), so that a
 * rule the walker cached for an address of this entry is never used for
 * another entry (another process, or this one after it remapped). */
struct smolder_unwind_process {
	__u32 count;
	__u32 generation;
	__u64 mm_id;
	struct smolder_unwind_mapping mappings[SMOLDER_UNWIND_MAX_MAPPINGS];
};

_Static_assert(sizeof(struct smolder_unwind_process) == 16 + 32 * SMOLDER_UNWIND_MAX_MAPPINGS,
	       "struct smolder_unwind_process layout changed: update the Rust mirror");

#endif
