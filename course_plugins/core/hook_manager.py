"""Hooks: named extension points where plugins register functions, run as NORMAL/ABNORMAL/FILTER.

``HookManager.get_instance()`` is the process-wide manager; ``HookManager()`` an isolated one. Both
start with the standard hooks of ``core.standard`` defined. A hook function that raises a veto
(``VETO_EXCEPTIONS``) refuses the operation: the exception reaches the caller unchanged. Any other
exception from a plugin's function is isolated (logged with the plugin id, counted against its
health) and the run goes on; ``options.strict`` re-raises instead.

Registries are copy-on-write: a run iterates over an immutable snapshot, so adding or removing a
function while a run is in progress (from inside a hook function or another thread) never skips
or doubles another function. A removed function is not called again, even by a run in progress;
re-adding a registered function replaces its registration in place, so the run keeps it.
Registering costs O(log N) (a sorted list with ``bisect``, a key index; snapshots built lazily).

Contracts other layers build on:

- Every registration has a ``key`` stable across processes and reloads: ``"<plugin>:<qualname>"``
  for a plugin's function (``owner`` ``"name@version"`` gives ``name``), ``":<module>.<qualname>"``
  for platform code. A *different* function of the same plugin under a key already on the hook
  is refused with ``ValueError``. ``describe()`` rows carry ``key`` and ``enabled``.
- ``HookManager.set_override(key, enabled=..., priority=...)`` / ``clear_override`` /
  ``overrides()``: an operator's switch, applied to every hook where the key is and to
  registrations added later. Disabled functions are left out of the run snapshot (no cost).
- ``Hook.observer``: when set, runs are handed to it (``observer.run`` / ``observer.arun``)
  with the registrations in order; registrations carry ``shadow``, which plain runs skip. A
  sync run the observer does not record goes back through ``Hook.run_unobserved``. An observer
  with ``compile_run`` (the run recorder) gives warm hooks a generated recorded run instead;
  the hook then applies the observer's sampling itself (``enabled``, ``sample``: one run in
  ``sample`` recorded, counted by ``runs``), so a run left out is the plain generated run.
- Organizations: runs skip registrations whose plugin is in ``core.scope.effective().excluded``
  (one snapshot per excluded set, cached; nothing to pay when there is no scope).
- ``Hook.fail_closed`` (default: FILTER/NORMAL hooks named ``before-*``), overridable per
  registration: an error or overrun there raises ``PluginFailedClosed`` (a veto) instead.
- ``HookManager.current()``: the hook running in this thread and the function it is calling
  (found by looking at the stack, so runs pay nothing for it); ``Hook.runs`` counts runs.

Speed: a hook that has run a few times runs its snapshot as generated straight-line code
(``core._hook_runs``, made per number of positional arguments), the same calls the loops of
``core._calls`` make without the loop (with a run recorder as observer: its generated recorded
run); runs with keywords, with another observer, or of very long snapshots use the loops.
"""

from __future__ import annotations

import bisect
import itertools
import sys
import threading
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar, overload

from course_plugins.core import scope as _scope_module
from course_plugins.core._calls import (
    REMOVED,
    RUN_CODES,
    SKIPPED,
    VETO_EXCEPTIONS,
    CallStats,
    Registration,
    call_guarded_async,
    check_priority,
    fn_key,
    run_abnormal,
    run_filter,
    run_normal,
)
from course_plugins.core._hook_runs import MAX_ARITY, MAX_STEPS, compile_run, retire
from course_plugins.core._process_wide import ProcessWide
from course_plugins.core.standard import STANDARD_HOOKS
from course_plugins.core.watchdog import is_run_code
from course_plugins.exceptions import HookTypeError

__all__ = [
    "VETO_EXCEPTIONS",
    "CallStats",
    "CurrentCall",
    "Hook",
    "HookManager",
    "HookType",
    "Registration",
    "hook",
]

F = TypeVar("F", bound=Callable[..., Any])

_get_scope = _scope_module.current_scope.get


class HookType(StrEnum):
    """How a hook combines its functions' results."""

    NORMAL = "NORMAL"  # call all; return the list of results
    ABNORMAL = "ABNORMAL"  # stop at the first non-None result; return it
    FILTER = "FILTER"  # thread the first positional argument through every function


