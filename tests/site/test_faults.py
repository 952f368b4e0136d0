"""Fault injection: background events through broker outages, worker deaths and Redis restarts.

A private ``redis-server`` on a free port (broker and cache; append-only file, so a restart keeps
what it had, as a production Redis does), a site process (``tests/django_proc.py serve``), real
``celery worker`` processes, one SQLite file. Every event carries a number; the subscriber counts
each number in its storage (in the delivery's transaction), so the counts say exactly what was
lost (a missing number) and what was doubled (a count of 2). Waits poll the database with a
deadline; nothing asserts on time.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django_proc import Worker, migrate, serving, site_env
from plugin_factory import write_plugin

pytestmark = [pytest.mark.slow, pytest.mark.services]

REDIS_SERVER = shutil.which("redis-server")

COUNTER = """\
def activate(api):
    @api.events.subscribe("fault.*", background=True)
    def count(event):
        # In the delivery's transaction: a delivery that fails or dies leaves nothing behind.
        api.storage.increment_sync("seen:%d" % event.data["n"])
        api.storage.increment_sync("total")
"""

SLOW_COUNTER = """\
import time


def activate(api):
    @api.events.subscribe("slow.*", background=True)
    def count(event):
        api.storage.increment_sync("seen:%d" % event.data["n"])
        api.storage.increment_sync("total")
        # Takes a while, so the worker is killed with messages taken and not acknowledged.
        time.sleep(0.2)
"""


LATER = """\
STATE = {}


def activate(api):
    STATE["api"] = api


def first():
    STATE["api"].storage.increment_sync("first")


