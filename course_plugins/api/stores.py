"""Where ``api.config`` and ``api.storage`` keep their data: in memory, or in the database.

Both are keyed by plugin NAME (not id), so settings and storage survive reloads and upgrades.
Values are JSON; the in-memory stores copy them on the way in and out so that a plugin sees the same
semantics as with the database (mutating a returned dict changes nothing stored).

``DjangoConfigStore`` keeps settings on ``Plugin.settings``; ``DjangoStorageStore`` one
``PluginStorage`` row per key. Every write is one transaction that locks what it changes, so
concurrent writers (threads or processes) lose nothing; ``StorageStore.update`` is the atomic
read-modify-write of one key (``api.storage.update`` / ``increment``). This module imports
without Django configured; the Django stores import the models when first used.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, ClassVar, Protocol

_MISSING: Any = object()


class ConfigStore(Protocol):
    """Persisted settings values of plugins (only what was set; defaults come from the schema)."""

    blocking_io: ClassVar[bool]

    def load(self, plugin: str) -> dict[str, Any]:
        """Return the stored values of ``plugin`` (a copy; ``{}`` when nothing is stored)."""
        ...

    def update(self, plugin: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Atomically merge ``changes`` (``None`` removes the key); return the new values."""
        ...


class StorageStore(Protocol):
    """A key -> JSON value store per plugin and organization (``org`` ``""``: site-wide)."""

    blocking_io: ClassVar[bool]

    def get(self, plugin: str, key: str, default: Any = None, *, org: str = "") -> Any: ...

    def set(self, plugin: str, key: str, value: Any, *, org: str = "") -> None: ...

    def delete(self, plugin: str, key: str, *, org: str = "") -> bool: ...

    def keys(self, plugin: str, *, org: str = "") -> list[str]: ...

    def update(
        self,
        plugin: str,
        key: str,
        fn: Callable[[Any], Any],
        default: Any = None,
        *,
        org: str = "",
    ) -> Any:
        """Atomically store ``fn(current value, or a copy of default)`` under ``key``; return it.

        No other ``update`` of the key runs in between (in any thread or process). If ``fn``
        raises, nothing is written and the exception propagates.
        """
        ...


class MemoryConfigStore:
    """Settings in a dict (Django-free use, tests). Thread-safe."""

    blocking_io: ClassVar[bool] = False

    def __init__(self, initial: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] = {
            name: copy.deepcopy(dict(values)) for name, values in (initial or {}).items()
        }

    def load(self, plugin: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._data.get(plugin, {}))

    def update(self, plugin: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            values = _merge(self._data.get(plugin, {}), changes)
            self._data[plugin] = values
            return copy.deepcopy(values)


class MemoryStorageStore:
    """Plugin storage in a dict (Django-free use, tests). Thread-safe."""

    blocking_io: ClassVar[bool] = False

    def __init__(self) -> None:
        # Re-entrant: an ``update`` function may itself read or write the storage.
        self._lock = threading.RLock()
        self._data: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, plugin: str, key: str, default: Any = None, *, org: str = "") -> Any:
        with self._lock:
            value = self._data.get((plugin, org), {}).get(key, _MISSING)
        return default if value is _MISSING else copy.deepcopy(value)

    def set(self, plugin: str, key: str, value: Any, *, org: str = "") -> None:
        with self._lock:
            self._data.setdefault((plugin, org), {})[key] = copy.deepcopy(value)

    def delete(self, plugin: str, key: str, *, org: str = "") -> bool:
        with self._lock:
            return self._data.get((plugin, org), {}).pop(key, _MISSING) is not _MISSING

    def keys(self, plugin: str, *, org: str = "") -> list[str]:
        with self._lock:
            return sorted(self._data.get((plugin, org), {}))

    def update(
        self,
        plugin: str,
        key: str,
        fn: Callable[[Any], Any],
        default: Any = None,
        *,
        org: str = "",
    ) -> Any:
        with self._lock:
            current = self._data.get((plugin, org), {}).get(key, _MISSING)
            value = fn(copy.deepcopy(default if current is _MISSING else current))
            self._data.setdefault((plugin, org), {})[key] = copy.deepcopy(value)
            return copy.deepcopy(value)


def _models() -> ModuleType:
    # The Django stores read and write the app's models, which exist only once Django's app
    # registry is ready; this module must import without Django (the in-memory stores).
    from course_plugins import models

    return models


