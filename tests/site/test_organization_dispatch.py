"""Organizations on one site: different plugins and settings per organization, through the real
runtime, model-signal bridge, REST API and admin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.urls import reverse
from plugin_factory import write_plugin
from rest_framework.test import APIClient

from course_plugins.core.event_bus import Event, EventBus
from course_plugins.core.scope import entered
from course_plugins.models import OrganizationPlugin, Plugin, PluginStorage
from course_plugins.site import organizations as orgs
from course_plugins.site import runtime
from example_project.courses.models import Course, Organization, Quiz

pytestmark = pytest.mark.django_db

TITLE_CHECK = """
from __future__ import annotations

judged = []


def activate(api):
    @api.hooks["before-course-save"].add
    def check_title(course):
        judged.append((course.get("organization_id"), course["title"]))
        api.storage.increment_sync("checked")
        shortest = api.config.get("min_length")
        if len(course["title"]) < shortest:
            raise ValueError(f"title shorter than {shortest}")
        return course

    @api.hooks["before-quiz-save"].add
    def check_quiz(quiz):
        if len(quiz["title"]) < api.config.get("min_length"):
            raise ValueError("quiz title too short")
        return quiz
"""

TITLE_CHECK_MANIFEST = """
hooks: [before-course-save, before-quiz-save]
permissions: [storage]
settings_schema:
  min_length: {type: integer, default: 5, min: 0, max: 100}
"""

STAMPER = """
from __future__ import annotations

seen = []


def on_created(event):
    seen.append((event.data.get("organization_id"), API[0].config.get("tag")))


API = []


def activate(api):
    API[:] = [api]

    @api.hooks["before-course-save"].add
    def stamp(course):
        course["description"] = api.config.get("tag")
        return course

    api.events.subscribe("course.created", on_created)


def note():
    noted.append(API[0].config.get("tag"))
    API[0].storage.increment_sync("notes")


noted = []
"""

STAMPER_MANIFEST = """
hooks: [before-course-save]
events: [course.created]
permissions: [schedule, storage]
settings_schema:
  tag: {type: string, default: stamped}
