"""Tests for core.advice: the ten nadvice.el combinators, nesting, errors, registry."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import sys
import textwrap
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from course_plugins.core import advice
from course_plugins.core.advice import (
    ADVICE_KINDS,
    add_advice,
    advisable,
    after_advice,
    after_until_advice,
    after_while_advice,
    around_advice,
    before_advice,
    before_until_advice,
    before_while_advice,
    describe,
    describe_all,
    filter_args_advice,
    filter_return_advice,
    override_advice,
    remove_advice,
    remove_owner_advice,
)
from course_plugins.core.health import health
from course_plugins.core.options import options
from course_plugins.exceptions import AdviceError


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch, engine_state: None) -> None:
    """An empty advice registry for each test (functions advised elsewhere keep theirs)."""
    monkeypatch.setattr(advice, "_targets", {})
    monkeypatch.setattr(advice, "_overrides", {})


def make_target(name: str = "svc.f", log: list[Any] | None = None) -> Any:
    @advisable(name)
    def f(x: int, y: int = 0) -> int:
        """Adds."""
        if log is not None:
            log.append(("f", x, y))
        return x + y

    return f


def make_async_target(name: str = "svc.af", log: list[Any] | None = None) -> Any:
    @advisable(name)
    async def af(x: int, y: int = 0) -> int:
        """Adds later."""
        await asyncio.sleep(0)
        if log is not None:
            log.append(("f", x, y))
        return x + y

    return af


# --- the seed, as written ------------------------------------------------------------------------


def test_seed_advice_example_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    from course_plugins.core.advice import Advice, after_advice, around_advice, before_advice

    assert Advice is advice.Advice

    # Before advice - runs before the function
    @before_advice("course_service.create_course")
    def validate_input(course_data: dict[str, Any]) -> None:
        if len(course_data["name"]) < 5:
            raise ValueError("Name too short")

    # After advice - runs after, can modify return value
    @after_advice("course_service.create_course")
    def add_metadata(result: Any, course_data: dict[str, Any]) -> Any:
        result.created_by = "plugin"
        return result

    # Around advice - wraps the function completely
    @around_advice("quiz_service.submit_quiz")
    def with_timing(original_func: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.time()
        result = original_func(*args, **kwargs)
        print(f"Took {time.time() - start}s")
        return result

    class Course:
        created_by = "platform"

        def __init__(self, name: str) -> None:
            self.name = name

    # The platform's functions, imported after the advice was added.
    @advisable("course_service.create_course")
    def create_course(course_data: dict[str, Any]) -> Course:
        return Course(course_data["name"])

    @advisable("quiz_service.submit_quiz")
    def submit_quiz(answers: list[int]) -> int:
        return sum(answers)

    course = create_course({"name": "Python 101"})
    assert (course.name, course.created_by) == ("Python 101", "plugin")
    with pytest.raises(ValueError, match="Name too short"):
        create_course({"name": "Py"})
    assert submit_quiz([1, 2, 3]) == 6
    assert capsys.readouterr().out.startswith("Took ")


# --- advisable -----------------------------------------------------------------------------------


def test_advisable_keeps_name_doc_signature_and_works_without_advice() -> None:
    f = make_target()
    assert (f.__name__, f.__doc__) == ("f", "Adds.")
    assert str(inspect.signature(f)) == "(x: 'int', y: 'int' = 0) -> 'int'"
    assert f.__advice_target__ == "svc.f" and f(2, y=3) == 5
    af = make_async_target()
    assert inspect.iscoroutinefunction(af) and af.__name__ == "af" and af.__doc__ == "Adds later."
    assert asyncio.run(af(2, 3)) == 5


def test_advisable_methods_get_self() -> None:
    class Service:
        factor = 3

        @advisable("svc.method")
        def scale(self, x: int) -> int:
            return x * self.factor

    seen: list[Any] = []
    before_advice("svc.method")(lambda self, x: seen.append((type(self).__name__, x)))
    assert Service().scale(2) == 6 and seen == [("Service", 2)]


def test_one_name_for_two_functions_is_refused() -> None:
    make_target("svc.taken")

    with pytest.raises(AdviceError, match="svc.taken.*already"):

        @advisable("svc.taken")
        def other() -> None:
            pass


def test_reimporting_the_same_function_replaces_it() -> None:
    first = make_target("svc.again")
    second = make_target("svc.again")  # same module and qualname, as after a reload
    before_advice("svc.again")(lambda x, y=0: None)
    assert first(1) == second(1) == 1


def test_unknown_kind_and_bad_target_are_errors() -> None:
    with pytest.raises(AdviceError, match="unknown advice kind 'sideways'"):
        add_advice("sideways", "svc.f", print)
    with pytest.raises(AdviceError, match="not a target name"):
        before_advice(42)
    with pytest.raises(TypeError, match="not callable"):
        add_advice("before", "svc.f", "nope")  # type: ignore[arg-type]


def test_kinds_accept_emacs_spelling() -> None:
    f = make_target()
    add_advice(":before-until", "svc.f", lambda x, y=0: 99)
    assert f(1) == 99 and describe("svc.f")[0]["how"] == "before_until"


def test_target_may_be_the_advisable_function() -> None:
    f = make_target()
    before_advice(f, lambda x, y=0: None)
    assert len(describe(f)) == 1


# --- combinators ---------------------------------------------------------------------------------

# (kind, advice function, call args, expected result, expected trace); ``f`` adds x + y.
COMBINATORS = [
    ("before", lambda log: lambda x, y=0: log.append("a") or 100, (1, 2), 3, ["a", "f"]),
    (
        "after",
        lambda log: lambda r, x, y=0: log.append(("a", r)) or None,
        (1, 2),
        3,
        ["f", ("a", 3)],
    ),
    ("after", lambda log: lambda r, x, y=0: log.append("a") or r * 10, (1, 2), 30, ["f", "a"]),
    (
        "around",
        lambda log: lambda orig, x, y=0: log.append("a") or orig(x * 10, y) + 1,
        (1, 2),
        13,
        ["a", ("f", 10, 2)],
    ),
    ("around", lambda log: lambda orig, x, y=0: log.append("a") or "never", (1, 2), "never", ["a"]),
    ("override", lambda log: lambda x, y=0: log.append("a") or -1, (1, 2), -1, ["a"]),
    ("before_while", lambda log: lambda x, y=0: log.append("a") or True, (1, 2), 3, ["a", "f"]),
    ("before_while", lambda log: lambda x, y=0: log.append("a") or 0, (1, 2), 0, ["a"]),
    (
        "before_until",
        lambda log: lambda x, y=0: log.append("a") or "cached",
        (1, 2),
        "cached",
        ["a"],
    ),
    ("before_until", lambda log: lambda x, y=0: log.append("a") or None, (1, 2), 3, ["a", "f"]),
    (
        "after_while",
        lambda log: lambda x, y=0: log.append(("a", x, y)) or "more",
        (1, 2),
        "more",
        ["f", ("a", 1, 2)],
    ),
    ("after_while", lambda log: lambda x, y=0: log.append("a") or "more", (0, 0), 0, ["f"]),
    ("after_until", lambda log: lambda x, y=0: log.append("a") or "fallback", (1, 2), 3, ["f"]),
    (
        "after_until",
        lambda log: lambda x, y=0: log.append(("a", x, y)) or "fallback",
        (0, 0),
        "fallback",
        ["f", ("a", 0, 0)],
    ),
    (
        "filter_args",
        lambda log: lambda args, kw: log.append(("a", args, kw)) or ((args[0] * 2,), {"y": 5}),
        (1, 2),
        7,
        [("a", (1, 2), {}), ("f", 2, 5)],
    ),
    (
        "filter_return",
        lambda log: lambda r: log.append(("a", r)) or r * 100,
        (1, 2),
        300,
        ["f", ("a", 3)],
    ),
]


def _strip(trace: list[Any]) -> list[Any]:
    # ``f`` logs ("f", x, y); the table writes a bare "f" where the arguments are the call's own.
    return [
        "f" if isinstance(t, tuple) and t[0] == "f" and t[1:] in ((1, 2), (0, 0)) else t
        for t in trace
    ]


@pytest.mark.parametrize(("how", "make", "args", "expected", "trace"), COMBINATORS)
def test_combinator_sync(
    how: str, make: Any, args: tuple[int, int], expected: Any, trace: list[Any]
) -> None:
    log: list[Any] = []
    f = make_target(log=log)
    add_advice(how, "svc.f", make(log))
    assert f(*args) == expected
    assert _strip(log) == trace


@pytest.mark.parametrize(("how", "make", "args", "expected", "trace"), COMBINATORS)
def test_combinator_async_target(
    how: str, make: Any, args: tuple[int, int], expected: Any, trace: list[Any]
) -> None:
    log: list[Any] = []
    af = make_async_target(log=log)
    sync_fn = make(log)
    if how == "around":

        async def adv(orig: Any, *a: Any, **kw: Any) -> Any:  # awaits the async original
            log.append("a")
            if expected == "never":
                return "never"
            return await orig(a[0] * 10, *a[1:], **kw) + 1

        add_advice(how, "svc.af", adv)
    else:

        async def adv(*a: Any, **kw: Any) -> Any:
            return sync_fn(*a, **kw)

        add_advice(how, "svc.af", adv)
    assert asyncio.run(af(*args)) == expected
    assert _strip(log) == trace


def test_sync_advice_on_async_target_and_async_advice_on_sync_target() -> None:
    log: list[Any] = []
    af = make_async_target(log=log)
    before_advice("svc.af", lambda x, y=0: log.append("sync-before"))
    after_advice("svc.af", lambda r, x, y=0: r + 1)
    assert asyncio.run(af(1, 1)) == 3

    f = make_target(log=log)

    async def async_before(x: int, y: int = 0) -> None:
        await asyncio.sleep(0)
        log.append("async-before")

    async def async_filter(r: int) -> int:
        return r * 2

    before_advice("svc.f", async_before)
    filter_return_advice("svc.f", async_filter)
    assert f(2, 2) == 8
    assert "async-before" in log


def test_all_ten_decorators_exist_with_their_names() -> None:
    decorators = [
        before_advice,
        after_advice,
        around_advice,
        override_advice,
        before_while_advice,
        before_until_advice,
        after_while_advice,
        after_until_advice,
        filter_args_advice,
        filter_return_advice,
    ]
    assert [d.__name__ for d in decorators] == [f"{k}_advice" for k in ADVICE_KINDS]
    f = make_target()
    for d in decorators:
        fn = lambda *a, **k: None  # noqa: E731
        assert d("svc.f", priority=3, owner="p@1", key=f"p:{d.__name__}")(fn) is fn
    assert [a["how"] for a in describe("svc.f")] == list(ADVICE_KINDS)
    assert {a["plugin"] for a in describe("svc.f")} == {"p@1"}
    assert f is not None


# --- nesting -------------------------------------------------------------------------------------


def test_nesting_by_priority_lower_is_outermost_ties_earlier_outer() -> None:
    log: list[Any] = []
    f = make_target(log=log)

    def around(label: str) -> Any:
        def adv(orig: Any, *a: Any, **kw: Any) -> Any:
            log.append(f"{label}>")
            result = orig(*a, **kw)
            log.append(f"<{label}")
            return result

        return adv

    around_advice("svc.f", priority=20)(around("inner"))
    before_advice("svc.f", priority=10)(lambda x, y=0: log.append("before10"))
    after_advice("svc.f", priority=10)(lambda r, x, y=0: log.append("after10"))
    around_advice("svc.f", priority=0)(around("outer"))
    before_advice("svc.f", priority=10)(lambda x, y=0: log.append("before10b"))
    after_advice("svc.f", priority=30)(lambda r, x, y=0: log.append("after30"))
    assert f(1) == 1
    assert log == [
        "outer>",
        "before10",
        "before10b",
        "inner>",
        ("f", 1, 0),
        "after30",
        "<inner",
        "after10",
        "<outer",
    ]
    assert [a["priority"] for a in describe("svc.f")] == [0, 10, 10, 10, 20, 30]


def test_afters_chain_results_inner_first() -> None:
    f = make_target()
    after_advice("svc.f", priority=1)(lambda r, x, y=0: r + ["outer"])
    after_advice("svc.f", priority=2)(lambda r, x, y=0: None)
    after_advice("svc.f", priority=3)(lambda r, x, y=0: [r, "inner"])
    assert f(1) == [1, "inner", "outer"]


def test_filter_args_then_before_sees_filtered_args() -> None:
    seen: list[Any] = []
    f = make_target()
    filter_args_advice("svc.f", priority=1)(lambda args, kw: ((args[0] + 1,), kw))
    before_advice("svc.f", priority=2)(lambda x, y=0: seen.append(x))
    assert f(1) == 2 and seen == [2]


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("veto", [ValueError("v"), ValidationError("v"), PermissionDenied("v")])
@pytest.mark.parametrize(
    "how", ["before", "after", "around", "override", "before_while", "filter_args"]
)
def test_veto_from_advice_propagates(how: str, veto: Exception) -> None:
    log: list[Any] = []
    f = make_target(log=log)

    def refuse(*a: Any, **kw: Any) -> None:
        raise veto

    add_advice(how, "svc.f", refuse, owner="p@1")
    with pytest.raises(type(veto)) as info:
        f(1)
    assert info.value is veto
    assert health.failures("p@1") == 0


FALLBACKS = [
    ("before", 3, True),
    ("after", 3, True),
    ("around", 3, True),
    ("override", 3, True),
    ("before_while", 3, True),
    ("before_until", 3, True),
    ("after_while", 3, True),
    ("after_until", 3, True),  # result is truthy: the advice does not even run
    ("filter_args", 3, True),
    ("filter_return", 3, True),
]


@pytest.mark.parametrize(("how", "expected", "original_runs"), FALLBACKS)
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_broken_advice_is_isolated_and_skipped(
    how: str, expected: int, original_runs: bool, is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[Any] = []
    target = make_async_target(log=log) if is_async else make_target("svc.f", log=log)
    name = target.__advice_target__

    def broken(*a: Any, **kw: Any) -> None:
        raise RuntimeError("advice bug")

    add_advice(how, name, broken, owner="bad@1")
    with caplog.at_level(logging.ERROR, logger="course_plugins.plugins"):
        result = asyncio.run(target(1, 2)) if is_async else target(1, 2)
    assert result == expected
    assert log == [("f", 1, 2)]  # the original ran exactly once
    if how != "after_until":
        assert "bad@1" in caplog.text and "advice bug" in caplog.text
        assert health.failures("bad@1") == 1
        assert describe(name)[0]["errors"] == 1


def test_around_failing_after_calling_original_keeps_its_result() -> None:
    log: list[Any] = []
    f = make_target(log=log)

    @around_advice("svc.f", owner="p@1")
    def sloppy(orig: Any, *a: Any, **kw: Any) -> Any:
        orig(*a, **kw)
        raise KeyError("after the call")

    assert f(2, 3) == 5
    assert log == [("f", 2, 3)]


def test_original_exception_passes_through_around_unchanged() -> None:
    @advisable("svc.fails")
    def fails() -> None:
        raise LookupError("platform error")

    around_advice("svc.fails", owner="p@1")(lambda orig: orig())
    with pytest.raises(LookupError, match="platform error"):
        fails()
    assert health.failures("p@1") == 0


def test_filter_args_returning_the_wrong_shape_is_isolated() -> None:
    f = make_target()
    filter_args_advice("svc.f", owner="p@1")(lambda args, kw: "nonsense")
    assert f(1, 2) == 3
    assert health.failures("p@1") == 1


def test_strict_reraises_advice_errors() -> None:
    options.strict = True
    f = make_target()
    before_advice("svc.f", owner="p@1")(lambda x, y=0: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        f(1)


def test_repeated_failures_reach_quarantine() -> None:
    options.max_failures = 2
    quarantined: list[str] = []

    def listener(owner: str, reason: str, tb: str) -> None:
        quarantined.append(owner)

    health.add_quarantine_listener(listener)
    try:
        f = make_target()
        before_advice("svc.f", owner="bad@1")(lambda x, y=0: 1 / 0)
        f(1)
        f(1)
        assert quarantined == ["bad@1"]
    finally:
        health.remove_quarantine_listener(listener)


# --- registry ------------------------------------------------------------------------------------


def test_remove_advice_and_remove_owner_advice() -> None:
    f = make_target()
    one = before_advice("svc.f", owner="p@1")(lambda x, y=0: None)
    after_advice("svc.f", owner="p@1", key="p:times100")(lambda r, x, y=0: r * 100)
    filter_return_advice("svc.other", owner="p@1")(lambda r: r)
    keep = override_advice("svc.f", owner="q@1", priority=50)(lambda x, y=0: x - y)
    assert f(5, 2) == 300
    assert remove_advice("svc.f", one) is True
    assert remove_advice("svc.f", one) is False
    assert remove_advice("svc.never", one) is False
    assert remove_owner_advice("p@1") == 2
    assert f(5, 2) == 3
    assert [a["plugin"] for a in describe("svc.f")] == ["q@1"]
    assert remove_advice("svc.f", keep) and f(5, 2) == 7


def test_adding_the_same_function_again_replaces_it() -> None:
    f = make_target()
    calls: list[int] = []

    def count(x: int, y: int = 0) -> None:
        calls.append(x)

    before_advice("svc.f")(count)
    before_advice("svc.f", priority=1)(count)
    f(1)
    assert calls == [1] and [a["priority"] for a in describe("svc.f")] == [1]


def test_describe_and_describe_all() -> None:
    f = make_target()
    make_async_target()

    def validate(x: int, y: int = 0) -> None:
        pass

    before_advice("svc.f", owner="p@1.0.0", priority=4)(validate)
    after_advice("svc.later", owner="p@1.0.0")(lambda r: r)
    f(1)
    [row] = describe("svc.f")
    assert row["name"].endswith("test_describe_and_describe_all.<locals>.validate")
    assert (row["plugin"], row["how"], row["priority"], row["calls"], row["errors"]) == (
        "p@1.0.0",
        "before",
        4,
        1,
        0,
    )
    assert {"mean_ms", "p95_ms", "timeouts"} <= set(row)
    everything = describe_all()
    assert list(everything) == ["svc.af", "svc.f", "svc.later"]
    assert everything["svc.af"] == [] and len(everything["svc.later"]) == 1
    assert describe("svc.unknown") == []


def test_advice_added_before_the_module_is_imported(tmp_path: Path) -> None:
    module = tmp_path / "late_platform_service.py"
    module.write_text(
        textwrap.dedent(
            """
            from course_plugins.core.advice import advisable

            @advisable("late_service.greet")
            def greet(name):
                return "hello " + name
            """
        )
    )
    filter_return_advice("late_service.greet")(str.upper)
    assert not advice.is_advisable("late_service.greet")
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("late_platform_service")
        assert advice.is_advisable("late_service.greet")
        assert mod.greet("ada") == "HELLO ADA"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("late_platform_service", None)


def test_changing_advice_while_other_threads_call() -> None:
    f = make_target()
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[int] = set()

    def caller() -> None:
        try:
            while not stop.is_set():
                seen.add(f(1, 1))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            a = filter_return_advice("svc.f")(lambda r: r * 10)
            b = after_advice("svc.f", priority=20)(lambda r, x, y=0: r + 1)
            remove_advice("svc.f", a)
            remove_advice("svc.f", b)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    # Every call saw one whole chain: none, a, a+b (after inside filter_return) or b.
    assert seen <= {2, 20, 30, 3} and len(seen) >= 2
    assert f(1, 1) == 2


def test_advice_gets_the_arguments_the_caller_gave_not_the_targets_defaults():
    """Regression: a target with optional parameters must not pass its defaults to advice."""
    seen = []

    @advisable("regression.view_course")
    def view_course(course, user=None):
        return course

    @before_advice("regression.view_course")
    def log(course):
        seen.append(course)

    try:
        assert view_course("c1") == "c1"
        assert seen == ["c1"]
    finally:
        remove_advice("regression.view_course", log)


# --- keys, overrides, scope, arguments as given ------------------------------------------------


def test_advice_receives_the_arguments_exactly_as_passed() -> None:
    seen: list[Any] = []

    @advisable("svc.exact")
    def f(a: int, b: int) -> int:
        return a + b

    @advisable("svc.exact_default")
    def g(a: int, b: int = 0) -> int:
        return a + b

    for name in ("svc.exact", "svc.exact_default"):
        before_advice(name)(lambda *args, **kwargs: seen.append((args, kwargs)))
        filter_args_advice(name)(lambda args, kwargs: seen.append((args, kwargs)) or (args, kwargs))
    assert f(1, b=2) == 3 and g(1, b=2) == 3 and f(1, 2) == 3
    assert seen == [((1,), {"b": 2})] * 4 + [((1, 2), {})] * 2


def test_advice_overrides_and_scope() -> None:
    from course_plugins.core import scope

    f = make_target()
    after_advice("svc.f", owner="p@1", key="p:double")(lambda r, x, y=0: r * 2)
    after_advice("svc.f", owner="q@1", key="q:plus")(lambda r, x, y=0: r + 100)
    assert f(1) == (1 + 100) * 2  # double is outer: it runs last
    advice.set_override("p:double", enabled=False)
    assert f(1) == 101
    assert [a["enabled"] for a in describe("svc.f")] == [False, True]
    advice.set_override("p:double", priority=50)  # innermost now, and enabled again
    assert f(1) == 1 * 2 + 100
    advice.clear_override("p:double")
    assert advice.overrides() == {} and f(1) == 202
    with scope.entered(scope.Scope.of(3, ["q"])):
        assert f(1) == 2
    assert f(1) == 202
    after_advice("svc.f", owner="s@1", key="s:x", shadow=True)(lambda r, x, y=0: 0)
    assert f(1) == 202


def test_advice_key_clash_within_a_plugin_is_refused() -> None:
    make_target()

    def make() -> Any:
        def step(r: Any, *a: Any) -> Any:
            return r

        return step

    after_advice("svc.f", owner="p@1")(make())
    with pytest.raises(ValueError, match="make.<locals>.step"):
        after_advice("svc.f", owner="p@1")(make())


# --- the fast call of a split shape (targets whose parameters may be passed either way) ---------


def make_required_target(name: str = "svc.req", log: list[Any] | None = None) -> Any:
    @advisable(name)
    def f(x: int, y: int) -> int:
        """Adds; both required, so ``f(1, 2)`` is the fast call."""
        if log is not None:
            log.append(("f", x, y))
        return x + y

    return f


@pytest.mark.parametrize(("how", "make", "args", "expected", "trace"), COMBINATORS)
def test_combinator_on_the_fast_call(
    how: str, make: Any, args: tuple[int, int], expected: Any, trace: list[Any]
) -> None:
    log: list[Any] = []
    f = make_required_target(log=log)
    add_advice(how, "svc.req", make(log))
    assert f(*args) == expected
    assert _strip(log) == trace


@pytest.mark.parametrize("how", ["before", "override", "filter_args", "around", "after_while"])
def test_each_call_reaches_the_advice_as_passed_fast_or_not(how: str) -> None:
    seen: list[Any] = []

    @advisable("svc.shape")
    def f(a: int, b: int = 10) -> int:
        return a + b

    def record(*a: Any, **k: Any) -> Any:
        seen.append((a, k))
        return None if how == "before" else f.__wrapped__(*a, **k)

    pieces = {
        "before": record,
        "override": record,
        "after_while": record,
        "filter_args": lambda args, kwargs: seen.append((args, kwargs)) or (args, kwargs),
        "around": lambda orig, *a, **k: seen.append((a, k)) or orig(*a, **k),
    }
    add_advice(how, "svc.shape", pieces[how])
    results = [f(1), f(1, 2), f(a=1), f(1, b=2), f(b=2, a=1)]
    assert results == [11, 3, 11, 3, 3]
    assert seen == [
        ((1,), {}),
        ((1, 2), {}),
        ((), {"a": 1}),
        ((1,), {"b": 2}),
        ((), {"a": 1, "b": 2}),
    ]


@pytest.mark.parametrize(("how", "expected", "original_runs"), FALLBACKS)
def test_broken_advice_on_the_fast_call_is_isolated_and_skipped(
    how: str, expected: int, original_runs: bool, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[Any] = []
    f = make_required_target(log=log)

    def broken(*a: Any, **kw: Any) -> None:
        raise RuntimeError("advice bug")

    add_advice(how, "svc.req", broken, owner="bad@1")
    with caplog.at_level(logging.ERROR, logger="course_plugins.plugins"):
        for _ in range(20):  # the timed copy too (one call in 16)
            assert f(1, 2) == expected
    assert log == [("f", 1, 2)] * 20  # the original ran exactly once per call
    if how != "after_until":
        assert "bad@1" in caplog.text and "advice bug" in caplog.text
        assert health.failures("bad@1") == 20
        assert describe("svc.req")[0]["errors"] == 20
    assert describe("svc.req")[0]["calls"] == (0 if how == "after_until" else 20)


def test_around_on_the_fast_call_keeps_the_original_result_and_exception() -> None:
    log: list[Any] = []
    f = make_required_target(log=log)

    @around_advice("svc.req", owner="p@1")
    def sloppy(orig: Any, *a: Any) -> Any:
        orig(*a)
        raise KeyError("after the call")

    for _ in range(17):
        assert f(2, 3) == 5
    assert log == [("f", 2, 3)] * 17 and health.failures("p@1") == 17
    remove_advice("svc.req", sloppy)

    @advisable("svc.fails_fast")
    def fails(x: int) -> None:
        raise LookupError(f"platform error {x}")

    passthrough = around_advice("svc.fails_fast", owner="q@1")(lambda orig, x: orig(x))
    with pytest.raises(LookupError, match="platform error 1"):
        fails(1)
    assert health.failures("q@1") == 0
    remove_advice("svc.fails_fast", passthrough)

    def swaps(orig: Any, x: int) -> None:
        try:
            orig(x)
        except LookupError:
            raise RuntimeError("the advice's own") from None

    around_advice("svc.fails_fast", owner="r@1")(swaps)
    with pytest.raises(LookupError, match="platform error 2"):
        fails(2)  # the advice's error is counted; the original's is what the caller gets
    assert health.failures("r@1") == 1


# How an around advice's ``orig`` is tracked, on the fast call (a generated tracker the layer may
# lend to one call at a time) and on any other call (``f(x, y=...)``: one tracker per call).
CALL_STYLES = [
    pytest.param(lambda f, x, y: f(x, y), id="fast"),
    pytest.param(lambda f, x, y: f(x, y=y), id="keywords"),
]


@pytest.mark.parametrize("call", CALL_STYLES)
def test_around_calling_the_original_twice_keeps_its_last_outcome(call: Any) -> None:
    log: list[Any] = []
    f = make_required_target(log=log)
    mode: list[str] = []

    @around_advice("svc.req", owner="p@1")
    def twice(orig: Any, x: Any, *a: Any, **kw: Any) -> Any:
        if mode[0] == "fails, then works":
            with pytest.raises(TypeError):
                orig("text", *a, **kw)  # the original's own TypeError, caught by the advice
            orig(x, *a, **kw)
            raise KeyError("after both calls")
        orig(x, *a, **kw)
        try:
            return orig("text", *a, **kw)
        except TypeError:
            if mode[0] == "works, then fails, swapped":
                raise RuntimeError("the advice's own") from None
            raise

    mode[:] = ["fails, then works"]
    assert call(f, 2, 3) == 5  # the last call's result; the original does not run a third time
    assert [entry[1] for entry in log] == ["text", 2]
    assert health.failures("p@1") == 1
    log.clear()
    mode[:] = ["works, then fails"]
    with pytest.raises(TypeError):  # the last call's exception, passed through, not counted
        call(f, 2, 3)
    assert [entry[1] for entry in log] == [2, "text"] and health.failures("p@1") == 1
    log.clear()
    mode[:] = ["works, then fails, swapped"]
    with pytest.raises(TypeError):  # the advice's error is counted; the caller gets the original's
        call(f, 2, 3)
    assert [entry[1] for entry in log] == [2, "text"] and health.failures("p@1") == 2


@pytest.mark.parametrize("second_calls_orig", [False, True], ids=["fails-first", "calls-orig"])
@pytest.mark.parametrize("call", CALL_STYLES)
def test_around_tracking_is_per_call_across_threads(call: Any, second_calls_orig: bool) -> None:
    """One call's advice holds a result of its original while another thread's call of the
    same function runs (and fails before calling it, or calls it): neither sees the other's."""
    log: list[Any] = []
    f = make_required_target(log=log)
    first_ran, second_done = threading.Event(), threading.Event()

    @around_advice("svc.req", owner="p@1")
    def racy(orig: Any, x: int, *a: Any, **kw: Any) -> Any:
        if x == 1:
            orig(x, *a, **kw)
            first_ran.set()
            assert second_done.wait(5)
            raise KeyError("after its call")
        assert first_ran.wait(5)
        if second_calls_orig:
            return orig(x, *a, **kw)
        raise KeyError("before its call")

    results: dict[int, int] = {}
    first = threading.Thread(target=lambda: results.setdefault(1, call(f, 1, 10)))
    first.start()
    try:
        assert first_ran.wait(5)
        results[2] = call(f, 2, 10)
    finally:
        second_done.set()
        first.join(5)
    assert results == {1: 11, 2: 12}
    assert sorted(log) == [("f", 1, 10), ("f", 2, 10)]  # each original ran once
    assert health.failures("p@1") == (1 if second_calls_orig else 2)


