"""A discovered plugin (``Plugin``), its states, and the checks of its requirements.

``check_requirements`` is what the loader runs before loading (``need_active=False``) and before
activating (``need_active=True``): the ``platform`` specifier against course_plugins' version, no
``requires`` cycle, every required plugin installed with a matching version (and active).
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from course_plugins.core import __version__
from course_plugins.core.manifest import PluginManifest
from course_plugins.core.options import options
from course_plugins.exceptions import PluginDependencyError

if TYPE_CHECKING:
    from course_plugins.core.isolation.host import IsolatedPlugin
    from course_plugins.core.plugin_modules import PluginImporter


class PluginState(StrEnum):
    DISCOVERED = "discovered"
    LOADED = "loaded"
    ACTIVE = "active"
    INACTIVE = "inactive"
    ERROR = "error"
    FAULTED = "faulted"


class Plugin:
    """One discovered plugin folder.

    ``manifest`` is ``None`` when ``plugin.yaml`` is invalid (then ``name`` is the folder's name and
    ``version`` is empty). ``api`` is its ``PlatformAPI``; ``module`` the loaded package (or None).
    """

    def __init__(self, path: Path, manifest: PluginManifest | None, name: str, version: str = ""):
        self.path = Path(path)
        self.manifest = manifest
        self.name = name
        self.version = version
        self.state = PluginState.DISCOVERED
        self.error = ""
        self.traceback = ""
        self.module: Any = None
        self.api: Any = None
        # Trusted plugins run in the host process; the others (the default) in a confined
        # worker (``core.isolation``). The loader decides when it loads the plugin.
        self.trusted = False
        self._importer: PluginImporter | IsolatedPlugin | None = None

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name

    @property
    def isolated(self) -> bool:
        """Whether the plugin's code runs in a confined worker process (not ``trusted``)."""
        return not self.trusted

    @property
    def hook_timeout(self) -> float:
        """Budget of one call of the plugin's functions: ``HOOK_TIMEOUT`` or lower."""
        own = self.manifest.timeout_seconds if self.manifest else None
        return min(own, options.hook_timeout) if own else options.hook_timeout

    @property
    def requires(self) -> dict[str, Any]:
        return dict(self.manifest.requires) if self.manifest else {}

    def describe(self) -> dict[str, Any]:
        """Plain data about the plugin (admin, REST, management command)."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "state": str(self.state),
            "trusted": self.trusted,
            "error": self.error,
            "traceback": self.traceback,
            "manifest": self.manifest.to_dict() if self.manifest else None,
        }

    def __repr__(self) -> str:
        return f"<Plugin {self.id} {self.state}>"


def check_requirements(
    plugin: Plugin, plugins: Mapping[str, Plugin], cycles: Mapping[str, str], *, need_active: bool
) -> None:
    """Raise ``PluginDependencyError`` naming the first unmet requirement of ``plugin``.

    ``plugins`` maps names to every known plugin; ``cycles`` is ``find_cycles(plugins)``.
    """
    assert plugin.manifest is not None
    platform = plugin.manifest.platform
    if platform is not None and not platform.contains(__version__, prereleases=True):
        raise PluginDependencyError(
            plugin.id,
            f"needs course_plugins {platform} (`platform` in plugin.yaml), this is {__version__}",
        )
    if plugin.name in cycles:
        raise PluginDependencyError(plugin.id, f"dependency cycle: {cycles[plugin.name]}")
    for name, spec in plugin.manifest.requires.items():
        dep = plugins.get(name)
        wanted = f"{name}{spec}" if str(spec) else name
        if dep is None:
            raise PluginDependencyError(plugin.id, f"requires {wanted}, which is not installed")
        if dep.manifest is None:
            raise PluginDependencyError(
                plugin.id, f"requires {wanted}, whose plugin.yaml is invalid: {dep.error}"
            )
        if not spec.contains(dep.version, prereleases=True):
            raise PluginDependencyError(plugin.id, f"requires {wanted}, but {dep.id} is installed")
        if need_active and dep.state != PluginState.ACTIVE:
            detail = f": {dep.error}" if dep.error else ""
            raise PluginDependencyError(
                plugin.id, f"requires {wanted}, which is {dep.state}{detail}; activate {name} first"
            )


def find_cycles(plugins: Mapping[str, Plugin]) -> dict[str, str]:
    """Return ``{name: "a -> b -> a"}`` for every plugin on a ``requires`` cycle."""
    graph = {n: [d for d in p.requires if d in plugins] for n, p in sorted(plugins.items())}
    cycles: dict[str, str] = {}
    while True:
        try:
            tuple(graphlib.TopologicalSorter(graph).static_order())
            return cycles
        except graphlib.CycleError as exc:
            cycle = list(exc.args[1])
            text = " -> ".join(reversed(cycle))
            for name in cycle:
                cycles.setdefault(name, text)
                graph.pop(name, None)
            graph = {n: [d for d in deps if d in graph] for n, deps in graph.items()}


def dependency_order(plugins: Mapping[str, Plugin]) -> list[Plugin]:
    """Return the plugins with their requirements first (cycle members last, by name)."""
    cycles = find_cycles(plugins)
    graph = {
        n: [d for d in p.requires if d in plugins and d not in cycles]
        for n, p in sorted(plugins.items())
        if n not in cycles
    }
    order = [plugins[n] for n in graphlib.TopologicalSorter(graph).static_order()]
    return order + [plugins[n] for n in sorted(cycles)]
