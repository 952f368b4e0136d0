"""Helper of the operator-side tests (admin, REST API, command): a site with the ops-* plugins."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from course_plugins.site import runtime

FIXTURES = Path(__file__).parent / "fixtures" / "plugins"
OPS_PLUGINS = ("ops-greeter", "ops-broken")


@contextmanager
def ops_site(tmp_path: Path, settings: Any) -> Iterator[Path]:
    """Copy the ops-* fixture plugins to a fresh plugin dir, point the site at it and discover
    them (rows inactive). Yields the dir; on exit every plugin of this process is deactivated."""
    folder = tmp_path / "plugins"
    for name in OPS_PLUGINS:
        shutil.copytree(FIXTURES / name, folder / name)
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(folder)]}
    runtime.reset()
    runtime.discover()
    try:
        yield folder
    finally:
        runtime.reset()
