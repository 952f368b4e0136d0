"""analytics-tracker: per-day / per-course counts (concurrent ones too), forwarding, and the
scheduled daily roll-up."""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from pathlib import Path

import pytest

from course_plugins.api.platform_api import Services
from course_plugins.testing import load_plugin

PLUGIN = Path(__file__).resolve().parent.parent
QUIET = {"forward_events": False}  # no analytics backend needed


def today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def test_counts_events_per_day_and_per_course():
    with load_plugin(PLUGIN, settings=QUIET) as loaded:
        loaded.publish("course.created", {"id": 5, "name": "intro"})
        loaded.publish("quiz.graded", {"course_id": 5, "score": 80})
        loaded.publish("quiz.graded", {"course_id": 6, "score": 40})
        loaded.publish("user.login", {"user_id": 1})
        loaded.publish("billing.invoice_paid", {"id": 9})  # not a tracked pattern
        day = loaded.api.storage.get_sync(f"day:{today()}")
    assert day == {
        "total": 4,
        "events": {"course.created": 1, "quiz.graded": 2, "user.login": 1},
        "courses": {"5": {"course.created": 1, "quiz.graded": 1}, "6": {"quiz.graded": 1}},
    }


def test_tracked_patterns_are_a_setting():
    with load_plugin(PLUGIN, settings={**QUIET, "tracked_patterns": ["billing.**"]}) as loaded:
        loaded.publish("billing.invoice.paid", {"course_id": 2})
        loaded.publish("course.created", {"id": 5})
        day = loaded.api.storage.get_sync(f"day:{today()}")
    assert day["events"] == {"billing.invoice.paid": 1}


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("course.*", "course.created", True),
        ("course.*", "course", False),
        ("course.*", "course.a.b", False),
        ("*.created", "user.created", True),
        ("**", "a.b.c", True),
        ("a.**", "a", True),
        ("a.**.z", "a.b.c.z", True),
        ("a.**.z", "a.b.c", False),
    ],
)
def test_pattern_matching_follows_the_event_bus_rules(pattern, name, expected):
    with load_plugin(PLUGIN, settings=QUIET, activate=False) as loaded:
        assert loaded.module.matches(pattern, name) is expected


def test_subscribes_to_everything_and_schedules_the_roll_up():
    with load_plugin(PLUGIN, settings={**QUIET, "rollup_interval_seconds": 600}) as loaded:
        registered = loaded.registrations()
        assert registered["events"] == {"**": ["on_event"]}
        [schedule] = registered["schedules"]
        assert (schedule["function"], schedule["delay_seconds"], schedule["repeat"]) == (
            "rollup", 600.0, True
        )
        loaded.deactivate()
        assert loaded.registrations() == {"hooks": {}, "events": {}, "schedules": []}


@pytest.mark.parametrize("background", [True, False])
def test_delivery_in_the_background_is_a_setting(background):
    with load_plugin(PLUGIN, settings={**QUIET, "background": background}) as loaded:
        [subscription] = [s for s in loaded.bus.describe() if s["pattern"] == "**"]
        assert [h["background"] for h in subscription["handlers"]] == [background]


def test_roll_up_summarizes_finished_days_once_and_prunes_old_ones():
    raw = {
        "total": 3,
        "events": {"quiz.graded": 2, "course.viewed": 1},
        "courses": {"7": {"quiz.graded": 2}, "8": {"course.viewed": 1}},
    }
    storage = {"day:2026-01-01": raw, "day:2026-01-09": raw, "day:2026-01-10": raw}
    settings = {**QUIET, "retention_days": 5}
    with load_plugin(PLUGIN, settings=settings, storage=storage) as loaded:
        module, api = loaded.module, loaded.api
        done = asyncio.run(module.rollup_now(api, today=datetime.date(2026, 1, 10)))
        assert done == ["2026-01-01", "2026-01-09"]  # today is not finished yet
        summary = api.storage.get_sync("summary:2026-01-01")
        assert summary == {
            "date": "2026-01-01",
            "total": 3,
            "events": {"quiz.graded": 2, "course.viewed": 1},
            "top_events": ["quiz.graded", "course.viewed"],
            "top_courses": [{"course_id": "7", "events": 2}, {"course_id": "8", "events": 1}],
        }
        keys = api.storage.keys_sync()
        assert "day:2026-01-01" not in keys  # older than retention_days, summarized first
        assert {"day:2026-01-09", "day:2026-01-10"} <= set(keys)
        assert asyncio.run(module.rollup_now(api, today=datetime.date(2026, 1, 10))) == []


