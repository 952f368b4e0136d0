"""PluginLoader: discovery, dependencies, the security policy, lifecycle, teardown, quarantine.

Django-free: every loader here uses an isolated HookManager/EventBus and in-memory stores.
"""

from __future__ import annotations

import datetime
import importlib
import json
import logging
import shutil
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from plugin_factory import write_plugin

from course_plugins.api.platform_api import Services, default_api_factory
from course_plugins.core import advice
from course_plugins.core.event_bus import Event, EventBus
from course_plugins.core.health import health
from course_plugins.core.hook_manager import HookManager
from course_plugins.core.options import options
from course_plugins.core.plugin_loader import PluginLoader, PluginState
from course_plugins.core.sandbox import facades
from course_plugins.core.sandbox.errors import SecurityViolation
from course_plugins.exceptions import (
    PluginDependencyError,
    PluginError,
    PluginLoadError,
    PluginManifestError,
    PluginNotFound,
    PluginStateError,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"


@pytest.fixture
def make_loader():
    """Build loaders over fixture folders (by name) or paths; all are closed after the test."""
    made: list[PluginLoader] = []

    def make(*folders: str | Path, services: Services | None = None, **kwargs) -> PluginLoader:
        dirs = [FIXTURES / f if isinstance(f, str) else f for f in folders]
        kwargs.setdefault("hooks", HookManager())
        kwargs.setdefault("bus", EventBus())
        loader = PluginLoader(
            dirs, api_factory=default_api_factory(services or Services.in_memory()), **kwargs
        )
        made.append(loader)
        loader.discover_all()
        return loader

    yield make
    for loader in made:
        loader.close()


def short(name: str) -> str:
    """``course_plugins.loaded.x_3.activate.<locals>.stamp`` -> ``stamp``."""
    return name.rsplit(".", 1)[-1]


def owned(loader: PluginLoader, owner: str) -> dict:
    """Everything registered by ``owner`` anywhere."""
    hooks = [
        (h["name"], short(f["name"]))
        for h in loader.hooks.describe()
        for f in h["functions"]
        if f["plugin"] == owner
    ]
    events = [
        (s["pattern"], short(h["name"]))
        for s in loader.bus.describe()
        for h in s["handlers"]
        if h["plugin"] == owner
    ]
    advised = [
        (target, short(a["name"]))
        for target, pieces in advice.describe_all().items()
        for a in pieces
        if a.get("plugin") == owner
    ]
    return {
        "hooks": hooks,
        "events": events,
        "advice": advised,
        "schedules": loader.scheduler.scheduled(owner),
    }


NOTHING = {"hooks": [], "events": [], "advice": [], "schedules": []}


# -- discovery --------------------------------------------------------------------------------


def test_discover_all_finds_every_fixture_and_a_broken_manifest_stops_nothing(make_loader):
    loader = make_loader(FIXTURES)
    by_name = {p.name: p for p in loader.plugins}
    assert {"my-plugin", "full-api", "submodules", "dep-base", "looper"} <= set(by_name)
    broken = by_name["broken-manifest"]
    assert broken.state == PluginState.ERROR and broken.manifest is None and broken.api is None
    assert "broken-manifest/plugin.yaml: field 'version'" in broken.error
    good = by_name["my-plugin"]
    assert good.state == PluginState.DISCOVERED and good.id == "my-plugin@1.0.0"
    assert good.api is not None and good.api.plugin_id == good.id
    assert by_name["bad-platform"].state == PluginState.ERROR
    assert "field 'platform'" in by_name["bad-platform"].error


def test_a_manifest_with_several_bad_fields_is_one_error_naming_each(make_loader, make_plugin):
    make_plugin(
        "sloppy", plugin_yaml="name: sloppy\nversion: one\nevents: ['a..b']\nfail_closed: 1\n"
    )
    make_plugin("fine")
    loader = make_loader(make_plugin.root)
    sloppy = loader.get("sloppy")
    assert sloppy.state == PluginState.ERROR
    manifest = make_plugin.root / "sloppy" / "plugin.yaml"
    assert [line.split(": ", 2)[1] for line in sloppy.error.splitlines()] == [
        "field 'version'", "field 'events[0]'", "field 'fail_closed'"
    ]
    assert all(line.startswith(f"{manifest}: ") for line in sloppy.error.splitlines())
    assert loader.get("fine").state == PluginState.DISCOVERED  # it stops nothing else


def test_the_seed_lifecycle_runs_as_written(make_loader, caplog):
    loader = make_loader("my-plugin", "submodules")
    loader.load_all()
    assert [p.state for p in loader.plugins] == [PluginState.LOADED] * 2
    with caplog.at_level(logging.INFO, logger="course_plugins.plugins.my-plugin"):
        loader.activate_all()
        assert "My plugin activated!" in caplog.text
        loader.reload("my-plugin@1.0.0")
        assert loader.get("my-plugin").state == PluginState.ACTIVE
        loader.deactivate_all()
        assert "My plugin deactivated" in caplog.text
    assert {p.state for p in loader.plugins} == {PluginState.INACTIVE}


def test_get_by_id_or_bare_name(make_loader):
    loader = make_loader("my-plugin")
    assert loader.get("my-plugin") is loader.get("my-plugin@1.0.0")
    with pytest.raises(PluginNotFound, match="known: my-plugin@1.0.0"):
        loader.get("my-plugin@2.0.0")
    with pytest.raises(PluginNotFound):
        loader.activate("nope")


def test_duplicate_names_keep_the_first_and_report_the_second(make_loader, tmp_path):
    write_plugin(tmp_path / "a", "twin", "def activate(api):\n    pass\n")
    write_plugin(tmp_path / "b", "twin", "def activate(api):\n    pass\n", version="2.0.0")
    loader = make_loader(tmp_path / "a", tmp_path / "b")
    assert loader.get("twin").version == "1.0.0"
    assert "must be unique" in str(loader.discovery_errors[0])


def test_missing_init_py_and_missing_activate_are_errors(make_loader, tmp_path):
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "plugin.yaml").write_text("name: bare\nversion: 1.0.0\n")
    write_plugin(tmp_path, "lazy", "X = 1\n")
    loader = make_loader(tmp_path)
    assert "has no __init__.py" in loader.get("bare").error
    with pytest.raises(PluginLoadError, match="defines no activate"):
        loader.activate("lazy")
    assert loader.get("lazy").state == PluginState.ERROR


