"""System checks: plugin dirs (E001), unknown keys (E002), MODEL_HOOKS (E003), Celery (W001),
mail (W007)."""

from __future__ import annotations

import os

import pytest
from celery import current_app
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from plugin_factory import write_plugin

# Every COURSE_PLUGINS below maps a model, as a real set-up does (else W004 joins in).
HOOKS = {"MODEL_HOOKS": {"courses.Course": "course"}}


def _ids(messages: list[checks.CheckMessage]) -> list[str]:
    return sorted(m.id for m in messages if m.id and m.id.startswith("course_plugins."))


def _run() -> list[checks.CheckMessage]:
    return [m for m in checks.run_checks() if (m.id or "").startswith("course_plugins.")]


def test_the_example_project_passes_every_check(tmp_path):
    with override_settings(COURSE_PLUGINS={**HOOKS, "PLUGIN_DIRS": [str(tmp_path)]}):
        assert _run() == []


def test_an_incomplete_project_setup_is_warned_about(tmp_path, settings):
    # What a new project forgets: the apps, the middleware, MODEL_HOOKS, a COURSE_MODEL.
    write_plugin(tmp_path, "course-reader", manifest="permissions: [courses]\n")
    dropped = ("drf_spectacular", "django_celery_beat")
    apps_ = [a for a in settings.INSTALLED_APPS if a not in dropped]
    middleware = [m for m in settings.MIDDLEWARE if "CurrentUser" not in m]
    with override_settings(
        INSTALLED_APPS=apps_,
        MIDDLEWARE=middleware,
        COURSE_PLUGINS={"PLUGIN_DIRS": [str(tmp_path)], "COURSE_MODEL": "school.Lesson"},
    ):
        messages = _run()
    ids = _ids(messages)
    warned = ["W002", "W002", "W003", "W004", "W005"]
    assert ids == [f"course_plugins.{w}" for w in warned]
    text = " ".join(m.msg for m in messages)
    assert "'drf_spectacular' is not in INSTALLED_APPS" in text
    assert "'django_celery_beat' is not in INSTALLED_APPS" in text
    assert "CurrentUserMiddleware is not in MIDDLEWARE" in text
    assert "Plugin 'course-reader' asks for the 'courses' permission" in text


def test_an_organization_field_the_course_model_lacks_is_w006(tmp_path):
    write_plugin(tmp_path, "course-reader", manifest="permissions: [courses]\n")
    base = {**HOOKS, "PLUGIN_DIRS": [str(tmp_path)], "ORGANIZATION_MODEL": "courses.Organization"}
    with override_settings(COURSE_PLUGINS={**base, "COURSE_ORGANIZATION_FIELD": "school"}):
        messages = _run()
    assert _ids(messages) == ["course_plugins.W006"]
    assert "'school' is not a field of courses.Course" in messages[0].msg
    assert "course-reader" in messages[0].msg
    for field in ("organization", "organization_id"):
        with override_settings(COURSE_PLUGINS={**base, "COURSE_ORGANIZATION_FIELD": field}):
            assert _run() == []


def test_missing_plugin_dir_is_e001_naming_the_folder(tmp_path):
    missing = tmp_path / "nope"
    with override_settings(COURSE_PLUGINS={**HOOKS, "PLUGIN_DIRS": [str(tmp_path), str(missing)]}):
        messages = _run()
    assert _ids(messages) == ["course_plugins.E001"]
    assert str(missing) in messages[0].msg and "does not exist" in messages[0].msg


def test_a_file_instead_of_a_dir_is_e001(tmp_path):
    a_file = tmp_path / "plugins.txt"
    a_file.write_text("")
    with override_settings(COURSE_PLUGINS={**HOOKS, "PLUGIN_DIRS": [str(a_file)]}):
        messages = _run()
    assert _ids(messages) == ["course_plugins.E001"]
    assert "is not a directory" in messages[0].msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any folder")
