"""``PluginLoader``: discover plugin folders, load their code, activate and deactivate them.

Lifecycle of a ``Plugin`` (``plugin.state``)::

    discovered --load--> loaded --activate--> active --deactivate--> inactive
         any failure --> error          too many failures in a row --> faulted

- ``discover_all()`` reads every ``plugin.yaml`` below the configured dirs (a dir that itself holds
  a ``plugin.yaml`` is one plugin). A bad manifest gives that plugin state ``error`` and never stops
  the others.
- ``load`` checks ``platform`` and ``requires`` (installed, right version, no cycle) and imports the
  code through the sandbox's plugin policy (``core.plugin_modules``).
- ``activate`` also needs every required plugin active, then calls ``activate(api)``. If that
  raises, everything the plugin registered is removed again and the state is ``error``.
- ``deactivate`` first deactivates active plugins that require this one, calls ``deactivate(api)``
  (errors there are logged, not fatal) and removes all the plugin registered: hook functions,
  subscriptions, advice and schedules.
- A plugin whose functions fail ``MAX_FAILURES`` times in a row is deactivated and ``faulted``
  (reason and traceback kept) until it is activated again explicitly.

Module code, ``activate(api)`` and ``deactivate(api)`` run under the ``HOOK_TIMEOUT`` budget.
Lifecycle methods take an id (``name@version``) or a bare name, hold one lock, and raise a
``PluginError`` subclass when the plugin does not reach the asked-for state (its ``error`` and
``traceback`` say why); the ``*_all`` methods never raise for one plugin.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import traceback as tb_module
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from course_plugins.core import advice
from course_plugins.core.event_bus import EventBus
from course_plugins.core.health import PluginRaised, health, reportable
from course_plugins.core.hook_manager import HookManager
from course_plugins.core.isolation.channel import WorkerTimeout
from course_plugins.core.isolation.host import IsolatedPlugin
from course_plugins.core.manifest import MANIFEST_FILENAME, NAME_RE, load_manifest
from course_plugins.core.options import options
from course_plugins.core.plugin import (
    Plugin,
    PluginState,
    check_requirements,
    dependency_order,
    find_cycles,
)
from course_plugins.core.plugin_modules import PluginImporter, unique_module_name
from course_plugins.core.sandbox.audit import audit
from course_plugins.core.sandbox.errors import SecurityViolation
from course_plugins.core.scheduler import ThreadScheduler
from course_plugins.core.watchdog import TimeBudgetExceeded, time_limit
from course_plugins.core.worker_threads import call_off_loop, in_worker, run_awaitable
from course_plugins.exceptions import (
    PluginDependencyError,
    PluginError,
    PluginLoadError,
    PluginManifestError,
    PluginNotFound,
)

logger = logging.getLogger("course_plugins.loader")

Listener = Callable[["Plugin", "str | None", str], None]


class PluginLoader:
    """Discovers, loads, activates and deactivates the plugins found in ``dirs``.

    ``hooks``/``bus`` default to the process-wide ``HookManager``/``EventBus``; ``api_factory``
    (``fn(plugin, loader) -> PlatformAPI``) to ``options.api_factory()``, which the package sets to
    ``PlatformAPI``'s default factory (database stores when Django is set up, in-memory otherwise);
    ``scheduler`` to a ``ThreadScheduler`` owned by this loader.
    """

    def __init__(
        self,
        dirs: Iterable[str | Path],
        *,
        hooks: Any = None,
        bus: Any = None,
        api_factory: Callable[[Plugin, PluginLoader], Any] | None = None,
        scheduler: Any = None,
        trusted: bool | Iterable[str] | Callable[[str], bool] | None = None,
    ) -> None:
        self.dirs = [Path(d) for d in ([dirs] if isinstance(dirs, (str, Path)) else dirs)]
        self.hooks = hooks if hooks is not None else HookManager.get_instance()
        self.bus = bus if bus is not None else EventBus.get_instance()
        self._owns_scheduler = scheduler is None
        self.scheduler = scheduler if scheduler is not None else ThreadScheduler()
        if api_factory is None:
            if options.api_factory is None:
                raise TypeError("PluginLoader needs an api_factory(plugin, loader)")
            api_factory = options.api_factory()
        self._api_factory = api_factory
        self.trusted = trusted
        self._plugins: dict[str, Plugin] = {}
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._muted: set[str] = set()
        self.discovery_errors: list[PluginError] = []
        # The level discovery's problems (a bad plugin.yaml, a name found twice) are logged at;
        # a site that records them on its rows lowers it and says each one once itself.
        self.discovery_log_level = logging.ERROR
        self._quarantine_listener = _weak_quarantine_listener(self)
        health.add_quarantine_listener(self._quarantine_listener)

    # -- lookup -----------------------------------------------------------------------------------

    @property
    def plugins(self) -> list[Plugin]:
        """Every known plugin, sorted by name."""
        return [self._plugins[name] for name in sorted(self._plugins)]

    def get(self, plugin_id: str) -> Plugin:
        """Return the plugin with this id or bare name; raises ``PluginNotFound``."""
        name, _, version = str(plugin_id).partition("@")
        plugin = self._plugins.get(name)
        if plugin is None or (version and plugin.version != version):
            known = ", ".join(p.id for p in self.plugins) or "none"
            raise PluginNotFound(
                plugin_id, f"no plugin {plugin_id!r} was discovered (known: {known})"
            )
        return plugin

    def is_trusted(self, name: str) -> bool:
        """Whether plugin ``name`` runs in-process (``trusted``) rather than in a worker.

        ``trusted`` (given to the loader) is ``True`` (every plugin), a set of names, or a
        function of the name; ``None``, the default, isolates every plugin.
        """
        choice = self.trusted
        if choice is None or choice is False:
            return False
        if choice is True:
            return True
        if callable(choice):
            return bool(choice(name))
        return name in choice

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(plugin, old_state, new_state)`` after every state change (``old_state`` is
        None for a newly discovered plugin). Called with the lifecycle lock held, possibly from a
        worker thread; it must not call lifecycle methods of this loader."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    # -- discovery --------------------------------------------------------------------------------

    def discover_all(self) -> list[Plugin]:
        """Scan the dirs; returns every known plugin. Loaded plugins keep their state (``reload``
        picks up changes); folders that vanished are forgotten unless their plugin is active."""
        with self._lock:
            self.discovery_errors = []
            found: dict[str, Plugin] = {}
            for folder in self.plugin_folders():
                plugin = self._read(folder)
                first = found.get(plugin.name)
                if first is not None:
                    error = PluginError(
                        plugin.name,
                        f"{folder} is ignored: a plugin named {plugin.name!r} was already found in "
                        f"{first.path}; plugin names must be unique across PLUGIN_DIRS",
                    )
                    logger.log(self.discovery_log_level, "%s", error)
                    self.discovery_errors.append(error)
                    continue
                found[plugin.name] = plugin
            for name, plugin in found.items():
                old = self._plugins.get(name)
                if old is not None:
                    settled = old.state not in (PluginState.DISCOVERED, PluginState.ERROR)
                    same = old.path.resolve() == plugin.path.resolve()
                    # Loaded code (and a fault) stays until reload/activate; an active plugin
                    # that moved keeps running from where it was loaded until deactivated.
                    if old.state == PluginState.ACTIVE or (settled and same):
                        continue
                    self._forget(old)
                self._plugins[name] = plugin
                if plugin.manifest is not None:
                    plugin.api = self._api_factory(plugin, self)
                self._notify(plugin, None)
            for name in list(self._plugins):
                if name not in found and self._plugins[name].state != PluginState.ACTIVE:
                    self._forget(self._plugins.pop(name))
            return self.plugins

    def plugin_folders(self) -> list[Path]:
        """The folders of ``dirs`` that hold a ``plugin.yaml``, in discovery order."""
        folders: list[Path] = []
        for directory in self.dirs:
            if (directory / MANIFEST_FILENAME).is_file():
                folders.append(directory)
            elif directory.is_dir():
                folders.extend(
                    sub
                    for sub in sorted(directory.iterdir())
                    if sub.is_dir() and (sub / MANIFEST_FILENAME).is_file()
                )
            else:
                logger.warning("Plugin directory %s does not exist", directory)
        return folders

    def _read(self, folder: Path) -> Plugin:
        try:
            manifest = load_manifest(folder)
        except PluginManifestError as exc:
            plugin = Plugin(folder, None, _fallback_name(exc, folder))
            self._fail(plugin, exc, notify=False, level=self.discovery_log_level)
            return plugin
        plugin = Plugin(folder, manifest, manifest.name, manifest.version)
        if not (folder / "__init__.py").is_file():
            problem = PluginLoadError(
                plugin.id, f"{folder} has no __init__.py: it must define activate(api)"
            )
            self._fail(plugin, problem, notify=False, level=self.discovery_log_level)
        return plugin

    # -- loading ----------------------------------------------------------------------------------

    def load_all(self) -> list[Plugin]:
        """Load every discovered plugin; returns those loaded (or already past loading)."""
        with self._lock:
            cycles = find_cycles(self._plugins)
            for plugin in self.plugins:
                if plugin.state == PluginState.DISCOVERED:
                    with contextlib.suppress(PluginError):
                        self._load(plugin, cycles)
            return [p for p in self.plugins if p.module is not None]

    def load(self, plugin_id: str) -> Plugin:
        """Load one plugin (no-op when its code is loaded). Raises ``PluginError``."""
        with self._lock:
            plugin = self.get(plugin_id)
            if plugin.module is None:
                self._refresh_if_failed(plugin)
                self._load(plugin, find_cycles(self._plugins))
            return plugin

    def _load(self, plugin: Plugin, cycles: dict[str, str]) -> None:
        if plugin.manifest is None or plugin.state == PluginState.ERROR:
            raise self._stored_error(plugin)
        try:
            check_requirements(plugin, self._plugins, cycles, need_active=False)
            plugin.trusted = self.is_trusted(plugin.name)
            importer: PluginImporter | IsolatedPlugin
            if plugin.trusted:
                importer = PluginImporter(plugin.id, plugin.path, unique_module_name(plugin.name))
            else:
                importer = IsolatedPlugin(plugin, unique_module_name(plugin.name))
            try:
                module = self._guarded(plugin, "module code", importer.load)
            except BaseException:
                importer.unload()
                raise
            if not callable(getattr(module, "activate", None)):
                importer.unload()
                raise PluginLoadError(
                    plugin.id, f"{plugin.path / '__init__.py'} defines no activate(api)"
                )
        except PluginError as exc:
            self._fail(plugin, exc)
            raise
        plugin.module, plugin._importer = module, importer
        self._set_state(plugin, PluginState.LOADED)

    # -- activation -------------------------------------------------------------------------------

    def activate_all(self, only: Iterable[str] | None = None) -> list[Plugin]:
        """Activate plugins in dependency order; returns the plugins now active.

        Without ``only``: every plugin that is discovered, loaded or inactive. With ``only`` (ids or
        names): just those. ``error``/``faulted`` plugins are left alone (use ``activate``).
        """
        with self._lock:
            wanted = None if only is None else {str(i).partition("@")[0] for i in only}
            cycles = find_cycles(self._plugins)
            startable = (PluginState.DISCOVERED, PluginState.LOADED, PluginState.INACTIVE)
            for plugin in dependency_order(self._plugins):
                if (wanted is None or plugin.name in wanted) and plugin.state in startable:
                    with contextlib.suppress(PluginError):
                        self._activate(plugin, cycles)
            return [p for p in self.plugins if p.state == PluginState.ACTIVE]

    def activate(self, plugin_id: str) -> Plugin:
        """Activate one plugin (loading it first if needed); returns it.

        A plugin in ``error`` or ``faulted`` is read again from disk first (an admin's explicit
        retry). Every required plugin must be active. Raises ``PluginError``.
        """
        with self._lock:
            plugin = self.get(plugin_id)
            if plugin.state == PluginState.ACTIVE:
                return plugin
            self._refresh_if_failed(plugin)
            self._activate(plugin, find_cycles(self._plugins))
            return plugin

    def _activate(self, plugin: Plugin, cycles: dict[str, str]) -> None:
        if plugin.module is None:
            self._load(plugin, cycles)
        try:
            check_requirements(plugin, self._plugins, cycles, need_active=True)
        except PluginError as exc:
            self._fail(plugin, exc)
            raise
        api = plugin.api
        health.reset(plugin.id)
        api.open_registrations()
        importer = plugin._importer
        activate = plugin.module.activate
        if isinstance(importer, PluginImporter):  # an isolated plugin's worker does it there

            def activate(api: Any, _activate: Any = activate) -> Any:
                importer.bind_advice(api)  # the seed's module-level @before_advice(...)
                return _activate(api)

        try:
            self._guarded(plugin, "activate(api)", activate, api)
        except PluginError as exc:
            api.close_registrations()
            self._remove_registrations(plugin)
            self._drop_module(plugin)
            self._fail(plugin, exc)
            raise
        plugin.error = plugin.traceback = ""
        self._set_state(plugin, PluginState.ACTIVE)
        logger.debug("Activated plugin %s", plugin.id)

    # -- deactivation -----------------------------------------------------------------------------

    def deactivate_all(self) -> list[Plugin]:
        """Deactivate every active plugin (dependents first); returns those deactivated."""
        with self._lock:
            active = [
                p
                for p in reversed(dependency_order(self._plugins))
                if p.state == PluginState.ACTIVE
            ]
            for plugin in active:
                self._deactivate(plugin)
            return active

    def deactivate(self, plugin_id: str) -> Plugin:
        """Deactivate one plugin, and first the active plugins that require it; returns it.

        A plugin that is not active is left as it is (a ``faulted`` one stays faulted).
        """
        with self._lock:
            plugin = self.get(plugin_id)
            if plugin.state == PluginState.ACTIVE:
                self._deactivate(plugin)
            return plugin

    def _deactivate(
        self,
        plugin: Plugin,
        final_state: PluginState = PluginState.INACTIVE,
        *,
        cascade: bool = True,
    ) -> None:
        for dependent in self._active_dependents(plugin) if cascade else ():
            logger.info("Deactivating %s: it requires %s", dependent.id, plugin.id)
            self._deactivate(dependent)
        api = plugin.api
        api.close_registrations()
        deactivate = getattr(plugin.module, "deactivate", None)
        try:
            if callable(deactivate):
                self._guarded(plugin, "deactivate(api)", deactivate, api)
        except PluginError as exc:
            logger.error(
                "Plugin %s: %s (deactivating anyway)\n%s",
                plugin.id,
                exc,
                getattr(exc, "traceback", ""),
            )
        finally:
            self._remove_registrations(plugin)
        if final_state == PluginState.INACTIVE:
            self._set_state(plugin, final_state)
            logger.debug("Deactivated plugin %s", plugin.id)

    def _remove_registrations(self, plugin: Plugin) -> None:
        owner = plugin.id
        for what, remove in (
            ("hook functions", lambda: self.hooks.remove_owner(owner)),
            ("subscriptions", lambda: self.bus.remove_owner(owner)),
            ("advice", lambda: advice.remove_owner_advice(owner)),
            ("schedules", lambda: self.scheduler.cancel_owner(owner)),
        ):
            try:
                remove()
            except Exception:  # one failing teardown step must not keep the others from running
                logger.exception("Could not remove the %s of plugin %s", what, owner)

    def _active_dependents(self, plugin: Plugin) -> list[Plugin]:
        return [
            p for p in self.plugins if p.state == PluginState.ACTIVE and plugin.name in p.requires
        ]

    # -- reload / unload --------------------------------------------------------------------------

    def reload(self, plugin_id: str) -> Plugin:
        """Read manifest and code again from disk (new module objects) and restore the state:
        an active plugin is active again. Settings and storage are kept (they are keyed by name).
        Listeners see one change, from the old state to the final one. Raises ``PluginError``."""
        with self._lock:
            plugin = self.get(plugin_id)
            old_state = plugin.state
            was_active = old_state == PluginState.ACTIVE
            failure: PluginError | None = None
            with self._mute(plugin):
                if was_active:
                    # Plugins requiring this one stay active: it is back in a moment.
                    self._deactivate(plugin, final_state=PluginState.LOADED, cascade=False)
                self._drop_module(plugin)
                try:
                    self._reread(plugin)
                    self._load(plugin, find_cycles(self._plugins))
                    if was_active:
                        self._activate(plugin, find_cycles(self._plugins))
                except PluginError as exc:
                    failure = exc
            self._notify(plugin, old_state)
            if failure is not None:
                raise failure
            return plugin

    def run_uninstall(self, plugin_id: str) -> bool:
        """Call the plugin's optional ``uninstall(api)`` (its code loaded, never activated).

        For removing a plugin for good: it may delete what it created outside its own storage.
        Returns whether the plugin defines ``uninstall``. Raises ``PluginError`` when loading or
        the call fails (or runs over its time budget).
        """
        with self._lock:
            plugin = self.load(plugin_id)
            uninstall = getattr(plugin.module, "uninstall", None)
            if not callable(uninstall):
                return False
            self._guarded(plugin, "uninstall(api)", uninstall, plugin.api)
            return True

    def unload(self, plugin_id: str) -> Plugin:
        """Deactivate if active and drop the plugin's modules; state ``discovered``. Returns it."""
        with self._lock:
            plugin = self.get(plugin_id)
            if plugin.state == PluginState.ACTIVE:
                self._deactivate(plugin)
            self._drop_module(plugin)
            if plugin.state != PluginState.ERROR or plugin.manifest is not None:
                plugin.error = plugin.traceback = ""
                self._set_state(plugin, PluginState.DISCOVERED)
            return plugin

    def close(self) -> None:
        """Deactivate everything, stop listening for quarantines, stop an owned scheduler."""
        with self._lock:
            self.deactivate_all()
            for plugin in self._plugins.values():
                self._drop_module(plugin)
        health.remove_quarantine_listener(self._quarantine_listener)
        if self._owns_scheduler:
            self.scheduler.close()

    def __enter__(self) -> PluginLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- quarantine -------------------------------------------------------------------------------

    def _quarantine(self, owner: str, reason: str, tb_text: str) -> None:
        """Health says ``owner`` failed MAX_FAILURES times in a row: deactivate it, mark faulted."""
        # Never wait for the lock here: this runs inside a failing hook call, possibly on an event
        # loop thread that the lock holder is itself waiting for.
        if not self._lock.acquire(blocking=False):
            threading.Thread(
                target=in_worker,
                args=(self._quarantine_locked, owner, reason, tb_text, True),
                daemon=True,
                name=f"course-plugins-quarantine-{owner}",
            ).start()
            return
        self._quarantine_locked(owner, reason, tb_text, False)

    def _quarantine_locked(self, owner: str, reason: str, tb_text: str, acquire: bool) -> None:
        if acquire:
            self._lock.acquire()
        try:
            plugin = next((p for p in self._plugins.values() if p.id == owner), None)
            if plugin is None or plugin.state != PluginState.ACTIVE:
                return
            message = f"quarantined: {reason}"
            logger.error("Plugin %s %s", owner, message)
            for dependent in self._active_dependents(plugin):
                self._deactivate(dependent, final_state=PluginState.ERROR)
                self._drop_module(dependent)
                self._fail(
                    dependent,
                    PluginDependencyError(
                        dependent.id,
                        f"deactivated because the plugin it requires, {owner}, faulted",
                    ),
                )
            self._deactivate(plugin, final_state=PluginState.FAULTED)
            self._drop_module(plugin)
            plugin.error, plugin.traceback = message, tb_text
            self._set_state(plugin, PluginState.FAULTED)
            audit("quarantine", message, plugin=owner)
        finally:
            self._lock.release()

    # -- helpers ----------------------------------------------------------------------------------

    def _guarded(self, plugin: Plugin, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run plugin code under the time budget; any failure becomes ``PluginLoadError``."""
        budget = options.hook_timeout
        try:
            # An isolated plugin's worker keeps its own budget (it is killed past it): the
            # host's thread is never interrupted for it.
            with time_limit(budget) if plugin.trusted else contextlib.nullcontext():
                result = fn(*args)
                if inspect.isawaitable(result):
                    result = run_awaitable(result)
                return result
        except (TimeBudgetExceeded, WorkerTimeout):
            raise PluginLoadError(
                plugin.id,
                f"{what} ran over its time budget of {budget:g} s (HOOK_TIMEOUT)",
                tb_module.format_exc(),
            ) from None
        except SecurityViolation as exc:
            # str(exc) reads "file:line: reason".
            raise PluginLoadError(
                plugin.id, f"refused by the plugin security policy: {exc}", tb_module.format_exc()
            ) from exc
        except PluginError as exc:
            if reportable(exc, budget) is not exc:
                # Raised by the site for the plugin, while it handled an exception of its own:
                # the chain would run the plugin's code (see ``reportable``) where it is logged.
                exc.__cause__ = exc.__context__ = None
            if not getattr(exc, "traceback", ""):
                exc.traceback = "".join(tb_module.format_exception(exc))  # type: ignore[attr-defined]
            raise
        except (Exception, SystemExit) as exc:
            shown = reportable(exc, budget)
            text = shown.text if isinstance(shown, PluginRaised) else str(exc)
            raise PluginLoadError(
                plugin.id,
                f"{what} raised {type(exc).__name__}: {text}",
                "".join(tb_module.format_exception(shown)),
            ) from shown

    def _refresh_if_failed(self, plugin: Plugin) -> None:
        if plugin.state in (PluginState.ERROR, PluginState.FAULTED):
            self._drop_module(plugin)
            with contextlib.suppress(PluginError):
                self._reread(plugin)

    def _reread(self, plugin: Plugin) -> None:
        """Read ``plugin.yaml`` again into ``plugin`` (new manifest, version and api)."""
        try:
            manifest = load_manifest(plugin.path)
        except PluginManifestError as exc:
            plugin.manifest = None
            self._fail(plugin, exc)
            raise
        if manifest.name != plugin.name:
            error = PluginManifestError(
                str(manifest.path),
                "name",
                f"changed from {plugin.name!r} to {manifest.name!r}; run discovery again",
            )
            self._fail(plugin, error)
            raise error
        plugin.manifest, plugin.version = manifest, manifest.version
        plugin.api = self._api_factory(plugin, self)
        plugin.error = plugin.traceback = ""
        self._set_state(plugin, PluginState.DISCOVERED)

    def _drop_module(self, plugin: Plugin) -> None:
        if plugin._importer is not None:
            plugin._importer.unload()
        plugin.module, plugin._importer = None, None

    def _forget(self, plugin: Plugin) -> None:
        self._drop_module(plugin)

    def _fail(
        self, plugin: Plugin, exc: PluginError, *, notify: bool = True, level: int = logging.ERROR
    ) -> None:
        plugin.error = str(exc)
        plugin.traceback = getattr(exc, "traceback", "") or ""
        if notify:
            self._set_state(plugin, PluginState.ERROR)
        else:
            plugin.state = PluginState.ERROR
        text = str(exc)
        # Name the plugin once: not again where the error's own text starts with it.
        text = text.removeprefix(f"{exc.plugin}: ") if exc.plugin else text
        logger.log(level, "Plugin %s: %s", plugin.id, text)

    def _stored_error(self, plugin: Plugin) -> PluginError:
        return PluginLoadError(
            plugin.id, plugin.error or "the plugin is in error", plugin.traceback
        )

    def _set_state(self, plugin: Plugin, state: PluginState) -> None:
        old = plugin.state
        plugin.state = state
        if old != state:
            self._notify(plugin, old)

    @contextlib.contextmanager
    def _mute(self, plugin: Plugin) -> Iterator[None]:
        self._muted.add(plugin.name)
        try:
            yield
        finally:
            self._muted.discard(plugin.name)

    def _notify(self, plugin: Plugin, old: str | None) -> None:
        if plugin.name in self._muted:
            return
        for listener in list(self._listeners):
            try:
                call_off_loop(
                    listener, plugin, None if old is None else str(old), str(plugin.state)
                )
            except Exception:
                logger.exception("Plugin state listener %r failed for %s", listener, plugin.id)


def _fallback_name(exc: PluginManifestError, folder: Path) -> str:
    if exc.plugin and NAME_RE.fullmatch(exc.plugin):
        return exc.plugin
    return folder.name.lower()


def _weak_quarantine_listener(loader: PluginLoader) -> Callable[[str, str, str], None]:
    ref = weakref.ref(loader)

    def listener(owner: str, reason: str, tb_text: str) -> None:
        target = ref()
        if target is not None:
            target._quarantine(owner, reason, tb_text)

    return listener
