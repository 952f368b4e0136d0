"""One shared watchdog thread that interrupts plugin code running over its time budget, safely.

``with time_limit(2.0): plugin_function()`` raises :class:`TimeBudgetExceeded` inside the calling
thread once two seconds have passed, even in ``while True: pass``. The exception is only ever
raised in the plugin's *own* code (its frames, not logging, the ORM, a lock's ``__exit__``, a
finalizer or anything else it called), and never once the block has exited:

- Python 3.12+: when a budget runs out, the watchdog turns on ``sys.monitoring`` line and jump
  events for the code objects of the plugin's frames on that thread's stack; the thread itself
  raises the exception from the event callback, at the next line or loop turn of the plugin's
  own code. Code that is not the plugin's is never instrumented and pays nothing.
- Python 3.11: the watchdog delivers an asynchronous exception (``PyThreadState_SetAsyncExc``)
  only while the thread stands at a safe point of the plugin's own code (a backward jump or a
  function entry, where the exception is raised at once when the thread resumes) and checks
  again right after delivering; otherwise it waits for such a point.
- Both: the plugin's next call into the Platform API raises it at the API's door
  (:func:`checkpoint`), before the API takes any lock.

"Own code" is code from the directory of the guarded function (``own=``), or, for a block
without one, any code outside the standard library, installed packages and course_plugins.
A budget that cannot be enforced safely (the thread stays in library code, e.g. blocked in C)
is reported once as a warning on ``course_plugins.watchdog`` and enforced as soon as the plugin's
code runs again. The exception is delivered again every ``REPEAT_INTERVAL`` seconds until the
block exits, so code that catches it (``except BaseException``) cannot keep running.

What an in-process limit cannot do: a long call into C (a catastrophic regex, ``time.sleep``, a
blocking socket read) finishes before it is interrupted. Hard guarantees need a separate process
(``core.sandbox``, isolated plugins).

There is exactly one watchdog thread per process (started on first use, restarted after
``fork``). It looks at the open limits every ``TICK`` seconds while any is open and sleeps when
none has been for a while, so entering a limit costs no thread and no lock (a dict insert) and
leaving one costs a lock only when it fired. A hook run uses one :class:`RunGuard` for all its
functions: per call two attribute stores, no clock read (the watchdog notices a new call by
its registration, at most ``TICK`` late).
"""

from __future__ import annotations

import contextlib
import ctypes
import dis
import gc
import logging
import math
import os
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator
from types import CodeType, FrameType, TracebackType
from typing import Any

__all__ = [
    "REPEAT_INTERVAL",
    "RUN_CODES",
    "RUN_FILENAME",
    "TICK",
    "RunGuard",
    "TimeBudgetExceeded",
    "TimeLimit",
    "checkpoint",
    "is_library_code",
    "is_run_code",
    "own_roots",
    "time_limit",
]

logger = logging.getLogger("course_plugins.watchdog")

REPEAT_INTERVAL = 0.05
"""Seconds between two deliveries of the exception while the block has not exited yet."""

TICK = 0.005
"""Seconds between two looks at the open limits (the latest a deadline can be noticed)."""

IDLE_AFTER = 2.0
"""Seconds without any open limit after which the watchdog thread sleeps until the next one."""

class TimeBudgetExceeded(BaseException):
    """A block ran over its time budget.

    A ``BaseException`` so that a plugin's ``except Exception`` cannot swallow it. ``time_limit``
    is set to the :class:`TimeLimit` (or :class:`RunGuard`) that fired, so callers can tell their
    limit from an outer one.
    """

    time_limit: Any = None

    def __str__(self) -> str:
        base = super().__str__()
        if base:
            return base
        seconds = getattr(self.time_limit, "budget_seconds", None)
        if seconds:
            return f"time budget of {seconds:g}s exceeded"
        return "time budget exceeded"


# -- what is the plugin's own code ---------------------------------------------------------------


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # course_plugins
    roots.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return tuple(sorted(os.path.join(r, "") for r in roots if r))


_LIBRARY = _library_roots()


