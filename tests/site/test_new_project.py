"""A new user's path: a fresh ``django-admin startproject``, set up only as the README says.

The project is generated in a temporary folder (never ``example_project``): ``startproject mysite``,
``startapp school`` with a ``Lesson`` model, a plain ``ModelAdmin`` and a plain DRF view set. The
settings, ``urls.py``, ``celery.py`` and the ``lesson-guard`` plugin are the README's own code
blocks, read from README.md, so the README cannot drift from what works. Every step runs in its
own process, as a user would run it: ``manage.py migrate``/``check``/``plugins``/``shell -c`` and
a script. The package is importable through ``PYTHONPATH`` (as after ``pip install``), or really
installed: ``NEW_PROJECT_PYTHON=/venv/bin/python`` runs every step with that interpreter, e.g. one
of a fresh venv after ``pip install "/path/to/course_plugins[redis]" pytest``.

What it proves: the plugin refuses in the shell and in a script (the plugins start there without
any request), as a form error in the admin, as a 400 in DRF; ``/api/`` and ``/api/schema/``
answer; the README's plugin test passes with ``course_plugins.testing``; ``plugins deactivate``
never runs ``activate()``; ``celery -A mysite worker -B`` runs a plugin's repeating schedule (on
Redis, when it is reachable); ``plugins uninstall`` and ``migrate course_plugins zero`` leave no
rows behind (plugin, storage, django-celery-beat).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

LESSON_MODEL = """\
from django.db import models


class Lesson(models.Model):
    title = models.CharField(max_length=200)
    position = models.PositiveIntegerField(default=0)

    def __str__(self):
        return self.title
"""

LESSON_ADMIN = """\
from django.contrib import admin

from .models import Lesson

admin.site.register(Lesson)
"""

LESSON_API = """\
from rest_framework import routers, serializers, viewsets

from .models import Lesson


class LessonSerializer(serializers.ModelSerializer):
    class Meta:
        model = Lesson
        fields = ["id", "title", "position"]


class LessonViewSet(viewsets.ModelViewSet):
    queryset = Lesson.objects.all()
    serializer_class = LessonSerializer


