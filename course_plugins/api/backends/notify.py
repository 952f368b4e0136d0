"""Default notify backend of the Platform API: ``Notification`` rows and Django's mail."""

from __future__ import annotations

from typing import Any

from course_plugins.exceptions import PlatformAPIError


class DjangoNotifyBackend:
    """In-site notifications as ``course_plugins.models.Notification``; e-mail via ``send_mail``."""

    def send_to_user(
        self, user_id: Any, title: str, message: str = "", *, plugin: str | None = None
    ) -> int:
        """Store a notification for the user; returns its id.

        Raises ``PlatformAPIError`` when the user does not exist or the title is empty/too long.
        """
        from django.contrib.auth import get_user_model

        from course_plugins.models import Notification

        title, message = _text(title, "title", plugin, 200), _text(message, "message", plugin)
        if not title:
            raise PlatformAPIError(plugin, "send_to_user: the title must not be empty")
        try:
            user = get_user_model()._default_manager.filter(pk=user_id).first()
        except (ValueError, TypeError):
            user = None
        if user is None:
            raise PlatformAPIError(plugin, f"send_to_user: there is no user with id {user_id!r}")
        note = Notification.objects.create(
            user=user, title=title, message=message, plugin=plugin or ""
        )
        return note.pk

    def send_email(self, email: str, subject: str, body: str, *, plugin: str | None = None) -> int:
        """Send one e-mail from ``DEFAULT_FROM_EMAIL``; returns the number sent (1).

        Raises ``PlatformAPIError`` for an invalid address or a subject with a line break.
        """
        from django.conf import settings
        from django.core.exceptions import ValidationError
        from django.core.mail import send_mail
        from django.core.validators import validate_email

        subject, body = _text(subject, "subject", plugin, 998), _text(body, "body", plugin)
        try:
            validate_email(email)
        except ValidationError:
            raise PlatformAPIError(
                plugin, f"send_email: {email!r} is not a valid e-mail address"
            ) from None
        if "\n" in subject or "\r" in subject:
            raise PlatformAPIError(plugin, "send_email: the subject must be a single line")
        return send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [email])


def _text(value: Any, what: str, plugin: str | None, limit: int | None = None) -> str:
    if not isinstance(value, str):
        raise PlatformAPIError(plugin, f"the {what} must be a string, got {type(value).__name__}")
    if limit is not None and len(value) > limit:
        raise PlatformAPIError(plugin, f"the {what} is longer than {limit} characters")
    return value
