"""``StampFollower``: reads the cross-process stamp at most every ``SYNC_INTERVAL`` seconds and,
when another process bumped it, calls the function it was given (the runtime's
``apply_db_state``).

``check()`` is on every request's path: between two looks it is one clock comparison. A daemon
thread (:meth:`StampFollower.start_thread`) looks on its own in processes that may sit idle
(Celery workers).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connections, router

from course_plugins.conf import plugin_settings
from course_plugins.models import Plugin as PluginRow
from course_plugins.site import stamp

__all__ = ["StampFollower"]

logger = logging.getLogger("course_plugins.sync")  # the name operators know (docs/operators.md)

_UNSET: Any = object()
_monotonic = time.monotonic
_followers: weakref.WeakSet[StampFollower] = weakref.WeakSet()


class StampFollower:
    """Calls ``apply()`` whenever the stamp changed since the last successful call.

    ``every_look`` (optional) is called at each look, whatever the stamp says: the runtime stops
    plugins whose folder vanished there, which no other process can announce for it.
    """

    def __init__(
        self,
        apply: Callable[[], Any],
        every_look: Callable[[], Any] | None = None,
        tables_gone: Callable[[], Any] | None = None,
    ) -> None:
        self._apply = apply
        self._every_look = every_look
        self._tables_gone = tables_gone
        # The token last followed (_UNSET until the first look or prime()) and the monotonic
        # time before which check() does nothing.
        self._seen: Any = _UNSET
        self._next_check = 0.0
        self._look_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._thread_stop = threading.Event()
        self._thread_lock = threading.Lock()
        _followers.add(self)

    def prime(self) -> None:
        """Record the current stamp as followed; call right BEFORE reading the rows at start-up.

        Without it the first :meth:`check` applies the database state once more (harmless, one
        query). A cache failure leaves the follower unprimed (logged).
        """
        try:
            self._seen = stamp.current()
        except Exception:
            logger.warning("Could not read the plugin state stamp", exc_info=True)

    def due(self) -> bool:
        """Return True when :meth:`check` would look at the stamp now (no I/O)."""
        return _monotonic() >= self._next_check

    def look_now(self) -> None:
        """Make the next :meth:`check` look at the stamp (a new ``SYNC_INTERVAL``, say)."""
        self._next_check = 0.0

    def check(self, *, force: bool = False) -> bool:
        """Follow plugin changes made by other processes; cheap enough to call on every request.

        Returns True when the stamp had changed and ``apply()`` ran. Between two looks
        (``SYNC_INTERVAL`` seconds) it returns False after one clock comparison; ``force=True``
        looks now. Never raises: a cache or database failure is logged and retried at the next
        look.
        """
        if not force and _monotonic() < self._next_check:
            return False
        return self._look(force)

    def _look(self, force: bool) -> bool:
        # One thread looks at a time; others carry on with the state they have (unless forced,
        # when they wait for the look in progress, which then covers them).
        if not self._look_lock.acquire(blocking=force):
            return False
        try:
            self._next_check = _monotonic() + float(plugin_settings.SYNC_INTERVAL)
            if self._every_look is not None:
                try:
                    self._every_look()
                except Exception:
                    logger.exception("Could not check the plugin folders")
            try:
                token = stamp.current()
            except Exception:
                logger.warning("Could not read the plugin state stamp", exc_info=True)
                return False
            if token == self._seen:
                return False
            try:
                self._apply()
            except Exception as exc:
                if isinstance(exc, DatabaseError) and not plugin_table_exists():
                    # `migrate course_plugins zero` ran while this process was up: there is
                    # nothing left to follow. Say so once, not at every look.
                    logger.warning(
                        "The course_plugins tables are gone (migrate course_plugins zero?): "
                        "this process stops its plugins and no longer follows plugin changes; "
                        "stop or restart it"
                    )
                    self._seen = token
                    if self._tables_gone is not None:
                        try:
                            self._tables_gone()
                        except Exception:
                            logger.exception("Could not stop the plugins of this process")
                    return False
                # Keep the old stamp so that the next look tries again.
                logger.exception("Could not follow the plugin state of the database")
                return False
            self._seen = token
            return True
        finally:
            self._look_lock.release()

    def _loop(self, interval: float | None, stop: threading.Event) -> None:
        while True:
            period = float(interval if interval is not None else plugin_settings.SYNC_INTERVAL)
            if stop.wait(max(period, 0.01)):
                return
            try:
                self.check(force=True)  # apply() logs what it changed
            except Exception:  # pragma: no cover - check() logs its own failures
                logger.exception("Plugin state follower failed")
            finally:
                # This thread's own connections; a long-idle open connection only ages.
                connections.close_all()

    def start_thread(self, interval: float | None = None) -> threading.Thread:
        """Start (once per process) a daemon thread that runs :meth:`check` every ``interval`` s.

        For long-running processes that may sit idle (Celery workers); web processes follow per
        request. ``interval`` defaults to ``SYNC_INTERVAL``. Returns the running thread.
        """
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread_stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._loop,
                    args=(interval, self._thread_stop),
                    name="course-plugins-sync",
                    daemon=True,
                )
                self._thread.start()
            return self._thread

    def stop_thread(self, timeout: float = 5.0) -> None:
        """Stop the thread, if any, waiting up to ``timeout`` s for a look in progress."""
        with self._thread_lock:
            thread, self._thread = self._thread, None
            self._thread_stop.set()
        if thread is not None:
            thread.join(timeout)

    def _after_fork(self) -> None:
        # A fork (Celery prefork pool) may happen while another thread holds a lock; the child
        # gets fresh ones. The followed stamp is inherited along with the state it describes.
        self._look_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._thread_stop = threading.Event()
        self._thread = None


def plugin_table_exists() -> bool:
    """False when the app's tables were dropped (``migrate course_plugins zero``), else True."""
    try:
        connection = connections[router.db_for_read(PluginRow)]
        with connection.cursor() as cursor:
            return PluginRow._meta.db_table in connection.introspection.table_names(cursor)
    except Exception:
        return True


def _after_fork_in_child() -> None:
    for follower in list(_followers):
        follower._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
