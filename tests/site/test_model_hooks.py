"""The signal bridge: model saves/deletes and auth signals -> hooks and events."""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.test import override_settings

from course_plugins.core.options import options
from course_plugins.model_hooks import PluginHookModelForm, PluginVeto, run_before_save
from course_plugins.testing import captured_events, temporary_hook
from example_project.courses.models import Course, Organization, Quiz

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # Password hashing is deliberately slow; these tests are not about it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def events():
    with captured_events() as captured:
        yield captured


def names(events: list[Any]) -> list[str]:
    return [e.name for e in events]


def refuse(message: str = "Refused by the test plugin"):
    def hook(course: dict[str, Any]) -> None:
        raise ValueError(message)

    return hook


def test_before_save_gets_the_field_values_and_its_changes_are_saved():
    org = Organization.objects.create(name="Org", slug="org")
    seen: list[dict[str, Any]] = []

    def shout(course: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(course))
        course["title"] = course["title"].upper()
        course["description"] = "added by a plugin"
        return course

    with temporary_hook("before-course-save", shout):
        course = Course.objects.create(name="intro", title="Intro", organization=org)

    assert seen[0]["title"] == "Intro"
    assert seen[0]["organization_id"] == org.pk
    assert seen[0]["id"] is None
    stored = Course.objects.get(pk=course.pk)
    assert (stored.title, stored.description) == ("INTRO", "added by a plugin")


def test_a_hook_returning_none_keeps_the_values():
    with temporary_hook("before-course-save", lambda course: None):
        course = Course.objects.create(name="intro", title="Intro")
    assert Course.objects.get(pk=course.pk).title == "Intro"


def test_changes_by_field_name_and_unknown_keys():
    org = Organization.objects.create(name="Org", slug="org")

    def assign(course: dict[str, Any]) -> dict[str, Any]:
        return {**course, "organization": org.pk, "not_a_field": 1, "id": 999}

    with temporary_hook("before-course-save", assign):
        course = Course.objects.create(name="intro", title="Intro")
    stored = Course.objects.get(pk=course.pk)
    assert stored.organization_id == org.pk
    assert stored.pk != 999


@pytest.mark.parametrize(
    "error",
    [ValueError("Too short"), ValidationError("Too short"), PermissionDenied("Too short")],
    ids=["ValueError", "ValidationError", "PermissionDenied"],
)
def test_a_veto_becomes_a_validation_error_and_nothing_is_written(error, events):
    def veto(course: dict[str, Any]) -> None:
        raise error

    with temporary_hook("before-course-save", veto), pytest.raises(ValidationError) as info:
        Course.objects.create(name="intro", title="Intro")
    assert isinstance(info.value, PluginVeto)
    assert info.value.messages == ["Too short"]
    assert (info.value.hook, info.value.model) == ("before-course-save", "courses.Course")
    assert not Course.objects.exists()
    assert "course.created" not in names(events)


def test_field_errors_of_a_veto_are_kept():
    def veto(course: dict[str, Any]) -> None:
        raise ValidationError({"title": "Pick a better title"})

    with temporary_hook("before-course-save", veto), pytest.raises(PluginVeto) as info:
        Course.objects.create(name="intro", title="Intro")
    assert info.value.message_dict == {"title": ["Pick a better title"]}


