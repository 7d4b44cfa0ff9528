/* A known 8-deep call chain built without frame pointers (the tests compile
 * it with gcc -O2 -fomit-frame-pointer): main -> chain1 -> ... -> chain7 ->
 * leaf, where leaf is a frameless leaf. Frame pointers alone cannot walk it;
 * the DWARF unwinder must. Runs for argv[1] seconds (default 5). */
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

#define STEP __attribute__((noinline, noclone))

STEP void leaf(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		sink += i * i;
}

/* The increment after each call keeps GCC from turning it into a tail call. */
STEP void chain7(unsigned long n)
{
	leaf(n);
	sink++;
}
STEP void chain6(unsigned long n)
{
	chain7(n);
	sink++;
}
STEP void chain5(unsigned long n)
{
	chain6(n);
	sink++;
}
STEP void chain4(unsigned long n)
{
	chain5(n);
	sink++;
}
STEP void chain3(unsigned long n)
{
	chain4(n);
	sink++;
}
STEP void chain2(unsigned long n)
{
	chain3(n);
	sink++;
}
STEP void chain1(unsigned long n)
{
	chain2(n);
	sink++;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 5.0;
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		chain1(200000);
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 <
		 seconds);
	return 0;
}
