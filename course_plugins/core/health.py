"""Per-plugin failure accounting: log every isolated error, quarantine a plugin that keeps failing.

The engine reports each isolated failure of a plugin's hook function, event handler or advice to
``health.record_failure`` and each success to ``health.record_success``. After
``options.max_failures`` failures in a row, every quarantine listener is called once with
``(owner, reason, traceback_text)``; the plugin loader listens and deactivates the plugin
(WordPress's recovery mode, automated). A success or ``reset`` clears the count.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from course_plugins.core.options import options

__all__ = ["Failure", "Health", "QuarantineListener", "health", "logger"]

logger = logging.getLogger("course_plugins.plugins")

QuarantineListener = Callable[[str, str, str], object]


@dataclass(frozen=True)
class Failure:
    """One isolated failure: where it happened, what kind, the message and the traceback text."""

    owner: str | None
    where: str
    kind: str
    message: str
    traceback: str
    at: float


class Health:
    """Counts failures per owner (plugin id) and calls quarantine listeners at the threshold."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Consecutive failures; an owner is absent when its count is 0, so the success path is
        # one dict lookup.
        self._consecutive: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._last: dict[str, Failure] = {}
        self._quarantined: set[str] = set()
        self._listeners: list[QuarantineListener] = []

    def record_failure(
        self, owner: str | None, exc: BaseException, *, where: str, kind: str = "error"
    ) -> None:
        """Log ``exc`` with the owner and traceback, and count it against ``owner``.

        ``where`` says what failed (e.g. ``"hook before-course-save: mod.fn"``); ``kind`` is
        ``"error"`` or ``"timeout"``. Ownerless (platform) failures are only logged. At
        ``options.max_failures`` failures in a row, quarantine listeners are called once.
        An instance of ``options.infrastructure_errors`` (the database or broker is down) is
        logged as a warning and not counted: it is not the plugin's fault.
        """
        infrastructure = options.infrastructure_errors
        if infrastructure and isinstance(exc, infrastructure):
            logger.warning(
                "Infrastructure error in %s (plugin %s, not counted against it): %s: %s",
                where,
                owner or "platform",
                type(exc).__name__,
                exc,
                exc_info=(type(exc), exc, exc.__traceback__),
                extra={"plugin": owner or "platform", "where": where, "kind": "infrastructure"},
            )
            return
        tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        who = owner or "platform"
        logger.error(
            "%s in %s (plugin %s): %s: %s",
            "Timeout" if kind == "timeout" else "Error",
            where,
            who,
            type(exc).__name__,
            exc,
            exc_info=(type(exc), exc, exc.__traceback__),
            extra={"plugin": who, "where": where, "kind": kind},
        )
        if owner is None:
            return
        failure = Failure(owner, where, kind, f"{type(exc).__name__}: {exc}", tb_text, time.time())
        with self._lock:
            count = self._consecutive.get(owner, 0) + 1
            self._consecutive[owner] = count
            self._totals[owner] = self._totals.get(owner, 0) + 1
            self._last[owner] = failure
            trip = count >= options.max_failures and owner not in self._quarantined
            if trip:
                self._quarantined.add(owner)
            listeners = list(self._listeners)
        if trip:
            reason = (
                f"{count} failures in a row (last in {where}: {failure.message}); "
                "fix the plugin, then activate it again"
            )
            for listener in listeners:
                try:
                    listener(owner, reason, tb_text)
                except Exception:
                    logger.exception("Quarantine listener %r failed for plugin %s", listener, owner)

    def record_success(self, owner: str | None) -> None:
        """Reset ``owner``'s consecutive-failure count (a dict lookup when it is already 0)."""
        if owner is not None and owner in self._consecutive:
            with self._lock:
                self._consecutive.pop(owner, None)
                self._quarantined.discard(owner)

    def failures(self, owner: str) -> int:
        """Return ``owner``'s consecutive-failure count."""
        return self._consecutive.get(owner, 0)

    def total_failures(self, owner: str) -> int:
        """Return how many failures ``owner`` has had since start-up (or its last ``reset``)."""
        return self._totals.get(owner, 0)

    def last_failure(self, owner: str) -> Failure | None:
        """Return ``owner``'s most recent failure, or ``None``."""
        return self._last.get(owner)

    def reset(self, owner: str) -> None:
        """Forget everything about ``owner`` (e.g. when an admin activates it again)."""
        with self._lock:
            self._consecutive.pop(owner, None)
            self._totals.pop(owner, None)
            self._last.pop(owner, None)
            self._quarantined.discard(owner)

    def clear(self) -> None:
        """Forget every owner (listeners stay)."""
        with self._lock:
            self._consecutive.clear()
            self._totals.clear()
            self._last.clear()
            self._quarantined.clear()

    def add_quarantine_listener(self, fn: QuarantineListener) -> None:
        """Call ``fn(owner, reason, traceback_text)`` when an owner reaches the threshold."""
        with self._lock:
            if fn not in self._listeners:
                self._listeners.append(fn)

    def remove_quarantine_listener(self, fn: QuarantineListener) -> None:
        """Stop calling ``fn``; no error if it was not added."""
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)


health = Health()
