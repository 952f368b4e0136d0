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

# Unknown URLs under /api/ answer a JSON 404 like the API's own, other pages Django's own.
handler404 = "course_plugins.rest.views.handler404"
