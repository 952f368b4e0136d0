"""Services of the stand-in platform, where every standard event and hook really happens.

Each function is advisable under the name the seed uses (``course_service.create_course`` ...).
Model changes go through the ORM, so the signal bridge runs the model hooks
(``before-course-save``, ``before-quiz-save`` ...) and publishes ``course.created`` & co. on
commit; the events that are not a plain model change (``course.published``, ``user.enrolled``,
``quiz.graded`` ...) are published here, also on commit. The content and quiz hooks
(``before-content-publish``, ``after-content-generate``, ``content-transform``, ``quiz-grade``,
``after-quiz-submit``) are run here. Each service runs in the organization scope of the course it
is about (``_about``), so only that organization's plugins take part, with its settings.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.db import transaction
from django.utils import timezone

from course_plugins.conf import plugin_settings
from course_plugins.core.advice import advisable
from course_plugins.core.hook_manager import HookManager
from course_plugins.core.scope import entered
from course_plugins.model_hooks import instance_data, publish_on_commit, run_hook
from course_plugins.site.organizations import scope_for
from example_project.courses.models import (
    Content,
    ContentKind,
    Course,
    Enrollment,
    LabSession,
    Organization,
    Quiz,
    QuizSubmission,
)

logger = logging.getLogger("example_project.courses")

F = TypeVar("F", bound=Callable[..., Any])

SOURCE = "courses"
BUILT_IN = "built-in"

_COURSE_FIELDS = ("name", "title", "description", "published", "created_by")


class LabSessionClosed(ValueError):
    """Code was sent to a lab session that has ended."""


def organization_of(obj: Any) -> Any:
    """The organization id of a course, or of what belongs to one (``None`` for none)."""
    if isinstance(obj, Course):
        return obj.organization_id
    if isinstance(obj, (Content, Quiz, Enrollment, LabSession)):
        return obj.course.organization_id
    if isinstance(obj, QuizSubmission):
        return obj.quiz.course.organization_id
    return None


def _about(param: str) -> Callable[[F], F]:
    """Run the service in the organization scope of its argument ``param``: the hooks, advice
    and events of work about a course of an organization are that organization's plugins."""

    def decorate(fn: F) -> F:
        position = list(inspect.signature(fn).parameters).index(param)

        @functools.wraps(fn)
        def about(*args: Any, **kwargs: Any) -> Any:
            obj = kwargs.get(param, args[position] if position < len(args) else None)
            with entered(scope_for(organization_of(obj))):
                return fn(*args, **kwargs)

        return cast(F, about)

    return decorate


def _emit(name: str, data: dict[str, Any]) -> None:
    publish_on_commit(name, data, source=SOURCE)


def _user_id(user: Any) -> Any:
    return getattr(user, "pk", None) if user is not None else None


# --- course_service ---------------------------------------------------------------------------


@advisable("course_service.create_course")
def create_course(course_data: dict[str, Any]) -> Course:
    """Create a course from ``course_data``: name, title, description, organization (an
    ``Organization`` or its id), published, created_by (a username).

    One argument, as in the seed's advice examples (``validate_input(course_data)``). Returns the
    saved course. Raises ``PluginVeto`` (a ``ValidationError``) when a plugin's
    ``before-course-save`` refuses it. One transaction: the course, and what plugins write
    with it (their background events' outbox rows), are committed together.
    """
    course = Course(**{k: course_data[k] for k in _COURSE_FIELDS if k in course_data})
    org = course_data.get("organization", course_data.get("organization_id"))
    if org is not None:
        course.organization_id = org.pk if isinstance(org, Organization) else org
    with transaction.atomic():
        course.save()
    return course


@_about("course")
@advisable("course_service.update_course")
def update_course(course: Course, changes: dict[str, Any]) -> Course:
    """Apply ``changes`` (course field names) and save; returns the course.

    Raises ``ValueError`` for an unknown field and ``PluginVeto`` when a plugin refuses.
    """
    for key, value in changes.items():
        if key in ("organization", "organization_id"):
            course.organization_id = value.pk if isinstance(value, Organization) else value
        elif key in _COURSE_FIELDS:
            setattr(course, key, value)
        else:
            raise ValueError(f"update_course: {key!r} is not a course field ({_COURSE_FIELDS})")
    course.save()
    return course


