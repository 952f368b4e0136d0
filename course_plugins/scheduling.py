"""``api.schedule`` on Celery: one-shots with a countdown, repeats as django-celery-beat rows.

A schedule is named by its plugin NAME and the function's name inside the plugin, never by an
object, because the function runs in another process (a Celery worker) that loads the plugin
itself. Its id is the stable string ``"<plugin name>:<function ref>"``. Since ``activate(api)``
runs in every process of the site, scheduling the same plugin+function again replaces the earlier
schedule instead of adding one:

- repeating: one ``PeriodicTask`` named ``course_plugins:<id>`` with an ``IntervalSchedule``; it
  lives in the database, so it survives restarts and shows in the admin (Periodic tasks). It is
  only written when something changed, so re-activation in N processes costs N reads.
- one-shot: ``run_scheduled.apply_async(countdown=...)`` carrying a token; the latest token per id
  lives in the shared sync cache and a task whose token is no longer the latest (replaced,
  cancelled) does nothing when it fires.
"""

from __future__ import annotations

import inspect
import json
import math
import time
import uuid
from typing import Any

from django.core.cache import caches
from django.db import IntegrityError, transaction

from course_plugins.conf import plugin_settings
from course_plugins.exceptions import ScheduleError

try:  # The engine's interface; this backend also works as a plain object until it lands.
    from course_plugins.core.scheduler import Scheduler as _SchedulerBase
except ImportError:  # pragma: no cover - only while the engine module is missing
    _SchedulerBase = object  # type: ignore[assignment,misc]

__all__ = [
    "PERIODIC_PREFIX",
    "TASK_NAME",
    "CeleryScheduler",
    "function_ref",
    "get_scheduler",
    "one_shot_is_current",
    "resolve_function",
    "schedule_id",
]

TASK_NAME = "course_plugins.tasks.run_scheduled"
PERIODIC_PREFIX = "course_plugins:"
_TOKEN_KEY = "course_plugins:schedule-token:{}"
_VOIDED_KEY = "course_plugins:schedule-voided:{}"
# Tokens outlive their countdown by this much, so a worker that is late still finds them.
_TOKEN_GRACE = 7 * 24 * 3600


def _plugin_name(plugin: Any) -> str:
    """Name of a plugin given as a plugin object, an id (``name@version``) or a bare name."""
    if isinstance(plugin, str):
        return plugin.partition("@")[0]
    return str(plugin.name)


def _plugin_label(plugin: Any) -> str:
    return plugin if isinstance(plugin, str) else str(getattr(plugin, "id", plugin.name))


def schedule_id(plugin: Any, ref: str) -> str:
    """Return the stable id of ``ref`` (see :func:`function_ref`) scheduled by ``plugin``."""
    return f"{_plugin_name(plugin)}:{ref}"


def _periodic_name(sid: str) -> str:
    return f"{PERIODIC_PREFIX}{sid}"


def function_ref(plugin: Any, fn: Any) -> str:
    """Return how a worker finds ``fn`` again: ``"name"`` or ``"sub.module.name"``.

    ``fn`` must be a function defined at module level in the plugin's package (``__init__.py``)
    or one of its submodules, and reachable under its own name there. Raises
    :class:`ScheduleError` naming the plugin and saying what to do otherwise (lambda, nested
    function, method, callable object, another module's function).
    """
    label = _plugin_label(plugin)
    what = getattr(fn, "__qualname__", None) or repr(fn)
    advice = (
        "Schedule a function defined at the top level of the plugin's own module (a `def` in "
        "its __init__.py or a submodule), called with no arguments; keep what it needs (such as "
        "`api`) in module globals."
    )
    if inspect.ismethod(fn):
        raise ScheduleError(label, f"cannot schedule the bound method {what}. {advice}")
    if not inspect.isfunction(fn):
        raise ScheduleError(
            label, f"cannot schedule {fn!r}: it is not a function ({type(fn).__name__}). {advice}"
        )
    if fn.__name__ == "<lambda>":
        raise ScheduleError(label, f"cannot schedule a lambda ({fn.__module__}). {advice}")
    if fn.__qualname__ != fn.__name__:
        raise ScheduleError(
            label, f"cannot schedule {fn.__qualname__}: it is nested in another function or class, "
            f"so a worker cannot find it by name. {advice}"
        )
    module = getattr(plugin, "module", None)
    if module is None:
        raise ScheduleError(label, f"cannot schedule {fn.__name__}: the plugin is not loaded")
    base = module.__name__
    if fn.__module__ == base:
        ref = fn.__name__
    elif fn.__module__.startswith(base + "."):
        ref = f"{fn.__module__[len(base) + 1:]}.{fn.__name__}"
    else:
        raise ScheduleError(
            label, f"cannot schedule {fn.__module__}.{fn.__name__}: it belongs to another module, "
            f"not to the plugin ({base}). {advice}"
        )
    try:
        found = resolve_function(plugin, ref)
    except ScheduleError:
        found = None
    if found is not fn:
        raise ScheduleError(
            label, f"cannot schedule {fn.__name__}: the plugin's module does not hold it under "
            f"that name (was it renamed, shadowed or made inside a function?). {advice}"
        )
    return ref


