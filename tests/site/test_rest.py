"""The REST API: who may use it, plugins, settings, inspector endpoints, audit log, schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from ops_plugins import ops_site
from rest_framework.test import APIClient

from course_plugins.models import AuditKind, Plugin, PluginStatus, SecurityAuditEvent
from course_plugins.site import runtime

pytestmark = pytest.mark.django_db

SCHEMA = {
    "min_title_length": {"type": "integer", "default": 1, "min": 1, "max": 200},
    "mode": {"type": "choice", "choices": ["lenient", "strict"], "default": "lenient"},
    "api_key": {"type": "secret"},
}


def _client(username: str | None, *codenames: str, staff: bool = True) -> APIClient:
    client = APIClient()
    if username is None:
        return client
    user = User.objects.create_user(username, is_staff=staff)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="course_plugins", codename__in=codenames)
    )
    client.force_authenticate(user)
    return client


@pytest.fixture
def greeter(settings: Any, tmp_path: Path) -> Plugin:
    # No plugin folder holds anything else: listing finds no new folder to discover.
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(tmp_path)]}
    return Plugin.objects.create(
        name="greeter",
        version="1.2.0",
        author="Ann",
        hooks=["before-course-save"],
        events=["course.*"],
        permissions=["storage"],
        manifest={"name": "greeter", "settings_schema": SCHEMA},
        settings={"api_key": "top-secret"},
        last_traceback="Traceback ...",
    )


def _endpoints(name: str) -> list[tuple[str, str]]:
    base = f"/api/plugins/{name}/"
    return [
        ("get", "/api/plugins/"),
        ("get", base),
        ("post", base + "activate/"),
        ("post", base + "deactivate/"),
        ("post", base + "reload/"),
        ("get", base + "settings/"),
        ("patch", base + "settings/"),
        ("get", "/api/hooks/"),
        ("get", "/api/events/"),
        ("get", "/api/advice/"),
        ("get", "/api/audit/"),
        ("get", "/api/schema/"),
        ("get", "/api/docs/"),
        ("get", "/api/"),
    ]


@pytest.mark.parametrize(
    "who",
    [
        pytest.param(lambda: _client(None), id="anonymous"),
        pytest.param(
            lambda: _client("student", "view_plugin", "activate_plugin", staff=False),
            id="non-staff-even-with-permissions",
        ),
        pytest.param(lambda: _client("bare-staff"), id="staff-without-permissions"),
    ],
)
def test_every_endpoint_refuses_anonymous_non_staff_and_unprivileged_staff(greeter, who):
    client = who()
    for method, url in _endpoints(greeter.name):
        response = getattr(client, method)(
            url, {"mode": "strict"} if method == "patch" else None, format="json"
        )
        assert response.status_code in (401, 403), (method, url, response.status_code)
    greeter.refresh_from_db()
    assert greeter.status == PluginStatus.INACTIVE and greeter.settings == {"api_key": "top-secret"}


def test_view_only_staff_can_read_everything_but_act_on_nothing(greeter):
    client = _client("viewer", "view_plugin", "view_securityauditevent")
    for method, url in _endpoints(greeter.name):
        response = getattr(client, method)(
            url, {"mode": "strict"} if method == "patch" else None, format="json"
        )
        expected = 200 if method == "get" else 403
        assert response.status_code == expected, (method, url, response.status_code)
    greeter.refresh_from_db()
    assert greeter.status == PluginStatus.INACTIVE and greeter.settings == {"api_key": "top-secret"}


def test_settings_permission_alone_does_not_allow_activation(greeter):
    client = _client("configurer", "view_plugin", "change_plugin_settings")
    assert client.post(f"/api/plugins/{greeter.name}/activate/").status_code == 403
    assert client.post(f"/api/plugins/{greeter.name}/reload/").status_code == 403


def test_activation_permission_alone_does_not_allow_settings(greeter):
    client = _client("toggler", "view_plugin", "activate_plugin")
    response = client.patch(
        f"/api/plugins/{greeter.name}/settings/", {"mode": "strict"}, format="json"
    )
    assert response.status_code == 403


def test_list_and_detail(greeter):
    client = _client("viewer", "view_plugin")
    listed = client.get("/api/plugins/").json()
    assert [p["name"] for p in listed] == ["greeter"]
    assert listed[0]["id"] == "greeter@1.2.0"
    assert listed[0]["status"] == "inactive" and listed[0]["hooks"] == ["before-course-save"]
    assert listed[0]["url"].endswith("/api/plugins/greeter/")
    detail = client.get("/api/plugins/greeter/").json()
    assert detail["settings_schema"] == SCHEMA
    assert detail["last_traceback"] == "Traceback ..."
    assert detail["settings"]["api_key"] == "********"
    assert "top-secret" not in str(detail)
    assert client.get("/api/plugins/nope/").status_code == 404


def test_settings_get_masks_secrets_and_fills_defaults(greeter):
    data = _client("viewer", "view_plugin").get("/api/plugins/greeter/settings/").json()
    assert data == {"min_title_length": 1, "mode": "lenient", "api_key": "********"}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"min_title_length": 0}, "min_title_length", "at least 1"),
        ({"min_title_length": "many"}, "min_title_length", "expected an integer"),
        ({"mode": "chaotic"}, "mode", "not one of"),
        ({"colour": "red"}, "colour", "unknown setting"),
    ],
)
def test_settings_patch_refuses_invalid_values_with_field_errors(greeter, body, field, message):
    client = _client("configurer", "view_plugin", "change_plugin_settings")
    response = client.patch("/api/plugins/greeter/settings/", body, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert message in response.json()[field][0]
    greeter.refresh_from_db()
    assert greeter.settings == {"api_key": "top-secret"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"notify": "yes"}, "expected true or false, got the string 'yes'"),
        ({"notify": "on"}, "expected true or false, got the string 'on'"),
        ({"notify": 1}, "expected true or false, got the number 1"),
        ({"limit": "5"}, "expected an integer, got the string '5'"),
        ({"limit": True}, "expected an integer, got true"),
        ({"tags": "a,b"}, "expected a list (a JSON array), got the string 'a,b'"),
    ],
)
def test_settings_patch_takes_json_types_only(settings, tmp_path, body, message):
    # The admin's form posts text ("on" for a ticked box); a JSON client sends JSON values.
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(tmp_path)]}
    schema = {
        "notify": {"type": "boolean", "default": False},
        "limit": {"type": "integer", "default": 3},
        "tags": {"type": "list", "default": []},
    }
    Plugin.objects.create(name="typed", version="1.0.0", manifest={"settings_schema": schema})
    client = _client("configurer", "view_plugin", "change_plugin_settings")
    url = "/api/plugins/typed/settings/"
    response = client.patch(url, body, format="json")
    assert response.status_code == 400
    assert response.json() == {next(iter(body)): [message]}
    response = client.patch(url, {"notify": True, "limit": 5, "tags": ["a"]}, format="json")
    assert response.status_code == 200
    assert response.json() == {"notify": True, "limit": 5, "tags": ["a"]}


def test_settings_patch_needs_an_object(greeter):
    client = _client("configurer", "view_plugin", "change_plugin_settings")
    response = client.patch("/api/plugins/greeter/settings/", [1, 2], format="json")
    assert response.status_code == 400


def test_audit_log_is_paginated_and_filtered():
    SecurityAuditEvent.objects.bulk_create(
        [
            SecurityAuditEvent(plugin="evil@1.0.0", kind=AuditKind.BLOCKED, detail=f"try {i}")
            for i in range(55)
        ]
        + [SecurityAuditEvent(plugin="slow@2.0.0", kind=AuditKind.TIMEOUT, detail="loop")]
    )
    client = _client("auditor", "view_securityauditevent")
    first = client.get("/api/audit/").json()
    assert first["count"] == 56 and len(first["results"]) == 50 and first["next"]
    assert client.get("/api/audit/?plugin=evil").json()["count"] == 55
    assert client.get("/api/audit/?plugin=slow@2.0.0").json()["count"] == 1
    timeouts = client.get("/api/audit/?kind=timeout").json()
    assert [e["detail"] for e in timeouts["results"]] == ["loop"]
    # Seeing plugins does not mean seeing the security log.
    assert _client("viewer", "view_plugin").get("/api/audit/").status_code == 403


def test_openapi_schema_describes_the_endpoints():
    client = _client("viewer", "view_plugin")
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/plugins/",
        "/api/plugins/{name}/",
        "/api/plugins/{name}/activate/",
        "/api/plugins/{name}/deactivate/",
        "/api/plugins/{name}/reload/",
        "/api/plugins/{name}/settings/",
        "/api/hooks/",
        "/api/events/",
        "/api/audit/",
    ):
        assert path in paths, path
    assert set(paths["/api/plugins/{name}/settings/"]) >= {"get", "patch"}


def test_api_root_links_every_part_of_the_api():
    response = _client("viewer", "view_plugin").get("/api/")
    assert response.status_code == 200
    assert response.json() == {
        "plugins": "http://testserver/api/plugins/",
        "hooks": "http://testserver/api/hooks/",
        "events": "http://testserver/api/events/",
        "advice": "http://testserver/api/advice/",
        "audit": "http://testserver/api/audit/",
        "schema": "http://testserver/api/schema/",
        "docs": "http://testserver/api/docs/",
    }


def test_a_plugin_without_version_is_named_without_a_dangling_at():
    # A broken plugin.yaml gives no version: the admin title is "broken-yaml", not "broken-yaml@".
    assert str(Plugin(name="broken-yaml", version="")) == "broken-yaml"
    assert str(Plugin(name="greeter", version="1.2.0")) == "greeter@1.2.0"


# --- with the real runtime ---------------------------------------------------------------------


@pytest.fixture
def site(tmp_path, settings):
    with ops_site(tmp_path, settings) as folder:
        yield folder


@pytest.fixture
def operator() -> APIClient:
    return _client(
        "operator",
        "view_plugin",
        "activate_plugin",
        "change_plugin_settings",
        "view_securityauditevent",
    )


def test_activate_deactivate_and_reload(operator, site):
    response = operator.post("/api/plugins/ops-greeter/activate/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["detail"] == "ops-greeter 1.2.0 activated."
    assert body["plugin"]["status"] == "active" and body["plugin"]["enabled"] is True
    assert operator.post("/api/plugins/ops-greeter/reload/").json()["plugin"]["status"] == "active"
    response = operator.post("/api/plugins/ops-greeter/deactivate/")
    assert response.status_code == 200 and response.json()["plugin"]["status"] == "inactive"
    assert Plugin.objects.get(name="ops-greeter").enabled is False


def test_a_plugin_folder_added_while_the_site_runs_is_listed_and_activated(operator, site):
    from plugin_factory import write_plugin

    write_plugin(site, "newcomer")  # dropped in after the site's discovery
    response = operator.post("/api/plugins/newcomer/activate/")  # before any listing
    assert response.status_code == 200, response.json()
    assert response.json()["plugin"]["status"] == "active"
    write_plugin(site, "latecomer")
    assert "latecomer" in [p["name"] for p in operator.get("/api/plugins/").json()]
    assert operator.get("/api/plugins/nobody/").status_code == 404


def test_failed_activation_is_a_409_with_the_reason(operator, site):
    response = operator.post("/api/plugins/ops-broken/activate/")
    assert response.status_code == 409
    body = response.json()
    assert "refuses to start" in body["detail"]
    assert (
        body["plugin"]["status"] == "error" and "RuntimeError" in body["plugin"]["last_traceback"]
    )
    # The plugin is named once, not again at the start of its error.
    assert body["detail"].startswith("ops-broken could not be activated: ")
    rest = body["detail"].removeprefix("ops-broken could not be activated: ")
    assert rest.startswith("activate(api) raised RuntimeError"), rest


def test_hooks_endpoint_lists_functions_in_call_order_with_plugin_and_priority(operator, site):
    from course_plugins.core.hook_manager import HookManager

    def platform_check(course):
        return course

    hooks = HookManager.get_instance()
    hooks["before-course-save"].add(platform_check, priority=50)
    try:
        operator.post("/api/plugins/ops-greeter/activate/")
        listed = {h["name"]: h for h in operator.get("/api/hooks/").json()}
    finally:
        hooks["before-course-save"].remove(platform_check)
    assert listed["before-course-save"]["type"] == "FILTER"
    functions = [
        (f["name"].rsplit(".", 1)[-1], f["plugin"], f["priority"])
        for f in listed["before-course-save"]["functions"]
        if f["name"].endswith(("check_title", "platform_check"))
    ]
    assert functions == [("check_title", "ops-greeter@1.2.0", 10), ("platform_check", None, 50)]
    assert {"calls", "errors", "timeouts", "mean_ms", "p95_ms"} <= set(
        listed["before-course-save"]["functions"][0]
    )


def test_events_endpoint_lists_subscriptions_with_their_plugin(operator, site):
    from course_plugins.core.event_bus import EventBus

    def on_course(event):
        return None

    bus = EventBus.get_instance()
    bus.subscribe("course.*", on_course)
    try:
        listed = operator.get("/api/events/").json()
    finally:
        bus.unsubscribe("course.*", on_course)
    handlers = [
        (s["pattern"], h["name"].rsplit(".", 1)[-1], h["plugin"])
        for s in listed
        for h in s["handlers"]
    ]
    assert ("course.*", "on_course", None) in handlers


def test_settings_patch_applies_masks_and_keeps_secrets(operator, site):
    operator.post("/api/plugins/ops-greeter/activate/")
    url = "/api/plugins/ops-greeter/settings/"
    response = operator.patch(url, {"min_title_length": 9, "api_key": "k-9"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json() == {"min_title_length": 9, "greeting": "Hello", "api_key": "********"}
    # Sending the mask back keeps the secret; None reverts to the default.
    response = operator.patch(url, {"api_key": "********", "min_title_length": None}, format="json")
    assert response.json()["min_title_length"] == 1
    row = Plugin.objects.get(name="ops-greeter")
    assert row.settings.get("api_key") == "k-9"
    assert operator.get(url).json()["api_key"] == "********"


def test_advice_endpoint_lists_advised_targets_outermost_first(operator):
    from course_plugins.core.advice import before_advice, remove_advice

    def log_call(*args, **kwargs):
        return None

    def check_input(*args, **kwargs):
        return None

    target = "course_service.create_course"
    before_advice(target, log_call, priority=1)
    before_advice(target, check_input, priority=20, owner="ops-greeter@1.2.0")
    try:
        listed = {t["target"]: t["advice"] for t in operator.get("/api/advice/").json()}
    finally:
        remove_advice(target, log_call)
        remove_advice(target, check_input)
    assert [
        (a["name"].rsplit(".", 1)[-1], a["plugin"], a["how"], a["priority"]) for a in listed[target]
    ] == [
        ("log_call", None, "before", 1),
        ("check_input", "ops-greeter@1.2.0", "before", 20),
    ]


def test_schema_generation_is_valid_and_warning_free(tmp_path):
    from django.core.management import call_command

    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert "/api/plugins/{name}/settings/:" in target.read_text()


def test_activating_a_plugin_whose_folder_vanished_is_a_409(operator, site):
    import shutil

    from course_plugins.site import runtime

    shutil.rmtree(site / "ops-greeter")
    runtime.discover()
    response = operator.post("/api/plugins/ops-greeter/activate/")
    assert response.status_code == 409
    assert response.json()["plugin"]["missing"] is True
    assert "ops-greeter" in response.json()["detail"]


# --- the plugin's mode: isolated (the default) or trusted ---------------------------------------


def test_plugins_are_isolated_until_an_operator_trusts_them(operator, site):
    assert operator.post("/api/plugins/ops-greeter/activate/").status_code == 200
    assert operator.get("/api/plugins/ops-greeter/").json()["trusted"] is False
    assert runtime.local_plugin("ops-greeter").isolated
    response = operator.patch("/api/plugins/ops-greeter/", {"trusted": True}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["trusted"] is True and response.json()["status"] == "active"
    plugin = runtime.local_plugin("ops-greeter")
    assert plugin.trusted and plugin.state == "active"  # reloaded in the new mode
    assert Plugin.objects.get(name="ops-greeter").trusted is True
    response = operator.patch("/api/plugins/ops-greeter/", {"trusted": False}, format="json")
    assert response.status_code == 200 and response.json()["trusted"] is False
    assert runtime.local_plugin("ops-greeter").isolated


@pytest.mark.parametrize(
    "body", [{"trusted": "maybe"}, {}, {"trusted": True, "enabled": True}, ["trusted"]]
)
def test_patching_the_mode_validates_the_body(operator, site, body):
    response = operator.patch("/api/plugins/ops-greeter/", body, format="json")
    assert response.status_code == 400
    assert Plugin.objects.get(name="ops-greeter").trusted is False


@pytest.mark.parametrize("value", ["yes", "true", "on", "1", 1, 0, "false", None, [True]])
def test_trusted_takes_only_a_json_boolean(operator, site, value):
    # DRF's BooleanField would read "yes", "on", "1" and 1 as true: where a plugin's code runs
    # is not guessed from a string.
    response = operator.patch("/api/plugins/ops-greeter/", {"trusted": value}, format="json")
    assert response.status_code == 400
    (message,) = response.json()["trusted"]
    if value is not None:
        assert message == f"Must be true or false (a JSON boolean), not {json.dumps(value)}."
    assert Plugin.objects.get(name="ops-greeter").trusted is False


def test_trusting_a_plugin_needs_the_activate_permission(greeter):
    for client in (_client("viewer", "view_plugin"), _client("tuner", "change_plugin_settings")):
        response = client.patch("/api/plugins/greeter/", {"trusted": True}, format="json")
        assert response.status_code == 403
    assert Plugin.objects.get(name="greeter").trusted is False


def test_trusted_plugins_setting(operator, site, settings):
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "TRUSTED_PLUGINS": ["ops-greeter"]}
    assert operator.post("/api/plugins/ops-greeter/activate/").status_code == 200
    assert runtime.local_plugin("ops-greeter").trusted
