"""PlatformAPI without Django: permissions, hooks/events proxies, config, storage, emit, schedule,
advice. (The Django backends and stores are in test_backends.py; the storage update/increment
tests run on both the in-memory and the database store.)"""

from __future__ import annotations

import asyncio
import threading

import pytest
from plugin_factory import write_plugin

from course_plugins.api.platform_api import Services, emitter
from course_plugins.core import advice
from course_plugins.core.options import options
from course_plugins.core.sandbox.audit import add_audit_sink, remove_audit_sink
from course_plugins.core.worker_threads import release_thread_resources
from course_plugins.exceptions import (
    PlatformAPIError,
    PlatformAPIUnavailable,
    PluginPermissionError,
    PluginSettingsError,
    ScheduleError,
)
from course_plugins.testing import captured_events, load_plugin

KEEP_API = "holder = {}\n\ndef activate(api):\n    holder['api'] = api\n"


@pytest.fixture
def audits():
    seen: list[tuple[str, str, str | None]] = []

    def sink(kind, detail, plugin):
        seen.append((kind, detail, plugin))

    add_audit_sink(sink)
    yield seen
    remove_audit_sink(sink)


# -- hooks and events -----------------------------------------------------------------------------


def test_hooks_not_in_the_manifest_are_refused_and_audited(tmp_path, audits):
    folder = write_plugin(tmp_path, "hooky", KEEP_API, manifest="hooks: [before-course-save]\n")
    with load_plugin(folder) as loaded:
        api = loaded.api
        with pytest.raises(PluginPermissionError) as info:
            api.hooks["after-course-save"].add(lambda course, created: None)
    message = str(info.value)
    assert "hook 'after-course-save' is not listed in `hooks`" in message
    assert str(folder / "plugin.yaml") in message
    assert ("permission", info.value.message, "hooky@1.0.0") in audits


def test_hook_registrations_carry_owner_and_the_lowered_budget(tmp_path):
    folder = write_plugin(
        tmp_path,
        "budget",
        """
        def activate(api):
            api.hooks["before-course-save"].add(lambda course: course, priority=3)
        """,
        "hooks: [before-course-save]\ntimeout_seconds: 0.5\n",
    )
    with load_plugin(folder, trusted=True) as loaded:
        (registration,) = loaded.hooks["before-course-save"].registrations
        assert (registration.owner, registration.timeout, registration.priority) == (
            "budget@1.0.0",
            0.5,
            3,
        )
        assert loaded.api.hook_timeout == 0.5
    # Isolated: the budget is the worker's (it is killed past it); the host thread has none.
    with load_plugin(folder) as loaded:
        (registration,) = loaded.hooks["before-course-save"].registrations
        assert (registration.owner, registration.timeout, registration.priority) == (
            "budget@1.0.0",
            0,
            3,
        )
        assert loaded.api.hook_timeout == 0.5


def test_timeout_seconds_cannot_raise_the_budget(tmp_path):
    folder = write_plugin(tmp_path, "greedy", KEEP_API, manifest="timeout_seconds: 60\n")
    with load_plugin(folder) as loaded:
        assert loaded.api.hook_timeout == options.hook_timeout


def test_custom_hooks_can_be_defined_and_run_by_their_plugin(tmp_path):
    from course_plugins.core.hook_manager import HookType

    folder = write_plugin(
        tmp_path, "definer", KEEP_API, manifest="hooks: ['definer:score', before-course-save]\n"
    )
    with load_plugin(folder) as loaded:
        api = loaded.api
        api.hooks.define("definer:score", HookType.FILTER)
        api.hooks["definer:score"].add(lambda value: value * 2)
        assert api.hooks.run_sync("definer:score", 21) == 42
        assert asyncio.run(api.hooks.run("definer:score", 1)) == 2
        with pytest.raises(PlatformAPIError, match="standard hook"):
            api.hooks.define("before-course-save", HookType.FILTER)
        with pytest.raises(PluginPermissionError):
            api.hooks.run_sync("after-course-save", {}, True)