class DjangoConfigStore:
    """Settings on ``course_plugins.models.Plugin.settings`` (the row is created if missing)."""

    blocking_io: ClassVar[bool] = True

    def __init__(self) -> None:
        # Threads of this process queue here (a shared-cache SQLite database answers a second
        # writer with "table is locked" instead of waiting); processes queue on the row lock.
        self._lock = threading.Lock()

    def load(self, plugin: str) -> dict[str, Any]:
        Plugin = _models().Plugin

        values = Plugin.objects.filter(name=plugin).values_list("settings", flat=True).first()
        return dict(values or {})

    def update(self, plugin: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        from django.db import transaction
        from django.utils import timezone

        Plugin = _models().Plugin

        with self._lock, transaction.atomic():
            # Write first, read second: the UPDATE takes the row lock on PostgreSQL (as
            # select_for_update does) and SQLite's write lock before we read, so a concurrent
            # writer waits for our commit instead of overwriting the merge we are about to make.
            locked = Plugin.objects.filter(name=plugin).update(updated_at=timezone.now())
            if not locked:
                Plugin.objects.get_or_create(name=plugin, defaults={"version": ""})
            row = Plugin.objects.select_for_update().only("pk", "settings").get(name=plugin)
            values = _merge(row.settings or {}, changes)
            Plugin.objects.filter(pk=row.pk).update(settings=values)
        return values


class DjangoStorageStore:
    """Plugin storage in ``course_plugins.models.PluginStorage`` (one row per plugin and key)."""

    blocking_io: ClassVar[bool] = True

    def __init__(self) -> None:
        # As in DjangoConfigStore: threads of this process queue here for ``update`` (re-entrant,
        # so the function may use the storage itself); processes queue on the row lock.
        self._lock = threading.RLock()

    def get(self, plugin: str, key: str, default: Any = None, *, org: str = "") -> Any:
        PluginStorage = _models().PluginStorage

        rows = list(
            PluginStorage.objects.filter(plugin=plugin, organization=org, key=key).values_list(
                "value", flat=True
            )[:1]
        )
        return rows[0] if rows else default

    def set(self, plugin: str, key: str, value: Any, *, org: str = "") -> None:
        from django.db import transaction

        PluginStorage = _models().PluginStorage

        with transaction.atomic():
            PluginStorage.objects.update_or_create(
                plugin=plugin, organization=org, key=key, defaults={"value": value}
            )

    def delete(self, plugin: str, key: str, *, org: str = "") -> bool:
        PluginStorage = _models().PluginStorage

        deleted, _ = PluginStorage.objects.filter(plugin=plugin, organization=org, key=key).delete()
        return deleted > 0

    def keys(self, plugin: str, *, org: str = "") -> list[str]:
        PluginStorage = _models().PluginStorage

        return list(
            PluginStorage.objects.filter(plugin=plugin, organization=org)
            .order_by("key")
            .values_list("key", flat=True)
        )

    def update(
        self,
        plugin: str,
        key: str,
        fn: Callable[[Any], Any],
        default: Any = None,
        *,
        org: str = "",
    ) -> Any:
        from django.db import IntegrityError, transaction
        from django.utils import timezone

        PluginStorage = _models().PluginStorage

        row = PluginStorage.objects.filter(plugin=plugin, organization=org, key=key)
        with self._lock, transaction.atomic():
            # Write first, read second (as DjangoConfigStore.update): the UPDATE takes the row
            # lock on PostgreSQL and SQLite's write lock before we read, so a concurrent updater
            # waits for our commit instead of reading the value we are about to replace.
            existed = row.update(updated_at=timezone.now()) > 0
            if not existed:
                try:
                    # A savepoint: when another writer creates the row first, the unique
                    # constraint refuses ours (on PostgreSQL after waiting for its commit) and
                    # we update theirs instead. Rolled back with the rest if ``fn`` raises.
                    with transaction.atomic():
                        PluginStorage.objects.create(
                            plugin=plugin, organization=org, key=key, value=None
                        )
                except IntegrityError:
                    existed = True
            current = row.select_for_update().values_list("value", flat=True).get()
            value = fn(current if existed else copy.deepcopy(default))
            row.update(value=value, updated_at=timezone.now())
        return value


def _merge(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    values = copy.deepcopy(dict(current))
    for key, value in changes.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = copy.deepcopy(value)
    return values
