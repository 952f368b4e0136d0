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

This module holds the :class:`Runtime` (its shared state, its loader, the start-up) and the
module-level functions; the methods it is made of live in ``site/reconciler.py`` (discovery,
following the rows) and ``site/operations.py`` (the operator's actions, ``plugin_uninstalled``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from django.apps import apps
from django.core.signals import request_started, setting_changed
from django.db import DatabaseError, connection, transaction

from course_plugins.api.platform_api import Services, default_api_factory
from course_plugins.conf import SETTING_NAME, plugin_settings, trusted_by_setting
from course_plugins.core.plugin import Plugin as LoadedPlugin
from course_plugins.core.plugin_loader import PluginLoader
from course_plugins.core.scheduler import Scheduler
from course_plugins.exceptions import PluginNotFound
from course_plugins.models import Plugin as PluginRow
from course_plugins.models import PluginMode
from course_plugins.site import autostart, control, organizations, sandbox_layers
from course_plugins.site.follower import StampFollower
from course_plugins.site.operations import Operations, plugin_uninstalled
from course_plugins.site.reconciler import Reconciler, described
from course_plugins.site.scheduling import get_scheduler

logger = logging.getLogger("course_plugins.runtime")

_DEFAULT_UID = "course_plugins.runtime"

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


class Runtime(Reconciler, Operations):
    """One process's plugin runtime: its loader, what it last applied, the stamp it followed.

    Its rows side (discovery, following the database) is :class:`~.reconciler.Reconciler`, the
    operator's actions :class:`~.operations.Operations`; this class holds the state they share
    and starts the process's plugins.

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
                # Discovery's problems are recorded on the rows; discover() logs each new one.
                loader.discovery_log_level = logging.DEBUG
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

    # -- start-up --------------------------------------------------------------------------------

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
            if done:
                # Routine in every process (each manage.py command, worker and web process);
                # failures are logged as errors where they happen.
                logger.debug("Started the plugins of this process: %s", described(done))
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


def update_settings(name: str, data: dict[str, Any], *, typed: bool = False) -> dict[str, Any]:
    """See :meth:`Runtime.update_settings`."""
    return default.update_settings(name, data, typed=typed)


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


def update_organization_settings(
    org: Any, name: str, data: dict[str, Any], *, typed: bool = False
) -> dict[str, Any]:
    """:meth:`Runtime.update_organization_settings` of the default runtime."""
    return default.update_organization_settings(org, name, data, typed=typed)


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

