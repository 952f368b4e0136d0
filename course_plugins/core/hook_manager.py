"""Hooks: named extension points where plugins register functions, run as NORMAL/ABNORMAL/FILTER.

``HookManager.get_instance()`` is the process-wide manager; ``HookManager()`` an isolated one. Both
start with the standard hooks of ``core.standard`` defined. A hook function that raises a veto
(``VETO_EXCEPTIONS``) refuses the operation: the exception reaches the caller unchanged. Any other
exception from a plugin's function is isolated (logged with the plugin id, counted against its
health) and the run goes on; ``options.strict`` re-raises instead.

Registries are copy-on-write: a run iterates over an immutable snapshot, so adding or removing a
function while a run is in progress (from inside a hook function or another thread) never skips
or doubles another function. A removed function is not called again, even by a run in progress.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any, TypeVar, overload

from course_plugins.core._calls import (
    REMOVED,
    SKIPPED,
    VETO_EXCEPTIONS,
    CallStats,
    Registration,
    call_guarded_async,
    run_abnormal,
    run_filter,
    run_normal,
)
from course_plugins.core._process_wide import ProcessWide
from course_plugins.core.standard import STANDARD_HOOKS
from course_plugins.exceptions import HookTypeError

__all__ = [
    "VETO_EXCEPTIONS",
    "CallStats",
    "Hook",
    "HookManager",
    "HookType",
    "Registration",
    "hook",
]

F = TypeVar("F", bound=Callable[..., Any])


class HookType(StrEnum):
    """How a hook combines its functions' results."""

    NORMAL = "NORMAL"  # call all; return the list of results
    ABNORMAL = "ABNORMAL"  # stop at the first non-None result; return it
    FILTER = "FILTER"  # thread the first positional argument through every function


