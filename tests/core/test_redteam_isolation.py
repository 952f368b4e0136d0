"""Hostile isolated plugins (the default mode), end to end through the real ``PluginLoader``.

Each plugin here does what an attacker's plugin would: return values the host cannot or should
not decode, raise errors that misbehave, keep the host's callbacks past their call, read other
plugins' storage. Whatever it does, the host's run returns, the hostile plugin's failure is
counted against it alone, and a well-behaved plugin on the same hook keeps working.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from course_plugins.api.platform_api import Services, default_api_factory
from course_plugins.core.advice import advisable
from course_plugins.core.event_bus import EventBus
from course_plugins.core.health import health
from course_plugins.core.hook_manager import HookManager
from course_plugins.core.isolation.channel import Endpoint, WorkerTimeout
from course_plugins.core.isolation.wire import DecodeTimeout, Wire, WireError, write_frame
from course_plugins.core.options import options
from course_plugins.core.plugin_loader import PluginLoader

pytestmark = pytest.mark.usefixtures("engine_state")


@pytest.fixture
def channel() -> Any:
    """Both ends of a channel: the host's and the one a (fake) worker writes to."""
    host_end, worker_end = socket.socketpair()
    yield host_end, worker_end
    host_end.close()
    worker_end.close()


GOOD = '''
def activate(api):
    @api.hooks["content-transform"].add
    def mark(body, *context):
        return body + "|good"
'''

HOSTILE = '''
def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


class Evil:
    def __eq__(self, other):
        while True:
            pass

    def __hash__(self):
        while True:
            pass


class Loud(Exception):
    def __str__(self):
        while True:
            pass


def activate(api):
    @api.hooks["content-transform"].add
    def attack(body, *context):
        kind = body.split("|")[0]
        if kind == "over-frame-limit":
            return "x" * (20 * 1024 * 1024)
        if kind == "deep":
            return nested(100_000)
        if kind == "cyclic":
            value = []
            value.append(value)
            return value
        if kind == "evil-object":
            return Evil()
        if kind == "colliding-int-keys":
            return {i << 61: 0 for i in range(5000)}
        if kind == "huge-int":
            return 10 ** 100_000
        if kind == "endless-error-text":
            raise Loud()
        return body
'''

KINDS = ["over-frame-limit", "deep", "cyclic", "evil-object", "colliding-int-keys", "huge-int",
         "endless-error-text"]


@pytest.fixture
def engine(make_plugin: Any):
    hooks, bus = HookManager(), EventBus()
    loader = PluginLoader([make_plugin.root], hooks=hooks, bus=bus,
                          api_factory=default_api_factory(Services.in_memory()))
    loader.hooks = hooks  # type: ignore[attr-defined]
    yield loader
    loader.close()


def test_hostile_return_values_and_errors_stay_with_the_plugin(make_plugin: Any,
                                                               engine: Any) -> None:
    make_plugin("good", GOOD, "hooks: [content-transform]\n")
    make_plugin("hostile", HOSTILE, "hooks: [content-transform]\ntimeout_seconds: 1\n")
    engine.discover_all()
    good, hostile = engine.activate("good"), engine.activate("hostile")
    assert hostile.isolated
    options.max_failures = 100
    for count, kind in enumerate(KINDS, start=1):
        # The FILTER keeps the value the hostile function failed on; the good one still ran.
        assert engine.hooks.run_sync("content-transform", kind) == f"{kind}|good", kind
        assert health.failures(hostile.id) == count, kind
        assert health.failures(good.id) == 0
    # A new worker serves the next call as if nothing happened.
    assert engine.hooks.run_sync("content-transform", "plain") == "plain|good"


def test_a_host_callback_kept_past_its_call_is_dead(make_plugin: Any, engine: Any) -> None:
    calls: list[int] = []

    @advisable("redteam_tests.record")
    def record(value: int) -> int:
        calls.append(value)
        return value

    make_plugin("keeper", '''
kept = []


def activate(api):
    @api.advice.around("redteam_tests.record")
    def keep(original, value):
        if kept:
            try:
                kept[0](666)  # the host function of an earlier call
            except Exception as exc:
                return f"refused: {type(exc).__name__}"
            return "called again"
        kept.append(original)
        return original(value)
''', "permissions: [advice]\n")
    engine.discover_all()
    engine.activate("keeper")
    try:
        assert record(1) == 1
        assert record(2).startswith("refused")
    finally:
        engine.deactivate("keeper")
    assert calls == [1]  # 666 never reached the host function


