"""The stand-in course platform of the example project."""

from __future__ import annotations

from django.apps import AppConfig


class CoursesConfig(AppConfig):
    name = "example_project.courses"
    label = "courses"
    default_auto_field = "django.db.models.BigAutoField"
