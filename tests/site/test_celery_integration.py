"""A real ``celery -A example_project worker -B`` on Redis, a site process, one SQLite file.

The site process (``tests/django_proc.py serve``) activates plugins and publishes events as the
admin and the platform would; the worker loads the plugins itself. Waits poll the database the
worker writes to, with a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django_proc import Worker, migrate, serving, site_env
from plugin_factory import write_plugin

pytestmark = [pytest.mark.slow, pytest.mark.services]

CLOCK = """\
STATE = {}


def activate(api):
    STATE["api"] = api
    api.schedule(tick, 1, repeat=True)


def _bump(key):
    storage = STATE["api"].storage
    storage.set_sync(key, storage.get_sync(key, 0) + 1)


def tick():
    _bump("ticks")


def once():
    _bump("once")
"""

SLOW_SUBSCRIBER = """\
def activate(api):
    # Every process that activates the plugin counts itself: the site process, then the worker.
    api.storage.set_sync("activations", api.storage.get_sync("activations", 0) + 1)

    @api.events.subscribe("slowbg.job", background=True)
    def handle(event):
        # Logged (the delivery's database writes are part of its transaction, which a killed
        # worker never commits): the test sees each attempt in the worker's log.
        api.log.warning("slowbg: handling %s", event.data["n"])
        if api.config.get("spin"):
            while True:  # the first worker is killed in here
                pass
        api.storage.set_sync("done", event.data["n"])
"""


@pytest.fixture
def site(tmp_path: Path, redis_url: str) -> Iterator[tuple[dict[str, str], Path]]:
    """Environment of a site on Redis + a fresh SQLite file, with the test plugins. Its broker
    and cache keys carry a prefix of their own (other test runs may share the Redis database),
    and are deleted afterwards."""
    import redis

    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "clock", CLOCK, "permissions: [schedule, storage]\n")
    write_plugin(
        plugins, "slowbg", SLOW_SUBSCRIBER,
        'permissions: [storage]\nevents: ["slowbg.*"]\n'
        "settings_schema:\n  spin: {type: boolean, default: true}\n",
    )
    env = site_env(
        tmp_path,
        plugins,
        redis_url=redis_url,
        extra={
            # A message held by a worker that died goes back to the queue after 4 s, looked
            # for every second (defaults: one hour, 100 s).
            "CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps(
                {"visibility_timeout": 4, "unacked_restore_interval": 1,
                 "unacked_restore_throttle": 1, "unacked_mutex_expire": 2,
                 "global_keyprefix": prefix}
            ),
            "CELERY_BEAT_MAX_LOOP_INTERVAL": "1",
            "CACHE_KEY_PREFIX": prefix,
        },
    )
    migrate(env)
    yield env, tmp_path / "db.sqlite3"
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))  # broker keys and "<prefix>:1:<key>"
    if keys:
        client.delete(*keys)


def _stored(db: Path, plugin: str, key: str) -> Any:
    with sqlite3.connect(db, timeout=20) as conn:
        row = conn.execute(
            "SELECT value FROM course_plugins_pluginstorage WHERE plugin = ? AND key = ?",
            (plugin, key),
        ).fetchone()
    return json.loads(row[0]) if row else None


def _held_by_worker(env: dict[str, str], function: str) -> bool:
    """Whether a worker took (and has not acknowledged) a run of ``function`` from Redis."""
    import base64

    import redis

    prefix = env["CACHE_KEY_PREFIX"]
    for raw in redis.Redis.from_url(env["REDIS_URL"]).hvals(f"{prefix}unacked"):
        message = json.loads(raw)[0]
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        if kwargs.get("function") == function:
            return True
    return False


def _wait(condition: Callable[[], Any], what: str, worker: Worker, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n"
                         f"{worker.log.read_text()[-5000:]}")


def test_schedules_fire_in_the_worker_and_survive_its_restart(
    site: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, db = site
    with serving(env) as (admin, workers):
        admin.request(op="activate", name="clock")  # activate() schedules tick every second

        workers.append(Worker(env, tmp_path / "worker1.log", name="w1"))
        workers[0].wait_ready()
        _wait(lambda: (_stored(db, "clock", "ticks") or 0) >= 2, "two ticks", workers[0])
        # A one-shot the worker holds (its ETA is 5 s away) when it is stopped.
        assert admin.request(op="schedule", plugin="clock", function="once", delay=5) == {
            "op": "schedule", "id": "clock:once"
        }
        _wait(lambda: _held_by_worker(env, "once"), "the worker to hold it",
              workers[0])
        workers[0].stop()
        assert _stored(db, "clock", "once") is None
        ticks_at_restart = _stored(db, "clock", "ticks")

        workers.append(Worker(env, tmp_path / "worker2.log", name="w2"))
        workers[1].wait_ready()
        _wait(lambda: _stored(db, "clock", "once") == 1, "the one-shot", workers[1])
        _wait(
            lambda: _stored(db, "clock", "ticks") >= ticks_at_restart + 2,
            "ticks after the restart",
            workers[1],
        )
        assert _stored(db, "clock", "once") == 1


def test_a_background_event_survives_a_worker_killed_mid_delivery(
    site: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, db = site
    with serving(env) as (admin, workers):
        workers.append(Worker(env, tmp_path / "worker1.log", beat=False, name="w1"))
        workers[0].wait_ready()
        # The idle worker follows an activation made in the site process within seconds (its
        # follower thread looks every SYNC_INTERVAL; bench/bench_sync.py measures the delay).
        admin.request(op="activate", name="slowbg")
        _wait(lambda: _stored(db, "slowbg", "activations") >= 2, "the worker to follow",
              workers[0], timeout=5.0)

        admin.request(op="emit", name="slowbg.job", data={"n": 42})
        _wait(lambda: "slowbg: handling 42" in workers[0].log.read_text(), "the first attempt",
              workers[0])
        workers[0].kill()  # SIGKILL mid-handler: the message was never acknowledged
        assert _stored(db, "slowbg", "done") is None
        admin.request(op="settings", name="slowbg", values={"spin": False})

        workers.append(Worker(env, tmp_path / "worker2.log", beat=False, name="w2"))
        workers[1].wait_ready()
        _wait(lambda: _stored(db, "slowbg", "done") == 42, "the redelivery", workers[1])
        assert workers[1].log.read_text().count("slowbg: handling 42") == 1