router = routers.SimpleRouter()
router.register("lessons", LessonViewSet)
urlpatterns = router.urls
"""

# A second plugin, of the test's own: it counts its activations in its storage and schedules a
# repeating function (a django-celery-beat row), so deactivate/uninstall/migrate zero have
# something to prove.
COUNTER_MANIFEST = """\
name: lesson-counter
version: 1.0.0
description: Counts its activations; refreshes a tally every second.
author: Tests
hooks: [after-lesson-save]
events: [lesson.created]
permissions: [storage, schedule]
"""

COUNTER_CODE = '''\
api = None


def refresh():
    api.storage.increment_sync("refreshes")


def activate(plugin_api):
    global api
    api = plugin_api
    api.storage.increment_sync("activations")
    api.schedule(refresh, delay_seconds=1, repeat=True)

    @api.events.subscribe("lesson.created", background=True)
    def counted(event):
        api.storage.increment_sync("lessons")


def uninstall(api):
    api.log.warning("lesson-counter uninstalled; it had been activated %s time(s)",
                    api.storage.get_sync("activations"))
'''

# Run as a script (python check_site.py): django.setup(), then the admin and DRF through
# Django's test client, as a browser and an API client would.
CHECK_SITE = '''\
import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django.setup()

from django.contrib.auth import get_user_model
from django.test import Client
from django.test.utils import setup_test_environment

from course_plugins.model_hooks import PluginVeto
from school.models import Lesson

setup_test_environment()  # lets the test client's "testserver" host in
out = {}
try:
    Lesson.objects.create(title="No")
    out["script_veto"] = None
except PluginVeto as veto:
    out["script_veto"] = veto.messages

User = get_user_model()
admin = User.objects.filter(username="admin").first() or User.objects.create_superuser(
    "admin", "admin@example.com", "pw"
)
client = Client()
client.force_login(admin)
index = client.get("/admin/").content.decode()
entries = ("/admin/course_plugins/plugin/", "/admin/course_plugins/organizationplugin/")
out["admin_index"] = [entry for entry in entries if entry in index]
response = client.post("/admin/school/lesson/add/", {"title": "Hi", "position": "1"})
out["admin_refused"] = {
    "status": response.status_code,
    "errors": [str(e) for e in response.context["adminform"].form.non_field_errors()]
    if response.status_code == 200 else None,
}
response = client.post("/admin/school/lesson/add/", {"title": "Fractions", "position": "2"})
out["admin_saved"] = response.status_code
response = client.post("/api/lessons/", {"title": "Hi"}, content_type="application/json")
out["drf_refused"] = {"status": response.status_code, "body": response.json()}
response = client.post("/api/lessons/", {"title": "Decimals"}, content_type="application/json")
out["drf_saved"] = response.status_code
response = client.get("/api/")
out["api_root"] = {"status": response.status_code, "body": response.json()}
response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
out["schema"] = {
    "status": response.status_code,
    "paths": sorted(response.json()["paths"]) if response.status_code == 200 else [],
}
# Every endpoint of the plugin API carries its own drf-spectacular schema, so none is left out
# of /api/schema/ in a project whose DEFAULT_SCHEMA_CLASS is DRF's.
from drf_spectacular.generators import SchemaGenerator
from course_plugins.rest.schema import PluginAPISchemaGenerator
generator = PluginAPISchemaGenerator()
generator._initialise_endpoints()
every = {e[0] for e in SchemaGenerator._get_paths_and_endpoints(generator)}
kept = {e[0] for e in generator._get_paths_and_endpoints()}
out["undocumented"] = sorted(
    path for path in every - kept
    if not path.startswith("/api/lessons/") and path not in ("/api/schema/", "/api/docs/")
)
out["titles"] = sorted(Lesson.objects.values_list("title", flat=True))
print(json.dumps(out))
'''


# A request (or a Celery task) starts the plugins while the engine is still armed for its first
# hook run: one plugin's activate() must not start the others a second time.
REQUEST_START = """\
import json
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django.setup()

from django.core.signals import request_started

from course_plugins.models import Plugin

request_started.send(sender=None)
print(json.dumps(sorted(Plugin.objects.values_list("name", "status"))))
"""


def readme_files() -> dict[str, str]:
    """The README's code blocks that start with a ``# <path>`` comment, by that path."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)
    files: dict[str, str] = {}
    for block in blocks:
        first, _, rest = block.partition("\n")
        match = re.match(r"# ([\w./-]+)", first)
        if match and "/" in match.group(1):
            files[match.group(1)] = rest
    return files


