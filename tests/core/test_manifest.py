"""plugin.yaml parsing and validation (Django-free)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from course_plugins.core.manifest import (
    MAX_MANIFEST_BYTES,
    event_name_problem,
    load_manifest,
    parse_manifest,
    pattern_covers,
)
from course_plugins.exceptions import PluginManifestError

QUICK_START = """
name: my-plugin
version: 1.0.0
description: My awesome plugin
author: Your Name

# Hooks your plugin uses
hooks:
  - before-course-save
  - after-quiz-submit

# Events your plugin subscribes to
events:
  - course.*
  - quiz.submitted

# Plugin settings
settings_schema:
  my_setting:
    type: string
    default: "value"
    description: My setting description
"""


def manifest(extra: str = "", base: str = "name: demo\nversion: 1.0.0\n"):
    return parse_manifest(base + extra, "plugins/demo/plugin.yaml")


def error_of(text: str) -> PluginManifestError:
    with pytest.raises(PluginManifestError) as info:
        parse_manifest(text, "plugins/demo/plugin.yaml")
    return info.value


def test_the_seed_quick_start_manifest_parses_as_written():
    m = parse_manifest(QUICK_START, "plugins/my-plugin/plugin.yaml")
    assert (m.name, m.version, m.id) == ("my-plugin", "1.0.0", "my-plugin@1.0.0")
    assert m.description == "My awesome plugin" and m.author == "Your Name"
    assert m.hooks == ("before-course-save", "after-quiz-submit")
    assert m.events == ("course.*", "quiz.submitted")
    spec = m.settings_schema["my_setting"]
    assert (spec.type, spec.default, spec.description) == (
        "string",
        "value",
        "My setting description",
    )
    assert m.permissions == frozenset() and m.requires == {} and m.platform is None
    assert m.folder == Path("plugins/my-plugin")


def test_to_dict_is_plain_data_that_round_trips():
    m = manifest(
        "hooks: [before-course-save]\nevents: ['course.*']\nrequires: {base: '>=1.0'}\n"
        "platform: '>=0.1'\npermissions: [storage, notify]\ntimeout_seconds: 2\n"
        "settings_schema:\n  n: {type: integer, default: 3, min: 1}\nx-team: search\n"
    )
    data = m.to_dict()
    assert data["requires"] == {"base": ">=1.0"} and data["platform"] == ">=0.1"
    assert data["permissions"] == ["notify", "storage"] and data["x-team"] == "search"
    assert data["settings_schema"] == {"n": {"type": "integer", "default": 3, "min": 1}}
    import yaml

    again = parse_manifest(yaml.safe_dump(data), "again.yaml")
    assert again.to_dict() == data


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("version: 1.0.0\n", "name", "is required"),
        ("name: My_Plugin\nversion: 1.0.0\n", "name", "lowercase slug"),
        ("name: my--plugin\nversion: 1.0.0\n", "name", "lowercase slug"),
        ("name: 3d\nversion: 1.0.0\n", "name", "starting with a letter"),
        ("name: demo\n", "version", "is required"),
        ("name: demo\nversion: 1.0\n", "version", 'as a string, e.g. "1.0.0"'),
        ("name: demo\nversion: '1.0'\n", "version", "not a semantic version"),
        ("name: demo\nversion: v1.0.0\n", "version", "not a semantic version"),
        ("name: demo\nversion: 01.0.0\n", "version", "not a semantic version"),
        ("name: demo\nversion: 1.0.0-foo.bar\n", "version", "pre-release part"),
        ("name: demo\nversion: 1.0.0\ndescription: [a]\n", "description", "must be a string"),
        ("name: demo\nversion: 1.0.0\nhooks: before-course-save\n", "hooks", "must be a list"),
        ("name: demo\nversion: 1.0.0\nhooks: [Before Save]\n", "hooks[0]", "not a valid hook name"),
        ("name: demo\nversion: 1.0.0\nhooks: [a, a]\n", "hooks[1]", "listed twice"),
        ("name: demo\nversion: 1.0.0\nevents: ['course..x']\n", "events[0]", "empty segment"),
        ("name: demo\nversion: 1.0.0\nevents: ['course.cr*']\n", "events[0]", "segment 'cr*'"),
        ("name: demo\nversion: 1.0.0\nevents: [1]\n", "events[0]", "must be a string"),
        (
            "name: demo\nversion: 1.0.0\npermissions: [root]\n",
            "permissions[0]",
            "unknown permission",
        ),
        ("name: demo\nversion: 1.0.0\npermissions: notify\n", "permissions", "must be a list"),
        ("name: demo\nversion: 1.0.0\ntimeout_seconds: 0\n", "timeout_seconds", "greater than 0"),
        ("name: demo\nversion: 1.0.0\ntimeout_seconds: fast\n", "timeout_seconds", "seconds"),
        ("name: demo\nversion: 1.0.0\nplatform: '=> 1.0'\n", "platform", "not a version specifier"),
        ("name: demo\nversion: 1.0.0\nplatform: 1.0\n", "platform", "as a string"),
        (
            "name: demo\nversion: 1.0.0\nrequires: [Other]\n",
            "requires[0]",
            "expected 'plugin-name'",
        ),
        ("name: demo\nversion: 1.0.0\nrequires: {other: '>>1'}\n", "requires.other", "specifier"),
        ("name: demo\nversion: 1.0.0\nrequires: [demo]\n", "requires[0]", "cannot require itself"),
        ("name: demo\nversion: 1.0.0\nrequires: [a, 'a>1']\n", "requires[1]", "required twice"),
        ("name: demo\nversion: 1.0.0\nrequires: other\n", "requires", "mapping"),
        ("name: demo\nversion: 1.0.0\npermision: [notify]\n", "permision", "unknown field"),
        (
            "name: demo\nversion: 1.0.0\nsettings_schema: {n: {type: integer, default: x}}\n",
            "settings_schema.n.default",
            "expected an integer",
        ),
    ],
)
def test_every_field_is_validated_with_an_error_naming_file_and_field(text, field, expected):
    exc = error_of(text)
    assert exc.field == field
    assert exc.path == "plugins/demo/plugin.yaml"
    assert expected in str(exc)
    assert str(exc).startswith(f"plugins/demo/plugin.yaml: field '{field}': ")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('name: "demo\\n"\nversion: 1.0.0\n', "name"),
        ('name: demo\nversion: "1.0.0\\n"\n', "version"),
        ('name: demo\nversion: 1.0.0\nhooks: ["content-transform\\n"]\n', "hooks[0]"),
        ('name: demo\nversion: 1.0.0\nevents: ["course.created\\n"]\n', "events[0]"),
    ],
)
def test_a_name_with_a_trailing_newline_is_refused(text, field):
    # The patterns ended in ``$``, which matches before a final newline: a plugin named
    # "demo\n" (a line of its own in every log line naming it, and shown as "demo" in the admin)
    # was valid, as were such hook names, event patterns and versions.
    assert error_of(text).field == field
    assert event_name_problem("course.created\n") is not None


def test_unknown_field_error_lists_known_fields_and_x_prefix_is_allowed():
    exc = error_of("name: demo\nversion: 1.0.0\nhomepage_url: x\n")
    assert "known fields are name, version" in str(exc) and "'x-'" in str(exc)
    assert manifest("x-ci: {lint: true}\n").extra == {"x-ci": {"lint": True}}


def test_yaml_syntax_error_names_line_and_column():
    exc = error_of("name: demo\nversion: 1.0.0\nhooks: [a\n")
    assert exc.field is None
    assert re.search(r"not valid YAML at line \d+, column \d+", str(exc))


def test_only_safe_yaml_is_accepted():
    exc = error_of("name: !!python/object/apply:os.system ['echo hacked']\nversion: 1.0.0\n")
    assert "not valid YAML" in str(exc)


def test_top_level_must_be_a_mapping():
    assert "must be a YAML mapping" in str(error_of("- name: demo\n"))
    assert "got nothing" in str(error_of(""))


def test_size_limit(tmp_path):
    path = tmp_path / "plugin.yaml"
    path.write_text("name: demo\nversion: 1.0.0\ndescription: " + "x" * MAX_MANIFEST_BYTES + "\n")
    with pytest.raises(PluginManifestError, match="at most 65536 bytes") as info:
        load_manifest(tmp_path)
    assert info.value.path == str(path)


def test_load_manifest_reports_a_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(PluginManifestError, match="needs a plugin.yaml"):
        load_manifest(tmp_path)
    (tmp_path / "plugin.yaml").write_bytes(b"name: d\xe9mo\n")
    with pytest.raises(PluginManifestError, match="not UTF-8"):
        load_manifest(tmp_path / "plugin.yaml")


def test_version_accepts_semver_prereleases_and_build_metadata():
    assert manifest(base="name: demo\nversion: 1.0.0-rc.1\n").parsed_version.is_prerelease
    assert manifest(base="name: demo\nversion: 2.3.4+build.7\n").version == "2.3.4+build.7"


def test_requires_as_mapping_or_list():
    a = manifest("requires: {base: '>=1.0,<2', other: null}\n").requires
    b = manifest("requires: ['base>=1.0,<2', other]\n").requires
    assert {k: str(v) for k, v in a.items()} == {k: str(v) for k, v in b.items()}
    assert a["base"].contains("1.5.0") and not a["base"].contains("2.0.0")
    assert str(a["other"]) == ""


def test_custom_hook_names_are_allowed():
    assert manifest("hooks: [my-plugin:ready, grading.curve, before-course-save]\n").hooks[0] == (
        "my-plugin:ready"
    )


def test_manifest_error_carries_the_plugin_name_once_known():
    assert error_of("name: demo\nversion: x\n").plugin == "demo"
    assert error_of("version: 1.0.0\n").plugin is None


def test_fixture_broken_manifest(fixture_plugins):
    with pytest.raises(PluginManifestError) as info:
        load_manifest(fixture_plugins / "broken-manifest")
    assert info.value.field == "version"
    assert info.value.path.endswith("broken-manifest/plugin.yaml")


@pytest.mark.parametrize(
    ("granted", "requested", "covered"),
    [
        ("course.*", "course.created", True),
        ("course.*", "course.*", True),
        ("course.*", "course.**", False),
        ("course.*", "*.created", False),
        ("course.*", "course", False),
        ("course.**", "course", True),
        ("course.**", "course.a.b", True),
        ("course.**", "course.*.b", True),
        ("**", "anything.at.*", True),
        ("*.created", "user.created", True),
        ("*.created", "**.created", False),
        ("**.created", "*.created", True),
        ("*.**", "**.x", True),
        ("quiz.submitted", "quiz.*", False),
        ("quiz.submitted", "quiz.submitted", True),
    ],
)
def test_pattern_covers(granted, requested, covered):
    assert pattern_covers(granted, requested) is covered


def _matches(pattern: tuple[str, ...], name: tuple[str, ...]) -> bool:
    if not pattern:
        return not name
    if pattern[0] == "**":
        return any(_matches(pattern[1:], name[i:]) for i in range(len(name) + 1))
    if not name:
        return False
    return pattern[0] in ("*", name[0]) and _matches(pattern[1:], name[1:])


_segment = st.sampled_from(["a", "b", "*", "**"])
_pattern = st.lists(_segment, min_size=1, max_size=4).map(tuple)
_name = st.lists(st.sampled_from(["a", "b"]), min_size=0, max_size=5).map(tuple)


@given(_pattern, _pattern, st.lists(_name, min_size=1, max_size=30))
def test_pattern_covers_is_sound(granted, requested, names):
    """If ``granted`` covers ``requested``, whatever ``requested`` matches ``granted`` matches."""
    if pattern_covers(".".join(granted), ".".join(requested)):
        for name in names:
            if _matches(requested, name):
                assert _matches(granted, name)


@given(_pattern, _pattern)
def test_pattern_covers_is_complete_on_small_names(granted, requested):
    """If every name up to six segments matched by ``requested`` is matched by ``granted``,
    ``granted`` covers ``requested`` (a counterexample, if any, is at most this short)."""
    import itertools

    names = [n for k in range(7) for n in itertools.product("abc", repeat=k)]
    if all(_matches(granted, n) for n in names if _matches(requested, n)):
        assert pattern_covers(".".join(granted), ".".join(requested))


def test_event_name_problem():
    assert event_name_problem("my-plugin.custom-event") is None
    assert "wildcards" in event_name_problem("course.*")
    assert "empty segment" in event_name_problem("course.")


SEVERAL_BAD_FIELDS = """\
name: demo
version: 1.0
descripton: a typo
hooks: [before-course-save, Bad Hook, before-course-save]
events: [course..created]
permissions: [storage, internet]
timeout_seconds: -1
fail_closed: "yes"
requires: {demo: ">=1"}
settings_schema:
  limit: {type: integer, min: 10, max: 1}
  colour: {type: colour}
  fine: {type: string}
