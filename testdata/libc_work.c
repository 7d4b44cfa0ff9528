/* Spends its time inside glibc, which Debian builds without frame pointers:
 * qsort with a comparison callback, memcpy and strlen loops, and in the
 * vDSO (clock_gettime), called from known functions. Built with gcc -O2 -fomit-frame-pointer; runs
 * for argv[1] seconds (default 5). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STEP __attribute__((noinline, noclone))

static volatile unsigned long sink;
static int numbers[20000];
static char text[1 << 16];
static char copy[1 << 20];

STEP int compare_ints(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

STEP void sort_numbers(void)
{
	for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++)
		numbers[i] = rand();
	qsort(numbers, sizeof(numbers) / sizeof(numbers[0]), sizeof(numbers[0]), compare_ints);
	sink += (unsigned long)numbers[0];
}

STEP void copy_bytes(void)
{
	for (int i = 0; i < 64; i++) {
		memcpy(copy, copy + sizeof(copy) / 2, sizeof(copy) / 2);
		sink += (unsigned long)copy[i];
	}
}

STEP void measure_strings(void)
{
	for (int i = 0; i < 512; i++)
		sink += strlen(text + (i & 63));
}

STEP void read_clocks(void)
{
	struct timespec now;
	for (int i = 0; i < 20000; i++) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		sink += (unsigned long)now.tv_nsec;
	}
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 5.0;
	memset(text, 'x', sizeof(text) - 1);
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		sort_numbers();
		copy_bytes();
		measure_strings();
		read_clocks();
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 <
		 seconds);
	return 0;
}
