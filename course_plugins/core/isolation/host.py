"""The host's side of an isolated plugin: its worker process, the proxies it registers, and the
servicing of the plugin's Platform API calls against its real ``PlatformAPI``.

``IsolatedPlugin(plugin, root)`` has the ``load()``/``unload()`` of the loader's importer:
``load()`` starts a confined worker (forked by the sandbox's zygote, see ``worker``), sends
it the plugin's source files and returns a ``RemoteModule`` whose module-level functions are
proxies (``activate`` among them). Functions the plugin registers (hook functions, handlers,
advice, scheduled functions) become proxies too, named like the plugin's own (same
``__qualname__``, so the same registration keys as in trusted mode), sync or ``async def`` like
the original.

Calling a proxy is one request over the channel. It waits at most the plugin's budget
(``plugin.hook_timeout``; ``HOOK_TIMEOUT`` for ``activate``/``deactivate``); past it the worker
is killed and the call raises ``WorkerTimeout``. A worker that dies raises ``WorkerCrashed``.
Both are ordinary exceptions of the plugin's function, so the engine counts them towards
quarantine; no host thread is ever interrupted. The next call starts a new worker, which imports
the plugin again and, if it was active, runs ``activate(api)`` again (registrations it makes
that the host already holds are kept, not doubled).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import threading
import time
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from course_plugins.core.advice import ADVICE_KINDS
from course_plugins.core.event_bus import Event
from course_plugins.core.isolation.channel import (
    REGISTERING,
    Endpoint,
    WorkerCrashed,
    WorkerTimeout,
)
from course_plugins.core.isolation.host_api import (
    API,
    PRIVILEGE_FIELDS,
    SECRET_FIELDS,
    TAKES_FUNCTIONS,
    first_not_data,
    instance_dict,
    model_meta,
    plain_fields,
    type_name,
)
from course_plugins.core.isolation.wire import ChannelClosed, Wire, WireError, as_plain, is_data
from course_plugins.core.options import options
from course_plugins.core.plugin_modules import read_sources
from course_plugins.core.sandbox.audit import BLOCKED, REJECTED, audit
from course_plugins.core.sandbox.errors import SandboxError
from course_plugins.core.sandbox.workers import Worker, start_worker
from course_plugins.core.worker_threads import call_off_loop, in_worker, loop_running
from course_plugins.exceptions import PlatformAPIError

logger = logging.getLogger("course_plugins.isolation")

ENTRY = "course_plugins.core.isolation.worker:serve"
MEMORY_MB = 256
MAX_LOOSE = 256
#: Functions of the worker a message may name: module-level ones (kept for the plugin's life, so
#: capped in all) and others lent within one call. A worker naming more is refused: each is a
#: proxy in the site's memory.
MAX_MODULE_FUNCTIONS = 4096
MAX_LENT = 1024
#: Distinct functions an isolated plugin may register (hooks, events, advice, schedules) while
#: active: each is a proxy the site keeps and calls, one round trip each time its hook runs.
MAX_REGISTERED = 256
#: Places (hook, event pattern, advice target, schedule) where an isolated plugin's functions
#: may be registered at once: each is an entry of the site's registries, and one function
#: subscribed to "course.p0", "course.p1"... (all covered by "course.*") grew them without end.
MAX_PLACES = 1024
#: The argument naming the place, and the family, of each call that registers or removes.
_PLACE_OF = {
    "hooks.add": ("hook", "name"), "hooks.remove": ("hook", "name"),
    "events.subscribe": ("event", "pattern"), "events.unsubscribe": ("event", "pattern"),
    "advice.add": ("advice", "target"), "advice.remove": ("advice", "target"),
    "schedule": ("schedule", None),
}
WORKER_AUDIT_KINDS = frozenset({BLOCKED, REJECTED})
LIFECYCLE = frozenset({"activate", "deactivate", "uninstall"})


#: Characters of one ``api.log`` record of an isolated plugin that reach the site's logs.
MAX_LOG_TEXT = 64 * 1024
#: Records, and characters, of ``api.log`` that one call of an isolated plugin (nested calls
#: included) may write to the site's logs; the rest are dropped and counted in one more line.
MAX_LOG_RECORDS = 1000
MAX_LOG_BYTES = 1024 * 1024


def _log_text(text: Any) -> str:
    text = str(text)
    if len(text) <= MAX_LOG_TEXT:
        return text
    return f"{text[:MAX_LOG_TEXT]}... ({len(text) - MAX_LOG_TEXT} more characters cut)"


def _log_text_args(level: Any, text: Any) -> tuple[int, str]:
    """The level and text of an ``api.log`` record a worker sent (the text cut, see
    ``MAX_LOG_TEXT``)."""
    return int(level), _log_text(text)


def _check_module_name(relative: str, name: str) -> None:
    """Refuse a module-level name a worker sent that is not one (``RemoteModule`` keeps its own
    state in double-underscore names and ``_isolated_plugin``)."""
    for part in [name, *(relative.split(".") if relative else ())]:
        if not part.isidentifier() or part.startswith("__") or part == "_isolated_plugin":
            raise WireError(f"malformed module-level name {relative!r}, {name!r}")


def _signature(shape: Any) -> inspect.Signature | None:
    """The signature a worker described (``[[name, kind, has default], ...]``), or ``None``."""
    if type(shape) is not list or len(shape) > 100:
        return None
    try:
        return inspect.Signature([
            inspect.Parameter(str(name), inspect._ParameterKind(int(kind)),
                              default=None if has_default else inspect.Parameter.empty)
            for name, kind, has_default in shape
        ])
    except (TypeError, ValueError):
        return None


class RemoteModule(types.ModuleType):
    """Stands in for an isolated plugin's module in the host: its module-level functions are
    proxies, its submodules ``RemoteModule``s. Any other module-level name is read from the
    worker when asked for, as a copy (plain data; functions as proxies): tests of a plugin can
    look at its state, nothing can change it from here."""

    def __getattr__(self, name: str) -> Any:
        handle = self.__dict__.get("_isolated_plugin")
        if handle is None or name.startswith("__"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        relative = self.__name__[len(handle.root) + 1:]
        return handle.call({"ml": relative, "n": name}, (), {}, name, op="peek")

    def __repr__(self) -> str:
        return f"<isolated module {self.__name__!r}>"


_instances: weakref.WeakSet[IsolatedPlugin] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked host (Celery prefork, Gunicorn --preload) must not talk to its parent's workers:
    forget them (without stopping them: they are the parent's) and start its own on first use."""
    for handle in list(_instances):
        handle.lock = threading.RLock()
        handle.active = 0
        worker, handle.worker, handle.endpoint = handle.worker, None, None
        if worker is not None:
            worker.channel.close()  # this process's copy of the descriptor only


