"""``PlatformAPI``: the one object a plugin gets, in ``activate(api)`` and ``deactivate(api)``.

One per plugin. What it registers carries the plugin id as owner, so the loader can remove it all;
what it is not granted it refuses with a ``PluginPermissionError`` naming the ``plugin.yaml`` field
to change. Parts (in ``api/parts.py``, over the plugin's ``PluginContext``):

========================  ======================================================  ===========
``api.plugin_id``         ``"name@version"``
``api.log``               logger ``course_plugins.plugins.<name>``
``api.hooks``             ``api.hooks['x'].add(fn, priority=10)``; hooks in ``hooks``
``api.events``            ``api.events.subscribe(pattern, background=False)``     ``events``
``api.config``            ``get(key, default=None)``, ``set``, ``update``, ``all``
``api.storage``           async ``get/set/delete/keys/update/increment`` + ``*_sync``  ``storage``
``api.users``             ``get_current()``, ``has_permission(user_id, perm)``     ``users``
``api.courses``           ``get(course_id)``, ``list_by_organization(org_id)``     ``courses``
``api.notify``            ``send_to_user(user_id, title, msg)``, ``send_email``    ``notify``
``api.analytics``         ``track_event(name, properties)``                        ``analytics``
``api.advice``            ``api.advice.before(target)(fn)`` …                      ``advice``
``api.emit(name, data)``  fire-and-forget event, from sync or async code
``api.schedule(fn, …)``   run a module-level function later / repeatedly           ``schedule``
========================  ======================================================  ===========

Users, courses, notify and analytics methods are coroutines (``await api.users.get_current()``)
with ``*_sync`` twins for sync hook functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from course_plugins.api.context import PluginContext
from course_plugins.api.parts import (
    AdviceFacade,
    AnalyticsFacade,
    ConfigFacade,
    CoursesFacade,
    EventsFacade,
    HooksFacade,
    NotifyFacade,
    StorageFacade,
    UsersFacade,
)
from course_plugins.api.stores import (
    ConfigStore,
    DjangoConfigStore,
    DjangoStorageStore,
    MemoryConfigStore,
    MemoryStorageStore,
    StorageStore,
)
from course_plugins.conf import plugin_settings
from course_plugins.core.event_bus import Event
from course_plugins.core.health import reportable
from course_plugins.core.manifest import event_name_problem
from course_plugins.core.options import options
from course_plugins.core.scheduler import check_delay, function_ref
from course_plugins.core.watchdog import checkpoint
from course_plugins.exceptions import PlatformAPIError, ScheduleError

__all__ = ["PlatformAPI", "Services", "default_api_factory", "emitter"]


@dataclass
class Services:
    """What a ``PlatformAPI`` is backed by: the stores and the four backends (``None`` = absent)."""

    config_store: ConfigStore = field(default_factory=MemoryConfigStore)
    storage_store: StorageStore = field(default_factory=MemoryStorageStore)
    users: Any = None
    courses: Any = None
    notify: Any = None
    analytics: Any = None
    # ``shadow(plugin_name) -> bool``: the plugin runs in shadow mode (the site's control room
    # decides); its hook functions then register as shadow ones, its handlers, advice and
    # schedules do not run.
    shadow: Callable[[str], bool] | None = None

    @classmethod
    def in_memory(cls) -> Services:
        """In-memory stores and no backends: what works without Django."""
        return cls()

    @classmethod
    def django(cls) -> Services:
        """Database stores and the backends named in ``COURSE_PLUGINS`` (``*_BACKEND``)."""
        return cls(
            config_store=DjangoConfigStore(),
            storage_store=DjangoStorageStore(),
            users=plugin_settings.USERS_BACKEND(),
            courses=plugin_settings.COURSES_BACKEND(),
            notify=plugin_settings.NOTIFY_BACKEND(),
            analytics=plugin_settings.ANALYTICS_BACKEND(),
        )

    @classmethod
    def default(cls) -> Services:
        """``django()`` if Django is set up with course_plugins installed, else ``in_memory()``."""
        try:
            from django.apps import apps
            from django.conf import settings

            if settings.configured and apps.ready and apps.is_installed("course_plugins"):
                return cls.django()
        except ImportError:
            pass
        return cls.in_memory()


class PluginLogger(logging.LoggerAdapter):
    """``api.log``: the plugin's logger; each call is a budget checkpoint (``core.watchdog``).

    A record's text is made here, in the plugin's call and under its budget, and an exception
    of the plugin's own class is logged through its ``reportable`` stand-in: handed to logging
    as they were, the plugin's objects were formatted wherever a handler formats (a buffering
    handler flushed by another thread, a listener thread), outside any budget, where a
    ``__str__`` that loops held that thread for ever.
    """

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        checkpoint()
        if not self.isEnabledFor(level):
            return
        if args or type(msg) is not str:
            msg, args = _record_text(msg, args), ()
        if kwargs.get("exc_info"):
            kwargs["exc_info"] = _reportable_exc_info(kwargs["exc_info"])
        super().log(level, msg, *args, **kwargs)


def _record_text(msg: object, args: tuple[Any, ...]) -> str:
    """``msg % args`` as ``LogRecord.getMessage`` makes it, as a ``str`` itself (a subclass's
    ``__str__`` would run again wherever the record is formatted)."""
    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        args = args[0]  # type: ignore[assignment]  # "%(name)s" % {"name": ...}, as logging does
    try:
        text = str.__str__(str(msg))
        return str.__str__(text % args) if args else text
    except Exception as exc:  # logging would report it as a "Logging error" and go on
        return f"{msg!r} with arguments {args!r} (not formatted: {type(exc).__name__}: {exc})"


def _reportable_exc_info(exc_info: Any) -> Any:
    """``exc_info`` with the exception replaced by its ``reportable`` stand-in."""
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    exc = exc_info[1] if len(exc_info) == 3 else None
    if exc is None:
        return exc_info
    shown = reportable(exc)
    return exc_info if shown is exc else (type(shown), shown, shown.__traceback__)


class PlatformAPI:
    """The Platform API of one plugin (see the module docstring for its parts).

    Built by the loader (``api_factory(plugin, loader)``); ``plugin`` is the loader's ``Plugin``.
    """

    def __init__(
        self,
        plugin: Any,
        *,
        hooks: Any,
        bus: Any,
        services: Services | None = None,
        scheduler: Any = None,
    ) -> None:
        self._plugin = plugin
        self._scheduler = scheduler
        self.services = services if services is not None else Services.in_memory()
        self.manifest = plugin.manifest
        self.plugin_id: str = plugin.id
        self.name: str = plugin.name
        self.log = PluginLogger(logging.getLogger(f"course_plugins.plugins.{plugin.name}"), {})
        self._context = ctx = PluginContext(
            plugin_id=self.plugin_id,
            name=self.name,
            manifest=self.manifest,
            hooks=hooks,
            bus=bus,
            services=self.services,
            isolated=lambda: not getattr(plugin, "trusted", True),
        )
        self.hooks = HooksFacade(ctx)
        self.events = EventsFacade(ctx)
        self.config = ConfigFacade(ctx)
        self.storage = StorageFacade(ctx)
        self.users = UsersFacade(ctx)
        self.courses = CoursesFacade(ctx)
        self.notify = NotifyFacade(ctx)
        self.analytics = AnalyticsFacade(ctx)
        self.advice = AdviceFacade(ctx)

    def __repr__(self) -> str:
        return f"<PlatformAPI {self.plugin_id}>"

    @property
    def hook_timeout(self) -> float:
        """Budget of one call of the plugin's functions: ``HOOK_TIMEOUT`` or lower (in both
        modes; an isolated plugin's registrations carry none, its worker keeps it)."""
        own = self.manifest.timeout_seconds
        return min(own, options.hook_timeout) if own else options.hook_timeout

    @property
    def permissions(self) -> frozenset[str]:
        return self.manifest.permissions

    # -- fire-and-forget events and scheduling --------------------------------------------------

    def emit(self, name: str, data: Any = None) -> Future[Any]:
        """Publish event ``name`` with ``data`` (source: the plugin id) without waiting.

        Works from sync and async code. Returns a ``concurrent.futures.Future`` done once every
        in-process handler ran (tests may wait on it; plugins need not). Raises
        ``PlatformAPIError`` for an invalid event name.
        """
        problem = event_name_problem(name) if type(name) is str else "must be a string"
        if problem:
            raise PlatformAPIError(
                self.plugin_id, f"emit: {name!r} is not a valid event name: {problem}"
            )
        return emitter.submit(self._context.bus, Event(name, data, source=self.plugin_id))

    def schedule(self, fn: Callable[[], Any], delay_seconds: float, repeat: bool = False) -> str:
        """Run ``fn()`` after ``delay_seconds`` (repeatedly if ``repeat``); returns the schedule id.

        ``fn`` must be a module-level function of the plugin, called with no arguments; scheduling
        it again replaces the earlier schedule. Needs permission ``schedule``. Raises
        ``ScheduleError`` for anything that cannot be scheduled.
        """
        self._context.require("schedule")
        if self._scheduler is None:
            raise ScheduleError(self.plugin_id, "no scheduler is configured for this loader")
        with self._context.registering():
            if self._context.shadow:  # checked as if scheduled, never run
                check_delay(self.plugin_id, delay_seconds)
                self.log.info("Shadow mode: %s is not scheduled", getattr(fn, "__name__", fn))
                return f"{self.name}:{function_ref(self._plugin, fn)}"
            return str(self._scheduler.schedule(self._plugin, fn, delay_seconds, repeat))

    def cancel_schedule(self, schedule_id: str) -> bool:
        """Cancel one of the plugin's schedules; returns whether it existed."""
        self._context.require("schedule")
        if not isinstance(schedule_id, str) or not schedule_id.startswith(f"{self.name}:"):
            raise ScheduleError(self.plugin_id, f"{schedule_id!r} is not a schedule of this plugin")
        if self._scheduler is None:
            return False
        return bool(self._scheduler.cancel(schedule_id))

    # -- the registration gate (the loader opens it for activate(api), closes it to tear down) --

    def open_registrations(self) -> None:
        self._context.open_registrations()

    def close_registrations(self) -> None:
        """Refuse registrations from now on; waits for one that is in progress to finish."""
        self._context.close_registrations()


