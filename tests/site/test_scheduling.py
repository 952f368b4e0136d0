"""``api.schedule`` on Celery: periodic tasks in the database, replacement, refusals, row-following.

In-process, against the real runtime, loader, Platform API and django-celery-beat models; Celery
runs tasks eagerly here (``test_celery_integration`` runs a real worker).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from plugin_factory import write_plugin

from course_plugins.exceptions import ScheduleError
from course_plugins.models import Plugin as PluginRow
from course_plugins.site import runtime
from course_plugins.site.scheduling import PERIODIC_PREFIX, TASK_NAME, CeleryScheduler
from course_plugins.tasks import run_scheduled
from example_project import celery_app

MANIFEST = """\
permissions: [schedule, storage]
"""

CODE = """\
STATE = {"ids": []}


def activate(api):
    STATE["api"] = api
    STATE["ids"].append(api.schedule(tick, 30, repeat=True))


def tick():
    storage = STATE["api"].storage
    storage.set_sync("ticks", storage.get_sync("ticks", 0) + 1)


def once():
    storage = STATE["api"].storage
    storage.set_sync("once", storage.get_sync("once", 0) + 1)


def make_nested():
    def nested():
        pass

    return nested


class Helper:
    def method(self):
        pass
"""


@pytest.fixture
def site(tmp_path: Path, settings: Any) -> Iterator[Path]:
    """The site's runtime over a plugin folder holding ``ticker``; a process-local cache."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "ticker", CODE, MANIFEST)
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(plugins)]}
    runtime.reset()
    yield plugins
    runtime.reset()


@pytest.fixture
def eager() -> Iterator[None]:
    """Celery runs tasks in this process at once (countdowns ignored)."""
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = False


def _periodic(name: str = "ticker:tick") -> PeriodicTask:
    return PeriodicTask.objects.get(name=f"{PERIODIC_PREFIX}{name}")


def _module() -> Any:
    return runtime.get_loader().get("ticker").module


@pytest.mark.django_db
def test_a_repeating_schedule_is_a_periodic_task_beat_reads_from_the_database(site: Path) -> None:
    runtime.activate("ticker")

    task = _periodic()
    assert _module().STATE["ids"] == ["ticker:tick"]
    assert task.task == TASK_NAME == "course_plugins.tasks.run_scheduled"
    assert (task.interval.every, task.interval.period) == (30, IntervalSchedule.SECONDS)
    assert json.loads(task.kwargs) == {"plugin": "ticker", "function": "tick"}
    assert task.enabled and not task.one_off
    assert "ticker@1.0.0" in task.description


@pytest.mark.django_db
def test_scheduling_the_same_function_again_replaces_the_schedule(site: Path) -> None:
    runtime.activate("ticker")
    plugin = runtime.get_loader().get("ticker")
    first = _periodic()

    again = plugin.api.schedule(plugin.module.tick, 30, repeat=True)
    unchanged = _periodic()
    other = plugin.api.schedule(plugin.module.tick, 45, repeat=True)

    assert again == other == "ticker:tick"
    assert unchanged.date_changed == first.date_changed  # nothing written when nothing changed
    assert PeriodicTask.objects.filter(name__startswith=PERIODIC_PREFIX).count() == 1
    assert _periodic().interval.every == 45


@pytest.mark.django_db
def test_activation_in_every_process_keeps_one_schedule(site: Path) -> None:
    from course_plugins.api.platform_api import Services, default_api_factory
    from course_plugins.core.plugin_loader import PluginLoader

    runtime.activate("ticker")
    # Another process of the site: its own loader activating the same plugin.
    with PluginLoader(
        [str(site)],
        api_factory=default_api_factory(Services.django()),
        scheduler=CeleryScheduler(),
    ) as other:
        other.discover_all()
        other.activate("ticker")
        assert PeriodicTask.objects.filter(name__startswith=PERIODIC_PREFIX).count() == 1
    # That process going away (its loader deactivates everything) leaves the site's schedule.
    assert _periodic().enabled


