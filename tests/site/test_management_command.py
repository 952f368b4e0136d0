"""``manage.py plugins``: list, activate/deactivate/reload, validate PATH, new NAME."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from ops_plugins import ops_site
from plugin_factory import write_plugin

from course_plugins.models import Plugin, PluginStatus
from course_plugins.site import runtime

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"


def _run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("plugins", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _manage(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "example_project.settings"}
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "plugins", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- list --------------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path, settings, db):
    with ops_site(tmp_path, settings) as folder:
        yield folder


def test_list_discovers_and_prints_a_table(site):
    write_plugin(
        site,
        "newcomer",
        manifest="hooks: [after-course-save]\nevents: [course.*, quiz.*]\n",
        version="0.2.0-rc.1",
    )
    shutil.rmtree(site / "ops-broken")
    out, _ = _run("list")
    table, layers = out.split("\n\n")
    lines = table.splitlines()
    # After the table: how confined isolated plugins are on this machine.
    assert layers.startswith("Isolated plugins: sandbox layers active: process, rlimits")
    assert lines[0].split() == ["NAME", "VERSION", "STATUS", "ENABLED", "HOOKS", "EVENTS"]
    assert lines[1].split() == ["newcomer", "0.2.0-rc.1", "inactive", "no", "1", "2"]
    assert lines[2].split() == ["ops-broken", "0.1.0", "error", "(missing)", "no", "1", "0"]
    assert lines[3].split() == ["ops-greeter", "1.2.0", "inactive", "no", "1", "1"]
    # Columns line up: every row starts its VERSION column at the same offset.
    versions = ["VERSION", "0.2.0-rc.1", "0.1.0", "1.2.0"]
    assert len({line.index(v) for line, v in zip(lines, versions, strict=True)}) == 1
    assert Plugin.objects.get(name="newcomer").status == PluginStatus.INACTIVE


def test_list_without_plugins_says_where_it_looked(tmp_path, settings, db):
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(tmp_path)]}
    runtime.reset()
    try:
        out, _ = _run("list")
    finally:
        runtime.reset()
    assert out.strip() == f"No plugins found. PLUGIN_DIRS: {tmp_path}"


@pytest.mark.parametrize("args", [("list",), ("activate", "x"), ("uninstall", "x")])
def test_without_the_tables_it_says_to_migrate_instead_of_a_traceback(monkeypatch, db, args):
    from course_plugins.management.commands import plugins

    monkeypatch.setattr(plugins, "plugin_table_exists", lambda: False)  # migrate ... zero
    with pytest.raises(CommandError, match=r"tables are not in the database: run `python manage"):
        call_command("plugins", *args)


def test_a_subcommand_is_required():
    with pytest.raises(CommandError):
        call_command("plugins")


# --- validate ----------------------------------------------------------------------------------


def test_validate_accepts_a_good_plugin(tmp_path):
    out, err = _run("validate", str(FIXTURES / "ops-greeter"))
    assert out.strip().endswith("ops-greeter@1.2.0: OK") and err == ""


def test_validate_takes_the_name_of_a_plugin_in_plugin_dirs(site):
    out, err = _run("validate", "ops-greeter")
    assert out.strip().endswith("ops-greeter@1.2.0: OK") and err == ""


def test_validate_reports_manifest_and_code_problems_naming_file_and_line(tmp_path):
    bad = write_plugin(
        tmp_path,
        "bad",
        "import os\n\n\ndef activate(api):\n    pass\n",
        plugin_yaml="name: Bad Name\nversion: 1.0.0\n",
    )
    (bad / "helpers.py").write_text("x = eval('1')\n")
    (bad / "tests").mkdir()
    (bad / "tests" / "test_bad.py").write_text("import os  # tests are not plugin code\n")
    with pytest.raises(CommandError, match="problem"):
        _run("validate", str(bad))
    _, err = _capture_failure("validate", str(bad))
    assert f"{bad / 'plugin.yaml'}: field 'name'" in err
    assert f"{bad / '__init__.py'}:1:" in err and "os" in err
    assert f"{bad / 'helpers.py'}:1:" in err and "eval" in err
    assert "test_bad.py" not in err


def _capture_failure(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError):
        call_command("plugins", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_validate_reports_a_missing_entry_point_and_manifest(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _, err = _capture_failure("validate", str(empty))
    assert "plugin.yaml" in err and "__init__.py: missing" in err


def test_validate_reports_every_bad_field_of_a_manifest_in_one_run(tmp_path):
    bad = write_plugin(
        tmp_path,
        "sloppy",
        plugin_yaml="name: sloppy\nversion: 1.0\nhooks: [Bad Hook]\npermissions: [internet]\n"
        "settings_schema:\n  limit: {type: colour}\n",
    )
    _, err = _capture_failure("validate", str(bad))
    manifest = bad / "plugin.yaml"
    assert err.splitlines()[0].endswith("sloppy: 4 problem(s)"), err
    for field, advice in (
        ("version", 'write a semantic version as a string, e.g. "1.0.0"'),
        ("hooks[0]", "e.g. before-course-save"),
        ("permissions[0]", "choose from: advice"),
        ("settings_schema.limit.type", "expected one of: string"),
    ):
        assert f"  {manifest}: field '{field}': " in err and advice in err, (field, err)


def test_validate_exits_with_status_1_for_ci(tmp_path):
    bad = write_plugin(tmp_path, "bad", plugin_yaml="name: bad\nversion: one\n")
    result = _manage("validate", str(bad))
    assert result.returncode == 1
    assert "field 'version'" in result.stderr


# --- new ---------------------------------------------------------------------------------------


def test_new_refuses_bad_names_and_existing_folders(tmp_path):
    with pytest.raises(CommandError, match="not a valid plugin name"):
        _run("new", "My Plugin", "--dir", str(tmp_path))
    (tmp_path / "taken").mkdir()
    with pytest.raises(CommandError, match="already exists"):
        _run("new", "taken", "--dir", str(tmp_path))


def test_new_scaffolds_a_plugin_that_validates_and_whose_test_passes(tmp_path):
    out, _ = _run("new", "shiny-thing", "--dir", str(tmp_path))
    folder = tmp_path / "shiny-thing"
    assert f"Created {folder}" in out
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "__init__.py",
        "plugin.yaml",
        "tests/test_shiny_thing.py",
    ]
    validated, err = _run("validate", str(folder))
    assert "shiny-thing@0.1.0: OK" in validated and err == ""
    # The scaffold's own test, run the way its author would: pytest in a fresh process.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:django",
            str(folder / "tests"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


# --- activate / deactivate / reload (the real runtime) -----------------------------------------


def test_activate_reload_deactivate(site):
    out, _ = _run("activate", "ops-greeter")
    assert "ops-greeter 1.2.0: activated" in out
    assert Plugin.objects.get(name="ops-greeter").status == PluginStatus.ACTIVE
    out, _ = _run("reload", "ops-greeter")
    assert "ops-greeter 1.2.0: reloaded" in out
    listed, _ = _run("list")
    assert listed.splitlines()[2].split() == ["ops-greeter", "1.2.0", "active", "yes", "1", "1"]
    out, _ = _run("deactivate", "ops-greeter")
    assert "deactivated" in out
    assert Plugin.objects.get(name="ops-greeter").status == PluginStatus.INACTIVE


def test_a_failing_plugin_is_reported_and_fails_the_command(site):
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="1 of 2 plugin"):
        call_command("plugins", "activate", "ops-greeter", "ops-broken", stdout=out, stderr=err)
    assert "ops-greeter 1.2.0: activated" in out.getvalue()
    assert "ops-broken: could not activate" in err.getvalue()
    assert "refuses to start" in err.getvalue()
    with pytest.raises(CommandError, match="1 of 1"):
        _run("activate", "no-such-plugin")


def test_new_scaffolds_for_the_projects_own_model_hooks(tmp_path, settings):
    settings.COURSE_PLUGINS = {
        **settings.COURSE_PLUGINS,
        "MODEL_HOOKS": {"school.Lesson": "lesson", "school.Unit": {"name": "unit"}},
    }
    out, _ = _run("new", "lesson-thing", "--dir", str(tmp_path))
    assert "hooks of school.Lesson (before-lesson-save, lesson.created)" in out
    folder = tmp_path / "lesson-thing"
    manifest = (folder / "plugin.yaml").read_text()
    assert "- before-lesson-save" in manifest and "- lesson.created" in manifest
    assert "course" not in manifest + (folder / "__init__.py").read_text()
    _run("new", "unit-thing", "--dir", str(tmp_path), "--model", "school.unit")
    assert "- before-unit-save" in (tmp_path / "unit-thing" / "plugin.yaml").read_text()
    with pytest.raises(CommandError, match="mapped models: school.Lesson, school.Unit"):
        _run("new", "other-thing", "--dir", str(tmp_path), "--model", "school.Nothing")
    # Its own test passes with the test kit, which defines before-lesson-save as on the site.
    from course_plugins.testing import load_plugin

    with load_plugin(folder, settings={"banned_word": "spam"}) as loaded:
        with pytest.raises(ValueError, match="title may not contain 'spam'"):
            loaded.run_hook("before-lesson-save", {"title": "Spam!"})
        assert loaded.run_hook("before-lesson-save", {"title": "Ok"}) == {"title": "Ok"}


def test_new_without_dir_uses_the_first_plugin_dir(tmp_path, settings):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [first, second]}
    _run("new", "fresh-one")
    assert (first / "fresh-one" / "plugin.yaml").is_file()
    assert not (second / "fresh-one").exists()
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": []}
    with pytest.raises(CommandError, match="No PLUGIN_DIRS configured: pass --dir"):
        _run("new", "fresh-two")
