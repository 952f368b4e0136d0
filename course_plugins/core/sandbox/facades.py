"""Read-only facades of the allow-listed standard-library modules.

Sandboxed and plugin code never receives a real module object: ``import random`` gives a
``Facade`` holding only the vetted public names of ``random``. Names that lead elsewhere —
submodules and imported modules (``random._os``, ``typing.sys``, ``json.decoder``), functions
that evaluate strings (``typing.get_type_hints``), walk attributes by name
(``operator.attrgetter``, ``string.Formatter``), start processes (``uuid.getnode``) or reach the
event loop (``asyncio.get_running_loop``) — are simply not there. Shared mutable state of the
host is not handed out either: ``random`` functions use a private ``Random`` instance and
``decimal`` offers ``localcontext`` but not the thread's context.

A few offered functions do on the caller's behalf what the policy forbids the caller to do
itself; they are offered guarded (``_GUARDS``), whatever objects they are given:

- reading attributes the caller names: ``functools.update_wrapper``/``wraps`` take only the
  standard ``WRAPPER_ASSIGNMENTS``/``WRAPPER_UPDATES`` names (``assigned=('__globals__',)`` would
  hand over a function's real globals and builtins), and change only the caller's own objects;
- turning the caller's strings into code: ``dataclasses.dataclass``/``make_dataclass`` compile
  field names into source, so they process only classes made by a checked class statement
  (with bases of the same kind or the host's), and every field name must be a plain identifier;
- handing out a class factory or a module: ``typing.get_origin``/``get_args`` refuse to return a
  metaclass (``get_origin(typing.Type)`` is ``type``, which builds classes with any
  double-underscore method) or a real module.
"""

from __future__ import annotations

import copy as _copy_module
import functools
import importlib
import random as _random_module
import sys
import threading
import time as _time_module
import types
from collections.abc import Callable, Iterable
from typing import Any

from course_plugins.core.sandbox import ownership, waits
from course_plugins.core.sandbox.errors import SecurityViolation
from course_plugins.core.watchdog import checkpoint

# None = the module's public names (``__all__``, else names without a leading underscore).
_SPECS: dict[str, tuple[str, ...] | None] = {
    "__future__": None,
    "math": None,
    "json": ("dumps", "loads", "dump", "load", "JSONDecodeError", "JSONEncoder", "JSONDecoder"),
    "re": None,
    "datetime": (
        "date",
        "datetime",
        "time",
        "timedelta",
        "timezone",
        "tzinfo",
        "MINYEAR",
        "MAXYEAR",
        "UTC",
    ),
    "time": (
        "time",
        "time_ns",
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "process_time",
        "process_time_ns",
        "sleep",
        "strftime",
        "strptime",
        "gmtime",
        "localtime",
        "mktime",
        "asctime",
        "ctime",
        "struct_time",
        "timezone",
        "altzone",
        "daylight",
        "tzname",
    ),
    "random": None,
    "statistics": None,
    "collections": None,
    "collections.abc": None,
    "itertools": None,
    "functools": (
        "reduce",
        "partial",
        "partialmethod",
        "lru_cache",
        "cache",
        "cached_property",
        "cmp_to_key",
        "total_ordering",
        "wraps",
        "update_wrapper",
        "WRAPPER_ASSIGNMENTS",
        "WRAPPER_UPDATES",
    ),
    "string": (
        "ascii_letters",
        "ascii_lowercase",
        "ascii_uppercase",
        "digits",
        "hexdigits",
        "octdigits",
        "punctuation",
        "printable",
        "whitespace",
        "capwords",
        "Template",
    ),
    "textwrap": None,
    "decimal": None,
    "fractions": ("Fraction",),
    "typing": None,
    "dataclasses": None,
    "enum": None,
    "uuid": (
        "UUID",
        "uuid3",
        "uuid4",
        "uuid5",
        "NAMESPACE_DNS",
        "NAMESPACE_URL",
        "NAMESPACE_OID",
        "NAMESPACE_X500",
        "SafeUUID",
    ),
    "hashlib": (
        "md5",
        "sha1",
        "sha224",
        "sha256",
        "sha384",
        "sha512",
        "sha3_224",
        "sha3_256",
        "sha3_384",
        "sha3_512",
        "shake_128",
        "shake_256",
        "blake2b",
        "blake2s",
        "new",
        "algorithms_available",
        "algorithms_guaranteed",
        "pbkdf2_hmac",
    ),
    "hmac": ("new", "compare_digest", "digest", "HMAC", "digest_size"),
    "base64": None,
    "operator": None,
    "copy": ("copy", "deepcopy", "Error"),
    "html": ("escape", "unescape"),
    "unicodedata": None,
    # Locks for plugins whose handlers run in several threads; no Thread, Timer or settrace.
    "threading": ("Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "Event",
                  "Barrier", "BrokenBarrierError", "local", "get_ident"),
    # Coroutine plumbing only: nothing that reaches the event loop, threads, sockets or processes.
    "asyncio": (
        "sleep",
        "gather",
        "wait",
        "wait_for",
        "shield",
        "create_task",
        "ensure_future",
        "as_completed",
        "timeout",
        "timeout_at",
        "TaskGroup",
        "Event",
        "Lock",
        "Semaphore",
        "BoundedSemaphore",
        "Condition",
        "Barrier",
        "Queue",
        "PriorityQueue",
        "LifoQueue",
        "QueueEmpty",
        "QueueFull",
        "TimeoutError",
        "CancelledError",
        "InvalidStateError",
        "iscoroutine",
        "iscoroutinefunction",
        "current_task",
        "Future",
        "Task",
        "FIRST_COMPLETED",
        "FIRST_EXCEPTION",
        "ALL_COMPLETED",
    ),
}

