"""Benchmark: what isolation costs — an isolated plugin's FILTER call against the IPC itself, and
the example site's course creation with the three example plugins isolated against trusted.

1. ``filter``: ``hooks.run_sync("before-course-save", course)`` where the one function is an
   isolated plugin's (a worker round trip: the course dict out, the dict back), against a raw
   ``multiprocessing.Pipe`` round trip of the same dict to an echo process, measured in this one
   process, interleaved. Target: p50 ratio <= 3 (the IPC is the physical limit).
2. ``create``: ``courses.services.create_course`` on a SQLite database with course-validator,
   notification-enhancer and analytics-tracker active (``plugin_dirs``), isolated and trusted,
   in alternating blocks. Target: isolated p50 <= 1.3 x trusted p50.

Run through ``bench/run.py`` or alone: ``python bench/bench_isolation.py``.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COURSE = {
    "name": "python-basics", "title": "Python basics", "description": "Learn Python step by step",
    "organization_id": 1, "published": False, "created_by": "alice",
}
ROUNDS = 3000
CREATE_BLOCKS = 6
CREATE_PER_BLOCK = 60
TARGET_FILTER_RATIO = 3.0
TARGET_CREATE_RATIO = 1.3

PLUGIN = '''
def activate(api):
    @api.hooks["before-course-save"].add
    def tidy(course):
        course["title"] = course["title"].strip()
        return course
'''


def _echo(conn: Any) -> None:
    while True:
        value = conn.recv()
        if value is None:
            return
        conn.send(value)


def _p50_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def filter_call(rounds: int = ROUNDS) -> dict[str, float]:
    """p50 (µs) of a raw Pipe round trip and of an isolated FILTER call, interleaved."""
    from course_plugins.api.platform_api import Services, default_api_factory
    from course_plugins.core.event_bus import EventBus
    from course_plugins.core.hook_manager import HookManager
    from course_plugins.core.plugin_loader import PluginLoader

    mine, theirs = multiprocessing.Pipe()
    echo = multiprocessing.get_context("spawn").Process(target=_echo, args=(theirs,), daemon=True)
    echo.start()
    with tempfile.TemporaryDirectory() as folder:
        plugin = Path(folder) / "tidy"
        plugin.mkdir()
        (plugin / "plugin.yaml").write_text(
            "name: tidy\nversion: 1.0.0\ndescription: bench\nauthor: bench\n"
            "hooks: [before-course-save]\n"
        )
        (plugin / "__init__.py").write_text(PLUGIN)
        hooks = HookManager()
        loader = PluginLoader([folder], hooks=hooks, bus=EventBus(),
                              api_factory=default_api_factory(Services.in_memory()))
        try:
            loader.discover_all()
            loader.activate("tidy")
            assert loader.get("tidy").isolated

            def pipe() -> None:
                mine.send(COURSE)
                mine.recv()

            def isolated() -> None:
                hooks.run_sync("before-course-save", COURSE)

            samples: dict[str, list[float]] = {"pipe": [], "isolated": []}
            for _ in range(200):  # warm-up
                pipe()
                isolated()
            for _ in range(rounds):
                for name, fn in (("pipe", pipe), ("isolated", isolated)):
                    started = time.perf_counter()
                    fn()
                    samples[name].append(time.perf_counter() - started)
        finally:
            loader.close()
            mine.send(None)
            echo.join(5)
    pipe_us, isolated_us = _p50_us(samples["pipe"]), _p50_us(samples["isolated"])
    return {"pipe_p50_us": pipe_us, "isolated_p50_us": isolated_us,
            "ratio": isolated_us / pipe_us}


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ["SQLITE_PATH"] = os.path.join(tempfile.mkdtemp(), "bench_isolation.sqlite3")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def course_create(blocks: int = CREATE_BLOCKS, per_block: int = CREATE_PER_BLOCK) -> dict[str, Any]:
    """p50 (ms) of create_course with the example plugins trusted and isolated, alternating."""
    _django()
    from course_plugins.api.platform_api import Services, default_api_factory
    from course_plugins.core.plugin_loader import PluginLoader
    from course_plugins.core.scheduler import ThreadScheduler
    from example_project.courses import services

    services_ = Services.django()
    services_.config_store.update("analytics-tracker", {"background": False})
    counter = itertools.count()
    samples: dict[str, list[float]] = {"trusted": [], "isolated": []}

    def block(mode: str) -> None:
        scheduler = ThreadScheduler()
        loader = PluginLoader([ROOT / "plugin_dirs"], api_factory=default_api_factory(services_),
                              scheduler=scheduler, trusted=(mode == "trusted") or None)
        try:
            loader.discover_all()
            active = loader.activate_all()
            assert len(active) == 3, [p.error for p in loader.plugins]
            create: Callable[[], Any] = lambda: services.create_course(  # noqa: E731
                {**COURSE, "name": f"course-{next(counter)}", "organization_id": None}
            )
            for _ in range(5):
                create()
            for _ in range(per_block):
                started = time.perf_counter()
                create()
                samples[mode].append(time.perf_counter() - started)
        finally:
            loader.close()
            scheduler.close()

    for _ in range(blocks):
        for mode in ("trusted", "isolated"):
            block(mode)
    trusted = statistics.median(samples["trusted"]) * 1000
    isolated = statistics.median(samples["isolated"]) * 1000
    return {"trusted_p50_ms": trusted, "isolated_p50_ms": isolated, "ratio": isolated / trusted}


def main() -> dict[str, Any]:
    """Run both measurements, print them against their targets, and return them."""
    filtered = filter_call()
    print(f"FILTER call, small course dict (p50, {ROUNDS} interleaved rounds)")
    print(f"  raw multiprocessing.Pipe round trip  {filtered['pipe_p50_us']:8.1f} us")
    print(f"  isolated plugin's FILTER call        {filtered['isolated_p50_us']:8.1f} us")
    print(f"  ratio {filtered['ratio']:.2f} (target <= {TARGET_FILTER_RATIO:g})"
          f"  {'ok' if filtered['ratio'] <= TARGET_FILTER_RATIO else 'OVER TARGET'}")
    created = course_create()
    print(f"create_course with the 3 example plugins (p50, {CREATE_BLOCKS} alternating blocks)")
    print(f"  trusted   {created['trusted_p50_ms']:8.3f} ms")
    print(f"  isolated  {created['isolated_p50_ms']:8.3f} ms")
    print(f"  ratio {created['ratio']:.2f} (target <= {TARGET_CREATE_RATIO:g})"
          f"  {'ok' if created['ratio'] <= TARGET_CREATE_RATIO else 'OVER TARGET'}")
    return {"filter": filtered, "create": created}


if __name__ == "__main__":
    main()
