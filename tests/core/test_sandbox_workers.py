"""Long-lived confined workers from the zygote, and the zygote never waiting on a child."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from course_plugins.core.sandbox import (
    SandboxConfig,
    SandboxedExecutor,
    SandboxError,
    SecurityViolation,
    codec,
)
from course_plugins.core.sandbox import executor as executor_module
from course_plugins.core.sandbox.workers import Worker, start_worker

PROBE = "course_plugins.core.sandbox.workers:probe"


def _ask(worker: Worker, request: dict[str, object]) -> dict[str, object]:
    codec.write_frame(worker.channel.fileno(), json.dumps(request).encode())
    raw = codec.read_frame(worker.channel.fileno(), limit=1 << 20)
    assert raw is not None
    return dict(json.loads(raw))


@pytest.fixture
def worker() -> Iterator[Worker]:
    with start_worker(PROBE, memory_mb=64) as handle:
        yield handle


def test_a_worker_serves_many_requests_on_its_channel(worker: Worker) -> None:
    for value in ([1, "a"], {"k": None}, "x" * 10_000):
        assert _ask(worker, {"op": "echo", "value": value}) == {"value": value}
    assert worker.alive()


def test_a_worker_is_confined_like_an_exec_code_child(worker: Worker) -> None:
    answer = _ask(worker, {"op": "probe"})
    layers = executor_module.layers()
    assert answer["asyncio"] == "ok"  # an event loop works without threads or files
    if layers.get("seccomp"):
        for attempt in ("open", "socket", "fork"):
            assert answer[attempt] == "PermissionError: Operation not permitted", attempt
    else:
        assert answer["open"] != "allowed" or answer["uid"] != 0
    if layers.get("setuid_nobody"):
        assert answer["uid"] == 65534
    status = Path(f"/proc/{worker.pid}/status").read_text()
    assert "NoNewPrivs:\t1" in status
    if layers.get("seccomp"):
        assert "Seccomp:\t2" in status
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{worker.pid}/fd")) == [0, 1, 2, 3]
    assert os.getpgid(worker.pid) == worker.pid  # its own process group
    assert Path(f"/proc/{worker.pid}/ns/net").resolve() != Path("/proc/self/ns/net").resolve()


def test_a_killed_worker_reports_how_it_ended(worker: Worker) -> None:
    worker.kill()
    assert worker.wait(5.0).get("signal") == signal.SIGKILL
    assert not worker.alive()


def test_a_worker_that_returns_exits_cleanly(worker: Worker) -> None:
    codec.write_frame(worker.channel.fileno(), b'{"op": "exit"}')
    assert worker.wait(5.0).get("code") == 0


@pytest.mark.parametrize("entry", ["os:system", "course_plugins.core.sandbox.nothing:x",
                                   "course_plugins.core.sandbox.workers:not-a-name", "probe"])
def test_only_functions_of_the_package_can_be_run(entry: str) -> None:
    with pytest.raises((SandboxError, ValueError)):
        start_worker(entry)


def test_waiting_on_a_child_never_holds_up_other_callers() -> None:
    """A child that will not end (here: one that never gets a job) is waited on without the
    zygote lock: other calls go through meanwhile, and it is killed at the end of the wait."""
    sandbox = SandboxedExecutor(SandboxConfig(timeout_seconds=5.0))
    zygote = executor_module._zygote(None)
    pid, channel = zygote.acquire()
    ended: list[dict[str, object]] = []
    waiter = threading.Thread(target=lambda: ended.append(zygote.status(pid, wait=60.0)))
    waiter.start()
    try:
        for n in range(5):
            assert sandbox.exec_code("result = n * 2", {"n": n}) == n * 2
        assert waiter.is_alive()  # still waiting for the idle child, and nobody else was
    finally:
        zygote.kill(pid)
        waiter.join()
        channel.close()
    assert ended[0].get("signal") == signal.SIGKILL


def test_a_worker_refuses_with_the_plugin_policys_error_not_the_sandboxs() -> None:
    """exec_code children record refusals of guarded library functions as blocked operations;
    a worker forked from the same zygote must keep the plugin policy's SecurityViolation."""
    sandbox = SandboxedExecutor(SandboxConfig(timeout_seconds=5.0))
    with pytest.raises(SecurityViolation, match="blocked at run time"):
        sandbox.exec_code("import functools, json\nclass W:\n    pass\n"
                          "functools.update_wrapper(W(), json.dumps, assigned=('__globals__',))")
    with start_worker(PROBE, memory_mb=64) as worker:
        assert _ask(worker, {"op": "refusal"}) == {"refusal": "SecurityViolation"}
