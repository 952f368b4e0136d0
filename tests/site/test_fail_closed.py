"""A plugin chooses what a failing ``before-*`` hook function does (manifest ``fail_closed``):
refuse the save (the default) or let it through; the admin says which."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from plugin_factory import write_plugin

from course_plugins.core.manifest import parse_manifest
from course_plugins.exceptions import PluginManifestError
from course_plugins.site import runtime
from example_project.courses.models import Course

CODE = """\
def activate(api):
    @api.hooks["before-course-save"].add
    def check(data):
        if data.get("title") == "boom":
            raise RuntimeError("validator bug")
        if data.get("title") == "slow":
            while True:
                pass
        return data
"""

BASE = "name: x\nversion: 1.0.0\n"


@pytest.mark.parametrize(
    "line, expected", [("", None), ("fail_closed: true\n", True), ("fail_closed: false\n", False)]
)
def test_the_manifest_key_is_optional_and_boolean(line: str, expected: bool | None) -> None:
    manifest = parse_manifest(BASE + line)
    assert manifest.fail_closed is expected
    assert manifest.to_dict()["fail_closed"] is expected


def test_a_bad_value_names_the_field() -> None:
    with pytest.raises(PluginManifestError, match="fail_closed"):
        parse_manifest(BASE + "fail_closed: sometimes\n")


@pytest.fixture
def plugins(tmp_path: Path, settings: Any) -> Iterator[Path]:
    folder = tmp_path / "plugins"
    manifest = "hooks: [before-course-save]\ntimeout_seconds: 0.3\n"
    write_plugin(folder, "closed-default", CODE, manifest)
    write_plugin(folder, "opened", CODE, manifest + "fail_closed: false\n")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.COURSE_PLUGINS = {
        **settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(folder)], "MAX_FAILURES": 100,
    }
    runtime.reset()
    yield folder
    runtime.reset()


@pytest.mark.django_db
@pytest.mark.parametrize("title", ["boom", "slow"])
def test_by_default_a_failing_or_slow_validator_refuses_the_save(plugins: Path, title: str):
    runtime.activate("closed-default")
    with pytest.raises(ValidationError, match="closed-default"):
        Course.objects.create(name="c1", title=title)
    assert not Course.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("title", ["boom", "slow"])
def test_fail_closed_false_lets_the_save_through(plugins: Path, title: str):
    runtime.activate("opened")
    Course.objects.create(name="c1", title=title)
    assert Course.objects.count() == 1


@pytest.mark.django_db
def test_the_admin_shows_the_choice(plugins: Path, admin_client: Any):
    from course_plugins.models import Plugin

    runtime.discover()

    def page(name: str) -> Any:
        pk = Plugin.objects.get(name=name).pk
        return admin_client.get(f"/admin/course_plugins/plugin/{pk}/change/")

    closed, opened = page("closed-default"), page("opened")
    assert "When a hook function fails" in closed.content.decode()
    assert "Refuses the change" in closed.content.decode()
    assert "Lets the change through (fail_closed: false)" in opened.content.decode()
