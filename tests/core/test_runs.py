"""core.runs: what the run recorder records, and that an observed run behaves like a plain one."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from course_plugins.core import hook_manager, scope
from course_plugins.core.hook_manager import HookManager, HookType
from course_plugins.core.options import options
from course_plugins.core.runs import MASK, RunRecorder

pytestmark = pytest.mark.usefixtures("engine_state", "run_path")


@pytest.fixture(autouse=True, params=["loop", "generated"])
def run_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs twice: through the recorder's loop only, and through generated recorded
    runs (``core._hook_runs.compile_recorded_run``) made from a hook's first run on."""
    monkeypatch.setattr(hook_manager, "_WARM", 1 if request.param == "generated" else 10**9)
    return str(request.param)


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


def test_forgetting_a_plugin_drops_its_steps_and_the_runs_it_refused():
    hook, recorder = _hook()
    hook.add(add_price, owner="gone@1.0.0")
    hook.add(title_upper, owner="stays@1.0.0")
    hook.run_sync({"title": "a"})
    hook.add(refuse, owner="gone@1.0.0", priority=1)
    with pytest.raises(ValueError):
        hook.run_sync({"title": "b"})
    hook.remove(refuse)
    hook.run_sync({"title": "c"})

    assert recorder.forget_plugin("gone") == ["before-course-save"]

    runs = recorder.runs("before-course-save")
    assert len(runs) == 2  # the run it refused is gone
    assert [_steps(run) for run in runs] == [[("stays:title_upper", "changed", True)]] * 2
    hook.remove(add_price)  # (its functions went before, at the uninstall)
    hook.run_sync({"title": "d"})  # later runs are recorded as before
    assert len(recorder.runs("before-course-save")) == 3
    assert recorder.forget_plugin("gone") == []  # nothing of it left


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


# --- the generated recorded run's own edges (both paths, as every test here) -----------------


def _generated(hook: Any, run_path: str) -> None:
    """In the "generated" pass, the hook's runs went through a generated recorded run."""
    if run_path == "generated":
        (pair,) = hook._recorded[1].values()
        assert pair[0] is not None


def test_each_in_place_change_is_its_own_step_and_a_new_equal_dict_is_no_change(
    run_path: str,
) -> None:
    hook, recorder = _hook()

    def price_in_place(course: dict[str, Any]) -> dict[str, Any]:
        course["price"] = 5
        return course  # the same dict, changed

    def equal_copy(course: dict[str, Any]) -> dict[str, Any]:
        return dict(course)

    hook.add(title_upper, owner="shout@1.0.0", priority=1)
    hook.add(price_in_place, owner="pricing@1.0.0", priority=2)
    hook.add(equal_copy, owner="copy@1.0.0", priority=3)
    hook.add(add_price, owner="later@1.0.0", priority=4)
    hook.add(looks_only, owner="audit@1.0.0", priority=5)
    course = {"title": "intro", "price": 0}
    result = hook.run_sync(course)
    assert result == {"title": "INTRO", "price": 10} and course == {"title": "INTRO", "price": 5}
    _generated(hook, run_path)
    result["title"] = "changed by the caller afterwards"  # what was recorded stays as it was
    course["price"] = -1
    (run,) = recorder.runs(hook.name)
    assert [(s["outcome"], s["changed"]) for s in run["steps"]] == [
        ("changed", {"title": ["intro", "INTRO"]}),
        ("changed", {"price": [0, 5]}),
        ("ok", None),
        ("changed", {"price": [5, 10]}),
        ("ok", None),
    ]
    assert all(s["applied"] for s in run["steps"])
    assert run["outcome"] == "ok" and run["message"] == ""
    assert abs(run["at"] - time.time()) < 60
    assert run["ms"] + 0.01 >= sum(s["ms"] for s in run["steps"])


def test_an_error_and_a_veto_in_the_middle_of_a_run(run_path: str) -> None:
    options.max_failures = 10**9
    hook, recorder = _hook()
    hook.add(add_price, owner="pricing@1.0.0", priority=1)
    hook.add(broken, owner="buggy@1.0.0", priority=2)
    hook.add(title_upper, owner="shout@1.0.0", priority=3)
    assert hook.run_sync({"title": "t"}) == {"title": "T", "price": 10}
    _generated(hook, run_path)
    (run,) = recorder.runs(hook.name)
    assert [(s["outcome"], s["changed"]) for s in run["steps"]] == [
        ("changed", {"price": [None, 10]}),
        ("error", None),
        ("changed", {"title": ["t", "T"]}),
    ]
    buggy = hook.registrations[1].stats
    assert (buggy.calls, buggy.errors) == (1, 1)

    hook.add(refuse, owner="validator@1.0.0", priority=1)  # after pricing
    with pytest.raises(ValueError, match="needs a description"):
        hook.run_sync({"title": "t"})
    run = recorder.runs(hook.name)[0]
    assert run["outcome"] == "veto" and run["message"] == "A course needs a description"
    assert _steps(run) == [
        ("pricing:add_price", "changed", True),
        ("validator:refuse", "veto", True),
        ("buggy:broken", "skipped", False),
        ("shout:title_upper", "skipped", False),
    ]
    assert hook.registrations[2].stats.calls == 1  # not called again
    assert hook.registrations[1].stats.calls == 1  # the veto, counted once


