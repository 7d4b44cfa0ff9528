// outer() calls middle() which calls inner(); both are inlined into outer.
#include <stdint.h>
#include <stdlib.h>

volatile uint64_t sink;

static inline __attribute__((always_inline)) void inner(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		sink += i * i;
}

static inline __attribute__((always_inline)) void middle(uint64_t n)
{
	inner(n);
	sink ^= n;
}

__attribute__((noinline)) void outer(uint64_t n)
{
	middle(n);
	sink += 3;
}

int main(int argc, char **argv)
{
	uint64_t rounds = argc > 1 ? strtoull(argv[1], NULL, 10) : 1;
	for (uint64_t r = 0; r < rounds; r++)
		outer(1000000);
	return 0;
}
