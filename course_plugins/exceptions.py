"""The error hierarchy of course_plugins; each error names the plugin, file or field it is about."""

from __future__ import annotations


class CoursePluginsError(Exception):
    """Base class of every error raised by course_plugins."""


def reason(error: object, name: str) -> str:
    """The text of ``error`` without the plugin name or id it starts with (``"name: ..."``,
    ``"name@1.0.0: ..."``): for a sentence that names plugin ``name`` itself."""
    text = str(error)
    for prefix in (f"{name}: ", f"{name}@"):
        if text.startswith(prefix):
            head, sep, rest = text.partition(": ")
            if sep and " " not in head:
                return rest
    return text


class HookTypeError(CoursePluginsError, TypeError):
    """A hook was defined again with a different type, or run with the wrong arguments."""


class PluginError(CoursePluginsError):
    """Something is wrong with one plugin; ``plugin`` names it (an id or a bare name)."""

    def __init__(self, plugin: str | None, message: str) -> None:
        self.plugin = plugin
        self.message = message
        super().__init__(f"{plugin}: {message}" if plugin else message)


class HookSignatureError(PluginError, TypeError):
    """A plugin registered a function that cannot take what its hook passes.

    ``hook`` names the hook, ``function`` the function; the message says which parameter to add
    or to give a default.
    """

    def __init__(self, plugin: str | None, hook: str, function: str, problem: str) -> None:
        self.hook = hook
        self.function = function
        super().__init__(plugin, f"{function}() cannot be registered on hook {hook!r}: {problem}")


class PluginFailedClosed(PluginError, ValueError):
    """A fail-closed plugin function failed or ran over its budget: the operation is refused.

    A veto (a ``ValueError``): the caller sees a refusal instead of the plugin's step being
    skipped. ``where`` names the hook (``"hook before-course-save"``), ``key`` the function and
    ``__cause__`` is the original error.
    """

    def __init__(
        self, plugin: str | None, where: str, key: str, cause: BaseException | None = None
    ) -> None:
        self.where = where
        self.key = key
        what = "ran over its time budget" if _is_timeout(cause) else f"failed ({cause!r})"
        super().__init__(
            plugin,
            f"{where}: {key} {what}; the hook fails closed, so the operation is refused. "
            "Fix or deactivate the plugin, or let it fail open.",
        )


def _is_timeout(exc: BaseException | None) -> bool:
    return exc is not None and any(
        cls.__name__ in ("TimeBudgetExceeded", "TimeoutError") for cls in type(exc).__mro__
    )


class PluginManifestError(PluginError):
    """``plugin.yaml`` is unreadable or fields are invalid; names the file and the field.

    ``errors`` holds every problem found in the file, each a ``PluginManifestError`` of one field
    (just this error when there is one): a manifest with several bad fields reports them all at
    once, one line each (see :meth:`every`).
    """

    def __init__(self, path: str, field: str | None, message: str, plugin: str | None = None):
        self.path = str(path)
        self.field = field
        where = f"{self.path}: field '{field}'" if field else self.path
        super().__init__(plugin, message)
        self.args = (f"{where}: {message}",)
        self.errors: tuple[PluginManifestError, ...] = (self,)

    @classmethod
    def every(
        cls, errors: list[PluginManifestError], plugin: str | None = None
    ) -> PluginManifestError:
        """One error for all the problems of one file: the only one itself, or an error whose
        message is theirs, one line each (``field`` and ``path`` are the first one's)."""
        found = [each for error in errors for each in error.errors]
        for each in found:
            each.plugin = each.plugin or plugin
        if len(found) == 1:
            return found[0]
        combined = cls(found[0].path, found[0].field, "\n".join(map(str, found)), plugin)
        combined.args = (combined.message,)
        combined.errors = tuple(found)
        return combined

    def __str__(self) -> str:
        return self.args[0]


class PluginNotFound(PluginError, KeyError):
    """No discovered plugin has that id or name."""

    def __str__(self) -> str:
        return self.message


class PluginDependencyError(PluginError):
    """A required plugin is missing, of the wrong version, inactive, or part of a cycle."""


class PluginStateError(PluginError):
    """The operation does not fit the plugin's current state (e.g. activating a faulted plugin)."""


class PluginPermissionError(PluginError, PermissionError):
    """A plugin used a Platform API part, hook or event its manifest does not grant."""


class PluginSettingsError(PluginError, ValueError):
    """A settings value does not fit the plugin's ``settings_schema``.

    ``errors`` maps each field to its message.
    """

    def __init__(self, plugin: str | None, errors: dict[str, str]) -> None:
        self.errors = dict(errors)
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))
        super().__init__(plugin, f"invalid settings: {detail}")


class ScheduleError(PluginError):
    """``api.schedule`` was given something that cannot be scheduled."""


class PlatformAPIError(PluginError):
    """A Platform API call was given something it cannot use (a non-JSON value, an unknown user)."""


class PlatformAPIUnavailable(PlatformAPIError):
    """A Platform API part needs a backend that is not configured (e.g. Django is not set up)."""


class PluginLoadError(PluginError):
    """Loading or activating a plugin failed (its code raised, broke the policy or ran too long).

    ``traceback`` holds the formatted traceback when the plugin's own code raised.
    """

    def __init__(self, plugin: str | None, message: str, traceback: str = "") -> None:
        super().__init__(plugin, message)
        self.traceback = traceback


class EventPatternError(CoursePluginsError, ValueError):
    """An event name or subscription pattern is malformed (empty segment, misplaced wildcard)."""


class AdviceError(CoursePluginsError, TypeError):
    """Advice was added with an unknown combinator or to something that is not a target name."""