@pytest.mark.parametrize("call", CALL_STYLES)
def test_around_tracking_is_per_call_when_reentered(call: Any) -> None:
    log: list[Any] = []
    f = make_required_target(log=log)
    inner_results: list[int] = []

    @around_advice("svc.req", owner="p@1")
    def nested(orig: Any, x: int, *a: Any, **kw: Any) -> Any:
        if x == 1:
            orig(x, *a, **kw)
            inner_results.append(call(f, 2, 10))  # the same function again, from the advice
            raise KeyError("after both")
        raise KeyError("before its call")

    assert call(f, 1, 10) == 11
    assert inner_results == [12]
    assert log == [("f", 1, 10), ("f", 2, 10)]
    assert health.failures("p@1") == 2


def test_around_tracking_through_a_recursive_original() -> None:
    calls: list[int] = []

    @advisable("svc.fact")
    def fact(n: int) -> int:
        calls.append(n)
        return 1 if n <= 1 else n * fact(n - 1)

    @around_advice("svc.fact", owner="p@1")
    def even_ones_fail(orig: Any, n: int) -> int:
        result: int = orig(n)
        if n % 2 == 0:
            raise KeyError(n)  # after the call: each level keeps its own original's result
        return result

    assert fact(6) == 720
    assert calls == [6, 5, 4, 3, 2, 1]
    assert describe("svc.fact")[0]["errors"] == 3


