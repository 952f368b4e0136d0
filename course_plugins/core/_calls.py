"""The hot loops of the engine: calling registered functions with isolation, budgets and stats.

Kept tiny and in one place, like pluggy's ``_callers.py``. Every registered callable is wrapped in
a :class:`Registration`; its ``mode`` decides how it is called: ``PLAIN`` (platform code: a bare
call, timed), ``GUARDED`` (a plugin's function: time budget and health accounting) or ``REMOVED``
(taken out while a run was in progress: skipped, so a removal takes effect at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import types
from collections.abc import Awaitable, Callable, Iterator
from time import perf_counter
from typing import Any, TypeVar, cast

from course_plugins.core._engine_loop import run_coroutine_sync
from course_plugins.core.health import health
from course_plugins.core.options import options
from course_plugins.core.watchdog import (
    RUN_CODES,
    RunGuard,
    TimeBudgetExceeded,
    TimeLimit,
    own_roots,
)
from course_plugins.exceptions import PluginFailedClosed

__all__ = [
    "ASYNC",
    "AsyncBudgetExceeded",
    "GUARDED",
    "PLAIN",
    "REMOVED",
    "RUN_CODES",
    "SKIPPED",
    "VETO_EXCEPTIONS",
    "CallStats",
    "Registration",
    "call_guarded",
    "call_guarded_async",
    "callable_name",
    "fn_key",
    "guarded_failed",
    "is_async_callable",
    "isolate",
    "overran",
    "owner_name",
    "registration_key",
    "run_abnormal",
    "run_filter",
    "run_normal",
    "timed",
    "with_budget",
]

T = TypeVar("T")


def _veto_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ValueError]
    try:  # importing django.core.exceptions needs no configured settings
        from django.core.exceptions import PermissionDenied, ValidationError
    except ImportError:  # pragma: no cover - Django is a dependency, but the core runs without
        pass
    else:
        types += [ValidationError, PermissionDenied]
    return tuple(types)


VETO_EXCEPTIONS: tuple[type[BaseException], ...] = _veto_types()
"""Exceptions a hook function or advice raises to refuse; they reach the caller unchanged."""

PLAIN, GUARDED, ASYNC, REMOVED = 0, 1, 2, -1

SKIPPED: Any = object()
"""Returned by ``call_guarded`` when the function failed and was isolated."""

_SAMPLES = 64  # power of two: ring index is ``timed & (_SAMPLES - 1)``
_MASK = _SAMPLES - 1


class CallStats:
    """Calls, errors, timeouts and timing of one registration; bounded memory (a 64-sample ring).

    ``calls`` counts every invocation (failed ones included), and so do ``errors`` and
    ``timeouts``; only the timing is sampled: one call in 16 is timed (``timed``), one run in 16
    of a generated hook run, to keep calls cheap.
    """

    __slots__ = ("calls", "errors", "timeouts", "timed", "total", "samples")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.timeouts = 0
        self.timed = 0
        self.total = 0.0
        self.samples = [0.0] * _SAMPLES

    def record(self, seconds: float) -> None:
        """Count one call that took ``seconds``."""
        self.calls += 1
        n = self.timed
        self.samples[n & _MASK] = seconds
        self.timed = n + 1
        self.total += seconds

    def sample(self, seconds: float) -> None:
        """Add the duration of a call already counted in ``calls``."""
        n = self.timed
        self.samples[n & _MASK] = seconds
        self.timed = n + 1
        self.total += seconds

    @property
    def mean_ms(self) -> float:
        """Mean duration of the timed calls, in milliseconds (0.0 before the first one)."""
        return self.total / self.timed * 1000.0 if self.timed else 0.0

    @property
    def p95_ms(self) -> float:
        """95th percentile of the last 64 timed calls' durations, in milliseconds."""
        n = min(self.timed, _SAMPLES)
        if not n:
            return 0.0
        window = sorted(self.samples[:n])
        return window[min(n - 1, int(0.95 * n))] * 1000.0

    def as_dict(self) -> dict[str, Any]:
        """Return ``calls, errors, timeouts, mean_ms, p95_ms`` (rounded to microseconds)."""
        return {
            "calls": self.calls,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "mean_ms": round(self.mean_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
        }


def callable_name(fn: Callable[..., Any]) -> str:
    """Return ``module.qualname`` of ``fn`` (what logs and inspectors show)."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    module = getattr(target, "__module__", None) or "?"
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{qualname}"


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns a coroutine (``async def``, partials and callables of one)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if type(fn) is types.FunctionType:  # the common case, without inspect's unwrapping
        if fn.__code__.co_flags & inspect.CO_COROUTINE:
            return True
        if not hasattr(fn, "__wrapped__") and not hasattr(fn, "_is_coroutine_marker"):
            return False
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - instances with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


#: Callables whose hash and equality are the interpreter's own, by identity (a bound builtin
#: method compares its object by identity too).
_BY_IDENTITY = frozenset({
    types.FunctionType, types.BuiltinFunctionType, types.MethodWrapperType,
    types.WrapperDescriptorType, types.MethodDescriptorType, types.ClassMethodDescriptorType,
    functools.partial,
})
_BOUND = object()  # first item of a bound method's key


def fn_key(fn: Callable[..., Any]) -> Any:
    """What identifies a registered function in an index, found without running any code of it.

    The function itself when its type compares by identity in C (functions, builtins, partials),
    a bound method by its object's identity and its function's key (``obj.method`` is a new
    object at each access), any other callable by ``id``: an object of a plugin may define
    ``__hash__`` and ``__eq__``, and the indexes are looked up with the engine's locks held,
    where no code of a plugin may run (it could stall every thread waiting for the lock, and a
    time budget firing there would leave the index half changed). Keys compare without calling
    any code of a plugin either.
    """
    kind = type(fn)
    if kind in _BY_IDENTITY:
        return fn
    if kind is types.MethodType:
        bound = cast(types.MethodType, fn)
        return (_BOUND, id(bound.__self__), fn_key(bound.__func__))
    return id(fn)


def check_priority(priority: Any, where: str) -> int:
    """``priority`` if it is an int (what orders registrations), else raise ``TypeError`` before
    anything is registered: one value that does not compare with ints would break the order of
    every registration on the hook or target."""
    if type(priority) is not int:
        raise TypeError(f"{where}: priority must be an int, got {type(priority).__name__}")
    return priority


def owner_name(owner: str) -> str:
    """The plugin name of an owner id (``"name@version"`` -> ``"name"``)."""
    return owner.partition("@")[0]


def registration_key(fn: Callable[..., Any], owner: str | None) -> str:
    """The stable key of ``fn`` registered by ``owner``: the same in every process and reload.

    ``"<plugin name>:<qualname>"`` for a plugin's function, ``":<module>.<qualname>"`` for
    platform code (``owner`` ``None``). Never derived from memory addresses.
    """
    if owner is None:
        return f":{callable_name(fn)}"
    target = fn.func if isinstance(fn, functools.partial) else fn
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{owner_name(owner)}:{qualname}"


class Registration:
    """One function registered on a hook (or bus, or advice target): what to call, in which
    order, for whom.

    ``key`` names it stably (:func:`registration_key`, or the key given at registration);
    ``plugin`` is the owner's plugin name (``None`` for platform code). ``priority`` is the
    effective priority (an operator's override, else ``base_priority``, the one registered);
    ``enabled`` is ``False`` while an operator switched it off; ``shadow`` marks a plugin in
    shadow mode (its functions run only under an observer, on a copy, never applied).
    ``fail_closed`` is the registration's own choice (``None``: the hook's default) and
    ``closed`` the effective one: an error or overrun of a closed function is a veto.
    """

    __slots__ = (
        "fn",
        "priority",
        "base_priority",
        "owner",
        "plugin",
        "timeout",
        "stats",
        "seq",
        "mode",
        "is_async",
        "name",
        "key",
        "enabled",
        "shadow",
        "fail_closed",
        "closed",
        "fkey",
        "_own",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        priority: int = 10,
        owner: str | None = None,
        timeout: float | None = None,
        stats: CallStats | None = None,
        seq: int = 0,
        *,
        key: str | None = None,
        shadow: bool = False,
        fail_closed: bool | None = None,
    ) -> None:
        self.fn = fn
        self.priority = priority
        self.base_priority = priority
        self.owner = owner
        self.plugin = owner_name(owner) if owner is not None else None
        self.timeout = timeout
        self.stats = stats if stats is not None else CallStats()
        self.seq = seq
        self.is_async = is_async_callable(fn)
        self.mode = self.call_mode()
        self.name = callable_name(fn)
        self.key = key if key else registration_key(fn, owner)
        self.enabled = True
        self.shadow = shadow
        self.fail_closed = fail_closed
        self.closed = bool(fail_closed)
        # Read from ``fn`` now, by the registering code (a plugin's, under its budget), never
        # later by the engine under a lock or by the watchdog's thread: looking at a plugin's
        # callable may run its code (a property named ``func``, a ``__module__`` one...).
        self.fkey = fn_key(fn)
        self._own = (own_roots(fn),)

    def call_mode(self) -> int:
        """``PLAIN`` for platform code without a budget (the bare call), ``ASYNC`` for an
        ``async def`` (run to completion under its budget), else ``GUARDED``."""
        if self.is_async:
            return ASYNC
        return PLAIN if self.owner is None and self.timeout is None else GUARDED

    def own_code(self) -> tuple[str, ...] | None:
        """The directories of the function's own code: what its budget may interrupt."""
        return self._own[0]

    def replace(
        self,
        priority: int,
        owner: str | None,
        timeout: float | None,
        shadow: bool,
        fail_closed: bool | None,
    ) -> None:
        """Take new settings in place (re-adding the same function): a run in progress keeps it.

        Only the owner's choices change: an operator's priority override stays in force.
        """
        self.priority = self.base_priority = priority  # the hook re-applies an override
        self.owner = owner
        self.plugin = owner_name(owner) if owner is not None else None
        self.timeout = timeout
        self.shadow = shadow
        self.fail_closed = fail_closed
        if self.mode != REMOVED:
            self.mode = self.call_mode()

    @property
    def sort_key(self) -> tuple[int, int]:
        """Lower priority first; equal priorities in registration order."""
        return (self.priority, self.seq)

    def budget(self) -> float | None:
        """Seconds this call may take: its own timeout, else the plugin default, else none."""
        if self.timeout is not None:
            return self.timeout
        return options.hook_timeout if self.owner is not None else None

    def __repr__(self) -> str:
        return (
            f"Registration({self.key!r}, priority={self.priority}, owner={self.owner!r}, "
            f"timeout={self.timeout!r})"
        )


def isolate(
    reg: Registration,
    exc: BaseException,
    where: str,
    kind: str = "error",
    *,
    counted: bool = False,
) -> None:
    """Count ``exc`` against ``reg`` and report it; re-raise it in strict mode.

    ``counted``: the call is already in ``stats.calls``. Raises ``exc`` when ``options.strict``
    is set; otherwise logs it through ``health``. Then, for a fail-closed registration
    (``reg.closed``), raises :class:`PluginFailedClosed` (a veto) from ``exc``.
    """
    if not counted:
        reg.stats.calls += 1
    if kind == "timeout":
        reg.stats.timeouts += 1
    else:
        reg.stats.errors += 1
    if options.strict:
        raise exc
    shown = health.record_failure(
        reg.owner, exc, where=f"{where}: {reg.name}", kind=kind, seconds=reg.budget()
    )
    if reg.closed:
        raise PluginFailedClosed(reg.owner, where, reg.key, shown) from shown


class AsyncBudgetExceeded(TimeBudgetExceeded):
    """An ``async`` function ran over its budget (cancelled by the event loop, not interrupted)."""


async def with_budget(
    coro: Awaitable[T], budget: float | None, own: tuple[str, ...] | None = None,
    clock: Any = None,
) -> T:
    """Await ``coro`` within ``budget`` seconds: ``asyncio.timeout`` ends it at an ``await``
    past the budget, and each of its steps runs under a ``TimeLimit`` of what is left (see
    ``_Steps``), so one that spins without awaiting is cut off too. Raises
    ``AsyncBudgetExceeded`` past the budget. ``clock``: an object whose ``stopped`` is set to
    the budget's (``_Steps.stopped``) before ``coro`` runs."""
    if not budget:
        return await coro
    try:
        async with asyncio.timeout(budget) as scope:
            steps = _Steps(coro, budget, own, scope)
            if clock is not None:
                clock.stopped = steps.stopped
            return await steps
    except TimeoutError:
        if scope.expired():
            raise AsyncBudgetExceeded(f"time budget of {budget:g}s exceeded") from None
        raise


class _Steps:
    """Awaits a plugin's coroutine one step at a time, each step (from one ``await`` to the
    next) under a ``TimeLimit`` of what is left of its budget, interrupting only the plugin's
    own frames (``own``): a loop that never awaits held the event loop's thread, and every
    coroutine waiting on it, for ever, since ``asyncio.timeout`` acts only at an ``await``."""

    __slots__ = ("budget", "coro", "deadline", "limit", "own", "scope")

    def __init__(self, coro: Awaitable[T], budget: float, own: tuple[str, ...] | None,
                 scope: asyncio.Timeout | None = None) -> None:
        self.coro = coro
        self.budget = budget
        self.deadline = perf_counter() + budget
        self.own = own
        self.scope = scope
        self.limit: TimeLimit | None = None

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """The budget's clock stopped while the ``with`` block runs, over any number of steps
        (``TimeLimit.stopped`` for a coroutine): the deadline of the steps, of the step running
        now and of ``asyncio.timeout`` move on by the time the block took."""
        limit = self.limit
        left = limit.stop_clock() if limit is not None else None
        if left is None:  # no budget, or it ran out already
            yield
            return
        self.deadline = math.inf
        if self.scope is not None:
            self.scope.reschedule(None)
        try:
            yield
        finally:
            self.deadline = perf_counter() + left
            if self.scope is not None:
                self.scope.reschedule(asyncio.get_running_loop().time() + left)
            current = self.limit  # the step running now (may be a later one than at the start)
            if current is not None:
                current.restart_clock(left)

    def __await__(self) -> Any:
        steps = self.coro.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            left = self.deadline - perf_counter()
            limit = self.limit = TimeLimit(max(left, 0.001), own=self.own)
            try:
                with limit:
                    out = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value
            except TimeBudgetExceeded as exc:
                if exc.time_limit is not limit:
                    raise  # an enclosing budget's
                limit.close()
                raise AsyncBudgetExceeded(f"time budget of {self.budget:g}s exceeded") from None
            try:
                value, error = (yield out), None
            except BaseException as thrown:  # the loop's (a cancellation): into the coroutine
                value, error = None, thrown


def call_guarded(
    reg: Registration,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    where: str,
    reraise: bool = False,
) -> Any:
    """Call a non-plain registration from sync code.

    Returns its result, or ``SKIPPED`` when it failed and was isolated. Raises a veto unchanged,
    an isolated error in strict mode, and any interruption that is not this call's own budget.
    With ``reraise`` a failure is still logged and counted, then raised (a timeout as
    ``TimeoutError``): for callers that retry, such as the background worker.
    """
    budget = reg.timeout
    if budget is None and reg.owner is not None:
        budget = options.hook_timeout
    limit: TimeLimit | None = None
    t0 = perf_counter()
    try:
        if reg.is_async:
            result = run_coroutine_sync(
                with_budget(reg.fn(*args, **kwargs), budget, reg.own_code())
            )
        else:
            limit = TimeLimit(budget, own=reg.own_code())
            with limit:
                result = reg.fn(*args, **kwargs)
    except VETO_EXCEPTIONS:
        reg.stats.record(perf_counter() - t0)
        raise
    except AsyncBudgetExceeded as exc:
        isolate(reg, exc, where, "timeout")
        if reraise:
            raise TimeoutError(str(exc)) from exc
        return SKIPPED
    except TimeBudgetExceeded as exc:
        if limit is None or exc.time_limit is not limit:
            raise  # an enclosing budget ran out, not this function's
        limit.close()
        isolate(reg, exc, where, "timeout")
        if reraise:
            raise TimeoutError(str(exc)) from exc
        return SKIPPED
    except Exception as exc:
        isolate(reg, exc, where)
        if reraise:
            raise
        return SKIPPED
    reg.stats.record(perf_counter() - t0)
    if reg.owner is not None:
        health.record_success(reg.owner)
    return result


async def call_guarded_async(
    reg: Registration, args: tuple[Any, ...], kwargs: dict[str, Any], where: str
) -> Any:
    """Call any registration from async code; same contract as :func:`call_guarded`."""
    if not reg.is_async:
        if reg.mode == PLAIN:
            t0 = perf_counter()
            try:
                result = reg.fn(*args, **kwargs)
            except VETO_EXCEPTIONS:
                reg.stats.calls += 1
                raise
            except Exception as exc:
                isolate(reg, exc, where)
                return SKIPPED
            reg.stats.record(perf_counter() - t0)
            return result
        return call_guarded(reg, args, kwargs, where)
    t0 = perf_counter()
    try:
        result = await with_budget(reg.fn(*args, **kwargs), reg.budget(), reg.own_code())
    except VETO_EXCEPTIONS:
        reg.stats.record(perf_counter() - t0)
        raise
    except AsyncBudgetExceeded as exc:
        isolate(reg, exc, where, "timeout")
        return SKIPPED
    except Exception as exc:
        isolate(reg, exc, where)
        return SKIPPED
    reg.stats.record(perf_counter() - t0)
    if reg.owner is not None:
        health.record_success(reg.owner)
    return result


# The three loops, pluggy style. Every call is counted; one in 16 is timed (``timed``). Platform
# code (``PLAIN``) is a bare call. A plugin's sync function (``GUARDED``) runs under the run's one
# ``RunGuard``: per call two attribute stores, the lock only if its budget fired. ``regs`` is an
# immutable snapshot, so functions added or removed during the run never shift the iteration
# (the WordPress remove-in-handler bug); a removed one (``REMOVED``) is skipped at once.


def run_normal(
    regs: tuple[Registration, ...], args: tuple[Any, ...], kwargs: dict[str, Any], where: str
) -> list[Any]:
    """Call every function; return the list of their results in call order."""
    results = []
    guard = None
    try:
        for reg in regs:
            mode = reg.mode
            stats = reg.stats
            if mode == PLAIN:
                n = stats.calls
                stats.calls = n + 1
                if n & _SAMPLE_MASK:
                    try:
                        result = reg.fn(*args, **kwargs)
                    except VETO_EXCEPTIONS:
                        raise
                    except Exception as exc:
                        isolate(reg, exc, where, counted=True)
                        continue
                else:
                    result = timed(reg, args, kwargs, where)
                    if result is SKIPPED:
                        continue
            elif mode == GUARDED:
                if guard is None:
                    guard = RunGuard()
                n = stats.calls
                stats.calls = n + 1
                t0 = 0.0 if n & _SAMPLE_MASK else perf_counter()
                guard.reg = reg
                try:
                    result = reg.fn(*args, **kwargs)
                except BaseException as exc:
                    guard.reg = None
                    guarded_failed(guard, reg, exc, where)
                    continue
                guard.reg = None
                if guard.fired_reg is not None and guard.settle(reg):
                    overran(reg, where)
                    continue
                if t0:
                    stats.sample(perf_counter() - t0)
                if reg.owner in _failing:
                    health.record_success(reg.owner)
            elif mode == REMOVED:
                continue
            else:
                result = call_guarded(reg, args, kwargs, where)
                if result is SKIPPED:
                    continue
            results.append(result)
    finally:
        if guard is not None:
            guard.close()
    return results


def run_abnormal(
    regs: tuple[Registration, ...], args: tuple[Any, ...], kwargs: dict[str, Any], where: str
) -> Any:
    """Call functions until one returns something other than ``None``; return it (or ``None``)."""
    guard = None
    try:
        for reg in regs:
            mode = reg.mode
            stats = reg.stats
            if mode == PLAIN:
                n = stats.calls
                stats.calls = n + 1
                if n & _SAMPLE_MASK:
                    try:
                        result = reg.fn(*args, **kwargs)
                    except VETO_EXCEPTIONS:
                        raise
                    except Exception as exc:
                        isolate(reg, exc, where, counted=True)
                        continue
                else:
                    result = timed(reg, args, kwargs, where)
                    if result is SKIPPED:
                        continue
            elif mode == GUARDED:
                if guard is None:
                    guard = RunGuard()
                n = stats.calls
                stats.calls = n + 1
                t0 = 0.0 if n & _SAMPLE_MASK else perf_counter()
                guard.reg = reg
                try:
                    result = reg.fn(*args, **kwargs)
                except BaseException as exc:
                    guard.reg = None
                    guarded_failed(guard, reg, exc, where)
                    continue
                guard.reg = None
                if guard.fired_reg is not None and guard.settle(reg):
                    overran(reg, where)
                    continue
                if t0:
                    stats.sample(perf_counter() - t0)
                if reg.owner in _failing:
                    health.record_success(reg.owner)
            elif mode == REMOVED:
                continue
            else:
                result = call_guarded(reg, args, kwargs, where)
                if result is SKIPPED:
                    continue
            if result is not None:
                return result
    finally:
        if guard is not None:
            guard.close()
    return None


def run_filter(
    regs: tuple[Registration, ...], args: tuple[Any, ...], kwargs: dict[str, Any], where: str
) -> Any:
    """Thread ``args[0]`` through every function (``None`` keeps it); return the final value."""
    value, rest = args[0], args[1:]
    if not rest and not kwargs:
        return _run_filter_value(regs, value, where)
    guard = None
    try:
        for reg in regs:
            mode = reg.mode
            stats = reg.stats
            if mode == PLAIN:
                n = stats.calls
                stats.calls = n + 1
                if n & _SAMPLE_MASK:
                    try:
                        result = reg.fn(value, *rest, **kwargs)
                    except VETO_EXCEPTIONS:
                        raise
                    except Exception as exc:
                        isolate(reg, exc, where, counted=True)
                        continue
                else:
                    result = timed(reg, (value, *rest), kwargs, where)
            elif mode == GUARDED:
                if guard is None:
                    guard = RunGuard()
                n = stats.calls
                stats.calls = n + 1
                t0 = 0.0 if n & _SAMPLE_MASK else perf_counter()
                guard.reg = reg
                try:
                    result = reg.fn(value, *rest, **kwargs)
                except BaseException as exc:
                    guard.reg = None
                    guarded_failed(guard, reg, exc, where)
                    continue
                guard.reg = None
                if guard.fired_reg is not None and guard.settle(reg):
                    overran(reg, where)
                    continue
                if t0:
                    stats.sample(perf_counter() - t0)
                if reg.owner in _failing:
                    health.record_success(reg.owner)
            elif mode == REMOVED:
                continue
            else:
                result = call_guarded(reg, (value, *rest), kwargs, where)
            if result is not None and result is not SKIPPED:
                value = result
    finally:
        if guard is not None:
            guard.close()
    return value


def _run_filter_value(regs: tuple[Registration, ...], value: Any, where: str) -> Any:
    """``run_filter`` for the common call with the value alone (a plain one-argument call)."""
    guard = None
    try:
        for reg in regs:
            mode = reg.mode
            stats = reg.stats
            if mode == PLAIN:
                n = stats.calls
                stats.calls = n + 1
                if n & _SAMPLE_MASK:
                    try:
                        result = reg.fn(value)
                    except VETO_EXCEPTIONS:
                        raise
                    except Exception as exc:
                        isolate(reg, exc, where, counted=True)
                        continue
                else:
                    result = timed(reg, (value,), {}, where)
            elif mode == GUARDED:
                if guard is None:
                    guard = RunGuard()
                n = stats.calls
                stats.calls = n + 1
                t0 = 0.0 if n & _SAMPLE_MASK else perf_counter()
                guard.reg = reg
                try:
                    result = reg.fn(value)
                except BaseException as exc:
                    guard.reg = None
                    guarded_failed(guard, reg, exc, where)
                    continue
                guard.reg = None
                if guard.fired_reg is not None and guard.settle(reg):
                    overran(reg, where)
                    continue
                if t0:
                    stats.sample(perf_counter() - t0)
                if reg.owner in _failing:
                    health.record_success(reg.owner)
            elif mode == REMOVED:
                continue
            else:
                result = call_guarded(reg, (value,), {}, where)
            if result is not None and result is not SKIPPED:
                value = result
    finally:
        if guard is not None:
            guard.close()
    return value


_SAMPLE_MASK = 15  # time one call in 16 (counting is per call)
_failing = health._consecutive  # owners with failures in a row: the success path is one lookup


def timed(reg: Registration, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> Any:
    """The sampled call of a plain registration (already counted): timed into its stats."""
    t0 = perf_counter()
    try:
        result = reg.fn(*args, **kwargs)
    except VETO_EXCEPTIONS:
        raise
    except Exception as exc:
        isolate(reg, exc, where, counted=True)
        return SKIPPED
    reg.stats.sample(perf_counter() - t0)
    return result


def guarded_failed(guard: RunGuard, reg: Registration, exc: BaseException, where: str) -> None:
    """A guarded call raised ``exc`` (already counted): isolate it, or raise what must propagate.

    Returns normally when the failure was isolated (the loop skips the function).
    """
    ran_over = guard.fired_reg is not None and guard.settle(reg)
    if isinstance(exc, TimeBudgetExceeded):
        if exc.time_limit is guard:
            isolate(reg, exc, where, "timeout", counted=True)
            return
        raise exc  # an enclosing budget ran out, not this function's
    if isinstance(exc, VETO_EXCEPTIONS) or not isinstance(exc, Exception):
        raise exc
    if ran_over:  # the plugin caught the interruption and raised something else
        overran(reg, where, exc)
        return
    isolate(reg, exc, where, counted=True)


def overran(reg: Registration, where: str, cause: BaseException | None = None) -> None:
    budget = reg.budget() or 0.0
    exc = TimeBudgetExceeded(f"time budget of {budget:g}s exceeded")
    exc.__cause__ = cause
    isolate(reg, exc, where, "timeout", counted=True)


# The frames that call registered functions, with ``reg`` and ``where`` locals
# (``HookManager.current()`` looks for them on the stack; a budget's boundary is one of them).
RUN_CODES.update(
    fn.__code__
    for fn in (
        run_normal,
        run_abnormal,
        run_filter,
        _run_filter_value,
        timed,
        call_guarded,
        call_guarded_async,
    )
)
