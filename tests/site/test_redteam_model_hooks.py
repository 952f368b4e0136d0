"""A trusted plugin's before-save result is used by the site's own code after the hook run has
ended, outside the plugin's budget: only plain data of it is applied, so nothing the plugin made
(a looping ``__ne__``, ``__hash__``, ``items``, a tzinfo, a Decimal that takes hours to turn into
an int) runs in the request's thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from plugin_factory import active_on_site

from course_plugins.model_hooks import apply_changes
from example_project.courses.models import Course

STICKY = '''
import datetime
import decimal


class Sticky:
    def __eq__(self, other):
        while True:
            pass

    def __ne__(self, other):
        while True:
            pass

    def __hash__(self):
        return 1

    def __str__(self):
        while True:
            pass


class Key(str):
    def __hash__(self):
        return hash(str(self))

    def __eq__(self, other):
        while True:
            pass


class Rows(dict):
    def items(self):
        while True:
            pass


class Zone(datetime.tzinfo):
    def utcoffset(self, when):
        while True:
            pass


def activate(api):
    @api.hooks["before-course-save"].add
    def stick(course):
        kind = course["name"]
        if kind == "value":
            return {**course, "title": Sticky()}
        if kind == "key":
            return {Key("title"): "keyed"}
        if kind == "items":
            return Rows(course, title="from-rows")
        if kind == "decimal":
            return {**course, "organization_id": decimal.Decimal("1e999999999")}
        if kind == "zone":
            return {**course, "description": datetime.datetime(2026, 1, 1, tzinfo=Zone())}
        if kind == "nested":
            return {**course, "description": ["fine", {"deep": Sticky()}]}
        return {**course, "title": "Plain"}
'''


@pytest.fixture
def sticky_site(tmp_path: Path, settings: Any):
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "TRUSTED_PLUGINS": ["sticky"]}
    with active_on_site(settings, tmp_path / "plugins", "sticky", STICKY,
                        "hooks: [before-course-save]\ntimeout_seconds: 1\n") as plugin:
        yield plugin


def in_time(fn: Any, seconds: float = 10.0) -> Any:
    """``fn()`` in another thread; fails if it has not ended within ``seconds``."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # handed to the test below
            box.append(exc)
        finally:
            connection.close()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the site's thread is stuck in the plugin's code"
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


@pytest.mark.django_db(transaction=True)
def test_only_plain_data_of_a_trusted_plugins_result_is_applied(sticky_site, caplog):
    assert not sticky_site.isolated
    for kind in ("value", "key", "items", "decimal", "zone", "nested"):
        course = in_time(lambda kind=kind: Course.objects.create(name=kind, title="Kept"))
        stored = Course.objects.get(pk=course.pk)
        # (a dict subclass is read as the dict it is: its own ``items`` is not called)
        title = "from-rows" if kind == "items" else "Kept"
        assert (stored.title, stored.organization_id, stored.description) == (title, None, ""), kind
    assert in_time(lambda: Course.objects.create(name="plain", title="T")).title == "Plain"
    assert "is not plain data" in caplog.text


def test_apply_changes_takes_plain_data_and_json_structures():
    course = Course(name="c", title="T")
    before = {"title": "T", "description": ""}
    changed = apply_changes(course, before, {"title": "U", "description": "d", "nope": object()})
    assert changed == ["title", "description"]
    assert apply_changes(course, before, {"title": object()}) == []
    assert course.title == "U"
