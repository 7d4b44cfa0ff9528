// main -> a -> b -> c -> spin, each noinline: the reference chain.
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

volatile uint64_t sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void spin(void)
{
	for (uint64_t i = 0; i < 2000000; i++)
		sink += i;
}

__attribute__((noinline)) void c(void)
{
	spin();
	sink++;
}
__attribute__((noinline)) void b(void)
{
	c();
	sink++;
}
__attribute__((noinline)) void a(void)
{
	b();
	sink++;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 5;
	if (argc > 2 && strcmp(argv[2], "print-address") == 0) {
		/* Lets tests find spin() in the running process. */
		printf("%p\n", (void *)spin);
		fflush(stdout);
	}
	double end = now() + seconds;
	while (now() < end)
		a();
	return 0;
}
