"""Extra site processes for the multi-process tests and benchmarks (not a test module).

Parent side (imported by tests and ``bench/``; no Django needed): :func:`site_env`,
:func:`migrate`, :class:`Proc` (a child speaking JSON lines), :func:`start_worker` (a real
``celery -A example_project worker``); plugin folders come from ``plugin_factory.write_plugin``.

Child side (``python tests/django_proc.py ...``) runs the example project (settings from the
environment: SQLITE_PATH or DATABASE_URL, COURSE_PLUGIN_DIRS, COURSE_VAR_DIR, CELERY_BROKER_URL)
and speaks JSON lines (with DJANGO_PROC_SQLITE_DEFERRED set, SQLite transactions are deferred,
SQLite's default, instead of the site's IMMEDIATE):

- ``serve``: reads commands from stdin, one JSON object a line, answers one JSON line each:
  ``{"op": "activate"|"deactivate", "name": ..., "mode": ...}`` (through ``runtime``, as the
  admin does),
  ``{"op": "state", "name": ...}``, ``{"op": "emit", "name": ..., "data": {...}}``,
  ``{"op": "commit-events", "name": ..., "times": n, "start": i}`` (each from a transaction's
  commit, ``data={"n": i}``), ``{"op": "outbox"}`` (rows waiting in the outbox),
  ``{"op": "settings", "name": ..., "values": {...}}`` (as the admin's settings form),
  ``{"op": "schedule", "plugin": ..., "function": ..., "delay": s, "repeat": bool}``,
  ``{"op": "config-merge"|"storage-set", "plugin": ..., "prefix": ..., "times": n}`` (writes
  through the stores behind ``api.config`` / ``api.storage``),
  ``{"op": "storage-increment", "plugin": ..., "key": ..., "times": n}`` (through the discovered
  plugin's own ``api.storage.increment_sync``, as plugin code counts),
  ``{"op": "override", "key": ..., "enabled": ..., "priority": ...}`` (``control.save_override``),
  ``{"op": "hook", "hook": ...}`` (its functions after a request's look at the stamp),
  ``{"op": "save-course", "name": ..., "title": ...}``, ``{"op": "runs", "hook": ...}``,
  ``{"op": "org-make", "slug": ...}``, ``{"op": "org", "verb": "activate"|"deactivate"|
  "settings", "org": pk, "name": ..., "data": {...}}`` (per organization, through ``runtime``),
  ``{"op": "judge", "org": pk, "title": ...}`` (saves a course as a request would, rolled back).
- ``watch NAME``: calls ``runtime.check()`` in a tight loop, as requests would, and prints
  ``{"state": ..., "t": monotonic}`` at start and whenever plugin NAME's state changes here.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# Settings that would point a child at another database, broker or folder than the test's.
_SITE_VARS = (
    "DATABASE_URL", "SQLITE_PATH", "CELERY_BROKER_URL", "REDIS_URL", "COURSE_VAR_DIR",
    "COURSE_PLUGIN_DIRS", "CELERY_BROKER_TRANSPORT_OPTIONS", "CELERY_BEAT_MAX_LOOP_INTERVAL",
    "CELERY_TASK_ALWAYS_EAGER",
)


def site_env(
    base: Path,
    plugin_dir: Path,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the environment of a site process whose state lives under ``base``.

    SQLite file ``base/db.sqlite3`` unless ``database_url``; filesystem broker and file cache
    under ``base/var`` unless ``redis_url`` (then Redis is broker and cache).
    """
    env = {k: v for k, v in os.environ.items() if k not in _SITE_VARS}
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        PYTHONPATH=str(ROOT),
        COURSE_VAR_DIR=str(base / "var"),
        COURSE_PLUGIN_DIRS=str(plugin_dir),
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    else:
        env["SQLITE_PATH"] = str(base / "db.sqlite3")
    if redis_url:
        env["CELERY_BROKER_URL"] = env["REDIS_URL"] = redis_url
    env.update(extra or {})
    return env


_migrated_template: Path | None = None


def migrate(env: Mapping[str, str]) -> None:
    """Create the site's tables in the database ``env`` points at.

    A SQLite file is copied from one migrated once per test session (migrating takes seconds).
    """
    global _migrated_template
    target = env.get("SQLITE_PATH")
    if target and "DATABASE_URL" not in env and _migrated_template is not None:
        shutil.copyfile(_migrated_template, target)
        return
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT, env=dict(env), check=True, capture_output=True, timeout=120,
    )
    if target and "DATABASE_URL" not in env:
        template = Path(tempfile.mkdtemp(prefix="course-plugins-migrated-")) / "db.sqlite3"
        shutil.copyfile(target, template)
        _migrated_template = template