# Public names left out of a facade on purpose (with the reason).
_EXCLUDE: dict[str, frozenset[str]] = {
    # evaluates strings (annotations) with eval()
    "typing": frozenset({"get_type_hints", "ForwardRef"}),
    # attrgetter("__class__") / methodcaller("__subclasses__") are getattr by string
    "operator": frozenset({"attrgetter", "methodcaller"}),
    # the thread's shared context (plugins would change the host's arithmetic); metaclasses
    "decimal": frozenset(
        {"getcontext", "setcontext", "DefaultContext", "BasicContext", "ExtendedContext"}
    ),
    # metaclasses, and helpers that write into other modules' namespaces
    "enum": frozenset(
        {
            "EnumType",
            "EnumMeta",
            "global_enum",
            "global_enum_repr",
            "global_str",
            "global_flag_repr",
            "pickle_by_global_name",
            "pickle_by_enum_name",
        }
    ),
    "re": frozenset({"template"}),
}

# Attributes that are facades of submodules (``collections.abc``).
_SUBMODULES: dict[str, tuple[str, ...]] = {"collections": ("abc",)}

KNOWN_MODULES = frozenset(_SPECS)

# A time limit can only interrupt Python between bytecodes: sleep in slices so it can.
_SLEEP_SLICE = 0.05


def sliced_sleep(seconds: float) -> None:
    """``time.sleep`` that wakes every 50 ms, so an in-process time limit can interrupt it."""
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    end = _time_module.monotonic() + seconds
    while True:
        checkpoint()  # a budget that ran out is raised here (library code is never interrupted)
        remaining = end - _time_module.monotonic()
        if remaining <= 0:
            return
        _time_module.sleep(min(remaining, _SLEEP_SLICE))


class Facade(types.ModuleType):
    """A read-only module object holding vetted names of one real module."""

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"module {self.__name__!r} is read-only here")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"module {self.__name__!r} is read-only here")

    def __repr__(self) -> str:
        return f"<module {self.__name__!r} (safe facade)>"


# Behind the ``random`` facade: seeding from plugin code leaves the host's generator alone.
_generator = _random_module.Random()


def reseed() -> None:
    """Seed the facade's generator afresh from the OS (each forked sandbox child calls this:
    a fork copies the generator's state, which would repeat the same numbers in every child)."""
    _generator.seed()


def _private_random() -> dict[str, Any]:
    generator = _generator
    shared = _random_module._inst  # the instance behind the module-level functions
    names: dict[str, Any] = {}
    for name in _random_module.__all__:
        value = getattr(_random_module, name)
        if getattr(value, "__self__", None) is shared:
            value = getattr(generator, name)
        names[name] = value
    return names


def _public_names(module: types.ModuleType) -> list[str]:
    exported = getattr(module, "__all__", None)
    if exported is not None:
        return list(exported)
    return [n for n in dir(module) if not n.startswith("_")]


# -- guarded functions -------------------------------------------------------------------------

Refusal = Callable[[str], BaseException]


def _default_refusal(reason: str) -> BaseException:
    return SecurityViolation(reason)


_refusal: list[Refusal] = [_default_refusal]


def set_refusal(refuse: Refusal) -> None:
    """Choose the exception a guarded facade function raises (the sandbox records it)."""
    _refusal[0] = refuse


def _refuse(reason: str) -> BaseException:
    return _refusal[0](reason)