def test_unreadable_plugin_dir_is_e001(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    try:
        with override_settings(COURSE_PLUGINS={**HOOKS, "PLUGIN_DIRS": [str(locked)]}):
            assert _ids(_run()) == ["course_plugins.E001"]
    finally:
        locked.chmod(0o755)


def test_unknown_setting_key_is_e002_and_lists_known_keys(tmp_path):
    typo = {**HOOKS, "PLUGIN_DIRS": [str(tmp_path)], "PLUGINS_DIR": "x"}
    with override_settings(COURSE_PLUGINS=typo):
        messages = _run()
    assert _ids(messages) == ["course_plugins.E002"]
    assert "'PLUGINS_DIR'" in messages[0].msg
    assert "PLUGIN_DIRS" in messages[0].hint


@pytest.mark.parametrize(
    ("model_hooks", "expected"),
    [
        ({"courses.Course": "course"}, []),
        ({"courses.Nope": "course"}, ["course_plugins.E003"]),
        ({"Course": "course"}, ["course_plugins.E003"]),
        ({"courses.Course": "Course Save"}, ["course_plugins.E003"]),
        ({"courses.Course": ""}, ["course_plugins.E003"]),
        ({"nope.Thing": 3}, ["course_plugins.E003", "course_plugins.E003"]),
    ],
)
def test_model_hooks_entries_are_checked(tmp_path, model_hooks, expected):
    with override_settings(
        COURSE_PLUGINS={"PLUGIN_DIRS": [str(tmp_path)], "MODEL_HOOKS": model_hooks}
    ):
        assert _ids(_run()) == expected


def test_schedule_permission_without_a_celery_broker_is_w001(tmp_path):
    write_plugin(tmp_path, "ticker", manifest="permissions: [schedule, storage]\n")
    write_plugin(tmp_path, "quiet", manifest="permissions: [storage]\n")
    conf = current_app.conf
    saved = (conf.broker_url, conf.task_always_eager)
    conf.broker_url, conf.task_always_eager = None, False
    try:
        with override_settings(COURSE_PLUGINS={**HOOKS, "PLUGIN_DIRS": [str(tmp_path)]}):
            messages = _run()
            assert _ids(messages) == ["course_plugins.W001"]
            assert "'ticker'" in messages[0].msg
            conf.broker_url = "memory://"
            assert _run() == []
    finally:
        conf.broker_url, conf.task_always_eager = saved


def test_notify_permission_without_mail_settings_is_w007(tmp_path):
    write_plugin(tmp_path, "mailer", manifest="permissions: [notify]\n")
    write_plugin(tmp_path, "quiet", manifest="permissions: [storage]\n")
    django_defaults = {  # a new project's mail: SMTP to localhost:25
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "localhost",
        "EMAIL_PORT": 25,
        "EMAIL_HOST_USER": "",
    }
    with override_settings(
        COURSE_PLUGINS={**HOOKS, "PLUGIN_DIRS": [str(tmp_path)]}, **django_defaults
    ):
        messages = _run()
        assert _ids(messages) == ["course_plugins.W007"]
        assert "Plugin 'mailer' asks for the 'notify' permission" in messages[0].msg
        assert "EMAIL_HOST" in messages[0].hint and "EMAIL_BACKEND" in messages[0].hint
        with override_settings(EMAIL_HOST="smtp.example.com"):
            assert _run() == []
        with override_settings(EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend"):
            assert _run() == []


def test_manage_py_check_fails_on_an_error(tmp_path):
    with (
        override_settings(COURSE_PLUGINS={**HOOKS, "PLUGIN_DIRS": [str(tmp_path / "gone")]}),
        pytest.raises(SystemCheckError, match="course_plugins.E001"),
    ):
        call_command("check")


def _deploy_run() -> list[checks.CheckMessage]:
    return [
        m for m in checks.run_checks(include_deployment_checks=True)
        if (m.id or "").startswith("course_plugins.")
    ]


def test_sandbox_layers_are_a_deployment_check_w013(tmp_path, monkeypatch):
    # This machine's real layers: W013 names each missing kernel layer, only under --deploy.
    from course_plugins.site import sandbox_layers

    with override_settings(COURSE_PLUGINS={**HOOKS, "PLUGIN_DIRS": [str(tmp_path)]}):
        assert _run() == []  # migrate, runserver, shell... never start the sandbox to ask
        real = sandbox_layers.weakened(sandbox_layers.current())
        assert len(_deploy_run()) == len(real)
        # A machine without pyseccomp, in a container refusing a network namespace.
        found = {**sandbox_layers.current(), "seccomp": False, "netns": False,
                 "seccomp_reason": "pyseccomp is not installed", "netns_reason": "EPERM"}
        monkeypatch.setattr(sandbox_layers, "current", lambda: found)
        messages = _deploy_run()
        assert _ids(messages) == ["course_plugins.W013"] * 2
        assert "no seccomp layer on this machine: pyseccomp is not installed" in messages[0].msg
        assert "course-plugins[sandbox]" in messages[0].hint
        assert "no netns layer on this machine: EPERM" in messages[1].msg
    with override_settings(
        COURSE_PLUGINS={**HOOKS, "PLUGIN_DIRS": [str(tmp_path)], "TRUSTED_PLUGINS": True}
    ):
        assert _deploy_run() == []  # no plugin runs isolated