@_about("course")
@advisable("course_service.publish_course")
def publish_course(course: Course) -> Course:
    """Make the course public; publishes ``course.published`` on commit. Returns the course."""
    with transaction.atomic():
        course.published = True
        course.save()
        _emit("course.published", {"id": course.pk, "name": course.name, "title": course.title})
    return course


@_about("course")
@advisable("course_service.delete_course")
def delete_course(course: Course) -> None:
    """Delete the course (and its material); ``before-course-delete`` may refuse with a veto."""
    course.delete()


@_about("course")
@advisable("course_service.view_course")
def view_course(course: Course, user: Any = None) -> Course:
    """Record that ``user`` (or an anonymous visitor) viewed the course page; returns the course."""
    _emit("course.viewed", {"id": course.pk, "name": course.name, "user_id": _user_id(user)})
    return course


# --- enrollment_service ----------------------------------------------------------------------


@_about("course")
@advisable("enrollment_service.enroll")
def enroll(user: Any, course: Course) -> Enrollment:
    """Enroll ``user``; publishes ``user.enrolled`` the first time only. Returns the enrollment."""
    with transaction.atomic():
        enrollment, created = Enrollment.objects.get_or_create(user=user, course=course)
        if created:
            _emit("user.enrolled", {"user_id": user.pk, "course_id": course.pk})
    return enrollment


@_about("course")
@advisable("enrollment_service.complete_course")
def complete_course(user: Any, course: Course) -> Enrollment:
    """Mark the course completed for ``user``; publishes ``user.completed_course`` once.

    Raises ``Enrollment.DoesNotExist`` when the user is not enrolled.
    """
    with transaction.atomic():
        enrollment = Enrollment.objects.select_for_update().get(user=user, course=course)
        if not enrollment.completed:
            enrollment.completed = True
            enrollment.completed_at = timezone.now()
            enrollment.save(update_fields=["completed", "completed_at"])
            _emit("user.completed_course", {"user_id": user.pk, "course_id": course.pk})
    return enrollment


# --- content_service -------------------------------------------------------------------------

_CONTENT_FIELDS = ("title", "body", "kind", "video_url", "duration_seconds", "published")


@_about("course")
@advisable("content_service.create_content")
def create_content(course: Course, content_data: dict[str, Any]) -> Content:
    """Create unpublished content in ``course``; the bridge publishes ``content.created``."""
    fields = {k: content_data[k] for k in _CONTENT_FIELDS if k in content_data}
    fields.setdefault("published", False)
    return Content.objects.create(course=course, **fields)


def outline(course: Course, topic: str) -> str:
    """The built-in generator: a lesson outline for ``topic`` (stands in for an AI model)."""
    return "\n".join(
        [
            f"# {topic}",
            "",
            f"Part of the course \"{course.title}\".",
            "",
            f"1. What {topic} is and why it matters",
            f"2. The core ideas of {topic}, step by step",
            f"3. A worked example of {topic}",
            f"4. Exercises: apply {topic} on your own",
            "",
            "Summary: review the key points before the quiz.",
        ]
    )


@_about("course")
@advisable("content_service.generate_content")
def generate_content(course: Course, topic: str, *, kind: str = ContentKind.TEXT) -> Content:
    """Generate content about ``topic``, pass it through ``after-content-generate``, store it.

    Returns the stored (unpublished) content; publishes ``content.generated`` on commit. Raises
    ``PluginVeto`` when a plugin refuses the generated content.
    """
    draft = {"course_id": course.pk, "title": topic, "body": outline(course, topic), "kind": kind}
    data = run_hook("after-content-generate", draft, label="courses.Content")
    if not isinstance(data, dict):
        data = draft
    with transaction.atomic():
        content = Content.objects.create(
            course=course,
            title=str(data.get("title") or topic)[:200],
            body=str(data.get("body") or ""),
            kind=data.get("kind") or kind,
            generated=True,
        )
        _emit(
            "content.generated",
            {"id": content.pk, "course_id": course.pk, "title": content.title},
        )
    return content


