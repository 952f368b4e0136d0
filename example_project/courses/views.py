"""Views of the stand-in platform: thin wrappers over ``services`` (which publish the events)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from example_project.courses import services
from example_project.courses.models import Content, Course, Enrollment, LabSession, Quiz


def _visible_courses(request: HttpRequest) -> QuerySet[Course]:
    """Staff see drafts too; everybody else only published courses."""
    courses = Course.objects.select_related("organization")
    return courses if request.user.is_staff else courses.filter(published=True)


def course_list(request: HttpRequest) -> HttpResponse:
    return render(request, "courses/course_list.html", {"courses": _visible_courses(request)})


def course_detail(request: HttpRequest, name: str) -> HttpResponse:
    course = get_object_or_404(_visible_courses(request), name=name)
    services.view_course(course, request.user if request.user.is_authenticated else None)
    contents = course.contents.all()
    if not request.user.is_staff:
        contents = contents.filter(published=True)
    enrollment = None
    if request.user.is_authenticated:
        enrollment = Enrollment.objects.filter(user=request.user, course=course).first()
    return render(
        request,
        "courses/course_detail.html",
        {
            "course": course,
            "contents": contents,
            "quizzes": course.quizzes.all(),
            "enrollment": enrollment,
        },
    )


@require_POST
@login_required
def enroll(request: HttpRequest, name: str) -> HttpResponse:
    course = get_object_or_404(_visible_courses(request), name=name)
    services.enroll(request.user, course)
    messages.success(request, f"You are enrolled in {course.title}.")
    return redirect("courses:detail", name=course.name)


@require_POST
@login_required
def complete(request: HttpRequest, name: str) -> HttpResponse:
    course = get_object_or_404(_visible_courses(request), name=name)
    try:
        services.complete_course(request.user, course)
    except Enrollment.DoesNotExist:
        messages.error(request, "Enroll in the course first.")
    else:
        messages.success(request, f"Congratulations, you completed {course.title}!")
    return redirect("courses:detail", name=course.name)


def content_detail(request: HttpRequest, pk: int) -> HttpResponse:
    contents = Content.objects.select_related("course").filter(
        course__in=_visible_courses(request)
    )
    if not request.user.is_staff:
        contents = contents.filter(published=True)
    content = get_object_or_404(contents, pk=pk)
    user = request.user if request.user.is_authenticated else None
    body = services.access_content(content, user)
    return render(request, "courses/content_detail.html", {"content": content, "body": body})


@require_POST
@login_required
def video_watched(request: HttpRequest, pk: int) -> HttpResponse:
    content = get_object_or_404(Content, pk=pk)
    try:
        seconds = int(request.POST.get("seconds", "0"))
        services.watch_video(content, request.user, seconds)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Recorded {seconds} s of {content.title}.")
    return redirect("courses:content", pk=content.pk)


@login_required
def quiz(request: HttpRequest, pk: int) -> HttpResponse:
    """GET shows the start button; POST ``start`` opens an attempt; POST ``submit`` grades it."""
    quiz = get_object_or_404(Quiz.objects.select_related("course"), pk=pk)
    context: dict = {"quiz": quiz}
    if request.method == "POST" and request.POST.get("action") == "start":
        context["submission"] = services.start_quiz(quiz, request.user)
    elif request.method == "POST" and request.POST.get("action") == "submit":
        submission = get_object_or_404(
            quiz.submissions, pk=request.POST.get("submission"), user=request.user
        )
        answers = [request.POST.get(f"q{i}", "") for i in range(len(quiz.questions))]
        try:
            context["graded"] = services.submit_quiz(submission, answers)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        except ValueError as exc:
            messages.error(request, str(exc))
    return render(request, "courses/quiz.html", context)


@login_required
def lab(request: HttpRequest, name: str) -> HttpResponse:
    """A coding lab: POST ``run`` executes code in the sandbox, POST ``end`` closes the session."""
    course = get_object_or_404(_visible_courses(request), name=name)
    session = LabSession.objects.filter(
        user=request.user, course=course, ended_at__isnull=True
    ).first()
    outcome = None
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "end" and session is not None:
            services.end_session(session)
            messages.success(request, "Lab session ended.")
            return redirect("courses:detail", name=course.name)
        if action == "run":
            if session is None:
                session = services.start_session(request.user, course)
            outcome = services.execute_code(session, request.POST.get("code", ""))
    elif session is None:
        session = services.start_session(request.user, course)
    code = request.POST.get("code", "result = sum(range(10))")
    context = {"course": course, "session": session, "outcome": outcome, "code": code}
    return render(request, "courses/lab.html", context)
