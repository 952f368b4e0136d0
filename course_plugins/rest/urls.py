"""URLs of the course_plugins REST API."""

from __future__ import annotations

urlpatterns: list = []
