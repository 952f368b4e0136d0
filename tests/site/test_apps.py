"""``AppConfig.ready()`` only wires things up; a real import error surfaces, never a log line."""

from __future__ import annotations

import importlib
import re
import sys

import pytest
from django.apps import apps


@pytest.mark.parametrize("module", ["course_plugins.model_hooks", "course_plugins.site.runtime"])
def test_an_import_error_in_ready_is_raised_not_logged(monkeypatch, module):
    parent, _, name = module.rpartition(".")
    monkeypatch.delattr(importlib.import_module(parent), name)
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    with pytest.raises(ImportError):
        apps.get_app_config("course_plugins").ready()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["x"], "COURSE_PLUGINS must be a dict such as"),
        ({"HOOK_TIMEOUT": "fast"}, "'HOOK_TIMEOUT'] must be seconds greater than 0, such as 5.0"),
        ({"MAX_FAILURES": 0}, "'MAX_FAILURES'] must be a whole number greater than 0, such as 5"),
        ({"MAX_FAILURES": 2.5}, "; got 2.5"),
    ],
)
def test_a_wrong_type_in_course_plugins_is_a_clear_configuration_error(value, message):
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    with (
        pytest.raises(ImproperlyConfigured, match=re.escape(message)),
        override_settings(COURSE_PLUGINS=value),
    ):
        pass


def test_trusted_plugins_given_as_one_name_trusts_only_that_plugin(settings):
    from course_plugins.conf import trusted_by_setting

    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "TRUSTED_PLUGINS": "lesson-guard"}
    assert trusted_by_setting("lesson-guard")
    assert not trusted_by_setting("lesson") and not trusted_by_setting("guard")