def test_other_plugin_errors_are_isolated_and_the_save_goes_on(monkeypatch):
    monkeypatch.setattr(options, "strict", False)

    def broken(course: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("bug")

    with temporary_hook("before-course-save", broken):
        Course.objects.create(name="intro", title="Intro")
    assert Course.objects.filter(name="intro").exists()


def test_after_save_gets_the_saved_row_and_created(events, django_capture_on_commit_callbacks):
    calls: list[tuple[dict[str, Any], bool]] = []
    with temporary_hook("after-course-save", lambda data, created: calls.append((data, created))):
        with django_capture_on_commit_callbacks(execute=True):
            course = Course.objects.create(name="intro", title="Intro")
        with django_capture_on_commit_callbacks(execute=True):
            course.title = "Introduction"
            course.save()
    assert [(c[0]["id"], c[0]["title"], c[1]) for c in calls] == [
        (course.pk, "Intro", True),
        (course.pk, "Introduction", False),
    ]
    assert names(events) == ["course.created", "course.updated"]
    created = events[0]
    assert created.data["id"] == course.pk and created.data["name"] == "intro"
    assert isinstance(created.data["created_at"], str)  # JSON-safe payload
    assert created.source == "courses.Course"


def test_events_wait_for_the_commit(events, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        Course.objects.create(name="intro", title="Intro")
    assert events == []  # not yet: the transaction has not committed
    for callback in callbacks:
        callback()
    assert names(events) == ["course.created"]


def test_delete_runs_before_delete_and_publishes_deleted(
    events, django_capture_on_commit_callbacks
):
    course = Course.objects.create(name="intro", title="Intro")
    Quiz.objects.create(course=course, title="Check", questions=[])
    seen: list[dict[str, Any]] = []
    with (
        temporary_hook("before-course-delete", seen.append),
        django_capture_on_commit_callbacks(execute=True),
    ):
        course.delete()
    assert [d["name"] for d in seen] == ["intro"]
    # The cascade deletes the quiz too; both are bridged.
    assert sorted(names(events)) == ["course.deleted", "quiz.deleted"]
    deleted = next(e for e in events if e.name == "course.deleted")
    assert deleted.data["title"] == "Intro"


def test_a_veto_on_delete_keeps_the_row(events):
    course = Course.objects.create(name="intro", title="Intro")
    # Django deletes inside atomic(savepoint=False): a refused delete spoils the enclosing
    # transaction, as any database error would, so callers that go on use a savepoint.
    with (
        temporary_hook("before-course-delete", refuse("Courses with learners stay")),
        pytest.raises(PluginVeto, match="Courses with learners stay"),
        transaction.atomic(),
    ):
        course.delete()
    assert Course.objects.filter(pk=course.pk).exists()
    assert "course.deleted" not in names(events)


def test_quiz_and_content_are_bridged_too():
    course = Course.objects.create(name="intro", title="Intro")
    with (
        temporary_hook("before-quiz-save", refuse("Quizzes need questions")),
        pytest.raises(PluginVeto, match="Quizzes need questions"),
    ):
        Quiz.objects.create(course=course, title="Empty", questions=[])
    with temporary_hook("before-content-save", refuse("No content")), pytest.raises(PluginVeto):
        course.contents.create(title="Lesson")


def test_models_not_in_model_hooks_are_left_alone(events, django_capture_on_commit_callbacks):
    with (
        temporary_hook("before-organization-save", refuse()),
        django_capture_on_commit_callbacks(execute=True),
    ):
        Organization.objects.create(name="Org", slug="org")
    assert events == []


def test_model_hooks_follow_the_setting(events, django_capture_on_commit_callbacks, settings):
    settings.COURSE_PLUGINS = {
        **settings.COURSE_PLUGINS,
        "MODEL_HOOKS": {"courses.Organization": "org"},
    }
    seen: list[dict[str, Any]] = []
    with (
        temporary_hook("before-org-save", seen.append),
        django_capture_on_commit_callbacks(execute=True),
    ):
        Organization.objects.create(name="Org", slug="org")
        Course.objects.create(name="intro", title="Intro")  # no longer bridged
    assert [d["slug"] for d in seen] == ["org"]
    assert names(events) == ["org.created"]
    from course_plugins.core.hook_manager import HookManager, HookType

    assert HookManager.get_instance()["before-org-save"].type == HookType.FILTER


def test_raw_saves_from_fixtures_run_no_hooks(tmp_path, events):
    fixture = tmp_path / "courses.json"
    fixture.write_text(
        '[{"model": "courses.course", "pk": 7, "fields": {"name": "fx", "title": "Fixture",'
        ' "description": "", "published": false, "created_by": "",'
        ' "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}}]'
    )
    with temporary_hook("before-course-save", refuse()):
        call_command("loaddata", str(fixture), verbosity=0)
    assert Course.objects.filter(pk=7).exists()


# --- auth events ------------------------------------------------------------------------------


def test_user_created_login_and_logout(client, events, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        user = get_user_model().objects.create_user("ada", "ada@example.com", "pw-123456")
        user.first_name = "Ada"
        user.save()  # an update is not a new user
    assert names(events) == ["user.created"]
    assert events[0].data == {"user_id": user.pk, "username": "ada", "email": "ada@example.com"}

    with django_capture_on_commit_callbacks(execute=True):
        assert client.login(username="ada", password="pw-123456")
    with django_capture_on_commit_callbacks(execute=True):
        client.logout()
    assert names(events) == ["user.created", "user.login", "user.logout"]
    assert events[1].data["username"] == events[2].data["username"] == "ada"


# --- forms and the admin ----------------------------------------------------------------------


class CourseForm(PluginHookModelForm):
    class Meta:
        model = Course
        fields = ["name", "title", "description"]


def test_a_form_shows_the_veto_as_a_form_error():
    with temporary_hook("before-course-save", refuse("Titles must mention Python")):
        form = CourseForm(data={"name": "intro", "title": "Intro", "description": ""})
        assert not form.is_valid()
    assert form.non_field_errors() == ["Titles must mention Python"]


def test_field_vetoes_attach_to_the_form_field():
    def veto(course: dict[str, Any]) -> None:
        raise ValidationError({"title": "Pick a better title"})

    with temporary_hook("before-course-save", veto):
        form = CourseForm(data={"name": "intro", "title": "Intro", "description": ""})
        assert not form.is_valid()
    assert form.errors["title"] == ["Pick a better title"]


def test_a_valid_form_runs_the_hook_once_and_saves_its_changes():
    calls: list[str] = []

    def stamp(course: dict[str, Any]) -> dict[str, Any]:
        calls.append(course["title"])
        return {**course, "description": "checked"}

    with temporary_hook("before-course-save", stamp):
        form = CourseForm(data={"name": "intro", "title": "Intro", "description": ""})
        assert form.is_valid(), form.errors
        course = form.save()
        assert calls == ["Intro"]
        # Changed after validation: the save runs the hook for the new values.
        course.title = "Intro 2"
        course.save()
    assert calls == ["Intro", "Intro 2"]
    assert Course.objects.get(pk=course.pk).description == "checked"


def test_run_before_save_outside_the_bridge_is_a_no_op():
    org = Organization(name="Org", slug="org")
    assert run_before_save(org) == []


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client.force_login(user)
    return client


def test_admin_shows_the_plugin_message_on_the_course_form(staff_client):
    with temporary_hook("before-course-save", refuse("A plugin says: add a syllabus first")):
        response = staff_client.post(
            "/admin/courses/course/add/",
            {"name": "intro", "title": "Intro", "description": "", "published": ""},
        )
    assert response.status_code == 200
    assert "A plugin says: add a syllabus first" in response.content.decode()
    assert not Course.objects.exists()


def test_admin_saves_what_the_plugin_allows_and_records_the_creator(staff_client):
    response = staff_client.post(
        "/admin/courses/course/add/",
        {"name": "intro", "title": "Intro", "description": "", "published": ""},
    )
    assert response.status_code == 302
    assert Course.objects.get(name="intro").created_by == "root"


def test_admin_delete_refused_by_a_plugin_is_a_message_not_a_500(staff_client):
    course = Course.objects.create(name="intro", title="Intro")
    with temporary_hook("before-course-delete", refuse("Courses with learners stay")):
        response = staff_client.post(
            f"/admin/courses/course/{course.pk}/delete/", {"post": "yes"}, follow=True
        )
        assert response.status_code == 200
        assert "Courses with learners stay" in response.content.decode()
        response = staff_client.post(
            "/admin/courses/course/",
            {"action": "delete_selected", "_selected_action": [course.pk], "post": "yes"},
            follow=True,
        )
    assert "Courses with learners stay" in response.content.decode()
    assert Course.objects.filter(pk=course.pk).exists()


# --- real transactions ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_publishes_nothing(events):
    with pytest.raises(RuntimeError), transaction.atomic():
        Course.objects.create(name="intro", title="Intro")
        raise RuntimeError("the request failed after the save")
    assert events == []
    Course.objects.create(name="kept", title="Kept")  # autocommit: published at once
    assert names(events) == ["course.created"]
    with transaction.atomic():
        Course.objects.filter(name="kept").get().delete()
        assert names(events) == ["course.created"]
    assert names(events) == ["course.created", "course.deleted"]


@pytest.mark.django_db(transaction=True)
def test_override_of_model_hooks_in_a_transaction_test():
    with (
        override_settings(COURSE_PLUGINS={"MODEL_HOOKS": {}}),
        temporary_hook("before-course-save", refuse()),
    ):
        Course.objects.create(name="free", title="Free")
    assert Course.objects.filter(name="free").exists()


def test_a_veto_is_a_400_in_the_rest_api(client, django_user_model):
    user = django_user_model.objects.create_user("author", password="pw")
    client.force_login(user)
    payload = {"name": "intro", "title": "Intro", "description": ""}
    with temporary_hook("before-course-save", refuse("Titles must mention Python")):
        response = client.post("/api/courses/", payload, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {
        "detail": ["Titles must mention Python"],
        "hook": "before-course-save",
    }
    assert not Course.objects.filter(name="intro").exists()

    def field_veto(course: dict[str, Any]) -> None:
        raise ValidationError({"title": "Pick a better title"})

    with temporary_hook("before-course-save", field_veto):
        response = client.post("/api/courses/", payload, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["title"] == ["Pick a better title"]

    response = client.post("/api/courses/", payload, content_type="application/json")
    assert response.status_code == 201
    assert Course.objects.get(name="intro").title == "Intro"


@pytest.mark.parametrize(
    "data",
    [
        {"id": 1, "title": "Intro", "published": True, "score": 1.5, "none": None},
        {"at": datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC),
         "naive": datetime.datetime(2026, 1, 2, 3, 4, 5), "day": datetime.date(2026, 1, 2),
         "time": datetime.time(1, 2, 3, 456789), "took": datetime.timedelta(days=1, seconds=3),
         "price": decimal.Decimal("1.10"), "uid": uuid.UUID(int=7)},
        {"extra": {"tags": ["a", "b"]}, "n": 1},
        {"nan": float("nan"), "inf": float("inf")},
        {1: "an int key", "kind": Course.__name__},
    ],
    ids=["plain", "dates-decimals-uuids", "json-field", "non-finite", "int-key"],
)
def test_event_payloads_are_what_a_json_round_trip_gives(data):
    from course_plugins.model_hooks import json_safe

    expected = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    assert repr(json_safe(data)) == repr(expected)


def test_a_hook_changing_a_nested_value_in_place_changes_only_its_copy():
    from course_plugins.model_hooks import _copy_data

    data = {"title": "Intro", "extra": {"tags": ["a"]}}
    copied = _copy_data(data)
    copied["extra"]["tags"].append("b")
    copied["title"] = "Other"
    assert data == {"title": "Intro", "extra": {"tags": ["a"]}}
    plain = {"title": "Intro", "at": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)}
    assert _copy_data(plain) == plain and _copy_data(plain) is not plain
