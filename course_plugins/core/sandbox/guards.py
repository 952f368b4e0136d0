"""The language layer inside the sandbox process: restricted builtins and run-time guards.

``prepare(source, allowed)`` checks the code with the sandbox policy, rewrites every attribute
read ``obj.name`` into ``__cp_getattr__(obj, 'name')`` and compiles it; ``namespace(...)`` builds
fresh globals whose builtins are a reduced, guarded set. The guards refuse at run time what
analysis cannot see: names built from strings (``getattr(x, '_' + '_class__')``), format strings
built at run time (``str.format``/``format_map`` go through a formatter that applies the same
attribute rules), private attributes of anything but the code's own classes, and any attribute
read that would hand out a real module, frame, code object or traceback.

A refused operation raises ``BlockedOperation`` *and* is recorded in ``blocked``: code that
catches the exception still fails the call as a ``SecurityViolation``.
"""

from __future__ import annotations

import ast
import builtins
import sys
import types
from collections.abc import Iterable
from typing import Any, TypeVar

from course_plugins.core.sandbox import facades, ownership
from course_plugins.core.sandbox.formatting import GuardedFormatter, is_str_like
from course_plugins.core.sandbox.policy import (
    SAFE_DUNDER_ATTRS,
    attribute_problem,
    check_source,
    is_dunder,
)

FILENAME = "<sandbox>"
MODULE_NAME = "__sandbox__"
GETATTR_NAME = "__cp_getattr__"
PUBLIC_GETATTR_NAME = "__cp_get__"


class BlockedOperation(Exception):
    """Raised inside the sandbox when code tries an operation the guards refuse."""


#: Every operation refused during this run, as (reason, line) (the process runs one call only).
blocked: list[tuple[str, int | None]] = []

#: Classes created by the sandboxed code (their private attributes are theirs to use).
sandbox_classes: set[type] = set()

_FORBIDDEN_VALUE_TYPES = frozenset({
    types.ModuleType, types.FrameType, types.CodeType, types.TracebackType,
})


