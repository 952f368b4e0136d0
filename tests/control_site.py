"""The site the control-room tests run against: the ctl-* fixture plugins in a fresh folder."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from course_plugins.site import control, runtime

FIXTURES = Path(__file__).parent / "fixtures" / "plugins"
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"


@contextmanager
def ctl_site(tmp_path: Path, settings: Any, *, activate: bool = False) -> Iterator[Path]:
    """Discover ctl-shout and ctl-guard (activated too if ``activate``); yield their folder.

    Runs and overrides are forgotten before and after.
    """
    folder = tmp_path / "plugins"
    for name in ("ctl-shout", "ctl-guard"):
        shutil.copytree(FIXTURES / name, folder / name)
    # Runs shared through a cache of this test process only (the site's file cache outlives it).
    settings.CACHES = {**settings.CACHES, "runs": {"BACKEND": LOCMEM, "LOCATION": str(folder)}}
    settings.COURSE_PLUGINS = {
        **settings.COURSE_PLUGINS,
        "PLUGIN_DIRS": [str(folder)],
        "RUNS_CACHE": "runs",
    }
    runtime.reset()
    control.reset()
    runtime.start()
    if activate:
        runtime.activate("ctl-shout")
        runtime.activate("ctl-guard")
    try:
        yield folder
    finally:
        runtime.reset()
        control.reset()
