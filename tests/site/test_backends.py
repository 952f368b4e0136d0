"""The Django side of the Platform API: backends, database stores, the current-user middleware,
and the seed's Platform API example against a real database."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from pathlib import Path

import pytest
from django.contrib.auth.models import AnonymousUser, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core import mail
from django.test import RequestFactory, override_settings
from plugin_factory import active_on_site

from course_plugins.api.backends import notify as notify_backend
from course_plugins.api.backends.analytics import ModelAnalyticsBackend
from course_plugins.api.backends.courses import ModelCoursesBackend
from course_plugins.api.backends.notify import DjangoNotifyBackend
from course_plugins.api.backends.users import DjangoUsersBackend
from course_plugins.api.platform_api import Services
from course_plugins.api.stores import DjangoConfigStore, DjangoStorageStore
from course_plugins.exceptions import PlatformAPIError
from course_plugins.middleware import CurrentUserMiddleware, acting_as, get_current_user
from course_plugins.models import AnalyticsEvent, Notification, Plugin, PluginStorage
from course_plugins.testing import captured_events, load_plugin
from example_project.courses.models import Course, Organization

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", "alice@example.com", "pw", first_name="Alice")


def grant(user, codename: str) -> None:
    user.user_permissions.add(Permission.objects.get(codename=codename))


# -- users ----------------------------------------------------------------------------------------


def test_current_user_comes_from_the_context(alice):
    backend = DjangoUsersBackend()
    assert backend.get_current() is None
    with acting_as(AnonymousUser()):
        assert backend.get_current() is None
    with acting_as(alice):
        assert backend.get_current() == {
            "id": alice.pk,
            "username": "alice",
            "email": "alice@example.com",
            "first_name": "Alice",
            "last_name": "",
            "is_active": True,
            "is_staff": False,
            "is_superuser": False,
        }
    assert get_current_user() is None


def test_has_permission_exact_bare_superuser_inactive_and_unknown(alice):
    backend = DjangoUsersBackend()
    grant(alice, "add_course")
    assert backend.has_permission(alice.pk, "courses.add_course") is True
    assert backend.has_permission(alice.pk, "add_course") is True
    assert backend.has_permission({"id": alice.pk}, "add_course") is True
    assert backend.has_permission(alice.pk, "delete_course") is False
    assert backend.has_permission(alice.pk, "auth.add_course") is False
    boss = User.objects.create_superuser("boss", "b@example.com", "pw")
    assert backend.has_permission(boss.pk, "anything_at_all") is True
    alice.is_active = False
    alice.save()
    assert backend.has_permission(alice.pk, "add_course") is False
    assert backend.has_permission(987654, "add_course") is False
    with pytest.raises(PlatformAPIError, match="not a valid user id"):
        backend.has_permission("abc", "add_course")
    assert backend.get(boss.pk)["is_superuser"] is True
    assert backend.get(987654) is None


# -- courses --------------------------------------------------------------------------------------


def test_courses_are_plain_json_dicts(db):
    org = Organization.objects.create(name="Acme", slug="acme")
    other = Organization.objects.create(name="Other", slug="other")
    intro = Course.objects.create(name="intro", title="Intro", organization=org)
    Course.objects.create(name="advanced", title="Advanced", organization=org)
    Course.objects.create(name="elsewhere", title="Elsewhere", organization=other)
    backend = ModelCoursesBackend()
    course = backend.get(intro.pk)
    assert course["id"] == intro.pk and course["title"] == "Intro"
    assert course["organization_id"] == org.pk
    assert isinstance(course["created_at"], str) and course["created_at"].startswith("20")
    assert [c["name"] for c in backend.list_by_organization(org.pk)] == ["advanced", "intro"]
    assert backend.list_by_organization(999) == []
    assert backend.get(999) is None
    with pytest.raises(PlatformAPIError, match="not a valid course id"):
        backend.get("abc")


@override_settings(COURSE_PLUGINS={"COURSE_MODEL": "courses.Nope"})
def test_a_wrong_course_model_is_reported(db):
    with pytest.raises(PlatformAPIError, match="is not an installed model"):
        ModelCoursesBackend().get(1)


@override_settings(COURSE_PLUGINS={"COURSE_MODEL": "courses.Organization"})
def test_a_course_model_without_the_organization_field_is_reported(db):
    # An organization-free model (a new project's school.Lesson): a clear Platform API error,
    # not Django's FieldError.
    with pytest.raises(PlatformAPIError, match="COURSE_ORGANIZATION_FIELD.*not a field of"):
        ModelCoursesBackend().list_by_organization(1, plugin="p@1.0.0")


# -- notify and analytics ----------------------------------------------------------------------


def test_notifications_and_mail(alice):
    backend = DjangoNotifyBackend()
    note_id = backend.send_to_user(alice.pk, "Welcome", "Hello Alice", plugin="p@1.0.0")
    note = Notification.objects.get(pk=note_id)
    assert (note.user, note.title, note.message, note.plugin) == (
        alice,
        "Welcome",
        "Hello Alice",
        "p@1.0.0",
    )
    assert backend.send_email("bob@example.com", "Subject", "Body", plugin="p@1.0.0") == 1
    (message,) = mail.outbox
    assert (message.to, message.subject, message.body) == (["bob@example.com"], "Subject", "Body")
    with pytest.raises(PlatformAPIError, match="no user with id 424242"):
        backend.send_to_user(424242, "Hi")
    with pytest.raises(PlatformAPIError, match="not a valid e-mail address"):
        backend.send_email("not-an-address", "S", "B")
    with pytest.raises(PlatformAPIError, match="single line"):
        backend.send_email("bob@example.com", "S\nBcc: x@example.com", "B")
    with pytest.raises(PlatformAPIError, match="title must not be empty"):
        backend.send_to_user(alice.pk, "")


SMTP_DEFAULTS = {
    "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
    "EMAIL_HOST": "localhost",
    "EMAIL_PORT": 25,
    "EMAIL_HOST_USER": "",
}

SEED_MAILER = """
def activate(api):
    # The seed's Platform API example, in a handler.
    @api.events.subscribe("course.created")
    async def tell_the_owner(event):
        sent = await api.notify.send_email("owner@example.com", "Subject", "Body")
        await api.storage.set("sent", sent)
