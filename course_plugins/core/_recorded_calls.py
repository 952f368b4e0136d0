"""How a recorded run calls each function: as the engine's loops do, its failure raised for the
run recorder (``core.runs``) to record, already logged and counted.

Platform code is called bare; a plugin's sync function under the run's one :class:`RunGuard`
(made at the first one, closed with the run); anything else through ``call_guarded``. A
generated recorded run (``core._hook_runs``) calls the functions itself and hands what one of
them raised to :meth:`RunBudget.raised`, which raises what :meth:`RunBudget.call` would have.
"""

from __future__ import annotations

import copy
from time import perf_counter
from typing import Any, NoReturn

from course_plugins.core._calls import (
    GUARDED,
    PLAIN,
    RUN_CODES,
    VETO_EXCEPTIONS,
    Registration,
    call_guarded,
    isolate,
)
from course_plugins.core.health import health
from course_plugins.core.watchdog import RunGuard, TimeBudgetExceeded

__all__ = ["OVERRAN", "RunBudget", "failure", "shadow_copy"]


class _Isolated(Exception):
    """A function failed with ``exc``, already logged and counted by the engine."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.exc = exc


def _call_plain(
    reg: Registration, args: tuple[Any, ...], kwargs: dict[str, Any], where: str
) -> Any:
    """Call platform code as the engine's loops do; a failure (logged, counted) becomes
    ``_Isolated``. A veto propagates, a fail-closed function's failure too (as a veto)."""
    t0 = perf_counter()
    try:
        result = reg.fn(*args, **kwargs)
    except BaseException as exc:
        _plain_failed(reg, exc, where, False)
    reg.stats.record(perf_counter() - t0)
    return result


def _plain_failed(reg: Registration, exc: BaseException, where: str, counted: bool) -> NoReturn:
    """What ``_call_plain`` raises when the call raised ``exc`` (``counted``: in its calls)."""
    if isinstance(exc, VETO_EXCEPTIONS):
        if not counted:
            reg.stats.calls += 1
        raise exc
    if not isinstance(exc, Exception):
        raise exc
    try:
        isolate(reg, exc, where, counted=counted)
    except VETO_EXCEPTIONS:
        raise  # fail-closed: the failure refuses the operation
    except Exception:  # strict mode: re-raised once recorded
        pass
    raise _Isolated(exc) from exc


class RunBudget:
    """How a recorded run calls each function, as the engine's loops do: platform code bare,
    a plugin's sync function under the run's one :class:`RunGuard` (made at the first one,
    closed with the run), anything else through ``call_guarded``. A failure is logged and
    counted, then raised (a budget overrun as ``TimeoutError`` from it) for the recorder."""

    __slots__ = ("guard",)

    def __init__(self) -> None:
        self.guard: RunGuard | None = None

    def call(
        self, reg: Registration, args: tuple[Any, ...], kwargs: dict[str, Any], where: str
    ) -> Any:
        mode = reg.mode
        if mode == PLAIN:
            return _call_plain(reg, args, kwargs, where)
        if mode != GUARDED:
            return call_guarded(reg, args, kwargs, where, True)
        guard = self.guard
        if guard is None:
            guard = self.guard = RunGuard()
        t0 = perf_counter()
        guard.reg = reg
        try:
            result = reg.fn(*args, **kwargs)
        except BaseException as exc:
            guard.reg = None
            self._failed(reg, exc, where, t0, False)
        guard.reg = None
        if guard.fired_reg is not None and guard.settle(reg):
            _timed_out(reg, where, None, False)
        reg.stats.record(perf_counter() - t0)
        if reg.owner is not None:
            health.record_success(reg.owner)
        return result

    def raised(
        self, reg: Registration, exc: BaseException | None, where: str, t0: float
    ) -> NoReturn:
        """A generated run called ``reg`` (counted) from ``t0`` and it raised ``exc`` (or ran
        over its budget but returned: ``OVERRAN``): raise what :meth:`call` would have."""
        if reg.mode == PLAIN:
            _plain_failed(reg, exc, where, True)  # type: ignore[arg-type]
        if exc is OVERRAN:
            _timed_out(reg, where, None, True)
        self._failed(reg, exc, where, t0, True)  # type: ignore[arg-type]

    def _failed(
        self, reg: Registration, exc: BaseException, where: str, t0: float, counted: bool
    ) -> NoReturn:
        guard = self.guard
        ran_over = guard is not None and guard.fired_reg is not None and guard.settle(reg)
        if isinstance(exc, TimeBudgetExceeded):
            if exc.time_limit is not guard:
                raise exc  # an enclosing budget ran out, not this function's
            isolate(reg, exc, where, "timeout", counted=counted)
            raise TimeoutError(str(exc)) from exc
        if isinstance(exc, VETO_EXCEPTIONS):
            if counted:
                reg.stats.sample(perf_counter() - t0)
            else:
                reg.stats.record(perf_counter() - t0)
            raise exc
        if not isinstance(exc, Exception):
            raise exc
        if ran_over:  # the plugin caught the interruption and raised something else
            _timed_out(reg, where, exc, counted)
        isolate(reg, exc, where, counted=counted)
        raise exc

    def close(self) -> None:
        if self.guard is not None:
            self.guard.close()


def _timed_out(
    reg: Registration, where: str, cause: BaseException | None, counted: bool
) -> None:
    """Count a budget overrun the function survived, and raise it as ``TimeoutError``."""
    exc = TimeBudgetExceeded(f"time budget of {reg.budget() or 0.0:g}s exceeded")
    exc.__cause__ = cause
    isolate(reg, exc, where, "timeout", counted=counted)
    raise TimeoutError(str(exc)) from exc


def failure(exc: Exception) -> BaseException:
    """The function's own failure behind what the call raised (already logged and counted)."""
    if isinstance(exc, _Isolated):
        return exc.exc
    if isinstance(exc, TimeoutError) and exc.__cause__ is not None:
        return exc.__cause__  # call_guarded's form of a budget overrun
    return exc


# ``HookManager.current()`` finds the running hook and function in this frame as in the engine's.
RUN_CODES.update((_call_plain.__code__, RunBudget.call.__code__))

OVERRAN: Any = object()  # a generated run's call ran over its budget and returned


def shadow_copy(value: Any) -> Any:
    """A copy a shadow function may change freely (deep if possible, else shallow)."""
    try:
        return copy.deepcopy(value)
    except Exception:
        try:
            return copy.copy(value)
        except Exception:
            return value
