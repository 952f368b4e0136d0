"""Advice: wrap a core function from outside, with the ten combinators of Emacs' ``nadvice.el``.

A core function becomes advisable with ``@advisable("course_service.create_course")``;
plugins add advice to that name with ``@before_advice(...)``, ``@after_advice(...)``,
``@around_advice(...)`` and the rest. Advice may be added before the target is imported: it
applies once it is.

Meaning of each combinator (``f`` is the advised function, ``a`` the advice, ``*r`` the call's
arguments), as in ``nadvice.el`` except that ``after`` advice gets the result and may replace it:

=================  ==========================================================================
``before``         ``a(*r); return f(*r)``
``after``          ``x = f(*r); y = a(x, *r); return x if y is None else y``
``around``         ``return a(f, *r)``
``override``       ``return a(*r)``
``before_while``   ``return a(*r) and f(*r)``
``before_until``   ``return a(*r) or f(*r)``
``after_while``    ``return f(*r) and a(*r)``
``after_until``    ``return f(*r) or a(*r)``
``filter_args``    ``args, kwargs = a(args, kwargs); return f(*args, **kwargs)``
``filter_return``  ``return a(f(*r))``
=================  ==========================================================================

Several pieces nest by priority: lower is outermost; equal priorities, the earlier added is outer.
A veto (``VETO_EXCEPTIONS``) raised by advice propagates; any other exception is isolated: logged,
counted against the owner, and that advice is skipped for the call (``around``/``override`` fall
back to calling what they wrap; a result already computed is kept: when an ``around`` advice
fails after calling its original, the original's last call decides -- its result is returned, or
its exception raised -- and the original is not run again). ``options.strict`` re-raises.

Speed: the advised function reads one attribute and, with no advice, calls the original. With
advice it calls a composed chain of generated code, built once per change (consecutive
``before``/``after`` pieces are fused into one flat layer, and the outermost layer runs as the
advised function's own code). Layers are generated from the target's signature: the call that
passes the required parameters positionally is served without repacking them; any other call
is unpacked into exactly what the caller passed.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from course_plugins.core import scope as _scope_module
from course_plugins.core._advice_calls import Advice
from course_plugins.core._advice_chain import compose, install, outer_for, sync_wrapper
from course_plugins.core._call_shapes import GENERIC_SHAPE, call_shape
from course_plugins.core._calls import callable_name, check_priority, fn_key
from course_plugins.exceptions import AdviceError

__all__ = [
    "ADVICE_KINDS",
    "Advice",
    "add_advice",
    "advisable",
    "after_advice",
    "after_until_advice",
    "after_while_advice",
    "around_advice",
    "before_advice",
    "before_until_advice",
    "before_while_advice",
    "clear_override",
    "describe",
    "describe_all",
    "filter_args_advice",
    "filter_return_advice",
    "on_first_call",
    "override_advice",
    "overrides",
    "remove_advice",
    "remove_owner_advice",
    "set_override",
]

F = TypeVar("F", bound=Callable[..., Any])

ADVICE_KINDS: tuple[str, ...] = (
    "before",
    "after",
    "around",
    "override",
    "before_while",
    "before_until",
    "after_while",
    "after_until",
    "filter_args",
    "filter_return",
)


def _normalise_how(how: str) -> str:
    kind = how.lstrip(":").replace("-", "_") if isinstance(how, str) else ""
    if kind not in ADVICE_KINDS:
        raise AdviceError(f"unknown advice kind {how!r}; use one of {', '.join(ADVICE_KINDS)}")
    return kind


def _target_name(target: Any) -> str:
    # ``str`` itself, as hook and event names: a subclass's ``__hash__``/``__eq__`` would run
    # under the registry's lock, and in every advised call's look-up once kept as the name.
    name = target if type(target) is str else getattr(target, "__advice_target__", target)
    if type(name) is not str or not name:
        raise AdviceError(
            f"advice target {target!r} is not a target name: pass the name given to "
            "@advisable (e.g. 'course_service.create_course') or the advisable function"
        )
    return name


# --- the registry ------------------------------------------------------------------------------


class _Target:
    """An advisable name: its original function (once imported), its advice, the built chain.

    ``chain`` is the composed chain of the advice that applies with no scope (``None``: call the
    original directly); ``owned`` says whether any of it belongs to a plugin, in which case an
    organization's scope may leave some out (``scoped_chain``, one chain per excluded set).
    """

    __slots__ = (
        "name",
        "original",
        "is_async",
        "shape",
        "pieces",
        "chain",
        "owned",
        "scoped",
        "wrapper",
        "base_code",
        "generation",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.original: Callable[..., Any] | None = None
        self.is_async = False
        self.shape = GENERIC_SHAPE
        self.pieces: tuple[Advice, ...] = ()  # every piece, outermost first
        self.chain: Callable[..., Any] | None = None
        self.owned = False
        self.scoped: dict[frozenset[str], Callable[..., Any] | None] = {}
        self.wrapper: Any = None  # the sync advised function, once made
        self.base_code: Any = None
        self.generation = 0  # fused builds so far

    def _compose(
        self, excluded: frozenset[str] | None, fuse: bool = False
    ) -> Callable[..., Any] | None:
        active = tuple(
            a
            for a in self.pieces
            if a.enabled
            and not a.shadow
            and (excluded is None or a.plugin is None or a.plugin not in excluded)
        )
        if self.original is not None and _first_call is not None:
            return self._starter()  # the first call starts the site's plugins (their advice)
        if self.original is None or not active:
            return None
        outer = None
        if fuse:
            self.generation += 1
            outer = outer_for(self, self.generation)
        return compose(self.original, active, self.is_async, self.shape, outer)

    def _starter(self) -> Callable[..., Any]:
        """A chain that calls ``_first_call()`` (which rebuilds every chain), then the new one."""

        def current() -> Callable[..., Any]:
            hook = _first_call
            if hook is not None:
                hook()
            chain = self.chain
            if chain is not None and self.owned:
                chain = self.scoped_chain()
            if chain is None or _first_call is not None:  # nothing yet, or could not start
                return self.original  # type: ignore[return-value]
            return chain

        if self.is_async:

            async def first_call_async(*args: Any, **kwargs: Any) -> Any:
                return await current()(*args, **kwargs)

            return first_call_async

        def first_call(*args: Any, **kwargs: Any) -> Any:
            return current()(*args, **kwargs)

        return first_call

    def rebuild(self) -> None:
        self.scoped = {}
        self.owned = any(a.plugin is not None for a in self.pieces)
        wrapper = self.wrapper
        # Each fused build adds its names to the wrapper's namespace and none is ever removed
        # (a call may still be running an earlier build's code), so fusing stops after
        # _MAX_FUSED builds of one target: later builds use the plain wrapper code.
        if wrapper is None or self.is_async or self.generation >= _MAX_FUSED:
            self.chain = self._compose(None)
            if wrapper is not None and not self.is_async:
                install(self)
            return
        self.chain = self._compose(None, fuse=True)
        install(self)

    def scoped_chain(self) -> Callable[..., Any] | None:
        """The chain for the current organization scope (the plain one when there is none)."""
        scope = _get_scope()
        if scope is None:
            scope = _scope_module._site
            if scope is None:
                return self.chain
        excluded = scope.excluded
        try:
            return self.scoped[excluded]
        except KeyError:
            pass
        with _lock:
            chain = self.scoped[excluded] = self._compose(excluded)
        return chain


_MAX_FUSED = 256
_lock = threading.RLock()
_targets: dict[str, _Target] = {}
_overrides: dict[str, tuple[bool | None, int | None]] = {}
_seq = 0
_get_scope = _scope_module.current_scope.get


_first_call: Callable[[], object] | None = None


def on_first_call(hook: Callable[[], object] | None) -> None:
    """Until ``on_first_call(None)``, a call of any advisable function calls ``hook()`` first.

    The Django site arms it so that the first advised call of a process (in ``manage.py shell``,
    a script) starts the plugins, whose advice then applies to that very call; ``hook`` is
    expected to disarm it (the site's start-up does). Disarmed, advised calls cost nothing more.
    """
    global _first_call
    with _lock:
        changed = (hook is None) != (_first_call is None)
        _first_call = hook
        if changed:
            for target in _targets.values():
                if target.original is not None:
                    target.rebuild()


def _target(name: str) -> _Target:
    target = _targets.get(name)
    if target is None:
        target = _targets[name] = _Target(name)
    return target


def advisable(name: str) -> Callable[[F], F]:
    """Decorator: make a function (sync or async) advisable under ``name``.

    Returns a wrapper that keeps the function's name, docstring and signature
    (``functools.wraps``) and has ``__advice_target__ = name``. Advice added to ``name`` earlier
    applies now. Raises ``AdviceError`` if another function already uses ``name``.
    """
    _target_name(name)

    def decorate(fn: F) -> F:
        with _lock:
            target = _target(name)
            previous = target.original
            if previous is not None and callable_name(previous) != callable_name(fn):
                raise AdviceError(
                    f"advice target {name!r} is already {callable_name(previous)}; "
                    f"give {callable_name(fn)} another name"
                )
            target.original = fn
            target.is_async = inspect.iscoroutinefunction(fn)
            target.shape = GENERIC_SHAPE if target.is_async else call_shape(fn)
            target.rebuild()

        wrapper: Callable[..., Any]
        if target.is_async:

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                chain = target.chain
                if chain is not None and target.owned:
                    chain = target.scoped_chain()
                if chain is None:
                    return await fn(*args, **kwargs)
                return await chain(*args, **kwargs)

            wrapper = async_wrapper
        else:
            generated = sync_wrapper(target, fn)
            wrapper = functools.wraps(fn)(generated)
            with _lock:
                target.wrapper = generated
                target.base_code = generated.__code__
                target.rebuild()
        wrapper.__dict__["__advice_target__"] = name
        return wrapper  # type: ignore[return-value]

    return decorate


def add_advice(
    how: str,
    target: Any,
    fn: F,
    *,
    priority: int = 10,
    owner: str | None = None,
    key: str | None = None,
    shadow: bool = False,
    timeout: float | None = None,
) -> F:
    """Add ``fn`` as ``how`` advice (one of ``ADVICE_KINDS``) on ``target``; return ``fn``.

    ``target`` is an advisable name (it need not be imported yet) or the advisable function.
    Adding the same function to the same target again replaces the earlier piece in place (its
    place among equal priorities kept). A plugin's advice (``owner``) runs under ``timeout``
    seconds of budget (default ``HOOK_TIMEOUT``), as its hook functions do. ``key`` is the
    stable name (default ``"<plugin>:<qualname>"``); ``shadow`` advice (a plugin in shadow
    mode) is not applied.
    Raises ``AdviceError`` for an unknown kind or target, ``TypeError`` if ``fn`` is not
    callable, ``ValueError`` when another function of the same plugin has that key on ``target``.
    """
    global _seq
    kind = _normalise_how(how)
    name = _target_name(target)
    if not callable(fn):
        raise TypeError(f"{kind} advice on {name!r}: {fn!r} is not callable")
    check_priority(priority, f"{kind} advice on {name!r}")
    # Everything needed of ``fn`` is read before the lock (see ``_calls.fn_key``).
    adv = Advice(
        kind, name, fn, priority=priority, owner=owner, key=key, shadow=shadow, timeout=timeout
    )
    fkey = adv.fkey
    with _lock:
        t = _target(name)
        old = next((a for a in t.pieces if a.fkey == fkey), None)
        if old is not None:
            adv.seq = old.seq
        else:
            _seq += 1
            adv.seq = _seq
        clash = next((a for a in t.pieces if a.key == adv.key and a.fkey != fkey), None)
        if clash is not None:
            if adv.plugin is not None or key:
                raise ValueError(
                    f"advice on {name!r}: key {adv.key!r} is already used by {clash.name} "
                    f"(plugin {clash.owner or 'platform'}); give {adv.name} another name or an "
                    "explicit key"
                )
            taken = {a.key for a in t.pieces}
            n = 2
            while f"{adv.key}#{n}" in taken:
                n += 1
            adv.key = f"{adv.key}#{n}"
        if old is not None:
            adv.stats = old.stats
        _apply_override(adv)
        kept = [a for a in t.pieces if a.fkey != fkey]
        kept.append(adv)
        kept.sort(key=lambda a: (a.priority, a.seq))
        t.pieces = tuple(kept)
        t.rebuild()
    return fn


def _apply_override(adv: Advice) -> None:
    enabled, priority = _overrides.get(adv.key, (None, None))
    adv.enabled = True if enabled is None else enabled
    adv.priority = adv.base_priority if priority is None else priority


def set_override(key: str, *, enabled: bool | None = None, priority: int | None = None) -> None:
    """Override the advice ``key`` on every target (and on advice added later).

    ``enabled=False`` leaves it out of the chain; ``priority`` moves it; ``None`` for either
    means the plugin's own (``set_override(key)`` clears the override). Applied by rebuilding
    the chains concerned: advised calls pay nothing for it.
    """
    with _lock:
        if enabled is None and priority is None:
            _overrides.pop(key, None)
        else:
            _overrides[key] = (enabled, priority)
        for t in _targets.values():
            if any(a.key == key for a in t.pieces):
                for a in t.pieces:
                    if a.key == key:
                        _apply_override(a)
                t.pieces = tuple(sorted(t.pieces, key=lambda a: (a.priority, a.seq)))
                t.rebuild()


def clear_override(key: str) -> None:
    """Drop the override of the advice ``key``."""
    set_override(key)


def overrides() -> dict[str, dict[str, Any]]:
    """Every advice override: ``{key: {"enabled": bool | None, "priority": int | None}}``."""
    return {k: {"enabled": e, "priority": p} for k, (e, p) in list(_overrides.items())}


def remove_advice(target: Any, fn: Callable[..., Any], *, owner: str | None = None) -> bool:
    """Remove ``fn``'s advice from ``target`` (only ``owner``'s, when given); return whether
    there was one."""
    name = _target_name(target)
    fkey = fn_key(fn)
    with _lock:
        t = _targets.get(name)
        if t is None:
            return False
        kept = tuple(
            a for a in t.pieces if a.fkey != fkey or (owner is not None and a.owner != owner)
        )
        removed = len(kept) != len(t.pieces)
        if removed:
            t.pieces = kept
            t.rebuild()
            _forget_if_empty(t)
        return removed


def _forget_if_empty(t: _Target) -> None:
    """Drop a target that holds nothing any more (no advice, no advisable function: a name
    advice was added to and removed from before anything imported it), ``_lock`` held: a
    plugin adding and removing advice on ever new names grew the registry without end."""
    if not t.pieces and t.original is None and _targets.get(t.name) is t:
        del _targets[t.name]


def remove_owner_advice(owner: str) -> int:
    """Remove every piece of advice ``owner`` (a plugin id) added; return how many."""
    count = 0
    with _lock:
        for t in list(_targets.values()):
            kept = tuple(a for a in t.pieces if a.owner != owner)
            if len(kept) != len(t.pieces):
                count += len(t.pieces) - len(kept)
                t.pieces = kept
                t.rebuild()
                _forget_if_empty(t)
    return count


def describe(target: Any) -> list[dict[str, Any]]:
    """Return ``target``'s advice, outermost first: name, plugin, how, priority and stats."""
    t = _targets.get(_target_name(target))
    if t is None:
        return []
    return [
        {
            "name": a.name,
            "key": a.key,
            "plugin": a.owner,
            "enabled": a.enabled,
            "shadow": a.shadow,
            "how": a.how,
            "priority": a.priority,
            "async": a.is_async,
            **a.stats.as_dict(),
        }
        for a in t.pieces
    ]


