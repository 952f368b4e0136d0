"""One settings object over ``settings.COURSE_PLUGINS`` (DEFAULTS, dotted-path imports, reloads).

Modelled on DRF's ``api_settings``: read ``plugin_settings.PLUGIN_DIRS``; never
``getattr(settings, ...)`` elsewhere. Changing ``COURSE_PLUGINS`` (``override_settings``)
reloads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from course_plugins.core.options import options

SETTING_NAME = "COURSE_PLUGINS"

DEFAULTS: dict[str, Any] = {
    # Folders searched for plugins (each subfolder with a plugin.yaml is a plugin).
    "PLUGIN_DIRS": [],
    # "app_label.Model": "x" -> hooks before-x-save, after-x-save, before-x-delete and
    # events x.created, x.updated, x.deleted. The long form also says how an instance finds its
    # organization: {"name": "x", "organization": "course__organization"} (a field path).
    "MODEL_HOOKS": {},
    # The tenant model ("app_label.Model"); None: plugins are site-wide only.
    "ORGANIZATION_MODEL": None,
    # Who administers which organizations: a lookup on ORGANIZATION_MODEL compared with the user
    # ("admins" -> Organization.objects.filter(admins=user)) or a dotted path to a function
    # fn(user) -> iterable of organization primary keys. None: only site operators manage them.
    "ORGANIZATION_ADMINS": None,
    # Plugins (names) whose code runs in the site's own processes; every other plugin runs
    # isolated in a confined worker process (docs/security.md). True: every plugin is trusted.
    # The admin and the REST API can also mark a plugin trusted (Plugin.trusted).
    "TRUSTED_PLUGINS": [],
    # Re-raise isolated plugin errors instead of logging them (for plugin authors' tests).
    "STRICT": False,
    # Time budget (seconds) of one plugin hook function / event handler call.
    "HOOK_TIMEOUT": 5.0,
    # Failures in a row after which a plugin is quarantined ("faulted").
    "MAX_FAILURES": 5,
    # Activate enabled plugins when the app starts (off in management commands that must not).
    "AUTOLOAD": True,
    # Platform API backends (dotted paths to classes).
    "USERS_BACKEND": "course_plugins.api.backends.users.DjangoUsersBackend",
    "COURSES_BACKEND": "course_plugins.api.backends.courses.ModelCoursesBackend",
    "NOTIFY_BACKEND": "course_plugins.api.backends.notify.DjangoNotifyBackend",
    "ANALYTICS_BACKEND": "course_plugins.api.backends.analytics.ModelAnalyticsBackend",
    # Model used by the default courses backend ("app_label.Model"), and its organization field.
    "COURSE_MODEL": "courses.Course",
    "COURSE_ORGANIZATION_FIELD": "organization",
    # How often (seconds) a process checks whether another process changed plugin state.
    "SYNC_INTERVAL": 1.0,
    # Cache alias used for the cross-process state stamp.
    "SYNC_CACHE": "default",
    # Record recent runs of every hook (what each function did) for the hook inspector and
    # GET /api/hooks/<hook>/runs/; RUNS_KEPT per hook, one run in RUNS_SAMPLE (1: every run).
    # Runs involving a plugin in shadow mode are always recorded.
    "RECORD_RUNS": True,
    "RUNS_KEPT": 50,
    "RUNS_SAMPLE": 1,
    # Cache alias the processes share their recorded runs through (None: SYNC_CACHE).
    "RUNS_CACHE": None,
    # Sandbox defaults for SandboxedExecutor instances made by the platform.
    "SANDBOX": {"timeout_seconds": 5.0, "max_memory_mb": 100, "enable_audit": True},
}

IMPORT_STRINGS = (
    "USERS_BACKEND",
    "COURSES_BACKEND",
    "NOTIFY_BACKEND",
    "ANALYTICS_BACKEND",
)


class PluginSettings:
    """Attribute access to ``COURSE_PLUGINS`` with defaults; unknown keys are reported by checks."""

    def __init__(self, user_settings: dict[str, Any] | None = None) -> None:
        self._user_settings = user_settings
        self._cached: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        if self._user_settings is None:
            given = getattr(settings, SETTING_NAME, {}) or {}
            if not isinstance(given, Mapping):
                raise ImproperlyConfigured(
                    f"settings.{SETTING_NAME} must be a dict such as "
                    f'{{"PLUGIN_DIRS": [...], "MODEL_HOOKS": {{...}}}}, got {type(given).__name__}'
                )
            self._user_settings = dict(given)
        return self._user_settings

    def unknown_keys(self) -> list[str]:
        return sorted(set(self.user_settings) - set(DEFAULTS))

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_") or attr not in DEFAULTS:
            raise AttributeError(f"Invalid course_plugins setting: {attr!r}")
        if attr in self._cached:
            return self._cached[attr]
        value = self.user_settings.get(attr, DEFAULTS[attr])
        if attr in IMPORT_STRINGS and isinstance(value, str):
            try:
                value = import_string(value)
            except ImportError as exc:
                raise ImportError(
                    f"COURSE_PLUGINS[{attr!r}] = {value!r} could not be imported: {exc}"
                ) from exc
        self._cached[attr] = value
        return value

    def reload(self) -> None:
        self._user_settings = None
        self._cached.clear()
        apply_core_options()


plugin_settings = PluginSettings()


def model_hook_entry(value: Any) -> tuple[Any, str | None]:
    """Split one ``MODEL_HOOKS`` value into ``(hook stem, organization path or None)``.

    ``"course"`` and ``{"name": "course", "organization": "organization"}`` are both accepted;
    the path is a Django-style field path from the instance to its organization
    (``course__organization``; dots work too). Anything else comes back as ``(value, None)``
    for the system check to report.
    """
    if isinstance(value, dict):
        path = value.get("organization")
        return value.get("name"), (str(path) if path else None)
    return value, None


def infrastructure_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean a service of the site is down, not that a plugin is faulty.

    The database unreachable or gone away (Django's ``OperationalError``/``InterfaceError``; not
    ``IntegrityError``/``ProgrammingError``/``DataError``, which a plugin's own query can cause),
    the broker unreachable (kombu's ``OperationalError``, what Celery raises when publishing
    fails), the cache or broker's Redis unreachable or timing out (redis-py's ``ConnectionError``/
    ``TimeoutError``), when those libraries are installed.
    """
    from django.db import InterfaceError, OperationalError

    errors: list[type[BaseException]] = [OperationalError, InterfaceError]
    try:
        from kombu.exceptions import OperationalError as BrokerError

        errors.append(BrokerError)
    except ImportError:  # pragma: no cover - celery (and kombu) is a dependency
        pass
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        errors += [RedisConnectionError, RedisTimeoutError]
    except ImportError:  # a site without Redis
        pass
    return tuple(errors)


