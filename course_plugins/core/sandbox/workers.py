"""Long-lived confined workers from the sandbox's zygote (for isolated plugins).

``start_worker("course_plugins.x.y:serve")`` asks the zygote to import ``course_plugins.x.y``
(once, in the zygote), fork, confine the child as it confines an ``exec_code`` child — own
session and process group, killed with the zygote, file descriptors 0-3 only, empty environment,
``/`` as working directory, ``nobody`` when the host is root, no-new-privileges, non-dumpable,
the zygote's network namespace (no network), rlimits (address space, no file written, no
process, a few descriptors) and the seccomp filter of a worker (``limits.WORKER_SYSCALLS``: no
``open``, ``socket``, ``connect``, ``fork`` or ``exec``) — and call ``serve(3)``; fd 3 is its end of
a stream socket whose other end is ``Worker.channel``. There is no CPU limit and no alarm: a
worker serves many calls, and the host enforces a call's budget by killing the worker
(``Worker.kill``). The worker exits when ``serve`` returns or raises.

A worker cannot open files: whatever it needs (a plugin's sources) comes over its channel.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from course_plugins.core.sandbox.errors import SandboxError
from course_plugins.core.sandbox.executor import _Zygote, _zygote

DEFAULT_MEMORY_MB = 256
DEFAULT_NOFILE = 16


class Worker:
    """The host's handle on one confined worker process."""

    def __init__(self, zygote: _Zygote, pid: int, channel: socket.socket) -> None:
        self._zygote = zygote
        self.pid = pid
        self.channel = channel
        self._status: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<Worker pid={self.pid} {'running' if self.alive() else 'ended'}>"

    def alive(self) -> bool:
        """Whether the worker process is still running (never waits)."""
        if self._status is not None:
            return False
        return self._poll() is None

    def _poll(self) -> dict[str, Any] | None:
        try:
            reply = self._zygote.call({"op": "status", "pid": self.pid})[0].get("status", {})
        except SandboxError:
            reply = {"unknown": True}
        if reply.get("running"):
            return None
        self._status = dict(reply)
        return self._status

    def kill(self) -> None:
        """SIGKILL the worker's process group (a no-op once it has ended)."""
        if self._status is None:
            self._zygote.kill(self.pid)

    def wait(self, timeout: float = 1.0) -> dict[str, Any]:
        """Wait up to ``timeout`` seconds for the worker to end (killing it after that); return
        how it ended: ``{"signal": n | None, "code": n | None, "maxrss_kb": n}`` (``{}`` if
        that could not be learnt)."""
        if self._status is None:
            self._status = self._zygote.status(self.pid, wait=timeout)
        return self._status

    def close(self) -> dict[str, Any]:
        """Kill the worker, reap it and close the channel; return how it ended."""
        self.kill()
        status = self.wait(0.0)
        self.channel.close()
        return status

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_worker(
    entry: str,
    *,
    memory_mb: float = DEFAULT_MEMORY_MB,
    nofile: int = DEFAULT_NOFILE,
    python: str | None = None,
) -> Worker:
    """Start a confined worker running ``entry`` (``"course_plugins.module:function"``).

    ``memory_mb`` is the memory it may use on top of the interpreter's own (``RLIMIT_AS``);
    ``nofile`` the file descriptor limit (an asyncio loop needs about 7); ``python`` the
    interpreter, as ``SandboxConfig.python``. Raises ``SandboxError`` if the zygote refuses
    (an entry outside ``course_plugins``, an import error) or fails.
    """
    if not isinstance(entry, str) or ":" not in entry:
        raise ValueError(f"worker entry must be 'module:function', not {entry!r}")
    zygote = _zygote(python)
    reply, fds = zygote.call({"op": "worker", "entry": entry,
                              "memory_bytes": int(memory_mb * 1024 * 1024),
                              "nofile": int(nofile)})
    if "pid" not in reply or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise SandboxError(f"the sandbox process refused a worker: {reply.get('error')}")
    return Worker(zygote, int(reply["pid"]), socket.socket(fileno=fds[0]))


def probe(fd: int) -> None:
    """A diagnostic worker entry (``workers:probe``): answers each framed JSON request.

    ``{"op": "echo", "value": v}`` -> ``{"value": v}``; ``{"op": "probe"}`` -> what the worker
    can and cannot do from the inside (uid, an asyncio loop, and the errors of an ``open``, a
    ``socket`` and a ``fork``); ``{"op": "refusal"}`` -> the error a guarded library function
    raises here; ``{"op": "exit"}`` ends it. Used by the tests and by
    ``start_worker`` callers to check the confinement of this machine.
    """
    import asyncio
    import json

    from course_plugins.core.sandbox import codec

    def attempt(action: Any) -> str:
        try:
            action()
        except OSError as exc:
            return f"{type(exc).__name__}: {exc.strerror}"
        return "allowed"

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)

    while True:
        raw = codec.read_frame(fd, limit=1 << 20)
        if raw is None:
            return
        request = json.loads(raw)
        if request.get("op") == "exit":
            return
        if request.get("op") == "probe":

            async def tick() -> str:
                await asyncio.sleep(0.001)
                return "ok"

            answer: dict[str, Any] = {
                "uid": os.getuid(),
                "asyncio": asyncio.run(tick()),
                "open": attempt(lambda: open("/etc/hostname", "rb").close()),
                "socket": attempt(lambda: socket.socket(socket.AF_INET).close()),
                "fork": attempt(fork),
            }
        elif request.get("op") == "refusal":  # what a guarded library function raises here
            from course_plugins.core.sandbox import facades

            try:
                facades.facade("functools").update_wrapper(probe, json.dumps,
                                                           assigned=("__globals__",))
            except Exception as exc:
                answer = {"refusal": type(exc).__name__}
        else:
            answer = {"value": request.get("value")}
        codec.write_frame(fd, json.dumps(answer).encode())