@pytest.mark.parametrize(
    ("granted", "requested", "allowed"),
    [
        ("['course.*', quiz.submitted]", "course.created", True),
        ("['course.*', quiz.submitted]", "course.*", True),
        ("['course.*', quiz.submitted]", "quiz.submitted", True),
        ("['course.*', quiz.submitted]", "quiz.*", False),
        ("['course.*', quiz.submitted]", "course.**", False),
        ("['**']", "anything.else", True),
        ("[]", "course.created", False),
    ],
)
def test_subscriptions_must_be_covered_by_the_manifest(tmp_path, granted, requested, allowed):
    folder = write_plugin(tmp_path, "listener", KEEP_API, manifest=f"events: {granted}\n")
    with load_plugin(folder) as loaded:

        def handler(event):
            return None

        if allowed:
            assert loaded.api.events.subscribe(requested, handler) is handler
            assert any(s["pattern"] == requested for s in loaded.bus.describe())
        else:
            with pytest.raises(PluginPermissionError, match="not covered by `events`"):
                loaded.api.events.subscribe(requested, handler)


def test_subscribe_decorator_background_flag_and_unsubscribe(tmp_path):
    folder = write_plugin(tmp_path, "bg", KEEP_API, manifest="events: ['course.*']\n")
    with load_plugin(folder) as loaded:
        api = loaded.api

        @api.events.subscribe("course.created", background=True)
        def on_created(event):
            return None

        (sub,) = [s for s in loaded.bus.describe() if s["pattern"] == "course.created"]
        (handler,) = sub["handlers"]
        assert handler["plugin"] == "bg@1.0.0" and handler["background"] is True
        api.events.unsubscribe("course.created", on_created)
        assert not [s for s in loaded.bus.describe() if s["handlers"]]


# -- config -------------------------------------------------------------------------------------

SCHEMA = """
settings_schema:
  my_setting: {type: string, default: value}
  threshold: {type: integer, default: 3, min: 1, max: 10}
  mode: {type: choice, choices: [a, b]}
"""


def test_config_get_set_validated_and_persisted(tmp_path):
    folder = write_plugin(tmp_path, "configured", KEEP_API, manifest=SCHEMA)
    services = Services.in_memory()
    with load_plugin(folder, services=services) as loaded:
        config = loaded.api.config
        assert config.get("my_setting", default="fallback") == "value"
        assert config.get("mode", default="fallback") == "fallback"
        assert config.get("undeclared", default=1) == 1
        assert config.set("threshold", "7") == 7
        assert config.get("threshold") == 7
        assert services.config_store.load("configured") == {"threshold": 7}
        with pytest.raises(PluginSettingsError) as info:
            config.set("threshold", 11)
        assert info.value.errors == {"threshold": "must be at most 10 (got 11)"}
        with pytest.raises(PluginSettingsError, match="not declared in settings_schema"):
            config.set("colour", "red")
        assert config.update({"mode": "b", "my_setting": "x"}) == {
            "my_setting": "x",
            "threshold": 7,
            "mode": "b",
        }
        config.set("threshold", None)
        assert config.get("threshold") == 3
        services.config_store.update("configured", {"threshold": 9})  # another process
        assert config.get("threshold") == 3
        config.reload()
        assert config.get("threshold") == 9


def test_settings_given_to_load_plugin_are_validated(tmp_path):
    folder = write_plugin(tmp_path, "configured", KEEP_API, manifest=SCHEMA)
    with load_plugin(folder, settings={"threshold": "4"}) as loaded:
        assert loaded.api.config.get("threshold") == 4
    with pytest.raises(PluginSettingsError), load_plugin(folder, settings={"threshold": 0}):
        pass


# -- storage --------------------------------------------------------------------------------------


