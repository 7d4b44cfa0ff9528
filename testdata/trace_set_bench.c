/* What publishing a trace context costs with the C SDK: ns per
 * set + clear pair, from raw ids and from a traceparent header.
 * Usage: trace_set_bench [ITERATIONS] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "smolder_trace.h"

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10000000;
	uint8_t trace[16] = {0x4b, [15] = 0x36};
	uint8_t span[8] = {0x00, 0xf0, [7] = 0xb7};
	double start = now_ns();
	for (long i = 0; i < n; i++) {
		span[7] = (uint8_t)(i | 1);
		smolder_trace_set(trace, span);
		smolder_trace_clear();
	}
	double ids = (now_ns() - start) / (double)n;
	long m = n / 10;
	start = now_ns();
	for (long i = 0; i < m; i++) {
		smolder_trace_set_header("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
		smolder_trace_clear();
	}
	double header = (now_ns() - start) / (double)m;
	printf("ids %.1f ns\nheader %.1f ns\n", ids, header);
	return 0;
}
