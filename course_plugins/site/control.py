"""The operator's control room on the site: function overrides, recorded runs, shadow mode.

- **Overrides**: a ``FunctionOverride`` row switches one registered function (by its stable key,
  ``plugin:qualname``) off or moves it to another priority. :func:`save_override` writes the row,
  applies it here and bumps the cross-process stamp; every process applies the rows again in
  :func:`follow`, which the runtime calls whenever it follows the database (start-up, a stamp
  change), so there is no query per request and an override survives reloads and restarts.
- **Runs**: one process-wide :class:`~course_plugins.core.runs.RunRecorder` is the observer of
  every hook. Each process publishes its ring buffers to the shared cache (``RUNS_CACHE``, by
  default the stamp's cache) at most once per ``SYNC_INTERVAL``, off the request path (a timer
  thread), so :func:`runs` answers with the runs of every process of the site.
- **Shadow mode**: a plugin row with ``mode = "shadow"`` has its hook functions run on copies
  (changes and vetoes recorded with ``applied: false``); its event handlers, advice and schedules
  do not run. The tallies (runs it would have refused / changed since ``shadow_since``, with the
  last examples) are published with the runs and summed by :func:`shadow_summary`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import types
from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.core.cache import caches
from django.core.signals import setting_changed
from django.db import connections
from django.utils import timezone

from course_plugins.conf import SETTING_NAME, plugin_settings
from course_plugins.core import advice
from course_plugins.core.event_bus import EventBus
from course_plugins.core.hook_manager import HookManager
from course_plugins.core.runs import RunRecorder, owned_by
from course_plugins.models import FunctionOverride, Plugin, PluginMode
from course_plugins.site.stamp import bump

__all__ = [
    "apply_overrides",
    "attach",
    "configure",
    "describe",
    "described_advice",
    "described_events",
    "described_hooks",
    "find_function",
    "follow",
    "follow_modes",
    "forget_plugin",
    "forget_plugin_runs",
    "is_shadow",
    "mode_fields",
    "publish",
    "recorder",
    "reset",
    "runs",
    "save_override",
    "set_mode",
    "shadow_names",
    "shadow_summary",
]

logger = logging.getLogger("course_plugins.control")

_PREFIX = "course_plugins:runs"
_INDEX = f"{_PREFIX}:processes"
_TTL = 24 * 3600  # a process that stopped publishing is forgotten after a day
RUNS_SHOWN = 50  # what runs() answers by default (the REST API's page)

recorder = RunRecorder()
"""This process's recorder (the observer of every hook)."""

_lock = threading.Lock()
_dirty: set[str] = set()
_timer: threading.Timer | None = None
_applied_overrides: dict[str, tuple[bool, int | None]] = {}
_published: set[str] = set()  # hooks whose runs this process wrote to the shared cache
_shadow: frozenset[str] = frozenset()


def shadow_names() -> frozenset[str]:
    """Names of the plugins in shadow mode in this process (no query)."""
    return _shadow


def is_shadow(name: str) -> bool:
    """Whether plugin ``name`` runs in shadow mode here (what its Platform API registers with)."""
    return name in _shadow


# --- following the database ------------------------------------------------------------------


def configure() -> None:
    """Apply the recording settings (``RECORD_RUNS``, ``RUNS_KEPT``, ``RUNS_SAMPLE``)."""
    recorder.enabled = bool(plugin_settings.RECORD_RUNS)
    keep = max(int(plugin_settings.RUNS_KEPT), 1)
    if keep != recorder.keep:
        recorder.keep = keep
        recorder.clear()
    recorder.sample = max(int(plugin_settings.RUNS_SAMPLE), 1)
    recorder.on_record = _on_record


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        configure()
        attach()


setting_changed.connect(_settings_changed, dispatch_uid="course_plugins.control")