def test_storage_async_and_sync_namespaced_per_plugin(tmp_path):
    services = Services.in_memory()
    a = write_plugin(tmp_path, "store-a", KEEP_API, manifest="permissions: [storage]\n")
    b = write_plugin(tmp_path, "store-b", KEEP_API, manifest="permissions: [storage]\n")
    with load_plugin(a, services=services) as one, load_plugin(b, services=services) as two:

        async def use(storage):
            await storage.set("my_key", {"data": "value"})
            assert await storage.get("my_key") == {"data": "value"}
            assert await storage.get("missing", default=0) == 0
            assert await storage.keys() == ["my_key"]
            assert await storage.delete("my_key") is True
            assert await storage.delete("my_key") is False

        asyncio.run(use(one.api.storage))
        one.api.storage.set_sync("shared", [1, 2])
        assert two.api.storage.get_sync("shared") is None
        two.api.storage.set_sync("shared", (3,))
        assert one.api.storage.get_sync("shared") == [1, 2]
        assert two.api.storage.get_sync("shared") == [3]  # stored as JSON: a tuple becomes a list
        value = one.api.storage.get_sync("shared")
        value.append(99)
        assert one.api.storage.get_sync("shared") == [1, 2]
        assert one.api.storage.keys_sync() == ["shared"]


@pytest.mark.parametrize("value", [{1, 2}, object(), float("nan"), {"when": threading}])
def test_storage_refuses_non_json_values_clearly(tmp_path, value):
    folder = write_plugin(tmp_path, "jsonly", KEEP_API, manifest="permissions: [storage]\n")
    with load_plugin(folder) as loaded:
        with pytest.raises(PlatformAPIError, match="is not JSON data") as info:
            loaded.api.storage.set_sync("k", value)
        assert "store dicts, lists, strings" in str(info.value)
        with pytest.raises(PlatformAPIError, match="keys are strings"):
            loaded.api.storage.set_sync("", 1)


def test_storage_survives_reload(tmp_path):
    folder = write_plugin(tmp_path, "keeper", KEEP_API, manifest="permissions: [storage]\n")
    with load_plugin(folder) as loaded:
        loaded.api.storage.set_sync("count", 1)
        loaded.reload()
        assert loaded.api.storage.get_sync("count") == 1


def test_sync_storage_works_inside_a_running_event_loop(tmp_path):
    folder = write_plugin(tmp_path, "looped", KEEP_API, manifest="permissions: [storage]\n")
    with load_plugin(folder) as loaded:

        async def inside():
            loaded.api.storage.set_sync("k", "v")
            return loaded.api.storage.get_sync("k")

        assert asyncio.run(inside()) == "v"


@pytest.fixture(
    params=["memory", pytest.param("django", marks=pytest.mark.django_db(transaction=True))]
)
def storage_services(request):
    """Services over the in-memory store, then over the database store (real test database)."""
    return Services.in_memory() if request.param == "memory" else Services.django()


def test_storage_update_applies_the_function_to_the_value_or_default(tmp_path, storage_services):
    folder = write_plugin(tmp_path, "tally", KEEP_API, manifest="permissions: [storage]\n")
    with load_plugin(folder, services=storage_services) as loaded:
        storage = loaded.api.storage
        default: dict[str, int] = {}

        def bump(seen):
            seen["a"] = seen.get("a", 0) + 1  # mutating what it got is fine: it is a copy
            return seen

        assert storage.update_sync("counts", bump, default=default) == {"a": 1}
        assert storage.update_sync("counts", bump, default=default) == {"a": 2}
        assert default == {}
        assert asyncio.run(storage.update("counts", bump)) == {"a": 3}
        assert storage.get_sync("counts") == {"a": 3}
        assert storage.update_sync("fresh", lambda v: [v]) == [None]  # default defaults to None
        storage.set_sync("stored-none", None)
        assert storage.update_sync("stored-none", lambda v: [v], default=5) == [None]
        assert storage.update_sync("tuple", lambda v: (v, 1), default=0) == [0, 1]  # JSON


