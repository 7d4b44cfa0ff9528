/* CPython stack walker, included by sampler.bpf.c.
 *
 * For a process user space registered in `python_processes`, finds the
 * PyThreadState of the sampled thread (its thread_id is the thread's
 * pthread_self(), which is its fs base) and walks its frame chain, newest
 * first, recording each frame's code object and instruction offset. User
 * space names them (symbolizer/src/python/) and puts each run of frames in
 * place of the _PyEval_EvalFrameDefault call that ran it; PY_FRAME_ENTRY marks
 * where one such call's frames end.
 *
 * Every read is bpf_probe_read_user of memory the process may be changing:
 * a failed read ends the walk (PY_STATUS_ERROR), and nothing read is trusted
 * beyond its use as the next address to read. Both loops run in bpf_loop with
 * their state in map memory (see unwind_user.h for why). */
#ifndef SMOLDER_PYTHON_USER_H
#define SMOLDER_PYTHON_USER_H

#include "python.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct smolder_sample);
} sample_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SMOLDER_PYTHON_PROCESSES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32); /* tgid */
	__type(value, struct smolder_python_process);
} python_processes SEC(".maps");

/* The PyThreadState of each thread, once found. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SMOLDER_PYTHON_THREADS);
	__type(key, __u32); /* tid */
	__type(value, struct smolder_python_thread);
} python_threads SEC(".maps");

/* The bytes of a frame read at once: every field the walk reads is in the
 * first PY_FRAME_READ bytes of a frame on the versions smolder knows. */
#define PY_FRAME_READ 128

struct python_cursor {
	struct smolder_python_process process; /* a copy: constant during the walk */
	__u64 fs_base;
	__u64 at; /* the PyThreadState or frame being looked at */
	__u32 len;
	__u32 status;
	/* How many bytes of each frame to read (its last field's end), or 0
	 * when a field lies past PY_FRAME_READ (the walk then fails). */
	__u32 frame_span;
	__u32 reserved;
	__u8 frame[PY_FRAME_READ];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct python_cursor);
} python_cursors SEC(".maps");

/* What a bpf_loop callback gets (bpf_loop wants a pointer to the stack). */
struct python_walk {
	struct python_cursor *cursor;
	struct smolder_python_frame *frames; /* SMOLDER_MAX_PYTHON_FRAMES slots */
};

static __always_inline int read_pointer(__u64 *out, __u64 addr)
{
	return bpf_probe_read_user(out, sizeof(*out), (const void *)addr);
}

/* bpf_loop callback: is c->at the sampled thread's PyThreadState? */
static long python_thread_step(__u32 index, void *data)
{
	struct python_cursor *c = ((struct python_walk *)data)->cursor;
	__u64 thread_id = 0;
	if (c->at == 0)
		return 1;
	if (read_pointer(&thread_id, c->at + c->process.tstate_thread_id) != 0) {
		c->at = 0;
		return 1;
	}
	if (thread_id == c->fs_base)
		return 1;
	if (read_pointer(&c->at, c->at + c->process.tstate_next) != 0)
		c->at = 0;
	return 0;
}

/* The sampled thread's PyThreadState, or 0. Remembered per thread; a thread
 * without one (a native thread) is searched again after a while. */
static __always_inline __u64 python_thread_state(struct python_cursor *c, __u32 tid)
{
	__u64 now = bpf_ktime_get_ns();
	struct smolder_python_thread *known = bpf_map_lookup_elem(&python_threads, &tid);
	if (known) {
		if (known->tstate == 0) {
			if (now - known->checked_ns < SMOLDER_PYTHON_RECHECK_NS)
				return 0;
		} else {
			__u64 thread_id = 0;
			if (read_pointer(&thread_id, known->tstate + c->process.tstate_thread_id) ==
				0 &&
			    thread_id == c->fs_base)
				return known->tstate;
		}
	}
	__u64 interp = 0;
	c->at = 0;
	struct python_walk walk = {.cursor = c};
	if (read_pointer(&interp, c->process.interpreters_head) == 0 && interp != 0 &&
	    read_pointer(&c->at, interp + c->process.threads_head) == 0)
		bpf_loop(SMOLDER_PYTHON_MAX_THREADS, python_thread_step, &walk, 0);
	struct smolder_python_thread found = {.tstate = c->at, .checked_ns = now};
	bpf_map_update_elem(&python_threads, &tid, &found, BPF_ANY);
	return found.tstate;
}

/* Copies `size` (1, 4 or 8) bytes at `offset` of the frame read into
 * c->frame; -1 when they are outside what was read. */
static __always_inline int frame_field(struct python_cursor *c, __u32 offset, void *out, __u32 size)
{
	if (offset > PY_FRAME_READ - 8 || offset + size > c->frame_span)
		return -1;
	__u8 *at = &c->frame[offset & (PY_FRAME_READ - 1)];
	if (size == 8)
		__builtin_memcpy(out, at, 8);
	else if (size == 4)
		__builtin_memcpy(out, at, 4);
	else
		*(__u8 *)out = *at;
	return 0;
}

/* Bytes of a frame that hold every field the walk reads, or 0 when one is
 * past PY_FRAME_READ. */
