"""A trusted plugin writing to the database, cut off at its budget again and again, leaves the ORM
usable from other threads: the budget never lands inside a query or a transaction."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from plugin_factory import write_plugin

from course_plugins.api.platform_api import Services, default_api_factory
from course_plugins.core.event_bus import EventBus
from course_plugins.core.health import health
from course_plugins.core.hook_manager import HookManager
from course_plugins.core.options import options
from course_plugins.core.plugin_loader import PluginLoader
from course_plugins.core.scheduler import ThreadScheduler
from course_plugins.models import Plugin

pytestmark = pytest.mark.django_db(transaction=True)

RUNS = 100

WRITER = """
def activate(api):
    @api.hooks["after-course-save"].add
    def writer(course, created):
        n = 0
        while True:
            n += 1
            api.storage.set_sync("ticks", n)
            api.log.info("wrote %s", n)
"""


@pytest.fixture
def lenient() -> Iterator[None]:
    saved = (options.strict, options.max_failures)
    options.strict, options.max_failures = False, 10**9
    try:
        yield
    finally:
        options.strict, options.max_failures = saved


def in_other_thread(fn: Any) -> Any:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        finally:
            connection.close()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the database was left unusable (a lock or transaction held)"
    return box[0]


def test_a_database_writing_plugin_interrupted_many_times_leaves_the_orm_usable(
    tmp_path: Any, lenient: None
) -> None:
    write_plugin(
        tmp_path,
        "writer",
        WRITER,
        "hooks: [after-course-save]\npermissions: [storage]\ntimeout_seconds: 0.05\n",
    )
    hooks = HookManager()
    loader = PluginLoader(
        [tmp_path],
        hooks=hooks,
        bus=EventBus(),
        api_factory=default_api_factory(Services.django()),
        scheduler=ThreadScheduler(),
        trusted=True,  # the in-process budget is the point (isolated plugins are killed instead)
    )
    loader.discover_all()
    loader.activate("writer")
    [reg] = hooks["after-course-save"].registrations
    errors: list[BaseException] = []

    stop = threading.Event()
    reads: list[int] = []

    def runner() -> None:  # one writer: SQLite takes one writer at a time anyway
        try:
            for _ in range(RUNS):
                assert hooks.run_sync("after-course-save", {"title": "t"}, True) == []
                assert not connection.in_atomic_block  # no transaction left open
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            stop.set()
            connection.close()

    def reader() -> None:  # the ORM keeps answering another thread meanwhile
        try:
            while not stop.is_set():
                reads.append(Plugin.objects.count())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    try:
        workers = [threading.Thread(target=runner), threading.Thread(target=reader)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(300)
    finally:
        loader.deactivate("writer")
        loader.close()
        health.reset("writer@1.0.0")
    assert errors == [] and reads
    assert reg.stats.timeouts == reg.stats.calls == RUNS
    assert in_other_thread(lambda: Plugin.objects.count()) >= 0
    store = Services.django().storage_store
    assert in_other_thread(lambda: store.get("writer", "ticks", None)) >= 1
    in_other_thread(lambda: store.set("writer", "after", 1))
