"""Settings are bounded by their schema: lengths, items, event patterns and cross-field rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from course_plugins.core.manifest import load_manifest
from course_plugins.core.settings_schema import (
    DEFAULT_MAX_ITEMS,
    check_event_pattern,
    parse_schema,
    validate_settings,
)
from course_plugins.exceptions import PluginManifestError, PluginSettingsError

PLUGIN_DIRS = Path(__file__).resolve().parents[2] / "plugin_dirs"

SCHEMA = parse_schema(
    {
        "words": {"type": "list", "default": [], "max_items": 5, "max_length": 10},
        "free": {"type": "list", "default": []},
        "title": {"type": "string", "default": "x"},
        "patterns": {"type": "list", "format": "event_pattern", "default": ["course.*"]},
        "min_q": {"type": "integer", "default": 1, "max_field": "max_q"},
        "max_q": {"type": "integer", "default": 50},
    }
)


def errors(data, *, current=None, partial=True):
    with pytest.raises(PluginSettingsError) as info:
        validate_settings(SCHEMA, data, partial=partial, current=current or {})
    return info.value.errors


def test_declared_and_default_bounds_refuse_oversized_values():
    assert "at most 5 items" in errors({"words": ["a"] * 6})["words"]
    assert "at most 10 characters" in errors({"words": ["a" * 11]})["words"]
    huge = [f"word{i}" for i in range(DEFAULT_MAX_ITEMS + 1)]
    assert "items" in errors({"free": huge})["free"]
    assert "characters" in errors({"title": "x" * 1_001})["title"]
    # A 2.2 MB list typed into a form as one item per line is refused before it is split.
    assert "free" in errors({"free": "w\n" * 1_100_000})


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "ok\udfff"])
def test_nul_and_lone_surrogates_are_refused(bad):
    assert "free" in errors({"free": [bad]})
    assert "title" in errors({"title": bad})


@pytest.mark.parametrize(
    "pattern", ["**." * 2000 + "x", "a..b", "co*rse", "", ".".join(["a"] * 17), "**.**.**.x"]
)
def test_bad_or_deep_event_patterns_are_refused(pattern):
    assert "patterns" in errors({"patterns": [pattern]})


@pytest.mark.parametrize("pattern", ["course.*", "**", "quiz.**", "a.*.b.**"])
def test_good_event_patterns_pass(pattern):
    assert check_event_pattern(pattern) == pattern
    assert validate_settings(SCHEMA, {"patterns": [pattern]}, partial=True) == {
        "patterns": [pattern]
    }


def test_cross_field_rule_uses_the_values_in_effect():
    both = errors({"min_q": 400, "max_q": 1})
    assert set(both) == {"min_q", "max_q"}
    # Only one side sent: the stored value of the other side counts...
    assert "min_q" in errors({"min_q": 20}, current={"max_q": 10})
    assert "max_q" in errors({"max_q": 2}, current={"min_q": 3})
    # ...and the default when nothing is stored.
    assert "min_q" in errors({"min_q": 51})
    assert validate_settings(SCHEMA, {"min_q": 5, "max_q": 5}, partial=True) == {
        "min_q": 5,
        "max_q": 5,
    }
    assert validate_settings(SCHEMA, {"min_q": 3}, partial=False)["max_q"] == 50


@pytest.mark.parametrize(
    "decl, where",
    [
        ({"a": {"type": "integer", "max_items": 3}}, "settings_schema.a.max_items"),
        ({"a": {"type": "list", "max_items": 0}}, "settings_schema.a.max_items"),
        ({"a": {"type": "string", "max_length": True}}, "settings_schema.a.max_length"),
        ({"a": {"type": "integer", "format": "event_pattern"}}, "settings_schema.a.format"),
        ({"a": {"type": "string", "format": "regex"}}, "settings_schema.a.format"),
        ({"a": {"type": "integer", "max_field": "b"}}, "settings_schema.a.max_field"),
        (
            {"a": {"type": "integer", "max_field": "b"}, "b": {"type": "string"}},
            "settings_schema.a.max_field",
        ),
        ({"a": {"type": "list", "format": "event_pattern", "default": ["x..y"]}},
         "settings_schema.a.default"),
    ],
)
def test_bad_bound_declarations_name_the_field(decl, where):
    with pytest.raises(PluginManifestError) as info:
        parse_schema(decl)
    assert where in str(info.value)


def test_example_plugins_declare_their_bounds():
    validator = load_manifest(PLUGIN_DIRS / "course-validator").settings_schema
    with pytest.raises(PluginSettingsError) as info:
        validate_settings(validator, {"min_questions": 400, "max_questions": 1}, partial=True)
    assert {"min_questions", "max_questions"} <= set(info.value.errors)
    with pytest.raises(PluginSettingsError):
        validate_settings(validator, {"banned_words": ["w"] * 100_000}, partial=True)
    tracker = load_manifest(PLUGIN_DIRS / "analytics-tracker").settings_schema
    with pytest.raises(PluginSettingsError):
        validate_settings(tracker, {"tracked_patterns": ["**." * 2000 + "x"]}, partial=True)
