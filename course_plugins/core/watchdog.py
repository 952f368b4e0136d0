"""One shared watchdog thread that interrupts pure-Python code running over its time budget.

``with time_limit(2.0): plugin_function()`` raises :class:`TimeBudgetExceeded` inside the calling
thread once two seconds have passed, even in ``while True: pass``. The watchdog delivers the
exception with ``PyThreadState_SetAsyncExc`` and delivers it again every ``REPEAT_INTERVAL`` seconds
until the block exits, so code that catches it (``except BaseException``) cannot keep running.

What an in-process limit cannot do: the exception is raised between bytecodes, so a long call into
C (a catastrophic regex, ``time.sleep``, a blocking socket read) finishes before it is interrupted,
and code that swallows the exception in a loop delays the interruption by up to
``REPEAT_INTERVAL`` each time. Hard guarantees need a separate process (``core.sandbox``).

There is exactly one watchdog thread per process (started on first use, restarted after ``fork``);
entering a limit costs a lock and a heap push, never a thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import os
import sys
import threading
import time
from types import FrameType, TracebackType
from typing import Any

__all__ = ["REPEAT_INTERVAL", "TimeBudgetExceeded", "TimeLimit", "time_limit"]

REPEAT_INTERVAL = 0.05
"""Seconds between two deliveries of the exception while the block has not exited yet."""

# Two prototypes of the same C function: one passes an exception class, the other NULL (which
# clears a pending exception; passing None would set Py_None as the exception).
_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)

_NO_WAKE = float("inf")


class TimeBudgetExceeded(BaseException):
    """A block ran over its time budget.

    A ``BaseException`` so that a plugin's ``except Exception`` cannot swallow it. ``time_limit``
    is set to the :class:`TimeLimit` that fired, so callers can tell their limit from an outer one.
    """

    time_limit: TimeLimit | None = None

    def __str__(self) -> str:
        base = super().__str__()
        if base:
            return base
        if self.time_limit is not None:
            return f"time budget of {self.time_limit.seconds:g}s exceeded"
        return "time budget exceeded"


class TimeLimit:
    """Context manager form of :func:`time_limit`; ``fired`` tells whether the budget ran out."""

    __slots__ = ("seconds", "exc_type", "deadline", "thread_id", "frame", "fired", "done")

    def __init__(
        self, seconds: float | None, exc_type: type[BaseException] = TimeBudgetExceeded
    ) -> None:
        self.seconds = seconds
        self.exc_type = exc_type
        self.deadline = 0.0
        self.thread_id = 0
        self.frame: FrameType | None = None
        self.fired = False
        self.done = False

    def __enter__(self) -> TimeLimit:
        if self.seconds:
            self.thread_id = threading.get_ident()
            self.frame = sys._getframe(1)
            self.deadline = time.monotonic() + self.seconds
            _watchdog.add(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.seconds:
            return
        _watchdog.finish(self)
        self.frame = None
        if not self.fired:
            return
        if exc is not None and isinstance(exc, self.exc_type):
            _tag(exc, self)
            return
        # The block swallowed the interruption (or turned it into another error): the caller
        # must still learn that the budget was spent.
        replacement = self.exc_type()
        _tag(replacement, self)
        raise replacement from exc


def time_limit(
    seconds: float | None, exc_type: type[BaseException] = TimeBudgetExceeded
) -> TimeLimit:
    """Return a context manager that raises ``exc_type`` in this thread after ``seconds``.

    ``None`` or ``0`` means no limit. ``exc_type`` must be constructible without arguments.
    Nested limits each keep their own deadline, so the earliest one fires first. The exception
    raised out of the block carries ``time_limit`` (the :class:`TimeLimit` that fired).
    """
    return TimeLimit(seconds, exc_type)


def _in_block(limit: TimeLimit) -> bool:
    """Whether the frame that entered the limit is still running in its thread.

    CPython 3.11 reports an exception raised at a backward jump at the jump's target minus one,
    which can fall outside the frame's ``try``/``with`` ranges: the exception then leaves that
    frame without running ``__exit__``. Such a limit must not keep interrupting the thread.
    It also covers a limit held across an ``await``: a suspended coroutine is not interrupted.
    """
    frame = sys._current_frames().get(limit.thread_id)
    while frame is not None:
        if frame is limit.frame:
            return True
        frame = frame.f_back
    return False


def _tag(exc: BaseException, limit: TimeLimit) -> None:
    # Exception classes with __slots__ cannot be tagged; they still propagate.
    with contextlib.suppress(AttributeError):
        exc.time_limit = limit  # type: ignore[attr-defined]


class _Watchdog:
    """The deadline heap and the single thread that fires the deadlines."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, TimeLimit]] = []
        self._live = 0
        self._seq = itertools.count()
        self._wake_at = _NO_WAKE
        self._thread: threading.Thread | None = None

    def add(self, limit: TimeLimit) -> None:
        with self._cond:
            if self._thread is None:
                self._start()
            heapq.heappush(self._heap, (limit.deadline, next(self._seq), limit))
            self._live += 1
            # Finished limits stay in the heap until popped (cheap exit); compact when they
            # pile up so a hot loop of short calls cannot grow the heap without bound.
            if len(self._heap) > 64 + 4 * self._live:
                self._heap = [item for item in self._heap if not item[2].done]
                heapq.heapify(self._heap)
            # Wake the thread only if it would sleep past this deadline.
            if limit.deadline < self._wake_at:
                self._cond.notify()

    def finish(self, limit: TimeLimit) -> None:
        with self._cond:
            if limit.done:  # abandoned by the watchdog (see _in_block)
                return
            limit.done = True
            self._live -= 1
            if limit.fired:
                # Drop an exception delivered but not yet raised, so it cannot escape the block.
                _clear_async_exc(limit.thread_id, None)

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="course-plugins-watchdog", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        with self._cond:
            while True:
                heap = self._heap
                now = time.monotonic()
                while heap and (heap[0][2].done or heap[0][0] <= now):
                    _, _, limit = heapq.heappop(heap)
                    if limit.done:
                        continue
                    if not _in_block(limit):
                        limit.done = True
                        self._live -= 1
                        continue
                    limit.fired = True
                    _set_async_exc(limit.thread_id, limit.exc_type)
                    # Deliver again later unless the block has exited by then.
                    heapq.heappush(heap, (now + REPEAT_INTERVAL, next(self._seq), limit))
                    now = time.monotonic()
                self._wake_at = heap[0][0] if heap else _NO_WAKE
                timeout = None if not heap else max(self._wake_at - time.monotonic(), 0.0)
                self._cond.wait(timeout)

    def _after_fork(self) -> None:
        # Only the forking thread survives a fork: start afresh with a new lock and thread.
        self.__init__()  # type: ignore[misc]


_watchdog = _Watchdog()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watchdog._after_fork)


def _stats() -> dict[str, Any]:
    """Internal numbers for tests: heap size, live limits, whether the thread is running."""
    wd = _watchdog
    return {
        "heap": len(wd._heap),
        "live": wd._live,
        "thread_alive": wd._thread is not None and wd._thread.is_alive(),
    }
