"""How advice is composed around an advisable function: the layers of one advised call.

``compose(original, pieces, is_async, shape)`` builds the chain once per change of the advice on
a target (``core.advice`` keeps the registry). Consecutive before/after pieces become one flat
layer generated as straight-line code; every other combinator is one layer, sync or async.
Sync layers are generated for the target's call shape (``_call_shapes.call_shape``): with a split
shape each has a fast copy for the common call and a generic one for any other.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from time import perf_counter
from typing import Any

from course_plugins.core import scope as _scope_module
from course_plugins.core._call_shapes import GENERIC_SHAPE, CallShape, generate
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

__all__ = ["Advice", "compose", "sync_wrapper"]

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

    def overran() -> AdviceOverran:
        return AdviceOverran(f"{adv.name} ran over its time budget of {adv.budget():g}s")

    if adv.is_async:

        async def call_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await with_budget(fn(*args, **kwargs), adv.budget(), own)
            except TimeBudgetExceeded as exc:
                if not isinstance(exc, AsyncBudgetExceeded):
                    raise
                raise overran() from None

        return call_async

    def call(*args: Any, **kwargs: Any) -> Any:
        limit = TimeLimit(adv.budget(), own=own)
        try:
            with limit:
                return fn(*args, **kwargs)
        except TimeBudgetExceeded as exc:
            if exc.time_limit is not limit:
                raise  # an enclosing budget's
            limit.close()
            raise overran() from None

    return call


# --- one advised call --------------------------------------------------------------------------


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


# --- layers: each wraps ``inner`` (the next piece, or the original function) -------------------




Outer = tuple[dict[str, Any], str, list[str]]
"""Where to generate the outermost layer: the advised wrapper's namespace, a name prefix unique
to this build, and lines to run first (the organization-scope check)."""


def _flat(
    befores: tuple[Advice, ...],
    afters: tuple[Advice, ...],
    inner: Callable[..., Any],
    shape: CallShape = GENERIC_SHAPE,
    outer: Outer | None = None,
) -> Callable[..., Any]:
    """Consecutive before/after pieces fused: befores outer-first, then afters inner-first.

    The layer is generated as straight-line code for this exact list of pieces and the target's
    own parameters: no loop, no argument repacking, only the counters, so an advised call
    costs little more than the same calls written by hand.
    """
    if any(adv.is_async for adv in befores + afters):
        return _flat_slow(befores, afters, inner)
    namespace, p, preamble = outer if outer is not None else ({}, "__cp_", [])
    namespace.update(
        {
            f"{p}inner": inner,
            f"{p}failed": _failed,
            f"{p}pc": perf_counter,
            f"{p}success": health.record_success,
            **shape.defaults,
        }
    )
    lines = [f"def {p}flat({shape.params}):"]

    def emit(i: int, adv: Advice, after: bool, given: str, pad: str) -> None:
        namespace.update({f"{p}f{i}": adv.call, f"{p}a{i}": adv, f"{p}s{i}": adv.stats})
        namespace[f"{p}o{i}"] = adv.owner
        args = f"{p}result, {given}" if after else given
        call = f"{p}new = {p}f{i}({args})" if after else f"{p}f{i}({args})"
        ok = [f"if {p}new is not None:", f"    {p}result = {p}new"] if after else []
        if adv.owner is not None:
            ok.append(f"{p}success({p}o{i})")
        attempt = ["try:", f"    {call}", f"except BaseException as {p}exc:"]
        attempt.append(f"    {p}failed({p}a{i}, {p}exc, True)")
        body = [f"{p}n = {p}s{i}.calls", f"{p}s{i}.calls = {p}n + 1"]
        body.append(f"if {p}n & {_SAMPLE_MASK}:")
        body.extend(f"    {line}" for line in attempt)
        if ok:
            body.append("    else:")
            body.extend(f"        {line}" for line in ok)
        body.extend(["else:", f"    {p}t0 = {p}pc()"])
        body.extend(f"    {line}" for line in attempt)
        body.append("    else:")
        body.append(f"        {p}s{i}.sample({p}pc() - {p}t0)")
        body.extend(f"        {line}" for line in ok)
        lines.extend(f"{pad}{line}" for line in body)

    def body(given: str, pad: str) -> None:
        for i, adv in enumerate(befores):
            emit(i, adv, False, given, pad)
        lines.append(f"{pad}{p}result = {p}inner({given})")
        for i, adv in enumerate(afters, start=len(befores)):
            emit(i, adv, True, given, pad)
        lines.append(f"{pad}return {p}result")

    _copies(shape, lines, preamble, _P, body)
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


def _copies(
    shape: CallShape,
    lines: list[str],
    preamble: list[str],
    p: str,
    body: Callable[[str, str], None],
) -> None:
    """Add a layer's body to ``lines``: ``body(arguments, indent)`` adds one copy of it.

    An exact shape has one copy. The generic shape has two: with keywords, and the common call
    without (``f(*args)`` does not build a new dict per call as ``f(*args, **kwargs)`` does).
    A split shape has a fast copy for the call its check recognises, then the generic ones
    for any other call, unpacked into ``{p}args, {p}kwargs``. Each part starts with the
    ``preamble`` (``{call}`` in it: that part's arguments).
    """
    if shape is not GENERIC_SHAPE and not shape.check:
        lines.extend(line.format(call=shape.call) for line in preamble)
        body(shape.call, "    ")
        return
    if shape.check:
        lines.append(f"    if {shape.check}:")
        lines.extend(f"    {line.format(call=shape.call)}" for line in preamble)
        body(shape.call, "        ")
        lines.append(f"    {shape.unpack.format(p=p)}")
    generic = f"*{p}args, **{p}kwargs"
    lines.extend(line.format(call=generic) for line in preamble)
    for branch, given in ((f"if {p}kwargs:", generic), ("if True:", f"*{p}args")):
        lines.append(f"    {branch}")
        body(given, "        ")


_P = "__cp_"
_A = f"*{_P}args, **{_P}kwargs"
_BODIES: dict[str, list[str]] = {
    # ``CALL(expr)`` stands for the counted, isolated call of the advice (result in __cp_r,
    # ``_UNSET`` when it failed and was isolated); ``RETURN_CALL(expr)`` returns the advice's
    # result, or goes on when it failed; ``inner`` is what the advice wraps.
    "override": [
        f"RETURN_CALL({_P}f({_A}))",
        f"return {_P}inner({_A})",
    ],
    "before_while": [  # (``_UNSET`` is truthy: the common answer is one test)
        f"CALL({_P}f({_A}))",
        f"if {_P}r:",
        f"    return {_P}inner({_A})",
        f"return {_P}r",
    ],
    "before_until": [
        f"CALL({_P}f({_A}))",
        f"if not {_P}r or {_P}r is {_P}unset:",
        f"    return {_P}inner({_A})",
        f"return {_P}r",
    ],
    "after_while": [
        f"{_P}x = {_P}inner({_A})",
        f"if not {_P}x:",
        f"    return {_P}x",
        f"CALL({_P}f({_A}))",
        f"return {_P}x if {_P}r is {_P}unset else {_P}r",
    ],
    "after_until": [
        f"{_P}x = {_P}inner({_A})",
        f"if {_P}x:",
        f"    return {_P}x",
        f"CALL({_P}f({_A}))",
        f"return {_P}x if {_P}r is {_P}unset else {_P}r",
    ],
    "filter_return": [
        f"{_P}x = {_P}inner({_A})",
        f"CALL({_P}f({_P}x))",
        f"return {_P}x if {_P}r is {_P}unset else {_P}r",
    ],
    "filter_args": [
        f"CALL({_P}f({_P}args, {_P}kwargs))",
        f"if type({_P}r) is tuple and len({_P}r) == 2 and type({_P}r[0]) is tuple"
        f" and type({_P}r[1]) is dict:",
        f"    return {_P}inner(*{_P}r[0], **{_P}r[1])",
        f"if {_P}r is not {_P}unset:",
        f"    {_P}c = {_P}checked({_P}a, {_P}r)",
        f"    if {_P}c is not None:",
        f"        return {_P}inner(*{_P}c[0], **{_P}c[1])",
        f"return {_P}inner({_A})",
    ],
}


def _generated_layer(
    adv: Advice,
    inner: Callable[..., Any],
    outer: Outer | None = None,
    shape: CallShape = GENERIC_SHAPE,
) -> Callable[..., Any]:
    """One combinator as straight-line generated code: counters, one call in 16 timed.

    ``around`` hands the advice a tracked original (see ``_Tracked``). An exact shape is only
    used through a split one (its fast copy); otherwise the layer takes ``*args, **kwargs``.
    """
    namespace, p, preamble = outer if outer is not None else ({}, _P, [])
    if not shape.check:
        shape = GENERIC_SHAPE
    a_ = f"*{p}args, **{p}kwargs"
    namespace.update(shape.defaults)
    namespace.update({
        f"{p}f": adv.call,
        f"{p}a": adv,
        f"{p}s": adv.stats,
        f"{p}o": adv.owner,
        f"{p}inner": inner,
        f"{p}unset": _UNSET,
        f"{p}failed": _failed,
        f"{p}checked": _checked_args,
        f"{p}pc": perf_counter,
        f"{p}failing": health._consecutive,
        f"{p}success": health.record_success,
        f"{p}tracked": _tracked_class(inner),
    })
    success = [f"if {p}o in {p}failing:", f"    {p}success({p}o)"] if adv.owner else []

    def call(expr: str, indent: str, returns: bool = False) -> list[str]:
        # Two copies of the call: the one timed (one in 16) and the rest, which read no clock.
        # ``returns``: the advice's result is the layer's (on failure, go on after the call).
        def attempt(direct: bool) -> list[str]:
            return [
                "try:",
                f"    return {expr}" if direct else f"    {p}r = {expr}",
                f"except BaseException as {p}e:",
                f"    {p}failed({p}a, {p}e, True)",
                *([] if returns else [f"    {p}r = {p}unset"]),
            ]

        back = [f"    return {p}r"] if returns else []
        ok = [*(["else:"] if success else []), *(f"    {line}" for line in success)]
        ok += back if success else []
        timed_ok = ["else:", f"    {p}s.sample({p}pc() - {p}t0)"]
        timed_ok += [f"    {line}" for line in success] + back
        return [
            f"{indent}{line}"
            for line in [
                f"{p}n = {p}s.calls",
                f"{p}s.calls = {p}n + 1",
                f"if {p}n & {_SAMPLE_MASK}:",
                *(f"    {line}" for line in attempt(returns and not success) + ok),
                "else:",
                f"    {p}t0 = {p}pc()",
                *(f"    {line}" for line in attempt(False) + timed_ok),
            ]
        ]

    lines = [f"def {p}layer({a_ if shape is GENERIC_SHAPE else shape.params}):"]

    def body(args: str, pad: str) -> None:
        if adv.how == "around" and args == shape.call and shape.check:
            lines.extend(pad + line for line in _fast_around(p, args, success, alone))
            return
        if adv.how == "around":
            around = [
                f"        {p}orig = {p}tracked()",
                f"        {p}n = {p}s.calls",
                f"        {p}s.calls = {p}n + 1",
                f"        {p}t0 = 0.0 if {p}n & {_SAMPLE_MASK} else {p}pc()",
                "        try:",
                f"            {p}r = {p}f({p}orig, {args})",
                f"        except BaseException as {p}e:",
                f"            if {p}orig.error is not None and {p}e is {p}orig.error:",
                "                raise",
                f"            {p}failed({p}a, {p}e, True)",
                f"            return {p}orig.outcome({args})",
                f"        if {p}t0:",
                f"            {p}s.sample({p}pc() - {p}t0)",
                *(f"        {line}" for line in success),
                f"        return {p}r",
            ]
            lines.extend(pad + line[8:] for line in around)
            return
        for line in _BODIES[adv.how]:
            if args != a_ and not args.startswith("*"):  # the fast copy of a split shape
                line = line.replace(f"{_P}f({_P}args, {_P}kwargs)", f"{_P}f(\x01, {{}})")
            line = line.replace(_A, "\x00").replace(_P, p).replace("\x00", args)
            line = line.replace("\x01", shape.packed)
            indent = pad + " " * (len(line) - len(line.lstrip()))
            if line.lstrip().startswith("CALL("):
                lines.extend(call(line.strip()[5:-1], indent))
            elif line.lstrip().startswith("RETURN_CALL("):
                lines.extend(call(line.strip()[12:-1], indent, returns=True))
            else:
                lines.append(f"{pad}{line}")

    alone = -1
    if adv.how == "around" and shape.check:
        alone = _tracker(namespace, p, shape, f"<{adv.how} advice on {adv.target}>")
    _copies(shape, lines, preamble, p, body)
    return generate(f"{p}layer", lines, namespace, f"<{adv.how} advice on {adv.target}>")


class _Raised:
    """What a tracked original remembers when its last call raised: the exception."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


_SHARE_TRACKERS = (
    sys.implementation.name == "cpython"
    and hasattr(sys, "getrefcount")
    and getattr(sys, "_is_gil_enabled", lambda: True)()
)
"""Whether an around layer may lend its one tracker to every call that finds it unused (a
reference count test, see :func:`_tracker`): CPython with the GIL only."""


def _tracker(namespace: dict[str, Any], p: str, shape: CallShape, filename: str) -> int:
    """Generate the original handed to around-advice on the fast call into ``namespace``.

    It is a bound method of a small tracker object (``{p}Tracked``; calling it is a plain Python
    call with no ``*args`` repacking) that keeps in its one slot ``out`` how the last call of
    ``{p}inner`` ended: ``{p}unset`` (not called), the result, or the exception as ``_Raised``.

    The layer has one tracker of its own (``{p}t1``, its bound method ``{p}m1``) and lends it
    to a call when nothing else holds ``{p}m1``: the call first takes the method into a local
    variable, then compares ``sys.getrefcount`` with the count of exactly that (the layer's
    namespace, the local, the argument: measured here once). A call that finds more references
    -- another thread's call or a re-entrant one using it, or an advice that kept its ``orig``
    -- makes a tracker of its own, so no two calls ever share tracking state and a kept ``orig``
    called later cannot write into another call's. With the GIL the test and the local's
    reference cannot interleave with another thread's; without it (or without reference
    counts) every call makes its own tracker. Returns the count to compare with, ``-1`` for
    "never lend".
    """
    call = [
        "try:",
        f"    {p}r = {p}inner({{args}})",
        f"except BaseException as {p}e:",
        f"    {p}self.out = {p}Raised({p}e)",
        "    raise",
        f"{p}self.out = {p}r",
        f"return {p}r",
    ]
    lines = [
        f"def {p}tracked_call({p}self, {shape.params}):",  # not in a class body: no mangling
        f"    if {shape.check}:",
        *(f"        {line.format(args=shape.call)}" for line in call),
        f"    {shape.unpack.format(p=_P)}",
        *(f"    {line.format(args=_A)}" for line in call),
    ]
    namespace[f"{p}Raised"] = _Raised
    method = generate(f"{p}tracked_call", lines, namespace, filename)
    tracked = type("_TrackedOriginal", (), {"__slots__": ("out",), "call": method})
    namespace[f"{p}Tracked"] = tracked
    shared = tracked()
    shared.out = _UNSET
    namespace[f"{p}t1"] = shared
    namespace[f"{p}m1"] = shared.call
    namespace[f"{p}grc"] = getattr(sys, "getrefcount", None)
    if not _SHARE_TRACKERS:
        return -1
    probe = [f"def {p}alone():", f"    {p}m = {p}m1", f"    return {p}grc({p}m)"]
    alone = generate(f"{p}alone", probe, namespace, filename)
    count: int = alone()
    kept = namespace[f"{p}m1"]  # one more reference must show
    if alone() != count + 1:
        return -1
    del kept
    return count


def _fast_around(p: str, args: str, success: list[str], alone: int) -> list[str]:
    """The fast copy of an around layer (see :func:`_tracker`); one call in 16 timed."""
    failure = [
        f"except BaseException as {p}e:",
        f"    {p}x = {p}t.out",
        f"    {p}t.out = {p}unset",
        f"    if type({p}x) is {p}Raised:",  # the original's last call raised
        f"        {p}x = {p}x.error",
        f"        if {p}e is {p}x:",
        "            raise",  # the original's own exception, passed through
        f"        {p}failed({p}a, {p}e, True)",
        f"        raise {p}x",
        f"    {p}failed({p}a, {p}e, True)",
        f"    return {p}inner({args}) if {p}x is {p}unset else {p}x",
    ]
    return [
        f"{p}m = {p}m1",
        f"if {p}grc({p}m) == {alone}:" if alone >= 0 else "if False:",
        f"    {p}t = {p}t1",
        "else:",  # in use, or kept by an advice: a tracker of this call's own
        f"    {p}t = {p}Tracked()",
        f"    {p}t.out = {p}unset",
        f"    {p}m = {p}t.call",
        f"{p}n = {p}s.calls",
        f"{p}s.calls = {p}n + 1",
        f"if {p}n & {_SAMPLE_MASK}:",
        "    try:",
        f"        {p}r = {p}f({p}m, {args})",
        *(f"    {line}" for line in failure),
        f"    {p}t.out = {p}unset",  # at once: no call in between that could be interrupted
        "else:",
        f"    {p}t0 = {p}pc()",
        "    try:",
        f"        {p}r = {p}f({p}m, {args})",
        *(f"    {line}" for line in failure),
        f"    {p}t.out = {p}unset",
        f"    {p}s.sample({p}pc() - {p}t0)",
        *success,
        f"return {p}r",
    ]


def _layer(
    adv: Advice,
    inner: Callable[..., Any],
    outer: Outer | None = None,
    shape: CallShape = GENERIC_SHAPE,
) -> Callable[..., Any]:
    """The sync layer of one non-flat combinator."""
    if not adv.is_async:
        return _generated_layer(adv, inner, outer, shape)
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


def compose(
    original: Callable[..., Any],
    pieces: tuple[Advice, ...],
    is_async: bool,
    shape: CallShape = GENERIC_SHAPE,
    outer: Outer | None = None,
) -> Any:
    """Build the call chain around ``original``; ``pieces`` are outermost first.

    With ``outer`` (sync only) the outermost layer is generated into the advised wrapper's
    namespace, so the wrapper can run it as its own code (one call level fewer).
    """
    chain = original
    i = len(pieces)
    while i > 0:
        j = i  # gather the run of before/after pieces ending at i - 1 (innermost side)
        while j > 0 and pieces[j - 1].how in ("before", "after"):
            j -= 1
        last = None if is_async else outer
        if j < i:
            run = pieces[j:i]
            befores = tuple(a for a in run if a.how == "before")
            afters = tuple(a for a in reversed(run) if a.how == "after")
            if is_async:
                chain = _aflat(befores, afters, chain)
            else:
                chain = _flat(befores, afters, chain, shape, last if j == 0 else None)
            i = j
        else:
            if is_async:
                chain = _alayer(pieces[i - 1], chain)
            else:
                chain = _layer(pieces[i - 1], chain, last if i == 1 else None, shape)
            i -= 1
    return chain


def sync_wrapper(target: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    """The advised function: calls the original directly, or the chain once there is advice.

    Generated with the original's own parameters. Its namespace is private (``target.ns``):
    when the outermost layer of the chain is generated code, ``install`` makes it the
    wrapper's own code, so an advised call costs one call level less.
    """
    p, shape = "__cp_", target.shape
    lines = [f"def {p}advised({shape.params}):"]

    def body(call: str, pad: str) -> None:
        lines.extend([
            f"{pad}{p}chain = {p}target.chain",
            f"{pad}if {p}chain is not None and {p}target.owned:",
            f"{pad}    {p}chain = {p}target.scoped_chain()",
            f"{pad}if {p}chain is None:",
            f"{pad}    return {p}fn({call})",
            f"{pad}return {p}chain({call})",
        ])

    if shape.check:  # the fast call, then any other
        _copies(shape, lines, [], p, body)
    else:
        body(shape.call, "    ")
    namespace = {f"{p}target": target, f"{p}fn": fn, **shape.defaults}
    return generate(f"{p}advised", lines, namespace, f"<advisable {target.name}>")


def outer_for(target: Any, generation: int) -> Outer:
    """The ``outer`` spec for building ``target``'s chain into its wrapper's namespace."""
    p = f"__cp{generation}_"
    ns = target.wrapper.__globals__
    ns[f"{p}target"] = target
    ns[f"{p}fn"] = target.original
    ns[f"{p}scope"] = _scope_module.current_scope.get
    ns[f"{p}scopes"] = _scope_module
    preamble: list[str] = []
    if target.owned:  # an organization may exclude some of it: its own chain then
        preamble = [
            f"    {p}sc = {p}scope()",
            f"    if {p}sc is None:",
            f"        {p}sc = {p}scopes._site",
            f"    if {p}sc is not None and {p}sc.excluded:",
            f"        {p}c = {p}target.scoped_chain()",
            f"        if {p}c is not {p}target.chain:",
            f"            return ({p}c or {p}fn)({{call}})",
        ]
    return ns, p, preamble


def install(target: Any) -> None:
    """Make the wrapper run the chain's outermost layer as its own code (or go back to the
    plain wrapper code when the chain is not generated into its namespace)."""
    wrapper = target.wrapper
    chain = target.chain
    fused = chain is not None and getattr(chain, "__globals__", None) is wrapper.__globals__
    wrapper.__code__ = chain.__code__ if fused else target.base_code
