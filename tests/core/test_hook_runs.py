"""Tests for core._hook_runs: generated hook runs behave exactly like the engine's loops.

``test_hook_manager`` runs every hook test through both paths; these are the edges that only
the generated path has: when a run is generated and dropped, a change while a generated run is
in progress, exact counts, error attribution and tracebacks, budgets.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any

import pytest

from course_plugins.core import hook_manager
from course_plugins.core._hook_runs import MAX_STEPS
from course_plugins.core.health import health
from course_plugins.core.hook_manager import HookManager, HookType
from course_plugins.core.options import options
from course_plugins.core.watchdog import RUN_FILENAME


@pytest.fixture(autouse=True)
def _engine_state(engine_state: None) -> None:
    """Every test here starts non-strict and leaves options and health as it found them."""


def warm(hooks: HookManager, name: str, *args: Any) -> Any:
    """Run ``name`` until its run is generated; return the last result."""
    result = None
    for _ in range(hook_manager._WARM):
        result = hooks.run_sync(name, *args)
    assert generated(hooks, name, len(args))
    return result


def generated(hooks: HookManager, name: str, arity: int = 1) -> bool:
    return bool(hooks[name]._runners[arity])


def spin() -> None:
    while True:
        pass


def test_a_run_is_generated_after_a_few_runs_and_dropped_on_any_change(hooks: HookManager) -> None:
    h = hooks.define("f", HookType.FILTER)
    h.add(lambda v: v + 1)
    assert hooks.run_sync("f", 1) == 2
    assert not generated(hooks, "f")
    assert warm(hooks, "f", 1) == 2
    h.add(lambda v: v * 10)
    assert not generated(hooks, "f")
    assert warm(hooks, "f", 1) == 20
    hooks.set_override(h.registrations[1].key, enabled=False)
    assert not generated(hooks, "f")
    assert warm(hooks, "f", 1) == 2


@pytest.mark.parametrize("arity", [0, 1, 2, 3])
def test_each_number_of_arguments_gets_its_own_run(hooks: HookManager, arity: int) -> None:
    hooks["n"].add(lambda *a: ("first", a))
    hooks["n"].add(lambda *a: ("second", len(a)))
    args = tuple(range(arity))
    assert warm(hooks, "n", *args) == [("first", args), ("second", arity)]
    assert hooks.run_sync("n", *args) == [("first", args), ("second", arity)]


def test_filter_with_extra_arguments_threads_only_the_first(hooks: HookManager) -> None:
    h = hooks.define("f", HookType.FILTER)
    h.add(lambda v, sep: v + sep + "a")
    h.add(lambda v, sep: None)  # keeps the value
    h.add(lambda v, sep: v + sep + "b")
    assert warm(hooks, "f", "x", "-") == "x-a-b"


def test_keywords_and_many_arguments_still_run_through_the_loop(hooks: HookManager) -> None:
    hooks["n"].add(lambda *a, **k: (a, k))
    for _ in range(hook_manager._WARM + 1):
        assert hooks.run_sync("n", 1, k=2) == [((1,), {"k": 2})]
        assert hooks.run_sync("n", 1, 2, 3, 4) == [((1, 2, 3, 4), {})]
    assert not generated(hooks, "n", 1)


def test_a_long_snapshot_runs_through_the_loop(hooks: HookManager) -> None:
    h = hooks.define("f", HookType.FILTER)
    for i in range(MAX_STEPS + 1):
        h.add(lambda v, i=i: v + 1, key=f":step{i}")
    for _ in range(hook_manager._WARM + 1):
        assert hooks.run_sync("f", 0) == MAX_STEPS + 1
    assert not generated(hooks, "f")


def test_calls_and_errors_are_counted_on_every_call_and_timing_sampled(
    hooks: HookManager, caplog: pytest.LogCaptureFixture
) -> None:
    options.max_failures = 10**9

    def broken(v: int) -> int:
        raise RuntimeError("broken")

    h = hooks.define("f", HookType.FILTER)
    h.add(lambda v: v + 1, owner="ok@1")
    h.add(broken, owner="bad@1")
    h.add(lambda v: v * 2)
    with caplog.at_level(logging.CRITICAL):
        for _ in range(40):
            assert hooks.run_sync("f", 1) == 4
    ok, bad, plain = (reg.stats for reg in h.registrations)
    assert (ok.calls, ok.errors, bad.calls, bad.errors, plain.calls) == (40, 0, 40, 40, 40)
    assert health.failures("bad@1") == 40 and health.failures("ok@1") == 0
    assert 2 <= ok.timed <= 4 and 2 <= plain.timed <= 4  # one run in 16, not every call


def test_an_error_in_a_generated_run_keeps_its_traceback_and_plugin(hooks: HookManager) -> None:
    state = {"fail": False}

    def first(v: int) -> int:
        return v

    def faulty(v: int) -> int:
        if state["fail"]:
            return {}[v]  # the line the traceback must point at
        return v

    hooks["n"].add(first, owner="a@1")
    hooks["n"].add(faulty, owner="b@1")
    warm(hooks, "n", 1)
    state["fail"] = True
    options.strict = True
    with pytest.raises(KeyError) as info:
        hooks.run_sync("n", 1)
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "faulty"
    assert frames[-1].line == "return {}[v]  # the line the traceback must point at"
    assert frames[-2].filename == RUN_FILENAME
    options.strict = False
    assert hooks.run_sync("n", 1) == [1]
    failure = health.last_failure("b@1")
    assert failure is not None and "faulty" in failure.where and "KeyError" in failure.traceback
    assert 'in faulty\n    return {}[v]' in failure.traceback
    assert health.last_failure("a@1") is None


def test_success_after_failures_in_a_row_is_recorded(hooks: HookManager) -> None:
    options.max_failures = 3
    state = {"fail": False}

    def flaky(v: int) -> int:
        if state["fail"]:
            raise RuntimeError("down")
        return v + 1

    hooks["n"].add(lambda v: v, owner="other@1")
    hooks["n"].add(flaky, owner="flaky@1")
    hooks["n"].add(lambda v: v, owner="other@1", key="other:second")
    warm(hooks, "n", 1)
    for _ in range(5):  # fail, succeed, fail, succeed...: never three in a row
        state["fail"] = True
        assert hooks.run_sync("n", 1) == [1, 1]
        assert health.failures("flaky@1") == 1
        state["fail"] = False
        assert hooks.run_sync("n", 1) == [1, 2, 1]
        assert health.failures("flaky@1") == 0
    assert health.total_failures("flaky@1") == 5


def test_removing_and_re_adding_during_a_generated_run(hooks: HookManager) -> None:
    calls: list[str] = []

    def first(v: Any) -> None:
        calls.append("first")
        if v == "remove":
            hooks["n"].remove(third)
        elif v == "re-add":
            hooks["n"].add(second, priority=30)  # replaced in place: still in this run

    def second(v: Any) -> None:
        calls.append("second")

    def third(v: Any) -> None:
        calls.append("third")

    for fn in (first, second, third):
        hooks["n"].add(fn, owner="p@1")
    warm(hooks, "n", "plain")
    calls.clear()
    hooks.run_sync("n", "re-add")
    assert calls == ["first", "second", "third"]
    warm(hooks, "n", "plain")
    calls.clear()
    hooks.run_sync("n", "remove")
    assert calls == ["first", "second"]
    assert [reg.fn for reg in hooks["n"].registrations] == [first, second]


def test_a_redefined_type_or_an_observer_replaces_the_generated_run(hooks: HookManager) -> None:
    h = hooks["x"]
    h.add(lambda v: v + 1)
    assert warm(hooks, "x", 1) == [2]
    hooks.define("x", HookType.FILTER)
    assert hooks.run_sync("x", 1) == 2

    class Observer:
        def run(self, hook: Any, regs: Any, args: Any, kwargs: Any) -> str:
            return "observed"

    warm(hooks, "x", 1)
    h.observer = Observer()
    assert hooks.run_sync("x", 1) == "observed"
    h.observer = None
    assert hooks.run_sync("x", 1) == 2


def test_current_inside_a_generated_run(hooks: HookManager) -> None:
    seen: list[Any] = []

    def probe(v: int) -> None:
        seen.append(hooks.current())

    hooks["n"].add(lambda v: None)
    hooks["n"].add(probe, owner="p@1")
    warm(hooks, "n", 1)
    assert {(c.hook, c.function, c.plugin) for c in seen} == {("n", probe, "p@1")}


def test_a_trusted_plugin_over_its_budget_in_a_generated_run_is_counted(
    hooks: HookManager,
) -> None:
    options.max_failures = 10**9
    state = {"spin": False}

    def slow(v: str) -> str:
        if state["spin"]:
            spin()
        return v + "?"

    h = hooks.define("content-transform", HookType.FILTER)
    h.add(lambda body: body + "!", owner="a@1")
    h.add(slow, owner="loop@1", timeout=0.05)
    h.add(lambda body: body.upper(), owner="c@1")
    assert warm(hooks, "content-transform", "hi") == "HI!?"
    state["spin"] = True
    for _ in range(3):
        started = time.monotonic()
        assert hooks.run_sync("content-transform", "hi") == "HI!"
        assert time.monotonic() - started < 2
    stats = h.registrations[1].stats
    assert (stats.timeouts, stats.errors) == (3, 0)
    assert h.registrations[2].stats.calls == hook_manager._WARM + 3
    state["spin"] = False
    assert hooks.run_sync("content-transform", "hi") == "HI!?"


def test_an_interruption_turned_into_another_error_is_still_a_timeout(hooks: HookManager) -> None:
    state = {"spin": False}

    def stubborn(v: str) -> str:
        try:
            if state["spin"]:
                spin()
        except BaseException:
            raise RuntimeError("not me") from None
        return v

    h = hooks.define("content-transform", HookType.FILTER)
    h.add(lambda body: body + "!", owner="a@1")
    h.add(stubborn, owner="stubborn@1", timeout=0.05)
    warm(hooks, "content-transform", "hi")
    state["spin"] = True  # its first failure: still in the generated run
    assert hooks.run_sync("content-transform", "hi") == "hi!"
    stats = h.registrations[1].stats
    assert (stats.timeouts, stats.errors) == (1, 0)
    failure = health.last_failure("stubborn@1")
    assert failure is not None and failure.kind == "timeout"


def test_generated_runs_in_many_threads_count_every_call(hooks: HookManager) -> None:
    for i in range(5):
        hooks["n"].add(lambda v, i=i: v + i, owner=f"p{i}@1")
    warm(hooks, "n", 0)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(500):
                assert hooks.run_sync("n", 0) == [0, 1, 2, 3, 4]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert {reg.stats.calls for reg in hooks["n"].registrations} == {hook_manager._WARM + 2000}


def test_runs_a_sampling_recorder_leaves_unrecorded_use_the_generated_run(
    hooks: HookManager,
) -> None:
    from course_plugins.core.runs import RunRecorder

    h = hooks.define("f", HookType.FILTER)
    h.add(lambda v: v + 1, owner="a@1")
    h.add(lambda v: v * 2)
    recorder = RunRecorder(sample=10)
    h.observer = recorder
    for _ in range(30):
        assert hooks.run_sync("f", 1) == 4
    assert len(recorder.runs("f")) == 3  # one run in ten recorded
    assert generated(hooks, "f")  # the other nine went through the generated run
    assert [reg.stats.calls for reg in h.registrations] == [30, 30]
    assert h.runs == 30
