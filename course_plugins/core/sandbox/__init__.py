"""Sandboxed execution of untrusted code, and the code policy for plugin modules.

``SandboxedExecutor(config).exec_code(source, inputs)`` runs code in a separate, confined
process forked from a pre-imported zygote; ``policy.check_source`` is the AST policy shared by
the sandbox and the plugin loader; ``audit`` is the security audit trail; ``workers.start_worker``
gives a long-lived worker process under the same confinement. See docs/security.md.

The executor is imported on first use, so that the zygote process, which imports this package,
stays small (a smaller process forks faster).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from course_plugins.core.sandbox.errors import (
    SandboxBusy,
    SandboxError,
    SandboxMemoryError,
    SandboxOutputError,
    SandboxRuntimeError,
    SandboxTimeout,
    SecurityViolation,
)

if TYPE_CHECKING:
    from course_plugins.core.sandbox.config import SandboxConfig
    from course_plugins.core.sandbox.executor import SandboxedExecutor, SandboxResult, layers

__all__ = [
    "SandboxBusy",
    "SandboxConfig",
    "SandboxError",
    "SandboxMemoryError",
    "SandboxOutputError",
    "SandboxResult",
    "SandboxRuntimeError",
    "SandboxTimeout",
    "SandboxedExecutor",
    "SecurityViolation",
    "layers",
]

_LAZY = {
    "SandboxConfig": "course_plugins.core.sandbox.config",
    "SandboxedExecutor": "course_plugins.core.sandbox.executor",
    "SandboxResult": "course_plugins.core.sandbox.executor",
    "layers": "course_plugins.core.sandbox.executor",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
