"""Cross-process state stamp: an opaque token that changes whenever plugin state changes.

A process that changes plugin state in the database (activate, deactivate, reload, settings,
quarantine) calls :func:`bump` once the change is committed: it writes a fresh token under
``STAMP_KEY`` in the cache named by ``COURSE_PLUGINS["SYNC_CACHE"]``. Readers call
:func:`current` and compare it with the token they last followed; the runtime
(``site.runtime.Runtime.check``) does so at most every ``SYNC_INTERVAL`` seconds and then makes its
loader follow the rows. Like django-celery-beat's ``PeriodicTasks.changed()``, the stamp only bumps
and answers; it never calls back into whoever reads it.

The cache must be shared by all processes (Redis, or a file/database cache on one machine); a
per-process cache (``LocMemCache``) makes every process deaf to the others.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.cache import caches
from django.db import transaction

from course_plugins.conf import plugin_settings

__all__ = ["STAMP_KEY", "bump", "current"]

STAMP_KEY = "course_plugins:state-stamp"
"""Cache key of the state stamp (an opaque token; only its changes matter)."""


def _cache() -> Any:
    return caches[plugin_settings.SYNC_CACHE]


def current() -> str | None:
    """Return the stamp as stored in the shared cache (``None`` if never bumped or evicted).

    Raises whatever the cache raises when it cannot be reached.
    """
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
