"""How advice is composed around an advisable function: the layers of one advised call.

``compose(original, pieces, is_async, shape)`` builds the chain once per change of the advice on
a target (``core.advice`` keeps the registry). Consecutive before/after pieces become one flat
layer generated as straight-line code; every other combinator is one layer, sync or async.
Sync layers are generated for the target's call shape (``_call_shapes.call_shape``): with a split
shape each has a fast copy for the common call and a generic one for any other. The generated
layers are ``_advice_code``; one piece of advice, its calls and the layers of async advice
``_advice_calls``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from course_plugins.core import scope as _scope_module
from course_plugins.core._advice_calls import Advice, _aflat, _alayer, _layer
from course_plugins.core._advice_code import Outer, _copies, _flat, _generated_layer
from course_plugins.core._call_shapes import GENERIC_SHAPE, CallShape, generate

__all__ = ["compose", "install", "outer_for", "sync_wrapper"]


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
            adv = pieces[i - 1]
            if is_async:
                chain = _alayer(adv, chain)
            elif adv.is_async:  # async advice on a sync function: run to completion in a layer
                chain = _layer(adv, chain)
            else:
                chain = _generated_layer(adv, chain, last if i == 1 else None, shape)
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
