"""Admin of the stand-in platform; a plugin's veto shows on the form, not as a server error."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from course_plugins.model_hooks import PluginHookModelForm, PluginVetoAdminMixin
from example_project.courses import services
from example_project.courses.models import (
    Content,
    Course,
    Enrollment,
    LabSession,
    Organization,
    Quiz,
    QuizSubmission,
)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "plugins"]
    prepopulated_fields = {"slug": ["name"]}
    search_fields = ["name", "slug"]
    filter_horizontal = ["admins"]

    @admin.display(description="Plugins")
    def plugins(self, obj: Organization) -> str:
        """A link to the organization's plugin page (course_plugins' admin)."""
        url = reverse("admin:course_plugins_organizationplugin_organization", args=(obj.pk,))
        return format_html('<a href="{}">Plugins of {}</a>', url, obj.name)


class CourseAdminForm(PluginHookModelForm):
    """Sets ``created_by`` before validation, so the plugin hook sees the row as it will be saved
    (and is not run a second time by ``pre_save``)."""

    creator = ""

    def _post_clean(self) -> None:
        if self.instance.pk is None and not self.instance.created_by:
            self.instance.created_by = self.creator
        super()._post_clean()


@admin.register(Course)
class CourseAdmin(PluginVetoAdminMixin, admin.ModelAdmin):
    list_display = ["title", "name", "organization", "published", "created_by", "updated_at"]
    list_filter = ["published", "organization"]
    prepopulated_fields = {"name": ["title"]}
    search_fields = ["name", "title", "description"]

    form = CourseAdminForm
    readonly_fields = ["created_by"]
    actions = ["publish"]

    @admin.action(description="Publish selected courses", permissions=["change"])
    def publish(self, request: HttpRequest, queryset: QuerySet[Course]) -> None:
        # Through the service, so that course.published is published (a plain update would not).
        drafts = list(queryset.filter(published=False))
        for course in drafts:
            services.publish_course(course)
        self.message_user(request, f"Published {len(drafts)} course(s).", messages.SUCCESS)

    def get_form(self, request: HttpRequest, obj: Course | None = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        form.creator = request.user.get_username()  # a fresh class per call: safe to set
        return form


@admin.register(Content)
class ContentAdmin(PluginVetoAdminMixin, admin.ModelAdmin):
    list_display = ["title", "course", "kind", "generated", "published"]
    list_filter = ["kind", "generated", "published"]
    search_fields = ["title", "body"]


@admin.register(Quiz)
class QuizAdmin(PluginVetoAdminMixin, admin.ModelAdmin):
    list_display = ["title", "course", "question_count"]
    search_fields = ["title"]

    @admin.display(description="questions")
    def question_count(self, obj: Quiz) -> int:
        return len(obj.questions or [])


@admin.register(QuizSubmission)
class QuizSubmissionAdmin(admin.ModelAdmin):
    list_display = ["quiz", "user", "score", "graded_by", "started_at", "submitted_at"]
    list_filter = ["graded_by"]


@admin.register(Enrollment)
class EnrollmentAdmin(admin.ModelAdmin):
    list_display = ["user", "course", "completed", "enrolled_at", "completed_at"]
    list_filter = ["completed"]


@admin.register(LabSession)
class LabSessionAdmin(admin.ModelAdmin):
    list_display = ["user", "course", "started_at", "ended_at", "executions"]