def test_storage_is_namespaced_per_plugin(make_plugin: Any, engine: Any) -> None:
    make_plugin("owner", '''
def activate(api):
    api.storage.set_sync("secret", "owner-only")
''', "permissions: [storage]\n")
    make_plugin("snoop", '''
def activate(api):
    @api.hooks["content-transform"].add
    def snoop(body, *context):
        found = [api.storage.get_sync(key) for key in
                 ("secret", "owner:secret", "../owner/secret", "owner/secret")]
        return repr([found, api.storage.keys_sync()])
''', "hooks: [content-transform]\npermissions: [storage]\n")
    engine.discover_all()
    engine.activate("owner")
    engine.activate("snoop")
    seen = engine.hooks.run_sync("content-transform", "")
    assert "owner-only" not in seen
    assert seen == "[[None, None, None, None], []]"


def test_register_flood_is_stopped_at_the_activate_budget(make_plugin: Any,
                                                         engine: Any) -> None:
    make_plugin("good", GOOD, "hooks: [content-transform]\n")
    make_plugin("flood", '''
def activate(api):
    i = 0
    while True:
        def f(body, *context):
            return body
        f.__qualname__ = f"f{i}"
        api.hooks["content-transform"].add(f)
        i += 1
''', "hooks: [content-transform]\ntimeout_seconds: 0.5\n")
    options.hook_timeout = 0.5  # activate's budget
    engine.discover_all()
    engine.activate("good")
    with pytest.raises(Exception, match="budget|registers at most 256 functions"):
        engine.activate("flood")
    # activate failing leaves nothing of it registered
    assert engine.hooks.run_sync("content-transform", "x") == "x|good"
    described = [f["key"] for h in engine.hooks.describe() for f in h["functions"]]
    assert not [key for key in described if key.startswith("flood:")]



FLOODER = '''
def activate(api):
    @api.hooks["content-transform"].add
    def flood(body, *context):
        if body.startswith("flood"):
            return [{}] * 600_000  # over the host's cap of objects and arrays per message
        return body
'''


def test_a_message_of_too_many_objects_is_refused_and_counted(make_plugin: Any,
                                                              engine: Any) -> None:
    make_plugin("good", GOOD, "hooks: [content-transform]\n")
    make_plugin("flooder", FLOODER, "hooks: [content-transform]\ntimeout_seconds: 5\n")
    engine.discover_all()
    good, flooder = engine.activate("good"), engine.activate("flooder")
    assert flooder.isolated
    options.max_failures = 100
    assert engine.hooks.run_sync("content-transform", "flood") == "flood|good"
    assert health.failures(flooder.id) == 1
    assert health.failures(good.id) == 0
    assert engine.hooks.run_sync("content-transform", "plain") == "plain|good"


def test_the_host_decodes_a_worker_message_bounded_in_shape_and_time() -> None:
    # What a hostile worker could write straight to its end of the channel, bypassing its own
    # (slow) encoder: millions of tiny containers, refused before they are built.
    wire = Wire()
    for item in ("{}", "[]"):
        with pytest.raises(WireError, match="more than 500000 objects and arrays"):
            wire.loads(("[" + ",".join([item] * 5_000_000) + "]").encode())
    # Brackets inside strings are not containers.
    text = {"s": '[{"' * 600_000}
    assert wire.loads(json.dumps(text).encode()) == text
    # Real plugin data (a few hundred thousand containers) still crosses.
    rows = [{"id": i, "tags": [str(i)]} for i in range(200_000)]
    assert wire.loads(json.dumps(rows).encode()) == rows
    # Decoding stops at the deadline: a past one refuses a message of many objects.
    with pytest.raises(DecodeTimeout):
        wire.loads(json.dumps(rows).encode(), time.monotonic() - 1)


def test_a_worker_answer_decoded_past_the_call_deadline_is_a_timeout(channel: Any) -> None:
    host_end, worker_end = channel
    endpoint = Endpoint(host_end.fileno(), Wire(), lambda request: None)
    # small enough for the socket buffer: nothing reads until receive() below
    write_frame(worker_end.fileno(), json.dumps({"r": [{}] * 10_000}).encode())
    with pytest.raises(WorkerTimeout):
        endpoint.receive(time.monotonic() - 1)  # the frame is read, then decoding stops