def own_roots(fn: Callable[..., Any]) -> tuple[str, ...] | None:
    """The directories holding ``fn``'s code (a plugin's folder): its "own code" for budgets.

    ``None`` when ``fn`` has no Python code of its own (then the library rule applies).
    """
    target: Any = fn
    for _ in range(8):  # unwrap partials, bound methods and decorators
        inner = getattr(target, "func", None) or getattr(target, "__func__", None)
        inner = inner or getattr(target, "__wrapped__", None)
        if inner is None:
            break
        target = inner
    code = getattr(target, "__code__", None)
    if code is None:
        call = type(target).__dict__.get("__call__")
        code = getattr(call, "__code__", None)
    filename = getattr(code, "co_filename", "")
    if not filename or filename.startswith("<") or filename.startswith(_LIBRARY):
        return None
    return (os.path.join(os.path.dirname(os.path.abspath(filename)), ""),)


def is_library_code(code: CodeType) -> bool:
    """Whether ``code`` is the standard library's, an installed package's or course_plugins'
    (never a plugin's: its files live in the site's plugin folders)."""
    return code.co_filename.startswith(_LIBRARY)


def _is_own(code: CodeType, own: tuple[str, ...] | None) -> bool:
    filename = code.co_filename
    if own is not None:
        return filename.startswith(own)
    return not filename.startswith("<") and not filename.startswith(_LIBRARY)


# -- the two kinds of watched blocks -------------------------------------------------------------


class _Watched:
    """What the watchdog needs of a watched block: thread, boundary frame, own code, state.

    The rarely changed fields are class-level defaults, so making one (a hook run makes one)
    costs a few attribute stores.
    """

    thread_id = 0
    frame: FrameType | None = None
    own: tuple[str, ...] | None = None
    exc_type: type[BaseException] = TimeBudgetExceeded
    fired = False
    fired_class: type[BaseException] | None = None
    next_delivery = 0.0
    done = False
    codes: set[CodeType] | None = None
    reported = False
    budget_seconds: float | None = None

    def live(self) -> bool:
        """Whether the exception may still be raised (the fired call is still running)."""
        return not self.done


class TimeLimit(_Watched):
    """Context manager form of :func:`time_limit`; ``fired`` tells whether the budget ran out."""

    def __init__(
        self,
        seconds: float | None,
        exc_type: type[BaseException] = TimeBudgetExceeded,
        own: tuple[str, ...] | None = None,
    ) -> None:
        self.exc_type = exc_type
        self.seconds = self.budget_seconds = seconds
        self.own = own
        self.deadline = 0.0

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
        # The block swallowed the interruption (or turned it into another error), or the budget
        # ran out while the thread was not in its own code: the caller must still learn that
        # the budget was spent.
        raise (self.fired_class or _class_for(self))() from exc

    def stop_clock(self) -> float | None:
        """Stop counting time against this limit (it cannot fire until ``restart_clock``);
        returns what ``restart_clock`` needs, ``None`` when there is nothing to stop (no
        budget, or it already ran out: time spent from now on cannot undo that)."""
        if not self.seconds or self.fired or self.done:
            return None
        left, self.deadline = self.deadline - _monotonic(), math.inf
        return left

    def restart_clock(self, left: float | None) -> None:
        """Count time again, with ``left`` seconds to go (what ``stop_clock`` returned)."""
        if left is not None:
            self.deadline = _monotonic() + left

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """The clock of this limit stopped while the ``with`` block runs: time spent there
        is not charged to the budget (the site's own work that the plugin asked for once,
        such as the original under around advice)."""
        left = self.stop_clock()
        try:
            yield
        finally:
            self.restart_clock(left)

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
            if self.fired or self.codes:
                _disarm(self)
        self.frame = None


def time_limit(
    seconds: float | None,
    exc_type: type[BaseException] = TimeBudgetExceeded,
    own: tuple[str, ...] | None = None,
) -> TimeLimit:
    """Return a context manager that raises ``exc_type`` in this thread after ``seconds``.

    ``None`` or ``0`` means no limit. ``exc_type`` must be constructible without arguments.
    ``own``: the directories of the code that may be interrupted (see :func:`own_roots`);
    default: anything outside the standard library, installed packages and course_plugins.
    Nested limits each keep their own deadline, so the earliest one fires first. The exception
    raised out of the block carries ``time_limit`` (the :class:`TimeLimit` that fired).
    """
    return TimeLimit(seconds, exc_type, own)