def second():
    STATE["api"].storage.increment_sync("second")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` of this test only, stopped and started on the same port."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.popen = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.folder), "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _until(self._accepting, "redis to accept connections", timeout=20)

    def stop(self) -> None:
        """Shut down (SIGTERM): clients get connection refused until ``start``."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(20)
        self.popen = None

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted (by the kernel) but nothing answers."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze``."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)

    def _accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _until(condition: Callable[[], Any], what: str, timeout: float = 60.0,
           log: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{log()}" if log else ""))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def site(tmp_path: Path, redis_server: PrivateRedis) -> tuple[dict[str, str], Path]:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "counter", COUNTER, 'permissions: [storage]\nevents: ["fault.*"]\n')
    write_plugin(plugins, "later", LATER, "permissions: [schedule, storage]\n")
    write_plugin(plugins, "slowcounter", SLOW_COUNTER,
                 'permissions: [storage]\nevents: ["slow.*"]\n')
    return _migrated_env(tmp_path, plugins, redis_server), tmp_path / "db.sqlite3"


def _migrated_env(tmp_path: Path, plugins: Path, redis_server: PrivateRedis) -> dict[str, str]:
    """The environment of a site on the private Redis with the plugins in ``plugins``, migrated."""
    env = site_env(
        tmp_path,
        plugins,
        redis_url=redis_server.url,
        extra={
            # A message a dead worker held goes back to the queue after 3 s, looked for every
            # second; an outbox row sent is sent again after twice that unless a worker
            # delivered it; the relay of each worker looks at the outbox every RELAY_INTERVAL.
            "CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps(
                {"visibility_timeout": 3, "unacked_restore_interval": 1,
                 "unacked_restore_throttle": 1, "unacked_mutex_expire": 2}
            ),
            "CACHE_KEY_PREFIX": f"faults-{uuid.uuid4().hex[:8]}:",
        },
    )
    migrate(env)
    return env


def _counts(db: Path, plugin: str) -> dict[str, int]:
    with sqlite3.connect(db, timeout=20) as conn:
        rows = conn.execute(
            "SELECT key, value FROM course_plugins_pluginstorage WHERE plugin = ?", (plugin,)
        ).fetchall()
    return {key: json.loads(value) for key, value in rows}


def _outbox_rows(db: Path) -> int:
    with sqlite3.connect(db, timeout=20) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM course_plugins_outboxmessage").fetchone()[0])


def _sent_rows(db: Path) -> int:
    """Outbox rows the broker took (kept until a worker delivered their event)."""
    with sqlite3.connect(db, timeout=20) as conn:
        return int(conn.execute(
            "SELECT COUNT(*) FROM course_plugins_outboxmessage WHERE attempts > 0"
        ).fetchone()[0])


def _deliveries(db: Path) -> int:
    with sqlite3.connect(db, timeout=20) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM course_plugins_eventdelivery").fetchone()[0])


def _assert_exactly_once(db: Path, plugin: str, numbers: range) -> None:
    counts = _counts(db, plugin)
    seen = {int(k.split(":")[1]): v for k, v in counts.items() if k.startswith("seen:")}
    missing = sorted(set(numbers) - set(seen))
    doubled = sorted(n for n, c in seen.items() if c != 1)
    assert (missing, doubled) == ([], []), f"lost {missing}, doubled {doubled}"
    assert counts["total"] == len(numbers)


def _all_counted(db: Path, plugin: str, expected: int) -> bool:
    return _counts(db, plugin).get("total", 0) >= expected


def test_events_published_while_the_broker_is_down_are_delivered_once_it_is_back(
    site: tuple[dict[str, str], Path], redis_server: PrivateRedis, tmp_path: Path
) -> None:
    env, db = site
    with serving(env) as (admin, workers):
        admin.request(op="activate", name="counter")
        redis_server.stop()
        # 10 events from committed changes (staged in their transactions) and 10 emitted ones,
        # all while Redis (broker and cache) is down: every request returns (short timeouts).
        admin.request(op="commit-events", name="fault.changed", times=10, start=0, timeout=60)
        for n in range(10, 20):
            admin.request(op="emit", name="fault.emitted", data={"n": n}, timeout=60)
        assert admin.request(op="outbox")["rows"] == 20  # nothing dropped, all waiting
        redis_server.start()
        worker = Worker(env, tmp_path / "worker.log", beat=False, name="w1")
        workers.append(worker)
        worker.wait_ready()
        _until(lambda: _all_counted(db, "counter", 20), "20 deliveries",
               log=lambda: worker.log.read_text()[-4000:])
        _until(lambda: _outbox_rows(db) == 0, "the outbox to empty")
        _assert_exactly_once(db, "counter", range(20))
        assert _deliveries(db) == 20


def test_one_shots_scheduled_while_redis_is_frozen_return_at_once_and_run_once_it_is_back(
    site: tuple[dict[str, str], Path], redis_server: PrivateRedis, tmp_path: Path
) -> None:
    env, db = site
    with serving(env) as (admin, workers):
        admin.request(op="activate", name="later")
        redis_server.freeze()  # broker and cache: connections hang instead of being refused
        try:
            for function, delay in (("first", 1), ("second", 0.1)):
                started = time.monotonic()
                answer = admin.request(op="schedule", plugin="later", function=function,
                                       delay=delay, timeout=60)
                # A generous bound: Celery's own connection would wait ~5 s (or forever).
                assert time.monotonic() - started < 3, f"api.schedule({function}) waited on Redis"
                assert answer == {"op": "schedule", "id": f"later:{function}"}
            assert admin.request(op="outbox")["rows"] == 2  # waiting in the database, not lost
        finally:
            redis_server.thaw()
        workers.append(Worker(env, tmp_path / "worker.log", beat=False, name="w1"))
        worker = workers[0]
        worker.wait_ready()  # its relay sends the rows, storing their tokens first
        _until(lambda: _outbox_rows(db) == 0, "the outbox to empty",
               log=lambda: worker.log.read_text()[-4000:])
        _until(lambda: _counts(db, "later") == {"first": 1, "second": 1}, "both one-shots",
               log=lambda: worker.log.read_text()[-4000:])
        # Scheduled again with Redis up: sent at once, runs once more (nothing left behind).
        admin.request(op="schedule", plugin="later", function="first", delay=0.1, timeout=60)
        _until(lambda: _counts(db, "later").get("first") == 2, "the third one-shot",
               log=lambda: worker.log.read_text()[-4000:])
        assert _counts(db, "later") == {"first": 2, "second": 1}
        assert _outbox_rows(db) == 0


def test_a_worker_killed_with_messages_taken_loses_and_doubles_nothing(
    site: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, db = site
    with serving(env) as (admin, workers):
        admin.request(op="activate", name="slowcounter")
        workers.append(Worker(env, tmp_path / "worker1.log", beat=False, name="w1"))
        workers[0].wait_ready()
        admin.request(op="commit-events", name="slow.changed", times=30, start=0, timeout=60)
        # Kill (SIGKILL, the whole process group) once some, not all, were handled.
        _until(lambda: _counts(db, "slowcounter").get("total", 0) >= 3, "some deliveries",
               log=lambda: workers[0].log.read_text()[-4000:])
        workers[0].kill()
        assert _counts(db, "slowcounter")["total"] < 30
        workers.append(Worker(env, tmp_path / "worker2.log", beat=False, name="w2"))
        workers[1].wait_ready()
        _until(lambda: _all_counted(db, "slowcounter", 30), "30 deliveries",
               log=lambda: workers[1].log.read_text()[-4000:])
        _assert_exactly_once(db, "slowcounter", range(30))


def test_messages_the_broker_lost_are_sent_again_from_the_outbox_and_delivered_once(
    site: tuple[dict[str, str], Path], redis_server: PrivateRedis, tmp_path: Path
) -> None:
    """kombu's Redis transport pops a message off the queue (BRPOP) before it records it as
    unacknowledged: a worker killed in between has taken it for good, and no visibility timeout
    brings it back. Emptying the queue before any worker runs is that loss, for every message."""
    import redis

    env, db = site
    with serving(env) as (admin, workers), redis.Redis.from_url(redis_server.url) as client:
        admin.request(op="activate", name="counter")
        admin.request(op="commit-events", name="fault.lost", times=10, start=0, timeout=60)
        _until(lambda: _sent_rows(db) == 10, "the prompt relay to send the 10 rows")
        assert client.delete("celery") == 1  # taken, never recorded as unacknowledged
        worker = Worker(env, tmp_path / "worker.log", beat=False, name="w1")
        workers.append(worker)
        worker.wait_ready()
        _until(lambda: _all_counted(db, "counter", 10), "10 deliveries",
               log=lambda: worker.log.read_text()[-4000:])
        _until(lambda: _outbox_rows(db) == 0, "the outbox to empty")
        _assert_exactly_once(db, "counter", range(10))


def test_a_worker_survives_a_redis_restart_and_keeps_delivering(
    site: tuple[dict[str, str], Path], redis_server: PrivateRedis, tmp_path: Path
) -> None:
    env, db = site
    with serving(env) as (admin, workers):
        admin.request(op="activate", name="slowcounter")
        worker = Worker(env, tmp_path / "worker.log", beat=False, name="w1")
        workers.append(worker)
        worker.wait_ready()
        admin.request(op="commit-events", name="slow.before", times=10, start=0, timeout=60)
        # Restart Redis while the worker holds messages it has not acknowledged (the moment
        # kombu 5.7.0 crashed in restore_unacked).
        _until(lambda: _counts(db, "slowcounter").get("total", 0) >= 2, "some deliveries",
               log=lambda: worker.log.read_text()[-4000:])
        redis_server.stop()
        admin.request(op="commit-events", name="slow.during", times=5, start=10, timeout=60)
        redis_server.start()
        admin.request(op="commit-events", name="slow.after", times=5, start=15, timeout=60)
        _until(lambda: _all_counted(db, "slowcounter", 20), "20 deliveries",
               log=lambda: worker.log.read_text()[-6000:])
        assert worker.popen.poll() is None, worker.log.read_text()[-6000:]  # still running
        _assert_exactly_once(db, "slowcounter", range(20))
        log = worker.log.read_text()
        assert "'NoneType' object has no attribute 'hostname'" not in log


def test_kombu_guard_turns_a_closed_connection_into_a_connection_error(
    redis_server: PrivateRedis,
) -> None:
    import redis
    from kombu import Connection

    from course_plugins.site import kombu_compat

    kombu_compat.install()  # idempotent (course_plugins.tasks installed it already)
    with Connection(redis_server.url) as connection:
        channel = connection.channel()
        transport = connection.transport
        connection._do_close_transport()  # what a lost connection's teardown does
        # kombu 5.7.0 unguarded: AttributeError: 'NoneType' object has no attribute 'hostname'
        with pytest.raises(redis.exceptions.ConnectionError):
            channel._connparams()
        with pytest.raises(redis.exceptions.ConnectionError):
            channel.qos.restore_unacked()  # the worker's crash, now an error Celery handles
        assert transport.supports_batch_publish is False
        channel.close()


def test_analytics_tracker_counts_each_event_once_through_a_worker_restart(
    tmp_path: Path, redis_server: PrivateRedis
) -> None:
    """The example plugin end to end: its async background handler, its storage counts and the
    analytics backend's rows, across a worker killed and a new one started."""
    env = _migrated_env(
        tmp_path, Path(__file__).resolve().parents[2] / "plugin_dirs", redis_server
    )
    db = tmp_path / "db.sqlite3"

    def rows() -> int:
        with sqlite3.connect(db, timeout=20) as conn:
            return int(conn.execute(
                "SELECT COUNT(DISTINCT event_id) FROM course_plugins_analyticsevent "
                "WHERE plugin LIKE 'analytics-tracker%' AND name = 'course.created'"
            ).fetchone()[0])

    def all_rows() -> int:
        with sqlite3.connect(db, timeout=20) as conn:
            return int(conn.execute(
                "SELECT COUNT(*) FROM course_plugins_analyticsevent WHERE name = 'course.created'"
            ).fetchone()[0])

    with serving(env) as (admin, workers):
        admin.request(op="activate", name="analytics-tracker")
        workers.append(Worker(env, tmp_path / "worker1.log", beat=False, name="w1"))
        workers[0].wait_ready()
        admin.request(op="commit-events", name="course.created", times=10, start=0, timeout=60)
        _until(lambda: rows() >= 3, "some analytics rows",
               log=lambda: workers[0].log.read_text()[-4000:])
        workers[0].kill()
        admin.request(op="commit-events", name="course.created", times=10, start=10, timeout=60)
        workers.append(Worker(env, tmp_path / "worker2.log", beat=False, name="w2"))
        workers[1].wait_ready()
        _until(lambda: rows() == 20, "20 analytics rows",
               log=lambda: workers[1].log.read_text()[-4000:])
        _until(lambda: _outbox_rows(db) == 0, "the outbox to empty")
        assert all_rows() == 20  # one row per event: none lost, none doubled
