/* DWARF CFI unwinder for user stacks, included by sampler.bpf.c.
 *
 * Starts from the user registers of the sampled thread and walks its stack
 * with the tables user space built from .eh_frame (profiler/src/unwind/):
 * per process, a sorted array of executable mappings; per module, a range of
 * 64 KiB pages in `unwind_pages`, each pointing at its sorted rows in
 * `unwind_rows`, whose rules are in `unwind_rules` (include/unwind.h). Code
 * without a row (JIT code) is stepped with frame pointers. The walk runs in bpf_loop, one
 * frame per iteration, and stops at the outermost frame (return address
 * undefined in the CFI, or zero), at SMOLDER_MAX_USER_FRAMES (flagged
 * truncated), or at an error (flagged: user space adds an `[unwind error]`
 * root frame). */
#ifndef SMOLDER_UNWIND_USER_H
#define SMOLDER_UNWIND_USER_H

#include "unwind.h"
#include "exec_mappings_user.h"

/* Whether the loader enabled table unwinding (`--unwind dwarf`). */
const volatile __u8 dwarf_unwind = 1;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);		   /* sized by the loader (`--unwind-table-mib`) */
	__uint(map_flags, BPF_F_MMAPABLE); /* user space writes rows in place */
	__type(key, __u32);
	__type(value, struct smolder_unwind_row_pair);
} unwind_rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);		   /* sized by the loader */
	__uint(map_flags, BPF_F_MMAPABLE); /* user space writes pages in place */
	__type(key, __u32);
	__type(value, struct smolder_unwind_page);
} unwind_pages SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SMOLDER_UNWIND_MAX_RULES);
	__type(key, __u32);
	__type(value, struct smolder_unwind_rule);
} unwind_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* sized by the loader */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32); /* tgid */
	__type(value, struct smolder_unwind_process);
} unwind_processes SEC(".maps");

/* The entry of a process user space has not read: no mappings (never
 * written), so that the walk always has an entry to search. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct smolder_unwind_process);
} no_mappings SEC(".maps");

/* Rules found for return addresses, per CPU, by address and process entry
 * generation. A server's stacks repeat: the same few dozen call sites are
 * in nearly every sample, and each full lookup (mapping search, page, row
 * search) is a chain of cache misses at a profiler's rate. Only rules found
 * through a process entry are kept; rules are never renumbered, and a new
 * entry has a new generation, so a hit is always the rule a search would
 * find (or, for a table since evicted, the rule it had). */
#define UNWIND_RULE_CACHE_SLOTS 1024

struct unwind_rule_cache_slot {
	__u64 addr;
	__u32 generation;
	__u32 rule;
};

struct unwind_rule_cache {
	struct unwind_rule_cache_slot slots[UNWIND_RULE_CACHE_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unwind_rule_cache);
} unwind_rule_cache SEC(".maps");

static __always_inline struct unwind_rule_cache_slot *
rule_cache_slot(struct unwind_rule_cache *cache, __u64 addr, __u32 generation)
{
	__u64 h =
	    (addr ^ (addr >> 11) ^ ((__u64)generation * 0x9e3779b1ULL)) * 0x9e3779b97f4a7c15ULL;
	return &cache->slots[(h >> 54) & (UNWIND_RULE_CACHE_SLOTS - 1)];
}

/* Where the walk is. Kept in map memory, not on the BPF stack: the verifier
 * tracks stack values exactly, and a frame count there would make it verify
 * the callback once per depth. */
struct unwind_cursor {
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__u32 len;
	__u32 flags;
	__u32 fp_frames;
	__u32 reserved;
	/* Binary search bounds, in map memory for the same reason. */
	__u32 lo;
	__u32 hi;
	/* The process mapping of the last frame, plus one (0: none). Most
	 * callers are in the same library as their callee: checking it first
	 * saves a search whose every step is a cache miss on a cold stack. */
	__u32 last_mapping;
	__u32 reserved2;
	/* The last mapping found in exec_mappings (end 0: none; page_count
	 * 0: its file has no table). */
	struct smolder_unwind_mapping found;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unwind_cursor);
} unwind_cursors SEC(".maps");

/* What the callback needs; constant during the walk. */
struct unwind_context {
	__u64 *frames; /* SMOLDER_MAX_USER_FRAMES slots in a map value */
	/* Empty (no_mappings) for a process user space has not read, or read
	 * before an exec. */
	struct smolder_unwind_process *process;
	struct unwind_cursor *cursor;
	struct unwind_rule_cache *rule_cache;
	__u32 tgid;
};

