"""DRF exception handler that answers a plugin's veto (a Django ``ValidationError``) with a 400."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus: a Django ``ValidationError`` becomes a 400 with its messages.

    The signal bridge raises ``PluginVeto`` (a Django ``ValidationError``) from ``pre_save`` when
    a plugin refuses a change; DRF alone would answer 500. Set it in settings::

        REST_FRAMEWORK = {"EXCEPTION_HANDLER": "course_plugins.rest.exceptions.exception_handler"}
    """
    if isinstance(exc, DjangoValidationError):
        detail: Any = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        response = drf_exception_handler(exceptions.ValidationError(detail), context)
        hook = getattr(exc, "hook", None)
        if response is not None and hook and isinstance(response.data, dict | list):
            data = response.data if isinstance(response.data, dict) else {"detail": response.data}
            data["hook"] = hook
            response.data = data
        return response
    return drf_exception_handler(exc, context)
