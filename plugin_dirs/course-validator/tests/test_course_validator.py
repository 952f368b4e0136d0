"""course-validator: editorial rules for courses and quizzes, configurable, counted in storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from course_plugins.exceptions import PluginSettingsError
from course_plugins.testing import load_plugin

PLUGIN = Path(__file__).resolve().parent.parent

GOOD_COURSE = {"id": None, "name": "python", "title": "Python basics", "description": "Learn it."}
GOOD_QUIZ = {"title": "Loops quiz", "questions": [{"question": "2+2?", "answer": "4"}]}


def test_registers_one_validator_per_hook():
    with load_plugin(PLUGIN) as loaded:
        assert loaded.registrations()["hooks"] == {
            "before-course-save": ["validate_course"],
            "before-quiz-save": ["validate_quiz"],
        }


def test_a_good_course_passes_unchanged():
    with load_plugin(PLUGIN) as loaded:
        assert loaded.run_hook("before-course-save", dict(GOOD_COURSE)) == GOOD_COURSE


def test_a_short_title_is_refused_with_a_message_for_the_author():
    with load_plugin(PLUGIN) as loaded, pytest.raises(ValueError) as info:
        loaded.run_hook("before-course-save", {**GOOD_COURSE, "title": "Py"})
    assert str(info.value) == "The course title must be at least 5 characters long (it has 2)."


def test_every_broken_rule_is_reported_at_once():
    settings = {"banned_words": ["free", "guaranteed"]}
    with load_plugin(PLUGIN, settings=settings) as loaded, pytest.raises(ValueError) as info:
        loaded.run_hook("before-course-save", {"title": "Free", "description": ""})
    message = str(info.value)
    assert "at least 5 characters" in message
    assert "needs a description" in message
    assert "banned words: free" in message


def test_banned_words_match_whole_words_in_any_case():
    with load_plugin(PLUGIN, settings={"banned_words": ["money"]}) as loaded:
        with pytest.raises(ValueError, match="banned words: money"):
            loaded.run_hook("before-course-save", {**GOOD_COURSE, "description": "Make MONEY."})
        ok = {**GOOD_COURSE, "title": "Moneyball statistics"}
        assert loaded.run_hook("before-course-save", ok) == ok


def test_rules_follow_the_settings_at_once():
    with load_plugin(PLUGIN) as loaded:
        untitled = {**GOOD_COURSE, "title": "AI", "description": ""}
        with pytest.raises(ValueError):
            loaded.run_hook("before-course-save", dict(untitled))
        loaded.api.config.update({"min_title_length": 2, "require_description": False})
        assert loaded.run_hook("before-course-save", dict(untitled)) == untitled


def test_quiz_question_count_and_answers():
    settings = {"max_questions": 2, "min_questions": 1}
    with load_plugin(PLUGIN, settings=settings) as loaded:
        assert loaded.run_hook("before-quiz-save", dict(GOOD_QUIZ)) == GOOD_QUIZ
        with pytest.raises(ValueError, match="at most 2 questions \\(it has 3\\)"):
            three = GOOD_QUIZ["questions"] * 3
            loaded.run_hook("before-quiz-save", {**GOOD_QUIZ, "questions": three})
        with pytest.raises(ValueError, match="at least 1 question"):
            loaded.run_hook("before-quiz-save", {**GOOD_QUIZ, "questions": []})
        unanswered = [{"question": "a?", "answer": "x"}, {"question": "b?"}]
        with pytest.raises(ValueError, match="missing for question\\(s\\) 2"):
            loaded.run_hook("before-quiz-save", {**GOOD_QUIZ, "questions": unanswered})


def test_checks_and_refusals_are_counted_per_rule_in_storage():
    with load_plugin(PLUGIN) as loaded:
        loaded.run_hook("before-course-save", dict(GOOD_COURSE))
        for _ in range(2):
            with pytest.raises(ValueError):
                loaded.run_hook("before-course-save", {"title": "x", "description": ""})
        loaded.run_hook("before-quiz-save", dict(GOOD_QUIZ))
        stats = loaded.api.storage.get_sync("stats")
    assert stats == {
        "course": {
            "checked": 3,
            "refused": 2,
            "by_rule": {"min_title_length": 2, "require_description": 2},
        },
        "quiz": {"checked": 1, "refused": 0, "by_rule": {}},
    }


def test_stats_survive_a_reload():
    earlier = {"course": {"checked": 5, "refused": 1, "by_rule": {}}}
    with load_plugin(PLUGIN, storage={"stats": earlier}) as loaded:
        loaded.reload()
        loaded.run_hook("before-course-save", dict(GOOD_COURSE))
        # A save that passes is counted in memory; written within STATS_FLUSH_SECONDS, or now:
        assert loaded.api.storage.get_sync("stats")["course"]["checked"] == 5
        loaded.module.flush_stats(loaded.api)
        assert loaded.api.storage.get_sync("stats")["course"]["checked"] == 6


def test_saves_that_pass_write_the_counts_at_most_every_few_seconds():
    with load_plugin(PLUGIN) as loaded:
        for _ in range(3):
            loaded.run_hook("before-course-save", dict(GOOD_COURSE))
        assert loaded.api.storage.get_sync("stats") is None  # no write for a save that passes
        with pytest.raises(ValueError):
            loaded.run_hook("before-course-save", {"title": "x", "description": "d"})
        assert loaded.api.storage.get_sync("stats") is None  # nor in a save it refuses
        loaded.run_hook("before-course-save", dict(GOOD_COURSE))  # the next one writes them
        assert loaded.api.storage.get_sync("stats")["course"] == {
            "checked": 5, "refused": 1, "by_rule": {"min_title_length": 1},
        }
        loaded.run_hook("before-quiz-save", dict(GOOD_QUIZ))
        loaded.deactivate()  # writes what is left
        assert loaded.api.storage.get_sync("stats")["quiz"]["checked"] == 1


def test_invalid_settings_are_refused():
    loading = load_plugin(PLUGIN, settings={"min_title_length": -1})
    with pytest.raises(PluginSettingsError) as info, loading:
        pass
    assert "min_title_length" in info.value.errors


def test_deactivation_removes_the_validators():
    with load_plugin(PLUGIN) as loaded:
        loaded.deactivate()
        assert loaded.registrations()["hooks"] == {}
        short = {"title": "x"}
        assert loaded.run_hook("before-course-save", short) == short
