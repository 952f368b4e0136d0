"""Two real processes write the same plugin's config and storage at once: nothing is lost.

Runs on a file SQLite database and on a throwaway PostgreSQL database. The config store's
``update`` is a read-modify-write of one row (``Plugin.settings``), so two writers without a lock
would drop each other's keys; storage writes race on the same rows (``update_or_create``); and
both count through a plugin's ``api.storage.increment_sync`` on one key (get-then-set would lose
increments; the locked read-modify-write must not).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django_proc import Proc, migrate, site_env
from plugin_factory import write_plugin

pytestmark = pytest.mark.slow

TIMES = 200  # config merges per process
STORAGE_TIMES = 100  # storage writes per process (each also rewrites the shared key)
PLUGIN = "concurrent"
COUNTS = 200  # api.storage.increment_sync("n") per process
COUNTER = "counter"  # a real plugin (its own name: the runtime's row upsert stays off PLUGIN)


def _plugins(base: Path) -> Path:
    plugins = base / "plugins"
    write_plugin(plugins, COUNTER, "def activate(api):\n    pass\n", "permissions: [storage]\n")
    return plugins


ALL_OPS = (("config-merge", TIMES), ("storage-set", STORAGE_TIMES), ("storage-increment", COUNTS))


def _run_two_writers(env: dict[str, str], ops: tuple[tuple[str, int], ...] = ALL_OPS) -> None:
    """Start two site processes, let both run each op (``times`` writes) at once."""
    procs = [Proc(env, "serve"), Proc(env, "serve")]
    try:
        for proc in procs:
            proc.read(60)  # ready: Django set up, so both start writing together
        for op, times in ops:
            plugin = COUNTER if op == "storage-increment" else PLUGIN
            for proc, prefix in zip(procs, ("a", "b"), strict=True):
                proc.popen.stdin.write(  # type: ignore[union-attr]
                    f'{{"op": "{op}", "plugin": "{plugin}", "prefix": "{prefix}", '
                    f'"key": "n", "times": {times}}}\n'
                )
                proc.popen.stdin.flush()  # type: ignore[union-attr]
            for proc in procs:
                assert proc.read(120) == {"op": op}
    finally:
        for proc in procs:
            proc.close()


def _expected_config() -> dict[str, int]:
    return {f"{prefix}{i}": i for prefix in "ab" for i in range(TIMES)}


def _check(settings: dict[str, Any], storage: dict[str, Any], counted: Any) -> None:
    assert counted == 2 * COUNTS, "a concurrent api.storage.increment was lost"
    assert len(settings) == 2 * TIMES, "a concurrent config update was lost"
    assert settings == _expected_config()
    expected_keys = {f"{prefix}{i}" for prefix in "ab" for i in range(STORAGE_TIMES)}
    assert set(storage) == expected_keys | {"shared"}
    assert all(storage[f"{p}{i}"] == i for p in "ab" for i in range(STORAGE_TIMES))
    assert storage["shared"] in (["a", STORAGE_TIMES - 1], ["b", STORAGE_TIMES - 1])


def test_two_processes_lose_no_update_on_sqlite(tmp_path: Path) -> None:
    env = site_env(tmp_path, _plugins(tmp_path))
    migrate(env)

    _run_two_writers(env)

    import json

    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        (raw,) = db.execute(
            "SELECT settings FROM course_plugins_plugin WHERE name = ?", (PLUGIN,)
        ).fetchone()
        rows = db.execute(
            "SELECT key, value FROM course_plugins_pluginstorage WHERE plugin = ?", (PLUGIN,)
        ).fetchall()
        (counted,) = db.execute(
            "SELECT value FROM course_plugins_pluginstorage WHERE plugin = ? AND key = 'n'",
            (COUNTER,),
        ).fetchone()
    _check(json.loads(raw), {key: json.loads(value) for key, value in rows}, json.loads(counted))


def test_two_processes_lose_no_increment_on_sqlite_with_deferred_transactions(
    tmp_path: Path,
) -> None:
    """Without the site's IMMEDIATE mode a transaction reads before it holds the write lock;
    the store's update must take that lock before reading all the same."""
    env = site_env(tmp_path, _plugins(tmp_path), extra={"DJANGO_PROC_SQLITE_DEFERRED": "1"})
    migrate(env)

    _run_two_writers(env, (("storage-increment", COUNTS),))

    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        (counted,) = db.execute(
            "SELECT value FROM course_plugins_pluginstorage WHERE plugin = ? AND key = 'n'",
            (COUNTER,),
        ).fetchone()
    assert int(counted) == 2 * COUNTS, "a concurrent api.storage.increment was lost"


@pytest.fixture
def throwaway_postgres(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the child processes; dropped afterwards."""
    import psycopg

    name = f"course_plugins_conc_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.services
def test_two_processes_lose_no_update_on_postgresql(
    tmp_path: Path, throwaway_postgres: str
) -> None:
    import psycopg

    env = site_env(tmp_path, _plugins(tmp_path), database_url=throwaway_postgres)
    migrate(env)

    _run_two_writers(env)

    with psycopg.connect(throwaway_postgres) as conn:
        settings = conn.execute(
            "SELECT settings FROM course_plugins_plugin WHERE name = %s", (PLUGIN,)
        ).fetchone()
        rows = conn.execute(
            "SELECT key, value FROM course_plugins_pluginstorage WHERE plugin = %s", (PLUGIN,)
        ).fetchall()
        counted = conn.execute(
            "SELECT value FROM course_plugins_pluginstorage WHERE plugin = %s AND key = 'n'",
            (COUNTER,),
        ).fetchone()
    assert settings is not None and counted is not None
    _check(settings[0], dict(rows), counted[0])
