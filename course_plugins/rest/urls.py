"""URLs of the course_plugins REST API (include under any prefix; the example project: /api/)."""

from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from course_plugins.rest import organizations, views
from course_plugins.rest.schema import DocsView, SchemaView

app_name = "course_plugins_api"

router = SimpleRouter()
router.register("plugins", views.PluginViewSet, basename="plugin")

urlpatterns = [
    path("", views.ApiRootView.as_view(), name="root"),
    path("", include(router.urls)),
    path("hooks/", views.HookListView.as_view(), name="hooks"),
    path("hooks/<str:hook>/runs/", views.HookRunsView.as_view(), name="hook-runs"),
    # Keys contain ":" and "." (and "<locals>" for nested functions): any path segment text.
    path(
        "hooks/<str:hook>/functions/<path:key>/",
        views.HookFunctionView.as_view(),
        name="hook-function",
    ),
    path("events/", views.EventListView.as_view(), name="events"),
    path("advice/", views.AdviceListView.as_view(), name="advice"),
    path("audit/", views.AuditEventListView.as_view(), name="audit"),
    path(
        "organizations/<str:pk>/plugins/",
        organizations.OrganizationPluginListView.as_view(),
        name="organization-plugins",
    ),
    path(
        "organizations/<str:pk>/plugins/<slug:name>/activate/",
        organizations.OrganizationPluginActionView.as_view(verb="activate"),
        name="organization-plugin-activate",
    ),
    path(
        "organizations/<str:pk>/plugins/<slug:name>/deactivate/",
        organizations.OrganizationPluginActionView.as_view(verb="deactivate"),
        name="organization-plugin-deactivate",
    ),
    path(
        "organizations/<str:pk>/plugins/<slug:name>/settings/",
        organizations.OrganizationPluginSettingsView.as_view(),
        name="organization-plugin-settings",
    ),
    # The schema and its browsable docs are for the same staff as the API itself; they work
    # whatever the project's DEFAULT_SCHEMA_CLASS is (rest/schema.py).
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", DocsView.as_view(), name="docs"),
]
