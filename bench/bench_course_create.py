"""Benchmark: what the three example plugins cost the example site's course creation, trusted and
isolated.

``courses.services.create_course`` on a SQLite file (the ``make demo`` database), with the
example site's settings and ``DEBUG`` off (Celery on the embedded filesystem broker; no worker
needs to run: the messages only have to be handed over). Three set-ups, measured in alternating
blocks in this one process:

- ``none``:     no plugin active (the platform alone: the course row and its commit);
- ``trusted``:  course-validator, notification-enhancer and analytics-tracker active, trusted
  (in-process), with their default settings (analytics-tracker counts in a Celery worker);
- ``isolated``: the same three isolated (each in its confined worker process).

Targets: ``trusted`` p50 <= 1.2 x ``none`` (what the plugins cost a create) and ``isolated`` p50
<= 1.3 x ``trusted`` (what isolation costs). A second pass runs analytics-tracker with
``background: false`` (it counts and forwards every event in the request that caused it) and
prints the same figures for information: there the plugins' own database writes make the cost.

Run through ``bench/run.py`` or alone: ``python bench/bench_course_create.py``; with
``DATABASE_URL`` set (``postgres://...``, an empty database) on that database instead of SQLite.
"""

from __future__ import annotations

import itertools
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
MODES = ("none", "trusted", "isolated")
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


def measure(background: bool, blocks: int = BLOCKS, per_block: int = PER_BLOCK) -> dict[str, Any]:
    """p50 (ms) of create_course in each mode, in alternating blocks."""
    from course_plugins.api.platform_api import Services, default_api_factory
    from course_plugins.core.plugin_loader import PluginLoader
    from course_plugins.core.scheduler import ThreadScheduler
    from course_plugins.site import outbox
    from example_project.courses import services

    services_ = Services.django()
    services_.config_store.update("analytics-tracker", {"background": background})
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}

    def create() -> None:
        services.create_course({**COURSE, "name": f"course-{next(_names)}"})

    def block(mode: str) -> None:
        scheduler = ThreadScheduler()
        loader = PluginLoader([ROOT / "plugin_dirs"], api_factory=default_api_factory(services_),
                              scheduler=scheduler, trusted=(mode == "trusted") or None)
        try:
            if mode != "none":
                loader.discover_all()
                active = loader.activate_all()
                assert len(active) == 3, [p.error for p in loader.plugins]
            for _ in range(WARM_UP):
                create()
            for _ in range(per_block):
                started = time.perf_counter()
                create()
                samples[mode].append(time.perf_counter() - started)
            outbox.flush_relay()  # what this block handed over is sent before the next one
        finally:
            loader.close()
            scheduler.close()

    for _ in range(blocks):
        for mode in MODES:
            block(mode)
    p50 = {mode: statistics.median(samples[mode]) * 1000 for mode in MODES}
    return {
        "p50_ms": p50,
        "plugins": p50["trusted"] / p50["none"],
        "isolation": p50["isolated"] / p50["trusted"],
    }


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
        result = measure(background)
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
    return results


if __name__ == "__main__":
    main()
