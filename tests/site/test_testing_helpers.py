"""course_plugins.testing: the helpers plugin authors use in their own tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from course_plugins.core.event_bus import Event, EventBus
from course_plugins.core.hook_manager import HookManager
from course_plugins.core.options import options
from course_plugins.exceptions import (
    PluginLoadError,
    PluginManifestError,
    PluginSettingsError,
)
from course_plugins.testing import captured_events, load_plugin, temporary_hook

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"


def test_load_plugin_runs_the_quick_start_plugin_on_an_isolated_engine():
    with load_plugin(FIXTURES / "my-plugin") as loaded:
        assert loaded.state == "active" and loaded.api.plugin_id == "my-plugin@1.0.0"
        assert loaded.run_hook("before-course-save", {"title": "Intro"}) == {"title": "Intro"}
        with pytest.raises(ValueError, match="Course must have a title"):
            loaded.run_hook("before-course-save", {"title": ""})
        assert loaded.registrations()["hooks"] == {"before-course-save": ["validate_course"]}
        assert loaded.registrations()["events"] == {"course.created": ["on_course_created"]}
        # Nothing leaked into the process-wide engine.
        process_wide = HookManager.get_instance()["before-course-save"].registrations
        assert all(r.owner != "my-plugin@1.0.0" for r in process_wide)
        hooks = loaded.hooks
    assert [r.owner for r in hooks["before-course-save"].registrations] == []


def test_strict_mode_is_on_inside_and_restored_after():
    before = options.strict
    with load_plugin(FIXTURES / "my-plugin"):
        assert options.strict is True
    with load_plugin(FIXTURES / "my-plugin", strict=False):
        assert options.strict is False
    assert options.strict is before


def test_publish_and_captured_events(caplog):
    with load_plugin(FIXTURES / "my-plugin") as loaded, captured_events(loaded.bus) as events:
        with caplog.at_level("INFO", logger="course_plugins.plugins.my-plugin"):
            event = loaded.publish("course.created", {"name": "My Course"})
        assert "Course created: My Course" in caplog.text
        loaded.publish("quiz.graded", {"score": 1})
    assert [e.name for e in events] == ["course.created", "quiz.graded"]
    assert events[0] is event and event.source == "tests"


def test_captured_events_filters_by_pattern_and_stops_at_the_end():
    bus = EventBus()
    with captured_events(bus, "course.*") as events:
        bus.publish_sync(Event("course.created", {}))
        bus.publish_sync(Event("user.created", {}))
    bus.publish_sync(Event("course.deleted", {}))
    assert [e.name for e in events] == ["course.created"]


def test_temporary_hook_is_removed_afterwards():
    hooks = HookManager()
    with temporary_hook("before-course-save", lambda c: {**c, "x": 1}, hooks=hooks) as fn:
        assert hooks.run_sync("before-course-save", {}) == {"x": 1}
        assert hooks["before-course-save"].functions == [fn]
    assert hooks.run_sync("before-course-save", {}) == {}


def test_temporary_hook_defaults_to_the_process_wide_manager():
    def mark(course):
        return {**course, "marked": True}

    with temporary_hook("before-course-save", mark):
        assert HookManager.get_instance().run_sync("before-course-save", {})["marked"] is True
    assert mark not in HookManager.get_instance()["before-course-save"].functions


def test_settings_and_storage_are_prefilled():
    with load_plugin(
        FIXTURES / "full-api", settings={"threshold": "5"}, storage={"seen": [1]}
    ) as loaded:
        assert loaded.api.config.get("threshold") == 5
        assert loaded.api.storage.get_sync("seen") == [1]
        assert loaded.api.storage.get_sync("activations") == 1


def test_deactivate_reload_and_activate_from_a_test():
    with load_plugin(FIXTURES / "full-api") as loaded:
        assert loaded.registrations()["schedules"][0]["id"] == "full-api:tick"
        loaded.deactivate()
        assert loaded.registrations() == {"hooks": {}, "events": {}, "schedules": []}
        loaded.activate()
        loaded.reload()
        assert loaded.state == "active"
        assert loaded.run_hook("before-course-save", {})["stamped_by"] == "full-api@2.1.0"


def test_load_without_activation():
    with load_plugin(FIXTURES / "my-plugin", activate=False) as loaded:
        assert loaded.state == "loaded" and callable(loaded.module.activate)
        assert loaded.registrations()["hooks"] == {}


def test_failures_surface_as_exceptions():
    broken = pytest.raises(PluginManifestError, match="field 'version'")
    with broken, load_plugin(FIXTURES / "broken-manifest"):
        pass
    refused = pytest.raises(PluginLoadError, match="import of 'os' is not allowed")
    with refused, load_plugin(FIXTURES / "policy-violator"):
        pass
    invalid = pytest.raises(PluginSettingsError, match="threshold")
    with invalid, load_plugin(FIXTURES / "full-api", settings={"threshold": 99}):
        pass


def test_a_looping_hook_fails_the_test_in_strict_mode():
    from course_plugins.core.isolation import WorkerTimeout
    from course_plugins.core.watchdog import TimeBudgetExceeded

    with load_plugin(FIXTURES / "looper") as loaded:  # isolated: its worker is stopped
        with pytest.raises(WorkerTimeout, match="time budget of 0.2 s"):
            loaded.run_hook("after-course-save", {"name": "c"}, True)
        assert loaded.state == "active"  # strict mode raises instead of counting failures
    with (
        load_plugin(FIXTURES / "looper", trusted=True) as loaded,
        pytest.raises(TimeBudgetExceeded, match="time budget of 0.2s exceeded"),
    ):
        loaded.run_hook("after-course-save", {"name": "c"}, True)


# --- the project's MODEL_HOOKS -----------------------------------------------------------------

LESSON_GUARD = {
    "plugin.yaml": "name: lesson-guard\nversion: 1.0.0\nhooks: [before-lesson-save, "
    "after-lesson-save, before-lesson-delete]\n",
    "__init__.py": (
        "def activate(api):\n"
        "    @api.hooks['before-lesson-save'].add\n"
        "    def check(lesson):\n"
        "        if len(lesson['title']) < 3:\n"
        "            raise ValueError('too short')\n"
        "        return lesson\n"
        "    api.hooks['after-lesson-save'].add(lambda lesson, created: created)\n"
    ),
}


@pytest.fixture
def lesson_guard(tmp_path: Path) -> Path:
    folder = tmp_path / "lesson-guard"
    folder.mkdir()
    for name, text in LESSON_GUARD.items():
        (folder / name).write_text(text)
    return folder


def _kinds(loaded) -> dict[str, str]:
    return {
        name: loaded.hooks[name].type.value
        for name in ("before-lesson-save", "after-lesson-save", "before-lesson-delete")
    }


def test_the_projects_model_hooks_have_the_sites_kinds(lesson_guard, settings):
    lesson = {"school.Lesson": "lesson"}
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "MODEL_HOOKS": lesson}
    with load_plugin(lesson_guard) as loaded:
        # A FILTER, as on the site: the dict comes back (not a list of results).
        assert loaded.run_hook("before-lesson-save", {"title": "Fractions"}) == {
            "title": "Fractions"
        }
        with pytest.raises(ValueError, match="too short"):
            loaded.run_hook("before-lesson-save", {"title": "Hi"})
        assert loaded.run_hook("after-lesson-save", {"title": "Fractions"}, True) == [True]
        assert _kinds(loaded) == {
            "before-lesson-save": "FILTER",
            "after-lesson-save": "NORMAL",
            "before-lesson-delete": "NORMAL",
        }
        assert "school.Lesson" in loaded.hooks["before-lesson-save"].description


def test_the_long_model_hooks_form_and_an_explicit_table(lesson_guard, settings):
    settings.COURSE_PLUGINS = {
        **settings.COURSE_PLUGINS,
        "MODEL_HOOKS": {"school.Lesson": {"name": "lesson", "organization": "course__org"}},
    }
    with load_plugin(lesson_guard) as loaded:
        assert _kinds(loaded)["before-lesson-save"] == "FILTER"
    with load_plugin(lesson_guard, model_hooks={"school.Lesson": "lesson"}) as loaded:
        assert loaded.run_hook("before-lesson-save", {"title": "Abc"}) == {"title": "Abc"}


def test_without_django_settings_the_manifest_names_the_model_hooks(lesson_guard):
    import os
    import subprocess
    import sys

    code = (
        "from course_plugins.testing import load_plugin\n"
        f"with load_plugin({str(lesson_guard)!r}) as loaded:\n"
        "    print(loaded.run_hook('before-lesson-save', {'title': 'Fractions'}))\n"
        "    print(loaded.hooks['after-lesson-save'].type.value)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["{'title': 'Fractions'}", "NORMAL"]
