"""The security audit trail: logger, sinks, and the SecurityAuditEvent sink of the Django layer."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from django.db import IntegrityError, transaction

from course_plugins import audit as django_audit
from course_plugins.core.sandbox import SandboxConfig, SandboxedExecutor, SecurityViolation, audit
from course_plugins.models import AuditKind, Plugin, SecurityAuditEvent


@pytest.fixture
def collected() -> list[tuple[str, str, str | None]]:
    events: list[tuple[str, str, str | None]] = []

    def sink(kind: str, detail: str, plugin: str | None) -> None:
        events.append((kind, detail, plugin))

    audit.add_audit_sink(sink)
    yield events
    audit.remove_audit_sink(sink)


def test_kinds_match_the_model_choices() -> None:
    assert set(AuditKind.values) == audit.KINDS


def test_events_go_to_the_security_logger_and_to_sinks(
    caplog: pytest.LogCaptureFixture, collected: list[tuple[str, str, str | None]]
) -> None:
    with caplog.at_level(logging.WARNING, logger="course_plugins.security"):
        audit.audit(audit.BLOCKED, "tried import os", plugin="evil@1.0")
    record = caplog.records[-1]
    assert record.name == "course_plugins.security"
    assert (record.audit_kind, record.plugin) == ("blocked", "evil@1.0")  # type: ignore[attr-defined]
    assert "tried import os" in record.getMessage()
    assert collected == [("blocked", "tried import os", "evil@1.0")]


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown audit kind"):
        audit.audit("oops", "x")


def test_long_details_are_cut(collected: list[tuple[str, str, str | None]]) -> None:
    audit.audit(audit.REJECTED, "x" * 10_000)
    assert len(collected[0][1]) == audit.MAX_DETAIL_CHARS
    assert collected[0][1].endswith("[truncated]")


def test_a_failing_sink_never_breaks_the_caller(
    caplog: pytest.LogCaptureFixture, collected: list[tuple[str, str, str | None]]
) -> None:
    def broken(kind: str, detail: str, plugin: str | None) -> None:
        raise RuntimeError("sink down")

    audit.add_audit_sink(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="course_plugins.security"):
            audit.audit(audit.TIMEOUT, "slow")
    finally:
        assert audit.remove_audit_sink(broken) is True
    assert collected == [("timeout", "slow", None)]
    assert any("sink" in r.getMessage() and r.exc_info for r in caplog.records)
    assert audit.remove_audit_sink(broken) is False


def test_sinks_are_added_once_and_reentrant_events_are_not_fanned_out(
    collected: list[tuple[str, str, str | None]],
) -> None:
    def echo(kind: str, detail: str, plugin: str | None) -> None:
        if detail == "outer":
            audit.audit(audit.BLOCKED, "inner")

    audit.add_audit_sink(echo)
    audit.add_audit_sink(echo)
    try:
        audit.audit(audit.BLOCKED, "outer")
    finally:
        audit.remove_audit_sink(echo)
    assert collected == [("blocked", "outer", None)]


def test_sandbox_events_are_audited_with_the_owner(
    collected: list[tuple[str, str, str | None]],
) -> None:
    quiet = SandboxedExecutor(SandboxConfig(enable_audit=False), owner="quiet@1.0")
    loud = SandboxedExecutor(SandboxConfig(timeout_seconds=0.3), owner="loud@1.0")
    for runner in (quiet, loud):
        with pytest.raises(SecurityViolation):
            runner.exec_code("import os")
        with pytest.raises(SecurityViolation):
            runner.exec_code("getattr(1, '__cla' + 'ss__')")
    with pytest.raises(Exception, match="time budget"):
        loud.exec_code("while True:\n    pass")
    assert [(k, p) for k, _, p in collected] == [
        ("rejected", "loud@1.0"), ("blocked", "loud@1.0"), ("timeout", "loud@1.0")
    ]


# -- the Django sink ---------------------------------------------------------------------------


def test_the_app_installs_the_database_sink() -> None:
    assert django_audit.database_sink in audit._sinks


@pytest.mark.django_db
def test_events_become_rows() -> None:
    audit.audit(audit.PERMISSION, "used api.notify without permission", plugin="p@1.0.0")
    event = SecurityAuditEvent.objects.get()
    assert (event.kind, event.plugin) == (AuditKind.PERMISSION, "p@1.0.0")
    assert event.detail == "used api.notify without permission"


@pytest.mark.django_db
def test_a_rejected_snippet_is_stored_end_to_end() -> None:
    with pytest.raises(SecurityViolation):
        SandboxedExecutor(owner="snippets@2.0.0").exec_code("import subprocess")
    event = SecurityAuditEvent.objects.get()
    assert event.kind == AuditKind.REJECTED and event.plugin == "snippets@2.0.0"
    assert "subprocess" in event.detail


@pytest.mark.django_db
def test_a_broken_transaction_does_not_break_the_caller() -> None:
    Plugin.objects.create(name="taken", version="1.0.0")
    with transaction.atomic():
        with contextlib.suppress(IntegrityError):  # the transaction is unusable from here on
            Plugin.objects.create(name="taken", version="1.0.0")
        audit.audit(audit.BLOCKED, "inside a broken transaction")  # must not raise
    assert not SecurityAuditEvent.objects.exists()


@pytest.mark.django_db
def test_a_failed_write_does_not_poison_the_callers_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise IntegrityError("no")

    with transaction.atomic():
        monkeypatch.setattr(SecurityAuditEvent.objects, "create", refuse)
        audit.audit(audit.BLOCKED, "not stored")
        monkeypatch.undo()
        Plugin.objects.create(name="still-fine", version="1.0.0")  # the transaction still works
    assert Plugin.objects.filter(name="still-fine").exists()


def test_no_database_access_does_not_break_the_caller() -> None:
    audit.audit(audit.ABNORMAL_EXIT, "no database in this test")  # pytest-django refuses access


@pytest.mark.django_db(transaction=True)
def test_events_from_async_code_are_written_by_a_thread() -> None:
    async def handler() -> None:
        audit.audit(audit.QUARANTINE, "from a coroutine", plugin="async@1.0.0")

    asyncio.run(handler())
    django_audit.flush()
    assert SecurityAuditEvent.objects.get().detail == "from a coroutine"
