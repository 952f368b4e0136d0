"""The worker process of an isolated plugin: confined first, then it imports and runs the plugin.

Forked by the sandbox's zygote (``sandbox.workers.start_worker``), which imported this module
once (``_warm_up`` builds what plugin code may need while files can still be read) and confined
the fork before calling ``serve``: own session, empty environment, ``/`` as working directory,
``nobody``, no network, rlimits, the worker seccomp profile (no file can be opened, no socket,
no process). The host then sends the plugin's source files; the worker imports them through
the plugin policy (``PluginImporter`` over the sent files) and serves calls until the channel
closes.

The plugin gets a ``RemoteAPI`` whose every call travels to the host (``op: "api"``), where the
plugin's real ``PlatformAPI`` checks it. Objects of the host that are not data arrive as
``HostObject``/``HostFunction`` references: a plain data field of a ``HostObject`` is read or
written through the host, nothing else of it is reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import linecache
import logging
import marshal
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from course_plugins.core.isolation.channel import (
    ONE_WAY,
    REGISTERING,
    Endpoint,
    Same,
    describe_error,
)
from course_plugins.core.isolation.remote_api import Event, HostFunction, HostObject, RemoteAPI
from course_plugins.core.isolation.wire import MARSHAL_VERSION, Wire, WireError, as_plain
from course_plugins.core.plugin_modules import PluginImporter
from course_plugins.core.sandbox import facades
from course_plugins.core.sandbox.policy import PLUGIN_IMPORT_ALLOWLIST

_PRELOAD = ("_strptime", "heapq", "warnings", "copy", "weakref", "decimal", "statistics",
            "unicodedata", "encodings.latin_1", "encodings.ascii", "encodings.utf_16",
            "encodings.utf_32", "encodings.cp1252", "encodings.idna", "encodings.unicode_escape",
            "encodings.raw_unicode_escape", "encodings.utf_8_sig", "encodings.punycode",
            "course_plugins.core.sandbox.audit", "traceback", "concurrent.futures")


class Worker:
    """The worker's state: the plugin's modules, its functions handed to the host, its api."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.wire = Wire(self._export, self._resolve)
        self.endpoint = Endpoint(fd, self.wire, self._serve, unpacks=True)
        self.functions: dict[int, Callable[..., Any]] = {}
        self.handle_of: dict[int, int] = {}
        self.next_handle = 1
        self.root: types.ModuleType | None = None
        self.root_name = ""
        self.api: RemoteAPI | None = None
        self.importer: PluginImporter | None = None

    # -- values -----------------------------------------------------------------------------------

    def _export(self, value: Any) -> dict[str, Any]:
        if isinstance(value, (HostObject, HostFunction)):
            return value._tag()
        if isinstance(value, RemoteAPI):
            return {"$": "api"}
        if isinstance(value, Event):
            return value._tag(self.wire)
        plain = as_plain(value)  # an instance of a subclass of a plain type: as plain data
        if plain is not None:
            return self.wire.encode(plain)
        if callable(value):
            return self._function_tag(value)
        raise WireError(
            f"a {type(value).__name__} cannot cross to the host: return or pass JSON data "
            "(dict, list, str, int, float, bool, None), tuples, bytes, dates and times"
        )

    def _function_tag(self, fn: Callable[..., Any]) -> dict[str, Any]:
        name = getattr(fn, "__name__", None) or type(fn).__name__
        module = getattr(fn, "__module__", None) or ""
        qualname = getattr(fn, "__qualname__", None) or name
        tag = {"$": "wfn", "n": str(name), "q": str(qualname), "m": str(module),
               "a": _is_async(fn), "sig": _shape(fn)}
        owner = sys.modules.get(module) if isinstance(module, str) else None
        if (owner is not None and getattr(owner, name, None) is fn and qualname == name
                and (module == self.root_name or module.startswith(self.root_name + "."))):
            tag["ml"] = module[len(self.root_name) + 1:]  # module-level: found again by name
            return tag
        handle = self.handle_of.get(id(fn))
        if handle is None:
            handle, self.next_handle = self.next_handle, self.next_handle + 1
            self.functions[handle] = fn
            self.handle_of[id(fn)] = handle
        tag["h"] = handle
        return tag

    def _resolve(self, tag: dict[str, Any]) -> Any:
        kind = tag.get("$")
        if kind == "api":
            return self.api
        if kind == "fn":
            return HostFunction(self, tag["r"], str(tag.get("n", "function")))
        if kind == "obj":
            return HostObject(self, tag["r"], str(tag.get("c", "object")))
        if kind == "ev":
            return Event._from_tag(tag)
        if kind == "wfn":
            return self._function(tag)
        raise WireError(f"unexpected tag {kind!r}")

    def _function(self, ref: Any) -> Callable[..., Any]:
        if type(ref) is dict and "h" in ref:
            return self.functions[int(ref["h"])]
        relative, name = (ref.get("ml"), ref.get("n")) if type(ref) is dict else ref
        module = self.root if not relative else sys.modules.get(f"{self.root_name}.{relative}")
        fn = getattr(module, str(name), None)
        if not callable(fn):
            raise AttributeError(f"the plugin has no function {name!r} in module {relative!r}")
        return fn

    # -- the host's requests ----------------------------------------------------------------------

    def host_call(self, request: dict[str, Any]) -> Any:
        """Send a request to the host and return its answer (serving nested calls meanwhile).

        A function handed over for one call only (``api.storage.update_sync(key, fn)``) is
        forgotten afterwards; the host does the same with its proxy. The calls of ``ONE_WAY``
        (log, emit) return ``None`` at once; an error of theirs is written
        to the plugin's log by the host.
        """
        mark = self.next_handle
        try:
            encoded = self.wire.encode(request)
            if request.get("p") in ONE_WAY and request.get("op") == "api" and (
                self.next_handle == mark  # lends no function (to be forgotten after the call)
            ):
                # The plugin does not need the result: no waiting. The host does it before
                # anything the worker sends later (one channel, in order), so before the end
                # of the call.
                self.endpoint.send_one_way(encoded)
                return None
            return self.endpoint.call(encoded)
        finally:
            if self.next_handle > mark and request.get("p") not in REGISTERING:
                for handle in range(mark, self.next_handle):
                    fn = self.functions.pop(handle, None)
                    if fn is not None:
                        self.handle_of.pop(id(fn), None)

    def _serve(self, request: Any) -> Any:
        op = request.get("op")
        if "cfg" in request and self.api is not None:
            self.api.config._snapshot = request["cfg"]
        if op == "call":
            fn = self._function(request["f"])
            if self.importer is not None and fn is getattr(self.root, "activate", None):
                self.importer.bind_advice(self.api)  # the seed's module-level @before_advice
            args = request.get("a", ())
            kept = _snapshots(args)
            result = fn(*args, **request.get("k", {}))
            if inspect.isawaitable(result):
                result = self.run(result)
            for index, snapshot in kept:
                if result is args[index]:
                    if _snapshot(result) == snapshot:
                        return Same(index)  # the host has this value: it gets its own back
                    break
            return self.wire.encode(result)
        if op == "peek":  # a module-level value, for the plugin's own tests
            ref = request["f"]
            relative = ref.get("ml")
            module = self.root if not relative else sys.modules.get(f"{self.root_name}.{relative}")
            return self.wire.encode(getattr(module, str(ref.get("n"))))
        if op == "load":
            return self._load(request)
        if op == "ping":
            return "pong"
        raise ValueError(f"unknown request {op!r}")

    def run(self, awaitable: Any) -> Any:
        """Run a coroutine of the plugin to completion on the worker's loop."""
        if not self.loop.is_running():
            try:
                return self.loop.run_until_complete(awaitable)
            finally:
                self._end_leftovers()
        # Nested inside a coroutine that is waiting for the host: drive this one by hand.
        coro = awaitable.__await__()
        try:
            while True:
                if coro.send(None) is not None:
                    raise RuntimeError(
                        "an async function of an isolated plugin, called while another of its "
                        "coroutines waits for the host, can only await the api"
                    )
        except StopIteration as done:
            return done.value

    def _end_leftovers(self) -> None:
        """Cancel the tasks a call started and did not wait for: a call's work ends with the
        call (its budget covered it), rather than running on in the plugin's next call."""
        left = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
        if not left:
            return
        for task in left:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        if self.api is not None:
            self.api.log.warning(
                "%d asyncio task(s) started by the call were still running when it ended and "
                "were cancelled; await what a handler starts", len(left),
            )

    def _load(self, request: dict[str, Any]) -> Any:
        sources = {str(k): str(v).encode("utf-8") for k, v in request["sources"].items()}
        folder = Path(str(request["folder"]))
        for relative, data in sources.items():
            filename = str(folder / relative)
            lines = data.decode("utf-8").splitlines(keepends=True)
            linecache.cache[filename] = (len(data), None, lines, filename)
        self.root_name = str(request["root"])
        self.api = RemoteAPI(self, request["info"])
        importer = PluginImporter(str(request["plugin"]), folder, self.root_name, sources)
        self.root = importer.load()
        self.importer = importer
        # Every function of the plugin's package as an attribute of one of its modules (those
        # defined there and those imported from a sibling): [holder, attribute, defining module,
        # name, async].
        functions = []
        prefix = self.root_name + "."
        for name, module in list(sys.modules.items()):
            if name != self.root_name and not name.startswith(prefix):
                continue
            for attr, value in list(vars(module).items()):
                home = getattr(value, "__module__", None)
                if inspect.isfunction(value) and isinstance(home, str) and (
                    home == self.root_name or home.startswith(prefix)
                ) and value.__qualname__ == value.__name__:
                    functions.append([name[len(prefix):] if name != self.root_name else "", attr,
                                      home[len(prefix):] if home != self.root_name else "",
                                      value.__name__, _is_async(value), _shape(value)])
        return functions


