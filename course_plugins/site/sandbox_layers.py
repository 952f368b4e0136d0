"""The sandbox's OS layers as the site reports them, where that helps.

Once when a server process (a web worker at its first request, a Celery worker at its first task)
has started isolated plugins; in ``manage.py plugins list``; in ``manage.py check --deploy``
(``course_plugins.W013`` for a missing seccomp or network-namespace layer). Not on every command:
a ``migrate`` or ``shell -c`` that starts the plugins for a moment runs the sandbox quietly (the
core logs its layers at DEBUG only).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from course_plugins.core.sandbox import executor
from course_plugins.core.sandbox.errors import SandboxError

__all__ = ["current", "report_once", "summary", "weakened"]

logger = logging.getLogger("course_plugins.security")

_reported_pid: int | None = None


def current() -> dict[str, Any]:
    """The layers active on this machine (starts the sandbox's zygote if it is not running).

    Raises ``SandboxError`` when the sandbox cannot start.
    """
    return executor.layers()


def summary(found: dict[str, Any]) -> str:
    """``found`` (a :func:`current` answer) as one line: the active layers, then the missing
    ones with why."""
    return "sandbox layers active: " + executor.describe_layers(found)


def weakened(found: dict[str, Any]) -> dict[str, str]:
    """The missing layers of ``found`` that weaken the sandbox (seccomp, the network namespace),
    each with why it is off; empty when the kernel barrier is whole."""
    return {
        name: why
        for name, why in executor.missing_layers(found).items()
        if name in executor.WEAKENING_LAYERS
    }


def report_once() -> None:
    """Log :func:`summary` once per process if this process runs the sandbox (its isolated
    plugins started it): a warning when :func:`weakened`, else at INFO. Never raises."""
    global _reported_pid
    if _reported_pid == os.getpid() or executor.zygote_pid() is None:
        return
    _reported_pid = os.getpid()
    try:
        found = current()
    except SandboxError:
        return  # the isolated plugins' own errors say so
    log = logger.warning if weakened(found) else logger.info
    log("%s", summary(found))
