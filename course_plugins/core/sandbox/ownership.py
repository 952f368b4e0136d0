"""What untrusted code made itself, and which double-underscore names it may use.

Plugin and sandboxed code may change its own classes and use their private attributes; the
classes of the host and of the standard library (which facades hand out) are not its to change.
Every class built by a ``class`` statement of untrusted code is marked (``mark``) by that code's
``__build_class__``; ``made_by_untrusted`` tells the two apart, whatever the class's name or module
says. Functions of untrusted code are recognised by their builtins (``RESTRICTED_BUILTINS_KEY``
is in every restricted builtins dict, and a function's builtins cannot be changed).

``SAFE_DUNDER_ATTRS`` is the one list of double-underscore attributes untrusted code may read,
write and define as methods: names that only give strings or ordinary bound methods, and whose
definition cannot intercept what library code does with an object (``__setattr__``,
``__getattr__``, ``__set_name__``, descriptors, ``__init_subclass__``, ``__reduce__``, ``__del__``
are not on it).
"""

from __future__ import annotations

import keyword
import sys
import types
import unicodedata
import weakref
from typing import Any

MARK = "__cp_untrusted__"
RESTRICTED_BUILTINS_KEY = "__cp_restricted__"

_OPERATORS = (
    "add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "divmod", "pow", "lshift",
    "rshift", "and", "xor", "or",
)

SAFE_DUNDER_ATTRS: frozenset[str] = frozenset({
    "__name__", "__qualname__", "__doc__", "__module__", "__init__", "__post_init__",
    "__enter__", "__exit__", "__aenter__", "__aexit__", "__iter__", "__next__", "__aiter__",
    "__anext__", "__await__", "__len__", "__length_hint__", "__contains__", "__getitem__",
    "__setitem__", "__delitem__", "__missing__", "__reversed__", "__eq__", "__ne__", "__lt__",
    "__le__", "__gt__", "__ge__", "__hash__", "__repr__", "__str__", "__format__", "__bool__",
    "__call__", "__neg__", "__pos__", "__abs__", "__invert__", "__int__", "__float__",
    "__complex__", "__index__", "__round__", "__trunc__", "__floor__", "__ceil__",
    *(f"__{op}__" for op in _OPERATORS),
    *(f"__r{op}__" for op in _OPERATORS),
    *(f"__i{op}__" for op in _OPERATORS if op != "divmod"),
})


_class_dict = type.__dict__["__dict__"].__get__
_class_module = type.__dict__["__module__"].__get__
_class_qualname = type.__dict__["__qualname__"].__get__


# The classes of checked class statements, by identity: a class built at run time can carry
# ``MARK`` in its namespace (which only makes it its maker's own, as it is), not get in here.
_checked: weakref.WeakSet[type] = weakref.WeakSet()


def mark(cls: type) -> type:
    """Record that untrusted code made ``cls`` with a checked class statement (returns it)."""
    type.__setattr__(cls, MARK, True)
    _checked.add(cls)
    return cls


def mark_new(cls: Any, body: types.FunctionType) -> Any:
    """Mark ``cls``, what a class statement whose body is ``body`` produced, if it is a class
    built from that body (its module is the body's); a metaclass that returns some other,
    existing class does not make it untrusted code's. Returns ``cls``."""
    if isinstance(cls, type) and _class_dict(cls).get("__module__") == body.__globals__.get(
        "__name__"
    ):
        mark(cls)
    return cls


def checked_class(cls: type) -> bool:
    """Whether ``cls`` itself was made by a class statement of untrusted code (so its body
    passed the policy), as opposed to one derived from such a class by other means."""
    return cls in _checked


def host_class(cls: type) -> bool:
    """Whether ``cls`` is a class of the host or the standard library: found again under its
    module and qualified name, in a module that is not untrusted code's."""
    try:
        module = sys.modules.get(_class_module(cls))
        if module is None or isinstance(module.__dict__.get("__builtins__"), dict) and (
            module.__dict__["__builtins__"].get(RESTRICTED_BUILTINS_KEY)
        ):
            return False
        found: Any = module
        for part in _class_qualname(cls).split("."):
            found = found.__dict__[part] if isinstance(found, types.ModuleType) else (
                _class_dict(found)[part] if isinstance(found, type) else None
            )
        return found is cls
    except (KeyError, TypeError, AttributeError):
        return False


def processable_class(cls: Any) -> bool:
    """Whether library code that reads a class's namespace and compiles from it (dataclasses)
    may be given ``cls``: it was made by a checked class statement, and every class in its MRO
    (and their metaclasses) is ``object``, such a class, or a host class."""
    if not isinstance(cls, type) or not checked_class(cls):
        return False
    for klass in _class_dict(type)["__mro__"].__get__(cls):
        for each in (klass, type(klass)):
            if each is not object and each is not type and not (
                checked_class(each) or host_class(each)
            ):
                return False
    return True


def made_by_untrusted(obj: Any) -> bool:
    """Whether ``obj`` is a class untrusted code made (or derived from one), or an instance of
    one."""
    cls = obj if isinstance(obj, type) else type(obj)
    return getattr(cls, MARK, False) is True


def is_untrusted_function(obj: Any) -> bool:
    """Whether ``obj`` is a function defined by untrusted code (its builtins are restricted)."""
    if not isinstance(obj, types.FunctionType):
        return False
    builtins = getattr(obj, "__builtins__", None)  # (3.10+; read from its globals)
    return type(builtins) is dict and builtins.get(RESTRICTED_BUILTINS_KEY) is True


