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


def test_plugin_veto_is_public():
    from course_plugins.model_hooks import PluginVeto

    assert course_plugins.PluginVeto is PluginVeto


# --- what the README promises about the distribution ------------------------------------------

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_the_readme_links_and_images_point_at_files_that_exist():
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(((?!https?://|#)[^)#\s]+)", readme)
    assert "docs/operators.md" in targets and "docs/plugin-authors.md" in targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert missing == []


def test_the_licence_file_matches_pyproject():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_the_sdist_ships_the_readme_images_and_docs(tmp_path):
    # setuptools >= 77 builds it (the build-system requirement); an older one in the test
    # environment cannot read the SPDX licence field.
    import tarfile

    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (the build requirement)")
    result = subprocess.run(
        [sys.executable, "-c", "from setuptools import build_meta as b; "
         f"print(b.build_sdist({str(tmp_path)!r}))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    name = result.stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as sdist:
        files = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    for path in ("LICENSE", "README.md", "docs/operators.md", "docs/plugin-authors.md",
                 "docs/screenshots/plugin-list.png", "docs/screenshots/hook-inspector.png"):
        assert path in files, path


def test_every_course_plugins_key_is_documented_for_operators():
    from course_plugins.conf import DEFAULTS

    operators = (ROOT / "docs" / "operators.md").read_text(encoding="utf-8")
    missing = [key for key in DEFAULTS if f"`{key}`" not in operators]
    assert missing == [], f"add these COURSE_PLUGINS keys to docs/operators.md#settings: {missing}"