def follow(rows: list[Plugin] | None = None) -> None:
    """Bring this process in line with the database: overrides, shadow modes, secrets to mask,
    the observer on every hook.

    Called by the runtime whenever it followed the plugin rows (``rows``; read here when None)
    and after it changed one itself: one query for the overrides, nothing per request.
    """
    configure()
    if rows is None:
        rows = list(Plugin.objects.all())
    follow_modes(rows)
    recorder.set_secret_values(_secret_values(rows))
    _follow_overrides()
    attach()


def _secret_values(rows: list[Plugin]) -> list[object]:
    values: list[object] = []
    for row in rows:
        schema = (row.manifest or {}).get("settings_schema") or {}
        for field, spec in schema.items():
            if isinstance(spec, dict) and spec.get("type") == "secret":
                value = (row.settings or {}).get(field)
                if value:
                    values.append(value)
    return values


def attach() -> None:
    """Make the recorder the observer of every hook of the process-wide manager, or none when
    there is nothing to record (``RECORD_RUNS`` off and no plugin in shadow mode): the hooks then
    run the engine's plain loops."""
    observer = recorder if recorder.enabled or _shadow else None
    hooks = HookManager.get_instance()
    for name in hooks.names():
        hooks[name].observer = observer


def follow_modes(rows: list[Plugin]) -> None:
    """Take the plugins' modes from ``rows`` (before the loader (re)activates them: their Platform
    API registers in shadow mode while their name is in :func:`shadow_names`)."""
    global _shadow
    shadow = {row.name: row for row in rows if row.mode == PluginMode.SHADOW}
    _shadow = frozenset(shadow)
    for name, row in shadow.items():
        since = row.shadow_since.timestamp() if row.shadow_since else None
        recorder.start_shadow(name, since)
    for name in list(recorder.shadow):
        if name not in shadow:
            recorder.stop_shadow(name)


def mode_fields(row: Plugin, mode: str) -> dict[str, Any]:
    """The row fields of activating ``row`` in ``mode``: ``{mode, shadow_since}`` (the tally
    starts again when the plugin enters shadow mode). Raises ``ValueError`` for another mode."""
    if mode not in PluginMode.values:
        raise ValueError(f"{mode!r} is not a plugin mode ({', '.join(PluginMode.values)})")
    if mode != PluginMode.SHADOW:
        return {"mode": PluginMode.LIVE, "shadow_since": None}
    if row.mode == PluginMode.SHADOW and row.shadow_since is not None:
        return {"mode": PluginMode.SHADOW, "shadow_since": row.shadow_since}
    return {"mode": PluginMode.SHADOW, "shadow_since": timezone.now()}


def set_mode(name: str, *, mode: str, shadow_since: Any = None) -> None:
    """Take one plugin's mode here (the runtime calls it before activating the plugin)."""
    global _shadow
    if mode == PluginMode.SHADOW:
        _shadow = _shadow | {name}
        recorder.start_shadow(name, shadow_since.timestamp() if shadow_since else None)
    else:
        _shadow = _shadow - {name}
        recorder.stop_shadow(name)


def _override_targets() -> list[Any]:
    return [HookManager.get_instance(), EventBus.get_instance(), advice]


def _follow_overrides() -> None:
    wanted = {
        row.key: (row.enabled, row.priority)
        for row in FunctionOverride.objects.all()
        if row.overrides
    }
    targets = _override_targets()
    for key in set(_applied_overrides) - set(wanted):
        for target in targets:
            target.clear_override(key)
        _applied_overrides.pop(key, None)
    for key, (enabled, priority) in wanted.items():
        if _applied_overrides.get(key) == (enabled, priority):
            continue
        hooks, bus, advice_ = targets
        hooks.set_override(key, enabled=enabled, priority=priority)
        advice_.set_override(key, enabled=enabled, priority=priority)
        bus.set_override(key, enabled=enabled)  # handlers have no priority
        _applied_overrides[key] = (enabled, priority)


