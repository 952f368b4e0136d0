"""How the loader's view of a plugin is written to its ``models.Plugin`` row (for ``runtime``).

The row keeps the admin's wishes (``enabled``, ``settings``), which nothing here changes, and
mirrors the plugin folder (version, manifest, hooks, events, permissions) and what happened
(``status``, ``last_error``, ``last_traceback``).
"""

from __future__ import annotations

from typing import Any

from course_plugins.core.manifest import load_manifest
from course_plugins.exceptions import PluginManifestError
from course_plugins.models import Plugin as PluginRow
from course_plugins.models import PluginStatus

_UNSET: Any = object()
_ERROR = "error"


def missing_message(name: str, dirs: list[str]) -> str:
    """What the admin reads on the row of a plugin whose folder vanished."""
    return (
        f"The folder of plugin {name!r} was not found in PLUGIN_DIRS ({', '.join(dirs)}) at the "
        "last discovery. Put the folder back (its settings and storage are kept), or delete this "
        "row to forget the plugin."
    )


def metadata(plugin: Any, manifest: Any = _UNSET) -> dict[str, Any]:
    """Row fields that come from the plugin folder (never ``enabled`` nor ``settings``).

    ``manifest`` defaults to the one the plugin was loaded with.
    """
    manifest = plugin.manifest if manifest is _UNSET else manifest
    data: dict[str, Any] = {"path": str(plugin.path), "missing": False}
    if manifest is None:
        data["manifest"] = {}
        if plugin.version:
            data["version"] = plugin.version
    else:
        data.update(
            version=manifest.version,
            description=manifest.description,
            author=manifest.author,
            manifest=manifest.to_dict(),
            hooks=list(manifest.hooks),
            events=list(manifest.events),
            permissions=sorted(manifest.permissions),
        )
    return data


def on_disk(plugin: Any) -> tuple[Any, str, str]:
    """``(manifest, error, traceback)`` of the plugin's folder as it is now.

    The loader keeps a loaded plugin's manifest until it is reloaded; the row shows what is on
    disk (an upgrade), so that every process reloads it (the version is in the fingerprint).
    """
    state = str(plugin.state)
    if plugin.manifest is None or state in ("discovered", _ERROR):
        broken = state == _ERROR
        return plugin.manifest, plugin.error if broken else "", plugin.traceback if broken else ""
    try:
        return load_manifest(plugin.path), "", ""
    except PluginManifestError as exc:
        return None, str(exc), ""


def upsert(row: PluginRow | None, plugin: Any) -> PluginRow:
    """Create (disabled, ``inactive``) or refresh the row of a discovered plugin; returns it."""
    manifest, error, tb = on_disk(plugin)
    meta = metadata(plugin, manifest)
    if row is None:
        row = PluginRow(name=plugin.name, enabled=False, status=PluginStatus.INACTIVE, **meta)
        row.version = row.version or ""
    else:
        changed = row.missing or meta.get("manifest") != row.manifest
        for key, value in meta.items():
            setattr(row, key, value)
        if changed and row.status == PluginStatus.ERROR and not error:
            # What was wrong (folder gone, bad plugin.yaml, old code) may be fixed now; starting
            # it tells (ensure_started / apply_db_state record the outcome).
            row.status, row.last_error, row.last_traceback = PluginStatus.INACTIVE, "", ""
    if error:
        row.status, row.last_error, row.last_traceback = PluginStatus.ERROR, error, tb
    row.save()
    return row


def record(row: PluginRow, plugin: Any, **fields: Any) -> None:
    """Save ``fields`` on ``row`` (plus the plugin's metadata when ``plugin`` is given); only
    those columns are written, so concurrent writes of other columns are not undone."""
    if plugin is not None and plugin.manifest is not None:
        fields = {**metadata(plugin), **fields}
    for key, value in fields.items():
        setattr(row, key, value)
    row.save(update_fields=[*fields, "updated_at"])


def record_failure(row: PluginRow, plugin: Any, exc: BaseException) -> None:
    """Record status ``error`` with the plugin's (or the exception's) message and traceback."""
    error = (plugin.error if plugin is not None and plugin.error else "") or str(exc)
    tb = (plugin.traceback if plugin is not None else "") or getattr(exc, "traceback", "") or ""
    record(row, plugin, status=PluginStatus.ERROR, last_error=error, last_traceback=tb)


def fingerprint(row: PluginRow) -> tuple[Any, ...]:
    """``(wanted active, version, activated_at)``: what a process acts on when it changes."""
    wanted = row.enabled and row.status != PluginStatus.FAULTED and not row.missing
    return (wanted, row.version, row.activated_at)
