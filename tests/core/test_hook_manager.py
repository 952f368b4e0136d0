"""Tests for core.hook_manager: the three hook kinds, owners, budgets, stats, copy-on-write."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from course_plugins.core import hook_manager
from course_plugins.core.health import health
from course_plugins.core.hook_manager import (
    VETO_EXCEPTIONS,
    Hook,
    HookManager,
    HookType,
    Registration,
    hook,
)
from course_plugins.core.options import options
from course_plugins.core.standard import STANDARD_HOOKS
from course_plugins.exceptions import HookTypeError


@pytest.fixture(autouse=True)
def _engine_state(engine_state: None) -> None:
    """Every test here starts non-strict and leaves options and health as it found them."""


@pytest.fixture(autouse=True, params=["loop", "generated"])
def run_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs twice: through the engine's loops only, and through generated runs
    (``core._hook_runs``) made from a hook's first run on instead of after a few."""
    monkeypatch.setattr(hook_manager, "_WARM", 1 if request.param == "generated" else 10**9)
    return str(request.param)


@pytest.fixture
def strict() -> None:
    options.strict = True


def spin() -> None:
    while True:
        pass


# --- managers and standard hooks -----------------------------------------------------------------


def test_get_instance_is_process_wide_and_constructor_is_isolated(
    global_hooks: HookManager,
) -> None:
    assert HookManager.get_instance() is global_hooks
    isolated = HookManager()
    isolated["x"].add(lambda: 1)
    assert "x" not in global_hooks


@pytest.mark.parametrize("spec", STANDARD_HOOKS, ids=lambda s: s.name)
def test_standard_hooks_are_defined_with_their_types(hooks: HookManager, spec: Any) -> None:
    assert spec.name in hooks
    assert hooks[spec.name].type is HookType(spec.kind.value)
    assert hooks[spec.name].defined
    assert hooks[spec.name].description == spec.description


def test_seed_hooks_example_as_written(global_hooks: HookManager) -> None:
    from course_plugins.core.hook_manager import HookManager, hook

    hooks = HookManager.get_instance()

    @hook("before-course-save")
    def my_validation(course: dict[str, Any]) -> dict[str, Any]:
        return course

    hooks["before-course-save"].add(my_validation, priority=10)

    course_data = {"title": "Intro", "name": "intro"}
    result = hooks.run_sync("before-course-save", course_data)
    assert result == course_data
    assert hooks["before-course-save"].functions == [my_validation]


def test_seed_plugin_validate_course_vetoes(global_hooks: HookManager) -> None:
    @global_hooks["before-course-save"].add
    def validate_course(course: dict[str, Any]) -> dict[str, Any]:
        if not course.get("title"):
            raise ValueError("Course must have a title")
        return course

    with pytest.raises(ValueError, match="Course must have a title"):
        global_hooks.run_sync("before-course-save", {"title": ""})
    assert global_hooks.run_sync("before-course-save", {"title": "ok"}) == {"title": "ok"}


def test_standard_filter_hook_without_functions_returns_the_course(hooks: HookManager) -> None:
    course = {"title": "x"}
    assert hooks.run_sync("before-course-save", course) is course


# --- defining ------------------------------------------------------------------------------------


def test_hook_created_by_use_is_normal_and_untyped(hooks: HookManager) -> None:
    h = hooks["my-hook"]
    assert isinstance(h, Hook)
    assert h.type is HookType.NORMAL and not h.defined
    assert hooks["my-hook"] is h


def test_define_may_type_a_hook_created_by_use(hooks: HookManager) -> None:
    hooks["later"].add(lambda v: v + 1)
    hooks.define("later", HookType.FILTER)
    assert hooks.run_sync("later", 1) == 2


def test_define_same_type_again_is_a_noop(hooks: HookManager) -> None:
    h = hooks.define("x", HookType.ABNORMAL, description="first")
    fn = h.add(lambda: 1)
    assert hooks.define("x", HookType.ABNORMAL) is h
    assert h.functions == [fn] and h.description == "first"
    assert hooks.define("x", "ABNORMAL").type is HookType.ABNORMAL