def test_an_error_from_a_worker_names_its_own_plugin_whatever_the_worker_says(channel: Any) -> None:
    # A worker whose language layer were escaped could describe its errors freely; the host's
    # admin and logs must still blame the plugin that worker runs, not another one.
    from course_plugins.core.sandbox.errors import SecurityViolation
    from course_plugins.exceptions import PluginError

    host_end, worker_end = channel
    endpoint = Endpoint(host_end.fileno(), Wire(), lambda request: None, owner="rogue@1.0")
    forged = endpoint._error(
        {"type": "PluginError", "message": "m", "attrs": {"plugin": "victim@1.0"}}
    )
    assert isinstance(forged, PluginError) and forged.plugin == "rogue@1.0"
    assert "victim" not in str(forged)
    refusal = endpoint._error({
        "type": "SecurityViolation", "message": "m",
        "attrs": {"plugin": "victim@1.0", "reason": "import of os refused"},
    })
    assert isinstance(refusal, SecurityViolation) and refusal.plugin == "rogue@1.0"


def test_the_host_never_unmarshals_what_a_worker_sends(channel: Any) -> None:
    # The host writes marshal (its worker trusts it); a worker's frames are read as JSON only,
    # so a compromised worker cannot hand the host's marshal reader data it made.
    import marshal

    host_end, worker_end = channel
    endpoint = Endpoint(host_end.fileno(), Wire(), lambda request: None, owner="rogue@1.0",
                        packs=True)
    for forged in (b"m" + marshal.dumps({"r": 1}, 2), b"t" + marshal.dumps({"r": 1}, 2),
                   marshal.dumps({"r": 1}, 2)):
        write_frame(worker_end.fileno(), forged)
        with pytest.raises(WireError):
            endpoint.receive(time.monotonic() + 5)


def test_a_same_as_argument_answer_names_an_argument_of_the_call_or_is_refused(
    channel: Any,
) -> None:
    host_end, worker_end = channel
    endpoint = Endpoint(host_end.fileno(), Wire(), lambda request: None, owner="rogue@1.0",
                        packs=True)
    course = {"title": "T"}
    for answer, expected in (({"s": 0}, course), ({"s": 1}, WireError), ({"s": -1}, WireError),
                             ({"s": "0"}, WireError), ({"s": True}, WireError)):
        write_frame(worker_end.fileno(), json.dumps(answer).encode())
        if expected is WireError:
            with pytest.raises(WireError):
                endpoint.call({"op": "call"}, time.monotonic() + 5, (course,))
        else:
            assert endpoint.call({"op": "call"}, time.monotonic() + 5, (course,)) is expected
    # A call without positional arguments has nothing to be the same as.
    write_frame(worker_end.fileno(), json.dumps({"s": 0}).encode())
    with pytest.raises(WireError):
        endpoint.call({"op": "call"}, time.monotonic() + 5)


def test_packed_messages_carry_every_value_the_json_form_carries() -> None:
    import datetime
    import decimal
    import uuid

    wire = Wire()
    value = {
        "text": "price: $5 {not a tag}", "n": [1, 2.5, None, True, -0.0, 10**40],
        "tuple": (1, "a"), "bytes": b"\x00\xff", "set": {1, 2},
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "day": datetime.date(2026, 1, 2), "time": datetime.time(3, 4),
        "dec": decimal.Decimal("1.10"), "id": uuid.UUID(int=7), "keys": {1: "one", (2, 3): "t"},
        "$": "a dollar key", "nested": [[{"$x": {"deep": (b"b",)}}]], "surrogate": "\udc80",
    }
    for message in ({"q": wire.encode(value)}, {"q": wire.encode([value, value])}):
        packed = wire.pack(message)
        assert packed[:1] == b"t"
        assert wire.unpack(packed) == wire.loads(wire.dumps(message))
    plain = {"q": {"title": "T", "tags": ["a"], "n": 1.5}}
    assert wire.pack(plain)[:1] == b"m" and wire.unpack(wire.pack(plain)) == plain
    for garbage in (b"", b"x", b"m", b"m\xff\xff", b"t" + b"\x00" * 8, b"{}"):
        with pytest.raises(WireError):
            wire.unpack(garbage)


