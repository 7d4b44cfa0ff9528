/* cgo compiles the C files of the package directory: this one is the C SDK. */
#include "../c/smolder_trace.c"