class Hook:
    """One named hook: its type, description and registered functions in call order."""

    def __init__(
        self, name: str, hook_type: HookType = HookType.NORMAL, description: str = ""
    ) -> None:
        self.name = name
        self.type = hook_type
        self.description = description
        self.defined = False  # True once ``define`` gave it a type
        self._regs: tuple[Registration, ...] = ()
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._where = f"hook {name}"

    def __repr__(self) -> str:
        return f"<Hook {self.name} {self.type.value} functions={len(self._regs)}>"

    @overload
    def add(
        self,
        fn: F,
        *,
        priority: int = ...,
        owner: str | None = ...,
        timeout: float | None = ...,
    ) -> F: ...

    @overload
    def add(
        self,
        fn: None = ...,
        *,
        priority: int = ...,
        owner: str | None = ...,
        timeout: float | None = ...,
    ) -> Callable[[F], F]: ...

    def add(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        priority: int = 10,
        owner: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Register ``fn``; lower ``priority`` runs earlier, equal ones in registration order.

        Works as ``@hook.add``, ``@hook.add(priority=5)`` and ``hook.add(fn)``; returns ``fn``.
        ``owner`` is the plugin id (``None`` for platform code); ``timeout`` the seconds of budget
        (plugin functions default to ``options.hook_timeout``). Adding a function that is already
        registered replaces its registration (new priority, owner, timeout).
        """
        if fn is None:
            return lambda f: self.add(f, priority=priority, owner=owner, timeout=timeout)
        if not callable(fn):
            raise TypeError(f"hook {self.name!r}: {fn!r} is not callable")
        with self._lock:
            reg = Registration(fn, priority, owner, timeout, CallStats(), next(self._seq))
            kept = []
            for old in self._regs:
                if old.fn == fn:
                    old.mode = REMOVED
                else:
                    kept.append(old)
            kept.append(reg)
            kept.sort(key=_sort_key)
            self._regs = tuple(kept)
        return fn

    def remove(self, fn: Callable[..., Any]) -> bool:
        """Unregister ``fn``; return whether it was registered."""
        return self._remove(lambda reg: reg.fn == fn) > 0

    def remove_owner(self, owner: str) -> int:
        """Unregister every function of ``owner``; return how many were removed."""
        return self._remove(lambda reg: reg.owner == owner)

    def clear(self) -> None:
        """Unregister every function."""
        self._remove(lambda reg: True)

    def _remove(self, match: Callable[[Registration], bool]) -> int:
        with self._lock:
            gone = [reg for reg in self._regs if match(reg)]
            if gone:
                for reg in gone:
                    reg.mode = REMOVED  # a run holding the old snapshot skips it
                self._regs = tuple(reg for reg in self._regs if reg.mode != REMOVED)
        return len(gone)

    @property
    def functions(self) -> list[Callable[..., Any]]:
        """The registered functions in call order."""
        return [reg.fn for reg in self._regs]

    @property
    def registrations(self) -> tuple[Registration, ...]:
        """The registrations (fn, priority, owner, timeout, stats) in call order."""
        return self._regs

    def __len__(self) -> int:
        return len(self._regs)

    def __iter__(self) -> Iterator[Callable[..., Any]]:
        return iter(self.functions)

    def run_sync(self, *args: Any, **kwargs: Any) -> Any:
        """Run the hook from sync code; see :meth:`HookManager.run_sync`."""
        hook_type = self.type
        if hook_type is HookType.NORMAL:
            return run_normal(self._regs, args, kwargs, self._where)
        if hook_type is HookType.FILTER:
            if not args:
                raise self._filter_needs_value()
            return run_filter(self._regs, args, kwargs, self._where)
        return run_abnormal(self._regs, args, kwargs, self._where)

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the hook from async code; see :meth:`HookManager.run`."""
        hook_type = self.type
        if hook_type is HookType.FILTER and not args:
            raise self._filter_needs_value()
        regs, where = self._regs, self._where
        if hook_type is HookType.FILTER:
            value, rest = args[0], args[1:]
            for reg in regs:
                if reg.mode != REMOVED:
                    result = await call_guarded_async(reg, (value, *rest), kwargs, where)
                    if result is not SKIPPED and result is not None:
                        value = result
            return value
        results = []
        for reg in regs:
            if reg.mode == REMOVED:
                continue
            result = await call_guarded_async(reg, args, kwargs, where)
            if result is SKIPPED:
                continue
            if hook_type is HookType.ABNORMAL:
                if result is not None:
                    return result
            else:
                results.append(result)
        return None if hook_type is HookType.ABNORMAL else results

    def _filter_needs_value(self) -> HookTypeError:
        return HookTypeError(
            f"hook {self.name!r} is a FILTER hook: run it with the value to filter as the first "
            f"positional argument, e.g. run_sync({self.name!r}, value)"
        )

    def describe(self) -> dict[str, Any]:
        """Return ``name, type, description, functions`` (each with plugin, priority and stats)."""
        return {
            "name": self.name,
            "type": self.type.value,
            "description": self.description,
            "functions": [
                {
                    "name": reg.name,
                    "plugin": reg.owner,
                    "priority": reg.priority,
                    "timeout": reg.timeout,
                    "async": reg.is_async,
                    **reg.stats.as_dict(),
                }
                for reg in self._regs
            ],
        }


def _sort_key(reg: Registration) -> tuple[int, int]:
    return (reg.priority, reg.seq)


class HookManager(ProcessWide):
    """A registry of hooks; ``get_instance()`` is the process-wide one."""

    def __init__(self, *, standard: bool = True) -> None:
        self._hooks: dict[str, Hook] = {}
        self._lock = threading.Lock()
        if standard:
            for spec in STANDARD_HOOKS:
                self.define(spec.name, HookType(spec.kind.value), description=spec.description)

    def __getitem__(self, name: str) -> Hook:
        """Return the hook ``name``, creating it as an untyped ``NORMAL`` hook on first use."""
        hook_ = self._hooks.get(name)
        if hook_ is None:
            with self._lock:
                hook_ = self._hooks.get(name)
                if hook_ is None:
                    hook_ = self._hooks[name] = Hook(name)
        return hook_

    def __contains__(self, name: object) -> bool:
        return name in self._hooks

    def get(self, name: str) -> Hook | None:
        """Return the hook ``name`` if it exists, without creating it."""
        return self._hooks.get(name)

    def names(self) -> list[str]:
        """Return the names of all hooks, sorted."""
        return sorted(self._hooks)

    def define(self, name: str, hook_type: HookType | str, *, description: str = "") -> Hook:
        """Declare the hook ``name`` with its type; return it.

        Defining it again with the same type is a no-op (a new non-empty description replaces
        the old). A hook first created by use gets the type. Raises ``HookTypeError`` when the
        hook was already defined with another type.
        """
        hook_type = HookType(hook_type)
        with self._lock:
            hook_ = self._hooks.get(name)
            if hook_ is None:
                hook_ = self._hooks[name] = Hook(name)
            if hook_.defined and hook_.type is not hook_type:
                raise HookTypeError(
                    f"hook {name!r} is already defined as {hook_.type.value}; it cannot become "
                    f"{hook_type.value}. Use another hook name, or define it with "
                    f"HookType.{hook_.type.value}."
                )
            hook_.type = hook_type
            hook_.defined = True
            if description:
                hook_.description = description
        return hook_

    def run_sync(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run hook ``name`` from sync code (an event loop may or may not be running).

        Returns, by type: NORMAL the list of results in call order; ABNORMAL the first non-None
        result or ``None``; FILTER the first positional argument after every function had its
        turn. Raises a veto from a function unchanged; ``HookTypeError`` (a ``TypeError``) when
        a FILTER hook gets no positional argument. An unknown hook runs as an empty NORMAL hook.
        """
        hook_ = self._hooks.get(name)
        if hook_ is None:
            return []
        return hook_.run_sync(*args, **kwargs)

    async def run(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run hook ``name`` from async code; same results and errors as :meth:`run_sync`.

        ``async def`` functions are awaited in call order; sync ones are called in the loop's
        thread (they should be quick).
        """
        hook_ = self._hooks.get(name)
        if hook_ is None:
            return []
        return await hook_.run(*args, **kwargs)

    def remove_owner(self, owner: str) -> int:
        """Remove every function ``owner`` (a plugin id) added to any hook; return the count."""
        return sum(hook_.remove_owner(owner) for hook_ in list(self._hooks.values()))

    def describe(self) -> list[dict[str, Any]]:
        """Return every hook (sorted by name) as ``Hook.describe()`` dicts, for inspectors."""
        return [self._hooks[name].describe() for name in self.names()]


def hook(name: str, priority: int = 10) -> Callable[[F], F]:
    """Decorator: register the function on hook ``name`` of the process-wide manager.

    Returns the function unchanged, so decorators stack.
    """

    def decorator(fn: F) -> F:
        return HookManager.get_instance()[name].add(fn, priority=priority)

    return decorator