def test_storage_increment_counts_numbers(tmp_path, storage_services):
    folder = write_plugin(tmp_path, "counter", KEEP_API, manifest="permissions: [storage]\n")
    with load_plugin(folder, services=storage_services) as loaded:
        storage = loaded.api.storage
        assert storage.increment_sync("n") == 1
        assert storage.increment_sync("n", 2) == 3
        assert asyncio.run(storage.increment("n", -1.5)) == 1.5
        assert storage.get_sync("n") == 1.5
        storage.set_sync("word", "seven")
        with pytest.raises(PlatformAPIError, match="'word': the stored value 'seven' is not a"):
            storage.increment_sync("word")
        assert storage.get_sync("word") == "seven"
        for amount in ("1", True, None):
            with pytest.raises(PlatformAPIError, match="needs a number to add"):
                storage.increment_sync("n", amount)
        assert storage.get_sync("n") == 1.5


def test_storage_update_writes_nothing_when_the_function_fails(tmp_path, storage_services):
    folder = write_plugin(tmp_path, "careful", KEEP_API, manifest="permissions: [storage]\n")
    with load_plugin(folder, services=storage_services) as loaded:
        storage = loaded.api.storage
        storage.set_sync("kept", {"v": 1})

        def fail(value):
            raise ValueError(f"no thanks: {value}")

        with pytest.raises(ValueError, match="no thanks: {'v': 1}"):
            storage.update_sync("kept", fail)
        with pytest.raises(ValueError, match="no thanks: 0"):
            asyncio.run(storage.update("missing", fail, default=0))
        with pytest.raises(PlatformAPIError, match="'kept' is not JSON data"):
            storage.update_sync("kept", lambda v: {1, 2})
        with pytest.raises(PlatformAPIError, match="needs a function"):
            storage.update_sync("kept", "not callable")

        async def later(value):
            return value

        with pytest.raises(PlatformAPIError, match="pass a plain .not async. function"):
            storage.update_sync("kept", later)
        assert storage.get_sync("kept") == {"v": 1}
        assert storage.keys_sync() == ["kept"]  # the missing key was not created
        assert storage.update_sync("kept", lambda v: {"v": v["v"] + 1}) == {"v": 2}


def test_storage_update_function_runs_under_the_plugin_budget(tmp_path):
    from course_plugins.core.watchdog import TimeBudgetExceeded

    folder = write_plugin(
        tmp_path, "spinner", KEEP_API, manifest="permissions: [storage]\ntimeout_seconds: 0.2\n"
    )
    # Trusted: the budget applies in this process (an isolated plugin's worker keeps its own).
    with load_plugin(folder, trusted=True) as loaded:

        def spin(value):
            while True:
                pass

        with pytest.raises(TimeBudgetExceeded):
            loaded.api.storage.update_sync("k", spin, default=1)
        assert loaded.api.storage.keys_sync() == []


def test_storage_increments_from_threads_lose_nothing(tmp_path, storage_services):
    folder = write_plugin(tmp_path, "busy", KEEP_API, manifest="permissions: [storage]\n")
    with load_plugin(folder, services=storage_services) as loaded:
        storage = loaded.api.storage

        def count():
            try:
                for _ in range(25):
                    storage.increment_sync("n")
            finally:
                release_thread_resources()  # this thread's database connection

        threads = [threading.Thread(target=count) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert storage.get_sync("n") == 100


# -- permissions and backends ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "call"),
    [
        ("storage", lambda api: api.storage.get_sync("k")),
        ("users", lambda api: asyncio.run(api.users.get_current())),
        ("courses", lambda api: asyncio.run(api.courses.get(1))),
        ("notify", lambda api: asyncio.run(api.notify.send_to_user(1, "Title", "Message"))),
        ("analytics", lambda api: api.analytics.track_event_sync("custom_event", {})),
        ("schedule", lambda api: api.schedule(print, delay_seconds=60)),
        ("advice", lambda api: api.advice.before("x.y", lambda: None)),
    ],
)
def test_parts_not_granted_are_refused_naming_the_permission(tmp_path, audits, part, call):
    folder = write_plugin(tmp_path, "modest", KEEP_API)
    with load_plugin(folder) as loaded, pytest.raises(PluginPermissionError) as info:
        call(loaded.api)
    assert f"add '{part}' to `permissions` in {folder / 'plugin.yaml'}" in str(info.value)
    assert audits[-1][0] == "permission" and audits[-1][2] == "modest@1.0.0"