@pytest.mark.django_db
def test_deactivation_disables_the_schedules_and_activation_enables_them(site: Path) -> None:
    runtime.activate("ticker")
    runtime.deactivate("ticker")
    assert not _periodic().enabled

    runtime.activate("ticker")
    assert _periodic().enabled


@pytest.mark.django_db
def test_a_faulted_plugin_has_its_schedules_disabled(site: Path) -> None:
    runtime.activate("ticker")
    row = PluginRow.objects.get(name="ticker")
    row.status = "faulted"
    row.save()
    assert not _periodic().enabled


@pytest.mark.django_db
def test_reactivation_deletes_schedules_whose_function_is_gone(site: Path) -> None:
    runtime.activate("ticker")
    runtime.deactivate("ticker")
    stale = _periodic()
    stale.pk, stale.name = None, f"{PERIODIC_PREFIX}ticker:renamed_long_ago"
    stale.kwargs = json.dumps({"plugin": "ticker", "function": "renamed_long_ago"})
    stale.save()

    runtime.activate("ticker")

    assert not PeriodicTask.objects.filter(name=stale.name).exists()
    assert _periodic().enabled


@pytest.mark.django_db
def test_cancel_schedule_deletes_the_periodic_task(site: Path) -> None:
    runtime.activate("ticker")
    api = runtime.get_loader().get("ticker").api

    assert api.cancel_schedule("ticker:tick") is True
    assert not PeriodicTask.objects.filter(name=f"{PERIODIC_PREFIX}ticker:tick").exists()
    assert api.cancel_schedule("ticker:tick") is False


@pytest.mark.django_db
def test_pause_and_resume_owner_flip_the_periodic_tasks(site: Path) -> None:
    runtime.activate("ticker")
    scheduler = CeleryScheduler()
    assert scheduler.pause_owner("ticker@1.0.0") == 1
    assert not _periodic().enabled
    assert scheduler.resume_owner("ticker@1.0.0") == 1
    assert _periodic().enabled
    assert scheduler.scheduled("ticker@1.0.0") == [
        {"id": "ticker:tick", "plugin": "ticker", "function": "tick", "delay_seconds": 30.0,
         "repeat": True, "paused": False, "runs": 0},
    ]
    assert scheduler.drop_owner("ticker") == 1
    assert scheduler.scheduled() == []


@pytest.mark.django_db
def test_things_that_are_not_module_level_functions_of_the_plugin_are_refused(
    site: Path, settings: Any
) -> None:
    # Trusted: the test builds the plugin's own objects (a Helper instance) to pass back.
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "TRUSTED_PLUGINS": ["ticker"]}
    runtime.activate("ticker")
    plugin = runtime.get_loader().get("ticker")
    module, api = plugin.module, plugin.api

    def local() -> None:
        pass

    refused = [
        lambda: None,
        module.make_nested(),
        module.Helper().method,
        local,  # another module's function (this test module)
        functools.partial(module.tick),
        print,
    ]
    for fn in refused:
        with pytest.raises(ScheduleError) as caught:
            api.schedule(fn, 10)
        assert caught.value.plugin == "ticker@1.0.0"
        assert "module level" in str(caught.value)
    assert PeriodicTask.objects.filter(name__startswith=PERIODIC_PREFIX).count() == 1


@pytest.mark.django_db
def test_a_repeating_schedule_needs_whole_seconds(site: Path) -> None:
    runtime.activate("ticker")
    plugin = runtime.get_loader().get("ticker")
    with pytest.raises(ScheduleError, match="whole seconds"):
        plugin.api.schedule(plugin.module.tick, 0.3, repeat=True)
    with pytest.raises(ScheduleError, match="positive number"):
        plugin.api.schedule(plugin.module.tick, -1)


@pytest.mark.django_db
def test_a_one_shot_runs_the_function_in_a_worker_task(site: Path, eager: None) -> None:
    runtime.activate("ticker")
    plugin = runtime.get_loader().get("ticker")

    sid = plugin.api.schedule(plugin.module.once, 5)

    assert sid == "ticker:once"
    assert plugin.api.storage.get_sync("once") == 1
    assert not PeriodicTask.objects.filter(name=f"{PERIODIC_PREFIX}ticker:once").exists()


