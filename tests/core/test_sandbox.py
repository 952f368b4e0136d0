"""SandboxedExecutor: results and errors, limits, process isolation, the zygote, safe_call."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from course_plugins.core.sandbox import (
    SandboxConfig,
    SandboxedExecutor,
    SandboxError,
    SandboxMemoryError,
    SandboxOutputError,
    SandboxRuntimeError,
    SandboxTimeout,
    SecurityViolation,
    codec,
    limits,
)
from course_plugins.core.sandbox import executor as executor_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandbox() -> SandboxedExecutor:
    return SandboxedExecutor(SandboxConfig(timeout_seconds=5.0, max_memory_mb=100))


@pytest.fixture(scope="module")
def quick() -> SandboxedExecutor:
    """Short wall clock, for the tests that run into it."""
    return SandboxedExecutor(SandboxConfig(timeout_seconds=0.5, max_memory_mb=64))


def _run_script(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )


# -- the seed's example and the exec_code contract ---------------------------------------------


def test_seed_example_runs_as_written() -> None:
    from course_plugins.core.sandbox import SandboxConfig, SandboxedExecutor

    config = SandboxConfig(
        timeout_seconds=5.0,
        max_memory_mb=100,
        enable_audit=True
    )

    executor = SandboxedExecutor(config)

    # Execute code safely
    result = executor.exec_code('''
def process(data):
    return data.upper()
result = process("hello")
''')
    assert result == "HELLO"


def test_inputs_are_globals_and_result_is_returned(sandbox: SandboxedExecutor) -> None:
    code = "result = {'total': sum(values), 'name': name.title()}"
    assert sandbox.exec_code(code, {"values": [1, 2, 3], "name": "ada"}) == {
        "total": 6, "name": "Ada"
    }


def test_no_result_binding_returns_none(sandbox: SandboxedExecutor) -> None:
    assert sandbox.exec_code("x = 1") is None


def test_plain_data_round_trips_with_types(sandbox: SandboxedExecutor) -> None:
    value = {"b": b"\x00\xffbytes", "t": (1, (2.5, None)), 3: [True, "ünï"], (1, "k"): {}}
    assert sandbox.exec_code("result = value", {"value": value}) == value
    back = sandbox.exec_code("result = (b'ab', [1], {2: (3,)})")
    assert back == (b"ab", [1], {2: (3,)}) and isinstance(back[2][2], tuple)


@pytest.mark.parametrize("code", [
    "class Evil:\n    def __eq__(self, other):\n        return True\nresult = Evil()",
    "class D(dict):\n    pass\nresult = D(a=1)",
    "class I(int):\n    pass\nresult = [I(3)]",
    "result = {1, 2}",
    "result = {'f': len}",
    "result = {[1]: 2} if False else {(1, [2]): 3}",
])
def test_only_plain_data_crosses_back(sandbox: SandboxedExecutor, code: str) -> None:
    with pytest.raises((SandboxOutputError, SandboxRuntimeError)):
        sandbox.exec_code(code)


@pytest.mark.parametrize("inputs, error", [
    ({"obj": object()}, ValueError),
    ({"s": {1, 2}}, ValueError),
    ({"__builtins__": {}}, ValueError),
    ({"not an identifier": 1}, ValueError),
    (["a"], TypeError),
])
def test_unusable_inputs_are_refused_before_anything_runs(
    sandbox: SandboxedExecutor, inputs: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        sandbox.exec_code("result = 1", inputs)  # type: ignore[arg-type]


def test_runtime_error_carries_type_message_and_line(sandbox: SandboxedExecutor) -> None:
    with pytest.raises(SandboxRuntimeError) as info:
        sandbox.exec_code("x = 1\ny = {}\nz = y['missing']")
    assert info.value.type_name == "KeyError"
    assert info.value.message == "'missing'"
    assert info.value.lineno == 3
    assert "KeyError" in str(info.value)


def test_syntax_error_is_a_runtime_error(sandbox: SandboxedExecutor) -> None:
    with pytest.raises(SandboxRuntimeError) as info:
        sandbox.exec_code("def f(:\n    pass")
    assert info.value.type_name == "SyntaxError" and info.value.lineno == 1


def test_printed_text_is_captured_and_capped() -> None:
    runner = SandboxedExecutor(SandboxConfig(max_print_bytes=1000))
    out = runner.run("print('a', 1, sep='-')\nresult = 2")
    assert (out.result, out.stdout, out.stdout_truncated) == (2, "a-1\n", False)
    flood = runner.run("for i in range(10000):\n    print('x' * 100)\nresult = 'done'")
    assert flood.result == "done"
    assert flood.stdout_truncated and len(flood.stdout) == 1000


def test_every_call_starts_from_fresh_state(sandbox: SandboxedExecutor) -> None:
    sandbox.exec_code("import random\nrandom.seed(1)\nleftover = 'from call 1'")
    code = "try:\n    result = leftover\nexcept NameError:\n    result = 'fresh'"
    assert sandbox.exec_code(code) == "fresh"
    draws = {sandbox.exec_code("import random\nresult = random.random()") for _ in range(3)}
    assert len(draws) == 3  # not the seeded sequence of an earlier call
    with pytest.raises(SandboxRuntimeError, match="read-only"):
        sandbox.exec_code("import math\nmath.pi = 3")


def test_the_allowed_modules_work_inside_the_sandbox(sandbox: SandboxedExecutor) -> None:
    code = textwrap.dedent("""
        import base64, collections, collections.abc, copy, dataclasses, datetime, decimal, enum
        import fractions, functools, hashlib, hmac, html, itertools, json, math, operator
        import random, re, statistics, string, textwrap, time, typing, unicodedata, uuid

        @dataclasses.dataclass
        class Point:
            x: int = 1
            tags: list = dataclasses.field(default_factory=list)

        class Colour(enum.Enum):
            RED = 1

        Pair = collections.namedtuple("Pair", "a b")
        result = [
            base64.b64encode(b"x"), collections.Counter("aab").most_common(1)[0][0],
            isinstance([], collections.abc.Sequence), copy.deepcopy({1: [2]}),
            dataclasses.asdict(Point()), datetime.datetime.strptime("2021", "%Y").year,
            str(decimal.Decimal("1.1") * 3), str(fractions.Fraction(1, 3)),
            functools.reduce(operator.add, [1, 2]), hashlib.sha256(b"x").hexdigest()[:8],
            hmac.new(b"k", b"m", "sha256").hexdigest()[:4], html.unescape("&lt;"),
            list(itertools.islice(itertools.count(), 2)), json.loads("[1]"), math.floor(2.5),
            0 <= random.random() < 1, re.sub("a", "b", "aa"), statistics.median([3, 1, 2]),
            string.Template("$x").substitute(x=1), textwrap.shorten("a b c d", 5),
            time.strptime("2022", "%Y").tm_year, typing.get_origin(typing.List[int]) is list,
            unicodedata.name("a"), len(str(uuid.uuid4())), Colour.RED.name, list(Pair(1, 2)),
            "é".encode("latin-1"), "x".encode("utf-16"), "bücher.de".encode("idna"),
        ]
    """)
    assert sandbox.exec_code(code) == [
        b"eA==", "a", True, {1: [2]}, {"x": 1, "tags": []}, 2021, "3.3", "1/3", 3, "2d711642",
        hmac.new(b"k", b"m", "sha256").hexdigest()[:4], "<", [0, 1], [1], 2, True, "bb", 2,
        "1", "[...]", 2022, True, "LATIN SMALL LETTER A", 36, "RED", [1, 2], b"\xe9",
        "x".encode("utf-16"), "bücher.de".encode("idna"),
    ]


def test_allowed_modules_can_be_narrowed() -> None:
    narrow = SandboxedExecutor(SandboxConfig(allowed_modules={"math"}))
    assert narrow.exec_code("import math\nresult = math.floor(2.5)") == 2
    with pytest.raises(SecurityViolation, match="json"):
        narrow.exec_code("import json")
    with pytest.raises(ValueError, match="no safe facade"):
        SandboxConfig(allowed_modules={"os"})


# -- limits ------------------------------------------------------------------------------------


def test_memory_limit(quick: SandboxedExecutor) -> None:
    with pytest.raises(SandboxMemoryError):
        quick.exec_code("x = 'a' * (200 * 1024 * 1024)")
    with pytest.raises(SandboxMemoryError):
        quick.exec_code("chunks = []\nwhile True:\n    chunks.append(' ' * 1_000_000)")
    assert quick.exec_code("result = len('a' * (10 * 1024 * 1024))") == 10 * 1024 * 1024


def test_wall_clock_limit_kills_a_sleeping_child(quick: SandboxedExecutor) -> None:
    started = time.monotonic()
    with pytest.raises(SandboxTimeout) as info:
        quick.exec_code("import time\ntime.sleep(30)")
    assert time.monotonic() - started < 3
    assert info.value.kind == "wall-clock"


def test_the_hosts_deadline_kills_the_child_if_its_own_alarm_has_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The child's alarm fires at the timeout; the host's deadline is normally a little later.
    # Moved before the alarm, the host's own killer (through the zygote) must do the job.
    monkeypatch.setattr(executor_module, "_KILL_GRACE", -0.7)
    taken: list[int] = []
    original_take = executor_module._Zygote.take

    def take(self: executor_module._Zygote) -> tuple[int, socket.socket]:
        pid, channel = original_take(self)
        taken.append(pid)
        return pid, channel

    monkeypatch.setattr(executor_module._Zygote, "take", take)
    runner = SandboxedExecutor(SandboxConfig(timeout_seconds=1.0))
    started = time.monotonic()
    with pytest.raises(SandboxTimeout):
        runner.exec_code("while True:\n    pass")
    assert time.monotonic() - started < 0.9  # before the child's own alarm could fire
    assert not os.path.exists(f"/proc/{taken[-1]}"), "the looping child survived"


@pytest.mark.parametrize("signum", [signal.SIGSEGV, signal.SIGKILL])
def test_a_child_dying_oddly_is_an_audited_abnormal_exit(
    monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    from course_plugins.core.sandbox import audit

    # The child is killed once it has the job: killed before that (the calling thread preempted
    # between taking the child and sending it the job), nothing ran, and the call rightly takes
    # another child instead.
    running: list[int] = []
    handed = threading.Event()
    original_exchange = SandboxedExecutor._exchange

    def exchange(self: SandboxedExecutor, zygote: executor_module._Zygote, pid: int,
                 channel: socket.socket, started: float) -> dict[str, Any]:
        running.append(pid)
        handed.set()
        return original_exchange(self, zygote, pid, channel, started)

    monkeypatch.setattr(SandboxedExecutor, "_exchange", exchange)
    events: list[tuple[str, str, str | None]] = []
    sink = audit.add_audit_sink(lambda kind, detail, plugin: events.append((kind, detail, plugin)))
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            SandboxedExecutor(SandboxConfig(timeout_seconds=20), owner="odd@1.0").exec_code(
                "import time\ntime.sleep(15)"
            )
        except BaseException as exc:  # asserted below
            outcome.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    try:
        assert handed.wait(10), "the call never sent its job to a child"
        os.kill(running[0], signum)
        worker.join(10)
    finally:
        audit.remove_audit_sink(sink)
    assert len(running) == 1 and len(outcome) == 1 and type(outcome[0]) is SandboxError
    assert signal.Signals(signum).name in str(outcome[0])
    assert [(kind, plugin) for kind, _, plugin in events] == [("abnormal_exit", "odd@1.0")]


def test_wall_clock_limit_stops_a_long_c_call(quick: SandboxedExecutor) -> None:
    # A catastrophic regex runs inside one C call: only killing the process stops it.
    with pytest.raises(SandboxTimeout):
        quick.exec_code("import re\nre.match('(a+)+$', 'a' * 40 + 'b')")


def test_cpu_limit() -> None:
    busy = SandboxedExecutor(SandboxConfig(timeout_seconds=20, max_cpu_seconds=1))
    started = time.monotonic()
    with pytest.raises(SandboxTimeout) as info:
        busy.exec_code("while True:\n    pass")
    assert info.value.kind == "CPU"
    assert time.monotonic() - started < 10


def test_output_limits() -> None:
    small = SandboxedExecutor(SandboxConfig(max_output_bytes=1000, max_source_bytes=2000))
    assert small.exec_code("result = 'x' * 900") == "x" * 900
    with pytest.raises(SandboxOutputError, match="limit"):
        small.exec_code("result = 'x' * 5000")
    with pytest.raises(SecurityViolation, match="max_source_bytes"):
        small.exec_code("x = 1\n" * 1000)
    with pytest.raises(ValueError, match="limit"):
        SandboxedExecutor(SandboxConfig(max_input_bytes=100)).exec_code("", {"a": "x" * 200})


def test_deep_nesting_is_refused_or_runs_never_crashes_the_host(
    sandbox: SandboxedExecutor,
) -> None:
    for source in ("result = " + "-" * 600 + "1", "result = " + "+".join(["1"] * 3000)):
        with contextlib.suppress(SecurityViolation, SandboxRuntimeError):
            sandbox.exec_code(source)
    assert sandbox.exec_code("result = 40 + 2") == 42


# -- process isolation and the kernel layers ---------------------------------------------------


def _zygote_children(zygote_pid: int) -> list[int]:
    children = set()
    for task in os.listdir(f"/proc/{zygote_pid}/task"):
        with open(f"/proc/{zygote_pid}/task/{task}/children") as handle:
            children.update(int(pid) for pid in handle.read().split())
    return sorted(children)


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def _confined_or_gone(pid: int, seccomp: bool = False) -> bool:
    """True once child ``pid`` has confined itself, or has already finished and gone."""
    try:
        status = _status(pid)
        # no-new-privileges comes just before the filter: wait for the last step.
        return status.get("NoNewPrivs") == "1" and (not seccomp or status.get("Seccomp") == "2")
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_layers_are_detected_and_reported(sandbox: SandboxedExecutor) -> None:
    active = sandbox.layers()
    for layer in ("process", "rlimits", "no_new_privs", "language"):
        assert active[layer] is True
    for layer in ("seccomp", "netns", "setuid_nobody"):
        assert isinstance(active[layer], bool)
        if not active[layer]:
            assert layer == "setuid_nobody" or active.get(f"{layer}_reason")


def test_zygote_is_a_clean_isolated_interpreter(sandbox: SandboxedExecutor) -> None:
    sandbox.exec_code("result = 1")
    pid = executor_module.zygote_pid()
    assert pid is not None
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        argv = handle.read().split(b"\0")
    assert argv[1:3] == [b"-I", b"-S"]
    with open(f"/proc/{pid}/environ", "rb") as handle:
        assert handle.read() == b""
    assert int(_status(pid)["PPid"]) == os.getpid()
    assert _status(pid)["Threads"] == "1"


def test_children_hold_only_their_channel_and_are_confined(sandbox: SandboxedExecutor) -> None:
    sandbox.exec_code("result = 1")
    zygote = executor_module.zygote_pid()
    assert zygote is not None
    active = sandbox.layers()
    # Children forked in advance confine themselves before waiting for a job; give the newest
    # ones the moment they need (there is no event to wait on in another process's setup).
    deadline = time.monotonic() + 5
    while True:
        children = _zygote_children(zygote)
        if all(_confined_or_gone(c, bool(active["seccomp"])) for c in children) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.01)
    assert children, "the zygote keeps children forked in advance"
    checked = 0
    for child in children:
        try:
            fds = sorted(int(fd) for fd in os.listdir(f"/proc/{child}/fd"))
            status = _status(child)
            stdin = os.readlink(f"/proc/{child}/fd/0")
            group = os.getpgid(child)
            net = os.readlink(f"/proc/{child}/ns/net")
        except (FileNotFoundError, ProcessLookupError):
            continue  # it finished a job meanwhile
        if status["State"].startswith(("Z", "X")):
            continue
        checked += 1
        assert fds == [0, 1, 2, 3]
        assert stdin == "/dev/null"
        assert status["NoNewPrivs"] == "1"
        assert group == child  # its own process group, killed as a whole
        if active["seccomp"]:
            assert status["Seccomp"] == "2"
        if active["setuid_nobody"]:
            assert status["Uid"].split()[0] == str(limits.NOBODY)
        if active["netns"]:
            assert net != os.readlink("/proc/self/ns/net")
    assert checked


def test_seccomp_filter_denies_files_network_processes() -> None:
    program, why = limits.seccomp_program()
    if program is None:
        pytest.skip(f"seccomp layer not available here: {why}")
    script = f"""
        import json, os, socket, sys
        from course_plugins.core.sandbox import limits
        program = bytes.fromhex({program.hex()!r})
        limits.lock_down()
        limits.load_seccomp(program)
        outcome = {{}}
        def attempt(name, fn):
            try:
                fn()
                outcome[name] = "allowed"
            except OSError as exc:
                outcome[name] = exc.errno
        attempt("read", lambda: open("/etc/hostname").read())
        attempt("create", lambda: open("/tmp/sandbox-seccomp-probe", "w"))
        attempt("socket", lambda: socket.socket())
        attempt("fork", os.fork)
        attempt("exec", lambda: os.execv("/bin/true", ["true"]))
        attempt("kill", lambda: os.kill(os.getppid(), 0))
        sys.stdout.write(json.dumps(outcome))
        sys.stdout.flush()
        os._exit(0)
    """
    done = _run_script(script)
    outcome = json.loads(done.stdout)
    assert set(outcome.values()) == {1}, outcome  # every one: EPERM
    assert not os.path.exists("/tmp/sandbox-seccomp-probe")


def test_network_namespace_has_no_route_to_the_host() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    script = f"""
        import socket, sys
        from course_plugins.core.sandbox import limits
        ok, why = limits.unshare_network()
        if not ok:
            print("skip:" + why)
            sys.exit(0)
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
            print("connected")
        except OSError as exc:
            print("refused", exc.errno)
    """
    try:
        done = _run_script(script)
        if done.stdout.startswith("skip:"):
            pytest.skip(done.stdout)
        assert done.stdout.startswith("refused"), done.stdout + done.stderr
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


# -- the zygote's life cycle -------------------------------------------------------------------


def test_zygote_is_restarted_when_it_dies(sandbox: SandboxedExecutor) -> None:
    sandbox.exec_code("result = 1")
    first = executor_module.zygote_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    # (the first call may still be served by a child taken before the kill)
    assert [sandbox.exec_code("result = 'back'") for _ in range(3)] == ["back"] * 3
    second = executor_module.zygote_pid()
    assert second is not None and second != first


def test_concurrent_calls_from_many_threads(sandbox: SandboxedExecutor) -> None:
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(6):
                results[n * 100 + i] = sandbox.exec_code("result = n * i", {"n": n, "i": i})
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == {n * 100 + i: n * i for n in range(8) for i in range(6)}


def test_zygote_is_stopped_when_the_host_exits() -> None:
    done = _run_script("""
        from course_plugins.core.sandbox import SandboxedExecutor
        from course_plugins.core.sandbox.executor import zygote_pid
        assert SandboxedExecutor().exec_code("result = 3") == 3
        print(zygote_pid())
    """)
    pid = int(done.stdout.strip())
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone
    try:
        ready, _, _ = select.select([handle], [], [], 10)
        assert ready, f"zygote {pid} still running after its host exited"
    finally:
        os.close(handle)


def test_a_forked_host_gets_its_own_zygote() -> None:
    done = _run_script("""
        import os, json
        from course_plugins.core.sandbox import SandboxedExecutor
        from course_plugins.core.sandbox.executor import zygote_pid
        sandbox = SandboxedExecutor()
        assert sandbox.exec_code("result = 1") == 1
        parent_zygote = zygote_pid()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            value = sandbox.exec_code("result = 'child'")
            os.write(write, json.dumps([value, zygote_pid()]).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        os.close(write)
        child_value, child_zygote = json.loads(os.read(read, 1000))
        print(json.dumps({"child": child_value, "same": child_zygote == parent_zygote,
                          "parent_after": sandbox.exec_code("result = 'parent'"),
                          "parent_zygote_kept": zygote_pid() == parent_zygote}))
    """)
    assert json.loads(done.stdout) == {
        "child": "child", "same": False, "parent_after": "parent", "parent_zygote_kept": True
    }, done.stderr


def test_async_callers(sandbox: SandboxedExecutor) -> None:
    async def main() -> list[object]:
        return await asyncio.gather(*(sandbox.aexec_code("result = x * 2", {"x": x})
                                      for x in range(4)))

    assert asyncio.run(main()) == [0, 2, 4, 6]


def test_a_broken_interpreter_path_is_a_clear_error() -> None:
    broken = SandboxedExecutor(SandboxConfig(python="/nonexistent/python3"))
    with pytest.raises(SandboxError, match="could not start"):
        broken.exec_code("result = 1")


# -- safe_call ---------------------------------------------------------------------------------


def test_safe_call_interrupts_a_pure_python_loop(sandbox: SandboxedExecutor) -> None:
    @sandbox.safe_call(timeout=0.2)
    def spin() -> None:
        while True:
            pass

    started = time.monotonic()
    with pytest.raises(SandboxTimeout) as info:
        spin()
    assert time.monotonic() - started < 2
    assert info.value.seconds == 0.2 and info.value.kind == "in-process"


def test_safe_call_passes_results_and_errors_through(sandbox: SandboxedExecutor) -> None:
    @sandbox.safe_call(timeout=2.0)
    def transform(data: str) -> str:
        if not data:
            raise ValueError("empty")
        return data[::-1]

    assert transform("abc") == "cba"
    assert transform.__name__ == "transform"
    with pytest.raises(ValueError, match="empty"):
        transform("")


def test_safe_call_cannot_be_swallowed_by_except_exception(sandbox: SandboxedExecutor) -> None:
    @sandbox.safe_call(timeout=0.2)
    def stubborn() -> str:
        while True:
            try:
                while True:
                    pass
            except Exception:
                continue

    with pytest.raises(SandboxTimeout):
        stubborn()


def test_safe_call_on_coroutines(sandbox: SandboxedExecutor) -> None:
    @sandbox.safe_call(timeout=0.1)
    async def slow() -> None:
        await asyncio.sleep(10)

    @sandbox.safe_call(timeout=1.0)
    async def fast() -> int:
        await asyncio.sleep(0)
        return 5

    assert asyncio.run(fast()) == 5
    with pytest.raises(SandboxTimeout):
        asyncio.run(slow())


def test_sandbox_timeout_is_constructible_without_arguments() -> None:
    assert "time budget" in str(SandboxTimeout())
    with pytest.raises(ValueError):
        SandboxedExecutor().safe_call(timeout=0)


# -- the host decodes a child's answer as hostile ----------------------------------------------


def _forged_answer(result_json: str) -> bytes:
    return ('{"status":"ok","stdout":"","truncated":false,"result":' + result_json + "}").encode()


def _exchange_with_fake_child(sandbox: SandboxedExecutor, body: bytes) -> object:
    """Feed ``body`` to the host as a child's answer; return what the caller would get."""
    host, child = socket.socketpair()
    with host, child:
        writer = threading.Thread(target=child.sendall, args=(codec.frame(body),))
        writer.start()
        started = time.monotonic()
        try:
            reply = sandbox._exchange(executor_module._zygote(None), -1, host, started)
            return sandbox._result(reply, started).result
        finally:
            writer.join()


def test_an_answer_of_colliding_integer_keys_is_refused_with_a_clear_error() -> None:
    """56,000 integer keys that all hash alike, under the answer-size cap: decoding them took
    23 s under a 3 s timeout; now the host refuses them (and audits it)."""
    sandbox = SandboxedExecutor(SandboxConfig(timeout_seconds=3.0, max_output_bytes=4 << 20))
    modulus = 2**61 - 1  # k * modulus + 1 all hash to 1
    pairs = ",".join(f"[{k * modulus + 1},0]" for k in range(56_000))
    with pytest.raises(SandboxOutputError, match="not strings"):
        _exchange_with_fake_child(sandbox, _forged_answer('{"d":[' + pairs + "]}"))
    # The same number of string keys is ordinary data (string hashes are salted per process).
    pairs = ",".join(f'["k{k}",0]' for k in range(56_000))
    value = _exchange_with_fake_child(sandbox, _forged_answer('{"d":[' + pairs + "]}"))
    assert isinstance(value, dict) and len(value) == 56_000


def test_an_answer_that_is_not_a_json_object_is_malformed() -> None:
    sandbox = SandboxedExecutor(SandboxConfig(timeout_seconds=3.0))
    modulus = 2**61 - 1
    pairs = ",".join(f"[{k * modulus + 1},0]" for k in range(56_000))
    for body in ("[" + pairs + "]", "[1, 2]", "null", "{"):
        with pytest.raises(SandboxError, match="malformed"):
            _exchange_with_fake_child(sandbox, body.encode())


@pytest.mark.parametrize("result_json, message", [
    ('{"d":[[{"t":[1,2]},0]]}', None),  # a tuple key: fine
    ("[" * 150 + "]" * 150, "nested"),
    ('{"x":1}', "unexpected"),
    ('{"b":"not base64!"}', "malformed bytes"),
])
def test_forged_answers_are_bounded_in_shape(result_json: str, message: str | None) -> None:
    sandbox = SandboxedExecutor(SandboxConfig(timeout_seconds=3.0))
    if message is None:
        assert _exchange_with_fake_child(sandbox, _forged_answer(result_json)) == {(1, 2): 0}
    else:
        with pytest.raises(SandboxOutputError, match=message):
            _exchange_with_fake_child(sandbox, _forged_answer(result_json))


def test_decoding_stops_at_the_deadline() -> None:
    data = codec.to_wire(list(range(5000)), limit=1 << 20)
    assert codec.from_wire(data, limit=1 << 20, deadline=time.monotonic() + 60) == list(
        range(5000))
    with pytest.raises(codec.CodecError, match="too long"):
        codec.from_wire(data, limit=1 << 20, deadline=time.monotonic() - 1)


def test_results_with_many_non_string_keys_get_a_clear_error(sandbox: SandboxedExecutor) -> None:
    assert len(sandbox.exec_code("result = {i: 0 for i in range(1000)}")) == 1000
    with pytest.raises(SandboxOutputError, match="use string keys"):
        sandbox.exec_code("result = {i: 0 for i in range(1001)}")
    assert len(sandbox.exec_code("result = {str(i): 0 for i in range(20000)}")) == 20000


# -- the queue in front of the fork server ------------------------------------------------------


def test_the_gate_runs_a_few_calls_and_queues_the_rest_in_order() -> None:
    gate = executor_module._Gate(slots=1, max_waiting=2)
    gate.enter(1.0)
    order: list[int] = []

    def caller(n: int) -> None:
        gate.enter(60.0)
        order.append(n)
        gate.leave()

    threads = []
    for n in (1, 2):
        threads.append(threading.Thread(target=caller, args=(n,)))
        threads[-1].start()
        while len(gate._waiting) < n:  # queued before the next one starts (nothing to wait on)
            time.sleep(0.001)
    with pytest.raises(executor_module.SandboxBusy, match="already waiting"):
        gate.enter(60.0)  # the queue is full: refused at once
    gate.leave()
    for thread in threads:
        thread.join()
    assert order == [1, 2]  # first come, first served
    gate.enter(0.0)  # the slot came back


def test_a_call_that_waits_its_whole_timeout_in_the_queue_is_refused() -> None:
    gate = executor_module._Gate(slots=1, max_waiting=5)
    gate.enter(1.0)
    with pytest.raises(executor_module.SandboxBusy, match="did not run"):
        gate.enter(0.05)
    assert not gate._waiting
    gate.leave()
    gate.enter(0.0)


def test_many_concurrent_callers_all_get_answers(sandbox: SandboxedExecutor) -> None:
    results: list[object] = []
    threads = [threading.Thread(target=lambda n=n: results.append(
        sandbox.exec_code("result = n + 1", {"n": n}))) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(1, 41))  # type: ignore[type-var]
