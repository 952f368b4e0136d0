"""A hostile trusted plugin against the engine's own bookkeeping: objects whose ``__hash__``,
``__eq__``, ``__str__`` or properties run the plugin's code when the engine looks at them.

The engine may run a plugin's code only where the plugin's budget covers it: never with one of
its locks held, never in the watchdog's thread, never after the call ended (while logging its
failure). Each test fails on the code before its fix: the host thread stayed stuck, a lock held.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from plugin_factory import write_plugin

from course_plugins.api.platform_api import Services, default_api_factory
from course_plugins.core import watchdog
from course_plugins.core.event_bus import Event, EventBus
from course_plugins.core.hook_manager import HookManager
from course_plugins.core.options import options
from course_plugins.core.plugin_loader import PluginLoader

pytestmark = pytest.mark.usefixtures("engine_state")


@pytest.fixture
def trusted(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``trusted(name, code, manifest)``: the plugin loaded trusted and active on a fresh
    engine; returns ``(loader, hooks, bus)``."""
    loaders: list[PluginLoader] = []

    def load(name: str, code: str, manifest: str) -> tuple[PluginLoader, HookManager, EventBus]:
        write_plugin(tmp_path, name, code, manifest)
        hooks, bus = HookManager(), EventBus()
        loader = PluginLoader(
            [tmp_path], hooks=hooks, bus=bus,
            api_factory=default_api_factory(Services.in_memory()), trusted=True,
        )
        loaders.append(loader)
        loader.discover_all()
        loader.activate(name)
        return loader, hooks, bus

    yield load
    for loader in loaders:
        loader.close()


def finishes(fn: Callable[[], Any], seconds: float = 5.0) -> bool:
    """Whether ``fn()`` returns (or raises) within ``seconds`` in another thread."""
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def test_a_handlers_hash_never_runs_under_the_buses_lock(trusted):
    # The bus indexed handlers by the objects themselves: every publish that rebuilt its
    # snapshot called the plugin's __hash__ with the bus's lock held, outside any budget, and
    # every other thread publishing or subscribing waited for it for ever.
    loader, hooks, bus = trusted("hashy", '''
class Handler:
    spin = False

    def __call__(self, event):
        return None

    def __hash__(self):
        while Handler.spin:
            pass
        return 1

    def __eq__(self, other):
        while Handler.spin:
            pass
        return True


def activate(api):
    api.events.subscribe("course.*", Handler())
    Handler.spin = True
''', "events: ['course.*']\ntimeout_seconds: 0.2\n")
    assert finishes(lambda: bus.publish_sync(Event("course.created", {})))
    assert finishes(lambda: bus.subscribe("course.*", lambda event: None))
    loader.deactivate("hashy")
    assert bus.subscriptions() != [] and all(s.owner is None for s in bus.subscriptions())


def test_the_watchdog_never_looks_at_a_plugins_callable(trusted):
    # The watchdog's thread read the plugin's callable when its budget ran out (to find its
    # code): a property named ``func`` ran the plugin's loop there, and no budget of the
    # process was enforced again.
    loader, hooks, bus = trusted("sly", '''
class Step:
    armed = False

    @property
    def func(self):
        while Step.armed:
            pass
        return None

    def __call__(self, body, *context):
        while True:
            pass


def activate(api):
    api.hooks["content-transform"].add(Step())
    Step.armed = True
''', "hooks: [content-transform]\ntimeout_seconds: 0.2\n")
    for _ in range(6):  # past the first runs: the generated run and its RunGuard
        assert finishes(lambda: hooks.run_sync("content-transform", "x"))
    # Budgets still work for everyone else.
    with pytest.raises(watchdog.TimeBudgetExceeded), watchdog.time_limit(0.05):
        while True:
            pass


