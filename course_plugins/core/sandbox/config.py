"""``SandboxConfig``: the limits of one ``SandboxedExecutor``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from course_plugins.core.sandbox.facades import KNOWN_MODULES
from course_plugins.core.sandbox.policy import SANDBOX_MODULES

# Modules that exist as facades but make no sense in the sandbox (no event loop, no threads).
_NOT_IN_SANDBOX = frozenset({"asyncio", "threading"})


@dataclass(frozen=True)
class SandboxConfig:
    """Limits for code run by ``SandboxedExecutor.exec_code`` (each call gets all of them).

    ``timeout_seconds``: wall-clock budget; the process is killed when it is spent.
    ``max_memory_mb``: memory the code may allocate on top of the interpreter's own.
    ``enable_audit``: report refusals, blocked operations, timeouts and kills to the audit trail.
    ``max_cpu_seconds``: CPU budget (default: ``timeout_seconds`` rounded up, plus one).
    ``max_source_bytes`` / ``max_input_bytes`` / ``max_output_bytes`` / ``max_print_bytes``:
    size caps on the code, on the encoded inputs, on the encoded result and on printed text
    (printed text beyond the cap is cut, a result beyond it is an error).
    ``allowed_modules``: modules the code may import (as safe facades); a subset of the defaults.
    ``python``: interpreter for the sandbox processes (default: ``sys.executable``).
    """

    timeout_seconds: float = 5.0
    max_memory_mb: float = 100
    enable_audit: bool = True
    max_cpu_seconds: float | None = None
    max_source_bytes: int = 64 * 1024
    max_input_bytes: int = 1024 * 1024
    max_output_bytes: int = 1024 * 1024
    max_print_bytes: int = 64 * 1024
    allowed_modules: frozenset[str] = SANDBOX_MODULES
    python: str | None = None

    def __post_init__(self) -> None:
        modules = self.allowed_modules
        if isinstance(modules, str) or not isinstance(modules, Iterable):
            raise TypeError("SandboxConfig.allowed_modules must be a collection of module names")
        modules = frozenset(modules)
        unknown = sorted(modules - (KNOWN_MODULES - _NOT_IN_SANDBOX))
        if unknown:
            raise ValueError(
                f"SandboxConfig.allowed_modules: no safe facade for {unknown}; choose from "
                f"{sorted(SANDBOX_MODULES)}"
            )
        object.__setattr__(self, "allowed_modules", modules | {"__future__"})
        for name in ("timeout_seconds", "max_memory_mb"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"SandboxConfig.{name} must be a positive number, not {value!r}")
        if self.max_cpu_seconds is not None and not 0 < self.max_cpu_seconds < math.inf:
            raise ValueError("SandboxConfig.max_cpu_seconds must be a positive number or None")
        for name in ("max_source_bytes", "max_input_bytes", "max_output_bytes", "max_print_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"SandboxConfig.{name} must be a positive int, not {value!r}")

    @property
    def cpu_seconds(self) -> int:
        """The CPU budget in whole seconds (what ``RLIMIT_CPU`` can express)."""
        if self.max_cpu_seconds is not None:
            return max(1, math.ceil(self.max_cpu_seconds))
        return math.ceil(self.timeout_seconds) + 1

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SandboxConfig:
        """Build a config from a settings dict (``COURSE_PLUGINS["SANDBOX"]``).

        Raises ``ValueError`` naming an unknown key.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown sandbox setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))
