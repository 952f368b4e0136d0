"""After `migrate course_plugins zero`: a process still running says once that the tables are
gone, instead of logging an error with a traceback at every look, and the recorded hook runs leave
the shared cache (both found by a first-time user's project with a Celery worker)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from django.core.cache import caches
from django.db import connection, transaction

from course_plugins.conf import plugin_settings
from course_plugins.core.hook_manager import HookManager
from course_plugins.models import OutboxMessage
from course_plugins.models import Plugin as PluginRow
from course_plugins.site import control, outbox, scheduling
from course_plugins.site.follower import StampFollower

pytestmark = pytest.mark.django_db


def _read_rows() -> None:
    list(PluginRow.objects.all())


@contextmanager
def _renamed(table: str) -> Iterator[None]:
    """The table gone as after `migrate course_plugins zero`, in autocommit as a running process
    sees it (inside a test transaction PostgreSQL would refuse every later query instead)."""
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_gone")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table}_gone RENAME TO {table}")


@pytest.mark.django_db(transaction=True)
def test_dropped_tables_give_one_warning_not_an_error_at_every_look(
    caplog: pytest.LogCaptureFixture,
) -> None:
    follower = StampFollower(_read_rows)
    follower._seen = "a stamp before the migration"  # the stamp is deleted by migrate zero
    table = PluginRow._meta.db_table
    caplog.set_level(logging.INFO, logger="course_plugins")
    with _renamed(table):
        for _ in range(3):
            assert follower.check(force=True) is False
    records = [r for r in caplog.records if r.name.startswith("course_plugins")]
    assert [r.levelname for r in records] == ["WARNING"]
    assert "migrate course_plugins zero" in records[0].getMessage()


@pytest.mark.django_db(transaction=True)
def test_a_running_process_stops_its_plugins_when_the_tables_are_gone(tmp_path, settings):
    # A worker that had not yet followed the plugins' deactivation when `migrate course_plugins
    # zero` ran must not go on refusing saves with them.
    from plugin_factory import write_plugin

    from course_plugins.site import runtime

    write_plugin(tmp_path, "guard", "def activate(api):\n    pass\n")
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(tmp_path)]}
    runtime.reset()
    try:
        runtime.activate("guard")
        assert str(runtime.local_plugin("guard").state) == "active"
        runtime.default.follower._seen = "a stamp before the migration"
        with _renamed(PluginRow._meta.db_table):
            assert runtime.default.follower.check(force=True) is False
        assert str(runtime.local_plugin("guard").state) == "inactive"
    finally:
        runtime.reset()


def test_another_database_error_is_still_logged_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = []

    def failing() -> None:
        calls.append(1)
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table_of_anyone")

    follower = StampFollower(failing)
    follower._seen = "a stamp before"
    caplog.set_level(logging.INFO, logger="course_plugins")
    with transaction.atomic():
        assert follower.check(force=True) is False
        transaction.set_rollback(True)
    with transaction.atomic():
        assert follower.check(force=True) is False
        transaction.set_rollback(True)
    assert len(calls) == 2
    assert [r.levelname for r in caplog.records if r.name.startswith("course_plugins")] == [
        "ERROR",
        "ERROR",
    ]


def test_migrate_zero_deletes_the_recorded_runs_from_the_cache() -> None:
    # Runs recorded by earlier tests are published by a timer of this process: let it not fire
    # in the middle of this test (it would write this process's entry back into the index).
    with control._lock:
        if control._timer is not None:
            control._timer.cancel()
            control._timer = None
    cache = caches[plugin_settings.RUNS_CACHE or plugin_settings.SYNC_CACHE]
    hooks = HookManager.get_instance()
    hook = hooks.names()[0] if hooks.names() else ""
    keys = [control._key("another-process", hook), control._key("another-process", "")]
    cache.set(control._INDEX, {"another-process": 1.0}, timeout=None)
    cache.set_many({key: [{"run": 1}] for key in keys})
    initial = SimpleNamespace(app_label="course_plugins", initial=True)
    scheduling.after_migrate(sender=None, plan=[(initial, True)])
    assert cache.get_many([control._INDEX, *keys]) == {}


@pytest.mark.django_db(transaction=True)
def test_the_outbox_relay_says_once_that_its_table_is_gone(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "_gone_reported", False)
    table = OutboxMessage._meta.db_table
    caplog.set_level(logging.INFO, logger="course_plugins")
    with _renamed(table):
        for _ in range(3):
            assert outbox.relay() == 0
    records = [r for r in caplog.records if r.name.startswith("course_plugins")]
    assert [r.levelname for r in records] == ["WARNING"]
    assert "migrate course_plugins zero" in records[0].getMessage()
