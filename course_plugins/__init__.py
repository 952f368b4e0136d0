"""course_plugins: Emacs-style plugins (hooks, events, advice) for Django course platforms."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from course_plugins.core import __version__ as __version__
from course_plugins.core.options import options as _options

# The small public surface, imported on first use (PEP 562) so that ``import course_plugins``
# stays cheap and never imports Django-dependent modules by itself.
_EXPORTS = {
    "Event": "course_plugins.core.event_bus",
    "EventBus": "course_plugins.core.event_bus",
    "HookManager": "course_plugins.core.hook_manager",
    "HookType": "course_plugins.core.hook_manager",
    "PluginLoader": "course_plugins.core.plugin_loader",
    # Needs Django set up (it is a ValidationError of Django and of DRF): a plugin's refusal.
    "PluginVeto": "course_plugins.model_hooks",
    "SandboxConfig": "course_plugins.core.sandbox",
    "SandboxedExecutor": "course_plugins.core.sandbox",
    "advisable": "course_plugins.core.advice",
    "after_advice": "course_plugins.core.advice",
    "around_advice": "course_plugins.core.advice",
    "before_advice": "course_plugins.core.advice",
    "hook": "course_plugins.core.hook_manager",
}

__all__ = sorted(["__version__", *_EXPORTS])


def _default_api_factory() -> Callable[[Any, Any], Any]:
    # The core's loader is handed its API factory; this is where the layers meet, so that
    # ``PluginLoader(dirs)`` alone still gives each plugin a ``PlatformAPI``.
    from course_plugins.api.platform_api import default_api_factory

    return default_api_factory()


_options.api_factory = _default_api_factory


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'course_plugins' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
