"""Call shapes and generated code: straight-line functions built from a target's parameters.

Like dataclasses' generated ``__init__``: the source is built from the function's own parameter
list, so calls through it pass arguments exactly (no ``*args``/``**kwargs`` repacking at every
level). Used by the advised-call path (``_advice_chain``) and the generated hook runs
(``_hook_runs``).
"""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["GENERIC_SHAPE", "CallShape", "call_shape", "generate", "given_arguments"]

_PREFIX = "__cp_"  # every name the generated code uses for itself starts with this


class CallShape:
    """How generated code declares and forwards a function's parameters.

    ``params`` is the parameter list to declare (``"self, course, *, user=__cp_d0"``), ``call``
    how to pass them on (``"self, course, user=user"``), ``defaults`` the names the declaration
    refers to. The generic shape (``*args, **kwargs``) fits any function.

    A *split* shape (``check`` not empty) serves the common call fast and any other exactly:
    ``check`` is true when the call passed exactly the required parameters, positionally (then
    ``call`` passes them on the same way), and ``unpack`` is the line that otherwise rebuilds
    what the caller passed as ``{p}args, {p}kwargs`` (``{p}``: the generated code's prefix).
    """

    __slots__ = ("params", "call", "defaults", "check", "unpack")

    def __init__(
        self,
        params: str,
        call: str,
        defaults: dict[str, Any],
        check: str = "",
        unpack: str = "",
    ) -> None:
        self.params = params
        self.call = call
        self.defaults = defaults
        self.check = check
        self.unpack = unpack

    @property
    def packed(self) -> str:
        """The fast call's positional arguments as a tuple expression (split shapes)."""
        return f"({self.call},)" if self.call else "()"


GENERIC_SHAPE = CallShape(
    f"*{_PREFIX}args, **{_PREFIX}kwargs", f"*{_PREFIX}args, **{_PREFIX}kwargs", {}
)


MISSING: Any = object()
"""The default of a split shape's parameters: "not passed" (never seen by advice)."""


def given_arguments(
    positional: tuple[Any, ...], names: tuple[str, ...], keywords: tuple[Any, ...]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """What a call of a split-shaped function passed: ``(args, kwargs)``, as the caller did."""
    for i, value in enumerate(positional):
        if value is MISSING:
            positional = positional[:i]
            break
    return positional, {n: v for n, v in zip(names, keywords, strict=True) if v is not MISSING}


def _split_shape(parameters: list[inspect.Parameter]) -> CallShape:
    """The split shape of positional parameters (some may also be passed by keyword)."""
    p, kinds = _PREFIX, inspect.Parameter
    required = sum(1 for param in parameters if param.default is inspect.Parameter.empty)
    names = [param.name for param in parameters if param.kind is kinds.POSITIONAL_OR_KEYWORD]
    slots = [f"{p}p{i}" for i in range(len(parameters))]
    declared = [f"{slot}={p}M" for slot in slots]
    params = ", ".join([*declared, "/", *(f"{name}={p}M" for name in names)])
    checks = [f"{name} is {p}M" for name in names]
    if required:
        checks.insert(0, f"{slots[required - 1]} is not {p}M")
    if len(parameters) > required:
        checks.append(f"{slots[required]} is {p}M")
    unpack = (
        f"{{p}}args, {{p}}kwargs = {p}given(({', '.join(slots)},), "
        f"({', '.join(repr(n) for n in names)}{',' if names else ''}), "
        f"({', '.join(names)}{',' if names else ''}))"
    )
    return CallShape(
        params,
        ", ".join(slots[:required]),
        {f"{p}M": MISSING, f"{p}given": given_arguments},
        " and ".join(checks) or "True",
        unpack,
    )


def call_shape(fn: Callable[..., Any]) -> CallShape:
    """Return the parameter shape generated code uses to wrap ``fn``.

    Advice must receive the arguments exactly as the caller gave them (positional stay
    positional, keywords stay keywords, no defaults filled in). Parameters whose passing style
    is fixed get an exact shape: positional-only and keyword-only ones without defaults.
    Positional parameters that may also be passed by keyword, or have defaults, get a split
    shape (the call passing the required ones positionally is served fast, any other exactly).
    ``*args``/``**kwargs``, keyword-only parameters with defaults, names like the generated
    code's own or like a builtin, or an unreadable signature get the generic shape.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return GENERIC_SHAPE
    parameters = list(signature.parameters.values())
    kinds = inspect.Parameter
    if any(param.name.startswith(_PREFIX) or param.name in _BUILTIN_NAMES for param in parameters):
        return GENERIC_SHAPE
    if any(param.kind is kinds.POSITIONAL_OR_KEYWORD or param.default is not kinds.empty
           for param in parameters) and all(
        param.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD) for param in parameters
    ):
        return _split_shape(parameters)
    params: list[str] = []
    call: list[str] = []
    kinds = inspect.Parameter
    keyword_only_started = False
    for name, param in signature.parameters.items():
        if (
            param.kind in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD, kinds.POSITIONAL_OR_KEYWORD)
            or name.startswith(_PREFIX)
            or param.default is not inspect.Parameter.empty
        ):
            return GENERIC_SHAPE
        if param.kind is kinds.KEYWORD_ONLY and not keyword_only_started:
            keyword_only_started = True
            params.append("*")
        params.append(name)
        call.append(f"{name}={name}" if param.kind is kinds.KEYWORD_ONLY else name)
    positional_only = [p for p in signature.parameters.values() if p.kind is kinds.POSITIONAL_ONLY]
    if positional_only:
        params.insert(len(positional_only), "/")
    return CallShape(", ".join(params), ", ".join(call), {})


_BUILTIN_NAMES = frozenset(dir(builtins))


def generate(
    name: str, lines: list[str], namespace: dict[str, Any], filename: str
) -> Callable[..., Any]:
    """Compile ``lines`` (the source of one function called ``name``) and return the function."""
    code = compile("\n".join(lines), filename, "exec")
    exec(code, namespace)
    fn: Callable[..., Any] = namespace[name]
    return fn
