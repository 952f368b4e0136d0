"""The operator's actions on one plugin, site-wide and per organization.

Activate (live or shadow), deactivate, uninstall, reload, mark trusted or isolated, change
settings; and, for an organization, activate, deactivate, follow the site, change its settings.
Each changes the ``Plugin`` row, acts on this process's loader, records the outcome and bumps the
cross-process stamp, so every other process follows within ``SYNC_INTERVAL``.

:class:`Operations` is mixed into :class:`course_plugins.site.runtime.Runtime`, whose lock,
loader, rows (``site/reconciler.py``) and start-up it uses; call these through the runtime
(``runtime.activate(name)``), never on their own.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from course_plugins.api.stores import DjangoConfigStore
from course_plugins.core.plugin import PluginState
from course_plugins.core.plugin_loader import PluginLoader
from course_plugins.core.settings_schema import defaults, mask_settings, validate_settings
from course_plugins.exceptions import PluginError
from course_plugins.models import Plugin as PluginRow
from course_plugins.models import PluginMode, PluginStatus, PluginStorage
from course_plugins.site import control, organizations, scheduling, stamp
from course_plugins.site.scheduling import get_scheduler

__all__ = ["Operations", "plugin_uninstalled"]

logger = logging.getLogger("course_plugins.runtime")

plugin_uninstalled = Signal()
"""Sent by :meth:`Operations.uninstall` once a plugin's row is gone, with ``name``: drop what you
keep for that plugin by name (receivers run in the process that uninstalled it)."""


class Operations:
    """The operator's actions, as methods of the runtime (see the module docstring)."""

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
            now = timezone.now()  # this activation (its activate() schedules for it)
            try:
                with scheduling.starting(row.name, now):
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
                       last_traceback="", activated_at=now, **modes)
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
            plugin_uninstalled.send(sender=type(self), name=row.name)
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
            now = timezone.now()
            try:
                with scheduling.starting(row.name, now):
                    plugin = self.loader.reload(row.name)
            except PluginError as exc:
                row.record_failure(self.local_plugin(row.name), exc)
                self._note_applied(row)
                stamp.bump()  # the version on disk may have changed
                raise
            fields: dict[str, Any] = {}
            if plugin.state == PluginState.ACTIVE:
                fields = dict(status=PluginStatus.ACTIVE, last_error="", last_traceback="",
                              activated_at=now)
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
                    with scheduling.starting(row.name, row.activated_at):  # the same activation
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

    def update_settings(
        self, name: str, data: dict[str, Any], *, typed: bool = False
    ) -> dict[str, Any]:
        """Validate ``data`` against the plugin's ``settings_schema`` and store it.

        Keys not in ``data`` keep their value; ``None`` reverts a key to its default; a secret
        sent back as the mask keeps its value. ``typed``: the values are JSON (the REST API),
        so each must have its JSON type (``validate_settings``); else text as a form posts it
        is coerced too. Takes effect at once: ``api.config.get`` sees the
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
                schema, dict(data), partial=True, plugin=row.name, current=row.settings or {},
                typed=typed,
            )
            running = plugin is not None and plugin.state == PluginState.ACTIVE
            now = timezone.now()
            with transaction.atomic():
                before = dict(row.settings or {})
                stored = DjangoConfigStore().update(row.name, values)
                row.settings = stored
                if running:
                    row.record(activated_at=now)
                stamp.bump()
            if plugin is not None and plugin.api is not None:
                plugin.api.config.reload()
            if running:
                try:
                    with scheduling.starting(row.name, now):
                        self.loader.reload(row.name)
                except PluginError as exc:
                    row.record_failure(self.local_plugin(row.name), exc)
            self._note_applied(row)
            control.follow()  # secrets to mask in recorded runs
            # The keys whose value changed (a form posts every field, most of them unchanged).
            changed = sorted(key for key in values if before.get(key) != stored.get(key))
            logger.info("Settings of plugin %s changed: %s", row.name,
                        ", ".join(changed) if changed else "nothing (saved as they were)")
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
        self, org: Any, name: str, data: dict[str, Any], *, typed: bool = False
    ) -> dict[str, Any]:
        """Validate ``data`` against the plugin's ``settings_schema`` and store it as
        organization ``org``'s own settings, key by key (``None`` reverts a key to the site's).
        ``typed`` as in :meth:`update_settings`.

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
                self._schema(row), dict(data), partial=True, plugin=row.name, current=own,
                typed=typed,
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

