"""The REST API's exception handler: every error is a JSON answer with the right status.

- a plugin's veto (a Django ``ValidationError`` from the signal bridge): 400 with its messages;
- a value the database cannot store (``DataError``, e.g. a NUL character): 400;
- the database (or the broker or cache) unreachable: 503 with ``Retry-After``;
- a body over the limit (Django's ``RequestDataTooBig``): 413;
- anything else DRF does not handle: a JSON 500 (logged, and reported to Django's
  ``got_request_exception`` like any server error).

Set it in settings::

    REST_FRAMEWORK = {"EXCEPTION_HANDLER": "course_plugins.rest.exceptions.exception_handler"}
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.signals import got_request_exception
from django.db import DataError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from course_plugins.core.options import options

logger = logging.getLogger("course_plugins.rest")

RETRY_AFTER_SECONDS = 5
"""What a 503 tells clients to wait before trying again."""


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus the cases above (see the module docstring)."""
    if isinstance(exc, DjangoValidationError):
        detail: Any = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        response = drf_exception_handler(exceptions.ValidationError(detail), context)
        hook = getattr(exc, "hook", None)
        if response is not None and hook and isinstance(response.data, dict | list):
            data = response.data if isinstance(response.data, dict) else {"detail": response.data}
            data["hook"] = hook
            response.data = data
        return response
    if isinstance(exc, DataError):
        return Response(
            {"detail": f"The database cannot store a value of this request: {exc}".strip()},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": str(exc)}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if is_infrastructure_error(exc):
        logger.warning(
            "Service unavailable for %s: %s: %s", _path(context), type(exc).__name__, exc
        )
        return Response(
            {"detail": "A service the site needs (database, broker or cache) is unavailable; "
             "try again shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    request = context.get("request")
    logger.error("Server error in %s", _path(context), exc_info=exc)
    got_request_exception.send(sender=None, request=getattr(request, "_request", request))
    return Response({"detail": "Server error."}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)


def is_infrastructure_error(exc: BaseException) -> bool:
    """Whether ``exc`` means a service of the site is down (``options.infrastructure_errors``,
    which ``conf.py`` fills with the database, broker and cache connection errors)."""
    from django.db import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError, *options.infrastructure_errors))


def _path(context: dict[str, Any]) -> str:
    request = context.get("request")
    return getattr(request, "path", "?")