def test_rediscovery_keeps_loaded_plugins_and_forgets_vanished_folders(make_loader, tmp_path):
    write_plugin(tmp_path, "stay", "def activate(api):\n    pass\n")
    gone = write_plugin(tmp_path, "gone", "def activate(api):\n    pass\n")
    loader = make_loader(tmp_path)
    stay = loader.activate("stay")
    shutil.rmtree(gone)
    loader.discover_all()
    assert loader.get("stay") is stay and stay.state == PluginState.ACTIVE
    with pytest.raises(PluginNotFound):
        loader.get("gone")


# -- dependencies and platform ------------------------------------------------------------------

DEPENDENCY_FIXTURES = (
    "dep-grandchild",
    "dep-child",
    "dep-base",
    "cycle-a",
    "cycle-b",
    "missing-dep",
    "wrong-version-dep",
    "future-platform",
)


def test_activation_follows_dependencies_and_bad_ones_fail_alone(make_loader):
    loader = make_loader(*DEPENDENCY_FIXTURES)
    order: list[str] = []
    loader.add_listener(lambda p, old, new: order.append(p.name) if new == "active" else None)
    active = loader.activate_all()
    assert order == ["dep-base", "dep-child", "dep-grandchild"]
    assert [p.name for p in active] == ["dep-base", "dep-child", "dep-grandchild"]
    errors = {p.name: p.error for p in loader.plugins if p.state == PluginState.ERROR}
    assert errors["cycle-a"].endswith("dependency cycle: cycle-a -> cycle-b -> cycle-a") or errors[
        "cycle-a"
    ].endswith("dependency cycle: cycle-b -> cycle-a -> cycle-b")
    assert "dependency cycle" in errors["cycle-b"]
    assert errors["missing-dep"] == (
        "missing-dep@1.0.0: requires not-installed>=1.0, which is not installed"
    )
    assert errors["wrong-version-dep"] == (
        "wrong-version-dep@1.0.0: requires dep-base>=2.0, but dep-base@1.2.0 is installed"
    )
    assert (
        "needs course_plugins >=99.0 (`platform` in plugin.yaml), this is 0.1.0"
        in (errors["future-platform"])
    )


