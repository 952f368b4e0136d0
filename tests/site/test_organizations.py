"""Organizations: settings shape, per-organization state and scopes, storage per organization."""

from __future__ import annotations

import pytest

from course_plugins.api.stores import DjangoStorageStore, MemoryStorageStore
from course_plugins.checks import check_model_hooks
from course_plugins.core import scope as scope_mod
from course_plugins.model_hooks import bridged_models
from course_plugins.models import OrganizationPlugin, Plugin
from course_plugins.site import organizations as orgs
from example_project.courses.models import Course, Organization, Quiz


@pytest.fixture(autouse=True)
def _fresh_state():
    orgs.reset()
    yield
    orgs.reset()


def test_model_hooks_long_form_names_the_path_to_the_organization():
    table = bridged_models()
    assert table["courses.course"].stem == "course"
    assert table["courses.course"].org_path == ("organization",)
    assert table["courses.quiz"].org_path == ("course", "organization")


def test_model_hooks_plain_string_form_keeps_working(settings):
    hooks = {"courses.Course": "course"}
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "MODEL_HOOKS": hooks}
    entry = bridged_models()["courses.course"]
    assert (entry.stem, entry.org_path) == ("course", None)
    assert check_model_hooks() == []


def test_check_reports_an_organization_path_that_does_not_lead_to_the_organization(settings):
    settings.COURSE_PLUGINS = {
        **settings.COURSE_PLUGINS,
        "MODEL_HOOKS": {
            "courses.Quiz": {"name": "quiz", "organization": "course"},
            "courses.Content": {"name": "content", "organization": "nope"},
        },
    }
    messages = [m.msg for m in check_model_hooks()]
    assert any("leads to courses.Course, not to courses.Organization" in m for m in messages)
    assert any("has no field 'nope'" in m for m in messages)


@pytest.mark.django_db
def test_org_of_follows_the_field_path_without_a_query_on_the_last_step(
    django_assert_num_queries,
):
    org = Organization.objects.create(name="A", slug="a")
    course = Course.objects.create(name="c1", title="Course one", organization=org)
    quiz = Quiz.objects.create(course=course, title="Q")
    with django_assert_num_queries(0):
        assert orgs.org_of(course, ("organization",)) == org.pk
    quiz = Quiz.objects.get(pk=quiz.pk)
    with django_assert_num_queries(1):
        assert orgs.org_of(quiz, ("course", "organization")) == org.pk
    orphan = Course.objects.create(name="c2", title="No organization")
    assert orgs.org_of(orphan, ("organization",)) is None


@pytest.mark.django_db
def test_state_opt_in_opt_out_and_settings_become_scopes():
    site_wide = Plugin.objects.create(name="site-wide", version="1", enabled=True)
    org_only = Plugin.objects.create(name="org-only", version="1", enabled=False)
    a = Organization.objects.create(name="A", slug="a")
    b = Organization.objects.create(name="B", slug="b")
    c = Organization.objects.create(name="C", slug="c")
    OrganizationPlugin.objects.create(organization=str(a.pk), plugin=org_only, enabled=True)
    OrganizationPlugin.objects.create(
        organization=str(b.pk), plugin=site_wide, enabled=False, settings={"x": 1}
    )
    OrganizationPlugin.objects.create(organization=str(c.pk), plugin=site_wide, settings={"x": 2})
    state = orgs.load()
    assert state.org_only == {"org-only"}
    # Work with no organization skips what only some organizations activated.
    assert scope_mod.effective().excluded == {"org-only"}
    assert orgs.scope_for(None) is None
    sa, sb, sc = orgs.scope_for(a.pk), orgs.scope_for(b.pk), orgs.scope_for(c.pk)
    assert sa.excluded == frozenset() and sa.org == a.pk
    assert sb.excluded == {"org-only", "site-wide"}
    assert sc.excluded == {"org-only"} and sc.settings["site-wide"] == {"x": 2}
    # An organization without rows shares the site's exclusions; scopes are cached.
    other = orgs.scope_for(999)
    assert other.excluded is scope_mod.site_scope().excluded
    assert orgs.scope_for(999) is other
    assert state.active_for("org-only", a.pk) and not state.active_for("org-only", b.pk)
    assert not state.active_for("site-wide", b.pk) and state.active_for("site-wide", c.pk)


@pytest.mark.django_db
def test_organization_admins_by_relation_and_permission(django_user_model, settings):
    from django.contrib.auth.models import Permission

    a = Organization.objects.create(name="A", slug="a")
    b = Organization.objects.create(name="B", slug="b")
    boss = django_user_model.objects.create_superuser("boss", "boss@example.com", "x")
    teacher = django_user_model.objects.create_user("teacher", is_staff=True)
    a.admins.add(teacher)
    assert orgs.administered(boss) is None
    assert orgs.administered(teacher) == set()  # not granted the permission yet
    teacher.user_permissions.add(Permission.objects.get(codename="manage_organization_plugins"))
    teacher = django_user_model.objects.get(pk=teacher.pk)
    assert orgs.administered(teacher) == {str(a.pk)}
    assert orgs.can_manage(teacher, a.pk) and not orgs.can_manage(teacher, b.pk)
    settings.COURSE_PLUGINS = {
        **settings.COURSE_PLUGINS,
        "ORGANIZATION_ADMINS": "tests.site.test_organizations.all_but_a",
    }
    assert orgs.administered(teacher) == {"b-key"}


def all_but_a(user):
    return ["b-key"]


@pytest.mark.parametrize("store_class", [MemoryStorageStore, DjangoStorageStore])
@pytest.mark.django_db
def test_storage_is_per_plugin_and_organization(store_class):
    store = store_class()
    store.set("p", "k", 1)
    store.set("p", "k", 2, org="7")
    assert store.get("p", "k") == 1
    assert store.get("p", "k", org="7") == 2
    assert store.get("p", "k", org="8") is None
    assert store.keys("p", org="7") == ["k"]
    assert store.update("p", "k", lambda v: v + 10, org="7") == 12
    assert store.get("p", "k") == 1
    assert store.delete("p", "k", org="7") and store.get("p", "k", org="7") is None