def test_a_str_subclass_name_cannot_pass_the_manifest_as_one_hook_and_reach_another(trusted):
    # ``name in manifest.hooks`` ran the name's own __eq__, then the engine looked the same
    # object up by its own __hash__: a plugin listing content-transform added a function to
    # before-course-save.
    loader, hooks, bus = trusted("alias", '''
refused = []


class Name(str):
    def __eq__(self, other):
        return True

    def __hash__(self):
        return hash("before-course-save")


def activate(api):
    try:
        api.hooks[Name("content-transform")].add(lambda course: course)
    except Exception as exc:
        refused.append(type(exc).__name__)
''', "hooks: [content-transform]\n")
    assert hooks["before-course-save"].functions == []
    assert loader.get("alias").module.refused == ["PluginPermissionError"]


LOUD_ERRORS = '''
class Boom(Exception):
    def __str__(self):
        while True:
            pass


class Key:
    calls = 0

    def __repr__(self):
        Key.calls += 1
        while Key.calls > 1:  # fine when first read, loops when read again
            pass
        return "key"


def activate(api):
    @api.hooks["after-course-save"].add
    def loud(course, created):
        raise Boom()

    @api.hooks["content-transform"].add
    def lookup(body, *context):
        try:
            raise ValueError("plain")
        except ValueError:
            raise KeyError(Key()) from None
'''


def test_a_plugins_exception_is_logged_without_running_its_code_after_the_call(
    trusted, caplog
):
    # Logging a failure ran the exception's __str__ (and its arguments' __repr__) after the
    # plugin's call had ended: outside its budget, inside the logging handler's lock. A
    # __str__ that loops kept the host's thread, and every thread that logged, waiting for ever.
    from course_plugins.core.health import health

    loader, hooks, bus = trusted(
        "loud", LOUD_ERRORS, "hooks: [after-course-save, content-transform]\n"
        "timeout_seconds: 0.2\n"
    )
    with caplog.at_level("ERROR", logger="course_plugins"):
        assert finishes(lambda: hooks.run_sync("after-course-save", {"title": "t"}, True))
        assert finishes(lambda: hooks.run_sync("content-transform", "x"))
    assert "PluginRaised: Boom: (reading its text ran over the time budget)" in caplog.text
    assert "PluginRaised: KeyError: key" in caplog.text
    assert health.failures("loud@1.0.0") == 2
    assert finishes(lambda: logging.getLogger("course_plugins.plugins.x").error("still logging"))


def test_a_plugin_whose_activate_raises_such_an_exception_fails_to_load_in_time(tmp_path):
    write_plugin(tmp_path, "stuck", '''
class Boom(Exception):
    def __str__(self):
        while True:
            pass


def activate(api):
    raise Boom()
''', "timeout_seconds: 0.2\n")
    options.hook_timeout = 0.5  # activate's budget (put back by engine_state)
    loader = PluginLoader([tmp_path], api_factory=default_api_factory(Services.in_memory()),
                          hooks=HookManager(), bus=EventBus(), trusted=True)
    loader.discover_all()
    outcome: list[BaseException] = []

    def activate() -> None:
        try:
            loader.activate("stuck")
        except Exception as exc:
            outcome.append(exc)

    done = finishes(activate, 10.0)
    if done:  # else the loader's lock is held for ever
        loader.close()
    assert done
    assert "activate(api) raised Boom: (reading its text ran over" in str(outcome[0])


