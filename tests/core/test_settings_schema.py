"""settings_schema: declarations, validation + coercion, defaults, secrets (Django-free)."""

from __future__ import annotations

import pytest

from course_plugins.core.settings_schema import (
    FIELD_TYPES,
    SECRET_MASK,
    defaults,
    field_specs,
    mask_settings,
    parse_schema,
    validate_settings,
)
from course_plugins.exceptions import PluginManifestError, PluginSettingsError

SCHEMA = {
    "title": {"type": "string", "default": "Hello", "max": 10, "description": "Shown on top"},
    "body": {"type": "text", "min": 2},
    "seats": {"type": "integer", "default": 30, "min": 1, "max": 500},
    "ratio": {"type": "number", "default": 0.5, "min": 0, "max": 1},
    "enabled": {"type": "boolean", "default": True},
    "mode": {"type": "choice", "choices": ["strict", "lenient", 3], "default": "lenient"},
    "tags": {"type": "list", "default": ["a"], "max": 3},
    "api_key": {"type": "secret", "required": True},
}


def errors_of(data, **kwargs) -> dict[str, str]:
    with pytest.raises(PluginSettingsError) as info:
        validate_settings(SCHEMA, data, plugin="demo@1.0.0", **kwargs)
    assert info.value.plugin == "demo@1.0.0"
    return info.value.errors


def test_field_specs_keep_declared_order_and_every_type_is_supported():
    specs = field_specs(SCHEMA)
    assert [s.name for s in specs] == list(SCHEMA)
    assert {s.type for s in specs} == set(FIELD_TYPES)
    assert specs[0].description == "Shown on top" and specs[-1].secret and specs[-1].required


def test_full_validation_applies_defaults_and_coerces_form_strings():
    out = validate_settings(
        SCHEMA,
        {
            "seats": "42",
            "ratio": "0.25",
            "enabled": "off",
            "mode": "3",
            "tags": "x\ny\n",
            "api_key": "k",
        },
    )
    assert out == {
        "title": "Hello",
        "body": None,
        "seats": 42,
        "ratio": 0.25,
        "enabled": False,
        "mode": 3,
        "tags": ["x", "y"],
        "api_key": "k",
    }


def test_partial_validation_returns_only_the_given_keys():
    assert validate_settings(SCHEMA, {"seats": 7}, partial=True) == {"seats": 7}
    assert validate_settings(SCHEMA, {"seats": None}, partial=True) == {"seats": None}


def test_every_problem_is_reported_at_once_with_what_is_expected():
    errors = errors_of(
        {
            "title": "far too long a title",
            "body": "x",
            "seats": "many",
            "ratio": 2,
            "enabled": "maybe",
            "mode": "loose",
            "tags": ["a", "b", "c", "d"],
            "colour": "red",
        }
    )
    assert errors == {
        "title": "must have at most 10 characters (got 20)",
        "body": "must have at least 2 characters (got 1)",
        "seats": "expected an integer, got 'many'",
        "ratio": "must be at most 1 (got 2)",
        "enabled": "expected true or false, got 'maybe'",
        "mode": "'loose' is not one of: strict, lenient, 3",
        "tags": "must have at most 3 items (got 4)",
        "colour": "unknown setting (declared in settings_schema: title, body, seats, ratio, "
        "enabled, mode, tags, api_key)",
        "api_key": "this setting is required",
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seats", True, "got a boolean"),
        ("seats", 2.5, "expected an integer, got float"),
        ("seats", 0, "at least 1"),
        ("ratio", float("nan"), "expected a number"),
        ("ratio", "1e400", "expected a number"),
        ("title", 5, "expected a string, got int"),
        ("title", "two\nlines", "single line"),
        ("tags", {"a": 1}, "expected a list"),
        ("tags", [{"a": 1}], "list items must be"),
        ("enabled", 2, "expected true or false"),
    ],
)
def test_type_errors(field, value, message):
    assert message in errors_of({field: value}, partial=True)[field]


def test_integers_accept_integral_floats_and_lists_accept_commas():
    out = validate_settings(SCHEMA, {"seats": 12.0, "tags": "a, b,,c"}, partial=True)
    assert out == {"seats": 12, "tags": ["a", "b", "c"]}
    assert isinstance(out["seats"], int)


