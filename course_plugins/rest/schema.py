"""The OpenAPI schema of the plugin API, whatever the project's ``DEFAULT_SCHEMA_CLASS`` is.

drf-spectacular only documents views whose schema is its own ``AutoSchema``, and asserts (a 500
at ``/api/schema/``) on any other. A project that never set
``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]`` gives every view DRF's schema class, including the
views of this app and the project's own. So:

- every view of this app carries drf-spectacular's ``AutoSchema`` itself (``schema =
  AutoSchema()``, ``@action(..., schema=AutoSchema())``, and :func:`documented` for ``APIView``
  methods that ``@extend_schema`` annotates: that decorator builds on the project's default class
  unless the method already names one);
- :class:`SchemaView` documents the views that carry a drf-spectacular schema (all of this app's,
  and the project's own when it uses drf-spectacular) and leaves the others out instead of
  failing.

``AutoSchema`` (from ``rest/openapi.py``) also documents every error answer (see there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from drf_spectacular import openapi
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.schemas.openapi import AutoSchema as DRFAutoSchema

from course_plugins.rest.openapi import (
    ERROR_SCHEMA,
    FIELD_ERRORS_SCHEMA,
    SETTINGS_BODY_SCHEMA,
    AutoSchema,
)
from course_plugins.rest.permissions import IsPluginStaff

__all__ = [
    "ERROR_SCHEMA",
    "FIELD_ERRORS_SCHEMA",
    "SETTINGS_BODY_SCHEMA",
    "AutoSchema",
    "DocsView",
    "PluginAPISchemaGenerator",
    "SchemaView",
    "documented",
]

F = TypeVar("F", bound=Callable[..., Any])

def documented(method: F) -> F:
    """Make ``@extend_schema`` (applied above this) build on drf-spectacular's ``AutoSchema``.

    For plain ``APIView`` methods; ``@action`` takes ``schema=AutoSchema()`` directly.
    """
    kwargs = getattr(method, "kwargs", None)
    if kwargs is None:
        method.kwargs = kwargs = {}  # type: ignore[attr-defined]
    kwargs.setdefault("schema", AutoSchema)
    return method


class PluginAPISchemaGenerator(SchemaGenerator):
    """Documents every endpoint whose view carries a drf-spectacular schema; skips the others."""

    def _get_paths_and_endpoints(self) -> list[Any]:
        # (path, path_regex, method, view); the view is built with its per-method schema here.
        return [
            endpoint
            for endpoint in super()._get_paths_and_endpoints()
            if _spectacular_only(getattr(endpoint[3], "schema", None))
        ]


def _spectacular_only(schema: Any) -> bool:
    # drf-spectacular's own views (schema, Swagger UI) were annotated at import time on top of
    # the project's default class: a schema mixing in DRF's AutoSchema cannot document itself.
    return isinstance(schema, openapi.AutoSchema) and not isinstance(schema, DRFAutoSchema)


class SchemaView(SpectacularAPIView):
    """``GET /api/schema/``: the OpenAPI document, for the same staff as the API itself."""

    schema = AutoSchema()
    generator_class = PluginAPISchemaGenerator
    permission_classes = [IsPluginStaff]


class DocsView(SpectacularSwaggerView):
    """``GET /api/docs/``: Swagger UI over :class:`SchemaView`."""

    schema = AutoSchema()
    permission_classes = [IsPluginStaff]
    url_name = "course_plugins_api:schema"
