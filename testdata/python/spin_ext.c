/* A C extension that spins in C: smolder's mixed-stack test checks that its
 * frames appear below the Python function that called it. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

__attribute__((noinline)) static unsigned long spin_leaf(unsigned long x)
{
	for (int i = 0; i < 100000; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	return x;
}

__attribute__((noinline)) static unsigned long spin_c(double seconds)
{
	unsigned long x = 1;
	double end = now() + seconds;
	while (now() < end)
		x = spin_leaf(x);
	return x;
}

/* spin(seconds): burns CPU in C for `seconds`. */
static PyObject *spin(PyObject *self, PyObject *args)
{
	(void)self;
	double seconds;
	if (!PyArg_ParseTuple(args, "d", &seconds))
		return NULL;
	return PyLong_FromUnsignedLong(spin_c(seconds));
}

static PyMethodDef methods[] = {
    {"spin", spin, METH_VARARGS, "Burn CPU in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "spin_ext", NULL, -1, methods};

PyMODINIT_FUNC PyInit_spin_ext(void)
{
	return PyModule_Create(&module);
}
