"""One asyncio loop, three concurrent tasks that yield to each other every
2 ms: `checkout` under a W3C traceparent, `search` under a B3 header (each
holding its context across its awaits), and `between_requests` with none.
With smolder_trace.asyncio installed, each sample is attributed to the task
that was running. Usage: trace_async.py SECONDS"""

import asyncio
import sys
import time

import smolder_trace.asyncio
from smolder_trace import trace_context
from trace_work import between_requests, checkout, search

CHECKOUT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SEARCH = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"


async def serve(end, header, work):
    while time.monotonic() < end:
        with trace_context(header):
            for _ in range(10):
                work(0.002)
                await asyncio.sleep(0)


async def idle(end):
    while time.monotonic() < end:
        between_requests(0.002)
        await asyncio.sleep(0)


async def main(seconds):
    smolder_trace.asyncio.install()
    end = time.monotonic() + seconds
    await asyncio.gather(serve(end, CHECKOUT, checkout), serve(end, SEARCH, search), idle(end))


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0))
