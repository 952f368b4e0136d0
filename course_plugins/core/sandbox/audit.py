"""The security audit trail: every refusal, blocked operation, timeout and kill, in one place.

``audit(kind, detail, plugin=...)`` logs to the ``course_plugins.security`` logger and hands the
event to every sink added with ``add_audit_sink`` (the Django layer adds one that writes
``SecurityAuditEvent`` rows). A failing sink is logged and skipped: auditing never breaks the
code that reported the event.
"""

from __future__ import annotations

import logging
import threading
import time
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

#: Events of one kind about one plugin recorded one by one per ``RATE_WINDOW`` seconds; further
#: ones in the window are only counted (the next recorded one says how many): each event is a
#: log line and a database row, and a plugin repeating a refused operation in a loop would
#: otherwise write thousands of rows per call.
MAX_PER_WINDOW = 100
RATE_WINDOW = 60.0

AuditSink = Callable[[str, str, "str | None"], None]

_sinks: tuple[AuditSink, ...] = ()
_lock = threading.Lock()
_local = threading.local()
# (plugin, kind) -> [window start, events recorded in it, events only counted]
_windows: dict[tuple[str, str], list[float]] = {}


def _admit(kind: str, plugin: str) -> str | None:
    """What to add to this event of ``plugin`` recorded one by one (``""``: nothing), or
    ``None`` when it is only counted (see ``MAX_PER_WINDOW``)."""
    now = time.monotonic()
    with _lock:
        window = _windows.get((plugin, kind))
        if window is None or now - window[0] >= RATE_WINDOW:
            if len(_windows) >= 10_000:  # owners come and go: drop the ended windows
                for key in [k for k, w in _windows.items() if now - w[0] >= RATE_WINDOW]:
                    del _windows[key]
            _windows[(plugin, kind)] = [now, 1, 0]
            if window is None or not window[2]:
                return ""
            return f" (and {int(window[2])} more {kind} events of it before, counted only)"
        if window[1] >= MAX_PER_WINDOW:
            window[2] += 1
            return None
        window[1] += 1
        if window[1] < MAX_PER_WINDOW:
            return ""
        return (f" (the last {kind} event of this plugin recorded one by one for "
                f"{RATE_WINDOW:g} s: later ones are counted only)")


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
    if plugin is not None:
        note = _admit(kind, plugin)
        if note is None:
            return
        detail += note
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
