/* Recurses argv[1] frames deep (default 100), then spins in a leaf for
 * argv[2] seconds (default 5): stacks of a known depth, for the unwinder's
 * depth limit and its cost per frame. */
#include <stdlib.h>
#include <time.h>

#ifdef __clang__
#define STEP __attribute__((noinline))
#else
#define STEP __attribute__((noinline, noclone))
#endif

static volatile unsigned long sink;
static double seconds;

STEP void spin(void)
{
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		for (int i = 0; i < 100000; i++)
			sink += (unsigned long)i * (unsigned long)i;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 <
		 seconds);
}

/* The increment after the call keeps it from becoming a tail call. */
STEP void recurse(int depth)
{
	if (depth <= 0)
		spin();
	else
		recurse(depth - 1);
	sink++;
}

int main(int argc, char **argv)
{
	int depth = argc > 1 ? atoi(argv[1]) : 100;
	seconds = argc > 2 ? atof(argv[2]) : 5.0;
	recurse(depth);
	return 0;
}
