"""Publish the trace and span each thread is serving, so that smolder labels
the thread's CPU samples with them (pprof labels ``trace_id`` / ``span_id``).

The context is written to a thread-local record in the OpenTelemetry thread
context format (OTEP 4947, ``otel_thread_ctx_v1``) that the profiler reads
at sample time: setting it costs a C call, not a message.

    from smolder_trace import trace_context

    with trace_context(trace_id, span_id):       # ints, hex strings or bytes
        handle(request)
    with trace_context(request.headers["traceparent"]):   # or a B3 value
        handle(request)

With the OpenTelemetry SDK, ``smolder_trace.otel.enable()`` (one line)
publishes every span as it starts. Under asyncio, ``smolder_trace.asyncio
.install()`` makes the context follow the running task. See
docs/trace-context.md.
"""

from . import _native
from ._context import reset_task_context, set_task_context

__all__ = ["trace_context", "current", "clear"]


def _to_bytes(value, size, what):
    if isinstance(value, int):
        try:
            return value.to_bytes(size, "big")
        except OverflowError:
            raise ValueError(f"{what} does not fit in {size} bytes") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be an int, hex str or bytes, not {type(value).__name__}")


class trace_context:
    """``with trace_context(trace_id, span_id):`` the calling thread serves
    this trace; on exit, the context it replaced is back.

    Accepts ids as ints, bytes (16 and 8) or hex strings (a 16-digit B3 trace
    id is widened), or one header value: ``trace_context(traceparent)``,
    ``trace_context(b3_single_header)``, or by keyword
    ``traceparent=`` / ``b3=``. A malformed value raises ``ValueError``
    before anything is changed.
    """

    __slots__ = ("_set", "_args", "_previous", "_token")

    def __init__(self, trace_id=None, span_id=None, *, traceparent=None, b3=None):
        header = traceparent if traceparent is not None else b3
        if header is None and span_id is None and isinstance(trace_id, str):
            header = trace_id
        if header is not None:
            self._set, self._args = _native.set_header, (header,)
        elif isinstance(trace_id, str) and isinstance(span_id, str):
            self._set, self._args = _native.set_hex, (trace_id, span_id)
        elif trace_id is not None and span_id is not None:
            self._set = _native.set
            self._args = (_to_bytes(trace_id, 16, "trace_id"), _to_bytes(span_id, 8, "span_id"))
        else:
            raise TypeError("trace_context needs (trace_id, span_id) or one header value")
        self._previous = None
        self._token = None

    def __enter__(self):
        self._previous = self._set(*self._args)
        # Remembered per asyncio task (see smolder_trace.asyncio).
        self._token = set_task_context(_native.get())
        return self

    def __exit__(self, *exc):
        _native.restore(self._previous)
        reset_task_context(self._token)
        return False


def current():
    """The calling thread's published context as ``(trace_id, span_id)`` ints,
    or None."""
    context = _native.get()
    if context is None:
        return None
    return int.from_bytes(context[0], "big"), int.from_bytes(context[1], "big")


def clear():
    """The calling thread serves no trace any more."""
    _native.clear()