def test_an_abnormal_answer_skips_the_rest(run_path: str) -> None:
    hook, recorder = _hook(HookType.ABNORMAL, name="quiz-grade")
    hook.add(lambda answer: None, owner="a@1.0.0", priority=1)
    hook.add(lambda answer: 7, owner="b@1.0.0", priority=2)
    hook.add(lambda answer: 9, owner="c@1.0.0", priority=3)
    assert hook.run_sync("x") == 7
    _generated(hook, run_path)
    (run,) = recorder.runs(hook.name)
    assert [(s["outcome"], s["applied"]) for s in run["steps"]] == [
        ("ok", True), ("ok", True), ("skipped", False)
    ]


def test_a_function_that_changes_the_hook_mid_run(run_path: str) -> None:
    hook, recorder = _hook()

    def last(course: dict[str, Any]) -> dict[str, Any]:
        return {**course, "last": True}

    def replaced(course: dict[str, Any]) -> dict[str, Any]:
        return {**course, "replaced": True}

    def changer(course: dict[str, Any]) -> None:
        if hook.remove(last):
            hook.add(replaced, owner="new@1.0.0", priority=9)

    hook.add(add_price, owner="pricing@1.0.0", priority=1)
    hook.add(changer, owner="changer@1.0.0", priority=2)
    hook.add(last, owner="last@1.0.0", priority=3)
    assert hook.run_sync({}) == {"price": 10}  # removed: not called, even by this run
    (run,) = recorder.runs(hook.name)
    assert _steps(run) == [
        ("pricing:add_price", "changed", True),
        ("changer:changer", "ok", True),
        ("last:last", "skipped", False),
    ]
    assert hook.run_sync({}) == {"price": 10, "replaced": True}
    _generated(hook, run_path)
    assert _steps(recorder.runs(hook.name)[0])[-1] == ("new:replaced", "changed", True)


def test_a_shadow_registration_is_recorded_on_every_run_never_applied(run_path: str) -> None:
    hook, recorder = _hook()
    recorder.sample = 1000
    recorder.start_shadow("newbie", since=1.0)

    def hijack(course: dict[str, Any]) -> None:
        course["title"] = "hijacked"

    hook.add(add_price, owner="pricing@1.0.0", priority=1)
    hook.add(hijack, owner="newbie@0.1.0", priority=2, shadow=True)
    for _ in range(3):
        assert hook.run_sync({"title": "t"}) == {"title": "t", "price": 10}
    runs = recorder.runs(hook.name)
    assert len(runs) == 3
    assert _steps(runs[0]) == [
        ("pricing:add_price", "changed", True),
        ("newbie:hijack", "changed", False),
    ]
    assert recorder.shadow["newbie"].changed == 3


def test_a_plugin_that_survives_its_budget_is_counted_and_recorded(run_path: str) -> None:
    options.max_failures = 10**9
    hook, recorder = _hook()

    def swallow(course: dict[str, Any]) -> None:
        try:
            _spin()
        except BaseException:
            return None  # caught the interruption and went on

    hook.add(swallow, owner="slow@1.0.0", timeout=0.05, priority=1)
    hook.add(add_price, owner="pricing@1.0.0", priority=2)
    assert hook.run_sync({}) == {"price": 10}
    _generated(hook, run_path)
    stats = hook.registrations[0].stats
    assert (stats.calls, stats.timeouts, stats.errors) == (1, 1, 0)
    (run,) = recorder.runs(hook.name)
    assert [s["outcome"] for s in run["steps"]] == ["error", "changed"]
    assert "time budget" in run["steps"][0]["message"]


def test_secrets_stay_masked_after_the_setting_changed(run_path: str) -> None:
    hook, recorder = _hook()
    recorder.set_secret_values(["old-secret-value"])

    def leak(course: dict[str, Any]) -> dict[str, Any]:
        return {**course, "note": "uses old-secret-value", "token": "t0k3n"}

    hook.add(leak, owner="leaky@1.0.0")
    hook.run_sync({"title": "t"})
    recorder.set_secret_values(["new-secret-value"])
    (run,) = recorder.runs(hook.name)
    assert run["steps"][0]["changed"] == {"note": [None, f"uses {MASK}"], "token": [None, MASK]}


def test_timed_runs_feed_the_functions_stats(run_path: str) -> None:
    hook, recorder = _hook()
    hook.add(add_price, owner="pricing@1.0.0")
    for _ in range(40):
        hook.run_sync({})
    stats = hook.registrations[0].stats
    assert stats.calls == 40 and stats.timed >= 2
    assert len(recorder.runs(hook.name)) == 40


def test_setting_the_same_recorder_again_keeps_the_generated_run(run_path: str) -> None:
    hook, recorder = _hook()
    hook.add(add_price, owner="pricing@1.0.0")
    hook.run_sync({})
    before = dict(hook._recorded[1])
    hook.observer = recorder  # what the site does whenever it follows the database
    assert hook._recorded[1] == before
    hook.observer = RunRecorder()
    assert not hook._recorded[1]
    hook.run_sync({})
    assert len(hook.observer.runs(hook.name)) == 1 and len(recorder.runs(hook.name)) == 1
