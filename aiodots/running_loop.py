"""`running_loop()`: `asyncio.get_running_loop()` without a system call per request.

On Python 3.11 every `asyncio.get_running_loop()` makes a getpid() system call, to notice
a fork. The client asks for the loop on every request (a session is bound to its loop),
and that call measured 2.5 us of client CPU per request here (benchmarks/throughput.py),
more than the rest of its bookkeeping. Python 3.12 dropped the system call, and there
this is asyncio's own function.

`being_cancelled()` tells a task's own cancellation from a CancelledError it was handed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from contextvars import ContextVar

__all__ = ["being_cancelled", "running_loop"]

if sys.version_info >= (3, 12):
    running_loop = asyncio.get_running_loop
else:
    #: The loop this context (a task, nearly always) was last seen running in, and the
    #: thread it ran in.
    _seen_loop: ContextVar[tuple[asyncio.AbstractEventLoop, int] | None] = ContextVar(
        "aiodots_seen_loop", default=None
    )

    def _forget_loops() -> None:
        # A new variable holds nothing: a forked child (whose tasks' contexts and thread
        # ids are its parent's) asks asyncio again, and asyncio knows it is not the parent.
        global _seen_loop
        _seen_loop = ContextVar("aiodots_seen_loop", default=None)

    os.register_at_fork(after_in_child=_forget_loops)

    def running_loop() -> asyncio.AbstractEventLoop:
        """`asyncio.get_running_loop()`, asked once per task.

        The answer is kept in a context variable, which every task has its own copy of.
        A copy that reaches another loop (`run_coroutine_threadsafe` copies the caller's)
        runs in another thread, or while the loop it names is not running (a second
        `asyncio.run`): either way it is asked again, as it is after a fork. Only a loop
        moved to another thread while its tasks live, then handing one of their contexts
        to a loop in its old thread, would pass unasked."""
        seen = _seen_loop.get()
        if seen is not None:
            loop, thread = seen
            if thread == threading.get_ident() and loop.is_running():
                return loop
        loop = asyncio.get_running_loop()
        _seen_loop.set((loop, threading.get_ident()))
        return loop


def being_cancelled() -> bool:
    """Whether the current task was asked to stop, as against a CancelledError that some
    awaited thing raised of its own (a future another task, or aiohttp, cancelled)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
