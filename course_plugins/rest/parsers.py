"""A JSON parser that answers bad bodies with a 400 or 413 instead of a server error.

DRF's own parser lets through what the database or the server then fails on: a NUL character
(PostgreSQL cannot store it), a lone surrogate (not encodable as UTF-8), JSON nested so deep that
decoding it raises ``RecursionError``, and bodies of any size. This one refuses each of them with
a clear message; set it for the API with::

    REST_FRAMEWORK = {"DEFAULT_PARSER_CLASSES": ["course_plugins.rest.parsers.JSONParser"]}

(the course_plugins views use it whatever the setting says).
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework import parsers as drf_parsers

__all__ = ["MAX_BODY_BYTES", "MAX_DEPTH", "JSONParser", "PayloadTooLarge", "check_json_data"]

MAX_DEPTH = 32
"""Deepest nesting of arrays/objects accepted in a request body."""

MAX_BODY_BYTES = 1024 * 1024
"""Largest JSON body accepted (bytes) unless ``DATA_UPLOAD_MAX_MEMORY_SIZE`` says less."""


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


def body_limit() -> int:
    """Bytes a JSON body may have: ``MAX_BODY_BYTES``, or Django's upload limit if lower."""
    django_limit = getattr(settings, "DATA_UPLOAD_MAX_MEMORY_SIZE", None)
    return min(MAX_BODY_BYTES, django_limit) if django_limit else MAX_BODY_BYTES


def check_json_data(data: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``ParseError`` if ``data`` nests deeper than ``max_depth`` or holds text that cannot
    be stored (NUL characters, lone surrogates) in a key or a string. Iterative: no recursion."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict | list):
            if depth > max_depth:
                raise exceptions.ParseError(
                    f"JSON parse error - nested more than {max_depth} levels deep."
                )
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_text(key)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise exceptions.ParseError("JSON parse error - NUL characters (\\u0000) are not accepted.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise exceptions.ParseError(
            "JSON parse error - lone surrogate characters (\\ud800-\\udfff) are not accepted."
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class JSONParser(drf_parsers.JSONParser):
    """DRF's JSON parser, bounded: size (413), depth, NUL and lone surrogates (400)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        parser_context = parser_context or {}
        request = parser_context.get("request")
        limit = body_limit()
        try:
            declared = int((request.META if request is not None else {}).get("CONTENT_LENGTH") or 0)
        except (TypeError, ValueError):
            declared = 0
        if declared > limit:
            raise PayloadTooLarge(
                f"The request body is {declared:,} bytes; at most {limit:,} are accepted."
            )
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"The request body is over {limit:,} bytes.")
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(raw, encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            raise exceptions.ParseError(
                f"JSON parse error - nested more than {MAX_DEPTH} levels deep."
            ) from None
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        check_json_data(data)
        return data
