"""Default notify backend of the Platform API: ``Notification`` rows and Django's mail.

A site that never configured mail (Django's defaults: SMTP to ``localhost:25``) has nowhere to
send e-mail. ``send_email`` then sends nothing and returns 0, and the process logs one warning
naming the settings to set (check ``course_plugins.W007`` says it before): the missing mail
server is the site's to fix, not an error of the plugin that counts towards its quarantine.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from course_plugins.exceptions import PlatformAPIError

logger = logging.getLogger("course_plugins.notify")

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
_warned = threading.Event()  # one warning per process about the unconfigured mail server


def mail_configured() -> bool:
    """Whether the site says where e-mail goes: an ``EMAIL_BACKEND`` other than Django's SMTP
    one, or SMTP settings other than Django's defaults (``localhost:25``, no user)."""
    from django.conf import settings

    return not (
        settings.EMAIL_BACKEND == SMTP_BACKEND
        and settings.EMAIL_HOST == "localhost"
        and int(settings.EMAIL_PORT) == 25
        and not settings.EMAIL_HOST_USER
    )


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
        """Send one e-mail from ``DEFAULT_FROM_EMAIL``; returns the number sent (1, or 0 when the
        site has no mail server configured and none answers at Django's default
        ``localhost:25``: see the module docstring).

        Raises ``PlatformAPIError`` for an invalid address or a subject with a line break, and
        what Django's mail raises when the configured mail server fails.
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
        try:
            return send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [email])
        except OSError as exc:  # socket errors and smtplib.SMTPException
            if mail_configured():
                raise
            _unconfigured(plugin, exc)
            return 0


def _unconfigured(plugin: str | None, exc: OSError) -> None:
    if _warned.is_set():
        logger.debug("E-mail of plugin %s not sent: no mail server is configured", plugin)
        return
    _warned.set()
    logger.warning(
        "E-mail of plugin %s not sent: this site has no mail server configured (EMAIL_BACKEND "
        "is Django's SMTP backend with its default EMAIL_HOST 'localhost' and EMAIL_PORT 25, "
        "and nothing answered there: %s: %s). Set EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, "
        "EMAIL_HOST_PASSWORD and EMAIL_USE_TLS for your mail server, or EMAIL_BACKEND (e.g. "
        "'django.core.mail.backends.console.EmailBackend' during development). Until then "
        "api.notify.send_email sends nothing and returns 0; this is said once per process.",
        plugin or "?", type(exc).__name__, exc,
    )


def _text(value: Any, what: str, plugin: str | None, limit: int | None = None) -> str:
    if not isinstance(value, str):
        raise PlatformAPIError(plugin, f"the {what} must be a string, got {type(value).__name__}")
    if limit is not None and len(value) > limit:
        raise PlatformAPIError(plugin, f"the {what} is longer than {limit} characters")
    return value
