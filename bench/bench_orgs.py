"""Benchmark: dispatching a hook on a site with 1,000 organizations vs a site without any.

Ten plugins each register one function (plugin-owned, so each runs under its time budget) on one
hook. The site without organizations runs the hook with no scope. The site with organizations has
1,000 of them, each with rows of its own (see ``build_state``): a settings override each, one in
ten switches a plugin off, every third switches on the tenth plugin, which the site has not
activated (so work with no organization skips it). Each call there is what the model-signal
bridge does: find the organization's scope (``organizations.scope_for``, cached per
organization), run the hook in it (``model_hooks._run_about``); calls cycle through the
1,000 organizations.

Figures are the best of 100 short interleaved timeit rounds (microseconds per call); the ratio is
the median of the 100 paired rounds' ratios (target <= 1.2). Memory is what ``tracemalloc`` sees
for the organization state with the scope of every organization built.

Run through ``bench/run.py`` (``make bench``) or alone: ``python bench/bench_orgs.py``.
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import timeit
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REPEAT = 100
NUMBER = 500
ORGS = 1000
PLUGINS = 10
TARGET = 1.2
MEMORY_TARGET_MB = 5.0


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django

    django.setup()


def build_state(orgs: int = ORGS) -> Any:
    """An ``OrgState`` of ``orgs`` organizations with rows of their own (no database).

    The site activated plugin-0 .. plugin-8; plugin-9 runs only where an organization switched it
    on (every third one). Every organization overrides a setting; one in ten switches one of the
    site's plugins off.
    """
    from course_plugins.core.scope import intern
    from course_plugins.site.organizations import OrgState

    names = [f"plugin-{i}" for i in range(PLUGINS)]
    rows: dict[str, dict[str, tuple[bool | None, dict[str, Any]]]] = {}
    for org in range(orgs):
        mine: dict[str, tuple[bool | None, dict[str, Any]]] = {
            names[org % (PLUGINS - 1)]: (None, {"min_length": 10 + org % 40}),
        }
        if org % 10 == 5:
            mine[names[(org + 1) % (PLUGINS - 1)]] = (False, {})
        if org % 3 == 0:
            mine[names[-1]] = (True, {})
        rows[str(org)] = mine
    return OrgState(frozenset(names[:-1]), intern({names[-1]}), rows)


def main() -> dict[str, Any]:
    _setup_django()
    from course_plugins.core import scope as scope_mod
    from course_plugins.core.hook_manager import HookManager
    from course_plugins.site import organizations

    hooks = HookManager()
    calls = [0]
    for i in range(PLUGINS):
        owner = f"plugin-{i}@1.0.0"

        def fn(course: dict[str, Any]) -> Any:
            calls[0] += 1
            return course

        fn.__qualname__ = f"check_{i}"
        hooks["before-course-save"].add(fn, owner=owner)
    data = {"title": "A course", "organization_id": 1}
    run_sync = hooks.run_sync

    def no_organizations() -> Any:
        return run_sync("before-course-save", data)

    cycle = itertools.cycle(range(ORGS)).__next__
    scope_for, entered = organizations.scope_for, scope_mod.entered
    current = scope_mod.current_scope

    def with_organizations() -> Any:
        # As the model-signal bridge runs a model hook (model_hooks._run_about).
        token = current.set(scope_for(cycle()))
        try:
            return run_sync("before-course-save", data)
        finally:
            current.reset(token)

    try:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        organizations.use(build_state())
        for org in range(ORGS):
            scope_for(org)
        state_mb = (tracemalloc.get_traced_memory()[0] - before) / 1e6
        tracemalloc.stop()

        # The site without organizations: no state, nothing excluded, no scope entered.
        saved = organizations.state()
        organizations.reset()
        no_organizations()
        base_t = timeit.Timer(no_organizations)
        orgs_t = timeit.Timer(with_organizations)
        best_base = best_orgs = float("inf")
        paired: list[float] = []
        for _ in range(REPEAT):
            organizations.reset()
            base_round = base_t.timeit(NUMBER)
            organizations.use(saved)
            orgs_round = orgs_t.timeit(NUMBER)
            best_base, best_orgs = min(best_base, base_round), min(best_orgs, orgs_round)
            paired.append(orgs_round / base_round)
        # What the organizations ran (a sanity check, not a timing): fewer than ten where the
        # organization switched a plugin off or did not switch plugin-9 on.
        calls[0] = 0
        for org in range(ORGS):
            with entered(scope_for(org)):
                hooks.run_sync("before-course-save", data)
        ran = calls[0]
    finally:
        organizations.reset()
    base_us, orgs_us = best_base / NUMBER * 1e6, best_orgs / NUMBER * 1e6
    ratio = statistics.median(paired)
    print(f"   hook with {PLUGINS} plugin functions, site without organizations: {base_us:8.2f} us")
    print(f"   same hook, {ORGS} organizations (scope per call, cycling):   {orgs_us:8.2f} us")
    print(
        f"   ratio {ratio:.2f}, median of {REPEAT} paired rounds (ratio of the bests "
        f"{orgs_us / base_us:.2f}) (target <= {TARGET:.2f}) {'ok' if ratio <= TARGET else 'OVER'}"
    )
    print(
        f"   organization state with {ORGS} scopes: {state_mb:.2f} MB "
        f"(target <= {MEMORY_TARGET_MB:.0f} MB) {'ok' if state_mb <= MEMORY_TARGET_MB else 'OVER'}"
    )
    print(
        f"   functions run per call: {PLUGINS} without organizations, {ran / ORGS:.2f} with "
        f"(the organizations' exclusions); time per call with organizations "
        f"{orgs_us - base_us:+.2f} us"
    )
    return {"base_us": base_us, "orgs_us": orgs_us, "ratio": ratio, "state_mb": state_mb}


if __name__ == "__main__":
    main()
