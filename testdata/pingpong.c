// Two threads pass a byte back and forth over two pipes: every round trip is
// at least two context switches. Prints "round_trips_per_second N" at exit.
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int ping[2], pong[2];
static volatile int stop;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *echo(void *arg)
{
	char byte;
	while (read(ping[0], &byte, 1) == 1 && byte != 'q')
		if (write(pong[1], &byte, 1) != 1)
			break;
	return arg;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 5;
	if (pipe(ping) != 0 || pipe(pong) != 0)
		return 1;
	pthread_t thread;
	pthread_create(&thread, NULL, echo, NULL);
	uint64_t trips = 0;
	double start = now(), end = start + seconds;
	char byte = 'x';
	while (now() < end) {
		if (write(ping[1], &byte, 1) != 1 || read(pong[0], &byte, 1) != 1)
			return 1;
		trips++;
	}
	double elapsed = now() - start;
	byte = 'q';
	if (write(ping[1], &byte, 1) != 1)
		return 1;
	pthread_join(thread, NULL);
	printf("round_trips_per_second %.0f\n", trips / elapsed);
	return 0;
}
