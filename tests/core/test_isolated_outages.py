"""An outage of the site (its database, its broker) met by an isolated plugin's API call is the
site's fault, as it is for a trusted plugin: the error the site raised comes back to the site as
itself when the plugin lets it through, and is never counted against the plugin (a ``before-*``
hook still fails closed: the save is refused while the database is down)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from course_plugins.api.platform_api import Services, default_api_factory
from course_plugins.api.stores import MemoryStorageStore
from course_plugins.core.health import health
from course_plugins.core.hook_manager import HookManager
from course_plugins.core.options import options
from course_plugins.core.plugin import PluginState
from course_plugins.core.plugin_loader import PluginLoader
from course_plugins.exceptions import PluginFailedClosed

pytestmark = pytest.mark.usefixtures("engine_state")


class Outage(Exception):
    """Stands for the database being down (``OperationalError`` on a site)."""


class DownStore(MemoryStorageStore):
    def get(self, plugin: str, key: str, default: Any = None, *, org: str = "") -> Any:
        raise Outage("could not connect to server")


PLUGIN = """
def activate(api):
    @api.hooks["before-save"].add
    def check(data):
        api.storage.get_sync("seen")  # the site's database is down: this raises
        return data

    @api.hooks["count"].add
    def counted():
        try:
            api.storage.get_sync("seen")
        except Exception as exc:  # caught, then an error of the plugin's own
            raise RuntimeError(f"the plugin's own bug after {type(exc).__name__}") from None
"""


@pytest.fixture(params=["isolated", "trusted"])
def loader(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(options, "infrastructure_errors", (Outage,))
    folder = tmp_path / "outage-hit"
    folder.mkdir()
    (folder / "plugin.yaml").write_text(
        "name: outage-hit\nversion: 1.0.0\ndescription: t\nauthor: t\n"
        "hooks: [before-save, count]\npermissions: [storage]\n"
    )
    (folder / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    hooks = HookManager()
    hooks.define("before-save", "FILTER")
    hooks.define("count", "NORMAL")
    services = Services.in_memory()
    services.storage_store = DownStore()
    plugins = PluginLoader([tmp_path], hooks=hooks, api_factory=default_api_factory(services),
                           trusted=request.param == "trusted")
    plugins.discover_all()
    plugins.activate("outage-hit")
    assert plugins.get("outage-hit").isolated is (request.param == "isolated")
    yield plugins, hooks
    plugins.close()


def test_an_outage_an_isolated_plugin_lets_through_is_the_sites_error_not_the_plugins(loader):
    plugins, hooks = loader
    plugin = plugins.get("outage-hit")
    for _ in range(options.max_failures * 2):
        with pytest.raises(PluginFailedClosed) as refused:
            hooks.run_sync("before-save", {"title": "x"})
        assert type(refused.value.__cause__) is Outage  # the site's own error, as raised
    assert health.failures(plugin.id) == 0
    assert plugins.get("outage-hit").state is PluginState.ACTIVE


def test_an_error_of_the_plugins_own_after_an_outage_still_counts(loader):
    plugins, hooks = loader
    plugin = plugins.get("outage-hit")
    hooks.run_sync("count")
    assert health.failures(plugin.id) == 1
