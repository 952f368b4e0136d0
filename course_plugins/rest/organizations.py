"""REST API of one organization's plugins: list, activate/deactivate, settings.

``/organizations/<pk>/plugins/`` and ``/organizations/<pk>/plugins/<name>/activate|deactivate|
settings/``. An unknown organization answers 404. Site operators (superusers, or staff with the
site-wide plugin permissions) manage every organization; staff with
``course_plugins.manage_organization_plugins`` only those ``COURSE_PLUGINS["ORGANIZATION_ADMINS"]``
gives them (403 for the others). Every change goes through the runtime, like the site-wide ones.
"""

from __future__ import annotations

from typing import Any

from django.http import QueryDict
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from course_plugins.exceptions import (
    CoursePluginsError,
    PluginNotFound,
    PluginSettingsError,
    reason,
)
from course_plugins.models import Plugin
from course_plugins.rest.schema import AutoSchema, documented
from course_plugins.site import organizations as orgs
from course_plugins.site import runtime

__all__ = [
    "OrganizationPluginActionView",
    "OrganizationPluginListView",
    "OrganizationPluginSettingsView",
]


class IsOrganizationStaff(BasePermission):
    """Active staff; which organizations they may manage is checked per request."""

    message = "Only staff users who manage this organization's plugins may use this endpoint."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.is_staff)


class _OrganizationView(APIView):
    permission_classes = [IsOrganizationStaff]
    schema = AutoSchema()  # in the schema whatever DEFAULT_SCHEMA_CLASS is (rest/schema.py)

    def organization(self, request: Request, pk: str) -> Any:
        """The organization ``pk`` if the user manages it; 404 / 403 otherwise."""
        try:
            org = orgs.get_organization(pk)
        except orgs.OrganizationNotFound as exc:
            raise NotFound(f"No organization {pk!r}.") from exc
        if not orgs.can_manage(request.user, org.pk):
            raise PermissionDenied("You do not manage the plugins of this organization.")
        return org

    def plugin(self, name: str) -> Plugin:
        row = Plugin.objects.filter(name=name).first()
        if row is None:
            raise NotFound(f"No plugin named {name!r}.")
        return row


def _describe(org: Any, row: Plugin) -> dict[str, Any]:
    state = orgs.state()
    own = state.rows.get(orgs.org_key(org.pk), {}).get(row.name, (None, {}))
    return {
        "organization": org.pk,
        "plugin": row.name,
        "version": row.version,
        "active": state.active_for(row.name, org.pk),
        "site_enabled": row.enabled,
        "choice": {None: "site", True: "on", False: "off"}[own[0]],
        "settings": runtime.organization_settings(org.pk, row.name, masked=True),
        "overridden": sorted(own[1]),
    }


class OrganizationPluginListView(_OrganizationView):
    """Every plugin with whether it is active for the organization and its settings there."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @documented
    def get(self, request: Request, pk: str) -> Response:
        org = self.organization(request, pk)
        runtime.ensure_started()
        return Response([_describe(org, row) for row in Plugin.objects.all()])


class OrganizationPluginActionView(_OrganizationView):
    """``POST`` activates (``verb="activate"``) or deactivates the plugin for the organization."""

    verb = "activate"

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT})
    @documented
    def post(self, request: Request, pk: str, name: str) -> Response:
        org = self.organization(request, pk)
        row = self.plugin(name)
        done = "activated" if self.verb == "activate" else "deactivated"
        try:
            if self.verb == "activate":
                runtime.activate_for(org.pk, row.name, user=request.user)
            else:
                runtime.deactivate_for(org.pk, row.name)
        except PluginNotFound as exc:
            raise NotFound(str(exc)) from exc
        except CoursePluginsError as exc:
            row.refresh_from_db()
            body = {"detail": f"{row.name} could not be {done} for {org}: {reason(exc, row.name)}"}
            return Response({**body, **_describe(org, row)}, status=status.HTTP_409_CONFLICT)
        row.refresh_from_db()
        body = {"detail": f"{row.name} {done} for {org}."}
        return Response({**body, **_describe(org, row)})


class OrganizationPluginSettingsView(_OrganizationView):
    """The plugin's settings for the organization (its own over the site's, key by key)."""

    @extend_schema(
        methods=["GET"],
        responses={200: OpenApiTypes.OBJECT},
        description="Settings in effect for the organization; secrets are masked.",
    )
    @documented
    def get(self, request: Request, pk: str, name: str) -> Response:
        org = self.organization(request, pk)
        row = self.plugin(name)
        return Response(runtime.organization_settings(org.pk, row.name, masked=True))

    @extend_schema(
        methods=["PATCH"],
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT},
        description="Override some settings for the organization, validated against the "
        "plugin's settings_schema (400 with an error per field); null reverts a key to the "
        "site's value.",
    )
    @documented
    def patch(self, request: Request, pk: str, name: str) -> Response:
        org = self.organization(request, pk)
        row = self.plugin(name)
        if not isinstance(request.data, dict):
            return Response(
                {"non_field_errors": ["Send a JSON object of setting: value."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            runtime.update_organization_settings(
                org.pk, row.name, dict(request.data),
                typed=not isinstance(request.data, QueryDict),  # JSON: true, not "yes"
            )
        except PluginSettingsError as exc:
            return Response(
                {k: [v] for k, v in exc.errors.items()}, status=status.HTTP_400_BAD_REQUEST
            )
        except CoursePluginsError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(runtime.organization_settings(org.pk, row.name, masked=True))
