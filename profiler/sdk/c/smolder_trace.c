/* smolder trace context: the writer side of OTEP 4947. See smolder_trace.h. */
#include "smolder_trace.h"

#include <stddef.h>
#include <string.h>

/* The thread's record, and the published pointer to it that readers look up
 * by name. Readers run while this thread is stopped (a perf event, a
 * signal): compiler barriers order the stores; no CPU fence is needed. */
static __thread struct otel_thread_ctx_record smolder_record;

__attribute__((visibility("default"),
	       used)) __thread struct otel_thread_ctx_record *otel_thread_ctx_v1 = NULL;

#define BARRIER() __atomic_signal_fence(__ATOMIC_SEQ_CST)

static int all_zero(const uint8_t *bytes, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (bytes[i] != 0)
			return 0;
	}
	return 1;
}

int smolder_trace_set(const uint8_t trace_id[16], const uint8_t span_id[8])
{
	if (trace_id == NULL || span_id == NULL || all_zero(trace_id, 16) || all_zero(span_id, 8))
		return -1;
	/* Unpublish, fill, publish: a reader sees the old ids, none, or the
	 * new ones, never a mix. */
	otel_thread_ctx_v1 = NULL;
	BARRIER();
	memcpy(smolder_record.trace_id, trace_id, 16);
	memcpy(smolder_record.span_id, span_id, 8);
	smolder_record.valid = 1;
	smolder_record.attrs_data_size = 0;
	BARRIER();
	otel_thread_ctx_v1 = &smolder_record;
	return 0;
}

void smolder_trace_clear(void)
{
	otel_thread_ctx_v1 = NULL;
	BARRIER();
}

int smolder_trace_get(uint8_t trace_id[16], uint8_t span_id[8])
{
	const struct otel_thread_ctx_record *record = otel_thread_ctx_v1;
	if (record == NULL || record->valid != 1)
		return 0;
	memcpy(trace_id, record->trace_id, 16);
	memcpy(span_id, record->span_id, 8);
	return 1;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes exactly `2 * len` hex characters at `text` into `out`. */
static int decode_hex(const char *text, uint8_t *out, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		int hi = hex_digit(text[2 * i]);
		int lo = hi < 0 ? -1 : hex_digit(text[2 * i + 1]);
		if (lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* Length of the run of hex digits at `text`. */
static size_t hex_run(const char *text)
{
	size_t n = 0;
	while (hex_digit(text[n]) >= 0)
		n++;
	return n;
}

/* A trace id of 32 hex characters, or of 16 (64-bit B3) widened with zeros. */
static int decode_trace_id(const char *text, size_t len, uint8_t trace_id[16])
{
	if (len == 32)
		return decode_hex(text, trace_id, 16);
	if (len == 16) {
		memset(trace_id, 0, 8);
		return decode_hex(text, trace_id + 8, 8);
	}
	return -1;
}

int smolder_trace_set_hex(const char *trace_id, const char *span_id)
{
	uint8_t trace[16], span[8];
	if (trace_id == NULL || span_id == NULL)
		return -1;
	size_t trace_len = hex_run(trace_id), span_len = hex_run(span_id);
	if (trace_id[trace_len] != '\0' || span_id[span_len] != '\0' || span_len != 16)
		return -1;
	if (decode_trace_id(trace_id, trace_len, trace) != 0 || decode_hex(span_id, span, 8) != 0)
		return -1;
	return smolder_trace_set(trace, span);
}

/* W3C traceparent: version "00" has exactly four fields; a later version
 * may append fields after a '-'; version "ff" is invalid. */
static int parse_traceparent(const char *value, uint8_t trace[16], uint8_t span[8])
{
	if (hex_run(value) != 2 || value[2] != '-' || hex_run(value + 3) != 32 ||
	    value[35] != '-' || hex_run(value + 36) != 16 || value[52] != '-' ||
	    hex_run(value + 53) != 2)
		return -1;
	int version = hex_digit(value[0]) << 4 | hex_digit(value[1]);
	if (version == 0xff || (version == 0 && value[55] != '\0') ||
	    (version != 0 && value[55] != '\0' && value[55] != '-'))
		return -1;
	if (decode_hex(value + 3, trace, 16) != 0 || decode_hex(value + 36, span, 8) != 0)
		return -1;
	return 0;
}

/* Zipkin B3 single header: trace-span[-sampled[-parent]]. A value that
 * carries only a sampling decision ("0", "1", "d") has no ids. */
static int parse_b3(const char *value, uint8_t trace[16], uint8_t span[8])
{
	size_t trace_len = hex_run(value);
	if (value[trace_len] != '-' || decode_trace_id(value, trace_len, trace) != 0)
		return -1;
	const char *rest = value + trace_len + 1;
	if (hex_run(rest) != 16 || (rest[16] != '\0' && rest[16] != '-'))
		return -1;
	return decode_hex(rest, span, 8);
}

int smolder_trace_set_header(const char *value)
{
	uint8_t trace[16], span[8];
	if (value == NULL)
		return -1;
	if (parse_traceparent(value, trace, span) != 0 && parse_b3(value, trace, span) != 0)
		return -1;
	return smolder_trace_set(trace, span);
}
