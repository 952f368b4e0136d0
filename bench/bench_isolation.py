"""Benchmark: what isolation costs an isolated plugin's FILTER call, against the IPC itself.

``hooks.run_sync("before-course-save", course)`` where the one function is an isolated plugin's
(a worker round trip: the course dict out, the changed dict back), against a raw
``multiprocessing.Pipe`` round trip of the same dict to an echo process, measured in this one
process, interleaved. Target: p50 ratio <= 3 (the IPC is the physical limit). For information, the
same call when the function lets the dict through unchanged (a validator): the worker then
answers "the same as the argument" and the dict does not cross back. What isolation costs the
example site's course creation is ``bench_course_create.py``.

Run through ``bench/run.py`` or alone: ``python bench/bench_isolation.py``.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import tempfile
import time
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
TARGET_FILTER_RATIO = 3.0

PLUGIN = '''
def activate(api):
    @api.hooks["before-course-save"].add
    def tidy(course):
        if course.get("tidy"):
            course["title"] = course["title"].strip().capitalize() + "."
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

            changed = {**COURSE, "tidy": True}

            def isolated() -> None:
                hooks.run_sync("before-course-save", changed)

            def passed() -> None:
                hooks.run_sync("before-course-save", COURSE)

            samples: dict[str, list[float]] = {"pipe": [], "isolated": [], "passed": []}
            measured = (("pipe", pipe), ("isolated", isolated), ("passed", passed))
            for _ in range(200):  # warm-up
                for _name, fn in measured:
                    fn()
            for _ in range(rounds):
                for name, fn in measured:
                    started = time.perf_counter()
                    fn()
                    samples[name].append(time.perf_counter() - started)
        finally:
            loader.close()
            mine.send(None)
            echo.join(5)
    pipe_us, isolated_us = _p50_us(samples["pipe"]), _p50_us(samples["isolated"])
    passed_us = _p50_us(samples["passed"])
    return {"pipe_p50_us": pipe_us, "isolated_p50_us": isolated_us,
            "ratio": isolated_us / pipe_us, "passed_p50_us": passed_us,
            "passed_ratio": passed_us / pipe_us}


def main() -> dict[str, Any]:
    """Measure, print the figures against the target, and return them."""
    filtered = filter_call()
    print(f"FILTER call, small course dict (p50, {ROUNDS} interleaved rounds)")
    print(f"  raw multiprocessing.Pipe round trip  {filtered['pipe_p50_us']:8.1f} us")
    print(f"  isolated plugin's FILTER call        {filtered['isolated_p50_us']:8.1f} us"
          f"   (the dict changed and sent back)")
    print(f"  ratio {filtered['ratio']:.2f} (target <= {TARGET_FILTER_RATIO:g})"
          f"  {'ok' if filtered['ratio'] <= TARGET_FILTER_RATIO else 'OVER TARGET'}")
    print(f"  the same call letting the dict through {filtered['passed_p50_us']:6.1f} us"
          f"   (ratio {filtered['passed_ratio']:.2f}, for information)")
    return {"filter": filtered}


if __name__ == "__main__":
    main()