def save_override(
    key: str, *, enabled: bool | None = None, priority: int | None | Any = ..., hook: str = "",
    user: Any = None,
) -> FunctionOverride:
    """Store the override of ``key`` and apply it here and (through the stamp) everywhere.

    ``enabled`` None keeps the stored choice; ``priority`` ``...`` keeps it, ``None`` restores
    the plugin's own. ``user`` (who did it) gets an entry in the row's admin history. Returns the
    row (kept even when it overrides nothing, for its history).
    """
    row, created = FunctionOverride.objects.get_or_create(key=key)
    if enabled is not None:
        row.enabled = bool(enabled)
    if priority is not ...:
        row.priority = None if priority is None else int(priority)
    if hook:
        row.hook = hook
    if user is not None:
        row.updated_by = getattr(user, "get_username", lambda: "")()
    row.save()
    if getattr(user, "pk", None) is not None:
        LogEntry.objects.log_actions(
            user.pk, [row], ADDITION if created else CHANGE, describe(row), single_object=True
        )
    _follow_overrides()
    bump()
    return row


def forget_plugin(*, name: str, **kwargs: Any) -> int:
    """Delete the overrides of plugin ``name``'s functions (it was uninstalled) and apply that
    everywhere; returns how many were deleted. A ``plugin_uninstalled`` receiver."""
    deleted, _ = FunctionOverride.objects.filter(key__startswith=f"{name}:").delete()
    if deleted:
        apply_overrides()
    return int(deleted)


def describe(row: FunctionOverride) -> str:
    """What an override does, as its admin history says it."""
    where = f" on {row.hook}" if row.hook else ""
    if not row.overrides:
        return f"restored the plugin's own choice{where}"
    done = [] if row.enabled else ["switched off"]
    if row.priority is not None:
        done.append(f"priority {row.priority}")
    return ", ".join(done) + where


# --- runs shared across processes --------------------------------------------------------------


def _cache() -> Any:
    return caches[plugin_settings.RUNS_CACHE or plugin_settings.SYNC_CACHE]


def _key(process: str, hook: str) -> str:
    return f"{_PREFIX}:{process}:{hook}"


def _on_record(hook: str) -> None:
    global _timer
    _dirty.add(hook)
    if _timer is None:
        with _lock:
            if _timer is None:
                delay = max(float(plugin_settings.SYNC_INTERVAL), 0.05)
                _timer = threading.Timer(delay, _publish_later)
                _timer.daemon = True
                _timer.name = "course-plugins-runs"
                _timer.start()


def _publish_later() -> None:
    global _timer
    with _lock:
        _timer = None
    try:
        publish()
    finally:
        connections.close_all()  # this short-lived thread's own connections (database cache)


def publish() -> None:
    """Write this process's recorded runs and shadow tallies to the shared cache; never raises."""
    if not _dirty and not recorder.shadow:
        return  # nothing new since the last time
    hooks = set()
    while _dirty:
        try:
            hooks.add(_dirty.pop())
        except KeyError:
            break
    process = recorder.process
    _published.update(hooks)
    data: dict[str, Any] = {_key(process, hook): recorder.runs(hook) for hook in hooks}
    data[_key(process, "")] = {name: t.as_dict() for name, t in list(recorder.shadow.items())}
    try:
        cache = _cache()
        cache.set_many(data, timeout=_TTL)
        index = cache.get(_INDEX) or {}
        now = time.time()
        if now - index.get(process, 0) > 60:
            index = {p: at for p, at in index.items() if now - at < _TTL}
            index[process] = now
            cache.set(_INDEX, index, timeout=None)
    except Exception:
        logger.warning("Could not publish the recorded hook runs", exc_info=True)


def forget_runs() -> None:
    """Delete every process's published runs from the shared cache (``migrate ... zero``).

    Covers the hooks this process knows; a key of another hook expires after a day. Raises
    whatever the cache raises.
    """
    cache = _cache()
    processes = set(cache.get(_INDEX) or {}) | {recorder.process}
    hooks = ["", *HookManager.get_instance().names()]
    cache.delete_many([_INDEX, *(_key(p, h) for p in processes for h in hooks)])


