"""Benchmark: a sandboxed call's round trip against a fresh interpreter and RestrictedPython.

Three ways to run ``result = 1 + 1`` (and the seed's ``process(data)`` example), measured in
this one process, alternating so that a busy machine does not favour one of them:

- ours:       ``SandboxedExecutor.exec_code`` (a child forked in advance by the zygote, confined
              by rlimits, seccomp and a network namespace, code checked and guarded)
- fresh:      what codejail does: a new ``python -I -S -c`` per call with rlimits set in
              ``preexec_fn``, result printed as JSON on stdout
- restricted: RestrictedPython in-process: ``compile_restricted`` + ``exec`` with its
              ``safe_globals`` (no process boundary at all: the floor, not a peer)

"sequential" calls follow one another at once; "paced" calls are 5 ms apart, as calls from a web
request are, which leaves the zygote time to fork the next child between calls. Figures are
p50/p95 in milliseconds. Run through ``bench/run.py`` or alone: ``python bench/bench_sandbox.py``.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TRIVIAL = "result = 1 + 1"
SEED = 'def process(data):\n    return data.upper()\nresult = process("hello")'
ROUNDS = 300
FRESH_ROUNDS = 40
TARGET_P50_MS = 2.0


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return (statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.95) - 1] * 1000)


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (512 * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (5, 6))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def fresh_interpreter(source: str) -> Any:
    """codejail's way: a new isolated interpreter per call, rlimits set before exec."""
    wrapped = f"{source}\nimport json, sys\nsys.stdout.write(json.dumps(result))"
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", wrapped],
        env={}, capture_output=True, timeout=10, preexec_fn=_limits, check=True,
    )
    return json.loads(done.stdout)


def restricted_python() -> Callable[[str], Any]:
    from RestrictedPython import compile_restricted, safe_globals
    from RestrictedPython.Guards import guarded_unpack_sequence, safer_getattr

    def run(source: str) -> Any:
        code = compile_restricted(source, "<bench>", "exec")
        namespace = dict(safe_globals, _getattr_=safer_getattr,
                         _unpack_sequence_=guarded_unpack_sequence)
        exec(code, namespace)
        return namespace.get("result")

    return run


def _measure(runs: dict[str, Callable[[], Any]], rounds: dict[str, int],
             pause: float) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(max(rounds.values())):
        for name, fn in runs.items():
            if i >= rounds[name]:
                continue
            started = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - started)
            if pause:
                time.sleep(pause)
    return samples


def main() -> dict[str, Any]:
    """Print the p50/p95 table with ratios; return the figures (milliseconds)."""
    from course_plugins.core.sandbox import SandboxedExecutor

    sandbox = SandboxedExecutor()
    restricted = restricted_python()
    layers = sandbox.layers()
    for source in (TRIVIAL, SEED):  # warm every path, and check that all three agree
        assert sandbox.exec_code(source) == restricted(source) == fresh_interpreter(source)

    figures: dict[str, Any] = {}
    print(f"python {platform.python_version()} on {platform.machine()}, layers: "
          + ", ".join(k for k, v in layers.items() if v is True))
    print(f"{'workload':<22}{'ours p50/p95':>16}{'fresh p50/p95':>18}{'RP p50/p95':>16}"
          f"{'fresh/ours':>12}{'ours/RP':>10}")
    for label, source, pause in (("trivial, sequential", TRIVIAL, 0.0),
                                 ("trivial, paced", TRIVIAL, 0.005),
                                 ("seed example, paced", SEED, 0.005)):
        samples = _measure(
            {"ours": lambda s=source: sandbox.exec_code(s),
             "fresh": lambda s=source: fresh_interpreter(s),
             "restricted": lambda s=source: restricted(s)},
            {"ours": ROUNDS, "fresh": FRESH_ROUNDS, "restricted": ROUNDS},
            pause,
        )
        ours, fresh, rp = (_percentiles(samples[k]) for k in ("ours", "fresh", "restricted"))
        figures[label] = {"ours": ours, "fresh": fresh, "restricted": rp,
                          "fresh_over_ours": fresh[0] / ours[0], "ours_over_rp": ours[0] / rp[0]}
        print(f"{label:<22}{ours[0]:>8.2f}/{ours[1]:<7.2f}{fresh[0]:>10.2f}/{fresh[1]:<7.2f}"
              f"{rp[0]:>8.3f}/{rp[1]:<7.3f}{fresh[0] / ours[0]:>10.1f}x{ours[0] / rp[0]:>9.0f}x")
    best = min(v["ours"][0] for v in figures.values())
    print(f"target: p50 <= {TARGET_P50_MS} ms for `{TRIVIAL}`: "
          f"{'met' if figures['trivial, paced']['ours'][0] <= TARGET_P50_MS else 'NOT met'} "
          f"paced ({figures['trivial, paced']['ours'][0]:.2f} ms), "
          f"{figures['trivial, sequential']['ours'][0]:.2f} ms sequential; best {best:.2f} ms")
    return figures


if __name__ == "__main__":
    main()