/* The two searches are global functions: the verifier checks each once, on
 * its own, instead of once per path through the walk that calls it. */

/* Index of the mapping containing `addr`, or -1. */
__noinline int find_mapping(struct smolder_unwind_process *process, __u64 addr)
{
	__u32 zero = 0;
	struct unwind_cursor *c = bpf_map_lookup_elem(&unwind_cursors, &zero);
	if (!process || !c)
		return -1;
	__u32 last = c->last_mapping - 1;
	if (c->last_mapping && last < process->count && last < SMOLDER_UNWIND_MAX_MAPPINGS) {
		struct smolder_unwind_mapping *m =
		    &process->mappings[last & (SMOLDER_UNWIND_MAX_MAPPINGS - 1)];
		if (m->start <= addr && addr < m->end)
			return (int)last;
	}
	c->lo = 0;
	c->hi = process->count;
	/* lo ends at the first mapping that starts above addr. */
	for (int step = 0; step < SMOLDER_UNWIND_MAPPING_SEARCH_STEPS; step++) {
		__u32 lo = c->lo;
		__u32 hi = c->hi;
		if (lo >= hi)
			break;
		__u32 mid = lo + (hi - lo) / 2;
		if (mid >= SMOLDER_UNWIND_MAX_MAPPINGS)
			return -1;
		if (process->mappings[mid & (SMOLDER_UNWIND_MAX_MAPPINGS - 1)].start <= addr)
			c->lo = mid + 1;
		else
			c->hi = mid;
	}
	__u32 lo = c->lo;
	if (lo != c->hi || lo == 0 || lo > SMOLDER_UNWIND_MAX_MAPPINGS)
		return -1;
	/* The mask bounds the index for the verifier (512 is a power of two). */
	__u32 index = (lo - 1) & (SMOLDER_UNWIND_MAX_MAPPINGS - 1);
	if (addr >= process->mappings[index].end)
		return -1;
	c->last_mapping = index + 1;
	return (int)index;
}

/* Row `index` of the rows array, or NULL. */
static __always_inline struct smolder_unwind_row *row_at(__u32 index)
{
	__u32 pair_index = index / 2;
	struct smolder_unwind_row_pair *pair = bpf_map_lookup_elem(&unwind_rows, &pair_index);
	if (!pair)
		return NULL;
	return &pair->rows[index & 1];
}

/* The rule of the last row in [first, first + count) whose pc is <= key, or
 * -1. Every page starts with a row at pc 0, so a non-empty page always has one. */
__noinline long find_rule(__u32 first, __u32 count, __u32 key)
{
	__u32 lo = first;
	__u32 hi = first + count;
	if (hi < lo)
		return -1; /* user space never writes this: overflow */
	for (int step = 0; step < SMOLDER_UNWIND_ROW_SEARCH_STEPS; step++) {
		if (lo >= hi)
			break;
		__u32 mid = lo + (hi - lo) / 2;
		struct smolder_unwind_row *row = row_at(mid);
		if (!row)
			return -1;
		if (row->pc <= key)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo != hi || lo == first)
		return -1;
	struct smolder_unwind_row *row = row_at(lo - 1);
	if (!row)
		return -1;
	return (long)row->rule;
}

/* The index of the rule for `offset` (an address minus its mapping's base)
 * in the table of `mapping`, or -1: no page there (outside the table), or an
 * empty page. */
static __always_inline long find_rule_for(struct smolder_unwind_mapping *mapping, __u64 offset)
{
	if (offset > 0xffffffffULL)
		return -1;
	__u32 page = (__u32)(offset >> SMOLDER_UNWIND_PAGE_SHIFT);
	if (page >= mapping->page_count)
		return -1;
	__u32 page_index = mapping->first_page + page;
	struct smolder_unwind_page *entry = bpf_map_lookup_elem(&unwind_pages, &page_index);
	if (!entry || entry->row_count == 0)
		return -1;
	return find_rule(entry->first_row, entry->row_count, (__u32)(offset & 0xffff));
}

enum step_result {
	STEP_NEXT = 0,
	STEP_DONE = 1,
	STEP_ERROR = 2,
};

/* One frame with frame pointers: the caller's rbp at [rbp], its return
 * address at [rbp + 8]. rbp 0 is the outermost frame by convention. */
