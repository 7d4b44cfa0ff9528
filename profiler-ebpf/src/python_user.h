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

struct python_cursor {
	struct smolder_python_process process; /* a copy: constant during the walk */
	__u64 fs_base;
	__u64 at; /* the PyThreadState or frame being looked at */
	__u32 len;
	__u32 status;
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
	struct smolder_sample *sample;
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

/* bpf_loop callback: records the frame at c->at and moves to the previous. */
static long python_frame_step(__u32 index, void *data)
{
	struct python_walk *walk = data;
	struct python_cursor *c = walk->cursor;
	struct smolder_sample *s = walk->sample;
	struct smolder_python_process *p = &c->process;
	if (c->at == 0)
		return 1;
	__u64 frame = c->at;
	__u64 code = 0;
	if (read_pointer(&code, frame + p->frame_code) != 0 ||
	    read_pointer(&c->at, frame + p->frame_previous) != 0) {
		c->status = PY_STATUS_ERROR;
		return 1;
	}
	__u32 instr = 0;
	if (p->frames == PY_FRAMES_OBJECT) {
		/* f_lasti: a byte offset in 3.8 and 3.9, a code unit index in
		 * 3.10; user space scales it. Every frame is its own C call. */
		__s32 lasti = 0;
		bpf_probe_read_user(&lasti, sizeof(lasti), (const void *)(frame + p->frame_instr));
		instr = (lasti < 0 ? 0 : (__u32)lasti) | PY_FRAME_ENTRY;
	} else {
		__u8 entry = 0;
		bpf_probe_read_user(&entry, sizeof(entry), (const void *)(frame + p->frame_entry));
		if (p->frames == PY_FRAMES_SHIM && entry == PY_OWNED_BY_CSTACK) {
			/* The shim below a C call's first frame: that frame ends
			 * the run. */
			__u32 last = c->len - 1;
			if (c->len > 0 && last < SMOLDER_MAX_PYTHON_FRAMES)
				s->python[last].instr |= PY_FRAME_ENTRY;
			return c->at == 0;
		}
		__u64 ip = 0;
		read_pointer(&ip, frame + p->frame_instr);
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
	struct smolder_python_frame *out = &s->python[n];
	out->code = code;
	out->instr = instr;
	out->first_line = 0;
	bpf_probe_read_user(&out->first_line, sizeof(out->first_line),
			    (const void *)(code + p->code_firstlineno));
	c->len = n + 1;
	return c->at == 0;
}

/* Fills s->python for a registered CPython process. */
static __always_inline void python_stack(struct smolder_sample *s, struct task_struct *task)
{
	s->python_len = 0;
	s->python_status = PY_STATUS_NONE;
	struct smolder_python_process *process = bpf_map_lookup_elem(&python_processes, &s->pid);
	__u32 zero = 0;
	struct python_cursor *c = bpf_map_lookup_elem(&python_cursors, &zero);
	if (!process || !c)
		return;
	c->process = *process;
	c->fs_base = BPF_CORE_READ(task, thread.fsbase);
	c->len = 0;
	c->status = PY_STATUS_OK;
	__u64 tstate = python_thread_state(c, s->tid);
	if (tstate == 0) {
		s->python_status = PY_STATUS_NO_THREAD;
		return;
	}
	c->at = 0;
	if (read_pointer(&c->at, tstate + process->tstate_frame) != 0) {
		s->python_status = PY_STATUS_ERROR;
		return;
	}
	if (process->cframe_current != PY_NO_OFFSET && c->at != 0 &&
	    read_pointer(&c->at, c->at + process->cframe_current) != 0) {
		s->python_status = PY_STATUS_ERROR;
		return;
	}
	/* Room for a shim frame after every recorded one. */
	struct python_walk walk = {.cursor = c, .sample = s};
	bpf_loop(2 * (SMOLDER_MAX_PYTHON_FRAMES + 1), python_frame_step, &walk, 0);
	s->python_len = c->len;
	s->python_status = c->status;
	if (c->status == PY_STATUS_OK && c->at != 0)
		s->python_status = PY_STATUS_TRUNCATED;
}

#endif
