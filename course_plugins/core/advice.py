"""Advice: wrap a core function from outside, with the ten combinators of Emacs' ``nadvice.el``.

A core function becomes advisable with ``@advisable("course_service.create_course")``;
plugins add advice to that name with ``@before_advice(...)``, ``@after_advice(...)``,
``@around_advice(...)`` and the rest. Advice may be added before the target is imported: it
applies once it is.

Meaning of each combinator (``f`` is the advised function, ``a`` the advice, ``*r`` the call's
arguments), as in ``nadvice.el`` except where SPEC §3 gives ``after`` a return value:

=================  ==========================================================================
``before``         ``a(*r); return f(*r)``
``after``          ``x = f(*r); y = a(x, *r); return x if y is None else y``
``around``         ``return a(f, *r)``
``override``       ``return a(*r)``
``before_while``   ``return a(*r) and f(*r)``
``before_until``   ``return a(*r) or f(*r)``
``after_while``    ``return f(*r) and a(*r)``
``after_until``    ``return f(*r) or a(*r)``
``filter_args``    ``args, kwargs = a(args, kwargs); return f(*args, **kwargs)``
``filter_return``  ``return a(f(*r))``
=================  ==========================================================================

Several pieces nest by priority: lower is outermost; equal priorities, the earlier added is outer.
A veto (``VETO_EXCEPTIONS``) raised by advice propagates; any other exception is isolated: logged,
counted against the owner, and that advice is skipped for the call (``around``/``override`` fall
back to calling what they wrap; a result already computed is kept). ``options.strict`` re-raises.

Speed: the advised function reads one attribute and, with no advice, calls the original. With
advice it calls a composed chain, built once per change (consecutive ``before``/``after`` pieces
are fused into one flat layer).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from time import perf_counter
from typing import Any, TypeVar

from course_plugins.core._calls import (
    VETO_EXCEPTIONS,
    CallStats,
    Registration,
    callable_name,
    isolate,
    run_coroutine_sync,
)
from course_plugins.core.health import health
from course_plugins.exceptions import AdviceError

__all__ = [
    "ADVICE_KINDS",
    "Advice",
    "add_advice",
    "advisable",
    "after_advice",
    "after_until_advice",
    "after_while_advice",
    "around_advice",
    "before_advice",
    "before_until_advice",
    "before_while_advice",
    "describe",
    "describe_all",
    "filter_args_advice",
    "filter_return_advice",
    "override_advice",
    "remove_advice",
    "remove_owner_advice",
]

F = TypeVar("F", bound=Callable[..., Any])

ADVICE_KINDS: tuple[str, ...] = (
    "before",
    "after",
    "around",
    "override",
    "before_while",
    "before_until",
    "after_while",
    "after_until",
    "filter_args",
    "filter_return",
)

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
    ) -> None:
        super().__init__(fn, priority, owner, None, CallStats(), seq)
        self.how = how
        self.target = target

    def __repr__(self) -> str:
        return f"Advice({self.how}, {self.target!r}, {self.name}, priority={self.priority})"


def _normalise_how(how: str) -> str:
    kind = how.lstrip(":").replace("-", "_") if isinstance(how, str) else ""
    if kind not in ADVICE_KINDS:
        raise AdviceError(f"unknown advice kind {how!r}; use one of {', '.join(ADVICE_KINDS)}")
    return kind


def _target_name(target: Any) -> str:
    name = getattr(target, "__advice_target__", target)
    if not isinstance(name, str) or not name:
        raise AdviceError(
            f"advice target {target!r} is not a target name: pass the name given to "
            "@advisable (e.g. 'course_service.create_course') or the advisable function"
        )
    return name


# --- one advised call --------------------------------------------------------------------------


def _failed(adv: Advice, exc: BaseException) -> None:
    """Decide about an exception raised by advice: veto/interrupt propagate, others isolated."""
    if isinstance(exc, VETO_EXCEPTIONS) or not isinstance(exc, Exception):
        raise exc
    isolate(adv, exc, f"advice {adv.how} on {adv.target}")


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


def _flat(
    befores: tuple[Advice, ...], afters: tuple[Advice, ...], inner: Callable[..., Any]
) -> Callable[..., Any]:
    """Consecutive before/after pieces fused: befores outer-first, then afters inner-first."""

    def layer(*args: Any, **kwargs: Any) -> Any:
        for adv in befores:
            t0 = perf_counter()
            try:
                adv.fn(*args, **kwargs)
            except BaseException as exc:
                _failed(adv, exc)
                continue
            adv.stats.record(perf_counter() - t0)
            if adv.owner is not None:
                health.record_success(adv.owner)
        result = inner(*args, **kwargs)
        for adv in afters:
            t0 = perf_counter()
            try:
                new = adv.fn(result, *args, **kwargs)
            except BaseException as exc:
                _failed(adv, exc)
                continue
            adv.stats.record(perf_counter() - t0)
            if adv.owner is not None:
                health.record_success(adv.owner)
            if new is not None:
                result = new
        return result

    if any(adv.is_async for adv in befores + afters):
        return _flat_slow(befores, afters, inner)
    return layer


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


def _compose(original: Callable[..., Any], pieces: tuple[Advice, ...], is_async: bool) -> Any:
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
            chain = (_aflat if is_async else _flat)(befores, afters, chain)
            i = j
        else:
            chain = (_alayer if is_async else _layer)(pieces[i - 1], chain)
            i -= 1
    return chain


# --- the registry ------------------------------------------------------------------------------


class _Target:
    """An advisable name: its original function (once imported), its advice, the built chain."""

    __slots__ = ("name", "original", "is_async", "pieces", "chain")

    def __init__(self, name: str) -> None:
        self.name = name
        self.original: Callable[..., Any] | None = None
        self.is_async = False
        self.pieces: tuple[Advice, ...] = ()
        self.chain: Callable[..., Any] | None = None  # None: call the original directly

    def rebuild(self) -> None:
        if self.original is None or not self.pieces:
            self.chain = None
        else:
            self.chain = _compose(self.original, self.pieces, self.is_async)


_lock = threading.RLock()
_targets: dict[str, _Target] = {}
_seq = 0


def _target(name: str) -> _Target:
    target = _targets.get(name)
    if target is None:
        target = _targets[name] = _Target(name)
    return target


def advisable(name: str) -> Callable[[F], F]:
    """Decorator: make a function (sync or async) advisable under ``name``.

    Returns a wrapper that keeps the function's name, docstring and signature
    (``functools.wraps``) and has ``__advice_target__ = name``. Advice added to ``name`` earlier
    applies now. Raises ``AdviceError`` if another function already uses ``name``.
    """
    _target_name(name)

    def decorate(fn: F) -> F:
        with _lock:
            target = _target(name)
            previous = target.original
            if previous is not None and callable_name(previous) != callable_name(fn):
                raise AdviceError(
                    f"advice target {name!r} is already {callable_name(previous)}; "
                    f"give {callable_name(fn)} another name"
                )
            target.original = fn
            target.is_async = inspect.iscoroutinefunction(fn)
            target.rebuild()

        wrapper: Callable[..., Any]
        if target.is_async:

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                chain = target.chain
                if chain is None:
                    return await fn(*args, **kwargs)
                return await chain(*args, **kwargs)

            wrapper = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                chain = target.chain
                if chain is None:
                    return fn(*args, **kwargs)
                return chain(*args, **kwargs)

            wrapper = sync_wrapper
        wrapper.__dict__["__advice_target__"] = name
        return wrapper  # type: ignore[return-value]

    return decorate


def add_advice(how: str, target: Any, fn: F, *, priority: int = 10, owner: str | None = None) -> F:
    """Add ``fn`` as ``how`` advice (one of ``ADVICE_KINDS``) on ``target``; return ``fn``.

    ``target`` is an advisable name (it need not be imported yet) or the advisable function.
    Adding the same function to the same target again replaces the earlier piece. Raises
    ``AdviceError`` for an unknown kind or target, ``TypeError`` if ``fn`` is not callable.
    """
    global _seq
    kind = _normalise_how(how)
    name = _target_name(target)
    if not callable(fn):
        raise TypeError(f"{kind} advice on {name!r}: {fn!r} is not callable")
    with _lock:
        _seq += 1
        adv = Advice(kind, name, fn, priority=priority, owner=owner, seq=_seq)
        t = _target(name)
        kept = [a for a in t.pieces if a.fn != fn]
        kept.append(adv)
        kept.sort(key=lambda a: (a.priority, a.seq))
        t.pieces = tuple(kept)
        t.rebuild()
    return fn


def remove_advice(target: Any, fn: Callable[..., Any]) -> bool:
    """Remove ``fn``'s advice from ``target``; return whether there was one."""
    name = _target_name(target)
    with _lock:
        t = _targets.get(name)
        if t is None:
            return False
        kept = tuple(a for a in t.pieces if a.fn != fn)
        removed = len(kept) != len(t.pieces)
        if removed:
            t.pieces = kept
            t.rebuild()
        return removed