os.register_at_fork(after_in_child=_after_fork_in_child)


class IsolatedPlugin:
    """The host's handle on one isolated plugin (see the module docstring)."""

    def __init__(self, plugin: Any, root: str, *, python: str | None = None,
                 memory_mb: int = MEMORY_MB) -> None:
        self.plugin = plugin
        self.root = root
        self.python = python
        self.memory_mb = memory_mb
        self.lock = threading.RLock()
        self.wire = Wire(self._export, self._resolve)
        self.module: RemoteModule | None = None
        self.worker: Worker | None = None
        self.endpoint: Endpoint | None = None
        self.sources: dict[str, bytes] = {}
        # ref id -> (tag, object) of the host objects lent to the worker for the current call.
        self.refs: dict[int, tuple[str, Any]] = {}
        # The lent functions the worker called back already in the current call (only the first
        # call of each is not charged to the plugin's budget, see _uncharged).
        self.called: set[int] = set()
        self.active = 0  # calls of the plugin in progress (nested ones included)
        self._ref_ids = itertools.count(1)
        self.proxies: dict[int, Any] = {}
        self.module_proxies: dict[tuple[str, str], Any] = {}
        self.registered: set[int] = set()
        self.places: set[tuple[Any, ...]] = set()  # see MAX_PLACES
        self.lent: list[int] = []
        self.loose: OrderedDict[int, None] = OrderedDict()  # see _keep_loose
        self.activated = False
        self.replaying = False
        self.log_records = self.log_chars = self.log_dropped = 0  # of the call in progress
        self.restarts = 0
        self.crashes = 0
        self._config: Any = None
        self._marker: tuple[Any, ...] | None = None  # see _config_changes
        _instances.add(self)

    def __repr__(self) -> str:
        state = f"pid {self.worker.pid}" if self.worker is not None else "no worker"
        return f"<IsolatedPlugin {self.plugin.id} ({state})>"

    # -- the loader's importer interface ----------------------------------------------------------

    def load(self) -> RemoteModule:
        """Start the worker and import the plugin in it; returns the ``RemoteModule``.

        Raises what the plugin's module code raised (``SecurityViolation`` for a policy refusal),
        ``WorkerTimeout`` when importing ran over ``HOOK_TIMEOUT``, ``WorkerCrashed``.
        """
        self.sources = read_sources(self.plugin.path)
        with self.lock:
            self._start()
        assert self.module is not None
        return self.module

    def unload(self) -> None:
        """Stop the worker (the module's proxies fail from now on)."""
        with self.lock:
            self.activated = False
            self._kill(None)

    @property
    def pid(self) -> int | None:
        """The worker's process id (``None`` while there is none)."""
        return self.worker.pid if self.worker is not None else None

    # -- calls ------------------------------------------------------------------------------------

    def call(self, target: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
             name: str = "function", *, op: str = "call") -> Any:
        """Call the plugin's function ``target`` in the worker; returns its result.

        Raises what the function raised, ``WorkerTimeout`` past the budget (the worker is
        killed), ``WorkerCrashed`` if the worker died.
        """
        lifecycle = target.get("ml") == "" and target.get("n") in LIFECYCLE
        budget = options.hook_timeout if lifecycle else self.plugin.hook_timeout
        if not self.lock.acquire(timeout=budget):
            raise WorkerTimeout(
                f"{self.plugin.id}: {name} could not run: the plugin's worker stayed busy with "
                f"another call for its whole time budget of {budget:g} s"
            )
        endpoint = None
        self.active += 1
        try:
            if self.endpoint is None:
                if self.active > 1:  # the worker was stopped inside an enclosing call
                    raise WorkerCrashed(
                        f"{self.plugin.id}: {name} could not run: the plugin's worker was "
                        "stopped during the call it is nested in"
                    )
                if lifecycle and target.get("n") != "activate":
                    logger.info("Plugin %s: no worker is running; %s() is skipped",
                                self.plugin.id, target.get("n"))
                    return None
                self._restart()
            endpoint = self.endpoint
            assert endpoint is not None
            request: dict[str, Any] = {"op": op, "f": target,
                                       "a": self.wire.encode(list(args)),
                                       "k": self.wire.encode(kwargs)}
            config = self._config_changes()
            if config is not None:
                request["cfg"] = config
            if target.get("n") == "deactivate" and lifecycle:
                self.activated = False
                self.registered.clear()
                self.places.clear()
            endpoint.timeout(budget)
            try:
                result = endpoint.call(request, time.monotonic() + budget, args)
            except WorkerTimeout:
                self._failed(endpoint, "timeout", f"{name} ran over its time budget of "
                             f"{budget:g} s; the worker was stopped")
                raise WorkerTimeout(
                    f"{self.plugin.id}: {name} ran over its time budget of {budget:g} s; its "
                    "worker was stopped and is replaced on the next call"
                ) from None
            except (ChannelClosed, WireError, OSError) as exc:
                if exc is endpoint.replied:
                    raise  # the plugin's own error (an OSError), not the channel's
                self._failed(endpoint, "abnormal_exit", f"the worker ended during {name} ({exc})")
                raise WorkerCrashed(
                    f"{self.plugin.id}: the plugin's worker ended during {name} ({exc}); it is "
                    "replaced on the next call"
                ) from None
            if lifecycle and target.get("n") == "activate":
                self.activated = True
            return result
        finally:
            self.active -= 1
            if endpoint is None or endpoint.depth == 0:
                self._end_of_call()
            self.lock.release()

    def _keep_loose(self) -> None:
        """Functions of the worker that reached the site in a call's result (not registered)
        keep their proxy for the site to call, but only the last ``MAX_LOOSE`` stay listed here:
        a plugin returning a new function on every call cannot grow the site's memory. A proxy
        dropped from the list still works for whoever holds it."""
        for handle in self.lent:
            proxy = self.proxies.get(handle)
            if proxy is not None and id(proxy) not in self.registered:
                self.loose[handle] = None
        while len(self.loose) > MAX_LOOSE:
            handle, _ = self.loose.popitem(last=False)
            proxy = self.proxies.get(handle)
            if proxy is not None and id(proxy) not in self.registered:
                del self.proxies[handle]

    def proxy(self, target: dict[str, Any], name: str, qualname: str, module: str,
              is_async: bool, shape: Any = None) -> Callable[..., Any]:
        """A host function that calls ``target`` in the worker, named like the original."""
        handle = self

        if is_async:
            async def proxy(*args: Any, **kwargs: Any) -> Any:
                return await asyncio.to_thread(in_worker, handle.call, target, args, kwargs,
                                               qualname)
        else:
            def proxy(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                if loop_running():  # never wait for the worker on an event loop's thread
                    return call_off_loop(handle.call, target, args, kwargs, qualname)
                return handle.call(target, args, kwargs, qualname)

        proxy.__name__ = name
        proxy.__qualname__ = qualname
        proxy.__module__ = module
        proxy.__doc__ = f"Runs {qualname} of isolated plugin {self.plugin.id} in its worker."
        proxy._isolated = (self, target)  # type: ignore[attr-defined]
        signature = _signature(shape)
        if signature is not None:
            proxy.__signature__ = signature  # type: ignore[attr-defined]
        return proxy

    # -- the worker process -----------------------------------------------------------------------

    def _spawn(self) -> None:
        try:
            worker = start_worker(ENTRY, memory_mb=self.memory_mb, python=self.python)
        except (SandboxError, OSError) as exc:
            raise WorkerCrashed(f"{self.plugin.id}: could not start a worker: {exc}") from exc
        self.worker = worker
        # The host's tracebacks stay here: a plugin learns what failed, not the site's code.
        self.endpoint = Endpoint(worker.channel.fileno(), self.wire, self._serve,
                                 send_tracebacks=False, uncharged=self._uncharged,
                                 one_way_failed=self._one_way_failed, owner=self.plugin.id,
                                 packs=True)

    def _start(self) -> None:
        self._spawn()
        plugin = self.plugin
        manifest = plugin.manifest
        self._config = self._current_config()
        self._marker = self._config_marker()
        info = {
            "plugin_id": plugin.id,
            "name": plugin.name,
            "permissions": sorted(manifest.permissions) if manifest is not None else [],
            "hook_timeout": plugin.hook_timeout,
            "config": self._config or {},
            "advice_kinds": list(ADVICE_KINDS),
        }
        try:
            sources = {path: data.decode("utf-8") for path, data in self.sources.items()}
        except UnicodeDecodeError as exc:
            self._kill(None)
            raise ImportError(f"{plugin.path}: a source file is not UTF-8 ({exc})") from None
        request = {"op": "load", "plugin": plugin.id, "root": self.root,
                   "folder": str(Path(plugin.path).resolve()), "sources": sources, "info": info}
        endpoint = self.endpoint
        assert endpoint is not None
        try:
            functions = endpoint.call(self.wire.encode(request),
                                      time.monotonic() + options.hook_timeout)
        except WorkerTimeout:
            self._kill(None)
            raise WorkerTimeout(
                f"{plugin.id}: its module code ran over the time budget of "
                f"{options.hook_timeout:g} s (HOOK_TIMEOUT)"
            ) from None
        except (ChannelClosed, WireError, OSError) as exc:
            self._kill(None)
            raise WorkerCrashed(f"{plugin.id}: the worker ended while importing ({exc})") from None
        except BaseException:
            self._kill(None)
            raise
        finally:
            self.refs.clear()
        if self.module is None:
            self.module = RemoteModule(self.root, f"Isolated plugin {plugin.id}")
            self.module.__dict__["_isolated_plugin"] = self
        for holder, attr, home, name, is_async, shape in functions:
            try:
                _check_module_name(str(holder), str(attr))
                _check_module_name(str(home), str(name))
            except WireError:
                continue  # not a name the site looks up (a module's __getattr__...)
            proxy = self._module_proxy(str(home), str(name), bool(is_async), shape)
            setattr(self._submodule(str(holder)), str(attr), proxy)

    def _restart(self) -> None:
        self.restarts += 1
        logger.warning("Plugin %s: starting a new worker (restart %d)", self.plugin.id,
                       self.restarts)
        self._start()
        if not self.activated:
            return
        activate = self.module_proxies.get(("", "activate"))
        if activate is None:
            return
        self.replaying = True
        endpoint = self.endpoint
        assert endpoint is not None
        try:
            endpoint.call(self.wire.encode({"op": "call", "f": {"ml": "", "n": "activate"},
                                            "a": [self.plugin.api], "k": {}}),
                          time.monotonic() + options.hook_timeout)
        except BaseException as exc:
            self._kill(None)
            raise WorkerCrashed(
                f"{self.plugin.id}: its new worker failed to activate the plugin again: {exc}"
            ) from None
        finally:
            self.replaying = False
            self.refs.clear()

    def _failed(self, endpoint: Endpoint, kind: str, detail: str) -> None:
        self.crashes += 1
        if endpoint is self.endpoint:
            self._kill(None)
        audit(kind, detail, plugin=self.plugin.id)

    def _kill(self, _reason: str | None) -> None:
        worker, endpoint = self.worker, self.endpoint
        self.worker = self.endpoint = None
        if endpoint is not None:
            endpoint.close()  # calls further up the stack must not read its descriptor again
        if worker is not None:
            try:
                worker.close()
            except (SandboxError, OSError):
                logger.warning("Plugin %s: could not stop worker %s", self.plugin.id, worker.pid)

    def _module_proxy(self, relative: str, name: str, is_async: bool, shape: Any = None) -> Any:
        key = (relative, name)
        found = self.module_proxies.get(key)
        if found is not None:
            return found
        _check_module_name(relative, name)
        if len(self.module_proxies) >= MAX_MODULE_FUNCTIONS:
            raise WireError(f"more than {MAX_MODULE_FUNCTIONS} module-level functions")
        module = self._submodule(relative)
        proxy = self.proxy({"ml": relative, "n": name}, name, name, module.__name__, is_async,
                           shape)
        setattr(module, name, proxy)
        self.module_proxies[key] = proxy
        return proxy

    def _submodule(self, relative: str) -> RemoteModule:
        """The ``RemoteModule`` standing in for the plugin's module ``relative`` ("" the root)."""
        assert self.module is not None
        module = self.module
        full = self.root
        for part in relative.split(".") if relative else ():
            full = f"{full}.{part}"
            sub = module.__dict__.get(part)
            if not isinstance(sub, RemoteModule):
                sub = RemoteModule(full)
                sub.__dict__["_isolated_plugin"] = self
                setattr(module, part, sub)
            module = sub
        return module

    def _config_changes(self) -> Any:
        marker = self._config_marker()
        if marker is not None and self._marker is not None and all(
            a is b for a, b in zip(marker, self._marker, strict=True)
        ):
            return None  # the settings objects the worker's copy was made from are current
        current = self._current_config()
        self._marker = marker
        if current is None or current == self._config:
            return None
        self._config = current
        return self.wire.encode(current)

    def _config_marker(self) -> tuple[Any, ...] | None:
        marker = getattr(getattr(self.plugin.api, "config", None), "marker", None)
        try:
            return tuple(marker()) if callable(marker) else None
        except Exception:
            return None

    def _current_config(self) -> Any:
        api = self.plugin.api
        if api is None:
            return None
        try:
            return api.config.all()
        except Exception:
            return None

    # -- values crossing --------------------------------------------------------------------------

    def _export(self, value: Any) -> dict[str, Any]:
        if value is not None and value is self.plugin.api:
            return {"$": "api"}
        # (Read without running any code of the value's: it may be a trusted plugin's object,
        # and nothing bounds the time spent here.)
        own = value.__dict__.get("_isolated") if type(value) is types.FunctionType else None
        if type(own) is tuple and own[0] is self:
            return {"$": "wfn", **own[1]}
        if isinstance(value, Event):
            return {"$": "ev", "n": value.name, "d": self.wire.encode(value.data),
                    "s": str(value.source), "i": value.id,
                    "ts": self.wire.encode(value.timestamp)}
        plain = as_plain(value)  # an instance of a subclass of a plain type: as plain data
        if plain is not None:
            return self.wire.encode(plain)
        ref = next(self._ref_ids)
        if callable(value) and not isinstance(value, type):
            self.refs[ref] = ("fn", value)
            name = (value.__name__ if type(value) in (types.FunctionType,
                                                      types.BuiltinFunctionType)
                    else "function")
            return {"$": "fn", "r": ref, "n": name}
        self.refs[ref] = ("obj", value)
        return {"$": "obj", "r": ref, "c": type_name(value)}

    def _resolve(self, tag: dict[str, Any]) -> Any:
        kind = tag.get("$")
        if kind == "api":
            return self.plugin.api
        if kind in ("fn", "obj"):
            # A reference is good only as what it was lent as: an object's is never called.
            ref = tag.get("r")
            lent = self.refs.get(ref) if type(ref) is int else None
            if lent is not None and lent[0] == kind:
                return lent[1]
            raise WireError("that object of the host is gone: it was lent for one call only")
        if kind == "wfn":
            return self._proxy_for(tag)
        if kind == "ev":
            timestamp = tag.get("ts")
            return Event(str(tag.get("n")), tag.get("d"), str(tag.get("s")),
                         id=str(tag.get("i")) or None,
                         timestamp=timestamp if hasattr(timestamp, "tzinfo") else None)
        raise WireError(f"unexpected tag {kind!r}")

    def _proxy_for(self, tag: dict[str, Any]) -> Any:
        name, qualname = str(tag.get("n"))[:200], str(tag.get("q"))[:400]
        if "ml" in tag:
            relative = str(tag["ml"])
            found = self.module_proxies.get((relative, name))
            if found is not None:
                return found
            return self._module_proxy(relative, name, bool(tag.get("a")), tag.get("sig"))
        handle = tag.get("h")
        if type(handle) is not int:
            raise WireError("malformed function reference")
        found = self.proxies.get(handle)
        if found is not None and found.__qualname__ == qualname:
            return found
        if len(self.lent) >= MAX_LENT:
            raise WireError(f"more than {MAX_LENT} functions lent in one call")
        module = str(tag.get("m"))[:400]
        proxy = self.proxy({"h": handle}, name, qualname, module, bool(tag.get("a")),
                           tag.get("sig"))
        self.proxies[handle] = proxy
        self.lent.append(handle)
        return proxy

    # -- the worker's requests --------------------------------------------------------------------

    def _one_way_failed(self, request: Any, exc: BaseException) -> None:
        """A one-way Platform API call failed: the plugin learns it from its log (the worker
        went on without waiting for an answer)."""
        path = request.get("p") if type(request) is dict else None
        if self.log_records >= MAX_LOG_RECORDS or self.log_chars >= MAX_LOG_BYTES:
            self.log_dropped += 1  # (one line each: a refused emit in a loop is a log flood)
            return
        self.log_records += 1
        plugin_log: Any = getattr(getattr(self.plugin, "api", None), "log", None)
        if not callable(getattr(plugin_log, "error", None)):
            plugin_log = logger
        plugin_log.error(
            "Plugin %s: api.%s failed: %s: %s", self.plugin.id, str(path)[:100],
            type(exc).__name__, _log_text(exc),
        )

    def _uncharged(self, request: Any) -> bool:
        """Whether the time serving ``request`` is not charged to the plugin's budget: only the
        first call back of each host function lent in this call (around advice's ``orig``,
        whose work is the site's, not the plugin's); calling it again is the plugin's doing."""
        if type(request) is not dict or request.get("op") != "fn.call":
            return False
        ref = request.get("r")
        if type(ref) is not int or ref in self.called:
            return False
        self.called.add(ref)
        return True

    def _serve(self, request: Any) -> Any:
        if type(request) is not dict:
            raise ValueError("malformed request")
        op = request.get("op")
        args = request.get("a", [])
        kwargs = request.get("k", {})
        if type(args) is not list or type(kwargs) is not dict:
            raise ValueError("malformed request")
        if op == "api":
            path = str(request.get("p"))
            if path == "log":
                return self._log(args, kwargs)
            return self.wire.encode(self._api(path, args, kwargs))
        if op == "obj.get":
            return self._field(request.get("r"), request.get("n"))
        if op == "obj.set":
            self._field(request.get("r"), request.get("n"), request.get("v"), write=True)
            return None
        if op == "fn.call":
            fn = self._resolve({"$": "fn", "r": request.get("r")})
            if not callable(fn):
                raise TypeError("that object of the host cannot be called")
            return self.wire.encode(fn(*args, **kwargs))
        if op == "audit":
            kind = request.get("kind")
            if type(kind) is not str or kind not in WORKER_AUDIT_KINDS:
                raise ValueError("a worker reports only its own policy refusals")
            audit(str(kind), str(request.get("detail"))[:4000], plugin=self.plugin.id)
            return None
        raise ValueError(f"unknown request {op!r}")

    def _log(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        """``api.log``: one record to the plugin's logger, within what one call may log (the
        records are one-way: a worker could send them as fast as the site writes them,
        gigabytes of logs a call)."""
        if self.log_records >= MAX_LOG_RECORDS or self.log_chars >= MAX_LOG_BYTES:
            self.log_dropped += 1
            return
        self._check_arguments("log", [*args, *kwargs.values()])
        level, text = _log_text_args(*args, **kwargs)
        self.log_records += 1
        self.log_chars += len(text)
        self.plugin.api.log.log(level, "%s", text)

    def _end_of_call(self) -> None:
        """What one call (with the calls nested in it) leaves behind is dropped; a note says how
        many of its log records did not reach the site's logs."""
        self.refs.clear()
        self.called.clear()
        self._keep_loose()
        self.lent.clear()
        dropped, self.log_dropped = self.log_dropped, 0
        self.log_records = self.log_chars = 0
        if dropped:
            self.plugin.api.log.warning(
                "%s: %d more log records of this call were dropped (at most %d records and %d "
                "characters a call)", self.plugin.id, dropped, MAX_LOG_RECORDS, MAX_LOG_BYTES,
            )

    def _api(self, path: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        method = API.get(path)
        if method is None:
            raise AttributeError(f"api.{path} is not part of the Platform API")
        self._check_arguments(path, [*args, *kwargs.values()])
        if path in REGISTERING:
            fn = next((a for a in [*args, *kwargs.values()] if callable(a)), None)
            if fn is not None and id(fn) in self.registered and self.replaying:
                return None  # registered before the worker was replaced: still there
            if fn is not None and id(fn) not in self.registered and (
                len(self.registered) >= MAX_REGISTERED
            ):
                raise PlatformAPIError(
                    self.plugin.id,
                    f"api.{path}: an isolated plugin registers at most {MAX_REGISTERED} "
                    "functions (each one the site calls over the channel); register the same "
                    "functions again rather than new ones",
                )
            place = self._place(path, method, args, kwargs, fn)
            if place is not None and place not in self.places and (
                len(self.places) >= MAX_PLACES
            ):
                raise PlatformAPIError(
                    self.plugin.id,
                    f"api.{path}: an isolated plugin registers its functions in at most "
                    f"{MAX_PLACES} places (hooks, event patterns, advice targets, schedules) at "
                    "once; remove some first",
                )
            result = method(self.plugin.api, *args, **kwargs)
            if fn is not None:
                self.registered.add(id(fn))
            if place is not None:
                self.places.add(place)
            return result
        mark = len(self.lent)
        try:
            result = method(self.plugin.api, *args, **kwargs)
            if path in _PLACE_OF:  # a removal frees its place
                self.places.discard(self._place(path, method, args, kwargs))
            return result
        finally:
            # Functions lent for this call only (the worker forgets them too).
            for handle in self.lent[mark:]:
                proxy = self.proxies.get(handle)
                if proxy is not None and id(proxy) not in self.registered:
                    del self.proxies[handle]
            del self.lent[mark:]

    @staticmethod
    def _place(path: str, method: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
               fn: Any = None) -> tuple[Any, ...] | None:
        """``(family, place, function)`` of a registration or removal (``None`` if the call's
        arguments do not fit: the call itself then says so)."""
        family, argument = _PLACE_OF.get(path, (None, None))
        if family is None:
            return None
        try:
            bound = inspect.signature(method).bind(None, *args, **kwargs).arguments
        except TypeError:
            return None
        where = bound.get(argument) if argument else None
        what = fn if fn is not None else bound.get("fn")
        return (family, where if type(where) is str else None, id(what))

    def _check_arguments(self, path: str, values: list[Any]) -> None:
        """Refuse what a worker may not hand to ``api.<path>``: a call that takes functions
        (``TAKES_FUNCTIONS``) takes the plugin's own, every other call plain data only.

        What the site lent the plugin for one call (around advice's ``orig``, a model instance,
        the plugin's ``api``) is never registered, scheduled, stored, sent, passed on in an
        event to other plugins' handlers or to the other functions of a hook it runs
        (``api.hooks.run_sync``), which would get the site's object itself (a trusted plugin's)
        or keep it past the call it was lent for."""
        takes_functions = path in TAKES_FUNCTIONS
        for value in values:
            if is_data(value) or (takes_functions and self._owns(value)):
                continue
            if takes_functions and callable(value):
                raise TypeError(f"{self.plugin.id}: api.{path} takes functions of the plugin only")
            found = first_not_data(value)
            raise TypeError(
                f"{self.plugin.id}: api.{path} takes plain data only (JSON values, tuples, bytes, "
                f"dates and times), not {self._describe(found)}"
            )

    def _owns(self, value: Any) -> bool:
        """Whether ``value`` is the proxy of one of this plugin's own functions."""
        own = value.__dict__.get("_isolated") if type(value) is types.FunctionType else None
        return type(own) is tuple and own[0] is self

    def _describe(self, value: Any) -> str:
        if value is self.plugin.api:
            return "its api"
        if self._owns(value):
            return f"its function {value.__qualname__}"
        if isinstance(value, Event):
            return "an event"
        if any(lent is value for _, lent in self.refs.values()):
            return f"the {type(value).__name__} the site lent it for the call"
        if type(value) in (dict, list, tuple, set, frozenset):
            return "data nested more than 50 levels"
        return f"a {type(value).__name__}"

    def _field(self, ref: Any, name: Any, value: Any = None, *, write: bool = False) -> Any:
        obj = self._resolve({"$": "obj", "r": ref})
        kind = type_name(obj)
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise AttributeError(f"{kind} has no plain data field {name!r}")
        if name not in plain_fields(obj) or name in SECRET_FIELDS:
            raise AttributeError(
                f"{kind}.{name} is not a plain data field; an isolated plugin reaches only "
                "those of the host's objects"
            )
        meta = model_meta(obj)
        # Of an object that is not a model instance, the value in its own dictionary: no
        # property or descriptor of its class runs (it may be a trusted plugin's object).
        own = instance_dict(obj) if meta is None else None
        if write:
            pk = getattr(meta, "pk", None)
            if name in PRIVILEGE_FIELDS or name in (getattr(pk, "name", None),
                                                    getattr(pk, "attname", None)):
                # (a new primary key would make the site save over another row)
                raise PermissionError(f"{kind}.{name} is read-only for plugins")
            if not is_data(value):
                raise TypeError(f"{kind}.{name} can only be set to plain data")
            if own is not None and name in own:
                own[name] = value
            else:
                setattr(obj, name, value)
            return None
        current = own[name] if own is not None and name in own else getattr(obj, name)
        if not is_data(current):
            raise AttributeError(f"{kind}.{name} is not plain data")
        return self.wire.encode(current)