RUN_CODES: set[CodeType] = set()
"""Code objects of the frames that call registered functions (the engine's loops add theirs)."""

RUN_FILENAME = "<hook run>"
"""The file name of every generated hook run (``core._hook_runs``)."""


def is_run_code(code: CodeType) -> bool:
    """Whether ``code`` is a hook run's: a loop of the engine or a generated run."""
    return code in RUN_CODES or code.co_filename == RUN_FILENAME


class RunGuard(_Watched):
    """The budget of every function of one hook run: made once per run, armed once per call.

    The loop sets ``reg`` (the registration being called: its ``budget()`` and function tell
    the watchdog the seconds and the plugin's own code) before each call and clears it after:
    one attribute store each. A run calls each registration once, so ``reg`` also tells one
    call from the next. When a call runs over, the watchdog records it in ``fired_reg`` and
    interrupts the plugin's own code with an exception whose ``time_limit`` is this guard. The
    loop then calls :meth:`settle` (the lock is taken only then). The run's frame, the boundary
    of what may be interrupted, is found on the stack when a budget fires (see ``_own_frames``),
    so a run does not keep its frame object.
    """

    reg: Any = None
    seen: Any = None  # the call the watchdog is timing (its registration)
    seen_at = 0.0
    fired_reg: Any = None  # the call that ran over

    def __init__(self) -> None:
        self.thread_id = _get_ident()
        _open[self] = None
        if _watchdog.sleeping:
            _watchdog.wake()

    def live(self) -> bool:
        return not self.done and self.reg is not None and self.fired_reg is self.reg

    def settle(self, reg: Any) -> bool:
        """After the call of ``reg``, during which the budget fired: stop interrupting, and
        return whether the overrun was that call's (``True``: count it as a timeout)."""
        with _fire_lock:
            ours = self.fired_reg is reg
            _disarm(self)
            self.fired_reg = None
            self.fired = False
        return ours

    def close(self) -> None:
        """End of the run: stop watching."""
        self.done = True
        _open.pop(self, None)
        if self.fired_reg is not None or self.codes:
            _disarm_closed(self)


def _class_for(limit: _Watched) -> type[BaseException]:
    """A subclass of the limit's exception type that names the limit (``time_limit``).

    The exception is raised from a class (instantiated in the interrupted thread); a class per
    fired limit (made once, when it fires) lets every instance say which limit it came from,
    even one raised while ``__exit__`` was still running.
    """
    base = limit.exc_type
    return type(
        base.__name__,
        (base,),
        {"time_limit": limit, "__module__": base.__module__, "__qualname__": base.__qualname__},
    )


def _tag(exc: BaseException, limit: _Watched) -> None:
    # Exception classes with __slots__ cannot be tagged; they still propagate.
    with contextlib.suppress(AttributeError):
        exc.time_limit = limit  # type: ignore[attr-defined]


_get_ident = threading.get_ident
_getframe = sys._getframe
_monotonic = time.monotonic


def _current_frames() -> dict[int, FrameType]:
    """``sys._current_frames()`` with the cyclic collector paused.

    It allocates while holding the runtime's thread-list lock; on CPython before 3.12 a
    collection triggered there can run a finalizer that needs the same lock (a thread state being
    deleted), and every thread of the process then waits forever (cpython#106883; seen here: the
    watchdog stuck in ``gc_collect_main`` under ``_PyThread_CurrentFrames`` while a trusted
    plugin's hook waited for the interpreter lock). The collector is only paused if it was on.
    """
    if not gc.isenabled():
        return sys._current_frames()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        gc.enable()


_open: dict[_Watched, None] = {}  # the limits and run guards whose block is running, any thread
_fire_lock = threading.Lock()


# -- delivering the exception safely -------------------------------------------------------------

_MONITORING: Any = getattr(sys, "monitoring", None)
_TOOL: int | None = None
_armed: dict[int, _Watched] = {}  # thread id -> the fired limit its own code must raise for
_EVENTS = 0