@_about("content")
@advisable("content_service.publish_content")
def publish_content(content: Content) -> Content:
    """Publish content after ``before-content-publish`` (which may change title/body or refuse).

    Returns the content. Raises ``PluginVeto`` when a plugin refuses.
    """
    data = run_hook("before-content-publish", instance_data(content), label="courses.Content")
    if isinstance(data, dict):
        for key in ("title", "body", "video_url"):
            if key in data:
                setattr(content, key, data[key])
    content.published = True
    content.save()
    return content


@_about("content")
@advisable("content_service.render_content")
def render_content(content: Content, user: Any = None) -> str:
    """Return the text shown to ``user``, after every ``content-transform`` plugin."""
    context = instance_data(content)
    context["user_id"] = _user_id(user)
    body = HookManager.get_instance().run_sync("content-transform", content.body, context)
    return body if isinstance(body, str) else content.body


@_about("content")
@advisable("content_service.access_content")
def access_content(content: Content, user: Any = None) -> str:
    """Record the access (``content.accessed``) and return the rendered text."""
    _emit(
        "content.accessed",
        {"id": content.pk, "course_id": content.course_id, "user_id": _user_id(user)},
    )
    return render_content(content, user)


@_about("content")
@advisable("content_service.watch_video")
def watch_video(content: Content, user: Any, seconds: int) -> None:
    """Record that ``user`` watched ``seconds`` of a video (``video.watched``).

    Raises ``ValueError`` for content that is not a video or a negative duration.
    """
    if content.kind != ContentKind.VIDEO:
        raise ValueError(f"Content {content.pk} ({content.title!r}) is not a video.")
    if seconds < 0:
        raise ValueError(f"Watched seconds must not be negative (got {seconds}).")
    _emit(
        "video.watched",
        {
            "content_id": content.pk,
            "course_id": content.course_id,
            "user_id": _user_id(user),
            "seconds": int(seconds),
        },
    )


# --- quiz_service ----------------------------------------------------------------------------


@_about("course")
@advisable("quiz_service.create_quiz")
def create_quiz(course: Course, title: str, questions: list[dict[str, Any]]) -> Quiz:
    """Create a quiz; ``before-quiz-save`` may change or refuse it, the bridge publishes
    ``quiz.created``. Returns the quiz."""
    return Quiz.objects.create(course=course, title=title, questions=list(questions))


@_about("quiz")
@advisable("quiz_service.start_quiz")
def start_quiz(quiz: Quiz, user: Any) -> QuizSubmission:
    """Open an attempt for ``user`` (``quiz.started``); returns the open submission."""
    with transaction.atomic():
        submission = QuizSubmission.objects.create(quiz=quiz, user=user)
        _emit("quiz.started", {"quiz_id": quiz.pk, "user_id": user.pk})
    return submission


def submission_data(submission: QuizSubmission) -> dict[str, Any]:
    """The dict given to ``quiz-grade`` and ``after-quiz-submit``."""
    quiz = submission.quiz
    return {
        "id": submission.pk,
        "quiz_id": quiz.pk,
        "course_id": quiz.course_id,
        "user_id": submission.user_id,
        "questions": quiz.questions,
        "answers": submission.answers,
        "score": submission.score,
        "graded_by": submission.graded_by,
    }


@_about("submission")
@advisable("quiz_service.submit_quiz")
def submit_quiz(submission: QuizSubmission, answers: list[Any]) -> QuizSubmission:
    """Store ``answers``, grade them, run ``after-quiz-submit``; returns the graded submission.

    Publishes ``quiz.submitted`` and ``quiz.graded``. Raises ``ValueError`` when the attempt was
    already submitted.
    """
    with transaction.atomic():
        locked = QuizSubmission.objects.select_for_update().get(pk=submission.pk)
        if locked.submitted_at is not None:
            raise ValueError(f"Quiz attempt {submission.pk} was already submitted.")
        submission.answers = list(answers)
        submission.submitted_at = timezone.now()
        submission.save(update_fields=["answers", "submitted_at"])
        _emit(
            "quiz.submitted",
            {
                "submission_id": submission.pk,
                "quiz_id": submission.quiz_id,
                "user_id": submission.user_id,
                "answers": submission.answers,
            },
        )
        grade(submission)
    # After the commit: the submission is stored and graded whatever a plugin does next.
    run_hook("after-quiz-submit", submission_data(submission), label="courses.QuizSubmission")
    return submission


