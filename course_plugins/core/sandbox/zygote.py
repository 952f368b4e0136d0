"""The zygote: a single-threaded, pre-imported fork server for sandbox children.

Started by the host with ``subprocess`` as a clean ``python -I -S`` (never a fork of the Django
process), with an empty environment, ``/`` as working directory, /dev/null on 0-2 and one
inherited descriptor: its control socket (``SOCK_SEQPACKET``, one message per request).

It imports the allow-listed modules once, moves itself into a new network namespace, freezes
its heap (``gc.freeze``: children do not dirty shared pages) and keeps a small pool of children
forked in advance, each blocked reading its own channel, so a call costs no fork. Requests:

``{"op": "acquire"}`` -> ``{"pid": n}`` plus the host end of that child's channel (SCM_RIGHTS);
``{"op": "worker", "entry": "module:function", "memory_bytes": n, "nofile": k}`` -> the same for
a long-lived worker that runs ``function(3)`` (see ``workers``);
``{"op": "kill", "pid": n}`` -> SIGKILL to the child's process group (only a live child of ours,
so a recycled pid is never hit); ``{"op": "status", "pid": n}`` -> how it ended, or
``{"running": true}``: the zygote never waits for a child, so a child that will not die cannot
hold up anyone else's request.
End of file on the control socket (the host exited) kills every child and ends the zygote.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import time
from typing import Any

from course_plugins.core.sandbox import child, facades, limits
from course_plugins.core.sandbox.policy import SANDBOX_MODULES

POOL_SIZE = 2
#: Long-lived workers run a function of this package (the host names it; nothing else is run).
WORKER_PACKAGE = "course_plugins."
_KEEP_STATUSES = 512
_MESSAGE_LIMIT = 1 << 20
# Imported lazily by the allowed modules on first use (found by scanning their functions for
# imports: Counter.most_common needs heapq, datetime.strptime _strptime...); a child cannot
# open files, so they are imported here.
_PRELOAD = ("_strptime", "heapq", "warnings", "copy", "weakref", "types", "decimal",
            "statistics", "unicodedata", "encodings.latin_1", "encodings.ascii",
            "encodings.utf_16", "encodings.utf_32", "encodings.cp1252", "encodings.idna",
            "encodings.unicode_escape", "encodings.raw_unicode_escape", "encodings.utf_8_sig",
            "encodings.punycode")


def _send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def _warm_up() -> None:
    """Import and build everything a child may need (children cannot open files)."""
    import importlib

    for name in sorted(SANDBOX_MODULES):
        facades.facade(name)
    for name in _PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    time.localtime()  # reads the time zone file once
    from course_plugins.core.sandbox import guards

    # Compile and run one snippet so that every lazy path of the pipeline is taken here.
    out = guards.Output(100)
    exec(guards.prepare("import json\nresult = json.dumps([1]).upper()", SANDBOX_MODULES),
         guards.namespace({}, SANDBOX_MODULES, out))
    guards.blocked.clear()
    guards.sandbox_classes.clear()


class Zygote:
    """The zygote's request loop and its children."""

    def __init__(self, control: socket.socket, seccomp: bytes | None,
                 worker_seccomp: bytes | None = None) -> None:
        self.control = control
        self.seccomp = seccomp
        self.worker_seccomp = worker_seccomp
        self.pool: collections.deque[tuple[int, socket.socket]] = collections.deque()
        self.live: set[int] = set()
        self.statuses: collections.OrderedDict[int, dict[str, Any]] = collections.OrderedDict()
        self.pid = os.getpid()
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        self.wake_read = wake_read
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def spawn(self) -> None:
        host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            try:
                child.run_child(child_end.fileno(), self.pid, self.seccomp)
            finally:
                os._exit(70)
        child_end.close()
        self.live.add(pid)
        self.pool.append((pid, host_end))

    def spawn_worker(self, entry: str, memory_bytes: int, nofile: int) -> tuple[int, int]:
        """Fork a long-lived worker running ``entry``; return its pid and the host end's fd."""
        module_name, _, function_name = entry.partition(":")
        if not module_name.startswith(WORKER_PACKAGE) or not function_name.isidentifier():
            raise ValueError(f"worker entry {entry!r} is not a function of {WORKER_PACKAGE}*")
        function = getattr(importlib.import_module(module_name), function_name)
        host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the worker, which never returns
            try:
                child.run_worker(child_end.fileno(), self.pid, self.worker_seccomp, function,
                                 memory_bytes=memory_bytes, nofile=nofile)
            finally:
                os._exit(70)
        child_end.close()
        self.live.add(pid)
        return pid, host_end.detach()

    def fill(self) -> None:
        while len(self.pool) < POOL_SIZE:
            self.spawn()

    def reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.live.discard(pid)
            self.statuses[pid] = {
                "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                "maxrss_kb": usage.ru_maxrss,
            }
            while len(self.statuses) > _KEEP_STATUSES:
                self.statuses.popitem(last=False)

    def kill(self, pid: int) -> bool:
        self.reap()
        if pid not in self.live:
            return False
        for target in (-pid, pid):  # its process group (its own pid), then itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
        return True

    def status(self, pid: int) -> dict[str, Any]:
        """How ``pid`` ended, ``{"running": True}`` if it has not yet (never waits)."""
        self.reap()
        if pid in self.live:
            return {"running": True}
        return self.statuses.pop(pid, {"signal": None, "code": None, "unknown": True})

    def handle(self, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "acquire":
            if not self.pool:
                self.spawn()
            pid, host_end = self.pool.popleft()
            _send(self.control, {"pid": pid}, [host_end.fileno()])
            host_end.close()
            self.fill()  # fork the replacement while the host talks to this child
        elif op == "worker":
            pid, fd = self.spawn_worker(str(request["entry"]), int(request["memory_bytes"]),
                                        int(request["nofile"]))
            try:
                _send(self.control, {"pid": pid}, [fd])
            finally:
                os.close(fd)
        elif op == "kill":
            _send(self.control, {"killed": self.kill(int(request["pid"]))})
        elif op == "status":
            _send(self.control, {"status": self.status(int(request["pid"]))})
        elif op == "ping":
            _send(self.control, {"pong": True, "live": len(self.live)})
        else:
            _send(self.control, {"error": f"unknown op {op!r}"})

    def serve(self) -> None:
        self.fill()
        poller = select.poll()
        poller.register(self.control, select.POLLIN)
        poller.register(self.wake_read, select.POLLIN)
        while True:
            for fd, _event in poller.poll():
                if fd == self.wake_read:
                    try:
                        while os.read(self.wake_read, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self.reap()
                    continue
                data = self.control.recv(_MESSAGE_LIMIT)
                if not data:
                    return self.shutdown()
                try:
                    self.handle(json.loads(data))
                except (OSError, ValueError, KeyError, TypeError, ImportError,
                        AttributeError) as exc:
                    _send(self.control, {"error": f"{type(exc).__name__}: {exc}"})

    def shutdown(self) -> None:
        for pid in list(self.live):
            self.kill(pid)
        os._exit(0)


def main(control_fd: int) -> None:
    """Zygote entry point: ``python -I -S -c <bootstrap> ROOT FD``."""
    control = socket.socket(fileno=control_fd)
    init = json.loads(control.recv(_MESSAGE_LIMIT))
    layers: dict[str, Any] = {"pid": os.getpid(), "python": sys.version.split()[0]}
    try:
        _warm_up()
        netns, why = limits.unshare_network()
        layers["netns"] = netns
        if why:
            layers["netns_reason"] = why
        seccomp = bytes.fromhex(init["seccomp"]) if init.get("seccomp") else None
        worker_seccomp = (bytes.fromhex(init["worker_seccomp"]) if init.get("worker_seccomp")
                          else None)
        layers["seccomp"] = seccomp is not None
        layers["setuid_nobody"] = os.geteuid() == 0
        gc.collect()
        gc.freeze()
    except Exception as exc:
        _send(control, {"op": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(1) from exc
    _send(control, {"op": "ready", "layers": layers})
    Zygote(control, seccomp, worker_seccomp).serve()
