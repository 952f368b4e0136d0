"""The plugin admin through Django's test client: list, permissions, actions, settings, logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from ops_plugins import ops_site

from course_plugins.core.hook_manager import HookManager
from course_plugins.core.standard import PERMISSIONS, STANDARD_HOOKS
from course_plugins.models import AuditKind, Plugin, PluginStatus, SecurityAuditEvent
from course_plugins.site import runtime

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/course_plugins/plugin/"
TRACEBACK = 'Traceback (most recent call last):\n  File "x.py"\nZeroDivisionError: boom'


def _staff(username: str, *codenames: str) -> Client:
    user = User.objects.create_user(username, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="course_plugins", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_client() -> Client:
    """A superuser, logged in without a password (hashing one costs ~0.4 s per test)."""
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", None))
    return client


@pytest.fixture
def viewer() -> Client:
    """Staff who may look at plugins (and the audit log) but change nothing."""
    return _staff("viewer", "view_plugin", "view_securityauditevent")


@pytest.fixture
def operator() -> Client:
    """Staff who may toggle plugins and edit their settings, without being superuser."""
    return _staff("operator", "view_plugin", "activate_plugin", "change_plugin_settings")


@pytest.fixture
def rows(settings: Any, tmp_path: Path) -> dict[str, Plugin]:
    """Plugin rows as discovery would write them (the runtime is not involved). PLUGIN_DIRS holds
    no other plugin: the list page's look for new folders finds nothing to add."""
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(tmp_path)]}
    schema = {
        "min_title_length": {
            "type": "integer",
            "default": 1,
            "min": 1,
            "description": "Shortest title.",
        },
        "api_key": {"type": "secret", "description": "Key."},
    }
    return {
        "greeter": Plugin.objects.create(
            name="greeter",
            version="1.2.0",
            author="Ann Author",
            description="Greets courses",
            hooks=["before-course-save"],
            events=["course.*"],
            permissions=["storage", "notify"],
            manifest={
                "name": "greeter",
                "settings_schema": schema,
                "permissions": ["storage", "notify"],
            },
            settings={"api_key": "top-secret-key"},
        ),
        "faulty": Plugin.objects.create(
            name="faulty",
            version="0.1.0",
            author="Bob",
            status=PluginStatus.FAULTED,
            hooks=["after-course-save"],
            last_error="Quarantined after 5 failures in a row",
            last_traceback=TRACEBACK,
        ),
        "live": Plugin.objects.create(
            name="live",
            version="2.0.0",
            author="Cy",
            status=PluginStatus.ACTIVE,
            enabled=True,
            events=["quiz.submitted"],
        ),
    }


def _url(name: str, plugin: Plugin) -> str:
    return reverse(f"admin:course_plugins_plugin_{name}", args=(plugin.pk,))


# --- the list --------------------------------------------------------------------------------


def test_list_shows_name_version_author_status_hooks_and_events(admin_client, rows):
    # Names may wrap between their parts (<wbr>) so a narrow column keeps the buttons in view.
    html = admin_client.get(CHANGELIST).content.decode().replace("<wbr>", "")
    for text in (
        "greeter",
        "1.2.0",
        "Ann Author",
        "before-course-save",
        "course.*",
        "quiz.submitted",
    ):
        assert text in html
    assert 'class="cp-badge cp-badge--faulted">Faulted</span>' in html
    assert 'cp-badge--active">Active</span>' in html
    assert 'cp-badge--inactive">Inactive</span>' in html
    assert reverse("admin:course_plugins_plugin_inspector") in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status__exact=faulted", {"faulty"}),
        ("enabled__exact=1", {"live"}),
        ("q=greets", {"greeter"}),
        ("q=Bob", {"faulty"}),
        ("missing__exact=0", {"greeter", "faulty", "live"}),
    ],
)
def test_list_filters_and_search(admin_client, rows, query, expected):
    response = admin_client.get(f"{CHANGELIST}?{query}")
    shown = {p.name for p in response.context["cl"].result_list}
    assert shown == expected


def test_actions_are_named_activate_deactivate_reload(admin_client, rows):
    response = admin_client.get(CHANGELIST)
    names = [
        value for value, _ in response.context["action_form"].fields["action"].choices if value
    ]
    assert names == ["activate", "deactivate", "reload", "activate_shadow", "go_live"]


