/* Calls the CUDA runtime (libcudart, from PyPI) in a loop for argv[2]
 * seconds, after spinning argv[3] seconds (default 0) in before_dlopen:
 * dlopen(argv[1]), then cudaGetDeviceCount / cudaMalloc /
 * cudaGetErrorString / cudaRuntimeGetVersion. Without a GPU the calls fail
 * fast, which is fine: the code inside libcudart still runs, and its frames
 * (no frame pointers, no .symtab) must unwind and be named. Built with gcc
 * -O2 -fomit-frame-pointer. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef int (*count_fn)(int *);
typedef int (*malloc_fn)(void **, size_t);
typedef const char *(*error_string_fn)(int);
typedef int (*version_fn)(int *);

static volatile unsigned long sink;

__attribute__((noinline, noclone)) void call_cuda_runtime(count_fn count, malloc_fn cuda_malloc,
							  error_string_fn error_string,
							  version_fn version)
{
	for (int i = 0; i < 1000; i++) {
		int devices = 0, v = 0;
		void *p = NULL;
		int err = count(&devices);
		err |= cuda_malloc(&p, 1 << 20);
		err |= version(&v);
		sink +=
		    (unsigned long)error_string(err)[0] + (unsigned long)devices + (unsigned long)v;
	}
}

static double elapsed(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* A library loaded late (as PyTorch loads CUDA): the profiler must notice. */
__attribute__((noinline, noclone)) void before_dlopen(double seconds)
{
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (elapsed(&start) < seconds)
		for (int i = 0; i < 100000; i++)
			sink += (unsigned long)i;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: cudart_loop LIBCUDART [SECONDS] [DELAY]\n");
		return 2;
	}
	if (argc > 3)
		before_dlopen(atof(argv[3]));
	void *lib = dlopen(argv[1], RTLD_NOW);
	if (!lib) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	count_fn count = (count_fn)dlsym(lib, "cudaGetDeviceCount");
	malloc_fn cuda_malloc = (malloc_fn)dlsym(lib, "cudaMalloc");
	error_string_fn error_string = (error_string_fn)dlsym(lib, "cudaGetErrorString");
	version_fn version = (version_fn)dlsym(lib, "cudaRuntimeGetVersion");
	if (!count || !cuda_malloc || !error_string || !version) {
		fprintf(stderr, "dlsym: %s\n", dlerror());
		return 1;
	}
	double seconds = argc > 2 ? atof(argv[2]) : 5.0;
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do
		call_cuda_runtime(count, cuda_malloc, error_string, version);
	while (elapsed(&start) < seconds);
	return 0;
}