def _snapshot(value: Any) -> bytes | None:
    """``value`` as bytes, to tell later whether it changed (``None`` when it has something
    that is not plain data, such as a date: then it is always sent back)."""
    try:
        return marshal.dumps(value, MARSHAL_VERSION)
    except ValueError:
        return None


def _snapshots(args: Any) -> list[tuple[int, bytes]]:
    """``(index, snapshot)`` of the positional arguments a call could return as they came (a
    dict or a list: the data a filter lets through)."""
    kept = []
    if type(args) is list:
        for index, arg in enumerate(args):
            if type(arg) is dict or type(arg) is list:
                snapshot = _snapshot(arg)
                if snapshot is not None:
                    kept.append((index, snapshot))
    return kept


def _shape(fn: Any) -> list[list[Any]] | None:
    """The parameters of ``fn`` as ``[name, kind, has default]`` (the host's proxy takes the
    same signature, so hook specs check it as they check a trusted plugin's function)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return [[p.name, int(p.kind), p.default is not p.empty] for p in parameters]


def _is_async(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    return inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))  # noqa: B004


class _ToHost(logging.Handler):
    """Hands the worker's own warnings (the policy's audit events among them) to the host."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(logging.WARNING)
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            kind = getattr(record, "audit_kind", None)
            if kind:
                self.worker.host_call({"op": "audit", "kind": kind, "detail": record.getMessage()})
        except Exception:
            pass  # nothing to report to: the host is gone or refused


