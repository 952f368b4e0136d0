"""Events: publish/subscribe with dot-separated wildcard patterns, in-process or in the background.

``EventBus.get_instance()`` is the process-wide bus; ``EventBus()`` an isolated one. Patterns are
dot-separated: ``*`` matches exactly one segment, ``**`` any number of segments (zero included),
anything else matches literally. A handler's exception (a veto type included) never reaches the
publisher: it is logged and counted against the plugin (``options.strict`` re-raises, for tests).

``Event`` and the pattern trie are in ``event.py`` (``Event`` is importable from here too).
Patterns live in a segment trie; the subscriptions matching an event name are computed once and
cached until a subscription changes, so publishing costs one dict lookup however many
subscriptions do not match. Subscriptions marked ``background=True`` are handed to the dispatcher
installed with ``set_background_dispatcher`` (the Celery layer sends them to a worker, which runs
them with ``deliver``); without one they run in-process like the others.
"""

from __future__ import annotations

import asyncio
import contextvars
import dis
import inspect
import logging
import threading
import types
from collections.abc import Awaitable, Callable, Generator, Iterable
from concurrent.futures import Future
from time import perf_counter
from typing import Any, TypeVar, overload

from course_plugins.core import scope as _scope_module
from course_plugins.core._calls import (
    ASYNC,
    GUARDED,
    PLAIN,
    REMOVED,
    VETO_EXCEPTIONS,
    CallStats,
    Registration,
    call_guarded,
    call_guarded_async,
    fn_key,
    isolate,
)
from course_plugins.core._engine_loop import (
    in_engine_loop_thread,
    run_coroutine_sync,
    submit_coroutine,
)
from course_plugins.core._process_wide import ProcessWide
from course_plugins.core.event import Event, PatternNode, split_pattern
from course_plugins.core.health import health
from course_plugins.core.watchdog import TimeBudgetExceeded, TimeLimit

__all__ = ["BackgroundDispatcher", "Event", "EventBus", "Subscription"]

logger = logging.getLogger("course_plugins.events")

H = TypeVar("H", bound=Callable[..., Any])
BackgroundDispatcher = Callable[["Event", "Subscription"], object]

_get_scope = _scope_module.current_scope.get
_CACHE_LIMIT = 4096  # distinct event names remembered; beyond that the cache starts afresh


class Subscription(Registration):
    """One handler subscribed to one pattern; ``key`` names it stably across processes.

    ``key`` is the handler's registration key (``"<plugin>:<qualname>"``, ``":<module>.<qualname>"``
    for platform code), the same for every pattern the handler is subscribed to.
    """

    __slots__ = ("pattern", "background")

    def __init__(
        self,
        pattern: str,
        fn: Callable[..., Any],
        *,
        owner: str | None = None,
        timeout: float | None = None,
        background: bool = False,
        seq: int = 0,
        key: str | None = None,
        shadow: bool = False,
    ) -> None:
        super().__init__(fn, 10, owner, timeout, CallStats(), seq, key=key, shadow=shadow)
        self.pattern = pattern
        self.background = background
        self.mode = self.call_mode()

    def call_mode(self) -> int:
        """As :meth:`Registration.call_mode`, with the async cases ``publish`` tells apart: an
        ``async def`` that cannot suspend (no ``await`` in its code) is ``INLINE`` (platform code)
        or ``BOUNDED`` (with a budget); one that may is ``AWAITS`` (platform code) or ``ASYNC``."""
        if getattr(self, "background", False):
            return GUARDED  # may be handed to the dispatcher: never the inline path
        mode = super().call_mode()
        if mode == ASYNC:
            platform = self.owner is None and self.timeout is None
            if _never_suspends(self.fn):
                return INLINE if platform else BOUNDED
            return AWAITS if platform else ASYNC
        return mode

    def __repr__(self) -> str:
        return f"Subscription({self.pattern!r}, {self.key!r}, background={self.background})"


_SAMPLE_MASK = 15  # one call in 16 is timed
_failing = health._consecutive


