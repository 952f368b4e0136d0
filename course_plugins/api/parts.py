"""The parts of ``PlatformAPI``: permission-checked facades over hooks, events, config, storage,
advice and the users/courses/notify/analytics backends.

Each part works over one plugin's :class:`~course_plugins.api.context.PluginContext` and tags what
it registers with the plugin id (the ``owner``), so deactivation can remove all of it. Refusals
are ``PluginPermissionError``s that say which line of ``plugin.yaml`` to add.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

from asgiref.sync import sync_to_async

from course_plugins.api.context import PluginContext
from course_plugins.core import advice
from course_plugins.core.advice import ADVICE_KINDS
from course_plugins.core.scope import current_scope
from course_plugins.core.settings_schema import validate_settings
from course_plugins.core.standard import STANDARD_HOOK_NAMES, check_signature, spec_for
from course_plugins.core.watchdog import time_limit
from course_plugins.core.worker_threads import call_off_loop, in_worker
from course_plugins.exceptions import (
    PlatformAPIError,
    PlatformAPIUnavailable,
    PluginSettingsError,
)

MAX_STORAGE_KEY = 255


def run_blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` now; if this thread runs an event loop, on a worker thread (and wait).

    Returns what ``fn`` returns and raises what it raises. The context (current user) goes along.
    """
    return call_off_loop(fn, *args, **kwargs)