def forget_plugin_runs(sender: Any = None, *, name: str, everywhere: bool = True,
                       **kwargs: Any) -> None:
    """Forget what plugin ``name`` did in the recorded runs (it was uninstalled); never raises.

    This process's runs lose its steps at once (see ``RunRecorder.forget_plugin``) and are
    published again; with ``everywhere`` (a ``plugin_uninstalled`` receiver, in the process that
    uninstalls it) the runs every other process published in the shared cache lose them too.
    Each other process forgets its own when it follows the uninstall (``everywhere=False``).
    """
    _dirty.update(recorder.forget_plugin(name))
    publish()
    if not everywhere:
        return
    try:
        cache = _cache()
        others = [p for p in _processes() if p != recorder.process]
        keys = [_key(p, h) for p in others for h in ["", *HookManager.get_instance().names()]]
        found = cache.get_many(keys)
        changed: dict[str, Any] = {}
        for key, value in found.items():
            if key.endswith(":") and isinstance(value, dict):  # shadow tallies by plugin name
                if name in value:
                    changed[key] = {k: v for k, v in value.items() if k != name}
            elif isinstance(value, list):
                kept = [run for run in map(functools.partial(_run_without, name), value) if run]
                if kept != value:
                    changed[key] = kept
        if changed:
            cache.set_many(changed, timeout=_TTL)
    except Exception:
        logger.warning("Could not forget plugin %s's recorded steps in the shared cache", name,
                       exc_info=True)


def _run_without(name: str, run: Any) -> Any:
    """A published run (plain data) without plugin ``name``'s steps; ``None`` when nothing of
    it is left (the rule of ``RunRecorder.forget_plugin``)."""
    if not isinstance(run, dict):
        return run
    steps = run.get("steps") or []
    mine = [s for s in steps if owned_by(s.get("plugin"), name)]
    if not mine:
        return run
    if run.get("outcome") != "ok" and any(s.get("outcome") == run.get("outcome") for s in mine):
        return None
    others = [s for s in steps if not owned_by(s.get("plugin"), name)]
    return {**run, "steps": others} if others else None


def _processes() -> list[str]:
    try:
        index = _cache().get(_INDEX) or {}
    except Exception:
        logger.warning("Could not read the recorded hook runs", exc_info=True)
        index = {}
    return sorted(set(index) | {recorder.process})


def runs(hook: str, limit: int = RUNS_SHOWN) -> list[dict[str, Any]]:
    """The last ``limit`` runs of ``hook`` in every process of the site, newest first."""
    publish()
    keys = [_key(p, hook) for p in _processes()]
    try:
        found = _cache().get_many(keys)
    except Exception:
        logger.warning("Could not read the recorded hook runs", exc_info=True)
        found = {}
    merged: list[dict[str, Any]] = []
    for value in found.values():
        merged.extend(value or [])
    if not found:
        merged = recorder.runs(hook)
    merged.sort(key=lambda run: run["at"], reverse=True)
    return merged[:limit]


def shadow_summary(plugin: Plugin) -> dict[str, Any]:
    """What ``plugin`` would have done since it entered shadow mode, summed over every process:
    ``{since, refused, changed, examples}`` (the last five examples, newest first)."""
    since = plugin.shadow_since.timestamp() if plugin.shadow_since else None
    summary: dict[str, Any] = {"since": since, "refused": 0, "changed": 0, "examples": []}
    if plugin.mode != PluginMode.SHADOW:
        return summary
    publish()
    try:
        found = _cache().get_many([_key(p, "") for p in _processes()])
    except Exception:
        logger.warning("Could not read the shadow tallies", exc_info=True)
        found = {}
    examples: list[dict[str, Any]] = []
    for tallies in found.values():
        tally = (tallies or {}).get(plugin.name)
        if tally and tally.get("since") == since:
            summary["refused"] += tally["refused"]
            summary["changed"] += tally["changed"]
            examples.extend(tally["examples"])
    examples.sort(key=lambda e: e["at"], reverse=True)
    summary["examples"] = examples[:5]
    return summary