# How ``publish`` calls an async handler, decided once at subscribe time (``Subscription.mode``,
# besides ``_calls``' PLAIN, GUARDED, ASYNC and REMOVED). An ``async def`` whose code has no
# ``await`` cannot suspend: the publisher awaits it in place, as cheap as a plain call (``INLINE``;
# ``BOUNDED`` when it has a budget: a plugin's, counted for its health). Any other async handler
# (``AWAITS`` for platform code, ``ASYNC`` under a budget) is stepped by hand in the publishing
# task; only if it really suspends do the handlers after it go on in a new Task while this task
# finishes it (``EventBus._deliver``).
INLINE, BOUNDED, AWAITS = 3, 4, 5
_SUSPENDING = frozenset(
    dis.opmap[name] for name in ("GET_AWAITABLE", "SEND", "YIELD_VALUE") if name in dis.opmap
)


def _never_suspends(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is an ``async def`` that can never suspend (no await, async with/for)."""
    if type(fn) is not types.FunctionType or not fn.__code__.co_flags & inspect.CO_COROUTINE:
        return False  # partials, callables, decorated proxies: assume they may suspend
    return not any(ins.opcode in _SUSPENDING for ins in dis.get_instructions(fn.__code__))


@types.coroutine
def _resume(it: Any, yielded: Any) -> Generator[Any, Any, Any]:
    """Go on driving ``it`` (a coroutine's ``__await__()``, suspended on ``yielded``) from the
    task that awaits this: what it awaits goes up to the task, what the task sends or throws (a
    cancellation) comes back down."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:
            try:
                yielded = it.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = it.send(sent)
            except StopIteration as stop:
                return stop.value


async def _finish(sub: Subscription, it: Any, yielded: Any, where: str, t0: float) -> None:
    """The rest of a platform handler (``AWAITS``) that suspended: its error isolated, its time
    sampled (``t0`` is 0.0 for a call not timed)."""
    try:
        await _resume(it, yielded)
    except Exception as exc:  # a veto cannot refuse an event that happened
        isolate(sub, exc, where, counted=True)
        return
    if t0:
        sub.stats.sample(perf_counter() - t0)


class EventBus(ProcessWide):
    """Publish/subscribe over dot-separated event names; ``get_instance()`` is process-wide."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._root = PatternNode()
        # every subscription by (pattern, handler), in subscription order
        self._subs: dict[tuple[str, Any], Subscription] = {}
        self._listed: tuple[Subscription, ...] | None = ()  # ``subscriptions()``, built lazily
        self._keys: dict[tuple[str, str], Subscription] = {}  # (pattern, key) -> subscription
        self._overrides: dict[str, bool] = {}  # key -> enabled
        # (name, excluded set or None) -> (matching subscriptions in order, one per handler;
        # whether any is not plain)
        self._cache: dict[Any, tuple[tuple[Subscription, ...], bool]] = {}
        self._seq = 0
        self._dispatcher: BackgroundDispatcher | None = None

    # -- subscribing -----------------------------------------------------------------------------

    @overload
    def subscribe(
        self,
        pattern: str,
        handler: H,
        *,
        owner: str | None = ...,
        timeout: float | None = ...,
        background: bool = ...,
        key: str | None = ...,
        shadow: bool = ...,
    ) -> H: ...

    @overload
    def subscribe(
        self,
        pattern: str,
        handler: None = ...,
        *,
        owner: str | None = ...,
        timeout: float | None = ...,
        background: bool = ...,
        key: str | None = ...,
        shadow: bool = ...,
    ) -> Callable[[H], H]: ...

    def subscribe(
        self,
        pattern: str,
        handler: Callable[..., Any] | None = None,
        *,
        owner: str | None = None,
        timeout: float | None = None,
        background: bool = False,
        key: str | None = None,
        shadow: bool = False,
    ) -> Any:
        """Subscribe ``handler(event)`` (sync or async) to ``pattern``; return the handler.

        Without ``handler`` it is a decorator that returns the function unchanged, so several
        ``@bus.subscribe(...)`` stack. ``owner`` is the plugin id; ``timeout`` the seconds of
        budget (plugin handlers default to ``options.hook_timeout``); ``background=True`` hands
        delivery to the background dispatcher; ``key`` the stable name (default from plugin and
        qualname); ``shadow`` handlers (a plugin in shadow mode) do not run. Subscribing the same
        handler to the same pattern again replaces the subscription in place (a publish in
        progress still runs it). Raises ``EventPatternError`` for a bad pattern and
        ``ValueError`` when another handler of the same plugin has that key on ``pattern``.
        Costs O(1) (O(log N) at worst), however many subscriptions there are.
        """
        segs = split_pattern(pattern)
        if handler is None:
            return lambda fn: self.subscribe(
                pattern,
                fn,
                owner=owner,
                timeout=timeout,
                background=background,
                key=key,
                shadow=shadow,
            )
        if not callable(handler):
            raise TypeError(f"event pattern {pattern!r}: {handler!r} is not callable")
        # Everything the bus needs of ``handler`` is read before the lock (see ``fn_key``).
        new = Subscription(
            pattern,
            handler,
            owner=owner,
            timeout=timeout,
            background=background,
            key=key,
            shadow=shadow,
        )
        index = (pattern, new.fkey)
        with self._lock:
            sub = self._subs.get(index)
            if sub is not None:  # replace in place: same object, same position
                self._keys.pop((pattern, sub.key), None)
                sub.background = background
                sub.replace(10, owner, timeout, shadow, None)
                sub.key = new.key
            else:
                self._seq += 1
                sub = new
                sub.seq = self._seq
            clash = self._keys.get((pattern, sub.key))
            if clash is not None and clash is not sub:
                if sub.plugin is not None or key:
                    raise ValueError(
                        f"event pattern {pattern!r}: key {sub.key!r} is already used by "
                        f"{clash.name} (plugin {clash.owner or 'platform'}); give {sub.name} "
                        "another name or an explicit key"
                    )
                base, n = sub.key, 2
                while (pattern, f"{base}#{n}") in self._keys:
                    n += 1
                sub.key = f"{base}#{n}"
            self._keys[(pattern, sub.key)] = sub
            sub.enabled = self._overrides.get(sub.key, True)
            if index not in self._subs:
                self._subs[index] = sub
                node = self._root
                for seg in segs:
                    node = node.child(seg)
                node.subs[sub] = None
            self._listed = None
            self._cache = {}
        return handler

    def unsubscribe(
        self, pattern: str, handler: Callable[..., Any], *, owner: str | None = None
    ) -> bool:
        """Remove ``handler``'s subscription to ``pattern`` (only ``owner``'s, when given);
        return whether there was one."""
        index = (pattern, fn_key(handler))
        with self._lock:
            sub = self._subs.get(index)
            if sub is None or (owner is not None and sub.owner != owner):
                return False
            return self._discard([sub]) > 0

    def remove_owner(self, owner: str) -> int:
        """Remove every subscription of ``owner`` (a plugin id); return how many."""
        with self._lock:
            return self._discard([s for s in self._subs.values() if s.owner == owner])

    def clear(self) -> None:
        """Remove every subscription."""
        with self._lock:
            self._discard(list(self._subs.values()))

    def _discard(self, gone: list[Subscription]) -> int:
        for sub in gone:
            sub.mode = REMOVED  # a publish holding the old snapshot skips it
            del self._subs[(sub.pattern, sub.fkey)]
            if self._keys.get((sub.pattern, sub.key)) is sub:
                del self._keys[(sub.pattern, sub.key)]
            node: PatternNode | None = self._root
            for seg in sub.pattern.split("."):
                assert node is not None
                node = (
                    node.star
                    if seg == "*"
                    else node.dstar
                    if seg == "**"
                    else node.children.get(seg)
                )
            if node is not None:
                node.subs.pop(sub, None)
        if gone:
            self._listed = None
            self._cache = {}
        return len(gone)

    # -- operators' switches ---------------------------------------------------------------------

    def set_override(self, key: str, *, enabled: bool | None = None) -> None:
        """Switch the handler ``key`` off (``enabled=False``) or back on, on every pattern.

        Applies to subscriptions made later too; ``None`` drops the override.
        """
        with self._lock:
            if enabled is None:
                self._overrides.pop(key, None)
            else:
                self._overrides[key] = enabled
            for sub in self._subs.values():
                if sub.key == key:
                    sub.enabled = True if enabled is None else enabled
            self._cache = {}

    def clear_override(self, key: str) -> None:
        """Drop the override of ``key``."""
        self.set_override(key)

    def overrides(self) -> dict[str, dict[str, Any]]:
        """Every override: ``{key: {"enabled": bool}}``."""
        return {key: {"enabled": on} for key, on in list(self._overrides.items())}

    # -- matching --------------------------------------------------------------------------------

    def _lookup(self, name: str) -> tuple[tuple[Subscription, ...], bool]:
        scope = _get_scope()
        if scope is None:
            scope = _scope_module._site
        ckey: Any = name if scope is None else (name, scope.excluded)
        entry = self._cache.get(ckey)
        if entry is not None:
            return entry
        return self._match(name, None if scope is None else scope.excluded, ckey)

    def _match(
        self, name: str, excluded: frozenset[str] | None, ckey: Any = None, every: bool = False
    ) -> tuple[tuple[Subscription, ...], bool]:
        with self._lock:
            out: list[Subscription] = []
            self._root.collect(name.split("."), 0, out, set())
            out.sort(key=lambda s: s.seq)
            unique: list[Subscription] = []
            handlers: set[Any] = set()
            for sub in out:  # a handler matched through several patterns runs once
                if not every and (
                    not sub.enabled
                    or sub.shadow
                    or (excluded is not None and sub.plugin is not None and sub.plugin in excluded)
                ):
                    continue
                hkey = sub.fkey
                if hkey not in handlers:
                    handlers.add(hkey)
                    unique.append(sub)
            entry = (tuple(unique), any(s.mode != PLAIN for s in unique))
            if ckey is not None:
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache = {}
                self._cache[ckey] = entry
        return entry

    def matching(self, name: str) -> list[Subscription]:
        """Return the subscriptions an event called ``name`` runs, in the order they start."""
        return list(self._lookup(name)[0])

    # -- publishing ------------------------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """Deliver ``event`` to every matching handler; return once the in-process ones finished.

        Handlers start in subscription order, in the publisher's task, as in a plain
        ``for h in handlers: await h(event)`` loop, until an async one really suspends: the
        publisher's task then finishes that handler while the handlers after it go on in a Task
        of their own (started from the publisher's context as it was before that handler), and
        so on. So handlers that suspend run concurrently, those that do not cost no Task and no
        loop turn, and a handler always runs in one task from its first step to its end (an
        ``asyncio.timeout`` or ``TaskGroup`` in it binds to that task). Never raises a handler's
        exception unless ``options.strict`` is set; cancelling the publisher cancels them all.
        """
        subs = self._lookup(event.name)[0]
        if subs:
            await self._deliver(subs, 0, event)

    async def _deliver(self, subs: tuple[Subscription, ...], start: int, event: Event) -> None:
        """Run ``subs[start:]`` for ``event`` in this task, handing the rest to a new Task at the
        first handler that suspends (which this task then drives to its end)."""
        for sub in subs[start:] if start else subs:
            mode = sub.mode
            if mode == INLINE:  # platform code: counted, one call in 16 timed
                stats = sub.stats
                n = stats.calls
                stats.calls = n + 1
                if n & _SAMPLE_MASK:
                    try:
                        await sub.fn(event)  # cannot suspend: as cheap as a plain call
                    except Exception as exc:  # a veto cannot refuse an event that happened
                        isolate(sub, exc, f"event {event.name}", counted=True)
                else:
                    await self._call_inline_timed(sub, event)
            elif mode == PLAIN:
                self._call_plain(sub, event)
            elif mode == REMOVED:
                continue
            elif mode == BOUNDED:
                await self._call_bounded(sub, event, f"event {event.name}")
            elif sub.background and self._dispatcher is not None:
                self._dispatch(event, sub)
            elif mode == AWAITS:  # platform code: its first step by hand, counted
                context = contextvars.copy_context()  # as the handlers after it must start
                stats = sub.stats
                n = stats.calls
                stats.calls = n + 1
                t0 = 0.0 if n & _SAMPLE_MASK else perf_counter()
                try:
                    it = sub.fn(event).__await__()
                    for yielded in it:  # noqa: B007 - ends without a StopIteration object
                        break
                    else:
                        if t0:
                            stats.sample(perf_counter() - t0)
                        continue  # it finished without suspending
                except Exception as exc:  # a veto cannot refuse an event that happened
                    isolate(sub, exc, f"event {event.name}", counted=True)
                    continue
                rest = _finish(sub, it, yielded, f"event {event.name}", t0)
                await self._go_on(subs, subs.index(sub, start) + 1, event, context, rest)
                return
            elif sub.is_async:  # ASYNC (or a background one without a dispatcher)
                context = contextvars.copy_context()
                it = self._call_async(sub, event, f"event {event.name}").__await__()
                for yielded in it:  # noqa: B007 - its first step, under its budget
                    break
                else:
                    continue
                rest = _resume(it, yielded)
                await self._go_on(subs, subs.index(sub, start) + 1, event, context, rest)
                return
            else:
                self._call_sync(sub, event, f"event {event.name}")

    async def _go_on(
        self,
        subs: tuple[Subscription, ...],
        later: int,
        event: Event,
        context: contextvars.Context,
        suspended: Awaitable[None],
    ) -> None:
        """A handler suspended: hand ``subs[later:]`` to a new Task (in ``context``), finish the
        handler here (``suspended``), then wait for that Task."""
        rest = None
        if later < len(subs):
            rest = asyncio.get_running_loop().create_task(
                self._deliver(subs, later, event), context=context
            )
        try:
            await suspended
        except BaseException:  # cancelled (or strict): so are the handlers after it
            if rest is not None:
                rest.cancel()
                await asyncio.wait((rest,))
                if not rest.cancelled():
                    rest.exception()  # taken: an error of its own is not reported
            raise
        if rest is not None:
            await rest

    def publish_sync(self, event: Event) -> None:
        """Deliver ``event`` from sync code (an event loop may or may not be running here).

        Same order and error rules as :meth:`publish`; sync handlers run in the calling thread,
        async ones on the engine's loop thread, concurrently; returns when all have finished.
        """
        subs, special = self._lookup(event.name)
        if not special:  # only plain sync handlers: the tight loop
            for sub in subs:
                if sub.mode == REMOVED:
                    continue
                t0 = perf_counter()
                try:
                    sub.fn(event)
                except Exception as exc:
                    isolate(sub, exc, f"event {event.name}")
                    continue
                sub.stats.record(perf_counter() - t0)
            return
        if in_engine_loop_thread():
            # Called from an async handler on the engine's loop: it cannot wait on itself.
            run_coroutine_sync(self.publish(event))
            return
        where = f"event {event.name}"
        futures: list[Future[Any]] = []
        for sub in subs:
            if sub.mode == REMOVED:
                continue
            if sub.background and self._dispatcher is not None:
                self._dispatch(event, sub)
            elif sub.is_async:
                futures.append(submit_coroutine(self._call_async(sub, event, where)))
            else:
                self._call_sync(sub, event, where)
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error

    @staticmethod
    def _call_plain(sub: Subscription, event: Event) -> None:
        stats = sub.stats
        n = stats.calls
        stats.calls = n + 1
        if n & _SAMPLE_MASK:
            try:
                sub.fn(event)
            except Exception as exc:
                isolate(sub, exc, f"event {event.name}", counted=True)
            return
        t0 = perf_counter()
        try:
            sub.fn(event)
        except Exception as exc:
            isolate(sub, exc, f"event {event.name}", counted=True)
            return
        stats.sample(perf_counter() - t0)

    @staticmethod
    async def _call_inline_timed(sub: Subscription, event: Event) -> None:
        t0 = perf_counter()
        try:
            await sub.fn(event)
        except Exception as exc:
            isolate(sub, exc, f"event {event.name}", counted=True)
            return
        sub.stats.sample(perf_counter() - t0)

    @staticmethod
    async def _call_bounded(sub: Subscription, event: Event, where: str) -> None:
        """A plugin's async handler that never awaits: as a plugin's sync one, under its budget
        (a ``TimeLimit`` that fires only in the plugin's own frames), counted for its health."""
        limit = TimeLimit(sub.budget(), own=sub.own_code())
        t0 = perf_counter()
        try:
            with limit:
                await sub.fn(event)
        except TimeBudgetExceeded as exc:
            if exc.time_limit is not limit:
                raise  # an enclosing budget ran out, not this handler's
            limit.close()
            isolate(sub, exc, where, "timeout")
            return
        except Exception as exc:  # a veto cannot refuse an event that happened
            isolate(sub, exc, where)
            return
        sub.stats.record(perf_counter() - t0)
        if sub.owner in _failing:
            health.record_success(sub.owner)

    def _call_sync(self, sub: Subscription, event: Event, where: str) -> None:
        if sub.mode == PLAIN:
            t0 = perf_counter()
            try:
                sub.fn(event)
            except Exception as exc:
                isolate(sub, exc, where)
                return
            sub.stats.record(perf_counter() - t0)
            return
        try:
            call_guarded(sub, (event,), {}, where)
        except VETO_EXCEPTIONS as exc:  # a veto cannot refuse an event that happened
            isolate(sub, exc, where)

    async def _call_async(self, sub: Subscription, event: Event, where: str) -> None:
        try:
            await call_guarded_async(sub, (event,), {}, where)
        except VETO_EXCEPTIONS as exc:
            isolate(sub, exc, where)

    def _dispatch(self, event: Event, sub: Subscription) -> None:
        dispatcher = self._dispatcher
        assert dispatcher is not None
        try:
            dispatcher(event, sub)
        except Exception:
            logger.exception(
                "Background dispatch of event %s (%s) to %s failed", event.name, event.id, sub.key
            )

    # -- background delivery ---------------------------------------------------------------------

    @property
    def background_dispatcher(self) -> BackgroundDispatcher | None:
        """The dispatcher installed with ``set_background_dispatcher`` (``None``: in-process)."""
        return self._dispatcher

    def set_background_dispatcher(self, dispatcher: BackgroundDispatcher | None) -> None:
        """Hand ``background=True`` subscriptions to ``dispatcher(event, subscription)``.

        ``None`` runs them in-process again. The dispatcher must not block for long; its errors
        are logged on ``course_plugins.events``.
        """
        self._dispatcher = dispatcher

    def deliver(self, key: str, event: Event) -> None:
        """Run the subscription ``key`` that matches ``event`` now, in this process.

        Used by the background worker. The handler's failure is logged and counted like any
        other and then raised, so the worker can retry: a timeout as ``TimeoutError``. Raises
        ``KeyError`` when no subscription has that key here. A handler switched off by an
        operator is skipped (logged).
        """
        candidates = [s for s in self._match(event.name, None, every=True)[0] if s.key == key]
        if not candidates:
            candidates = [s for s in self.subscriptions() if s.key == key]
        if not candidates:
            raise KeyError(key)
        sub = candidates[0]
        if not sub.enabled or sub.shadow:
            logger.info("Background event %s (%s): %s is switched off", event.name, event.id, key)
            return
        where = f"event {event.name} (background)"
        try:
            call_guarded(sub, (event,), {}, where, reraise=True)
        except VETO_EXCEPTIONS as exc:
            isolate(sub, exc, where)
            raise
        except TimeBudgetExceeded as exc:  # an enclosing budget: surface it as an error
            raise TimeoutError(str(exc)) from exc

    # -- inspection ------------------------------------------------------------------------------

    def subscriptions(self) -> tuple[Subscription, ...]:
        """Every subscription, in subscription order."""
        listed = self._listed
        if listed is None:
            with self._lock:
                listed = self._listed = tuple(self._subs.values())
        return listed

    def describe(self) -> list[dict[str, Any]]:
        """Return ``[{pattern, handlers: [{name, plugin, key, background, stats...}]}]``.

        Patterns in the order first subscribed; handlers in the order they start.
        """
        by_pattern: dict[str, list[dict[str, Any]]] = {}
        for sub in self.subscriptions():
            by_pattern.setdefault(sub.pattern, []).append(
                {
                    "name": sub.name,
                    "plugin": sub.owner,
                    "key": sub.key,
                    "enabled": sub.enabled,
                    "shadow": sub.shadow,
                    "background": sub.background,
                    "timeout": sub.timeout,
                    "async": sub.is_async,
                    **sub.stats.as_dict(),
                }
            )
        return [{"pattern": p, "handlers": handlers} for p, handlers in by_pattern.items()]

    def __len__(self) -> int:
        return len(self._subs)

    def patterns(self) -> Iterable[str]:
        """The distinct subscribed patterns, in the order first subscribed."""
        return list(dict.fromkeys(s.pattern for s in self.subscriptions()))
