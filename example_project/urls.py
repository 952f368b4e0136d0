"""URLs of the example project: the admin, the plugin REST API and its schema."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("course_plugins.rest.urls")),
    path("api/", include("example_project.courses.api")),
    path("", include("example_project.courses.urls")),
]