def default_api_factory(services: Services | None = None) -> Callable[[Any, Any], PlatformAPI]:
    """Return an ``api_factory(plugin, loader)`` building ``PlatformAPI``s over ``services``.

    Without ``services``: ``Services.default()`` once, shared by every plugin of the loader.
    """
    shared: list[Services] = [services] if services is not None else []

    def factory(plugin: Any, loader: Any) -> PlatformAPI:
        if not shared:
            shared.append(Services.default())
        return PlatformAPI(
            plugin,
            hooks=loader.hooks,
            bus=loader.bus,
            services=shared[0],
            scheduler=loader.scheduler,
        )

    return factory


MAX_WAITING_EMITS = 1000
"""Events one plugin may have waiting for delivery (``api.emit`` refuses more): a plugin
emitting in a loop faster than the handlers keep up would otherwise grow the site's memory
without end and hold up every other plugin's events behind its own."""


class _Emitter:
    """Publishes ``api.emit`` events on one background event-loop thread, so emitting never
    waits for handlers and never runs them inside the emitting hook's time budget.

    Each source (plugin) has its own queue, and the loop starts one event of each source that
    has events waiting in turn (then runs their first steps, where sync handlers run, before
    starting the next round): an event waits for at most one event of every other plugin, never
    for a whole backlog of one (1,000 events, each taking its handlers' time, made another
    plugin's event wait over an hour). Events of one source start in the order emitted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[Future[Any]] = set()
        self._waiting: dict[str, int] = {}  # source (plugin id) -> its events not delivered yet
        # source -> its events not started yet (bus, event, future), in the order emitted
        self._queues: dict[str, deque[tuple[Any, Any, Future[Any]]]] = {}
        self._pumping = False  # a round (``_pump``) is scheduled on the loop
        if hasattr(os, "register_at_fork"):
            # A forked child (Celery prefork worker) has no emitter thread: start a fresh one there.
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._loop = None
        self._pending = set()
        self._waiting = {}
        self._queues = {}
        self._pumping = False

    def submit(self, bus: Any, event: Any) -> Future[Any]:
        """Publish ``event`` on the emitter's thread; returns the future of its delivery.

        Raises ``PlatformAPIError`` when ``MAX_WAITING_EMITS`` events of the same source are
        still waiting to be delivered."""
        source = str(event.source)
        loop = self._ensure_loop()
        future: Future[Any] = Future()
        with self._lock:
            waiting = self._waiting.get(source, 0)
            if waiting >= MAX_WAITING_EMITS:
                raise PlatformAPIError(
                    source,
                    f"emit: {waiting} events of this plugin are still waiting to be delivered; "
                    f"{event.name!r} is dropped (emit less often, or from fewer calls)",
                )
            self._waiting[source] = waiting + 1
            self._pending.add(future)
            self._queues.setdefault(source, deque()).append((bus, event, future))
            start, self._pumping = not self._pumping, True
        future.add_done_callback(functools.partial(self._done, source=source))
        if start:
            try:
                loop.call_soon_threadsafe(self._pump)
            except RuntimeError as exc:  # the loop was closed under us
                with self._lock:
                    self._pumping = False
                future.set_exception(exc)
        return future

    def _pump(self) -> None:
        """One round, on the loop: start the next event of every source with events waiting."""
        loop = asyncio.get_running_loop()
        with self._lock:
            batch = []
            for source in list(self._queues):
                queue = self._queues[source]
                batch.append(queue.popleft())
                if not queue:
                    del self._queues[source]
            more = self._pumping = bool(self._queues)
        for bus, event, future in batch:
            if future.cancelled():
                continue
            task = loop.create_task(bus.publish(event))
            task.add_done_callback(functools.partial(self._settle, future=future))
        if more:  # after the first steps of this round's events
            loop.call_soon(self._pump)

    @staticmethod
    def _settle(task: asyncio.Task[Any], future: Future[Any]) -> None:
        if future.cancelled():
            return
        if task.cancelled():
            future.cancel()
        elif task.exception() is not None:
            future.set_exception(task.exception())
        else:
            future.set_result(task.result())

    def _delivered(self, source: str) -> None:
        with self._lock:
            left = self._waiting.get(source, 1) - 1
            if left > 0:
                self._waiting[source] = left
            else:
                self._waiting.pop(source, None)

    def flush(self, timeout: float | None = 10.0) -> None:
        """Wait until every event emitted so far was delivered (for tests)."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            with contextlib.suppress(Exception):  # failures are logged by _done
                future.result(timeout)

    def _done(self, future: Future[Any], source: str | None = None) -> None:
        if source is not None:
            self._delivered(source)
        with self._lock:
            self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            logging.getLogger("course_plugins.plugins").error(
                "An emitted event failed to publish", exc_info=future.exception()
            )

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=run, name="course-plugins-emit", daemon=True).start()
                ready.wait()
                self._loop = loop
            return self._loop


emitter = _Emitter()
"""The process-wide emitter behind ``api.emit`` (``emitter.flush()`` waits for delivery)."""