class Project:
    """The generated project: run ``manage.py``, scripts and pytest in it, each in a new process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = os.environ.get("NEW_PROJECT_PYTHON") or sys.executable
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mysite.settings"}
        if self.python == sys.executable:
            self.env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        else:  # an installed package: nothing from this checkout on the path
            self.env.pop("PYTHONPATH", None)
        self.env.pop("COURSE_VAR_DIR", None)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.python, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("manage.py", *args, check=check)

    def shell(self, code: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.manage("shell", "-c", textwrap.dedent(code), check=check)

    def query(self, code: str) -> object:
        """Run ``code`` in ``manage.py shell``; it prints one JSON value, returned here."""
        lines = self.shell(code).stdout.strip().splitlines()
        return json.loads(lines[-1])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("newuser") / "mysite"
    root.mkdir()
    project = Project(root)
    project.run("-m", "django", "startproject", "mysite", str(root))
    project.manage("startapp", "school")
    (root / "school" / "models.py").write_text(LESSON_MODEL)
    (root / "school" / "admin.py").write_text(LESSON_ADMIN)
    (root / "school" / "api.py").write_text(LESSON_API)

    files = readme_files()
    settings = root / "mysite" / "settings.py"
    cache_dir = root.parent / "cache"
    settings.write_text(
        settings.read_text()
        + "\n"
        + files["mysite/settings.py"]
        # The project's own app, and what the README offers for a machine without Redis: a file
        # cache shared by this project's processes; Celery's in-memory broker (no server).
        + 'INSTALLED_APPS += ["school"]\n'
        + "CACHES = {'default': {'BACKEND': 'django.core.cache.backends.filebased."
        + f"FileBasedCache', 'LOCATION': {str(cache_dir)!r}}}}}\n"
        + 'import os\nCELERY_BROKER_URL = os.environ.get("NEW_PROJECT_BROKER", "memory://")\n'
        # A queue of its own on a Redis database other test runs may share.
        + 'CELERY_TASK_DEFAULT_QUEUE = os.environ.get("NEW_PROJECT_QUEUE", "celery")\n'
        # Plugins to run trusted in this process (the README's TRUSTED_PLUGINS, set per run).
        + 'COURSE_PLUGINS["TRUSTED_PLUGINS"] = '
        + '[n for n in os.environ.get("NEW_PROJECT_TRUSTED", "").split(",") if n]\n'
    )
    mount = 'path("api/", include("course_plugins.rest.urls")),'
    urls = files["mysite/urls.py"].replace(
        mount, mount + '\n    path("api/", include("school.api")),'
    )
    assert "school.api" in urls
    (root / "mysite" / "urls.py").write_text(urls)
    (root / "mysite" / "celery.py").write_text(files["mysite/celery.py"])
    (root / "mysite" / "__init__.py").write_text(files["mysite/__init__.py"])
    for path, content in files.items():
        if path.startswith("plugins/"):
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    counter = root / "plugins" / "lesson-counter"
    counter.mkdir(parents=True)
    (counter / "plugin.yaml").write_text(COUNTER_MANIFEST)
    (counter / "__init__.py").write_text(COUNTER_CODE)
    (root / "check_site.py").write_text(CHECK_SITE)
    (root / "request_start.py").write_text(REQUEST_START)

    project.manage("makemigrations", "school")
    project.manage("migrate")
    return project


def test_readme_has_every_file_this_test_uses():
    files = readme_files()
    for path in (
        "mysite/settings.py",
        "mysite/urls.py",
        "mysite/celery.py",
        "mysite/__init__.py",
        "plugins/lesson-guard/plugin.yaml",
        "plugins/lesson-guard/__init__.py",
        "plugins/lesson-guard/tests/test_lesson_guard.py",
    ):
        assert path in files, path


def test_check_has_no_warnings_for_the_readme_setup(project):
    result = project.manage("check")
    assert "course_plugins." not in result.stdout + result.stderr


def test_plugins_start_inactive_and_activate(project):
    listing = project.manage("plugins", "list").stdout
    assert re.search(r"lesson-guard\s+1\.0\.0\s+inactive", listing), listing
    # The listing says how confined isolated plugins are on this machine.
    assert "Isolated plugins: sandbox layers active: process, rlimits" in listing, listing
    activated = project.manage("plugins", "activate", "lesson-guard", "lesson-counter")
    assert "sandbox layers" not in activated.stdout + activated.stderr


def test_one_off_commands_do_not_print_the_sandbox_layers(project):
    # Each of these starts the (isolated) plugins, so the sandbox; the layers line belongs to a
    # server's start, `plugins list` and `check --deploy`, not to every command.
    saved = project.shell(
        "from school.models import Lesson; Lesson.objects.create(title='Layers'); "
        "Lesson.objects.filter(title='Layers').delete()"
    )
    migrated = project.manage("migrate")
    checked = project.manage("check")
    for result in (saved, migrated, checked):
        assert "sandbox layers" not in result.stdout + result.stderr, result


def test_routine_commands_print_only_what_the_plugins_log(project):
    # With the README's LOGGING (course_plugins at INFO), starting the plugins in a command is
    # routine and says nothing: the shell shows the plugin's own api.log line, no lifecycle noise.
    saved = project.shell(
        "from school.models import Lesson; Lesson.objects.create(title='Quietly'); "
        "Lesson.objects.filter(title='Quietly').delete()"
    )
    # (kombu says the one other line about this test's memory:// broker; not the README's.)
    lines = [line for line in saved.stderr.splitlines() if "No hostname was supplied" not in line]
    assert lines == ["New lesson: Quietly"], saved.stderr
    for result in (project.manage("migrate"), project.manage("check")):
        assert result.stderr == "", result.stderr


def test_a_request_starts_each_plugin_once(project):
    result = project.run("request_start.py")
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        ["lesson-counter", "active"],
        ["lesson-guard", "active"],
    ]
    assert "raised" not in result.stderr, result.stderr
    # A server process says once, when its plugins start, how confined the isolated ones are.
    assert result.stderr.count("sandbox layers active: process, rlimits") == 1, result.stderr


def test_the_shell_runs_the_plugins(project):
    refused = project.shell(
        "from school.models import Lesson; Lesson.objects.create(title='Hi')", check=False
    )
    assert refused.returncode != 0
    assert "PluginVeto" in refused.stderr
    assert "A lesson title needs at least 5 characters." in refused.stderr
    assert project.query(
        """
        import json
        from school.models import Lesson
        Lesson.objects.create(title="Introduction")
        print(json.dumps(list(Lesson.objects.values_list("title", flat=True))))
        """
    ) == ["Introduction"]


def test_a_shell_sends_its_background_events_before_it_exits(project):
    # `shell -c` ends right after its commit: the row of the background event is handed to the
    # broker before the process is gone, not left for the workers' relay (10 s later). A row the
    # broker took stays, marked sent, until a worker delivered its event (none runs here).
    assert project.query(
        """
        import json
        from school.models import Lesson
        Lesson.objects.create(title="Sent at exit")
        print(json.dumps(True))
        """
    ) is True
    assert project.query(
        """
        import json
        from course_plugins.models import OutboxMessage
        from school.models import Lesson
        Lesson.objects.filter(title="Sent at exit").delete()
        unsent = OutboxMessage.objects.filter(attempts=0).count()
        refused = OutboxMessage.objects.exclude(last_error="").count()
        print(json.dumps([unsent, refused]))
        """
    ) == [0, 0]


def test_the_same_plugins_run_trusted_when_the_operator_says_so(project):
    isolated = project.query(
        """
        import json
        from course_plugins.site import runtime
        from school.models import Lesson
        Lesson.objects.create(title="Isolated lesson")
        print(json.dumps(runtime.local_plugin("lesson-guard").isolated))
        """
    )
    assert isolated is True  # the default
    project.env["NEW_PROJECT_TRUSTED"] = "lesson-guard"
    try:
        trusted = project.query(
            """
            import json
            from course_plugins.site import runtime
            from school.models import Lesson
            try:
                Lesson.objects.create(title="Hi")
                refused = ""
            except Exception as exc:
                refused = str(exc)
            Lesson.objects.create(title="Trusted lesson")
            plugin = runtime.local_plugin("lesson-guard")
            # Leave the lessons as the other tests expect them.
            Lesson.objects.filter(title__in=["Isolated lesson", "Trusted lesson"]).delete()
            print(json.dumps([plugin.isolated, refused]))
            """
        )
    finally:
        del project.env["NEW_PROJECT_TRUSTED"]
    assert trusted[0] is False
    assert "A lesson title needs at least 5 characters." in trusted[1]


def test_admin_form_error_drf_400_api_root_and_schema(project):
    out = json.loads(project.run("check_site.py").stdout.strip().splitlines()[-1])
    message = "A lesson title needs at least 5 characters."
    assert out["script_veto"] == [message]
    # No organizations in this project: the admin index has no entry for them (it led to a 403).
    assert out["admin_index"] == ["/admin/course_plugins/plugin/"]
    assert out["admin_refused"] == {"status": 200, "errors": [message]}
    assert out["admin_saved"] == 302
    assert out["drf_refused"] == {"status": 400, "body": {"non_field_errors": [message]}}
    assert out["drf_saved"] == 201
    assert out["api_root"]["status"] == 200
    assert out["api_root"]["body"]["plugins"].endswith("/api/plugins/")
    assert out["schema"]["status"] == 200
    assert "/api/plugins/" in out["schema"]["paths"]
    assert out["undocumented"] == []  # a plugin API view without its own AutoSchema
    assert out["titles"] == ["Decimals", "Fractions", "Introduction"]


def test_the_readme_plugin_test_passes_with_the_test_kit(project):
    result = project.run(
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "plugins/lesson-guard/tests", check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_deactivate_never_runs_activate(project):
    count = """
        import json
        from course_plugins.models import PluginStorage
        row = PluginStorage.objects.filter(plugin="lesson-counter", key="activations").first()
        print(json.dumps(row.value if row else None))
        """
    before = project.query(count)
    assert isinstance(before, int) and before >= 1
    project.manage("plugins", "deactivate", "lesson-counter")
    assert project.query(count) == before
    project.manage("plugins", "activate", "lesson-counter")
    assert project.query(count) == before + 1


def test_celery_beat_runs_the_plugins_schedule(project, redis_url):
    # `celery -A mysite worker -B`, as the README says, on Redis: beat reads the plugin's
    # repeating schedule from the database and a worker runs it.
    count = """
        import json
        from course_plugins.models import PluginStorage
        row = PluginStorage.objects.filter(plugin="lesson-counter", key="refreshes").first()
        print(json.dumps(row.value if row else 0))
        """
    before = project.query(count)
    queue = f"new-project-{os.getpid()}-{time.monotonic_ns()}"
    env = {**project.env, "NEW_PROJECT_BROKER": redis_url, "NEW_PROJECT_QUEUE": queue}
    worker = subprocess.Popen(
        [project.python, "-m", "celery", "-A", "mysite", "worker", "-B", "-c", "1",
         "--without-gossip", "--without-mingle", "--loglevel=info"],
        cwd=project.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while project.query(count) < before + 2:
            assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
            assert time.monotonic() < deadline, "beat never ran the plugin's schedule"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    assert "course_plugins:lesson-counter:refresh" in output
    assert "unregistered" not in output.lower() and "Traceback" not in output


def test_uninstall_removes_the_plugin_and_its_data(project):
    beat_rows = """
        import json
        from django_celery_beat.models import PeriodicTask
        print(json.dumps(sorted(PeriodicTask.objects.filter(
            task__startswith="course_plugins.").values_list("name", flat=True))))
        """
    assert project.query(beat_rows) == ["course_plugins:lesson-counter:refresh"]
    result = project.manage("plugins", "uninstall", "lesson-counter")
    assert "uninstalled" in result.stdout
    assert "had been activated" in result.stderr  # its uninstall(api) ran
    assert project.query(beat_rows) == []
    assert project.query(
        """
        import json
        from django.core.cache import cache
        print(json.dumps(cache.get("course_plugins:schedule-voided:lesson-counter")))
        """
    ) is None  # nothing of it left in the shared cache either
    assert project.query(
        """
        import json
        from course_plugins.models import Plugin, PluginStorage
        print(json.dumps([
            list(Plugin.objects.values_list("name", flat=True)),
            PluginStorage.objects.filter(plugin="lesson-counter").count(),
        ]))
        """
    ) == [["lesson-guard"], 0]


def test_migrate_zero_leaves_no_beat_rows(project):
    project.manage("plugins", "activate", "lesson-counter")  # it schedules again
    project.manage("migrate", "course_plugins", "zero")
    assert project.query(
        """
        import json
        from django.db import connection
        from django_celery_beat.models import PeriodicTask
        tables = [t for t in connection.introspection.table_names()
                  if t.startswith("course_plugins_")]
        print(json.dumps([tables, PeriodicTask.objects.filter(
            task__startswith="course_plugins.").count()]))
        """
    ) == [[], 0]
