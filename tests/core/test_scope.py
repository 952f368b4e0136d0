"""core.scope: entering a scope, the site-wide scope, interned excluded sets (no Django)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from course_plugins.core import scope as scope_mod
from course_plugins.core.scope import Scope, current_scope, effective, entered


@pytest.fixture(autouse=True)
def _no_site_exclusions():
    yield
    scope_mod.set_site_excluded(())


def test_default_is_site_wide_and_costs_nothing():
    assert current_scope.get() is None
    assert effective() is None


def test_entered_sets_and_restores_also_on_error():
    a = Scope.of(1, {"x"})
    with entered(a):
        assert current_scope.get() is a
        with entered(None):
            assert effective() is None
        assert effective() is a
    assert current_scope.get() is None
    with pytest.raises(RuntimeError), entered(a):
        raise RuntimeError("boom")
    assert current_scope.get() is None


def test_excluded_sets_are_interned_and_scopes_hashable():
    a = Scope.of(1, ["x", "y"])
    b = Scope.of(2, ("y", "x"))
    assert a.excluded is b.excluded
    assert Scope.of(3).excluded is Scope.of(4, []).excluded
    assert len({Scope.of(1, "z"), Scope.of(1, "z")}) == 1


def test_excludes_matches_plugin_name_of_an_owner_and_never_platform_code():
    s = Scope.of(1, {"validator"})
    assert s.excludes("validator@1.0.0")
    assert not s.excludes("validator-two@1.0.0")
    assert not s.excludes(None)


def test_site_scope_excludes_plugins_active_only_in_organizations():
    scope_mod.set_site_excluded({"org-only"})
    site = effective()
    assert site is not None and site.org is None and site.excluded == {"org-only"}
    with entered(Scope.of(7)):
        assert effective().excluded == frozenset()
    scope_mod.set_site_excluded(())
    assert effective() is None


def test_scope_follows_asyncio_tasks_but_not_new_threads():
    a = Scope.of(1, {"x"})
    seen = []

    async def child():
        seen.append(current_scope.get())

    async def main():
        with entered(a):
            await asyncio.create_task(child())

    asyncio.run(main())
    t = threading.Thread(target=lambda: seen.append(current_scope.get()))
    with entered(a):
        t.start()
        t.join()
    assert seen == [a, None]


def test_scope_reaches_async_functions_run_on_the_engine_loop():
    from course_plugins.core._engine_loop import run_coroutine_sync

    a = Scope.of(1, {"x"})

    async def read():
        return current_scope.get()

    with entered(a):
        assert run_coroutine_sync(read()) is a
    assert run_coroutine_sync(read()) is None
