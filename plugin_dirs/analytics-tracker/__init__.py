"""Analytics tracker: per-day and per-course counts of platform events, with daily roll-ups.

Every event matching ``tracked_patterns`` is counted (in a Celery worker unless ``background`` is
off) and merged into the plugin's storage under ``day:<YYYY-MM-DD>`` as ``{"total", "events":
{name: n}, "courses": {id: {name: n}}}`` with ``api.storage.update``, an atomic read-modify-write,
so web processes and workers counting at the same time lose nothing; with ``forward_events`` it is
also recorded through ``api.analytics.track_event``. A repeating schedule (``rollup``, every
``rollup_interval_seconds``) writes ``summary:<date>`` for each finished day, records it as the
``analytics.daily_summary`` analytics event (with ``forward_events``) and deletes raw days older
than ``retention_days``.
"""

from __future__ import annotations

import datetime
import threading
from typing import Any

DAY_PREFIX = "day:"
SUMMARY_PREFIX = "summary:"
SUMMARY_EVENT = "analytics.daily_summary"

# The plugin's api, kept at module level for the scheduled ``rollup`` (called with no arguments).
_api: Any = None
# Counts not yet merged into storage: {day: {"events": {...}, "courses": {...}}}. Guarded by a
# thread lock because handlers may run in several threads; only one merge runs at a time.
_pending: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()
_merging = False


def matches(pattern: str, name: str) -> bool:
    """Event pattern matching: ``*`` is one dot-separated part, ``**`` any number (zero too)."""

    def match(p: list[str], n: list[str]) -> bool:
        if not p:
            return not n
        if p[0] == "**":
            return any(match(p[1:], n[i:]) for i in range(len(n) + 1))
        return bool(n) and (p[0] == "*" or p[0] == n[0]) and match(p[1:], n[1:])

    return match(pattern.split("."), name.split("."))


def course_of(name: str, data: dict[str, Any]) -> Any:
    """The course an event is about: ``course_id``, or ``id`` for ``course.*`` events."""
    if data.get("course_id") is not None:
        return data["course_id"]
    if name.startswith("course."):
        return data.get("id")
    return None


def count(name: str, data: dict[str, Any], day: str) -> None:
    """Add one event to the in-memory counts of ``day``."""
    course = course_of(name, data)
    with _lock:
        bucket = _pending.setdefault(day, {"events": {}, "courses": {}})
        bucket["events"][name] = bucket["events"].get(name, 0) + 1
        if course is not None:
            per_course = bucket["courses"].setdefault(str(course), {})
            per_course[name] = per_course.get(name, 0) + 1


def _take_pending() -> dict[str, dict[str, Any]] | None:
    global _merging, _pending
    with _lock:
        if _merging or not _pending:
            return None
        _merging = True
        taken, _pending = _pending, {}
        return taken


def _merge_into(stored: dict[str, Any] | None, bucket: dict[str, Any]) -> dict[str, Any]:
    day = stored or {"total": 0, "events": {}, "courses": {}}
    for name, n in bucket["events"].items():
        day["events"][name] = day["events"].get(name, 0) + n
        day["total"] += n
    for course, names in bucket["courses"].items():
        per_course = day["courses"].setdefault(course, {})
        for name, n in names.items():
            per_course[name] = per_course.get(name, 0) + n
    return day


def _merger(bucket: dict[str, Any]) -> Any:
    """The ``api.storage.update`` function adding ``bucket`` to a stored day."""
    return lambda stored: _merge_into(stored, bucket)


async def flush(api: Any) -> int:
    """Merge the in-memory counts into storage; returns how many days were written.

    Only one flush runs at a time in a process; counts arriving meanwhile wait for the next one.
    Other processes flush at the same time: each day is merged with ``api.storage.update``, so
    no process overwrites what another one just added.
    """
    global _merging
    taken = _take_pending()
    if taken is None:
        return 0
    written = len(taken)
    try:
        for day in sorted(taken):
            await api.storage.update(DAY_PREFIX + day, _merger(taken[day]))
            del taken[day]  # merged: not to be counted again if a later day fails
    except Exception:
        # Keep the counts not merged yet for the next flush rather than losing them to a
        # storage hiccup.
        with _lock:
            for day, bucket in taken.items():
                again = _pending.setdefault(day, {"events": {}, "courses": {}})
                _merge_counts(again, bucket)
        raise
    finally:
        with _lock:
            _merging = False
    return written


