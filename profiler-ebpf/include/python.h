/* Layouts for the CPython stack walker (profiler-ebpf/src/python_user.h).
 * Mirrored in profiler/src/python/layout.rs; both sides assert the sizes. */
#ifndef SMOLDER_PYTHON_H
#define SMOLDER_PYTHON_H

#define SMOLDER_MAX_PYTHON_FRAMES 96
#define SMOLDER_PYTHON_PROCESSES 4096
#define SMOLDER_PYTHON_THREADS 65536
/* Longest PyThreadState list searched for the sampled thread. */
#define SMOLDER_PYTHON_MAX_THREADS 256
/* A thread without a PyThreadState is searched for again after this long. */
#define SMOLDER_PYTHON_RECHECK_NS 1000000000ULL

/* How frames link, by CPython version. */
enum smolder_python_frames {
	PY_FRAMES_OBJECT = 1, /* 3.8-3.10: PyFrameObject, f_lasti an int index */
	PY_FRAMES_ENTRY = 2,  /* 3.11: _PyInterpreterFrame, is_entry marks the C entry */
	PY_FRAMES_SHIM = 3,   /* 3.12+: _PyInterpreterFrame, C entry is a shim frame */
};

/* owner of a 3.12+ shim frame (FRAME_OWNED_BY_CSTACK) */
#define PY_OWNED_BY_CSTACK 3
#define PY_NO_OFFSET 0xffffffffu

/* Value of `python_processes`, by tgid: where the interpreter is and how its
 * structures are laid out. Offsets are bytes into the named struct. */
struct smolder_python_process {
	__u64 interpreters_head; /* address of _PyRuntime.interpreters.head */
	__u32 frames;		 /* enum smolder_python_frames */
	__u32 threads_head;	 /* PyInterpreterState: first PyThreadState */
	__u32 tstate_next;
	__u32 tstate_thread_id; /* pthread_self() of the thread: its fs base */
	__u32 tstate_frame;	/* frame, cframe or current_frame */
	__u32 cframe_current;	/* _PyCFrame: current_frame, or PY_NO_OFFSET */
	__u32 frame_code;
	__u32 frame_previous;
	__u32 frame_instr;   /* f_lasti (int) or prev_instr / instr_ptr (pointer) */
	__u32 frame_entry;   /* is_entry (3.11) or owner (3.12+) */
	__u32 code_adaptive; /* co_code_adaptive (3.11+) */
	__u32 code_firstlineno;
	/* The GIL (`struct _gil_runtime_state`): a thread asleep in a futex
	 * inside [gil, gil + gil_size) waits for it. 0: not known. */
	__u64 gil;
	__u32 gil_size;
	__u32 reserved;
};

_Static_assert(sizeof(struct smolder_python_process) == 72,
	       "struct smolder_python_process layout changed: update the Rust mirror");

/* One Python frame as sampled: user space reads the code object. */
struct smolder_python_frame {
	__u64 code;	  /* PyCodeObject address */
	__u32 instr;	  /* byte offset into the bytecode; PY_FRAME_ENTRY set on entry frames */
	__s32 first_line; /* co_firstlineno: tells a reused address apart */
};

_Static_assert(sizeof(struct smolder_python_frame) == 16,
	       "struct smolder_python_frame layout changed: update the Rust mirror");

/* The outermost frame run by one C call of the eval loop. */
#define PY_FRAME_ENTRY (1u << 31)

/* sample.python_status */
enum smolder_python_status {
	PY_STATUS_NONE = 0,	 /* not a Python process (as far as smolder knows) */
	PY_STATUS_OK = 1,	 /* python_len frames, the whole chain */
	PY_STATUS_NO_THREAD = 2, /* the thread has no PyThreadState */
	PY_STATUS_ERROR = 3,	 /* a read failed: the frames are the leaf part */
	PY_STATUS_TRUNCATED = 4, /* deeper than SMOLDER_MAX_PYTHON_FRAMES */
};

/* Value of `python_threads`, by tid. */
struct smolder_python_thread {
	__u64 tstate;	  /* 0: none found */
	__u64 checked_ns; /* when the search ran */
};

#endif
