"""The security audit trail: every refusal, blocked operation, timeout and kill, in one place.

``audit(kind, detail, plugin=...)`` logs to the ``course_plugins.security`` logger and hands the
event to every sink added with ``add_audit_sink`` (the Django layer adds one that writes
``SecurityAuditEvent`` rows). A failing sink is logged and skipped: auditing never breaks the
code that reported the event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("course_plugins.security")

# The same values as ``course_plugins.models.AuditKind`` (a test keeps them in step).
REJECTED = "rejected"
BLOCKED = "blocked"
TIMEOUT = "timeout"
MEMORY = "memory"
ABNORMAL_EXIT = "abnormal_exit"
PERMISSION = "permission"
QUARANTINE = "quarantine"
KINDS = frozenset({REJECTED, BLOCKED, TIMEOUT, MEMORY, ABNORMAL_EXIT, PERMISSION, QUARANTINE})

MAX_DETAIL_CHARS = 4000

AuditSink = Callable[[str, str, "str | None"], None]

_sinks: tuple[AuditSink, ...] = ()
_lock = threading.Lock()
_local = threading.local()


def add_audit_sink(fn: AuditSink) -> AuditSink:
    """Call ``fn(kind, detail, plugin)`` for every audit event from now on; returns ``fn``.

    Adding the same sink twice has no effect, so ``AppConfig.ready()`` may run again safely.
    """
    global _sinks
    with _lock:
        if fn not in _sinks:
            _sinks = (*_sinks, fn)
    return fn


def remove_audit_sink(fn: AuditSink) -> bool:
    """Stop sending events to ``fn``; returns whether it was registered."""
    global _sinks
    with _lock:
        if fn not in _sinks:
            return False
        _sinks = tuple(s for s in _sinks if s is not fn)
        return True


def audit(kind: str, detail: str, *, plugin: str | None = None) -> None:
    """Record one security event (``kind`` is one of ``KINDS``).

    Raises ``ValueError`` for an unknown kind (a programming error); never raises because a
    sink failed.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown audit kind {kind!r}; use one of {sorted(KINDS)}")
    detail = str(detail)
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 15] + " ...[truncated]"
    logger.warning(
        "%s%s: %s",
        kind,
        f" [{plugin}]" if plugin else "",
        detail,
        extra={"audit_kind": kind, "plugin": plugin},
    )
    if getattr(_local, "active", False):
        return  # a sink reported an event while handling one: logged above, not fanned out again
    _local.active = True
    try:
        for sink in _sinks:
            try:
                sink(kind, detail, plugin)
            except Exception:
                logger.exception("audit sink %r failed; the event above is only in the log", sink)
    finally:
        _local.active = False