"""


@pytest.fixture
def no_mail_server(settings, monkeypatch):
    """Django's mail defaults, as in a new project (SMTP to localhost:25), with nothing listening
    there; the notify backend has not warned in this process yet."""
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex(("127.0.0.1", 25)) == 0:
            pytest.skip("a mail server listens on localhost:25 here")
    for name, value in SMTP_DEFAULTS.items():
        setattr(settings, name, value)
    monkeypatch.setattr(notify_backend, "_warned", threading.Event(), raising=False)


def test_without_mail_settings_send_email_sends_nothing_and_warns_once(no_mail_server, caplog):
    backend = DjangoNotifyBackend()
    with caplog.at_level(logging.DEBUG, logger="course_plugins.notify"):
        assert backend.send_email("bob@example.com", "Subject", "Body", plugin="p@1.0.0") == 0
        assert backend.send_email("bob@example.com", "Subject", "Body", plugin="p@1.0.0") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "no mail server configured" in warnings[0]
    assert "EMAIL_HOST" in warnings[0] and "EMAIL_BACKEND" in warnings[0]


def test_a_configured_mail_server_that_fails_is_still_an_error(no_mail_server, settings):
    settings.EMAIL_PORT = 2525  # the site names a server; nothing answers there either
    with pytest.raises(OSError):
        DjangoNotifyBackend().send_email("bob@example.com", "Subject", "Body")


@pytest.mark.django_db(transaction=True)  # the async handler writes from another thread
def test_the_seeds_send_email_without_mail_settings_is_no_fault_of_the_plugin(
    no_mail_server, settings, tmp_path, caplog
):
    from course_plugins.core.event_bus import Event, EventBus
    from course_plugins.core.health import health
    from course_plugins.core.options import options

    with active_on_site(settings, tmp_path / "plugins", "mailer", SEED_MAILER,
                        "events: [course.*]\npermissions: [notify, storage]\n") as plugin:
        with caplog.at_level(logging.WARNING, logger="course_plugins"):
            for _ in range(options.max_failures + 1):
                EventBus.get_instance().publish_sync(Event("course.created", {"title": "T"}))
        assert str(plugin.state) == "active"
        assert health.failures(plugin.id) == 0
        assert plugin.api.storage.get_sync("sent") == 0
    assert Plugin.objects.get(name="mailer").status == "active"
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(shown) == 1 and "E-mail of plugin mailer@1.0.0 not sent" in shown[0], shown


def test_analytics_events_record_the_current_user(alice):
    backend = ModelAnalyticsBackend()
    with acting_as(alice):
        event_id = backend.track_event("custom_event", {"key": "value"}, plugin="p@1.0.0")
    event = AnalyticsEvent.objects.get(pk=event_id)
    assert (event.name, event.properties, event.plugin, event.user_id) == (
        "custom_event",
        {"key": "value"},
        "p@1.0.0",
        str(alice.pk),
    )
    assert AnalyticsEvent.objects.get(pk=backend.track_event("anon")).user_id == ""
    with pytest.raises(PlatformAPIError, match="must be JSON data"):
        backend.track_event("bad", {"when": object()})


# -- database stores ----------------------------------------------------------------------------


def test_config_store_merges_into_the_plugin_row(db):
    Plugin.objects.create(name="alpha", version="1.0.0", settings={"a": 1})
    store = DjangoConfigStore()
    assert store.update("alpha", {"b": 2}) == {"a": 1, "b": 2}
    assert store.update("alpha", {"a": None}) == {"b": 2}
    assert Plugin.objects.get(name="alpha").settings == {"b": 2}
    assert store.update("fresh", {"x": "y"}) == {"x": "y"}  # a row is created if missing
    assert store.load("fresh") == {"x": "y"} and store.load("nobody") == {}


def test_storage_store_rows_per_plugin_and_key(db):
    store = DjangoStorageStore()
    store.set("alpha", "k", {"n": 1})
    store.set("alpha", "k", {"n": 2})
    store.set("beta", "k", None)
    assert store.get("alpha", "k") == {"n": 2}
    assert store.get("beta", "k", default="d") is None  # a stored null is not "missing"
    assert store.get("gamma", "k", default="d") == "d"
    assert store.keys("alpha") == ["k"]
    assert store.delete("alpha", "k") is True and store.delete("alpha", "k") is False
    assert PluginStorage.objects.filter(plugin="beta").count() == 1


def _hammer(work, count: int) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(i: int) -> None:
        from django.db import connection as thread_connection

        try:
            start.wait()
            work(i)
        except BaseException as exc:  # collected and asserted by the caller
            errors.append(exc)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_settings_writers_lose_nothing():
    Plugin.objects.create(name="busy", version="1.0.0")
    store = DjangoConfigStore()
    errors = _hammer(lambda i: store.update("busy", {f"k{i}": i}), 8)
    assert errors == []
    assert Plugin.objects.get(name="busy").settings == {f"k{i}": i for i in range(8)}


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_through_separate_stores_lose_nothing():
    """Two store objects stand for two processes: only the database serialises them."""
    Plugin.objects.create(name="busy", version="1.0.0")
    errors = _hammer(lambda i: DjangoConfigStore().update("busy", {f"k{i}": i}), 8)
    assert errors == []
    assert Plugin.objects.get(name="busy").settings == {f"k{i}": i for i in range(8)}


# -- the Platform API over the database -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_seed_platform_api_example_runs_as_written():
    alice = User.objects.create_user("alice", "alice@example.com", "pw")
    course_type = ContentType.objects.get_for_model(Course)
    permission = Permission.objects.create(
        codename="create_course", name="Can create a course", content_type=course_type
    )
    alice.user_permissions.add(permission)
    org = Organization.objects.create(name="Acme", slug="acme")
    course = Course.objects.create(name="intro", title="Intro", organization=org)
    settings = {"user_id": alice.pk, "course_id": course.pk, "org_id": org.pk}
    settings["email"] = "alice@example.com"

    with (
        acting_as(alice),
        load_plugin(
            FIXTURES / "seed-platform-api",
            settings=settings,
            services=Services.django(),
            activate=False,
        ) as loaded,
        captured_events(loaded.bus, "my-plugin.*") as events,
    ):
        loaded.activate()
        loaded.flush()
        assert [(e.name, e.data, e.source) for e in events] == [
            ("my-plugin.custom-event", {"data": "value"}, "seed-platform-api@1.0.0")
        ]
        results = loaded.module.results
        assert results["value"] == "fallback"
        assert loaded.api.config.get("my_setting") == "new_value"
        assert Plugin.objects.get(name="seed-platform-api").settings["my_setting"] == "new_value"
        assert results["data"] == {"data": "value"}
        assert PluginStorage.objects.get(plugin="seed-platform-api", key="my_key").value == {
            "data": "value"
        }
        assert results["user"]["username"] == "alice"
        assert results["has_permission"] is True
        assert results["course"]["name"] == "intro"
        assert [c["name"] for c in results["courses"]] == ["intro"]
        assert Notification.objects.get(user=alice).title == "Title"
        assert mail.outbox[0].to == ["alice@example.com"]
        assert AnalyticsEvent.objects.get(name="custom_event").user_id == str(alice.pk)
        assert results["schedule_id"] == "seed-platform-api:my_function"
        assert loaded.registrations()["schedules"][0]["repeat"] is True


@pytest.mark.django_db(transaction=True)
def test_database_storage_works_from_sync_code_inside_an_event_loop(make_plugin):
    folder = make_plugin("looped", manifest="permissions: [storage]\n")
    with load_plugin(folder, services=Services.django()) as loaded:
        storage = loaded.api.storage

        async def inside():
            storage.set_sync("k", {"v": 1})  # the ORM refuses this on a loop thread, unless...
            assert await storage.get("k") == {"v": 1}
            return storage.keys_sync()

        assert asyncio.run(inside()) == ["k"]
        assert PluginStorage.objects.get(plugin="looped", key="k").value == {"v": 1}


def test_default_services_use_the_database_when_django_is_set_up():
    services = Services.default()
    assert isinstance(services.config_store, DjangoConfigStore)
    assert isinstance(services.users, DjangoUsersBackend)
    assert isinstance(services.notify, DjangoNotifyBackend)


# -- middleware -----------------------------------------------------------------------------------


def test_current_user_middleware_sync_and_async(alice):
    seen = []

    def view(request):
        seen.append(get_current_user())
        return "response"

    request = RequestFactory().get("/")
    request.user = alice
    assert CurrentUserMiddleware(view)(request) == "response"
    assert seen == [alice] and get_current_user() is None

    async def async_view(request):
        seen.append(get_current_user())
        return "async response"

    middleware = CurrentUserMiddleware(async_view)
    assert asyncio.run(middleware(request)) == "async response"
    assert seen == [alice, alice] and get_current_user() is None
