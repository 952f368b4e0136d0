"""Shared fixtures: isolated engine state, services (PostgreSQL, Redis) and plugin folders."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plugin_factory import PASS, write_plugin

from course_plugins.core.event_bus import EventBus
from course_plugins.core.health import health
from course_plugins.core.hook_manager import HookManager
from course_plugins.core.options import options
from course_plugins.site import autostart

FIXTURE_PLUGINS = Path(__file__).parent / "fixtures" / "plugins"

# The suite starts its runtimes explicitly; a hook run in one test must not start the site's
# plugins (and write plugin rows) behind another's back. tests/site/test_autostart.py and the
# new-project test (its own processes) check that a site does start them.
autostart.suspended(True)
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip the test when a service is down, or fail when ``REQUIRE_SERVICES=1`` (CI)."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and REQUIRE_SERVICES=1: start it (see README, Services)")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _prompt_relay_done() -> Iterator[None]:
    """What a test handed to the outbox's prompt relay (a thread) is sent before the next test
    starts, under the settings it was made with."""
    yield
    outbox = sys.modules.get("course_plugins.site.outbox")
    if outbox is not None:
        outbox.flush_relay()


@pytest.fixture(autouse=True)
def _audit_windows() -> Iterator[None]:
    """Each test's audit events are recorded one by one from its first (the per-plugin rate of
    ``core.sandbox.audit`` counts across tests of the same plugin name otherwise)."""
    from course_plugins.core.sandbox import audit

    audit._windows.clear()
    yield


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return os.environ.get("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def fixture_plugins() -> Path:
    return FIXTURE_PLUGINS


@pytest.fixture
def hooks() -> HookManager:
    """A private ``HookManager`` (the standard hooks defined)."""
    return HookManager()


@pytest.fixture
def bus() -> EventBus:
    """A private ``EventBus``."""
    return EventBus()


@pytest.fixture
def global_hooks() -> Iterator[HookManager]:
    """A fresh process-wide manager for the test; the previous one is put back afterwards."""
    previous = HookManager.set_instance(None)
    try:
        yield HookManager.get_instance()
    finally:
        HookManager.set_instance(previous)


@pytest.fixture
def global_bus() -> Iterator[EventBus]:
    """A fresh process-wide bus for the test; the previous one is put back afterwards."""
    previous = EventBus.set_instance(None)
    try:
        yield EventBus.get_instance()
    finally:
        EventBus.set_instance(previous)


@pytest.fixture
def engine_state() -> Iterator[None]:
    """Non-strict engine options for the test; options put back and health counts cleared after."""
    saved = (options.strict, options.hook_timeout, options.max_failures)
    options.strict = False
    yield
    options.strict, options.hook_timeout, options.max_failures = saved
    health.clear()


@pytest.fixture
def make_plugin(tmp_path: Path):
    """Write plugin folders into ``tmp_path / "plugins"``: ``make_plugin(name, code, manifest,
    version=..., plugin_yaml=...)`` returns the folder (see ``plugin_factory.write_plugin``);
    ``make_plugin.root`` is the folder to put in ``PLUGIN_DIRS``."""
    root = tmp_path / "plugins"
    root.mkdir(exist_ok=True)

    def make(name: str, code: str = PASS, manifest: str = "", **kwargs: Any) -> Path:
        return write_plugin(root, name, code, manifest, **kwargs)

    make.root = root  # type: ignore[attr-defined]
    return make
