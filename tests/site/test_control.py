"""The control room through the REST API: keys, overrides, recorded runs, shadow mode."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from control_site import ctl_site
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django_proc import Proc, migrate, site_env
from rest_framework.test import APIClient

from course_plugins.core.hook_manager import HookManager
from course_plugins.models import FunctionOverride, Plugin, PluginMode, PluginStorage
from course_plugins.site import runtime, stamp
from example_project.courses.models import Course

pytestmark = pytest.mark.django_db(transaction=True)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "plugins"
HOOK = "before-course-save"
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
SHOUT = "ctl-shout:shout"
SPAM = "ctl-guard:refuse_spam"
TAG = "ctl-guard:tag"


@pytest.fixture
def site(tmp_path: Path, settings: Any) -> Iterator[Path]:
    """The ctl-* fixture plugins discovered in a fresh folder; runs and overrides forgotten."""
    with ctl_site(tmp_path, settings) as folder:
        yield folder


def _client(*codenames: str) -> APIClient:
    user = User.objects.create_user(f"staff-{len(codenames)}-{'-'.join(codenames)}", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="course_plugins", codename__in=codenames)
    )
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def operator() -> APIClient:
    return _client("view_plugin", "activate_plugin", "change_functionoverride")


@pytest.fixture
def active(site: Path, operator: APIClient) -> APIClient:
    for name in ("ctl-shout", "ctl-guard"):
        assert operator.post(f"/api/plugins/{name}/activate/").status_code == 200
    return operator


def _functions(client: APIClient, hook: str = HOOK) -> dict[str, dict[str, Any]]:
    hooks = {h["name"]: h for h in client.get("/api/hooks/").json()}
    return {f["key"]: f for f in hooks[hook]["functions"]}


def _save(title: str, description: str = "") -> Course:
    return Course.objects.create(name=title.lower().replace(" ", "-"), title=title,
                                 description=description)


def _url(key: str, hook: str = HOOK) -> str:
    return f"/api/hooks/{hook}/functions/{key}/"


# --- keys and overrides --------------------------------------------------------------------------


def test_every_function_has_its_stable_key_and_enabled(active):
    functions = _functions(active)
    assert {SHOUT, SPAM, TAG} <= set(functions)
    shout = functions[SHOUT]
    assert shout["plugin"] == "ctl-shout@1.0.0" and shout["enabled"] is True
    assert shout["priority"] == shout["plugin_priority"] == 20 and shout["overridden"] is False
    handlers = [h for sub in active.get("/api/events/").json() for h in sub["handlers"]]
    assert all("key" in h and "enabled" in h for h in handlers)
    assert any(h["key"].startswith("ctl-guard:") for h in handlers)


def test_an_operator_switches_one_function_off_moves_it_and_restores_it(active):
    response = active.patch(_url(SHOUT), {"enabled": False}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["enabled"] is False and response.json()["overridden"] is True
    override = FunctionOverride.objects.get(key=SHOUT)
    assert override.enabled is False and override.hook == HOOK
    history = LogEntry.objects.get(object_id=str(override.pk))  # the row's admin history
    assert history.get_change_message() == f"switched off on {HOOK}"
    assert _save("quiet course").title == "quiet course"  # shout no longer runs

    response = active.patch(_url(SHOUT), {"enabled": True, "priority": 1}, format="json")
    row = response.json()
    assert (row["enabled"], row["priority"], row["plugin_priority"]) == (True, 1, 20)
    assert list(_functions(active))[0] == SHOUT  # moved before refuse_spam (5)
    assert _save("loud course").title == "LOUD COURSE"

    response = active.patch(_url(SHOUT), {"enabled": True, "priority": None}, format="json")
    row = response.json()
    assert (row["enabled"], row["priority"], row["overridden"]) == (True, 20, False)
    assert HookManager.get_instance().overrides() == {} or SHOUT not in (
        HookManager.get_instance().overrides()
    )


def test_unknown_hooks_keys_and_bad_bodies_are_refused(active):
    off = {"enabled": False}
    assert active.patch(_url("nobody:nothing"), off, format="json").status_code == 404
    assert active.patch(_url(SHOUT, "no-such-hook"), off, format="json").status_code == 404
    assert active.patch(_url(SHOUT), {}, format="json").status_code == 400
    assert active.patch(_url(SHOUT), {"priority": "soon"}, format="json").status_code == 400
    # Only a JSON boolean switches a function (DRF alone would read "no", "off", 0 as false).
    for value in ("no", "off", "false", 0, "0"):
        response = active.patch(_url(SHOUT), {"enabled": value}, format="json")
        assert response.status_code == 400
        assert response.json() == {"enabled": [
            f"Must be true or false (a JSON boolean), not {json.dumps(value)}."
        ]}
    assert _functions(active)[SHOUT]["enabled"] is True
    assert not FunctionOverride.objects.exists()


def test_switching_needs_the_override_permission(active):
    viewer = _client("view_plugin", "activate_plugin")
    assert viewer.get(_url(SHOUT)).status_code == 200
    assert viewer.patch(_url(SHOUT), {"enabled": False}, format="json").status_code == 403
    assert _functions(active)[SHOUT]["enabled"] is True


def test_an_override_is_kept_across_reloads_and_restarts(active):
    active.patch(_url(SHOUT), {"enabled": False}, format="json")
    assert active.post("/api/plugins/ctl-shout/reload/").status_code == 200
    assert _functions(active)[SHOUT]["enabled"] is False
    runtime.reset()  # a new process: nothing in memory
    runtime.start()
    assert _functions(active)[SHOUT]["enabled"] is False
    assert _save("still quiet").title == "still quiet"


def test_another_process_follows_an_override_at_its_next_look(active):
    # Another process stored the override and bumped the stamp; this one follows it when it
    # looks at the stamp (per request, once per SYNC_INTERVAL), without a query per request.
    FunctionOverride.objects.create(key=TAG, enabled=False)
    assert _functions(active)[TAG]["enabled"] is True
    stamp.bump()
    runtime.check(force=True)
    assert _functions(active)[TAG]["enabled"] is False
    assert "[checked" not in _save("followed").description


# --- recorded runs -------------------------------------------------------------------------------


def test_runs_show_which_plugin_changed_which_field_newest_first(active):
    _save("first course")
    with pytest.raises(ValidationError):
        _save("spam course")
    runs = active.get(f"/api/hooks/{HOOK}/runs/").json()
    assert [r["outcome"] for r in runs[:2]] == ["veto", "ok"]
    vetoed, ok = runs[0], runs[1]
    assert vetoed["message"] == "ctl-guard: no spam in course titles"
    assert [(s["key"], s["outcome"]) for s in vetoed["steps"]] == [
        (SPAM, "veto"), (SHOUT, "skipped"), (TAG, "skipped"),
    ]
    steps = {s["key"]: s for s in ok["steps"]}
    assert steps[SHOUT]["outcome"] == "changed" and steps[SHOUT]["applied"] is True
    assert steps[SHOUT]["changed"]["title"] == ["first course", "FIRST COURSE"]
    assert steps[SPAM]["outcome"] == "ok" and steps[SPAM]["changed"] is None
    assert ok["org"] is None and ok["at"].endswith("+00:00")
    assert active.get(f"/api/hooks/{HOOK}/runs/?limit=1").json() == runs[:1]
    assert active.get("/api/hooks/no-such-hook/runs/").status_code == 404


def test_secret_settings_are_masked_in_runs(active):
    assert active.patch("/api/plugins/ctl-guard/settings/", {"api_token": "tok-98765"},
                        format="json").status_code in (200, 403)
    runtime.update_settings("ctl-guard", {"api_token": "tok-98765"})
    course = _save("secret course")
    assert "tok-98765" in course.description  # the plugin did use it
    body = active.get(f"/api/hooks/{HOOK}/runs/").content.decode()
    assert "tok-98765" not in body and "********" in body


def test_recording_can_be_switched_off(active, settings):
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "RECORD_RUNS": False}
    assert HookManager.get_instance()[HOOK].observer is None  # the engine's plain loops
    _save("unrecorded")
    assert active.get(f"/api/hooks/{HOOK}/runs/").json() == []
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "RECORD_RUNS": True, "RUNS_SAMPLE": 2}
    for n in range(4):
        _save(f"sampled {n}")
    assert len(active.get(f"/api/hooks/{HOOK}/runs/").json()) == 2


# --- shadow mode ---------------------------------------------------------------------------------


def test_a_shadow_plugin_is_watched_but_never_acts(active):
    response = active.post("/api/plugins/ctl-guard/activate/", {"mode": "shadow"}, format="json")
    assert response.status_code == 200, response.content
    detail = active.get("/api/plugins/ctl-guard/").json()
    assert detail["mode"] == "shadow" and detail["status"] == "active"

    course = _save("spam offer")  # not refused
    assert course.title == "SPAM OFFER" and "[checked" not in course.description
    assert Plugin.objects.get(name="ctl-guard").mode == PluginMode.SHADOW

    run = active.get(f"/api/hooks/{HOOK}/runs/").json()[0]
    steps = {s["key"]: s for s in run["steps"]}
    assert run["outcome"] == "ok"
    assert (steps[SPAM]["outcome"], steps[SPAM]["applied"]) == ("veto", False)
    assert (steps[TAG]["outcome"], steps[TAG]["applied"]) == ("changed", False)
    assert steps[SHOUT]["applied"] is True

    _save("fine offer")  # it would only have tagged the description
    shadow = active.get("/api/plugins/ctl-guard/").json()["shadow"]
    assert (shadow["refused"], shadow["changed"]) == (1, 1)
    assert [(e["hook"], e["outcome"]) for e in shadow["examples"]] == [
        (HOOK, "changed"), (HOOK, "veto")
    ]
    assert shadow["examples"][1]["message"] == "ctl-guard: no spam in course titles"

    # Its event handler is listed as a shadow one and did not run (it counts events in storage).
    handlers = [h for sub in active.get("/api/events/").json() for h in sub["handlers"]]
    assert [h["shadow"] for h in handlers if h["key"] == "ctl-guard:count"] == [True]
    assert not PluginStorage.objects.filter(plugin="ctl-guard", key="events").exists()


def test_switching_a_shadow_plugin_to_live_is_one_action(active):
    active.post("/api/plugins/ctl-guard/activate/", {"mode": "shadow"}, format="json")
    _save("spam one")
    response = active.post("/api/plugins/ctl-guard/activate/", {"mode": "live"}, format="json")
    assert response.status_code == 200 and response.json()["plugin"]["mode"] == "live"
    with pytest.raises(ValidationError):
        _save("spam two")
    assert active.get("/api/plugins/ctl-guard/").json()["shadow"] is None


def test_an_unknown_mode_is_refused(active):
    response = active.post("/api/plugins/ctl-guard/activate/", {"mode": "dry-run"}, format="json")
    assert response.status_code == 400 and "mode" in response.json()


# --- two real processes --------------------------------------------------------------------------


def _until(proc: Any, check: Any, timeout: float = 20.0, **command: Any) -> dict[str, Any]:
    """Send ``command`` to ``proc`` until ``check(answer)`` holds (each answer is one request of
    that process); raises AssertionError with the last answer after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        answer = proc.request(**command)
        if check(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{command} never satisfied the check; last answer {answer}")
        time.sleep(0.05)  # the other process looks at the stamp at most once per SYNC_INTERVAL


def _enabled(answer: dict[str, Any], key: str) -> Any:
    return next((f["enabled"] for f in answer["functions"] if f["key"] == key), None)


def _shadow(answer: dict[str, Any], key: str) -> Any:
    return next((f["shadow"] for f in answer["functions"] if f["key"] == key), None)


@pytest.mark.slow
def test_every_process_follows_overrides_and_modes_and_shares_its_runs(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    shutil.copytree(FIXTURES / "ctl-shout", plugins / "ctl-shout")
    env = site_env(tmp_path, plugins)
    migrate(env)
    first, second = Proc(env, "serve"), Proc(env, "serve")
    try:
        first.read(60), second.read(60)
        first.request(op="activate", name="ctl-shout")
        _until(second, lambda a: _enabled(a, SHOUT) is True, op="hook", hook=HOOK)

        # Switched off in the first process: the second follows at a request's look at the stamp.
        first.request(op="override", key=SHOUT, enabled=False)
        _until(second, lambda a: _enabled(a, SHOUT) is False, op="hook", hook=HOOK)
        saved = second.request(op="save-course", name="quiet", title="quiet")
        assert saved["title"] == "quiet"

        # The run the second process recorded reaches the first through the shared cache.
        answer = _until(
            first,
            lambda a: any(r["process"] == saved["process"] for r in a["runs"]),
            op="runs",
            hook=HOOK,
        )
        assert answer["runs"][0]["outcome"] == "ok"

        first.request(op="override", key=SHOUT, enabled=True, priority=None)
        _until(second, lambda a: _enabled(a, SHOUT) is True, op="hook", hook=HOOK)
        assert second.request(op="save-course", name="loud", title="loud")["title"] == "LOUD"

        # Shadow mode set in the first process: the second runs the plugin on copies.
        first.request(op="activate", name="ctl-shout", mode="shadow")
        _until(second, lambda a: _shadow(a, SHOUT) is True, op="hook", hook=HOOK)
        assert second.request(op="save-course", name="calm", title="calm")["title"] == "calm"
        run = second.request(op="runs", hook=HOOK)["runs"][0]
        assert [(s["key"], s["outcome"], s["applied"]) for s in run["steps"]] == [
            (SHOUT, "changed", False)
        ]
    finally:
        first.close()
        second.close()


def test_the_command_activates_in_shadow_mode_and_uninstall_forgets_the_overrides(active):
    out = StringIO()
    call_command("plugins", "activate", "--shadow", "ctl-guard", stdout=out)
    assert "ctl-guard 1.0.0: activated in shadow mode" in out.getvalue()
    assert Plugin.objects.get(name="ctl-guard").mode == PluginMode.SHADOW
    call_command("plugins", "list", stdout=out)
    assert "active (shadow)" in out.getvalue()

    active.patch(_url(SPAM), {"enabled": False}, format="json")
    active.patch(_url(SHOUT), {"enabled": False}, format="json")
    call_command("plugins", "uninstall", "ctl-guard", stdout=StringIO())
    assert list(FunctionOverride.objects.values_list("key", flat=True)) == [SHOUT]


def test_uninstall_forgets_the_plugins_steps_in_the_recorded_runs(active):
    from django.core.cache import caches

    from course_plugins.conf import plugin_settings
    from course_plugins.site import control

    _save("first course")  # ctl-shout changes it, ctl-guard lets it through
    with pytest.raises(ValidationError):
        _save("spam course")  # ctl-guard refuses it
    # What another process of the site recorded and published meanwhile.
    cache = caches[plugin_settings.RUNS_CACHE or plugin_settings.SYNC_CACHE]
    theirs = [{**run, "process": "another-process"} for run in control.runs(HOOK)]
    cache.set(control._INDEX, {**(cache.get(control._INDEX) or {}), "another-process": time.time()})
    cache.set(control._key("another-process", HOOK), theirs)
    assert len(active.get(f"/api/hooks/{HOOK}/runs/").json()) == 4

    call_command("plugins", "uninstall", "ctl-guard", stdout=StringIO())

    runs = active.get(f"/api/hooks/{HOOK}/runs/").json()
    # The runs it refused are gone; in the others only ctl-shout's step is left, everywhere.
    assert sorted(r["process"] == "another-process" for r in runs) == [False, True]
    for run in runs:
        assert run["outcome"] == "ok"
        assert [s["key"] for s in run["steps"]] == [SHOUT]
        assert "ctl-guard" not in json.dumps(run)


def test_check_warns_when_runs_cannot_be_shared(settings):
    from course_plugins import checks

    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "RUNS_CACHE": "runs"}
    assert [m.id for m in checks.check_sync_setup()] == ["course_plugins.W012"]  # not in CACHES
    settings.CACHES = {**settings.CACHES, "runs": {"BACKEND": LOCMEM}}
    assert [m.id for m in checks.check_sync_setup()] == ["course_plugins.W012"]
    settings.COURSE_PLUGINS = {**settings.COURSE_PLUGINS, "RUNS_CACHE": None}
    assert checks.check_sync_setup() == []


def test_isolated_functions_show_their_workers_time_budget(active: APIClient,
                                                            settings: Any) -> None:
    """An isolated plugin's function has no budget in the site's process (its worker is killed
    past the plugin's): the listings show that budget, not the engine's 0."""
    assert runtime.local_plugin("ctl-guard").isolated
    budget = runtime.local_plugin("ctl-guard").hook_timeout
    assert budget > 0
    assert _functions(active)[SPAM]["timeout"] == budget
    events = {e["pattern"]: e for e in active.get("/api/events/").json()}
    [handler] = [h for h in events["course.*"]["handlers"] if h["plugin"].startswith("ctl-guard")]
    assert handler["timeout"] == budget
    assert handler["overridden"] is False