static __always_inline __u32 frame_span(const struct smolder_python_process *p)
{
	__u32 end = p->frame_code + 8;
	if (p->frame_previous + 8 > end)
		end = p->frame_previous + 8;
	if (p->frame_instr + 8 > end)
		end = p->frame_instr + 8;
	if (p->frames != PY_FRAMES_OBJECT && p->frame_entry + 1 > end)
		end = p->frame_entry + 1;
	return end <= PY_FRAME_READ ? end : 0;
}

/* bpf_loop callback: records the frame at c->at and moves to the previous. */
static long python_frame_step(__u32 index, void *data)
{
	struct python_walk *walk = data;
	struct python_cursor *c = walk->cursor;
	struct smolder_python_frame *frames = walk->frames;
	struct smolder_python_process *p = &c->process;
	if (c->at == 0)
		return 1;
	__u64 frame = c->at;
	__u64 code = 0;
	/* One read for the whole frame (each read of a cold frame is a cache
	 * miss); the fields are then taken from the copy. */
	__u32 span = c->frame_span;
	if (span == 0 || span > PY_FRAME_READ ||
	    bpf_probe_read_user(c->frame, span, (const void *)frame) != 0) {
		c->status = PY_STATUS_ERROR;
		return 1;
	}
	if (frame_field(c, p->frame_code, &code, 8) != 0 ||
	    frame_field(c, p->frame_previous, &c->at, 8) != 0) {
		c->status = PY_STATUS_ERROR;
		return 1;
	}
	__u32 instr = 0;
	if (p->frames == PY_FRAMES_OBJECT) {
		/* f_lasti: a byte offset in 3.8 and 3.9, a code unit index in
		 * 3.10; user space scales it. Every frame is its own C call. */
		__s32 lasti = 0;
		frame_field(c, p->frame_instr, &lasti, sizeof(lasti));
		instr = (lasti < 0 ? 0 : (__u32)lasti) | PY_FRAME_ENTRY;
	} else {
		__u8 entry = 0;
		frame_field(c, p->frame_entry, &entry, sizeof(entry));
		if (p->frames == PY_FRAMES_SHIM && entry == PY_OWNED_BY_CSTACK) {
			/* The shim below a C call's first frame: that frame ends
			 * the run. */
			__u32 last = c->len - 1;
			if (c->len > 0 && last < SMOLDER_MAX_PYTHON_FRAMES)
				frames[last].instr |= PY_FRAME_ENTRY;
			return c->at == 0;
		}
		__u64 ip = 0;
		frame_field(c, p->frame_instr, &ip, sizeof(ip));
		/* 3.14 tags the low bits of f_executable. */
		code &= ~3ULL;
		__u64 start = code + p->code_adaptive;
		instr = ip > start && ip - start < PY_FRAME_ENTRY ? (__u32)(ip - start) : 0;
		if (p->frames == PY_FRAMES_ENTRY && entry)
			instr |= PY_FRAME_ENTRY;
	}
	__u32 n = c->len;
	if (n >= SMOLDER_MAX_PYTHON_FRAMES) {
		c->status = PY_STATUS_TRUNCATED;
		return 1;
	}
	struct smolder_python_frame *out = &frames[n];
	out->code = code;
	out->instr = instr;
	out->first_line = 0;
	bpf_probe_read_user(&out->first_line, sizeof(out->first_line),
			    (const void *)(code + p->code_firstlineno));
	c->len = n + 1;
	return c->at == 0;
}

/* Walks the Python frames of thread `tid` of process `pid` (the current
 * task) into `frames` (SMOLDER_MAX_PYTHON_FRAMES slots). Returns an enum
 * smolder_python_status and sets *len.
 */
static __always_inline __u32 python_frames(__u32 pid, __u32 tid, struct task_struct *task,
					   struct smolder_python_frame *frames, __u32 *len)
{
	*len = 0;
	struct smolder_python_process *process = bpf_map_lookup_elem(&python_processes, &pid);
	__u32 zero = 0;
	struct python_cursor *c = bpf_map_lookup_elem(&python_cursors, &zero);
	if (!process || !c)
		return PY_STATUS_NONE;
	c->process = *process;
	c->fs_base = BPF_CORE_READ(task, thread.fsbase);
	c->len = 0;
	c->status = PY_STATUS_OK;
	c->frame_span = frame_span(process);
	__u64 tstate = python_thread_state(c, tid);
	if (tstate == 0)
		return PY_STATUS_NO_THREAD;
	c->at = 0;
	if (read_pointer(&c->at, tstate + process->tstate_frame) != 0)
		return PY_STATUS_ERROR;
	if (process->cframe_current != PY_NO_OFFSET && c->at != 0 &&
	    read_pointer(&c->at, c->at + process->cframe_current) != 0)
		return PY_STATUS_ERROR;
	/* Room for a shim frame after every recorded one. */
	struct python_walk walk = {.cursor = c, .frames = frames};
	bpf_loop(2 * (SMOLDER_MAX_PYTHON_FRAMES + 1), python_frame_step, &walk, 0);
	*len = c->len;
	if (c->status == PY_STATUS_OK && c->at != 0)
		return PY_STATUS_TRUNCATED;
	return c->status;
}

/* Fills s->python for a registered CPython process. */
static __always_inline void python_stack(struct smolder_sample *s, struct task_struct *task)
{
	__u32 len = 0;
	s->python_status = python_frames(s->pid, s->tid, task, s->python, &len);
	s->python_len = len;
}

#endif
