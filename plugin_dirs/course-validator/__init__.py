"""Course validator: refuses courses and quizzes that break the site's editorial rules.

The rules come from the plugin's settings (edited in the admin), read on every save so a change
applies at once. A refusal raises ``ValueError`` with a message meant for the person saving; the
platform shows it on the form. Counts of checks and refusals per rule are kept in storage under
``stats``. They are counted in memory and written by a later save that passes: the next one after
a refusal, else one at most ``STATS_FLUSH_SECONDS`` after the last write, and when the plugin is
deactivated (``flush_stats`` writes them at once). So most saves cost no storage write, and a
refused save writes nothing in the transaction that its refusal rolls back. They are statistics:
a process that dies loses the counts it had not written yet.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

STATS_KEY = "stats"
STATS_FLUSH_SECONDS = 10.0

# Counts not written to storage yet: {kind: {"checked", "refused", "by_rule"}}, and when they
# were last written (time.monotonic()). Hook functions may run in several threads at once.
_pending: dict[str, dict[str, Any]] = {}
_flushed_at = time.monotonic()
_lock = threading.Lock()


def rules(api: Any) -> dict[str, Any]:
    """The current rules, from settings (schema defaults apply to unset ones)."""
    return {
        "min_title_length": int(api.config.get("min_title_length", default=5) or 0),
        "require_description": bool(api.config.get("require_description", default=True)),
        "banned_words": [str(w) for w in api.config.get("banned_words", default=[]) or [] if w],
        "min_questions": int(api.config.get("min_questions", default=1) or 0),
        "max_questions": int(api.config.get("max_questions", default=50) or 50),
        "require_answers": bool(api.config.get("require_answers", default=True)),
    }


def _banned_in(text: str, words: list[str]) -> list[str]:
    found = []
    for word in words:
        if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE):
            found.append(word)
    return found


def course_problems(course: dict[str, Any], rule: dict[str, Any]) -> list[tuple[str, str]]:
    """Return ``(rule, message)`` for every rule the course breaks (empty when it is fine)."""
    problems: list[tuple[str, str]] = []
    title = str(course.get("title") or "").strip()
    description = str(course.get("description") or "").strip()
    if len(title) < rule["min_title_length"]:
        problems.append((
            "min_title_length",
            f"The course title must be at least {rule['min_title_length']} characters long "
            f"(it has {len(title)}).",
        ))
    if rule["require_description"] and not description:
        problems.append(("require_description", "The course needs a description."))
    banned = _banned_in(f"{title}\n{description}", rule["banned_words"])
    if banned:
        problems.append((
            "banned_words",
            f"The course title or description uses banned words: {', '.join(banned)}.",
        ))
    return problems


def quiz_problems(quiz: dict[str, Any], rule: dict[str, Any]) -> list[tuple[str, str]]:
    """Return ``(rule, message)`` for every rule the quiz breaks (empty when it is fine)."""
    problems: list[tuple[str, str]] = []
    title = str(quiz.get("title") or "").strip()
    questions = quiz.get("questions") or []
    if len(title) < rule["min_title_length"]:
        problems.append((
            "min_title_length",
            f"The quiz title must be at least {rule['min_title_length']} characters long "
            f"(it has {len(title)}).",
        ))
    if not isinstance(questions, list):
        return problems + [("questions", "The quiz questions must be a list.")]
    if len(questions) < rule["min_questions"]:
        problems.append((
            "min_questions",
            f"A quiz needs at least {rule['min_questions']} question(s) (it has {len(questions)}).",
        ))
    if len(questions) > rule["max_questions"]:
        problems.append((
            "max_questions",
            f"A quiz may have at most {rule['max_questions']} questions (it has {len(questions)}).",
        ))
    if rule["require_answers"]:
        unanswered = [
            str(i + 1)
            for i, q in enumerate(questions)
            if not isinstance(q, dict) or q.get("answer") in (None, "")
        ]
        if unanswered:
            problems.append((
                "require_answers",
                f"Every question needs an answer; missing for question(s) {', '.join(unanswered)}.",
            ))
    return problems


def _add(stats: dict[str, Any], counts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``stats`` (as stored) with ``counts`` added."""
    for kind, add in counts.items():
        entry = stats.setdefault(kind, {"checked": 0, "refused": 0, "by_rule": {}})
        entry["checked"] += add["checked"]
        entry["refused"] += add["refused"]
        for rule_name, n in add["by_rule"].items():
            entry["by_rule"][rule_name] = entry["by_rule"].get(rule_name, 0) + n
    return stats


def record(api: Any, kind: str, problems: list[tuple[str, str]]) -> None:
    """Count one check of a ``kind`` ("course"/"quiz"); a check that passes writes the counts
    if a refusal is among them or the last write is ``STATS_FLUSH_SECONDS`` old."""
    with _lock:
        entry = _pending.setdefault(kind, {"checked": 0, "refused": 0, "by_rule": {}})
        entry["checked"] += 1
        if problems:
            entry["refused"] += 1
            for rule_name, _message in problems:
                entry["by_rule"][rule_name] = entry["by_rule"].get(rule_name, 0) + 1
            return  # this save is refused: its transaction is rolled back, with any write in it
        due = time.monotonic() - _flushed_at >= STATS_FLUSH_SECONDS or any(
            counts["refused"] for counts in _pending.values()
        )
    if due:
        flush_stats(api)


def flush_stats(api: Any) -> dict[str, Any]:
    """Write the counts kept in memory to storage now; returns the stored stats."""
    global _flushed_at, _pending
    with _lock:
        counts, _pending = _pending, {}
        _flushed_at = time.monotonic()
    if not counts:
        return api.storage.get_sync(STATS_KEY) or {}
    try:
        # Atomic read-modify-write: checks in other requests and processes never lose a count.
        result: dict[str, Any] = api.storage.update_sync(
            STATS_KEY, lambda stats: _add(stats or {}, counts), {}
        )
    except Exception:
        with _lock:  # not written: keep them for the next write
            _pending = _add(_pending, counts)
        raise
    return result


def _check(api: Any, kind: str, data: dict[str, Any], finder: Any) -> dict[str, Any]:
    problems = finder(data, rules(api))
    record(api, kind, problems)
    if problems:
        api.log.info("Refused a %s: %s", kind, "; ".join(rule for rule, _ in problems))
        raise ValueError(" ".join(message for _, message in problems))
    return data


def activate(api: Any) -> None:
    """Register the two validators."""

    @api.hooks["before-course-save"].add
    def validate_course(course: dict[str, Any]) -> dict[str, Any]:
        return _check(api, "course", course, course_problems)

    @api.hooks["before-quiz-save"].add
    def validate_quiz(quiz: dict[str, Any]) -> dict[str, Any]:
        return _check(api, "quiz", quiz, quiz_problems)

    api.log.debug("Course validator active: %s", rules(api))  # runs in every process


def deactivate(api: Any) -> None:
    """Write the counts kept in memory; the platform removes the hook functions."""
    flush_stats(api)
    api.log.debug("Course validator deactivated")
