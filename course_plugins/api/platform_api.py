"""``PlatformAPI``: the one object a plugin gets, in ``activate(api)`` and ``deactivate(api)``.

One per plugin. What it registers carries the plugin id as owner, so the loader can remove it all;
what it is not granted it refuses with a ``PluginPermissionError`` naming the ``plugin.yaml`` field
to change. Parts (SPEC §6):

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
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from course_plugins.api.facades import (
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
from course_plugins.core.manifest import event_name_problem
from course_plugins.core.options import options
from course_plugins.exceptions import (
    PlatformAPIError,
    PluginPermissionError,
    PluginStateError,
    ScheduleError,
)

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

    @classmethod
    def in_memory(cls) -> Services:
        """In-memory stores and no backends: what works without Django."""
        return cls()

    @classmethod
    def django(cls) -> Services:
        """Database stores and the backends named in ``COURSE_PLUGINS`` (``*_BACKEND``)."""
        from course_plugins.conf import plugin_settings

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
        self._hooks = hooks
        self._bus = bus
        self._scheduler = scheduler
        self._open = False
        self._gate = threading.RLock()
        self.services = services if services is not None else Services.in_memory()
        self.manifest = plugin.manifest
        self.plugin_id: str = plugin.id
        self.name: str = plugin.name
        self.log = logging.getLogger(f"course_plugins.plugins.{plugin.name}")
        self.hooks = HooksFacade(self)
        self.events = EventsFacade(self)
        self.config = ConfigFacade(self)
        self.storage = StorageFacade(self)
        self.users = UsersFacade(self)
        self.courses = CoursesFacade(self)
        self.notify = NotifyFacade(self)
        self.analytics = AnalyticsFacade(self)
        self.advice = AdviceFacade(self)

    def __repr__(self) -> str:
        return f"<PlatformAPI {self.plugin_id}>"

    @property
    def hook_timeout(self) -> float:
        """Budget of one call of the plugin's functions: ``HOOK_TIMEOUT`` or lower."""
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
        from course_plugins.core.event_bus import Event

        problem = event_name_problem(name) if isinstance(name, str) else "must be a string"
        if problem:
            raise PlatformAPIError(
                self.plugin_id, f"emit: {name!r} is not a valid event name: {problem}"
            )
        return emitter.submit(self._bus, Event(name, data, source=self.plugin_id))

    def schedule(self, fn: Callable[[], Any], delay_seconds: float, repeat: bool = False) -> str:
        """Run ``fn()`` after ``delay_seconds`` (repeatedly if ``repeat``); returns the schedule id.

        ``fn`` must be a module-level function of the plugin, called with no arguments; scheduling
        it again replaces the earlier schedule. Needs permission ``schedule``. Raises
        ``ScheduleError`` for anything that cannot be scheduled.
        """
        self._require("schedule")
        if self._scheduler is None:
            raise ScheduleError(self.plugin_id, "no scheduler is configured for this loader")
        with self._registering():
            return str(self._scheduler.schedule(self._plugin, fn, delay_seconds, repeat))

    def cancel_schedule(self, schedule_id: str) -> bool:
        """Cancel one of the plugin's schedules; returns whether it existed."""
        self._require("schedule")
        if not isinstance(schedule_id, str) or not schedule_id.startswith(f"{self.name}:"):
            raise ScheduleError(self.plugin_id, f"{schedule_id!r} is not a schedule of this plugin")
        if self._scheduler is None:
            return False
        return bool(self._scheduler.cancel(schedule_id))

    # -- checks used by the facades --------------------------------------------------------------

    def _require(self, permission: str) -> None:
        if permission in self.manifest.permissions:
            return
        message = (
            f"uses api.{permission} without permission: add '{permission}' to `permissions` in "
            f"{self.manifest.path}"
        )
        _audit_refusal(self.plugin_id, message)
        raise PluginPermissionError(self.plugin_id, message)

    def _check_hook(self, name: str) -> None:
        if name in self.manifest.hooks:
            return
        message = f"hook {name!r} is not listed in `hooks` of {self.manifest.path}: add it there"
        _audit_refusal(self.plugin_id, message)
        raise PluginPermissionError(self.plugin_id, message)

    def _check_event(self, pattern: str) -> None:
        if isinstance(pattern, str) and self.manifest.covers_event(pattern):
            return
        listed = ", ".join(self.manifest.events) or "none"
        message = (
            f"event pattern {pattern!r} is not covered by `events` of {self.manifest.path} "
            f"(listed: {listed}): add it, or a pattern such as 'course.*' that covers it"
        )
        _audit_refusal(self.plugin_id, message)
        raise PluginPermissionError(self.plugin_id, message)

    # -- the registration gate (the loader opens it for activate(api), closes it to tear down) --

    def open_registrations(self) -> None:
        with self._gate:
            self._open = True

    def close_registrations(self) -> None:
        """Refuse registrations from now on; waits for one that is in progress to finish, so
        that the loader's teardown that follows removes it too."""
        with self._gate:
            self._open = False

    @contextlib.contextmanager
    def _registering(self) -> Iterator[None]:
        with self._gate:
            if not self._open:
                raise PluginStateError(
                    self.plugin_id,
                    "registrations are accepted only during activate(api) and while the plugin "
                    "is active; this plugin is not",
                )
            yield


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


def _audit_refusal(plugin_id: str, message: str) -> None:
    from course_plugins.core.sandbox.audit import audit

    audit("permission", message, plugin=plugin_id)


class _Emitter:
    """Publishes ``api.emit`` events on one background event-loop thread, so emitting never
    waits for handlers and never runs them inside the emitting hook's time budget."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[Future[Any]] = set()
        if hasattr(os, "register_at_fork"):
            # A forked child (Celery prefork worker) has no emitter thread: start a fresh one there.
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._loop = None
        self._pending = set()

    def submit(self, bus: Any, event: Any) -> Future[Any]:
        future = asyncio.run_coroutine_threadsafe(bus.publish(event), self._ensure_loop())
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def flush(self, timeout: float | None = 10.0) -> None:
        """Wait until every event emitted so far was delivered (for tests)."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            with contextlib.suppress(Exception):  # failures are logged by _done
                future.result(timeout)

    def _done(self, future: Future[Any]) -> None:
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
