"""The package's small public surface."""

from __future__ import annotations

import subprocess
import sys

import pytest

import course_plugins
from course_plugins.core import advice, event_bus, hook_manager, plugin_loader, sandbox


def test_public_names_are_the_engines_own_objects():
    assert course_plugins.HookManager is hook_manager.HookManager
    assert course_plugins.hook is hook_manager.hook
    assert course_plugins.EventBus is event_bus.EventBus
    assert course_plugins.Event is event_bus.Event
    assert course_plugins.advisable is advice.advisable
    assert course_plugins.PluginLoader is plugin_loader.PluginLoader
    assert course_plugins.SandboxedExecutor is sandbox.SandboxedExecutor
    assert sorted(course_plugins.__all__) == course_plugins.__all__
    assert set(course_plugins.__all__) <= set(dir(course_plugins)) | {"__version__"}


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        course_plugins.nope  # noqa: B018


def test_importing_the_package_imports_nothing_else():
    # Only the engine's options, where the package hands the loader its default API factory.
    code = (
        "import sys, course_plugins; "
        "print(sorted(m for m in sys.modules if m.startswith(('course_plugins', 'django'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (
        "['course_plugins', 'course_plugins.core', 'course_plugins.core.options']"
    )
