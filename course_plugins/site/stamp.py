"""Cross-process state stamp: every process of the site follows plugin changes made in another.

A process that changes plugin state in the database (activate, deactivate, reload, settings,
quarantine) calls :func:`bump` once the change is committed: it writes a fresh token under
``STAMP_KEY`` in the cache named by ``COURSE_PLUGINS["SYNC_CACHE"]``. Every process calls
:func:`check` often (per request through :class:`SyncMiddleware`, per Celery task, and from a
:func:`start_follower` thread in idle workers). ``check`` compares a monotonic clock with the next
due time, so in steady state a request costs no I/O at all; at most every ``SYNC_INTERVAL``
seconds it reads the stamp (one cache get) and, when the token changed, calls
``runtime.apply_db_state()`` so the local loader follows the database rows.

The cache must be shared by all processes (Redis, or a file/database cache on one machine); a
per-process cache (``LocMemCache``) makes every process deaf to the others.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core import checks
from django.core.cache import caches
from django.core.signals import setting_changed
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse

from course_plugins.conf import SETTING_NAME, plugin_settings

__all__ = [
    "STAMP_KEY",
    "SyncMiddleware",
    "bump",
    "check",
    "current",
    "due",
    "prime",
    "start_follower",
    "stop_follower",
]

logger = logging.getLogger("course_plugins.sync")

STAMP_KEY = "course_plugins:state-stamp"
"""Cache key of the state stamp (an opaque token; only its changes matter)."""

_UNSET: Any = object()

# The stamp this process last followed (_UNSET until the first check or prime()), and the
# monotonic time before which check() does nothing. Plain module globals: the hot path is two
# global reads and a clock call.
_seen: Any = _UNSET
_next_check = 0.0
_lock = threading.Lock()
_follower: threading.Thread | None = None
_follower_stop = threading.Event()
_follower_lock = threading.Lock()
_monotonic = time.monotonic


def _cache() -> Any:
    return caches[plugin_settings.SYNC_CACHE]


def current() -> str | None:
    """Return the stamp as stored in the shared cache (``None`` if never bumped or evicted)."""
    return _cache().get(STAMP_KEY)


def _write_stamp() -> None:
    # A fresh token rather than an increment: Django's file and database caches do not increment
    # atomically, and a lost increment would hide a change. Any new value is a change.
    _cache().set(STAMP_KEY, f"{uuid.uuid4().hex}", timeout=None)


def bump(*, using: str | None = None) -> None:
    """Tell every other process that plugin state changed in the database.

    The stamp is written once the current transaction commits (immediately outside one), so a
    process that sees the new stamp also sees the new rows. Returns nothing; a cache failure is
    logged (the other processes then follow at the next successful bump), never raised.
    """
    transaction.on_commit(_write_stamp, using=using, robust=True)


def prime() -> None:
    """Record the current stamp as followed; call right BEFORE reading the plugin rows at start-up.

    Without it the first :func:`check` of a process applies the database state once more
    (harmless, one query). Returns nothing; a cache failure leaves the process unprimed.
    """
    global _seen
    try:
        _seen = current()
    except Exception:
        logger.warning("Could not read the plugin state stamp", exc_info=True)


def due() -> bool:
    """Return True when :func:`check` would look at the stamp now (no I/O)."""
    return _monotonic() >= _next_check


def check(*, force: bool = False) -> bool:
    """Follow plugin changes made by other processes; cheap enough to call on every request.

    Returns True when the stamp had changed and ``runtime.apply_db_state()`` ran. Between two
    looks (``SYNC_INTERVAL`` seconds) it returns False after one clock comparison; ``force=True``
    looks now. Never raises: a cache or database failure is logged and retried at the next look.
    """
    if not force and _monotonic() < _next_check:
        return False
    return _look(force)


def _look(force: bool) -> bool:
    global _seen, _next_check
    # One thread looks at a time; others carry on with the state they have (unless forced, when
    # they wait for the look in progress, which then covers them).
    if not _lock.acquire(blocking=force):
        return False
    try:
        _next_check = _monotonic() + float(plugin_settings.SYNC_INTERVAL)
        try:
            stamp = current()
        except Exception:
            logger.warning("Could not read the plugin state stamp", exc_info=True)
            return False
        if stamp == _seen:
            return False
        from course_plugins import runtime

        try:
            runtime.apply_db_state()
        except Exception:
            # Keep the old stamp so that the next look tries again.
            logger.exception("Could not follow the plugin state of the database")
            return False
        _seen = stamp
        return True
    finally:
        _lock.release()


def _reset_after_fork() -> None:
    # A fork (Celery prefork pool) may happen while another thread holds the lock; the child
    # gets a fresh one. The followed stamp is inherited along with the state it describes.
    global _lock, _follower, _follower_lock, _follower_stop
    _lock = threading.Lock()
    _follower_lock = threading.Lock()
    _follower_stop = threading.Event()
    _follower = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    # A new SYNC_INTERVAL / SYNC_CACHE applies from the next call, not after the old interval.
    global _next_check
    if setting == SETTING_NAME:
        _next_check = 0.0


setting_changed.connect(_settings_changed, dispatch_uid="course_plugins.sync")


def _follow(interval: float | None, stop: threading.Event) -> None:
    while True:
        period = float(interval if interval is not None else plugin_settings.SYNC_INTERVAL)
        if stop.wait(max(period, 0.01)):
            return
        try:
            check(force=True)  # runtime.apply_db_state logs what it changed
        except Exception:  # pragma: no cover - check() logs its own failures
            logger.exception("Plugin state follower failed")
        finally:
            # This thread's own connections; a long-idle open connection only ages.
            connections.close_all()


def start_follower(interval: float | None = None) -> threading.Thread:
    """Start (once per process) a daemon thread that runs :func:`check` every ``interval`` s.

    For long-running processes that may sit idle (Celery workers); web processes follow per
    request. ``interval`` defaults to ``SYNC_INTERVAL``. Returns the running thread.
    """
    global _follower, _follower_stop
    with _follower_lock:
        if _follower is None or not _follower.is_alive():
            _follower_stop = threading.Event()
            _follower = threading.Thread(
                target=_follow,
                args=(interval, _follower_stop),
                name="course-plugins-sync",
                daemon=True,
            )
            _follower.start()
        return _follower


def stop_follower(timeout: float = 5.0) -> None:
    """Stop the follower thread, if any, waiting up to ``timeout`` s for a look in progress."""
    global _follower
    with _follower_lock:
        thread, _follower = _follower, None
        _follower_stop.set()
    if thread is not None:
        thread.join(timeout)


_PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


@checks.register(checks.Tags.caches)
def check_sync_setup(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W010: the sync cache is private to each process; W011: ``SyncMiddleware`` is missing."""
    from django.conf import settings

    messages: list[checks.CheckMessage] = []
    alias = plugin_settings.SYNC_CACHE
    backend = settings.CACHES.get(alias, {}).get("BACKEND", "")
    if backend in _PER_PROCESS_CACHES:
        messages.append(
            checks.Warning(
                f"COURSE_PLUGINS['SYNC_CACHE'] is the cache {alias!r} ({backend}), which each "
                "process keeps for itself: a plugin toggled in one process will not reach the "
                "others.",
                hint="Point SYNC_CACHE at a cache all processes share: Redis "
                "(django.core.cache.backends.redis.RedisCache), or on one machine "
                "FileBasedCache / DatabaseCache.",
                id="course_plugins.W010",
            )
        )
    if "course_plugins.sync.SyncMiddleware" not in settings.MIDDLEWARE:
        messages.append(
            checks.Warning(
                "course_plugins.sync.SyncMiddleware is not in MIDDLEWARE: web processes will not "
                "follow plugin changes made in other processes.",
                hint="Add 'course_plugins.sync.SyncMiddleware' to MIDDLEWARE.",
                id="course_plugins.W011",
            )
        )
    return messages


class SyncMiddleware:
    """Run :func:`check` before each request: the site follows changes made in other processes.

    Add ``"course_plugins.sync.SyncMiddleware"`` to ``MIDDLEWARE``. Works in sync and async
    stacks; in an async stack the rare look at the stamp runs in a thread.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self._async:
            return self.__acall__(request)
        check()
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if due():
            await sync_to_async(check)()
        return await self.get_response(request)