def _like(function: Callable[..., Any], real: Callable[..., Any]) -> None:
    # Name and doc of the function it guards, without the ``__wrapped__`` link back to it.
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(function, attr, getattr(real, attr, None))


def _names(values: Iterable[Any], allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = tuple(values)
    for name in names:
        if type(name) is not str or name not in allowed:
            raise _refuse(f"functools.{what} may only name {', '.join(allowed)}, not {name!r}")
    return names


def _guard_functools(values: dict[str, Any]) -> dict[str, Any]:
    assignments = tuple(functools.WRAPPER_ASSIGNMENTS)
    updates = tuple(functools.WRAPPER_UPDATES)

    def update_wrapper(wrapper: Any, wrapped: Any, assigned: Iterable[str] = assignments,
                       updated: Iterable[str] = updates) -> Any:
        assigned = _names(assigned, assignments, "update_wrapper(assigned=...)")
        updated = _names(updated, updates, "update_wrapper(updated=...)")
        if not ownership.owned(wrapper):
            raise _refuse(
                f"functools.update_wrapper may only change this code's own objects, not a "
                f"{type(wrapper).__name__}"
            )
        for attr in assigned:
            try:
                value = getattr(wrapped, attr)
            except AttributeError:
                continue
            setattr(wrapper, attr, value)
        if updated:  # ("__dict__",): copied by setattr, and another's private parts stay there
            mine = ownership.owned(wrapped)
            for key, value in dict(getattr(wrapped, "__dict__", None) or {}).items():
                if type(key) is str and (mine or not key.startswith("_")):
                    setattr(wrapper, key, value)
        wrapper.__wrapped__ = wrapped
        return wrapper

    def wraps(wrapped: Any, assigned: Iterable[str] = assignments,
              updated: Iterable[str] = updates) -> Any:
        assigned = _names(assigned, assignments, "wraps(assigned=...)")
        updated = _names(updated, updates, "wraps(updated=...)")
        return functools.partial(update_wrapper, wrapped=wrapped, assigned=assigned,
                                 updated=updated)

    real_total_ordering = values["total_ordering"]

    def total_ordering(cls: Any) -> Any:
        if not ownership.owned(cls):
            raise _refuse("functools.total_ordering may only change this code's own classes")
        return real_total_ordering(cls)

    _like(update_wrapper, values["update_wrapper"])
    _like(wraps, values["wraps"])
    _like(total_ordering, real_total_ordering)
    return {"update_wrapper": update_wrapper, "wraps": wraps, "total_ordering": total_ordering}


def _field_names(cls: type) -> list[Any]:
    names: list[Any] = list(cls.__dict__.get("__annotations__", None) or {})
    for klass in cls.__mro__:
        fields = klass.__dict__.get("__dataclass_fields__")
        if fields is not None:
            if type(fields) is not dict:
                raise _refuse(f"{klass.__name__}.__dataclass_fields__ is not a plain dict")
            names.extend(fields)
            names.extend(getattr(f, "name", None) for f in fields.values())
    return names


def _check_fields(names: Iterable[Any]) -> None:
    for name in names:
        if name is not None and not ownership.plain_name(name):
            raise _refuse(
                f"dataclass field name {name!r:.60} is not allowed: field names must be plain "
                "identifiers (they are compiled into the generated methods)"
            )


def _guard_dataclasses(values: dict[str, Any]) -> dict[str, Any]:
    real_dataclass = values["dataclass"]
    real_make_dataclass = values["make_dataclass"]

    def check(cls: Any) -> None:
        if not ownership.processable_class(cls):
            raise _refuse(
                "dataclasses.dataclass() only processes classes defined by a class statement of "
                "this code (deriving from such classes or the standard library's)"
            )
        _check_fields(_field_names(cls))

    def dataclass(cls: Any = None, /, **options: Any) -> Any:
        def wrap(klass: Any) -> Any:
            check(klass)
            made = real_dataclass(klass, **options)
            return ownership.mark(made) if made is not klass else made  # (slots=True)

        return wrap if cls is None else wrap(cls)

    def make_dataclass(cls_name: str, fields: Iterable[Any], *, bases: tuple[type, ...] = (),
                       namespace: dict[str, Any] | None = None, **options: Any) -> Any:
        fields = list(fields)
        _check_fields([f if isinstance(f, str) else (f[0] if isinstance(f, tuple) and f
                                                     else None) for f in fields])
        if not ownership.plain_name(cls_name):
            raise _refuse(f"dataclass name {cls_name!r:.60} is not a plain identifier")
        for key in namespace or {}:
            if not ownership.plain_name(key) and key not in ownership.SAFE_DUNDER_ATTRS:
                raise _refuse(f"make_dataclass(namespace=...) may not define {key!r:.60}")
        for base in bases:
            if not (ownership.processable_class(base) or ownership.host_class(base)):
                raise _refuse("make_dataclass(bases=...) takes only classes of class statements")
            _check_fields(_field_names(base))
        return ownership.mark(real_make_dataclass(cls_name, fields, bases=bases,
                                                  namespace=namespace, **options))

    def private_fields(obj: Any) -> bool:
        if ownership.owned(obj):
            return False
        fields = getattr(type(obj), "__dataclass_fields__", None)
        return type(fields) is dict and any(
            type(name) is not str or name.startswith("_") for name in fields
        )

    def public_fields_only(real: Callable[..., Any], recursive: bool) -> Callable[..., Any]:
        # asdict/astuple/replace/fields read every field by name, private ones included (and
        # asdict/astuple those of every dataclass inside): another's object (the host's) only
        # when all its fields are public.
        def reader(obj: Any, *args: Any, **kwargs: Any) -> Any:
            stack, seen = [obj], 0
            while stack:
                item = stack.pop()
                seen += 1
                if private_fields(item):
                    raise _refuse(f"dataclasses.{real.__name__} would read private fields of "
                                  f"a {type(item).__name__}")
                if not recursive or seen > 100_000:
                    break
                if hasattr(type(item), "__dataclass_fields__") and not isinstance(item, type):
                    stack.extend(getattr(item, name) for name in type(item).__dataclass_fields__
                                 if type(name) is str)
                elif type(item) in (list, tuple):
                    stack.extend(item)
                elif type(item) is dict:
                    stack.extend(item.keys())
                    stack.extend(item.values())
            return real(obj, *args, **kwargs)

        _like(reader, real)
        return reader

    _like(dataclass, real_dataclass)
    _like(make_dataclass, real_make_dataclass)
    readers: dict[str, Any] = {
        name: public_fields_only(values[name], name in ("asdict", "astuple"))
        for name in ("asdict", "astuple", "replace", "fields") if name in values
    }
    return {"dataclass": dataclass, "make_dataclass": make_dataclass, **readers}


def _out_of_reach(value: Any) -> bool:
    if isinstance(value, type):
        return issubclass(value, type)
    return isinstance(value, types.ModuleType) and not isinstance(value, Facade)


def _guard_typing(values: dict[str, Any]) -> dict[str, Any]:
    real_get_origin = values["get_origin"]
    real_get_args = values["get_args"]

    def get_origin(tp: Any) -> Any:
        origin = real_get_origin(tp)
        if _out_of_reach(origin):
            raise _refuse(f"typing.get_origin would hand out {origin!r}, which is out of reach")
        return origin

    def get_args(tp: Any) -> tuple[Any, ...]:
        args: tuple[Any, ...] = real_get_args(tp)
        if any(_out_of_reach(arg) for arg in args):
            raise _refuse("typing.get_args would hand out a class factory or a module")
        return args

    def marks_own_only(real: Callable[..., Any]) -> Callable[..., Any]:
        # final, override, no_type_check and runtime_checkable set attributes on what they
        # decorate (runtime_checkable changes how isinstance treats a protocol).
        def decorator(arg: Any) -> Any:
            if ownership.foreign(arg):
                raise _refuse(f"typing.{real.__name__} may only mark this code's own classes "
                              "and functions")
            return real(arg)

        _like(decorator, real)
        return decorator

    _like(get_origin, real_get_origin)
    _like(get_args, real_get_args)
    marking: dict[str, Any] = {name: marks_own_only(values[name])
               for name in ("final", "override", "no_type_check", "runtime_checkable")
               if name in values}
    return {"get_origin": get_origin, "get_args": get_args, **marking}


def _guard_copy(values: dict[str, Any]) -> dict[str, Any]:
    real_deepcopy = values["deepcopy"]

    def deepcopy(x: Any, memo: Any = None) -> Any:
        # The memo keeps every original it walked through, private attributes' values included.
        if memo is not None:
            raise _refuse("copy.deepcopy(memo=...) is not offered: it hands back every object "
                          "it walked through")
        return real_deepcopy(x)

    _like(deepcopy, real_deepcopy)
    return {"deepcopy": deepcopy}


def _guard_copy_reconstruct() -> None:
    """Make the standard library's ``copy`` refuse to rebuild objects whose reduce hooks come
    from untrusted code (``ownership.copy_problem``), process-wide: host code that copies a
    value a plugin returned takes the same path as plugin code. Idempotent."""
    real = _copy_module._reconstruct  # type: ignore[attr-defined]
    if getattr(real, "_cp_guarded", False):
        return

    def _reconstruct(x: Any, memo: Any, *args: Any, **kwargs: Any) -> Any:
        problem = ownership.copy_problem(type(x)) or ownership.instance_copy_problem(x)
        if problem:
            raise _refuse(problem)
        return real(x, memo, *args, **kwargs)

    _reconstruct._cp_guarded = True  # type: ignore[attr-defined]
    _copy_module._reconstruct = _reconstruct  # type: ignore[attr-defined]


_guard_copy_reconstruct()


_GUARDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "copy": _guard_copy,
    "functools": _guard_functools,
    "dataclasses": _guard_dataclasses,
    "typing": _guard_typing,
}


