/* smolder trace context: publish the trace and span a thread is serving, so
 * that smolder (or any reader of the OpenTelemetry thread context, OTEP 4947)
 * labels that thread's samples with them.
 *
 * The context lives in a thread-local record that the profiler reads at
 * sample time: setting it is a few stores, with no system call and no
 * message to the profiler. Every function is async-signal-safe and acts on
 * the calling thread only.
 *
 * Build the shared library with the TLS descriptor dialect (what OTEP 4947
 * asks of writers):
 *   cc -O2 -fPIC -shared -mtls-dialect=gnu2 -o libsmolder_trace.so smolder_trace.c
 * See docs/trace-context.md. */
#ifndef SMOLDER_TRACE_H
#define SMOLDER_TRACE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The record of OTEP 4947 (`otel_thread_ctx_v1` points at one per thread). */
struct otel_thread_ctx_record {
	uint8_t trace_id[16]; /* big-endian, as in W3C traceparent */
	uint8_t span_id[8];
	uint8_t valid; /* 1 when the ids may be read */
	uint8_t reserved;
	uint16_t attrs_data_size; /* no attributes are written: 0 */
};

/* Makes (trace_id, span_id) the calling thread's context. All-zero ids are
 * invalid (as in W3C Trace Context). Returns 0, or -1 with the context
 * unchanged. */
int smolder_trace_set(const uint8_t trace_id[16], const uint8_t span_id[8]);

/* The same from hex: a trace id of 32 characters (or 16, a 64-bit B3 id,
 * widened with zeros) and a span id of 16. */
int smolder_trace_set_hex(const char *trace_id, const char *span_id);

/* The same from a header value: a W3C `traceparent`
 * ("00-<trace>-<span>-<flags>") or a Zipkin B3 single header
 * ("<trace>-<span>[-<sampled>[-<parent>]]"). */
int smolder_trace_set_header(const char *value);

/* The calling thread serves no trace any more. */
void smolder_trace_clear(void);

/* Copies the calling thread's context out. Returns 1 if it has one, 0 if
 * not (the arrays are left alone). */
int smolder_trace_get(uint8_t trace_id[16], uint8_t span_id[8]);

#ifdef __cplusplus
}
#endif

#endif