def test_row_buttons_match_the_plugin_state(operator, rows):
    html = operator.get(CHANGELIST).content.decode()
    assert f'href="{_url("activate", rows["greeter"])}"' in html
    assert f'href="{_url("activate", rows["faulty"])}"' in html
    assert f'formaction="{_url("deactivate", rows["live"])}"' in html
    assert f'formaction="{_url("reload", rows["live"])}"' in html
    assert f'href="{_url("activate", rows["live"])}"' not in html
    assert f'href="{_url("settings", rows["greeter"])}"' in html
    assert 'id="cp-row-action"' in html


# --- view-only staff ---------------------------------------------------------------------------


def test_view_only_staff_see_plugins_but_no_actions_or_buttons(viewer, rows):
    response = viewer.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert "greeter" in html
    assert response.context["action_form"] is None
    for plugin in rows.values():
        for verb in ("activate", "deactivate", "reload", "settings"):
            assert _url(verb, plugin) not in html


def test_view_only_staff_cannot_act_in_any_way(viewer, rows):
    greeter, live = rows["greeter"], rows["live"]
    refused = [
        viewer.get(_url("activate", greeter)),
        viewer.post(_url("activate", greeter), {"post": "yes"}),
        viewer.post(_url("deactivate", live)),
        viewer.post(_url("reload", live)),
        viewer.get(_url("settings", greeter)),
        viewer.post(_url("settings", greeter), {"min_title_length": "3"}),
        viewer.post(reverse("admin:course_plugins_plugin_change", args=(greeter.pk,)), {}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    # An action posted by hand is not among the allowed ones: nothing happens.
    viewer.post(CHANGELIST, {"action": "deactivate", "_selected_action": [live.pk]})
    live.refresh_from_db()
    assert (live.status, live.enabled) == (PluginStatus.ACTIVE, True)


def test_change_page_of_view_only_staff_has_no_tools(viewer, rows):
    html = viewer.get(
        reverse("admin:course_plugins_plugin_change", args=(rows["live"].pk,))
    ).content.decode()
    assert "cp-tool" not in html and _url("settings", rows["live"]) not in html


def test_anonymous_users_are_sent_to_the_login_page(client, rows):
    for url in (
        CHANGELIST,
        _url("activate", rows["greeter"]),
        _url("settings", rows["greeter"]),
        reverse("admin:course_plugins_plugin_inspector"),
    ):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_a_mistyped_plugin_url_is_a_404_not_a_server_error(operator, rows):
    for url in (
        f"{CHANGELIST}hooks/change/",
        f"{CHANGELIST}hooks/settings/",
        f"{CHANGELIST}424242/change/",
        f"{CHANGELIST}x/activate/",
    ):
        assert operator.get(url).status_code == 404, url


def test_deactivate_and_reload_need_post(operator, rows):
    assert operator.get(_url("deactivate", rows["live"])).status_code == 405
    assert operator.get(_url("reload", rows["live"])).status_code == 405


# --- change page -----------------------------------------------------------------------------


def test_everything_from_discovery_is_read_only(admin_client, rows):
    response = admin_client.get(
        reverse("admin:course_plugins_plugin_change", args=(rows["greeter"].pk,))
    )
    assert list(response.context["adminform"].form.fields) == []
    html = response.content.decode()
    assert 'name="_save"' not in html and "Ann Author" in html


def test_faulted_plugin_shows_error_traceback_and_can_be_activated_again(admin_client, rows):
    html = admin_client.get(
        reverse("admin:course_plugins_plugin_change", args=(rows["faulty"].pk,))
    ).content.decode()
    assert "Quarantined after 5 failures in a row" in html
    assert "ZeroDivisionError: boom" in html
    assert 'role="alert"' in html
    assert f'href="{_url("activate", rows["faulty"])}">Activate again</a>' in html


def test_change_page_masks_secrets(admin_client, rows):
    html = admin_client.get(
        reverse("admin:course_plugins_plugin_change", args=(rows["greeter"].pk,))
    ).content.decode()
    assert "top-secret-key" not in html
    assert "********" in html


def test_missing_plugins_can_be_deleted_others_cannot(admin_client, rows):
    assert (
        admin_client.get(
            reverse("admin:course_plugins_plugin_delete", args=(rows["greeter"].pk,))
        ).status_code
        == 403
    )
    Plugin.objects.filter(pk=rows["greeter"].pk).update(missing=True)
    response = admin_client.post(
        reverse("admin:course_plugins_plugin_delete", args=(rows["greeter"].pk,)), {"post": "yes"}
    )
    assert response.status_code == 302 and not Plugin.objects.filter(name="greeter").exists()
    assert admin_client.get(reverse("admin:course_plugins_plugin_add")).status_code == 403


# --- activation confirmation -----------------------------------------------------------------


def test_activate_action_first_lists_the_permissions_asked_for(operator, rows):
    picked = [rows["greeter"].pk, rows["faulty"].pk]
    response = operator.post(CHANGELIST, {"action": "activate", "_selected_action": picked})
    assert response.status_code == 200
    html = response.content.decode()
    descriptions = {p.name: p.description for p in PERMISSIONS}
    assert f"<strong>storage</strong>: {descriptions['storage']}" in html
    assert f"<strong>notify</strong>: {descriptions['notify']}" in html
    assert "It asks for no permissions beyond" in html  # faulty asks for none
    assert 'name="post" value="yes"' in html and 'name="action" value="activate"' in html
    for pk in picked:
        assert f'name="_selected_action" value="{pk}"' in html
    # Nothing was activated yet.
    assert set(Plugin.objects.filter(pk__in=picked).values_list("status", flat=True)) == {
        "inactive",
        "faulted",
    }


def test_row_activate_link_shows_the_same_confirmation(operator, rows):
    response = operator.get(_url("activate", rows["greeter"]))
    html = response.content.decode()
    assert response.status_code == 200 and "<strong>storage</strong>" in html
    assert 'name="post" value="yes"' in html and 'name="action"' not in html


# --- settings page ---------------------------------------------------------------------------


def test_settings_page_renders_the_generated_form(operator, rows):
    response = operator.get(_url("settings", rows["greeter"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="min_title_length"' in html and 'type="number"' in html
    assert 'type="password"' in html and "top-secret-key" not in html
    assert "Shortest title." in html


def test_settings_errors_are_shown_inline_and_nothing_is_saved(operator, rows):
    response = operator.post(_url("settings", rows["greeter"]), {"min_title_length": "0"})
    assert response.status_code == 200
    assert response.context["form"].errors["min_title_length"]
    assert "errornote" in response.content.decode()
    rows["greeter"].refresh_from_db()
    assert rows["greeter"].settings == {"api_key": "top-secret-key"}


# --- read-only logs --------------------------------------------------------------------------


def test_audit_log_is_read_only_with_filters_and_dates(admin_client, viewer):
    event = SecurityAuditEvent.objects.create(
        plugin="evil@1.0.0", kind=AuditKind.BLOCKED, detail="import os"
    )
    base = "/admin/course_plugins/securityauditevent/"
    response = viewer.get(base)
    assert response.status_code == 200 and "evil@1.0.0" in response.content.decode()
    assert response.context["cl"].date_hierarchy == "created_at"
    assert {f.title for f in response.context["cl"].filter_specs} >= {"kind", "plugin"}
    assert admin_client.get(base + "add/").status_code == 403
    assert admin_client.post(f"{base}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(f"{base}{event.pk}/change/", {"detail": "x"}).status_code == 403
    event.refresh_from_db()
    assert event.detail == "import os"


@pytest.mark.parametrize("model", ["notification", "analyticsevent", "pluginstorage"])
def test_other_records_are_listed_read_only(admin_client, model):
    assert admin_client.get(f"/admin/course_plugins/{model}/").status_code == 200
    assert admin_client.get(f"/admin/course_plugins/{model}/add/").status_code == 403


def test_no_log_entries_are_written_by_looking(admin_client, rows):
    admin_client.get(CHANGELIST)
    assert LogEntry.objects.count() == 0


# --- with the real runtime ---------------------------------------------------------------------


@pytest.fixture
def site(tmp_path, settings):
    """The ops-* fixture plugins discovered through the runtime (rows inactive)."""
    with ops_site(tmp_path, settings) as folder:
        yield folder


def _greeter_functions() -> list[dict]:
    described = {h["name"]: h for h in HookManager.get_instance().describe()}
    return [
        f
        for f in described["before-course-save"]["functions"]
        if (f["plugin"] or "").startswith("ops-greeter@")
    ]


def test_the_list_shows_a_plugin_folder_added_while_the_site_runs(operator, site):
    from plugin_factory import write_plugin

    runtime.start()
    write_plugin(site, "newcomer")
    html = operator.get(CHANGELIST).content.decode().replace("<wbr>", "")
    assert "newcomer" in html
    row = Plugin.objects.get(name="newcomer")
    response = operator.post(_url("activate", row), {"post": "yes"})
    assert response.status_code == 302
    assert runtime.local_plugin("newcomer").state == "active"


def test_confirmed_activation_activates_and_says_so(operator, site):
    greeter = Plugin.objects.get(name="ops-greeter")
    response = operator.post(
        CHANGELIST,
        {"action": "activate", "_selected_action": [greeter.pk], "post": "yes"},
        follow=True,
    )
    assert "Plugin ops-greeter 1.2.0 activated." in [str(m) for m in response.context["messages"]]
    greeter.refresh_from_db()
    assert (greeter.status, greeter.enabled) == (PluginStatus.ACTIVE, True)
    assert [f["name"].rsplit(".", 1)[-1] for f in _greeter_functions()] == ["check_title"]
    with pytest.raises(ValueError, match="at least 1 characters"):
        HookManager.get_instance().run_sync("before-course-save", {"title": ""})
    assert (
        LogEntry.objects.get(object_id=str(greeter.pk)).get_change_message() == "Changed activated."
    )


def test_failed_activation_shows_the_reason_and_traceback(operator, admin_client, site):
    broken = Plugin.objects.get(name="ops-broken")
    response = operator.post(_url("activate", broken), {"post": "yes"}, follow=True)
    messages = [str(m) for m in response.context["messages"]]
    assert len(messages) == 1 and messages[0].startswith(
        "Plugin ops-broken could not be activated:"
    )
    assert "refuses to start" in messages[0]
    broken.refresh_from_db()
    assert broken.status == PluginStatus.ERROR and not broken.enabled
    html = response.content.decode()  # the change page the operator lands on
    assert "refuses to start" in html and "RuntimeError" in html
    # Never active yet: the button offers a first activation, not "again".
    assert ">Activate</a>" in html and "Activate again" not in html


def test_row_buttons_deactivate_and_reload(operator, site):
    greeter = Plugin.objects.get(name="ops-greeter")
    operator.post(_url("activate", greeter), {"post": "yes"})
    response = operator.post(_url("reload", greeter), follow=True)
    assert "Plugin ops-greeter 1.2.0 reloaded." in [str(m) for m in response.context["messages"]]
    assert len(_greeter_functions()) == 1  # reloaded, not registered twice
    response = operator.post(
        _url("deactivate", greeter), HTTP_REFERER="http://testserver" + CHANGELIST
    )
    assert response.status_code == 302 and response["Location"] == "http://testserver" + CHANGELIST
    greeter.refresh_from_db()
    assert (greeter.status, greeter.enabled) == (PluginStatus.INACTIVE, False)
    assert _greeter_functions() == []


def test_saving_settings_applies_them_at_once(operator, site):
    greeter = Plugin.objects.get(name="ops-greeter")
    operator.post(_url("activate", greeter), {"post": "yes"})
    response = operator.post(
        _url("settings", greeter),
        {"min_title_length": "8", "greeting": "Hello", "api_key": "k-1"},
        follow=True,
    )
    assert "Settings of ops-greeter saved and applied." in [
        str(m) for m in response.context["messages"]
    ]
    greeter.refresh_from_db()
    # Only what differs from the defaults is stored; the secret is never shown again.
    assert greeter.settings == {"min_title_length": 8, "api_key": "k-1"}
    assert "k-1" not in response.content.decode()
    with pytest.raises(ValueError, match="at least 8 characters"):
        HookManager.get_instance().run_sync("before-course-save", {"title": "Python"})
    # A blank secret keeps the stored one.
    operator.post(_url("settings", greeter), {"min_title_length": "3", "greeting": "Hi"})
    greeter.refresh_from_db()
    assert greeter.settings == {"min_title_length": 3, "greeting": "Hi", "api_key": "k-1"}


def test_inspector_lists_functions_in_call_order_with_owner_and_stats(viewer, site):
    runtime.activate("ops-greeter")
    HookManager.get_instance().run_sync("before-course-save", {"title": "A long title"})
    response = viewer.get(reverse("admin:course_plugins_plugin_inspector"))
    assert response.status_code == 200
    hooks = {h["name"]: h for h in response.context["hooks"]}
    idle = {h["name"] for h in response.context["idle_hooks"]}
    assert set(hooks) | idle >= {s.name for s in STANDARD_HOOKS}
    assert "before-course-save" in hooks and "quiz-grade" in idle
    functions = hooks["before-course-save"]["functions"]
    mine = [f for f in functions if f["plugin"] == "ops-greeter@1.2.0"]
    assert mine and mine[0]["calls"] >= 1
    html = response.content.decode()
    assert "check_title" in html and "ops-greeter@1.2.0" in html and "p95 ms" in html


def test_inspector_lists_only_the_hooks_this_project_has(viewer, settings):
    # A project mapping only a lesson model has no course/quiz/content hooks to offer (changing
    # the setting defines the lesson hooks, as at start-up).
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "MODEL_HOOKS": {"auth.Group": "lesson"}}
    response = viewer.get(reverse("admin:course_plugins_plugin_inspector"))
    idle = {h["name"] for h in response.context["idle_hooks"]}
    names = idle | {h["name"] for h in response.context["hooks"]}
    assert {"before-lesson-save", "after-lesson-save", "before-lesson-delete"} <= names
    assert not idle & {"before-course-save", "quiz-grade", "content-transform"}


def test_inspector_shows_advice_and_lists_unadvised_targets(viewer):
    from course_plugins.core.advice import around_advice, remove_advice

    def timed(original, *args, **kwargs):
        return original(*args, **kwargs)

    around_advice("course_service.publish_course", timed, priority=3)
    try:
        response = viewer.get(reverse("admin:course_plugins_plugin_inspector"))
    finally:
        remove_advice("course_service.publish_course", timed)
    advised = dict(response.context["advice"])
    assert [(a["how"], a["priority"]) for a in advised["course_service.publish_course"]] == [
        ("around", 3)
    ]
    assert "course_service.create_course" in response.context["unadvised"]
    assert "course_service.publish_course" not in response.context["unadvised"]


# --- the plugin's mode -------------------------------------------------------------------------


def test_trusting_a_plugin_first_says_what_it_gives_away(operator, site):
    greeter = Plugin.objects.get(name="ops-greeter")
    runtime.activate("ops-greeter")
    page = operator.get(reverse("admin:course_plugins_plugin_change", args=(greeter.pk,)))
    assert "Isolated: its code runs in a confined worker process" in page.content.decode()
    confirm = operator.get(_url("trust", greeter))
    text = confirm.content.decode()
    assert confirm.status_code == 200 and "cp-trust-warning" in text
    assert "secret key" in text and "Yes, trust this plugin" in text
    assert Plugin.objects.get(name="ops-greeter").trusted is False  # looking changes nothing
    response = operator.post(_url("trust", greeter), {"post": "yes", "trusted": "1"})
    assert response.status_code == 302
    assert Plugin.objects.get(name="ops-greeter").trusted is True
    assert runtime.local_plugin("ops-greeter").trusted
    page = operator.get(reverse("admin:course_plugins_plugin_change", args=(greeter.pk,)))
    assert "Trusted: its code runs in the site" in page.content.decode()
    operator.post(_url("trust", greeter), {"post": "yes", "trusted": "0"})
    assert runtime.local_plugin("ops-greeter").isolated


def test_only_staff_who_may_activate_can_change_the_mode(viewer, site):
    greeter = Plugin.objects.get(name="ops-greeter")
    assert viewer.get(_url("trust", greeter)).status_code == 403
    assert viewer.post(_url("trust", greeter), {"post": "yes", "trusted": "1"}).status_code == 403
    assert Plugin.objects.get(name="ops-greeter").trusted is False


def test_a_manifest_with_several_bad_fields_shows_them_all(admin_client, settings, tmp_path):
    folder = tmp_path / "sloppy"
    folder.mkdir()
    (folder / "plugin.yaml").write_text(
        "name: sloppy\nversion: 1.0\nhooks: [Bad Hook]\npermissions: [internet]\n"
    )
    (folder / "__init__.py").write_text("def activate(api):\n    pass\n")
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(tmp_path)]}
    runtime.reset()
    try:
        admin_client.get(CHANGELIST)  # the list discovers the new folder
        row = Plugin.objects.get(name="sloppy")
        html = admin_client.get(
            reverse("admin:course_plugins_plugin_change", args=(row.pk,))
        ).content.decode()
    finally:
        runtime.reset()
    assert row.status == PluginStatus.ERROR
    lines = row.last_error.splitlines()
    manifest = folder / "plugin.yaml"
    assert [line.split(": ", 2)[:2] for line in lines] == [
        [str(manifest), "field 'version'"],
        [str(manifest), "field 'hooks[0]'"],
        [str(manifest), "field 'permissions[0]'"],
    ]
    # The error note above the form and the Last error field show one problem a line.
    note = html[html.index('role="alert"'):]
    note = note[: note.index("</p>")]
    assert note.count("<br>") == 2 and "field &#x27;permissions[0]&#x27;" in note


def test_activating_a_plugin_whose_manifest_has_several_errors_lists_them(
    admin_client, settings, tmp_path
):
    folder = tmp_path / "sloppy"
    folder.mkdir()
    (folder / "plugin.yaml").write_text(
        "name: sloppy\nversion: 1.0\nhooks: ['<b>Bad</b>']\npermissions: [internet]\n"
    )
    (folder / "__init__.py").write_text("def activate(api):\n    pass\n")
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(tmp_path)]}
    runtime.reset()
    try:
        admin_client.get(CHANGELIST)  # the list discovers the new folder
        row = Plugin.objects.get(name="sloppy")
        # The confirmation says it cannot start (not that it asks for nothing).
        confirm = admin_client.post(
            CHANGELIST, {"action": "activate", "_selected_action": [row.pk]}
        ).content.decode()
        assert "will not start until this is fixed" in confirm
        assert "asks for no permissions" not in confirm
        assert "field &#x27;permissions[0]&#x27;" in confirm and "&lt;b&gt;Bad" in confirm
        response = admin_client.post(
            CHANGELIST,
            {"action": "activate", "_selected_action": [row.pk], "post": "yes"},
            follow=True,
        )
    finally:
        runtime.reset()
    messages = list(response.context["messages"])
    assert len(messages) == 1 and messages[0].level_tag == "error"
    html = response.content.decode()
    shown = html[html.index('class="messagelist"'):]
    shown = shown[: shown.index("</ul>", shown.index("<ul class=\"cp-errors\">") + 1)]
    assert "Plugin sloppy could not be activated:" in shown
    # One problem a line, as a list; the plugin's text escaped, never markup.
    items = shown.split("<li>")[1:]
    assert len(items) == 3, shown
    assert items[0].startswith(f"{folder / 'plugin.yaml'}: field &#x27;version&#x27;")
    assert "&lt;b&gt;Bad&lt;/b&gt;" in items[1] and "<b>Bad" not in shown
    assert "field &#x27;permissions[0]&#x27;" in items[2]


def test_a_site_without_organizations_has_no_organization_entry_in_the_admin(
    admin_client, settings
):
    organizations_page = "/admin/course_plugins/organizationplugin/"
    assert organizations_page in admin_client.get("/admin/").content.decode()
    settings.COURSE_PLUGINS = {
        k: v for k, v in settings.COURSE_PLUGINS.items() if k != "ORGANIZATION_MODEL"
    }
    for page in ("/admin/", "/admin/course_plugins/"):
        html = admin_client.get(page).content.decode()
        assert "/admin/course_plugins/plugin/" in html
        assert organizations_page not in html  # it led to a 403
