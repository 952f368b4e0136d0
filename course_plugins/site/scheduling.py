"""``api.schedule`` on Celery: one-shots with a countdown, repeats as django-celery-beat rows.

A schedule is named by its plugin NAME and the function's name inside the plugin, never by an
object, because the function runs in another process (a Celery worker) that loads the plugin
itself. Its id is the stable string ``"<plugin name>:<function ref>"``. Since ``activate(api)``
runs in every process of the site, scheduling the same plugin+function again replaces the earlier
schedule instead of adding one:

- repeating: one ``PeriodicTask`` named ``course_plugins:<id>`` with an ``IntervalSchedule``; it
  lives in the database, so it survives restarts and shows in the admin (Periodic tasks). It is
  only written when something changed, so re-activation in N processes costs N reads.
- one-shot: the task ``course_plugins.tasks.run_scheduled``, sent by name with a countdown and
  carrying a token, through the outbox's short-timeout send (``outbox.send_one_shot``: a broker
  that is down costs the caller about a second, and the message waits in the outbox until the
  broker is back); the latest token per id
  lives in the shared sync cache, and a task whose token is no longer the latest (replaced,
  cancelled) does nothing when it fires.

A one-shot made while the plugin starts (in its ``activate()``) belongs to that activation: the
runtime says which one (:func:`starting`, the row's ``activated_at``), and the one-shot is sent
once per activation, by the first process that starts the plugin for it. Every other process
starting the plugin later (a new web or Celery worker, each ``manage.py`` command) finds it made
already (pending, or run) and sends nothing. An operator's activation, reload or settings change
is a new activation: it is sent again then. Outside ``activate()`` a one-shot replaces the pending
one, as above.

These schedules are shared by every process, so they follow the plugin's database row, not one
process's loader: the loader calls ``cancel_owner`` whenever a plugin stops *in this process*
(deactivation, but also reload, quarantine, shutdown, a test's reset), which must not silence a
plugin that is still enabled for the site. Instead :func:`follow_plugin_row` (connected to the
row's ``post_save`` by :func:`connect`) disables the plugin's periodic tasks when the admin
deactivates it, and enables them again when it is active again (deleting those whose function no
longer exists). Whatever the flags say, a run is skipped when the plugin is not active in the
worker.

This module sends tasks by name and never imports the runtime: whoever connects it hands it a
function that returns the plugin as loaded in this process.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.core.cache import caches
from django.db import DatabaseError, IntegrityError, transaction

from course_plugins.conf import plugin_settings
from course_plugins.core.plugin import Plugin as LoadedPlugin
from course_plugins.core.plugin import PluginState
from course_plugins.core.scheduler import (
    Scheduler,
    check_delay,
    function_ref,
    plugin_name,
    resolve_function_ref,
)
from course_plugins.core.scope import current_scope
from course_plugins.exceptions import ScheduleError
from course_plugins.models import Plugin, PluginStatus
from course_plugins.site import control, organizations, outbox, stamp

logger = logging.getLogger("course_plugins.scheduling")

LocalPlugin = Callable[[str], LoadedPlugin | None]
"""``fn(name)``: the plugin as loaded in this process, or ``None``."""

__all__ = [
    "PERIODIC_PREFIX",
    "TASK_NAME",
    "CeleryScheduler",
    "claim_one_shot",
    "connect",
    "follow_plugin_row",
    "forget_plugin",
    "get_scheduler",
    "starting",
]

TASK_NAME = "course_plugins.tasks.run_scheduled"
PERIODIC_PREFIX = "course_plugins:"
_TOKEN_KEY = "course_plugins:schedule-token:{}"
_VOIDED_KEY = "course_plugins:schedule-voided:{}"
# {schedule id: activation} of the one-shots a plugin's activate() made (see starting()).
_ACTIVATION_KEY = "course_plugins:activation-one-shots:{}"
_activation: ContextVar[tuple[str, str] | None] = ContextVar(
    "course_plugins_activation", default=None
)
# Tokens outlive their countdown by this much, so a worker that is late still finds them.
_TOKEN_GRACE = 7 * 24 * 3600


def _periodic_name(sid: str) -> str:
    return f"{PERIODIC_PREFIX}{sid}"


def _owner_prefix(plugin_id: str) -> str:
    return f"{PERIODIC_PREFIX}{plugin_name(plugin_id)}:"


def _cache() -> Any:
    return caches[plugin_settings.SYNC_CACHE]


def schedule_id(plugin: str, ref: str, org: Any = None) -> str:
    """The id of plugin ``plugin``'s schedule of function ``ref``: ``"<plugin>:<ref>"``, plus
    ``"@<org>"`` for one made in work about organization ``org``."""
    return f"{plugin}:{ref}" if org is None else f"{plugin}:{ref}@{org}"


def _current_org() -> Any:
    scope = current_scope.get()
    return None if scope is None else scope.org


@contextmanager
def starting(plugin: str, activated_at: Any) -> Iterator[None]:
    """Within: plugin ``plugin`` starts in this process for its activation ``activated_at`` (its
    row's ``activated_at``, or the one about to be recorded); a one-shot its ``activate()``
    schedules is then sent once per activation (see the module docstring). ``None``: no known
    activation, one-shots replace as usual."""
    if activated_at is None:
        yield
        return
    stamp = activated_at.isoformat() if hasattr(activated_at, "isoformat") else str(activated_at)
    token = _activation.set((plugin, stamp))
    try:
        yield
    finally:
        _activation.reset(token)


def claim_one_shot(
    plugin: str, ref: str, token: str, scheduled_at: float, org: Any = None
) -> bool:
    """Return True when the one-shot carrying ``token`` should run now, and claim it.

    False when it was replaced (a newer token), cancelled, voided by ``drop_owner``, made by an
    earlier installation of the plugin (see :func:`_installed_by`), or already claimed: a broker
    may deliver a message twice (a worker lost, a visibility timeout), and the token is deleted by
    the one delivery that runs it. A cache that lost the token also gives False: a one-shot is
    skipped rather than run after a cancel.
    """
    cache = _cache()
    token_key = _TOKEN_KEY.format(schedule_id(plugin, ref, org))
    voided_key = _VOIDED_KEY.format(plugin)
    found = cache.get_many([token_key, voided_key])
    voided_at = found.get(voided_key)
    if voided_at is not None and float(voided_at) >= scheduled_at:
        return False
    if found.get(token_key) != token or not _installed_by(plugin, scheduled_at):
        return False
    # Only one of two concurrent deliveries gets True from the delete (Redis DEL, unlink).
    return bool(cache.delete(token_key))


def _installed_by(plugin: str, scheduled_at: float) -> bool:
    """Whether ``plugin``'s row existed at ``scheduled_at``: a one-shot made before it belongs to
    an earlier installation (uninstalled, or removed with the app, since) and never runs, even if
    its token is still in the cache. True when the database cannot say (the cache's checks stand).
    """
    try:
        installed = (
            Plugin.objects.filter(name=plugin).values_list("discovered_at", flat=True).first()
        )
    except DatabaseError:
        logger.warning("Could not read plugin %s's row to claim a one-shot", plugin, exc_info=True)
        return True
    return installed is not None and installed.timestamp() <= scheduled_at


class CeleryScheduler(Scheduler):
    """The site's scheduler: Celery countdowns and django-celery-beat periodic tasks."""

    def schedule(self, plugin: Any, fn: Any, delay_seconds: float, repeat: bool = False) -> str:
        """Schedule ``fn()`` of ``plugin`` in ``delay_seconds`` (every ``delay_seconds`` if
        ``repeat``), replacing an earlier schedule of the same function. Returns the schedule id.

        Raises :class:`ScheduleError` for a function a worker could not find by name (lambda,
        nested function, method, another module's function) or a bad delay; a repeating delay is
        rounded to whole seconds and must be at least 1.
        """
        ref = function_ref(plugin, fn)
        delay = check_delay(plugin.id, delay_seconds)
        # Scheduled in work about an organization: it runs for that organization (its own id, so
        # each organization has its schedule and the site keeps its own).
        org = _current_org()
        sid = schedule_id(plugin.name, ref, org)
        if repeat:
            every = int(round(delay))
            if every < 1:
                raise ScheduleError(
                    plugin.id,
                    f"a repeating schedule needs delay_seconds >= 1 (whole seconds), got {delay!r}",
                )
            self._void_one_shot(sid)
            self._upsert_periodic(plugin, sid, ref, every, org)
        else:
            activation = _activation.get()
            if activation is not None and activation[0] == plugin.name:
                self._one_shot_of_activation(plugin, sid, ref, delay, org, activation[1])
            else:
                self._delete_periodic(sid)
                self._send_one_shot(plugin, sid, ref, delay, org)
        return sid

    def _one_shot_of_activation(
        self, plugin: Any, sid: str, ref: str, delay: float, org: Any, activation: str
    ) -> None:
        """A one-shot ``activate()`` makes: sent unless this activation made it already."""
        key = _ACTIVATION_KEY.format(plugin.name)
        made = _cache().get(key) or {}
        if made.get(sid) == activation:
            return  # pending or run: another process (or an earlier start here) made it
        self._delete_periodic(sid)
        self._send_one_shot(plugin, sid, ref, delay, org)
        # Kept until the plugin is uninstalled (forget_plugin): it only says which activation.
        _cache().set(key, {**made, sid: activation}, None)

    def cancel(self, schedule_id: str) -> bool:
        """Cancel one schedule by id. Returns True if a periodic task or a one-shot was pending.

        A one-shot still waiting in the outbox because the cache was down when it was made (its
        token is stored only when the relay sends it) is deleted there, so it never runs."""
        voided = self._void_one_shot(schedule_id)
        waiting = outbox.drop_one_shots(_TOKEN_KEY.format(schedule_id))
        return self._delete_periodic(schedule_id) or voided or bool(waiting)

    def cancel_owner(self, plugin_id: str) -> int:
        """The plugin stopped in this process: nothing to do for site-wide schedules; returns 0.

        See the module docstring: the plugin's row decides (:func:`follow_plugin_row`); use
        :meth:`drop_owner` to delete every schedule of a plugin for good.
        """
        return 0

    def drop_owner(self, plugin_id: str) -> int:
        """Delete every schedule of the plugin (by name), one-shots included; returns how many
        periodic tasks were deleted.

        Pending one-shots are voided by a marker in the cache; :func:`forget_plugin` deletes it
        once the plugin's row is gone (the row's absence voids them then).
        """
        from django_celery_beat.models import PeriodicTask

        # One-shots cannot be listed in a cache: void everything the plugin scheduled until now.
        _cache().set(_VOIDED_KEY.format(plugin_name(plugin_id)), time.time(), _TOKEN_GRACE)
        deleted = 0
        for task in PeriodicTask.objects.filter(name__startswith=_owner_prefix(plugin_id)):
            task.delete()  # one by one: the delete signal tells beat that its schedule changed
            deleted += 1
        return deleted

    def pause_owner(self, plugin_id: str) -> int:  # type: ignore[override]
        """Disable the plugin's periodic tasks site-wide; returns how many changed.

        Its pending one-shots stay; they are skipped if they fire while the plugin is inactive.
        """
        return self._set_enabled(plugin_id, False)

    def resume_owner(self, plugin_id: str) -> int:  # type: ignore[override]
        """Enable the plugin's periodic tasks site-wide again; returns how many changed."""
        return self._set_enabled(plugin_id, True)

    def scheduled(self, plugin_id: str | None = None) -> list[dict[str, Any]]:
        """Return the repeating schedules (periodic tasks), then the one-shots waiting in the
        outbox for the broker (``"waiting": True``), optionally only one plugin's.

        One-shots the broker took are messages there and are not listed.
        """
        from django_celery_beat.models import PeriodicTask

        prefix = _owner_prefix(plugin_id) if plugin_id else PERIODIC_PREFIX
        rows = PeriodicTask.objects.filter(name__startswith=prefix, task=TASK_NAME)
        result = []
        for task in rows.select_related("interval").order_by("name"):
            kwargs = json.loads(task.kwargs or "{}")
            result.append(
                {
                    "id": task.name[len(PERIODIC_PREFIX):],
                    "plugin": kwargs.get("plugin", ""),
                    "function": kwargs.get("function", ""),
                    "delay_seconds": float(task.interval.every) if task.interval else None,
                    "repeat": True,
                    "paused": not task.enabled,
                    "runs": task.total_run_count,
                }
            )
        for kwargs, due in outbox.waiting_one_shots(plugin_name(plugin_id) if plugin_id else None):
            plugin, function = str(kwargs.get("plugin", "")), str(kwargs.get("function", ""))
            result.append(
                {
                    "id": schedule_id(plugin, function, kwargs.get("org")),
                    "plugin": plugin,
                    "function": function,
                    "delay_seconds": max(0.0, due - time.time()),
                    "repeat": False,
                    "paused": False,
                    "runs": 0,
                    "waiting": True,
                }
            )
        return result

    # -- helpers ------------------------------------------------------------------------------

    def _set_enabled(self, plugin_id: str, enabled: bool, plugin: Any = None) -> int:
        """Set ``enabled`` on the plugin's periodic tasks; with ``plugin`` (loaded), tasks whose
        function it no longer has are deleted instead of enabled. Returns how many changed."""
        from django_celery_beat.models import PeriodicTask

        changed = 0
        tasks = PeriodicTask.objects.filter(
            name__startswith=_owner_prefix(plugin_id), enabled=not enabled
        )
        for task in tasks:
            changed += 1
            if plugin is not None and enabled:
                function = json.loads(task.kwargs or "{}").get("function", "")
                try:
                    resolve_function_ref(plugin, function)
                except ScheduleError:
                    logger.info("Deleted schedule %s: %s() is gone", task.name, function)
                    task.delete()
                    continue
            task.enabled = enabled
            # save(), not update(): it resets last_run_at when disabled and signals beat.
            task.save()
        return changed

    def _upsert_periodic(
        self, plugin: Any, sid: str, ref: str, every: int, org: Any = None
    ) -> None:
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
            "kwargs": json.dumps(_task_kwargs(plugin.name, ref, org), sort_keys=True),
            "args": "[]",
            "enabled": True,
            "description": f"Scheduled by plugin {plugin.id}: {ref}() every {every}s.",
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

    def _send_one_shot(
        self, plugin: Any, sid: str, ref: str, delay: float, org: Any = None
    ) -> None:
        token = uuid.uuid4().hex
        # Stored before the task is sent: a worker that runs it at once must find it. With the
        # cache down (short timeouts), the relay stores it before sending, from the outbox.
        token_entry = {"cache": plugin_settings.SYNC_CACHE, "key": _TOKEN_KEY.format(sid),
                       "value": token, "timeout": int(delay) + _TOKEN_GRACE}
        cache_add: dict[str, Any] | None = None
        try:
            _cache().set(token_entry["key"], token, token_entry["timeout"])
        except Exception as exc:
            logger.warning("Cache unavailable for one-shot %s (%s: %s): it goes to the outbox",
                           sid, type(exc).__name__, exc)
            cache_add = token_entry
        # By name: a registered task is applied as such (eager mode included), else sent. With
        # short broker timeouts, no retries: a broker that is down or frozen costs the caller (a
        # web request) about a second, and the one-shot waits in the outbox until it is back.
        kwargs = {**_task_kwargs(plugin.name, ref, org), "token": token,
                  "scheduled_at": time.time()}
        outbox.send_one_shot(plugin.name, TASK_NAME, kwargs, delay, cache_add=cache_add)

    def _void_one_shot(self, sid: str) -> bool:
        return bool(_cache().delete(_TOKEN_KEY.format(sid)))


def _task_kwargs(plugin: str, ref: str, org: Any) -> dict[str, Any]:
    kwargs = {"plugin": plugin, "function": ref}
    if org is not None:
        kwargs["org"] = org  # the worker runs it in that organization's scope
    return kwargs


_scheduler: CeleryScheduler | None = None


def follow_plugin_row(row: Plugin, plugin: LoadedPlugin | None) -> None:
    """The plugin's periodic tasks follow its row (``plugin``: as loaded in this process).

    A row the admin turned off (not enabled, or faulted, errored, missing) disables them; a row
    that is enabled and active enables them when the plugin runs in this process (the one that
    just activated it), deleting those whose function the plugin no longer has.
    """
    scheduler = get_scheduler()
    wanted = (
        (row.enabled or organizations.wanted_by_organizations(row.name))
        and row.status == PluginStatus.ACTIVE
        and not row.missing
    )
    if not wanted:
        scheduler._set_enabled(row.name, False)
        return
    if plugin is not None and plugin.state == PluginState.ACTIVE:
        scheduler._set_enabled(row.name, True, plugin)


def _row_saved(local_plugin: LocalPlugin, sender: Any, instance: Plugin, **kwargs: Any) -> None:
    follow_plugin_row(instance, local_plugin(instance.name))


def connect(local_plugin: LocalPlugin) -> None:
    """Make periodic tasks follow plugin rows (from ``AppConfig.ready``).

    ``local_plugin(name)`` returns the plugin as loaded in this process (or ``None``). Does
    nothing when ``django_celery_beat`` is not installed (then only one-shots work).
    """
    from django.apps import apps
    from django.db.models.signals import post_save

    if not apps.is_installed("django_celery_beat"):
        return
    receiver = functools.partial(_row_saved, local_plugin)
    post_save.connect(
        receiver, sender=Plugin, weak=False, dispatch_uid="course_plugins.scheduling"
    )


def get_scheduler() -> CeleryScheduler:
    """Return the process-wide :class:`CeleryScheduler` (the runtime hands it to its loader)."""
    global _scheduler
    if _scheduler is None:
        _scheduler = CeleryScheduler()
    return _scheduler


def forget_all() -> int:
    """Delete every django-celery-beat row of this app; returns how many periodic tasks.

    For removing the app (``migrate course_plugins zero``): ``PeriodicTask`` rows whose task is a
    ``course_plugins.tasks.*`` task (the plugins' schedules, the app's own periodic tasks), then
    the interval schedules only they used, so beat never sends a task no worker knows. Deleted
    one by one: the delete signal tells a running beat that its schedule changed.
    """
    from django.apps import apps

    if not apps.is_installed("django_celery_beat"):
        return 0
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    tasks = list(PeriodicTask.objects.filter(task__startswith="course_plugins."))
    intervals = {task.interval_id for task in tasks if task.interval_id is not None}
    for task in tasks:
        task.delete()
    IntervalSchedule.objects.filter(pk__in=intervals, periodictask__isnull=True).delete()
    return len(tasks)


def forget_plugin(sender: Any = None, *, name: str, **kwargs: Any) -> None:
    """``runtime.plugin_uninstalled`` receiver: delete the cache markers ``drop_owner`` and the
    one-shots of its activations left for plugin ``name``. Its row is gone, so
    :func:`claim_one_shot` voids every one-shot it made without the marker, after a
    reinstallation too; nothing of it stays in the cache for 7 days.
    """
    try:
        _cache().delete_many([_VOIDED_KEY.format(name), _ACTIVATION_KEY.format(name)])
    except Exception:  # the uninstall is done; a marker left behind only expires later
        logger.warning("Could not delete %s from the cache", _VOIDED_KEY.format(name),
                       exc_info=True)


def after_migrate(sender: Any, plan: Any = None, **kwargs: Any) -> None:
    """``post_migrate`` receiver: after ``migrate course_plugins zero``, leave nothing behind.

    Deletes the app's django-celery-beat rows (:func:`forget_all`), the cross-process stamp and
    the recorded hook runs it wrote in the shared cache.
    """
    unapplied = [
        migration
        for migration, backwards in plan or ()
        if backwards and migration.app_label == "course_plugins" and migration.initial
    ]
    if not unapplied:
        return
    removed = forget_all()
    _cache().delete_many([stamp.STAMP_KEY])
    try:
        control.forget_runs()
    except Exception:
        logger.warning("Could not delete the recorded hook runs from the cache", exc_info=True)
    logger.info(
        "course_plugins removed from the database: %d periodic task(s) deleted", removed
    )
