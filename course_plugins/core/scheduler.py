"""``api.schedule`` backends: the ``Scheduler`` interface and the in-process ``ThreadScheduler``.

A scheduler runs a plugin's module-level function (called with no arguments, sync or async) after
``delay_seconds``, once or every ``delay_seconds``. The Django site uses
``course_plugins.site.scheduling.CeleryScheduler`` (Celery + django-celery-beat); without Django the
loader uses ``ThreadScheduler``: one daemon thread per scheduler, nothing persisted.

The contract both follow:

- ``schedule(plugin, fn, delay_seconds, repeat=False) -> str`` — ``plugin`` is the loader's
  ``Plugin`` (``.id``, ``.name``, ``.module``). The id is stable, ``"<plugin name>:<ref>"``
  (``function_ref``), so scheduling the same function again replaces the earlier schedule.
  Raises ``ScheduleError`` when ``fn`` is not a module-level function of the plugin or the delay
  is not a positive number.
- ``cancel(schedule_id) -> bool`` — True when something was cancelled.
- ``cancel_owner(plugin_id) -> int`` — cancels every schedule of that plugin (matched by name, the
  id's part before ``@``), returns how many.
- ``pause_owner(plugin_id)`` / ``resume_owner(plugin_id)`` — a paused plugin's schedules do not
  fire (repeating ones keep their rhythm and fire again once resumed; the in-process scheduler
  drops a one-shot that comes due while paused).
- ``scheduled(plugin_id=None) -> list[dict]`` — what is scheduled (id, plugin, function, delay,
  repeat, paused).
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from course_plugins.core.health import health
from course_plugins.core.options import options
from course_plugins.core.watchdog import TimeBudgetExceeded, time_limit
from course_plugins.core.worker_threads import release_thread_resources, run_awaitable
from course_plugins.exceptions import ScheduleError

logger = logging.getLogger("course_plugins.scheduler")

MIN_REPEAT_SECONDS = 0.01
"""The shortest delay of a repeating schedule of ``ThreadScheduler``, and the shortest time
between the starts of two runs of one scheduled function (a one-shot that schedules itself
again waits that long): any positive delay used to be taken, and a repeat every 1e-9 s ran the
plugin's function back to back for ever, a thread of the site busy and holding the
interpreter's lock. (The site's ``CeleryScheduler`` repeats in whole seconds, at least 1.)"""


@runtime_checkable
class Scheduler(Protocol):
    """What ``PlatformAPI.schedule`` and the loader's teardown need from a scheduling backend."""

    def schedule(
        self, plugin: Any, fn: Callable[[], Any], delay_seconds: float, repeat: bool = False
    ) -> str: ...

    def cancel(self, schedule_id: str) -> bool: ...

    def cancel_owner(self, plugin_id: str) -> int: ...

    def pause_owner(self, plugin_id: str) -> None: ...

    def resume_owner(self, plugin_id: str) -> None: ...

    def scheduled(self, plugin_id: str | None = None) -> list[dict[str, Any]]: ...


def plugin_name(plugin_id: str) -> str:
    """Return the name part of a plugin id (``"a@1.0.0"`` -> ``"a"``); a bare name as is."""
    return plugin_id.split("@", 1)[0]


def function_ref(plugin: Any, fn: Any) -> str:
    """Return how ``fn`` is found again in ``plugin``: ``"name"`` or ``"sub.module.name"``.

    Raises ``ScheduleError`` when ``fn`` is not a module-level function of the plugin's package
    or one of its submodules (a lambda, a nested function, a method or another module's function).
    """
    root = getattr(plugin.module, "__name__", None)
    name = getattr(fn, "__name__", None)
    module = getattr(fn, "__module__", None)
    hint = (
        "define it with `def` at module level in the plugin (it is called with no arguments; keep "
        "what it needs, such as `api`, in a module-level variable)"
    )
    if root is None:
        raise ScheduleError(plugin.id, "the plugin is not loaded, so nothing can be scheduled")
    if not inspect.isfunction(fn) or name is None or fn.__qualname__ != name or name == "<lambda>":
        raise ScheduleError(plugin.id, f"cannot schedule {fn!r}: {hint}")
    if module == root:
        ref, owner_module = name, plugin.module
    elif isinstance(module, str) and module.startswith(root + "."):
        ref = f"{module[len(root) + 1 :]}.{name}"
        owner_module = _submodule(plugin.module, module[len(root) + 1 :])
    else:
        raise ScheduleError(plugin.id, f"cannot schedule {name}() from module {module}: {hint}")
    if getattr(owner_module, name, None) is not fn:
        raise ScheduleError(plugin.id, f"cannot schedule {name}(): {hint}")
    return ref


def resolve_function_ref(plugin: Any, ref: str) -> Callable[[], Any]:
    """Return the function ``function_ref`` described; raises ``ScheduleError`` if it is gone."""
    *path, name = ref.split(".")
    module = _submodule(plugin.module, ".".join(path)) if path else plugin.module
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ScheduleError(plugin.id, f"scheduled function {ref} no longer exists in the plugin")
    return fn


