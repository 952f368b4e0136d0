"""One shared watchdog thread that interrupts pure-Python code running over its time budget.

``with time_limit(2.0): plugin_function()`` raises :class:`TimeBudgetExceeded` inside the calling
thread once two seconds have passed, even in ``while True: pass``. The watchdog delivers the
exception with ``PyThreadState_SetAsyncExc`` and delivers it again every ``REPEAT_INTERVAL`` seconds
until the block exits, so code that catches it (``except BaseException``) cannot keep running.

What an in-process limit cannot do: the exception is raised between bytecodes, so a long call into
C (a catastrophic regex, ``time.sleep``, a blocking socket read) finishes before it is interrupted,
and code that swallows the exception in a loop delays the interruption by up to
``REPEAT_INTERVAL`` each time. Hard guarantees need a separate process (``core.sandbox``).

There is exactly one watchdog thread per process (started on first use, restarted after
``fork``). It looks at the open limits every ``TICK`` seconds while any is open and sleeps when
none has been for a while, so entering a limit costs no thread and no lock (a dict insert) and
leaving one a single uncontended lock; a deadline is noticed at most ``TICK`` late.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import time
from types import FrameType, TracebackType
from typing import Any

__all__ = ["REPEAT_INTERVAL", "TICK", "TimeBudgetExceeded", "TimeLimit", "time_limit"]

REPEAT_INTERVAL = 0.05
"""Seconds between two deliveries of the exception while the block has not exited yet."""

TICK = 0.005
"""Seconds between two looks at the open limits (the latest a deadline can be noticed)."""

IDLE_AFTER = 2.0
"""Seconds without any open limit after which the watchdog thread sleeps until the next one."""

# Two prototypes of the same C function: one passes an exception class, the other NULL (which
# clears a pending exception; passing None would set Py_None as the exception).
_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


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

    __slots__ = (
        "seconds",
        "exc_type",
        "deadline",
        "next_delivery",
        "thread_id",
        "frame",
        "fired",
        "fired_class",
        "done",
    )

    def __init__(
        self, seconds: float | None, exc_type: type[BaseException] = TimeBudgetExceeded
    ) -> None:
        # deadline, thread_id and frame are set on entry, next_delivery when fired: a limit
        # is made for every plugin call, so construction sets only what is always read.
        self.seconds = seconds
        self.exc_type = exc_type
        self.fired = False
        self.done = False
        self.fired_class: type[BaseException] | None = None
        self.frame: FrameType | None
        self.deadline: float
        self.thread_id: int
        self.next_delivery: float

    def __enter__(self) -> TimeLimit:
        if self.seconds:
            self.thread_id = _get_ident()
            self.frame = _getframe(1)
            self.deadline = _monotonic() + self.seconds
            _open[self] = None  # atomic under the GIL: no lock on the way in
            if _watchdog.sleeping:
                _watchdog.wake()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.seconds:
            return
        self.close()
        if not self.fired:
            return
        if exc is not None and isinstance(exc, self.exc_type):
            if getattr(exc, "time_limit", None) is None:  # raised by hand, not delivered
                _tag(exc, self)
            return  # this limit's exception (or an enclosing limit's) goes on
        # The block swallowed the interruption (or turned it into another error): the caller
        # must still learn that the budget was spent.
        assert self.fired_class is not None
        raise self.fired_class() from exc

    def close(self) -> None:
        """Stop watching this limit (idempotent); ``__exit__`` calls it.

        A caller that catches this limit's exception should call it too: if the exception was
        delivered while ``__exit__`` itself ran, ``__exit__`` may not have finished.
        """
        if self.done:
            return
        # Under the lock the watchdog cannot be between "is it still open?" and delivering.
        with _fire_lock:
            self.done = True
            _open.pop(self, None)
            if self.fired:
                # Drop an exception delivered but not yet raised, so it cannot escape the block.
                _clear_async_exc(self.thread_id, None)
        self.frame = None


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


def _class_for(limit: TimeLimit) -> type[BaseException]:
    """A subclass of the limit's exception type that names the limit (``time_limit``).

    The watchdog can only deliver a class, instantiated in the interrupted thread; a class per
    fired limit (made once, when it fires) lets every instance say which limit it came from,
    even one raised while ``__exit__`` was still running.
    """
    base = limit.exc_type
    return type(
        base.__name__,
        (base,),
        {"time_limit": limit, "__module__": base.__module__, "__qualname__": base.__qualname__},
    )


def _tag(exc: BaseException, limit: TimeLimit) -> None:
    # Exception classes with __slots__ cannot be tagged; they still propagate.
    with contextlib.suppress(AttributeError):
        exc.time_limit = limit  # type: ignore[attr-defined]


_get_ident = threading.get_ident
_getframe = sys._getframe
_monotonic = time.monotonic

_open: dict[TimeLimit, None] = {}  # the limits whose block is running, in any thread
_fire_lock = threading.Lock()


class _Watchdog:
    """The single thread that delivers the exception to limits past their deadline."""

    def __init__(self) -> None:
        self.sleeping = True  # no thread yet: the first limit starts one
        self._wakeup = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="course-plugins-watchdog", daemon=True
                    )
                    self.sleeping = False
                    self._thread.start()
                    return
        self._wakeup.set()

    def _run(self) -> None:
        idle_since = _monotonic()
        while True:
            if _open:
                idle_since = _monotonic()
                self._check()
                time.sleep(TICK)
                continue
            if _monotonic() - idle_since < IDLE_AFTER:
                time.sleep(TICK)
                continue
            # Go to sleep; a limit opened meanwhile is seen by the re-check or wakes us.
            self._wakeup.clear()
            self.sleeping = True
            if not _open:
                self._wakeup.wait()
            self.sleeping = False
            idle_since = _monotonic()

    def _check(self) -> None:
        now = _monotonic()
        for limit in list(_open):  # a copy: threads add and remove limits meanwhile
            due = limit.next_delivery if limit.fired else limit.deadline
            if now < due:
                continue
            with _fire_lock:
                if limit.done:
                    continue
                if not _in_block(limit):
                    limit.done = True
                    _open.pop(limit, None)
                    continue
                if limit.fired_class is None:
                    limit.fired_class = _class_for(limit)
                limit.fired = True
                limit.next_delivery = now + REPEAT_INTERVAL
                _set_async_exc(limit.thread_id, limit.fired_class)

    def after_fork(self) -> None:
        # Only the forking thread survives a fork: no watchdog thread in the child yet.
        global _fire_lock
        _fire_lock = threading.Lock()
        me = _get_ident()
        for limit in list(_open):  # other threads' limits: those threads do not exist here
            if limit.thread_id != me:
                del _open[limit]
        self.__init__()  # type: ignore[misc]
        if _open:
            self.wake()


_watchdog = _Watchdog()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watchdog.after_fork)


def _stats() -> dict[str, Any]:
    """Internal numbers for tests: open limits, whether the thread runs or sleeps."""
    thread = _watchdog._thread
    return {
        "open": len(_open),
        "thread_alive": thread is not None and thread.is_alive(),
        "sleeping": _watchdog.sleeping,
    }
