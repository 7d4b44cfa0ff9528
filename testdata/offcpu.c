// Threads that each wait in a known way, plus one that only computes:
//   sleeper:  nanosleep inside sleep_here
//   reader:   reads an empty pipe inside read_here (the main thread writes)
//   locker:   waits for a contended mutex inside lock_here (holder keeps it)
//   computer: spins in compute_here
// Every blocking call goes through a noinline wrapper: glibc has no frame
// pointers, so a frame-pointer unwinder loses the frame that calls straight
// into it. The wrapper is that frame; the *_here function stays visible.
// At exit each thread prints "name tid wall_ns cpu_ns".
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

volatile uint64_t sink;
static double seconds = 3;
static int pipe_fds[2];
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static volatile int stop;

static uint64_t clock_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

__attribute__((noinline)) static void call_nanosleep(long ns)
{
	struct timespec ts = {0, ns};
	nanosleep(&ts, NULL);
	sink++;
}

__attribute__((noinline)) static void call_read(void)
{
	char byte;
	if (read(pipe_fds[0], &byte, 1) < 0)
		exit(1);
	sink++;
}

__attribute__((noinline)) static void call_lock(void)
{
	pthread_mutex_lock(&mutex);
	sink++;
}

__attribute__((noinline)) void sleep_here(void)
{
	call_nanosleep(10 * 1000 * 1000);
	sink++;
}

__attribute__((noinline)) void read_here(void)
{
	call_read();
	sink++;
}

__attribute__((noinline)) void lock_here(void)
{
	call_lock();
	pthread_mutex_unlock(&mutex);
	sink++;
}

__attribute__((noinline)) void compute_here(void)
{
	for (int i = 0; i < 100000; i++)
		sink += i;
}

static void report(const char *name, uint64_t start)
{
	printf("%s %d %llu %llu\n", name, gettid(),
	       (unsigned long long)(clock_ns(CLOCK_MONOTONIC) - start),
	       (unsigned long long)clock_ns(CLOCK_THREAD_CPUTIME_ID));
	fflush(stdout);
}

static void *sleeper(void *arg)
{
	uint64_t start = clock_ns(CLOCK_MONOTONIC);
	pthread_setname_np(pthread_self(), "sleeper");
	while (!stop)
		sleep_here();
	report("sleeper", start);
	return arg;
}

static void *reader(void *arg)
{
	uint64_t start = clock_ns(CLOCK_MONOTONIC);
	pthread_setname_np(pthread_self(), "reader");
	while (!stop)
		read_here();
	report("reader", start);
	return arg;
}

static void *locker(void *arg)
{
	uint64_t start = clock_ns(CLOCK_MONOTONIC);
	pthread_setname_np(pthread_self(), "locker");
	while (!stop) {
		lock_here();
		/* Let the holder take the mutex back: glibc's mutex is not fair,
		 * and a locker that relocked at once would keep it and make the
		 * holder the one that waits (seen once in CI). */
		call_nanosleep(10 * 1000);
	}
	report("locker", start);
	return arg;
}

/* Holds the mutex (asleep) nearly all the time, so that locker waits. */
static void *holder(void *arg)
{
	pthread_setname_np(pthread_self(), "holder");
	while (!stop) {
		pthread_mutex_lock(&mutex);
		call_nanosleep(10 * 1000 * 1000);
		pthread_mutex_unlock(&mutex);
		call_nanosleep(100 * 1000);
	}
	return arg;
}

static void *computer(void *arg)
{
	uint64_t start = clock_ns(CLOCK_MONOTONIC);
	pthread_setname_np(pthread_self(), "computer");
	while (!stop)
		compute_here();
	report("computer", start);
	return arg;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		seconds = atof(argv[1]);
	if (pipe(pipe_fds) != 0)
		return 1;
	pthread_t threads[5];
	void *(*bodies[5])(void *) = {sleeper, reader, locker, holder, computer};
	for (int i = 0; i < 5; i++)
		pthread_create(&threads[i], NULL, bodies[i], NULL);
	uint64_t end = clock_ns(CLOCK_MONOTONIC) + (uint64_t)(seconds * 1e9);
	while (clock_ns(CLOCK_MONOTONIC) < end) {
		call_nanosleep(20 * 1000 * 1000);
		if (write(pipe_fds[1], "x", 1) != 1)
			return 1;
	}
	stop = 1;
	if (write(pipe_fds[1], "x", 1) != 1) /* wake the reader for the last time */
		return 1;
	for (int i = 0; i < 5; i++)
		pthread_join(threads[i], NULL);
	return 0;
}
