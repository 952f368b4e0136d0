"""The one way tests write a plugin folder (``plugin.yaml`` + ``__init__.py``).

``write_plugin`` for code that has a folder at hand (and child processes: ``django_proc``); the
``make_plugin`` fixture (conftest) writes into the test's own ``tmp_path / "plugins"``;
``active_on_site`` writes one and runs it on the example site (Django tests only).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PASS = "def activate(api):\n    pass\n"
"""The smallest plugin code: activates and registers nothing."""


def write_plugin(
    root: str | Path,
    name: str,
    code: str = PASS,
    manifest: str = "",
    *,
    version: str = "1.0.0",
    plugin_yaml: str | None = None,
) -> Path:
    """Write plugin ``name`` into ``root / name`` and return the folder.

    ``plugin.yaml`` gets ``name``, ``version``, a description and an author, then ``manifest``
    (dedented YAML lines: ``hooks``, ``permissions``...); ``plugin_yaml`` replaces all of it (for
    broken manifests). ``code`` (dedented) is ``__init__.py``. Writing again over an existing
    folder replaces both files (an upgrade).
    """
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    if plugin_yaml is None:
        plugin_yaml = (
            f"name: {name}\nversion: {version}\ndescription: {name} for tests\nauthor: Tests\n"
            + textwrap.dedent(manifest)
        )
    (folder / "plugin.yaml").write_text(plugin_yaml)
    (folder / "__init__.py").write_text(textwrap.dedent(code))
    return folder


@contextmanager
def active_on_site(
    settings: Any, root: str | Path, name: str, code: str, manifest: str = ""
) -> Iterator[Any]:
    """Write plugin ``name`` into ``root``, make ``root`` the site's only plugin folder, start
    the site's runtime and activate the plugin (isolated, the default); yields it as loaded and
    resets the runtime afterwards. Passwords hash fast (tests create users)."""
    from course_plugins.site import runtime

    write_plugin(root, name, code, manifest)
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(root)]}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    runtime.reset()
    try:
        runtime.start()
        runtime.activate(name)
        yield runtime.local_plugin(name)
    finally:
        runtime.reset()