def _build(name: str) -> Facade:
    module = importlib.import_module(name)
    spec = _SPECS[name]
    wanted = _public_names(module) if spec is None else list(spec)
    excluded = _EXCLUDE.get(name, frozenset())
    values: dict[str, Any] = {}
    overrides = _private_random() if name == "random" else {}
    for attr in wanted:
        if attr.startswith("_") or attr in excluded or not hasattr(module, attr):
            continue
        value = overrides.get(attr, getattr(module, attr))
        if isinstance(value, types.ModuleType) or _out_of_reach(value):
            continue  # a submodule, an imported module or a metaclass: the ways out we close
        values[attr] = value
    if name == "time":
        values["sleep"] = sliced_sleep
    if name == "threading":  # locks whose waits a time budget can end (see ``waits``)
        values.update((n, getattr(waits, n)) for n in waits.__all__ if n in values)
    if name in _GUARDS:
        values.update(_GUARDS[name](values))
    for sub in _SUBMODULES.get(name, ()):
        values[sub] = facade(f"{name}.{sub}")
    result = Facade(name, module.__doc__)
    result.__dict__.update(values)
    result.__dict__["__all__"] = sorted(n for n in values if not isinstance(values[n], Facade))
    return result


_cache: dict[str, Facade] = {}
_lock = threading.RLock()  # re-entrant: building a facade builds its submodule facades