def test_load_all_flags_cycles_and_missing_dependencies(make_loader):
    loader = make_loader("cycle-a", "cycle-b", "missing-dep", "dep-base")
    loaded = loader.load_all()
    assert [p.name for p in loaded] == ["dep-base"]
    for name in ("cycle-a", "cycle-b", "missing-dep"):
        assert loader.get(name).state == PluginState.ERROR
    with pytest.raises(PluginDependencyError, match="dependency cycle"):
        loader.activate("cycle-a")


def test_activate_needs_required_plugins_active(make_loader):
    loader = make_loader("dep-base", "dep-child")
    with pytest.raises(PluginDependencyError, match=r"requires dep-base>=1.0, which is discovered"):
        loader.activate("dep-child")
    loader.activate("dep-base")
    assert loader.activate("dep-child").state == PluginState.ACTIVE


def test_deactivating_a_requirement_deactivates_its_dependents_first(make_loader):
    loader = make_loader("dep-base", "dep-child", "dep-grandchild")
    loader.activate_all()
    seen: list[tuple[str, str]] = []
    loader.add_listener(lambda p, old, new: seen.append((p.name, new)))
    loader.deactivate("dep-base")
    assert seen == [
        ("dep-grandchild", "inactive"),
        ("dep-child", "inactive"),
        ("dep-base", "inactive"),
    ]


def test_activate_all_only_some(make_loader):
    loader = make_loader("dep-base", "dep-child", "my-plugin")
    active = loader.activate_all(only=["dep-child@1.0.0", "dep-base"])
    assert [p.name for p in active] == ["dep-base", "dep-child"]
    assert loader.get("my-plugin").state == PluginState.DISCOVERED


# -- code loading and the security policy ---------------------------------------------------------


def test_a_policy_violation_refuses_the_plugin_with_file_line_and_reason(make_loader):
    loader = make_loader("policy-violator", "my-plugin")
    loader.activate_all()
    bad = loader.get("policy-violator")
    assert bad.state == PluginState.ERROR
    assert "policy-violator/__init__.py:3: import of 'os' is not allowed" in bad.error
    assert loader.get("my-plugin").state == PluginState.ACTIVE
    assert not [n for n in sys.modules if "policy_violator" in n]


def test_plugin_modules_get_unique_names_and_relative_imports_work(make_loader):
    loader = make_loader("submodules", trusted=True)  # looks into the plugin's own modules
    plugin = loader.activate("submodules")
    name = plugin.module.__name__
    assert name.startswith("course_plugins.loaded.submodules_")
    assert sys.modules[f"{name}.helpers.shout"].shout("a") == "A!"
    assert loader.hooks.run_sync("content-transform", "hello    world", {}) == "HELLO WORLD!"
    loader.reload("submodules")
    assert plugin.module.__name__ != name
    assert name not in sys.modules and f"{name}.text" not in sys.modules
    assert loader.hooks.run_sync("content-transform", "a  b", {}) == "A B!"
    loader.unload("submodules")
    assert plugin.module is None and plugin.state == PluginState.DISCOVERED
    assert not [n for n in sys.modules if n.startswith(name.rsplit("_", 1)[0])]