def test_recorded_runs_never_run_a_plugins_code_to_compare_or_show_its_values(trusted):
    # The run recorder compared a FILTER's value before and after with ==, showed values with
    # repr() and vetoes with str(): the plugin's __eq__, __repr__ and __str__, run outside its
    # budget, in the hook's run and in whichever thread read the runs (the REST API's).
    from course_plugins.core.runs import RunRecorder

    loader, hooks, bus = trusted("sly", '''
class Sly:
    armed = False

    def __eq__(self, other):
        while Sly.armed:
            pass
        return False

    def __hash__(self):
        return 1

    def __repr__(self):
        while Sly.armed:
            pass
        return "sly"


class No(ValueError):
    def __str__(self):
        while Sly.armed:
            pass
        return "no"


def activate(api):
    @api.hooks["before-course-save"].add
    def swap(course):
        if course.get("title") == "refuse":
            raise No()
        return {**course, "title": Sly(), Sly(): 1}

    Sly.armed = True
''', "hooks: [before-course-save]\ntimeout_seconds: 0.2\n")
    recorder = RunRecorder()
    hooks["before-course-save"].observer = recorder
    for _ in range(6):  # the recorder's loop first, then the generated recorded run
        assert finishes(lambda: hooks.run_sync("before-course-save", {"title": "t"}))

    def refused() -> None:
        with pytest.raises(ValueError):
            hooks.run_sync("before-course-save", {"title": "refuse"})

    assert finishes(refused)
    runs: list[Any] = []
    assert finishes(lambda: runs.extend(recorder.runs("before-course-save")))
    assert runs[0]["outcome"] == "veto" and runs[0]["steps"][0]["message"] == "No"
    assert runs[1]["steps"][0]["changed"] == {"value": [{"title": "t"}, "<dict of 2 items>"]}



def test_an_async_function_that_spins_without_awaiting_is_cut_off_at_its_budget(trusted):
    # asyncio.timeout acts only at an await: an async hook function or event handler looping
    # without one held the engine's event loop thread, and every coroutine waiting on it, for
    # ever.
    from course_plugins.core.health import health

    loader, hooks, bus = trusted("spin", '''
import asyncio


def activate(api):
    @api.hooks["content-transform"].add
    async def spin(body, *context):
        while True:
            pass

    @api.events.subscribe("course.*")
    async def later(event):
        await asyncio.sleep(0)
        while True:
            pass
''', "hooks: [content-transform]\nevents: ['course.*']\ntimeout_seconds: 0.2\n")
    assert finishes(lambda: hooks.run_sync("content-transform", "x"))
    assert finishes(lambda: bus.publish_sync(Event("course.created", {})))
    assert health.failures("spin@1.0.0") == 2


def test_a_trusted_plugins_advice_is_cut_off_at_its_budget(trusted):
    # Advice had no time budget at all: a piece that looped held the advised call of the site
    # (and whatever locks its caller held) for ever.
    from course_plugins.core.advice import advisable
    from course_plugins.core.health import health

    @advisable("redteam_trusted.plus")
    def plus(x: int) -> int:
        return x + 1

    @advisable("redteam_trusted.aplus")
    async def aplus(x: int) -> int:
        return x + 1

    loader, hooks, bus = trusted("adv", '''
def activate(api):
    @api.advice.before("redteam_trusted.plus")
    def spin(*args, **kwargs):
        while True:
            pass

    @api.advice.around("redteam_trusted.plus")
    def spin_after(orig, *args, **kwargs):
        result = orig(*args, **kwargs)
        while True:
            pass

    @api.advice.after("redteam_trusted.aplus")
    async def aspin(result, *args, **kwargs):
        while True:
            pass
''', "permissions: [advice]\ntimeout_seconds: 0.2\n")
    try:
        results: list[int] = []
        assert finishes(lambda: results.append(plus(1)))
        assert finishes(lambda: results.append(asyncio.run(aplus(1))))
        assert results == [2, 2]  # the original's result, the plugin's overruns isolated
        assert health.failures("adv@1.0.0") == 3
        assert health.last_failure("adv@1.0.0").kind == "timeout"
    finally:
        loader.deactivate("adv")