class Proc:
    """A child site process (``serve`` or ``watch``) with JSON lines on stdin/stdout."""

    def __init__(self, env: Mapping[str, str], *args: str) -> None:
        self.popen = subprocess.Popen(
            [PYTHON, str(Path(__file__).resolve()), *args],
            cwd=ROOT, env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, False), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    def _pump(self, stream: IO[str], json_lines: bool) -> None:
        for line in stream:
            if json_lines and line.startswith("{"):
                self.lines.put(json.loads(line))
            else:
                self.stderr.append(line)

    def read(self, timeout: float = 30.0) -> dict[str, Any]:
        """Return the next JSON line; raises AssertionError (with the child's stderr) on timeout."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            tail = "".join(self.stderr[-40:])
            message = f"no answer from {self.popen.args} in {timeout}s:\n{tail}"
            raise AssertionError(message) from None

    def request(self, timeout: float = 30.0, **command: Any) -> dict[str, Any]:
        """Send one command and return its answer."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(command) + "\n")
        self.popen.stdin.flush()
        return self.read(timeout)

    def close(self) -> None:
        """Stop the child and close its pipes."""
        assert self.popen.stdin is not None
        self.popen.stdin.close()  # a serving child ends at EOF, a watching one on SIGTERM
        if self.popen.args[2] != "serve":
            self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        for pump in self._pumps:
            pump.join(5)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


class Worker:
    """A real ``celery -A example_project worker`` (with beat if asked) in its own process group."""

    def __init__(
        self, env: Mapping[str, str], log: Path, *, beat: bool = True, name: str = "w"
    ) -> None:
        self.log = log
        args = [
            PYTHON, "-m", "celery", "-A", "example_project", "worker", "--loglevel=INFO",
            "--concurrency=1", "--without-gossip", "--without-mingle", "--without-heartbeat",
            f"--hostname={name}@%h",
        ]
        if beat:
            args += ["-B", f"--schedule={log.with_suffix('.beat')}"]
        self._out = open(log, "a")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=dict(env), stdout=self._out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once the worker logged that it is ready; raises AssertionError otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready." in self.log.read_text():
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"worker not ready:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        """Warm shutdown (SIGTERM): unacknowledged messages go back to the broker."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._out.close()

    def kill(self) -> None:
        """SIGKILL the whole process group: the worker gets no chance to give anything back."""
        import signal

        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        self._out.close()



@contextmanager
def serving(env: Mapping[str, str]) -> Iterator[tuple[Proc, list[Worker]]]:
    """A site process (``serve``, read until it is up) and a list for the test's workers.

    On the way out every worker in the list is stopped, then the site process is closed.
    """
    admin = Proc(env, "serve")
    workers: list[Worker] = []
    try:
        admin.read(60)
        yield admin, workers
    finally:
        for worker in workers:
            worker.stop()
        admin.close()