def test_relative_import_may_not_leave_the_plugin(make_loader, tmp_path):
    write_plugin(tmp_path, "climber", "from .. import loaded\ndef activate(api):\n    pass\n")
    loader = make_loader(tmp_path)
    with pytest.raises(PluginLoadError, match="refused by the plugin security policy"):
        loader.activate("climber")


@pytest.mark.parametrize("linked", ["__init__.py", "helpers.py", "sub"])
def test_a_symlink_may_not_bring_in_code_from_outside_the_plugin(make_loader, tmp_path, linked):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    for target in (
        outside / "__init__.py",
        outside / "helpers.py",
        outside / "sub" / "__init__.py",
    ):
        target.write_text("def activate(api):\n    pass\nVALUE = 1\n")
    plugins = tmp_path / "plugins"
    folder = write_plugin(
        plugins,
        "linker",
        "from . import helpers\nfrom . import sub\ndef activate(api):\n    pass\n",
    )
    (folder / "helpers.py").write_text("VALUE = 2\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "__init__.py").write_text("VALUE = 3\n")
    link = folder / linked
    if link.is_dir():
        for child in link.iterdir():
            child.unlink()
        link.rmdir()
    else:
        link.unlink()
    link.symlink_to(outside / linked)
    loader = make_loader(plugins)
    with pytest.raises(PluginLoadError, match="points outside the plugin folder"):
        loader.activate("linker")


def test_a_symlink_inside_the_plugin_is_fine(make_loader, tmp_path):
    folder = write_plugin(tmp_path, "inner", "from . import alias\ndef activate(api):\n    pass\n")
    (folder / "real.py").write_text("VALUE = 1\n")
    (folder / "alias.py").symlink_to(folder / "real.py")
    make_loader(tmp_path).activate("inner")


# -- plugins get facades of the allowed modules ------------------------------------------------

MARKER_ROUTES = {
    "attribute": "import typing\ntyping.sys.modules['os'].system('touch {marker}')\n",
    "private": "import random\nrandom._os.system('touch {marker}')\n",
    "getattr": (
        "import typing\n"
        "real = getattr(typing, 'S'.lower() + 'ys')\n"
        "real.modules['os'].system('touch {marker}')\n"
    ),
}


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ("attribute", "attribute 'sys' names a module that is out of reach"),
        ("private", "private attribute '_os' may only be used on self"),
        ("getattr", "attribute 'sys' names a module that is out of reach"),
    ],
)
def test_module_attributes_do_not_lead_to_sys_or_os(make_loader, tmp_path, route, reason):
    marker = tmp_path / "escaped"
    write_plugin(tmp_path, "escaper", MARKER_ROUTES[route].format(marker=marker))
    loader = make_loader(tmp_path)
    with pytest.raises(PluginLoadError, match="refused by the plugin security policy") as info:
        loader.load("escaper")
    assert reason in str(info.value)
    assert isinstance(info.value.__cause__, SecurityViolation)
    assert not marker.exists()


def test_allowed_modules_are_facades_without_the_modules_they_import(make_loader, tmp_path):
    # Routes the AST check lets through (no blocked name): only the facade closes them.
    routes = {
        "dataclasses": "inspect",
        "json": "decoder",
        "typing": "collections",
        "base64": "binascii",
        "textwrap": "re",
        "asyncio": "events",
        "statistics": "math",
    }
    assert all(hasattr(importlib.import_module(m), a) for m, a in routes.items())
    checks = "".join(f"    {m!r}: hasattr({m}, {a!r}),\n" for m, a in routes.items())
    write_plugin(
        tmp_path,
        "prober",
        f"import {', '.join(routes)}\nimport random\n"
        f"FOUND = {{\n{checks}    'random._os': '_os' in dir(random),\n}}\n"
        "def activate(api):\n    pass\n",
    )
    loader = make_loader(tmp_path, trusted=True)  # reads the module's FOUND
    module = loader.load("prober").module
    assert set(module.FOUND) == {*routes, "random._os"}
    assert [route for route, found in module.FOUND.items() if found] == []
    assert module.random is facades.facade("random") and module.json is facades.facade("json")