def remove_owner_advice(owner: str) -> int:
    """Remove every piece of advice ``owner`` (a plugin id) added; return how many."""
    count = 0
    with _lock:
        for t in _targets.values():
            kept = tuple(a for a in t.pieces if a.owner != owner)
            if len(kept) != len(t.pieces):
                count += len(t.pieces) - len(kept)
                t.pieces = kept
                t.rebuild()
    return count


def describe(target: Any) -> list[dict[str, Any]]:
    """Return ``target``'s advice, outermost first: name, plugin, how, priority and stats."""
    t = _targets.get(_target_name(target))
    if t is None:
        return []
    return [
        {
            "name": a.name,
            "plugin": a.owner,
            "how": a.how,
            "priority": a.priority,
            "async": a.is_async,
            **a.stats.as_dict(),
        }
        for a in t.pieces
    ]


def describe_all() -> dict[str, list[dict[str, Any]]]:
    """Return ``{target: describe(target)}`` for every advisable or advised target name."""
    return {name: describe(name) for name in sorted(_targets)}


def is_advisable(name: str) -> bool:
    """Whether a function has been made advisable under ``name`` (its module is imported)."""
    t = _targets.get(name)
    return t is not None and t.original is not None


def _decorator(how: str) -> Callable[..., Any]:
    def x_advice(
        target: Any,
        fn: Callable[..., Any] | None = None,
        *,
        priority: int = 10,
        owner: str | None = None,
    ) -> Any:
        if fn is not None:
            return add_advice(how, target, fn, priority=priority, owner=owner)
        _target_name(target)  # fail at decoration time, not at first use
        return lambda f: add_advice(how, target, f, priority=priority, owner=owner)

    x_advice.__name__ = x_advice.__qualname__ = f"{how}_advice"
    x_advice.__doc__ = (
        f"Add ``{how}`` advice to ``target``: ``@{how}_advice(target, *, priority=10, "
        f"owner=None)`` or ``{how}_advice(target, fn)``; returns the function unchanged."
    )
    return x_advice


before_advice = _decorator("before")
after_advice = _decorator("after")
around_advice = _decorator("around")
override_advice = _decorator("override")
before_while_advice = _decorator("before_while")
before_until_advice = _decorator("before_until")
after_while_advice = _decorator("after_while")
after_until_advice = _decorator("after_until")
filter_args_advice = _decorator("filter_args")
filter_return_advice = _decorator("filter_return")
