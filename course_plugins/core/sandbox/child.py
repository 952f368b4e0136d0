"""One sandboxed call, in a process forked from the zygote: confine, run, answer, exit.

Before its job arrives the child leaves the zygote's session, arranges to die with the zygote,
keeps no file descriptor but its channel (fd 3) and /dev/null on 0-2, drops root, runs a warm-up
snippet (see ``_warm_up``), sets no-new-privileges and loads the seccomp filter. When the job
arrives it applies the job's rlimits and wall clock, and only then parses, checks and runs the
code. Its one answer is a JSON frame
on the channel; then it exits without running any cleanup code.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from typing import Any, NoReturn

from course_plugins.core.sandbox import codec, facades, guards, limits
from course_plugins.core.sandbox.errors import SecurityViolation

CHANNEL_FD = 3
MAX_JOB_BYTES = 64 * 1024 * 1024
_MAX_TEXT = 2000

# Built before any code runs: answering "out of memory" must not need memory.
MEMORY_REPLY = b'{"status":"memory"}'


def _error(status: str, type_name: str, message: str, lineno: int | None,
           output: guards.Output | None) -> bytes:
    return json.dumps({
        "status": status,
        "type": type_name[:200],
        "message": message[:_MAX_TEXT],
        "lineno": lineno,
        "stdout": output.text() if output else "",
        "truncated": bool(output and output.truncated),
        "blocked": [reason for reason, _line in guards.blocked[:20]],
    }).encode("utf-8", "surrogatepass")


def _describe(exc: BaseException) -> tuple[str, str, int | None]:
    lineno = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == guards.FILENAME:
            lineno = tb.tb_lineno
        tb = tb.tb_next
    try:
        message = str(exc)
    except Exception:
        message = "<the exception could not be turned into text>"
    return type(exc).__name__, message, lineno


def _execute(job: dict[str, Any]) -> bytes:
    output = guards.Output(int(job["max_print"]))
    allowed = frozenset(job["allowed"])
    try:
        code = guards.prepare(job["source"], allowed)
    except SecurityViolation as exc:
        return _error("rejected", "SecurityViolation", exc.reason, exc.lineno, None)
    except SyntaxError as exc:
        return _error("runtime", "SyntaxError", str(exc.msg), exc.lineno, None)
    inputs = codec.from_tagged(job["inputs"], what="inputs")
    glob = guards.namespace(inputs, allowed, output)
    try:
        exec(code, glob)
    except MemoryError:
        glob.clear()
        return MEMORY_REPLY
    except guards.BlockedOperation:
        pass  # recorded in guards.blocked, reported below
    except BaseException as exc:  # the code's own error, SystemExit included
        if not guards.blocked:
            return _error("runtime", *_describe(exc), output)
    if guards.blocked:
        reason, line = guards.blocked[0]
        return _error("blocked", "SecurityViolation", reason, line, output)
    try:
        payload = codec.to_wire(glob.get("result"), limit=int(job["max_output"]), what="result")
    except codec.CodecError as exc:
        return _error("output", "SandboxOutputError", str(exc), None, output)
    head = json.dumps({"status": "ok", "stdout": output.text(), "truncated": output.truncated})
    return head[:-1].encode("utf-8", "surrogatepass") + b',"result":' + payload + b"}"


def _detach(channel: int, zygote_pid: int) -> None:
    os.setsid()
    limits.die_with_parent(zygote_pid)
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(signum, signal.SIG_DFL)
    if channel != CHANNEL_FD:
        os.dup2(channel, CHANNEL_FD)
    os.closerange(CHANNEL_FD + 1, 1 << 20)
    facades.reseed()  # a fork copied the zygote's generator state: do not repeat its numbers


def _warm_up() -> None:
    """Run one trusted snippet through the whole pipeline while no job is waiting.

    A forked child pays for every page it first writes to (copy-on-write); doing that here,
    before the job arrives, takes it off the caller's critical path.
    """
    allowed = frozenset({"math"})
    output = guards.Output(100)
    code = guards.prepare(_WARM_UP, allowed)
    glob = guards.namespace({"data": [1, "a"]}, allowed, output)
    exec(code, glob)
    codec.to_wire(glob["result"], limit=1000)
    guards.blocked.clear()
    guards.sandbox_classes.clear()


_WARM_UP = "result = [str(x).upper() for x in data]"


def run_child(channel: int, zygote_pid: int, seccomp: bytes | None) -> NoReturn:
    """Serve one job on ``channel`` and exit (the entry point of every forked child)."""
    reply = b'{"status":"internal","message":"no reply"}'
    try:
        _detach(channel, zygote_pid)
        # A guarded standard-library function that refuses (``functools.update_wrapper`` asked
        # for ``__globals__``...) records it like every other guard: catching it does not help.
        # (Only here: a long-lived worker forked from the same zygote keeps the plugin
        # policy's SecurityViolation.)
        facades.set_refusal(guards.block)
        limits.drop_privileges()
        _warm_up()
        baseline = limits.address_space_bytes()
        limits.lock_down()
        if seccomp is not None:
            limits.load_seccomp(seccomp)
        # Confined from here on; the job may take a while to come (this child is a spare).
        raw = codec.read_frame(CHANNEL_FD, limit=MAX_JOB_BYTES)
        if raw is None:  # the host went away without sending a job
            os._exit(0)
        job = json.loads(raw)
        limits.apply_rlimits(
            memory_bytes=baseline + int(job["memory_bytes"]),
            cpu_seconds=int(job["cpu_seconds"]),
            nofile=CHANNEL_FD + 1,
        )
        limits.start_wall_clock(float(job["timeout"]))
        reply = _execute(job)
    except MemoryError:
        reply = MEMORY_REPLY
    except BaseException as exc:  # the sandbox's own failure: say so rather than die silently
        try:
            reply = json.dumps(
                {"status": "internal", "message": f"{type(exc).__name__}: {exc}"[:_MAX_TEXT]}
            ).encode()
        except BaseException:
            reply = b'{"status":"internal","message":"unreportable error"}'
    try:
        codec.write_frame(CHANNEL_FD, reply)
    finally:
        os._exit(0)


def run_worker(channel: int, zygote_pid: int, seccomp: bytes | None,
               entry: Callable[[int], object], *, memory_bytes: int, nofile: int) -> NoReturn:
    """Confine this process as a long-lived worker, run ``entry(CHANNEL_FD)``, then exit.

    The same confinement as a one-shot child (own session, dies with the zygote, fds 0-3 only,
    ``nobody``, no-new-privileges, rlimits, the worker seccomp filter), but no CPU limit and no
    alarm: a worker serves many calls, and the host enforces each call's budget by killing it.
    """
    code = 0
    try:
        _detach(channel, zygote_pid)
        limits.drop_privileges()
        baseline = limits.address_space_bytes()
        limits.lock_down()
        limits.apply_rlimits(memory_bytes=baseline + memory_bytes, cpu_seconds=None,
                             nofile=nofile)
        if seccomp is not None:
            limits.load_seccomp(seccomp)
        entry(CHANNEL_FD)
    except BaseException:
        code = 1
    finally:
        os._exit(code)