def test_an_orig_kept_by_around_advice_cannot_write_into_a_later_call() -> None:
    log: list[Any] = []
    f = make_required_target(log=log)
    kept: list[Any] = []

    @around_advice("svc.req", owner="p@1")
    def keeps(orig: Any, x: int, y: int) -> int:
        if not kept:
            kept.append(orig)
            result: int = orig(x, y)
            return result
        kept[0](100, 200)  # the first call's original, called during this call
        raise KeyError("before its own call")

    assert f(1, 2) == 3
    assert f(3, 4) == 7  # its own original, run once by the layer (not the kept call's 300)
    assert log == [("f", 1, 2), ("f", 100, 200), ("f", 3, 4)]
    kept.clear()
    assert f(5, 6) == 11  # tracked as before once nothing keeps it


def test_around_tracking_does_not_outlive_an_interrupted_call() -> None:
    class Stop(BaseException):
        pass

    log: list[Any] = []
    f = make_required_target(log=log)
    mode = ["stop"]

    @around_advice("svc.req", owner="p@1")
    def interrupted(orig: Any, x: int, y: int) -> int:
        if mode[0] == "stop":
            orig(x, y)
            raise Stop  # not an advice error: propagates
        raise KeyError("before its call")

    with pytest.raises(Stop):
        f(1, 2)
    mode[0] = "fail"
    for _ in range(17):  # the timed call included
        assert f(3, 4) == 7  # the interrupted call's result is not this call's
    assert log == [("f", 1, 2)] + [("f", 3, 4)] * 17
    assert health.failures("p@1") == 17


