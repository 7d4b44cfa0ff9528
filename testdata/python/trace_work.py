"""The work of the trace context workloads (trace_requests.py,
trace_async.py): each request kind burns CPU in its own function, which is
how the tests tell from a stack which request a sample was taken in."""

import time


def burn(seconds):
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        for i in range(500):
            total += i * i
    return total


def checkout(seconds):
    return burn(seconds)


def search(seconds):
    return burn(seconds)


def between_requests(seconds):
    return burn(seconds)
