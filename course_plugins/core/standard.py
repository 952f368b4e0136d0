"""The one list of standard hooks, standard events and Platform API permissions.

Each standard hook is declared once, as a stub function with its signature (as pluggy's
hookspecs): the signature is checked when a plugin registers a function (``check_signature``),
and the stubs' docstrings are the reference (``docs/reference/hooks.md`` is generated from this
module by ``python -m course_plugins.core.standard``; a test keeps the file current). Everything
else (hook definitions at start-up, the manifest validator, the admin) imports these
declarations; nothing repeats them.
"""

from __future__ import annotations

import inspect
import keyword
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from course_plugins.exceptions import HookSignatureError


class HookKind(StrEnum):
    """Mirror of ``HookType`` names, kept here so this module has no engine import."""

    NORMAL = "NORMAL"
    ABNORMAL = "ABNORMAL"
    FILTER = "FILTER"


@dataclass(frozen=True)
class HookSpec:
    """One hook: its name, kind, what a function receives (``signature``) and what it is for.

    ``description`` is the call (``fn(course: dict) -> dict | None.``) followed by the text.
    """

    name: str
    kind: HookKind
    description: str
    signature: inspect.Signature | None = None

    @property
    def call(self) -> str:
        """``fn(course: dict) -> dict | None``, or ``""`` for a hook without a signature."""
        return f"fn{self.signature}" if self.signature is not None else ""

    @property
    def text(self) -> str:
        """The description without the leading call."""
        prefix = f"{self.call}. "
        return self.description.removeprefix(prefix) if self.call else self.description


def hookspec(name: str, kind: HookKind) -> Callable[[Callable[..., Any]], HookSpec]:
    """Declare hook ``name`` from a stub function: its parameters are what the hook passes, its
    return annotation what it expects back, its docstring what it is for."""

    def declare(stub: Callable[..., Any]) -> HookSpec:
        signature = inspect.signature(stub, eval_str=True)
        text = " ".join(inspect.cleandoc(stub.__doc__ or "").split())
        return HookSpec(name, kind, f"fn{signature}. {text}", signature)

    return declare


# --- the standard hooks ---------------------------------------------------------------------


@hookspec("before-course-save", HookKind.FILTER)
def _before_course_save(course: dict) -> dict | None:
    """Runs before a course is saved; return a changed dict to change the fields; raise
    ValueError/ValidationError to refuse the save."""


@hookspec("after-course-save", HookKind.NORMAL)
def _after_course_save(course: dict, created: bool) -> None:
    """Runs after a course is saved."""


@hookspec("before-course-delete", HookKind.NORMAL)
def _before_course_delete(course: dict) -> None:
    """Runs before a course is deleted; raise a veto to refuse."""


@hookspec("before-quiz-save", HookKind.FILTER)
def _before_quiz_save(quiz: dict) -> dict | None:
    """Runs before a quiz is saved; may change or refuse it."""


@hookspec("after-quiz-submit", HookKind.NORMAL)
def _after_quiz_submit(submission: dict) -> None:
    """Runs after a quiz submission is stored and graded."""


@hookspec("quiz-grade", HookKind.ABNORMAL)
def _quiz_grade(submission: dict) -> float | None:
    """The first non-None grade (0..100) wins; otherwise the built-in grading is used."""


@hookspec("before-content-publish", HookKind.FILTER)
def _before_content_publish(content: dict) -> dict | None:
    """Runs before content is published; may change or refuse it."""


@hookspec("after-content-generate", HookKind.FILTER)
def _after_content_generate(content: dict) -> dict | None:
    """Runs on AI-generated content before it is stored."""


@hookspec("content-transform", HookKind.FILTER)
def _content_transform(body: str, content: dict) -> str | None:
    """Transforms content text when it is rendered."""


STANDARD_HOOKS: tuple[HookSpec, ...] = (
    _before_course_save,
    _after_course_save,
    _before_course_delete,
    _before_quiz_save,
    _after_quiz_submit,
    _quiz_grade,
    _before_content_publish,
    _after_content_generate,
    _content_transform,
)

STANDARD_HOOK_NAMES: frozenset[str] = frozenset(h.name for h in STANDARD_HOOKS)

_declared: dict[str, HookSpec] = {spec.name: spec for spec in STANDARD_HOOKS}


def declare(spec: HookSpec) -> HookSpec:
    """Make ``spec`` the declaration of its hook (model hooks are declared per site); returns it."""
    _declared[spec.name] = spec
    return spec


def spec_for(name: str) -> HookSpec | None:
    """Return the declaration of hook ``name``, or ``None`` for a hook nobody declared (a
    plugin's own hooks)."""
    return _declared.get(name)


def _model_signature(stem: str, *extra: tuple[str, type], returns: Any) -> inspect.Signature:
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    name = stem.replace("-", "_")
    if keyword.iskeyword(name):
        name = f"{name}_"
    elif not name.isidentifier():  # a bad MODEL_HOOKS entry (the system check reports it)
        name = "data"
    params = [inspect.Parameter(name, kind, annotation=dict)]
    params += [inspect.Parameter(name, kind, annotation=annotation) for name, annotation in extra]
    return inspect.Signature(params, return_annotation=returns)


def model_hook_specs(stem: str, label: str = "") -> tuple[HookSpec, HookSpec, HookSpec]:
    """The hooks one ``MODEL_HOOKS`` entry (``"app_label.Model": stem``) creates, declared
    (so that the functions registered on them are checked).

    The one declaration of their names, kinds and signatures: the site's model-signal bridge
    defines them, and so does ``course_plugins.testing.load_plugin`` for a plugin's own tests.
    ``label`` (``"school.Lesson"``) only goes into the descriptions.
    """
    specs = _model_specs(stem, label)
    for spec in specs:
        declare(spec)
    return specs


