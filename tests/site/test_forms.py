"""The settings form generated from a plugin's settings_schema."""

from __future__ import annotations

import pytest
from django import forms

from course_plugins.forms import SECRET_MASK, PluginSettingsForm, masked_settings
from course_plugins.models import Plugin

SCHEMA = {
    "greeting": {"type": "string", "default": "Hello", "description": "Shown first.", "max": 10},
    "body": {"type": "text", "description": "Long text."},
    "min_title_length": {"type": "integer", "default": 5, "min": 1, "max": 200},
    "ratio": {"type": "number", "default": 0.5, "min": 0, "max": 1},
    "strict": {"type": "boolean", "default": False},
    "mode": {"type": "choice", "choices": ["lenient", "strict"], "default": "lenient"},
    "banned_words": {"type": "list", "default": ["spam"], "max": 3},
    "api_key": {"type": "secret", "description": "Key of the mail service."},
}


def _plugin(settings: dict | None = None, schema: dict | None = None) -> Plugin:
    # Unsaved rows are enough: the form reads the manifest and settings, never the database.
    return Plugin(
        name="demo",
        version="1.0.0",
        manifest={"settings_schema": SCHEMA if schema is None else schema},
        settings=settings or {},
    )


def _post(**overrides: str) -> dict[str, str]:
    data = {
        "greeting": "Hi",
        "body": "",
        "min_title_length": "8",
        "ratio": "0.25",
        "strict": "on",
        "mode": "strict",
        "banned_words": "spam\n\n  eggs  \n",
        "api_key": "",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_one_field_per_setting_with_the_right_kind_of_field():
    form = PluginSettingsForm(_plugin())
    fields = form.fields
    assert list(fields) == list(SCHEMA)
    assert isinstance(fields["greeting"], forms.CharField)
    assert isinstance(fields["body"].widget, forms.Textarea)
    number = fields["min_title_length"].widget
    assert isinstance(number, forms.NumberInput)
    assert (number.attrs["min"], number.attrs["max"], number.attrs["step"]) == (1, 200, "1")
    assert fields["ratio"].widget.attrs["step"] == "any"
    assert isinstance(fields["strict"], forms.BooleanField)
    assert isinstance(fields["mode"].widget, forms.Select)
    assert [c for c, _ in fields["mode"].widget.choices] == ["", "lenient", "strict"]
    assert isinstance(fields["banned_words"].widget, forms.Textarea)
    assert isinstance(fields["api_key"].widget, forms.PasswordInput)
    assert fields["greeting"].help_text == "Shown first."
    # Labelled with the key as plugin.yaml and the REST API spell it, not "Api key".
    assert fields["api_key"].label == "api_key"


def test_defaults_and_stored_values_are_prefilled_but_secrets_never():
    form = PluginSettingsForm(_plugin({"min_title_length": 12, "api_key": "s3cret-value"}))
    html = form.as_div()
    assert form["greeting"].value() == "Hello"
    assert form["min_title_length"].value() == 12
    assert "spam" in str(form["banned_words"])
    assert "s3cret-value" not in html
    assert "leave blank to keep it" in form.fields["api_key"].help_text


def test_valid_post_gives_validated_settings_with_defaults_and_coerced_values():
    form = PluginSettingsForm(_plugin(), data=_post(api_key="k-123"))
    assert form.is_valid(), form.errors
    assert form.settings == {
        "greeting": "Hi",
        "body": None,
        "min_title_length": 8,
        "ratio": 0.25,
        "strict": True,
        "mode": "strict",
        "banned_words": ["spam", "eggs"],
        "api_key": "k-123",
    }


def test_blank_secret_keeps_the_stored_one():
    form = PluginSettingsForm(_plugin({"api_key": "old-secret"}), data=_post())
    assert form.is_valid(), form.errors
    assert form.settings["api_key"] == "old-secret"


def test_a_new_secret_replaces_the_stored_one():
    form = PluginSettingsForm(_plugin({"api_key": "old-secret"}), data=_post(api_key="new"))
    assert form.is_valid(), form.errors
    assert form.settings["api_key"] == "new"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("min_title_length", "0", "must be at least 1 (got 0)"),
        ("min_title_length", "abc", "expected an integer, got 'abc'"),
        ("ratio", "2", "must be at most 1 (got 2)"),
        ("mode", "chaotic", "'chaotic' is not one of: lenient, strict"),
        ("greeting", "far too long a greeting", "must have at most 10 characters (got 23)"),
        ("banned_words", "a\nb\nc\nd", "must have at most 3 items (got 4)"),
    ],
)
def test_invalid_values_show_errors_next_to_their_field(field, value, message):
    form = PluginSettingsForm(_plugin(), data=_post(**{field: value}))
    assert not form.is_valid()
    assert list(form.errors) == [field]
    assert form.errors[field][0] == message


def test_the_form_says_what_the_rest_api_says():
    # One wording for the same mistake: the admin form shows validate_settings' message, which
    # is what PATCH /api/plugins/<name>/settings/ answers.
    from course_plugins.core.settings_schema import validate_settings
    from course_plugins.exceptions import PluginSettingsError

    with pytest.raises(PluginSettingsError) as api:
        validate_settings(SCHEMA, {"min_title_length": "abc"}, partial=True, plugin="demo")
    form = PluginSettingsForm(_plugin(), data=_post(min_title_length="abc"))
    assert not form.is_valid()
    assert form.errors["min_title_length"] == [api.value.errors["min_title_length"]]


def test_the_schema_validator_decides_what_django_fields_cannot():
    # A multi-line "string" passes Django's CharField; settings_schema refuses it, on that field.
    form = PluginSettingsForm(_plugin(), data=_post(greeting="a\nb"))
    assert not form.is_valid()
    assert "single line" in form.errors["greeting"][0]


def test_a_required_field_without_default_must_be_given():
    schema = {"api_key": {"type": "secret", "required": True}}
    form = PluginSettingsForm(_plugin(schema=schema), data={"api_key": ""})
    assert not form.is_valid()
    assert "required" in form.errors["api_key"][0]
    stored = PluginSettingsForm(_plugin({"api_key": "x"}, schema=schema), data={"api_key": ""})
    assert stored.is_valid(), stored.errors


def test_blank_optional_values_fall_back_to_their_defaults():
    form = PluginSettingsForm(_plugin(), data=_post(greeting="", min_title_length="", mode=""))
    assert form.is_valid(), form.errors
    assert (form.settings["greeting"], form.settings["min_title_length"]) == ("Hello", 5)
    assert form.settings["mode"] == "lenient"


def test_a_plugin_without_schema_has_an_empty_form():
    form = PluginSettingsForm(_plugin(schema={}), data={})
    assert list(form.fields) == []
    assert form.is_valid() and form.settings == {}


def test_masked_settings_hide_secrets_and_fill_defaults():
    shown = masked_settings(_plugin({"api_key": "s3cret", "strict": True}))
    assert shown["api_key"] == SECRET_MASK
    assert shown["strict"] is True and shown["greeting"] == "Hello"
    assert "s3cret" not in repr(shown)


def test_changes_store_only_what_differs_from_the_defaults_and_keep_blank_secrets():
    form = PluginSettingsForm(
        _plugin({"api_key": "old", "min_title_length": 9}),
        data=_post(greeting="Hello", min_title_length="5", ratio="0.5", strict="", mode="lenient"),
    )
    assert form.is_valid(), form.errors
    assert form.changes == {
        "greeting": None, "body": None, "min_title_length": None, "ratio": None, "strict": None,
        "mode": None, "banned_words": ["spam", "eggs"],
    }