def trusted_by_setting(name: str) -> bool:
    """Whether ``COURSE_PLUGINS["TRUSTED_PLUGINS"]`` (``True``, a list of names, or one name)
    trusts plugin ``name``."""
    listed = plugin_settings.TRUSTED_PLUGINS
    if isinstance(listed, str):
        listed = [listed]  # one name: never a substring match ("lesson" in "lesson-guard")
    return listed is True or name in (listed or ())


def _number(key: str, kind: type[float] | type[int], expected: str) -> Any:
    """``COURSE_PLUGINS[key]`` as a positive ``kind``, else ``ImproperlyConfigured`` saying so."""
    value = getattr(plugin_settings, key)
    numeric = not isinstance(value, bool) and isinstance(value, (int, float))
    if numeric and (kind is float or float(value).is_integer()) and value > 0:
        return kind(value)
    raise ImproperlyConfigured(
        f"settings.{SETTING_NAME}[{key!r}] must be {expected}; got {value!r}"
    )


def apply_core_options() -> None:
    """Push the knobs the Django-free engine reads into ``core.options``."""
    options.strict = bool(plugin_settings.STRICT)
    options.hook_timeout = _number("HOOK_TIMEOUT", float, "seconds greater than 0, such as 5.0")
    options.max_failures = _number("MAX_FAILURES", int, "a whole number greater than 0, such as 5")
    options.infrastructure_errors = infrastructure_errors()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        plugin_settings.reload()


setting_changed.connect(_reload)