def describe_all() -> dict[str, list[dict[str, Any]]]:
    """Return ``{target: describe(target)}`` for every advisable or advised target name."""
    return {name: describe(name) for name in sorted(_targets)}


def is_advisable(name: str) -> bool:
    """Whether a function has been made advisable under ``name`` (its module is imported)."""
    t = _targets.get(name)
    return t is not None and t.original is not None


def _decorator(how: str) -> Callable[..., Any]:
    def x_advice(
        target: Any,
        fn: Callable[..., Any] | None = None,
        *,
        priority: int = 10,
        owner: str | None = None,
        key: str | None = None,
        shadow: bool = False,
    ) -> Any:
        if fn is not None:
            return add_advice(
                how, target, fn, priority=priority, owner=owner, key=key, shadow=shadow
            )
        _target_name(target)  # fail at decoration time, not at first use
        return lambda f: add_advice(
            how, target, f, priority=priority, owner=owner, key=key, shadow=shadow
        )

    x_advice.__name__ = x_advice.__qualname__ = f"{how}_advice"
    x_advice.__doc__ = (
        f"Add ``{how}`` advice to ``target``: ``@{how}_advice(target, *, priority=10, "
        f"owner=None)`` or ``{how}_advice(target, fn)``; returns the function unchanged."
    )
    return x_advice


before_advice = _decorator("before")
after_advice = _decorator("after")
around_advice = _decorator("around")
override_advice = _decorator("override")
before_while_advice = _decorator("before_while")
before_until_advice = _decorator("before_until")
after_while_advice = _decorator("after_while")
after_until_advice = _decorator("after_until")
filter_args_advice = _decorator("filter_args")
filter_return_advice = _decorator("filter_return")
