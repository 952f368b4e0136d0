"""The Platform API as an isolated plugin sees it, inside its worker: every call goes to the host.

``RemoteAPI`` has the parts of ``PlatformAPI`` with the same methods (async ones and their
``*_sync`` twins); each call is one request to the host, where the plugin's real ``PlatformAPI``
checks the plugin's permissions and does the work. ``api.config`` answers reads from a copy of
the plugin's settings that the host refreshes with each call when they changed. Functions the
plugin registers travel as references; the host calls them back in this worker.
"""

from __future__ import annotations

import copy
import datetime
import inspect
import logging
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from course_plugins.exceptions import PlatformAPIError

if TYPE_CHECKING:
    from course_plugins.core.isolation.wire import Wire
    from course_plugins.core.isolation.worker import Worker


class HostObject:
    """A host object that is not data (a model instance...): only its plain data fields are
    reachable, each read and write going to the host."""

    __slots__ = ("_worker", "_ref", "_kind")

    def __init__(self, worker: Worker, ref: int, kind: str) -> None:
        object.__setattr__(self, "_worker", worker)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_kind", kind)

    def _tag(self) -> dict[str, Any]:
        return {"$": "obj", "r": self._ref}

    def __getattr__(self, name: str) -> Any:
        return self._worker.host_call({"op": "obj.get", "r": self._ref, "n": name})

    def __setattr__(self, name: str, value: Any) -> None:
        self._worker.host_call({"op": "obj.set", "r": self._ref, "n": name, "v": value})

    def __repr__(self) -> str:
        return f"<{self._kind} of the host>"


class HostFunction:
    """A host callable handed to the plugin (the ``orig`` of around advice): calling it runs it
    in the host."""

    __slots__ = ("_worker", "_ref", "__name__")

    def __init__(self, worker: Worker, ref: int, name: str) -> None:
        self._worker = worker
        self._ref = ref
        self.__name__ = name

    def _tag(self) -> dict[str, Any]:
        return {"$": "fn", "r": self._ref}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._worker.host_call(
            {"op": "fn.call", "r": self._ref, "a": list(args), "k": kwargs}
        )

    def __repr__(self) -> str:
        return f"<function {self.__name__} of the host>"


class Event:
    """An event as a handler sees it: ``name``, ``data``, ``source``, ``id``, ``timestamp``."""

    def __init__(self, name: str, data: Any = None, source: str = "platform", id: str = "",
                 timestamp: datetime.datetime | None = None) -> None:
        self.name = name
        self.data = data
        self.source = source
        self.id = id
        self.timestamp = timestamp or datetime.datetime.now(datetime.UTC)

    @classmethod
    def _from_tag(cls, tag: dict[str, Any]) -> Event:
        return cls(str(tag.get("n")), tag.get("d"), str(tag.get("s")), str(tag.get("i")),
                   tag.get("ts"))

    def _tag(self, wire: Wire) -> dict[str, Any]:
        return {"$": "ev", "n": self.name, "d": wire.encode(self.data), "s": self.source,
                "i": self.id, "ts": wire.encode(self.timestamp)}

    def __repr__(self) -> str:
        return f"Event(name={self.name!r}, source={self.source!r}, id={self.id!r})"


class _Part:
    def __init__(self, worker: Worker, prefix: str) -> None:
        self._worker = worker
        self._prefix = prefix

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._worker.host_call(
            {"op": "api", "p": f"{self._prefix}.{method}", "a": list(args), "k": kwargs}
        )


def _with_twins(names: tuple[str, ...]) -> Callable[[type], type]:
    """Give a part an ``async def name`` and a ``name_sync`` for each name, both calling the
    host's ``name_sync`` (the worker's own event loop waits while the host works)."""

    def decorate(cls: type) -> type:
        for name in names:
            def sync(self: _Part, *args: Any, _n: str = name, **kwargs: Any) -> Any:
                return self._call(f"{_n}_sync", *args, **kwargs)

            async def asynchronous(self: _Part, *args: Any, _n: str = name, **kwargs: Any) -> Any:
                return self._call(f"{_n}_sync", *args, **kwargs)

            sync.__name__ = sync.__qualname__ = f"{name}_sync"
            asynchronous.__name__ = asynchronous.__qualname__ = name
            setattr(cls, f"{name}_sync", sync)
            setattr(cls, name, asynchronous)
        return cls

    return decorate


