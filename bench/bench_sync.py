"""Benchmark: how fast a plugin toggle reaches another process, and what the check costs a request.

- propagation: one site process toggles a plugin through ``runtime`` (as the admin does), a second
  one (``tests/django_proc.py watch``, calling ``runtime.check()`` as requests would) reports
  when it follows; median / p90 / max of 20 toggles made at random moments, measured from the
  moment the toggle returned. The bound is ``SYNC_INTERVAL`` (1 s) plus the time
  to apply the change.
- per-request overhead: ``SyncMiddleware`` vs a no-op middleware around the same view, in ns per
  call, in steady state (between two looks at the stamp).

Run through ``bench/run.py`` (``make bench``) or alone: ``python bench/bench_sync.py``.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TOGGLES = 20
PLUGIN = "bench-toggle"


def propagation(toggles: int = TOGGLES) -> list[float]:
    """Return the seconds each of ``toggles`` toggles took to reach a second process."""
    from django_proc import Proc, migrate, site_env
    from plugin_factory import write_plugin

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        plugins = base / "plugins"
        write_plugin(plugins, PLUGIN, "def activate(api):\n    pass\n")
        env = site_env(base, plugins)
        migrate(env)
        toggler = Proc(env, "serve")
        toggler.read()
        toggler.request(op="deactivate", name=PLUGIN)
        watcher = Proc(env, "watch", PLUGIN)
        try:
            watcher.read()  # its initial state
            times = []
            rng = random.Random(7)
            for i in range(toggles):
                # Toggle at a random moment of the watcher's look cycle, as an admin would;
                # right after its last look is the worst case (one whole SYNC_INTERVAL).
                time.sleep(rng.uniform(0, 1.0))
                op = "activate" if i % 2 == 0 else "deactivate"
                done = toggler.request(op=op, name=PLUGIN)
                seen = watcher.read(timeout=30)
                assert seen["state"] == done["state"], (seen, done)
                times.append(seen["t"] - done["t"])
            return times
        finally:
            watcher.close()
            toggler.close()


def request_overhead(number: int = 200_000) -> dict[str, float]:
    """Return ns per call of a request through SyncMiddleware and through a no-op middleware."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django

    django.setup()
    from django.http import HttpResponse
    from django.test import RequestFactory

    from course_plugins import middleware
    from course_plugins.site import runtime

    response = HttpResponse("ok")

    def view(request: Any) -> HttpResponse:
        return response

    class NoopMiddleware:
        def __init__(self, get_response: Any) -> None:
            self.get_response = get_response

        def __call__(self, request: Any) -> Any:
            return self.get_response(request)

    request = RequestFactory().get("/")
    runtime.prime()  # this process "has followed" the current stamp: no database is touched
    runtime.check()  # the first look (a cache read, nothing to apply); steady state from here
    with_sync = middleware.SyncMiddleware(view)
    noop = NoopMiddleware(view)
    best = {}
    for label, handler in (("noop", noop), ("sync", with_sync)):
        runs = timeit.repeat(lambda h=handler: h(request), number=number, repeat=5)
        best[label] = min(runs) / number * 1e9
    check_runs = timeit.repeat(runtime.check, number=number, repeat=5)
    best["check"] = min(check_runs) / number * 1e9
    return best


def main() -> dict[str, Any]:
    """Run both measurements, print them, and return them."""
    times = propagation()
    overhead = request_overhead()
    result = {
        "propagation_median_s": statistics.median(times),
        "propagation_p90_s": statistics.quantiles(times, n=10)[-1],
        "propagation_max_s": max(times),
        "request_noop_ns": overhead["noop"],
        "request_sync_ns": overhead["sync"],
        "request_overhead_ns": overhead["sync"] - overhead["noop"],
        "check_ns": overhead["check"],
    }
    print(f"sync: toggle -> second process, {len(times)} toggles (SYNC_INTERVAL 1.0 s)")
    print(
        f"  median {result['propagation_median_s'] * 1000:.0f} ms, "
        f"p90 {result['propagation_p90_s'] * 1000:.0f} ms, "
        f"max {result['propagation_max_s'] * 1000:.0f} ms"
    )
    print(
        f"sync: per request, steady state: no-op middleware {result['request_noop_ns']:.0f} ns, "
        f"SyncMiddleware {result['request_sync_ns']:.0f} ns "
        f"(+{result['request_overhead_ns']:.0f} ns; check() alone {result['check_ns']:.0f} ns)"
    )
    return result


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"({time.monotonic() - started:.1f} s)")
