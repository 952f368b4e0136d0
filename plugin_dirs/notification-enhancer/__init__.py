"""Notification enhancer: routes platform notifications by each user's preference.

Subscribes to ``user.enrolled``, ``quiz.graded`` and ``course.published`` and sends one message
per event through ``api.notify``: in the site, by e-mail, or both. A user's preference is kept in
the plugin's storage under ``prefs:<user_id>`` (``{"channel": "site"|"email"|"both", "quiet":
bool}``) and is set by publishing ``notifications.preferences`` with ``user_id`` and the fields to
change. A quiet user, or the site-wide ``quiet_mode`` setting, gets in-site notifications only.
Counts of what was sent are kept under ``stats``.
"""

from __future__ import annotations

from typing import Any

CHANNELS = ("site", "email", "both")
STATS_KEY = "stats"


def _field(obj: Any, name: str) -> Any:
    """Read ``name`` from a dict or an object (backends may return either)."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def route(preference: dict[str, Any], default_channel: str, quiet_mode: bool) -> tuple[str, ...]:
    """Return the channels to use: a subset of ``("site", "email")``, in that order."""
    channel = preference.get("channel") if preference.get("channel") in CHANNELS else None
    channel = channel or (default_channel if default_channel in CHANNELS else "site")
    if quiet_mode or preference.get("quiet"):
        return ("site",)
    return {"site": ("site",), "email": ("email",), "both": ("site", "email")}[channel]


def _pref_key(user_id: Any) -> str:
    return f"prefs:{user_id}"


async def preference(api: Any, user_id: Any) -> dict[str, Any]:
    """Return the stored preference of ``user_id`` (empty dict when none)."""
    return await api.storage.get(_pref_key(user_id)) or {}


async def set_preference(api: Any, user_id: Any, **changes: Any) -> dict[str, Any]:
    """Change ``channel`` and/or ``quiet`` for ``user_id``; returns the stored preference.

    Raises ``ValueError`` for an unknown channel or field.
    """
    unknown = set(changes) - {"channel", "quiet"}
    if unknown:
        raise ValueError(f"Unknown notification preference(s): {', '.join(sorted(unknown))}.")
    if "channel" in changes and changes["channel"] not in CHANNELS:
        allowed = ", ".join(CHANNELS)
        raise ValueError(f"Channel must be one of {allowed}, not {changes['channel']!r}.")
    applied = {k: (bool(v) if k == "quiet" else v) for k, v in changes.items()}

    def change(current: dict[str, Any] | None) -> dict[str, Any]:
        return {**(current or {}), **applied}

    # Atomic: two changes of one user's preference at once both apply.
    result: dict[str, Any] = await api.storage.update(_pref_key(user_id), change, {})
    return result


async def _email_of(api: Any, user_id: Any) -> str:
    """The e-mail address of ``user_id`` ('' when the user is unknown or has none)."""
    user = await api.users.get(user_id)
    return str(_field(user, "email") or "") if user else ""


async def deliver(api: Any, user_id: Any, title: str, message: str) -> list[str]:
    """Send one notification to ``user_id`` on the routed channels; returns the channels used.

    An e-mail that cannot be addressed (no known address) falls back to an in-site notification.
    """
    channels = route(
        await preference(api, user_id),
        api.config.get("default_channel", default="site"),
        bool(api.config.get("quiet_mode", default=False)),
    )
    used: list[str] = []
    if "email" in channels:
        email = await _email_of(api, user_id)
        if email:
            await api.notify.send_email(email, title, message)
            used.append("email")
        elif "site" not in channels:
            channels = ("site",)
    if "site" in channels:
        await api.notify.send_to_user(user_id, title, message)
        used.append("site")
    if used:

        def count(stats: dict[str, Any] | None) -> dict[str, Any]:
            stats = stats or {}
            for channel in used:
                stats[channel] = stats.get(channel, 0) + 1
            return stats

        # Atomic read-modify-write: concurrent deliveries never lose a count.
        await api.storage.update(STATS_KEY, count, {})
    return used


async def _course_title(api: Any, course_id: Any) -> str:
    course = await api.courses.get(course_id) if course_id is not None else None
    return str(_field(course, "title") or "") or f"course #{course_id}"


def activate(api: Any) -> None:
    """Subscribe the three notifications and the preference event."""

    @api.events.subscribe("user.enrolled")
    async def on_enrolled(event: Any) -> None:
        title = await _course_title(api, event.data.get("course_id"))
        await deliver(
            api, event.data["user_id"], f"Welcome to {title}",
            f"You are enrolled in {title}. Enjoy the course!",
        )

    @api.events.subscribe("quiz.graded")
    async def on_graded(event: Any) -> None:
        score = float(event.data.get("score") or 0)
        passed = score >= float(api.config.get("pass_mark", default=60))
        course = await _course_title(api, event.data.get("course_id"))
        verdict = "passed" if passed else "not passed yet"
        await deliver(
            api, event.data["user_id"], f"Quiz result: {score:g}/100 ({verdict})",
            f"Your quiz in {course} was graded: {score:g}/100, {verdict}.",
        )

    @api.events.subscribe("course.published")
    async def on_published(event: Any) -> None:
        if not api.config.get("notify_course_published", default=True):
            return
        author = await api.users.get_current()
        if author is None:
            api.log.info("course.published without a signed-in author; nobody to tell")
            return
        title = event.data.get("title") or event.data.get("name")
        await deliver(
            api, _field(author, "id") or _field(author, "pk"), f"{title} is live",
            f"Your course {title} is now published and visible to learners.",
        )

    @api.events.subscribe("notifications.preferences")
    async def on_preferences(event: Any) -> None:
        data = dict(event.data or {})
        user_id = data.pop("user_id", None)
        if user_id is None:
            api.log.warning("notifications.preferences without user_id: %r", event.data)
            return
        try:
            await set_preference(api, user_id, **data)
        except ValueError as exc:
            api.log.warning("Ignored notification preferences for user %s: %s", user_id, exc)


def deactivate(api: Any) -> None:
    """Nothing to clean up: the platform removes the subscriptions."""
    api.log.debug("Notification enhancer deactivated")
