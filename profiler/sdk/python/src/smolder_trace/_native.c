/* CPython binding of the C SDK (profiler/sdk/c/smolder_trace.c). Every
 * setter returns the context it replaced, so that Python can restore it. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "smolder_trace.h"

/* The calling thread's context as (trace_id, span_id) bytes, or None. */
static PyObject *current(void)
{
	uint8_t trace[16], span[8];
	if (!smolder_trace_get(trace, span))
		Py_RETURN_NONE;
	return Py_BuildValue("(y#y#)", (const char *)trace, (Py_ssize_t)16, (const char *)span,
			     (Py_ssize_t)8);
}

static PyObject *invalid(const char *what)
{
	PyErr_Format(PyExc_ValueError, "invalid %s", what);
	return NULL;
}

static PyObject *native_get(PyObject *self, PyObject *unused)
{
	return current();
}

/* publish(trace_id: bytes, span_id: bytes): set without returning the
 * previous context (the span processor keeps its own stack). */
static PyObject *native_publish(PyObject *self, PyObject *args)
{
	Py_buffer trace, span;
	if (!PyArg_ParseTuple(args, "y*y*", &trace, &span))
		return NULL;
	int ok = trace.len == 16 && span.len == 8 &&
		 smolder_trace_set((const uint8_t *)trace.buf, (const uint8_t *)span.buf) == 0;
	PyBuffer_Release(&trace);
	PyBuffer_Release(&span);
	if (!ok)
		return invalid(
		    "trace id (16 bytes, not all zero) or span id (8 bytes, not all zero)");
	Py_RETURN_NONE;
}

static PyObject *native_set(PyObject *self, PyObject *args)
{
	Py_buffer trace, span;
	if (!PyArg_ParseTuple(args, "y*y*", &trace, &span))
		return NULL;
	PyObject *previous = current();
	int ok = trace.len == 16 && span.len == 8 &&
		 smolder_trace_set((const uint8_t *)trace.buf, (const uint8_t *)span.buf) == 0;
	PyBuffer_Release(&trace);
	PyBuffer_Release(&span);
	if (!ok) {
		Py_XDECREF(previous);
		return invalid(
		    "trace id (16 bytes, not all zero) or span id (8 bytes, not all zero)");
	}
	return previous;
}

static PyObject *native_set_hex(PyObject *self, PyObject *args)
{
	const char *trace, *span;
	if (!PyArg_ParseTuple(args, "ss", &trace, &span))
		return NULL;
	PyObject *previous = current();
	if (smolder_trace_set_hex(trace, span) != 0) {
		Py_XDECREF(previous);
		return invalid("hex ids (trace: 32 or 16 hex digits, span: 16)");
	}
	return previous;
}

static PyObject *native_set_header(PyObject *self, PyObject *args)
{
	const char *value;
	if (!PyArg_ParseTuple(args, "s", &value))
		return NULL;
	PyObject *previous = current();
	if (smolder_trace_set_header(value) != 0) {
		Py_XDECREF(previous);
		return invalid("traceparent or b3 header value");
	}
	return previous;
}

static PyObject *native_clear(PyObject *self, PyObject *unused)
{
	PyObject *previous = current();
	smolder_trace_clear();
	return previous;
}

/* restore(previous): what a setter returned (None clears). */
static PyObject *native_restore(PyObject *self, PyObject *previous)
{
	if (previous == Py_None) {
		smolder_trace_clear();
		Py_RETURN_NONE;
	}
	PyObject *result = native_set(self, previous);
	if (result == NULL)
		return NULL;
	Py_DECREF(result);
	Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"get", native_get, METH_NOARGS, "The thread's context: (trace_id, span_id) bytes, or None."},
    {"publish", native_publish, METH_VARARGS, "publish(trace_id: bytes, span_id: bytes)"},
    {"set", native_set, METH_VARARGS, "set(trace_id: bytes, span_id: bytes) -> previous"},
    {"set_hex", native_set_hex, METH_VARARGS, "set_hex(trace_id: str, span_id: str) -> previous"},
    {"set_header", native_set_header, METH_VARARGS,
     "set_header(traceparent or b3 value) -> previous"},
    {"clear", native_clear, METH_NOARGS, "clear() -> previous"},
    {"restore", native_restore, METH_O, "restore(previous): put back what a setter replaced"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "smolder_trace._native", "OTEP 4947 thread context writer", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
	return PyModule_Create(&module);
}
