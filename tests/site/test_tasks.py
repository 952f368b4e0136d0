"""Celery tasks, run in this process: scheduled calls and background event delivery.

``run_scheduled`` and ``deliver_event`` are called as a worker calls them (``.apply()`` runs the
task machinery, retries included, in this process) against the real runtime and event bus.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from plugin_factory import write_plugin

from course_plugins.core.health import health
from course_plugins.models import Plugin as PluginRow
from course_plugins.site import runtime
from course_plugins.tasks import (
    DELIVERY_MAX_RETRIES,
    deliver_background,
    deliver_event,
    install,
    run_scheduled,
)
from example_project import celery_app

MANIFEST = """\
permissions: [schedule, storage]
events: ["jobs.*"]
timeout_seconds: 0.3
"""

CODE = """\
import asyncio

STATE = {}


def activate(api):
    STATE["api"] = api

    @api.events.subscribe("jobs.background", background=True)
    def remember(event):
        # Attempts are counted in memory: a failed delivery's database writes are rolled back.
        STATE["attempts"] = STATE.get("attempts", 0) + 1
        if event.data.get("fail_times", 0) >= STATE["attempts"]:
            raise RuntimeError("not yet")
        api.storage.set_sync("seen", api.storage.get_sync("seen", []) + [event.data["n"]])


def count():
    storage = STATE["api"].storage
    storage.set_sync("count", storage.get_sync("count", 0) + 1)


async def count_async():
    await asyncio.sleep(0)
    storage = STATE["api"].storage
    await storage.set("count", await storage.get("count", 0) + 1)


def explode():
    raise RuntimeError("scheduled function failed")


def spin():
    while True:
        pass
"""


@pytest.fixture
def site(tmp_path: Path, settings: Any) -> Iterator[Any]:
    """The runtime over a plugin folder holding ``jobs``, activated; returns the plugin."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "jobs", CODE, MANIFEST)
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.COURSE_PLUGINS = {
        **settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(plugins)], "MAX_FAILURES": 20,
    }
    runtime.reset()
    runtime.activate("jobs")
    plugin = runtime.get_loader().get("jobs")
    health.reset(plugin.id)
    yield plugin
    runtime.reset()


def _run(function: str) -> str:
    return run_scheduled.apply(kwargs={"plugin": "jobs", "function": function}).get()


@pytest.mark.django_db
def test_a_scheduled_function_runs_in_the_task(site: Any) -> None:
    assert _run("count") == "ok"
    assert site.api.storage.get_sync("count") == 1


@pytest.mark.django_db(transaction=True)  # the async storage API uses another thread
def test_a_scheduled_coroutine_function_runs_in_the_task(site: Any) -> None:
    assert _run("count_async") == "ok"
    assert site.api.storage.get_sync("count") == 1


@pytest.mark.django_db
def test_a_plugin_that_is_not_active_is_skipped_and_logged(
    site: Any, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.deactivate("jobs")
    with caplog.at_level(logging.INFO, logger="course_plugins.tasks"):
        assert _run("count") == "skipped"
    assert site.api.storage.get_sync("count") is None
    assert "jobs:count: the plugin is not active" in caplog.text
    assert run_scheduled.apply(kwargs={"plugin": "nobody", "function": "x"}).get() == "skipped"


@pytest.mark.django_db
def test_failures_count_like_hook_failures_and_quarantine_the_plugin(
    site: Any, settings: Any
) -> None:
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "MAX_FAILURES": 3}
    assert _run("explode") == "failed"
    assert health.failures(site.id) == 1
    assert _run("explode") == "failed"
    assert _run("explode") == "failed"  # MAX_FAILURES (3) in a row

    row = PluginRow.objects.get(name="jobs")
    assert row.status == "faulted"
    assert "scheduled function failed" in row.last_error + row.last_traceback
    assert _run("count") == "skipped"


@pytest.mark.django_db
def test_a_success_resets_the_failure_count(site: Any) -> None:
    _run("explode")
    _run("count")
    assert health.failures(site.id) == 0


@pytest.mark.django_db
def test_a_function_running_over_the_plugins_budget_is_interrupted(site: Any) -> None:
    assert _run("spin") == "timeout"  # manifest timeout_seconds: 0.3
    assert health.failures(site.id) == 1


@pytest.mark.django_db
def test_a_function_the_plugin_no_longer_has_is_a_failure(site: Any) -> None:
    assert _run("vanished") == "failed"
    assert health.failures(site.id) == 1


@pytest.mark.django_db
def test_strict_mode_reraises(site: Any, settings: Any) -> None:
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "STRICT": True}
    with pytest.raises(RuntimeError, match="scheduled function failed"):
        run_scheduled(plugin="jobs", function="explode")


# --- background events -----------------------------------------------------------------------


