"""The plugin list at 1280 px with the admin's navigation sidebar open: every button is visible.

A real Chromium (the system's, through Playwright) renders the page; the test measures the
action buttons of each row against the page's visible area instead of trusting the CSS.
``SAVE_SCREENSHOTS=1`` writes ``var/screenshots/plugin-list-1280.png`` for a human to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from course_plugins.models import Plugin

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PASSWORD = "correct horse battery staple"
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@pytest.fixture
def chromium(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    try:
        from playwright import sync_api
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -e '.[test]')")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"Chromium not found at {CHROMIUM}, and REQUIRE_BROWSER=1")
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def plugin_rows(live_server, transactional_db):
    """Plugins in every state the list shows buttons for, with long hook and event names."""
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    common = {
        "author": "Course Creator Team",
        "hooks": ["before-course-save", "before-quiz-save", "after-content-generate"],
        "events": ["course.*", "quiz.submitted", "user.completed_course"],
        "manifest": {"settings_schema": {"n": {"type": "integer", "default": 1}}},
    }
    Plugin.objects.create(name="notification-enhancer", version="1.0.0", **common)
    Plugin.objects.create(
        name="analytics-tracker", version="1.0.0", enabled=True, status="active", **common
    )
    Plugin.objects.create(
        name="course-validator", version="1.0.0", enabled=True, status="faulted", **common
    )
    return live_server


def test_row_buttons_fit_at_1280_px_with_the_sidebar_open(chromium, plugin_rows):
    page = chromium.new_page(viewport={"width": 1280, "height": 800})
    page.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'true')")
    page.set_default_timeout(15_000)
    page.goto(f"{plugin_rows.url}/admin/login/?next=/admin/course_plugins/plugin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/course_plugins/plugin/")
    assert page.locator("#nav-sidebar").is_visible()
    if os.environ.get("SAVE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "plugin-list-1280.png"), full_page=True)

    width = page.evaluate("document.documentElement.clientWidth")
    # Nothing scrolls sideways, neither the page nor the table's own scroll box (the admin's
    # ".results" hides what does not fit behind a scroll bar).
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    results = page.locator("#changelist .results")
    assert results.evaluate("r => r.scrollWidth <= r.clientWidth")
    visible = results.bounding_box()
    assert visible is not None
    buttons = page.locator("#result_list .cp-actions .cp-button")
    assert buttons.count() >= 7  # Activate+Settings, Deactivate+Reload+Settings, x3 rows
    for i in range(buttons.count()):
        button = buttons.nth(i)
        box = button.bounding_box()
        assert box is not None, button.inner_text()
        assert box["x"] >= visible["x"], button.inner_text()
        assert box["x"] + box["width"] <= visible["x"] + visible["width"], button.inner_text()
        # The button's own text is not cut either.
        assert button.evaluate("b => b.scrollWidth <= b.clientWidth + 1"), button.inner_text()
