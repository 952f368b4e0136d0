"""The settings form of one plugin, generated from its ``settings_schema``.

Each schema field becomes a form field with the matching widget; the values are then checked by
``core.settings_schema.validate_settings``, the same code the REST API and ``api.config.set`` use,
and its errors are shown next to the fields. Secrets are never rendered back: a blank secret keeps
the stored one.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext as _

from course_plugins.core.settings_schema import (
    REQUIRED_MESSAGE,
    SECRET_MASK,
    FieldSpec,
    defaults,
    field_specs,
    mask_settings,
    validate_settings,
)
from course_plugins.exceptions import PluginManifestError, PluginSettingsError
from course_plugins.models import Plugin

__all__ = ["SECRET_MASK", "PluginSettingsForm", "form_field", "masked_settings", "schema_of"]


class LinesField(forms.CharField):
    """A ``list`` setting edited as text, one item per line (blank lines dropped)."""

    widget = forms.Textarea(attrs={"rows": 4})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().to_python(value)
        return [line.strip() for line in text.splitlines() if line.strip()]


def schema_of(plugin: Plugin) -> dict[str, Any]:
    """Return the plugin's ``settings_schema`` declaration (name -> field) from its stored manifest.

    A row whose stored schema no longer parses (written by an older version) counts as having no
    settings rather than breaking the admin page.
    """
    schema = (plugin.manifest or {}).get("settings_schema") or {}
    if not isinstance(schema, dict):
        return {}
    try:
        field_specs(schema)
    except PluginManifestError:
        return {}
    return schema


def masked_settings(plugin: Plugin) -> dict[str, Any]:
    """Return the plugin's settings (stored over schema defaults) with secrets masked.

    What the admin and the REST API show; ``SECRET_MASK`` sent back means "keep the secret".
    """
    schema = schema_of(plugin)
    return mask_settings(schema, {**defaults(schema), **(plugin.settings or {})})


def form_field(spec: FieldSpec, *, has_value: bool = False) -> forms.Field:
    """Return the Django form field for one schema field.

    ``has_value`` tells a secret field whether a value is already stored; blank then keeps it.
    The field only picks the widget: every value is checked by ``validate_settings`` in
    :meth:`PluginSettingsForm.clean`, so the admin shows the very message the REST API answers
    ("expected an integer, got 'abc'", "this setting is required"). The label is the setting's
    key as the plugin and the API spell it (``api_token``).
    """
    required = spec.required and not spec.has_default and not (spec.secret and has_value)
    common: dict[str, Any] = {
        "label": spec.name,
        "help_text": spec.description,
        "required": required,
        "error_messages": {"required": REQUIRED_MESSAGE},
    }
    bounds = {
        key: value
        for key, value in (("min", spec.min), ("max", spec.max))
        if value is not None
    }
    if spec.type == "boolean":
        return forms.BooleanField(**{**common, "required": False})
    if spec.type in ("integer", "number"):
        step = "1" if spec.type == "integer" else "any"
        return forms.CharField(
            widget=forms.NumberInput(attrs={"step": step, **bounds}), **common
        )
    if spec.type == "choice":
        choices = [(str(c), str(c)) for c in spec.choices]
        choices.insert(0, ("", "---------"))
        return forms.CharField(widget=forms.Select(choices=choices), **common)
    if spec.type == "list":
        common["help_text"] = f"{spec.description} {_('One item per line.')}".strip()
        return LinesField(**common)
    if spec.type == "secret":
        if has_value:
            common["help_text"] = (
                f"{spec.description} {_('A value is stored; leave blank to keep it.')}".strip()
            )
        return forms.CharField(
            strip=False,
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
            **common,
        )
    widget = forms.Textarea(attrs={"rows": 4}) if spec.type == "text" else None
    return forms.CharField(widget=widget, **common)


class PluginSettingsForm(forms.Form):
    """Edit one plugin's settings.

    After ``is_valid()``: ``settings`` holds every setting as ``validate_settings`` returns it
    (defaults filled in); ``changes`` is what to hand to ``runtime.update_settings``: a value equal
    to its default becomes ``None`` (stored settings hold only what differs, so a new default in an
    upgrade applies) and a blank secret is left out (kept).
    """

    def __init__(self, plugin: Plugin, *args: Any, **kwargs: Any) -> None:
        self.plugin = plugin
        self.schema = schema_of(plugin)
        self.specs = {spec.name: spec for spec in field_specs(self.schema)}
        self.stored: dict[str, Any] = dict(plugin.settings or {})
        self.settings: dict[str, Any] = {}
        self.changes: dict[str, Any] = {}
        initial = {**defaults(self.schema), **self.stored, **(kwargs.pop("initial", None) or {})}
        for name, spec in self.specs.items():
            if spec.secret:
                initial.pop(name, None)  # never echo a secret, not even its default
        super().__init__(*args, initial=initial, **kwargs)
        for name, spec in self.specs.items():
            self.fields[name] = form_field(
                spec, has_value=spec.secret and bool(self.stored.get(name))
            )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        data: dict[str, Any] = {}
        for name, spec in self.specs.items():
            value = cleaned.get(name)
            if spec.secret and value in ("", None):
                # Blank secret: keep the stored one (validate_settings reads it from ``current``).
                data[name] = SECRET_MASK if name in self.stored else None
            else:
                data[name] = None if value == "" else value  # blank: the default applies
        try:
            self.settings = validate_settings(
                self.schema, data, plugin=self.plugin.name, current=self.stored
            )
        except PluginSettingsError as exc:
            self.add_schema_errors(exc)
            return cleaned
        self.changes = {
            name: None
            if spec.has_default and self.settings[name] == spec.default
            else self.settings[name]
            for name, spec in self.specs.items()
            if not (spec.secret and data[name] in (SECRET_MASK, None))
        }
        return cleaned

    def add_schema_errors(self, exc: PluginSettingsError) -> None:
        """Show a ``PluginSettingsError``'s field errors next to their fields."""
        for name, message in exc.errors.items():
            if name in self.fields:
                self.add_error(name, message)
            else:
                self.add_error(None, f"{name}: {message}")