def _say(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _state(name: str) -> str:
    from course_plugins.site import runtime

    runtime.ensure_started()  # once, as the first request of a web process would
    return str(runtime.get_loader().get(name).state)


def _serve() -> None:
    from course_plugins.api.stores import DjangoConfigStore, DjangoStorageStore
    from course_plugins.site import runtime

    _say({"ready": True})
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "activate":
            runtime.activate(command["name"], mode=command.get("mode", "live"))
            _say({"op": op, "t": time.monotonic(), "state": _state(command["name"])})
        elif op == "deactivate":
            runtime.deactivate(command["name"])
            _say({"op": op, "t": time.monotonic(), "state": _state(command["name"])})
        elif op == "state":
            _say({"op": op, "state": _state(command["name"])})
        elif op == "schedule":
            plugin = runtime.get_loader().get(command["plugin"])
            fn = getattr(plugin.module, command["function"])
            sid = plugin.api.schedule(fn, command["delay"], command.get("repeat", False))
            _say({"op": op, "id": sid})
        elif op == "emit":
            from course_plugins.core.event_bus import Event, EventBus

            EventBus.get_instance().publish_sync(
                Event(command["name"], command.get("data") or {}, source="django_proc")
            )
            _say({"op": op})
        elif op == "commit-events":
            # Events caused by database changes: each published from its own transaction's
            # commit, as the model-signal bridge does (its background deliveries go through the
            # outbox, written in that transaction).
            from django.db import transaction

            from course_plugins.model_hooks import publish_on_commit

            start = int(command.get("start", 0))
            for i in range(int(command["times"])):
                with transaction.atomic():
                    publish_on_commit(command["name"], {"n": start + i}, source="django_proc")
            _say({"op": op})
        elif op == "settings":
            runtime.update_settings(command["name"], command["values"])
            _say({"op": op})
        elif op == "outbox":
            from course_plugins.models import OutboxMessage

            _say({"op": op, "rows": OutboxMessage.objects.count()})
        elif op == "config-merge":
            # Read-modify-write of ONE row (Plugin.settings) per call: a lost update drops keys.
            config = DjangoConfigStore()
            for i in range(int(command["times"])):
                config.update(command["plugin"], {f"{command['prefix']}{i}": i})
            _say({"op": op})
        elif op == "storage-set":
            storage = DjangoStorageStore()
            for i in range(int(command["times"])):
                storage.set(command["plugin"], f"{command['prefix']}{i}", i)
                storage.set(command["plugin"], "shared", [command["prefix"], i])
            _say({"op": op})
        elif op == "storage-increment":
            runtime.ensure_started()
            api = runtime.get_loader().get(command["plugin"]).api
            for _ in range(int(command["times"])):
                api.storage.increment_sync(command["key"])
            _say({"op": op})
        elif op == "org-make":
            from example_project.courses.models import Organization

            org = Organization.objects.create(name=command["slug"], slug=command["slug"])
            _say({"op": op, "pk": org.pk})
        elif op == "org":
            verb, org, name = command["verb"], command["org"], command["name"]
            if verb == "settings":
                runtime.update_organization_settings(org, name, command["data"])
            else:
                getattr(runtime, f"{verb}_for")(org, name)
            _say({"op": op, "t": time.monotonic()})
        elif op == "judge":
            _say({"op": op, "outcome": _judge(command.get("org"), command["title"])})
        elif op in _CONTROL_OPS:
            _say({"op": op, **_CONTROL_OPS[op](command)})
        else:
            _say({"error": f"unknown op {op!r}"})


def _control_override(command: dict[str, Any]) -> dict[str, Any]:
    from course_plugins.site import control, runtime

    runtime.ensure_started()
    control.save_override(
        command["key"], enabled=command.get("enabled"), priority=command.get("priority", ...)
    )
    return {"t": time.monotonic()}


def _control_hook(command: dict[str, Any]) -> dict[str, Any]:
    from course_plugins.core.hook_manager import HookManager
    from course_plugins.site import runtime

    runtime.ensure_started()
    runtime.check()  # as a request would: a look at the stamp at most once per SYNC_INTERVAL
    hook = HookManager.get_instance()[command["hook"]].describe()
    keep = ("key", "enabled", "priority", "shadow")
    functions = [{k: f[k] for k in keep} for f in hook["functions"]]
    return {"functions": functions, "t": time.monotonic()}


def _control_save_course(command: dict[str, Any]) -> dict[str, Any]:
    from django.core.exceptions import ValidationError

    from course_plugins.site import control, runtime
    from example_project.courses.models import Course

    runtime.ensure_started()
    runtime.check()
    try:
        course = Course.objects.create(name=command["name"], title=command["title"])
    except ValidationError as exc:
        return {"veto": "; ".join(exc.messages)}
    return {"title": course.title, "process": control.recorder.process}


def _control_runs(command: dict[str, Any]) -> dict[str, Any]:
    from course_plugins.site import control

    runs = control.runs(command["hook"])
    return {"runs": [{k: r[k] for k in ("process", "outcome", "steps")} for r in runs]}


# The control room's cross-process test: overrides followed, runs shared through the cache.
_CONTROL_OPS = {
    "override": _control_override,
    "hook": _control_hook,
    "save-course": _control_save_course,
    "runs": _control_runs,
}


def _judge(org: Any, title: str) -> str:
    """Save a course of organization ``org`` as a request would (after ``runtime.check()``),
    then roll it back; returns ``"saved"`` or ``"refused: <message>"``."""
    from django.core.exceptions import ValidationError
    from django.db import transaction

    from course_plugins.site import runtime
    from example_project.courses.models import Course

    class Rollback(Exception):
        pass

    runtime.ensure_started()
    runtime.check()
    try:
        with transaction.atomic():
            Course.objects.create(name=f"judge-{time.monotonic_ns()}", title=title,
                                  organization_id=org)
            raise Rollback
    except ValidationError as exc:
        return f"refused: {' '.join(exc.messages)}"
    except Rollback:
        return "saved"


def _watch(name: str) -> None:
    from course_plugins.site import runtime

    last = _state(name)
    _say({"state": last, "t": time.monotonic()})
    while True:
        runtime.check()
        state = _state(name)
        if state != last:
            last = state
            _say({"state": state, "t": time.monotonic()})
        time.sleep(0.002)


def main() -> None:
    import django

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    django.setup()
    if os.environ.get("DJANGO_PROC_SQLITE_DEFERRED"):
        # SQLite's own default (a transaction takes the write lock at its first write), for the
        # tests that check the stores do not rely on the site's IMMEDIATE transactions.
        from django.db import connections

        connections.close_all()
        for option in ("transaction_mode", "init_command"):
            connections["default"].settings_dict["OPTIONS"].pop(option, None)
    if sys.argv[1] == "serve":
        _serve()
    elif sys.argv[1] == "watch":
        _watch(sys.argv[2])
    else:
        raise SystemExit(f"unknown command {sys.argv[1]!r}")


if __name__ == "__main__":
    main()