def test_counting_containers_of_a_forged_message_takes_linear_time() -> None:
    # Over the cap of brackets, strings were taken out with a regex that backtracked
    # exponentially on a string that never ends: a few hundred kilobytes from a worker held the
    # site's thread for ever, far past the call's deadline (the count runs before decoding).
    wire = Wire()
    for forged in (b'"' + b"[" * 500_001 + b"a" * 40,
                   b'"\\' + b'"\\' * 300_000 + b"[" * 500_001,
                   b'["' + b"\\" + b"[" * 500_001):
        started = time.monotonic()
        with pytest.raises(WireError):
            wire.loads(forged, time.monotonic() + 1)
        assert time.monotonic() - started < 1


def test_a_worker_that_stops_reading_cannot_hold_the_host_past_the_deadline(channel: Any) -> None:
    # The host's writes had no bound: a worker that asked for much (or was sent a large call)
    # and then stopped reading its end of the channel filled the socket's buffer, and the
    # host's thread waited in write() for ever, its deadline never looked at again.
    import threading

    host_end, worker_end = channel
    endpoint = Endpoint(host_end.fileno(), Wire(), lambda request: "x" * 65536, packs=True)
    requests = b"".join(
        len(frame).to_bytes(4, "big") + frame
        for frame in [json.dumps({"q": {"op": "api", "p": "config.all"}}).encode()] * 200
    )
    worker_end.sendall(requests)  # asks 200 times, never reads an answer
    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(endpoint.call({"op": "call"}, time.monotonic() + 1))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    started = time.monotonic()
    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(5)
    assert not caller.is_alive(), "the host's thread is stuck writing to a worker"
    assert isinstance(outcome[0], WorkerTimeout)
    assert time.monotonic() - started < 2
    # A large call to a worker that never reads is bounded the same way.
    endpoint = Endpoint(host_end.fileno(), Wire(), lambda request: None, packs=True)
    started = time.monotonic()
    with pytest.raises(WorkerTimeout):
        endpoint.call({"op": "call", "a": ["x" * (8 * 1024 * 1024)]}, time.monotonic() + 1)
    assert time.monotonic() - started < 2


def test_requests_a_worker_sends_ahead_are_served_only_until_the_deadline() -> None:
    # The deadline was looked at only when the host had to wait for more bytes: a worker that
    # sent thousands of requests at once (each one work for the site: a database write, a log
    # record) had them all served first, however long that took.
    import threading

    served: list[Any] = []

    def handler(request: Any) -> None:
        time.sleep(0.002)  # a database write, say
        served.append(request)

    for message in ({"q": {"op": "api", "p": "storage.set_sync", "a": ["k", 1]}},
                    {"n": {"op": "api", "p": "log", "a": [20, "x"]}}):
        host_end, worker_end = socket.socketpair()
        endpoint = Endpoint(host_end.fileno(), Wire(), handler, packs=True,
                            one_way_failed=lambda request, exc: None)
        frame = json.dumps(message).encode()
        batch = (len(frame).to_bytes(4, "big") + frame) * 3000
        served.clear()
        # written from a thread: more than the socket holds, while the host reads
        threading.Thread(target=worker_end.sendall, args=(batch,), daemon=True).start()
        started = time.monotonic()
        try:
            with pytest.raises(WorkerTimeout):
                endpoint.call({"op": "call"}, time.monotonic() + 0.5)
            assert time.monotonic() - started < 1.5
            assert len(served) < 1000
        finally:
            host_end.close()
            worker_end.close()


def test_a_worker_cannot_make_the_host_raise_stopiteration(channel: Any) -> None:
    # An error a worker describes is raised in the host as the built-in class it names; a
    # StopIteration raised from the thread an async proxy awaits (asyncio.to_thread) cannot be
    # set on the awaited future, so the hook run that awaited it waited for ever.
    import asyncio

    host_end, worker_end = channel
    endpoint = Endpoint(host_end.fileno(), Wire(), lambda request: None, owner="rogue@1.0")
    for name in ("StopIteration", "StopAsyncIteration"):
        error = endpoint._error({"type": name, "message": "m", "args": ["m"]})
        assert not isinstance(error, (StopIteration, StopAsyncIteration))

        def fail(error: BaseException = error) -> None:
            raise error

        async def awaited() -> None:
            await asyncio.wait_for(asyncio.to_thread(fail), 5)

        with pytest.raises(Exception) as info:
            asyncio.run(awaited())
        assert not isinstance(info.value, TimeoutError)
