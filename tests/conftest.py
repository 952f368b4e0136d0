"""Shared fixtures: isolated engine state, services (PostgreSQL, Redis) and plugin folders."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from course_plugins.core.health import health
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
def engine_state() -> Iterator[None]:
    """Non-strict engine options for the test; options put back and health counts cleared after."""
    saved = (options.strict, options.hook_timeout, options.max_failures)
    options.strict = False
    yield
    options.strict, options.hook_timeout, options.max_failures = saved
    health.clear()
