"""The generated layers of sync advice: straight-line code per piece and call shape.

Consecutive before/after pieces become one flat layer (``_flat``); every other combinator one
layer (``_generated_layer``), with around advice's tracked original (``_tracker``). Each is
generated for the target's call shape (``_call_shapes.call_shape``): with a split shape a fast
copy for the common call and a generic one for any other (``_copies``). Counting is per call,
one call in 16 is timed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from time import perf_counter
from typing import Any

from course_plugins.core._advice_calls import (
    _SAMPLE_MASK,
    _UNSET,
    Advice,
    _checked_args,
    _failed,
    _flat_slow,
    _tracked_class,
)
from course_plugins.core._call_shapes import GENERIC_SHAPE, CallShape, generate
from course_plugins.core.health import health

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