class CurrentCall(NamedTuple):
    """What :meth:`HookManager.current` returns: the running hook and the function being called."""

    hook: str
    function: Callable[..., Any]
    key: str
    plugin: str | None


Override = tuple[bool | None, int | None]  # (enabled, priority); None keeps the plugin's own
Runner = Callable[[tuple[Any, ...], int], Any]  # a generated run: run(args, untimed)


def _no_runners() -> tuple[dict[Any, Any], ...]:
    return tuple({} for _ in range(MAX_ARITY + 1))  # index: the number of positional arguments


class Hook:
    """One named hook: its type, description and registered functions in call order.

    ``observer``: when set, every run is handed to ``observer.run(hook, registrations, args,
    kwargs)`` (``await observer.arun(...)`` from async code), which returns the run's result;
    ``registrations`` are the enabled ones in call order for the current scope, shadow ones
    included. ``runs`` counts the runs. ``fail_closed``: whether a function's error or overrun
    refuses the operation (:class:`PluginFailedClosed`) instead of being skipped; by default true
    for FILTER and NORMAL hooks whose name starts with ``before-``. It applies to plugins'
    functions; platform code fails open unless registered with ``fail_closed=True``.
    """

    def __init__(
        self,
        name: str,
        hook_type: HookType = HookType.NORMAL,
        description: str = "",
        *,
        overrides: dict[str, Override] | None = None,
    ) -> None:
        self.name = name
        self.type = hook_type
        self.description = description
        self.defined = False  # True once ``define`` gave it a type
        self._observer: Any = None
        self.runs = 0
        self._fail_closed: bool | None = None
        self._order: list[Registration] = []  # every registration, by (priority, seq)
        self._by_fn: dict[Any, Registration] = {}
        self._by_key: dict[str, Registration] = {}
        # Run snapshots, built lazily per excluded set (``None``: no scope); replaced, never
        # mutated, on any change, so a run in progress keeps iterating its own tuple.
        self._cache: dict[Any, tuple[Registration, ...]] = {}
        # Generated runs of the plain snapshots (``core._hook_runs``): per number of positional
        # arguments, per excluded set; made once the hook has served _WARM runs without an
        # observer or keywords, dropped with the snapshots.
        self._runners: tuple[dict[Any, Runner], ...] = _no_runners()
        self._cold = 0
        # Generated recorded runs (an observer's ``compile_run``), per number of positional
        # arguments, per excluded set: ``(recorded run, plain run or None)``; the plain run
        # serves the runs the observer leaves out (``None``: every run is recorded).
        self._recorded: tuple[dict[Any, tuple[Any, Runner | None]], ...] = _no_runners()
        self._cold_recorded = 0
        self._overrides = overrides if overrides is not None else {}
        self._lock = threading.RLock()
        self._seq = itertools.count()
        self._where = f"hook {name}"

    def __repr__(self) -> str:
        return f"<Hook {self.name} {self.type.value} functions={len(self._order)}>"

    # -- observer --------------------------------------------------------------------------------

    @property
    def observer(self) -> Any:
        """The object runs are handed to (see the class docstring), or ``None``."""
        return self._observer

    @observer.setter
    def observer(self, value: Any) -> None:
        if value is self._observer:
            return  # the site sets it again whenever it follows the database: keep the runs
        with self._lock:
            self._observer = value
            self._drop_recorded()

    def _drop_recorded(self) -> None:
        recorded, self._recorded = self._recorded, _no_runners()
        for by_scope in recorded:
            for run, _plain in by_scope.values():
                if run is not None:
                    retire(run)
        self._cold_recorded = 0

    # -- fail closed -----------------------------------------------------------------------------

    @property
    def fail_closed(self) -> bool:
        """Whether functions without their own choice fail closed (see the class docstring)."""
        if self._fail_closed is not None:
            return self._fail_closed
        return self.type is not HookType.ABNORMAL and self.name.startswith("before-")

    @fail_closed.setter
    def fail_closed(self, value: bool | None) -> None:
        self._fail_closed = value  # None restores the default
        self._refresh_closed()

    def _refresh_closed(self) -> None:
        for reg in self._order:
            self._set_closed(reg)

    def _set_closed(self, reg: Registration) -> None:
        # Platform code (no owner) fails open unless it asked otherwise.
        if reg.fail_closed is not None:
            reg.closed = reg.fail_closed
        else:
            reg.closed = reg.owner is not None and self.fail_closed

    # -- registering -----------------------------------------------------------------------------

    @overload
    def add(
        self,
        fn: F,
        *,
        priority: int = ...,
        owner: str | None = ...,
        timeout: float | None = ...,
        key: str | None = ...,
        shadow: bool = ...,
        fail_closed: bool | None = ...,
    ) -> F: ...

    @overload
    def add(
        self,
        fn: None = ...,
        *,
        priority: int = ...,
        owner: str | None = ...,
        timeout: float | None = ...,
        key: str | None = ...,
        shadow: bool = ...,
        fail_closed: bool | None = ...,
    ) -> Callable[[F], F]: ...

    def add(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        priority: int = 10,
        owner: str | None = None,
        timeout: float | None = None,
        key: str | None = None,
        shadow: bool = False,
        fail_closed: bool | None = None,
    ) -> Any:
        """Register ``fn``; lower ``priority`` runs earlier, equal ones in registration order.

        Works as ``@hook.add``, ``@hook.add(priority=5)`` and ``hook.add(fn)``; returns ``fn``.
        ``owner`` is the plugin id (``None`` for platform code); ``timeout`` the seconds of budget
        (plugin functions default to ``options.hook_timeout``); ``key`` the stable name (default
        ``"<plugin>:<qualname>"``, ``":<module>.<qualname>"`` for platform code); ``shadow`` and
        ``fail_closed`` see :class:`Registration`.

        Adding a function that is already registered replaces its registration in place (new
        priority, owner, timeout): a run in progress still calls it. Raises ``ValueError`` when
        another function of the same plugin already has that key on this hook (platform code
        gets ``#2``, ``#3``... appended instead). Costs O(log N).
        """
        if fn is None:
            return lambda f: self.add(
                f,
                priority=priority,
                owner=owner,
                timeout=timeout,
                key=key,
                shadow=shadow,
                fail_closed=fail_closed,
            )
        if not callable(fn):
            raise TypeError(f"hook {self.name!r}: {fn!r} is not callable")
        check_priority(priority, f"hook {self.name!r}")
        # Everything the hook needs of ``fn`` is read before the lock (see ``fn_key``).
        new = Registration(
            fn,
            priority,
            owner,
            timeout,
            CallStats(),
            key=key,
            shadow=shadow,
            fail_closed=fail_closed,
        )
        with self._lock:
            reg = self._by_fn.get(new.fkey)
            if reg is not None:
                self._take_out(reg)
                self._unindex(reg)
                reg.replace(priority, owner, timeout, shadow, fail_closed)
                if key:
                    reg.key = key
            else:
                reg = new
                reg.seq = next(self._seq)
            reg.key = self._free_key(reg, explicit=bool(key))
            self._by_fn[reg.fkey] = reg
            self._by_key[reg.key] = reg
            self._apply_override(reg)
            bisect.insort(self._order, reg, key=_sort_key)
            self._set_closed(reg)
            self._changed()
        return fn

    def _free_key(self, reg: Registration, explicit: bool) -> str:
        clash = self._by_key.get(reg.key)
        if clash is None or clash is reg:
            return reg.key
        if reg.plugin is not None or explicit:
            raise ValueError(
                f"hook {self.name!r}: key {reg.key!r} is already used by {clash.name} "
                f"(plugin {clash.owner or 'platform'}); give {reg.name} another name or an "
                "explicit key"
            )
        base, n = reg.key, 2
        while f"{base}#{n}" in self._by_key:
            n += 1
        return f"{base}#{n}"

    def _take_out(self, reg: Registration) -> None:
        """Remove ``reg`` from ``_order`` (O(log N) search; call before changing its priority)."""
        order = self._order
        i = bisect.bisect_left(order, _sort_key(reg), key=_sort_key)
        if i < len(order) and order[i] is reg:
            del order[i]
        else:  # pragma: no cover - the order is kept sorted; be safe anyway
            order.remove(reg)

    def _unindex(self, reg: Registration) -> None:
        if self._by_key.get(reg.key) is reg:
            del self._by_key[reg.key]

    def _apply_override(self, reg: Registration) -> None:
        enabled, priority = self._overrides.get(reg.key, (None, None))
        reg.enabled = True if enabled is None else enabled
        reg.priority = reg.base_priority if priority is None else priority

    def _override_changed(self, key: str) -> None:
        with self._lock:
            reg = self._by_key.get(key)
            if reg is not None:
                self._take_out(reg)
                self._apply_override(reg)
                bisect.insort(self._order, reg, key=_sort_key)
                self._changed()

    def remove(self, fn: Callable[..., Any], *, owner: str | None = None) -> bool:
        """Unregister ``fn`` (only ``owner``'s, when given); return whether it was registered."""
        fkey = fn_key(fn)
        with self._lock:
            reg = self._by_fn.get(fkey)
            if reg is None or (owner is not None and reg.owner != owner):
                return False
            self._drop([reg])
        return True

    def remove_owner(self, owner: str) -> int:
        """Unregister every function of ``owner``; return how many were removed."""
        with self._lock:
            return self._drop([reg for reg in self._order if reg.owner == owner])

    def clear(self) -> None:
        """Unregister every function."""
        with self._lock:
            self._drop(list(self._order))

    def _drop(self, gone: list[Registration]) -> int:
        if not gone:
            return 0
        for reg in gone:
            reg.mode = REMOVED  # a run holding an old snapshot skips it
            self._by_fn.pop(reg.fkey, None)
            self._unindex(reg)
        if len(gone) == 1:
            self._take_out(gone[0])
        else:
            self._order = [reg for reg in self._order if reg.mode != REMOVED]
        self._changed()
        return len(gone)

    def _changed(self) -> None:
        """Drop the snapshots and their generated runs (lock held); a run in progress through
        one of those finishes through the loop, which sees every change at once."""
        self._cache = {}
        runners, self._runners = self._runners, _no_runners()
        for by_scope in runners:
            for run in by_scope.values():
                retire(run)
        self._cold = 0
        self._drop_recorded()

    # -- reading ---------------------------------------------------------------------------------

    @property
    def functions(self) -> list[Callable[..., Any]]:
        """The registered functions in call order (disabled and shadow ones included)."""
        return [reg.fn for reg in self._order]

    @property
    def registrations(self) -> tuple[Registration, ...]:
        """The registrations (fn, key, priority, owner, timeout, stats...) in call order."""
        return tuple(self._order)

    def get(self, key: str) -> Registration | None:
        """The registration with ``key`` on this hook, or ``None``."""
        return self._by_key.get(key)

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[Callable[..., Any]]:
        return iter(self.functions)

    def snapshot(self, excluded: frozenset[str] | None = None) -> tuple[Registration, ...]:
        """The registrations a run calls, in order: enabled, not shadow, not ``excluded``."""
        regs = self._cache.get(excluded)
        if regs is None:
            regs = self._build(excluded)
        return regs

    def observed(self, excluded: frozenset[str] | None = None) -> tuple[Registration, ...]:
        """What an observer gets: like :meth:`snapshot`, shadow registrations included."""
        regs = self._cache.get(("observed", excluded))  # cached beside the plain snapshots
        return regs if regs is not None else self._build(excluded, shadow=True)

    def _build(
        self, excluded: frozenset[str] | None, shadow: bool = False
    ) -> tuple[Registration, ...]:
        with self._lock:
            regs = tuple(
                reg
                for reg in self._order
                if reg.enabled
                and (shadow or not reg.shadow)
                and (excluded is None or reg.plugin is None or reg.plugin not in excluded)
            )
            if len(self._cache) > 64:  # a few distinct excluded sets are expected
                self._cache = {}
                self._runners = _no_runners()  # same snapshots: nothing to retire
                self._recorded = _no_runners()
            self._cache[("observed", excluded) if shadow else excluded] = regs
        return regs

    # -- running ---------------------------------------------------------------------------------

    def run_sync(self, *args: Any, **kwargs: Any) -> Any:
        """Run the hook from sync code; see :meth:`HookManager.run_sync`."""
        return self._run_sync(args, kwargs)

    def _run_sync(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        runs = self.runs  # before this run: a hook's first run is a timed one
        self.runs = runs + 1
        scope = _get_scope()
        if scope is None:
            scope = _scope_module._site
        excluded = None if scope is None else scope.excluded
        arity = len(args)
        observer = self._observer
        if arity <= MAX_ARITY and not kwargs:
            if observer is None:
                run = self._runners[arity].get(excluded)
                if run is not None:
                    return run(args, runs & 15)
                self._cold += 1
                if self._cold >= _WARM:
                    run = self._compile(excluded, arity)
                    if run is not None:
                        return run(args, runs & 15)
            else:
                pair = self._recorded[arity].get(excluded)
                if pair is None:
                    self._cold_recorded += 1
                    if self._cold_recorded >= _WARM:
                        pair = self._compile_recorded(observer, excluded, arity)
                if pair is not None:
                    recorded, plain = pair
                    # The recorder's sampling, tested here: a run it leaves out is a plain run.
                    if plain is not None and (not observer.enabled or runs % observer.sample):
                        return plain(args, runs & 15)
                    if recorded is not None:
                        return recorded(args, runs & 15, scope)
        regs = self._cache.get(excluded)
        if regs is None:
            regs = self._build(excluded)
        hook_type = self.type
        if observer is not None:
            if hook_type is HookType.FILTER and not args:
                raise self._filter_needs_value()
            return observer.run(self, self.observed(excluded), args, kwargs)
        if hook_type is HookType.NORMAL:
            return run_normal(regs, args, kwargs, self._where)
        if hook_type is HookType.FILTER:
            if not args:
                raise self._filter_needs_value()
            return run_filter(regs, args, kwargs, self._where)
        return run_abnormal(regs, args, kwargs, self._where)

    def run_unobserved(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run as an unobserved run would, generated run included: the observer's way out for a
        run it does not record (it already counted in ``runs``). Same results and errors."""
        scope = _get_scope()
        if scope is None:
            scope = _scope_module._site
        excluded = None if scope is None else scope.excluded
        arity = len(args)
        if arity <= MAX_ARITY and not kwargs:
            run = self._runners[arity].get(excluded)
            if run is None:
                self._cold += 1
                if self._cold >= _WARM:
                    run = self._compile(excluded, arity)
            if run is not None:
                return run(args, (self.runs - 1) & 15)
        regs = self.snapshot(excluded)
        if self.type is HookType.NORMAL:
            return run_normal(regs, args, kwargs, self._where)
        if self.type is HookType.FILTER:
            return run_filter(regs, args, kwargs, self._where)
        return run_abnormal(regs, args, kwargs, self._where)

    def _compile_recorded(
        self, observer: Any, excluded: frozenset[str] | None, arity: int
    ) -> tuple[Any, Runner | None] | None:
        """Ask ``observer`` for the generated recorded run of the observed snapshot and keep it
        with the plain run (lock held meanwhile). ``None``: the observer makes none (runs go to
        ``observer.run``), nor does it for a snapshot it cannot generate (``(None, None)``)."""
        compile_run = getattr(observer, "compile_run", None)
        if compile_run is None:
            self._cold_recorded = -(1 << 62)  # an observer of its own: every run is its own
            return None
        with self._lock:
            regs = self.observed(excluded)
            recorded = compile_run(self, regs, arity)
            shadowed = any(reg.shadow for reg in regs)
            plain = None
            if not shadowed:
                plain = self._runners[arity].get(excluded) or self._compile(excluded, arity)
            pair = (recorded, plain)  # (None, None): not generated, not tried again
            self._recorded[arity][excluded] = pair
        return pair

    def _compile(self, excluded: frozenset[str] | None, arity: int) -> Runner | None:
        """Generate the run of the snapshot for ``excluded`` and keep it (lock held meanwhile,
        so no change can slip between the snapshot and its run)."""
        with self._lock:
            regs = self.snapshot(excluded)
            run = compile_run(self.type.value, regs, self._where, arity)
            if run is not None:
                self._runners[arity][excluded] = run
            elif len(regs) > MAX_STEPS:
                self._cold = -(1 << 62)  # too long to generate: not again for these
        return run

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the hook from async code; see :meth:`HookManager.run`."""
        self.runs += 1
        hook_type = self.type
        if hook_type is HookType.FILTER and not args:
            raise self._filter_needs_value()
        scope = _get_scope()
        if scope is None:
            scope = _scope_module._site
        excluded = None if scope is None else scope.excluded
        if self._observer is not None:
            return await self._observer.arun(self, self.observed(excluded), args, kwargs)
        regs = self.snapshot(excluded)
        where = self._where
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
        """Return ``name, type, description, runs, fail_closed, functions``.

        Each function has ``name, key, plugin, priority, enabled, shadow, fail_closed, timeout,
        async`` and its stats; disabled and shadow functions are listed too.
        """
        return {
            "name": self.name,
            "type": self.type.value,
            "description": self.description,
            "runs": self.runs,
            "fail_closed": self.fail_closed,
            "functions": [
                {
                    "name": reg.name,
                    "key": reg.key,
                    "plugin": reg.owner,
                    "priority": reg.priority,
                    "enabled": reg.enabled,
                    "shadow": reg.shadow,
                    "fail_closed": reg.closed,
                    "timeout": reg.timeout,
                    "async": reg.is_async,
                    **reg.stats.as_dict(),
                }
                for reg in self._order
            ],
        }


def _sort_key(reg: Registration) -> tuple[int, int]:
    return (reg.priority, reg.seq)


_WARM = 4
"""Runs (without keywords, at most ``MAX_ARITY`` positional arguments) a hook serves through
the loop before its run is generated: a compile costs ~0.1 ms per function, not worth it for a
snapshot that runs once or twice."""


RUN_CODES.add(Hook.run.__code__)


class HookManager(ProcessWide):
    """A registry of hooks; ``get_instance()`` is the process-wide one."""

    def __init__(self, *, standard: bool = True) -> None:
        self._hooks: dict[str, Hook] = {}
        self._overrides: dict[str, Override] = {}
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
                    hook_ = self._hooks[name] = Hook(name, overrides=self._overrides)
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
                hook_ = self._hooks[name] = Hook(name, overrides=self._overrides)
            if hook_.defined and hook_.type is not hook_type:
                raise HookTypeError(
                    f"hook {name!r} is already defined as {hook_.type.value}; it cannot become "
                    f"{hook_type.value}. Use another hook name, or define it with "
                    f"HookType.{hook_.type.value}."
                )
            retyped = hook_.type is not hook_type
            hook_.type = hook_type
            hook_.defined = True
            if retyped:
                with hook_._lock:
                    hook_._changed()
            if description:
                hook_.description = description
        if retyped:
            hook_._refresh_closed()
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
        return hook_._run_sync(args, kwargs)

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

    # -- operators' overrides --------------------------------------------------------------------

    def set_override(
        self, key: str, *, enabled: bool | None = None, priority: int | None = None
    ) -> None:
        """Override the function ``key`` on every hook where it is (and where it is added later).

        ``enabled=False`` leaves it out of runs; ``priority`` moves it. ``None`` for either means
        the plugin's own (so ``set_override(key)`` is the same as ``clear_override(key)``); the
        override replaces any earlier one for ``key``. Costs nothing at run time.
        """
        with self._lock:
            if enabled is None and priority is None:
                self._overrides.pop(key, None)
            else:
                self._overrides[key] = (enabled, priority)
            hooks = list(self._hooks.values())
        for hook_ in hooks:
            hook_._override_changed(key)

    def clear_override(self, key: str) -> None:
        """Drop the override of ``key``: its functions get their plugin's own settings back."""
        self.set_override(key)

    def overrides(self) -> dict[str, dict[str, Any]]:
        """Every override: ``{key: {"enabled": bool | None, "priority": int | None}}``."""
        return {
            key: {"enabled": enabled, "priority": priority}
            for key, (enabled, priority) in list(self._overrides.items())
        }

    # -- introspection ---------------------------------------------------------------------------

    def current(self) -> CurrentCall | None:
        """The innermost hook of this manager running in this thread (or task), and the function
        it is calling; ``None`` outside any run. Like WordPress' ``current_filter()``.

        Found by looking at the caller's stack, so runs pay nothing for it.
        """
        frame = sys._getframe(1)
        while frame is not None:
            if is_run_code(frame.f_code):
                local = frame.f_locals
                reg, where = local.get("reg"), local.get("where")
                if isinstance(where, str) and where.startswith("hook "):
                    hook_ = self._hooks.get(where[5:])
                    if hook_ is not None and isinstance(reg, Registration):
                        return CurrentCall(hook_.name, reg.fn, reg.key, reg.owner)
            frame = frame.f_back  # type: ignore[assignment]
        return None


def hook(name: str, priority: int = 10) -> Callable[[F], F]:
    """Decorator: register the function on hook ``name`` of the process-wide manager.

    Returns the function unchanged, so decorators stack.
    """

    def decorator(fn: F) -> F:
        return HookManager.get_instance()[name].add(fn, priority=priority)

    return decorator