def test_async_around_calling_the_original_twice_keeps_its_last_outcome() -> None:
    log: list[Any] = []
    af = make_async_target(log=log)

    @around_advice("svc.af", owner="p@1")
    async def twice(orig: Any, x: Any, *a: Any, **kw: Any) -> Any:
        with pytest.raises(TypeError):
            await orig("text", *a, **kw)
        await orig(x, *a, **kw)
        raise KeyError("after both calls")

    assert asyncio.run(af(2, 3)) == 5
    assert [entry[1] for entry in log] == ["text", 2]  # not a third time
    assert health.failures("p@1") == 1


def test_advice_added_and_removed_while_an_advised_call_runs() -> None:
    calls: list[str] = []

    @advisable("svc.live")
    def f(x: int) -> int:
        calls.append("f")
        return x

    def late(x: int) -> None:
        calls.append("late")

    def adds(x: int) -> None:
        calls.append("adds")
        before_advice("svc.live", priority=20)(late)  # takes effect from the next call

    before_advice("svc.live")(adds)
    assert f(1) == 1 and calls == ["adds", "f"]
    calls.clear()
    assert f(1) == 1 and calls == ["adds", "late", "f"]
    remove_advice("svc.live", adds)
    remove_advice("svc.live", late)
    calls.clear()
    assert f(1) == 1 and calls == ["f"]
    assert describe("svc.live") == []


