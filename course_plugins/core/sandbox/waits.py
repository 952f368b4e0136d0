"""The locks of the ``threading`` facade: the interpreter's own, waiting in slices.

A plugin's handlers may run in several threads, so plugins get ``threading``'s locks. A wait
on one is a single C call, which an in-process time budget cannot interrupt (it acts between
bytecodes, and only in the plugin's own frames): a trusted plugin waiting for ever on a lock
that is never released (its own ``Lock`` taken twice, an ``Event`` never set) held the site's
thread for ever. These classes wait in slices of ``SLICE`` seconds and call the budget's
``checkpoint`` between two (as ``time.sleep`` of the facade does), where a budget that ran out
is raised; an uncontended lock costs one C call, as before.
"""

from __future__ import annotations

import _thread
import threading
import time
from collections.abc import Callable
from typing import Any

from course_plugins.core.watchdog import checkpoint

__all__ = ["SLICE", "Barrier", "BoundedSemaphore", "Condition", "Event", "Lock", "RLock",
           "Semaphore"]

SLICE = 0.05


def sliced(attempt: Callable[[float], Any], timeout: float | None) -> Any:
    """``attempt(seconds)`` (a wait of at most ``seconds``) again and again until it returns a
    true value or ``timeout`` seconds passed (``None`` or negative: no end), with the budget's
    checkpoint before each; returns the last result."""
    end = None if timeout is None or timeout < 0 else time.monotonic() + timeout
    while True:
        checkpoint()
        wait = SLICE if end is None else min(SLICE, max(end - time.monotonic(), 0.0))
        got = attempt(wait)
        if got or (end is not None and time.monotonic() >= end):
            return got


class _Sliced:
    """What ``Lock`` and ``RLock`` share: a C lock whose blocking acquire goes in slices."""

    __slots__ = ("_lock",)
    _lock: Any

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        lock = self._lock
        if lock.acquire(False):
            return True
        if not blocking:
            return False
        return bool(sliced(lambda seconds: lock.acquire(True, seconds), timeout))

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<sliced {self._lock!r}>"


class Lock(_Sliced):
    """``threading.Lock`` whose waits go in slices."""

    __slots__ = ()

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()

    def locked(self) -> bool:
        return bool(self._lock.locked())


class RLock(_Sliced):
    """``threading.RLock`` whose waits go in slices (and that a ``Condition`` can use)."""

    __slots__ = ()

    def __init__(self) -> None:
        self._lock = _thread.RLock()

    # What ``threading.Condition`` uses of an RLock.
    def _is_owned(self) -> bool:
        return bool(self._lock._is_owned())

    def _release_save(self) -> Any:
        return self._lock._release_save()

    def _acquire_restore(self, state: Any) -> None:
        self._lock._acquire_restore(state)


class Condition(threading.Condition):
    """``threading.Condition`` whose waits go in slices (its lock is a sliced ``RLock``)."""

    def __init__(self, lock: Any = None) -> None:
        super().__init__(RLock() if lock is None else lock)  # type: ignore[arg-type]

    def wait(self, timeout: float | None = None) -> bool:
        return bool(sliced(super().wait, timeout))

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        end = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            left = SLICE if end is None else end - time.monotonic()
            if left <= 0:
                break
            checkpoint()
            super().wait(min(left, SLICE))
            result = predicate()
        return result


# The others wait on their ``_cond``: a sliced one is all they need.


class Semaphore(threading.Semaphore):
    """``threading.Semaphore`` whose waits go in slices."""

    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        self._cond = Condition(Lock())


class BoundedSemaphore(threading.BoundedSemaphore):
    """``threading.BoundedSemaphore`` whose waits go in slices."""

    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        self._cond = Condition(Lock())


class Event(threading.Event):
    """``threading.Event`` whose waits go in slices."""

    def __init__(self) -> None:
        super().__init__()
        self._cond = Condition(Lock())


class Barrier(threading.Barrier):
    """``threading.Barrier`` whose waits go in slices."""

    def __init__(self, parties: int, action: Callable[[], Any] | None = None,
                 timeout: float | None = None) -> None:
        super().__init__(parties, action, timeout)
        self._cond = Condition(Lock())
