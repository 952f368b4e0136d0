"""A trusted plugin cut off at its budget again and again leaves logging, storage and locks usable.

The budget may only interrupt the plugin's own code: never inside logging, a store, a lock's
``__exit__``, a finalizer, or after the guarded call returned (``core.watchdog``).
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plugin_factory import write_plugin

from course_plugins.api.platform_api import Services, default_api_factory
from course_plugins.core import watchdog
from course_plugins.core.health import health
from course_plugins.core.hook_manager import HookManager
from course_plugins.core.options import options
from course_plugins.core.plugin_loader import PluginLoader
from course_plugins.core.scheduler import ThreadScheduler

CHATTY = """
def activate(api):
    @api.hooks["after-course-save"].add
    def chatter(course, created):
        n = 0
        while True:
            n += 1
            api.log.info("tick %s of %s", n, course["title"])
            api.storage.set_sync("ticks", n)
"""


@pytest.fixture
def lenient() -> Iterator[None]:
    saved = (options.strict, options.max_failures)
    options.strict, options.max_failures = False, 10**9  # never quarantined during the test
    try:
        yield
    finally:
        options.strict, options.max_failures = saved


@pytest.fixture
def handler() -> Iterator[logging.Handler]:
    """A real handler with its lock on the plugins' logger (what a site has)."""
    stream = logging.StreamHandler(io.StringIO())
    plugins = logging.getLogger("course_plugins.plugins")
    level, propagate = plugins.level, plugins.propagate
    plugins.addHandler(stream)
    plugins.setLevel(logging.INFO)
    plugins.propagate = False  # keep 1000 tracebacks out of the captured log
    try:
        yield stream
    finally:
        plugins.removeHandler(stream)
        plugins.setLevel(level)
        plugins.propagate = propagate


def free(lock: Any) -> bool:
    """Whether ``lock`` can be taken (and is given back at once)."""
    if lock is None:
        return True
    if not lock.acquire(timeout=5):
        return False
    lock.release()
    return True


def in_other_thread(fn: Any, timeout: float = 10.0) -> Any:
    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"{fn} blocked in another thread: a lock was left held"
    return box[0]


def test_a_logging_plugin_interrupted_1000_times_leaves_everything_usable(
    tmp_path: Path, lenient: None, handler: logging.Handler
) -> None:
    write_plugin(
        tmp_path,
        "chatty",
        CHATTY,
        "hooks: [after-course-save]\npermissions: [storage]\ntimeout_seconds: 0.05\n",
    )
    services = Services.in_memory()
    hooks = HookManager()
    loader = PluginLoader(
        [tmp_path],
        hooks=hooks,
        api_factory=default_api_factory(services),
        scheduler=ThreadScheduler(),
        trusted=True,  # the in-process budget is the point (isolated plugins are killed instead)
    )
    loader.discover_all()
    loader.load("chatty")
    loader.activate("chatty")
    [reg] = hooks["after-course-save"].registrations
    stray: list[Any] = []
    previous_hook, previous_unraisable = threading.excepthook, sys.unraisablehook
    threading.excepthook = lambda args: stray.append(args.exc_value)
    sys.unraisablehook = lambda args: stray.append(args.exc_value)
    runs_per_thread, threads = 125, 8
    errors: list[BaseException] = []

    def runner(i: int) -> None:
        try:
            for j in range(runs_per_thread):
                assert hooks.run_sync("after-course-save", {"title": f"t{i}.{j}"}, True) == []
        except BaseException as exc:  # reported below, with the thread's own traceback
            errors.append(exc)

    try:
        workers = [threading.Thread(target=runner, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert not any(w.is_alive() for w in workers)
    finally:
        threading.excepthook, sys.unraisablehook = previous_hook, previous_unraisable
        loader.deactivate("chatty")
        loader.close()
        health.reset("chatty@1.0.0")

    assert errors == [] and stray == []
    assert reg.stats.timeouts == reg.stats.calls == runs_per_thread * threads
    # Everything the plugin was using works from another thread:
    assert in_other_thread(lambda: free(handler.lock))
    in_other_thread(lambda: logging.getLogger("course_plugins.plugins.x").info("still logging"))
    assert in_other_thread(lambda: services.storage_store.get("chatty", "ticks", None)) >= 1
    in_other_thread(lambda: services.storage_store.set("other", "k", 1))
    assert in_other_thread(lambda: free(getattr(logging, "_lock", None)))
    assert watchdog._stats()["armed"] == 0
