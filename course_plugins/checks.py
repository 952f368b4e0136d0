"""System checks (``manage.py check``) for the ``COURSE_PLUGINS`` settings and plugin folders.

``course_plugins.E001`` a plugin dir is missing or unreadable; ``E002`` unknown ``COURSE_PLUGINS``
key; ``E003`` a bad ``MODEL_HOOKS`` entry; ``W001`` a plugin asks for the ``schedule`` permission
but Celery has no broker configured (a warning: the site runs, only that plugin's schedules cannot);
``W007`` a plugin asks for ``notify`` and the site has no mail server configured;
``W010`` the cross-process stamp lives in a per-process cache; ``W011`` ``SyncMiddleware`` is not in
``MIDDLEWARE``; ``W012`` ``RUNS_CACHE`` names a missing or per-process cache (the hook inspector
then shows only the runs of the process it runs in); ``W013`` (``check --deploy`` only) the sandbox
isolated plugins run in lacks its seccomp or network-namespace layer on this machine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from django.apps import apps
from django.conf import settings
from django.core import checks

from course_plugins.api.backends.notify import DjangoNotifyBackend, mail_configured
from course_plugins.conf import DEFAULTS, SETTING_NAME, model_hook_entry, plugin_settings
from course_plugins.core.sandbox.errors import SandboxError
from course_plugins.site import sandbox_layers

# The hook names built from a MODEL_HOOKS value (before-<x>-save ...) must be valid hook names.
_HOOK_STEM = re.compile(r"^[a-z][a-z0-9_]*(?:-[a-z0-9_]+)*$")


@checks.register(checks.Tags.compatibility)
def check_plugin_dirs(
    app_configs: Iterable[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E001 for each ``PLUGIN_DIRS`` entry that is not a readable directory."""
    errors: list[checks.CheckMessage] = []
    dirs = plugin_settings.PLUGIN_DIRS
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    for entry in dirs:
        path = Path(entry)
        if not path.is_dir():
            problem = "does not exist" if not path.exists() else "is not a directory"
        elif not os.access(path, os.R_OK | os.X_OK):
            problem = "is not readable by this process"
        else:
            continue
        errors.append(
            checks.Error(
                f"COURSE_PLUGINS['PLUGIN_DIRS'] entry '{path}' {problem}.",
                hint="Create the folder, fix its permissions, or remove it from PLUGIN_DIRS.",
                id="course_plugins.E001",
            )
        )
    return errors


