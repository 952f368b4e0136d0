"""Read-only facades of the allow-listed standard-library modules.

Sandboxed and plugin code never receives a real module object: ``import random`` gives a
``Facade`` holding only the vetted public names of ``random``. Names that lead elsewhere —
submodules and imported modules (``random._os``, ``typing.sys``, ``json.decoder``), functions
that evaluate strings (``typing.get_type_hints``), walk attributes by name
(``operator.attrgetter``, ``string.Formatter``), start processes (``uuid.getnode``) or reach the
event loop (``asyncio.get_running_loop``) — are simply not there. Shared mutable state of the
host is not handed out either: ``random`` functions use a private ``Random`` instance and
``decimal`` offers ``localcontext`` but not the thread's context.
"""

from __future__ import annotations

import importlib
import random as _random_module
import sys
import threading
import time as _time_module
import types
from collections.abc import Callable
from typing import Any

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
        if isinstance(value, types.ModuleType):
            continue  # a submodule or an imported module: the way out we are closing
        values[attr] = value
    if name == "time":
        values["sleep"] = sliced_sleep
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