def test_required_is_checked_in_partial_mode_only_when_cleared():
    assert validate_settings(SCHEMA, {"title": "x"}, partial=True) == {"title": "x"}
    assert errors_of({"api_key": None}, partial=True) == {"api_key": "this setting is required"}
    assert errors_of({"api_key": ""}, partial=True) == {"api_key": "this setting is required"}


def test_posting_the_secret_mask_keeps_the_current_secret():
    current = {"api_key": "s3cret"}
    assert (
        validate_settings(SCHEMA, {"api_key": SECRET_MASK}, current=current)["api_key"] == "s3cret"
    )
    assert validate_settings(SCHEMA, {"api_key": SECRET_MASK}, partial=True, current=current) == {
        "api_key": "s3cret"
    }
    assert validate_settings(SCHEMA, {"api_key": SECRET_MASK}, partial=True) == {}
    assert errors_of({"api_key": SECRET_MASK}) == {"api_key": "this setting is required"}


def test_mask_settings_hides_set_secrets_only():
    assert mask_settings(SCHEMA, {"api_key": "s3cret", "title": "t"}) == {
        "api_key": SECRET_MASK,
        "title": "t",
    }
    assert mask_settings(SCHEMA, {"api_key": None}) == {"api_key": None}


def test_defaults_and_that_returned_lists_are_copies():
    values = defaults(SCHEMA)
    assert values == {
        "title": "Hello",
        "seats": 30,
        "ratio": 0.5,
        "enabled": True,
        "mode": "lenient",
        "tags": ["a"],
    }
    values["tags"].append("b")
    assert defaults(SCHEMA)["tags"] == ["a"]


def test_a_parsed_schema_is_accepted_too_and_round_trips():
    parsed = parse_schema(SCHEMA)
    assert validate_settings(parsed, {"seats": "3"}, partial=True) == {"seats": 3}
    assert parse_schema({k: s.to_dict() for k, s in parsed.items()}) == parsed


@pytest.mark.parametrize(
    ("decl", "field", "message"),
    [
        ({"x": "string"}, "settings_schema.x", "must be a mapping with a 'type'"),
        ({"x": {}}, "settings_schema.x.type", "expected one of: string, text"),
        ({"x": {"type": "date"}}, "settings_schema.x.type", "got 'date'"),
        ({"x": {"type": "string", "label": "X"}}, "settings_schema.x.label", "unknown key"),
        ({"x": {"type": "choice"}}, "settings_schema.x.choices", "non-empty list"),
        ({"x": {"type": "choice", "choices": [1, 1]}}, "settings_schema.x.choices", "unique"),
        ({"x": {"type": "choice", "choices": [[1]]}}, "settings_schema.x.choices", "strings or"),
        ({"x": {"type": "string", "choices": ["a"]}}, "settings_schema.x.choices", "only a field"),
        ({"x": {"type": "boolean", "min": 1}}, "settings_schema.x.min", "does not apply"),
        ({"x": {"type": "string", "min": -1}}, "settings_schema.x.min", "non-negative integer"),
        ({"x": {"type": "integer", "min": 1.5}}, "settings_schema.x.min", "an integer"),
        (
            {"x": {"type": "number", "min": 2, "max": 1}},
            "settings_schema.x.min",
            "greater than max",
        ),
        ({"x": {"type": "string", "required": "yes"}}, "settings_schema.x.required", "true or"),
        ({"x": {"type": "string", "description": 3}}, "settings_schema.x.description", "string"),
        (
            {"x": {"type": "integer", "default": 11, "max": 10}},
            "settings_schema.x.default",
            "at most",
        ),
        (
            {"x": {"type": "choice", "choices": ["a"], "default": "b"}},
            "settings_schema.x.default",
            "one of",
        ),
        ({"not valid": {"type": "string"}}, "settings_schema.not valid", "identifiers"),
    ],
)
def test_bad_declarations_name_the_field(decl, field, message):
    with pytest.raises(PluginManifestError) as info:
        parse_schema(decl, path="p/plugin.yaml")
    assert info.value.field == field
    assert message in str(info.value)
    assert info.value.path == "p/plugin.yaml"


def test_schema_must_be_a_mapping():
    with pytest.raises(PluginManifestError, match="must be a mapping of setting name"):
        parse_schema(["x"])
    assert parse_schema(None) == {}
