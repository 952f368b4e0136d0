"""Tests for core.health: failures logged with the plugin id, counted, quarantined at the limit."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from course_plugins.core.health import Health
from course_plugins.core.options import options


@pytest.fixture
def health() -> Health:
    return Health()


@pytest.fixture(autouse=True)
def _max_failures() -> Iterator[None]:
    saved = options.max_failures
    options.max_failures = 3
    yield
    options.max_failures = saved


def _boom(message: str = "boom") -> RuntimeError:
    try:
        raise RuntimeError(message)
    except RuntimeError as exc:
        return exc


def test_failure_is_logged_with_plugin_id_and_traceback(
    health: Health, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="course_plugins.plugins"):
        health.record_failure("demo@1.0.0", _boom(), where="hook after-course-save: demo.fn")
    [record] = caplog.records
    assert record.name == "course_plugins.plugins"
    assert "demo@1.0.0" in record.getMessage()
    assert "hook after-course-save: demo.fn" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert "Traceback" in caplog.text
    assert health.failures("demo@1.0.0") == 1
    last = health.last_failure("demo@1.0.0")
    assert last is not None and last.kind == "error" and "RuntimeError: boom" in last.traceback


def test_timeout_kind_is_named_in_the_log(health: Health, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="course_plugins.plugins"):
        health.record_failure("p@1", _boom("slow"), where="hook x: p.fn", kind="timeout")
    assert caplog.records[0].getMessage().startswith("Timeout in hook x")
    last = health.last_failure("p@1")
    assert last is not None and last.kind == "timeout"


def test_ownerless_failures_are_logged_not_counted(
    health: Health, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="course_plugins.plugins"):
        health.record_failure(None, _boom(), where="hook x: platform.fn")
    assert "platform" in caplog.records[0].getMessage()
    assert health.failures("platform") == 0


def test_quarantine_listeners_called_once_at_the_threshold(health: Health) -> None:
    calls: list[tuple[str, str, str]] = []
    health.add_quarantine_listener(lambda owner, reason, tb: calls.append((owner, reason, tb)))
    for i in range(5):
        health.record_failure("bad@1", _boom(f"boom {i}"), where="hook x: bad.fn")
    assert len(calls) == 1
    owner, reason, tb = calls[0]
    assert owner == "bad@1"
    assert "3 failures in a row" in reason and "boom 2" in reason
    assert "RuntimeError: boom 2" in tb
    assert health.failures("bad@1") == 5
    assert health.total_failures("bad@1") == 5


def test_success_resets_the_count_and_rearms_quarantine(health: Health) -> None:
    calls: list[str] = []
    health.add_quarantine_listener(lambda owner, reason, tb: calls.append(owner))
    for _ in range(2):
        health.record_failure("flaky@1", _boom(), where="w")
    health.record_success("flaky@1")
    assert health.failures("flaky@1") == 0
    for _ in range(2):
        health.record_failure("flaky@1", _boom(), where="w")
    assert calls == []  # never three in a row
    health.record_failure("flaky@1", _boom(), where="w")
    assert calls == ["flaky@1"]
    health.record_success("flaky@1")
    for _ in range(3):
        health.record_failure("flaky@1", _boom(), where="w")
    assert calls == ["flaky@1", "flaky@1"]


def test_owners_are_counted_separately(health: Health) -> None:
    health.record_failure("a@1", _boom(), where="w")
    health.record_failure("a@1", _boom(), where="w")
    health.record_failure("b@1", _boom(), where="w")
    assert (health.failures("a@1"), health.failures("b@1")) == (2, 1)


def test_reset_forgets_the_owner(health: Health) -> None:
    health.record_failure("a@1", _boom(), where="w")
    health.reset("a@1")
    assert health.failures("a@1") == 0
    assert health.total_failures("a@1") == 0
    assert health.last_failure("a@1") is None


def test_a_failing_listener_does_not_stop_the_others(
    health: Health, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def broken(owner: str, reason: str, tb: str) -> None:
        raise RuntimeError("listener bug")

    health.add_quarantine_listener(broken)
    health.add_quarantine_listener(lambda owner, reason, tb: seen.append(owner))
    with caplog.at_level(logging.ERROR, logger="course_plugins.plugins"):
        for _ in range(3):
            health.record_failure("p@1", _boom(), where="w")
    assert seen == ["p@1"]
    assert "Quarantine listener" in caplog.text


def test_removed_listener_is_not_called(health: Health) -> None:
    calls: list[str] = []

    def listener(owner: str, reason: str, tb: str) -> None:
        calls.append(owner)

    health.add_quarantine_listener(listener)
    health.add_quarantine_listener(listener)  # added once only
    health.remove_quarantine_listener(listener)
    health.remove_quarantine_listener(listener)  # no error
    for _ in range(3):
        health.record_failure("p@1", _boom(), where="w")
    assert calls == []
