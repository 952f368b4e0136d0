"""This process's loader brought in line with the ``Plugin`` rows: discovery and following.

:meth:`Reconciler.discover` scans ``PLUGIN_DIRS`` and upserts rows (a new plugin starts disabled
and ``inactive``; an upgrade keeps the admin's ``enabled`` choice and the settings; a vanished
folder marks its row ``missing`` with status ``error``, never a crash).
:meth:`Reconciler.apply_db_state` activates, deactivates, reloads or re-reads the settings of each
plugin as its row says, when another process changed something (``site/follower.py`` calls it).
State changes nobody asked for (a quarantine) are written back to the rows, and kept for later
while the database is down.

:class:`Reconciler` is mixed into :class:`course_plugins.site.runtime.Runtime`, whose lock,
loader and start-up it uses.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from course_plugins.conf import plugin_settings
from course_plugins.core.plugin import Plugin as LoadedPlugin
from course_plugins.core.plugin import PluginState, dependency_order
from course_plugins.core.plugin_loader import PluginLoader
from course_plugins.exceptions import PluginError, PluginNotFound
from course_plugins.models import Plugin as PluginRow
from course_plugins.models import PluginStatus
from course_plugins.site import control, organizations, scheduling, stamp

__all__ = ["Reconciler", "described"]

logger = logging.getLogger("course_plugins.runtime")


class Reconciler:
    """Rows <-> this process's loader, as methods of the runtime (see the module docstring)."""

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
                before = rows.get(name)
                known = (before.status, before.last_error) if before is not None else None
                try:
                    with transaction.atomic():
                        row = PluginRow.objects.upsert(plugin, before)
                except IntegrityError:  # another process inserted it first
                    row = PluginRow.objects.upsert(plugin, PluginRow.objects.get(name=name))
                if plugin.state == PluginState.ERROR and known != (row.status, row.last_error):
                    # Said once, by the process that finds it first (the row and the admin show
                    # it from then on), not by every process and command that starts.
                    logger.error("Plugin %s cannot be loaded: %s", name, row.last_error)
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
        done = self._apply()
        if done:
            # Another process changed the rows after this one started (an admin's toggle): the
            # operator may want to see each process follow it.
            logger.info("Followed a change made in another process: %s", described(done))
        return done

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
                        control.forget_plugin_runs(name=plugin.name, everywhere=False)
                        done[plugin.name] = "uninstalled"
                    continue
                action = self._follow(loader, plugin, row)
                if action:
                    done[plugin.name] = action
            for name in set(rows) - {p.name for p in order}:
                self._note_applied(rows[name])
            control.follow(list(rows.values()))  # overrides, secrets, the run recorder
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
            # The activation the row records: a one-shot activate() schedules for it was made
            # by the process that activated it (or the first to start it), not again here.
            with scheduling.starting(row.name, row.activated_at):
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


def described(done: dict[str, str]) -> str:
    """``{name: what was done}`` as a log line reads it: ``a activated, b deactivated``."""
    return ", ".join(f"{name} {action}" for name, action in sorted(done.items()))
