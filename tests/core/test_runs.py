"""core.runs: what the run recorder records, and that an observed run behaves like a plain one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from course_plugins.core import scope
from course_plugins.core.hook_manager import HookManager, HookType
from course_plugins.core.options import options
from course_plugins.core.runs import MASK, RunRecorder

pytestmark = pytest.mark.usefixtures("engine_state")


def _hook(kind: HookType = HookType.FILTER, name: str = "before-course-save") -> Any:
    hooks = HookManager(standard=False)
    hook = hooks.define(name, kind)
    hook.fail_closed = False  # these tests look at isolated errors
    recorder = RunRecorder()
    hook.observer = recorder
    return hook, recorder


def _steps(run: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """``(plugin:function, outcome, applied)`` per step (the key's qualname shortened)."""
    steps = []
    for step in run["steps"]:
        plugin, _, qualname = step["key"].partition(":")
        steps.append((f"{plugin}:{qualname.rsplit('.', 1)[-1]}", step["outcome"], step["applied"]))
    return steps


def title_upper(course: dict[str, Any]) -> None:
    course["title"] = course["title"].upper()  # in place, returns None


def add_price(course: dict[str, Any]) -> dict[str, Any]:
    return {**course, "price": 10}


def looks_only(course: dict[str, Any]) -> dict[str, Any]:
    return course


def refuse(course: dict[str, Any]) -> None:
    raise ValueError("A course needs a description")


def broken(course: dict[str, Any]) -> None:
    raise RuntimeError("bug in the plugin")


def test_filter_steps_record_changed_fields_with_before_and_after():
    hook, recorder = _hook()
    hook.add(title_upper, owner="shout@1.0.0", priority=1)
    hook.add(add_price, owner="pricing@1.0.0", priority=2)
    hook.add(looks_only, owner="audit@1.0.0", priority=3)

    result = hook.run_sync({"title": "intro", "price": 0})

    assert result == {"title": "INTRO", "price": 10}
    (run,) = recorder.runs(hook.name)
    assert run["outcome"] == "ok" and run["org"] is None and run["hook"] == hook.name
    assert _steps(run) == [
        ("shout:title_upper", "changed", True),
        ("pricing:add_price", "changed", True),
        ("audit:looks_only", "ok", True),
    ]
    shout, pricing, audit = run["steps"]
    assert shout["changed"] == {"title": ["intro", "INTRO"]}
    assert shout["plugin"] == "shout@1.0.0" and shout["function"].endswith("title_upper")
    assert pricing["changed"] == {"price": [0, 10]}
    assert audit["changed"] is None
    assert all(isinstance(s["ms"], float) for s in run["steps"])


def test_a_veto_is_raised_recorded_and_the_rest_is_skipped():
    hook, recorder = _hook()
    hook.add(refuse, owner="validator@1.0.0", priority=1)
    hook.add(add_price, owner="pricing@1.0.0", priority=2)

    with pytest.raises(ValueError, match="needs a description"):
        hook.run_sync({"title": "intro"})

    (run,) = recorder.runs(hook.name)
    assert run["outcome"] == "veto" and run["message"] == "A course needs a description"
    assert _steps(run) == [
        ("validator:refuse", "veto", True),
        ("pricing:add_price", "skipped", False),
    ]


def test_an_isolated_error_is_a_step_and_the_run_goes_on():
    hook, recorder = _hook()
    hook.add(broken, owner="buggy@1.0.0", priority=1)
    hook.add(add_price, owner="pricing@1.0.0", priority=2)

    assert hook.run_sync({"title": "t"}) == {"title": "t", "price": 10}

    (run,) = recorder.runs(hook.name)
    assert run["outcome"] == "ok"
    assert _steps(run)[0] == ("buggy:broken", "error", False)
    assert run["steps"][0]["key"] == "buggy:broken"
    assert run["steps"][0]["message"] == "RuntimeError: bug in the plugin"


def test_strict_mode_raises_the_error_and_records_it():
    hook, recorder = _hook()
    hook.add(broken, owner="buggy@1.0.0")
    options.strict = True
    with pytest.raises(RuntimeError):
        hook.run_sync({"title": "t"})
    (run,) = recorder.runs(hook.name)
    assert run["outcome"] == "error" and run["steps"][0]["outcome"] == "error"


def test_secrets_are_never_recorded():
    hook, recorder = _hook()
    recorder.set_secret_values(["sk-live-123456"])

    def leak(course: dict[str, Any]) -> dict[str, Any]:
        return {**course, "api_token": "abc", "note": "key sk-live-123456 used", "password": "x"}

    def refuse_with_secret(course: dict[str, Any]) -> None:
        raise ValueError("the key sk-live-123456 was refused")

    hook.add(leak, owner="leaky@1.0.0", priority=1)
    hook.add(refuse_with_secret, owner="leaky@1.0.0", priority=2)
    with pytest.raises(ValueError):
        hook.run_sync({"title": "t"})

    (run,) = recorder.runs(hook.name)
    changed = run["steps"][0]["changed"]
    assert changed["api_token"] == [None, MASK]
    assert changed["password"] == [None, MASK]
    assert changed["note"] == [None, f"key {MASK} used"]
    assert "sk-live" not in repr(run)


def test_the_ring_buffer_keeps_the_last_runs_newest_first():
    hook, recorder = _hook()
    recorder.keep = 3
    recorder.clear()
    hook.add(looks_only, owner="audit@1.0.0")
    for i in range(5):
        hook.run_sync({"n": i})
    runs = recorder.runs(hook.name)
    assert len(runs) == 3
    assert [r["at"] for r in runs] == sorted((r["at"] for r in runs), reverse=True)
    assert recorder.runs(hook.name, limit=1) == runs[:1]


def test_only_changed_values_are_kept_as_plain_data():
    hook, recorder = _hook()
    big = object()

    def touch(course: dict[str, Any]) -> dict[str, Any]:
        return {**course, "when": "x" * 500}

    hook.add(touch, owner="p@1.0.0")
    hook.run_sync({"blob": big, "when": None})
    (step,) = recorder.runs(hook.name)[0]["steps"]
    assert list(step["changed"]) == ["when"]  # the untouched object is not copied
    assert len(step["changed"]["when"][1]) == 200


def test_shadow_functions_run_on_a_copy_and_nothing_they_do_is_applied():
    hook, recorder = _hook()
    recorder.start_shadow("newbie", since=1.0)

    def mutate_in_place(course: dict[str, Any]) -> None:
        course["title"] = "hijacked"

    hook.add(mutate_in_place, owner="newbie@0.1.0", priority=1, shadow=True)
    hook.add(refuse, owner="newbie@0.1.0", priority=2, shadow=True)
    hook.add(add_price, owner="pricing@1.0.0", priority=3)

    course = {"title": "intro"}
    assert hook.run_sync(course) == {"title": "intro", "price": 10}  # no veto raised
    assert course == {"title": "intro"}

    (run,) = recorder.runs(hook.name)
    assert run["outcome"] == "ok"
    assert _steps(run) == [
        ("newbie:mutate_in_place", "changed", False),
        ("newbie:refuse", "veto", False),
        ("pricing:add_price", "changed", True),
    ]
    assert run["steps"][0]["changed"] == {"title": ["intro", "hijacked"]}
    tally = recorder.shadow["newbie"]  # one count per run: a refusal outweighs a change
    assert (tally.refused, tally.changed) == (1, 0)
    assert [(e["outcome"], e["key"]) for e in tally.examples] == [
        ("veto", "newbie:refuse")
    ]
    hook.remove(refuse)
    hook.run_sync({"title": "intro"})
    assert (tally.refused, tally.changed) == (1, 1)


def test_a_plain_hook_does_not_call_shadow_functions():
    hooks = HookManager(standard=False)
    hook = hooks.define("x", HookType.FILTER)
    hook.add(refuse, owner="newbie@0.1.0", shadow=True)
    assert hook.run_sync({"a": 1}) == {"a": 1}


def test_shadow_runs_are_recorded_even_with_recording_off():
    hook, recorder = _hook()
    recorder.enabled = False
    hook.add(add_price, owner="pricing@1.0.0")
    hook.run_sync({})
    assert recorder.runs(hook.name) == []
    hook.add(refuse, owner="newbie@0.1.0", shadow=True)
    hook.run_sync({})
    assert len(recorder.runs(hook.name)) == 1


def test_sampling_records_one_run_in_n():
    hook, recorder = _hook()
    recorder.sample = 4
    hook.add(add_price, owner="pricing@1.0.0")
    results = [hook.run_sync({}) for _ in range(8)]
    assert results == [{"price": 10}] * 8
    assert len(recorder.runs(hook.name)) == 2


@pytest.mark.parametrize("kind", [HookType.NORMAL, HookType.ABNORMAL])
def test_normal_and_abnormal_results_are_those_of_a_plain_run(kind):
    hook, recorder = _hook(kind, name="quiz-grade")
    hook.add(lambda answer: None, owner="a@1.0.0", priority=1)
    hook.add(lambda answer: 7, owner="b@1.0.0", priority=2)
    hook.add(lambda answer: 9, owner="c@1.0.0", priority=3)
    hook.add(lambda answer: 1, owner="d@1.0.0", priority=4, shadow=True)

    observed = hook.run_sync("x")
    hook.observer = None
    assert observed == hook.run_sync("x") == ([None, 7, 9] if kind is HookType.NORMAL else 7)

    (run,) = recorder.runs(hook.name)
    outcomes = [s["outcome"] for s in run["steps"]]
    if kind is HookType.ABNORMAL:
        assert outcomes == ["ok", "ok", "skipped", "skipped"]
    else:
        assert outcomes == ["ok", "ok", "ok", "ok"]
        assert run["steps"][3]["applied"] is False


def test_async_runs_are_recorded():
    hook, recorder = _hook()

    async def later(course: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {**course, "async": True}

    hook.add(later, owner="later@1.0.0", priority=1)
    hook.add(refuse, owner="newbie@0.1.0", priority=2, shadow=True)

    assert asyncio.run(hook.run({"a": 1})) == {"a": 1, "async": True}
    (run,) = recorder.runs(hook.name)
    assert _steps(run) == [("later:later", "changed", True), ("newbie:refuse", "veto", False)]


def test_a_run_in_an_organization_names_it():
    hook, recorder = _hook()
    hook.add(looks_only, owner="audit@1.0.0")
    with scope.entered(scope.Scope.of(42)):
        hook.run_sync({})
    assert recorder.runs(hook.name)[0]["org"] == 42


def test_the_current_call_is_known_under_the_recorder():
    hooks = HookManager(standard=False)
    hook = hooks.define("before-course-save", HookType.FILTER)
    hook.observer = RunRecorder()
    seen = []

    def who(course: dict[str, Any]) -> None:
        seen.append(hooks.current())

    def platform_who(course: dict[str, Any]) -> None:
        seen.append(hooks.current())

    hook.add(who, owner="p@1.0.0")
    hook.add(platform_who)
    hook.run_sync({})
    assert [(c.hook, c.key) for c in seen] == [
        ("before-course-save", "p:" + who.__qualname__),
        ("before-course-save", ":" + __name__ + "." + platform_who.__qualname__),
    ]


def test_the_recorder_never_breaks_a_run():
    hook, recorder = _hook()

    def boom(name: str) -> None:
        raise RuntimeError("cache down")

    class Weird(dict):
        def keys(self):  # type: ignore[override]
            raise RuntimeError("no keys")

    recorder.on_record = boom
    hook.add(lambda course: Weird(a=1), owner="odd@1.0.0")
    assert hook.run_sync({"a": 0}) == {"a": 1}
    (step,) = recorder.runs(hook.name)[0]["steps"]
    assert step["outcome"] == "changed"


def _spin() -> None:
    while True:
        pass


@pytest.mark.parametrize("kind", [HookType.FILTER, HookType.NORMAL])
def test_a_recorded_run_counts_a_plugin_over_its_budget_and_goes_on(kind: HookType) -> None:
    options.max_failures = 10**9
    hook, recorder = _hook(kind, name="content-transform")
    state = {"spin": True}

    def slow(course: dict[str, Any]) -> None:
        if state["spin"]:
            _spin()

    def stubborn(course: dict[str, Any]) -> None:
        try:
            _spin()
        except BaseException:
            raise RuntimeError("not me") from None

    seen: list[Any] = []
    hook.add(slow, owner="slow@1.0.0", timeout=0.05, priority=1)
    hook.add(stubborn, owner="stubborn@1.0.0", timeout=0.05, priority=2)
    hook.add(lambda course: seen.append(recorder) or None, owner="after@1.0.0", priority=3)
    for _ in range(2):
        hook.run_sync({"title": "t"})
    slow_reg, stubborn_reg, after_reg = hook.registrations
    assert (slow_reg.stats.timeouts, slow_reg.stats.errors, slow_reg.stats.calls) == (2, 0, 2)
    assert (stubborn_reg.stats.timeouts, stubborn_reg.stats.errors) == (2, 0)
    assert after_reg.stats.calls == 2 and len(seen) == 2
    [run, _] = recorder.runs("content-transform")
    assert [step["outcome"] for step in run["steps"]] == ["error", "error", "ok"]
    assert "time budget" in run["steps"][0]["message"]
    state["spin"] = False
    hook.run_sync({"title": "t"})
    assert slow_reg.stats.calls == 3 and slow_reg.stats.timeouts == 2
