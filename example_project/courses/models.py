"""Models of the stand-in course platform: organizations, courses, content, quizzes and labs."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Organization(models.Model):
    """A school or company that owns courses."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    # Who may manage this organization's plugins (COURSE_PLUGINS["ORGANIZATION_ADMINS"] = "admins").
    admins = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="administered_organizations"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Course(models.Model):
    """A course; ``name`` is its short unique slug, ``title`` what learners see."""

    name = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="courses"
    )
    published = models.BooleanField(default=False)
    # A username rather than a foreign key: the seed's advice example sets it to a plain string
    # (``result.created_by = 'plugin'``), and the creator's account may be deleted later.
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title", "id"]

    def __str__(self) -> str:
        return self.title


class Enrollment(models.Model):
    """A learner enrolled in a course."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="enrollments"
    )
    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="enrollments")
    completed = models.BooleanField(default=False)
    enrolled_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-enrolled_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "course"], name="courses_enrollment_once")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.course}"


class ContentKind(models.TextChoices):
    TEXT = "text", _("Text")
    VIDEO = "video", _("Video")
    CODE = "code", _("Code exercise")


class Content(models.Model):
    """A piece of course material; ``generated`` marks material written by the AI generator."""

    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="contents")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    kind = models.CharField(max_length=16, choices=ContentKind.choices, default=ContentKind.TEXT)
    video_url = models.URLField(blank=True)
    duration_seconds = models.PositiveIntegerField(default=0)
    generated = models.BooleanField(default=False)
    published = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["course", "id"]
        verbose_name_plural = "content"

    def __str__(self) -> str:
        return self.title


class Quiz(models.Model):
    """A quiz. ``questions`` is a list of ``{"question", "choices", "answer", "points"}`` dicts."""

    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="quizzes")
    title = models.CharField(max_length=200)
    questions = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["course", "id"]
        verbose_name_plural = "quizzes"

    def __str__(self) -> str:
        return self.title


class QuizSubmission(models.Model):
    """One attempt at a quiz: opened when started, answered and graded when submitted."""

    quiz = models.ForeignKey(Quiz, on_delete=models.CASCADE, related_name="submissions")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quiz_submissions"
    )
    answers = models.JSONField(default=list, blank=True)
    score = models.FloatField(null=True, blank=True, help_text=_("0 to 100, once graded."))
    graded_by = models.CharField(
        max_length=200,
        blank=True,
        help_text=_("'built-in', or 'quiz-grade' when a plugin graded it."),
    )
    started_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.user} - {self.quiz}"


class LabSession(models.Model):
    """A learner's coding lab session; code runs in the sandbox, never in the web process."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="lab_sessions"
    )
    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="lab_sessions")
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    executions = models.PositiveIntegerField(default=0)
    last_output = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.user} lab in {self.course}"

    @property
    def is_open(self) -> bool:
        return self.ended_at is None
