"""The one list of standard hooks, standard events and Platform API permissions.

Everything else (hook definitions at start-up, the manifest validator, the admin, the docs)
imports these declarations; nothing repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class HookKind(StrEnum):
    """Mirror of ``HookType`` names, kept here so this module has no engine import."""

    NORMAL = "NORMAL"
    ABNORMAL = "ABNORMAL"
    FILTER = "FILTER"


@dataclass(frozen=True)
class HookSpec:
    name: str
    kind: HookKind
    description: str


STANDARD_HOOKS: tuple[HookSpec, ...] = (
    HookSpec(
        "before-course-save",
        HookKind.FILTER,
        "fn(course: dict) -> dict | None. Runs before a course is saved; return a changed dict to "
        "change the fields; raise ValueError/ValidationError to refuse the save.",
    ),
    HookSpec(
        "after-course-save",
        HookKind.NORMAL,
        "fn(course: dict, created: bool). Runs after a course is saved.",
    ),
    HookSpec(
        "before-course-delete",
        HookKind.NORMAL,
        "fn(course: dict). Runs before a course is deleted; raise a veto to refuse.",
    ),
    HookSpec(
        "before-quiz-save",
        HookKind.FILTER,
        "fn(quiz: dict) -> dict | None. Runs before a quiz is saved; may change or refuse it.",
    ),
    HookSpec(
        "after-quiz-submit",
        HookKind.NORMAL,
        "fn(submission: dict). Runs after a quiz submission is stored and graded.",
    ),
    HookSpec(
        "quiz-grade",
        HookKind.ABNORMAL,
        "fn(submission: dict) -> float | None. The first non-None grade (0..100) wins; "
        "otherwise the built-in grading is used.",
    ),
    HookSpec(
        "before-content-publish",
        HookKind.FILTER,
        "fn(content: dict) -> dict | None. Runs before content is published; "
        "may change or refuse it.",
    ),
    HookSpec(
        "after-content-generate",
        HookKind.FILTER,
        "fn(content: dict) -> dict | None. Runs on AI-generated content before it is stored.",
    ),
    HookSpec(
        "content-transform",
        HookKind.FILTER,
        "fn(body: str, content: dict) -> str | None. Transforms content text when it is rendered.",
    ),
)

STANDARD_HOOK_NAMES: frozenset[str] = frozenset(h.name for h in STANDARD_HOOKS)


def model_hook_specs(stem: str, label: str = "") -> tuple[HookSpec, HookSpec, HookSpec]:
    """The hooks one ``MODEL_HOOKS`` entry (``"app_label.Model": stem``) creates.

    The one declaration of their names, kinds and signatures: the site's model-signal bridge
    defines them, and so does ``course_plugins.testing.load_plugin`` for a plugin's own tests.
    ``label`` (``"school.Lesson"``) only goes into the descriptions.
    """
    model = f"{label}: " if label else ""
    return (
        HookSpec(
            f"before-{stem}-save",
            HookKind.FILTER,
            f"{model}fn({stem}: dict) -> dict | None. Runs before a {stem} is saved (and while a "
            "form or serializer validates it), with its field values by attname; return a "
            "changed dict to change fields; raise ValueError/ValidationError to refuse the save.",
        ),
        HookSpec(
            f"after-{stem}-save",
            HookKind.NORMAL,
            f"{model}fn({stem}: dict, created: bool). Runs after a {stem} is saved.",
        ),
        HookSpec(
            f"before-{stem}-delete",
            HookKind.NORMAL,
            f"{model}fn({stem}: dict). Runs before a {stem} is deleted; raise a veto to refuse.",
        ),
    )


MODEL_EVENT_ACTIONS: tuple[str, ...] = ("created", "updated", "deleted")
"""A ``MODEL_HOOKS`` entry publishes ``<stem>.created``, ``<stem>.updated``, ``<stem>.deleted``."""


@dataclass(frozen=True)
class EventSpec:
    name: str
    description: str


STANDARD_EVENTS: tuple[EventSpec, ...] = (
    EventSpec("user.created", "New user registered. data: user_id, username, email"),
    EventSpec("user.login", "User logged in. data: user_id, username"),
    EventSpec("user.logout", "User logged out. data: user_id, username"),
    EventSpec("user.enrolled", "User enrolled in course. data: user_id, course_id"),
    EventSpec("user.completed_course", "User completed course. data: user_id, course_id"),
    EventSpec("course.created", "Course created. data: id, name, title, organization_id"),
    EventSpec("course.updated", "Course modified. data: id, name, title, organization_id"),
    EventSpec("course.deleted", "Course deleted. data: id, name, title"),
    EventSpec("course.published", "Course made public. data: id, name, title"),
    EventSpec("course.viewed", "Course page viewed. data: id, name, user_id"),
    EventSpec("content.created", "Content created. data: id, course_id, title"),
    EventSpec("content.generated", "AI content generated. data: id, course_id, title"),
    EventSpec("content.accessed", "Content accessed by user. data: id, course_id, user_id"),
    EventSpec("video.watched", "Video watched. data: content_id, course_id, user_id, seconds"),
    EventSpec("quiz.created", "Quiz created. data: id, course_id, title"),
    EventSpec("quiz.started", "User started quiz. data: quiz_id, user_id"),
    EventSpec("quiz.submitted", "Quiz submitted. data: submission_id, quiz_id, user_id, answers"),
    EventSpec(
        "quiz.graded", "Quiz automatically graded. data: submission_id, quiz_id, user_id, score"
    ),
    EventSpec("lab.session_started", "Lab session started. data: session_id, user_id, course_id"),
    EventSpec("lab.session_ended", "Lab session ended. data: session_id, user_id, seconds"),
    EventSpec("lab.code_executed", "Code executed in lab. data: session_id, user_id, ok"),
)

STANDARD_EVENT_NAMES: frozenset[str] = frozenset(e.name for e in STANDARD_EVENTS)


@dataclass(frozen=True)
class PermissionSpec:
    name: str
    description: str


# Parts of the Platform API a manifest may ask for under ``permissions``. ``log``, ``config``,
# ``hooks``, ``events``, ``emit`` are always available (hooks and events limited to the
# manifest's lists).
PERMISSIONS: tuple[PermissionSpec, ...] = (
    PermissionSpec("storage", "Keep its own data (a key-value store namespaced to the plugin)."),
    PermissionSpec("users", "Read the current user and check user permissions."),
    PermissionSpec("courses", "Read courses and list them by organization."),
    PermissionSpec("notify", "Send notifications to users and e-mails."),
    PermissionSpec("analytics", "Record analytics events."),
    PermissionSpec("schedule", "Schedule its own functions to run later or repeatedly (Celery)."),
    PermissionSpec("advice", "Wrap core platform functions with advice."),
)

PERMISSION_NAMES: frozenset[str] = frozenset(p.name for p in PERMISSIONS)