def test_changing_a_defined_type_is_an_error(hooks: HookManager) -> None:
    with pytest.raises(HookTypeError, match="before-course-save.*FILTER.*NORMAL"):
        hooks.define("before-course-save", HookType.NORMAL)
    assert hooks["before-course-save"].type is HookType.FILTER


# --- adding, ordering, removing ------------------------------------------------------------------


def test_add_forms_all_return_fn(hooks: HookManager) -> None:
    h = hooks["x"]

    @h.add
    def a() -> str:
        return "a"

    @h.add(priority=5)
    def b() -> str:
        return "b"

    def c() -> str:
        return "c"

    assert h.add(c, priority=10) is c
    assert callable(a) and a() == "a" and b() == "b"
    assert h.functions == [b, a, c]
    assert hooks.run_sync("x") == ["b", "a", "c"]


def test_lower_priority_first_and_ties_in_registration_order(hooks: HookManager) -> None:
    h = hooks["x"]
    order = [(20, "late"), (10, "t1"), (0, "first"), (10, "t2"), (-5, "earliest"), (10, "t3")]
    for priority, label in order:
        h.add(lambda label=label: label, priority=priority)
    assert hooks.run_sync("x") == ["earliest", "first", "t1", "t2", "t3", "late"]
    assert [r.priority for r in h.registrations] == [-5, 0, 10, 10, 10, 20]


def test_hook_decorator_uses_process_wide_manager_with_priority(global_hooks: HookManager) -> None:
    @hook("x", priority=20)
    def second() -> int:
        return 2

    @hook("x", priority=1)
    def first() -> int:
        return 1

    assert global_hooks.run_sync("x") == [1, 2]


def test_remove(hooks: HookManager) -> None:
    h = hooks["x"]
    fn = h.add(lambda: 1)
    assert h.remove(fn) is True
    assert h.remove(fn) is False
    assert h.functions == [] and hooks.run_sync("x") == []


def test_adding_the_same_function_again_replaces_it(hooks: HookManager) -> None:
    h = hooks["x"]
    a = h.add(lambda: "a")
    b = h.add(lambda: "b", priority=5)
    h.add(a, priority=1)
    assert h.functions == [a, b]
    assert hooks.run_sync("x") == ["a", "b"]


def test_registrations_carry_owner_timeout_and_stats(hooks: HookManager) -> None:
    fn = hooks["x"].add(lambda: 1, priority=3, owner="p@1.0.0", timeout=2.0)
    [reg] = hooks["x"].registrations
    assert isinstance(reg, Registration)
    assert (reg.fn, reg.priority, reg.owner, reg.timeout) == (fn, 3, "p@1.0.0", 2.0)
    assert reg.stats.calls == 0


def test_remove_owner_everywhere(hooks: HookManager) -> None:
    hooks["a"].add(lambda: 1, owner="p@1")
    hooks["b"].add(lambda: 2, owner="p@1")
    keep = hooks["b"].add(lambda: 3, owner="q@1")
    platform = hooks["b"].add(lambda: 4)
    assert hooks.remove_owner("p@1") == 2
    assert hooks["a"].functions == [] and hooks["b"].functions == [keep, platform]
    assert hooks.remove_owner("p@1") == 0


def test_unknown_hook_runs_as_empty_normal(hooks: HookManager) -> None:
    assert hooks.run_sync("nobody-defined-this") == []
    assert "nobody-defined-this" not in hooks


def test_adding_a_non_callable_is_refused(hooks: HookManager) -> None:
    with pytest.raises(TypeError, match="not callable"):
        hooks["x"].add(42)  # type: ignore[call-overload]


# --- hook types ----------------------------------------------------------------------------------


def test_normal_collects_all_results_including_none(hooks: HookManager) -> None:
    h = hooks["x"]
    h.add(lambda v: v)
    h.add(lambda v: None)
    h.add(lambda v: v * 2)
    assert hooks.run_sync("x", 3) == [3, None, 6]


