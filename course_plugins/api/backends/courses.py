"""Default courses backend of the Platform API: the ``COURSE_MODEL`` model, as plain dicts."""

from __future__ import annotations

import json
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldError

from course_plugins.conf import plugin_settings
from course_plugins.exceptions import PlatformAPIError


class ModelCoursesBackend:
    """Courses from ``COURSE_PLUGINS["COURSE_MODEL"]`` (``"app_label.Model"``), read-only.

    A course is returned as JSON-safe plain data: every concrete field by its attribute name
    (a foreign key as ``organization_id``), dates as ISO 8601 strings.
    """

    def get(self, course_id: Any, *, plugin: str | None = None) -> dict[str, Any] | None:
        """Return the course with primary key ``course_id`` as a dict, or ``None``."""
        model = self._model()
        try:
            course = model._default_manager.filter(pk=course_id).first()
        except (ValueError, TypeError):
            raise PlatformAPIError(plugin, f"{course_id!r} is not a valid course id") from None
        return course_to_dict(course) if course is not None else None

    def list_by_organization(
        self, org_id: Any, *, plugin: str | None = None
    ) -> list[dict[str, Any]]:
        """Return the organization's courses (model ordering) as dicts; ``[]`` when it has none."""
        model = self._model()
        field = plugin_settings.COURSE_ORGANIZATION_FIELD
        try:
            courses = model._default_manager.filter(**{field: org_id})
            return [course_to_dict(c) for c in courses]
        except (ValueError, TypeError):
            raise PlatformAPIError(plugin, f"{org_id!r} is not a valid organization id") from None
        except FieldError:
            raise PlatformAPIError(
                plugin,
                f'COURSE_PLUGINS["COURSE_ORGANIZATION_FIELD"] = {field!r} is not a field of '
                f"{model._meta.label}: its courses cannot be listed by organization",
            ) from None

    def _model(self) -> Any:
        try:
            return apps.get_model(plugin_settings.COURSE_MODEL)
        except (LookupError, ValueError) as exc:
            raise PlatformAPIError(
                None,
                f'COURSE_PLUGINS["COURSE_MODEL"] = {plugin_settings.COURSE_MODEL!r} is not an '
                f"installed model: {exc}",
            ) from None


def course_to_dict(course: Any) -> dict[str, Any]:
    """Return the concrete fields of ``course`` as JSON-safe data."""
    from django.core.serializers.json import DjangoJSONEncoder

    data = {f.attname: getattr(course, f.attname) for f in course._meta.concrete_fields}
    data.setdefault("id", course.pk)
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))