static __always_inline int step_frame_pointer(struct unwind_cursor *c)
{
	c->fp_frames++;
	if (c->bp == 0)
		return STEP_DONE;
	if (c->bp < c->sp)
		return STEP_ERROR; /* frames grow down: a caller's frame is above */
	__u64 saved[2];
	if (bpf_probe_read_user(saved, sizeof(saved), (void *)c->bp) != 0)
		return STEP_ERROR;
	c->sp = c->bp + 16;
	c->bp = saved[0];
	c->ip = saved[1];
	return STEP_NEXT;
}

/* Go's runtime.asmcgocall up to Go 1.20, after it switched to the system
 * stack to call C (runtime/asm_amd64.s). It saved there, at rsp +
 * cfa_offset, how deep the goroutine's stack was (stack.hi - its entry
 * sp), and just above that the goroutine (its g, whose first words are
 * stack.lo and stack.hi); or the entry sp itself and 0 when it was already
 * on a system stack. */
static __always_inline int go_cgo_cfa(struct unwind_cursor *c, struct smolder_unwind_rule *rule,
				      __u64 *cfa)
{
	__u64 saved[2];
	if (bpf_probe_read_user(saved, sizeof(saved), (void *)(c->sp + (__s64)rule->cfa_offset)) !=
	    0)
		return STEP_ERROR;
	__u64 entry_sp = saved[0];
	if (saved[1] != 0) {
		__u64 hi;
		if (bpf_probe_read_user(&hi, sizeof(hi), (void *)(saved[1] + 8)) != 0 ||
		    saved[0] > hi)
			return STEP_ERROR;
		entry_sp = hi - saved[0];
	}
	if (entry_sp == 0)
		return STEP_ERROR;
	*cfa = entry_sp + 8;
	return STEP_NEXT;
}

/* One frame with a table rule. */
static __always_inline int step_rule(struct unwind_cursor *c, struct smolder_unwind_rule *rule)
{
	__u64 cfa;
	switch (rule->cfa_type) {
	case CFA_RSP:
		cfa = c->sp + (__s64)rule->cfa_offset;
		break;
	case CFA_RBP:
		if (c->bp == 0)
			return STEP_ERROR;
		cfa = c->bp + (__s64)rule->cfa_offset;
		break;
	case CFA_PLT:
		cfa = c->sp + 8 + ((c->ip & 15) >= 11 ? 8 : 0);
		break;
	case CFA_DEREF_RBP:
		if (c->bp == 0 ||
		    bpf_probe_read_user(&cfa, sizeof(cfa),
					(void *)(c->bp + (__s64)rule->cfa_offset)) != 0)
			return STEP_ERROR;
		break;
	case CFA_END:
		return STEP_DONE;
	case CFA_INVALID:
		return step_frame_pointer(c);
	case CFA_GO_CGO:
		/* Go 1.22+ keeps the entry frame in rbp across the switch: CFA =
		 * rbp + cfa_offset, rbp saved below the return address. */
		if (rule->rbp_type == RBP_OFFSET) {
			if (c->bp == 0)
				return STEP_ERROR;
			cfa = c->bp + (__s64)rule->cfa_offset;
		} else if (go_cgo_cfa(c, rule, &cfa) != STEP_NEXT) {
			return STEP_ERROR;
		}
		break;
	default:
		return STEP_ERROR;
	}
	/* No progress is a corrupt stack or table, except where Go's cgo call
	 * leads back to the goroutine's stack, which lies anywhere. */
	if (cfa <= c->sp && rule->cfa_type != CFA_GO_CGO)
		return STEP_ERROR;
	__u64 ra;
	if (bpf_probe_read_user(&ra, sizeof(ra), (void *)(cfa - 8)) != 0)
		return STEP_ERROR;
	if (rule->rbp_type == RBP_OFFSET || rule->rbp_type == RBP_AT_RBP) {
		__u64 at = rule->rbp_type == RBP_OFFSET ? cfa : c->bp;
		__u64 bp;
		if (bpf_probe_read_user(&bp, sizeof(bp), (void *)(at + (__s64)rule->rbp_offset)) !=
		    0)
			return STEP_ERROR;
		c->bp = bp;
	}
	c->sp = cfa;
	c->ip = ra;
	return STEP_NEXT;
}

/* Finding the recorded mapping that holds an address, newest first, one
 * bpf_loop step per mapping (a plain loop made the verifier walk all 32
 * iterations on every path: a quarter of a second of start-up). */
struct recorded_scan {
	struct smolder_exec_mappings *list;
	__u64 addr;
	__s32 found;
};