@pytest.mark.django_db
def test_a_one_shot_replaces_a_repeating_schedule_of_the_same_function(
    site: Path, eager: None
) -> None:
    runtime.activate("ticker")
    plugin = runtime.get_loader().get("ticker")
    plugin.api.schedule(plugin.module.tick, 5)
    assert not PeriodicTask.objects.filter(name=f"{PERIODIC_PREFIX}ticker:tick").exists()


@pytest.fixture
def sent() -> Iterator[list[dict[str, Any]]]:
    """Tasks go to an in-memory broker; returns the kwargs of each task sent, in order."""
    from celery.signals import before_task_publish

    kwargs_sent: list[dict[str, Any]] = []

    def record(body: Any = None, **extra: Any) -> None:
        kwargs_sent.append(body[1])  # task protocol 2: (args, kwargs, embed)

    conf = celery_app.conf
    saved = conf.broker_url, celery_app._pool, celery_app.amqp._producer_pool
    conf.broker_url, celery_app._pool, celery_app.amqp._producer_pool = "memory://", None, None
    before_task_publish.connect(record)
    try:
        yield kwargs_sent
    finally:
        before_task_publish.disconnect(record)
        celery_app.pool.force_close_all()
        conf.broker_url, celery_app._pool, celery_app.amqp._producer_pool = saved


@pytest.mark.django_db
def test_a_one_shot_runs_once_unless_replaced_or_cancelled_first(
    site: Path, sent: list[dict[str, Any]]
) -> None:
    runtime.activate("ticker")
    api = runtime.get_loader().get("ticker").api
    once = _module().once

    api.schedule(once, 60)  # say, by a web process activating the plugin
    api.schedule(once, 60)  # and again by a worker: this one replaces it
    first, second = sent
    assert run_scheduled(**first) == "skipped"
    assert run_scheduled(**second) == "ok"
    assert run_scheduled(**second) == "skipped"  # the broker delivered it twice: runs once

    api.schedule(once, 60)
    api.cancel_schedule("ticker:once")
    assert run_scheduled(**sent[2]) == "skipped"

    api.schedule(once, 60)
    CeleryScheduler().drop_owner("ticker@1.0.0")
    assert run_scheduled(**sent[3]) == "skipped"
    assert api.storage.get_sync("once") == 1


HELLO_ONCE = """
STATE = {}


def activate(api):
    STATE["api"] = api
    api.schedule(hello, 60)  # one-shot: a minute after the plugin is activated


def hello():
    storage = STATE["api"].storage
    storage.set_sync("hello", storage.get_sync("hello", 0) + 1)
"""


@pytest.mark.django_db
@pytest.mark.parametrize("trusted", [False, True], ids=["isolated", "trusted"])
def test_a_one_shot_made_in_activate_is_sent_once_per_activation_not_per_process(
    site: Path, sent: list[dict[str, Any]], settings: Any, trusted: bool
) -> None:
    from django.core.cache import cache

    if trusted:
        settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "TRUSTED_PLUGINS": ["hello-once"]}
    write_plugin(site, "hello-once", HELLO_ONCE, MANIFEST)
    runtime.activate("hello-once")
    assert [k["function"] for k in sent] == ["hello"]
    # A new process starts the plugin (its activate() runs again): the one-shot pending for this
    # activation stays as it is, nothing more is sent.
    runtime.reset()
    runtime.start()
    assert len(sent) == 1
    assert run_scheduled(**sent[0]) == "ok"
    # And once it has run, processes started later do not run it again.
    runtime.reset()
    runtime.start()
    assert len(sent) == 1
    assert runtime.get_loader().get("hello-once").api.storage.get_sync("hello") == 1
    # The operator activating it again (or reloading it) is a new activation: sent again.
    runtime.deactivate("hello-once")
    runtime.activate("hello-once")
    assert len(sent) == 2 and run_scheduled(**sent[1]) == "ok"
    runtime.reload("hello-once")
    assert len(sent) == 3
    # Outside activate() a one-shot still replaces the pending one.
    plugin = runtime.get_loader().get("hello-once")
    plugin.api.schedule(plugin.module.hello, 60)
    assert len(sent) == 4 and run_scheduled(**sent[2]) == "skipped"
    runtime.uninstall("hello-once")
    assert cache.get("course_plugins:activation-one-shots:hello-once") is None