def resolve_function(plugin: Any, ref: str) -> Any:
    """Return the function ``ref`` names in the loaded ``plugin`` (the worker's side).

    Raises :class:`ScheduleError` when the plugin is not loaded or no longer has it.
    """
    obj = getattr(plugin, "module", None)
    if obj is None:
        raise ScheduleError(_plugin_label(plugin), f"cannot run {ref}: the plugin is not loaded")
    for part in ref.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            break
    if not inspect.isfunction(obj):
        raise ScheduleError(
            _plugin_label(plugin), f"scheduled function {ref} no longer exists in the plugin; "
            "cancel the schedule or restore the function"
        )
    return obj


def _delay(plugin: Any, delay_seconds: Any, repeat: bool) -> float:
    label = _plugin_label(plugin)
    if isinstance(delay_seconds, bool) or not isinstance(delay_seconds, (int, float)):
        raise ScheduleError(label, f"delay_seconds must be a number, got {delay_seconds!r}")
    delay = float(delay_seconds)
    if not math.isfinite(delay) or delay < 0:
        raise ScheduleError(label, f"delay_seconds must be a finite number >= 0, got {delay!r}")
    if repeat and round(delay) < 1:
        raise ScheduleError(
            label, f"a repeating schedule needs delay_seconds >= 1 (whole seconds), got {delay!r}"
        )
    return delay


def one_shot_is_current(plugin_name: str, ref: str, token: str, scheduled_at: float) -> bool:
    """Return True when a one-shot carrying ``token`` is still the latest and was not voided.

    A missing token (cancelled, or the cache lost it) counts as not current: the one-shot is
    skipped rather than run twice or after a cancel.
    """
    sid = f"{plugin_name}:{ref}"
    token_key, voided_key = _TOKEN_KEY.format(sid), _VOIDED_KEY.format(plugin_name)
    found = caches[plugin_settings.SYNC_CACHE].get_many([token_key, voided_key])
    voided_at = found.get(voided_key)
    if voided_at is not None and float(voided_at) >= scheduled_at:
        return False
    return found.get(token_key) == token


