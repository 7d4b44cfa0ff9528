/* Serves two kinds of requests, each under its own trace context, through
 * the smolder C SDK (linked: libsmolder_trace.so): `checkout` under trace
 * 4bf9...4736 / span 00f0...02b7 set from a W3C traceparent, `search` under
 * ids set from a B3 header. Between requests it spins in `between_requests`
 * with no context. Usage: trace_requests SECONDS
 * Built with -DWITHOUT_SDK it publishes nothing (benchmark baseline). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef WITHOUT_SDK
/* The same program without the SDK, for the read-cost benchmark: the same
 * stacks, no thread context to read. */
static int smolder_trace_set_header(const char *value)
{
	return value == NULL;
}
static void smolder_trace_clear(void)
{
}
#else
#include "smolder_trace.h"
#endif

#define CHECKOUT_TRACEPARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define SEARCH_B3 "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile unsigned long sink;

__attribute__((noinline)) static void burn(double seconds)
{
	double end = now() + seconds;
	while (now() < end) {
		for (int i = 0; i < 10000; i++)
			sink += (unsigned long)i * 7;
	}
}

__attribute__((noinline)) static void checkout(void)
{
	burn(0.030);
}

__attribute__((noinline)) static void search(void)
{
	burn(0.020);
}

__attribute__((noinline)) static void between_requests(void)
{
	burn(0.015);
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 5.0;
	double end = now() + seconds;
	unsigned long served = 0;
	while (now() < end) {
		if (smolder_trace_set_header(CHECKOUT_TRACEPARENT) != 0)
			return 2;
		checkout();
		smolder_trace_clear();
		between_requests();
		if (smolder_trace_set_header(SEARCH_B3) != 0)
			return 2;
		search();
		smolder_trace_clear();
		between_requests();
		served += 2;
	}
	printf("%lu requests\n", served);
	return 0;
}