def test_a_facade_keeps_files_out_of_reach(make_loader, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("password\n")
    write_plugin(
        tmp_path,
        "reader",
        f"import dataclasses\nLEAK = dataclasses.inspect.linecache.getlines({str(secret)!r})\n",
    )
    loader = make_loader(tmp_path)
    with pytest.raises(PluginLoadError, match="has no attribute 'inspect'"):
        loader.load("reader")


@pytest.mark.parametrize(
    "statement",
    [
        "import asyncio.subprocess",
        "from asyncio import subprocess",
        "from asyncio.subprocess import create_subprocess_exec",
        "import asyncio.events",
        "from json.decoder import JSONDecoder",
    ],
)
def test_submodules_of_allowed_modules_are_refused(make_loader, tmp_path, statement):
    write_plugin(tmp_path, "subber", f"{statement}\ndef activate(api):\n    pass\n")
    loader = make_loader(tmp_path)
    with pytest.raises(PluginLoadError, match="refused by the plugin security policy") as info:
        loader.load("subber")
    assert f"import of '{statement.split()[1]}" in str(info.value)
    assert "is not allowed" in str(info.value)
    assert not [n for n in sys.modules if "subber" in n]


def test_the_standard_library_behaves_normally_in_plugin_hooks(make_loader, tmp_path):
    write_plugin(
        tmp_path,
        "stdlib-user",
        """\
        import dataclasses
        import datetime
        import json
        import time
        from collections import Counter

        @dataclasses.dataclass(frozen=True)
        class Stamp:
            when: datetime.datetime

        def activate(api):
            @api.hooks["content-transform"].add
            def transform(body, content):
                # Both import _strptime from C: through the plugin's own __import__.
                parsed = datetime.datetime.strptime("2024-01-02", "%Y-%m-%d")
                clock = time.strptime("13:45", "%H:%M")
                when = content["when"]
                return json.dumps({
                    "parsed": parsed.isoformat(),
                    "hour": clock.tm_hour,
                    "host_datetime": isinstance(when, datetime.datetime),
                    "host_date": isinstance(when.date(), datetime.date),
                    "aware": when.tzinfo is datetime.timezone.utc,
                    "later": (when + datetime.timedelta(days=1)).isoformat(),
                    "stamp": str(Stamp(when).when.date()),
                    "top": Counter(body.split()).most_common(1),
                })
        """,
        manifest="hooks: [content-transform]\n",
    )
    loader = make_loader(tmp_path)
    loader.activate("stdlib-user")
    when = datetime.datetime(2024, 5, 6, 7, 8, tzinfo=datetime.UTC)
    result = loader.hooks.run_sync("content-transform", "a b a", {"when": when})
    assert json.loads(result) == {
        "parsed": "2024-01-02T00:00:00",
        "hour": 13,
        "host_datetime": True,
        "host_date": True,
        "aware": True,
        "later": "2024-05-07T07:08:00+00:00",
        "stamp": "2024-05-06",
        "top": [["a", 2]],
    }


def test_module_code_and_activate_run_under_the_time_budget(make_loader, tmp_path):
    write_plugin(tmp_path, "slow-import", "while True:\n    pass\ndef activate(api):\n    pass\n")
    write_plugin(tmp_path, "slow-start", "def activate(api):\n    while True:\n        pass\n")
    previous, options.hook_timeout = options.hook_timeout, 0.2
    try:
        loader = make_loader(tmp_path)
        started = time.monotonic()
        loader.activate_all()
        assert time.monotonic() - started < 5
    finally:
        options.hook_timeout = previous
    assert "module code ran over its time budget of 0.2 s" in loader.get("slow-import").error
    assert "activate(api) ran over its time budget" in loader.get("slow-start").error


def test_async_activate_and_deactivate_are_awaited(make_loader, tmp_path):
    write_plugin(
        tmp_path,
        "async-life",
        """
        import asyncio
        calls = []
        async def activate(api):
            await asyncio.sleep(0)
            calls.append("activate")
        async def deactivate(api):
            calls.append("deactivate")
        """,
    )
    loader = make_loader(tmp_path, trusted=True)  # reads the module's calls
    plugin = loader.activate("async-life")
    loader.deactivate("async-life")
    assert plugin.module.calls == ["activate", "deactivate"]


# -- activation failure and teardown ------------------------------------------------------------


def test_activate_failing_leaves_nothing_registered(make_loader):
    loader = make_loader("raises-in-activate")
    with pytest.raises(PluginLoadError, match="activate\\(api\\) raised RuntimeError") as info:
        loader.activate("raises-in-activate")
    plugin = loader.get("raises-in-activate")
    assert plugin.state == PluginState.ERROR
    assert "activation exploded" in plugin.traceback and plugin.traceback == info.value.traceback
    assert owned(loader, plugin.id) == NOTHING
    assert plugin.module is None
    with pytest.raises(PluginStateError):
        plugin.api.hooks["before-course-save"].add(lambda course: course)


def test_deactivation_removes_hooks_subscriptions_advice_and_schedules(make_loader):
    loader = make_loader("full-api", trusted=True)
    plugin = loader.activate("full-api")
    registered = owned(loader, plugin.id)
    assert sorted(registered["hooks"]) == [
        ("after-course-save", "<lambda>"),
        ("before-course-save", "stamp"),
    ]
    assert registered["events"] == [("course.*", "on_course")]
    assert registered["advice"] == [("full_api_tests.target", "timed")]
    assert [s["id"] for s in registered["schedules"]] == ["full-api:tick"]
    assert loader.hooks.run_sync("before-course-save", {"name": "c"})["stamped_by"] == plugin.id

    module = plugin.module
    loader.deactivate("full-api")
    assert owned(loader, plugin.id) == NOTHING
    assert module.state["deactivated"] == 1
    assert loader.hooks.run_sync("before-course-save", {"name": "c"}) == {"name": "c"}
    with pytest.raises(PluginStateError, match="not"):
        plugin.api.events.subscribe("course.created", lambda event: None)


def test_reload_keeps_settings_and_storage_and_reads_new_code(make_loader, tmp_path):
    folder = tmp_path / "full-api"
    shutil.copytree(FIXTURES / "full-api", folder)
    loader = make_loader(folder)
    plugin = loader.activate("full-api")
    plugin.api.config.set("threshold", 7)
    seen: list[tuple[str | None, str]] = []
    loader.add_listener(lambda p, old, new: seen.append((old, new)))
    (folder / "plugin.yaml").write_text(
        (folder / "plugin.yaml").read_text().replace("version: 2.1.0", "version: 2.2.0")
    )
    source = (folder / "__init__.py").read_text()
    (folder / "__init__.py").write_text(source.replace('course["stamped_by"]', 'course["by"]'))
    loader.reload("full-api@2.1.0")
    assert seen == [("active", "active")]
    assert plugin.id == "full-api@2.2.0" and plugin.state == PluginState.ACTIVE
    assert plugin.api.config.get("threshold") == 7
    assert plugin.api.storage.get_sync("activations") == 1  # a fresh module counted from 0 again
    assert loader.hooks.run_sync("before-course-save", {})["by"] == "full-api@2.2.0"
    old = owned(loader, "full-api@2.1.0")
    assert old["hooks"] == old["events"] == old["advice"] == []
    (schedule,) = loader.scheduler.scheduled("full-api")  # schedules go by name: one, not two
    assert schedule["plugin"] == "full-api@2.2.0"


def test_reload_of_a_broken_plugin_raises_and_marks_it(make_loader, tmp_path):
    folder = write_plugin(tmp_path, "fragile", "def activate(api):\n    pass\n")
    loader = make_loader(tmp_path)
    loader.activate("fragile")
    (folder / "__init__.py").write_text("def activate(api):\n    raise KeyError('x')\n")
    with pytest.raises(PluginLoadError, match="KeyError"):
        loader.reload("fragile")
    assert loader.get("fragile").state == PluginState.ERROR
    (folder / "__init__.py").write_text("def activate(api):\n    pass\n")
    assert loader.activate("fragile").state == PluginState.ACTIVE


def test_errors_in_deactivate_are_logged_not_fatal(make_loader, tmp_path, caplog):
    write_plugin(
        tmp_path,
        "grumpy",
        """
        def activate(api):
            api.hooks["after-course-save"].add(lambda course, created: None)
        def deactivate(api):
            raise RuntimeError("will not go")
        """,
        manifest="hooks: [after-course-save]\n",
    )
    loader = make_loader(tmp_path)
    plugin = loader.activate("grumpy")
    with caplog.at_level(logging.ERROR, logger="course_plugins.loader"):
        loader.deactivate("grumpy")
    assert plugin.state == PluginState.INACTIVE
    assert "will not go" in caplog.text
    assert owned(loader, plugin.id) == NOTHING


# -- quarantine -------------------------------------------------------------------------------


@pytest.fixture
def three_failures():
    previous = options.max_failures
    options.max_failures = 3
    yield
    options.max_failures = previous


def test_an_endless_loop_in_a_hook_is_interrupted_and_quarantines_the_plugin(
    make_loader, three_failures
):
    loader = make_loader("looper", "my-plugin")
    loader.activate_all()
    looper = loader.get("looper")
    assert looper.hook_timeout == pytest.approx(0.2)
    for attempt in range(3):
        started = time.monotonic()
        result = loader.hooks.run_sync("after-course-save", {"name": "c"}, True)
        assert time.monotonic() - started < 2.0
        assert result == []  # the looping function was skipped
        if attempt < 2:
            assert health.failures(looper.id) == attempt + 1
    assert looper.state == PluginState.FAULTED
    assert "quarantined: 3 failures in a row" in looper.error
    assert looper.traceback
    assert owned(loader, looper.id) == NOTHING
    assert loader.get("my-plugin").state == PluginState.ACTIVE

    loader.activate_all()
    loader.deactivate("looper")
    assert looper.state == PluginState.FAULTED  # only an explicit activate clears a fault
    loader.activate("looper")
    assert looper.state == PluginState.ACTIVE and looper.error == ""
    assert health.failures(looper.id) == 0


def test_quarantine_takes_dependents_down_with_an_explanation(
    make_loader, tmp_path, three_failures
):
    write_plugin(
        tmp_path,
        "flaky",
        """
        def activate(api):
            @api.hooks["after-course-save"].add
            def boom(course, created):
                raise RuntimeError("boom")
        """,
        manifest="hooks: [after-course-save]\n",
    )
    write_plugin(tmp_path, "leaning", "def activate(api):\n    pass\n", "requires: [flaky]\n")
    loader = make_loader(tmp_path)
    loader.activate_all()
    for _ in range(3):
        loader.hooks.run_sync("after-course-save", {}, False)
    assert loader.get("flaky").state == PluginState.FAULTED
    assert "RuntimeError: boom" in loader.get("flaky").traceback
    leaning = loader.get("leaning")
    assert leaning.state == PluginState.ERROR
    assert "flaky@1.0.0, faulted" in leaning.error


def test_handler_failures_on_the_bus_quarantine_too(make_loader, tmp_path, three_failures):
    write_plugin(
        tmp_path,
        "noisy",
        """
        def activate(api):
            @api.events.subscribe("course.created")
            async def explode(event):
                raise RuntimeError("handler broke")
        """,
        manifest="events: ['course.*']\n",
    )
    loader = make_loader(tmp_path)
    loader.activate("noisy")
    for _ in range(3):
        loader.bus.publish_sync(Event("course.created", {"name": "x"}))
    plugin = loader.get("noisy")
    deadline = time.monotonic() + 5
    while plugin.state != PluginState.FAULTED and time.monotonic() < deadline:
        time.sleep(0.01)  # quarantine may be handed to a thread when the loop thread reports it
    assert plugin.state == PluginState.FAULTED
    assert owned(loader, plugin.id) == NOTHING


# -- listeners and threads ----------------------------------------------------------------------


def test_listeners_see_every_state_change(make_loader):
    loader = make_loader("my-plugin")
    seen: list[tuple[str, str | None, str]] = []
    loader.add_listener(lambda p, old, new: seen.append((p.id, old, new)))
    loader.activate("my-plugin")
    loader.deactivate("my-plugin")
    loader.unload("my-plugin")
    assert seen == [
        ("my-plugin@1.0.0", "discovered", "loaded"),
        ("my-plugin@1.0.0", "loaded", "active"),
        ("my-plugin@1.0.0", "active", "inactive"),
        ("my-plugin@1.0.0", "inactive", "discovered"),
    ]


def test_a_failing_listener_does_not_break_the_lifecycle(make_loader):
    loader = make_loader("my-plugin")

    def broken(plugin, old, new):
        raise RuntimeError("listener bug")

    loader.add_listener(broken)
    assert loader.activate("my-plugin").state == PluginState.ACTIVE


def test_concurrent_lifecycle_calls_leave_a_consistent_state(make_loader):
    loader = make_loader("full-api")
    errors: list[BaseException] = []

    def toggle(n: int) -> None:
        try:
            for _ in range(10):
                if n % 2:
                    loader.activate("full-api")
                else:
                    loader.deactivate("full-api")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=toggle, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    plugin = loader.get("full-api")
    hooks = owned(loader, plugin.id)["hooks"]
    if plugin.state == PluginState.ACTIVE:
        assert len(hooks) == 2
    else:
        assert plugin.state == PluginState.INACTIVE and hooks == []


def test_plugin_describe_is_plain_data(make_loader):
    loader = make_loader("my-plugin", "broken-manifest")
    data = loader.get("my-plugin").describe()
    assert data["id"] == "my-plugin@1.0.0" and data["state"] == "discovered"
    assert data["manifest"]["hooks"] == ["before-course-save", "after-quiz-submit"]
    assert loader.get("broken-manifest").describe()["manifest"] is None


def test_errors_are_plugin_errors(make_loader):
    loader = make_loader("broken-manifest")
    with pytest.raises(PluginError):
        loader.activate("broken-manifest")
    assert issubclass(PluginManifestError, PluginError)


def test_the_loader_works_without_django_configured(tmp_path):
    """A fresh interpreter with no Django settings: in-memory stores, backends refused clearly."""
    import os
    import subprocess

    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from course_plugins.core.plugin_loader import PluginLoader
        from course_plugins.exceptions import PlatformAPIUnavailable

        loader = PluginLoader([{str(FIXTURES / "full-api")!r}, {str(FIXTURES / "my-plugin")!r}])
        loader.discover_all()
        loader.activate_all()
        api = loader.get("full-api").api
        assert api.storage.get_sync("activations") == 1
        assert api.config.set("threshold", "4") == 4
        try:
            asyncio.run(api.users.get_current())
        except PlatformAPIUnavailable as exc:
            print("refused:", exc)
        loader.close()
        from django.conf import settings
        print("configured:", settings.configured, "states:", [str(p.state) for p in loader.plugins])
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "refused: full-api@2.1.0: api.users needs a backend" in done.stdout
    assert "run the plugin in a Django site" in done.stdout
    assert "configured: False states: ['inactive', 'inactive']" in done.stdout
