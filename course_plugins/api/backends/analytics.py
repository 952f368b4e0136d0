"""Default analytics backend of the Platform API: one ``AnalyticsEvent`` row per event."""

from __future__ import annotations

import json
from typing import Any

from django.db import IntegrityError, transaction

from course_plugins.api.current_user import get_current_user
from course_plugins.exceptions import PlatformAPIError


class ModelAnalyticsBackend:
    """Writes ``course_plugins.models.AnalyticsEvent``; the user defaults to the current one."""

    def track_event(
        self,
        name: str,
        properties: dict[str, Any] | None = None,
        *,
        plugin: str | None = None,
        user_id: Any = None,
        event_id: str | None = None,
    ) -> int:
        """Record an event; returns its id.

        With ``event_id`` (the platform event that caused it, e.g. ``event.id`` in a handler),
        the event is recorded once per plugin and event id: recording it again (a redelivered
        background event) returns the id of the first row and writes nothing.

        Raises ``PlatformAPIError`` when the name is empty/too long or the properties are not a
        JSON object.
        """
        from course_plugins.models import AnalyticsEvent

        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise PlatformAPIError(
                plugin, f"track_event: the name must be 1-200 characters, got {name!r}"
            )
        properties = {} if properties is None else properties
        if not isinstance(properties, dict):
            raise PlatformAPIError(plugin, "track_event: properties must be a dict")
        try:
            properties = json.loads(json.dumps(properties, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise PlatformAPIError(
                plugin, f"track_event: properties must be JSON data: {exc}"
            ) from None
        if user_id is None:
            user = get_current_user()
            if user is not None and getattr(user, "is_authenticated", False):
                user_id = user.pk
        fields = {
            "name": name,
            "properties": properties,
            "plugin": plugin or "",
            "user_id": "" if user_id is None else str(user_id),
        }
        if event_id is None:
            return AnalyticsEvent.objects.create(**fields).pk
        event_id = str(event_id)[:64]
        try:
            with transaction.atomic():
                return AnalyticsEvent.objects.create(event_id=event_id, **fields).pk
        except IntegrityError:
            existing = AnalyticsEvent.objects.get(plugin=plugin or "", event_id=event_id)
            return existing.pk
