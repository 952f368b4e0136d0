"""Benchmark: what the three example plugins cost the example site's course creation, trusted and
isolated.

``courses.services.create_course`` on a SQLite file (the ``make demo`` database), with the
example site's settings and ``DEBUG`` off (Celery on the embedded filesystem broker; no worker
needs to run: the messages only have to be handed over). Four set-ups, measured in alternating
blocks in this one process:

- ``none``:     no plugin active (the platform alone: the course row and its commit);
- ``trusted``:  course-validator, notification-enhancer and analytics-tracker active, trusted
  (in-process), with their default settings (analytics-tracker counts in a Celery worker);
- ``isolated``: the same three isolated (each in its confined worker process);
- ``floor``:    ``trusted`` plus one raw ``multiprocessing.Pipe`` round trip of the course dict
  to an echo process in the before-save hook: what any create that waits for one other process
  costs here, the physical limit of ``isolated`` (for information).

Targets: ``trusted`` p50 <= 1.2 x ``none`` (what the plugins cost a create) and ``isolated`` p50
<= 1.3 x ``trusted`` (what isolation costs). A second pass runs analytics-tracker with
``background: false`` (it counts and forwards every event in the request that caused it) and
prints the same figures for information: there the plugins' own database writes make the cost.

Run through ``bench/run.py`` or alone: ``python bench/bench_course_create.py``; with
``DATABASE_URL`` set (``postgres://...``, an empty database) on that database instead of SQLite.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COURSE = {"title": "Python basics", "description": "Learn Python step by step",
          "published": False, "created_by": "alice"}
BLOCKS = 6
PER_BLOCK = 80
WARM_UP = 10
MODES = ("none", "trusted", "isolated", "floor")
TARGET_PLUGINS = 1.2
TARGET_ISOLATION = 1.3

_names = itertools.count()


def _django() -> None:
    folder = tempfile.mkdtemp(prefix="bench_course_create_")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    # As a production site runs: with DEBUG on, Django formats and keeps every SQL statement
    # with its parameters (the outbox row's event text included), which is not what a site pays.
    os.environ.setdefault("DJANGO_DEBUG", "0")
    os.environ["SQLITE_PATH"] = os.path.join(folder, "db.sqlite3")
    os.environ["COURSE_VAR_DIR"] = folder  # the filesystem broker's queue folder
    for name in ("CELERY_BROKER_URL", "REDIS_URL", "CELERY_TASK_ALWAYS_EAGER"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import example_project.celery  # noqa: F401 - the site's Celery app, as a web process has it


def measure(background: bool, blocks: int = BLOCKS, per_block: int = PER_BLOCK,
            modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    """p50 (ms) of create_course in each of ``modes``, in alternating blocks."""
    from bench_isolation import _echo  # the FILTER benchmark's echo process (bench/ on the path)

    from course_plugins.api.platform_api import Services, default_api_factory
    from course_plugins.core.hook_manager import HookManager
    from course_plugins.core.plugin_loader import PluginLoader
    from course_plugins.core.scheduler import ThreadScheduler
    from course_plugins.site import outbox
    from example_project.courses import services

    services_ = Services.django()
    services_.config_store.update("analytics-tracker", {"background": background})
    samples: dict[str, list[float]] = {mode: [] for mode in modes}

    def create() -> None:
        services.create_course({**COURSE, "name": f"course-{next(_names)}"})

    mine, theirs = multiprocessing.Pipe()
    echo = multiprocessing.get_context("spawn").Process(target=_echo, args=(theirs,), daemon=True)
    echo.start()

    def round_trip(course: dict[str, Any]) -> dict[str, Any]:
        mine.send(course)
        back: dict[str, Any] = mine.recv()
        return back

    def block(mode: str) -> None:
        scheduler = ThreadScheduler()
        loader = PluginLoader([ROOT / "plugin_dirs"], api_factory=default_api_factory(services_),
                              scheduler=scheduler,
                              trusted=(mode in ("trusted", "floor")) or None)
        hook = HookManager.get_instance().get("before-course-save")
        try:
            if mode != "none":
                loader.discover_all()
                active = loader.activate_all()
                assert len(active) == 3, [p.error for p in loader.plugins]
            if mode == "floor":
                assert hook is not None
                hook.add(round_trip, priority=100)
            for _ in range(WARM_UP):
                create()
            for _ in range(per_block):
                started = time.perf_counter()
                create()
                samples[mode].append(time.perf_counter() - started)
            outbox.flush_relay()  # what this block handed over is sent before the next one
        finally:
            if mode == "floor" and hook is not None:
                hook.remove(round_trip)
            loader.close()
            scheduler.close()

    try:
        for _ in range(blocks):
            for mode in modes:
                block(mode)
    finally:
        mine.send(None)
        echo.join(5)
    p50 = {mode: statistics.median(samples[mode]) * 1000 for mode in modes}
    result = {
        "p50_ms": p50,
        "plugins": p50["trusted"] / p50["none"],
        "isolation": p50["isolated"] / p50["trusted"],
    }
    if "floor" in p50:
        result["floor"] = p50["floor"] / p50["trusted"]
        result["isolation_over_floor"] = p50["isolated"] / p50["floor"]
    return result


def _verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f}x  (target <= {target:g}x)  {'ok' if ratio <= target else 'MISSED'}"


def main() -> dict[str, Any]:
    """Measure both passes, print them against their targets, and return them."""
    import logging

    logging.getLogger("course_plugins").setLevel(logging.WARNING)
    _django()
    results: dict[str, Any] = {}
    for background, title in ((True, "default settings (analytics-tracker in the background)"),
                              (False, "analytics-tracker with background: false (information)")):
        # The floor is measured with the default settings only (the target's set-up).
        result = measure(background, modes=MODES if background else MODES[:3])
        results["background" if background else "in_request"] = result
        p50 = result["p50_ms"]
        print(f"create_course, {title}: p50 of {BLOCKS} x {PER_BLOCK} per set-up")
        print(f"  no plugin  {p50['none']:7.3f} ms")
        print(f"  trusted    {p50['trusted']:7.3f} ms   plugins / none     "
              + (_verdict(result["plugins"], TARGET_PLUGINS) if background
                 else f"{result['plugins']:.2f}x"))
        print(f"  isolated   {p50['isolated']:7.3f} ms   isolated / trusted "
              + (_verdict(result["isolation"], TARGET_ISOLATION) if background
                 else f"{result['isolation']:.2f}x"))
        if "floor" in p50:
            print(f"  floor      {p50['floor']:7.3f} ms   floor / trusted    "
                  f"{result['floor']:.2f}x  (trusted + one raw Pipe round trip of the course: "
                  "the least an isolated create can cost here)")
            print(f"  isolated / floor {result['isolation_over_floor']:.2f}x (what isolation adds "
                  "beyond the round trip itself)")
    return results


if __name__ == "__main__":
    main()
