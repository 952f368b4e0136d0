"""Isolated plugins (the default): whatever a plugin's code does, the host keeps its secrets,
its files, its network and its time.

Each attack runs as a real plugin through the real ``PluginLoader``. The attacks start from a
known escape of the language layer (``functools.update_wrapper`` handing over the real
``__builtins__``); where the policy already refuses that, the plugin records the refusal and
the operating-system layers are checked from the host instead (``/proc/<worker>/...``).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from course_plugins.api.platform_api import Services, default_api_factory
from course_plugins.core.event_bus import Event, EventBus
from course_plugins.core.health import health
from course_plugins.core.hook_manager import HookManager
from course_plugins.core.isolation.host import IsolatedPlugin
from course_plugins.core.options import options
from course_plugins.core.plugin import PluginState
from course_plugins.core.plugin_loader import PluginLoader
from course_plugins.core.sandbox.executor import layers as sandbox_layers
from course_plugins.exceptions import PluginLoadError, PluginPermissionError

pytestmark = pytest.mark.usefixtures("engine_state")

HOST_SECRET = "host-secret-9f2c1e"

# A known escape of the language layer (``functools.update_wrapper`` handing over json's real
# ``__builtins__``), in a submodule: where the plugin policy refuses it, the import fails with a
# SecurityViolation the plugin catches, and the attacks below have nothing to work with.
ESCAPE = '''
import functools
import json


def real_builtins():
    box = {}

    class W:
        def __setattr__(self, name, value):
            box[name] = value

    functools.update_wrapper(W(), json.dumps, assigned=("__globals__",), updated=())
    return box["__globals__"]["__builtins__"]
'''

ATTEMPT = '''
def attempt(fn):
    try:
        return "ok: " + repr(fn())[:200]
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
'''


def make_plugin(root: Path, name: str, code: str, *, hooks: tuple[str, ...] = (),
                events: tuple[str, ...] = (), permissions: tuple[str, ...] = (),
                timeout: float | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    manifest = [f"name: {name}", "version: 1.0.0", "description: test", "author: tests"]
    if hooks:
        manifest.append(f"hooks: [{', '.join(hooks)}]")
    if events:
        manifest.append(f"events: [{', '.join(repr(e) for e in events)}]")
    if permissions:
        manifest.append(f"permissions: [{', '.join(permissions)}]")
    if timeout:
        manifest.append(f"timeout_seconds: {timeout}")
    (folder / "plugin.yaml").write_text("\n".join(manifest) + "\n")
    (folder / "__init__.py").write_text(textwrap.dedent(code))
    (folder / "escape.py").write_text(ESCAPE)
    return folder


@pytest.fixture
def engine(tmp_path: Path):
    hooks, bus = HookManager(), EventBus()
    loaders: list[PluginLoader] = []

    def make(**kwargs: Any) -> PluginLoader:
        kwargs.setdefault("api_factory", default_api_factory(Services.in_memory()))
        loader = PluginLoader([tmp_path], hooks=hooks, bus=bus, **kwargs)
        loaders.append(loader)
        loader.discover_all()
        return loader

    make.hooks, make.bus, make.root = hooks, bus, tmp_path  # type: ignore[attr-defined]
    yield make
    for loader in loaders:
        loader.close()


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("COURSE_PLUGINS_TEST_SECRET", HOST_SECRET)
    secret_file = tmp_path / "settings_secret.py"
    secret_file.write_text(f"SECRET_KEY = {HOST_SECRET!r}\n")
    secret_file.chmod(0o644)
    return secret_file


def _proc(pid: int, what: str) -> str:
    return Path(f"/proc/{pid}/{what}").read_text(errors="replace")


# -- the worker's confinement, seen from the host -----------------------------------------------


def test_plugins_are_isolated_by_default_in_a_confined_worker(engine, secrets):
    make_plugin(engine.root, "quiet", "def activate(api):\n    pass\n")
    loader = engine()
    plugin = loader.activate("quiet")
    assert plugin.isolated and not plugin.trusted
    worker = plugin._importer
    assert isinstance(worker, IsolatedPlugin) and worker.pid != os.getpid()
    environ = Path(f"/proc/{worker.pid}/environ").read_bytes()
    assert HOST_SECRET.encode() not in environ
    assert set(filter(None, environ.split(b"\0"))) <= {b"LC_CTYPE=C.UTF-8"}
    status = _proc(worker.pid, "status")
    layers = sandbox_layers()
    if layers.get("seccomp"):
        assert "Seccomp:\t2" in status
    assert "NoNewPrivs:\t1" in status
    if layers.get("setuid_nobody"):
        assert "Uid:\t65534\t65534\t65534\t65534" in status
    if layers.get("netns"):
        assert os.readlink(f"/proc/{worker.pid}/ns/net") != os.readlink("/proc/self/ns/net")
    assert os.readlink(f"/proc/{worker.pid}/cwd") == "/"


def test_trusted_plugins_run_in_the_host_process(engine):
    make_plugin(engine.root, "mine", "def activate(api):\n    pass\n")
    make_plugin(engine.root, "theirs", "def activate(api):\n    pass\n")
    loader = engine(trusted={"mine"})
    assert loader.activate("mine").trusted
    theirs = loader.activate("theirs")
    assert theirs.isolated and isinstance(theirs._importer, IsolatedPlugin)


# -- attacks at call time and at activation time -------------------------------------------------


ATTACKS = ATTEMPT + '''
try:
    from .escape import real_builtins
except Exception as refusal:
    REFUSED = f"{type(refusal).__name__}: {refusal}"
    real_builtins = None


def attack(settings_path):
    out = {}
    if real_builtins is None:
        return {"escape": "refused: " + REFUSED}
    try:
        real = real_builtins()
    except Exception as exc:
        return {"escape": f"refused: {type(exc).__name__}"}
    out["escape"] = "ok"
    imp = real["__import__"]
    os = imp("os")
    out["environ"] = repr(dict(os.environ))
    out["read_settings"] = attempt(lambda: real["open"](settings_path).read())
    out["read_host_env"] = attempt(lambda: real["open"]("/proc/1/environ", "rb").read())
    out["write_file"] = attempt(lambda: real["open"]("/tmp/isolation-test-written", "w").write("x"))
    out["listdir"] = attempt(lambda: os.listdir("/"))
    out["socket"] = attempt(lambda: real["getattr"](imp("socket"), "socket")())
    out["fork"] = attempt(lambda: os.fork())
    out["exec"] = attempt(lambda: os.system("touch /tmp/isolation-test-exec"))
    out["kill_host"] = attempt(lambda: os.kill(os.getppid(), 9))
    return out
'''


def _assert_nothing_leaked(loot: dict[str, str], secret_file: Path) -> None:
    text = repr(loot)
    assert HOST_SECRET not in text
    assert not Path("/tmp/isolation-test-written").exists()
    assert not Path("/tmp/isolation-test-exec").exists()
    if loot.get("escape") == "ok":
        for what in ("read_settings", "read_host_env", "write_file", "listdir", "socket", "fork"):
            assert not loot[what].startswith("ok"), (what, loot[what])
        # system() reports a shell it could not start as exit status 127 (32512)
        assert loot["exec"] in ("ok: 32512", "ok: -1") or not loot["exec"].startswith("ok")


def test_a_hook_function_cannot_read_secrets_write_files_or_open_sockets(engine, secrets):
    make_plugin(engine.root, "thief", ATTACKS + f'''

def activate(api):
    @api.hooks["before-course-save"].add
    def steal(course):
        course["loot"] = attack({str(secrets)!r})
        return course
''', hooks=("before-course-save",))
    loader = engine()
    loader.activate("thief")
    result = engine.hooks.run_sync("before-course-save", {"title": "x"})
    _assert_nothing_leaked(result["loot"], secrets)
    assert os.getpid() > 0  # the host is alive: the worker's kill was refused


def test_activate_cannot_reach_secrets_either(engine, secrets):
    make_plugin(engine.root, "thief", ATTACKS + f'''
loot = {{}}


def activate(api):
    loot.update(attack({str(secrets)!r}))
    api.storage.set_sync("loot", loot)
''', permissions=("storage",))
    loader = engine()
    plugin = loader.activate("thief")
    _assert_nothing_leaked(plugin.api.storage.get_sync("loot"), secrets)


def test_module_code_is_confined_before_it_runs(engine, secrets):
    make_plugin(engine.root, "thief", ATTACKS + f'''
LOOT = attack({str(secrets)!r})


def activate(api):
    api.storage.set_sync("loot", LOOT)
''', permissions=("storage",))
    loader = engine()
    plugin = loader.activate("thief")
    _assert_nothing_leaked(plugin.api.storage.get_sync("loot"), secrets)


def test_an_endless_hook_function_is_stopped_and_its_worker_replaced(engine):
    make_plugin(engine.root, "spinner", '''
def activate(api):
    @api.hooks["content-transform"].add
    def spin(course, *context):
        if course.get("spin"):
            while True:
                pass
        course["seen"] = True
        return course
''', hooks=("content-transform",), timeout=0.5)
    loader = engine()
    plugin = loader.activate("spinner")
    first = plugin._importer.pid
    # The FILTER keeps its value; the run returns after the budget, the worker is killed.
    assert engine.hooks.run_sync("content-transform", {"spin": True}) == {"spin": True}
    assert plugin._importer.pid is None
    assert health.failures(plugin.id) == 1
    # The next call starts a new worker, which activated the plugin again.
    assert engine.hooks.run_sync("content-transform", {}) == {"seen": True}
    assert plugin._importer.pid not in (None, first)
    assert plugin._importer.restarts == 1


def test_a_crashed_worker_counts_and_is_replaced(engine):
    make_plugin(engine.root, "fragile", '''
def activate(api):
    @api.events.subscribe("course.created")
    def on_created(event):
        api.log.info("seen %s", event.data["name"])
''', events=("course.*",))
    loader = engine()
    plugin = loader.activate("fragile")
    os.kill(plugin._importer.pid, signal.SIGKILL)
    engine.bus.publish_sync(Event("course.created", {"name": "a"}))
    assert health.failures(plugin.id) == 1
    engine.bus.publish_sync(Event("course.created", {"name": "b"}))
    assert health.failures(plugin.id) == 0  # a success resets the streak
    assert plugin._importer.restarts == 1


def test_a_worker_that_keeps_failing_is_quarantined_and_the_host_goes_on(engine):
    make_plugin(engine.root, "spinner", '''
def activate(api):
    @api.hooks["content-transform"].add
    def spin(course, *context):
        while True:
            pass
''', hooks=("content-transform",), timeout=0.2)
    make_plugin(engine.root, "fine", '''
def activate(api):
    @api.hooks["content-transform"].add(priority=20)
    def mark(course, *context):
        course["fine"] = True
        return course
''', hooks=("content-transform",))
    options.max_failures = 2
    loader = engine()
    loader.activate_all()
    for _ in range(2):
        assert engine.hooks.run_sync("content-transform", {}) == {"fine": True}
    spinner = loader.get("spinner")
    assert spinner.state == PluginState.FAULTED
    assert "time budget" in spinner.error
    assert engine.hooks.run_sync("content-transform", {}) == {"fine": True}


def test_endless_module_code_fails_activation_within_the_budget(engine):
    make_plugin(engine.root, "stuck", "while True:\n    pass\n\ndef activate(api):\n    pass\n")
    options.hook_timeout = 0.5
    loader = engine()
    with pytest.raises(PluginLoadError, match="time budget"):
        loader.activate("stuck")
    assert loader.get("stuck").state == PluginState.ERROR


def test_endless_activate_fails_and_leaves_nothing_registered(engine):
    make_plugin(engine.root, "stuck", '''
def activate(api):
    api.hooks["before-course-save"].add(lambda course: course)
    while True:
        pass
''', hooks=("before-course-save",))
    options.hook_timeout = 0.5
    loader = engine()
    with pytest.raises(PluginLoadError, match="time budget"):
        loader.activate("stuck")
    assert engine.hooks["before-course-save"].functions == []


def test_memory_bombs_fail_in_the_worker(engine):
    make_plugin(engine.root, "greedy", '''
def activate(api):
    @api.hooks["content-transform"].add
    def grab(course, *context):
        hoard = []
        while True:
            hoard.append("x" * 10_000_000)
''', hooks=("content-transform",))
    loader = engine()
    plugin = loader.activate("greedy")
    assert engine.hooks.run_sync("content-transform", {"a": 1}) == {"a": 1}
    assert health.failures(plugin.id) == 1


# -- the Platform API is checked in the host ------------------------------------------------------


def test_api_calls_are_permission_checked_in_the_host(engine):
    make_plugin(engine.root, "nosy", '''
results = {}


def activate(api):
    for name, call in (
        ("storage", lambda: api.storage.get_sync("x")),
        ("users", lambda: api.users.get_current_sync()),
        ("hook", lambda: api.hooks["before-quiz-save"]),
        ("event", lambda: api.events.subscribe("user.*", lambda event: None)),
        ("advice", lambda: api.advice.before("course_service.create_course")),
    ):
        try:
            call()
            results[name] = "allowed"
        except PermissionError as exc:
            results[name] = type(exc).__name__
    api.emit("nosy.results", results)
''', hooks=("before-course-save",), events=("course.*",))
    seen = []
    engine.bus.subscribe("nosy.*", seen.append)
    loader = engine()
    loader.activate("nosy")
    from course_plugins.api.platform_api import emitter

    emitter.flush()
    assert seen[0].data == dict.fromkeys(("storage", "users", "hook", "event", "advice"),
                                         "PluginPermissionError")


def test_a_forged_request_from_a_compromised_worker_is_refused(engine):
    make_plugin(engine.root, "plain", "def activate(api):\n    pass\n")
    loader = engine()
    plugin = loader.activate("plain")
    host = plugin._importer
    with pytest.raises(PluginPermissionError):
        host._serve({"op": "api", "p": "storage.set_sync", "a": ["k", 1], "k": {}})
    for path in ("_hooks.add", "services.config_store.load", "log.manager"):
        with pytest.raises(AttributeError):
            host._serve({"op": "api", "p": path, "a": [], "k": {}})
    with pytest.raises(Exception, match="lent for one call only"):
        host._serve({"op": "obj.get", "r": 1, "n": "x", "a": [], "k": {}})


class Record:
    def __init__(self) -> None:
        self.title = "T"
        self.secret_method = lambda: HOST_SECRET
        self._private = HOST_SECRET
        self.META = {"SECRET_KEY": HOST_SECRET}  # a request's environment, say
        self.api_token = HOST_SECRET
        self.settings = [HOST_SECRET]


@dataclasses.dataclass
class Lesson:
    title: str
    tags: list[str]


def test_host_objects_cross_as_proxies_of_their_plain_fields(engine):
    make_plugin(engine.root, "fields", ATTEMPT + '''
def activate(api):
    @api.hooks["after-course-save"].add
    def touch(record, created):
        record.title = record.title + "!"
        out = {}
        for name in ("secret_method", "_private", "nope", "META", "api_token", "settings",
                     "__class__", "__dict__"):
            out[name] = attempt(lambda: getattr(record, name))
        out["write"] = attempt(lambda: setattr(record, "injected", "x"))
        out["tags"] = attempt(lambda: record.tags)
        return out
''', hooks=("after-course-save",))
    loader = engine()
    loader.activate("fields")
    record = Record()
    [out] = engine.hooks.run_sync("after-course-save", record, True)
    assert record.title == "T!"
    assert HOST_SECRET not in repr(out)
    assert not hasattr(record, "injected")
    assert all(not value.startswith("ok") for value in out.values()), out
    # A dataclass crosses with its declared fields, containers included.
    lesson = Lesson("L", ["a"])
    [out] = engine.hooks.run_sync("after-course-save", lesson, True)
    assert lesson.title == "L!" and out["tags"] == "ok: ['a']"


def test_around_advice_calls_the_original_back_in_the_host(engine):
    from course_plugins.core.advice import advisable

    make_plugin(engine.root, "timer", '''
import time

calls = []


def activate(api):
    @api.advice.around("isolation_tests.double")
    def with_timing(original_func, *args, **kwargs):
        start = time.time()
        result = original_func(*args, **kwargs)
        calls.append(time.time() - start)
        return result + 1

    @api.advice.after("isolation_tests.double")
    def add_metadata(result, value):
        return result * 10
''', permissions=("advice",))

    @advisable("isolation_tests.double")
    def double(value: int) -> int:
        return value * 2

    loader = engine()
    loader.activate("timer")
    try:
        assert double(4) in ((4 * 2 + 1) * 10, 4 * 2 * 10 + 1)
    finally:
        loader.deactivate("timer")
    assert double(4) == 8


def test_async_handlers_and_hook_functions_run_in_the_worker_loop(engine):
    make_plugin(engine.root, "asyncy", '''
import asyncio


def activate(api):
    @api.hooks["before-course-save"].add
    async def slow_title(course):
        await asyncio.sleep(0.01)
        course["title"] = course["title"].upper()
        return course

    @api.events.subscribe("course.created")
    async def on_created(event):
        await api.storage.set("last", event.data["name"])
''', hooks=("before-course-save",), events=("course.*",), permissions=("storage",))
    loader = engine()
    plugin = loader.activate("asyncy")
    assert engine.hooks.run_sync("before-course-save", {"title": "py"}) == {"title": "PY"}
    engine.bus.publish_sync(Event("course.created", {"name": "intro"}))
    assert plugin.api.storage.get_sync("last") == "intro"


def test_the_seed_quick_start_plugin_runs_isolated(engine, fixture_plugins, caplog):
    caplog.set_level("INFO", logger="course_plugins.plugins.my-plugin")
    hooks, bus = HookManager(), EventBus()
    loader = PluginLoader([fixture_plugins / "my-plugin"], hooks=hooks, bus=bus)
    try:
        loader.discover_all()
        plugin = loader.activate("my-plugin")
        assert plugin.isolated
        assert hooks.run_sync("before-course-save", {"title": "T"}) == {"title": "T"}
        with pytest.raises(ValueError, match="Course must have a title"):
            hooks.run_sync("before-course-save", {"title": ""})
        bus.publish_sync(Event("course.created", {"name": "Intro"}))
        assert "Course created: Intro" in caplog.text
    finally:
        loader.close()
    assert "My plugin deactivated" in caplog.text


def test_a_plugin_flooding_the_host_with_api_calls_is_still_stopped_at_its_budget(engine):
    make_plugin(engine.root, "chatty", '''
def activate(api):
    @api.hooks["content-transform"].add
    def chatter(body, *context):
        while True:
            api.log.debug("still here")
''', hooks=("content-transform",), timeout=0.5)
    loader = engine()
    plugin = loader.activate("chatty")
    started = time.monotonic()
    assert engine.hooks.run_sync("content-transform", "text") == "text"
    # Unbounded if serving its API calls extended its deadline; 0.5 s plus a kill otherwise.
    assert time.monotonic() - started < 30
    assert health.failures(plugin.id) == 1


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_host_starts_its_own_worker_and_leaves_its_parents_alone(engine):
    make_plugin(engine.root, "forky", '''
calls = []


def activate(api):
    @api.hooks["content-transform"].add
    def tag(body, *context):
        calls.append(body)
        return body + "!"
''', hooks=("content-transform",))
    loader = engine()
    plugin = loader.activate("forky")
    parent_worker = plugin._importer.pid
    assert engine.hooks.run_sync("content-transform", "a") == "a!"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own worker, activated again
        try:
            ok = engine.hooks.run_sync("content-transform", "b") == "b!"
            ok = ok and plugin._importer.pid not in (None, parent_worker)
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert plugin._importer.pid == parent_worker
    assert engine.hooks.run_sync("content-transform", "c") == "c!"
    assert plugin.module.calls == ["a", "c"]  # the child's call went to its own worker


def test_refusals_inside_the_worker_reach_the_host_audit_trail(engine, caplog):
    make_plugin(engine.root, "prying", '''
def activate(api):
    try:
        getattr(api, "_" + "worker")
    except Exception:
        pass
''')
    loader = engine()
    with caplog.at_level("WARNING", logger="course_plugins.security"):
        loader.activate("prying")
    assert any(
        r.name == "course_plugins.security" and "prying@1.0.0" in r.getMessage()
        and "_worker" in r.getMessage()
        for r in caplog.records
    ), caplog.text


def test_calls_without_a_needed_result_are_one_way_and_their_errors_reach_the_plugin_log(
    engine, caplog
):
    make_plugin(engine.root, "quiet", '''
def activate(api):
    @api.hooks["before-course-save"].add
    def tidy(course):
        # An invalid event name: the error is logged, not raised (no reply awaited).
        outcome = api.emit("Not An Event Name!")
        api.log.info("emitted: %r", outcome)
        api.emit("quiet.saved", {"title": course["title"]})
        return {**course, "title": course["title"].strip()}
''', hooks=("before-course-save",))
    seen = []
    engine.bus.subscribe("quiet.*", seen.append)
    loader = engine()
    plugin = loader.activate("quiet")
    with caplog.at_level("INFO", logger="course_plugins.plugins.quiet"):
        assert engine.hooks.run_sync("before-course-save", {"title": " T "}) == {"title": "T"}
    # Done by the host, in order, before the call returned.
    messages = [r.getMessage() for r in caplog.records if r.name.endswith(".quiet")]
    assert any("api.emit failed: PlatformAPIError" in m for m in messages), messages
    assert "emitted: None" in messages
    from course_plugins.api.platform_api import emitter

    emitter.flush()
    assert [e.data for e in seen] == [{"title": " T "}]
    # A worker cannot send anything else one-way.
    failed: list[Any] = []
    endpoint = plugin._importer.endpoint
    endpoint.one_way_failed, keep = (lambda request, exc: failed.append(exc)), (
        endpoint.one_way_failed
    )
    try:
        endpoint.serve_one_way({"op": "api", "p": "storage.set_sync", "a": ["k", 1], "k": {}})
    finally:
        endpoint.one_way_failed = keep
    assert [type(e) for e in failed] == [ValueError]


COUNTER = '''
calls = []


def activate(api):
    @api.hooks["before-course-save"].add
    def count(course):
        def add(n):
            calls.append(n)
            return {"n": n["n"] + 1}

        return {**course, "n": api.storage.update_sync("c", add, {"n": 0})["n"]}
'''


def test_storage_update_is_one_round_trip_and_stays_atomic_when_the_value_changed(engine):
    make_plugin(engine.root, "counter", COUNTER, hooks=("before-course-save",),
                permissions=("storage",))
    loader = engine()
    plugin = loader.activate("counter")
    run = lambda: engine.hooks.run_sync("before-course-save", {})["n"]  # noqa: E731
    assert [run(), run()] == [1, 2]
    plugin.api.storage.set_sync("c", {"n": 10})  # another process, say, wrote meanwhile
    assert run() == 11
    # The worker's function saw the stale value once, then the current one; only that counted.
    assert [c["n"] for c in plugin.module.calls] == [0, 1, 2, 10]


def test_storage_updates_of_two_workers_at_once_lose_nothing(tmp_path: Path):
    import threading

    make_plugin(tmp_path, "counter", COUNTER, hooks=("before-course-save",),
                permissions=("storage",))
    factory = default_api_factory(Services.in_memory())
    loaders = [PluginLoader([tmp_path], hooks=HookManager(), bus=EventBus(), api_factory=factory)
               for _ in range(2)]
    try:
        for loader in loaders:
            loader.discover_all()
            loader.activate("counter")

        def hammer(loader: PluginLoader) -> None:
            for _ in range(60):
                loader.hooks.run_sync("before-course-save", {})

        threads = [threading.Thread(target=hammer, args=(loader,)) for loader in loaders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert loaders[0].get("counter").api.storage.get_sync("c") == {"n": 120}
    finally:
        for loader in loaders:
            loader.close()


def test_a_worker_reads_the_settings_in_force_at_each_call(engine):
    """Site settings changed in the host, and an organization's own, reach the worker's
    ``api.config`` with the next call (the worker's copy is refreshed only when they change)."""
    from course_plugins.core.scope import Scope, entered

    folder = make_plugin(engine.root, "tuned", """
        def activate(api):
            @api.hooks["before-course-save"].add
            def mark(course):
                course["level"] = api.config.get("level")
                return course
    """, hooks=("before-course-save",))
    manifest = folder / "plugin.yaml"
    manifest.write_text(manifest.read_text()
                        + "settings_schema:\n  level:\n    type: integer\n    default: 1\n")
    loader = engine()
    plugin = loader.activate("tuned")
    assert plugin.isolated

    def level() -> int:
        return int(engine.hooks.run_sync("before-course-save", {})["level"])

    assert level() == level() == 1
    plugin.api.config.update({"level": 2})
    assert level() == 2
    with entered(Scope.of(7, settings={"tuned": {"level": 9}})):
        assert level() == 9
    with entered(Scope.of(8)):
        assert level() == 2
    assert level() == 2
    plugin.api.config.reload()
    assert level() == 2


def test_functions_returned_to_the_site_do_not_pile_up_in_it(engine):
    from course_plugins.core.isolation import host as host_module

    make_plugin(engine.root, "maker", """
        def activate(api):
            @api.hooks["after-course-save"].add
            def make(record, created):
                return lambda: record  # a new function every call
    """, hooks=("after-course-save",))
    loader = engine()
    handle = loader.activate("maker")._importer
    kept = []
    for n in range(host_module.MAX_LOOSE + 40):
        [fn] = engine.hooks.run_sync("after-course-save", {"n": n}, True)
        kept.append(fn)
    assert len(handle.proxies) <= host_module.MAX_LOOSE + 5
    assert kept[0]() == {"n": 0} and kept[-1]() == {"n": host_module.MAX_LOOSE + 39}


def test_tasks_a_call_leaves_running_are_cancelled_when_it_ends(engine, caplog):
    make_plugin(engine.root, "spawner", """
        import asyncio

        ticks = []

        def activate(api):
            @api.events.subscribe("spawn.go")
            async def go(event):
                async def forever():
                    while True:
                        ticks.append(1)
                        await asyncio.sleep(0)

                asyncio.create_task(forever())
                await asyncio.sleep(0)

            @api.events.subscribe("spawn.count")
            async def count(event):
                await asyncio.sleep(0.01)
                api.emit("spawn.ticks", {"n": len(ticks)})
    """, events=("spawn.*",))
    loader = engine()
    loader.activate("spawner")
    seen = []
    engine.bus.subscribe("spawn.ticks", seen.append)
    engine.bus.publish_sync(Event("spawn.go"))
    engine.bus.publish_sync(Event("spawn.count"))
    from course_plugins.api.platform_api import emitter

    emitter.flush()
    assert seen and seen[0].data["n"] <= 2  # it did not run on during the next call
    assert "were cancelled" in caplog.text


def test_a_filter_that_lets_its_data_through_gives_the_caller_its_own_object(engine):
    # The worker answers "the same as argument i" when a function returns an argument
    # unchanged: the caller gets its own object back (as from the function run in-process),
    # and anything changed, moved or made of other types crosses back as data.
    make_plugin(engine.root, "passer", '''
import datetime

def activate(api):
    @api.hooks["before-course-save"].add
    def check(course):
        mode = course.get("mode")
        if mode == "change":
            course["title"] += "!"
        elif mode == "reorder":
            course["title"] = course.pop("title")
        elif mode == "nested":
            return course["tags"]
        elif mode == "copy":
            return dict(course)
        elif mode == "date":
            course["when"] = datetime.date(2026, 1, 2)
        return course
''', hooks=("before-course-save",))
    loader = engine()
    loader.activate("passer")

    def run(course: dict[str, Any]) -> Any:
        return engine.hooks.run_sync("before-course-save", course)

    same = {"title": "T", "tags": ["a", "b"], "price": 1.5, "n": None, "mode": "keep"}
    assert run(same) is same and same == {"title": "T", "tags": ["a", "b"], "price": 1.5,
                                          "n": None, "mode": "keep"}
    changed = {"title": "T", "mode": "change"}
    result = run(changed)
    assert result is not changed and result == {"title": "T!", "mode": "change"}
    assert changed == {"title": "T", "mode": "change"}  # the caller's own dict is untouched
    reordered = {"title": "T", "mode": "reorder"}
    result = run(reordered)
    assert result is not reordered and list(result) == ["mode", "title"]
    nested = {"title": "T", "tags": ["a"], "mode": "nested"}
    assert run(nested) == ["a"]
    copied = {"title": "T", "mode": "copy"}
    result = run(copied)
    assert result == copied and result is not copied
    dated = {"title": "T", "mode": "date", "at": datetime.datetime(2026, 1, 2, 3, 4)}
    result = run(dated)
    assert result is not dated and result["when"] == datetime.date(2026, 1, 2)
    assert result["at"] == datetime.datetime(2026, 1, 2, 3, 4)
