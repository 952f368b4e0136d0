"""site.autostart: a process's first hook run or event starts its plugins, once, in any process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from course_plugins.core.event_bus import Event, EventBus
from course_plugins.core.hook_manager import HookManager
from course_plugins.site import autostart


@pytest.fixture
def fresh_engine() -> Iterator[tuple[HookManager, EventBus]]:
    hooks, bus = HookManager(), EventBus()
    old_hooks, old_bus = HookManager.set_instance(hooks), EventBus.set_instance(bus)
    autostart.suspended(False)
    try:
        yield hooks, bus
    finally:
        autostart.disarm()
        autostart.suspended(True)
        HookManager.set_instance(old_hooks)
        EventBus.set_instance(old_bus)


def test_the_first_hook_run_starts_once_then_nothing_is_in_the_way(fresh_engine):
    hooks, bus = fresh_engine
    starts: list[str] = []

    def start() -> bool:
        # The start-up itself uses the engine without starting again.
        hooks["before-course-save"].add(lambda course: {**course, "seen": True})
        starts.append("started")
        return True

    autostart.arm(start)
    assert autostart.armed() and type(hooks) is not HookManager
    assert hooks.run_sync("before-course-save", {"title": "x"}) == {"title": "x", "seen": True}
    assert starts == ["started"]
    assert type(hooks) is HookManager and type(bus) is EventBus and not autostart.armed()
    hooks.run_sync("before-course-save", {"title": "y"})
    bus.publish_sync(Event("course.created", {}))
    assert starts == ["started"]


@pytest.mark.parametrize(
    "first_use",
    [
        pytest.param(lambda hooks, bus: bus.publish_sync(Event("course.viewed", {})), id="event"),
        pytest.param(lambda hooks, bus: hooks["quiz-grade"], id="hook-lookup"),
        pytest.param(lambda hooks, bus: hooks.describe(), id="inspector"),
    ],
)
def test_events_lookups_and_the_inspector_start_too(fresh_engine, first_use):
    hooks, bus = fresh_engine
    starts: list[int] = []
    autostart.arm(lambda: starts.append(1))
    first_use(hooks, bus)
    assert starts == [1]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_the_first_advised_call_starts_and_the_plugins_advice_applies_to_it(
    fresh_engine, is_async
):
    # manage.py shell -c "create_course({'name': 'py'})": the plugins' before-advice must refuse
    # that very first call.
    from course_plugins.core import advice

    name = f"autostart_test.create_{'async' if is_async else 'sync'}"
    if is_async:

        @advice.advisable(name)
        async def create(data):
            return data

    else:

        @advice.advisable(name)
        def create(data):
            return data

    def refuse(data):
        raise ValueError("Name too short")

    starts: list[int] = []

    def start() -> None:
        starts.append(1)
        advice.before_advice(name, refuse, owner="seed-advice@1.0.0")

    autostart.arm(start)
    try:
        with pytest.raises(ValueError, match="Name too short"):
            result = create({"name": "py"})
            if is_async:
                asyncio.run(result)
        assert starts == [1] and not autostart.armed()
        advice.remove_advice(name, refuse)
        result = create({"name": "python"})
        assert (asyncio.run(result) if is_async else result) == {"name": "python"}
        assert starts == [1]
    finally:
        advice.remove_advice(name, refuse)


def test_a_failing_start_never_fails_the_hook_run(fresh_engine, caplog):
    hooks, _ = fresh_engine

    def start() -> None:
        raise RuntimeError("Database access not allowed")

    autostart.arm(start)
    assert hooks.run_sync("after-course-save", {}, True) == []
    assert "Could not start the plugins" in caplog.text
    assert not autostart.armed()  # the next request or task tries again, not every hook run


def test_suspended_arms_nothing(fresh_engine):
    hooks, _ = fresh_engine
    autostart.suspended(True)
    autostart.arm(lambda: pytest.fail("must not start"))
    hooks.run_sync("after-course-save", {}, True)
    assert not autostart.armed()


@pytest.mark.django_db
def test_a_start_by_a_request_is_not_restarted_by_the_plugins_own_hook_registrations(
    fresh_engine, tmp_path, settings
):
    # A request (or task) starts the runtime while the engine is still armed: the plugins'
    # activate(api) registering hook functions must not start everything once more from inside.
    from plugin_factory import write_plugin

    from course_plugins.models import Plugin
    from course_plugins.site import runtime

    write_plugin(
        tmp_path, "hooked",
        "def activate(api):\n"
        "    @api.hooks['before-course-save'].add\n"
        "    def check(course):\n"
        "        return course\n",
        "hooks: [before-course-save]\n",
    )
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(tmp_path)]}
    site = runtime.Runtime(dirs=[str(tmp_path)])
    try:
        site.discover()
        Plugin.objects.filter(name="hooked").update(enabled=True)
        site.reset()
        autostart.arm(site.ensure_started)
        assert site.ensure_started()
        assert site.local_plugin("hooked").state == "active"
        assert len(fresh_engine[0]["before-course-save"]) == 1
        assert not autostart.armed()
    finally:
        site.reset()