def _submodule(module: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        module = getattr(module, part, None)
    return module


def check_delay(plugin_id: str, delay_seconds: Any) -> float:
    """Return ``delay_seconds`` as a float; raises ``ScheduleError`` unless it is positive."""
    if (
        isinstance(delay_seconds, bool)
        or not isinstance(delay_seconds, (int, float))
        or not math.isfinite(delay_seconds)
        or delay_seconds <= 0
    ):
        raise ScheduleError(
            plugin_id, f"delay_seconds must be a positive number of seconds, got {delay_seconds!r}"
        )
    return float(delay_seconds)


@dataclass
class _Job:
    id: str
    owner: str
    fn: Callable[[], Any]
    delay: float
    repeat: bool
    due: float
    generation: int
    timeout: float | None = None
    runs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class ThreadScheduler:
    """In-process ``Scheduler``: one daemon thread runs due functions one at a time.

    Each run gets the plugin's time budget (``watchdog.time_limit``) and is reported to
    ``core.health`` like a hook call, so a schedule that keeps failing quarantines its plugin.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._paused: set[str] = set()
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._running: str | None = None
        self._started: dict[str, float] = {}  # schedule id -> when its last run started

    def schedule(
        self, plugin: Any, fn: Callable[[], Any], delay_seconds: float, repeat: bool = False
    ) -> str:
        """Schedule ``fn``; returns its stable id. Raises ``ScheduleError`` (a repeating delay
        under ``MIN_REPEAT_SECONDS`` among the reasons, naming the plugin)."""
        delay = check_delay(plugin.id, delay_seconds)
        if repeat and delay < MIN_REPEAT_SECONDS:
            raise ScheduleError(
                plugin.id,
                f"a repeating schedule needs delay_seconds >= {MIN_REPEAT_SECONDS:g}, got "
                f"{delay!r} (a shorter one would run the function back to back)",
            )
        schedule_id = f"{plugin.name}:{function_ref(plugin, fn)}"
        timeout = getattr(plugin, "hook_timeout", None)
        with self._cond:
            if self._closed:
                raise ScheduleError(plugin.id, "the scheduler is closed")
            due = time.monotonic() + delay
            started = self._started.get(schedule_id)
            if started is not None:
                due = max(due, started + MIN_REPEAT_SECONDS)
            generation = next(self._seq)
            job = _Job(
                schedule_id,
                plugin.name,
                fn,
                delay,
                bool(repeat),
                due,
                generation,
                timeout,
                extra={"plugin_id": plugin.id},
            )
            self._jobs[schedule_id] = job
            heapq.heappush(self._heap, (job.due, generation, schedule_id, generation))
            self._ensure_thread()
            self._cond.notify_all()
        return schedule_id

    def cancel(self, schedule_id: str) -> bool:
        """Cancel one schedule; returns True when it existed."""
        with self._cond:
            return self._jobs.pop(schedule_id, None) is not None

    def cancel_owner(self, plugin_id: str) -> int:
        """Cancel every schedule of the plugin (by name); returns how many."""
        name = plugin_name(plugin_id)
        with self._cond:
            ids = [k for k, job in self._jobs.items() if job.owner == name]
            for key in ids:
                del self._jobs[key]
                self._started.pop(key, None)
            self._paused.discard(name)
            return len(ids)

    def pause_owner(self, plugin_id: str) -> None:
        with self._cond:
            self._paused.add(plugin_name(plugin_id))

    def resume_owner(self, plugin_id: str) -> None:
        with self._cond:
            self._paused.discard(plugin_name(plugin_id))
            self._cond.notify_all()

    def scheduled(self, plugin_id: str | None = None) -> list[dict[str, Any]]:
        """Return the current schedules, optionally only one plugin's."""
        name = plugin_name(plugin_id) if plugin_id else None
        with self._cond:
            return [
                {
                    "id": job.id,
                    "plugin": job.extra["plugin_id"],
                    "function": job.id.split(":", 1)[1],
                    "delay_seconds": job.delay,
                    "repeat": job.repeat,
                    "paused": job.owner in self._paused,
                    "runs": job.runs,
                }
                for job in sorted(self._jobs.values(), key=lambda j: j.id)
                if name is None or job.owner == name
            ]

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (pending schedules are dropped); waits for a running call to end."""
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._started.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="course-plugins-scheduler", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                job = self._next_due()
                if job is None:
                    return
            self._call(job)

    def _next_due(self) -> _Job | None:
        """Wait (holding the condition) until a job is due; None once closed."""
        while not self._closed:
            if not self._heap:
                self._cond.wait()
                continue
            due, _, key, generation = self._heap[0]
            job = self._jobs.get(key)
            if job is None or job.generation != generation:
                heapq.heappop(self._heap)  # cancelled or replaced
                continue
            wait = due - time.monotonic()
            if wait > 0:
                self._cond.wait(wait)
                continue
            heapq.heappop(self._heap)
            if job.repeat:
                job.due = max(job.due + job.delay, time.monotonic())
                heapq.heappush(self._heap, (job.due, next(self._seq), key, generation))
            else:
                del self._jobs[key]
            if job.owner in self._paused:
                continue
            job.runs += 1
            self._started[key] = time.monotonic()
            return job
        return None

    def _call(self, job: _Job) -> None:
        owner = job.extra["plugin_id"]
        budget = job.timeout if job.timeout is not None else options.hook_timeout
        where = f"scheduled {job.id}"
        try:
            with time_limit(budget):
                result = job.fn()
                if inspect.isawaitable(result):
                    run_awaitable(result)
        except TimeBudgetExceeded as exc:
            health.record_failure(owner, exc, where=where, kind="timeout")
        except Exception as exc:  # a plugin's bug must not kill the scheduler thread
            health.record_failure(owner, exc, where=where)
        else:
            health.record_success(owner)
        finally:
            release_thread_resources()
