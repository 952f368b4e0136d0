"""A hostile isolated plugin against the host's side of the channel: nested calls, host
functions called back in a loop, references used as what they were not lent as.

Each test fails on the code before its fix: the host waited far past the plugin's budget, or
called what the plugin was only allowed to look at.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from course_plugins.core.advice import advisable
from course_plugins.core.isolation.wire import WireError
from tests.core.test_isolation import engine, make_plugin  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("engine_state")


def test_nested_calls_of_a_plugin_cannot_outlive_the_outer_budget(engine):  # noqa: F811
    # Each call spins almost its whole budget, then runs its own hook again: every nested call
    # used to get a fresh budget, so the site waited depth x budget.
    make_plugin(engine.root, "nest", '''
import time
from decimal import Decimal


def activate(api):
    api.hooks.define("nest-hook", "NORMAL")

    @api.hooks["nest-hook"].add
    def spin(depth):
        end = time.monotonic() + 0.8
        while time.monotonic() < end:
            pass
        if depth < 8:
            api.hooks.run_sync("nest-hook", depth + 1)
        return depth
''', hooks=("nest-hook",), timeout=1)
    loader = engine()
    loader.activate("nest")
    started = time.monotonic()
    engine.hooks.run_sync("nest-hook", 0)
    assert time.monotonic() - started < 2.5
    # The plugin still works afterwards (a new worker).
    assert loader.get("nest") is not None


def test_calling_a_host_function_back_in_a_loop_is_charged_to_the_plugin(engine):  # noqa: F811
    # The time the site spends in ``orig`` is not the plugin's, but only for its first call:
    # calling it again and again used to keep the site busy without limit.
    make_plugin(engine.root, "loop", '''
def activate(api):
    @api.advice.around("redteam_host.slow")
    def again(orig, *args, **kwargs):
        for _ in range(100):
            orig(*args, **kwargs)
        return 1
''', permissions=("advice",), timeout=1)

    @advisable("redteam_host.slow")
    def slow() -> int:
        time.sleep(0.1)
        return 0

    loader = engine()
    loader.activate("loop")
    try:
        started = time.monotonic()
        slow()
        assert time.monotonic() - started < 2.5
    finally:
        loader.deactivate("loop")


class Door:
    opened: list[Any] = []

    def __init__(self) -> None:
        Door.opened.append(self)


def test_a_reference_is_good_only_as_what_it_was_lent_as(engine):  # noqa: F811
    make_plugin(engine.root, "plain", "def activate(api):\n    pass\n")
    loader = engine()
    host = loader.activate("plain")._importer
    tag = host._export(Door)  # a class crosses as an object: its fields, never a call
    assert tag["$"] == "obj"
    with pytest.raises(WireError):
        host._serve({"op": "fn.call", "r": tag["r"], "a": [], "k": {}})
    assert Door.opened == []
    fn = host._export(lambda: None)
    with pytest.raises(WireError):
        host._serve({"op": "obj.get", "r": fn["r"], "n": "x"})


def test_a_priority_that_is_not_an_int_is_refused_before_it_breaks_the_hook(engine):  # noqa: F811
    # A string priority used to be half-registered: it broke the order of the hook, so later
    # registrations of other plugins on it failed.
    make_plugin(engine.root, "odd", '''
refused = []


def activate(api):
    for priority in ("z", [1], float("nan"), True):
        try:
            api.hooks["content-transform"].add(lambda body, *c: body + "|odd",
                                               priority=priority)
        except TypeError:
            refused.append(repr(priority))
''', hooks=("content-transform",))
    make_plugin(engine.root, "good", '''
def activate(api):
    @api.hooks["content-transform"].add
    def mark(body, *context):
        return body + "|good"
''', hooks=("content-transform",))
    loader = engine()
    module = loader.activate("odd").module
    loader.activate("good")
    assert engine.hooks.run_sync("content-transform", "x") == "x|good"
    assert len(module.refused) == 4


def test_advice_is_removed_only_by_its_own_plugin_with_the_advice_permission(engine):  # noqa: F811
    @advisable("redteam_host.plus")
    def plus(x: int) -> int:
        return x

    make_plugin(engine.root, "adv", '''
def activate(api):
    @api.advice.after("redteam_host.plus")
    def one_more(result, x):
        return result + 1
''', permissions=("advice",))
    make_plugin(engine.root, "rival", ATTEMPT_REMOVE, permissions=("advice",))
    make_plugin(engine.root, "nop", ATTEMPT_REMOVE)
    loader = engine()
    loader.activate("adv")
    try:
        assert plus(1) == 2
        assert loader.activate("rival").module.outcome == "done"
        assert loader.activate("nop").module.outcome == "PluginPermissionError"
        assert plus(1) == 2
    finally:
        loader.deactivate("adv")
    trusted = advisable("redteam_host.trusted")(lambda x: x)
    from course_plugins.core import advice

    def own(result: int, x: int) -> int:
        return result * 10

    advice.add_advice("after", "redteam_host.trusted", own, owner="someone@1")
    assert not advice.remove_advice("redteam_host.trusted", own, owner="other@1")
    assert trusted(1) == 10
    assert advice.remove_advice("redteam_host.trusted", own, owner="someone@1")


ATTEMPT_REMOVE = '''
outcome = None


def activate(api):
    global outcome
    try:
        # What a compromised worker can name: functions of the host lent to it, its own.
        api.advice.remove("redteam_host.plus", activate)
        outcome = "done"
    except Exception as exc:
        outcome = type(exc).__name__
'''


def test_a_permission_error_of_the_plugin_is_its_error_not_a_worker_crash(engine):  # noqa: F811
    make_plugin(engine.root, "denied", '''
def activate(api):
    @api.hooks["content-transform"].add
    def read(body, *context):
        if body == "own":
            raise PermissionError("no")
        return api.storage.get_sync("k")  # no storage permission: refused by the host
''', hooks=("content-transform",))
    loader = engine()
    host = loader.activate("denied")._importer
    pid = host.pid
    from course_plugins.core.health import health

    engine.hooks.run_sync("content-transform", "own")
    engine.hooks.run_sync("content-transform", "api")
    assert host.pid == pid and host.crashes == 0
    assert health.failures(loader.get("denied").id) == 2


def test_a_worker_cannot_make_the_site_keep_proxies_without_limit(engine):  # noqa: F811
    # Each module-level function a worker names becomes a proxy kept for the plugin's life: a
    # worker naming new ones in every message used to grow the site's memory without end.
    import json

    from course_plugins.core.isolation import host as host_module

    make_plugin(engine.root, "plain", "def activate(api):\n    pass\n")
    loader = engine()
    host = loader.activate("plain")._importer

    def message(tags: list[dict[str, Any]]) -> bytes:
        return json.dumps({"r": tags}).encode()

    names = [{"$": "wfn", "ml": "", "n": f"f{i}", "q": f"f{i}", "m": "m", "a": False}
             for i in range(host_module.MAX_MODULE_FUNCTIONS + 10)]
    with pytest.raises(WireError):
        host.wire.loads(message(names))
    assert len(host.module_proxies) <= host_module.MAX_MODULE_FUNCTIONS
    lent = [{"$": "wfn", "h": i, "n": "f", "q": "f", "m": "m", "a": False}
            for i in range(host_module.MAX_LENT + 10)]
    with pytest.raises(WireError):
        host.wire.loads(message(lent))
    host.lent.clear()
    # Names the site's stand-in module keeps its own state under are not function names.
    for ml, name in (("", "_isolated_plugin"), ("", "__class__"), ("_isolated_plugin", "f"),
                     ("a..b", "f"), ("", "x y")):
        with pytest.raises(WireError):
            host.wire.loads(message([{"$": "wfn", "ml": ml, "n": name, "q": name, "m": "m"}]))
    assert host.module.__dict__["_isolated_plugin"] is host


def test_a_host_function_lent_to_a_plugin_is_never_registered_as_its_own(engine):  # noqa: F811
    # Around advice's ``orig`` registered as a hook function used to be called by the site
    # later, outside the advised call, with whatever the hook passed.
    calls: list[Any] = []

    @advisable("redteam_host.wipe")
    def wipe(*args: Any) -> int:
        calls.append(args)
        return 0

    make_plugin(engine.root, "deputy", '''
refused = []


def activate(api):
    @api.advice.around("redteam_host.wipe")
    def keep(orig, *args, **kwargs):
        for attempt in (lambda: api.hooks["content-transform"].add(orig),
                        lambda: api.events.subscribe("course.*", orig),
                        lambda: api.advice.after("redteam_host.wipe", orig)):
            try:
                attempt()
            except TypeError:
                refused.append(1)
        return orig(*args, **kwargs)
''', permissions=("advice",), hooks=("content-transform",), events=("course.*",))
    loader = engine()
    module = loader.activate("deputy").module
    try:
        wipe()
        calls.clear()
        assert engine.hooks.run_sync("content-transform", "x") == "x"
        assert calls == []
        assert module.refused == [1, 1, 1]
    finally:
        loader.deactivate("deputy")


def test_a_worker_reports_only_its_policy_refusals_to_the_audit_trail(engine):  # noqa: F811
    from course_plugins.core.sandbox import audit

    make_plugin(engine.root, "plain", "def activate(api):\n    pass\n")
    loader = engine()
    host = loader.activate("plain")._importer
    events: list[Any] = []
    sink = audit.add_audit_sink(lambda kind, detail, plugin: events.append(kind))
    try:
        for kind in ("quarantine", "timeout", ["blocked"], "x" * 10_000):
            with pytest.raises(ValueError):
                host._serve({"op": "audit", "kind": kind, "detail": "forged"})
        host._serve({"op": "audit", "kind": "blocked", "detail": "refused"})
    finally:
        audit.remove_audit_sink(sink)
    assert events == ["blocked"]


class _Field:
    def __init__(self, name: str, attname: str | None = None) -> None:
        self.name, self.attname, self.is_relation = name, attname or name, False


class _Meta:
    pk = _Field("id")
    concrete_fields = [pk, _Field("title")]


class Row:
    _meta = _Meta()

    def __init__(self) -> None:
        self.id = 7
        self.title = "T"


def test_the_primary_key_of_a_host_model_instance_is_read_only(engine):  # noqa: F811
    # A plugin changing the id of the instance the site is saving made the site write over
    # another row.
    make_plugin(engine.root, "plain", "def activate(api):\n    pass\n")
    loader = engine()
    host = loader.activate("plain")._importer
    row = Row()
    ref = host._export(row)["r"]
    assert host._serve({"op": "obj.get", "r": ref, "n": "id"}) == 7
    with pytest.raises(PermissionError):
        host._serve({"op": "obj.set", "r": ref, "n": "id", "v": 1})
    host._serve({"op": "obj.set", "r": ref, "n": "title", "v": "U"})
    assert (row.id, row.title) == (7, "U")


class Vault:
    """A host object that is not data (a model instance, say): lent to a plugin for one call."""

    def __init__(self) -> None:
        self.owner = "site"

    def wipe(self) -> None:
        self.owner = "wiped"


def test_what_the_site_lends_for_one_call_cannot_be_passed_on_in_an_event(
    engine, caplog  # noqa: F811
):
    # Around advice used to put ``orig``, the object it returned and its own ``api`` in the
    # data of an event: every other plugin's handler got the site's objects themselves (a
    # trusted handler could call ``wipe()`` or use the emitter's permissions), kept past the
    # call they were lent for.
    from course_plugins.api.platform_api import emitter
    from course_plugins.core.event_bus import Event

    @advisable("redteam_host.vault")
    def open_vault() -> Vault:
        return Vault()

    make_plugin(engine.root, "courier", '''
def activate(api):
    @api.advice.around("redteam_host.vault")
    def carry(orig, *args, **kwargs):
        vault = orig(*args, **kwargs)
        api.emit("courier.orig", {"fn": orig})
        api.emit("courier.vault", {"deep": [1, (2, {"v": vault})]})
        api.emit("courier.api", api)
        api.emit("courier.plain", {"n": 1, "when": (1, 2), "raw": b"x"})
        try:
            api.storage.set_sync("kept", [vault])
        except TypeError as exc:
            api.log.warning("refused: %s", exc)
        return vault
''', permissions=("advice", "storage"))
    got: list[Event] = []
    engine.bus.subscribe("courier.*", got.append)
    loader = engine()
    loader.activate("courier")
    try:
        with caplog.at_level("WARNING", logger="course_plugins"):
            vault = open_vault()
            emitter.flush()
    finally:
        loader.deactivate("courier")
    assert isinstance(vault, Vault) and vault.owner == "site"
    assert [(e.name, e.data) for e in got] == [
        ("courier.plain", {"n": 1, "when": (1, 2), "raw": b"x"})
    ]
    text = caplog.text
    assert text.count("courier@1.0.0: api.emit takes plain data only") == 3
    assert "not the Vault the site lent it for the call" in text
    assert "not its api" in text
    assert "courier@1.0.0: api.storage.set_sync takes plain data only" in text


def test_a_plugin_lists_only_its_own_functions_on_a_hook_in_both_modes(engine):  # noqa: F811
    # ``api.hooks[name].functions`` used to list every plugin's functions: their qualified
    # names to an isolated plugin, the function objects themselves to a trusted one.
    def platform_step(body: str, *context: Any) -> str:
        return body

    engine.hooks["content-transform"].add(platform_step)
    make_plugin(engine.root, "rival", '''
def activate(api):
    @api.hooks["content-transform"].add(priority=1)
    def _rival_internal_step(body, *context):
        return body
''', hooks=("content-transform",))
    code = '''
seen = []


def first(body, *context):
    return body


def activate(api):
    hook = api.hooks["content-transform"]
    hook.add(first, priority=20)

    @hook.add(priority=5)
    def second(body, *context):
        return body

    seen[:] = [f.__qualname__ for f in hook.functions]
    seen.append(hook.functions[0] is second and hook.functions[1] is first)
'''
    make_plugin(engine.root, "lister", code, hooks=("content-transform",))
    make_plugin(engine.root, "trusted-lister", code, hooks=("content-transform",))
    loader = engine(trusted={"trusted-lister"})
    loader.activate("rival")
    expected = ["activate.<locals>.second", "first", True]
    assert loader.activate("lister").module.seen == expected
    assert loader.activate("trusted-lister").module.seen == expected


def test_a_decimal_that_would_take_hours_to_convert_does_not_cross(engine):  # noqa: F811
    # ``Decimal("1e999999999")`` is a few bytes on the channel; ``int()`` of it, which the site
    # does to an IntegerField's value, kept the site's thread busy for hours.
    import json

    make_plugin(engine.root, "huge", '''
import decimal


def activate(api):
    @api.hooks["content-transform"].add
    def huge(body, *context):
        return decimal.Decimal("1e999999999")
''', hooks=("content-transform",))
    loader = engine()
    host = loader.activate("huge")._importer
    assert engine.hooks.run_sync("content-transform", "x") == "x"  # the plugin's error
    for forged in ("1e999999999", "1e-999999999", "1" * 5000, "0." + "1" * 5000):
        with pytest.raises(WireError):
            host.wire.loads(json.dumps({"r": {"$": "dec", "v": forged}}).encode())
    assert host.wire.loads(b'{"r": {"$": "dec", "v": "12.50"}}')["r"] == Decimal("12.50")


def test_a_plugin_cannot_pile_up_events_faster_than_they_are_delivered(
    engine, caplog  # noqa: F811
):
    # Every api.emit was queued for the site's one emitter thread without limit: a plugin
    # emitting in a loop while delivery was slow grew the site's memory without end, and every
    # other plugin's events waited behind its own.
    import threading

    from course_plugins.api.platform_api import MAX_WAITING_EMITS, emitter

    gate = threading.Event()
    got: list[Any] = []

    def slow(event: Any) -> None:
        gate.wait(30)
        got.append(event.name)

    engine.bus.subscribe("flood.*", slow)
    make_plugin(engine.root, "flood", f'''
def activate(api):
    for i in range({MAX_WAITING_EMITS + 300}):
        api.emit("flood.e", {{"i": i, "pad": "x" * 1000}})
''')
    loader = engine()
    try:
        with caplog.at_level("ERROR", logger="course_plugins"):
            loader.activate("flood")
    finally:
        gate.set()
        emitter.flush()
    assert len(got) == MAX_WAITING_EMITS
    assert caplog.text.count("events of this plugin are still waiting to be delivered") == 300


def test_an_isolated_plugin_cannot_register_functions_without_limit(engine):  # noqa: F811
    # Each call could register up to 1,024 new functions (classes made with type() have names
    # of their own), call after call: every run of the hook then made one round trip per
    # function, so the site's runs grew slower without end.
    from course_plugins.core.isolation.host import MAX_REGISTERED

    make_plugin(engine.root, "many", '''
made = [0]
refused = []
API = []


def grow(body, *context):
    hook = API[0].hooks["content-transform"]
    for _ in range(200):
        made[0] += 1
        step = type(f"Step{made[0]}", (), {"__call__": lambda self, body, *context: None})()
        try:
            hook.add(step, priority=99)
        except Exception as exc:
            refused.append(type(exc).__name__)
    hook.add(grow, priority=1)  # the same function again: still allowed


def activate(api):
    API.append(api)
    api.hooks["content-transform"].add(grow, priority=1)
''', hooks=("content-transform",))
    loader = engine()
    module = loader.activate("many").module
    for _ in range(3):
        engine.hooks.run_sync("content-transform", "x")
    assert len(engine.hooks["content-transform"].registrations) == MAX_REGISTERED
    assert set(module.refused) == {"PlatformAPIError"}
    assert len(module.refused) == 600 - (MAX_REGISTERED - 1)


def test_one_log_record_of_an_isolated_plugin_is_bounded(engine, caplog):  # noqa: F811
    # A record as large as a message (16 MB) went to the site's logs as it was, as often as
    # the plugin's budget allowed.
    from course_plugins.core.isolation.host import MAX_LOG_TEXT

    make_plugin(engine.root, "verbose", '''
def activate(api):
    api.log.warning("x" * 10_000_000)
''')
    loader = engine()
    with caplog.at_level("WARNING", logger="course_plugins.plugins"):
        loader.activate("verbose")
    [record] = [r for r in caplog.records if r.name.endswith(".verbose")]
    assert len(record.getMessage()) < MAX_LOG_TEXT + 100
    assert record.getMessage().endswith(f"({10_000_000 - MAX_LOG_TEXT} more characters cut)")


def test_a_plugin_repeating_a_refused_operation_writes_a_bounded_audit_trail(
    engine,  # noqa: F811
):
    # Each refusal in a worker's policy was one round trip and one audit event (a log line and,
    # on a site, a database row): a plugin repeating one in a loop wrote thousands per call.
    from course_plugins.core.sandbox import audit

    make_plugin(engine.root, "noisy", '''
class Box:
    pass


def activate(api):
    box = Box()
    for _ in range(400):
        try:
            getattr(box, "_pri" + "vate")  # refused at run time
        except Exception:
            pass
        try:
            api.storage.get_sync("k")  # no storage permission
        except Exception:
            pass
''')
    events: list[tuple[str, str]] = []
    sink = audit.add_audit_sink(lambda kind, detail, plugin: events.append((kind, detail)))
    loader = engine()
    try:
        loader.activate("noisy")
    finally:
        audit.remove_audit_sink(sink)
    kinds = [kind for kind, _ in events]
    assert kinds.count("blocked") == kinds.count("permission") == audit.MAX_PER_WINDOW
    assert "later ones are counted only" in events[-1][1]
    audit._windows[("noisy@1.0.0", "permission")][0] -= audit.RATE_WINDOW  # a minute later
    events.clear()
    sink = audit.add_audit_sink(lambda kind, detail, plugin: events.append((kind, detail)))
    try:
        audit.audit("permission", "again", plugin="noisy@1.0.0")
    finally:
        audit.remove_audit_sink(sink)
    assert events == [
        ("permission", "again (and 300 more permission events of it before, counted only)")
    ]


def test_a_hook_a_plugin_runs_gets_plain_data_only(engine):  # noqa: F811
    # ``api.hooks.run_sync`` was the one Platform API call whose arguments were not checked:
    # an isolated plugin handed what the site lent it for one call (``orig``, the object it
    # returned, its own ``api``) to every other plugin's function on the hook it ran, which
    # got the site's objects themselves.
    got: list[Any] = []

    def other_plugins_step(body: Any, *context: Any, **options: Any) -> Any:
        got.append((body, context, options))
        return body

    engine.hooks["content-transform"].add(other_plugins_step)

    @advisable("redteam_host.relay")
    def open_vault() -> Vault:
        return Vault()

    make_plugin(engine.root, "relay", '''
refused = []


def activate(api):
    @api.advice.around("redteam_host.relay")
    def relay(orig, *args, **kwargs):
        vault = orig(*args, **kwargs)
        run = api.hooks.run_sync
        for attempt in (lambda: run("content-transform", orig),
                        lambda: run("content-transform", "x", {"deep": [vault]}),
                        lambda: run("content-transform", "x", api),
                        lambda: run("content-transform", "x", key=orig),
                        lambda: run("content-transform", relay)):
            try:
                attempt()
            except TypeError as exc:
                refused.append(str(exc))
        run("content-transform", "plain", (1, b"x"), key={"n": 1})
        return vault
''', permissions=("advice",), hooks=("content-transform",))
    loader = engine()
    module = loader.activate("relay").module
    try:
        vault = open_vault()
    finally:
        loader.deactivate("relay")
    assert isinstance(vault, Vault) and vault.owner == "site"
    assert got == [("plain", ((1, b"x"),), {"key": {"n": 1}})]
    refused = module.refused
    assert len(refused) == 5
    assert all("relay@1.0.0: api.hooks.run_sync takes plain data only" in r for r in refused)
    assert "not the Vault the site lent it for the call" in refused[1]
    assert "not its api" in refused[2]


def test_one_plugins_backlog_of_events_does_not_hold_up_another_plugins(engine):  # noqa: F811
    # The site's one emitter thread delivered events in the order they were emitted: behind a
    # plugin's 1,000 waiting events, each taking its handlers' time, another plugin's event
    # waited for all of them (1,000 x the budget: over an hour). Each plugin's events now take
    # turns with the others', in order within each plugin.
    import threading

    from course_plugins.api.platform_api import emitter

    delivered: dict[str, float] = {}
    order: list[int] = []

    def slow(event: Any) -> None:
        time.sleep(0.05)
        order.append(event.data["i"])

    quick_done = threading.Event()

    def quick(event: Any) -> None:
        delivered["quick"] = time.monotonic()
        quick_done.set()

    engine.bus.subscribe("backlog.*", slow)
    engine.bus.subscribe("quick.*", quick)
    make_plugin(engine.root, "backlog", '''
def activate(api):
    for i in range(60):
        api.emit("backlog.e", {"i": i})
''')
    make_plugin(engine.root, "quick", '''
def activate(api):
    api.emit("quick.e", {})
''')
    loader = engine()
    try:
        loader.activate("backlog")
        emitted = time.monotonic()
        loader.activate("quick")
        assert quick_done.wait(10)
        assert delivered["quick"] - emitted < 1.0  # not behind 60 x 0.05 s
    finally:
        emitter.flush()
    assert order == list(range(60))


STICKY = '''
import datetime


class Sticky(str):
    def __str__(self):
        while True:
            pass

    def __iter__(self):
        while True:
            pass


class Rows(list):
    def __iter__(self):
        while True:
            pass


class Pairs(tuple):
    def __iter__(self):
        while True:
            pass


class Table(dict):
    def keys(self):
        while True:
            pass

    def items(self):
        while True:
            pass

    def __iter__(self):
        while True:
            pass


class Zone(datetime.tzinfo):
    def utcoffset(self, when):
        while True:
            pass


class Named:
    @property
    def _isolated(self):
        while True:
            pass

    def __call__(self):
        return None


def activate(api):
    @api.hooks["content-transform"].add(priority=1)
    def stick(body, *context):
        return {"s": Sticky("text"), "rows": Rows([1, 2]), "pairs": Pairs((3, 4)),
                "table": Table(a=1), "named": Named(),
                "when": datetime.datetime(2026, 1, 1, tzinfo=Zone()),
                "utc": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)}

    api.emit("sticky.e", {"s": Sticky("text"), "table": Table(a=1)})
'''


def test_a_trusted_plugins_objects_reach_an_isolated_plugin_as_data_without_running(
    engine,  # noqa: F811
):
    # What crosses to an isolated plugin is encoded in the site, where no budget runs: a
    # subclass of str, list, tuple or dict was made plain by str(), list(), tuple(), dict()
    # (running its own __str__, __iter__, keys), and any object was asked for ``_isolated``: a
    # trusted plugin's object handed on (a FILTER's value, an event's data) held the hook run,
    # or the site's one emitter thread, for ever.
    import threading

    from course_plugins.api.platform_api import emitter

    make_plugin(engine.root, "sticky", STICKY, hooks=("content-transform",))
    make_plugin(engine.root, "reader", '''
seen = []


def activate(api):
    @api.hooks["content-transform"].add(priority=20)
    def read(body, *context):
        seen.append(repr({k: (type(v).__name__, v) for k, v in body.items()
                          if k not in ("named", "when")}))
        return "read"

    @api.events.subscribe("sticky.*")
    def heard(event):
        seen.append(repr(event.data))
''', hooks=("content-transform",), events=("sticky.*",))
    loader = engine(trusted={"sticky"})
    reader = loader.activate("reader").module
    done: list[Any] = []

    def run() -> None:
        loader.activate("sticky")
        done.append(engine.hooks.run_sync("content-transform", "x"))
        emitter.flush(5)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(15)
    assert not worker.is_alive(), "the site ran a trusted plugin's code where no budget runs"
    assert done == ["read"]
    assert sorted(reader.seen) == [  # (the event and the hook run may come in either order)
        "{'s': 'text', 'table': {'a': 1}}",
        "{'s': ('str', 'text'), 'rows': ('list', [1, 2]), 'pairs': ('tuple', (3, 4)), "
        "'table': ('dict', {'a': 1}), 'utc': ('datetime', "
        "datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc))}",
    ]


def test_an_isolated_plugins_storage_update_never_holds_the_sites_lock(engine):  # noqa: F811
    # A first update of a key (or one after another writer's) had the site call the plugin's
    # function back while it held the storage's lock and transaction: the worker could keep
    # every other plugin's storage updates (and, on SQLite, every write of the site) waiting
    # for its whole budget, call after call.
    import logging
    import threading

    make_plugin(engine.root, "holder", '''
import time


def activate(api):
    @api.hooks["content-transform"].add
    def hold(body, *context):
        def slow(value):
            api.log.warning("holding the key")
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                pass
            return (value or 0) + 1

        return str(api.storage.update_sync("k", slow))
''', hooks=("content-transform",), permissions=("storage",), timeout=3)
    make_plugin(engine.root, "other", "def activate(api):\n    pass\n",
                permissions=("storage",))
    loader = engine()
    holder = loader.activate("holder")
    other = loader.activate("other")
    holding = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "holding the key" in record.getMessage():
                holding.set()

    seen = Seen()
    logging.getLogger("course_plugins").addHandler(seen)
    try:
        results: list[Any] = []
        run = threading.Thread(
            target=lambda: results.append(engine.hooks.run_sync("content-transform", "x")))
        run.start()
        assert holding.wait(5)
        started = time.monotonic()
        assert other.api.storage.update_sync("j", lambda value: 7) == 7
        assert time.monotonic() - started < 0.5
        run.join(10)
        assert results == ["1"]
        assert holder.api.storage.get_sync("k") == 1
    finally:
        logging.getLogger("course_plugins").removeHandler(seen)
    # A worker asking the site to call its function back under the lock is refused.
    host = holder._importer
    with pytest.raises(AttributeError, match="not part of the Platform API"):
        host._serve({"op": "api", "p": "storage.update_sync", "a": ["k", None], "k": {}})


def test_what_one_call_of_an_isolated_plugin_logs_is_bounded(engine, caplog):  # noqa: F811
    # Each record was cut at 64 KiB, but a call could send as many as its budget allowed (one
    # way, no answer awaited): tens of thousands of records, gigabytes of the site's logs per
    # call. At most MAX_LOG_RECORDS records and MAX_LOG_BYTES characters of one call reach them;
    # one line says how many more were dropped.
    from course_plugins.core.isolation.host import MAX_LOG_BYTES, MAX_LOG_RECORDS

    make_plugin(engine.root, "chatty", '''
def activate(api):
    @api.hooks["content-transform"].add
    def chat(body, *context):
        for i in range(5000):
            api.log.warning("%d %s", i, "x" * int(body))
        return body
''', hooks=("content-transform",))
    loader = engine()
    loader.activate("chatty")
    for size, kept in ((10, MAX_LOG_RECORDS), (60_000, MAX_LOG_BYTES // 60_000 + 1)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="course_plugins"):
            assert engine.hooks.run_sync("content-transform", str(size)) == str(size)
        records = [r.getMessage() for r in caplog.records if r.name.endswith(".chatty")]
        assert len(records) == kept + 1
        assert records[-1] == (f"chatty@1.0.0: {5000 - kept} more log records of this call were "
                               "dropped (at most 1000 records and 1048576 characters a call)")
    # The next call logs again.
    caplog.clear()
    with caplog.at_level("WARNING", logger="course_plugins"):
        engine.hooks.run_sync("content-transform", "1")
    assert len([r for r in caplog.records if r.name.endswith(".chatty")]) == MAX_LOG_RECORDS + 1


def test_refused_one_way_calls_of_an_isolated_plugin_log_a_bounded_number_of_lines(
    engine, caplog  # noqa: F811
):
    # Each refused api.emit (one way: the worker does not wait) wrote an error line to the
    # site's logs: emitting in a loop past the cap of waiting events wrote one per attempt,
    # as fast as the site could.
    import threading

    from course_plugins.api.platform_api import MAX_WAITING_EMITS, emitter
    from course_plugins.core.isolation.host import MAX_LOG_RECORDS

    gate = threading.Event()
    engine.bus.subscribe("spam.*", lambda event: gate.wait(30))
    make_plugin(engine.root, "spam", f'''
def activate(api):
    for i in range({MAX_WAITING_EMITS + MAX_LOG_RECORDS + 3000}):
        api.emit("spam.e", {{"i": i}})
''')
    loader = engine()
    try:
        with caplog.at_level("WARNING", logger="course_plugins"):
            loader.activate("spam")
    finally:
        gate.set()
        emitter.flush()
    lines = [r.getMessage() for r in caplog.records if r.name.endswith(".spam")]
    assert len(lines) == MAX_LOG_RECORDS + 1
    assert lines[-1].startswith("spam@1.0.0: 3000 more log records of this call were dropped")


def test_an_isolated_plugin_registers_in_a_bounded_number_of_places(engine):  # noqa: F811
    # The cap on distinct functions did not bound where they were registered: one handler
    # subscribed to "course.p0", "course.p1"... (all covered by its "course.*") or one piece of
    # advice on ever new target names grew the site's registries by thousands a call.
    from course_plugins.core import advice
    from course_plugins.core.isolation.host import MAX_PLACES

    make_plugin(engine.root, "everywhere", f'''
refused = []


def activate(api):
    def handler(event):
        pass

    def adv(*args, **kwargs):
        pass

    for i in range({MAX_PLACES} + 50):
        try:
            api.events.subscribe(f"course.p{{i}}", handler)
            api.events.unsubscribe(f"course.p{{i - 1}}", handler)  # what is removed is freed
        except Exception as exc:
            refused.append(type(exc).__name__)
    for i in range({MAX_PLACES} + 50):
        try:
            api.advice.before(f"nowhere.t{{i}}", adv)
        except Exception as exc:
            refused.append(type(exc).__name__)
''', events=("course.*",), permissions=("advice",))
    before = len(advice._targets)
    loader = engine()
    module = loader.activate("everywhere").module
    try:
        assert len(engine.bus) == 1
        assert len(advice._targets) - before <= MAX_PLACES
        assert set(module.refused) == {"PlatformAPIError"}
        assert len(module.refused) == 51
    finally:
        loader.deactivate("everywhere")
    assert len(advice._targets) == before  # names advice was removed from are forgotten


def test_an_isolated_plugin_reads_a_trusted_plugins_object_without_running_its_code(
    engine,  # noqa: F811
):
    # The fields of an object the site lends an isolated plugin were read with getattr(), and
    # the object was taken for a model instance by whatever its class called ``_meta``: an
    # object a trusted plugin handed on (a FILTER's value) ran its property, or its fake
    # ``_meta``'s, in the site, where no budget runs.
    import threading

    make_plugin(engine.root, "maker", '''
class Spin:
    @property
    def concrete_fields(self):
        while True:
            pass


class Model:
    _meta = Spin()

    def __init__(self):
        self.size = 2


def activate(api):
    @api.hooks["content-transform"].add(priority=1)
    def make(body, *context):
        class Box:
            pass

        box = Box()
        box.size = 1
        Box.size = property(lambda self: next(x for x in iter(int, 1) if x))  # spins
        return box if body == "box" else Model()
''', hooks=("content-transform",))
    make_plugin(engine.root, "reader", '''
seen = []


def activate(api):
    @api.hooks["content-transform"].add(priority=20)
    def read(body, *context):
        seen.append(body.size)
        body.size = 5
        seen.append(body.size)
        return "read"
''', hooks=("content-transform",))
    loader = engine(trusted={"maker"})
    reader = loader.activate("reader").module
    loader.activate("maker")
    done: list[Any] = []

    def run() -> None:
        for kind in ("box", "model"):
            done.append(engine.hooks.run_sync("content-transform", kind))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(15)
    assert not worker.is_alive(), "the site ran a trusted plugin's code where no budget runs"
    assert done == ["read", "read"]
    assert reader.seen == [1, 5, 2, 5]
