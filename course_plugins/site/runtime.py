"""The site's plugin runtime: ``Plugin`` rows in the database <-> this process's ``PluginLoader``.

The database holds what the admin wants (``enabled``, ``settings``) and what happened (``status``,
``last_error``); every process of the site (web workers, Celery workers) runs its own loader and
follows the rows. The functions here are THE way to change plugin state — the admin, the REST API,
the management command and the Celery worker call them:

- :func:`activate`, :func:`deactivate`, :func:`reload`, :func:`update_settings` change the row, act
  on the local loader, record the outcome and bump the cross-process stamp (``sync.bump``), so the
  other processes call :func:`apply_db_state` within ``SYNC_INTERVAL`` seconds.
- :func:`discover` scans ``PLUGIN_DIRS`` and upserts rows: a new plugin starts disabled and
  ``inactive``; an upgrade keeps the admin's ``enabled`` choice and the settings; a vanished folder
  marks its row ``missing`` with status ``error`` (never a crash).
- :func:`start` (from ``AppConfig.ready``) touches no database: the first request (or task) runs
  :func:`ensure_started`, which discovers and activates the enabled plugins. A plugin failing to
  start is recorded (status ``error``, message, traceback); the others still start.
- A plugin quarantined by the engine (too many failures in a row) is recorded as ``faulted`` and
  stays off in every process until an admin activates it again.

Per-request cost in steady state is nil: after start-up only ``sync.check`` (a clock comparison)
runs per request; the rows are read again only when another process bumped the stamp.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.signals import request_started, setting_changed
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from course_plugins.conf import SETTING_NAME, plugin_settings
from course_plugins.exceptions import PluginError, PluginNotFound
from course_plugins.models import Plugin as PluginRow
from course_plugins.models import PluginStatus
from course_plugins.rows import fingerprint, missing_message, record, record_failure, upsert

logger = logging.getLogger("course_plugins.runtime")

__all__ = [
    "activate",
    "apply_db_state",
    "deactivate",
    "discover",
    "ensure_started",
    "get_loader",
    "is_started",
    "reload",
    "reset",
    "start",
    "update_settings",
]

_DISPATCH = "course_plugins.runtime"
_ACTIVE = "active"
_FAULTED = "faulted"
_ERROR = "error"

# One lock for everything below: the loader, the per-process bookkeeping, the start flag.
_lock = threading.RLock()
_loader: Any = None
_discovered = False
_started_pid: int | None = None
# What this process last applied per plugin name: (wanted active, version, activated_at). An
# unchanged fingerprint means "nothing to do", so a plugin failing to start is not retried on
# every sync, only when the admin acts again (or the process restarts).
_applied: dict[str, tuple[Any, ...]] = {}
_settings_seen: dict[str, str] = {}
_local = threading.local()
_warned_deferred = False


# --- the loader ------------------------------------------------------------------------------


def _dirs() -> list[str]:
    dirs = plugin_settings.PLUGIN_DIRS
    return [str(dirs)] if isinstance(dirs, (str, os.PathLike)) else [str(d) for d in dirs]


def get_loader() -> Any:
    """Return this process's ``PluginLoader`` over ``PLUGIN_DIRS`` (built on first use).

    Its plugins get a ``PlatformAPI`` backed by the database stores and the configured backends,
    and schedule through Celery. Building it touches no database.
    """
    global _loader
    loader = _loader
    if loader is not None:
        return loader
    with _lock:
        if _loader is None:
            from course_plugins.api.platform_api import Services, default_api_factory
            from course_plugins.core.plugin_loader import PluginLoader
            from course_plugins.scheduling import get_scheduler

            loader = PluginLoader(
                _dirs(),
                api_factory=default_api_factory(Services.django()),
                scheduler=get_scheduler(),
            )
            loader.add_listener(_on_state_change)
            _loader = loader
        return _loader


def _local_plugin(name: str) -> Any:
    try:
        return get_loader().get(name)
    except PluginNotFound:
        return None


@contextmanager
def _busy() -> Iterator[None]:
    # While the runtime itself drives the loader it records outcomes itself; the state listener
    # then only persists what nobody asked for (quarantine, cascades).
    depth = getattr(_local, "busy", 0)
    _local.busy = depth + 1
    try:
        yield
    finally:
        _local.busy = depth


def _bump() -> None:
    from course_plugins import sync

    sync.bump()


# --- rows ------------------------------------------------------------------------------------


def discover() -> list[PluginRow]:
    """Scan ``PLUGIN_DIRS`` and bring the rows up to date; returns every row, by name.

    New plugins get a disabled ``inactive`` row; known ones get their metadata refreshed (version,
    manifest, hooks, events, permissions) and keep ``enabled`` and ``settings``; a plugin with a
    bad ``plugin.yaml`` gets status ``error`` with the reason. A row whose folder vanished is marked
    ``missing`` with status ``error`` (and the plugin is stopped here if it was running).
    """
    global _discovered
    with _lock, _busy():
        loader = get_loader()
        plugins = {p.name: p for p in loader.discover_all()}
        for error in loader.discovery_errors:
            logger.error("Plugin discovery: %s", error)
        rows = {row.name: row for row in PluginRow.objects.all()}
        for name, plugin in plugins.items():
            if not plugin.path.is_dir():  # kept by the loader only because it is running
                continue
            try:
                with transaction.atomic():
                    upsert(rows.get(name), plugin)
            except IntegrityError:  # another process inserted it first
                upsert(PluginRow.objects.get(name=name), plugin)
        for name, row in rows.items():
            plugin = plugins.get(name)
            if plugin is not None and plugin.path.is_dir():
                continue
            if plugin is not None and str(plugin.state) == _ACTIVE:
                loader.deactivate(name)
            if not row.missing or row.status != PluginStatus.ERROR:
                fields = {"missing": True, "status": PluginStatus.ERROR,
                          "last_error": missing_message(name, _dirs()), "last_traceback": ""}
                record(row, None, **fields)
            _note_applied(row)
        _discovered = True
        return list(PluginRow.objects.all())


def _row(name: str) -> PluginRow:
    """The row of ``name`` (discovering once more if it is not there); raises ``PluginNotFound``."""
    name = str(name).partition("@")[0]
    row = PluginRow.objects.filter(name=name).first()
    if row is None:
        discover()
        row = PluginRow.objects.filter(name=name).first()
    if row is None:
        known = ", ".join(PluginRow.objects.values_list("name", flat=True)) or "none"
        raise PluginNotFound(
            name, f"no plugin named {name!r} in PLUGIN_DIRS {_dirs()} (known: {known})"
        )
    return row


def _row_on_disk(name: str) -> PluginRow:
    """:func:`_row`, refusing a plugin whose folder has vanished (``PluginNotFound``)."""
    row = _row(name)
    if row.missing:
        raise PluginNotFound(row.name, missing_message(row.name, _dirs()))
    return row


def _note_applied(row: PluginRow) -> None:
    _applied[row.name] = fingerprint(row)
    _settings_seen[row.name] = json.dumps(row.settings, sort_keys=True, default=str)


# --- the operations --------------------------------------------------------------------------


def activate(name: str, user: Any = None) -> PluginRow:
    """Activate plugin ``name`` (or ``name@version``) here and, through the stamp, everywhere.

    A faulted or failed plugin is read again from disk first (the admin's explicit retry).
    Returns the row (``enabled``, status ``active``). Raises ``PluginNotFound``; when activation
    fails, records status ``error`` with the reason and traceback and raises that ``PluginError``
    (the row's ``enabled`` is left as it was).
    """
    with _lock, _busy():
        ensure_started()
        row = _row_on_disk(name)
        loader = get_loader()
        try:
            plugin = loader.activate(row.name)
        except PluginError as exc:
            record_failure(row, _local_plugin(row.name), exc)
            _note_applied(row)
            raise
        record(
            row,
            plugin,
            enabled=True,
            status=PluginStatus.ACTIVE,
            last_error="",
            last_traceback="",
            activated_at=timezone.now(),
        )
        _note_applied(row)
        _bump()
        who = getattr(user, "get_username", lambda: "")() if user is not None else ""
        logger.info("Plugin %s activated%s", plugin.id, f" by {who}" if who else "")
        return row


def deactivate(name: str) -> PluginRow:
    """Deactivate plugin ``name`` here and everywhere; returns its row (disabled, ``inactive``).

    Active plugins that require it are deactivated too (their rows say why). A faulted plugin
    becomes a plain inactive one. Raises ``PluginNotFound``.
    """
    with _lock, _busy():
        ensure_started()
        row = _row(name)
        loader = get_loader()
        before = {p.name for p in loader.plugins if str(p.state) == _ACTIVE}
        plugin = _local_plugin(row.name)
        if plugin is not None:
            loader.deactivate(row.name)
        after = {p.name for p in loader.plugins if str(p.state) == _ACTIVE}
        for dependent in PluginRow.objects.filter(name__in=before - after - {row.name}):
            record(
                dependent,
                None,
                enabled=False,
                status=PluginStatus.INACTIVE,
                last_error=f"Deactivated because the plugin it requires, {row.name}, was.",
            )
            _note_applied(dependent)
        record(row, None, enabled=False, status=PluginStatus.INACTIVE)
        _note_applied(row)
        _bump()
        logger.info("Plugin %s deactivated", row.plugin_id)
        return row


def reload(name: str) -> PluginRow:
    """Read plugin ``name``'s manifest and code from disk again, keeping settings and storage.

    An active plugin is active again afterwards (in every process); an inactive one stays
    inactive. Returns the row with its new version. Raises ``PluginNotFound``; a failure is
    recorded (status ``error``) and raised as ``PluginError``.
    """
    with _lock, _busy():
        ensure_started()
        row = _row_on_disk(name)
        loader = get_loader()
        try:
            plugin = loader.reload(row.name)
        except PluginError as exc:
            record_failure(row, _local_plugin(row.name), exc)
            _note_applied(row)
            _bump()  # the version on disk may have changed
            raise
        fields: dict[str, Any] = {}
        if str(plugin.state) == _ACTIVE:
            fields = dict(status=PluginStatus.ACTIVE, last_error="", last_traceback="",
                          activated_at=timezone.now())
        elif row.status == PluginStatus.ERROR:
            fields = dict(status=PluginStatus.INACTIVE, last_error="", last_traceback="")
        record(row, plugin, **fields)
        _note_applied(row)
        _bump()
        logger.info("Plugin %s reloaded (%s)", plugin.id, plugin.state)
        return row


def update_settings(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """Validate ``data`` against the plugin's ``settings_schema`` and store it.

    Keys not in ``data`` keep their value; ``None`` reverts a key to its default; a secret sent
    back as the mask keeps its value. Takes effect at once: ``api.config.get`` sees the new values
    here, and an active plugin is restarted (here and, through the stamp, everywhere) so that
    what it read in ``activate`` follows too. Returns every setting's effective value (defaults
    included). Raises ``PluginSettingsError`` (field -> message) or ``PluginNotFound``.
    """
    from course_plugins.api.stores import DjangoConfigStore
    from course_plugins.core.settings_schema import defaults, validate_settings

    with _lock, _busy():
        ensure_started()
        row = _row(name)
        plugin = _local_plugin(row.name)
        if plugin is not None and plugin.manifest is not None:
            schema: Any = plugin.manifest.settings_schema
        else:
            schema = (row.manifest or {}).get("settings_schema") or {}
        values = validate_settings(
            schema, dict(data), partial=True, plugin=row.name, current=row.settings or {}
        )
        running = plugin is not None and str(plugin.state) == _ACTIVE
        with transaction.atomic():
            stored = DjangoConfigStore().update(row.name, values)
            row.settings = stored
            if running:
                record(row, None, activated_at=timezone.now())
            _bump()
        if plugin is not None and plugin.api is not None:
            plugin.api.config.reload()
        if running:
            try:
                get_loader().reload(row.name)
            except PluginError as exc:
                record_failure(row, _local_plugin(row.name), exc)
        _note_applied(row)
        logger.info("Settings of plugin %s changed: %s", row.name, ", ".join(sorted(values)))
        return {**defaults(schema), **stored}


# --- following the database ------------------------------------------------------------------


def _ensure_discovered() -> None:
    if not _discovered or _loader is None:
        discover()


def apply_db_state() -> dict[str, str]:
    """Make this process's loader follow the rows; returns ``{name: what was done}``.

    Enabled (not faulted, not missing) plugins are activated, others deactivated; a plugin whose
    version or activation time changed (an upgrade, a reload, a settings change elsewhere) is
    reloaded; changed settings are re-read. Outcomes are recorded on the rows (without a bump).
    Called by ``sync.check`` when another process changed something; never raises for one plugin.
    In a process whose plugins are not started yet it starts them when ``AUTOLOAD`` is on (an
    idle Celery worker's follower thread), else it does nothing and returns ``{}``.
    """
    if not is_started():
        if not plugin_settings.AUTOLOAD:
            return {}
        with _lock:
            if not is_started():
                return _start()
    return _apply()


def _apply() -> dict[str, str]:
    from course_plugins.core.plugin import dependency_order

    with _lock, _busy():
        _ensure_discovered()
        loader = get_loader()
        rows = {row.name: row for row in PluginRow.objects.all()}
        order = dependency_order({p.name: p for p in loader.plugins})
        done: dict[str, str] = {}
        # Stop first (dependents before what they require), then start in dependency order.
        for plugin in reversed(order):
            row = rows.get(plugin.name)
            if row is not None and not fingerprint(row)[0] and str(plugin.state) == _ACTIVE:
                loader.deactivate(plugin.name)
                done[plugin.name] = "deactivated"
        for plugin in order:
            row = rows.get(plugin.name)
            if row is None:
                continue
            action = _follow(loader, plugin, row)
            if action:
                done[plugin.name] = action
        for name in set(rows) - {p.name for p in order}:
            _note_applied(rows[name])
        if done:
            logger.info("Followed the database: %s", done)
        return done


def _follow(loader: Any, plugin: Any, row: PluginRow) -> str:
    """Bring one plugin in line with its row; returns what was done ('' for nothing)."""
    wanted = fingerprint(row)
    previous = _applied.get(row.name)
    settings_key = json.dumps(row.settings, sort_keys=True, default=str)
    action = ""
    if _settings_seen.get(row.name) not in (None, settings_key) and plugin.api is not None:
        plugin.api.config.reload()
        action = "settings re-read"
    active = str(plugin.state) == _ACTIVE
    if not wanted[0]:
        if active:  # deactivated above unless a dependency cascade re-ordered things
            loader.deactivate(plugin.name)
            action = "deactivated"
        _note_applied(row)
        return action
    if previous == wanted and (active or str(plugin.state) in (_ERROR, _FAULTED)):
        _note_applied(row)
        return action  # nothing changed since this process last acted on it (or tried to)
    try:
        if active and previous is not None:
            loader.reload(plugin.name)
            action = "reloaded"
        elif not active:
            loader.activate(plugin.name)
            action = "activated"
    except PluginError as exc:
        record_failure(row, plugin, exc)
        _note_applied(row)
        return "failed"
    if row.status != PluginStatus.ACTIVE or row.last_error or plugin.version != row.version:
        record(row, plugin, status=PluginStatus.ACTIVE, last_error="", last_traceback="")
    _note_applied(row)
    return action


def _on_state_change(plugin: Any, old: str | None, new: str) -> None:
    """Persist state changes nobody asked for: quarantine (``faulted``) and cascaded failures."""
    if new == _FAULTED:
        fields = {
            "status": PluginStatus.FAULTED,
            "last_error": plugin.error,
            "last_traceback": plugin.traceback,
            "updated_at": timezone.now(),
        }
    elif new == _ERROR and old == _ACTIVE and not getattr(_local, "busy", 0):
        fields = {
            "status": PluginStatus.ERROR,
            "last_error": plugin.error,
            "last_traceback": plugin.traceback,
            "updated_at": timezone.now(),
        }
    else:
        return
    try:
        PluginRow.objects.filter(name=plugin.name).update(**fields)
        _bump()
    except DatabaseError:
        logger.exception("Could not record that plugin %s is %s", plugin.id, new)
    finally:
        if threading.current_thread().name.startswith("course-plugins-listener"):
            # The loader's one-off thread for listeners called from an event loop: its
            # connection would otherwise stay open until garbage collection.
            connection.close()


# --- start-up --------------------------------------------------------------------------------


def _start() -> dict[str, str]:
    """Discover, then apply the rows; marks this process started. Raises ``DatabaseError``."""
    global _started_pid
    from course_plugins import sync

    with _lock:
        sync.prime()  # before reading the rows: a change made meanwhile is followed later
        discover()
        done = _apply()
        _started_pid = os.getpid()
        request_started.disconnect(dispatch_uid=f"{_DISPATCH}.request_started")
        return done


def ensure_started() -> bool:
    """Discover and activate the enabled plugins, once per process; returns True once started.

    Returns False (and tries again next time) when the database is not ready, e.g. before
    ``migrate``. Individual plugin failures are recorded on their rows, never raised.
    """
    if is_started():
        return True
    with _lock:
        if is_started():
            return True
        try:
            _start()
        except DatabaseError as exc:
            logger.warning("Plugins not started yet (database not ready: %s)", exc)
            return False
        return True


def is_started() -> bool:
    """Return True when this process has started its plugins."""
    return _started_pid == os.getpid()


def _on_request_started(**kwargs: Any) -> None:
    global _warned_deferred
    try:
        ensure_started()
    except Exception:  # a request must never fail because plugins could not start
        if not _warned_deferred:
            _warned_deferred = True
            logger.exception("Could not start the plugins; retrying at the next request")


def start() -> list[PluginRow] | None:
    """Start this process's plugins: from ``AppConfig.ready()`` later, otherwise now.

    Called while the app registry is still loading (``AppConfig.ready``) it touches no database
    (``migrate`` runs before any table exists): with ``AUTOLOAD`` on, the first request or Celery
    task of the process runs :func:`ensure_started`; returns None. Called afterwards (a script, a
    test), it discovers and applies the rows now, and returns every row. Raises ``DatabaseError``
    then if the tables do not exist.
    """
    from django.apps import apps

    setting_changed.connect(_settings_changed, dispatch_uid=f"{_DISPATCH}.settings")
    if apps.ready:
        _start()
        return list(PluginRow.objects.all())
    if plugin_settings.AUTOLOAD:
        _defer()
    return None


def _defer() -> None:
    request_started.connect(_on_request_started, dispatch_uid=f"{_DISPATCH}.request_started")
    try:
        from celery.signals import task_prerun
    except ImportError:  # pragma: no cover - Celery is a dependency, but the app works without
        return
    # Not worker_process_init: Celery kills a child whose init takes over 4 s, and activating
    # plugins may. Idle workers start through sync's follower thread (apply_db_state).
    task_prerun.connect(_on_request_started, dispatch_uid=f"{_DISPATCH}.task")


def reset() -> None:
    """Deactivate every plugin of this process and forget the loader and bookkeeping.

    For tests and for a change of ``PLUGIN_DIRS``; the next use builds a new loader. Rows are
    not touched.
    """
    global _loader, _discovered, _started_pid
    with _lock:
        loader, _loader = _loader, None
        _discovered, _started_pid = False, None
        _applied.clear()
        _settings_seen.clear()
        if loader is not None:
            loader.remove_listener(_on_state_change)
            loader.close()
        if plugin_settings.AUTOLOAD:
            _defer()


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    loader = _loader
    if setting == SETTING_NAME and loader is not None and [str(d) for d in loader.dirs] != _dirs():
        reset()