@checks.register(checks.Tags.compatibility)
def check_setting_keys(
    app_configs: Iterable[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E002 for each ``COURSE_PLUGINS`` key the app does not know (usually a typo)."""
    known = ", ".join(sorted(DEFAULTS))
    return [
        checks.Error(
            f"Unknown key {key!r} in settings.{SETTING_NAME}.",
            hint=f"Known keys: {known}.",
            id="course_plugins.E002",
        )
        for key in plugin_settings.unknown_keys()
    ]


@checks.register(checks.Tags.models)
def check_model_hooks(
    app_configs: Iterable[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E003 for each ``MODEL_HOOKS`` entry whose model does not exist or whose hook stem is bad."""
    model_hooks = plugin_settings.MODEL_HOOKS
    if not isinstance(model_hooks, dict):
        return [
            checks.Error(
                f"COURSE_PLUGINS['MODEL_HOOKS'] must be a dict, not {type(model_hooks).__name__}.",
                hint='Write it as {"app_label.Model": "stem"}, e.g. {"courses.Course": "course"}.',
                id="course_plugins.E003",
            )
        ]
    errors: list[checks.CheckMessage] = []
    for label, value in model_hooks.items():
        where = f"COURSE_PLUGINS['MODEL_HOOKS'][{label!r}]"
        stem, org_path = model_hook_entry(value)
        model = None
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            errors.append(
                checks.Error(
                    f"{where}: no installed model '{label}'.",
                    hint="Use 'app_label.ModelName' of a model in INSTALLED_APPS.",
                    id="course_plugins.E003",
                )
            )
        if model is not None and org_path is not None:
            problem = _org_path_problem(model, org_path)
            if problem:
                errors.append(
                    checks.Error(
                        f"{where}: organization path {org_path!r} {problem}.",
                        hint="Name the foreign key (or chain of them, joined with '__') from "
                        "this model to COURSE_PLUGINS['ORGANIZATION_MODEL'], e.g. "
                        "'course__organization'.",
                        id="course_plugins.E003",
                    )
                )
        if not isinstance(stem, str) or not _HOOK_STEM.match(stem):
            errors.append(
                checks.Error(
                    f"{where} = {value!r} is not a valid hook stem.",
                    hint="Use a lowercase name such as 'course': it makes the hooks "
                    "before-course-save, after-course-save, before-course-delete.",
                    id="course_plugins.E003",
                )
            )
    return errors


def _org_path_problem(model: Any, path: str) -> str:
    """What is wrong with ``path`` from ``model`` to the organization model ('' if nothing)."""
    target = plugin_settings.ORGANIZATION_MODEL
    if not target:
        return "is set but COURSE_PLUGINS['ORGANIZATION_MODEL'] is not"
    for part in path.replace(".", "__").split("__"):
        try:
            field = model._meta.get_field(part)
        except Exception:
            return f"has no field {part!r} on {model._meta.label}"
        if not field.is_relation or field.related_model is None:
            return f"goes through {part!r}, which is not a relation"
        model = field.related_model
    try:
        wanted = apps.get_model(target)
    except (LookupError, ValueError):
        return f"leads to {model._meta.label}, but ORGANIZATION_MODEL {target!r} is not a model"
    if model is not wanted:
        return f"leads to {model._meta.label}, not to {wanted._meta.label}"
    return ""


def _plugins_asking_for(permission: str) -> list[str]:
    """Names of plugins found on disk whose ``plugin.yaml`` lists ``permission``.

    Reads the manifests directly (no database in checks, and a broken manifest is the loader's
    business: it is reported in the admin, not here).
    """
    dirs = plugin_settings.PLUGIN_DIRS
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    found: list[str] = []
    for entry in dirs:
        root = Path(entry)
        if not root.is_dir():
            continue
        for manifest_path in sorted(root.glob("*/plugin.yaml")):
            try:
                data = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue
            if not isinstance(data, dict):
                continue
            permissions = data.get("permissions") or []
            if isinstance(permissions, list) and permission in permissions:
                found.append(str(data.get("name") or manifest_path.parent.name))
    return found


# What the README's set-up adds to a project, and what goes wrong without it.
_NEEDED_APPS = (
    ("rest_framework", "the REST API's browsable pages cannot render (TemplateDoesNotExist)"),
    ("drf_spectacular", "the Swagger UI at <api>/docs/ cannot render"),
    ("django_celery_beat", "repeating api.schedule() calls cannot be stored"),
)
CURRENT_USER_MIDDLEWARE = "course_plugins.middleware.CurrentUserMiddleware"


@checks.register(checks.Tags.compatibility)
def check_project_setup(
    app_configs: Iterable[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W002 an app the set-up needs is missing; W003 ``CurrentUserMiddleware`` is missing;
    W004 ``MODEL_HOOKS`` maps no model; W005 a plugin asks for ``courses`` and ``COURSE_MODEL``
    names no installed model; W006 the site has organizations, a plugin asks for ``courses`` and
    ``COURSE_ORGANIZATION_FIELD`` is not a field of ``COURSE_MODEL``."""
    messages: list[checks.CheckMessage] = [
        checks.Warning(
            f"'{app}' is not in INSTALLED_APPS: {consequence}.",
            hint=f"Add '{app}' to INSTALLED_APPS (see the README's settings).",
            id="course_plugins.W002",
        )
        for app, consequence in _NEEDED_APPS
        if not apps.is_installed(app)
    ]
    if CURRENT_USER_MIDDLEWARE not in settings.MIDDLEWARE:
        messages.append(
            checks.Warning(
                f"{CURRENT_USER_MIDDLEWARE} is not in MIDDLEWARE: api.users.get_current() returns "
                "None in requests.",
                hint="Add it to MIDDLEWARE after AuthenticationMiddleware.",
                id="course_plugins.W003",
            )
        )
    if not plugin_settings.MODEL_HOOKS:
        messages.append(
            checks.Warning(
                "COURSE_PLUGINS['MODEL_HOOKS'] maps no model: plugins have no before-/after-save "
                "hooks and no <model>.created events to use.",
                hint='Map your models, e.g. "MODEL_HOOKS": {"school.Lesson": "lesson"}.',
                id="course_plugins.W004",
            )
        )
    course_model = plugin_settings.COURSE_MODEL
    asking = _plugins_asking_for("courses")
    if asking:
        try:
            model = apps.get_model(str(course_model))
        except (LookupError, ValueError):
            model = None
            messages.extend(
                checks.Warning(
                    f"Plugin '{name}' asks for the 'courses' permission, but "
                    f"COURSE_PLUGINS['COURSE_MODEL'] = {course_model!r} is not an installed "
                    "model: its api.courses calls will fail.",
                    hint="Set COURSE_MODEL (and COURSE_ORGANIZATION_FIELD) to your course-like "
                    "model, or COURSES_BACKEND to a backend of your own.",
                    id="course_plugins.W005",
                )
                for name in asking
            )
        field = plugin_settings.COURSE_ORGANIZATION_FIELD
        if model is not None and plugin_settings.ORGANIZATION_MODEL and not any(
            f.name == field or f.attname == field for f in model._meta.concrete_fields
        ):
            messages.append(
                checks.Warning(
                    f"COURSE_PLUGINS['COURSE_ORGANIZATION_FIELD'] = {field!r} is not a field of "
                    f"{course_model}: api.courses.list_by_organization will fail for "
                    f"{', '.join(sorted(asking))}.",
                    hint=f"Set COURSE_ORGANIZATION_FIELD to the field of {course_model} that "
                    "points to its organization.",
                    id="course_plugins.W006",
                )
            )
    return messages


def celery_configured() -> bool:
    """Return True when the current Celery app has a broker (or runs tasks eagerly)."""
    try:
        from celery import current_app
    except ImportError:  # pragma: no cover - celery is a dependency
        return False
    conf = current_app.conf
    return bool(conf.broker_url or conf.task_always_eager)


@checks.register(checks.Tags.compatibility)
def check_schedule_backend(
    app_configs: Iterable[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W001 when a plugin asks for ``schedule`` and Celery has no broker configured."""
    if celery_configured():
        return []
    return [
        checks.Warning(
            f"Plugin '{name}' asks for the 'schedule' permission, but Celery has no broker "
            "configured: its api.schedule() calls will not run.",
            hint="Set CELERY_BROKER_URL (and load it with app.config_from_object("
            "'django.conf:settings', namespace='CELERY')), or do not activate this plugin.",
            id="course_plugins.W001",
        )
        for name in _plugins_asking_for("schedule")
    ]


@checks.register(checks.Tags.compatibility)
def check_mail(
    app_configs: Iterable[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W007 when a plugin asks for ``notify``, the default notify backend sends its e-mail and
    the site has no mail server configured (Django's defaults: SMTP to ``localhost:25``)."""
    backend = plugin_settings.NOTIFY_BACKEND
    if not (isinstance(backend, type) and issubclass(backend, DjangoNotifyBackend)):
        return []  # a backend of the site's own sends (or not) as it likes
    if mail_configured():
        return []
    return [
        checks.Warning(
            f"Plugin '{name}' asks for the 'notify' permission, but this site has no mail "
            "server configured (EMAIL_BACKEND is Django's SMTP backend with its default "
            "EMAIL_HOST 'localhost' and EMAIL_PORT 25): its api.notify.send_email calls send "
            "nothing unless a mail server answers there.",
            hint="Set EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD and "
            "EMAIL_USE_TLS for your mail server, or EMAIL_BACKEND (e.g. "
            "'django.core.mail.backends.console.EmailBackend' during development).",
            id="course_plugins.W007",
        )
        for name in _plugins_asking_for("notify")
    ]


_PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)
SYNC_MIDDLEWARE = "course_plugins.middleware.SyncMiddleware"


@checks.register(checks.Tags.caches)
def check_sync_setup(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W010: the sync cache is private to each process; W011: ``SyncMiddleware`` is missing;
    W012: the runs cache is missing or private to each process."""
    messages: list[checks.CheckMessage] = []
    alias = plugin_settings.SYNC_CACHE
    backend = settings.CACHES.get(alias, {}).get("BACKEND", "")
    if backend in _PER_PROCESS_CACHES:
        messages.append(
            checks.Warning(
                f"COURSE_PLUGINS['SYNC_CACHE'] is the cache {alias!r} ({backend}), which each "
                "process keeps for itself: a plugin toggled in one process will not reach the "
                "others.",
                hint="Point SYNC_CACHE at a cache all processes share: Redis "
                "(django.core.cache.backends.redis.RedisCache), or on one machine "
                "FileBasedCache / DatabaseCache.",
                id="course_plugins.W010",
            )
        )
    runs_alias = plugin_settings.RUNS_CACHE
    if runs_alias and runs_alias != alias:
        runs_backend = settings.CACHES.get(runs_alias, {}).get("BACKEND", "")
        if not runs_backend or runs_backend in _PER_PROCESS_CACHES:
            what = f"({runs_backend}), which each process keeps for itself" if runs_backend else (
                "which is not in CACHES"
            )
            messages.append(
                checks.Warning(
                    f"COURSE_PLUGINS['RUNS_CACHE'] is the cache {runs_alias!r} {what}: the hook "
                    "inspector and GET /api/hooks/<hook>/runs/ show only the runs of the process "
                    "that answers.",
                    hint="Point RUNS_CACHE at a cache all processes share, or leave it None to "
                    "use SYNC_CACHE.",
                    id="course_plugins.W012",
                )
            )
    if SYNC_MIDDLEWARE not in settings.MIDDLEWARE:
        messages.append(
            checks.Warning(
                f"{SYNC_MIDDLEWARE} is not in MIDDLEWARE: web processes will not follow plugin "
                "changes made in other processes.",
                hint=f"Add '{SYNC_MIDDLEWARE}' to MIDDLEWARE.",
                id="course_plugins.W011",
            )
        )
    return messages


_LAYER_HINTS = {
    "seccomp": "Install the sandbox extra (pip install 'course-plugins[sandbox]') and your OS's "
    "libseccomp2 package; see docs/security.md.",
    "netns": "Run the site where unshare(CLONE_NEWNET) is allowed (root, or a container with "
    "CAP_SYS_ADMIN); without it only seccomp keeps isolated plugins off the network.",
}


@checks.register(checks.Tags.security, deploy=True)
def check_sandbox_layers(
    app_configs: Iterable[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W013 (``check --deploy``) for each kernel layer the sandbox lacks on this machine.

    A deployment check, not one run by every command: it starts the sandbox to ask it, and
    ``migrate`` or ``shell`` need not repeat it each time.
    """
    if plugin_settings.TRUSTED_PLUGINS is True:
        return []  # no plugin runs isolated
    try:
        missing = sandbox_layers.weakened(sandbox_layers.current())
    except SandboxError as exc:
        return [
            checks.Warning(
                f"The sandbox isolated plugins run in could not start on this machine: {exc}.",
                hint="See docs/security.md (Requirements).",
                id="course_plugins.W013",
            )
        ]
    return [
        checks.Warning(
            f"The sandbox isolated plugins run in has no {name} layer on this machine: {why}.",
            hint=_LAYER_HINTS[name],
            id="course_plugins.W013",
        )
        for name, why in missing.items()
    ]
