"""The work of the trace context workloads (trace_requests.py,
trace_async.py): each request kind burns CPU (or, with BLOCK set, sleeps) in
its own function, which is how the tests tell from a stack which request a
sample was taken in."""

import time

# Requests wait instead of computing (the off-CPU test).
BLOCK = False


def burn(seconds):
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        for i in range(500):
            total += i * i
    return total


def work(seconds):
    if BLOCK:
        time.sleep(seconds)
        return 0
    return burn(seconds)


def checkout(seconds):
    return work(seconds)


def search(seconds):
    return work(seconds)


def between_requests(seconds):
    return work(seconds)