if _MONITORING is not None:  # Python 3.12+
    for _tool in (4, 3, 2):
        if _MONITORING.get_tool(_tool) is None:
            _MONITORING.use_tool_id(_tool, "course_plugins budgets")
            _TOOL = _tool
            break
    if _TOOL is not None:
        _EVENTS = _MONITORING.events.LINE | _MONITORING.events.JUMP

        def _on_event(code: CodeType, *_: Any) -> None:
            watched = _armed.get(_get_ident())
            if watched is None or watched.codes is None or code not in watched.codes:
                return
            del _armed[watched.thread_id]  # once; the watchdog re-arms after REPEAT_INTERVAL
            if watched.live() and watched.fired_class is not None:
                raise watched.fired_class()

        _MONITORING.register_callback(_TOOL, _MONITORING.events.LINE, _on_event)
        _MONITORING.register_callback(_TOOL, _MONITORING.events.JUMP, _on_event)

# Python 3.11: instructions where a thread that waits for the GIL raises a pending asynchronous
# exception as soon as it runs again, before anything else: backward jumps and function entry.
_SAFE_OPS = frozenset(
    dis.opmap[name]
    for name in (
        "JUMP_BACKWARD",
        "POP_JUMP_BACKWARD_IF_FALSE",
        "POP_JUMP_BACKWARD_IF_TRUE",
        "POP_JUMP_BACKWARD_IF_NONE",
        "POP_JUMP_BACKWARD_IF_NOT_NONE",
        "RESUME",
    )
    if name in dis.opmap
)

# Two prototypes of the same C function: one passes an exception class, the other NULL (which
# clears a pending exception; passing None would set Py_None as the exception).
_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


def _own_frames(watched: _Watched) -> list[FrameType] | None:
    """The frames of own code between the top of the thread's stack and the block's boundary
    (innermost first); ``None`` when the boundary frame is no longer on the stack.

    A :class:`RunGuard`'s boundary is the innermost hook-run frame (:func:`is_run_code`): the
    run itself, or a run nested in the guarded call, which only narrows what may be interrupted
    (an enclosing budget's exception passes through the nested run unchanged).
    """
    frame = _current_frames().get(watched.thread_id)
    own: list[FrameType] = []
    boundary = watched.frame
    while frame is not None:
        code = frame.f_code
        if _is_own(code, watched.own):
            own.append(frame)
        if frame is boundary or (boundary is None and is_run_code(code)):
            return own
        frame = frame.f_back
    return None


def _deliver(watched: _Watched) -> str:
    """Try to interrupt ``watched``'s thread in its own code (``_fire_lock`` held).

    Returns ``"armed"``/``"delivered"``, ``"waiting"`` (not in own code now: try later) or
    ``"gone"`` (the block is no longer running).
    """
    frames = _own_frames(watched)
    if frames is None:
        return "gone"
    if _TOOL is not None:
        if not frames:
            return "waiting"
        codes = watched.codes if watched.codes is not None else set()
        for frame in frames:
            if frame.f_code not in codes:
                _MONITORING.set_local_events(_TOOL, frame.f_code, _EVENTS)
                codes.add(frame.f_code)
        watched.codes = codes
        _armed[watched.thread_id] = watched
        return "armed"
    _armed[watched.thread_id] = watched  # the plugin's next Platform API call raises it
    top = _current_frames().get(watched.thread_id)
    if not frames or top is not frames[0]:
        return "waiting"
    lasti = top.f_lasti
    if lasti < 0 or top.f_code.co_code[lasti] not in _SAFE_OPS:
        return "waiting"
    assert watched.fired_class is not None
    _set_async_exc(watched.thread_id, watched.fired_class)
    again = _current_frames().get(watched.thread_id)
    if again is not top or again.f_lasti != lasti:  # it moved on meanwhile: take it back
        _clear_async_exc(watched.thread_id, None)
        return "waiting"
    return "delivered"


