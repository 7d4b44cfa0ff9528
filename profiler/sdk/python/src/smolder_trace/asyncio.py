"""Asyncio: follow the trace context when the event loop switches tasks.

The published record belongs to the thread, and one thread runs many tasks.
After ``install()``, every task the loop creates publishes its own context
each time it resumes and withdraws it each time it yields, so a sample is
attributed to the task that is actually running:

    import smolder_trace.asyncio
    smolder_trace.asyncio.install()       # in the running loop, or pass one

    async def handle(request):
        with trace_context(request.headers["traceparent"]):
            await work()                  # other tasks run meanwhile: not attributed here

Costs two C calls per task step. Tasks created before ``install()`` are not
followed. The OpenTelemetry span processor is not task-aware: under asyncio,
use ``trace_context`` in the handler.
"""

import asyncio
import collections.abc

from . import _native
from ._context import current_task_context


class _Stepper(collections.abc.Coroutine):
    """Wraps a task's coroutine: each step runs with the task's context
    published, and with none once it yields."""

    __slots__ = ("_coro",)

    def __init__(self, coro):
        self._coro = coro

    def send(self, value):
        _native.restore(current_task_context())
        try:
            return self._coro.send(value)
        finally:
            _native.clear()

    def throw(self, *args):
        _native.restore(current_task_context())
        try:
            return self._coro.throw(*args)
        finally:
            _native.clear()

    def close(self):
        return self._coro.close()

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        return self.send(None)

    def __getattr__(self, name):
        # cr_frame, cr_code, __qualname__ ...: what asyncio shows in reprs.
        return getattr(self._coro, name)


def _task_factory(loop, coro, **kwargs):
    return asyncio.Task(_Stepper(coro), loop=loop, **kwargs)


def install(loop=None):
    """Makes ``loop`` (default: the running loop) follow task contexts."""
    loop = loop or asyncio.get_running_loop()
    loop.set_task_factory(_task_factory)
