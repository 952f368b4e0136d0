"""The site runtime: plugin rows <-> this process's loader (start-up, other processes)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.core.signals import request_started
from django.utils import timezone
from plugin_factory import write_plugin

from course_plugins.core.options import options
from course_plugins.exceptions import PluginError, PluginNotFound, PluginSettingsError
from course_plugins.models import Plugin, PluginStatus
from course_plugins.site import runtime
from example_project.courses.models import Course

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]

GREETER = """
from __future__ import annotations

VERSION = "{version}"
state = {{"activations": 0, "greeting": None}}


def activate(api):
    state["activations"] += 1
    state["greeting"] = api.config.get("greeting")

    @api.hooks["before-course-save"].add
    def stamp(course):
        course["description"] = f"{{api.config.get('greeting')}} from {{VERSION}}"
        return course


def deactivate(api):
    state["greeting"] = None
"""

GREETER_MANIFEST = """
hooks: [before-course-save]
settings_schema:
  greeting: {type: string, default: Hello, max: 20, description: What to write}
  shout: {type: boolean, default: false}
"""


def greeter(folder: Path, version: str = "1.0.0") -> Path:
    return write_plugin(
        folder, "greeter", GREETER.format(version=version), GREETER_MANIFEST, version=version
    )


@pytest.fixture
def plugin_dir(tmp_path, settings):
    folder = tmp_path / "plugins"
    folder.mkdir()
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(folder)]}
    runtime.reset()
    yield folder
    runtime.reset()


def module(name: str) -> Any:
    return runtime.get_loader().get(name).module


def state(name: str) -> str:
    return str(runtime.get_loader().get(name).state)


def course_description(title: str = "Intro") -> str:
    course = Course.objects.create(name=f"c{Course.objects.count()}", title=title)
    return Course.objects.get(pk=course.pk).description


# --- discovery --------------------------------------------------------------------------------


def test_discover_creates_disabled_inactive_rows_with_metadata(plugin_dir):
    greeter(plugin_dir)
    rows = runtime.discover()
    assert [r.name for r in rows] == ["greeter"]
    row = rows[0]
    assert (row.version, row.enabled, row.status, row.missing) == (
        "1.0.0", False, PluginStatus.INACTIVE, False
    )
    assert row.author == "Tests" and row.hooks == ["before-course-save"]
    assert row.manifest["settings_schema"]["greeting"]["default"] == "Hello"
    assert row.path == str(plugin_dir / "greeter")
    assert state("greeter") == "discovered"
    assert runtime.discover()[0].pk == row.pk  # idempotent


def test_a_bad_manifest_is_an_error_row_and_others_still_load(plugin_dir):
    greeter(plugin_dir)
    write_plugin(plugin_dir, "broken", "def activate(api):\n    pass\n", version="one")
    rows = {r.name: r for r in runtime.discover()}
    assert rows["greeter"].status == PluginStatus.INACTIVE
    assert rows["broken"].status == PluginStatus.ERROR
    assert "version" in rows["broken"].last_error and "plugin.yaml" in rows["broken"].last_error


def test_a_bad_manifest_is_logged_once_not_by_every_process(plugin_dir, caplog):
    write_plugin(plugin_dir, "broken", "def activate(api):\n    pass\n", version="one")
    caplog.set_level(logging.DEBUG, logger="course_plugins")

    def errors() -> list[str]:
        found = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        caplog.clear()
        return found

    runtime.discover()
    (said,) = errors()
    assert said.startswith("Plugin broken cannot be loaded: ") and "'version'" in said
    # Every other process (each manage.py command, each worker) finds the same problem: the row
    # and the admin show it; nobody logs it again.
    for _ in range(2):
        runtime.reset()
        runtime.start()
        assert errors() == []
    # A different problem is new: said once again.
    write_plugin(plugin_dir, "broken", "def activate(api):\n    pass\n", version="two")
    runtime.discover()
    (said,) = errors()
    assert "'two'" in said


def test_upgrade_keeps_the_admins_choice_and_settings(plugin_dir):
    greeter(plugin_dir)
    runtime.activate("greeter")
    runtime.update_settings("greeter", {"greeting": "Hi"})
    greeter(plugin_dir, version="1.1.0")

    row = next(r for r in runtime.discover() if r.name == "greeter")
    assert (row.version, row.enabled, row.settings) == ("1.1.0", True, {"greeting": "Hi"})
    assert row.manifest["version"] == "1.1.0"
    # The running code is replaced by the new version when the process follows the rows.
    assert runtime.apply_db_state() == {"greeter": "reloaded"}
    assert module("greeter").VERSION == "1.1.0"
    assert course_description() == "Hi from 1.1.0"


def test_a_vanished_folder_marks_the_row_and_never_crashes(plugin_dir):
    path = greeter(plugin_dir)
    runtime.activate("greeter")
    hidden = path.rename(plugin_dir.parent / "elsewhere")

    row = next(r for r in runtime.discover() if r.name == "greeter")
    assert (row.missing, row.status, row.enabled) == (True, PluginStatus.ERROR, True)
    assert "was not found in PLUGIN_DIRS" in row.last_error
    assert course_description() == ""  # its hook is gone
    with pytest.raises(PluginNotFound, match="not found"):
        runtime.activate("greeter")

    hidden.rename(path)
    row = next(r for r in runtime.discover() if r.name == "greeter")
    assert (row.missing, row.status, row.last_error) == (False, PluginStatus.INACTIVE, "")
    runtime.apply_db_state()
    assert course_description() == "Hello from 1.0.0"


# --- start-up ---------------------------------------------------------------------------------


def test_start_activates_enabled_plugins_and_records_failures(plugin_dir):
    greeter(plugin_dir)
    write_plugin(plugin_dir, "crasher", "def activate(api):\n    raise RuntimeError('no db')\n")
    write_plugin(plugin_dir, "idle", "def activate(api):\n    pass\n")
    for name in ("greeter", "crasher", "idle"):
        Plugin.objects.create(name=name, version="1.0.0", enabled=name != "idle")

    rows = {r.name: r for r in runtime.start()}
    assert runtime.is_started()
    assert rows["greeter"].status == PluginStatus.ACTIVE
    assert rows["crasher"].status == PluginStatus.ERROR
    assert "RuntimeError: no db" in rows["crasher"].last_error
    assert "raise RuntimeError('no db')" in rows["crasher"].last_traceback
    assert rows["crasher"].enabled  # the admin's choice is kept
    assert (rows["idle"].status, state("idle")) == (PluginStatus.INACTIVE, "discovered")
    assert course_description() == "Hello from 1.0.0"
    # A failed plugin is not retried on every sync, only when its row changes.
    assert runtime.apply_db_state() == {}


def test_starting_is_quiet_and_only_failures_are_logged(plugin_dir, caplog):
    # Every process starts its plugins (each manage.py command included): routine lines are
    # debug; a plugin that fails to start is an error the operator sees.
    greeter(plugin_dir)
    write_plugin(plugin_dir, "crasher", "def activate(api):\n    raise RuntimeError('no db')\n")
    for name in ("greeter", "crasher"):
        Plugin.objects.create(name=name, version="1.0.0", enabled=True)
    caplog.set_level(logging.DEBUG, logger="course_plugins")

    runtime.start()

    shown = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert len(shown) == 1 and shown[0][0] == "ERROR", shown
    assert "crasher" in shown[0][1] and "RuntimeError: no db" in shown[0][1]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert "Activated plugin greeter@1.0.0" in debug
    assert "Started the plugins of this process: crasher failed, greeter activated" in debug

    # Following another process's change later is worth a line at info.
    caplog.clear()
    Plugin.objects.filter(name="greeter").update(enabled=False, status=PluginStatus.INACTIVE)
    assert runtime.apply_db_state() == {"greeter": "deactivated"}
    assert [(r.levelname, r.getMessage()) for r in caplog.records
            if r.levelno >= logging.INFO] == [
        ("INFO", "Followed a change made in another process: greeter deactivated")
    ]


def test_start_follows_dependency_order(plugin_dir):
    write_plugin(plugin_dir, "base", "def activate(api):\n    pass\n")
    write_plugin(
        plugin_dir, "child", "def activate(api):\n    pass\n", "requires: {base: '>=1.0'}\n"
    )
    Plugin.objects.create(name="child", version="1.0.0", enabled=True)
    Plugin.objects.create(name="base", version="1.0.0", enabled=True)
    runtime.start()
    assert (state("base"), state("child")) == ("active", "active")

    runtime.deactivate("base")
    child = Plugin.objects.get(name="child")
    assert (child.enabled, child.status) == (False, PluginStatus.INACTIVE)
    assert state("child") == "inactive"
    assert "requires, base" in child.last_error


def test_steady_state_costs_no_query(plugin_dir, django_assert_num_queries):
    greeter(plugin_dir)
    assert runtime.ensure_started()
    with django_assert_num_queries(0):
        assert runtime.ensure_started()
        request_started.send(sender=None)


def test_app_start_touches_no_database_until_the_tables_exist(tmp_path):
    """A real process: ready() with AUTOLOAD on, before and after `migrate`."""
    folder = tmp_path / "plugins"
    greeter(folder)
    script = textwrap.dedent(
        """
        import json, django
        django.setup()
        from django.core.management import call_command
        from course_plugins.site import runtime
        before = runtime.ensure_started()
        call_command("migrate", verbosity=0)
        after = runtime.ensure_started()
        from course_plugins.models import Plugin
        print(json.dumps([before, after, list(Plugin.objects.values_list("name", "status"))]))
        """
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "SQLITE_PATH": str(tmp_path / "fresh.sqlite3"),
        "COURSE_VAR_DIR": str(tmp_path / "var"),
        "COURSE_PLUGIN_DIRS": str(folder),
        "COURSE_PLUGINS_AUTOLOAD": "1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    before, after, rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert (before, after, rows) == (False, True, [["greeter", "inactive"]])


# --- operations -------------------------------------------------------------------------------


def test_a_fresh_runtime_has_its_own_loader_and_bookkeeping(plugin_dir):
    greeter(plugin_dir)
    fresh = runtime.Runtime(dirs=[str(plugin_dir)])
    try:
        assert fresh.ensure_started() and not runtime.is_started()
        fresh.activate("greeter")
        assert fresh.loader is not runtime.get_loader()
        assert str(fresh.local_plugin("greeter").state) == "active"
        assert runtime.local_plugin("greeter") is None  # the default runtime never loaded it
        assert Plugin.objects.get(name="greeter").status == PluginStatus.ACTIVE
        fresh.deactivate("greeter")
        assert str(fresh.local_plugin("greeter").state) == "inactive"
    finally:
        fresh.reset()


def test_activate_and_deactivate(plugin_dir):
    greeter(plugin_dir)
    row = runtime.activate("greeter")
    assert (row.enabled, row.status, row.last_error) == (True, PluginStatus.ACTIVE, "")
    assert row.activated_at is not None
    assert Plugin.objects.get(name="greeter").status == PluginStatus.ACTIVE
    assert course_description() == "Hello from 1.0.0"

    row = runtime.deactivate("greeter@1.0.0")
    assert (row.enabled, row.status) == (False, PluginStatus.INACTIVE)
    assert state("greeter") == "inactive"
    assert course_description() == ""


def test_a_failing_activation_is_recorded_and_raised(plugin_dir):
    write_plugin(plugin_dir, "crasher", "def activate(api):\n    raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match="RuntimeError: boom"):
        runtime.activate("crasher")
    row = Plugin.objects.get(name="crasher")
    assert (row.enabled, row.status) == (False, PluginStatus.ERROR)
    assert "RuntimeError: boom" in row.last_error and "Traceback" in row.last_traceback


def test_unknown_plugins_are_not_found(plugin_dir):
    greeter(plugin_dir)
    with pytest.raises(PluginNotFound, match="known: greeter"):
        runtime.activate("nope")


def test_reload_reads_new_code_and_keeps_settings(plugin_dir):
    greeter(plugin_dir)
    runtime.activate("greeter")
    runtime.update_settings("greeter", {"greeting": "Hey"})
    greeter(plugin_dir, version="2.0.0")
    row = runtime.reload("greeter")
    assert (row.version, row.status) == ("2.0.0", PluginStatus.ACTIVE)
    assert row.settings == {"greeting": "Hey"}
    assert course_description() == "Hey from 2.0.0"


def test_reload_of_broken_code_is_recorded(plugin_dir):
    path = greeter(plugin_dir)
    runtime.activate("greeter")
    (path / "__init__.py").write_text("def activate(api):\n    raise ValueError('bad')\n")
    with pytest.raises(PluginError, match="bad"):
        runtime.reload("greeter")
    row = Plugin.objects.get(name="greeter")
    assert row.status == PluginStatus.ERROR and "ValueError: bad" in row.last_error


def test_update_settings_validates_and_takes_effect_at_once(plugin_dir):
    greeter(plugin_dir)
    runtime.activate("greeter")
    api = runtime.get_loader().get("greeter").api

    with pytest.raises(PluginSettingsError) as info:
        runtime.update_settings("greeter", {"greeting": "x" * 21, "colour": "red"})
    assert set(info.value.errors) == {"greeting", "colour"}
    assert Plugin.objects.get(name="greeter").settings == {}

    values = runtime.update_settings("greeter", {"greeting": "Bonjour", "shout": "on"})
    assert values == {"greeting": "Bonjour", "shout": True}
    assert Plugin.objects.get(name="greeter").settings == {"greeting": "Bonjour", "shout": True}
    plugin = runtime.get_loader().get("greeter")
    assert plugin.api.config.get("greeting") == "Bonjour"
    assert module("greeter").state["greeting"] == "Bonjour"  # restarted: activate() saw it
    assert plugin.api is not api
    assert course_description() == "Bonjour from 1.0.0"

    assert runtime.update_settings("greeter", {"greeting": None})["greeting"] == "Hello"
    assert course_description() == "Hello from 1.0.0"


def test_the_settings_log_line_names_what_changed(plugin_dir, caplog):
    greeter(plugin_dir)
    caplog.set_level(logging.INFO, logger="course_plugins.runtime")
    runtime.update_settings("greeter", {"greeting": "Hi", "shout": False})
    runtime.update_settings("greeter", {"greeting": "Hi", "shout": True})  # as a form posts it
    runtime.update_settings("greeter", {"greeting": "Hi", "shout": True})
    assert [r.getMessage() for r in caplog.records if "Settings of" in r.getMessage()] == [
        "Settings of plugin greeter changed: greeting, shout",
        "Settings of plugin greeter changed: shout",
        "Settings of plugin greeter changed: nothing (saved as they were)",
    ]


def test_settings_of_an_inactive_plugin(plugin_dir):
    greeter(plugin_dir)
    assert runtime.update_settings("greeter", {"greeting": "Ciao"})["greeting"] == "Ciao"
    runtime.activate("greeter")
    assert module("greeter").state["greeting"] == "Ciao"


# --- quarantine and following other processes -------------------------------------------------


def test_a_quarantined_plugin_is_faulted_everywhere_until_activated(
    plugin_dir, settings, monkeypatch
):
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "MAX_FAILURES": 2}
    write_plugin(
        plugin_dir,
        "flaky",
        """
        def activate(api):
            @api.hooks["after-course-save"].add  # fails open: the save goes on
            def explode(course, created):
                raise RuntimeError("flaky plugin bug")
        """,
        "hooks: [after-course-save]\n",
    )
    monkeypatch.setattr(options, "strict", False)
    runtime.activate("flaky")
    course_description()
    course_description()  # the second failure in a row quarantines it

    row = Plugin.objects.get(name="flaky")
    assert (row.status, row.enabled) == (PluginStatus.FAULTED, True)
    assert "flaky plugin bug" in row.last_error and "RuntimeError" in row.last_traceback
    assert state("flaky") == "faulted"
    assert runtime.apply_db_state() == {}  # stays off
    runtime.activate("flaky")
    assert Plugin.objects.get(name="flaky").status == PluginStatus.ACTIVE


def test_apply_db_state_follows_changes_made_by_another_process(plugin_dir):
    greeter(plugin_dir)
    runtime.start()
    assert runtime.apply_db_state() == {}

    # What another process's runtime.activate() writes:
    Plugin.objects.filter(name="greeter").update(
        enabled=True, status=PluginStatus.ACTIVE, activated_at=timezone.now()
    )
    assert runtime.apply_db_state() == {"greeter": "activated"}
    assert course_description() == "Hello from 1.0.0"

    Plugin.objects.filter(name="greeter").update(settings={"greeting": "Hallo"})
    assert runtime.apply_db_state() == {"greeter": "settings re-read"}
    assert course_description() == "Hallo from 1.0.0"

    first = module("greeter")
    Plugin.objects.filter(name="greeter").update(activated_at=timezone.now())  # a reload there
    assert runtime.apply_db_state() == {"greeter": "reloaded"}
    assert module("greeter") is not first

    Plugin.objects.filter(name="greeter").update(status=PluginStatus.FAULTED)
    assert runtime.apply_db_state() == {"greeter": "deactivated"}
    Plugin.objects.filter(name="greeter").update(status=PluginStatus.ACTIVE, enabled=False)
    assert runtime.apply_db_state() == {}
    assert state("greeter") == "inactive"


def test_a_plugin_added_while_running_is_followed_when_another_process_activates_it(plugin_dir):
    runtime.start()  # this process discovered an empty folder
    greeter(plugin_dir)
    other = runtime.Runtime(dirs=[str(plugin_dir)])  # manage.py plugins activate greeter
    try:
        other.activate("greeter")
    finally:
        other.reset()
    assert runtime.apply_db_state() == {"greeter": "activated"}
    assert course_description() == "Hello from 1.0.0"


def test_a_plugin_another_process_discovered_can_be_activated_here(plugin_dir):
    runtime.start()
    greeter(plugin_dir)
    other = runtime.Runtime(dirs=[str(plugin_dir)])  # manage.py plugins list
    try:
        other.discover()
    finally:
        other.reset()
    row = runtime.activate("greeter")  # the admin's button in the web process
    assert (row.status, state("greeter")) == (PluginStatus.ACTIVE, "active")


def test_discover_if_new_lists_folders_added_while_running(plugin_dir, django_assert_num_queries):
    runtime.start()
    greeter(plugin_dir)
    assert runtime.discover_if_new()
    assert list(Plugin.objects.values_list("name", "status")) == [("greeter", "inactive")]
    with django_assert_num_queries(1):  # nothing new: no discovery, no writes
        assert not runtime.discover_if_new()


def test_apply_db_state_does_nothing_before_start_without_autoload(plugin_dir):
    greeter(plugin_dir)
    assert not runtime.is_started()
    assert runtime.apply_db_state() == {}
    assert not Plugin.objects.exists()


def test_dependents_of_a_quarantined_plugin_are_recorded_as_errors(
    plugin_dir, settings, monkeypatch
):
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "MAX_FAILURES": 1}
    monkeypatch.setattr(options, "strict", False)
    write_plugin(
        plugin_dir,
        "base",
        """
        def activate(api):
            @api.hooks["after-course-save"].add  # fails open: the save goes on
            def explode(course, created):
                raise RuntimeError("base bug")
        """,
        "hooks: [after-course-save]\n",
    )
    write_plugin(
        plugin_dir, "child", "def activate(api):\n    pass\n", "requires: {base: '>=1.0'}\n"
    )
    runtime.activate("base")
    runtime.activate("child")
    course_description()

    rows = {row.name: row for row in Plugin.objects.all()}
    assert rows["base"].status == PluginStatus.FAULTED
    assert rows["child"].status == PluginStatus.ERROR
    assert "requires, base@1.0.0, faulted" in rows["child"].last_error
