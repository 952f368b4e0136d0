"""A real Chromium drives the admin: activate course-validator, change a setting, see it refuse.

Runs against pytest-django's live server with the system Chromium (no browser download). Without
Chromium the test is skipped, unless ``REQUIRE_BROWSER=1`` (CI), where that is a failure.
``SAVE_SCREENSHOTS=1`` also writes ``docs/screenshots/plugin-list.png`` and ``plugin-settings.png``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from course_plugins.models import Plugin, PluginStatus

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PASSWORD = "correct horse battery staple"


def _unavailable(reason: str) -> None:
    """Skip, or fail when the browser test is required (``REQUIRE_BROWSER=1``, as CI sets)."""
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and REQUIRE_BROWSER=1")
    pytest.skip(reason)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    try:
        from playwright import sync_api
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[test]')")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes between
    # browser steps are still plain synchronous calls, so Django's guard is lifted for this test.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def site(live_server, transactional_db):
    """The live site with the example plugins discovered (all inactive) and a superuser."""
    from course_plugins.site import runtime

    runtime.start()
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    yield live_server
    runtime.reset()  # deactivate what the test activated in this process


def _shot(page, name: str) -> None:
    if os.environ.get("SAVE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_operator_activates_configures_and_sees_the_plugin_refuse(browser, site):
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    # Start with the admin's navigation sidebar collapsed: the tables get the full width.
    page.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    page.set_default_timeout(15_000)
    url = site.url

    page.goto(f"{url}/admin/login/?next=/admin/course_plugins/plugin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/course_plugins/plugin/")
    row = page.locator("#result_list tr", has_text="course-validator")
    assert "Inactive" in row.inner_text()

    # Activate from the row: the confirmation page lists the permissions asked for.
    row.get_by_role("link", name="Activate").click()
    page.wait_for_url("**/activate/")
    assert "storage" in page.locator("#content-main").inner_text()
    page.get_by_role("button", name="Yes, activate").click()
    page.wait_for_url("**/change/")
    assert "Plugin course-validator 1.0.0 activated." in page.locator(".messagelist").text_content()
    assert Plugin.objects.get(name="course-validator").status == PluginStatus.ACTIVE

    page.goto(f"{url}/admin/course_plugins/plugin/")
    assert "Active" in page.locator("#result_list tr", has_text="course-validator").inner_text()
    _shot(page, "plugin-list.png")

    # Change a setting in the generated form; an invalid value is refused inline first.
    page.locator("#result_list tr", has_text="course-validator").get_by_role(
        "link", name="Settings"
    ).click()
    page.wait_for_url("**/settings/")
    assert page.input_value("#id_min_title_length") == "5"  # the default, pre-filled
    page.fill("#id_min_title_length", "12")
    page.fill("#id_banned_words", "lorem\nipsum")
    _shot(page, "plugin-settings.png")
    page.fill("#id_min_title_length", "500")
    page.click("input[name=_save]")
    error = page.locator(".errorlist").first
    error.wait_for()
    assert "200" in error.inner_text()  # "less than or equal to 200", next to the field
    page.fill("#id_min_title_length", "12")
    page.click("input[name=_save]")
    page.wait_for_url("**/change/")
    assert "Settings of course-validator saved" in page.locator(".messagelist").text_content()

    # The plugin's behaviour changed at once: a 6-character title is refused on the course form.
    page.goto(f"{url}/admin/courses/course/add/")
    page.fill("#id_title", "Pythón")
    page.fill("#id_name", "python-short")
    page.fill("#id_description", "An introduction.")
    page.click("input[name=_save]")
    page.locator(".errornote, .errorlist").first.wait_for()
    assert "at least 12 characters" in page.locator("#content-main").inner_text()
    assert not page.url.endswith("/admin/courses/course/")

    # A long enough title is accepted.
    page.fill("#id_title", "Python for everyone")
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/courses/course/")
    assert "Python for everyone" in page.locator("#result_list").inner_text()

    # The hook inspector shows the plugin's function on the hook it ran on, with its calls.
    page.goto(f"{url}/admin/course_plugins/plugin/")
    page.get_by_role("link", name="Hook inspector").click()
    page.wait_for_url("**/inspector/")
    table = page.locator(".cp-inspector-table", has_text="before-course-save").first
    assert "course-validator@1.0.0" in table.inner_text()
    _shot(page, "hook-inspector.png")


def test_operator_switches_one_function_off_from_the_inspector(browser, site, tmp_path, settings):
    """The inspector's switch: confirm, see the function marked off, and it no longer runs."""
    import shutil as _shutil

    from course_plugins.site import control, runtime
    from example_project.courses.models import Course

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"
    folder = tmp_path / "plugins"
    for name in ("ctl-shout", "ctl-guard"):
        _shutil.copytree(fixtures / name, folder / name)
    locmem = "django.core.cache.backends.locmem.LocMemCache"
    settings.CACHES = {**settings.CACHES, "runs": {"BACKEND": locmem, "LOCATION": str(folder)}}
    settings.COURSE_PLUGINS = {
        **settings.COURSE_PLUGINS, "PLUGIN_DIRS": [str(folder)], "RUNS_CACHE": "runs"
    }
    runtime.reset()
    control.reset()
    runtime.start()
    runtime.activate("ctl-shout")
    runtime.activate("ctl-guard")
    Course.objects.create(name="before", title="before the switch")

    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    page.set_default_timeout(15_000)
    page.goto(f"{site.url}/admin/login/?next=/admin/course_plugins/plugin/inspector/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/inspector/")

    row = page.locator("tr.cp-function", has_text="ctl-shout:shout")
    assert "ctl-shout@1.0.0" in row.inner_text()
    row.get_by_role("button", name="Switch off").click()
    page.wait_for_url("**/inspector/function/")
    assert "ctl-shout:shout" in page.locator("#content-main").inner_text()
    page.get_by_role("button", name="Yes, switch it off").click()
    page.wait_for_url("**/inspector/**")
    assert "switched off" in page.locator(".messagelist").text_content()
    row = page.locator("tr.cp-function", has_text="ctl-shout:shout")
    assert "off" in row.locator(".cp-badge--off").inner_text()
    assert row.get_by_role("button", name="Switch on").is_visible()
    page.locator("details.cp-runs summary").first.click()
    _shot(page, "hook-inspector-switch.png")
    if os.environ.get("CONTROL_SHOT"):
        page.screenshot(path=os.environ["CONTROL_SHOT"], full_page=True)

    assert Course.objects.create(name="after", title="after the switch").title == "after the switch"
    control.reset()