def _warm_up() -> None:
    """Build what plugin code may need while files can still be read (this runs in the zygote,
    which imports this module once; every worker is a fork of it)."""
    for name in sorted(PLUGIN_IMPORT_ALLOWLIST & facades.KNOWN_MODULES):
        facades.facade(name)
    for name in _PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    # One plugin-shaped module through the whole pipeline, so every lazy path is taken now.
    warm = PluginImporter("warm-up", Path("/warm-up"), "course_plugins.loaded.warm_up_0", {
        "__init__.py": b"import json\nasync def f():\n    return json.dumps([1])\n",
    })
    coroutine = warm.load().f()
    coroutine.close()
    warm.unload()
    try:
        raise ValueError("warm")
    except ValueError as exc:
        describe_error(exc)


_warm_up()


def serve(fd: int) -> None:
    """Worker entry point (``start_worker("course_plugins.core.isolation.worker:serve")``):
    serve the host's requests on ``fd`` until the channel closes. The zygote has confined this
    process before calling it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(fd, loop)
    logging.getLogger().addHandler(_ToHost(worker))
    endpoint = worker.endpoint
    while True:
        try:
            message = endpoint.receive()
        except ConnectionError:
            return
        if type(message) is dict and "q" in message:
            endpoint.serve(message["q"])
