"""Model hooks: model saves/deletes and auth signals become plugin hooks and events, and a
plugin's veto becomes a validation error wherever it surfaces (forms, the admin, the REST API).

For every ``"app_label.Model": "x"`` in ``COURSE_PLUGINS["MODEL_HOOKS"]``:

``before-x-save`` (FILTER)
    ``pre_save``; called with a dict of the instance's field values (foreign keys by attname,
    e.g. ``organization_id``). Keys changed in the returned dict are set on the instance before it
    is written. A veto (``ValueError``, ``ValidationError``, ``PermissionDenied``) becomes a
    :class:`PluginVeto`, a Django ``ValidationError``, and the row is not written.
``after-x-save`` (NORMAL)
    ``post_save``; called with ``(data, created)``. Then ``x.created`` / ``x.updated`` is published.
``before-x-delete`` (NORMAL)
    ``pre_delete``; called with the data; a veto refuses the delete. ``post_delete`` publishes
    ``x.deleted``.

Events caused by a database change are published from ``transaction.on_commit``, so a change that
is rolled back publishes nothing. Auth signals publish ``user.created`` (a new row of the user
model), ``user.login`` and ``user.logout``. Every receiver costs one dict lookup for models that are
not bridged, so the bridge is connected for all senders and follows ``override_settings``.

Vetoes reach the user with the plugin's message wherever the save came from, with nothing to
configure in the project:

- forms: ``Model.full_clean()`` of a bridged model runs ``before-x-save`` once the model's own
  validation passed, so every ``ModelForm`` and every ``ModelAdmin`` shows a refusal as a form
  error and renders the form again. The instance remembers the values it was validated with:
  the ``save()`` that follows does not run the hook a second time (side effects happen once).
- DRF: :class:`PluginVeto` is also a DRF ``ValidationError``, so any DRF view answers 400
  ``{"non_field_errors": [...]}`` (or per field) through DRF's own exception handling.
- elsewhere (the shell, scripts, tasks): ``PluginVeto`` is raised from ``save()``/``delete()``.

:class:`PluginHookModelForm` and :class:`PluginVetoAdminMixin` remain for admins that want a veto
raised later (delete, bulk actions, ``save_model`` changing values) shown as a message.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import json
import logging
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.signals import setting_changed
from django.db import models, router, transaction
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from rest_framework import exceptions as drf_exceptions
from rest_framework import settings as drf_settings

from course_plugins.conf import SETTING_NAME, model_hook_entry, plugin_settings
from course_plugins.core.event_bus import Event, EventBus
from course_plugins.core.health import PluginRaised, reportable
from course_plugins.core.hook_manager import HookManager, HookType
from course_plugins.core.isolation.wire import decimal_in_bounds
from course_plugins.core.options import options
from course_plugins.core.run_data import type_name
from course_plugins.core.scope import current_scope, entered
from course_plugins.core.standard import model_hook_specs
from course_plugins.exceptions import HookTypeError
from course_plugins.site import organizations, outbox, runtime

logger = logging.getLogger("course_plugins.model_hooks")

# Set on an instance by run_before_save() (form validation) so that pre_save does not run the
# before-save hook a second time for the very same values.
_CHECKED_ATTR = "_course_plugins_checked"
_CHANGED_ATTR = "_course_plugins_changed"
_DISPATCH = "course_plugins.model_hooks"


class PluginVeto(drf_exceptions.ValidationError, ValidationError):
    """A plugin refused a save or delete, with the plugin's message.

    A Django ``ValidationError`` (forms show it as a form error) and a DRF ``ValidationError``
    (DRF views answer 400 with it, under any ``EXCEPTION_HANDLER`` that calls DRF's). ``hook`` is
    the hook that refused (``before-course-save``), ``model`` the model label.
    """

    status_code = 400

    def __init__(self, message: Any, *, hook: str, model: str) -> None:
        ValidationError.__init__(self, message)
        self.hook = hook
        self.model = model
        if hasattr(self, "error_dict"):
            detail: Any = self.message_dict
        else:
            detail = {drf_settings.api_settings.NON_FIELD_ERRORS_KEY: self.messages}
        self.detail = drf_exceptions.ValidationError(detail).detail

    def __str__(self) -> str:
        return ValidationError.__str__(self)


@dataclass(frozen=True)
class ModelHooks:
    """The hook and event names derived from one ``MODEL_HOOKS`` entry, and the field path
    from an instance to its organization (``None``: the model has no organization)."""

    label: str
    stem: str
    org_path: tuple[str, ...] | None = None

    @property
    def before_save(self) -> str:
        return f"before-{self.stem}-save"

    @property
    def after_save(self) -> str:
        return f"after-{self.stem}-save"

    @property
    def before_delete(self) -> str:
        return f"before-{self.stem}-delete"

    def event(self, what: str) -> str:
        return f"{self.stem}.{what}"


_by_label: dict[str, ModelHooks] | None = None


def bridged_models() -> dict[str, ModelHooks]:
    """Return ``{"app_label.model" (lower case): ModelHooks}`` from ``MODEL_HOOKS`` (cached)."""
    global _by_label
    if _by_label is None:
        table = {}
        for label, value in dict(plugin_settings.MODEL_HOOKS).items():
            stem, path = model_hook_entry(value)
            org_path = tuple(path.replace(".", "__").split("__")) if path else None
            table[str(label).lower()] = ModelHooks(str(label), str(stem), org_path)
        _by_label = table
    return _by_label


def hooks_for(model: type[models.Model]) -> ModelHooks | None:
    """Return the bridge entry of ``model`` (or of its concrete model, for proxies), or ``None``."""
    table = bridged_models()
    if not table:
        return None
    opts = model._meta
    entry = table.get(opts.label_lower)
    if entry is None and opts.proxy:
        entry = table.get(opts.concrete_model._meta.label_lower)
    return entry


def define_model_hooks() -> list[str]:
    """Define the hooks of every ``MODEL_HOOKS`` entry on the process-wide manager.

    Returns the hook names defined. A name already defined with another type is logged (the
    system check reports bad entries) and left alone, so start-up never fails here.
    """
    hooks = HookManager.get_instance()
    names: list[str] = []
    for entry in bridged_models().values():
        # Declared in core.standard (signatures checked when plugins register functions).
        for spec in model_hook_specs(entry.stem, entry.label):
            try:
                hooks.define(spec.name, HookType(spec.kind.value), description=spec.description)
            except (HookTypeError, TypeError, ValueError) as exc:
                logger.error(
                    "MODEL_HOOKS[%r]: cannot define hook %s: %s", entry.label, spec.name, exc
                )
                continue
            names.append(spec.name)
    return names


def instance_data(instance: models.Model) -> dict[str, Any]:
    """Return the instance's concrete field values keyed by attname (``organization_id``)."""
    return {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}


_JSON_PLAIN = frozenset({str, int, float, bool, type(None)})
_IMMUTABLE = _JSON_PLAIN | {datetime.datetime, datetime.date, datetime.time, datetime.timedelta,
                            decimal.Decimal, uuid.UUID}
_encoder = DjangoJSONEncoder()


def json_safe(data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` as plain JSON types (datetimes as ISO 8601 strings), for event payloads.

    Exactly what a round trip through ``DjangoJSONEncoder`` gives; field values that are already
    plain, or a date, time, duration, decimal or uuid, are converted one by one (every save
    publishes an event: no text is written and parsed again for them)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        kind = type(value)
        if kind in _JSON_PLAIN:
            out[key] = value
        elif kind in _IMMUTABLE:
            out[key] = _encoder.default(value)
        else:
            break
        if type(key) is not str:
            break
    else:
        return out
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _copy_data(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` that a hook may change freely: shallow when every value is immutable
    (the usual field values), deep otherwise (a ``JSONField``'s dict or list)."""
    for value in data.values():
        if type(value) not in _IMMUTABLE:
            return copy.deepcopy(data)
    return dict(data)


_PLAIN_DEPTH = 32


def plain_field_value(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` may be set on a field from a hook's result: data whose comparison,
    hashing and conversion by the ORM run no code but the interpreter's (exact builtin scalars,
    dates and times in UTC offsets, bounded ``Decimal``s, and for a ``JSONField`` dicts with
    string keys, lists and tuples of them). A plugin's own object (a subclass of ``str`` or
    ``dict`` included, or a datetime with its own ``tzinfo``) would run the plugin's methods in
    the site's code, after the hook run ended and outside the plugin's budget."""
    kind = type(value)
    if kind in _JSON_PLAIN or kind is uuid.UUID or kind is datetime.date or (
        kind is datetime.timedelta
    ):
        return True
    if kind is datetime.datetime or kind is datetime.time:
        zone = value.tzinfo
        return zone is None or type(zone) is datetime.timezone
    if kind is decimal.Decimal:
        # ``int()`` of ``Decimal("1e999999999")`` (what the ORM does for an integer field or a
        # foreign key) takes hours, in one C call nothing interrupts: the bound values crossing
        # to and from isolated plugins have.
        return decimal_in_bounds(value)
    if depth >= _PLAIN_DEPTH:
        return False
    if kind is dict:
        return all(type(key) is str and plain_field_value(item, depth + 1)
                   for key, item in value.items())
    if kind is list or kind is tuple:
        return all(plain_field_value(item, depth + 1) for item in value)
    return False


def apply_changes(instance: models.Model, before: dict[str, Any], after: Any) -> list[str]:
    """Set on ``instance`` the fields a before-save hook changed; return their attnames.

    ``before`` is the dict the hook was given a copy of. Keys may be attnames or field names
    (``organization`` for ``organization_id``); unknown keys and the primary key are ignored. A
    result that is not a dict changes nothing. Only plain data is applied
    (``plain_field_value``; anything else is logged and left out), and the result is read
    without calling any method of it: this runs after the hook run, where a trusted plugin's
    ``__ne__`` or ``items`` that loops would hold the request for ever.
    """
    if not issubclass(type(after), dict):
        return []
    changed: list[str] = []
    by_name = {}
    for f in instance._meta.concrete_fields:
        by_name[f.attname] = f
        by_name.setdefault(f.name, f)
    for key, value in dict.items(after):
        field = by_name.get(key) if type(key) is str else None
        if field is None or field.primary_key:
            continue
        if not plain_field_value(value):
            logger.warning(
                "%s: the value a before-save hook returned for %s is not plain data (%s); it "
                "is not applied", instance._meta.label, field.attname, type_name(value),
            )
            continue
        if before.get(field.attname) != value:
            setattr(instance, field.attname, value)
            changed.append(field.attname)
    return changed


def _veto(exc: BaseException, hook: str, model: str) -> PluginVeto:
    """The ``PluginVeto`` for ``exc``, caused by it (or by its stand-in: the text of a plugin's
    own exception class is read once under the plugin's budget, see ``core.health.reportable``:
    a ``__str__`` that never returns held the request for ever)."""
    if isinstance(exc, ValidationError):
        veto = PluginVeto(exc, hook=hook, model=model)
        veto.__cause__ = exc
        return veto
    shown = reportable(exc)
    text = shown.text if isinstance(shown, PluginRaised) else str(exc)
    veto = PluginVeto(text or f"A plugin refused this change ({hook}).", hook=hook, model=model)
    veto.__cause__ = shown
    return veto


def run_hook(name: str, *args: Any, label: str = "") -> Any:
    """Run hook ``name`` on the process-wide manager and return its result.

    Raises :class:`PluginVeto` (``model=label``) when a plugin refuses with ``ValueError``,
    ``ValidationError`` or ``PermissionDenied``.
    """
    try:
        return HookManager.get_instance().run_sync(name, *args)
    except (ValueError, ValidationError, PermissionDenied) as exc:
        veto = _veto(exc, name, label)
        raise veto from veto.__cause__


def _scope_of_instance(entry: ModelHooks, instance: models.Model) -> Any:
    """The organization scope of ``instance`` (``None``: site-wide); ``entry.org_path`` set."""
    return organizations.scope_for(organizations.org_of(instance, entry.org_path))


def _run_about(entry: ModelHooks, instance: models.Model, name: str, *args: Any) -> Any:
    """``run_hook(name, *args, label=...)`` in the scope of ``instance`` (see ``scope_of``),
    with the scope set and reset directly: this runs on every save."""
    if entry.org_path is None:
        return run_hook(name, *args, label=entry.label)
    token = current_scope.set(_scope_of_instance(entry, instance))
    try:
        return run_hook(name, *args, label=entry.label)
    finally:
        current_scope.reset(token)


def scope_of(entry: ModelHooks, instance: models.Model) -> AbstractContextManager[Any]:
    """A context in which hooks about ``instance`` run: its organization's scope (the site-wide
    one when it has none), or the scope in force when the model has no organization path."""
    if entry.org_path is None:
        return nullcontext()
    return entered(_scope_of_instance(entry, instance))


def run_before_save(instance: models.Model) -> list[str]:
    """Run ``before-x-save`` for ``instance`` now (form validation), apply changes, mark it.

    Returns the changed attnames. Raises :class:`PluginVeto` when a plugin refuses. The following
    ``save()`` of the unchanged instance does not run the hook again.
    """
    entry = hooks_for(type(instance))
    if entry is None:
        return []
    data = instance_data(instance)
    result = _run_about(entry, instance, entry.before_save, _copy_data(data))
    changed = apply_changes(instance, data, result)
    setattr(instance, _CHECKED_ATTR, instance_data(instance))
    setattr(instance, _CHANGED_ATTR, changed)
    return changed


def _full_clean(self: models.Model, *args: Any, **kwargs: Any) -> None:
    """``Model.full_clean`` plus, for a bridged model whose own validation passed, the
    ``before-x-save`` hook: a refusal is a ``ValidationError`` of the model like any other."""
    _django_full_clean(self, *args, **kwargs)
    if hooks_for(type(self)) is None:
        return
    try:
        run_before_save(self)
    except PluginVeto as veto:
        exclude = set(kwargs.get("exclude") or (args[0] if args else None) or ())
        shown = {f.name for f in self._meta.fields} - exclude | {NON_FIELD_ERRORS}
        if hasattr(veto, "error_dict") and not set(veto.error_dict) <= shown:
            # Errors keyed by a field the form does not show (or by an attname such as
            # organization_id) become form-wide ones: a form cannot place them.
            raise PluginVeto(veto.messages, hook=veto.hook, model=veto.model) from veto
        raise


_django_full_clean = models.Model.full_clean


def publish_on_commit(
    name: str, data: dict[str, Any], *, source: str = "platform", using: str | None = None
) -> None:
    """Publish event ``name`` with JSON-safe ``data`` once the current transaction commits.

    Outside a transaction it is published at once; when the transaction rolls back, never.
    It is published in the organization scope in force now (the change's organization).
    """
    event = Event(name, json_safe(data), source=source)
    scope = current_scope.get()
    bus = EventBus.get_instance()
    if getattr(bus.background_dispatcher, "uses_outbox", False):
        # Background deliveries are written to the outbox now, in the change's own transaction
        # (site/outbox.py), with the organization in force: they exist exactly when the change
        # is committed.
        outbox.stage(event, bus=bus, using=using)

    def publish() -> None:
        with entered(scope):
            bus.publish_sync(event)

    # robust: a broken publication must not turn a committed request into an error page;
    # STRICT (plugin authors' tests) wants to see it.
    transaction.on_commit(publish, using=using, robust=not options.strict)


# --- model receivers ------------------------------------------------------------------------


def _follow() -> None:
    # A process without requests or tasks (manage.py shell, a script) follows other processes'
    # plugin changes, and vanished plugin folders, at its saves: one clock comparison, a look at
    # the stamp at most every SYNC_INTERVAL. Starting is the engine's first use (site.autostart).
    if runtime.is_started():
        runtime.check()


def _pre_save(sender: type[models.Model], instance: models.Model, raw: bool = False, **kw: Any):
    entry = hooks_for(sender)
    if entry is None or raw:
        return
    _follow()
    checked = instance.__dict__.pop(_CHECKED_ATTR, None)
    data = instance_data(instance)
    if checked is not None and checked == data:
        return  # already run by the form that validated exactly these values
    result = _run_about(entry, instance, entry.before_save, _copy_data(data))
    apply_changes(instance, data, result)


def _post_save(
    sender: type[models.Model], instance: models.Model, created: bool, raw: bool = False, **kw: Any
):
    entry = hooks_for(sender)
    if entry is None or raw:
        return
    data = instance_data(instance)
    with scope_of(entry, instance):
        run_hook(entry.after_save, data, created, label=entry.label)
        publish_on_commit(
            entry.event("created" if created else "updated"),
            data,
            source=entry.label,
            using=kw.get("using"),
        )


def _pre_delete(sender: type[models.Model], instance: models.Model, **kw: Any) -> None:
    entry = hooks_for(sender)
    if entry is None:
        return
    _follow()
    with scope_of(entry, instance):
        run_hook(entry.before_delete, instance_data(instance), label=entry.label)


def _post_delete(sender: type[models.Model], instance: models.Model, **kw: Any) -> None:
    entry = hooks_for(sender)
    if entry is None:
        return
    with scope_of(entry, instance):
        publish_on_commit(
            entry.event("deleted"),
            instance_data(instance),
            source=entry.label,
            using=kw.get("using"),
        )


# --- auth receivers -------------------------------------------------------------------------


def _user_data(user: Any) -> dict[str, Any]:
    return {
        "user_id": user.pk,
        "username": user.get_username(),
        "email": getattr(user, user.get_email_field_name(), "") or "",
    }


def _user_created(sender: Any, instance: Any, created: bool, raw: bool = False, **kw: Any):
    if created and not raw:
        data = _user_data(instance)
        publish_on_commit("user.created", data, source="auth", using=kw.get("using"))


def _user_login(sender: Any, request: Any, user: Any, **kw: Any) -> None:
    publish_on_commit("user.login", _user_data(user), source="auth")


def _user_logout(sender: Any, request: Any, user: Any, **kw: Any) -> None:
    if user is not None and user.is_authenticated:
        publish_on_commit("user.logout", _user_data(user), source="auth")


def connect() -> None:
    """Connect the bridge (idempotent; from ``AppConfig.ready``) and define the model hooks."""
    pre_save.connect(_pre_save, dispatch_uid=f"{_DISPATCH}.pre_save")
    post_save.connect(_post_save, dispatch_uid=f"{_DISPATCH}.post_save")
    pre_delete.connect(_pre_delete, dispatch_uid=f"{_DISPATCH}.pre_delete")
    post_delete.connect(_post_delete, dispatch_uid=f"{_DISPATCH}.post_delete")
    post_save.connect(
        _user_created, sender=get_user_model(), dispatch_uid=f"{_DISPATCH}.user_created"
    )
    user_logged_in.connect(_user_login, dispatch_uid=f"{_DISPATCH}.login")
    user_logged_out.connect(_user_logout, dispatch_uid=f"{_DISPATCH}.logout")
    setting_changed.connect(_settings_changed, dispatch_uid=f"{_DISPATCH}.settings")
    # Model validation of bridged models runs before-x-save: a veto is a form error in every
    # ModelForm and ModelAdmin (a lookup in MODEL_HOOKS for other models).
    models.Model.full_clean = _full_clean  # type: ignore[method-assign]
    define_model_hooks()


def disconnect() -> None:
    """Disconnect every receiver :func:`connect` connected."""
    for signal, uid in (
        (pre_save, "pre_save"),
        (post_save, "post_save"),
        (pre_delete, "pre_delete"),
        (post_delete, "post_delete"),
        (user_logged_in, "login"),
        (user_logged_out, "logout"),
        (setting_changed, "settings"),
    ):
        signal.disconnect(dispatch_uid=f"{_DISPATCH}.{uid}")
    post_save.disconnect(sender=get_user_model(), dispatch_uid=f"{_DISPATCH}.user_created")
    models.Model.full_clean = _django_full_clean  # type: ignore[method-assign]


def _settings_changed(*, setting: str, **kw: Any) -> None:
    global _by_label
    if setting == SETTING_NAME:
        _by_label = None
        define_model_hooks()


# --- vetoes in forms and the admin ----------------------------------------------------------


def add_veto_to_form(form: forms.BaseForm, veto: ValidationError) -> None:
    """Add ``veto`` to ``form``: per field when it names form fields, else as a form error."""
    if hasattr(veto, "error_dict") and set(veto.error_dict) <= set(form.fields):
        form.add_error(None, veto)
    else:
        form.add_error(None, veto.messages)


class PluginHookModelForm(forms.ModelForm):
    """A ``ModelForm`` that shows the values a ``before-x-save`` hook changed when it is rendered
    again. Any ``ModelForm`` already shows a veto as a form error (model validation runs the hook).
    """

    def _post_clean(self) -> None:
        super()._post_clean()
        for attname in self.instance.__dict__.get(_CHANGED_ATTR, ()):
            if attname in self.cleaned_data:
                self.cleaned_data[attname] = getattr(self.instance, attname)


class PluginVetoAdminMixin:
    """ModelAdmin mixin: plugin vetoes appear on the form or as an error message, never a 500.

    Put it before ``admin.ModelAdmin``. A custom ``form`` should subclass
    :class:`PluginHookModelForm`.
    """

    form = PluginHookModelForm

    def _refused(self, request: HttpRequest, veto: PluginVeto) -> HttpResponse:
        text = " ".join(veto.messages)
        self.message_user(request, f"Refused by a plugin ({veto.hook}): {text}", messages.ERROR)
        return HttpResponseRedirect(request.get_full_path())

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return super().changeform_view(request, *args, **kwargs)
        except PluginVeto as veto:
            return self._refused(request, veto)

    def delete_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return super().delete_view(request, *args, **kwargs)
        except PluginVeto as veto:
            return self._refused(request, veto)

    def changelist_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Bulk actions (delete selected) run inside the changelist view; a veto half-way must
        # undo the whole action, also when the caller's transaction goes on (ATOMIC_REQUESTS).
        try:
            if request.method != "POST":
                return super().changelist_view(request, *args, **kwargs)
            with transaction.atomic(using=router.db_for_write(self.model)):
                return super().changelist_view(request, *args, **kwargs)
        except PluginVeto as veto:
            return self._refused(request, veto)