def block(reason: str) -> BlockedOperation:
    """Record a refused operation (with the sandboxed line that tried it) and return the
    exception to raise."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename != FILENAME:
        frame = frame.f_back
    blocked.append((reason, frame.f_lineno if frame is not None else None))
    return BlockedOperation(reason)


def _describe_owner(obj: Any) -> str:
    if isinstance(obj, facades.Facade):
        return f"module {obj.__name__!r}"
    return f"a {type(obj).__name__}"


def _owned_by_sandbox(obj: Any, name: str) -> bool:
    cls = obj if isinstance(obj, type) else type(obj)
    mro = cls.__mro__
    if not any(c in sandbox_classes for c in mro):
        return False
    if not isinstance(obj, type):
        try:
            instance_dict = object.__getattribute__(obj, "__dict__")
        except AttributeError:
            instance_dict = None
        if isinstance(instance_dict, dict) and name in instance_dict:
            return True
    for klass in mro:
        if name in vars(klass):
            return klass in sandbox_classes
    return True  # not defined anywhere: AttributeError, or the class's own __getattr__


def check_attribute(obj: Any, name: Any) -> str:
    """Return ``name`` if the sandbox may read it on ``obj``; raise ``BlockedOperation``."""
    if type(name) is not str:
        raise TypeError("attribute name must be a string")
    if name[:1] == "_":
        if is_dunder(name):
            if name not in SAFE_DUNDER_ATTRS:
                raise block(f"attribute {name!r} is not allowed: it reaches interpreter internals")
        elif not _owned_by_sandbox(obj, name):
            raise block(
                f"private attribute {name!r} of {_describe_owner(obj)} is not allowed: only the "
                "code's own classes may use private attributes"
            )
    else:
        problem = attribute_problem(name)
        if problem:
            raise block(problem)
    return name


def guarded_getattr(obj: Any, name: Any, *default: Any) -> Any:
    """``getattr`` for sandboxed code (also what every ``obj.name`` read compiles to)."""
    check_attribute(obj, name)
    if name in ("format", "format_map") and is_str_like(obj):
        return _formatter.format_method(obj, name)
    value = getattr(obj, name, *default)
    if type(value) in _FORBIDDEN_VALUE_TYPES:
        raise block(f"attribute {name!r} leads to a {type(value).__name__}, which is out of reach")
    return value


_formatter = GuardedFormatter(guarded_getattr)


def public_getattr(obj: Any, name: str, _getattr: Any = getattr, _type: Any = type,
                   _forbidden: frozenset[type] = _FORBIDDEN_VALUE_TYPES) -> Any:
    """``obj.name`` for a public name the policy already accepted when it checked the source
    (what most attribute reads compile to): only the value is left to check. (The defaults
    are local names for speed, not arguments: the code only ever passes two.)"""
    value = _getattr(obj, name)
    if _type(value) in _forbidden:
        raise block(f"attribute {name!r} leads to a {type(value).__name__}, which is out of reach")
    return value


def _guarded_hasattr(obj: Any, name: Any) -> bool:
    check_attribute(obj, name)
    return hasattr(obj, name)


def _guarded_setattr(obj: Any, name: Any, value: Any) -> None:
    check_attribute(obj, name)
    setattr(obj, name, value)


def _guarded_delattr(obj: Any, name: Any) -> None:
    check_attribute(obj, name)
    delattr(obj, name)


def _build_class(func: Any, name: str, *bases: Any, **kwargs: Any) -> Any:
    problem = ownership.metaclass_problem(kwargs)
    if problem:
        raise block(f"class {name!r}: {problem}")
    cls = ownership.mark_new(builtins.__build_class__(func, name, *bases, **kwargs), func)
    if isinstance(cls, type) and ownership.checked_class(cls):
        sandbox_classes.add(cls)
    return cls


class Output:
    """Text printed by the code, cut at ``limit`` characters."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def write(self, text: str) -> None:
        if self.truncated:
            return
        room = self.limit - self.size
        if len(text) > room:
            text = text[:room]
            self.truncated = True
        self.parts.append(text)
        self.size += len(text)

    def text(self) -> str:
        return "".join(self.parts)


_SAFE_BUILTIN_NAMES = (
    "abs", "aiter", "all", "anext", "any", "ascii", "bin", "bool", "bytearray", "bytes",
    "callable", "chr", "classmethod", "complex", "dict", "divmod", "enumerate", "filter",
    "float", "format", "frozenset", "hash", "hex", "id", "int", "isinstance", "issubclass",
    "iter", "len", "list", "map", "max", "min", "next", "object", "oct", "ord", "pow",
    "property", "range", "repr", "reversed", "round", "set", "slice", "sorted", "staticmethod",
    "str", "sum", "super", "tuple", "zip", "None", "True", "False", "Ellipsis", "NotImplemented",
)


_BASE: dict[str, Any] = {}


def _base_builtins() -> dict[str, Any]:
    # Built once (in the zygote, before it forks): every run copies it.
    if not _BASE:
        _BASE.update((name, getattr(builtins, name)) for name in _SAFE_BUILTIN_NAMES)
        _BASE.update(
            (name, value)
            for name, value in vars(builtins).items()
            if isinstance(value, type) and issubclass(value, BaseException)
        )
    return _BASE


