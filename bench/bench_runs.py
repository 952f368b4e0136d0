"""Benchmark: the cost of recording hook runs (the hook inspector's and the REST API's runs).

The same FILTER hook over a course dict, with 10 plugin-owned functions (each under its time
budget, as on a site; two of them change a field), run with the run recorder as its observer
and without. The two are timed alternately in this process (best of 30), so the ratio compares
like with like on a busy machine. A second line shows sampling (``RUNS_SAMPLE = 10``).

Run through ``bench/run.py`` (``make bench``) or alone: ``python bench/bench_runs.py``.
"""

from __future__ import annotations

import platform
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REPEAT = 30
NUMBER = 2_000
TARGETS = {"record": 2.0, "sampled": 1.2}


def best_pair(
    ours: Callable[[], Any], theirs: Callable[[], Any], number: int
) -> tuple[float, float]:
    """Best of ``REPEAT`` timeit runs of each, interleaved, in microseconds per call."""
    ours(), theirs()
    a, b = timeit.Timer(ours), timeit.Timer(theirs)
    best_a = best_b = float("inf")
    for _ in range(REPEAT):
        best_a = min(best_a, a.timeit(number))
        best_b = min(best_b, b.timeit(number))
    return best_a / number * 1e6, best_b / number * 1e6


def _hook(recorder: Any) -> Any:
    from course_plugins.core.hook_manager import HookManager, HookType

    hooks = HookManager(standard=False)
    hook = hooks.define("before-course-save", HookType.FILTER)
    for i in range(10):
        if i in (3, 7):

            def fn(course: dict[str, Any], i: int = i) -> dict[str, Any]:
                return {**course, f"field{i}": course.get(f"field{i}", 0) + 1}

        else:

            def fn(course: dict[str, Any], i: int = i) -> dict[str, Any] | None:
                return None

        fn.__qualname__ = f"check{i}"
        hook.add(fn, owner=f"plugin{i}@1.0.0")
    hook.observer = recorder
    return hook


def bench(sample: int) -> tuple[float, float]:
    """Microseconds per run: recorded (one in ``sample``) vs not recorded."""
    from course_plugins.core.runs import RunRecorder

    recorded, plain = _hook(RunRecorder(sample=sample)), _hook(None)
    course = {"title": "Intro", "description": "x" * 200, "price": 10, "published": False}
    assert recorded.run_sync(course) == plain.run_sync(course)
    return best_pair(lambda: recorded.run_sync(course), lambda: plain.run_sync(course), NUMBER)


def main() -> dict[str, Any]:
    rows = [
        ("record", "run_sync, every run recorded", *bench(1)),
        ("sampled", "run_sync, one run in 10 recorded", *bench(10)),
    ]
    print(f"runs: Python {platform.python_version()}, best of {REPEAT}, us per run")
    print(f"  {'case':<8} {'ours':<36} {'us':>7}   {'not recorded':>12}  {'ratio':>6}  target")
    result: dict[str, Any] = {}
    for key, label, ours, base in rows:
        ratio = ours / base
        target = TARGETS[key]
        verdict = f"<= {target:.1f}x {'ok' if ratio <= target else 'MISSED'}"
        print(f"  {key:<8} {label:<36} {ours:7.2f}   {base:12.2f}  {ratio:5.2f}x  {verdict}")
        result[key] = {"ours_us": ours, "baseline_us": base, "ratio": ratio, "target": target}
    return result


if __name__ == "__main__":
    main()