static long scan_recorded(__u32 index, void *data)
{
	struct recorded_scan *scan = data;
	__u32 i = SMOLDER_EXEC_MAPPINGS - 1 - index;
	if (i >= scan->list->count)
		return 0;
	/* The mask bounds the index for the verifier (32 is a power of two). */
	struct smolder_exec_mapping *m = &scan->list->mappings[i & (SMOLDER_EXEC_MAPPINGS - 1)];
	if (scan->addr >= m->start && scan->addr < m->end) {
		scan->found = (__s32)i;
		return 1;
	}
	return 0;
}

/* Fills the per-CPU cursor's `found` with the mapping of `addr` from the
 * mappings recorded for the process (exec_mappings) and the table of its
 * file; returns 1 when there is one with a table, else 0. Newest first: a
 * later mapping at the same place replaced an earlier one. A global
 * function, so that the verifier checks its loop once, not once per path
 * through the walk. */
__noinline int recorded_mapping(__u32 tgid, __u64 addr)
{
	__u32 zero = 0;
	struct unwind_cursor *c = bpf_map_lookup_elem(&unwind_cursors, &zero);
	if (!c)
		return 0;
	if (c->found.start <= addr && addr < c->found.end)
		return c->found.page_count ? 1 : 0;
	struct smolder_exec_mappings *list = bpf_map_lookup_elem(&exec_mappings, &tgid);
	if (!list)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	if (list->mm_id != (__u64)task->mm)
		return 0;
	struct recorded_scan scan = {.list = list, .addr = addr, .found = -1};
	bpf_loop(SMOLDER_EXEC_MAPPINGS, scan_recorded, &scan, 0);
	if (scan.found < 0)
		return 0;
	struct smolder_exec_mapping *m =
	    &list->mappings[(__u32)scan.found & (SMOLDER_EXEC_MAPPINGS - 1)];
	c->found.start = m->start;
	c->found.end = m->end;
	c->found.page_count = 0;
	struct smolder_unwind_file_key key = {.dev = m->dev, .ino = m->ino};
	struct smolder_unwind_file *file = bpf_map_lookup_elem(&unwind_files, &key);
	if (!file)
		return 0;
	__u64 offset = file->seg_offset;
	if (m->pgoff != SMOLDER_EXEC_TEXT) {
		offset = m->pgoff << 12;
		if (offset < (file->seg_offset & ~4095ULL) || offset >= file->seg_end)
			return 0;
	}
	c->found.base = m->start - offset + file->delta;
	c->found.first_page = file->first_page;
	c->found.page_count = file->page_count;
	return c->found.page_count ? 1 : 0;
}

/* What unwind_step returns (1: stop) after a step with `result`. */
static __always_inline long step_end(struct unwind_cursor *c, int result)
{
	if (result == STEP_ERROR) {
		c->flags |= SAMPLE_USER_UNWIND_ERROR;
		return 1;
	}
	if (result == STEP_DONE || c->ip == 0)
		return 1;
	return 0;
}

/* bpf_loop callback: records the current frame and steps to its caller. */
static long unwind_step(__u32 index, void *data)
{
	struct unwind_context *ctx = data;
	struct unwind_cursor *c = ctx->cursor;
	__u32 n = c->len;
	if (n >= SMOLDER_MAX_USER_FRAMES) {
		c->flags |= SAMPLE_USER_TRUNCATED;
		return 1;
	}
	ctx->frames[n] = c->ip;
	c->len = n + 1;

	/* A return address points after its call: look up the call itself. */
	__u64 lookup = n == 0 ? c->ip : c->ip - 1;
	int result;
	__u32 generation = ctx->process->generation;
	struct unwind_rule_cache_slot *slot = NULL;
	if (generation && ctx->rule_cache) {
		slot = rule_cache_slot(ctx->rule_cache, lookup, generation);
		if (slot->addr == lookup && slot->generation == generation) {
			__u32 rule_index = slot->rule;
			struct smolder_unwind_rule *rule =
			    bpf_map_lookup_elem(&unwind_rules, &rule_index);
			result = rule ? step_rule(c, rule) : step_frame_pointer(c);
			return step_end(c, result);
		}
	}
	struct smolder_unwind_mapping *mapping = NULL;
	int found = find_mapping(ctx->process, lookup);
	if (found >= 0)
		mapping = &ctx->process->mappings[(__u32)found & (SMOLDER_UNWIND_MAX_MAPPINGS - 1)];
	if (!mapping) {
		/* Not read yet, or read before it mapped this library (at exec,
		 * say): user space refreshes the entry; the kernel's record of
		 * the process's mappings serves meanwhile. */
		if (ctx->process->count)
			c->flags |= SAMPLE_USER_UNMAPPED;
		if (recorded_mapping(ctx->tgid, lookup) > 0)
			mapping = &c->found;
	}
	if (!mapping || mapping->page_count == 0) {
		result = step_frame_pointer(c);
	} else {
		long rule_index = find_rule_for(mapping, lookup - mapping->base);
		__u32 index = (__u32)rule_index;
		struct smolder_unwind_rule *rule =
		    rule_index < 0 ? NULL : bpf_map_lookup_elem(&unwind_rules, &index);
		if (rule && slot && found >= 0) {
			slot->addr = lookup;
			slot->generation = generation;
			slot->rule = index;
		}
		result = rule ? step_rule(c, rule) : step_frame_pointer(c);
	}
	return step_end(c, result);
}