"""


@pytest.fixture
def site(tmp_path, settings, engine_state):
    folder = tmp_path / "plugins"
    write_plugin(folder, "title-check", TITLE_CHECK, TITLE_CHECK_MANIFEST)
    write_plugin(folder, "stamper", STAMPER, STAMPER_MANIFEST)
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(folder)]}
    runtime.reset()
    runtime.ensure_started()
    yield folder
    runtime.reset()


@pytest.fixture
def two_orgs(site):
    """School A wants titles of 20+; school B does not want the check at all but stamps its
    courses; the site checks titles (5+) and does not stamp."""
    a = Organization.objects.create(name="School A", slug="a")
    b = Organization.objects.create(name="School B", slug="b")
    runtime.activate("title-check")
    runtime.update_organization_settings(a.pk, "title-check", {"min_length": 20})
    runtime.deactivate_for(b.pk, "title-check")
    runtime.activate_for(b.pk, "stamper")
    runtime.update_organization_settings(b.pk, "stamper", {"tag": "B was here"})
    return a, b


def module(name: str) -> Any:
    return runtime.get_loader().get(name).module


def save(title: str, org: Any = None, name: str | None = None) -> Course:
    course = Course.objects.create(
        name=name or f"c{Course.objects.count()}", title=title, organization=org
    )
    return Course.objects.get(pk=course.pk)


# --- dispatch ---------------------------------------------------------------------------------


def test_two_organizations_run_different_plugins_with_different_settings(two_orgs):
    a, b = two_orgs
    with pytest.raises(ValidationError, match="shorter than 20"):
        save("Ten chars!", a)  # A's own minimum
    assert save("A title of twenty-one", a).description == ""  # A does not stamp
    short_b = save("abc", b)  # B switched the check off, and stamps with its tag
    assert short_b.description == "B was here"
    assert save("Ten chars!").description == ""  # the site: 5+, no stamper
    with pytest.raises(ValidationError, match="shorter than 5"):
        save("abc")
    # Only A's and the site's courses were judged by title-check; never B's.
    judged_orgs = {org for org, _ in module("title-check").judged}
    assert judged_orgs == {a.pk, None}


def test_events_and_config_in_an_event_follow_the_organization(
    two_orgs, django_capture_on_commit_callbacks
):
    a, b = two_orgs
    with django_capture_on_commit_callbacks(execute=True):
        save("A title of twenty-one", a)
        save("Long enough", None)
        save("x", b)
    # Read after the fact: an isolated plugin's module state is copied out of its worker.
    seen = [tuple(item) for item in module("stamper").seen]
    assert seen == [(b.pk, "B was here")]  # the stamper's handler ran for B only


def test_storage_is_per_plugin_and_organization(two_orgs):
    a, _ = two_orgs
    save("A title of twenty-one", a)
    save("A title of twenty-two", a)
    save("Site course")
    counts = dict(
        PluginStorage.objects.filter(plugin="title-check", key="checked").values_list(
            "organization", "value"
        )
    )
    assert counts == {str(a.pk): 2, "": 1}


def test_a_course_of_one_organization_is_never_judged_by_another_organizations_settings(
    two_orgs,
):
    a, b = two_orgs
    c = Organization.objects.create(name="School C", slug="c")  # no choices of its own
    save("Ten chars!", c)  # the site's rules (5+), not A's (20+)
    with pytest.raises(ValidationError, match="shorter than 5"):
        save("abc", c)
    # Quizzes find their organization through their course.
    course_a = save("A title of twenty-one", a)
    with pytest.raises(ValidationError, match="quiz title too short"):
        Quiz.objects.create(course=course_a, title="Quiz of 15 chr")
    Quiz.objects.create(course=save("Ten chars!", c), title="Quiz of 15 chr")


def test_an_organization_can_follow_the_site_again_and_the_site_can_opt_out_of_nothing(
    two_orgs,
):
    a, b = two_orgs
    runtime.follow_site_for(b.pk, "title-check")
    with pytest.raises(ValidationError, match="shorter than 5"):
        save("abc", b)
    # Deactivating site-wide keeps the plugin running where an organization switched it on.
    runtime.activate_for(a.pk, "title-check")
    runtime.deactivate("title-check")
    save("abc")  # the site no longer checks
    save("abc", b)  # nor does B, which follows the site
    with pytest.raises(ValidationError, match="shorter than 20"):
        save("Ten chars!", a)


def test_work_with_no_organization_skips_plugins_only_organizations_activated(two_orgs):
    from course_plugins.core import scope

    assert scope.effective().excluded == {"stamper"}
    assert save("Plain", None).description == ""
    assert module("stamper").seen == []


# Committed for real: the prompt relay (a thread, with its own connection) records what it sent
# on the rows, which it could not do behind the test's open transaction.
@pytest.mark.django_db(transaction=True)
def test_background_events_carry_the_organization_to_the_worker(
    two_orgs, monkeypatch, django_capture_on_commit_callbacks
):
    from course_plugins import tasks
    from course_plugins.site import broker, outbox

    a, b = two_orgs
    sent: list[tuple[str, list[str], dict[str, Any]]] = []
    monkeypatch.setattr(
        broker, "send_event",
        lambda plugin, keys, event, row_id, connection: sent.append((plugin, keys, event)),
    )
    monkeypatch.setattr(  # rows relayed together go as one message
        broker, "send_events",
        lambda rows, connection: sent.extend((r.plugin, r.keys, r.event) for r in rows),
    )
    monkeypatch.setattr(outbox, "_broker_failed_at", 0.0)
    bus = EventBus.get_instance()
    ran: list[Any] = []

    def platform_handler(event):
        pass

    def checker(event):
        from course_plugins.core.scope import current_scope

        ran.append(current_scope.get().org)

    bus.subscribe("org.ping", platform_handler, background=True)
    bus.subscribe("org.ping", checker, background=True, owner="title-check@1.0.0")
    tasks.install(bus)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            with entered(orgs.scope_for(a.pk)):
                bus.publish_sync(Event("org.ping", {}))
            bus.publish_sync(Event("org.ping", {}))
        assert outbox.flush_relay()  # sent by this process's prompt relay, after the commits
        # The sender side (one outbox message per event and plugin): the organization rides in
        # the event dict; none for site-wide work.
        assert [(plugin, e.get(tasks.ORG_KEY)) for plugin, _, e in sent] == [
            ("", a.pk), ("title-check", a.pk), ("", None), ("title-check", None),
        ]
        # The worker side: the handler runs in that organization's scope, and not at all for
        # an organization that switched its plugin off.
        plugin, keys, payload = sent[1]
        assert tasks.deliver_background(plugin, keys, payload) == {keys[0]: "ok"}
        assert ran == [a.pk]
        other = {**payload, tasks.ORG_KEY: b.pk}
        assert tasks.deliver_background(plugin, keys, other) == {keys[0]: "skipped"}
        assert ran == [a.pk]
    finally:
        bus.set_background_dispatcher(None)
        bus.unsubscribe("org.ping", platform_handler)
        bus.unsubscribe("org.ping", checker)


def test_a_call_scheduled_for_an_organization_runs_in_its_scope(two_orgs, settings):
    from course_plugins.tasks import run_scheduled
    from example_project import celery_app

    a, b = two_orgs
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    stamper = module("stamper")
    api = stamper.API[0]
    celery_app.conf.task_always_eager = True
    try:
        with entered(orgs.scope_for(b.pk)):
            sid = api.schedule(stamper.note, 5)
    finally:
        celery_app.conf.task_always_eager = False
    assert sid == f"stamper:note@{b.pk}"
    assert stamper.noted == ["B was here"]  # B's settings, B's storage
    assert PluginStorage.objects.get(plugin="stamper", key="notes").organization == str(b.pk)
    # Not for an organization where the plugin does not run, nor site-wide.
    assert run_scheduled("stamper", "note", org=a.pk) == "skipped"
    assert run_scheduled("stamper", "note") == "skipped"
    assert run_scheduled("stamper", "note", org=b.pk) == "ok"
    assert stamper.noted == ["B was here", "B was here"]


# --- REST -------------------------------------------------------------------------------------


@pytest.fixture
def operator(django_user_model):
    user = django_user_model.objects.create_superuser("op", "op@example.com", "x")
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def teacher_of_a(django_user_model, two_orgs):
    a, _ = two_orgs
    user = django_user_model.objects.create_user("teacher", "t@example.com", "x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="manage_organization_plugins"))
    a.admins.add(user)
    return user


def url(org: Any, name: str, what: str) -> str:
    return f"/api/organizations/{org}/plugins/{name}/{what}/"


def test_rest_activate_deactivate_and_settings_per_organization(operator, two_orgs):
    a, b = two_orgs
    response = operator.post(url(a.pk, "stamper", "activate"))
    assert response.status_code == 200, response.content
    assert response.json()["active"] is True and response.json()["choice"] == "on"
    assert save("A title of twenty-one", a).description == "stamped"
    response = operator.patch(url(a.pk, "stamper", "settings"), {"tag": "AAA"}, format="json")
    assert response.status_code == 200 and response.json()["tag"] == "AAA"
    assert save("A title of twenty-two", a).description == "AAA"
    assert operator.get(url(a.pk, "title-check", "settings")).json() == {"min_length": 20}
    assert operator.get(url(b.pk, "title-check", "settings")).json() == {"min_length": 5}
    response = operator.patch(
        url(a.pk, "title-check", "settings"), {"min_length": "x"}, format="json"
    )
    assert response.status_code == 400 and "min_length" in response.json()
    response = operator.patch(
        url(a.pk, "title-check", "settings"), {"min_length": None}, format="json"
    )
    assert response.json() == {"min_length": 5}  # back to the site's
    response = operator.post(url(a.pk, "stamper", "deactivate"))
    assert response.status_code == 200 and response.json()["active"] is False
    listing = operator.get(f"/api/organizations/{b.pk}/plugins/").json()
    assert {p["plugin"]: p["active"] for p in listing} == {"stamper": True, "title-check": False}


def test_rest_unknown_organization_or_plugin_is_404(operator, two_orgs):
    assert operator.post(url(99999, "stamper", "activate")).status_code == 404
    assert operator.get(url("nope", "stamper", "settings")).status_code == 404
    a, _ = two_orgs
    assert operator.post(url(a.pk, "no-such-plugin", "activate")).status_code == 404


def test_rest_an_organization_admin_manages_only_their_organizations(teacher_of_a, two_orgs):
    a, b = two_orgs
    client = APIClient()
    client.force_authenticate(teacher_of_a)
    assert client.post(url(a.pk, "stamper", "activate")).status_code == 200
    response = client.patch(url(a.pk, "title-check", "settings"), {"min_length": 7}, format="json")
    assert response.status_code == 200
    assert client.post(url(b.pk, "stamper", "deactivate")).status_code == 403
    assert client.get(url(b.pk, "stamper", "settings")).status_code == 403
    response = client.patch(url(b.pk, "stamper", "settings"), {"tag": "x"}, format="json")
    assert response.status_code == 403
    # ... and never the site-wide switches.
    assert client.post("/api/plugins/stamper/activate/").status_code == 403
    assert OrganizationPlugin.objects.get(organization=str(b.pk), plugin__name="stamper").enabled


# --- admin ------------------------------------------------------------------------------------


def test_admin_organization_page_for_an_organization_admin(client, teacher_of_a, two_orgs):
    a, b = two_orgs
    client.force_login(teacher_of_a)
    listing = client.get(reverse("admin:course_plugins_organizationplugin_changelist"))
    assert listing.status_code == 200
    assert "School A" in listing.content.decode() and "School B" not in listing.content.decode()
    page = reverse("admin:course_plugins_organizationplugin_organization", args=(a.pk,))
    assert client.get(page).status_code == 200
    other = reverse("admin:course_plugins_organizationplugin_organization", args=(b.pk,))
    assert client.get(other).status_code == 403
    choice = reverse(
        "admin:course_plugins_organizationplugin_choice", args=(a.pk, "stamper", "activate")
    )
    assert client.post(choice).status_code == 302
    assert orgs.state().active_for("stamper", a.pk)
    denied = reverse(
        "admin:course_plugins_organizationplugin_choice", args=(b.pk, "stamper", "deactivate")
    )
    assert client.post(denied).status_code == 403
    settings_page = reverse(
        "admin:course_plugins_organizationplugin_settings", args=(a.pk, "title-check")
    )
    assert client.get(settings_page).status_code == 200
    response = client.post(settings_page, {"min_length": "12"})
    assert response.status_code == 302
    assert runtime.organization_settings(a.pk, "title-check") == {"min_length": 12}
    # The site's value again: the organization follows the site from now on.
    client.post(settings_page, {"min_length": "5"})
    assert orgs.settings_of(a.pk, "title-check") == {}


def test_admin_hides_organizations_from_users_without_the_permission(
    client, django_user_model, two_orgs
):
    user = django_user_model.objects.create_user("staff", "s@example.com", "x", is_staff=True)
    client.force_login(user)
    listing = client.get(reverse("admin:course_plugins_organizationplugin_changelist"))
    assert listing.status_code == 403
    assert Plugin.objects.exists()


# --- two real processes -----------------------------------------------------------------------


def _until(proc: Any, outcome: str, deadline: float = 30.0, **command: Any) -> str:
    """Ask ``proc`` to judge until it answers ``outcome`` (a prefix) or ``deadline`` s passed."""
    import time

    end = time.monotonic() + deadline
    answer = ""
    while time.monotonic() < end:
        answer = proc.request(op="judge", **command)["outcome"]
        if answer.startswith(outcome):
            return answer
        time.sleep(0.05)
    return answer


@pytest.mark.slow
def test_every_process_follows_per_organization_changes(tmp_path: Path) -> None:
    from django_proc import Proc, migrate, site_env

    plugins = tmp_path / "plugins"
    write_plugin(plugins, "title-check", TITLE_CHECK, TITLE_CHECK_MANIFEST)
    env = site_env(tmp_path, plugins)
    migrate(env)
    admin, web = Proc(env, "serve"), Proc(env, "serve")
    try:
        admin.read(60), web.read(60)
        a = admin.request(op="org-make", slug="a")["pk"]
        b = admin.request(op="org-make", slug="b")["pk"]
        admin.request(op="activate", name="title-check")
        assert _until(web, "refused", org=None, title="abc").startswith("refused")
        assert _until(web, "saved", org=a, title="Ten chars!") == "saved"
        # Changes made in the admin's process reach the web process through the stamp.
        admin.request(op="org", verb="settings", org=a, name="title-check",
                      data={"min_length": 20})
        assert "shorter than 20" in _until(web, "refused", org=a, title="Ten chars!")
        admin.request(op="org", verb="deactivate", org=b, name="title-check")
        assert _until(web, "saved", org=b, title="abc") == "saved"
        # ... for that organization only.
        assert "shorter than 5" in _until(web, "refused", org=None, title="abc")
        assert _until(web, "saved", org=a, title="A title of twenty-one") == "saved"
    finally:
        admin.close()
        web.close()


def test_hook_inspector_says_where_organizations_changed_a_plugin(client, operator, two_orgs):
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.get(username="op"))
    page = client.get(reverse("admin:course_plugins_plugin_inspector")).content.decode()
    assert "only in 1 organization" in page  # stamper: switched on by B alone
    assert "site-wide, off in 1 organization" in page  # title-check: B switched it off


def test_finding_an_organizations_scope_asks_no_query(two_orgs, django_assert_num_queries):
    a, b = two_orgs
    c = Organization.objects.create(name="School C", slug="c")
    course = Course(name="x", title="x", organization=c)
    with django_assert_num_queries(0):
        runtime.check()  # a request's look at the stamp between two looks: a clock comparison
        for org in (a.pk, b.pk, c.pk, str(a.pk)):
            assert orgs.scope_for(org) is not None
        assert orgs.org_of(course, ("organization",)) == c.pk
        assert orgs.scope_for(a.pk) is orgs.scope_for(a.pk)


def test_example_organization_admin_links_to_its_plugin_page(client, operator, two_orgs):
    from django.contrib.auth import get_user_model

    a, _ = two_orgs
    client.force_login(get_user_model().objects.get(username="op"))
    page = client.get("/admin/courses/organization/").content.decode()
    url = reverse("admin:course_plugins_organizationplugin_organization", args=(a.pk,))
    assert url in page and client.get(url).status_code == 200
