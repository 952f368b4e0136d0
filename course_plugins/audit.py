"""The Django side of the security audit trail: events become ``SecurityAuditEvent`` rows.

``install()`` (called from ``AppConfig.ready``) adds ``database_sink`` to the engine's audit
sinks. Writing an event never breaks the code that reported it: with no database, no table yet
(before ``migrate``) or a broken transaction, the row is skipped and the event stays in the
``course_plugins.security`` log, where every event always goes first.

Inside a transaction the row is written in a savepoint, so it lives and dies with that
transaction; from async code (where the ORM may not be called) it is written by a short-lived
thread, which ``flush()`` waits for.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from django.db import DatabaseError, transaction

from course_plugins.core.sandbox.audit import add_audit_sink, remove_audit_sink
from course_plugins.models import SecurityAuditEvent

logger = logging.getLogger("course_plugins.audit")

_writers: set[threading.Thread] = set()
_writers_lock = threading.Lock()


def _write(kind: str, detail: str, plugin: str | None) -> None:
    try:
        with transaction.atomic():
            SecurityAuditEvent.objects.create(kind=kind, detail=detail, plugin=plugin or "")
    except (DatabaseError, transaction.TransactionManagementError) as exc:
        logger.warning("audit event not stored in the database (%s): %s %s", exc, kind, detail)
    except Exception as exc:  # no database configured, access refused (tests), app not ready...
        logger.debug("audit event not stored (%s: %s): %s %s", type(exc).__name__, exc, kind,
                       detail)


def _write_in_thread(kind: str, detail: str, plugin: str | None) -> None:
    from django.db import connection

    try:
        _write(kind, detail, plugin)
    finally:
        connection.close()
        with _writers_lock:
            _writers.discard(threading.current_thread())


def database_sink(kind: str, detail: str, plugin: str | None) -> None:
    """Store one audit event as a ``SecurityAuditEvent`` row (never raises)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _write(kind, detail, plugin)
        return
    writer = threading.Thread(
        target=_write_in_thread, args=(kind, detail, plugin), name="course-plugins-audit"
    )
    with _writers_lock:
        _writers.add(writer)
    writer.start()


def flush(timeout: float = 5.0) -> None:
    """Wait for audit rows being written by threads (from async code) to be stored."""
    with _writers_lock:
        pending = list(_writers)
    for writer in pending:
        writer.join(timeout)


def install() -> None:
    """Send audit events to the database from now on (idempotent)."""
    add_audit_sink(database_sink)


def uninstall() -> None:
    """Stop sending audit events to the database."""
    remove_audit_sink(database_sink)
