"""OpenTelemetry SDK integration: a span processor that publishes each span,
when it starts, as the starting thread's context, and puts back the enclosing
one when it ends.

    import smolder_trace.otel
    smolder_trace.otel.enable()        # on the global TracerProvider

or ``provider.add_span_processor(smolder_trace.otel.SpanProcessor())``.

A span is attributed from ``on_start`` to ``on_end`` on the thread that
started it, the convention of Pyroscope's own span processors: a span that
is started but never made current, or ended on another thread, is still
published on its starting thread until then.
"""

import threading

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor as _SdkSpanProcessor

from . import _native


class SpanProcessor(_SdkSpanProcessor):
    """Publishes the innermost open span of each thread."""

    def __init__(self):
        self._local = threading.local()

    def _stack(self):
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def on_start(self, span, parent_context=None):
        context = span.get_span_context()
        if not context.is_valid:
            return
        ids = (context.trace_id.to_bytes(16, "big"), context.span_id.to_bytes(8, "big"))
        self._stack().append((context.span_id, ids))
        _native.publish(*ids)

    def on_end(self, span):
        stack = getattr(self._local, "stack", None)
        if not stack:
            return
        span_id = span.get_span_context().span_id
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] == span_id:
                del stack[i]
                break
        else:
            return  # started on another thread
        if stack:
            _native.publish(*stack[-1][1])
        else:
            _native.clear()

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis=30000):
        return True


def enable(provider=None):
    """Adds a :class:`SpanProcessor` to ``provider`` (default: the global
    TracerProvider, which must be the SDK's)."""
    provider = provider or trace.get_tracer_provider()
    if not hasattr(provider, "add_span_processor"):
        raise TypeError(
            "the global TracerProvider is not the OpenTelemetry SDK's; "
            "call trace.set_tracer_provider(TracerProvider()) first"
        )
    processor = SpanProcessor()
    provider.add_span_processor(processor)
    return processor
