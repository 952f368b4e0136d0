"""``PluginContext``: the narrow view of one plugin that the parts of its ``PlatformAPI`` share.

It knows who the plugin is (id, name, manifest), where its registrations go (hooks, bus), what it
is backed by (services), and answers the three questions every part asks: may the plugin use this
(``require``, ``check_hook``, ``check_event``) and may it register right now (``registering``).
Refusals are ``PluginPermissionError``s naming the ``plugin.yaml`` field to change, and are audited.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from course_plugins.core.options import options
from course_plugins.core.sandbox.audit import audit
from course_plugins.core.watchdog import checkpoint
from course_plugins.exceptions import PluginPermissionError, PluginStateError

if TYPE_CHECKING:
    from course_plugins.api.platform_api import Services
    from course_plugins.core.event_bus import EventBus
    from course_plugins.core.hook_manager import HookManager
    from course_plugins.core.manifest import PluginManifest

__all__ = ["PluginContext"]


class PluginContext:
    """One plugin as the API parts see it; built by ``PlatformAPI``."""

    def __init__(
        self,
        *,
        plugin_id: str,
        name: str,
        manifest: PluginManifest,
        hooks: HookManager,
        bus: EventBus,
        services: Services,
        isolated: Callable[[], bool] | None = None,
    ) -> None:
        self.plugin_id = plugin_id
        self.name = name
        self.manifest = manifest
        self.hooks = hooks
        self.bus = bus
        self.services = services
        self._isolated = isolated
        self._open = False
        self._gate = threading.RLock()

    def __repr__(self) -> str:
        return f"<PluginContext {self.plugin_id}>"

    @property
    def shadow(self) -> bool:
        """Whether the plugin runs in shadow mode: what it registers is watched, never acts."""
        shadow = self.services.shadow
        return shadow is not None and shadow(self.name)

    @property
    def hook_timeout(self) -> float:
        """Budget of one call of the plugin's functions in this process: ``HOOK_TIMEOUT`` or
        lower; 0 (none) when the plugin is isolated: its worker keeps the budget (it is killed
        past it), and this process's threads are never interrupted for it."""
        if self._isolated is not None and self._isolated():
            return 0.0
        own = self.manifest.timeout_seconds
        return min(own, options.hook_timeout) if own else options.hook_timeout

    # -- what the plugin may use -----------------------------------------------------------------

    def require(self, permission: str) -> None:
        """Return if the manifest grants ``permission``; else raise ``PluginPermissionError``."""
        checkpoint()  # a trusted plugin over its budget is stopped here, before any lock
        if permission in self.manifest.permissions:
            return
        self._refuse(
            f"uses api.{permission} without permission: add '{permission}' to `permissions` in "
            f"{self.manifest.path}"
        )

    def check_hook(self, name: str) -> None:
        """Return if the manifest lists hook ``name``; else raise ``PluginPermissionError``.

        ``name`` must be a ``str`` itself: a subclass's own ``__eq__``/``__hash__`` could pass
        this check as one name and reach the engine's hooks as another."""
        if type(name) is str and name in self.manifest.hooks:
            return
        self._refuse(
            f"hook {name!r} is not listed in `hooks` of {self.manifest.path}: add it there"
        )

    def check_event(self, pattern: str) -> None:
        """Return if the manifest's ``events`` cover ``pattern``; else raise
        ``PluginPermissionError``."""
        if type(pattern) is str and self.manifest.covers_event(pattern):
            return
        listed = ", ".join(self.manifest.events) or "none"
        self._refuse(
            f"event pattern {pattern!r} is not covered by `events` of {self.manifest.path} "
            f"(listed: {listed}): add it, or a pattern such as 'course.*' that covers it"
        )

    def _refuse(self, message: str) -> None:
        audit("permission", message, plugin=self.plugin_id)
        raise PluginPermissionError(self.plugin_id, message)

    # -- the registration gate (the loader opens it for activate(api), closes it to tear down) --

    def open_registrations(self) -> None:
        with self._gate:
            self._open = True

    def close_registrations(self) -> None:
        """Refuse registrations from now on; waits for one that is in progress to finish, so
        that the loader's teardown that follows removes it too."""
        with self._gate:
            self._open = False

    @contextlib.contextmanager
    def registering(self) -> Iterator[None]:
        """Hold the gate open for one registration; raises ``PluginStateError`` when closed."""
        with self._gate:
            if not self._open:
                raise PluginStateError(
                    self.plugin_id,
                    "registrations are accepted only during activate(api) and while the plugin "
                    "is active; this plugin is not",
                )
            yield

    def describe(self) -> dict[str, Any]:
        """Plain data about the context (for debugging and tests)."""
        return {"plugin_id": self.plugin_id, "open": self._open}
