"""The example course platform: every standard event and hook really happens, through its
services and pages, and the three example plugins work on the real site."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from course_plugins.core.advice import after_advice, around_advice, before_advice, remove_advice
from course_plugins.core.standard import STANDARD_EVENT_NAMES, STANDARD_HOOK_NAMES
from course_plugins.model_hooks import PluginVeto
from course_plugins.models import AnalyticsEvent, Notification, PluginStorage
from course_plugins.site import runtime
from course_plugins.testing import captured_events, temporary_hook
from example_project.courses import services
from example_project.courses.models import ContentKind, Course, Organization, Quiz

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = [
    {"question": "len('abc')?", "choices": ["2", "3"], "answer": "3"},
    {"question": "Keyword for functions?", "choices": ["def", "fn"], "answer": "def", "points": 3},
]


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # Password hashing is deliberately slow; these tests are not about it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("ada", "ada@example.com", "pw-123456")


@pytest.fixture
def course(db):
    org = Organization.objects.create(name="Example University", slug="example")
    return services.create_course(
        {"name": "python", "title": "Python basics", "description": "Learn it.",
         "organization": org}
    )


@pytest.fixture
def quiz(course):
    return services.create_quiz(course, "Basics quiz", QUESTIONS)


@pytest.fixture
def recorded_hooks():
    """Record every call of every standard hook (without changing what they return)."""
    calls: Counter[str] = Counter()
    with ExitStack() as stack:
        for name in sorted(STANDARD_HOOK_NAMES):

            def record(*args: Any, _name: str = name, **kwargs: Any) -> None:
                calls[_name] += 1

            stack.enter_context(temporary_hook(name, record, priority=1000))
        yield calls


# --- every standard event and hook --------------------------------------------------------------


@pytest.mark.django_db
def test_every_standard_event_and_hook_happens(recorded_hooks, django_capture_on_commit_callbacks):
    client = Client()
    with captured_events() as events, django_capture_on_commit_callbacks(execute=True):
        ada = get_user_model().objects.create_user("ada", "ada@example.com", "pw-123456")
        assert client.login(username="ada", password="pw-123456")
        course = services.create_course(
            {"name": "python", "title": "Python basics", "created_by": ada.username}
        )
        services.update_course(course, {"description": "Variables and loops."})
        services.publish_course(course)
        services.view_course(course, ada)
        services.enroll(ada, course)
        video = services.create_content(course, {"title": "Loops", "kind": ContentKind.VIDEO})
        generated = services.generate_content(course, "Functions")
        services.publish_content(generated)
        services.access_content(generated, ada)
        services.watch_video(video, ada, 120)
        quiz = services.create_quiz(course, "Basics quiz", QUESTIONS)
        attempt = services.start_quiz(quiz, ada)
        services.submit_quiz(attempt, ["3", "def"])
        services.complete_course(ada, course)
        session = services.start_session(ada, course)
        services.execute_code(session, "result = 6 * 7")
        services.end_session(session)
        services.delete_course(course)
        client.logout()

    published = Counter(e.name for e in events)
    assert STANDARD_EVENT_NAMES - set(published) == set()
    assert STANDARD_HOOK_NAMES - set(recorded_hooks) == set()
    # The model changes were published exactly once each.
    assert published["course.created"] == published["quiz.created"] == 1
    assert published["content.created"] == 2  # the video and the generated lesson


# --- hooks in the services ----------------------------------------------------------------------


@pytest.mark.django_db
def test_built_in_grading_weights_points(quiz, user):
    attempt = services.start_quiz(quiz, user)
    services.submit_quiz(attempt, ["3", "fn"])
    attempt.refresh_from_db()
    assert (attempt.score, attempt.graded_by) == (25.0, "built-in")
    assert attempt.submitted_at is not None


@pytest.mark.django_db
def test_the_first_plugin_grade_wins(quiz, user):
    with (
        temporary_hook("quiz-grade", lambda submission: None, priority=1),
        temporary_hook("quiz-grade", lambda submission: 90, priority=5),
        temporary_hook("quiz-grade", lambda submission: 10, priority=9),
    ):
        attempt = services.submit_quiz(services.start_quiz(quiz, user), ["x", "y"])
    assert (attempt.score, attempt.graded_by) == (90.0, "quiz-grade")


@pytest.mark.django_db
def test_an_impossible_plugin_grade_falls_back_to_built_in(quiz, user):
    with temporary_hook("quiz-grade", lambda submission: 150):
        attempt = services.submit_quiz(services.start_quiz(quiz, user), ["3", "def"])
    assert (attempt.score, attempt.graded_by) == (100.0, "built-in")


@pytest.mark.django_db
def test_a_submission_is_graded_once(quiz, user):
    attempt = services.submit_quiz(services.start_quiz(quiz, user), ["3", "def"])
    with pytest.raises(ValueError, match="already submitted"):
        services.submit_quiz(attempt, ["2", "fn"])


@pytest.mark.django_db
def test_after_quiz_submit_sees_the_graded_submission(quiz, user):
    seen: list[dict[str, Any]] = []
    with temporary_hook("after-quiz-submit", seen.append):
        services.submit_quiz(services.start_quiz(quiz, user), ["3", "def"])
    assert seen[0]["score"] == 100.0 and seen[0]["answers"] == ["3", "def"]
    assert seen[0]["questions"] == QUESTIONS


@pytest.mark.django_db
def test_content_publish_may_change_or_refuse(course):
    lesson = services.create_content(course, {"title": "Loops", "body": "for x in y"})

    def tidy(content: dict[str, Any]) -> dict[str, Any]:
        return {**content, "title": content["title"].upper()}

    with temporary_hook("before-content-publish", tidy):
        services.publish_content(lesson)
    lesson.refresh_from_db()
    assert (lesson.title, lesson.published) == ("LOOPS", True)

    draft = services.create_content(course, {"title": "Draft"})

    def refuse(content: dict[str, Any]) -> None:
        raise ValueError("Content needs a body before it is published.")

    with temporary_hook("before-content-publish", refuse), pytest.raises(PluginVeto) as info:
        services.publish_content(draft)
    assert info.value.messages == ["Content needs a body before it is published."]
    draft.refresh_from_db()
    assert not draft.published


@pytest.mark.django_db
def test_generated_content_goes_through_after_content_generate(course):
    def add_summary(content: dict[str, Any]) -> dict[str, Any]:
        return {**content, "body": content["body"] + "\n\nReviewed by a plugin."}

    with temporary_hook("after-content-generate", add_summary):
        lesson = services.generate_content(course, "Recursion")
    assert lesson.generated and not lesson.published
    assert lesson.body.startswith("# Recursion") and lesson.body.endswith("Reviewed by a plugin.")


@pytest.mark.django_db
def test_rendering_goes_through_content_transform(course, user):
    lesson = services.create_content(course, {"title": "Intro", "body": "Python is fun."})

    def emphasize(body: str, content: dict[str, Any]) -> str:
        assert content["user_id"] == user.pk
        return body.replace("Python", "**Python**")

    with temporary_hook("content-transform", emphasize):
        assert services.access_content(lesson, user) == "**Python** is fun."
    assert services.render_content(lesson) == "Python is fun."


@pytest.mark.django_db
def test_watching_needs_a_video(course, user):
    text = services.create_content(course, {"title": "Text"})
    with pytest.raises(ValueError, match="is not a video"):
        services.watch_video(text, user, 10)


# --- advice, as the seed writes it ----------------------------------------------------------------


@pytest.mark.django_db
def test_the_seeds_advice_examples_work_on_the_services(user):
    def validate_input(course_data: dict[str, Any]) -> None:
        if len(course_data["name"]) < 5:
            raise ValueError("Name too short")

    def add_metadata(result: Course, course_data: dict[str, Any]) -> Course:
        result.created_by = "plugin"
        return result

    timings: list[str] = []

    def with_timing(original_func: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = original_func(*args, **kwargs)
        timings.append(time.perf_counter() - start)
        return result

    before_advice("course_service.create_course")(validate_input)
    after_advice("course_service.create_course")(add_metadata)
    around_advice("quiz_service.submit_quiz")(with_timing)
    try:
        with pytest.raises(ValueError, match="Name too short"):
            services.create_course({"name": "py", "title": "Python"})
        course = services.create_course({"name": "python", "title": "Python basics"})
        assert course.created_by == "plugin"
        quiz = services.create_quiz(course, "Quiz", QUESTIONS)
        services.submit_quiz(services.start_quiz(quiz, user), ["3", "def"])
        assert len(timings) == 1 and timings[0] > 0
    finally:
        remove_advice("course_service.create_course", validate_input)
        remove_advice("course_service.create_course", add_metadata)
        remove_advice("quiz_service.submit_quiz", with_timing)


# --- the lab ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_lab_code_runs_in_the_sandbox(course, user):
    session = services.start_session(user, course)
    assert services.execute_code(session, "result = sum(range(10))") == {
        "ok": True, "result": 45, "error": ""
    }
    refused = services.execute_code(session, "import os\nresult = os.getcwd()")
    assert refused["ok"] is False and refused["error"].startswith("SecurityViolation")
    failing = services.execute_code(session, "result = 1 / 0")
    assert failing["ok"] is False and "ZeroDivisionError" in failing["error"]
    session.refresh_from_db()
    assert session.executions == 3
    services.end_session(session)
    with pytest.raises(services.LabSessionClosed):
        services.execute_code(session, "result = 1")


# --- pages --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_pages_publish_what_learners_do(
    client, course, quiz, user, django_capture_on_commit_callbacks
):
    services.publish_course(course)
    lesson = services.create_content(course, {"title": "Intro", "body": "Python is fun."})
    services.publish_content(lesson)
    client.force_login(user)
    with captured_events() as events, django_capture_on_commit_callbacks(execute=True):
        assert "Python basics" in client.get("/").content.decode()
        assert client.get("/courses/python/").status_code == 200
        assert client.post("/courses/python/enroll/").status_code == 302
        with temporary_hook("content-transform", lambda body, content: body.upper()):
            page = client.get(f"/content/{lesson.pk}/").content.decode()
        assert "PYTHON IS FUN." in page
        started = client.post(f"/quizzes/{quiz.pk}/", {"action": "start"})
        attempt = started.context["submission"]
        graded = client.post(
            f"/quizzes/{quiz.pk}/",
            {"action": "submit", "submission": attempt.pk, "q0": "3", "q1": "def"},
        )
        assert "Your score: 100.0 / 100" in graded.content.decode()
    assert [e.name for e in events] == [
        "course.viewed", "user.enrolled", "content.accessed", "quiz.started", "quiz.submitted",
        "quiz.graded",
    ]


@pytest.mark.django_db
def test_the_admin_publishes_through_the_service(
    client, course, django_capture_on_commit_callbacks
):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client.force_login(admin)
    with captured_events() as events, django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/courses/course/",
            {"action": "publish", "_selected_action": [course.pk]},
            follow=True,
        )
    assert "Published 1 course(s)." in response.content.decode()
    course.refresh_from_db()
    assert course.published
    assert [e.name for e in events] == ["course.updated", "course.published"]


@pytest.mark.django_db
def test_lab_and_video_pages(client, course, user, django_capture_on_commit_callbacks):
    services.publish_course(course)
    video = services.create_content(course, {"title": "Loops", "kind": ContentKind.VIDEO})
    services.publish_content(video)
    client.force_login(user)
    with captured_events() as events, django_capture_on_commit_callbacks(execute=True):
        assert client.get("/courses/python/lab/").status_code == 200
        ran = client.post("/courses/python/lab/", {"action": "run", "code": "result = 2 ** 10"})
        assert "result = 1024" in ran.content.decode()
        ended = client.post("/courses/python/lab/", {"action": "end"})
        assert ended.status_code == 302
        watched = client.post(f"/content/{video.pk}/watched/", {"seconds": "42"}, follow=True)
        assert "Recorded 42 s of Loops." in watched.content.decode()
    assert [e.name for e in events] == [
        "lab.session_started", "lab.code_executed", "lab.session_ended", "video.watched",
        "content.accessed",
    ]
    assert events[3].data == {
        "content_id": video.pk, "course_id": course.pk, "user_id": user.pk, "seconds": 42
    }


@pytest.mark.django_db
def test_drafts_are_hidden_from_learners(client, course, user):
    client.force_login(user)
    assert client.get("/courses/python/").status_code == 404


# --- the example plugins on the real site -------------------------------------------------------


@pytest.fixture
def site_plugins(settings):
    settings.COURSE_PLUGINS = {
        **settings.COURSE_PLUGINS,
        "PLUGIN_DIRS": [str(ROOT / "plugin_dirs")],
    }
    runtime.reset()
    yield runtime
    runtime.reset()


@pytest.mark.django_db
def test_course_validator_refuses_through_the_site(site_plugins, client):
    rows = {row.name: row for row in site_plugins.start()}
    assert set(rows) == {"course-validator", "notification-enhancer", "analytics-tracker"}
    assert all(not row.enabled and row.status == "inactive" for row in rows.values())
    site_plugins.activate("course-validator")
    site_plugins.update_settings("course-validator", {"banned_words": ["cheap"]})

    with pytest.raises(PluginVeto, match="banned words: cheap"):
        services.create_course({"name": "deal", "title": "Cheap tricks", "description": "x"})
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client.force_login(admin)
    response = client.post(
        "/admin/courses/course/add/", {"name": "py", "title": "Py", "description": ""}
    )
    assert "at least 5 characters long (it has 2)" in response.content.decode()
    assert not Course.objects.exists()
    # Refusals write nothing in the transaction they roll back: the next save that passes
    # writes the counts.
    assert not PluginStorage.objects.filter(plugin="course-validator", key="stats").exists()
    services.create_course({"name": "py", "title": "Python basics", "description": "Learn"})
    stats = PluginStorage.objects.get(plugin="course-validator", key="stats").value
    assert stats["course"] == {
        "checked": 3, "refused": 2,
        "by_rule": {"banned_words": 1, "min_title_length": 1, "require_description": 1},
    }


@pytest.mark.django_db(transaction=True)
def test_notifications_and_analytics_follow_learners(site_plugins, user, course):
    site_plugins.start()
    site_plugins.activate("notification-enhancer")
    site_plugins.activate("analytics-tracker")
    # Counted in this process here: no Celery worker runs in this test.
    site_plugins.update_settings("analytics-tracker", {"background": False})
    quiz = Quiz.objects.create(course=course, title="Quiz", questions=QUESTIONS)

    services.enroll(user, course)
    services.submit_quiz(services.start_quiz(quiz, user), ["3", "fn"])

    titles = list(Notification.objects.filter(user=user).values_list("title", flat=True))
    assert sorted(titles) == ["Quiz result: 25/100 (not passed yet)", "Welcome to Python basics"]
    tracked = set(AnalyticsEvent.objects.values_list("name", flat=True))
    assert {"user.enrolled", "quiz.started", "quiz.submitted", "quiz.graded"} <= tracked
    [day] = PluginStorage.objects.filter(plugin="analytics-tracker", key__startswith="day:")
    assert day.value["courses"][str(course.pk)]["quiz.graded"] == 1
