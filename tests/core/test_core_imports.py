"""The engine (``course_plugins.core``) imports and works with Django unconfigured."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ENGINE_MODULES = [
    "course_plugins.core",
    "course_plugins.core.options",
    "course_plugins.core.standard",
    "course_plugins.core.watchdog",
    "course_plugins.core.health",
    "course_plugins.core._calls",
    "course_plugins.core.hook_manager",
    "course_plugins.core.event_bus",
    "course_plugins.core._advice_calls",
    "course_plugins.core._advice_code",
    "course_plugins.core._advice_chain",
    "course_plugins.core.advice",
]

SCRIPT = textwrap.dedent(
    """
    import asyncio, importlib, json, os, sys
    assert "DJANGO_SETTINGS_MODULE" not in os.environ
    for name in json.loads(sys.argv[1]):
        importlib.import_module(name)
    from django.conf import settings
    assert not settings.configured, "importing the engine configured Django"

    from course_plugins.core.hook_manager import HookManager
    hooks = HookManager.get_instance()
    assert hooks.run_sync("before-course-save", {"title": "t"}) == {"title": "t"}
    from course_plugins.core.event_bus import Event, EventBus
    seen = []
    EventBus.get_instance().subscribe("course.*", lambda e: seen.append(e.name))
    EventBus.get_instance().publish_sync(Event("course.created", {"name": "n"}))
    assert seen == ["course.created"], seen
    from course_plugins.core.advice import advisable, before_advice
    @advisable("svc.f")
    def f(x):
        return x
    before_advice("svc.f")(lambda x: None)
    assert f(3) == 3
    print("engine ok")
    """
)


def test_engine_imports_without_django_settings() -> None:
    import json

    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(ENGINE_MODULES)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "engine ok" in proc.stdout