def _subscription_key() -> str:
    from course_plugins.core.event_bus import EventBus

    (subscription,) = [
        s for s in EventBus.get_instance().matching("jobs.background") if s.background
    ]
    return str(subscription.key)


def _event(**data: Any) -> Any:
    from course_plugins.core.event_bus import Event

    return Event("jobs.background", data, source="tests")


def _deliver(key: str, event: dict[str, Any]) -> Any:
    return deliver_background.apply(args=("jobs", [key], event)).get()


def _retry_rows() -> list[Any]:
    from course_plugins.models import OutboxMessage

    return list(OutboxMessage.objects.order_by("created_at"))


def _as_sent(row: Any) -> dict[str, Any]:
    """``row``'s event as the relay sends it: naming the row, which the delivery deletes."""
    from course_plugins.site import broker

    return {**row.event, broker.ROW_KEY: str(row.id)}


def _attempts(site: Any) -> int:
    return int(site.module.STATE.get("attempts", 0))


@pytest.mark.django_db
def test_deliver_background_runs_the_subscription_once_per_event(site: Any) -> None:
    key, event = _subscription_key(), _event(n=1).to_dict()
    assert _deliver(key, event) == {key: "ok"}
    assert site.api.storage.get_sync("seen") == [1]
    # The same message again (a redelivery): recorded as delivered, not run twice.
    assert _deliver(key, event) == {key: "duplicate"}
    assert deliver_event.apply(args=(key, event)).get() == {key: "duplicate"}
    assert site.api.storage.get_sync("seen") == [1]


@pytest.mark.django_db
def test_a_failing_delivery_goes_back_to_the_outbox_until_it_succeeds(site: Any) -> None:
    key = _subscription_key()
    assert _deliver(key, _event(n=7, fail_times=2).to_dict()) == "retry"
    for expected in ("retry", {key: "ok"}):
        (row,) = _retry_rows()  # the next retry's row replaced the one delivered
        assert row.keys == [key] and row.plugin == "jobs"
        result = deliver_background.apply(args=(row.plugin, row.keys, _as_sent(row))).get()
        assert result == expected
    assert _retry_rows() == []  # delivered: its row deleted
    assert _attempts(site) == 3
    assert site.api.storage.get_sync("seen") == [7]  # failed attempts left nothing behind


@pytest.mark.django_db
def test_delivery_gives_up_after_the_maximum_of_retries(site: Any, caplog: Any) -> None:
    result = _deliver(_subscription_key(), _event(n=3, fail_times=999).to_dict())
    while result == "retry":
        (row,) = _retry_rows()
        result = deliver_background.apply(args=(row.plugin, row.keys, _as_sent(row))).get()
    assert result == "failed"
    assert _retry_rows() == []
    assert _attempts(site) == 1 + DELIVERY_MAX_RETRIES
    assert "Gave up background event jobs.background" in caplog.text
    assert site.api.storage.get_sync("seen") is None


@pytest.mark.django_db
def test_an_event_for_an_inactive_plugin_is_skipped_with_a_warning(
    site: Any, caplog: Any
) -> None:
    key = _subscription_key()
    runtime.deactivate("jobs")
    with caplog.at_level(logging.WARNING, logger="course_plugins.outbox"):
        assert _deliver(key, _event(n=1).to_dict()) == {key: "skipped"}
    assert "plugin jobs is not active" in caplog.text
    assert _retry_rows() == []


@pytest.mark.django_db
def test_a_key_missing_here_while_the_plugin_is_active_is_retried_not_acknowledged(
    site: Any, caplog: Any
) -> None:
    # The database says jobs is active, but this process has no such subscription (another
    # process loaded a newer version, or this one has not loaded it yet): never a silent skip.
    missing = "jobs:activate.<locals>.renamed_handler"
    with caplog.at_level(logging.WARNING, logger="course_plugins.outbox"):
        assert _deliver(missing, _event(n=1).to_dict()) == "retry"
    assert "is active in the database but" in caplog.text
    (row,) = _retry_rows()
    assert row.keys == [missing]


@pytest.mark.django_db(transaction=True)
def test_background_events_go_to_celery_after_commit_and_never_on_rollback(
    site: Any,
) -> None:
    from course_plugins.core.event_bus import EventBus

    install()
    bus = EventBus.get_instance()
    celery_app.conf.task_always_eager = True
    try:
        with transaction.atomic():
            bus.publish_sync(_event(n=1))
            assert site.api.storage.get_sync("seen") is None  # not before the commit
        assert site.api.storage.get_sync("seen") == [1]

        with pytest.raises(RuntimeError, match="rolled back"), transaction.atomic():
            bus.publish_sync(_event(n=2))
            raise RuntimeError("rolled back")
        assert site.api.storage.get_sync("seen") == [1]
    finally:
        celery_app.conf.task_always_eager = False
