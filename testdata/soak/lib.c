/* A library the soak's C processes load and unload (copies under many
 * names, so the agent sees files come and go): spins for `ms`. */
#include <time.h>

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

__attribute__((noinline)) unsigned long soak_spin(double ms)
{
	unsigned long n = 0;
	double end = now_ms() + ms;
	while (now_ms() < end)
		n++;
	return n;
}
