"""drf-spectacular's ``AutoSchema`` plus every error answer the views really give.

It adds to each operation the error responses its decorators do not declare: 401/403 (who may
call), 404 (a path with a name, or a page), 400, 413 and 415 (a request body), 503 with
``Retry-After`` (the database or another service is down). The course_plugins views use it; a
project can make it the default for its own views::

    REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "course_plugins.rest.openapi.AutoSchema"}

(A module of its own, importing nothing of DRF's views: DRF imports ``DEFAULT_SCHEMA_CLASS`` while
its views are being defined.)
"""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi

__all__ = ["ERROR_SCHEMA", "FIELD_ERRORS_SCHEMA", "SETTINGS_BODY_SCHEMA", "AutoSchema"]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
"""``{"detail": "..."}``: what every error but a validation error answers."""

FIELD_ERRORS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Validation errors: a list of messages per field (``non_field_errors`` for "
    "the body as a whole), or ``detail`` (and ``hook`` for a plugin's veto).",
    "additionalProperties": {
        "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
    },
}
"""A 400: ``{"field": ["message", ...]}`` or ``{"detail": "...", "hook": "..."}``."""

_SCALAR = [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]
SETTINGS_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Setting name -> value, as the plugin's settings_schema declares it (a "
    "string, number, boolean or list of them; null reverts to the default). Names not "
    "declared and values that do not fit are refused with a 400 naming each field.",
    "additionalProperties": {
        "nullable": True,
        "oneOf": [*_SCALAR, {"type": "array", "items": {"oneOf": _SCALAR}}],
    },
}
"""The body of ``PATCH /plugins/<name>/settings/`` and what GET answers."""

_ERRORS = {
    "400": ("The request body is not valid (malformed JSON, nesting, NUL characters, lone "
            "surrogates, or values refused).", FIELD_ERRORS_SCHEMA),
    "401": ("Not authenticated.", ERROR_SCHEMA),
    "403": ("Not allowed: staff with the course_plugins permissions only.", ERROR_SCHEMA),
    "404": ("Not found.", ERROR_SCHEMA),
    "413": ("The request body is over the size limit.", ERROR_SCHEMA),
    "415": ("Unsupported media type: send application/json.", ERROR_SCHEMA),
    "503": ("The database (or another service the site needs) is unavailable; try again after "
            "Retry-After seconds.", ERROR_SCHEMA),
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema generator, with the error responses each operation can give."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        codes = ["401", "403", "503"]
        if "{" in self.path or self._get_paginator() is not None:
            codes.append("404")
        if self._get_paginator() is not None and self.method == "GET":
            codes.append("400")  # a page size out of bounds
        if self.method in ("POST", "PUT", "PATCH"):
            codes += ["400", "413", "415"]
        for code in codes:
            if code in responses:
                continue
            description, schema = _ERRORS[code]
            responses[code] = {
                "description": description,
                "content": {"application/json": {"schema": schema}},
            }
            if code == "503":
                responses[code]["headers"] = _RETRY_AFTER
        return responses