def safe_builtins(allowed: Iterable[str], output: Output) -> dict[str, Any]:
    """Return the builtins of one sandboxed run: no eval/exec/open/type/vars, guarded getattr,
    ``print`` into ``output`` and ``__import__`` over facades of ``allowed`` modules."""
    allowed = frozenset(allowed)

    def sandbox_print(*args: Any, sep: str | None = " ", end: str | None = "\n",
                      file: Any = None, flush: bool = False) -> None:
        if file is not None:
            raise block("print(file=...) is not available: printed text is captured")
        text = (" " if sep is None else sep).join(map(str, args))
        output.write(text + ("\n" if end is None else end))

    def sandbox_import(name: str, globals: Any = None, locals: Any = None,
                       fromlist: Any = (), level: int = 0) -> Any:
        if level:
            raise block("relative imports are not allowed in sandboxed code")
        if facades.is_internal_import(fromlist):
            module = facades.internal_import(name)
            if module is not None:
                return module
        return facades.import_facade(name, tuple(fromlist or ()), allowed, block)

    namespace = dict(_base_builtins())
    namespace.update({
        "getattr": guarded_getattr,
        "hasattr": _guarded_hasattr,
        "setattr": _guarded_setattr,
        "delattr": _guarded_delattr,
        "print": sandbox_print,
        "__import__": sandbox_import,
        "__build_class__": _build_class,
        "__name__": "builtins",
        GETATTR_NAME: guarded_getattr,
        PUBLIC_GETATTR_NAME: public_getattr,
        ownership.RESTRICTED_BUILTINS_KEY: True,
    })
    return namespace


_Node = TypeVar("_Node", bound=ast.AST)


def _located(new: _Node, old: ast.AST) -> _Node:
    return ast.copy_location(new, old)


def _public(name: str) -> bool:
    # (The parser has normalised the name; the checker has refused internal ones.)
    return not name.startswith("_") and name not in ("format", "format_map")


def _rewrite(node: ast.AST) -> ast.AST:
    if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
        guard = PUBLIC_GETATTR_NAME if _public(node.attr) else GETATTR_NAME
        func = _located(ast.Name(id=guard, ctx=ast.Load()), node)
        name = _located(ast.Constant(value=node.attr), node)
        return _located(ast.Call(func=func, args=[node.value, name], keywords=[]), node)
    return node


def _is_method_call(node: ast.AST, field: str, value: ast.AST) -> bool:
    """``obj.name(...)`` with a public ``name``: the value is only ever called, and none of the
    values the guard keeps out (module, frame, code, traceback) can be called, so it is left
    as it is — at full speed, as most attribute reads in a loop are method calls."""
    return (field == "func" and isinstance(node, ast.Call) and isinstance(value, ast.Attribute)
            and isinstance(value.ctx, ast.Load) and _public(value.attr))


def rewrite_attribute_reads(tree: ast.Module) -> ast.Module:
    """Turn every ``obj.name`` read into a guarded call, in place (iteratively: no recursion).

    Private and ``format`` names go through ``guarded_getattr``; other names, which the checker
    has accepted, through ``public_getattr`` (the value is checked); ``obj.name(...)`` calls of
    public names stay as they are (see ``_is_method_call``).
    """
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        for field, value in ast.iter_fields(node):
            if isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, ast.AST):
                        new = _rewrite(item)
                        if new is not item:
                            value[index] = new
                        stack.append(new)
            elif isinstance(value, ast.AST):
                new = value if _is_method_call(node, field, value) else _rewrite(value)
                if new is not value:
                    setattr(node, field, new)
                stack.append(new)
    return tree


def prepare(source: str, allowed: frozenset[str]) -> types.CodeType:
    """Check, rewrite and compile sandboxed source.

    Raises ``SecurityViolation`` (policy), ``SyntaxError`` (does not parse).
    """
    tree = check_source(source, FILENAME, mode="sandbox", allowed_modules=allowed)
    return compile(rewrite_attribute_reads(tree), FILENAME, "exec")


def namespace(
    inputs: dict[str, Any], allowed: frozenset[str], output: Output
) -> dict[str, Any]:
    """Fresh globals for one run: restricted builtins plus the caller's inputs.

    They are the namespace of a module registered as ``__sandbox__`` (in this process only), as
    library code such as ``dataclasses`` looks up a class's module in ``sys.modules``.
    """
    module = types.ModuleType(MODULE_NAME)
    glob: dict[str, Any] = module.__dict__
    glob["__builtins__"] = safe_builtins(allowed, output)
    glob.update(inputs)
    sys.modules[MODULE_NAME] = module
    return glob
