"""notification-enhancer: routes enrolment, grading and publishing notices by user preference."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from course_plugins.api.platform_api import Services
from course_plugins.middleware import acting_as
from course_plugins.models import Notification
from course_plugins.testing import load_plugin
from example_project.courses.models import Course

PLUGIN = Path(__file__).resolve().parent.parent

# The handlers reach the database from the event loop's worker threads, which use their own
# connections: the data they read must be committed, hence transactional tests.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # Password hashing is deliberately slow; these tests are not about it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def ada():
    return get_user_model().objects.create_user("ada", "ada@example.com", "pw-123456")


@pytest.fixture
def course():
    return Course.objects.create(name="python", title="Python basics", description="Learn it.")


def notes(user) -> list[tuple[str, str]]:
    return list(Notification.objects.filter(user=user).values_list("title", "plugin"))


def load(settings=None, storage=None):
    return load_plugin(PLUGIN, settings=settings, storage=storage, services=Services.django())


@pytest.mark.parametrize(
    ("preference", "default", "quiet", "expected"),
    [
        ({}, "site", False, ("site",)),
        ({}, "both", False, ("site", "email")),
        ({"channel": "email"}, "site", False, ("email",)),
        ({"channel": "both"}, "site", False, ("site", "email")),
        ({"channel": "both", "quiet": True}, "site", False, ("site",)),
        ({"channel": "email"}, "site", True, ("site",)),
        ({"channel": "pigeon"}, "email", False, ("email",)),
    ],
)
def test_routing(preference, default, quiet, expected):
    with load_plugin(PLUGIN, activate=False) as loaded:
        assert loaded.module.route(preference, default, quiet) == expected


def test_enrolment_is_announced_in_the_site_by_default(ada, course):
    with load() as loaded:
        loaded.publish("user.enrolled", {"user_id": ada.pk, "course_id": course.pk})
        assert loaded.api.storage.get_sync("stats") == {"site": 1}
    assert notes(ada) == [("Welcome to Python basics", "notification-enhancer@1.0.0")]
    assert mail.outbox == []


def test_a_user_who_prefers_email_gets_an_email(ada, course):
    with load(storage={f"prefs:{ada.pk}": {"channel": "email"}}) as loaded:
        loaded.publish("quiz.graded", {"user_id": ada.pk, "course_id": course.pk, "score": 75})
    assert notes(ada) == []
    [message] = mail.outbox
    assert message.to == ["ada@example.com"]
    assert message.subject == "Quiz result: 75/100 (passed)"
    assert "Python basics" in message.body


def test_both_channels_and_the_pass_mark_setting(ada, course):
    with load(settings={"default_channel": "both", "pass_mark": 80}) as loaded:
        loaded.publish("quiz.graded", {"user_id": ada.pk, "course_id": course.pk, "score": 75})
    assert notes(ada) == [("Quiz result: 75/100 (not passed yet)", "notification-enhancer@1.0.0")]
    assert [m.subject for m in mail.outbox] == ["Quiz result: 75/100 (not passed yet)"]


def test_quiet_mode_keeps_everything_in_the_site(ada, course):
    with load(settings={"default_channel": "email", "quiet_mode": True}) as loaded:
        loaded.publish("user.enrolled", {"user_id": ada.pk, "course_id": course.pk})
    assert len(notes(ada)) == 1 and mail.outbox == []


def test_users_set_their_preference_with_an_event(ada, course):
    with load() as loaded:
        loaded.publish("notifications.preferences", {"user_id": ada.pk, "channel": "both"})
        assert loaded.api.storage.get_sync(f"prefs:{ada.pk}") == {"channel": "both"}
        loaded.publish("notifications.preferences", {"user_id": ada.pk, "channel": "fax"})
        loaded.publish("notifications.preferences", {"user_id": ada.pk, "quiet": True})
        assert loaded.api.storage.get_sync(f"prefs:{ada.pk}") == {"channel": "both", "quiet": True}
        loaded.publish("user.enrolled", {"user_id": ada.pk, "course_id": course.pk})
    assert len(notes(ada)) == 1 and mail.outbox == []


def test_a_user_without_an_address_falls_back_to_the_site(course):
    bob = get_user_model().objects.create_user("bob", "", "pw-123456")
    with load(storage={f"prefs:{bob.pk}": {"channel": "email"}}) as loaded:
        loaded.publish("user.enrolled", {"user_id": bob.pk, "course_id": course.pk})
    assert notes(bob) == [("Welcome to Python basics", "notification-enhancer@1.0.0")]


def test_the_author_hears_when_a_course_goes_live(ada, course):
    with load() as loaded, acting_as(ada):
        loaded.publish("course.published", {"id": course.pk, "name": "python", "title": "Python"})
    assert notes(ada) == [("Python is live", "notification-enhancer@1.0.0")]


def test_publishing_notices_can_be_switched_off(ada, course):
    with load(settings={"notify_course_published": False}) as loaded, acting_as(ada):
        loaded.publish("course.published", {"id": course.pk, "name": "python", "title": "Python"})
    assert notes(ada) == []


def test_subscriptions_and_permissions():
    with load_plugin(PLUGIN) as loaded:
        assert set(loaded.registrations()["events"]) == {
            "user.enrolled", "quiz.graded", "course.published", "notifications.preferences",
        }
        assert loaded.api.permissions == frozenset({"notify", "users", "courses", "storage"})