def owned(obj: Any) -> bool:
    """Whether untrusted code may change ``obj``: its own function, class or instance."""
    return is_untrusted_function(obj) or made_by_untrusted(obj)


def foreign(obj: Any) -> bool:
    """Whether ``obj`` is a class or a function of the host (or the standard library): what
    untrusted code may use but not change."""
    if isinstance(obj, type):
        return not made_by_untrusted(obj)
    return isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)) and not (
        is_untrusted_function(obj)
    )


def plain_name(name: Any) -> bool:
    """Whether ``name`` could be bound by an ordinary statement of untrusted code: an exact
    ``str``, an identifier that is not a keyword and not double-underscore (NFKC, as Python
    reads it)."""
    if type(name) is not str or not name.isidentifier() or keyword.iskeyword(name):
        return False
    name = name if name.isascii() else unicodedata.normalize("NFKC", name)
    return not (len(name) > 4 and name.startswith("__") and name.endswith("__"))


#: Double-underscore keys a class namespace built at run time may carry besides
#: ``SAFE_DUNDER_ATTRS``: what a class statement's body puts there itself.
_NAMESPACE_METADATA = frozenset({
    "__module__", "__qualname__", "__doc__", "__annotations__", "__slots__", "__classcell__",
    "__orig_bases__", "__type_params__", "__static_attributes__", "__firstlineno__",
})


def namespace_problem(namespace: Any) -> str | None:
    """Why a class namespace built at run time (``type(name, bases, ns)``, a metaclass) is
    refused, or ``None``: it may not define what a class statement of untrusted code may not
    (``__reduce_ex__``, ``__getattr__``, ``__del__``, the ownership mark...), which would hand
    library code hooks that set or read any attribute of any object (``copy``'s reduce
    protocol, ``update_wrapper``)."""
    if not isinstance(namespace, dict):
        return "the class namespace must be a dict"
    for key in list(dict.keys(namespace)):  # (what type() copies, whatever a subclass says)
        if type(key) is not str:
            return f"class attribute names must be strings, not {type(key).__name__}"
        name = key if key.isascii() else unicodedata.normalize("NFKC", key)
        if (name.startswith("__") and name.endswith("__") and len(name) > 4
                and name not in SAFE_DUNDER_ATTRS and name not in _NAMESPACE_METADATA):
            return (
                f"a class made at run time may not define {name!r}: it would change what the "
                "interpreter or library code does with its objects (use a class statement)"
            )
    return None


def metaclass_problem(kwargs: dict[str, Any]) -> str | None:
    """Why the keywords of a class statement are refused, or ``None``: a ``metaclass`` that is
    not a class (a function) receives the checked namespace and may add anything to it."""
    meta = kwargs.get("metaclass", type)
    if not isinstance(meta, type):
        return "metaclass= must be a class: a function may rewrite the class namespace"
    return None


#: What ``copy`` consults on an object's class before ``_reconstruct`` calls a function and
#: then sets attributes (``state``) on whatever that function returned.
_COPY_HOOKS = ("__reduce_ex__", "__reduce__", "__getstate__", "__getnewargs__",
               "__getnewargs_ex__")

_COPY_OK: weakref.WeakSet[type] = weakref.WeakSet()

_C_FUNCTIONS = (types.MethodDescriptorType, types.WrapperDescriptorType,
                types.ClassMethodDescriptorType)


def _host_hook(value: Any) -> bool:
    if value is None or isinstance(value, _C_FUNCTIONS):
        return True
    if isinstance(value, (staticmethod, classmethod)):
        return _host_hook(value.__func__)
    if isinstance(value, types.FunctionType):
        return not is_untrusted_function(value)
    if isinstance(value, types.BuiltinFunctionType):
        owner = getattr(value, "__self__", None)
        return owner is None or isinstance(owner, types.ModuleType)  # not a bound {..}.get
    return False


def copy_problem(cls: type) -> str | None:
    """Why ``copy`` may not reconstruct an instance of ``cls``, or ``None``.

    Its reduce hooks must be the host's own functions (or C methods): a hook untrusted code
    supplied (a functional ``enum`` or a class made from a namespace) chooses which object
    ``copy`` then sets attributes on — a host class, a shared module facade — with any name,
    the ownership mark included.
    """
    if cls in _COPY_OK:
        return None
    for klass in _class_dict(type)["__mro__"].__get__(cls):
        namespace = _class_dict(klass)
        for name in _COPY_HOOKS:
            if name in namespace and not _host_hook(namespace[name]):
                return (
                    f"copying a {_class_qualname(cls)!r} is refused: its {name} comes from "
                    "untrusted code, and copy would set attributes on whatever it returns"
                )
    _COPY_OK.add(cls)  # (every class can be weakly referenced)
    return None


def instance_copy_problem(obj: Any) -> str | None:
    """Like ``copy_problem`` for reduce hooks set on the object itself (``copy`` reads them
    with ``getattr``, so an instance's own ``__dict__`` comes first)."""
    try:
        own = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return None
    if type(own) is not dict:
        return None
    for name in _COPY_HOOKS:
        if name in own and not _host_hook(own[name]):
            return f"copying this {type(obj).__name__!r} is refused: its own {name} is untrusted"
    return None