def test_an_error_in_fast_advice_keeps_its_traceback_and_plugin() -> None:
    f = make_required_target()
    options.strict = True

    def faulty(x: int, y: int) -> None:
        raise KeyError("the advice's line")

    before_advice("svc.req", owner="p@1")(faulty)
    with pytest.raises(KeyError) as info:
        f(1, 2)
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "faulty" and "the advice's line" in (frames[-1].line or "")
    # under it the plugin's budget (a frame of its own), then the generated layer
    assert frames[-2].name == "call" and frames[-3].filename == "<advice layer of svc.req>"
    options.strict = False
    assert f(1, 2) == 3
    failure = health.last_failure("p@1")
    assert failure is not None and "faulty" in failure.where and "KeyError" in failure.traceback


def test_targets_of_every_parameter_style_keep_working() -> None:
    @advisable("svc.builtin_names")
    def named(type: str, len: int = 0) -> str:  # noqa: A002 - names like builtins
        return f"{type}{len}"

    class Service:
        @advisable("svc.method")
        def method(self, x: int, *, scale: int = 1) -> int:
            return x * scale

    @advisable("svc.positional_only")
    def posonly(a: int, b: int = 2, /) -> int:
        return a * b

    seen: list[Any] = []

    def record(*a: Any, **k: Any) -> None:
        seen.append((a[1:] if a and isinstance(a[0], Service) else a, k))

    for name in ("svc.builtin_names", "svc.method", "svc.positional_only"):
        before_advice(name)(record)
    assert named("t") == "t0" and named("t", len=3) == "t3"
    assert Service().method(2) == 2 and Service().method(2, scale=3) == 6
    assert posonly(3) == 6 and posonly(3, 4) == 12
    assert seen == [
        (("t",), {}),
        (("t",), {"len": 3}),
        ((2,), {}),
        ((2,), {"scale": 3}),
        ((3,), {}),
        ((3, 4), {}),
    ]