def test_backends_need_django(tmp_path):
    folder = write_plugin(tmp_path, "wishful", KEEP_API, manifest="permissions: [users, notify]\n")
    with load_plugin(folder) as loaded:
        with pytest.raises(PlatformAPIUnavailable, match="run the plugin in a Django site"):
            asyncio.run(loaded.api.users.get_current())
        with pytest.raises(PlatformAPIUnavailable, match="api.notify needs a backend"):
            loaded.api.notify.send_email_sync("a@example.com", "S", "B")


# -- emit -----------------------------------------------------------------------------------------


def test_emit_is_fire_and_forget_from_sync_and_async_code(tmp_path):
    folder = write_plugin(tmp_path, "emitter", KEEP_API, manifest="events: ['emitter.**']\n")
    with load_plugin(folder) as loaded, captured_events(loaded.bus, "emitter.**") as events:
        future = loaded.api.emit("emitter.custom-event", {"data": "value"})

        async def from_async():
            loaded.api.emit("emitter.from-async", {"n": 1})

        asyncio.run(from_async())
        future.result(5)
        loaded.flush()
    assert sorted(e.name for e in events) == ["emitter.custom-event", "emitter.from-async"]
    assert {e.source for e in events} == {"emitter@1.0.0"}
    assert next(e for e in events if e.name == "emitter.custom-event").data == {"data": "value"}


def test_emit_does_not_wait_for_slow_handlers(tmp_path):
    folder = write_plugin(tmp_path, "quick", KEEP_API, manifest="events: ['quick.*']\n")
    release = threading.Event()
    with load_plugin(folder, strict=False) as loaded:
        loaded.bus.subscribe("quick.done", lambda event: release.wait(5))
        future = loaded.api.emit("quick.done")
        assert not future.done()
        release.set()
        future.result(5)


def test_emit_refuses_invalid_names(tmp_path):
    with load_plugin(write_plugin(tmp_path, "sloppy", KEEP_API)) as loaded:
        with pytest.raises(PlatformAPIError, match="cannot contain wildcards"):
            loaded.api.emit("sloppy.*")
        with pytest.raises(PlatformAPIError, match="not a valid event name"):
            loaded.api.emit("sloppy..x")


# -- schedule -------------------------------------------------------------------------------------

SCHEDULED = """
import threading
done = None
calls = []

def tick():
    calls.append(1)
    done.set()

def activate(api):
    global API
    API = api
"""


def test_schedule_runs_module_level_functions_and_replaces_by_function(tmp_path):
    folder = write_plugin(tmp_path, "ticker", SCHEDULED, "permissions: [schedule]\n")
    with load_plugin(folder, trusted=True) as loaded:  # hands the module a threading.Event
        module = loaded.module
        module.done = threading.Event()
        api = loaded.api
        first = api.schedule(module.tick, delay_seconds=3600, repeat=True)
        again = api.schedule(module.tick, delay_seconds=0.05)
        assert first == again == "ticker:tick"
        (only,) = loaded.scheduler.scheduled("ticker@1.0.0")
        assert only["repeat"] is False
        assert module.done.wait(5)
        assert module.calls == [1]
        assert api.cancel_schedule("ticker:tick") is False  # a one-shot is gone once run
        api.schedule(module.tick, delay_seconds=3600)
        assert api.cancel_schedule("ticker:tick") is True
        with pytest.raises(ScheduleError, match="not a schedule of this plugin"):
            api.cancel_schedule("other:tick")


