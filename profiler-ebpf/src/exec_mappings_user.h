/* Executable file mappings as processes make them, included by
 * sampler.bpf.c.
 *
 * A process that lives for milliseconds exits before user space reads its
 * /proc/PID/maps, so the walker has no entry for it and its frames could
 * not be named afterwards. Tracepoints record every executable file
 * mapping per process the moment it is made: the binary's text at exec
 * (tp_btf), and each mmap(2) of a library (the syscall's own tracepoints,
 * which need tracefs). fentry/fexit on do_mmap would see both at once, but
 * BPF_PROG_LOAD refuses tracing programs with EPERM on the machines this
 * was built on, and tp_btf/sys_exit would run for every system call. The
 * walker combines the record with the tables of the files (unwind_files,
 * filled by user space for every file whose table is loaded), and user
 * space names the frames from it after the process exits. */
#ifndef SMOLDER_EXEC_MAPPINGS_USER_H
#define SMOLDER_EXEC_MAPPINGS_USER_H

#include "unwind.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct smolder_unwind_file_key);
	__type(value, struct smolder_unwind_file);
} unwind_files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 2048); /* 2.6 MiB: processes user space has read need none */
	__type(key, __u32);	   /* tgid */
	__type(value, struct smolder_exec_mappings);
} exec_mappings SEC(".maps");

/* A zeroed value to insert into exec_mappings (too large for the stack);
 * never written. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct smolder_exec_mappings);
} exec_mappings_empty SEC(".maps");

/* pgoff of the record of a binary's text made at exec: its file offset is
 * the executable segment's (seg_offset of its unwind_files entry). */
#define SMOLDER_EXEC_TEXT (~0ULL)

/* Appends a mapping to the list of the current process (address space
 * mm_id), starting the list afresh for a new address space. */
static __always_inline void record_mapping(__u64 mm_id, __u64 start, __u64 end, __u64 pgoff,
					   struct file *file)
{
	__u32 tgid = (__u32)(bpf_get_current_pid_tgid() >> 32);
	struct smolder_exec_mappings *list = bpf_map_lookup_elem(&exec_mappings, &tgid);
	if (!list) {
		__u32 zero = 0;
		struct smolder_exec_mappings *empty =
		    bpf_map_lookup_elem(&exec_mappings_empty, &zero);
		if (!empty)
			return;
		bpf_map_update_elem(&exec_mappings, &tgid, empty, BPF_NOEXIST);
		list = bpf_map_lookup_elem(&exec_mappings, &tgid);
		if (!list)
			return;
	}
	if (list->mm_id != mm_id) { /* a new process, or one that exec'd */
		list->mm_id = mm_id;
		list->count = 0;
	}
	__u32 count = list->count;
	if (count >= SMOLDER_EXEC_MAPPINGS)
		return;
	struct smolder_exec_mapping *m = &list->mappings[count & (SMOLDER_EXEC_MAPPINGS - 1)];
	m->start = start;
	m->end = end;
	m->pgoff = pgoff;
	m->ino = BPF_CORE_READ(file, f_inode, i_ino);
	m->dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	list->count = count + 1;
}

/* The binary's text, mapped by the kernel at exec (ld.so, mapped there
 * too, is left to frame pointers: it runs only at start). */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(record_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	struct file *file = BPF_CORE_READ(bprm, file);
	if (!mm || !file)
		return 0;
	__u64 start = BPF_CORE_READ(mm, start_code);
	__u64 end = BPF_CORE_READ(mm, end_code);
	if (start < end)
		record_mapping((__u64)mm, start, end, SMOLDER_EXEC_TEXT, file);
	return 0;
}

#define SMOLDER_PROT_EXEC 0x4

/* mmap(2) arguments between its entry and exit, per thread; only calls
 * that map a file executable are kept. */
struct mmap_call {
	__u64 len;
	__u64 fd;
	__u64 off;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32); /* tid */
	__type(value, struct mmap_call);
} mmap_calls SEC(".maps");

/* Set by the loader: announce CUDA libraries as targets map them. */
const volatile __u8 cuda_watch = 0;

/* Pids of target processes that just mapped a library named libcuda*
 * (libcudart.so.*, libcuda.so.*): user space attaches the CUDA probes to
 * it. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} cuda_libraries SEC(".maps");

static __always_inline void announce_cuda_library(struct file *file)
{
	if (!cuda_watch)
		return;
	__u32 tgid = (__u32)(bpf_get_current_pid_tgid() >> 32);
	if (!is_target(tgid))
		return;
	char name[8] = {};
	const unsigned char *dname = BPF_CORE_READ(file, f_path.dentry, d_name.name);
	if (bpf_probe_read_kernel_str(name, sizeof(name), dname) < 0)
		return;
	if (__builtin_memcmp(name, "libcuda", 7) != 0)
		return;
	bpf_ringbuf_output(&cuda_libraries, &tgid, sizeof(tgid), 0);
}

/* Libraries: ld.so and dlopen() map them with mmap(2). The syscall's own
 * tracepoints run for mmap only, not for every system call. */
SEC("tracepoint/syscalls/sys_enter_mmap")
int record_mmap_enter(struct trace_event_raw_sys_enter *ctx)
{
	long fd = (long)ctx->args[4];
	if (!(ctx->args[2] & SMOLDER_PROT_EXEC) || fd < 0 || fd > 65535)
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct mmap_call call = {.len = ctx->args[1], .fd = (__u64)fd, .off = ctx->args[5]};
	bpf_map_update_elem(&mmap_calls, &tid, &call, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_mmap")
int record_mmap_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct mmap_call *found = bpf_map_lookup_elem(&mmap_calls, &tid);
	if (!found)
		return 0;
	struct mmap_call call = *found;
	bpf_map_delete_elem(&mmap_calls, &tid);
	long ret = ctx->ret;
	if (ret < 0 && ret > -4096)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || call.fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	if (!fds || bpf_probe_read_kernel(&file, sizeof(file), &fds[call.fd]) != 0 || !file)
		return 0;
	__u64 start = (__u64)ret;
	__u64 len = (call.len + 4095) & ~4095ULL;
	record_mapping((__u64)task->mm, start, start + len, call.off >> 12, file);
	announce_cuda_library(file);
	return 0;
}

#endif
