"""``SandboxedExecutor``: run untrusted code in a confined child process of the zygote.

Each ``exec_code`` call takes a fresh child forked in advance by the zygote (so a call costs no
fork and no interpreter start), sends it the code and the inputs as JSON, and waits for one
JSON answer under a wall-clock deadline; past the deadline the child's process group is
killed. The zygote is started lazily, once per host process (a forked host starts its own),
restarted if it dies, shared by every executor and thread, and stopped at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import functools
import inspect
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from course_plugins.core.sandbox import audit as _audit
from course_plugins.core.sandbox import codec
from course_plugins.core.sandbox.config import SandboxConfig
from course_plugins.core.sandbox.errors import (
    SandboxBusy,
    SandboxError,
    SandboxMemoryError,
    SandboxOutputError,
    SandboxRuntimeError,
    SandboxTimeout,
    SecurityViolation,
)
from course_plugins.core.sandbox.limits import seccomp_program

logger = logging.getLogger("course_plugins.security")

F = TypeVar("F", bound=Callable[..., Any])

_ROOT = str(Path(__file__).resolve().parents[3])
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from course_plugins.core.sandbox.zygote import main; main(int(sys.argv[2]))"
)
_START_TIMEOUT = 30.0
_KILL_GRACE = 0.25  # past the child's own alarm before the host kills it
_MESSAGE_LIMIT = 1 << 20
_REAP_GRACE = 2.0  # after a SIGKILL, how long to wait for the exit status before giving up


def _default_slots() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(2, cores)


#: Calls that run at once per host process: more children than cores only share the cores,
#: and the zygote forking and the children confining themselves fall behind (throughput then
#: collapses instead of levelling off). Further calls wait their turn, first come first served.
MAX_RUNNING = _default_slots()
#: Calls that may wait for a turn; one more is refused at once with ``SandboxBusy``.
MAX_WAITING = 256


class _Gate:
    """A bounded FIFO queue in front of the fork server: ``slots`` calls run, the others wait."""

    def __init__(self, slots: int, max_waiting: int) -> None:
        self.slots = slots
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._free = slots
        self._waiting: collections.deque[threading.Lock] = collections.deque()

    def enter(self, timeout: float) -> None:
        """Take a slot, waiting up to ``timeout`` seconds; raises ``SandboxBusy``."""
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return
            if len(self._waiting) >= self.max_waiting:
                raise SandboxBusy(
                    f"the sandbox is busy: {len(self._waiting)} calls are already waiting"
                )
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        if turn.acquire(timeout=timeout):
            return  # a leaving call handed its slot over
        with self._lock:
            try:
                self._waiting.remove(turn)
            except ValueError:
                return  # handed over just as the wait ran out: the slot is ours
        raise SandboxBusy(f"the sandbox stayed busy for {timeout:g} s; the code did not run")

    def leave(self) -> None:
        """Give the slot to the first waiting call, or back."""
        with self._lock:
            if self._waiting:
                self._waiting.popleft().release()
            else:
                self._free += 1


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run produced: the value of ``result``, printed text, wall time."""

    result: Any
    stdout: str
    stdout_truncated: bool
    duration: float


