"""Process-wide runtime knobs of the engine, set from ``COURSE_PLUGINS`` by ``conf.py``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Options:
    """What the engine reads on every call; plain attributes so reading them costs nothing.

    ``strict``: re-raise isolated plugin errors instead of logging them (for plugin authors' tests).
    ``hook_timeout``: default time budget, in seconds, of a plugin's hook function or handler.
    ``max_failures``: failures in a row after which a plugin is quarantined (``faulted``).
    ``infrastructure_errors``: exception types that are the site's fault, not the plugin's (the
    database or the broker went away); ``health`` logs them as warnings without counting them
    against the plugin. ``conf.py`` fills it (Django's ``DatabaseError``, broker errors...).
    ``api_factory``: ``fn() -> api_factory(plugin, loader)``, what a ``PluginLoader`` built without
    an ``api_factory`` uses. The core never imports the API layer; the package sets this (to the
    ``PlatformAPI`` factory) when ``course_plugins`` is imported.
    """

    strict: bool = False
    hook_timeout: float = 5.0
    max_failures: int = 5
    infrastructure_errors: tuple[type[BaseException], ...] = field(default_factory=tuple)
    api_factory: Callable[[], Callable[[Any, Any], Any]] | None = None


options = Options()
