"""core.scheduler: function references shared by all backends; the in-process ThreadScheduler."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path

import pytest

from course_plugins.core.health import health
from course_plugins.core.scheduler import (
    Scheduler,
    ThreadScheduler,
    function_ref,
    resolve_function_ref,
)
from course_plugins.exceptions import ScheduleError
from course_plugins.testing import load_plugin

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"

JOBS = """
import asyncio

signals = {}
runs = {"tick": 0, "async_tick": 0}

def tick():
    runs["tick"] += 1
    if runs["tick"] >= signals["wanted"]:
        signals["done"].set()

async def async_tick():
    await asyncio.sleep(0)
    runs["async_tick"] += 1
    signals["async_done"].set()

def broken():
    signals["broken"].set()
    raise RuntimeError("scheduled job broke")

def spin():
    signals["spin"].set()
    while True:
        pass

def again():
    runs["again"] = runs.get("again", 0) + 1
    signals["scheduler"].schedule(signals["plugin"], again, 1e-9)

def activate(api):
    def nested():
        return None
    signals["nested"] = nested
"""


@pytest.fixture
def jobs(make_plugin):
    folder = make_plugin("jobs", JOBS, "timeout_seconds: 0.2\n")
    # Trusted: the test hands the module threading.Events to wait on.
    with load_plugin(folder, strict=False, trusted=True) as loaded:
        module = loaded.module
        for name in ("done", "async_done", "broken", "spin"):
            module.signals[name] = threading.Event()
        module.signals["wanted"] = 1
        yield loaded


def test_thread_scheduler_implements_the_interface():
    scheduler = ThreadScheduler()
    assert isinstance(scheduler, Scheduler)
    scheduler.close()


def test_function_refs_for_the_package_and_submodules():
    with load_plugin(FIXTURES / "submodules") as loaded:
        plugin, module = loaded.plugin, loaded.module
        assert function_ref(plugin, module.shout) == "helpers.shout.shout"
        assert function_ref(plugin, module.text.tidy) == "text.tidy"
        assert resolve_function_ref(plugin, "helpers.shout.shout") is module.shout
        with pytest.raises(ScheduleError, match="no longer exists"):
            resolve_function_ref(plugin, "text.gone")


def test_function_refs_refuse_what_a_worker_could_not_find(jobs):
    plugin = jobs.plugin
    assert function_ref(plugin, jobs.module.tick) == "tick"
    for fn in (jobs.module.signals["nested"], lambda: None, print, textwrap.dedent):
        with pytest.raises(ScheduleError, match="module level"):
            function_ref(plugin, fn)


def test_one_shot_and_repeating_runs(jobs):
    scheduler, plugin, module = jobs.scheduler, jobs.plugin, jobs.module
    assert scheduler.schedule(plugin, module.async_tick, 0.01) == "jobs:async_tick"
    assert module.signals["async_done"].wait(5)
    module.signals["wanted"] = 3
    scheduler.schedule(plugin, module.tick, 0.01, repeat=True)
    assert module.signals["done"].wait(5)
    assert module.runs["tick"] >= 3
    assert [s["id"] for s in scheduler.scheduled("jobs")] == ["jobs:tick"]
    assert scheduler.cancel_owner("jobs@1.0.0") == 1
    assert scheduler.scheduled() == []


def test_paused_plugins_do_not_fire_until_resumed(jobs):
    scheduler, plugin, module = jobs.scheduler, jobs.plugin, jobs.module
    scheduler.pause_owner("jobs@1.0.0")
    scheduler.schedule(plugin, module.tick, 0.01, repeat=True)
    assert not module.signals["done"].wait(0.2)
    assert module.runs["tick"] == 0
    assert scheduler.scheduled()[0]["paused"] is True
    scheduler.resume_owner("jobs")
    assert module.signals["done"].wait(5)


def test_replacing_and_cancelling(jobs):
    scheduler, plugin, module = jobs.scheduler, jobs.plugin, jobs.module
    scheduler.schedule(plugin, module.tick, 0.05)
    scheduler.schedule(plugin, module.tick, 3600)  # replaces the one due in 50 ms
    assert not module.signals["done"].wait(0.3)
    assert scheduler.cancel("jobs:tick") is True
    assert scheduler.cancel("jobs:tick") is False


def test_failures_and_timeouts_count_against_the_plugin(jobs):
    scheduler, plugin, module = jobs.scheduler, jobs.plugin, jobs.module
    before = health.total_failures(plugin.id)
    scheduler.schedule(plugin, module.broken, 0.01)
    scheduler.schedule(plugin, module.spin, 0.01)
    assert module.signals["broken"].wait(5) and module.signals["spin"].wait(5)
    module.signals["wanted"] = 1
    scheduler.schedule(plugin, module.tick, 0.01)  # runs after spin was interrupted
    assert module.signals["done"].wait(5)
    assert health.total_failures(plugin.id) - before == 2
    assert health.last_failure(plugin.id).kind == "timeout"


def test_bad_delays_and_a_closed_scheduler(jobs):
    scheduler, plugin, module = jobs.scheduler, jobs.plugin, jobs.module
    for delay in (0, -1, float("inf"), True, "1"):
        with pytest.raises(ScheduleError, match="positive number"):
            scheduler.schedule(plugin, module.tick, delay)
    scheduler.close()
    with pytest.raises(ScheduleError, match="closed"):
        scheduler.schedule(plugin, module.tick, 1)


def test_a_plugin_cannot_make_the_scheduler_spin(jobs):
    # Any positive delay was taken: a repeating schedule every 1e-9 s (or a one-shot that
    # schedules itself again) ran the plugin's function back to back for ever, a thread of the
    # site busy and holding the interpreter's lock.
    import time

    from course_plugins.core.scheduler import MIN_REPEAT_SECONDS

    scheduler, plugin, module = jobs.scheduler, jobs.plugin, jobs.module
    for delay in (1e-9, MIN_REPEAT_SECONDS / 2):
        with pytest.raises(ScheduleError, match="jobs@1.0.0.*repeating schedule needs "
                                                "delay_seconds >= 0.01"):
            scheduler.schedule(plugin, module.tick, delay, repeat=True)
    assert scheduler.scheduled() == []
    scheduler.schedule(plugin, module.tick, MIN_REPEAT_SECONDS, repeat=True)
    scheduler.cancel_owner(plugin.id)
    module.signals.update(scheduler=scheduler, plugin=plugin)
    scheduler.schedule(plugin, module.again, 1e-9)
    time.sleep(0.5)
    scheduler.cancel_owner(plugin.id)
    assert 1 < module.runs["again"] <= 0.5 / MIN_REPEAT_SECONDS + 2
