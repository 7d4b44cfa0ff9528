"""Serves two kinds of requests, each under its own trace context, and spins
between them with none. Usage:

    trace_requests.py SECONDS manual   # smolder_trace.trace_context, fixed ids
    trace_requests.py SECONDS otel     # OpenTelemetry SDK spans, random ids
    trace_requests.py SECONDS manual sleep  # requests wait instead of computing

`checkout` runs under a W3C traceparent, `search` under a B3 header (manual)
or under spans named after them (otel). At exit it prints one line per
request kind and id pair: `KIND TRACE_ID SPAN_ID` (hex), so a test knows
which ids each kind was served under.
"""

import sys
import time

import trace_work
from smolder_trace import trace_context
from trace_work import between_requests, checkout, search

CHECKOUT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SEARCH = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"


def serve_manual(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with trace_context(CHECKOUT):
            checkout(0.030)
        between_requests(0.015)
        with trace_context(b3=SEARCH):
            search(0.020)
        between_requests(0.015)
    print("checkout 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7")
    print("search 80f198ee56343ba864fe8b2a57d3eff7 e457b5a2e4d86bd1")


def serve_otel(seconds):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    import smolder_trace.otel

    trace.set_tracer_provider(TracerProvider())
    smolder_trace.otel.enable()
    tracer = trace.get_tracer("trace_requests")
    served = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for kind, work, seconds in (("checkout", checkout, 0.030), ("search", search, 0.020)):
            with tracer.start_as_current_span(kind) as span:
                work(seconds)
            context = span.get_span_context()
            served.append(f"{kind} {context.trace_id:032x} {context.span_id:016x}")
            between_requests(0.015)
    print("\n".join(served))


if __name__ == "__main__":
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    mode = sys.argv[2] if len(sys.argv) > 2 else "manual"
    trace_work.BLOCK = sys.argv[3:4] == ["sleep"]
    {"manual": serve_manual, "otel": serve_otel}[mode](seconds)
