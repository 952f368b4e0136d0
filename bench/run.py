"""Run every benchmark: import each ``bench/bench_*.py`` module and call its ``main()`` in turn.

``make bench`` (or ``python bench/run.py [name ...]`` to run only ``bench_<name>.py``). Each
``main()`` prints its own table and returns its figures; a benchmark that fails is reported and
the others still run. Exits non-zero if any failed. Benchmarks are not tests: run them on a quiet
machine and compare ratios measured in one process, not absolute numbers across machines.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def discover(names: list[str]) -> list[Path]:
    """Return the benchmark files to run: all ``bench_*.py``, or those named on the command line."""
    files = sorted(HERE.glob("bench_*.py"))
    if names:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in names}
        files = [f for f in files if f.stem in wanted]
        missing = wanted - {f.stem for f in files}
        if missing:
            raise SystemExit(f"no such benchmark: {', '.join(sorted(missing))} (in {HERE})")
    return files


def run(path: Path) -> Any:
    """Import ``path`` as a module and return what its ``main()`` returns."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    main = getattr(module, "main", None)
    if not callable(main):
        raise TypeError(f"{path.name} has no main() function")
    return main()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; return the process exit code (1 if any failed)."""
    for path in (ROOT, HERE):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    failed = []
    for path in discover(sys.argv[1:] if argv is None else argv):
        print(f"== {path.stem}")
        started = time.monotonic()
        try:
            run(path)
        except Exception:
            traceback.print_exc()
            failed.append(path.stem)
        print(f"   ({time.monotonic() - started:.1f} s)\n")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
