/* The cost of the CUDA probes, measured from the calling side: calls
 * cudaLaunchKernel (or cudaStreamSynchronize) of the PyPI libcudart in a
 * loop and prints the mean time per call. Without a GPU each call returns at
 * once, so what a probe adds stands out.
 *
 * Usage: cuda_launch_bench LIBCUDART launch|sync CALLS [RATE]
 * RATE 0 (the default): flat out, then prints "ns_per_call N". RATE > 0:
 * paced at RATE calls a second until CALLS are made (for the agent's cost),
 * then prints "done". Prints "ready" first and waits for a line on stdin. */
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

static volatile int errors;

__attribute__((noinline, noclone)) void bench_kernel(void)
{
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: cuda_launch_bench LIBCUDART launch|sync CALLS [RATE]\n");
		return 2;
	}
	void *lib = dlopen(argv[1], RTLD_NOW);
	if (!lib) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	launch_fn launch = (launch_fn)dlsym(lib, "cudaLaunchKernel");
	sync_fn sync = (sync_fn)dlsym(lib, "cudaStreamSynchronize");
	if (!launch || !sync)
		return 1;
	int launches = strcmp(argv[2], "sync") != 0;
	long calls = atol(argv[3]);
	double rate = argc > 4 ? atof(argv[4]) : 0;
	dim3 grid = {1, 1, 1}, block = {32, 1, 1};
	printf("ready\n");
	fflush(stdout);
	char line[16];
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	double start = now();
	for (long i = 0; i < calls; i++) {
		if (launches)
			errors += launch((const void *)bench_kernel, grid, block, NULL, 0, NULL);
		else
			errors += sync(NULL);
		if (rate > 0 && i % 100 == 99) {
			double due = start + (double)(i + 1) / rate, late = due - now();
			if (late > 0) {
				struct timespec pause = {
				    (time_t)late, (long)((late - (double)(time_t)late) * 1e9)};
				nanosleep(&pause, NULL);
			}
		}
	}
	double elapsed = now() - start;
	if (rate > 0)
		printf("done\n");
	else
		printf("ns_per_call %.1f\n", elapsed * 1e9 / (double)calls);
	return 0;
}
