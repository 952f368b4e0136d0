"""How advice is composed around an advisable function: the layers of one advised call.

``compose(original, pieces, is_async, shape)`` builds the chain once per change of the advice on
a target (``core.advice`` keeps the registry). Consecutive before/after pieces become one flat
layer generated as straight-line code; every other combinator is one layer, sync or async.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from time import perf_counter
from typing import Any

from course_plugins.core._calls import (
    GENERIC_SHAPE,
    VETO_EXCEPTIONS,
    CallShape,
    CallStats,
    Registration,
    generate,
    isolate,
    run_coroutine_sync,
)
from course_plugins.core.health import health

__all__ = ["Advice", "compose", "sync_wrapper"]

_UNSET: Any = object()


class Advice(Registration):
    """One piece of advice: ``how`` it combines with ``target``, its function, order and owner."""

    __slots__ = ("how", "target")

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
    ) -> None:
        super().__init__(fn, priority, owner, None, CallStats(), seq, key=key, shadow=shadow)
        self.how = how
        self.target = target

    def __repr__(self) -> str:
        return f"Advice({self.how}, {self.target!r}, {self.name}, priority={self.priority})"


# --- one advised call --------------------------------------------------------------------------


def _failed(adv: Advice, exc: BaseException, counted: bool = False) -> None:
    """Decide about an exception raised by advice: veto/interrupt propagate, others isolated."""
    if isinstance(exc, VETO_EXCEPTIONS) or not isinstance(exc, Exception):
        if not counted:
            adv.stats.calls += 1
        raise exc
    isolate(adv, exc, f"advice {adv.how} on {adv.target}", counted=counted)


def _done(adv: Advice, t0: float) -> None:
    adv.stats.record(perf_counter() - t0)
    if adv.owner is not None:
        health.record_success(adv.owner)


def _call(adv: Advice, *args: Any, **kwargs: Any) -> Any:
    """Call sync-chain advice; returns ``_UNSET`` when it failed and was isolated."""
    t0 = perf_counter()
    try:
        result = adv.fn(*args, **kwargs)
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
        result = adv.fn(*args, **kwargs)
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
    advice's, and propagates unchanged.
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
            self.result = self.inner(*args, **kwargs)
        except BaseException as exc:
            self.error = exc
            raise
        return self.result

    def outcome(self, *args: Any, **kwargs: Any) -> Any:
        if not self.called:
            return self.inner(*args, **kwargs)
        if self.error is not None:
            raise self.error
        return self.result


class _ATracked(_Tracked):
    __slots__ = ()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.called = True
        try:
            self.result = await self.inner(*args, **kwargs)
        except BaseException as exc:
            self.error = exc
            raise
        return self.result

    async def outcome(self, *args: Any, **kwargs: Any) -> Any:
        if not self.called:
            return await self.inner(*args, **kwargs)
        if self.error is not None:
            raise self.error
        return self.result


# --- layers: each wraps ``inner`` (the next piece, or the original function) -------------------


_SAMPLE_MASK = 15  # flat layers time one call in 16 (counting is per call)


def _flat(
    befores: tuple[Advice, ...],
    afters: tuple[Advice, ...],
    inner: Callable[..., Any],
    shape: CallShape = GENERIC_SHAPE,
) -> Callable[..., Any]:
    """Consecutive before/after pieces fused: befores outer-first, then afters inner-first.

    The layer is generated as straight-line code for this exact list of pieces and the target's
    own parameters: no loop, no argument repacking, only the counters, so an advised call
    costs little more than the same calls written by hand.
    """
    if any(adv.is_async for adv in befores + afters):
        return _flat_slow(befores, afters, inner)
    p = "__cp_"
    namespace: dict[str, Any] = {
        f"{p}inner": inner,
        f"{p}failed": _failed,
        f"{p}pc": perf_counter,
        f"{p}success": health.record_success,
        **shape.defaults,
    }
    lines = [f"def {p}flat({shape.params}):"]

    def emit(i: int, adv: Advice, after: bool) -> None:
        namespace.update({f"{p}f{i}": adv.fn, f"{p}a{i}": adv, f"{p}s{i}": adv.stats})
        namespace[f"{p}o{i}"] = adv.owner
        args = f"{p}result, {shape.call}" if after else shape.call
        call = f"{p}new = {p}f{i}({args})" if after else f"{p}f{i}({args})"
        ok = [f"if {p}new is not None:", f"    {p}result = {p}new"] if after else []
        if adv.owner is not None:
            ok.append(f"{p}success({p}o{i})")
        attempt = ["try:", f"    {call}", f"except BaseException as {p}exc:"]
        attempt.append(f"    {p}failed({p}a{i}, {p}exc, True)")
        lines.extend([f"    {p}n = {p}s{i}.calls", f"    {p}s{i}.calls = {p}n + 1"])
        lines.append(f"    if {p}n & {_SAMPLE_MASK}:")
        lines.extend(f"        {line}" for line in attempt)
        if ok:
            lines.append("        else:")
            lines.extend(f"            {line}" for line in ok)
        lines.extend(["    else:", f"        {p}t0 = {p}pc()"])
        lines.extend(f"        {line}" for line in attempt)
        lines.append("        else:")
        lines.append(f"            {p}s{i}.sample({p}pc() - {p}t0)")
        lines.extend(f"            {line}" for line in ok)

    for i, adv in enumerate(befores):
        emit(i, adv, after=False)
    lines.append(f"    {p}result = {p}inner({shape.call})")
    for i, adv in enumerate(afters, start=len(befores)):
        emit(i, adv, after=True)
    lines.append(f"    return {p}result")
    target = (befores or afters)[0].target
    return generate(f"{p}flat", lines, namespace, f"<advice layer of {target}>")


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
    """The sync layer of one non-flat combinator."""
    how = adv.how
    if how == "around":

        def around(*args: Any, **kwargs: Any) -> Any:
            original = _Tracked(inner)
            t0 = perf_counter()
            try:
                result = adv.fn(original, *args, **kwargs)
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
                result = adv.fn(original, *args, **kwargs)
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


def compose(
    original: Callable[..., Any],
    pieces: tuple[Advice, ...],
    is_async: bool,
    shape: CallShape = GENERIC_SHAPE,
) -> Any:
    """Build the call chain around ``original``; ``pieces`` are outermost first."""
    chain = original
    i = len(pieces)
    while i > 0:
        j = i  # gather the run of before/after pieces ending at i - 1 (innermost side)
        while j > 0 and pieces[j - 1].how in ("before", "after"):
            j -= 1
        if j < i:
            run = pieces[j:i]
            befores = tuple(a for a in run if a.how == "before")
            afters = tuple(a for a in reversed(run) if a.how == "after")
            if is_async:
                chain = _aflat(befores, afters, chain)
            else:
                chain = _flat(befores, afters, chain, shape)
            i = j
        else:
            chain = (_alayer if is_async else _layer)(pieces[i - 1], chain)
            i -= 1
    return chain


def sync_wrapper(target: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    """The advised function: calls the original directly, or the chain once there is advice.

    Generated with the original's own parameters, so the call costs one plain call level.
    """
    p, shape = "__cp_", target.shape
    lines = [
        f"def {p}advised({shape.params}):",
        f"    {p}chain = {p}target.chain",
        f"    if {p}chain is not None and {p}target.owned:",
        f"        {p}chain = {p}target.scoped_chain()",
        f"    if {p}chain is None:",
        f"        return {p}fn({shape.call})",
        f"    return {p}chain({shape.call})",
    ]
    namespace = {f"{p}target": target, f"{p}fn": fn, **shape.defaults}
    return generate(f"{p}advised", lines, namespace, f"<advisable {target.name}>")