def checkpoint() -> None:
    """Raise the budget's exception here if this thread's guarded call has run over.

    Called by the Platform API at the entry of its methods: a plugin looping on the API is
    interrupted at its next call, in its own frame, before the API takes any lock. (On Python
    3.11 this is how a plugin that spends its time inside what it calls gets interrupted.)
    """
    watched = _armed.get(_get_ident())
    if watched is not None and watched.fired_class is not None and watched.live():
        _armed.pop(watched.thread_id, None)  # once; the watchdog re-arms after REPEAT_INTERVAL
        raise watched.fired_class()


def _disarm(watched: _Watched) -> None:
    """Stop interrupting for ``watched`` (``_fire_lock`` held): drop a pending exception and
    the events on its code objects that no other armed block needs."""
    if _armed.get(watched.thread_id) is watched:
        del _armed[watched.thread_id]
    codes, watched.codes = watched.codes, None
    if codes and _TOOL is not None:
        still = set()
        for other in list(_armed.values()):
            if other.codes:
                still |= other.codes
        for other in list(_open):
            if other is not watched and other.codes:
                still |= other.codes
        for code in codes - still:
            _MONITORING.set_local_events(_TOOL, code, 0)
    if _TOOL is None and watched.fired:
        # Drop an exception delivered but not yet raised, so it cannot escape the block.
        _clear_async_exc(watched.thread_id, None)


def _disarm_closed(watched: _Watched) -> None:
    """:func:`_disarm` for a block that has just closed (takes the lock)."""
    with _fire_lock:
        _disarm(watched)


def _report(watched: _Watched) -> None:
    reg = getattr(watched, "reg", None)
    what = getattr(reg, "name", None) or "a guarded block"
    frame = _current_frames().get(watched.thread_id)
    where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
    logger.warning(
        "%s ran over its time budget of %ss but is not in its own code now (at %s): it is "
        "interrupted as soon as its own code runs again, never inside what it called",
        what,
        f"{watched.budget_seconds:g}" if watched.budget_seconds else "?",
        where,
    )


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
        reports = []
        for watched in list(_open):  # a copy: threads add and remove limits meanwhile
            if isinstance(watched, RunGuard):
                if not self._due_run(watched, now):
                    continue
            else:
                due = watched.next_delivery if watched.fired else watched.deadline  # type: ignore[attr-defined]
                if now < due:
                    continue
            with _fire_lock:
                if watched.done:
                    continue
                if watched.fired_class is None:
                    watched.fired_class = _class_for(watched)
                watched.fired = True
                if isinstance(watched, RunGuard) and (
                    watched.reg is None or watched.reg is not watched.fired_reg
                ):
                    continue
                outcome = _deliver(watched)
                if outcome == "gone":
                    watched.done = True
                    _open.pop(watched, None)
                    _disarm(watched)
                    continue
                watched.next_delivery = now + (REPEAT_INTERVAL if outcome != "waiting" else TICK)
                if outcome == "waiting" and not watched.reported:
                    watched.reported = True
                    reports.append(watched)
        for watched in reports:  # outside the lock: logging takes its own locks
            _report(watched)

    @staticmethod
    def _due_run(guard: RunGuard, now: float) -> bool:
        reg = guard.reg
        if reg is None:
            return False
        if guard.fired_reg is reg:  # fired: deliver again, or retry a safe delivery
            return now >= guard.next_delivery
        if reg is not guard.seen:  # a new call: start timing it
            guard.seen = reg
            guard.seen_at = now
            return False
        budget = reg.budget()
        if not budget or now - guard.seen_at < budget:
            return False
        guard.fired_reg = reg
        guard.budget_seconds = budget
        guard.reported = False
        # Read when it registered: this thread never looks at a plugin's callable (which
        # could run the plugin's code here, and stop every budget of the process).
        guard.own = reg.own_code()
        guard.fired_class = None  # a class per fired call: its exception names this guard
        return True

    def after_fork(self) -> None:
        # Only the forking thread survives a fork: no watchdog thread in the child yet.
        global _fire_lock
        _fire_lock = threading.Lock()
        me = _get_ident()
        for limit in list(_open):  # other threads' limits: those threads do not exist here
            if limit.thread_id != me:
                del _open[limit]
        for tid in list(_armed):
            if tid != me:
                del _armed[tid]
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
        "armed": len(_armed),
    }