def test_abnormal_stops_at_first_non_none(hooks: HookManager) -> None:
    hooks.define("grade", HookType.ABNORMAL)
    called = []
    hooks["grade"].add(lambda s: called.append("a"))
    hooks["grade"].add(lambda s: called.append("b") or 0.0)  # 0.0 is not None: it wins
    hooks["grade"].add(lambda s: called.append("c") or 99)
    assert hooks.run_sync("grade", {}) == 0.0
    assert called == ["a", "b"]


def test_abnormal_returns_none_when_nobody_answers(hooks: HookManager) -> None:
    hooks["quiz-grade"].add(lambda s: None)
    assert hooks.run_sync("quiz-grade", {"answers": []}) is None


def test_filter_threads_value_and_passes_remaining_args(hooks: HookManager) -> None:
    h = hooks.define("content-transform", HookType.FILTER)
    h.add(lambda body, content, sep="": body + sep + content["suffix"])
    h.add(lambda body, content, sep="": None)  # keeps the value
    h.add(lambda body, content, sep="": body.upper())
    assert hooks.run_sync("content-transform", "hi", {"suffix": "there"}, sep=" ") == "HI THERE"


def test_filter_without_positional_argument_is_a_type_error(hooks: HookManager) -> None:
    with pytest.raises(TypeError, match="first positional argument"):
        hooks.run_sync("before-course-save")
    with pytest.raises(HookTypeError):
        asyncio.run(hooks.run("before-course-save"))


# --- sync and async ------------------------------------------------------------------------------


def _mixed(hooks: HookManager) -> None:
    h = hooks.define("mix", HookType.FILTER)

    @h.add
    async def add_one(v: int) -> int:
        await asyncio.sleep(0)
        return v + 1

    @h.add
    def double(v: int) -> int:
        return v * 2

    @h.add(owner="p@1")
    async def plus_ten(v: int) -> int:
        await asyncio.sleep(0)
        return v + 10


def test_run_sync_with_async_functions_without_a_loop(hooks: HookManager) -> None:
    _mixed(hooks)
    assert hooks.run_sync("mix", 1) == 14


def test_run_sync_inside_a_running_loop(hooks: HookManager) -> None:
    _mixed(hooks)

    async def django_async_view() -> int:
        return hooks.run_sync("mix", 1)

    assert asyncio.run(django_async_view()) == 14


def test_await_run_with_mixed_functions(hooks: HookManager) -> None:
    _mixed(hooks)
    assert asyncio.run(hooks.run("mix", 2)) == 16
    hooks.define("n", HookType.NORMAL)
    hooks["n"].add(lambda: "sync")

    @hooks["n"].add
    async def a() -> str:
        return "async"

    hooks.define("ab", HookType.ABNORMAL)
    hooks["ab"].add(lambda: None)

    @hooks["ab"].add
    async def answer() -> int:
        return 42

    assert asyncio.run(hooks.run("n")) == ["sync", "async"]
    assert asyncio.run(hooks.run("ab")) == 42
    assert asyncio.run(hooks.run("unknown")) == []


def test_async_function_calling_run_sync_does_not_deadlock(hooks: HookManager) -> None:
    @hooks["inner"].add
    async def inner() -> str:
        return "inner"

    @hooks["outer"].add
    async def outer() -> list[str]:
        return hooks.run_sync("inner")  # runs on the engine's loop thread: must not deadlock

    assert hooks.run_sync("outer") == [["inner"]]


# --- vetoes, isolation, strict -------------------------------------------------------------------


@pytest.mark.parametrize(
    "veto", [ValueError("no title"), ValidationError("bad"), PermissionDenied("nope")]
)
@pytest.mark.parametrize("owner", [None, "p@1"])
def test_vetoes_propagate_unchanged(hooks: HookManager, veto: Exception, owner: str | None) -> None:
    assert isinstance(veto, VETO_EXCEPTIONS)
    after = []

    def refuse(course: dict[str, Any]) -> None:
        raise veto

    hooks["before-course-save"].add(refuse, owner=owner)
    hooks["before-course-save"].add(lambda c: after.append(c))
    with pytest.raises(type(veto)) as info:
        hooks.run_sync("before-course-save", {})
    assert info.value is veto
    with pytest.raises(type(veto)) as info:
        asyncio.run(hooks.run("before-course-save", {}))
    assert info.value is veto
    assert after == []