def built_in_grade(questions: list[dict[str, Any]], answers: list[Any]) -> float:
    """Percentage of points whose answer matches (case- and space-insensitive); 0 for no points."""

    def norm(value: Any) -> str:
        return " ".join(str(value).split()).casefold()

    total = earned = 0.0
    for index, question in enumerate(questions):
        points = float(question.get("points", 1))
        total += points
        if index < len(answers) and norm(answers[index]) == norm(question.get("answer", "")):
            earned += points
    return round(100.0 * earned / total, 2) if total else 0.0


@_about("submission")
@advisable("quiz_service.grade")
def grade(submission: QuizSubmission) -> float:
    """Grade a submission: the first non-None ``quiz-grade`` result wins, else built-in grading.

    A plugin grade outside 0..100 (or not a number) is ignored with a warning. Saves the score,
    publishes ``quiz.graded`` and returns the score.
    """
    data = submission_data(submission)
    score: Any = HookManager.get_instance().run_sync("quiz-grade", data)
    graded_by = "quiz-grade"
    if score is not None and not _valid_score(score):
        logger.warning("quiz-grade returned %r for submission %s; using built-in grading",
                       score, submission.pk)
        score = None
    if score is None:
        score, graded_by = built_in_grade(submission.quiz.questions, submission.answers), BUILT_IN
    submission.score = float(score)
    submission.graded_by = graded_by
    submission.save(update_fields=["score", "graded_by"])
    _emit(
        "quiz.graded",
        {
            "submission_id": submission.pk,
            "quiz_id": submission.quiz_id,
            "course_id": submission.quiz.course_id,
            "user_id": submission.user_id,
            "score": submission.score,
        },
    )
    return submission.score


def _valid_score(score: Any) -> bool:
    return (
        isinstance(score, (int, float))
        and not isinstance(score, bool)
        and math.isfinite(score)
        and 0 <= score <= 100
    )


# --- lab_service -----------------------------------------------------------------------------


@_about("course")
@advisable("lab_service.start_session")
def start_session(user: Any, course: Course) -> LabSession:
    """Open a lab session (``lab.session_started``); returns it."""
    with transaction.atomic():
        session = LabSession.objects.create(user=user, course=course)
        _emit(
            "lab.session_started",
            {"session_id": session.pk, "user_id": user.pk, "course_id": course.pk},
        )
    return session


@_about("session")
@advisable("lab_service.end_session")
def end_session(session: LabSession) -> LabSession:
    """Close the session (``lab.session_ended``, once); returns it."""
    with transaction.atomic():
        if session.ended_at is None:
            session.ended_at = timezone.now()
            session.save(update_fields=["ended_at"])
            seconds = (session.ended_at - session.started_at).total_seconds()
            _emit(
                "lab.session_ended",
                {"session_id": session.pk, "user_id": session.user_id, "seconds": seconds},
            )
    return session


@_about("session")
@advisable("lab_service.execute_code")
def execute_code(
    session: LabSession, code: str, inputs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run a learner's ``code`` in the sandbox (a separate, limited process).

    Returns ``{"ok": bool, "result": value or None, "error": str}``; the sandbox's refusals and the
    code's own errors are results, not exceptions. Publishes ``lab.code_executed``. Raises
    :class:`LabSessionClosed` for an ended session.
    """
    from course_plugins.core.sandbox import SandboxConfig, SandboxedExecutor, SandboxError

    if session.ended_at is not None:
        raise LabSessionClosed(f"Lab session {session.pk} has ended; start a new session.")
    executor = SandboxedExecutor(SandboxConfig(**plugin_settings.SANDBOX))
    try:
        outcome = {"ok": True, "result": executor.exec_code(code, inputs=inputs), "error": ""}
    except SandboxError as exc:
        outcome = {"ok": False, "result": None, "error": f"{type(exc).__name__}: {exc}"}
    with transaction.atomic():
        session.executions += 1
        session.last_output = repr(outcome["result"]) if outcome["ok"] else outcome["error"]
        session.save(update_fields=["executions", "last_output"])
        _emit(
            "lab.code_executed",
            {"session_id": session.pk, "user_id": session.user_id, "ok": outcome["ok"]},
        )
    return outcome