def test_the_original_under_around_advice_is_not_charged_to_the_advising_plugin(trusted):
    # The time the site spent in ``orig`` counted against the advising plugin's budget: a slow
    # original (a database write, another plugin's hooks) made a well-behaved plugin run over
    # as soon as its own code ran again, counted towards quarantine. As for an isolated plugin,
    # only the first call of ``orig`` is the site's time; calling it again is the plugin's.
    import time

    from course_plugins.core.advice import advisable
    from course_plugins.core.health import health

    @advisable("redteam_trusted.slow")
    def slow(x: int) -> int:
        time.sleep(0.5)
        return x + 1

    @advisable("redteam_trusted.aslow")
    async def aslow(x: int) -> int:
        time.sleep(0.3)  # a step that does not suspend, then one that does
        await asyncio.sleep(0.3)
        return x + 1

    @advisable("redteam_trusted.slow_again")
    def slow_again(x: int) -> int:
        time.sleep(0.2)
        return x + 1

    loader, hooks, bus = trusted("wrap", '''
import time


def work():
    end = time.monotonic() + 0.1
    while time.monotonic() < end:
        for _ in range(1000):  # where the budget can interrupt it on Python 3.11 too
            pass


def activate(api):
    @api.advice.around("redteam_trusted.slow")
    def wrap(orig, *args, **kwargs):
        work()
        result = orig(*args, **kwargs)
        work()
        return result * 10

    @api.advice.around("redteam_trusted.aslow")
    async def awrap(orig, *args, **kwargs):
        work()
        result = await orig(*args, **kwargs)
        work()
        return result * 10

    @api.advice.around("redteam_trusted.slow_again")
    def again(orig, *args, **kwargs):
        for _ in range(10):
            result = orig(*args, **kwargs)
            work()
        return result * 10
''', "permissions: [advice]\ntimeout_seconds: 0.4\n")
    try:
        assert slow(1) == 20
        assert asyncio.run(aslow(1)) == 20
        assert health.failures("wrap@1.0.0") == 0
        started = time.monotonic()
        assert slow_again(1) == 2  # overran on its later calls: the original's own result
        assert time.monotonic() - started < 1.5
        assert health.last_failure("wrap@1.0.0").kind == "timeout"
    finally:
        loader.deactivate("wrap")


def test_a_trusted_plugins_log_record_is_text_before_it_leaves_the_plugins_call(trusted):
    # ``api.log`` handed the plugin's objects to logging as they were: a handler that formats
    # later (a buffering MemoryHandler flushed by whichever thread fills it, a listener thread)
    # ran the plugin's __str__ there, outside any budget, holding that thread for ever. The
    # record's text is now made in the plugin's call, under its budget.
    import io
    import logging.handlers
    import time

    sink = io.StringIO()
    later = logging.handlers.MemoryHandler(1000, target=logging.StreamHandler(sink))
    logger = logging.getLogger("course_plugins.plugins.loud")
    logger.addHandler(later)
    flushed = False
    try:
        loader, hooks, bus = trusted("loud", '''
class Loud:
    def __str__(self):
        while True:
            pass


class Quiet:
    def __str__(self):
        return "quiet"


def activate(api):
    @api.hooks["content-transform"].add
    def shout(body, *context):
        api.log.warning("fine %s %d", Quiet(), 3)
        api.log.warning("loud %s", Loud())
        return body + "!"
''', "hooks: [content-transform]\ntimeout_seconds: 0.3\n")
        started = time.monotonic()
        assert hooks.run_sync("content-transform", "x") == "x"  # its overrun, isolated
        assert time.monotonic() - started < 2
        flushed = finishes(later.flush, 3)
        assert flushed, "the site's thread ran the plugin's __str__"
        assert "fine quiet 3" in sink.getvalue()
    finally:
        logger.removeHandler(later)
        if flushed:  # (else its lock is held by the thread stuck in the plugin's code)
            later.close()


