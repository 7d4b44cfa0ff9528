/* Launches through the CUDA runtime (libcudart, from PyPI) with known host
 * functions, a known number of times, from known call chains, and waits in
 * known sync calls: the ground truth of the CUDA probes. Without a GPU every
 * call fails at once (35, insufficient driver), which is fine: the probes
 * fire at entry and return all the same.
 *
 * Usage: cuda_launches LIBCUDART ALPHA BETA SYNCS
 * dlopen()s LIBCUDART, prints "ready", waits for a line on stdin, then
 * launches kernel_alpha ALPHA times (main -> decode_step -> launch_alpha)
 * and kernel_beta BETA times (main -> decode_step -> launch_beta), paced
 * over about two seconds, and calls cudaStreamSynchronize SYNCS times and
 * cudaMemcpy device-to-host SYNCS times (wait_for_gpu, copy_back); a
 * host-to-device cudaMemcpy, which is not a wait, SYNCS times too. Prints
 * "done" and exits. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
	unsigned x, y, z;
} dim3;

typedef int (*launch_fn)(const void *, dim3, dim3, void **, size_t, void *);
typedef int (*sync_fn)(void *);
typedef int (*memcpy_fn)(void *, const void *, size_t, int);

static launch_fn launch;
static sync_fn stream_sync;
static memcpy_fn copy;
static volatile float device_memory[16];
static volatile int errors; /* keeps the calls from being tail calls */
static float host_memory[16];

/* The host stubs: what PyTorch's launches pass as `func`. */
__attribute__((noinline, noclone)) void kernel_alpha(float *x)
{
	x[0] += 1.0f;
}

__attribute__((noinline, noclone)) void kernel_beta(float *x)
{
	x[1] += 2.0f;
}

__attribute__((noinline, noclone)) void launch_alpha(void)
{
	dim3 grid = {1, 1, 1}, block = {32, 1, 1};
	void *args[1] = {(void *)device_memory};
	errors += launch((const void *)kernel_alpha, grid, block, args, 0, NULL);
}

__attribute__((noinline, noclone)) void launch_beta(void)
{
	dim3 grid = {2, 1, 1}, block = {64, 1, 1};
	void *args[1] = {(void *)device_memory};
	errors += launch((const void *)kernel_beta, grid, block, args, 0, NULL);
}

__attribute__((noinline, noclone)) void wait_for_gpu(void)
{
	errors += stream_sync(NULL);
}

__attribute__((noinline, noclone)) void copy_back(void)
{
	errors += copy(host_memory, (const void *)device_memory, sizeof(host_memory), 2);
}

__attribute__((noinline, noclone)) void copy_up(void)
{
	errors += copy((void *)device_memory, host_memory, sizeof(host_memory), 1);
}

/* One step: the launches of step `i` of `steps`. */
__attribute__((noinline, noclone)) void decode_step(long i, long steps, long alpha, long beta,
						    long syncs)
{
	for (long n = alpha * i / steps; n < alpha * (i + 1) / steps; n++)
		launch_alpha();
	for (long n = beta * i / steps; n < beta * (i + 1) / steps; n++)
		launch_beta();
	for (long n = syncs * i / steps; n < syncs * (i + 1) / steps; n++) {
		copy_up();
		wait_for_gpu();
		copy_back();
	}
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: cuda_launches LIBCUDART ALPHA BETA SYNCS\n");
		return 2;
	}
	void *lib = dlopen(argv[1], RTLD_NOW);
	if (!lib) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	launch = (launch_fn)dlsym(lib, "cudaLaunchKernel");
	stream_sync = (sync_fn)dlsym(lib, "cudaStreamSynchronize");
	copy = (memcpy_fn)dlsym(lib, "cudaMemcpy");
	if (!launch || !stream_sync || !copy) {
		fprintf(stderr, "dlsym: %s\n", dlerror());
		return 1;
	}
	long alpha = atol(argv[2]), beta = atol(argv[3]), syncs = atol(argv[4]);
	printf("ready\n");
	fflush(stdout);
	char line[16];
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	const long steps = 200;
	struct timespec pause = {0, 10 * 1000 * 1000}; /* 200 steps of 10 ms */
	for (long i = 0; i < steps; i++) {
		decode_step(i, steps, alpha, beta, syncs);
		nanosleep(&pause, NULL);
	}
	printf("done\n");
	fflush(stdout);
	return 0;
}