@pytest.mark.parametrize(
    ("fn", "delay", "message"),
    [
        (lambda: None, 1, "define it with `def` at module level"),
        (print, 1, "define it with `def` at module level"),
        ("tick", 0, "positive number"),
        ("tick", "soon", "positive number"),
    ],
)
def test_schedule_refuses_what_cannot_be_found_again(tmp_path, fn, delay, message):
    folder = write_plugin(tmp_path, "picky", SCHEDULED, "permissions: [schedule]\n")
    with load_plugin(folder) as loaded:
        target = getattr(loaded.module, fn) if isinstance(fn, str) else fn
        with pytest.raises(ScheduleError, match=message):
            loaded.api.schedule(target, delay_seconds=delay)


# -- advice ---------------------------------------------------------------------------------------


@advice.advisable("platform_api_tests.create_course")
def create_course(data):
    return {"created": data["name"]}


def test_advice_is_added_with_the_plugin_as_owner_and_removed_on_deactivation(tmp_path):
    folder = write_plugin(
        tmp_path,
        "adviser",
        """
        def activate(api):
            @api.advice.before("platform_api_tests.create_course")
            def validate_input(course_data):
                if len(course_data["name"]) < 5:
                    raise ValueError("Name too short")

            @api.advice.after("platform_api_tests.create_course", priority=5)
            def add_metadata(result, course_data):
                result["created_by"] = "plugin"
                return result
        """,
        "permissions: [advice]\n",
    )
    with load_plugin(folder) as loaded:
        assert create_course({"name": "Python 101"}) == {
            "created": "Python 101",
            "created_by": "plugin",
        }
        with pytest.raises(ValueError, match="Name too short"):
            create_course({"name": "Py"})
        owners = {a["plugin"] for a in advice.describe("platform_api_tests.create_course")}
        assert owners == {"adviser@1.0.0"}
        with pytest.raises(PlatformAPIError, match="unknown advice kind"):
            loaded.api.advice.add("sideways", "platform_api_tests.create_course", print)
        loaded.deactivate()
        assert advice.describe("platform_api_tests.create_course") == []
        assert create_course({"name": "Py"}) == {"created": "Py"}


def test_emitter_flush_waits_for_everything(tmp_path):
    folder = write_plugin(tmp_path, "flusher", KEEP_API, manifest="events: ['flusher.*']\n")
    with load_plugin(folder) as lp:
        seen: list[str] = []
        lp.bus.subscribe("flusher.*", lambda event: seen.append(event.name))
        for n in range(20):
            lp.api.emit(f"flusher.e{n}")
        emitter.flush()
        assert len(seen) == 20


def test_a_plugin_removes_only_its_own_functions(tmp_path):
    folder = write_plugin(
        tmp_path, "tidy", KEEP_API, manifest="hooks: [before-course-save]\nevents: ['course.*']\n"
    )
    with load_plugin(folder) as loaded:
        api = loaded.api

        def platform_fn(course):
            return course

        def platform_handler(event):
            return None

        loaded.hooks["before-course-save"].add(platform_fn)
        loaded.bus.subscribe("course.created", platform_handler)
        assert api.hooks["before-course-save"].remove(platform_fn) is False
        assert api.events.unsubscribe("course.created", platform_handler) is False
        assert loaded.hooks["before-course-save"].functions == [platform_fn]

        mine = api.hooks["before-course-save"].add(lambda course: course)
        api.events.subscribe("course.created", platform_handler)  # now also the plugin's own
        assert api.hooks["before-course-save"].functions == [mine]  # its own only
        assert api.hooks["before-course-save"].remove(mine) is True
        assert api.events.unsubscribe("course.created", platform_handler) is True