class _Zygote:
    """The host's handle on one zygote process (one per interpreter path)."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.control: socket.socket | None = None
        self.layers: dict[str, Any] = {}
        # A child taken in advance, so that a call does not wait for the zygote's round trip.
        self.spares: list[tuple[int, socket.socket]] = []
        self.gate = _Gate(MAX_RUNNING, MAX_WAITING)
        self.pending = 0  # acquire requests sent ahead whose answers are not read yet

    # -- life cycle ------------------------------------------------------------------------------

    def _start(self) -> None:
        program, why_not = seccomp_program()
        worker_program, _ = seccomp_program(worker=True)
        host_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(
                [self.python, "-I", "-S", "-c", _BOOT, _ROOT, str(zygote_end.fileno())],
                env={},
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(zygote_end.fileno(),),
                start_new_session=True,
            )
        except OSError as exc:
            host_end.close()
            raise SandboxError(
                f"could not start the sandbox process with {self.python!r}: {exc}; set "
                "SandboxConfig(python=...) to a working Python interpreter"
            ) from exc
        finally:
            zygote_end.close()
        host_end.settimeout(_START_TIMEOUT)
        try:
            host_end.send(json.dumps({
                "seccomp": program.hex() if program else None,
                "worker_seccomp": worker_program.hex() if worker_program else None,
            }).encode())
            ready = json.loads(host_end.recv(_MESSAGE_LIMIT) or b"{}")
        except (OSError, ValueError) as exc:
            ready = {"op": "failed", "error": f"{type(exc).__name__}: {exc}"}
        if ready.get("op") != "ready":
            host_end.close()
            proc.kill()
            proc.wait()
            raise SandboxError(f"the sandbox process failed to start: {ready.get('error')}")
        host_end.settimeout(None)
        layers = dict(ready["layers"])
        layers.update(process=True, rlimits=True, no_new_privs=True, language=True)
        if why_not:
            layers["seccomp_reason"] = why_not
        first = not self.layers
        self.proc, self.control, self.layers = proc, host_end, layers
        if first:
            # Debug only: a process that runs the sandbox for a moment (a management command)
            # should not print it every time; an application shows describe_layers() where it
            # helps (the Django site: at a server's start, `plugins list`, `check --deploy`).
            logger.debug("sandbox layers active: %s", describe_layers(layers))

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.control is not None

    def _send(self, message: dict[str, Any]) -> None:
        assert self.control is not None
        self.control.send(json.dumps(message).encode())

    def _recv(self) -> tuple[dict[str, Any], list[int]]:
        assert self.control is not None
        data, fds, _flags, _addr = socket.recv_fds(self.control, _MESSAGE_LIMIT, 1)
        if not data:
            raise ConnectionError("the sandbox process closed its control socket")
        return json.loads(data), fds

    def _drain(self) -> None:
        """Read the answers to acquire requests sent ahead (see ``replenish``)."""
        while self.pending:
            reply, fds = self._recv()
            self.pending -= 1
            if "pid" in reply and len(fds) == 1:
                self.spares.append((int(reply["pid"]), socket.socket(fileno=fds[0])))
            else:
                for fd in fds:
                    os.close(fd)

    def call(self, message: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """Send one request (starting or restarting the zygote as needed) and return the reply."""
        with self.lock:
            for attempt in (1, 2):
                if not self._alive():
                    self._discard()
                    self._start()
                try:
                    self._drain()
                    self._send(message)
                    return self._recv()
                except (OSError, ValueError) as exc:
                    self._discard()
                    if attempt == 2 or message.get("op") not in ("acquire", "ping"):
                        raise SandboxError(f"the sandbox process failed: {exc}") from exc
                    logger.warning("sandbox zygote lost (%s); restarting it", exc)
        raise AssertionError("unreachable")

    def acquire(self) -> tuple[int, socket.socket]:
        """Take a fresh child from the zygote; returns its pid and the host end of its channel."""
        reply, fds = self.call({"op": "acquire"})
        if "pid" not in reply or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise SandboxError(f"the sandbox process refused a child: {reply.get('error')}")
        return int(reply["pid"]), socket.socket(fileno=fds[0])

    def take(self) -> tuple[int, socket.socket]:
        """A fresh child: a spare taken in advance if there is one, else a new one."""
        with self.lock:
            if self._alive():
                try:
                    self._drain()
                except (OSError, ValueError):
                    self._discard()
                if self.spares:
                    return self.spares.pop()
        return self.acquire()

    def replenish(self) -> None:
        """Ask for the next call's child now, without waiting for the answer.

        The answer is read by the next request; meanwhile this call's child runs.
        """
        if not self.lock.acquire(blocking=False):
            return  # another thread is talking to the zygote: it will do
        try:
            if self._alive() and not self.spares and not self.pending:
                try:
                    self._send({"op": "acquire"})
                    self.pending += 1
                except OSError:
                    self._discard()
        finally:
            self.lock.release()

    def kill(self, pid: int) -> None:
        with contextlib.suppress(SandboxError):  # a dead zygote's children died with it
            self.call({"op": "kill", "pid": pid})

    def status(self, pid: int, wait: float = 1.0) -> dict[str, Any]:
        """How child ``pid`` ended (``signal``, ``code``, ``maxrss_kb``); ``{}`` if unknown.

        A child still running after ``wait`` seconds is killed first. The zygote answers at
        once either way, and the lock is not held between the polls, so a child that will not
        end holds up only this caller, and only for ``wait``.
        """
        deadline = time.monotonic() + wait
        give_up = deadline + _REAP_GRACE
        pause = 0.0002
        killed = False
        while True:
            try:
                reply = self.call({"op": "status", "pid": pid})[0].get("status", {})
            except SandboxError:
                return {}
            if not reply.get("running"):
                return dict(reply)
            now = time.monotonic()
            if now >= give_up:
                return {}
            if not killed and now >= deadline:
                self.kill(pid)
                killed = True
            time.sleep(pause)
            pause = min(pause * 2, 0.01)

    def _discard(self) -> None:
        for _pid, channel in self.spares:
            channel.close()
        self.spares.clear()
        self.pending = 0
        if self.control is not None:
            self.control.close()
        self.control = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """Close the control socket (the zygote then kills its children and exits) and reap it."""
        with self.lock:
            for _pid, channel in self.spares:
                channel.close()
            self.spares.clear()
            if self.control is not None:
                self.control.close()
                self.control = None
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                self.proc = None

    def pid(self) -> int | None:
        return self.proc.pid if self._alive() and self.proc is not None else None


_zygotes: dict[str, _Zygote] = {}
_zygotes_lock = threading.Lock()
_inherited: list[Any] = []  # a forked host's copies of its parent's handles (never used again)


def _zygote(python: str | None) -> _Zygote:
    python = python or sys.executable
    with _zygotes_lock:
        found = _zygotes.get(python)
        if found is None:
            found = _zygotes[python] = _Zygote(python)
        return found


def _stop_all() -> None:
    with _zygotes_lock:
        zygotes = list(_zygotes.values())
    for zygote in zygotes:
        zygote.stop()


def _after_fork_in_child() -> None:
    # The parent's zygote belongs to the parent: forget it (without killing it) and start our
    # own on first use. Our copies of its control sockets are closed so it still sees EOF when
    # the parent exits.
    global _zygotes, _zygotes_lock
    for zygote in _zygotes.values():
        if zygote.control is not None:
            zygote.control.close()
        _inherited.append(zygote.proc)
    _zygotes = {}
    _zygotes_lock = threading.Lock()


atexit.register(_stop_all)
os.register_at_fork(after_in_child=_after_fork_in_child)


def layers(python: str | None = None) -> dict[str, Any]:
    """Which confinement layers are active on this machine (starts the zygote if needed).

    Keys: ``process``, ``rlimits``, ``no_new_privs``, ``language`` (always true), ``seccomp``,
    ``netns``, ``setuid_nobody`` (true when active), ``*_reason`` (why a layer is off), ``pid``.
    """
    zygote = _zygote(python)
    zygote.call({"op": "ping"})
    return dict(zygote.layers)


LAYER_NAMES = (
    "process", "rlimits", "no_new_privs", "seccomp", "netns", "setuid_nobody", "language"
)
"""Every layer ``layers()`` reports, in the order they are described."""
WEAKENING_LAYERS = ("seccomp", "netns")
"""The layers whose absence weakens the sandbox's kernel barrier (``setuid_nobody`` needs a host
running as root, which a site usually is not)."""


def missing_layers(found: Mapping[str, Any]) -> dict[str, str]:
    """The kernel layers ``found`` (a ``layers()`` answer) lacks, each with why it is off."""
    missing = {}
    for name in ("seccomp", "netns", "setuid_nobody"):
        if not found.get(name):
            reason = found.get(f"{name}_reason")
            missing[name] = str(reason) if reason else (
                "the host does not run as root" if name == "setuid_nobody" else "not available"
            )
    return missing


def describe_layers(found: Mapping[str, Any]) -> str:
    """One line naming the active layers of ``found`` (a ``layers()`` answer), then those not
    available with why: ``"process, rlimits, ...; not available: seccomp (...)"``."""
    active = ", ".join(name for name in LAYER_NAMES if found.get(name))
    missing = missing_layers(found)
    if not missing:
        return active
    return active + "; not available: " + ", ".join(
        f"{name} ({reason})" for name, reason in missing.items()
    )


def zygote_pid(python: str | None = None) -> int | None:
    """The pid of the running zygote for ``python`` (``None`` if not started)."""
    with _zygotes_lock:
        found = _zygotes.get(python or sys.executable)
    return found.pid() if found is not None else None


def _check_inputs(inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    if inputs is None:
        return {}
    if not isinstance(inputs, Mapping):
        raise TypeError(
            f"inputs must be a mapping of names to plain data, not {type(inputs).__name__}"
        )
    for name in inputs:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
            raise ValueError(
                f"input name {name!r} is not allowed: use identifiers not starting with '__'"
            )
    return dict(inputs)


class SandboxedExecutor:
    """Runs untrusted code in a separate, confined process (see docs/security.md).

    ``owner`` (a plugin id) is attached to the audit events of this executor.
    """

    def __init__(self, config: SandboxConfig | None = None, *, owner: str | None = None) -> None:
        self.config = config or SandboxConfig()
        self.owner = owner
        config = self.config
        # The part of every job that only depends on the (frozen) config, encoded once.
        self._job_settings = json.dumps({
            "allowed": sorted(config.allowed_modules),
            "timeout": config.timeout_seconds,
            "cpu_seconds": config.cpu_seconds,
            "memory_bytes": int(config.max_memory_mb * 1024 * 1024),
            "max_output": config.max_output_bytes,
            "max_print": config.max_print_bytes,
        })[1:].encode()

    def layers(self) -> dict[str, Any]:
        """The confinement layers active for this executor (see ``layers()``)."""
        return layers(self.config.python)

    def _audit(self, kind: str, detail: str) -> None:
        if self.config.enable_audit:
            _audit.audit(kind, detail, plugin=self.owner)

    def exec_code(self, source: str, inputs: Mapping[str, Any] | None = None) -> Any:
        """Run ``source`` with ``inputs`` as globals; return the value it bound to ``result``.

        Returns ``None`` if the code bound no ``result``. Raises ``SecurityViolation``,
        ``SandboxTimeout``, ``SandboxMemoryError``, ``SandboxRuntimeError`` (the code raised),
        ``SandboxOutputError`` (result too large or not plain data), ``SandboxBusy`` (too many
        calls waiting: ``MAX_RUNNING`` run at once, the others queue for up to the timeout),
        ``SandboxError`` (the sandbox process failed), and ``TypeError``/``ValueError`` for
        unusable inputs.
        """
        return self.run(source, inputs).result

    async def aexec_code(self, source: str, inputs: Mapping[str, Any] | None = None) -> Any:
        """``exec_code`` for async callers (runs in a worker thread; same errors)."""
        return await asyncio.to_thread(self.exec_code, source, inputs)

    def run(self, source: str, inputs: Mapping[str, Any] | None = None) -> SandboxResult:
        """Like ``exec_code``, but return a ``SandboxResult`` (result, printed text, duration)."""
        config = self.config
        if not isinstance(source, str):
            raise TypeError(f"source must be str, not {type(source).__name__}")
        size = len(source.encode("utf-8", "surrogatepass"))
        if size > config.max_source_bytes:
            self._audit(_audit.REJECTED, f"source of {size} bytes over max_source_bytes")
            raise SecurityViolation(
                f"the code is {size} bytes, over the limit of {config.max_source_bytes} "
                "(max_source_bytes): send less code",
                "<sandbox>",
            )
        try:
            wire_inputs = codec.to_wire(
                _check_inputs(inputs), limit=config.max_input_bytes, what="inputs"
            )
        except codec.CodecError as exc:
            raise ValueError(f"{exc} (inputs cross into the sandbox as JSON)") from None
        # Spliced rather than re-encoded: the inputs are already JSON.
        job = b'{"source":%s,"inputs":%s,%s' % (
            json.dumps(source).encode(), wire_inputs, self._job_settings
        )
        zygote = _zygote(config.python)
        zygote.gate.enter(config.timeout_seconds)
        try:
            return self._run(zygote, job)
        finally:
            zygote.gate.leave()

    def _run(self, zygote: _Zygote, job: bytes) -> SandboxResult:
        config = self.config
        started = time.monotonic()
        for attempt in (1, 2):
            pid, channel = zygote.take()
            try:
                channel.settimeout(config.timeout_seconds + _KILL_GRACE)
                channel.sendall(codec.frame(job))
            except (BrokenPipeError, ConnectionResetError):
                channel.close()  # a spare that died with an old zygote: nothing ran
                if attempt == 2:
                    raise SandboxError(
                        "the sandbox process is failing: no child took the job"
                    ) from None
                continue
            except TimeoutError:
                channel.close()
                zygote.kill(pid)
                raise SandboxError("the sandbox child did not accept the job in time") from None
            break
        try:
            zygote.replenish()
            reply = self._exchange(zygote, pid, channel, started)
        finally:
            channel.close()
        return self._result(reply, started)

    def _exchange(self, zygote: _Zygote, pid: int, channel: socket.socket,
                  started: float) -> dict[str, Any]:
        config = self.config
        deadline = started + config.timeout_seconds + _KILL_GRACE
        limit = config.max_output_bytes + 8 * config.max_print_bytes + 65536
        try:
            header = _recv_exact(channel, codec.HEADER_SIZE, deadline)
            if header is not None:
                size = codec.header_size(header)
                if size > limit:
                    zygote.kill(pid)
                    self._audit(_audit.BLOCKED, f"sandbox answer of {size} bytes refused")
                    raise SandboxOutputError(
                        f"the sandbox answer is {size} bytes, over the limit of {limit}"
                    )
                body = _recv_exact(channel, size, deadline)
                if body is not None:
                    try:
                        reply = json.loads(body)
                    except (ValueError, RecursionError):
                        reply = None
                    # A JSON object (string keys only); never dict() over a list of pairs,
                    # whose keys could be integers made to hash alike.
                    if type(reply) is not dict:
                        zygote.kill(pid)
                        raise SandboxError("the sandbox process sent a malformed answer")
                    return reply
        except TimeoutError:
            zygote.kill(pid)
            zygote.status(pid, wait=1.0)
            self._audit(_audit.TIMEOUT, f"wall clock of {config.timeout_seconds:g} s ran out")
            raise SandboxTimeout(seconds=config.timeout_seconds, kind="wall-clock") from None
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child died: its exit status tells why
        return self._died(zygote, pid, deadline)

    def _died(self, zygote: _Zygote, pid: int, deadline: float) -> dict[str, Any]:
        config = self.config
        # It closed its channel: it is ending. One that spins instead is killed at the call's
        # deadline (at most a second from now), not waited for.
        status = zygote.status(pid, wait=min(1.0, max(0.05, deadline - time.monotonic())))
        signum = status.get("signal")
        # (Our own kill at the deadline is the TimeoutError path; a SIGKILL seen here came from
        # elsewhere: the kernel's OOM killer, or the zygote dying under the child.)
        if signum == signal.SIGALRM:
            self._audit(_audit.TIMEOUT, f"wall clock of {config.timeout_seconds:g} s ran out")
            raise SandboxTimeout(seconds=config.timeout_seconds, kind="wall-clock")
        if signum == signal.SIGXCPU:
            self._audit(_audit.TIMEOUT, f"CPU budget of {config.cpu_seconds} s ran out")
            raise SandboxTimeout(seconds=config.cpu_seconds, kind="CPU")
        how = (f"signal {signal.Signals(signum).name}" if signum else
               f"exit code {status.get('code')}")
        rss = status.get("maxrss_kb") or 0
        if signum in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGKILL) and (
            rss * 1024 >= config.max_memory_mb * 1024 * 1024 * 0.9
        ):
            self._audit(_audit.MEMORY, f"process died ({how}) at the memory limit")
            raise SandboxMemoryError(limit_mb=config.max_memory_mb)
        self._audit(_audit.ABNORMAL_EXIT, f"sandbox process ended without an answer ({how})")
        raise SandboxError(f"the sandbox process ended without an answer ({how})")

    def _result(self, reply: dict[str, Any], started: float) -> SandboxResult:
        config = self.config
        status = reply.get("status")
        message = str(reply.get("message", ""))[:4000]
        lineno = reply.get("lineno") if isinstance(reply.get("lineno"), int) else None
        if status == "ok":
            # Decoded as hostile: bounded in depth, in keys whose hashes could be made to
            # collide, and in time (the call's own deadline, whatever the child sent).
            try:
                value = codec.from_tagged(reply.get("result"), what="result",
                                          deadline=started + config.timeout_seconds + _KILL_GRACE)
            except codec.CodecError as exc:
                self._audit(_audit.BLOCKED, f"sandbox answer refused: {exc}")
                raise SandboxOutputError(f"the sandbox answer was refused: {exc}") from None
            return SandboxResult(value, str(reply.get("stdout", "")),
                                 bool(reply.get("truncated")), time.monotonic() - started)
        if status == "rejected":
            self._audit(_audit.REJECTED, f"line {lineno}: {message}")
            raise SecurityViolation(message, "<sandbox>", lineno)
        if status == "blocked":
            self._audit(_audit.BLOCKED, message)
            raise SecurityViolation(f"blocked at run time: {message}", "<sandbox>", lineno)
        if status == "memory":
            self._audit(_audit.MEMORY, f"memory limit of {config.max_memory_mb:g} MB reached")
            raise SandboxMemoryError(limit_mb=config.max_memory_mb)
        if status == "runtime":
            raise SandboxRuntimeError(str(reply.get("type", "Exception"))[:200], message,
                                      lineno=lineno)
        if status == "output":
            raise SandboxOutputError(message)
        self._audit(_audit.ABNORMAL_EXIT, f"sandbox failure: {message}")
        raise SandboxError(f"the sandbox failed: {message or status}")

    def safe_call(self, timeout: float | None = None) -> Callable[[F], F]:
        """Decorator: run the function in-process under a time limit, raising ``SandboxTimeout``.

        ``timeout`` defaults to the config's ``timeout_seconds``. A pure-Python loop is
        interrupted (``core.watchdog``); a long C call finishes first, and only the process
        sandbox (``exec_code``) gives hard guarantees. ``async def`` functions get
        ``asyncio.timeout``, which interrupts them at their next ``await``.
        """
        seconds = self.config.timeout_seconds if timeout is None else timeout
        if not seconds or seconds <= 0 or math.isinf(seconds):
            raise ValueError(
                f"safe_call timeout must be a positive number of seconds, not {timeout!r}"
            )

        def decorate(fn: F) -> F:
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    try:
                        async with asyncio.timeout(seconds) as scope:
                            return await fn(*args, **kwargs)
                    except TimeoutError:
                        if not scope.expired():
                            raise
                        self._audit(_audit.TIMEOUT, f"{fn.__qualname__} ran over {seconds:g} s")
                        raise SandboxTimeout(seconds=seconds, kind="in-process") from None

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                from course_plugins.core.watchdog import TimeBudgetExceeded, time_limit

                # Interrupted with the watchdog's BaseException, so that the function's own
                # ``except Exception`` cannot swallow it; the caller gets a SandboxTimeout.
                limit = time_limit(seconds)
                try:
                    with limit:
                        return fn(*args, **kwargs)
                except TimeBudgetExceeded as exc:
                    if getattr(exc, "time_limit", None) is not limit:
                        raise  # an outer limit's: let it reach its owner
                    self._audit(_audit.TIMEOUT, f"{fn.__qualname__} ran over {seconds:g} s")
                    raise SandboxTimeout(seconds=seconds, kind="in-process") from None

            return wrapper  # type: ignore[return-value]

        return decorate


def _recv_exact(channel: socket.socket, size: int, deadline: float) -> bytes | None:
    chunks = []
    while size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        channel.settimeout(remaining)
        chunk = channel.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