async def run_async(blocking: bool, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Await ``fn(*args)``; blocking (database) work runs on a worker thread, off the loop."""
    if not blocking:
        return fn(*args, **kwargs)
    # Not thread_sensitive: the work must not wait behind a request's sync thread, and the
    # worker closes its database connection afterwards (in_worker).
    return await sync_to_async(in_worker, thread_sensitive=False)(fn, *args, **kwargs)


class HooksFacade:
    """``api.hooks``: ``api.hooks['name'].add(fn, priority=10)`` for hooks the manifest lists."""

    def __init__(self, ctx: PluginContext) -> None:
        self._ctx = ctx

    def __getitem__(self, name: str) -> PluginHook:
        """Return the plugin's handle on hook ``name``; raises ``PluginPermissionError``."""
        self._ctx.check_hook(name)
        return PluginHook(self._ctx, name)

    def __contains__(self, name: object) -> bool:
        return name in self._ctx.manifest.hooks

    def define(self, name: str, hook_type: Any, *, description: str = "") -> Any:
        """Declare one of the plugin's own hooks (listed in ``hooks``) with a ``HookType``."""
        self._ctx.check_hook(name)
        if name in STANDARD_HOOK_NAMES:
            raise PlatformAPIError(
                self._ctx.plugin_id, f"{name!r} is a standard hook; it is defined already"
            )
        return self._ctx.hooks.define(name, hook_type, description=description)

    def run_sync(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run a hook the manifest lists (typically the plugin's own); returns the hook's result."""
        self._ctx.check_hook(name)
        return self._ctx.hooks.run_sync(name, *args, **kwargs)

    async def run(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Async twin of ``run_sync``."""
        self._ctx.check_hook(name)
        return await self._ctx.hooks.run(name, *args, **kwargs)


class PluginHook:
    """One hook as the plugin sees it; ``add`` registers with the plugin as owner and its budget."""

    def __init__(self, ctx: PluginContext, name: str) -> None:
        self._ctx = ctx
        self.name = name

    def add(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        priority: int = 10,
        fail_closed: bool | None = None,
    ) -> Any:
        """Register ``fn`` (also as ``@add`` or ``@add(priority=5)``); returns ``fn``.

        ``fail_closed``: whether an error or overrun of ``fn`` refuses the change (a veto) on a
        hook that can refuse one; default: the manifest's ``fail_closed``, else the hook's own
        (closed for ``before-*`` hooks). Raises ``PluginStateError`` when the plugin is not being
        activated or active, and ``HookSignatureError`` when ``fn`` cannot take what the hook
        passes (its declaration in ``core.standard``).
        """
        if fn is None:
            return lambda f: self.add(f, priority=priority, fail_closed=fail_closed)
        check_signature(spec_for(self.name), fn, plugin=self._ctx.plugin_id)
        if fail_closed is None and self._ctx.manifest is not None:
            fail_closed = self._ctx.manifest.fail_closed
        with self._ctx.registering():
            self._ctx.hooks[self.name].add(
                fn,
                priority=priority,
                owner=self._ctx.plugin_id,
                timeout=self._ctx.hook_timeout,
                shadow=self._ctx.shadow,
                fail_closed=fail_closed,
            )
        return fn

    def remove(self, fn: Callable[..., Any]) -> bool:
        """Remove one of the plugin's own functions from this hook; returns whether it was there."""
        return bool(self._ctx.hooks[self.name].remove(fn, owner=self._ctx.plugin_id))

    @property
    def functions(self) -> list[Callable[..., Any]]:
        """The plugin's own functions on this hook, in call order (disabled and shadow ones
        included). Other plugins' functions and the platform's are not listed: a plugin gets
        no handle on code it does not own."""
        plugin_id = self._ctx.plugin_id
        return [r.fn for r in self._ctx.hooks[self.name].registrations if r.owner == plugin_id]


class EventsFacade:
    """``api.events``: subscribe to patterns the manifest's ``events`` cover."""

    def __init__(self, ctx: PluginContext) -> None:
        self._ctx = ctx

    def subscribe(
        self, pattern: str, handler: Callable[..., Any] | None = None, *, background: bool = False
    ) -> Any:
        """Subscribe ``handler`` (or decorate); returns the handler.

        ``background=True`` hands delivery to the background dispatcher (a Celery worker on the
        site). Raises ``PluginPermissionError`` when no manifest pattern covers ``pattern``.
        """
        self._ctx.check_event(pattern)
        if handler is None:
            return lambda h: self.subscribe(pattern, h, background=background)
        with self._ctx.registering():
            self._ctx.bus.subscribe(
                pattern,
                handler,
                owner=self._ctx.plugin_id,
                timeout=self._ctx.hook_timeout,
                background=background,
                shadow=self._ctx.shadow,
            )
        return handler

    def unsubscribe(self, pattern: str, handler: Callable[..., Any]) -> bool:
        """Remove one of the plugin's own subscriptions; returns whether it was there."""
        if type(pattern) is not str:
            return False
        return bool(self._ctx.bus.unsubscribe(pattern, handler, owner=self._ctx.plugin_id))


class ConfigFacade:
    """``api.config``: the plugin's settings, validated against ``settings_schema``, persisted.

    A value is what was set, else the schema's default, else the ``default`` given to ``get``.
    Values are cached in the process; ``reload()`` drops the cache (the runtime calls it when
    another process changed the settings).
    """

    def __init__(self, ctx: PluginContext) -> None:
        self._ctx = ctx
        self._stored: dict[str, Any] | None = None

    @property
    def _store(self) -> Any:
        return self._ctx.services.config_store

    def _values(self) -> dict[str, Any]:
        if self._stored is None:
            self._stored = run_blocking(self._store.load, self._ctx.name)
        return self._stored

    def get(self, key: str, default: Any = None) -> Any:
        """Return the setting ``key`` (set value, else schema default, else ``default``).

        In work about an organization, the organization's own value comes first.
        """
        scope = current_scope.get()
        if scope is not None and scope.settings:
            own = scope.settings.get(self._ctx.name)
            if own is not None and own.get(key) is not None:
                return copy.deepcopy(own[key])
        value = self._values().get(key)
        if value is not None:
            return value
        spec = self._ctx.manifest.settings_schema.get(key)
        if spec is not None and spec.has_default:
            return list(spec.default) if isinstance(spec.default, list) else spec.default
        return default

    def marker(self) -> tuple[Any, Any]:
        """Objects that are replaced whenever ``all()`` may answer differently here (the stored
        values, the current organization's own): compare them by identity to know that a copy
        of ``all()`` is still current without building it again."""
        scope = current_scope.get()
        own = scope.settings.get(self._ctx.name) if scope is not None and scope.settings else None
        return self._values(), own

    def all(self) -> dict[str, Any]:
        """Return every declared setting's current value (defaults included) plus stored extras."""
        out = {k: self.get(k) for k in self._ctx.manifest.settings_schema}
        for key, value in self._values().items():
            out.setdefault(key, value)
        return out

    # ``set``/``update`` write the site's settings; an organization's own are changed by its
    # admins (admin, REST), never by plugin code.

    def set(self, key: str, value: Any) -> Any:
        """Validate, persist and return the coerced value. ``None`` reverts to the default.

        Raises ``PluginSettingsError`` (field -> message) when the value does not fit the schema
        or ``key`` is not declared in ``settings_schema``.
        """
        return self.update({key: value})[key]

    def update(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and persist several settings at once (atomically); returns ``all()``."""
        schema = self._ctx.manifest.settings_schema
        undeclared = {
            k: "not declared in settings_schema of plugin.yaml; declare it there first"
            for k in values
            if k not in schema
        }
        if undeclared:
            raise PluginSettingsError(self._ctx.plugin_id, undeclared)
        coerced = validate_settings(
            schema, values, partial=True, plugin=self._ctx.plugin_id, current=self._values()
        )
        self._stored = run_blocking(self._store.update, self._ctx.name, coerced)
        return self.all()

    def reload(self) -> None:
        """Forget the cached values; the next ``get`` reads the store again."""
        self._stored = None


class StorageFacade:
    """``api.storage``: a key -> JSON value store of the plugin (namespaced by plugin name)."""

    def __init__(self, ctx: PluginContext) -> None:
        self._ctx = ctx

    @property
    def _store(self) -> Any:
        self._ctx.require("storage")
        return self._ctx.services.storage_store

    @staticmethod
    def _org() -> str:
        # Per organization: the organization of the work in progress ("" for none).
        scope = current_scope.get()
        return "" if scope is None or scope.org is None else str(scope.org)

    def _key(self, key: Any) -> str:
        if type(key) is not str or not key or len(key) > MAX_STORAGE_KEY:
            raise PlatformAPIError(
                self._ctx.plugin_id,
                f"storage keys are strings of 1-{MAX_STORAGE_KEY} characters, got {key!r}",
            )
        return key

    def _json(self, key: str, value: Any) -> Any:
        try:
            return json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise PlatformAPIError(
                self._ctx.plugin_id,
                f"storage value for {key!r} is not JSON data ({exc}); store dicts, lists, strings, "
                "numbers, booleans or None",
            ) from None

    async def get(self, key: str, default: Any = None) -> Any:
        """Return the value stored under ``key``, or ``default``."""
        store = self._store
        return await run_async(
            store.blocking_io, store.get, self._ctx.name, self._key(key), default, org=self._org()
        )

    async def set(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON data) under ``key``. Raises ``PlatformAPIError`` for non-JSON."""
        store, key = self._store, self._key(key)
        value = self._json(key, value)
        await run_async(store.blocking_io, store.set, self._ctx.name, key, value, org=self._org())

    async def delete(self, key: str) -> bool:
        """Delete ``key``; returns whether it existed."""
        store = self._store
        return await run_async(
            store.blocking_io, store.delete, self._ctx.name, self._key(key), org=self._org()
        )

    async def keys(self) -> list[str]:
        """Return the plugin's keys, sorted."""
        store = self._store
        return await run_async(store.blocking_io, store.keys, self._ctx.name, org=self._org())

    def get_sync(self, key: str, default: Any = None) -> Any:
        """Sync twin of ``get`` (works in an event loop thread too)."""
        return run_blocking(
            self._store.get, self._ctx.name, self._key(key), default, org=self._org()
        )

    def set_sync(self, key: str, value: Any) -> None:
        """Sync twin of ``set``."""
        key = self._key(key)
        run_blocking(self._store.set, self._ctx.name, key, self._json(key, value), org=self._org())

    def delete_sync(self, key: str) -> bool:
        """Sync twin of ``delete``."""
        return run_blocking(self._store.delete, self._ctx.name, self._key(key), org=self._org())

    def keys_sync(self) -> list[str]:
        """Sync twin of ``keys``."""
        return run_blocking(self._store.keys, self._ctx.name, org=self._org())

    async def update(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Atomically replace the value under ``key`` with ``fn(value)``; return the new value.

        ``fn`` gets the stored value (a copy), or ``default`` when ``key`` is missing, and no other
        ``update`` of the key (in any thread or process) runs in between. It runs under the
        plugin's time budget while the key is locked, so keep it short. Raises
        ``PlatformAPIError`` if ``fn`` returns non-JSON data; if ``fn`` raises, nothing is
        written and its exception propagates.
        """
        store, key = self._store, self._key(key)
        apply, default = self._applier(key, fn), self._json(key, default)
        return await run_async(
            store.blocking_io, store.update, self._ctx.name, key, apply, default, org=self._org()
        )

    def update_sync(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Sync twin of ``update``."""
        store, key = self._store, self._key(key)
        apply, default = self._applier(key, fn), self._json(key, default)
        return run_blocking(store.update, self._ctx.name, key, apply, default, org=self._org())

    async def increment(self, key: str, amount: int | float = 1) -> int | float:
        """Atomically add ``amount`` to the number under ``key`` (missing = 0); return the sum.

        Raises ``PlatformAPIError`` if ``amount`` or the stored value is not a number.
        """
        return await self.update(key, self._adder(key, amount), 0)

    def increment_sync(self, key: str, amount: int | float = 1) -> int | float:
        """Sync twin of ``increment``."""
        return self.update_sync(key, self._adder(key, amount), 0)

    def _applier(self, key: str, fn: Any) -> Callable[[Any], Any]:
        if not callable(fn):
            raise PlatformAPIError(
                self._ctx.plugin_id,
                f"storage update of {key!r} needs a function value -> new value, got {fn!r}",
            )
        budget = self._ctx.hook_timeout

        def apply(current: Any) -> Any:
            # Plugin code running while the key is locked: bounded by the plugin's budget, so a
            # runaway function cannot hold the lock (the interrupt rolls the update back).
            with time_limit(budget):
                value = fn(current)
            if inspect.isawaitable(value):
                if inspect.iscoroutine(value):
                    value.close()  # never awaited: no "coroutine was never awaited" warning
                raise PlatformAPIError(
                    self._ctx.plugin_id,
                    f"storage update of {key!r}: the function returned an awaitable; pass a plain "
                    "(not async) function, it runs while the key is locked",
                )
            return self._json(key, value)

        return apply

    def _adder(self, key: str, amount: Any) -> Callable[[Any], Any]:
        if not _is_number(amount):
            raise PlatformAPIError(
                self._ctx.plugin_id,
                f"storage increment of {key!r} needs a number to add, got {amount!r}",
            )

        def add(current: Any) -> Any:
            if not _is_number(current):
                raise PlatformAPIError(
                    self._ctx.plugin_id,
                    f"storage increment of {key!r}: the stored value {current!r} is not a number; "
                    "increment numbers only (use update(key, fn) for other values)",
                )
            return current + amount

        return add


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class BackendFacade:
    """Base of ``api.users``/``courses``/``notify``/``analytics``: permission + backend checks.

    Every backend method has an ``await``-able form (run off the loop) and a ``*_sync`` twin.
    """

    permission = ""
    service = ""

    def __init__(self, ctx: PluginContext) -> None:
        self._ctx = ctx

    def _backend(self) -> Any:
        self._ctx.require(self.permission)
        backend = getattr(self._ctx.services, self.service)
        if backend is None:
            raise PlatformAPIUnavailable(
                self._ctx.plugin_id,
                f"api.{self.service} needs a backend, and none is configured: run the plugin in a "
                f"Django site with course_plugins installed (COURSE_PLUGINS['{self.service.upper()}"
                "_BACKEND']) or pass one in Services",
            )
        return backend

    def _sync(self, method: str, *args: Any, **kwargs: Any) -> Any:
        backend = self._backend()
        return run_blocking(getattr(backend, method), *args, plugin=self._ctx.plugin_id, **kwargs)

    async def _async(self, method: str, *args: Any, **kwargs: Any) -> Any:
        backend = self._backend()
        blocking = getattr(backend, "blocking_io", True)
        return await run_async(
            blocking, getattr(backend, method), *args, plugin=self._ctx.plugin_id, **kwargs
        )


class UsersFacade(BackendFacade):
    """``api.users`` (permission ``users``): users as plain dicts."""

    permission = service = "users"

    async def get_current(self) -> dict[str, Any] | None:
        """Return the current request's user, or ``None`` (anonymous, or no request)."""
        return await self._async("get_current")

    async def get(self, user_id: Any) -> dict[str, Any] | None:
        """Return the user with id ``user_id``, or ``None``."""
        return await self._async("get", user_id)

    async def has_permission(self, user_id: Any, permission: str) -> bool:
        """Return whether the user has ``permission`` (``"app.codename"`` or a bare codename)."""
        return await self._async("has_permission", user_id, permission)

    def get_current_sync(self) -> dict[str, Any] | None:
        return self._sync("get_current")

    def get_sync(self, user_id: Any) -> dict[str, Any] | None:
        return self._sync("get", user_id)

    def has_permission_sync(self, user_id: Any, permission: str) -> bool:
        return self._sync("has_permission", user_id, permission)


class CoursesFacade(BackendFacade):
    """``api.courses`` (permission ``courses``): courses as plain dicts, read-only."""

    permission = service = "courses"

    async def get(self, course_id: Any) -> dict[str, Any] | None:
        """Return the course, or ``None``."""
        return await self._async("get", course_id)

    async def list_by_organization(self, org_id: Any) -> list[dict[str, Any]]:
        """Return the organization's courses."""
        return await self._async("list_by_organization", org_id)

    def get_sync(self, course_id: Any) -> dict[str, Any] | None:
        return self._sync("get", course_id)

    def list_by_organization_sync(self, org_id: Any) -> list[dict[str, Any]]:
        return self._sync("list_by_organization", org_id)


class NotifyFacade(BackendFacade):
    """``api.notify`` (permission ``notify``): in-site notifications and e-mail."""

    permission = service = "notify"

    async def send_to_user(self, user_id: Any, title: str, message: str = "") -> Any:
        """Notify one user; returns the notification id."""
        return await self._async("send_to_user", user_id, title, message)

    async def send_email(self, email: str, subject: str, body: str) -> Any:
        """Send one e-mail; returns the number sent."""
        return await self._async("send_email", email, subject, body)

    def send_to_user_sync(self, user_id: Any, title: str, message: str = "") -> Any:
        return self._sync("send_to_user", user_id, title, message)

    def send_email_sync(self, email: str, subject: str, body: str) -> Any:
        return self._sync("send_email", email, subject, body)


class AnalyticsFacade(BackendFacade):
    """``api.analytics`` (permission ``analytics``): record events."""

    permission = service = "analytics"

    async def track_event(
        self,
        name: str,
        properties: dict[str, Any] | None = None,
        *,
        user_id: Any = None,
        event_id: str | None = None,
    ) -> Any:
        """Record an event (the user defaults to the current one); returns its id.

        ``event_id``: the platform event this records (``event.id`` in a handler); the backend
        then records it once even when the event is delivered again (a retry).
        """
        kwargs: dict[str, Any] = {"user_id": user_id}
        if event_id is not None:
            kwargs["event_id"] = event_id
        return await self._async("track_event", name, properties, **kwargs)

    def track_event_sync(
        self,
        name: str,
        properties: dict[str, Any] | None = None,
        *,
        user_id: Any = None,
        event_id: str | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {"user_id": user_id}
        if event_id is not None:
            kwargs["event_id"] = event_id
        return self._sync("track_event", name, properties, **kwargs)




class AdviceFacade:
    """``api.advice`` (permission ``advice``): ``api.advice.before(target)(fn)`` and friends.

    Each combinator of ``core.advice`` is a method taking ``(target, fn=None, *, priority=10)``;
    used without ``fn`` it is a decorator. The plugin is recorded as the advice's owner.
    """

    def __init__(self, ctx: PluginContext) -> None:
        self._ctx = ctx

    def add(
        self, how: str, target: str, fn: Callable[..., Any] | None = None, *, priority: int = 10
    ) -> Any:
        """Add advice of kind ``how`` (one of ``ADVICE_KINDS``) to ``target``; returns ``fn``."""
        self._ctx.require("advice")
        if how not in ADVICE_KINDS:
            raise PlatformAPIError(
                self._ctx.plugin_id,
                f"unknown advice kind {how!r}; use one of {', '.join(ADVICE_KINDS)}",
            )
        if fn is None:
            return lambda f: self.add(how, target, f, priority=priority)
        with self._ctx.registering():
            advice.add_advice(
                how, target, fn, priority=priority, owner=self._ctx.plugin_id,
                shadow=self._ctx.shadow, timeout=self._ctx.hook_timeout,
            )
        return fn

    def remove(self, target: str, fn: Callable[..., Any]) -> None:
        """Remove one piece of the plugin's own advice (never another plugin's)."""
        self._ctx.require("advice")
        advice.remove_advice(target, fn, owner=self._ctx.plugin_id)

    def __getattr__(self, how: str) -> Callable[..., Any]:
        if how not in ADVICE_KINDS:
            raise AttributeError(how)

        def combinator(
            target: str, fn: Callable[..., Any] | None = None, *, priority: int = 10
        ) -> Any:
            return self.add(how, target, fn, priority=priority)

        combinator.__name__ = how
        return combinator