@pytest.mark.django_db
def test_uninstall_leaves_no_schedule_marker_in_the_cache_and_voids_pending_one_shots(
    site: Path, sent: list[dict[str, Any]]
) -> None:
    from django.core.cache import cache

    runtime.activate("ticker")
    api = runtime.get_loader().get("ticker").api
    api.schedule(_module().once, 60)  # pending when the plugin is uninstalled
    runtime.uninstall("ticker")
    assert cache.get("course_plugins:schedule-voided:ticker") is None  # not kept for 7 days
    assert run_scheduled(**sent[0]) == "skipped"
    # Its folder is still there: discovered again, activated again (its activate() schedules
    # only tick). The one-shot of the earlier installation still never runs, though its token
    # is still the latest: it was made before this installation's row.
    runtime.discover()
    runtime.activate("ticker")
    assert run_scheduled(**sent[0]) == "skipped"
    once = runtime.get_loader().get("ticker").module.once
    runtime.get_loader().get("ticker").api.schedule(once, 60)
    assert run_scheduled(**sent[-1]) == "ok"  # a one-shot of this installation runs
    assert cache.get("course_plugins:schedule-voided:ticker") is None


@pytest.mark.django_db
def test_a_one_shot_the_broker_does_not_take_waits_in_the_outbox_and_runs_once(
    site: Path, sent: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombu.exceptions import OperationalError

    from course_plugins.models import OutboxMessage
    from course_plugins.site import broker, outbox

    runtime.activate("ticker")
    api = runtime.get_loader().get("ticker").api
    once = _module().once
    tries: list[float] = []
    real_producer = broker.producer

    def down(timeout: float = broker.SEND_TIMEOUT) -> Any:
        tries.append(timeout)
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(outbox, "_broker_failed_at", 0.0)
    monkeypatch.setattr(broker, "producer", down)
    api.schedule(once, 60)  # tried once, with the short timeout, then left in the outbox
    api.schedule(once, 60)  # the broker just failed here: not even tried, straight to the outbox
    assert tries == [broker.SEND_TIMEOUT]
    assert sent == []
    assert OutboxMessage.objects.count() == 2

    monkeypatch.setattr(broker, "producer", real_producer)  # the broker is back
    assert outbox.relay() == 2
    assert OutboxMessage.objects.count() == 0
    first, second = sent
    assert run_scheduled(**first) == "skipped"  # replaced by the second
    assert run_scheduled(**second) == "ok"
    assert run_scheduled(**second) == "skipped"
    assert api.storage.get_sync("once") == 1


@pytest.mark.django_db
def test_a_one_shot_made_while_the_cache_was_down_is_listed_and_can_still_be_cancelled(
    site: Path, sent: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from course_plugins.models import OutboxMessage
    from course_plugins.site import outbox, scheduling

    runtime.activate("ticker")
    api = runtime.get_loader().get("ticker").api
    once = _module().once
    real_cache = scheduling._cache

    class Down:
        def set(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("Error 111 connecting to the cache")

    monkeypatch.setattr(scheduling, "_cache", Down)
    sid = api.schedule(once, 60)  # no token stored: the one-shot waits in the outbox
    monkeypatch.setattr(scheduling, "_cache", real_cache)  # the cache is back
    assert OutboxMessage.objects.count() == 1
    [listed] = [s for s in CeleryScheduler().scheduled("ticker@1.0.0") if s.get("waiting")]
    assert listed["id"] == sid and listed["repeat"] is False
    assert 0 < listed["delay_seconds"] <= 60

    assert api.cancel_schedule(sid) is True
    assert OutboxMessage.objects.count() == 0  # it never reaches the broker
    assert outbox.relay() == 0 and sent == []
    assert [s for s in CeleryScheduler().scheduled("ticker@1.0.0") if s.get("waiting")] == []
