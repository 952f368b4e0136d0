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
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from course_plugins.core.options import options
from course_plugins.core.watchdog import TimeBudgetExceeded, is_library_code, time_limit

__all__ = ["Failure", "Health", "PluginRaised", "QuarantineListener", "health", "logger",
           "renders_safely", "reportable"]

logger = logging.getLogger("course_plugins.plugins")

QuarantineListener = Callable[[str, str, str], object]


class PluginRaised(Exception):
    """Stands in for what a plugin raised when reporting that would run the plugin's code (see
    :func:`reportable`): ``type_name`` and ``text`` are the original's class name and text."""

    def __init__(self, type_name: str, text: str) -> None:
        self.type_name = type_name
        self.text = text
        super().__init__(f"{type_name}: {text}")


_MAX_CHAIN = 16
_MAX_TEXT = 4000
_PLAIN = frozenset({str, int, float, bool, type(None), bytes})


def _library_method(cls: type, name: str) -> bool:
    """Whether ``cls.<name>`` (the one its instances use) is C or library code."""
    for klass in cls.__mro__:
        found = klass.__dict__.get(name)
        if found is not None:
            if type(found) is types.WrapperDescriptorType:
                return True
            return type(found) is types.FunctionType and is_library_code(found.__code__)
    return True


def _plain(value: Any, depth: int = 0) -> bool:
    kind = type(value)
    if kind in _PLAIN:
        return True
    if depth < 3 and kind in (tuple, list):
        return len(value) <= 100 and all(_plain(v, depth + 1) for v in value)
    if depth < 3 and kind is dict:
        return len(value) <= 100 and all(
            _plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items()
        )
    return False


# The exception's own slots, read as the interpreter keeps them (a subclass may shadow their
# names with properties, which would run its code).
_ARGS = BaseException.__dict__["args"].__get__
_DICT = BaseException.__dict__["__dict__"].__get__
_CAUSE = BaseException.__dict__["__cause__"].__get__
_CONTEXT = BaseException.__dict__["__context__"].__get__
_MEMBERS = BaseExceptionGroup.__dict__["exceptions"].__get__
_SYNTAX = tuple(SyntaxError.__dict__[name].__get__ for name in
                ("filename", "text", "lineno", "offset", "end_lineno", "end_offset"))


def renders_safely(exc: BaseException) -> bool:
    """Whether formatting ``exc`` with its traceback runs no code but the library's: its
    classes' ``__str__``/``__repr__``, its arguments, notes and chained exceptions."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        if len(seen) > _MAX_CHAIN:
            return False
        cls = type(current)
        if not (_library_method(cls, "__str__") and _library_method(cls, "__repr__")):
            return False
        if not _plain(_ARGS(current)) or not _plain(_DICT(current).get("__notes__", [])):
            return False
        if isinstance(current, SyntaxError) and not _plain([get(current) for get in _SYNTAX]):
            return False
        if isinstance(current, BaseExceptionGroup):
            todo.extend(_MEMBERS(current))
        todo.extend(e for e in (_CAUSE(current), _CONTEXT(current)) if e is not None)
    return True


def reportable(exc: BaseException, seconds: float | None = None) -> BaseException:
    """``exc`` itself, or a :class:`PluginRaised` standing in for it, to log and keep.

    Logging an exception runs its class's ``__str__`` and ``__repr__`` and those of its
    arguments; a plugin's exception class makes that the plugin's code, which the site would run
    after the plugin's call ended: outside its time budget, inside the logging handler's lock
    (every thread that logs would wait for a ``__str__`` that loops). When anything of ``exc``
    or its chain is not the library's, its text is read once here, under a budget of
    ``seconds`` (default ``HOOK_TIMEOUT``), and the stand-in carries that text and ``exc``'s
    traceback (the plugin's frames), without the chain.
    """
    if renders_safely(exc):
        return exc
    text = "(its text could not be read)"
    limit = time_limit(seconds or options.hook_timeout)
    try:
        with limit:
            value = str(exc)
        if type(value) is str:
            text = value[:_MAX_TEXT]
    except TimeBudgetExceeded as overrun:
        if overrun.time_limit is not limit:
            raise  # an enclosing budget's
        limit.close()
        text = "(reading its text ran over the time budget)"
    except Exception:
        pass
    stand_in = PluginRaised(type(exc).__name__, text)
    return stand_in.with_traceback(exc.__traceback__)


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
        self,
        owner: str | None,
        exc: BaseException,
        *,
        where: str,
        kind: str = "error",
        seconds: float | None = None,
    ) -> BaseException:
        """Log ``exc`` with the owner and traceback, and count it against ``owner``; return
        what was logged (``exc``, or its stand-in: see :func:`reportable`, with ``seconds``).

        ``where`` says what failed (e.g. ``"hook before-course-save: mod.fn"``); ``kind`` is
        ``"error"`` or ``"timeout"``. Ownerless (platform) failures are only logged. At
        ``options.max_failures`` failures in a row, quarantine listeners are called once.
        An instance of ``options.infrastructure_errors`` (the database or broker is down) is
        logged as a warning and not counted: it is not the plugin's fault.
        """
        exc = reportable(exc, seconds)
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
            return exc
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
            return exc
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
        return exc

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