def test_a_trusted_plugins_settings_are_stored_as_builtin_values(trusted):
    # A string, number or list setting was kept as the very object the plugin passed to
    # api.config.set: a subclass of str or int whose methods loop, which the site reads later
    # (the admin's settings form, the REST API, other processes' caches) outside any budget.
    loader, hooks, bus = trusted("tuned", '''
class Sticky(str):
    def __str__(self):
        while True:
            pass

    def __len__(self):
        return 2


class Count(int):
    def __index__(self):
        while True:
            pass

    def __repr__(self):
        while True:
            pass


class Key(str):
    def __hash__(self):
        return hash(str(self))

    def __eq__(self, other):
        return str(self) == other


def activate(api):
    api.config.set("greeting", Sticky("hi"))
    api.config.update({Key("count"): Count(3)})
    api.config.set("tags", [Sticky("a"), "b"])
''', "settings_schema:\n  greeting: {type: string}\n  count: {type: integer}\n"
     "  tags: {type: list}\n")
    config = loader.get("tuned").api.config
    values = config.all()
    assert [type(values[k]) for k in ("greeting", "count")] == [str, int]
    assert [type(t) for t in values["tags"]] == [str, str]
    assert all(type(k) is str for k in config._values())  # the names too
    assert finishes(lambda: (str(values), repr(values)), 3)
    assert values == {"greeting": "hi", "count": 3, "tags": ["a", "b"]}


def test_an_advice_target_must_be_a_str_itself(trusted):
    # Hook and event names had to be ``str`` itself, advice targets not: a subclass whose
    # ``__eq__`` loops was compared under the advice registry's lock, and once kept as the
    # target's name, in every thread that looked the target up (each advised call's).
    from course_plugins.core.advice import advisable

    @advisable("redteam_trusted.named")
    def named(x: int) -> int:
        return x + 1

    loader, hooks, bus = trusted("target", '''
refused = []


class Name(str):
    def __hash__(self):
        return hash(str(self))

    def __eq__(self, other):
        while True:
            pass


def activate(api):
    try:
        api.advice.before(Name("redteam_trusted.named"))(lambda *a, **k: None)
    except Exception as exc:
        refused.append(type(exc).__name__)
''', "permissions: [advice]\ntimeout_seconds: 0.3\n")
    assert loader.get("target").module.refused == ["AdviceError"]
    assert finishes(lambda: named(1), 3)


def test_a_trusted_plugin_waiting_on_its_own_lock_for_ever_is_cut_off_at_its_budget(trusted):
    # The threading facade handed out the interpreter's own locks: a plugin that waited on one
    # that is never released (its own Lock twice, an Event never set) stayed in one C call for
    # ever, which no budget interrupts. Waits now go in slices, each ending at the budget's
    # checkpoint, as time.sleep does.
    from course_plugins.core.health import health

    loader, hooks, bus = trusted("waits", '''
import threading


def activate(api):
    @api.hooks["content-transform"].add
    def wait(body, *context):
        if body == "lock":
            lock = threading.Lock()
            lock.acquire()
            lock.acquire()
        elif body == "rlock":
            lock = threading.RLock()
            with lock:
                lock.acquire(timeout=0.01)  # re-entrant: got at once
            if not lock.acquire(timeout=0.05):
                raise RuntimeError("free lock not taken")
            lock.release()
            holder = threading.Condition()
            with holder:
                holder.wait()
        elif body == "event":
            threading.Event().wait()
        elif body == "semaphore":
            threading.Semaphore(0).acquire()
        elif body == "bounded":
            threading.BoundedSemaphore(1).acquire()
            threading.BoundedSemaphore(0).acquire(timeout=0.05)
            return "timed out in time"
        elif body == "barrier":
            threading.Barrier(2).wait()
        return body
''', "hooks: [content-transform]\ntimeout_seconds: 0.3\n")
    options.max_failures = 1000
    for kind in ("lock", "rlock", "event", "semaphore", "barrier"):
        box: list[Any] = []
        assert finishes(lambda kind=kind, box=box: box.append(
            hooks.run_sync("content-transform", kind)),
                        5), kind
        assert box == [kind]  # the FILTER keeps its value: the plugin's timeout is isolated
        assert health.last_failure("waits@1.0.0").kind == "timeout", kind
    assert hooks.run_sync("content-transform", "bounded") == "timed out in time"
