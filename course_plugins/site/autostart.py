"""Start a process's plugins no later than its first hook run or event, whatever the process is.

Requests and Celery tasks start the plugins through Django's and Celery's signals. Everything else
that reaches the engine — a save of a ``MODEL_HOOKS`` model (its hooks run through the process-wide
``HookManager``, its events through the process-wide ``EventBus``), or platform code running a hook
or publishing an event from ``manage.py shell``, a management command, a script, a data migration
or a test — goes through those two instances. :func:`arm` gives them, until the first such call, a
subclass whose entry points start the plugins and then hand the instances their own class back.
After the first call nothing is left in the way: no flag is tested per hook run or save.

A call made while Django is still loading apps (``apps.ready`` is False) starts nothing and leaves
the instances armed: ``migrate`` and ``AppConfig.ready`` code must not touch the plugin tables.
When starting fails (no tables yet, a test without database access), the failure is logged once
and the process goes on without plugins until its next request or task tries again.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from django.apps import apps

from course_plugins.core import advice
from course_plugins.core.event_bus import EventBus
from course_plugins.core.hook_manager import HookManager

__all__ = ["arm", "armed", "disarm", "suspended"]

logger = logging.getLogger("course_plugins.runtime")

# The entry points through which platform code reaches plugin functions.
_ENTRY_POINTS: dict[type, tuple[str, ...]] = {
    HookManager: ("run_sync", "run", "__getitem__", "get", "describe"),
    EventBus: ("publish", "publish_sync", "matching", "describe"),
}

_lock = threading.RLock()
_start: Callable[[], object] | None = None
_armed: dict[int, tuple[Any, type]] = {}  # id(instance) -> (instance, its own class)
_suspended = False
_warned = False


def _starting_class(base: type) -> type:
    """``base`` with every entry point starting the plugins first (then calling ``base``'s)."""

    def wrap(name: str) -> Any:
        original = getattr(base, name)
        if inspect.iscoroutinefunction(original):

            async def entry_async(self: Any, *args: Any, **kwargs: Any) -> Any:
                _first_use()
                return await original(self, *args, **kwargs)

            entry_async.__name__ = name
            return entry_async

        def entry(self: Any, *args: Any, **kwargs: Any) -> Any:
            _first_use()
            return original(self, *args, **kwargs)

        entry.__name__ = name
        return entry

    namespace = {name: wrap(name) for name in _ENTRY_POINTS[base]}
    namespace["__doc__"] = f"The process-wide {base.__name__} until this process started plugins."
    return type(f"Starting{base.__name__}", (base,), namespace)


_STARTING = {base: _starting_class(base) for base in _ENTRY_POINTS}


def arm(start: Callable[[], object]) -> None:
    """Make the next hook run or event of this process call ``start()`` first (once).

    ``start`` is the runtime's ``ensure_started``. Idempotent; a no-op while :func:`suspended`.
    """
    global _start
    with _lock:
        if _suspended:
            return
        _start = start
        advice.on_first_call(_first_use)
        for base, starting in _STARTING.items():
            instance = base.get_instance()
            if type(instance) is base:
                _armed[id(instance)] = (instance, base)
                instance.__class__ = starting


def disarm() -> None:
    """Give the armed instances their own class back (nothing starts on their use)."""
    with _lock:
        for instance, base in _armed.values():
            if type(instance) is _STARTING[base]:
                instance.__class__ = base
        _armed.clear()
        advice.on_first_call(None)


def armed() -> bool:
    """Whether the next hook run or event of this process starts its plugins."""
    return bool(_armed)


def suspended(value: bool) -> None:
    """Suspend arming (``True``: :func:`arm` does nothing and armed instances are disarmed).

    For a test suite that starts its runtimes explicitly; a site never calls it.
    """
    global _suspended
    with _lock:
        _suspended = value
        if value:
            disarm()


def _first_use() -> None:
    global _warned
    if not apps.ready:
        return  # still loading apps: leave it armed for a later call
    # The lock is held while starting: a second thread's first hook run waits for the plugins
    # instead of running without them. The instances are disarmed first, so the start-up's own
    # use of the engine goes straight through.
    with _lock:
        if not _armed:
            return  # started (or given up) already
        start = _start
        disarm()
        if start is None:
            return
        try:
            start()
        except Exception:  # a hook run must never fail because the plugins could not start
            if not _warned:
                _warned = True
                logger.exception("Could not start the plugins at the first hook run or event")
