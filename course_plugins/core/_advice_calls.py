"""One piece of advice and how one call of it is made: counted, under its plugin's budget,
isolated when it fails; the original handed to around advice; the layers of async advice.

The generated (straight-line) layers of sync advice are ``_advice_code``; how the layers are
put together around an advisable function is ``_advice_chain``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from time import perf_counter
from typing import Any

from course_plugins.core._calls import (
    VETO_EXCEPTIONS,
    AsyncBudgetExceeded,
    CallStats,
    Registration,
    isolate,
    with_budget,
)
from course_plugins.core._engine_loop import run_coroutine_sync
from course_plugins.core.health import health
from course_plugins.core.watchdog import TimeBudgetExceeded, TimeLimit

__all__ = ["Advice", "AdviceOverran", "budgeted"]

_UNSET: Any = object()
_SAMPLE_MASK = 15  # generated layers time one call in 16 (counting is per call)


class AdviceOverran(TimeoutError):
    """A plugin's advice ran over its time budget (isolated as the plugin's timeout)."""


class Advice(Registration):
    """One piece of advice: ``how`` it combines with ``target``, its function, order and owner.

    ``call`` is what the chain calls: ``fn`` itself for the platform's advice (and an isolated
    plugin's, whose worker keeps its budget), else ``fn`` under the plugin's time budget
    (``budgeted``).
    """

    __slots__ = ("call", "how", "target")

    def __init__(
        self,
        how: str,
        target: str,
        fn: Callable[..., Any],
        *,
        priority: int = 10,
        owner: str | None = None,
        seq: int = 0,
        key: str | None = None,
        shadow: bool = False,
        timeout: float | None = None,
    ) -> None:
        super().__init__(fn, priority, owner, timeout, CallStats(), seq, key=key, shadow=shadow)
        self.how = how
        self.target = target
        self.call = fn if owner is None or self.own_code() is None else budgeted(self)

    def __repr__(self) -> str:
        return f"Advice({self.how}, {self.target!r}, {self.name}, priority={self.priority})"


def budgeted(adv: Advice) -> Callable[..., Any]:
    """``adv.fn`` under ``adv.budget()``, interrupting only the plugin's own frames (as a hook
    function's): an overrun raises ``AdviceOverran``, which the chain isolates like any error
    of the plugin (the advised call goes on; around advice that already ran the original keeps
    its result)."""
    fn, own = adv.fn, adv.own_code()
    around = adv.how == "around"

    def overran() -> AdviceOverran:
        return AdviceOverran(f"{adv.name} ran over its time budget of {adv.budget():g}s")

    if adv.is_async:

        async def call_async(*args: Any, **kwargs: Any) -> Any:
            clock = None
            if around and args:
                clock = (_AUncharged if isinstance(args[0], _ATracked) else _Uncharged)(args[0])
                args = (clock, *args[1:])
            try:
                return await with_budget(fn(*args, **kwargs), adv.budget(), own, clock)
            except TimeBudgetExceeded as exc:
                if not isinstance(exc, AsyncBudgetExceeded):
                    raise
                raise overran() from None

        return call_async

    def call(*args: Any, **kwargs: Any) -> Any:
        limit = TimeLimit(adv.budget(), own=own)
        if around and args:
            args = (_Uncharged(args[0], limit.stopped), *args[1:])
        try:
            with limit:
                return fn(*args, **kwargs)
        except TimeBudgetExceeded as exc:
            if exc.time_limit is not limit:
                raise  # an enclosing budget's
            limit.close()
            raise overran() from None

    return call


class _Uncharged:
    """The original handed to a trusted plugin's around advice: the time of its first call is
    the site's (the advised function's own work: a database write, other plugins' hooks), so
    the advice's budget is stopped while it runs (``stopped``, the budget's); calling it again
    is the plugin's doing and is charged, as for an isolated plugin (else a loop calling it
    would keep the site busy without limit)."""

    __slots__ = ("original", "stopped", "used")

    def __init__(self, original: Callable[..., Any],
                 stopped: Callable[[], contextlib.AbstractContextManager[Any]] = (
                     contextlib.nullcontext)) -> None:
        self.original = original
        self.stopped = stopped
        self.used = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.used:
            return self.original(*args, **kwargs)
        self.used = True
        with self.stopped():
            return self.original(*args, **kwargs)


class _AUncharged(_Uncharged):
    """``_Uncharged`` for an async original."""

    __slots__ = ()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.used:
            return await self.original(*args, **kwargs)
        self.used = True
        with self.stopped():
            return await self.original(*args, **kwargs)


def _failed(adv: Advice, exc: BaseException, counted: bool = False) -> None:
    """Decide about an exception raised by advice: veto/interrupt propagate, others isolated."""
    if isinstance(exc, VETO_EXCEPTIONS) or not isinstance(exc, Exception):
        if not counted:
            adv.stats.calls += 1
        raise exc
    kind = "timeout" if isinstance(exc, AdviceOverran) else "error"
    isolate(adv, exc, f"advice {adv.how} on {adv.target}", kind, counted=counted)


def _done(adv: Advice, t0: float) -> None:
    adv.stats.record(perf_counter() - t0)
    if adv.owner is not None:
        health.record_success(adv.owner)


def _call(adv: Advice, *args: Any, **kwargs: Any) -> Any:
    """Call sync-chain advice; returns ``_UNSET`` when it failed and was isolated."""
    t0 = perf_counter()
    try:
        result = adv.call(*args, **kwargs)
        if adv.is_async:  # async advice on a sync function: run it to completion here
            result = run_coroutine_sync(result)
    except BaseException as exc:
        _failed(adv, exc)
        return _UNSET
    _done(adv, t0)
    return result


async def _acall(adv: Advice, *args: Any, **kwargs: Any) -> Any:
    """Call async-chain advice (sync or async); returns ``_UNSET`` when it was isolated."""
    t0 = perf_counter()
    try:
        result = adv.call(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
    except BaseException as exc:
        _failed(adv, exc)
        return _UNSET
    _done(adv, t0)
    return result


class _Tracked:
    """The ``original`` handed to around-advice: remembers whether it ran and how it ended.

    If the advice fails after calling it, the call's result is kept instead of running the
    original twice; an exception raised by the original itself is the original's, not the
    advice's, and propagates unchanged. When the advice called it more than once, its last call
    is what counts.
    """

    __slots__ = ("inner", "result", "error", "called")

    def __init__(self, inner: Callable[..., Any]) -> None:
        self.inner = inner
        self.result: Any = _UNSET
        self.error: BaseException | None = None
        self.called = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.called = True
        try:
            result = self.inner(*args, **kwargs)
        except BaseException as exc:
            self.error = exc
            raise
        self.error = None
        self.result = result
        return result

    def outcome(self, *args: Any, **kwargs: Any) -> Any:
        if not self.called:
            return self.inner(*args, **kwargs)
        if self.error is not None:
            raise self.error
        return self.result


class _TrackedOriginal:
    """``_Tracked`` for generated around layers: a subclass per layer holds ``inner`` as a class
    attribute and the state has class-level defaults, so each call makes a bare instance (no
    ``__init__``, its ``__dict__`` only made if the advice calls the original)."""

    inner: Any = None
    result: Any = _UNSET
    error: BaseException | None = None
    called = False
    __call__ = _Tracked.__call__
    outcome = _Tracked.outcome


def _tracked_class(inner: Callable[..., Any]) -> type[_TrackedOriginal]:
    return type("_TrackedOriginal", (_TrackedOriginal,), {"inner": staticmethod(inner)})


class _ATracked(_Tracked):
    __slots__ = ()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.called = True
        try:
            result = await self.inner(*args, **kwargs)
        except BaseException as exc:
            self.error = exc
            raise
        self.error = None
        self.result = result
        return result

    async def outcome(self, *args: Any, **kwargs: Any) -> Any:
        if not self.called:
            return await self.inner(*args, **kwargs)
        if self.error is not None:
            raise self.error
        return self.result


def _flat_slow(
    befores: tuple[Advice, ...], afters: tuple[Advice, ...], inner: Callable[..., Any]
) -> Callable[..., Any]:
    def layer(*args: Any, **kwargs: Any) -> Any:
        for adv in befores:
            _call(adv, *args, **kwargs)
        result = inner(*args, **kwargs)
        for adv in afters:
            new = _call(adv, result, *args, **kwargs)
            if new is not _UNSET and new is not None:
                result = new
        return result

    return layer


def _aflat(
    befores: tuple[Advice, ...], afters: tuple[Advice, ...], inner: Callable[..., Any]
) -> Callable[..., Any]:
    async def layer(*args: Any, **kwargs: Any) -> Any:
        for adv in befores:
            await _acall(adv, *args, **kwargs)
        result = await inner(*args, **kwargs)
        for adv in afters:
            new = await _acall(adv, result, *args, **kwargs)
            if new is not _UNSET and new is not None:
                result = new
        return result

    return layer


def _layer(adv: Advice, inner: Callable[..., Any]) -> Callable[..., Any]:
    """The sync layer of one non-flat combinator whose advice is async (run to completion
    here); the others are generated (``_advice_code._generated_layer``)."""
    how = adv.how
    if how == "around":

        def around(*args: Any, **kwargs: Any) -> Any:
            original = _Tracked(inner)
            t0 = perf_counter()
            try:
                result = adv.call(original, *args, **kwargs)
                if adv.is_async:
                    result = run_coroutine_sync(result)
            except BaseException as exc:
                if original.error is not None and exc is original.error:
                    raise  # the original's own exception, passed through
                _failed(adv, exc)
                return original.outcome(*args, **kwargs)
            _done(adv, t0)
            return result

        return around
    if how == "override":

        def override(*args: Any, **kwargs: Any) -> Any:
            result = _call(adv, *args, **kwargs)
            return inner(*args, **kwargs) if result is _UNSET else result

        return override
    if how in ("before_while", "before_until"):
        want = how == "before_while"

        def before_cond(*args: Any, **kwargs: Any) -> Any:
            verdict = _call(adv, *args, **kwargs)
            if verdict is _UNSET or bool(verdict) is want:
                return inner(*args, **kwargs)
            return verdict

        return before_cond
    if how in ("after_while", "after_until"):
        want = how == "after_while"

        def after_cond(*args: Any, **kwargs: Any) -> Any:
            result = inner(*args, **kwargs)
            if bool(result) is not want:
                return result
            new = _call(adv, *args, **kwargs)
            return result if new is _UNSET else new

        return after_cond
    if how == "filter_args":

        def filter_args(*args: Any, **kwargs: Any) -> Any:
            new = _call(adv, args, kwargs)
            if new is not _UNSET:
                checked = _checked_args(adv, new)
                if checked is not None:
                    return inner(*checked[0], **checked[1])
            return inner(*args, **kwargs)

        return filter_args
    assert how == "filter_return"

    def filter_return(*args: Any, **kwargs: Any) -> Any:
        result = inner(*args, **kwargs)
        new = _call(adv, result)
        return result if new is _UNSET else new

    return filter_return


def _alayer(adv: Advice, inner: Callable[..., Any]) -> Callable[..., Any]:
    """The async layer of one non-flat combinator (``inner`` is async)."""
    how = adv.how
    if how == "around":

        async def around(*args: Any, **kwargs: Any) -> Any:
            original = _ATracked(inner)
            t0 = perf_counter()
            try:
                result = adv.call(original, *args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
            except BaseException as exc:
                if original.error is not None and exc is original.error:
                    raise
                _failed(adv, exc)
                return await original.outcome(*args, **kwargs)
            _done(adv, t0)
            return result

        return around
    if how == "override":

        async def override(*args: Any, **kwargs: Any) -> Any:
            result = await _acall(adv, *args, **kwargs)
            return (await inner(*args, **kwargs)) if result is _UNSET else result

        return override
    if how in ("before_while", "before_until"):
        want = how == "before_while"

        async def before_cond(*args: Any, **kwargs: Any) -> Any:
            verdict = await _acall(adv, *args, **kwargs)
            if verdict is _UNSET or bool(verdict) is want:
                return await inner(*args, **kwargs)
            return verdict

        return before_cond
    if how in ("after_while", "after_until"):
        want = how == "after_while"

        async def after_cond(*args: Any, **kwargs: Any) -> Any:
            result = await inner(*args, **kwargs)
            if bool(result) is not want:
                return result
            new = await _acall(adv, *args, **kwargs)
            return result if new is _UNSET else new

        return after_cond
    if how == "filter_args":

        async def filter_args(*args: Any, **kwargs: Any) -> Any:
            new = await _acall(adv, args, kwargs)
            if new is not _UNSET:
                checked = _checked_args(adv, new)
                if checked is not None:
                    return await inner(*checked[0], **checked[1])
            return await inner(*args, **kwargs)

        return filter_args
    assert how == "filter_return"

    async def filter_return(*args: Any, **kwargs: Any) -> Any:
        result = await inner(*args, **kwargs)
        new = await _acall(adv, result)
        return result if new is _UNSET else new

    return filter_return


def _checked_args(adv: Advice, new: Any) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Validate a filter_args return; a wrong shape is the advice's error (isolated)."""
    try:
        args, kwargs = new
        return tuple(args), dict(kwargs)
    except (TypeError, ValueError) as exc:
        error = TypeError(
            f"filter_args advice {adv.name} on {adv.target!r} must return (args, kwargs), "
            f"not {new!r}"
        )
        error.__cause__ = exc
        _failed(adv, error)
        return None