def test_async_veto_propagates(hooks: HookManager) -> None:
    @hooks["before-quiz-save"].add(owner="p@1")
    async def refuse(quiz: dict[str, Any]) -> None:
        raise ValueError("quiz refused")

    with pytest.raises(ValueError, match="quiz refused"):
        hooks.run_sync("before-quiz-save", {})


@pytest.mark.parametrize("owner", [None, "broken@1.0.0"])
def test_other_errors_are_isolated_logged_and_the_run_goes_on(
    hooks: HookManager, caplog: pytest.LogCaptureFixture, owner: str | None
) -> None:
    h = hooks.define("content-transform", HookType.FILTER)  # fails open
    h.add(lambda c: {**c, "a": 1})

    def broken(course: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("plugin bug")

    h.add(broken, owner=owner)
    h.add(lambda c: {**c, "b": 2})
    with caplog.at_level(logging.ERROR, logger="course_plugins.plugins"):
        assert hooks.run_sync("content-transform", {}) == {"a": 1, "b": 2}
    [record] = caplog.records
    assert (owner or "platform") in record.getMessage()
    assert "content-transform" in record.getMessage() and "broken" in record.getMessage()
    assert "RuntimeError: plugin bug" in caplog.text and "Traceback" in caplog.text
    assert h.registrations[1].stats.errors == 1
    if owner:
        assert health.failures(owner) == 1


def test_isolated_error_in_normal_and_abnormal_and_async(hooks: HookManager) -> None:
    hooks["n"].add(lambda: 1)
    hooks["n"].add(lambda: 1 / 0, owner="p@1")
    hooks["n"].add(lambda: 3)
    assert hooks.run_sync("n") == [1, 3]

    hooks.define("ab", HookType.ABNORMAL)
    hooks["ab"].add(lambda: {}["missing"], owner="p@1")
    hooks["ab"].add(lambda: "answer")
    assert hooks.run_sync("ab") == "answer"

    @hooks["as"].add(owner="p@1")
    async def broken() -> None:
        raise KeyError("x")

    hooks["as"].add(lambda: "ok")
    assert hooks.run_sync("as") == ["ok"]
    assert asyncio.run(hooks.run("as")) == ["ok"]
    assert health.failures("p@1") == 4


def test_strict_reraises(hooks: HookManager, strict: None) -> None:
    hooks["n"].add(lambda: 1 / 0, owner="p@1")
    with pytest.raises(ZeroDivisionError):
        hooks.run_sync("n")
    with pytest.raises(ZeroDivisionError):
        asyncio.run(hooks.run("n"))


def test_success_resets_health_and_repeated_failure_quarantines(hooks: HookManager) -> None:
    options.max_failures = 3
    quarantined: list[str] = []

    def listener(owner: str, reason: str, tb: str) -> None:
        quarantined.append(owner)

    health.add_quarantine_listener(listener)
    try:
        state = {"fail": True}

        @hooks["n"].add(owner="flaky@1")
        def flaky() -> str:
            if state["fail"]:
                raise RuntimeError("down")
            return "up"

        hooks.run_sync("n")
        hooks.run_sync("n")
        state["fail"] = False
        assert hooks.run_sync("n") == ["up"]
        assert health.failures("flaky@1") == 0
        state["fail"] = True
        for _ in range(3):
            hooks.run_sync("n")
        assert quarantined == ["flaky@1"]
    finally:
        health.remove_quarantine_listener(listener)


# --- time budget ---------------------------------------------------------------------------------


def test_owned_function_running_over_its_timeout_is_interrupted(hooks: HookManager) -> None:
    h = hooks.define("content-transform", HookType.FILTER)
    h.add(lambda body: body + "!")
    h.add(lambda body: spin(), owner="loop@1", timeout=0.05)
    h.add(lambda body: body.upper())
    started = time.monotonic()
    assert hooks.run_sync("content-transform", "hi") == "HI!"
    assert time.monotonic() - started < 2
    stats = h.registrations[1].stats
    assert (stats.timeouts, stats.errors) == (1, 0)
    failure = health.last_failure("loop@1")
    assert failure is not None and failure.kind == "timeout"


def test_plugin_default_budget_comes_from_options(hooks: HookManager) -> None:
    options.hook_timeout = 0.05
    hooks["n"].add(lambda: spin(), owner="loop@1")
    hooks["n"].add(lambda: "after")
    assert hooks.run_sync("n") == ["after"]
    assert hooks["n"].registrations[0].stats.timeouts == 1


def test_ownerless_functions_run_without_budget(hooks: HookManager) -> None:
    options.hook_timeout = 0.01

    def platform_work() -> str:
        end = time.monotonic() + 0.1
        while time.monotonic() < end:
            pass
        return "done"

    hooks["n"].add(platform_work)
    assert hooks.run_sync("n") == ["done"]


def test_async_function_over_budget_is_cancelled(hooks: HookManager) -> None:
    @hooks["n"].add(owner="slow@1", timeout=0.05)
    async def slow() -> str:
        await asyncio.sleep(10)
        return "never"

    hooks["n"].add(lambda: "fast")
    assert hooks.run_sync("n") == ["fast"]
    assert asyncio.run(hooks.run("n")) == ["fast"]
    assert hooks["n"].registrations[0].stats.timeouts == 2
    failure = health.last_failure("slow@1")
    assert failure is not None and failure.kind == "timeout"


def test_async_function_raising_its_own_timeout_error_is_an_error(hooks: HookManager) -> None:
    @hooks["n"].add(owner="p@1", timeout=5)
    async def own_timeout() -> None:
        raise TimeoutError("upstream API timed out")

    assert hooks.run_sync("n") == []
    stats = hooks["n"].registrations[0].stats
    assert (stats.errors, stats.timeouts) == (1, 0)


def test_enclosing_budget_is_not_blamed_on_the_inner_function(hooks: HookManager) -> None:
    hooks["inner"].add(lambda: spin(), owner="inner@1", timeout=5)

    @hooks["outer"].add(owner="outer@1", timeout=0.1)
    def outer() -> Any:
        return hooks.run_sync("inner")

    assert hooks.run_sync("outer") == []
    assert hooks["outer"].registrations[0].stats.timeouts == 1
    assert hooks["inner"].registrations[0].stats.timeouts == 0
    assert health.failures("inner@1") == 0 and health.failures("outer@1") == 1


# --- stats and describe --------------------------------------------------------------------------


def test_stats_and_describe(hooks: HookManager) -> None:
    def work(x: int) -> int:
        time.sleep(0.002)
        return x

    hooks["before-course-save"].add(work, owner="p@1.0.0", priority=3)
    for i in range(5):
        hooks.run_sync("before-course-save", {"i": i})
    described = {h["name"]: h for h in hooks.describe()}
    assert [h["name"] for h in hooks.describe()] == sorted(described)
    entry = described["before-course-save"]
    assert entry["type"] == "FILTER" and entry["description"]
    [fn] = entry["functions"]
    assert fn["name"].endswith("test_stats_and_describe.<locals>.work")
    assert (fn["plugin"], fn["priority"], fn["calls"], fn["errors"], fn["timeouts"]) == (
        "p@1.0.0",
        3,
        5,
        0,
        0,
    )
    assert 2.0 <= fn["mean_ms"] < 100 and fn["p95_ms"] >= fn["mean_ms"] * 0.5


def test_stats_memory_is_bounded() -> None:
    hooks = HookManager(standard=False)
    hooks["n"].add(lambda: None)
    for _ in range(1000):
        hooks.run_sync("n")
    stats = hooks["n"].registrations[0].stats
    assert stats.calls == 1000 and len(stats.samples) == 64
    assert stats.p95_ms >= 0.0


# --- copy-on-write, re-entrancy, threads ---------------------------------------------------------


def test_removing_a_later_function_from_inside_a_running_function(hooks: HookManager) -> None:
    """The WordPress remove_action-in-handler bug: nobody else is skipped or doubled."""
    calls: list[str] = []
    h = hooks["n"]

    def a() -> None:
        calls.append("a")
        h.remove(c)

    def b() -> None:
        calls.append("b")

    def c() -> None:
        calls.append("c")

    def d() -> None:
        calls.append("d")

    for fn in (a, b, c, d):
        h.add(fn)
    hooks.run_sync("n")
    assert calls == ["a", "b", "d"]  # c removed before its turn: not called; d not skipped


def test_removing_itself_and_adding_during_a_run(hooks: HookManager) -> None:
    calls: list[str] = []
    h = hooks["n"]

    def once() -> None:
        calls.append("once")
        h.remove(once)
        h.add(late)

    def late() -> None:
        calls.append("late")

    h.add(lambda: calls.append("first"), priority=0)
    h.add(once)
    h.add(lambda: calls.append("next"))
    hooks.run_sync("n")
    assert calls == ["first", "once", "next"]  # an addition takes effect on the next run
    calls.clear()
    hooks.run_sync("n")
    assert calls == ["first", "next", "late"]


def test_reentrant_run_of_the_same_hook(hooks: HookManager) -> None:
    depth: list[int] = []

    @hooks["n"].add
    def recurse(level: int) -> int:
        depth.append(level)
        if level < 3:
            hooks.run_sync("n", level + 1)
        return level

    hooks["n"].add(lambda level: level * 10)
    assert hooks.run_sync("n", 0) == [0, 0]
    assert depth == [0, 1, 2, 3]


def test_concurrent_add_remove_never_skips_or_doubles_stable_functions(hooks: HookManager) -> None:
    h = hooks["n"]
    stable = [h.add(lambda i=i: i, priority=i * 2) for i in range(10)]
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            fn = h.add(lambda: None, priority=n % 21)
            h.remove(fn)
            n += 1

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(2000):
            results = [r for r in hooks.run_sync("n") if r is not None]
            assert results == list(range(10))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert h.functions == stable


# --- keys, overrides, observers, scope, fail-closed, current() ----------------------------------


def plugin_fn(course: dict[str, Any]) -> dict[str, Any]:
    return {**course, "plugin": True}


def test_keys_are_plugin_name_and_qualname_or_module_for_platform_code(hooks: HookManager) -> None:
    h = hooks["x"]
    h.add(plugin_fn, owner="p@1.0.0")
    h.add(lambda: None)
    keys = [row["key"] for row in h.describe()["functions"]]
    assert keys == [
        "p:plugin_fn",
        ":test_hook_manager.test_keys_are_plugin_name_and_qualname_or_module_for_platform_code"
        ".<locals>.<lambda>",
    ]
    assert all(row["enabled"] is True for row in h.describe()["functions"])
    assert h.get("p:plugin_fn").fn is plugin_fn  # type: ignore[union-attr]


def test_a_different_function_under_a_taken_key_is_refused_for_a_plugin(hooks: HookManager) -> None:
    def make() -> Any:
        def step(course: Any) -> Any:
            return course

        return step

    h = hooks["x"]
    h.add(make(), owner="p@1")
    with pytest.raises(ValueError, match="'p:.*make.<locals>.step'"):
        h.add(make(), owner="p@2")
    h.add(make(), owner="q@1")  # another plugin
    hooks["y"].add(make(), owner="p@1")  # another hook
    h.add(make(), key="p:second", owner="p@1")  # an explicit key
    h.add(make())
    h.add(make())  # platform code: numbered
    assert [k.rsplit(".", 1)[-1] for k in (r.key for r in h.registrations)][-2:] == [
        "step",
        "step#2",
    ]


def test_overrides_disable_and_move_on_every_hook_and_for_later_registrations(
    hooks: HookManager,
) -> None:
    calls: list[str] = []

    def a() -> None:
        calls.append("a")

    def b() -> None:
        calls.append("b")

    hooks["x"].add(a, owner="p@1")
    hooks["x"].add(b, owner="q@1")
    key_a = hooks["x"].registrations[0].key
    assert key_a.startswith("p:test_overrides_disable") and key_a.endswith("<locals>.a")
    hooks.set_override(key_a, enabled=False)
    hooks.run_sync("x")
    assert calls == ["b"]
    hooks.set_override(key_a, priority=50)
    hooks.run_sync("x")
    assert calls == ["b", "b", "a"]
    hooks["later"].add(a, owner="p@1", priority=1)  # the override applies here too
    hooks["later"].add(b, owner="q@1", priority=5)
    calls.clear()
    hooks.run_sync("later")
    assert calls == ["b", "a"]
    assert hooks.overrides() == {key_a: {"enabled": None, "priority": 50}}
    rows = {r["key"]: r for r in hooks["later"].describe()["functions"]}
    assert rows[key_a]["priority"] == 50
    hooks.clear_override(key_a)
    calls.clear()
    hooks.run_sync("later")
    assert calls == ["a", "b"] and hooks.overrides() == {}


def test_an_observer_gets_the_whole_run(hooks: HookManager) -> None:
    seen: list[Any] = []

    class Observer:
        def run(self, hook: Hook, regs: tuple[Registration, ...], args: Any, kwargs: Any) -> Any:
            seen.append((hook.name, [r.key for r in regs], args, kwargs, [r.shadow for r in regs]))
            return "observed"

        async def arun(self, hook: Hook, regs: Any, args: Any, kwargs: Any) -> Any:
            seen.append(("async", hook.name))
            return "observed async"

    h = hooks["x"]
    h.add(plugin_fn, owner="p@1")
    h.add(lambda c: c, owner="s@1", shadow=True, key="s:shadowed")
    assert hooks.run_sync("x", {"a": 1}) == [{"a": 1, "plugin": True}]  # shadow skipped
    h.observer = Observer()
    assert hooks.run_sync("x", {"a": 1}, flag=True) == "observed"
    assert asyncio.run(hooks.run("x", 1)) == "observed async"
    assert seen == [
        ("x", ["p:plugin_fn", "s:shadowed"], ({"a": 1},), {"flag": True}, [False, True]),
        ("async", "x"),
    ]
    assert h.runs == 3


def test_scope_skips_the_excluded_plugins(hooks: HookManager) -> None:
    from course_plugins.core import scope

    hooks["x"].add(lambda: "p", owner="p@1")
    hooks["x"].add(lambda: "q", owner="q@1", key="q:fn")
    hooks["x"].add(lambda: "platform")
    assert hooks.run_sync("x") == ["p", "q", "platform"]
    with scope.entered(scope.Scope.of(7, ["p"])):
        assert hooks.run_sync("x") == ["q", "platform"]
        assert asyncio.run(hooks.run("x")) == ["q", "platform"]
    assert hooks.run_sync("x") == ["p", "q", "platform"]


@pytest.fixture
def lenient() -> Iterator[None]:
    strict = options.strict
    options.strict = False
    try:
        yield
    finally:
        options.strict = strict


def test_before_hooks_fail_closed_for_plugins(hooks: HookManager, lenient: None) -> None:
    from course_plugins.exceptions import PluginFailedClosed

    def broken(course: Any) -> Any:
        raise RuntimeError("plugin bug")

    assert hooks["before-course-save"].fail_closed is True
    assert hooks["after-course-save"].fail_closed is False
    assert hooks["quiz-grade"].fail_closed is False
    hooks["before-course-save"].add(broken, owner="p@1")
    with pytest.raises(PluginFailedClosed) as info:
        hooks.run_sync("before-course-save", {})
    assert isinstance(info.value, ValueError) and info.value.plugin == "p@1"
    assert "before-course-save" in str(info.value) and "p:" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    hooks["before-course-save"].add(broken, owner="p@1", fail_closed=False)  # its own choice
    assert hooks.run_sync("before-course-save", {}) == {}
    hooks["content-transform"].add(broken, owner="p@1", fail_closed=True)
    with pytest.raises(PluginFailedClosed):
        hooks.run_sync("content-transform", {})
    hooks["before-course-save"].fail_closed = False
    hooks["before-course-save"].add(lambda c: 1 / 0, owner="q@1")
    assert hooks.run_sync("before-course-save", {}) == {}
    hooks["before-course-save"].add(lambda c: 1 / 0)  # platform code fails open anyway


def test_a_budget_overrun_of_a_fail_closed_function_is_a_veto(
    hooks: HookManager, lenient: None
) -> None:
    from course_plugins.exceptions import PluginFailedClosed

    def slow(course: Any) -> Any:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pass

    hooks["before-course-save"].add(slow, owner="p@1", timeout=0.05)
    with pytest.raises(PluginFailedClosed, match="time budget"):
        hooks.run_sync("before-course-save", {})


def test_infrastructure_errors_are_not_counted_against_the_plugin(
    hooks: HookManager, lenient: None, caplog: pytest.LogCaptureFixture
) -> None:
    class DatabaseDown(Exception):
        pass

    def query() -> None:
        raise DatabaseDown("connection refused")

    previous = options.infrastructure_errors
    options.infrastructure_errors = (DatabaseDown,)
    try:
        hooks["x"].add(query, owner="infra@1")
        with caplog.at_level(logging.WARNING, logger="course_plugins.plugins"):
            assert hooks.run_sync("x") == []
        assert health.failures("infra@1") == 0
        assert "not counted" in caplog.text and caplog.records[0].levelno == logging.WARNING
    finally:
        options.infrastructure_errors = previous
        health.reset("infra@1")


def test_re_adding_a_function_during_its_run_keeps_it_in_the_run(hooks: HookManager) -> None:
    calls: list[str] = []

    def first() -> None:
        calls.append("first")
        hooks["x"].add(second, priority=20)  # re-add (WordPress overwrites in place)

    def second() -> None:
        calls.append("second")

    hooks["x"].add(first)
    hooks["x"].add(second)
    hooks.run_sync("x")
    assert calls == ["first", "second"]
    assert [r.priority for r in hooks["x"].registrations] == [10, 20]


def test_current_names_the_running_hook_and_function(hooks: HookManager) -> None:
    seen: list[Any] = []

    def inner() -> None:
        seen.append(hooks.current())

    def outer() -> None:
        seen.append(hooks.current())
        hooks.run_sync("inner")
        seen.append(hooks.current())

    async def in_async() -> None:
        seen.append(hooks.current())

    hooks["inner"].add(inner, owner="p@1")
    hooks["outer"].add(outer)
    hooks["async"].add(in_async, owner="p@1")
    assert hooks.current() is None
    hooks.run_sync("outer")
    asyncio.run(hooks.run("async"))
    assert [(c.hook, c.function, c.plugin) for c in seen] == [
        ("outer", outer, None),
        ("inner", inner, "p@1"),
        ("outer", outer, None),
        ("async", in_async, "p@1"),
    ]
    assert seen[1].key == "p:test_current_names_the_running_hook_and_function.<locals>.inner"
    assert (hooks["outer"].runs, hooks["inner"].runs) == (1, 1)


def test_registering_many_functions_keeps_the_order(hooks: HookManager) -> None:
    h = hooks["x"]
    fns = [eval("lambda: None") for _ in range(300)]  # noqa: S307 - distinct code objects
    for i, fn in enumerate(fns):
        h.add(fn, priority=i % 7, key=f":k{i}")
    expected = sorted(range(300), key=lambda i: (i % 7, i))
    assert h.functions == [fns[i] for i in expected]
    for fn in fns[::2]:
        h.remove(fn)
    assert h.functions == [fns[i] for i in expected if i % 2]
