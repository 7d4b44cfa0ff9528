// Package smoldertrace publishes the trace and span a goroutine is serving,
// so that smolder (or any reader of the OpenTelemetry thread context, OTEP
// 4947) labels the CPU samples of its thread with them.
//
// The context is a thread-local record of the OS thread, written through
// the C SDK (cgo). A goroutine moves between threads, so Do and DoHeader
// lock it to its thread while the context is published:
//
//	err := smoldertrace.DoHeader(r.Header.Get("traceparent"), func() {
//		handle(w, r)
//	})
//
// Goroutines started inside the function run on other threads and carry no
// context unless they publish their own. See docs/trace-context.md.
package smoldertrace

/*
#cgo CFLAGS: -O2 -I${SRCDIR}/../c
#include <stdlib.h>
#include "smolder_trace.h"
*/
import "C"

import (
	"errors"
	"runtime"
	"unsafe"
)

// ErrInvalid is returned for all-zero ids and malformed header values.
var ErrInvalid = errors.New("smoldertrace: invalid trace context")

// Set publishes (traceID, spanID) on the calling OS thread. The caller must
// hold runtime.LockOSThread until Clear; Do does both.
func Set(traceID [16]byte, spanID [8]byte) error {
	if C.smolder_trace_set((*C.uint8_t)(unsafe.Pointer(&traceID[0])),
		(*C.uint8_t)(unsafe.Pointer(&spanID[0]))) != 0 {
		return ErrInvalid
	}
	return nil
}

// SetHeader publishes the ids of a W3C traceparent or Zipkin B3 single
// header value on the calling OS thread (see Set).
func SetHeader(value string) error {
	cvalue := C.CString(value)
	defer C.free(unsafe.Pointer(cvalue))
	if C.smolder_trace_set_header(cvalue) != 0 {
		return ErrInvalid
	}
	return nil
}

// Clear: the calling OS thread serves no trace any more.
func Clear() {
	C.smolder_trace_clear()
}

// Current returns the calling OS thread's published context.
func Current() (traceID [16]byte, spanID [8]byte, ok bool) {
	ok = C.smolder_trace_get((*C.uint8_t)(unsafe.Pointer(&traceID[0])),
		(*C.uint8_t)(unsafe.Pointer(&spanID[0]))) == 1
	return
}

// Do runs f with (traceID, spanID) published, its goroutine locked to the
// OS thread; the context it replaced is back when f returns.
func Do(traceID [16]byte, spanID [8]byte, f func()) error {
	return locked(func() error { return Set(traceID, spanID) }, f)
}

// DoHeader is Do with the ids of a traceparent or B3 header value.
func DoHeader(value string, f func()) error {
	return locked(func() error { return SetHeader(value) }, f)
}

func locked(set func() error, f func()) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	traceID, spanID, had := Current()
	if err := set(); err != nil {
		return err
	}
	defer func() {
		if had {
			_ = Set(traceID, spanID)
		} else {
			Clear()
		}
	}()
	f()
	return nil
}
