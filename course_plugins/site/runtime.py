"""The site's plugin runtime: ``Plugin`` rows in the database <-> this process's ``PluginLoader``.

The database holds what the admin wants (``enabled``, ``settings``) and what happened (``status``,
``last_error``); every process of the site (web workers, Celery workers) runs its own loader and
follows the rows. A :class:`Runtime` holds one process's loader and bookkeeping; the module-level
functions delegate to the default instance (:data:`default`) and are THE way to change plugin
state — the admin, the REST API, the management command and the Celery worker call them:

- :func:`activate`, :func:`deactivate`, :func:`reload`, :func:`update_settings` change the row, act
  on the local loader, record the outcome and bump the cross-process stamp (``stamp.bump``), so
  the other processes follow within ``SYNC_INTERVAL`` seconds.
- :func:`discover` scans ``PLUGIN_DIRS`` and upserts rows: a new plugin starts disabled and
  ``inactive``; an upgrade keeps the admin's ``enabled`` choice and the settings; a vanished folder
  marks its row ``missing`` with status ``error`` (never a crash).
- :func:`start` (from ``AppConfig.ready``) touches no database: the first request (or task) runs
  :func:`ensure_started`, which discovers and activates the enabled plugins. A plugin failing to
  start is recorded (status ``error``, message, traceback); the others still start.
- :func:`check` (per request through ``middleware.SyncMiddleware``, per Celery task, and from a
  :func:`start_follower` thread in idle workers) reads the stamp at most every ``SYNC_INTERVAL``
  seconds and, when another process bumped it, runs :func:`apply_db_state` (``site.follower``).
- A plugin quarantined by the engine (too many failures in a row) is recorded as ``faulted`` and
  stays off in every process until an admin activates it again.

Per-request cost in steady state is nil: after start-up only :func:`check` (a clock comparison)
runs per request; the rows are read again only when another process bumped the stamp.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from django.apps import apps
from django.core.signals import request_started, setting_changed
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.dispatch import Signal
from django.utils import timezone

from course_plugins.api.platform_api import Services, default_api_factory
from course_plugins.api.stores import DjangoConfigStore
from course_plugins.conf import SETTING_NAME, plugin_settings, trusted_by_setting
from course_plugins.core.plugin import Plugin as LoadedPlugin
from course_plugins.core.plugin import PluginState, dependency_order
from course_plugins.core.plugin_loader import PluginLoader
from course_plugins.core.scheduler import Scheduler
from course_plugins.core.settings_schema import defaults, mask_settings, validate_settings
from course_plugins.exceptions import PluginError, PluginNotFound
from course_plugins.models import Plugin as PluginRow
from course_plugins.models import PluginMode, PluginStatus, PluginStorage
from course_plugins.site import autostart, control, organizations, sandbox_layers, stamp
from course_plugins.site.follower import StampFollower
from course_plugins.site.scheduling import get_scheduler

logger = logging.getLogger("course_plugins.runtime")

_DEFAULT_UID = "course_plugins.runtime"

plugin_uninstalled = Signal()
"""Sent by :meth:`Runtime.uninstall` once a plugin's row is gone, with ``name``: drop what you
keep for that plugin by name (receivers run in the process that uninstalled it)."""

__all__ = [
    "Runtime",
    "activate",
    "activate_for",
    "apply_db_state",
    "check",
    "deactivate",
    "deactivate_for",
    "default",
    "discover",
    "discover_if_new",
    "due",
    "ensure_started",
    "follow_site_for",
    "get_loader",
    "is_started",
    "local_plugin",
    "organization_settings",
    "prime",
    "reload",
    "reset",
    "start",
    "start_follower",
    "stop_follower",
    "uninstall",
    "update_organization_settings",
    "update_settings",
    "plugin_uninstalled",
]



class Runtime:
    """One process's plugin runtime: its loader, what it last applied, the stamp it followed.

    ``dirs`` defaults to ``COURSE_PLUGINS["PLUGIN_DIRS"]`` (read when the loader is built);
    ``scheduler`` to the process-wide Celery scheduler. Tests build fresh ones; the site uses
    :data:`default`. One re-entrant lock guards the loader, the bookkeeping and the start flag.
    """

    def __init__(
        self,
        *,
        dirs: Sequence[str] | None = None,
        scheduler: Scheduler | None = None,
        services: Services | None = None,
        dispatch_uid: str | None = None,
    ) -> None:
        self._fixed_dirs = None if dirs is None else [str(d) for d in dirs]
        self._scheduler = scheduler
        self._services = services
        self._uid = dispatch_uid or f"course_plugins.runtime.{id(self)}"
        self._lock = threading.RLock()
        self._loader: PluginLoader | None = None
        self._discovered = False
        self._started_pid: int | None = None
        # What this process last applied per plugin name: (wanted active, version, activated_at).
        # An unchanged fingerprint means "nothing to do", so a plugin failing to start is not
        # retried on every look at the stamp, only when the admin acts again (or a restart).
        self._applied: dict[str, tuple[Any, ...]] = {}
        self._settings_seen: dict[str, str] = {}
        self._trusted_rows: frozenset[str] = frozenset()  # rows marked trusted, as last read
        self._local = threading.local()
        self._warned_deferred = False
        self._follows_signals = False  # start() connected it to Django's signals
        # Plugin name -> row fields of a state change (quarantine) the database could not take.
        self._unrecorded: dict[str, dict[str, Any]] = {}
        self.follower = StampFollower(self.apply_db_state, self._every_look, self._tables_gone)
        """Reads the cross-process stamp; ``check()`` runs :meth:`apply_db_state` on a change."""

    def __repr__(self) -> str:
        return f"<Runtime {self._uid} started={self.is_started()}>"

    # -- the loader ------------------------------------------------------------------------------

    def dirs(self) -> list[str]:
        """The plugin folders this runtime loads from."""
        if self._fixed_dirs is not None:
            return list(self._fixed_dirs)
        dirs = plugin_settings.PLUGIN_DIRS
        return [str(dirs)] if isinstance(dirs, (str, os.PathLike)) else [str(d) for d in dirs]

    @property
    def loader(self) -> PluginLoader:
        """This process's ``PluginLoader`` over :meth:`dirs` (built on first use).

        Its plugins get a ``PlatformAPI`` backed by the database stores and the configured
        backends, and schedule through Celery. Building it touches no database.
        """
        loader = self._loader
        if loader is not None:
            return loader
        with self._lock:
            if self._loader is None:
                services = self._services or Services.django()
                if services.shadow is None:
                    services.shadow = control.is_shadow  # shadow mode (site/control.py)
                loader = PluginLoader(
                    self.dirs(),
                    api_factory=default_api_factory(services),
                    scheduler=self._scheduler if self._scheduler is not None else get_scheduler(),
                    trusted=self.is_trusted,
                )
                loader.add_listener(self._on_state_change)
                self._loader = loader
            return self._loader

    def is_trusted(self, name: str) -> bool:
        """Whether plugin ``name`` runs in this process (``TRUSTED_PLUGINS`` or its row's
        ``trusted``) rather than isolated in a worker (the default)."""
        return trusted_by_setting(name) or name in self._trusted_rows

    def local_plugin(self, name: str) -> LoadedPlugin | None:
        """Return the plugin ``name`` as this process's loader knows it, or ``None``."""
        try:
            return self.loader.get(name)
        except PluginNotFound:
            return None

    @contextmanager
    def _busy(self) -> Iterator[None]:
        # While the runtime itself drives the loader it records outcomes itself; the state
        # listener then only persists what nobody asked for (quarantine, cascades).
        depth = getattr(self._local, "busy", 0)
        self._local.busy = depth + 1
        try:
            yield
        finally:
            self._local.busy = depth

    # -- rows ------------------------------------------------------------------------------------

    def discover(self) -> list[PluginRow]:
        """Scan the plugin folders and bring the rows up to date; returns every row, by name.

        New plugins get a disabled ``inactive`` row; known ones get their metadata refreshed
        (version, manifest, hooks, events, permissions) and keep ``enabled`` and ``settings``; a
        plugin with a bad ``plugin.yaml`` gets status ``error`` with the reason. A row whose
        folder vanished is marked ``missing`` with status ``error`` (and the plugin is stopped
        here if it was running).
        """
        with self._lock, self._busy():
            loader = self.loader
            plugins = {p.name: p for p in loader.discover_all()}
            for error in loader.discovery_errors:
                logger.error("Plugin discovery: %s", error)
            rows = {row.name: row for row in PluginRow.objects.all()}
            for name, plugin in plugins.items():
                if not plugin.path.is_dir():  # kept by the loader only because it is running
                    continue
                try:
                    with transaction.atomic():
                        PluginRow.objects.upsert(plugin, rows.get(name))
                except IntegrityError:  # another process inserted it first
                    PluginRow.objects.upsert(plugin, PluginRow.objects.get(name=name))
            for name, row in rows.items():
                plugin = plugins.get(name)
                if plugin is not None and plugin.path.is_dir():
                    continue
                if plugin is not None and plugin.state == PluginState.ACTIVE:
                    loader.deactivate(name)
                if not row.missing or row.status != PluginStatus.ERROR:
                    row.record(missing=True, status=PluginStatus.ERROR, last_traceback="",
                               last_error=row.missing_message(self.dirs()))
                self._note_applied(row)
            self._discovered = True
            return list(PluginRow.objects.all())

    def discover_if_new(self) -> bool:
        """Discover when a folder of ``PLUGIN_DIRS`` holds a plugin that no row lists (one
        added while this process runs, or a missing one that came back); returns whether it did.

        For the pages that list plugins (admin, REST API): a directory listing and one query.
        """
        folders = {str(folder) for folder in self.loader.plugin_folders()}
        known = set(PluginRow.objects.filter(missing=False).values_list("path", flat=True))
        if folders <= known:
            return False
        self.discover()
        return True

    def _row(self, name: str) -> PluginRow:
        """The row of ``name`` (discovering once more if it is not there); raises
        ``PluginNotFound``."""
        name = str(name).partition("@")[0]
        row = PluginRow.objects.filter(name=name).first()
        if row is None:
            self.discover()
            row = PluginRow.objects.filter(name=name).first()
        if row is None:
            known = ", ".join(PluginRow.objects.values_list("name", flat=True)) or "none"
            raise PluginNotFound(
                name, f"no plugin named {name!r} in PLUGIN_DIRS {self.dirs()} (known: {known})"
            )
        return row

    def _row_on_disk(self, name: str) -> PluginRow:
        """:meth:`_row`, refusing a plugin whose folder has vanished (``PluginNotFound``)."""
        row = self._row(name)
        if not row.missing and self.local_plugin(row.name) is None:
            self.discover()  # its folder came after this process's discovery (found elsewhere)
            row.refresh_from_db()
        if row.missing:
            raise PluginNotFound(row.name, row.missing_message(self.dirs()))
        return row

    @staticmethod
    def _wanted(row: PluginRow) -> tuple[Any, ...]:
        """``row.fingerprint``, also wanting a plugin only some organizations activated."""
        wanted = row.fingerprint
        if (
            not wanted[0]
            and row.status != PluginStatus.FAULTED
            and not row.missing
            and organizations.wanted_by_organizations(row.name)
        ):
            return (True, *wanted[1:])
        return wanted

    def _note_applied(self, row: PluginRow) -> None:
        self._applied[row.name] = self._wanted(row)
        self._settings_seen[row.name] = json.dumps(row.settings, sort_keys=True, default=str)

    # -- the operations --------------------------------------------------------------------------

    def activate(self, name: str, user: Any = None, mode: str = PluginMode.LIVE) -> PluginRow:
        """Activate plugin ``name`` (or ``name@version``) here and, through the stamp, everywhere.

        ``mode``: ``"live"``, or ``"shadow"`` to run its hook functions on copies without letting
        them act (see ``site/control.py``); switching an active plugin's mode restarts it. A
        faulted or failed plugin is read again from disk first (the admin's explicit retry).
        Returns the row (``enabled``, status ``active``). Raises ``PluginNotFound``; when
        activation fails, records status ``error`` with the reason and traceback and raises that
        ``PluginError`` (the row's ``enabled`` and mode are left as they were).
        """
        with self._lock, self._busy():
            self.ensure_started()
            row = self._row_on_disk(name)
            modes = control.mode_fields(row, mode)
            control.set_mode(row.name, **modes)  # what its Platform API registers as
            local = self.local_plugin(row.name)
            try:
                if modes["mode"] != row.mode and local and local.state == PluginState.ACTIVE:
                    plugin = self.loader.reload(row.name)
                else:
                    plugin = self.loader.activate(row.name)
            except PluginError as exc:
                control.set_mode(row.name, mode=row.mode, shadow_since=row.shadow_since)
                row.record_failure(self.local_plugin(row.name), exc)
                self._note_applied(row)
                raise
            row.record(plugin, enabled=True, status=PluginStatus.ACTIVE, last_error="",
                       last_traceback="", activated_at=timezone.now(), **modes)
            self._note_applied(row)
            control.follow()
            organizations.load()
            stamp.bump()
            who = getattr(user, "get_username", lambda: "")() if user is not None else ""
            logger.info("Plugin %s activated%s", plugin.id, f" by {who}" if who else "")
            return row

    def deactivate(self, name: str, *, organizations_too: bool = False) -> PluginRow:
        """Deactivate plugin ``name`` here and everywhere; returns its row (disabled,
        ``inactive``).

        Active plugins that require it are deactivated too (their rows say why). A faulted plugin
        becomes a plain inactive one. It keeps running for the organizations that switched it on
        unless ``organizations_too`` (the uninstall). Raises ``PluginNotFound``.
        """
        with self._lock, self._busy():
            # Not ensure_started(): starting would run the plugin's activate() (and its
            # schedules) only to stop it again. A process that has not started its plugins
            # (manage.py plugins deactivate) changes the rows; the others follow the stamp.
            row = self._row(name)
            if self.is_started():
                loader = self.loader
                before = _active_names(loader)
                if self.local_plugin(row.name) is not None:
                    loader.deactivate(row.name)
                stopped = before - _active_names(loader) - {row.name}
            else:
                stopped = _enabled_dependents(row.name)
            for dependent in PluginRow.objects.filter(name__in=stopped):
                dependent.record(
                    enabled=False,
                    status=PluginStatus.INACTIVE,
                    last_error=f"Deactivated because the plugin it requires, {row.name}, was.",
                )
                self._note_applied(dependent)
            row.record(enabled=False, status=PluginStatus.INACTIVE)
            organizations.load()
            self._note_applied(row)
            stamp.bump()
            logger.info("Plugin %s deactivated", row.plugin_id)
            if not organizations_too and organizations.wanted_by_organizations(row.name):
                self._apply()  # still runs for the organizations that switched it on
                row.refresh_from_db()
            return row

    def uninstall(self, name: str) -> dict[str, Any]:
        """Remove plugin ``name`` from the site for good, with its data; returns what was removed.

        In order: deactivate it (here and, through the stamp, everywhere; its ``activate()``
        does not run), call its optional ``uninstall(api)`` (skipped when its folder is gone),
        delete its schedules (django-celery-beat rows, pending one-shots), its storage (every
        organization's), its row (settings, per-organization rows) and bump the stamp; then
        :data:`plugin_uninstalled` is sent so other parts drop what they keep by plugin name.
        The security audit log keeps its entries. The folder stays: delete it, or the next
        discovery lists the plugin again as new. Raises ``PluginNotFound``, or the
        ``PluginError`` of a failing ``uninstall(api)`` (nothing is deleted then).
        """
        with self._lock, self._busy():
            row = self._row(name)
            if row.enabled or row.status == PluginStatus.ACTIVE:
                self.deactivate(row.name, organizations_too=True)
            called = False
            if not row.missing and row.path and os.path.isdir(row.path):
                self.loader.discover_all()
                if self.local_plugin(row.name) is not None:
                    called = self.loader.run_uninstall(row.name)
                    self.loader.unload(row.name)
            scheduler = self._scheduler if self._scheduler is not None else get_scheduler()
            drop = getattr(scheduler, "drop_owner", scheduler.cancel_owner)
            schedules = drop(row.plugin_id)
            with transaction.atomic():
                storage, _ = PluginStorage.objects.filter(plugin=row.name).delete()
                row.delete()  # and its organizations' rows
                stamp.bump()
            organizations.load()
            self._applied.pop(row.name, None)
            self._settings_seen.pop(row.name, None)
            plugin_uninstalled.send(sender=Runtime, name=row.name)
            logger.info("Plugin %s uninstalled", row.plugin_id)
            return {
                "name": row.name,
                "uninstall_called": called,
                "schedules": schedules,
                "storage_keys": storage,
                "folder": row.path,
            }

    def reload(self, name: str) -> PluginRow:
        """Read plugin ``name``'s manifest and code from disk again, keeping settings and storage.

        An active plugin is active again afterwards (in every process); an inactive one stays
        inactive. Returns the row with its new version. Raises ``PluginNotFound``; a failure is
        recorded (status ``error``) and raised as ``PluginError``.
        """
        with self._lock, self._busy():
            self.ensure_started()
            row = self._row_on_disk(name)
            try:
                plugin = self.loader.reload(row.name)
            except PluginError as exc:
                row.record_failure(self.local_plugin(row.name), exc)
                self._note_applied(row)
                stamp.bump()  # the version on disk may have changed
                raise
            fields: dict[str, Any] = {}
            if plugin.state == PluginState.ACTIVE:
                fields = dict(status=PluginStatus.ACTIVE, last_error="", last_traceback="",
                              activated_at=timezone.now())
            elif row.status == PluginStatus.ERROR:
                fields = dict(status=PluginStatus.INACTIVE, last_error="", last_traceback="")
            row.record(plugin, **fields)
            self._note_applied(row)
            control.follow()
            stamp.bump()
            logger.info("Plugin %s reloaded (%s)", plugin.id, plugin.state)
            return row

    def set_trusted(self, name: str, trusted: bool, user: Any = None) -> PluginRow:
        """Mark plugin ``name`` trusted (its code runs in the site's processes) or not (isolated
        in a worker, the default), here and, through the stamp, everywhere.

        An active plugin whose mode changes is reloaded in the new mode (settings and storage
        kept). Returns the row. Raises ``PluginNotFound``; a failed reload is recorded on the row
        (status ``error``) and raised as ``PluginError``.
        """
        with self._lock, self._busy():
            self.ensure_started()
            row = self._row(name)
            row.trusted = bool(trusted)
            row.save(update_fields=["trusted", "updated_at"])
            names = set(self._trusted_rows)
            (names.add if row.trusted else names.discard)(row.name)
            self._trusted_rows = frozenset(names)
            plugin = self.local_plugin(row.name)
            try:
                if (plugin is not None and plugin.state == PluginState.ACTIVE
                        and plugin.trusted != self.is_trusted(row.name)):
                    self.loader.reload(row.name)
            except PluginError as exc:
                row.record_failure(self.local_plugin(row.name), exc)
                raise
            finally:
                self._note_applied(row)
                stamp.bump()
            who = getattr(user, "get_username", lambda: "")() if user is not None else ""
            logger.warning("Plugin %s marked %s%s", row.plugin_id,
                           "trusted (runs in the site's processes)" if row.trusted else "isolated",
                           f" by {who}" if who else "")
            return row

    def update_settings(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        """Validate ``data`` against the plugin's ``settings_schema`` and store it.

        Keys not in ``data`` keep their value; ``None`` reverts a key to its default; a secret
        sent back as the mask keeps its value. Takes effect at once: ``api.config.get`` sees the
        new values here, and an active plugin is restarted (here and, through the stamp,
        everywhere) so that what it read in ``activate`` follows too. Returns every setting's
        effective value (defaults included). Raises ``PluginSettingsError`` (field -> message)
        or ``PluginNotFound``.
        """
        with self._lock, self._busy():
            self.ensure_started()
            row = self._row(name)
            plugin = self.local_plugin(row.name)
            if plugin is not None and plugin.manifest is not None:
                schema: Any = plugin.manifest.settings_schema
            else:
                schema = (row.manifest or {}).get("settings_schema") or {}
            values = validate_settings(
                schema, dict(data), partial=True, plugin=row.name, current=row.settings or {}
            )
            running = plugin is not None and plugin.state == PluginState.ACTIVE
            with transaction.atomic():
                stored = DjangoConfigStore().update(row.name, values)
                row.settings = stored
                if running:
                    row.record(activated_at=timezone.now())
                stamp.bump()
            if plugin is not None and plugin.api is not None:
                plugin.api.config.reload()
            if running:
                try:
                    self.loader.reload(row.name)
                except PluginError as exc:
                    row.record_failure(self.local_plugin(row.name), exc)
            self._note_applied(row)
            control.follow()  # secrets to mask in recorded runs
            logger.info("Settings of plugin %s changed: %s", row.name, ", ".join(sorted(values)))
            return {**defaults(schema), **stored}

    # -- per organization ------------------------------------------------------------------------

    def _set_for(self, org: Any, name: str, enabled: bool | None) -> PluginRow:
        with self._lock, self._busy():
            self.ensure_started()
            row = self._row_on_disk(name) if enabled else self._row(name)
            organizations.set_enabled(org, row.name, enabled)
            stamp.bump()
            self._apply()  # this process follows now: starts or stops the plugin, new scopes
            row.refresh_from_db()
            return row

    def activate_for(self, org: Any, name: str, user: Any = None) -> PluginRow:
        """Activate plugin ``name`` for organization ``org`` (a primary key), here and everywhere.

        Works whether or not the site activated the plugin (an opt-in, or the end of an
        opt-out). Returns the plugin's row. Raises ``PluginNotFound``, ``OrganizationNotFound``,
        or a ``PluginError`` when the plugin could not start in this process (recorded on the
        row).
        """
        row = self._set_for(org, name, True)
        plugin = self.local_plugin(row.name)
        if plugin is None or plugin.state != PluginState.ACTIVE:
            raise PluginError(row.name, row.last_error or f"{row.name} is not running")
        who = getattr(user, "get_username", lambda: "")() if user is not None else ""
        logger.info(
            "Plugin %s activated for organization %s%s", row.name, org, f" by {who}" if who else ""
        )
        return row

    def deactivate_for(self, org: Any, name: str) -> PluginRow:
        """Deactivate plugin ``name`` for organization ``org`` only; returns its row.

        Raises ``PluginNotFound`` / ``OrganizationNotFound``.
        """
        row = self._set_for(org, name, False)
        logger.info("Plugin %s deactivated for organization %s", row.name, org)
        return row

    def follow_site_for(self, org: Any, name: str) -> PluginRow:
        """Make organization ``org`` follow the site's activation of plugin ``name`` again (its
        own settings stay); returns the plugin's row. Raises ``PluginNotFound`` /
        ``OrganizationNotFound``."""
        row = self._set_for(org, name, None)
        logger.info("Plugin %s follows the site for organization %s", row.name, org)
        return row

    def _schema(self, row: PluginRow) -> Any:
        plugin = self.local_plugin(row.name)
        if plugin is not None and plugin.manifest is not None:
            return plugin.manifest.settings_schema
        return (row.manifest or {}).get("settings_schema") or {}

    def organization_settings(
        self, org: Any, name: str, *, masked: bool = False
    ) -> dict[str, Any]:
        """The settings of plugin ``name`` in effect for organization ``org``: its own over the
        site's over the schema's defaults (secrets masked when ``masked``). Raises
        ``PluginNotFound``."""
        row = self._row(name)
        schema = self._schema(row)
        values = {
            **defaults(schema),
            **(row.settings or {}),
            **organizations.settings_of(org, row.name),
        }
        return mask_settings(schema, values) if masked else values

    def update_organization_settings(
        self, org: Any, name: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Validate ``data`` against the plugin's ``settings_schema`` and store it as
        organization ``org``'s own settings, key by key (``None`` reverts a key to the site's).

        Takes effect at once here (``api.config`` in that organization's work) and, through the
        stamp, everywhere. Returns the settings in effect for the organization. Raises
        ``PluginSettingsError`` (field -> message), ``PluginNotFound`` or
        ``OrganizationNotFound``.
        """
        with self._lock, self._busy():
            self.ensure_started()
            organizations.get_organization(org)
            row = self._row(name)
            own = organizations.settings_of(org, row.name)
            values = validate_settings(
                self._schema(row), dict(data), partial=True, plugin=row.name, current=own
            )
            with transaction.atomic():
                organizations.store_settings(org, row.name, values)
                stamp.bump()
            organizations.load()
            logger.info(
                "Settings of plugin %s changed for organization %s: %s",
                row.name, org, ", ".join(sorted(values)),
            )
            return self.organization_settings(org, row.name)

    # -- following the database ------------------------------------------------------------------

    def apply_db_state(self) -> dict[str, str]:
        """Make this process's loader follow the rows; returns ``{name: what was done}``.

        Enabled (not faulted, not missing) plugins are activated, others deactivated; a plugin
        whose version or activation time changed (an upgrade, a reload, a settings change
        elsewhere) is reloaded; changed settings are re-read. Outcomes are recorded on the rows
        (without a bump). Called by the follower when another process changed something; never
        raises for one plugin. In a process whose plugins are not started yet it starts them when
        ``AUTOLOAD`` is on (an idle Celery worker's follower thread), else it does nothing and
        returns ``{}``.
        """
        if not self.is_started():
            if not plugin_settings.AUTOLOAD:
                return {}
            with self._lock:
                if not self.is_started():
                    return self._start()
        return self._apply()

    def _apply(self) -> dict[str, str]:
        with self._lock, self._busy():
            if not self._discovered or self._loader is None:
                self.discover()
            loader = self.loader
            rows = {row.name: row for row in PluginRow.objects.all()}
            known = {p.name for p in loader.plugins}
            if any(not row.missing and name not in known for name, row in rows.items()):
                # Another process found a plugin folder added after this one's discovery.
                self.discover()
                rows = {row.name: row for row in PluginRow.objects.all()}
            control.follow_modes(list(rows.values()))  # before plugins (re)register
            organizations.load(rows.values())
            self._trusted_rows = frozenset(name for name, row in rows.items() if row.trusted)
            order = dependency_order({p.name: p for p in loader.plugins})
            done: dict[str, str] = {}
            # Stop first (dependents before what they require), then start in dependency order.
            for plugin in reversed(order):
                row = rows.get(plugin.name)
                wanted = row is not None and self._wanted(row)[0]
                if row is not None and not wanted and plugin.state == PluginState.ACTIVE:
                    loader.deactivate(plugin.name)
                    done[plugin.name] = "deactivated"
            for plugin in order:
                row = rows.get(plugin.name)
                if row is None:  # uninstalled in another process: stop and forget it here
                    if plugin.state == PluginState.ACTIVE or plugin.module is not None:
                        loader.unload(plugin.name)
                        done[plugin.name] = "uninstalled"
                    continue
                action = self._follow(loader, plugin, row)
                if action:
                    done[plugin.name] = action
            for name in set(rows) - {p.name for p in order}:
                self._note_applied(rows[name])
            control.follow(list(rows.values()))  # overrides, secrets, the run recorder
            if done:
                logger.info("Followed the database: %s", done)
            return done

    def _follow(self, loader: PluginLoader, plugin: LoadedPlugin, row: PluginRow) -> str:
        """Bring one plugin in line with its row; returns what was done ('' for nothing)."""
        wanted = self._wanted(row)
        previous = self._applied.get(row.name)
        settings_key = json.dumps(row.settings, sort_keys=True, default=str)
        action = ""
        if self._settings_seen.get(row.name) not in (None, settings_key) and plugin.api is not None:
            plugin.api.config.reload()
            action = "settings re-read"
        active = plugin.state == PluginState.ACTIVE
        if not wanted[0]:
            if active:  # deactivated above unless a dependency cascade re-ordered things
                loader.deactivate(plugin.name)
                action = "deactivated"
            self._note_applied(row)
            return action
        if previous == wanted and (
            active or plugin.state in (PluginState.ERROR, PluginState.FAULTED)
        ):
            self._note_applied(row)
            return action  # nothing changed since this process last acted on it (or tried to)
        try:
            if active and previous is not None:
                loader.reload(plugin.name)
                action = "reloaded"
            elif not active:
                loader.activate(plugin.name)
                action = "activated"
        except PluginError as exc:
            row.record_failure(plugin, exc)
            self._note_applied(row)
            return "failed"
        if row.status != PluginStatus.ACTIVE or row.last_error or plugin.version != row.version:
            row.record(plugin, status=PluginStatus.ACTIVE, last_error="", last_traceback="")
        self._note_applied(row)
        return action

    def _on_state_change(self, plugin: LoadedPlugin, old: str | None, new: str) -> None:
        """Persist state changes nobody asked for: quarantine (``faulted``) and cascaded
        failures."""
        if new == PluginState.FAULTED or (
            new == PluginState.ERROR
            and old == PluginState.ACTIVE
            and not getattr(self._local, "busy", 0)
        ):
            status = PluginStatus.FAULTED if new == PluginState.FAULTED else PluginStatus.ERROR
        else:
            return
        fields = {
            "status": status,
            "last_error": plugin.error,
            "last_traceback": plugin.traceback,
            "updated_at": timezone.now(),
        }
        try:
            PluginRow.objects.filter(name=plugin.name).update(**fields)
            stamp.bump()
            self._unrecorded.pop(plugin.name, None)
        except DatabaseError as exc:
            # The database is down: this process already stopped the plugin. Record it as soon
            # as the database is back (retry_unrecorded, at every look at the stamp), so every
            # other process follows within the sync window instead of running it on.
            self._unrecorded[plugin.name] = fields
            logger.warning(
                "Could not record that plugin %s is %s (%s: %s); retried at the next sync look",
                plugin.id, new, type(exc).__name__, exc,
            )
        finally:
            if threading.current_thread().name.startswith("course-plugins-listener"):
                # The loader's one-off thread for listeners called from an event loop: its
                # connection would otherwise stay open until garbage collection.
                connection.close()

    def retry_unrecorded(self) -> int:
        """Write the state changes a database outage kept from being recorded; return how many.

        Called at every look at the stamp, before it is read: this process's quarantine reaches
        the database (and, through the stamp, every other process) as soon as the database is
        back. Stops at the first database error (still down).
        """
        done = 0
        for name, fields in list(self._unrecorded.items()):
            try:
                PluginRow.objects.filter(name=name).update(**fields)
                stamp.bump()
            except DatabaseError as exc:
                logger.warning("Still cannot record the state of plugin %s: %s", name, exc)
                break
            self._unrecorded.pop(name, None)
            done += 1
            logger.warning(
                "Recorded plugin %s as %s now that the database is back", name, fields["status"]
            )
        return done

    # -- start-up --------------------------------------------------------------------------------

    def _every_look(self) -> None:
        # Record first what a database outage kept from being recorded (a quarantine), so that
        # the stamp it bumps is the one every process then follows.
        if self._unrecorded:
            self.retry_unrecorded()
        self.stop_vanished()

    def _tables_gone(self) -> None:
        """``migrate course_plugins zero`` ran while this process was up: no row enables any
        plugin any more, so the plugins running here stop (no row is written)."""
        with self._lock, self._busy():
            if self._loader is not None:
                self._loader.deactivate_all()

    def stop_vanished(self) -> list[str]:
        """Stop the plugins running here whose folder is gone; returns their names.

        Called at each look at the stamp (so within ``SYNC_INTERVAL`` in every process, not only
        in new ones): a ``stat`` per active plugin, and :meth:`discover` (which stops them and
        marks their rows missing) only when one vanished.
        """
        loader = self._loader
        if loader is None or not self.is_started():
            return []
        gone = [
            p.name for p in loader.plugins
            if p.state == PluginState.ACTIVE and not p.path.is_dir()
        ]
        if gone:
            logger.warning("Plugin folder(s) vanished, stopping: %s", ", ".join(gone))
            self.discover()
        return gone

    def _start(self) -> dict[str, str]:
        """Discover, then apply the rows; marks this process started. Raises
        ``DatabaseError``."""
        with self._lock:
            if getattr(self._local, "starting", False):
                # A plugin's activate() reached a start trigger (a hook lookup through the armed
                # engine, a model hook): this very start-up covers it; never start twice.
                return {}
            if self._uid == _DEFAULT_UID:
                autostart.disarm()  # whoever triggered it, this process is starting now
            self._local.starting = True
            try:
                self.follower.prime()  # before reading the rows: a change meanwhile is followed
                self.discover()
                done = self._apply()
            finally:
                self._local.starting = False
            self._started_pid = os.getpid()
            request_started.disconnect(dispatch_uid=f"{self._uid}.request_started")
            return done

    def ensure_started(self) -> bool:
        """Discover and activate the enabled plugins, once per process; returns True once started.

        Returns False (and tries again next time) when the database is not ready, e.g. before
        ``migrate``. Individual plugin failures are recorded on their rows, never raised.
        """
        if self.is_started():
            return True
        with self._lock:
            if self.is_started():
                return True
            try:
                # Inside the caller's transaction (the first save in a shell's atomic block, a
                # data migration), a savepoint keeps a failure from breaking that transaction.
                with transaction.atomic() if connection.in_atomic_block else nullcontext():
                    self._start()
            except DatabaseError as exc:
                logger.warning("Plugins not started yet (database not ready: %s)", exc)
                return False
            return True

    def is_started(self) -> bool:
        """Return True when this process has started its plugins."""
        return self._started_pid == os.getpid()

    def _on_request_started(self, **kwargs: Any) -> None:
        try:
            if not self.is_started() and self.ensure_started() and self._uid == _DEFAULT_UID:
                # A server process (web or Celery worker) just started its plugins: say once how
                # confined its isolated ones are. A one-off command stays quiet about it.
                sandbox_layers.report_once()
        except Exception:  # a request must never fail because plugins could not start
            if not self._warned_deferred:
                self._warned_deferred = True
                logger.exception("Could not start the plugins; retrying at the next request")

    def start(self) -> list[PluginRow] | None:
        """Start this process's plugins: from ``AppConfig.ready()`` later, otherwise now.

        Called while the app registry is still loading (``AppConfig.ready``) it touches no
        database (``migrate`` runs before any table exists): with ``AUTOLOAD`` on, the first
        request or Celery task of the process runs :meth:`ensure_started`; returns None. Called
        afterwards (a script, a test), it discovers and applies the rows now, and returns every
        row. Raises ``DatabaseError`` then if the tables do not exist.
        """
        self._follows_signals = True
        setting_changed.connect(
            self._settings_changed, weak=False, dispatch_uid=f"{self._uid}.settings"
        )
        if apps.ready:
            self._start()
            return list(PluginRow.objects.all())
        if plugin_settings.AUTOLOAD:
            self._defer()
        return None

    def _defer(self) -> None:
        request_started.connect(
            self._on_request_started, weak=False, dispatch_uid=f"{self._uid}.request_started"
        )
        if self._uid == _DEFAULT_UID:
            # Shells, commands, scripts, tests: the first hook run, event or model hook starts
            # the plugins (the process-wide engine is the default runtime's).
            autostart.arm(self.ensure_started)
        try:
            from celery.signals import task_prerun
        except ImportError:  # pragma: no cover - Celery is a dependency, but the app works without
            return
        # Not worker_process_init: Celery kills a child whose init takes over 4 s, and activating
        # plugins may. Idle workers start through the follower thread (apply_db_state).
        task_prerun.connect(
            self._on_request_started, weak=False, dispatch_uid=f"{self._uid}.task"
        )

    def reset(self) -> None:
        """Deactivate every plugin of this process and forget the loader and bookkeeping.

        For tests and for a change of ``PLUGIN_DIRS``; the next use builds a new loader. Rows are
        not touched.
        """
        with self._lock:
            loader, self._loader = self._loader, None
            self._discovered, self._started_pid = False, None
            self._applied.clear()
            self._settings_seen.clear()
            organizations.reset()
            self._unrecorded.clear()
            if loader is not None:
                loader.remove_listener(self._on_state_change)
                loader.close()
            if plugin_settings.AUTOLOAD and self._follows_signals:
                self._defer()

    def _settings_changed(self, *, setting: str, **kwargs: Any) -> None:
        if setting != SETTING_NAME:
            return
        # A new SYNC_INTERVAL / SYNC_CACHE applies from the next call, not after the old interval.
        self.follower.look_now()
        loader = self._loader
        if loader is not None and [str(d) for d in loader.dirs] != self.dirs():
            self.reset()


def _enabled_dependents(name: str) -> set[str]:
    """Names of enabled plugins that require ``name``, directly or not (from their rows)."""
    rows = list(PluginRow.objects.filter(enabled=True).exclude(name=name))
    found: set[str] = set()
    wanted = {name}
    while wanted:
        needed_by = {
            row.name
            for row in rows
            if row.name not in found and set((row.manifest or {}).get("requires") or ()) & wanted
        }
        found |= needed_by
        wanted = needed_by
    return found


def _active_names(loader: PluginLoader) -> set[str]:
    return {p.name for p in loader.plugins if p.state == PluginState.ACTIVE}


default = Runtime(dispatch_uid=_DEFAULT_UID)
"""The site's runtime: what the module-level functions below delegate to."""


def get_loader() -> PluginLoader:
    """Return the default runtime's ``PluginLoader`` (see :attr:`Runtime.loader`)."""
    return default.loader


def local_plugin(name: str) -> LoadedPlugin | None:
    """See :meth:`Runtime.local_plugin`."""
    return default.local_plugin(name)


def discover() -> list[PluginRow]:
    """See :meth:`Runtime.discover`."""
    return default.discover()


def discover_if_new() -> bool:
    """See :meth:`Runtime.discover_if_new`."""
    return default.discover_if_new()


def activate(name: str, user: Any = None, mode: str = PluginMode.LIVE) -> PluginRow:
    """See :meth:`Runtime.activate`."""
    return default.activate(name, user, mode)


def deactivate(name: str) -> PluginRow:
    """See :meth:`Runtime.deactivate`."""
    return default.deactivate(name)


def uninstall(name: str) -> dict[str, Any]:
    """See :meth:`Runtime.uninstall`."""
    return default.uninstall(name)


def reload(name: str) -> PluginRow:
    """See :meth:`Runtime.reload`."""
    return default.reload(name)


def set_trusted(name: str, trusted: bool, user: Any = None) -> PluginRow:
    """See :meth:`Runtime.set_trusted`."""
    return default.set_trusted(name, trusted, user)


def update_settings(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """See :meth:`Runtime.update_settings`."""
    return default.update_settings(name, data)


def activate_for(org: Any, name: str, user: Any = None) -> PluginRow:
    """:meth:`Runtime.activate_for` of the default runtime."""
    return default.activate_for(org, name, user=user)


def deactivate_for(org: Any, name: str) -> PluginRow:
    """:meth:`Runtime.deactivate_for` of the default runtime."""
    return default.deactivate_for(org, name)


def follow_site_for(org: Any, name: str) -> PluginRow:
    """:meth:`Runtime.follow_site_for` of the default runtime."""
    return default.follow_site_for(org, name)


def organization_settings(org: Any, name: str, *, masked: bool = False) -> dict[str, Any]:
    """:meth:`Runtime.organization_settings` of the default runtime."""
    return default.organization_settings(org, name, masked=masked)


def update_organization_settings(org: Any, name: str, data: dict[str, Any]) -> dict[str, Any]:
    """:meth:`Runtime.update_organization_settings` of the default runtime."""
    return default.update_organization_settings(org, name, data)


def apply_db_state() -> dict[str, str]:
    """See :meth:`Runtime.apply_db_state`."""
    return default.apply_db_state()


def ensure_started() -> bool:
    """See :meth:`Runtime.ensure_started`."""
    return default.ensure_started()


def is_started() -> bool:
    """See :meth:`Runtime.is_started`."""
    return default.is_started()


def start() -> list[PluginRow] | None:
    """See :meth:`Runtime.start`."""
    return default.start()


def reset() -> None:
    """See :meth:`Runtime.reset`."""
    default.reset()


def prime() -> None:
    """See :meth:`StampFollower.prime`."""
    default.follower.prime()


def due() -> bool:
    """See :meth:`StampFollower.due`."""
    return default.follower.due()


def check(*, force: bool = False) -> bool:
    """The per-request look at the stamp: see :meth:`StampFollower.check`."""
    return default.follower.check(force=force)


def start_follower(interval: float | None = None) -> threading.Thread:
    """See :meth:`StampFollower.start_thread`."""
    return default.follower.start_thread(interval)


def stop_follower(timeout: float = 5.0) -> None:
    """See :meth:`StampFollower.stop_thread`."""
    default.follower.stop_thread(timeout)