def _merge_counts(into: dict[str, Any], bucket: dict[str, Any]) -> None:
    for name, n in bucket["events"].items():
        into["events"][name] = into["events"].get(name, 0) + n
    for course, names in bucket["courses"].items():
        per_course = into["courses"].setdefault(course, {})
        for name, n in names.items():
            per_course[name] = per_course.get(name, 0) + n


def summarize(day: str, stored: dict[str, Any], top: int = 5) -> dict[str, Any]:
    """The summary of one day's counts: total, busiest events and courses."""
    events = sorted(stored.get("events", {}).items(), key=lambda kv: (-kv[1], kv[0]))
    courses = sorted(
        ((course, sum(names.values())) for course, names in stored.get("courses", {}).items()),
        key=lambda kv: (-kv[1], kv[0]),
    )
    return {
        "date": day,
        "total": stored.get("total", 0),
        "events": dict(events),
        "top_events": [name for name, _ in events[:top]],
        "top_courses": [{"course_id": c, "events": n} for c, n in courses[:top]],
    }


def _store_once(value: Any, claimed: list[bool]) -> Any:
    """An ``api.storage.update`` function that stores ``value`` only where nothing is stored yet,
    and says so in ``claimed``."""

    def update(current: Any) -> Any:
        if current is not None:
            return current
        claimed.append(True)
        return value

    return update


async def rollup_now(api: Any, today: datetime.date | None = None) -> list[str]:
    """Summarize every finished day not summarized yet and prune old raw days.

    Returns the dates summarized (ISO strings, oldest first).
    """
    await flush(api)
    today = today or datetime.datetime.now(datetime.UTC).date()
    keep_from = today - datetime.timedelta(days=int(api.config.get("retention_days", default=30)))
    keys = set(await api.storage.keys())
    done: list[str] = []
    for key in sorted(k for k in keys if k.startswith(DAY_PREFIX)):
        day = key[len(DAY_PREFIX):]
        date = datetime.date.fromisoformat(day)
        if date >= today:
            continue
        if SUMMARY_PREFIX + day not in keys:
            summary = summarize(day, await api.storage.get(key) or {})
            claimed: list[bool] = []
            # Two processes may roll up at once: only the one that stores the summary forwards it.
            await api.storage.update(SUMMARY_PREFIX + day, _store_once(summary, claimed))
            if claimed:
                if api.config.get("forward_events", default=True):
                    await api.analytics.track_event(SUMMARY_EVENT, summary)
                done.append(day)
        if date < keep_from:
            await api.storage.delete(key)
    return done


async def rollup() -> None:
    """The scheduled job (module level, no arguments): roll up finished days."""
    if _api is None:
        return
    days = await rollup_now(_api)
    if days:
        _api.log.info("Rolled up %s", ", ".join(days))


def _tracked(api: Any, name: str) -> bool:
    patterns = api.config.get("tracked_patterns", default=[]) or []
    return any(matches(str(p), name) for p in patterns)


def activate(api: Any) -> None:
    """Count events and schedule the daily roll-up."""
    global _api
    _api = api

    # In the background (a Celery worker on the site) counting never slows a request down.
    @api.events.subscribe("**", background=bool(api.config.get("background", default=True)))
    async def on_event(event: Any) -> None:
        if not _tracked(api, event.name):
            return
        data = event.data if isinstance(event.data, dict) else {}
        count(event.name, data, event.timestamp.date().isoformat())
        if api.config.get("forward_events", default=True):
            # With the event's id: a redelivered event (a retry) is recorded once.
            await api.analytics.track_event(event.name, data, event_id=event.id)
        await flush(api)

    api.schedule(rollup, delay_seconds=int(api.config.get("rollup_interval_seconds", default=3600)),
                 repeat=True)


def deactivate(api: Any) -> None:
    """Forget the api; counts already merged stay in storage."""
    global _api
    _api = None
