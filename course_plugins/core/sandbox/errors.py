"""Errors of the sandbox and of the code policy; every one says what happened and what to do."""

from __future__ import annotations

from course_plugins.exceptions import CoursePluginsError


class SandboxError(CoursePluginsError):
    """Base class of every sandbox error (also raised alone when the sandbox process died oddly)."""


class SecurityViolation(SandboxError):
    """Code was rejected by analysis, or tried a blocked operation at run time.

    ``reason`` says what was refused and what to do instead; ``filename``/``lineno`` locate it.
    ``str()`` reads ``file:line: reason``.
    """

    def __init__(
        self,
        reason: str = "blocked by the security policy",
        filename: str | None = None,
        lineno: int | None = None,
        *,
        plugin: str | None = None,
    ) -> None:
        self.reason = reason
        self.filename = filename
        self.lineno = lineno
        self.plugin = plugin
        super().__init__(reason, filename, lineno)

    def __str__(self) -> str:
        where = self.filename or ""
        if self.lineno is not None:
            where = f"{where or '<string>'}:{self.lineno}"
        prefix = f"{self.plugin}: " if self.plugin else ""
        return f"{prefix}{where}: {self.reason}" if where else f"{prefix}{self.reason}"

    def __reduce__(self) -> tuple[object, ...]:
        return (self.__class__, (self.reason, self.filename, self.lineno), {"plugin": self.plugin})


class SandboxTimeout(SandboxError):
    """The code ran over its time budget (wall clock or CPU) and was stopped.

    Constructible without arguments: the watchdog raises the class itself in the running thread.
    """

    def __init__(self, message: str = "", *, seconds: float | None = None, kind: str = "wall"):
        self.seconds = seconds
        self.kind = kind
        if not message:
            budget = f" of {seconds:g} s" if seconds is not None else ""
            message = (
                f"the code ran over its {kind} time budget{budget} and was stopped: make it do "
                "less work per call, or raise the timeout"
            )
        super().__init__(message)


class SandboxMemoryError(SandboxError):
    """The code tried to use more memory than ``max_memory_mb`` allows."""

    def __init__(self, message: str = "", *, limit_mb: float | None = None) -> None:
        self.limit_mb = limit_mb
        if not message:
            limit = f" of {limit_mb:g} MB" if limit_mb is not None else ""
            message = (
                f"the code went over its memory limit{limit}: work on smaller data, or raise "
                "max_memory_mb"
            )
        super().__init__(message)


class SandboxBusy(SandboxError):
    """Too many calls were waiting for the sandbox: this one was refused (or waited its whole
    timeout in the queue) without running. Retry later, or call less often."""


class SandboxOutputError(SandboxError):
    """The code's result was too large or not plain data, so it could not cross back."""


class SandboxRuntimeError(SandboxError):
    """The sandboxed code raised; ``type_name`` and ``message`` describe its exception.

    ``lineno`` is the line of the sandboxed source where it was raised, when known.
    """

    def __init__(
        self, type_name: str = "Exception", message: str = "", *, lineno: int | None = None
    ):
        self.type_name = type_name
        self.message = message
        self.lineno = lineno
        line = f" (line {lineno})" if lineno is not None else ""
        super().__init__(f"{type_name}: {message}{line}" if message else f"{type_name}{line}")

    def __reduce__(self) -> tuple[object, ...]:
        return (self.__class__, (self.type_name, self.message), {"lineno": self.lineno})
