"""Events: publish/subscribe with dot-separated wildcard patterns, in-process or in the background.

``EventBus.get_instance()`` is the process-wide bus; ``EventBus()`` an isolated one. Patterns are
dot-separated: ``*`` matches exactly one segment, ``**`` any number of segments (zero included),
anything else matches literally. A handler's exception (a veto type included) never reaches the
publisher: it is logged and counted against the plugin (``options.strict`` re-raises, for tests).

Patterns live in a segment trie; the subscriptions matching an event name are computed once and
cached until a subscription changes, so publishing costs one dict lookup however many
subscriptions do not match. Subscriptions marked ``background=True`` are handed to the dispatcher
installed with ``set_background_dispatcher`` (the Celery layer sends them to a worker, which runs
them with ``deliver``); without one they run in-process like the others.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from datetime import UTC, datetime
from time import perf_counter
from typing import Any, TypeVar, overload

from course_plugins.core._calls import (
    GUARDED,
    PLAIN,
    REMOVED,
    VETO_EXCEPTIONS,
    CallStats,
    Registration,
    call_guarded,
    call_guarded_async,
    in_engine_loop_thread,
    isolate,
    run_coroutine_sync,
    submit_coroutine,
)
from course_plugins.core._process_wide import ProcessWide
from course_plugins.core.watchdog import TimeBudgetExceeded
from course_plugins.exceptions import EventPatternError

__all__ = ["BackgroundDispatcher", "Event", "EventBus", "Subscription"]

logger = logging.getLogger("course_plugins.events")

H = TypeVar("H", bound=Callable[..., Any])
BackgroundDispatcher = Callable[["Event", "Subscription"], object]

_CACHE_LIMIT = 4096  # distinct event names remembered; beyond that the cache starts afresh


class Event:
    """Something that happened: ``name``, ``data`` (a dict), ``source``, ``id`` and ``timestamp``.

    ``id`` is a uuid string (made on first use, so a publish that nobody reads it from does not
    pay for it); ``timestamp`` is an aware UTC datetime taken at creation.
    """

    __slots__ = ("name", "data", "source", "timestamp", "_id")

    def __init__(
        self,
        name: str,
        data: dict[str, Any] | None = None,
        source: str = "platform",
        *,
        id: str | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        if not name or not isinstance(name, str) or "*" in name:
            raise EventPatternError(
                f"event name {name!r} is not valid: use dot-separated words such as "
                "'course.created' (wildcards belong in subscriptions, not in events)"
            )
        self.name = name
        self.data: dict[str, Any] = data if data is not None else {}
        self.source = source
        self.timestamp = timestamp if timestamp is not None else datetime.now(UTC)
        self._id = id

    @property
    def id(self) -> str:
        """The event's unique id (a uuid4 string)."""
        if self._id is None:
            self._id = str(uuid.uuid4())
        return self._id

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (timestamp in ISO 8601) that ``from_dict`` turns back."""
        return {
            "id": self.id,
            "name": self.name,
            "data": self.data,
            "source": self.source,
            "timestamp": self.timestamp.isoformat(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        """Rebuild an event from ``to_dict()`` output; raises ``KeyError`` without ``name``."""
        stamp = d.get("timestamp")
        timestamp = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
        if timestamp is not None and timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=UTC)
        return cls(
            d["name"],
            d.get("data"),
            d.get("source", "platform"),
            id=d.get("id"),
            timestamp=timestamp,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and self.id == other.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {self.data!r}, source={self.source!r}, id={self.id!r})"


class Subscription(Registration):
    """One handler subscribed to one pattern; ``key`` names it stably across processes."""

    __slots__ = ("pattern", "background", "key")

    def __init__(
        self,
        pattern: str,
        fn: Callable[..., Any],
        *,
        owner: str | None = None,
        timeout: float | None = None,
        background: bool = False,
        seq: int = 0,
    ) -> None:
        super().__init__(fn, 10, owner, timeout, CallStats(), seq)
        self.pattern = pattern
        self.background = background
        if background:
            self.mode = GUARDED  # may be handed to the dispatcher: never the inline path
        self.key = f"{owner or 'platform'}:{pattern}:{self.name}"

    def __repr__(self) -> str:
        return f"Subscription({self.key!r}, background={self.background})"


class _Node:
    """A trie node: literal children, a ``*`` child, a ``**`` child, subscriptions ending here."""

    __slots__ = ("children", "star", "dstar", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.dstar: _Node | None = None
        self.subs: list[Subscription] = []

    def child(self, segment: str) -> _Node:
        if segment == "*":
            if self.star is None:
                self.star = _Node()
            return self.star
        if segment == "**":
            if self.dstar is None:
                self.dstar = _Node()
            return self.dstar
        node = self.children.get(segment)
        if node is None:
            node = self.children[segment] = _Node()
        return node

    def collect(
        self, segs: list[str], i: int, out: list[Subscription], seen: set[tuple[int, int]]
    ) -> None:
        key = (id(self), i)
        if key in seen:  # several ``**`` can reach the same state; visit it once
            return
        seen.add(key)
        if self.dstar is not None:
            for j in range(i, len(segs) + 1):
                self.dstar.collect(segs, j, out, seen)
        if i == len(segs):
            out.extend(self.subs)
            return
        node = self.children.get(segs[i])
        if node is not None:
            node.collect(segs, i + 1, out, seen)
        if self.star is not None:
            self.star.collect(segs, i + 1, out, seen)


def _split_pattern(pattern: str) -> list[str]:
    segs = pattern.split(".") if isinstance(pattern, str) else []
    for seg in segs:
        if not seg or ("*" in seg and seg not in ("*", "**")):
            raise EventPatternError(
                f"event pattern {pattern!r} is not valid: use dot-separated words, '*' for "
                "exactly one segment and '**' for any number, e.g. 'course.*' or 'quiz.**'"
            )
    if not segs:
        raise EventPatternError(f"event pattern {pattern!r} is not valid: it is empty")
    return segs


def _handler_key(fn: Callable[..., Any]) -> Any:
    try:
        hash(fn)
    except TypeError:
        return id(fn)
    return fn


class EventBus(ProcessWide):
    """Publish/subscribe over dot-separated event names; ``get_instance()`` is process-wide."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._root = _Node()
        self._subs: tuple[Subscription, ...] = ()  # every subscription, in subscription order
        self._by_key: dict[str, Subscription] = {}
        # name -> (matching subscriptions in order, one per handler; whether any is not plain)
        self._cache: dict[str, tuple[tuple[Subscription, ...], bool]] = {}
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
    ) -> Callable[[H], H]: ...

    def subscribe(
        self,
        pattern: str,
        handler: Callable[..., Any] | None = None,
        *,
        owner: str | None = None,
        timeout: float | None = None,
        background: bool = False,
    ) -> Any:
        """Subscribe ``handler(event)`` (sync or async) to ``pattern``; return the handler.

        Without ``handler`` it is a decorator that returns the function unchanged, so several
        ``@bus.subscribe(...)`` stack. ``owner`` is the plugin id; ``timeout`` the seconds of
        budget (plugin handlers default to ``options.hook_timeout``); ``background=True`` hands
        delivery to the background dispatcher. Subscribing the same handler to the same pattern
        again replaces the earlier subscription. Raises ``EventPatternError`` for a bad pattern.
        """
        segs = _split_pattern(pattern)
        if handler is None:
            return lambda fn: self.subscribe(
                pattern, fn, owner=owner, timeout=timeout, background=background
            )
        if not callable(handler):
            raise TypeError(f"event pattern {pattern!r}: {handler!r} is not callable")
        with self._lock:
            self._seq += 1
            sub = Subscription(
                pattern,
                handler,
                owner=owner,
                timeout=timeout,
                background=background,
                seq=self._seq,
            )
            self._discard(lambda s: s.pattern == pattern and s.fn == handler)
            base, n = sub.key, 1
            while sub.key in self._by_key:  # two handlers with one qualname (e.g. lambdas)
                n += 1
                sub.key = f"{base}#{n}"
            self._by_key[sub.key] = sub
            node = self._root
            for seg in segs:
                node = node.child(seg)
            node.subs.append(sub)
            self._subs = (*self._subs, sub)
            self._cache = {}
        return handler

    def unsubscribe(self, pattern: str, handler: Callable[..., Any]) -> bool:
        """Remove ``handler``'s subscription to ``pattern``; return whether there was one."""
        with self._lock:
            return self._discard(lambda s: s.pattern == pattern and s.fn == handler) > 0

    def remove_owner(self, owner: str) -> int:
        """Remove every subscription of ``owner`` (a plugin id); return how many."""
        with self._lock:
            return self._discard(lambda s: s.owner == owner)

    def clear(self) -> None:
        """Remove every subscription."""
        with self._lock:
            self._discard(lambda s: True)

    def _discard(self, match: Callable[[Subscription], bool]) -> int:
        gone = [s for s in self._subs if match(s)]
        for sub in gone:
            sub.mode = REMOVED  # a publish holding the old snapshot skips it
            self._by_key.pop(sub.key, None)
            node: _Node | None = self._root
            for seg in sub.pattern.split("."):
                assert node is not None
                node = (
                    node.star
                    if seg == "*"
                    else node.dstar
                    if seg == "**"
                    else node.children.get(seg)
                )
            if node is not None and sub in node.subs:
                node.subs.remove(sub)
        if gone:
            self._subs = tuple(s for s in self._subs if s.mode != REMOVED)
            self._cache = {}
        return len(gone)

    # -- matching --------------------------------------------------------------------------------

    def _lookup(self, name: str) -> tuple[tuple[Subscription, ...], bool]:
        entry = self._cache.get(name)
        if entry is not None:
            return entry
        with self._lock:
            out: list[Subscription] = []
            self._root.collect(name.split("."), 0, out, set())
            out.sort(key=lambda s: s.seq)
            unique: list[Subscription] = []
            handlers: set[Any] = set()
            for sub in out:  # a handler matched through several patterns runs once
                hkey = _handler_key(sub.fn)
                if hkey not in handlers:
                    handlers.add(hkey)
                    unique.append(sub)
            entry = (tuple(unique), any(s.mode != PLAIN for s in unique))
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache = {}
            self._cache[name] = entry
        return entry

    def matching(self, name: str) -> list[Subscription]:
        """Return the subscriptions an event called ``name`` runs, in the order they start."""
        return list(self._lookup(name)[0])

    # -- publishing ------------------------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """Deliver ``event`` to every matching handler; return once the in-process ones finished.

        Handlers start in subscription order (each async one gets the loop until its first
        ``await`` before the next starts) and async ones run concurrently. Never raises a
        handler's exception unless ``options.strict`` is set.
        """
        subs = self._lookup(event.name)[0]
        if not subs:
            return
        where = f"event {event.name}"
        tasks: list[asyncio.Future[Any]] = []
        last = len(subs) - 1
        for i, sub in enumerate(subs):
            if sub.mode == REMOVED:
                continue
            if sub.background and self._dispatcher is not None:
                self._dispatch(event, sub)
            elif sub.is_async:
                tasks.append(asyncio.ensure_future(self._call_async(sub, event, where)))
                if i < last:
                    await asyncio.sleep(0)  # let it start before the next handler
            else:
                self._call_sync(sub, event, where)
        if tasks:
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            for outcome in outcomes:  # only strict mode or a cancellation gets here
                if isinstance(outcome, BaseException):
                    raise outcome

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

    def set_background_dispatcher(self, dispatcher: BackgroundDispatcher | None) -> None:
        """Hand ``background=True`` subscriptions to ``dispatcher(event, subscription)``.

        ``None`` runs them in-process again. The dispatcher must not block for long; its errors
        are logged on ``course_plugins.events``.
        """
        self._dispatcher = dispatcher

    def deliver(self, key: str, event: Event) -> None:
        """Run the one subscription named ``key`` for ``event`` now, in this process.

        Used by the background worker. The handler's failure is logged and counted like any
        other and then raised, so the worker can retry: a timeout as ``TimeoutError``. Raises
        ``KeyError`` when no subscription has that key here.
        """
        sub = self._by_key[key]
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
        return self._subs

    def describe(self) -> list[dict[str, Any]]:
        """Return ``[{pattern, handlers: [{name, plugin, key, background, stats...}]}]``.

        Patterns in the order first subscribed; handlers in the order they start.
        """
        by_pattern: dict[str, list[dict[str, Any]]] = {}
        for sub in self._subs:
            by_pattern.setdefault(sub.pattern, []).append(
                {
                    "name": sub.name,
                    "plugin": sub.owner,
                    "key": sub.key,
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
        return list(dict.fromkeys(s.pattern for s in self._subs))