def test_a_summary_another_process_stored_meanwhile_is_kept_and_not_forwarded_again():
    theirs = {"date": "2026-01-01", "total": 99}
    # Trusted: the test hands the plugin's helper a list of this process to fill in.
    with load_plugin(PLUGIN, settings=QUIET, storage={"summary:2026-01-01": theirs},
                     trusted=True) as loaded:
        module, storage = loaded.module, loaded.api.storage
        claimed: list[bool] = []
        ours = {"date": "2026-01-01", "total": 1}
        stored = storage.update_sync("summary:2026-01-01", module._store_once(ours, claimed))
        assert stored == theirs
        assert claimed == []  # not ours to forward
        assert storage.update_sync("summary:2026-01-02", module._store_once(ours, claimed)) == ours
        assert claimed == [True]


def test_the_scheduled_job_really_runs():
    storage = {"day:2020-05-01": {"total": 1, "events": {"user.login": 1}, "courses": {}}}
    settings = {**QUIET, "rollup_interval_seconds": 1}
    with load_plugin(PLUGIN, settings=settings, storage=storage) as loaded:
        deadline = time.monotonic() + 15
        while loaded.api.storage.get_sync("summary:2020-05-01") is None:
            assert time.monotonic() < deadline, "the roll-up did not run within 15 s"
            time.sleep(0.05)
        assert loaded.api.storage.get_sync("summary:2020-05-01")["total"] == 1


@pytest.mark.django_db(transaction=True)
def test_forwards_tracked_events_to_the_analytics_backend():
    from course_plugins.models import AnalyticsEvent, PluginStorage

    with load_plugin(PLUGIN, services=Services.django()) as loaded:
        loaded.publish("video.watched", {"content_id": 3, "course_id": 1, "seconds": 30})
        loaded.publish("billing.paid", {})
    forwarded = list(AnalyticsEvent.objects.values_list("name", "plugin", "properties"))
    assert forwarded == [
        ("video.watched", "analytics-tracker@1.0.0",
         {"content_id": 3, "course_id": 1, "seconds": 30}),
    ]
    stored = PluginStorage.objects.get(plugin="analytics-tracker", key=f"day:{today()}")
    assert stored.value["events"] == {"video.watched": 1}


@pytest.mark.django_db(transaction=True)
def test_two_instances_counting_at_once_lose_nothing():
    """Two loads of the plugin (own module state each, as two processes have) count at the same
    time into one database: every event ends up in the day's totals."""
    services, times = Services.django(), 60
    with (
        load_plugin(PLUGIN, settings=QUIET, services=services) as one,
        load_plugin(PLUGIN, settings=QUIET, services=services) as two,
    ):
        assert one.module is not two.module
        start = threading.Barrier(2)

        def count(loaded, name):
            start.wait()
            for i in range(times):
                loaded.publish(name, {"course_id": i % 3})

        threads = [
            threading.Thread(target=count, args=(one, "quiz.graded")),
            threading.Thread(target=count, args=(two, "video.watched")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        day = one.api.storage.get_sync(f"day:{today()}")
    assert day["total"] == 2 * times
    assert day["events"] == {"quiz.graded": times, "video.watched": times}
    assert day["courses"]["0"] == {"quiz.graded": times // 3, "video.watched": times // 3}