def _model_specs(stem: str, label: str) -> tuple[HookSpec, HookSpec, HookSpec]:
    model = f"{label}: " if label else ""
    filtered = _model_signature(stem, returns=dict | None)
    after = _model_signature(stem, ("created", bool), returns=None)
    before_delete = _model_signature(stem, returns=None)
    return (
        HookSpec(
            f"before-{stem}-save",
            HookKind.FILTER,
            f"{model}fn{filtered}. Runs before a {stem} is saved (and while a "
            "form or serializer validates it), with its field values by attname; return a "
            "changed dict to change fields; raise ValueError/ValidationError to refuse the save.",
            filtered,
        ),
        HookSpec(
            f"after-{stem}-save",
            HookKind.NORMAL,
            f"{model}fn{after}. Runs after a {stem} is saved.",
            after,
        ),
        HookSpec(
            f"before-{stem}-delete",
            HookKind.NORMAL,
            f"{model}fn{before_delete}. Runs before a {stem} is deleted; raise a veto to refuse.",
            before_delete,
        ),
    )


def check_signature(spec: HookSpec | None, fn: Callable[..., Any], *, plugin: str | None) -> None:
    """Check that ``fn`` can be called the way hook ``spec`` calls its functions.

    Returns nothing when it can (or when there is nothing to check: no spec, no signature, a
    callable without an inspectable signature). Raises ``HookSignatureError`` naming the plugin,
    the hook, the function and the parameter to add or to give a default.
    """
    if spec is None or spec.signature is None:
        return
    try:
        actual = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    passed = list(spec.signature.parameters)
    try:
        actual.bind(*passed)
    except TypeError:
        pass
    else:
        return
    name = getattr(fn, "__qualname__", None) or repr(fn)
    raise HookSignatureError(plugin, spec.name, name, _problem(actual, passed, spec))


def _problem(actual: inspect.Signature, passed: list[str], spec: HookSpec) -> str:
    P = inspect.Parameter
    params = list(actual.parameters.values())
    positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    takes_any = any(p.kind == P.VAR_POSITIONAL for p in params)
    if not takes_any and len(positional) < len(passed):
        missing = passed[len(positional)]
        return (
            f"it takes {len(positional)} positional argument(s) but the hook passes "
            f"{len(passed)} ({', '.join(passed)}): add a parameter for {missing!r}"
        )
    for index, param in enumerate(params):
        if param.default is not P.empty or param.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
            continue
        if param.kind == P.KEYWORD_ONLY or index >= len(passed):
            return (
                f"its parameter {param.name!r} is required but the hook does not pass it (it "
                f"calls {spec.call}): give {param.name!r} a default or remove it"
            )
    return f"it cannot be called as {spec.call}"


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


# --- the reference page -----------------------------------------------------------------------

_KINDS = {
    HookKind.NORMAL: "every function runs, in priority order; the result is the list of their "
    "results",
    HookKind.ABNORMAL: "functions run in priority order until one returns something other "
    "than None; that value is the result",
    HookKind.FILTER: "a pipeline: each function gets the previous one's result (None keeps "
    "the value as it is); the last value is the result",
}


def render_reference() -> str:
    """Return ``docs/reference/hooks.md``: hooks, model hooks, events and permissions."""
    out = [
        "# Reference: hooks, events, permissions",
        "",
        "<!-- Generated from course_plugins/core/standard.py by "
        "`python -m course_plugins.core.standard docs/reference/hooks.md`; do not edit. -->",
        "",
        "A plugin lists the hooks it uses under `hooks` and the event patterns it subscribes to "
        "under `events` in its `plugin.yaml`, and the parts of the Platform API it needs under "
        "`permissions`. A function registered on a hook must accept the arguments shown (it may "
        "take more if they have defaults); registering one that does not is refused with an "
        "error naming the plugin, the hook and the parameter.",
        "",
        "Hook kinds:",
        "",
        *(f"- `{kind}`: {text}." for kind, text in _KINDS.items()),
        "",
        "A function refuses a `before-*` change by raising `ValueError`, Django's "
        "`ValidationError` or `PermissionDenied` (a veto).",
        "",
        "## Standard hooks",
        "",
    ]
    for spec in STANDARD_HOOKS:
        out += [f"### `{spec.name}` ({spec.kind})", "", "```python", spec.call, "```", "",
                spec.text, ""]
    example = _model_specs("lesson", "school.Lesson")
    out += [
        "## Model hooks",
        "",
        'Each entry `"app_label.Model": "<stem>"` of `COURSE_PLUGINS["MODEL_HOOKS"]` defines '
        "three hooks and three events; for `\"school.Lesson\": \"lesson\"`:",
        "",
    ]
    for spec in example:
        out += [f"- `{spec.name}` ({spec.kind}): `{spec.call}`"]
    out += [
        "",
        "and publishes "
        + ", ".join(f"`lesson.{action}`" for action in MODEL_EVENT_ACTIONS)
        + " once the transaction commits.",
        "",
        "## Standard events",
        "",
        "| event | when, and its data |",
        "| --- | --- |",
        *(f"| `{e.name}` | {e.description} |" for e in STANDARD_EVENTS),
        "",
        "## Permissions",
        "",
        "`log`, `config`, `hooks`, `events` and `emit` are always available (hooks and events "
        "limited to the manifest's lists). The others must be listed under `permissions`:",
        "",
        "| permission | what it allows |",
        "| --- | --- |",
        *(f"| `{p.name}` | {p.description} |" for p in PERMISSIONS),
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":  # python -m course_plugins.core.standard [PATH]
    text = render_reference()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w", encoding="utf-8") as file:
            file.write(text)
    else:
        sys.stdout.write(text)