class CeleryScheduler(_SchedulerBase):
    """The site's scheduler: Celery countdowns and django-celery-beat periodic tasks."""

    def schedule(self, plugin: Any, fn: Any, delay_seconds: float, repeat: bool = False) -> str:
        """Schedule ``fn()`` of ``plugin`` in ``delay_seconds`` (every ``delay_seconds`` if
        ``repeat``); replaces an earlier schedule of the same function. Returns the schedule id.

        Raises :class:`ScheduleError` for a function a worker could not find by name or a bad delay.
        """
        ref = function_ref(plugin, fn)
        delay = _delay(plugin, delay_seconds, repeat)
        sid = schedule_id(plugin, ref)
        if repeat:
            self._void_one_shot(sid)
            self._upsert_periodic(plugin, sid, ref, int(round(delay)))
        else:
            self._delete_periodic(sid)
            self._send_one_shot(plugin, sid, ref, delay)
        return sid

    def cancel(self, schedule_id: str) -> bool:
        """Cancel one schedule by id. Returns True if a periodic task or a one-shot was pending."""
        voided = self._void_one_shot(schedule_id)
        return self._delete_periodic(schedule_id) or voided

    def cancel_owner(self, plugin_id: str) -> int:
        """Cancel every schedule of the plugin (by name). Returns how many periodic tasks went."""
        from django_celery_beat.models import PeriodicTask

        name = _plugin_name(plugin_id)
        cache = caches[plugin_settings.SYNC_CACHE]
        # One-shots cannot be listed in a cache: void everything scheduled before now instead.
        cache.set(_VOIDED_KEY.format(name), time.time(), timeout=_TOKEN_GRACE)
        deleted = 0
        for task in PeriodicTask.objects.filter(name__startswith=self._owner_prefix(name)):
            task.delete()  # one by one: the delete signal tells beat its schedule changed
            deleted += 1
        return deleted

    def pause_owner(self, plugin_id: str) -> int:
        """Disable the plugin's periodic tasks (deactivation). Returns how many changed."""
        return self._set_enabled(plugin_id, False)

    def resume_owner(self, plugin_id: str) -> int:
        """Enable the plugin's periodic tasks again (activation). Returns how many changed."""
        return self._set_enabled(plugin_id, True)

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _owner_prefix(name: str) -> str:
        return f"{PERIODIC_PREFIX}{name}:"

    def _set_enabled(self, plugin_id: str, enabled: bool) -> int:
        from django_celery_beat.models import PeriodicTask

        name = _plugin_name(plugin_id)
        changed = 0
        tasks = PeriodicTask.objects.filter(
            name__startswith=self._owner_prefix(name), enabled=not enabled
        )
        for task in tasks:
            task.enabled = enabled
            # save(), not update(): it resets last_run_at when disabled and signals beat.
            task.save()
            changed += 1
        return changed

    def _upsert_periodic(self, plugin: Any, sid: str, ref: str, every: int) -> None:
        from django_celery_beat.models import IntervalSchedule, PeriodicTask

        interval = (
            IntervalSchedule.objects.filter(every=every, period=IntervalSchedule.SECONDS)
            .order_by("pk")
            .first()
        ) or IntervalSchedule.objects.create(every=every, period=IntervalSchedule.SECONDS)
        fields: dict[str, Any] = {
            "task": TASK_NAME,
            "interval": interval,
            "crontab": None,
            "solar": None,
            "clocked": None,
            "one_off": False,
            "kwargs": json.dumps({"plugin": _plugin_name(plugin), "function": ref}, sort_keys=True),
            "args": "[]",
            "enabled": True,
            "description": f"Scheduled by plugin {_plugin_label(plugin)}: {ref}() every {every}s.",
        }
        name = _periodic_name(sid)
        task = PeriodicTask.objects.filter(name=name).first()
        if task is None:
            try:
                with transaction.atomic():
                    PeriodicTask.objects.create(name=name, **fields)
                return
            except IntegrityError:
                # Another process activating the same plugin created it first: update that one.
                task = PeriodicTask.objects.get(name=name)
        if any(getattr(task, key) != value for key, value in fields.items()):
            for key, value in fields.items():
                setattr(task, key, value)
            task.save()

    def _delete_periodic(self, sid: str) -> bool:
        from django_celery_beat.models import PeriodicTask

        task = PeriodicTask.objects.filter(name=_periodic_name(sid)).first()
        if task is None:
            return False
        task.delete()
        return True

    def _send_one_shot(self, plugin: Any, sid: str, ref: str, delay: float) -> None:
        from course_plugins.tasks import run_scheduled

        token = uuid.uuid4().hex
        # The token is stored before the task is sent: a zero countdown must find it.
        caches[plugin_settings.SYNC_CACHE].set(
            _TOKEN_KEY.format(sid), token, timeout=int(delay) + _TOKEN_GRACE
        )
        run_scheduled.apply_async(
            kwargs={
                "plugin": _plugin_name(plugin),
                "function": ref,
                "token": token,
                "scheduled_at": time.time(),
            },
            countdown=delay,
        )

    def _void_one_shot(self, sid: str) -> bool:
        return bool(caches[plugin_settings.SYNC_CACHE].delete(_TOKEN_KEY.format(sid)))


_scheduler: CeleryScheduler | None = None


def get_scheduler() -> CeleryScheduler:
    """Return the process-wide :class:`CeleryScheduler` (the runtime hands it to its loader)."""
    global _scheduler
    if _scheduler is None:
        _scheduler = CeleryScheduler()
    return _scheduler
