"""The context each asyncio task (or thread) set with ``trace_context``,
kept in a context variable so that task switches can publish it again."""

import contextvars

_TASK_CONTEXT = contextvars.ContextVar("smolder_trace_context", default=None)

current_task_context = _TASK_CONTEXT.get
set_task_context = _TASK_CONTEXT.set
reset_task_context = _TASK_CONTEXT.reset