/* The per-CPU cursor, reset. */
static __always_inline struct unwind_cursor *fresh_cursor(void)
{
	__u32 zero = 0;
	struct unwind_cursor *c = bpf_map_lookup_elem(&unwind_cursors, &zero);
	if (c) {
		c->len = 0;
		c->flags = 0;
		c->fp_frames = 0;
		c->found.start = 0;
		c->found.end = 0;
		c->last_mapping = 0;
	}
	return c;
}

/* The user registers the current task saved when it entered the kernel. */
static __always_inline int saved_user_registers(struct unwind_cursor *c)
{
	/* bpf_task_pt_regs wants a trusted task pointer. */
	struct pt_regs *user = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (!user)
		return -1;
	c->ip = BPF_CORE_READ(user, ip);
	c->sp = BPF_CORE_READ(user, sp);
	c->bp = BPF_CORE_READ(user, bp);
	return 0;
}

/* The user registers of the sampled thread: the interrupted ones when the
 * sample hit user mode, else those saved when it entered the kernel. */
static __always_inline int user_registers(struct bpf_perf_event_data *ctx, struct unwind_cursor *c)
{
	struct pt_regs *regs = (struct pt_regs *)&ctx->regs;
	/* Context reads must be 8 bytes wide: csx holds cs in its low bits. */
	if ((regs->csx & 3) == 3) {
		c->ip = regs->ip;
		c->sp = regs->sp;
		c->bp = regs->bp;
		return 0;
	}
	return saved_user_registers(c);
}

/* Walks the current task's user stack from the registers in `c` into
 * `frames` (SMOLDER_MAX_USER_FRAMES slots); c->len and c->flags say how it
 * went. Returns the frames stepped with frame pointers, or -1 when the
 * process has no tables (the caller then uses the kernel's walk). */
static __always_inline int walk_user_stack(__u32 tgid, struct unwind_cursor *c, __u64 *frames)
{
	if (c->ip == 0)
		return -1;
	__u32 zero = 0;
	struct smolder_unwind_process *process = bpf_map_lookup_elem(&unwind_processes, &tgid);
	if (process && process->mm_id) {
		struct task_struct *task = bpf_get_current_task_btf();
		if (process->mm_id != (__u64)task->mm)
			process = NULL; /* read before an exec */
	}
	if (!process) {
		if (recorded_mapping(tgid, c->ip) <= 0)
			return -1;
		count(STAT_UNWIND_RECORDED);
		/* An entry without mappings: every lookup goes to the record. */
		process = bpf_map_lookup_elem(&no_mappings, &zero);
		if (!process)
			return -1;
	}
	struct unwind_context walk = {
	    .frames = frames,
	    .process = process,
	    .cursor = c,
	    .rule_cache = bpf_map_lookup_elem(&unwind_rule_cache, &zero),
	    .tgid = tgid,
	};
	bpf_loop(SMOLDER_MAX_USER_FRAMES + 1, unwind_step, &walk, 0);
	return (int)c->fp_frames;
}

/* Fills s->user_stack with the tables of the sampled process. Returns the
 * frames stepped with frame pointers, or -1 (no tables: use the kernel's
 * frame-pointer walk). */
static __always_inline int unwind_user_stack(struct bpf_perf_event_data *ctx,
					     struct smolder_sample *s)
{
	if (!dwarf_unwind)
		return -1;
	struct unwind_cursor *c = fresh_cursor();
	if (!c || user_registers(ctx, c) != 0)
		return -1;
	int fp_frames = walk_user_stack(s->pid, c, s->user_stack);
	if (fp_frames < 0)
		return -1;
	s->user_len = (__s32)c->len;
	s->flags |= c->flags;
	return fp_frames;
}

#endif