def facade(name: str) -> Facade:
    """Return the (cached, shared, read-only) facade of module ``name``.

    Raises ``KeyError`` if ``name`` is not one of ``KNOWN_MODULES``.
    """
    found = _cache.get(name)
    if found is not None:
        return found
    if name not in _SPECS:
        raise KeyError(f"no safe facade for module {name!r}; known: {sorted(_SPECS)}")
    with _lock:
        found = _cache.get(name)
        if found is None:
            found = _cache[name] = _build(name)
    return found


def is_internal_import(fromlist: object) -> bool:
    """Whether an ``__import__`` call comes from C code of the standard library.

    ``PyImport_Import``, which C functions use for their own lazy imports (``datetime.strptime``
    imports ``_strptime``), calls the *running code's* ``__import__`` with an empty **list** as
    fromlist, then takes the module from ``sys.modules`` itself. Python code's import statements
    pass ``None`` or a tuple, and calling ``__import__`` directly is refused by the policy.
    """
    return type(fromlist) is list and not fromlist


def internal_import(name: str) -> types.ModuleType | None:
    """The real module for a standard-library C function's own import, or ``None``.

    The module goes back to the C function, never to the code that called it.
    """
    module = sys.modules.get(name)
    if module is None:
        try:
            module = importlib.import_module(name)
        except ImportError:  # (a sandbox child cannot open files: everything is preloaded)
            return None
    return module


def import_facade(
    name: str,
    fromlist: tuple[str, ...] | list[str] | None,
    allowed: frozenset[str],
    refuse: Callable[[str], BaseException],
) -> Facade:
    """Do what ``__import__(name, fromlist=fromlist)`` does, over facades of ``allowed`` modules.

    ``import a.b`` returns the facade of ``a`` (whose attribute ``b`` is the facade of ``a.b``);
    ``from a.b import c`` returns the facade of ``a.b``. Raises ``refuse(reason)`` for a module
    outside ``allowed`` or without a facade, and ``ImportError`` for a missing name.
    """
    if not isinstance(name, str) or not name:
        raise refuse(f"import of {name!r} is not allowed")
    top = name.partition(".")[0]
    if name not in allowed or name not in _SPECS or (not fromlist and top not in allowed):
        raise refuse(
            f"import of {name!r} is not allowed: allowed modules are {', '.join(sorted(allowed))}"
        )
    target = facade(name)
    for item in fromlist or ():
        if item != "*" and item not in target.__dict__:
            raise ImportError(f"cannot import name {item!r} from {name!r} (not offered here)")
    return target if fromlist else facade(top)
