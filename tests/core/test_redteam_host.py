"""A hostile isolated plugin against the host's side of the channel: nested calls, host
functions called back in a loop, references used as what they were not lent as.

Each test fails on the code before its fix: the host waited far past the plugin's budget, or
called what the plugin was only allowed to look at.
"""

from __future__ import annotations

import time
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