@_with_twins(("get", "set", "delete", "keys", "increment"))
class RemoteStorage(_Part):
    """``api.storage`` (JSON values, namespaced per plugin, kept by the host).

    ``update(key, fn)`` runs ``fn`` here on the value this worker last stored under ``key`` (or
    read: for a key it has not updated yet, one more round trip) and asks the host to store the
    result only if that is still the stored value (checked under the key's lock). If another
    process or thread changed the key meanwhile, ``fn`` is called again with the current value
    (so it may run more than once; only the result computed from the current value is written).
    The host never calls ``fn`` back while it holds the key's lock: the worker's function could
    keep it (and the storage's transaction) for the plugin's whole budget.
    """

    _SEEN_MAX = 256

    def __init__(self, worker: Worker, prefix: str) -> None:
        super().__init__(worker, prefix)
        # key -> the value this worker last saw stored (written or returned by update).
        self._seen: dict[str, Any] = {}

    def _plugin_id(self) -> str | None:
        api = self._worker.api
        return api.plugin_id if api is not None else None

    def update_sync(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Atomically replace the value under ``key`` with ``fn(value)``; return the new value."""
        if not callable(fn):
            raise PlatformAPIError(
                self._plugin_id(),
                f"storage update of {key!r} needs a function value -> new value, got {fn!r}",
            )
        current = self._seen[key] if key in self._seen else self._call("get_sync", key, default)
        while True:  # as long as other writers get in first: the call's budget bounds it
            new = fn(copy.deepcopy(current))
            if inspect.isawaitable(new):
                if inspect.iscoroutine(new):
                    new.close()  # never awaited: no "coroutine was never awaited" warning
                raise PlatformAPIError(
                    self._plugin_id(),
                    f"storage update of {key!r}: the function returned an awaitable; pass a "
                    "plain (not async) function",
                )
            reply = self._call("swap_sync", key, current, new, default)
            if type(reply) is dict and "v" in reply:
                return self._remember(key, reply["v"])
            current = reply.get("stale") if type(reply) is dict else default

    async def update(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Async twin of ``update_sync`` (the worker's loop waits while the host works)."""
        return self.update_sync(key, fn, default)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method in ("set_sync", "delete_sync", "increment_sync") and args:
            self._seen.pop(args[0], None)  # written otherwise: read it again on the next update
        return super()._call(method, *args, **kwargs)

    def _remember(self, key: str, value: Any) -> Any:
        if len(self._seen) >= self._SEEN_MAX:
            self._seen.clear()
        self._seen[key] = copy.deepcopy(value)
        return value


@_with_twins(("get_current", "get", "has_permission"))
class RemoteUsers(_Part):
    """``api.users``."""


@_with_twins(("get", "list_by_organization"))
class RemoteCourses(_Part):
    """``api.courses``."""


@_with_twins(("send_to_user", "send_email"))
class RemoteNotify(_Part):
    """``api.notify``."""


@_with_twins(("track_event",))
class RemoteAnalytics(_Part):
    """``api.analytics``."""


class RemoteConfig(_Part):
    """``api.config``: reads from the host's latest copy, writes through the host."""

    def __init__(self, worker: Worker, snapshot: dict[str, Any]) -> None:
        super().__init__(worker, "config")
        self._snapshot = snapshot

    def get(self, key: str, default: Any = None) -> Any:
        value = self._snapshot.get(key)
        if value is None:
            return default
        return list(value) if isinstance(value, list) else value

    def all(self) -> dict[str, Any]:
        return dict(self._snapshot)

    def set(self, key: str, value: Any) -> Any:
        return self.update({key: value})[key]

    def update(self, values: dict[str, Any]) -> dict[str, Any]:
        self._snapshot = self._call("update", values)
        return dict(self._snapshot)

    def reload(self) -> None:
        self._call("reload")
        self._snapshot = self._call("all")


class RemoteHook:
    """One hook as the plugin sees it."""

    def __init__(self, api: RemoteAPI, name: str) -> None:
        self._api = api
        self.name = name

    def add(self, fn: Callable[..., Any] | None = None, *, priority: int = 10) -> Any:
        if fn is None:
            return lambda f: self.add(f, priority=priority)
        self._api._call("hooks.add", self.name, fn, priority=priority)
        return fn

    def remove(self, fn: Callable[..., Any]) -> bool:
        return bool(self._api._call("hooks.remove", self.name, fn))

    @property
    def functions(self) -> list[Callable[..., Any]]:
        """The plugin's own functions on this hook, in call order (as in trusted mode)."""
        return list(self._api._call("hooks.functions", self.name))


class RemoteHooks:
    """``api.hooks``."""

    def __init__(self, api: RemoteAPI) -> None:
        self._api = api

    def __getitem__(self, name: str) -> RemoteHook:
        self._api._call("hooks.check", name)
        return RemoteHook(self._api, name)

    def __contains__(self, name: object) -> bool:
        return bool(self._api._call("hooks.contains", name))

    def define(self, name: str, hook_type: Any, *, description: str = "") -> None:
        self._api._call("hooks.define", name, str(getattr(hook_type, "value", hook_type)),
                        description=description)

    def run_sync(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._api._call("hooks.run_sync", name, *args, **kwargs)

    async def run(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.run_sync(name, *args, **kwargs)


class RemoteEvents:
    """``api.events``."""

    def __init__(self, api: RemoteAPI) -> None:
        self._api = api

    def subscribe(self, pattern: str, handler: Callable[..., Any] | None = None, *,
                  background: bool = False) -> Any:
        self._api._call("events.check", pattern)
        if handler is None:
            return lambda h: self.subscribe(pattern, h, background=background)
        self._api._call("events.subscribe", pattern, handler, background=background)
        return handler

    def unsubscribe(self, pattern: str, handler: Callable[..., Any]) -> bool:
        return bool(self._api._call("events.unsubscribe", pattern, handler))


class RemoteAdvice:
    """``api.advice``: ``api.advice.before(target)(fn)`` and the other combinators."""

    def __init__(self, api: RemoteAPI, kinds: list[str]) -> None:
        self._api = api
        self._kinds = frozenset(kinds)

    def add(self, how: str, target: str, fn: Callable[..., Any] | None = None, *,
            priority: int = 10) -> Any:
        if fn is None:
            self._api._call("advice.check", how)
            return lambda f: self.add(how, target, f, priority=priority)
        self._api._call("advice.add", how, target, fn, priority=priority)
        return fn

    def remove(self, target: str, fn: Callable[..., Any]) -> None:
        self._api._call("advice.remove", target, fn)

    def __getattr__(self, how: str) -> Callable[..., Any]:
        if how.startswith("_") or how not in self._kinds:
            raise AttributeError(how)

        def combinator(target: str, fn: Callable[..., Any] | None = None, *,
                       priority: int = 10) -> Any:
            return self.add(how, target, fn, priority=priority)

        combinator.__name__ = how
        return combinator


class RemoteLog:
    """``api.log``: records are formatted here and logged by the host with the plugin's logger."""

    def __init__(self, api: RemoteAPI, name: str) -> None:
        self._api = api
        self.name = name

    def log(self, level: int, msg: Any, *args: Any, exc_info: Any = None, **_: Any) -> None:
        text = str(msg) % args if args else str(msg)
        if exc_info:
            exc = exc_info if isinstance(exc_info, BaseException) else None
            text += "\n" + ("".join(traceback.format_exception(exc)) if exc
                            else traceback.format_exc())
        self._api._call("log", int(level), text)

    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    warn = warning

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=exc_info, **kwargs)

    def critical(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.CRITICAL, msg, *args, **kwargs)


class RemoteAPI:
    """What ``activate(api)`` gets in an isolated plugin (see the module docstring)."""

    def __init__(self, worker: Worker, info: dict[str, Any]) -> None:
        self._worker = worker
        self.plugin_id: str = str(info["plugin_id"])
        self.name: str = str(info["name"])
        self.permissions = frozenset(info.get("permissions", ()))
        self.hook_timeout = float(info.get("hook_timeout", 5.0))
        self.log = RemoteLog(self, f"course_plugins.plugins.{self.name}")
        self.hooks = RemoteHooks(self)
        self.events = RemoteEvents(self)
        self.config = RemoteConfig(worker, dict(info.get("config", {})))
        self.storage = RemoteStorage(worker, "storage")
        self.users = RemoteUsers(worker, "users")
        self.courses = RemoteCourses(worker, "courses")
        self.notify = RemoteNotify(worker, "notify")
        self.analytics = RemoteAnalytics(worker, "analytics")
        self.advice = RemoteAdvice(self, list(info.get("advice_kinds", ())))

    def _call(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return self._worker.host_call({"op": "api", "p": path, "a": list(args), "k": kwargs})

    def emit(self, name: str, data: Any = None) -> None:
        """Publish event ``name`` (fire-and-forget; the host delivers it)."""
        self._call("emit", name, data)

    def schedule(self, fn: Callable[[], Any], delay_seconds: float, repeat: bool = False) -> str:
        """Run module-level ``fn()`` later (repeatedly if ``repeat``); returns the schedule id."""
        return str(self._call("schedule", fn, delay_seconds, repeat))

    def cancel_schedule(self, schedule_id: str) -> bool:
        return bool(self._call("cancel_schedule", schedule_id))

    def __repr__(self) -> str:
        return f"<PlatformAPI {self.plugin_id} (isolated)>"
