"""Helpers for plugin authors' own tests: load one plugin against an isolated engine.

A plugin's ``tests/test_*.py`` typically reads::

    from pathlib import Path
    from course_plugins.testing import captured_events, load_plugin

    PLUGIN = Path(__file__).resolve().parent.parent      # the folder holding plugin.yaml

    def test_refuses_untitled_courses():
        with load_plugin(PLUGIN, settings={"min_title_length": 5}) as loaded:
            with pytest.raises(ValueError):
                loaded.run_hook("before-course-save", {"title": ""})

    def test_publishes_its_event():
        with load_plugin(PLUGIN) as loaded, captured_events(loaded.bus) as events:
            loaded.publish("course.created", {"id": 1, "name": "intro"})
            loaded.flush()                                  # wait for api.emit deliveries
            assert [e.name for e in events] == ["course.created", "my-plugin.seen"]

``load_plugin`` goes through the real ``PluginLoader`` — manifest validation, the security policy,
permissions, time budgets — with a fresh ``HookManager`` and ``EventBus``, in-memory config and
storage (unless ``services`` says otherwise) and ``STRICT`` on, so a bug in a hook function fails
the test instead of being logged. Nothing outlives the ``with`` block.

The fresh ``HookManager`` has the hooks of the project's ``COURSE_PLUGINS["MODEL_HOOKS"]``, with
the kinds the site gives them (``before-lesson-save`` is a FILTER: ``run_hook`` returns the dict).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings

from course_plugins.api.platform_api import PlatformAPI, Services, default_api_factory, emitter
from course_plugins.conf import model_hook_entry, plugin_settings
from course_plugins.core.event_bus import Event, EventBus
from course_plugins.core.hook_manager import HookManager, HookType
from course_plugins.core.manifest import load_manifest
from course_plugins.core.options import options
from course_plugins.core.plugin import Plugin
from course_plugins.core.plugin_loader import PluginLoader
from course_plugins.core.scheduler import ThreadScheduler
from course_plugins.core.settings_schema import validate_settings
from course_plugins.core.standard import HookSpec, model_hook_specs

__all__ = ["LoadedPlugin", "captured_events", "load_plugin", "temporary_hook"]


@dataclass
class LoadedPlugin:
    """A plugin loaded by ``load_plugin``, with the isolated engine it is registered on."""

    plugin: Plugin
    loader: PluginLoader
    hooks: Any
    bus: Any
    services: Services
    scheduler: ThreadScheduler

    @property
    def api(self) -> PlatformAPI:
        """The plugin's ``PlatformAPI`` (``loaded.api.storage.get_sync(...)``, ``.config``...)."""
        return self.plugin.api

    @property
    def module(self) -> Any:
        """The plugin's loaded package (its module-level names)."""
        return self.plugin.module

    @property
    def state(self) -> str:
        return str(self.plugin.state)

    def run_hook(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run hook ``name`` on the isolated ``HookManager``; returns what ``run_sync`` returns."""
        return self.hooks.run_sync(name, *args, **kwargs)

    async def arun_hook(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Async twin of ``run_hook``."""
        return await self.hooks.run(name, *args, **kwargs)

    def publish(self, name: str, data: Any = None, *, source: str = "tests") -> Any:
        """Publish an event on the isolated bus and wait for the handlers; returns the ``Event``."""
        event = Event(name, data, source=source)
        self.bus.publish_sync(event)
        return event

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until the events the plugin emitted with ``api.emit`` were delivered."""
        emitter.flush(timeout)

    def registrations(self) -> dict[str, Any]:
        """What the plugin registered: ``{"hooks": {...}, "events": {...}, "schedules": [...]}``.

        ``hooks`` maps hook names to the plugin's function names (``stamp``, ``<lambda>``),
        ``events`` patterns to handler names; empty after deactivation.
        """
        owner = self.plugin.id
        hooks = {
            h["name"]: [_short(f["name"]) for f in h["functions"] if f.get("plugin") == owner]
            for h in self.hooks.describe()
        }
        events = {
            s["pattern"]: [_short(h["name"]) for h in s["handlers"] if h.get("plugin") == owner]
            for s in self.bus.describe()
        }
        return {
            "hooks": {k: v for k, v in hooks.items() if v},
            "events": {k: v for k, v in events.items() if v},
            "schedules": self.scheduler.scheduled(owner),
        }

    def deactivate(self) -> None:
        """Deactivate the plugin (``deactivate(api)`` runs; its registrations are removed)."""
        self.loader.deactivate(self.plugin.id)

    def activate(self) -> None:
        """Activate the plugin again."""
        self.loader.activate(self.plugin.id)

    def reload(self) -> None:
        """Reload the plugin's code from disk (settings and storage are kept)."""
        self.loader.reload(self.plugin.id)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


@contextmanager
def load_plugin(
    path: str | Path,
    settings: Mapping[str, Any] | None = None,
    *,
    storage: Mapping[str, Any] | None = None,
    services: Services | None = None,
    strict: bool = True,
    activate: bool = True,
    model_hooks: Mapping[str, Any] | None = None,
    trusted: bool = False,
) -> Iterator[LoadedPlugin]:
    """Load (and activate) the plugin in folder ``path`` on a fresh, isolated engine.

    The plugin runs as it does on a site by default: isolated, in a confined worker process
    (its hook functions and handlers are proxies; ``loaded.module`` stands in for its module,
    with its module-level functions). ``trusted=True`` loads it into this process instead, for
    tests that look at the plugin's module-level state (``loaded.module.some_dict``).

    ``settings`` are validated against the plugin's ``settings_schema`` and stored before
    activation; ``storage`` pre-fills ``api.storage``. ``services`` replaces the in-memory
    stores and absent backends (``Services.django()`` inside a Django test with database access).
    ``strict`` turns ``STRICT`` on for the block. ``model_hooks`` (``{"school.Lesson":
    "lesson"}``, as in ``COURSE_PLUGINS``) says which model hooks to define; by default those of
    the project's settings, or — with no Django settings at all — the ``before-<x>-save``,
    ``after-<x>-save`` and ``before-<x>-delete`` hooks the manifest names. Yields a
    ``LoadedPlugin``.

    Raises ``PluginManifestError`` for a bad ``plugin.yaml``, ``PluginSettingsError`` for bad
    ``settings``, and the loader's ``PluginError`` if loading or activation fails.
    """
    manifest = load_manifest(path)
    services = services if services is not None else Services.in_memory()
    if settings:
        values = validate_settings(
            manifest.settings_schema, settings, partial=True, plugin=manifest.id
        )
        services.config_store.update(manifest.name, values)
    for key, value in (storage or {}).items():
        services.storage_store.set(manifest.name, key, value)
    hooks, bus, scheduler = HookManager(), EventBus(), ThreadScheduler()
    define_model_hooks(hooks, model_hook_table(model_hooks, manifest.hooks))
    loader = PluginLoader(
        [path],
        hooks=hooks,
        bus=bus,
        api_factory=default_api_factory(services),
        scheduler=scheduler,
        trusted=trusted,
    )
    previous_strict = options.strict
    options.strict = strict
    try:
        loader.discover_all()
        plugin = loader.get(manifest.name)
        if activate:
            loader.activate(plugin.id)
        else:
            loader.load(plugin.id)
        yield LoadedPlugin(plugin, loader, hooks, bus, services, scheduler)
    finally:
        try:
            loader.close()
            scheduler.close()
        finally:
            options.strict = previous_strict


@contextmanager
def captured_events(bus: Any = None, pattern: str = "**") -> Iterator[list[Any]]:
    """Collect every event published on ``bus`` (default: the process-wide bus) matching
    ``pattern`` inside the block; yields the list, filled in publication order."""
    bus = bus if bus is not None else EventBus.get_instance()
    events: list[Any] = []

    def capture(event: Any) -> None:
        events.append(event)

    bus.subscribe(pattern, capture)
    try:
        yield events
    finally:
        bus.unsubscribe(pattern, capture)


@contextmanager
def temporary_hook(
    name: str, fn: Callable[..., Any], *, hooks: Any = None, priority: int = 10
) -> Iterator[Callable[..., Any]]:
    """Register ``fn`` on hook ``name`` (default: the process-wide ``HookManager``) for the block
    only, like Wagtail's ``register_temporarily``; yields ``fn``."""
    hooks = hooks if hooks is not None else HookManager.get_instance()
    hooks[name].add(fn, priority=priority)
    try:
        yield fn
    finally:
        hooks[name].remove(fn)


_MODEL_HOOK_NAME = re.compile(r"^(?:before|after)-(.+)-save$|^before-(.+)-delete$")


def model_hook_table(
    model_hooks: Mapping[str, Any] | None, manifest_hooks: Iterable[str] = ()
) -> list[HookSpec]:
    """The hook specs to define for a plugin's test, as the site defines them.

    ``model_hooks`` given: its entries. Otherwise the Django project's ``MODEL_HOOKS`` when
    settings are configured (or named by ``DJANGO_SETTINGS_MODULE``); otherwise the model hooks
    the plugin's manifest names (``before-lesson-save`` -> the ``lesson`` entry).
    """
    if model_hooks is None:
        model_hooks = _project_model_hooks()
    if model_hooks is None:
        matches = [_MODEL_HOOK_NAME.match(name) for name in manifest_hooks]
        stems = {next(s for s in m.groups() if s) for m in matches if m}
        model_hooks = {stem: stem for stem in sorted(stems)}
    specs: list[HookSpec] = []
    for label, value in model_hooks.items():
        stem, _path = model_hook_entry(value)
        if isinstance(stem, str) and stem:
            specs.extend(model_hook_specs(stem, str(label)))
    return specs


def _project_model_hooks() -> Mapping[str, Any] | None:
    if not (django_settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE")):
        return None
    table = plugin_settings.MODEL_HOOKS
    return table if isinstance(table, Mapping) else None


def define_model_hooks(hooks: Any, specs: Iterable[HookSpec]) -> None:
    """Define ``specs`` on ``hooks`` (a ``HookManager``); a clash of kinds raises ``HookTypeError``
    naming the hook, since a test should not run against a hook the site would not have."""
    for spec in specs:
        hooks.define(spec.name, HookType(spec.kind.value), description=spec.description)