def _reset_after_fork() -> None:
    global _lock, _timer
    _lock = threading.Lock()
    _timer = None
    _dirty.clear()
    _published.clear()
    recorder.process = os.urandom(6).hex()  # the child publishes under its own name
    recorder.forget_runs()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


# --- inspection --------------------------------------------------------------------------------


def _overridden() -> set[str]:
    return {row.key for row in FunctionOverride.objects.all() if row.overrides}


def _budget(row: dict[str, Any], fn: Any) -> dict[str, Any]:
    """``row`` with the budget that applies to ``fn``: an isolated plugin's function has none in
    this process (``timeout`` 0 in the engine) but its worker's, which it is killed past."""
    # (only a proxy, a plain function, has one: nothing of a trusted plugin's callable runs here)
    handle = fn.__dict__.get("_isolated") if type(fn) is types.FunctionType else None
    if type(handle) is tuple and "timeout" in row:
        return {**row, "timeout": float(handle[0].plugin.hook_timeout)}
    return row


def described_hooks() -> list[dict[str, Any]]:
    """``HookManager.describe()`` with each function marked: ``overridden`` (an operator's
    override applies) and ``plugin_priority`` (what the plugin asked for), and with the time
    budget of an isolated plugin's function. One query."""
    overrides = _overridden()
    hooks = HookManager.get_instance()
    described = []
    for entry in hooks.describe():
        hook = hooks[entry["name"]]
        functions = []
        for row in entry["functions"]:
            reg = hook.get(row["key"])
            functions.append(
                {
                    **_budget(row, None if reg is None else reg.fn),
                    "overridden": row["key"] in overrides,
                    "plugin_priority": row["priority"] if reg is None else reg.base_priority,
                }
            )
        described.append({**entry, "functions": functions})
    return described


def described_events() -> list[dict[str, Any]]:
    """``EventBus.describe()`` with each handler marked ``overridden``, and with the time budget
    of an isolated plugin's handler. One query."""
    overrides = _overridden()
    bus = EventBus.get_instance()
    functions = {sub.key: sub.fn for sub in bus.subscriptions()}
    return [
        {
            **sub,
            "handlers": [
                {**_budget(h, functions.get(h["key"])), "overridden": h["key"] in overrides}
                for h in sub["handlers"]
            ],
        }
        for sub in bus.describe()
    ]


def described_advice() -> dict[str, list[dict[str, Any]]]:
    """``advice.describe_all()`` with each piece marked ``overridden``. One query."""
    overrides = _overridden()
    return {
        target: [{**row, "overridden": row["key"] in overrides} for row in rows]
        for target, rows in advice.describe_all().items()
    }


KINDS = ("hook", "event", "advice")
"""Where a registered function is: on a hook, an event pattern or an advised target."""


def find_function(kind: str, where: str, key: str) -> dict[str, Any] | None:
    """The inspector row of the function ``key`` on hook / event pattern / advised target
    ``where`` (``kind``: one of :data:`KINDS`), or ``None``."""
    if kind == "hook":
        rows = next((h["functions"] for h in described_hooks() if h["name"] == where), [])
    elif kind == "event":
        rows = next((e["handlers"] for e in described_events() if e["pattern"] == where), [])
    elif kind == "advice":
        rows = described_advice().get(where, [])
    else:
        rows = []
    return next((row for row in rows if row.get("key") == key), None)


def apply_overrides() -> None:
    """Apply the override rows as they are now, here and (through the stamp) everywhere: for
    writers of ``FunctionOverride`` rows other than :func:`save_override` (the admin)."""
    _follow_overrides()
    bump()


def reset() -> None:
    """Take back every override this process applied and forget runs and shadow modes (tests,
    and a runtime reset)."""
    global _shadow
    for key in list(_applied_overrides):
        for target in _override_targets():
            target.clear_override(key)
    _applied_overrides.clear()
    _shadow = frozenset()
    recorder.clear()
    keys = [_key(recorder.process, hook) for hook in (*_published, "")]
    _published.clear()
    try:
        _cache().delete_many(keys)
    except Exception:
        logger.warning("Could not forget the recorded hook runs", exc_info=True)
