"""Tests for core.event_bus: patterns, publishing, owners, budgets, background delivery, index."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from datetime import UTC, timedelta
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from course_plugins.core._calls import ASYNC, PLAIN
from course_plugins.core.event_bus import AWAITS, BOUNDED, INLINE, Event, EventBus, Subscription
from course_plugins.core.health import health
from course_plugins.core.options import options
from course_plugins.exceptions import EventPatternError


@pytest.fixture(autouse=True)
def _engine_state(engine_state: None) -> None:
    """Every test here starts non-strict and leaves options and health as it found them."""


def spin() -> None:
    while True:
        pass


# --- Event ---------------------------------------------------------------------------------------


def test_event_fields() -> None:
    event = Event("course.created", {"name": "n"}, source="course-service")
    assert (event.name, event.data, event.source) == (
        "course.created",
        {"name": "n"},
        "course-service",
    )
    assert str(uuid.UUID(event.id)) == event.id and event.id == event.id
    assert event.timestamp.tzinfo is not None and event.timestamp.utcoffset() == timedelta(0)
    assert Event("a.b").data == {} and Event("a.b").source == "platform"
    assert Event("a.b").id != Event("a.b").id


def test_event_dict_round_trip_is_json_safe() -> None:
    event = Event("quiz.graded", {"score": 90.5, "ids": [1, 2]}, source="grader")
    d = json.loads(json.dumps(event.to_dict()))
    again = Event.from_dict(d)
    assert (again.id, again.name, again.data, again.source) == (
        event.id,
        "quiz.graded",
        {"score": 90.5, "ids": [1, 2]},
        "grader",
    )
    assert again.timestamp == event.timestamp and again.timestamp.tzinfo is not None
    assert again == event
    assert d["timestamp"].endswith("+00:00")


@pytest.mark.parametrize("name", ["", "course.*", "**"])
def test_event_names_cannot_be_empty_or_wildcards(name: str) -> None:
    with pytest.raises(EventPatternError, match="not valid"):
        Event(name)


# --- the seed, as written ------------------------------------------------------------------------


def test_seed_events_example_as_written(
    global_bus: EventBus, capsys: pytest.CaptureFixture[str]
) -> None:
    from course_plugins.core.event_bus import Event, EventBus

    bus = EventBus.get_instance()
    seen: list[str] = []

    # Subscribe to events
    @bus.subscribe("course.created")
    async def on_course_created(event: Event) -> None:
        print(f"Course created: {event.data['name']}")

    # Subscribe with wildcard patterns
    @bus.subscribe("course.*")  # All course events
    @bus.subscribe("*.created")  # All creation events
    async def on_any_creation(event: Event) -> None:
        seen.append(event.name)

    async def main() -> None:
        # Publish events
        await bus.publish(
            Event(
                name="course.created",
                data={"name": "My Course", "id": "123"},
                source="course-service",
            )
        )

    asyncio.run(main())
    assert capsys.readouterr().out == "Course created: My Course\n"
    assert seen == ["course.created"]  # matched by both patterns, run once
    bus.publish_sync(Event("user.created"))
    bus.publish_sync(Event("course.updated"))
    assert seen == ["course.created", "user.created", "course.updated"]


# --- subscribing ---------------------------------------------------------------------------------


def test_subscribe_decorator_returns_handler_unchanged_and_direct_form(bus: EventBus) -> None:
    seen: list[str] = []

    def handler(event: Event) -> None:
        seen.append(event.name)

    assert bus.subscribe("a.b")(handler) is handler
    assert bus.subscribe("c.d", handler) is handler
    bus.publish_sync(Event("a.b"))
    bus.publish_sync(Event("c.d"))
    assert seen == ["a.b", "c.d"]


def test_unsubscribe(bus: EventBus) -> None:
    seen: list[str] = []
    handler = bus.subscribe("a.*", lambda e: seen.append(e.name))
    assert bus.unsubscribe("a.*", handler) is True
    assert bus.unsubscribe("a.*", handler) is False
    bus.publish_sync(Event("a.b"))
    assert seen == [] and len(bus) == 0


def test_subscribing_twice_to_one_pattern_replaces(bus: EventBus) -> None:
    seen: list[str] = []
    handler = bus.subscribe("a.b", lambda e: seen.append("x"))
    bus.subscribe("a.b", handler, owner="p@1")
    bus.publish_sync(Event("a.b"))
    assert seen == ["x"] and [s.owner for s in bus.subscriptions()] == ["p@1"]


def test_remove_owner(bus: EventBus) -> None:
    seen: list[str] = []
    bus.subscribe("a.*", lambda e: seen.append("p1"), owner="p@1")
    bus.subscribe("**", lambda e: seen.append("p2"), owner="p@1")
    bus.subscribe("a.b", lambda e: seen.append("q"), owner="q@1")
    assert bus.remove_owner("p@1") == 2
    bus.publish_sync(Event("a.b"))
    assert seen == ["q"]


@pytest.mark.parametrize("pattern", ["", "a..b", "a.*x", "cour*se", ".a", "a."])
def test_bad_patterns_are_refused(bus: EventBus, pattern: str) -> None:
    with pytest.raises(EventPatternError, match="not valid"):
        bus.subscribe(pattern, lambda e: None)


# --- patterns ------------------------------------------------------------------------------------

PATTERN_MATRIX = [
    ("course.created", "course.created", True),
    ("course.created", "course.updated", False),
    ("course.*", "course.created", True),
    ("course.*", "course", False),
    ("course.*", "course.a.b", False),
    ("*.created", "user.created", True),
    ("*.created", "created", False),
    ("*.created", "a.b.created", False),
    ("*", "course", True),
    ("*", "course.created", False),
    ("*.*", "a.b", True),
    ("course.**", "course", True),
    ("course.**", "course.created", True),
    ("course.**", "course.a.b.c", True),
    ("course.**", "quiz.created", False),
    ("**", "anything.at.all", True),
    ("**", "x", True),
    ("**.created", "created", True),
    ("**.created", "a.b.created", True),
    ("**.created", "a.created.b", False),
    ("a.**.z", "a.z", True),
    ("a.**.z", "a.b.c.z", True),
    ("a.**.z", "a.b.c", False),
    ("a.*.**", "a", False),
    ("a.*.**", "a.b", True),
    ("a.*.**", "a.b.c.d", True),
    ("**.**", "a.b", True),
    ("a.**.b.**.c", "a.x.b.y.y.c", True),
    ("a.**.b.**.c", "a.x.c", False),
    ("lab.session_started", "lab.session_started", True),
]


@pytest.mark.parametrize(("pattern", "name", "matches"), PATTERN_MATRIX)
def test_pattern_matrix(bus: EventBus, pattern: str, name: str, matches: bool) -> None:
    seen: list[str] = []
    bus.subscribe(pattern, lambda e: seen.append(e.name))
    bus.publish_sync(Event(name))
    assert (seen == [name]) is matches
    assert (len(bus.matching(name)) == 1) is matches


def test_handler_matched_by_several_patterns_runs_once_in_first_subscription_position(
    bus: EventBus,
) -> None:
    calls: list[str] = []

    def first(e: Event) -> None:
        calls.append("first")

    def multi(e: Event) -> None:
        calls.append("multi")

    bus.subscribe("**", multi)
    bus.subscribe("course.created", first)
    bus.subscribe("course.*", multi)
    bus.subscribe("*.created", multi)
    bus.publish_sync(Event("course.created"))
    assert calls == ["multi", "first"]


def test_many_non_matching_subscriptions_do_not_match(bus: EventBus) -> None:
    for i in range(1000):
        bus.subscribe(f"other{i}.*", lambda e: None)
    seen: list[str] = []
    bus.subscribe("course.created", lambda e: seen.append(e.name))
    assert [s.pattern for s in bus.matching("course.created")] == ["course.created"]
    bus.publish_sync(Event("course.created"))
    assert seen == ["course.created"]


def test_match_cache_follows_subscription_changes(bus: EventBus) -> None:
    seen: list[str] = []
    bus.subscribe("a.*", lambda e: seen.append("one"))
    bus.publish_sync(Event("a.b"))  # caches a.b
    two = bus.subscribe("**", lambda e: seen.append("two"))
    bus.publish_sync(Event("a.b"))
    bus.unsubscribe("**", two)
    bus.publish_sync(Event("a.b"))
    assert seen == ["one", "one", "two", "one"]


# --- publishing: order, concurrency, sync and async ----------------------------------------------


def _rendezvous(bus: EventBus, log: list[str]) -> None:
    """Two async handlers that finish only if they run concurrently."""
    state: dict[str, asyncio.Event] = {}

    def gate(name: str) -> asyncio.Event:
        return state.setdefault(name, asyncio.Event())

    @bus.subscribe("r.go")
    async def left(event: Event) -> None:
        log.append("left-start")
        gate("left").set()
        await asyncio.wait_for(gate("right").wait(), 5)
        log.append("left-end")

    @bus.subscribe("r.go")
    def middle(event: Event) -> None:
        log.append("middle")

    @bus.subscribe("r.go")
    async def right(event: Event) -> None:
        log.append("right-start")
        gate("right").set()
        await asyncio.wait_for(gate("left").wait(), 5)
        log.append("right-end")


def test_publish_starts_in_order_runs_async_concurrently_and_awaits_all(bus: EventBus) -> None:
    log: list[str] = []
    _rendezvous(bus, log)
    asyncio.run(bus.publish(Event("r.go")))
    assert log[:3] == ["left-start", "middle", "right-start"]
    assert sorted(log[3:]) == ["left-end", "right-end"]


def test_publish_sync_without_a_loop(bus: EventBus) -> None:
    log: list[str] = []
    _rendezvous(bus, log)
    bus.publish_sync(Event("r.go"))
    assert sorted(log) == sorted(["left-start", "middle", "right-start", "left-end", "right-end"])
    assert log.index("left-start") < log.index("right-start")


def test_publish_sync_inside_a_running_loop(bus: EventBus) -> None:
    log: list[str] = []
    _rendezvous(bus, log)

    async def django_async_view() -> None:
        bus.publish_sync(Event("r.go"))

    asyncio.run(django_async_view())
    assert len(log) == 5 and {"left-end", "right-end"} <= set(log)


def test_publish_sync_from_an_async_handler_on_the_engine_loop(bus: EventBus) -> None:
    seen: list[str] = []

    @bus.subscribe("inner.x")
    async def inner(event: Event) -> None:
        seen.append("inner")

    @bus.subscribe("outer.x")
    async def outer(event: Event) -> None:
        bus.publish_sync(Event("inner.x"))  # runs on the engine loop thread: must not deadlock
        seen.append("outer")

    bus.publish_sync(Event("outer.x"))
    assert seen == ["inner", "outer"]


def test_publish_with_nobody_listening(bus: EventBus) -> None:
    bus.publish_sync(Event("nobody.listens"))
    asyncio.run(bus.publish(Event("nobody.listens")))


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [RuntimeError("bug"), ValueError("veto"), ValidationError("v"), PermissionDenied("p")],
    ids=["runtime", "value", "validation", "permission"],
)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_handler_errors_never_reach_the_publisher(
    bus: EventBus, caplog: pytest.LogCaptureFixture, error: Exception, kind: str
) -> None:
    after: list[str] = []

    def sync_handler(event: Event) -> None:
        raise error

    async def async_handler(event: Event) -> None:
        raise error

    bus.subscribe("a.b", sync_handler if kind == "sync" else async_handler, owner="bad@1")
    bus.subscribe("a.b", lambda e: after.append("after"))
    with caplog.at_level(logging.ERROR, logger="course_plugins.plugins"):
        bus.publish_sync(Event("a.b"))
        asyncio.run(bus.publish(Event("a.b")))
    assert after == ["after", "after"]
    assert health.failures("bad@1") == 2
    assert "bad@1" in caplog.text and type(error).__name__ in caplog.text
    assert bus.subscriptions()[0].stats.errors == 2


def test_ownerless_handler_error_is_logged(bus: EventBus, caplog: pytest.LogCaptureFixture) -> None:
    bus.subscribe("a.b", lambda e: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="course_plugins.plugins"):
        bus.publish_sync(Event("a.b"))
    assert "ZeroDivisionError" in caplog.text and "platform" in caplog.text


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_strict_reraises(bus: EventBus, kind: str) -> None:
    options.strict = True

    def sync_handler(event: Event) -> None:
        raise KeyError("strict")

    async def async_handler(event: Event) -> None:
        raise KeyError("strict")

    bus.subscribe("a.b", sync_handler if kind == "sync" else async_handler, owner="p@1")
    with pytest.raises(KeyError):
        bus.publish_sync(Event("a.b"))
    with pytest.raises(KeyError):
        asyncio.run(bus.publish(Event("a.b")))


def test_sync_handler_over_budget_is_interrupted(bus: EventBus) -> None:
    after: list[str] = []
    bus.subscribe("a.b", lambda e: spin(), owner="loop@1", timeout=0.05)
    bus.subscribe("a.b", lambda e: after.append("after"))
    bus.publish_sync(Event("a.b"))
    asyncio.run(bus.publish(Event("a.b")))
    assert after == ["after", "after"]
    assert bus.subscriptions()[0].stats.timeouts == 2
    failure = health.last_failure("loop@1")
    assert failure is not None and failure.kind == "timeout"


def test_async_handler_over_budget_is_cancelled(bus: EventBus) -> None:
    options.hook_timeout = 0.05

    @bus.subscribe("a.b", owner="slow@1")
    async def slow(event: Event) -> None:
        await asyncio.sleep(10)

    started = time.monotonic()
    bus.publish_sync(Event("a.b"))
    assert time.monotonic() - started < 5
    assert bus.subscriptions()[0].stats.timeouts == 1


# --- background delivery -------------------------------------------------------------------------


def test_background_subscriptions_go_to_the_dispatcher(bus: EventBus) -> None:
    ran: list[str] = []
    handed: list[tuple[str, str]] = []
    bus.subscribe("course.*", lambda e: ran.append("bg"), owner="p@1", background=True)
    bus.subscribe("course.*", lambda e: ran.append("inline"))
    bus.set_background_dispatcher(lambda event, sub: handed.append((event.name, sub.key)))
    bus.publish_sync(Event("course.created"))
    asyncio.run(bus.publish(Event("course.updated")))
    assert ran == ["inline", "inline"]
    assert [name for name, _ in handed] == ["course.created", "course.updated"]
    key = handed[0][1]
    assert key == "p:test_background_subscriptions_go_to_the_dispatcher.<locals>.<lambda>"


def test_background_without_dispatcher_runs_in_process(bus: EventBus) -> None:
    ran: list[str] = []
    bus.subscribe("a.b", lambda e: ran.append(e.name), background=True)
    bus.publish_sync(Event("a.b"))
    assert ran == ["a.b"]


def test_a_failing_dispatcher_is_logged_not_raised(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    bus.subscribe("a.b", lambda e: None, background=True)

    def broken(event: Event, sub: Subscription) -> None:
        raise ConnectionError("broker down")

    bus.set_background_dispatcher(broken)
    with caplog.at_level(logging.ERROR, logger="course_plugins.events"):
        bus.publish_sync(Event("a.b"))
    assert "broker down" in caplog.text


def test_deliver_runs_one_subscription_by_key(bus: EventBus) -> None:
    ran: list[tuple[str, Any]] = []

    def record(event: Event) -> None:
        ran.append(("sync", event.data["n"]))

    async def record_async(event: Event) -> None:
        ran.append(("async", event.data["n"]))

    bus.subscribe("a.*", record, owner="p@1", background=True)
    bus.subscribe("a.*", record_async, owner="p@1", background=True)
    bus.set_background_dispatcher(lambda event, sub: None)
    keys = [s.key for s in bus.subscriptions()]
    event = Event.from_dict(Event("a.b", {"n": 1}).to_dict())  # as the worker receives it
    bus.deliver(keys[1], event)
    bus.deliver(keys[0], event)
    assert ran == [("async", 1), ("sync", 1)]
    with pytest.raises(KeyError):
        bus.deliver("p:nope", event)


def test_deliver_counts_and_raises_failures_so_the_worker_retries(bus: EventBus) -> None:
    bus.subscribe("a.b", lambda e: 1 / 0, owner="p@1", background=True)
    bus.subscribe("a.c", lambda e: spin(), owner="p@1", timeout=0.05, background=True)
    [broken, looping] = [s.key for s in bus.subscriptions()]
    with pytest.raises(ZeroDivisionError):
        bus.deliver(broken, Event("a.b"))
    with pytest.raises(TimeoutError):
        bus.deliver(looping, Event("a.c"))
    assert health.failures("p@1") == 2


def test_keys_are_stable_and_a_clash_within_a_plugin_is_refused(bus: EventBus) -> None:
    def make() -> Any:
        return lambda e: None

    bus.subscribe("a.b", make(), owner="p@1")
    with pytest.raises(ValueError, match="p:test_keys_are_stable.*<lambda>"):
        bus.subscribe("a.b", make(), owner="p@1")  # another function, same qualname
    bus.subscribe("a.c", make(), owner="p@1")  # another pattern: fine
    bus.subscribe("a.b", make(), owner="q@1")  # another plugin: fine
    bus.subscribe("a.b", make())  # platform code gets a suffix
    bus.subscribe("a.b", make())
    other = EventBus()
    subscribed = [("a.b", "p@1"), ("a.c", "p@1"), ("a.b", "q@1"), ("a.b", None), ("a.b", None)]
    for pattern, owner in subscribed:
        other.subscribe(pattern, make(), owner=owner)
    keys = [s.key for s in bus.subscriptions()]
    assert keys[-1].endswith("#2") and keys[0].startswith("p:")
    assert keys[3].startswith(":test_event_bus.")
    assert keys == [s.key for s in other.subscriptions()]  # same order, same keys: any process


# --- copy-on-write, threads, inspection ----------------------------------------------------------


def test_unsubscribing_during_publish_skips_nobody_else(bus: EventBus) -> None:
    calls: list[str] = []

    def a(e: Event) -> None:
        calls.append("a")
        bus.unsubscribe("x.y", c)
        bus.subscribe("x.y", late)

    def b(e: Event) -> None:
        calls.append("b")

    def c(e: Event) -> None:
        calls.append("c")

    def d(e: Event) -> None:
        calls.append("d")

    def late(e: Event) -> None:
        calls.append("late")

    for fn in (a, b, c, d):
        bus.subscribe("x.y", fn)
    bus.publish_sync(Event("x.y"))
    assert calls == ["a", "b", "d"]
    calls.clear()
    bus.unsubscribe("x.y", a)
    bus.publish_sync(Event("x.y"))
    assert calls == ["b", "d", "late"]


def test_concurrent_subscribe_unsubscribe_while_publishing(bus: EventBus) -> None:
    counts = [0] * 5
    for i in range(5):

        def handler(e: Event, i: int = i) -> None:
            counts[i] += 1

        bus.subscribe("course.*", handler)
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            h = bus.subscribe(f"course.{'*' if n % 2 else 'created'}", lambda e: None)
            bus.unsubscribe(f"course.{'*' if n % 2 else 'created'}", h)
            n += 1

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(2000):
            bus.publish_sync(Event("course.created"))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert counts == [2000] * 5


def test_describe(bus: EventBus) -> None:
    def on_quiz(event: Event) -> None:
        pass

    bus.subscribe("quiz.*", on_quiz, owner="p@1.0.0", background=True)
    bus.subscribe("course.created", lambda e: None)
    bus.publish_sync(Event("quiz.submitted"))
    described = bus.describe()
    assert [d["pattern"] for d in described] == ["quiz.*", "course.created"]
    [handler] = described[0]["handlers"]
    assert handler["name"].endswith("test_describe.<locals>.on_quiz")
    assert (handler["plugin"], handler["background"], handler["calls"]) == ("p@1.0.0", True, 1)
    assert {"errors", "timeouts", "mean_ms", "p95_ms", "key"} <= set(handler)


def test_get_instance_and_isolated_bus(global_bus: EventBus) -> None:
    assert EventBus.get_instance() is global_bus
    EventBus().subscribe("a.b", lambda e: None)
    assert len(global_bus) == 0
    assert Event("a.b").timestamp.tzinfo is UTC


# --- overrides, scope, shadow, re-subscribing during a publish ---------------------------------


def test_override_switches_a_handler_off_on_every_pattern(bus: EventBus) -> None:
    ran: list[str] = []

    def handler(event: Event) -> None:
        ran.append(event.name)

    bus.subscribe("a.*", handler, owner="p@1")
    bus.subscribe("b.*", handler, owner="p@1")
    key = "p:test_override_switches_a_handler_off_on_every_pattern.<locals>.handler"
    bus.set_override(key, enabled=False)
    bus.publish_sync(Event("a.x"))
    bus.publish_sync(Event("b.x"))
    assert ran == []
    assert [row["handlers"][0]["enabled"] for row in bus.describe()] == [False, False]
    bus.subscribe("c.*", handler, owner="p@1")  # later subscriptions follow the override
    bus.publish_sync(Event("c.x"))
    assert ran == []
    bus.clear_override(key)
    bus.publish_sync(Event("c.x"))
    assert ran == ["c.x"] and bus.overrides() == {}


def test_scope_and_shadow_leave_handlers_out(bus: EventBus) -> None:
    from course_plugins.core import scope

    ran: list[str] = []
    bus.subscribe("a.*", lambda e: ran.append("p"), owner="p@1")
    bus.subscribe("a.*", lambda e: ran.append("q"), owner="q@1")
    bus.subscribe("a.*", lambda e: ran.append("s"), owner="s@1", shadow=True)
    with scope.entered(scope.Scope.of(1, ["q"])):
        bus.publish_sync(Event("a.x"))
        asyncio.run(bus.publish(Event("a.x")))
    bus.publish_sync(Event("a.x"))
    assert ran == ["p", "p", "p", "q"]


def test_re_subscribing_during_a_publish_keeps_the_handler_in_it(bus: EventBus) -> None:
    ran: list[str] = []

    def first(event: Event) -> None:
        ran.append("first")
        bus.subscribe("a.*", second, owner="p@1")

    def second(event: Event) -> None:
        ran.append("second")

    bus.subscribe("a.*", first)
    bus.subscribe("a.*", second)
    bus.publish_sync(Event("a.x"))
    assert ran == ["first", "second"]
    assert [s.owner for s in bus.subscriptions()] == [None, "p@1"]


def test_many_subscriptions_are_cheap_to_add_and_remove(bus: EventBus) -> None:
    handlers = [eval("lambda e: None") for _ in range(500)]  # noqa: S307 - distinct objects
    for i, handler in enumerate(handlers):
        bus.subscribe(f"p{i % 5}.*", handler, key=f":h{i}")
    assert len(bus) == 500 and len(bus.matching("p1.x")) == 100
    for handler in handlers[::2]:
        assert bus.unsubscribe(f"p{handlers.index(handler) % 5}.*", handler)
    assert len(bus) == 250 and len(bus.matching("p1.x")) == 50


# --- async publish: inline handlers, eager tasks -----------------------------------------------


def test_handlers_run_in_the_publishers_task_until_one_suspends(bus: EventBus) -> None:
    seen: list[tuple[str, Any]] = []

    async def quick(event: Event) -> None:
        seen.append(("quick", asyncio.current_task()))

    async def awaits(event: Event) -> None:
        await asyncio.sleep(0) if event.data.get("suspend") else None
        seen.append(("awaits", asyncio.current_task()))

    async def slow(event: Event) -> None:
        seen.append(("slow starts", asyncio.current_task()))
        await asyncio.sleep(0.01)
        seen.append(("slow ends", asyncio.current_task()))

    def plain(event: Event) -> None:
        seen.append(("plain", asyncio.current_task()))

    async def late(event: Event) -> None:
        seen.append(("late", asyncio.current_task()))

    bus.subscribe("a.*", quick)
    bus.subscribe("a.*", awaits, owner="p@1")
    bus.subscribe("a.*", slow, owner="p@1")
    bus.subscribe("a.*", late, owner="p@1")
    bus.subscribe("a.*", plain)
    assert [s.mode for s in bus.subscriptions()] == [INLINE, ASYNC, ASYNC, BOUNDED, PLAIN]
    assert Subscription("a.*", slow).mode == AWAITS

    async def main() -> Any:
        await bus.publish(Event("a.x"))
        return asyncio.current_task()

    publisher = asyncio.run(main())
    order = ["quick", "awaits", "slow starts", "late", "plain", "slow ends"]
    assert [what for what, _ in seen] == order
    # up to and including the first handler that really suspends: the publisher's own task,
    # and that handler stays in it to its end; the handlers after it go on in another task
    assert [task is publisher for _, task in seen] == [True, True, True, False, False, True]
    assert seen[3][1] is seen[4][1]
    [row] = bus.describe()
    assert [h["calls"] for h in row["handlers"]] == [1, 1, 1, 1, 1]


def test_first_steps_follow_subscription_order_whatever_the_kind(bus: EventBus) -> None:
    order: list[str] = []

    def make(name: str, kind: str) -> Any:
        if kind == "sync":

            def handler(event: Event) -> None:
                order.append(name)

        elif kind == "inline":

            async def handler(event: Event) -> None:
                order.append(name)

        else:

            async def handler(event: Event) -> None:
                order.append(name)
                await asyncio.sleep(0)
                order.append(name + " again")

        return handler

    kinds = ["await", "sync", "inline", "await", "inline", "sync", "await"]
    for i, kind in enumerate(kinds):
        bus.subscribe("a.b", make(f"{i}", kind), owner="p@1" if i % 2 else None, key=f":h{i}")
    asyncio.run(bus.publish(Event("a.b")))
    # started in order; a suspended handler may go on before later ones start
    assert [step for step in order if "again" not in step] == [str(i) for i in range(len(kinds))]
    assert sorted(step for step in order if "again" in step) == ["0 again", "3 again", "6 again"]


@pytest.mark.parametrize("setter", ["inline", "suspending", "sync"])
def test_a_handler_waiting_for_a_later_one_does_not_deadlock(bus: EventBus, setter: str) -> None:
    log: list[str] = []
    gate: dict[str, asyncio.Event] = {}

    @bus.subscribe("a.b", owner="p@1")
    async def waiter(event: Event) -> None:
        gate["go"] = asyncio.Event()
        await gate["go"].wait()
        log.append("woken")

    async def inline(event: Event) -> None:
        gate["go"].set()

    async def suspending(event: Event) -> None:
        await asyncio.sleep(0)
        gate["go"].set()

    def sync(event: Event) -> None:
        gate["go"].set()

    bus.subscribe("a.b", {"inline": inline, "suspending": suspending, "sync": sync}[setter])

    async def main() -> None:
        await asyncio.wait_for(bus.publish(Event("a.b")), 5)

    asyncio.run(main())
    assert log == ["woken"]


@pytest.mark.parametrize("owner", ["bad@1", None])
@pytest.mark.parametrize("when", ["before its first await", "after it"])
def test_a_suspending_handler_error_is_isolated_and_counted(
    bus: EventBus, caplog: pytest.LogCaptureFixture, when: str, owner: str | None
) -> None:
    after: list[str] = []

    @bus.subscribe("a.b", owner=owner)
    async def bad(event: Event) -> None:
        if when == "after it":
            await asyncio.sleep(0)
        raise RuntimeError(f"bug {when}")
        await asyncio.sleep(0)  # an await: this handler may suspend

    @bus.subscribe("a.b")
    async def good(event: Event) -> None:
        await asyncio.sleep(0)
        after.append("good")

    with caplog.at_level(logging.ERROR, logger="course_plugins.plugins"):
        asyncio.run(bus.publish(Event("a.b")))
    assert after == ["good"]
    assert f"bug {when}" in caplog.text
    assert health.failures("bad@1") == (1 if owner else 0)
    stats = bus.subscriptions()[0].stats
    assert (stats.calls, stats.errors) == (1, 1)
    options.strict = True
    with pytest.raises(RuntimeError, match=f"bug {when}"):
        asyncio.run(bus.publish(Event("a.b")))


def test_cancelling_the_publisher_cancels_the_suspended_handlers(bus: EventBus) -> None:
    log: list[str] = []
    all_started = asyncio.Event()

    def forever(name: str) -> Any:
        async def handler(event: Event) -> None:
            log.append(f"{name} started")
            if name == "second":
                all_started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                log.append(f"{name} cancelled")
                raise

        return handler

    bus.subscribe("a.b", forever("first"), key=":first")
    bus.subscribe("a.b", lambda e: log.append("sync"))
    bus.subscribe("a.b", forever("second"), key=":second")  # runs in the publisher's other task

    async def main() -> None:
        publisher = asyncio.create_task(bus.publish(Event("a.b")))
        await all_started.wait()
        assert log == ["first started", "sync", "second started"]
        publisher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await publisher
        assert sorted(log[3:]) == ["first cancelled", "second cancelled"]

    asyncio.run(asyncio.wait_for(main(), 5))


def test_timeouts_apply_to_a_handler_that_suspends_and_to_one_that_never_awaits(
    bus: EventBus,
) -> None:
    options.hook_timeout = 0.05
    after: list[str] = []

    @bus.subscribe("a.b", owner="slow@1")
    async def slow(event: Event) -> None:
        after.append("slow starts")
        await asyncio.sleep(10)

    @bus.subscribe("a.b", owner="spin@1")
    async def spinning(event: Event) -> None:  # no await: its budget interrupts the loop
        spin()

    bus.subscribe("a.b", lambda e: after.append("after"))
    started = time.monotonic()
    asyncio.run(bus.publish(Event("a.b")))
    assert time.monotonic() - started < 5
    assert after == ["slow starts", "after"]
    assert [s.stats.timeouts for s in bus.subscriptions()[:2]] == [1, 1]
    assert health.last_failure("slow@1").kind == "timeout"  # type: ignore[union-attr]
    assert health.last_failure("spin@1").kind == "timeout"  # type: ignore[union-attr]


@pytest.mark.parametrize("owner", [None, "p@1"])
def test_an_asyncio_timeout_in_a_handler_binds_to_the_task_running_it(
    bus: EventBus, owner: str | None
) -> None:
    log: list[str] = []

    @bus.subscribe("a.b", owner=owner)
    async def bounded(event: Event) -> None:
        try:
            async with asyncio.timeout(0.01):  # entered before the first await
                await asyncio.sleep(10)
        except TimeoutError:
            log.append("own timeout")

    @bus.subscribe("a.b", owner=owner)
    async def grouped(event: Event) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(asyncio.sleep(0.02))
        log.append("group done")

    async def main() -> None:
        await bus.publish(Event("a.b"))
        log.append("publisher not cancelled")

    asyncio.run(main())
    assert sorted(log) == ["group done", "own timeout", "publisher not cancelled"]


@pytest.mark.parametrize("owner", [None, "p@1"])
def test_handlers_see_the_publishers_context_and_do_not_change_it(
    bus: EventBus, owner: str | None
) -> None:
    from course_plugins.core import scope

    seen: list[tuple[str, Any]] = []

    async def inline(event: Event) -> None:
        seen.append(("inline", scope.current_scope.get()))

    async def suspending(event: Event) -> None:
        seen.append(("first step", scope.current_scope.get()))
        with scope.entered(scope.Scope.of(2)):  # around an await: its own context
            await asyncio.sleep(0)
            seen.append(("own", scope.current_scope.get()))
        seen.append(("after", scope.current_scope.get()))

    bus.subscribe("a.b", suspending, owner=owner)
    bus.subscribe("a.b", inline, owner=owner)
    publisher_scope = scope.Scope.of(1)

    async def main() -> Any:
        with scope.entered(publisher_scope):
            await bus.publish(Event("a.b"))
            return scope.current_scope.get()

    assert asyncio.run(main()) is publisher_scope
    assert seen == [
        ("first step", publisher_scope),
        ("inline", publisher_scope),
        ("own", scope.Scope.of(2)),
        ("after", publisher_scope),
    ]
