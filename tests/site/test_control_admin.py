"""The control room in the admin: the inspector's switches (confirmed, logged), runs, shadow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from control_site import ctl_site
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.test import Client

from course_plugins.models import FunctionOverride, Plugin, PluginMode, PluginStorage
from example_project.courses.models import Course

pytestmark = pytest.mark.django_db(transaction=True)

INSPECTOR = "/admin/course_plugins/plugin/inspector/"
SWITCH = "/admin/course_plugins/plugin/inspector/function/"
CHANGELIST = "/admin/course_plugins/plugin/"
HOOK = "before-course-save"
SHOUT = "ctl-shout:shout"


@pytest.fixture
def site(tmp_path: Path, settings: Any) -> Iterator[Path]:
    """The ctl-* fixture plugins discovered and activated; runs and overrides forgotten."""
    with ctl_site(tmp_path, settings, activate=True) as folder:
        yield folder


@pytest.fixture
def admin_client(site: Path) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", None))
    return client


def _staff(*codenames: str) -> Client:
    user = User.objects.create_user(f"viewer-{User.objects.count()}", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="course_plugins", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def test_the_inspector_shows_keys_and_offers_switches_to_those_allowed(admin_client):
    page = admin_client.get(INSPECTOR).content.decode()
    assert SHOUT in page and "Switch off" in page
    viewer = _staff("view_plugin").get(INSPECTOR).content.decode()
    assert SHOUT in viewer and "Switch off" not in viewer
    assert _staff("view_plugin").post(SWITCH, {"hook": HOOK, "key": SHOUT, "do": "off"}
                                      ).status_code == 403


def test_switching_off_asks_first_then_applies_and_is_logged(admin_client):
    asked = admin_client.post(SWITCH, {"hook": HOOK, "key": SHOUT, "do": "off"})
    assert asked.status_code == 200
    assert "Yes, switch it off" in asked.content.decode()
    assert not FunctionOverride.objects.exists()  # nothing happens before the confirmation

    done = admin_client.post(SWITCH, {"hook": HOOK, "key": SHOUT, "do": "off", "post": "yes"})
    assert done.status_code == 302 and done["Location"].startswith(INSPECTOR)
    override = FunctionOverride.objects.get(key=SHOUT)
    assert override.enabled is False and override.updated_by == "admin"
    assert Course.objects.create(name="q", title="quiet").title == "quiet"

    page = admin_client.get(INSPECTOR).content.decode()
    assert "cp-badge--off" in page and "Switch on" in page and "Restore" in page
    entry = LogEntry.objects.get(object_id=str(override.pk))
    assert "switched off" in entry.get_change_message()
    history = admin_client.get(f"/admin/course_plugins/functionoverride/{override.pk}/history/")
    assert "switched off" in history.content.decode()


def test_moving_shows_the_plugins_own_priority_and_restore_brings_it_back(admin_client):
    admin_client.post(SWITCH, {"hook": HOOK, "key": SHOUT, "do": "move", "priority": "1",
                               "post": "yes"})
    page = admin_client.get(INSPECTOR).content.decode()
    assert "plugin: 20" in page and "cp-badge--override" in page
    admin_client.post(SWITCH, {"hook": HOOK, "key": SHOUT, "do": "restore", "post": "yes"})
    override = FunctionOverride.objects.get(key=SHOUT)
    assert (override.enabled, override.priority, override.overrides) == (True, None, False)
    assert "cp-badge--override" not in admin_client.get(INSPECTOR).content.decode()


def test_a_bad_priority_or_unknown_key_changes_nothing(admin_client):
    response = admin_client.post(SWITCH, {"hook": HOOK, "key": SHOUT, "do": "move",
                                          "priority": "soon", "post": "yes"}, follow=True)
    assert "whole number" in response.content.decode()
    response = admin_client.post(SWITCH, {"hook": HOOK, "key": "x:y", "do": "off", "post": "yes"},
                                 follow=True)
    assert "has no function" in response.content.decode()
    assert not FunctionOverride.objects.exists()


def test_an_override_saved_in_its_own_admin_applies(admin_client):
    response = admin_client.post(
        "/admin/course_plugins/functionoverride/add/",
        {"key": SHOUT, "enabled": "", "priority": ""},
    )
    assert response.status_code == 302
    assert Course.objects.create(name="q", title="quiet").title == "quiet"


def test_the_inspector_shows_recent_runs(admin_client):
    Course.objects.create(name="a", title="first")
    with pytest.raises(ValidationError):
        Course.objects.create(name="b", title="spam")
    page = admin_client.get(INSPECTOR).content.decode()
    assert "ctl-guard: no spam in course titles" in page
    assert "FIRST" in page and "cp-run--veto" in page


def test_shadow_mode_from_the_admin_action_and_back_to_live(admin_client):
    guard = Plugin.objects.get(name="ctl-guard")
    data = {"action": "activate_shadow", "_selected_action": [guard.pk]}
    asked = admin_client.post(CHANGELIST, data)
    assert asked.status_code == 200 and "Yes, activate in shadow mode" in asked.content.decode()
    admin_client.post(CHANGELIST, {**data, "post": "yes", "mode": "shadow"})
    guard.refresh_from_db()
    assert guard.mode == PluginMode.SHADOW and guard.shadow_since is not None

    Course.objects.create(name="s", title="spam spam")  # would have been refused
    Course.objects.create(name="f", title="fine")  # would have been changed (tagged)
    page = admin_client.get(f"{CHANGELIST}{guard.pk}/change/").content.decode()
    assert "would have refused 1 and changed 1 saves" in page
    assert "ctl-guard: no spam in course titles" in page and "Switch to live" in page

    response = admin_client.post(f"{CHANGELIST}{guard.pk}/go-live/")
    assert response.status_code == 302
    guard.refresh_from_db()
    assert guard.mode == PluginMode.LIVE
    with pytest.raises(ValidationError):
        Course.objects.create(name="t", title="spam again")


def test_an_event_handler_is_switched_off_from_the_inspector_too(admin_client):
    Course.objects.create(name="d", title="counted")  # course.created: the handler counts it
    counted = PluginStorage.objects.get(plugin="ctl-guard", key="events")
    assert counted.value == 1
    page = admin_client.get(INSPECTOR).content.decode()
    assert 'name="kind" value="event"' in page
    data = {"hook": "course.*", "kind": "event", "key": "ctl-guard:count", "do": "off"}
    asked = admin_client.post(SWITCH, data)
    assert "Yes, switch it off" in asked.content.decode()
    moved = admin_client.post(SWITCH, {**data, "do": "move", "priority": "1", "post": "yes"},
                              follow=True)
    assert "no priority" in moved.content.decode()
    admin_client.post(SWITCH, {**data, "post": "yes"})
    assert FunctionOverride.objects.get(key="ctl-guard:count").enabled is False
    Course.objects.create(name="e", title="event")  # course.created: the handler does not run
    counted.refresh_from_db()
    assert counted.value == 1
    assert "cp-badge--off" in admin_client.get(INSPECTOR).content.decode()