"""


def test_every_bad_field_is_reported_at_once_naming_the_file_and_field():
    exc = error_of(SEVERAL_BAD_FIELDS)
    fields = [each.field for each in exc.errors]
    assert fields == [
        "descripton",
        "version",
        "hooks[1]",
        "hooks[2]",
        "events[0]",
        "settings_schema.limit.min",
        "settings_schema.colour.type",
        "requires.demo",
        "permissions[1]",
        "timeout_seconds",
        "fail_closed",
    ], str(exc)
    lines = str(exc).splitlines()
    assert len(lines) == len(fields)
    for line, each in zip(lines, exc.errors, strict=True):
        # Each line names the file and the field, then what is wrong and what to write instead.
        assert line == str(each)
        assert line.startswith(f"plugins/demo/plugin.yaml: field '{each.field}': ")
        assert each.plugin == "demo" and each.path == "plugins/demo/plugin.yaml"
    assert 'write a semantic version as a string, e.g. "1.0.0"' in lines[1]
    assert "prefix your own keys with 'x-'" in lines[0]
    assert exc.plugin == "demo" and exc.field == "descripton"  # the first one's


def test_a_single_bad_field_is_that_error_alone():
    exc = error_of("name: demo\nversion: one\n")
    assert exc.errors == (exc,)
    assert str(exc).startswith("plugins/demo/plugin.yaml: field 'version': ")
    assert "\n" not in str(exc)
