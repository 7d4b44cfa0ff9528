/* The soak's C process: loads each library named on the command line in
 * turn, spins in it for MS milliseconds, unloads it, sleeps PAUSE_MS, and
 * repeats ROUNDS times (0: until killed).
 * usage: soak_churn MS PAUSE_MS ROUNDS LIB... */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef unsigned long (*spin_fn)(double);

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: %s MS PAUSE_MS ROUNDS LIB...\n", argv[0]);
		return 2;
	}
	double ms = atof(argv[1]);
	long pause_ms = atol(argv[2]);
	long rounds = atol(argv[3]);
	struct timespec pause = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
	for (long round = 0; rounds == 0 || round < rounds; round++) {
		const char *path = argv[4 + round % (argc - 4)];
		void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
		if (!lib) {
			fprintf(stderr, "%s\n", dlerror());
			return 1;
		}
		spin_fn spin = (spin_fn)dlsym(lib, "soak_spin");
		if (!spin) {
			fprintf(stderr, "%s\n", dlerror());
			return 1;
		}
		spin(ms);
		dlclose(lib);
		if (pause_ms > 0)
			nanosleep(&pause, NULL);
	}
	return 0;
}
