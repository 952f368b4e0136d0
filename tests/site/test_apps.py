"""``AppConfig.ready()`` only wires things up; a real import error surfaces, never a log line."""

from __future__ import annotations

import importlib
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
